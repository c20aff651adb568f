//! The per-core executors: run queues, spawning, cross-core wake-ups,
//! work stealing, the executor loop and its idle sleep.
//!
//! Every core has a `CoreExec` in one static array. Its run queue (a
//! [`Policy`] behind a spin lock; the default FIFO is tested for with one
//! flag and used directly, other policies go through the trait object out
//! of line) exists once an executor was set up there
//! (`ensure_executor`); anyone may push to it, from any core. What each
//! lock guards, and the order: a core's `queue` lock is never held while
//! taking another lock, except by a thief, which holds its victim's queue
//! only while moving tasks into a local vector (never two queue locks at
//! once). Timers, watchers and ring slots have their own locks, never
//! held while waking anything (wakers are collected, the lock dropped,
//! then woken).
//!
//! **Cross-core wake-ups.** Waking a task whose home is another core
//! pushes it to that core's queue, then bumps that core's `wake_seq` (a
//! word its idle predicate watches), and — only if the core is asleep
//! (its bit in `SLEEPERS`) — posts an asynchronous call (`Acall`) to our
//! own environment, which makes the kernel re-evaluate the sleeping
//! predicates at once (an IPI to the cores holding our vCPUs) instead of
//! at the next slot boundary.
//! The sleeper publishes its bit *after* snapshotting `wake_seq` and then
//! re-checks its queue, and the waker bumps `wake_seq` *before* looking at
//! the bit (all `SeqCst`), so either the sleeper sees the task or its
//! predicate sees the bump: no lost wake-up.
//!
//! **Idle.** With nothing runnable (after trying to steal, if stealing is
//! on), the executor sleeps with `SleepOn` on one predicate (see
//! `idle_predicate`): its `wake_seq` moved, OR its ring's completion
//! tail moved (if operations are in flight), OR `InfoPage::notifications`
//! changed (if a task waits for that), OR the TSC reached its earliest
//! timer, OR a watched word changed. It never spins.

use alloc::vec::Vec;
use core::future::Future;
use core::pin::pin;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};

use abi::MAX_CORES;
use spin::{Mutex, MutexGuard};

use super::machine;
use super::metrics::{self, Counters, ExecMetrics};
use super::policy::{Policy, RunQueue, Stop, Task, Why};
use super::task::{self, JoinHandle, MainCell, Polled, TaskRef};
use super::timer::TimerHeap;
use super::trace::{self, Event};
use super::watch::WatchList;
use super::{reactor, slots::SlotTable};
use crate::predicate::{self, Pred};

/// How often an executor looks at its timers and its ring while tasks
/// are runnable: every `timers` (resp. `ring`) polls at most (both also
/// when the run queue empties). The defaults (32 each) keep the executor's
/// old fixed budget; smaller budgets bound how long a due timer or a
/// completion waits behind runnable tasks, at some cost per poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// Polls between timer checks (at least 1).
    pub timers: u32,
    /// Polls between ring flushes and reaps (at least 1).
    pub ring: u32,
}

impl Budgets {
    /// 32 and 32.
    pub const DEFAULT: Budgets = Budgets { timers: 32, ring: 32 };
}

impl Default for Budgets {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The old fixed number of polls per executor tick ([`Budgets::DEFAULT`]).
pub const TICK_BUDGET: usize = 32;
/// Every this many busy ticks, watchers are woken to re-check their words
/// (a busy executor does not sleep, so its predicate never reports them).
pub const WATCH_RECHECK_TICKS: u64 = 16;

/// One core's executor state.
pub(crate) struct CoreExec {
    /// The run queue; none until an executor is set up on this core.
    queue: Mutex<QueueSlot>,
    /// Tasks in `queue` (read without the lock by thieves and the idle
    /// check).
    len: AtomicUsize,
    /// Bumped by every cross-core push; the idle predicate watches it.
    pub(crate) wake_seq: AtomicU64,
    /// An executor loop is running on this core (re-entrance check).
    looping: AtomicBool,
    /// Timers armed by tasks polled on this core.
    pub(crate) timers: Mutex<TimerHeap<Waker>>,
    /// A lower bound of the earliest armed deadline (`u64::MAX`: none),
    /// so that a tick need not lock `timers` when nothing is due.
    pub(crate) earliest: AtomicU64,
    /// Something was pushed on this core's ring since the last reap, or
    /// operations are in flight: the tick must look at the ring.
    pub(crate) ring_busy: AtomicBool,
    /// Words and notifications tasks on this core wait for.
    pub(crate) watch: Mutex<WatchList>,
    /// Ring operations submitted on this core's ring.
    pub(crate) slots: Mutex<SlotTable<Waker>>,
    /// [`Budgets::timers`] and [`Budgets::ring`] of this executor.
    budget_timers: AtomicU32,
    budget_ring: AtomicU32,
    /// The budgets are not [`Budgets::DEFAULT`] (one flag for `tick`).
    custom_budgets: AtomicBool,
}

impl CoreExec {
    const fn new() -> Self {
        CoreExec {
            queue: Mutex::new(QueueSlot::none()),
            len: AtomicUsize::new(0),
            wake_seq: AtomicU64::new(0),
            looping: AtomicBool::new(false),
            timers: Mutex::new(TimerHeap::new()),
            earliest: AtomicU64::new(u64::MAX),
            ring_busy: AtomicBool::new(false),
            watch: Mutex::new(WatchList::new()),
            slots: Mutex::new(SlotTable::new()),
            budget_timers: AtomicU32::new(Budgets::DEFAULT.timers),
            budget_ring: AtomicU32::new(Budgets::DEFAULT.ring),
            custom_budgets: AtomicBool::new(false),
        }
    }
}

/// A core's run queue or none, like an `Option<RunQueue>` but with one
/// flag for the hot paths to test: `fifo` (open, and the plain FIFO
/// policy, whose part is used directly).
struct QueueSlot {
    open: bool,
    /// `open`, `rq.is_fifo()`, and neither timing nor tracing on (see
    /// [`refresh_all`]): the hot paths use the inline FIFO directly.
    fifo: bool,
    /// The policy wants `running`/`stopped` calls.
    events: bool,
    /// Empty while `!open`.
    rq: RunQueue,
    /// This core's counters (kept across policy changes).
    counters: Counters,
}

impl QueueSlot {
    const fn none() -> Self {
        QueueSlot {
            open: false,
            fifo: false,
            events: false,
            rq: RunQueue::fifo(),
            counters: Counters::new(),
        }
    }

