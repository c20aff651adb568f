//! The frame table: which frame backs each page the region layer mapped,
//! so that `release` can free it (the kernel has no "what is mapped here"
//! call, and the fault path may not allocate).
//!
//! A linear table of one `u32` per user page (frame number + 1; 0: none)
//! in its own window, [`crate::layout::FRAME_TABLE_BASE`], 4 bytes per 4
//! KiB of user space (128 GiB of addresses, almost all never touched). Its
//! pages are themselves filled lazily by the fault handler, and recorded
//! in the same table — the entry of a table page lies in a table page
//! describing 1024 times less space, and so on down to a page that holds
//! its own entry (the fixed point), so a record costs at most a handful of
//! nested faults, once per 4 MiB of touched space:
//!
//! ```text
//! data page p          -> entry at BASE + p/4096*4        (level-1 page T1)
//! level-1 page T1      -> entry at BASE + T1/4096*4       (level-2 page T2)
//! ...                  -> a page whose entry is inside itself
//! ```
//!
//! Rules: an entry is written only by whoever mapped its page (a fill that
//! won its `Map`), or cleared by `release` under the region table's write
//! lock after the page was unmapped; a level-1 table page is freed only
//! when no region covers any of the 4 MiB it describes. Every access is an
//! atomic `u32` load or store (`Relaxed`: the frame number is the only
//! datum, and the region lock orders fills before a release).
//!
//! The module's `unsafe`: turning table addresses into `&AtomicU32`.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use abi::{Error, PAGE_SIZE, Rights};

use crate::layout::{FRAME_TABLE_BASE, FRAME_TABLE_SIZE};
use crate::sys;

/// Frames backing table pages now.
pub(super) static TABLE_FRAMES: AtomicU64 = AtomicU64::new(0);

/// Pages of user space one table page describes.
pub const PAGES_PER_TABLE_PAGE: u64 = PAGE_SIZE / 4;

/// Address of the entry of the page holding `va`.
#[inline]
pub const fn slot(va: u64) -> u64 {
    FRAME_TABLE_BASE + (va / PAGE_SIZE) * 4
}

/// Whether `va` is in the table's window.
#[inline]
pub const fn in_window(va: u64) -> bool {
    va >= FRAME_TABLE_BASE && va < FRAME_TABLE_BASE + FRAME_TABLE_SIZE
}

fn entry(va: u64) -> &'static AtomicU32 {
    let at = slot(va);
    // SAFETY: `at` is 4-aligned, inside the table window (every user page
    // has its slot there: `FRAME_TABLE_SIZE` covers `USER_MAX`), which the
    // layout reserves for this module alone, where no Rust object lives,
    // and which is never unmapped while a region covers the page (see the
    // module rules). An access to a slot whose page is not mapped yet
    // faults, and the fault handler maps a zeroed frame there
    // ([`fill_table_page`]): the load or store then completes.
    unsafe { AtomicU32::from_ptr(at as *mut u32) }
}

/// Records that `frame` backs the page at `page`.
#[inline]
pub fn record(page: u64, frame: u64) {
    entry(page).store(frame as u32 + 1, Ordering::Relaxed);
}

/// Clears the entry of `page` if it still records `frame` (a page the
/// pager gave back or the kernel took): whether it did. A fill that
/// recorded a new frame meanwhile keeps its entry.
pub fn clear_if(page: u64, frame: u64) -> bool {
    if lookup(page) != Some(frame) {
        return false;
    }
    entry(page).compare_exchange(frame as u32 + 1, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// Whether the table page at `table_page` is mapped, without faulting it
/// in (but the fixed-point page, which describes itself, is read).
fn table_page_present(table_page: u64) -> bool {
    let own = slot(table_page) & !(PAGE_SIZE - 1);
    own == table_page || lookup(table_page).is_some()
}

/// The frame recorded for the page at `page`, without faulting in table
/// pages that are not there.
pub fn lookup(page: u64) -> Option<u64> {
    let table_page = slot(page) & !(PAGE_SIZE - 1);
    if !table_page_present(table_page) {
        return None;
    }
    match entry(page).load(Ordering::Relaxed) {
        0 => None,
        v => Some(u64::from(v) - 1),
    }
}

/// Clears and returns the entry of `page`.
fn take(page: u64) -> Option<u64> {
    let frame = lookup(page)?;
    entry(page).store(0, Ordering::Relaxed);
    Some(frame)
}

/// Serves a fault on a table page: maps a zeroed frame there and records
/// it (one level further down: possibly a nested fault), in one
/// `AllocMap`; `AlreadyMapped` means another vCPU filled it first.
pub(super) fn fill_table_page(addr: u64) -> Result<(), Error> {
    let page = addr & !(PAGE_SIZE - 1);
    match sys::alloc_map_one(page, Rights::RW) {
        Ok(frame) => {
            TABLE_FRAMES.fetch_add(1, Ordering::Relaxed);
            record(page, frame);
            Ok(())
        }
        // Another vCPU filled it first (the kernel took the spare back).
        Err(Error::AlreadyMapped) => Ok(()),
        Err(e) => Err(e),
    }
}

/// After `base .. end` was unmapped: frees the recorded frame of every page
/// in it (skipping 4 MiB at a time where no table page exists) and the
/// level-1 table pages that describe nothing but `base .. end`. Returns the
/// data frames freed. The caller holds the region table's write lock and
/// no region covers `base .. end` any more.
pub(super) fn free_range(base: u64, end: u64) -> u64 {
    let span = PAGES_PER_TABLE_PAGE * PAGE_SIZE;
    let mut freed = 0;
    let mut page = base;
    while page < end {
        let chunk_end = ((page / span) + 1) * span;
        let table_page = slot(page) & !(PAGE_SIZE - 1);
        if !table_page_present(table_page) {
            page = chunk_end;
            continue;
        }
        for p in (page..chunk_end.min(end)).step_by(PAGE_SIZE as usize) {
            if let Some(frame) = take(p) {
                let _ = sys::frame_free(frame);
                freed += 1;
            }
        }
        // The table page describes exactly `chunk_end - span .. chunk_end`.
        if base <= chunk_end - span
            && chunk_end <= end
            && slot(table_page) / PAGE_SIZE != table_page / PAGE_SIZE
            && let Some(frame) = take(table_page)
        {
            let _ = sys::unmap(table_page);
            let _ = sys::frame_free(frame);
            TABLE_FRAMES.fetch_sub(1, Ordering::Relaxed);
        }
        page = chunk_end;
    }
    freed
}
