//! `cargo xtask`: the project's host tool.
//!
//! - `cargo xtask build`: build the kernel and every ring-3 program under
//!   `apps/`, `tests/` and `benches/` for `x86_64-unknown-none` and pack the
//!   initrd (`target/initrd.tar`, see [`initrd`]; plus the malformed ELFs of
//!   [`badelf`]). Each program's manifest and ELF are checked for the ring-3
//!   link ([`apps`]).
//! - `cargo xtask run`: build, then boot QEMU with the serial console on
//!   stdout; exit with the guest's status. Warns first about `init=` names
//!   that are not in the initrd.
//! - `cargo xtask new NAME`: make `apps/NAME` from the template ([`apps`]).
//! - `cargo xtask check`: what CI checks before the tests: `cargo fmt`,
//!   clippy on the host workspace and on the bare-metal crates (the kernel,
//!   `libos-async`, every program and the `protocols/` crates), rustdoc
//!   with warnings denied, the Linux guest's C (`-Wall -Wextra -Werror`,
//!   when a C compiler is there), and the `loom` models.
//! - `cargo xtask test`: host unit tests, a new app made from the template
//!   booted ([`newcheck`]), then the in-kernel tests under TCG with x2APIC
//!   (`-cpu max`), xAPIC (default CPU model) and `-icount` (the CPU-share
//!   tests), plus a panic handler check; one `N passed, M failed` line at
//!   the end.
//! - `cargo xtask bench`: run the in-guest benchmarks (all, or those whose
//!   names contain the given fragments: [`registry`], `--list`), print a
//!   table, record the run ([`history`]) and fold it into
//!   `target/bench/results.json` ([`mod@bench`]); `--vs linux` also boots a
//!   Linux guest in the same QEMU configuration and runs the counterparts
//!   ([`linux`]); `--compare` compares recorded runs; `--plot` draws SVG
//!   figures ([`plot`]). The command's flow: [`benchcmd`].
//!
//! How QEMU is invoked and how the guest reports results: [`qemu`] and
//! [`report`]; where each boot's serial log goes: [`logs`]. Getting QEMU 10
//! onto a Debian machine: [`install`]; the Rust target and components:
//! [`toolchain`].

#![forbid(unsafe_code)]

mod apps;
mod badelf;
mod bench;
mod benchcmd;
mod history;
mod initrd;
mod install;
mod lab;
mod linux;
mod logs;
mod newcheck;
mod plot;
mod posix;
mod posixcmd;
mod qemu;
mod registry;
mod report;
mod shcmd;
mod symbolize;
mod toolchain;
mod trace;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use qemu::{Accel, AccelChoice, Boot, GuestStatus};

/// The kernel's target triple.
const TARGET: &str = "x86_64-unknown-none";

/// Build, boot, test and benchmark the exokernel.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the kernel and the apps, and pack the initrd.
    Build(BuildArgs),
    /// Build, then boot the kernel in QEMU and stream its serial console.
    Run(RunArgs),
    /// `run --trace`: boot with the kernel's trace rings on and write the
    /// kernel's and the runtime's events as one Chrome/Perfetto JSON file,
    /// target/trace/NAME.json (`--trace NAME`; default `run`), which
    /// ui.perfetto.dev opens.
    Trace(RunArgs),
    /// Run the host unit tests, then the in-QEMU tests.
    Test(TestArgs),
    /// Run the in-guest benchmarks and record the results.
    Bench(BenchArgs),
    /// Make a new app `apps/NAME` from the template.
    New(NewArgs),
    /// Boot `apps/sched-lab` (deterministic time by default) and write its
    /// `lab ...` result lines to target/lab/; with `--runs 2` or more,
    /// fail unless every run gives the same file.
    Lab(LabArgs),
    /// Run what CI checks before the tests: rustfmt, clippy (host and
    /// bare-metal), rustdoc without warnings, the loom models.
    Check(CheckArgs),
    /// Run a static Linux program on the exokernel: its stdout and stderr
    /// become ours, its exit status ours (`cargo xtask posix -- PROGRAM
    /// ARGS...`).
    Posix(PosixArgs),
    /// Regenerate the busybox cases' expected outputs
    /// (libos-posix/tests/busybox/*.expected) by running the same busybox
    /// on this Linux host, chrooted into the same tree.
    PosixExpected,
    /// (For `cargo xtask posix`.) Fetch busybox and build the C test
    /// programs into target/posix/, printing whatever that prints.
    #[command(hide = true)]
    PosixPrepare,
    /// Boot 8 cores into an interactive busybox `sh` whose terminal is the
    /// serial console (this terminal); `exit` or ^D powers off.
    Sh(ShArgs),
}

/// `cargo xtask sh` options.
#[derive(Debug, Args)]
struct ShArgs {
    /// Number of vCPUs.
    #[arg(long, default_value_t = 8)]
    smp: u32,
    /// Accelerator: auto picks KVM only on hosts with real vmx/svm.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
}

/// `cargo xtask posix` options.
#[derive(Debug, Args)]
struct PosixArgs {
    /// A directory whose tree is laid on top of the default root (may be
    /// repeated; later ones win).
    #[arg(long = "root", value_name = "DIR")]
    roots: Vec<PathBuf>,
    /// An environment variable `K=V` for the program (may be repeated; the
    /// program gets exactly these, in this order).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// The program's working directory.
    #[arg(long, value_name = "DIR", default_value = "/")]
    cwd: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 2)]
    smp: u32,
    /// Deterministic time: TCG with `-icount shift=0`.
    #[arg(long)]
    icount: bool,
    /// Accelerator: auto picks KVM only on hosts with real vmx/svm.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Kill the guest after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
    /// Also start the `kv` service (async libOS) in the same boot, so the
    /// program can open `/dev/chan/kv`.
    #[arg(long)]
    kv: bool,
    /// Also start this initrd application beside the program (the kernel's
    /// `init=` syntax; may be repeated).
    #[arg(long = "also", value_name = "APP[:ARG][@CORE]")]
    also: Vec<String>,
    /// The program (its path in the root) and its arguments.
    #[arg(last = true, required = true, value_name = "PROGRAM [ARGS]")]
    command: Vec<std::ffi::OsString>,
}