    #[inline]
    fn as_mut(&mut self) -> Option<&mut RunQueue> {
        if self.open { Some(&mut self.rq) } else { None }
    }

    fn is_none(&self) -> bool {
        !self.open
    }

    /// Recomputes `fifo` after timing or tracing was switched.
    fn refresh(&mut self) {
        self.fifo = self.open && self.rq.is_fifo() && !metrics::instrumented();
    }

    fn set(&mut self, rq: RunQueue) {
        self.fifo = rq.is_fifo() && !metrics::instrumented();
        self.events = rq.policy_ref().wants_run_events();
        self.rq = rq;
        self.open = true;
    }

    fn take(&mut self) -> Option<RunQueue> {
        let open = core::mem::replace(&mut self.open, false);
        self.fifo = false;
        self.events = false;
        let rq = core::mem::replace(&mut self.rq, RunQueue::fifo());
        open.then_some(rq)
    }

    /// Queues `task` for `why` and counts it; the new length (the task
    /// back if there is no queue).
    #[inline]
    fn enqueue(&mut self, task: Task, why: Why) -> Result<usize, Task> {
        let Some(rq) = self.as_mut() else { return Err(task) };
        let p = rq.policy();
        p.enqueue(task, why);
        let n = p.len();
        self.counters.enqueued(why);
        Ok(n)
    }
}

pub(crate) static CORES: [CoreExec; MAX_CORES] = [const { CoreExec::new() }; MAX_CORES];
/// Bit `c`: core `c` has a run queue (an executor set up there).
static ACTIVE: AtomicU64 = AtomicU64::new(0);
/// Bit `c`: core `c`'s executor is (about to be) asleep in `SleepOn`.
static SLEEPERS: AtomicU64 = AtomicU64::new(0);
/// Whether idle executors steal from loaded ones.
static STEALING: AtomicBool = AtomicBool::new(true);
/// The policy new executors get (`None`: [`Fifo`](super::Fifo)).
static POLICY: Mutex<Option<PolicyFn>> = Mutex::new(None);
/// Makes the policy of an executor core (the argument).
pub type PolicyFn = fn(usize) -> alloc::boxed::Box<dyn Policy>;
/// Tasks moved by stealing (for tests and statistics).
static STOLEN: AtomicU64 = AtomicU64::new(0);
/// Tasks each core took by stealing.
static STOLEN_BY: [AtomicU64; MAX_CORES] = [const { AtomicU64::new(0) }; MAX_CORES];

/// Whether an executor loop (`block_on` or an executor vCPU) runs on
/// `core`: futures polled there can count on its wakers.
pub(crate) fn executor_running(core: usize) -> bool {
    CORES.get(core).is_some_and(|c| c.looping.load(Ordering::Acquire))
}

fn bit(core: usize) -> u64 {
    1u64 << core
}

/// Turns work stealing on or off (default on).
pub fn set_stealing(on: bool) {
    STEALING.store(on, Ordering::SeqCst);
}

/// Whether work stealing is on.
pub fn stealing() -> bool {
    STEALING.load(Ordering::SeqCst)
}

/// The policy executors set up from now on get: `make(core)`, or the
/// built-in [`Fifo`](super::Fifo) with `None`. Executors already set up
/// keep theirs (see [`set_policy`]).
pub fn set_default_policy(make: Option<PolicyFn>) {
    *POLICY.lock() = make;
}

/// Replaces `core`'s policy by `policy` at run time: the tasks queued in
/// the old one move to the new one ([`Why::Moved`], in the old one's pick
/// order); returns the old one (empty). The policy's counters
/// ([`metrics`](super::metrics::metrics)) carry on.
pub fn set_policy(
    core: usize,
    policy: alloc::boxed::Box<dyn Policy>,
) -> Result<alloc::boxed::Box<dyn Policy>, NoExecutor> {
    let exec = CORES.get(core).ok_or(NoExecutor(core))?;
    let mut q = exec.queue.lock();
    if q.is_none() {
        return Err(NoExecutor(core));
    }
    // The inline FIFO's picks are polls the counters have not seen yet.
    q.counters.polls += q.rq.fifo_part().picked();
    let Some(old) = q.take() else { return Err(NoExecutor(core)) };
    let mut old = old.into_policy();
    let mut new = RunQueue::with_policy(policy);
    while let Some(t) = old.pick() {
        new.policy().enqueue(t, Why::Moved);
        q.counters.enqueued(Why::Moved);
    }
    q.set(new);
    exec.len.store(q.rq.policy_ref().len(), Ordering::SeqCst);
    Ok(old)
}

/// The name of `core`'s policy ([`Policy::name`]), if it has an executor.
pub fn policy_name(core: usize) -> Option<&'static str> {
    let q = CORES.get(core)?.queue.lock();
    if q.is_none() { None } else { Some(q.rq.policy_ref().name()) }
}

/// Makes every queue take note that timing or tracing was switched on or
/// off (a push or pop racing with the switch may miss one event).
pub(crate) fn refresh_all() {
    for c in CORES.iter() {
        c.queue.lock().refresh();
    }
}

/// Sets `core`'s [`Budgets`] (values below 1 count as 1).
pub fn set_budgets(core: usize, budgets: Budgets) {
    if let Some(exec) = CORES.get(core) {
        exec.budget_timers.store(budgets.timers.max(1), Ordering::Relaxed);
        exec.budget_ring.store(budgets.ring.max(1), Ordering::Relaxed);
        let custom = budgets.timers.max(1) != Budgets::DEFAULT.timers
            || budgets.ring.max(1) != Budgets::DEFAULT.ring;
        exec.custom_budgets.store(custom, Ordering::Relaxed);
    }
}

