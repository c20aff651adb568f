//! One file system for a whole process tree: a server's [`Fs`] reached by
//! requests, and the client side that turns [`Fs`] calls into them.
//!
//! This module owns the wire format of file-system requests and answers,
//! the server's validation of every request ([`Server::serve`]), and the client's
//! caches ([`Client`]). It knows nothing of how bytes travel: the glue
//! supplies a [`Transport`] (in `apps/posix`: a slot of a shared region, an
//! `Acall` to the server environment and a sleep on the slot's state word).
//!
//! **What is remote.** Everything with a name: the tree, every regular
//! file's bytes, directories, symbolic links, permission bits and times.
//! What stays in the client: devices (a name the server resolves to a
//! device gives the client its own local device inode of that kind, so the
//! console is always this process's console), pipe ends, the terminal, the
//! umask (sent with each request that creates), the clock (each request
//! carries the caller's `now`). Inode numbers are the server's; the
//! client's own inodes carry [`LOCAL`]. Zero-copy: an archive file's bytes
//! are answered by their place in the initrd, which the client maps too,
//! so `execve` of `/bin/busybox` copies nothing through the server.
//!
//! **Hostile clients.** A request is bytes a peer may have written; the
//! server parses it with bounds checks only (a short or malformed request
//! is `EINVAL`), checks every inode number it names (live, and a directory
//! where one is needed: `EBADF`/`ENOTDIR` otherwise, never a panic),
//! refuses reads and writes of anything but regular files (a device inode
//! of the server's tree would be the *server's* console), bounds a file's
//! size ([`MAX_FILE`], `EFBIG`) and answers at most [`MAX_DATA`] bytes. A
//! hold is only dropped if one is there. **Hostile servers/peers.** The
//! client parses answers with the same checks and turns anything
//! malformed into `EIO`; an archive range outside the client's own archive
//! is `EIO`. What a peer can still do: what any process of the tree can do
//! through system calls (all run as root), plus release holds it does not
//! own (an unlinked file another process still has open may be freed
//! early: its reads then fail with `EBADF`), and fake the answer to a
//! request that shares its slot (the transport's concern, see the glue).
//!
//! **Not done**: open-file descriptions stay per process, so two processes
//! that inherited one description do not share its offset (`{ ls; ls; } >
//! f` writes both at 0); a process killed from outside never drops its
//! holds (their files stay until the server ends).

use super::{Device, Fs, Ino};
use crate::linux::errno::*;
use crate::linux::*;
use alloc::vec::Vec;

/// Tag of the client's own (local) inode numbers.
pub const LOCAL: Ino = 1 << 40;
/// The most data bytes in one request or answer. Its request slots are
/// shared writable with every process of the run, so each of their pages
/// costs every `fork` and every process's end (about 500 guest
/// instructions a page): 16 KiB keeps a slot at 7 pages (18 at 60 KiB)
/// for a few more round trips on large file reads and writes.
pub const MAX_DATA: usize = 16 * 1024;
/// The largest regular file the server keeps (64 MiB).
pub const MAX_FILE: u64 = 64 << 20;
/// The largest request or answer, header and data.
pub const MAX_MESSAGE: usize = MAX_DATA + 2 * 4096;

/// How a client's requests reach the server.
pub trait Transport {
    /// Sends `req`, returns the answer's bytes (`EIO` when the server cannot
    /// be reached or does not answer).
    fn call(&mut self, req: &[u8]) -> SysResult<Vec<u8>>;
}

/// Request operations.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `(start, follow, path)` → `(ino, kind)`.
    Lookup = 1,
    /// `(start, flags, mode, path)` → `(ino, kind)` (the umask is the header's).
    Open,
    /// `(start, mode, path)` → `(ino, kind)`.
    Mkdir,
    /// `(start, path)`.
    Rmdir,
    /// `(start, path)`.
    Unlink,
    /// `(target, start, path)`.
    Symlink,
    /// `(ostart, old, nstart, new)`.
    Link,
    /// `(ostart, old, nstart, new)`.
    Rename,
    /// `(start, path)` → `target`.
    Readlink,
    /// `(start, mode, follow, path)`.
    Access,
    /// `(dir)` → `path`.
    PathOf,
    /// `(ino)` → `struct stat`, `kind`.
    Stat,
    /// `(ino, off, len)` → `bytes`.
    Read,
    /// `(ino, off, append, bytes)` → `(n, end)`.
    Write,
    /// `(ino, len)`.
    Truncate,
    /// `(ino, perm)`.
    SetPerm,
    /// `(ino, sec, nsec)`.
    SetMtime,
    /// `(ino)`.
    Hold,
    /// `(ino)`.
    Release,
    /// `(dir, index)` → entries `(ino, type, name)` until the data limit.
    Dirents,
    /// `(ino)` → `(off, len)` in the archive, or `u64::MAX`.
    Archive,
    /// `(ino)` → a new description of regular file `ino` (its hold, offset 0).
    DescOpen,
    /// `(handle)`: one more reference (a child inheriting it).
    DescDup,
    /// `(handle)`: one reference less; the last drops the inode's hold.
    DescClose,
    /// `(handle, len)` → `bytes`, read at the description's offset, which advances.
    DescRead,
    /// `(handle, append, bytes)` → `(n, end)`, written at the offset (or
    /// the end), which advances.
    DescWrite,
    /// `(handle, off, whence)` → the new offset (`lseek`).
    DescSeek,
}

