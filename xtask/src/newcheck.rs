//! The check that `cargo xtask new` makes an app that builds and boots:
//! part of `cargo xtask test` (`[new] test new_app_builds_and_boots`), and
//! an ignored host test (`cargo test -p xtask -- --ignored new_app`).
//!
//! It never touches the real tree: the sources are mirrored into
//! `target/new-app-check/ws` (everything but `target/`, `.git/` and
//! `apps/`; only changed files are rewritten, so cargo's fingerprints keep
//! the rebuild to the new app), the app is made there from the template,
//! built into `target/new-app-check/target`, packed alone into an initrd
//! and booted with `mode=run init=NAME` on 2 vCPUs; its greeting must
//! appear and the guest must report success.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::qemu::{self, Accel, Boot};
use crate::{TARGET, Workspace, apps, initrd};

/// The app the check creates.
pub const NAME: &str = "newapp-check";

/// Top-level entries of the workspace not mirrored.
const SKIP: &[&str] = &["target", ".git", "apps"];

/// Makes `dst` hold exactly the files of `src` (recursively), rewriting a
/// file only when its contents differ; `skip` names top-level entries left
/// out (and removed from `dst`).
pub fn mirror(src: &Path, dst: &Path, skip: &[&str]) -> Result<(), String> {
    let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(dst).map_err(|e| err(dst, e))?;
    let mut wanted = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(src).map_err(|e| err(src, e))? {
        let entry = entry.map_err(|e| err(src, e))?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        let kind = entry.file_type().map_err(|e| err(&from, e))?;
        if kind.is_dir() {
            if to.is_file() {
                std::fs::remove_file(&to).map_err(|e| err(&to, e))?;
            }
            mirror(&from, &to, &[])?;
        } else if kind.is_file() {
            let data = std::fs::read(&from).map_err(|e| err(&from, e))?;
            if to.is_dir() {
                std::fs::remove_dir_all(&to).map_err(|e| err(&to, e))?;
            }
            if std::fs::read(&to).ok().as_deref() != Some(&data[..]) {
                std::fs::write(&to, &data).map_err(|e| err(&to, e))?;
            }
        } else {
            continue; // symlinks and the like: not part of the sources
        }
        wanted.insert(name);
    }
    for entry in std::fs::read_dir(dst).map_err(|e| err(dst, e))? {
        let entry = entry.map_err(|e| err(dst, e))?;
        if !wanted.contains(&entry.file_name()) {
            let p = entry.path();
            let removed =
                if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            removed.map_err(|e| err(&p, e))?;
        }
    }
    Ok(())
}

/// Runs the check. `kernel` is a built kernel ELF to boot; `None` builds
/// one in the scratch workspace too (the host test does, so as not to wait
/// for the lock on the main target directory that `cargo test` holds).
/// Returns the log path with the result.
pub fn run(ws: &Workspace, kernel: Option<&Path>) -> (Option<PathBuf>, Result<(), String>) {
    let dir = ws.target.join("new-app-check");
    let scratch = dir.join("ws");
    let target = dir.join("target");
    let setup = || -> Result<PathBuf, String> {
        mirror(&ws.root, &scratch, SKIP)?;
        // The app is made afresh each time, from the template as it is now.
        let apps_dir = scratch.join("apps");
        if apps_dir.exists() {
            std::fs::remove_dir_all(&apps_dir)
                .map_err(|e| format!("removing {}: {e}", apps_dir.display()))?;
        }
        let app = apps::create(&scratch, NAME)?;
        println!("xtask: made {} from the template", ws.rel(&app));
        let mut cmd =
            std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.current_dir(&scratch).env("CARGO_TARGET_DIR", &target).args([
            "build",
            "--release",
            "--target",
            TARGET,
            "-p",
            NAME,
        ]);
        if kernel.is_none() {
            cmd.args(["-p", "kernel"]);
        }
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building the new app failed ({status})"));
        }
        let release = target.join(TARGET).join("release");
        let elf = std::fs::read(release.join(NAME)).map_err(|e| format!("reading {NAME}: {e}"))?;
        apps::check_elf(NAME, &format!("{}/{NAME}", apps::NEW_APP_DIR), &elf)?;
        let initrd = dir.join("initrd.tar");
        initrd::write(&initrd, &[initrd::App { name: NAME.into(), elf }])?;
        Ok(initrd)
    };
    let initrd = match setup() {
        Ok(initrd) => initrd,
        Err(e) => return (None, Err(e)),
    };
    let kernel = kernel
        .map_or_else(|| target.join(TARGET).join("release").join("kernel"), Path::to_path_buf);
    let boot = Boot {
        kernel,
        initrd,
        append: format!("mode=run init={NAME}"),
        smp: 2,
        accel: Accel::Tcg,
        cpu: None,
        icount: false,
        gdb: false,
        timeout: Some(Duration::from_secs(60)),
        log: ws.log("new-app", "tcg"),
        interactive: false,
    };
    let log = Some(boot.log.clone());
    let out = match qemu::boot(&boot) {
        Ok(out) => out,
        Err(e) => return (log, Err(e)),
    };
    let greeting = apps::greeting(NAME);
    let result = if !out.lines.iter().any(|l| l.starts_with(&greeting)) {
        Err(format!("no line starting with {greeting:?}; {}", out.status.describe()))
    } else if !out.status.is_success() {
        Err(out.status.describe())
    } else {
        Ok(())
    };
    (log, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_copies_changes_and_removes_extras() {
        let base = std::env::temp_dir().join(format!("xtask-mirror-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (src, dst) = (base.join("src"), base.join("dst"));
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::create_dir_all(src.join("target")).unwrap();
        std::fs::write(src.join("a/b/f"), "1").unwrap();
        std::fs::write(src.join("top"), "t").unwrap();
        std::fs::write(src.join("target/big"), "x").unwrap();
        mirror(&src, &dst, &["target"]).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("a/b/f")).unwrap(), "1");
        assert!(!dst.join("target").exists());
        std::fs::write(src.join("a/b/f"), "2").unwrap();
        std::fs::remove_file(src.join("top")).unwrap();
        std::fs::write(dst.join("stray"), "s").unwrap();
        mirror(&src, &dst, &["target"]).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("a/b/f")).unwrap(), "2");
        assert!(!dst.join("top").exists() && !dst.join("stray").exists());
        // Unchanged files are not rewritten (their mtime stays, so cargo
        // does not rebuild).
        std::fs::write(src.join("top"), "t").unwrap();
        mirror(&src, &dst, &["target"]).unwrap();
        let f = std::fs::metadata(dst.join("top")).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        mirror(&src, &dst, &["target"]).unwrap();
        assert_eq!(std::fs::metadata(dst.join("top")).unwrap().modified().unwrap(), f);
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// Makes an app with the template in a scratch copy, builds it and the
    /// kernel, boots it under QEMU. Needs QEMU and a few minutes the first
    /// time: `cargo test -p xtask -- --ignored new_app`.
    #[test]
    #[ignore = "builds the kernel and boots QEMU"]
    fn new_app_builds_and_boots() {
        let ws = Workspace::locate();
        let (log, result) = run(&ws, None);
        assert!(result.is_ok(), "{result:?} (serial log: {log:?})");
        assert!(!ws.root.join("apps").join(NAME).exists(), "the real tree was touched");
    }
}
