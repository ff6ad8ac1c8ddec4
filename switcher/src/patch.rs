//! The patcher: rewrites the guest's patchable call sites from one
//! profile's implementations to another's, all or nothing.
//!
//! A site is a call of one operation ([`SiteOp`]: a lock operation, a
//! preemption point, the device-interrupt dispatch); the operation belongs
//! to one dimension of the kernel's [`Profile`] and has one implementation
//! per variant of that dimension (two variants may share one, as
//! PREEMPT_DYNAMIC's no-op static calls do).
//!
//! The site table is read from the guest ELF file (trusted, host side; never
//! from guest memory) and validated: every site is a whole 5-byte
//! `call/jmp rel32` inside an executable segment, no two sites overlap,
//! every (operation, variant) has exactly one implementation inside text,
//! in the file every site calls its operation's implementation for the
//! build profile ([`BUILD_PROFILE`]), and the sites of every dimension tell
//! each pair of its variants apart (so the current profile can be read
//! back from guest memory).
//!
//! Patching is two phases over guest memory:
//! 1. [`SiteTable::plan`] reads every site and checks it is exactly the
//!    expected instruction for the current profile; the first mismatch is
//!    an error naming the site address, the bytes found and the bytes
//!    expected, and nothing has been written.
//! 2. [`PatchPlan::apply`] writes the new rel32 of every site.
//!
//! The caller guarantees that no vCPU runs guest code between plan and
//! apply (before boot, or with every vCPU held by the stop-machine).

use std::fmt;

use object::elf::{PF_X, PT_LOAD};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object, ObjectSection, ObjectSymbol, SymbolKind};

use crate::abi::sites::{
    IMPLS_SECTION, OPCODE_CALL_REL32, OPCODE_JMP_REL32, SITE_LEN, SITES_SECTION, SiteOp, decode_rel32, encode_rel32,
};
use crate::elf::AlignedImage;
use crate::profile::{Dimension, Profile};

/// The profile the guest is built in: every site in the ELF file calls
/// its operation's implementation for this profile.
pub const BUILD_PROFILE: Profile = Profile::MAINLINE;

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
    #[error("guest ELF has no {0} section: it was not built with switchable call sites for rtswitch")]
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
    #[error("no {variant} implementation of {op} in {IMPLS_SECTION}")]
    MissingImpl { op: &'static str, variant: &'static str },
    #[error(
        "the guest's {dimension} sites cannot tell {a} from {b} (no site's implementations differ between them): the \
         kernel cannot switch that dimension"
    )]
    Undiscriminated { dimension: &'static str, a: &'static str, b: &'static str },
    #[error(
        "switch site at {0:#x} no longer holds the bytes the patch was planned from (the text changed since); nothing \
         was patched: plan it again"
    )]
    Changed(u64),
    #[error("switch site at {addr:#x} ({op}) cannot reach its implementation at {target:#x} with a rel32")]
    OutOfRange { addr: u64, op: &'static str, target: u64 },
    #[error(
        "switch site at {addr:#x} ({op}) holds bytes {found:02x?}, expected {expected:02x?} (a call to the {mode} \
         implementation); nothing was patched"
    )]
    Mismatch { addr: u64, op: &'static str, found: [u8; SITE_LEN], expected: [u8; SITE_LEN], mode: &'static str },
    #[error("switch site at {0:#x} is outside guest memory; nothing was patched")]
    OutsideMemory(u64),
    #[error(
        "switch sites disagree on the current {dimension}: the site at {addr:#x} ({op}) calls none of the \
         implementations the other {dimension} sites allow"
    )]
    Inconsistent { dimension: &'static str, addr: u64, op: &'static str },
    #[error(
        "writing the call site at {addr:#x} failed and the {written} sites written before it could not all be \
         restored: the guest's text is half patched; stop the VM"
    )]
    HalfPatched { addr: u64, written: usize },
}

/// One validated site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchSite {
    pub addr: u64,
    pub op: SiteOp,
    pub opcode: u8,
}

/// `impls[op][variant]`: implementation address (unused variants 0).
type Impls = [[u64; Dimension::MAX_VARIANTS]; SiteOp::COUNT];

/// The validated site and implementation tables of one guest kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteTable {
    sites: Vec<PatchSite>,
    impls: Impls,
    /// Each implementation function's extent `[start, end)`, from the
    /// ELF's symbols (an implementation without a sized symbol is absent).
    impl_extents: Vec<ImplExtent>,
}

