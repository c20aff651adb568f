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

// ---- through the dispatcher, with a process whose console is a terminal ----

mod calls {
    use super::super::*;
    use crate::fs::Fs;
    use crate::linux::sysno::*;
    use crate::mm::Layout;
    use crate::mock::*;
    use alloc::boxed::Box;
    use alloc::rc::Rc;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    const SCRATCH: u64 = 0x7000_0000;

    /// A keyboard shared between the test and the process.
    #[derive(Clone, Default)]
    struct Kbd {
        bursts: Rc<RefCell<std::collections::VecDeque<Vec<u8>>>>,
        shown: Rc<RefCell<Vec<u8>>>,
    }

    impl Console for Kbd {
        fn write(&mut self, data: &[u8]) -> usize {
            self.shown.borrow_mut().extend_from_slice(data);
            data.len()
        }
        fn read(&mut self, _buf: &mut [u8]) -> SysResult<usize> {
            Ok(0)
        }
        fn is_terminal(&self) -> bool {
            true
        }
        fn read_input(&mut self, buf: &mut [u8], _timeout: Option<u64>) -> SysResult<usize> {
            let mut q = self.bursts.borrow_mut();
            let Some(mut b) = q.pop_front() else { return Ok(0) };
            let n = b.len().min(buf.len());
            buf[..n].copy_from_slice(&b[..n]);
            if n < b.len() {
                b.drain(..n);
                q.push_front(b);
            }
            Ok(n)
        }
    }

    struct P {
        p: Process<'static>,
        mem: Shared,
        kbd: Kbd,
        #[allow(dead_code)] // kept alive beside the process that uses it
        host: MockHost,
    }

    impl P {
        fn new() -> P {
            let kbd = Kbd::default();
            let fs = Fs::new(Box::new(kbd.clone()));
            let mem = Shared::default();
            mem.0.borrow_mut().ensure(SCRATCH, 0x10000);
            let host = MockHost::default();
            let layout = Layout {
                min_addr: 0x10000,
                user_end: 0x8000_0000_0000,
                brk_start: 0x60_0000,
                brk_limit: 0x4000_0000,
                mmap_lo: 0x10_0000_0000,
                mmap_hi: 0x7f00_0000_0000,
            };
            let p = Process::new(
                fs,
                layout,
                1,
                Box::new(mem.clone()),
                Box::new(MockClock::default()),
                Box::new(host.clone()),
            );
            P { p, mem, kbd, host }
        }
        fn sys(&mut self, nr: u64, args: &[u64]) -> i64 {
            let mut a = [0u64; 6];
            a[..args.len()].copy_from_slice(args);
            let mut m = self.mem.clone();
            crate::syscalls::dispatch(&mut self.p, nr, a, &mut m)
        }
        fn type_keys(&self, keys: &[u8]) {
            self.kbd.bursts.borrow_mut().push_back(keys.to_vec());
        }
        fn get(&self, addr: u64, n: usize) -> Vec<u8> {
            self.mem.0.borrow().get(addr, n)
        }
    }

    fn e(x: crate::linux::Errno) -> i64 {
        -(x.0 as i64)
    }

    #[test]
    fn read_write_through_the_line_discipline() {
        let mut t = P::new();
        t.mem.0.borrow_mut().put(SCRATCH, b"a\nb");
        assert_eq!(t.sys(SYS_WRITE, &[1, SCRATCH, 3]), 3);
        assert_eq!(&*t.kbd.shown.borrow(), b"a\r\nb");
        t.type_keys(b"lx\x7fs -l\r");
        let buf = SCRATCH + 0x100;
        assert_eq!(t.sys(SYS_READ, &[0, buf, 64]), 6);
        assert_eq!(t.get(buf, 6), b"ls -l\n");
        // ^C in a blocked read: EINTR, and SIGINT for the foreground group
        // (this process leads it).
        t.type_keys(b"x\x03");
        assert_eq!(t.sys(SYS_READ, &[0, buf, 64]), e(EINTR));
        assert_ne!(t.p.signals.pending() & (1 << (2 - 1)), 0, "SIGINT pending");
        // ^D at the start of a line: end of file.
        t.type_keys(b"\x04");
        assert_eq!(t.sys(SYS_READ, &[0, buf, 64]), 0);
    }

