//! The patcher: rewrites the guest's switchable-lock call sites from one
//! mode's implementation to the other's, all or nothing.
//!
//! The site table is read from the guest ELF file (trusted, host side; never
//! from guest memory) and validated: every site is a whole 5-byte
//! `call/jmp rel32` inside an executable segment, no two sites overlap,
//! every (operation, mode) has exactly one implementation inside text, and
//! in the file every site calls its operation's mainline implementation.
//!
//! Patching is two phases over guest memory:
//! 1. [`SiteTable::plan`] reads every site and checks it is exactly the
//!    expected instruction for the current mode; the first mismatch is an
//!    error naming the site address, the bytes found and the bytes expected,
//!    and nothing has been written.
//! 2. [`PatchPlan::apply`] writes the new rel32 of every site.
//!
//! The caller guarantees that no vCPU runs guest code between plan and
//! apply (before boot, or with every vCPU held by the stop-machine).

use object::elf::{PF_X, PT_LOAD};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object, ObjectSection};

use crate::abi::LockMode;
use crate::abi::sites::{
    IMPLS_SECTION, LockOp, OPCODE_CALL_REL32, OPCODE_JMP_REL32, SITE_LEN, SITES_SECTION, decode_rel32, encode_rel32,
};
use crate::elf::AlignedImage;

/// Access to guest memory for patching.
pub trait GuestText {
    /// Reads `buf.len()` bytes at guest-physical `addr`; false if outside memory.
    fn read_text(&self, addr: u64, buf: &mut [u8]) -> bool;
    /// Writes `bytes` at guest-physical `addr`; false if outside memory.
    fn write_text(&self, addr: u64, bytes: &[u8]) -> bool;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("guest ELF cannot be parsed: {0}")]
    Elf(String),
    #[error("guest ELF has no {0} section: it was not built with switchable locks for rtswitch")]
    MissingSection(&'static str),
    #[error("guest ELF section {section} is {len} bytes, not a whole number of {entry}-byte entries")]
    BadSectionSize { section: &'static str, len: usize, entry: usize },
    #[error("guest ELF section {0} is empty")]
    EmptySection(&'static str),
    #[error("switch site #{index} at {addr:#x} has unknown operation {op}")]
    BadOp { index: usize, addr: u64, op: u32 },
    #[error("switch site #{index} at {addr:#x} has opcode {opcode:#x}, not call rel32 (0xe8) or jmp rel32 (0xe9)")]
    BadOpcode { index: usize, addr: u64, opcode: u32 },
    #[error("switch site #{index} at {addr:#x} is not inside an executable segment of the guest ELF")]
    SiteOutsideText { index: usize, addr: u64 },
    #[error("switch sites at {0:#x} and {1:#x} overlap")]
    Overlap(u64, u64),
    #[error("switch implementation table entry #{index} is malformed: {why}")]
    BadImpl { index: usize, why: String },
    #[error("no {mode} implementation of {op} in {IMPLS_SECTION}")]
    MissingImpl { op: &'static str, mode: &'static str },
    #[error("switch site at {addr:#x} ({op}) cannot reach its implementation at {target:#x} with a rel32")]
    OutOfRange { addr: u64, op: &'static str, target: u64 },
    #[error(
        "switch site at {addr:#x} ({op}) holds bytes {found:02x?}, expected {expected:02x?} (a call to the {mode} \
         implementation); nothing was patched"
    )]
    Mismatch { addr: u64, op: &'static str, found: [u8; SITE_LEN], expected: [u8; SITE_LEN], mode: &'static str },
    #[error("switch site at {0:#x} is outside guest memory; nothing was patched")]
    OutsideMemory(u64),
    #[error("switch sites disagree on the current mode: {mainline} call mainline, {rt} call rt, {other} neither")]
    Inconsistent { mainline: usize, rt: usize, other: usize },
}

/// One validated site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchSite {
    pub addr: u64,
    pub op: LockOp,
    pub opcode: u8,
}

/// The validated site and implementation tables of one guest kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteTable {
    sites: Vec<PatchSite>,
    /// `impls[op][mode]`: implementation address.
    impls: [[u64; 2]; LockOp::COUNT],
}

/// The writes that switch every site to one mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchPlan {
    pub from: LockMode,
    pub to: LockMode,
    writes: Vec<(u64, [u8; SITE_LEN])>,
}

fn mode_index(mode: LockMode) -> usize {
    mode as usize
}

