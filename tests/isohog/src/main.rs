//! `isohog`: long kernel operations beside a victim (issue 13, "another
//! environment can keep a core from its slot owner"). It runs on the
//! victim's core (`isovictim` mode 1 measures how long it is kept off the
//! CPU there); every mode checks its own results and exits 0. Start
//! argument: bits 0..8 the mode, 8..32 the number of mappings `n` (0:
//! [`DEFAULT_MAPPINGS`]), 32..64 a peer environment id.
//!
//! * 0, **control**: spins in ring 3 for [`CONTROL_MS`]: the victim's gap
//!   with an attacker that does nothing but compute (the baseline).
//! * 1, **lock churn**: one vCPU on each of [`CHURNERS`] other cores maps
//!   64 pages of a frame and removes them with `unmap_range` over
//!   [`abi::UNMAP_RANGE_MAX`] pages, in a loop for [`CHURN_MS`], keeping
//!   the address-space lock busy; meanwhile the first vCPU sleeps on the
//!   victim's core on a predicate that reads a word of this environment's
//!   memory (evaluated under that lock at every scheduling decision there).
//! * 2, **revoke owner** (peer: the grantee): allocates a frame, grants it
//!   READ to the peer, tells it the frame number (`Acall [frame, 0]`),
//!   waits for `[MAPPED, count]`, then revokes: one system call that
//!   removes all of the grantee's mappings.
//! * 3, **revoke grantee**: waits for the frame, maps it `n` times at
//!   consecutive pages, answers `[MAPPED, count]`, waits for the
//!   `GRANT_REVOKED` event and checks that the first, middle and last
//!   pages fault.
//! * 4, **huge unmap_range**: maps a frame of its own at `n` consecutive
//!   pages, removes them with one `unmap_range` over
//!   [`abi::UNMAP_RANGE_MAX`] pages (populated), checks that they fault,
//!   repeats it over the same now-empty range and over a range no page
//!   table covers.
//! * 5, **exit with mappings**: maps a frame `n` times and exits with all
//!   of them in place: the kernel tears the address space down.
//!
//! The number of mappings is bounded by the quota (16 per frame of quota,
//! page tables included), so `n` is a little under 65,536.
//!
//! [`abi::UNMAP_RANGE_MAX`]: libos_async::abi::UNMAP_RANGE_MAX

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos_async::abi::event::{CALL, Event, GRANT_REVOKED};
use libos_async::abi::{Error, PAGE_SIZE, Rights, UNMAP_RANGE_MAX, UpcallFrame, vector};
use libos_async::check::{fail, require};
use libos_async::cpu::{Events, Received};
use libos_async::layout::SCRATCH_BASE;
use libos_async::sys::{self, probe, rdtsc};
use libos_async::{
    Pred, TEST_WAIT_MS, core_id, info, other_cores, println, set_exception_handler, start_vcpu,
    wait_for_ms,
};

libos_async::entry!(app_main);

/// Mappings when the start argument names none.
const DEFAULT_MAPPINGS: u64 = 60_000;
const CONTROL_MS: u64 = 100;
const CHURN_MS: u64 = 150;
const CHURNERS: usize = 2;
/// What a faulting probe returns.
const MARKER: u64 = 0xfa17_fa17_fa17_fa17;
/// First word of the grantee's answer.
const MAPPED: u64 = 0x6d61_7070;
/// Where the mappings go (a 4 GiB-aligned window of 2^20 pages).
const BASE: u64 = SCRATCH_BASE + 0x100_0000_0000 / 2;
/// A window of 2^20 pages where nothing is ever mapped.
const EMPTY: u64 = BASE + 0x10_0000_0000;
/// The lock-churn stop flag lives in its own page (the sleeper's predicate
/// reads it through the page tables).
const STOP_VA: u64 = SCRATCH_BASE;

static EXITED: AtomicU64 = AtomicU64::new(0);

fn handler(frame: &mut UpcallFrame) -> bool {
    frame.vector == vector::PAGE_FAULT && probe::skip_fixed(frame, MARKER)
}