/// `cargo xtask lab` options.
#[derive(Debug, Args)]
struct LabArgs {
    /// Boots; from 2 on, every run's results must equal the first's.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 2)]
    smp: u32,
    /// Real time (TCG or KVM as `auto` picks) instead of `-icount`: the
    /// figures then vary from run to run.
    #[arg(long)]
    no_icount: bool,
    /// Kill a boot after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    timeout: u64,
    /// After the runs, draw `target/lab/results.txt` as SVG figures
    /// (`target/lab/plots/`: one per workload and metric, a bar per policy).
    #[arg(long)]
    plot: bool,
    /// Only draw the figures of the existing `target/lab/results.txt` (no
    /// boot).
    #[arg(long)]
    plot_only: bool,
    /// Only the determinism check `cargo xtask test` runs: two `-icount`
    /// boots of the quick mix (start argument 3) must write identical
    /// `target/lab/test-run-{1,2}.txt`.
    #[arg(long)]
    determinism: bool,
    #[command(flatten)]
    build: BuildArgs,
}

/// `cargo xtask new` options.
#[derive(Debug, Args)]
struct NewArgs {
    /// The app's name: lowercase letters, digits and hyphens, starting with a
    /// letter.
    name: String,
}

/// `cargo xtask check` options.
#[derive(Debug, Args)]
struct CheckArgs {
    /// Reformat with `cargo fmt` and apply clippy's suggested fixes
    /// (`--allow-dirty`) before checking.
    #[arg(long)]
    fix: bool,
    /// Skip the loom models (the slowest part).
    #[arg(long)]
    no_loom: bool,
}

/// Options shared by everything that builds.
#[derive(Debug, Default, Clone, Args)]
struct BuildArgs {
    /// Boot this prebuilt kernel ELF instead of building `kernel/`.
    #[arg(long, value_name = "ELF")]
    kernel: Option<PathBuf>,
    /// A prebuilt ring-3 ELF to pack into the initrd (named after its file
    /// stem); may be repeated.
    #[arg(long = "app", value_name = "ELF")]
    apps: Vec<PathBuf>,
}

/// `cargo xtask run` options.
#[derive(Debug, Args)]
struct RunArgs {
    /// Number of vCPUs.
    #[arg(long, default_value_t = 8)]
    smp: u32,
    /// Accelerator: auto picks KVM only on hosts with real vmx/svm.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// QEMU CPU model (default: QEMU's default under TCG, `host` under KVM).
    #[arg(long, value_name = "MODEL")]
    cpu: Option<String>,
    /// Extra kernel command-line arguments, appended after `mode=run`.
    #[arg(long, value_name = "ARGS")]
    append: Option<String>,
    /// Start QEMU's GDB stub on :1234 and wait for a debugger (no timeout).
    #[arg(long)]
    gdb: bool,
    /// Kill the guest after this many seconds (default: no limit).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Deterministic time: TCG with `-icount shift=0`.
    #[arg(long)]
    icount: bool,
    /// Trace the run: the kernel records its events (`trace=8192` on the
    /// command line unless `--append` sets `trace=N` records per core)
    /// and dumps them at the end (`ktrace` lines); they and the runtime's
    /// task events (`rttrace` lines, printed by apps run with
    /// `RuntimeConfig::trace`) go into `target/trace/NAME.json`
    /// (Chrome/Perfetto format; NAME defaults to `run`).
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "run")]
    trace: Option<String>,
    #[command(flatten)]
    build: BuildArgs,
}

/// `cargo xtask test` options.
#[derive(Debug, Args)]
struct TestArgs {
    /// Accelerator: with KVM (explicit, or auto on a host with real vmx/svm)
    /// the tests also run under KVM, besides the two TCG configurations.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Only run the host unit tests.
    #[arg(long, conflicts_with = "qemu_only")]
    host_only: bool,
    /// Only run the in-QEMU tests.
    #[arg(long)]
    qemu_only: bool,
    /// Only run the POSIX suite (split console, C programs, busybox
    /// applets) after the host tests (with `--qemu-only`, only it).
    #[arg(long)]
    posix_only: bool,
    /// Only run the console shell test (`cargo xtask sh` driven by typed
    /// keys) after the host tests (with `--qemu-only`, only it).
    #[arg(long)]
    sh_only: bool,
    /// Per-boot timeout in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
    #[command(flatten)]
    build: BuildArgs,
}

