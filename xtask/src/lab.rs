//! `cargo xtask lab`: boots `apps/sched-lab` and keeps its results.
//!
//! The app prints one `lab KEY=VALUE ...` line per (workload, policy);
//! this command writes those lines, in order, to
//! `target/lab/run-N.txt` (one file per boot) and the last run's to
//! `target/lab/results.txt`. Under `--icount` (the default; with
//! `sleep=off`, so idle periods jump to the next timer instead of taking
//! host time) the guest's time is its instruction count, so two boots of
//! the same build must give byte-identical files: `--runs 2` (or more) boots that many times
//! and fails unless every run's file equals the first (the determinism
//! test of the scheduling lab).

use std::path::PathBuf;
use std::time::Duration;

use crate::qemu::{self, Boot};
use crate::{LabArgs, Workspace};

/// The `lab ...` lines of a serial log, in order.
pub fn result_lines(lines: &[String]) -> Vec<String> {
    lines.iter().filter(|l| l.starts_with("lab ")).cloned().collect()
}

/// QEMU's arguments for a lab boot: with `-icount`, also `sleep=off`, so
/// that while every vCPU idles (the lab's open-loop arrivals leave its
/// executor asleep until a timer) virtual time jumps to the next timer
/// instead of following the host's clock, which made two runs differ.
fn lab_args(args: Vec<String>) -> Vec<String> {
    args.into_iter().map(|a| if a == "shift=0" { "shift=0,sleep=off".into() } else { a }).collect()
}

/// Runs `cargo xtask lab`; whether every run passed (exit 0, results
/// present, and all runs identical).
pub fn run(ws: &Workspace, args: &LabArgs) -> Result<bool, String> {
    let accel = crate::pick_accel(crate::qemu::AccelChoice::Auto, !args.no_icount)?;
    let built = crate::build(ws, &args.build)?;
    crate::install::ensure_qemu()?;
    let dir = ws.target.join("lab");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut first: Option<(PathBuf, String)> = None;
    let mut ok = true;
    for n in 1..=args.runs.max(1) {
        let boot = Boot {
            kernel: built.kernel.clone(),
            initrd: built.initrd.clone(),
            append: "mode=run init=sched-lab".into(),
            smp: args.smp,
            accel,
            cpu: None,
            icount: !args.no_icount,
            gdb: false,
            timeout: Some(Duration::from_secs(args.timeout)),
            log: ws.log("lab", accel.as_str()),
            interactive: false,
        };
        println!("xtask: lab run {n}: booting (smp {}, icount {})...", boot.smp, boot.icount);
        let out = qemu::boot_with_args(&boot, lab_args(boot.args()))?;
        let lines = result_lines(&out.lines);
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let path = dir.join(format!("run-{n}.txt"));
        std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        let results = dir.join("results.txt");
        std::fs::write(&results, &text).map_err(|e| format!("{}: {e}", results.display()))?;
        println!(
            "xtask: lab run {n}: {}; {} result lines -> {}",
            out.status.describe(),
            lines.len(),
            ws.rel(&path)
        );
        if !out.status.is_success() || lines.is_empty() {
            println!("xtask: lab run {n} FAILED (serial log: {})", ws.rel(&boot.log));
            ok = false;
            continue;
        }
        match &first {
            None => first = Some((path, text)),
            Some((p, t)) if *t == text => {
                println!("xtask: lab run {n}: identical to {}", ws.rel(p));
            }
            Some((p, t)) => {
                ok = false;
                println!("xtask: lab run {n}: DIFFERS from {}:", ws.rel(p));
                for (a, b) in t.lines().zip(text.lines()).filter(|(a, b)| a != b) {
                    println!("  - {a}\n  + {b}");
                }
            }
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icount_idles_in_virtual_time() {
        let a = lab_args(["-smp", "2", "-icount", "shift=0"].map(String::from).into());
        assert_eq!(a.join(" "), "-smp 2 -icount shift=0,sleep=off");
    }

    #[test]
    fn keeps_only_lab_lines_in_order() {
        let log: Vec<String> =
            ["exo: boot", "lab a=1", "sched-lab: x", "lab b=2", " lab c"].map(String::from).into();
        assert_eq!(result_lines(&log), vec!["lab a=1".to_string(), "lab b=2".to_string()]);
    }
}
