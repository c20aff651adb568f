//! `cargo xtask bench`: what the options ask for, in order: `--list` (the
//! registry), `--compare` (two recorded runs), `--plot` (figures of
//! `results.json`), or a run: choose benchmarks ([`crate::registry`]),
//! boot our kernel with `mode=bench`, with `--vs linux` boot the Linux
//! guest ([`crate::linux`]) in the same QEMU configuration, print the
//! tables, record the run ([`crate::history`]).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::bench::{self, Entry, Mode, Scope};
use crate::history::{self, Record, RunInfo};
use crate::qemu::{self, Boot, GuestStatus};
use crate::registry::{self, Bench};
use crate::{BenchArgs, Versus, Workspace, install, plot, report, workloads};

/// Runs `cargo xtask bench`.
pub fn run(ws: &Workspace, args: &BenchArgs) -> Result<bool, String> {
    let all = registry::load(&ws.root)?;
    if args.list {
        print!("{}", registry::list(&all));
        return Ok(true);
    }
    if let Some(which) = &args.compare {
        return compare(ws, which, args.fail_on_regression);
    }
    if args.plot {
        return plot_cmd(ws, &all, args.docs);
    }
    measure(ws, args, &all)
}

/// `--smoke` without names: a benchmark of `benchsys` and of `ringbench`
/// (one boot of those two groups) with each its Linux counterpart, and
/// the POSIX workloads (one run of benches/posix/workloads.c on each
/// side). `--vs linux` is checked the same way for any selection; this
/// one only keeps CI's cost small.
pub const SMOKE: &[&str] = &["syscall_null", "fault_upcall_resume", "ring_nop_batch_", "posix_"];
/// `--smoke`'s samples per benchmark unless `--samples`.
pub const SMOKE_SAMPLES: u32 = 20;

/// Whether kernel group `group` runs under `benches=fragments` (the
/// kernel's rule: it contains an including fragment, if there is one, and
/// no `-` excluded one).
fn group_selected(group: &str, fragments: &str) -> bool {
    let frags: Vec<&str> = fragments.split(',').filter(|f| !f.is_empty()).collect();
    let (excl, incl): (Vec<&str>, Vec<&str>) = frags.iter().partition(|f| f.starts_with('-'));
    !excl.iter().any(|f| group.contains(&f[1..]))
        && (incl.is_empty() || incl.iter().any(|f| group.contains(f)))
}

/// The selected benchmarks and the kernel's `benches=` value (`None`:
/// every group).
fn selection<'a>(
    args: &BenchArgs,
    all: &'a [Bench],
) -> Result<(Vec<&'a Bench>, Option<String>), String> {
    if let Some(raw) = &args.benches {
        let sel: Vec<&Bench> = all
            .iter()
            .filter(|b| group_selected(&b.group, raw))
            .filter(|b| !args.paired || b.linux.is_some())
            .collect();
        let groups = if args.paired { registry::kernel_groups(&sel) } else { raw.clone() };
        return Ok((sel, Some(groups)));
    }
    let sel = registry::select(all, &args.names, args.paired)?;
    if sel.is_empty() {
        return Err("no benchmark selected".into());
    }
    let everything = sel.len() == all.len();
    let groups = (!everything).then(|| registry::kernel_groups(&sel));
    Ok((sel, groups))
}

/// The `bench` results and problems in a guest's serial lines.
fn collect(lines: &[String], mode: Mode) -> (Vec<Entry>, bool, Vec<String>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let mut done = false;
    for line in lines {
        match report::parse_bench_line(line) {
            None => {}
            Some(Ok(report::Bench::Done)) => done = true,
            Some(Ok(report::Bench::Result(b))) => entries.push(Entry::from_line(b, mode)),
            Some(Err(e)) => problems.push(e),
        }
    }
    (entries, done, problems)
}

