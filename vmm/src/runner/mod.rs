//! One run of a guest: build the VM, start the vCPU threads, and drive the
//! control loop until the guest exits, panics, faults, or is shut down.
//!
//! The control loop runs on the main thread, on event-manager's epoll, over
//! three kinds of event sources owned by one [`Controller`]:
//! - the vCPU event EventFd (with an mpsc channel of [`VcpuEvent`]s),
//! - the SIGINT/SIGTERM EventFd (`signals`),
//! - timers: `--duration`, the shutdown grace period, and the 1 Hz status
//!   timer (reads the latency telemetry, prints the live status or the
//!   `--quiet` progress line: `report::status`).
//!
//! ```text
//!  Booting --all CPUs online + HC_READY--> Ready
//!  Booting/Ready --duration or signal--> ShuttingDown (host_request = SHUTDOWN, MSI)
//!  any --HC_EXIT / panic / triple fault / KVM fault / grace timeout--> Finished
//! ```
//! On Finished every vCPU is kicked out of KVM_RUN and joined, then the
//! telemetry is read a last time, the run's summary and latency table are
//! printed, the `--json`/`--histogram`/`--plot` files written, and its
//! [`ExitCode`] returned (a violated load check is never success).

use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use switcher::abi::{self, BootInfo, GuestStatus, LockRegistry};
use switcher::profile::{Dimension, Profile};
use switcher::telemetry::Layout;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::api::protocol::ShutdownCause;
use crate::api::server::ApiServer;
use crate::cli::RunConfig;
use crate::devices::console::Console;
use crate::devices::hypercall::{DOORBELL_SIZE, Doorbell, GuestPanic, Hypercall};
use crate::exit_code::ExitCode;
use crate::report::status::StatusPrinter;
use crate::report::{self, GuestInfo, LoadVerdict, Measurement, RunInfo, RunSettings};
use crate::seccomp::{self, Sandbox};
use crate::switch::{Coordinator, SwitchLimits};
use crate::vstate::bus::{Bus, BusError};
use crate::vstate::hold::HoldGate;
use crate::vstate::irq_load::IrqInjector;
use crate::vstate::memory::{self, GuestMemory};
use crate::vstate::telemetry::{StopInfo, TelemetryReader};
use crate::vstate::vcpu::{self, VcpuContext, VcpuEvent, VcpuHandle};
use crate::vstate::vm;
use crate::watchdog::Watchdog;
use crate::{host_speed, loader, signals};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Kvm(#[from] vm::VmError),
    #[error(transparent)]
    Kernel(#[from] loader::LoaderError),
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error("kernel lock call sites: {0}")]
    Sites(#[from] switcher::patch::PatchError),
    #[error(transparent)]
    Serial(#[from] crate::devices::console::SerialError),
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
    Api(#[from] crate::api::server::ApiError),
    #[error("event loop failed: {0}")]
    EventLoop(String),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("device map: {0}")]
    Bus(#[from] BusError),
    #[error(transparent)]
    IrqLoad(#[from] crate::vstate::irq_load::IrqLoadError),
}

impl RunError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            RunError::Kernel(_) | RunError::Sites(_) => ExitCode::InvalidKernel,
            RunError::TooManyVcpus { .. } | RunError::TelemetryTooBig { .. } | RunError::Api(_) => {
                ExitCode::BadArguments
            }
            RunError::Serial(crate::devices::console::SerialError::Open(..)) => ExitCode::BadArguments,
            _ => ExitCode::VmmError,
        }
    }
}

/// Runs the guest described by `config`; prints its outcome.
pub fn run(config: RunConfig, started: Instant) -> ExitCode {
    match try_run(&config, started) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rtswitch: error: {e}");
            e.exit_code()
        }
    }
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    GuestExit(u32),
    GuestPanic(GuestPanic),
    TripleFault { cpu: u32 },
    TextWrite { cpu: u32, addr: u64 },
    VcpuFault { cpu: u32, what: String },
    ShutdownTimeout,
    Forced,
}

