//! `revokee`: the environments of the memory repossession tests
//! (`memrevoke_*` in the kernel's ktest, `abi::repossess`) and of the
//! round-trip benchmark. Start argument: bits 0..8 the mode, bits 8.. a
//! mode's parameter.
//!
//! Every mode maps [`CONTROL`], a page the kernel's test reads and writes
//! through the environment's page tables: word 0 is set to [`READY`] once
//! the environment is set up (list published), word 1 is the kernel's
//! command ([`GO_ON`]: finish), words 2.. are results.
//!
//! * 0, **compliant**: a [`Pager`] with a pool of [`POOL`] frames over a
//!   lazy region of [`PAGES`] pages: the first [`WRITTEN`] pages written
//!   with a pattern, the next [`READ_ONLY`] only read (zero pages), the rest
//!   untouched. It checks the pager's sweeps (`PageAccess`: ages and the
//!   written flag after one, two and three sweeps, one page re-read in
//!   between). It answers the demand itself; at the settled event it
//!   checks that nothing was taken by force, that no written page was
//!   given up (the pool and the zero pages cover the test's demand), that
//!   every written page is intact and that the zero pages given back read
//!   zero again (refilled on the fault), then exits 0.
//! * 1, **non-compliant**: [`RAW`] frames mapped at [`RAW_BASE`], each
//!   filled with its own pattern; it publishes a list of [`RAW_LISTED`] of
//!   them in a scrambled order ([`listed`]), copies the list to control
//!   words [`LIST_WORD`].., and never answers. It keeps running: it reads
//!   only its unlisted pages while it waits, records the `REPOSSESSED`
//!   events, and at the settled event checks that the frames taken are
//!   exactly the first ones of its list, in order, with their indices,
//!   that they are not its own any more, that every other page is intact,
//!   and exits 0.
//! * 2, **hostile list** (parameter: a frame of another environment): a
//!   list of entries the kernel must skip — the other environment's frame,
//!   frame 0 (the kernel's), numbers beyond memory, a freed frame, its own
//!   page-table frame, duplicates — with two of its own frames among them;
//!   first checks that bad `RepossessList` and `PageAccess` calls get
//!   errors. Then waits: the test's demand asks for more than two frames,
//!   so the kernel must kill it ("list covered 2 of N").
//! * 3, **unmapped list**: publishes a list of its own frames, then unmaps
//!   the list's page: at the deadline the kernel cannot read it and kills
//!   it ("list covered 0 of N").
//! * 4, **bystander**: [`RAW`] frames with a pattern, checked until the
//!   kernel says [`GO_ON`]; exits 0 iff intact (control word 2: one of its
//!   frames, for the hostile mode's list).
//! * 5, **exit mid-repossession**: [`MANY`] frames, each mapped at
//!   [`ALIASES`] addresses (so each takes the kernel several steps), all
//!   listed; exits 0 as soon as the first frame is taken.
//! * 6, **many mappings, non-compliant**: as 5, but waits for the settled
//!   event and exits 0 (the CPU-time victim test's load).
//! * 7, **benchmark pager**: the compliant pager answering demand after
//!   demand: after each settled event it touches its zero pages again (so
//!   they can be given again) and publishes; control word 2 counts rounds;
//!   exits at [`GO_ON`].

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use libos_async::abi::event::{REPOSSESS_REQUEST, REPOSSESSED};
use libos_async::abi::repossess::{LIST_MAX, SETTLED};
use libos_async::abi::{Error, FrameHolder, PAGE_SIZE, Rights, Syscall};
use libos_async::check::{Checks, fail, require};
use libos_async::cpu::{Events, Received};
use libos_async::layout::SCRATCH_BASE;
use libos_async::pager::Pager;
use libos_async::sys::{self, probe, rdtsc};
use libos_async::vm::{self, Fill};
use libos_async::{Pred, TEST_WAIT_MS, env_id, info, println};

libos_async::entry!(app_main);

