//! `cargo xtask posix`: runs one static Linux program on the exokernel, as a
//! command a user can script.
//!
//! # What a run is
//!
//! 1. The kernel and every ring-3 program are built as by `cargo xtask
//!    build` (in a child `xtask build` whose output goes to
//!    `target/logs/<time>-posix-build.log`, so that nothing but the
//!    program's bytes reaches xtask's stdout and stderr).
//! 2. The initrd is laid out as the POSIX root ([`layout`]): the entries of
//!    `target/initrd.tar` first (`README` and every app as a top-level file
//!    named after it: the kernel finds `init=` apps by that name), then the
//!    default root — `bin/busybox` (Debian's `busybox-static`, see
//!    [`busybox`]) with one symlink `bin/NAME -> busybox` per applet of
//!    `busybox --list`, `tests/NAME` for each C program of
//!    `libos-posix/tests/c/` (built with `musl-gcc -static`, see
//!    [`c_tests`]), empty `dev/` and `tmp/` (1777) — then each `--root
//!    DIR`'s tree on top (a later entry replaces an earlier one of the same
//!    path), then the run request `etc/exo-run` ([`RunRequest`]). Every entry
//!    is ustar (no GNU or pax extensions: the kernel's reader takes only
//!    ustar), uid/gid 0, mtime [`MTIME`], names UTF-8.
//! 3. QEMU boots the kernel with `mode=run console=split init=posix`: the
//!    POSIX runtime (`apps/posix`) reads `/etc/exo-run`, loads `argv[0]`
//!    and runs it. Under `console=split` (kernel/src/machine/console.rs)
//!    the program's stdout (console stream 1) goes to an `isa-debugcon`
//!    device at port 0xe9 and its stderr (stream 2) to one at 0xea, each
//!    backed by a file of its own; the kernel's lines stay on COM1, which
//!    goes to the run's log under `target/logs/`. xtask copies the two files
//!    to its stdout and stderr as they grow, byte for byte.
//! 4. When the init environment ends the kernel prints `exo-exit: tag=TAG
//!    status N` (or `... killed WHY`) on COM1 and leaves QEMU with status 37
//!    ([`Ending`]); xtask exits with `N & 0xff`, as a Linux parent sees a
//!    child's `exit_group(N)`. `TAG` is random per boot, given on the
//!    kernel command line (`exit_tag=`), which ring 3 never sees: a program
//!    printing a marker of its own on the kernel console cannot fake its
//!    status.
//!
//! Why debugcon devices and not COM2/COM3: a debugcon is a raw byte sink
//! (one `out` per byte, nothing to poll, no line discipline), so its file
//! holds exactly the bytes written whatever they are, and the kernel's own
//! lines, its panic path included, keep using COM1 unchanged. A kernel
//! panic (QEMU status 35, no marker), a hang (our timeout) or any other
//! ending is reported as such on stderr, and xtask exits with
//! [`XTASK_FAILED`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The mtime of every entry the POSIX root is packed with (2024-01-01
/// 00:00:00 UTC): fixed, so that `ls -l` prints the same on every build.
pub const MTIME: u64 = 1_704_067_200;
/// The path of the run request in the root.
pub const RUN_REQUEST: &str = "etc/exo-run";
/// The kernel marker before the init environment's end (see
/// kernel/src/machine/env/registry.rs `EXIT_MARKER`).
pub const EXIT_MARKER: &str = "exo-exit:";
/// QEMU's exit status when the init environment has ended under
/// `console=split` (`(0x12 << 1) | 1`).
pub const QEMU_INIT_ENDED: i32 = 37;
/// xtask's own exit status when it could not run the program to its end
/// (build failure, kernel panic, timeout): the reason is on stderr.
pub const XTASK_FAILED: u8 = 125;
/// The exit status reported for a program the kernel killed (a fault it
/// did not handle), as a shell reports a `SIGSEGV` death (128 + 11).
pub const KILLED_STATUS: u8 = 139;
/// The `isa-debugcon` ports of streams 1 and 2 (kernel/src/machine/console.rs).
pub const STDOUT_PORT: u16 = 0xe9;
/// See [`STDOUT_PORT`].
pub const STDERR_PORT: u16 = 0xea;

