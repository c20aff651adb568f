//! Tasks: a spawned future, its run state, and its [`JoinHandle`].
//!
//! A task is **one allocation**: an `Arc` holding a header (run state, home
//! core, priority), the future itself (inline, never moved: it is pinned
//! there), later its output, and the joiner's waker. Its [`Waker`] is that
//! `Arc` (a strong count per waker, so wakers are `Send + Sync` and work
//! from any core); the waker a poll hands to the future is borrowed from
//! the executor's own count, so a poll costs no count changes unless the
//! future keeps a clone. The run state makes sure a task is in at most one
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
//! core: the core that last polled it; see `exec::enqueue`).
//!
//! This module has `unsafe` for two things: the waker's vtable (a raw
//! `Arc` pointer, see `Cell::VTABLE`) and the stage.
//!
//! **Who may touch the stage** (the future, then its output; an
//! `UnsafeCell`): while the state is not
//! `DONE`, only the executor that popped the task from a run queue (and
//! so owns the `RUNNING` state) until it stores `IDLE` (Release; the next
//! owner comes through a waker's `IDLE -> SCHEDULED` CAS and a queue lock,
//! both acquiring). The executor stores `DONE` (Release) right after it
//! replaced the future by its output and never touches the stage again
//! (a `DONE` task is never queued). After `DONE`, only the one
//! [`JoinHandle`] (it is not `Clone`; polling it takes `&mut`) reads the
//! stage, after an Acquire load of `DONE`. The joiner's waker is handed
//! over under a small spin lock: the handle stores its waker, then looks
//! at the state again; the completer stores `DONE`, then takes the waker;
//! one of the two sees the other (no lost wake-up).

use alloc::sync::Arc;
use core::cell::UnsafeCell;
use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use spin::Mutex;

use super::catch::JoinError;
#[cfg(test)]
extern crate std;

pub(crate) const IDLE: u8 = 0;
pub(crate) const SCHEDULED: u8 = 1;
pub(crate) const RUNNING: u8 = 2;
pub(crate) const NOTIFIED: u8 = 3;
pub(crate) const DONE: u8 = 4;

/// [`Header::pin`]: an ordinary task (may be stolen or moved).
pub(crate) const PIN_NONE: u8 = 0;
/// [`Header::pin`]: `block_on`'s main future.
pub(crate) const PIN_MAIN: u8 = 1;
/// [`Header::pin`]: a `!Send` future of [`spawn_local`](super::spawn_local),
/// polled and dropped only on its home core.
pub(crate) const PIN_LOCAL: u8 = 2;

/// What every task has, whatever its future.
// `repr(C)`: the four bytes set at spawn side by side (one store).
#[repr(C)]
pub(crate) struct Header {
    /// The core whose run queue the task goes to when woken.
    pub(crate) home: AtomicUsize,
    pub(crate) state: AtomicU8,
    pub(crate) priority: u8,
    /// [`PIN_NONE`], or why the task never leaves its home core:
    /// [`PIN_MAIN`] (`block_on`'s main future) or [`PIN_LOCAL`] (a
    /// [`spawn_local`](super::spawn_local) task).
    pub(crate) pin: u8,
    /// The task panicked: it is `DONE` without an output, the error waits
    /// in [`super::catch`]'s table for the [`JoinHandle`], and its future
    /// is abandoned (never dropped, never freed).
    pub(crate) panicked: AtomicBool,
    /// The stable task id, 0 until first asked for ([`Header::id`]).
    id: AtomicU64,
    /// The application's word ([`super::policy::Task::data`]).
    pub(crate) data: AtomicU64,
    /// The policy's word ([`super::policy::Task::sched`]).
    pub(crate) sched: AtomicU64,
    /// TSC when last queued (written only while metrics timing is on).
    pub(crate) queued_at: AtomicU64,
    /// The waker of the task awaiting the [`JoinHandle`] (in the header,
    /// not the typed cell, so that a caught panic can wake it knowing
    /// only the header).
    pub(crate) joiner: Mutex<Option<Waker>>,
}

/// Task ids: 1, 2, ... for the environment's lifetime.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh task id.
fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

