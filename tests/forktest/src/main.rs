//! `forktest`: child environments, copy-on-write `fork` and `wait`
//! (`libos_async::fork`), one mode per start argument (the kernel's
//! `fork_*` and `child_*` tests):
//!
//! 0. fork, then parent and child each write every shared page (some
//!    mapped directly, some in a lazy region): each sees only its own
//!    writes; the parent exits without waiting, and the child, which waits
//!    until the parent is gone, finishes after it: the only holder of the
//!    frames the parent let go of, its first write to each page takes the
//!    frame over without a copy;
//! 1. 100 rounds of fork + child writes + exit(code) + wait (run on 7 cores
//!    at once by the kernel's test): every status right, and the quota left
//!    afterwards is what it was before (no frame leaked to the children);
//! 2. a hostile child: maps, frees, grants, copies into and takes over
//!    frames of its parent it was not given, uses handles it does not hold
//!    (its parent's id, its own, forged and stale ones), and forks itself
//!    until its quota runs out: errors only; the parent's memory and its
//!    private frame are untouched, the child exits 0 (all its checks held);
//! 3. a child writes a page that was read-only before the fork: that fault
//!    is not copy-on-write, so the library does not resolve it; without a
//!    handler the child exits 102, which its parent's `wait` reports, and
//!    the parent's page is unchanged;
//! 4. `ChildQuota`: raising a child's quota takes frames of the parent's,
//!    lowering gives them back (the parent's room probed each time); never
//!    below what the child uses (frames given to it: the lowest accepted
//!    quota is found by search and lies between its frames and its frames
//!    plus page tables); out-of-range quotas, more than the parent has, a
//!    sibling that is not the creator, forged and own handles: errors
//!    only; after the child's end the parent's room is what it was;
//! 5. `spawn` from the initrd: `tiny_exit` (exits with argc plus the
//!    length of its arguments, read from its start stack) returns the
//!    right status for several argument lists, on this core and another;
//!    the `hello` app (several segments, `.bss`, the libOS runtime) runs
//!    and exits 0; the malformed images (`bad_*`), a missing name, a bad
//!    core, arguments beyond a page and a quota too small are clear
//!    errors; the parent's room is the same before and after;
//! 6. one copy-on-write fault fixed twice: a `CowBreak` of a page that is
//!    writable already (fixed by an earlier call) returns the frame mapped
//!    there, unchanged, while a read-only page that is not copy-on-write
//!    is still refused; then a second vCPU of the parent, on another core,
//!    writes the same copy-on-write pages as the first after each of 40
//!    forks, so both fault on one page at once and one fix-up finds it
//!    fixed by the other (the race a signal upcall whose handler writes
//!    the faulting page also makes): no fault is left unhandled and every
//!    page ends with one of the two last writes;
//! 7. `not_shared_with_children`: a marked range is left out of the fork
//!    (the child finds nothing mapped there and maps its own), the pages
//!    on both sides of it are shared as usual, and the parent keeps its own.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use libos_async::abi::{self, Error, FrameHolder, PAGE_SIZE, Rights};
use libos_async::check::{Checks, fail, frames_left, require};
use libos_async::fork::{fork, wait};
use libos_async::layout::SCRATCH_BASE;
use libos_async::predicate::Pred;
use libos_async::sys::{self, probe};
use libos_async::vm::{self, Fill};
use libos_async::{TEST_WAIT_MS, println};

libos_async::entry!(app_main);

/// Pages mapped directly (`map_fresh`).
const DIRECT: u64 = SCRATCH_BASE + 0x1000_0000;
const DIRECT_PAGES: u64 = 32;
/// The lazy region (4 MiB-aligned).
const LAZY: u64 = SCRATCH_BASE + 0x4000_0000;
/// Pages of the lazy region.
const LAZY_PAGES: u64 = 32;

