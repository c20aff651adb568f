//! The PVH boot protocol's start-of-day structures.
//!
//! A PVH loader (QEMU's `-kernel`, Firecracker, Cloud Hypervisor) enters the
//! kernel in 32-bit protected mode with `ebx` holding the physical address of
//! an `hvm_start_info`. Everything the kernel learns about the machine at
//! boot comes from it: the memory map, the command line, the modules (our
//! initrd) and the ACPI RSDP.
//!
//! This module parses those structures from byte slices that the machine
//! layer copies out of physical memory, so every field is bounds-checked and
//! the parsing is tested on the host.
//!
//! ```text
//! hvm_start_info (version 1, 56 bytes)
//!   0 magic u32 = 0x336ec578   4 version u32   8 flags u32   12 nr_modules u32
//!  16 modlist_paddr u64       24 cmdline_paddr u64          32 rsdp_paddr u64
//!  40 memmap_paddr u64        48 memmap_entries u32         52 reserved u32
//! hvm_modlist_entry (32 bytes): paddr u64, size u64, cmdline_paddr u64, reserved u64
//! hvm_memmap_table_entry (24 bytes): addr u64, size u64, type u32, reserved u32
//! ```

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Size of `hvm_start_info` for version 1 (with the memory map fields).
pub const START_INFO_SIZE: usize = 56;
/// Size of one `hvm_modlist_entry`.
pub const MODULE_ENTRY_SIZE: usize = 32;
/// Size of one `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_SIZE: usize = 24;
/// The most memory map entries or modules the kernel will read.
pub const MAX_TABLE_ENTRIES: u32 = 128;

/// Memory map entry type for usable RAM (the E820 numbering).
pub const E820_RAM: u32 = 1;

/// The fixed part of `hvm_start_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// Protocol version (0 has no memory map; 1 does).
    pub version: u32,
    /// Number of entries in the module list.
    pub nr_modules: u32,
    /// Physical address of the module list.
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line, or 0.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP, or 0 if the loader did not say.
    pub rsdp_paddr: u64,
    /// Physical address of the memory map (version 1).
    pub memmap_paddr: u64,
    /// Number of memory map entries (version 1).
    pub memmap_entries: u32,
}

/// One module handed over by the loader (QEMU passes `-initrd` as module 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    /// Physical address of the module's first byte.
    pub paddr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// One entry of the firmware memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Physical start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820 type; [`E820_RAM`] is usable.
    pub kind: u32,
}

/// Why a start-of-day structure was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvhError {
    /// The slice is shorter than the structure.
    Truncated,
    /// `magic` is not [`START_INFO_MAGIC`].
    BadMagic(u32),
    /// Version 0 carries no memory map, which this kernel needs.
    NoMemoryMap,
    /// More entries than [`MAX_TABLE_ENTRIES`].
    TooManyEntries(u32),
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, PvhError> {
    let bytes = b.get(at..at + 4).ok_or(PvhError::Truncated)?;
    Ok(u32::from_le_bytes(bytes.try_into().map_err(|_| PvhError::Truncated)?))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, PvhError> {
    let bytes = b.get(at..at + 8).ok_or(PvhError::Truncated)?;
    Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| PvhError::Truncated)?))
}

impl StartInfo {
    /// Parses the fixed part of `hvm_start_info`.
    pub fn parse(b: &[u8]) -> Result<StartInfo, PvhError> {
        let magic = u32_at(b, 0)?;
        if magic != START_INFO_MAGIC {
            return Err(PvhError::BadMagic(magic));
        }
        let info = StartInfo {
            version: u32_at(b, 4)?,
            nr_modules: u32_at(b, 12)?,
            modlist_paddr: u64_at(b, 16)?,
            cmdline_paddr: u64_at(b, 24)?,
            rsdp_paddr: u64_at(b, 32)?,
            memmap_paddr: u64_at(b, 40)?,
            memmap_entries: u32_at(b, 48)?,
        };
        if info.version < 1 {
            return Err(PvhError::NoMemoryMap);
        }
        for n in [info.nr_modules, info.memmap_entries] {
            if n > MAX_TABLE_ENTRIES {
                return Err(PvhError::TooManyEntries(n));
            }
        }
        Ok(info)
    }

    /// Bytes to copy from `memmap_paddr` for [`parse_memmap`].
    pub fn memmap_bytes(&self) -> usize {
        self.memmap_entries as usize * MEMMAP_ENTRY_SIZE
    }

