//! The program's address-space bookkeeping: the program break and mappings.
//!
//! This module owns the record of which user pages are mapped with which
//! rights (a map of page-aligned, non-overlapping, coalesced-by-nothing
//! ranges), and decides where `mmap` puts things and what `brk`, `munmap`
//! and `mprotect` change; every change is carried out through
//! [`Memory`], which the glue implements with the exokernel. Contents (file
//! mappings) are the dispatcher's business.
//!
//! ```text
//!   0 .. min_addr        never mapped (NULL pages; MAP_FIXED there is EPERM)
//!   ELF segments, stack  recorded by the loader with `record`
//!   brk_start .. brk_limit  the heap: brk grows up from brk_start
//!   mmap_lo .. mmap_hi   mmap without MAP_FIXED: highest free gap first (Linux's top-down layout)
//! ```
//!
//! Linux semantics kept: `brk` never fails, it returns the old break when it
//! cannot move (`mm/mmap.c`); `munmap` of unmapped pages succeeds; `mprotect`
//! over a hole is `ENOMEM`; `MAP_FIXED_NOREPLACE` over a mapping is `EEXIST`.

use crate::host::Memory;
use crate::linux::errno::*;
use crate::linux::*;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Rounds up to a page (`None` on overflow).
pub fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE_SIZE - 1).map(|v| v & !(PAGE_SIZE - 1))
}

/// Where things go in the address space (given by the glue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Lowest address a mapping may have (Linux's `mmap_min_addr`, 64 KiB).
    pub min_addr: u64,
    /// First address the program may not use.
    pub user_end: u64,
    /// Start of the heap (page after the ELF image).
    pub brk_start: u64,
    /// Limit of the heap.
    pub brk_limit: u64,
    /// Lowest address for non-fixed `mmap`.
    pub mmap_lo: u64,
    /// Highest address (exclusive) for non-fixed `mmap`.
    pub mmap_hi: u64,
}

/// The address-space record.
#[derive(Debug)]
pub struct Mm {
    layout: Layout,
    brk: u64,
    /// start -> (end, prot), page-aligned, non-overlapping.
    areas: BTreeMap<u64, (u64, u32)>,
}

