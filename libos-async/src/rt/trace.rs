//! Task-event trace: per-core ring buffers of `(tsc, task id, event,
//! argument)` records the executors fill when tracing is on, dumped as
//! text lines on the console for `cargo xtask run --trace` to turn into a
//! Chrome/Perfetto trace-event JSON file.
//!
//! Off by default. When off, the executors pay one load and one branch
//! per queue push and per pop (the same flag as [`super::metrics`](mod@super::metrics)
//! timing). When on, each event costs a TSC read, one atomic add and
//! three stores into the recording core's buffer.
//!
//! Each core's buffer is a ring of a fixed number of records (given to
//! [`enable`]); when it wraps, the oldest records are overwritten (the
//! dump says how many were lost). Records are written by the core they
//! describe, except wake-ups, which the waking core records in its own
//! buffer. Several writers on one buffer are safe (each claims its slot
//! with an atomic add), but a record being written while [`dump`] reads
//! it may come out torn: dump when the traced work is over.
//!
//! The dump's lines (`TRACE_PREFIX` first, then space-separated fields):
//!
//! ```text
//! rttrace hz <tsc_hz> env <env id> cores <bit set>
//! rttrace ev <core> <tsc> <task id> <event name> <argument>
//! rttrace lost <core> <records overwritten>
//! rttrace end
//! ```
//!
//! Events and their argument: `spawn`/`wake`/`yield`/`steal-in`/`moved`
//! (a task became runnable for that reason; argument: the core whose
//! queue it joined), `run` (a poll starts; argument: how long the task
//! waited in the queue, in cycles), `blocked`/`yielded`/`done` (a poll
//! ended that way; argument: the poll's cycles), `stolen` (this core took
//! the task from another; argument: that core).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::MAX_CORES;
use spin::Once;

use super::machine;
use super::metrics::{INSTRUMENT, TRACE};
use super::policy::{Stop, Why};

/// The prefix of every dumped line.
pub const TRACE_PREFIX: &str = "rttrace";

/// What happened to a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// It became runnable.
    Queued(Why),
    /// A poll starts.
    PollStart,
    /// A poll ended.
    PollEnd(Stop),
    /// This core stole it.
    Stolen,
}

impl Event {
    /// The event's code in a record.
    pub fn code(self) -> u8 {
        match self {
            Event::Queued(Why::Spawned) => 0,
            Event::Queued(Why::Woken) => 1,
            Event::Queued(Why::Yielded) => 2,
            Event::Queued(Why::Stolen) => 3,
            Event::Queued(Why::Moved) => 4,
            Event::PollStart => 8,
            Event::PollEnd(Stop::Blocked) => 9,
            Event::PollEnd(Stop::Yielded) => 10,
            Event::PollEnd(Stop::Done) => 11,
            Event::Stolen => 12,
        }
    }

    /// The event of a code.
    pub fn from_code(code: u8) -> Option<Event> {
        Some(match code {
            0 => Event::Queued(Why::Spawned),
            1 => Event::Queued(Why::Woken),
            2 => Event::Queued(Why::Yielded),
            3 => Event::Queued(Why::Stolen),
            4 => Event::Queued(Why::Moved),
            8 => Event::PollStart,
            9 => Event::PollEnd(Stop::Blocked),
            10 => Event::PollEnd(Stop::Yielded),
            11 => Event::PollEnd(Stop::Done),
            12 => Event::Stolen,
            _ => return None,
        })
    }

    /// The event's name in the dump.
    pub fn name(self) -> &'static str {
        match self {
            Event::Queued(Why::Spawned) => "spawn",
            Event::Queued(Why::Woken) => "wake",
            Event::Queued(Why::Yielded) => "yield",
            Event::Queued(Why::Stolen) => "steal-in",
            Event::Queued(Why::Moved) => "moved",
            Event::PollStart => "run",
            Event::PollEnd(Stop::Blocked) => "blocked",
            Event::PollEnd(Stop::Yielded) => "yielded",
            Event::PollEnd(Stop::Done) => "done",
            Event::Stolen => "stolen",
        }
    }
}

/// One trace record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// TSC when it happened.
    pub tsc: u64,
    /// The task's id.
    pub task: u64,
    /// What happened.
    pub event: Event,
    /// The event's argument (see the module documentation; 56 bits).
    pub arg: u64,
}

/// One core's ring of records: three words each (tsc, task, event | arg << 8).
pub struct Buffer {
    head: AtomicU64,
    words: Box<[AtomicU64]>,
}

impl Buffer {
    /// A buffer of `records` records (at least 1).
    pub fn new(records: usize) -> Self {
        let n = records.max(1) * 3;
        Buffer { head: AtomicU64::new(0), words: (0..n).map(|_| AtomicU64::new(0)).collect() }
    }

    /// Number of records it holds.
    pub fn capacity(&self) -> usize {
        self.words.len() / 3
    }

    /// Appends a record (overwriting the oldest when full).
    #[inline]
    pub fn push(&self, r: Record) {
        let i = self.head.fetch_add(1, Ordering::Relaxed);
        let slot = (i % self.capacity() as u64) as usize * 3;
        self.words[slot].store(r.tsc, Ordering::Relaxed);
        self.words[slot + 1].store(r.task, Ordering::Relaxed);
        self.words[slot + 2].store(u64::from(r.event.code()) | (r.arg << 8), Ordering::Release);
    }