fn app_main(arg: u64) -> i32 {
    match arg {
        0 => isolation(),
        1 => rounds(),
        2 => hostile(),
        3 => read_only_stays_read_only(),
        4 => child_quota(),
        5 => spawn_checks(),
        6 => cow_fixed_twice(),
        7 => unshared_range_left_out(),
        _ => fail(format_args!("forktest: unknown mode {arg}")),
    }
}

fn word(va: u64) -> u64 {
    probe::read(va)
}

/// Writes `tag + i` at the start of every page `i` of `pages`.
fn fill(pages: &[u64], tag: u64) {
    for (i, &va) in pages.iter().enumerate() {
        probe::write(va, tag + i as u64);
    }
}

/// How many pages of `pages` do not hold `tag + i`.
fn wrong(pages: &[u64], tag: u64) -> usize {
    pages.iter().enumerate().filter(|&(i, &va)| word(va) != tag + i as u64).count()
}

fn page_list() -> alloc::vec::Vec<u64> {
    require("map_fresh", libos_async::mem::map_fresh(DIRECT, DIRECT_PAGES, Rights::RW));
    let lazy = require(
        "reserve",
        vm::reserve_at("forktest lazy", LAZY, LAZY_PAGES * PAGE_SIZE, 1, Rights::RW, Fill::Lazy),
    );
    let mut pages: alloc::vec::Vec<u64> =
        (0..DIRECT_PAGES).map(|i| DIRECT + i * PAGE_SIZE).collect();
    pages.extend((0..LAZY_PAGES).map(|i| lazy.base() + i * PAGE_SIZE));
    pages
}

fn holders(va: u64) -> u64 {
    sys::page_query(va).map_or(0, |q| (q >> abi::PAGE_QUERY_HOLDERS_SHIFT) & 127)
}

// --- mode 0 -----------------------------------------------------------------

/// How long mode 0's parent and child stay after their work, so that the
/// kernel's harness, polling from another core, sees the order they end in
/// (a fork and the parent's writes can end within one of its polls).
const HARNESS_SLACK_MS: u64 = 20;

fn isolation() -> i32 {
    let pages = page_list();
    fill(&pages, 0x1000);
    match require("fork", fork(0)) {
        Some(child) => {
            let mut c = Checks::new();
            c.check(holders(pages[0]) == 2, format_args!("parent: page shared by 2"));
            fill(&pages, 0x3000);
            let bad = wrong(&pages, 0x3000);
            c.check(bad == 0, format_args!("parent: {bad} pages lost its own writes"));
            println!("forktest: parent wrote its pages, exits before child {child}");
            // The kernel's harness looks for our child from another core:
            // give it time to see the child before we go.
            libos_async::wait_for_ms(HARNESS_SLACK_MS, || false);
            c.finish()
        }
        None => {
            let mut c = Checks::new();
            let bad = wrong(&pages, 0x1000);
            c.check(bad == 0, format_args!("child: {bad} pages not as at the fork"));
            // Wait for the parent to be gone (the oldest "forktest" is then
            // us): we are the only holder of every page.
            let me = u64::from(sys::info().env_id);
            let gone =
                libos_async::wait_for_ms(TEST_WAIT_MS, || sys::env_lookup("forktest") == Ok(me));
            c.check(gone, format_args!("child: parent never ended"));
            let alone = pages.iter().all(|&va| holders(va) == 1);
            c.check(alone, format_args!("child: not the only holder after the parent"));
            let status = sys::page_query(pages[0]).map(|q| q & !0xfff).unwrap_or(0) / PAGE_SIZE;
            let st = sys::frame_status(status);
            c.check(
                st.map(|s| s.holder()) == Ok(Some(FrameHolder::Released)),
                format_args!("child: shared frame not released by the parent: {st:?}"),
            );
            let bad = wrong(&pages, 0x1000);
            c.check(bad == 0, format_args!("child: {bad} pages changed by the parent"));
            fill(&pages, 0x2000);
            let bad = wrong(&pages, 0x2000);
            c.check(bad == 0, format_args!("child: {bad} pages lost its own writes"));
            // Taken over without a copy: the same frame, now ours.
            let after = sys::page_query(pages[0]).map(|q| q & !0xfff).unwrap_or(0) / PAGE_SIZE;
            c.check(after == status, format_args!("child: sole holder copied anyway"));
            c.check(
                sys::frame_status(after).map(|s| s.env) == Ok(u64::from(sys::info().env_id)),
                format_args!("child: did not take the frame over"),
            );
            println!("forktest: child done after its parent");
            // And time to see us alive after our parent went.
            libos_async::wait_for_ms(HARNESS_SLACK_MS, || false);
            c.finish()
        }
    }
}

