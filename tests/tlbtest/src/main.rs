//! `tlbtest`: TLB shootdown tests. `start_arg` selects the mode; exit 0
//! means every check passed.
//!
//! The first vCPU (the *writer*) starts one vCPU (a *reader*) on every other
//! core in `info().user_cores`, except in modes 3 and 4. Coordination is
//! through atomics in this environment's own memory; every wait is bounded
//! (yields, or iteration counts for tight loops). The exception handler
//! survives page faults at the fixed-length probes (`probe::read_fixed`,
//! `probe::write_fixed`): it skips the access and returns [`MARKER`].
//!
//! * 0, **unmap**: for [`ROUNDS_UNMAP`] rounds the writer maps a fresh frame
//!   F at [`VA`] with `OLD(r)` in it and releases the readers, who spin
//!   reading it; after a short pseudo-random delay it unmaps VA, frees F at
//!   once, takes exactly F back and writes `SENTINEL(r)` into it through
//!   another address. A reader may read `OLD(r)` (until it sees the writer's
//!   "unmapped" flag) or fault; anything else — the sentinel, the zeroes of
//!   the reallocated frame, `OLD` after the flag — is a violation.
//! * 1, **protect**: readers write their own word of VA (mapped RW) in a
//!   loop; the writer protects it READ and then raises a flag; a write that
//!   does not fault after the reader has seen the flag is a violation.
//!   [`ROUNDS_PROTECT`] rounds, back to RW in between.
//! * 2, **concurrent**: every vCPU maps, checks, unmaps and frees a page of
//!   its own [`CHURN_ROUNDS`] times (every [`BLOCK_EVERY`]th time also 64 pages removed
//!   with one `unmap_range`), so all of them shoot at each other at once.
//! * 3, **halted target**: a vCPU on one other core touches a page and
//!   exits (its core halts, perhaps still caching this address space); then
//!   100 map/unmap rounds must complete.
//! * 4, **precision** (first vCPU on core 2): one vCPU on core 5 reads its
//!   own page until told to stop while core 2 does 50 map/unmap rounds; no
//!   other core is used (the kernel test checks its IPI counters). Prints
//!   `tlbtest precision: cores 2 and 5`.
//!
//! `start_arg` = mode + 256 * rounds: the bits above the low 8 override the
//! number of rounds of modes 0-2 (0: the defaults above).
//!
//! Each mode prints one summary line `tlbtest mode N: ...`.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use libos_async::abi::{Error, PAGE_SIZE, Rights, UpcallFrame, vector};
use libos_async::check::{fail, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::sys::{self, probe, rdtsc};
use libos_async::{core_id, info, println, set_exception_handler, start_vcpu, wait_for_ms};

use libos_async::rng::Rng;

libos_async::entry!(app_main);

/// What a faulting probe returns.
const MARKER: u64 = 0xfa17_fa17_fa17_fa17;
/// The shared page of modes 0, 1 and 4.
const VA: u64 = SCRATCH_BASE + 0x1000_0000;
/// Where the new owner of F writes the sentinel (mode 0).
const VA2: u64 = SCRATCH_BASE + 0x2000_0000;
use libos_async::TEST_WAIT_MS as WAIT_MS;
/// Iterations a reader spins before it falls back to waiting for the flag.
const SPIN_MAX: u64 = 2_000_000;

// Default rounds. Under TCG on a small host every round costs a few host
// scheduling periods (each of the 8 busy vCPU threads must get the CPU to
// acknowledge or advance), about 50-100 ms; `start_arg` asks for more.
const ROUNDS_UNMAP: u64 = 200;
const ROUNDS_PROTECT: u64 = 200;
const CHURN_ROUNDS: u64 = 100;
/// Every this many mode-2 iterations, also a 64-page `unmap_range`.
const BLOCK_EVERY: u64 = 50;
/// The rounds of modes 0-2 (from `start_arg`, or the defaults).
static ROUNDS: AtomicU64 = AtomicU64::new(0);

/// Rounds of the current mode: the override, else `default`.
fn rounds(default: u64) -> u64 {
    match ROUNDS.load(SeqCst) {
        0 => default,
        n => n,
    }
}
const HALTED_ROUNDS: u64 = 100;
const PRECISION_ROUNDS: u64 = 50;

/// The value F holds in round `r` (never 0, never [`MARKER`]).
const fn old(r: u64) -> u64 {
    0x01d0_0000_0000_0000 | r
}

/// What the new owner of F writes in round `r`.
const fn sentinel(r: u64) -> u64 {
    0xdead_beef_0000 | r
}

/// Core `core`'s private region (4 GiB each).
const fn region(core: usize) -> u64 {
    SCRATCH_BASE + 0x1_0000_0000 * (core as u64 + 1)
}

/// Where core `core` maps the 64-page block of mode 2.
const fn block(core: usize) -> u64 {
    region(core) + 0x100_0000
}

// Shared state.
/// The round the writer has released (0: none yet).
static ROUND: AtomicU64 = AtomicU64::new(0);
/// Readers that have made their first access in the current round.
static STARTED: AtomicU64 = AtomicU64::new(0);
/// Readers done with the current round.
static DONE: AtomicU64 = AtomicU64::new(0);
/// The last round whose removal (unmap/protect) has *returned*.
static REMOVED: AtomicU64 = AtomicU64::new(0);
/// The last round whose removal the writer has *begun*.
static REMOVING: AtomicU64 = AtomicU64::new(0);
/// Some reader read the old value in the current round.
static SAW_OLD: AtomicBool = AtomicBool::new(false);
/// Faults before the writer began removing access (mode 1).
static EARLY_FAULTS: AtomicU64 = AtomicU64::new(0);
/// Check failures seen by any vCPU.
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);
/// Readers that have finished (just before `vcpu_exit`).
static EXITED: AtomicU64 = AtomicU64::new(0);
/// Readers that are set up (modes 3, 4).
static READY: AtomicU64 = AtomicU64::new(0);
/// Tells everyone to stop (the writer gave up, or mode 4 is done).
static STOP: AtomicBool = AtomicBool::new(false);
/// The core the secondary vCPU found itself on (mode 4).
static READER_CORE: AtomicU64 = AtomicU64::new(u64::MAX);
/// Faults the handler survived.
static FAULTS: AtomicU64 = AtomicU64::new(0);

