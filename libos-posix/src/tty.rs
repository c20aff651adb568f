//! The terminal: the console as a Linux tty — its line discipline, its
//! `termios`, its window size and its foreground process group — and the
//! calls that need it (`ioctl` on a terminal, `poll`).
//!
//! Hardware-free like the rest of the crate: raw bytes come from the
//! glue's [`Console::read_input`] (on the exokernel: the console reader's
//! `ConsoleRead`, sleeping on `InfoPage::console_input`), output goes to
//! [`Console::write`]. When the console is not a keyboard
//! ([`Console::is_terminal`] false: `cargo xtask posix`, whose program
//! output is compared byte for byte with Linux's through a pipe) nothing
//! here touches the bytes: reads are the console's, writes are not
//! translated.
//!
//! # Line discipline (Linux's `n_tty`, the parts a shell needs)
//!
//! Input flags `ISTRIP`, `IGNCR`, `ICRNL`, `INLCR`. With `ISIG`, `VINTR`
//! (^C), `VQUIT` (^\) and `VSUSP` (^Z) flush the pending input (unless
//! `NOFLSH`), echo as `^C` etc., and raise `SIGINT`, `SIGQUIT`, `SIGTSTP`
//! for the foreground process group through [`Process::tty_signal`] — the
//! hook the signal implementation connects. With `ICANON` input is edited
//! a line at a time: `VERASE` (DEL) and backspace (^H) erase a character,
//! `VKILL` (^U) the line, `VWERASE` (^W, with `IEXTEN`) a word; a line is
//! complete at newline, `VEOL`, `VEOL2` or `VEOF` (^D, not stored); ^D on
//! an empty line is end of file (a `read` of 0). A read returns at most
//! one line. Lines are at most [`LINE_MAX`] bytes (more is dropped), and
//! at most [`INPUT_MAX`] bytes wait to be read. Without `ICANON` bytes are
//! readable at once, with `VMIN`/`VTIME` as in `termios(3)`. Echo (`ECHO`)
//! shows control characters as `^X` (`ECHOCTL`), erases with backspace,
//! space, backspace (`ECHOE`, `ECHOKE`), and `ECHONL` echoes newline
//! alone. Output (`OPOST`) maps newline to CR-LF (`ONLCR`).
//!
//! Not done: job control stops (`SIGTSTP`'s default action is reported
//! like the others: nothing stops), `IXON` flow control, `VLNEXT`,
//! `VREPRINT`, `VDISCARD`, `TOSTOP`, `SIGTTIN`/`SIGTTOU`; `O_NONBLOCK` on a
//! terminal read blocks anyway.

use crate::host::Console;
use crate::linux::errno::*;
use crate::linux::{SysResult, Termios, Winsize};
use crate::syscalls::Process;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

// ---- termios bits (Linux's values) ----
/// Strip the eighth bit.
pub const ISTRIP: u32 = 0o40;
/// Map NL to CR on input.
pub const INLCR: u32 = 0o100;
/// Ignore CR.
pub const IGNCR: u32 = 0o200;
/// Map CR to NL on input.
pub const ICRNL: u32 = 0o400;
/// Post-process output.
pub const OPOST: u32 = 0o1;
/// Map NL to CR-NL on output.
pub const ONLCR: u32 = 0o4;
/// Signals from `VINTR`, `VQUIT`, `VSUSP`.
pub const ISIG: u32 = 0o1;
/// Canonical (line) mode.
pub const ICANON: u32 = 0o2;
/// Echo input.
pub const ECHO: u32 = 0o10;
/// Erase echoes as backspace-space-backspace.
pub const ECHOE: u32 = 0o20;
/// Kill echoes a newline.
pub const ECHOK: u32 = 0o40;
/// Echo NL even without `ECHO`.
pub const ECHONL: u32 = 0o100;
/// Do not flush input on a signal character.
pub const NOFLSH: u32 = 0o200;
/// Echo control characters as `^X`.
pub const ECHOCTL: u32 = 0o1000;
/// Kill erases the line on the screen.
pub const ECHOKE: u32 = 0o4000;
/// Extended input processing (`VWERASE`).
pub const IEXTEN: u32 = 0o100000;

