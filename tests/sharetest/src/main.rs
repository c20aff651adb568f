//! `sharetest`: memory shared writable across `fork` (`ShareWritable`,
//! `libos_async::shared`), one mode per start argument (the kernel's
//! `share_*` tests):
//!
//! 0. a shared region and a private page; fork; the child sees the
//!    parent's bytes, writes its own, forks a grandchild that sees them and
//!    writes its own: all three see every write in the shared region (no
//!    copy-on-write mark there, 3 holders), the private page stays
//!    copy-on-write; after both end, the parent's quota is exactly what it
//!    was before the region existed;
//! 1. the parent exits while its child holds the shared frames: the child
//!    (waiting until the parent is gone) still reads the parent's bytes and
//!    writes through its own writable mapping, the frames now released by
//!    their dead owner (still charged to it), no fault, no copy;
//! 2. a hostile child writes garbage into the shared pages as fast as it
//!    can, tries to free, re-map and widen them, then unmaps them, while a
//!    second vCPU of the parent reads them on another core: the parent
//!    never faults, ends as the only holder with its mapping intact and
//!    writable;
//! 3. edges: sharing into a destroyed child and into one racing its own
//!    exit (errors only, nothing leaks), ring (pinned) pages skipped, a
//!    page copy-on-write in the caller refused (`Busy`), a later
//!    copy-on-write `ShareRange` or `ChildMap` of a writable-shared frame
//!    shares it writable (the caller's mapping stays writable), bad ranges
//!    and forged handles.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use core::sync::atomic::{AtomicBool, AtomicU64};

use libos_async::abi::{self, Error, FrameHolder, PAGE_SIZE, Rights};
use libos_async::check::{Checks, fail, require};
use libos_async::fork::{fork, wait};
use libos_async::layout::SCRATCH_BASE;
use libos_async::ring::Ring;
use libos_async::sys::{self, probe};
use libos_async::vm::Region;
use libos_async::{TEST_WAIT_MS, println, shared};

libos_async::entry!(app_main);

/// Pages of the shared region.
const PAGES: u64 = 16;
/// A private page (copy-on-write across fork).
const PRIVATE: u64 = SCRATCH_BASE + 0x1000_0000;
/// The shared region (in the scratch window, where `probe` reaches).
const SHARED: u64 = SCRATCH_BASE + 0x4000_0000;
/// Where the edge cases map things into their (never started) children.
const CHILD_VA: u64 = SCRATCH_BASE + 0x2000_0000;

fn app_main(arg: u64) -> i32 {
    match arg {
        0 => generations(),
        1 => parent_exits_first(),
        2 => racing_garbage(),
        3 => edges(),
        _ => fail(format_args!("sharetest: unknown mode {arg}")),
    }
}

fn pages(base: u64) -> impl Iterator<Item = u64> {
    (0..PAGES).map(move |i| base + i * PAGE_SIZE)
}

/// Writes `tag + i` at the start and the end of every page `i`.
fn fill(base: u64, tag: u64) {
    for (i, va) in pages(base).enumerate() {
        probe::write(va, tag + i as u64);
        probe::write(va + PAGE_SIZE - 8, tag + i as u64);
    }
}

/// How many pages do not hold `tag + i` at both ends.
fn wrong(base: u64, tag: u64) -> usize {
    pages(base)
        .enumerate()
        .filter(|&(i, va)| {
            probe::read(va) != tag + i as u64 || probe::read(va + PAGE_SIZE - 8) != tag + i as u64
        })
        .count()
}

fn query(va: u64) -> u64 {
    sys::page_query(va).unwrap_or(0)
}

fn holders(va: u64) -> u64 {
    (query(va) >> abi::PAGE_QUERY_HOLDERS_SHIFT) & 127
}

/// Mapped writable, not copy-on-write, by `n` holders.
fn shared_by(va: u64, n: u64) -> bool {
    let q = query(va);
    q & abi::PAGE_QUERY_COW == 0 && q & Rights::WRITE.0 != 0 && holders(va) == n
}

/// Frame numbers held while probing the quota (static: a heap vector
/// would take frames of its own).
static PROBE: [AtomicU64; 4608] = [const { AtomicU64::new(0) }; 4608];

/// Quota left, probed: allocate until refused, then free them all.
fn frames_left_probe() -> u64 {
    let mut n = 0;
    while n < PROBE.len() {
        match sys::frame_alloc(None) {
            Ok(f) => PROBE[n].store(f, Relaxed),
            Err(_) => break,
        }
        n += 1;
    }
    for p in &PROBE[..n] {
        let _ = sys::frame_free(p.load(Relaxed));
    }
    n as u64
}