impl Header {
    /// The task's id: unique for the environment's lifetime, the same
    /// every time (taken from [`NEXT_ID`] the first time it is asked for,
    /// so ids follow the order of first use, not of spawning).
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        match self.id.load(Ordering::Relaxed) {
            0 => self.assign_id(),
            id => id,
        }
    }

    #[cold]
    fn assign_id(&self) -> u64 {
        let fresh = next_id();
        match self.id.compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => fresh,
            // Another core asked first: its id stands (ours is skipped).
            Err(theirs) => theirs,
        }
    }

    pub(crate) fn new(core: usize, priority: u8, state: u8, pin: u8) -> Self {
        Header {
            home: AtomicUsize::new(core),
            state: AtomicU8::new(state),
            priority,
            pin,
            panicked: AtomicBool::new(false),
            // Given when first asked for: spawning costs no atomic add.
            id: AtomicU64::new(0),
            data: AtomicU64::new(0),
            sched: AtomicU64::new(0),
            queued_at: AtomicU64::new(0),
            joiner: Mutex::new(None),
        }
    }
}

/// The header of the task each core is polling (null between polls):
/// what [`with_current`] reads. Written only by that core's executor.
static CURRENT: [AtomicPtr<Header>; abi::MAX_CORES] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; abi::MAX_CORES];

/// `CURRENT[core]`, without a bounds check or mask on the poll path.
///
/// # Safety
/// `core < MAX_CORES`.
#[inline(always)]
unsafe fn current_slot(core: usize) -> &'static AtomicPtr<Header> {
    debug_assert!(core < abi::MAX_CORES);
    // SAFETY: `core < MAX_CORES` (the caller's promise): in bounds.
    unsafe { &*CURRENT.as_ptr().add(core) }
}

/// The header of the task `core` is polling (null between polls).
#[cfg_attr(not(target_os = "none"), allow(dead_code, reason = "the panic handler's"))]
pub(crate) fn current_header(core: usize) -> *const Header {
    CURRENT.get(core).map_or(core::ptr::null(), |c| c.load(Ordering::Relaxed))
}

/// Forgets `core`'s current task (its poll was abandoned).
#[cfg_attr(not(target_os = "none"), allow(dead_code, reason = "the panic handler's"))]
pub(crate) fn clear_current(core: usize) {
    if let Some(c) = CURRENT.get(core) {
        c.store(core::ptr::null_mut(), Ordering::Relaxed);
    }
}

/// Runs `f` on the header of the task the calling core is polling, if
/// any (called from inside a task: that task).
pub(crate) fn with_current<R>(f: impl FnOnce(&Header) -> R) -> Option<R> {
    let core = super::machine::current_core();
    let p = CURRENT.get(core)?.load(Ordering::Relaxed);
    if p.is_null() {
        return None;
    }
    // SAFETY: only this core's executor writes `CURRENT[core]`: it stores
    // a task's header right before polling it, while it holds a strong
    // count of the task, and null right after the poll, before that count
    // can go. We run on this core, so either inside that poll (the header
    // is alive) or outside any poll (we read null).
    Some(f(unsafe { &*p }))
}

impl Header {
    /// A wake-up: whether the caller must queue the task.
    #[inline]
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
    /// Polls the task once on `core`, whose executor popped it from a run
    /// queue (state `SCHEDULED`): `RUNNING`, one poll, then `DONE`, `IDLE`,
    /// or — if it was woken meanwhile — `SCHEDULED` again, and then the
    /// caller must queue it on `core` ([`Polled::Requeue`]).
    ///
    /// # Safety
    /// `core < MAX_CORES` (it indexes the current-task table unchecked).
    unsafe fn poll_once(&self, core: usize) -> Polled;
}

/// How [`Runnable::poll_once`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// The executor's hot path tells "nothing more to do" (`Blocked`, `Done`)
// from the rest with one compare (`< Requeue`), then `Requeue` from the
// rare `Main` with another.
#[repr(u8)]
pub(crate) enum Polled {
    /// Waiting for a waker (IDLE).
    Blocked = 0,
    /// Finished.
    Done = 1,
    /// Woken while it ran: SCHEDULED again, to be queued by the caller.
    Requeue = 2,
    /// Not polled: this is `block_on`'s main task, which only `block_on`
    /// can poll (the executor hands it back; see [`MainCell`]).
    Main = 3,
}

impl Polled {
    /// `Blocked` or `Done`: the executor has nothing more to do.
    #[inline(always)]
    pub(crate) fn finished_poll(self) -> bool {
        (self as u8) < Polled::Requeue as u8
    }
}

