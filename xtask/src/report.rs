//! Parsing what the guest prints on its serial line.
//!
//! The guest protocol (one item per line; a trailing `\r` is ignored, and so
//! is any text on lines that match none of these):
//!
//! - `test NAME ... ok` / `test NAME ... FAILED` (anything may follow `ok` or
//!   `FAILED`, e.g. `FAILED: reason`): one in-guest test result;
//! - `N passed, M failed` (anything may follow): the kernel's own summary,
//!   printed once after its tests;
//! - `exo: boot ok cores=N apic=x2apic|xapic ...`: printed exactly once when
//!   every core is up (`key=value` fields, in any order, more may follow);
//! - `bench {JSON}`: one benchmark result, see [`BenchLine`];
//! - `bench done`: all benchmarks finished;
//! - `PANIC...` anywhere and a line starting with `backtrace:` after a panic.

use serde::Deserialize;

/// Outcome of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The test passed.
    Ok,
    /// The test failed.
    Failed,
}

/// One `test NAME ... ok|FAILED` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestLine {
    /// The test's name.
    pub name: String,
    /// Whether it passed.
    pub outcome: Outcome,
}

/// Parses a `test NAME ... ok|FAILED` line; `None` for anything else.
pub fn parse_test_line(line: &str) -> Option<TestLine> {
    let rest = line.trim_end().strip_prefix("test ")?;
    let (name, result) = rest.split_once(" ... ")?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let outcome = if result.starts_with("ok") {
        Outcome::Ok
    } else if result.starts_with("FAILED") {
        Outcome::Failed
    } else {
        return None;
    };
    Some(TestLine { name: name.to_string(), outcome })
}

/// Parses a `N passed, M failed` summary line into `(N, M)`.
pub fn parse_summary(line: &str) -> Option<(u64, u64)> {
    let (passed, rest) = line.trim().split_once(" passed, ")?;
    let passed = passed.parse().ok()?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let failed = digits.parse().ok()?;
    rest[digits.len()..].strip_prefix(" failed")?;
    Some((passed, failed))
}

/// The fields of an `exo: boot ok ...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootLine {
    /// `cores=` value.
    pub cores: Option<u32>,
    /// `apic=` value.
    pub apic: Option<String>,
}

/// Parses an `exo: boot ok key=value...` line.
pub fn parse_boot_line(line: &str) -> Option<BootLine> {
    let rest = line.trim_end().strip_prefix("exo: boot ok")?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let mut boot = BootLine { cores: None, apic: None };
    for field in rest.split_whitespace() {
        match field.split_once('=') {
            Some(("cores", v)) => boot.cores = v.parse().ok(),
            Some(("apic", v)) => boot.apic = Some(v.to_string()),
            _ => {}
        }
    }
    Some(boot)
}

/// Checks that exactly one boot line appeared and that it reports `cores`
/// cores and APIC mode `apic`. `Err` says what was wrong.
pub fn check_boot_line(lines: &[String], cores: u32, apic: &str) -> Result<(), String> {
    let boots: Vec<BootLine> = lines.iter().filter_map(|l| parse_boot_line(l)).collect();
    match boots.as_slice() {
        [] => Err("no `exo: boot ok` line".into()),
        [b] if b.cores == Some(cores) && b.apic.as_deref() == Some(apic) => Ok(()),
        [b] => Err(format!(
            "expected `exo: boot ok cores={cores} apic={apic}`, got cores={} apic={}",
            b.cores.map_or("?".into(), |c| c.to_string()),
            b.apic.as_deref().unwrap_or("?")
        )),
        many => Err(format!("`exo: boot ok` appeared {} times, expected once", many.len())),
    }
}

/// Everything the test protocol printed during one boot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    /// Test results, in order.
    pub tests: Vec<TestLine>,
    /// The kernel's summary, if it printed one (the last one wins).
    pub summary: Option<(u64, u64)>,
}

impl TestReport {
    /// Collects test lines and the summary from a serial log.
    pub fn from_lines(lines: &[String]) -> Self {
        let mut report = Self::default();
        for line in lines {
            if let Some(t) = parse_test_line(line) {
                report.tests.push(t);
            } else if let Some(s) = parse_summary(line) {
                report.summary = Some(s);
            }
        }
        report
    }

    /// Passed and failed counts over the `test` lines.
    pub fn counts(&self) -> (u64, u64) {
        let passed = self.tests.iter().filter(|t| t.outcome == Outcome::Ok).count() as u64;
        (passed, self.tests.len() as u64 - passed)
    }

    /// Checks that the kernel's summary exists and agrees with its `test`
    /// lines.
    pub fn check_summary(&self) -> Result<(), String> {
        let counted = self.counts();
        match self.summary {
            None => Err("the kernel printed no `N passed, M failed` summary".into()),
            Some(s) if s == counted => Ok(()),
            Some((p, f)) => Err(format!(
                "the kernel's summary says {p} passed, {f} failed, but its test lines say {} passed, {} failed",
                counted.0, counted.1
            )),
        }
    }
}

