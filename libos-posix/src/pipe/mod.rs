//! Pipes: `pipe`, `pipe2`, reading and writing their ends, `poll`.
//!
//! This module owns the pipe ends of a process and Linux's pipe semantics
//! on top of [`ring`], the byte queue that lives in a frame shared by every
//! process holding an end (the frame's layout, why no word of it is
//! trusted, and why no wake-up is lost are in [`ring`]'s documentation).
//! No pipe byte goes through the kernel: the kernel only gives the shared
//! frame, puts a blocked end to sleep (`SleepOn` a predicate on a header
//! word) and carries the other side's wake-up (an event): the glue does
//! both through [`PipeHost`].
//!
//! Linux semantics kept (`fs/pipe.c`, `man 7 pipe`):
//! - capacity 64 KiB ([`ring::CAPACITY`]); writes of at most `PIPE_BUF`
//!   (4096) bytes are atomic: all or nothing, never interleaved with
//!   another writer's; larger blocking writes return when all is written;
//!   larger `O_NONBLOCK` writes write what fits (`EAGAIN` if nothing);
//! - a read returns what is there (at most the count), blocks while the
//!   pipe is empty and a writer is open, returns 0 (end of file) once the
//!   last write description is closed, `EAGAIN` under `O_NONBLOCK`;
//! - writing with no reader left is `EPIPE`, after [`raise_sigpipe`];
//! - `lseek`/`pread`/`pwrite` are `ESPIPE`, `fstat` says `S_IFIFO`,
//!   `FIONREAD` gives the bytes waiting, `F_GETPIPE_SZ` the capacity;
//!   `dup`/`dup2`/`dup3`/`fcntl` work on pipe ends as on any description
//!   (the descriptor table shares the description; `F_SETFL` toggles
//!   `O_NONBLOCK`, which is read at every call);
//! - `poll`/`ppoll`: pipe ends as `pipe_poll` (`POLLIN` when not empty,
//!   `POLLHUP` when no writer is left, `POLLOUT` when not full, `POLLERR`
//!   when no reader is left); everything else as Linux's
//!   `DEFAULT_POLLMASK` (always readable and writable).
//!
//! Differences, said plainly:
//! - the ring counts bytes, Linux counts page buffers: a sequence of small
//!   non-atomic-size writes fits exactly 65,536 bytes here, while Linux may
//!   fit fewer (a write that does not fit the last page's tail starts a new
//!   page). Writes of whole pages agree;
//! - `writev`'s atomicity is per `iovec` (Linux: for the total);
//! - `O_DIRECT` (packet mode) and `F_SETPIPE_SZ` are refused (`EINVAL`);
//! - the console is always reported readable by `poll` (the console
//!   trait has no readiness query yet), so `poll` never waits for typed
//!   input;
//! - a signal does not interrupt a blocked read, write or poll yet
//!   (`EINTR`): that needs the signal work (posix-sig);
//! - between processes: the glue's frames are memory shared writable
//!   with every child forked later (`libos_async::shared`); the parent
//!   counts the child's ends in before the fork ([`Pipes::inherit`]) and
//!   the child joins each frame's table of environments to wake ([`Frame::peers`],
//!   [`PipeHost::join`]); `exit` closes every descriptor. An environment
//!   killed from outside never counts its ends out: a reader then waits
//!   for an end of file that does not come (not handled yet).

pub mod ring;

#[cfg(all(test, loom))]
mod loom;
#[cfg(all(test, not(loom)))]
mod tests;

use crate::fs::{Device, Ino};
use crate::linux::errno::*;
use crate::linux::*;
use crate::signal::{ERESTARTNOHAND, ERESTARTSYS};
use crate::syscalls::{OpenFile, Process};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use ring::{Frame, Side, Stop, Word};

pub use ring::{CAPACITY, PIPE_BUF};

