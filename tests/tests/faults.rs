//! Guests that fail on purpose: each failure has its own exit code and a
//! message that says what happened; a triple fault is never success.

use std::time::Duration;

use rtswitch_tests::{ExitCode, require_kvm, run_rtswitch};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn guest_panic_is_reported_with_message_and_location() {
    require_kvm();
    let r = run_rtswitch(&["run", "--vcpus", "2", "--guest-arg", "panic"], LIMIT);
    r.assert_code(ExitCode::GuestPanic);
    assert!(r.stderr.contains("guest panic on cpu 0 at src/"), "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains("panic requested by guest argument"), "stderr:\n{}", r.stderr);
}

/// A switchable lock on a task's stack is refused when it registers (the
/// VMM reads every registered lock word at every switch; a stack's memory
/// is reused for anything).
#[test]
fn a_switchable_lock_on_a_stack_is_refused() {
    require_kvm();
    let r = run_rtswitch(&["run", "--vcpus", "1", "--duration", "5", "--guest-arg", "stack-lock"], LIMIT);
    r.assert_code(ExitCode::GuestPanic).assert_contains("fault.on-stack").assert_contains("on a stack");
}

#[test]
fn guest_page_fault_is_reported_as_a_panic() {
    require_kvm();
    let r = run_rtswitch(&["run", "--vcpus", "1", "--guest-arg", "fault=pf"], LIMIT);
    r.assert_code(ExitCode::GuestPanic).assert_contains("Page Fault").assert_contains("CR2");
}

#[test]
fn guest_invalid_opcode_is_reported_as_a_panic() {
    require_kvm();
    let r = run_rtswitch(&["run", "--vcpus", "1", "--guest-arg", "fault=ud"], LIMIT);
    r.assert_code(ExitCode::GuestPanic).assert_contains("Invalid Opcode").assert_contains("RIP");
}

#[test]
fn triple_fault_is_a_failure() {
    require_kvm();
    let r = run_rtswitch(&["run", "--vcpus", "2", "--guest-arg", "triple-fault"], LIMIT);
    r.assert_code(ExitCode::TripleFault).assert_contains("triple fault");
}

#[test]
fn guest_exit_status_maps_to_guest_failure() {
    require_kvm();
    let r = run_rtswitch(&["run", "--vcpus", "1", "--guest-arg", "exit=3"], LIMIT);
    r.assert_code(ExitCode::GuestFailure).assert_contains("guest exited with status 3");
}

/// The guest's text is a read-only memory slot: a write through a writable
/// alias (which the guest's own page tables allow) still ends the run, with
/// the text-write exit code and the address.
#[test]
fn a_write_to_guest_text_is_stopped_by_the_hypervisor() {
    require_kvm();
    let r = run_rtswitch(&["run", "--vcpus", "2", "--no-workload", "--guest-arg", "text-write"], LIMIT);
    r.assert_code(ExitCode::TextWrite)
        .assert_contains("wrote 1 byte(s) to its own text at 0x")
        .assert_contains("keeps read-only");
    assert!(!r.stdout.contains("the text write went through"), "the write reached the text:\n{}", r.stdout);
}
