//! Issue 17's POSIX workloads (the registry's `group = "posix"`): one
//! unmodified static program, `benches/posix/workloads.c`, runs the same
//! busybox scripts on both systems and times each from the parent's `fork`
//! to its `waitpid` returning. On Linux it is `/bin/workloads` in the
//! guest's initramfs (run by `benches/linux/init.c`'s `busybox` group); on
//! ours it runs under the POSIX runtime exactly as `cargo xtask posix
//! --icount -- /bin/workloads posix N` runs it ([`run_ours`]).
//!
//! The program prints `bench {...}` lines for what it could time and
//! `bench-unsupported NAME: REASON` for what the system cannot run yet
//! (`fork: Function not implemented` on a libOS without fork): those rows
//! show "not yet supported" with that reason, never a figure.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Workspace;
use crate::bench::{Entry, Mode};
use crate::posix::{self, Ending, Node, RunRequest};
use crate::qemu::Accel;

/// The program's source, relative to the workspace root.
pub const SOURCE: &str = "benches/posix/workloads.c";
/// The registry group of the workloads (not a kernel `benches=` group).
pub const GROUP: &str = "posix";
/// Samples per workload at most (after one untimed warm-up run): each is
/// millions of instructions, and a fork-to-wait figure under `-icount`
/// moves little. Fewer with a smaller `--samples` (as init.c does).
pub const SAMPLES: u32 = 5;

/// Samples per workload for a run with `args`: [`SAMPLES`], fewer with a
/// smaller `--samples`, one for `--smoke` (a row is all it checks). The
/// Linux guest gets the same count (`workload_samples=`).
pub fn samples(args: &crate::BenchArgs) -> u32 {
    if args.smoke { 1 } else { args.samples.unwrap_or(SAMPLES).clamp(1, SAMPLES) }
}

/// Builds the program (static musl, warnings are errors); its bytes.
pub fn build(root: &Path, target: &Path) -> Result<Vec<u8>, String> {
    crate::linux::ensure_musl()?;
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let out = dir.join("workloads");
    let status = Command::new("musl-gcc")
        .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(root.join(SOURCE))
        .status()
        .map_err(|e| format!("cannot run musl-gcc: {e}"))?;
    if !status.success() {
        return Err(format!("building {SOURCE} failed ({status})"));
    }
    std::fs::read(&out).map_err(|e| format!("reading {}: {e}", out.display()))
}

/// What one side's run of the program said.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// The figures it printed.
    pub entries: Vec<Entry>,
    /// `(name, reason)` of each workload it could not run.
    pub unsupported: Vec<(String, String)>,
}

/// Reads the program's output lines (`bench {...}`, `bench-unsupported
/// NAME: REASON`; anything else is ignored).
pub fn parse(lines: &[String], mode: Mode) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    for line in lines {
        if let Some(rest) = line.trim_end().strip_prefix("bench-unsupported ") {
            let (name, why) = rest.split_once(": ").ok_or(format!("bad line {line:?}"))?;
            out.unsupported.push((name.to_string(), why.to_string()));
        } else if let Some(r) = crate::report::parse_bench_line(line) {
            match r? {
                crate::report::Bench::Result(b) => out.entries.push(Entry::from_line(b, mode)),
                crate::report::Bench::Done => {}
            }
        }
    }
    Ok(out)
}

