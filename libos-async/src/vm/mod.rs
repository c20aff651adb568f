//! Virtual-memory policy: regions of the address space the library fills
//! on demand, over the kernel's mechanism (`FrameAlloc`, `Map`,
//! `UnmapRange`, `Protect`, page-fault upcalls).
//!
//! A **region** ([`Region`]) is an address range with a name, rights, an
//! optional guard below it and a fill policy ([`Fill`]):
//! * [`Fill::Reserved`]: address space only; [`Region::commit`] maps frames
//!   eagerly, faults elsewhere in it go to the application's handler;
//! * [`Fill::Lazy`]: anonymous memory, zero-filled on first touch — the
//!   page-fault upcall finds the region, has the kernel allocate a zeroed
//!   frame and map it with the region's rights in one `AllocMap` (the
//!   frame comes from the pool idle cores zeroed ahead), and resumes;
//! * [`Fill::Grow`]: a stack ([`stack`]): a fault below the committed part
//!   maps down to the faulting page, up to the region's size; below that is
//!   the guard.
//!
//! A fault in a **guard** is fatal: one line, `libos: guard page hit in
//! region "NAME" at 0x... (rip 0x...)`, and exit code
//! [`EXIT_GUARD_PAGE`] (106). A fill that finds no frame (quota exhausted)
//! prints `libos: out of memory: ...` and exits with
//! [`crate::heap::EXIT_OUT_OF_MEMORY`] (104). Faults the region layer does
//! not own (outside every region, on a present page, in a reserved part)
//! go on to the application's handler ([`crate::set_exception_handler`]).
//!
//! The library's own memory uses it: the heap ([`crate::heap`]) is one lazy
//! region, `"heap"`; each vCPU's stack ([`crate::start_vcpu`]) is a growable
//! region `"stack C"`; the first vCPU's kernel-made stack is registered
//! (`"main stack"`) for its guard.
//!
//! # Concurrency: rules of the region table
//!
//! The fault handler runs on every core's exception stack at once. The
//! table ([`table::Table`]) is a fixed array (no allocation, ever) under a
//! spin `RwLock`:
//! * the fault path takes the **read** lock for the whole fill (lookup,
//!   `FrameAlloc`, `Map`, record): fills on many cores run in parallel, and
//!   `release` (the **write** lock) waits until every fill in flight has
//!   recorded its frame, so none is leaked;
//! * the lock prefers readers (a waiting writer does not stop new readers),
//!   so a fault nested in a fill (on a frame-table page, see
//!   [`frames`]) never waits for a writer that waits for it — and the
//!   frame-table path takes no lock at all;
//! * whoever holds the write lock touches nothing that can fault: the table
//!   lives in the image's data, which the kernel maps at load;
//! * two vCPUs filling the same page race in `Map`: the loser gets
//!   `AlreadyMapped`, frees its spare frame and resumes (counted in
//!   [`Stats::races`]);
//! * releasing a region while other vCPUs still touch it is the program's
//!   bug (as `munmap` under a live pointer): their next fault is not the
//!   region layer's any more.
//!
//! Memory handed to the kernel by pointer (a console buffer, a predicate's
//! word) must have been touched: the kernel checks pointers against the
//! page tables and answers `BadAddress` for a lazy page never touched.

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::{Error, PAGE_SIZE, Rights, UpcallFrame, pf, vector};
use spin::RwLock;

use crate::{layout, sys};

pub mod evict;
#[allow(unsafe_code, reason = "atomic access to the frame table's lazily mapped window")]
pub mod frames;
pub mod table;

pub use evict::{evict, forget_taken};
use table::{Entry, Hit, Table};
pub use table::{Fill, Name};

/// Exit code of an environment that touched a guard page.
pub const EXIT_GUARD_PAGE: u64 = 106;
/// The most regions at once.
pub const MAX_REGIONS: usize = 128;

static REGIONS: RwLock<Table<MAX_REGIONS>> = RwLock::new(Table::new());
/// Data frames the region layer holds (mapped in regions).
static DATA_FRAMES: AtomicU64 = AtomicU64::new(0);
/// Spare frames freed because another vCPU mapped the page first.
static RACES: AtomicU64 = AtomicU64::new(0);

/// The region layer's frame counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Frames mapped in regions now.
    pub data_frames: u64,
    /// Frames of the frame table ([`frames`]) now.
    pub table_frames: u64,
    /// Fills that lost the race for a page to another vCPU (their spare
    /// frame went back).
    pub races: u64,
}