/// `poll` event bits (`asm-generic/poll.h`).
pub mod poll_bits {
    /// Data to read.
    pub const POLLIN: u16 = 0x1;
    /// Urgent data.
    pub const POLLPRI: u16 = 0x2;
    /// Room to write.
    pub const POLLOUT: u16 = 0x4;
    /// Error (no reader left, on a write end).
    pub const POLLERR: u16 = 0x8;
    /// Hang-up (no writer left, on a read end).
    pub const POLLHUP: u16 = 0x10;
    /// Not an open descriptor.
    pub const POLLNVAL: u16 = 0x20;
    /// Normal data to read.
    pub const POLLRDNORM: u16 = 0x40;
    /// Normal data may be written.
    pub const POLLWRNORM: u16 = 0x100;
}
use poll_bits::*;

/// `fcntl(F_SETPIPE_SZ)`.
pub const F_SETPIPE_SZ: u32 = 1031;
/// `fcntl(F_GETPIPE_SZ)`.
pub const F_GETPIPE_SZ: u32 = 1032;

/// A word of a wake-up predicate, by address (see [`ring::Cond`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitWord {
    /// Address of the word in this environment (8-byte aligned).
    pub addr: u64,
    /// `true`: wake when the word differs from `value`; `false`: when it equals it.
    pub ne: bool,
    /// The value.
    pub value: u64,
}

/// What the glue provides for pipes.
pub trait PipeHost {
    /// A frame for a new pipe: a data area of [`CAPACITY`] bytes (or a
    /// smaller power of two) and the header words. `ENFILE`/`ENOMEM` when
    /// there is none. The default is [`HeapFrame`], good within one
    /// process.
    fn new_frame(&mut self) -> SysResult<Rc<dyn Frame>> {
        Ok(Rc::new(HeapFrame::new(CAPACITY)))
    }
    /// Sleeps until one of `words` holds or the monotonic clock reaches
    /// `deadline_ns`. May return early (the caller checks again); must
    /// not return early forever.
    fn wait(&mut self, words: &[WaitWord], deadline_ns: Option<u64>);
    /// Wakes every environment that may be sleeping on `side` of `frame`.
    fn wake(&mut self, frame: &dyn Frame, side: Side);
    /// This environment now holds an end of `frame` (made it, or inherited
    /// it across `fork`): record it among the environments to wake.
    fn join(&mut self, _frame: &dyn Frame) {}
    /// This environment holds no end of `frame` any more.
    fn leave(&mut self, _frame: &dyn Frame) {}
}

/// How long a waiter for a lock held by another process sleeps before it
/// tries again (ring locks have no wake-up of their own).
pub const LOCK_RETRY_NS: u64 = 50_000;

/// The glue's stand-in until it sets its own ([`Process::set_pipe_host`]):
/// heap frames, no sleeping (each wait returns at once, so a blocked call
/// spins on its checks) and nothing to wake — enough within one process,
/// where nobody else could make progress anyway.
#[derive(Debug, Default)]
pub struct Spin;

impl PipeHost for Spin {
    fn wait(&mut self, _: &[WaitWord], _: Option<u64>) {}
    fn wake(&mut self, _: &dyn Frame, _: Side) {}
}

/// A pipe frame in this process's heap: atomics, no `unsafe`. The data
/// area is 64-bit words, copied a word at a time (a partial word is read,
/// patched and stored: only writers store data, one at a time under the
/// ring's writer lock, so nothing is lost).
#[derive(Debug)]
pub struct HeapFrame {
    header: [AtomicU64; ring::HEADER_WORDS],
    data: Box<[AtomicU64]>,
    capacity: usize,
}

impl HeapFrame {
    /// A frame with a `capacity`-byte data area (a power of two).
    pub fn new(capacity: usize) -> Self {
        HeapFrame {
            header: Default::default(),
            data: (0..capacity.div_ceil(8)).map(|_| AtomicU64::new(0)).collect(),
            capacity,
        }
    }

