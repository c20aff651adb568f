//! Deliberately malformed ELF images for the kernel's loader tests, made
//! from a good one (the `hello` app), and the little ELF reading that needs
//! (also used to check where apps load: [`load_segments`]):
//!
//! | entry | how it is broken |
//! |---|---|
//! | `bad_truncated` | only the first 100 bytes (the program headers are cut off) |
//! | `bad_machine` | `e_machine` = 0x28 (ARM) |
//! | `bad_entry` | `e_entry` = 0x10 (below `USER_MIN`, in no segment) |
//! | `bad_overlap` | the second `PT_LOAD`'s `p_vaddr` = the first's (everything else kept) |

/// `e_machine` offset in the ELF64 header.
const E_MACHINE: usize = 18;
/// `e_entry` offset.
const E_ENTRY: usize = 24;
/// `e_phoff` offset.
const E_PHOFF: usize = 32;
/// `e_phentsize` offset.
const E_PHENTSIZE: usize = 54;
/// `e_phnum` offset.
const E_PHNUM: usize = 56;
/// `p_vaddr` offset in a program header.
const P_VADDR: usize = 16;
/// `p_memsz` offset in a program header.
const P_MEMSZ: usize = 40;
/// `PT_LOAD`.
const PT_LOAD: u32 = 1;
/// `EM_ARM`.
const EM_ARM: u16 = 0x28;

fn u16_at(b: &[u8], off: usize) -> Result<u16, String> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes(s.try_into().expect("2 bytes")))
        .ok_or_else(|| format!("ELF too short for a u16 at {off}"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, String> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| format!("ELF too short for a u32 at {off}"))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, String> {
    b.get(off..off + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| format!("ELF too short for a u64 at {off}"))
}

fn check_elf64(elf: &[u8]) -> Result<(), String> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err("not a little-endian ELF64 image".into());
    }
    Ok(())
}

/// The file offsets of the `PT_LOAD` program headers, in order.
fn load_headers(elf: &[u8]) -> Result<Vec<usize>, String> {
    check_elf64(elf)?;
    let phoff = usize::try_from(u64_at(elf, E_PHOFF)?).map_err(|e| e.to_string())?;
    let size = usize::from(u16_at(elf, E_PHENTSIZE)?);
    let num = usize::from(u16_at(elf, E_PHNUM)?);
    let mut loads = Vec::new();
    for i in 0..num {
        let off = phoff + i * size;
        if u32_at(elf, off)? == PT_LOAD {
            loads.push(off);
        }
    }
    Ok(loads)
}

/// `(p_vaddr, p_memsz)` of each `PT_LOAD` segment, in order.
pub fn load_segments(elf: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    load_headers(elf)?
        .into_iter()
        .map(|ph| Ok((u64_at(elf, ph + P_VADDR)?, u64_at(elf, ph + P_MEMSZ)?)))
        .collect()
}