fn handler(frame: &mut UpcallFrame) -> bool {
    if frame.vector != vector::PAGE_FAULT {
        return false;
    }
    if !probe::skip_fixed(frame, MARKER) {
        return false;
    }
    FAULTS.fetch_add(1, SeqCst);
    true
}

/// Counts a violation and prints the first few.
fn violation(what: core::fmt::Arguments) {
    if VIOLATIONS.fetch_add(1, SeqCst) < 8 {
        println!("CHECK FAILED: core {}: {}", core_id(), what);
    }
}

/// The cores vCPUs of this environment may use, as a bit set.
fn usable_cores() -> u64 {
    let i = info();
    let online = if i.cores >= 64 { u64::MAX } else { (1u64 << i.cores) - 1 };
    if i.user_cores == 0 { online } else { i.user_cores & online }
}

/// Starts `f` on every usable core but this one; returns how many.
fn start_readers(f: fn(u64) -> !, arg: u64) -> u64 {
    let me = core_id();
    let mut n = 0;
    for core in (0..64).filter(|&c| c != me && usable_cores() & (1 << c) != 0) {
        require("start_vcpu", start_vcpu(core, f, arg));
        n += 1;
    }
    n
}

/// Waits (bounded) until `n` readers have exited.
fn wait_exited(n: u64) {
    if !wait_for_ms(WAIT_MS, || EXITED.load(SeqCst) >= n) {
        fail(format_args!("only {} of {n} readers finished", EXITED.load(SeqCst)));
    }
}

/// Ends a reader vCPU.
fn reader_exit() -> ! {
    EXITED.fetch_add(1, SeqCst);
    sys::vcpu_exit()
}

/// Spins for a pseudo-random 0..4096 iterations (the writer's delays).
fn random_delay(rng: &mut Rng) {
    for _ in 0..rng.below(4096) {
        core::hint::spin_loop();
    }
}

