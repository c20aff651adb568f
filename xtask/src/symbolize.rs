//! Symbolized backtraces: the `backtrace: 0x... 0x...` lines of a serial
//! log (the kernel's panic handler, and libos-async's for app panics,
//! caught or not) resolved to functions, files and lines with the ELF they
//! came from, by the `addr2line` crate.
//!
//! Which ELF: the report line before each `backtrace:` line says whose it
//! is — `exo: PANIC ...` (or `exo: nested PANIC`) is the kernel's;
//! `panic in env E ...` is environment E's, whose program name the kernel
//! prints in its `exo: env E (NAME) ...` lines (anywhere in the log); the
//! program's ELF is `target/x86_64-unknown-none/release/NAME`. Return
//! addresses are looked up at `address - 1` (inside the call instruction),
//! and inlined frames are listed innermost first, as `addr2line -i` does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Whose backtrace a `backtrace:` line is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The kernel's.
    Kernel,
    /// Environment `env`'s, running the program `name` (if the log says).
    App { env: u64, name: Option<String> },
}

/// One `backtrace:` line of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Whose.
    pub owner: Owner,
    /// The report line before it (the panic message).
    pub report: String,
    /// Return addresses, newest first.
    pub addrs: Vec<u64>,
}

/// The environment and core of `panic in env E on core C...`.
fn panic_env(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("panic in env ")?;
    let mut w = rest.split_whitespace();
    let env = w.next()?.parse().ok()?;
    let core = w.nth(2)?.trim_end_matches(':').parse().ok()?;
    Some((env, core))
}

/// `exo: env E (NAME) ...` → (E, NAME).
fn env_name(line: &str) -> Option<(u64, String)> {
    let rest = line.strip_prefix("exo: env ")?;
    let (id, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('(')?;
    let (name, _) = rest.split_once(')')?;
    Some((id.parse().ok()?, name.to_string()))
}

/// The backtraces of a serial log, with their owners.
pub fn traces(log: &str) -> Vec<Trace> {
    let names: HashMap<u64, String> = log.lines().filter_map(env_name).collect();
    let mut out = Vec::new();
    let mut kernel_report = String::new();
    // The last `panic in env E on core C` line of each (E, C).
    let mut app_reports: HashMap<(u64, u64), String> = HashMap::new();
    for line in log.lines() {
        let line = line.trim_end();
        if line.contains("exo: PANIC") || line.contains("exo: nested PANIC") {
            kernel_report = line.to_string();
        } else if let Some(key) = panic_env(line) {
            app_reports.insert(key, line.to_string());
        } else if let Some(rest) = line.strip_prefix("backtrace") {
            let (owner, report, rest) = if let Some(tagged) = rest.strip_prefix(" [env ") {
                // `backtrace [env E core C]: ...` (libos-async)
                let Some((tag, rest)) = tagged.split_once("]:") else { continue };
                let mut w = tag.split_whitespace();
                let env = w.next().and_then(|e| e.parse().ok());
                let core = w.nth(1).and_then(|c| c.parse().ok());
                let (Some(env), Some(core)) = (env, core) else { continue };
                let report = app_reports.remove(&(env, core)).unwrap_or_default();
                (Owner::App { env, name: names.get(&env).cloned() }, report, rest)
            } else if let Some(rest) = rest.strip_prefix(':') {
                (Owner::Kernel, std::mem::take(&mut kernel_report), rest)
            } else {
                continue;
            };
            let addrs: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|w| w.strip_prefix("0x"))
                .filter_map(|w| u64::from_str_radix(w, 16).ok())
                .collect();
            out.push(Trace { owner, report, addrs });
        }
    }
    out
}

/// One resolved frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The return address.
    pub addr: u64,
    /// The function (demangled), if known.
    pub function: Option<String>,
    /// `file:line`, if known.
    pub location: Option<String>,
    /// An inlined frame of the one above it (same address).
    pub inlined: bool,
}

/// Resolves `addrs` with the ELF at `elf`.
pub fn resolve(elf: &Path, addrs: &[u64]) -> Result<Vec<Frame>, String> {
    let loader =
        addr2line::Loader::new(elf).map_err(|e| format!("reading {}: {e}", elf.display()))?;
    let mut out = Vec::new();
    for &addr in addrs {
        // A return address follows the call: look inside the call.
        let probe = addr.saturating_sub(1);
        let mut any = false;
        if let Ok(mut frames) = loader.find_frames(probe) {
            while let Ok(Some(f)) = frames.next() {
                let function = f
                    .function
                    .as_ref()
                    .and_then(|n| n.demangle().ok())
                    .map(|s| s.into_owned())
                    .or_else(|| loader.find_symbol(probe).map(demangle));
                let location = f
                    .location
                    .as_ref()
                    .and_then(|l| Some(format!("{}:{}", l.file?, l.line.unwrap_or(0))));
                out.push(Frame { addr, function, location, inlined: any });
                any = true;
            }
        }
        if !any {
            let function = loader.find_symbol(probe).map(demangle);
            out.push(Frame { addr, function, location: None, inlined: false });
        }
    }
    Ok(out)
}

