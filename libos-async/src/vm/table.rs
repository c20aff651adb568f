//! The region table: which address ranges the library's virtual-memory
//! layer owns, with what policy. Pure bookkeeping, no system calls, tested
//! on the host.
//!
//! ```text
//!   start = base - guard      base                 low              end
//!   | guard (never mapped) ... | reserved/lazy ...  | committed ...     |
//!                                                  (Fill::Grow only)
//! ```
//!
//! Invariants (held by [`Table::insert`], checked by the property tests):
//! * entries are sorted by `base`, and their spans `start .. end` (guard
//!   included) are disjoint: a guard page is never part of another region;
//! * every span is page-aligned, non-empty, inside `USER_MIN .. USER_MAX`
//!   and clear of the kernel's info region;
//! * `low` of a growable region stays in `base ..= end` and only moves down.
//!
//! The table is a fixed array (no allocation ever): the fault handler reads
//! it, and the fault handler must never allocate.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::{Error, PAGE_SIZE, Rights};

/// Longest region name kept (longer names are cut).
pub const NAME_MAX: usize = 23;

/// How faults inside a region (not its guard) are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Address space only: faults are not the region layer's business
    /// (they go to the application's handler); pages exist once committed.
    Reserved,
    /// Anonymous memory zero-filled on first touch, page by page.
    Lazy,
    /// A stack: the committed part `low .. end` grows down, to `base` at
    /// most, when a fault hits below it; below `base` is the guard.
    Grow,
}

/// A region's name, stored inline (the fault handler prints it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    len: u8,
    bytes: [u8; NAME_MAX],
}

impl Name {
    /// The empty name.
    pub const EMPTY: Name = Name { len: 0, bytes: [0; NAME_MAX] };

    /// `s`, cut to [`NAME_MAX`] bytes on a character boundary.
    pub fn new(s: &str) -> Name {
        let mut name = Name::EMPTY;
        let _ = fmt::Write::write_str(&mut name, s);
        name
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        // Only whole characters are ever copied in (see `write_str`).
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }
}

impl fmt::Write for Name {
    /// Appends what fits, cutting at a character boundary; never fails, so
    /// `write!(name, "stack {core}")` builds a name without allocating.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = NAME_MAX - usize::from(self.len);
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        let at = usize::from(self.len);
        self.bytes[at..at + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n as u8;
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One region.
pub struct Entry {
    /// First byte of the region proper.
    pub base: u64,
    /// End (exclusive).
    pub end: u64,
    /// Bytes of guard directly below `base`.
    pub guard: u64,
    /// Fault policy.
    pub fill: Fill,
    /// Rights of the pages the region maps.
    pub rights: Rights,
    /// For messages.
    pub name: Name,
    /// [`Fill::Grow`]: bottom of the committed part (only moves down, by
    /// the fault handler, under the table's read lock: hence atomic).
    pub low: AtomicU64,
}

impl Entry {
    // A template for filling arrays (`[const { Entry::EMPTY }; N]`): each
    // use is a fresh value, which is what is wanted.
    #[allow(clippy::declare_interior_mutable_const)]
    const EMPTY: Entry = Entry {
        base: 0,
        end: 0,
        guard: 0,
        fill: Fill::Reserved,
        rights: Rights::NONE,
        name: Name::EMPTY,
        low: AtomicU64::new(0),
    };

    /// A region `base .. end` with `guard` bytes of guard below it; `low`
    /// starts at `end` (nothing committed by growth yet).
    pub fn new(name: Name, base: u64, end: u64, guard: u64, fill: Fill, rights: Rights) -> Entry {
        Entry { base, end, guard, fill, rights, name, low: AtomicU64::new(end) }
    }

    /// First byte of the span (the guard's).
    pub fn start(&self) -> u64 {
        self.base - self.guard
    }

    /// Whether the span is well formed (see the module invariants).
    fn valid(&self) -> bool {
        let aligned = [self.base, self.end, self.guard].iter().all(|v| v % PAGE_SIZE == 0);
        aligned
            && self.base < self.end
            && self.guard <= self.base
            && self.start() >= abi::USER_MIN
            && self.end <= abi::USER_MAX
            && (self.end <= abi::INFO_VA || self.start() >= abi::INFO_VA + abi::INFO_REGION_SIZE)
    }
}

/// Where an address fell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    /// In the guard below the region.
    Guard,
    /// In the region proper.
    Inside,
}

/// The pages a fault at `addr` in a [`Fill::Grow`] region maps, as
/// `from .. to`: everything from the faulting page up to the committed
/// part (`low`), so the committed part stays contiguous; just the page if
/// it is already inside the committed part (a page a racing fault maps).
pub fn grow_plan(low: u64, addr: u64) -> (u64, u64) {
    let page = addr & !(PAGE_SIZE - 1);
    if page < low { (page, low) } else { (page, page + PAGE_SIZE) }
}

/// The table: up to `N` regions, sorted, disjoint.
pub struct Table<const N: usize> {
    entries: [Entry; N],
    len: usize,
}

impl<const N: usize> Table<N> {
    /// An empty table.
    pub const fn new() -> Self {
        Table { entries: [const { Entry::EMPTY }; N], len: 0 }
    }

