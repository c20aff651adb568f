use super::ring::{self, Frame, Moved, Side, Stop, Word};
use super::*;
use crate::fs::Fs;
use crate::linux::sysno::*;
use crate::mm::Layout;
use crate::mock::*;
use crate::syscalls::dispatch;
use proptest::prelude::*;
use std::sync::Arc;

/// A frame that checks every copy stays inside the data area (the ring's
/// promise) and counts the copies.
struct Checked(HeapFrame);

impl Frame for Checked {
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
    fn load(&self, w: Word) -> u64 {
        self.0.load(w)
    }
    fn store(&self, w: Word, v: u64) {
        self.0.store(w, v)
    }
    fn swap(&self, w: Word, v: u64) -> u64 {
        self.0.swap(w, v)
    }
    fn fetch_add(&self, w: Word, d: u64) -> u64 {
        self.0.fetch_add(w, d)
    }
    fn compare_exchange(&self, w: Word, old: u64, new: u64) -> bool {
        self.0.compare_exchange(w, old, new)
    }
    fn copy_out(&self, off: usize, buf: &mut [u8]) {
        assert!(off + buf.len() <= self.capacity(), "copy out of bounds: {off}+{}", buf.len());
        self.0.copy_out(off, buf)
    }
    fn copy_in(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.capacity(), "copy out of bounds: {off}+{}", data.len());
        self.0.copy_in(off, data)
    }
    fn word_addr(&self, w: Word) -> u64 {
        self.0.word_addr(w)
    }
}

fn frame(cap: usize) -> Checked {
    let f = Checked(HeapFrame::new(cap));
    ring::init(&f);
    f
}

fn rd(f: &dyn Frame, max: usize) -> Result<(Vec<u8>, Option<Side>), Stop> {
    let mut scratch = vec![0u8; max.max(1)];
    let mut got = Vec::new();
    let m = ring::read(f, max, &mut scratch, &mut |b| {
        got.extend_from_slice(b);
        true
    })?;
    assert_eq!(m.n, got.len());
    Ok((got, m.wake))
}

#[test]
fn fifo_wrap_and_capacity() {
    let f = frame(16);
    assert_eq!(ring::write(&f, b"0123456789", false), Ok(Moved { n: 10, wake: None }));
    assert_eq!(rd(&f, 4).unwrap().0, b"0123");
    // 6 used, 10 free: a non-atomic write takes what fits, wrapping.
    assert_eq!(ring::write(&f, b"abcdefghijklmnop", false).unwrap().n, 10);
    assert!(matches!(ring::write(&f, b"x", false), Err(Stop::Block(_))));
    assert_eq!(rd(&f, 100).unwrap().0, b"456789abcdefghij");
    // Empty: the reader announces itself; the next write says to wake it.
    let Err(Stop::Block(w)) = rd(&f, 1) else { panic!() };
    assert_eq!(w.conds[0], ring::Cond { word: Word::Head, ne: true, value: 20 });
    assert_eq!(f.load(Word::ReaderWaiting), 1);
    assert_eq!(ring::write(&f, b"z", true), Ok(Moved { n: 1, wake: Some(Side::Readers) }));
    assert_eq!(f.load(Word::ReaderWaiting), 0);
}

#[test]
fn atomic_writes_are_all_or_nothing() {
    let f = frame(16);
    ring::write(&f, &[1; 10], true).unwrap();
    assert!(matches!(ring::write(&f, &[2; 7], true), Err(Stop::Block(_))));
    assert_eq!(f.load(Word::WriterWaiting), 1);
    assert_eq!(ring::write(&f, &[2; 6], true).unwrap().n, 6);
    let (_, wake) = rd(&f, 1).unwrap();
    assert_eq!(wake, Some(Side::Writers), "the writer that announced itself is woken");
}