/// The region layer's frame counts now.
pub fn stats() -> Stats {
    Stats {
        data_frames: DATA_FRAMES.load(Ordering::Relaxed),
        table_frames: frames::TABLE_FRAMES.load(Ordering::Relaxed),
        races: RACES.load(Ordering::Relaxed),
    }
}

/// What a region is, as [`region_at`] reports it.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    /// Its name.
    pub name: Name,
    /// First byte.
    pub base: u64,
    /// End (exclusive).
    pub end: u64,
    /// Guard bytes below `base`.
    pub guard: u64,
    /// Fault policy.
    pub fill: Fill,
    /// Rights of its pages.
    pub rights: Rights,
    /// [`Fill::Grow`]: bottom of the committed part; else `end`.
    pub low: u64,
}

fn info_of(e: &Entry) -> Info {
    Info {
        name: e.name,
        base: e.base,
        end: e.end,
        guard: e.guard,
        fill: e.fill,
        rights: e.rights,
        low: e.low.load(Ordering::Acquire),
    }
}

/// The region whose span (guard included) holds `addr`.
pub fn region_at(addr: u64) -> Option<Info> {
    REGIONS.read().lookup(addr).map(|(e, _)| info_of(e))
}

/// [`region_at`] that gives up instead of waiting when the region table
/// is being changed (for the panic path, which may have interrupted that).
pub fn try_region_at(addr: u64) -> Option<Info> {
    REGIONS.try_read()?.lookup(addr).map(|(e, _)| info_of(e))
}

/// The frame mapped at `va` by the region layer, if any.
pub fn frame_at(va: u64) -> Option<u64> {
    frames::lookup(va & !(PAGE_SIZE - 1))
}

/// A region of this environment's address space (see the module
/// documentation). It lives until [`Region::release`]; dropping the handle
/// keeps the region.
#[derive(Debug)]
pub struct Region {
    base: u64,
    end: u64,
}

/// Reserves `bytes` (rounded up to pages) in the library's region window
/// ([`crate::layout::REGIONS_BASE`]) with one guard page below.
pub fn reserve(name: &str, bytes: u64, rights: Rights, fill: Fill) -> Result<Region, Error> {
    let bytes = bytes.checked_next_multiple_of(PAGE_SIZE).ok_or(Error::InvalidArgument)?;
    let mut t = REGIONS.write();
    let base = t
        .find_free(layout::REGIONS_BASE, layout::REGIONS_END, bytes, PAGE_SIZE)
        .ok_or(Error::NoMemory)?;
    insert(&mut t, Entry::new(Name::new(name), base, base + bytes, PAGE_SIZE, fill, rights))
}

/// Reserves `base .. base + bytes` (page-aligned) with `guard_pages` of
/// guard below. [`Error::AlreadyMapped`] if it overlaps a region,
/// [`Error::InvalidArgument`] for a malformed range or one in the
/// frame-table window.
pub fn reserve_at(
    name: &str,
    base: u64,
    bytes: u64,
    guard_pages: u64,
    rights: Rights,
    fill: Fill,
) -> Result<Region, Error> {
    let end = base.checked_add(bytes).ok_or(Error::InvalidArgument)?;
    let guard = guard_pages.checked_mul(PAGE_SIZE).ok_or(Error::InvalidArgument)?;
    let e = Entry::new(Name::new(name), base, end, guard, fill, rights);
    insert(&mut REGIONS.write(), e)
}

fn insert(t: &mut Table<MAX_REGIONS>, e: Entry) -> Result<Region, Error> {
    let window = layout::FRAME_TABLE_BASE..layout::FRAME_TABLE_BASE + layout::FRAME_TABLE_SIZE;
    if e.start() < window.end && window.start < e.end {
        return Err(Error::InvalidArgument);
    }
    let e = t.insert(e)?;
    Ok(Region { base: e.base, end: e.end })
}

/// A stack: a growable region of at most `max_bytes` below `top` (one
/// guard page below that), whose top `initial_bytes` are committed now.
pub fn stack(name: Name, top: u64, max_bytes: u64, initial_bytes: u64) -> Result<Region, Error> {
    if initial_bytes > max_bytes || !initial_bytes.is_multiple_of(PAGE_SIZE) {
        return Err(Error::InvalidArgument);
    }
    let base = top.checked_sub(max_bytes).ok_or(Error::InvalidArgument)?;
    let mut t = REGIONS.write();
    let e = Entry::new(name, base, top, PAGE_SIZE, Fill::Grow, Rights::RW);
    let region = insert(&mut t, e)?;
    drop(t);
    if initial_bytes > 0 {
        let t = REGIONS.read();
        let e = t.get(base).ok_or(Error::NotMapped)?;
        let from = top - initial_bytes;
        for page in (from..top).step_by(PAGE_SIZE as usize) {
            fill_page(page, e.rights)?;
        }
        table::lower_committed(e, from);
    }
    Ok(region)
}

