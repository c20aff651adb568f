//! `cargo xtask sh`: an interactive busybox `sh` on the exokernel, whose
//! terminal is the serial console — and its test, which types into that
//! console and reads the answers.
//!
//! The machine is `cargo xtask posix`'s (the same root and runtime) with
//! 8 vCPUs, the console shared (the program's output and the kernel's few
//! lines on COM1, `log=warn`) and `stdin=console`: the POSIX runtime is the
//! console reader, so the program's descriptors 0–2 are a terminal (the
//! kernel's receive interrupt, `ConsoleRead`, libos-posix's `tty`). QEMU's
//! serial is our terminal through a stdio character device with
//! `signal=off`, so ^C goes to the guest; QEMU puts the terminal in raw
//! mode itself. The machine powers off when the shell exits (`exit`, ^D).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::posix::{self, RunRequest};
use crate::posixcmd;
use crate::qemu::{Accel, Boot};
use crate::{ShArgs, Workspace};

/// The kernel command line of a shell boot.
pub const APPEND: &str = "mode=run console=shared log=warn quota=65536 stdin=console init=posix";
/// The prompt the shell is given (`PS1`), also what the test waits for.
pub const PROMPT: &str = "exo$ ";

/// The run request: an interactive login-less shell.
fn request() -> RunRequest {
    RunRequest {
        argv: vec![b"/bin/sh".to_vec(), b"-i".to_vec()],
        envp: ["HOME=/", "TERM=vt100", "PATH=/bin", &format!("PS1={PROMPT}")]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        cwd: Some(b"/".to_vec()),
    }
}

/// Packs the initrd of a shell boot (the build's apps plus the default
/// POSIX root and the request) and returns its path.
fn initrd(ws: &Workspace, base: &[u8]) -> Result<PathBuf, String> {
    let tree = posix::layout(posixcmd::default_root(ws)?, &[], &request())?;
    let path = posix::cache_dir(&ws.target).join("sh-initrd.tar");
    std::fs::write(&path, posix::pack(base, &tree)?)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn boot(ws: &Workspace, initrd: PathBuf, smp: u32, accel: Accel, what: &str) -> Boot {
    Boot {
        kernel: ws.kernel(),
        initrd,
        append: APPEND.into(),
        smp,
        accel,
        cpu: None,
        icount: false,
        gdb: false,
        timeout: None,
        log: ws.log("sh", what),
        interactive: true,
    }
}

/// QEMU's arguments with the serial port on a stdio device that leaves ^C
/// to the guest.
fn qemu_args(b: &Boot) -> Vec<String> {
    let mut args = b.args();
    if let Some(i) = args.iter().position(|a| a == "-serial") {
        args.splice(
            i..i + 2,
            [
                "-chardev".to_string(),
                "stdio,id=con0,signal=off".to_string(),
                "-serial".to_string(),
                "chardev:con0".to_string(),
            ],
        );
    }
    args
}

/// `cargo xtask sh`.
pub fn run(ws: &Workspace, args: &ShArgs) -> ExitCode {
    let go = || -> Result<u8, String> {
        let base = posixcmd::quiet_build(ws)?;
        let initrd = initrd(ws, &base)?;
        crate::install::ensure_qemu()?;
        let b = boot(ws, initrd, args.smp, crate::qemu::resolve_quiet(args.accel), "run");
        eprintln!("xtask: booting {} cores into busybox sh; `exit` or ^D ends it", args.smp);
        let status = Command::new(crate::install::QEMU)
            .args(qemu_args(&b))
            .status()
            .map_err(|e| format!("cannot start {}: {e}", crate::install::QEMU))?;
        Ok(if status.success() { 0 } else { 1 })
    };
    match go() {
        Ok(s) => ExitCode::from(s),
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::from(posix::XTASK_FAILED)
        }
    }
}

// --- the test ------------------------------------------------------------

/// A QEMU whose serial we type into and read.
struct Session {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: Arc<Mutex<Vec<u8>>>,
    /// Output up to here has been matched.
    seen: usize,
}

