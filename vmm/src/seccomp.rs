//! The sandbox: a seccomp filter per thread of `rtswitch run`, installed by
//! each thread once its setup is done, that allows only the system calls
//! that thread makes from then on (docs/threat-model.md, "Sandbox").
//!
//! Threads of a run and where each installs its filter:
//! - **vCPU threads** (`vcpu<N>`, `vstate::vcpu`): first thing in the run
//!   loop, before the first `KVM_RUN`. Their fds (vCPU, console, wake
//!   eventfd) were opened by the main thread.
//! - **the control thread** (the main thread, `runner`): after the VM is
//!   built, the vCPU threads started and the event loop set up, just before
//!   the loop's first `epoll_wait`. It serves the QMP socket (bound during
//!   setup), the timers, the switch, and writes the reports at the end.
//! - **the console writer** (`console`, `devices::console`): first thing,
//!   before it takes a message; the common set only.
//! - **the host-noise probes** (`hnoise<N>`, `host_noise::probe`): after
//!   pinning themselves and asking for SCHED_FIFO, before their first
//!   sleep; the common set only, no `ioctl` (they sleep, read the clock,
//!   and take their record's lock).
//!
//! No other thread exists in a run. `rtswitch bench`, `stress` and `ctl`
//! install no filter: they start child `rtswitch run` processes (which
//! filter themselves) or are plain clients; nothing here runs a guest.
//!
//! The allow-lists come from `strace -f` of real runs (a plain run;
//! `--switch-every` with the QMP socket and `ctl` traffic of every command,
//! bad input included; `--json`, `--histogram`, `--plot`; `--serial
//! file:`; shutdown by `--duration`, `quit`, SIGINT, and a guest panic),
//! taking each thread's calls from the point its filter goes in, plus a
//! few that the allocator or the C library may make on paths those runs
//! did not take (each marked "may" below). Threads share their memory, so
//! the control thread's list is in effect the process's; it has no
//! `openat`, `unlink` or `getrandom` (every output file is open before the
//! filter goes in: `outfile`), and arguments are checked where a call
//! could do harm ([`argument_rules`]):
//!
//! - `ioctl` by request number only: a vCPU thread may run its vCPU and
//!   read its registers, the control thread may send an MSI and ask about
//!   the terminal;
//! - `mmap` and `mprotect` never with `PROT_EXEC` (no new code);
//! - `futex` with the operations the standard library and the C library
//!   use (wait, wake, requeue, wake-op, bitset wait/wake), no PI ones;
//! - `tgkill` only to this process, only with the vCPU kick signal;
//! - `fcntl` only to read or set descriptor and status flags;
//! - `accept4` only on the control socket, with `SOCK_CLOEXEC` (and
//!   optionally `SOCK_NONBLOCK`);
//! - `renameat` and `unlinkat` (flags 0) only through the directory fds
//!   of the output files and of the control socket, one fd for both
//!   names of a rename (with Landlock, `landlock_fs`, only in those
//!   directories).
//!
//! Besides the filters, [`Sandbox::new`] puts on the whole process the
//! Landlock file rules (`landlock_fs`) and the resource limits
//! (`rlimits`), before the vCPU threads start.
//!
//! A call outside the list raises SIGSYS (`SECCOMP_RET_TRAP`); the handler
//! prints the thread's name and the call's number and ends the process with
//! exit code 10 ([`ExitCode::SeccompViolation`]), since a VMM whose thread
//! did something it never does may be compromised or broken. `--seccomp
//! off` skips the filters, for debugging.
//!
//! Test only: `RTSWITCH_SECCOMP_TEST_TRIP=vcpu` (vCPU 0) or `=control` makes
//! that thread call `socket(2)`, which no list allows, right after its
//! filter is in; `=control-openat` and `=control-unlink` make the control
//! thread create and remove a file (`/tmp/rtswitch-trip`);
//! `=control-panic` makes it panic, and `=control-wedge` makes it spin
//! for ever, ignoring its loop (`tests/tests/seccomp.rs`). Nothing else
//! reads it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::os::fd::RawFd;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use crate::exit_code::ExitCode;

