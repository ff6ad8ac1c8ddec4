//! Why a run could not start or its loop failed, and the exit code each
//! failure gives.

use crate::exit_code::ExitCode;
use crate::vstate::bus::BusError;
use crate::vstate::{memory, vm};
use crate::{api, devices, loader, seccomp};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Kvm(#[from] vm::VmError),
    #[error(transparent)]
    Kernel(#[from] loader::LoaderError),
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error("kernel call sites: {0}")]
    Sites(#[from] switcher::patch::PatchError),
    #[error(transparent)]
    Serial(#[from] devices::console::SerialError),
    #[error(
        "the latency telemetry needs {need_mib} MiB above the kernel (ends at {kernel_end:#x}) but guest memory is \
         {mem_mib} MiB; raise --memory or lower --hist-max-us"
    )]
    TelemetryTooBig { need_mib: u64, kernel_end: u64, mem_mib: u64 },
    #[error("KVM supports at most {max} vCPUs on this host; use --vcpus {max} or fewer")]
    TooManyVcpus { max: usize },
    #[error("host setup failed: {0}: {1}")]
    Host(&'static str, std::io::Error),
    #[error(transparent)]
    Api(#[from] api::server::ApiError),
    #[error("event loop failed: {0}")]
    EventLoop(String),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("device map: {0}")]
    Bus(#[from] BusError),
    #[error(transparent)]
    IrqLoad(#[from] crate::vstate::irq_load::IrqLoadError),
    #[error(transparent)]
    HostNoise(#[from] crate::host_noise::HostNoiseError),
}

impl RunError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            RunError::Kernel(_) | RunError::Sites(_) => ExitCode::InvalidKernel,
            RunError::TooManyVcpus { .. } | RunError::TelemetryTooBig { .. } | RunError::Api(_) => {
                ExitCode::BadArguments
            }
            RunError::Serial(devices::console::SerialError::Open(..)) => ExitCode::BadArguments,
            _ => ExitCode::VmmError,
        }
    }
}
