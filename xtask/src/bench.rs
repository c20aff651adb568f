//! Benchmark results: the table and `target/bench/results.json`.
//!
//! `results.json` is a JSON list of
//! `{"name", "unit", "median", "p99", "samples", "mode"}` objects, where
//! `mode` is `"wall"` (cycles measured in real time) or `"icount"` (TCG with
//! `-icount shift=0`: one tick per guest instruction, so a `"cycles"` unit
//! from the kernel becomes `"guest-instructions"`). Each `cargo xtask bench`
//! replaces the entries of its own mode and keeps those of the other; a run
//! of some groups only (`--benches`) replaces only the entries it produced.

use serde::{Deserialize, Serialize};

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
        }
    }
}

/// Which existing entries of its mode a run replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// All of them (a full run).
    Mode,
    /// Those with the names of the new entries (a run of some groups).
    SameNames,
}

/// Merges `new` (all of `mode`) into the entries of an existing file's text:
/// keeps existing entries of other modes, drops existing entries of `mode`
/// (with `Scope::SameNames`, only those a new entry replaces). An existing
/// file that does not parse is reported and replaced.
pub fn merge(
    existing: Option<&str>,
    new: Vec<Entry>,
    mode: Mode,
    scope: Scope,
) -> (Vec<Entry>, Option<String>) {
    let mut warning = None;
    let old: Vec<Entry> = match existing {
        None => Vec::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                warning = Some(format!("existing results do not parse ({e}); replacing them"));
                Vec::new()
            }
        },
    };
    let replaced = |e: &Entry| {
        e.mode == mode.as_str() && (scope == Scope::Mode || new.iter().any(|n| n.name == e.name))
    };
    let mut merged: Vec<Entry> = old.into_iter().filter(|e| !replaced(e)).collect();
    merged.extend(new);
    (merged, warning)
}

/// Renders the results as an aligned text table.
pub fn table(entries: &[Entry]) -> String {
    let header = ["name", "unit", "median", "p99", "samples"];
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            [
                e.name.clone(),
                e.unit.clone(),
                e.median.to_string(),
                e.p99.to_string(),
                e.samples.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: [&str; 5]| {
        for (i, cell) in cells.iter().enumerate() {
            // Text left-aligned, numbers right-aligned.
            let s = if i < 2 {
                format!("{cell:<w$}", w = widths[i])
            } else {
                format!("{cell:>w$}", w = widths[i])
            };
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(&s);
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    push_row(header);
    let rule = widths.map(|w| "-".repeat(w));
    push_row([&rule[0], &rule[1], &rule[2], &rule[3], &rule[4]]);
    for row in &rows {
        push_row([&row[0], &row[1], &row[2], &row[3], &row[4]]);
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
        let text = serde_json::to_string(&old).unwrap();
        let new = vec![Entry::from_line(line("new_icount", "cycles"), Mode::Icount)];
        let (merged, warn) = merge(Some(&text), new, Mode::Icount, Scope::Mode);
        assert!(warn.is_none());
        let names: Vec<_> = merged.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["old_wall", "new_icount"]);

        let (merged, warn) = merge(Some("not json"), vec![], Mode::Wall, Scope::Mode);
        assert!(merged.is_empty());
        assert!(warn.is_some());
        let (merged, _) = merge(
            None,
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
        let text = serde_json::to_string(&old).unwrap();
        let mut b = Entry::from_line(line("b", "cycles"), Mode::Icount);
        b.samples = 7;
        let (merged, _) = merge(Some(&text), vec![b], Mode::Icount, Scope::SameNames);
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
    fn table_aligns() {
        let t = table(&[Entry::from_line(line("ipc_roundtrip", "cycles"), Mode::Wall)]);
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "name           unit    median  p99  samples");
        assert_eq!(lines[2], "ipc_roundtrip  cycles      10   20      100");
    }
}
