//! Which runnable task an executor polls next: the open [`Policy`] trait
//! an application implements (or picks from the five shipped here:
//! [`Fifo`], [`Lifo`], [`Priority`], [`Stride`], [`Edf`]), and the
//! [`Task`] handle a policy holds.
//!
//! A policy is one executor's run queue plus its decisions. The executor
//! calls it, always under that core's queue lock (so a policy needs no
//! locking of its own and sees one call at a time):
//!
//! - [`enqueue`](Policy::enqueue) when a task becomes runnable, with
//!   [`Why`]: spawned, woken, yielded (woken while it ran, which is what
//!   `yield_now` does), stolen from another core, or moved here when the
//!   policy was replaced;
//! - [`pick`](Policy::pick) for the next task to poll;
//! - [`steal`](Policy::steal) when another core's idle executor takes
//!   work (give it what you would run last; an empty `out` is allowed);
//! - if [`wants_run_events`](Policy::wants_run_events) says so,
//!   [`running`](Policy::running) just before a poll and
//!   [`stopped`](Policy::stopped) just after it, with the TSC cycles the
//!   poll took and whether the task [`Stop`]ped by yielding, blocking or
//!   finishing. These cost two TSC reads and one more lock round per poll,
//!   so policies that do not need them (FIFO, LIFO, priority) say no.
//!
//! Every task has a stable [`TaskId`], the application's word
//! ([`Task::data`]: set at spawn with [`super::Builder::data`] and by the
//! task itself with [`super::set_task_data`]; [`Stride`] reads tickets
//! there, [`Edf`] an absolute TSC deadline), a priority ([`Task::priority`],
//! read by [`Priority`]) and a policy word ([`Task::sched`]) the policy may
//! use as it likes (stride keeps its pass there: it follows the task when
//! another core steals it).
//!
//! The executors give each core its own policy object
//! ([`super::RuntimeConfig::policy`] takes a function of the core, so cores
//! may differ; [`super::set_policy`] replaces one at run time). The
//! default, [`Fifo`], is held by the executor as a concrete type rather than
//! a `Box<dyn Policy>`: the same trait implementation, called without an
//! indirect call (the executor's hot path).
//!
//! `block_on`'s main future is a task like the others (id 0 is never
//! used; it has a fresh id): it goes through the policy when woken. The
//! executor never lets another core steal it (it polls the main future on
//! its own stack): a thief hands it back.
//!
//! The policies are plain data structures: the host tests drive them with
//! [`Task::placeholder`] tasks.

use alloc::boxed::Box;
use alloc::collections::{BinaryHeap, VecDeque};
use alloc::vec::Vec;
use core::cmp::{Ordering as CmpOrdering, Reverse};
use core::sync::atomic::Ordering;

use super::task::TaskRef;

/// A task's id: unique for the environment's lifetime (a 64-bit counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u64);

/// A runnable task, as a policy holds it. Dropping one without handing it
/// back to the executor (through [`Policy::pick`] or [`Policy::steal`])
/// loses the task: it never runs again (its `JoinHandle` never resolves).
pub struct Task(pub(crate) TaskRef);

impl Task {
    /// The task's id.
    #[inline]
    pub fn id(&self) -> TaskId {
        TaskId(self.0.header().id())
    }

    /// The application's word for this task (0 unless set).
    #[inline]
    pub fn data(&self) -> u64 {
        self.0.header().data.load(Ordering::Relaxed)
    }

    /// The priority it was spawned with (0 unless set; higher is more
    /// urgent under [`Priority`]).
    #[inline]
    pub fn priority(&self) -> u8 {
        self.0.header().priority
    }

    /// The policy's word for this task (0 at spawn).
    #[inline]
    pub fn sched(&self) -> u64 {
        self.0.header().sched.load(Ordering::Relaxed)
    }

    /// Sets the policy's word.
    #[inline]
    pub fn set_sched(&self, value: u64) {
        self.0.header().sched.store(value, Ordering::Relaxed);
    }

