//! Benchmark results: one figure ([`Entry`]), merging a run into earlier
//! ones, and the text tables (ours; ours vs Linux).
//!
//! An entry is `{"name", "unit", "median", "p99", "samples", "mode",
//! "run"}` (see [`crate::history`] for the files that hold them), where
//! `mode` is `"wall"` (cycles measured in real time) or `"icount"` (TCG with
//! `-icount shift=0`: one tick per guest instruction, so a `"cycles"` unit
//! from the kernel becomes `"guest-instructions"`). Each `cargo xtask bench`
//! replaces the entries of its own mode and keeps those of the other; a run
//! of some groups only (`--benches`) replaces only the entries it produced.

use serde::{Deserialize, Serialize};

use crate::registry::Bench;
use crate::report::BenchLine;

/// How a benchmark run measured time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Wall-clock cycles (KVM or plain TCG).
    Wall,
    /// TCG with `-icount shift=0`: guest instructions.
    Icount,
}

impl Mode {
    /// The `mode` string stored in `results.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Wall => "wall",
            Mode::Icount => "icount",
        }
    }
}

/// One entry of `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Benchmark name.
    pub name: String,
    /// Unit of `median` and `p99`.
    pub unit: String,
    /// Median.
    pub median: serde_json::Number,
    /// 99th percentile.
    pub p99: serde_json::Number,
    /// Number of samples.
    pub samples: u64,
    /// `"wall"` or `"icount"`.
    pub mode: String,
    /// The id of the run that measured it (see [`crate::history`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Throughput benchmarks (the registry's `plot = "throughput"`):
    /// operations per second of the whole machine, from the median (see
    /// [`add_throughput`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_per_s: Option<u64>,
    /// `ops_per_s` divided by the number of cores doing the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_per_s_per_core: Option<u64>,
    /// The number of cores doing the work (throughput benchmarks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
}

impl Entry {
    /// Turns a kernel bench line into an entry for `mode`.
    pub fn from_line(line: BenchLine, mode: Mode) -> Self {
        let unit = if mode == Mode::Icount && line.unit == "cycles" {
            "guest-instructions".to_string()
        } else {
            line.unit
        };
        Self {
            name: line.name,
            unit,
            median: line.median,
            p99: line.p99,
            samples: line.samples,
            mode: mode.as_str().to_string(),
            run: None,
            ops_per_s: None,
            ops_per_s_per_core: None,
            cores: None,
        }
    }
}

/// Ticks per second of a run's time stamps: under `--icount` (`-icount
/// shift=0`) exactly 10^9 (one guest instruction is one nanosecond of
/// virtual time, whatever the guest's TSC calibration says); wall-clock,
/// the TSC frequency our kernel measured (its `TSC N MHz` log line).
pub fn ticks_per_second(mode: Mode, lines: &[String]) -> Option<f64> {
    match mode {
        Mode::Icount => Some(1e9),
        Mode::Wall => lines.iter().find_map(|l| {
            let (num, tail) = l[l.find("TSC ")? + 4..].split_once(' ')?;
            tail.starts_with("MHz").then(|| num.parse::<f64>().ok().map(|m| m * 1e6)).flatten()
        }),
    }
}

/// Fills in the throughput of every entry the registry marks `plot =
/// "throughput"` (its median is a per-operation cost of the whole machine;
/// the registry says how many cores do the work): `ops_per_s` =
/// `ticks_per_second / median`, `ops_per_s_per_core` that over the cores.
/// Without a tick rate (a wall-clock run whose TSC rate is unknown) they
/// stay empty.
pub fn add_throughput(entries: &mut [Entry], registry: &[Bench], ticks_per_second: Option<f64>) {
    for e in entries.iter_mut() {
        let Some(b) = registry.iter().find(|b| b.name == e.name) else { continue };
        if b.plot.as_deref() != Some("throughput") {
            continue;
        }
        let Some(cores) = b.cores else { continue };
        e.cores = Some(cores);
        let Some(hz) = ticks_per_second else { continue };
        match e.median.as_f64() {
            Some(m) if m > 0.0 => {
                let ops = hz / m;
                e.ops_per_s = Some(ops.round() as u64);
                e.ops_per_s_per_core = Some((ops / f64::from(cores.max(1))).round() as u64);
            }
            _ => {}
        }
    }
}

