//! `--irq-load`: the device interrupt injector's timer as a subscriber of
//! the control loop (the injector itself, its irqfds and routes, is
//! `vstate::irq_load`). Each expiry raises one interrupt on every vCPU.

use std::cell::RefCell;
use std::rc::Rc;

use event_manager::{EventOps, Events, MutEventSubscriber};

use crate::vstate::irq_load::IrqInjector;

/// The injector, shared with the end of the run (its counts).
pub type IrqLoadHandle = Rc<RefCell<IrqInjector>>;

/// The subscriber: the loop owns it, the end of the run keeps the handle.
pub struct IrqLoadSubscriber(pub IrqLoadHandle);

impl MutEventSubscriber for IrqLoadSubscriber {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let mut dev = self.0.borrow_mut();
        if events.fd() == dev.timer_fd() {
            dev.on_timer();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let fd = self.0.borrow().timer_fd();
        super::fds::watch_all(ops, std::iter::once(fd));
    }
}
