//! Fresh anonymous memory from frames: allocate, map, and undo on failure.

use abi::{Error, PAGE_SIZE, Rights};

use crate::sys;

/// The most pages one [`map_fresh`] call maps.
pub const MAP_FRESH_MAX_PAGES: u64 = 64;

/// Allocates `pages` (at most [`MAP_FRESH_MAX_PAGES`]) zeroed frames and
/// maps them at `va..va + pages * 4 KiB` with `rights`. On failure the pages
/// mapped so far are unmapped and their frames freed, and the first error
/// is returned.
pub fn map_fresh(va: u64, pages: u64, rights: Rights) -> Result<(), Error> {
    if pages > MAP_FRESH_MAX_PAGES {
        return Err(Error::InvalidArgument);
    }
    let mut frames = [0u64; MAP_FRESH_MAX_PAGES as usize];
    for i in 0..pages {
        let page = va + i * PAGE_SIZE;
        let result = sys::frame_alloc(None).and_then(|frame| {
            sys::map(frame, page, rights).map(|_| frame).inspect_err(|_| {
                let _ = sys::frame_free(frame);
            })
        });
        match result {
            Ok(frame) => frames[i as usize] = frame,
            Err(e) => {
                for j in 0..i {
                    let _ = sys::unmap(va + j * PAGE_SIZE);
                    let _ = sys::frame_free(frames[j as usize]);
                }
                return Err(e);
            }
        }
    }
    Ok(())
}