    /// The raw header word `w`, for tests that play a hostile peer.
    pub fn word(&self, w: usize) -> &AtomicU64 {
        &self.header[w % ring::HEADER_WORDS]
    }
}

impl Frame for HeapFrame {
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn load(&self, w: Word) -> u64 {
        self.header[w as usize].load(SeqCst)
    }
    fn store(&self, w: Word, v: u64) {
        self.header[w as usize].store(v, SeqCst)
    }
    fn swap(&self, w: Word, v: u64) -> u64 {
        self.header[w as usize].swap(v, SeqCst)
    }
    fn fetch_add(&self, w: Word, d: u64) -> u64 {
        self.header[w as usize].fetch_add(d, SeqCst)
    }
    fn compare_exchange(&self, w: Word, old: u64, new: u64) -> bool {
        self.header[w as usize].compare_exchange(old, new, SeqCst, SeqCst).is_ok()
    }
    fn copy_out(&self, off: usize, buf: &mut [u8]) {
        copy_out_words(&self.data, off, buf)
    }
    fn copy_in(&self, off: usize, data: &[u8]) {
        copy_in_words(&self.data, off, data)
    }
    fn word_addr(&self, w: Word) -> u64 {
        &self.header[w as usize] as *const AtomicU64 as u64
    }
}

/// Copies bytes `off..off + buf.len()` of a data area of 64-bit words out
/// (a [`Frame::copy_out`] for frames made of words: [`HeapFrame`], the
/// glue's shared frames). Panics if the range is outside `data`.
pub fn copy_out_words(data: &[AtomicU64], off: usize, buf: &mut [u8]) {
    if off.is_multiple_of(8) {
        // The common case: whole words, one load each.
        let words = &data[off / 8..];
        let mut chunks = buf.chunks_exact_mut(8);
        for (c, w) in (&mut chunks).zip(words) {
            c.copy_from_slice(&w.load(Relaxed).to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let n = rest.len();
        if n > 0 {
            let done = buf.len() - n;
            let word = data[(off + done) / 8].load(Relaxed).to_le_bytes();
            buf[done..].copy_from_slice(&word[..n]);
        }
        return;
    }
    let mut i = 0;
    while i < buf.len() {
        let (w, b) = ((off + i) / 8, (off + i) % 8);
        let n = (8 - b).min(buf.len() - i);
        let word = data[w].load(Relaxed).to_le_bytes();
        buf[i..i + n].copy_from_slice(&word[b..b + n]);
        i += n;
    }
}

/// Copies `src` into bytes `off..off + src.len()` of a data area of
/// 64-bit words (see [`copy_out_words`]). Panics if the range is outside
/// `data`.
pub fn copy_in_words(data: &[AtomicU64], off: usize, src: &[u8]) {
    if off.is_multiple_of(8) {
        let words = &data[off / 8..];
        let mut chunks = src.chunks_exact(8);
        for (c, w) in (&mut chunks).zip(words) {
            w.store(u64::from_le_bytes(c.try_into().expect("8 bytes")), Relaxed);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let at = off + src.len() - rest.len();
            let w = &data[at / 8];
            let mut word = w.load(Relaxed).to_le_bytes();
            word[..rest.len()].copy_from_slice(rest);
            w.store(u64::from_le_bytes(word), Relaxed);
        }
        return;
    }
    let mut i = 0;
    while i < src.len() {
        let (w, b) = ((off + i) / 8, (off + i) % 8);
        let n = (8 - b).min(src.len() - i);
        let mut word = if n == 8 { [0; 8] } else { data[w].load(Relaxed).to_le_bytes() };
        word[b..b + n].copy_from_slice(&src[i..i + n]);
        data[w].store(u64::from_le_bytes(word), Relaxed);
        i += n;
    }
}

/// One end of a pipe held by this process (one per open description).
#[derive(Clone)]
pub struct End {
    frame: Rc<dyn Frame>,
    side: Side,
}

impl End {
    /// The shared frame.
    pub fn frame(&self) -> &Rc<dyn Frame> {
        &self.frame
    }
    /// Which end: [`Side::Readers`] for a read end.
    pub fn side(&self) -> Side {
        self.side
    }
}

/// The pipe ends of a process, by the inode of their description, and
/// the glue's [`PipeHost`].
pub struct Pipes<'a> {
    ends: BTreeMap<Ino, End>,
    host: Box<dyn PipeHost + 'a>,
}

impl Default for Pipes<'_> {
    fn default() -> Self {
        Pipes { ends: BTreeMap::new(), host: Box::new(Spin) }
    }
}