fn alloc() -> Region {
    require("shared::alloc", shared::alloc_at("sharetest", SHARED, PAGES * PAGE_SIZE))
}

// --- mode 0 -----------------------------------------------------------------

fn generations() -> i32 {
    // Warm up: the region window's page tables and frame-table pages stay
    // once made, so measure from a second allocation on.
    require("release", shared::release(alloc()));
    require("map_fresh", libos_async::mem::map_fresh(PRIVATE, 1, Rights::RW));
    probe::write(PRIVATE, 7);
    let before = frames_left_probe();
    let region = alloc();
    let base = region.base();
    fill(base, 0x100);
    let mut c = Checks::new();
    match require("fork", fork(1024)) {
        Some(child) => {
            let status = wait(child);
            c.check(status == Ok(0), format_args!("child's status {status:?}"));
            let bad = wrong(base, 0x300);
            c.check(bad == 0, format_args!("parent: {bad} pages miss the grandchild's writes"));
            c.check(probe::read(PRIVATE) == 7, format_args!("parent: private page changed"));
            c.check(
                pages(base).all(|va| shared_by(va, 1)),
                format_args!("parent: not the only holder of a writable page at the end"),
            );
            fill(base, 0x400);
            c.check(wrong(base, 0x400) == 0, format_args!("parent: its own writes"));
            require("release", shared::release(region));
            let after = frames_left_probe();
            c.check(after == before, format_args!("quota left {before} -> {after}"));
            c.finish()
        }
        None => {
            c.check(wrong(base, 0x100) == 0, format_args!("child: parent's bytes"));
            c.check(
                pages(base).all(|va| shared_by(va, 2)),
                format_args!("child: shared page not writable by 2 holders: {:#x}", query(base)),
            );
            c.check(
                query(PRIVATE) & abi::PAGE_QUERY_COW != 0,
                format_args!("child: private page not copy-on-write"),
            );
            fill(base, 0x200);
            match fork(256) {
                Ok(Some(grandchild)) => {
                    let status = wait(grandchild);
                    c.check(status == Ok(0), format_args!("grandchild's status {status:?}"));
                    let bad = wrong(base, 0x300);
                    c.check(bad == 0, format_args!("child: {bad} pages miss the grandchild's"));
                }
                Ok(None) => {
                    let ok = wrong(base, 0x200) == 0 && pages(base).all(|va| shared_by(va, 3));
                    fill(base, 0x300);
                    sys::exit(if ok { 0 } else { 1 })
                }
                Err(e) => {
                    c.check(false, format_args!("child: fork: {e:?}"));
                }
            }
            // Our private copy; the parent's stays 7.
            probe::write(PRIVATE, 8);
            sys::exit(if c.failed() == 0 && probe::read(PRIVATE) == 8 { 0 } else { 1 })
        }
    }
}

// --- mode 1 -----------------------------------------------------------------

/// How long mode 1's parent and child stay after their work, so that the
/// kernel's harness, polling from another core, sees the order they end in.
const HARNESS_SLACK_MS: u64 = 20;

fn parent_exits_first() -> i32 {
    let region = alloc();
    let base = region.base();
    fill(base, 0x100);
    let parent = u64::from(sys::info().env_id);
    let mut c = Checks::new();
    match require("fork", fork(0)) {
        Some(child) => {
            c.check(shared_by(base, 2), format_args!("parent: page not shared by 2"));
            println!("sharetest: parent exits before child {child}");
            // The kernel's harness looks for our child from another core:
            // give it time to see the child before we go (a fork is cheap
            // enough now to end within one of its polls).
            libos_async::wait_for_ms(HARNESS_SLACK_MS, || false);
            c.finish()
        }
        None => {
            let me = u64::from(sys::info().env_id);
            // Gone, and reclaimed (its hold ended on every page: the
            // reclaim lets go of the pages in bounded steps, so the first
            // page's hold can end before the last one's).
            let gone = libos_async::wait_for_ms(TEST_WAIT_MS, || {
                sys::env_lookup("sharetest") == Ok(me) && pages(base).all(|va| holders(va) == 1)
            });
            c.check(gone, format_args!("child: parent never ended"));
            c.check(wrong(base, 0x100) == 0, format_args!("child: parent's bytes lost"));
            c.check(pages(base).all(|va| shared_by(va, 1)), format_args!("child: sole holder"));
            let frame = query(base) >> 12;
            let st = sys::frame_status(frame);
            c.check(
                st.map(|s| (s.holder(), s.env)) == Ok((Some(FrameHolder::Released), parent)),
                format_args!("child: frame not released, charged to the parent: {st:?}"),
            );
            fill(base, 0x200);
            c.check(wrong(base, 0x200) == 0, format_args!("child: its own writes"));
            c.check(query(base) >> 12 == frame, format_args!("child: the frame was copied"));
            println!("sharetest: child done after its parent");
            // And time to see us alive after our parent went.
            libos_async::wait_for_ms(HARNESS_SLACK_MS, || false);
            c.finish()
        }
    }
}