impl Session {
    fn start(b: &Boot) -> Result<Session, String> {
        let mut args = b.args();
        if let Some(i) = args.iter().position(|a| a == "-serial") {
            args[i + 1] = "stdio".into();
        }
        let mut child = Command::new(crate::install::QEMU)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", crate::install::QEMU))?;
        let input = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        let log = b.log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut all = sink.lock().unwrap_or_else(|e| e.into_inner());
                all.extend_from_slice(&buf[..n]);
                let _ = std::fs::write(&log, &*all);
            }
        });
        Ok(Session { child, input, output, seen: 0 })
    }

    /// Types `keys`, one byte at a time, as a person would.
    fn type_keys(&mut self, keys: &[u8]) -> Result<(), String> {
        for &k in keys {
            self.input.write_all(&[k]).map_err(|e| format!("typing: {e}"))?;
            self.input.flush().map_err(|e| format!("typing: {e}"))?;
            std::thread::sleep(Duration::from_millis(15));
        }
        Ok(())
    }

    /// Waits until `want` appears after what was matched so far; moves past
    /// it and returns the output in between.
    fn expect(&mut self, want: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let all = self.output.lock().unwrap_or_else(|e| e.into_inner());
                let tail = &all[self.seen.min(all.len())..];
                if let Some(at) = find(tail, want.as_bytes()) {
                    let between = String::from_utf8_lossy(&tail[..at]).into_owned();
                    self.seen += at + want.len();
                    return Ok(between);
                }
            }
            if Instant::now() >= deadline {
                let all = self.output.lock().unwrap_or_else(|e| e.into_inner());
                let tail = String::from_utf8_lossy(&all[self.seen.min(all.len())..]).into_owned();
                return Err(format!(
                    "waited {timeout:?} for {want:?}; the console showed {tail:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err("the machine did not power off after the shell ended".into());
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One exchange of the test: keys typed, and what must come back.
pub struct Exchange {
    /// Its name in the report.
    pub name: &'static str,
    /// The keys.
    pub keys: &'static [u8],
    /// What ends the answer: the next prompt, or other text.
    pub until: &'static str,
    /// Text the answer must contain (`\r\n` line ends: the terminal's).
    pub answer: &'static str,
    /// Text it must not contain.
    pub not: Option<&'static str>,
}

/// The exchanges, in order.
///
/// ^C is tried where the line discipline itself handles it: in a
/// canonical-mode `read` (the shell's `read` builtin), where it flushes the
/// line, echoes `^C` and interrupts the read. At the prompt busybox's line
/// editor runs the terminal raw and turns ^C into `raise(SIGINT)` on the
/// shell itself, which needs signal delivery (not in this branch: there
/// the shell ends with status 130).
pub const EXCHANGES: &[Exchange] = &[
    Exchange {
        name: "sh_echo",
        keys: b"echo hi\r",
        until: PROMPT,
        answer: "\r\nhi\r\n",
        not: None,
    },
    Exchange {
        name: "sh_backspace_editing",
        keys: b"echo helkx\x7f\x7flo\r",
        until: PROMPT,
        answer: "\r\nhello\r\n",
        not: None,
    },
    Exchange {
        name: "sh_variables_and_loops",
        keys: b"x=4; for i in 1 2 3; do echo n$i$x; done\r",
        until: PROMPT,
        answer: "\r\nn14\r\nn24\r\nn34\r\n",
        not: None,
    },
    Exchange {
        name: "sh_cd_pwd",
        keys: b"cd /tmp && pwd\r",
        until: PROMPT,
        answer: "\r\n/tmp\r\n",
        not: None,
    },
    // An external command: the shell forks, the child execs busybox and
    // writes to the terminal, the shell waits and prompts again.
    Exchange {
        name: "sh_external_command",
        keys: b"/bin/busybox printf 'ext%s\\n' ernal\r",
        until: PROMPT,
        answer: "\r\nexternal\r\n",
        not: None,
    },
    Exchange {
        name: "sh_is_a_terminal",
        keys: b"[ -t 0 ] && [ -t 2 ] && echo tty yes\r",
        until: PROMPT,
        answer: "\r\ntty yes\r\n",
        not: None,
    },
    Exchange {
        name: "sh_read_builtin_line_editing",
        keys: b"read v; echo got:$v\r",
        until: "",
        answer: "",
        not: None,
    },
    Exchange {
        name: "sh_read_ctrl_c_flushes_the_line",
        keys: b"junk\x03",
        until: "^C",
        answer: "junk",
        not: None,
    },
    // ^C is SIGINT to the foreground group: as on Linux, the shell
    // abandons the whole command line (no `got:`) and prompts again, where
    // the line editor takes the next keys.
    Exchange {
        name: "sh_ctrl_c_abandons_the_command",
        keys: b"re\x15echo ba''ck\r",
        until: "\r\nback\r\n",
        answer: "echo ba''ck",
        not: Some("got:"),
    },
    // ^C while a foreground command runs: the child made its own process
    // group the terminal's foreground (`tcsetpgrp`, recorded for the whole
    // session), and the shell, blocked in `wait4` but the one reading the
    // keyboard, takes the key and sends SIGINT to that group. Without it
    // `sleep 1000` would hold the prompt for 1000 s.
    Exchange {
        name: "sh_foreground_command_typed",
        keys: b"sleep 1000\r",
        until: "sleep 1000",
        answer: "",
        not: None,
    },
    Exchange { name: "sh_foreground_command_runs", keys: b"", until: "", answer: "", not: None },
    Exchange {
        name: "sh_ctrl_c_interrupts_the_foreground_command",
        keys: b"\x03",
        until: PROMPT,
        answer: "^C",
        not: None,
    },
    Exchange {
        name: "sh_prompt_works_after_ctrl_c",
        keys: b"echo alive\r",
        until: PROMPT,
        answer: "\r\nalive\r\n",
        not: None,
    },
    // A forked child reads the terminal: `head` (the shell's foreground
    // child) asks for the keyboard, the shell (its reader, waiting in
    // `wait4`) gives it (`ConsoleGive`); the typed line is echoed once by
    // the child's line discipline and printed by `head`; the keyboard
    // comes back to the shell when `head` ends.
    Exchange {
        name: "sh_child_reads_the_terminal_started",
        keys: b"head -n 1\r",
        until: "head -n 1",
        answer: "",
        not: None,
    },
    Exchange {
        name: "sh_child_reads_the_terminal_waits",
        keys: b"",
        until: "",
        answer: "",
        not: None,
    },
    Exchange {
        name: "sh_child_reads_the_terminal",
        keys: b"typed for head\r",
        until: PROMPT,
        answer: "typed for head\r\ntyped for head\r\n",
        not: Some("not found"),
    },
    Exchange {
        name: "sh_keyboard_back_to_the_shell",
        keys: b"echo back\r",
        until: PROMPT,
        answer: "\r\nback\r\n",
        not: None,
    },
];

/// The test, on both local-APIC paths: boots the shell on TCG's default
/// CPU (xAPIC) and plays every exchange of [`EXCHANGES`], then on `-cpu
/// max` (x2APIC) the first one only (the receive interrupt's route is what
/// differs); each ends with ^D. One result per exchange, then
/// `sh_ctrl_d_exits`, the x2APIC ones suffixed `_x2apic`.
pub fn suite(ws: &Workspace, base: &[u8]) -> Vec<(String, Result<(), String>)> {
    let mut all = session(ws, base, None, EXCHANGES, "");
    all.extend(session(ws, base, Some("max"), &EXCHANGES[..1], "_x2apic"));
    all
}

fn session(
    ws: &Workspace,
    base: &[u8],
    cpu: Option<&str>,
    exchanges: &[Exchange],
    suffix: &str,
) -> Vec<(String, Result<(), String>)> {
    let mut results = Vec::new();
    let setup = (|| -> Result<Session, String> {
        let initrd = initrd(ws, base)?;
        let mut b = boot(ws, initrd, 8, Accel::Tcg, &format!("test{suffix}"));
        b.cpu = cpu.map(String::from);
        Session::start(&b)
    })();
    let mut s = match setup {
        Ok(s) => s,
        Err(e) => return vec![(format!("sh_setup{suffix}"), Err(e))],
    };
    let slow = Duration::from_secs(120);
    if let Err(e) = s.expect(PROMPT, Duration::from_secs(300)) {
        return vec![(format!("sh_first_prompt{suffix}"), Err(e))];
    }
    for x in exchanges {
        let r = s.type_keys(x.keys).and_then(|()| {
            if x.until.is_empty() {
                // Nothing to see: give the command time to start.
                std::thread::sleep(Duration::from_secs(3));
                return Ok(());
            }
            let shown = s.expect(x.until, slow)?;
            if !shown.contains(x.answer) {
                return Err(format!("expected {:?} in {shown:?}", x.answer));
            }
            if let Some(bad) = x.not
                && shown.contains(bad)
            {
                return Err(format!("{bad:?} should not be in {shown:?}"));
            }
            Ok(())
        });
        let failed = r.is_err();
        results.push((format!("{}{suffix}", x.name), r));
        if failed {
            return results;
        }
    }
    let exit = s
        .type_keys(b"\x04")
        .and_then(|()| s.expect("exited with code 0", slow).map(|_| ()))
        .and_then(|()| s.finish(Duration::from_secs(60)));
    results.push((format!("sh_ctrl_d_exits{suffix}"), exit));
    results
}