// --- mode 1 -----------------------------------------------------------------

fn rounds() -> i32 {
    let pages = page_list();
    fill(&pages, 0x1000);
    let mut c = Checks::new();
    // Warm up (page tables of the first fork's paths).
    round(&pages, 0, &mut c);
    let before = frames_left();
    for r in 1..100u64 {
        round(&pages, r, &mut c);
        if c.failed() > 0 {
            break;
        }
    }
    let after = frames_left();
    c.check(after == before, format_args!("quota left {before} → {after} over 99 forks"));
    let bad = wrong(&pages, 0x1000 + 99);
    c.check(bad == 0, format_args!("parent: {bad} pages wrong at the end"));
    c.finish()
}

fn round(pages: &[u64], r: u64, c: &mut Checks) {
    match require("fork", fork(64)) {
        Some(child) => {
            // The parent writes too (its copies), then waits.
            fill(pages, 0x1000 + r);
            let status = wait(child);
            c.check(status == Ok(r + 1), format_args!("round {r}: status {status:?}"));
            c.expect_err("status read twice", sys::child_status(child), Error::NoSuchEnv);
        }
        None => {
            let before = if r == 0 { 0x1000 } else { 0x1000 + r - 1 };
            let ok = wrong(pages, before) == 0;
            fill(&pages[..4], 0x5000);
            let ok = ok && wrong(&pages[..4], 0x5000) == 0;
            sys::exit(if ok { r + 1 } else { 1000 + r })
        }
    }
}

// --- mode 2 -----------------------------------------------------------------