fn app_main(arg: u64) -> i32 {
    let mode = arg & 0xff;
    let n = match (arg >> 8) & 0xff_ffff {
        0 => DEFAULT_MAPPINGS,
        n => n,
    };
    let peer = arg >> 32;
    require("set_exception_handler", set_exception_handler(handler));
    match mode {
        0 => control(),
        1 => lock_churn(),
        2 => revoke_owner(peer),
        3 => revoke_grantee(n),
        4 => huge_unmap_range(n),
        5 => exit_with_mappings(n),
        _ => fail(format_args!("isohog: unknown mode {mode}")),
    }
}

fn us(ticks: u64) -> u64 {
    ticks / (info().tsc_hz / 1_000_000).max(1)
}

/// Maps `frame` at `n` consecutive pages from `base` (fewer if the quota
/// runs out first: returns how many).
fn map_many(frame: u64, base: u64, n: u64, rights: Rights) -> u64 {
    for i in 0..n {
        match sys::map(frame, base + i * PAGE_SIZE, rights) {
            Ok(_) => {}
            Err(Error::QuotaExceeded) => return i,
            Err(e) => fail(format_args!("isohog: map #{i}: {e:?}")),
        }
    }
    n
}

/// The first, middle and last of `n` pages from `base` fault.
fn all_gone(base: u64, n: u64) -> bool {
    [0, n / 2, n - 1].iter().all(|&i| probe::read_fixed(base + i * PAGE_SIZE) == MARKER)
}

/// Sleeps (bounded) until an event that `wanted` accepts arrives; returns
/// it. Sleeping, not yielding: on the victim's core only one attacker
/// vCPU is runnable at a time.
fn next_event(events: &mut Events, wanted: impl Fn(&Event) -> bool) -> Event {
    let give_up = rdtsc() + info().tsc_hz / 1000 * TEST_WAIT_MS;
    loop {
        let seen = sys::event_tail();
        for got in events.by_ref() {
            if let Received::Event(e) = got
                && wanted(&e)
            {
                return e;
            }
        }
        if rdtsc() > give_up {
            fail(format_args!("isohog: the event never arrived"));
        }
        let _ = Pred::events_ne(seen).either(Pred::deadline(give_up)).sleep();
    }
}

/// The next `CALL` event: its source and words.
fn next_call(events: &mut Events) -> (u64, [u64; 2]) {
    let e = next_event(events, |e| e.kind == CALL);
    (u64::from(e.source), e.data)
}

// --- mode 0 ------------------------------------------------------------------

fn control() -> i32 {
    let end = rdtsc() + info().tsc_hz / 1000 * CONTROL_MS;
    while rdtsc() < end {
        core::hint::spin_loop();
    }
    println!("isohog control: spun {CONTROL_MS} ms on core {}", core_id());
    0
}

// --- mode 1 ------------------------------------------------------------------

fn churner(k: u64) -> ! {
    let base = BASE + k * 0x10_0000_0000;
    let f = require("frame_alloc", sys::frame_alloc(None));
    let end = rdtsc() + info().tsc_hz / 1000 * CHURN_MS;
    let (mut rounds, mut longest) = (0u64, 0u64);
    while rdtsc() < end {
        map_many(f, base, 64, Rights::READ);
        let t = rdtsc();
        let removed = require("unmap_range", sys::unmap_range(base, UNMAP_RANGE_MAX));
        longest = longest.max(rdtsc() - t);
        if removed < 64 && rounds == 0 {
            println!("isohog churner: unmap_range reported {removed} of 64 pages");
        }
        rounds += 1;
    }
    require("frame_free", sys::frame_free(f));
    probe::write(STOP_VA, 1);
    // Wake the sleeper at once (it would notice at its core's next slot
    // boundary anyway).
    let _ = sys::acall(libos_async::env_id(), 0, 0);
    println!(
        "isohog churner on core {}: {rounds} unmap_range calls of 2^20 pages, longest {} us",
        core_id(),
        us(longest)
    );
    EXITED.fetch_add(1, SeqCst);
    sys::vcpu_exit()
}

