//! A hostile guest for the tests: the default kernel image with a few
//! hand-assembled instructions at its entry point, so the guest does one
//! attack (a doorbell flood, a panic record full of escape sequences, a
//! console flood, a CPU that ignores the shutdown request) from its first
//! instruction, with no guest kernel running at all.
//!
//! The image keeps everything the VMM checks before it boots (the ELF, its
//! segments, the ABI note, the patch-site tables, whose call sites stay
//! byte for byte): the program is written into a gap of the executable
//! segment that holds no call site, and the entry jumps there. Every vCPU
//! starts at the entry in 64-bit mode at CPL0 with the VMM's identity page
//! tables, so the doorbell page is reachable as it is for the real kernel.

use std::path::PathBuf;

use switcher::abi::{self, DOORBELL_ADDR, PanicRecord, doorbell};

use crate::Scratch;

/// An x86-64 program, assembled from the few instructions the attacks need.
#[derive(Default)]
pub struct Program {
    code: Vec<u8>,
    /// Data after the code, with the offsets that name it in the code.
    data: Vec<u8>,
    /// (offset in `code` of an imm64, offset in `data` it names).
    data_refs: Vec<(usize, usize)>,
}

/// A value for a hypercall register: a constant, or the guest-physical
/// address of data placed with [`Program::data`] (plus an offset).
#[derive(Clone, Copy)]
pub enum Value {
    Imm(u64),
    Data(usize),
    /// `console_value(data address, len)`.
    Console {
        data: usize,
        len: usize,
    },
}

impl Program {
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `bytes` after the code; returns its handle for [`Value::Data`].
    pub fn data(&mut self, bytes: &[u8]) -> usize {
        while !self.data.len().is_multiple_of(8) {
            self.data.push(0);
        }
        let at = self.data.len();
        self.data.extend_from_slice(bytes);
        at
    }

    fn imm64(&mut self, prefix: &[u8], v: u64) {
        self.code.extend_from_slice(prefix);
        self.code.extend_from_slice(&v.to_le_bytes());
    }

    /// `mov rax, value`, resolved when the program is placed.
    fn rax(&mut self, v: Value) {
        match v {
            Value::Imm(n) => self.imm64(&[0x48, 0xb8], n),
            Value::Data(d) | Value::Console { data: d, .. } => {
                self.data_refs.push((self.code.len() + 2, d));
                // Console values carry the length in their top bits, added here.
                let len = if let Value::Console { len, .. } = v { doorbell::console_value(0, len) } else { 0 };
                self.imm64(&[0x48, 0xb8], len);
            }
        }
    }

    /// One hypercall: an 8-byte write of `v` to doorbell register `reg`.
    pub fn hypercall(&mut self, reg: u64, v: Value) -> &mut Self {
        self.write64(DOORBELL_ADDR + reg, v)
    }

    /// An 8-byte write of `v` at guest-physical `addr`.
    pub fn write64(&mut self, addr: u64, v: Value) -> &mut Self {
        self.imm64(&[0x48, 0xbf], addr); // mov rdi, imm64
        self.rax(v);
        self.code.extend_from_slice(&[0x48, 0x89, 0x07]); // mov [rdi], rax
        self
    }

    /// `len` bytes of `byte` from guest-physical `addr` on.
    pub fn fill(&mut self, addr: u64, len: u64, byte: u8) -> &mut Self {
        self.imm64(&[0x48, 0xbf], addr); // mov rdi, imm64
        self.fill_from_rdi(len, byte)
    }

    fn fill_from_rdi(&mut self, len: u64, byte: u8) -> &mut Self {
        self.imm64(&[0x48, 0xb9], len); // mov rcx, imm64
        self.code.extend_from_slice(&[0xb0, byte]); // mov al, imm8
        self.code.extend_from_slice(&[0xf3, 0xaa]); // rep stosb
        self
    }

