//! The reactor primitive for memory words (and the notification counter):
//! futures that complete when a word differs from a value the caller saw.
//!
//! [`wait_word_change`]`(&word, old)` completes with the word's new value
//! as soon as it is not `old`; [`wait_notification`]`(seen)` completes
//! when `InfoPage::notifications` is not `seen`. A pending one registers
//! `(address, old, waker)` in the watch list of the core that polled it.
//! That core's idle predicate loads each registered word (the first
//! `exec::idle_predicate` has room for — 12 beside the fixed
//! terms — the rest are polled every millisecond), so the kernel wakes
//! the executor when one changes: at once if the writer follows the write
//! with an `Acall` or a ring `Notify` to this environment (or the write is
//! ours, on another core, and comes with a task wake-up), else at the
//! kernel's next slot boundary on that core. After every idle sleep, and every
//! [`super::exec::WATCH_RECHECK_TICKS`] ticks of a busy executor, the
//! executor wakes all of its watchers and each re-checks its own word
//! (the executor never reads the words itself, so a watcher's memory is
//! only ever read through the reference it holds).
//!
//! Typical use (what a channel does):
//!
//! ```ignore
//! loop {
//!     let seen = shared.head.load(Acquire);
//!     if let Some(msg) = try_recv() { break msg; }
//!     libos_async::rt::wait_word_change(&shared.head, seen).await;
//! }
//! ```

use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll, Waker};

use super::exec::CORES;
use super::machine;

enum What {
    /// The word at this address must differ from `old`.
    Word { addr: u64, old: u64 },
    /// `notifications` must differ from `seen`.
    Notification { seen: u64 },
}

struct Entry {
    id: u64,
    what: What,
    waker: Waker,
}

/// The watchers of one core.
pub(crate) struct WatchList {
    entries: Vec<Entry>,
    next_id: u64,
}

impl WatchList {
    pub(crate) const fn new() -> Self {
        WatchList { entries: Vec::new(), next_id: 1 }
    }

    fn register(&mut self, what: What, waker: &Waker) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(Entry { id, what, waker: waker.clone() });
        id
    }

    fn update(&mut self, id: u64, waker: &Waker) -> bool {
        match self.entries.iter_mut().find(|e| e.id == id) {
            Some(e) => {
                if !e.waker.will_wake(waker) {
                    e.waker = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, id: u64) {
        self.entries.retain(|e| e.id != id);
    }

    /// Wakes (and drops) every watcher: each re-checks its word when
    /// polled and registers again if it has not changed.
    pub(crate) fn wake_all(&mut self) {
        for e in self.entries.drain(..) {
            e.waker.wake();
        }
    }

    /// What the idle predicate must watch: the notification count to
    /// compare with (if anyone waits for one), the `(address, old)` words,
    /// and whether a notification waiter is already stale (then the
    /// executor must not sleep).
    pub(crate) fn idle_view(&self, notif_now: u64) -> (Option<u64>, Vec<(u64, u64)>, bool) {
        let mut notif = None;
        let mut stale = false;
        let mut words = Vec::new();
        for e in &self.entries {
            match e.what {
                What::Word { addr, old } => words.push((addr, old)),
                What::Notification { seen } => {
                    notif = Some(notif_now);
                    stale |= seen != notif_now;
                }
            }
        }
        (notif, words, stale)
    }

    /// Number of watchers.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// For futures that keep no registration of their own (the channel
/// futures): asks the calling core's executor to wake `waker` once the
/// word at `addr` may differ from `old`, or once the TSC reaches
/// `deadline` (`u64::MAX`: no deadline). One-shot: the watch goes away at
/// the executor's next round of wake-ups (see the module documentation)
/// and the timer when it fires; a future still waiting registers again
/// when polled. `false` (nothing registered) when no executor loop runs on
/// this core.
pub fn watch_once(addr: u64, old: u64, deadline: u64, waker: &Waker) -> bool {
    let core = machine::current_core();
    if !super::exec::executor_running(core) {
        return false;
    }
    CORES[core].watch.lock().register(What::Word { addr, old }, waker);
    arm_once(core, deadline, waker);
    true
}

/// [`watch_once`] for `InfoPage::notifications` differing from `seen`.
pub fn watch_notification_once(seen: u64, deadline: u64, waker: &Waker) -> bool {
    let core = machine::current_core();
    if !super::exec::executor_running(core) {
        return false;
    }
    CORES[core].watch.lock().register(What::Notification { seen }, waker);
    arm_once(core, deadline, waker);
    true
}

fn arm_once(core: usize, deadline: u64, waker: &Waker) {
    if deadline != u64::MAX {
        CORES[core].timers.lock().insert(deadline, waker.clone());
        CORES[core].earliest.fetch_min(deadline, Ordering::AcqRel);
    }
}

/// A registration in some core's watch list, removed on drop.
#[derive(Default)]
struct Registration {
    at: Option<(usize, u64)>,
}

impl Registration {
    fn watch(&mut self, what: impl FnOnce() -> What, waker: &Waker) {
        let core = machine::current_core();
        if let Some((c, id)) = self.at {
            if c == core && CORES[c].watch.lock().update(id, waker) {
                return;
            }
            self.cancel();
        }
        let id = CORES[core].watch.lock().register(what(), waker);
        self.at = Some((core, id));
    }

    fn cancel(&mut self) {
        if let Some((c, id)) = self.at.take() {
            CORES[c].watch.lock().remove(id);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The future of [`wait_word_change`].
pub struct WordChange<'a> {
    word: &'a AtomicU64,
    old: u64,
    reg: Registration,
}

/// Completes with the word's value once it differs from `old` (at once if
/// it already does). See the module documentation for how promptly.
pub fn wait_word_change(word: &AtomicU64, old: u64) -> WordChange<'_> {
    WordChange { word, old, reg: Registration::default() }
}

impl Future for WordChange<'_> {
    type Output = u64;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let this = self.get_mut();
        let v = this.word.load(Ordering::Acquire);
        if v != this.old {
            this.reg.cancel();
            return Poll::Ready(v);
        }
        let addr = this.word as *const AtomicU64 as u64;
        let old = this.old;
        this.reg.watch(|| What::Word { addr, old }, cx.waker());
        // Re-check: a change between the load and the registration must
        // not wait for the next idle round.
        let v = this.word.load(Ordering::Acquire);
        if v != old {
            this.reg.cancel();
            return Poll::Ready(v);
        }
        Poll::Pending
    }
}

/// The future of [`wait_notification`].
pub struct NotificationChange {
    seen: u64,
    reg: Registration,
}

/// Completes with `InfoPage::notifications` once it differs from `seen`
/// (read it with [`crate::sys::notifications`] before checking for work).
pub fn wait_notification(seen: u64) -> NotificationChange {
    NotificationChange { seen, reg: Registration::default() }
}

impl Future for NotificationChange {
    type Output = u64;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let this = self.get_mut();
        let n = machine::notifications();
        if n != this.seen {
            this.reg.cancel();
            return Poll::Ready(n);
        }
        let seen = this.seen;
        this.reg.watch(|| What::Notification { seen }, cx.waker());
        Poll::Pending
    }
}

/// Watchers registered on `core` (for tests).
pub fn watchers(core: usize) -> usize {
    CORES.get(core).map_or(0, |c| c.watch.lock().len())
}