#[test]
fn eof_and_broken() {
    let f = frame(16);
    ring::write(&f, b"ab", false).unwrap();
    assert_eq!(ring::close_end(&f, Side::Writers), Some(Side::Readers));
    assert_eq!(rd(&f, 10).unwrap().0, b"ab", "data before end of file is kept");
    assert_eq!(rd(&f, 10), Err(Stop::Eof));
    let g = frame(16);
    ring::close_end(&g, Side::Readers);
    assert_eq!(ring::write(&g, b"x", true), Err(Stop::Broken));
}

#[test]
fn corrupt_indices_are_refused() {
    let f = frame(16);
    f.store(Word::Head, 17);
    assert_eq!(rd(&f, 10), Err(Stop::Corrupt));
    assert_eq!(ring::write(&f, b"x", false), Err(Stop::Corrupt));
    assert!(ring::readiness(&f, Side::Readers, false).corrupt);
    // Locks are released whatever happened.
    assert_eq!(f.load(Word::RLock), 0);
    assert_eq!(f.load(Word::WLock), 0);
}

#[test]
fn a_held_lock_says_retry_soon() {
    let f = frame(16);
    f.store(Word::WLock, 1);
    let Err(Stop::Block(w)) = ring::write(&f, b"x", false) else { panic!() };
    assert!(w.retry_soon);
    f.store(Word::WLock, 99); // garbage: still not 0, still refused
    assert!(ring::write(&f, b"x", false).is_err());
}

#[test]
fn sink_refusal_keeps_the_bytes() {
    let f = frame(16);
    ring::write(&f, b"keep", false).unwrap();
    let mut s = [0u8; 8];
    assert_eq!(ring::read(&f, 8, &mut s, &mut |_| false).unwrap().n, 0);
    assert_eq!(rd(&f, 8).unwrap().0, b"keep");
}

#[derive(Clone, Debug)]
enum Op {
    Write(usize, bool),
    Read(usize),
    Garbage(usize, u64),
    CloseWriter,
    CloseReader,
    Poll(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..80, any::<bool>()).prop_map(|(n, a)| Op::Write(n, a)),
        4 => (0usize..80).prop_map(Op::Read),
        2 => (0usize..ring::HEADER_WORDS, prop_oneof![any::<u64>(), 0u64..70, Just(u64::MAX)])
            .prop_map(|(w, v)| Op::Garbage(w, v)),
        1 => Just(Op::CloseWriter),
        1 => Just(Op::CloseReader),
        1 => any::<bool>().prop_map(Op::Poll),
    ]
}

proptest! {
    /// Against any interleaving of honest operations and a peer writing
    /// garbage into any header word: no copy leaves the data area (the
    /// `Checked` frame panics), every result is within its bounds, locks
    /// are released — and while no garbage has been written, the bytes
    /// read are exactly the bytes written, in order.
    #[test]
    fn hostile_words_never_hurt(cap_log in 0u32..7, ops in proptest::collection::vec(op(), 1..120)) {
        let cap = 1usize << cap_log;
        let f = frame(cap);
        let mut honest = true;
        let (mut sent, mut recv) = (Vec::<u8>::new(), Vec::<u8>::new());
        let mut next = 0u8;
        for op in ops {
            match op {
                Op::Write(n, atomic) => {
                    let data: Vec<u8> = (0..n).map(|i| next.wrapping_add(i as u8)).collect();
                    match ring::write(&f, &data, atomic) {
                        Ok(m) => {
                            prop_assert!(m.n <= n && m.n <= cap);
                            if atomic && n <= cap { prop_assert!(m.n == n || n == 0); }
                            if n > 0 { prop_assert!(m.n >= 1); }
                            sent.extend_from_slice(&data[..m.n]);
                            next = next.wrapping_add(m.n as u8);
                        }
                        Err(Stop::Eof) => prop_assert!(false, "write said EOF"),
                        Err(_) => {}
                    }
                }
                Op::Read(n) => match rd(&f, n) {
                    Ok((b, _)) => { prop_assert!(b.len() <= n && b.len() <= cap); recv.extend(b); }
                    Err(Stop::Broken) => prop_assert!(false, "read said EPIPE"),
                    Err(_) => {}
                },
                Op::Garbage(w, v) => {
                    f.0.word(w).store(v, SeqCst);
                    honest = false;
                }
                Op::CloseWriter => { ring::close_end(&f, Side::Writers); }
                Op::CloseReader => { ring::close_end(&f, Side::Readers); }
                Op::Poll(arm) => {
                    let r = ring::readiness(&f, Side::Readers, arm);
                    prop_assert!(r.used <= cap && r.free <= cap);
                }
            }
            if honest {
                prop_assert_eq!(f.load(Word::RLock), 0);
                prop_assert_eq!(f.load(Word::WLock), 0);
            }
        }
        if honest {
            prop_assert_eq!(&sent[..recv.len()], &recv[..]);
        }
    }
}

