//! The flows around [`crate::posix`]: `cargo xtask posix` itself, the POSIX
//! test suite that `cargo xtask test` runs, and `cargo xtask
//! posix-expected`, which regenerates the busybox cases' expected outputs
//! on Linux.
//!
//! # The suite
//!
//! Each case is one boot of `cargo xtask posix`'s machine (2 vCPUs, TCG)
//! running one program; it passes when the program's stdout is byte for
//! byte the expected output and its exit status the expected one. Expected
//! outputs come from the same binaries run on Linux, and are kept in the
//! repository as `NAME.expected` (stdout, then a last line `exit N`):
//!
//! - `libos-posix/tests/c/*.expected`: the C programs, made by that
//!   directory's Makefile (`make expected`: each program run on the host
//!   with `cd / && env -i HOME=/ TERM=dumb`); the suite runs them the same
//!   way (cwd `/`, environment `HOME=/ TERM=dumb`, the Makefile's
//!   arguments).
//! - `libos-posix/tests/busybox/*.expected`: busybox applets that need no
//!   `fork`, and shell commands that fork, exec and wait, made by `cargo xtask posix-expected`: the default root is
//!   extracted to `target/posix/expected-root/` and each case's command
//!   runs there under `chroot` (as root, or in a user namespace with
//!   `unshare -r`), with the same argv, environment and cwd as in the
//!   guest — the same busybox binary on the same files at the same paths.
//! - `ls -l /` lists the initrd's top level, which holds every app of the
//!   build (their sizes change with every commit), so its expected output
//!   cannot be kept: the suite makes it at test time the same way, from an
//!   extraction of exactly the archive the guest boots.
//!
//! - `libos-posix/tests/chan/*.expected`: programs that talk to a service
//!   of the async library OS through `/dev/chan/NAME` ([`CHAN_CASES`]: the
//!   service runs in the same boot). There is no Linux counterpart: these
//!   expected outputs are written by hand from the service's protocol
//!   (`kv_proto`'s text requests).
//!
//! Cases the runtime cannot run yet are listed in [`NOT_YET`]: printed as
//! `not yet run: NAME (why)` and left out of the count, so that the suite
//! says plainly what does not work instead of failing on `main`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use crate::posix::{self, Ending, Node, RunRequest, SplitBoot, Tree};
use crate::qemu::{Accel, Boot};
use crate::{PosixArgs, Workspace};

/// The app the kernel starts: the POSIX runtime (`apps/posix`).
pub const RUNTIME: &str = "posix";
/// The kernel command line of a POSIX run. `quota=65536` (256 MiB of the
/// guest's 512): the runtime maps the program's memory eagerly, and the C
/// memory test alone holds 24 MiB at its peak.
pub const APPEND: &str = "mode=run console=split quota=65536 init=posix";

/// Builds everything with child processes of xtask — `xtask build`, then
/// `xtask posix-prepare` (busybox fetched, C programs built, `musl-tools`
/// installed if need be) — their output in a log, so that our stdout and
/// stderr carry only the program's bytes. Returns the build's initrd bytes.
pub fn quiet_build(ws: &Workspace) -> Result<Vec<u8>, String> {
    let log = ws.log("posix", "build");
    if let Some(d) = log.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find xtask itself: {e}"))?;
    for step in ["build", "posix-prepare"] {
        let (o, e) = (out.try_clone(), out.try_clone());
        let (Ok(o), Ok(e)) = (o, e) else { return Err("cannot share the build log".into()) };
        let status = Command::new(&exe)
            .arg(step)
            .current_dir(&ws.root)
            .env("CARGO_TARGET_DIR", &ws.target)
            .stdin(Stdio::null())
            .stdout(o)
            .stderr(e)
            .status()
            .map_err(|e| format!("cannot run xtask {step}: {e}"))?;
        if !status.success() {
            crate::logs::finish(&log);
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "xtask {step} failed ({status}); its log is {}:\n{}",
                ws.rel(&log),
                tail.join("\n")
            ));
        }
    }
    crate::logs::finish(&log);
    std::fs::read(ws.initrd()).map_err(|e| format!("{}: {e}", ws.rel(&ws.initrd())))
}

