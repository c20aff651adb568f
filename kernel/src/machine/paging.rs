//! Environment address spaces: 4-level page tables the kernel owns.
//!
//! Each environment has one [`AddressSpace`]: a PML4 whose kernel half
//! (entries 256..512) is copied from the boot page tables and never changes,
//! and whose user half is built page by page as the libOS asks for mappings.
//! Every page-table page is a frame charged to the environment (recorded as
//! [`FrameKind::PageTable`](kernel::ownership::FrameKind) by the caller), and
//! the environment can never map one. The low identity map of the boot tables
//! (PML4 entry 0) is *not* copied, so the user half holds only what the
//! environment mapped.
//!
//! This module edits page-table entries through the direct map; it does not
//! decide whether a mapping is allowed (that is the frame table's job, see
//! `machine::env`) and does not flush other cores' TLBs (callers do).

use super::memory::frame_virt;
use abi::{Error, Rights};
use alloc::vec::Vec;
use kernel::frames::FrameNumber;
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{PageTable, PageTableFlags as F};

unsafe extern "C" {
    static boot_pml4: u8;
}

static NX: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Records whether the CPU honours the no-execute bit (EFER.NXE, set by the
/// boot stub when CPUID offers NX). Call once at boot.
pub fn init() {
    use x86_64::registers::model_specific::{Efer, EferFlags};
    NX.store(
        Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE),
        core::sync::atomic::Ordering::Relaxed,
    );
}

fn nx_enabled() -> bool {
    NX.load(core::sync::atomic::Ordering::Relaxed)
}

/// Leaf flags for a user mapping with `rights` (READ is implied).
pub fn leaf_flags(rights: Rights) -> F {
    let mut flags = F::PRESENT | F::USER_ACCESSIBLE;
    if rights.contains(Rights::WRITE) {
        flags |= F::WRITABLE;
    }
    if !rights.contains(Rights::EXEC) && nx_enabled() {
        flags |= F::NO_EXECUTE;
    }
    flags
}

/// Rights a leaf entry grants.
pub fn rights_of(flags: F) -> Rights {
    let mut r = Rights::READ;
    if flags.contains(F::WRITABLE) {
        r = r.union(Rights::WRITE);
    }
    if !flags.contains(F::NO_EXECUTE) {
        r = r.union(Rights::EXEC);
    }
    r
}

/// The physical address of the boot PML4 (the kernel's own page tables).
pub fn kernel_cr3() -> u64 {
    (&raw const boot_pml4) as u64
}

fn table(frame: FrameNumber) -> &'static mut PageTable {
    // SAFETY: `frame` is a page-table frame of an address space, reached only
    // with that address space's lock held (all methods take `&mut self` or
    // `&self` under the env's aspace lock), so no other reference to it is
    // live; the direct map keeps it mapped.
    unsafe { &mut *(frame_virt(frame) as *mut PageTable) }
}

fn indices(va: u64) -> [usize; 4] {
    [
        (va >> 39) as usize & 511,
        (va >> 30) as usize & 511,
        (va >> 21) as usize & 511,
        (va >> 12) as usize & 511,
    ]
}

/// What [`AddressSpace::walk_leaves`] does with the leaves it finds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaves {
    /// Clear them (the caller flushes the TLBs).
    Remove,
    /// Only report them.
    Keep,
}

/// What an [`AddressSpace::unmap_some`] step did with shared leaf tables.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SharedSpans {
    /// Pages of the whole shared spans it removed (present entries).
    pub removed_pages: u64,
    /// It stopped at a shared span the range covers only in part.
    pub refused: bool,
}

/// The mark of a directory entry pointing to a [`SharedLeafTable`] (an
/// ignored bit of a table-pointing entry; leaf entries use bit 9 for
/// copy-on-write).
const SHARED_TABLE: F = F::BIT_11;

/// The span of one leaf table.
const SPAN_2M: u64 = 512 * abi::PAGE_SIZE;

