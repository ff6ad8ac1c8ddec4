//! One run of a guest: build the VM, start the vCPU threads, and drive the
//! control loop until the guest exits, panics, faults, or is shut down.
//!
//! The control loop runs on the main thread, on event-manager's epoll, as
//! separate subscribers; each owns its fds and state, registers its fds in
//! its `init` and is called only for them:
//!
//! | subscriber | file | fds | does |
//! |---|---|---|---|
//! | `VcpuEvents` | `vcpu_events.rs` | wake EventFd (+ mpsc channel) | hypercalls, faults, finished vCPUs |
//! | `Shutdown` | `shutdown.rs` | SIGINT/SIGTERM EventFd, `--duration`, grace timer | asks the guest to shut down; ends the run at the grace timeout or a second signal |
//! | `Status` | `status.rs` | 1 Hz timer | reads the telemetry, watchdog, live status / `--quiet` progress |
//! | `Switching` | `switching.rs` | switch deadline, `--switch-every` | the switch [`Coordinator`] |
//! | `ControlSocket` | `control.rs` | listener, backlog EventFd, clients, its mailbox | QMP commands (only with `--api-sock`); `cont` launches a `--paused` run |
//! | `IrqLoadSubscriber` | `irq_load.rs` | the `--irq-load` timer | one device interrupt on every vCPU per period (`vstate::irq_load`) |
//!
//! What several of them need lives in one `Run` (`shared.rs`: VM fd,
//! memory, vCPU handles, console, lifecycle, telemetry reader, what the
//! guest reported), an `Rc` with `RefCell`s (the loop is single-threaded;
//! the reasons are in that module). Requests between subscribers are
//! method calls on a handle (`Rc<RefCell<..>>`): the control socket and the
//! vCPU events call `Switching` (`request`, `cancel`, `on_guest_notify`)
//! and `Shutdown::request`; the calls only go one way (control socket,
//! vCPU events -> switch, shutdown), so no `RefCell` is borrowed twice. The
//! way back, a switch that ended and whose client waits for the reply,
//! needs the control socket's own `EventOps`: it is posted to the socket's
//! mailbox (`mailbox.rs`) (a queue and an EventFd it watches).
//!
//! Adding an event source is one file with a struct that implements
//! `MutEventSubscriber` (holding a `Shared` clone and
//! whatever handles it calls) and one `em.add_subscriber` line in
//! `try_run`.
//!
//! The run's state is explicit and changes only through the checked
//! table in `lifecycle.rs`:
//!
//! ```text
//!  Prelaunch (--paused: every vCPU held at the gate) --cont--> Booting
//!  Booting --all CPUs online + HC_READY--> Ready <--switch ends-- Switching
//!  Ready --set-mode / --switch-every accepted--> Switching
//!  Booting/Ready/Switching --duration, signal, quit, --stop-above--> ShuttingDown
//!                                          (host_request = SHUTDOWN, MSI, grace timer)
//!  any --HC_EXIT / panic / triple fault / KVM fault / grace timeout / second signal--> Exited
//! ```
//! The loop turns until the state is Exited. Then every vCPU is kicked
//! out of KVM_RUN and joined, the control socket's clients get the
//! SHUTDOWN event, and `end.rs` reads the telemetry a last time, prints
//! the run's summary and latency table, writes the
//! `--json`/`--histogram`/`--plot` files and returns its [`ExitCode`] (a
//! violated load check is never success).

use std::cell::RefCell;
use std::io::IsTerminal;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use switcher::abi::{self, BootInfo};
use switcher::profile::Profile;
use switcher::telemetry::Layout;
use vmm_sys_util::eventfd::EventFd;

use crate::api::server::ApiServer;
use crate::cli::RunConfig;
use crate::devices::console::Console;
use crate::devices::hypercall::{DOORBELL_SIZE, Doorbell};
use crate::exit_code::ExitCode;
use crate::report::status::StatusPrinter;
use crate::seccomp::{self, Sandbox};
use crate::switch::{Coordinator, SwitchLimits};
use crate::telemetry::TelemetryReader;
use crate::vstate::bus::Bus;
use crate::vstate::hold::HoldGate;
use crate::vstate::irq_load::IrqInjector;
use crate::vstate::memory;
use crate::vstate::vcpu::{self, VcpuContext};
use crate::vstate::vm;
use crate::watchdog::Watchdog;
use crate::{host_noise, loader, signals};
pub use error::RunError;

use control::ControlSocket;
use end::EndInputs;
use irq_load::IrqLoadSubscriber;
use shared::{Machine, Run};
use shutdown::Shutdown;
use status::Status;
use switching::{SwitchEvery, Switching};
use vcpu_events::{VcpuChannel, VcpuEvents};