impl Op {
    fn from_u8(b: u8) -> Option<Op> {
        use Op::*;
        [
            Lookup, Open, Mkdir, Rmdir, Unlink, Symlink, Link, Rename, Readlink, Access, PathOf,
            Stat, Read, Write, Truncate, SetPerm, SetMtime, Hold, Release, Dirents, Archive,
            DescOpen, DescDup, DescClose, DescRead, DescWrite, DescSeek,
        ]
        .into_iter()
        .find(|o| *o as u8 == b)
    }
}

/// What an inode is, as much as a client caches (it never changes while
/// the inode lives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RKind {
    /// A regular file or a symbolic link.
    Plain,
    /// A directory.
    Dir,
    /// A device (the client uses its own of this kind).
    Dev(Device),
}

impl RKind {
    fn code(self) -> u64 {
        match self {
            RKind::Plain => 0,
            RKind::Dir => 1,
            RKind::Dev(Device::Null) => 2,
            RKind::Dev(Device::Zero) => 3,
            RKind::Dev(Device::Tty) => 4,
            RKind::Dev(Device::Console) => 5,
            RKind::Dev(Device::ConsoleErr) => 6,
            RKind::Dev(Device::Pipe) => 7,
            RKind::Dev(Device::Chan) => 8,
        }
    }
    fn from_code(c: u64) -> Option<RKind> {
        Some(match c {
            0 => RKind::Plain,
            1 => RKind::Dir,
            2 => RKind::Dev(Device::Null),
            3 => RKind::Dev(Device::Zero),
            4 => RKind::Dev(Device::Tty),
            5 => RKind::Dev(Device::Console),
            6 => RKind::Dev(Device::ConsoleErr),
            7 => RKind::Dev(Device::Pipe),
            8 => RKind::Dev(Device::Chan),
            _ => return None,
        })
    }
}

// ---- the wire ----

/// Builds a message.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
}

/// Parses a message; every read is bounds-checked.
pub struct Reader<'b> {
    b: &'b [u8],
}

impl<'b> Reader<'b> {
    fn u64(&mut self) -> Option<u64> {
        let (h, t) = self.b.split_at_checked(8)?;
        self.b = t;
        Some(u64::from_le_bytes(h.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'b [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        let (h, t) = self.b.split_at_checked(n)?;
        self.b = t;
        Some(h)
    }
}

/// A request's header: the operation, the caller's clock and umask.
fn request(op: Op, now: Timespec, umask: u32) -> Writer {
    let mut w = Writer(Vec::with_capacity(64));
    w.u64(op as u64).u64(now.sec as u64).u64(now.nsec as u64).u64(u64::from(umask));
    w
}

// ---- the server ----

/// The most open-file descriptions a server keeps.
pub const MAX_DESCS: usize = 1 << 16;

/// An open-file description of a regular file, shared by the processes
/// that inherited it: its offset moves for all of them, as in Linux.
#[derive(Debug)]
struct Desc {
    ino: Ino,
    offset: u64,
    refs: u32,
}

/// A server: the tree and the open-file descriptions of regular files.
pub struct Server<'a> {
    /// The tree.
    pub fs: Fs<'a>,
    descs: alloc::collections::BTreeMap<u64, Desc>,
    next: u64,
}

impl<'a> Server<'a> {
    /// A server of `fs`.
    pub fn new(fs: Fs<'a>) -> Self {
        Server { fs, descs: Default::default(), next: 1 }
    }

    /// Answers one request `req`; the answer is `status` (0 or an errno)
    /// followed by the operation's results. Never panics, whatever `req`
    /// holds.
    pub fn serve(&mut self, req: &[u8]) -> Vec<u8> {
        let mut out = Writer(Vec::new());
        out.u64(0);
        match serve_inner(self, req, &mut out) {
            Ok(()) => {}
            Err(e) => {
                out.0.clear();
                out.u64(e.0 as u64);
            }
        }
        out.0
    }

