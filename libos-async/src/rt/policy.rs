//! Which runnable task an executor polls next: the [`Policy`] trait and
//! the two policies shipped, [`Fifo`] and [`Priority`].
//!
//! A policy is a run queue: the executor of a core pushes tasks that
//! became runnable and pops the next one to poll; another core's executor
//! may [`steal`](Policy::steal) from it when stealing is on. Policies are
//! plain data structures with no knowledge of cores or wakers (the host
//! tests drive them directly); each core's policy sits behind that core's
//! queue lock in [`super::exec`], wrapped in a [`RunQueue`]: the default
//! [`Fifo`] is held directly (its calls inline into the executor's hot
//! path), any other policy as a `Box<dyn Policy>`.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// What a policy may ask of a queued item.
pub trait Prioritized {
    /// The item's priority: higher runs first under [`Priority`];
    /// [`Fifo`] ignores it.
    fn priority(&self) -> u8;
}

/// A run queue with a selection policy.
pub trait Policy<T>: Send {
    /// Queues a runnable item.
    fn push(&mut self, item: T);
    /// The next item to run.
    fn pop(&mut self) -> Option<T>;
    /// Number of queued items.
    fn len(&self) -> usize;
    /// Whether nothing is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Moves up to `max` items a thief should take (those this policy
    /// would run last) into `out`.
    fn steal(&mut self, max: usize, out: &mut Vec<T>);
}

/// First in, first out.
pub struct Fifo<T> {
    queue: VecDeque<T>,
}

impl<T> Fifo<T> {
    /// An empty queue.
    pub const fn new() -> Self {
        Fifo { queue: VecDeque::new() }
    }
}

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send> Policy<T> for Fifo<T> {
    #[inline]
    fn push(&mut self, item: T) {
        self.queue.push_back(item);
    }
    #[inline]
    fn pop(&mut self) -> Option<T> {
        self.queue.pop_front()
    }
    #[inline]
    fn len(&self) -> usize {
        self.queue.len()
    }
    fn steal(&mut self, max: usize, out: &mut Vec<T>) {
        for _ in 0..max {
            match self.queue.pop_back() {
                Some(t) => out.push(t),
                None => break,
            }
        }
    }
}

/// Number of levels [`Priority`] distinguishes (priorities above are
/// treated as the highest level).
pub const PRIORITY_LEVELS: usize = 8;

/// Strict priorities: the highest non-empty level runs first, FIFO within
/// a level. Low levels can starve: that is what strict priority means.
pub struct Priority<T> {
    levels: [VecDeque<T>; PRIORITY_LEVELS],
    len: usize,
}

impl<T> Priority<T> {
    /// An empty queue.
    pub const fn new() -> Self {
        Priority { levels: [const { VecDeque::new() }; PRIORITY_LEVELS], len: 0 }
    }
}

impl<T> Default for Priority<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Prioritized + Send> Policy<T> for Priority<T> {
    fn push(&mut self, item: T) {
        let level = usize::from(item.priority()).min(PRIORITY_LEVELS - 1);
        self.levels[level].push_back(item);
        self.len += 1;
    }
    fn pop(&mut self) -> Option<T> {
        let item = self.levels.iter_mut().rev().find_map(|q| q.pop_front())?;
        self.len -= 1;
        Some(item)
    }
    fn len(&self) -> usize {
        self.len
    }
    fn steal(&mut self, max: usize, out: &mut Vec<T>) {
        // Thieves take the lowest priorities, newest first.
        for q in self.levels.iter_mut() {
            while out.len() < max {
                match q.pop_back() {
                    Some(t) => {
                        out.push(t);
                        self.len -= 1;
                    }
                    None => break,
                }
            }
        }
    }
}

/// A core's run queue: the [`Fifo`] fast path (held directly: no
/// indirect calls) unless another policy is plugged in behind the
/// [`Policy`] trait object.
pub struct RunQueue<T> {
    fifo: Fifo<T>,
    /// `Some`: this policy is used instead of `fifo` (which stays empty).
    custom: Option<Box<dyn Policy<T>>>,
}

impl<T: Prioritized + Send + 'static> RunQueue<T> {
    /// An empty queue of the policy `kind`.
    pub fn new(kind: PolicyKind) -> Self {
        match kind {
            PolicyKind::Fifo => RunQueue { fifo: Fifo::new(), custom: None },
            PolicyKind::Priority => Self::with_policy(Box::new(Priority::new())),
        }
    }
}

impl<T: Send> RunQueue<T> {
    /// An empty [`Fifo`] queue.
    pub const fn fifo() -> Self {
        RunQueue { fifo: Fifo::new(), custom: None }
    }

    /// An empty queue run by `policy`.
    pub fn with_policy(policy: Box<dyn Policy<T>>) -> Self {
        RunQueue { fifo: Fifo::new(), custom: Some(policy) }
    }

    /// The [`Fifo`] part: the queue itself when no other policy is
    /// plugged in (else unused and empty). The executors' fast path.
    #[inline]
    pub fn fifo_part(&mut self) -> &mut Fifo<T> {
        &mut self.fifo
    }

    /// Whether the queue is the plain [`Fifo`] (no other policy).
    pub fn is_fifo(&self) -> bool {
        self.custom.is_none()
    }