// --- mode 2 -----------------------------------------------------------------

static STOP: AtomicBool = AtomicBool::new(false);
static READS: AtomicU64 = AtomicU64::new(0);
static BASE: AtomicU64 = AtomicU64::new(0);
static STOPPED: AtomicBool = AtomicBool::new(false);

/// The parent's second vCPU: reads every shared page until told to stop.
fn reader(_: u64) -> ! {
    let base = BASE.load(Acquire);
    while !STOP.load(Acquire) {
        let mut x = 0u64;
        for va in pages(base) {
            x ^= probe::read(va) ^ probe::read(va + PAGE_SIZE - 8);
        }
        core::hint::black_box(x);
        READS.fetch_add(1, Relaxed);
    }
    STOPPED.store(true, Release);
    loop {
        let _ = sys::yield_now();
    }
}

fn racing_garbage() -> i32 {
    let region = alloc();
    let base = region.base();
    fill(base, 0x100);
    let mut c = Checks::new();
    match require("fork", fork(0)) {
        Some(child) => {
            BASE.store(base, Release);
            let me = sys::core_id();
            let info = sys::info();
            let other = (0..64)
                .filter(|&k| k != me && info.user_cores & (1 << k) != 0)
                .find(|&k| libos_async::vcpu::start_vcpu(k, reader, 0).is_ok());
            c.check(other.is_some(), format_args!("no second core for the reader"));
            let status = wait(child);
            c.check(status == Ok(0), format_args!("hostile child's status {status:?}"));
            let seen = libos_async::wait_for_ms(TEST_WAIT_MS, || READS.load(Relaxed) > 2);
            STOP.store(true, Release);
            c.check(seen, format_args!("the reader never read"));
            // It must be out of the pages before they go.
            let out =
                other.is_none() || libos_async::wait_for_ms(TEST_WAIT_MS, || STOPPED.load(Acquire));
            c.check(out, format_args!("the reader never stopped"));
            c.check(
                pages(base).all(|va| shared_by(va, 1)),
                format_args!("parent: not the sole writable holder after the child let go"),
            );
            fill(base, 0x500);
            c.check(wrong(base, 0x500) == 0, format_args!("parent: its own writes"));
            println!("sharetest: reader made {} passes", READS.load(Relaxed));
            if out {
                require("release", shared::release(region));
            }
            c.finish()
        }
        None => {
            let frame = query(base) >> 12;
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..200 {
                for va in pages(base) {
                    for off in (0..PAGE_SIZE).step_by(512) {
                        x = x.rotate_left(7) ^ 0xdead_beef;
                        probe::write(va + off, x);
                    }
                }
            }
            let va = CHILD_VA;
            c.expect_err("free a shared frame", sys::frame_free(frame), Error::NotOwner);
            c.expect_err(
                "map it executable",
                sys::map(frame, va, Rights::RWX),
                Error::PermissionDenied,
            );
            c.expect_err(
                "grant it",
                sys::frame_grant(frame, u64::from(sys::info().env_id), Rights::RW),
                Error::NotOwner,
            );
            // A second writable mapping of a frame we hold: allowed, and
            // the same bytes.
            c.expect_ok("alias it", sys::map(frame, va, Rights::RW));
            c.check(probe::read(va) == probe::read(base), format_args!("alias differs"));
            c.expect_ok("unmap the alias", sys::unmap(va));
            c.expect_ok("unmap the shared pages", sys::unmap_range(base, PAGES));
            c.expect_err("free after letting go", sys::frame_free(frame), Error::NotOwner);
            c.expect_err(
                "map after letting go",
                sys::map(frame, va, Rights::READ),
                Error::NotOwner,
            );
            sys::exit(if c.failed() == 0 { 0 } else { 1 })
        }
    }
}

// --- mode 3 -----------------------------------------------------------------