/// `cargo xtask posix-prepare`: what [`default_root`] needs, made ahead.
pub fn prepare(ws: &Workspace) -> Result<bool, String> {
    default_root(ws).map(|_| true)
}

/// The default root (busybox, its applets, the C tests).
pub fn default_root(ws: &Workspace) -> Result<Tree, String> {
    let bb = posix::busybox(&ws.target)?;
    let applets = posix::applets(&bb)?;
    let busybox = std::fs::read(&bb).map_err(|e| format!("{}: {e}", bb.display()))?;
    let tests = posix::c_tests(&ws.root, &ws.target)?;
    let mut t = posix::default_root(&busybox, &applets, &tests)?;
    // Data files for the busybox cases.
    for (name, data) in data_files(&ws.root)? {
        t.put(&format!("tests/{name}"), Node::File(0o644, data))?;
    }
    Ok(t)
}

/// `libos-posix/tests/busybox/*.txt`: input files of the busybox cases,
/// packed as `tests/NAME.txt`.
fn data_files(root: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let dir = root.join("libos-posix/tests/busybox");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else { return Ok(out) };
    let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths.into_iter().filter(|p| p.extension().is_some_and(|x| x == "txt")) {
        let name = p.file_name().and_then(|n| n.to_str()).ok_or("bad data file name")?;
        out.push((name.to_string(), std::fs::read(&p).map_err(|e| e.to_string())?));
    }
    Ok(out)
}

/// Whether the build's initrd holds app `name` (a top-level file).
fn has_app(initrd: &[u8], name: &str) -> bool {
    let mut a = tar::Archive::new(initrd);
    a.entries().is_ok_and(|mut es| {
        es.any(|e| e.is_ok_and(|e| e.path().is_ok_and(|p| p.as_os_str() == OsStr::new(name))))
    })
}

/// `cargo xtask posix`.
pub fn run(ws: &Workspace, args: &PosixArgs) -> ExitCode {
    match run_inner(ws, args) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::from(posix::XTASK_FAILED)
        }
    }
}

fn run_inner(ws: &Workspace, args: &PosixArgs) -> Result<u8, String> {
    let mut env = Vec::new();
    for e in &args.env {
        if !e.contains('=') {
            return Err(format!("--env {e:?}: expected K=V"));
        }
        env.push(e.as_bytes().to_vec());
    }
    let request = RunRequest {
        argv: args.command.iter().map(|a| a.as_bytes().to_vec()).collect(),
        envp: env,
        cwd: Some(args.cwd.as_bytes().to_vec()),
    };
    let accel = if args.icount { Accel::Tcg } else { crate::qemu::resolve_quiet(args.accel) };
    let base = quiet_build(ws)?;
    if !has_app(&base, RUNTIME) {
        return Err(format!(
            "the POSIX runtime (app `{RUNTIME}`, apps/posix) is not in this tree's initrd"
        ));
    }
    let tree = posix::layout(default_root(ws)?, &args.roots, &request)?;
    let initrd = posix::cache_dir(&ws.target).join("initrd.tar");
    std::fs::write(&initrd, posix::pack(&base, &tree)?)
        .map_err(|e| format!("{}: {e}", initrd.display()))?;
    crate::install::ensure_qemu()?;
    let mut b = split_boot(ws, initrd, "run", accel, args.smp, args.icount, args.timeout);
    let mut also = args.also.clone();
    if args.kv {
        also.push(KV_SERVICE.to_string());
    }
    start_also(&mut b, &also);
    let end = posix::boot_split(&b, posix::Sink::Forward)?;
    match &end {
        Ending::Exited(_) => {}
        Ending::Killed(why) => eprintln!(
            "xtask: the program was killed by the kernel: {why} (kernel log: {})",
            ws.rel(&b.boot.log)
        ),
        Ending::Failed(why) => {
            eprintln!("xtask: error: {why}; kernel log: {}", ws.rel(&b.boot.log))
        }
    }
    Ok(end.status())
}