    /// The regions, lowest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries[..self.len]
    }

    /// Adds `e`. [`Error::InvalidArgument`] for a malformed span,
    /// [`Error::AlreadyMapped`] if its span (guard included) overlaps
    /// another's, [`Error::NoMemory`] when the table is full.
    pub fn insert(&mut self, e: Entry) -> Result<&Entry, Error> {
        if !e.valid() {
            return Err(Error::InvalidArgument);
        }
        let i = self.entries().partition_point(|x| x.base < e.base);
        let clear_below = i == 0 || self.entries[i - 1].end <= e.start();
        let clear_above = i == self.len || e.end <= self.entries[i].start();
        if !(clear_below && clear_above) {
            return Err(Error::AlreadyMapped);
        }
        if self.len == N {
            return Err(Error::NoMemory);
        }
        self.entries[i..=self.len].rotate_right(1);
        self.entries[i] = e;
        self.len += 1;
        Ok(&self.entries[i])
    }

    /// Removes the region starting at `base`.
    pub fn remove(&mut self, base: u64) -> Option<Entry> {
        let i = self.entries().binary_search_by_key(&base, |e| e.base).ok()?;
        let e = core::mem::replace(&mut self.entries[i], Entry::EMPTY);
        self.entries[i..self.len].rotate_left(1);
        self.len -= 1;
        Some(e)
    }

    /// The region at exactly `base`.
    pub fn get(&self, base: u64) -> Option<&Entry> {
        let i = self.entries().binary_search_by_key(&base, |e| e.base).ok()?;
        Some(&self.entries[i])
    }

    /// The region whose span holds `addr`, and whether `addr` is in its
    /// guard. A binary search: the fault path's only look at the table.
    #[inline]
    pub fn lookup(&self, addr: u64) -> Option<(&Entry, Hit)> {
        let i = self.entries().partition_point(|e| e.start() <= addr);
        let e = self.entries.get(i.checked_sub(1)?)?;
        if addr < e.base {
            Some((e, Hit::Guard))
        } else if addr < e.end {
            Some((e, Hit::Inside))
        } else {
            None
        }
    }

    /// The lowest `base` in `lo .. hi` where a region of `bytes` with
    /// `guard` bytes of guard fits between the existing spans (page
    /// granular; `None` if nothing fits).
    pub fn find_free(&self, lo: u64, hi: u64, bytes: u64, guard: u64) -> Option<u64> {
        let need = bytes.checked_add(guard)?;
        let mut cursor = lo;
        for e in self.entries().iter().chain(core::iter::once(&Entry {
            base: hi,
            end: hi,
            ..Entry::EMPTY
        })) {
            if e.end <= cursor {
                continue;
            }
            let gap_end = e.start().min(hi);
            if gap_end >= cursor && gap_end - cursor >= need {
                return Some(cursor + guard);
            }
            cursor = cursor.max(e.end);
            if cursor >= hi {
                return None;
            }
        }
        None
    }
}

