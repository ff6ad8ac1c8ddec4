//! Loading the guest kernel. The ELF is parsed once, [`parse`], before
//! guest memory exists; [`Kernel::load`] then copies it in.
//!
//! Which library does what:
//! - **`object`** parses the image, once, and everything the VMM reads from
//!   the ELF comes from that one parse: the checks (x86-64, executable,
//!   segments inside guest memory above the boot area and not overlapping,
//!   entry in an executable segment, the rtswitch ABI note), what the VMM
//!   needs to know of the kernel ([`KernelInfo`]: entry, end, text pages),
//!   and the patch-site tables (`switcher::patch::SiteTable`, read from the
//!   same parsed file, never from guest memory).
//! - **`linux-loader`** copies the loadable segments into guest memory at
//!   their physical addresses (it reads the program headers again to do
//!   so: that is its interface). Its result (entry, end) is checked
//!   against the parse, so the two readings of the file cannot disagree
//!   unnoticed.
//!
//! Everything is checked on the whole file before a byte is loaded, so a
//! refused kernel leaves guest memory untouched and the error names what
//! was wrong.

use std::io::Cursor;

use linux_loader::loader::{KernelLoader, elf::Elf};
use object::elf::{EM_X86_64, ET_EXEC, PF_X, PT_LOAD};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, FileKind};
use switcher::abi::{AbiNote, KERNEL_LOAD_ADDR, NOTE_NAME, NOTE_TYPE_ABI};
use switcher::elf::AlignedImage;
use switcher::patch::{PatchError, SiteTable};
use vm_memory::GuestAddress;

use crate::vstate::memory::GuestMemory;

/// Guest page size.
const PAGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("cannot read kernel file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("kernel is not an ELF file (bad magic); --kernel needs an x86-64 ELF executable built for rtswitch")]
    NotElf,
    #[error("kernel is a 32-bit ELF; rtswitch boots 64-bit (ELFCLASS64, x86-64) kernels only")]
    Not64Bit,
    #[error("kernel ELF is big-endian; x86-64 kernels are little-endian")]
    BigEndian,
    #[error("kernel ELF is for machine {0}, not x86-64 (EM_X86_64 = 62)")]
    WrongMachine(u16),
    #[error("kernel ELF has type {0}, not an executable (ET_EXEC); link it statically at its load address")]
    NotExecutable(u16),
    #[error("kernel ELF is malformed: {0}")]
    Malformed(String),
    #[error("kernel ELF has no loadable segment")]
    NoSegments,
    #[error(
        "kernel segment {index} [{start:#x}, {end:#x}) does not fit guest memory [{min:#x}, {mem:#x}); \
         give more --memory or link the kernel at {min:#x} or above"
    )]
    SegmentOutside { index: usize, start: u64, end: u64, min: u64, mem: u64 },
    #[error(
        "kernel segments {first} [{first_start:#x}, {first_end:#x}) and {second} [{second_start:#x}, {second_end:#x}) \
         overlap in guest memory"
    )]
    SegmentsOverlap {
        first: usize,
        first_start: u64,
        first_end: u64,
        second: usize,
        second_start: u64,
        second_end: u64,
    },
    #[error("kernel entry point {0:#x} is not inside an executable loadable segment")]
    BadEntry(u64),
    #[error(
        "kernel ELF lacks the rtswitch ABI note (section .note.rtswitch, name \"rtswitch\"); it was not built for rtswitch"
    )]
    MissingAbiNote,
    #[error("kernel ABI note has magic {found:#x}, expected {expected:#x}")]
    BadAbiMagic { found: u64, expected: u64 },
    #[error("kernel speaks rtswitch ABI version {found}, this VMM speaks version {expected}; rebuild the kernel")]
    AbiVersion { found: u32, expected: u32 },
    #[error("kernel call sites: {0}")]
    Sites(#[from] PatchError),
    #[error("loading the kernel into guest memory failed: {0}")]
    Load(String),
    #[error(
        "linux-loader loaded the kernel with entry {loaded_entry:#x} and end {loaded_end:#x}, but the ELF says entry \
         {entry:#x} and end {end:#x}; the two readings of the file disagree: report this as a bug"
    )]
    LoadMismatch { loaded_entry: u64, loaded_end: u64, entry: u64, end: u64 },
}

/// What the VMM needs to know about a loaded kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub entry: u64,
    /// End of the highest segment in memory (bss included).
    pub end: u64,
    /// The whole pages of the executable segment that holds the entry (its
    /// text): the VMM maps them read-only for the guest.
    pub text: std::ops::Range<u64>,
}