/// `c_cc` indices.
pub const VINTR: usize = 0;
/// Quit character index.
pub const VQUIT: usize = 1;
/// Erase character index.
pub const VERASE: usize = 2;
/// Kill-line character index.
pub const VKILL: usize = 3;
/// End-of-file character index.
pub const VEOF: usize = 4;
/// Read timeout (deciseconds) index.
pub const VTIME: usize = 5;
/// Minimum read index.
pub const VMIN: usize = 6;
/// Suspend character index.
pub const VSUSP: usize = 10;
/// Extra end-of-line index.
pub const VEOL: usize = 11;
/// Word-erase character index.
pub const VWERASE: usize = 14;
/// Second extra end-of-line index.
pub const VEOL2: usize = 16;

// ---- ioctls beyond those in `linux` ----
/// Make this the controlling terminal.
pub const TIOCSCTTY: u32 = 0x540e;
/// Set the foreground process group.
pub const TIOCSPGRP: u32 = 0x5410;
/// Output queue size.
pub const TIOCOUTQ: u32 = 0x5411;
/// Give up the controlling terminal.
pub const TIOCNOTTY: u32 = 0x5422;
/// Session of the terminal.
pub const TIOCGSID: u32 = 0x5429;
/// `tcsendbreak`/`tcdrain`.
pub const TCSBRK: u32 = 0x5409;
/// `tcflow`.
pub const TCXONC: u32 = 0x540a;
/// `tcflush`.
pub const TCFLSH: u32 = 0x540b;

/// The longest line canonical mode keeps (Linux: 4095 and the newline).
pub const LINE_MAX: usize = 4095;
/// The most bytes waiting to be read.
pub const INPUT_MAX: usize = 4096;

/// A signal the terminal raises for its foreground process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtySignal {
    /// `VINTR`: `SIGINT` (2).
    Int,
    /// `VQUIT`: `SIGQUIT` (3).
    Quit,
    /// `VSUSP`: `SIGTSTP` (20).
    Tstp,
}

impl TtySignal {
    /// The Linux signal number.
    pub fn number(self) -> i32 {
        match self {
            TtySignal::Int => 2,
            TtySignal::Quit => 3,
            TtySignal::Tstp => 20,
        }
    }
}

/// What [`Tty::try_read`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStep {
    /// This many bytes were copied.
    Data(usize),
    /// End of file (^D on an empty line): the read returns 0.
    Eof,
    /// Not enough input yet: wait for more, at most this long (ns) if
    /// `Some` (then call again with `timed_out`).
    Wait(Option<u64>),
}

/// The terminal's state.
#[derive(Debug)]
pub struct Tty {
    /// Its settings (`TCGETS`/`TCSETS*`).
    pub termios: Termios,
    /// Its window size (`TIOCGWINSZ`/`TIOCSWINSZ`).
    pub winsize: Winsize,
    /// Its foreground process group (`TIOCGPGRP`/`TIOCSPGRP`).
    pub pgrp: i32,
    /// Canonical mode: the line being edited.
    line: Vec<u8>,
    /// Canonical mode: finished lines (an empty one is an end of file).
    lines: VecDeque<Vec<u8>>,
    /// Raw mode: bytes readable.
    raw: VecDeque<u8>,
    /// Bytes to echo, not yet written.
    echo: Vec<u8>,
    /// Signals raised and not yet handed to [`Process::tty_signal`].
    raised: Vec<TtySignal>,
}

impl Tty {
    /// A terminal with Linux's default settings, `winsize`, and foreground
    /// process group `pgrp`.
    pub fn new(winsize: Winsize, pgrp: i32) -> Self {
        Tty {
            termios: Termios::default_tty(),
            winsize,
            pgrp,
            line: Vec::new(),
            lines: VecDeque::new(),
            raw: VecDeque::new(),
            echo: Vec::new(),
            raised: Vec::new(),
        }
    }

    fn lflag(&self, bit: u32) -> bool {
        self.termios.lflag & bit != 0
    }

