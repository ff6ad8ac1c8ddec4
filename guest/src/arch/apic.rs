//! The local APIC in xAPIC mode, through its MMIO page (mapped for CPL3):
//! enable, EOI, IPIs, and the one-shot timer programmed from a TSC deadline.
//!
//! Why xAPIC and not x2APIC: x2APIC registers are MSRs, which CPL3 cannot
//! touch, so every EOI, IPI and timer write would be a trip through the
//! ring-0 shim (13–15 µs on this project's host). An xAPIC register is an
//! MMIO access that KVM's in-kernel LAPIC handles from any privilege level
//! (about 2.5 µs for EOI and ICR, 8 µs for the timer's initial count on
//! that host). The TSC-deadline timer is an MSR too, so the timer runs in
//! one-shot mode: a deadline becomes a count of APIC timer ticks from now
//! ([`set_tsc_deadline`]), the rate calibrated against the TSC at boot
//! ([`calibrate_timer`]).
//!
//! EOI: where KVM offers PV EOI (`MSR_KVM_PV_EOI_EN`), KVM marks a word in
//! memory when an EOI may be skipped; the EOI then is one atomic
//! test-and-clear, no MMIO (as Linux's `kvm_guest_apic_eoi_write`).
//!
//! The ICR is two registers (destination, then command): an IPI is sent
//! masked, so that an interrupt handler on this CPU cannot send one
//! between the two writes.

use super::{cpu, irqflags, percpu, shim};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use switcher::abi::{LAPIC_ADDR, vector};
use switcher::telemetry::exit_cause;

/// xAPIC register offsets.
const REG_ID: usize = 0x20;
const REG_TPR: usize = 0x80;
const REG_EOI: usize = 0xb0;
const REG_SVR: usize = 0xf0;
const REG_ICR_LOW: usize = 0x300;
const REG_ICR_HIGH: usize = 0x310;
const REG_LVT_TIMER: usize = 0x320;
const REG_TIMER_INITIAL: usize = 0x380;
const REG_TIMER_CURRENT: usize = 0x390;
const REG_TIMER_DIVIDE: usize = 0x3e0;

const SVR_APIC_ENABLE: u32 = 1 << 8;
const ICR_DELIVERY_FIXED: u32 = 0 << 8;
const ICR_DELIVERY_NMI: u32 = 4 << 8;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_SELF: u32 = 1 << 18;
const ICR_ALL_EXCLUDING_SELF: u32 = 3 << 18;
/// LVT masked bit (the timer counts but raises nothing).
const LVT_MASKED: u32 = 1 << 16;
/// Timer divide configuration "divide by 1".
const TIMER_DIVIDE_BY_1: u32 = 0b1011;

/// CPUID leaves of KVM's signature and feature bits, and PV EOI's bit.
const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
const KVM_CPUID_FEATURES: u32 = 0x4000_0001;
const KVM_FEATURE_PV_EOI: u32 = 1 << 6;

/// APIC timer ticks per TSC tick, as a 32.32 fixed-point factor.
static TIMER_TICKS_PER_TSC_FP32: AtomicU64 = AtomicU64::new(0);
/// Whether some CPU registered its PV EOI word (for the boot report).
static PV_EOI: AtomicBool = AtomicBool::new(false);

#[inline(always)]
fn reg(offset: usize) -> *mut u32 {
    (LAPIC_ADDR as usize + offset) as *mut u32
}

#[inline(always)]
fn write(offset: usize, value: u32) {
    // SAFETY: the LAPIC page is mapped (uncached, user-accessible) by the
    // boot and kernel page tables; KVM's in-kernel LAPIC handles the access.
    unsafe { reg(offset).write_volatile(value) };
}

#[inline(always)]
fn read(offset: usize) -> u32 {
    // SAFETY: as for `write`.
    unsafe { reg(offset).read_volatile() }
}

/// Software-enables this CPU's LAPIC (xAPIC mode, left so by the boot
/// prologue) with the spurious vector, accepts every priority, programs
/// the timer (one-shot on `vector::TIMER`, divide by 1, stopped) and
/// records the APIC id. CPL3, after this CPU's IDT is filled: from here on
/// interrupts arrive (and wait behind the soft mask).
pub fn init() {
    // Enable first: while the APIC is software-disabled every LVT entry
    // stays masked, whatever is written to it.
    write(REG_SVR, SVR_APIC_ENABLE | u32::from(vector::SPURIOUS));
    write(REG_TPR, 0);
    write(REG_TIMER_DIVIDE, TIMER_DIVIDE_BY_1);
    write(REG_LVT_TIMER, u32::from(vector::TIMER));
    write(REG_TIMER_INITIAL, 0);
    let id = read(REG_ID) >> 24;
    percpu::this().set_apic(id);
}