/// The `kv` service (start argument: its service-mode bit, `1 << 62`), as
/// an `init=` entry.
pub const KV_SERVICE: &str = "kv:4611686018427387904";

/// Starts `also` (`init=` entries) beside the program of boot `b`.
fn start_also(b: &mut SplitBoot, also: &[String]) {
    if !also.is_empty() {
        // `init=posix` is the command line's last key.
        b.boot.append = format!("{},{}", b.boot.append, also.join(","));
    }
}

/// A split-console boot of `initrd` with its files under `target/`.
pub(crate) fn split_boot(
    ws: &Workspace,
    initrd: PathBuf,
    what: &str,
    accel: Accel,
    smp: u32,
    icount: bool,
    timeout: u64,
) -> SplitBoot {
    let dir = posix::cache_dir(&ws.target);
    SplitBoot {
        boot: Boot {
            kernel: ws.kernel(),
            initrd,
            append: APPEND.into(),
            smp,
            accel,
            cpu: None,
            icount,
            gdb: false,
            timeout: Some(Duration::from_secs(timeout)),
            log: ws.log("posix", what),
            interactive: false,
        },
        stdout: dir.join(format!("{what}.stdout")),
        stderr: dir.join(format!("{what}.stderr")),
    }
}

// --- the suite ----------------------------------------------------------

/// One POSIX case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name in the report (`posix_NAME`).
    pub name: String,
    /// argv, `argv[0]` the program's path in the root.
    pub argv: Vec<String>,
    /// Where its expected output is kept (`None`: made at test time).
    pub expected: Option<PathBuf>,
    /// Applications started beside it (`init=` entries: a service).
    pub also: Vec<String>,
}

/// The environment every case runs with (the Makefile's).
pub const CASE_ENV: [&str; 2] = ["HOME=/", "TERM=dumb"];

/// Cases whose runtime support is not there yet, with why: printed as
/// `not yet run`, not counted. Empty once everything runs.
pub const NOT_YET: &[(&str, &str)] = &[];