fn hostile() -> i32 {
    let pages = page_list();
    fill(&pages, 0x1000);
    // A private frame the child is never given (unmapped, so not shared).
    let private = require("frame_alloc", sys::frame_alloc(None));
    let shared_frame = sys::page_query(pages[0]).map(|q| q >> 12).unwrap_or(0);
    let me = u64::from(sys::info().env_id);
    match require("fork", fork(1024)) {
        Some(child) => {
            let mut c = Checks::new();
            let status = wait(child);
            c.check(status == Ok(0), format_args!("hostile child's status {status:?}"));
            let bad = wrong(&pages, 0x1000);
            c.check(bad == 0, format_args!("parent: {bad} pages changed by the child"));
            c.expect_ok("parent frees its private frame", sys::frame_free(private));
            c.expect_ok("parent still writes", {
                fill(&pages, 0x4000);
                Ok(0)
            });
            c.check(wrong(&pages, 0x4000) == 0, format_args!("parent's own writes"));
            c.finish()
        }
        None => {
            let mut c = Checks::new();
            let va = SCRATCH_BASE + 0x2000_0000;
            c.expect_err(
                "map parent's private frame",
                sys::map(private, va, Rights::READ),
                Error::NotOwner,
            );
            c.expect_err("free parent's private frame", sys::frame_free(private), Error::NotOwner);
            c.expect_err(
                "grant parent's private frame",
                sys::frame_grant(private, me, Rights::READ),
                Error::NotOwner,
            );
            c.expect_err("free a shared frame", sys::frame_free(shared_frame), Error::NotOwner);
            c.expect_err(
                "map a shared frame writable",
                sys::map(shared_frame, va, Rights::RW),
                Error::PermissionDenied,
            );
            c.expect_err(
                "take over a frame the parent still holds",
                sys::protect(pages[0], Rights::RW),
                Error::PermissionDenied,
            );
            c.expect_err(
                "copy into a shared frame",
                sys::frame_copy(shared_frame, pages[1]),
                Error::PermissionDenied,
            );
            c.expect_err(
                "grant a shared frame",
                sys::frame_grant(shared_frame, me, Rights::READ),
                Error::NotOwner,
            );
            // Handles it does not hold.
            let mine = u64::from(sys::info().env_id);
            for (what, h, want) in [
                ("parent's id", me, Error::NotOwner),
                ("own id", mine, Error::NotOwner),
                ("forged id", 0xdead_beef, Error::NoSuchEnv),
                ("forged word", u64::MAX, Error::NoSuchEnv),
            ] {
                c.expect_err(what, sys::child_map(h, private, va, Rights::READ, 0), want);
                c.expect_err(what, sys::child_unmap(h, pages[0]), want);
                c.expect_err(what, sys::child_destroy(h), want);
                c.expect_err(what, sys::share_range(h, pages[0], pages[0], 1), want);
                c.expect_err(what, sys::child_status(h), want);
                c.expect_err(what, sys::child_quota(h, 64), want);
            }
            // A stale handle.
            let g = require("env_create", sys::env_create(abi::CHILD_QUOTA_MIN));
            c.expect_ok("destroy an unstarted child", sys::child_destroy(g));
            c.check(wait(g) == Ok(abi::CHILD_KILLED), format_args!("destroyed child's status"));
            c.expect_err("stale handle", sys::child_destroy(g), Error::NoSuchEnv);
            c.expect_err("stale status", sys::child_status(g), Error::NoSuchEnv);
            // Fork until the quota runs out; the grandchildren sleep.
            let mut kids = alloc::vec::Vec::new();
            let last = loop {
                match fork(64) {
                    Ok(Some(k)) => kids.push(k),
                    Ok(None) => loop {
                        let _ = Pred::events_ne(sys::event_tail()).sleep();
                    },
                    Err(e) => break e,
                }
                if kids.len() > 64 {
                    break Error::Unsupported;
                }
            };
            c.check(
                matches!(last, Error::QuotaExceeded | Error::NoMemory) && !kids.is_empty(),
                format_args!("fork bomb: {} forks, then {last:?}", kids.len()),
            );
            for &k in &kids {
                c.expect_ok("destroy a grandchild", sys::child_destroy(k));
                c.check(wait(k) == Ok(abi::CHILD_KILLED), format_args!("grandchild status"));
            }
            // The quota came back: forking works again.
            match fork(64) {
                Ok(Some(k)) => {
                    c.check(wait(k) == Ok(7), format_args!("fork after the bomb"));
                }
                Ok(None) => sys::exit(7),
                Err(e) => {
                    c.check(false, format_args!("fork after the bomb: {e:?}"));
                }
            }
            c.finish()
        }
    }
}

// --- mode 3 -----------------------------------------------------------------

fn read_only_stays_read_only() -> i32 {
    let va = SCRATCH_BASE + 0x3000_0000;
    require("map_fresh", libos_async::mem::map_fresh(va, 1, Rights::RW));
    probe::write(va, 5);
    require("protect", sys::protect(va, Rights::READ));
    match require("fork", fork(0)) {
        Some(child) => {
            let status = wait(child);
            let mut c = Checks::new();
            c.check(status == Ok(102), format_args!("child status {status:?}, expected 102"));
            c.check(word(va) == 5, format_args!("parent's read-only page"));
            c.finish()
        }
        None => {
            // Not copy-on-write: the fault is the application's, and there
            // is no handler: the libOS exits 102.
            probe::write(va, 6);
            sys::exit(0)
        }
    }
}

// --- mode 4 -----------------------------------------------------------------