fn lock_churn() -> i32 {
    require("map the stop flag", libos_async::mem::map_fresh(STOP_VA, 1, Rights::RW));
    let mut started = 0;
    for (k, core) in other_cores().take(CHURNERS).enumerate() {
        require("start_vcpu", start_vcpu(core, churner, k as u64));
        started += 1;
    }
    let mut sleeps = 0;
    while probe::read(STOP_VA) == 0 {
        let _ = Pred::word_ne(STOP_VA, 0).sleep();
        sleeps += 1;
    }
    if !wait_for_ms(TEST_WAIT_MS, || EXITED.load(SeqCst) == started) {
        fail(format_args!("isohog: churners did not finish"));
    }
    println!(
        "isohog lock churn: sleeper on core {} woke {sleeps} times, {started} churners",
        core_id()
    );
    0
}

// --- modes 2 and 3 -----------------------------------------------------------

fn revoke_owner(grantee: u64) -> i32 {
    let mut events = Events::from_start();
    let f = require("frame_alloc", sys::frame_alloc(None));
    require("map", sys::map(f, BASE, Rights::RW));
    probe::write(BASE, 0x0abc_def0);
    require("grant", sys::frame_grant(f, grantee, Rights::READ));
    require("tell the grantee", sys::acall(grantee, f, 0));
    let (from, [word, count]) = next_call(&mut events);
    if from != grantee || word != MAPPED {
        fail(format_args!("isohog owner: unexpected call {word:#x} from env {from}"));
    }
    let t = rdtsc();
    require("revoke", sys::frame_revoke(f, grantee));
    let took = rdtsc() - t;
    require("unmap", sys::unmap(BASE));
    require("frame_free", sys::frame_free(f));
    println!(
        "isohog owner on core {}: revoked a frame mapped {count} times in {} us",
        core_id(),
        us(took)
    );
    0
}

fn revoke_grantee(n: u64) -> i32 {
    let mut events = Events::from_start();
    let (owner, [f, _]) = next_call(&mut events);
    let mapped = map_many(f, BASE, n, Rights::READ);
    if mapped < n * 3 / 4 || probe::read_fixed(BASE) != 0x0abc_def0 {
        fail(format_args!("isohog grantee: mapped {mapped} of {n}, or wrong contents"));
    }
    require("answer", sys::acall(owner, MAPPED, mapped));
    next_event(&mut events, |e| e.kind == GRANT_REVOKED);
    if !all_gone(BASE, mapped) {
        fail(format_args!("isohog grantee: revocation not seen, or a page still mapped"));
    }
    println!("isohog grantee on core {}: {mapped} mappings of frame {f:#x} revoked", core_id());
    0
}

// --- mode 4 ------------------------------------------------------------------

fn huge_unmap_range(n: u64) -> i32 {
    let f = require("frame_alloc", sys::frame_alloc(None));
    let mapped = map_many(f, BASE, n, Rights::READ);
    let t = rdtsc();
    let removed = require("unmap_range populated", sys::unmap_range(BASE, UNMAP_RANGE_MAX));
    let populated = rdtsc() - t;
    if !all_gone(BASE, mapped) {
        fail(format_args!("isohog: pages still mapped after unmap_range"));
    }
    let t = rdtsc();
    require("unmap_range emptied", sys::unmap_range(BASE, UNMAP_RANGE_MAX));
    let emptied = rdtsc() - t;
    let t = rdtsc();
    require("unmap_range untouched", sys::unmap_range(EMPTY, UNMAP_RANGE_MAX));
    let untouched = rdtsc() - t;
    require("frame_free", sys::frame_free(f));
    println!(
        "isohog unmap_range on core {}: {mapped} mapped, {removed} reported removed; 2^20 \
         pages populated {} us, emptied {} us, never mapped {} us",
        core_id(),
        us(populated),
        us(emptied),
        us(untouched)
    );
    0
}

// --- mode 5 ------------------------------------------------------------------

fn exit_with_mappings(n: u64) -> i32 {
    let f = require("frame_alloc", sys::frame_alloc(None));
    let mapped = map_many(f, BASE, n, Rights::READ);
    println!("isohog exit on core {}: exiting with {mapped} mappings", core_id());
    0
}