impl Outcome {
    fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::GuestExit(s) => ExitCode::from_guest_status(*s),
            Outcome::GuestPanic(_) => ExitCode::GuestPanic,
            Outcome::TripleFault { .. } => ExitCode::TripleFault,
            Outcome::TextWrite { .. } => ExitCode::TextWrite,
            Outcome::VcpuFault { .. } => ExitCode::VcpuFault,
            Outcome::ShutdownTimeout | Outcome::Forced => ExitCode::ShutdownTimeout,
        }
    }
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
    let text = memory::Text(&mem);
    let plan = sites.plan(&text, Profile::MAINLINE, config.mode)?;
    let rewritten = plan.apply(&text)?;
    eprintln!(
        "rtswitch: mode {}: {} lock call sites verified, {rewritten} patched ({} lock, {} preemption, {} interrupt dispatch)",
        config.mode.name(),
        sites.len(),
        sites.count_in(Dimension::Locks),
        sites.count_in(Dimension::Preempt),
        sites.count_in(Dimension::Irq)
    );

    let console = Arc::new(Console::new(&config.serial)?);
    let mut vm = vm::create(kvm, &mem, config.vcpus, kernel.entry, kernel.text.clone())?;
    let irq_load = match config.irq_load {
        Some(l) => Some(IrqInjector::new(&vm.fd, config.vcpus, l.rate_hz)?),
        None => None,
    };

    let mut boot_info = BootInfo::new(config.vcpus, config.memory_bytes, u64::from(vm.tsc_khz), config.mode);
    boot_info.apic_timer_khz = vm::APIC_TIMER_KHZ;
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
            eprintln!("rtswitch: control socket at {} (QMP)", path.display());
            Some(server)
        }
        None => None,
    };
    let limits =
        SwitchLimits { quiesce: config.switch_timeout, vcpu_stop: config.vcpu_stop_timeout, ..SwitchLimits::default() };
    let coordinator = Coordinator::new(sites, config.mode, limits, started, vm.tsc_khz);
    let signal_evt = signals::install().map_err(|e| RunError::Host("signal handlers", e))?;
    vcpu::register_kick_handler()
        .map_err(|e| RunError::Host("vCPU kick signal handler", std::io::Error::from_raw_os_error(e.errno())))?;
    let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(|e| RunError::Host("eventfd", e))?);
    let sandbox = Arc::new(Sandbox::new(config.seccomp)?);
    let (tx, rx) = channel();
    let gate = Arc::new(HoldGate::new());
    let mut mmio = Bus::new();
    mmio.insert(abi::DOORBELL_ADDR, DOORBELL_SIZE, Arc::new(Doorbell::new(mem.clone(), console.clone())))?;
    let mmio = Arc::new(mmio);
    let mut handles = Vec::with_capacity(vm.vcpus.len());
    for (cpu, fd) in vm.vcpus.drain(..).enumerate() {
        let ctx = VcpuContext {
            mmio: mmio.clone(),
            events: tx.clone(),
            wake: wake.clone(),
            gate: gate.clone(),
            text: kernel.text.clone(),
            sandbox: sandbox.clone(),
        };
        handles.push(vcpu::spawn(cpu as u32, fd, ctx).map_err(|e| RunError::Host("spawning a vCPU thread", e))?);
    }
    drop(tx);

    let controller = Controller::new(
        config,
        started,
        console.clone(),
        vm.fd,
        mem,
        handles,
        rx,
        wake,
        signal_evt,
        vm.tsc_khz,
        telemetry,
        gate,
        api,
        coordinator,
        irq_load,
    )?;
    let controller = Arc::new(Mutex::new(controller));
    let mut em = EventManager::<Arc<Mutex<Controller>>>::new().map_err(|e| RunError::EventLoop(e.to_string()))?;
    em.add_subscriber(controller.clone());
    // Setup is over: from here on the control thread makes only the calls
    // its filter allows (`seccomp`).
    sandbox.enter(seccomp::Thread::Control)?;
    loop {
        if lock(&controller).outcome.is_some() {
            break;
        }
        em.run().map_err(|e| RunError::EventLoop(e.to_string()))?;
    }
    let mut ctl = lock(&controller);
    ctl.stop_vcpus();
    let cause = ctl.shutdown_cause();
    ctl.announce_shutdown(cause);
    console.flush();
    Ok(ctl.report(config))
}

