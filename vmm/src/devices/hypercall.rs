//! Decoding the guest's hypercalls (8-byte writes to the registers of the
//! doorbell page, `switcher::abi::doorbell`, which reach the VMM as
//! `KVM_EXIT_MMIO` because no memory slot backs the page) into events for
//! the VMM. Every access is checked: a guest can read or write anything,
//! of any width, anywhere in the page.
//!
//! [`Doorbell`] is the device the runner maps on the vCPUs' MMIO bus
//! (`vstate::bus`) at `DOORBELL_ADDR`: console output is written at once,
//! on the vCPU's thread; every other call goes to the control thread, and
//! an exit or a panic ends the vCPU's thread.

use std::sync::Arc;

use switcher::abi::{self, DOORBELL_ADDR, PanicRecord, doorbell};
use vm_memory::{Bytes, GuestAddress};

use super::console::Console;
use crate::vstate::bus::{AccessError, BusDevice, Done};
use crate::vstate::memory::{GuestMemory, read_abi};

/// Size of the doorbell page.
pub const DOORBELL_SIZE: u64 = 0x1000;

/// A hypercall, decoded and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hypercall {
    Exit(u32),
    Panic(GuestPanic),
    Ready,
    CpuOnline(u32),
    /// The switch mailbox changed to this state.
    Switch(u32),
    /// Console output (at most `CONSOLE_MAX` bytes, copied out of guest memory).
    Console(Vec<u8>),
    /// `--stop-above`: the stop report is complete; value = the CPU.
    StopAbove(u32),
}

/// A guest panic as the VMM reports it. `file` and `message` are the
/// guest's bytes escaped (`guest_text`): they print as one inert line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPanic {
    pub cpu: u32,
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl std::fmt::Display for GuestPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "guest panic on cpu {} at {}:{}:{}: {}", self.cpu, self.file, self.line, self.column, self.message)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HypercallError {
    #[error("doorbell register {register:#x} ({name}) takes an 8-byte write, got {len} bytes")]
    BadWidth { register: u64, name: &'static str, len: usize },
    #[error("no doorbell register at offset {0:#x} (registers: 0x0..{end:#x}, 8 bytes apart)", end = doorbell::END)]
    UnknownRegister(u64),
    #[error("console write of {len} bytes at {addr:#x} is outside guest memory")]
    ConsoleOutside { addr: u64, len: usize },
    #[error("console write of {0} bytes is longer than the {max} a write may carry", max = doorbell::CONSOLE_MAX)]
    ConsoleTooLong(usize),
}

/// The doorbell page as a device on the MMIO bus (see the module comment).
pub struct Doorbell {
    mem: Arc<GuestMemory>,
    console: Arc<Console>,
}

impl Doorbell {
    /// `mem` is read for panic records and console output, which goes to
    /// `console`.
    pub fn new(mem: Arc<GuestMemory>, console: Arc<Console>) -> Self {
        Self { mem, console }
    }
}

impl BusDevice<Hypercall> for Doorbell {
    fn name(&self) -> &'static str {
        "hypercall doorbell"
    }

    fn read(&self, _cpu: u32, _offset: u64, _data: &mut [u8]) -> Result<(), AccessError> {
        Err(AccessError::WriteOnly)
    }

    fn write(&self, cpu: u32, offset: u64, data: &[u8]) -> Result<Done<Hypercall>, AccessError> {
        let call = decode(&self.mem, cpu, DOORBELL_ADDR.wrapping_add(offset), data)
            .map_err(|e| AccessError::Device(Box::new(e)))?;
        Ok(match call {
            Hypercall::Console(bytes) => {
                self.console.write(&bytes);
                Done::Handled
            }
            Hypercall::Exit(_) | Hypercall::Panic(_) => Done::NotifyAndStop(call),
            _ => Done::Notify(call),
        })
    }
}

/// Decodes a write of `data` to doorbell address `addr`. `mem` is read for
/// the panic record and console output.
pub fn decode(mem: &GuestMemory, cpu: u32, addr: u64, data: &[u8]) -> Result<Hypercall, HypercallError> {
    let register = addr.wrapping_sub(DOORBELL_ADDR);
    let Some(name) = doorbell::name(register) else {
        return Err(HypercallError::UnknownRegister(register));
    };
    let value = match <[u8; doorbell::WIDTH]>::try_from(data) {
        Ok(b) => u64::from_le_bytes(b),
        Err(_) => return Err(HypercallError::BadWidth { register, name, len: data.len() }),
    };
    Ok(match register {
        doorbell::EXIT => Hypercall::Exit(value as u32),
        doorbell::PANIC => Hypercall::Panic(read_panic(mem, cpu, value)),
        doorbell::READY => Hypercall::Ready,
        doorbell::SWITCH => Hypercall::Switch(value as u32),
        doorbell::CONSOLE => Hypercall::Console(read_console(mem, value)?),
        doorbell::STOP_ABOVE => Hypercall::StopAbove(value as u32),
        _ => Hypercall::CpuOnline(value as u32),
    })
}

/// The bytes of a console write, checked against the bound and guest memory.
fn read_console(mem: &GuestMemory, value: u64) -> Result<Vec<u8>, HypercallError> {
    let (addr, len) = doorbell::console_parts(value);
    if len > doorbell::CONSOLE_MAX {
        return Err(HypercallError::ConsoleTooLong(len));
    }
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).map_err(|_| HypercallError::ConsoleOutside { addr, len })?;
    Ok(buf)
}

