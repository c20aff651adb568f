//! Time from the TSC: [`Instant`], [`sleep`], [`sleep_until`],
//! [`timeout`], [`interval`].
//!
//! A sleeping future arms a timer in the timer heap of the core that
//! polled it ([`super::timer::TimerHeap`]); that core's executor fires due
//! timers at every tick, in deadline order (ties in arming order), and
//! puts the earliest deadline in its idle predicate. A sleep never ends
//! early: its future checks the TSC itself before completing, whatever
//! woke it. The kernel arms its one-shot timer for the deadline the idle
//! predicate compares the TSC with, so a sleeping executor wakes on time;
//! a sleep ends late only when the executor is busy with tasks that do
//! not yield (or the core's time went to other environments).

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use super::exec::CORES;
use super::machine;
use super::timer::TimerId;
use core::sync::atomic::Ordering;

/// A TSC reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

/// TSC ticks in `d` (rounded up, saturating).
pub fn ticks(d: Duration) -> u64 {
    let t = (d.as_nanos() * u128::from(machine::tsc_hz())).div_ceil(1_000_000_000);
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// The duration of `t` TSC ticks (rounded down).
pub fn duration(t: u64) -> Duration {
    let nanos = u128::from(t) * 1_000_000_000 / u128::from(machine::tsc_hz());
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

impl Instant {
    /// Now.
    pub fn now() -> Instant {
        Instant(machine::now())
    }

    /// The raw TSC value.
    pub fn tsc(self) -> u64 {
        self.0
    }

    /// Time since `earlier` (zero if it is later).
    pub fn duration_since(self, earlier: Instant) -> Duration {
        duration(self.0.saturating_sub(earlier.0))
    }

    /// Time since this instant.
    pub fn elapsed(self) -> Duration {
        Instant::now().duration_since(self)
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(ticks(d)))
    }
}

impl core::ops::Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.duration_since(earlier)
    }
}

/// The future of [`sleep`] and [`sleep_until`].
pub struct Sleep {
    deadline: Instant,
    armed: Option<(usize, TimerId)>,
}

/// Completes at `deadline` (never before).
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, armed: None }
}

/// Completes after `d` (never earlier).
pub fn sleep(d: Duration) -> Sleep {
    sleep_until(Instant::now() + d)
}

impl Sleep {
    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn disarm(&mut self) {
        if let Some((core, id)) = self.armed.take() {
            CORES[core].timers.lock().cancel(id);
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if machine::now() >= this.deadline.0 {
            this.disarm();
            return Poll::Ready(());
        }
        let core = machine::current_core();
        match this.armed {
            Some((c, id)) if c == core => {
                let mut timers = CORES[c].timers.lock();
                if !timers.update(id, cx.waker().clone()) {
                    // Fired (woken a moment early by the clock check of
                    // another core's TSC, or spuriously): arm again.
                    this.armed = Some((c, timers.insert(this.deadline.0, cx.waker().clone())));
                    CORES[c].earliest.fetch_min(this.deadline.0, Ordering::AcqRel);
                }
            }
            _ => {
                this.disarm();
                let id = CORES[core].timers.lock().insert(this.deadline.0, cx.waker().clone());
                CORES[core].earliest.fetch_min(this.deadline.0, Ordering::AcqRel);
                this.armed = Some((core, id));
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// [`timeout`]'s error: the time ran out first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed;

/// The future of [`timeout`].
pub struct Timeout<F> {
    fut: Pin<alloc::boxed::Box<F>>,
    sleep: Sleep,
}

/// Runs `fut` for at most `d`: `Ok(output)`, or `Err(Elapsed)` (and `fut`
/// is dropped) if `d` passes first.
pub fn timeout<F: Future>(d: Duration, fut: F) -> Timeout<F> {
    Timeout { fut: alloc::boxed::Box::pin(fut), sleep: sleep(d) }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(v) = this.fut.as_mut().poll(cx) {
            this.sleep.disarm();
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Ticks every `period`, see [`interval`].
pub struct Interval {
    next: Instant,
    period: u64,
}

/// A periodic timer: the first [`Interval::tick`] completes at once, the
/// following ones `period` apart. A tick that is missed by more than a
/// whole period (the task was busy) is skipped: the next deadline is the
/// next multiple of `period` after now, never a burst of catch-up ticks.
pub fn interval(period: Duration) -> Interval {
    Interval { next: Instant::now(), period: ticks(period).max(1) }
}

impl Interval {
    /// Waits for the next tick; returns its scheduled instant.
    pub async fn tick(&mut self) -> Instant {
        let at = self.next;
        sleep_until(at).await;
        let now = machine::now();
        let mut next = at.0.saturating_add(self.period);
        if next <= now {
            let behind = (now - at.0) / self.period;
            next = at.0.saturating_add((behind + 1).saturating_mul(self.period));
        }
        self.next = Instant(next);
        at
    }
}