/// The control page (see the module docs).
pub const CONTROL: u64 = SCRATCH_BASE;
/// Control word 0 once set up.
pub const READY: u64 = 0x7265_6164;
/// Control word 1 from the kernel: finish.
pub const GO_ON: u64 = 0x676f_6f6e;
/// First control word of mode 1's published list.
pub const LIST_WORD: u64 = 8;
/// Mode 0's region: pages, written pages, read-only pages, pool frames.
pub const PAGES: u64 = 64;
/// Pages mode 0 writes.
pub const WRITTEN: u64 = 32;
/// Pages mode 0 only reads (zero pages).
pub const READ_ONLY: u64 = 16;
/// Mode 0's free pool.
pub const POOL: usize = 8;
/// Modes 1, 2 and 4: frames held.
pub const RAW: u64 = 24;
/// Mode 1: frames listed.
pub const RAW_LISTED: u64 = 12;
/// Where modes 1, 2, 4 map their frames.
const RAW_BASE: u64 = SCRATCH_BASE + 0x10_0000;
/// Where modes 2 and 3 keep their list.
const LIST_VA: u64 = SCRATCH_BASE + 0x1000;
/// Modes 5 and 6: frames, and addresses each is mapped at.
pub const MANY: u64 = 32;
/// Addresses each of modes 5 and 6's frames is mapped at.
pub const ALIASES: u64 = 100;
const MANY_BASE: u64 = SCRATCH_BASE + 0x100_0000;
/// The pager modes' lazy region.
const REGION_BASE: u64 = SCRATCH_BASE + 0x4000_0000;

fn app_main(arg: u64) -> i32 {
    let control = require("frame_alloc", sys::frame_alloc(None));
    require("map control", sys::map(control, CONTROL, Rights::RW));
    match arg & 0xff {
        0 => compliant(),
        1 => non_compliant(),
        2 => hostile(arg >> 8),
        3 => unmapped_list(),
        4 => bystander(),
        5 => many_mappings(true),
        6 => many_mappings(false),
        7 => bench_pager(),
        mode => fail(format_args!("revokee: unknown mode {mode}")),
    }
}

fn word(i: u64) -> u64 {
    probe::read(CONTROL + i * 8)
}

fn set_word(i: u64, v: u64) {
    probe::write(CONTROL + i * 8, v);
}

fn ready() {
    set_word(0, READY);
}

/// Sleeps until an event, the kernel's command or 1 ms.
fn nap() {
    let tick = info().tsc_hz / 1000;
    let _ = Pred::events_ne(sys::event_tail())
        .either(Pred::word_eq(CONTROL + 8, GO_ON))
        .either(Pred::deadline(rdtsc() + tick))
        .sleep();
}

fn give_up_at() -> u64 {
    rdtsc() + info().tsc_hz / 1000 * TEST_WAIT_MS
}

const fn pattern(page: u64, i: u64) -> u64 {
    0x5e50_0000_0000_0000 | page << 16 | i
}

fn fill(va: u64, page: u64) {
    for i in 0..PAGE_SIZE / 8 {
        probe::write(va + i * 8, pattern(page, i));
    }
}

fn intact(va: u64, page: u64) -> bool {
    (0..PAGE_SIZE / 8).all(|i| probe::read(va + i * 8) == pattern(page, i))
}

fn is_zero(va: u64) -> bool {
    (0..PAGE_SIZE / 8).all(|i| probe::read(va + i * 8) == 0)
}

fn mine(frame: u64) -> bool {
    sys::frame_status(frame)
        .is_ok_and(|s| s.holder() == Some(FrameHolder::Owned) && s.env == env_id())
}

// --- mode 0 ----------------------------------------------------------------

/// The compliant pager's region, with its pattern and zero pages touched.
fn pager_region(pager: &mut Pager) -> vm::Region {
    // In the scratch window, where `probe` may read and write.
    let region = require(
        "reserve",
        vm::reserve_at("revokee", REGION_BASE, PAGES * PAGE_SIZE, 1, Rights::RW, Fill::Lazy),
    );
    for p in 0..WRITTEN {
        fill(region.base() + p * PAGE_SIZE, p);
    }
    touch_zero_pages(&region);
    pager.track(&region);
    region
}

fn touch_zero_pages(region: &vm::Region) {
    for p in WRITTEN..WRITTEN + READ_ONLY {
        core::hint::black_box(probe::read(region.base() + p * PAGE_SIZE));
    }
}

