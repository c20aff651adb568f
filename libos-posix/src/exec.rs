//! Loading a static x86-64 Linux executable: the mapping plan and the start
//! stack.
//!
//! This module owns the check of an untrusted ELF image and the exact bytes
//! of the initial process stack; it maps nothing itself. [`plan`] turns an
//! image into the segments the glue must map (addresses, file ranges, memory
//! sizes, rights) and the values the auxiliary vector needs; [`build_stack`]
//! makes the stack image for given arguments, environment and random bytes.
//!
//! Accepted: `ELFCLASS64`, little-endian, `EM_X86_64`, with
//! - `ET_EXEC` (fixed-address, e.g. at `0x400000`: `musl-gcc -static`,
//!   Debian's `busybox-static`), loaded where its headers say;
//! - `ET_DYN` **without** `PT_INTERP` (static PIE, `-static-pie`), loaded at
//!   a page-aligned bias the caller chooses; the program relocates itself
//!   (musl's `rcrt1.o`, glibc's `_dl_relocate_static_pie`).
//!
//! Refused with [`ExecError::Dynamic`]: anything with `PT_INTERP` (it needs
//! `ld.so` and shared libraries, which this loader does not provide).
//!
//! The start contract (System V x86-64 ABI §3.4.1, Linux
//! `fs/binfmt_elf.c:create_elf_tables`), from the final `rsp` upwards:
//!
//! ```text
//!  rsp % 16 == 0 ->  argc
//!                    argv[0] .. argv[argc-1], NULL
//!                    envp[0] .. envp[n-1],    NULL
//!                    auxv: (key, value) pairs ..., (AT_NULL, 0)
//!                    padding to 16
//!  AT_RANDOM ->      16 random bytes
//!                    argv strings, envp strings, execfn (each NUL-ended)
//!                    8 zero bytes
//!  top         ->
//! ```
//!
//! `rdx` is 0 at entry (no `atexit` function from a dynamic linker).

use crate::linux::*;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Why an image cannot be loaded. Every variant becomes `ENOEXEC` for
/// `execve`, as in Linux, except [`ExecError::TooBig`] (`E2BIG`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecError {
    /// Shorter than an ELF header, or the program headers run past the end.
    Truncated,
    /// No `\x7fELF` magic.
    NotElf,
    /// Not 64-bit little-endian x86-64 of ELF version 1.
    WrongArch,
    /// `e_type` is neither `ET_EXEC` nor `ET_DYN`.
    WrongType(u16),
    /// The program needs a dynamic linker (`PT_INTERP`), which is not provided.
    Dynamic {
        /// The interpreter the image names.
        interp: String,
    },
    /// `e_phentsize` is not 56, or there are no program headers.
    BadHeaders,
    /// A `PT_LOAD` segment is malformed: file range outside the image,
    /// `p_filesz > p_memsz`, misaligned, overflowing, outside the user range,
    /// or overlapping another.
    BadSegment(usize),
    /// No `PT_LOAD` segment.
    NothingToLoad,
    /// The arguments and environment do not fit.
    TooBig,
    /// Mapping a segment or the stack failed (out of memory, or the range
    /// is taken by the glue's own memory), with the errno.
    Map(Errno),
}

impl ExecError {
    /// The errno `execve` reports.
    pub fn errno(&self) -> Errno {
        match self {
            ExecError::TooBig => errno::E2BIG,
            ExecError::Map(e) => *e,
            _ => errno::ENOEXEC,
        }
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Truncated => f.write_str("truncated ELF image"),
            ExecError::NotElf => f.write_str("not an ELF image"),
            ExecError::WrongArch => f.write_str("not a 64-bit little-endian x86-64 ELF image"),
            ExecError::WrongType(t) => write!(f, "ELF type {t} is neither ET_EXEC nor ET_DYN"),
            ExecError::Dynamic { interp } => write!(
                f,
                "dynamically linked executable (interpreter {interp}): only static executables run"
            ),
            ExecError::BadHeaders => f.write_str("malformed program headers"),
            ExecError::BadSegment(i) => write!(f, "malformed loadable segment {i}"),
            ExecError::NothingToLoad => f.write_str("no loadable segment"),
            ExecError::TooBig => f.write_str("arguments and environment too large"),
            ExecError::Map(e) => write!(f, "cannot map its segments or stack (errno {})", e.0),
        }
    }
}