    /// Live descriptions.
    pub fn descriptions(&self) -> usize {
        self.descs.len()
    }
}

/// `lseek`'s arithmetic (Linux's `generic_file_llseek` on a file of `size`
/// bytes at `cur`; `dir`: a directory, which only `SEEK_SET`/`SEEK_CUR` move).
pub fn seek(cur: u64, size: u64, dir: bool, off: i64, whence: u32) -> SysResult<u64> {
    let size = size as i64;
    let new = match whence {
        SEEK_SET => off,
        SEEK_CUR => (cur as i64).checked_add(off).ok_or(EOVERFLOW)?,
        SEEK_END if !dir => size.checked_add(off).ok_or(EOVERFLOW)?,
        SEEK_DATA | SEEK_HOLE if !dir => {
            if off < 0 || off >= size {
                return Err(ENXIO);
            }
            if whence == SEEK_DATA { off } else { size }
        }
        _ => return Err(EINVAL),
    };
    if new < 0 {
        return Err(EINVAL);
    }
    Ok(new as u64)
}

fn kind_of(fs: &Fs<'_>, ino: Ino) -> RKind {
    match fs.device(ino) {
        Some(d) => RKind::Dev(d),
        None if fs.is_dir(ino) => RKind::Dir,
        None => RKind::Plain,
    }
}

fn serve_inner(srv: &mut Server<'_>, req: &[u8], out: &mut Writer) -> SysResult<()> {
    let fs = &mut srv.fs;
    let mut r = Reader { b: req };
    let bad = EINVAL;
    let op = r.u64().and_then(|o| u8::try_from(o).ok()).and_then(Op::from_u8).ok_or(bad)?;
    let sec = r.u64().ok_or(bad)? as i64;
    let nsec = r.u64().ok_or(bad)? as i64;
    fs.now = Timespec { sec, nsec: nsec.clamp(0, 999_999_999) };
    fs.umask = r.u64().ok_or(bad)? as u32 & 0o777;
    // Inode arguments: live; `dir` ones directories.
    let live = |fs: &Fs<'_>, ino: u64| -> SysResult<Ino> {
        usize::try_from(ino).ok().filter(|&i| fs.live(i)).ok_or(EBADF)
    };
    let dir = |fs: &Fs<'_>, ino: u64| -> SysResult<Ino> {
        let i = live(fs, ino)?;
        if fs.is_dir(i) { Ok(i) } else { Err(ENOTDIR) }
    };
    let file = |fs: &Fs<'_>, ino: u64| -> SysResult<Ino> {
        let i = live(fs, ino)?;
        if fs.is_dir(i) {
            Err(EISDIR)
        } else if fs.device(i).is_some() || fs.readlink_ino(i).is_some() {
            Err(EINVAL)
        } else {
            Ok(i)
        }
    };
    match op {
        Op::Lookup => {
            let start = dir(fs, r.u64().ok_or(bad)?)?;
            let follow = r.u64().ok_or(bad)? != 0;
            let ino = fs.lookup(start, r.bytes().ok_or(bad)?, follow)?;
            out.u64(ino as u64).u64(kind_of(fs, ino).code());
        }
        Op::Open => {
            let start = dir(fs, r.u64().ok_or(bad)?)?;
            let flags = r.u64().ok_or(bad)? as u32;
            let mode = r.u64().ok_or(bad)? as u32;
            let ino = fs.open(start, r.bytes().ok_or(bad)?, flags, mode)?;
            out.u64(ino as u64).u64(kind_of(fs, ino).code());
        }
        Op::Mkdir => {
            let start = dir(fs, r.u64().ok_or(bad)?)?;
            let mode = r.u64().ok_or(bad)? as u32;
            let ino = fs.mkdir(start, r.bytes().ok_or(bad)?, mode)?;
            out.u64(ino as u64).u64(RKind::Dir.code());
        }
        Op::Rmdir | Op::Unlink | Op::Readlink => {
            let start = dir(fs, r.u64().ok_or(bad)?)?;
            let path = r.bytes().ok_or(bad)?;
            match op {
                Op::Rmdir => fs.rmdir(start, path)?,
                Op::Unlink => fs.unlink(start, path)?,
                _ => {
                    let t = fs.readlink(start, path)?;
                    out.bytes(&t);
                }
            }
        }
        Op::Symlink => {
            let target = r.bytes().ok_or(bad)?;
            let start = dir(fs, r.u64().ok_or(bad)?)?;
            fs.symlink(target, start, r.bytes().ok_or(bad)?)?;
        }
        Op::Link | Op::Rename => {
            let os = dir(fs, r.u64().ok_or(bad)?)?;
            let old = r.bytes().ok_or(bad)?;
            let ns = dir(fs, r.u64().ok_or(bad)?)?;
            let new = r.bytes().ok_or(bad)?;
            if op == Op::Link { fs.link(os, old, ns, new)? } else { fs.rename(os, old, ns, new)? }
        }
        Op::Access => {
            let start = dir(fs, r.u64().ok_or(bad)?)?;
            let mode = r.u64().ok_or(bad)? as u32;
            let follow = r.u64().ok_or(bad)? != 0;
            fs.access(start, r.bytes().ok_or(bad)?, mode, follow)?;
        }
        Op::PathOf => {
            let d = dir(fs, r.u64().ok_or(bad)?)?;
            let p = fs.path_of(d)?;
            out.bytes(&p);
        }
        Op::Stat => {
            let i = live(fs, r.u64().ok_or(bad)?)?;
            let st = fs.stat(i)?;
            out.bytes(&st.encode()).u64(kind_of(fs, i).code());
        }
        Op::Read => {
            let i = file(fs, r.u64().ok_or(bad)?)?;
            let off = r.u64().ok_or(bad)?;
            let len = (r.u64().ok_or(bad)?).min(MAX_DATA as u64) as usize;
            let mut buf = alloc::vec![0u8; len];
            let n = fs.read_at(i, off, &mut buf)?;
            out.bytes(&buf[..n]);
        }
        Op::Write => {
            let i = file(fs, r.u64().ok_or(bad)?)?;
            let off = r.u64().ok_or(bad)?;
            let append = r.u64().ok_or(bad)? != 0;
            let data = r.bytes().ok_or(bad)?;
            let off = if append { fs.size(i) } else { off };
            if off.checked_add(data.len() as u64).is_none_or(|end| end > MAX_FILE) {
                return Err(EFBIG);
            }
            let n = fs.write_at(i, off, data)?;
            out.u64(n as u64).u64(off + n as u64);
        }
        Op::Truncate => {
            let i = live(fs, r.u64().ok_or(bad)?)?;
            let len = r.u64().ok_or(bad)?;
            if len > MAX_FILE {
                return Err(EFBIG);
            }
            fs.truncate(i, len)?;
        }
        Op::SetPerm => {
            let i = live(fs, r.u64().ok_or(bad)?)?;
            fs.set_perm(i, r.u64().ok_or(bad)? as u32)?;
        }
        Op::SetMtime => {
            let i = live(fs, r.u64().ok_or(bad)?)?;
            let sec = r.u64().ok_or(bad)? as i64;
            let nsec = (r.u64().ok_or(bad)? as i64).clamp(0, 999_999_999);
            fs.set_mtime(i, Timespec { sec, nsec })?;
        }
        Op::Hold => {
            let i = live(fs, r.u64().ok_or(bad)?)?;
            if !fs.try_hold(i) {
                return Err(ENFILE);
            }
        }
        Op::Release => {
            let i = live(fs, r.u64().ok_or(bad)?)?;
            if !fs.try_release(i) {
                return Err(EBADF);
            }
        }
        Op::Dirents => {
            let d = dir(fs, r.u64().ok_or(bad)?)?;
            let mut index = usize::try_from(r.u64().ok_or(bad)?).map_err(|_| bad)?;
            let mut room = MAX_DATA;
            while let Some((ino, t, name)) = fs.dirent(d, index)? {
                if name.len() + 24 > room {
                    break;
                }
                room -= name.len() + 24;
                out.u64(ino).u64(u64::from(t)).bytes(&name);
                index += 1;
            }
        }
        Op::DescOpen => {
            let i = file(fs, r.u64().ok_or(bad)?)?;
            if srv.descs.len() >= MAX_DESCS || !fs.try_hold(i) {
                return Err(ENFILE);
            }
            let h = srv.next;
            srv.next += 1;
            srv.descs.insert(h, Desc { ino: i, offset: 0, refs: 1 });
            out.u64(h);
        }
        Op::DescDup => {
            let d = srv.descs.get_mut(&r.u64().ok_or(bad)?).ok_or(EBADF)?;
            d.refs = d.refs.checked_add(1).ok_or(ENFILE)?;
        }
        Op::DescClose => {
            let h = r.u64().ok_or(bad)?;
            let d = srv.descs.get_mut(&h).ok_or(EBADF)?;
            d.refs -= 1;
            if d.refs == 0 {
                let ino = d.ino;
                srv.descs.remove(&h);
                fs.try_release(ino);
            }
        }
        Op::DescRead => {
            let d = srv.descs.get_mut(&r.u64().ok_or(bad)?).ok_or(EBADF)?;
            let len = (r.u64().ok_or(bad)?).min(MAX_DATA as u64) as usize;
            let mut buf = alloc::vec![0u8; len];
            let n = fs.read_at(d.ino, d.offset, &mut buf)?;
            d.offset += n as u64;
            out.bytes(&buf[..n]);
        }
        Op::DescWrite => {
            let d = srv.descs.get_mut(&r.u64().ok_or(bad)?).ok_or(EBADF)?;
            let append = r.u64().ok_or(bad)? != 0;
            let data = r.bytes().ok_or(bad)?;
            let off = if append { fs.size(d.ino) } else { d.offset };
            if off.checked_add(data.len() as u64).is_none_or(|end| end > MAX_FILE) {
                return Err(EFBIG);
            }
            let n = fs.write_at(d.ino, off, data)?;
            d.offset = off + n as u64;
            out.u64(n as u64).u64(d.offset);
        }
        Op::DescSeek => {
            let d = srv.descs.get_mut(&r.u64().ok_or(bad)?).ok_or(EBADF)?;
            let off = r.u64().ok_or(bad)? as i64;
            let whence = u32::try_from(r.u64().ok_or(bad)?).map_err(|_| bad)?;
            d.offset = seek(d.offset, fs.size(d.ino), false, off, whence)?;
            out.u64(d.offset);
        }
        Op::Archive => {
            let i = live(fs, r.u64().ok_or(bad)?)?;
            match fs.archive_range(i) {
                Some((off, len)) => out.u64(off as u64).u64(len as u64),
                None => out.u64(u64::MAX).u64(0),
            };
        }
    }
    Ok(())
}

