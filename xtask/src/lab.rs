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
//! test of the scheduling lab). `cargo xtask test` runs the same check
//! on a small mix ([`determinism`]).

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

/// One `lab workload=W policy=P key=value ...` result line.
#[derive(Clone, Debug, PartialEq)]
pub struct LabResult {
    /// The workload.
    pub workload: String,
    /// The policy.
    pub policy: String,
    /// The numeric fields, in order.
    pub values: Vec<(String, f64)>,
}

/// The result lines of a results file (lines without a workload and a
/// policy, like the controller's, are left out).
pub fn parse_results(text: &str) -> Vec<LabResult> {
    text.lines()
        .filter_map(|l| l.strip_prefix("lab "))
        .filter_map(|rest| {
            let mut workload = None;
            let mut policy = None;
            let mut values = Vec::new();
            for kv in rest.split_whitespace() {
                let (k, v) = kv.split_once('=')?;
                match k {
                    "workload" => workload = Some(v.to_string()),
                    "policy" => policy = Some(v.to_string()),
                    _ => {
                        if let Ok(x) = v.parse::<f64>() {
                            values.push((k.to_string(), x));
                        }
                    }
                }
            }
            Some(LabResult { workload: workload?, policy: policy?, values })
        })
        .collect()
}

/// The metrics drawn, with their axis text.
const METRICS: [(&str, &str); 6] = [
    ("p50_us", "short-task latency p50 (us)"),
    ("p99_us", "short-task latency p99 (us)"),
    ("p999_us", "short-task latency p99.9 (us)"),
    ("throughput_per_s", "tasks per second"),
    ("long_done_us", "long tasks done at (us)"),
    ("jain_permille", "Jain's fairness index (thousandths)"),
];