/// A queued task.
pub(crate) type TaskRef = Arc<dyn Runnable>;

/// What the task's cell holds: the future, then its output.
enum Stage<F: Future> {
    Running(F),
    Finished(F::Output),
    /// The output was taken by the [`JoinHandle`].
    Taken,
}

/// `LOCAL`: a [`spawn_local`](super::spawn_local) task (its completion
/// gives back the home count: see [`new_local_task`]); a constant, so
/// that ordinary tasks do not test for it.
struct Cell<F: Future, const LOCAL: bool = false> {
    header: Header,
    /// See the module documentation for who may touch it when.
    stage: UnsafeCell<Stage<F>>,
}

// SAFETY: `stage` is the only field that is not `Sync` by itself. It is
// only ever accessed by one core at a time, with a happens-before edge
// between successive accessors (the run-state protocol of the module
// documentation), so sharing `&Cell` between cores is sound provided what
// moves between cores through it may: the future (polled on whatever core
// pops it) and its output (read by the joiner's core) are both `Send`.
unsafe impl<F, const LOCAL: bool> Sync for Cell<F, LOCAL>
where
    F: Future + Send,
    F::Output: Send,
{
}

impl<F, const LOCAL: bool> Runnable for Cell<F, LOCAL>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn header(&self) -> &Header {
        &self.header
    }

    unsafe fn poll_once(&self, core: usize) -> Polled {
        let header = &self.header;
        header.state.store(RUNNING, Ordering::Relaxed);
        // Whoever moves a task to another core's queue sets its home first
        // (stealing, retiring a core), so it is `core` already.
        debug_assert_eq!(header.home.load(Ordering::Relaxed), core);
        // SAFETY: a borrowed waker: the caller's `Arc` (every task is
        // polled through the `TaskRef` its executor popped) holds a strong
        // count for as long as `waker` lives (it is never dropped, so it
        // gives back no count), and `self` is `Arc::as_ptr` of that
        // `Arc<Self>`, which is what the vtable's functions expect.
        let waker = ManuallyDrop::new(unsafe {
            Waker::from_raw(RawWaker::new((self as *const Self).cast(), &Self::VTABLE))
        });
        let mut cx = Context::from_waker(&waker);
        // SAFETY: we own the RUNNING state (our executor popped the task
        // from its run queue, where only the IDLE -> SCHEDULED transition
        // puts it, and the queue lock orders us after the previous owner's
        // last access): no one else touches `stage` until we store IDLE or
        // DONE below (module documentation).
        let stage = unsafe { &mut *self.stage.get() };
        let Stage::Running(fut) = stage else {
            // Cannot happen (a DONE task is never queued): nothing to do.
            return Polled::Done;
        };
        // SAFETY: the future lives inside the `Arc`'s allocation, which
        // never moves, and is never moved out of it: it stays there until
        // it is dropped in place (replaced by its output below, or with the
        // cell).
        let fut = unsafe { Pin::new_unchecked(fut) };
        // SAFETY: `core < MAX_CORES` (our caller's promise).
        let current = unsafe { current_slot(core) };
        current.store(header as *const Header as *mut Header, Ordering::Relaxed);
        #[cfg(not(test))]
        let polled = fut.poll(&mut cx);
        // The host (unwinding) stand-in of the target's caught panics
        // (`catch`): the same bookkeeping, the task kept alive the same way.
        #[cfg(test)]
        let polled = match std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
            fut.poll(&mut cx)
        })) {
            Ok(p) => p,
            Err(payload) => {
                current.store(core::ptr::null_mut(), Ordering::Relaxed);
                // SAFETY: `self` is the inside of a live `Arc<Self>` (the
                // caller's); the count taken is never given back, as on the
                // target, where the abandoned poll stack keeps one.
                unsafe { Arc::increment_strong_count(self as *const Self) };
                let message = super::catch::payload_message(&*payload);
                let task = super::policy::TaskId(header.id());
                super::catch::settle(header, super::catch::JoinError::Panicked { task, message });
                return Polled::Done;
            }
        };
        current.store(core::ptr::null_mut(), Ordering::Relaxed);
        match polled {
            Poll::Pending => {
                if header
                    .state
                    .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // Woken while it ran (NOTIFIED): back in the queue.
                    debug_assert_eq!(header.state.load(Ordering::Relaxed), NOTIFIED);
                    header.state.store(SCHEDULED, Ordering::Relaxed);
                    return Polled::Requeue;
                }
                Polled::Blocked
            }
            Poll::Ready(value) => {
                // Drops the future in place (on its home core: a local
                // task is only ever polled there).
                *stage = Stage::Finished(value);
                header.state.store(DONE, Ordering::Release);
                let joiner = header.joiner.lock().take();
                if let Some(w) = joiner {
                    w.wake();
                }
                if LOCAL {
                    // SAFETY: the home count `new_local_task` took and
                    // left behind (given back only here, once: a DONE task
                    // is never polled again); our caller's `Arc` keeps the
                    // cell alive past this call. From now on the cell
                    // holds no future, only its (`Send`) output, so its
                    // last count may go on any core.
                    unsafe { Arc::decrement_strong_count(self as *const Self) };
                }
                Polled::Done
            }
        }
    }
}