/// Two threads (two host cores) through one ring: a writer of random-size
/// chunks (some atomic) and a reader of random sizes; every byte arrives
/// once, in order; atomic chunks are never split by the ring's capacity.
#[test]
fn two_threads_stream() {
    let f = Arc::new(HeapFrame::new(256));
    ring::init(&*f);
    const TOTAL: usize = 300_000;
    let w = f.clone();
    let writer = std::thread::spawn(move || {
        let mut sent = 0usize;
        let mut seed = 12345u64;
        while sent < TOTAL {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let n = ((seed >> 33) as usize % 300 + 1).min(TOTAL - sent);
            let data: Vec<u8> = (sent..sent + n).map(|i| (i % 251) as u8).collect();
            let atomic = n <= 256;
            let mut at = 0;
            while at < n {
                match ring::write(&*w, &data[at..], atomic) {
                    Ok(m) => at += m.n,
                    Err(Stop::Block(_)) => std::thread::yield_now(),
                    Err(e) => panic!("writer: {e:?}"),
                }
            }
            sent += n;
        }
        ring::close_end(&*w, Side::Writers);
    });
    let mut got = 0usize;
    let mut scratch = vec![0u8; 512];
    let mut seed = 999u64;
    loop {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let max = (seed >> 33) as usize % 512 + 1;
        let r = ring::read(&*f, max, &mut scratch, &mut |b| {
            for (i, &x) in b.iter().enumerate() {
                assert_eq!(x, ((got + i) % 251) as u8, "byte {}", got + i);
            }
            true
        });
        match r {
            Ok(m) => got += m.n,
            Err(Stop::Eof) => break,
            Err(Stop::Block(_)) => std::thread::yield_now(),
            Err(e) => panic!("reader: {e:?}"),
        }
    }
    writer.join().unwrap();
    assert_eq!(got, TOTAL);
}

// ---- the system calls, through a mock process ----

const SCRATCH: u64 = 0x7000_0000;

/// Waits by advancing the mock clock to the deadline (nobody else can
/// change a word in these single-process tests).
struct ClockHost(MockClock);

impl PipeHost for ClockHost {
    fn wait(&mut self, _: &[WaitWord], deadline_ns: Option<u64>) {
        use crate::host::Clock;
        self.0.sleep_until(deadline_ns.expect("a wait nobody can end"));
    }
    fn wake(&mut self, _: &dyn Frame, _: Side) {}
}

struct P {
    p: crate::syscalls::Process<'static>,
    mem: Shared,
    next: u64,
}

