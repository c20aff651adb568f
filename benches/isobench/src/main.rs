//! `isobench`: benchmarks of isolation under multi-core attack (issue 13),
//! one `bench {...}` line per figure like `benchsys`. The kernel's
//! `mode=bench` (`kernel/src/machine/bench.rs`) starts every instance and
//! its partners on chosen cores. Start argument: bits 0..8 the mode, bits
//! 8..32 a parameter (the sample count `n` for modes 0, 2 and 4, 0 meaning
//! [`DEFAULT_SAMPLES`]; the scenario for mode 5), bits 32..64 a peer
//! environment id. Every time is `rdtsc` around one system call in ring 3
//! (under `--icount`: guest instructions of the whole machine in that
//! window).
//!
//! * 0, **acall** (peer: a `sink`; this vCPU on core 1, the sink asleep on
//!   core 2):
//!   - `acall_noflood_cost`: one `Acall` to the sink, nothing else running
//!     (the sink wakes and drains its queue on its own core);
//!   - `acall_flood_cost`: the same while a vCPU of this environment on
//!     every other user core (six with 8 cores; one shares core 2 with the
//!     sink) calls `Acall` at the sink in a tight loop. Both: `n` samples
//!     after [`ACALL_WARMUP`] calls. The wake-ups the sink is owed
//!     coalesce (one per core until it looks), so a flooded call does the
//!     same work as a lone one; what the flood adds is contention for the
//!     sink's event-queue lock and cache lines. Under `--icount` QEMU runs
//!     one vCPU at a time, so the flood shows only in samples that span a
//!     switch to other vCPUs (their instructions count: the p99).
//! * 1, **sink**: sleeps on its event queue and drains it until a
//!   [`QUIT`] call; prints how many calls it saw.
//! * 2, **revoke owner** (peer: a `grantee` on another core):
//!   `frame_revoke_1`, `frame_revoke_1000`, `frame_revoke_60000`. Each
//!   sample grants a frame of ours `READ` to the grantee, tells it how many
//!   times to map it, waits until it has (its vCPU is then asleep or on its
//!   way to sleep on its own core) and times the whole `FrameRevoke`: every
//!   restarted step (64 mappings withdrawn, one shootdown round each)
//!   until the call returns. Samples ([`REVOKES`]): `n`, 20 and
//!   5, after 4 / 1 / 1 warm-up rounds.
//! * 3, **revoke grantee**: maps the frame named in the owner's call as
//!   many times as the call says, at consecutive pages, answers, waits for
//!   `GRANT_REVOKED` and checks that the first, middle and last pages
//!   fault; repeats until a `count = 0` call.
//! * 4, **unmap range**: `unmap_range_64_per_page`,
//!   `unmap_range_4096_per_page`, `unmap_range_65000_per_page`: one frame of
//!   ours mapped (untimed) at that many consecutive pages, then one
//!   `UnmapRange` over exactly those pages, timed to its return (all
//!   restarted steps of 256 entries, each with its shootdown; no other vCPU
//!   of ours runs, so no IPIs), divided by the page count: **cycles per
//!   page**. 65,000, not 262,144: an environment may hold 16 mappings per
//!   frame of its quota of 4096 (65,536), its own code, data and stacks
//!   included. Samples: `n`, 20, 5, after 4 / 1 / 1 warm-up rounds.
//! * 5, **gap meter** (the scenario in bits 8..32 names the figure, see
//!   [`GAPS`]; the kernel starts it on core 1, then `isohog`s on the same
//!   core, which share its default round-robin): the honest
//!   victim of `isovictim` mode 1, reporting instead of judging. It maps
//!   [`PROGRESS_VA`] (the kernel starts the attack once the counter there is
//!   set), fills [`MEM_PAGES`] pages with a pattern, waits for an `isohog`,
//!   then spins reading the TSC and records the longest gap between two
//!   consecutive reads (time this vCPU was off the CPU) until no `isohog`
//!   is left, plus [`TAIL_MS`] for the kernel's work after an exit. One
//!   sample; its pattern must be intact at the end.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use libos_async::abi::event::{CALL, Event, GRANT_REVOKED};
use libos_async::abi::{Error, PAGE_SIZE, Rights, UpcallFrame, vector};
use libos_async::bench::report;
use libos_async::check::{fail, require};
use libos_async::cpu::{Events, Received};
use libos_async::layout::SCRATCH_BASE;
use libos_async::sys::{self, probe, rdtsc};
use libos_async::{Pred, core_id, info, other_cores, println, set_exception_handler, start_vcpu};

libos_async::entry!(app_main);

