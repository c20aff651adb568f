//! Runs that can be compared: what a run was (commit, date, QEMU, host),
//! the history of runs under `target/bench/history/<id>.json`, the merged
//! `target/bench/results.json`, and `--compare` between two runs.
//!
//! A history file is `{"format": 2, "run": RunInfo, "results": [Entry]}`,
//! every figure one run measured (ours and Linux's). `results.json` is
//! `{"format": 2, "runs": [RunInfo], "results": [Entry]}`: the latest
//! figure of each name and mode, each naming its run; a legacy
//! `results.json` (a bare list of entries) still reads.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::bench::Entry;

/// The file format version written.
pub const FORMAT: u32 = 2;

/// What one `cargo xtask bench` run was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The run's id, its UTC start time `YYYYMMDDTHHMMSSZ`: also the
    /// history file's name.
    pub id: String,
    /// The start time, RFC 3339 UTC.
    pub date: String,
    /// `git rev-parse HEAD`, if git answered.
    pub commit: Option<String>,
    /// Whether tracked files differed from the commit.
    pub dirty: Option<bool>,
    /// The first line of `qemu-system-x86_64 --version`.
    pub qemu: String,
    /// `tcg` or `kvm`.
    pub accel: String,
    /// `wall` or `icount`.
    pub mode: String,
    /// vCPUs.
    pub smp: u32,
    /// `-cpu` model (`None`: QEMU's default).
    pub cpu: Option<String>,
    /// How xtask was invoked.
    pub command_line: String,
    /// The kernel command line of our boot.
    pub append: String,
    /// The host CPU: model name and logical CPUs, from /proc/cpuinfo.
    pub host_cpu: String,
    /// The Linux guest's kernel package, with `--vs linux`.
    #[serde(default)]
    pub linux_kernel: Option<String>,
}

/// One history file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// [`FORMAT`].
    pub format: u32,
    /// The run.
    pub run: RunInfo,
    /// Its figures, each with `run` set to the run's id.
    pub results: Vec<Entry>,
}

/// `results.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// [`FORMAT`].
    pub format: u32,
    /// The runs the results come from.
    pub runs: Vec<RunInfo>,
    /// The latest figure of each name and mode.
    pub results: Vec<Entry>,
    /// The latest ours-vs-Linux row of each name and mode (`--vs linux`
    /// runs; see [`fold_vs`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vs: Vec<crate::bench::VsRow>,
}

