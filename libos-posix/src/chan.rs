//! `/dev/chan/NAME`: a descriptor on a channel of the async library OS, so
//! that a POSIX program (a shell pipeline among them) talks to a service
//! built on `libos-async` — the two library OSes side by side.
//!
//! This module owns the process's channel ends: which device inode is
//! which connection, the bytes of a received message not read yet, and
//! Linux-like descriptor semantics on top of the glue's [`ChanHost`], which
//! does the channel work (`libos_async::channel::connect`, the rings).
//!
//! Semantics (there is no Linux counterpart; these are the rules):
//! - `open("/dev/chan/NAME", …)` connects to the server environment named
//!   NAME (`ENOENT` if none answers within the glue's wait, `ENAMETOOLONG`
//!   for a name over [`NAME_MAX`] bytes, `EINVAL` for an empty name or one
//!   with `/`). Only the absolute spelling is recognized.
//! - each `write` sends **one message** of at most [`ChanHost::max_message`]
//!   bytes (the server's ring geometry: `kv`'s is 56); a longer write sends that much and returns the count (as a short
//!   write; callers loop). A server that closed or died: `EPIPE` after
//!   `SIGPIPE`, as a pipe with no reader.
//! - `read` returns bytes of the received messages as a **stream**: a
//!   message larger than the buffer is read in several calls, and a
//!   message never mixes with the next one in one read (so a reply line is
//!   never split from its message by a short buffer's accident more than
//!   a pipe would). Blocks while nothing is there (`EAGAIN` under
//!   `O_NONBLOCK`); a signal cuts the wait short (`EINTR`, or restarted
//!   under `SA_RESTART`); 0 (end of file) once the server closed or died
//!   and everything it sent was read. Empty messages are skipped.
//! - `lseek` is `ESPIPE`; `fstat` says a character device (`10, 200`,
//!   Linux's misc major); `poll` reports it always readable and writable
//!   (the default mask: not a real readiness test yet).
//! - after `fork` a connection stays with the environment that made it (its
//!   rings are that environment's): a child's first use of an inherited
//!   descriptor opens a **new connection** to the same name, so replies to
//!   the parent's requests never reach the child. Bytes of a message the
//!   parent had received and not read are the parent's alone.
//! - the last close of the description closes the connection.

use crate::fs::{Device, Ino};
use crate::host::UserMemory;
use crate::linux::errno::*;
use crate::linux::*;
use crate::signal::ERESTARTSYS;
use crate::syscalls::{OpenFile, Process};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

/// The prefix of a channel's path.
pub const PREFIX: &[u8] = b"/dev/chan/";
/// The longest channel name.
pub const NAME_MAX: usize = 64;
/// How long one wait for a message lasts before the signal check.
const WAIT_SLICE_NS: u64 = 20_000_000;

/// What the glue does for the channel ends (implemented with
/// `libos_async::channel`, and by `mock` in the tests).
pub trait ChanHost {
    /// Connects to the server environment named `name`; returns a
    /// connection id (`ENOENT`: no such server answered).
    fn connect(&mut self, name: &[u8]) -> SysResult<u64>;
    /// Sends one message (at most [`max_message`](Self::max_message) bytes of
    /// the connection),
    /// waiting for room. `EPIPE`: the server closed or died.
    fn send(&mut self, conn: u64, msg: &[u8]) -> SysResult<()>;
    /// Receives one message into `buf` (`max_message(conn)` long), waiting up to
    /// `wait_ns` for one (0: not at all). `Ok(Some(len))`; `Ok(None)`: the
    /// server closed or died and nothing is left; `EAGAIN`: none came in
    /// time; `EIO`: the channel is corrupt.
    fn recv(&mut self, conn: u64, buf: &mut [u8], wait_ns: u64) -> SysResult<Option<usize>>;
    /// Closes a connection (its rings, its liveness token).
    fn close(&mut self, conn: u64);
    /// The largest message either way on connection `conn` (0 if unknown).
    fn max_message(&mut self, conn: u64) -> usize;
    /// Forgets a connection inherited across `fork` without touching it
    /// (its rings are the parent's).
    fn forget(&mut self, conn: u64);
}

/// A host with no channels (every open is `ENODEV`).
struct NoChannels;

impl ChanHost for NoChannels {
    fn connect(&mut self, _: &[u8]) -> SysResult<u64> {
        Err(ENODEV)
    }
    fn send(&mut self, _: u64, _: &[u8]) -> SysResult<()> {
        Err(EPIPE)
    }
    fn recv(&mut self, _: u64, _: &mut [u8], _: u64) -> SysResult<Option<usize>> {
        Ok(None)
    }
    fn close(&mut self, _: u64) {}
    fn max_message(&mut self, _: u64) -> usize {
        0
    }
    fn forget(&mut self, _: u64) {}
}

/// One channel end (one open description's device inode).
#[derive(Debug)]
struct End {
    name: Vec<u8>,
    /// The connection, if this environment has one (`None` after a fork,
    /// until the first use reconnects).
    conn: Option<u64>,
    /// A received message's bytes not read yet, from `at`.
    pending: Vec<u8>,
    at: usize,
    /// The server closed or died, and `pending` is all that is left.
    ended: bool,
}

/// A process's channel ends.
pub struct Chans<'a> {
    ends: BTreeMap<Ino, End>,
    pub(crate) host: Box<dyn ChanHost + 'a>,
}