/// Reads the panic record at `addr`; a record that is missing or lies about
/// its lengths is reported as such instead of trusted.
fn read_panic(mem: &GuestMemory, cpu: u32, addr: u64) -> GuestPanic {
    let unreadable = |why: String| GuestPanic { cpu, file: "<unknown>".into(), line: 0, column: 0, message: why };
    let Some(rec) = read_abi::<PanicRecord>(mem, addr) else {
        return unreadable(format!("(panic record address {addr:#x} is outside guest memory)"));
    };
    if rec.magic != abi::ABI_MAGIC {
        return unreadable(format!("(panic record at {addr:#x} has bad magic {:#x})", rec.magic));
    }
    let text = |bytes: &[u8], len: u32| -> String {
        let n = (len as usize).min(bytes.len());
        // Escaped here, where it leaves guest memory (`guest_text`).
        let mut s = crate::guest_text::escape(&bytes[..n]);
        if len as usize > bytes.len() {
            s.push_str(" (record length too large; truncated)");
        }
        s
    };
    GuestPanic {
        cpu: if rec.cpu < abi::MAX_CPUS as u32 { rec.cpu } else { cpu },
        file: text(&rec.file, rec.file_len),
        line: rec.line,
        column: rec.column,
        message: text(&rec.message, rec.message_len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::{Abi, create};

    fn record(msg: &str, msg_len: u32) -> PanicRecord {
        let mut r = PanicRecord::zeroed();
        r.magic = abi::ABI_MAGIC;
        r.cpu = 1;
        r.line = 42;
        r.column = 7;
        r.file[..11].copy_from_slice(b"src/main.rs");
        r.file_len = 11;
        r.message[..msg.len()].copy_from_slice(msg.as_bytes());
        r.message_len = msg_len;
        r
    }

    fn at(register: u64) -> u64 {
        DOORBELL_ADDR + register
    }

    #[test]
    fn decodes_simple_calls() {
        let mem = create(16 << 20).unwrap();
        assert_eq!(decode(&mem, 0, at(doorbell::EXIT), &3u64.to_le_bytes()), Ok(Hypercall::Exit(3)));
        assert_eq!(decode(&mem, 0, at(doorbell::READY), &0u64.to_le_bytes()), Ok(Hypercall::Ready));
        assert_eq!(decode(&mem, 0, at(doorbell::CPU_ONLINE), &2u64.to_le_bytes()), Ok(Hypercall::CpuOnline(2)));
        assert_eq!(
            decode(&mem, 0, at(doorbell::EXIT), &[1]),
            Err(HypercallError::BadWidth { register: doorbell::EXIT, name: "exit", len: 1 })
        );
        assert_eq!(decode(&mem, 0, at(0x777), &[0; 8]), Err(HypercallError::UnknownRegister(0x777)));
        assert_eq!(decode(&mem, 0, at(doorbell::EXIT + 1), &[0; 8]), Err(HypercallError::UnknownRegister(1)));
    }

    #[test]
    fn console_writes_are_bounded_and_checked() {
        let mem = create(16 << 20).unwrap();
        mem.write_slice(b"hello", GuestAddress(0x20_0000)).unwrap();
        let v = doorbell::console_value(0x20_0000, 5);
        assert_eq!(decode(&mem, 0, at(doorbell::CONSOLE), &v.to_le_bytes()), Ok(Hypercall::Console(b"hello".to_vec())));
        let outside = doorbell::console_value((16 << 20) - 2, 5);
        assert_eq!(
            decode(&mem, 0, at(doorbell::CONSOLE), &outside.to_le_bytes()),
            Err(HypercallError::ConsoleOutside { addr: (16 << 20) - 2, len: 5 })
        );
        let long = doorbell::console_value(0x20_0000, doorbell::CONSOLE_MAX + 1);
        assert_eq!(
            decode(&mem, 0, at(doorbell::CONSOLE), &long.to_le_bytes()),
            Err(HypercallError::ConsoleTooLong(doorbell::CONSOLE_MAX + 1))
        );
    }

    #[test]
    fn decodes_a_panic_record() {
        let mem = create(16 << 20).unwrap();
        mem.write_obj(Abi(record("boom", 4)), GuestAddress(abi::PANIC_RECORD_ADDR)).unwrap();
        let Ok(Hypercall::Panic(p)) = decode(&mem, 0, at(doorbell::PANIC), &abi::PANIC_RECORD_ADDR.to_le_bytes())
        else {
            panic!("not a panic");
        };
        assert_eq!(p.to_string(), "guest panic on cpu 1 at src/main.rs:42:7: boom");
    }

    #[test]
    fn lying_panic_records_are_reported_not_trusted() {
        let mem = create(16 << 20).unwrap();
        mem.write_obj(Abi(record("boom", u32::MAX)), GuestAddress(abi::PANIC_RECORD_ADDR)).unwrap();
        let Ok(Hypercall::Panic(p)) = decode(&mem, 0, at(doorbell::PANIC), &abi::PANIC_RECORD_ADDR.to_le_bytes())
        else {
            panic!("not a panic");
        };
        assert!(p.message.contains("truncated"));
        let Ok(Hypercall::Panic(p)) = decode(&mem, 0, at(doorbell::PANIC), &u64::MAX.to_le_bytes()) else {
            panic!("not a panic");
        };
        assert!(p.message.contains("outside guest memory"));
        let Ok(Hypercall::Panic(p)) = decode(&mem, 0, at(doorbell::PANIC), &0x9000u64.to_le_bytes()) else {
            panic!("not a panic");
        };
        assert!(p.message.contains("bad magic"));
    }
}
