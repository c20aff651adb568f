//! Waiting for shared words to change: a minimal stand-in reactor and
//! `block_on` until the runtime (`libos-rt`: executor, `wait_word_change`)
//! is merged.
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
//! TODO(libos-rt): once the runtime lands, [`watch`] becomes its
//! `wait_word_change` (plus a timer for the deadline) and [`block_on`] its
//! own; the channel futures do not change.

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
    // The stand-in `block_on` does not use wakers (it watches the words
    // itself); a real executor's waker is still told nothing here.
    let _ = cx;
}

/// Registers only a deadline.
pub fn watch_deadline(deadline: u64) {
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