impl Region {
    /// First byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// End (exclusive).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.base
    }

    /// Never: regions have at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The region as [`region_at`] reports it.
    pub fn info(&self) -> Info {
        region_at(self.base).expect("a live region is in the table")
    }

    fn pages(&self, offset: u64, bytes: u64) -> Result<core::ops::Range<u64>, Error> {
        let from = self.base.checked_add(offset).ok_or(Error::InvalidArgument)?;
        let to = from.checked_add(bytes).ok_or(Error::InvalidArgument)?;
        if !offset.is_multiple_of(PAGE_SIZE) || !bytes.is_multiple_of(PAGE_SIZE) || to > self.end {
            return Err(Error::InvalidArgument);
        }
        Ok(from..to)
    }

    /// Maps frames now for every page of `offset .. offset + bytes` not
    /// mapped yet. On an error the pages mapped so far stay.
    pub fn commit(&self, offset: u64, bytes: u64) -> Result<(), Error> {
        let range = self.pages(offset, bytes)?;
        let t = REGIONS.read();
        let e = t.get(self.base).ok_or(Error::NotMapped)?;
        for page in range.step_by(PAGE_SIZE as usize) {
            if frames::lookup(page).is_none() {
                fill_page(page, e.rights)?;
            }
        }
        Ok(())
    }

    /// Gives `offset .. offset + bytes` the `rights` (with READ: the
    /// kernel maps nothing unreadable). The whole region: its later fills
    /// too. Part of it: the part is committed first, so that no later fill
    /// gives one of its pages the region's other rights.
    pub fn protect(&self, offset: u64, bytes: u64, rights: Rights) -> Result<(), Error> {
        let range = self.pages(offset, bytes)?;
        if range.start == self.base && range.end == self.end {
            let mut t = REGIONS.write();
            let e = t.remove(self.base).ok_or(Error::NotMapped)?;
            let mut e2 = Entry::new(e.name, e.base, e.end, e.guard, e.fill, rights);
            e2.low = e.low;
            t.insert(e2)?;
        } else {
            self.commit(offset, bytes)?;
        }
        for page in range.step_by(PAGE_SIZE as usize) {
            if frames::lookup(page).is_some() {
                sys::protect(page, rights)?;
            }
        }
        Ok(())
    }

    /// Unmaps the region (`UnmapRange`), frees its frames and forgets it;
    /// returns how many data frames went back.
    pub fn release(self) -> Result<u64, Error> {
        let mut t = REGIONS.write();
        t.remove(self.base).ok_or(Error::NotMapped)?;
        let mut va = self.base;
        while va < self.end {
            let pages = ((self.end - va) / PAGE_SIZE).min(abi::UNMAP_RANGE_MAX);
            sys::unmap_range(va, pages)?;
            va += pages * PAGE_SIZE;
        }
        let freed = frames::free_range(self.base, self.end);
        DATA_FRAMES.fetch_sub(freed, Ordering::Relaxed);
        Ok(freed)
    }
}

/// Registers the kernel-made stack of the first vCPU (all of it mapped by
/// the kernel) as a reserved region with a guard page below, so that an
/// overflow gets the guard line. Once, at start.
#[cfg_attr(not(target_os = "none"), allow(dead_code, reason = "called by `_start` only"))]
pub(crate) fn register_main_stack() {
    let _ = reserve_at(
        "main stack",
        abi::STACK_TOP - abi::STACK_SIZE,
        abi::STACK_SIZE,
        1,
        Rights::RW,
        Fill::Reserved,
    );
}

/// The heap's region ([`crate::heap`]): registered once, with the upcall
/// stub that serves its faults. Whether it is there.
pub(crate) fn heap_region_ready() -> bool {
    static STATE: AtomicU64 = AtomicU64::new(0);
    const READY: u64 = 1;
    const FAILED: u64 = 2;
    match STATE.load(Ordering::Acquire) {
        READY => return true,
        FAILED => return false,
        _ => {}
    }
    // Only ever called under the heap's lock: no two cores get here at once.
    let ok = crate::exception::ensure_registered().is_ok()
        && reserve_at("heap", layout::HEAP_BASE, layout::HEAP_SIZE, 0, Rights::RW, Fill::Lazy)
            .is_ok();
    STATE.store(if ok { READY } else { FAILED }, Ordering::Release);
    ok
}