/// Where an implementation function lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImplExtent {
    pub start: u64,
    pub end: u64,
    pub op: SiteOp,
    pub variant: usize,
}

/// Switchable code an instruction pointer lies in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchableCode {
    /// The 5 bytes of a call site (the patch rewrites them).
    Site { addr: u64, op: SiteOp },
    /// An implementation function (a task inside one must leave it through
    /// the implementation it entered).
    Implementation { start: u64, op: SiteOp, variant: usize },
}

impl fmt::Display for SwitchableCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SwitchableCode::Site { addr, op } => write!(f, "the {} call site at {addr:#x}", op.name()),
            SwitchableCode::Implementation { start, op, variant } => write!(
                f,
                "the {} implementation of {} at {start:#x}",
                op.dimension().variants().get(variant).copied().unwrap_or("?"),
                op.name()
            ),
        }
    }
}

/// The writes that switch every site to one profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchPlan {
    pub from: Profile,
    pub to: Profile,
    /// (address, bytes now, bytes to write).
    writes: Vec<(u64, [u8; SITE_LEN], [u8; SITE_LEN])>,
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

        let mut impls = [[None::<u64>; Dimension::MAX_VARIANTS]; SiteOp::COUNT];
        for (index, e) in entries(impls_raw, IMPLS_SECTION)?.enumerate() {
            let op_raw = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let variant_raw = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let target = u64::from_le_bytes([e[8], e[9], e[10], e[11], e[12], e[13], e[14], e[15]]);
            let op = SiteOp::from_u32(op_raw)
                .ok_or_else(|| PatchError::BadImpl { index, why: format!("unknown operation {op_raw}") })?;
            let variants = op.dimension().variants();
            let variant = variants.get(variant_raw as usize).ok_or_else(|| PatchError::BadImpl {
                index,
                why: format!(
                    "{} has no variant {variant_raw} ({} has {})",
                    op.name(),
                    op.dimension().name(),
                    variants.len()
                ),
            })?;
            if !text.iter().any(|&(s, e, _)| (s..e).contains(&target)) {
                return Err(PatchError::BadImpl {
                    index,
                    why: format!("target {target:#x} is outside executable segments"),
                });
            }
            let slot = &mut impls[op as usize][variant_raw as usize];
            if slot.is_some() {
                return Err(PatchError::BadImpl {
                    index,
                    why: format!("second {variant} implementation of {}", op.name()),
                });
            }
            *slot = Some(target);
        }
        let mut resolved: Impls = [[0u64; Dimension::MAX_VARIANTS]; SiteOp::COUNT];
        for op in SiteOp::ALL {
            for (v, name) in op.dimension().variants().iter().enumerate() {
                resolved[op as usize][v] =
                    impls[op as usize][v].ok_or(PatchError::MissingImpl { op: op.name(), variant: name })?;
            }
        }

        // The implementations alone, to compute what each site must hold.
        let lookup = SiteTable { sites: Vec::new(), impls: resolved, impl_extents: Vec::new() };
        let mut sites = Vec::new();
        for (index, e) in entries(sites_raw, SITES_SECTION)?.enumerate() {
            let addr = u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
            let op_raw = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
            let opcode_raw = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
            let op = SiteOp::from_u32(op_raw).ok_or(PatchError::BadOp { index, addr, op: op_raw })?;
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
            // The file must hold the build profile's call.
            let off = (seg_off + (addr - seg_start)) as usize;
            let found: [u8; SITE_LEN] = file
                .data()
                .get(off..off + SITE_LEN)
                .and_then(|b| b.try_into().ok())
                .ok_or(PatchError::SiteOutsideText { index, addr })?;
            let expected = lookup.expected_bytes(&site, BUILD_PROFILE)?;
            if found != expected {
                return Err(PatchError::Mismatch { addr, op: op.name(), found, expected, mode: BUILD_PROFILE.name() });
            }
            sites.push(site);
        }
        sites.sort_by_key(|s| s.addr);
        for w in sites.windows(2) {
            if w[0].addr + SITE_LEN as u64 > w[1].addr {
                return Err(PatchError::Overlap(w[0].addr, w[1].addr));
            }
        }
        let impl_extents = impl_extents(file, &resolved);
        let table = Self { sites, impls: resolved, impl_extents };
        table.check_discriminated()?;
        Ok(table)
    }

    /// The switchable code `rip` lies in, if any: a call site's bytes, or
    /// an implementation function (as far as the ELF's symbols tell its
    /// extent).
    pub fn switchable_code_at(&self, rip: u64) -> Option<SwitchableCode> {
        let i = self.sites.partition_point(|s| s.addr <= rip);
        if let Some(site) = i.checked_sub(1).map(|i| self.sites[i])
            && rip < site.addr + SITE_LEN as u64
        {
            return Some(SwitchableCode::Site { addr: site.addr, op: site.op });
        }
        self.impl_extents.iter().find(|e| (e.start..e.end).contains(&rip)).map(|e| SwitchableCode::Implementation {
            start: e.start,
            op: e.op,
            variant: e.variant,
        })
    }

    /// Implementations whose extent the ELF's symbols gave.
    pub fn impl_extents(&self) -> &[ImplExtent] {
        &self.impl_extents
    }

    /// Every pair of variants of every dimension is told apart by some
    /// site present in the table.
    fn check_discriminated(&self) -> Result<(), PatchError> {
        for d in Dimension::ALL.into_iter().filter(|d| d.has_sites()) {
            let names = d.variants();
            for a in 0..names.len() {
                for b in a + 1..names.len() {
                    let told = self
                        .sites
                        .iter()
                        .any(|s| s.op.dimension() == d && self.impls[s.op as usize][a] != self.impls[s.op as usize][b]);
                    if !told {
                        return Err(PatchError::Undiscriminated { dimension: d.name(), a: names[a], b: names[b] });
                    }
                }
            }
        }
        Ok(())
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

    /// How many sites belong to dimension `d`.
    pub fn count_in(&self, d: Dimension) -> usize {
        self.sites.iter().filter(|s| s.op.dimension() == d).count()
    }

    /// Address of `op`'s implementation for `variant` of its dimension.
    pub fn implementation(&self, op: SiteOp, variant: usize) -> u64 {
        self.impls[op as usize][variant]
    }

    /// The instruction `site` holds when the kernel is in `profile`.
    pub fn expected_bytes(&self, site: &PatchSite, profile: Profile) -> Result<[u8; SITE_LEN], PatchError> {
        let target = self.implementation(site.op, profile.variant(site.op.dimension()));
        encode_rel32(site.opcode, site.addr, target).ok_or(PatchError::OutOfRange {
            addr: site.addr,
            op: site.op.name(),
            target,
        })
    }

    /// Checks every site holds the `from` instruction; returns the writes
    /// that switch them all to `to`. Writes nothing.
    pub fn plan(&self, mem: &impl GuestText, from: Profile, to: Profile) -> Result<PatchPlan, PatchError> {
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
            writes.push((site.addr, found, self.expected_bytes(site, to)?));
        }
        Ok(PatchPlan { from, to, writes })
    }

    /// The profile every site is in, read back from guest memory, or an
    /// error naming a site that fits no variant the others allow. A
    /// dimension without sites (the idle policy) cannot be read from the
    /// text: it is taken from `siteless`.
    pub fn current_profile(&self, mem: &impl GuestText, siteless: Profile) -> Result<Profile, PatchError> {
        let mut profile = BUILD_PROFILE;
        for d in Dimension::ALL {
            if !d.has_sites() {
                profile = profile.with_variant(d, siteless.variant(d)).unwrap_or(profile);
                continue;
            }
            let mut candidates = vec![true; d.variants().len()];
            for site in self.sites.iter().filter(|s| s.op.dimension() == d) {
                let mut found = [0u8; SITE_LEN];
                if !mem.read_text(site.addr, &mut found) {
                    return Err(PatchError::OutsideMemory(site.addr));
                }
                let target = match decode_rel32(site.addr, found) {
                    Some((op, t)) if op == site.opcode => Some(t),
                    _ => None,
                };
                for (v, ok) in candidates.iter_mut().enumerate() {
                    *ok &= target == Some(self.implementation(site.op, v));
                }
                if !candidates.contains(&true) {
                    return Err(PatchError::Inconsistent { dimension: d.name(), addr: site.addr, op: site.op.name() });
                }
            }
            // The table tells every pair apart: one candidate is left.
            let v = candidates.iter().position(|&ok| ok).unwrap_or(0);
            profile = profile.with_variant(d, v).unwrap_or(profile);
        }
        Ok(profile)
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

    /// Whether every site the plan rewrites still holds the bytes the plan
    /// read: a plan made before its caller stopped whatever could change
    /// the text is checked with this, in the stop, before [`apply`](Self::apply).
    pub fn still_holds(&self, mem: &impl GuestText) -> Result<(), PatchError> {
        for (addr, old, _) in &self.writes {
            let mut now = [0u8; SITE_LEN];
            if !mem.read_text(*addr, &mut now) || now != *old {
                return Err(PatchError::Changed(*addr));
            }
        }
        Ok(())
    }

    /// Writes every site, all or none: every address was read successfully
    /// by `plan`, so a failed write means guest memory changed under the
    /// caller; the sites written before it get their old bytes back, and
    /// the error says whether that worked.
    pub fn apply(&self, mem: &impl GuestText) -> Result<usize, PatchError> {
        for (i, (addr, _, new)) in self.writes.iter().enumerate() {
            if !mem.write_text(*addr, new) {
                let undone = self.writes[..i].iter().rev().all(|(a, old, _)| mem.write_text(*a, old));
                return Err(if undone {
                    PatchError::OutsideMemory(*addr)
                } else {
                    PatchError::HalfPatched { addr: *addr, written: i }
                });
            }
        }
        Ok(self.writes.len())
    }
}

