//! `isoflood`: tries to keep a stale translation of a freed frame (issue
//! 13, "a TLB shootdown can be skipped"). Start argument: bits 0..32 the
//! victim (`isovictim` mode 0), bits 32..64 the number of rounds (0:
//! [`DEFAULT_ROUNDS`]).
//!
//! The first vCPU (the *unmapper*) starts a *flooder* on every other user
//! core. Each round:
//!
//! 1. the unmapper maps a fresh frame F at [`VA`] holding `OLD(r)` and
//!    releases the round; every flooder reads VA (caching the
//!    translation on its core) and then floods asynchronous calls at this
//!    environment, each of which posts a wake-up to every other core
//!    holding one of its vCPUs: the cores' urgent mailboxes fill;
//! 2. the unmapper unmaps VA (must be `Ok`: the kernel has then removed
//!    every core's translation), frees F, and tells the victim
//!    (`Acall [GIVE, F | r << 32]`), which allocates exactly F, checks it
//!    is zeroed and fills it with its own pattern; the unmapper waits until
//!    `FrameStatus(F)` names the victim as owner, then a little more;
//! 3. every flooder, from the moment it sees that the unmap returned until
//!    the round ends (and at least [`MIN_LOOKS`] times), reads VA with a fault-tolerant probe between bursts:
//!    any read that does not fault is a stale translation (counted, and
//!    classified: `OLD(r)`, zeros, the victim's pattern, other); after one,
//!    it also writes [`EVIL`] through it, which the victim must then see.
//!    The first read of the next round (VA then maps a new frame) must
//!    give the new round's value, not a leftover translation's.
//!
//! Exit 0 iff no stale access happened and every unmap returned `Ok`; the
//! victim exits 0 iff its frames never changed. Rounds stop early after
//! [`BUDGET_MS`] (each round costs a mailbox timeout on a kernel with the
//! bug). Prints one summary line with the longest `Unmap`.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos_async::abi::FrameHolder;
use libos_async::abi::{Rights, UpcallFrame, vector};
use libos_async::check::{fail, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::sys::{self, probe, rdtsc};
use libos_async::{TEST_WAIT_MS, wait_for_ms};
use libos_async::{core_id, env_id, info, other_cores, println, set_exception_handler, start_vcpu};

libos_async::entry!(app_main);

const DEFAULT_ROUNDS: u64 = 24;
/// Rounds stop being started after this long.
const BUDGET_MS: u64 = 25_000;
/// What a faulting probe returns.
const MARKER: u64 = 0xfa17_fa17_fa17_fa17;
/// The shared page.
const VA: u64 = SCRATCH_BASE + 0x1000_0000;
/// Written through a stale translation (the victim must notice).
const EVIL: u64 = 0xe711_e711_e711_e711;
/// Asynchronous calls a flooder makes between two looks at VA.
const BURST: u64 = 8;
/// Looks at VA each flooder takes after the unmap returned, at least.
const MIN_LOOKS: u64 = 4;
/// How long the unmapper lets the flood run before it unmaps, and how
/// long the flooders keep probing once the victim holds F.
const FLOOD_BEFORE_UNMAP_MS: u64 = 5;
const PROBE_AFTER_MS: u64 = 5;

/// `isovictim`'s words (its `GIVE` and `DONE`).
const GIVE: u64 = 0x6176_6967;
const DONE: u64 = 0x656e_6f64;
/// The first word of the victim's pattern (`isovictim`'s `pattern`).
const VICTIM_TAG: u64 = 0x1c71_0000_0000_0000;

const fn old(r: u64) -> u64 {
    0x01d0_0000_0000_0000 | r
}

/// The round released (0: none).
static ROUND: AtomicU64 = AtomicU64::new(0);
/// Flooders that read VA this round.
static STARTED: AtomicU64 = AtomicU64::new(0);
/// The last round whose unmap returned.
static REMOVED: AtomicU64 = AtomicU64::new(0);
/// The last round whose probing window is over.
static CLOSED: AtomicU64 = AtomicU64::new(0);
/// Flooders done with the round.
static DONE_COUNT: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicU64 = AtomicU64::new(0);
static EXITED: AtomicU64 = AtomicU64::new(0);
// What the flooders saw through VA after the unmap returned.
static STALE_OLD: AtomicU64 = AtomicU64::new(0);
static STALE_ZERO: AtomicU64 = AtomicU64::new(0);
static STALE_VICTIM: AtomicU64 = AtomicU64::new(0);
static STALE_OTHER: AtomicU64 = AtomicU64::new(0);
static STALE_WRITES: AtomicU64 = AtomicU64::new(0);
/// Reads of VA after the unmap returned.
static LOOKS: AtomicU64 = AtomicU64::new(0);
static ACALLS: AtomicU64 = AtomicU64::new(0);
static ACALL_ERRORS: AtomicU64 = AtomicU64::new(0);

fn handler(frame: &mut UpcallFrame) -> bool {
    frame.vector == vector::PAGE_FAULT && probe::skip_fixed(frame, MARKER)
}

fn ms(n: u64) -> u64 {
    info().tsc_hz / 1000 * n
}

/// Counts what a read through VA after the unmap returned gave.
fn stale(r: u64, v: u64) {
    let counter = match v {
        _ if v == old(r) => &STALE_OLD,
        0 => &STALE_ZERO,
        _ if v & 0xffff_0000_0000_0000 == VICTIM_TAG => &STALE_VICTIM,
        _ => &STALE_OTHER,
    };
    if counter.fetch_add(1, SeqCst) == 0 {
        println!("CHECK FAILED: isoflood: core {}: round {r}: read {v:#x} after unmap", core_id());
    }
}

fn flood(me: u64) {
    for _ in 0..BURST {
        match sys::acall(me, 0, 0) {
            Ok(_) => ACALLS.fetch_add(1, SeqCst),
            Err(_) => ACALL_ERRORS.fetch_add(1, SeqCst),
        };
    }
}

fn flooder(_: u64) -> ! {
    let me = env_id();
    let mut r = 1;
    while STOP.load(SeqCst) == 0 {
        if ROUND.load(SeqCst) < r {
            flood(me);
            continue;
        }
        // A translation left over from an earlier round shows here too.
        let v = probe::read_fixed(VA);
        if v != old(r) {
            stale(r, v);
        }
        STARTED.fetch_add(1, SeqCst);
        // Flood until the unmap has returned (the translation stays cached
        // here: this core runs nothing else).
        while REMOVED.load(SeqCst) < r && STOP.load(SeqCst) == 0 {
            flood(me);
        }
        // From here on VA must fault: look at least a few times (a burst
        // may have outlasted the whole round), then until the round closes.
        let mut wrote = false;
        let mut looks = 0;
        while looks < MIN_LOOKS || (CLOSED.load(SeqCst) < r && STOP.load(SeqCst) == 0) {
            let v = probe::read_fixed(VA);
            LOOKS.fetch_add(1, SeqCst);
            if v != MARKER {
                stale(r, v);
                if !wrote && probe::write_fixed(VA, EVIL) != MARKER {
                    STALE_WRITES.fetch_add(1, SeqCst);
                    wrote = true;
                }
            }
            looks += 1;
            flood(me);
        }
        DONE_COUNT.fetch_add(1, SeqCst);
        r += 1;
    }
    EXITED.fetch_add(1, SeqCst);
    sys::vcpu_exit()
}

fn app_main(arg: u64) -> i32 {
    let victim = arg & 0xffff_ffff;
    let rounds = match arg >> 32 {
        0 => DEFAULT_ROUNDS,
        n => n,
    };
    require("set_exception_handler", set_exception_handler(handler));
    let mut flooders = 0;
    for core in other_cores() {
        require("start_vcpu", start_vcpu(core, flooder, 0));
        flooders += 1;
    }
    let budget = rdtsc() + ms(BUDGET_MS);
    let (mut done, mut longest_unmap, mut not_taken) = (0, 0, 0);
    for r in 1..=rounds {
        if rdtsc() > budget {
            break;
        }
        let f = require("frame_alloc", sys::frame_alloc(None));
        require("map VA", sys::map(f, VA, Rights::RW));
        probe::write(VA, old(r));
        DONE_COUNT.store(0, SeqCst);
        STARTED.store(0, SeqCst);
        ROUND.store(r, SeqCst);
        if !wait_for_ms(TEST_WAIT_MS, || STARTED.load(SeqCst) == flooders) {
            STOP.store(1, SeqCst);
            fail(format_args!("isoflood: round {r}: flooders did not start"));
        }
        let t = rdtsc();
        while rdtsc() < t + ms(FLOOD_BEFORE_UNMAP_MS) {
            core::hint::spin_loop();
        }
        let t = rdtsc();
        require("unmap VA", sys::unmap(VA));
        longest_unmap = longest_unmap.max(rdtsc() - t);
        require("frame_free", sys::frame_free(f));
        REMOVED.store(r, SeqCst);
        require("give the frame to the victim", sys::acall(victim, GIVE, f | r << 32));
        let taken = wait_for_ms(2000, || {
            sys::frame_status(f)
                .is_ok_and(|s| s.holder() == Some(FrameHolder::Owned) && s.env == victim)
        });
        if !taken {
            not_taken += 1;
        }
        let t = rdtsc();
        while rdtsc() < t + ms(PROBE_AFTER_MS) {
            core::hint::spin_loop();
        }
        CLOSED.store(r, SeqCst);
        if !wait_for_ms(TEST_WAIT_MS, || DONE_COUNT.load(SeqCst) == flooders) {
            STOP.store(1, SeqCst);
            fail(format_args!("isoflood: round {r}: flooders did not finish"));
        }
        done = r;
    }
    STOP.store(1, SeqCst);
    if !wait_for_ms(TEST_WAIT_MS, || EXITED.load(SeqCst) == flooders) {
        fail(format_args!("isoflood: flooders did not exit"));
    }
    require("tell the victim we are done", sys::acall(victim, DONE, 0));
    let stale = [&STALE_OLD, &STALE_ZERO, &STALE_VICTIM, &STALE_OTHER].map(|c| c.load(SeqCst));
    println!(
        "isoflood: {done} of {rounds} rounds, {flooders} flooders, {} async calls ({} failed), \
         victim took F in {} rounds; {} looks at VA after unmap returned, stale reads: {} OLD, {} zero, {} victim data, \
         {} other; {} stale writes; longest unmap {} ms",
        ACALLS.load(SeqCst),
        ACALL_ERRORS.load(SeqCst),
        done - not_taken,
        LOOKS.load(SeqCst),
        stale[0],
        stale[1],
        stale[2],
        stale[3],
        STALE_WRITES.load(SeqCst),
        longest_unmap / ms(1).max(1)
    );
    i32::from(stale.iter().sum::<u64>() + STALE_WRITES.load(SeqCst) != 0 || done == 0)
}