/// `core`'s [`Budgets`].
pub fn budgets(core: usize) -> Budgets {
    CORES.get(core).map_or(Budgets::DEFAULT, |e| Budgets {
        timers: e.budget_timers.load(Ordering::Relaxed),
        ring: e.budget_ring.load(Ordering::Relaxed),
    })
}

/// A snapshot of `core`'s executor counters (all zero without one).
pub fn metrics(core: usize) -> ExecMetrics {
    let Some(exec) = CORES.get(core) else { return ExecMetrics::default() };
    let mut q = exec.queue.lock();
    let picked = q.rq.fifo_part().picked();
    let mut m = q
        .counters
        .snapshot(exec.len.load(Ordering::Relaxed), STOLEN_BY[core].load(Ordering::Relaxed));
    // The inline FIFO counts its own picks (each one a poll).
    m.polls += picked;
    m
}

/// Tasks moved between cores by stealing so far.
pub fn stolen_tasks() -> u64 {
    STOLEN.load(Ordering::Relaxed)
}

/// The cores with an executor (a run queue), as a bit set.
pub fn executor_cores() -> u64 {
    ACTIVE.load(Ordering::SeqCst)
}

/// Tasks waiting in `core`'s run queue.
pub fn queued(core: usize) -> usize {
    CORES.get(core).map_or(0, |c| c.len.load(Ordering::Relaxed))
}

fn new_policy(core: usize) -> RunQueue {
    match *POLICY.lock() {
        None => RunQueue::fifo(),
        Some(make) => RunQueue::with_policy(make(core)),
    }
}

/// Gives `core` a run queue (if it has none) and marks it active.
pub(crate) fn ensure_queue(core: usize) {
    let exec = &CORES[core];
    let mut q = exec.queue.lock();
    if q.is_none() {
        q.set(new_policy(core));
    }
    ACTIVE.fetch_or(bit(core), Ordering::SeqCst);
}

/// Takes `core` out of the executors (its vCPU could not start): its
/// queued tasks move to the calling core.
pub(crate) fn retire(core: usize) {
    ACTIVE.fetch_and(!bit(core), Ordering::SeqCst);
    let q = CORES[core].queue.lock().take();
    CORES[core].len.store(0, Ordering::SeqCst);
    if let Some(mut q) = q {
        let here = machine::current_core();
        while let Some(t) = q.policy().pick() {
            if t.stays_home() {
                // A local task cannot move (and cannot be here: no task
                // ran on this core yet); lost, see `push_elsewhere`.
                continue;
            }
            t.0.header().home.store(here, Ordering::Relaxed);
            push(here, t.0, Why::Moved);
        }
    }
}

/// Sets up the executor of the calling core: its run queue and its ring.
pub(crate) fn ensure_executor() -> usize {
    let core = machine::current_core();
    ensure_queue(core);
    reactor::ensure_ring();
    core
}

/// Pushes `task` on `core`'s queue (runnable because of `why`); returns
/// the queue's new length.
///
/// The fast path is the inline FIFO with timing and tracing off (one
/// flag, `QueueSlot::fifo`); everything else goes through `push_slow`.
#[inline(always)]
pub(crate) fn push(core: usize, task: TaskRef, why: Why) -> usize {
    let exec = &CORES[core];
    let mut q = exec.queue.lock();
    if !q.fifo {
        return push_slow(q, core, task, why);
    }
    q.counters.enqueued(why);
    let fifo = q.rq.fifo_part();
    let n = fifo.push_len(Task(task));
    exec.len.store(n, Ordering::SeqCst);
    n
}

/// What [`push`] records when timing or tracing is on.
#[cold]
#[inline(never)]
fn instrument_enqueue(task: &TaskRef, core: usize, why: Why) {
    let now = machine::now();
    task.header().queued_at.store(now, Ordering::Relaxed);
    if trace::enabled() {
        trace::record(now, task.header().id(), Event::Queued(why), core as u64);
    }
}

/// [`push`] to a queue with another policy than FIFO, or none.
#[inline(never)]
fn push_slow(mut q: MutexGuard<'_, QueueSlot>, core: usize, task: TaskRef, why: Why) -> usize {
    if metrics::instrumented() {
        instrument_enqueue(&task, core, why);
    }
    match q.enqueue(Task(task), why) {
        Ok(n) => {
            CORES[core].len.store(n, Ordering::SeqCst);
            n
        }
        Err(task) => {
            drop(q);
            push_elsewhere(core, task.0, why)
        }
    }
}

/// [`push`] for a core without a run queue: its executor is gone (the
/// task runs here instead), or it is the calling core, which spawns its
/// first task before any executor was set up here (it gets a queue).
///
/// A task pinned to `core` (a local task) cannot move: it is dropped
/// here, which loses it (it never runs again; its home count keeps the
/// future from being dropped on this core). Cannot happen today: only
/// [`retire`] takes a queue away, before any task ran on that core.
#[cold]
#[inline(never)]
fn push_elsewhere(core: usize, task: TaskRef, why: Why) -> usize {
    let here = machine::current_core();
    if here != core && task.header().pin == task::PIN_LOCAL {
        return 0;
    }
    ensure_queue(here);
    if here != core {
        task.header().home.store(here, Ordering::Relaxed);
    }
    push(here, task, why)
}

/// The next task of `core`'s queue, and whether its poll must go the
/// slow way ([`run_events`]: the policy wants run events, or timing or
/// tracing is on).
#[inline(always)]
fn pop(core: usize) -> Option<(Task, bool)> {
    let exec = &CORES[core];
    if exec.len.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mut q = exec.queue.lock();
    let (t, n, events) = if q.fifo {
        // Polls are counted by the FIFO itself (`Fifo::picked`).
        let fifo = q.rq.fifo_part();
        (fifo.pick(), fifo.len(), false)
    } else {
        let (t, n, events) = pop_slow(&mut q)?;
        exec.len.store(n, Ordering::SeqCst);
        drop(q);
        return misplaced_goes_home(core, t?).map(|t| (t, events));
    };
    exec.len.store(n, Ordering::SeqCst);
    Some((t?, events))
}