/// The environment variable of the test-only trigger (module comment).
pub const TEST_TRIP_ENV: &str = "RTSWITCH_SECCOMP_TEST_TRIP";

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error(
        "building the seccomp filter of the {thread} thread failed: {source}; this is a bug, run with --seccomp off"
    )]
    Build { thread: &'static str, source: seccompiler::Error },
    #[error("installing the seccomp filter of thread {thread} failed: {source}; run with --seccomp off to go without")]
    Install { thread: String, source: seccompiler::Error },
    #[error("installing the SIGSYS handler failed: {0}; run with --seccomp off to go without")]
    Handler(std::io::Error),
    #[error(
        "{TEST_TRIP_ENV}={0:?} is not a trigger: use vcpu, control, control-openat, control-unlink, control-panic or \
         control-wedge (test only)"
    )]
    BadTrip(String),
    #[error("{0}")]
    Landlock(#[from] crate::landlock_fs::LandlockError),
    #[error("setting the resource limits failed: {0}; run with --seccomp off to go without the sandbox")]
    Rlimits(std::io::Error),
}

/// A thread of a run, as far as its filter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    Vcpu(u32),
    Control,
    /// The guest console's writer (`devices::console`).
    Console,
    /// The host-noise probe of a host CPU (`host_noise::probe`).
    HostNoise(u32),
}

impl Thread {
    fn name(self) -> String {
        match self {
            Thread::Vcpu(cpu) => format!("vcpu{cpu}"),
            Thread::Control => "control".into(),
            Thread::Console => "console".into(),
            Thread::HostNoise(cpu) => format!("hnoise{cpu}"),
        }
    }
}

/// What the test-only trigger makes a thread do (module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trip {
    Socket,
    Openat,
    Unlink,
    Panic,
    Wedge,
}

/// The fds the control thread's argument rules name.
#[derive(Debug, Default, Clone)]
pub struct Allowed {
    /// Directories of the output files: rename and remove through them.
    pub output_dirs: Vec<RawFd>,
    /// The control socket's directory: remove through it.
    pub socket_dir: Option<RawFd>,
    /// The control socket: accept on it.
    pub listener: Option<RawFd>,
}

impl Allowed {
    fn dirs(&self) -> Vec<RawFd> {
        let mut d = self.output_dirs.clone();
        d.extend(self.socket_dir);
        d.sort_unstable();
        d.dedup();
        d
    }
}

/// One program per kind of thread.
#[derive(Debug)]
struct Filters {
    vcpu: BpfProgram,
    control: BpfProgram,
    console: BpfProgram,
    host_noise: BpfProgram,
}

/// The filters of one run, built before any thread installs one.
#[derive(Debug)]
pub struct Sandbox {
    /// `None`: `--seccomp off`.
    filters: Option<Filters>,
    /// The test-only trigger (module comment).
    trip: Option<(Thread, Trip)>,
}

impl Sandbox {
    /// Builds the filters, installs the SIGSYS handler, and puts the
    /// Landlock rules and the resource limits on the process (`enabled`),
    /// or a sandbox that does nothing (`--seccomp off`). Call it on the
    /// main thread before any other thread starts.
    pub fn new(enabled: bool, allowed: &Allowed) -> Result<Self, SeccompError> {
        one_allocator_arena();
        let trip = match std::env::var(TEST_TRIP_ENV) {
            Ok(v) => Some(match v.as_str() {
                "vcpu" => (Thread::Vcpu(0), Trip::Socket),
                "control" => (Thread::Control, Trip::Socket),
                "control-openat" => (Thread::Control, Trip::Openat),
                "control-unlink" => (Thread::Control, Trip::Unlink),
                "control-panic" => (Thread::Control, Trip::Panic),
                "control-wedge" => (Thread::Control, Trip::Wedge),
                _ => return Err(SeccompError::BadTrip(v)),
            }),
            Err(_) => None,
        };
        if !enabled {
            log::warn!("the sandbox is off (--seccomp off): no seccomp filters, Landlock rules or resource limits");
            return Ok(Self { filters: None, trip });
        }
        let vcpu = compile("vCPU", vcpu_rules())?;
        let control = compile("control", control_rules(allowed))?;
        let console = compile("console", console_rules())?;
        let host_noise = compile("host-noise", host_noise_rules())?;
        install_sigsys_handler().map_err(SeccompError::Handler)?;
        crate::rlimits::apply().map_err(SeccompError::Rlimits)?;
        let enforced =
            crate::landlock_fs::restrict(&allowed.output_dirs, &allowed.socket_dir.into_iter().collect::<Vec<_>>())?;
        log::debug!("Landlock file rules: {enforced:?} enforced by this kernel");
        Ok(Self { filters: Some(Filters { vcpu, control, console, host_noise }), trip })
    }