/// The busybox cases: (name, argv). Their expected outputs are in
/// `libos-posix/tests/busybox/NAME.expected`, but `ls_root`'s.
pub const BUSYBOX_CASES: &[(&str, &[&str])] = &[
    ("bb_echo", &["/bin/busybox", "echo", "hello,", "two  spaces", "-", "end"]),
    ("bb_cat", &["/bin/cat", "/tests/lines.txt"]),
    ("bb_wc", &["/bin/wc", "/tests/lines.txt"]),
    ("bb_sha256sum", &["/bin/sha256sum", "/tests/lines.txt"]),
    ("bb_sort", &["/bin/sort", "/tests/lines.txt"]),
    ("bb_ls_root", &["/bin/ls", "-l", "/"]),
    // Processes (issue 17): the shell forks, execs and waits.
    ("bb_sh_exit9", &["/bin/sh", "-c", "exit 9"]),
    ("bb_sh_missing_127", &["/bin/sh", "-c", "no_such_command_anywhere"]),
    ("bb_true", &["/bin/busybox", "true"]),
    (
        "bb_sh_fork_exec_wait",
        &[
            "/bin/sh",
            "-c",
            "/bin/busybox true; echo $?; /bin/sh -c 'exit 4'; echo $?; /bin/busybox false || echo false $?; /no/such; echo $?",
        ],
    ),
    // Background jobs: the `wait` builtin sleeps in `rt_sigsuspend` until
    // `SIGCHLD` (raised when the child's end reaches the parent).
    (
        "bb_sh_background_wait",
        &[
            "/bin/sh",
            "-c",
            "(exit 3) & wait $!; echo status $?; /bin/busybox true & wait; echo all $?",
        ],
    ),
    // Pipes between processes (issue 17): each stage its own environment.
    ("bb_sh_pipe_wc", &["/bin/sh", "-c", "echo hi | wc -c"]),
    ("bb_sh_pipeline_3", &["/bin/sh", "-c", "seq 1 1000 | grep 7 | wc -l"]),
    // One file system for all the processes of a run (the file server,
    // issue 17): what one command writes, the next one reads. Each script
    // cleans up after itself (the Linux side reuses one root for all cases).
    (
        "bb_sh_redirections",
        &[
            "/bin/sh",
            "-c",
            "cd /tmp; echo hello > f; cat f; echo more >> f; cat < f; wc -l < f; \
             ls /nonexistent 2> e; wc -l < e; (echo out; ls /nonexistent) > both 2>&1; sort both; \
             exec 3> three; echo via3 >&3; ls f >&3; exec 3>&-; cat three; \
             { ls f; ls three; echo end; } > two; cat two; \
             (seq 3; seq 2) > s; cat s | tr '\\n' ' '; echo; \
             exec 4< s; read x <&4; read y <&4; echo read $x $y; exec 4<&-; \
             echo > g; set -C; echo x > g 2>/dev/null || echo noclobber $?; set +C; \
             rm f e both three two s g; ls -1",
        ],
    ),
    (
        "bb_sh_coreutils",
        &[
            "/bin/sh",
            "-c",
            "mkdir -p /tmp/w/d/e && cd /tmp/w; seq 1 50 > a; sort -rn a | head -n 3; \
             sort a | uniq | wc -l; tail -n 2 a; cat a a | sort -n | uniq -d | wc -l; \
             cp a b; cmp a b && echo same; echo x >> b; cmp -s a b || echo differ $?; \
             mv b d/c; ls -1; ls -1 d; sha256sum a d/c; md5sum a; echo deep > d/e/f; cat d/e/f; \
             rm -r d; ls -1; ls d 2>&1; cd / && rm -r /tmp/w; ls -1 /tmp; echo done",
        ],
    ),
    // Signals to the shell's own children and to itself (pids only, never
    // -1): `kill` of a background job, `trap` handlers, `SIGCHLD` noticed
    // by `wait`. Its expected output was made in a PID namespace with the
    // host's /dev/null bound into the root (ash opens it for every
    // background job; the regeneration's bare root has none, so there the
    // job may exit 2 before the kill: check a regenerated file by hand).
    (
        "bb_sh_trap_kill",
        &[
            "/bin/sh",
            "-c",
            "sleep 5 & p=$!; kill $p; wait $p; echo killed $?; \
             sleep 5 & p=$!; kill -9 $p; wait $p; echo killed -9 $?; \
             trap 'echo got USR1' USR1; kill -USR1 $$; echo after trap; \
             trap - USR1; sleep 0.2 & wait; echo done $?",
        ],
    ),
    (
        "bb_sh_gzip_1m",
        &[
            "/bin/sh",
            "-c",
            "cd /tmp; seq 1 200000 | head -c 1048576 > big; wc -c big; sha256sum big; \
             gzip -c big > big.gz; gunzip -c big.gz | sha256sum; \
             head -c 1048576 big | gzip -c | gunzip -c | sha256sum; \
             rm big.gz; gzip big; ls -1; gunzip big.gz; sha256sum big; rm big; ls -1",
        ],
    ),
];

