//! The kernel command line.
//!
//! Words are separated by spaces; each is `key=value` or a bare `key`.
//! Unknown keys are collected (and reported by the kernel) rather than
//! rejected, so that one command line can serve several kernel versions.
//!
//! | key | values | default |
//! |---|---|---|
//! | `mode` | `run`, `test`, `bench`, `panic-test` | `run` |
//! | `log` | `off`, `error`, `warn`, `info`, `debug`, `trace` | `info` |
//! | `tick_hz` | timer interrupts per second of a core with no vCPU, 1..=10000 | 100 |
//! | `slots` | slots in each core's time vector, 1..=64 | 16 |
//! | `quota` | frames each environment may hold (data and page tables), 16..=1048576 (4 GiB) | 4096 (16 MiB) |
//! | `slot_us` | length of a slot in microseconds, 50..=1000000 | 1000 |
//! | `grace_us` | time to yield after an epilogue upcall, 1..=`slot_us` | 50 |
//! | `slots_reserved` | slots per core nobody may own, 0..`slots` | `slots / 4` |
//! | `zero_pool` | frames idle cores keep zeroed ahead, 0..=4096 (0: zero on demand only) | 4096 |
//! | `bench_samples` | samples per benchmark, 1..=100000 | 1000 |
//! | `init` | comma-separated applications (`name[:arg][@core]`) to start in `run` mode | [`DEFAULT_DEMO`] |
//! | `tests` | in `test` mode, the tests to run: comma-separated name fragments, `-fragment` excludes | all |
//! | `console` | `shared`, `split` (see [`ConsoleMode`]) | `shared` |
//! | `exit_tag` | 1 to 32 ASCII letters and digits: put in the `console=split` end marker, so that a marker printed by ring 3 cannot pass for the kernel's | none |
//! | `memrevoke` | in `run` mode, `APP:N:MS`: `MS` ms after start, ask the live env `APP` for `N` frames back within `MS` ms (see `abi::repossess`) | none |
//! | `stdin` | `console`: in `run` mode the first `init` application reads console input (`abi::Syscall::ConsoleRead`) | nobody reads it |
//! | `benches` | in `bench` mode, the benchmark groups to run, selected like `tests` (group names: `machine/bench.rs`) | all |

use alloc::string::String;
use alloc::vec::Vec;

/// The applications `run` mode starts by default: tasks on every core,
/// an echo server with a client, a key-value server with two clients.
pub const DEFAULT_DEMO: [&str; 6] =
    ["hello-async", "echo", "echo-client", "kv", "kv-client", "kv-client"];

/// Default frame quota of an environment (16 MiB).
pub const DEFAULT_QUOTA: u64 = 4096;
/// The largest quota `quota=` may set (every frame below 4 GiB).
pub const MAX_QUOTA: u64 = 1 << 20;
/// The most kernel trace records per core `trace=N` may ask for (24
/// bytes each from the kernel heap: 384 KiB per core).
pub const MAX_TRACE_RECORDS: u32 = 1 << 14;

/// What the kernel does once every core is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The default demonstration, then power off.
    Run,
    /// Run the in-kernel test suite and report `N passed, N failed`.
    Test,
    /// Run the benchmarks and print one JSON line per result.
    Bench,
    /// Panic on purpose, to check the panic path (report, backtrace, exit).
    PanicTest,
}

/// Where environments' console streams 1 and 2 (a program's stdout and
/// stderr, `abi::ConsoleStream`) go, and what ends a `run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleMode {
    /// Every stream on the kernel console, among the kernel's lines; the
    /// machine powers off when the last environment has ended.
    Shared,
    /// `cargo xtask posix`: streams 1 and 2 each on a channel of their own
    /// (an `isa-debugcon` device each), the kernel's lines and stream 0
    /// alone on the kernel console; and in `run` mode the machine powers
    /// off as soon as the *first* `init` application (the init
    /// environment) has ended, reporting its exit status.
    Split,
}

/// Log verbosity, ordered from silent to chatty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Nothing.
    Off,
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The normal level.
    Info,
    /// Developer detail.
    Debug,
    /// Everything.
    Trace,
}