/// A guest kernel image, parsed and validated: what the VMM needs of it.
#[derive(Debug)]
pub struct Kernel<'a> {
    image: &'a [u8],
    pub info: KernelInfo,
    /// The patch-site tables, read from the ELF.
    pub sites: SiteTable,
}

/// Parses `image` (once, with `object`) and checks that it is a kernel this
/// VMM can boot in `memory_bytes`, its patch-site tables included.
pub fn parse(image: &[u8], memory_bytes: u64) -> Result<Kernel<'_>, LoaderError> {
    if image.len() < 4 || &image[..4] != b"\x7fELF" {
        return Err(LoaderError::NotElf);
    }
    match FileKind::parse(image) {
        Ok(FileKind::Elf64) => {}
        Ok(FileKind::Elf32) => return Err(LoaderError::Not64Bit),
        Ok(_) | Err(_) => return Err(LoaderError::Malformed("unrecognised ELF header".into())),
    }
    // object reads ELF structures in place and needs them 8-byte aligned.
    let aligned = AlignedImage::new(image);
    let file = ElfFile64::<Endianness>::parse(aligned.bytes()).map_err(|e| LoaderError::Malformed(e.to_string()))?;
    let info = validate(&file, memory_bytes)?;
    let sites = SiteTable::from_elf_file(&file)?;
    Ok(Kernel { image, info, sites })
}

/// The checks of the module comment, on the parsed file.
fn validate(file: &ElfFile64<'_, Endianness>, memory_bytes: u64) -> Result<KernelInfo, LoaderError> {
    let image = file.data();
    let header = file.elf_header();
    let endian = file.endian();
    if !header.is_little_endian() {
        return Err(LoaderError::BigEndian);
    }
    let machine = header.e_machine(endian);
    if machine != EM_X86_64 {
        return Err(LoaderError::WrongMachine(machine));
    }
    let kind = header.e_type(endian);
    if kind != ET_EXEC {
        return Err(LoaderError::NotExecutable(kind));
    }
    let entry = header.e_entry(endian);
    let mut end = 0u64;
    let mut entry_ok = false;
    let mut text = 0..0;
    let mut loads = 0;
    // [start, end) of every non-empty loadable segment, to refuse overlaps:
    // a later segment would silently overwrite an earlier one's bytes.
    let mut placed: Vec<(u64, u64, usize)> = Vec::new();
    for (index, ph) in file.elf_program_headers().iter().enumerate() {
        if ph.p_type(endian) != PT_LOAD {
            continue;
        }
        loads += 1;
        let start = ph.p_paddr(endian);
        let memsz = ph.p_memsz(endian);
        let filesz = ph.p_filesz(endian);
        let seg_end =
            start.checked_add(memsz).ok_or_else(|| LoaderError::Malformed(format!("segment {index} wraps around")))?;
        if filesz > memsz {
            return Err(LoaderError::Malformed(format!(
                "segment {index} has p_filesz {filesz:#x} > p_memsz {memsz:#x}"
            )));
        }
        let off = ph.p_offset(endian);
        if off.checked_add(filesz).is_none_or(|e| e > image.len() as u64) {
            return Err(LoaderError::Malformed(format!("segment {index} lies past the end of the file")));
        }
        if start < KERNEL_LOAD_ADDR || seg_end > memory_bytes {
            return Err(LoaderError::SegmentOutside {
                index,
                start,
                end: seg_end,
                min: KERNEL_LOAD_ADDR,
                mem: memory_bytes,
            });
        }
        if let Some(&(s, e, other)) = placed.iter().find(|&&(s, e, _)| start < e && s < seg_end) {
            return Err(LoaderError::SegmentsOverlap {
                first: other,
                first_start: s,
                first_end: e,
                second: index,
                second_start: start,
                second_end: seg_end,
            });
        }
        if memsz > 0 {
            placed.push((start, seg_end, index));
        }
        if ph.p_flags(endian) & PF_X != 0 && (start..seg_end).contains(&entry) {
            entry_ok = true;
            // Whole pages only: a page shared with another segment stays writable.
            let (lo, hi) = (start.next_multiple_of(PAGE), seg_end / PAGE * PAGE);
            text = if lo < hi { lo..hi } else { 0..0 };
        }
        end = end.max(seg_end);
    }
    if loads == 0 {
        return Err(LoaderError::NoSegments);
    }
    if !entry_ok {
        return Err(LoaderError::BadEntry(entry));
    }
    check_abi_note(file)?;
    Ok(KernelInfo { entry, end, text })
}