fn compliant() -> i32 {
    let mut pager = require("Pager::new", Pager::new(256));
    let region = pager_region(&mut pager);
    require("fill_pool", pager.fill_pool(POOL));
    let mut c = Checks::new();
    // The clock over `PageAccess`: every touched page was referenced
    // before the first sweep; none before the second; only page 3 before
    // the third (its accessed bit was cleared and flushed, so the re-read
    // sets it again).
    let base = region.base();
    let ages = |pager: &Pager| -> Vec<(u64, u32, bool)> {
        pager.pages().iter().map(|p| ((p.va - base) / PAGE_SIZE, p.age, p.written)).collect()
    };
    require("scan", pager.scan());
    let first = ages(&pager);
    c.check(first.len() == (WRITTEN + READ_ONLY) as usize, format_args!("pages {first:?}"));
    c.check(
        first.iter().all(|&(p, age, w)| age == 0 && w == (p < WRITTEN)),
        format_args!("first sweep {first:?}"),
    );
    require("scan", pager.scan());
    let second = ages(&pager);
    c.check(second.iter().all(|&(_, age, _)| age == 1), format_args!("second sweep {second:?}"));
    core::hint::black_box(probe::read(base + 3 * PAGE_SIZE));
    require("scan", pager.scan());
    let third = ages(&pager);
    c.check(
        third.iter().all(|&(p, age, _)| age == if p == 3 { 0 } else { 2 }),
        format_args!("third sweep {third:?}"),
    );
    let listed = require("publish", pager.publish());
    c.check(listed == POOL + (WRITTEN + READ_ONLY) as usize, format_args!("list of {listed}"));
    ready();
    let give_up = give_up_at();
    while pager.stats().settled == 0 {
        require("poll", pager.poll());
        if rdtsc() > give_up {
            fail(format_args!("revokee: no demand settled: {:?}", pager.stats()));
        }
        nap();
    }
    let s = pager.stats();
    println!("revokee: compliant pager: {s:?}");
    c.check(s.requests == 1 && s.taken == 0, format_args!("requests/taken: {s:?}"));
    c.check(s.pages_given <= READ_ONLY, format_args!("gave written pages: {s:?}"));
    let owed = sys::repossess_status();
    c.check(owed == Ok(0), format_args!("still owed: {owed:?}"));
    for p in 0..WRITTEN {
        c.check(intact(region.base() + p * PAGE_SIZE, p), format_args!("page {p} changed"));
    }
    // The zero pages given back fault in again, as zero.
    for p in WRITTEN..WRITTEN + READ_ONLY {
        c.check(is_zero(region.base() + p * PAGE_SIZE), format_args!("page {p} not zero"));
    }
    set_word(2, s.given);
    set_word(3, s.pages_given);
    require("withdraw", pager.withdraw());
    let _ = region.release();
    c.finish()
}

// --- mode 1 ------------------------------------------------------------------

/// The list order: a scramble of `0..RAW` (the first `RAW_LISTED`).
fn listed() -> Vec<u64> {
    (0..RAW).map(|k| (k * 7 + 3) % RAW).take(RAW_LISTED as usize).collect()
}

fn raw_frames() -> Vec<u64> {
    (0..RAW)
        .map(|k| {
            let f = require("frame_alloc", sys::frame_alloc(None));
            let va = RAW_BASE + k * PAGE_SIZE;
            require("map", sys::map(f, va, Rights::RW));
            fill(va, k);
            f
        })
        .collect()
}

