//! Where each boot's serial log goes.
//!
//! Every boot writes a new file `target/logs/<UTC time>-<mode>-<config>.log`
//! (e.g. `20261207T091750Z-run-tcg.log`), so a run never overwrites the log
//! of the one before. Names sort by time; `target/logs/latest.log` is a
//! symlink to the newest, and only the newest [`KEEP`] logs are kept.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many logs survive pruning.
pub const KEEP: usize = 50;

/// The name of the convenience symlink to the newest log.
pub const LATEST: &str = "latest.log";

/// `YYYYMMDDTHHMMSSZ` for `secs` seconds after the Unix epoch (UTC).
pub fn timestamp(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The proleptic Gregorian date of day `z` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A fresh log path in `dir` for a boot of `mode` in `config` now: never an
/// existing file (a second boot within the same second gets `-2`, `-3`...).
pub fn new_path(dir: &Path, mode: &str, config: &str) -> PathBuf {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let stem = format!("{}-{mode}-{config}", timestamp(secs));
    let mut path = dir.join(format!("{stem}.log"));
    let mut n = 2;
    while path.symlink_metadata().is_ok() {
        path = dir.join(format!("{stem}-{n}.log"));
        n += 1;
    }
    path
}

/// Of the log file names `names`, those to delete so that the newest
/// `keep` remain (names sort by time; [`LATEST`] is never a log).
pub fn to_prune(names: &[String], keep: usize) -> Vec<String> {
    let mut logs: Vec<&String> =
        names.iter().filter(|n| n.ends_with(".log") && n.as_str() != LATEST).collect();
    logs.sort();
    let excess = logs.len().saturating_sub(keep);
    logs[..excess].iter().map(|n| n.to_string()).collect()
}

/// Called when a boot's log is complete: points [`LATEST`] at it and prunes
/// `dir` to the newest [`KEEP`] logs. Problems are only warned about: a
/// boot's result does not depend on them.
pub fn finish(log: &Path) {
    let Some(dir) = log.parent() else { return };
    let latest = dir.join(LATEST);
    let _ = std::fs::remove_file(&latest);
    if let Some(name) = log.file_name() {
        // Relative, so the link survives moving the target directory.
        if let Err(e) = std::os::unix::fs::symlink(name, &latest) {
            eprintln!("xtask: warning: cannot link {}: {e}", latest.display());
        }
    }
    let names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => {
            entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        }
        Err(_) => return,
    };
    for name in to_prune(&names, KEEP) {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "19700101T000000Z");
        // 2026-12-07 09:17:50 UTC.
        assert_eq!(timestamp(1_796_635_070), "20261207T091750Z");
        // A leap day: 2024-02-29 23:59:59 UTC.
        assert_eq!(timestamp(1_709_251_199), "20240229T235959Z");
        assert_eq!(timestamp(1_709_251_200), "20240301T000000Z");
    }

    #[test]
    fn pruning_keeps_the_newest() {
        let names: Vec<String> = [
            "20260101T000003Z-run-tcg.log",
            "latest.log",
            "20260101T000001Z-test-x2apic.log",
            "notes.txt",
            "20260101T000002Z-run-tcg.log",
            "20260101T000002Z-run-tcg-2.log",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            to_prune(&names, 2),
            ["20260101T000001Z-test-x2apic.log", "20260101T000002Z-run-tcg-2.log"]
        );
        assert!(to_prune(&names, 50).is_empty());
        assert_eq!(to_prune(&names, 0).len(), 4);
    }

    #[test]
    fn paths_are_fresh_and_latest_follows() {
        let dir = std::env::temp_dir().join(format!("xtask-logs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = new_path(&dir, "run", "tcg");
        std::fs::write(&a, "a").unwrap();
        finish(&a);
        let b = new_path(&dir, "run", "tcg");
        assert_ne!(a, b);
        std::fs::write(&b, "b").unwrap();
        finish(&b);
        assert_eq!(std::fs::read_to_string(dir.join(LATEST)).unwrap(), "b");
        for i in 0..KEEP + 5 {
            let p = dir.join(format!("19990101T{i:06}Z-old-x.log"));
            std::fs::write(&p, "old").unwrap();
        }
        finish(&b);
        let left = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(left, KEEP + 1, "the newest {KEEP} logs and the symlink");
        assert!(a.exists() && b.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