fn check_abi_note(file: &ElfFile64<Endianness>) -> Result<(), LoaderError> {
    let endian = file.endian();
    let data = file.data();
    for ph in file.elf_program_headers() {
        let Ok(Some(mut notes)) = ph.notes(endian, data) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() != &NOTE_NAME[..NOTE_NAME.len() - 1] || note.n_type(endian) != NOTE_TYPE_ABI {
                continue;
            }
            let found = AbiNote::decode(note.desc())
                .ok_or_else(|| LoaderError::Malformed("ABI note descriptor is shorter than 16 bytes".into()))?;
            if found.magic != AbiNote::CURRENT.magic {
                return Err(LoaderError::BadAbiMagic { found: found.magic, expected: AbiNote::CURRENT.magic });
            }
            if found.version != AbiNote::CURRENT.version {
                return Err(LoaderError::AbiVersion { found: found.version, expected: AbiNote::CURRENT.version });
            }
            return Ok(());
        }
    }
    Err(LoaderError::MissingAbiNote)
}

impl Kernel<'_> {
    /// Copies the kernel's loadable segments into `mem` at their physical
    /// addresses (linux-loader), and checks what it loaded against the
    /// parse: the same entry, and no byte beyond the kernel's end.
    pub fn load(&self, mem: &GuestMemory) -> Result<(), LoaderError> {
        let loaded = Elf::load(mem, None, &mut Cursor::new(self.image), Some(GuestAddress(KERNEL_LOAD_ADDR)))
            .map_err(|e| LoaderError::Load(e.to_string()))?;
        let (loaded_entry, loaded_end) = (loaded.kernel_load.0, loaded.kernel_end);
        // linux-loader's end leaves out segments with no file bytes (all
        // bss), which the parse counts: it may be lower, never higher.
        if loaded_entry != self.info.entry || loaded_end > self.info.end {
            let (entry, end) = (self.info.entry, self.info.end);
            return Err(LoaderError::LoadMismatch { loaded_entry, loaded_end, entry, end });
        }
        Ok(())
    }
}

