//! Time vectors: who owns which slot of a core's CPU time.
//!
//! Each core has a vector of slots (`abi::schedule`). This module owns the
//! rules for allocating and freeing slots over an array of atomic owner
//! words (the array itself lives in the schedule pages the kernel shares
//! read-only with every environment) and the rule that picks which vCPU runs
//! in a slot. It touches no hardware and holds no lock: every slot changes
//! owner by compare-and-swap, so any core may allocate slots on any core
//! while the owning core reads them at its slot boundaries.
//!
//! Owner `0` ([`EnvId::NONE`] on the wire) means "nobody". At most `limit` slots of a core may be owned at
//! once (the rest are reserved for the default round-robin); `owned` counts
//! them and is always raised *before* a slot is taken, so concurrent
//! allocations can never exceed the limit.

use crate::ownership::EnvId;
use core::sync::atomic::{AtomicU32, Ordering};

/// Why a slot operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// Index or count out of range.
    InvalidArgument,
    /// The named slot is owned by someone.
    Busy,
    /// Not enough unreserved free slots.
    QuotaExceeded,
    /// A slot to free is not the caller's.
    NotOwner,
}

impl SlotError {
    /// The ABI error for this failure.
    pub fn to_abi(self) -> abi::Error {
        match self {
            SlotError::InvalidArgument => abi::Error::InvalidArgument,
            SlotError::Busy => abi::Error::Busy,
            SlotError::QuotaExceeded => abi::Error::QuotaExceeded,
            SlotError::NotOwner => abi::Error::NotOwner,
        }
    }
}

/// One core's slot owners (`owners.len()` slots are in use) and the count
/// of owned slots, which may not exceed `limit`.
pub struct Slots<'a> {
    /// Owner of each slot (0: nobody).
    pub owners: &'a [AtomicU32],
    /// How many of them are owned.
    pub owned: &'a AtomicU32,
    /// The most that may be owned.
    pub limit: u32,
}

impl Slots<'_> {
    #[allow(
        deprecated,
        reason = "fetch_update is try_update from Rust 1.99 on; kept for older stables"
    )]
    fn reserve(&self, count: u32) -> Result<(), SlotError> {
        self.owned
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                n.checked_add(count).filter(|&m| m <= self.limit)
            })
            .map(|_| ())
            .map_err(|_| SlotError::QuotaExceeded)
    }

    fn unreserve(&self, count: u32) {
        self.owned.fetch_sub(count, Ordering::AcqRel);
    }

    /// Gives slot `index` to `env`; returns its bit.
    pub fn alloc_exact(&self, index: u64, env: EnvId) -> Result<u64, SlotError> {
        let slot = usize::try_from(index)
            .ok()
            .and_then(|i| self.owners.get(i))
            .ok_or(SlotError::InvalidArgument)?;
        if env.is_none() {
            return Err(SlotError::InvalidArgument);
        }
        if slot.load(Ordering::Acquire) != 0 {
            return Err(SlotError::Busy);
        }
        self.reserve(1)?;
        match slot.compare_exchange(0, env.raw(), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(1 << index),
            Err(_) => {
                self.unreserve(1);
                Err(SlotError::Busy)
            }
        }
    }

    /// Gives `count` free slots to `env`, all or none, lowest first;
    /// returns their bits.
    pub fn alloc_any(&self, count: u64, env: EnvId) -> Result<u64, SlotError> {
        let count = u32::try_from(count)
            .ok()
            .filter(|&c| c >= 1 && c as usize <= self.owners.len())
            .ok_or(SlotError::InvalidArgument)?;
        if env.is_none() {
            return Err(SlotError::InvalidArgument);
        }
        self.reserve(count)?;
        let mut mask = 0u64;
        let mut got = 0;
        for (i, slot) in self.owners.iter().enumerate() {
            if got == count {
                break;
            }
            if slot.compare_exchange(0, env.raw(), Ordering::AcqRel, Ordering::Acquire).is_ok() {
                mask |= 1 << i;
                got += 1;
            }
        }
        if got < count {
            // Others took the free ones first: give back what we took.
            self.release(mask, env);
            self.unreserve(count - got);
            return Err(SlotError::QuotaExceeded);
        }
        Ok(mask)
    }

    /// Frees the slots in `mask`, which must all be `env`'s (else nothing
    /// is freed).
    pub fn free(&self, mask: u64, env: EnvId) -> Result<(), SlotError> {
        if mask == 0 || (self.owners.len() < 64 && mask >> self.owners.len() != 0) {
            return Err(SlotError::InvalidArgument);
        }
        let all_mine = (0..self.owners.len())
            .filter(|i| mask & (1 << i) != 0)
            .all(|i| self.owners[i].load(Ordering::Acquire) == env.raw());
        if !all_mine || env.is_none() {
            return Err(SlotError::NotOwner);
        }
        self.release(mask, env);
        Ok(())
    }

    /// Frees every slot `env` owns (it ended); returns their bits.
    pub fn free_all(&self, env: EnvId) -> u64 {
        let mask = self.owned_by(env);
        self.release(mask, env);
        mask
    }

    /// The bits of the slots `env` owns.
    pub fn owned_by(&self, env: EnvId) -> u64 {
        if env.is_none() {
            return 0;
        }
        self.owners
            .iter()
            .enumerate()
            .filter(|(_, o)| o.load(Ordering::Acquire) == env.raw())
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    fn release(&self, mask: u64, env: EnvId) {
        for (i, slot) in self.owners.iter().enumerate() {
            if mask & (1 << i) != 0
                && slot.compare_exchange(env.raw(), 0, Ordering::AcqRel, Ordering::Acquire).is_ok()
            {
                self.unreserve(1);
            }
        }
    }
}