impl core::fmt::Debug for Pipes<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.ends.keys()).finish()
    }
}

impl<'a> Pipes<'a> {
    /// The end behind inode `ino`, if it is one.
    pub fn end(&self, ino: Ino) -> Option<&End> {
        self.ends.get(&ino)
    }

    /// Before `fork`, in the parent: counts every end the child will
    /// inherit in its frame (the child's copies are descriptions of their
    /// own, each closed on its own). In the parent, not the child: the
    /// child may run late, and a parent closing its own write end meanwhile
    /// must not see the count fall to 0 (a false end of file). Undone by
    /// [`Pipes::fork_failed`] if no child comes.
    pub fn inherit(&self) {
        for e in self.ends.values() {
            ring::open_end(&*e.frame, e.side);
        }
    }

    /// The `fork` after [`Pipes::inherit`] failed: counts the child's ends
    /// out again (waking the other side where that was the last).
    pub fn fork_failed(&mut self) {
        let ends: Vec<End> = self.ends.values().cloned().collect();
        for e in ends {
            let wake = ring::close_end(&*e.frame, e.side);
            self.wake(&*e.frame, wake);
        }
    }

    /// After `fork`, in the child: joins each inherited frame's table of
    /// environments to wake ([`PipeHost::join`]), before any of its calls
    /// could sleep on it.
    pub fn join_as_child(&mut self) {
        let mut joined: Vec<*const ()> = Vec::new();
        for e in self.ends.values() {
            let key = Rc::as_ptr(&e.frame) as *const ();
            if !joined.contains(&key) {
                joined.push(key);
                self.host.join(&*e.frame);
            }
        }
    }

    fn wake(&mut self, frame: &dyn Frame, side: Option<Side>) {
        if let Some(s) = side {
            self.host.wake(frame, s);
        }
    }

    fn wait(&mut self, frame: &dyn Frame, w: ring::Wait, now_ns: u64) {
        let words =
            w.conds.map(|c| WaitWord { addr: frame.word_addr(c.word), ne: c.ne, value: c.value });
        let deadline = w.retry_soon.then(|| now_ns.saturating_add(LOCK_RETRY_NS));
        self.host.wait(&words, deadline);
    }
}

impl<'a> Process<'a> {
    /// Sets what pipes sleep, wake and allocate frames with (the glue's
    /// [`PipeHost`]; [`Spin`] until then).
    pub fn set_pipe_host(&mut self, host: Box<dyn PipeHost + 'a>) {
        self.pipes.host = host;
    }
}

/// The signal hook for a write to a pipe with no reader left: Linux sends
/// `SIGPIPE` to the writer before failing with `EPIPE` (delivered at the
/// call's end: by default it ends the process; ignored or caught, the write
/// fails with `EPIPE`).
pub fn raise_sigpipe(p: &mut Process<'_>) {
    p.signals.raise_kernel(13);
}

/// Whether `ino` is a pipe end (`ESPIPE` for positioning).
pub fn is_pipe(p: &Process<'_>, ino: Ino) -> bool {
    p.fs.device(ino) == Some(Device::Pipe)
}