    /// Whether this is `block_on`'s main future (never migrated).
    #[inline]
    pub fn is_main(&self) -> bool {
        self.0.header().pin == super::task::PIN_MAIN
    }

    /// Whether this is a [`spawn_local`](super::spawn_local) task (a
    /// `!Send` future: never migrated).
    #[inline]
    pub fn is_local(&self) -> bool {
        self.0.header().pin == super::task::PIN_LOCAL
    }

    /// Whether the task must stay on its core: `block_on`'s main future
    /// or a local task. A thief given one by [`Policy::steal`] hands it
    /// back ([`Why::Moved`]).
    #[inline]
    pub fn stays_home(&self) -> bool {
        self.0.header().pin != super::task::PIN_NONE
    }

    /// A task with nothing to do (an empty future), with `data` and
    /// `priority`: for testing policies outside the runtime. If it ends up
    /// in a real run queue it runs and finishes at once.
    pub fn placeholder(data: u64, priority: u8) -> Task {
        let (t, h) = super::task::new_task(async {}, 0, priority);
        drop(h);
        t.header().data.store(data, Ordering::Relaxed);
        // Ids in creation order (the tests compare them).
        t.header().id();
        Task(t)
    }
}

impl core::fmt::Debug for Task {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id().0)
            .field("data", &self.data())
            .field("priority", &self.priority())
            .finish()
    }
}

/// Why a task became runnable (the argument of [`Policy::enqueue`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Just spawned.
    Spawned,
    /// Woken (by a waker) while it was not running.
    Woken,
    /// Woken while it ran (`yield_now`, or a wake during its poll): back
    /// in the queue right after its poll.
    Yielded,
    /// Taken from another core's queue by this core's idle executor.
    Stolen,
    /// Moved from the previous policy of this core ([`super::set_policy`]),
    /// or from a core whose executor could not start.
    Moved,
}

/// How a poll ended (the argument of [`Policy::stopped`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// It is runnable again (an [`Why::Yielded`] enqueue follows).
    Yielded,
    /// It waits for a waker.
    Blocked,
    /// Its future completed.
    Done,
}

/// An executor's run-queue policy (see the module documentation).
pub trait Policy: Send {
    /// A short name (for tables and traces).
    fn name(&self) -> &'static str {
        "custom"
    }
    /// Queues a runnable task.
    fn enqueue(&mut self, task: Task, why: Why);
    /// The next task to poll, if any is queued.
    fn pick(&mut self) -> Option<Task>;
    /// Number of queued tasks.
    fn len(&self) -> usize;
    /// Whether nothing is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Moves up to `max` tasks a thief should take (those this policy
    /// would run last) into `out`. The default gives none.
    fn steal(&mut self, max: usize, out: &mut Vec<Task>) {
        let _ = (max, out);
    }
    /// Whether [`running`](Self::running) and [`stopped`](Self::stopped)
    /// must be called (they cost two TSC reads and a lock per poll).
    /// Read once, when the executor takes the policy.
    fn wants_run_events(&self) -> bool {
        false
    }
    /// `task` is about to be polled (`now`: the TSC).
    fn running(&mut self, task: &Task, now: u64) {
        let _ = (task, now);
    }
    /// `task`'s poll took `cycles` TSC cycles and ended as `how`.
    fn stopped(&mut self, task: &Task, cycles: u64, how: Stop) {
        let _ = (task, cycles, how);
    }
}

