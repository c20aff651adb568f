//! The kernel's trace ring: one core's buffer of fixed-size event records,
//! written by that core only, read by anyone without stopping the writer.
//!
//! This module owns the record format ([`Record`], [`Kind`]), the ring
//! ([`Ring`]) and the text line a record is dumped as ([`Record::line`]).
//! The machine side (`machine/ktrace.rs`) owns one ring per core, the
//! on/off flag, the hooks and the dump; it calls [`Ring::push`] only on the
//! ring of the core it runs on, with interrupts off, so each ring has one
//! writer at a time.
//!
//! # Protocol
//!
//! A record is three words (`tsc`, `kind | env << 32`, `arg`) in slot
//! `index % capacity`; records are named by their free-running index.
//! Two counters, both written by the writer only:
//!
//! ```text
//! writer (record i):                 reader (record i):
//!   claimed := i + 1   (relaxed)       h := head        (acquire)
//!   fence(release)                     i < h, else "not yet"
//!   slot words := ...  (relaxed)       w := slot words  (relaxed)
//!   head := i + 1      (release)       fence(acquire)
//!                                      c := claimed     (relaxed)
//!                                      i + capacity >= c, else "overwritten"
//! ```
//!
//! `head` publishes complete records (a reader that sees `head > i` sees
//! record i's words, or newer ones). `claimed` announces an overwrite
//! before it starts: if the reader's word loads saw any store of a later
//! record `j` (which overwrites slot `i` only when `j >= i + capacity`),
//! the release fence before those stores and the acquire fence after the
//! loads make the reader's `claimed` load see at least `j + 1`, so the
//! check refuses the torn record. It is a seqlock whose sequence number is
//! the ring index. Overwrite-oldest: the writer never waits; what a
//! reader did not get in time is counted as lost ([`Drained::lost`]).
//!
//! Tests: property tests of wrap-around and draining (below), concurrent
//! writers each with their own ring beside a concurrent reader, and a
//! `loom` model of the protocol (`RUSTFLAGS="--cfg loom" cargo test -p
//! kernel --lib --release trace::loom`, run by `cargo xtask check`).

#[cfg(all(test, loom))]
use ::loom::sync::atomic::{AtomicU64, Ordering, fence};

#[cfg(not(all(test, loom)))]
use core::sync::atomic::{AtomicU64, Ordering, fence};

use alloc::boxed::Box;

/// Words per record.
const WORDS: usize = 3;

/// What happened. The code is the record's `kind` byte; the names are the
/// dump's (`ktrace ev` lines, see [`Record::line`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A slot of the core's time vector starts. `env`: its owner (0: none);
    /// `arg`: the slot's index.
    SlotStart = 0,
    /// A vCPU is loaded on the core (it runs from here). `env`: whose;
    /// `arg`: how long it waited in the ready queue, in TSC ticks (0: it
    /// was not stamped).
    Run = 1,
    /// The running vCPU leaves the core. `env`: whose; `arg`: why
    /// ([`STOP_PREEMPTED`], [`STOP_SLEEP`], [`STOP_GONE`]).
    Stop = 2,
    /// An upcall is delivered. `env`: to whom; `arg`: its vector
    /// (`abi::vector`).
    Upcall = 3,
    /// The abort protocol stopped the running vCPU past its grace period.
    /// `env`: whose; `arg`: the slot's index.
    Overrun = 4,
    /// An epilogue could not be delivered, so the abort protocol applied at
    /// once. `env`: the slot owner's; `arg`: 0.
    Abort = 5,
    /// This core sent an IPI. `env`: 0; `arg`: target core | vector << 32.
    IpiSend = 6,
    /// This core took an interrupt other than its timer (IPIs, devices).
    /// `env`: 0; `arg`: the vector.
    Irq = 7,
    /// A protected control transfer starts. `env`: the caller; `arg`: the
    /// target environment.
    PctCall = 8,
    /// A protected control transfer returns. `env`: the callee; `arg`: the
    /// caller.
    PctReply = 9,
    /// `RingEnter` consumed submissions. `env`: whose ring; `arg`: how many.
    RingSubmit = 10,
    /// Ring timers completed. `env`: whose ring; `arg`: how many.
    RingComplete = 11,
    /// A TLB shootdown is sent to other cores (a flush of this core only is
    /// not recorded). `env`: whose address space; `arg`: the cores asked
    /// (a bit set).
    Shootdown = 12,
    /// This core carried out another core's shootdown. `env`: whose
    /// address space; `arg`: the requesting core.
    ShootdownServed = 13,
    /// An environment was created. `env`: it; `arg`: its creator (0: the
    /// kernel).
    EnvStart = 14,
    /// An environment ended. `env`: it; `arg`: its exit code, or
    /// `u64::MAX` if it was killed.
    EnvExit = 15,
}