    /// `bytes` copied to guest-physical `addr` (8 bytes per store).
    pub fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> &mut Self {
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            if chunk.len() == 8 {
                self.write64(addr + 8 * i as u64, Value::Imm(u64::from_le_bytes(word)));
            } else {
                for (j, &b) in chunk.iter().enumerate() {
                    self.imm64(&[0x48, 0xbf], addr + 8 * i as u64 + j as u64); // mov rdi, imm64
                    self.code.extend_from_slice(&[0xc6, 0x07, b]); // mov byte [rdi], imm8
                }
            }
        }
        self
    }

    /// Loads the 8-byte pointer at guest-physical `addr` into the base
    /// register (rbx) the `*_at_base` writes are relative to: a region
    /// whose place the VMM chose, as the boot info names it.
    pub fn base_from(&mut self, addr: u64) -> &mut Self {
        self.imm64(&[0x48, 0xa1], addr); // mov rax, [moffs64]
        self.code.extend_from_slice(&[0x48, 0x89, 0xc3]); // mov rbx, rax
        self
    }

    /// `len` bytes of `byte` from base + `off` on.
    pub fn fill_at_base(&mut self, off: u32, len: u64, byte: u8) -> &mut Self {
        self.code.extend_from_slice(&[0x48, 0x8d, 0xbb]); // lea rdi, [rbx + disp32]
        self.code.extend_from_slice(&off.to_le_bytes());
        self.fill_from_rdi(len, byte)
    }

    /// An 8-byte write of `v` at base + `off`.
    pub fn write64_at_base(&mut self, off: u32, v: u64) -> &mut Self {
        self.imm64(&[0x48, 0xb8], v); // mov rax, imm64
        self.code.extend_from_slice(&[0x48, 0x89, 0x83]); // mov [rbx + disp32], rax
        self.code.extend_from_slice(&off.to_le_bytes());
        self
    }

    /// A 4-byte write of `v` at base + `off`.
    pub fn write32_at_base(&mut self, off: u32, v: u32) -> &mut Self {
        self.code.push(0xb8); // mov eax, imm32
        self.code.extend_from_slice(&v.to_le_bytes());
        self.code.extend_from_slice(&[0x89, 0x83]); // mov [rbx + disp32], eax
        self.code.extend_from_slice(&off.to_le_bytes());
        self
    }

    /// The same hypercall for ever, as fast as the vCPU exits.
    pub fn flood(&mut self, reg: u64, v: Value) -> &mut Self {
        let top = self.code.len();
        self.hypercall(reg, v);
        self.jump_back(top);
        self
    }

    /// The same hypercall `n` times.
    pub fn repeat(&mut self, n: u64, reg: u64, v: Value) -> &mut Self {
        self.imm64(&[0x48, 0xb9], n); // mov rcx, imm64
        let top = self.code.len();
        self.hypercall(reg, v);
        self.code.extend_from_slice(&[0x48, 0xff, 0xc9]); // dec rcx
        let rel = top as i64 - (self.code.len() as i64 + 6);
        self.code.extend_from_slice(&[0x0f, 0x85]); // jnz rel32
        self.code.extend_from_slice(&(rel as i32).to_le_bytes());
        self
    }

    /// Spins for ever (ignores every request, the shutdown included).
    pub fn spin(&mut self) -> &mut Self {
        let top = self.code.len();
        self.code.extend_from_slice(&[0xf3, 0x90]); // pause
        self.jump_back(top);
        self
    }

    fn jump_back(&mut self, to: usize) {
        let rel = to as i64 - (self.code.len() as i64 + 5);
        self.code.push(0xe9); // jmp rel32
        self.code.extend_from_slice(&(rel as i32).to_le_bytes());
    }

    /// The code and data as placed at guest-physical `base`.
    fn assemble(&self, base: u64) -> Vec<u8> {
        let mut code = self.code.clone();
        let mut data_at = code.len().next_multiple_of(8);
        code.resize(data_at, 0xcc);
        for &(imm, d) in &self.data_refs {
            let add = base + (data_at + d) as u64;
            let old = u64::from_le_bytes(code[imm..imm + 8].try_into().expect("8 bytes"));
            code[imm..imm + 8].copy_from_slice(&(old | add).to_le_bytes());
        }
        code.extend_from_slice(&self.data);
        data_at += self.data.len();
        debug_assert_eq!(code.len(), data_at);
        code
    }

    /// The default kernel with this program at its entry.
    pub fn kernel_image(&self) -> Vec<u8> {
        let image = rtswitch::DEFAULT_KERNEL;
        let kernel = rtswitch::loader::parse(image, 128 << 20).expect("the default kernel parses");
        let entry = kernel.info.entry;
        let mut sites: Vec<(u64, u64)> = kernel.sites.sites().iter().map(|s| (s.addr, s.addr + 5)).collect();
        sites.sort_unstable();
        let size = self.assemble(0).len() as u64 + 16;
        // The executable segment holding the entry: (paddr, file offset, file size).
        let (seg, off, filesz) = exec_segment(image, entry);
        let free = |lo: u64, hi: u64| sites.iter().all(|&(s, e)| e <= lo || s >= hi);
        assert!(free(entry, entry + 5), "a call site at the kernel's entry");
        // The first gap after the entry, inside the segment's file bytes,
        // that holds the program and no call site.
        let mut base = entry + 16;
        while !free(base, base + size) {
            let next = sites.iter().find(|&&(s, e)| e > base && s < base + size).map_or(base + 1, |&(_, e)| e);
            base = next.next_multiple_of(16);
            assert!(base + size <= seg + filesz, "no gap of {size} bytes in the kernel's text for the program");
        }
        let mut out = image.to_vec();
        let file_at = |paddr: u64| (off + (paddr - seg)) as usize;
        let bytes = self.assemble(base);
        out[file_at(base)..file_at(base) + bytes.len()].copy_from_slice(&bytes);
        let rel = base as i64 - (entry as i64 + 5);
        out[file_at(entry)] = 0xe9; // jmp rel32 to the program
        out[file_at(entry) + 1..file_at(entry) + 5].copy_from_slice(&(rel as i32).to_le_bytes());
        out
    }

    /// Writes [`Self::kernel_image`] into `dir`; returns its path.
    pub fn write(&self, dir: &Scratch, name: &str) -> PathBuf {
        dir.file(name, &self.kernel_image())
    }
}