const MAX_SAMPLES: usize = 4096;
const DEFAULT_SAMPLES: usize = 200;
const ACALL_WARMUP: usize = 16;
/// Warm-up rounds of the sized benchmarks whose sample count is `n`, and
/// of the ones with a fixed count.
const WARMUP_N: usize = 4;
const WARMUP_FIXED: usize = 1;
/// How long anyone waits for a partner (the whole bench run is bounded by
/// the harness's own 10 minutes per application).
const WAIT_MS: u64 = 600_000;
/// First word of the "stop" call to the sink.
pub const QUIT: u64 = 0x7469_7571;
/// First word of the grantee's answer.
const MAPPED: u64 = 0x6d61_7070;
/// What a faulting probe returns.
const MARKER: u64 = 0xfa17_fa17_fa17_fa17;
/// The owner's word in the revoked frame (the grantee checks it).
const OWNER_WORD: u64 = 0x0abc_def0;
/// Where the grantee's and the range benchmark's mappings go.
const BASE: u64 = SCRATCH_BASE + 0x80_0000_0000;
/// The revoke owner's own mapping of its frame.
const OWN_VA: u64 = SCRATCH_BASE + 0x1000_0000;
/// The gap meter's progress counter (read by the kernel's harness).
pub const PROGRESS_VA: u64 = SCRATCH_BASE;
/// The gap meter's own pages, checked at the end.
const MEM_VA: u64 = SCRATCH_BASE + 0x2000_0000;
const MEM_PAGES: u64 = 16;
/// Measured after the last `isohog` is gone.
const TAIL_MS: u64 = 50;

/// `frame_revoke_*`: (mappings, name, samples; 0 = `n`).
const REVOKES: [(u64, &str, usize); 3] =
    [(1, "frame_revoke_1", 0), (1000, "frame_revoke_1000", 20), (60_000, "frame_revoke_60000", 5)];
/// `unmap_range_*_per_page`: (pages, name, samples; 0 = `n`).
const RANGES: [(u64, &str, usize); 3] = [
    (64, "unmap_range_64_per_page", 0),
    (4096, "unmap_range_4096_per_page", 20),
    (65_000, "unmap_range_65000_per_page", 5),
];
/// The gap meter's figures by scenario (the kernel pairs each with its
/// `isohog`s): a hog that only computes (the baseline), revoke of a frame
/// mapped 60,000 times, `UnmapRange` of 2^20 pages with 60,000 populated
/// (then the same range empty, then a range no page table covers), exit
/// with 60,000 mappings.
pub const GAPS: [&str; 4] = [
    "victim_longest_gap_control",
    "victim_longest_gap_revoke_60000",
    "victim_longest_gap_unmap_range_60000",
    "victim_longest_gap_exit_60000",
];

fn handler(frame: &mut UpcallFrame) -> bool {
    frame.vector == vector::PAGE_FAULT && probe::skip_fixed(frame, MARKER)
}

fn app_main(arg: u64) -> i32 {
    let mode = arg & 0xff;
    let param = (arg >> 8) & 0xff_ffff;
    let n = match param {
        0 => DEFAULT_SAMPLES,
        p => (p as usize).min(MAX_SAMPLES),
    };
    let peer = arg >> 32;
    require("set_exception_handler", set_exception_handler(handler));
    match mode {
        0 => acall_bench(peer, n),
        1 => sink(),
        2 => revoke_owner(peer, n),
        3 => revoke_grantee(),
        4 => unmap_ranges(n),
        5 => gap_meter(param as usize),
        _ => fail(format_args!("isobench: unknown mode {mode}")),
    }
}

fn ms(n: u64) -> u64 {
    info().tsc_hz / 1000 * n
}

/// Sleeps (bounded) until an event that `wanted` accepts arrives.
fn next_event(events: &mut Events, wanted: impl Fn(&Event) -> bool) -> Event {
    let give_up = rdtsc() + ms(WAIT_MS);
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
            fail(format_args!("isobench: the event never arrived"));
        }
        let _ = Pred::events_ne(seen).either(Pred::deadline(give_up)).sleep();
    }
}

/// The next `CALL` event: its source and words.
fn next_call(events: &mut Events) -> (u64, [u64; 2]) {
    let e = next_event(events, |e| e.kind == CALL);
    (u64::from(e.source), e.data)
}

/// Maps `frame` at `n` consecutive pages from [`BASE`]; how many it could
/// (fewer if the mapping cap is reached).
fn map_many(frame: u64, n: u64, rights: Rights) -> u64 {
    for i in 0..n {
        match sys::map(frame, BASE + i * PAGE_SIZE, rights) {
            Ok(_) => {}
            Err(Error::QuotaExceeded) => return i,
            Err(e) => fail(format_args!("isobench: map #{i}: {e:?}")),
        }
    }
    n
}

/// The first, middle and last of `n` pages from [`BASE`] fault.
fn all_gone(n: u64) -> bool {
    [0, n / 2, n - 1].iter().all(|&i| probe::read_fixed(BASE + i * PAGE_SIZE) == MARKER)
}