/// Where the telemetry region lives in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct TelemetryPlacement {
    pub addr: u64,
    pub layout: Layout,
}

/// Places the telemetry region at the first 2 MiB boundary above the
/// kernel image (nothing in the guest uses memory there).
/// What the reports show of the run's configuration.
fn report_settings(config: &RunConfig) -> RunSettings {
    RunSettings {
        vcpus: config.vcpus,
        memory_bytes: config.memory_bytes,
        mode: config.mode,
        workload: config.workload,
        hist_buckets: config.hist_buckets,
        duration: config.duration,
        outputs: config.outputs(),
    }
}

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

/// How often the status timer fires.
const STATUS_PERIOD: Duration = Duration::from_secs(1);

mod control;
mod pacing;

fn lock(c: &Mutex<Controller>) -> std::sync::MutexGuard<'_, Controller> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// The control thread's view of the run.
struct Controller {
    started: Instant,
    console: Arc<Console>,
    vm: kvm_ioctls::VmFd,
    mem: Arc<GuestMemory>,
    vcpus: Vec<VcpuHandle>,
    events: Receiver<VcpuEvent<Hypercall>>,
    wake: Arc<EventFd>,
    signal: EventFd,
    duration_timer: Option<TimerFd>,
    grace_timer: TimerFd,
    shutdown_timeout: Duration,
    cpu_count: u32,
    tsc_khz: u32,
    online_mask: u64,
    ready_at: Option<Duration>,
    boot_started: Instant,
    shutdown_reason: Option<String>,
    /// Why the host asked the guest to shut down (the SHUTDOWN event).
    shutdown_request: Option<ShutdownCause>,
    finished_vcpus: u32,
    outcome: Option<Outcome>,
    /// The latency telemetry, read once a second and after the run.
    telemetry: TelemetryReader,
    status: StatusPrinter,
    status_timer: TimerFd,
    guest_info: Option<GuestInfo>,
    host_ps_per_iter: Option<u64>,
    /// The stop-machine gate the vCPU threads pass before every KVM_RUN.
    gate: Arc<HoldGate>,
    /// The control socket, when `--api-sock` was given.
    api: Option<ApiServer>,
    /// Runtime switches (`switch`), and the client waiting for one.
    coordinator: Coordinator,
    switch_waiter: Option<control::SwitchWaiter>,
    /// Deadline of the switch in progress.
    switch_timer: TimerFd,
    /// `--switch-every`, its period and its ticks.
    switch_every_timer: Option<TimerFd>,
    switch_every: Option<(std::time::Duration, pacing::Ticks)>,
    /// Lockup reports from the guest's heartbeats.
    watchdog: Watchdog,
    /// `--stop-above`: the report of the sample that stopped the run.
    stop: Option<StopInfo>,
    /// The interval warning was printed.
    keepup_warned: bool,
    /// The two profiles `--switch-every` toggles between (boot, --switch-to).
    switch_every_profiles: (Profile, Profile),
    /// `--irq-load`: the device interrupt injector.
    irq_load: Option<IrqInjector>,
}