/// A vCPU the slot picker may choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its environment.
    pub env: EnvId,
    /// Whether it may run in slots nobody owns.
    pub default_time: bool,
}

/// Which of `ready` (in queue order) runs in a slot owned by `owner` (0:
/// nobody, or the owner forfeited it or gave up its rest): the owner's vCPU
/// if it is ready, otherwise the first that takes default time.
pub fn pick(owner: EnvId, ready: impl IntoIterator<Item = Candidate> + Clone) -> Option<usize> {
    if !owner.is_none()
        && let Some(i) = ready.clone().into_iter().position(|c| c.env == owner)
    {
        return Some(i);
    }
    ready.into_iter().position(|c| c.default_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::sync::Arc;
    use std::vec::Vec;

    fn table(n: usize) -> (Vec<AtomicU32>, AtomicU32) {
        ((0..n).map(|_| AtomicU32::new(0)).collect(), AtomicU32::new(0))
    }

    #[test]
    fn exact_allocation_and_free() {
        let (owners, owned) = table(8);
        let s = Slots { owners: &owners, owned: &owned, limit: 6 };
        assert_eq!(s.alloc_exact(3, EnvId(7)), Ok(1 << 3));
        assert_eq!(s.alloc_exact(3, EnvId(8)), Err(SlotError::Busy));
        assert_eq!(s.alloc_exact(8, EnvId(7)), Err(SlotError::InvalidArgument));
        assert_eq!(s.alloc_exact(u64::MAX - 1, EnvId(7)), Err(SlotError::InvalidArgument));
        assert_eq!(s.free(1 << 3, EnvId(8)), Err(SlotError::NotOwner));
        assert_eq!(s.free(1 << 9, EnvId(7)), Err(SlotError::InvalidArgument));
        assert_eq!(s.free(1 << 3, EnvId(7)), Ok(()));
        assert_eq!(owned.load(Ordering::Relaxed), 0);
        assert_eq!(s.free(1 << 3, EnvId(7)), Err(SlotError::NotOwner));
    }

    #[test]
    fn any_allocation_respects_the_reserve() {
        let (owners, owned) = table(8);
        let s = Slots { owners: &owners, owned: &owned, limit: 6 };
        assert_eq!(s.alloc_any(2, EnvId(1)), Ok(0b11));
        assert_eq!(s.alloc_any(5, EnvId(2)), Err(SlotError::QuotaExceeded));
        assert_eq!(s.alloc_any(4, EnvId(2)), Ok(0b11_1100));
        assert_eq!(s.alloc_exact(7, EnvId(3)), Err(SlotError::QuotaExceeded));
        assert_eq!(s.alloc_any(0, EnvId(3)), Err(SlotError::InvalidArgument));
        assert_eq!(s.alloc_any(9, EnvId(3)), Err(SlotError::InvalidArgument));
        assert_eq!(s.owned_by(EnvId(2)), 0b11_1100);
        assert_eq!(s.free_all(EnvId(2)), 0b11_1100);
        assert_eq!(owned.load(Ordering::Relaxed), 2);
        // Freeing part of one's slots, but one bit is someone else's: none.
        assert_eq!(s.alloc_exact(5, EnvId(3)), Ok(1 << 5));
        assert_eq!(s.free(0b10_0001, EnvId(1)), Err(SlotError::NotOwner));
        assert_eq!(s.owned_by(EnvId(1)), 0b11);
    }

    #[test]
    fn concurrent_allocation_never_exceeds_the_limit_or_double_books() {
        for _ in 0..50 {
            let (owners, owned) = table(16);
            let shared = Arc::new((owners, owned));
            let threads: Vec<_> = (1..=8u32)
                .map(|env| {
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || {
                        let s = Slots { owners: &shared.0, owned: &shared.1, limit: 12 };
                        let mut mine = 0u64;
                        for round in 0..20 {
                            if let Ok(m) = s.alloc_any(1 + (round % 3), EnvId(env)) {
                                mine |= m;
                            }
                            if round % 4 == 3 && mine != 0 {
                                let low = 1 << mine.trailing_zeros();
                                s.free(low, EnvId(env)).unwrap();
                                mine &= !low;
                            }
                        }
                        mine
                    })
                })
                .collect();
            let masks: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let (owners, owned) = &*shared;
            let mut union = 0u64;
            for (i, m) in masks.iter().enumerate() {
                assert_eq!(union & m, 0, "slot booked twice");
                union |= m;
                let s = Slots { owners, owned, limit: 12 };
                assert_eq!(s.owned_by(EnvId(i as u32 + 1)), *m);
            }
            assert!(union.count_ones() <= 12);
            assert_eq!(owned.load(Ordering::Relaxed), union.count_ones());
        }
    }

    #[test]
    fn pick_prefers_the_owner_then_default_time() {
        let c = |env, default_time| Candidate { env, default_time };
        let ready = [c(EnvId(1), true), c(EnvId(2), false), c(EnvId(3), true)];
        assert_eq!(pick(EnvId(2), ready), Some(1));
        assert_eq!(pick(EnvId(9), ready), Some(0));
        assert_eq!(pick(EnvId(0), [c(EnvId(2), false), c(EnvId(3), true)]), Some(1));
        assert_eq!(pick(EnvId(0), [c(EnvId(2), false)]), None);
        assert_eq!(pick(EnvId(2), [c(EnvId(2), false)]), Some(0));
    }
}