/// A leaf table the kernel builds once and several address spaces point to
/// ([`AddressSpace::install_shared`]): read-only pages of frames no
/// environment owns (the initrd's). Never written after it is built, never
/// freed.
pub struct SharedLeafTable {
    frame: FrameNumber,
    /// Its block summary (see [`BLOCKS_SHIFT`]).
    blocks: u8,
}

impl SharedLeafTable {
    /// Builds, in `frame` (a zeroed frame the kernel keeps for good), the
    /// table mapping `count` (at most 512) consecutive frames from `first`
    /// read-only, with their accessed bits preset (so the MMU never writes
    /// the table).
    pub fn build(frame: FrameNumber, first: FrameNumber, count: usize) -> SharedLeafTable {
        assert!(count <= 512);
        let entries = table(frame);
        let flags = leaf_flags(Rights::READ) | F::ACCESSED;
        let mut blocks = 0u8;
        for (i, entry) in entries.iter_mut().take(count).enumerate() {
            entry.set_addr(x86_64::PhysAddr::new(first.addr() + i as u64 * abi::PAGE_SIZE), flags);
            blocks |= 1 << (i / RawEntries::BLOCK);
        }
        SharedLeafTable { frame, blocks }
    }

    /// The table's frame.
    pub fn frame(&self) -> FrameNumber {
        self.frame
    }
}

/// One environment's page tables.
pub struct AddressSpace {
    pml4: FrameNumber,
}

impl AddressSpace {
    /// A new address space whose PML4 is `pml4` (a zeroed frame the caller
    /// allocated and charged).
    pub fn new(pml4: FrameNumber) -> AddressSpace {
        // SAFETY: the boot PML4 is a static page in the kernel image, never
        // written after boot; reading its kernel half is race-free.
        let boot = unsafe { &*(super::memory::phys_to_virt(kernel_cr3()) as *const PageTable) };
        let new = table(pml4);
        for i in 256..512 {
            new[i] = boot[i].clone();
        }
        AddressSpace { pml4 }
    }

    /// The PML4 frame.
    pub fn root(&self) -> FrameNumber {
        self.pml4
    }

    /// Makes sure the tables leading to page `va` exist, creating them with
    /// `alloc_table` (which returns zeroed, charged frames). Returns the
    /// frame of the last-level table.
    pub fn ensure_tables(
        &mut self,
        va: u64,
        alloc_table: &mut dyn FnMut() -> Result<FrameNumber, Error>,
    ) -> Result<FrameNumber, Error> {
        self.tables_to(va, alloc_table).map(|(last, _)| last)
    }

    /// [`ensure_tables`](Self::ensure_tables), also returning the entry that
    /// points to the last-level table (whose block summary
    /// [`map`](Self::map) keeps).
    fn tables_to(
        &mut self,
        va: u64,
        alloc_table: &mut dyn FnMut() -> Result<FrameNumber, Error>,
    ) -> Result<(FrameNumber, &'static mut PageTableEntry), Error> {
        let (directory, parent) = self.directory_of(va, alloc_table)?;
        let entry = &mut table(directory)[indices(va)[2]];
        if entry.is_unused() {
            let new = alloc_table()?;
            entry.set_addr(
                x86_64::PhysAddr::new(new.addr()),
                F::PRESENT | F::WRITABLE | F::USER_ACCESSIBLE,
            );
            mark_block(parent, indices(va)[2]);
        } else if entry.flags().contains(SHARED_TABLE) {
            // The kernel's shared leaf table: nobody writes in it.
            return Err(Error::Reserved);
        }
        Ok((FrameNumber::from_addr(entry.addr().as_u64()), entry))
    }

