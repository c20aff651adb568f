//! Per-executor counters, readable by the application: polls, spawns,
//! wake-ups, yields, steals, busy cycles and the queueing delay (from the
//! moment a task became runnable to the start of its poll) as a
//! histogram with percentiles.
//!
//! The counts are always kept (a few additions under the run-queue lock
//! the executor holds anyway). Timing — busy cycles and queueing delay —
//! costs two TSC reads and a lock per poll, so it is off by default:
//! [`set_timing`] turns it on (tracing turns it on too). When both are
//! off, the executor's hot path pays one load and one branch for it.
//!
//! ```ignore
//! rt::metrics::set_timing(true);
//! // ... run the workload ...
//! let m = rt::metrics::metrics(core);
//! println!("{} polls, p99 wait {} cycles", m.polls, m.delay_percentile(99.0).unwrap_or(0));
//! ```

use core::sync::atomic::{AtomicU8, Ordering};

use super::policy::Why;

pub use super::exec::metrics;

/// Bit of [`INSTRUMENT`]: timing (delay histogram, busy cycles).
pub(crate) const TIMING: u8 = 1;
/// Bit of [`INSTRUMENT`]: task events go to the trace buffers.
pub(crate) const TRACE: u8 = 2;

/// What the executors record beyond plain counts (bits above).
pub(crate) static INSTRUMENT: AtomicU8 = AtomicU8::new(0);

/// Whether timing or tracing is on (the executors' one branch).
#[inline(always)]
pub(crate) fn instrumented() -> bool {
    INSTRUMENT.load(Ordering::Relaxed) != 0
}

/// Turns timing (busy cycles, queueing delay) on or off for every
/// executor.
pub fn set_timing(on: bool) {
    if on {
        INSTRUMENT.fetch_or(TIMING, Ordering::SeqCst);
    } else {
        INSTRUMENT.fetch_and(!TIMING, Ordering::SeqCst);
    }
    super::exec::refresh_all();
}

/// Histogram buckets per power of two (4: 19% wide at most).
const SUB: usize = 4;
/// Histogram buckets: 64 powers of two, 4 each.
pub const DELAY_BUCKETS: usize = 64 * SUB;

/// The bucket of a delay: values below 4 have their own bucket; above,
/// the power of two and the next two bits.
pub fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let log = 63 - v.leading_zeros() as usize;
    let frac = ((v >> (log - 2)) & 3) as usize;
    (log - 1) * SUB + frac
}

/// The largest value of bucket `b` (percentiles report it: an upper
/// bound within 25%).
pub fn bucket_max(b: usize) -> u64 {
    if b < SUB {
        return b as u64;
    }
    let log = b / SUB + 1;
    let frac = (b % SUB) as u64;
    let low = (1u64 << log) | (frac << (log - 2));
    low.saturating_add((1u64 << (log - 2)) - 1)
}

/// A core's counters (kept under its run-queue lock).
pub(crate) struct Counters {
    pub(crate) polls: u64,
    /// Enqueues by [`Why`] (in the order of its variants).
    enq: [u64; 5],
    pub(crate) busy_cycles: u64,
    delay: [u64; DELAY_BUCKETS],
    delay_sum: u64,
    delay_max: u64,
}