/// A task a policy (not the built-in FIFO) picked on `core`: `None` if
/// it must stay on another core (a local task, `block_on`'s main task)
/// and goes back there unpolled. Safe code can get it here: a `Task` is
/// `Send`, so an application's policy may keep one it was given on one
/// core and hand it out on another (`set_policy` takes any policy
/// object). The executor of `core` then finds its queue shorter and looks
/// again (it does not sleep while its length is not 0).
#[inline]
fn misplaced_goes_home(core: usize, t: Task) -> Option<Task> {
    let home = t.0.header().home.load(Ordering::Relaxed);
    if home == core || !t.stays_home() {
        if home != core {
            // A movable task handed over by a policy: it lives here now.
            t.0.header().home.store(core, Ordering::Relaxed);
        }
        return Some(t);
    }
    enqueue(t.0, home, Why::Moved);
    None
}

/// [`pop`] from a queue with another policy than FIFO, or none.
#[inline(never)]
fn pop_slow(q: &mut QueueSlot) -> Option<(Option<Task>, usize, bool)> {
    let events = q.events || metrics::instrumented();
    let rq = q.as_mut()?;
    // The inline FIFO counts its own picks (`Fifo::picked`).
    let counted = rq.is_fifo();
    let p = rq.policy();
    let t = p.pick();
    let n = p.len();
    if t.is_some() && !counted {
        q.counters.polls += 1;
    }
    Some((t, n, events))
}

/// Polls `task` (popped from `core`'s queue) and queues it again if it
/// was woken while it ran; `block_on`'s main task comes back unpolled.
#[inline(always)]
fn run_task(core: usize, task: Task, slow: bool) -> Option<Task> {
    if slow {
        return run_events(core, task);
    }
    // SAFETY: `core` indexed `CORES` (checked) when the task was popped.
    let polled = unsafe { task.0.poll_once(core) };
    if polled.finished_poll() {
        return None;
    }
    if polled == Polled::Main {
        return Some(task);
    }
    push(core, task.0, Why::Yielded);
    None
}

/// [`run_task`] with the policy's `running`/`stopped` calls, the poll's
/// cycles, the wake-to-run delay and trace events.
#[inline(never)]
fn run_events(core: usize, task: Task) -> Option<Task> {
    if task.is_main() {
        return Some(task);
    }
    let exec = &CORES[core];
    let start = machine::now();
    let id = task.0.header().id();
    let timing = metrics::instrumented();
    let queued_at = task.0.header().queued_at.load(Ordering::Relaxed);
    // 0: queued before timing was on.
    let delay = if queued_at == 0 { 0 } else { start.saturating_sub(queued_at) };
    if trace::enabled() {
        trace::record(start, id, Event::PollStart, delay);
    }
    {
        let mut q = exec.queue.lock();
        if timing && queued_at != 0 {
            q.counters.record_delay(delay);
        }
        if q.events
            && let Some(rq) = q.as_mut()
        {
            rq.policy().running(&task, start);
        }
    }
    // SAFETY: `core` indexed `CORES` (checked) when the task was popped.
    let polled = unsafe { task.0.poll_once(core) };
    let end = machine::now();
    let cycles = end.saturating_sub(start);
    let how = stop_of(polled);
    if trace::enabled() {
        trace::record(end, id, Event::PollEnd(how), cycles);
    }
    if polled == Polled::Requeue && timing {
        task.0.header().queued_at.store(end, Ordering::Relaxed);
    }
    let mut q = exec.queue.lock();
    q.counters.busy_cycles += cycles;
    if q.events
        && let Some(rq) = q.as_mut()
    {
        rq.policy().stopped(&task, cycles, how);
    }
    if polled == Polled::Requeue {
        match q.enqueue(task, Why::Yielded) {
            Ok(n) => exec.len.store(n, Ordering::SeqCst),
            Err(task) => {
                // Cannot happen (our own queue is open while we run):
                // the general path copes anyway.
                drop(q);
                push(core, task.0, Why::Yielded);
            }
        }
    }
    None
}

fn stop_of(polled: Polled) -> Stop {
    match polled {
        Polled::Blocked | Polled::Main => Stop::Blocked,
        Polled::Requeue => Stop::Yielded,
        Polled::Done => Stop::Done,
    }
}

/// Queues a woken (or new) task on its home core `home` (the caller read
/// it from the task's header) and makes sure that core notices.
#[inline]
pub(crate) fn enqueue(task: TaskRef, home: usize, why: Why) {
    let len = push(home, task, why);
    // The common case (a task queued on our own core's empty queue) needs
    // nothing more.
    if len >= 2 || home != machine::current_core() {
        notice(home, len);
    }
}

/// The rest of [`enqueue`], after `home`'s queue grew to `len`.
#[inline(never)]
fn notice(home: usize, len: usize) {
    if home != machine::current_core() {
        wake_core(home, false);
    }
    if len >= 2 && stealing() {
        // More work queued there than that core can start now: wake one
        // sleeping executor (not the home core) so that it can steal.
        wake_one_sleeper(home);
    }
}

/// Makes `core`'s executor look at its queue: bump its `wake_seq`; if it
/// sleeps (or `force`), wake it so the kernel re-evaluates at once.
pub(crate) fn wake_core(core: usize, force: bool) {
    CORES[core].wake_seq.fetch_add(1, Ordering::SeqCst);
    if force || SLEEPERS.load(Ordering::SeqCst) & bit(core) != 0 {
        post_notify();
    }
}

fn wake_one_sleeper(except: usize) {
    loop {
        let sleepers =
            SLEEPERS.load(Ordering::SeqCst) & ACTIVE.load(Ordering::SeqCst) & !bit(except);
        if sleepers == 0 {
            return;
        }
        let target = sleepers.trailing_zeros() as usize;
        // Claim it: only one waker wakes it.
        if SLEEPERS.fetch_and(!bit(target), Ordering::SeqCst) & bit(target) != 0 {
            wake_core(target, true);
            return;
        }
    }
}