// --- the run request ----------------------------------------------------

/// What the runtime runs: `etc/exo-run`, in libos-posix's own format
/// (`libos_posix::request`: its encoder writes it, the runtime's parser
/// reads it, and its property tests check that the two agree).
pub use libos_posix::request::Request as RunRequest;

// --- the tree -----------------------------------------------------------

/// One entry of the POSIX root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory with these permission bits.
    Dir(u32),
    /// A regular file: permission bits, contents.
    File(u32, Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
}

/// The POSIX root: paths relative to `/`, without a leading or trailing
/// `/`, in the order they are packed (sorted: a directory before what it
/// holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// The entries.
    pub entries: BTreeMap<String, Node>,
}

impl Tree {
    /// Adds or replaces `path`, adding its missing parent directories
    /// (0755). A path must be relative, without `.`/`..`/empty components.
    pub fn put(&mut self, path: &str, node: Node) -> Result<(), String> {
        check_path(path)?;
        let mut parent = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().map_or(&[][..], |(_, p)| p) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.entries.get(&parent) {
                Some(Node::Dir(_)) => {}
                _ => {
                    self.entries.insert(parent.clone(), Node::Dir(0o755));
                }
            }
        }
        // A non-directory replacing a directory takes its contents away.
        if !matches!(node, Node::Dir(_)) {
            let prefix = format!("{path}/");
            self.entries.retain(|p, _| !p.starts_with(&prefix));
        }
        self.entries.insert(path.to_string(), node);
        Ok(())
    }

    /// Lays `dir`'s tree on top: files (with their permission bits),
    /// directories and symlinks; anything else is refused.
    pub fn overlay(&mut self, dir: &Path) -> Result<(), String> {
        fn walk(tree: &mut Tree, base: &Path, dir: &Path) -> Result<(), String> {
            let mut items: Vec<_> = std::fs::read_dir(dir)
                .map_err(|e| format!("reading {}: {e}", dir.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("reading {}: {e}", dir.display()))?;
            items.sort_by_key(|e| e.file_name());
            for item in items {
                let path = item.path();
                let rel = path.strip_prefix(base).expect("under base");
                let rel =
                    rel.to_str().ok_or_else(|| format!("{}: not a UTF-8 name", path.display()))?;
                let meta = std::fs::symlink_metadata(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o7777;
                let kind = meta.file_type();
                if kind.is_symlink() {
                    let target = std::fs::read_link(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    let target = target
                        .to_str()
                        .ok_or_else(|| format!("{}: not a UTF-8 link", path.display()))?;
                    tree.put(rel, Node::Symlink(target.to_string()))?;
                } else if kind.is_dir() {
                    tree.put(rel, Node::Dir(mode))?;
                    walk(tree, base, &path)?;
                } else if kind.is_file() {
                    let data =
                        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    tree.put(rel, Node::File(mode, data))?;
                } else {
                    return Err(format!(
                        "{}: only files, directories and symlinks can go in the root",
                        path.display()
                    ));
                }
            }
            Ok(())
        }
        if !dir.is_dir() {
            return Err(format!("--root {}: not a directory", dir.display()));
        }
        walk(self, dir, dir)
    }
}

/// A root path must be relative, UTF-8 (the kernel's reader refuses other
/// names), without empty, `.` or `..` components, and fit a ustar header.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty()
        || path.starts_with('/')
        || path.split('/').any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!("bad root path {path:?}"));
    }
    // ustar: the whole path in the 100-byte name field, or split at a `/`
    // into the 155-byte prefix field and the name field.
    let fits = path.len() <= 100
        || path.match_indices('/').any(|(i, _)| i <= 155 && path.len() - i - 1 <= 100);
    if !fits || path.contains('\0') {
        return Err(format!(
            "root path {path:?} does not fit a ustar header (a name of at most 100 bytes \
             after a directory part of at most 155)"
        ));
    }
    Ok(())
}