/// Whether the hypervisor is KVM and offers PV EOI.
fn pv_eoi_offered() -> bool {
    let sig = raw_cpuid::cpuid!(KVM_CPUID_SIGNATURE);
    let kvm = sig.ebx == 0x4b4d_564b && sig.ecx == 0x564b_4d56 && sig.edx == 0x4d;
    kvm && sig.eax >= KVM_CPUID_FEATURES && raw_cpuid::cpuid!(KVM_CPUID_FEATURES).eax & KVM_FEATURE_PV_EOI != 0
}

/// Registers this CPU's PV EOI word with KVM where offered (one shim
/// WRMSR); returns whether PV EOI is on here. Every CPU, at bring-up.
pub fn init_pv_eoi(cpu: usize) -> bool {
    if !pv_eoi_offered() {
        return false;
    }
    let word = (&raw const percpu::of(cpu).pv_eoi) as u64;
    let on = shim::wrmsr(super::msr::MSR_KVM_PV_EOI_EN, word | 1);
    if on {
        PV_EOI.store(true, Ordering::Relaxed);
    }
    on
}

/// Signals end of interrupt for the vector in service.
#[inline]
pub fn eoi() {
    // PV EOI: KVM sets bit 0 when this EOI may be skipped (never, where
    // PV EOI is off: the word stays 0); test and clear it atomically.
    if percpu::this().pv_eoi.fetch_and(!1, Ordering::AcqRel) & 1 != 0 {
        return;
    }
    percpu::count_exit(exit_cause::EOI);
    write(REG_EOI, 0);
}

/// Writes the ICR: destination `apic_id` (ignored with a shorthand), then
/// the command, masked (see the module doc). Stores made before the call
/// are visible to the target's handler (the MMIO write is ordered after
/// them: x86 keeps stores in order, and an uncached write is not posted
/// ahead of earlier ones).
///
/// The ICR's high half keeps what was last written to it, so a send to the
/// destination this CPU last wrote there skips that write: one exit per
/// IPI instead of two. (Masked: an interrupt handler that sends an IPI in
/// between cannot leave the cache and the register apart.)
fn send(apic_id: u32, command: u32) {
    let was = irqflags::save();
    let this = percpu::this();
    let dest = apic_id << 24;
    // A shorthand (self, all but self) ignores the destination field.
    let shorthand = command & (ICR_SELF | ICR_ALL_EXCLUDING_SELF) != 0;
    if !shorthand && this.icr_dest.load(Ordering::Relaxed) != dest {
        percpu::count_exit(exit_cause::IPI);
        write(REG_ICR_HIGH, dest);
        this.icr_dest.store(dest, Ordering::Relaxed);
    }
    percpu::count_exit(exit_cause::IPI);
    write(REG_ICR_LOW, command);
    irqflags::restore(was);
}

/// Sends fixed-delivery `vector` to the CPU with APIC id `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    debug_assert!(percpu::this().apic_enabled());
    send(apic_id, ICR_DELIVERY_FIXED | ICR_LEVEL_ASSERT | u32::from(vector));
}

/// Sends fixed-delivery `vector` to every other CPU.
pub fn broadcast_ipi(vector: u8) {
    send(0, ICR_ALL_EXCLUDING_SELF | ICR_DELIVERY_FIXED | ICR_LEVEL_ASSERT | u32::from(vector));
}

/// Sends an NMI to the CPU with APIC id `apic_id` (the panic path's stop
/// signal: it gets through to CPUs that run masked, or in the shim). It
/// writes both halves whatever the cache says: the panic path may run in
/// an NMI that interrupted a send, and then leaves the cache unknown.
pub fn send_nmi(apic_id: u32) {
    percpu::this().icr_dest.store(u32::MAX, Ordering::Relaxed);
    send(apic_id, ICR_DELIVERY_NMI | ICR_LEVEL_ASSERT);
    percpu::this().icr_dest.store(u32::MAX, Ordering::Relaxed);
}

