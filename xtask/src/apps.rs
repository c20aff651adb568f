//! The workspace's ring-3 programs: finding them, checking that they are
//! set up to run in ring 3, and making new apps (`cargo xtask new NAME`).
//!
//! A program is a crate `DIR/NAME/` in one of [`PROGRAM_DIRS`]: `apps/`
//! (demonstrations and new apps), `tests/` (ring-3 test programs, hostile
//! and functional) and `benches/` (benchmark programs). Its binary's name
//! (the manifest's `[[bin]] name`, else the package's) is the ELF's file
//! name and its initrd entry: the name `init=` and the kernel's tests use.
//! Packages are named with hyphens; a binary keeps an older underscore
//! name where the kernel knows it by that name (`tests/syscall-abuse`
//! builds `syscall_abuse`). Nothing else registers a program: the
//! workspace's members include each `DIR/*` and `cargo xtask build` packs
//! every `DIR/*/Cargo.toml` it finds. Library crates the programs share
//! (their protocols) live in [`LIBRARY_DIR`] and are not packed.
//!
//! What makes a program a ring-3 program is its manifest's
//! `build = "../../libos-async/app-build.rs"` line, which links it with
//! `libos-async/user.ld` at `abi::USER_MIN`; without it the build succeeds
//! and only the kernel's loader notices, at boot. So [`check_manifest`]
//! looks for the line before building and [`check_elf`] checks each built
//! ELF's load addresses after.

use std::path::{Path, PathBuf};

use crate::{badelf, initrd};

/// The build script line every program's manifest needs.
pub const BUILD_LINE: &str = r#"build = "../../libos-async/app-build.rs""#;

/// The directories holding ring-3 programs, one crate per subdirectory.
pub const PROGRAM_DIRS: &[&str] = &["apps", "tests", "benches"];

/// Where `cargo xtask new` makes a new app.
pub const NEW_APP_DIR: &str = "apps";

/// The directory of the library crates programs share (protocols); they
/// are checked for the bare-metal target but not packed.
pub const LIBRARY_DIR: &str = "protocols";

/// Crate names a new app may not take: the workspace's other packages,
/// and names cargo or rustc refuse or confuse (keywords, the sysroot
/// crates, `test`).
const RESERVED: &[&str] = &[
    "abi",
    "kernel",
    "libos-async",
    "libos-posix",
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

/// One ring-3 program of the workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// Its directory relative to the workspace root, e.g.
    /// `tests/syscall-abuse`.
    pub dir: String,
    /// Its cargo package, e.g. `syscall-abuse`.
    pub package: String,
    /// Its binary: the ELF's file name and the initrd entry, e.g.
    /// `syscall_abuse`.
    pub name: String,
}

/// The crate directories `root/DIR/*/` holding a `Cargo.toml`, as
/// `(DIR/NAME, manifest text)`.
fn crates_in(root: &Path, dir: &str) -> Result<Vec<(String, String)>, String> {
    let path = root.join(dir);
    let entries = match std::fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", path.display()))?;
        let manifest = entry.path().join("Cargo.toml");
        if manifest.is_file() {
            let text = std::fs::read_to_string(&manifest)
                .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
            found.push((format!("{dir}/{}", entry.file_name().to_string_lossy()), text));
        }
    }
    Ok(found)
}

/// The ring-3 programs of the workspace: every `DIR/NAME/Cargo.toml` of
/// [`PROGRAM_DIRS`], sorted by binary name (the initrd's order). Fails on
/// a manifest without a package name, a binary name the initrd cannot
/// hold, or two programs with one binary name.
pub fn discover(root: &Path) -> Result<Vec<Program>, String> {
    let mut programs: Vec<Program> = Vec::new();
    for dir in PROGRAM_DIRS {
        for (dir, manifest) in crates_in(root, dir)? {
            let package = manifest_value(&manifest, "[package]", "name")
                .ok_or_else(|| format!("{dir}/Cargo.toml: no `name` in its [package] section"))?;
            let name = manifest_value(&manifest, "[[bin]]", "name").unwrap_or(package.clone());
            initrd::check_name(&name).map_err(|e| format!("{dir}: {e}"))?;
            if let Some(other) = programs.iter().find(|p| p.name == name) {
                return Err(format!("{dir} and {} both build a binary {name}", other.dir));
            }
            programs.push(Program { dir, package, name });
        }
    }
    programs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(programs)
}

