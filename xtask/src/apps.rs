//! The workspace's applications: finding them, checking that they are set
//! up to run in ring 3, and making new ones (`cargo xtask new NAME`).
//!
//! An app is a crate `apps/NAME/` whose package, binary and initrd entry are
//! all called `NAME`. Nothing else registers it: the workspace's members
//! include `apps/*` and `cargo xtask build` packs every `apps/*/Cargo.toml`
//! it finds. What makes it a ring-3 program is its manifest's
//! `build = "../../libos-async/app-build.rs"` line, which links it with
//! `libos-async/user.ld` at `abi::USER_MIN`; without it the build succeeds
//! and only the kernel's loader notices, at boot. So [`check_manifest`]
//! looks for the line before building and [`check_elf`] checks each built
//! ELF's load addresses after.

use std::path::{Path, PathBuf};

use crate::{badelf, initrd};

/// The build script line every app's manifest needs.
pub const BUILD_LINE: &str = r#"build = "../../libos-async/app-build.rs""#;

/// Crate names a new app may not take: the workspace's other packages,
/// and names cargo or rustc refuse or confuse (keywords, the sysroot
/// crates, `test`).
const RESERVED: &[&str] = &[
    "abi",
    "kernel",
    "libos-async",
    "xtask",
    "core",
    "std",
    "alloc",
    "test",
    "proc-macro",
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "yield",
];

/// The apps of the workspace: every `apps/NAME/Cargo.toml`, sorted.
pub fn discover(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("apps");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        if entry.path().join("Cargo.toml").is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            initrd::check_name(&name)?;
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Checks that `name` is a good name for a new app: 1 to 64 characters,
/// lowercase ASCII letters, digits and single hyphens, starting with a
/// letter and not ending with a hyphen; not reserved; and not one of
/// `existing`.
pub fn validate_name(name: &str, existing: &[String]) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("app name {name:?} must be 1 to 64 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(format!(
            "app name {name:?} may only contain lowercase letters, digits and hyphens"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("app name {name:?} must start with a letter"));
    }
    if name.ends_with('-') || name.contains("--") {
        return Err(format!("app name {name:?} must not end with a hyphen or have two in a row"));
    }
    if RESERVED.contains(&name) {
        return Err(format!("app name {name:?} is reserved (a Rust keyword or crate name)"));
    }
    if existing.iter().any(|e| e == name) {
        return Err(format!("there already is an app {name:?} (apps/{name})"));
    }
    Ok(())
}

/// The line the template app prints first; the `new` check looks for it.
pub fn greeting(name: &str) -> String {
    format!("{name}: hello from ring 3")
}

/// The template's `Cargo.toml`.
pub fn template_manifest(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
description = "TODO: say what {name} does."
edition.workspace = true
version.workspace = true
license.workspace = true
publish = false
# Links the binary with libos-async/user.ld, at the user address range.
{BUILD_LINE}

[[bin]]
name = "{name}"
path = "src/main.rs"
test = false
bench = false

[dependencies]
libos-async = {{ path = "../../libos-async" }}

[lints]
workspace = true
"#
    )
}

/// The template's `src/main.rs` (`cargo fmt` clean whatever the name's
/// length: the name appears only where line length does not matter).
pub fn template_main(name: &str) -> String {
    format!(
        r#"//! `{name}`: TODO: say what it does. Made by `cargo xtask new {name}`:
//! prints a greeting, runs one task on another core, and exits 0.
//!
//! Run it: `cargo xtask run --append "init={name}"` (`init={name}:ARG`
//! passes a start argument, `init={name}@CORE` picks the first core).

#![cfg_attr(target_os = "none", no_std, no_main)]

use core::time::Duration;

use libos_async::rt;
use libos_async::{{env_id, println}};

/// The app's name, as `init=` and the initrd know it.
const NAME: &str = "{name}";

// One executor per usable core; `main_async` runs on the first.
libos_async::main!(main_async);

/// The app's main task: `arg` is the start argument from `init=`. The
/// return value is the exit status; non-zero marks the run as failed.
async fn main_async(arg: u64) -> i32 {{
    let (env, core) = (env_id(), rt::current_core());
    println!("{{NAME}}: hello from ring 3 (env {{env}}, core {{core}}, arg {{arg}})");
    let task = rt::spawn(async {{
        rt::sleep(Duration::from_millis(1)).await;
        rt::current_core()
    }});
    println!("{{NAME}}: a task ran on core {{}}", task.await);
    0
}}
"#
    )
}

/// Creates `apps/NAME` under `root` from the template; returns its
/// directory. Fails if the name is bad or taken.
pub fn create(root: &Path, name: &str) -> Result<PathBuf, String> {
    let existing = discover(root)?;
    validate_name(name, &existing)?;
    let dir = root.join("apps").join(name);
    if dir.exists() {
        return Err(format!("{} already exists", dir.display()));
    }
    let members_ok = std::fs::read_to_string(root.join("Cargo.toml"))
        .map(|t| t.contains("\"apps/*\""))
        .unwrap_or(false);
    if !members_ok {
        return Err("the workspace's Cargo.toml does not list \"apps/*\" in its members; \
             add it (every app is found that way)"
            .into());
    }
    let src = dir.join("src");
    std::fs::create_dir_all(&src).map_err(|e| format!("creating {}: {e}", src.display()))?;
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write(dir.join("Cargo.toml"), template_manifest(name))?;
    write(src.join("main.rs"), template_main(name))?;
    Ok(dir)
}