fn child_quota() -> i32 {
    const MIN: u64 = abi::CHILD_QUOTA_MIN;
    const GIVEN: u64 = 40;
    let mut c = Checks::new();
    // A first fork makes what every later one reuses (heap, tables): done
    // before the room is measured.
    match require("warm-up fork", fork(64)) {
        Some(k) => c.check(wait(k) == Ok(0), format_args!("warm-up child's status")),
        None => sys::exit(0),
    };
    let start = frames_left();
    let g = require("env_create", sys::env_create(MIN));
    c.check(frames_left() == start - MIN, format_args!("creation took {MIN} frames"));
    c.check(sys::child_quota(g, MIN + 100) == Ok(MIN), format_args!("raise: previous quota"));
    c.check(frames_left() == start - MIN - 100, format_args!("raise took 100 more frames"));
    c.check(sys::child_quota(g, MIN) == Ok(MIN + 100), format_args!("lower: previous quota"));
    c.check(frames_left() == start - MIN, format_args!("lower gave 100 frames back"));
    // Out of range, overflow, more than the parent has: nothing changes.
    c.expect_err("quota below the minimum", sys::child_quota(g, MIN - 1), Error::InvalidArgument);
    c.expect_err("quota 0", sys::child_quota(g, 0), Error::InvalidArgument);
    c.expect_err("quota u64::MAX", sys::child_quota(g, u64::MAX), Error::InvalidArgument);
    c.expect_err("quota 2^32", sys::child_quota(g, 1 << 32), Error::InvalidArgument);
    c.expect_err(
        "more than the parent has",
        sys::child_quota(g, MIN + start),
        Error::QuotaExceeded,
    );
    c.check(frames_left() == start - MIN, format_args!("refused calls changed nothing"));
    // Frames given to the child are in use: the quota cannot go below them.
    c.expect_ok("raise for the gift", sys::child_quota(g, MIN + GIVEN + 16));
    let va = SCRATCH_BASE + 0x5000_0000;
    for i in 0..GIVEN {
        // Every other one a fresh frame of the child's own (`ANY_FRAME`):
        // charged to it the same way.
        let f = if i % 2 == 0 {
            require("frame_alloc", sys::frame_alloc(None))
        } else {
            abi::ANY_FRAME
        };
        require(
            "child_map give",
            sys::child_map(g, f, va + i * PAGE_SIZE, Rights::RW, abi::CHILD_MAP_GIVE),
        );
    }
    let used = frames_left();
    c.expect_err(
        "fresh frame at a mapped page",
        sys::child_map(g, abi::ANY_FRAME, va, Rights::RW, abi::CHILD_MAP_GIVE),
        Error::AlreadyMapped,
    );
    c.expect_err(
        "fresh frame without give",
        sys::child_map(g, abi::ANY_FRAME, va - PAGE_SIZE, Rights::RW, 0),
        Error::BadFrame,
    );
    c.expect_err(
        "fresh frame, rights without read",
        sys::child_map(g, abi::ANY_FRAME, va - PAGE_SIZE, Rights::WRITE, abi::CHILD_MAP_GIVE),
        Error::InvalidArgument,
    );
    c.check(frames_left() == used, format_args!("refused fresh maps changed nothing"));
    c.expect_err("below what the child uses", sys::child_quota(g, MIN), Error::Busy);
    // The lowest quota accepted: the search lowers one frame at a time.
    let mut low = MIN + GIVEN + 16;
    while low > MIN && sys::child_quota(g, low - 1).is_ok() {
        low -= 1;
    }
    c.check(
        (GIVEN + 1..=GIVEN + 8).contains(&low),
        format_args!("lowest quota accepted {low}: {GIVEN} frames given, plus tables"),
    );
    c.expect_err("one below the lowest", sys::child_quota(g, low - 1), Error::Busy);
    c.check(sys::child_quota(g, low) == Ok(low), format_args!("the lowest again"));
    // A sibling (forked) is not the creator of `g`.
    match require("fork", fork(64)) {
        Some(k) => {
            let status = wait(k);
            c.check(status == Ok(0), format_args!("sibling's status {status:?}"));
        }
        None => {
            let mut k = Checks::new();
            k.expect_err("sibling raises g", sys::child_quota(g, 1000), Error::NotOwner);
            k.expect_err("sibling lowers g", sys::child_quota(g, MIN), Error::NotOwner);
            let own = u64::from(sys::info().env_id);
            k.expect_err("own quota", sys::child_quota(own, 1000), Error::NotOwner);
            sys::exit(if k.failed() == 0 { 0 } else { 1 })
        }
    }
    c.check(sys::child_quota(g, low) == Ok(low), format_args!("sibling changed nothing"));
    // The child's end gives its whole quota back (the frames given to it
    // were its charge, not ours, since the gift); measured from after the
    // sibling's fork, whose own allocations (heap, tables) stay.
    let before_end = frames_left();
    c.expect_ok("destroy", sys::child_destroy(g));
    c.check(wait(g) == Ok(abi::CHILD_KILLED), format_args!("destroyed child's status"));
    c.expect_err("quota of a reclaimed child", sys::child_quota(g, 64), Error::NoSuchEnv);
    let end = frames_left();
    c.check(
        end == before_end + low,
        format_args!("room at the end {end}, expected {before_end} + {low}"),
    );
    c.finish()
}