/// Runs the program on our system: the POSIX root of `cargo xtask posix`
/// (busybox and its applet links) plus `/bin/workloads`, booted on the
/// kernel and initrd just built (`base`: the build's initrd), with `args`'
/// vCPUs, `-icount` and timeout. Also returns what to say of a workload the program
/// did not speak for (the run ended early: see [`fill_missing`]) and the
/// kernel's log.
pub fn run_ours(
    ws: &Workspace,
    base: &[u8],
    program: &[u8],
    accel: Accel,
    args: &crate::BenchArgs,
) -> Result<(Outcome, String, PathBuf), String> {
    let mode = if args.icount { Mode::Icount } else { Mode::Wall };
    let samples = samples(args);
    let request = RunRequest {
        argv: ["/bin/workloads", "posix", &samples.to_string()]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect(),
        envp: vec![b"PATH=/bin".to_vec()],
        cwd: Some(b"/".to_vec()),
    };
    let mut tree = crate::posixcmd::default_root(ws)?;
    tree.put("bin/workloads", Node::File(0o755, program.to_vec()))?;
    let tree = posix::layout(tree, &[], &request)?;
    let initrd = posix::cache_dir(&ws.target).join("workloads-initrd.tar");
    std::fs::write(&initrd, posix::pack(base, &tree)?)
        .map_err(|e| format!("{}: {e}", initrd.display()))?;
    let b = crate::posixcmd::split_boot(
        ws,
        initrd,
        "workloads",
        accel,
        args.smp,
        args.icount,
        args.timeout,
    );
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let end = posix::boot_split(&b, posix::Sink::Keep(&mut stdout, &mut stderr))?;
    let lines: Vec<String> = String::from_utf8_lossy(&stdout).lines().map(str::to_string).collect();
    let out = parse(&lines, mode)?;
    let why = match &end {
        Ending::Exited(0) => "the program ended without a line for it".to_string(),
        Ending::Exited(n) => format!("the program exited with status {n} before it"),
        Ending::Killed(why) => format!("the kernel killed the program: {why}"),
        Ending::Failed(why) => format!("our POSIX run failed: {why}"),
    };
    Ok((out, why, b.boot.log))
}

/// Marks every name of `names` without a figure or a reason as
/// unsupported for `why`.
pub fn fill_missing(out: &mut Outcome, names: &[&str], why: &str) {
    for n in names {
        let spoken =
            out.entries.iter().any(|e| e.name == *n) || out.unsupported.iter().any(|(u, _)| u == n);
        if !spoken {
            out.unsupported.push((n.to_string(), why.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_figures_and_reasons() {
        let lines: Vec<String> = [
            "bench {\"name\":\"posix_busybox_true\",\"unit\":\"cycles\",\"median\":400000,\"p99\":410000,\"samples\":5}",
            "bench-unsupported posix_gzip_1m: fork: Function not implemented",
            "bench-unsupported posix_sh_while_1000: exit status 2",
            "unrelated output",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut out = parse(&lines, Mode::Icount).unwrap();
        assert_eq!(out.entries.len(), 1);
        assert_eq!(out.entries[0].unit, "guest-instructions");
        assert_eq!(
            out.unsupported,
            [
                ("posix_gzip_1m".to_string(), "fork: Function not implemented".to_string()),
                ("posix_sh_while_1000".to_string(), "exit status 2".to_string()),
            ]
        );
        fill_missing(
            &mut out,
            &["posix_busybox_true", "posix_gzip_1m", "posix_pipe_64k_per_kib"],
            "the boot failed",
        );
        assert_eq!(out.unsupported.len(), 3);
        assert_eq!(out.unsupported[2].0, "posix_pipe_64k_per_kib");
        assert!(parse(&["bench-unsupported no-reason".to_string()], Mode::Wall).is_err());
    }

    #[test]
    fn every_workload_is_registered_on_both_sides() {
        let src = std::fs::read_to_string(crate::root().join(SOURCE)).unwrap();
        let all = crate::registry::load(&crate::root()).unwrap();
        let ours: Vec<_> = all.iter().filter(|b| b.group == GROUP).collect();
        assert_eq!(ours.len(), 6, "issue 17's six workloads");
        for b in ours {
            let w = b.name.strip_prefix("posix_").expect("posix_ names");
            assert!(src.contains(&format!("\"{w}\"")), "{SOURCE} does not run {w}");
            assert_eq!(b.linux.as_deref(), Some(format!("linux_{w}").as_str()));
            assert_eq!(b.linux_group.as_deref(), Some("busybox"));
        }
    }
}
