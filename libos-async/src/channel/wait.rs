//! Waiting for shared words to change, under the runtime's executor or
//! without it.
//!
//! A channel future polled by the runtime ([`crate::rt`]: `main!`,
//! `rt::block_on`, a spawned task) registers through
//! [`crate::rt::watch::watch_once`]: the executor's idle predicate watches
//! the word and its timer heap the deadline, and the task's waker is woken.
//! Outside the runtime the module's own small reactor and [`block_on`]
//! serve (below): programs that want channels without an executor.
//!
//! A channel future that cannot progress calls [`watch`] with the word it
//! waits on, the value it saw and a deadline (for the peer-liveness poll),
//! and returns `Pending`. [`block_on`] polls its future; when it is pending
//! it first spins a little re-reading the watched words (a peer on another
//! core usually answers within microseconds, and a spin is far cheaper than
//! a sleep and a `Notify`), then sleeps with `SleepOn` on "any watched word
//! changed, or a notification arrived, or the earliest deadline passed".
//!
//! Wakers are not used: only futures that wait through [`watch`] (every
//! channel future does) make progress under this `block_on`; a future
//! that returns `Pending` without watching anything is re-polled when a
//! notification arrives or, failing that, at once (busy).
//!
//! The watch list is per core (a vCPU never moves and runs one `block_on`
//! at a time); it holds [`MAX_WATCHES`] words — a future that registers
//! more is simply re-polled at once (busy, but correct).
//!

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use abi::MAX_CORES;
use spin::Mutex;

use crate::predicate::Pred;
use crate::sys::{self, probe};

/// Most words one `block_on` round can watch.
pub const MAX_WATCHES: usize = 8;

/// How many times [`block_on`] re-reads the watched words (with `pause`)
/// before it sleeps.
pub const SPIN: u32 = 2_000;

#[derive(Clone, Copy)]
struct Watches {
    words: [(u64, u64); MAX_WATCHES],
    len: usize,
    deadline: u64,
    overflow: bool,
}

const EMPTY: Watches =
    Watches { words: [(0, 0); MAX_WATCHES], len: 0, deadline: u64::MAX, overflow: false };

static WATCHES: [Mutex<Watches>; MAX_CORES] = [const { Mutex::new(EMPTY) }; MAX_CORES];

/// Registers interest in the word at `addr` changing from `value`, or the
/// TSC reaching `deadline`, for the task polled with `cx`.
pub fn watch(cx: &mut Context<'_>, addr: u64, value: u64, deadline: u64) {
    if crate::rt::watch::watch_once(addr, value, deadline, cx.waker()) {
        return;
    }
    let core = sys::core_id();
    let Some(slot) = WATCHES.get(core) else {
        return;
    };
    let mut w = slot.lock();
    w.deadline = w.deadline.min(deadline);
    if w.len < MAX_WATCHES {
        let len = w.len;
        w.words[len] = (addr, value);
        w.len += 1;
    } else {
        w.overflow = true;
    }
    // This module's `block_on` does not use wakers: it watches the words
    // itself.
}

/// Registers a deadline (and, under the runtime, the notification count
/// `seen`: this module's `block_on` watches notifications anyway).
pub fn watch_deadline(cx: &mut Context<'_>, seen: u64, deadline: u64) {
    if crate::rt::watch::watch_notification_once(seen, deadline, cx.waker()) {
        return;
    }
    if let Some(slot) = WATCHES.get(sys::core_id()) {
        let mut w = slot.lock();
        w.deadline = w.deadline.min(deadline);
    }
}

/// Runs `fut` to completion on this vCPU (see the module documentation).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let core = sys::core_id().min(MAX_CORES - 1);
    let mut cx = Context::from_waker(Waker::noop());
    let mut fut = pin!(fut);
    loop {
        *WATCHES[core].lock() = EMPTY;
        let seen = sys::notifications();
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        let w = *WATCHES[core].lock();
        if w.overflow || (w.len == 0 && w.deadline == u64::MAX) {
            continue;
        }
        sleep_until_change(&w, seen);
    }
}

/// Whether a watched word changed.
fn changed(w: &Watches) -> bool {
    w.words[..w.len].iter().any(|&(addr, value)| probe::read(addr) != value)
}

fn sleep_until_change(w: &Watches, seen: u64) {
    for _ in 0..SPIN {
        if changed(w) || sys::notifications() != seen || sys::rdtsc() >= w.deadline {
            return;
        }
        core::hint::spin_loop();
    }
    let mut pred = Pred::notifications_ne(seen);
    for &(addr, value) in &w.words[..w.len] {
        pred = pred.either(Pred::word_ne(addr, value));
    }
    if w.deadline != u64::MAX {
        pred = pred.either(Pred::deadline(w.deadline));
    }
    // An error (a refused program) just means polling again at once.
    let _ = pred.sleep();
}

/// TSC ticks in `ms` milliseconds.
pub fn ms_to_tsc(ms: u64) -> u64 {
    sys::info().tsc_hz / 1000 * ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_biggest_wait_fits_one_predicate() {
        let mut pred = Pred::notifications_ne(3);
        for i in 0..MAX_WATCHES as u64 {
            pred = pred.either(Pred::word_ne(0x1000 + 8 * i, i));
        }
        pred = pred.either(Pred::deadline(1 << 40));
        assert!(pred.is_valid(), "{} instructions", pred.len());
    }
}
