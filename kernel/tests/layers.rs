//! Holds `kernel/src/machine/`'s layer diagram (see `machine/mod.rs` and
//! `docs/kernel-layers.md`): every module imports only from lower rows,
//! but for the one allowed back edge, the entry stubs' call into the
//! scheduler (`interrupts` -> `sched`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The rows of the diagram, lowest first.
const LAYERS: &[&[&str]] = &[
    &["cpu", "boot", "percpu", "trap", "xstate"],
    &["time", "memory", "console"],
    &["apic", "paging", "acpi", "gdt", "slots", "ioapic", "ktrace"],
    &["tlb", "panic"],
    &["mailbox", "interrupts"],
    &["env"],
    &["uring"],
    &["sched"],
    &["syscall"],
    &["smp"],
    &["ktest", "bench"],
    &["start"],
];

/// Imports that go up, allowed and documented.
const BACK_EDGES: &[(&str, &str)] = &[("interrupts", "sched")];

fn row(module: &str) -> Option<usize> {
    LAYERS.iter().position(|r| r.contains(&module))
}

fn machine_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/machine")
}

/// Every `.rs` file under `dir`, with the top-level module it belongs to
/// and whether `super::` in it names `machine` (a top-level file or a
/// directory module's `mod.rs`) rather than its own parent module.
fn files(dir: &Path, top: Option<&str>, out: &mut Vec<(String, PathBuf, bool)>) {
    for entry in std::fs::read_dir(dir).expect("machine/ is readable") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).expect("utf-8 name").to_string();
        if path.is_dir() {
            files(&path, Some(top.unwrap_or(&name)), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            match top {
                None if name == "mod" => {}
                None => out.push((name, path, true)),
                Some(t) => out.push((t.to_string(), path, name == "mod")),
            }
        }
    }
}

/// The `machine` modules a file imports or names.
fn imports(text: &str, super_is_machine: bool) -> BTreeSet<String> {
    let code: String =
        text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut found = BTreeSet::new();
    let mut prefixes = vec!["crate::machine::", "super::super::"];
    if super_is_machine {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if prefix == "super::" && before == Some(':') {
                continue; // the tail of `super::super::`
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let item = item.trim().split("::").next().unwrap_or("").trim();
                    found.insert(item.to_string());
                }
            } else {
                let name: String =
                    rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn machine_modules_import_only_lower_layers() {
    let mut all = Vec::new();
    files(&machine_dir(), None, &mut all);
    assert!(all.len() > 20, "found only {} files under machine/", all.len());
    let mut violations = Vec::new();
    for (module, path, super_is_machine) in &all {
        let from = row(module).unwrap_or_else(|| panic!("module {module} is not in LAYERS"));
        let text = std::fs::read_to_string(path).expect("readable source");
        for target in imports(&text, *super_is_machine) {
            let Some(to) = row(&target) else { continue };
            if target == *module || to < from {
                continue;
            }
            if BACK_EDGES.contains(&(module.as_str(), target.as_str())) {
                continue;
            }
            violations.push(format!(
                "{} ({module}, row {from}) uses {target} (row {to})",
                path.display()
            ));
        }
    }
    assert!(violations.is_empty(), "layer violations:\n{}", violations.join("\n"));
}