/// The archive's bytes: `prefix` (the build's `target/initrd.tar`, less its
/// two closing zero blocks) then every entry of `tree`, as ustar.
pub fn pack(base: &[u8], tree: &Tree) -> Result<Vec<u8>, String> {
    let base = strip_end(base)?;
    let mut builder = tar::Builder::new(base.to_vec());
    let err = |p: &str, e: std::io::Error| format!("packing {p}: {e}");
    for (path, node) in &tree.entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        let (data, name): (&[u8], String) = match node {
            Node::Dir(mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                // No trailing `/`: a long path then still splits into
                // ustar's prefix and name.
                (&[], path.clone())
            }
            Node::File(mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                (data, path.clone())
            }
            Node::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_link_name(target).map_err(|e| err(path, e))?;
                (&[], path.clone())
            }
        };
        h.set_size(data.len() as u64);
        // `set_path` splits a long name into ustar's prefix and name
        // fields (and refuses what does not fit) instead of writing a GNU
        // long-name entry, which the kernel's reader would refuse.
        h.set_path(&name).map_err(|e| err(path, e))?;
        h.set_cksum();
        crate::initrd::align_elf_data(&mut builder, data).map_err(|e| err(path, e))?;
        builder.append(&h, data).map_err(|e| err(path, e))?;
    }
    builder.into_inner().map_err(|e| format!("packing: {e}"))
}

/// `archive` without its end-of-archive zero blocks (a base to append to).
fn strip_end(archive: &[u8]) -> Result<&[u8], String> {
    if !archive.len().is_multiple_of(512) {
        return Err("the build's initrd is not a whole number of 512-byte blocks".into());
    }
    let mut end = archive.len();
    while end >= 512 && archive[end - 512..end].iter().all(|&b| b == 0) {
        end -= 512;
    }
    Ok(&archive[..end])
}

// --- the default root ---------------------------------------------------

/// Where the downloaded and built parts of the default root are cached.
pub fn cache_dir(target: &Path) -> PathBuf {
    target.join("posix")
}

/// Debian's `busybox-static` binary, downloaded with `apt-get download`
/// into `target/posix/` once and extracted with `dpkg-deb -x`.
pub fn busybox(target: &Path) -> Result<PathBuf, String> {
    let dir = cache_dir(target);
    let bin = dir.join("busybox-static").join("bin").join("busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let find_deb = || {
        std::fs::read_dir(&dir).ok().and_then(|rd| {
            rd.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("busybox-static_") && n.ends_with(".deb"))
            })
        })
    };
    if find_deb().is_none() {
        println!("xtask: downloading busybox-static (apt-get download) into {}", dir.display());
        let download = || {
            Command::new("apt-get")
                .args(["download", "busybox-static"])
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !download() {
            // The package lists may be missing on a fresh machine.
            let _ = Command::new("apt-get")
                .arg("update")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !download() {
                return Err("apt-get download busybox-static failed (needs Debian's apt and \
                            the network)"
                    .into());
            }
        }
    }
    let deb = find_deb().ok_or("apt-get download left no busybox-static .deb")?;
    let out = dir.join("busybox-static");
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&out)
        .status()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    if !st.success() || !bin.is_file() {
        return Err(format!("dpkg-deb -x {} gave no bin/busybox", deb.display()));
    }
    Ok(bin)
}

/// The applets `busybox --list` names (run on the host: it is static).
pub fn applets(busybox: &Path) -> Result<Vec<String>, String> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("cannot run {} --list: {e}", busybox.display()))?;
    if !out.status.success() {
        return Err(format!("{} --list failed", busybox.display()));
    }
    let text = String::from_utf8(out.stdout).map_err(|_| "busybox --list: not UTF-8")?;
    Ok(parse_applets(&text))
}