fn boot_config(
    args: &BenchArgs,
    accel: qemu::Accel,
    kernel: &Path,
    initrd: &Path,
    append: String,
    log: std::path::PathBuf,
) -> Boot {
    Boot {
        kernel: kernel.to_path_buf(),
        initrd: initrd.to_path_buf(),
        append,
        smp: args.smp,
        accel,
        cpu: args.cpu.clone(),
        icount: args.icount,
        gdb: false,
        timeout: Some(Duration::from_secs(args.timeout)),
        log,
        interactive: false,
    }
}

/// A run: boot, tables, record.
fn measure(ws: &Workspace, args: &BenchArgs, all: &[Bench]) -> Result<bool, String> {
    let started = Instant::now();
    let smoke_args;
    let args = if args.smoke && args.names.is_empty() && args.benches.is_none() {
        smoke_args = BenchArgs {
            names: SMOKE.iter().map(|s| s.to_string()).collect(),
            samples: Some(args.samples.unwrap_or(SMOKE_SAMPLES)),
            paired: true,
            ..args.clone()
        };
        &smoke_args
    } else {
        args
    };
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // The tree as built, not as it may be by the time the run ends.
    let (commit, dirty) = history::commit(&ws.root);
    let (selected, groups) = selection(args, all)?;
    let accel = crate::pick_accel(args.accel, args.icount)?;
    let built = crate::build(ws, &args.build)?;
    install::ensure_qemu()?;
    let mode = if args.icount { Mode::Icount } else { Mode::Wall };

    let mut append = "mode=bench".to_string();
    if let Some(g) = &groups {
        append.push_str(&format!(" benches={g}"));
    }
    if let Some(n) = args.samples {
        append.push_str(&format!(" bench_samples={n}"));
    }
    // Kernel groups to run: all (`None`), some, or none when only the POSIX
    // workloads are selected.
    let kernel_boot = groups.as_deref() != Some("");
    let mut ours = Vec::new();
    let mut problems = Vec::new();
    if kernel_boot {
        println!(
            "xtask: booting bench kernel ({}{}, smp {}){}...",
            accel.as_str(),
            if args.icount { ", icount" } else { "" },
            args.smp,
            groups.as_deref().map(|g| format!(", groups {g}")).unwrap_or_default()
        );
        let boot = boot_config(
            args,
            accel,
            &built.kernel,
            &built.initrd,
            append.clone(),
            ws.log("bench", mode.as_str()),
        );
        let out = qemu::boot(&boot)?;
        println!("xtask: serial log: {}", ws.rel(&boot.log));
        let (entries, done, found) = collect(&out.lines, mode);
        ours = entries;
        problems = found;
        bench::add_throughput(&mut ours, all, bench::ticks_per_second(mode, &out.lines));
        if !out.status.is_success() {
            problems.push(out.status.describe());
        }
        if !done {
            problems.push("the kernel never printed `bench done`".into());
        }
    }

    // Issue 17's workloads on ours: the POSIX runtime runs
    // benches/posix/workloads.c; what it cannot run yet is said, not faked.
    let posix: Vec<&str> =
        selected.iter().filter(|b| b.group == workloads::GROUP).map(|b| b.name.as_str()).collect();
    let mut unsupported = Vec::new();
    if !posix.is_empty() {
        println!("xtask: running the POSIX workloads on ours (cargo xtask posix's root)...");
        let run = std::fs::read(&built.initrd)
            .map_err(|e| format!("{}: {e}", ws.rel(&built.initrd)))
            .and_then(|base| {
                let program = workloads::build(&ws.root, &ws.target)?;
                workloads::run_ours(ws, &base, &program, accel, args)
            });
        let mut outcome = match run {
            Ok((outcome, why, log)) => {
                println!("xtask: kernel log: {}", ws.rel(&log));
                let mut o = outcome;
                workloads::fill_missing(&mut o, &posix, &why);
                o
            }
            Err(e) => {
                let mut o = workloads::Outcome::default();
                workloads::fill_missing(&mut o, &posix, &format!("cannot run ours: {e}"));
                o
            }
        };
        ours.append(&mut outcome.entries);
        unsupported = outcome.unsupported;
    }

    let mut linux = Vec::new();
    let mut linux_kernel = None;
    if args.vs == Some(Versus::Linux) {
        let lgroups = registry::linux_groups(&selected);
        let with_workloads = lgroups.split(',').any(|g| g == "busybox");
        let guest = crate::linux::prepare(&ws.root, &ws.target, with_workloads)?;
        if lgroups.is_empty() {
            println!("xtask: no selected benchmark has a Linux counterpart; not booting Linux");
        } else {
            let everything = lgroups == registry::LINUX_GROUPS.join(",");
            let mut lappend =
                crate::linux::append(args.samples, (!everything).then_some(lgroups.as_str()));
            if with_workloads {
                lappend.push_str(&format!(" workload_samples={}", workloads::samples(args)));
            }
            println!("xtask: booting Linux ({}; {lappend})...", guest.package);
            let lboot = boot_config(
                args,
                accel,
                &guest.vmlinux,
                &guest.initramfs,
                lappend,
                ws.log("bench-linux", mode.as_str()),
            );
            let lout = qemu::boot(&lboot)?;
            println!("xtask: serial log: {}", ws.rel(&lboot.log));
            let (entries, ldone, lproblems) = collect(&lout.lines, mode);
            problems.extend(lproblems);
            // Linux powers off (exit 0) rather than using the debug-exit
            // port; `bench done` says it got through.
            let ended = matches!(lout.status, GuestStatus::NoResult | GuestStatus::Success);
            if !ldone || !ended {
                problems
                    .push(format!("the Linux guest did not finish: {}", lout.status.describe()));
            }
            linux = entries;
            linux_kernel = Some(guest.package);
        }
    }

    let label = bench::timing_label(mode.as_str(), accel.as_str());
    let vs_rows = bench::vs_rows(&selected, &ours, &linux, mode, &unsupported);
    println!("\nbenchmarks ({}; {label}):", mode.as_str());
    print!("{}", bench::table(&ours));
    let tput = bench::throughput_table(&ours, label);
    if !tput.is_empty() {
        println!("\nthroughput over cores ({}; {label}):", mode.as_str());
        print!("{tput}");
        println!("{}", throughput_note(mode));
    }
    if args.vs.is_some() {
        println!("\nLinux counterparts ({}; {label}):", mode.as_str());
        print!("{}", bench::table(&linux));
        println!("\nours vs Linux (medians; linux/ours above 1: we take fewer):");
        print!("{}", bench::vs_table(&vs_rows, label));
        println!("{}", honesty_note(mode));
        // The smoke check: a row, with both sides (or our reason), for
        // every selected benchmark with a counterpart.
        problems.extend(vs_gaps(&selected, &vs_rows));
    } else if !unsupported.is_empty() {
        for (name, why) in &unsupported {
            println!("{name}: not yet supported on ours: {why}");
        }
    }
    let took = started.elapsed();
    println!("xtask: bench took {:.0} s", took.as_secs_f64());
    if !problems.is_empty() {
        for p in &problems {
            println!("xtask: bench failed: {p}");
        }
        println!("xtask: results not written");
        return Ok(false);
    }
    if args.smoke {
        println!(
            "xtask: --vs linux smoke check passed: {} rows, one for each selected benchmark \
             with a counterpart (results not written)",
            vs_rows.len()
        );
        return Ok(true);
    }

    let (id, date) = history::stamp(unix);
    let run = RunInfo {
        id,
        date,
        commit,
        dirty,
        qemu: history::qemu_version(),
        accel: accel.as_str().into(),
        mode: mode.as_str().into(),
        smp: args.smp,
        cpu: args.cpu.clone(),
        command_line: std::iter::once("cargo xtask".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        append,
        host_cpu: history::host_cpu(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()),
        linux_kernel,
    };
    let mut record =
        Record { format: history::FORMAT, run, results: ours.into_iter().chain(linux).collect() };
    let saved = history::save(&ws.target, &mut record)?;
    println!("xtask: recorded {}", ws.rel(&saved));

    let path = ws.target.join("bench").join("results.json");
    let old = match std::fs::read_to_string(&path) {
        Err(_) => history::Results::default(),
        Ok(text) => history::parse_results(&text).unwrap_or_else(|e| {
            println!("xtask: warning: {}: does not parse ({e}); replacing it", ws.rel(&path));
            history::Results::default()
        }),
    };
    let scope = if groups.is_some() { Scope::SameNames } else { Scope::Mode };
    let (theirs, ours): (Vec<Entry>, Vec<Entry>) =
        record.results.iter().cloned().partition(|e| e.name.starts_with("linux_"));
    let mut folded = history::fold(old, &record.run, ours, theirs, mode, scope);
    if args.vs.is_some() {
        history::fold_vs(&mut folded, vs_rows);
    }
    let mut json = serde_json::to_string_pretty(&folded).map_err(|e| e.to_string())?;
    json.push('\n');
    std::fs::write(&path, json).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("xtask: wrote {}", ws.rel(&path));
    Ok(true)
}

/// What the figures of a mode can be trusted for.
pub fn honesty_note(mode: Mode) -> &'static str {
    match mode {
        Mode::Icount => {
            "note: -icount figures count guest instructions. One-core paths whose samples all \
             agree repeat exactly with the same build, initrd and Linux kernel; cross-core \
             figures (which count every vCPU's instructions in the window) and most of \
             Linux's move by a few instructions between runs: an idle guest's virtual clock \
             follows the host's (-icount sleep=on), so timer interrupts land differently"
        }
        Mode::Wall => {
            "note: wall-clock figures; under TCG on a shared host they mostly measure QEMU's \
             and the host's scheduling and do not repeat: use --icount to compare paths"
        }
    }
}

