//! Pages leaving a region while it lives: given back by the pager
//! ([`evict`]) or taken by the kernel's repossession ([`forget_taken`],
//! see `abi::repossess`). Either way the page's contents are gone: a page
//! of a [`Fill::Lazy`](super::Fill::Lazy) or
//! [`Fill::Grow`](super::Fill::Grow) region faults in again as zero on its
//! next touch; a page of a [`Fill::Reserved`](super::Fill::Reserved)
//! region goes to the application's fault handler. That is why the pager
//! gives up pages never written first.
//!
//! Rules: both run under the region table's read lock (a `release` waits
//! for them), and clear a page's frame-table entry only if it still names
//! the frame that left ([`super::frames::clear_if`]), so that a fill on
//! another vCPU that already mapped a new frame there keeps its record.

use core::sync::atomic::Ordering;

use abi::{Error, PAGE_SIZE};

use super::{DATA_FRAMES, REGIONS, frames};
use crate::sys;

/// Gives the page at `va` back to the kernel: unmaps it and frees its
/// frame (which pays an open repossession demand). Returns the frame.
/// [`Error::NotMapped`] if the region layer has no frame there.
pub fn evict(va: u64) -> Result<u64, Error> {
    let page = va & !(PAGE_SIZE - 1);
    // Shared with children: their view would part from ours.
    if crate::shared::contains(page) {
        return Err(Error::Busy);
    }
    let _regions = REGIONS.read();
    let frame = frames::lookup(page).ok_or(Error::NotMapped)?;
    sys::unmap(page)?;
    if frames::clear_if(page, frame) {
        DATA_FRAMES.fetch_sub(1, Ordering::Relaxed);
    }
    sys::frame_free(frame)?;
    Ok(frame)
}

/// The kernel took `frame`, which backed the page at `va` (a
/// `REPOSSESSED` event): forgets it. Whether the region layer still
/// recorded it there.
pub fn forget_taken(va: u64, frame: u64) -> bool {
    let page = va & !(PAGE_SIZE - 1);
    let _regions = REGIONS.read();
    let forgot = frames::clear_if(page, frame);
    if forgot {
        DATA_FRAMES.fetch_sub(1, Ordering::Relaxed);
    }
    forgot
}