/// [`Kind::Stop`]'s argument: preempted or yielded (back to the ready
/// queue).
pub const STOP_PREEMPTED: u64 = 0;
/// [`Kind::Stop`]'s argument: asleep (`SleepOn`, a blocking `RingEnter`).
pub const STOP_SLEEP: u64 = 1;
/// [`Kind::Stop`]'s argument: the vCPU ended (exit, or its environment is
/// dying).
pub const STOP_GONE: u64 = 2;

impl Kind {
    /// Every kind, in code order.
    pub const ALL: [Kind; 16] = [
        Kind::SlotStart,
        Kind::Run,
        Kind::Stop,
        Kind::Upcall,
        Kind::Overrun,
        Kind::Abort,
        Kind::IpiSend,
        Kind::Irq,
        Kind::PctCall,
        Kind::PctReply,
        Kind::RingSubmit,
        Kind::RingComplete,
        Kind::Shootdown,
        Kind::ShootdownServed,
        Kind::EnvStart,
        Kind::EnvExit,
    ];

    /// The kind of a code.
    pub fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.get(usize::from(code)).copied()
    }

    /// Its name in the dump.
    pub fn name(self) -> &'static str {
        match self {
            Kind::SlotStart => "slot",
            Kind::Run => "run",
            Kind::Stop => "stop",
            Kind::Upcall => "upcall",
            Kind::Overrun => "overrun",
            Kind::Abort => "abort",
            Kind::IpiSend => "ipi",
            Kind::Irq => "irq",
            Kind::PctCall => "call",
            Kind::PctReply => "reply",
            Kind::RingSubmit => "submit",
            Kind::RingComplete => "complete",
            Kind::Shootdown => "shootdown",
            Kind::ShootdownServed => "flush",
            Kind::EnvStart => "env-start",
            Kind::EnvExit => "env-exit",
        }
    }
}

/// One event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// TSC when it happened.
    pub tsc: u64,
    /// What happened.
    pub kind: Kind,
    /// The environment it concerns (0: none).
    pub env: u32,
    /// The kind's argument.
    pub arg: u64,
}

/// The prefix of every dumped line.
pub const PREFIX: &str = "ktrace";

impl Record {
    /// The dump's line for this record, taken on `core` (without a newline):
    /// `ktrace ev <core> <tsc> <kind name> <env> <arg>`, numbers in decimal.
    pub fn line(&self, core: usize) -> impl core::fmt::Display + '_ {
        struct Line<'a>(&'a Record, usize);
        impl core::fmt::Display for Line<'_> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                let r = self.0;
                write!(f, "{PREFIX} ev {} {} {} {} {}", self.1, r.tsc, r.kind.name(), r.env, r.arg)
            }
        }
        Line(self, core)
    }
}

/// Why [`Ring::get`] has no record at an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Not written yet.
    NotYet,
    /// Overwritten (or being overwritten) by a newer record.
    Overwritten,
}

/// What [`Ring::drain`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// The index to drain from next time.
    pub next: u64,
    /// Records between the start index and `next` that were overwritten
    /// before they could be read.
    pub lost: u64,
    /// Records handed to the callback.
    pub read: u64,
}

/// One core's ring of records (see the module documentation).
pub struct Ring {
    /// Records complete: the next index to write.
    head: AtomicU64,
    /// Records whose writing has started (`head`, or `head + 1` while one
    /// is being written).
    claimed: AtomicU64,
    words: Box<[AtomicU64]>,
}