/// What the `--vs linux` comparison lacks: for each selected benchmark
/// with a Linux counterpart, a row with Linux's figure and ours (or the
/// reason ours cannot run yet). Empty when complete.
pub fn vs_gaps(selected: &[&Bench], rows: &[bench::VsRow]) -> Vec<String> {
    let mut gaps = Vec::new();
    for b in selected.iter().filter(|b| b.linux.is_some()) {
        match rows.iter().find(|r| r.name == b.name) {
            None => gaps.push(format!("--vs linux: no row for {}", b.name)),
            Some(r) if r.linux.is_none() => {
                gaps.push(format!("--vs linux: {}: no Linux figure ({})", b.name, r.linux_name))
            }
            Some(r) if r.ours.is_none() && r.ours_unsupported.is_none() => {
                gaps.push(format!("--vs linux: {}: no figure of ours", b.name))
            }
            Some(_) => {}
        }
    }
    gaps
}

/// What the throughput figures of a mode mean.
pub fn throughput_note(mode: Mode) -> &'static str {
    match mode {
        Mode::Icount => {
            "note: under -icount one vCPU runs at a time and the clock counts every vCPU's \
             instructions, so ops/s is operations per 10^9 guest instructions of the whole \
             machine: a flat curve means the work per operation does not grow with cores \
             (perfect scaling); it cannot show a parallel speed-up"
        }
        Mode::Wall => {
            "note: TCG wall-clock (TSC rate from our kernel's log): 8 vCPUs share the host's \
             cores, so this mostly measures the host; it is not a hardware speed-up"
        }
    }
}