impl SiteTable {
    /// Reads and validates the tables in a guest ELF image.
    pub fn from_elf(image: &[u8]) -> Result<Self, PatchError> {
        let aligned = AlignedImage::new(image);
        let file = ElfFile64::<Endianness>::parse(aligned.bytes()).map_err(|e| PatchError::Elf(e.to_string()))?;
        Self::from_elf_file(&file)
    }

    /// [`from_elf`](Self::from_elf) on an ELF file already parsed, for a
    /// caller that parses the image once for all it reads (the VMM's
    /// loader).
    pub fn from_elf_file(file: &ElfFile64<'_, Endianness>) -> Result<Self, PatchError> {
        let endian = file.endian();
        // Executable segments: [start, end) by physical address, with their
        // file offset for reading the bytes the file holds.
        let mut text = Vec::new();
        for ph in file.elf_program_headers() {
            if ph.p_type(endian) == PT_LOAD && ph.p_flags(endian) & PF_X != 0 {
                let start = ph.p_paddr(endian);
                text.push((start, start.saturating_add(ph.p_filesz(endian)), ph.p_offset(endian)));
            }
        }
        let sites_raw = section_data(file, SITES_SECTION)?;
        let impls_raw = section_data(file, IMPLS_SECTION)?;

        let mut impls = [[None::<u64>; 2]; LockOp::COUNT];
        for (index, e) in entries(impls_raw, IMPLS_SECTION)?.enumerate() {
            let op_raw = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let mode_raw = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let target = u64::from_le_bytes([e[8], e[9], e[10], e[11], e[12], e[13], e[14], e[15]]);
            let op = LockOp::from_u32(op_raw)
                .ok_or_else(|| PatchError::BadImpl { index, why: format!("unknown operation {op_raw}") })?;
            let mode = LockMode::from_u32(mode_raw)
                .ok_or_else(|| PatchError::BadImpl { index, why: format!("unknown mode {mode_raw}") })?;
            if !text.iter().any(|&(s, e, _)| (s..e).contains(&target)) {
                return Err(PatchError::BadImpl {
                    index,
                    why: format!("target {target:#x} is outside executable segments"),
                });
            }
            let slot = &mut impls[op as usize][mode_index(mode)];
            if slot.is_some() {
                return Err(PatchError::BadImpl {
                    index,
                    why: format!("second {} implementation of {}", mode.name(), op.name()),
                });
            }
            *slot = Some(target);
        }
        let mut resolved = [[0u64; 2]; LockOp::COUNT];
        for op in LockOp::ALL {
            for mode in [LockMode::Mainline, LockMode::Rt] {
                resolved[op as usize][mode_index(mode)] = impls[op as usize][mode_index(mode)]
                    .ok_or(PatchError::MissingImpl { op: op.name(), mode: mode.name() })?;
            }
        }

        let mut sites = Vec::new();
        for (index, e) in entries(sites_raw, SITES_SECTION)?.enumerate() {
            let addr = u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
            let op_raw = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
            let opcode_raw = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
            let op = LockOp::from_u32(op_raw).ok_or(PatchError::BadOp { index, addr, op: op_raw })?;
            let opcode = match opcode_raw {
                x if x == u32::from(OPCODE_CALL_REL32) => OPCODE_CALL_REL32,
                x if x == u32::from(OPCODE_JMP_REL32) => OPCODE_JMP_REL32,
                _ => {
                    return Err(PatchError::BadOpcode { index, addr, opcode: opcode_raw });
                }
            };
            let end = addr.checked_add(SITE_LEN as u64).ok_or(PatchError::SiteOutsideText { index, addr })?;
            let Some(&(seg_start, _, seg_off)) = text.iter().find(|&&(s, e, _)| addr >= s && end <= e) else {
                return Err(PatchError::SiteOutsideText { index, addr });
            };
            let site = PatchSite { addr, op, opcode };
            // The file must hold the mainline call: the build's default.
            let off = (seg_off + (addr - seg_start)) as usize;
            let found: [u8; SITE_LEN] = file
                .data()
                .get(off..off + SITE_LEN)
                .and_then(|b| b.try_into().ok())
                .ok_or(PatchError::SiteOutsideText { index, addr })?;
            let table = SiteTable { sites: Vec::new(), impls: resolved };
            let expected = table.expected_bytes(&site, LockMode::Mainline)?;
            if found != expected {
                return Err(PatchError::Mismatch {
                    addr,
                    op: op.name(),
                    found,
                    expected,
                    mode: LockMode::Mainline.name(),
                });
            }
            sites.push(site);
        }
        sites.sort_by_key(|s| s.addr);
        for w in sites.windows(2) {
            if w[0].addr + SITE_LEN as u64 > w[1].addr {
                return Err(PatchError::Overlap(w[0].addr, w[1].addr));
            }
        }
        Ok(Self { sites, impls: resolved })
    }