/// The applet names of `busybox --list`'s output: one per line, each a
/// plain file name (anything with `/` or odd characters dropped), not
/// `busybox` itself.
pub fn parse_applets(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|n| {
            !n.is_empty()
                && *n != "busybox"
                && n.len() <= 64
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
        })
        .map(str::to_string)
        .collect()
}

/// The C test programs' sources: `libos-posix/tests/c/*.c`, sorted.
pub fn c_sources(root: &Path) -> Result<Vec<PathBuf>, String> {
    let dir = root.join("libos-posix/tests/c");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    v.sort();
    Ok(v)
}

/// Builds each C test program with `musl-gcc -static -O2 -Wall … -lm` (the
/// flags of libos-posix/tests/c/Makefile) into `target/posix-c/` when its
/// source is newer, installing `musl-tools` when missing; returns (name,
/// ELF) pairs.
pub fn c_tests(root: &Path, target: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let out_dir = target.join("posix-c");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let mut out = Vec::new();
    for src in c_sources(root)? {
        let name = src.file_stem().and_then(|s| s.to_str()).ok_or("bad C file name")?.to_string();
        let bin = out_dir.join(&name);
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if mtime(&bin).is_none() || mtime(&bin) < mtime(&src) {
            crate::linux::ensure_musl()?;
            let o = Command::new("musl-gcc")
                .args(["-static", "-O2", "-Wall", "-o"])
                .arg(&bin)
                .arg(&src)
                .arg("-lm")
                .output()
                .map_err(|e| format!("cannot run musl-gcc: {e}"))?;
            if !o.status.success() {
                return Err(format!(
                    "musl-gcc {}: {}",
                    src.display(),
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
        out.push((name, std::fs::read(&bin).map_err(|e| format!("{}: {e}", bin.display()))?));
    }
    Ok(out)
}

/// The default root: busybox and its applet links in `bin/`, the C tests
/// in `tests/`, empty `dev/`, `etc/` and `tmp/`.
pub fn default_root(
    busybox: &[u8],
    applets: &[String],
    tests: &[(String, Vec<u8>)],
) -> Result<Tree, String> {
    let mut t = Tree::default();
    t.put("bin", Node::Dir(0o755))?;
    t.put("bin/busybox", Node::File(0o755, busybox.to_vec()))?;
    for a in applets {
        t.put(&format!("bin/{a}"), Node::Symlink("busybox".into()))?;
    }
    t.put("dev", Node::Dir(0o755))?;
    t.put("etc", Node::Dir(0o755))?;
    t.put("tests", Node::Dir(0o755))?;
    for (name, elf) in tests {
        t.put(&format!("tests/{name}"), Node::File(0o755, elf.clone()))?;
    }
    t.put("tmp", Node::Dir(0o1777))?;
    Ok(t)
}

/// The whole root for a run: `default` (or nothing), each of `roots` on
/// top, then the run request.
pub fn layout(default: Tree, roots: &[PathBuf], request: &RunRequest) -> Result<Tree, String> {
    let mut t = default;
    for r in roots {
        t.overlay(r)?;
    }
    t.put(RUN_REQUEST, Node::File(0o644, libos_posix::request::encode(request)))?;
    Ok(t)
}

// --- booting ------------------------------------------------------------

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The init environment called `Exit` with this code (all 64 bits).
    Exited(u64),
    /// The kernel killed the init environment, for this reason.
    Killed(String),
    /// Anything else: a kernel panic, a QEMU error, a guest that stopped
    /// without the marker, or our timeout; said in words.
    Failed(String),
}

impl Ending {
    /// xtask's exit status for it.
    pub fn status(&self) -> u8 {
        match self {
            Ending::Exited(code) => (*code & 0xff) as u8,
            Ending::Killed(_) => KILLED_STATUS,
            Ending::Failed(_) => XTASK_FAILED,
        }
    }
}

/// A fresh random tag for the end marker (`exit_tag=` on the kernel command
/// line; 16 hex digits from `/dev/urandom`, else from the time and pid).
pub fn fresh_tag() -> String {
    let mut b = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if random.is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b = (t ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads how the guest ended from QEMU's exit status and the kernel's log:
/// status 37 with a last `exo-exit: tag=TAG` line carrying our `tag` is
/// the init environment's end (a marker with another tag was printed by
/// someone else and is ignored); anything else is a failure.
pub fn ending(qemu: crate::qemu::GuestStatus, log: &str, tag: &str) -> Ending {
    use crate::qemu::GuestStatus;
    let ours = format!("{EXIT_MARKER} tag={tag} ");
    let marker = log
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(ours.as_str()))
        .next_back()
        .map(str::trim);
    match (qemu, marker) {
        (GuestStatus::OtherCode(v), Some(m)) if (v << 1 | 1) as i32 == QEMU_INIT_ENDED => {
            if let Some(code) = m.strip_prefix("status ").and_then(|c| c.parse().ok()) {
                Ending::Exited(code)
            } else if let Some(why) = m.strip_prefix("killed ") {
                Ending::Killed(why.to_string())
            } else {
                Ending::Failed(format!("unreadable exit marker {m:?}"))
            }
        }
        (GuestStatus::OtherCode(v), None) if (v << 1 | 1) as i32 == QEMU_INIT_ENDED => {
            Ending::Failed("the kernel reported the end but printed no exit marker".into())
        }
        (GuestStatus::Failure, _) if log.contains("PANIC") => {
            Ending::Failed("the kernel panicked".into())
        }
        (s, _) => Ending::Failed(format!("{} (no program status)", s.describe())),
    }
}

/// One boot with the split console.
pub struct SplitBoot {
    /// The boot (its `append` gets `console=split`; its log is the
    /// kernel's COM1 output).
    pub boot: crate::qemu::Boot,
    /// Where stream 1 is written.
    pub stdout: PathBuf,
    /// Where stream 2 is written.
    pub stderr: PathBuf,
}

/// Where the program's output goes while it runs.
pub enum Sink<'a> {
    /// Forwarded live to xtask's stdout and stderr.
    Forward,
    /// Kept (the test suite compares it).
    Keep(&'a mut Vec<u8>, &'a mut Vec<u8>),
}

/// QEMU's arguments for `b`: those of [`crate::qemu::Boot::args`] with
/// `exit_tag=TAG` on the command line, COM1 to the log file and the two
/// stream devices added.
pub fn split_args(b: &SplitBoot, tag: &str) -> Vec<String> {
    let mut boot = b.boot.clone();
    boot.append = format!("{} exit_tag={tag}", boot.append);
    let mut a = boot.args();
    if let Some(i) = a.windows(2).position(|w| w[0] == "-serial" && w[1] == "stdio") {
        a[i + 1] = format!("file:{}", b.boot.log.display());
    }
    for (id, port, path) in [("out", STDOUT_PORT, &b.stdout), ("err", STDERR_PORT, &b.stderr)] {
        a.push("-chardev".into());
        a.push(format!("file,id=exo{id},path={}", path.display()));
        a.push("-device".into());
        a.push(format!("isa-debugcon,iobase={port:#x},chardev=exo{id}"));
    }
    a
}

/// Boots `b`, copying the streams to `sink` as they grow, and reads the
/// ending. The log and stream files are left in place.
pub fn boot_split(b: &SplitBoot, sink: Sink<'_>) -> Result<Ending, String> {
    for p in [&b.boot.log, &b.stdout, &b.stderr] {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::write(p, b"").map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let tag = fresh_tag();
    let args = split_args(b, &tag);
    let qemu_err = b.boot.log.with_extension("qemu-stderr");
    let errf = std::fs::File::create(&qemu_err).map_err(|e| e.to_string())?;
    let mut child = Command::new(crate::install::QEMU)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errf)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", crate::install::QEMU))?;
    let mut out_f = std::fs::File::open(&b.stdout).map_err(|e| e.to_string())?;
    let mut err_f = std::fs::File::open(&b.stderr).map_err(|e| e.to_string())?;
    let (mut keep_out, mut keep_err) = (Vec::new(), Vec::new());
    // Appends what the file gained since the last read.
    fn pump(f: &mut std::fs::File, keep: &mut Vec<u8>) {
        let _ = f.read_to_end(keep);
    }
    let forward = matches!(sink, Sink::Forward);
    let (mut sent_out, mut sent_err) = (0, 0);
    let mut flush = |o: &[u8], e: &[u8]| {
        if forward {
            let mut so = std::io::stdout().lock();
            let _ = so.write_all(&o[sent_out..]);
            let _ = so.flush();
            sent_out = o.len();
            let mut se = std::io::stderr().lock();
            let _ = se.write_all(&e[sent_err..]);
            let _ = se.flush();
            sent_err = e.len();
        }
    };
    let start = Instant::now();
    let status = loop {
        pump(&mut out_f, &mut keep_out);
        pump(&mut err_f, &mut keep_err);
        flush(&keep_out, &keep_err);
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            use std::os::unix::process::ExitStatusExt;
            break crate::qemu::GuestStatus::from_exit(st.code(), st.signal());
        }
        if b.boot.timeout.is_some_and(|t| start.elapsed() > t) {
            let _ = child.kill();
            let _ = child.wait();
            break crate::qemu::GuestStatus::TimedOut(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    pump(&mut out_f, &mut keep_out);
    pump(&mut err_f, &mut keep_err);
    flush(&keep_out, &keep_err);
    if let Sink::Keep(o, e) = sink {
        *o = keep_out;
        *e = keep_err;
    }
    crate::logs::finish(&b.boot.log);
    let log = String::from_utf8_lossy(&std::fs::read(&b.boot.log).unwrap_or_default()).into_owned();
    let mut end = ending(status, &log, &tag);
    if let Ending::Failed(why) = &mut end {
        let qe = std::fs::read_to_string(&qemu_err).unwrap_or_default();
        if !qe.trim().is_empty() {
            why.push_str(&format!("; QEMU said: {}", qe.trim()));
        }
    }
    let _ = std::fs::remove_file(&qemu_err);
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::GuestStatus;

    #[test]
    fn run_request_round_trips_any_bytes() {
        let req = RunRequest {
            argv: vec![b"/bin/busybox".to_vec(), b"".to_vec(), b"a:b\0\n\xff12:".to_vec()],
            envp: vec![b"K=V".to_vec(), b"EMPTY=".to_vec()],
            cwd: Some(b"/tmp".to_vec()),
        };
        let bytes = libos_posix::request::encode(&req);
        assert!(bytes.starts_with(b"A12:/bin/busyboxA0:A"));
        assert!(bytes.ends_with(b"E3:K=VE6:EMPTY=C4:/tmp"));
        assert_eq!(libos_posix::request::parse(&bytes), Ok(req));
        // Refusals of the runtime's parser: no argv, short body, bad lengths and tags.
        for bad in [&b""[..], b"A5:abc", b"A:x", b"A-1:x", b"X1:x", b"A1x", b"E1:x"] {
            assert!(
                libos_posix::request::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tree_adds_parents_and_overlays_replace() {
        let mut t = Tree::default();
        t.put("a/b/c", Node::File(0o600, b"x".to_vec())).unwrap();
        assert_eq!(t.entries.get("a"), Some(&Node::Dir(0o755)));
        assert_eq!(t.entries.get("a/b"), Some(&Node::Dir(0o755)));
        // A file replacing a directory drops what it held.
        t.put("a/b", Node::Symlink("elsewhere".into())).unwrap();
        assert!(!t.entries.contains_key("a/b/c"));
        // And a file under a former file makes it a directory again.
        t.put("a/b/d", Node::File(0o644, vec![])).unwrap();
        assert_eq!(t.entries.get("a/b"), Some(&Node::Dir(0o755)));
        let unsplittable = format!("{}/{}/{}", "d".repeat(90), "e".repeat(90), "f".repeat(60));
        for bad in ["", "/abs", "a//b", "a/./b", "../x", "a/", &"x".repeat(101), &unsplittable] {
            assert!(t.put(bad, Node::Dir(0o755)).is_err(), "{bad:?}");
        }
    }

    /// Reads an archive back as (name, type, mode, mtime, link, data),
    /// padding entries left out (an ELF's data checked to start on a page).
    fn entries(bytes: &[u8]) -> Vec<(String, u8, u32, u64, String, Vec<u8>)> {
        let mut a = tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.header().entry_type().as_byte() != crate::initrd::PAD_TYPE)
            .map(|mut e| {
                let h = e.header().clone();
                let elf = e.size() >= 4
                    && bytes[e.raw_file_position() as usize..].starts_with(b"\x7fELF");
                assert!(!elf || e.raw_file_position() % 4096 == 0, "an ELF's data on a page");
                assert_eq!(&h.as_bytes()[257..265], b"ustar\x0000", "plain ustar only");
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut d = Vec::new();
                e.read_to_end(&mut d).unwrap();
                (name, h.entry_type().as_byte(), h.mode().unwrap(), h.mtime().unwrap(), link, d)
            })
            .collect()
    }

    #[test]
    fn the_root_keeps_the_apps_and_is_deterministic() {
        let apps = [crate::initrd::App { name: "posix".into(), elf: b"\x7fELFposix".to_vec() }];
        let base = crate::initrd::pack(&apps).unwrap();
        let tests = vec![("hello".to_string(), b"ELF-hello".to_vec())];
        let applets = parse_applets("[\n[[\nbusybox\nsh\nls\n\nbad/name\n");
        assert_eq!(applets, ["[", "[[", "sh", "ls"]);
        let default = default_root(b"BB", &applets, &tests).unwrap();
        let req = RunRequest { argv: vec![b"/bin/sh".to_vec()], envp: vec![], cwd: None };
        let long = format!("{}/{}/{}", "d".repeat(60), "e".repeat(60), "f".repeat(60));
        let mut extra = Tree::default();
        extra.put(&long, Node::File(0o644, b"long".to_vec())).unwrap();
        let mut tree = layout(default, &[], &req).unwrap();
        tree.entries.extend(extra.entries);
        let bytes = pack(&base, &tree).unwrap();
        assert_eq!(bytes, pack(&base, &tree).unwrap(), "deterministic");
        let e = entries(&bytes);
        // README and the app first, unchanged, top-level.
        assert_eq!(e[0].0, "README");
        assert_eq!((e[1].0.as_str(), &e[1].5[..]), ("posix", &b"\x7fELFposix"[..]));
        let find = |n: &str| e.iter().find(|x| x.0 == n).unwrap_or_else(|| panic!("{n}"));
        assert_eq!(find("bin/busybox").1, b'0');
        assert_eq!(find("bin/busybox").2, 0o755);
        assert_eq!((find("bin/sh").1, find("bin/sh").4.as_str()), (b'2', "busybox"));
        assert_eq!((find("tmp").1, find("tmp").2), (b'5', 0o1777));
        assert_eq!(find("tests/hello").5, b"ELF-hello");
        assert_eq!(libos_posix::request::parse(&find(RUN_REQUEST).5), Ok(req));
        assert!(e.iter().skip(2).all(|x| x.3 == MTIME));
        // A name over 100 bytes goes in the ustar prefix, not a GNU entry.
        assert_eq!(find(&long).5, b"long");
        // The kernel's reader finds the apps in it.
        assert_eq!(kernel::initrd::find(&bytes, "posix").unwrap().unwrap().data, b"\x7fELFposix");
        assert!(kernel::initrd::files(&bytes).all(|f| f.is_ok()));
    }

    #[test]
    fn overlay_reads_a_directory() {
        let dir = std::env::temp_dir().join(format!("xtask-posix-overlay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/sh"), b"mine").unwrap();
        std::fs::create_dir_all(dir.join("data/sub")).unwrap();
        std::os::unix::fs::symlink("../bin/sh", dir.join("data/link")).unwrap();
        let mut t = default_root(b"BB", &["sh".into()], &[]).unwrap();
        t.overlay(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(t.entries.get("bin/sh"), Some(Node::File(_, d)) if d == b"mine"));
        assert_eq!(t.entries.get("data/link"), Some(&Node::Symlink("../bin/sh".into())));
        assert!(matches!(t.entries.get("data/sub"), Some(Node::Dir(_))));
        assert!(t.overlay(Path::new("/nonexistent-xtask-root")).is_err());
    }

    #[test]
    fn endings() {
        let ended = GuestStatus::OtherCode(0x12);
        let ending = |s, log: &str| ending(s, log, "t1");
        let log = "exo: boot ok\nexo-exit: tag=t1 status 1\nexo-exit: tag=t1 status 263\r\n";
        assert_eq!(ending(ended.clone(), log), Ending::Exited(263));
        // A marker without our tag (printed by ring 3) is not the kernel's.
        let forged = "exo-exit: tag=t1 status 3\nexo-exit: status 0\nexo-exit: tag=t2 status 0\n";
        assert_eq!(ending(ended.clone(), forged), Ending::Exited(3));
        assert!(matches!(ending(ended.clone(), "exo-exit: status 0\n"), Ending::Failed(_)));
        assert_eq!(Ending::Exited(263).status(), 7);
        assert_eq!(Ending::Exited(255).status(), 255);
        assert_eq!(Ending::Exited(0).status(), 0);
        let k = ending(ended.clone(), "exo-exit: tag=t1 killed ud at rip 0x401000\n");
        assert_eq!(k, Ending::Killed("ud at rip 0x401000".into()));
        assert_eq!(k.status(), KILLED_STATUS);
        assert!(matches!(ending(ended, "no marker"), Ending::Failed(_)));
        // A panic or a timeout is never a program status, marker or not.
        let p = ending(GuestStatus::Failure, "exo-exit: tag=t1 status 0\nPANIC at x");
        assert!(matches!(&p, Ending::Failed(w) if w.contains("panicked")));
        assert_eq!(p.status(), XTASK_FAILED);
        let t = ending(GuestStatus::TimedOut(Duration::from_secs(3)), "exo-exit: tag=t1 status 0");
        assert!(matches!(t, Ending::Failed(_)));
        assert!(matches!(ending(GuestStatus::Success, ""), Ending::Failed(_)));
    }

    #[test]
    fn split_boot_args() {
        let b = SplitBoot {
            boot: crate::qemu::Boot {
                kernel: "/k".into(),
                initrd: "/i".into(),
                append: "mode=run console=split init=posix".into(),
                smp: 2,
                accel: crate::qemu::Accel::Tcg,
                cpu: None,
                icount: false,
                gdb: false,
                timeout: None,
                log: "/l.log".into(),
                interactive: false,
            },
            stdout: "/o".into(),
            stderr: "/e".into(),
        };
        let a = split_args(&b, "abc").join(" ");
        assert!(
            a.contains("-append mode=run console=split init=posix exit_tag=abc -serial"),
            "{a}"
        );
        assert!(a.contains("-serial file:/l.log"), "{a}");
        assert!(!a.contains("stdio"));
        assert!(a.contains(
            "-chardev file,id=exoout,path=/o -device isa-debugcon,iobase=0xe9,chardev=exoout"
        ));
        assert!(a.contains(
            "-chardev file,id=exoerr,path=/e -device isa-debugcon,iobase=0xea,chardev=exoerr"
        ));
    }
}