impl<const N: usize> Default for Table<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Lowers a growable region's committed part to `to` (never raises it).
pub fn lower_committed(e: &Entry, to: u64) {
    e.low.fetch_min(to.max(e.base), Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    const B: u64 = 0x1000_0000;

    fn entry(base: u64, pages: u64, guard_pages: u64) -> Entry {
        Entry::new(
            Name::new("t"),
            base,
            base + pages * PAGE_SIZE,
            guard_pages * PAGE_SIZE,
            Fill::Lazy,
            Rights::RW,
        )
    }

    #[test]
    fn names_are_cut_on_character_boundaries() {
        assert_eq!(Name::new("stack 3").as_str(), "stack 3");
        let long = "é".repeat(20);
        let n = Name::new(&long);
        assert!(n.as_str().len() <= NAME_MAX && long.starts_with(n.as_str()));
        let mut n = Name::EMPTY;
        let _ = fmt::Write::write_fmt(&mut n, format_args!("stack {}", 63));
        assert_eq!(n.as_str(), "stack 63");
    }

    #[test]
    fn guards_are_not_shareable_but_adjacent_regions_are_fine() {
        let mut t: Table<8> = Table::new();
        t.insert(entry(B, 4, 1)).unwrap();
        // Its guard is B-4K .. B: a region ending inside it overlaps.
        assert_eq!(t.insert(entry(B - 2 * PAGE_SIZE, 2, 0)).err(), Some(Error::AlreadyMapped));
        // Ending exactly at the guard's start is fine.
        t.insert(entry(B - 3 * PAGE_SIZE, 2, 0)).unwrap();
        // A region above whose guard would be the first's last page.
        assert_eq!(t.insert(entry(B + 5 * PAGE_SIZE, 1, 2)).err(), Some(Error::AlreadyMapped));
        t.insert(entry(B + 5 * PAGE_SIZE, 1, 1)).unwrap();
        assert_eq!(t.lookup(B - 1).map(|(e, h)| (e.base, h)), Some((B, Hit::Guard)));
        assert_eq!(t.lookup(B + 3 * PAGE_SIZE).map(|(e, h)| (e.base, h)), Some((B, Hit::Inside)));
        assert_eq!(t.lookup(B + 4 * PAGE_SIZE).map(|(_, h)| h), Some(Hit::Guard));
        assert!(t.lookup(B + 6 * PAGE_SIZE).is_none());
        assert!(t.remove(B).is_some() && t.lookup(B).is_none() && t.remove(B).is_none());
    }

    #[test]
    fn malformed_spans_and_a_full_table_are_refused() {
        let mut t: Table<1> = Table::new();
        assert_eq!(t.insert(entry(B + 1, 1, 0)).err(), Some(Error::InvalidArgument));
        assert_eq!(t.insert(entry(B, 0, 0)).err(), Some(Error::InvalidArgument));
        assert_eq!(t.insert(entry(abi::USER_MIN, 1, 1)).err(), Some(Error::InvalidArgument));
        assert_eq!(t.insert(entry(abi::INFO_VA, 1, 0)).err(), Some(Error::InvalidArgument));
        assert_eq!(t.insert(entry(abi::USER_MAX, 1, 0)).err(), Some(Error::InvalidArgument));
        t.insert(entry(B, 1, 0)).unwrap();
        assert_eq!(t.insert(entry(2 * B, 1, 0)).err(), Some(Error::NoMemory));
    }

    #[test]
    fn growth_maps_down_to_the_faulting_page_and_never_raises_low() {
        let e = entry(B, 16, 1);
        assert_eq!(
            grow_plan(B + 16 * PAGE_SIZE, B + 13 * PAGE_SIZE + 5),
            (B + 13 * PAGE_SIZE, B + 16 * PAGE_SIZE)
        );
        assert_eq!(
            grow_plan(B + 8 * PAGE_SIZE, B + 9 * PAGE_SIZE),
            (B + 9 * PAGE_SIZE, B + 10 * PAGE_SIZE)
        );
        lower_committed(&e, B + 8 * PAGE_SIZE);
        lower_committed(&e, B + 12 * PAGE_SIZE);
        assert_eq!(e.low.load(Ordering::Relaxed), B + 8 * PAGE_SIZE);
        lower_committed(&e, B - PAGE_SIZE);
        assert_eq!(e.low.load(Ordering::Relaxed), B, "never below the limit");
    }

    /// A model region: (start, base, end) in pages from `B`.
    fn span(e: &Entry) -> (u64, u64, u64) {
        (e.start(), e.base, e.end)
    }

    proptest! {
        /// Random inserts and removes: an insert succeeds exactly when its
        /// span overlaps no live span; the table stays sorted and disjoint;
        /// lookup agrees with a linear search of the model.
        #[test]
        fn inserts_removes_and_lookups_agree_with_a_model(
            ops in proptest::collection::vec((0u64..64, 1u64..6, 0u64..3, any::<bool>()), 1..120),
            probes in proptest::collection::vec(0u64..72 * PAGE_SIZE, 1..64),
        ) {
            let mut t: Table<16> = Table::new();
            let mut model: Vec<(u64, u64, u64)> = Vec::new();
            for (at, pages, guard, remove) in ops {
                let base = B + (at + 3) * PAGE_SIZE;
                if remove {
                    let had = model.iter().position(|m| m.1 == base);
                    prop_assert_eq!(t.remove(base).is_some(), had.is_some());
                    if let Some(i) = had { model.remove(i); }
                    continue;
                }
                let e = entry(base, pages, guard);
                let s = span(&e);
                let overlaps = model.iter().any(|m| s.0 < m.2 && m.0 < s.2);
                let full = model.len() == 16;
                match t.insert(e) {
                    Ok(_) => { prop_assert!(!overlaps && !full); model.push(s); }
                    Err(Error::AlreadyMapped) => prop_assert!(overlaps),
                    Err(Error::NoMemory) => prop_assert!(full && !overlaps),
                    Err(other) => prop_assert!(false, "unexpected {:?}", other),
                }
                let es = t.entries();
                for w in es.windows(2) {
                    prop_assert!(w[0].base < w[1].base && w[0].end <= w[1].start());
                }
            }
            for p in probes {
                let addr = B + p;
                let want = model.iter().find(|m| m.0 <= addr && addr < m.2).map(|m| {
                    (m.1, if addr < m.1 { Hit::Guard } else { Hit::Inside })
                });
                prop_assert_eq!(t.lookup(addr).map(|(e, h)| (e.base, h)), want);
            }
        }

        /// `find_free` gives a place that fits in the window and that
        /// `insert` accepts; `None` only when no gap is big enough.
        #[test]
        fn find_free_places_regions_that_insert_accepts(
            existing in proptest::collection::vec((0u64..64, 1u64..6, 0u64..3), 0..12),
            pages in 1u64..20,
            guard in 0u64..3,
        ) {
            let mut t: Table<32> = Table::new();
            for (at, p, g) in existing {
                let _ = t.insert(entry(B + (at + 3) * PAGE_SIZE, p, g));
            }
            let (lo, hi) = (B, B + 80 * PAGE_SIZE);
            match t.find_free(lo, hi, pages * PAGE_SIZE, guard * PAGE_SIZE) {
                Some(base) => {
                    let e = entry(base, pages, guard);
                    prop_assert!(e.start() >= lo && e.end <= hi);
                    prop_assert!(t.insert(e).is_ok());
                }
                None => {
                    // Every page-aligned placement in the window overlaps.
                    for s in (lo..hi).step_by(PAGE_SIZE as usize) {
                        let end = s + (pages + guard) * PAGE_SIZE;
                        if end > hi { break; }
                        let clash = t.entries().iter().any(|e| s < e.end && e.start() < end);
                        prop_assert!(clash, "a gap at {:#x} was missed", s);
                    }
                }
            }
        }

        /// Growth never maps below the faulting page nor above the
        /// committed part, and always maps the faulting page.
        #[test]
        fn grow_plan_is_contiguous(low_p in 0u64..64, addr_off in 0u64..64 * PAGE_SIZE) {
            let low = B + low_p * PAGE_SIZE;
            let addr = B + addr_off;
            let (from, to) = grow_plan(low, addr);
            prop_assert!(from <= addr && addr < to && from % PAGE_SIZE == 0);
            prop_assert!(to == low.max(from + PAGE_SIZE));
        }
    }
}