    fn iflag(&self, bit: u32) -> bool {
        self.termios.iflag & bit != 0
    }

    /// Whether `c` is control character `index` (0 is disabled).
    fn is(&self, c: u8, index: usize) -> bool {
        let v = self.termios.cc[index];
        v != 0 && v == c
    }

    fn waiting(&self) -> usize {
        self.raw.len() + self.lines.iter().map(Vec::len).sum::<usize>()
    }

    /// Takes one typed byte through the line discipline. Returns the signal
    /// it raised, if any (also kept for [`Tty::take_signals`]).
    pub fn receive(&mut self, byte: u8) -> Option<TtySignal> {
        let mut c = byte;
        if self.iflag(ISTRIP) {
            c &= 0x7f;
        }
        if c == b'\r' {
            if self.iflag(IGNCR) {
                return None;
            }
            if self.iflag(ICRNL) {
                c = b'\n';
            }
        } else if c == b'\n' && self.iflag(INLCR) {
            c = b'\r';
        }
        if self.lflag(ISIG) {
            let sig = if self.is(c, VINTR) {
                Some(TtySignal::Int)
            } else if self.is(c, VQUIT) {
                Some(TtySignal::Quit)
            } else if self.is(c, VSUSP) {
                Some(TtySignal::Tstp)
            } else {
                None
            };
            if let Some(sig) = sig {
                if !self.lflag(NOFLSH) {
                    self.flush_input();
                }
                if self.lflag(ECHO) {
                    self.echo_char(c);
                }
                self.raised.push(sig);
                return Some(sig);
            }
        }
        if !self.lflag(ICANON) {
            if self.waiting() < INPUT_MAX {
                self.raw.push_back(c);
                if self.lflag(ECHO) {
                    self.echo_char(c);
                }
            }
            return None;
        }
        if c == 8 || self.is(c, VERASE) {
            self.erase(1);
        } else if self.is(c, VKILL) {
            self.kill_line();
        } else if self.lflag(IEXTEN) && self.is(c, VWERASE) {
            self.erase_word();
        } else if self.is(c, VEOF) {
            // The line ends here, without the character; on an empty line
            // that is an end of file.
            self.finish_line();
        } else if c == b'\n' || self.is(c, VEOL) || self.is(c, VEOL2) {
            if self.line.len() <= LINE_MAX {
                self.line.push(c);
            }
            if self.lflag(ECHO) || c == b'\n' && self.lflag(ECHONL) {
                self.echo_char(c);
            }
            self.finish_line();
        } else if self.line.len() < LINE_MAX && self.waiting() + self.line.len() < INPUT_MAX {
            self.line.push(c);
            if self.lflag(ECHO) {
                self.echo_char(c);
            }
        }
        None
    }

    fn finish_line(&mut self) {
        let line = core::mem::take(&mut self.line);
        self.lines.push_back(line);
    }

    /// Forgets everything typed and not read (a signal, `TCFLSH`).
    pub fn flush_input(&mut self) {
        self.line.clear();
        self.lines.clear();
        self.raw.clear();
    }

    /// Echoes `c`: control characters as `^X` under `ECHOCTL` (but tab and
    /// newline).
    fn echo_char(&mut self, c: u8) {
        if is_ctl(c) && self.lflag(ECHOCTL) {
            self.echo.extend_from_slice(&[b'^', c ^ 0x40]);
        } else {
            self.echo.push(c);
        }
    }

    /// The columns `c` took when echoed.
    fn width(&self, c: u8) -> usize {
        if is_ctl(c) && self.lflag(ECHOCTL) { 2 } else { 1 }
    }

    /// Erases the last `n` characters of the line being edited.
    fn erase(&mut self, n: usize) {
        for _ in 0..n {
            let Some(c) = self.line.pop() else { return };
            if self.lflag(ECHO) {
                if self.lflag(ECHOE) {
                    for _ in 0..self.width(c) {
                        self.echo.extend_from_slice(b"\x08 \x08");
                    }
                } else {
                    let erase = self.termios.cc[VERASE];
                    self.echo_char(erase);
                }
            }
        }
    }

