//! The runtime's few contacts with the machine, with host stand-ins so
//! that the executor, timers and reactor logic run under `cargo test`:
//! which core we are on, the TSC and its rate, the notification counter,
//! and sleeping on a predicate.
//!
//! On the host a "core" is a thread that called `set_test_core` (which
//! exists only under `cargo test`); the TSC is a nanosecond clock
//! (`tsc_hz` = 10^9); sleeping yields the thread (a bounded busy-wait
//! standing in for the kernel's predicate evaluation).

pub use imp::*;

#[cfg(not(test))]
mod imp {
    /// The core this vCPU runs on.
    #[inline]
    pub fn current_core() -> usize {
        crate::sys::core_id()
    }

    /// The TSC.
    #[inline]
    pub fn now() -> u64 {
        crate::sys::rdtsc()
    }

    /// TSC ticks per second.
    pub fn tsc_hz() -> u64 {
        crate::sys::info().tsc_hz.max(1)
    }

    /// `InfoPage::notifications`.
    pub fn notifications() -> u64 {
        crate::sys::notifications()
    }

    /// This environment's id.
    pub fn env_id() -> u64 {
        crate::env_id()
    }

    /// Blocks on `pred` (errors are reported by the caller).
    pub fn sleep(pred: &crate::Pred) -> Result<u64, abi::Error> {
        pred.sleep()
    }

    /// Wakes this environment's sleeping vCPUs (`Acall` to ourselves).
    pub fn notify_self() -> Result<u64, abi::Error> {
        crate::sys::acall(env_id(), 0, 0)
    }
}

#[cfg(test)]
mod imp {
    extern crate std;
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::cell::Cell;
    use std::sync::OnceLock;
    use std::time::Instant;

    std::thread_local! {
        static CORE: Cell<usize> = const { Cell::new(0) };
    }

    /// Makes the calling test thread "core `core`".
    pub fn set_test_core(core: usize) {
        CORE.with(|c| c.set(core));
    }

    /// The calling thread's test core.
    pub fn current_core() -> usize {
        CORE.with(|c| c.get())
    }

    /// Nanoseconds since the first call, plus one; or, after
    /// [`set_manual_clock`], the manual clock.
    pub fn now() -> u64 {
        if MANUAL.load(Ordering::SeqCst) {
            return CLOCK.load(Ordering::SeqCst);
        }
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
    }

    static MANUAL: AtomicBool = AtomicBool::new(false);
    static CLOCK: AtomicU64 = AtomicU64::new(1);

    /// Makes [`now`] a manual clock that only [`advance_clock`] moves
    /// (for deterministic tests of time-based policies), or the real one.
    pub fn set_manual_clock(on: bool) {
        MANUAL.store(on, Ordering::SeqCst);
    }

    /// Moves the manual clock forward by `ticks`.
    pub fn advance_clock(ticks: u64) {
        CLOCK.fetch_add(ticks, Ordering::SeqCst);
    }

    /// One tick per nanosecond.
    pub fn tsc_hz() -> u64 {
        1_000_000_000
    }

    /// No notifications on the host.
    pub fn notifications() -> u64 {
        0
    }

    /// A fixed environment id.
    pub fn env_id() -> u64 {
        1
    }

    /// Nothing to wake on the host (sleeps are short and timed).
    pub fn notify_self() -> Result<u64, abi::Error> {
        Ok(0)
    }

    /// Sleeps 20 µs (the predicate is not evaluated on the host).
    pub fn sleep(_pred: &crate::Pred) -> Result<u64, abi::Error> {
        std::thread::sleep(std::time::Duration::from_micros(20));
        Ok(0)
    }
}