/// `cargo xtask bench` options.
#[derive(Debug, Clone, Args)]
struct BenchArgs {
    /// Only the benchmarks whose names contain one of these fragments
    /// (see `--list`); their kernel groups run, and with `--vs linux` their
    /// Linux counterparts.
    #[arg(value_name = "NAME", conflicts_with = "benches")]
    names: Vec<String>,
    /// Print the benchmark registry (benches/registry.toml) and stop.
    #[arg(long)]
    list: bool,
    /// Also boot a Linux guest in the same QEMU configuration, run the
    /// Linux counterparts and print ours, Linux's and the ratio.
    #[arg(long, value_enum, value_name = "OS")]
    vs: Option<Versus>,
    /// Only the benchmarks that have a Linux counterpart.
    #[arg(long)]
    paired: bool,
    /// The `--vs linux` smoke check (CI runs it): fails unless every
    /// selected benchmark with a Linux counterpart gets a row with both
    /// figures (or the reason ours cannot run yet). Without NAMEs it takes
    /// a small subset (one kernel boot of the `benchsys` and `ringbench`
    /// groups, the POSIX workloads once on each side) with 20 samples
    /// unless `--samples`; it records nothing.
    #[arg(long, requires = "vs")]
    smoke: bool,
    /// Samples per benchmark (`bench_samples=`, both guests; default the
    /// kernel's 1000).
    #[arg(long, value_name = "N")]
    samples: Option<u32>,
    /// Compare two recorded runs and stop: A and B are history files,
    /// `results.json` files, `latest`, or git revisions (that commit's
    /// latest recorded run); B defaults to the latest run.
    #[arg(long, num_args = 1..=2, value_names = ["A", "B"])]
    compare: Option<Vec<String>>,
    /// With `--compare`: exit non-zero when a benchmark regressed.
    #[arg(long, requires = "compare")]
    fail_on_regression: bool,
    /// Write SVG figures of `target/bench/results.json` under
    /// `target/bench/plots/` and stop.
    #[arg(long)]
    plot: bool,
    /// With `--plot`: also write them, and a generated page, to docs/bench/.
    #[arg(long, requires = "plot")]
    docs: bool,
    /// Deterministic mode: TCG with `-icount shift=0`; cycles become guest
    /// instructions.
    #[arg(long)]
    icount: bool,
    /// Accelerator (ignored, TCG forced, with `--icount`).
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 8)]
    smp: u32,
    /// QEMU CPU model.
    #[arg(long, value_name = "MODEL")]
    cpu: Option<String>,
    /// Timeout in seconds, per boot.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
    /// Only the kernel's benchmark groups named by these comma-separated
    /// fragments (`-fragment` excludes; the groups are listed in
    /// kernel/src/machine/bench.rs), e.g. `isobench`. The results replace
    /// only the stored entries of the same names.
    #[arg(long, value_name = "FRAGMENTS")]
    benches: Option<String>,
    #[command(flatten)]
    build: BuildArgs,
}

/// What `--vs` compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Versus {
    /// Debian's Linux kernel with benches/linux/init.c as /init.
    Linux,
}

/// The workspace root (this crate's parent directory).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Paths of the workspace and its build outputs.
struct Workspace {
    /// The workspace root.
    root: PathBuf,
    /// Cargo's target directory.
    target: PathBuf,
}

impl Workspace {
    /// Where the bare-metal programs' ELFs are (each under its binary's
    /// name, the name the initrd and the kernel's log lines use).
    fn apps_dir(&self) -> PathBuf {
        self.target.join(TARGET).join("release")
    }

    /// Finds the workspace from this crate's manifest directory.
    fn locate() -> Self {
        let root = root();
        // Like cargo, resolve a relative CARGO_TARGET_DIR against the current
        // directory; `cargo()` passes the absolute path on.
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .and_then(|dir| std::path::absolute(dir).ok())
            .unwrap_or_else(|| root.join("target"));
        Self { root, target }
    }

    /// The kernel ELF.
    fn kernel(&self) -> PathBuf {
        self.target.join(TARGET).join("release").join("kernel")
    }

    /// The ELF of program `name` (its binary's name).
    fn app(&self, name: &str) -> PathBuf {
        self.target.join(TARGET).join("release").join(name)
    }

    /// The initrd archive.
    fn initrd(&self) -> PathBuf {
        self.target.join("initrd.tar")
    }

    /// A fresh serial log for one boot (see [`logs`]).
    fn log(&self, mode: &str, config: &str) -> PathBuf {
        logs::new_path(&self.logs(), mode, config)
    }

    /// The directory of the serial logs.
    fn logs(&self) -> PathBuf {
        self.target.join("logs")
    }

    /// A path relative to the root, for messages.
    fn rel(&self, p: &Path) -> String {
        qemu::display_rel(&self.root, p)
    }