/// One benchmark result as the kernel prints it after `bench `.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BenchLine {
    /// Benchmark name.
    pub name: String,
    /// Unit of `median` and `p99` (`"cycles"`, `"ns"`, ...).
    pub unit: String,
    /// Median over the samples.
    pub median: serde_json::Number,
    /// 99th percentile over the samples.
    pub p99: serde_json::Number,
    /// How many samples were taken.
    pub samples: u64,
}

/// What a `bench ...` line said.
#[derive(Debug, Clone, PartialEq)]
pub enum Bench {
    /// A result.
    Result(BenchLine),
    /// `bench done`.
    Done,
}

/// Parses a `bench {JSON}` or `bench done` line. `None` when the line is not
/// a bench line at all, `Some(Err)` when it is one but is malformed.
pub fn parse_bench_line(line: &str) -> Option<Result<Bench, String>> {
    let rest = line.trim_end().strip_prefix("bench ")?;
    let rest = rest.trim();
    if rest == "done" {
        return Some(Ok(Bench::Done));
    }
    Some(
        serde_json::from_str::<BenchLine>(rest)
            .map(Bench::Result)
            .map_err(|e| format!("bad bench line {line:?}: {e}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn test_lines() {
        assert_eq!(
            parse_test_line("test frame_alloc ... ok\r"),
            Some(TestLine { name: "frame_alloc".into(), outcome: Outcome::Ok })
        );
        assert_eq!(
            parse_test_line("test ring::wraps ... FAILED: at ring.rs:10"),
            Some(TestLine { name: "ring::wraps".into(), outcome: Outcome::Failed })
        );
        assert_eq!(parse_test_line("test foo ... ignored"), None);
        assert_eq!(parse_test_line("test  ... ok"), None);
        assert_eq!(parse_test_line("testing foo ... ok"), None);
        assert_eq!(parse_test_line("running 3 tests"), None);
    }

    #[test]
    fn summaries() {
        assert_eq!(parse_summary("12 passed, 0 failed"), Some((12, 0)));
        assert_eq!(parse_summary("3 passed, 2 failed\r"), Some((3, 2)));
        assert_eq!(parse_summary("3 passed, 2 failed; 1 ignored"), Some((3, 2)));
        assert_eq!(parse_summary("x passed, 2 failed"), None);
        assert_eq!(parse_summary("3 passed, failed"), None);
        assert_eq!(parse_summary("3 passed, 2 skipped"), None);
    }

    #[test]
    fn boot_line_checks() {
        let ok = lines("hello\nexo: boot ok cores=8 apic=x2apic\nmore");
        assert_eq!(check_boot_line(&ok, 8, "x2apic"), Ok(()));
        assert!(check_boot_line(&ok, 8, "xapic").is_err());
        assert!(check_boot_line(&ok, 2, "x2apic").is_err());
        let extra = lines("exo: boot ok apic=xapic cores=8 mem=512M\r");
        assert_eq!(check_boot_line(&extra, 8, "xapic"), Ok(()));
        let twice = lines("exo: boot ok cores=8 apic=xapic\nexo: boot ok cores=8 apic=xapic");
        assert!(check_boot_line(&twice, 8, "xapic").is_err());
        assert!(check_boot_line(&lines("exo: booting"), 8, "xapic").is_err());
        assert!(parse_boot_line("exo: boot okay").is_none());
    }

    #[test]
    fn report_counts_and_summary() {
        let r = TestReport::from_lines(&lines(
            "test a ... ok\ntest b ... FAILED\nnoise\ntest c ... ok\n2 passed, 1 failed",
        ));
        assert_eq!(r.counts(), (2, 1));
        assert_eq!(r.summary, Some((2, 1)));
        assert!(r.check_summary().is_ok());
        let r = TestReport::from_lines(&lines("test a ... ok\n2 passed, 0 failed"));
        assert!(r.check_summary().is_err());
        let r = TestReport::from_lines(&lines("test a ... ok"));
        assert!(r.check_summary().is_err());
    }

    #[test]
    fn bench_lines() {
        let l = r#"bench {"name":"ipc_roundtrip","unit":"cycles","median":123,"p99":456,"samples":1000}"#;
        match parse_bench_line(l) {
            Some(Ok(Bench::Result(b))) => {
                assert_eq!(b.name, "ipc_roundtrip");
                assert_eq!(b.unit, "cycles");
                assert_eq!(b.median.as_u64(), Some(123));
                assert_eq!(b.p99.as_u64(), Some(456));
                assert_eq!(b.samples, 1000);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_bench_line("bench done\r"), Some(Ok(Bench::Done)));
        assert!(matches!(parse_bench_line("bench {oops"), Some(Err(_))));
        assert!(matches!(parse_bench_line(r#"bench {"name":"x"}"#), Some(Err(_))));
        assert_eq!(parse_bench_line("benchmarks starting"), None);
    }
}