// --- mode 5 -----------------------------------------------------------------

fn spawn_checks() -> i32 {
    use libos_async::spawn::{SpawnError, SpawnOptions, spawn, spawn_with};
    let mut c = Checks::new();
    let here = sys::core_id();
    let other = libos_async::other_cores().next().unwrap_or(here);
    // Warm-up: maps and indexes the initrd, makes the staging tables.
    match spawn("tiny_exit", &[], here) {
        Ok(k) => c.check(wait(k) == Ok(0), format_args!("warm-up status")),
        Err(e) => fail(format_args!("warm-up spawn: {e:?}")),
    };
    let held = || vm::stats().data_frames + vm::stats().table_frames;
    let (start, held_at_start) = (frames_left(), held());
    let long = [b'x'; 300];
    let cases: [(&[&[u8]], usize); 4] = [
        (&[], here),
        (&[b"a", b"bb", b"ccc"], here),
        (&[b"tiny_exit", b"", b"hello world"], other),
        (&[&long, &long, &long, b"z"], other),
    ];
    for (args, core) in cases {
        let want = args.len() as u64 + args.iter().map(|a| a.len() as u64).sum::<u64>();
        match spawn("tiny_exit", args, core) {
            Ok(k) => {
                let got = wait(k);
                c.check(got == Ok(want), format_args!("{} args on {core}: {got:?}", args.len()));
            }
            Err(e) => {
                c.check(false, format_args!("spawn {} args: {e:?}", args.len()));
            }
        }
    }
    let hello = match spawn_with(
        "hello",
        &[],
        other,
        SpawnOptions { quota: 1024, ..SpawnOptions::default() },
    ) {
        Ok(k) => wait(k),
        Err(e) => Err(Error::Unsupported).inspect_err(|_| println!("spawn hello: {e:?}")),
    };
    c.check(hello == Ok(0), format_args!("spawned hello's status {hello:?}"));
    for bad in ["bad_truncated", "bad_machine", "bad_entry", "bad_overlap"] {
        let got = spawn(bad, &[], here);
        c.check(
            matches!(got, Err(SpawnError::BadImage(_))),
            format_args!("{bad}: {got:?}, expected a refused image"),
        );
    }
    let got = spawn("no_such_program", &[], here);
    c.check(got == Err(SpawnError::NotFound), format_args!("missing: {got:?}"));
    let got = spawn("tiny_exit", &[], abi::MAX_CORES);
    c.check(got == Err(SpawnError::BadCore), format_args!("bad core: {got:?}"));
    let one = SpawnOptions { quota: 64, stack_pages: 1 };
    let got = spawn_with("tiny_exit", &[b"one page"], other, one).map(wait);
    c.check(got == Ok(Ok(9)), format_args!("one stack page: {got:?}"));
    let none = SpawnOptions { quota: 64, stack_pages: 0 };
    let got = spawn_with("tiny_exit", &[], here, none);
    c.check(
        got == Err(SpawnError::Kernel(Error::InvalidArgument)),
        format_args!("no stack: {got:?}"),
    );
    let huge = [b'y'; 5000];
    let got = spawn("tiny_exit", &[&huge], here);
    c.check(got == Err(SpawnError::ArgsTooBig), format_args!("huge args: {got:?}"));
    let got = spawn_with(
        "tiny_exit",
        &[],
        here,
        SpawnOptions { quota: abi::CHILD_QUOTA_MIN, ..SpawnOptions::default() },
    );
    c.check(
        got == Err(SpawnError::Kernel(Error::QuotaExceeded)),
        format_args!("quota too small: {got:?}"),
    );
    // Frames the region layer took meanwhile (stack growth for the large
    // arguments) are ours, not lost to the children.
    let grown = held() - held_at_start;
    let end = frames_left();
    c.check(
        end + grown == start,
        format_args!("room {start} before the spawns, {end} after, {grown} taken by regions"),
    );
    c.finish()
}