/// Whether a manifest's `[package]` section has a `build` key.
fn has_build_key(manifest: &str) -> bool {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some((key, _)) = line.split_once('=')
            && key.trim() == "build"
        {
            return true;
        }
    }
    false
}

/// Checks that app `name`'s manifest text (at `apps/NAME/Cargo.toml`) sets
/// a build script: without one (and without a `build.rs` beside the
/// manifest, `has_build_rs`) the app is not linked for ring 3.
pub fn check_manifest(name: &str, manifest: &str, has_build_rs: bool) -> Result<(), String> {
    if has_build_key(manifest) || has_build_rs {
        return Ok(());
    }
    Err(format!(
        "app {name}: apps/{name}/Cargo.toml has no build script, so the app would not be \
         linked with libos-async/user.ld and the kernel would refuse it at boot (\"a segment \
         lies outside the user address range\").\n  fix: add this line to its [package] \
         section:\n    {BUILD_LINE}"
    ))
}

/// Checks the manifests of apps `names` under `root`.
pub fn check_manifests(root: &Path, names: &[String]) -> Result<(), String> {
    for name in names {
        let dir = root.join("apps").join(name);
        let path = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        check_manifest(name, &text, dir.join("build.rs").is_file())?;
    }
    Ok(())
}

/// Checks that every loadable segment of app `name`'s ELF lies in the user
/// address range the kernel loads apps into.
pub fn check_elf(name: &str, elf: &[u8]) -> Result<(), String> {
    let segments = badelf::load_segments(elf).map_err(|e| format!("app {name}: {e}"))?;
    for (vaddr, memsz) in segments {
        let end = vaddr.checked_add(memsz);
        if vaddr < abi::USER_MIN || end.is_none_or(|end| end > abi::USER_MAX) {
            return Err(format!(
                "app {name}: a loadable segment at {vaddr:#x} lies outside the user address \
                 range {:#x}..{:#x}, so the kernel would refuse it at boot; it was not linked \
                 with libos-async/user.ld.\n  fix: use libos-async's build script: \
                 apps/{name}/Cargo.toml's [package] section needs\n    {BUILD_LINE}",
                abi::USER_MIN,
                abi::USER_MAX
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let existing = vec!["hello".to_string()];
        for good in ["a", "my-app", "app2", "x-1-y"] {
            assert!(validate_name(good, &existing).is_ok(), "{good}");
        }
        for bad in [
            "", "hello", "My", "my_app", "2app", "-a", "a-", "a--b", "a b", "a/b", "kernel", "fn",
            "test", "README",
        ] {
            assert!(validate_name(bad, &existing).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(65), &existing).is_err());
        // Every valid name is a valid initrd entry.
        assert!(initrd::check_name("my-app").is_ok());
    }

    #[test]
    fn manifests() {
        let hello = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/hello/Cargo.toml"),
        )
        .unwrap();
        assert!(check_manifest("hello", &hello, false).is_ok());
        assert!(check_manifest("x", &template_manifest("x"), false).is_ok());
        let without: String =
            hello.lines().filter(|l| !l.starts_with("build")).map(|l| format!("{l}\n")).collect();
        let err = check_manifest("hello", &without, false).unwrap_err();
        assert!(err.contains("app hello") && err.contains(BUILD_LINE), "{err}");
        assert!(check_manifest("hello", &without, true).is_ok());
        // `build` in another section is not the package's build script.
        let elsewhere = "[package]\nname = \"x\"\n[profile.release]\nbuild = \"y\"\n";
        assert!(check_manifest("x", elsewhere, false).is_err());
        assert!(check_manifest("x", "[package]\n  build   = 'b.rs'\n", false).is_ok());
    }

    #[test]
    fn elf_ranges() {
        let ok = badelf::tests::sample_with(&[(0x40_0000, 0x1000), (0x40_2000, 0x1000)]);
        assert!(check_elf("a", &ok).is_ok());
        // rust-lld's default base for x86_64-unknown-none.
        let low = badelf::tests::sample_with(&[(0x20_0000, 0x1000)]);
        let err = check_elf("a", &low).unwrap_err();
        assert!(err.contains("app a") && err.contains(BUILD_LINE), "{err}");
        let high = badelf::tests::sample_with(&[(abi::USER_MAX - 0x1000, 0x2000)]);
        assert!(check_elf("a", &high).is_err());
        assert!(check_elf("a", b"junk").is_err());
    }

    #[test]
    fn template_names_itself() {
        let main = template_main("my-app");
        assert!(main.contains("const NAME: &str = \"my-app\";"));
        assert!(main.contains("{NAME}: hello from ring 3 (env"));
        assert_eq!(greeting("my-app"), "my-app: hello from ring 3");
        assert!(main.contains("init=my-app"));
        assert!(template_manifest("my-app").contains("name = \"my-app\""));
    }

    #[test]
    fn create_refuses_existing_and_writes_template() {
        let root = std::env::temp_dir().join(format!("xtask-new-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("apps/hello")).unwrap();
        std::fs::write(root.join("apps/hello/Cargo.toml"), "").unwrap();
        std::fs::write(root.join("Cargo.toml"), "[workspace]\nmembers = [\"apps/*\"]\n").unwrap();
        assert!(create(&root, "hello").is_err());
        let dir = create(&root, "new-one").unwrap();
        assert_eq!(discover(&root).unwrap(), ["hello", "new-one"]);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(check_manifest("new-one", &manifest, false).is_ok());
        assert!(create(&root, "new-one").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