    #[test]
    fn termios_pgrp_winsize_ioctls() {
        let mut t = P::new();
        let tio = SCRATCH;
        assert_eq!(t.sys(SYS_IOCTL, &[0, u64::from(crate::linux::TCGETS), tio]), 0);
        let mut raw = decode_termios(&t.get(tio, 36).try_into().unwrap());
        assert_eq!(raw, Termios::default_tty());
        raw.lflag &= !(ICANON | ECHO);
        raw.cc[VMIN] = 1;
        t.mem.0.borrow_mut().put(tio, &raw.encode());
        assert_eq!(t.sys(SYS_IOCTL, &[0, u64::from(crate::linux::TCSETSW), tio]), 0);
        assert_eq!(t.p.fs.tty.termios, raw);
        // Raw now: one key is readable at once, not echoed.
        t.type_keys(b"q");
        assert_eq!(t.sys(SYS_READ, &[0, SCRATCH + 0x100, 1]), 1);
        assert!(t.kbd.shown.borrow().is_empty());
        // Foreground process group.
        t.mem.0.borrow_mut().put(SCRATCH + 0x200, &7i32.to_le_bytes());
        assert_eq!(t.sys(SYS_IOCTL, &[0, u64::from(TIOCSPGRP), SCRATCH + 0x200]), 0);
        assert_eq!(t.sys(SYS_IOCTL, &[2, u64::from(crate::linux::TIOCGPGRP), SCRATCH + 0x300]), 0);
        assert_eq!(t.get(SCRATCH + 0x300, 4), 7i32.to_le_bytes());
        t.mem.0.borrow_mut().put(SCRATCH + 0x200, &0i32.to_le_bytes());
        assert_eq!(t.sys(SYS_IOCTL, &[0, u64::from(TIOCSPGRP), SCRATCH + 0x200]), e(EINVAL));
        // Window size round trip.
        t.mem.0.borrow_mut().put(SCRATCH + 0x400, &[50, 0, 132, 0, 0, 0, 0, 0]);
        assert_eq!(t.sys(SYS_IOCTL, &[1, u64::from(crate::linux::TIOCSWINSZ), SCRATCH + 0x400]), 0);
        assert_eq!(t.sys(SYS_IOCTL, &[1, u64::from(crate::linux::TIOCGWINSZ), SCRATCH + 0x500]), 0);
        assert_eq!(t.get(SCRATCH + 0x500, 4), [50, 0, 132, 0]);
        // A bad pointer is EFAULT, an unknown request ENOTTY.
        assert_eq!(t.sys(SYS_IOCTL, &[0, u64::from(crate::linux::TCGETS), 8]), e(EFAULT));
        assert_eq!(t.sys(SYS_IOCTL, &[0, 0x5499, SCRATCH]), e(ENOTTY));
        assert_eq!(t.sys(SYS_IOCTL, &[0, u64::from(TCFLSH), 3]), e(EINVAL));
    }

    #[test]
    fn poll_on_the_terminal() {
        let mut t = P::new();
        let pfd = |fd: i32, events: u16| {
            let mut b = vec![0u8; 8];
            b[..4].copy_from_slice(&fd.to_le_bytes());
            b[4..6].copy_from_slice(&events.to_le_bytes());
            b
        };
        let mut two = pfd(0, POLLIN);
        two.extend(pfd(99, POLLIN));
        t.mem.0.borrow_mut().put(SCRATCH, &two);
        // Nothing typed: the bad descriptor alone is ready (POLLNVAL).
        assert_eq!(t.sys(SYS_POLL, &[SCRATCH, 2, 0]), 1);
        assert_eq!(t.get(SCRATCH + 6, 2), [0, 0]);
        assert_eq!(t.get(SCRATCH + 14, 2), POLLNVAL.to_le_bytes());
        // A line typed: readable.
        t.mem.0.borrow_mut().put(SCRATCH, &pfd(0, POLLIN | POLLOUT));
        t.type_keys(b"hi\r");
        assert_eq!(t.sys(SYS_POLL, &[SCRATCH, 1, 1000]), 1);
        assert_eq!(t.get(SCRATCH + 6, 2), (POLLIN | POLLOUT).to_le_bytes());
        // Nothing more: a timed poll times out with 0.
        let mut buf = [0u8; 8];
        assert_eq!(t.p.fs.tty.try_read(&mut buf, false), ReadStep::Data(3));
        t.mem.0.borrow_mut().put(SCRATCH, &pfd(0, POLLIN));
        assert_eq!(t.sys(SYS_POLL, &[SCRATCH, 1, 5]), 0);
        assert_eq!(t.sys(SYS_POLL, &[SCRATCH, POLL_MAX + 1, 0]), e(EINVAL));
    }

    #[test]
    fn a_lone_process_leads_its_group_and_session() {
        let mut t = P::new();
        assert_eq!(t.sys(SYS_GETPGRP, &[]), 1);
        assert_eq!(t.sys(SYS_GETPGID, &[0]), 1);
        assert_eq!(t.sys(SYS_GETPGID, &[5]), e(ESRCH));
        assert_eq!(t.sys(SYS_GETSID, &[1]), 1);
        // The first process leads its session: it cannot move (Linux's
        // `setpgid` refuses a session leader).
        assert_eq!(t.sys(SYS_SETPGID, &[0, 0]), e(EPERM));
        assert_eq!(t.sys(SYS_SETPGID, &[0, 9]), e(EPERM));
        assert_eq!(t.sys(SYS_SETPGID, &[0, u64::MAX]), e(EINVAL));
        assert_eq!(t.sys(SYS_SETSID, &[]), e(EPERM));
        // tcgetpgrp() == getpgrp(): an interactive shell's job control
        // starts without signalling itself.
        assert_eq!(t.sys(SYS_IOCTL, &[0, u64::from(crate::linux::TIOCGPGRP), SCRATCH]), 0);
        assert_eq!(t.get(SCRATCH, 4), 1i32.to_le_bytes());
    }
}