/// Parses `results.json`, also in the legacy shape (a bare list).
pub fn parse_results(text: &str) -> Result<Results, String> {
    if let Ok(list) = serde_json::from_str::<Vec<Entry>>(text) {
        return Ok(Results { format: FORMAT, runs: Vec::new(), results: list, vs: Vec::new() });
    }
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Folds a run into `results.json`'s contents: our entries replace those
/// of the same mode as `scope` says ([`crate::bench::merge`]), the Linux
/// guest's (`linux_*`) replace only those of their names (a run without
/// `--vs linux` keeps the last Linux figures), and only the runs some entry
/// still names are kept.
pub fn fold(
    old: Results,
    run: &RunInfo,
    ours: Vec<Entry>,
    linux: Vec<Entry>,
    mode: crate::bench::Mode,
    scope: crate::bench::Scope,
) -> Results {
    let (old_linux, old_ours): (Vec<Entry>, Vec<Entry>) =
        old.results.into_iter().partition(|e| e.name.starts_with("linux_"));
    let mut results = crate::bench::merge(old_ours, ours, mode, scope);
    results.extend(crate::bench::merge(old_linux, linux, mode, crate::bench::Scope::SameNames));
    let mut runs: Vec<RunInfo> = old.runs.into_iter().filter(|r| r.id != run.id).collect();
    runs.push(run.clone());
    runs.retain(|r| results.iter().any(|e| e.run.as_deref() == Some(r.id.as_str())));
    Results { format: FORMAT, runs, results, vs: old.vs }
}

/// Folds a `--vs linux` run's comparison rows into `results`: each
/// replaces the row of its name and mode.
pub fn fold_vs(results: &mut Results, rows: Vec<crate::bench::VsRow>) {
    results.vs.retain(|o| !rows.iter().any(|r| r.name == o.name && r.mode == o.mode));
    results.vs.extend(rows);
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `(id, RFC 3339 date)` for a Unix time in seconds.
pub fn stamp(unix: u64) -> (String, String) {
    let (y, mo, d) = civil((unix / 86_400) as i64);
    let s = unix % 86_400;
    let (h, mi, se) = (s / 3600, s / 60 % 60, s % 60);
    (
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{se:02}Z"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}Z"),
    )
}

/// The host CPU from the text of /proc/cpuinfo: `model name × N`.
pub fn host_cpu(cpuinfo: &str) -> String {
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or("unknown", |(_, v)| v.trim());
    let n = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    format!("{model} x {n}")
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(root).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit checked out at `root` and whether tracked files differ.
pub fn commit(root: &Path) -> (Option<String>, Option<bool>) {
    let head = git(root, &["rev-parse", "HEAD"]);
    let dirty =
        git(root, &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    (head, dirty)
}

/// The first line of `qemu-system-x86_64 --version`.
pub fn qemu_version() -> String {
    Command::new(crate::install::QEMU)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The history directory.
pub fn dir(target: &Path) -> PathBuf {
    target.join("bench").join("history")
}

/// Writes `record` as `<history>/<id>.json` (a numbered suffix if two runs
/// start in one second); its path.
pub fn save(target: &Path, record: &mut Record) -> Result<PathBuf, String> {
    let dir = dir(target);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let base = record.run.id.clone();
    let mut n = 1;
    while dir.join(format!("{}.json", record.run.id)).exists() {
        record.run.id = format!("{base}-{n}");
        n += 1;
    }
    for e in &mut record.results {
        e.run = Some(record.run.id.clone());
    }
    let path = dir.join(format!("{}.json", record.run.id));
    let mut text = serde_json::to_string_pretty(record).map_err(|e| e.to_string())?;
    text.push('\n');
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

/// Reads one history file (or a `results.json`, as one pseudo-run).
pub fn read(path: &Path) -> Result<Record, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if let Ok(r) = serde_json::from_str::<Record>(&text) {
        return Ok(r);
    }
    let results = parse_results(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut run = results.runs.last().cloned().unwrap_or_else(|| RunInfo {
        id: path.display().to_string(),
        date: String::new(),
        commit: None,
        dirty: None,
        qemu: String::new(),
        accel: String::new(),
        mode: String::new(),
        smp: 0,
        cpu: None,
        command_line: String::new(),
        append: String::new(),
        host_cpu: String::new(),
        linux_kernel: None,
    });
    run.id = path.display().to_string();
    Ok(Record { format: FORMAT, run, results: results.results })
}

/// Every history file, oldest first (ids sort by time).
pub fn all(target: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir(target))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect()
        })
        .unwrap_or_default();
    // `<id>-N.json` after `<id>.json`, whatever the bytes sort as.
    files.sort_by_key(|p| {
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        match stem.split_once('-') {
            Some((id, n)) => (id.to_string(), n.parse::<u32>().unwrap_or(0)),
            None => (stem, 0),
        }
    });
    files
}

/// Resolves a `--compare` argument: a file; `latest`; or a git revision,
/// meaning the latest recorded run of that commit (clean runs preferred).
pub fn resolve(root: &Path, target: &Path, what: &str) -> Result<PathBuf, String> {
    let path = Path::new(what);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let files = all(target);
    if what == "latest" {
        return files.last().cloned().ok_or_else(|| "no recorded runs yet".to_string());
    }
    let commit = git(root, &["rev-parse", "--verify", &format!("{what}^{{commit}}")])
        .ok_or_else(|| format!("{what:?} is neither a file nor a git revision"))?;
    let mut runs: Vec<(PathBuf, Record)> = files
        .into_iter()
        .filter_map(|p| read(&p).ok().map(|r| (p, r)))
        .filter(|(_, r)| r.run.commit.as_deref() == Some(commit.as_str()))
        .collect();
    // Clean runs last, so the latest clean one wins.
    runs.sort_by_key(|(p, r)| (r.run.dirty != Some(true), p.clone()));
    runs.pop().map(|(p, _)| p).ok_or_else(|| {
        format!(
            "no recorded run of {what} ({}); check it out and run the bench there",
            &commit[..12]
        )
    })
}

/// What a change of one benchmark's median means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Slower by more than the noise band.
    Regression,
    /// Faster by more than the noise band.
    Improvement,
    /// Within the noise band.
    Noise,
    /// Identical.
    Same,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Regression => "REGRESSION",
            Verdict::Improvement => "improvement",
            Verdict::Noise => "within noise",
            Verdict::Same => "same",
        }
    }
}

/// One benchmark in both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Name.
    pub name: String,
    /// Mode of both figures.
    pub mode: String,
    /// Old median.
    pub old: f64,
    /// New median.
    pub new: f64,
    /// `new / old - 1`.
    pub change: f64,
    /// The noise band, as a fraction: the larger spread `p99 / median - 1`
    /// of the two figures; 0 when both are exact (every sample the same,
    /// as a one-core path under `-icount` is): then any change is real.
    pub band: f64,
    /// The judgement.
    pub verdict: Verdict,
}