/// Maps a fresh zeroed frame at `page` with `rights` and records it, in
/// one `AllocMap` (the kernel hands out a frame its idle cores zeroed
/// ahead when it has one). `Ok(true)`: mapped; `Ok(false)`: another vCPU
/// mapped it first (the kernel took the spare frame back).
#[inline]
fn fill_page(page: u64, rights: Rights) -> Result<bool, Error> {
    match sys::alloc_map_one(page, rights) {
        Ok(frame) => {
            frames::record(page, frame);
            DATA_FRAMES.fetch_add(1, Ordering::Relaxed);
            Ok(true)
        }
        Err(Error::AlreadyMapped) => {
            RACES.fetch_add(1, Ordering::Relaxed);
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Maps fresh zeroed frames on the pages `from .. to` (at most
/// `abi::ALLOC_MAP_MAX` of them) with `rights` and records them, in one
/// `AllocMap`: all or nothing. `AlreadyMapped` if one of them is mapped.
fn fill_pages(from: u64, to: u64, rights: Rights) -> Result<(), Error> {
    let mut frames = [0u64; abi::ALLOC_MAP_MAX as usize];
    let n = ((to - from) / PAGE_SIZE) as usize;
    let frames = &mut frames[..n];
    sys::alloc_map(from, rights, frames)?;
    for (i, &frame) in frames.iter().enumerate() {
        frames::record(from + i as u64 * PAGE_SIZE, frame);
    }
    DATA_FRAMES.fetch_add(n as u64, Ordering::Relaxed);
    Ok(())
}

/// The region layer's part of the exception upcall, before the
/// application's handler: `true` if the fault was its own and is fixed
/// (resume); `false` if it is someone else's. Exits on a guard hit or when
/// no frame is left.
#[inline]
pub(crate) fn fixup(frame: &UpcallFrame) -> bool {
    if frame.vector != vector::PAGE_FAULT || frame.error_code & pf::PRESENT != 0 {
        return false;
    }
    let addr = frame.fault_addr;
    if frames::in_window(addr) {
        return match frames::fill_table_page(addr) {
            Ok(()) => true,
            Err(e) => fatal_fill(Name::new("frame table"), addr, e),
        };
    }
    let t = REGIONS.read();
    let Some((e, hit)) = t.lookup(addr) else { return false };
    let page = addr & !(PAGE_SIZE - 1);
    let result = match (hit, e.fill) {
        (Hit::Guard, _) => guard_hit(e.name, addr, frame.rip),
        (Hit::Inside, Fill::Reserved) => return false,
        (Hit::Inside, Fill::Lazy) => fill_page(page, e.rights).map(|_| ()),
        (Hit::Inside, Fill::Grow) => {
            let (from, to) = table::grow_plan(e.low.load(Ordering::Acquire), addr);
            // Top down, in batches of `AllocMap`: the committed part stays
            // contiguous as it grows. A batch that finds a page mapped
            // (another vCPU grew the stack meanwhile) goes page by page.
            let mut r = Ok(());
            let mut top = to;
            while top > from && r.is_ok() {
                let low = top.saturating_sub(abi::ALLOC_MAP_MAX * PAGE_SIZE).max(from);
                r = match fill_pages(low, top, e.rights) {
                    Err(Error::AlreadyMapped) => (0..(top - low) / PAGE_SIZE)
                        .rev()
                        .map(|i| low + i * PAGE_SIZE)
                        .try_for_each(|p| fill_page(p, e.rights).map(|_| ())),
                    other => other,
                };
                if r.is_ok() {
                    table::lower_committed(e, low);
                }
                top = low;
            }
            r
        }
    };
    match result {
        Ok(()) => true,
        Err(err) => fatal_fill(e.name, addr, err),
    }
}

#[cold]
fn guard_hit(name: Name, addr: u64, rip: u64) -> ! {
    crate::println!("libos: guard page hit in region \"{name}\" at {addr:#x} (rip {rip:#x})");
    sys::exit(EXIT_GUARD_PAGE)
}

#[cold]
fn fatal_fill(name: Name, addr: u64, err: Error) -> ! {
    if matches!(err, Error::QuotaExceeded | Error::NoMemory) {
        crate::println!(
            "libos: out of memory: no frame for the page at {addr:#x} in region \"{name}\" ({err:?})"
        );
        sys::exit(crate::heap::EXIT_OUT_OF_MEMORY)
    }
    crate::println!("libos: cannot fill the page at {addr:#x} in region \"{name}\": {err:?}");
    sys::exit(102)
}

/// `"stack C"`, the name of core `core`'s vCPU stack region.
pub(crate) fn stack_name(core: usize) -> Name {
    let mut n = Name::EMPTY;
    let _ = write!(n, "stack {core}");
    n
}
