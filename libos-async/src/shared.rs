//! Memory shared writable with the children [`crate::fork::fork`] makes:
//! the library side of the kernel's `ShareWritable` (`abi::child`).
//!
//! This module owns a small table of **shared ranges**. [`fork`] shares
//! every marked range into the child writable (`ShareWritable`) before it
//! shares the rest of the address space copy-on-write, so parent and child
//! (and their own children, generations down: the table is part of the
//! memory a child inherits) read and write the same frames. The kernel
//! keeps such a frame shared writable for as long as anyone holds it, so
//! later forks that only know `ShareRange` share it writable too, and no
//! mapping of it is ever marked copy-on-write: the copy-on-write fault
//! handler never copies it.
//!
//! Only pages mapped at the time of the fork are shared: a page first
//! touched afterwards would be private to whoever touched it. So [`alloc`](fn@alloc)
//! commits every page of the region it makes (a `Reserved` region: a touch
//! of an unmapped page of it goes to the application's handler, never to a
//! silent private fill), and [`share_with_children`] of a range the caller
//! built itself expects it mapped. The pager never gives back a page of a
//! shared range (`vm::evict` refuses it): another environment's view of
//! the page would silently part from ours.
//!
//! Not here yet: shared file mappings (`MAP_SHARED` of a file), and
//! unsharing pages already shared (unmapping them is the way: the frame
//! stays for the other holders).
//!
//! [`fork`]: crate::fork::fork

use abi::{Error, PAGE_SIZE, Rights};
use spin::Mutex;

use crate::vm::{self, Fill, Region};

/// The most shared ranges one environment marks.
pub const SHARED_RANGES_MAX: usize = 16;

/// `(base, end)` pairs; `end == 0` is a free slot.
static RANGES: Mutex<[(u64, u64); SHARED_RANGES_MAX]> = Mutex::new([(0, 0); SHARED_RANGES_MAX]);

/// Marks `va .. va + bytes` (page-aligned) as shared writable with the
/// children forked from now on. [`Error::InvalidArgument`] for a malformed
/// range, [`Error::AlreadyMapped`] if it overlaps a marked one,
/// [`Error::QuotaExceeded`] when [`SHARED_RANGES_MAX`] are marked.
pub fn share_with_children(va: u64, bytes: u64) -> Result<(), Error> {
    let end = va.checked_add(bytes).ok_or(Error::InvalidArgument)?;
    if bytes == 0
        || !va.is_multiple_of(PAGE_SIZE)
        || !bytes.is_multiple_of(PAGE_SIZE)
        || va < abi::USER_MIN
        || end > abi::USER_MAX
    {
        return Err(Error::InvalidArgument);
    }
    let mut ranges = RANGES.lock();
    if ranges.iter().any(|&(b, e)| e != 0 && b < end && va < e) {
        return Err(Error::AlreadyMapped);
    }
    let slot = ranges.iter_mut().find(|r| r.1 == 0).ok_or(Error::QuotaExceeded)?;
    *slot = (va, end);
    Ok(())
}

/// Forgets the mark of the range starting at `va` (children forked from
/// now on get it copy-on-write, unless its frames are shared writable
/// already: the kernel keeps those so). [`Error::NotMapped`] if none.
pub fn unmark(va: u64) -> Result<(), Error> {
    let mut ranges = RANGES.lock();
    let slot = ranges.iter_mut().find(|r| r.1 != 0 && r.0 == va).ok_or(Error::NotMapped)?;
    *slot = (0, 0);
    Ok(())
}

/// Whether `va` lies in a marked range.
pub fn contains(va: u64) -> bool {
    RANGES.lock().iter().any(|&(b, e)| (b..e).contains(&va))
}

/// A copy of the table (for `fork`, which must not hold the lock while the
/// table's own memory is being shared: the child would inherit it held).
pub(crate) fn snapshot() -> [(u64, u64); SHARED_RANGES_MAX] {
    *RANGES.lock()
}

/// A fresh region of `bytes` (rounded up to pages), read-write, every page
/// mapped now, marked shared with children. Release it with
/// [`release`] (the frames stay for the other holders until they let go).
pub fn alloc(name: &str, bytes: u64) -> Result<Region, Error> {
    // The region layer's frame table fills in through the upcall stub.
    crate::exception::ensure_registered()?;
    committed(vm::reserve(name, bytes, Rights::RW, Fill::Reserved)?)
}

/// [`alloc`](fn@alloc) at `base` (page-aligned; one guard page below), as
/// [`vm::reserve_at`].
pub fn alloc_at(name: &str, base: u64, bytes: u64) -> Result<Region, Error> {
    crate::exception::ensure_registered()?;
    let bytes = bytes.checked_next_multiple_of(PAGE_SIZE).ok_or(Error::InvalidArgument)?;
    committed(vm::reserve_at(name, base, bytes, 1, Rights::RW, Fill::Reserved)?)
}

/// Commits every page of `region` and marks it; releases it on failure.
fn committed(region: Region) -> Result<Region, Error> {
    let marked = region
        .commit(0, region.len())
        .and_then(|()| share_with_children(region.base(), region.len()));
    if let Err(e) = marked {
        let _ = region.release();
        return Err(e);
    }
    Ok(region)
}

/// Unmarks and releases a region from [`alloc`](fn@alloc): our hold on its frames
/// ends; children that hold them keep them (still charged to us until the
/// last lets go, `abi::child`). In a child, the same call lets go of its
/// hold.
pub fn release(region: Region) -> Result<u64, Error> {
    let _ = unmark(region.base());
    region.release()
}
