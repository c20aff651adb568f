//! Application images: checking an untrusted ELF and planning its load.
//!
//! Applications are static, non-PIE ELF64 x86-64 executables (`ET_EXEC`)
//! linked at [`abi::USER_MIN`] and up, read from the initrd, which the kernel
//! does not trust. [`plan`] parses an image (with the `elf` crate, and with
//! its own checks on every number it uses) and returns a [`LoadPlan`]: which
//! pages to map with which rights, which file bytes to copy where, and the
//! entry point. It never touches memory; the machine half maps frames and
//! copies bytes by following the plan.
//!
//! # What an accepted image looks like
//!
//! * The ELF header: `\x7fELF`, 64-bit, little-endian, `EM_X86_64`,
//!   `ET_EXEC`, a program header table of 56-byte entries that lies inside
//!   the file (the `PN_XNUM` escape is refused). The section header table is
//!   otherwise ignored, but must be well formed enough for the `elf` crate to
//!   locate it.
//! * At least one and at most [`MAX_LOAD_SEGMENTS`] `PT_LOAD` headers (every
//!   `PT_LOAD` counts, empty ones too). Other program headers (`PT_NOTE`,
//!   `PT_GNU_STACK`, ...) are ignored.
//! * Each `PT_LOAD` has `p_filesz <= p_memsz`. One with `p_memsz` 0 maps
//!   nothing and is skipped (not refused): linkers emit such headers and they
//!   are harmless. The file bytes `p_offset..p_offset + p_filesz` lie inside
//!   the image, and `p_vaddr` and `p_offset` are congruent modulo
//!   [`abi::PAGE_SIZE`] (both only checked when `p_filesz > 0`; a segment
//!   without file bytes gets `file_offset` 0).
//! * Each segment's pages (`p_vaddr` rounded down to `p_vaddr + p_memsz`
//!   rounded up) lie in `USER_MIN..USER_MAX` and miss both the info region
//!   (`INFO_VA..INFO_VA + INFO_REGION_SIZE`) and the initial stack
//!   (`STACK_TOP - STACK_SIZE..STACK_TOP`); no two segments share a page; the
//!   `p_memsz` of all segments adds up to at most [`MAX_TOTAL_MEMSZ`].
//! * The entry point lies in `[p_vaddr, p_vaddr + p_memsz)` of an executable
//!   (`PF_X`) segment.
//!
//! Every segment is readable ([`Rights::READ`], whatever `PF_R` says: x86
//! pages cannot be execute- or write-only), writable if `PF_W` and
//! executable if `PF_X`. Segments that are both writable and executable are
//! accepted: the environment owns its pages and could `protect` them to W+X
//! anyway, so refusing them here would protect nothing.

use abi::{
    INFO_REGION_SIZE, INFO_VA, PAGE_SIZE, Rights, STACK_SIZE, STACK_TOP, USER_MAX, USER_MIN,
};
use alloc::vec::Vec;
use elf::ElfBytes;
use elf::abi::{
    EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, EM_X86_64, ET_EXEC, PF_W, PF_X, PN_XNUM, PT_LOAD,
};
use elf::endian::AnyEndian;

/// The most `PT_LOAD` program headers an image may have.
pub const MAX_LOAD_SEGMENTS: usize = 16;

/// The most memory (the sum of every `PT_LOAD`'s `p_memsz`) an image may ask
/// for: 64 MiB.
pub const MAX_TOTAL_MEMSZ: u64 = 64 * 1024 * 1024;

/// Size of the ELF64 file header.
const EHDR_SIZE: usize = 64;
/// Size of one ELF64 program header.
const PHDR_SIZE: usize = 56;
/// The ELF magic number.
const MAGIC: [u8; 4] = *b"\x7fELF";

/// How to load an accepted image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// Where the first vCPU starts (`e_entry`), inside an executable segment.
    pub entry: u64,
    /// The segments to map, in ascending `vaddr`, no two sharing a page.
    pub segments: Vec<Segment>,
}

/// One `PT_LOAD` segment of a [`LoadPlan`]: map `pages` zeroed pages at
/// `vaddr` with `rights`, then copy `image[file_offset..][..file_len]` to
/// `copy_to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Page-aligned start of the pages to map (`p_vaddr` rounded down).
    pub vaddr: u64,
    /// Number of [`PAGE_SIZE`] pages to map (at least 1).
    pub pages: u64,
    /// [`Rights::READ`] always; [`Rights::WRITE`] if `PF_W`; [`Rights::EXEC`]
    /// if `PF_X`.
    pub rights: Rights,
    /// Where the file bytes start in the image (0 when `file_len` is 0).
    pub file_offset: usize,
    /// Number of file bytes to copy (`p_filesz`); the rest of the pages are
    /// zero.
    pub file_len: usize,
    /// Where the file bytes go (`p_vaddr`).
    pub copy_to: u64,
}