/// The description of a pipe end has gone (its last descriptor in this
/// process closed): count it out of the frame and wake the other side if
/// it was the last of its kind.
pub(crate) fn released(p: &mut Process<'_>, ino: Ino) {
    if let Some(e) = p.pipes.ends.remove(&ino) {
        let wake = ring::close_end(&*e.frame, e.side);
        p.pipes.wake(&*e.frame, wake);
        if !p.pipes.ends.values().any(|o| Rc::ptr_eq(&o.frame, &e.frame)) {
            p.pipes.host.leave(&*e.frame);
        }
    }
}

/// `pipe2(fds, flags)` (`pipe` is `flags` 0).
pub(crate) fn sys_pipe2(
    p: &mut Process<'_>,
    fds_addr: u64,
    flags: u32,
    mem: &mut dyn crate::host::UserMemory,
) -> SysResult<u64> {
    if flags & !(O_CLOEXEC | O_NONBLOCK) != 0 {
        return Err(EINVAL); // O_DIRECT (packet mode), O_NOTIFICATION_PIPE: not supported
    }
    // Both numbers first (EMFILE before anything is made), as Linux.
    let free = (0..p.fds.limit() as i32).filter(|&fd| p.fds.get(fd).is_err()).take(2).count();
    if free < 2 {
        return Err(EMFILE);
    }
    let frame = p.pipes.host.new_frame()?;
    ring::init(&*frame);
    p.pipes.host.join(&*frame);
    let cloexec = flags & O_CLOEXEC != 0;
    let mut fds = [0i32; 2];
    for (i, (side, acc)) in
        [(Side::Readers, O_RDONLY), (Side::Writers, O_WRONLY)].into_iter().enumerate()
    {
        let ino = p.fs.anonymous_pipe();
        p.fs.hold(ino);
        p.pipes.ends.insert(ino, End { frame: frame.clone(), side });
        let f = OpenFile { ino, flags: acc | (flags & O_NONBLOCK), offset: 0, handle: 0 };
        fds[i] = p.fds.insert(Rc::new(RefCell::new(f)), cloexec, 0).expect("two numbers are free");
    }
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&fds[0].to_le_bytes());
    out[4..].copy_from_slice(&fds[1].to_le_bytes());
    if let Err(e) = mem.write(fds_addr, &out) {
        for fd in fds {
            if let Ok(d) = p.fds.close(fd) {
                p.release(d);
            }
        }
        return Err(e);
    }
    Ok(0)
}

/// `read` on the pipe end `ino` (already checked readable).
pub(crate) fn read(
    p: &mut Process<'_>,
    ino: Ino,
    flags: u32,
    buf: u64,
    count: u64,
    mem: &mut dyn crate::host::UserMemory,
) -> SysResult<u64> {
    let e = p.pipes.end(ino).ok_or(EBADF)?.clone();
    if count == 0 {
        return Ok(0);
    }
    let max = (count as usize).min(CAPACITY);
    loop {
        // Straight from the frame into the program's buffer
        // ([`UserMemory::write_with`]): no copy through the runtime.
        let mut fault = None;
        let r = ring::read_pieces(&*e.frame, max, &mut |f, [(o1, n1), (o2, n2)]| {
            let copied = mem.write_with(buf, n1 + n2, &mut |dst| {
                let (a, b) = dst.split_at_mut(n1);
                f.copy_out(o1, a);
                f.copy_out(o2, b);
            });
            match copied {
                Ok(()) => true,
                Err(err) => {
                    fault = Some(err);
                    false
                }
            }
        });
        match r {
            Ok(m) => {
                if let Some(err) = fault {
                    return Err(err);
                }
                p.pipes.wake(&*e.frame, m.wake);
                return Ok(m.n as u64);
            }
            Err(Stop::Eof) => return Ok(0),
            Err(Stop::Corrupt) => return Err(EIO),
            Err(Stop::Broken) => return Err(EIO), // not a reading outcome
            Err(Stop::Block(w)) => {
                if flags & O_NONBLOCK != 0 && !w.retry_soon {
                    return Err(EAGAIN);
                }
                // A signal cuts the wait short: restarted under
                // SA_RESTART, else EINTR (`crate::signal`).
                if p.signals.interrupting() {
                    return Err(ERESTARTSYS);
                }
                let now = p.clock.monotonic_ns();
                p.pipes.wait(&*e.frame, w, now);
            }
        }
    }
}