impl P {
    fn new() -> Self {
        let con = MockConsole::default();
        let fs = Fs::new(con.boxed());
        let mem = Shared::default();
        mem.0.borrow_mut().ensure(SCRATCH, 0x40000);
        let layout = Layout {
            min_addr: 0x10000,
            user_end: 0x8000_0000_0000,
            brk_start: 0x60_0000,
            brk_limit: 0x4000_0000,
            mmap_lo: 0x10_0000_0000,
            mmap_hi: 0x7f00_0000_0000,
        };
        let clock = MockClock::default();
        let mut p = crate::syscalls::Process::new(
            fs,
            layout,
            1,
            Box::new(mem.clone()),
            Box::new(clock.clone()),
            Box::new(MockHost::default()),
        );
        p.set_pipe_host(Box::new(ClockHost(clock)));
        P { p, mem, next: SCRATCH }
    }
    fn buf(&mut self, n: usize) -> u64 {
        let at = self.next;
        self.next += (n as u64 + 16) & !15;
        at
    }
    fn put(&mut self, b: &[u8]) -> u64 {
        let at = self.buf(b.len());
        self.mem.0.borrow_mut().put(at, b);
        at
    }
    fn get(&self, addr: u64, n: usize) -> Vec<u8> {
        self.mem.0.borrow().get(addr, n)
    }
    fn sys(&mut self, nr: u64, args: &[u64]) -> i64 {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        let mut m = self.mem.clone();
        dispatch(&mut self.p, nr, a, &mut m)
    }
    fn pipe(&mut self, flags: u32) -> (i64, i64) {
        let b = self.buf(8);
        assert_eq!(self.sys(SYS_PIPE2, &[b, flags as u64]), 0);
        let v = self.get(b, 8);
        (
            i32::from_le_bytes(v[..4].try_into().unwrap()) as i64,
            i32::from_le_bytes(v[4..].try_into().unwrap()) as i64,
        )
    }
    fn write(&mut self, fd: i64, data: &[u8]) -> i64 {
        let b = self.put(data);
        self.sys(SYS_WRITE, &[fd as u64, b, data.len() as u64])
    }
    fn read(&mut self, fd: i64, n: usize) -> Result<Vec<u8>, i64> {
        let b = self.buf(n);
        let r = self.sys(SYS_READ, &[fd as u64, b, n as u64]);
        if r < 0 { Err(r) } else { Ok(self.get(b, r as usize)) }
    }
    fn poll(&mut self, fds: &[(i32, u16)], timeout: i32) -> (i64, Vec<u16>) {
        let mut raw = Vec::new();
        for (fd, ev) in fds {
            raw.extend_from_slice(&fd.to_le_bytes());
            raw.extend_from_slice(&ev.to_le_bytes());
            raw.extend_from_slice(&0u16.to_le_bytes());
        }
        let b = self.put(&raw);
        let r = self.sys(SYS_POLL, &[b, fds.len() as u64, timeout as i64 as u64]);
        let out = self.get(b, raw.len());
        (r, out.chunks(8).map(|c| u16::from_le_bytes([c[6], c[7]])).collect())
    }
}

fn e(x: Errno) -> i64 {
    x.to_ret()
}

#[test]
fn pipe_read_write_eof() {
    let mut t = P::new();
    let inodes = t.p.fs.inode_count();
    let (r, w) = t.pipe(0);
    assert_eq!((r, w), (3, 4), "the two lowest free numbers");
    assert_eq!(t.write(w, b"hello"), 5);
    assert_eq!(t.read(w, 1), Err(e(EBADF)), "the write end cannot be read");
    assert_eq!(t.write(r, b"x"), e(EBADF));
    assert_eq!(t.read(r, 3).unwrap(), b"hel");
    assert_eq!(t.read(r, 100).unwrap(), b"lo");
    assert_eq!(t.sys(SYS_CLOSE, &[w as u64]), 0);
    assert_eq!(t.read(r, 100).unwrap(), b"", "end of file once the last writer is gone");
    assert_eq!(t.sys(SYS_CLOSE, &[r as u64]), 0);
    assert_eq!(t.p.fs.inode_count(), inodes, "both ends' inodes are freed");
    assert_eq!(t.p.pipes.ends.len(), 0);
}