fn non_compliant() -> i32 {
    let frames = raw_frames();
    let order = listed();
    let list: Vec<u64> = order.iter().map(|&k| frames[k as usize]).collect();
    for (i, &f) in list.iter().enumerate() {
        set_word(LIST_WORD + i as u64, f);
    }
    require("repossess_list", sys::repossess_list(&list));
    let mut events = Events::from_now();
    ready();
    // No allocation from here on until the checks: a heap page filled now
    // would get a frame just taken (the allocator reuses it), which
    // would confuse the kernel's test looking at who holds it.
    let mut taken: Vec<(u64, u64)> = Vec::with_capacity(2 * RAW as usize);
    let mut settled = None;
    let mut requests = 0;
    let give_up = give_up_at();
    let mut c = Checks::new();
    while settled.is_none() {
        for got in events.by_ref() {
            match got {
                Received::Event(e) if e.kind == REPOSSESS_REQUEST => requests += 1,
                Received::Event(e) if e.kind == REPOSSESSED && e.data[0] == SETTLED => {
                    settled = Some(e.data[1]);
                }
                Received::Event(e) if e.kind == REPOSSESSED => taken.push((e.data[0], e.data[1])),
                other => fail(format_args!("revokee: unexpected {other:?}")),
            }
        }
        // Keeps running: the unlisted pages are still here.
        for k in (0..RAW).filter(|k| !order.contains(k)) {
            c.check(intact(RAW_BASE + k * PAGE_SIZE, k), format_args!("page {k} changed"));
        }
        if rdtsc() > give_up {
            fail(format_args!("revokee: not settled; {} taken", taken.len()));
        }
        nap();
    }
    let n = taken.len();
    // Let the kernel's test look at the frame table before we allocate.
    set_word(2, n as u64);
    let give_up = give_up_at();
    while word(1) != GO_ON {
        if rdtsc() > give_up {
            fail(format_args!("revokee: never told to finish"));
        }
        nap();
    }
    println!("revokee: {n} frames taken by force: {taken:?}");
    c.check(requests == 1, format_args!("{requests} requests"));
    c.check(settled == Some(n as u64), format_args!("settled {settled:?} vs {n} events"));
    for (i, &(f, index)) in taken.iter().enumerate() {
        c.check(f == list[i] && index == i as u64, format_args!("taken #{i}: {f} at {index}"));
        // Its page is gone (the frame itself may be ours again by now,
        // through the heap).
        let k = order[i];
        let gone = sys::unmap(RAW_BASE + k * PAGE_SIZE);
        c.check(gone == Err(Error::NotMapped), format_args!("page {k} still mapped: {gone:?}"));
    }
    // Everything else is ours and intact, listed or not.
    for k in 0..RAW {
        let f = frames[k as usize];
        if taken.iter().any(|t| t.0 == f) {
            continue;
        }
        c.check(mine(f), format_args!("frame {f} lost"));
        c.check(intact(RAW_BASE + k * PAGE_SIZE, k), format_args!("page {k} changed"));
    }
    c.finish()
}

// --- modes 2 and 3 -----------------------------------------------------------

fn hostile(other_frame: u64) -> i32 {
    let mut c = Checks::new();
    let list_frame = require("frame_alloc", sys::frame_alloc(None));
    require("map list", sys::map(list_frame, LIST_VA, Rights::RW));
    // Bad calls.
    let bad = list_raw;
    c.expect_err("list too long", bad(LIST_VA, LIST_MAX + 1), Error::InvalidArgument);
    c.expect_err("misaligned list", bad(LIST_VA + 4, 1), Error::InvalidArgument);
    c.expect_err("kernel-half list", bad(0xffff_8000_0000_0000, 1), Error::BadAddress);
    c.expect_err("list wrapping", bad(u64::MAX - 7, LIST_MAX), Error::BadAddress);
    c.expect_err("list past the end", bad(0x7fff_ffff_f000 - 8, 4), Error::BadAddress);
    let mut bits = [0u64; 17];
    let too_long = sys::page_access(LIST_VA, 513, &mut bits, false);
    c.expect_err("scan too long", too_long, Error::InvalidArgument);
    let raw_scan = access_raw(LIST_VA, 1, 0xffff_8000_0000_0000, 0);
    c.expect_err("scan into the kernel", raw_scan, Error::BadAddress);
    c.expect_err("scan bad flag", access_raw(LIST_VA, 1, CONTROL + 64, 2), Error::InvalidArgument);
    c.expect_err(
        "scan the info page",
        access_raw(libos_async::abi::INFO_VA, 1, CONTROL + 64, 0),
        Error::Reserved,
    );
    // Its own frames: two listed (one of them three times).
    let a = require("frame_alloc", sys::frame_alloc(None));
    let b = require("frame_alloc", sys::frame_alloc(None));
    require("map a", sys::map(a, RAW_BASE, Rights::RW));
    let freed = require("frame_alloc", sys::frame_alloc(None));
    require("frame_free", sys::frame_free(freed));
    // One of its own page-table frames, if one is near (skipped either way).
    let table = (list_frame.saturating_sub(16)..list_frame + 16)
        .find(|&f| {
            sys::frame_status(f)
                .is_ok_and(|s| s.holder() == Some(FrameHolder::PageTable) && s.env == env_id())
        })
        .unwrap_or(u64::MAX - 1);
    let entries = [other_frame, 0, 1 << 40, u64::MAX, freed, a, a, table, a, b, other_frame];
    for (i, &e) in entries.iter().enumerate() {
        probe::write(LIST_VA + i as u64 * 8, e);
    }
    require("repossess_list", list_raw(LIST_VA, entries.len() as u64));
    set_word(2, a);
    set_word(3, b);
    if c.failed() > 0 {
        return c.finish();
    }
    ready();
    // The kernel kills us; exiting on our own is a failure.
    let give_up = give_up_at();
    while rdtsc() < give_up {
        nap();
    }
    println!("revokee: hostile list was never repossessed");
    1
}