/// `write` on the pipe end `ino` (already checked writable).
pub(crate) fn write(
    p: &mut Process<'_>,
    ino: Ino,
    flags: u32,
    buf: u64,
    count: u64,
    mem: &mut dyn crate::host::UserMemory,
) -> SysResult<u64> {
    let e = p.pipes.end(ino).ok_or(EBADF)?.clone();
    let atomic = count as usize <= PIPE_BUF;
    let nonblock = flags & O_NONBLOCK != 0;
    let mut done = 0u64;
    while done < count {
        let want = ((count - done) as usize).min(CAPACITY);
        // Straight from the program's buffer into the frame
        // ([`UserMemory::read_with`]), a chunk of at most the capacity.
        let mut end = None;
        let chunk = mem.read_with(buf + done, want, &mut |chunk| {
            end = write_chunk(p, &e, chunk, atomic, nonblock, &mut done);
        });
        if let Err(err) = chunk {
            return if done == 0 { Err(err) } else { Ok(done) };
        }
        if let Some(r) = end {
            return r;
        }
    }
    Ok(done)
}

/// Writes all of `chunk`, adding what it wrote to `done`; `Some` result
/// when the call must end before (`EPIPE`, `EAGAIN`, a signal, ...).
fn write_chunk(
    p: &mut Process<'_>,
    e: &End,
    chunk: &[u8],
    atomic: bool,
    nonblock: bool,
    done: &mut u64,
) -> Option<SysResult<u64>> {
    let partial = |done: u64, err| Some(if done == 0 { Err(err) } else { Ok(done) });
    let mut at = 0;
    while at < chunk.len() {
        match ring::write(&*e.frame, &chunk[at..], atomic) {
            Ok(m) => {
                p.pipes.wake(&*e.frame, m.wake);
                at += m.n;
                *done += m.n as u64;
            }
            Err(Stop::Broken) => {
                raise_sigpipe(p);
                return partial(*done, EPIPE);
            }
            Err(Stop::Corrupt) => return partial(*done, EIO),
            Err(Stop::Eof) => return Some(Err(EIO)), // not a writing outcome
            Err(Stop::Block(w)) => {
                if nonblock && !w.retry_soon {
                    return partial(*done, EAGAIN);
                }
                // A signal: what was written counts (Linux's pipe_write).
                if p.signals.interrupting() {
                    return partial(*done, ERESTARTSYS);
                }
                let now = p.clock.monotonic_ns();
                p.pipes.wait(&*e.frame, w, now);
            }
        }
    }
    None
}

/// `ioctl` on a pipe end: `FIONREAD` (bytes waiting); anything else `ENOTTY`.
pub(crate) fn ioctl(
    p: &mut Process<'_>,
    ino: Ino,
    req: u32,
    arg: u64,
    mem: &mut dyn crate::host::UserMemory,
) -> SysResult<u64> {
    let e = p.pipes.end(ino).ok_or(EBADF)?;
    match req {
        FIONREAD => {
            let r = ring::readiness(&*e.frame, e.side, false);
            mem.write(arg, &(r.used as i32).to_le_bytes()).map(|_| 0)
        }
        _ => Err(ENOTTY),
    }
}

/// `fcntl(F_GETPIPE_SZ / F_SETPIPE_SZ)` on `fd`.
pub(crate) fn fcntl_size(p: &mut Process<'_>, fd: i32, cmd: u32) -> SysResult<u64> {
    let ino = p.fds.get(fd)?.borrow().ino;
    let e = p.pipes.end(ino).ok_or(EBADF)?;
    match cmd {
        F_GETPIPE_SZ => Ok(ring::capacity(&*e.frame) as u64),
        _ => Err(EINVAL), // F_SETPIPE_SZ: the capacity is fixed
    }
}