/// Why an image was refused: one variant per check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// The image does not start with the ELF magic number.
    NotElf,
    /// The image ends inside the ELF header.
    TruncatedHeader,
    /// `EI_CLASS` is not `ELFCLASS64`.
    NotElf64,
    /// `EI_DATA` is not `ELFDATA2LSB`.
    NotLittleEndian,
    /// `e_machine` is not `EM_X86_64`.
    NotX86_64,
    /// `e_type` is not `ET_EXEC` (relocatable, shared or PIE objects).
    NotExecutable,
    /// `e_phentsize` is not 56, or `e_phnum` is the `PN_XNUM` escape.
    BadProgramHeaderTable,
    /// The program header table runs past the end of the image (or its end
    /// overflows).
    ProgramHeadersOutOfBounds,
    /// The `elf` crate refused the image (bad ident version, bad section
    /// header table, ...).
    ParseFailed,
    /// There is no program header table, or no `PT_LOAD` with memory in it.
    NoLoadSegment,
    /// More than [`MAX_LOAD_SEGMENTS`] `PT_LOAD` headers.
    TooManyLoadSegments,
    /// A `PT_LOAD` has `p_filesz > p_memsz`.
    FileSizeExceedsMemSize,
    /// A `PT_LOAD`'s file bytes run past the end of the image (or their end
    /// overflows).
    FileRangeOutOfBounds,
    /// A `PT_LOAD` with file bytes has `p_vaddr` and `p_offset` that differ
    /// modulo the page size, so its bytes cannot be placed page by page.
    IncongruentSegment,
    /// A `PT_LOAD`'s end (`p_vaddr + p_memsz`, rounded up to a page)
    /// overflows.
    AddressOverflow,
    /// A `PT_LOAD` reaches outside `USER_MIN..USER_MAX`.
    OutsideUserSpace,
    /// A `PT_LOAD` overlaps the kernel-owned info region.
    OverlapsInfoRegion,
    /// A `PT_LOAD` overlaps the initial stack.
    OverlapsStack,
    /// The `p_memsz` of all `PT_LOAD`s adds up to more than
    /// [`MAX_TOTAL_MEMSZ`].
    TooMuchMemory,
    /// Two `PT_LOAD`s share a page.
    OverlappingSegments,
    /// The entry point is not inside an executable segment.
    EntryNotExecutable,
}

impl ElfError {
    /// A short sentence saying what is wrong, for the console.
    pub fn reason(&self) -> &'static str {
        match self {
            ElfError::NotElf => "not an ELF file: bad magic number",
            ElfError::TruncatedHeader => "truncated: the file ends inside the ELF header",
            ElfError::NotElf64 => "not a 64-bit ELF file",
            ElfError::NotLittleEndian => "not a little-endian ELF file",
            ElfError::NotX86_64 => "not an x86-64 executable",
            ElfError::NotExecutable => "not a static executable (e_type is not ET_EXEC)",
            ElfError::BadProgramHeaderTable => {
                "bad program header table: wrong entry size or PN_XNUM entry count"
            }
            ElfError::ProgramHeadersOutOfBounds => {
                "truncated: program header table runs past the end of the file"
            }
            ElfError::ParseFailed => "malformed ELF file: the elf parser refused it",
            ElfError::NoLoadSegment => "no loadable segment",
            ElfError::TooManyLoadSegments => "too many loadable segments (more than 16)",
            ElfError::FileSizeExceedsMemSize => "a segment's file size exceeds its memory size",
            ElfError::FileRangeOutOfBounds => {
                "truncated: a segment's file bytes run past the end of the file"
            }
            ElfError::IncongruentSegment => {
                "a segment's address and file offset differ modulo the page size"
            }
            ElfError::AddressOverflow => "a segment's end address overflows",
            ElfError::OutsideUserSpace => "a segment lies outside the user address range",
            ElfError::OverlapsInfoRegion => "a segment overlaps the kernel's info region",
            ElfError::OverlapsStack => "a segment overlaps the initial stack",
            ElfError::TooMuchMemory => "the segments need more than 64 MiB of memory",
            ElfError::OverlappingSegments => "overlapping segments: two segments share a page",
            ElfError::EntryNotExecutable => "the entry point is not in an executable segment",
        }
    }
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.reason())
    }
}

/// Little-endian `u16` at `at` (the caller has checked the bounds).
fn u16_at(image: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([image[at], image[at + 1]])
}