/// Cases that drive the `kv` service of the async library OS from a shell
/// through `/dev/chan/kv` (the service started beside the program):
/// (name, argv). Two library OSes side by side: busybox `sh` writes text
/// requests (`kv_proto`) and reads the replies; a pipeline's stages and a
/// subshell (a forked child, which connects anew) each talk to it.
pub const CHAN_CASES: &[(&str, &[&str])] = &[(
    "chan_kv_sh",
    &[
        "/bin/sh",
        "-c",
        "exec 3<>/dev/chan/kv; echo 'PUT 7 42' >&3; read -r a <&3; echo put: $a; \
         echo 'GET 7' >&3; read -r a <&3; echo get: $a; \
         printf 'PUT 8 1\nPUT 9 2\nGET 8\nGET 9\n' >&3; \
         for i in 1 2 3 4; do read -r a <&3; echo batch: $a; done; \
         echo 'DEL 7' >&3; read -r a <&3; echo del: $a; echo 'GET 7' >&3; read -r a <&3; echo gone: $a; \
         echo 'FLY 1' >&3; read -r a <&3; echo bad: $a; \
         (echo 'GET 9' >&3; read -r a <&3; echo subshell: $a); \
         seq 10 12 | while read k; do echo \"PUT $k $((k * k))\" >&3; read -r a <&3; done; \
         for k in 10 11 12; do echo \"GET $k\" >&3; read -r a <&3; echo $k: $a; done | sort -r; \
         exec 3<&-; cat /dev/chan/nosuch 2>/dev/null || echo no such service $?",
    ],
)];

/// The arguments of the C programs (libos-posix/tests/c/Makefile's
/// `ARGS_name`).
fn c_args(name: &str) -> &'static [&'static str] {
    match name {
        "args" => &["one", "two words", "three"],
        _ => &[],
    }
}