/// The parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmdline {
    /// What to do after boot.
    pub mode: Mode,
    /// Log verbosity.
    pub log: LogLevel,
    /// Where program output goes.
    pub console: ConsoleMode,
    /// The tag of the `console=split` end marker.
    pub exit_tag: Option<String>,
    /// Timer frequency of a core with no vCPU, in Hz.
    pub tick_hz: u32,
    /// Slots per core's time vector.
    pub slots: u32,
    /// Slot length in microseconds.
    pub slot_us: u32,
    /// Grace period after an epilogue upcall, in microseconds (at most
    /// `slot_us`).
    pub grace_us: u32,
    /// Slots per core nobody may own (less than `slots`).
    pub slots_reserved: u32,
    /// Samples per benchmark.
    pub bench_samples: u32,
    /// Frame quota of every environment (data and page-table frames).
    pub quota: u64,
    /// Frames idle cores keep zeroed ahead of allocation (0: none).
    pub zero_pool: u32,
    /// Applications to start in `run` mode.
    pub init: Vec<String>,
    /// `stdin=console`: the first `init` application is the console reader.
    pub stdin_console: bool,
    /// In `test` mode, which tests run (fragments of names; `-` excludes).
    pub tests: Option<String>,
    /// In `bench` mode, which benchmark groups run (as `tests`).
    pub benches: Option<String>,
    /// `memrevoke=APP:N:MS`: a repossession demand to make in `run` mode.
    pub memrevoke: Option<MemRevoke>,
    /// `trace=N`: kernel trace records per core (0: tracing off).
    pub trace: u32,
    /// Words that were not understood, kept for a warning.
    pub unknown: Vec<String>,
}

/// A repossession demand asked for on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemRevoke {
    /// The application (the oldest live environment started from it).
    pub app: String,
    /// Frames to give back (1..=1048576).
    pub frames: u64,
    /// Milliseconds before the demand, and again before its deadline
    /// (1..=600000).
    pub ms: u64,
}

fn parse_memrevoke(value: &str) -> Option<MemRevoke> {
    let mut parts = value.split(':');
    let app = parts.next().filter(|a| !a.is_empty())?;
    let frames = parts.next()?.parse::<u64>().ok().filter(|n| (1..=1 << 20).contains(n))?;
    let ms = parts.next()?.parse::<u64>().ok().filter(|n| (1..=600_000).contains(n))?;
    parts.next().is_none().then(|| MemRevoke { app: String::from(app), frames, ms })
}

impl Default for Cmdline {
    fn default() -> Self {
        Cmdline {
            mode: Mode::Run,
            log: LogLevel::Info,
            console: ConsoleMode::Shared,
            exit_tag: None,
            tick_hz: 100,
            slots: 16,
            slot_us: 1000,
            quota: DEFAULT_QUOTA,
            grace_us: 50,
            slots_reserved: 4,
            bench_samples: 1000,
            zero_pool: 4096,
            init: DEFAULT_DEMO.iter().map(|&a| String::from(a)).collect(),
            tests: None,
            benches: None,
            memrevoke: None,
            stdin_console: false,
            trace: 0,
            unknown: Vec::new(),
        }
    }
}

