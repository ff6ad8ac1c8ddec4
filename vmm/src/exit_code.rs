//! The process exit codes of `rtswitch`, one per way a run can end.
//!
//! They are part of the CLI's contract (docs/usage.md, "Exit codes"): scripts and
//! the end-to-end tests rely on them. A guest triple fault is never success.

/// How a run ended, as the process exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// The guest shut down cleanly (exit status 0), by itself or because the
    /// VMM asked it to (`--duration`, SIGINT, SIGTERM).
    Ok = 0,
    /// The guest exited with a non-zero status (e.g. failed self-tests).
    GuestFailure = 1,
    /// The command line was invalid.
    BadArguments = 2,
    /// The guest panicked (message and location on stderr).
    GuestPanic = 3,
    /// The guest triple-faulted (`KVM_EXIT_SHUTDOWN`).
    TripleFault = 4,
    /// KVM or host setup failed (no /dev/kvm, an ioctl failed, out of memory).
    VmmError = 5,
    /// The kernel ELF was refused (not an x86-64 ELF, does not fit, no ABI note).
    InvalidKernel = 6,
    /// The guest did not shut down within the grace period after being asked.
    ShutdownTimeout = 7,
    /// KVM could not run a vCPU (internal error, failed entry, emulation failure).
    VcpuFault = 8,
    /// The guest wrote to its own text, which the hypervisor keeps
    /// read-only (only the VMM patches it).
    TextWrite = 9,
    /// A VMM thread made a system call its seccomp filter does not allow
    /// (`vmm/src/seccomp.rs`); the message names the thread and the call.
    SeccompViolation = 10,
    /// The guest ran, but the measurement is not ok: a measuring CPU with
    /// no sample, a load that did no operation, or a watchdog stall (the
    /// reasons are in the summary and the JSON `result`).
    MeasurementNotOk = 11,
    /// `--stop-above`: a sample crossed the threshold; its cause is printed.
    StoppedAbove = 12,
    /// The guest broke the platform's protocol (`misbehaviour`): a
    /// doorbell flood, values a doorbell may not carry, accesses where
    /// there is no device, a telemetry header that contradicts the
    /// layout. Each was refused and counted; the end of the run names them.
    GuestMisbehaved = 13,
    /// `bench` or `stress` stopped by SIGINT/SIGTERM before its end: what
    /// had finished is printed and written, marked interrupted (128 +
    /// SIGINT, the shell's convention; `run` itself ends a measurement on
    /// SIGINT with 0, as cyclictest does).
    Interrupted = 130,
    /// The VMM itself panicked (a bug: the message on stderr names where);
    /// Rust's own exit status for a panic, kept under the sandbox
    /// (`panic_exit`).
    VmmPanic = 101,
}

impl ExitCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ExitCode; 16] = [
        ExitCode::Ok,
        ExitCode::GuestFailure,
        ExitCode::BadArguments,
        ExitCode::GuestPanic,
        ExitCode::TripleFault,
        ExitCode::VmmError,
        ExitCode::InvalidKernel,
        ExitCode::ShutdownTimeout,
        ExitCode::VcpuFault,
        ExitCode::TextWrite,
        ExitCode::SeccompViolation,
        ExitCode::MeasurementNotOk,
        ExitCode::StoppedAbove,
        ExitCode::GuestMisbehaved,
        ExitCode::Interrupted,
        ExitCode::VmmPanic,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// Maps a guest exit status (`HC_EXIT`) to the process exit code.
    pub fn from_guest_status(status: u32) -> Self {
        if status == switcher::abi::EXIT_STATUS_OK { ExitCode::Ok } else { ExitCode::GuestFailure }
    }

    /// The outcome that decides the exit code when several happen in one
    /// run (e.g. a panic on one CPU and a triple fault on another): the
    /// worst one, never success.
    pub fn worst(self, other: Self) -> Self {
        fn rank(c: ExitCode) -> u8 {
            match c {
                ExitCode::Ok => 0,
                // Partial results: any failure among them says more.
                ExitCode::Interrupted => 1,
                ExitCode::StoppedAbove => 1,
                ExitCode::MeasurementNotOk => 2,
                ExitCode::GuestFailure => 3,
                ExitCode::ShutdownTimeout => 4,
                // What the guest did says more than the shutdown it then ignored.
                ExitCode::GuestMisbehaved => 5,
                ExitCode::GuestPanic => 6,
                ExitCode::VcpuFault | ExitCode::TextWrite => 7,
                ExitCode::TripleFault => 8,
                ExitCode::BadArguments | ExitCode::InvalidKernel | ExitCode::VmmError | ExitCode::SeccompViolation => 9,
                ExitCode::VmmPanic => 10,
            }
        }
        if rank(other) > rank(self) { other } else { self }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_zero_only_for_ok() {
        let mut seen = std::collections::HashSet::new();
        for c in ExitCode::ALL {
            assert!(seen.insert(c.code()), "{c:?} reuses a code");
            assert_eq!(c.code() == 0, c == ExitCode::Ok);
        }
    }

    #[test]
    fn guest_status_mapping() {
        assert_eq!(ExitCode::from_guest_status(0), ExitCode::Ok);
        assert_eq!(ExitCode::from_guest_status(1), ExitCode::GuestFailure);
        assert_eq!(ExitCode::from_guest_status(u32::MAX), ExitCode::GuestFailure);
    }

    #[test]
    fn worst_never_hides_a_failure() {
        assert_eq!(ExitCode::Ok.worst(ExitCode::TripleFault), ExitCode::TripleFault);
        assert_eq!(ExitCode::TripleFault.worst(ExitCode::Ok), ExitCode::TripleFault);
        assert_eq!(ExitCode::GuestPanic.worst(ExitCode::GuestFailure), ExitCode::GuestPanic);
        assert_eq!(ExitCode::ShutdownTimeout.worst(ExitCode::GuestMisbehaved), ExitCode::GuestMisbehaved);
        assert_eq!(ExitCode::GuestMisbehaved.worst(ExitCode::TripleFault), ExitCode::TripleFault);
        for c in ExitCode::ALL {
            assert_eq!(ExitCode::Ok.worst(c), c);
        }
    }
}