    /// Makes the tables down to the page directory covering `va` (PML4 →
    /// PDPT → PD), returning the directory's frame and the entry pointing to
    /// it.
    fn directory_of(
        &mut self,
        va: u64,
        alloc_table: &mut dyn FnMut() -> Result<FrameNumber, Error>,
    ) -> Result<(FrameNumber, &'static mut PageTableEntry), Error> {
        let mut current = self.pml4;
        let mut parent: Option<&'static mut PageTableEntry> = None;
        for &i in &indices(va)[..2] {
            let entry = &mut table(current)[i];
            if entry.is_unused() {
                let new = alloc_table()?;
                entry.set_addr(
                    x86_64::PhysAddr::new(new.addr()),
                    F::PRESENT | F::WRITABLE | F::USER_ACCESSIBLE,
                );
                if let Some(parent) = parent {
                    mark_block(parent, i);
                }
            }
            current = FrameNumber::from_addr(entry.addr().as_u64());
            parent = Some(entry);
        }
        Ok((current, parent.expect("two levels above the directories")))
    }

    /// The raw page-directory entry covering `va` (0 when it or a table
    /// above it is absent), read without borrowing any table.
    fn directory_entry(&self, va: u64) -> u64 {
        let mut current = self.pml4;
        let mut entry = 0;
        for &i in &indices(va)[..3] {
            entry = RawEntries::of(current).get(i);
            if entry == 0 {
                return 0;
            }
            current = FrameNumber::from_addr(entry & ENTRY_ADDR_MASK);
        }
        entry
    }

    /// Whether the 2 MiB span at `va` (aligned) has no leaf table, shared
    /// or private: nothing is mapped in it and nothing ever was since its
    /// table went (a private table stays until the address space ends).
    pub fn span_is_vacant(&self, va: u64) -> bool {
        self.directory_entry(va) == 0
    }

    /// Whether any 2 MiB span meeting `[va, end)` is a shared leaf table's.
    pub fn shared_in(&self, va: u64, end: u64) -> bool {
        let mut at = va & !(SPAN_2M - 1);
        while at < end {
            if self.directory_entry(at) & SHARED_TABLE.bits() != 0 {
                return true;
            }
            at += SPAN_2M;
        }
        false
    }

    /// Points the 2 MiB span at `va` (aligned and
    /// [vacant](Self::span_is_vacant)) at `shared`, a leaf table of the kernel's
    /// that no address space owns and nobody writes after it is built
    /// ([`SharedLeafTable`]), making the directories above it with
    /// `alloc_table`. The span is then read-only as a whole: mapping,
    /// unmapping or protecting one page of it is refused, and only an
    /// [`unmap_some`](Self::unmap_some) over the whole span removes it.
    pub fn install_shared(
        &mut self,
        va: u64,
        shared: &SharedLeafTable,
        alloc_table: &mut dyn FnMut() -> Result<FrameNumber, Error>,
    ) -> Result<(), Error> {
        let (directory, parent) = self.directory_of(va, alloc_table)?;
        let i = indices(va)[2];
        let entry = &mut table(directory)[i];
        if !entry.is_unused() {
            return Err(Error::AlreadyMapped);
        }
        // Read-only at the directory too, and accessed already, so the MMU
        // never writes the entry's accessed bit, nor any bit of the shared
        // table (its leaves are preset accessed, and never dirty).
        let flags = F::PRESENT | F::USER_ACCESSIBLE | F::ACCESSED | SHARED_TABLE;
        entry.set_addr(x86_64::PhysAddr::new(shared.frame.addr()), flags);
        entry.set_flags(F::from_bits_retain(
            flags.bits() | u64::from(shared.blocks) << BLOCKS_SHIFT,
        ));
        mark_block(parent, i);
        Ok(())
    }

    /// Maps page `va` to `frame` with `flags`, creating intermediate tables
    /// with `alloc_table` as needed.
    pub fn map(
        &mut self,
        va: u64,
        frame: FrameNumber,
        flags: F,
        alloc_table: &mut dyn FnMut() -> Result<FrameNumber, Error>,
    ) -> Result<(), Error> {
        let (last, parent) = self.tables_to(va, alloc_table)?;
        let i = indices(va)[3];
        let leaf = &mut table(last)[i];
        if !leaf.is_unused() {
            return Err(Error::AlreadyMapped);
        }
        leaf.set_addr(x86_64::PhysAddr::new(frame.addr()), flags);
        mark_block(parent, i);
        Ok(())
    }