    pub fn sites(&self) -> &[PatchSite] {
        &self.sites
    }

    pub fn len(&self) -> usize {
        self.sites.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// Address of `op`'s implementation in `mode`.
    pub fn implementation(&self, op: LockOp, mode: LockMode) -> u64 {
        self.impls[op as usize][mode_index(mode)]
    }

    /// The instruction `site` holds when the kernel is in `mode`.
    pub fn expected_bytes(&self, site: &PatchSite, mode: LockMode) -> Result<[u8; SITE_LEN], PatchError> {
        let target = self.implementation(site.op, mode);
        encode_rel32(site.opcode, site.addr, target).ok_or(PatchError::OutOfRange {
            addr: site.addr,
            op: site.op.name(),
            target,
        })
    }

    /// Checks every site holds the `from` instruction; returns the writes
    /// that switch them all to `to`. Writes nothing.
    pub fn plan(&self, mem: &impl GuestText, from: LockMode, to: LockMode) -> Result<PatchPlan, PatchError> {
        let mut writes = Vec::with_capacity(self.sites.len());
        for site in &self.sites {
            let mut found = [0u8; SITE_LEN];
            if !mem.read_text(site.addr, &mut found) {
                return Err(PatchError::OutsideMemory(site.addr));
            }
            let expected = self.expected_bytes(site, from)?;
            if found != expected {
                return Err(PatchError::Mismatch {
                    addr: site.addr,
                    op: site.op.name(),
                    found,
                    expected,
                    mode: from.name(),
                });
            }
            writes.push((site.addr, self.expected_bytes(site, to)?));
        }
        Ok(PatchPlan { from, to, writes })
    }

    /// The mode every site is in, or an error if they disagree (or match neither).
    pub fn current_mode(&self, mem: &impl GuestText) -> Result<LockMode, PatchError> {
        let (mut mainline, mut rt, mut other) = (0, 0, 0);
        for site in &self.sites {
            let mut found = [0u8; SITE_LEN];
            if !mem.read_text(site.addr, &mut found) {
                return Err(PatchError::OutsideMemory(site.addr));
            }
            match decode_rel32(site.addr, found) {
                Some((op, t)) if op == site.opcode && t == self.implementation(site.op, LockMode::Mainline) => {
                    mainline += 1
                }
                Some((op, t)) if op == site.opcode && t == self.implementation(site.op, LockMode::Rt) => rt += 1,
                _ => other += 1,
            }
        }
        match (mainline, rt, other) {
            (_, 0, 0) => Ok(LockMode::Mainline),
            (0, _, 0) => Ok(LockMode::Rt),
            _ => Err(PatchError::Inconsistent { mainline, rt, other }),
        }
    }
}

impl PatchPlan {
    /// Number of sites the plan rewrites.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Writes every site. Every address was read successfully by `plan`, so
    /// a failed write here means guest memory changed under the caller.
    pub fn apply(&self, mem: &impl GuestText) -> Result<usize, PatchError> {
        for (addr, bytes) in &self.writes {
            if !mem.write_text(*addr, bytes) {
                return Err(PatchError::OutsideMemory(*addr));
            }
        }
        Ok(self.writes.len())
    }
}

fn section_data<'a>(file: &'a ElfFile64<'a, Endianness>, name: &'static str) -> Result<&'a [u8], PatchError> {
    let section = file.section_by_name(name).ok_or(PatchError::MissingSection(name))?;
    section.data().map_err(|e| PatchError::Elf(format!("{name}: {e}")))
}

