//! The line discipline against what Linux's `n_tty` does for the same
//! keystrokes.

use super::*;
use crate::host::Console;
use alloc::vec;
use std::collections::VecDeque as Q;

fn tty() -> Tty {
    Tty::new(Winsize { rows: 24, cols: 80 }, 1)
}

fn feed(t: &mut Tty, bytes: &[u8]) -> Vec<TtySignal> {
    bytes.iter().filter_map(|&b| t.receive(b)).collect()
}

fn read_all(t: &mut Tty) -> Vec<u8> {
    let mut buf = [0u8; 256];
    match t.try_read(&mut buf, false) {
        ReadStep::Data(n) => buf[..n].to_vec(),
        other => panic!("expected data, got {other:?}"),
    }
}

#[test]
fn canonical_line_with_echo_and_crlf() {
    let mut t = tty();
    feed(&mut t, b"echo hi");
    assert!(!t.readable(), "no line before the newline");
    assert_eq!(t.try_read(&mut [0u8; 8], false), ReadStep::Wait(None));
    feed(&mut t, b"\r");
    assert_eq!(read_all(&mut t), b"echo hi\n");
    // The echo, and the newline shown as CR-LF by output processing.
    let echo = t.take_echo();
    assert_eq!(echo, b"echo hi\n");
    assert_eq!(t.output(&echo), b"echo hi\r\n");
}

#[test]
fn erase_kill_and_word_erase() {
    let mut t = tty();
    feed(&mut t, b"ecx\x7fho hx\x08i\n");
    assert_eq!(read_all(&mut t), b"echo hi\n");
    let echo = t.take_echo();
    assert_eq!(echo, b"ecx\x08 \x08ho hx\x08 \x08i\n");
    feed(&mut t, b"garbage\x15ok\n");
    assert_eq!(read_all(&mut t), b"ok\n");
    feed(&mut t, b"one two  \x17three\n");
    assert_eq!(read_all(&mut t), b"one three\n");
    // Erasing past the start does nothing (and echoes nothing).
    t.take_echo();
    feed(&mut t, b"\x7f\x7f");
    assert!(t.take_echo().is_empty());
    // A control character echoed as ^A takes two columns to erase.
    feed(&mut t, b"\x01\x7f\n");
    assert_eq!(t.take_echo(), b"^A\x08 \x08\x08 \x08\n");
    assert_eq!(read_all(&mut t), b"\n");
}

#[test]
fn eof_at_line_start_and_mid_line() {
    let mut t = tty();
    feed(&mut t, b"\x04");
    assert_eq!(t.try_read(&mut [0u8; 8], false), ReadStep::Eof);
    // ^D in the middle of a line ends the line without a newline.
    feed(&mut t, b"abc\x04");
    assert_eq!(read_all(&mut t), b"abc");
    // And ^D is never echoed.
    assert_eq!(t.take_echo(), b"abc");
}

#[test]
fn reads_take_one_line_at_most_and_resume() {
    let mut t = tty();
    feed(&mut t, b"first line\nsecond\n");
    let mut small = [0u8; 4];
    assert_eq!(t.try_read(&mut small, false), ReadStep::Data(4));
    assert_eq!(&small, b"firs");
    assert_eq!(read_all(&mut t), b"t line\n");
    assert_eq!(read_all(&mut t), b"second\n");
}

#[test]
fn signal_characters_flush_and_raise() {
    let mut t = tty();
    assert_eq!(feed(&mut t, b"half a line\x03"), vec![TtySignal::Int]);
    assert!(!t.readable());
    assert!(t.take_echo().ends_with(b"^C"));
    assert_eq!(t.take_signals(), vec![TtySignal::Int]);
    assert_eq!(feed(&mut t, b"\x1c\x1a"), vec![TtySignal::Quit, TtySignal::Tstp]);
    assert_eq!(TtySignal::Quit.number(), 3);
    assert_eq!(TtySignal::Tstp.number(), 20);
    // Without ISIG they are plain characters.
    t.termios.lflag &= !ISIG;
    t.take_signals();
    assert!(feed(&mut t, b"\x03\n").is_empty());
    assert_eq!(read_all(&mut t), b"\x03\n");
    // NOFLSH keeps the line.
    t.termios.lflag |= ISIG | NOFLSH;
    feed(&mut t, b"keep\x03\n");
    assert_eq!(read_all(&mut t), b"keep\n");
}

