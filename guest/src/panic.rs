//! Panic handler: message and location to the console and to the VMM.
use switcher::abi;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    crate::println!("guest panic: {}", info.message());
    crate::hypercall::panic(abi::PANIC_RECORD_ADDR)
}
