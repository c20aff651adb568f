//! Booting the kernel in QEMU and collecting what it prints.
//!
//! Every boot uses the same machine: `q35`, 512 MiB, the PVH kernel ELF with
//! `-kernel`, the initrd with `-initrd`, serial on stdio (read through a
//! pipe, echoed live and saved to a fresh log under `target/logs/`, see
//! [`crate::logs`]), no
//! display, no monitor, `-no-reboot` and an `isa-debug-exit` device at port
//! `0xf4`. The guest reports its result by writing to that port: `0x10` is
//! success (QEMU exits with 33), `0x11` failure (35). Exit 0 means the guest
//! reset or shut down without reporting (e.g. a triple fault under
//! `-no-reboot`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::install::QEMU;

/// Lines of serial output shown when a guest hangs.
const TAIL_LINES: usize = 40;

/// An accelerator choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM when the host really has hardware virtualisation, else TCG.
    Auto,
    /// KVM.
    Kvm,
    /// TCG (software emulation).
    Tcg,
}

/// The accelerator actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM.
    Kvm,
    /// TCG.
    Tcg,
}

impl Accel {
    /// QEMU's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Decides `--accel auto` from whether `/dev/kvm` opens read-write and the
/// text of `/proc/cpuinfo`; also says why.
pub fn decide_auto(kvm_opens: bool, cpuinfo: &str) -> (Accel, String) {
    let hw_virt = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .filter_map(|l| l.split_once(':'))
        .any(|(_, flags)| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    match (kvm_opens, hw_virt) {
        (true, true) => (Accel::Kvm, "/dev/kvm opens and the CPU has vmx/svm".into()),
        (false, _) => (Accel::Tcg, "/dev/kvm cannot be opened read-write".into()),
        (true, false) => (
            Accel::Tcg,
            "/dev/kvm opens but the CPU flags show no vmx/svm, so it is not hardware KVM".into(),
        ),
    }
}

/// Resolves an accelerator choice without printing (`cargo xtask posix`,
/// whose stdout is the program's).
pub fn resolve_quiet(choice: AccelChoice) -> Accel {
    match choice {
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::Auto => {
            let kvm_opens =
                std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            decide_auto(kvm_opens, &cpuinfo).0
        }
    }
}

/// Resolves an accelerator choice, printing one line for `auto`.
pub fn resolve(choice: AccelChoice) -> Accel {
    match choice {
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::Auto => {
            let kvm_opens =
                std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let (accel, why) = decide_auto(kvm_opens, &cpuinfo);
            println!("xtask: accel {} ({why})", accel.as_str());
            accel
        }
    }
}

/// Everything that varies between boots.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The kernel ELF.
    pub kernel: PathBuf,
    /// The initrd archive.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub append: String,
    /// Number of vCPUs.
    pub smp: u32,
    /// Accelerator.
    pub accel: Accel,
    /// `-cpu` model; `None` means QEMU's default for TCG and `host` for KVM.
    pub cpu: Option<String>,
    /// Add `-icount shift=0`.
    pub icount: bool,
    /// Add `-s -S` (GDB stub on :1234, wait for the debugger).
    pub gdb: bool,
    /// Kill the guest after this long.
    pub timeout: Option<Duration>,
    /// Where to save the serial output.
    pub log: PathBuf,
    /// Let QEMU read our stdin (interactive runs); otherwise `/dev/null`.
    pub interactive: bool,
}

impl Boot {
    /// QEMU's arguments for this boot.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "-machine",
            "q35",
            "-m",
            "512M",
            "-smp",
            &self.smp.to_string(),
            "-kernel",
            &self.kernel.to_string_lossy(),
            "-initrd",
            &self.initrd.to_string_lossy(),
            "-append",
            &self.append,
            "-serial",
            "stdio",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-accel",
            self.accel.as_str(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cpu = match (&self.cpu, self.accel) {
            (Some(cpu), _) => Some(cpu.as_str()),
            (None, Accel::Kvm) => Some("host"),
            (None, Accel::Tcg) => None,
        };
        if let Some(cpu) = cpu {
            a.extend(["-cpu".into(), cpu.into()]);
        }
        if self.icount {
            a.extend(["-icount".into(), "shift=0".into()]);
        }
        if self.gdb {
            a.extend(["-s".into(), "-S".into()]);
        }
        // For profiling by hand (e.g. `-d in_asm,exec,nochain -D LOG`, read
        // by benches/posix/tbprof.py): extra QEMU arguments, split on spaces.
        if let Ok(extra) = std::env::var("XTASK_QEMU_EXTRA") {
            a.extend(extra.split_whitespace().map(String::from));
        }
        a
    }
}

/// How a guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestStatus {
    /// The guest wrote 0x10 to the debug-exit port.
    Success,
    /// The guest wrote 0x11 to the debug-exit port.
    Failure,
    /// The guest wrote some other value to the debug-exit port.
    OtherCode(u32),
    /// QEMU exited 0: the guest reset or shut down without a result.
    NoResult,
    /// QEMU itself failed (bad arguments, cannot load the kernel, ...).
    QemuError(i32),
    /// QEMU died from a signal we did not send.
    Signal(i32),
    /// We killed the guest after the timeout.
    TimedOut(Duration),
}

