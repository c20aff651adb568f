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
        let mut current = self.pml4;
        for &i in &indices(va)[..3] {
            let entry = &mut table(current)[i];
            if entry.is_unused() {
                let new = alloc_table()?;
                entry.set_addr(
                    x86_64::PhysAddr::new(new.addr()),
                    F::PRESENT | F::WRITABLE | F::USER_ACCESSIBLE,
                );
            }
            current = FrameNumber::from_addr(entry.addr().as_u64());
        }
        Ok(current)
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
        let last = self.ensure_tables(va, alloc_table)?;
        let leaf = &mut table(last)[indices(va)[3]];
        if !leaf.is_unused() {
            return Err(Error::AlreadyMapped);
        }
        leaf.set_addr(x86_64::PhysAddr::new(frame.addr()), flags);
        Ok(())
    }

    fn leaf(
        &self,
        va: u64,
    ) -> Option<&'static mut x86_64::structures::paging::page_table::PageTableEntry> {
        let idx = indices(va);
        let mut current = self.pml4;
        for &i in &idx[..3] {
            let entry = &table(current)[i];
            if entry.is_unused() {
                return None;
            }
            current = FrameNumber::from_addr(entry.addr().as_u64());
        }
        let leaf = &mut table(current)[idx[3]];
        (!leaf.is_unused()).then_some(leaf)
    }

    /// The frame and flags mapped at page `va`.
    pub fn translate(&self, va: u64) -> Option<(FrameNumber, F)> {
        self.leaf(va).map(|e| (FrameNumber::from_addr(e.addr().as_u64()), e.flags()))
    }

    /// Removes the mapping of page `va`, returning its frame. The caller
    /// flushes the TLBs.
    pub fn unmap(&mut self, va: u64) -> Result<FrameNumber, Error> {
        let leaf = self.leaf(va).ok_or(Error::NotMapped)?;
        let frame = FrameNumber::from_addr(leaf.addr().as_u64());
        leaf.set_unused();
        Ok(frame)
    }

    /// Replaces the flags of the mapping at `va` with `flags_for(frame,
    /// old_flags)`, which may refuse; returns the old flags.
    pub fn protect(
        &mut self,
        va: u64,
        flags_for: impl FnOnce(FrameNumber, F) -> Result<F, Error>,
    ) -> Result<F, Error> {
        let leaf = self.leaf(va).ok_or(Error::NotMapped)?;
        let old = leaf.flags();
        let new = flags_for(FrameNumber::from_addr(leaf.addr().as_u64()), old)?;
        leaf.set_addr(leaf.addr(), new);
        Ok(old)
    }

    /// Removes the mappings in `[va, end)`, visiting at most `budget` entries
    /// (present leaves, and absent tables, whose whole span is skipped at
    /// the cost of one), and appends each removed `(va, frame)` to `out`.
    /// Returns where it stopped (`end` when the range is done). The caller
    /// flushes the TLBs.
    pub fn unmap_some(
        &mut self,
        va: u64,
        end: u64,
        budget: usize,
        out: &mut Vec<(u64, FrameNumber)>,
    ) -> u64 {
        self.walk_leaves(va, end, budget, Leaves::Remove, out)
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
        let stop = self.walk_leaves(va, abi::USER_MAX, budget, Leaves::Keep, out);
        (stop < abi::USER_MAX).then_some(stop)
    }

    /// The leaf mappings in `[va, end)`, at most `budget` entries visited
    /// (as [`unmap_some`](Self::unmap_some), without removing them):
    /// appends `(va, frame)` to `out` and returns where it stopped (`end`
    /// when the range is done).
    pub fn leaves_in(
        &self,
        va: u64,
        end: u64,
        budget: usize,
        out: &mut Vec<(u64, FrameNumber)>,
    ) -> u64 {
        self.walk_leaves(va, end, budget, Leaves::Keep, out)
    }

    /// The bounded walk behind [`unmap_some`](Self::unmap_some) and
    /// [`leaves_from`](Self::leaves_from): the present leaves in
    /// `[va, end)`, at most `budget` entries visited (a present leaf, an
    /// absent table skipped whole, a leaf table's empty entries: one each);
    /// returns where it stopped. Callers hold the address space's lock
    /// (`&self` is enough for `table`'s exclusive access, as in `leaf`).
    fn walk_leaves(
        &self,
        mut va: u64,
        end: u64,
        mut budget: usize,
        leaves: Leaves,
        out: &mut Vec<(u64, FrameNumber)>,
    ) -> u64 {
        'walk: while va < end && budget > 0 {
            let idx = indices(va);
            let mut current = self.pml4;
            for (level, &i) in idx[..3].iter().enumerate() {
                let entry = &table(current)[i];
                if entry.is_unused() {
                    // Nothing mapped in this entry's span: skip all of it.
                    let span = 1u64 << (39 - 9 * level);
                    va = (va & !(span - 1)).saturating_add(span);
                    budget -= 1;
                    continue 'walk;
                }
                current = FrameNumber::from_addr(entry.addr().as_u64());
            }
            for leaf in table(current).iter_mut().skip(idx[3]) {
                if va >= end || budget == 0 {
                    break;
                }
                if !leaf.is_unused() {
                    out.push((va, FrameNumber::from_addr(leaf.addr().as_u64())));
                    if leaves == Leaves::Remove {
                        leaf.set_unused();
                    }
                    budget -= 1;
                }
                va += abi::PAGE_SIZE;
            }
            // A table's worth of empty entries costs one more.
            budget = budget.saturating_sub(1);
        }
        va.min(end)
    }

    /// Every page-table frame below the PML4 (the PML4 itself excluded).
    pub fn table_frames(&self) -> Vec<FrameNumber> {
        let mut out = Vec::new();
        self.walk(|_, frame, level| {
            if level > 0 {
                out.push(frame);
            }
        });
        out
    }

    /// Visits every present entry of the user half: `(va, frame, level)`,
    /// level 0 for leaves, 1..=3 for the tables they hang from.
    fn walk(&self, mut visit: impl FnMut(u64, FrameNumber, u8)) {
        fn go(
            frame: FrameNumber,
            level: u8,
            base: u64,
            limit: usize,
            visit: &mut dyn FnMut(u64, FrameNumber, u8),
        ) {
            for (i, entry) in table(frame).iter().enumerate().take(limit) {
                if entry.is_unused() {
                    continue;
                }
                let child = FrameNumber::from_addr(entry.addr().as_u64());
                let va = base | ((i as u64) << (12 + 9 * u64::from(level - 1)));
                if level == 1 {
                    visit(va, child, 0);
                } else {
                    visit(va, child, level - 1);
                    go(child, level - 1, va, 512, visit);
                }
            }
        }
        go(self.pml4, 4, 0, 256, &mut visit);
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