    /// Installs `thread`'s filter on the calling thread (from then on, for
    /// good) and records its name for the SIGSYS message.
    pub fn enter(&self, thread: Thread) -> Result<(), SeccompError> {
        if let Some(f) = &self.filters {
            set_thread_name(&thread.name());
            let prog = match thread {
                Thread::Vcpu(_) => &f.vcpu,
                Thread::Control => &f.control,
                Thread::Console => &f.console,
                Thread::HostNoise(_) => &f.host_noise,
            };
            seccompiler::apply_filter(prog)
                .map_err(|source| SeccompError::Install { thread: thread.name(), source })?;
            log::debug!("seccomp filter installed on thread {}", thread.name());
        }
        if let Some((t, what)) = self.trip
            && t == thread
        {
            trip(what);
        }
        Ok(())
    }
}

/// Makes every thread allocate from the C library's main arena (before any
/// other thread exists). A thread's own arena, shrinking after frees,
/// opens `/proc/sys/vm/overcommit_memory` (glibc's
/// `check_may_shrink_heap`), and creating one reads the CPU count from
/// `/sys`: calls no filter here allows (the console writer frees what
/// the vCPU threads allocate). The main arena grows and shrinks with
/// `brk`, which every filter allows.
fn one_allocator_arena() {
    // SAFETY: mallopt(3) only sets an allocator parameter.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) } != 1 {
        log::warn!("cannot limit the allocator to one arena; a thread may trip its seccomp filter when it frees");
    }
}

/// Test only: a call that no allow-list has (a network socket: a VMM has no
/// business opening one once it runs; creating or removing a file by
/// name), a panic, or a wedged thread. With the filters on the calls do
/// not return.
fn trip(what: Trip) {
    let doing = match what {
        Trip::Socket => "calling socket(2), which no seccomp filter allows",
        Trip::Openat => "creating /tmp/rtswitch-trip with openat(2), which the control thread's filter forbids",
        Trip::Unlink => "removing /tmp/rtswitch-trip with unlink(2), which the control thread's filter forbids",
        Trip::Panic => "panicking",
        Trip::Wedge => "spinning for ever instead of running the control loop",
    };
    log::warn!("{TEST_TRIP_ENV}: {doing}");
    let path = c"/tmp/rtswitch-trip";
    match what {
        Trip::Socket => {
            // SAFETY: socket(2) takes no pointers; the fd it may return
            // (filters off) is closed at once.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            if fd >= 0 {
                // SAFETY: `fd` was just returned by socket(2) and is ours.
                unsafe { libc::close(fd) };
            }
        }
        Trip::Openat => {
            // SAFETY: openat(2) with a NUL-terminated path; the fd it may
            // return (filters off) is closed at once.
            let fd = unsafe {
                libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600)
            };
            if fd >= 0 {
                // SAFETY: `fd` was just returned by openat(2) and is ours.
                unsafe { libc::close(fd as libc::c_int) };
            }
        }
        // SAFETY: unlink(2) with a NUL-terminated path.
        Trip::Unlink => unsafe {
            libc::syscall(libc::SYS_unlink, path.as_ptr());
        },
        Trip::Panic => panic!("{TEST_TRIP_ENV}=control-panic"),
        Trip::Wedge => loop {
            std::hint::spin_loop();
        },
    }
}

// --- The allow-lists ------------------------------------------------------

