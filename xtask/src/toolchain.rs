//! Making sure the Rust toolchain has what a command needs: the
//! `x86_64-unknown-none` target (everything that builds) and the `rustfmt`
//! and `clippy` components (`cargo xtask check`).
//!
//! `rust-toolchain.toml` lists them, but rustup does not always install a
//! pinned toolchain's targets and components on first use, and a missing
//! target only shows up as "can't find crate for `core`". So before building
//! we ask `rustup` what is installed and add what is missing, saying so on
//! stderr. Without `rustup` we only warn: the toolchain may have been
//! installed some other way, and cargo's own error follows if it lacks the
//! target.

use std::path::Path;
use std::process::Command;

/// Whether `list` (the output of `rustup target list --installed`) has
/// `target`.
pub fn has_target(list: &str, target: &str) -> bool {
    list.lines().any(|l| l.trim() == target)
}

/// Whether `list` (the output of `rustup component list --installed`) has
/// component `name`: rustup prints `rustfmt-x86_64-unknown-linux-gnu`, or a
/// bare `rustfmt` for some components and versions.
pub fn has_component(list: &str, name: &str) -> bool {
    list.lines().map(str::trim).any(|l| {
        l == name
            || l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('-'))
                // What follows must be a host triple, whose architecture
                // has a digit (`x86_64`, `aarch64`, `i686`, `riscv64gc`):
                // `rust-std-…` is not `rust`, `rustfmt-preview` not `rustfmt`.
                .and_then(|triple| triple.split('-').next())
                .is_some_and(|arch| arch.contains(|c: char| c.is_ascii_digit()))
    })
}

/// A `rustup` command run from the workspace root, so that it acts on the
/// toolchain `rust-toolchain.toml` pins (or the one cargo runs us with:
/// `RUSTUP_TOOLCHAIN` is inherited).
fn rustup(root: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root);
    cmd
}

/// The stdout of `rustup ARGS`, or `None` if rustup cannot be run.
fn rustup_output(root: &Path, args: &[&str]) -> Option<String> {
    let out = rustup(root).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `rustup ARGS`, echoing it on stderr.
fn rustup_run(root: &Path, args: &[&str]) -> Result<(), String> {
    eprintln!("xtask: running rustup {}", args.join(" "));
    let status = rustup(root)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run rustup {}: {e}", args.join(" ")))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("rustup {} failed ({status})", args.join(" ")))
    }
}

/// Installs target `target` unless `rustup` says it is there.
pub fn ensure_target(root: &Path, target: &str) -> Result<(), String> {
    let Some(list) = rustup_output(root, &["target", "list", "--installed"]) else {
        eprintln!(
            "xtask: warning: cannot ask rustup whether the {target} target is installed; \
             if the build says \"can't find crate for `core`\", install it \
             (rustup target add {target})"
        );
        return Ok(());
    };
    if has_target(&list, target) {
        return Ok(());
    }
    eprintln!("xtask: the {target} target is not installed; adding it");
    rustup_run(root, &["target", "add", target])
}

/// Installs each of `components` that `rustup` does not list as installed.
pub fn ensure_components(root: &Path, components: &[&str]) -> Result<(), String> {
    let Some(list) = rustup_output(root, &["component", "list", "--installed"]) else {
        eprintln!(
            "xtask: warning: cannot ask rustup whether {} are installed",
            components.join(" and ")
        );
        return Ok(());
    };
    let missing: Vec<&str> =
        components.iter().copied().filter(|c| !has_component(&list, c)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: the {} component(s) are not installed; adding them", missing.join(", "));
    let mut args = vec!["component", "add"];
    args.extend(&missing);
    rustup_run(root, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let list = "x86_64-unknown-linux-gnu\nx86_64-unknown-none\n";
        assert!(has_target(list, "x86_64-unknown-none"));
        assert!(!has_target("x86_64-unknown-linux-gnu\n", "x86_64-unknown-none"));
        assert!(!has_target("", "x86_64-unknown-none"));
    }

    #[test]
    fn components() {
        let list = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\n\
                    rust-std-x86_64-unknown-linux-gnu\nrustc-x86_64-unknown-linux-gnu\n";
        assert!(has_component(list, "clippy"));
        assert!(!has_component(list, "rustfmt"));
        assert!(has_component("rustfmt\n", "rustfmt"));
        assert!(!has_component("rustfmt-preview\n", "rustfmt"));
        // `rust` is a prefix of `rust-std-…` but not installed by that.
        assert!(!has_component(list, "rust"));
        assert!(has_component("rustfmt-aarch64-apple-darwin\n", "rustfmt"));
    }
}