/// First in, first out; thieves take the newest.
///
/// The executors' default, so its queue is built for the hot path: the
/// first [`Fifo::RING`] queued tasks sit in an inline ring indexed by two
/// free-running counters (a push and a pop are a few instructions, with
/// no wrap-around arithmetic and no bounds check), and only a longer
/// queue spills into a `VecDeque` behind it (out of line). The pop
/// counter is also the number of tasks ever picked, which is how the
/// executor counts polls without a counter of its own.
pub struct Fifo {
    /// `ring[i % RING]` for `head <= i < tail` are the oldest queued
    /// tasks, oldest first; the other slots are `None`.
    ring: [Option<Task>; Fifo::RING],
    /// Tasks ever popped from the ring.
    head: u64,
    /// Tasks ever pushed to the ring.
    tail: u64,
    /// How many tasks the ring may hold now: [`Fifo::RING`], or 0 while
    /// `spill` holds tasks (newer than the ring's, which must go first),
    /// so that a push tests one bound.
    room: u64,
    /// Tasks queued after the ring was full, oldest first.
    spill: VecDeque<Task>,
}

impl Fifo {
    /// Tasks held inline before the queue spills (a power of two).
    pub const RING: usize = 128;

    /// An empty queue.
    pub const fn new() -> Self {
        Fifo {
            ring: [const { None }; Fifo::RING],
            head: 0,
            tail: 0,
            room: Fifo::RING as u64,
            spill: VecDeque::new(),
        }
    }

    /// Tasks picked from this queue so far.
    #[inline]
    pub(crate) fn picked(&self) -> u64 {
        self.head
    }

    /// [`Policy::enqueue`], and the new [`Policy::len`] (the executor's
    /// push: no spill to count on the ring path, which needs it empty).
    #[inline]
    pub(crate) fn push_len(&mut self, task: Task) -> usize {
        let i = self.tail;
        let n = i - self.head;
        if n >= self.room {
            self.push_spill(task);
            return self.len();
        }
        // The slot is empty (outside head..tail): nothing to drop.
        core::mem::forget(self.slot(i).replace(task));
        self.tail = i + 1;
        n as usize + 1
    }

    #[inline(always)]
    fn slot(&mut self, i: u64) -> &mut Option<Task> {
        // In bounds by construction (RING is a power of two): no check.
        &mut self.ring[(i as usize) & (Fifo::RING - 1)]
    }

    /// [`Policy::enqueue`] when the ring is full or has spilled.
    #[cold]
    #[inline(never)]
    fn push_spill(&mut self, task: Task) {
        self.room = 0;
        self.spill.push_back(task);
    }

    /// [`Policy::pick`] with the ring empty: refill it from the spill.
    #[inline(never)]
    fn refill(&mut self) -> Option<Task> {
        let first = self.spill.pop_front()?;
        // `head` counts picks: the one returned now counts as one.
        self.head += 1;
        self.tail = self.head;
        while (self.tail - self.head) < Fifo::RING as u64 {
            let Some(t) = self.spill.pop_front() else { break };
            let i = self.tail;
            *self.slot(i) = Some(t);
            self.tail += 1;
        }
        if self.spill.is_empty() {
            self.room = Fifo::RING as u64;
        }
        Some(first)
    }
}

impl Default for Fifo {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }
    #[inline]
    fn enqueue(&mut self, task: Task, _why: Why) {
        if self.tail - self.head >= self.room {
            return self.push_spill(task);
        }
        let i = self.tail;
        // The slot is empty (outside head..tail): nothing to drop.
        core::mem::forget(self.slot(i).replace(task));
        self.tail = i + 1;
    }
    #[inline]
    fn pick(&mut self) -> Option<Task> {
        let i = self.head;
        if i == self.tail {
            return self.refill();
        }
        self.head = i + 1;
        self.slot(i).take()
    }
    #[inline]
    fn len(&self) -> usize {
        (self.tail - self.head) as usize + self.spill.len()
    }
    fn steal(&mut self, max: usize, out: &mut Vec<Task>) {
        for _ in 0..max {
            // The newest first: the spill's back, then the ring's.
            if let Some(t) = self.spill.pop_back() {
                out.push(t);
                continue;
            }
            if self.tail == self.head {
                break;
            }
            self.tail -= 1;
            let i = self.tail;
            if let Some(t) = self.slot(i).take() {
                out.push(t);
            }
        }
        if self.spill.is_empty() {
            self.room = Fifo::RING as u64;
        }
    }
}