impl Ring {
    /// A ring of `records` records (at least 1).
    pub fn new(records: usize) -> Ring {
        let n = records.max(1) * WORDS;
        Ring {
            head: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            words: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A ring of `records` records (at least 1), or `None` if the memory
    /// cannot be had.
    pub fn try_new(records: usize) -> Option<Ring> {
        let n = records.max(1).checked_mul(WORDS)?;
        let mut words = alloc::vec::Vec::new();
        words.try_reserve_exact(n).ok()?;
        words.extend((0..n).map(|_| AtomicU64::new(0)));
        Some(Ring {
            head: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            words: words.into_boxed_slice(),
        })
    }

    /// How many records it holds.
    pub fn capacity(&self) -> u64 {
        (self.words.len() / WORDS) as u64
    }

    /// Records written since it was made (the next index).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Appends `r`, overwriting the oldest record when full.
    ///
    /// Only one caller at a time per ring: the kernel calls it on its own
    /// core's ring with interrupts off. (A second concurrent writer would
    /// not be memory-unsafe — every word is an atomic — but could tear
    /// records and lose some.)
    #[inline]
    pub fn push(&self, r: Record) {
        let i = self.head.load(Ordering::Relaxed);
        self.claimed.store(i + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let at = (i % self.capacity()) as usize * WORDS;
        self.words[at].store(r.tsc, Ordering::Relaxed);
        self.words[at + 1].store(r.kind as u64 | u64::from(r.env) << 32, Ordering::Relaxed);
        self.words[at + 2].store(r.arg, Ordering::Relaxed);
        self.head.store(i + 1, Ordering::Release);
    }

    /// Record `index`, if it is written and not overwritten. Safe to call
    /// while the writer writes: a record it is overwriting is refused.
    pub fn get(&self, index: u64) -> Result<Record, Missing> {
        if index >= self.head.load(Ordering::Acquire) {
            return Err(Missing::NotYet);
        }
        let at = (index % self.capacity()) as usize * WORDS;
        let tsc = self.words[at].load(Ordering::Relaxed);
        let kind_env = self.words[at + 1].load(Ordering::Relaxed);
        let arg = self.words[at + 2].load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if index + self.capacity() < self.claimed.load(Ordering::Relaxed) {
            return Err(Missing::Overwritten);
        }
        // The kind byte of a record that was checked whole is one this
        // module wrote; anything else would be a bug here, so it is
        // treated as lost rather than trusted.
        let kind = Kind::from_code(kind_env as u8).ok_or(Missing::Overwritten)?;
        Ok(Record { tsc, kind, env: (kind_env >> 32) as u32, arg })
    }

    /// Hands every record from index `from` to the current head to `f`, in
    /// order, and says how many were lost (overwritten before they were
    /// read) and where to go on from. Safe while the writer writes; what it
    /// writes meanwhile is left for the next call.
    pub fn drain(&self, from: u64, mut f: impl FnMut(Record)) -> Drained {
        let head = self.head.load(Ordering::Acquire);
        let mut out =
            Drained { next: from.max(head.saturating_sub(self.capacity())), ..Default::default() };
        out.lost = out.next - from.min(out.next);
        while out.next < head {
            match self.get(out.next) {
                Ok(r) => {
                    f(r);
                    out.read += 1;
                }
                Err(_) => out.lost += 1,
            }
            out.next += 1;
        }
        out
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// A record whose fields all derive from `i`, so a torn one shows.
    fn rec(i: u64) -> Record {
        Record {
            tsc: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            kind: Kind::ALL[(i % 16) as usize],
            env: (i >> 3) as u32 ^ 0x5a5a,
            arg: !i,
        }
    }

    fn index_of(r: &Record) -> u64 {
        !r.arg
    }

    #[test]
    fn kinds_round_trip_their_codes() {
        for (code, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, code);
            assert_eq!(Kind::from_code(code as u8), Some(*k));
        }
        assert_eq!(Kind::from_code(16), None);
    }

    #[test]
    fn a_line_has_every_field() {
        let r = Record { tsc: 12, kind: Kind::SlotStart, env: 3, arg: 7 };
        assert_eq!(alloc::format!("{}", r.line(5)), "ktrace ev 5 12 slot 3 7");
    }

    proptest! {
        /// After any number of pushes the ring holds exactly the newest
        /// `capacity` records, in order; everything older is lost.
        #[test]
        fn wrap_around_keeps_the_newest(cap in 1usize..40, n in 0u64..200) {
            let ring = Ring::new(cap);
            for i in 0..n {
                ring.push(rec(i));
            }
            let mut got = Vec::new();
            let d = ring.drain(0, |r| got.push(r));
            let kept = n.min(cap as u64);
            prop_assert_eq!(d.next, n);
            prop_assert_eq!(d.lost, n - kept);
            prop_assert_eq!(d.read, kept);
            let want: Vec<Record> = (n - kept..n).map(rec).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(ring.get(n), Err(Missing::NotYet));
            if n > kept {
                prop_assert_eq!(ring.get(n - kept - 1), Err(Missing::Overwritten));
            }
        }

        /// Draining between bursts of pushes sees every record once, or
        /// counts it lost once: read + lost = written, order kept.
        #[test]
        fn draining_in_steps_reads_or_counts_each_once(
            cap in 1usize..16,
            bursts in proptest::collection::vec(0u64..40, 1..20),
        ) {
            let ring = Ring::new(cap);
            let (mut written, mut from, mut lost) = (0u64, 0u64, 0u64);
            let mut got = Vec::new();
            for b in bursts {
                for _ in 0..b {
                    ring.push(rec(written));
                    written += 1;
                }
                let d = ring.drain(from, |r| got.push(r));
                // Only records past the ring's reach are lost.
                prop_assert_eq!(d.lost, (written - from).saturating_sub(cap as u64));
                from = d.next;
                lost += d.lost;
            }
            prop_assert_eq!(from, written);
            prop_assert_eq!(got.len() as u64 + lost, written);
            let idx: Vec<u64> = got.iter().map(index_of).collect();
            prop_assert!(idx.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(got.iter().all(|r| *r == rec(index_of(r))));
        }
    }

    /// Several cores write their own rings at once while one reader drains
    /// all of them concurrently: every record read is whole (not torn) and
    /// in order, and per ring, read + lost = written.
    #[test]
    fn concurrent_writers_and_a_reader() {
        const CORES: usize = 4;
        const PUSHES: u64 = 200_000;
        let rings: Arc<Vec<Ring>> = Arc::new((0..CORES).map(|_| Ring::new(64)).collect());
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (rings, done) = (Arc::clone(&rings), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut from = [0u64; CORES];
                let mut last = [None::<u64>; CORES];
                let (mut read, mut lost) = ([0u64; CORES], [0u64; CORES]);
                loop {
                    let finished = done.load(Ordering::Acquire);
                    for (c, ring) in rings.iter().enumerate() {
                        let d = ring.drain(from[c], |r| {
                            let i = index_of(&r);
                            assert_eq!(r, rec(i), "torn record on ring {c}");
                            assert!(last[c].is_none_or(|l| l < i), "out of order on ring {c}");
                            last[c] = Some(i);
                        });
                        from[c] = d.next;
                        read[c] += d.read;
                        lost[c] += d.lost;
                    }
                    if finished {
                        return (read, lost);
                    }
                }
            })
        };
        let writers: Vec<_> = (0..CORES)
            .map(|c| {
                let rings = Arc::clone(&rings);
                std::thread::spawn(move || {
                    for i in 0..PUSHES {
                        rings[c].push(rec(i));
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
        let (read, lost) = reader.join().unwrap();
        for c in 0..CORES {
            assert_eq!(read[c] + lost[c], PUSHES, "ring {c}");
            assert!(read[c] >= 64, "ring {c}: the final drain reads the last records");
        }
    }
}

/// Model check of the protocol: run with `RUSTFLAGS="--cfg loom" cargo
/// test -p kernel --lib --release trace::loom`.
#[cfg(all(test, loom))]
mod loom {
    use super::*;
    use ::loom::sync::Arc;
    use ::loom::thread;

    fn rec(i: u64) -> Record {
        Record { tsc: i * 3 + 1, kind: Kind::Run, env: i as u32 + 7, arg: i * 5 + 2 }
    }

    /// A writer wraps a ring of two records while a reader reads: whatever
    /// `get` returns is exactly the record written at that index (a torn
    /// record — words of two different records — is refused), and the
    /// newest records are readable after the writer is done. About 70,000
    /// interleavings (7 s in release mode). Removing the `claimed` check or
    /// the writer's release fence makes it fail. (The reader is the spawned
    /// thread: with the reader on the model's main thread, loom 0.7
    /// explored one interleaving only.)
    #[test]
    fn reader_never_sees_a_torn_record() {
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound.get_or_insert(3);
        builder.check(|| {
            let ring = Arc::new(Ring::new(2));
            let reader = {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    for i in [0, 1] {
                        if let Ok(r) = ring.get(i) {
                            assert_eq!(r, rec(i));
                        }
                    }
                })
            };
            for i in 0..4 {
                ring.push(rec(i));
            }
            reader.join().unwrap();
            let mut got = alloc::vec::Vec::new();
            let d = ring.drain(0, |r| got.push(r));
            assert_eq!(got, [rec(2), rec(3)]);
            assert_eq!((d.lost, d.next), (2, 4));
        });
    }
}