/// Raises `vector` on this CPU.
pub fn send_self_ipi(vector: u8) {
    send(0, ICR_SELF | ICR_DELIVERY_FIXED | ICR_LEVEL_ASSERT | u32::from(vector));
}

/// Measures the timer's rate against the TSC over a window the caller
/// spends elsewhere (CPU 0 at boot: [`calibrate_timer`], other work, then
/// [`TimerCalibration::finish`]). Each MMIO access is bracketed by TSC
/// reads, so that a vCPU preempted by the host in the middle of one widens
/// the measurement's error bounds instead of skewing it.
pub struct TimerCalibration {
    /// TSC just before and just after the write that started the count.
    start: (u64, u64),
}

/// Starts the timer counting down from its maximum, masked, on this CPU.
pub fn calibrate_timer() -> TimerCalibration {
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(vector::TIMER));
    let before = cpu::rdtsc_ordered();
    write(REG_TIMER_INITIAL, u32::MAX);
    TimerCalibration { start: (before, cpu::rdtsc_ordered()) }
}

impl TimerCalibration {
    /// Ends the measurement; sets the rate the timer is programmed with:
    /// `nominal_khz` (what the VMM configured, 0 if unknown) when it lies
    /// within the measurement's bounds (widened by 2%), else the measured
    /// rate. Returns (measured kHz, kHz in use). The timer is left stopped
    /// and unmasked.
    pub fn finish(self, tsc_khz: u64, nominal_khz: u64) -> (u64, u64) {
        let before = cpu::rdtsc_ordered();
        let current = read(REG_TIMER_CURRENT);
        let after = cpu::rdtsc_ordered();
        write(REG_TIMER_INITIAL, 0);
        write(REG_LVT_TIMER, u32::from(vector::TIMER));
        let ticks = u128::from(u32::MAX - current);
        let khz = |tsc: u64| (ticks * u128::from(tsc_khz) / u128::from(tsc.max(1))) as u64;
        // The count ran between the write (in start.0..start.1) and the
        // read (in before..after).
        let fastest = khz(before.saturating_sub(self.start.1));
        let slowest = khz(after.saturating_sub(self.start.0));
        let measured = khz(((before + after) / 2).saturating_sub((self.start.0 + self.start.1) / 2));
        let agrees = nominal_khz != 0 && nominal_khz * 50 <= fastest * 51 && nominal_khz * 50 >= slowest * 49;
        let in_use = if agrees || measured == 0 { nominal_khz.max(1) } else { measured };
        set_timer_khz(in_use, tsc_khz);
        (measured, in_use)
    }
}

/// Sets the timer's input rate (kHz) used to convert TSC deadlines.
pub fn set_timer_khz(timer_khz: u64, tsc_khz: u64) {
    let fp = (u128::from(timer_khz) << 32) / u128::from(tsc_khz.max(1));
    TIMER_TICKS_PER_TSC_FP32.store(fp as u64, Ordering::Relaxed);
}

/// How far ahead, in TSC ticks, the timer's counter reaches (a deadline
/// farther away fires at the end of that range).
pub fn timer_reach_tsc() -> u64 {
    let fp = TIMER_TICKS_PER_TSC_FP32.load(Ordering::Relaxed).max(1);
    ((u128::from(u32::MAX) << 32) / u128::from(fp)).min(u128::from(u64::MAX)) as u64
}

/// Arms this CPU's one-shot timer to fire at TSC value `deadline_tsc` (0
/// disarms; a deadline already past fires at once; one beyond the
/// counter's range fires early, and the timer code re-arms). One MMIO write.
#[inline]
pub fn set_tsc_deadline(deadline_tsc: u64) {
    percpu::count_exit(exit_cause::TIMER);
    if deadline_tsc == 0 {
        write(REG_TIMER_INITIAL, 0);
        return;
    }
    let delta = deadline_tsc.saturating_sub(cpu::rdtsc_ordered());
    let fp = TIMER_TICKS_PER_TSC_FP32.load(Ordering::Relaxed);
    // Round up: never fire before the deadline because of the conversion.
    let ticks = ((u128::from(delta) * u128::from(fp)).div_ceil(1 << 32)) as u64;
    write(REG_TIMER_INITIAL, ticks.clamp(1, u64::from(u32::MAX)) as u32);
}