mod control;
mod end;
mod error;
mod fds;
mod irq_load;
mod lifecycle;
mod mailbox;
mod pacing;
mod shared;
mod shutdown;
mod status;
mod switching;
mod vcpu_events;

/// Runs the guest described by `config`; prints its outcome.
pub fn run(config: RunConfig, started: Instant) -> ExitCode {
    let code = match try_run(&config, started) {
        Ok(code) => code,
        Err(e) => {
            crate::logging::stderr_line(&format!("rtswitch: error: {e}"));
            e.exit_code()
        }
    };
    // Output files prepared and not written (a run that failed early).
    crate::outfile::discard_all();
    code
}

fn try_run(config: &RunConfig, started: Instant) -> Result<ExitCode, RunError> {
    let kvm = vm::open_kvm()?;
    let max = kvm.get_max_vcpus();
    if config.vcpus as usize > max {
        return Err(RunError::TooManyVcpus { max });
    }
    // The embedded kernel is used in place (a copy costs milliseconds of
    // page faults on some hosts).
    let image: std::borrow::Cow<'static, [u8]> = match &config.kernel {
        Some(path) => loader::read_kernel_file(path)?.into(),
        None => crate::DEFAULT_KERNEL.into(),
    };
    // Parse and validate before allocating: a refused kernel costs nothing.
    let parsed = loader::parse(&image, config.memory_bytes)?;
    let mem = memory::create(config.memory_bytes)?;
    parsed.load(&mem)?;
    let loader::Kernel { info: kernel, sites, .. } = parsed;
    log::info!("kernel loaded: entry {:#x}, end {:#x}", kernel.entry, kernel.end);
    // Boot-time mode selection: the same all-or-nothing patcher as the
    // runtime switch, before any vCPU exists.
    let text = memory::GuestView::new(&mem);
    let plan = sites.plan(&text, Profile::MAINLINE, config.mode)?;
    let rewritten = plan.apply(&text)?;
    crate::logging::stderr_line(&format!(
        "rtswitch: mode {}: {} call sites ({}) verified, {rewritten} patched",
        config.mode.name(),
        sites.len(),
        crate::api::protocol::SiteCounts::of(&sites).by_dimension(),
    ));

    let console = Arc::new(Console::new(&config.serial, config.console_limit)?);
    let mut vm = vm::create(kvm, &mem, config.vcpus, kernel.entry, kernel.text.clone())?;
    let irq_load = match config.irq_load {
        Some(l) => Some(Rc::new(RefCell::new(IrqInjector::new(&vm.fd, config.vcpus, l.rate_hz)?))),
        None => None,
    };

    let mut boot_info = BootInfo::new(config.vcpus, config.memory_bytes, u64::from(vm.tsc_khz), config.mode);
    boot_info.apic_timer_khz = vm::APIC_TIMER_KHZ;
    boot_info.hints = host_hints(config.vcpus, config.mode);
    let telemetry = place_telemetry(config, kernel.end)?;
    boot_info.telemetry_addr = telemetry.addr;
    boot_info.telemetry_size = telemetry.layout.size() as u64;
    boot_info.hist_buckets = config.hist_buckets;
    boot_info.workload = config.workload;
    // The command line was checked by the CLI; a failure here is a bug.
    if !boot_info.set_cmdline(&config.cmdline) {
        return Err(RunError::Host("guest command line", std::io::Error::other("does not fit the boot info")));
    }
    memory::write_boot_structures(&mem, &boot_info, config.memory_bytes)?;

    // Bound before any other thread exists (the 0600 umask is process-wide).
    let api = match &config.api_sock {
        Some(path) => {
            let server = ApiServer::bind(path)?;
            // A forced exit (a second signal the loop did not answer)
            // removes the socket too, if it is still ours.
            signals::on_forced_exit(crate::api::sockfile::remove_from_signal);
            crate::logging::stderr_line(&format!("rtswitch: control socket at {} (QMP)", path.display()));
            Some(server)
        }
        None => None,
    };
    let limits =
        SwitchLimits { quiesce: config.switch_timeout, vcpu_stop: config.vcpu_stop_timeout, ..SwitchLimits::default() };
    let mut coordinator = Coordinator::new(sites, config.mode, limits, started, vm.tsc_khz);
    coordinator.set_fast_path(config.fast_switch);
    let signal_evt = signals::install().map_err(|e| RunError::Host("signal handlers", e))?;
    vcpu::register_kick_handler()
        .map_err(|e| RunError::Host("vCPU kick signal handler", std::io::Error::from_raw_os_error(e.errno())))?;
    let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(|e| RunError::Host("eventfd", e))?);
    // Every file the run writes is open by now (`outfile`), and the socket
    // bound: the sandbox names their directories and the listener.
    let allowed = seccomp::Allowed {
        output_dirs: crate::outfile::dir_fds(),
        socket_dir: api.as_ref().map(ApiServer::socket_dir_fd),
        listener: api.as_ref().map(ApiServer::listener_fd),
    };
    crate::panic_exit::install();
    // What the reports read from the host, read while files may be opened.
    crate::report::cyclictest_json::read_host_facts();
    let sandbox = Arc::new(Sandbox::new(config.seccomp, &allowed)?);
    console.start(sandbox.clone())?;
    let (producers, events) = crate::vstate::events::queue(config.vcpus, wake.clone());
    let gate = Arc::new(HoldGate::new());
    let mut mmio = Bus::new();
    mmio.insert(abi::DOORBELL_ADDR, DOORBELL_SIZE, Arc::new(Doorbell::new(mem.clone(), console.clone())))?;
    let mmio = Arc::new(mmio);
    if config.paused {
        // Every vCPU thread parks at the gate before its first KVM_RUN;
        // `cont` opens it (`Run::launch`).
        gate.close();
    }
    // The host-noise probe maps the vCPUs' TSCs before they first run,
    // and runs from before the guest's first instruction to after its last.
    let probe = match config.host_noise {
        Some(period) => {
            let settings = host_noise::Settings { period, threshold: host_noise::STALL_THRESHOLD };
            Some(host_noise::Probe::start(settings, vm.tsc_khz, &vm.vcpus, &sandbox)?)
        }
        None => None,
    };
    let mut handles = Vec::with_capacity(vm.vcpus.len());
    for ((cpu, fd), events) in vm.vcpus.drain(..).enumerate().zip(producers) {
        let ctx = VcpuContext {
            mmio: mmio.clone(),
            events,
            gate: gate.clone(),
            text: kernel.text.clone(),
            sandbox: sandbox.clone(),
        };
        handles.push(vcpu::spawn(cpu as u32, fd, ctx).map_err(|e| RunError::Host("spawning a vCPU thread", e))?);
    }
    let run = Run::new(Machine {
        started,
        paused: config.paused,
        console: console.clone(),
        vm: vm.fd,
        mem: mem.clone(),
        tsc_khz: vm.tsc_khz,
        gate,
        vcpus: handles,
        telemetry: TelemetryReader::new(mem, telemetry.addr, telemetry.layout),
        code: switcher::stackwalk::GuestCode::from_elf(&image),
    });
    let shutdown = Shutdown::new(&run, signal_evt, config.duration, config.shutdown_timeout, config.paused)?;
    let every = config.switch_every.map(|period| SwitchEvery { period, to: config.switch_to });
    let switching = Switching::new(&run, coordinator, every, &config.workload)?;
    let channel = VcpuChannel { events, stop_above: config.workload.stop_above_us > 0 };
    let printer = StatusPrinter::new(config.output.quiet, std::io::stderr().is_terminal(), config.duration);
    let status = Rc::new(RefCell::new(Status::new(&run, printer, Watchdog::new(config.vcpus, config.watchdog))?));
    let control = match api {
        Some(server) => {
            let c = ControlSocket::new(&run, server, switching.clone(), shutdown.clone(), config.api_idle_timeout)?;
            Some(Rc::new(RefCell::new(c)))
        }
        None => None,
    };

    // The loop's subscribers, each watching its own fds.
    let mut em = EventManager::<Box<dyn MutEventSubscriber>>::new().map_err(|e| RunError::EventLoop(e.to_string()))?;
    em.add_subscriber(Box::new(VcpuEvents::new(&run, channel, switching.clone(), shutdown.clone())));
    em.add_subscriber(Box::new(shutdown));
    em.add_subscriber(Box::new(status.clone()));
    em.add_subscriber(Box::new(switching.clone()));
    if let Some(c) = &control {
        em.add_subscriber(Box::new(c.clone()));
    }
    if let Some(dev) = &irq_load {
        em.add_subscriber(Box::new(IrqLoadSubscriber(dev.clone())));
    }
    // Every thread of the VM has started (none inherits this): the
    // control thread runs at once when a client or the guest wakes it,
    // and is not descheduled in the middle of a hold.
    if config.control_fifo {
        match crate::realtime::fifo(CONTROL_FIFO_PRIORITY) {
            Ok(()) => log::info!("control thread at SCHED_FIFO {CONTROL_FIFO_PRIORITY}"),
            Err(e) => log::info!("control thread at normal priority: SCHED_FIFO refused ({e})"),
        }
    }
    // Setup is over: from here on the control thread makes only the calls
    // its filter allows (`seccomp`).
    sandbox.enter(seccomp::Thread::Control)?;
    crate::outfile::seal();
    while !run.life.borrow().exited() {
        em.run().map_err(|e| RunError::EventLoop(e.to_string()))?;
    }
    let ran = run.launched.get().elapsed();
    run.stop_vcpus(config.vcpu_stop_timeout.max(VCPU_JOIN_MIN));
    let host_noise = probe.map(host_noise::Probe::stop);
    let host_cpu = run.life.borrow().started().then(|| {
        let control = crate::vstate::vcpu::thread_cpu_time().unwrap_or_default();
        crate::report::host_cpu::HostCpu::new(ran, control, &run.vcpu_cpu_times())
    });
    let cause = run.life.borrow().shutdown_cause();
    if let Some(c) = &control {
        c.borrow_mut().announce_shutdown(cause);
    }
    console.flush();
    let (switching, mut status) = (switching.borrow(), status.borrow_mut());
    let irq_load = irq_load.map(|d| d.borrow().counts());
    Ok(end::report(
        &run,
        EndInputs { config, switching: &switching, watchdog: status.watchdog(), irq_load, host_cpu, host_noise },
    ))
}