/// Reads a kernel file from disk.
pub fn read_kernel_file(path: &std::path::Path) -> Result<Vec<u8>, LoaderError> {
    std::fs::read(path).map_err(|e| LoaderError::Read(path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_kernel_validates() {
        let info = parse(crate::DEFAULT_KERNEL, 128 << 20).unwrap().info;
        assert!(info.entry >= KERNEL_LOAD_ADDR);
        assert!(info.end > info.entry);
        assert!(
            info.text.contains(&info.entry)
                && info.text.start.is_multiple_of(PAGE)
                && info.text.end.is_multiple_of(PAGE)
        );
    }

    #[test]
    fn validates_unaligned_images() {
        let mut buf = vec![0u8; crate::DEFAULT_KERNEL.len() + 1];
        buf[1..].copy_from_slice(crate::DEFAULT_KERNEL);
        let unaligned = &buf[1..];
        assert_ne!(unaligned.as_ptr().align_offset(8), 0);
        let (a, b) = (parse(unaligned, 128 << 20).unwrap(), parse(crate::DEFAULT_KERNEL, 128 << 20).unwrap());
        assert_eq!((a.info, a.sites), (b.info, b.sites));
    }

    #[test]
    fn refuses_non_elf() {
        assert!(matches!(parse(b"#!/bin/sh\necho hi\n", 128 << 20), Err(LoaderError::NotElf)));
        assert!(matches!(parse(b"", 128 << 20), Err(LoaderError::NotElf)));
    }

    #[test]
    fn refuses_32_bit() {
        let mut image = crate::DEFAULT_KERNEL.to_vec();
        image[4] = 1; // EI_CLASS = ELFCLASS32
        assert!(matches!(parse(&image, 128 << 20), Err(LoaderError::Not64Bit)));
    }

    #[test]
    fn refuses_wrong_machine() {
        let mut image = crate::DEFAULT_KERNEL.to_vec();
        image[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        assert!(matches!(parse(&image, 128 << 20), Err(LoaderError::WrongMachine(183))));
    }

    #[test]
    fn refuses_kernel_that_does_not_fit() {
        let err = parse(crate::DEFAULT_KERNEL, 1 << 20).unwrap_err();
        assert!(matches!(err, LoaderError::SegmentOutside { .. }), "{err}");
        assert!(err.to_string().contains("does not fit guest memory"));
    }

    #[test]
    fn refuses_overlapping_segments() {
        // Move the second non-empty PT_LOAD onto the middle of the first
        // (Elf64_Phdr: p_type +0, p_vaddr +16, p_paddr +24, p_memsz +40).
        let mut image = crate::DEFAULT_KERNEL.to_vec();
        let u64_at = |img: &[u8], off: usize| u64::from_le_bytes(img[off..off + 8].try_into().unwrap());
        let phoff = u64_at(&image, 0x20) as usize;
        let (phentsize, phnum) = (image[0x36] as usize, image[0x38] as usize);
        let loads: Vec<usize> = (0..phnum)
            .map(|i| phoff + i * phentsize)
            .filter(|&ph| image[ph..ph + 4] == PT_LOAD.to_le_bytes() && u64_at(&image, ph + 40) > 0)
            .collect();
        let target = u64_at(&image, loads[0] + 24) + u64_at(&image, loads[0] + 40) / 2;
        image[loads[1] + 16..loads[1] + 24].copy_from_slice(&target.to_le_bytes());
        image[loads[1] + 24..loads[1] + 32].copy_from_slice(&target.to_le_bytes());
        let err = parse(&image, 128 << 20).unwrap_err();
        assert!(matches!(err, LoaderError::SegmentsOverlap { .. }), "{err}");
        assert!(err.to_string().contains("overlap in guest memory"), "{err}");
        // Segments that touch end to end are fine (the embedded kernel's).
        assert!(parse(crate::DEFAULT_KERNEL, 128 << 20).is_ok());
    }

    #[test]
    fn refuses_kernel_without_abi_note() {
        let mut image = crate::DEFAULT_KERNEL.to_vec();
        let pos = image.windows(9).position(|w| w == NOTE_NAME).expect("the embedded kernel has the note");
        image[pos] = b'X';
        assert!(matches!(parse(&image, 128 << 20), Err(LoaderError::MissingAbiNote)));
    }

    #[test]
    fn refuses_wrong_abi_version() {
        let mut image = crate::DEFAULT_KERNEL.to_vec();
        let pos = image.windows(9).position(|w| w == NOTE_NAME).unwrap();
        // name (9 bytes padded to 12), then magic (8), then version.
        let v = pos + 12 + 8;
        image[v..v + 4].copy_from_slice(&99u32.to_le_bytes());
        assert!(matches!(parse(&image, 128 << 20), Err(LoaderError::AbiVersion { found: 99, .. })));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 96, ..Default::default() })]

        /// A kernel with bytes changed anywhere (most in the headers, the
        /// program headers and the notes), cut short, or random: refused
        /// with an error or accepted inside guest memory, never a panic.
        #[test]
        fn any_mutated_kernel_is_refused_or_fits(
            edits in proptest::collection::vec(
                (proptest::prop_oneof![0usize..4096, proptest::prelude::any::<usize>()], proptest::prelude::any::<u8>()),
                1..24,
            ),
            cut in proptest::option::of(proptest::prelude::any::<usize>()),
            memory_mib in 16u64..256,
        ) {
            let mut image = crate::DEFAULT_KERNEL.to_vec();
            for (at, byte) in edits {
                let i = at % image.len();
                image[i] = byte;
            }
            if let Some(c) = cut {
                image.truncate(c % image.len());
            }
            let memory = memory_mib << 20;
            if let Ok(k) = parse(&image, memory) {
                proptest::prop_assert!(k.info.entry < memory && k.info.end <= memory, "{:?}", k.info);
                let mem = crate::vstate::memory::create(memory).unwrap();
                let _ = k.load(&mem);
            }
        }
    }

    #[test]
    fn loads_into_memory() {
        let mem = crate::vstate::memory::create(128 << 20).unwrap();
        let kernel = parse(crate::DEFAULT_KERNEL, 128 << 20).unwrap();
        kernel.load(&mem).unwrap();
        let info = kernel.info;
        use vm_memory::Bytes;
        let mut at_entry = [0u8; 16];
        mem.read_slice(&mut at_entry, GuestAddress(info.entry)).unwrap();
        assert_ne!(at_entry, [0u8; 16]);
        assert!(crate::DEFAULT_KERNEL.windows(16).any(|w| w == at_entry), "the entry's bytes come from the file");
    }
}

#[cfg(test)]
mod site_table_tests {
    use switcher::abi::sites::SiteOp;
    use switcher::patch::{PatchError, SiteTable};
    use switcher::profile::{Dimension, Profile};

