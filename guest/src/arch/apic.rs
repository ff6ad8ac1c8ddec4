//! The local APIC in x2APIC mode: enable, EOI, IPIs, and the one-shot
//! TSC-deadline timer. All registers are MSRs, which the host kernel
//! handles without exiting to the VMM.
//!
//! x2APIC MSR writes (ICR, TSC_DEADLINE) are not serializing: a plain
//! store before them may still sit in the store buffer when the IPI or the
//! timer reaches its target. As Linux (`weak_wrmsr_fence`), `mfence;
//! lfence` goes before each such write.

use super::cpu;
use super::msr::{
    self, IA32_APIC_BASE, IA32_TSC_DEADLINE, X2APIC_EOI, X2APIC_ICR, X2APIC_ID, X2APIC_LVT_TIMER, X2APIC_SELF_IPI,
    X2APIC_SVR, X2APIC_TPR,
};
use super::percpu;
use switcher::abi::vector;

const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const SVR_APIC_ENABLE: u64 = 1 << 8;

const ICR_DELIVERY_FIXED: u64 = 0 << 8;
const ICR_DELIVERY_NMI: u64 = 4 << 8;
const ICR_LEVEL_ASSERT: u64 = 1 << 14;
const ICR_ALL_EXCLUDING_SELF: u64 = 3 << 18;
/// LVT timer mode field (bits 17-18) = 2: TSC-deadline.
const LVT_TIMER_TSC_DEADLINE: u64 = 2 << 17;

/// Orders earlier stores before a following x2APIC MSR write (Linux's
/// `weak_wrmsr_fence`): 2 instructions.
#[inline(always)]
fn wrmsr_fence() {
    // SAFETY: fences only; a compiler barrier too (no `nomem`).
    unsafe { core::arch::asm!("mfence", "lfence", options(nostack, preserves_flags)) };
}

/// Switches this CPU's local APIC to x2APIC mode and software-enables it
/// with the spurious vector; records the APIC id in the per-CPU data.
/// Panics if the CPU has no x2APIC (the VMM must expose it in CPUID).
pub fn init() {
    assert!(cpu::has_x2apic(), "this CPU has no x2APIC (CPUID.1:ECX[21] clear): the VMM must expose it");
    // SAFETY: the MSRs exist (x2APIC checked above). The APIC must pass
    // through xAPIC mode (enabled) before x2APIC: disabled -> x2APIC #GPs.
    // Interrupts are off; nothing is routed to vectors we don't handle.
    let apic_id = unsafe {
        let base = msr::rdmsr(IA32_APIC_BASE);
        if base & APIC_BASE_ENABLE == 0 {
            msr::wrmsr(IA32_APIC_BASE, base | APIC_BASE_ENABLE);
        }
        if base & APIC_BASE_X2APIC == 0 {
            msr::wrmsr(IA32_APIC_BASE, base | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
        }
        msr::wrmsr(X2APIC_TPR, 0);
        msr::wrmsr(X2APIC_SVR, SVR_APIC_ENABLE | u64::from(vector::SPURIOUS));
        msr::rdmsr(X2APIC_ID) as u32
    };
    percpu::this().set_apic(apic_id);
}

/// Signals end of interrupt for the vector in service.
#[inline]
pub fn eoi() {
    // SAFETY: x2APIC is on (interrupts arrive only after `init`); writing 0
    // to EOI retires the highest in-service vector, which the caller owns.
    unsafe { msr::wrmsr(X2APIC_EOI, 0) };
}

/// Sends fixed-delivery `vector` to the CPU with x2APIC id `apic_id`.
/// Stores made before the call are visible to the target's handler.
pub fn send_ipi(apic_id: u32, vector: u8) {
    debug_assert!(percpu::this().apic_enabled());
    wrmsr_fence();
    // SAFETY: x2APIC is on on this CPU; a fixed IPI only raises `vector`
    // at the target, which has a handler for every vector.
    unsafe {
        msr::wrmsr(X2APIC_ICR, (u64::from(apic_id) << 32) | ICR_DELIVERY_FIXED | ICR_LEVEL_ASSERT | u64::from(vector))
    };
}

/// Sends fixed-delivery `vector` to every other CPU.
pub fn broadcast_ipi(vector: u8) {
    // SAFETY: as for `send_ipi`, with the all-excluding-self shorthand.
    unsafe {
        msr::wrmsr(X2APIC_ICR, ICR_ALL_EXCLUDING_SELF | ICR_DELIVERY_FIXED | ICR_LEVEL_ASSERT | u64::from(vector))
    };
}

/// Sends an NMI to the CPU with x2APIC id `apic_id` (the panic path's
/// stop signal: it gets through to CPUs that run with interrupts off).
/// The target must have loaded its IDT, or it triple-faults.
pub fn send_nmi(apic_id: u32) {
    // SAFETY: x2APIC is on on this CPU (callers check); the target's NMI
    // handler runs on its own IST stack (the caller checks it has an IDT).
    unsafe { msr::wrmsr(X2APIC_ICR, (u64::from(apic_id) << 32) | ICR_DELIVERY_NMI | ICR_LEVEL_ASSERT) };
}

/// Raises `vector` on this CPU (x2APIC SELF IPI register): taken as soon
/// as this CPU enables interrupts.
pub fn send_self_ipi(vector: u8) {
    wrmsr_fence();
    // SAFETY: x2APIC is on; the vector has a handler.
    unsafe { msr::wrmsr(X2APIC_SELF_IPI, u64::from(vector)) };
}

/// Puts this CPU's APIC timer in TSC-deadline mode on `vector::TIMER`,
/// disarmed. Panics without TSC-deadline support (the VMM exposes it).
pub fn timer_init() {
    assert!(cpu::has_tsc_deadline(), "this CPU has no TSC-deadline timer (CPUID.1:ECX[24] clear)");
    // SAFETY: x2APIC is on (`init` ran); the LVT write selects the mode and
    // vector; a zero deadline disarms. The fence orders the LVT write
    // before any later deadline write (SDM: the two are not serialized).
    unsafe {
        msr::wrmsr(X2APIC_LVT_TIMER, LVT_TIMER_TSC_DEADLINE | u64::from(vector::TIMER));
        core::arch::asm!("mfence", options(nostack, preserves_flags));
        msr::wrmsr(IA32_TSC_DEADLINE, 0);
    }
}

/// Arms the one-shot timer for TSC value `deadline_tsc` (0 disarms; a
/// deadline already past fires at once). 3 instructions + the write.
#[inline]
pub fn set_tsc_deadline(deadline_tsc: u64) {
    wrmsr_fence();
    // SAFETY: the timer is in TSC-deadline mode (`timer_init`); writing
    // the deadline only (re)arms or disarms it.
    unsafe { msr::wrmsr(IA32_TSC_DEADLINE, deadline_tsc) };
}