/// (samples, warm-up rounds) of a sized benchmark.
fn counts(fixed: usize, n: usize) -> (usize, usize) {
    if fixed == 0 { (n, WARMUP_N) } else { (fixed, WARMUP_FIXED) }
}

// --- modes 0 and 1: Acall under flood ------------------------------------------

static STOP: AtomicBool = AtomicBool::new(false);
static RUNNING: AtomicU64 = AtomicU64::new(0);
static EXITED: AtomicU64 = AtomicU64::new(0);
static FLOOD_CALLS: AtomicU64 = AtomicU64::new(0);
static FLOOD_ERRORS: AtomicU64 = AtomicU64::new(0);

fn flooder(target: u64) -> ! {
    RUNNING.fetch_add(1, SeqCst);
    let (mut calls, mut errors) = (0, 0);
    while !STOP.load(SeqCst) {
        for _ in 0..8 {
            match sys::acall(target, 1, 0) {
                Ok(_) => calls += 1,
                Err(_) => errors += 1,
            }
        }
    }
    FLOOD_CALLS.fetch_add(calls, SeqCst);
    FLOOD_ERRORS.fetch_add(errors, SeqCst);
    EXITED.fetch_add(1, SeqCst);
    sys::vcpu_exit()
}

/// Times `samples.len()` calls (after a warm-up) at `target`.
fn time_acalls(target: u64, samples: &mut [u64]) {
    for i in 0..samples.len() + ACALL_WARMUP {
        let t = rdtsc();
        let r = sys::acall(target, 2, i as u64);
        let took = rdtsc() - t;
        require("acall the sink", r);
        if i >= ACALL_WARMUP {
            samples[i - ACALL_WARMUP] = took;
        }
    }
}

fn wait_for(what: &str, done: impl FnMut() -> bool) {
    if !libos_async::wait_for_ms(WAIT_MS, done) {
        fail(format_args!("isobench: {what} did not happen"));
    }
}

fn acall_bench(target: u64, n: usize) -> i32 {
    let mut samples = [0u64; MAX_SAMPLES];
    time_acalls(target, &mut samples[..n]);
    report("acall_noflood_cost", &mut samples[..n]);

    let mut flooders = 0;
    for core in other_cores() {
        require("start_vcpu", start_vcpu(core, flooder, target));
        flooders += 1;
    }
    wait_for("flooders starting", || RUNNING.load(SeqCst) == flooders);
    // Let every flooder get going before the first sample.
    let settle = rdtsc() + ms(1);
    while rdtsc() < settle {
        core::hint::spin_loop();
    }
    time_acalls(target, &mut samples[..n]);
    report("acall_flood_cost", &mut samples[..n]);
    STOP.store(true, SeqCst);
    wait_for("flooders stopping", || EXITED.load(SeqCst) == flooders);
    require("quit the sink", sys::acall(target, QUIT, 0));
    println!(
        "isobench acall: core {}, {flooders} flooders made {} calls ({} refused)",
        core_id(),
        FLOOD_CALLS.load(SeqCst),
        FLOOD_ERRORS.load(SeqCst)
    );
    0
}

fn sink() -> i32 {
    let mut events = Events::from_start();
    let give_up = rdtsc() + ms(WAIT_MS);
    let (mut calls, mut lost, mut wakes) = (0u64, 0u64, 0u64);
    'run: loop {
        let seen = sys::event_tail();
        for got in events.by_ref() {
            match got {
                Received::Event(e) if e.kind == CALL && e.data[0] == QUIT => break 'run,
                Received::Event(e) if e.kind == CALL => calls += 1,
                Received::Lost(k) => lost += k,
                Received::Event(_) => {}
            }
        }
        if rdtsc() > give_up {
            fail(format_args!("isobench sink: no QUIT"));
        }
        let _ = Pred::events_ne(seen).either(Pred::deadline(give_up)).sleep();
        wakes += 1;
    }
    println!(
        "isobench sink: core {}: {calls} calls read, {lost} overwritten unread, {wakes} wake-ups",
        core_id()
    );
    0
}

// --- modes 2 and 3: FrameRevoke ------------------------------------------------

fn revoke_owner(grantee: u64, n: usize) -> i32 {
    let mut events = Events::from_start();
    let f = require("frame_alloc", sys::frame_alloc(None));
    require("map", sys::map(f, OWN_VA, Rights::RW));
    probe::write(OWN_VA, OWNER_WORD);
    let mut samples = [0u64; MAX_SAMPLES];
    for &(count, name, fixed) in &REVOKES {
        let (k, warmup) = counts(fixed, n);
        for i in 0..k + warmup {
            require("grant", sys::frame_grant(f, grantee, Rights::READ));
            require("tell the grantee", sys::acall(grantee, count, f));
            let (from, [word, mapped]) = next_call(&mut events);
            if from != grantee || word != MAPPED || mapped != count {
                fail(format_args!(
                    "isobench owner: {word:#x} {mapped} from env {from}, wanted {count} mappings"
                ));
            }
            let t = rdtsc();
            let r = sys::frame_revoke(f, grantee);
            let took = rdtsc() - t;
            require("revoke", r);
            if i >= warmup {
                samples[i - warmup] = took;
            }
        }
        report(name, &mut samples[..k]);
    }
    require("stop the grantee", sys::acall(grantee, 0, 0));
    require("unmap", sys::unmap(OWN_VA));
    require("frame_free", sys::frame_free(f));
    0
}