/// The package names of the library crates in [`LIBRARY_DIR`], sorted.
pub fn libraries(root: &Path) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for (dir, manifest) in crates_in(root, LIBRARY_DIR)? {
        names.push(
            manifest_value(&manifest, "[package]", "name")
                .ok_or_else(|| format!("{dir}/Cargo.toml: no `name` in its [package] section"))?,
        );
    }
    names.sort();
    Ok(names)
}

/// The string value of `key` in the first `section` (e.g. `[package]`,
/// `[[bin]]`) of a manifest: the simple `key = "value"` lines the
/// workspace's manifests use.
fn manifest_value(manifest: &str, section: &str, key: &str) -> Option<String> {
    let mut inside = false;
    let mut seen = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            if seen && inside {
                return None;
            }
            inside = line == section;
            seen |= inside;
        } else if inside
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            let v = v.trim();
            return v
                .strip_prefix('"')
                .and_then(|v| v.split_once('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.split_once('\'')))
                .map(|(v, _)| v.to_string());
        }
    }
    None
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
        return Err(format!("there already is a program or crate named {name:?}"));
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
#![forbid(unsafe_code)]

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
/// directory. Fails if the name is bad or taken (by any program's binary
/// or package, or a library crate).
pub fn create(root: &Path, name: &str) -> Result<PathBuf, String> {
    let mut existing = libraries(root)?;
    for program in discover(root)? {
        existing.extend([program.name, program.package]);
    }
    validate_name(name, &existing)?;
    let dir = root.join(NEW_APP_DIR).join(name);
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

/// Checks that program `name`'s manifest text (at `DIR/Cargo.toml`, `dir`
/// relative to the root) sets a build script: without one (and without a
/// `build.rs` beside the manifest, `has_build_rs`) the program is not
/// linked for ring 3.
pub fn check_manifest(
    name: &str,
    dir: &str,
    manifest: &str,
    has_build_rs: bool,
) -> Result<(), String> {
    if has_build_key(manifest) || has_build_rs {
        return Ok(());
    }
    Err(format!(
        "app {name}: {dir}/Cargo.toml has no build script, so the app would not be \
         linked with libos-async/user.ld and the kernel would refuse it at boot (\"a segment \
         lies outside the user address range\").\n  fix: add this line to its [package] \
         section:\n    {BUILD_LINE}"
    ))
}

/// Checks the manifests of `programs` under `root`.
pub fn check_manifests(root: &Path, programs: &[Program]) -> Result<(), String> {
    for program in programs {
        let dir = root.join(&program.dir);
        let path = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        check_manifest(&program.name, &program.dir, &text, dir.join("build.rs").is_file())?;
    }
    Ok(())
}

/// Checks that every loadable segment of program `name`'s ELF (built from
/// `dir`, relative to the root) lies in the user address range the kernel
/// loads apps into.
pub fn check_elf(name: &str, dir: &str, elf: &[u8]) -> Result<(), String> {
    let segments = badelf::load_segments(elf).map_err(|e| format!("app {name}: {e}"))?;
    for (vaddr, memsz) in segments {
        let end = vaddr.checked_add(memsz);
        if vaddr < abi::USER_MIN || end.is_none_or(|end| end > abi::USER_MAX) {
            return Err(format!(
                "app {name}: a loadable segment at {vaddr:#x} lies outside the user address \
                 range {:#x}..{:#x}, so the kernel would refuse it at boot; it was not linked \
                 with libos-async/user.ld.\n  fix: use libos-async's build script: \
                 {dir}/Cargo.toml's [package] section needs\n    {BUILD_LINE}",
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
        assert!(check_manifest("hello", "apps/hello", &hello, false).is_ok());
        assert!(check_manifest("x", "apps/x", &template_manifest("x"), false).is_ok());
        let without: String =
            hello.lines().filter(|l| !l.starts_with("build")).map(|l| format!("{l}\n")).collect();
        let err = check_manifest("hello", "apps/hello", &without, false).unwrap_err();
        assert!(err.contains("app hello") && err.contains(BUILD_LINE), "{err}");
        assert!(err.contains("apps/hello/Cargo.toml"), "{err}");
        assert!(check_manifest("hello", "apps/hello", &without, true).is_ok());
        // `build` in another section is not the package's build script.
        let elsewhere = "[package]\nname = \"x\"\n[profile.release]\nbuild = \"y\"\n";
        assert!(check_manifest("x", "apps/x", elsewhere, false).is_err());
        assert!(check_manifest("x", "apps/x", "[package]\n  build   = 'b.rs'\n", false).is_ok());
    }

    #[test]
    fn manifest_values() {
        let m = "[package]\nname = \"a-b\"\nbuild = 'x'\n\n[[bin]]\nname = \"a_b\"\n\n\
                 [[bin]]\nname = \"other\"\n[dependencies]\nname = \"no\"\n";
        assert_eq!(manifest_value(m, "[package]", "name").as_deref(), Some("a-b"));
        assert_eq!(manifest_value(m, "[package]", "build").as_deref(), Some("x"));
        assert_eq!(manifest_value(m, "[[bin]]", "name").as_deref(), Some("a_b"));
        assert_eq!(manifest_value(m, "[lib]", "name"), None);
        assert_eq!(manifest_value("[package]\nversion = \"1\"\n", "[package]", "name"), None);
        // The binary defaults to the package's name.
        let hello = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/hello/Cargo.toml"),
        )
        .unwrap();
        assert_eq!(manifest_value(&hello, "[package]", "name").as_deref(), Some("hello"));
    }

    #[test]
    fn elf_ranges() {
        let ok = badelf::tests::sample_with(&[(0x40_0000, 0x1000), (0x40_2000, 0x1000)]);
        assert!(check_elf("a", "apps/a", &ok).is_ok());
        // rust-lld's default base for x86_64-unknown-none.
        let low = badelf::tests::sample_with(&[(0x20_0000, 0x1000)]);
        let err = check_elf("a", "tests/a", &low).unwrap_err();
        assert!(err.contains("app a") && err.contains(BUILD_LINE), "{err}");
        assert!(err.contains("tests/a/Cargo.toml"), "{err}");
        let high = badelf::tests::sample_with(&[(abi::USER_MAX - 0x1000, 0x2000)]);
        assert!(check_elf("a", "apps/a", &high).is_err());
        assert!(check_elf("a", "apps/a", b"junk").is_err());
    }

    #[test]
    fn template_names_itself() {
        let main = template_main("my-app");
        assert!(main.contains("const NAME: &str = \"my-app\";"));
        assert!(main.contains("#![forbid(unsafe_code)]"));
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
        std::fs::write(root.join("apps/hello/Cargo.toml"), "[package]\nname = \"hello\"\n")
            .unwrap();
        std::fs::create_dir_all(root.join("tests/bad-thing")).unwrap();
        std::fs::write(
            root.join("tests/bad-thing/Cargo.toml"),
            "[package]\nname = \"bad-thing\"\n\n[[bin]]\nname = \"bad_thing\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("protocols/x")).unwrap();
        std::fs::write(root.join("protocols/x/Cargo.toml"), "[package]\nname = \"x-proto\"\n")
            .unwrap();
        std::fs::write(root.join("Cargo.toml"), "[workspace]\nmembers = [\"apps/*\"]\n").unwrap();
        assert!(create(&root, "hello").is_err());
        assert!(create(&root, "bad-thing").is_err(), "a test's package name is taken");
        assert!(create(&root, "x-proto").is_err(), "a library's package name is taken");
        let dir = create(&root, "new-one").unwrap();
        assert_eq!(dir, root.join("apps/new-one"));
        let names: Vec<_> =
            discover(&root).unwrap().into_iter().map(|p| (p.dir, p.package, p.name)).collect();
        let owned = |d: &str, p: &str, n: &str| (d.to_string(), p.to_string(), n.to_string());
        assert_eq!(
            names,
            [
                owned("tests/bad-thing", "bad-thing", "bad_thing"),
                owned("apps/hello", "hello", "hello"),
                owned("apps/new-one", "new-one", "new-one"),
            ]
        );
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(check_manifest("new-one", "apps/new-one", &manifest, false).is_ok());
        assert!(create(&root, "new-one").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