#[test]
fn raw_mode_vmin_vtime() {
    let mut t = tty();
    let mut raw = t.termios;
    raw.lflag &= !(ICANON | ECHO);
    raw.cc[VMIN] = 1;
    raw.cc[VTIME] = 0;
    t.set_termios(raw);
    assert_eq!(t.try_read(&mut [0u8; 8], false), ReadStep::Wait(None));
    feed(&mut t, b"\x7fa\x04");
    // Every byte as typed (CR still mapped by ICRNL), nothing echoed.
    assert_eq!(read_all(&mut t), b"\x7fa\x04");
    assert!(t.take_echo().is_empty());
    feed(&mut t, b"\r");
    assert_eq!(read_all(&mut t), b"\n");
    // VMIN 3: waits for three.
    raw.cc[VMIN] = 3;
    t.set_termios(raw);
    feed(&mut t, b"ab");
    assert_eq!(t.try_read(&mut [0u8; 8], false), ReadStep::Wait(None));
    feed(&mut t, b"c");
    assert_eq!(read_all(&mut t), b"abc");
    // VMIN 0, VTIME 5: a timed read.
    raw.cc[VMIN] = 0;
    raw.cc[VTIME] = 5;
    t.set_termios(raw);
    assert_eq!(t.try_read(&mut [0u8; 8], false), ReadStep::Wait(Some(500_000_000)));
    assert_eq!(t.try_read(&mut [0u8; 8], true), ReadStep::Data(0));
    // VMIN 0, VTIME 0: polling.
    raw.cc[VTIME] = 0;
    t.set_termios(raw);
    assert_eq!(t.try_read(&mut [0u8; 8], false), ReadStep::Data(0));
    assert!(t.readable());
}

#[test]
fn mode_switches_keep_typed_input() {
    let mut t = tty();
    feed(&mut t, b"done\npart");
    let mut raw = t.termios;
    raw.lflag &= !ICANON;
    raw.cc[VMIN] = 1;
    t.set_termios(raw);
    assert_eq!(read_all(&mut t), b"done\npart");
    feed(&mut t, b"xy");
    t.set_termios(Termios::default_tty());
    assert_eq!(read_all(&mut t), b"xy");
}

#[test]
fn bounded_line_and_input() {
    let mut t = tty();
    feed(&mut t, &vec![b'a'; LINE_MAX + 100]);
    feed(&mut t, b"\n");
    let mut buf = vec![0u8; 8192];
    let ReadStep::Data(n) = t.try_read(&mut buf, false) else { panic!() };
    assert_eq!(n, LINE_MAX + 1);
    assert_eq!(buf[n - 1], b'\n');
    let mut raw = t.termios;
    raw.lflag &= !(ICANON | ECHO);
    t.set_termios(raw);
    feed(&mut t, &vec![b'b'; INPUT_MAX * 2]);
    assert_eq!(t.available(), INPUT_MAX);
}

#[test]
fn termios_round_trip() {
    let t = Termios::default_tty();
    assert_eq!(decode_termios(&t.encode()), t);
}

/// A keyboard that delivers scripted bursts of bytes.
struct Keyboard {
    bursts: Q<Vec<u8>>,
    shown: Vec<u8>,
}

impl Console for Keyboard {
    fn write(&mut self, data: &[u8]) -> usize {
        self.shown.extend_from_slice(data);
        data.len()
    }
    fn read(&mut self, _buf: &mut [u8]) -> SysResult<usize> {
        unreachable!("a terminal's reads go through read_input")
    }
    fn is_terminal(&self) -> bool {
        true
    }
    fn read_input(&mut self, buf: &mut [u8], timeout: Option<u64>) -> SysResult<usize> {
        match self.bursts.pop_front() {
            Some(b) => {
                buf[..b.len()].copy_from_slice(&b);
                Ok(b.len())
            }
            None if timeout.is_some() => Ok(0),
            None => Ok(0),
        }
    }
}

#[test]
fn blocking_read_pulls_bursts_and_echoes() {
    let mut t = tty();
    let mut k = Keyboard {
        bursts: Q::from(vec![b"ec".to_vec(), b"ho\x7f\x7fho".to_vec(), b" x\r".to_vec()]),
        shown: Vec::new(),
    };
    let mut buf = [0u8; 64];
    let n = read(&mut t, &mut k, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"echo x\n");
    assert_eq!(k.shown, b"echo\x08 \x08\x08 \x08ho x\r\n");
    // End of input: a read returns 0.
    assert_eq!(read(&mut t, &mut k, &mut buf), Ok(0));
    // ^C while blocked: EINTR, and the signal is waiting for the hook.
    k.bursts.push_back(b"ab\x03".to_vec());
    assert_eq!(read(&mut t, &mut k, &mut buf), Err(EINTR));
    assert_eq!(t.take_signals(), vec![TtySignal::Int]);
}

#[test]
fn not_a_terminal_passes_through() {
    struct Pipe;
    impl Console for Pipe {
        fn write(&mut self, data: &[u8]) -> usize {
            assert_eq!(data, b"a\nb");
            data.len()
        }
        fn read(&mut self, _buf: &mut [u8]) -> SysResult<usize> {
            Ok(0)
        }
    }
    let mut t = tty();
    assert_eq!(read(&mut t, &mut Pipe, &mut [0u8; 4]), Ok(0));
    assert_eq!(write(&t, &mut Pipe, b"a\nb", false), 3);
}
