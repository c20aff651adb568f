//! `isovictim`: the honest environment of the isolation tests (issue 13).
//! It checks its own memory and its own CPU time while a hostile
//! environment attacks beside it, and exits 0 only if both held. Start
//! argument: bits 0..8 the mode.
//!
//! * 0, **holder** (with `isoflood`): sleeps on its event queue; an
//!   asynchronous call `[GIVE, frame | round << 32]` names a frame the
//!   attacker has just freed. It allocates exactly that frame (another
//!   environment may have taken it: counted, not an error), checks that it
//!   arrived zeroed (a non-zero word is a write through a stale
//!   translation that landed after the kernel zeroed it), fills it with a
//!   pattern of its own and keeps every frame it holds, re-checking all of
//!   them at every event and every millisecond. `[DONE, _]` ends it: a
//!   last check, everything unmapped and freed, exit 0 iff no word ever
//!   changed. It also prints its longest time off the CPU (not judged:
//!   this mode runs in the plain TCG boots, where the host deschedules
//!   vCPU threads).
//! * 1, **gap meter** (with `isohog`, `cpu_time_*` tests under `-icount`):
//!   maps [`PROGRESS_VA`] (the kernel's test waits until its counter
//!   moves), fills [`MEM_PAGES`] pages with a pattern, waits for an
//!   `isohog` to appear, then spins reading the TSC and records the longest
//!   gap between two consecutive reads (time this vCPU was off the CPU)
//!   until no `isohog` is left, plus [`TAIL_MS`] for work the kernel does
//!   after an exit. The gap must stay within two slots plus the grace
//!   period ([`InfoPage::slot_us`], [`InfoPage::grace_us`]) plus
//!   [`MARGIN_US`]: on its core it shares the default round-robin with at
//!   most one runnable attacker vCPU, so it waits at most one slot for its
//!   turn; the second slot and the margin cover the kernel's own slot
//!   switch, timer interrupts and a slot-end upcall. Its pattern must be
//!   intact at the end.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::abi::{Error, InfoPage, PAGE_SIZE, Rights, event::CALL};
use libos_async::check::{Checks, fail, require};
use libos_async::cpu::{Events, Received};
use libos_async::layout::SCRATCH_BASE;
use libos_async::sys::{self, probe, rdtsc};
use libos_async::{Pred, core_id, info, println, wait_for_ms};

libos_async::entry!(app_main);

/// First word of `isoflood`'s "this frame is free now" call.
pub const GIVE: u64 = 0x6176_6967;
/// First word of `isoflood`'s "the test is over" call.
pub const DONE: u64 = 0x656e_6f64;
/// Where the holder maps the frames it receives, one page each.
const HOLD_BASE: u64 = SCRATCH_BASE + 0x10_0000_0000;
/// The most frames the holder keeps.
const HOLD_MAX: usize = 512;
/// The gap meter's progress counter (read by the kernel's test).
pub const PROGRESS_VA: u64 = SCRATCH_BASE;
/// The gap meter's own pages, checked at the end.
const MEM_VA: u64 = SCRATCH_BASE + 0x1000_0000;
const MEM_PAGES: u64 = 16;
/// Measured after the last `isohog` is gone.
const TAIL_MS: u64 = 50;
/// Allowed above two slots plus the grace period, microseconds.
pub const MARGIN_US: u64 = 200;

/// Word `i` of the `k`th frame the holder keeps.
const fn pattern(k: u64, i: u64) -> u64 {
    0x1c71_0000_0000_0000 | k << 16 | i
}

fn app_main(arg: u64) -> i32 {
    match arg & 0xff {
        0 => holder(),
        1 => gap_meter(),
        mode => fail(format_args!("isovictim: unknown mode {mode}")),
    }
}

// --- mode 0: holder ----------------------------------------------------------

struct Holder {
    frames: [u64; HOLD_MAX],
    held: usize,
    /// Words that were not what they should be.
    corrupt: u64,
    /// Frames that arrived with non-zero words.
    dirty: u64,
    /// Frames someone else took before us.
    missed: u64,
    /// Longest time off the CPU seen between two checks.
    gap: u64,
}

impl Holder {
    fn take(&mut self, frame: u64, round: u64) {
        if self.held == HOLD_MAX {
            self.missed += 1;
            return;
        }
        match sys::frame_alloc(Some(frame)) {
            Ok(f) => {
                let k = self.held as u64;
                let va = HOLD_BASE + k * PAGE_SIZE;
                require("map a received frame", sys::map(f, va, Rights::RW));
                let nonzero = (0..512).filter(|i| probe::read(va + i * 8) != 0).count();
                if nonzero > 0 {
                    self.dirty += 1;
                    println!(
                        "CHECK FAILED: isovictim: frame {f:#x} (round {round}) arrived with \
                         {nonzero} non-zero words, first word {:#x}",
                        probe::read(va)
                    );
                }
                for i in 0..512 {
                    probe::write(va + i * 8, pattern(k, i));
                }
                self.frames[self.held] = f;
                self.held += 1;
            }
            Err(Error::FrameUnavailable) => self.missed += 1,
            Err(e) => fail(format_args!("isovictim: frame_alloc({frame:#x}): {e:?}")),
        }
    }