/// Writer: releases round `r` and waits until every reader has begun it.
fn release_round(r: u64, readers: u64) {
    DONE.store(0, SeqCst);
    STARTED.store(0, SeqCst);
    SAW_OLD.store(false, SeqCst);
    ROUND.store(r, SeqCst);
    if !wait_for_ms(WAIT_MS, || STARTED.load(SeqCst) >= readers) {
        STOP.store(true, SeqCst);
        fail(format_args!("round {r}: only {} of {readers} readers started", STARTED.load(SeqCst)));
    }
}

/// Writer: waits until every reader is done with round `r`.
fn wait_round_done(r: u64, readers: u64) {
    if !wait_for_ms(WAIT_MS, || DONE.load(SeqCst) >= readers) {
        STOP.store(true, SeqCst);
        fail(format_args!("round {r}: only {} of {readers} readers finished", DONE.load(SeqCst)));
    }
}

/// Reader: waits for round `r`; `false` if told to stop instead.
fn await_round(r: u64) -> bool {
    let released = wait_for_ms(WAIT_MS, || ROUND.load(SeqCst) >= r || STOP.load(SeqCst));
    if !released {
        violation(format_args!("round {r} never released"));
    }
    released && !STOP.load(SeqCst)
}

/// Reader: waits (bounded) for the writer's "removed" flag of round `r`.
fn await_removed(r: u64) -> bool {
    wait_for_ms(WAIT_MS, || REMOVED.load(SeqCst) >= r || STOP.load(SeqCst)) && !STOP.load(SeqCst)
}

fn app_main(arg: u64) -> i32 {
    let mode = arg & 0xff;
    ROUNDS.store(arg >> 8, SeqCst);
    require("set_exception_handler", set_exception_handler(handler));
    let ok = match mode {
        0 => mode_unmap(),
        1 => mode_protect(),
        2 => mode_concurrent(),
        3 => mode_halted(),
        4 => mode_precision(),
        _ => fail(format_args!("tlbtest: unknown mode {mode}")),
    };
    if ok && VIOLATIONS.load(SeqCst) == 0 { 0 } else { 1 }
}

// --- mode 0: unmap -------------------------------------------------------

fn unmap_reader(_: u64) -> ! {
    for r in 1..=rounds(ROUNDS_UNMAP) {
        if !await_round(r) {
            break;
        }
        let old = old(r);
        let mut first = true;
        let mut settled = false;
        for _ in 0..SPIN_MAX {
            let removed = REMOVED.load(SeqCst) >= r;
            let v = probe::read_fixed(VA);
            if first {
                STARTED.fetch_add(1, SeqCst);
                first = false;
            }
            if v == MARKER {
                settled = true;
                break;
            }
            if v == old && !removed {
                SAW_OLD.store(true, SeqCst);
                continue;
            }
            if v == old {
                violation(format_args!("round {r}: read OLD after unmap returned"));
            } else if v == sentinel(r) {
                violation(format_args!("round {r}: read the new owner's SENTINEL"));
            } else {
                violation(format_args!("round {r}: read {v:#x} (OLD {old:#x})"));
            }
            settled = true;
            break;
        }
        if !settled {
            // The writer was slow: once its unmap has returned, a read must
            // fault.
            if !await_removed(r) {
                violation(format_args!("round {r}: unmap never returned"));
            } else {
                let v = probe::read_fixed(VA);
                if v != MARKER {
                    violation(format_args!("round {r}: read {v:#x} after unmap returned"));
                }
            }
        }
        DONE.fetch_add(1, SeqCst);
    }
    reader_exit()
}