    fn kill_line(&mut self) {
        if self.lflag(ECHO) && !self.lflag(ECHOKE) && !self.lflag(ECHOE) {
            let kill = self.termios.cc[VKILL];
            self.echo_char(kill);
            if self.lflag(ECHOK) {
                self.echo.push(b'\n');
            }
            self.line.clear();
        } else {
            let n = self.line.len();
            self.erase(n);
        }
    }

    fn erase_word(&mut self) {
        let blanks = self.line.iter().rev().take_while(|c| c.is_ascii_whitespace()).count();
        let word = self.line[..self.line.len() - blanks]
            .iter()
            .rev()
            .take_while(|c| !c.is_ascii_whitespace())
            .count();
        self.erase(blanks + word);
    }

    /// The bytes to echo since the last call.
    pub fn take_echo(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.echo)
    }

    /// Whether a signal was raised and not yet handed on.
    pub fn has_raised(&self) -> bool {
        !self.raised.is_empty()
    }

    /// The signals raised since the last call.
    pub fn take_signals(&mut self) -> Vec<TtySignal> {
        core::mem::take(&mut self.raised)
    }

    /// Whether a `read` would return at once (data or end of file).
    pub fn readable(&self) -> bool {
        if self.lflag(ICANON) {
            !self.lines.is_empty() || !self.raw.is_empty()
        } else {
            !self.raw.is_empty() || !self.lines.is_empty() || self.termios.cc[VMIN] == 0
        }
    }

    /// Bytes a read could return now (`FIONREAD`).
    pub fn available(&self) -> usize {
        self.waiting()
    }

    /// One attempt at a `read` of `buf.len()` bytes with what has been
    /// received; `timed_out` once a [`ReadStep::Wait`] timeout has passed.
    pub fn try_read(&mut self, buf: &mut [u8], timed_out: bool) -> ReadStep {
        if buf.is_empty() {
            return ReadStep::Data(0);
        }
        // Bytes left raw by a switch to canonical mode come first.
        if !self.raw.is_empty() && (self.lflag(ICANON) || !self.lines.is_empty()) {
            if !self.lflag(ICANON) {
                self.unline();
            }
            if self.lflag(ICANON) {
                return ReadStep::Data(self.take_raw(buf));
            }
        }
        if self.lflag(ICANON) {
            let Some(mut line) = self.lines.pop_front() else { return ReadStep::Wait(None) };
            if line.is_empty() {
                return ReadStep::Eof;
            }
            let n = buf.len().min(line.len());
            buf[..n].copy_from_slice(&line[..n]);
            if n < line.len() {
                line.drain(..n);
                self.lines.push_front(line);
            }
            return ReadStep::Data(n);
        }
        self.unline();
        let (vmin, vtime) = (usize::from(self.termios.cc[VMIN]), self.termios.cc[VTIME]);
        let timeout = u64::from(vtime) * 100_000_000;
        let have = self.raw.len();
        let enough = have >= vmin.min(buf.len()).max(1);
        match (vmin, vtime) {
            (0, 0) => ReadStep::Data(self.take_raw(buf)),
            (0, _) if have > 0 || timed_out => ReadStep::Data(self.take_raw(buf)),
            (0, _) => ReadStep::Wait(Some(timeout)),
            _ if enough || have > 0 && timed_out && vtime > 0 => ReadStep::Data(self.take_raw(buf)),
            (_, 0) => ReadStep::Wait(None),
            _ => ReadStep::Wait(if have > 0 { Some(timeout) } else { None }),
        }
    }

    /// Raw mode: finished lines (left by canonical mode) become raw bytes.
    fn unline(&mut self) {
        let mut front: VecDeque<u8> = self.lines.drain(..).flatten().collect();
        front.append(&mut self.raw);
        self.raw = front;
    }

    fn take_raw(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.raw.len());
        for (slot, b) in buf.iter_mut().zip(self.raw.drain(..n)) {
            *slot = b;
        }
        n
    }

    /// `data` as the terminal shows it: newline as CR-LF under
    /// `OPOST | ONLCR`.
    pub fn output(&self, data: &[u8]) -> Vec<u8> {
        let o = self.termios.oflag;
        if o & OPOST == 0 || o & ONLCR == 0 {
            return data.to_vec();
        }
        let mut out = Vec::with_capacity(data.len() + data.len() / 16);
        for &b in data {
            if b == b'\n' {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    }

    /// `TCSETS*`: new settings. Leaving canonical mode makes the line being
    /// edited readable as it is (Linux does the same).
    pub fn set_termios(&mut self, t: Termios) {
        let was_canon = self.lflag(ICANON);
        self.termios = t;
        if was_canon && !self.lflag(ICANON) && !self.line.is_empty() {
            let line = core::mem::take(&mut self.line);
            self.raw.extend(line);
        }
    }
}

/// ASCII control characters echoed as `^X` (all but tab and newline).
fn is_ctl(c: u8) -> bool {
    (c < 0x20 && c != b'\t' && c != b'\n') || c == 0x7f
}

/// `struct termios` from the 36 bytes `TCSETS` reads.
pub fn decode_termios(b: &[u8; Termios::SIZE]) -> Termios {
    let word = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut cc = [0u8; 19];
    cc.copy_from_slice(&b[17..36]);
    Termios { iflag: word(0), oflag: word(4), cflag: word(8), lflag: word(12), line: b[16], cc }
}

/// A `read` of the terminal: through the line discipline when the console
/// is a keyboard (blocking for input as the settings say), else the
/// console's own read.
pub fn read(tty: &mut Tty, console: &mut dyn Console, buf: &mut [u8]) -> SysResult<usize> {
    if !console.is_terminal() {
        return console.read(buf);
    }
    let mut timed_out = false;
    loop {
        match tty.try_read(buf, timed_out) {
            ReadStep::Data(n) => return Ok(n),
            ReadStep::Eof => return Ok(0),
            ReadStep::Wait(timeout) => {
                if !tty.raised.is_empty() {
                    // A signal character came: the read is interrupted
                    // (the caller hands the signal on).
                    return Err(EINTR);
                }
                // Raw mode takes no more than asked for, so that what is
                // typed ahead meets the settings in force when it is read.
                let limit = if tty.lflag(ICANON) { usize::MAX } else { buf.len() };
                match pull(tty, console, timeout, limit)? {
                    Pulled::Bytes => {}
                    Pulled::TimedOut => timed_out = true,
                    Pulled::End => return Ok(0),
                }
                if !tty.raised.is_empty() {
                    return Err(EINTR);
                }
            }
        }
    }
}

enum Pulled {
    Bytes,
    TimedOut,
    End,
}

/// Takes raw input from the console (blocking up to `timeout` ns, forever
/// if `None`) through the line discipline, and writes the echo.
fn pull(
    tty: &mut Tty,
    console: &mut dyn Console,
    timeout: Option<u64>,
    limit: usize,
) -> SysResult<Pulled> {
    let mut raw = [0u8; 64];
    let want = limit.clamp(1, raw.len());
    let n = console.read_input(&mut raw[..want], timeout)?;
    if n == 0 {
        return Ok(if timeout.is_some() { Pulled::TimedOut } else { Pulled::End });
    }
    for &b in &raw[..n] {
        tty.receive(b);
    }
    let echo = tty.take_echo();
    if !echo.is_empty() {
        let shown = tty.output(&echo);
        console.write(&shown);
    }
    Ok(Pulled::Bytes)
}

/// A `write` to the terminal (output processing when it is a keyboard's
/// screen). Returns the bytes of `data` taken.
pub fn write(tty: &Tty, console: &mut dyn Console, data: &[u8], err: bool) -> usize {
    if !console.is_terminal() {
        return if err { console.write_err(data) } else { console.write(data) };
    }
    let shown = tty.output(data);
    if err {
        console.write_err(&shown);
    } else {
        console.write(&shown);
    }
    data.len()
}

/// Whether a read of the terminal would not block now (input pulled
/// without waiting first).
pub fn poll_readable(tty: &mut Tty, console: &mut dyn Console) -> SysResult<bool> {
    if !console.is_terminal() {
        return Ok(true);
    }
    // Whatever has been typed, until a read would return (bounded: each
    // round takes a byte or ends it, and the input queue is bounded).
    let limit = if tty.lflag(ICANON) { usize::MAX } else { 1 };
    for _ in 0..=INPUT_MAX {
        if tty.readable() || tty.has_raised() {
            break;
        }
        if !matches!(pull(tty, console, Some(0), limit)?, Pulled::Bytes) {
            break;
        }
    }
    Ok(tty.readable() || tty.has_raised())
}

/// What [`wait_input`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// Input came.
    Input,
    /// The time was up first.
    TimedOut,
    /// The input has ended (a read returns 0 from now on).
    Ended,
}