#[test]
fn nonblocking_capacity_and_atomicity() {
    let mut t = P::new();
    let (r, w) = t.pipe(O_NONBLOCK | O_CLOEXEC);
    assert_eq!(t.sys(SYS_FCNTL, &[r as u64, F_GETFD as u64]), FD_CLOEXEC as i64);
    assert_eq!(t.sys(SYS_FCNTL, &[w as u64, F_GETFL as u64]), (O_WRONLY | O_NONBLOCK) as i64);
    assert_eq!(t.read(r, 10), Err(e(EAGAIN)));
    let page = vec![7u8; 4096];
    for _ in 0..16 {
        assert_eq!(t.write(w, &page), 4096);
    }
    assert_eq!(t.write(w, b"x"), e(EAGAIN), "64 KiB and full");
    assert_eq!(t.sys(SYS_FCNTL, &[w as u64, F_GETPIPE_SZ as u64]), 65536);
    let n = t.buf(4);
    assert_eq!(t.sys(SYS_IOCTL, &[r as u64, FIONREAD as u64, n]), 0);
    assert_eq!(t.get(n, 4), 65536i32.to_le_bytes());
    t.read(r, 100).unwrap();
    // 100 bytes free: an atomic write of 101 is refused whole, a larger
    // one writes what fits.
    assert_eq!(t.write(w, &[1; 101]), e(EAGAIN));
    assert_eq!(t.write(w, &vec![2; 5000]), 100);
    // Blocking again through F_SETFL; a read of everything.
    assert_eq!(t.sys(SYS_FCNTL, &[r as u64, F_SETFL as u64, 0]), 0);
    let all = t.read(r, 70000).unwrap();
    assert_eq!(all.len(), 65536);
    assert_eq!(&all[all.len() - 100..], &[2; 100]);
}

#[test]
fn epipe_and_positioning() {
    let mut t = P::new();
    let (r, w) = t.pipe(0);
    let st = t.buf(144);
    assert_eq!(t.sys(SYS_FSTAT, &[r as u64, st]), 0);
    let mode = u32::from_le_bytes(t.get(st + 24, 4).try_into().unwrap());
    assert_eq!(mode, S_IFIFO | 0o600);
    assert_eq!(t.sys(SYS_LSEEK, &[r as u64, 0, SEEK_CUR as u64]), e(ESPIPE));
    let b = t.buf(4);
    assert_eq!(t.sys(SYS_PREAD64, &[r as u64, b, 4, 0]), e(ESPIPE));
    assert_eq!(t.sys(SYS_PWRITE64, &[w as u64, b, 4, 0]), e(ESPIPE));
    assert_eq!(t.write(w, b""), 0);
    assert_eq!(t.sys(SYS_CLOSE, &[r as u64]), 0);
    assert_eq!(t.write(w, b"x"), e(EPIPE));
    assert_eq!(t.sys(SYS_WRITE, &[w as u64, 0x10, 1]), e(EFAULT), "EFAULT before EPIPE");
}

#[test]
fn a_bad_buffer_faults_and_moves_nothing() {
    let mut t = P::new();
    let (r, w) = t.pipe(0);
    assert_eq!(t.sys(SYS_WRITE, &[w as u64, 0x10, 5]), e(EFAULT));
    assert_eq!(t.write(w, b"hello"), 5);
    // The bytes stay in the pipe when the reader's buffer faults (Linux).
    assert_eq!(t.sys(SYS_READ, &[r as u64, 0x10, 5]), e(EFAULT));
    assert_eq!(t.read(r, 5).unwrap(), b"hello");
    // In place (within a page) and through a buffer (across pages), with
    // the ring wrapping: every byte arrives, in order.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut got = Vec::new();
    let mut sent = 0;
    for n in [1, 4095, 3000, 40_000, 9, 30_000, 22_895] {
        assert_eq!(t.write(w, &data[sent..sent + n]), n as i64);
        sent += n;
        while got.len() < sent {
            let n = [1000, 4096, 65_536][got.len() % 3];
            let b = t.put(&vec![0; n]);
            let k = t.sys(SYS_READ, &[r as u64, b, n as u64]);
            assert!(k > 0, "read {k}");
            got.extend(t.get(b, k as usize));
        }
    }
    assert_eq!(sent, data.len());
    assert_eq!(got, data);
}