impl<F, const LOCAL: bool> Cell<F, LOCAL>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// The vtable of this task's wakers. Every `RawWaker` with it has as
    /// data `Arc::as_ptr` of an `Arc<Self>`, and either owns one strong
    /// count of it (made by `clone_raw`) or is borrowed, for its whole
    /// life, from an `Arc` its maker holds (the one in
    /// [`Runnable::poll_once`], never dropped).
    const VTABLE: RawWakerVTable =
        RawWakerVTable::new(Self::clone_raw, Self::wake_raw, Self::wake_by_ref_raw, Self::drop_raw);

    /// Queues the task if this wake-up must (see [`Header::wake_needs_queue`]).
    #[inline]
    fn wake_arc(self: Arc<Self>) {
        if self.header.wake_needs_queue() {
            let home = self.header.home.load(Ordering::Relaxed);
            super::exec::enqueue(self, home, super::policy::Why::Woken);
        }
    }

    unsafe fn clone_raw(data: *const ()) -> RawWaker {
        // SAFETY: `data` is `Arc::as_ptr` of an `Arc<Self>` that is alive
        // (the waker being cloned owns or borrows a count: VTABLE).
        unsafe { Arc::increment_strong_count(data.cast::<Self>()) };
        RawWaker::new(data, &Self::VTABLE)
    }

    unsafe fn wake_raw(data: *const ()) {
        // SAFETY: `wake` consumes a waker, and only owning wakers can be
        // consumed (the borrowed one is never handed out by value): its
        // count passes to this `Arc`.
        let task = unsafe { Arc::from_raw(data.cast::<Self>()) };
        task.wake_arc();
    }

    unsafe fn wake_by_ref_raw(data: *const ()) {
        let ptr = data.cast::<Self>();
        // SAFETY: the waker keeps its count (owned or borrowed) during the
        // call, so the task is alive.
        let header = unsafe { &(*ptr).header };
        if header.wake_needs_queue() {
            let home = header.home.load(Ordering::Relaxed);
            // SAFETY: as above; the new count is the queue's.
            unsafe { Arc::increment_strong_count(ptr) };
            // SAFETY: the count just taken passes to this `Arc`.
            super::exec::enqueue(unsafe { Arc::from_raw(ptr) }, home, super::policy::Why::Woken);
        }
    }

    unsafe fn drop_raw(data: *const ()) {
        // SAFETY: only owning wakers are dropped (the borrowed one is in a
        // `ManuallyDrop`): this gives back the count it owned.
        unsafe { Arc::decrement_strong_count(data.cast::<Self>()) };
    }
}

/// `block_on`'s main future as a task: a header in the run queue like
/// any task's (so the policy decides when it runs), whose future lives on
/// `block_on`'s stack and is polled there ([`MainCell::poll_main`]) when
/// the executor pops this task. Pinned to its core.
pub(crate) struct MainCell {
    header: Header,
}

impl MainCell {
    /// A main task on `core`, SCHEDULED (the caller queues it).
    pub(crate) fn new(core: usize) -> Arc<Self> {
        Arc::new(MainCell { header: Header::new(core, 0, SCHEDULED, PIN_MAIN) })
    }