/// Compares the figures two runs share (same name and mode); every figure
/// is a cost, so higher is worse.
pub fn compare(old: &[Entry], new: &[Entry]) -> Vec<Change> {
    let spread = |e: &Entry| match (e.median.as_f64(), e.p99.as_f64()) {
        (Some(m), Some(p)) if m > 0.0 => (p / m - 1.0).max(0.0),
        _ => 0.0,
    };
    let mut out = Vec::new();
    for n in new {
        let Some(o) = old.iter().find(|o| o.name == n.name && o.mode == n.mode) else { continue };
        let (Some(a), Some(b)) = (o.median.as_f64(), n.median.as_f64()) else { continue };
        let change = if a > 0.0 { b / a - 1.0 } else { 0.0 };
        // Under -icount a path whose samples all agree (p99 = median) is
        // exact and repeats to the instruction; one whose samples vary
        // (cross-core, Linux's) moves a little between runs, so it gets
        // its spread, like a wall-clock figure.
        let band = spread(o).max(spread(n));
        let verdict = if a == b {
            Verdict::Same
        } else if change.abs() <= band {
            Verdict::Noise
        } else if b > a {
            Verdict::Regression
        } else {
            Verdict::Improvement
        };
        out.push(Change {
            name: n.name.clone(),
            mode: n.mode.clone(),
            old: a,
            new: b,
            change,
            band,
            verdict,
        });
    }
    out
}

/// The comparison as a table.
pub fn compare_table(changes: &[Change]) -> String {
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.mode.clone(),
                c.old.to_string(),
                c.new.to_string(),
                format!("{:+.1}%", c.change * 100.0),
                if c.band == 0.0 { "exact".into() } else { format!("±{:.0}%", c.band * 100.0) },
                c.verdict.as_str().into(),
            ]
        })
        .collect();
    crate::bench::render(
        &["benchmark", "mode", "old", "new", "change", "noise", "verdict"],
        &rows,
        &[2, 3, 4, 5],
    )
}