/// One figure per (workload, metric) present: `(file name, SVG)`.
pub fn figures(results: &[LabResult]) -> Result<Vec<(String, String)>, String> {
    let mut workloads: Vec<&str> = Vec::new();
    for r in results {
        if !workloads.contains(&r.workload.as_str()) {
            workloads.push(&r.workload);
        }
    }
    let mut out = Vec::new();
    for w in workloads {
        for (metric, desc) in METRICS {
            let rows: Vec<(String, f64)> = results
                .iter()
                .filter(|r| r.workload == w)
                .filter_map(|r| {
                    r.values.iter().find(|(k, _)| k == metric).map(|(_, v)| (r.policy.clone(), *v))
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            let svg =
                crate::plot::labelled_bars(&format!("sched-lab: {w}, {metric}"), desc, &rows)?;
            out.push((format!("{w}-{metric}.svg"), svg));
        }
    }
    Ok(out)
}

/// Draws `target/lab/results.txt` into `target/lab/plots/`.
fn plot(ws: &Workspace) -> Result<(), String> {
    let path = ws.target.join("lab").join("results.txt");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (run `cargo xtask lab` first)", path.display()))?;
    let figs = figures(&parse_results(&text))?;
    if figs.is_empty() {
        return Err(format!("{}: no `lab workload=... policy=...` lines", path.display()));
    }
    for p in crate::plot::write(&ws.target.join("lab").join("plots"), &figs)? {
        println!("xtask: lab figure {}", ws.rel(&p));
    }
    Ok(())
}

/// Runs `cargo xtask lab`; whether every run passed (exit 0, results
/// present, and all runs identical).
pub fn run(ws: &Workspace, args: &LabArgs) -> Result<bool, String> {
    if args.plot_only {
        plot(ws)?;
        return Ok(true);
    }
    if args.determinism {
        let built = crate::build(ws, &args.build)?;
        crate::install::ensure_qemu()?;
        return match determinism(ws, &built, args.timeout) {
            Ok(()) => {
                println!("xtask: lab determinism: the two runs' result files are identical");
                Ok(true)
            }
            Err(e) => {
                println!("xtask: lab determinism FAILED: {e}");
                Ok(false)
            }
        };
    }
    let ok = run_boots(ws, args)?;
    if args.plot {
        plot(ws)?;
    }
    Ok(ok)
}

/// One boot of `sched-lab` with start argument `arg` (0: the lab's mix,
/// 3: the quick one): its status, the `lab` lines as a file's text, and
/// the serial log.
fn boot_lab(
    ws: &Workspace,
    built: &crate::Artifacts,
    arg: u64,
    smp: u32,
    accel: qemu::Accel,
    icount: bool,
    timeout: u64,
) -> Result<(qemu::Outcome, String, PathBuf), String> {
    let append = if arg == 0 {
        "mode=run init=sched-lab".to_string()
    } else {
        format!("mode=run init=sched-lab:{arg}")
    };
    let boot = Boot {
        kernel: built.kernel.clone(),
        initrd: built.initrd.clone(),
        append,
        smp,
        accel,
        cpu: None,
        icount,
        gdb: false,
        timeout: Some(Duration::from_secs(timeout)),
        log: ws.log("lab", accel.as_str()),
        interactive: false,
    };
    let out = qemu::boot_with_args(&boot, lab_args(boot.args()))?;
    let text: String = result_lines(&out.lines).iter().map(|l| format!("{l}\n")).collect();
    Ok((out, text, boot.log))
}

/// Compares two runs' result files byte for byte: `Err` lists the lines
/// that differ (or says which is longer).
pub fn compare_runs(first: &str, other: &str) -> Result<(), String> {
    if first.as_bytes() == other.as_bytes() {
        return Ok(());
    }
    let mut why = String::new();
    for (a, b) in first.lines().zip(other.lines()).filter(|(a, b)| a != b) {
        why.push_str(&format!("  - {a}\n  + {b}\n"));
    }
    let (na, nb) = (first.lines().count(), other.lines().count());
    if na != nb {
        why.push_str(&format!("  {na} result lines against {nb}\n"));
    }
    if why.is_empty() {
        why.push_str("  same lines, different bytes (line endings or a trailing newline)\n");
    }
    Err(why)
}

/// The determinism test of `cargo xtask test`: two `-icount` boots of
/// `sched-lab` with the quick mix (start argument 3; every policy, a
/// tenth of the lab's tasks) on 2 vCPUs must write byte-identical result
/// files (`target/lab/test-run-{1,2}.txt`), each with one line per policy.
pub fn determinism(ws: &Workspace, built: &crate::Artifacts, timeout: u64) -> Result<(), String> {
    let dir = ws.target.join("lab");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut texts = Vec::new();
    for n in 1..=2 {
        let (out, text, log) = boot_lab(ws, built, 3, 2, qemu::Accel::Tcg, true, timeout)?;
        let path = dir.join(format!("test-run-{n}.txt"));
        std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        let lines = text.lines().count();
        if !out.status.is_success() || lines != 5 {
            return Err(format!(
                "run {n}: {}, {lines} result lines of 5 (serial log {})",
                out.status.describe(),
                ws.rel(&log)
            ));
        }
        texts.push(text);
    }
    compare_runs(&texts[0], &texts[1]).map_err(|d| format!("the two runs differ:\n{d}"))
}

/// The boots of [`run`].
fn run_boots(ws: &Workspace, args: &LabArgs) -> Result<bool, String> {
    let accel = crate::pick_accel(crate::qemu::AccelChoice::Auto, !args.no_icount)?;
    let built = crate::build(ws, &args.build)?;
    crate::install::ensure_qemu()?;
    let dir = ws.target.join("lab");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut first: Option<(PathBuf, String)> = None;
    let mut ok = true;
    for n in 1..=args.runs.max(1) {
        println!("xtask: lab run {n}: booting (smp {}, icount {})...", args.smp, !args.no_icount);
        let (out, text, log) =
            boot_lab(ws, &built, 0, args.smp, accel, !args.no_icount, args.timeout)?;
        let lines = text.lines().count();
        let path = dir.join(format!("run-{n}.txt"));
        std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        let results = dir.join("results.txt");
        std::fs::write(&results, &text).map_err(|e| format!("{}: {e}", results.display()))?;
        println!(
            "xtask: lab run {n}: {}; {lines} result lines -> {}",
            out.status.describe(),
            ws.rel(&path)
        );
        if !out.status.is_success() || lines == 0 {
            println!("xtask: lab run {n} FAILED (serial log: {})", ws.rel(&log));
            ok = false;
            continue;
        }
        match &first {
            None => first = Some((path, text)),
            Some((p, t)) => match compare_runs(t, &text) {
                Ok(()) => println!("xtask: lab run {n}: identical to {}", ws.rel(p)),
                Err(diff) => {
                    ok = false;
                    println!("xtask: lab run {n}: DIFFERS from {}:\n{diff}", ws.rel(p));
                }
            },
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
    fn results_parse_and_draw_one_bar_per_policy() {
        let text = "lab workload=long-short policy=fifo tasks=44 p50_us=120 p99_us=900 jain_permille=800\n\
                    lab workload=long-short policy=lifo tasks=44 p50_us=40 p99_us=2000 jain_permille=700\n\
                    lab controller window=0 queued_pct=49\n\
                    lab workload=bursty policy=fifo p50_us=7\n";
        let r = parse_results(text);
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[1].policy.as_str(), r[1].values[1].clone()),
            ("lifo", ("p50_us".into(), 40.0))
        );
        let figs = figures(&r).unwrap();
        let names: Vec<&str> = figs.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "long-short-p50_us.svg",
                "long-short-p99_us.svg",
                "long-short-jain_permille.svg",
                "bursty-p50_us.svg"
            ]
        );
        // Two bars (fifo, lifo), each labelled, with its value.
        let svg = &figs[0].1;
        let doc = roxmltree::Document::parse(svg).unwrap();
        let texts: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_string()))
            .collect();
        for want in ["fifo", "lifo", "120", "40"] {
            assert!(texts.iter().any(|t| t == want), "{want} in {texts:?}");
        }
        let bars = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect"))
            .filter(|n| n.attribute("fill") == Some("#1F77B4"))
            .count();
        assert_eq!(bars, 2);
    }

    #[test]
    fn runs_compare_byte_for_byte() {
        let a = "lab workload=w policy=fifo total_us=100\nlab workload=w policy=lifo total_us=90\n";
        assert!(compare_runs(a, a).is_ok());
        // One figure off by one: named.
        let b = a.replace("total_us=90", "total_us=91");
        let d = compare_runs(a, &b).unwrap_err();
        assert!(d.contains("- lab workload=w policy=lifo total_us=90"), "{d}");
        assert!(d.contains("+ lab workload=w policy=lifo total_us=91"), "{d}");
        // A missing line, and a difference in bytes only.
        assert!(
            compare_runs(a, a.lines().next().unwrap())
                .unwrap_err()
                .contains("2 result lines against 1")
        );
        assert!(compare_runs(a, a.trim_end()).is_err());
    }

    #[test]
    fn keeps_only_lab_lines_in_order() {
        let log: Vec<String> =
            ["exo: boot", "lab a=1", "sched-lab: x", "lab b=2", " lab c"].map(String::from).into();
        assert_eq!(result_lines(&log), vec!["lab a=1".to_string(), "lab b=2".to_string()]);
    }
}