/// Wakes this environment's sleeping executors at once (an asynchronous
/// call to ourselves: a direct system call, no ring involved).
fn post_notify() {
    let _ = machine::notify_self();
}

/// Spawns `fut` on the calling core (it may be stolen by another core's
/// executor later if stealing is on).
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn_with(0, 0, fut)
}

/// [`spawn`] with a priority (used by [`Priority`](super::Priority);
/// higher first).
pub fn spawn_with_priority<F>(priority: u8, fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn_with(priority, 0, fut)
}

/// [`spawn`] with a priority and the application's word.
fn spawn_with<F>(priority: u8, data: u64, fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let core = machine::current_core();
    // No queue here yet: `push` makes one.
    let (task, handle) = task::new_task(fut, core, priority);
    if data != 0 {
        task.header().data.store(data, Ordering::Relaxed);
    }
    // `enqueue` for a task whose home is the calling core.
    let len = push(core, task, Why::Spawned);
    if len >= 2 {
        notice(core, len);
    }
    handle
}

/// Spawns a future that need not be `Send` (holds an `Rc`, a `RefCell`
/// borrow across an `await`, ...) on the calling core, where it stays: it
/// is polled only by this core's executor (thieves skip it), a waker on
/// any other core queues it back here (waking this core's executor as for
/// any task), and its future is dropped here, when it completes. Its
/// output must be `Send`: the [`JoinHandle`] may be awaited anywhere.
///
/// A local task that never completes is never dropped (it stays
/// allocated until the environment ends; dropping it on whatever core
/// held its last waker is what must not happen). To stop one early,
/// make it complete: e.g. wrap it in `futures_util::future::abortable`
/// before spawning; the abort wakes it and its home core drops it.
///
/// Called outside any executor (before [`block_on`] on this core), the
/// task waits in this core's queue until its executor runs.
pub fn spawn_local<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: Send + 'static,
{
    Builder::new().spawn_local(fut)
}

/// Spawns with task attributes: `Builder::new().data(d).priority(p)`
/// then [`spawn`](Builder::spawn) or [`spawn_on`](Builder::spawn_on).
#[derive(Clone, Copy, Debug, Default)]
pub struct Builder {
    priority: u8,
    data: u64,
}

impl Builder {
    /// Priority 0, data 0.
    pub const fn new() -> Self {
        Builder { priority: 0, data: 0 }
    }

    /// The task's priority ([`Task::priority`]).
    pub const fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// The application's word for the task ([`Task::data`]: tickets for
    /// [`Stride`](super::Stride), a TSC deadline for [`Edf`](super::Edf)).
    pub const fn data(mut self, data: u64) -> Self {
        self.data = data;
        self
    }

    /// Spawns on the calling core.
    pub fn spawn<F>(self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        spawn_with(self.priority, self.data, fut)
    }

    /// [`spawn_local`] with these attributes.
    pub fn spawn_local<F>(self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        let core = machine::current_core();
        let (task, handle) = task::new_local_task(fut, core, self.priority);
        if self.data != 0 {
            task.header().data.store(self.data, Ordering::Relaxed);
        }
        let len = push(core, task, Why::Spawned);
        if len >= 2 {
            notice(core, len);
        }
        handle
    }

    /// Spawns on `core`'s executor, if there is one.
    pub fn spawn_on<F>(self, core: usize, fut: F) -> Result<JoinHandle<F::Output>, NoExecutor>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if core >= MAX_CORES || ACTIVE.load(Ordering::SeqCst) & bit(core) == 0 {
            return Err(NoExecutor(core));
        }
        let (task, handle) = task::new_task(fut, core, self.priority);
        task.header().data.store(self.data, Ordering::Relaxed);
        enqueue(task, core, Why::Spawned);
        Ok(handle)
    }
}

/// Sets the calling task's application word ([`Task::data`]; e.g. its
/// next deadline under [`Edf`](super::Edf)): policies see it the next
/// time the task is queued. Whether the caller is a task (polled by an
/// executor on this core).
pub fn set_task_data(data: u64) -> bool {
    task::with_current(|h| h.data.store(data, Ordering::Relaxed)).is_some()
}

/// The calling task's id and application word, if called from a task.
pub fn current_task() -> Option<(super::TaskId, u64)> {
    task::with_current(|h| (super::TaskId(h.id()), h.data.load(Ordering::Relaxed)))
}

/// The error of [`try_spawn_on`]: no executor runs on that core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoExecutor(pub usize);

/// Spawns `fut` on `core`'s executor (woken at once if it sleeps).
///
/// # Panics
/// If no executor was set up on `core` ([`try_spawn_on`] returns an
/// error instead).
pub fn spawn_on<F>(core: usize, fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match try_spawn_on(core, 0, fut) {
        Ok(h) => h,
        Err(NoExecutor(c)) => panic!("spawn_on: no executor on core {c}"),
    }
}

/// Spawns `fut` with `priority` on `core`'s executor, if there is one.
pub fn try_spawn_on<F>(
    core: usize,
    priority: u8,
    fut: F,
) -> Result<JoinHandle<F::Output>, NoExecutor>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if core >= MAX_CORES || ACTIVE.load(Ordering::SeqCst) & bit(core) == 0 {
        return Err(NoExecutor(core));
    }
    let (task, handle) = task::new_task(fut, core, priority);
    enqueue(task, core, Why::Spawned);
    Ok(handle)
}

/// Yields to the other runnable tasks of this executor once.
pub fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    core::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