/// Each implementation's function extent: the sized function symbol that
/// starts at its address.
fn impl_extents(file: &ElfFile64<'_, Endianness>, impls: &Impls) -> Vec<ImplExtent> {
    let mut out: Vec<ImplExtent> = Vec::new();
    for op in SiteOp::ALL {
        for (variant, &start) in impls[op as usize].iter().enumerate().take(op.dimension().variants().len()) {
            let size = file
                .symbols()
                .filter(|s| s.kind() == SymbolKind::Text && s.address() == start && s.size() > 0)
                .map(|s| s.size())
                .max();
            if let Some(size) = size
                && !out.iter().any(|e| e.start == start && e.op == op)
            {
                out.push(ImplExtent { start, end: start.saturating_add(size), op, variant });
            }
        }
    }
    out
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
    const RESCHED: u64 = 0x1200;
    const NOP: u64 = 0x1210;
    const PREEMPT: u64 = 0x1220;
    const HARD: u64 = 0x1300;
    const THREADED: u64 = 0x1310;

    /// PREEMPT_DYNAMIC's table: none / voluntary / full.
    fn impls() -> Impls {
        let mut impls = [[0u64; Dimension::MAX_VARIANTS]; SiteOp::COUNT];
        for (i, op) in [SiteOp::Lock, SiteOp::Unlock, SiteOp::TryLock].iter().enumerate() {
            impls[*op as usize] = [ML_LOCK + 0x10 * i as u64, RT_LOCK + 0x10 * i as u64, 0];
        }
        impls[SiteOp::CondResched as usize] = [RESCHED, RESCHED, NOP];
        impls[SiteOp::MightResched as usize] = [NOP, RESCHED, NOP];
        impls[SiteOp::PreemptResched as usize] = [NOP, NOP, PREEMPT];
        impls[SiteOp::IrqExitResched as usize] = [NOP, NOP, PREEMPT];
        impls[SiteOp::IrqDispatch as usize] = [HARD, THREADED, 0];
        impls
    }

    fn table(sites: &[(u64, SiteOp)]) -> SiteTable {
        SiteTable {
            sites: sites.iter().map(|&(addr, op)| PatchSite { addr, op, opcode: OPCODE_CALL_REL32 }).collect(),
            impls: impls(),
            impl_extents: vec![ImplExtent { start: RT_LOCK, end: RT_LOCK + 0x40, op: SiteOp::Lock, variant: 1 }],
        }
    }

    /// One site of every operation.
    fn full_table() -> SiteTable {
        table(&SiteOp::ALL.iter().enumerate().map(|(i, &op)| (0x2000 + 0x10 * i as u64, op)).collect::<Vec<_>>())
    }

    fn mem_in(t: &SiteTable, mode: Profile) -> Mem {
        let m = Mem(RefCell::new(vec![0x90; 0x4000]));
        for s in t.sites() {
            m.write_text(s.addr, &t.expected_bytes(s, mode).unwrap());
        }
        m
    }

    /// Memory whose writes at one address fail (reads still work).
    struct FailingWrites<'a> {
        mem: &'a Mem,
        fail_at: u64,
    }

    impl GuestText for FailingWrites<'_> {
        fn read_text(&self, addr: u64, buf: &mut [u8]) -> bool {
            self.mem.read_text(addr, buf)
        }
        fn write_text(&self, addr: u64, bytes: &[u8]) -> bool {
            addr != self.fail_at && self.mem.write_text(addr, bytes)
        }
    }

    #[test]
    fn a_failed_write_leaves_every_site_as_it_was() {
        let t = full_table();
        let m = mem_in(&t, Profile::MAINLINE);
        let before = m.0.borrow().clone();
        let last = t.sites().last().unwrap().addr;
        let failing = FailingWrites { mem: &m, fail_at: last };
        let plan = t.plan(&failing, Profile::MAINLINE, Profile::RT).unwrap();
        assert_eq!(plan.apply(&failing), Err(PatchError::OutsideMemory(last)));
        assert!(*m.0.borrow() == before, "the sites written before the failure were restored");
        assert_eq!(t.current_profile(&m, Profile::MAINLINE), Ok(Profile::MAINLINE));
    }

    #[test]
    fn instruction_pointers_in_switchable_code_are_found() {
        let t = full_table();
        let site = t.sites()[0];
        assert_eq!(t.switchable_code_at(site.addr), Some(SwitchableCode::Site { addr: site.addr, op: site.op }));
        assert_eq!(t.switchable_code_at(site.addr + 4), Some(SwitchableCode::Site { addr: site.addr, op: site.op }));
        assert_eq!(t.switchable_code_at(site.addr + 5), None);
        assert_eq!(
            t.switchable_code_at(RT_LOCK + 0x3f),
            Some(SwitchableCode::Implementation { start: RT_LOCK, op: SiteOp::Lock, variant: 1 })
        );
        assert_eq!(t.switchable_code_at(RT_LOCK + 0x40), None);
        assert_eq!(t.switchable_code_at(0x10), None);
    }

    fn target_at(m: &Mem, addr: u64) -> Option<u64> {
        let mut b = [0u8; 5];
        m.read_text(addr, &mut b);
        decode_rel32(addr, b).map(|(_, t)| t)
    }

    #[test]
    fn plan_and_apply_switch_every_site() {
        let t = table(&[(0x2000, SiteOp::Lock), (0x2010, SiteOp::Unlock), (0x2020, SiteOp::TryLock)]);
        let m = mem_in(&t, Profile::MAINLINE);
        let plan = t.plan(&m, Profile::MAINLINE, Profile::RT).unwrap();
        assert_eq!(plan.apply(&m), Ok(3));
        assert_eq!(target_at(&m, 0x2000), Some(RT_LOCK));
        assert_eq!(target_at(&m, 0x2010), Some(RT_LOCK + 0x10));
        // and back
        t.plan(&m, Profile::RT, Profile::MAINLINE).unwrap().apply(&m).unwrap();
        assert_eq!(target_at(&m, 0x2000), Some(ML_LOCK));
    }

    #[test]
    fn a_plan_made_before_the_text_changed_says_so_and_writes_nothing() {
        let t = table(&[(0x2000, SiteOp::Lock), (0x2010, SiteOp::Unlock)]);
        let m = mem_in(&t, Profile::MAINLINE);
        let plan = t.plan(&m, Profile::MAINLINE, Profile::RT).unwrap();
        assert_eq!(plan.still_holds(&m), Ok(()));
        // Someone switched the text meanwhile: the old plan is stale.
        t.plan(&m, Profile::MAINLINE, Profile::RT).unwrap().apply(&m).unwrap();
        assert_eq!(plan.still_holds(&m), Err(PatchError::Changed(0x2000)));
    }

    #[test]
    fn every_profile_reads_back_as_itself_after_a_switch_from_any_other() {
        let t = full_table();
        assert_eq!(t.check_discriminated(), Ok(()));
        for from in Profile::all() {
            for to in Profile::all() {
                let m = mem_in(&t, from);
                assert_eq!(t.current_profile(&m, from), Ok(from));
                t.plan(&m, from, to).unwrap().apply(&m).unwrap();
                // The sites read back as `to`; the idle policy, which no
                // site shows, is whatever the caller says.
                assert_eq!(t.current_profile(&m, from), Ok(Profile { idle: from.idle, ..to }), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn preemption_sites_follow_preempt_dynamic() {
        let t = full_table();
        use crate::profile::PreemptModel;
        let at = |p: PreemptModel, op: SiteOp| {
            let m = mem_in(&t, Profile { preempt: p, ..Profile::MAINLINE });
            target_at(&m, 0x2000 + 0x10 * op as u64)
        };
        assert_eq!(at(PreemptModel::None, SiteOp::CondResched), Some(RESCHED));
        assert_eq!(at(PreemptModel::None, SiteOp::MightResched), Some(NOP));
        assert_eq!(at(PreemptModel::Voluntary, SiteOp::MightResched), Some(RESCHED));
        assert_eq!(at(PreemptModel::Voluntary, SiteOp::IrqExitResched), Some(NOP));
        assert_eq!(at(PreemptModel::Full, SiteOp::CondResched), Some(NOP));
        assert_eq!(at(PreemptModel::Full, SiteOp::PreemptResched), Some(PREEMPT));
        assert_eq!(at(PreemptModel::Full, SiteOp::IrqExitResched), Some(PREEMPT));
    }

    #[test]
    fn a_dimension_whose_sites_cannot_tell_variants_apart_is_refused() {
        // Only cond_resched: none and voluntary look the same.
        let t = table(&[(0x2000, SiteOp::Lock), (0x2010, SiteOp::CondResched), (0x2020, SiteOp::IrqDispatch)]);
        assert_eq!(
            t.check_discriminated(),
            Err(PatchError::Undiscriminated { dimension: "preempt", a: "none", b: "voluntary" })
        );
        let t = table(&[(0x2000, SiteOp::Lock), (0x2010, SiteOp::CondResched), (0x2020, SiteOp::MightResched)]);
        assert!(matches!(t.check_discriminated(), Err(PatchError::Undiscriminated { dimension: "irq", .. })));
    }

    #[test]
    fn one_bad_site_means_nothing_is_written() {
        let t = full_table();
        let m = mem_in(&t, Profile::MAINLINE);
        let bad = 0x2000 + 0x10 * SiteOp::IrqDispatch as u64;
        m.write_text(bad, &[0xcc; 5]);
        let before = m.0.borrow().clone();
        let err = t.plan(&m, Profile::MAINLINE, Profile::RT).unwrap_err();
        assert!(
            matches!(err, PatchError::Mismatch { addr, found: [0xcc, 0xcc, 0xcc, 0xcc, 0xcc], .. } if addr == bad),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("{bad:#x}")), "{err}");
        assert_eq!(*m.0.borrow(), before, "a failed plan writes nothing");
        assert_eq!(
            t.current_profile(&m, Profile::MAINLINE),
            Err(PatchError::Inconsistent { dimension: "irq", addr: bad, op: "irq_dispatch" })
        );
    }

    #[test]
    fn sites_of_one_dimension_that_disagree_are_inconsistent() {
        let t = table(&[
            (0x2000, SiteOp::Lock),
            (0x2010, SiteOp::Unlock),
            (0x2020, SiteOp::MightResched),
            (0x2030, SiteOp::PreemptResched),
            (0x2040, SiteOp::CondResched),
            (0x2050, SiteOp::IrqDispatch),
        ]);
        let m = mem_in(&t, Profile::MAINLINE);
        // unlock in rt while lock is in mainline
        m.write_text(0x2010, &encode_rel32(OPCODE_CALL_REL32, 0x2010, RT_LOCK + 0x10).unwrap());
        assert_eq!(
            t.current_profile(&m, Profile::MAINLINE),
            Err(PatchError::Inconsistent { dimension: "locks", addr: 0x2010, op: "unlock" })
        );
    }

    #[test]
    fn plan_from_the_wrong_mode_is_refused() {
        let t = table(&[(0x2000, SiteOp::Lock)]);
        let m = mem_in(&t, Profile::RT);
        assert!(matches!(t.plan(&m, Profile::MAINLINE, Profile::RT), Err(PatchError::Mismatch { .. })));
        // A profile that differs only in another dimension expects the same lock bytes.
        let p = Profile { preempt: crate::profile::PreemptModel::None, ..Profile::RT };
        assert!(t.plan(&m, p, Profile::MAINLINE).is_ok());
    }

    #[test]
    fn sites_outside_memory_are_refused() {
        let t = table(&[(0x10_0000, SiteOp::Lock)]);
        let m = Mem(RefCell::new(vec![0; 0x100]));
        assert_eq!(t.plan(&m, Profile::MAINLINE, Profile::RT), Err(PatchError::OutsideMemory(0x10_0000)));
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
