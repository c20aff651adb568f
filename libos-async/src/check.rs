//! Test-app helpers: `CHECK FAILED: <what>` lines and the exit code.

use core::fmt;

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
