//! Patchable call sites of the switchable-lock operations.
//!
//! Every `SpinLock` operation reaches its implementation through one 5-byte
//! `call rel32` emitted inline at the call site by [`switch_call!`], and
//! recorded in the `.switch_sites` ELF section as a
//! `switcher::abi::sites::SwitchSite` `{addr, op, opcode}`. The build
//! emits calls to the mainline implementation; the VMM rewrites the rel32
//! of every site to select the rt implementation (at boot for `--mode rt`,
//! and at runtime with every task at a safe point and every vCPU parked).
//! Where each (operation, mode) implementation lives is recorded in
//! `.switch_impls` (`sync/mod.rs`), so the VMM never needs symbol names.
//!
//! The implementations are `extern "C" fn(lock: *const LockCore) -> u64`
//! (`rdi` in, `rax` out); the asm block declares the C ABI's clobbers, so
//! the compiler saves what it needs around the call as for any call.
//! Guest text is mapped read-only: only the hypervisor changes these bytes.

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
                "2:",
                "call {target}",
                ".pushsection .switch_sites, \"a\"",
                ".balign 8",
                ".quad 2b",
                ".long {op}, {opcode}",
                ".popsection",
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