fn edges() -> i32 {
    let region = alloc();
    let base = region.base();
    fill(base, 0x100);
    let mut c = Checks::new();

    // Into a child that is gone.
    let g = require("env_create", sys::env_create(16));
    c.expect_ok("share into a fresh child", sys::share_writable(g, base, CHILD_VA, 2));
    c.check(shared_by(base, 2), format_args!("two holders after sharing into g"));
    c.expect_ok("destroy it", sys::child_destroy(g));
    c.expect_err("share into it", sys::share_writable(g, base, CHILD_VA, 1), Error::NoSuchEnv);
    c.check(wait(g) == Ok(abi::CHILD_KILLED), format_args!("destroyed child's status"));
    c.check(shared_by(base, 1), format_args!("its holds went with it"));

    // Into a child racing its own exit.
    match require("fork", fork(64)) {
        Some(child) => {
            let mut ended = false;
            for _ in 0..200_000 {
                let _ = sys::child_unmap(child, CHILD_VA);
                match sys::share_writable(child, base, CHILD_VA, 1) {
                    Ok(_) => {}
                    Err(Error::NoSuchEnv) => {
                        ended = true;
                        break;
                    }
                    Err(e) => {
                        c.check(false, format_args!("share into an exiting child: {e:?}"));
                        break;
                    }
                }
            }
            c.check(ended, format_args!("the child never ended"));
            c.check(wait(child) == Ok(0), format_args!("exiting child's status"));
            c.check(shared_by(base, 1), format_args!("the exiting child kept a hold"));
        }
        None => sys::exit(0),
    }

    // Ring pages are skipped, by both kinds of sharing.
    let ring = require("Ring::new", Ring::new(8, 8));
    let ring_pages = ring.bytes().div_ceil(PAGE_SIZE);
    let h = require("env_create", sys::env_create(16));
    let shared_ring = sys::share_writable(h, ring.base(), CHILD_VA, ring_pages);
    c.check(shared_ring == Ok(0), format_args!("ring pages shared writable: {shared_ring:?}"));
    let cow_ring = sys::share_range(h, ring.base(), CHILD_VA, ring_pages);
    c.check(cow_ring == Ok(0), format_args!("ring pages shared copy-on-write: {cow_ring:?}"));
    c.check(holders(ring.base()) == 1, format_args!("ring page holders"));

    // A page copy-on-write in the caller: write it first.
    require("map_fresh", libos_async::mem::map_fresh(PRIVATE, 1, Rights::RW));
    c.expect_ok("COW-share a private page", sys::share_range(h, PRIVATE, PRIVATE, 1));
    c.expect_err(
        "share a COW page writable",
        sys::share_writable(h, PRIVATE, CHILD_VA + 0x10_0000, 1),
        Error::Busy,
    );

    // Writable-shared frames stay so: ShareRange and ChildMap share them
    // writable and leave our mapping writable.
    // (Every page of the region was shared writable by the fork above.)
    c.expect_ok("writable share", sys::share_writable(h, base, CHILD_VA, 1));
    let third = base + 2 * PAGE_SIZE;
    c.expect_ok(
        "writable share of a third page",
        sys::share_writable(h, third, CHILD_VA + 0x2000, 1),
    );
    let k = require("env_create", sys::env_create(16));
    c.check(
        sys::share_range(k, third, CHILD_VA, 1) == Ok(1),
        format_args!("ShareRange of a writable-shared page"),
    );
    c.check(shared_by(third, 3), format_args!("still writable, 3 holders: {:#x}", query(third)));
    let frame = query(base) >> 12;
    c.expect_ok(
        "ChildMap of a writable-shared frame, writable",
        sys::child_map(k, frame, CHILD_VA + 0x5000, Rights::RW, 0),
    );
    c.check(shared_by(base, 3), format_args!("ChildMap: 3 writable holders"));
    probe::write(third, 0x77);
    c.check(probe::read(third) == 0x77, format_args!("our write after the shares"));

    // Bad ranges and handles.
    c.expect_err(
        "past the user half",
        sys::share_writable(k, abi::USER_MAX - PAGE_SIZE, CHILD_VA, 2),
        Error::InvalidArgument,
    );
    c.expect_err(
        "over the info region",
        sys::share_writable(k, abi::INFO_VA, CHILD_VA, 1),
        Error::Reserved,
    );
    c.expect_err(
        "misaligned",
        sys::share_writable(k, base + 8, CHILD_VA, 1),
        Error::InvalidArgument,
    );
    let me = u64::from(sys::info().env_id);
    c.expect_err("own id", sys::share_writable(me, base, CHILD_VA, 1), Error::NotOwner);
    c.expect_err("forged", sys::share_writable(0xdead_beef, base, CHILD_VA, 1), Error::NoSuchEnv);

    for x in [h, k] {
        c.expect_ok("destroy", sys::child_destroy(x));
        c.check(wait(x) == Ok(abi::CHILD_KILLED), format_args!("status"));
    }
    c.check(pages(base).all(|va| shared_by(va, 1)), format_args!("holds back"));
    drop(ring);
    require("release", shared::release(region));
    c.finish()
}