impl GuestStatus {
    /// Maps QEMU's exit status.
    pub fn from_exit(code: Option<i32>, signal: Option<i32>) -> Self {
        match (code, signal) {
            (Some(33), _) => GuestStatus::Success,
            (Some(35), _) => GuestStatus::Failure,
            (Some(0), _) => GuestStatus::NoResult,
            (Some(c), _) if c % 2 == 1 && c > 1 => GuestStatus::OtherCode((c as u32) >> 1),
            (Some(c), _) => GuestStatus::QemuError(c),
            (None, Some(s)) => GuestStatus::Signal(s),
            (None, None) => GuestStatus::QemuError(-1),
        }
    }

    /// Whether the guest reported success.
    pub fn is_success(&self) -> bool {
        *self == GuestStatus::Success
    }

    /// A short human description.
    pub fn describe(&self) -> String {
        match self {
            GuestStatus::Success => "guest reported success".into(),
            GuestStatus::Failure => "guest reported failure".into(),
            GuestStatus::OtherCode(v) => {
                format!("guest wrote unexpected value {v:#x} to the debug-exit port")
            }
            GuestStatus::NoResult => "guest reset/shut down without reporting a result".into(),
            GuestStatus::QemuError(c) => format!("QEMU failed (exit status {c})"),
            GuestStatus::Signal(s) => format!("QEMU was killed by signal {s}"),
            GuestStatus::TimedOut(d) => format!("guest timed out after {} s", d.as_secs()),
        }
    }
}

/// The result of one boot.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub status: GuestStatus,
    /// Every serial line, without line endings.
    pub lines: Vec<String>,
}

/// Splits serial bytes into lines; keeps the unfinished tail.
#[derive(Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes, returning the lines they complete.
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                out.push(Self::finish(std::mem::take(&mut self.partial)));
            } else {
                self.partial.push(b);
            }
        }
        out
    }

    /// The unfinished last line, if any.
    fn flush(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| Self::finish(std::mem::take(&mut self.partial)))
    }

    fn finish(mut line: Vec<u8>) -> String {
        while line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8_lossy(&line).into_owned()
    }
}

/// Asks QEMU to quit (SIGTERM lets it restore the terminal), then kills it.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Exit code and signal of a finished QEMU.
fn code_and_signal(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    (status.code(), status.signal())
}

/// Boots QEMU as described, echoing the serial output live and saving it to
/// `boot.log`. Waits for the guest to power off or the timeout.
pub fn boot(boot: &Boot) -> Result<Outcome, String> {
    boot_with_args(boot, boot.args())
}

/// [`boot`] with QEMU arguments `args` instead of `boot.args()` (for
/// callers that adjust them).
pub fn boot_with_args(boot: &Boot, args: Vec<String>) -> Result<Outcome, String> {
    if let Some(dir) = boot.log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let log =
        File::create(&boot.log).map_err(|e| format!("creating {}: {e}", boot.log.display()))?;
    let mut cmd = Command::new(QEMU);
    cmd.args(&args).stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(if boot.interactive {
        Stdio::inherit()
    } else {
        Stdio::null()
    });
    println!("xtask: {QEMU} {}", shell_words(&args));
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {QEMU}: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");

    // The reader echoes raw bytes as they come (so prompts without a newline
    // show up), saves them, and sends complete lines to us.
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut log = BufWriter::new(log);
        let mut split = LineSplitter::default();
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = &buf[..n];
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(chunk);
                    let _ = out.flush();
                    let _ = log.write_all(chunk);
                    for line in split.feed(chunk) {
                        let _ = log.flush();
                        if tx.send(line).is_err() {
                            return false;
                        }
                    }
                }
            }
        }
        let _ = log.flush();
        // Report whether the output ended in the middle of a line.
        match split.flush() {
            Some(line) => {
                let _ = tx.send(line);
                true
            }
            None => false,
        }
    });

    let start = Instant::now();
    let deadline = boot.timeout.map(|t| start + t);
    let mut lines = Vec::new();
    let mut timed_out = false;
    loop {
        let received = match deadline {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok(line) => lines.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }

    let status = if timed_out {
        stop(&mut child);
        GuestStatus::TimedOut(boot.timeout.unwrap_or_default())
    } else {
        // QEMU closed its stdout; it should be exiting. Don't wait forever.
        let grace = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    let (code, signal) = code_and_signal(st);
                    break GuestStatus::from_exit(code, signal);
                }
                Ok(None) if Instant::now() < grace => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    stop(&mut child);
                    break GuestStatus::TimedOut(start.elapsed());
                }
            }
        }
    };
    let mid_line = reader.join().unwrap_or(true);
    // Lines the reader sent after we stopped listening.
    lines.extend(rx.try_iter());
    if mid_line {
        // Make sure whatever follows starts on a fresh line.
        println!();
    }

    crate::logs::finish(&boot.log);

    if let GuestStatus::TimedOut(_) = status {
        println!(
            "xtask: {}; killed QEMU. Last {TAIL_LINES} lines of serial ({}):",
            status.describe(),
            boot.log.display()
        );
        for line in tail(&lines, TAIL_LINES) {
            println!("  | {line}");
        }
    }
    Ok(Outcome { status, lines })
}