// --- mode 6 -----------------------------------------------------------------

/// Mode 6's pages (mapped directly).
const RACE: u64 = SCRATCH_BASE + 0x5000_0000;
const RACE_PAGES: u64 = 16;
/// Mode 6's forks.
const RACE_ROUNDS: u64 = 40;
/// The round the racer vCPU is to write (0: none yet; `u64::MAX`: stop).
static RACE_ROUND: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// The last round the racer finished.
static RACE_DONE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The value vCPU `who` (1 or 2) writes into page `i` in `round`.
fn race_value(round: u64, who: u64, i: u64) -> u64 {
    round << 32 | who << 16 | i
}

fn race_write(round: u64, who: u64) {
    for i in 0..RACE_PAGES {
        probe::write(RACE + i * PAGE_SIZE, race_value(round, who, i));
    }
}

/// The second vCPU: writes every race page each time a round opens.
fn racer(_: u64) -> ! {
    use core::sync::atomic::Ordering::SeqCst;
    let mut done = 0;
    loop {
        let round = RACE_ROUND.load(SeqCst);
        if round == u64::MAX {
            sys::vcpu_exit()
        }
        if round > done {
            race_write(round, 2);
            done = round;
            RACE_DONE.store(done, SeqCst);
        }
        core::hint::spin_loop();
    }
}