/// One `PT_LOAD` segment, with the load bias applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Virtual address of the first byte.
    pub vaddr: u64,
    /// Bytes in memory (`p_memsz`); beyond `filesz` they are zero.
    pub memsz: u64,
    /// Offset of the segment's bytes in the image.
    pub offset: u64,
    /// Bytes taken from the image (`p_filesz`).
    pub filesz: u64,
    /// `PF_R`.
    pub read: bool,
    /// `PF_W`.
    pub write: bool,
    /// `PF_X`.
    pub exec: bool,
}

impl Segment {
    /// First page of the mapping.
    pub fn page_start(&self) -> u64 {
        self.vaddr & !(PAGE_SIZE - 1)
    }
    /// End of the mapping, rounded up to a page.
    pub fn page_end(&self) -> u64 {
        (self.vaddr + self.memsz + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
    }
    /// The segment's rights as `PROT_*` bits.
    pub fn prot(&self) -> u32 {
        (if self.read { PROT_READ } else { 0 })
            | (if self.write { PROT_WRITE } else { 0 })
            | (if self.exec { PROT_EXEC } else { 0 })
    }
}

/// What to map, and the facts the auxiliary vector reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// `ET_DYN` (static PIE) rather than `ET_EXEC`.
    pub pie: bool,
    /// The bias added to every address (0 for `ET_EXEC`).
    pub bias: u64,
    /// Entry point (`AT_ENTRY`, the initial `rip`).
    pub entry: u64,
    /// The segments, in header order (sorted by address, non-overlapping).
    pub segments: Vec<Segment>,
    /// Address of the program headers in memory (`AT_PHDR`).
    pub phdr: u64,
    /// Number of program headers (`AT_PHNUM`).
    pub phnum: u16,
    /// Whether `PT_GNU_STACK` asks for an executable stack.
    pub exec_stack: bool,
    /// First page after the highest segment: where the program break starts.
    pub end: u64,
}

impl Plan {
    /// The auxiliary vector Linux gives a static program, minus the entries
    /// [`build_stack`] adds itself (`AT_RANDOM`, `AT_EXECFN`, `AT_NULL`).
    /// glibc crashes without `AT_RANDOM` or with `AT_PHDR` but no `AT_PHNUM`;
    /// musl finds its TLS segment through `AT_PHDR`/`AT_PHENT`/`AT_PHNUM`.
    pub fn auxv(&self) -> Vec<(u64, u64)> {
        alloc::vec![
            (AT_PHDR, self.phdr),
            (AT_PHENT, PHENT_SIZE as u64),
            (AT_PHNUM, self.phnum as u64),
            (AT_PAGESZ, PAGE_SIZE),
            (AT_BASE, 0),
            (AT_FLAGS, 0),
            (AT_ENTRY, self.entry),
            (AT_UID, 0),
            (AT_EUID, 0),
            (AT_GID, 0),
            (AT_EGID, 0),
            (AT_SECURE, 0),
            (AT_CLKTCK, 100),
        ]
    }
}