/// Steals up to half of the most loaded other core's queue; whether
/// anything was taken.
fn try_steal(core: usize) -> bool {
    let active = ACTIVE.load(Ordering::SeqCst) & !bit(core);
    let victim = (0..MAX_CORES)
        .filter(|&c| active & bit(c) != 0)
        .max_by_key(|&c| CORES[c].len.load(Ordering::Relaxed));
    let Some(victim) = victim else { return false };
    let n = CORES[victim].len.load(Ordering::Relaxed);
    if n == 0 {
        return false;
    }
    let mut loot: Vec<Task> = Vec::new();
    {
        let exec = &CORES[victim];
        let mut q = exec.queue.lock();
        let Some(rq) = q.as_mut() else { return false };
        let p = rq.policy();
        let max = p.len().div_ceil(2);
        p.steal(max, &mut loot);
        // A policy may hand out more than asked, or a task that must stay
        // home (`block_on`'s main task, a local task): they go back.
        let mut i = 0;
        while i < loot.len() {
            if loot[i].stays_home() || i >= max {
                p.enqueue(loot.swap_remove(i), Why::Moved);
            } else {
                i += 1;
            }
        }
        exec.len.store(p.len(), Ordering::SeqCst);
    }
    if loot.is_empty() {
        return false;
    }
    STOLEN.fetch_add(loot.len() as u64, Ordering::Relaxed);
    STOLEN_BY[core].fetch_add(loot.len() as u64, Ordering::Relaxed);
    let exec = &CORES[core];
    let mut q = exec.queue.lock();
    let mut n = 0;
    for t in loot {
        t.0.header().home.store(core, Ordering::Relaxed);
        if trace::enabled() {
            trace::record(machine::now(), t.0.header().id(), Event::Stolen, victim as u64);
        }
        n = match q.enqueue(t, Why::Stolen) {
            Ok(n) => n,
            Err(t) => {
                // Cannot happen (a stealing core has a queue): run it here.
                drop(q);
                push(core, t.0, Why::Stolen);
                return true;
            }
        };
    }
    exec.len.store(n, Ordering::SeqCst);
    true
}

/// Fires due timers; whether any fired.
#[inline(always)]
fn fire_timers(core: usize) -> bool {
    let exec = &CORES[core];
    let now = machine::now();
    if now < exec.earliest.load(Ordering::Acquire) {
        return false;
    }
    let mut fired: Vec<Waker> = Vec::new();
    {
        let mut timers = exec.timers.lock();
        while let Some((_, _, w)) = timers.pop_expired(now) {
            fired.push(w);
        }
        exec.earliest.store(timers.next_deadline().unwrap_or(u64::MAX), Ordering::Release);
    }
    let any = !fired.is_empty();
    for w in fired {
        w.wake();
    }
    any
}

/// One round of the executor loop: up to the larger of the core's
/// [`Budgets`] polls, with ring submissions and completions and timers
/// looked at every `ring` (resp. `timers`) polls and at the end. Stops
/// early at `block_on`'s main task (stored in `main`, for the caller to
/// poll now). Whether anything ran, fired or completed.
fn tick(core: usize, ticks: &mut u64, main: &mut Option<Task>) -> bool {
    let exec = &CORES[core];
    let mut did;
    if !exec.custom_budgets.load(Ordering::Relaxed) {
        // The default budgets: the ring and the timers only at the end of
        // the tick (the hot loop has no other check).
        // `did` is worked out after the loop (fewer live values in it).
        let mut n = 0;
        while n < TICK_BUDGET {
            let Some((t, slow)) = pop(core) else { break };
            n += 1;
            if slow {
                if let Some(m) = run_events(core, t) {
                    *main = Some(m);
                    break;
                }
                continue;
            }
            // `run_task`'s fast half, written out so that each outcome
            // goes straight on with the loop.
            // SAFETY: `core` indexed `CORES` (checked) in `pop`.
            let polled = unsafe { t.0.poll_once(core) };
            if polled.finished_poll() {
                continue;
            }
            if polled == Polled::Main {
                *main = Some(t);
                break;
            }
            push(core, t.0, Why::Yielded);
        }
        did = n != 0;
    } else {
        let timers_every = exec.budget_timers.load(Ordering::Relaxed).max(1);
        let ring_every = exec.budget_ring.load(Ordering::Relaxed).max(1);
        (did, *main) = tick_budgeted(core, timers_every, ring_every);
    }
    did |= reactor::flush_and_reap(core);
    did |= fire_timers(core);
    *ticks += 1;
    if did && (*ticks).is_multiple_of(WATCH_RECHECK_TICKS) {
        exec.watch.lock().wake_all();
    }
    did
}

/// The polls of a [`tick`] with other than the default budgets: the
/// ring and the timers are also looked at every `ring_every` (resp.
/// `timers_every`) polls. Whether anything ran, and the main task if it
/// was popped.
#[inline(never)]
fn tick_budgeted(core: usize, timers_every: u32, ring_every: u32) -> (bool, Option<Task>) {
    let polls = timers_every.max(ring_every);
    // The next poll count at which to look at the ring or the timers.
    let mut check = timers_every.min(ring_every);
    let mut did = false;
    let mut n = 0;
    while n < polls {
        let Some((t, slow)) = pop(core) else { break };
        did = true;
        if let Some(m) = run_task(core, t, slow) {
            return (did, Some(m));
        }
        n += 1;
        if n == check && n < polls {
            if n.is_multiple_of(ring_every) {
                reap_out_of_line(core);
            }
            if n.is_multiple_of(timers_every) {
                fire_timers_out_of_line(core);
            }
            check = (n / ring_every + 1) * ring_every;
            check = check.min((n / timers_every + 1) * timers_every);
        }
    }
    (did, None)
}

/// [`reactor::flush_and_reap`] called from the budgeted loop (kept out of
/// line so that the one call at the end of [`tick`] is inlined there).
#[inline(never)]
fn reap_out_of_line(core: usize) {
    reactor::flush_and_reap(core);
}

/// [`fire_timers`] called from the budgeted loop (see [`reap_out_of_line`]).
#[inline(never)]
fn fire_timers_out_of_line(core: usize) {
    fire_timers(core);
}