// ---- the client ----

/// One directory entry: `(st_ino, d_type, name)`.
pub type Dirent = (u64, u8, Vec<u8>);

/// The client's side: the transport and what it caches.
pub struct Client<'a> {
    t: alloc::boxed::Box<dyn Transport + 'a>,
    /// What each server inode seen lately is (refreshed by every answer
    /// that names an inode).
    kinds: alloc::collections::BTreeMap<Ino, RKind>,
    /// The last batch of directory entries: `(dir, first index, entries)`.
    dirents: Option<(Ino, usize, Vec<Dirent>)>,
}

impl core::fmt::Debug for Client<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client").field("kinds", &self.kinds.len()).finish()
    }
}

/// An answer: its status checked, its results to parse.
struct Answer {
    b: Vec<u8>,
    at: usize,
}

impl Answer {
    fn reader(&self) -> Reader<'_> {
        Reader { b: self.b.get(self.at..).unwrap_or(&[]) }
    }
}

impl<'a> Client<'a> {
    /// A client over `t`.
    pub fn new(t: alloc::boxed::Box<dyn Transport + 'a>) -> Self {
        Client { t, kinds: Default::default(), dirents: None }
    }

    fn call(&mut self, w: Writer) -> SysResult<Answer> {
        let b = self.t.call(&w.0)?;
        let mut r = Reader { b: &b };
        let status = r.u64().ok_or(EIO)?;
        if status != 0 {
            // Only a real errno; anything else is a broken answer.
            return Err(i32::try_from(status)
                .ok()
                .filter(|e| (1..4096).contains(e))
                .map_or(EIO, Errno));
        }
        Ok(Answer { b, at: 8 })
    }

