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

use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::pin;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};

use abi::MAX_CORES;
use spin::{Mutex, MutexGuard};

use super::machine;
use super::policy::{Policy, PolicyKind, RunQueue};
use super::task::{self, JoinHandle, TaskRef};
use super::timer::TimerHeap;
use super::watch::WatchList;
use super::{reactor, slots::SlotTable};
use crate::predicate::{self, Pred};

/// Tasks polled per executor tick before timers, completions and watchers
/// are looked at again.
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
        }
    }
}

/// A core's run queue or none, like an `Option<RunQueue>` but with one
/// flag for the hot paths to test: `fifo` (open, and the plain FIFO
/// policy, whose part is used directly).
struct QueueSlot {
    open: bool,
    /// `open` and `rq.is_fifo()`.
    fifo: bool,
    /// Empty while `!open`.
    rq: RunQueue<TaskRef>,
}

impl QueueSlot {
    const fn none() -> Self {
        QueueSlot { open: false, fifo: false, rq: RunQueue::fifo() }
    }

    #[inline]
    fn as_mut(&mut self) -> Option<&mut RunQueue<TaskRef>> {
        if self.open { Some(&mut self.rq) } else { None }
    }

    fn is_none(&self) -> bool {
        !self.open
    }

    fn set(&mut self, rq: RunQueue<TaskRef>) {
        self.fifo = rq.is_fifo();
        self.rq = rq;
        self.open = true;
    }

    fn take(&mut self) -> Option<RunQueue<TaskRef>> {
        let open = core::mem::replace(&mut self.open, false);
        self.fifo = false;
        let rq = core::mem::replace(&mut self.rq, RunQueue::fifo());
        open.then_some(rq)
    }
}

pub(crate) static CORES: [CoreExec; MAX_CORES] = [const { CoreExec::new() }; MAX_CORES];
/// Bit `c`: core `c` has a run queue (an executor set up there).
static ACTIVE: AtomicU64 = AtomicU64::new(0);
/// Bit `c`: core `c`'s executor is (about to be) asleep in `SleepOn`.
static SLEEPERS: AtomicU64 = AtomicU64::new(0);
/// Whether idle executors steal from loaded ones.
static STEALING: AtomicBool = AtomicBool::new(true);
/// The policy new executors get.
static POLICY: AtomicUsize = AtomicUsize::new(0);
/// Tasks moved by stealing (for tests and statistics).
static STOLEN: AtomicU64 = AtomicU64::new(0);

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