impl Controller {
    #[allow(clippy::too_many_arguments)]
    fn new(
        config: &RunConfig,
        started: Instant,
        console: Arc<Console>,
        vm: kvm_ioctls::VmFd,
        mem: Arc<GuestMemory>,
        vcpus: Vec<VcpuHandle>,
        events: Receiver<VcpuEvent<Hypercall>>,
        wake: Arc<EventFd>,
        signal: EventFd,
        tsc_khz: u32,
        telemetry: TelemetryPlacement,
        gate: Arc<HoldGate>,
        api: Option<ApiServer>,
        coordinator: Coordinator,
        irq_load: Option<IrqInjector>,
    ) -> Result<Self, RunError> {
        let switch_every_timer = match config.switch_every {
            Some(period) => {
                if let Some(w) = pacing::start_warning(period, &config.workload) {
                    console.report(&format!("rtswitch: {w}"));
                }
                let mut t = TimerFd::new().map_err(|e| RunError::Host("timerfd", e.into()))?;
                t.reset(period, Some(period)).map_err(|e| RunError::Host("timerfd", e.into()))?;
                Some(t)
            }
            None => None,
        };
        let duration_timer = match config.duration {
            Some(d) => {
                let mut t = TimerFd::new().map_err(|e| RunError::Host("timerfd", e.into()))?;
                t.reset(d, None).map_err(|e| RunError::Host("timerfd", e.into()))?;
                Some(t)
            }
            None => None,
        };
        let mut status_timer = TimerFd::new().map_err(|e| RunError::Host("timerfd", e.into()))?;
        status_timer.reset(STATUS_PERIOD, Some(STATUS_PERIOD)).map_err(|e| RunError::Host("timerfd", e.into()))?;
        let tty = std::io::stderr().is_terminal();
        let reader = TelemetryReader::new(mem.clone(), telemetry.addr, telemetry.layout);
        Ok(Self {
            started,
            console,
            vm,
            mem,
            vcpus,
            events,
            wake,
            signal,
            duration_timer,
            grace_timer: TimerFd::new().map_err(|e| RunError::Host("timerfd", e.into()))?,
            shutdown_timeout: config.shutdown_timeout,
            cpu_count: config.vcpus,
            tsc_khz,
            online_mask: 0,
            ready_at: None,
            boot_started: Instant::now(),
            shutdown_reason: None,
            shutdown_request: None,
            finished_vcpus: 0,
            outcome: None,
            telemetry: reader,
            status: StatusPrinter::new(config.output.quiet, tty, config.duration),
            status_timer,
            guest_info: None,
            host_ps_per_iter: None,
            gate,
            api,
            coordinator,
            switch_waiter: None,
            switch_timer: TimerFd::new().map_err(|e| RunError::Host("timerfd", e.into()))?,
            switch_every_timer,
            switch_every: config.switch_every.map(|p| (p, pacing::Ticks::default())),
            watchdog: Watchdog::new(config.vcpus, config.watchdog),
            stop: None,
            keepup_warned: false,
            switch_every_profiles: (config.mode, config.switch_to),
            irq_load,
        })
    }

    /// One VMM line for the user (stderr, between guest console lines).
    fn say(&self, line: &str) {
        self.console.report(&format!("rtswitch: {line}"));
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.outcome.is_none() {
            self.outcome = Some(outcome);
        }
    }

    fn on_vcpu_event(&mut self, event: VcpuEvent<Hypercall>) {
        match event {
            VcpuEvent::Device { cpu, event: call } => self.on_hypercall(cpu, call),
            VcpuEvent::TripleFault { cpu } => {
                self.say(&format!(
                    "rtswitch: guest triple fault on cpu {cpu} (KVM_EXIT_SHUTDOWN): the guest hit an exception it could not handle"
                ));
                self.finish(Outcome::TripleFault { cpu });
            }
            VcpuEvent::TextWrite { cpu, addr, len } => {
                self.say(&format!(
                    "guest fault: cpu {cpu} wrote {len} byte(s) to its own text at {addr:#x}, which the hypervisor keeps read-only (only the VMM patches it)"
                ));
                self.finish(Outcome::TextWrite { cpu, addr });
            }
            VcpuEvent::Fault { cpu, what } => {
                self.say(&format!("vcpu{cpu} cannot run: {what}"));
                self.finish(Outcome::VcpuFault { cpu, what });
            }
            VcpuEvent::Finished { cpu } => {
                self.finished_vcpus += 1;
                log::debug!("vcpu{cpu} finished ({} of {})", self.finished_vcpus, self.cpu_count);
            }
        }
    }