/// The throughput table: per family of `plot = "throughput"` benchmarks,
/// one row per core count with the per-operation cost, ops/s and ops/s
/// per core; empty if `entries` has none.
pub fn throughput_table(entries: &[Entry], label: &str) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .filter_map(|e| {
            let cores = e.cores?;
            let show = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
            Some(vec![
                e.name.clone(),
                cores.to_string(),
                e.median.to_string(),
                e.unit.clone(),
                show(e.ops_per_s),
                show(e.ops_per_s_per_core),
                label.to_string(),
            ])
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    render(
        &["benchmark", "cores", "per op", "unit", "ops/s", "ops/s/core", "timing"],
        &rows,
        &[1, 2, 4, 5],
    )
}

/// Which existing entries of its mode a run replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// All of them (a full run).
    Mode,
    /// Those with the names of the new entries (a run of some groups).
    SameNames,
}

/// Merges `new` (all of `mode`) into `old`: keeps entries of other modes,
/// drops those of `mode` (with `Scope::SameNames`, only those a new entry
/// replaces).
pub fn merge(old: Vec<Entry>, new: Vec<Entry>, mode: Mode, scope: Scope) -> Vec<Entry> {
    let replaced = |e: &Entry| {
        e.mode == mode.as_str() && (scope == Scope::Mode || new.iter().any(|n| n.name == e.name))
    };
    let mut merged: Vec<Entry> = old.into_iter().filter(|e| !replaced(e)).collect();
    merged.extend(new);
    merged
}

/// Renders the results as an aligned text table.
pub fn table(entries: &[Entry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.unit.clone(),
                e.median.to_string(),
                e.p99.to_string(),
                e.samples.to_string(),
            ]
        })
        .collect();
    render(&["name", "unit", "median", "p99", "samples"], &rows, &[2, 3, 4])
}

/// An aligned text table: two spaces between columns, the columns in
/// `right` right-aligned (numbers), a rule under the header, no trailing
/// blanks.
pub fn render<R: AsRef<[String]>>(header: &[&str], rows: &[R], right: &[usize]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.as_ref()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &[String]| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if right.contains(&i) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    push_row(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
    for row in rows {
        push_row(row.as_ref());
    }
    out
}

/// How the figures of a run were timed, for the table's labels.
pub fn timing_label(mode: &str, accel: &str) -> &'static str {
    match (mode, accel) {
        ("icount", _) => "icount: instructions",
        (_, "kvm") => "wall: KVM",
        _ => "wall: TCG, host scheduling",
    }
}

/// One row of the ours-vs-Linux comparison, as `results.json` keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VsRow {
    /// Our benchmark.
    pub name: String,
    /// Its Linux counterpart.
    pub linux_name: String,
    /// `"wall"` or `"icount"`.
    pub mode: String,
    /// Our median, if measured.
    pub ours: Option<serde_json::Number>,
    /// Linux's median, if measured.
    pub linux: Option<serde_json::Number>,
    /// Linux / ours (above 1: we take fewer cycles).
    pub linux_over_ours: Option<f64>,
    /// Why ours has no figure, when our system cannot run it yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ours_unsupported: Option<String>,
}

/// The comparison rows: one per benchmark of `benches` with a Linux
/// counterpart and a figure (or a reason) on either side. `unsupported`:
/// `(our name, why)` of what our system cannot run yet.
pub fn vs_rows(
    benches: &[&crate::registry::Bench],
    ours: &[Entry],
    linux: &[Entry],
    mode: Mode,
    unsupported: &[(String, String)],
) -> Vec<VsRow> {
    let median = |entries: &[Entry], name: &str| {
        entries.iter().find(|e| e.name == name && e.mode == mode.as_str()).map(|e| e.median.clone())
    };
    let mut rows = Vec::new();
    for b in benches {
        let Some(lname) = &b.linux else { continue };
        let (o, l) = (median(ours, &b.name), median(linux, lname));
        let why = unsupported.iter().find(|(n, _)| *n == b.name).map(|(_, w)| w.clone());
        if o.is_none() && l.is_none() && why.is_none() {
            continue;
        }
        let ratio = match (o.as_ref().and_then(|n| n.as_f64()), l.as_ref().and_then(|n| n.as_f64()))
        {
            (Some(o), Some(l)) if o > 0.0 => Some((l / o * 100.0).round() / 100.0),
            _ => None,
        };
        let ours_unsupported = if o.is_none() { why } else { None };
        rows.push(VsRow {
            name: b.name.clone(),
            linux_name: lname.clone(),
            mode: mode.as_str().into(),
            ours: o,
            linux: l,
            linux_over_ours: ratio,
            ours_unsupported,
        });
    }
    rows
}