    /// The present leaf entry of page `va`, to be written: `NotMapped` if
    /// there is none, `Reserved` if it lies in a shared leaf table (those
    /// entries are never written, and never borrowed mutably:
    /// [`translate`](Self::translate) reads them).
    fn leaf(&self, va: u64) -> Result<&'static mut PageTableEntry, Error> {
        let idx = indices(va);
        let mut current = self.pml4;
        for &i in &idx[..3] {
            let entry = &table(current)[i];
            if entry.is_unused() {
                return Err(Error::NotMapped);
            }
            if entry.flags().contains(SHARED_TABLE) {
                return Err(Error::Reserved);
            }
            current = FrameNumber::from_addr(entry.addr().as_u64());
        }
        let leaf = &mut table(current)[idx[3]];
        if leaf.is_unused() { Err(Error::NotMapped) } else { Ok(leaf) }
    }

    /// The present leaf entry of page `va`, to read and rewrite its flags
    /// with one walk (the caller flushes the TLBs after a downgrade); `None`
    /// also for a page of a shared leaf table.
    pub fn leaf_mut(&mut self, va: u64) -> Option<Leaf<'_>> {
        self.leaf(va).ok().map(|entry| Leaf { entry })
    }

    /// Makes the tables leading to page `va` (as
    /// [`ensure_tables`](Self::ensure_tables)) and returns its empty leaf
    /// entry, for [`Vacant::fill`]; `None` if the page is mapped already.
    /// One walk instead of a `translate`, an `ensure_tables` and a `map`.
    pub fn vacant(
        &mut self,
        va: u64,
        alloc_table: &mut dyn FnMut() -> Result<FrameNumber, Error>,
    ) -> Result<Option<Vacant<'_>>, Error> {
        let (last, parent) = self.tables_to(va, alloc_table)?;
        let i = indices(va)[3];
        let leaf = &mut table(last)[i];
        Ok(leaf.is_unused().then_some(Vacant { leaf, parent, i }))
    }

    /// The frame and flags mapped at page `va`.
    pub fn translate(&self, va: u64) -> Option<(FrameNumber, F)> {
        let mut current = self.pml4;
        for (level, &i) in indices(va).iter().enumerate() {
            // Raw reads: the last table may be a shared one, which is
            // never borrowed as `&mut`.
            let raw = RawEntries::of(current).get(i);
            if raw == 0 {
                return None;
            }
            current = FrameNumber::from_addr(raw & ENTRY_ADDR_MASK);
            if level == 3 {
                return Some((current, F::from_bits_truncate(raw)));
            }
        }
        None
    }

    /// Removes the mapping of page `va`, returning its frame. The caller
    /// flushes the TLBs. A page of a shared leaf table is `Reserved`: the
    /// span goes whole ([`unmap_some`](Self::unmap_some)).
    pub fn unmap(&mut self, va: u64) -> Result<FrameNumber, Error> {
        let leaf = self.leaf(va)?;
        let frame = FrameNumber::from_addr(leaf.addr().as_u64());
        leaf.set_unused();
        Ok(frame)
    }

    /// Points the mapping at page `va` to `frame` with `flags` in one store
    /// of its entry, returning the old frame. Another core walking these
    /// tables meanwhile (a vCPU of the same environment) sees the old
    /// mapping or the new one, never a hole: an unmap then a map would let
    /// it fault on a page that is not present. The caller flushes the TLBs.
    pub fn replace(&mut self, va: u64, frame: FrameNumber, flags: F) -> Result<FrameNumber, Error> {
        let leaf = self.leaf(va)?;
        let old = FrameNumber::from_addr(leaf.addr().as_u64());
        leaf.set_addr(x86_64::PhysAddr::new(frame.addr()), flags);
        Ok(old)
    }

    /// Replaces the flags of the mapping at `va` with `flags_for(frame,
    /// old_flags)`, which may refuse; returns the old flags. A page of a
    /// shared leaf table is `NotOwner` (its frames are the kernel's).
    pub fn protect(
        &mut self,
        va: u64,
        flags_for: impl FnOnce(FrameNumber, F) -> Result<F, Error>,
    ) -> Result<F, Error> {
        let leaf = self.leaf(va).map_err(|e| match e {
            Error::Reserved => Error::NotOwner,
            e => e,
        })?;
        let old = leaf.flags();
        let new = flags_for(FrameNumber::from_addr(leaf.addr().as_u64()), old)?;
        leaf.set_addr(leaf.addr(), new);
        Ok(old)
    }

    /// Removes the mappings in `[va, end)`, visiting at most `budget` entries
    /// (present leaves, and absent tables, whose whole span is skipped at
    /// the cost of one), and appends each removed `(va, frame)` to `out`.
    /// A shared leaf table's span is removed whole (its pages counted in
    /// [`SharedSpans::removed_pages`], not listed) when the range covers it,
    /// else the walk stops at it ([`SharedSpans::refused`]). Returns where
    /// it stopped (`end` when the range is done). The caller flushes the
    /// TLBs.
    pub fn unmap_some(
        &mut self,
        va: u64,
        end: u64,
        budget: usize,
        out: &mut Vec<(u64, FrameNumber)>,
    ) -> (u64, SharedSpans) {
        let mut shared = SharedSpans::default();
        let stop = self.walk_leaves(va, end, budget, Leaves::Remove, out, &mut shared);
        (stop, shared)
    }

    /// The leaf mappings from `va` on, at most `budget` of them (absent
    /// tables are skipped at the cost of one each): appends `(va, frame)` to
    /// `out` and returns where to go on, `None` at the end of the user half.
    pub fn leaves_from(
        &self,
        va: u64,
        budget: usize,
        out: &mut Vec<(u64, FrameNumber)>,
    ) -> Option<u64> {
        let mut shared = SharedSpans::default();
        let stop = self.walk_leaves(va, abi::USER_MAX, budget, Leaves::Keep, out, &mut shared);
        (stop < abi::USER_MAX).then_some(stop)
    }

    /// The leaf mappings in `[va, end)`, at most `budget` entries visited
    /// (as [`unmap_some`](Self::unmap_some), without removing them):
    /// appends `(va, frame)` to `out` and returns where it stopped (`end`
    /// when the range is done). These two walks skip the spans of shared
    /// leaf tables (the kernel's frames: nothing to share or forget).
    pub fn leaves_in(
        &self,
        va: u64,
        end: u64,
        budget: usize,
        out: &mut Vec<(u64, FrameNumber)>,
    ) -> u64 {
        self.walk_leaves(va, end, budget, Leaves::Keep, out, &mut SharedSpans::default())
    }

    /// The bounded walk behind [`unmap_some`](Self::unmap_some) and
    /// [`leaves_from`](Self::leaves_from): the present leaves in
    /// `[va, end)`, at most `budget` units of work (a present leaf, or a
    /// leaf table scanned: one each; runs of empty entries are skipped a
    /// block at a time, so a table costs at most a few hundred reads);
    /// every call with a budget gets past at least one entry;
    /// returns where it stopped. Callers hold the address space's lock
    /// (`&self` is enough for `table`'s exclusive access, as in `leaf`).
    fn walk_leaves(
        &self,
        va: u64,
        end: u64,
        mut budget: usize,
        leaves: Leaves,
        out: &mut Vec<(u64, FrameNumber)>,
        shared: &mut SharedSpans,
    ) -> u64 {
        if va >= end || budget == 0 {
            return va.min(end);
        }
        walk_table(self.pml4, 3, ALL_BLOCKS, va, end, &mut budget, leaves, out, shared).min(end)
    }

    /// Every page-table frame below the PML4 (the PML4 itself excluded),
    /// shared leaf tables excluded. Leaf tables are listed, not walked: only
    /// the tables are wanted.
    pub fn table_frames(&self) -> Vec<FrameNumber> {
        fn go(frame: FrameNumber, level: u8, limit: usize, blocks: u8, out: &mut Vec<FrameNumber>) {
            let entries = RawEntries::of(frame);
            let mut i = 0;
            while i < limit {
                let skip = entries.empty_run(i, limit, blocks);
                if skip > 0 {
                    i += skip;
                    continue;
                }
                let entry = entries.get(i);
                if entry == 0 {
                    i += 1 + entries.zeros_after(i, limit);
                    continue;
                }
                i += 1;
                if level == 2 && entry & SHARED_TABLE.bits() != 0 {
                    // The kernel's, not this address space's to free.
                    continue;
                }
                let child = FrameNumber::from_addr(entry & ENTRY_ADDR_MASK);
                out.push(child);
                if level > 2 {
                    go(child, level - 1, 512, blocks_of(entry), out);
                }
            }
        }
        // Room for a small environment's tables without regrowth.
        let mut out = Vec::with_capacity(32);
        go(self.pml4, 4, 256, ALL_BLOCKS, &mut out);
        out
    }
}

