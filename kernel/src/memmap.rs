//! From a firmware memory map to the frames the kernel may hand out.
//!
//! Usable RAM is every [`crate::pvh::E820_RAM`] region, shrunk
//! inward to whole pages, cut at the highest address the kernel maps, minus
//! the reserved ranges (the kernel image, the boot structures, the initrd,
//! the first megabyte with the AP trampoline). Nothing here allocates: the
//! frame allocator is fed before the heap exists.

use crate::PAGE_SIZE;
use crate::pvh::{E820_RAM, MemoryRegion};
use core::ops::Range;

/// The most reserved ranges [`free_ranges`] accepts.
pub const MAX_RESERVED: usize = 16;

/// More reserved ranges than [`MAX_RESERVED`] were given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyReserved;

/// Calls `emit(start, end)` for every free, page-aligned physical range of
/// the memory map below `limit`, in ascending order per region. Fails if
/// more than [`MAX_RESERVED`] ranges are given.
pub fn free_ranges(
    regions: impl Iterator<Item = MemoryRegion>,
    reserved: &[Range<u64>],
    limit: u64,
    mut emit: impl FnMut(u64, u64),
) -> Result<(), TooManyReserved> {
    if reserved.len() > MAX_RESERVED {
        return Err(TooManyReserved);
    }
    let mut sorted: [Range<u64>; MAX_RESERVED] = core::array::from_fn(|_| 0..0);
    sorted[..reserved.len()].clone_from_slice(reserved);
    let sorted = &mut sorted[..reserved.len()];
    sorted.sort_unstable_by_key(|r| r.start);

    for region in regions.filter(|r| r.kind == E820_RAM) {
        let start = align_up(region.addr);
        let end = align_down(region.addr.saturating_add(region.size)).min(align_down(limit));
        if start >= end {
            continue;
        }
        let mut cursor = start;
        for r in sorted.iter() {
            if r.end <= cursor {
                continue;
            }
            if r.start >= end {
                break;
            }
            let hole_start = align_down(r.start).max(cursor);
            if hole_start > cursor {
                emit(cursor, hole_start);
            }
            cursor = cursor.max(align_up(r.end));
        }
        if cursor < end {
            emit(cursor, end);
        }
    }
    Ok(())
}

fn align_up(x: u64) -> u64 {
    x.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

fn align_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram(addr: u64, size: u64) -> MemoryRegion {
        MemoryRegion { addr, size, kind: E820_RAM }
    }

    fn collect(regions: &[MemoryRegion], reserved: &[Range<u64>], limit: u64) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        free_ranges(regions.iter().copied(), reserved, limit, |a, b| v.push((a, b))).unwrap();
        v
    }

    #[test]
    fn a_typical_qemu_map() {
        let map = [
            ram(0, 0x9fc00),
            MemoryRegion { addr: 0x9fc00, size: 0x400, kind: 2 },
            ram(0x10_0000, 0x1fee_0000),
        ];
        let reserved = [0..0x10_0000, 0x10_0000..0x40_0123, 0x1000_0000..0x1000_8000];
        assert_eq!(
            collect(&map, &reserved, 1 << 32),
            [(0x40_1000, 0x1000_0000), (0x1000_8000, 0x1ffe_0000)]
        );
    }

    #[test]
    fn unaligned_regions_shrink_inward_and_limit_cuts() {
        assert_eq!(collect(&[ram(0x1001, 0x3000)], &[], u64::MAX), [(0x2000, 0x4000)]);
        assert_eq!(collect(&[ram(0x1000, 0x10_0000)], &[], 0x8000), [(0x1000, 0x8000)]);
        assert!(collect(&[ram(0x1001, 0xffe)], &[], u64::MAX).is_empty());
    }

    #[test]
    fn overlapping_and_unsorted_reservations() {
        let reserved = [0x5000..0x6000, 0x2000..0x5800, 0x8000..0x9000];
        assert_eq!(
            collect(&[ram(0, 0xa000)], &reserved, u64::MAX),
            [(0, 0x2000), (0x6000, 0x8000), (0x9000, 0xa000)]
        );
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        assert_eq!(collect(&[ram(u64::MAX - 0x1fff, u64::MAX)], &[], u64::MAX).len(), 1);
    }

    #[test]
    fn too_many_reservations_is_an_error() {
        let reserved = vec![0..1; MAX_RESERVED + 1];
        assert!(free_ranges([].into_iter(), &reserved, 0, |_, _| {}).is_err());
    }
}