fn mode_unmap() -> bool {
    let readers = start_readers(unmap_reader, 0);
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ rdtsc());
    let mut old_rounds = 0;
    let mut reuse_missed = 0;
    let (mut t_release, mut t_unmap, mut t_done) = (0, 0, 0);
    let t0 = rdtsc();
    for r in 1..=rounds(ROUNDS_UNMAP) {
        let f = require("frame_alloc", sys::frame_alloc(None));
        require("map VA", sys::map(f, VA, Rights::RW));
        probe::write(VA, old(r));
        let t = rdtsc();
        release_round(r, readers);
        t_release += rdtsc() - t;
        random_delay(&mut rng);
        REMOVING.store(r, SeqCst);
        let t = rdtsc();
        require("unmap VA", sys::unmap(VA));
        t_unmap += rdtsc() - t;
        require("frame_free F", sys::frame_free(f));
        // The new owner: exactly F, if nobody else took it meanwhile.
        let g = match sys::frame_alloc(Some(f)) {
            Ok(g) => g,
            Err(Error::FrameUnavailable) => {
                reuse_missed += 1;
                require("frame_alloc", sys::frame_alloc(None))
            }
            Err(e) => fail(format_args!("frame_alloc(Some(F)): {e:?}")),
        };
        require("map VA2", sys::map(g, VA2, Rights::RW));
        probe::write(VA2, sentinel(r));
        REMOVED.store(r, SeqCst);
        let t = rdtsc();
        wait_round_done(r, readers);
        t_done += rdtsc() - t;
        if SAW_OLD.load(SeqCst) {
            old_rounds += 1;
        }
        require("unmap VA2", sys::unmap(VA2));
        require("frame_free", sys::frame_free(g));
    }
    wait_exited(readers);
    let cycles = rdtsc() - t0;
    println!(
        "tlbtest mode 0 (unmap): {} rounds, {readers} readers, {} violations, \
         old value read before the fault in {old_rounds} rounds, {} faults, F reuse missed \
         {reuse_missed}, {} Mcycles (per round: release {} k, unmap {} k, readers done {} k)",
        rounds(ROUNDS_UNMAP),
        VIOLATIONS.load(SeqCst),
        FAULTS.load(SeqCst),
        cycles / 1_000_000,
        t_release / rounds(ROUNDS_UNMAP) / 1000,
        t_unmap / rounds(ROUNDS_UNMAP) / 1000,
        t_done / rounds(ROUNDS_UNMAP) / 1000,
    );
    true
}

// --- mode 1: protect -----------------------------------------------------

fn protect_reader(_: u64) -> ! {
    let me = core_id() as u64;
    let slot = VA + 8 * me;
    for r in 1..=rounds(ROUNDS_PROTECT) {
        if !await_round(r) {
            break;
        }
        let value = (r << 8) | me;
        let mut first = true;
        let mut settled = false;
        for _ in 0..SPIN_MAX {
            let flagged = REMOVED.load(SeqCst) >= r;
            let got = probe::write_fixed(slot, value);
            if first {
                STARTED.fetch_add(1, SeqCst);
                first = false;
            }
            if got == MARKER {
                if REMOVING.load(SeqCst) < r {
                    EARLY_FAULTS.fetch_add(1, SeqCst);
                }
                settled = true;
                break;
            }
            if flagged {
                violation(format_args!("round {r}: write succeeded after protect(READ) returned"));
                settled = true;
                break;
            }
        }
        if !settled {
            if !await_removed(r) {
                violation(format_args!("round {r}: protect never returned"));
            } else if probe::write_fixed(slot, value) != MARKER {
                violation(format_args!("round {r}: write succeeded after protect(READ) returned"));
            }
        }
        DONE.fetch_add(1, SeqCst);
    }
    reader_exit()
}

fn mode_protect() -> bool {
    let f = require("frame_alloc", sys::frame_alloc(None));
    require("map VA", sys::map(f, VA, Rights::RW));
    let readers = start_readers(protect_reader, 0);
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d ^ rdtsc());
    let t0 = rdtsc();
    for r in 1..=rounds(ROUNDS_PROTECT) {
        release_round(r, readers);
        random_delay(&mut rng);
        REMOVING.store(r, SeqCst);
        require("protect READ", sys::protect(VA, Rights::READ));
        REMOVED.store(r, SeqCst);
        wait_round_done(r, readers);
        require("protect RW", sys::protect(VA, Rights::RW));
    }
    wait_exited(readers);
    let cycles = rdtsc() - t0;
    // Every reader's last successful write is in its slot.
    let mut bad_slots = 0;
    for core in (0..64u64).filter(|&c| c != core_id() as u64 && usable_cores() & (1 << c) != 0) {
        let v = probe::read(VA + 8 * core);
        if v != (rounds(ROUNDS_PROTECT) << 8) | core {
            bad_slots += 1;
            violation(format_args!("slot of core {core} holds {v:#x}"));
        }
    }
    require("unmap VA", sys::unmap(VA));
    require("frame_free", sys::frame_free(f));
    println!(
        "tlbtest mode 1 (protect): {} rounds, {readers} readers, {} violations, \
         {} faults ({} before protect began), {bad_slots} bad slots, {} Mcycles",
        rounds(ROUNDS_PROTECT),
        VIOLATIONS.load(SeqCst),
        FAULTS.load(SeqCst),
        EARLY_FAULTS.load(SeqCst),
        cycles / 1_000_000
    );
    true
}