/// A present leaf entry, borrowed from its address space (under its lock).
pub struct Leaf<'a> {
    entry: &'a mut PageTableEntry,
}

impl Leaf<'_> {
    /// Its flags.
    pub fn flags(&self) -> F {
        self.entry.flags()
    }

    /// Replaces its flags (same frame).
    pub fn set_flags(&mut self, flags: F) {
        let addr = self.entry.addr();
        self.entry.set_addr(addr, flags);
    }
}

/// An empty leaf entry whose tables exist ([`AddressSpace::vacant`]),
/// borrowed from its address space (under its lock).
pub struct Vacant<'a> {
    leaf: &'a mut PageTableEntry,
    /// The entry pointing to the leaf table (its block summary is kept).
    parent: &'a mut PageTableEntry,
    i: usize,
}

impl Vacant<'_> {
    /// Maps the page to `frame` with `flags`.
    pub fn fill(self, frame: FrameNumber, flags: F) {
        self.leaf.set_addr(x86_64::PhysAddr::new(frame.addr()), flags);
        mark_block(self.parent, self.i);
    }
}

/// [`AddressSpace::walk_leaves`] in table `frame` of `level` (3: the PML4,
/// 0: a leaf table), from `va` (inside the table's span) to `end` or the
/// end of the span; returns where it stopped (the span's end when done).
/// A present leaf and a leaf table scanned cost one unit of `budget` each.
#[allow(clippy::too_many_arguments)]
fn walk_table(
    frame: FrameNumber,
    level: u32,
    blocks: u8,
    mut va: u64,
    end: u64,
    budget: &mut usize,
    leaves: Leaves,
    out: &mut Vec<(u64, FrameNumber)>,
    shared: &mut SharedSpans,
) -> u64 {
    let shift = 12 + 9 * level;
    let span = 1u64 << shift;
    // The PML4's upper half is the kernel's.
    let limit = if level == 3 { 256 } else { 512 };
    let entries = RawEntries::of(frame);
    let mut i = (va >> shift) as usize & 511;
    while i < limit && va < end && *budget > 0 {
        // Runs of empty entries are skipped a block at a time: most tables
        // of a library OS's sparse layout hold a few entries (a stack top, a
        // region's first pages), and this walk is what `ShareRange` (fork)
        // and reclaim (exit) pay per table.
        let skip = entries.empty_run(i, limit, blocks);
        if skip > 0 {
            i += skip;
            va = (va & !(span - 1)) + skip as u64 * span;
            continue;
        }
        let entry = entries.get(i);
        let mut next = (va & !(span - 1)) + span;
        if entry == 0 {
            // Nothing mapped in this entry's span, nor in those of the zero
            // entries after it in its group (skipped with it).
            let more = entries.zeros_after(i, limit);
            i += more;
            next += more as u64 * span;
        } else if level == 0 {
            out.push((va, FrameNumber::from_addr(entry & ENTRY_ADDR_MASK)));
            if leaves == Leaves::Remove {
                entries.clear(i);
            }
            *budget -= 1;
        } else if level == 1 && entry & SHARED_TABLE.bits() != 0 {
            // A shared leaf table: its frames are the kernel's, so the walks
            // that report leaves (to share them, to forget them at the end)
            // skip it; removal takes the whole span or nothing.
            if leaves == Leaves::Remove {
                // Whole: the range starts at the span and reaches past its
                // last present page (the last span of the initrd is empty
                // at its tail).
                let leaf_table = RawEntries::of(FrameNumber::from_addr(entry & ENTRY_ADDR_MASK));
                let extent = (0..512).rev().find(|&k| leaf_table.get(k) != 0).map_or(0, |k| k + 1);
                let whole = va & (span - 1) == 0 && end - va >= extent as u64 * abi::PAGE_SIZE;
                if !whole {
                    shared.refused = true;
                    return va;
                }
                shared.removed_pages +=
                    (0..extent).filter(|&k| leaf_table.get(k) != 0).count() as u64;
                entries.clear(i);
            }
            *budget -= 1;
        } else {
            let child = FrameNumber::from_addr(entry & ENTRY_ADDR_MASK);
            let stop = walk_table(
                child,
                level - 1,
                blocks_of(entry),
                va,
                end,
                budget,
                leaves,
                out,
                shared,
            );
            if stop < next && stop < end {
                // Out of budget inside the child.
                return stop;
            }
        }
        i += 1;
        va = next;
    }
    if level == 0 {
        // A leaf table's worth of reads costs one more, paid after the scan
        // so that every call gets somewhere (the tables above a leaf table
        // are at most three per leaf table: each was made for one).
        *budget = budget.saturating_sub(1);
    }
    va
}