#[test]
fn dup_shares_the_end() {
    let mut t = P::new();
    let (r, w) = t.pipe(0);
    assert_eq!(t.sys(SYS_DUP2, &[w as u64, 10]), 10);
    assert_eq!(t.sys(SYS_CLOSE, &[w as u64]), 0);
    assert_eq!(t.write(10, b"via dup"), 7, "the duplicate keeps the write end open");
    assert_eq!(t.read(r, 100).unwrap(), b"via dup");
    let d = t.sys(SYS_FCNTL, &[10, F_DUPFD as u64, 20]);
    assert_eq!(d, 20);
    assert_eq!(t.sys(SYS_DUP3, &[r as u64, 10, O_CLOEXEC as u64]), 10, "replaces a write end");
    assert_eq!(t.write(20, b"!"), 1);
    assert_eq!(t.read(10, 5).unwrap(), b"!");
    assert_eq!(t.sys(SYS_CLOSE, &[20]), 0);
    assert_eq!(t.read(r, 5).unwrap(), b"", "the last write description went with fd 20");
}

#[test]
fn poll_pipes_and_files() {
    use poll_bits::*;
    let mut t = P::new();
    let (r, w) = t.pipe(0);
    let (n, rev) =
        t.poll(&[(r as i32, POLLIN), (w as i32, POLLOUT), (-1, POLLIN), (99, POLLIN)], 0);
    assert_eq!(n, 2);
    assert_eq!(rev, [0, POLLOUT, 0, POLLNVAL]);
    t.write(w, b"a");
    let (n, rev) = t.poll(&[(r as i32, POLLIN | POLLRDNORM), (0, POLLIN)], -1);
    assert_eq!((n, rev), (2, vec![POLLIN | POLLRDNORM, POLLIN]));
    // A timeout with nothing ready: 0 after the deadline (the mock clock).
    t.read(r, 1).unwrap();
    let (n, rev) = t.poll(&[(r as i32, POLLIN)], 5);
    assert_eq!((n, rev), (0, vec![0]));
    t.sys(SYS_CLOSE, &[w as u64]);
    let (_, rev) = t.poll(&[(r as i32, POLLIN)], -1);
    assert_eq!(rev, [POLLHUP], "hang-up is reported even if not asked for");
    let (r2, w2) = t.pipe(0);
    t.sys(SYS_CLOSE, &[r2 as u64]);
    let (_, rev) = t.poll(&[(w2 as i32, POLLOUT)], -1);
    assert_eq!(rev, [POLLOUT | POLLERR]);
    assert_eq!(t.sys(SYS_POLL, &[0x10, 1, 0]), e(EFAULT));
    assert_eq!(t.sys(SYS_POLL, &[SCRATCH, 1 << 20, 0]), e(EINVAL));
}

#[test]
fn pipe2_errors() {
    let mut t = P::new();
    let inodes = t.p.fs.inode_count();
    assert_eq!(t.sys(SYS_PIPE2, &[SCRATCH, O_DIRECT as u64]), e(EINVAL));
    assert_eq!(t.sys(SYS_PIPE2, &[SCRATCH, 1]), e(EINVAL));
    assert_eq!(t.sys(SYS_PIPE, &[0x10]), e(EFAULT));
    assert_eq!(t.p.fs.inode_count(), inodes, "a failed copy-out frees both ends");
    assert_eq!(t.sys(SYS_DUP, &[0]), 3, "and their numbers");
    // EMFILE when fewer than two numbers are free.
    while t.sys(SYS_DUP, &[0]) >= 0 {}
    t.sys(SYS_CLOSE, &[5]);
    assert_eq!(t.sys(SYS_PIPE, &[SCRATCH]), e(EMFILE));
}

