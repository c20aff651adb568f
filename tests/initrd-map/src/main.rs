//! `initrd_map`: maps the initrd with `InitrdMap` honestly and hostilely.
//!
//! The start argument is the initrd's first frame number (the kernel test
//! knows it), with bit 63 set for the write mode.
//!
//! Mode 0 (must exit 0):
//! - the size (`va` 0) is non-zero and the mapping starts with a ustar
//!   header; two mappings at once show the same bytes;
//! - at a 2 MiB boundary the mapping is made of the kernel's shared leaf
//!   tables: unmapping one page of it, or part of a 2 MiB span, and mapping
//!   a page in the rest of its last span are `Reserved`;
//! - mapping over a range with one page already mapped is `AlreadyMapped`
//!   and maps nothing; unaligned, past `USER_MAX` or over the info region
//!   are refused;
//! - the frames: `FrameStatus` says `Kernel`; `FrameFree`, `FrameGrant`,
//!   writable `Map` of them are `NotOwner`, `FrameAlloc` of them
//!   `FrameUnavailable`; a read-only `Map` of one works and shows the same
//!   bytes; `Protect` of a mapped page to writable is refused;
//! - mapping again and again until the mapping quota runs out: the failing
//!   call leaves nothing of itself mapped; `UnmapRange` removes every
//!   mapping and counts exactly the pages mapped;
//! - afterwards the frames are still the kernel's.
//!
//! Write mode: maps the initrd and writes into it: must be killed with a
//! page fault.
//!
//! Race mode (bit 62): a second vCPU maps and unmaps a frame of its own
//! at a page in the middle of the range again and again while this one
//! maps the initrd there 40 times: each call either maps it whole or fails
//! with `AlreadyMapped` leaving none of its pages (the kernel's undo steps
//! remove what earlier steps mapped).

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libos_async::abi::{Error, FrameHolder, PAGE_SIZE, Rights, USER_MAX};
use libos_async::check::{Checks, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::sys::{self, probe};
use libos_async::{env_id, println};

libos_async::entry!(app_main);

/// Distance between the test's mapping slots (far more than any initrd).
const SLOT: u64 = 1 << 30;
/// At most this many slots are tried before the quota must have run out.
const MAX_SLOTS: u64 = 128;

/// Race mode: tells the racer to stop; the racer's "stopped".
static STOP: AtomicBool = AtomicBool::new(false);
static STOPPED: AtomicBool = AtomicBool::new(false);
/// Race mode: the racer's successful maps.
static RACER_MAPS: AtomicU64 = AtomicU64::new(0);

/// Race mode's second vCPU: maps and unmaps its frame at `target`.
fn racer(target: u64) -> ! {
    let f = require("racer frame", sys::frame_alloc(None));
    while !STOP.load(Ordering::Acquire) {
        if sys::map(f, target, Rights::RW).is_ok() {
            RACER_MAPS.fetch_add(1, Ordering::Relaxed);
            let _ = sys::unmap(target);
        }
    }
    let _ = sys::unmap(target);
    let _ = sys::frame_free(f);
    STOPPED.store(true, Ordering::Release);
    loop {
        let _ = sys::yield_now();
    }
}

fn race(c: &mut Checks, pages: u64) -> i32 {
    let va = SCRATCH_BASE;
    let target = va + pages / 2 * PAGE_SIZE;
    let Some(core) = libos_async::other_cores().next() else {
        println!("initrd_map: race mode needs a second core");
        return 1;
    };
    require("start_vcpu", libos_async::start_vcpu(core, racer, target));
    let (mut whole, mut refused) = (0, 0);
    for round in 0..40 {
        match sys::initrd_map(va) {
            Ok(_) => {
                whole += 1;
                let got = sys::unmap_range(va, pages);
                // The racer may slip its page in between the steps.
                c.check(
                    got.is_ok_and(|n| n == pages || n == pages + 1),
                    format_args!("round {round}: unmap_range {got:?}"),
                );
            }
            Err(Error::AlreadyMapped) => {
                refused += 1;
                for (what, at) in [("first", va), ("before the target", target - PAGE_SIZE)] {
                    c.expect_err(what, sys::unmap(at), Error::NotMapped);
                }
                let last = va + (pages - 1) * PAGE_SIZE;
                c.expect_err("last", sys::unmap(last), Error::NotMapped);
            }
            Err(e) => {
                c.check(false, format_args!("round {round}: {e:?}"));
            }
        }
    }
    STOP.store(true, Ordering::Release);
    let stopped =
        libos_async::wait_for_ms(libos_async::TEST_WAIT_MS, || STOPPED.load(Ordering::Acquire));
    c.check(stopped, format_args!("the racer stopped"));
    println!(
        "initrd_map: race: {whole} whole, {refused} refused, racer mapped {} times",
        RACER_MAPS.load(Ordering::Relaxed)
    );
    c.finish()
}

fn app_main(arg: u64) -> i32 {
    let write_mode = arg >> 63 == 1;
    let race_mode = arg >> 62 & 1 == 1;
    let first = arg & !(3 << 62);
    let mut c = Checks::new();
    let size = require("size", sys::initrd_map(0));
    let pages = size.div_ceil(PAGE_SIZE);
    let va = SCRATCH_BASE;
    if race_mode {
        return race(&mut c, pages);
    }
    if write_mode {
        require("map", sys::initrd_map(va));
        println!("initrd_map: writing into the initrd (must fault)");
        probe::write(va + 8, 0x4141_4141);
        println!("initrd_map: the write went through");
        return 1;
    }
    c.check(size > 0, format_args!("initrd size {size}"));
    c.check(sys::initrd_map(va) == Ok(size), format_args!("first mapping"));
    // The header's magic at 257 ("ustar").
    let magic = probe::read(va + 256).to_le_bytes();
    c.check(&magic[1..6] == b"ustar", format_args!("ustar magic: {magic:?}"));
    // At a 2 MiB boundary the kernel points the spans at its shared leaf
    // tables: they go whole or not at all, and nothing is mapped in them.
    c.expect_err("unmap one page of it", sys::unmap(va + PAGE_SIZE), Error::Reserved);
    c.expect_err("unmap part of a span", sys::unmap_range(va, 1), Error::Reserved);
    let f = require("frame_alloc", sys::frame_alloc(None));
    if !pages.is_multiple_of(512) {
        let tail = va + pages * PAGE_SIZE;
        c.expect_err("map in the last span's tail", sys::map(f, tail, Rights::RW), Error::Reserved);
    }
    c.expect_ok("free the frame", sys::frame_free(f));
    c.expect_err("map again at the same va", sys::initrd_map(va), Error::AlreadyMapped);
    let va2 = va + SLOT;
    c.check(sys::initrd_map(va2) == Ok(size), format_args!("second mapping"));
    let same = (0..pages.min(64)).all(|p| {
        let at = p * PAGE_SIZE + (p * 8) % PAGE_SIZE;
        at + 8 > size || probe::read(va + at) == probe::read(va2 + at)
    });
    c.check(same, format_args!("both mappings show the same bytes"));

    // One page in the way: nothing is mapped.
    let va3 = va + 2 * SLOT;
    let f = require("frame_alloc", sys::frame_alloc(None));
    let blocker = va3 + (pages - 1) * PAGE_SIZE;
    require("map blocker", sys::map(f, blocker, Rights::RW));
    c.expect_err("map over a mapped page", sys::initrd_map(va3), Error::AlreadyMapped);
    c.expect_err("nothing left at the start", sys::unmap(va3), Error::NotMapped);
    c.expect_ok("unmap blocker", sys::unmap(blocker));
    c.expect_ok("free blocker", sys::frame_free(f));

    // Bad addresses.
    c.expect_err("unaligned", sys::initrd_map(va3 + 8), Error::InvalidArgument);
    c.expect_err("past USER_MAX", sys::initrd_map(USER_MAX - PAGE_SIZE), Error::InvalidArgument);
    let info = libos_async::abi::INFO_VA;
    c.expect_err("over the info region", sys::initrd_map(info - PAGE_SIZE), Error::Reserved);
    c.expect_err("below USER_MIN", sys::initrd_map(PAGE_SIZE), Error::InvalidArgument);

    // The frames are the kernel's.
    let status = sys::frame_status(first);
    c.check(
        status.is_ok_and(|s| s.holder() == Some(FrameHolder::Kernel)),
        format_args!("initrd frame status: {status:?}"),
    );
    c.expect_err("free an initrd frame", sys::frame_free(first), Error::NotOwner);
    c.expect_err(
        "grant an initrd frame",
        sys::frame_grant(first, env_id(), Rights::READ),
        Error::NotOwner,
    );
    c.expect_err("map an initrd frame writable", sys::map(first, va3, Rights::RW), Error::NotOwner);
    // Read-only, anywhere: the initrd is everyone's to read.
    c.expect_ok("map an initrd frame read-only", sys::map(first, va3, Rights::READ));
    let p = sys::protect(va3, Rights::RW);
    c.check(p.is_err(), format_args!("protect that page writable: {p:?}"));
    c.check(probe::read(va3 + 256) == probe::read(va + 256), format_args!("the same bytes"));
    c.expect_ok("unmap it", sys::unmap(va3));
    c.expect_err("alloc an initrd frame", sys::frame_alloc(Some(first)), Error::FrameUnavailable);
    let p = sys::protect(va, Rights::RW);
    c.check(p.is_err(), format_args!("protect an initrd page writable: {p:?}"));

    // Until the mapping quota runs out: the failing call maps nothing.
    let mut slots = 2;
    let outcome = loop {
        if slots >= MAX_SLOTS {
            break None;
        }
        match sys::initrd_map(va + slots * SLOT) {
            Ok(_) => slots += 1,
            Err(e) => break Some(e),
        }
    };
    c.check(
        outcome == Some(Error::QuotaExceeded),
        format_args!("after {slots} mappings: {outcome:?}"),
    );
    let failed = va + slots * SLOT;
    c.expect_err("the failed call left nothing", sys::unmap(failed), Error::NotMapped);
    let last = failed + (pages - 1) * PAGE_SIZE;
    c.expect_err("... not even its last page", sys::unmap(last), Error::NotMapped);
    println!("initrd_map: {size} bytes ({pages} pages), {slots} mappings before {outcome:?}");
    for s in 0..slots {
        let got = sys::unmap_range(va + s * SLOT, pages);
        c.check(got == Ok(pages), format_args!("unmap_range slot {s}: {got:?}"));
    }
    // Now there is room again.
    c.check(sys::initrd_map(va) == Ok(size), format_args!("map after unmapping all"));
    c.check(sys::unmap_range(va, pages) == Ok(pages), format_args!("unmap it"));
    let status = sys::frame_status(first);
    c.check(
        status.is_ok_and(|s| s.holder() == Some(FrameHolder::Kernel)),
        format_args!("initrd frame status after the unmaps: {status:?}"),
    );
    // Left mapped on purpose: the environment's end must drop it without
    // freeing the frames (the kernel test checks the frames after).
    c.check(sys::initrd_map(va) == Ok(size), format_args!("map before exit"));
    c.finish()
}