/// The block summary a table-pointing entry keeps in its ignored bits 52–59
/// (ignored by the MMU in entries that point to a table, whatever the
/// physical-address width): bit `b` is set once any entry of the table's
/// 64-entry block `b` has been made present ([`AddressSpace::tables_to`] and
/// [`AddressSpace::map`], the only places an entry becomes present). Never
/// cleared: a superset, so the walks may skip a block whose bit is clear
/// without reading it.
const BLOCKS_SHIFT: u32 = 52;

/// The summary of a table with no pointing entry (the PML4): every block.
const ALL_BLOCKS: u8 = 0xff;

/// Records in `entry` (pointing to a table) that the table's entry `i` is
/// present.
fn mark_block(entry: &mut PageTableEntry, i: usize) {
    let bit = 1u64 << (BLOCKS_SHIFT as usize + i / RawEntries::BLOCK);
    let flags = entry.flags();
    if flags.bits() & bit == 0 {
        entry.set_flags(F::from_bits_retain(flags.bits() | bit));
    }
}

/// The block summary of a table-pointing entry's table.
fn blocks_of(entry: u64) -> u8 {
    (entry >> BLOCKS_SHIFT) as u8
}

/// The physical-address bits of a page-table entry.
const ENTRY_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// A table's 512 entries as raw words, for [`AddressSpace::walk_leaves`]'s
/// scan (reading a whole block of entries as words is what makes skipping
/// empty runs cheap). Reached, like [`table`], only under the address
/// space's lock.
struct RawEntries(*mut u64);