/// `--vs linux`: the rows of [`vs_rows`] as a table: our median (or "not
/// yet supported"), Linux's, and Linux / ours. `label` says how they were
/// timed (see [`timing_label`]). The reasons for "not yet supported"
/// follow the table.
pub fn vs_table(rows: &[VsRow], label: &str) -> String {
    let show =
        |n: &Option<serde_json::Number>| n.as_ref().map_or("missing".into(), |n| n.to_string());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                match (&r.ours, &r.ours_unsupported) {
                    (None, Some(_)) => "not yet supported".into(),
                    (o, _) => show(o),
                },
                r.linux_name.clone(),
                show(&r.linux),
                r.linux_over_ours.map_or("-".into(), |x| format!("{x:.2}")),
                label.to_string(),
            ]
        })
        .collect();
    let mut out = render(
        &["benchmark", "ours", "linux counterpart", "linux", "linux/ours", "timing"],
        &cells,
        &[1, 3, 4],
    );
    for r in rows {
        if let (None, Some(why)) = (&r.ours, &r.ours_unsupported) {
            out.push_str(&format!("{}: not yet supported on ours: {why}\n", r.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, unit: &str) -> BenchLine {
        BenchLine {
            name: name.into(),
            unit: unit.into(),
            median: 10.into(),
            p99: 20.into(),
            samples: 100,
        }
    }

    #[test]
    fn icount_renames_cycles() {
        let e = Entry::from_line(line("a", "cycles"), Mode::Icount);
        assert_eq!(e.unit, "guest-instructions");
        assert_eq!(e.mode, "icount");
        let e = Entry::from_line(line("a", "ns"), Mode::Icount);
        assert_eq!(e.unit, "ns");
        let e = Entry::from_line(line("a", "cycles"), Mode::Wall);
        assert_eq!(e.unit, "cycles");
        assert_eq!(e.mode, "wall");
    }

    #[test]
    fn merge_keeps_other_mode_and_replaces_own() {
        let old = vec![
            Entry::from_line(line("old_wall", "cycles"), Mode::Wall),
            Entry::from_line(line("old_icount", "cycles"), Mode::Icount),
        ];
        let new = vec![Entry::from_line(line("new_icount", "cycles"), Mode::Icount)];
        let merged = merge(old, new, Mode::Icount, Scope::Mode);
        let names: Vec<_> = merged.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["old_wall", "new_icount"]);
        let merged = merge(
            vec![],
            vec![Entry::from_line(line("x", "cycles"), Mode::Wall)],
            Mode::Wall,
            Scope::Mode,
        );
        assert_eq!(merged.len(), 1);
    }

    #[test]
    fn partial_run_replaces_only_its_names() {
        let old = vec![
            Entry::from_line(line("a", "cycles"), Mode::Icount),
            Entry::from_line(line("b", "cycles"), Mode::Icount),
            Entry::from_line(line("b", "cycles"), Mode::Wall),
        ];
        let mut b = Entry::from_line(line("b", "cycles"), Mode::Icount);
        b.samples = 7;
        let merged = merge(old, vec![b], Mode::Icount, Scope::SameNames);
        let got: Vec<_> =
            merged.iter().map(|e| (e.name.as_str(), e.mode.as_str(), e.samples)).collect();
        assert_eq!(got, [("a", "icount", 100), ("b", "wall", 100), ("b", "icount", 7)]);
    }

    #[test]
    fn json_shape() {
        let e = Entry::from_line(line("a", "cycles"), Mode::Wall);
        let v: serde_json::Value = serde_json::to_value(vec![e]).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"name":"a","unit":"cycles","median":10,"p99":20,"samples":100,"mode":"wall"}])
        );
    }

    #[test]
    fn vs_table_rows() {
        let all = crate::registry::load(&crate::root()).unwrap();
        let sel = crate::registry::select(
            &all,
            &["syscall_null".into(), "ring_nop_batch_8".into()],
            false,
        )
        .unwrap();
        let mut ours = Entry::from_line(line("syscall_null", "cycles"), Mode::Icount);
        ours.median = 64.into();
        let mut linux = Entry::from_line(line("linux_getpid", "cycles"), Mode::Icount);
        linux.median = 320.into();
        let wall_linux = Entry::from_line(line("linux_io_uring_nop_batch_8", "cycles"), Mode::Wall);
        let rows = vs_rows(&sel, &[ours], &[linux, wall_linux], Mode::Icount, &[]);
        let t = vs_table(&rows, timing_label("icount", "tcg"));
        let lines: Vec<_> = t.lines().collect();
        // Header, rule, syscall_null; ring_nop_batch_8 has only a wall
        // figure (another mode) and syscall_null_for_ring no counterpart.
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[0]
                .starts_with("benchmark     ours  linux counterpart  linux  linux/ours  timing")
        );
        assert!(
            lines[2].starts_with(
                "syscall_null    64  linux_getpid         320        5.00  icount: instructions"
            ),
            "{t}"
        );
        assert_eq!(timing_label("wall", "tcg"), "wall: TCG, host scheduling");
        assert_eq!(rows[0].linux_over_ours, Some(5.0));
    }

    #[test]
    fn unsupported_rows_say_why_and_never_show_a_figure() {
        let all = crate::registry::load(&crate::root()).unwrap();
        let sel = crate::registry::select(&all, &["posix_".into()], false).unwrap();
        let mut linux = Entry::from_line(line("linux_busybox_true", "cycles"), Mode::Icount);
        linux.median = 998_285.into();
        let why = "fork: Function not implemented".to_string();
        let unsupported: Vec<(String, String)> =
            sel.iter().map(|b| (b.name.clone(), why.clone())).collect();
        let rows = vs_rows(&sel, &[], &[linux], Mode::Icount, &unsupported);
        // Every workload has a row, measured on Linux or not.
        assert_eq!(rows.len(), 6);
        assert!(rows.iter().all(|r| r.ours.is_none() && r.linux_over_ours.is_none()));
        assert!(rows.iter().all(|r| r.ours_unsupported.as_deref() == Some(why.as_str())));
        let t = vs_table(&rows, "icount: instructions");
        let first = t.lines().nth(2).unwrap();
        assert!(first.starts_with("posix_busybox_true"), "{t}");
        assert!(first.contains("not yet supported") && first.contains("998285"), "{t}");
        assert!(
            t.contains("posix_gzip_1m: not yet supported on ours: fork: Function not implemented")
        );
        let v = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(v["ours"], serde_json::Value::Null);
        assert_eq!(v["ours_unsupported"], why.as_str());
        // A figure wins over a stale reason.
        let mut ours = Entry::from_line(line("posix_busybox_true", "cycles"), Mode::Icount);
        ours.median = 499_000.into();
        let rows = vs_rows(&sel[..1], &[ours], &[], Mode::Icount, &unsupported);
        assert_eq!(rows[0].ours_unsupported, None);
    }

    #[test]
    fn throughput_from_the_registry() {
        let all = crate::registry::load(&crate::root()).unwrap();
        let mut entries = vec![
            Entry::from_line(line("kv_op_7_clients", "cycles"), Mode::Icount),
            Entry::from_line(line("rt_spawn_4_cores", "cycles"), Mode::Icount),
            Entry::from_line(line("syscall_null", "cycles"), Mode::Icount),
        ];
        entries[0].median = 20_000.into();
        entries[1].median = 1_000.into();
        add_throughput(&mut entries, &all, ticks_per_second(Mode::Icount, &[]));
        // kv with 7 clients keeps 7 cores busy (the server's and six
        // clients'), as the registry says.
        assert_eq!(
            (entries[0].cores, entries[0].ops_per_s, entries[0].ops_per_s_per_core),
            (Some(7), Some(50_000), Some(7_143))
        );
        assert_eq!(
            (entries[1].cores, entries[1].ops_per_s, entries[1].ops_per_s_per_core),
            (Some(4), Some(1_000_000), Some(250_000))
        );
        assert_eq!((entries[2].cores, entries[2].ops_per_s), (None, None));
        let t = throughput_table(&entries, "icount: instructions");
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[2].starts_with("kv_op_7_clients       7   20000"), "{t}");
        assert!(lines[3].contains("1000000      250000"), "{t}");
        assert_eq!(throughput_table(&entries[2..], "x"), "");
        // Without a known tick rate (wall clock, no log line): no figure.
        let mut wall = vec![Entry::from_line(line("kv_op_1_clients", "cycles"), Mode::Wall)];
        add_throughput(&mut wall, &all, ticks_per_second(Mode::Wall, &[]));
        assert_eq!((wall[0].cores, wall[0].ops_per_s), (Some(2), None));
        // The JSON keeps older readers' shape and adds the fields.
        let v = serde_json::to_value(&entries[1]).unwrap();
        assert_eq!(v["ops_per_s"], 1_000_000);
        assert_eq!(v["cores"], 4);
    }

    #[test]
    fn tsc_rate_from_the_kernel_log() {
        let lines = vec![
            "exo: boot ok cores=8".to_string(),
            "[cpu 0] INFO  TSC 2995 MHz, APIC timer 62 MHz, idle tick 100 Hz".to_string(),
        ];
        assert_eq!(ticks_per_second(Mode::Wall, &lines), Some(2_995e6));
        assert_eq!(ticks_per_second(Mode::Icount, &lines), Some(1e9));
        assert_eq!(ticks_per_second(Mode::Wall, &["TSC unknown".to_string()]), None);
    }

    #[test]
    fn table_aligns() {
        let t = table(&[Entry::from_line(line("ipc_roundtrip", "cycles"), Mode::Wall)]);
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "name           unit    median  p99  samples");
        assert_eq!(lines[2], "ipc_roundtrip  cycles      10   20      100");
    }
}