// --- mode 2: concurrent shootdowns ---------------------------------------

const BLOCK_PAGES: u64 = 64;

/// One vCPU's share of mode 2.
fn churn() {
    let me = core_id();
    let va = region(me);
    let blk = block(me);
    for i in 0..rounds(CHURN_ROUNDS) {
        let f = require("frame_alloc", sys::frame_alloc(None));
        require("map", sys::map(f, va, Rights::RW));
        let value = ((me as u64) << 32) | i;
        probe::write_fixed(va, value);
        let v = probe::read_fixed(va);
        if v != value {
            violation(format_args!("iteration {i}: read {v:#x}, wrote {value:#x}"));
        }
        require("unmap", sys::unmap(va));
        if i % 10 == 0 && probe::read_fixed(va) != MARKER {
            violation(format_args!("iteration {i}: page still readable after unmap"));
        }
        require("frame_free", sys::frame_free(f));

        if i % BLOCK_EVERY == 0 {
            let mut frames = [0u64; BLOCK_PAGES as usize];
            for (j, fr) in frames.iter_mut().enumerate() {
                let page = blk + j as u64 * PAGE_SIZE;
                *fr = require("frame_alloc", sys::frame_alloc(None));
                require("map block", sys::map(*fr, page, Rights::RW));
                probe::write_fixed(page, value ^ j as u64);
            }
            for j in 0..BLOCK_PAGES {
                let v = probe::read_fixed(blk + j * PAGE_SIZE);
                if v != value ^ j {
                    violation(format_args!("block page {j}: read {v:#x}"));
                }
            }
            let n = require("unmap_range", sys::unmap_range(blk, BLOCK_PAGES));
            if n != BLOCK_PAGES {
                violation(format_args!("unmap_range removed {n} pages, not {BLOCK_PAGES}"));
            }
            for j in [0, BLOCK_PAGES / 2, BLOCK_PAGES - 1] {
                if probe::read_fixed(blk + j * PAGE_SIZE) != MARKER {
                    violation(format_args!("block page {j} readable after unmap_range"));
                }
            }
            for fr in frames {
                require("frame_free block", sys::frame_free(fr));
            }
        }
    }
}

fn churn_reader(_: u64) -> ! {
    READY.fetch_add(1, SeqCst);
    // Start together, so that the shootdowns overlap.
    wait_for_ms(WAIT_MS, || ROUND.load(SeqCst) >= 1 || STOP.load(SeqCst));
    churn();
    reader_exit()
}

fn mode_concurrent() -> bool {
    let readers = start_readers(churn_reader, 0);
    if !wait_for_ms(WAIT_MS, || READY.load(SeqCst) >= readers) {
        fail(format_args!("mode 2: vCPUs did not start"));
    }
    let t0 = rdtsc();
    ROUND.store(1, SeqCst);
    churn();
    wait_exited(readers);
    let cycles = rdtsc() - t0;
    println!(
        "tlbtest mode 2 (concurrent): {} vCPUs x {} map/unmap + {} unmap_range of \
         {BLOCK_PAGES} pages, {} violations, {} faults, {} Mcycles",
        readers + 1,
        rounds(CHURN_ROUNDS),
        rounds(CHURN_ROUNDS).div_ceil(BLOCK_EVERY),
        VIOLATIONS.load(SeqCst),
        FAULTS.load(SeqCst),
        cycles / 1_000_000
    );
    true
}

// --- mode 3: halted target -----------------------------------------------

fn halted_helper(_: u64) -> ! {
    let va = region(core_id());
    let f = require("frame_alloc", sys::frame_alloc(None));
    require("map", sys::map(f, va, Rights::RW));
    probe::write_fixed(va, 0x1234);
    if probe::read_fixed(va) != 0x1234 {
        violation(format_args!("helper page does not read back"));
    }
    READY.store(1, SeqCst);
    reader_exit()
}