impl RawEntries {
    /// Entries per block (one bit of a table's summary).
    const BLOCK: usize = 64;
    /// Then as groups of this many.
    const GROUP: usize = 8;

    fn of(frame: FrameNumber) -> RawEntries {
        RawEntries(frame_virt(frame) as *mut u64)
    }

    /// Entry `i` (`i < 512`).
    fn get(&self, i: usize) -> u64 {
        self.or_of(i, 1)
    }

    /// The bitwise or of the `n` entries from `from` on (all inside the
    /// table): zero exactly when they are all empty.
    fn or_of(&self, from: usize, n: usize) -> u64 {
        assert!(from + n <= 512);
        // SAFETY: a page-table frame holds 512 8-byte entries, mapped in the
        // direct map; `from + n <= 512`; the address space's lock (held by
        // every caller, as for `table`) excludes other writers (the MMU's
        // accessed/dirty updates are single-word atomic stores).
        (from..from + n).fold(0, |acc, k| acc | unsafe { self.0.add(k).read() })
    }

    /// Clears entry `i` (`i < 512`).
    fn clear(&self, i: usize) {
        assert!(i < 512);
        // SAFETY: as `or_of`; the caller holds the lock exclusively.
        unsafe { self.0.add(i).write(0) }
    }

    /// How many entries from `i` on can be skipped as empty at once: the
    /// run (below `limit`, a multiple of [`Self::BLOCK`]) of aligned blocks
    /// that `blocks` (the table's block summary) says were never written
    /// and of aligned groups of zero entries; 0 if none starts at `i`. One
    /// call skips the whole run (a table of a sparse layout holds a few
    /// entries: a run is most of it), each block for a bit test and each
    /// group for a few loads, not a turn of the walk's loop.
    fn empty_run(&self, i: usize, limit: usize, blocks: u8) -> usize {
        let mut j = i;
        while j < limit {
            if j.is_multiple_of(Self::BLOCK) && blocks & (1 << (j / Self::BLOCK)) == 0 {
                j += Self::BLOCK;
            } else if j.is_multiple_of(Self::GROUP)
                && j + Self::GROUP <= limit
                && self.or_of(j, Self::GROUP) == 0
            {
                j += Self::GROUP;
            } else {
                break;
            }
        }
        j - i
    }