    fn on_hypercall(&mut self, cpu: u32, call: Hypercall) {
        match call {
            Hypercall::CpuOnline(n) => {
                if n >= self.cpu_count || n != cpu {
                    log::warn!(
                        "vcpu{cpu} reported cpu {n} online; ignored (expected its own index below {})",
                        self.cpu_count
                    );
                    return;
                }
                self.online_mask |= 1 << n;
            }
            Hypercall::Ready => self.on_ready(cpu),
            Hypercall::Exit(status) => self.finish(Outcome::GuestExit(status)),
            Hypercall::Panic(p) => {
                self.say(&p.to_string());
                self.finish(Outcome::GuestPanic(p));
            }
            // Routed to the switch coordinator by `process`.
            Hypercall::Switch(_) => {}
            // Written out by the vCPU thread itself.
            Hypercall::Console(_) => {}
            Hypercall::StopAbove(n) => self.on_stop_above(n),
        }
    }

    /// `--stop-above`: prints the cause of the sample that crossed the
    /// threshold (the guest's stop report) and ends the run.
    fn on_stop_above(&mut self, cpu: u32) {
        if self.stop.is_some() {
            return;
        }
        self.telemetry.harvest();
        let threshold = self.telemetry.workload().map_or(0, |w| w.stop_above_us);
        let Some(info) = self.telemetry.stop_report() else {
            log::warn!("vcpu{cpu} signalled --stop-above without a complete stop report; ignored");
            return;
        };
        let locks = crate::switch::locks::held_by(&self.mem, info.task_addr);
        for line in report::stop::render(&info, threshold, self.tsc_khz, &locks).lines() {
            self.say(line);
        }
        let reason = format!("--stop-above {threshold} us crossed on cpu {}", info.cpu);
        self.stop = Some(info);
        self.request_shutdown(ShutdownCause::GuestShutdown, reason);
    }