    /// Bytes to copy from `modlist_paddr` for [`parse_module`].
    pub fn modlist_bytes(&self) -> usize {
        self.nr_modules as usize * MODULE_ENTRY_SIZE
    }
}

/// Parses entry `index` of a memory map table.
pub fn parse_memmap(table: &[u8], index: usize) -> Result<MemoryRegion, PvhError> {
    let at = index * MEMMAP_ENTRY_SIZE;
    Ok(MemoryRegion {
        addr: u64_at(table, at)?,
        size: u64_at(table, at + 8)?,
        kind: u32_at(table, at + 16)?,
    })
}

/// Parses entry `index` of a module list.
pub fn parse_module(table: &[u8], index: usize) -> Result<Module, PvhError> {
    let at = index * MODULE_ENTRY_SIZE;
    Ok(Module { paddr: u64_at(table, at)?, size: u64_at(table, at + 8)? })
}

/// The command line from its NUL-terminated bytes: up to the first NUL,
/// with anything that is not printable ASCII replaced by a space so that a
/// hostile loader cannot smuggle control characters into the log.
pub fn cmdline_text(raw: &[u8], out: &mut [u8]) -> usize {
    let mut n = 0;
    for (&c, slot) in raw.iter().take_while(|&&c| c != 0).zip(out.iter_mut()) {
        *slot = if c.is_ascii_graphic() { c } else { b' ' };
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_info(version: u32, modules: u32, entries: u32) -> Vec<u8> {
        let mut b = vec![0u8; START_INFO_SIZE];
        b[0..4].copy_from_slice(&START_INFO_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&version.to_le_bytes());
        b[12..16].copy_from_slice(&modules.to_le_bytes());
        b[16..24].copy_from_slice(&0x1000u64.to_le_bytes());
        b[24..32].copy_from_slice(&0x2000u64.to_le_bytes());
        b[32..40].copy_from_slice(&0xe0000u64.to_le_bytes());
        b[40..48].copy_from_slice(&0x3000u64.to_le_bytes());
        b[48..52].copy_from_slice(&entries.to_le_bytes());
        b
    }

    #[test]
    fn parses_a_version_1_start_info() {
        let info = StartInfo::parse(&start_info(1, 1, 5)).unwrap();
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.modlist_paddr, 0x1000);
        assert_eq!(info.cmdline_paddr, 0x2000);
        assert_eq!(info.rsdp_paddr, 0xe0000);
        assert_eq!(info.memmap_paddr, 0x3000);
        assert_eq!(info.memmap_bytes(), 5 * 24);
        assert_eq!(info.modlist_bytes(), 32);
    }

    #[test]
    fn rejects_bad_magic_old_version_truncation_and_huge_tables() {
        let mut b = start_info(1, 0, 1);
        b[0] ^= 1;
        assert!(matches!(StartInfo::parse(&b), Err(PvhError::BadMagic(_))));
        assert_eq!(StartInfo::parse(&start_info(0, 0, 1)), Err(PvhError::NoMemoryMap));
        assert_eq!(StartInfo::parse(&start_info(1, 0, 1)[..40]), Err(PvhError::Truncated));
        assert_eq!(
            StartInfo::parse(&start_info(1, 0, 100_000)),
            Err(PvhError::TooManyEntries(100_000))
        );
    }

    #[test]
    fn parses_table_entries_and_refuses_to_read_past_the_end() {
        let mut t = vec![0u8; 48];
        t[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes());
        t[32..40].copy_from_slice(&0x7f0_0000u64.to_le_bytes());
        t[40..44].copy_from_slice(&1u32.to_le_bytes());
        let r = parse_memmap(&t, 1).unwrap();
        assert_eq!(r, MemoryRegion { addr: 0x10_0000, size: 0x7f0_0000, kind: E820_RAM });
        assert_eq!(parse_memmap(&t, 2), Err(PvhError::Truncated));
        assert_eq!(parse_module(&t, 2), Err(PvhError::Truncated));
    }

    #[test]
    fn cmdline_stops_at_nul_and_scrubs_control_bytes() {
        let mut out = [0u8; 16];
        let n = cmdline_text(b"mode=test\x1b[2J\0junk", &mut out);
        assert_eq!(&out[..n], b"mode=test [2J");
        let n = cmdline_text(b"abcdefghijklmnopqrstuvwxyz", &mut out);
        assert_eq!(n, 16);
    }
}