/// Little-endian `u64` at `at` (the caller has checked the bounds).
fn u64_at(image: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&image[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Whether `[start, end)` and `[lo, hi)` share an address.
fn overlaps(start: u64, end: u64, lo: u64, hi: u64) -> bool {
    start < hi && end > lo
}

/// Checks the ELF header by hand: identification, machine, type and the
/// program header table's place. Returns `(e_phoff, e_phnum)`.
fn check_header(image: &[u8]) -> Result<(usize, usize), ElfError> {
    let magic_len = image.len().min(MAGIC.len());
    if image[..magic_len] != MAGIC[..magic_len] {
        return Err(ElfError::NotElf);
    }
    match image.get(EI_CLASS) {
        None => return Err(ElfError::TruncatedHeader),
        Some(&ELFCLASS64) => {}
        Some(_) => return Err(ElfError::NotElf64),
    }
    match image.get(EI_DATA) {
        None => return Err(ElfError::TruncatedHeader),
        Some(&ELFDATA2LSB) => {}
        Some(_) => return Err(ElfError::NotLittleEndian),
    }
    if image.len() < EHDR_SIZE {
        return Err(ElfError::TruncatedHeader);
    }
    if u16_at(image, 18) != EM_X86_64 {
        return Err(ElfError::NotX86_64);
    }
    if u16_at(image, 16) != ET_EXEC {
        return Err(ElfError::NotExecutable);
    }
    let phoff = u64_at(image, 32);
    let phentsize = usize::from(u16_at(image, 54));
    let phnum = u16_at(image, 56);
    if phoff == 0 || phnum == 0 {
        return Err(ElfError::NoLoadSegment);
    }
    if phentsize != PHDR_SIZE || phnum == PN_XNUM {
        return Err(ElfError::BadProgramHeaderTable);
    }
    let phnum = usize::from(phnum);
    let phoff = usize::try_from(phoff).map_err(|_| ElfError::ProgramHeadersOutOfBounds)?;
    let end = phoff.checked_add(phnum * PHDR_SIZE).ok_or(ElfError::ProgramHeadersOutOfBounds)?;
    if end > image.len() {
        return Err(ElfError::ProgramHeadersOutOfBounds);
    }
    Ok((phoff, phnum))
}

/// A checked `PT_LOAD`: its plan entry and what the entry check needs.
struct Checked {
    segment: Segment,
    /// `p_vaddr + p_memsz`.
    end: u64,
}

/// Checks one `PT_LOAD` on its own; `None` for one that maps nothing.
fn check_load(
    image: &[u8],
    phdr: &elf::segment::ProgramHeader,
) -> Result<Option<Checked>, ElfError> {
    if phdr.p_filesz > phdr.p_memsz {
        return Err(ElfError::FileSizeExceedsMemSize);
    }
    if phdr.p_memsz == 0 {
        return Ok(None);
    }
    let (file_offset, file_len) = if phdr.p_filesz == 0 {
        (0, 0)
    } else {
        let offset = usize::try_from(phdr.p_offset).map_err(|_| ElfError::FileRangeOutOfBounds)?;
        let len = usize::try_from(phdr.p_filesz).map_err(|_| ElfError::FileRangeOutOfBounds)?;
        match offset.checked_add(len) {
            Some(end) if end <= image.len() => {}
            _ => return Err(ElfError::FileRangeOutOfBounds),
        }
        if phdr.p_vaddr % PAGE_SIZE != phdr.p_offset % PAGE_SIZE {
            return Err(ElfError::IncongruentSegment);
        }
        (offset, len)
    };
    let end = phdr.p_vaddr.checked_add(phdr.p_memsz).ok_or(ElfError::AddressOverflow)?;
    let page_end = end.checked_next_multiple_of(PAGE_SIZE).ok_or(ElfError::AddressOverflow)?;
    let vaddr = phdr.p_vaddr - phdr.p_vaddr % PAGE_SIZE;
    if vaddr < USER_MIN || page_end > USER_MAX {
        return Err(ElfError::OutsideUserSpace);
    }
    if overlaps(vaddr, page_end, INFO_VA, INFO_VA + INFO_REGION_SIZE) {
        return Err(ElfError::OverlapsInfoRegion);
    }
    if overlaps(vaddr, page_end, STACK_TOP - STACK_SIZE, STACK_TOP) {
        return Err(ElfError::OverlapsStack);
    }
    let mut rights = Rights::READ;
    if phdr.p_flags & PF_W != 0 {
        rights = rights.union(Rights::WRITE);
    }
    if phdr.p_flags & PF_X != 0 {
        rights = rights.union(Rights::EXEC);
    }
    Ok(Some(Checked {
        segment: Segment {
            vaddr,
            pages: (page_end - vaddr) / PAGE_SIZE,
            rights,
            file_offset,
            file_len,
            copy_to: phdr.p_vaddr,
        },
        end,
    }))
}

/// Checks `image` and plans its load.
///
/// The checks are listed in the module documentation; the first one that
/// fails (header first, then each `PT_LOAD` in file order, then overlaps,
/// then the entry point) is the error.
pub fn plan(image: &[u8]) -> Result<LoadPlan, ElfError> {
    let (_, phnum) = check_header(image)?;
    let file = ElfBytes::<AnyEndian>::minimal_parse(image).map_err(|_| ElfError::ParseFailed)?;
    let table = file.segments().ok_or(ElfError::NoLoadSegment)?;
    if table.len() != phnum {
        return Err(ElfError::ParseFailed);
    }

    let mut loads = 0;
    for i in 0..phnum {
        let phdr = table.get(i).map_err(|_| ElfError::ParseFailed)?;
        if phdr.p_type == PT_LOAD {
            loads += 1;
        }
    }
    if loads > MAX_LOAD_SEGMENTS {
        return Err(ElfError::TooManyLoadSegments);
    }

    let mut checked: Vec<Checked> = Vec::with_capacity(loads);
    let mut total: u64 = 0;
    for i in 0..phnum {
        let phdr = table.get(i).map_err(|_| ElfError::ParseFailed)?;
        if phdr.p_type != PT_LOAD {
            continue;
        }
        if let Some(c) = check_load(image, &phdr)? {
            total = total.saturating_add(phdr.p_memsz);
            if total > MAX_TOTAL_MEMSZ {
                return Err(ElfError::TooMuchMemory);
            }
            checked.push(c);
        }
    }
    if checked.is_empty() {
        return Err(ElfError::NoLoadSegment);
    }

    checked.sort_unstable_by_key(|c| c.segment.vaddr);
    for pair in checked.windows(2) {
        let (a, b) = (&pair[0].segment, &pair[1].segment);
        if a.vaddr + a.pages * PAGE_SIZE > b.vaddr {
            return Err(ElfError::OverlappingSegments);
        }
    }

    let entry = file.ehdr.e_entry;
    let executable = checked.iter().any(|c| {
        c.segment.rights.contains(Rights::EXEC) && entry >= c.segment.copy_to && entry < c.end
    });
    if !executable {
        return Err(ElfError::EntryNotExecutable);
    }

    Ok(LoadPlan { entry, segments: checked.into_iter().map(|c| c.segment).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use elf::abi::{ELFCLASS32, ELFDATA2MSB, EM_386, ET_DYN, PF_R, PT_GNU_STACK, PT_NOTE};
    use proptest::prelude::*;

    /// One program header for [`Builder`].
    #[derive(Clone, Copy)]
    struct Phdr {
        p_type: u32,
        flags: u32,
        offset: u64,
        vaddr: u64,
        filesz: u64,
        memsz: u64,
    }

    /// A hand-made ELF64 image: header, program headers right after it (at
    /// `phoff`), then zero-filled payload up to `len` bytes.
    #[derive(Clone)]
    struct Builder {
        class: u8,
        data: u8,
        e_type: u16,
        machine: u16,
        entry: u64,
        phoff: u64,
        phentsize: u16,
        /// `e_phnum`; `None` means `phdrs.len()`.
        phnum: Option<u16>,
        phdrs: Vec<Phdr>,
        len: usize,
    }

    const TEXT: Phdr = Phdr {
        p_type: PT_LOAD,
        flags: PF_R | PF_X,
        offset: 0,
        vaddr: 0x40_0000,
        filesz: 0x200,
        memsz: 0x200,
    };
    const DATA: Phdr = Phdr {
        p_type: PT_LOAD,
        flags: PF_R | PF_W,
        offset: 0x200,
        vaddr: 0x40_1200,
        filesz: 0x40,
        memsz: 0x2000,
    };
    const STACK: Phdr =
        Phdr { p_type: PT_GNU_STACK, flags: PF_R | PF_W, offset: 0, vaddr: 0, filesz: 0, memsz: 0 };

    impl Builder {
        /// A valid executable: text (R+X) at 0x400000 holding the headers and
        /// the code, data (RW, with bss) at 0x401200, and a PT_GNU_STACK.
        fn valid() -> Builder {
            Builder {
                class: ELFCLASS64,
                data: ELFDATA2LSB,
                e_type: ET_EXEC,
                machine: EM_X86_64,
                entry: 0x40_0100,
                phoff: 64,
                phentsize: 56,
                phnum: None,
                phdrs: vec![TEXT, DATA, STACK],
                len: 0x240,
            }
        }

        fn build(&self) -> Vec<u8> {
            let mut out = vec![0u8; self.len.max(64)];
            out[..4].copy_from_slice(b"\x7fELF");
            out[4] = self.class;
            out[5] = self.data;
            out[6] = 1; // EI_VERSION
            let phnum = self.phnum.unwrap_or(self.phdrs.len() as u16);
            let mut at = 16;
            let put = |out: &mut Vec<u8>, at: &mut usize, bytes: &[u8]| {
                if out.len() < *at + bytes.len() {
                    out.resize(*at + bytes.len(), 0);
                }
                out[*at..*at + bytes.len()].copy_from_slice(bytes);
                *at += bytes.len();
            };
            put(&mut out, &mut at, &self.e_type.to_le_bytes());
            put(&mut out, &mut at, &self.machine.to_le_bytes());
            put(&mut out, &mut at, &1u32.to_le_bytes()); // e_version
            put(&mut out, &mut at, &self.entry.to_le_bytes());
            put(&mut out, &mut at, &self.phoff.to_le_bytes());
            put(&mut out, &mut at, &0u64.to_le_bytes()); // e_shoff
            put(&mut out, &mut at, &0u32.to_le_bytes()); // e_flags
            put(&mut out, &mut at, &64u16.to_le_bytes()); // e_ehsize
            put(&mut out, &mut at, &self.phentsize.to_le_bytes());
            put(&mut out, &mut at, &phnum.to_le_bytes());
            put(&mut out, &mut at, &64u16.to_le_bytes()); // e_shentsize
            put(&mut out, &mut at, &0u16.to_le_bytes()); // e_shnum
            put(&mut out, &mut at, &0u16.to_le_bytes()); // e_shstrndx
            assert_eq!(at, 64);
            let mut at = self.phoff as usize;
            for p in &self.phdrs {
                put(&mut out, &mut at, &p.p_type.to_le_bytes());
                put(&mut out, &mut at, &p.flags.to_le_bytes());
                put(&mut out, &mut at, &p.offset.to_le_bytes());
                put(&mut out, &mut at, &p.vaddr.to_le_bytes());
                put(&mut out, &mut at, &p.vaddr.to_le_bytes()); // p_paddr
                put(&mut out, &mut at, &p.filesz.to_le_bytes());
                put(&mut out, &mut at, &p.memsz.to_le_bytes());
                put(&mut out, &mut at, &PAGE_SIZE.to_le_bytes()); // p_align
            }
            out.truncate(self.len.max(at));
            out
        }

        fn plan(&self) -> Result<LoadPlan, ElfError> {
            plan(&self.build())
        }
    }

    /// The valid image with its program headers replaced.
    fn with_phdrs(phdrs: &[Phdr]) -> Builder {
        let mut b = Builder::valid();
        b.phdrs = phdrs.to_vec();
        b
    }

    /// The valid image with one more PT_LOAD.
    fn with_extra(extra: Phdr) -> Builder {
        with_phdrs(&[TEXT, DATA, extra])
    }

    /// A bss-only RW segment.
    fn bss(vaddr: u64, memsz: u64) -> Phdr {
        Phdr { p_type: PT_LOAD, flags: PF_R | PF_W, offset: 0, vaddr, filesz: 0, memsz }
    }

    /// Checks what every accepted plan promises.
    fn assert_invariants(image: &[u8], plan: &LoadPlan) {
        assert!(!plan.segments.is_empty());
        assert!(plan.segments.len() <= MAX_LOAD_SEGMENTS);
        let mut prev_end = 0;
        let mut total_pages = 0;
        let mut entry_ok = false;
        for s in &plan.segments {
            assert_eq!(s.vaddr % PAGE_SIZE, 0);
            assert!(s.pages >= 1);
            let end = s.vaddr + s.pages * PAGE_SIZE;
            assert!(s.vaddr >= USER_MIN && end <= USER_MAX);
            assert!(!overlaps(s.vaddr, end, INFO_VA, INFO_VA + INFO_REGION_SIZE));
            assert!(!abi::in_info_region(s.vaddr) && !abi::in_info_region(end - 1));
            assert!(!overlaps(s.vaddr, end, STACK_TOP - STACK_SIZE, STACK_TOP));
            assert!(s.vaddr >= prev_end, "segments overlap or are out of order");
            prev_end = end;
            assert!(s.file_offset + s.file_len <= image.len());
            assert!(s.copy_to >= s.vaddr && s.copy_to - s.vaddr < PAGE_SIZE);
            assert!(s.copy_to + s.file_len as u64 <= end);
            assert!(s.rights.is_valid() && s.rights.contains(Rights::READ));
            if s.file_len > 0 {
                assert_eq!(s.copy_to % PAGE_SIZE, s.file_offset as u64 % PAGE_SIZE);
            }
            if s.rights.contains(Rights::EXEC) && plan.entry >= s.copy_to && plan.entry < end {
                entry_ok = true;
            }
            total_pages += s.pages;
        }
        assert!(entry_ok, "entry not in an executable segment");
        assert!(total_pages * PAGE_SIZE <= MAX_TOTAL_MEMSZ + 2 * PAGE_SIZE * 16);
    }

    #[test]
    fn valid_image_gives_exact_plan() {
        let image = Builder::valid().build();
        let plan = plan(&image).unwrap();
        assert_eq!(
            plan,
            LoadPlan {
                entry: 0x40_0100,
                segments: vec![
                    Segment {
                        vaddr: 0x40_0000,
                        pages: 1,
                        rights: Rights(Rights::READ.0 | Rights::EXEC.0),
                        file_offset: 0,
                        file_len: 0x200,
                        copy_to: 0x40_0000,
                    },
                    Segment {
                        vaddr: 0x40_1000,
                        pages: 3,
                        rights: Rights::RW,
                        file_offset: 0x200,
                        file_len: 0x40,
                        copy_to: 0x40_1200,
                    },
                ],
            }
        );
        assert_invariants(&image, &plan);
    }

    #[test]
    fn segments_are_sorted_and_non_load_headers_ignored() {
        let note = Phdr {
            p_type: PT_NOTE,
            flags: PF_R,
            offset: 0xffff_ffff,
            vaddr: 0,
            filesz: 0x1_0000,
            memsz: 0,
        };
        let plan = with_phdrs(&[DATA, note, TEXT, STACK]).plan().unwrap();
        let vaddrs: Vec<u64> = plan.segments.iter().map(|s| s.vaddr).collect();
        assert_eq!(vaddrs, [0x40_0000, 0x40_1000]);
    }

    #[test]
    fn empty_load_segments_are_skipped() {
        let plan = with_extra(bss(0x40_1000, 0)).plan().unwrap();
        assert_eq!(plan.segments.len(), 2);
        assert_eq!(with_phdrs(&[bss(0x50_0000, 0)]).plan(), Err(ElfError::NoLoadSegment));
    }

    #[test]
    fn writable_and_executable_is_allowed() {
        let mut text = TEXT;
        text.flags = PF_R | PF_W | PF_X;
        let plan = with_phdrs(&[text, DATA]).plan().unwrap();
        assert_eq!(plan.segments[0].rights, Rights::RWX);
    }

    #[test]
    fn bss_only_segment_has_no_file_bytes() {
        let plan = with_extra(bss(0x50_0800, 0x1000)).plan().unwrap();
        let s = plan.segments[2];
        assert_eq!((s.vaddr, s.pages, s.file_offset, s.file_len), (0x50_0000, 2, 0, 0));
        assert_eq!(s.copy_to, 0x50_0800);
    }

    #[test]
    fn every_reason_is_a_sentence() {
        assert_eq!(
            ElfError::ProgramHeadersOutOfBounds.reason(),
            "truncated: program header table runs past the end of the file"
        );
        assert_eq!(alloc::format!("{}", ElfError::NotElf), ElfError::NotElf.reason());
    }

    #[test]
    fn rejects_not_elf() {
        assert_eq!(plan(b"MZ\x90\x00 not an elf"), Err(ElfError::NotElf));
        assert_eq!(plan(b"\x7fELG"), Err(ElfError::NotElf));
        assert_eq!(plan(b"#!"), Err(ElfError::NotElf));
    }

    #[test]
    fn rejects_truncated_header() {
        assert_eq!(plan(b""), Err(ElfError::TruncatedHeader));
        assert_eq!(plan(b"\x7fEL"), Err(ElfError::TruncatedHeader));
        let image = Builder::valid().build();
        assert_eq!(plan(&image[..5]), Err(ElfError::TruncatedHeader));
        assert_eq!(plan(&image[..63]), Err(ElfError::TruncatedHeader));
    }

    #[test]
    fn rejects_32_bit() {
        let mut b = Builder::valid();
        b.class = ELFCLASS32;
        assert_eq!(b.plan(), Err(ElfError::NotElf64));
    }

    #[test]
    fn rejects_big_endian() {
        let mut b = Builder::valid();
        b.data = ELFDATA2MSB;
        assert_eq!(b.plan(), Err(ElfError::NotLittleEndian));
    }

    #[test]
    fn rejects_other_machine() {
        let mut b = Builder::valid();
        b.machine = EM_386;
        assert_eq!(b.plan(), Err(ElfError::NotX86_64));
    }

    #[test]
    fn rejects_non_executable_type() {
        let mut b = Builder::valid();
        b.e_type = ET_DYN;
        assert_eq!(b.plan(), Err(ElfError::NotExecutable));
    }

    #[test]
    fn rejects_bad_program_header_entry_size_or_count() {
        let mut b = Builder::valid();
        b.phentsize = 64;
        assert_eq!(b.plan(), Err(ElfError::BadProgramHeaderTable));
        let mut b = Builder::valid();
        b.phnum = Some(PN_XNUM);
        assert_eq!(b.plan(), Err(ElfError::BadProgramHeaderTable));
    }

    #[test]
    fn rejects_truncated_program_header_table() {
        let image = Builder::valid().build();
        // The table is at 64..232.
        assert_eq!(plan(&image[..200]), Err(ElfError::ProgramHeadersOutOfBounds));
        let mut b = Builder::valid();
        b.phnum = Some(100);
        assert_eq!(b.plan(), Err(ElfError::ProgramHeadersOutOfBounds));
        let mut image = Builder::valid().build();
        image[32..40].copy_from_slice(&u64::MAX.to_le_bytes()); // e_phoff
        assert_eq!(plan(&image), Err(ElfError::ProgramHeadersOutOfBounds));
    }

    #[test]
    fn rejects_what_the_crate_refuses() {
        let mut image = Builder::valid().build();
        image[6] = 2; // EI_VERSION
        assert_eq!(plan(&image), Err(ElfError::ParseFailed));
        let mut image = Builder::valid().build();
        image[40..48].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_shoff
        image[60..62].copy_from_slice(&1u16.to_le_bytes()); // e_shnum
        assert_eq!(plan(&image), Err(ElfError::ParseFailed));
    }

    #[test]
    fn rejects_no_load_segment() {
        assert_eq!(with_phdrs(&[STACK]).plan(), Err(ElfError::NoLoadSegment));
        let mut b = Builder::valid();
        b.phnum = Some(0);
        assert_eq!(b.plan(), Err(ElfError::NoLoadSegment));
        let mut b = Builder::valid();
        b.phoff = 0;
        b.phdrs.clear();
        assert_eq!(b.plan(), Err(ElfError::NoLoadSegment));
    }

    #[test]
    fn rejects_too_many_load_segments() {
        let mut phdrs = vec![TEXT];
        for i in 1..16 {
            phdrs.push(bss(0x40_0000 + i * 0x1000, 0x1000));
        }
        assert_eq!(with_phdrs(&phdrs).plan().unwrap().segments.len(), 16);
        phdrs.push(bss(0x50_0000, 0x1000));
        let mut b = with_phdrs(&phdrs);
        b.len = 64 + 56 * phdrs.len();
        assert_eq!(b.plan(), Err(ElfError::TooManyLoadSegments));
    }

    #[test]
    fn rejects_file_size_over_memory_size() {
        let mut data = DATA;
        data.memsz = data.filesz - 1;
        assert_eq!(with_phdrs(&[TEXT, data]).plan(), Err(ElfError::FileSizeExceedsMemSize));
        data.memsz = 0;
        assert_eq!(with_phdrs(&[TEXT, data]).plan(), Err(ElfError::FileSizeExceedsMemSize));
    }

    #[test]
    fn rejects_file_range_out_of_bounds() {
        let mut data = DATA;
        data.filesz = 0x41; // one byte past the end
        assert_eq!(with_phdrs(&[TEXT, data]).plan(), Err(ElfError::FileRangeOutOfBounds));
        let mut data = DATA;
        data.offset = u64::MAX - 0x1f;
        data.vaddr = 0x40_1fe0;
        assert_eq!(with_phdrs(&[TEXT, data]).plan(), Err(ElfError::FileRangeOutOfBounds));
    }

    #[test]
    fn rejects_incongruent_segment() {
        let mut data = DATA;
        data.vaddr = 0x40_1300;
        assert_eq!(with_phdrs(&[TEXT, data]).plan(), Err(ElfError::IncongruentSegment));
    }

    #[test]
    fn rejects_too_much_memory() {
        let big = MAX_TOTAL_MEMSZ / 2;
        let plan = with_phdrs(&[TEXT, bss(0x100_0000, big - 0x200)]).plan();
        assert!(plan.is_ok());
        assert_eq!(
            with_phdrs(&[TEXT, bss(0x100_0000, big), bss(0x500_0000, big)]).plan(),
            Err(ElfError::TooMuchMemory)
        );
    }

    #[test]
    fn rejects_address_overflow() {
        assert_eq!(
            with_extra(bss(u64::MAX - 0xfff, 0x1000)).plan(),
            Err(ElfError::AddressOverflow)
        );
        assert_eq!(
            with_extra(bss(u64::MAX - 0x1fff, 0x1001)).plan(),
            Err(ElfError::AddressOverflow)
        );
    }

    #[test]
    fn rejects_outside_user_space() {
        assert_eq!(with_extra(bss(0x3f_f000, 0x1000)).plan(), Err(ElfError::OutsideUserSpace));
        assert_eq!(
            with_extra(bss(USER_MAX - 0x1000, 0x1001)).plan(),
            Err(ElfError::OutsideUserSpace)
        );
        assert_eq!(
            with_extra(bss(0xffff_8000_0000_0000, 0x1000)).plan(),
            Err(ElfError::OutsideUserSpace)
        );
        assert!(with_extra(bss(USER_MAX - 0x1000, 0x1000)).plan().is_ok());
    }

    #[test]
    fn rejects_info_region_overlap() {
        assert_eq!(with_extra(bss(INFO_VA - 0x10, 0x20)).plan(), Err(ElfError::OverlapsInfoRegion));
        assert_eq!(
            with_extra(bss(INFO_VA + INFO_REGION_SIZE - 1, 1)).plan(),
            Err(ElfError::OverlapsInfoRegion)
        );
        assert!(with_extra(bss(INFO_VA - 0x1000, 0x1000)).plan().is_ok());
        assert!(with_extra(bss(INFO_VA + INFO_REGION_SIZE, 1)).plan().is_ok());
    }

    #[test]
    fn rejects_stack_overlap() {
        assert_eq!(
            with_extra(bss(STACK_TOP - STACK_SIZE - 0x1000, 0x1001)).plan(),
            Err(ElfError::OverlapsStack)
        );
        assert_eq!(with_extra(bss(STACK_TOP - 1, 0x10)).plan(), Err(ElfError::OverlapsStack));
        assert!(with_extra(bss(STACK_TOP, 0x1000)).plan().is_ok());
    }

    #[test]
    fn rejects_overlapping_segments() {
        // Sharing only the page 0x401000 with DATA.
        assert_eq!(with_extra(bss(0x40_1000, 0x10)).plan(), Err(ElfError::OverlappingSegments));
        assert_eq!(with_extra(bss(0x40_3ff0, 0x10)).plan(), Err(ElfError::OverlappingSegments));
        assert_eq!(with_phdrs(&[TEXT, DATA, DATA]).plan(), Err(ElfError::OverlappingSegments));
        assert!(with_extra(bss(0x40_4000, 0x10)).plan().is_ok());
    }

    #[test]
    fn rejects_entry_outside_executable_segment() {
        let mut b = Builder::valid();
        b.entry = 0x40_1200; // in DATA, which is not executable
        assert_eq!(b.plan(), Err(ElfError::EntryNotExecutable));
        let mut b = Builder::valid();
        b.entry = 0x40_0200; // TEXT's page, but past its p_memsz
        assert_eq!(b.plan(), Err(ElfError::EntryNotExecutable));
        let mut b = Builder::valid();
        b.entry = 0;
        assert_eq!(b.plan(), Err(ElfError::EntryNotExecutable));
    }

    /// A mutation of the valid image.
    #[derive(Clone, Debug)]
    enum Mutation {
        /// `(position, value, in_headers)`: `in_headers` aims the edit at
        /// the ELF and program headers instead of the whole image.
        Bytes(Vec<(prop::sample::Index, u8, bool)>),
        Truncate(prop::sample::Index),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            3 => prop::collection::vec(
                (any::<prop::sample::Index>(), any::<u8>(), any::<bool>()),
                1..=8,
            )
                .prop_map(Mutation::Bytes),
            1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        ]
    }

    fn config() -> ProptestConfig {
        ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            if let Ok(plan) = plan(&bytes) {
                assert_invariants(&bytes, &plan);
            }
        }

        #[test]
        fn mutated_images_never_panic_and_plans_hold(m in mutation()) {
            let mut image = Builder::valid().build();
            match m {
                Mutation::Bytes(edits) => {
                    for (at, value, in_headers) in edits {
                        // The headers are the first 64 + 3 * 56 = 232 bytes.
                        let at = at.index(if in_headers { 232 } else { image.len() });
                        image[at] = value;
                    }
                }
                Mutation::Truncate(at) => image.truncate(at.index(image.len())),
            }
            if let Ok(plan) = plan(&image) {
                assert_invariants(&image, &plan);
            }
        }
    }
}