    fn ino_kind(&mut self, a: &Answer) -> SysResult<(Ino, RKind)> {
        let mut r = a.reader();
        let ino =
            r.u64().and_then(|i| usize::try_from(i).ok()).filter(|&i| i < LOCAL).ok_or(EIO)?;
        let kind = r.u64().and_then(RKind::from_code).ok_or(EIO)?;
        self.kinds.insert(ino, kind);
        Ok((ino, kind))
    }

    /// Forgets cached directory listings (after a change by this client).
    fn changed(&mut self) {
        self.dirents = None;
    }

    /// What `ino` is (cached, else asked).
    pub fn kind(&mut self, ino: Ino, now: Timespec) -> SysResult<RKind> {
        if let Some(k) = self.kinds.get(&ino) {
            return Ok(*k);
        }
        self.stat(ino, now).map(|(_, k)| k)
    }

    /// `lookup`.
    pub fn lookup(
        &mut self,
        start: Ino,
        path: &[u8],
        follow: bool,
        now: Timespec,
    ) -> SysResult<(Ino, RKind)> {
        let mut w = request(Op::Lookup, now, 0);
        w.u64(start as u64).u64(follow as u64).bytes(path);
        let a = self.call(w)?;
        self.ino_kind(&a)
    }

    /// `open`'s name handling.
    pub fn open(
        &mut self,
        start: Ino,
        path: &[u8],
        flags: u32,
        mode: u32,
        now: Timespec,
        umask: u32,
    ) -> SysResult<(Ino, RKind)> {
        self.changed();
        let mut w = request(Op::Open, now, umask);
        w.u64(start as u64).u64(u64::from(flags)).u64(u64::from(mode)).bytes(path);
        let a = self.call(w)?;
        self.ino_kind(&a)
    }

    /// `mkdir`; returns the new directory.
    pub fn mkdir(
        &mut self,
        start: Ino,
        path: &[u8],
        mode: u32,
        now: Timespec,
        umask: u32,
    ) -> SysResult<Ino> {
        self.changed();
        let mut w = request(Op::Mkdir, now, umask);
        w.u64(start as u64).u64(u64::from(mode)).bytes(path);
        let a = self.call(w)?;
        self.ino_kind(&a).map(|r| r.0)
    }

