//! Tasks: a spawned future, its run state, and its [`JoinHandle`].
//!
//! A task is one `Arc` holding a header (run state, home core, priority),
//! the boxed future, and the slot for its output. Its [`Waker`] is that
//! `Arc` (through [`alloc::task::Wake`], so wakers are `Send + Sync` and
//! work from any core). The run state makes sure a task is in at most one
//! run queue and polled by at most one core at a time:
//!
//! ```text
//!   IDLE --wake--> SCHEDULED --executor pops--> RUNNING --Pending--> IDLE
//!                      ^                          |  wake while running
//!                      +------ requeued ------ NOTIFIED
//!   RUNNING --Ready--> DONE (output stored, joiner woken)
//! ```
//!
//! Only the `IDLE -> SCHEDULED` transition queues the task (on its home
//! core: the core that last polled it; see [`super::exec::enqueue`]).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::task::Wake;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};

use spin::Mutex;

use super::policy::Prioritized;

pub(crate) const IDLE: u8 = 0;
pub(crate) const SCHEDULED: u8 = 1;
pub(crate) const RUNNING: u8 = 2;
pub(crate) const NOTIFIED: u8 = 3;
pub(crate) const DONE: u8 = 4;

/// What every task has, whatever its future.
pub(crate) struct Header {
    pub(crate) state: AtomicU8,
    /// The core whose run queue the task goes to when woken.
    pub(crate) home: AtomicUsize,
    pub(crate) priority: u8,
}

impl Header {
    /// A wake-up: whether the caller must queue the task.
    pub(crate) fn wake_needs_queue(&self) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                _ => return false,
            };
            match self.state.compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return state == IDLE,
                Err(s) => state = s,
            }
        }
    }
}

/// A task as the executor sees it.
pub(crate) trait Runnable: Send + Sync {
    fn header(&self) -> &Header;
    /// Polls the future once (the caller set the state to RUNNING);
    /// whether it finished.
    fn poll_once(self: Arc<Self>) -> bool;
}

/// A queued task.
pub(crate) type TaskRef = Arc<dyn Runnable>;

impl Prioritized for TaskRef {
    fn priority(&self) -> u8 {
        self.header().priority
    }
}

struct Output<T> {
    value: Option<T>,
    finished: bool,
    joiner: Option<Waker>,
}

struct Cell<F: Future> {
    header: Header,
    /// Locked only by the executor polling the task (the run state makes
    /// that one core at a time, so the lock is never contended).
    future: Mutex<Option<Pin<Box<F>>>>,
    output: Mutex<Output<F::Output>>,
}

impl<F> Runnable for Cell<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn header(&self) -> &Header {
        &self.header
    }

    fn poll_once(self: Arc<Self>) -> bool {
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let mut slot = self.future.lock();
        let Some(fut) = slot.as_mut() else { return true };
        match fut.as_mut().poll(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(value) => {
                *slot = None;
                drop(slot);
                let joiner = {
                    let mut out = self.output.lock();
                    out.value = Some(value);
                    out.finished = true;
                    out.joiner.take()
                };
                self.header.state.store(DONE, Ordering::Release);
                if let Some(w) = joiner {
                    w.wake();
                }
                true
            }
        }
    }
}

impl<F> Wake for Cell<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn wake(self: Arc<Self>) {
        if self.header.wake_needs_queue() {
            super::exec::enqueue(self);
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.header.wake_needs_queue() {
            super::exec::enqueue(self.clone());
        }
    }
}

/// The join side of a task, whatever its future.
trait Join<T>: Send + Sync {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<T>;
    fn is_finished(&self) -> bool;
}

impl<F> Join<F::Output> for Cell<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut out = self.output.lock();
        if let Some(v) = out.value.take() {
            return Poll::Ready(v);
        }
        assert!(!out.finished, "JoinHandle polled after it returned the output");
        match &out.joiner {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => out.joiner = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn is_finished(&self) -> bool {
        self.output.lock().finished
    }
}

/// Awaits a spawned task's output. Dropping it detaches the task (it runs
/// to completion anyway; its output is dropped).
pub struct JoinHandle<T> {
    task: Arc<dyn Join<T>>,
}

impl<T> JoinHandle<T> {
    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.task.poll_join(cx)
    }
}

impl<T> core::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("JoinHandle").field("finished", &self.is_finished()).finish()
    }
}

/// Makes a task (state SCHEDULED, home `core`) and its join handle.
pub(crate) fn new_task<F>(fut: F, core: usize, priority: u8) -> (TaskRef, JoinHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let cell = Arc::new(Cell {
        header: Header { state: AtomicU8::new(SCHEDULED), home: AtomicUsize::new(core), priority },
        future: Mutex::new(Some(Box::pin(fut))),
        output: Mutex::new(Output { value: None, finished: false, joiner: None }),
    });
    (cell.clone(), JoinHandle { task: cell })
}