/// Every thread: memory (the allocator maps, grows and trims its arenas:
/// `mmap`, `mprotect`, `munmap`, `madvise`; "may": `brk`, `mremap`),
/// locks and channels (`futex`), logging and output (`write`; "may":
/// `writev`), signal return (`rt_sigreturn`: the vCPU kick, SIGINT),
/// time where the vDSO cannot serve it ("may": `clock_gettime`,
/// `clock_nanosleep`, `nanosleep`, `sched_yield`), and the way out (a
/// thread's end: `rt_sigprocmask`, `sigaltstack`, `munmap`, `madvise`,
/// `exit`; the process's: `exit_group`, also what the SIGSYS handler calls).
/// `mmap`, `mprotect` and `futex` are in both lists with argument rules
/// ([`argument_rules`]).
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// vCPU threads, besides [`COMMON`]: nothing but `ioctl` ([`vcpu_ioctls`]).
/// Their writes are the guest console (stdout or the `--serial` file) and
/// the control thread's wake eventfd; their `close` is the vCPU fd when the
/// thread ends.
const VCPU: &[i64] = &[];

/// The control thread, besides [`COMMON`]: the event loop (`epoll_wait`,
/// `epoll_ctl`, `read` of eventfds and timerfds, `timerfd_settime`), the
/// QMP socket (`accept4` (argument rules), `recvfrom`, `sendto`, `read`,
/// `close`; "may": `recvmsg`, `sendmsg`, `shutdown`, `getsockopt`,
/// `fcntl` (argument rules)), kicking vCPUs (`pthread_kill`: `getpid`,
/// `tgkill` (argument rules)), the forced exit's `alarm` (`signals`), and
/// the end of the run: the report files, written to their open temporary
/// files and renamed into place (`write`, `fsync`, `renameat` (argument
/// rules); "may": `fstat`, `newfstatat`, `statx`, `lseek`), the socket
/// removed if still ours (`newfstatat`, `unlinkat` (argument rules)).
const CONTROL: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_read,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_alarm,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_fsync,
];

/// KVM ioctl request numbers, from the kernel's `<linux/kvm.h>` (as
/// kvm-ioctls declares them; it does not export them).
mod kvm_nr {
    use kvm_bindings::{KVMIO, kvm_msi, kvm_regs, kvm_sregs, kvm_vcpu_events};
    use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr};

    ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
    ioctl_iow_nr!(KVM_SET_REGS, KVMIO, 0x82, kvm_regs);
    ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
    ioctl_ior_nr!(KVM_GET_VCPU_EVENTS, KVMIO, 0x9f, kvm_vcpu_events);
    ioctl_iow_nr!(KVM_SET_VCPU_EVENTS, KVMIO, 0xa0, kvm_vcpu_events);
    ioctl_iow_nr!(KVM_SIGNAL_MSI, KVMIO, 0xa5, kvm_msi);
}

/// A vCPU thread runs its vCPU; held at the gate it reads its registers
/// and pending events (`vstate::hold`), and after a switch in one
/// blackout resumes at the serializing stub: it sets its registers and
/// its interrupt shadow (`switch::fast`).
fn vcpu_ioctls() -> Vec<u64> {
    vec![
        kvm_nr::KVM_RUN(),
        kvm_nr::KVM_GET_REGS(),
        kvm_nr::KVM_SET_REGS(),
        kvm_nr::KVM_GET_SREGS(),
        kvm_nr::KVM_GET_VCPU_EVENTS(),
        kvm_nr::KVM_SET_VCPU_EVENTS(),
    ]
}

/// The control thread sends MSIs (`KVM_SIGNAL_MSI`: the host request
/// interrupt), makes accepted QMP connections non-blocking (`FIONBIO`), and
/// asks about stderr's terminal for the status line (`TIOCGWINSZ`; "may":
/// `TCGETS`, `isatty`).
fn control_ioctls() -> Vec<u64> {
    vec![kvm_nr::KVM_SIGNAL_MSI(), libc::FIONBIO, libc::TIOCGWINSZ, libc::TCGETS]
}

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// The console writer: [`COMMON`] only (it writes, waits on its queue's
/// condition variable, and never ends before the process does), and no
/// `ioctl` at all.
fn console_rules() -> Result<Rules, seccompiler::Error> {
    let mut map = rules(&[COMMON], &[])?;
    map.remove(&libc::SYS_ioctl);
    memory_rules(&mut map)?;
    Ok(map)
}