fn revoke_grantee() -> i32 {
    let mut events = Events::from_start();
    let mut rounds = 0u64;
    loop {
        let (owner, [count, f]) = next_call(&mut events);
        if count == 0 {
            break;
        }
        let mapped = map_many(f, count, Rights::READ);
        if mapped != count || probe::read_fixed(BASE) != OWNER_WORD {
            fail(format_args!("isobench grantee: mapped {mapped} of {count}, or wrong contents"));
        }
        require("answer", sys::acall(owner, MAPPED, mapped));
        next_event(&mut events, |e| e.kind == GRANT_REVOKED);
        if !all_gone(mapped) {
            fail(format_args!("isobench grantee: a page still mapped after the revoke"));
        }
        rounds += 1;
    }
    println!("isobench grantee: core {}: {rounds} grants mapped and revoked", core_id());
    0
}

// --- mode 4: UnmapRange ----------------------------------------------------------

fn unmap_ranges(n: usize) -> i32 {
    let f = require("frame_alloc", sys::frame_alloc(None));
    let mut samples = [0u64; MAX_SAMPLES];
    for &(pages, name, fixed) in &RANGES {
        let (k, warmup) = counts(fixed, n);
        for i in 0..k + warmup {
            let mapped = map_many(f, pages, Rights::READ);
            if mapped != pages {
                fail(format_args!("isobench: mapped {mapped} of {pages} pages (mapping cap)"));
            }
            let t = rdtsc();
            let r = sys::unmap_range(BASE, pages);
            let took = rdtsc() - t;
            let removed = require("unmap_range", r);
            if removed != pages || !all_gone(pages) {
                fail(format_args!("isobench: unmap_range removed {removed} of {pages} pages"));
            }
            if i >= warmup {
                samples[i - warmup] = took / pages;
            }
        }
        report(name, &mut samples[..k]);
    }
    require("frame_free", sys::frame_free(f));
    0
}

// --- mode 5: the victim's longest gap ------------------------------------------

/// Word `w` of the gap meter's pages.
const fn pattern(w: u64) -> u64 {
    0x15b3_0000_0000_0000 | w
}

fn attacker_alive() -> bool {
    sys::env_lookup("isohog") != Err(Error::NoSuchEnv)
}

fn gap_meter(scenario: usize) -> i32 {
    let Some(&name) = GAPS.get(scenario) else {
        fail(format_args!("isobench: unknown gap scenario {scenario}"));
    };
    let i = info();
    let per_us = (i.tsc_hz / 1_000_000).max(1);
    require("map progress", libos_async::mem::map_fresh(PROGRESS_VA, 1, Rights::RW));
    require("map memory", libos_async::mem::map_fresh(MEM_VA, MEM_PAGES, Rights::RW));
    for w in 0..MEM_PAGES * 512 {
        probe::write(MEM_VA + w * 8, pattern(w));
    }
    probe::write(PROGRESS_VA, 1);
    wait_for("an isohog appearing", attacker_alive);
    let start = rdtsc();
    let mut last = start;
    let (mut longest, mut at) = (0u64, 0u64);
    let mut end = u64::MAX;
    let mut turns = 0u64;
    loop {
        let now = rdtsc();
        let gap = now - last;
        if gap > longest {
            longest = gap;
            at = now - start;
        }
        last = now;
        turns += 1;
        if turns.is_multiple_of(4096) {
            probe::write(PROGRESS_VA, turns);
            if end == u64::MAX && !attacker_alive() {
                end = rdtsc() + ms(TAIL_MS);
            }
            if now > end {
                break;
            }
        }
    }
    let bad = (0..MEM_PAGES * 512).filter(|&w| probe::read(MEM_VA + w * 8) != pattern(w)).count();
    println!(
        "isobench: core {}: {name}: {} us at {} us (2 slots + grace = {} us), in {} us",
        core_id(),
        longest / per_us,
        at / per_us,
        2 * u64::from(i.slot_us) + u64::from(i.grace_us),
        (last - start) / per_us
    );
    if bad != 0 {
        fail(format_args!("isobench: {bad} words of the victim's memory changed"));
    }
    report(name, &mut [longest]);
    0
}