/// The idle predicate of `core`: see the module documentation. `seq` is
/// the `wake_seq` snapshot; `ring_word` the ring's (cq_head | cq_tail)
/// word and its snapshot when operations are in flight; `notif` the
/// notification count to compare with when a task waits for one.
pub(crate) fn idle_predicate(
    seq_addr: u64,
    seq: u64,
    ring_word: Option<(u64, u64)>,
    notif: Option<u64>,
    deadline: Option<u64>,
    words: &[(u64, u64)],
    now: u64,
) -> Pred {
    use predicate::{R0, R1, R2};
    // r0 |= (word != value), 4 instructions per term (3 for the first).
    let mut p = Pred::new().load_user(R1, seq_addr).konst(R2, seq).ne(R0, R1, R2);
    let term_ne = |p: Pred, load: Pred, value: u64| {
        let mut p = p;
        for &i in load.insns() {
            p = p.push(i);
        }
        p.konst(R2, value).ne(R1, R1, R2).or(R0, R0, R1)
    };
    if let Some((addr, value)) = ring_word {
        p = term_ne(p, Pred::new().load_user(R1, addr), value);
    }
    if let Some(seen) = notif {
        p = term_ne(p, Pred::new().load_info(R1, predicate::NOTIFICATIONS_OFFSET), seen);
    }
    let room = (abi::predicate::MAX_INSNS - p.len() - 4) / 4;
    let mut deadline = deadline;
    if words.len() > room {
        // More watched words than fit: poll them every millisecond.
        let poll = now.saturating_add(machine::tsc_hz() / 1000);
        deadline = Some(deadline.map_or(poll, |d| d.min(poll)));
    }
    for &(addr, value) in words.iter().take(room) {
        p = term_ne(p, Pred::new().load_user(R1, addr), value);
    }
    if let Some(d) = deadline {
        p = p.konst(R1, d).tsc(R2).le(R1, R1, R2).or(R0, R0, R1);
    }
    p
}

/// Sleeps until something may have become runnable on `core`.
fn idle(core: usize) {
    if stealing() && try_steal(core) {
        return;
    }
    let exec = &CORES[core];
    let seq = exec.wake_seq.load(Ordering::SeqCst);
    SLEEPERS.fetch_or(bit(core), Ordering::SeqCst);
    let woken = || exec.len.load(Ordering::SeqCst) != 0;
    if !woken() {
        let notif_now = machine::notifications();
        let (notif, words, stale) = exec.watch.lock().idle_view(notif_now);
        let deadline = exec.timers.lock().next_deadline();
        let ring = reactor::idle_ring(core);
        let now = machine::now();
        let ring_word = match ring {
            reactor::RingIdle::Watch(addr, word) => Some((addr, word)),
            _ => None,
        };
        let ready = matches!(ring, reactor::RingIdle::Ready);
        if !stale && !ready && deadline.is_none_or(|d| d > now) {
            let p = idle_predicate(
                &exec.wake_seq as *const AtomicU64 as u64,
                seq,
                ring_word,
                notif,
                deadline,
                &words,
                now,
            );
            if let Err(e) = machine::sleep(&p) {
                crate::println!("libos: executor on core {core}: SleepOn failed: {e:?}");
                // Do not spin on a refused predicate: give the core away.
                let _ = crate::sys::yield_now();
            }
        }
    }
    SLEEPERS.fetch_and(!bit(core), Ordering::SeqCst);
    exec.watch.lock().wake_all();
}

/// Runs executor ticks on the calling core until `stop()` holds, sleeping
/// when idle.
pub(crate) fn run_loop(core: usize, mut stop: impl FnMut() -> bool) {
    let mut ticks = 0;
    while !stop() {
        let mut main = None;
        let did = tick(core, &mut ticks, &mut main);
        if let Some(main) = main {
            // No main future here (cannot happen: only `block_on` queues
            // one, on its own core): it goes back home.
            let home = main.0.header().home.load(Ordering::Relaxed);
            if home != core {
                push(home, main.0, Why::Moved);
            }
            continue;
        }
        if !did && !stop() {
            idle(core);
        }
    }
}

/// Runs `fut` to completion on the calling core, running this core's
/// executor (its spawned tasks, timers, ring completions) meanwhile.
/// Sets up the executor if there is none yet, so it works without
/// [`super::run`] too (then only this core has an executor).
///
/// The loop runs on the core's poll stack ([`super::catch`]), so that a
/// spawned task's panic comes back here and the loop goes on.
///
/// # Panics
/// When called from inside a task or another `block_on` on this core.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let core = ensure_executor();
    let exec = &CORES[core];
    assert!(
        !exec.looping.swap(true, Ordering::SeqCst),
        "block_on called inside a task or block_on (core {core})"
    );
    // The main future is a task in this core's queue like any other: the
    // policy decides when it runs; `tick` hands it back here when popped.
    let main = MainCell::new(core);
    let waker = Waker::from(main.clone());
    let mut fut = pin!(fut);
    push(core, main.clone(), Why::Spawned);
    let mut state = BlockOn::<F> {
        core,
        main: &*main,
        waker: &waker,
        // The pinned future, as a raw pointer: see `BlockOn`.
        // SAFETY: never moved out of (the body re-pins it in place).
        fut: unsafe { fut.as_mut().get_unchecked_mut() },
        out: None,
    };
    let ctx = (&raw mut state).cast::<()>();
    loop {
        // SAFETY: `block_on_body::<F>` takes a `*mut BlockOn<F>`, which
        // `ctx` is; it holds only raw pointers to this frame's values, which
        // outlive the call; this core runs no other loop (`looping`).
        match unsafe { super::catch::guarded(core, block_on_body::<F>, ctx) } {
            super::catch::Exit::Returned => break,
            super::catch::Exit::Panicked => super::catch::settle_caught(core),
        }
    }
    exec.looping.store(false, Ordering::SeqCst);
    match state.out.take() {
        Some(v) => v,
        None => unreachable!("block_on's loop returned without the output"),
    }
}