/// `--compare A [B]`.
fn compare(ws: &Workspace, which: &[String], fail_on_regression: bool) -> Result<bool, String> {
    let a = history::resolve(&ws.root, &ws.target, &which[0])?;
    let b = history::resolve(&ws.root, &ws.target, which.get(1).map_or("latest", String::as_str))?;
    if a == b {
        println!("xtask: note: both sides are the same run ({})", ws.rel(&a));
    }
    let (old, new) = (history::read(&a)?, history::read(&b)?);
    println!("old: {} [{}]", history::describe(&old.run), ws.rel(&a));
    println!("new: {} [{}]", history::describe(&new.run), ws.rel(&b));
    let changes = history::compare(&old.results, &new.results);
    if changes.is_empty() {
        return Err("the two runs share no benchmark of the same name and mode".into());
    }
    print!("{}", history::compare_table(&changes));
    let regressions = changes.iter().filter(|c| c.verdict == history::Verdict::Regression).count();
    println!(
        "{regressions} regression(s) among {} benchmarks (exact figures: any change is real; \
         others: beyond the larger p99/median spread)",
        changes.len()
    );
    Ok(!(fail_on_regression && regressions > 0))
}

/// `--plot [--docs]`.
fn plot_cmd(ws: &Workspace, all: &[Bench], docs: bool) -> Result<bool, String> {
    let path = ws.target.join("bench").join("results.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("reading {}: {e} (run `cargo xtask bench` first)", ws.rel(&path)))?;
    let results = history::parse_results(&text).map_err(|e| format!("{}: {e}", ws.rel(&path)))?;
    let figures = plot::figures(all, &results.results)?;
    if figures.is_empty() {
        println!("xtask: nothing to plot in {}", ws.rel(&path));
        return Ok(true);
    }
    for p in plot::write(&ws.target.join("bench").join("plots"), &figures)? {
        println!("xtask: wrote {}", ws.rel(&p));
    }
    if docs {
        let dir = ws.root.join("docs").join("bench");
        plot::write(&dir, &figures)?;
        let page = docs_page(all, &results, &figures);
        std::fs::write(dir.join("README.md"), page).map_err(|e| e.to_string())?;
        println!("xtask: wrote {} (figures and README.md)", ws.rel(&dir));
    }
    Ok(true)
}

/// docs/bench/README.md, generated from `results.json`.
fn docs_page(all: &[Bench], results: &history::Results, figures: &[(String, String)]) -> String {
    let mut s = String::from(
        "# Benchmark figures\n\n<!-- Generated by `cargo xtask bench --plot --docs` from \
         target/bench/results.json; do not edit by hand. -->\n\n\
         Regenerate: run the benchmarks (e.g. `cargo xtask bench --vs linux --icount --paired`), \
         then `cargo xtask bench --plot --docs`.\n\n",
    );
    s.push_str("Runs the figures come from:\n\n");
    for r in &results.runs {
        s.push_str(&format!(
            "- {}: `{}`; {}{}; {} {} smp {}; host {}{}\n",
            r.date,
            r.command_line,
            r.commit.as_deref().map_or("?", |c| &c[..c.len().min(12)]),
            if r.dirty == Some(true) { " (dirty tree)" } else { "" },
            r.qemu,
            r.accel,
            r.smp,
            r.host_cpu,
            r.linux_kernel.as_deref().map(|k| format!("; Linux {k}")).unwrap_or_default(),
        ));
    }
    let everything: Vec<&Bench> = all.iter().collect();
    for mode in [Mode::Icount, Mode::Wall] {
        let (theirs, ours): (Vec<Entry>, Vec<Entry>) =
            results.results.iter().cloned().partition(|e| e.name.starts_with("linux_"));
        if !theirs.iter().any(|e| e.mode == mode.as_str()) {
            continue;
        }
        let accel = results
            .runs
            .iter()
            .find(|r| r.mode == mode.as_str())
            .map_or("tcg", |r| r.accel.as_str());
        let label = bench::timing_label(mode.as_str(), accel);
        s.push_str(&format!("\n## Ours vs Linux ({})\n\n```\n", mode.as_str()));
        let unsupported: Vec<(String, String)> = results
            .vs
            .iter()
            .filter(|r| r.mode == mode.as_str())
            .filter_map(|r| Some((r.name.clone(), r.ours_unsupported.clone()?)))
            .collect();
        let rows = bench::vs_rows(&everything, &ours, &theirs, mode, &unsupported);
        s.push_str(&bench::vs_table(&rows, label));
        s.push_str(&format!("```\n\n{}\n", honesty_note(mode)));
    }
    for mode in [Mode::Icount, Mode::Wall] {
        let mine: Vec<Entry> =
            results.results.iter().filter(|e| e.mode == mode.as_str()).cloned().collect();
        let accel = results
            .runs
            .iter()
            .find(|r| r.mode == mode.as_str())
            .map_or("tcg", |r| r.accel.as_str());
        let t = bench::throughput_table(&mine, bench::timing_label(mode.as_str(), accel));
        if !t.is_empty() {
            s.push_str(&format!(
                "\n## Throughput over cores ({})\n\n```\n{t}```\n\n",
                mode.as_str()
            ));
            s.push_str(&format!("{}\n", throughput_note(mode)));
        }
    }
    s.push_str("\n## Figures\n\n");
    for (name, _) in figures {
        s.push_str(&format!("![{name}]({name})\n\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_finds_missing_rows() {
        let all = registry::load(&crate::root()).unwrap();
        let sel =
            registry::select(&all, &["syscall_null".into(), "posix_busybox_true".into()], true)
                .unwrap();
        let e = |name: &str, v: u64| {
            let mut e = Entry::from_line(
                report::BenchLine {
                    name: name.into(),
                    unit: "cycles".into(),
                    median: v.into(),
                    p99: v.into(),
                    samples: 1,
                },
                Mode::Icount,
            );
            e.median = v.into();
            e
        };
        let why = vec![("posix_busybox_true".to_string(), "fork: ENOSYS".to_string())];
        // Complete: both figures for the null call, Linux's and our reason
        // for the workload.
        let linux = [e("linux_getpid", 320), e("linux_busybox_true", 998_285)];
        let rows = bench::vs_rows(&sel, &[e("syscall_null", 64)], &linux, Mode::Icount, &why);
        assert_eq!(vs_gaps(&sel, &rows), Vec::<String>::new());
        // Linux's figure missing; ours missing without a reason.
        let rows = bench::vs_rows(&sel, &[], &linux[1..], Mode::Icount, &[]);
        let gaps = vs_gaps(&sel, &rows);
        assert_eq!(gaps.len(), 2, "{gaps:?}");
        assert!(gaps[0].contains("syscall_null") && gaps[0].contains("no row"), "{gaps:?}");
        assert!(gaps[1].contains("no figure of ours"), "{gaps:?}");
        let rows = bench::vs_rows(&sel, &[e("syscall_null", 64)], &linux[1..], Mode::Icount, &why);
        assert_eq!(
            vs_gaps(&sel, &rows),
            ["--vs linux: syscall_null: no Linux figure (linux_getpid)"]
        );
        // The smoke subset names real benchmarks of both kinds.
        let smoke: Vec<String> = SMOKE.iter().map(|s| s.to_string()).collect();
        let sel = registry::select(&all, &smoke, true).unwrap();
        assert!(
            sel.iter().any(|b| b.group == "benchsys") && sel.iter().any(|b| b.group == "posix")
        );
        assert_eq!(registry::kernel_groups(&sel), "benchsys,ringbench");
    }

    #[test]
    fn raw_group_fragments_follow_the_kernel() {
        assert!(group_selected("isobench_gap", "isobench"));
        assert!(!group_selected("isobench_gap", "isobench,-gap"));
        assert!(group_selected("tlbbench", "-gap"));
        assert!(!group_selected("kv", "tlb,ring"));
        assert!(group_selected("kv", ""));
    }
}