    /// An operation on names with no result but its status.
    pub fn name_op(
        &mut self,
        op: Op,
        args: &[Arg<'_>],
        now: Timespec,
        umask: u32,
    ) -> SysResult<()> {
        self.changed();
        let mut w = request(op, now, umask);
        for a in args {
            match a {
                Arg::U(v) => w.u64(*v),
                Arg::B(b) => w.bytes(b),
            };
        }
        self.call(w).map(|_| ())
    }

    /// An operation whose result is one byte string.
    pub fn bytes_op(&mut self, op: Op, args: &[Arg<'_>], now: Timespec) -> SysResult<Vec<u8>> {
        let mut w = request(op, now, 0);
        for a in args {
            match a {
                Arg::U(v) => w.u64(*v),
                Arg::B(b) => w.bytes(b),
            };
        }
        let a = self.call(w)?;
        a.reader().bytes().map(<[u8]>::to_vec).ok_or(EIO)
    }

    /// `stat` and what the inode is.
    pub fn stat(&mut self, ino: Ino, now: Timespec) -> SysResult<(Stat, RKind)> {
        let mut w = request(Op::Stat, now, 0);
        w.u64(ino as u64);
        let a = self.call(w)?;
        let mut r = a.reader();
        let st = r.bytes().and_then(Stat::decode).ok_or(EIO)?;
        let kind = r.u64().and_then(RKind::from_code).ok_or(EIO)?;
        self.kinds.insert(ino, kind);
        Ok((st, kind))
    }

    /// Reads at most `buf.len()` (≤ [`MAX_DATA`] a request) bytes at `off`.
    pub fn read(&mut self, ino: Ino, off: u64, buf: &mut [u8], now: Timespec) -> SysResult<usize> {
        let mut done = 0;
        while done < buf.len() {
            let want = (buf.len() - done).min(MAX_DATA);
            let mut w = request(Op::Read, now, 0);
            w.u64(ino as u64).u64(off + done as u64).u64(want as u64);
            let a = self.call(w)?;
            let got = a.reader().bytes().filter(|b| b.len() <= want).ok_or(EIO)?;
            buf[done..done + got.len()].copy_from_slice(got);
            done += got.len();
            if got.len() < want {
                break;
            }
        }
        Ok(done)
    }

    /// Writes `data` at `off` (at the end when `append`); returns the bytes
    /// written and the offset after them.
    pub fn write(
        &mut self,
        ino: Ino,
        off: u64,
        append: bool,
        data: &[u8],
        now: Timespec,
    ) -> SysResult<(usize, u64)> {
        let mut done = 0;
        let mut end = off;
        loop {
            let chunk = &data[done..(done + MAX_DATA).min(data.len())];
            let mut w = request(Op::Write, now, 0);
            w.u64(ino as u64).u64(end).u64(append as u64).bytes(chunk);
            let a = match self.call(w) {
                Ok(a) => a,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            };
            let mut r = a.reader();
            let n = r.u64().filter(|&n| n <= chunk.len() as u64).ok_or(EIO)? as usize;
            end = r.u64().ok_or(EIO)?;
            done += n;
            if n < chunk.len() || done >= data.len() {
                break;
            }
        }
        Ok((done, end))
    }

    /// Entry `index` of `dir` (batched: one request per [`MAX_DATA`] of names).
    pub fn dirent(
        &mut self,
        dir: Ino,
        index: usize,
        now: Timespec,
    ) -> SysResult<Option<(u64, u8, Vec<u8>)>> {
        if let Some((d, first, v)) = &self.dirents
            && *d == dir
            && index >= *first
            && index < first + v.len()
        {
            return Ok(Some(v[index - first].clone()));
        }
        let mut w = request(Op::Dirents, now, 0);
        w.u64(dir as u64).u64(index as u64);
        let a = self.call(w)?;
        let mut r = a.reader();
        let mut v = Vec::new();
        while let Some(ino) = r.u64() {
            let t = r.u64().ok_or(EIO)?;
            let name = r.bytes().ok_or(EIO)?;
            v.push((ino, t as u8, name.to_vec()));
        }
        let first = v.first().cloned();
        self.dirents = Some((dir, index, v));
        Ok(first)
    }

    /// Where `ino`'s bytes are in the archive, if they still are its bytes.
    pub fn archive(&mut self, ino: Ino, now: Timespec) -> SysResult<Option<(usize, usize)>> {
        let mut w = request(Op::Archive, now, 0);
        w.u64(ino as u64);
        let a = self.call(w)?;
        let mut r = a.reader();
        let off = r.u64().ok_or(EIO)?;
        let len = r.u64().ok_or(EIO)?;
        if off == u64::MAX {
            return Ok(None);
        }
        Ok(Some((usize::try_from(off).map_err(|_| EIO)?, usize::try_from(len).map_err(|_| EIO)?)))
    }

    /// An operation on one inode with no result (`Hold`, `Release`,
    /// `Truncate`, `SetPerm`, `SetMtime`).
    pub fn ino_op(&mut self, op: Op, ino: Ino, args: &[u64], now: Timespec) -> SysResult<()> {
        if op == Op::Truncate {
            self.changed();
        }
        let mut w = request(op, now, 0);
        w.u64(ino as u64);
        for a in args {
            w.u64(*a);
        }
        self.call(w).map(|_| ())
    }
}

impl Client<'_> {
    /// A description of regular file `ino` in the server; its handle.
    pub fn desc_open(&mut self, ino: Ino, now: Timespec) -> SysResult<u64> {
        let mut w = request(Op::DescOpen, now, 0);
        w.u64(ino as u64);
        let a = self.call(w)?;
        a.reader().u64().filter(|&h| h != 0).ok_or(EIO)
    }

    /// `DescDup`/`DescClose`.
    pub fn desc_op(&mut self, op: Op, handle: u64, now: Timespec) -> SysResult<()> {
        let mut w = request(op, now, 0);
        w.u64(handle);
        self.call(w).map(|_| ())
    }

    /// Reads at the description's offset (which advances).
    pub fn desc_read(&mut self, handle: u64, buf: &mut [u8], now: Timespec) -> SysResult<usize> {
        let mut done = 0;
        while done < buf.len() {
            let want = (buf.len() - done).min(MAX_DATA);
            let mut w = request(Op::DescRead, now, 0);
            w.u64(handle).u64(want as u64);
            let a = match self.call(w) {
                Ok(a) => a,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            };
            let got = a.reader().bytes().filter(|b| b.len() <= want).ok_or(EIO)?;
            buf[done..done + got.len()].copy_from_slice(got);
            done += got.len();
            if got.len() < want {
                break;
            }
        }
        Ok(done)
    }

    /// Writes at the description's offset, or at the end when `append`;
    /// returns the bytes written and the new offset.
    pub fn desc_write(
        &mut self,
        handle: u64,
        append: bool,
        data: &[u8],
        now: Timespec,
    ) -> SysResult<(usize, u64)> {
        let mut done = 0;
        let mut end = 0;
        loop {
            let chunk = &data[done..(done + MAX_DATA).min(data.len())];
            let mut w = request(Op::DescWrite, now, 0);
            w.u64(handle).u64(append as u64).bytes(chunk);
            let a = match self.call(w) {
                Ok(a) => a,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            };
            let mut r = a.reader();
            let n = r.u64().filter(|&n| n <= chunk.len() as u64).ok_or(EIO)? as usize;
            end = r.u64().ok_or(EIO)?;
            done += n;
            if n < chunk.len() || done >= data.len() {
                break;
            }
        }
        Ok((done, end))
    }

    /// `lseek` of the description.
    pub fn desc_seek(
        &mut self,
        handle: u64,
        off: i64,
        whence: u32,
        now: Timespec,
    ) -> SysResult<u64> {
        let mut w = request(Op::DescSeek, now, 0);
        w.u64(handle).u64(off as u64).u64(u64::from(whence));
        let a = self.call(w)?;
        a.reader().u64().ok_or(EIO)
    }
}

/// An argument of [`Client::name_op`]/[`Client::bytes_op`].
#[derive(Clone, Copy, Debug)]
pub enum Arg<'p> {
    /// A number (an inode, flags, a mode).
    U(u64),
    /// A byte string (a path).
    B(&'p [u8]),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::tar;
    use crate::mock::MockConsole;
    use alloc::boxed::Box;
    use alloc::rc::Rc;
    use core::cell::RefCell;
    use proptest::prelude::*;

    fn serve(fs: &mut Server<'_>, req: &[u8]) -> Vec<u8> {
        fs.serve(req)
    }

    fn server() -> Server<'static> {
        Server::new(tree())
    }