/// Last in, first out (newest runnable first: good cache locality, unfair
/// under load); thieves take the oldest.
#[derive(Default)]
pub struct Lifo {
    queue: VecDeque<Task>,
}

impl Lifo {
    /// An empty stack.
    pub const fn new() -> Self {
        Lifo { queue: VecDeque::new() }
    }
}

impl Policy for Lifo {
    fn name(&self) -> &'static str {
        "lifo"
    }
    fn enqueue(&mut self, task: Task, _why: Why) {
        self.queue.push_back(task);
    }
    fn pick(&mut self) -> Option<Task> {
        self.queue.pop_back()
    }
    fn len(&self) -> usize {
        self.queue.len()
    }
    fn steal(&mut self, max: usize, out: &mut Vec<Task>) {
        for _ in 0..max {
            match self.queue.pop_front() {
                Some(t) => out.push(t),
                None => break,
            }
        }
    }
}

/// Number of levels [`Priority`] distinguishes (priorities above are
/// treated as the highest level).
pub const PRIORITY_LEVELS: usize = 8;

/// Strict priorities ([`Task::priority`]): the highest non-empty level
/// runs first, FIFO within a level. Low levels can starve: that is what
/// strict priority means.
pub struct Priority {
    levels: [VecDeque<Task>; PRIORITY_LEVELS],
    len: usize,
}

impl Priority {
    /// An empty queue.
    pub const fn new() -> Self {
        Priority { levels: [const { VecDeque::new() }; PRIORITY_LEVELS], len: 0 }
    }
}

impl Default for Priority {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy for Priority {
    fn name(&self) -> &'static str {
        "priority"
    }
    fn enqueue(&mut self, task: Task, _why: Why) {
        let level = usize::from(task.priority()).min(PRIORITY_LEVELS - 1);
        self.levels[level].push_back(task);
        self.len += 1;
    }
    fn pick(&mut self) -> Option<Task> {
        let task = self.levels.iter_mut().rev().find_map(|q| q.pop_front())?;
        self.len -= 1;
        Some(task)
    }
    fn len(&self) -> usize {
        self.len
    }
    fn steal(&mut self, max: usize, out: &mut Vec<Task>) {
        // Thieves take the lowest priorities, newest first.
        let mut taken = 0;
        for q in self.levels.iter_mut() {
            while taken < max {
                match q.pop_back() {
                    Some(t) => {
                        out.push(t);
                        taken += 1;
                        self.len -= 1;
                    }
                    None => break,
                }
            }
        }
    }
}

/// A queued task with its sort key (smallest first), ties broken by
/// arrival order (`seq`), so equal keys run FIFO.
struct Keyed {
    key: u64,
    seq: u64,
    task: Task,
}

impl PartialEq for Keyed {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.seq) == (other.key, other.seq)
    }
}
impl Eq for Keyed {}
impl PartialOrd for Keyed {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Keyed {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.key, self.seq).cmp(&(other.key, other.seq))
    }
}

/// A min-heap of [`Keyed`] tasks (the shared part of [`Stride`] and
/// [`Edf`]).
#[derive(Default)]
struct KeyedHeap {
    heap: BinaryHeap<Reverse<Keyed>>,
    seq: u64,
}

impl KeyedHeap {
    fn push(&mut self, key: u64, task: Task) {
        self.seq += 1;
        self.heap.push(Reverse(Keyed { key, seq: self.seq, task }));
    }
    fn pop(&mut self) -> Option<(u64, Task)> {
        self.heap.pop().map(|Reverse(k)| (k.key, k.task))
    }
    /// Up to `max` tasks with the largest keys (newest first on ties).
    fn steal_largest(&mut self, max: usize, out: &mut Vec<Task>) {
        if max == 0 || self.heap.is_empty() {
            return;
        }
        let mut all: Vec<Keyed> =
            core::mem::take(&mut self.heap).into_iter().map(|r| r.0).collect();
        all.sort_unstable();
        let keep = all.len().saturating_sub(max);
        for k in all.drain(keep..).rev() {
            out.push(k.task);
        }
        self.heap = all.into_iter().map(Reverse).collect();
    }
}