    fn check_all(&mut self) {
        for k in 0..self.held as u64 {
            let va = HOLD_BASE + k * PAGE_SIZE;
            for i in 0..512 {
                let v = probe::read(va + i * 8);
                if v != pattern(k, i) {
                    self.corrupt += 1;
                    if self.corrupt <= 4 {
                        println!(
                            "CHECK FAILED: isovictim: frame {:#x} word {i} holds {v:#x}, \
                             wrote {:#x}",
                            self.frames[k as usize],
                            pattern(k, i)
                        );
                    }
                    probe::write(va + i * 8, pattern(k, i));
                }
            }
        }
    }
}

fn holder() -> i32 {
    let mut h = Holder { frames: [0; HOLD_MAX], held: 0, corrupt: 0, dirty: 0, missed: 0, gap: 0 };
    let mut events = Events::from_start();
    let tick = info().tsc_hz / 1000;
    let give_up = rdtsc() + info().tsc_hz * (libos_async::TEST_WAIT_MS / 1000);
    let mut last = rdtsc();
    'run: loop {
        let seen = sys::event_tail();
        for got in events.by_ref() {
            match got {
                Received::Event(e) if e.kind == CALL && e.data[0] == GIVE => {
                    h.take(e.data[1] & 0xffff_ffff, e.data[1] >> 32);
                }
                Received::Event(e) if e.kind == CALL && e.data[0] == DONE => break 'run,
                other => println!("isovictim: unexpected event {other:?}"),
            }
        }
        h.check_all();
        let now = rdtsc();
        if now > give_up {
            fail(format_args!("isovictim: no DONE from the attacker"));
        }
        // Sleep until the next event, or a millisecond, whichever first.
        let _ = Pred::events_ne(seen).either(Pred::deadline(now + tick)).sleep();
        let woke = rdtsc();
        h.gap = h.gap.max(woke.saturating_sub(last + tick));
        last = woke;
    }
    h.check_all();
    let held = h.held;
    for k in 0..held {
        require("unmap", sys::unmap(HOLD_BASE + k as u64 * PAGE_SIZE));
        require("frame_free", sys::frame_free(h.frames[k]));
    }
    println!(
        "isovictim: held {held} freed frames of the attacker ({} taken by others first), \
         {} arrived dirty, {} words changed under us; longest lateness {} us",
        h.missed,
        h.dirty,
        h.corrupt,
        h.gap * 1_000_000 / info().tsc_hz.max(1)
    );
    i32::from(h.corrupt != 0 || h.dirty != 0)
}

// --- mode 1: gap meter ---------------------------------------------------------

/// The allowed gap, TSC ticks, from the kernel's slot length and grace.
pub fn gap_limit(i: &InfoPage) -> u64 {
    let us = 2 * u64::from(i.slot_us) + u64::from(i.grace_us) + MARGIN_US;
    i.tsc_hz / 1_000_000 * us
}

fn attacker_alive() -> bool {
    sys::env_lookup("isohog") != Err(Error::NoSuchEnv)
}

fn gap_meter() -> i32 {
    let mut c = Checks::new();
    let i = info();
    let per_us = (i.tsc_hz / 1_000_000).max(1);
    require("map progress", libos_async::mem::map_fresh(PROGRESS_VA, 1, Rights::RW));
    require("map memory", libos_async::mem::map_fresh(MEM_VA, MEM_PAGES, Rights::RW));
    for w in 0..MEM_PAGES * 512 {
        probe::write(MEM_VA + w * 8, pattern(w >> 9, w));
    }
    probe::write(PROGRESS_VA, 1);
    if !wait_for_ms(libos_async::TEST_WAIT_MS, attacker_alive) {
        fail(format_args!("isovictim: no isohog appeared"));
    }
    let start = rdtsc();
    let mut last = start;
    let (mut longest, mut at) = (0u64, 0u64);
    let limit = gap_limit(&i);
    let mut over = 0u64;
    let mut end = u64::MAX;
    let mut turns = 0u64;
    loop {
        let now = rdtsc();
        let gap = now - last;
        if gap > longest {
            longest = gap;
            at = now - start;
        }
        if gap > limit {
            over += 1;
        }
        last = now;
        turns += 1;
        if turns.is_multiple_of(4096) {
            probe::write(PROGRESS_VA, turns);
            if end == u64::MAX && !attacker_alive() {
                end = rdtsc() + TAIL_MS * 1000 * per_us;
            }
            if now > end {
                break;
            }
        }
    }
    let bad = (0..MEM_PAGES * 512).filter(|&w| probe::read(MEM_VA + w * 8) != pattern(w >> 9, w));
    let bad = bad.count();
    c.check(bad == 0, format_args!("isovictim: {bad} words of its memory changed"));
    println!(
        "isovictim: core {}: longest gap {} us at {} us (limit {} us = 2 x {} us slot + {} us \
         grace + {MARGIN_US} us), {over} gaps over the limit, in {} us",
        core_id(),
        longest / per_us,
        at / per_us,
        limit / per_us,
        i.slot_us,
        i.grace_us,
        (last - start) / per_us
    );
    c.check(
        longest <= limit,
        format_args!(
            "isovictim: off the CPU for {} us, limit {} us",
            longest / per_us,
            limit / per_us
        ),
    );
    c.finish()
}
