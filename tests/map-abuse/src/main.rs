//! `map_abuse`: tries to map what it must not and to exhaust memory.
//!
//! - frame 256 (physical 1 MiB, the kernel image) has FrameStatus `Kernel`;
//!   mapping it is `NotOwner`, allocating it `FrameUnavailable`;
//! - one of its own page-table frames (found by scanning FrameStatus over
//!   frames `0..262144` for `PageTable` of its env id): mapping it is
//!   `PermissionDenied`, allocating it `FrameUnavailable`;
//! - a frame owned by another environment, if the scan saw one: allocating
//!   it is `FrameUnavailable`, mapping it `NotOwner`;
//! - mapping at an already mapped page is `AlreadyMapped`; freeing a mapped
//!   frame is `Busy`;
//! - `FrameAlloc(ANY)` until `QuotaExceeded` (must happen within
//!   `frame_quota` allocations), then frees them all and allocates again.
//!
//! Exits 0 if all of it held.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU32, Ordering};

use libos_async::abi::{Error, FrameHolder, PAGE_SIZE, Rights};
use libos_async::check::{Checks, fail, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::sys;
use libos_async::{env_id, info, println};

libos_async::entry!(app_main);

/// The kernel image's first frame.
const KERNEL_FRAME: u64 = 256;
/// Frames scanned for page tables (1 GiB worth).
const SCAN_FRAMES: u64 = 262_144;
/// Frames recorded during the quota exhaustion; beyond this they are found
/// again by a FrameStatus scan.
const RECORD: usize = 16_384;

static ALLOCATED: [AtomicU32; RECORD] = [const { AtomicU32::new(0) }; RECORD];

fn app_main(_arg: u64) -> i32 {
    let mut c = Checks::new();
    let me = env_id();
    let va = SCRATCH_BASE;
    let va2 = SCRATCH_BASE + PAGE_SIZE;

    // The kernel's frame.
    let status = sys::frame_status(KERNEL_FRAME);
    c.check(
        status.is_ok_and(|s| s.holder() == Some(FrameHolder::Kernel)),
        format_args!("frame 256 status: {status:?}"),
    );
    c.expect_err("map kernel frame", sys::map(KERNEL_FRAME, va, Rights::READ), Error::NotOwner);
    c.expect_err(
        "alloc kernel frame",
        sys::frame_alloc(Some(KERNEL_FRAME)),
        Error::FrameUnavailable,
    );

    // Map something first so that this environment surely has page tables
    // in the scratch window.
    let f = require("frame_alloc", sys::frame_alloc(None));
    require("map f", sys::map(f, va, Rights::RW));

    // Scan for an own page-table frame and another environment's frame.
    let mut own_pt = None;
    let mut foreign = None;
    for frame in 0..SCAN_FRAMES {
        let Ok(s) = sys::frame_status(frame) else {
            continue; // not a frame the kernel reports on
        };
        match s.holder() {
            Some(FrameHolder::PageTable) if s.env == me && own_pt.is_none() => own_pt = Some(frame),
            Some(FrameHolder::Owned) if s.env != me && foreign.is_none() => foreign = Some(frame),
            _ => {}
        }
        if own_pt.is_some() && foreign.is_some() {
            break;
        }
    }
    match own_pt {
        None => {
            c.check(false, format_args!("no own PageTable frame below {SCAN_FRAMES}"));
        }
        Some(pt) => {
            c.expect_err(
                "map own page table READ",
                sys::map(pt, va2, Rights::READ),
                Error::PermissionDenied,
            );
            c.expect_err(
                "map own page table RW",
                sys::map(pt, va2, Rights::RW),
                Error::PermissionDenied,
            );
            c.expect_err(
                "alloc own page table",
                sys::frame_alloc(Some(pt)),
                Error::FrameUnavailable,
            );
            let got = sys::frame_free(pt);
            c.check(got.is_err(), format_args!("free own page table: {got:?}"));
        }
    }
    if let Some(other) = foreign {
        c.expect_err("alloc foreign frame", sys::frame_alloc(Some(other)), Error::FrameUnavailable);
        c.expect_err("map foreign frame", sys::map(other, va2, Rights::READ), Error::NotOwner);
    }

    // Double mappings, busy frames.
    c.expect_err(
        "map same frame twice at one va",
        sys::map(f, va, Rights::RW),
        Error::AlreadyMapped,
    );
    let g = require("frame_alloc", sys::frame_alloc(None));
    c.expect_err(
        "map other frame at a mapped va",
        sys::map(g, va, Rights::READ),
        Error::AlreadyMapped,
    );
    c.expect_err("alloc own frame", sys::frame_alloc(Some(f)), Error::FrameUnavailable);
    c.expect_err("free mapped frame", sys::frame_free(f), Error::Busy);
    c.expect_ok("unmap f", sys::unmap(va));
    c.expect_ok("free f", sys::frame_free(f));
    c.expect_ok("free g", sys::frame_free(g));

    // Exhaust the quota.
    let quota = u64::from(info().frame_quota);
    let mut count: u64 = 0;
    let outcome = loop {
        match sys::frame_alloc(None) {
            Ok(frame) => {
                if let Some(slot) = ALLOCATED.get(count as usize) {
                    slot.store(frame as u32, Ordering::Relaxed);
                }
                count += 1;
                if count > quota {
                    break None;
                }
            }
            Err(e) => break Some(e),
        }
    };
    c.check(
        outcome == Some(Error::QuotaExceeded) && count > 0,
        format_args!("quota exhaustion after {count} frames (quota {quota}): {outcome:?}"),
    );
    println!("map_abuse: quota {quota}, allocated {count} frames before {outcome:?}");
    let recorded = (count as usize).min(RECORD);
    for slot in &ALLOCATED[..recorded] {
        let frame = u64::from(slot.load(Ordering::Relaxed));
        c.expect_ok("free exhausted frame", sys::frame_free(frame));
    }
    if count as usize > RECORD {
        // The rest: every frame this environment owns that is not mapped.
        let mut freed = recorded as u64;
        for frame in 0..SCAN_FRAMES {
            let Ok(s) = sys::frame_status(frame) else {
                continue;
            };
            if s.holder() == Some(FrameHolder::Owned)
                && s.env == me
                && sys::frame_free(frame).is_ok()
            {
                freed += 1;
            }
        }
        if freed < count {
            fail(format_args!("freed only {freed} of {count} frames"));
        }
    }
    let again = sys::frame_alloc(None);
    c.expect_ok("alloc after freeing", again);
    if let Ok(frame) = again {
        c.expect_ok("free it", sys::frame_free(frame));
    }
    c.finish()
}