/// Pass units a task with one ticket gains per TSC cycle of running,
/// times 2^16 (so that one cycle at up to 2^16 tickets still advances).
const STRIDE_SCALE: u128 = 1 << 16;

/// Stride scheduling (proportional share by CPU time): a task's tickets
/// are [`Task::data`] (0 counts as 1); the task with the smallest *pass*
/// runs next, and a poll of `c` cycles advances its pass by
/// `c * 2^16 / tickets`. So over time each always-runnable task gets CPU
/// time in proportion to its tickets. A task that blocked or is new
/// starts no earlier than the current virtual time (the pass of the last
/// task picked): sleeping banks no credit. The pass lives in
/// [`Task::sched`] and follows a stolen task.
#[derive(Default)]
pub struct Stride {
    heap: KeyedHeap,
    /// The pass of the last task picked (monotonic).
    vtime: u64,
}

impl Stride {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pass a poll of `cycles` adds for `tickets`.
    pub fn stride(cycles: u64, tickets: u64) -> u64 {
        let t = u128::from(tickets.max(1));
        u64::try_from(u128::from(cycles) * STRIDE_SCALE / t).unwrap_or(u64::MAX)
    }
}

impl Policy for Stride {
    fn name(&self) -> &'static str {
        "stride"
    }
    fn enqueue(&mut self, task: Task, why: Why) {
        let mut pass = task.sched();
        if matches!(why, Why::Spawned | Why::Woken | Why::Stolen | Why::Moved) {
            pass = pass.max(self.vtime);
            task.set_sched(pass);
        }
        self.heap.push(pass, task);
    }
    fn pick(&mut self) -> Option<Task> {
        let (pass, task) = self.heap.pop()?;
        self.vtime = self.vtime.max(pass);
        Some(task)
    }
    fn len(&self) -> usize {
        self.heap.heap.len()
    }
    fn steal(&mut self, max: usize, out: &mut Vec<Task>) {
        self.heap.steal_largest(max, out);
    }
    fn wants_run_events(&self) -> bool {
        true
    }
    fn stopped(&mut self, task: &Task, cycles: u64, _how: Stop) {
        task.set_sched(task.sched().saturating_add(Self::stride(cycles, task.data())));
    }
}

/// Earliest deadline first: the deadline is [`Task::data`], an absolute
/// TSC value, read each time the task is queued (a periodic task sets
/// its next deadline with [`super::set_task_data`] before it sleeps).
/// 0 means no deadline: such tasks run after every task with one, FIFO
/// among themselves. Ties run in arrival order. Thieves take the latest
/// deadlines.
#[derive(Default)]
pub struct Edf {
    heap: KeyedHeap,
}

impl Edf {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Policy for Edf {
    fn name(&self) -> &'static str {
        "edf"
    }
    fn enqueue(&mut self, task: Task, _why: Why) {
        let d = task.data();
        self.heap.push(if d == 0 { u64::MAX } else { d }, task);
    }
    fn pick(&mut self) -> Option<Task> {
        self.heap.pop().map(|(_, t)| t)
    }
    fn len(&self) -> usize {
        self.heap.heap.len()
    }
    fn steal(&mut self, max: usize, out: &mut Vec<Task>) {
        self.heap.steal_largest(max, out);
    }
}

/// A core's run queue: the [`Fifo`] fast path (held directly: no
/// indirect calls) unless another policy is plugged in behind the
/// [`Policy`] trait object. Also the core's counters, kept under the same
/// lock (see [`super::metrics`]).
pub(crate) struct RunQueue {
    fifo: Fifo,
    /// `Some`: this policy is used instead of `fifo` (which stays empty).
    custom: Option<Box<dyn Policy>>,
}