/// Waits up to `timeout` ns (forever: `None`) for terminal input.
pub fn wait_input(
    tty: &mut Tty,
    console: &mut dyn Console,
    timeout: Option<u64>,
) -> SysResult<Waited> {
    if !console.is_terminal() {
        return Ok(Waited::Ended);
    }
    Ok(match pull(tty, console, timeout, 1)? {
        Pulled::Bytes => Waited::Input,
        Pulled::TimedOut => Waited::TimedOut,
        Pulled::End => Waited::Ended,
    })
}

// ---- the calls ----

/// `ioctl` on a terminal descriptor.
pub fn ioctl(
    p: &mut Process<'_>,
    req: u32,
    arg: u64,
    mem: &mut dyn crate::host::UserMemory,
) -> SysResult<u64> {
    use crate::linux::*;
    let write_i32 =
        |mem: &mut dyn crate::host::UserMemory, v: i32| mem.write(arg, &v.to_le_bytes()).map(|_| 0);
    match req {
        TCGETS => mem.write(arg, &p.fs.tty.termios.encode()).map(|_| 0),
        TCSETS | TCSETSW | TCSETSF => {
            let mut b = [0u8; Termios::SIZE];
            mem.read(arg, &mut b)?;
            if req == TCSETSF {
                p.fs.tty.flush_input();
            }
            p.fs.tty.set_termios(decode_termios(&b));
            Ok(0)
        }
        TIOCGWINSZ => mem.write(arg, &p.fs.tty.winsize.encode()).map(|_| 0),
        TIOCSWINSZ => {
            let mut b = [0u8; Winsize::SIZE];
            mem.read(arg, &mut b)?;
            p.fs.tty.winsize = Winsize {
                rows: u16::from_le_bytes([b[0], b[1]]),
                cols: u16::from_le_bytes([b[2], b[3]]),
            };
            Ok(0)
        }
        TIOCGPGRP => {
            let pgrp = p.foreground_pgrp();
            write_i32(mem, pgrp)
        }
        TIOCSPGRP => {
            let mut b = [0u8; 4];
            mem.read(arg, &mut b)?;
            let pgrp = i32::from_le_bytes(b);
            if pgrp <= 0 {
                return Err(EINVAL);
            }
            p.fs.tty.pgrp = pgrp;
            if let Some(h) = p.procs.as_mut() {
                h.set_foreground(pgrp);
            }
            Ok(0)
        }
        TIOCGSID => write_i32(mem, p.session()),
        FIONREAD => {
            let (tty, console) = p.fs.tty_parts();
            poll_readable(tty, console)?;
            write_i32(mem, tty.available() as i32)
        }
        TIOCOUTQ => write_i32(mem, 0),
        // Already our controlling terminal; giving it up is not modelled.
        TIOCSCTTY | TIOCNOTTY | TCSBRK | TCXONC => Ok(0),
        TCFLSH => {
            // 0: input, 1: output, 2: both; output is never queued.
            if arg > 2 {
                return Err(EINVAL);
            }
            if arg != 1 {
                p.fs.tty.flush_input();
            }
            Ok(0)
        }
        _ => Err(ENOTTY),
    }
}