/// The least time the end of a run waits for the vCPU threads to end
/// (`--vcpu-stop-timeout` when longer): a kicked thread leaves KVM_RUN in
/// microseconds; this is for a host under load.
/// The control thread's SCHED_FIFO priority (`--control-fifo`): the
/// lowest, beside the host-noise probe's; the guest's vCPUs stay at normal
/// priority.
const CONTROL_FIFO_PRIORITY: i32 = 1;

const VCPU_JOIN_MIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Where the telemetry region lives in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct TelemetryPlacement {
    pub addr: u64,
    pub layout: Layout,
}

/// Places the telemetry region at the first 2 MiB boundary above the
/// kernel image (nothing in the guest uses memory there).
fn place_telemetry(config: &RunConfig, kernel_end: u64) -> Result<TelemetryPlacement, RunError> {
    const ALIGN: u64 = 2 << 20;
    let layout = Layout { cpu_count: config.vcpus as usize, bucket_count: config.hist_buckets as usize };
    let addr = kernel_end.next_multiple_of(ALIGN);
    let end = addr + layout.size() as u64;
    if end > config.memory_bytes {
        return Err(RunError::TelemetryTooBig {
            need_mib: (layout.size() as u64).div_ceil(1 << 20),
            kernel_end,
            mem_mib: config.memory_bytes >> 20,
        });
    }
    Ok(TelemetryPlacement { addr, layout })
}