impl RunQueue {
    /// An empty [`Fifo`] queue.
    pub(crate) const fn fifo() -> Self {
        RunQueue { fifo: Fifo::new(), custom: None }
    }

    /// An empty queue run by `policy`.
    pub(crate) fn with_policy(policy: Box<dyn Policy>) -> Self {
        RunQueue { fifo: Fifo::new(), custom: Some(policy) }
    }

    /// The [`Fifo`] part: the queue itself when no other policy is
    /// plugged in (else unused and empty). The executors' fast path.
    #[inline]
    pub(crate) fn fifo_part(&mut self) -> &mut Fifo {
        &mut self.fifo
    }

    /// Whether the queue is the plain [`Fifo`] (no other policy).
    pub(crate) fn is_fifo(&self) -> bool {
        self.custom.is_none()
    }

    /// The policy in use.
    #[inline]
    pub(crate) fn policy(&mut self) -> &mut dyn Policy {
        match &mut self.custom {
            None => &mut self.fifo,
            Some(p) => &mut **p,
        }
    }

    /// The policy in use (shared).
    pub(crate) fn policy_ref(&self) -> &dyn Policy {
        match &self.custom {
            None => &self.fifo,
            Some(p) => &**p,
        }
    }

    /// The policy, boxed (the inline FIFO is boxed with its tasks).
    pub(crate) fn into_policy(self) -> Box<dyn Policy> {
        match self.custom {
            None => Box::new(self.fifo),
            Some(p) => p,
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    fn tasks(n: usize, f: impl Fn(usize) -> (u64, u8)) -> Vec<Task> {
        (0..n)
            .map(|i| {
                let (d, p) = f(i);
                Task::placeholder(d, p)
            })
            .collect()
    }

    fn ids(ts: &[Task]) -> Vec<u64> {
        ts.iter().map(|t| t.id().0).collect()
    }

    fn drain(p: &mut dyn Policy) -> Vec<Task> {
        core::iter::from_fn(|| p.pick()).collect()
    }

    #[test]
    fn fifo_runs_in_order_and_thieves_take_the_newest() {
        let ts = tasks(6, |_| (0, 0));
        let want = ids(&ts);
        let mut q = Fifo::new();
        for t in ts {
            q.enqueue(t, Why::Spawned);
        }
        assert_eq!(q.pick().map(|t| t.id().0), Some(want[0]));
        let mut out = Vec::new();
        q.steal(2, &mut out);
        assert_eq!(ids(&out), vec![want[5], want[4]]);
        assert_eq!(q.len(), 3);
        assert_eq!(ids(&drain(&mut q)), want[1..4].to_vec());
    }

    #[test]
    fn lifo_runs_newest_first_and_thieves_take_the_oldest() {
        let ts = tasks(5, |_| (0, 0));
        let want = ids(&ts);
        let mut q = Lifo::new();
        for t in ts {
            q.enqueue(t, Why::Spawned);
        }
        let mut out = Vec::new();
        q.steal(2, &mut out);
        assert_eq!(ids(&out), vec![want[0], want[1]]);
        assert_eq!(ids(&drain(&mut q)), vec![want[4], want[3], want[2]]);
    }

    #[test]
    fn priority_runs_highest_first_fifo_within_a_level() {
        let ts = tasks(6, |i| (0, [1, 3, 1, 9, 3, 0][i]));
        let want = ids(&ts);
        let mut q = Priority::new();
        for t in ts {
            q.enqueue(t, Why::Woken);
        }
        // 9 (clamped to the top level) first, then 3s, 1s, 0.
        let got = ids(&drain(&mut q));
        assert_eq!(got, vec![want[3], want[1], want[4], want[0], want[2], want[5]]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn edf_runs_earliest_deadline_first_and_no_deadline_last() {
        let ts = tasks(5, |i| ([50, 0, 10, 50, 30][i], 0));
        let want = ids(&ts);
        let mut q = Edf::new();
        for t in ts {
            q.enqueue(t, Why::Spawned);
        }
        let mut out = Vec::new();
        q.steal(1, &mut out);
        assert_eq!(ids(&out), vec![want[1]], "the thief takes the task without a deadline");
        assert_eq!(ids(&drain(&mut q)), vec![want[2], want[4], want[0], want[3]]);
    }

    /// Runs `rounds` picks of always-runnable tasks, each poll `cycles`
    /// long; returns the CPU each got.
    fn simulate(p: &mut dyn Policy, ts: Vec<Task>, rounds: usize, cycles: u64) -> Vec<u64> {
        let want = ids(&ts);
        let mut got = vec![0u64; ts.len()];
        for t in ts {
            p.enqueue(t, Why::Spawned);
        }
        for _ in 0..rounds {
            let t = p.pick().expect("always runnable");
            p.running(&t, 0);
            p.stopped(&t, cycles, Stop::Yielded);
            let i = want.iter().position(|&id| id == t.id().0).unwrap();
            got[i] += cycles;
            p.enqueue(t, Why::Yielded);
        }
        got
    }

    #[test]
    fn stride_shares_follow_tickets() {
        let mut q = Stride::new();
        let got = simulate(&mut q, tasks(3, |i| ([1, 2, 5][i], 0)), 8000, 1000);
        let total: u64 = got.iter().sum();
        for (share, tickets) in got.iter().zip([1u64, 2, 5]) {
            let want = total as f64 * tickets as f64 / 8.0;
            assert!((*share as f64 - want).abs() / want < 0.01, "{got:?}");
        }
    }

    #[test]
    fn stride_gives_a_woken_sleeper_no_banked_credit() {
        let mut q = Stride::new();
        let ts = tasks(2, |_| (1, 0));
        let sleeper = ts[1].id();
        let mut it = ts.into_iter();
        let busy = it.next().unwrap();
        let late = it.next().unwrap();
        q.enqueue(busy, Why::Spawned);
        for _ in 0..100 {
            let t = q.pick().unwrap();
            q.stopped(&t, 1000, Stop::Yielded);
            q.enqueue(t, Why::Yielded);
        }
        q.enqueue(late, Why::Woken);
        // The newcomer starts at the current virtual time: the two now
        // alternate instead of the newcomer running 100 times in a row.
        let mut runs = Vec::new();
        for _ in 0..6 {
            let t = q.pick().unwrap();
            runs.push(t.id() == sleeper);
            q.stopped(&t, 1000, Stop::Yielded);
            q.enqueue(t, Why::Yielded);
        }
        assert!(runs.iter().filter(|&&s| s).count() <= 4, "{runs:?}");
        assert!(runs.iter().filter(|&&s| !s).count() >= 2, "{runs:?}");
    }

    fn all_policies() -> Vec<Box<dyn Policy>> {
        vec![
            Box::new(Fifo::new()),
            Box::new(Lifo::new()),
            Box::new(Priority::new()),
            Box::new(Stride::new()),
            Box::new(Edf::new()),
        ]
    }

    proptest::proptest! {
        /// Whatever the sequence of enqueues, picks, steals and run events,
        /// every policy gives back each task exactly once.
        #[test]
        fn no_policy_loses_or_duplicates(
            ops in proptest::collection::vec((0u8..4, 0u8..10, 0u64..100), 0..200)
        ) {
            for mut q in all_policies() {
                let mut pushed = Vec::new();
                let mut got = Vec::new();
                for &(op, p, d) in &ops {
                    match op {
                        0 => {
                            let t = Task::placeholder(d, p);
                            pushed.push(t.id().0);
                            q.enqueue(t, Why::Woken);
                        }
                        1 => {
                            if let Some(t) = q.pick() {
                                q.running(&t, 0);
                                q.stopped(&t, d, Stop::Blocked);
                                got.push(t.id().0);
                            }
                        }
                        2 => {
                            let mut out = Vec::new();
                            q.steal(usize::from(p), &mut out);
                            proptest::prop_assert!(out.len() <= usize::from(p));
                            got.extend(ids(&out));
                        }
                        _ => {
                            // A yield: picked, then straight back.
                            if let Some(t) = q.pick() {
                                q.stopped(&t, d, Stop::Yielded);
                                q.enqueue(t, Why::Yielded);
                            }
                        }
                    }
                    proptest::prop_assert_eq!(q.len() + got.len(), pushed.len(), "{}", q.name());
                }
                got.extend(ids(&drain(&mut *q)));
                got.sort_unstable();
                pushed.sort_unstable();
                proptest::prop_assert_eq!(&got, &pushed, "{}", q.name());
            }
        }

        /// EDF: every pick has the smallest deadline of what is queued.
        #[test]
        /// The FIFO's inline ring and its spill behave as one deque
        /// (pushes at the back, picks at the front, steals from the back),
        /// across the ring's capacity, and `picked` counts the picks.
        #[test]
        fn fifo_ring_and_spill_match_a_deque(
            ops in proptest::collection::vec((0u8..4, 1usize..300), 1..40),
        ) {
            let mut q = Fifo::new();
            let mut model: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
            let mut picks = 0u64;
            for (op, n) in ops {
                match op {
                    0 => {
                        for t in tasks(n, |_| (0, 0)) {
                            model.push_back(t.id().0);
                            q.enqueue(t, Why::Woken);
                        }
                    }
                    1 => {
                        for t in tasks(n, |_| (0, 0)) {
                            model.push_back(t.id().0);
                            proptest::prop_assert_eq!(q.push_len(t), model.len());
                        }
                    }
                    2 => {
                        for _ in 0..n {
                            let got = q.pick().map(|t| t.id().0);
                            if got.is_some() {
                                picks += 1;
                            }
                            proptest::prop_assert_eq!(got, model.pop_front());
                        }
                    }
                    _ => {
                        let mut out = Vec::new();
                        q.steal(n, &mut out);
                        let want: Vec<u64> =
                            (0..n).map_while(|_| model.pop_back()).collect();
                        proptest::prop_assert_eq!(ids(&out), want);
                    }
                }
                proptest::prop_assert_eq!(q.len(), model.len());
                proptest::prop_assert_eq!(q.picked(), picks);
            }
            let rest = ids(&drain(&mut q));
            proptest::prop_assert_eq!(rest, Vec::from(model));
        }

        fn edf_picks_the_minimum(ds in proptest::collection::vec(0u64..1000, 1..60)) {
            let mut q = Edf::new();
            for &d in &ds {
                q.enqueue(Task::placeholder(d, 0), Why::Woken);
            }
            let key = |d: u64| if d == 0 { u64::MAX } else { d };
            let picked: Vec<u64> = drain(&mut q).iter().map(|t| key(t.data())).collect();
            let mut sorted: Vec<u64> = ds.iter().map(|&d| key(d)).collect();
            sorted.sort_unstable();
            proptest::prop_assert_eq!(picked, sorted);
        }

        /// Priority: picks never go up in priority (nothing is pushed
        /// meanwhile) and are FIFO within a level.
        #[test]
        fn priority_order(ps in proptest::collection::vec(0u8..8, 1..60)) {
            let mut q = Priority::new();
            for &p in &ps {
                q.enqueue(Task::placeholder(0, p), Why::Woken);
            }
            let got = drain(&mut q);
            for w in got.windows(2) {
                proptest::prop_assert!(w[0].priority() > w[1].priority()
                    || (w[0].priority() == w[1].priority() && w[0].id() < w[1].id()));
            }
        }
    }
}