/// `poll(2)` events.
pub const POLLIN: u16 = 0x1;
/// Urgent data.
pub const POLLPRI: u16 = 0x2;
/// Writable.
pub const POLLOUT: u16 = 0x4;
/// Bad descriptor.
pub const POLLNVAL: u16 = 0x20;
/// Normal data readable.
pub const POLLRDNORM: u16 = 0x40;
/// Normal data writable.
pub const POLLWRNORM: u16 = 0x100;
/// The most descriptors one `poll` takes (Linux: `RLIMIT_NOFILE`).
pub const POLL_MAX: u64 = 1024;

/// `poll`/`ppoll` over `nfds` `struct pollfd` at `fds`, waiting up to
/// `timeout_ns` (`None`: forever). Regular files and devices but the
/// terminal are always ready; the terminal is readable when a `read` would
/// not block. Only the terminal can make it wait; with nothing to wait for
/// it sleeps out the timeout. (Pipes bring their own readiness.)
pub fn poll(
    p: &mut Process<'_>,
    fds: u64,
    nfds: u64,
    timeout_ns: Option<u64>,
    mem: &mut dyn crate::host::UserMemory,
) -> SysResult<u64> {
    if nfds > POLL_MAX {
        return Err(EINVAL);
    }
    let mut raw = alloc::vec![0u8; nfds as usize * 8];
    mem.read(fds, &mut raw)?;
    let start = p.clock_now_ns();
    let deadline = timeout_ns.map(|t| start.saturating_add(t));
    // Set once waiting for the terminal ended without input: the time is
    // up, or its input ended (then it reads as readable: end of file).
    let mut timed_out = false;
    let mut ended = false;
    loop {
        let mut ready = 0u64;
        let mut tty_wanted = false;
        for entry in raw.chunks_mut(8) {
            let fd = i32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let events = u16::from_le_bytes([entry[4], entry[5]]);
            let mut revents = 0u16;
            if fd >= 0 {
                match p.desc(fd) {
                    Err(_) => revents = POLLNVAL,
                    Ok(d) => {
                        let ino = d.borrow().ino;
                        let is_tty = p.fs.device(ino).is_some_and(crate::fs::Device::is_tty);
                        let readable = if is_tty && !ended {
                            let (tty, console) = p.fs.tty_parts();
                            poll_readable(tty, console)?
                        } else {
                            true
                        };
                        if readable {
                            revents |= events & (POLLIN | POLLRDNORM);
                        } else if events & (POLLIN | POLLRDNORM) != 0 {
                            tty_wanted = true;
                        }
                        revents |= events & (POLLOUT | POLLWRNORM);
                    }
                }
            }
            entry[6..8].copy_from_slice(&revents.to_le_bytes());
            if revents != 0 {
                ready += 1;
            }
        }
        let now = p.clock_now_ns();
        let left = deadline.map(|d| d.saturating_sub(now));
        if ready > 0 || left == Some(0) || timed_out {
            mem.write(fds, &raw)?;
            return Ok(ready);
        }
        if tty_wanted {
            let (tty, console) = p.fs.tty_parts();
            match wait_input(tty, console, left)? {
                Waited::Input => {}
                Waited::TimedOut => timed_out = true,
                Waited::Ended => ended = true,
            }
        } else if let Some(d) = deadline {
            p.sleep_until_ns(d);
        } else {
            // Nothing can ever become ready: Linux would sleep forever.
            p.sleep_until_ns(u64::MAX);
        }
        if p.fs.tty.has_raised() {
            return Err(EINTR);
        }
    }
}

impl Process<'_> {
    /// A terminal signal (^C, ^\, ^Z) for its foreground process group
    /// `pgrp`: `kill(-pgrp, sig)` (this process if it is in the group, and
    /// its children in it).
    pub fn tty_signal(&mut self, pgrp: i32, sig: TtySignal) {
        if pgrp > 0 {
            let _ = self.kill_group(-pgrp, sig.number() as u64);
        }
    }

    /// Hands the terminal's raised signals to [`Process::tty_signal`].
    pub fn deliver_tty_signals(&mut self) {
        if !self.fs.tty.has_raised() {
            return;
        }
        let pgrp = self.foreground_pgrp();
        for sig in self.fs.tty.take_signals() {
            self.tty_signal(pgrp, sig);
        }
    }
}

#[cfg(test)]
mod tests;