    /// The records it holds, oldest first, and how many older ones were
    /// overwritten.
    pub fn records(&self) -> (Vec<Record>, u64) {
        let head = self.head.load(Ordering::Acquire);
        let cap = self.capacity() as u64;
        let first = head.saturating_sub(cap);
        let mut out = Vec::with_capacity((head - first) as usize);
        for i in first..head {
            let slot = (i % cap) as usize * 3;
            let w2 = self.words[slot + 2].load(Ordering::Acquire);
            let Some(event) = Event::from_code(w2 as u8) else { continue };
            out.push(Record {
                tsc: self.words[slot].load(Ordering::Relaxed),
                task: self.words[slot + 1].load(Ordering::Relaxed),
                event,
                arg: w2 >> 8,
            });
        }
        (out, first)
    }

    /// Forgets every record.
    pub fn clear(&self) {
        self.head.store(0, Ordering::Release);
    }
}

static BUFFERS: [Once<Buffer>; MAX_CORES] = [const { Once::new() }; MAX_CORES];

/// Whether tracing is on.
#[inline(always)]
pub fn enabled() -> bool {
    INSTRUMENT.load(Ordering::Relaxed) & TRACE != 0
}

/// Turns tracing on, with buffers of `records_per_core` records (a
/// core's buffer, once made, keeps its first size). Also turns on
/// [`super::metrics`](mod@super::metrics) timing's recording path for the duration.
pub fn enable(records_per_core: usize) {
    for b in BUFFERS.iter() {
        b.call_once(|| Buffer::new(records_per_core));
    }
    INSTRUMENT.fetch_or(TRACE, Ordering::SeqCst);
    super::exec::refresh_all();
}

/// Turns tracing off (the records stay until [`clear`]).
pub fn disable() {
    INSTRUMENT.fetch_and(!TRACE, Ordering::SeqCst);
    super::exec::refresh_all();
}

/// Forgets every recorded event.
pub fn clear() {
    for b in BUFFERS.iter() {
        if let Some(b) = b.get() {
            b.clear();
        }
    }
}

/// Records an event of `task` in the calling core's buffer (nothing if
/// tracing was never enabled).
#[inline]
pub(crate) fn record(tsc: u64, task: u64, event: Event, arg: u64) {
    if let Some(b) = BUFFERS.get(machine::current_core()).and_then(|b| b.get()) {
        b.push(Record { tsc, task, event, arg });
    }
}

/// `core`'s records, oldest first, and how many were overwritten.
pub fn records(core: usize) -> (Vec<Record>, u64) {
    BUFFERS.get(core).and_then(|b| b.get()).map_or((Vec::new(), 0), |b| b.records())
}

/// Prints every core's records on the console (the format of the module
/// documentation), then clears them. Turns tracing off first.
pub fn dump() {
    disable();
    let mut cores = 0u64;
    for (c, b) in BUFFERS.iter().enumerate() {
        if b.get().is_some_and(|b| b.head.load(Ordering::Relaxed) > 0) {
            cores |= 1 << c;
        }
    }
    crate::println!(
        "{TRACE_PREFIX} hz {} env {} cores {cores:#x}",
        machine::tsc_hz(),
        machine::env_id()
    );
    for c in (0..MAX_CORES).filter(|&c| cores & (1 << c) != 0) {
        let (recs, lost) = records(c);
        if lost > 0 {
            crate::println!("{TRACE_PREFIX} lost {c} {lost}");
        }
        for r in recs {
            crate::println!(
                "{TRACE_PREFIX} ev {c} {} {} {} {}",
                r.tsc,
                r.task,
                r.event.name(),
                r.arg
            );
        }
    }
    crate::println!("{TRACE_PREFIX} end");
    clear();
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::sync::Arc;

    fn rec(i: u64) -> Record {
        Record { tsc: i, task: i * 7, event: Event::PollStart, arg: i & 0xff_ffff }
    }

    #[test]
    fn codes_round_trip() {
        for code in 0..=255u8 {
            if let Some(e) = Event::from_code(code) {
                assert_eq!(e.code(), code);
            }
        }
    }

    proptest::proptest! {
        /// A ring of `cap` records after `n` pushes holds the last
        /// `min(n, cap)`, in order, and counts the rest as lost.
        #[test]
        fn wraps_around_keeping_the_newest(cap in 1usize..40, n in 0u64..200) {
            let b = Buffer::new(cap);
            for i in 0..n {
                b.push(rec(i));
            }
            let (recs, lost) = b.records();
            let keep = n.min(cap as u64);
            proptest::prop_assert_eq!(lost, n - keep);
            let want: Vec<Record> = (n - keep..n).map(rec).collect();
            proptest::prop_assert_eq!(recs, want);
        }
    }

    #[test]
    fn concurrent_writers_lose_nothing_that_fits() {
        let b = Arc::new(Buffer::new(4 * 1000));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        b.push(Record {
                            tsc: i,
                            task: t,
                            event: Event::Queued(Why::Woken),
                            arg: i,
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (recs, lost) = b.records();
        assert_eq!(lost, 0);
        assert_eq!(recs.len(), 4000);
        for t in 0..4 {
            // Each writer's records are all there, in its own order.
            let mine: Vec<u64> = recs.iter().filter(|r| r.task == t).map(|r| r.tsc).collect();
            assert_eq!(mine, (0..1000).collect::<Vec<_>>());
            assert!(recs.iter().filter(|r| r.task == t).all(|r| r.arg == r.tsc));
        }
    }
}