    /// How many zero entries follow entry `i` (itself zero) up to the end
    /// of its group (or `limit`): a group holding a few entries then costs
    /// a load per empty one, not a turn of the walk's loop.
    fn zeros_after(&self, i: usize, limit: usize) -> usize {
        let group_end = ((i / Self::GROUP + 1) * Self::GROUP).min(limit);
        let mut n = 0;
        while i + 1 + n < group_end && self.get(i + 1 + n) == 0 {
            n += 1;
        }
        n
    }
}

/// The frame and flags mapped at user page `va` in the address space loaded
/// on this core (CR3), read without the address-space lock: the exception
/// fast path (`sched::upcall::user_exception_fast`), which runs on the core
/// where the faulting code ran, with interrupts off throughout.
///
/// Why no lock is needed there: page-table pages of an address space are
/// freed only by its teardown, which waits until no vCPU of it runs (the
/// interrupted vCPU is this core's current one); a leaf's frame is freed
/// only after a shootdown that every core in the space's `active_cores` has
/// acknowledged — this core is one (the space is loaded here), and it
/// serves no flush request until it has returned to ring 3. So a frame this
/// walk finds stays allocated, and stays this space's, until the caller is
/// done with it, exactly as for the faulting code's own accesses. An entry
/// edited meanwhile by another core is read whole (one 8-byte load).
pub fn translate_loaded_user(va: u64) -> Option<(FrameNumber, F)> {
    if va >= abi::USER_MAX {
        return None;
    }
    let mut current = FrameNumber::from_addr(current_cr3());
    for (level, &i) in indices(va).iter().enumerate() {
        // SAFETY: `current` is CR3's root or a table frame reached from it
        // (see above: none is freed while this core runs the space), read
        // through the direct map with one aligned 8-byte load per entry;
        // `i` < 512.
        let raw = unsafe { (frame_virt(current) as *const u64).add(i).read_volatile() };
        let entry_flags = F::from_bits_truncate(raw);
        if !entry_flags.contains(F::PRESENT) {
            return None;
        }
        let frame = FrameNumber::from_addr(raw & 0x000f_ffff_ffff_f000);
        if level == 3 {
            return Some((frame, entry_flags));
        }
        current = frame;
    }
    None
}

/// Invalidates this core's TLB entry for page `va`.
pub fn flush_page(va: u64) {
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(va));
}

/// Loads `cr3` on this core (flushing its non-global TLB entries).
pub fn load_cr3(cr3: u64) {
    // SAFETY: `cr3` is the root of a complete address space whose kernel half
    // is the kernel's own mapping (copied from the boot PML4) or the boot
    // PML4 itself, so the code and stack in use stay mapped.
    unsafe {
        core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags));
    }
}

/// The CR3 value currently loaded on this core.
pub fn current_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effect.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v & !0xfff
}
