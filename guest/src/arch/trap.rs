//! Exceptions and NMIs, at ring 0 (both IDTs send vectors 0..32 to the
//! shim's exception stubs, and a #UD that is not the shim gate comes here
//! too). CPU exceptions are fatal (register dump, then the panic path,
//! from ring 0); NMIs stop the CPU during a panic and are counted
//! otherwise. Interrupt vectors (32..256) never come here: see `entry`.
//!
//! The register dump goes out through the console's panic path, which
//! stands in the layer above (`hv::console`): the boot prologue hands it
//! in ([`set_printer`]) before the first IDT gate exists.

use super::idt::{TrapFrame, exception};
use super::{instr, percpu};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

/// The console's panic-path print (`fn(fmt::Arguments)`), set once by the
/// boot prologue.
static PRINTER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Sets the print of the fatal-exception report (the console's panic path,
/// which never waits for a lock this CPU holds).
pub(super) fn set_printer(print: fn(fmt::Arguments<'_>)) {
    PRINTER.store(print as *mut (), Ordering::Release);
}

/// Prints through the printer set at boot; nothing before it is set.
fn print(args: fmt::Arguments<'_>) {
    let p = PRINTER.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: only `set_printer` stores here, from a `fn(fmt::Arguments)`.
        let p = unsafe { core::mem::transmute::<*mut (), fn(fmt::Arguments<'_>)>(p) };
        p(args);
    }
}

/// Mnemonic and name of each exception vector (as the Intel SDM names them).
const EXCEPTIONS: [(&str, &str); exception::COUNT as usize] = [
    ("#DE", "Divide Error"),
    ("#DB", "Debug"),
    ("NMI", "Nonmaskable Interrupt"),
    ("#BP", "Breakpoint"),
    ("#OF", "Overflow"),
    ("#BR", "Bound Range Exceeded"),
    ("#UD", "Invalid Opcode"),
    ("#NM", "Device Not Available"),
    ("#DF", "Double Fault"),
    ("#CSO", "Coprocessor Segment Overrun"),
    ("#TS", "Invalid TSS"),
    ("#NP", "Segment Not Present"),
    ("#SS", "Stack-Segment Fault"),
    ("#GP", "General Protection"),
    ("#PF", "Page Fault"),
    ("#15", "Reserved"),
    ("#MF", "x87 FPU Floating-Point Error"),
    ("#AC", "Alignment Check"),
    ("#MC", "Machine Check"),
    ("#XM", "SIMD Floating-Point Exception"),
    ("#VE", "Virtualization Exception"),
    ("#CP", "Control Protection Exception"),
    ("#22", "Reserved"),
    ("#23", "Reserved"),
    ("#24", "Reserved"),
    ("#25", "Reserved"),
    ("#26", "Reserved"),
    ("#27", "Reserved"),
    ("#HV", "Hypervisor Injection Exception"),
    ("#VC", "VMM Communication Exception"),
    ("#SX", "Security Exception"),
    ("#31", "Reserved"),
];

/// Called by the shim's exception stubs at CPL0, IF off (interrupt gates).
/// Returning resumes the interrupted code with `iretq`.
pub(super) extern "C" fn ring0_trap(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    if vector == exception::NMI {
        if PANIC_IN_PROGRESS.load(Ordering::Acquire) {
            // The stop signal of a panic on another CPU.
            instr::halt_forever_cpl0();
        }
        percpu::this().irq.nmi.fetch_add(1, Ordering::Relaxed);
    } else {
        fatal_exception(frame);
    }
}

/// Set by the kernel's panic path before it sends the stop NMIs.
static PANIC_IN_PROGRESS: AtomicBool = AtomicBool::new(false);

/// From now on an NMI stops the CPU it reaches (a panic is under way).
pub fn nmi_means_stop() {
    PANIC_IN_PROGRESS.store(true, Ordering::Release);
}

/// Prints the exception and every register, then panics (which reports to
/// the VMM). Uses the console's panic path: this CPU may hold its lock.
fn fatal_exception(frame: &TrapFrame) -> ! {
    let vector = frame.vector as u8;
    let (mnemonic, name) = EXCEPTIONS[usize::from(vector)];
    // CR2 is readable here: this runs at CPL0.
    let cr2 = (vector == exception::PAGE_FAULT).then(instr::read_cr2);
    let cpu = percpu::try_this().map(|p| p.cpu_id());
    print(format_args!("{}", Report { frame, mnemonic, name, cr2, cpu }));
    match cr2 {
        Some(address) => panic!(
            "{mnemonic} ({name}) at rip {:#x} accessing {address:#x}, error code {:#x}",
            frame.rip, frame.error_code
        ),
        None => panic!("{mnemonic} ({name}) at rip {:#x}, error code {:#x}", frame.rip, frame.error_code),
    }
}

/// The register dump of a fatal exception.
struct Report<'a> {
    frame: &'a TrapFrame,
    mnemonic: &'a str,
    name: &'a str,
    cr2: Option<u64>,
    cpu: Option<u32>,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.frame;
        match self.cpu {
            Some(cpu) => write!(f, "cpu {cpu}: ")?,
            None => write!(f, "cpu ?: ")?,
        }
        writeln!(
            f,
            "exception {} ({}), vector {}, error code {:#x}",
            self.mnemonic, self.name, r.vector, r.error_code
        )?;
        let ring = if r.cs & 3 == 3 { "kernel at CPL3" } else { "ring-0 shim" };
        writeln!(f, "  RIP {:#018x}  CS {:#06x} ({ring})  RFLAGS {:#010x}", r.rip, r.cs, r.rflags)?;
        write!(f, "  RSP {:#018x}  SS {:#06x}", r.rsp, r.ss)?;
        if let Some(cr2) = self.cr2 {
            write!(f, "  CR2 {cr2:#018x}")?;
        }
        writeln!(f)?;
        let regs = [
            ("RAX", r.rax),
            ("RBX", r.rbx),
            ("RCX", r.rcx),
            ("RDX", r.rdx),
            ("RSI", r.rsi),
            ("RDI", r.rdi),
            ("RBP", r.rbp),
            ("R8 ", r.r8),
            ("R9 ", r.r9),
            ("R10", r.r10),
            ("R11", r.r11),
            ("R12", r.r12),
            ("R13", r.r13),
            ("R14", r.r14),
            ("R15", r.r15),
        ];
        for line in regs.chunks(3) {
            for (name, value) in line {
                write!(f, "  {name} {value:#018x}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