/// A host-noise probe: [`COMMON`] only, no `ioctl`. From its filter on it
/// sleeps to absolute deadlines (`clock_nanosleep`), reads the clock
/// (vDSO; "may": `clock_gettime`), takes its record's lock (`futex`) and,
/// at the end, exits. Its setup calls (`sched_setaffinity`,
/// `sched_setscheduler`, `rt_sigprocmask`) come before the filter.
fn host_noise_rules() -> Result<Rules, seccompiler::Error> {
    let mut map = rules(&[COMMON], &[])?;
    map.remove(&libc::SYS_ioctl);
    memory_rules(&mut map)?;
    Ok(map)
}

fn vcpu_rules() -> Result<Rules, seccompiler::Error> {
    let mut map = rules(&[COMMON, VCPU], &vcpu_ioctls())?;
    memory_rules(&mut map)?;
    Ok(map)
}

fn control_rules(allowed: &Allowed) -> Result<Rules, seccompiler::Error> {
    let mut map = rules(&[COMMON, CONTROL], &control_ioctls())?;
    memory_rules(&mut map)?;
    argument_rules(&mut map, allowed)?;
    Ok(map)
}

/// One condition on argument `arg`, an `int` (its low 32 bits compared,
/// as the kernel reads it).
fn arg(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, seccompiler::Error> {
    Ok(SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)?)
}

/// A rule: every condition holds.
fn all(conds: Vec<SeccompCondition>) -> Result<SeccompRule, seccompiler::Error> {
    Ok(SeccompRule::new(conds)?)
}

/// The futex operations allowed (without the private and clock flags).
const FUTEX_OPS: [u64; 6] = [
    libc::FUTEX_WAIT as u64,
    libc::FUTEX_WAKE as u64,
    libc::FUTEX_REQUEUE as u64,
    libc::FUTEX_CMP_REQUEUE as u64,
    libc::FUTEX_WAKE_OP as u64,
    libc::FUTEX_WAIT_BITSET as u64,
];
const FUTEX_WAKE_BITSET: u64 = 10;

/// Every thread: `mmap`/`mprotect` without `PROT_EXEC`; `futex` with the
/// operations of [`FUTEX_OPS`] (and wake-bitset), private or not, with
/// either clock.
fn memory_rules(map: &mut Rules) -> Result<(), seccompiler::Error> {
    let no_exec = || all(vec![arg(2, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0)?]);
    map.insert(libc::SYS_mmap, vec![no_exec()?]);
    map.insert(libc::SYS_mprotect, vec![no_exec()?]);
    let flags = (libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME) as u64;
    let cmd_mask = !flags & 0xffff_ffff;
    let futex = FUTEX_OPS
        .iter()
        .chain(&[FUTEX_WAKE_BITSET])
        .map(|&op| all(vec![arg(1, SeccompCmpOp::MaskedEq(cmd_mask), op)?]))
        .collect::<Result<Vec<_>, _>>()?;
    map.insert(libc::SYS_futex, futex);
    Ok(())
}

/// The control thread's argument rules (module comment).
fn argument_rules(map: &mut Rules, allowed: &Allowed) -> Result<(), seccompiler::Error> {
    use SeccompCmpOp::Eq;
    // SAFETY: getpid(2) has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    let kick = crate::vstate::vcpu::kick_signal() as u64;
    map.insert(libc::SYS_tgkill, vec![all(vec![arg(0, Eq, pid)?, arg(2, Eq, kick)?])?]);
    let fcntl = [libc::F_GETFD, libc::F_SETFD, libc::F_GETFL, libc::F_SETFL]
        .iter()
        .map(|&cmd| all(vec![arg(1, Eq, cmd as u64)?]))
        .collect::<Result<Vec<_>, _>>()?;
    map.insert(libc::SYS_fcntl, fcntl);
    if let Some(l) = allowed.listener {
        let flags = [libc::SOCK_CLOEXEC, libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK];
        let accept = flags
            .iter()
            .map(|&f| all(vec![arg(0, Eq, l as u64)?, arg(3, Eq, f as u64)?]))
            .collect::<Result<Vec<_>, _>>()?;
        map.insert(libc::SYS_accept4, accept);
    }
    let dirs = allowed.dirs();
    if !dirs.is_empty() {
        let rename = dirs
            .iter()
            .map(|&d| all(vec![arg(0, Eq, d as u64)?, arg(2, Eq, d as u64)?]))
            .collect::<Result<Vec<_>, _>>()?;
        map.insert(libc::SYS_renameat, rename);
        let unlink =
            dirs.iter().map(|&d| all(vec![arg(0, Eq, d as u64)?, arg(2, Eq, 0)?])).collect::<Result<Vec<_>, _>>()?;
        map.insert(libc::SYS_unlinkat, unlink);
    }
    Ok(())
}