impl Cmdline {
    /// Parses a command line. Never fails: a bad word lands in `unknown`
    /// and the setting keeps its default.
    pub fn parse(text: &str) -> Cmdline {
        let mut out = Cmdline::default();
        let mut reserved = None;
        for word in text.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            let understood = match key {
                "mode" => parse_mode(value).map(|m| out.mode = m).is_some(),
                "log" => parse_log(value).map(|l| out.log = l).is_some(),
                "console" => match value {
                    "shared" => Some(ConsoleMode::Shared),
                    "split" => Some(ConsoleMode::Split),
                    _ => None,
                }
                .map(|c| out.console = c)
                .is_some(),
                "tick_hz" => parse_in(value, 1, 10_000).map(|v| out.tick_hz = v).is_some(),
                "slots" => parse_in(value, 1, 64).map(|v| out.slots = v).is_some(),
                "slot_us" => parse_in(value, 50, 1_000_000).map(|v| out.slot_us = v).is_some(),
                "quota" => value
                    .parse::<u64>()
                    .ok()
                    .filter(|q| (16..=MAX_QUOTA).contains(q))
                    .map(|q| out.quota = q)
                    .is_some(),
                "grace_us" => parse_in(value, 1, 1_000_000).map(|v| out.grace_us = v).is_some(),
                "slots_reserved" => parse_in(value, 0, 63).map(|v| reserved = Some(v)).is_some(),
                "zero_pool" => parse_in(value, 0, 4096).map(|v| out.zero_pool = v).is_some(),
                "trace" => parse_in(value, 1, MAX_TRACE_RECORDS).map(|v| out.trace = v).is_some(),
                "bench_samples" => {
                    parse_in(value, 1, 100_000).map(|v| out.bench_samples = v).is_some()
                }
                "exit_tag"
                    if (1..=32).contains(&value.len())
                        && value.bytes().all(|b| b.is_ascii_alphanumeric()) =>
                {
                    out.exit_tag = Some(String::from(value));
                    true
                }
                "tests" if !value.is_empty() => {
                    out.tests = Some(String::from(value));
                    true
                }
                "benches" if !value.is_empty() => {
                    out.benches = Some(String::from(value));
                    true
                }
                "stdin" if value == "console" => {
                    out.stdin_console = true;
                    true
                }
                "memrevoke" => parse_memrevoke(value).map(|m| out.memrevoke = Some(m)).is_some(),
                "init" => {
                    out.init =
                        value.split(',').filter(|a| !a.is_empty()).map(String::from).collect();
                    true
                }
                _ => false,
            };
            if !understood {
                out.unknown.push(String::from(word));
            }
        }
        // Settings that depend on each other, fixed up after every word.
        out.grace_us = out.grace_us.min(out.slot_us);
        out.slots_reserved = reserved.unwrap_or(out.slots / 4).min(out.slots - 1);
        out
    }
}

/// Whether test (or benchmark group) `name` is selected by a `tests=`
/// (`benches=`) filter: comma-separated
/// fragments; `-fragment` excludes names containing it, any other fragment
/// includes names containing it (no include fragment: everything not
/// excluded).
pub fn test_selected(name: &str, filter: &str) -> bool {
    let words = || filter.split(',').filter(|w| !w.is_empty());
    let excluded = words().filter_map(|w| w.strip_prefix('-')).any(|w| name.contains(w));
    let mut includes = words().filter(|w| !w.starts_with('-')).peekable();
    let included = includes.peek().is_none() || includes.any(|w| name.contains(w));
    included && !excluded
}

fn parse_mode(value: &str) -> Option<Mode> {
    Some(match value {
        "run" => Mode::Run,
        "test" => Mode::Test,
        "bench" => Mode::Bench,
        "panic-test" => Mode::PanicTest,
        _ => return None,
    })
}

fn parse_log(value: &str) -> Option<LogLevel> {
    Some(match value {
        "off" => LogLevel::Off,
        "error" => LogLevel::Error,
        "warn" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        _ => return None,
    })
}