const EHDR_SIZE: usize = 64;
/// Size of one ELF64 program header.
pub const PHENT_SIZE: usize = 56;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const PT_GNU_STACK: u32 = 0x6474_e551;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Checks `image` and says what to map. `pie_bias` (page-aligned) is where
/// an `ET_DYN` image's address 0 goes; `user_end` is the first address the
/// program may not use (every segment must lie below it, and above page 0).
pub fn plan(image: &[u8], pie_bias: u64, user_end: u64) -> Result<Plan, ExecError> {
    if image.len() < EHDR_SIZE {
        return Err(ExecError::Truncated);
    }
    if image[..4] != *b"\x7fELF" {
        return Err(ExecError::NotElf);
    }
    // EI_CLASS = ELFCLASS64, EI_DATA = ELFDATA2LSB, EI_VERSION = 1, e_version = 1.
    if image[4] != 2 || image[5] != 1 || image[6] != 1 || u32_at(image, 20) != 1 {
        return Err(ExecError::WrongArch);
    }
    if u16_at(image, 18) != EM_X86_64 {
        return Err(ExecError::WrongArch);
    }
    let e_type = u16_at(image, 16);
    let pie = match e_type {
        ET_EXEC => false,
        ET_DYN => true,
        t => return Err(ExecError::WrongType(t)),
    };
    let bias = if pie { pie_bias & !(PAGE_SIZE - 1) } else { 0 };
    let entry = u64_at(image, 24);
    let phoff = u64_at(image, 32);
    let phentsize = u16_at(image, 54) as usize;
    let phnum = u16_at(image, 56);
    if phentsize != PHENT_SIZE || phnum == 0 {
        return Err(ExecError::BadHeaders);
    }
    let ph_end = phoff.checked_add(phnum as u64 * PHENT_SIZE as u64).ok_or(ExecError::Truncated)?;
    if ph_end > image.len() as u64 {
        return Err(ExecError::Truncated);
    }
    let mut segments: Vec<Segment> = Vec::new();
    let mut phdr = None;
    let mut exec_stack = false;
    for i in 0..phnum as usize {
        let h = &image[phoff as usize + i * PHENT_SIZE..][..PHENT_SIZE];
        let p_type = u32_at(h, 0);
        let flags = u32_at(h, 4);
        let offset = u64_at(h, 8);
        let vaddr = u64_at(h, 16);
        let filesz = u64_at(h, 32);
        let memsz = u64_at(h, 40);
        let align = u64_at(h, 48);
        match p_type {
            PT_INTERP => {
                let end = offset.saturating_add(filesz).min(image.len() as u64);
                let raw = image.get(offset as usize..end as usize).unwrap_or(&[]);
                let raw = raw.split(|&c| c == 0).next().unwrap_or(&[]);
                return Err(ExecError::Dynamic { interp: String::from_utf8_lossy(raw).into() });
            }
            PT_PHDR => phdr = Some(vaddr.wrapping_add(bias)),
            PT_GNU_STACK => exec_stack = flags & 1 != 0,
            PT_LOAD => {
                let bad = ExecError::BadSegment(i);
                let file_end = offset.checked_add(filesz).ok_or(bad.clone())?;
                let start = vaddr.checked_add(bias).ok_or(bad.clone())?;
                let mem_end = start.checked_add(memsz).ok_or(bad.clone())?;
                if filesz > memsz || file_end > image.len() as u64 || memsz == 0 {
                    return Err(bad);
                }
                // Linux requires p_vaddr ≡ p_offset (mod page) to map the file.
                if vaddr % PAGE_SIZE != offset % PAGE_SIZE
                    || (align > 1 && (!align.is_power_of_two() || vaddr % align != offset % align))
                {
                    return Err(bad);
                }
                if start < PAGE_SIZE || mem_end > user_end {
                    return Err(bad);
                }
                let seg = Segment {
                    vaddr: start,
                    memsz,
                    offset,
                    filesz,
                    read: flags & 4 != 0,
                    write: flags & 2 != 0,
                    exec: flags & 1 != 0,
                };
                if let Some(prev) = segments.last()
                    && seg.page_start() < prev.page_end()
                {
                    // Segments must be sorted and may not share a page, so
                    // that each page has one set of rights.
                    return Err(bad);
                }
                segments.push(seg);
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(ExecError::NothingToLoad);
    }
    // Without PT_PHDR, the headers are wherever the segment holding file
    // offset e_phoff puts them (binfmt_elf does the same).
    let phdr = match phdr {
        Some(p) => p,
        None => segments
            .iter()
            .find(|s| s.offset <= phoff && ph_end <= s.offset + s.filesz)
            .map(|s| s.vaddr + (phoff - s.offset))
            .ok_or(ExecError::BadHeaders)?,
    };
    let end = segments.iter().map(Segment::page_end).max().unwrap_or(0);
    Ok(Plan { pie, bias, entry: entry.wrapping_add(bias), segments, phdr, phnum, exec_stack, end })
}

/// The initial stack: `bytes` are the contents of `[rsp, top)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackImage {
    /// The stack's contents from `rsp` up to the top.
    pub bytes: Vec<u8>,
    /// The initial `rsp` (16-byte aligned, pointing at `argc`).
    pub rsp: u64,
}

/// The most bytes the strings may take (Linux allows a quarter of the stack
/// limit; this is a quarter of 8 MiB).
pub const MAX_STRINGS: usize = 2 << 20;

/// Builds the start stack below `top` for `argv` and `envp` (strings without
/// NUL bytes; a NUL ends a string early), `execfn` (`AT_EXECFN`), the 16
/// bytes `AT_RANDOM` points at, and the auxiliary entries `aux` (usually
/// [`Plan::auxv`]); `AT_RANDOM`, `AT_EXECFN` and `AT_NULL` are appended.
pub fn build_stack(
    top: u64,
    argv: &[&[u8]],
    envp: &[&[u8]],
    execfn: &[u8],
    random: &[u8; 16],
    aux: &[(u64, u64)],
) -> Result<StackImage, ExecError> {
    let cut = |s: &'_ [u8]| -> usize { s.iter().position(|&c| c == 0).unwrap_or(s.len()) };
    let strings: usize = argv.iter().chain(envp).chain([&execfn]).map(|s| cut(s) + 1).sum();
    if strings > MAX_STRINGS {
        return Err(ExecError::TooBig);
    }
    let top = top & !15;
    // Strings, ascending: argv, envp, execfn; then 8 zero bytes.
    let str_base = top - 8 - strings as u64;
    let random_addr = (str_base - 16) & !15;
    let naux = aux.len() + 3;
    let words = 1 + argv.len() + 1 + envp.len() + 1 + 2 * naux;
    let rsp = (random_addr - 8 * words as u64) & !15;
    if top - rsp > (MAX_STRINGS as u64) * 2 {
        return Err(ExecError::TooBig);
    }
    let mut b = alloc::vec![0u8; (top - rsp) as usize];
    let off = |addr: u64| (addr - rsp) as usize;

    let mut at = str_base;
    let mut place = |b: &mut [u8], s: &[u8]| -> u64 {
        let s = &s[..cut(s)];
        let o = off(at);
        b[o..o + s.len()].copy_from_slice(s);
        let addr = at;
        at += s.len() as u64 + 1;
        addr
    };
    let arg_ptrs: Vec<u64> = argv.iter().map(|s| place(&mut b, s)).collect();
    let env_ptrs: Vec<u64> = envp.iter().map(|s| place(&mut b, s)).collect();
    let execfn_ptr = place(&mut b, execfn);
    let r = off(random_addr);
    b[r..r + 16].copy_from_slice(random);

    let mut w = off(rsp);
    let mut push = |b: &mut [u8], v: u64| {
        b[w..w + 8].copy_from_slice(&v.to_le_bytes());
        w += 8;
    };
    push(&mut b, argv.len() as u64);
    for p in arg_ptrs {
        push(&mut b, p);
    }
    push(&mut b, 0);
    for p in env_ptrs {
        push(&mut b, p);
    }
    push(&mut b, 0);
    for &(k, v) in aux.iter().filter(|(k, _)| !matches!(*k, AT_NULL | AT_RANDOM | AT_EXECFN)) {
        push(&mut b, k);
        push(&mut b, v);
    }
    push(&mut b, AT_RANDOM);
    push(&mut b, random_addr);
    push(&mut b, AT_EXECFN);
    push(&mut b, execfn_ptr);
    push(&mut b, AT_NULL);
    push(&mut b, 0);
    Ok(StackImage { bytes: b, rsp })
}

/// What a start stack says, read back the way a C runtime reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// The arguments.
    pub argv: Vec<Vec<u8>>,
    /// The environment.
    pub envp: Vec<Vec<u8>>,
    /// The auxiliary vector, without its `AT_NULL`.
    pub auxv: Vec<(u64, u64)>,
}