impl Counters {
    pub(crate) const fn new() -> Self {
        Counters {
            polls: 0,
            enq: [0; 5],
            busy_cycles: 0,
            delay: [0; DELAY_BUCKETS],
            delay_sum: 0,
            delay_max: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn enqueued(&mut self, why: Why) {
        // `Why`'s variants in order: Spawned, Woken, Yielded, Stolen, Moved.
        self.enq[why as usize] += 1;
    }

    pub(crate) fn record_delay(&mut self, cycles: u64) {
        self.delay[bucket_of(cycles)] += 1;
        self.delay_sum = self.delay_sum.saturating_add(cycles);
        self.delay_max = self.delay_max.max(cycles);
    }

    pub(crate) fn snapshot(&self, queued: usize, stolen: u64) -> ExecMetrics {
        ExecMetrics {
            polls: self.polls,
            spawned: self.enq[0],
            woken: self.enq[1],
            yielded: self.enq[2],
            stolen,
            moved: self.enq[4],
            queued,
            busy_cycles: self.busy_cycles,
            delay: self.delay,
            delay_sum: self.delay_sum,
            delay_max: self.delay_max,
        }
    }
}

/// A snapshot of one executor's counters ([`metrics`]).
#[derive(Clone, Debug)]
pub struct ExecMetrics {
    /// Tasks polled (including `block_on`'s main future).
    pub polls: u64,
    /// Tasks queued here by spawning.
    pub spawned: u64,
    /// Tasks queued here by a waker.
    pub woken: u64,
    /// Tasks queued again right after their poll (yielded, or woken while
    /// they ran).
    pub yielded: u64,
    /// Tasks this executor took from other cores by stealing.
    pub stolen: u64,
    /// Tasks moved here by a policy change or a retired core.
    pub moved: u64,
    /// Tasks in the run queue now.
    pub queued: usize,
    /// TSC cycles spent in polls (timing on only).
    pub busy_cycles: u64,
    /// Queueing delays (TSC cycles from runnable to polled; timing on
    /// only), per bucket ([`bucket_of`]).
    pub delay: [u64; DELAY_BUCKETS],
    /// Sum of the delays recorded.
    pub delay_sum: u64,
    /// Largest delay recorded.
    pub delay_max: u64,
}

impl Default for ExecMetrics {
    fn default() -> Self {
        Counters::new().snapshot(0, 0)
    }
}

impl ExecMetrics {
    /// Number of queueing delays recorded.
    pub fn delay_count(&self) -> u64 {
        self.delay.iter().sum()
    }

    /// The `p`th percentile (0–100) of the queueing delay, as an upper
    /// bound (its bucket's largest value, capped by the maximum seen);
    /// `None` with no samples.
    pub fn delay_percentile(&self, p: f64) -> Option<u64> {
        let n = self.delay_count();
        if n == 0 {
            return None;
        }
        // The smallest rank r with r >= p% of n (no `f64::ceil` in core).
        let exact = p.clamp(0.0, 100.0) / 100.0 * n as f64;
        let mut rank = exact as u64;
        if (rank as f64) < exact {
            rank += 1;
        }
        let rank = rank.clamp(1, n);
        let mut seen = 0;
        for (b, &c) in self.delay.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_max(b).min(self.delay_max));
            }
        }
        Some(self.delay_max)
    }

    /// Adds `other`'s counts to these (to sum over cores).
    pub fn add(&mut self, other: &ExecMetrics) {
        self.polls += other.polls;
        self.spawned += other.spawned;
        self.woken += other.woken;
        self.yielded += other.yielded;
        self.stolen += other.stolen;
        self.moved += other.moved;
        self.queued += other.queued;
        self.busy_cycles += other.busy_cycles;
        for (a, b) in self.delay.iter_mut().zip(other.delay.iter()) {
            *a += b;
        }
        self.delay_sum = self.delay_sum.saturating_add(other.delay_sum);
        self.delay_max = self.delay_max.max(other.delay_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_and_bound_their_values() {
        let mut last = 0;
        for v in (0u64..5000).chain([u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b < DELAY_BUCKETS);
            assert!(b >= last || v > 5000, "buckets are monotonic");
            last = b;
            assert!(bucket_max(b) >= v, "{v} in bucket {b} (max {})", bucket_max(b));
            if b > 0 {
                assert!(bucket_max(b - 1) < v, "{v}: bucket {b} is the first that holds it");
            }
            if v >= 4 {
                assert!(bucket_max(b) - v <= v / 4, "{v}: bucket is 25% wide at most");
            }
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut c = Counters::new();
        for v in 1..=1000u64 {
            c.record_delay(v);
        }
        let m = c.snapshot(0, 0);
        assert_eq!(m.delay_count(), 1000);
        let p50 = m.delay_percentile(50.0).unwrap();
        let p99 = m.delay_percentile(99.0).unwrap();
        assert!((500..=625).contains(&p50), "{p50}");
        assert!((990..=1000).contains(&p99), "{p99}");
        assert_eq!(m.delay_percentile(100.0), Some(1000));
        assert_eq!(ExecMetrics::default().delay_percentile(50.0), None);
    }
}