    /// Polls `fut` as this task, which its executor just popped: the
    /// same state protocol as [`Cell`]'s poll.
    pub(crate) fn poll_main<F: Future>(
        &self,
        core: usize,
        fut: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> (Polled, Option<F::Output>) {
        let header = &self.header;
        header.state.store(RUNNING, Ordering::Relaxed);
        let current = &CURRENT[core % abi::MAX_CORES];
        current.store(header as *const Header as *mut Header, Ordering::Relaxed);
        let polled = fut.poll(cx);
        current.store(core::ptr::null_mut(), Ordering::Relaxed);
        match polled {
            Poll::Pending => {
                if header
                    .state
                    .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    header.state.store(SCHEDULED, Ordering::Relaxed);
                    return (Polled::Requeue, None);
                }
                (Polled::Blocked, None)
            }
            Poll::Ready(v) => {
                header.state.store(DONE, Ordering::Release);
                (Polled::Done, Some(v))
            }
        }
    }
}

impl Runnable for MainCell {
    fn header(&self) -> &Header {
        &self.header
    }
    unsafe fn poll_once(&self, _core: usize) -> Polled {
        // The executor hands a popped main task back to `block_on`, which
        // polls the future with `poll_main`.
        Polled::Main
    }
}

impl alloc::task::Wake for MainCell {
    fn wake(self: Arc<Self>) {
        if self.header.wake_needs_queue() {
            let home = self.header.home.load(Ordering::Relaxed);
            super::exec::enqueue(self, home, super::policy::Why::Woken);
        }
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.clone().wake();
    }
}

/// The join side of a task, whatever its future.
trait Join<T>: Send + Sync {
    /// Only ever called by the task's one [`JoinHandle`] (through `&mut`).
    /// The output, or `None` if the task ended with an error (then in
    /// `catch`'s table: see [`JoinHandle::take_error`]). Small on purpose:
    /// the common path moves no `JoinError` around.
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Option<T>>;
    fn is_finished(&self) -> bool;
    fn header(&self) -> &Header;
    /// Drops the handle's reference (monomorphic: the task's layout and
    /// destructor are known statically, unlike through `Arc<dyn Join>`).
    fn release(self: Arc<Self>);
}

impl<F, const LOCAL: bool> Join<F::Output> for Cell<F, LOCAL>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        if self.header.state.load(Ordering::Acquire) != DONE {
            {
                let mut joiner = self.header.joiner.lock();
                match &*joiner {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *joiner = Some(cx.waker().clone()),
                }
            }
            // The completer stores DONE before it takes the waker: if it
            // took it before we stored ours, we see DONE now.
            if self.header.state.load(Ordering::Acquire) != DONE {
                return Poll::Pending;
            }
        }
        if self.header.panicked.load(Ordering::Relaxed) {
            // Panicked: the stage is not ours to touch (the future stays
            // where its abandoned poll left it).
            return Poll::Ready(None);
        }
        // SAFETY: the state is DONE (Acquire, pairing with the completer's
        // Release store made after its last access to the stage); no
        // executor touches a DONE task's stage again, and only the one
        // JoinHandle, which holds `&mut` while it polls, calls this.
        let stage = unsafe { &mut *self.stage.get() };
        match core::mem::replace(stage, Stage::Taken) {
            Stage::Finished(v) => Poll::Ready(Some(v)),
            _ => panic!("JoinHandle polled after it returned the output"),
        }
    }

    fn is_finished(&self) -> bool {
        self.header.state.load(Ordering::Acquire) == DONE
    }

    fn header(&self) -> &Header {
        &self.header
    }

    fn release(self: Arc<Self>) {
        drop(self);
    }
}

/// Awaits a spawned task's output. Dropping it detaches the task (it runs
/// to completion anyway; its output is dropped).
///
/// `handle.await` gives the output, and re-raises the task's panic in the
/// joiner if it panicked; [`JoinHandle::try_join`] gives
/// `Result<T, JoinError>` instead (see [`catch`](super::catch)).
pub struct JoinHandle<T> {
    /// `None` only while the handle is dropped.
    task: Option<Arc<dyn Join<T>>>,
}

impl<T> JoinHandle<T> {
    fn task(&self) -> &dyn Join<T> {
        match &self.task {
            Some(t) => &**t,
            None => unreachable!("JoinHandle used while dropped"),
        }
    }

    /// Whether the task has finished (returned or panicked).
    pub fn is_finished(&self) -> bool {
        self.task().is_finished()
    }

    /// The task's id.
    pub fn id(&self) -> super::TaskId {
        super::TaskId(self.task().header().id())
    }