impl StartInfo {
    /// The value of auxiliary entry `key`.
    pub fn aux(&self, key: u64) -> Option<u64> {
        self.auxv.iter().find(|e| e.0 == key).map(|e| e.1)
    }
}

/// Reads a start stack back (for tests and diagnostics): `bytes` hold
/// `[rsp, rsp + bytes.len())`. `None` when a pointer leaves the image or a
/// list or string is not terminated.
pub fn parse_stack(bytes: &[u8], rsp: u64) -> Option<StartInfo> {
    let word = |addr: u64| -> Option<u64> {
        let o = usize::try_from(addr.checked_sub(rsp)?).ok()?;
        Some(u64_at(bytes.get(o..o.checked_add(8)?)?, 0))
    };
    let string = |addr: u64| -> Option<Vec<u8>> {
        let o = usize::try_from(addr.checked_sub(rsp)?).ok()?;
        let rest = bytes.get(o..)?;
        Some(rest[..rest.iter().position(|&c| c == 0)?].to_vec())
    };
    let argc = word(rsp)?;
    let mut at = rsp + 8;
    let mut argv = Vec::new();
    for _ in 0..argc {
        argv.push(string(word(at)?)?);
        at += 8;
    }
    if word(at)? != 0 {
        return None;
    }
    at += 8;
    let mut envp = Vec::new();
    loop {
        let p = word(at)?;
        at += 8;
        if p == 0 {
            break;
        }
        envp.push(string(p)?);
    }
    let mut auxv = Vec::new();
    loop {
        let (k, v) = (word(at)?, word(at + 8)?);
        at += 16;
        if k == AT_NULL {
            break;
        }
        auxv.push((k, v));
    }
    Some(StartInfo { argv, envp, auxv })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    /// A minimal static ELF: headers, then one RX and one RW segment.
    pub(crate) fn tiny_elf(e_type: u16, interp: Option<&[u8]>) -> Vec<u8> {
        let mut phdrs: Vec<[u64; 7]> = Vec::new(); // type|flags, off, vaddr, paddr, filesz, memsz, align
        let base = if e_type == ET_EXEC { 0x400000 } else { 0 };
        let nph = 3 + interp.is_some() as u64;
        let hdr_len = 64 + 56 * nph;
        phdrs.push([PT_PHDR as u64 | (4 << 32), 64, base + 64, 0, 56 * nph, 56 * nph, 8]);
        phdrs.push([PT_LOAD as u64 | (5 << 32), 0, base, 0, 0x1000, 0x1000, 0x1000]);
        phdrs.push([PT_LOAD as u64 | (6 << 32), 0x1000, base + 0x1000, 0, 0x10, 0x3000, 0x1000]);
        if interp.is_some() {
            phdrs.push([PT_INTERP as u64 | (4 << 32), hdr_len, base + hdr_len, 0, 28, 28, 1]);
        }
        let mut b = vec![0u8; 0x1010];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&e_type.to_le_bytes());
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24..32].copy_from_slice(&(base + 0x100).to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[52..54].copy_from_slice(&64u16.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(nph as u16).to_le_bytes());
        for (i, p) in phdrs.iter().enumerate() {
            let o = 64 + 56 * i;
            b[o..o + 8].copy_from_slice(&p[0].to_le_bytes());
            for (j, v) in p[1..].iter().enumerate() {
                b[o + 8 + 8 * j..o + 16 + 8 * j].copy_from_slice(&v.to_le_bytes());
            }
        }
        if let Some(i) = interp {
            b[hdr_len as usize..hdr_len as usize + i.len()].copy_from_slice(i);
        }
        b
    }

    const USER_END: u64 = 0x0000_8000_0000_0000;

    #[test]
    fn plans_a_static_exec() {
        let p = plan(&tiny_elf(ET_EXEC, None), 0x5555_0000_0000, USER_END).unwrap();
        assert!(!p.pie);
        assert_eq!(p.entry, 0x400100);
        assert_eq!(p.phdr, 0x400040);
        assert_eq!(p.phnum, 3);
        assert_eq!(p.segments.len(), 2);
        assert_eq!(p.segments[0].prot(), PROT_READ | PROT_EXEC);
        assert_eq!(p.segments[1].prot(), PROT_READ | PROT_WRITE);
        assert_eq!(p.segments[1].filesz, 0x10);
        assert_eq!(p.end, 0x404000);
        let aux = p.auxv();
        assert!(aux.contains(&(AT_PHNUM, 3)) && aux.contains(&(AT_PHENT, 56)));
        assert!(aux.contains(&(AT_ENTRY, 0x400100)));
    }

    #[test]
    fn plans_a_static_pie_at_the_bias() {
        let p = plan(&tiny_elf(ET_DYN, None), 0x5555_0000_0000, USER_END).unwrap();
        assert!(p.pie);
        assert_eq!(p.entry, 0x5555_0000_0100);
        assert_eq!(p.segments[0].vaddr, 0x5555_0000_0000);
        assert_eq!(p.phdr, 0x5555_0000_0040);
    }

    #[test]
    fn refuses_dynamic_with_its_interpreter() {
        let e = plan(&tiny_elf(ET_EXEC, Some(b"/lib64/ld-linux-x86-64.so.2\0")), 0, USER_END);
        let e = e.unwrap_err();
        assert_eq!(e, ExecError::Dynamic { interp: "/lib64/ld-linux-x86-64.so.2".into() });
        assert!(alloc::format!("{e}").contains("only static executables"));
        assert_eq!(e.errno(), errno::ENOEXEC);
    }

    #[test]
    fn refuses_malformed_images() {
        assert_eq!(plan(b"\x7fELF", 0, USER_END), Err(ExecError::Truncated));
        let mut b = tiny_elf(ET_EXEC, None);
        b[0] = 0;
        assert_eq!(plan(&b, 0, USER_END), Err(ExecError::NotElf));
        let mut b = tiny_elf(ET_EXEC, None);
        b[18] = 3; // EM_386
        assert_eq!(plan(&b, 0, USER_END), Err(ExecError::WrongArch));
        let mut b = tiny_elf(ET_EXEC, None);
        b[16] = 4; // ET_CORE
        assert_eq!(plan(&b, 0, USER_END), Err(ExecError::WrongType(4)));
        // Segment past the user range.
        assert_eq!(plan(&tiny_elf(ET_EXEC, None), 0, 0x402000), Err(ExecError::BadSegment(2)));
        // filesz > memsz.
        let mut b = tiny_elf(ET_EXEC, None);
        let o = 64 + 56 * 2 + 40;
        b[o..o + 8].copy_from_slice(&1u64.to_le_bytes());
        assert_eq!(plan(&b, 0, USER_END), Err(ExecError::BadSegment(2)));
        // File range past the end.
        let mut b = tiny_elf(ET_EXEC, None);
        let o = 64 + 56 * 2 + 8;
        b[o..o + 8].copy_from_slice(&0x2000u64.to_le_bytes());
        assert_eq!(plan(&b, 0, USER_END), Err(ExecError::BadSegment(2)));
    }

    #[test]
    fn stack_layout_by_hand() {
        let s = build_stack(
            0x7fff_0000_0000,
            &[b"prog", b"a"],
            &[b"X=1"],
            b"/bin/prog",
            &[7; 16],
            &[(AT_PAGESZ, 4096)],
        )
        .unwrap();
        assert_eq!(s.rsp % 16, 0);
        assert_eq!(s.rsp + s.bytes.len() as u64, 0x7fff_0000_0000);
        let info = parse_stack(&s.bytes, s.rsp).unwrap();
        assert_eq!(info.argv, vec![b"prog".to_vec(), b"a".to_vec()]);
        assert_eq!(info.envp, vec![b"X=1".to_vec()]);
        assert_eq!(info.aux(AT_PAGESZ), Some(4096));
        let r = (info.aux(AT_RANDOM).unwrap() - s.rsp) as usize;
        assert_eq!(&s.bytes[r..r + 16], &[7; 16]);
        let e = (info.aux(AT_EXECFN).unwrap() - s.rsp) as usize;
        assert_eq!(&s.bytes[e..e + 10], b"/bin/prog\0");
        // The last 8 bytes are zero.
        assert_eq!(&s.bytes[s.bytes.len() - 8..], &[0; 8]);
    }

    fn arg() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..=255, 0..40)
    }

    proptest! {
        #[test]
        fn stack_round_trips(
            top in 0x1000_0000u64..0x7fff_ffff_f000,
            argv in proptest::collection::vec(arg(), 0..12),
            envp in proptest::collection::vec(arg(), 0..12),
            extra in proptest::collection::vec((32u64..100, any::<u64>()), 0..6),
            random in any::<[u8; 16]>(),
        ) {
            let a: Vec<&[u8]> = argv.iter().map(|v| v.as_slice()).collect();
            let e: Vec<&[u8]> = envp.iter().map(|v| v.as_slice()).collect();
            let p = plan(&tiny_elf(ET_EXEC, None), 0, USER_END).unwrap();
            let mut aux = p.auxv();
            aux.extend(extra.iter().copied());
            let s = build_stack(top, &a, &e, b"/x", &random, &aux).unwrap();
            prop_assert_eq!(s.rsp % 16, 0);
            prop_assert!(s.rsp + s.bytes.len() as u64 <= top);
            prop_assert!(top - (s.rsp + s.bytes.len() as u64) < 16);
            let info = parse_stack(&s.bytes, s.rsp).unwrap();
            prop_assert_eq!(&info.argv, &argv);
            prop_assert_eq!(&info.envp, &envp);
            // Every requested entry is there, in order, then the added ones.
            let n = aux.len();
            prop_assert_eq!(&info.auxv[..n], &aux[..]);
            prop_assert_eq!(info.auxv[n].0, AT_RANDOM);
            prop_assert_eq!(info.auxv[n + 1].0, AT_EXECFN);
            prop_assert_eq!(info.auxv.len(), n + 2);
            for k in [AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_ENTRY] {
                prop_assert!(info.aux(k).is_some());
            }
            let r = (info.aux(AT_RANDOM).unwrap() - s.rsp) as usize;
            prop_assert_eq!(&s.bytes[r..r + 16], &random[..]);
            prop_assert_eq!(info.aux(AT_RANDOM).unwrap() % 16, 0);
        }

        #[test]
        fn plan_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), flip in 0usize..0x1010, v in any::<u8>()) {
            let _ = plan(&bytes, 0, USER_END);
            let mut b = tiny_elf(ET_EXEC, None);
            b[flip] = v;
            if let Ok(p) = plan(&b, 0, USER_END) {
                for s in &p.segments {
                    prop_assert!(s.offset + s.filesz <= b.len() as u64);
                    prop_assert!(s.filesz <= s.memsz);
                    prop_assert!(s.page_end() <= USER_END);
                }
            }
        }
    }
}