/// The PT_LOAD segment with PF_X that holds `entry`: (paddr, offset, filesz).
fn exec_segment(image: &[u8], entry: u64) -> (u64, u64, u64) {
    let u64_at = |off: usize| u64::from_le_bytes(image[off..off + 8].try_into().expect("8 bytes"));
    let u32_at = |off: usize| u32::from_le_bytes(image[off..off + 4].try_into().expect("4 bytes"));
    let phoff = u64_at(0x20) as usize;
    let (phentsize, phnum) =
        (u16::from_le_bytes([image[0x36], image[0x37]]) as usize, u16::from_le_bytes([image[0x38], image[0x39]]));
    (0..usize::from(phnum))
        .map(|i| phoff + i * phentsize)
        .filter(|&ph| u32_at(ph) == 1 && u32_at(ph + 4) & 1 != 0)
        .map(|ph| (u64_at(ph + 24), u64_at(ph + 8), u64_at(ph + 32)))
        .find(|&(paddr, _, filesz)| (paddr..paddr + filesz).contains(&entry))
        .expect("the entry lies in an executable segment")
}

/// A panic record with `file` and `message` (each cut to its field).
pub fn panic_record(file: &[u8], message: &[u8]) -> Vec<u8> {
    let mut r = PanicRecord::zeroed();
    r.magic = abi::ABI_MAGIC;
    r.line = 1;
    r.column = 2;
    let (f, m) = (file.len().min(r.file.len()), message.len().min(r.message.len()));
    r.file[..f].copy_from_slice(&file[..f]);
    r.message[..m].copy_from_slice(&message[..m]);
    r.file_len = f as u32;
    r.message_len = m as u32;
    // SAFETY: PanicRecord is a plain #[repr(C)] ABI struct of integers and
    // byte arrays (no padding the guest would not write either); viewing it
    // as bytes reads initialised memory.
    unsafe { std::slice::from_raw_parts((&raw const r).cast::<u8>(), std::mem::size_of::<PanicRecord>()).to_vec() }
}