/// A hostile peer corrupts the frame of a pipe this process uses: the
/// calls fail with `EIO`, nothing panics, and poll says `POLLERR`.
#[test]
fn corrupt_frame_through_the_calls() {
    let mut t = P::new();
    let (r, w) = t.pipe(0);
    t.write(w, b"abc");
    let ino = t.p.fds.get(r as i32).unwrap().borrow().ino;
    let f = t.p.pipes.end(ino).unwrap().frame().clone();
    f.store(Word::Tail, 1 << 40);
    assert_eq!(t.read(r, 10), Err(e(EIO)));
    assert_eq!(t.write(w, b"x"), e(EIO));
    let (_, rev) = t.poll(&[(r as i32, POLLIN)], 0);
    assert_eq!(rev, [poll_bits::POLLERR]);
    f.store(Word::Tail, 3);
    assert_eq!(t.write(w, b"ok"), 2, "sane words again: the pipe works");
    assert_eq!(t.read(r, 10).unwrap(), b"ok");
}

#[test]
fn fork_counts_the_childs_ends_in_the_parent() {
    let mut t = P::new();
    let (r, w) = t.pipe(O_NONBLOCK);
    // What `fork` does before the child exists: the child's copies count.
    t.p.pipes.inherit();
    // The fork failed (at once, as in `proc::fork`): no child holds anything.
    t.p.pipes.fork_failed();
    assert_eq!(t.sys(SYS_CLOSE, &[w as u64]), 0);
    assert_eq!(t.read(r, 8).unwrap(), b"", "end of file: no child's count is left");

    let (r, w) = t.pipe(O_NONBLOCK);
    t.p.pipes.inherit();
    assert_eq!(t.sys(SYS_CLOSE, &[w as u64]), 0);
    assert_eq!(t.read(r, 8), Err(e(EAGAIN)), "the child's write end keeps the pipe open");
}

#[test]
fn exit_counts_every_end_out() {
    let mut t = P::new();
    let (_r, w) = t.pipe(0);
    assert_eq!(t.sys(SYS_DUP2, &[w as u64, 9]), 9);
    let frame = t.p.pipes.ends.values().next().expect("an end").frame.clone();
    assert_eq!((frame.load(Word::Readers), frame.load(Word::Writers)), (1, 1));
    assert_eq!(t.sys(SYS_EXIT_GROUP, &[0]), 0);
    assert_eq!((frame.load(Word::Readers), frame.load(Word::Writers)), (0, 0));
    assert!(t.p.pipes.ends.is_empty());
}

/// A pending signal cuts blocked pipe calls short: `read` and `poll` with
/// nothing to do, `write` into a full pipe (what it wrote counts); the
/// glue then restarts them under `SA_RESTART` or answers `EINTR`.
#[test]
fn a_signal_cuts_blocked_pipe_calls_short() {
    use crate::signal::{ERESTARTNOHAND, ERESTARTSYS};
    let mut t = P::new();
    let (r, w) = t.pipe(0);
    t.p.signals.raise(crate::signal::SIGUSR1, crate::signal::SI_USER, 1);
    assert_eq!(t.read(r, 10), Err(e(ERESTARTSYS)));
    assert_eq!(t.poll(&[(r as i32, POLLIN)], -1).0, e(ERESTARTNOHAND));
    assert_eq!(t.write(w, &vec![1u8; 65536 + 100]), 65536, "the part that fitted");
    assert_eq!(t.write(w, b"x"), e(ERESTARTSYS));
    // Data or end of file first: no interruption.
    assert_eq!(t.read(r, 10).unwrap().len(), 10);
}
