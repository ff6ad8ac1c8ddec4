//! A queue into one event-loop subscriber, with the EventFd that wakes it.
//!
//! A subscriber can change its own watched fds only inside its own
//! `process` (event-manager hands `EventOps` to the subscriber whose fd
//! fired), so work that needs them — the control socket answering a client
//! when a switch ends elsewhere — is posted here and done on the receiver's
//! next turn. The receiver registers [`Mailbox::fd`] in its `init` and calls
//! [`Mailbox::take`] when it fires. Single-threaded (the control thread).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use vmm_sys_util::eventfd::EventFd;

struct Inner<T> {
    queue: RefCell<VecDeque<T>>,
    wake: EventFd,
}

/// The receiving end, owned by the subscriber it wakes.
pub struct Mailbox<T> {
    inner: Rc<Inner<T>>,
}

/// A sending end; any number of them.
pub struct Sender<T> {
    inner: Rc<Inner<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<T> Mailbox<T> {
    pub fn new() -> std::io::Result<Self> {
        let wake = EventFd::new(libc::EFD_NONBLOCK)?;
        Ok(Self { inner: Rc::new(Inner { queue: RefCell::new(VecDeque::new()), wake }) })
    }

    pub fn sender(&self) -> Sender<T> {
        Sender { inner: self.inner.clone() }
    }

    /// The fd to watch (readable while something is posted).
    pub fn fd(&self) -> RawFd {
        self.inner.wake.as_raw_fd()
    }

    /// Everything posted so far, oldest first.
    pub fn take(&self) -> Vec<T> {
        let _ = self.inner.wake.read();
        self.inner.queue.borrow_mut().drain(..).collect()
    }
}

impl<T> Sender<T> {
    pub fn post(&self, item: T) {
        self.inner.queue.borrow_mut().push_back(item);
        if let Err(e) = self.inner.wake.write(1) {
            log::error!("cannot wake an event-loop subscriber: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_arrive_in_order_and_wake_the_receiver() {
        let m = Mailbox::new().expect("eventfd");
        let s = m.sender();
        assert!(m.take().is_empty());
        s.post(1);
        s.clone().post(2);
        let mut pfd = libc::pollfd { fd: m.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, zero timeout.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 0) }, 1);
        assert_eq!(m.take(), vec![1, 2]);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 0) }, 0, "read clears the wake-up");
    }
}
