//! Patchable call sites (a leaf: it imports nothing of the kernel).
//!
//! Every switchable operation (`switcher::abi::sites::SiteOp`: the
//! `SpinLock` operations, the preemption points, the device-interrupt
//! dispatch) reaches its implementation through one 5-byte `call rel32`
//! emitted inline at the call site by [`switch_call!`] or
//! [`switch_call0!`], and recorded in the `.switch_sites` ELF section as a
//! `switcher::abi::sites::SwitchSite` `{addr, op, opcode}`. The build
//! emits calls to the build profile's implementation (`mainline`:
//! mainline locks, voluntary preemption, hard-IRQ handlers); the VMM
//! rewrites the rel32 of every site to select another profile's (at boot,
//! and at runtime with every task at a safe point and every vCPU parked).
//! Where each (operation, variant) implementation lives is recorded in
//! `.switch_impls` (`sync/mod.rs` for the locks, `sched/preempt_sites.rs`
//! and `workload/irqdev.rs` for the others), so the VMM never needs symbol
//! names.
//!
//! The lock implementations are `extern "C" fn(lock: *const LockCore) ->
//! u64` (`rdi` in, `rax` out), the others `extern "C" fn()`; the asm block
//! declares the C ABI's clobbers, so the compiler saves what it needs
//! around the call as for any call. Guest text is mapped read-only: only
//! the hypervisor changes these bytes.

/// The asm of a patchable call: `call {target}` at a local label, and
/// its `{addr, op, opcode}` record in `.switch_sites`.
macro_rules! site_call_template {
    () => {
        concat!(
            "2:\n",
            "call {target}\n",
            ".pushsection .switch_sites, \"a\"\n",
            ".balign 8\n",
            ".quad 2b\n",
            ".long {op}, {opcode}\n",
            ".popsection"
        )
    };
}
pub(crate) use site_call_template;

/// Emits a patchable `call` to `$mainline` for operation `$op`, passing
/// `$lock` in `rdi`; evaluates to the implementation's `u64` result.
macro_rules! switch_call {
    ($op:expr, $mainline:path, $lock:expr) => {{
        let ret: u64;
        // SAFETY: calls an `extern "C" fn(*const LockCore) -> u64` lock
        // implementation (mainline as built, or rt once the VMM patched the
        // site) with a valid lock pointer; `clobber_abi("C")` tells the
        // compiler every caller-saved register may change, as for a call.
        unsafe {
            core::arch::asm!(
                crate::hv::site::site_call_template!(),
                target = sym $mainline,
                op = const $op as u32,
                opcode = const switcher::abi::sites::OPCODE_CALL_REL32 as u32,
                inout("rdi") $lock => _,
                lateout("rax") ret,
                clobber_abi("C"),
            );
        }
        ret
    }};
}
pub(crate) use switch_call;

/// Emits a patchable `call` to `$default` (an `extern "C" fn()`) for
/// operation `$op`.
macro_rules! switch_call0 {
    ($op:expr, $default:path) => {{
        // SAFETY: calls an `extern "C" fn()` (the build profile's
        // implementation, or another variant's once the VMM patched the
        // site); `clobber_abi("C")` tells the compiler every caller-saved
        // register may change, as for a call.
        unsafe {
            core::arch::asm!(
                crate::hv::site::site_call_template!(),
                target = sym $default,
                op = const $op as u32,
                opcode = const switcher::abi::sites::OPCODE_CALL_REL32 as u32,
                clobber_abi("C"),
            );
        }
    }};
}
pub(crate) use switch_call0;

/// Emits one `.switch_impls` entry per `(op, variant, symbol)`.
macro_rules! switch_impls {
    ($(($op:expr, $variant:expr, $sym:path)),+ $(,)?) => {
        $(
            core::arch::global_asm!(
                ".pushsection .switch_impls, \"a\"",
                ".balign 8",
                ".long {op}, {variant}",
                ".quad {target}",
                ".popsection",
                op = const $op as u32,
                variant = const $variant as u32,
                target = sym $sym,
            );
        )+
    };
}
pub(crate) use switch_impls;