/// Every case: the C programs, then the busybox applets.
pub fn cases(root: &Path) -> Result<Vec<Case>, String> {
    let mut v = Vec::new();
    for src in posix::c_sources(root)? {
        let name = src.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let mut argv = vec![format!("/tests/{name}")];
        argv.extend(c_args(&name).iter().map(|s| s.to_string()));
        v.push(Case {
            name: format!("c_{name}"),
            argv,
            expected: Some(src.with_extension("expected")),
            also: Vec::new(),
        });
    }
    for (name, argv) in BUSYBOX_CASES {
        let expected = (*name != "bb_ls_root")
            .then(|| root.join("libos-posix/tests/busybox").join(format!("{name}.expected")));
        v.push(Case {
            name: name.to_string(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            expected,
            also: Vec::new(),
        });
    }
    for (name, argv) in CHAN_CASES {
        v.push(Case {
            name: name.to_string(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            expected: Some(root.join("libos-posix/tests/chan").join(format!("{name}.expected"))),
            also: vec![KV_SERVICE.to_string()],
        });
    }
    Ok(v)
}

/// `NAME.expected`: stdout, then `exit N` as the last line.
pub fn parse_expected(text: &[u8]) -> Result<(Vec<u8>, u8), String> {
    let body = text.strip_suffix(b"\n").ok_or("no final newline")?;
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last = std::str::from_utf8(&body[start..]).map_err(|_| "last line not UTF-8")?;
    let status = last
        .strip_prefix("exit ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("last line {last:?} is not `exit N`"))?;
    Ok((text[..start].to_vec(), status))
}

/// The request of a case.
fn request(case: &Case) -> RunRequest {
    RunRequest {
        argv: case.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        envp: CASE_ENV.iter().map(|e| e.as_bytes().to_vec()).collect(),
        cwd: Some(b"/".to_vec()),
    }
}

/// Writes `tree` (and the archive `base`'s top-level files) under `dir`,
/// as `tar x` would, for a chroot.
fn extract(base: &[u8], tree: &Tree, dir: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    let bytes = posix::pack(base, tree)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut a = tar::Archive::new(&bytes[..]);
    a.set_preserve_permissions(true);
    a.set_preserve_mtime(true);
    a.unpack(dir).map_err(|e| format!("extracting into {}: {e}", dir.display()))?;
    // `unpack` sets a directory's mtime before filling it: set them again.
    for (path, node) in &tree.entries {
        if let Node::Dir(_) = node {
            let _ = Command::new("touch")
                .args(["-h", "-d", &format!("@{}", posix::MTIME)])
                .arg(dir.join(path))
                .status();
        }
    }
    Ok(())
}

/// Runs `case` on the host under `chroot dir` (or `unshare -r chroot`
/// when not root), as in the guest: the case's argv, environment and cwd.
fn run_on_linux(dir: &Path, case: &Case) -> Result<(Vec<u8>, u8), String> {
    // Found on our PATH (the command's environment is cleared below, and
    // a cleared PATH would be used for the look-up).
    let find = |name: &str| {
        crate::install::which(name)
            .or_else(|| {
                ["/usr/sbin", "/sbin", "/usr/bin"]
                    .iter()
                    .map(|d| Path::new(d).join(name))
                    .find(|p| p.is_file())
            })
            .ok_or_else(|| format!("{name} not found"))
    };
    let mut cmd = if crate::install::is_root() {
        Command::new(find("chroot")?)
    } else {
        let mut c = Command::new(find("unshare")?);
        c.arg("-r").arg(find("chroot")?);
        c
    };
    cmd.arg(dir).args(&case.argv).env_clear().envs(CASE_ENV.iter().map(|e| {
        let (k, v) = e.split_once('=').expect("K=V");
        (k, v)
    }));
    cmd.current_dir("/").stdin(Stdio::null());
    let out = cmd.output().map_err(|e| format!("cannot run chroot: {e}"))?;
    let status = out.status.code().ok_or("killed by a signal on Linux")?;
    // 125-127 from chroot itself (it says so on stderr); a program run
    // inside may exit 127 too (a shell's missing command).
    let stderr = String::from_utf8_lossy(&out.stderr);
    if (125..=127).contains(&status)
        && (stderr.starts_with("chroot:") || stderr.starts_with("unshare:"))
    {
        return Err(format!("chroot failed ({status}): {}", stderr.trim()));
    }
    Ok((out.stdout, status as u8))
}

/// `cargo xtask posix-expected`: regenerates the busybox cases' expected
/// outputs on this (Linux) host.
pub fn regenerate(ws: &Workspace) -> Result<bool, String> {
    let tree = default_root(ws)?;
    let dir = posix::cache_dir(&ws.target).join("expected-root");
    // The same tree the guest gets, less the apps (which these cases do
    // not touch) and the run request.
    extract(&crate::initrd::pack(&[]).map_err(|e| e.to_string())?, &tree, &dir)?;
    for case in cases(&ws.root)? {
        let Some(path) = case.expected.clone() else { continue };
        if !case.name.starts_with("bb_") {
            continue;
        }
        let (stdout, status) = run_on_linux(&dir, &case)?;
        let mut text = stdout;
        text.extend_from_slice(format!("exit {status}\n").as_bytes());
        std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("xtask: wrote {}", ws.rel(&path));
    }
    println!(
        "xtask: the C programs' expected outputs come from `make -C libos-posix/tests/c expected`"
    );
    Ok(true)
}

/// The result of one case.
pub struct Outcome {
    /// Its name.
    pub name: String,
    /// Passed, or why not.
    pub result: Result<(), String>,
}

/// Runs the suite: the console-stream checks, then every POSIX case not in
/// [`NOT_YET`]. `base` is the build's initrd.
pub fn suite(ws: &Workspace, base: &[u8], timeout: u64) -> Result<Vec<Outcome>, String> {
    let mut out = console_streams(ws, base, timeout);
    if !has_app(base, RUNTIME) {
        // A tree without the runtime (a branch before it is merged): say
        // so for every case rather than fail them.
        for case in cases(&ws.root)? {
            println!(
                "[posix] not yet run: posix_{} (the POSIX runtime, app `{RUNTIME}`, is not in \
                 this tree's initrd)",
                case.name
            );
        }
        return Ok(out);
    }
    let default = default_root(ws)?;
    for case in cases(&ws.root)? {
        if let Some((_, why)) = NOT_YET.iter().find(|(n, _)| *n == case.name) {
            println!("[posix] not yet run: posix_{} ({why})", case.name);
            continue;
        }
        let result = run_case(ws, base, &default, &case, timeout);
        let o = Outcome { name: format!("posix_{}", case.name), result };
        print_outcome(&o);
        out.push(o);
    }
    Ok(out)
}

fn print_outcome(o: &Outcome) {
    println!("[posix] test {} ... {}", o.name, if o.result.is_ok() { "ok" } else { "FAILED" });
    if let Err(why) = &o.result {
        for line in why.lines().take(30) {
            println!("    {line}");
        }
    }
}

/// One case: boot, compare stdout and status.
fn run_case(
    ws: &Workspace,
    base: &[u8],
    default: &Tree,
    case: &Case,
    timeout: u64,
) -> Result<(), String> {
    let tree = posix::layout(default.clone(), &[], &request(case))?;
    let (want_out, want_status) = match &case.expected {
        Some(p) => parse_expected(&std::fs::read(p).map_err(|e| format!("{}: {e}", ws.rel(p)))?)
            .map_err(|e| format!("{}: {e}", ws.rel(p)))?,
        None => {
            let dir = posix::cache_dir(&ws.target).join("expected-root");
            extract(base, &tree, &dir)?;
            run_on_linux(&dir, case)?
        }
    };
    let initrd = posix::cache_dir(&ws.target).join("test-initrd.tar");
    std::fs::write(&initrd, posix::pack(base, &tree)?).map_err(|e| e.to_string())?;
    let mut b = split_boot(ws, initrd, &case.name, Accel::Tcg, 2, false, timeout);
    start_also(&mut b, &case.also);
    let (mut got_out, mut got_err) = (Vec::new(), Vec::new());
    let end = posix::boot_split(&b, posix::Sink::Keep(&mut got_out, &mut got_err))?;
    let log = ws.rel(&b.boot.log);
    let status = match end {
        Ending::Exited(_) => end.status(),
        Ending::Killed(why) => return Err(format!("killed: {why} (log {log})")),
        Ending::Failed(why) => return Err(format!("{why} (log {log})")),
    };
    let mut problems = Vec::new();
    if got_out != want_out {
        problems.push(format!(
            "stdout differs from the expected:\n{}",
            first_difference(&want_out, &got_out)
        ));
    }
    if status != want_status {
        problems.push(format!("exit status {status}, expected {want_status}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        if !got_err.is_empty() {
            problems.push(format!("stderr: {}", String::from_utf8_lossy(&got_err).trim_end()));
        }
        // What the runtime and the kernel said last (the runtime reports
        // its own failures on the kernel console).
        let text = std::fs::read_to_string(&b.boot.log).unwrap_or_default();
        let said: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(posix::EXIT_MARKER) && !l.starts_with("[cpu"))
            .collect();
        for l in &said[said.len().saturating_sub(3)..] {
            problems.push(format!("kernel console: {l}"));
        }
        problems.push(format!("kernel log: {log}"));
        Err(problems.join("\n"))
    }
}

/// The first line where `want` and `got` differ, both shown.
pub fn first_difference(want: &[u8], got: &[u8]) -> String {
    let w: Vec<&[u8]> = want.split(|&b| b == b'\n').collect();
    let g: Vec<&[u8]> = got.split(|&b| b == b'\n').collect();
    let i = (0..w.len().max(g.len())).find(|&i| w.get(i) != g.get(i)).unwrap_or(0);
    let show = |l: Option<&&[u8]>| {
        l.map_or("(nothing)".to_string(), |l| format!("{:?}", String::from_utf8_lossy(l)))
    };
    format!("line {}: expected {}\n        got {}", i + 1, show(w.get(i)), show(g.get(i)))
}

/// The bytes `tests/console-streams` writes to stdout.
pub fn console_streams_stdout() -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).collect();
    v.extend((0..abi::CONSOLE_WRITE_MAX as usize).map(|i| (i * 7 % 251) as u8));
    v.extend_from_slice(b"out end\n");
    v
}

/// The bytes it writes to stderr.
pub const CONSOLE_STREAMS_STDERR: &[u8] = b"err\r\n\0\x7f\x08 end\n";

/// The split console's own checks, with the `console-streams` test
/// program (no POSIX runtime needed): the streams byte for byte and apart
/// from the kernel's lines, a status over 255 reduced as Linux does, and a
/// killed init environment told from an exit.
fn console_streams(ws: &Workspace, base: &[u8], timeout: u64) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (name, arg, want) in [
        ("console_streams_exit", "0x107", Ending::Exited(0x107)),
        ("console_streams_killed", "0x100000000", Ending::Killed("invalid opcode".into())),
    ] {
        let result = (|| {
            let initrd = posix::cache_dir(&ws.target).join("streams-initrd.tar");
            std::fs::create_dir_all(posix::cache_dir(&ws.target)).map_err(|e| e.to_string())?;
            std::fs::write(&initrd, base).map_err(|e| e.to_string())?;
            let mut b = split_boot(ws, initrd, name, Accel::Tcg, 2, false, timeout);
            b.boot.append = format!("mode=run console=split init=console-streams:{arg},hello");
            let (mut o, mut e) = (Vec::new(), Vec::new());
            let end = posix::boot_split(&b, posix::Sink::Keep(&mut o, &mut e))?;
            let log = std::fs::read_to_string(&b.boot.log).unwrap_or_default();
            let mut problems = Vec::new();
            match (&end, &want) {
                (Ending::Exited(g), Ending::Exited(w)) if g == w && end.status() == 7 => {}
                (Ending::Killed(g), Ending::Killed(w)) if g.contains(w.as_str()) => {}
                _ => problems.push(format!("ended {end:?}, expected {want:?}")),
            }
            if o != console_streams_stdout() {
                problems.push(format!(
                    "stdout ({} bytes) is not the {} bytes written",
                    o.len(),
                    console_streams_stdout().len()
                ));
            }
            if e != CONSOLE_STREAMS_STDERR {
                problems.push(format!("stderr is {:?}", String::from_utf8_lossy(&e)));
            }
            if !log.contains("console-streams: a kernel-console line")
                || !log.contains("exo: boot ok")
            {
                problems.push("the kernel's lines are not in the kernel log".into());
            }
            if problems.is_empty() {
                Ok(())
            } else {
                problems.push(format!("kernel log: {}", ws.rel(&b.boot.log)));
                Err(problems.join("; "))
            }
        })();
        let o = Outcome { name: name.to_string(), result };
        print_outcome(&o);
        out.push(o);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_files_parse() {
        assert_eq!(parse_expected(b"a\nb\nexit 7\n"), Ok((b"a\nb\n".to_vec(), 7)));
        assert_eq!(parse_expected(b"exit 0\n"), Ok((vec![], 0)));
        assert!(parse_expected(b"a\nexit 7").is_err());
        assert!(parse_expected(b"a\n").is_err());
        assert!(parse_expected(b"exit 256\n").is_err());
    }

    #[test]
    fn every_case_has_its_expected_output() {
        let root = crate::root();
        let cases = cases(&root).unwrap();
        assert!(cases.iter().any(|c| c.name == "c_hello"));
        for c in &cases {
            if let Some(p) = &c.expected {
                let text = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                parse_expected(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            }
        }
        for (name, _) in NOT_YET {
            assert!(cases.iter().any(|c| c.name == *name), "NOT_YET names no case {name}");
        }
        let args = cases.iter().find(|c| c.name == "c_args").unwrap();
        assert_eq!(args.argv, ["/tests/args", "one", "two words", "three"]);
    }

    #[test]
    fn differences_are_located() {
        let d = first_difference(b"a\nb\nc\n", b"a\nB\nc\n");
        assert!(d.starts_with("line 2: expected \"b\""), "{d}");
        assert!(first_difference(b"a", b"a\nmore").contains("expected (nothing)"));
    }

    #[test]
    fn console_streams_bytes() {
        let v = console_streams_stdout();
        assert_eq!(v.len(), 256 + 4096 + 8);
        assert_eq!(v[255], 255);
        assert_eq!(v[256 + 40], (40 * 7 % 251) as u8);
    }
}