/// The last `n` lines.
pub fn tail(lines: &[String], n: usize) -> Vec<String> {
    let mut q: VecDeque<&String> = VecDeque::with_capacity(n);
    for l in lines {
        if q.len() == n {
            q.pop_front();
        }
        q.push_back(l);
    }
    q.into_iter().cloned().collect()
}

/// Joins arguments for display, quoting those with spaces.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A path relative to `root` for display, or the path itself.
pub fn display_rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO_NO_VIRT: &str = "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor lahf_lm\n\n\
                                   processor\t: 1\nflags\t\t: fpu vme de pse hypervisor lahf_lm\n";
    const CPUINFO_VMX: &str = "processor\t: 0\nflags\t\t: fpu vmx sse2\n";
    const CPUINFO_SVM: &str = "processor\t: 0\nflags\t\t: fpu svm sse2\n";

    #[test]
    fn auto_accel() {
        assert_eq!(decide_auto(true, CPUINFO_VMX).0, Accel::Kvm);
        assert_eq!(decide_auto(true, CPUINFO_SVM).0, Accel::Kvm);
        assert_eq!(decide_auto(true, CPUINFO_NO_VIRT).0, Accel::Tcg);
        assert_eq!(decide_auto(false, CPUINFO_VMX).0, Accel::Tcg);
        // `vmx` must be a whole flag on a flags line.
        assert_eq!(decide_auto(true, "flags\t: vmxfoo\nmodel name\t: vmx\n").0, Accel::Tcg);
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(GuestStatus::from_exit(Some(33), None), GuestStatus::Success);
        assert_eq!(GuestStatus::from_exit(Some(35), None), GuestStatus::Failure);
        assert_eq!(GuestStatus::from_exit(Some(0), None), GuestStatus::NoResult);
        assert_eq!(GuestStatus::from_exit(Some(1), None), GuestStatus::QemuError(1));
        assert_eq!(GuestStatus::from_exit(Some(5), None), GuestStatus::OtherCode(2));
        assert_eq!(GuestStatus::from_exit(None, Some(9)), GuestStatus::Signal(9));
        assert!(GuestStatus::NoResult.describe().contains("without reporting a result"));
    }

    #[test]
    fn splitter_handles_crlf_and_partial_lines() {
        let mut s = LineSplitter::default();
        assert_eq!(s.feed(b"ab\r\nc"), vec!["ab".to_string()]);
        assert_eq!(s.feed(b"d\n\xffe"), vec!["cd".to_string()]);
        assert_eq!(s.flush(), Some("\u{fffd}e".to_string()));
        assert_eq!(s.flush(), None);
    }

    #[test]
    fn tail_keeps_last_lines() {
        let lines: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        let t = tail(&lines, 40);
        assert_eq!(t.len(), 40);
        assert_eq!(t[0], "10");
        assert_eq!(tail(&lines[..3], 40).len(), 3);
    }

    #[test]
    fn qemu_args() {
        let mut b = Boot {
            kernel: "/k".into(),
            initrd: "/i".into(),
            append: "mode=test".into(),
            smp: 8,
            accel: Accel::Tcg,
            cpu: None,
            icount: false,
            gdb: false,
            timeout: None,
            log: "/l".into(),
            interactive: false,
        };
        let a = b.args().join(" ");
        assert!(
            a.starts_with("-machine q35 -m 512M -smp 8 -kernel /k -initrd /i -append mode=test")
        );
        assert!(a.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04 -accel tcg"));
        assert!(!a.contains("-cpu"));
        b.accel = Accel::Kvm;
        assert!(b.args().join(" ").ends_with("-accel kvm -cpu host"));
        b.cpu = Some("max".into());
        b.icount = true;
        b.gdb = true;
        assert!(b.args().join(" ").ends_with("-cpu max -icount shift=0 -s -S"));
    }
}