    /// A cargo command run from the workspace root.
    fn cargo(&self) -> Command {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.current_dir(&self.root).env("CARGO_TARGET_DIR", &self.target);
        cmd
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ws = Workspace::locate();
    let result = match cli.command {
        Cmd::Build(args) => build(&ws, &args).map(|_| true),
        Cmd::Run(args) => run(&ws, args),
        Cmd::Trace(mut args) => {
            args.trace.get_or_insert_with(|| String::from("run"));
            run(&ws, args)
        }
        Cmd::Test(args) => test(&ws, &args),
        Cmd::Bench(args) => benchcmd::run(&ws, &args),
        Cmd::New(args) => new_app(&ws, &args).map(|_| true),
        Cmd::Lab(args) => lab::run(&ws, &args),
        Cmd::Check(args) => check(&ws, &args),
        Cmd::Posix(args) => return posixcmd::run(&ws, &args),
        Cmd::PosixExpected => posixcmd::regenerate(&ws),
        Cmd::PosixPrepare => posixcmd::prepare(&ws),
        Cmd::Sh(args) => return shcmd::run(&ws, &args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a build produced.
struct Artifacts {
    /// The kernel ELF.
    kernel: PathBuf,
    /// The initrd archive.
    initrd: PathBuf,
    /// The names of the apps in it.
    apps: Vec<String>,
}

/// Builds the kernel (unless a prebuilt one is given) and packs the initrd.
fn build(ws: &Workspace, args: &BuildArgs) -> Result<Artifacts, String> {
    toolchain::ensure_target(&ws.root, TARGET)?;
    let kernel = match &args.kernel {
        Some(prebuilt) => {
            let kernel = std::path::absolute(prebuilt)
                .map_err(|e| format!("{}: {e}", prebuilt.display()))?;
            if !kernel.is_file() {
                return Err(format!("kernel {} not found", prebuilt.display()));
            }
            println!("xtask: using prebuilt kernel {}", prebuilt.display());
            kernel
        }
        None => {
            println!("xtask: building kernel...");
            let mut cmd = ws.cargo();
            cmd.args(["build", "--release", "-p", "kernel", "--target", TARGET]);
            let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err(format!("building the kernel failed ({status})"));
            }
            let kernel = ws.kernel();
            if !kernel.is_file() {
                return Err(format!(
                    "the kernel build succeeded but {} is missing",
                    ws.rel(&kernel)
                ));
            }
            kernel
        }
    };

    let mut apps = build_apps(ws)?;
    for path in &args.apps {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| format!("cannot name app {}", path.display()))?;
        let elf = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        apps.push(initrd::App { name, elf });
    }
    let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    println!(
        "xtask: packing initrd ({})...",
        if names.is_empty() { "no apps".to_string() } else { names.join(", ") }
    );
    let initrd = ws.initrd();
    initrd::write(&initrd, &apps)?;
    println!("xtask: built {} and {}", ws.rel(&kernel), ws.rel(&initrd));
    let apps = names.iter().map(|n| n.to_string()).collect();
    Ok(Artifacts { kernel, initrd, apps })
}

/// Builds every ring-3 program (apps, tests, benches) in one cargo
/// invocation and returns them, in the order of their binary names,
/// followed by the malformed ELFs made from `hello` (see [`badelf`]).
fn build_apps(ws: &Workspace) -> Result<Vec<initrd::App>, String> {
    let programs = apps::discover(&ws.root)?;
    if programs.is_empty() {
        return Ok(Vec::new());
    }
    apps::check_manifests(&ws.root, &programs)?;
    let names: Vec<&str> = programs.iter().map(|p| p.name.as_str()).collect();
    println!("xtask: building apps ({})...", names.join(", "));
    let mut cmd = ws.cargo();
    cmd.args(["build", "--release", "--target", TARGET]);
    for program in &programs {
        cmd.args(["-p", &program.package]);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the apps failed ({status})"));
    }
    let mut apps = Vec::new();
    for program in &programs {
        let path = ws.app(&program.name);
        let elf = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", ws.rel(&path)))?;
        apps::check_elf(&program.name, &program.dir, &elf)?;
        apps.push(initrd::App { name: program.name.clone(), elf });
    }
    if let Some(hello) = apps.iter().find(|a| a.name == "hello") {
        let bad = badelf::variants(&hello.elf).map_err(|e| format!("hello: {e}"))?;
        apps.extend(bad.into_iter().map(|(name, elf)| initrd::App { name: name.to_string(), elf }));
    }
    apps.push(initrd::App { name: "tiny_exit".to_string(), elf: badelf::tiny_exit() });
    Ok(apps)
}

/// Resolves the accelerator, forcing TCG for `-icount`.
fn pick_accel(choice: AccelChoice, icount: bool) -> Result<Accel, String> {
    if icount {
        if choice == AccelChoice::Kvm {
            return Err("--icount needs TCG; it cannot be combined with --accel kvm".into());
        }
        println!("xtask: accel tcg (forced by --icount)");
        return Ok(Accel::Tcg);
    }
    Ok(qemu::resolve(choice))
}

/// Whether the symbolized backtraces of `log` name `function`.
fn check_symbolized(log: &str, kernel: &Path, apps: &Path, function: &str) -> Result<(), String> {
    let lines = symbolize::render(log, kernel, apps);
    if lines.iter().any(|l| l.contains(function)) {
        Ok(())
    } else {
        Err(format!("no backtrace frame names {function}: {lines:?}"))
    }
}

/// `cargo xtask run`.
fn run(ws: &Workspace, args: RunArgs) -> Result<bool, String> {
    let accel = pick_accel(args.accel, args.icount)?;
    let built = build(ws, &args.build)?;
    install::ensure_qemu()?;
    let mut append = "mode=run".to_string();
    if let Some(extra) = args.append.as_deref().filter(|s| !s.trim().is_empty()) {
        append.push(' ');
        append.push_str(extra.trim());
    }
    if args.trace.is_some() && !append.split_whitespace().any(|w| w.starts_with("trace=")) {
        append.push_str(" trace=");
        append.push_str(&DEFAULT_TRACE_RECORDS.to_string());
    }
    for warning in unknown_init_apps(&append, &built.apps) {
        eprintln!("xtask: warning: {warning}");
    }
    let timeout = if args.gdb { None } else { args.timeout.map(Duration::from_secs) };
    if args.gdb {
        println!(
            "xtask: QEMU waits for GDB on localhost:1234; attach with:\n  \
             gdb {} -ex 'target remote localhost:1234'",
            ws.rel(&built.kernel)
        );
    }
    let boot = Boot {
        kernel: built.kernel.clone(),
        initrd: built.initrd.clone(),
        append,
        smp: args.smp,
        accel,
        cpu: args.cpu,
        icount: args.icount,
        gdb: args.gdb,
        timeout,
        log: ws.log("run", accel.as_str()),
        interactive: true,
    };
    println!("xtask: booting kernel ({}, smp {})...", accel.as_str(), boot.smp);
    let out = qemu::boot(&boot)?;
    println!("xtask: {}", out.status.describe());
    symbolize::print_for_log(&boot.log, &built.kernel, &ws.apps_dir());
    println!("xtask: serial log: {}", ws.rel(&boot.log));
    if let Some(name) = &args.trace {
        write_trace(ws, &boot.log, name)?;
    }
    Ok(out.status.is_success())
}

/// Kernel trace records per core `run --trace` asks for (24 bytes each).
const DEFAULT_TRACE_RECORDS: u32 = 8192;

/// Writes the `rttrace` and `ktrace` dumps of serial log `log` to
/// `target/trace/NAME.json` (see [`trace`]).
fn write_trace(ws: &Workspace, log: &Path, name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(format!("--trace {name:?}: a plain file name, please"));
    }
    let text = std::fs::read(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let (json, events) = trace::to_chrome(&String::from_utf8_lossy(&text))?;
    let dir = ws.target.join("trace");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, json.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    if events == 0 {
        println!("xtask: no rttrace or ktrace lines in the log");
    } else if !text.windows(8).any(|w| w == b"rttrace ") {
        println!("xtask: no rttrace lines (task events need RuntimeConfig::trace in the app)");
    }
    println!("xtask: {events} events -> {} (open in ui.perfetto.dev)", ws.rel(&path));
    Ok(())
}

/// The apps `init=` names in kernel command line `append` (the last
/// `init=` wins, as in the kernel), each `name[:arg][@core]`.
fn init_names(append: &str) -> Option<Vec<&str>> {
    let value = append.split_whitespace().filter_map(|w| w.strip_prefix("init=")).next_back()?;
    Some(
        value
            .split(',')
            .filter(|w| !w.is_empty())
            .map(|w| {
                let w = w.split_once('@').map_or(w, |(n, _)| n);
                w.split_once(':').map_or(w, |(n, _)| n)
            })
            .collect(),
    )
}

/// One warning for each `init=` name in `append` that is not in `apps`,
/// with the closest name (if one is close) and the list.
fn unknown_init_apps(append: &str, apps: &[String]) -> Vec<String> {
    let Some(names) = init_names(append) else { return Vec::new() };
    names
        .into_iter()
        .filter(|n| !apps.iter().any(|a| a == n))
        .map(|n| {
            let close = apps
                .iter()
                .map(|a| (edit_distance(n, a), a))
                .filter(|&(d, _)| d <= 2)
                .min()
                .map(|(_, a)| format!(" (did you mean {a}?)"))
                .unwrap_or_default();
            format!(
                "init={n}: there is no app {n} in the initrd{close}; the kernel will not \
                 start it. Apps: {}",
                apps.join(" ")
            )
        })
        .collect()
}

/// Levenshtein distance between `a` and `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `cargo xtask new NAME`.
fn new_app(ws: &Workspace, args: &NewArgs) -> Result<(), String> {
    let dir = apps::create(&ws.root, &args.name)?;
    let name = &args.name;
    println!(
        "xtask: created {rel}/Cargo.toml and {rel}/src/main.rs.\n\
         It is a workspace member (\"apps/*\") and `cargo xtask build` packs it into the \
         initrd; nothing else to register.\n\
         Run it:\n  cargo xtask run --append \"init={name}\"\n\
         (--smp 2 boots quicker; `init={name},hello` starts more than one app)",
        rel = ws.rel(&dir)
    );
    Ok(())
}

/// `cargo xtask check`: the checks CI runs before the tests. Runs them all
/// and fails if any failed.
fn check(ws: &Workspace, args: &CheckArgs) -> Result<bool, String> {
    toolchain::ensure_components(&ws.root, &["rustfmt", "clippy"])?;
    toolchain::ensure_target(&ws.root, TARGET)?;
    let mut bare = vec![
        "-p".to_string(),
        "kernel".into(),
        "-p".into(),
        "libos-async".into(),
        "-p".into(),
        "libos-posix".into(),
    ];
    for library in apps::libraries(&ws.root)? {
        bare.extend(["-p".into(), library]);
    }
    for program in apps::discover(&ws.root)? {
        bare.extend(["-p".into(), program.package]);
    }
    let fix = ["--fix", "--allow-dirty", "--allow-staged"];
    let mut steps: Vec<(&str, Command)> = Vec::new();
    if args.fix {
        let mut cmd = ws.cargo();
        cmd.args(["fmt", "--all"]);
        steps.push(("cargo fmt (fix)", cmd));
        let mut cmd = ws.cargo();
        cmd.args(["clippy"]).args(fix).args(["--workspace", "--all-targets"]);
        steps.push(("clippy --fix (host)", cmd));
        let mut cmd = ws.cargo();
        cmd.args(["clippy"]).args(fix).args(["--target", TARGET]).args(&bare);
        steps.push(("clippy --fix (bare metal)", cmd));
    }
    let mut cmd = ws.cargo();
    cmd.args(["fmt", "--all", "--", "--check"]);
    steps.push(("cargo fmt --check", cmd));
    let mut cmd = ws.cargo();
    cmd.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    steps.push(("clippy (host workspace)", cmd));
    let mut cmd = ws.cargo();
    cmd.args(["clippy", "--target", TARGET]).args(&bare).args(["--", "-D", "warnings"]);
    steps.push((
        "clippy (kernel, libOS, protocols, apps, tests, benches; x86_64-unknown-none)",
        cmd,
    ));
    // Rustdoc warnings (broken or private intra-doc links, ambiguous
    // names) are errors. `kernel/src/machine` belongs to the `kernel`
    // binary, which `cargo doc` does not document (the library of the same
    // name wins): the third step documents it with `cargo rustdoc`.
    let mut cmd = ws.cargo();
    cmd.env("RUSTDOCFLAGS", "-D warnings").args(["doc", "--workspace", "--no-deps"]);
    steps.push(("rustdoc (host workspace)", cmd));
    // The libOS crates and `abi` again as the apps see them: code under
    // `cfg(target_os = "none")` is only documented here.
    let mut cmd = ws.cargo();
    cmd.env("RUSTDOCFLAGS", "-D warnings").args(["doc", "--target", TARGET, "--no-deps"]);
    cmd.args(["-p", "abi", "-p", "libos-async", "-p", "libos-posix"]);
    steps.push(("rustdoc (abi, libOS; x86_64-unknown-none)", cmd));
    let mut cmd = ws.cargo();
    cmd.args(["rustdoc", "-p", "kernel", "--bin", "kernel", "--target", TARGET]);
    cmd.args(["--", "-D", "warnings", "--document-private-items"]);
    steps.push(("rustdoc (the kernel binary: machine/, private items too)", cmd));
    // The Linux guest's C, warning-free, when a C compiler is there (the
    // bench builds it with musl-gcc and -Werror anyway).
    if let Some(cc) = ["musl-gcc", "gcc", "cc"].into_iter().find(|c| install::which(c).is_some()) {
        let mut cmd = Command::new(cc);
        cmd.args(["-fsyntax-only", "-Wall", "-Wextra", "-Werror"])
            .arg(ws.root.join(linux::INIT_SOURCE));
        steps.push(("C warnings (benches/linux/init.c)", cmd));
        let mut cmd = Command::new(cc);
        cmd.args(["-fsyntax-only", "-Wall", "-Wextra", "-Werror"])
            .arg(ws.root.join(workloads::SOURCE));
        steps.push(("C warnings (benches/posix/workloads.c)", cmd));
    }
    if !args.no_loom {
        // Its own target directory: `--cfg loom` rebuilds everything.
        for (what, package, filter) in [
            ("loom model of the ring protocol", "kernel", "ring::loom"),
            ("loom model of the kernel trace ring", "kernel", "trace::loom"),
            ("loom model of the channel protocol", "libos-async", "channel::ring::loom"),
            ("loom model of the pipe ring", "libos-posix", "pipe::loom"),
        ] {
            let mut cmd = ws.cargo();
            cmd.env("CARGO_TARGET_DIR", ws.target.join("loom"))
                .env("RUSTFLAGS", "--cfg loom")
                .args(["test", "-q", "-p", package, "--lib", "--release", filter]);
            steps.push((what, cmd));
        }
    }
    let mut failed = Vec::new();
    for (what, mut cmd) in steps {
        println!("xtask: check: {what}");
        let ok = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?.success();
        if !ok {
            println!("xtask: check: {what} FAILED");
            failed.push(what);
        }
    }
    if failed.is_empty() {
        println!("xtask: check: all passed");
    } else {
        println!("xtask: check: failed: {}", failed.join("; "));
    }
    Ok(failed.is_empty())
}

/// One xtask-level or guest test result in `cargo xtask test`.
struct Check {
    /// Configuration label, e.g. `x2apic`.
    config: String,
    /// Test name.
    name: String,
    /// Whether it passed.
    ok: bool,
    /// Why it failed.
    detail: Option<String>,
}

impl Check {
    /// A check from a result.
    fn new(config: &str, name: String, result: Result<(), String>) -> Self {
        Self { config: config.to_string(), name, ok: result.is_ok(), detail: result.err() }
    }

    /// The `[config] test NAME ... ok|FAILED` line.
    fn line(&self) -> String {
        format!(
            "[{}] test {} ... {}",
            self.config,
            self.name,
            if self.ok { "ok" } else { "FAILED" }
        )
    }

    /// Prints the line, and the reason on the next line when it failed.
    fn print(&self) {
        println!("{}", self.line());
        if let Some(d) = &self.detail {
            println!("    {d}");
        }
    }
}

/// One in-kernel test configuration.
struct TestConfig {
    /// Label: also the log name and the `boot_line_` suffix.
    name: &'static str,
    /// Accelerator.
    accel: Accel,
    /// `-cpu` model.
    cpu: Option<&'static str>,
    /// The APIC mode the boot line must report.
    apic: &'static str,
    /// The kernel's `tests=` filter (empty: every test).
    tests: &'static str,
    /// `-icount shift=0`: guest time counts instructions, so CPU shares are
    /// exact whatever the host does.
    icount: bool,
}

/// vCPUs for the test boots; the boot line must report this many cores.
const TEST_SMP: u32 = 8;

/// `cargo xtask test`.
fn test(ws: &Workspace, args: &TestArgs) -> Result<bool, String> {
    if !args.qemu_only {
        println!("xtask: running host unit tests (cargo test --workspace)...");
        let status = ws
            .cargo()
            .args(["test", "--workspace"])
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            println!("xtask: host unit tests failed ({status}); not booting QEMU");
            return Ok(false);
        }
    }
    if args.host_only {
        return Ok(true);
    }

    let built = build(ws, &args.build)?;
    install::ensure_qemu()?;
    let timeout = Duration::from_secs(args.timeout);
    let mut checks: Vec<Check> = Vec::new();
    // The serial log of each configuration, for the failure summary.
    let mut logs: Vec<(String, PathBuf)> = Vec::new();

    if args.sh_only {
        let checks = sh_suite(ws, &built.initrd);
        let failed = checks.iter().filter(|c| !c.ok).count();
        println!("{} passed, {} failed", checks.len() - failed, failed);
        return Ok(failed == 0);
    }
    if args.posix_only {
        let checks = posix_suite(ws, &built.initrd, args.timeout);
        let failed = checks.iter().filter(|c| !c.ok).count();
        println!("{} passed, {} failed", checks.len() - failed, failed);
        return Ok(failed == 0);
    }

    // First the newcomer's path: an app made by `cargo xtask new` builds
    // and boots (in a scratch copy of the sources; a few seconds).
    println!("xtask: checking that `cargo xtask new` makes an app that boots...");
    let (log, result) = newcheck::run(ws, Some(&built.kernel));
    if let Some(log) = log {
        logs.push(("new".into(), log));
    }
    let new = Check::new("new", "new_app_builds_and_boots".into(), result);
    new.print();
    checks.push(new);

    // The CPU-share tests measure how much work each environment gets done
    // in its slots. Under plain TCG a vCPU thread that the (2-core,
    // overcommitted) host deschedules loses work while guest time runs on,
    // so they run in their own boot under `-icount`, where guest time is
    // instructions and the measurement is exact; the other boots run
    // everything else. With hardware KVM one boot runs them all.
    let mut configs = vec![
        TestConfig {
            name: "x2apic",
            accel: Accel::Tcg,
            cpu: Some("max"),
            apic: "x2apic",
            tests: "-cpu_time_",
            icount: false,
        },
        TestConfig {
            name: "xapic",
            accel: Accel::Tcg,
            cpu: None,
            apic: "xapic",
            tests: "-cpu_time_",
            icount: false,
        },
        TestConfig {
            name: "icount",
            accel: Accel::Tcg,
            cpu: None,
            apic: "xapic",
            tests: "cpu_time_",
            icount: true,
        },
    ];
    if qemu::resolve(args.accel) == Accel::Kvm {
        configs.push(TestConfig {
            name: "kvm",
            accel: Accel::Kvm,
            cpu: None,
            apic: "x2apic",
            tests: "",
            icount: false,
        });
    }
    for cfg in &configs {
        println!(
            "xtask: booting test kernel ({}{}, -cpu {}, smp {TEST_SMP}{})...",
            cfg.accel.as_str(),
            if cfg.icount { " -icount shift=0" } else { "" },
            cfg.cpu.unwrap_or(if cfg.accel == Accel::Kvm { "host" } else { "default" }),
            if cfg.tests.is_empty() { String::new() } else { format!(", tests={}", cfg.tests) },
        );
        let append = if cfg.tests.is_empty() {
            "mode=test".into()
        } else {
            format!("mode=test tests={}", cfg.tests)
        };
        let boot = Boot {
            kernel: built.kernel.clone(),
            initrd: built.initrd.clone(),
            append,
            smp: TEST_SMP,
            accel: cfg.accel,
            cpu: cfg.cpu.map(str::to_string),
            icount: cfg.icount,
            gdb: false,
            timeout: Some(timeout),
            log: ws.log("test", cfg.name),
            interactive: false,
        };
        logs.push((cfg.name.to_string(), boot.log.clone()));
        let out = qemu::boot(&boot)?;
        let report = report::TestReport::from_lines(&out.lines);
        for t in &report.tests {
            checks.push(Check {
                config: cfg.name.to_string(),
                name: t.name.clone(),
                ok: t.outcome == report::Outcome::Ok,
                detail: None,
            });
        }
        let mine = [
            Check::new(
                cfg.name,
                format!("boot_line_{}", cfg.name),
                report::check_boot_line(&out.lines, TEST_SMP, cfg.apic),
            ),
            Check::new(
                cfg.name,
                format!("kernel_report_{}", cfg.name),
                check_kernel_report(&report, &out.status),
            ),
        ];
        for c in &mine {
            c.print();
        }
        checks.extend(mine);
        // rttest 6's deliberate app panics (when it ran): their backtraces
        // must resolve to the function that panicked.
        let text = out.lines.join("\n");
        if text.contains("deliberate panic") {
            let c = Check::new(
                cfg.name,
                format!("app_backtrace_symbolized_{}", cfg.name),
                check_symbolized(&text, &built.kernel, &ws.apps_dir(), "rttest::deep_panic"),
            );
            c.print();
            checks.push(c);
        }
    }

    println!("xtask: booting panic test kernel (tcg, -cpu default, smp 2)...");
    let boot = Boot {
        kernel: built.kernel.clone(),
        initrd: built.initrd.clone(),
        append: "mode=panic-test".into(),
        smp: 2,
        accel: Accel::Tcg,
        cpu: None,
        icount: false,
        gdb: false,
        timeout: Some(timeout),
        log: ws.log("panic-test", "tcg"),
        interactive: false,
    };
    logs.push(("panic".into(), boot.log.clone()));
    let out = qemu::boot(&boot)?;
    let panic = Check::new(
        "panic",
        "panic_handler_reports_and_exits".into(),
        check_panic(&out.lines, &out.status),
    );
    panic.print();
    checks.push(panic);
    let sym = Check::new(
        "panic",
        "kernel_backtrace_symbolized".into(),
        check_symbolized(&out.lines.join("\n"), &built.kernel, &ws.apps_dir(), "panic_test_inner"),
    );
    sym.print();
    checks.push(sym);

    // Issue 19's determinism test: two -icount boots of sched-lab (a
    // small mix) write identical result files.
    println!(
        "xtask: sched-lab twice under -icount (quick mix, smp 2): results must be identical..."
    );
    let lab = Check::new(
        "lab",
        "sched_lab_two_icount_runs_write_identical_result_files".into(),
        lab::determinism(ws, &built, args.timeout),
    );
    lab.print();
    checks.push(lab);

    checks.extend(posix_suite(ws, &built.initrd, args.timeout));
    checks.extend(sh_suite(ws, &built.initrd));

    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
    if !failed.is_empty() {
        println!("\nfailures:");
        for c in &failed {
            println!("    {}", c.line());
        }
        println!("serial logs:");
        for (config, log) in &logs {
            if failed.iter().any(|c| &c.config == config) {
                println!("    [{config}] {}", ws.rel(log));
            }
        }
    }
    println!("{} passed, {} failed", checks.len() - failed.len(), failed.len());
    Ok(failed.is_empty())
}

/// The POSIX suite ([`posixcmd`]): each case one boot with the split
/// console; printed as it goes.
fn posix_suite(ws: &Workspace, initrd: &Path, timeout: u64) -> Vec<Check> {
    println!("xtask: the POSIX suite (split console; C programs and busybox applets)...");
    let result = std::fs::read(initrd)
        .map_err(|e| format!("{}: {e}", ws.rel(initrd)))
        .and_then(|base| posixcmd::suite(ws, &base, timeout));
    match result {
        Ok(outcomes) => outcomes
            .into_iter()
            .map(|o| Check::new("posix", o.name, o.result.map_err(|e| first_line(&e))))
            .collect(),
        Err(e) => {
            let c = Check::new("posix", "posix_suite_setup".into(), Err(e));
            c.print();
            vec![c]
        }
    }
}

/// The console shell test ([`shcmd`]): keys typed into an interactive
/// busybox `sh` through the serial port; printed as it goes.
fn sh_suite(ws: &Workspace, initrd: &Path) -> Vec<Check> {
    println!("xtask: the console shell (keys typed into busybox sh on the serial port)...");
    let results = match std::fs::read(initrd) {
        Ok(base) => shcmd::suite(ws, &base),
        Err(e) => vec![("sh_setup".into(), Err(format!("{}: {e}", ws.rel(initrd))))],
    };
    results
        .into_iter()
        .map(|(name, r)| {
            let c = Check::new("sh", name, r);
            c.print();
            c
        })
        .collect()
}

/// The first line of `text`.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// The kernel's test report is complete and consistent: a summary matching
/// its `test` lines, and the exit status agreeing with it (success iff
/// nothing failed).
fn check_kernel_report(report: &report::TestReport, status: &GuestStatus) -> Result<(), String> {
    if let GuestStatus::TimedOut(_) = status {
        return Err(status.describe());
    }
    report.check_summary()?;
    let (_, failed) = report.counts();
    match (failed, status) {
        (0, GuestStatus::Success) => Ok(()),
        (0, s) => Err(format!("no test failed but {}", s.describe())),
        (_, GuestStatus::Failure) => Ok(()),
        (n, s) => Err(format!("{n} tests failed but {}", s.describe())),
    }
}

/// The panic test: the guest exits with the failure status and prints
/// `PANIC` and a `backtrace:` line.
fn check_panic(lines: &[String], status: &GuestStatus) -> Result<(), String> {
    let mut missing = Vec::new();
    if *status != GuestStatus::Failure {
        missing.push(format!("expected the failure exit status, but {}", status.describe()));
    }
    if !lines.iter().any(|l| l.contains("PANIC")) {
        missing.push("no `PANIC` in the serial output".into());
    }
    if !lines.iter().any(|l| l.starts_with("backtrace:")) {
        missing.push("no line starting with `backtrace:`".into());
    }
    if missing.is_empty() { Ok(()) } else { Err(missing.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn kernel_report_consistency() {
        let all_ok = report::TestReport::from_lines(&lines("test a ... ok\n1 passed, 0 failed"));
        assert!(check_kernel_report(&all_ok, &GuestStatus::Success).is_ok());
        assert!(check_kernel_report(&all_ok, &GuestStatus::Failure).is_err());
        assert!(
            check_kernel_report(&all_ok, &GuestStatus::TimedOut(Duration::from_secs(1))).is_err()
        );
        let one_bad = report::TestReport::from_lines(&lines(
            "test a ... ok\ntest b ... FAILED\n1 passed, 1 failed",
        ));
        assert!(check_kernel_report(&one_bad, &GuestStatus::Failure).is_ok());
        assert!(check_kernel_report(&one_bad, &GuestStatus::Success).is_err());
        let no_summary = report::TestReport::from_lines(&lines("test a ... ok"));
        assert!(check_kernel_report(&no_summary, &GuestStatus::Success).is_err());
    }

    #[test]
    fn panic_check() {
        let good = lines(
            "exo: boot ok\nPANIC at kernel/src/main.rs:3: boom\nbacktrace: 0xffff8000 0xffff8010",
        );
        assert!(check_panic(&good, &GuestStatus::Failure).is_ok());
        assert!(check_panic(&good, &GuestStatus::NoResult).is_err());
        assert!(check_panic(&good[..2], &GuestStatus::Failure).is_err());
        assert!(check_panic(&good[2..], &GuestStatus::Failure).is_err());
    }

    #[test]
    fn check_lines() {
        let c = Check::new("x2apic", "boot_line_x2apic".into(), Ok(()));
        assert_eq!(c.line(), "[x2apic] test boot_line_x2apic ... ok");
        let c = Check::new("panic", "p".into(), Err("why".into()));
        assert_eq!(c.line(), "[panic] test p ... FAILED");
    }

    #[test]
    fn init_warnings() {
        let apps: Vec<String> = ["hello", "hello-async", "worker"].map(String::from).to_vec();
        assert_eq!(init_names("mode=run"), None);
        assert_eq!(
            init_names("init=a init=hello:0x10@3,,worker@1 log=off"),
            Some(vec!["hello", "worker"])
        );
        assert!(unknown_init_apps("mode=run init=hello,worker:7", &apps).is_empty());
        assert!(unknown_init_apps("mode=run", &apps).is_empty());
        let w = unknown_init_apps("mode=run init=helo,nothing-like-it", &apps);
        assert_eq!(w.len(), 2);
        assert!(w[0].starts_with("init=helo:") && w[0].contains("did you mean hello?"), "{w:?}");
        assert!(w[0].ends_with("Apps: hello hello-async worker"));
        assert!(!w[1].contains("did you mean"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["xtask", "run", "--smp", "2", "--append", "a=b c", "--gdb"])
            .unwrap();
        match cli.command {
            Cmd::Run(r) => {
                assert_eq!(r.smp, 2);
                assert_eq!(r.append.as_deref(), Some("a=b c"));
                assert!(r.gdb);
                assert_eq!(r.accel, AccelChoice::Auto);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["xtask", "test", "--host-only", "--qemu-only"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "bench", "--icount", "--accel", "tcg"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "bench", "--benches", "isobench,-gap"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "bench", "syscall", "--benches", "x"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "bench", "--fail-on-regression"]).is_err());
        match Cli::try_parse_from(["xtask", "bench", "--vs", "linux", "--icount", "ring", "tlb"])
            .unwrap()
            .command
        {
            Cmd::Bench(b) => {
                assert_eq!(b.vs, Some(Versus::Linux));
                assert_eq!(b.names, ["ring", "tlb"]);
            }
            other => panic!("{other:?}"),
        }
        match Cli::try_parse_from(["xtask", "bench", "--compare", "HEAD", "latest"])
            .unwrap()
            .command
        {
            Cmd::Bench(b) => assert_eq!(b.compare, Some(vec!["HEAD".into(), "latest".into()])),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["xtask", "new"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["xtask", "new", "my-app"]).unwrap().command,
            Cmd::New(NewArgs { name }) if name == "my-app"
        ));
        assert!(matches!(
            Cli::try_parse_from(["xtask", "check", "--fix"]).unwrap().command,
            Cmd::Check(CheckArgs { fix: true, no_loom: false })
        ));
    }
}