fn mode_halted() -> bool {
    let me = core_id();
    let Some(target) = (0..64).find(|&c| c != me && usable_cores() & (1 << c) != 0) else {
        fail(format_args!("mode 3: no other core"))
    };
    require("start_vcpu", start_vcpu(target, halted_helper, 0));
    wait_exited(1);
    // Let the target go idle and halt.
    for _ in 0..1000 {
        let _ = sys::yield_now();
    }
    let t0 = rdtsc();
    let va = region(me);
    let f = require("frame_alloc", sys::frame_alloc(None));
    for i in 0..HALTED_ROUNDS {
        require("map", sys::map(f, va, Rights::RW));
        probe::write_fixed(va, i);
        require("unmap", sys::unmap(va));
    }
    require("frame_free", sys::frame_free(f));
    // The helper's page too (its core may still cache it).
    let n = require("unmap_range helper", sys::unmap_range(region(target), 1));
    if n != 1 {
        violation(format_args!("helper's page: unmap_range removed {n}"));
    }
    let cycles = rdtsc() - t0;
    println!(
        "tlbtest mode 3 (halted target): core {target} exited, {HALTED_ROUNDS} map/unmap rounds \
         done, {} violations, {} kcycles",
        VIOLATIONS.load(SeqCst),
        cycles / 1000
    );
    true
}

// --- mode 4: precision ---------------------------------------------------

const PRECISION_WRITER: usize = 2;
const PRECISION_READER: usize = 5;

fn precision_reader(_: u64) -> ! {
    let me = core_id();
    READER_CORE.store(me as u64, SeqCst);
    let va = region(me);
    let f = require("frame_alloc", sys::frame_alloc(None));
    require("map", sys::map(f, va, Rights::RW));
    probe::write_fixed(va, 0x5555);
    probe::write_fixed(VA + 8, 0x5555);
    READY.store(1, SeqCst);
    let deadline = rdtsc().saturating_add(info().tsc_hz.saturating_mul(60));
    let mut i: u64 = 0;
    while !STOP.load(SeqCst) {
        let a = probe::read_fixed(va);
        let b = probe::read_fixed(VA);
        if a != 0x5555 || b == MARKER {
            violation(format_args!("reader read {a:#x}, shared {b:#x}"));
            break;
        }
        i += 1;
        if i > 1_000_000_000 || (i.is_multiple_of(1024) && rdtsc() > deadline) {
            violation(format_args!("reader never told to stop"));
            break;
        }
    }
    reader_exit()
}

fn mode_precision() -> bool {
    let me = core_id();
    let f = require("frame_alloc", sys::frame_alloc(None));
    require("map shared", sys::map(f, VA, Rights::RW));
    probe::write_fixed(VA, 1);
    require("start_vcpu", start_vcpu(PRECISION_READER, precision_reader, 0));
    if !wait_for_ms(WAIT_MS, || READY.load(SeqCst) == 1) {
        fail(format_args!("mode 4: reader did not start"));
    }
    for i in 0..1000 {
        probe::write_fixed(VA, i);
        if probe::read_fixed(VA + 8) != 0x5555 {
            violation(format_args!("shared page lost the reader's word"));
        }
    }
    let va = region(me);
    let g = require("frame_alloc", sys::frame_alloc(None));
    let t0 = rdtsc();
    for i in 0..PRECISION_ROUNDS {
        require("map", sys::map(g, va, Rights::RW));
        probe::write_fixed(va, i);
        require("unmap", sys::unmap(va));
    }
    let cycles = rdtsc() - t0;
    STOP.store(true, SeqCst);
    wait_exited(1);
    require("frame_free", sys::frame_free(g));
    let reader = READER_CORE.load(SeqCst);
    if me == PRECISION_WRITER && reader == PRECISION_READER as u64 {
        println!("tlbtest precision: cores {me} and {reader}");
    } else {
        violation(format_args!(
            "precision: writer on core {me}, reader on core {reader}, expected \
             {PRECISION_WRITER} and {PRECISION_READER}"
        ));
    }
    println!(
        "tlbtest mode 4 (precision): {PRECISION_ROUNDS} map/unmap rounds, {} violations, {} \
         kcycles",
        VIOLATIONS.load(SeqCst),
        cycles / 1000
    );
    true
}
