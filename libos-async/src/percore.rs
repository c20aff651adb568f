//! Core-local storage: one value per core, only ever touched by the vCPU
//! running on that core.
//!
//! An environment has at most one vCPU per core and a vCPU never moves
//! (the kernel's placement is static), so "the value of the core I run on"
//! is exclusive to the running code — except for re-entrance on the same
//! vCPU (an exception upcall, or a waker called while the value is in
//! use), which the per-slot lock turns into a refusal ([`CoreLocal::try_with`]
//! returns `None`) instead of aliasing. This is what lets values that are
//! not `Send` (the vCPU's [`crate::ring::Ring`]) live in a `static`.
//!
//! The module's one `unsafe` is the `Sync` promise below.

use abi::MAX_CORES;
use spin::Mutex;

/// One `T` per core, reached only through the calling vCPU's core.
pub struct CoreLocal<T> {
    slots: [Mutex<Option<T>>; MAX_CORES],
}

// SAFETY: slot `c` is only reached through `core_id()` of the calling
// vCPU, and only one vCPU of this environment runs on core `c` at a time
// (a later vCPU there starts after the earlier one ended, ordered by the
// kernel); the slot's lock adds acquire/release ordering and refuses
// re-entrant use. So no `T` is ever used by two vCPUs at once, nor moved
// between them, and `T: Send` is not needed.
unsafe impl<T> Sync for CoreLocal<T> {}

impl<T> CoreLocal<T> {
    /// Empty on every core.
    pub const fn new() -> Self {
        CoreLocal { slots: [const { Mutex::new(None) }; MAX_CORES] }
    }

    /// Runs `f` on this core's slot; `None` if the slot is in use further
    /// up this vCPU's stack (re-entrance) or the core number is absurd.
    pub fn try_with<R>(&self, f: impl FnOnce(&mut Option<T>) -> R) -> Option<R> {
        let slot = self.slots.get(crate::rt::current_core())?;
        let mut guard = slot.try_lock()?;
        Some(f(&mut guard))
    }
}

impl<T> Default for CoreLocal<T> {
    fn default() -> Self {
        Self::new()
    }
}
