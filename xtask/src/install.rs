//! Making sure `qemu-system-x86_64` is there.
//!
//! The project needs QEMU 10 (bookworm's own 7.2 has no x2APIC under TCG).
//! On Debian bookworm it comes from `bookworm-backports`. When QEMU is
//! missing and we are root with `apt-get`, we add that suite (a deb822
//! `.sources` file using the same mirror as the machine's bookworm entry) and
//! install `qemu-system-x86`; otherwise we stop and print the commands. An
//! old QEMU only earns a warning. `.ci/run` does the same in shell.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The QEMU binary we run.
pub const QEMU: &str = "qemu-system-x86_64";

/// The minimum QEMU major version the tests need.
pub const MIN_MAJOR: u32 = 10;

/// Where we write the backports source.
const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";

/// Mirror used when no bookworm entry can be found.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Finds `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Whether this process runs as root (real uid 0, from `/proc/self/status`,
/// falling back to `id -u`).
pub fn is_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(uid) = parse_uid(&status)
    {
        return uid == 0;
    }
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|s| s.trim() == "0")
}

/// The real uid from the text of `/proc/self/status`.
fn parse_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
}

/// The mirror URI of the first `bookworm` entry in deb822 `.sources` text,
/// with its `Signed-By` value if any.
pub fn mirror_from_deb822(text: &str) -> Option<(String, Option<String>)> {
    for stanza in text.split("\n\n") {
        let mut uris = None;
        let mut suites = None;
        let mut signed_by = None;
        for line in stanza.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            if let Some((key, value)) = line.split_once(':') {
                let value = value.trim().to_string();
                match key.trim().to_ascii_lowercase().as_str() {
                    "uris" => uris = Some(value),
                    "suites" => suites = Some(value),
                    "signed-by" => signed_by = Some(value).filter(|v| !v.is_empty()),
                    _ => {}
                }
            }
        }
        if let (Some(uris), Some(suites)) = (uris, suites)
            && suites.split_whitespace().any(|s| s == "bookworm")
            && let Some(uri) = uris.split_whitespace().next()
        {
            return Some((uri.to_string(), signed_by));
        }
    }
    None
}

/// The mirror URI of the first `deb ... bookworm ...` line of a one-line
/// style `sources.list`.
pub fn mirror_from_list(text: &str) -> Option<String> {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut words: Vec<&str> = words.collect();
        // Skip an `[option=value ...]` block.
        if words.first().is_some_and(|w| w.starts_with('[')) {
            let end = words.iter().position(|w| w.ends_with(']'))?;
            words.drain(..=end);
        }
        if let [uri, suite, ..] = words.as_slice()
            && *suite == "bookworm"
        {
            return Some(uri.to_string());
        }
    }
    None
}

/// Whether any of the apt source texts already enables `bookworm-backports`.
pub fn has_backports(texts: &[String]) -> bool {
    texts.iter().any(|t| {
        t.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.split_whitespace().any(|w| w == "bookworm-backports"))
    })
}

/// The deb822 stanza enabling backports on `mirror`.
pub fn backports_stanza(mirror: &str, signed_by: Option<&str>) -> String {
    let mut s =
        format!("Types: deb\nURIs: {mirror}\nSuites: bookworm-backports\nComponents: main\n");
    if let Some(key) = signed_by {
        s.push_str(&format!("Signed-By: {key}\n"));
    }
    s
}

/// The major version from `qemu-system-x86_64 --version` output.
pub fn parse_qemu_major(version_output: &str) -> Option<u32> {
    let rest = version_output.split("version ").nth(1)?;
    rest.split('.').next()?.trim().parse().ok()
}

/// The contents of every enabled apt source file: `(path, text)`.
fn apt_sources() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let list = Path::new("/etc/apt/sources.list");
    if let Ok(text) = std::fs::read_to_string(list) {
        out.push((list.to_path_buf(), text));
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let enabled = p.extension().is_some_and(|e| e == "sources" || e == "list");
            if enabled && let Ok(text) = std::fs::read_to_string(&p) {
                out.push((p, text));
            }
        }
    }
    out
}

/// The Debian codename from `/etc/os-release`, if any.
fn codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
}

/// The manual instructions printed when we cannot install QEMU ourselves.
fn manual_instructions() -> String {
    format!(
        "{QEMU} (QEMU >= {MIN_MAJOR}) is needed. On Debian bookworm, as root: add the \
         bookworm-backports suite to apt (e.g. {BACKPORTS_FILE} with\n\
         {}\
         using the same mirror as your bookworm entry), then run:\n  \
         apt-get update && apt-get install -y -t bookworm-backports qemu-system-x86",
        backports_stanza(DEFAULT_MIRROR, None)
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    )
}