/// The policy executors set up from now on use.
pub fn set_default_policy(kind: PolicyKind) {
    POLICY.store(kind as usize, Ordering::SeqCst);
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

fn new_policy() -> RunQueue<TaskRef> {
    if POLICY.load(Ordering::SeqCst) == PolicyKind::Priority as usize {
        RunQueue::new(PolicyKind::Priority)
    } else {
        RunQueue::new(PolicyKind::Fifo)
    }
}

/// Gives `core` a run queue (if it has none) and marks it active.
pub(crate) fn ensure_queue(core: usize) {
    let exec = &CORES[core];
    let mut q = exec.queue.lock();
    if q.is_none() {
        q.set(new_policy());
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
        while let Some(t) = q.pop() {
            t.header().home.store(here, Ordering::Relaxed);
            push(here, t);
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

/// Pushes `task` on `core`'s queue; returns the queue's new length.
#[inline(always)]
pub(crate) fn push(core: usize, task: TaskRef) -> usize {
    let exec = &CORES[core];
    let mut q = exec.queue.lock();
    if !q.fifo {
        return push_slow(q, core, task);
    }
    let fifo = q.rq.fifo_part();
    fifo.push(task);
    let n = fifo.len();
    exec.len.store(n, Ordering::SeqCst);
    n
}

/// [`push`] to a queue with another policy than FIFO, or none.
#[inline(never)]
fn push_slow(mut q: MutexGuard<'_, QueueSlot>, core: usize, task: TaskRef) -> usize {
    let Some(rq) = q.as_mut() else {
        drop(q);
        return push_elsewhere(core, task);
    };
    let n = rq.push_len(task);
    CORES[core].len.store(n, Ordering::SeqCst);
    n
}

/// [`push`] for a core without a run queue: its executor is gone (the
/// task runs here instead), or it is the calling core, which spawns its
/// first task before any executor was set up here (it gets a queue).
#[cold]
#[inline(never)]
fn push_elsewhere(core: usize, task: TaskRef) -> usize {
    let here = machine::current_core();
    ensure_queue(here);
    if here != core {
        task.header().home.store(here, Ordering::Relaxed);
    }
    push(here, task)
}

#[inline]
fn pop(core: usize) -> Option<TaskRef> {
    let exec = &CORES[core];
    if exec.len.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mut q = exec.queue.lock();
    let (t, n) = if q.fifo {
        let fifo = q.rq.fifo_part();
        (fifo.pop(), fifo.len())
    } else {
        pop_slow(&mut q)?
    };
    exec.len.store(n, Ordering::SeqCst);
    t
}

/// [`pop`] from a queue with another policy than FIFO, or none.
#[inline(never)]
fn pop_slow(q: &mut QueueSlot) -> Option<(Option<TaskRef>, usize)> {
    Some(q.as_mut()?.pop_len())
}

/// Queues a woken (or new) task on its home core `home` (the caller read
/// it from the task's header) and makes sure that core notices.
#[inline]
pub(crate) fn enqueue(task: TaskRef, home: usize) {
    let len = push(home, task);
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
    spawn_with_priority(0, fut)
}

/// [`spawn`] with a priority (used by [`PolicyKind::Priority`]; higher
/// first).
pub fn spawn_with_priority<F>(priority: u8, fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let core = machine::current_core();
    // No queue here yet: `push` makes one.
    let (task, handle) = task::new_task(fut, core, priority);
    // `enqueue` for a task whose home is the calling core.
    let len = push(core, task);
    if len >= 2 {
        notice(core, len);
    }
    handle
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
    enqueue(task, core);
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
    let mut loot = Vec::new();
    {
        let exec = &CORES[victim];
        let mut q = exec.queue.lock();
        let Some(q) = q.as_mut() else { return false };
        q.steal(q.len().div_ceil(2), &mut loot);
        exec.len.store(q.len(), Ordering::SeqCst);
    }
    if loot.is_empty() {
        return false;
    }
    STOLEN.fetch_add(loot.len() as u64, Ordering::Relaxed);
    let exec = &CORES[core];
    let mut q = exec.queue.lock();
    let q = q.as_mut().expect("the stealing core has a queue");
    for t in loot {
        t.header().home.store(core, Ordering::Relaxed);
        q.push(t);
    }
    exec.len.store(q.len(), Ordering::SeqCst);
    true
}

/// Fires due timers; whether any fired.
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

/// One round of the executor loop: up to [`TICK_BUDGET`] tasks, then
/// ring submissions and completions, timers. Whether
/// anything happened.
fn tick(core: usize, ticks: &mut u64) -> bool {
    let mut did = false;
    for _ in 0..TICK_BUDGET {
        let Some(t) = pop(core) else { break };
        t.run(core);
        did = true;
    }
    let exec = &CORES[core];
    did |= reactor::flush_and_reap(core);
    did |= fire_timers(core);
    *ticks += 1;
    if did && (*ticks).is_multiple_of(WATCH_RECHECK_TICKS) {
        exec.watch.lock().wake_all();
    }
    did
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

/// Sleeps until something may have become runnable on `core`. `main`: a
/// flag that also counts as work (`block_on`'s own future was woken).
fn idle(core: usize, main: Option<&AtomicBool>) {
    if stealing() && try_steal(core) {
        return;
    }
    let exec = &CORES[core];
    let seq = exec.wake_seq.load(Ordering::SeqCst);
    SLEEPERS.fetch_or(bit(core), Ordering::SeqCst);
    let woken =
        || exec.len.load(Ordering::SeqCst) != 0 || main.is_some_and(|m| m.load(Ordering::SeqCst));
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
pub(crate) fn run_loop(core: usize, main: Option<&AtomicBool>, mut stop: impl FnMut() -> bool) {
    let mut ticks = 0;
    while !stop() {
        if !tick(core, &mut ticks) && !stop() {
            idle(core, main);
        }
    }
}

/// The waker of `block_on`'s own future.
struct MainWaker {
    core: usize,
    woken: AtomicBool,
}

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if machine::current_core() != self.core {
            wake_core(self.core, false);
        }
    }
}

/// Runs `fut` to completion on the calling core, running this core's
/// executor (its spawned tasks, timers, ring completions) meanwhile.
/// Sets up the executor if there is none yet, so it works without
/// [`super::run`] too (then only this core has an executor).
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
    let flag = Arc::new(MainWaker { core, woken: AtomicBool::new(true) });
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let mut ticks = 0;
    let out = loop {
        if flag.woken.swap(false, Ordering::SeqCst)
            && let Poll::Ready(v) = fut.as_mut().poll(&mut cx)
        {
            break v;
        }
        // The main future's ring submissions go out with the tick.
        if !tick(core, &mut ticks) && !flag.woken.load(Ordering::SeqCst) {
            idle(core, Some(&flag.woken));
        }
    };
    exec.looping.store(false, Ordering::SeqCst);
    out
}

/// The executor loop of a secondary core, forever (the environment ends
/// when the first vCPU's `main` returns).
pub(crate) fn serve() -> ! {
    let core = ensure_executor();
    CORES[core].looping.store(true, Ordering::SeqCst);
    run_loop(core, None, || false);
    unreachable!("run_loop without a stop condition returned")
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
            c.queue.lock().take();
            c.len.store(0, Ordering::SeqCst);
            c.looping.store(false, Ordering::SeqCst);
            *c.timers.lock() = TimerHeap::new();
            c.earliest.store(u64::MAX, Ordering::SeqCst);
        }
        ACTIVE.store(0, Ordering::SeqCst);
        SLEEPERS.store(0, Ordering::SeqCst);
        STEALING.store(true, Ordering::SeqCst);
        POLICY.store(0, Ordering::SeqCst);
        STOLEN.store(0, Ordering::SeqCst);
    }

    /// Runs the executor loop on the calling thread (as `core`) until
    /// `stop()` holds.
    pub fn serve_until(core: usize, stop: impl FnMut() -> bool) {
        super::machine::set_test_core(core);
        ensure_queue(core);
        run_loop(core, None, stop);
    }
}