/// The rule map: each call in `lists` allowed whatever its arguments,
/// `ioctl` only with one of `ioctls` as its request (argument 1).
fn rules(lists: &[&[i64]], ioctls: &[u64]) -> Result<Rules, seccompiler::Error> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> =
        lists.iter().flat_map(|l| l.iter()).map(|&nr| (nr, vec![])).collect();
    let ioctl_rules = ioctls
        .iter()
        .map(|&req| {
            let cond = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, req)?;
            SeccompRule::new(vec![cond])
        })
        .collect::<Result<Vec<_>, _>>()?;
    map.insert(libc::SYS_ioctl, ioctl_rules);
    Ok(map)
}

fn compile(thread: &'static str, rules: Result<Rules, seccompiler::Error>) -> Result<BpfProgram, SeccompError> {
    let build = || -> Result<BpfProgram, seccompiler::Error> {
        let filter = SeccompFilter::new(rules?, SeccompAction::Trap, SeccompAction::Allow, TargetArch::x86_64)?;
        Ok(filter.try_into()?)
    };
    build().map_err(|source| SeccompError::Build { thread, source })
}

// --- SIGSYS ---------------------------------------------------------------

thread_local! {
    /// The thread's name for the SIGSYS message, NUL-padded; set before
    /// its filter goes in, read by the handler (no allocation, no lock).
    static THREAD_NAME: Cell<[u8; 16]> = const { Cell::new([0; 16]) };
}

fn set_thread_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(buf.len());
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    THREAD_NAME.with(|t| t.set(buf));
}

fn install_sigsys_handler() -> std::io::Result<()> {
    vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, on_sigsys)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// The offset of `si_syscall` in a SIGSYS `siginfo_t` on x86-64 (after
/// `si_signo`, `si_errno`, `si_code`, padding, and `si_call_addr`), which
/// the `libc` crate does not expose.
const SI_SYSCALL_OFFSET: usize = 24;

/// Prints which thread made which forbidden call and ends the process.
/// Only async-signal-safe work: a stack buffer, write(2), _exit(2), both
/// allowed by every filter.
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let nr = if info.is_null() {
        -1
    } else {
        // SAFETY: the kernel passes a valid siginfo_t for SIGSYS (SA_SIGINFO),
        // whose si_syscall is an int at this offset on x86-64.
        unsafe { info.cast::<u8>().add(SI_SYSCALL_OFFSET).cast::<libc::c_int>().read_unaligned() }
    };
    let name = THREAD_NAME.with(|t| t.get());
    let mut msg = Msg::default();
    msg.push(b"rtswitch: seccomp: thread ");
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    msg.push(if len == 0 { b"?" } else { &name[..len] });
    msg.push(b" made system call ");
    msg.push_num(i64::from(nr));
    msg.push(b", which its filter does not allow; the VMM stops (exit code ");
    msg.push_num(i64::from(ExitCode::SeccompViolation.code()));
    msg.push(
        b"). Run with --seccomp off to debug, and report it: vmm/src/seccomp.rs lists what each thread may call\n",
    );
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is
    // ours and `msg.len` bytes of it are initialised.
    unsafe {
        libc::write(libc::STDERR_FILENO, msg.buf.as_ptr().cast(), msg.len);
        libc::_exit(i32::from(ExitCode::SeccompViolation.code()));
    }
}

/// A fixed buffer for the handler's message.
struct Msg {
    buf: [u8; 320],
    len: usize,
}

impl Default for Msg {
    fn default() -> Self {
        Self { buf: [0; 320], len: 0 }
    }
}

