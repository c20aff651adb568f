//! The table that matches ring completions to the futures waiting for
//! them: one slot per operation in flight, named in the submission's
//! `user_data` as `generation << 32 | index`.
//!
//! A future that is dropped while its operation is in flight *abandons*
//! its slot: the slot stays taken (holding whatever buffer the kernel may
//! still read, see [`SlotTable::abandon`]) until the completion arrives,
//! which is then absorbed. Only then is the slot freed, with its
//! generation bumped, so a completion can never be delivered to a later
//! operation that reuses the index; a completion whose generation does not
//! match (forged, or duplicated by a scribbled ring) is ignored.
//! `user_data` 0 is never a slot (generations start at 1): the runtime
//! uses it for fire-and-forget submissions.
//!
//! Hardware-free: `W` is a waker in the runtime, anything in the tests.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::task::Poll;

/// `user_data` of submissions nobody waits for.
pub const UNTRACKED: u64 = 0;

enum State<W> {
    Free,
    Waiting(Option<W>),
    Done(u64),
    Abandoned(#[allow(dead_code)] Option<Box<[u8]>>),
}

struct Slot<W> {
    generation: u32,
    state: State<W>,
}

/// What a completion did.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery<W> {
    /// The result is stored; wake this (if a waker was registered).
    Wake(Option<W>),
    /// The future was gone: the slot is free again.
    Absorbed,
    /// No operation in flight has this `user_data`: ignored.
    Stale,
}

/// Operations in flight on one ring.
pub struct SlotTable<W> {
    slots: Vec<Slot<W>>,
    free: Vec<u32>,
    in_flight: usize,
}

fn split(user_data: u64) -> (usize, u32) {
    ((user_data & 0xffff_ffff) as usize, (user_data >> 32) as u32)
}

impl<W> SlotTable<W> {
    /// An empty table.
    pub const fn new() -> Self {
        SlotTable { slots: Vec::new(), free: Vec::new(), in_flight: 0 }
    }

    /// Slots taken (waiting, completed but not collected, or abandoned).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Takes a slot; returns the `user_data` for its submission.
    pub fn alloc(&mut self) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(Slot { generation: 1, state: State::Free });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.state = State::Waiting(None);
        self.in_flight += 1;
        (u64::from(slot.generation) << 32) | index as u64
    }

    fn slot(&mut self, user_data: u64) -> Option<&mut Slot<W>> {
        let (index, generation) = split(user_data);
        self.slots.get_mut(index).filter(|s| s.generation == generation)
    }

    fn release(&mut self, user_data: u64) {
        let (index, _) = split(user_data);
        let slot = &mut self.slots[index];
        slot.state = State::Free;
        slot.generation = slot.generation.wrapping_add(1).max(1);
        self.free.push(index as u32);
        self.in_flight -= 1;
    }

    /// The future's poll: the raw result if it arrived (the slot is then
    /// freed), else `waker` is kept for the completion.
    pub fn poll(&mut self, user_data: u64, waker: impl FnOnce() -> W) -> Poll<u64> {
        let Some(slot) = self.slot(user_data) else {
            // Not ours (cannot happen for a live future): report an error
            // rather than hang.
            return Poll::Ready(abi::Error::Canceled.to_raw());
        };
        match &mut slot.state {
            State::Done(result) => {
                let result = *result;
                self.release(user_data);
                Poll::Ready(result)
            }
            State::Waiting(w) => {
                *w = Some(waker());
                Poll::Pending
            }
            State::Free | State::Abandoned(_) => Poll::Ready(abi::Error::Canceled.to_raw()),
        }
    }

    /// A completion arrived.
    pub fn complete(&mut self, user_data: u64, result: u64) -> Delivery<W> {
        let Some(slot) = self.slot(user_data) else { return Delivery::Stale };
        match core::mem::replace(&mut slot.state, State::Done(result)) {
            State::Waiting(w) => Delivery::Wake(w),
            State::Abandoned(_) => {
                self.release(user_data);
                Delivery::Absorbed
            }
            old @ (State::Free | State::Done(_)) => {
                slot.state = old;
                Delivery::Stale
            }
        }
    }

    /// The future is dropped. If its operation is still in flight the slot
    /// stays taken, keeping `keep` (a buffer the kernel may still read)
    /// alive until the completion is absorbed; if it already completed,
    /// the slot is freed now.
    pub fn abandon(&mut self, user_data: u64, keep: Option<Box<[u8]>>) {
        let Some(slot) = self.slot(user_data) else { return };
        match slot.state {
            State::Waiting(_) => slot.state = State::Abandoned(keep),
            State::Done(_) => self.release(user_data),
            State::Free | State::Abandoned(_) => {}
        }
    }
}

impl<W> Default for SlotTable<W> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_reaches_its_future() {
        let mut t = SlotTable::new();
        let a = t.alloc();
        assert_ne!(a, UNTRACKED);
        assert_eq!(t.poll(a, || 'a'), Poll::Pending);
        assert_eq!(t.complete(a, 42), Delivery::Wake(Some('a')));
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.poll(a, || 'a'), Poll::Ready(42));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn abandoned_completion_is_absorbed_not_delivered_to_a_reused_slot() {
        let mut t: SlotTable<char> = SlotTable::new();
        let a = t.alloc();
        t.abandon(a, Some(Box::new([1, 2, 3])));
        // The slot is still taken: a new op gets another index.
        let b = t.alloc();
        assert_ne!(a & 0xffff_ffff, b & 0xffff_ffff);
        assert_eq!(t.complete(a, 7), Delivery::Absorbed);
        assert_eq!(t.in_flight(), 1);
        // The index is reused with a new generation...
        let c = t.alloc();
        assert_eq!(a & 0xffff_ffff, c & 0xffff_ffff);
        assert_ne!(a, c);
        // ...and a duplicate of the old completion does not reach it.
        assert_eq!(t.complete(a, 7), Delivery::Stale);
        assert_eq!(t.poll(c, || 'c'), Poll::Pending);
        assert_eq!(t.complete(c, 9), Delivery::Wake(Some('c')));
        assert_eq!(t.poll(c, || 'c'), Poll::Ready(9));
        let _ = b;
    }

    #[test]
    fn dropping_after_completion_frees_and_forged_data_is_stale() {
        let mut t: SlotTable<()> = SlotTable::new();
        let a = t.alloc();
        assert_eq!(t.complete(a, 1), Delivery::Wake(None));
        t.abandon(a, None);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.complete(a, 1), Delivery::Stale);
        assert_eq!(t.complete(UNTRACKED, 1), Delivery::Stale);
        assert_eq!(t.complete(u64::MAX, 1), Delivery::Stale);
    }
}
