//! The control API: a QMP-compatible Unix socket (`server`; `framing` cuts
//! JSON texts out of the byte stream, `protocol` says what they mean)
//! served by the control thread, and its command-line client (`client`,
//! `rtswitch ctl`).
//!
//! Threading: the server never blocks. Its listener and client sockets are
//! event sources of the control loop (`runner`), like the vCPU events and
//! timers; commands are executed there, and a `set-mode` is answered when
//! the switch it started completes or fails.
pub mod child;
pub mod client;
pub mod ctl;
pub mod framing;
pub mod protocol;
pub mod server;
pub mod sockfile;