fn entries<'a>(data: &'a [u8], section: &'static str) -> Result<std::slice::ChunksExact<'a, u8>, PatchError> {
    const ENTRY: usize = 16;
    if data.is_empty() {
        return Err(PatchError::EmptySection(section));
    }
    if !data.len().is_multiple_of(ENTRY) {
        return Err(PatchError::BadSectionSize { section, len: data.len(), entry: ENTRY });
    }
    Ok(data.chunks_exact(ENTRY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Guest memory for tests: a byte vector from address 0.
    struct Mem(RefCell<Vec<u8>>);

    impl GuestText for Mem {
        fn read_text(&self, addr: u64, buf: &mut [u8]) -> bool {
            let m = self.0.borrow();
            match m.get(addr as usize..addr as usize + buf.len()) {
                Some(s) => {
                    buf.copy_from_slice(s);
                    true
                }
                None => false,
            }
        }
        fn write_text(&self, addr: u64, bytes: &[u8]) -> bool {
            let mut m = self.0.borrow_mut();
            match m.get_mut(addr as usize..addr as usize + bytes.len()) {
                Some(s) => {
                    s.copy_from_slice(bytes);
                    true
                }
                None => false,
            }
        }
    }

    const ML_LOCK: u64 = 0x1000;
    const RT_LOCK: u64 = 0x1100;

    fn table(sites: &[(u64, LockOp)]) -> SiteTable {
        let mut impls = [[0u64; 2]; LockOp::COUNT];
        for (i, op) in LockOp::ALL.iter().enumerate() {
            impls[*op as usize] = [ML_LOCK + 0x10 * i as u64, RT_LOCK + 0x10 * i as u64];
        }
        SiteTable {
            sites: sites.iter().map(|&(addr, op)| PatchSite { addr, op, opcode: OPCODE_CALL_REL32 }).collect(),
            impls,
        }
    }

    fn mem_in(t: &SiteTable, mode: LockMode) -> Mem {
        let m = Mem(RefCell::new(vec![0x90; 0x4000]));
        for s in t.sites() {
            m.write_text(s.addr, &t.expected_bytes(s, mode).unwrap());
        }
        m
    }

    #[test]
    fn plan_and_apply_switch_every_site() {
        let t = table(&[(0x2000, LockOp::Lock), (0x2010, LockOp::Unlock), (0x2020, LockOp::TryLock)]);
        let m = mem_in(&t, LockMode::Mainline);
        assert_eq!(t.current_mode(&m), Ok(LockMode::Mainline));
        let plan = t.plan(&m, LockMode::Mainline, LockMode::Rt).unwrap();
        assert_eq!(plan.apply(&m), Ok(3));
        assert_eq!(t.current_mode(&m), Ok(LockMode::Rt));
        let mut b = [0u8; 5];
        m.read_text(0x2000, &mut b);
        assert_eq!(decode_rel32(0x2000, b), Some((OPCODE_CALL_REL32, RT_LOCK)));
        // and back
        t.plan(&m, LockMode::Rt, LockMode::Mainline).unwrap().apply(&m).unwrap();
        assert_eq!(t.current_mode(&m), Ok(LockMode::Mainline));
    }

    #[test]
    fn one_bad_site_means_nothing_is_written() {
        let t = table(&[(0x2000, LockOp::Lock), (0x2010, LockOp::Unlock), (0x2020, LockOp::TryLock)]);
        let m = mem_in(&t, LockMode::Mainline);
        m.write_text(0x2020, &[0xcc; 5]);
        let before = m.0.borrow().clone();
        let err = t.plan(&m, LockMode::Mainline, LockMode::Rt).unwrap_err();
        assert!(
            matches!(err, PatchError::Mismatch { addr: 0x2020, found: [0xcc, 0xcc, 0xcc, 0xcc, 0xcc], .. }),
            "{err}"
        );
        assert!(err.to_string().contains("0x2020"), "{err}");
        assert_eq!(*m.0.borrow(), before, "a failed plan writes nothing");
        assert!(matches!(t.current_mode(&m), Err(PatchError::Inconsistent { mainline: 2, rt: 0, other: 1 })));
    }

    #[test]
    fn plan_from_the_wrong_mode_is_refused() {
        let t = table(&[(0x2000, LockOp::Lock)]);
        let m = mem_in(&t, LockMode::Rt);
        assert!(matches!(t.plan(&m, LockMode::Mainline, LockMode::Rt), Err(PatchError::Mismatch { .. })));
    }

    #[test]
    fn sites_outside_memory_are_refused() {
        let t = table(&[(0x10_0000, LockOp::Lock)]);
        let m = Mem(RefCell::new(vec![0; 0x100]));
        assert_eq!(t.plan(&m, LockMode::Mainline, LockMode::Rt), Err(PatchError::OutsideMemory(0x10_0000)));
    }

    #[test]
    fn not_an_elf_is_an_error() {
        assert!(matches!(SiteTable::from_elf(b"nope"), Err(PatchError::Elf(_))));
    }

    #[test]
    fn entries_must_be_whole() {
        assert!(matches!(entries(&[0; 17], SITES_SECTION), Err(PatchError::BadSectionSize { len: 17, .. })));
        assert!(matches!(entries(&[], SITES_SECTION), Err(PatchError::EmptySection(_))));
        assert_eq!(entries(&[0; 32], SITES_SECTION).unwrap().count(), 2);
    }
}