/// What the guest is told about its host ([`switcher::abi::hint`]): its
/// vCPUs have dedicated host CPUs when this process may run on at least as
/// many host CPUs as the VM has vCPUs (its affinity mask and CPU quota,
/// as `available_parallelism` reads them). Said on stderr when they have
/// not and the `haltpoll` idle policy therefore halts at once.
fn host_hints(vcpus: u32, mode: Profile) -> u32 {
    let host = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hints = hints_for(vcpus, host);
    if hints & switcher::abi::hint::DEDICATED_CPUS == 0 && mode.idle == switcher::profile::IdleMode::Haltpoll {
        crate::logging::stderr_line(&format!(
            "rtswitch: {vcpus} vCPUs on {host} host CPU(s): idle=haltpoll halts at once, as Linux's cpuidle-haltpoll \
             does without KVM_HINTS_REALTIME (a polling vCPU would take a host CPU another vCPU waits for)"
        ));
    }
    hints
}

/// The hints for `vcpus` vCPUs on `host_cpus` host CPUs.
fn hints_for(vcpus: u32, host_cpus: usize) -> u32 {
    if vcpus as usize <= host_cpus { switcher::abi::hint::DEDICATED_CPUS } else { 0 }
}

#[cfg(test)]
mod hint_tests {
    use super::hints_for;
    use switcher::abi::hint::DEDICATED_CPUS;

    #[test]
    fn vcpus_have_dedicated_host_cpus_only_when_there_are_enough() {
        assert_eq!(hints_for(1, 2), DEDICATED_CPUS);
        assert_eq!(hints_for(2, 2), DEDICATED_CPUS);
        assert_eq!(hints_for(3, 2), 0);
        assert_eq!(hints_for(8, 2), 0);
    }
}
