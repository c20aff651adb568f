//! Sleeping and waking for pipes ([`libos_posix::pipe::PipeHost`]).
//!
//! A blocked pipe call sleeps with `SleepOn` on a predicate over the ring's
//! header words ("`head` moved, or no writer is left", ...), built from the
//! conditions the ring hands over, with the deadline as a TSC condition.
//! The kernel evaluates the predicate when it is installed, so a change
//! between the ring's last check and the sleep is never missed.
//!
//! Frames are [`libos_posix::pipe::HeapFrame`]s in this environment's heap:
//! every end is in this one process, so the only sleeper is this vCPU and
//! a wake-up has nobody to reach ([`PipeGlue::wake`] does nothing). Ends
//! in two environments need the frame to be memory both map, and a wake to
//! be an `Acall` to every environment holding the other end: that comes
//! with fork and shared memory (see `libos_posix::pipe`), not here yet.

use libos_async::{Pred, sys};
use libos_posix::pipe::ring::{Frame, Side};
use libos_posix::pipe::{PipeHost, WaitWord};

/// How long a wait with too many words for one predicate sleeps before
/// the caller checks again (poll of many pipes: a bounded busy-wait).
const FALLBACK_NS: u64 = 1_000_000;

/// The runtime's [`PipeHost`].
pub struct PipeGlue {
    /// TSC at the monotonic clock's zero (as the runtime's `Clk`).
    pub tsc0: u64,
    /// TSC frequency.
    pub hz: u64,
}

impl PipeGlue {
    fn tsc_at(&self, ns: u64) -> u64 {
        let ticks = u128::from(ns) * u128::from(self.hz) / 1_000_000_000;
        self.tsc0.saturating_add(ticks.min(u128::from(u64::MAX)) as u64)
    }
    fn now_ns(&self) -> u64 {
        let d = sys::rdtsc().saturating_sub(self.tsc0);
        (u128::from(d) * 1_000_000_000 / u128::from(self.hz.max(1))) as u64
    }
}

impl PipeHost for PipeGlue {
    fn wait(&mut self, words: &[WaitWord], deadline_ns: Option<u64>) {
        let mut pred: Option<Pred> = None;
        for w in words {
            let q =
                if w.ne { Pred::word_ne(w.addr, w.value) } else { Pred::word_eq(w.addr, w.value) };
            pred = Some(match pred {
                None => q,
                Some(p) => p.either(q),
            });
        }
        let deadline = match pred {
            Some(p) if p.is_valid() => deadline_ns,
            // Nothing to watch, or too much for one predicate: wake on time.
            _ => {
                pred = None;
                let soon = self.now_ns().saturating_add(FALLBACK_NS);
                Some(deadline_ns.map_or(soon, |d| d.min(soon)))
            }
        };
        if let Some(d) = deadline {
            let t = Pred::deadline(self.tsc_at(d));
            pred = Some(match pred {
                None => t,
                Some(p) => p.either(t),
            });
        }
        let ok = pred.is_some_and(|p| p.is_valid() && p.sleep().is_ok());
        if !ok {
            let _ = sys::yield_now();
        }
    }

    fn wake(&mut self, _frame: &dyn Frame, _side: Side) {}
}