    use crate::vstate::memory::{self, GuestView};

    #[test]
    fn embedded_kernel_has_valid_site_tables() {
        let t = SiteTable::from_elf(crate::DEFAULT_KERNEL).expect("the embedded kernel's site tables validate");
        for op in SiteOp::ALL {
            assert!(t.sites().iter().any(|s| s.op == op), "no {} site", op.name());
        }
        for op in [SiteOp::Lock, SiteOp::Unlock, SiteOp::TryLock, SiteOp::IrqDispatch] {
            assert_ne!(t.implementation(op, 0), t.implementation(op, 1), "{}", op.name());
        }
        assert_eq!(Dimension::ALL.iter().map(|&d| t.count_in(d)).sum::<usize>(), t.len());
        // The switch's check of where held vCPUs stopped knows every lock
        // implementation's extent.
        for op in [SiteOp::Lock, SiteOp::Unlock, SiteOp::TryLock] {
            for v in 0..2 {
                let start = t.implementation(op, v);
                assert!(
                    t.impl_extents().iter().any(|e| e.start == start && e.end > start),
                    "no extent for {} variant {v}",
                    op.name()
                );
                assert!(t.switchable_code_at(start).is_some());
            }
        }
    }

    #[test]
    fn patching_the_loaded_kernel_round_trips() {
        let mem = memory::create(128 << 20).unwrap();
        let kernel = super::parse(crate::DEFAULT_KERNEL, 128 << 20).unwrap();
        kernel.load(&mem).unwrap();
        let t = kernel.sites;
        let text = GuestView::new(&mem);
        assert_eq!(t.current_profile(&text, Profile::MAINLINE), Ok(Profile::MAINLINE));
        assert_eq!(t.plan(&text, Profile::MAINLINE, Profile::RT).unwrap().apply(&text), Ok(t.len()));
        assert_eq!(t.current_profile(&text, Profile::RT), Ok(Profile::RT));
        // A second mainline->rt plan is refused: the sites are rt now.
        assert!(matches!(t.plan(&text, Profile::MAINLINE, Profile::RT), Err(PatchError::Mismatch { .. })));
        t.plan(&text, Profile::RT, Profile::MAINLINE).unwrap().apply(&text).unwrap();
        assert_eq!(t.current_profile(&text, Profile::MAINLINE), Ok(Profile::MAINLINE));
        // Every profile, reached from every other, reads back as itself.
        let mut now = Profile::MAINLINE;
        for to in Profile::all().chain(Profile::all().rev()) {
            t.plan(&text, now, to).unwrap().apply(&text).unwrap();
            assert_eq!(t.current_profile(&text, to), Ok(to));
            now = to;
        }
    }

    /// Rewrites the first `.switch_sites` entry's field at `field_off`.
    fn corrupt_first_site(field_off: usize, bytes: &[u8]) -> Vec<u8> {
        use object::{Object, ObjectSection};
        let mut image = crate::DEFAULT_KERNEL.to_vec();
        let file = object::File::parse(crate::DEFAULT_KERNEL).unwrap();
        let (off, _) = file.section_by_name(".switch_sites").unwrap().file_range().unwrap();
        let at = off as usize + field_off;
        image[at..at + bytes.len()].copy_from_slice(bytes);
        image
    }

    #[test]
    fn a_site_outside_text_is_refused() {
        let image = corrupt_first_site(0, &0x10u64.to_le_bytes());
        assert!(matches!(SiteTable::from_elf(&image), Err(PatchError::SiteOutsideText { addr: 0x10, .. })));
    }

    #[test]
    fn a_site_with_an_unknown_operation_is_refused() {
        let image = corrupt_first_site(8, &9u32.to_le_bytes());
        assert!(matches!(SiteTable::from_elf(&image), Err(PatchError::BadOp { op: 9, .. })));
    }

    #[test]
    fn a_site_not_holding_the_expected_call_is_refused() {
        let t = SiteTable::from_elf(crate::DEFAULT_KERNEL).unwrap();
        // Point the first entry at the second site's address + 1: inside
        // text, but not the start of a call to the mainline implementation.
        let second = t.sites()[1].addr;
        let image = corrupt_first_site(0, &(second + 1).to_le_bytes());
        let err = SiteTable::from_elf(&image).unwrap_err();
        assert!(matches!(err, PatchError::Mismatch { .. } | PatchError::Overlap(..)), "expected a mismatch, got {err}");
    }
}