/// `tiny_exit`: the smallest useful program, for `libos_async::spawn`'s
/// tests and benchmark — one `PT_LOAD` (R+X) at `0x400000` holding the ELF
/// header, its program header and 50 bytes of code that exit (`Exit`, 2)
/// with `argc` plus the total length of the argument strings, read from
/// the System V start stack (`[rsp]` = argc, `argv` after it, NULL-ended).
/// Its source (GNU as, Intel syntax):
///
/// ```text
///     mov rdx, [rsp]        ; argc
///     lea rsi, [rsp + 8]    ; argv
/// 1:  mov rcx, [rsi]
///     test rcx, rcx
///     jz 4f
/// 2:  movzx eax, byte ptr [rcx]
///     test al, al
///     jz 3f
///     inc rdx
///     inc rcx
///     jmp 2b
/// 3:  add rsi, 8
///     jmp 1b
/// 4:  mov rdi, rdx
///     mov eax, 2
///     syscall
///     ud2
/// ```
pub fn tiny_exit() -> Vec<u8> {
    const CODE: [u8; 50] = [
        0x48, 0x8b, 0x14, 0x24, 0x48, 0x8d, 0x74, 0x24, 0x08, 0x48, 0x8b, 0x0e, 0x48, 0x85, 0xc9,
        0x74, 0x15, 0x0f, 0xb6, 0x01, 0x84, 0xc0, 0x74, 0x08, 0x48, 0xff, 0xc2, 0x48, 0xff, 0xc1,
        0xeb, 0xf1, 0x48, 0x83, 0xc6, 0x08, 0xeb, 0xe3, 0x48, 0x89, 0xd7, 0xb8, 0x02, 0x00, 0x00,
        0x00, 0x0f, 0x05, 0x0f, 0x0b,
    ];
    const BASE: u64 = 0x40_0000;
    let code_at = 64 + 56;
    let mut e = vec![0u8; code_at + CODE.len()];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // ELFCLASS64
    e[5] = 1; // little-endian
    e[6] = 1; // EV_CURRENT
    e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[E_MACHINE..E_MACHINE + 2].copy_from_slice(&0x3eu16.to_le_bytes());
    e[20..24].copy_from_slice(&1u32.to_le_bytes()); // e_version
    e[E_ENTRY..E_ENTRY + 8].copy_from_slice(&(BASE + code_at as u64).to_le_bytes());
    e[E_PHOFF..E_PHOFF + 8].copy_from_slice(&64u64.to_le_bytes());
    e[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    e[E_PHENTSIZE..E_PHENTSIZE + 2].copy_from_slice(&56u16.to_le_bytes());
    e[E_PHNUM..E_PHNUM + 2].copy_from_slice(&1u16.to_le_bytes());
    let ph = 64;
    e[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
    e[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // PF_R | PF_X
    // p_offset 0; p_vaddr = p_paddr = BASE; p_filesz = p_memsz = the file.
    e[ph + P_VADDR..ph + P_VADDR + 8].copy_from_slice(&BASE.to_le_bytes());
    e[ph + 24..ph + 32].copy_from_slice(&BASE.to_le_bytes());
    let len = e.len() as u64;
    e[ph + 32..ph + 40].copy_from_slice(&len.to_le_bytes());
    e[ph + P_MEMSZ..ph + P_MEMSZ + 8].copy_from_slice(&len.to_le_bytes());
    e[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes()); // p_align
    e[code_at..].copy_from_slice(&CODE);
    e
}

/// The malformed variants of `elf`, as `(name, bytes)`.
pub fn variants(elf: &[u8]) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    check_elf64(elf)?;
    let truncated = elf[..100].to_vec();

    let mut machine = elf.to_vec();
    machine[E_MACHINE..E_MACHINE + 2].copy_from_slice(&EM_ARM.to_le_bytes());

    let mut entry = elf.to_vec();
    entry[E_ENTRY..E_ENTRY + 8].copy_from_slice(&0x10u64.to_le_bytes());

    let loads = load_headers(elf)?;
    let [first, second, ..] = loads[..] else {
        return Err(format!("need two PT_LOAD segments for bad_overlap, found {}", loads.len()));
    };
    let mut overlap = elf.to_vec();
    let vaddr = u64_at(elf, first + P_VADDR)?;
    overlap[second + P_VADDR..second + P_VADDR + 8].copy_from_slice(&vaddr.to_le_bytes());

    Ok(vec![
        ("bad_truncated", truncated),
        ("bad_machine", machine),
        ("bad_entry", entry),
        ("bad_overlap", overlap),
    ])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 header with these program headers: `(type, vaddr,
    /// memsz)`.
    fn elf_with(headers: &[(u32, u64, u64)]) -> Vec<u8> {
        let mut e = vec![0u8; 64 + headers.len() * 56];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[E_MACHINE..E_MACHINE + 2].copy_from_slice(&0x3eu16.to_le_bytes());
        e[E_ENTRY..E_ENTRY + 8].copy_from_slice(&0x40_0000u64.to_le_bytes());
        e[E_PHOFF..E_PHOFF + 8].copy_from_slice(&64u64.to_le_bytes());
        e[E_PHENTSIZE..E_PHENTSIZE + 2].copy_from_slice(&56u16.to_le_bytes());
        let num = u16::try_from(headers.len()).unwrap();
        e[E_PHNUM..E_PHNUM + 2].copy_from_slice(&num.to_le_bytes());
        for (i, &(ty, vaddr, memsz)) in headers.iter().enumerate() {
            let ph = 64 + i * 56;
            e[ph..ph + 4].copy_from_slice(&ty.to_le_bytes());
            e[ph + P_VADDR..ph + P_VADDR + 8].copy_from_slice(&vaddr.to_le_bytes());
            e[ph + P_MEMSZ..ph + P_MEMSZ + 8].copy_from_slice(&memsz.to_le_bytes());
        }
        e
    }

    /// An ELF with a `PT_LOAD` for each `(vaddr, memsz)` (for other
    /// modules' tests).
    pub(crate) fn sample_with(segments: &[(u64, u64)]) -> Vec<u8> {
        let headers: Vec<_> = segments.iter().map(|&(v, m)| (PT_LOAD, v, m)).collect();
        elf_with(&headers)
    }

    /// Two PT_LOAD headers and a PT_NOTE between them.
    fn sample() -> Vec<u8> {
        elf_with(&[(PT_LOAD, 0x40_0000, 0x1000), (4, 0, 0), (PT_LOAD, 0x40_2000, 0x1000)])
    }

    #[test]
    fn segments() {
        assert_eq!(load_segments(&sample()).unwrap(), [(0x40_0000, 0x1000), (0x40_2000, 0x1000)]);
    }

    #[test]
    fn variants_break_exactly_one_thing() {
        let good = sample();
        let v = variants(&good).unwrap();
        let names: Vec<&str> = v.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["bad_truncated", "bad_machine", "bad_entry", "bad_overlap"]);
        assert_eq!(v[0].1, good[..100]);
        assert_eq!(u16_at(&v[1].1, E_MACHINE).unwrap(), 0x28);
        assert_eq!(u64_at(&v[2].1, E_ENTRY).unwrap(), 0x10);
        let overlap = &v[3].1;
        assert_eq!(u64_at(overlap, 64 + 2 * 56 + P_VADDR).unwrap(), 0x40_0000);
        // Only those bytes differ.
        for (name, bad) in &v[1..] {
            let diff = good.iter().zip(bad).filter(|(a, b)| a != b).count();
            assert!((1..=8).contains(&diff), "{name}: {diff} bytes differ");
            assert_eq!(bad.len(), good.len());
        }
    }

    #[test]
    fn rejects_non_elf_and_single_segment() {
        assert!(
            variants(b"not an elf at all, not even close............................").is_err()
        );
        let mut one = sample();
        one[E_PHNUM..E_PHNUM + 2].copy_from_slice(&1u16.to_le_bytes());
        assert!(variants(&one).is_err());
    }
}