/// A one-line description of a run for the comparison's header.
pub fn describe(r: &RunInfo) -> String {
    let commit = r.commit.as_deref().map_or("?".to_string(), |c| c[..c.len().min(12)].to_string());
    let dirty = if r.dirty == Some(true) { "+dirty" } else { "" };
    format!("{} ({commit}{dirty}, {}, {}, {})", r.id, r.mode, r.accel, r.qemu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Mode, Scope};

    fn entry(name: &str, mode: &str, median: u64, p99: u64) -> Entry {
        Entry {
            name: name.into(),
            unit: "cycles".into(),
            median: median.into(),
            p99: p99.into(),
            samples: 100,
            mode: mode.into(),
            run: None,
            ops_per_s: None,
            ops_per_s_per_core: None,
            cores: None,
        }
    }

    fn run(id: &str) -> RunInfo {
        RunInfo {
            id: id.into(),
            date: "2026-01-01T00:00:00Z".into(),
            commit: Some("0123456789abcdef".into()),
            dirty: Some(false),
            qemu: "QEMU emulator version 10.0.2".into(),
            accel: "tcg".into(),
            mode: "icount".into(),
            smp: 8,
            cpu: None,
            command_line: "cargo xtask bench --icount".into(),
            append: "mode=bench".into(),
            host_cpu: "Some CPU x 2".into(),
            linux_kernel: None,
        }
    }

    #[test]
    fn dates() {
        assert_eq!(stamp(0), ("19700101T000000Z".into(), "1970-01-01T00:00:00Z".into()));
        // 2024-02-29 12:34:56 UTC.
        assert_eq!(stamp(1_709_210_096).1, "2024-02-29T12:34:56Z");
        assert_eq!(stamp(1_709_210_096).0, "20240229T123456Z");
    }

    #[test]
    fn host_cpu_line() {
        let info = "processor\t: 0\nmodel name\t: Fancy CPU @ 3GHz\n\nprocessor\t: 1\nmodel name\t: Fancy CPU @ 3GHz\n";
        assert_eq!(host_cpu(info), "Fancy CPU @ 3GHz x 2");
        assert_eq!(host_cpu(""), "unknown x 0");
    }

    #[test]
    fn history_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("xtask-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut rec = Record {
            format: FORMAT,
            run: run("20260101T000000Z"),
            results: vec![entry("syscall_null", "icount", 64, 70)],
        };
        let p1 = save(&dir, &mut rec.clone()).unwrap();
        let p2 = save(&dir, &mut rec).unwrap();
        assert!(p1.ends_with("20260101T000000Z.json"));
        assert!(p2.ends_with("20260101T000000Z-1.json"), "{p2:?}");
        let back = read(&p2).unwrap();
        assert_eq!(back.run.id, "20260101T000000Z-1");
        assert_eq!(back.results[0].run.as_deref(), Some("20260101T000000Z-1"));
        // The shape other tools read.
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p1).unwrap()).unwrap();
        assert_eq!(v["format"], 2);
        for key in
            ["id", "date", "commit", "dirty", "qemu", "accel", "mode", "command_line", "host_cpu"]
        {
            assert!(v["run"].get(key).is_some(), "no run.{key}");
        }
        assert_eq!(v["results"][0]["name"], "syscall_null");
        assert_eq!(all(&dir), vec![p1.clone(), p2]);
        assert_eq!(resolve(Path::new("/"), &dir, "latest").unwrap(), all(&dir)[1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn results_file_folds_runs() {
        // Legacy list.
        let legacy = serde_json::to_string(&vec![entry("a", "wall", 1, 2)]).unwrap();
        let old = parse_results(&legacy).unwrap();
        assert_eq!(old.results.len(), 1);
        let mut e = entry("b", "icount", 5, 5);
        e.run = Some("R1".into());
        let mut l = entry("linux_getpid", "icount", 300, 300);
        l.run = Some("R1".into());
        let folded = fold(old, &run("R1"), vec![e], vec![l], Mode::Icount, Scope::Mode);
        assert_eq!(folded.runs.len(), 1);
        assert_eq!(folded.results.len(), 3);
        // A later full icount run without Linux replaces R1's own entries
        // but keeps its Linux figure, so R1 stays.
        let mut e = entry("b", "icount", 6, 6);
        e.run = Some("R2".into());
        let folded = fold(folded, &run("R2"), vec![e], vec![], Mode::Icount, Scope::Mode);
        let ids: Vec<_> = folded.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["R1", "R2"]);
        let names: Vec<_> = folded.results.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "linux_getpid"]);
        // And one with new Linux figures retires R1.
        let mut l = entry("linux_getpid", "icount", 301, 301);
        l.run = Some("R3".into());
        let folded = fold(folded, &run("R3"), vec![], vec![l], Mode::Icount, Scope::SameNames);
        let ids: Vec<_> = folded.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["R2", "R3"]);
        let text = serde_json::to_string(&folded).unwrap();
        assert_eq!(parse_results(&text).unwrap(), folded);
    }

    #[test]
    fn comparison_flags_regressions() {
        let old = vec![
            entry("exact_same", "icount", 100, 100),
            entry("exact_slower", "icount", 100, 100),
            entry("exact_faster", "icount", 100, 100),
            entry("wall_noisy", "wall", 1000, 1500),
            entry("wall_slower", "wall", 1000, 1100),
            entry("only_old", "icount", 1, 1),
            entry("mode_differs", "wall", 1, 1),
            entry("icount_cross_core", "icount", 2639, 4058),
        ];
        let new = vec![
            entry("exact_same", "icount", 100, 100),
            // A synthetic regression: one instruction more is real.
            entry("exact_slower", "icount", 101, 101),
            entry("exact_faster", "icount", 90, 90),
            // +30% but the spread is 50%: noise.
            entry("wall_noisy", "wall", 1300, 1900),
            // +50% with spreads of 10% and 20%: a regression.
            entry("wall_slower", "wall", 1500, 1800),
            entry("mode_differs", "icount", 5, 5),
            // Samples that vary under -icount: their spread is the band.
            entry("icount_cross_core", "icount", 2626, 3825),
        ];
        let c = compare(&old, &new);
        let got: Vec<_> = c.iter().map(|c| (c.name.as_str(), c.verdict)).collect();
        assert_eq!(
            got,
            [
                ("exact_same", Verdict::Same),
                ("exact_slower", Verdict::Regression),
                ("exact_faster", Verdict::Improvement),
                ("wall_noisy", Verdict::Noise),
                ("wall_slower", Verdict::Regression),
                ("icount_cross_core", Verdict::Noise),
            ]
        );
        assert!((c[3].band - 0.5).abs() < 1e-9);
        assert!((c[4].band - 0.2).abs() < 1e-9);
        let t = compare_table(&c);
        assert!(
            t.contains("exact_slower       icount   100   101   +1.0%  exact  REGRESSION"),
            "{t}"
        );
        assert!(t.contains("-0.5%   ±54%  within noise"), "{t}");
        assert!(t.contains("±50%"), "{t}");
    }
}