impl Default for Chans<'_> {
    fn default() -> Self {
        Chans { ends: BTreeMap::new(), host: Box::new(NoChannels) }
    }
}

impl<'a> Process<'a> {
    /// Gives the process its channel host (without one, opening
    /// `/dev/chan/…` is `ENODEV`).
    pub fn set_chan_host(&mut self, host: Box<dyn ChanHost + 'a>) {
        self.chans.host = host;
    }
}

/// Whether `ino` is a channel end of this process.
pub(crate) fn is_chan(p: &Process<'_>, ino: Ino) -> bool {
    p.chans.ends.contains_key(&ino)
}

/// The channel name of `path` if it names one.
pub(crate) fn name_of(path: &[u8]) -> Option<&[u8]> {
    path.strip_prefix(PREFIX)
}

/// `openat` of `/dev/chan/NAME`: connects and installs a descriptor.
pub(crate) fn open(p: &mut Process<'_>, name: &[u8], flags: u32) -> SysResult<u64> {
    if name.is_empty() || name.contains(&b'/') {
        return Err(EINVAL);
    }
    if name.len() > NAME_MAX {
        return Err(ENAMETOOLONG);
    }
    if flags & (O_DIRECTORY | O_TRUNC) != 0 {
        return Err(if flags & O_DIRECTORY != 0 { ENOTDIR } else { EINVAL });
    }
    let conn = p.chans.host.connect(name)?;
    let ino = p.fs.anonymous_device(Device::Chan);
    p.fs.hold(ino);
    p.chans.ends.insert(
        ino,
        End { name: name.to_vec(), conn: Some(conn), pending: Vec::new(), at: 0, ended: false },
    );
    let keep = (flags & !(O_CREAT | O_EXCL | O_NOCTTY | O_CLOEXEC)) | O_LARGEFILE;
    let d = Rc::new(RefCell::new(OpenFile { ino, flags: keep, offset: 0, handle: 0 }));
    match p.fds.insert(d.clone(), flags & O_CLOEXEC != 0, 0) {
        Ok(fd) => Ok(fd as u64),
        Err(e) => {
            p.release(d);
            Err(e)
        }
    }
}

/// The end's connection, made again after a fork.
fn connection(p: &mut Process<'_>, ino: Ino) -> SysResult<u64> {
    let end = p.chans.ends.get_mut(&ino).ok_or(EBADF)?;
    if let Some(c) = end.conn {
        return Ok(c);
    }
    let c = p.chans.host.connect(&end.name).map_err(|_| EIO)?;
    end.conn = Some(c);
    Ok(c)
}

/// `read` of a channel end.
pub(crate) fn read(
    p: &mut Process<'_>,
    ino: Ino,
    flags: u32,
    buf: u64,
    count: u64,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    if count == 0 {
        return Ok(0);
    }
    loop {
        let end = p.chans.ends.get_mut(&ino).ok_or(EBADF)?;
        if end.at < end.pending.len() {
            let n = (end.pending.len() - end.at).min(count as usize);
            mem.write(buf, &end.pending[end.at..end.at + n])?;
            end.at += n;
            if end.at == end.pending.len() {
                end.pending.clear();
                end.at = 0;
            }
            return Ok(n as u64);
        }
        if end.ended {
            return Ok(0);
        }
        let conn = connection(p, ino)?;
        let mut msg = vec![0u8; p.chans.host.max_message(conn)];
        let wait = if flags & O_NONBLOCK != 0 { 0 } else { WAIT_SLICE_NS };
        let got = p.chans.host.recv(conn, &mut msg, wait);
        let end = p.chans.ends.get_mut(&ino).ok_or(EBADF)?;
        match got {
            Ok(Some(n)) => {
                msg.truncate(n);
                end.pending = msg;
                end.at = 0;
            }
            Ok(None) => end.ended = true,
            Err(EAGAIN) if flags & O_NONBLOCK != 0 => return Err(EAGAIN),
            Err(EAGAIN) => {
                // A signal cuts the wait short: restarted under SA_RESTART,
                // else EINTR (`crate::signal`).
                if p.signals.interrupting() {
                    return Err(ERESTARTSYS);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// `write` of a channel end: one message.
pub(crate) fn write(
    p: &mut Process<'_>,
    ino: Ino,
    buf: u64,
    count: u64,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    let conn = connection(p, ino)?;
    let n = (count as usize).min(p.chans.host.max_message(conn));
    let mut msg = vec![0u8; n];
    mem.read(buf, &mut msg)?;
    match p.chans.host.send(conn, &msg) {
        Ok(()) => Ok(n as u64),
        Err(EPIPE) => {
            p.signals.raise_kernel(SIGPIPE);
            Err(EPIPE)
        }
        Err(e) => Err(e),
    }
}

/// The last description of `ino` closed: its connection goes.
pub(crate) fn released(p: &mut Process<'_>, ino: Ino) {
    if let Some(end) = p.chans.ends.remove(&ino)
        && let Some(c) = end.conn
    {
        p.chans.host.close(c);
    }
}

/// In a forked child: the inherited connections are the parent's.
pub(crate) fn forked_child(p: &mut Process<'_>) {
    for end in p.chans.ends.values_mut() {
        if let Some(c) = end.conn.take() {
            p.chans.host.forget(c);
        }
        end.pending.clear();
        end.at = 0;
    }
}

/// `SIGPIPE`'s number.
const SIGPIPE: u32 = 13;

// Tests: `syscalls::tests` (`chan_*`), through the system calls.