/// Runs a command, failing with a message when it does not succeed.
fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{cmd:?} failed: {status}")) }
}

/// Installs `qemu-system-x86` with apt (bookworm: from backports).
fn install() -> Result<(), String> {
    let bookworm = codename().as_deref() == Some("bookworm");
    if bookworm {
        let sources = apt_sources();
        let texts: Vec<String> = sources.iter().map(|(_, t)| t.clone()).collect();
        if !has_backports(&texts) {
            let (mirror, signed_by) = sources
                .iter()
                .find_map(|(p, t)| {
                    if p.extension().is_some_and(|e| e == "sources") {
                        mirror_from_deb822(t)
                    } else {
                        mirror_from_list(t).map(|m| (m, None))
                    }
                })
                .unwrap_or_else(|| (DEFAULT_MIRROR.to_string(), None));
            let stanza = backports_stanza(&mirror, signed_by.as_deref());
            eprintln!("xtask: adding bookworm-backports ({mirror}) in {BACKPORTS_FILE}");
            std::fs::write(BACKPORTS_FILE, stanza)
                .map_err(|e| format!("writing {BACKPORTS_FILE}: {e}"))?;
        }
    }
    run(Command::new("apt-get").arg("update"))?;
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y"]);
    if bookworm {
        cmd.args(["-t", "bookworm-backports"]);
    }
    cmd.arg("qemu-system-x86");
    run(&mut cmd)
}

/// Makes sure QEMU is on `PATH`, installing it when missing and possible.
/// Warns when it is older than [`MIN_MAJOR`].
pub fn ensure_qemu() -> Result<(), String> {
    if which(QEMU).is_none() {
        if is_root() && which("apt-get").is_some() {
            eprintln!("xtask: {QEMU} not found; installing it with apt-get");
            install()
                .map_err(|e| format!("installing QEMU failed: {e}\n{}", manual_instructions()))?;
            if which(QEMU).is_none() {
                return Err(format!("{QEMU} still not on PATH after installing"));
            }
        } else {
            return Err(format!("{QEMU} not found on PATH.\n{}", manual_instructions()));
        }
    }
    if let Ok(out) = Command::new(QEMU).arg("--version").output() {
        let text = String::from_utf8_lossy(&out.stdout);
        match parse_qemu_major(&text) {
            Some(major) if major >= MIN_MAJOR => {}
            Some(major) => eprintln!(
                "xtask: warning: QEMU {major} found, QEMU >= {MIN_MAJOR} is needed (x2APIC under TCG).\n{}",
                manual_instructions()
            ),
            None => eprintln!("xtask: warning: cannot tell QEMU's version from {text:?}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_SOURCES: &str = "Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
";

    #[test]
    fn deb822_mirror() {
        assert_eq!(
            mirror_from_deb822(DEBIAN_SOURCES),
            Some((
                "http://mirror.example/debian".into(),
                Some("/usr/share/keyrings/debian-archive-keyring.gpg".into())
            ))
        );
        let security_only =
            "Types: deb\nURIs: http://x/debian-security\nSuites: bookworm-security\n";
        assert_eq!(mirror_from_deb822(security_only), None);
    }

    #[test]
    fn list_mirror() {
        let text = "# comment\ndeb-src http://a/debian bookworm main\n\
                    deb http://security/debian-security bookworm-security main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://b/debian bookworm main contrib\n";
        assert_eq!(mirror_from_list(text), Some("http://b/debian".into()));
        assert_eq!(mirror_from_list("deb http://c/debian trixie main"), None);
    }

    #[test]
    fn backports_detection_and_stanza() {
        assert!(!has_backports(&[DEBIAN_SOURCES.into()]));
        assert!(has_backports(&["Suites: bookworm-backports\n".into()]));
        assert!(!has_backports(&["# deb http://x bookworm-backports main\n".into()]));
        assert_eq!(
            backports_stanza("http://m/debian", Some("/k.gpg")),
            "Types: deb\nURIs: http://m/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /k.gpg\n"
        );
    }

    #[test]
    fn qemu_version_and_uid() {
        let v = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright";
        assert_eq!(parse_qemu_major(v), Some(10));
        assert_eq!(parse_qemu_major("QEMU emulator version 7.2.15"), Some(7));
        assert_eq!(parse_qemu_major("garbage"), None);
        assert_eq!(parse_uid("Name:\tx\nUid:\t1000\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(parse_uid("Uid:\t0\t0\t0\t0\n"), Some(0));
    }
}