/// `block_on`'s loop state, handed to the poll stack as raw pointers
/// only: a task's panic abandons the loop's frames, and no reference they
/// held may be in force when `block_on` enters the loop again
/// (`super::catch`).
struct BlockOn<F: Future> {
    core: usize,
    main: *const MainCell,
    waker: *const Waker,
    /// Pinned: the body re-pins it in place for each poll.
    fut: *mut F,
    out: Option<F::Output>,
}

/// `block_on`'s loop, on the poll stack: returns when the main future is
/// done (its output in `out`).
///
/// # Safety
/// `ctx` is a `*mut BlockOn<F>` whose pointers are valid for the call.
unsafe extern "C" fn block_on_body<F: Future>(ctx: *mut ()) {
    let st = ctx.cast::<BlockOn<F>>();
    // SAFETY: the caller's promise; plain copies of the fields.
    let (core, main, waker, fut) = unsafe { ((*st).core, (*st).main, (*st).waker, (*st).fut) };
    let mut ticks = 0;
    loop {
        let mut popped = None;
        let did = tick(core, &mut ticks, &mut popped);
        if let Some(task) = popped {
            // SAFETY: valid for the call (the caller's promise); the
            // references live only for this poll of the main future, never
            // across a task's poll; the future is pinned where it is.
            let polled = unsafe {
                let mut cx = Context::from_waker(&*waker);
                poll_main(core, &*main, task, core::pin::Pin::new_unchecked(&mut *fut), &mut cx)
            };
            if let Some(v) = polled {
                // SAFETY: as above.
                unsafe { (*st).out = Some(v) };
                return;
            }
            // Its ring submissions go out with the next tick.
            continue;
        }
        if !did {
            idle(core);
        }
    }
}

/// Polls `block_on`'s main future (its task `task`, just popped), with
/// the same policy calls, counters and trace as [`run_events`]; its
/// output if it finished.
fn poll_main<F: Future>(
    core: usize,
    main: &MainCell,
    task: Task,
    fut: core::pin::Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Option<F::Output> {
    let exec = &CORES[core];
    let slow = exec.queue.lock().events || metrics::instrumented();
    let start = if slow { machine::now() } else { 0 };
    if slow {
        let queued_at = task.0.header().queued_at.load(Ordering::Relaxed);
        let delay = if queued_at == 0 { 0 } else { start.saturating_sub(queued_at) };
        if trace::enabled() {
            trace::record(start, task.0.header().id(), Event::PollStart, delay);
        }
        let mut q = exec.queue.lock();
        if metrics::instrumented() && queued_at != 0 {
            q.counters.record_delay(delay);
        }
        if q.events
            && let Some(rq) = q.as_mut()
        {
            rq.policy().running(&task, start);
        }
    }
    let (polled, out) = main.poll_main(core, fut, cx);
    if slow {
        let end = machine::now();
        let cycles = end.saturating_sub(start);
        let how = stop_of(polled);
        if trace::enabled() {
            trace::record(end, task.0.header().id(), Event::PollEnd(how), cycles);
        }
        let mut q = exec.queue.lock();
        q.counters.busy_cycles += cycles;
        if q.events
            && let Some(rq) = q.as_mut()
        {
            rq.policy().stopped(&task, cycles, how);
        }
    }
    if polled == Polled::Requeue {
        push(core, task.0, Why::Yielded);
    }
    out
}

/// The executor loop of a secondary core, forever (the environment ends
/// when the first vCPU's `main` returns).
///
/// The loop runs on the core's poll stack ([`super::catch`]): after a
/// task's caught panic it starts again on a fresh one.
pub(crate) fn serve() -> ! {
    let core = ensure_executor();
    CORES[core].looping.store(true, Ordering::SeqCst);
    loop {
        // SAFETY: `serve_body` ignores its argument; no other loop runs
        // on this core (`looping`).
        match unsafe { super::catch::guarded(core, serve_body, core::ptr::null_mut()) } {
            super::catch::Exit::Returned => {
                unreachable!("run_loop without a stop condition returned")
            }
            super::catch::Exit::Panicked => super::catch::settle_caught(core),
        }
    }
}

/// [`serve`]'s loop, on the poll stack.
extern "C" fn serve_body(_ctx: *mut ()) {
    run_loop(machine::current_core(), || false);
}

/// Whether no run-queue lock is held, waiting a little for each held one
/// (another core holds a queue lock only briefly; one held by a panicking
/// poll on this core would stay held for ever). For the panic handler.
#[cfg_attr(not(target_os = "none"), allow(dead_code, reason = "the panic handler's"))]
pub(crate) fn queue_locks_free() -> bool {
    CORES.iter().all(|c| {
        (0..100_000).any(|_| {
            let free = !c.queue.is_locked();
            if !free {
                core::hint::spin_loop();
            }
            free
        })
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Resets the global executor state between host tests (which take
    //! [`LOCK`] so they do not run at the same time).
    use super::*;

    pub static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    extern crate std;

    pub fn reset() {
        for c in CORES.iter() {
            let mut q = c.queue.lock();
            q.take();
            q.counters = Counters::new();
            drop(q);
            c.len.store(0, Ordering::SeqCst);
            c.looping.store(false, Ordering::SeqCst);
            *c.timers.lock() = TimerHeap::new();
            c.earliest.store(u64::MAX, Ordering::SeqCst);
        }
        ACTIVE.store(0, Ordering::SeqCst);
        SLEEPERS.store(0, Ordering::SeqCst);
        STEALING.store(true, Ordering::SeqCst);
        *POLICY.lock() = None;
        STOLEN.store(0, Ordering::SeqCst);
        for s in STOLEN_BY.iter() {
            s.store(0, Ordering::SeqCst);
        }
        for c in 0..MAX_CORES {
            set_budgets(c, Budgets::DEFAULT);
        }
        super::metrics::set_timing(false);
        super::machine::set_manual_clock(false);
        super::trace::disable();
    }

    /// Runs the executor loop on the calling thread (as `core`) until
    /// `stop()` holds.
    pub fn serve_until(core: usize, stop: impl FnMut() -> bool) {
        super::machine::set_test_core(core);
        ensure_queue(core);
        run_loop(core, stop);
    }
}