fn cow_fixed_twice() -> i32 {
    use core::sync::atomic::Ordering::SeqCst;
    let mut c = Checks::new();
    // Part 1: the same break twice, by hand.
    let page = SCRATCH_BASE + 0x5800_0000;
    let read_only = page + PAGE_SIZE;
    require("map_fresh", libos_async::mem::map_fresh(page, 2, Rights::RW));
    probe::write(page, 1);
    probe::write(read_only, 2);
    require("protect", sys::protect(read_only, Rights::READ));
    match require("fork", fork(0)) {
        None => loop {
            // Kept alive (a holder of the shared frames) until destroyed.
            let _ = Pred::deadline(u64::MAX).sleep();
        },
        Some(child) => {
            let q = sys::page_query(page).unwrap_or(0);
            c.check(
                q & abi::PAGE_QUERY_COW != 0 && holders(page) == 2,
                format_args!("after fork the page is copy-on-write with 2 holders: {q:#x}"),
            );
            let first = sys::cow_break(page);
            let second = sys::cow_break(page);
            c.check(first.is_ok(), format_args!("the first CowBreak: {first:?}"));
            c.check(
                second == first,
                format_args!(
                    "a CowBreak of the page writable already: {second:?}, expected {first:?}"
                ),
            );
            let q = sys::page_query(page).unwrap_or(0);
            c.check(
                q & abi::PAGE_QUERY_COW == 0 && Rights(q & 7).contains(Rights::WRITE),
                format_args!("afterwards the page is writable, not copy-on-write: {q:#x}"),
            );
            let ro = sys::cow_break(read_only);
            c.check(
                ro == Err(Error::InvalidArgument),
                format_args!("a CowBreak of a read-only page that is not copy-on-write: {ro:?}"),
            );
            probe::write(page, 3);
            c.check(word(page) == 3 && word(read_only) == 2, format_args!("the pages' words"));
            require("child_destroy", sys::child_destroy(child));
            let status = wait(child);
            c.check(status == Ok(abi::CHILD_KILLED), format_args!("destroyed child: {status:?}"));
        }
    }
    // Part 2: two vCPUs of ours fault on the same copy-on-write pages.
    require("map_fresh", libos_async::mem::map_fresh(RACE, RACE_PAGES, Rights::RW));
    race_write(0, 1);
    let Some(core) = libos_async::other_cores().next() else {
        fail(format_args!("forktest 6: needs a second core"));
    };
    require("start_vcpu", libos_async::start_vcpu(core, racer, 0));
    for round in 1..=RACE_ROUNDS {
        let Some(child) = require("fork", fork(0)) else { sys::exit(0) };
        RACE_ROUND.store(round, SeqCst);
        race_write(round, 1);
        if !libos_async::wait_for_ms(TEST_WAIT_MS, || RACE_DONE.load(SeqCst) == round) {
            RACE_ROUND.store(u64::MAX, SeqCst);
            fail(format_args!("forktest 6: round {round}: the racer did not finish"));
        }
        let status = wait(child);
        c.check(status == Ok(0), format_args!("round {round}: child status {status:?}"));
    }
    RACE_ROUND.store(u64::MAX, SeqCst);
    let torn = (0..RACE_PAGES)
        .filter(|&i| {
            let w = word(RACE + i * PAGE_SIZE);
            w != race_value(RACE_ROUNDS, 1, i) && w != race_value(RACE_ROUNDS, 2, i)
        })
        .count();
    c.check(torn == 0, format_args!("{torn} race pages hold neither last write"));
    c.finish()
}

// --- mode 7 -----------------------------------------------------------------

fn unshared_range_left_out() -> i32 {
    let base = SCRATCH_BASE + 0x6000_0000;
    // Pages 0..4; 1 and 2 are left out of the fork.
    require("map_fresh", libos_async::mem::map_fresh(base, 4, Rights::RW));
    for i in 0..4 {
        probe::write(base + i * PAGE_SIZE, 70 + i);
    }
    require(
        "not_shared_with_children",
        libos_async::fork::not_shared_with_children(base + PAGE_SIZE, 2 * PAGE_SIZE),
    );
    let bad = libos_async::fork::not_shared_with_children(base + 1, PAGE_SIZE);
    match require("fork", fork(0)) {
        None => {
            let mapped = |i: u64| sys::page_query(base + i * PAGE_SIZE).is_ok();
            let code = if !mapped(0) || !mapped(3) {
                1 // the pages around the range must be shared
            } else if mapped(1) || mapped(2) {
                2 // the range must not be
            } else if word(base) != 70 || word(base + 3 * PAGE_SIZE) != 73 {
                3
            } else {
                0
            };
            sys::exit(code)
        }
        Some(child) => {
            let mut c = Checks::new();
            let status = wait(child);
            c.check(status == Ok(0), format_args!("child's view of the fork: {status:?}"));
            c.check(bad == Err(Error::InvalidArgument), format_args!("unaligned range: {bad:?}"));
            let kept = (0..4).all(|i| word(base + i * PAGE_SIZE) == 70 + i);
            c.check(kept, format_args!("the parent's pages"));
            c.finish()
        }
    }
}