impl Mm {
    /// A record with nothing mapped and the break at `layout.brk_start`.
    pub fn new(layout: Layout) -> Self {
        Mm { layout, brk: layout.brk_start, areas: BTreeMap::new() }
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Notes that `[start, end)` is mapped with `prot` (ELF segments and the
    /// stack, mapped by the loader).
    pub fn record(&mut self, start: u64, end: u64, prot: u32) {
        self.remove(start, end);
        self.areas.insert(start, (end, prot));
    }

    /// The areas overlapping `[start, end)`, clipped to it.
    fn overlaps(&self, start: u64, end: u64) -> Vec<(u64, u64, u32)> {
        let first = self.areas.range(..start).next_back().map_or(start, |(&s, _)| s);
        self.areas
            .range(first..end)
            .filter(|(_, (e, _))| *e > start)
            .map(|(&s, &(e, p))| (s.max(start), e.min(end), p))
            .collect()
    }

    /// Forgets `[start, end)` in the record (splitting areas).
    fn remove(&mut self, start: u64, end: u64) {
        let first = self.areas.range(..start).next_back().map_or(start, |(&s, _)| s);
        let hit: Vec<(u64, u64, u32)> = self
            .areas
            .range(first..end)
            .filter(|(_, (e, _))| *e > start)
            .map(|(&s, &(e, p))| (s, e, p))
            .collect();
        for (s, e, p) in hit {
            self.areas.remove(&s);
            if s < start {
                self.areas.insert(s, (start, p));
            }
            if e > end {
                self.areas.insert(end, (e, p));
            }
        }
    }

    /// Whether every page of `[start, end)` is mapped.
    pub fn covered(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        for (s, e, _) in self.overlaps(start, end) {
            if s > at {
                return false;
            }
            at = e;
        }
        at >= end
    }

    /// The rights of the page holding `addr`, if mapped.
    pub fn prot_at(&self, addr: u64) -> Option<u32> {
        self.overlaps(addr, addr + 1).first().map(|a| a.2)
    }

    /// Number of recorded areas (for tests and diagnostics).
    pub fn area_count(&self) -> usize {
        self.areas.len()
    }

    /// The current break.
    pub fn brk_now(&self) -> u64 {
        self.brk
    }

    /// `brk(2)`: moves the break to `new` if it stays in the heap region and
    /// the pages can be mapped; returns the (possibly unchanged) break.
    pub fn brk(&mut self, new: u64, mem: &mut dyn Memory) -> u64 {
        let l = self.layout;
        if new < l.brk_start || new > l.brk_limit {
            return self.brk;
        }
        let (old_end, new_end) =
            (page_up(self.brk).unwrap_or(u64::MAX), page_up(new).unwrap_or(u64::MAX));
        if new_end > old_end {
            if !self.overlaps(old_end, new_end).is_empty() {
                return self.brk; // something else lives there
            }
            if mem.map(old_end, new_end - old_end, PROT_READ | PROT_WRITE).is_err() {
                return self.brk;
            }
            self.areas.insert(old_end, (new_end, PROT_READ | PROT_WRITE));
        } else if new_end < old_end {
            if mem.unmap(new_end, old_end - new_end).is_err() {
                return self.brk;
            }
            self.remove(new_end, old_end);
        }
        self.brk = new;
        new
    }

    /// Chooses where `len` bytes go: the hint if free and in range, else the
    /// highest free gap in `[mmap_lo, mmap_hi)`.
    fn place(&self, hint: u64, len: u64) -> SysResult<u64> {
        let l = self.layout;
        if hint != 0
            && hint.is_multiple_of(PAGE_SIZE)
            && hint >= l.min_addr
            && let Some(end) = hint.checked_add(len)
            && end <= l.user_end
            && self.overlaps(hint, end).is_empty()
        {
            return Ok(hint);
        }
        let mut top = l.mmap_hi;
        for (&s, &(e, _)) in self.areas.range(..l.mmap_hi).rev() {
            if e <= top && top - e >= len && top - len >= l.mmap_lo {
                return Ok(top - len);
            }
            top = top.min(s);
            if top < l.mmap_lo.saturating_add(len) {
                break;
            }
        }
        if top >= l.mmap_lo && top - l.mmap_lo >= len {
            return Ok(top - len);
        }
        Err(ENOMEM)
    }

    /// Maps `len` (page-rounded) fresh zero pages with `prot` at `addr` (with
    /// `fixed`/`noreplace` as `MAP_FIXED`/`MAP_FIXED_NOREPLACE`), or where
    /// `place` chooses. Returns the address.
    pub fn map(
        &mut self,
        addr: u64,
        len: u64,
        prot: u32,
        fixed: bool,
        noreplace: bool,
        mem: &mut dyn Memory,
    ) -> SysResult<u64> {
        let len = page_up(len).ok_or(ENOMEM)?;
        if len == 0 {
            return Err(EINVAL);
        }
        let at = if fixed || noreplace {
            if !addr.is_multiple_of(PAGE_SIZE) {
                return Err(EINVAL);
            }
            let end = addr.checked_add(len).ok_or(ENOMEM)?;
            if end > self.layout.user_end {
                return Err(ENOMEM);
            }
            if addr < self.layout.min_addr {
                return Err(EPERM);
            }
            if noreplace && !self.overlaps(addr, end).is_empty() {
                return Err(EEXIST);
            }
            addr
        } else {
            self.place(addr & !(PAGE_SIZE - 1), len)?
        };
        mem.map(at, len, prot)?;
        self.record(at, at + len, prot);
        Ok(at)
    }

    /// `munmap(2)`.
    pub fn unmap(&mut self, addr: u64, len: u64, mem: &mut dyn Memory) -> SysResult<()> {
        if !addr.is_multiple_of(PAGE_SIZE) || len == 0 {
            return Err(EINVAL);
        }
        let end = page_up(len).and_then(|l| addr.checked_add(l)).ok_or(EINVAL)?;
        if end > self.layout.user_end {
            return Err(EINVAL);
        }
        for (s, e, _) in self.overlaps(addr, end) {
            mem.unmap(s, e - s)?;
        }
        self.remove(addr, end);
        Ok(())
    }

    /// `mprotect(2)`.
    pub fn protect(
        &mut self,
        addr: u64,
        len: u64,
        prot: u32,
        mem: &mut dyn Memory,
    ) -> SysResult<()> {
        if !addr.is_multiple_of(PAGE_SIZE) || prot & !(PROT_READ | PROT_WRITE | PROT_EXEC) != 0 {
            return Err(EINVAL);
        }
        let end = page_up(len).and_then(|l| addr.checked_add(l)).ok_or(ENOMEM)?;
        if len == 0 {
            return Ok(());
        }
        if !self.covered(addr, end) {
            return Err(ENOMEM);
        }
        mem.protect(addr, end - addr, prot)?;
        self.record(addr, end, prot);
        Ok(())
    }

    /// `madvise(MADV_DONTNEED)` on private anonymous memory: the pages read
    /// as zero afterwards, which is done by mapping them afresh.
    pub fn discard(&mut self, addr: u64, len: u64, mem: &mut dyn Memory) -> SysResult<()> {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(EINVAL);
        }
        let end = page_up(len).and_then(|l| addr.checked_add(l)).ok_or(EINVAL)?;
        if !self.covered(addr, end) {
            return Err(ENOMEM);
        }
        for (s, e, p) in self.overlaps(addr, end) {
            mem.map(s, e - s, p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::UserMemory;
    use crate::mock::MockMemory;
    use proptest::prelude::*;

    pub(crate) const LAYOUT: Layout = Layout {
        min_addr: 0x10000,
        user_end: 0x8000_0000_0000,
        brk_start: 0x60_0000,
        brk_limit: 0x4000_0000,
        mmap_lo: 0x10_0000_0000,
        mmap_hi: 0x7f00_0000_0000,
    };

    #[test]
    fn brk_grows_shrinks_and_refuses() {
        let mut mm = Mm::new(LAYOUT);
        let mut mem = MockMemory::default();
        assert_eq!(mm.brk(0, &mut mem), 0x60_0000);
        assert_eq!(mm.brk(0x60_0010, &mut mem), 0x60_0010);
        mem.write(0x60_0000, b"heap").unwrap();
        assert_eq!(mm.brk(0x60_3000, &mut mem), 0x60_3000);
        assert_eq!(mem.get(0x60_0000, 4), b"heap");
        assert_eq!(mm.brk(0x60_1000, &mut mem), 0x60_1000);
        assert_eq!(mem.prot(0x60_1000), None);
        assert_eq!(mm.brk(LAYOUT.brk_limit + 1, &mut mem), 0x60_1000);
        assert_eq!(mm.brk(0x1000, &mut mem), 0x60_1000);
    }

    #[test]
    fn mmap_places_top_down_and_splits() {
        let mut mm = Mm::new(LAYOUT);
        let mut mem = MockMemory::default();
        let a = mm.map(0, 0x3000, PROT_READ | PROT_WRITE, false, false, &mut mem).unwrap();
        assert_eq!(a, LAYOUT.mmap_hi - 0x3000);
        let b = mm.map(0, 1, PROT_READ, false, false, &mut mem).unwrap();
        assert_eq!(b, a - 0x1000);
        // Punch a hole in the middle of a; a new page goes... below b (top-down, hole too small? no: exact fit)
        mm.unmap(a + 0x1000, 0x1000, &mut mem).unwrap();
        assert_eq!(mm.area_count(), 3);
        assert!(!mm.covered(a, a + 0x3000));
        assert_eq!(mm.protect(a, 0x3000, PROT_READ, &mut mem), Err(ENOMEM));
        mm.protect(a, 0x1000, PROT_READ, &mut mem).unwrap();
        assert_eq!(mem.prot(a), Some(PROT_READ));
        let c = mm.map(0, 0x1000, PROT_READ, false, false, &mut mem).unwrap();
        assert_eq!(c, a + 0x1000, "highest free gap");
        assert_eq!(mm.map(a, 0x1000, PROT_READ, false, true, &mut mem), Err(EEXIST));
        assert_eq!(mm.map(a + 1, 0x1000, PROT_READ, true, false, &mut mem), Err(EINVAL));
        assert_eq!(mm.map(0, 0x1000, PROT_READ, true, false, &mut mem), Err(EPERM));
        assert_eq!(mm.map(0, 0, PROT_READ, false, false, &mut mem), Err(EINVAL));
        // MAP_FIXED replaces.
        mem.write(a + 0x2000, b"x").unwrap();
        mm.map(a + 0x2000, 0x1000, PROT_READ | PROT_WRITE, true, false, &mut mem).unwrap();
        assert_eq!(mem.get(a + 0x2000, 1), [0]);
        // munmap of nothing is fine; unaligned is not.
        assert_eq!(mm.unmap(0x20_0000, 0x1000, &mut mem), Ok(()));
        assert_eq!(mm.unmap(0x20_0001, 0x1000, &mut mem), Err(EINVAL));
        // A hint that is free is taken.
        assert_eq!(
            mm.map(0x30_0000_0000, 0x1000, PROT_READ, false, false, &mut mem),
            Ok(0x30_0000_0000)
        );
    }

    proptest! {
        /// The record always agrees with what the mock has mapped, page by page.
        #[test]
        fn record_matches_memory(ops in proptest::collection::vec((0u8..4, 0u64..24, 1u64..6, 0u32..8), 1..40)) {
            let layout = Layout { mmap_lo: 0x100_0000, mmap_hi: 0x101_8000, ..LAYOUT };
            let mut mm = Mm::new(layout);
            let mut mem = MockMemory::default();
            for (op, page, n, prot) in ops {
                let addr = layout.mmap_lo + page * PAGE_SIZE;
                let len = n * PAGE_SIZE;
                let _ = match op {
                    0 => mm.map(0, len, prot, false, false, &mut mem).map(|_| ()),
                    1 => mm.map(addr, len, prot, true, false, &mut mem).map(|_| ()),
                    2 => mm.unmap(addr, len, &mut mem),
                    _ => mm.protect(addr, len, prot, &mut mem),
                };
                for p in 0..30 {
                    let a = layout.mmap_lo + p * PAGE_SIZE;
                    prop_assert_eq!(mm.prot_at(a), mem.prot(a), "page {}", p);
                }
            }
        }
    }
}