    fn tree() -> Fs<'static> {
        let a = tar::build(&[
            (b"etc/motd", b'0', 0o644, b"", b"hello\n"),
            (b"bin/busybox", b'0', 0o755, b"", b"BB"),
            (b"bin/sh", b'2', 0o777, b"busybox", b""),
            (b"d/e", b'0', 0o644, b"", b"e"),
        ]);
        Fs::from_initrd(Box::leak(a.into_boxed_slice()), MockConsole::default().boxed()).unwrap()
    }

    fn status(a: &[u8]) -> u64 {
        u64::from_le_bytes(a[..8].try_into().unwrap())
    }

    /// A word a hostile request might hold: small inodes, huge values.
    fn word() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..40, any::<u64>(), Just(u64::MAX), Just(MAX_FILE), Just(LOCAL as u64)]
    }

    fn part() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            word().prop_map(|w| w.to_le_bytes().to_vec()),
            // A length prefix and bytes (often a path).
            (
                prop_oneof![
                    Just(&b"/tmp/x"[..]),
                    Just(&b"/"[..]),
                    Just(&b"d"[..]),
                    Just(&b"/d/e/.."[..]),
                    Just(&b""[..])
                ],
                any::<bool>()
            )
                .prop_map(|(p, lie)| {
                    let mut v = (if lie { p.len() as u64 + 1000 } else { p.len() as u64 })
                        .to_le_bytes()
                        .to_vec();
                    v.extend_from_slice(p);
                    v
                }),
            proptest::collection::vec(any::<u8>(), 0..12),
        ]
    }

    proptest! {
        /// Any bytes: an answer with a status, never a panic.
        #[test]
        fn garbage_requests_get_an_errno(req in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut fs = server();
            let a = serve(&mut fs, &req);
            prop_assert!(a.len() >= 8);
        }

        /// Well-formed headers with hostile arguments (dead and huge inode
        /// numbers, lying lengths, devices, holds never taken), many in a
        /// row on one tree: never a panic, the tree stays usable, and a
        /// write never grows a file past `MAX_FILE`.
        #[test]
        fn hostile_requests_never_hurt_the_server(
            reqs in proptest::collection::vec((1u8..=27, proptest::collection::vec(part(), 0..6)), 1..40)
        ) {
            let mut fs = server();
            for (op, parts) in reqs {
                let mut req = request(Op::from_u8(op).unwrap(), Timespec::default(), 0o022).0;
                for p in parts {
                    req.extend_from_slice(&p);
                }
                let a = serve(&mut fs, &req);
                prop_assert!(a.len() >= 8);
            }
            let root = fs.fs.root();
            prop_assert!(fs.fs.lookup(root, b"/bin/busybox", true).is_ok());
            for i in 0..fs.fs.nodes.len() {
                if fs.fs.live(i) {
                    prop_assert!(fs.fs.size(i) <= MAX_FILE);
                }
            }
        }

        /// A client given garbage answers gets errors (or garbage values),
        /// never a panic, and never a slice outside its own archive.
        #[test]
        fn garbage_answers_never_hurt_the_client(answers in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..20)) {
            struct Liar(Vec<Vec<u8>>);
            impl Transport for Liar {
                fn call(&mut self, _req: &[u8]) -> SysResult<Vec<u8>> {
                    let mut a = self.0.pop().unwrap_or_default();
                    if a.len() >= 8 && a[0] & 1 == 0 {
                        a[..8].copy_from_slice(&0u64.to_le_bytes()); // often "success"
                    }
                    Ok(a)
                }
            }
            let mut fs = tree();
            let archive = fs.archive;
            fs.set_remote(Box::new(Liar(answers)));
            let root = fs.root();
            let _ = fs.lookup(root, b"/etc/motd", true);
            let _ = fs.stat(3);
            let _ = fs.open(root, b"/tmp/x", O_CREAT | O_RDWR, 0o644);
            let mut buf = [0u8; 100];
            let _ = fs.read_at(3, 0, &mut buf);
            let _ = fs.write(3, 0, true, b"abc");
            let _ = fs.dirent(root, 0);
            let _ = fs.readlink(root, b"/bin/sh");
            let _ = fs.contents(5);
            if let Some(b) = fs.archive_bytes(4) {
                let (s, e) = (archive.as_ptr() as usize, archive.as_ptr() as usize + archive.len());
                prop_assert!(b.as_ptr() as usize >= s && b.as_ptr() as usize + b.len() <= e);
            }
        }
    }

    /// A description shared by two processes (a child inherited it): one
    /// offset, written in turn; its file held until the last reference.
    #[test]
    fn descriptions_share_one_offset() {
        let srv = Rc::new(RefCell::new(server()));
        let mut a = Client::new(Box::new(Loop(srv.clone())));
        let now = Timespec::default();
        let r = srv.borrow().fs.root();
        let (f, _) = a.open(r, b"/tmp/log", O_CREAT | O_WRONLY, 0o644, now, 0o022).unwrap();
        let h = a.desc_open(f, now).unwrap();
        a.desc_op(Op::DescDup, h, now).unwrap(); // the child's reference
        assert_eq!(a.desc_write(h, false, b"parent\n", now), Ok((7, 7)));
        assert_eq!(
            a.desc_write(h, false, b"child\n", now),
            Ok((6, 13)),
            "after the parent's bytes"
        );
        assert_eq!(a.desc_seek(h, 0, SEEK_SET, now), Ok(0));
        let mut buf = [0u8; 32];
        assert_eq!(a.read(f, 0, &mut buf, now), Ok(13));
        assert_eq!(&buf[..13], b"parent\nchild\n");
        a.name_op(Op::Unlink, &[Arg::U(r as u64), Arg::B(b"/tmp/log")], now, 0).unwrap();
        a.desc_op(Op::DescClose, h, now).unwrap();
        assert_eq!(
            a.desc_read(h, &mut buf, now),
            Ok(13),
            "unlinked, still open: read from the seek's 0"
        );
        let n = srv.borrow().fs.inode_count();
        a.desc_op(Op::DescClose, h, now).unwrap();
        assert_eq!(
            srv.borrow().fs.inode_count(),
            n - 1,
            "the unlinked file goes with the last reference"
        );
        assert_eq!(a.desc_op(Op::DescClose, h, now), Err(EBADF));
        assert_eq!(a.desc_read(h, &mut buf, now), Err(EBADF));
        assert_eq!(srv.borrow().descriptions(), 0);
    }

    /// A transport straight into a server.
    struct Loop(Rc<RefCell<Server<'static>>>);
    impl Transport for Loop {
        fn call(&mut self, req: &[u8]) -> SysResult<Vec<u8>> {
            Ok(self.0.borrow_mut().serve(req))
        }
    }

    #[test]
    fn devices_and_links_are_not_read_by_the_server() {
        let mut fs = server();
        let r = fs.fs.root();
        for path in [&b"/dev/tty"[..], b"/dev/console", b"/bin/sh"] {
            let ino = fs.fs.lookup(r, path, false).unwrap();
            let mut w = request(Op::Read, Timespec::default(), 0);
            w.u64(ino as u64).u64(0).u64(10);
            assert_eq!(status(&serve(&mut fs, &w.0)), EINVAL.0 as u64, "{path:?}");
            let mut w = request(Op::Write, Timespec::default(), 0);
            w.u64(ino as u64).u64(0).u64(0).bytes(b"x");
            assert_eq!(status(&serve(&mut fs, &w.0)), EINVAL.0 as u64);
        }
        // A release without a hold is refused, not an underflow.
        let motd = fs.fs.lookup(r, b"/etc/motd", true).unwrap();
        let mut w = request(Op::Release, Timespec::default(), 0);
        w.u64(motd as u64);
        assert_eq!(status(&serve(&mut fs, &w.0)), EBADF.0 as u64);
        // A write past MAX_FILE is EFBIG.
        let mut w = request(Op::Write, Timespec::default(), 0);
        w.u64(motd as u64).u64(MAX_FILE).u64(0).bytes(b"x");
        assert_eq!(status(&serve(&mut fs, &w.0)), EFBIG.0 as u64);
    }
}