    /// [`Policy::push`], then the new length (one dispatch for both).
    #[inline]
    pub fn push_len(&mut self, item: T) -> usize {
        match &mut self.custom {
            None => {
                self.fifo.push(item);
                self.fifo.len()
            }
            Some(q) => {
                q.push(item);
                q.len()
            }
        }
    }

    /// [`Policy::pop`], and the length left (one dispatch for both).
    #[inline]
    pub fn pop_len(&mut self) -> (Option<T>, usize) {
        match &mut self.custom {
            None => (self.fifo.pop(), self.fifo.len()),
            Some(q) => (q.pop(), q.len()),
        }
    }
}

impl<T: Send> Policy<T> for RunQueue<T> {
    #[inline]
    fn push(&mut self, item: T) {
        match &mut self.custom {
            None => self.fifo.push(item),
            Some(q) => q.push(item),
        }
    }
    #[inline]
    fn pop(&mut self) -> Option<T> {
        match &mut self.custom {
            None => self.fifo.pop(),
            Some(q) => q.pop(),
        }
    }
    #[inline]
    fn len(&self) -> usize {
        match &self.custom {
            None => self.fifo.len(),
            Some(q) => q.len(),
        }
    }
    fn steal(&mut self, max: usize, out: &mut Vec<T>) {
        match &mut self.custom {
            None => self.fifo.steal(max, out),
            Some(q) => q.steal(max, out),
        }
    }
}

/// The policies [`super::RuntimeConfig`] can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PolicyKind {
    /// [`Fifo`].
    #[default]
    Fifo,
    /// [`Priority`].
    Priority,
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    #[derive(Debug, PartialEq, Eq, Clone, Copy)]
    struct Item(u32, u8);
    impl Prioritized for Item {
        fn priority(&self) -> u8 {
            self.1
        }
    }

    #[test]
    fn fifo_runs_in_order_and_thieves_take_the_newest() {
        let mut q = Fifo::new();
        for i in 0..6 {
            q.push(Item(i, 0));
        }
        assert_eq!(q.pop(), Some(Item(0, 0)));
        let mut out = Vec::new();
        q.steal(2, &mut out);
        assert_eq!(out, vec![Item(5, 0), Item(4, 0)]);
        assert_eq!(q.len(), 3);
        let rest: Vec<_> = core::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, vec![Item(1, 0), Item(2, 0), Item(3, 0)]);
        assert!(q.is_empty());
    }

    #[test]
    fn priority_runs_highest_first_fifo_within_a_level() {
        let mut q = Priority::new();
        for (i, p) in [1u8, 5, 1, 200, 5, 0].into_iter().enumerate() {
            q.push(Item(i as u32, p));
        }
        let order: Vec<u32> = core::iter::from_fn(|| q.pop()).map(|i| i.0).collect();
        // 200 is clamped to the top level.
        assert_eq!(order, vec![3, 1, 4, 0, 2, 5]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn priority_thieves_take_the_lowest_levels() {
        let mut q = Priority::new();
        for (i, p) in [7u8, 0, 3, 0, 7].into_iter().enumerate() {
            q.push(Item(i as u32, p));
        }
        let mut out = Vec::new();
        q.steal(3, &mut out);
        assert_eq!(out, vec![Item(3, 0), Item(1, 0), Item(2, 3)]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some(Item(0, 7)));
    }

    proptest::proptest! {
        /// Whatever the pushes, pops and steals, every item comes out
        /// exactly once, and `len` is exact.
        #[test]
        fn nothing_lost_or_duplicated(ops in proptest::collection::vec((0u8..3, 0u8..10), 0..200)) {
            // Through the run-queue wrapper, as the executors use them.
            let mut fifo = RunQueue::new(PolicyKind::Fifo);
            let mut prio = RunQueue::new(PolicyKind::Priority);
            let (mut pushed, mut got_f, mut got_p) = (0u32, Vec::new(), Vec::new());
            for (op, p) in ops {
                match op {
                    0 => {
                        fifo.push(Item(pushed, p));
                        prio.push(Item(pushed, p));
                        pushed += 1;
                    }
                    1 => {
                        got_f.extend(fifo.pop());
                        got_p.extend(prio.pop());
                    }
                    _ => {
                        fifo.steal(usize::from(p), &mut got_f);
                        prio.steal(usize::from(p), &mut got_p);
                    }
                }
                proptest::prop_assert_eq!(fifo.len() as u32 + got_f.len() as u32, pushed);
                proptest::prop_assert_eq!(prio.len() as u32 + got_p.len() as u32, pushed);
            }
            got_f.extend(core::iter::from_fn(|| fifo.pop()));
            got_p.extend(core::iter::from_fn(|| prio.pop()));
            let mut f: Vec<u32> = got_f.iter().map(|i| i.0).collect();
            let mut p: Vec<u32> = got_p.iter().map(|i| i.0).collect();
            f.sort_unstable();
            p.sort_unstable();
            let all: Vec<u32> = (0..pushed).collect();
            proptest::prop_assert_eq!(f, all.clone());
            proptest::prop_assert_eq!(p, all);
        }
    }
}