/// One `struct pollfd`.
const POLLFD_SIZE: usize = 8;

/// `poll(fds, nfds, timeout)` / `ppoll` with the timeout already in
/// nanoseconds (`None`: wait forever). The signal mask of `ppoll` is not
/// applied (signals are not delivered yet).
pub(crate) fn sys_poll(
    p: &mut Process<'_>,
    addr: u64,
    nfds: u64,
    timeout_ns: Option<u64>,
    mem: &mut dyn crate::host::UserMemory,
) -> SysResult<u64> {
    if nfds > p.fds.limit() as u64 {
        return Err(EINVAL);
    }
    let mut raw = vec![0u8; nfds as usize * POLLFD_SIZE];
    mem.read(addr, &mut raw)?;
    let deadline = timeout_ns.map(|t| p.clock.monotonic_ns().saturating_add(t));
    let mut arm = false;
    loop {
        let mut ready = 0u64;
        let mut waits: Vec<(Rc<dyn Frame>, ring::Wait)> = Vec::new();
        for pfd in raw.chunks_mut(POLLFD_SIZE) {
            let fd = i32::from_le_bytes([pfd[0], pfd[1], pfd[2], pfd[3]]);
            let events = u16::from_le_bytes([pfd[4], pfd[5]]);
            let revents = if fd < 0 {
                0
            } else {
                match p.fds.get(fd) {
                    Err(_) => POLLNVAL,
                    Ok(d) => {
                        let ino = d.borrow().ino;
                        let mask = match p.pipes.end(ino) {
                            Some(e) => {
                                let r = ring::readiness(&*e.frame, e.side, arm);
                                if arm {
                                    waits.push((e.frame.clone(), r.wait));
                                }
                                pipe_mask(e.side, &r)
                            }
                            None => POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM,
                        };
                        mask & (events | POLLERR | POLLHUP)
                    }
                }
            };
            pfd[6..8].copy_from_slice(&revents.to_le_bytes());
            ready += u64::from(revents != 0);
        }
        let now = p.clock.monotonic_ns();
        let expired = deadline.is_some_and(|d| now >= d);
        if ready > 0 || expired || (arm && waits.is_empty() && deadline.is_none()) {
            if ready == 0 && !expired {
                // Nothing that can ever become ready, no timeout: Linux
                // sleeps until a signal. Sleep in long steps rather than
                // spin, looking for one at each.
                if p.signals.interrupting() {
                    return Err(ERESTARTNOHAND);
                }
                p.clock.sleep_until(now.saturating_add(1_000_000_000));
                continue;
            }
            mem.write(addr, &raw)?;
            return Ok(ready);
        }
        if !arm {
            arm = true; // announce ourselves, then look again before sleeping
            continue;
        }
        let mut words = Vec::with_capacity(waits.len() * 2);
        for (f, w) in &waits {
            words.extend(w.conds.map(|c| WaitWord {
                addr: f.word_addr(c.word),
                ne: c.ne,
                value: c.value,
            }));
        }
        // A signal ends the wait (EINTR after a handler, as Linux's poll).
        if p.signals.interrupting() {
            return Err(ERESTARTNOHAND);
        }
        p.pipes.host.wait(&words, deadline);
    }
}

fn pipe_mask(side: Side, r: &ring::Readiness) -> u16 {
    if r.corrupt {
        return POLLERR;
    }
    match side {
        Side::Readers => {
            (if r.used > 0 { POLLIN | POLLRDNORM } else { 0 })
                | if r.no_writers { POLLHUP } else { 0 }
        }
        Side::Writers => {
            (if r.free > 0 { POLLOUT | POLLWRNORM } else { 0 })
                | if r.no_readers { POLLERR } else { 0 }
        }
    }
}
