//! Test-app helpers: `CHECK FAILED: <what>` lines and the exit code.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::Error;

/// Counts failed checks; [`Checks::finish`] gives the exit code.
#[derive(Debug, Default)]
pub struct Checks {
    failed: u32,
    passed: u32,
}

impl Checks {
    /// No checks yet.
    pub const fn new() -> Self {
        Self { failed: 0, passed: 0 }
    }

    /// Records `ok`; prints `CHECK FAILED: what` when it is false.
    pub fn check(&mut self, ok: bool, what: fmt::Arguments) -> bool {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            crate::println!("CHECK FAILED: {}", what);
        }
        ok
    }

    /// Checks that `got` is exactly `Err(want)`.
    pub fn expect_err(&mut self, what: &str, got: Result<u64, Error>, want: Error) -> bool {
        self.check(got == Err(want), format_args!("{what}: expected {want:?}, got {got:?}"))
    }

    /// Checks that `got` is `Ok`.
    pub fn expect_ok(&mut self, what: &str, got: Result<u64, Error>) -> bool {
        self.check(got.is_ok(), format_args!("{what}: expected Ok, got {got:?}"))
    }

    /// Number of failed checks.
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// Number of passed checks.
    pub fn passed(&self) -> u32 {
        self.passed
    }

    /// The exit code: 0 if nothing failed, else 1.
    pub fn finish(&self) -> i32 {
        i32::from(self.failed != 0)
    }
}

/// Frame numbers held while [`frames_left`] probes the quota (static: a
/// heap vector would take frames of its own).
static PROBE: [AtomicU64; PROBE_MAX] = [const { AtomicU64::new(0) }; PROBE_MAX];
/// The most frames [`frames_left`] counts.
pub const PROBE_MAX: usize = 4608;

/// Frames this environment may still allocate (at most [`PROBE_MAX`]),
/// probed: allocates until the quota (or the machine) says no, then frees
/// them all. Any other refusal fails the test. One vCPU at a time.
pub fn frames_left() -> u64 {
    let mut n = 0;
    while n < PROBE.len() {
        match crate::sys::frame_alloc(None) {
            Ok(f) => PROBE[n].store(f, Ordering::Relaxed),
            Err(Error::QuotaExceeded | Error::NoMemory) => break,
            Err(e) => fail(format_args!("frame_alloc while probing the quota: {e:?}")),
        }
        n += 1;
    }
    for slot in &PROBE[..n] {
        require(
            "frame_free after probing the quota",
            crate::sys::frame_free(slot.load(Ordering::Relaxed)),
        );
    }
    n as u64
}

/// Prints `CHECK FAILED: what` and exits with code 1.
pub fn fail(what: fmt::Arguments) -> ! {
    crate::println!("CHECK FAILED: {}", what);
    crate::sys::exit(1)
}

/// Unwraps `result`, or fails with `what` and the error.
pub fn require<T>(what: &str, result: Result<T, Error>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => fail(format_args!("{what}: {e:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_reflects_failures() {
        let mut c = Checks::new();
        assert_eq!(c.finish(), 0);
        c.passed += 1;
        assert_eq!(c.finish(), 0);
        c.failed += 1;
        assert_eq!(c.finish(), 1);
    }
}