fn parse_in(value: &str, min: u32, max: u32) -> Option<u32> {
    value.parse::<u32>().ok().filter(|v| (min..=max).contains(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_gives_defaults() {
        assert_eq!(Cmdline::parse(""), Cmdline::default());
    }

    #[test]
    fn parses_every_key() {
        let c = Cmdline::parse("  mode=test log=debug tick_hz=250 bench_samples=7 ");
        assert_eq!(c.mode, Mode::Test);
        assert_eq!(c.log, LogLevel::Debug);
        assert_eq!(c.tick_hz, 250);
        assert_eq!(c.bench_samples, 7);
        assert_eq!(c.zero_pool, 4096);
        assert_eq!(Cmdline::parse("zero_pool=0").zero_pool, 0);
        assert_eq!(Cmdline::parse("zero_pool=5000").zero_pool, 4096);
        assert_eq!(Cmdline::parse("trace=4096").trace, 4096);
        for bad in ["trace=0", "trace=16385", "trace=x", "trace"] {
            let c = Cmdline::parse(bad);
            assert_eq!((c.trace, c.unknown.len()), (0, 1), "{bad}");
        }
        assert!(c.unknown.is_empty());
        assert_eq!(Cmdline::parse("init=a,,b").init, ["a", "b"]);
        assert_eq!(Cmdline::parse("").init, DEFAULT_DEMO);
        assert_eq!(Cmdline::parse("tests=cpu_").tests.as_deref(), Some("cpu_"));
        assert_eq!(Cmdline::parse("tests=").tests, None);
        assert_eq!(Cmdline::parse("benches=iso").benches.as_deref(), Some("iso"));
        assert_eq!(Cmdline::parse("benches=").benches, None);
        assert!(Cmdline::parse("init=").init.is_empty());
        assert_eq!(Cmdline::parse("console=split").console, ConsoleMode::Split);
        assert_eq!(Cmdline::parse("console=split console=shared").console, ConsoleMode::Shared);
        let c = Cmdline::parse("console=both console");
        assert_eq!((c.console, c.unknown.len()), (ConsoleMode::Shared, 2));
        assert_eq!(Cmdline::parse("exit_tag=a1B2").exit_tag.as_deref(), Some("a1B2"));
        for bad in ["exit_tag=", "exit_tag=a-b", "exit_tag=a.b"] {
            assert_eq!(Cmdline::parse(bad).exit_tag, None, "{bad}");
        }
        let long = alloc::format!("exit_tag={}", "x".repeat(33));
        assert_eq!(Cmdline::parse(&long).exit_tag, None);
        assert_eq!(Cmdline::parse("").quota, DEFAULT_QUOTA);
        assert_eq!(Cmdline::parse("quota=65536").quota, 65536);
        let c = Cmdline::parse("quota=15 quota=1048577 quota=x");
        assert_eq!((c.quota, c.unknown.len()), (DEFAULT_QUOTA, 3));
        assert!(Cmdline::parse("stdin=console").stdin_console);
        let c = Cmdline::parse("stdin=tty");
        assert_eq!((c.stdin_console, c.unknown.len()), (false, 1));
    }

    #[test]
    fn bad_values_keep_defaults_and_are_reported() {
        let c = Cmdline::parse("mode=fly tick_hz=0 tick_hz=99999 log= quiet");
        assert_eq!(c.mode, Mode::Run);
        assert_eq!(c.tick_hz, 100);
        assert_eq!(c.log, LogLevel::Info);
        assert_eq!(c.unknown, ["mode=fly", "tick_hz=0", "tick_hz=99999", "log=", "quiet"]);
    }

    #[test]
    fn time_vector_settings_are_consistent() {
        let c = Cmdline::parse("slots=8 slot_us=2000 grace_us=5000");
        assert_eq!((c.slots, c.slot_us, c.grace_us, c.slots_reserved), (8, 2000, 2000, 2));
        let c = Cmdline::parse("slots=1 slots_reserved=3");
        assert_eq!((c.slots, c.slots_reserved), (1, 0));
        let c = Cmdline::parse("slots=65 slot_us=10");
        assert_eq!((c.slots, c.slot_us), (16, 1000));
        assert_eq!(c.unknown, ["slots=65", "slot_us=10"]);
        assert_eq!(Cmdline::parse("slots_reserved=0").slots_reserved, 0);
    }

    #[test]
    fn test_filters_include_and_exclude() {
        assert!(test_selected("cpu_time_ratio", "cpu_time_"));
        assert!(!test_selected("env_hello", "cpu_time_"));
        assert!(test_selected("env_hello", "-cpu_time_"));
        assert!(!test_selected("cpu_time_ratio", "-cpu_time_"));
        assert!(test_selected("pct_calls", "cpu_,pct_"));
        assert!(!test_selected("pct_calls", "pct_,-calls"));
        assert!(test_selected("anything", ""));
    }

    #[test]
    fn memrevoke_knob() {
        let m = Cmdline::parse("memrevoke=kv:16:50").memrevoke.unwrap();
        assert_eq!((m.app.as_str(), m.frames, m.ms), ("kv", 16, 50));
        for bad in ["memrevoke=kv:0:5", "memrevoke=:1:5", "memrevoke=kv:1", "memrevoke=kv:1:5:9"] {
            let c = Cmdline::parse(bad);
            assert_eq!((c.memrevoke, c.unknown), (None, alloc::vec![String::from(bad)]));
        }
    }

    #[test]
    fn later_words_win() {
        assert_eq!(Cmdline::parse("mode=test mode=bench").mode, Mode::Bench);
    }
}