fn demangle(s: &str) -> String {
    addr2line::demangle_auto(s.into(), None).into_owned()
}

/// The ELF of `owner`: the kernel's, or the app's under `apps_dir`.
pub fn elf_of(owner: &Owner, kernel: &Path, apps_dir: &Path) -> Option<PathBuf> {
    match owner {
        Owner::Kernel => Some(kernel.to_path_buf()),
        Owner::App { name: Some(name), .. } => {
            let p = apps_dir.join(name);
            p.exists().then_some(p)
        }
        Owner::App { name: None, .. } => None,
    }
}

/// The symbolized backtraces of log text `log`, as lines to print.
pub fn render(log: &str, kernel: &Path, apps_dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for t in traces(log) {
        let who = match &t.owner {
            Owner::Kernel => "kernel".to_string(),
            Owner::App { env, name: Some(n) } => format!("env {env} ({n})"),
            Owner::App { env, name: None } => format!("env {env} (program unknown)"),
        };
        lines.push(format!("xtask: backtrace of {who}: {}", t.report));
        let Some(elf) = elf_of(&t.owner, kernel, apps_dir) else {
            lines.push("  (no ELF to resolve it with)".into());
            continue;
        };
        match resolve(&elf, &t.addrs) {
            Ok(frames) => {
                let mut i = 0;
                for f in frames {
                    let func = f.function.as_deref().unwrap_or("??");
                    let loc = f.location.as_deref().unwrap_or("??");
                    if f.inlined {
                        lines.push(format!("       (inlined) {func} at {loc}"));
                    } else {
                        lines.push(format!("  #{i:<2} {:#x} {func} at {loc}", f.addr));
                        i += 1;
                    }
                }
            }
            Err(e) => lines.push(format!("  ({e})")),
        }
    }
    lines
}

/// Prints the symbolized backtraces of the serial log at `log` (nothing
/// if it has none).
pub fn print_for_log(log: &Path, kernel: &Path, apps_dir: &Path) {
    let Ok(bytes) = std::fs::read(log) else { return };
    let text = String::from_utf8_lossy(&bytes);
    for line in render(&text, kernel, apps_dir) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_come_from_the_report_line_and_the_env_names() {
        // Two app panics on two cores, interleaved; then a kernel one.
        let log = "exo: boot ok\n\
                   panic in env 3 on core 1 in task 7 (caught; ...): boom at a.rs:1\n\
                   panic in env 3 on core 2: other at b.rs:2\n\
                   backtrace [env 3 core 2]: 0x403000\n\
                   backtrace [env 3 core 1]: 0x401000 0x402000\n\
                   exo: PANIC on cpu 0: bad\n\
                   backtrace: 0xffffffff80001000\n\
                   exo: env 3 (rttest) exited with code 0\n";
        let t = traces(log);
        assert_eq!(t.len(), 3);
        let rttest = Owner::App { env: 3, name: Some("rttest".into()) };
        assert_eq!((&t[0].owner, &t[0].addrs[..]), (&rttest, &[0x403000][..]));
        assert!(t[0].report.contains("other"));
        assert_eq!((&t[1].owner, &t[1].addrs[..]), (&rttest, &[0x401000, 0x402000][..]));
        assert!(t[1].report.contains("boom"));
        assert_eq!(t[2].owner, Owner::Kernel);
        assert_eq!(t[2].addrs, [0xffff_ffff_8000_1000]);
        assert!(t[2].report.contains("bad"));
    }

    /// Resolves an address inside this very test binary (built with
    /// debug info): the function must come out by name, with its file.
    #[test]
    fn resolves_an_address_of_this_test_binary_to_its_function() {
        let exe = std::env::current_exe().unwrap();
        let here = target_function as *const () as u64;
        let loader = addr2line::Loader::new(&exe).unwrap();
        // The test binary may be position-independent: its ELF addresses
        // are then the runtime ones minus where it was loaded (the start
        // of its first mapping in /proc/self/maps).
        let bias = if loader.find_symbol(here).is_some_and(|s| s.contains("target_function")) {
            0
        } else {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let name = exe.to_string_lossy().into_owned();
            let first = maps.lines().find(|l| l.ends_with(&name)).unwrap();
            u64::from_str_radix(first.split('-').next().unwrap(), 16).unwrap()
        };
        // `resolve` looks at address - 1, as for a return address.
        let frames = resolve(&exe, &[here - bias + 1]).unwrap();
        let f = &frames[0];
        assert!(f.function.as_deref().is_some_and(|n| n.contains("target_function")), "{f:?}");
        assert!(f.location.as_deref().is_some_and(|l| l.contains("symbolize.rs")), "{f:?}");
        assert_eq!(std::hint::black_box(target_function()), 7);
    }

    #[inline(never)]
    fn target_function() -> u32 {
        std::hint::black_box(7)
    }
}