    /// Once, when the guest misses most periods of the first second: the
    /// interval is shorter than this host lets the guest keep.
    fn check_keepup(&mut self) {
        if self.keepup_warned {
            return;
        }
        let m = Measurement::from_reader_listing(&self.telemetry, |_| false);
        let Some(w) = m.workload.as_ref().filter(|w| w.running) else { return };
        let rows = m.per_cpu_whole_run();
        let (samples, missed): (u64, u64) =
            rows.iter().map(|r| (r.figures.samples, r.figures.missed)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let steal_ms = rows.iter().map(|r| r.figures.steal_ns).sum::<u64>() / 1_000_000;
        let periods = samples + missed;
        if periods < 20 {
            return;
        }
        self.keepup_warned = true;
        if missed * 4 > periods {
            self.say(&format!(
                "warning: the guest missed {missed} of {periods} periods at --interval-us {} (host steal time so \
                 far: {steal_ms} ms over the vCPUs): when the host does not steal, this interval is shorter than \
                 this host lets the guest keep (each period costs a timer interrupt and a wake-up, which exit to \
                 the hypervisor); the figures count the misses, a longer --interval-us measures more",
                w.interval_us
            ));
        }
    }

    fn on_ready(&mut self, cpu: u32) {
        if self.ready_at.is_some() {
            log::warn!("vcpu{cpu} reported ready again; ignored");
            return;
        }
        let online = self.online_mask.count_ones();
        let elapsed = self.started.elapsed();
        self.ready_at = Some(elapsed);
        if online != self.cpu_count {
            log::warn!("guest reported ready with {online} of {} CPUs online", self.cpu_count);
        }
        self.say(&format!(
            "guest ready in {:.1} ms ({online}/{} CPUs online; {:.1} ms after the vCPUs started)",
            elapsed.as_secs_f64() * 1e3,
            self.cpu_count,
            self.boot_started.elapsed().as_secs_f64() * 1e3
        ));
        if self.shutdown_reason.is_some() {
            // A shutdown asked for during boot: its interrupt may have come
            // before the guest could take it; send it again now.
            self.send_shutdown_interrupt();
        }
        match memory::read_abi::<GuestStatus>(&self.mem, abi::GUEST_STATUS_ADDR) {
            Some(st) if st.magic == abi::ABI_MAGIC => {
                let host = host_speed::host_ps_per_iteration();
                self.say(&host_speed::describe(st.calib_ps_per_iter, host));
                self.host_ps_per_iter = Some(host);
                let version = &st.kernel_version
                    [..st.kernel_version.iter().position(|&b| b == 0).unwrap_or(st.kernel_version.len())];
                self.guest_info = Some(GuestInfo {
                    calib_ps_per_iter: st.calib_ps_per_iter,
                    calib_iterations: st.calib_iterations,
                    calib_tsc_ticks: st.calib_tsc_ticks,
                    kernel_version: String::from_utf8_lossy(version).into_owned(),
                });
                log::info!(
                    "guest calibration: {} iterations in {} TSC ticks at {} kHz",
                    st.calib_iterations,
                    st.calib_tsc_ticks,
                    self.tsc_khz
                );
            }
            _ => log::warn!("guest reported ready without filling in its status page"),
        }
    }

    fn send_shutdown_interrupt(&self) {
        if let Err(e) = vm::send_msi(&self.vm, 0, abi::vector::HOST_REQUEST) {
            log::error!("cannot interrupt the guest with the shutdown request: {e}");
        }
    }

    /// Asks the guest to shut down (idempotent) and arms the grace timer.
    fn request_shutdown(&mut self, cause: ShutdownCause, reason: String) {
        if self.shutdown_reason.is_some() {
            return;
        }
        self.shutdown_request = Some(cause);
        self.say(&format!("{reason}: asking the guest to shut down"));
        self.shutdown_reason = Some(reason);
        let field = abi::BOOT_INFO_ADDR + std::mem::offset_of!(BootInfo, host_request) as u64;
        if let Err(e) = memory::write_u32(&self.mem, field, abi::host_request::SHUTDOWN) {
            log::error!("cannot post the shutdown request: {e}");
        }
        self.send_shutdown_interrupt();
        if let Err(e) = self.grace_timer.reset(self.shutdown_timeout, None) {
            log::error!("cannot arm the shutdown grace timer: {e}; stopping now");
            self.finish(Outcome::ShutdownTimeout);
        }
    }

    /// Why the run ended, as the SHUTDOWN event says it: what the guest
    /// did, or what the host asked of it.
    fn shutdown_cause(&self) -> ShutdownCause {
        match (&self.outcome, self.shutdown_request) {
            (Some(Outcome::GuestPanic(_)), _) => ShutdownCause::GuestPanic,
            (Some(Outcome::TripleFault { .. }), _) => ShutdownCause::GuestReset,
            (Some(Outcome::VcpuFault { .. }), _) => ShutdownCause::HostError,
            (Some(Outcome::TextWrite { .. }), _) => ShutdownCause::GuestPanic,
            (Some(Outcome::Forced), _) => ShutdownCause::HostSignal,
            (_, Some(asked)) => asked,
            (Some(Outcome::ShutdownTimeout), None) => ShutdownCause::HostError,
            (Some(Outcome::GuestExit(_)) | None, None) => ShutdownCause::GuestShutdown,
        }
    }

    fn stop_vcpus(&mut self) {
        for v in &self.vcpus {
            v.kick_stop();
        }
        for v in &mut self.vcpus {
            v.join();
        }
    }

    /// How the run ended, in words.
    fn outcome_text(&self, outcome: &Outcome, ran: f64) -> String {
        let why = self.shutdown_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        match outcome {
            Outcome::GuestExit(0) => format!("guest shut down cleanly after {ran:.3} s{why}"),
            Outcome::GuestExit(s) => format!("guest exited with status {s} after {ran:.3} s{why}"),
            Outcome::GuestPanic(_) => format!("run ended by a guest panic after {ran:.3} s"),
            Outcome::TripleFault { cpu } => {
                format!("run ended by a triple fault on cpu {cpu} after {ran:.3} s")
            }
            Outcome::VcpuFault { cpu, .. } => {
                format!("run ended: vcpu{cpu} could not run, after {ran:.3} s")
            }
            Outcome::TextWrite { cpu, addr } => {
                format!("run ended by a write to guest text at {addr:#x} on cpu {cpu} after {ran:.3} s")
            }
            Outcome::ShutdownTimeout => format!(
                "the guest did not shut down within {:.1} s of being asked{why}; stopped it",
                self.shutdown_timeout.as_secs_f64()
            ),
            Outcome::Forced => format!("stopped the guest on a second signal{why}"),
        }
    }

    /// Status timer: reads the telemetry; prints the live status or the
    /// progress line (not once a shutdown was asked for).
    fn on_status_tick(&mut self) {
        self.telemetry.harvest();
        if self.shutdown_reason.is_some() || self.outcome.is_some() {
            return;
        }
        if self.ready_at.is_some() {
            for line in self.watchdog.check(&self.mem) {
                self.say(&line);
            }
            self.check_keepup();
        }
        let (elapsed, mark) = (self.started.elapsed(), self.console.output_mark());
        let columns = report::status::terminal_columns();
        if let Some(text) = self.status.tick(&self.telemetry, elapsed, mark, columns) {
            self.console.report(&text);
            self.status.printed(self.console.output_mark());
        }
    }

    /// Prints how the run ended and the latency reports, writes the output
    /// files; returns the run's exit code.
    fn report(&mut self, config: &RunConfig) -> ExitCode {
        let ran = self.started.elapsed().as_secs_f64();
        let outcome = self.outcome.clone().unwrap_or(Outcome::Forced);
        self.say(&self.outcome_text(&outcome, ran));
        if self.ready_at.is_none() {
            self.say(&format!(
                "the guest never reported ready ({} of {} CPUs online)",
                self.online_mask.count_ones(),
                self.cpu_count
            ));
        }
        if let Some(reg) = memory::read_abi::<LockRegistry>(&self.mem, abi::LOCK_REGISTRY_ADDR)
            && reg.magic == abi::ABI_MAGIC
        {
            self.say(&format!(
                "switchable locks ({} mode): {} acquisitions ({} contended), {} PI boosts; at exit {} held, {} waiting",
                Profile::from_u32(reg.mode).map_or("unknown", Profile::name),
                reg.acquisitions,
                reg.contended,
                reg.pi_boosts,
                reg.held,
                reg.waiters
            ));
        }
        let shim = crate::vstate::shim_stats::ShimEntries::read(&self.mem, self.cpu_count);
        self.say(&shim.to_string());
        let mut code = outcome.exit_code();
        self.telemetry.harvest();
        let measurement = Measurement::from_reader(&self.telemetry);
        if let Some(dev) = &self.irq_load
            && let Some(w) = self.telemetry.workload()
        {
            self.say(&report::irq_load_line(dev.rate_hz(), &dev.counts(), w));
        }
        if measurement.measured() {
            self.console.report(&report::summary::render(&measurement));
        } else if config.workload.enabled != 0 && self.ready_at.is_some() {
            self.say("no latency samples: the guest never started its measurement threads");
        }
        if measurement.forgotten > 0 {
            self.say(&format!(
                "latency: the table lists the newest {} epochs; {} earlier ones count in its \"all <mode>\" rows \
                 (every epoch of each mode) and the --json report's modes[]",
                measurement.epochs.len(),
                measurement.forgotten
            ));
        }
        if let Some(text) = crate::switch::summary(self.coordinator.history()) {
            self.say(&text);
        }
        if let Some((period, ticks)) = &self.switch_every
            && let Some(w) = ticks.end_warning(*period, self.coordinator.history())
        {
            self.say(&w);
        }
        let verdict = measurement.load_verdict();
        if verdict == LoadVerdict::Violated {
            self.say("the load's consistency check FAILED: a switchable lock did not protect its data");
        }
        code = report::exit_code_with_load_check(code, verdict);
        // A stall the guest flagged after the last status tick counts too.
        for line in self.watchdog.check(&self.mem) {
            self.say(&line);
        }
        let result = report::RunResult::judge(
            &measurement,
            config.workload.enabled != 0 && self.ready_at.is_some(),
            self.watchdog.stalls(),
            self.stop.as_ref(),
        );
        self.say(&result.line());
        code = code.worst(result.exit_code());
        let info = RunInfo {
            settings: report_settings(config),
            tsc_khz: self.tsc_khz,
            host_ps_per_iter: self.host_ps_per_iter,
            guest: self.guest_info.clone(),
            ready_ms: self.ready_at.map(|d| d.as_secs_f64() * 1e3),
            shim,
            elapsed_s: ran,
            outcome: self.outcome_text(&outcome, ran),
            exit_code: code,
            switches: self.coordinator.history().clone(),
            retained_epochs: self.telemetry.retain(),
            result,
            stop: self.stop.clone(),
            irq_load: self.irq_load.as_ref().map(IrqInjector::counts),
        };
        let written = report::write_outputs(&measurement, &info);
        for line in &written.notes {
            self.say(line);
        }
        for e in written.errors {
            self.say(&e.to_string());
            code = code.worst(ExitCode::VmmError);
        }
        self.say(&format!("exit code {} ({code:?})", code.code()));
        code
    }
}

impl MutEventSubscriber for Controller {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if let Some(dev) = self.irq_load.as_mut()
            && dev.timer_fd() == fd
        {
            dev.on_timer();
            return;
        }
        if self.is_api_fd(fd) {
            self.on_api_event(fd, events.event_set(), ops);
        } else if fd == self.switch_timer.as_raw_fd() {
            let _ = self.switch_timer.wait();
            self.on_switch_deadline(ops);
        } else if self.switch_every_timer.as_ref().is_some_and(|t| t.as_raw_fd() == fd) {
            let expirations = self.switch_every_timer.as_mut().and_then(|t| t.wait().ok()).unwrap_or(1);
            self.on_switch_every(expirations, ops);
        } else if fd == self.wake.as_raw_fd() {
            let _ = self.wake.read();
            while let Ok(ev) = self.events.try_recv() {
                if let VcpuEvent::Device { event: Hypercall::Switch(_), .. } = ev {
                    self.on_guest_switch_notify(ops);
                } else {
                    self.on_vcpu_event(ev);
                }
            }
            if self.finished_vcpus == self.cpu_count && self.outcome.is_none() {
                self.finish(Outcome::VcpuFault { cpu: 0, what: "every vCPU stopped without the guest exiting".into() });
            }
        } else if fd == self.signal.as_raw_fd() {
            let _ = self.signal.read();
            if self.shutdown_reason.is_some() {
                self.say("second signal: stopping the guest now");
                self.finish(Outcome::Forced);
            } else {
                self.request_shutdown(ShutdownCause::HostSignal, "signal received".into());
            }
        } else if self.duration_timer.as_ref().is_some_and(|t| t.as_raw_fd() == fd) {
            if let Some(t) = self.duration_timer.as_mut() {
                let _ = t.wait();
            }
            let secs = self.started.elapsed().as_secs_f64();
            self.request_shutdown(ShutdownCause::HostDuration, format!("--duration reached after {secs:.3} s"));
        } else if fd == self.status_timer.as_raw_fd() {
            let _ = self.status_timer.wait();
            self.on_status_tick();
        } else if fd == self.grace_timer.as_raw_fd() {
            let _ = self.grace_timer.wait();
            self.finish(Outcome::ShutdownTimeout);
        } else {
            log::warn!("event on unknown fd {fd}");
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let mut fds = vec![
            self.wake.as_raw_fd(),
            self.signal.as_raw_fd(),
            self.grace_timer.as_raw_fd(),
            self.status_timer.as_raw_fd(),
        ];
        if let Some(t) = &self.duration_timer {
            fds.push(t.as_raw_fd());
        }
        fds.push(self.switch_timer.as_raw_fd());
        if let Some(t) = &self.switch_every_timer {
            fds.push(t.as_raw_fd());
        }
        fds.extend(self.api_fds());
        fds.extend(self.irq_load.as_ref().map(IrqInjector::timer_fd));
        for fd in fds {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                log::error!("cannot watch fd {fd}: {e:?}");
            }
        }
    }
}