    /// Awaits the task's output, or the [`JoinError`] that ended it.
    pub fn try_join(self) -> TryJoin<T> {
        TryJoin(self)
    }

    /// Polls for the output or the error (what [`TryJoin`] does; for
    /// hand-written futures over handles, e.g. [`JoinSet`](super::JoinSet)).
    pub fn poll_result(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>> {
        match self.task().poll_join(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(v)) => Poll::Ready(Ok(v)),
            Poll::Ready(None) => Poll::Ready(Err(self.take_error())),
        }
    }

    /// The error that ended the task (once: `poll_join` said there is one).
    #[cold]
    #[inline(never)]
    fn take_error(&self) -> JoinError {
        match super::catch::take_error(self.task().header()) {
            Some(e) => e,
            None => panic!("JoinHandle polled after it returned the error"),
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.task().poll_join(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(v)) => Poll::Ready(v),
            Poll::Ready(None) => reraise(self.take_error()),
        }
    }
}

/// `handle.await` on a task that ended with an error: the joiner panics.
#[cold]
#[inline(never)]
fn reraise(e: JoinError) -> ! {
    panic!("joined {e}")
}

/// The future of [`JoinHandle::try_join`].
#[derive(Debug)]
pub struct TryJoin<T>(JoinHandle<T>);

impl<T> Future for TryJoin<T> {
    type Output = Result<T, JoinError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `JoinHandle` is `Unpin` (an `Option<Arc>`), and so is this.
        self.get_mut().0.poll_result(cx)
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.release();
        }
    }
}

impl<T> core::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("JoinHandle").field("finished", &self.is_finished()).finish()
    }
}

/// Makes a task (state SCHEDULED, home `core`) and its join handle: one
/// allocation.
pub(crate) fn new_task<F>(fut: F, core: usize, priority: u8) -> (TaskRef, JoinHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let cell = Arc::new(Cell::<_, false> {
        header: Header::new(core, priority, SCHEDULED, PIN_NONE),
        stage: UnsafeCell::new(Stage::Running(fut)),
    });
    (cell.clone(), JoinHandle { task: Some(cell) })
}

/// A `!Send` future made to pass the `Send` bounds of [`Cell`], for a
/// [`PIN_LOCAL`] task only.
///
/// What makes that sound is where the future is touched, not its type:
/// a local task's header says [`PIN_LOCAL`], so no executor but its home
/// core's ever pops it (thieves put it back, its home never changes:
/// `exec::try_steal`, `exec::push_elsewhere`), and its cell cannot be
/// freed before the home core's executor dropped the future in place at
/// completion (the home count of [`new_local_task`]). Its wakers and
/// join handle, which do go to other cores, touch only the header and
/// the (`Send`) output.
pub(crate) struct LocalFuture<F>(F);

// SAFETY: see the type's documentation: the future is polled and dropped
// only on its home core; other cores only move the `Arc` around.
unsafe impl<F> Send for LocalFuture<F> {}

impl<F: Future> Future for LocalFuture<F> {
    type Output = F::Output;
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: structural pinning of the only field: it is never moved
        // out of `self` (no method gives it out).
        unsafe { self.map_unchecked_mut(|s| &mut s.0) }.poll(cx)
    }
}

/// [`new_task`] for a `!Send` future pinned to `core`, the calling core
/// ([`PIN_LOCAL`]). Leaves one strong count behind (the *home count*),
/// which the home executor gives back when the future completed and was
/// dropped in place ([`Runnable::poll_once`]): until then no other core
/// can drop the last reference and with it the future. A local task that
/// never completes (no waker left, nobody to wake it) therefore stays
/// allocated until the environment ends, as a `LocalSet` task of tokio
/// stays until the set is dropped.
pub(crate) fn new_local_task<F>(
    fut: F,
    core: usize,
    priority: u8,
) -> (TaskRef, JoinHandle<F::Output>)
where
    F: Future + 'static,
    F::Output: Send + 'static,
{
    let cell = Arc::new(Cell::<_, true> {
        header: Header::new(core, priority, SCHEDULED, PIN_LOCAL),
        stage: UnsafeCell::new(Stage::Running(LocalFuture(fut))),
    });
    // The home count (see above).
    core::mem::forget(cell.clone());
    (cell.clone(), JoinHandle { task: Some(cell) })
}