fn unmapped_list() -> i32 {
    let list_frame = require("frame_alloc", sys::frame_alloc(None));
    require("map list", sys::map(list_frame, LIST_VA, Rights::RW));
    for i in 0..4u64 {
        let f = require("frame_alloc", sys::frame_alloc(None));
        probe::write(LIST_VA + i * 8, f);
    }
    require("repossess_list", list_raw(LIST_VA, 4));
    require("unmap list", sys::unmap(LIST_VA));
    ready();
    let give_up = give_up_at();
    while rdtsc() < give_up {
        nap();
    }
    println!("revokee: unmapped list was never repossessed");
    1
}

// --- mode 4 --------------------------------------------------------------------

fn bystander() -> i32 {
    let frames = raw_frames();
    set_word(2, frames[5]);
    ready();
    let mut c = Checks::new();
    let give_up = give_up_at();
    while word(1) != GO_ON {
        for k in 0..RAW {
            c.check(intact(RAW_BASE + k * PAGE_SIZE, k), format_args!("page {k} changed"));
        }
        if rdtsc() > give_up {
            fail(format_args!("revokee: bystander never told to finish"));
        }
        nap();
    }
    for &f in &frames {
        c.check(mine(f), format_args!("frame {f} lost"));
    }
    c.finish()
}

// --- modes 5 and 6 -------------------------------------------------------------

fn many_mappings(exit_early: bool) -> i32 {
    let mut list = Vec::new();
    for k in 0..MANY {
        let f = require("frame_alloc", sys::frame_alloc(None));
        for a in 0..ALIASES {
            let va = MANY_BASE + (k * ALIASES + a) * PAGE_SIZE;
            require("map", sys::map(f, va, Rights::RW));
        }
        list.push(f);
    }
    require("repossess_list", sys::repossess_list(&list));
    let mut events = Events::from_now();
    ready();
    let give_up = give_up_at();
    let mut taken = 0u64;
    loop {
        for got in events.by_ref() {
            match got {
                Received::Event(e) if e.kind == REPOSSESSED && e.data[0] == SETTLED => {
                    println!("revokee: settled, {taken} frames taken");
                    return i32::from(taken != MANY);
                }
                Received::Event(e) if e.kind == REPOSSESSED => {
                    taken += 1;
                    if exit_early {
                        // Mid-repossession: the rest is the reclaim's.
                        return 0;
                    }
                }
                _ => {}
            }
        }
        if rdtsc() > give_up {
            fail(format_args!("revokee: nothing taken"));
        }
        nap();
    }
}

// --- mode 7 --------------------------------------------------------------------

fn bench_pager() -> i32 {
    let mut pager = require("Pager::new", Pager::new(256));
    let region = pager_region(&mut pager);
    require("scan", pager.scan());
    require("publish", pager.publish());
    let mut rounds = 0;
    ready();
    while word(1) != GO_ON {
        require("poll", pager.poll());
        if pager.stats().settled > rounds {
            rounds = pager.stats().settled;
            // Refill the zero pages for the next demand.
            touch_zero_pages(&region);
            require("scan", pager.scan());
            require("publish", pager.publish());
            set_word(2, rounds);
        }
        nap();
    }
    let s = pager.stats();
    i32::from(s.taken != 0)
}

/// `RepossessList` with raw registers.
fn list_raw(ptr: u64, len: u64) -> Result<u64, Error> {
    libos_async::abi::decode(sys::syscall2(Syscall::RepossessList as u64, ptr, len))
}

/// `PageAccess` with raw registers.
fn access_raw(va: u64, pages: u64, bitmap: u64, flag: u64) -> Result<u64, Error> {
    libos_async::abi::decode(sys::syscall4(Syscall::PageAccess as u64, va, pages, bitmap, flag))
}
