//! Decoding the guest's hypercalls (32-bit `out` to the ports in
//! `switcher::abi::port`) into events for the VMM. Every value is checked:
//! a guest can write anything to any port.

use switcher::abi::{self, PanicRecord, port};

use crate::vstate::memory::{GuestMemory, read_abi};

/// A hypercall, decoded and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hypercall {
    Exit(u32),
    Panic(GuestPanic),
    Ready,
    CpuOnline(u32),
    /// The switch mailbox changed to this state.
    Switch(u32),
}

/// A guest panic as the VMM reports it.
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
    #[error("hypercall port {port:#x} takes a 4-byte value, got {len} bytes")]
    BadWidth { port: u16, len: usize },
    #[error("unknown hypercall port {0:#x}")]
    UnknownPort(u16),
}

/// Whether `port` is one of the hypercall ports.
pub fn is_hypercall_port(port: u16) -> bool {
    matches!(port, port::HC_EXIT | port::HC_PANIC | port::HC_READY | port::HC_CPU_ONLINE | port::HC_SWITCH)
}

/// Decodes an `out` to a hypercall port. `mem` is read for the panic record.
pub fn decode(mem: &GuestMemory, cpu: u32, port_nr: u16, data: &[u8]) -> Result<Hypercall, HypercallError> {
    if !is_hypercall_port(port_nr) {
        return Err(HypercallError::UnknownPort(port_nr));
    }
    let value = match <[u8; 4]>::try_from(data) {
        Ok(b) => u32::from_le_bytes(b),
        Err(_) => {
            return Err(HypercallError::BadWidth { port: port_nr, len: data.len() });
        }
    };
    Ok(match port_nr {
        port::HC_EXIT => Hypercall::Exit(value),
        port::HC_PANIC => Hypercall::Panic(read_panic(mem, cpu, u64::from(value))),
        port::HC_READY => Hypercall::Ready,
        port::HC_SWITCH => Hypercall::Switch(value),
        _ => Hypercall::CpuOnline(value),
    })
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
        let mut s = String::from_utf8_lossy(&bytes[..n]).into_owned();
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
    use vm_memory::{Bytes, GuestAddress};

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

    #[test]
    fn decodes_simple_calls() {
        let mem = create(16 << 20).unwrap();
        assert_eq!(decode(&mem, 0, port::HC_EXIT, &3u32.to_le_bytes()), Ok(Hypercall::Exit(3)));
        assert_eq!(decode(&mem, 0, port::HC_READY, &0u32.to_le_bytes()), Ok(Hypercall::Ready));
        assert_eq!(decode(&mem, 0, port::HC_CPU_ONLINE, &2u32.to_le_bytes()), Ok(Hypercall::CpuOnline(2)));
        assert_eq!(decode(&mem, 0, port::HC_EXIT, &[1]), Err(HypercallError::BadWidth { port: port::HC_EXIT, len: 1 }));
        assert_eq!(decode(&mem, 0, 0x777, &[0; 4]), Err(HypercallError::UnknownPort(0x777)));
    }

    #[test]
    fn decodes_a_panic_record() {
        let mem = create(16 << 20).unwrap();
        mem.write_obj(Abi(record("boom", 4)), GuestAddress(abi::PANIC_RECORD_ADDR)).unwrap();
        let Ok(Hypercall::Panic(p)) = decode(&mem, 0, port::HC_PANIC, &(abi::PANIC_RECORD_ADDR as u32).to_le_bytes())
        else {
            panic!("not a panic");
        };
        assert_eq!(p.to_string(), "guest panic on cpu 1 at src/main.rs:42:7: boom");
    }

    #[test]
    fn lying_panic_records_are_reported_not_trusted() {
        let mem = create(16 << 20).unwrap();
        mem.write_obj(Abi(record("boom", u32::MAX)), GuestAddress(abi::PANIC_RECORD_ADDR)).unwrap();
        let Ok(Hypercall::Panic(p)) = decode(&mem, 0, port::HC_PANIC, &(abi::PANIC_RECORD_ADDR as u32).to_le_bytes())
        else {
            panic!("not a panic");
        };
        assert!(p.message.contains("truncated"));
        let Ok(Hypercall::Panic(p)) = decode(&mem, 0, port::HC_PANIC, &u32::MAX.to_le_bytes()) else {
            panic!("not a panic");
        };
        assert!(p.message.contains("outside guest memory"));
        let Ok(Hypercall::Panic(p)) = decode(&mem, 0, port::HC_PANIC, &0x8000u32.to_le_bytes()) else {
            panic!("not a panic");
        };
        assert!(p.message.contains("bad magic"));
    }
}