impl Msg {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_num(&mut self, v: i64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut u = v.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (u % 10) as u8;
            u /= 10;
            if u == 0 {
                break;
            }
        }
        if v < 0 {
            self.push(b"-");
        }
        self.push(&digits[i..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_request_numbers_match_the_kernel_headers() {
        assert_eq!(kvm_nr::KVM_RUN(), 0xae80);
        assert_eq!(kvm_nr::KVM_GET_REGS(), 0x8090_ae81);
        assert_eq!(kvm_nr::KVM_SET_REGS(), 0x4090_ae82);
        assert_eq!(kvm_nr::KVM_GET_SREGS(), 0x8138_ae83);
        assert_eq!(kvm_nr::KVM_GET_VCPU_EVENTS(), 0x8040_ae9f);
        assert_eq!(kvm_nr::KVM_SET_VCPU_EVENTS(), 0x4040_aea0);
        assert_eq!(kvm_nr::KVM_SIGNAL_MSI(), 0x4020_aea5);
    }

    #[test]
    fn both_filters_compile() {
        compile("vCPU", vcpu_rules()).unwrap();
        compile("control", control_rules(&Allowed::default())).unwrap();
        let allowed = Allowed { output_dirs: vec![5, 6], socket_dir: Some(7), listener: Some(8) };
        compile("control", control_rules(&allowed)).unwrap();
        compile("console", console_rules()).unwrap();
        compile("host-noise", host_noise_rules()).unwrap();
    }

    #[test]
    fn the_host_noise_probe_cannot_change_its_scheduling_or_reach_kvm() {
        let map = host_noise_rules().unwrap();
        for nr in [
            libc::SYS_ioctl,
            libc::SYS_sched_setscheduler,
            libc::SYS_sched_setaffinity,
            libc::SYS_openat,
            libc::SYS_socket,
            libc::SYS_clone,
        ] {
            assert!(!map.contains_key(&nr), "system call {nr} is allowed");
        }
        for nr in [libc::SYS_clock_nanosleep, libc::SYS_clock_gettime, libc::SYS_futex, libc::SYS_exit] {
            assert!(map.contains_key(&nr), "system call {nr} is not allowed");
        }
    }

    #[test]
    fn every_filter_allows_what_the_sigsys_handler_calls() {
        for l in [VCPU, CONTROL] {
            let all: Vec<i64> = COMMON.iter().chain(l).copied().collect();
            assert!(all.contains(&libc::SYS_write) && all.contains(&libc::SYS_exit_group));
            assert!(!all.contains(&libc::SYS_socket), "the test trigger's call must stay forbidden");
        }
    }

    #[test]
    fn the_control_thread_cannot_name_a_file() {
        let allowed = Allowed { output_dirs: vec![5], socket_dir: Some(7), listener: Some(8) };
        let map = control_rules(&allowed).unwrap();
        for nr in [
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_openat2,
            libc::SYS_creat,
            libc::SYS_unlink,
            libc::SYS_rename,
            libc::SYS_renameat2,
            libc::SYS_link,
            libc::SYS_linkat,
            libc::SYS_symlink,
            libc::SYS_mkdir,
            libc::SYS_truncate,
            libc::SYS_getrandom,
            libc::SYS_execve,
            libc::SYS_clone,
            libc::SYS_pkey_mprotect,
        ] {
            assert!(!map.contains_key(&nr), "system call {nr} is allowed");
        }
        for nr in [libc::SYS_renameat, libc::SYS_unlinkat, libc::SYS_tgkill, libc::SYS_accept4, libc::SYS_mmap] {
            assert!(!map[&nr].is_empty(), "system call {nr} is allowed whatever its arguments");
        }
        // Without directories or a socket there is nothing to rename, remove or accept.
        let bare = control_rules(&Allowed::default()).unwrap();
        for nr in [libc::SYS_renameat, libc::SYS_unlinkat, libc::SYS_accept4] {
            assert!(!bare.contains_key(&nr), "system call {nr} is allowed");
        }
    }

    #[test]
    fn message_numbers() {
        let mut m = Msg::default();
        m.push_num(0);
        m.push(b" ");
        m.push_num(41);
        m.push(b" ");
        m.push_num(-1);
        assert_eq!(&m.buf[..m.len], b"0 41 -1");
    }
}
