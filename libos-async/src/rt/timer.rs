//! A per-core timer heap: deadlines (TSC values) with a payload (a waker
//! in the runtime), fired in deadline order, ties in insertion order, and
//! never before their deadline. Hardware-free: the caller passes "now".
//!
//! Cancelling is lazy: [`TimerHeap::cancel`] forgets the payload and the
//! heap entry is skipped when it comes up, so both insert and cancel are
//! O(log n).

use alloc::collections::{BTreeMap, BinaryHeap};
use core::cmp::Reverse;

/// Names one armed timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId(u64);

/// Timers of one core.
pub struct TimerHeap<W> {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    live: BTreeMap<u64, W>,
    next_id: u64,
}

impl<W> TimerHeap<W> {
    /// No timers.
    pub const fn new() -> Self {
        TimerHeap { heap: BinaryHeap::new(), live: BTreeMap::new(), next_id: 0 }
    }

    /// Arms a timer for `deadline`.
    pub fn insert(&mut self, deadline: u64, payload: W) -> TimerId {
        let id = self.next_id;
        self.next_id += 1;
        self.heap.push(Reverse((deadline, id)));
        self.live.insert(id, payload);
        TimerId(id)
    }

    /// Replaces the payload of a still-armed timer; `false` if it fired or
    /// was cancelled.
    pub fn update(&mut self, id: TimerId, payload: W) -> bool {
        match self.live.get_mut(&id.0) {
            Some(p) => {
                *p = payload;
                true
            }
            None => false,
        }
    }

    /// Disarms a timer (no effect if it already fired).
    pub fn cancel(&mut self, id: TimerId) -> Option<W> {
        let payload = self.live.remove(&id.0);
        if self.live.is_empty() {
            self.heap.clear();
        }
        payload
    }

    /// Whether `id` is still armed.
    pub fn is_armed(&self, id: TimerId) -> bool {
        self.live.contains_key(&id.0)
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&mut self) -> Option<u64> {
        while let Some(&Reverse((deadline, id))) = self.heap.peek() {
            if self.live.contains_key(&id) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes and returns the earliest timer whose deadline is `<= now`.
    pub fn pop_expired(&mut self, now: u64) -> Option<(u64, TimerId, W)> {
        loop {
            let &Reverse((deadline, id)) = self.heap.peek()?;
            if deadline > now {
                return None;
            }
            self.heap.pop();
            if let Some(p) = self.live.remove(&id) {
                return Some((deadline, TimerId(id), p));
            }
        }
    }
}

impl<W> Default for TimerHeap<W> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn fires_in_order_ties_in_insertion_order_never_early() {
        let mut t = TimerHeap::new();
        t.insert(30, 'a');
        t.insert(10, 'b');
        t.insert(20, 'c');
        t.insert(10, 'd');
        assert_eq!(t.next_deadline(), Some(10));
        assert!(t.pop_expired(9).is_none());
        let fired: Vec<(u64, char)> =
            core::iter::from_fn(|| t.pop_expired(20)).map(|(d, _, w)| (d, w)).collect();
        assert_eq!(fired, [(10, 'b'), (10, 'd'), (20, 'c')]);
        assert_eq!(t.next_deadline(), Some(30));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn cancel_and_update() {
        let mut t = TimerHeap::new();
        let a = t.insert(5, 1);
        let b = t.insert(7, 2);
        assert!(t.update(b, 3));
        assert_eq!(t.cancel(a), Some(1));
        assert_eq!(t.cancel(a), None);
        assert!(!t.is_armed(a) && t.is_armed(b));
        assert_eq!(t.next_deadline(), Some(7));
        assert_eq!(t.pop_expired(100).map(|(_, id, w)| (id, w)), Some((b, 3)));
        assert!(!t.update(b, 4));
        assert!(t.is_empty() && t.next_deadline().is_none());
    }

    proptest::proptest! {
        /// Random inserts, cancels and clock advances: everything fired is
        /// due, in (deadline, insertion) order, and every timer not
        /// cancelled fires exactly once.
        #[test]
        fn order_and_completeness(ops in proptest::collection::vec((0u8..4, 0u64..1000), 0..300)) {
            let mut t = TimerHeap::new();
            let mut ids = Vec::new();
            let mut now = 0;
            let mut fired: Vec<(u64, u64)> = Vec::new();
            let mut cancelled = 0;
            for (op, x) in ops {
                match op {
                    0 | 1 => ids.push(t.insert(now + x, ids.len() as u64)),
                    2 => {
                        if !ids.is_empty() && t.cancel(ids[x as usize % ids.len()]).is_some() {
                            cancelled += 1;
                        }
                    }
                    _ => {
                        now += x;
                        let mut last = None;
                        while let Some((d, id, _)) = t.pop_expired(now) {
                            proptest::prop_assert!(d <= now);
                            if let Some(prev) = last {
                                proptest::prop_assert!(prev < (d, id));
                            }
                            last = Some((d, id));
                            fired.push((d, id.0));
                        }
                        if let Some(next) = t.next_deadline() {
                            proptest::prop_assert!(next > now);
                        }
                    }
                }
            }
            while let Some((_, id, _)) = t.pop_expired(u64::MAX) {
                fired.push((0, id.0));
            }
            proptest::prop_assert_eq!(fired.len() + cancelled, ids.len());
        }
    }
}
