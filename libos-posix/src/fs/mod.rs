//! The file system: the initrd's tree under a writable in-memory layer, and
//! the devices.
//!
//! This module owns every inode and directory of the process's view of
//! files, path resolution, and the Linux semantics and errno values of
//! operations on names (`open`, `mkdir`, `rename`, ...) and on inodes
//! (`read_at`, `write_at`, `stat`, directory listing). Descriptors and file
//! offsets are not here ([`crate::fd`], [`crate::syscalls`]).
//!
//! **One tree, copy-up on write.** At start the ustar archive is walked once
//! ([`tar`]) and every entry becomes an inode of one in-memory tree: a
//! regular file's contents are a slice *of the archive* ([`Data::Archive`],
//! zero-copy), directories are in-memory maps. The first write or truncate
//! of an archive file copies it into owned memory ([`Data::Owned`]); names
//! can be created, renamed and removed anywhere. So nothing is `EROFS`: the
//! behaviour is Linux's own for an initramfs, which the kernel unpacks into
//! a writable `tmpfs`. The archive is never written.
//!
//! **Inodes** live in an arena indexed by [`Ino`]; an inode is freed when it
//! has no name left (`nlink == 0`) and no holder (open descriptions, a
//! working directory: [`Fs::hold`]/[`Fs::release`]), as in Linux, so an
//! unlinked file stays readable through its open descriptors. Hard links
//! (tar type `1`) share an inode; symbolic links (type `2`) are followed
//! during resolution, at most 40 per lookup (`ELOOP`, as Linux's
//! `MAXSYMLINKS`). Directories cannot be hard-linked, so each has one
//! parent, which `..` and `getcwd` use.
//!
//! **Devices**: `/dev/null`, `/dev/zero`, `/dev/tty` and `/dev/console`
//! (both the [`Console`]). Seeking `/dev/null` and `/dev/zero` succeeds and
//! yields 0 (`drivers/char/mem.c`: `null_lseek`); terminals are `ESPIPE`.
//!
//! The process runs as root (uid 0): permission bits are kept and reported
//! but, as for Linux's root, only `X_OK` on a non-directory consults them.

pub mod remote;
pub mod tar;

use crate::host::Console;
use crate::linux::errno::*;
use crate::linux::*;
use crate::path;
use crate::tty::Tty;
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::RefCell;
use remote::{Arg, LOCAL, Op, RKind};

/// An inode's index in the arena (`st_ino` is this plus one).
pub type Ino = usize;

/// Longest chain of symbolic links in one lookup (Linux `MAXSYMLINKS`).
pub const MAX_SYMLINKS: u32 = 40;
/// The fixed umask applied to created files and directories.
pub const UMASK: u32 = 0o022;
/// `st_dev` of every inode.
pub const DEV: u64 = 1;

/// A regular file's contents.
#[derive(Debug)]
pub enum Data<'a> {
    /// Still the archive's bytes (never written).
    Archive(&'a [u8]),
    /// Copied up, or created here.
    Owned(Vec<u8>),
}

impl Data<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Archive(b) => b,
            Data::Owned(v) => v,
        }
    }
    /// The owned bytes (copied up first if need be), with room for `len`
    /// bytes; `ENOSPC` when memory for them cannot be had (the heap says
    /// so instead of failing: a file server must survive a client's
    /// too-large file).
    fn owned(&mut self, len: usize) -> SysResult<&mut Vec<u8>> {
        if let Data::Archive(b) = self {
            let mut v = Vec::new();
            v.try_reserve_exact(b.len().max(len)).map_err(|_| ENOSPC)?;
            v.extend_from_slice(b);
            *self = Data::Owned(v);
        }
        match self {
            Data::Owned(v) => {
                v.try_reserve(len.saturating_sub(v.len())).map_err(|_| ENOSPC)?;
                Ok(v)
            }
            Data::Archive(_) => unreachable!("copied up above"),
        }
    }
}

/// A device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// `/dev/null`.
    Null,
    /// `/dev/zero`.
    Zero,
    /// `/dev/tty` (the console: this process's controlling terminal).
    Tty,
    /// `/dev/console`.
    Console,
    /// The console as the program's standard error (descriptor 2 at start;
    /// named nowhere): the same terminal, written through
    /// [`Console::write_err`] so that the glue can keep the program's
    /// stderr apart from its stdout.
    ConsoleErr,
    /// One end of a pipe (named nowhere; `pipe2` makes it). Its bytes are
    /// not here: the system calls hand pipe descriptions to [`crate::pipe`]
    /// before the file system sees them; this inode gives the end its
    /// `stat` (a FIFO) and its holders.
    Pipe,
    /// A channel of the async library OS opened as `/dev/chan/NAME`
    /// (named nowhere in the tree; [`crate::chan`] moves its bytes).
    Chan,
}

impl Device {
    fn rdev(self) -> u64 {
        match self {
            Device::Null => makedev(1, 3),
            Device::Zero => makedev(1, 5),
            Device::Tty => makedev(5, 0),
            Device::Console | Device::ConsoleErr => makedev(5, 1),
            Device::Pipe => 0,
            Device::Chan => makedev(10, 200),
        }
    }
    /// Whether it is a terminal (`TCGETS` works, seeking is `ESPIPE`).
    pub fn is_tty(self) -> bool {
        matches!(self, Device::Tty | Device::Console | Device::ConsoleErr)
    }
}

/// What an inode is.
#[derive(Debug)]
pub enum Kind<'a> {
    /// A directory: its names, and its parent (the root is its own parent).
    Dir {
        /// Names to inodes (sorted: `getdents64` lists in this order).
        entries: BTreeMap<Vec<u8>, Ino>,
        /// The directory holding this one.
        parent: Ino,
    },
    /// A regular file.
    File(Data<'a>),
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
    /// A character device.
    Dev(Device),
}

/// An inode.
#[derive(Debug)]
pub struct Node<'a> {
    /// What it is.
    pub kind: Kind<'a>,
    /// Permission bits (`0o7777`).
    pub perm: u32,
    /// Names referring to it (0 once removed).
    pub nlink: u32,
    /// Open descriptions and working directories referring to it.
    holders: u32,
    /// Last modification.
    pub mtime: Timespec,
    /// Last status change.
    pub ctime: Timespec,
}

/// Why an initrd could not become a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The archive is malformed.
    Tar(tar::TarError),
    /// An entry could not be placed (its name and the errno).
    Entry(Vec<u8>, Errno),
}

/// The file system of one process.
pub struct Fs<'a> {
    nodes: Vec<Option<Node<'a>>>,
    free: Vec<Ino>,
    root: Ino,
    console: Box<dyn Console + 'a>,
    /// The console's terminal state (line discipline, settings).
    pub tty: Tty,
    /// The time stamped on changes (set by the dispatcher from its clock).
    pub now: Timespec,
    /// The file-mode creation mask (`umask`; [`UMASK`] at start).
    pub umask: u32,
    /// The archive the tree was built from (empty for [`Fs::new`]).
    archive: &'a [u8],
    /// The server, when this process's tree is another environment's
    /// ([`remote`]); `None`: the tree is this one.
    remote: Option<RefCell<remote::Client<'a>>>,
    /// Local inodes standing for the server's devices (`Null`, `Zero`,
    /// `Tty`, `Console`), in remote mode.
    local_devs: [Ino; 4],
}

impl core::fmt::Debug for Fs<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Fs").field("inodes", &(self.nodes.len() - self.free.len())).finish()
    }
}

/// The parent directory and last name of a path about to be created or
/// removed.
struct Parent<'p> {
    dir: Ino,
    /// Empty when the path is `/`.
    name: &'p [u8],
    trailing_slash: bool,
}

impl<'a> Fs<'a> {
    /// An empty tree (just `/`, `/dev` with its devices, and `/tmp`).
    pub fn new(console: Box<dyn Console + 'a>) -> Self {
        let tty = Tty::new(console.winsize(), 1);
        let mut fs = Fs {
            nodes: Vec::new(),
            free: Vec::new(),
            root: 0,
            console,
            tty,
            now: Timespec::default(),
            umask: UMASK,
            archive: &[],
            remote: None,
            local_devs: [0; 4],
        };
        let root = fs.alloc(Kind::Dir { entries: BTreeMap::new(), parent: 0 }, 0o755);
        fs.node_mut(root).nlink = 1;
        fs.root = root;
        fs.populate_defaults();
        fs
    }

    /// The tree of a ustar `archive` (zero-copy), plus `/dev` and `/tmp` if
    /// the archive lacks them. Later entries replace earlier ones of the same
    /// name, as `tar x` does; device and FIFO entries are skipped.
    pub fn from_initrd(
        archive: &'a [u8],
        console: Box<dyn Console + 'a>,
    ) -> Result<Self, BuildError> {
        let mut fs = Fs::new(console);
        fs.archive = archive;
        for e in tar::entries(archive).map_err(BuildError::Tar)? {
            fs.now = Timespec { sec: e.mtime as i64, nsec: 0 };
            let name = e.name.clone();
            fs.add_entry(e).map_err(|err| BuildError::Entry(name, err))?;
        }
        fs.now = Timespec::default();
        Ok(fs)
    }

    fn populate_defaults(&mut self) {
        let root = self.root;
        let dev = match self.lookup_here(root, b"/dev", true) {
            Ok(d) => d,
            Err(_) => self.mkdir_here(root, b"/dev", 0o755).expect("fresh /dev"),
        };
        for (name, d) in [
            (&b"null"[..], Device::Null),
            (b"zero", Device::Zero),
            (b"tty", Device::Tty),
            (b"console", Device::Console),
        ] {
            if !self.entries(dev).contains_key(name) {
                let ino = self.alloc(Kind::Dev(d), 0o666);
                self.link_into(dev, name, ino);
            }
        }
        if self.lookup_here(root, b"/tmp", true).is_err() {
            let tmp = self.mkdir_here(root, b"/tmp", 0o777).expect("fresh /tmp");
            self.node_mut(tmp).perm = 0o1777;
        }
    }

    fn add_entry(&mut self, e: tar::Entry<'a>) -> SysResult<()> {
        let name: &[u8] = &e.name;
        if path::components(name).next().is_none() {
            return Ok(()); // "./" or "/": the root itself.
        }
        path::check(name)?;
        // Make the parents (`mkdir -p`), archives may omit them.
        let (dir_part, last, _) = path::split_last(name);
        let mut dir = self.root;
        for c in path::components(dir_part) {
            dir = match c {
                b"." => dir,
                b".." => return Err(EINVAL),
                c => match self.entries(dir).get(c) {
                    Some(&d) if self.is_dir_here(d) => d,
                    Some(_) => return Err(ENOTDIR),
                    None => {
                        let d = self.new_dir(dir, 0o755);
                        self.link_into(dir, c, d);
                        d
                    }
                },
            };
        }
        if last == b"." || last == b".." {
            return Err(EINVAL);
        }
        if let tar::Kind::Dir = e.kind
            && let Some(&d) = self.entries(dir).get(last)
            && self.is_dir_here(d)
        {
            // An existing directory (the defaults, or a parent made
            // earlier) takes the entry's rights and time, as `tar x` does.
            let now = self.now;
            let n = self.node_mut(d);
            n.perm = e.mode;
            n.mtime = now;
            return Ok(());
        }
        let ino = match e.kind {
            tar::Kind::File(data) => self.alloc(Kind::File(Data::Archive(data)), e.mode),
            tar::Kind::Symlink(target) => self.alloc(Kind::Symlink(target.to_vec()), 0o777),
            tar::Kind::Dir => self.new_dir(dir, e.mode),
            tar::Kind::HardLink(target) => {
                let t = self.lookup_here(self.root, target, false)?;
                if self.is_dir_here(t) {
                    return Err(EPERM);
                }
                t
            }
            tar::Kind::Other(_) => return Ok(()),
        };
        if let Some(&old) = self.entries(dir).get(last) {
            if self.is_dir_here(old) {
                return Err(EISDIR);
            }
            self.unlink_from(dir, last);
        }
        self.link_into(dir, last, ino);
        Ok(())
    }

    // ---- the arena ----

    fn alloc(&mut self, kind: Kind<'a>, perm: u32) -> Ino {
        let node = Node {
            kind,
            perm: perm & 0o7777,
            nlink: 0,
            holders: 0,
            mtime: self.now,
            ctime: self.now,
        };
        match self.free.pop() {
            Some(i) => {
                self.nodes[i] = Some(node);
                i
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        }
    }

    fn new_dir(&mut self, parent: Ino, perm: u32) -> Ino {
        self.alloc(Kind::Dir { entries: BTreeMap::new(), parent }, perm)
    }

    fn maybe_free(&mut self, ino: Ino) {
        let n = self.node(ino);
        if n.nlink == 0 && n.holders == 0 && ino != self.root {
            self.nodes[ino] = None;
            self.free.push(ino);
        }
    }

    /// The inode `ino` (which must be live).
    pub fn node(&self, ino: Ino) -> &Node<'a> {
        self.nodes[ino].as_ref().expect("live inode")
    }

    /// Sets the permission bits of `ino` (`chmod`; the change time is now).
    fn set_perm_here(&mut self, ino: Ino, perm: u32) {
        let now = self.now;
        let n = self.node_mut(ino);
        n.perm = perm & 0o7777;
        n.ctime = now;
    }

    /// Sets the modification time of `ino` (`utimensat`; this tree keeps
    /// no access time, `stat` reports the modification time for both; the
    /// change time is now).
    fn set_mtime_here(&mut self, ino: Ino, mtime: Timespec) {
        let now = self.now;
        let n = self.node_mut(ino);
        n.mtime = mtime;
        n.ctime = now;
    }

    fn node_mut(&mut self, ino: Ino) -> &mut Node<'a> {
        self.nodes[ino].as_mut().expect("live inode")
    }

    /// Number of live inodes.
    pub fn inode_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// A device inode with no name (freed when its last holder goes): the
    /// standard error description [`Device::ConsoleErr`].
    fn anonymous_device_here(&mut self, d: Device) -> Ino {
        self.alloc(Kind::Dev(d), 0o620)
    }

    /// A new unnamed inode for one end of a pipe (`prw-------`, as Linux's
    /// pipefs gives); freed with its last holder.
    fn anonymous_pipe_here(&mut self) -> Ino {
        self.alloc(Kind::Dev(Device::Pipe), 0o600)
    }

    /// The contents of regular file `ino` while they are still the
    /// archive's bytes (never written): a slice that outlives the tree, for
    /// a loader that maps the program while the tree is borrowed elsewhere.
    fn archive_bytes_here(&self, ino: Ino) -> Option<&'a [u8]> {
        match self.node(ino).kind {
            Kind::File(Data::Archive(b)) => Some(b),
            _ => None,
        }
    }

    /// Records one more holder of `ino` (an open description, a cwd).
    fn hold_here(&mut self, ino: Ino) {
        self.node_mut(ino).holders += 1;
    }

    /// Drops a holder of `ino`; frees it if it has no name and no holder.
    fn release_here(&mut self, ino: Ino) {
        let n = self.node_mut(ino);
        n.holders -= 1;
        self.maybe_free(ino);
    }

    /// The root directory.
    pub fn root(&self) -> Ino {
        self.root
    }

    /// Whether `ino` is a directory.
    fn is_dir_here(&self, ino: Ino) -> bool {
        matches!(self.node(ino).kind, Kind::Dir { .. })
    }

    fn entries(&self, dir: Ino) -> &BTreeMap<Vec<u8>, Ino> {
        match &self.node(dir).kind {
            Kind::Dir { entries, .. } => entries,
            _ => panic!("not a directory"),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> &mut BTreeMap<Vec<u8>, Ino> {
        match &mut self.node_mut(dir).kind {
            Kind::Dir { entries, .. } => entries,
            _ => panic!("not a directory"),
        }
    }

    fn link_into(&mut self, dir: Ino, name: &[u8], ino: Ino) {
        self.entries_mut(dir).insert(name.to_vec(), ino);
        let now = self.now;
        if let Kind::Dir { parent, .. } = &mut self.node_mut(ino).kind {
            *parent = dir;
        }
        let n = self.node_mut(ino);
        n.nlink += 1;
        n.ctime = now;
        let d = self.node_mut(dir);
        d.mtime = now;
        d.ctime = now;
    }

    fn unlink_from(&mut self, dir: Ino, name: &[u8]) {
        let ino = self.entries_mut(dir).remove(name).expect("name present");
        let now = self.now;
        let d = self.node_mut(dir);
        d.mtime = now;
        d.ctime = now;
        let n = self.node_mut(ino);
        n.nlink -= 1;
        n.ctime = now;
        self.maybe_free(ino);
    }

    // ---- resolution ----

    /// Resolves `path` from directory `start` (ignored for absolute paths).
    /// `follow` says whether a symbolic link as the last component is
    /// followed; a trailing `/` always follows and requires a directory.
    fn lookup_here(&self, start: Ino, path: &[u8], follow: bool) -> SysResult<Ino> {
        path::check(path)?;
        let mut links = 0;
        self.walk(start, path, follow, &mut links)
    }

    fn walk(&self, start: Ino, path: &[u8], follow: bool, links: &mut u32) -> SysResult<Ino> {
        let mut cur = if path.first() == Some(&b'/') { self.root } else { start };
        let trailing = path.ends_with(b"/");
        let mut comps = path::components(path).peekable();
        while let Some(c) = comps.next() {
            let last = comps.peek().is_none();
            let Kind::Dir { entries, parent } = &self.node(cur).kind else {
                return Err(ENOTDIR);
            };
            if self.node(cur).nlink == 0 && c != b"." && c != b".." {
                return Err(ENOENT); // a removed directory has no names
            }
            let next = match c {
                b"." => cur,
                b".." => *parent,
                name => *entries.get(name).ok_or(ENOENT)?,
            };
            if let Kind::Symlink(target) = &self.node(next).kind
                && (!last || follow || trailing)
            {
                *links += 1;
                if *links > MAX_SYMLINKS {
                    return Err(ELOOP);
                }
                if target.is_empty() {
                    return Err(ENOENT);
                }
                cur = self.walk(cur, target, true, links)?;
                continue;
            }
            cur = next;
        }
        if trailing && !self.is_dir_here(cur) {
            return Err(ENOTDIR);
        }
        Ok(cur)
    }

    fn parent<'p>(&self, start: Ino, path: &'p [u8]) -> SysResult<Parent<'p>> {
        path::check(path)?;
        let (dir_part, name, trailing_slash) = path::split_last(path);
        let dir =
            if dir_part.is_empty() { start } else { self.lookup_here(start, dir_part, true)? };
        if !self.is_dir_here(dir) {
            return Err(ENOTDIR);
        }
        if self.node(dir).nlink == 0 {
            return Err(ENOENT);
        }
        Ok(Parent { dir, name, trailing_slash })
    }

    // ---- operations on names ----

    /// `open(2)`'s name handling: finds or creates the file, applies
    /// `O_CREAT O_EXCL O_DIRECTORY O_NOFOLLOW O_TRUNC` and the access-mode
    /// checks, and returns the inode (not yet held).
    fn open_here(&mut self, start: Ino, path: &[u8], flags: u32, mode: u32) -> SysResult<Ino> {
        let acc = flags & O_ACCMODE;
        let writes = acc == O_WRONLY || acc == O_RDWR;
        if flags & O_TMPFILE == O_TMPFILE {
            return Err(EOPNOTSUPP);
        }
        let ino = if flags & O_CREAT != 0 {
            let p = self.parent(start, path)?;
            if p.name.is_empty() || p.name == b"." || p.name == b".." || p.trailing_slash {
                return Err(EISDIR);
            }
            match self.entries(p.dir).get(p.name).copied() {
                Some(_) if flags & O_EXCL != 0 => return Err(EEXIST),
                Some(existing) => {
                    // Follow a final symlink unless O_NOFOLLOW (then ELOOP below);
                    // a dangling one is created through, as Linux does.
                    match self.lookup_here(p.dir, p.name, flags & O_NOFOLLOW == 0) {
                        Ok(i) => i,
                        Err(ENOENT) if matches!(self.node(existing).kind, Kind::Symlink(_)) => {
                            return self.create_through_symlink(p.dir, existing, mode);
                        }
                        Err(e) => return Err(e),
                    }
                }
                None => {
                    if flags & O_DIRECTORY != 0 {
                        // Linux ≥ 6.4: O_CREAT|O_DIRECTORY is EINVAL.
                        return Err(EINVAL);
                    }
                    let ino = self.alloc(Kind::File(Data::Owned(Vec::new())), mode & !self.umask);
                    self.link_into(p.dir, p.name, ino);
                    return Ok(ino);
                }
            }
        } else {
            self.lookup_here(start, path, flags & O_NOFOLLOW == 0)?
        };
        match &self.node(ino).kind {
            Kind::Symlink(_) => return Err(ELOOP), // O_NOFOLLOW on a link
            Kind::Dir { .. } if writes || flags & O_CREAT != 0 => return Err(EISDIR),
            Kind::Dir { .. } => {}
            _ if flags & O_DIRECTORY != 0 => return Err(ENOTDIR),
            _ => {}
        }
        if flags & O_TRUNC != 0 && matches!(self.node(ino).kind, Kind::File(_)) {
            // Linux truncates even with O_RDONLY when the caller may write.
            self.truncate_here(ino, 0)?;
        }
        Ok(ino)
    }

    fn create_through_symlink(&mut self, dir: Ino, link: Ino, mode: u32) -> SysResult<Ino> {
        let Kind::Symlink(target) = &self.node(link).kind else { return Err(EINVAL) };
        let target = target.clone();
        let p = self.parent(dir, &target)?;
        if p.name.is_empty() || p.trailing_slash {
            return Err(EISDIR);
        }
        let ino = self.alloc(Kind::File(Data::Owned(Vec::new())), mode & !self.umask);
        self.link_into(p.dir, p.name, ino);
        Ok(ino)
    }

    /// `mkdir(2)`; returns the new directory.
    fn mkdir_here(&mut self, start: Ino, path: &[u8], mode: u32) -> SysResult<Ino> {
        let p = self.parent(start, path)?;
        if p.name.is_empty()
            || p.name == b"."
            || p.name == b".."
            || self.entries(p.dir).contains_key(p.name)
        {
            return Err(EEXIST);
        }
        let d = self.new_dir(p.dir, mode & !self.umask & 0o1777);
        self.link_into(p.dir, p.name, d);
        Ok(d)
    }

    /// `rmdir(2)`: `EINVAL` for a final `.`, `ENOTEMPTY` for `..` or a
    /// directory with entries, `EBUSY` for `/`.
    fn rmdir_here(&mut self, start: Ino, path: &[u8]) -> SysResult<()> {
        let p = self.parent(start, path)?;
        match p.name {
            b"" => return Err(EBUSY),
            b"." => return Err(EINVAL),
            b".." => return Err(ENOTEMPTY),
            _ => {}
        }
        let ino = *self.entries(p.dir).get(p.name).ok_or(ENOENT)?;
        if !self.is_dir_here(ino) {
            return Err(ENOTDIR);
        }
        if !self.entries(ino).is_empty() {
            return Err(ENOTEMPTY);
        }
        self.unlink_from(p.dir, p.name);
        Ok(())
    }

    /// `unlink(2)`: `EISDIR` for a directory (Linux's choice; POSIX says `EPERM`).
    fn unlink_here(&mut self, start: Ino, path: &[u8]) -> SysResult<()> {
        let p = self.parent(start, path)?;
        if p.name.is_empty() || p.name == b"." || p.name == b".." {
            return Err(EISDIR);
        }
        let ino = *self.entries(p.dir).get(p.name).ok_or(ENOENT)?;
        if self.is_dir_here(ino) {
            return Err(EISDIR);
        }
        if p.trailing_slash {
            return Err(ENOTDIR);
        }
        self.unlink_from(p.dir, p.name);
        Ok(())
    }

    /// `symlink(2)`.
    fn symlink_here(&mut self, target: &[u8], start: Ino, path: &[u8]) -> SysResult<()> {
        path::check(target)?;
        let p = self.parent(start, path)?;
        if p.name.is_empty()
            || p.name == b"."
            || p.name == b".."
            || self.entries(p.dir).contains_key(p.name)
        {
            return Err(EEXIST);
        }
        let l = self.alloc(Kind::Symlink(target.to_vec()), 0o777);
        self.link_into(p.dir, p.name, l);
        Ok(())
    }

    /// `link(2)` (never follows a final symlink of `old`, as Linux).
    fn link_here(&mut self, ostart: Ino, old: &[u8], nstart: Ino, new: &[u8]) -> SysResult<()> {
        let ino = self.lookup_here(ostart, old, false)?;
        if self.is_dir_here(ino) {
            return Err(EPERM);
        }
        let p = self.parent(nstart, new)?;
        if p.name.is_empty()
            || p.name == b"."
            || p.name == b".."
            || self.entries(p.dir).contains_key(p.name)
        {
            return Err(EEXIST);
        }
        self.link_into(p.dir, p.name, ino);
        Ok(())
    }

    /// `rename(2)`, with Linux's checks: same inode is a no-op; a directory
    /// may replace only an empty directory (`ENOTEMPTY`), a non-directory
    /// only a non-directory (`EISDIR`/`ENOTDIR`); a directory may not move
    /// into itself (`EINVAL`); `.`, `..` and `/` are `EBUSY`.
    fn rename_here(&mut self, ostart: Ino, old: &[u8], nstart: Ino, new: &[u8]) -> SysResult<()> {
        let op = self.parent(ostart, old)?;
        let np = self.parent(nstart, new)?;
        for n in [op.name, np.name] {
            if n.is_empty() || n == b"." || n == b".." {
                return Err(EBUSY);
            }
        }
        let src = *self.entries(op.dir).get(op.name).ok_or(ENOENT)?;
        let src_dir = self.is_dir_here(src);
        if (op.trailing_slash || np.trailing_slash) && !src_dir {
            return Err(ENOTDIR);
        }
        let dst = self.entries(np.dir).get(np.name).copied();
        if dst == Some(src) {
            return Ok(());
        }
        if src_dir {
            // The new parent may not be the source or inside it.
            let mut d = np.dir;
            loop {
                if d == src {
                    return Err(EINVAL);
                }
                let Kind::Dir { parent, .. } = self.node(d).kind else { unreachable!() };
                if parent == d {
                    break;
                }
                d = parent;
            }
        }
        if let Some(dst) = dst {
            match (src_dir, self.is_dir_here(dst)) {
                (true, false) => return Err(ENOTDIR),
                (false, true) => return Err(EISDIR),
                (true, true) if !self.entries(dst).is_empty() => return Err(ENOTEMPTY),
                _ => {}
            }
            self.unlink_from(np.dir, np.name);
        }
        // Move the name without letting the inode reach nlink 0.
        self.node_mut(src).nlink += 1;
        self.unlink_from(op.dir, op.name);
        self.link_into(np.dir, np.name, src);
        self.node_mut(src).nlink -= 1;
        Ok(())
    }

    /// `readlink(2)`: the target of the symbolic link at `path` (`EINVAL` if
    /// it is not one).
    fn readlink_here(&self, start: Ino, path: &[u8]) -> SysResult<&[u8]> {
        let ino = self.lookup_here(start, path, false)?;
        match &self.node(ino).kind {
            Kind::Symlink(t) => Ok(t),
            _ => Err(EINVAL),
        }
    }

    /// `access(2)` as root: existence, and for `X_OK` on a non-directory,
    /// some execute bit.
    fn access_here(&self, start: Ino, path: &[u8], mode: u32, follow: bool) -> SysResult<()> {
        if mode & !7 != 0 {
            return Err(EINVAL);
        }
        let ino = self.lookup_here(start, path, follow)?;
        if mode & X_OK != 0 && !self.is_dir_here(ino) && self.node(ino).perm & 0o111 == 0 {
            return Err(EACCES);
        }
        Ok(())
    }

    /// The absolute path of directory `dir` (`getcwd(2)`); `ENOENT` if it
    /// has been removed.
    fn path_of_here(&self, mut dir: Ino) -> SysResult<Vec<u8>> {
        let mut parts: Vec<&[u8]> = Vec::new();
        while dir != self.root {
            if self.node(dir).nlink == 0 {
                return Err(ENOENT);
            }
            let Kind::Dir { parent, .. } = self.node(dir).kind else { return Err(ENOTDIR) };
            let name =
                self.entries(parent).iter().find(|e| *e.1 == dir).map(|e| e.0).ok_or(ENOENT)?;
            parts.push(name);
            dir = parent;
        }
        let mut out = Vec::new();
        for p in parts.iter().rev() {
            out.push(b'/');
            out.extend_from_slice(p);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        Ok(out)
    }

    // ---- operations on inodes ----

    /// `struct stat` of `ino`.
    fn stat_here(&self, ino: Ino) -> Stat {
        let n = self.node(ino);
        let (typ, size, rdev, nlink) = match &n.kind {
            Kind::Dir { entries, .. } => {
                let subdirs = entries.values().filter(|&&i| self.is_dir_here(i)).count() as u64;
                // A live directory has "." and its name in the parent.
                let base = if n.nlink == 0 { 0 } else { 2 };
                (S_IFDIR, 4096, 0, base + subdirs)
            }
            Kind::File(d) => (S_IFREG, d.bytes().len() as i64, 0, n.nlink as u64),
            Kind::Symlink(t) => (S_IFLNK, t.len() as i64, 0, n.nlink as u64),
            Kind::Dev(Device::Pipe) => (S_IFIFO, 0, 0, 1),
            Kind::Dev(d) => (S_IFCHR, 0, d.rdev(), n.nlink as u64),
        };
        Stat {
            dev: DEV,
            ino: ino as u64 + 1,
            nlink,
            mode: typ | n.perm,
            uid: 0,
            gid: 0,
            rdev,
            size,
            blksize: 4096,
            // Whole 4 KiB blocks, as Linux's tmpfs and ext4 allocate (a
            // directory is one block: its size is 4096).
            blocks: match typ {
                S_IFREG => (size + 4095) / 4096 * 8,
                S_IFDIR => 8,
                _ => 0,
            },
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.ctime,
        }
    }

    /// The device `ino` is, if it is one.
    fn device_here(&self, ino: Ino) -> Option<Device> {
        match self.node(ino).kind {
            Kind::Dev(d) => Some(d),
            _ => None,
        }
    }

    /// The size of regular file `ino` (0 for anything else).
    fn size_here(&self, ino: Ino) -> u64 {
        match &self.node(ino).kind {
            Kind::File(d) => d.bytes().len() as u64,
            _ => 0,
        }
    }

    /// The bytes of regular file `ino` (for file mappings).
    fn contents_here(&self, ino: Ino) -> SysResult<&[u8]> {
        match &self.node(ino).kind {
            Kind::File(d) => Ok(d.bytes()),
            Kind::Dir { .. } => Err(EISDIR),
            _ => Err(EINVAL),
        }
    }

    /// Reads from `ino` at `off` (ignored by devices). `EISDIR` for a directory.
    fn read_at_here(&mut self, ino: Ino, off: u64, buf: &mut [u8]) -> SysResult<usize> {
        match &self.nodes[ino].as_ref().expect("live inode").kind {
            Kind::File(d) => {
                let b = d.bytes();
                let start = (off.min(b.len() as u64)) as usize;
                let n = buf.len().min(b.len() - start);
                buf[..n].copy_from_slice(&b[start..start + n]);
                Ok(n)
            }
            Kind::Dir { .. } => Err(EISDIR),
            Kind::Symlink(_) => Err(EINVAL),
            Kind::Dev(Device::Null) => Ok(0),
            Kind::Dev(Device::Zero) => {
                buf.fill(0);
                Ok(buf.len())
            }
            Kind::Dev(Device::Tty | Device::Console | Device::ConsoleErr) => {
                crate::tty::read(&mut self.tty, &mut *self.console, buf)
            }
            Kind::Dev(Device::Pipe | Device::Chan) => Err(EINVAL), // crate::pipe / crate::chan move these bytes
        }
    }

    /// Writes to `ino` at `off` (ignored by devices), extending a regular
    /// file with zeros past its end as needed.
    fn write_at_here(&mut self, ino: Ino, off: u64, data: &[u8]) -> SysResult<usize> {
        let now = self.now;
        let node = self.nodes[ino].as_mut().expect("live inode");
        match &mut node.kind {
            Kind::File(d) => {
                if data.is_empty() {
                    return Ok(0);
                }
                let end = off.checked_add(data.len() as u64).ok_or(EFBIG)?;
                if end > isize::MAX as u64 {
                    return Err(EFBIG);
                }
                let v = d.owned(end as usize)?;
                if v.len() < end as usize {
                    v.resize(end as usize, 0);
                }
                v[off as usize..end as usize].copy_from_slice(data);
                node.mtime = now;
                node.ctime = now;
                Ok(data.len())
            }
            Kind::Dir { .. } => Err(EISDIR),
            Kind::Symlink(_) => Err(EINVAL),
            Kind::Dev(Device::Null | Device::Zero) => Ok(data.len()),
            Kind::Dev(d @ (Device::Tty | Device::Console | Device::ConsoleErr)) => {
                let err = *d == Device::ConsoleErr;
                Ok(crate::tty::write(&self.tty, &mut *self.console, data, err))
            }
            Kind::Dev(Device::Pipe | Device::Chan) => Err(EINVAL), // crate::pipe / crate::chan move these bytes
        }
    }

    /// Sets regular file `ino`'s length (`EISDIR` for a directory, `EINVAL`
    /// for anything else that is not a regular file).
    fn truncate_here(&mut self, ino: Ino, len: u64) -> SysResult<()> {
        let now = self.now;
        let node = self.node_mut(ino);
        match &mut node.kind {
            Kind::File(d) => {
                if len > isize::MAX as u64 {
                    return Err(EFBIG);
                }
                if d.bytes().len() as u64 != len {
                    d.owned(len as usize)?.resize(len as usize, 0);
                }
                node.mtime = now;
                node.ctime = now;
                Ok(())
            }
            Kind::Dir { .. } => Err(EISDIR),
            _ => Err(EINVAL),
        }
    }

    /// Entry `index` of directory `dir` as `getdents64` lists it: `.` and
    /// `..` first, then the names in byte order. `(st_ino, d_type, name)`.
    fn dirent_here(&self, dir: Ino, index: usize) -> SysResult<Option<(u64, u8, &[u8])>> {
        let Kind::Dir { entries, parent } = &self.node(dir).kind else { return Err(ENOTDIR) };
        if self.node(dir).nlink == 0 {
            return Ok(None); // a removed directory lists nothing (Linux: ENOENT-free, empty)
        }
        Ok(match index {
            0 => Some((dir as u64 + 1, DT_DIR, b".")),
            1 => Some((*parent as u64 + 1, DT_DIR, b"..")),
            i => entries.iter().nth(i - 2).map(|(name, &ino)| {
                let t = match self.node(ino).kind {
                    Kind::Dir { .. } => DT_DIR,
                    Kind::File(_) => DT_REG,
                    Kind::Symlink(_) => DT_LNK,
                    Kind::Dev(_) => DT_CHR,
                };
                (ino as u64 + 1, t, name.as_slice())
            }),
        })
    }

    /// The window size of the console.
    pub fn winsize(&self) -> Winsize {
        self.tty.winsize
    }

    /// The terminal and the console under it (`tty`'s calls need both).
    pub fn tty_parts(&mut self) -> (&mut Tty, &mut dyn Console) {
        (&mut self.tty, &mut *self.console)
    }

    /// Whether regular file `ino`'s contents are still the archive's bytes.
    fn is_zero_copy_here(&self, ino: Ino) -> bool {
        matches!(self.node(ino).kind, Kind::File(Data::Archive(_)))
    }
}

/// Where an inode number leads.
enum Route {
    /// This tree's inode (the tag stripped).
    Here(Ino),
    /// The server's.
    There(Ino),
}

/// The public operations: each goes to this tree or, in remote mode, to
/// the server ([`remote`]) for the server's inodes.
impl<'a> Fs<'a> {
    /// Makes this tree a client of a server (every name then lives there;
    /// devices and pipes stay here). The server's tree must have started as
    /// a copy of this one (same root inode, same archive).
    pub fn set_remote(&mut self, t: Box<dyn remote::Transport + 'a>) {
        let mut devs = [0; 4];
        for (slot, d) in
            devs.iter_mut().zip([Device::Null, Device::Zero, Device::Tty, Device::Console])
        {
            let i = self.anonymous_device_here(d);
            self.hold_here(i);
            *slot = i | LOCAL;
        }
        self.local_devs = devs;
        self.remote = Some(RefCell::new(remote::Client::new(t)));
    }

    /// Whether names live in a server.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    fn route(&self, ino: Ino) -> Route {
        match self.remote {
            Some(_) if ino & LOCAL == 0 => Route::There(ino),
            Some(_) => Route::Here(ino & !LOCAL),
            None => Route::Here(ino),
        }
    }

    fn client(&self) -> core::cell::RefMut<'_, remote::Client<'a>> {
        self.remote.as_ref().expect("remote mode").borrow_mut()
    }

    /// A server's answer naming an inode: its device becomes ours.
    fn mine(&self, (ino, kind): (Ino, RKind)) -> Ino {
        match kind {
            RKind::Dev(Device::Null) => self.local_devs[0],
            RKind::Dev(Device::Zero) => self.local_devs[1],
            RKind::Dev(Device::Tty) => self.local_devs[2],
            RKind::Dev(Device::Console | Device::ConsoleErr) => self.local_devs[3],
            _ => ino,
        }
    }

    /// A start directory for a request: ours cannot hold names in remote mode.
    fn there_dir(&self, start: Ino, path: &[u8]) -> SysResult<Ino> {
        if path.first() == Some(&b'/') {
            return Ok(self.root);
        }
        match self.route(start) {
            Route::There(i) => Ok(i),
            Route::Here(_) => Err(ENOTDIR),
        }
    }

    /// Whether `ino` names a live inode of this tree (the server's check).
    pub fn live(&self, ino: Ino) -> bool {
        self.nodes.get(ino).is_some_and(Option::is_some)
    }

    /// The target of symbolic link `ino`, if it is one (this tree).
    pub fn readlink_ino(&self, ino: Ino) -> Option<&[u8]> {
        match &self.node(ino).kind {
            Kind::Symlink(t) => Some(t),
            _ => None,
        }
    }

    /// One more holder, unless the count is at its limit (this tree).
    pub fn try_hold(&mut self, ino: Ino) -> bool {
        let n = self.node_mut(ino);
        if n.holders == u32::MAX {
            return false;
        }
        n.holders += 1;
        true
    }

    /// One holder less, if there is one (this tree).
    pub fn try_release(&mut self, ino: Ino) -> bool {
        if self.node(ino).holders == 0 {
            return false;
        }
        self.release_here(ino);
        true
    }

    /// Where regular file `ino`'s bytes lie in the archive, while they are
    /// still its bytes (this tree).
    pub fn archive_range(&self, ino: Ino) -> Option<(usize, usize)> {
        let b = self.archive_bytes_here(ino)?;
        let off = (b.as_ptr() as usize).checked_sub(self.archive.as_ptr() as usize)?;
        Some((off, b.len()))
    }

    /// Sets the permission bits of `ino` (`chmod`; the change time is now).
    pub fn set_perm(&mut self, ino: Ino, perm: u32) -> SysResult<()> {
        match self.route(ino) {
            Route::Here(i) => {
                self.set_perm_here(i, perm);
                Ok(())
            }
            Route::There(i) => self.client().ino_op(Op::SetPerm, i, &[u64::from(perm)], self.now),
        }
    }

    /// Sets the modification time of `ino` (`utimensat`; this tree keeps
    /// no access time, `stat` reports the modification time for both; the
    /// change time is now).
    pub fn set_mtime(&mut self, ino: Ino, mtime: Timespec) -> SysResult<()> {
        match self.route(ino) {
            Route::Here(i) => {
                self.set_mtime_here(i, mtime);
                Ok(())
            }
            Route::There(i) => {
                let args = [mtime.sec as u64, mtime.nsec as u64];
                self.client().ino_op(Op::SetMtime, i, &args, self.now)
            }
        }
    }

    /// A device inode with no name (freed when its last holder goes): the
    /// standard error description [`Device::ConsoleErr`].
    pub fn anonymous_device(&mut self, d: Device) -> Ino {
        let i = self.anonymous_device_here(d);
        if self.remote.is_some() { i | LOCAL } else { i }
    }

    /// A new unnamed inode for one end of a pipe (`prw-------`, as Linux's
    /// pipefs gives); freed with its last holder.
    pub fn anonymous_pipe(&mut self) -> Ino {
        let i = self.anonymous_pipe_here();
        if self.remote.is_some() { i | LOCAL } else { i }
    }

    /// The contents of regular file `ino` while they are still the
    /// archive's bytes (never written): a slice that outlives the tree, for
    /// a loader that maps the program while the tree is borrowed elsewhere.
    /// In remote mode the server says where they are in the archive and
    /// the bytes come from this process's own mapping of it.
    pub fn archive_bytes(&self, ino: Ino) -> Option<&'a [u8]> {
        match self.route(ino) {
            Route::Here(i) => self.archive_bytes_here(i),
            Route::There(i) => {
                let (off, len) = self.client().archive(i, self.now).ok()??;
                self.archive.get(off..off.checked_add(len)?)
            }
        }
    }

    /// Records one more holder of `ino` (an open description, a cwd).
    pub fn hold(&mut self, ino: Ino) {
        match self.route(ino) {
            Route::Here(i) => self.hold_here(i),
            Route::There(i) => {
                // A refused hold (the inode is gone) shows at its next use.
                let _ = self.client().ino_op(Op::Hold, i, &[], self.now);
            }
        }
    }

    /// Drops a holder of `ino`; frees it if it has no name and no holder.
    pub fn release(&mut self, ino: Ino) {
        match self.route(ino) {
            Route::Here(i) => self.release_here(i),
            Route::There(i) => {
                let _ = self.client().ino_op(Op::Release, i, &[], self.now);
            }
        }
    }

    /// Whether `ino` is a directory.
    pub fn is_dir(&self, ino: Ino) -> bool {
        match self.route(ino) {
            Route::Here(i) => self.is_dir_here(i),
            Route::There(i) => self.client().kind(i, self.now) == Ok(RKind::Dir),
        }
    }

    /// Resolves `path` from directory `start` (ignored for absolute paths).
    /// `follow` says whether a symbolic link as the last component is
    /// followed; a trailing `/` always follows and requires a directory.
    pub fn lookup(&self, start: Ino, path: &[u8], follow: bool) -> SysResult<Ino> {
        if self.remote.is_none() {
            return self.lookup_here(start, path, follow);
        }
        let s = self.there_dir(start, path)?;
        let r = self.client().lookup(s, path, follow, self.now)?;
        Ok(self.mine(r))
    }

    /// `open(2)`'s name handling: finds or creates the file, applies
    /// `O_CREAT O_EXCL O_DIRECTORY O_NOFOLLOW O_TRUNC` and the access-mode
    /// checks, and returns the inode (not yet held).
    pub fn open(&mut self, start: Ino, path: &[u8], flags: u32, mode: u32) -> SysResult<Ino> {
        if self.remote.is_none() {
            return self.open_here(start, path, flags, mode);
        }
        let s = self.there_dir(start, path)?;
        let r = self.client().open(s, path, flags, mode, self.now, self.umask)?;
        Ok(self.mine(r))
    }

    fn name_op(&mut self, op: Op, args: &[Arg<'_>]) -> SysResult<()> {
        self.client().name_op(op, args, self.now, self.umask)
    }

    /// `mkdir(2)`; returns the new directory.
    pub fn mkdir(&mut self, start: Ino, path: &[u8], mode: u32) -> SysResult<Ino> {
        if self.remote.is_none() {
            return self.mkdir_here(start, path, mode);
        }
        let s = self.there_dir(start, path)?;
        let (now, umask) = (self.now, self.umask);
        self.client().mkdir(s, path, mode, now, umask)
    }

    /// `rmdir(2)`: `EINVAL` for a final `.`, `ENOTEMPTY` for `..` or a
    /// directory with entries, `EBUSY` for `/`.
    pub fn rmdir(&mut self, start: Ino, path: &[u8]) -> SysResult<()> {
        if self.remote.is_none() {
            return self.rmdir_here(start, path);
        }
        let s = self.there_dir(start, path)?;
        self.name_op(Op::Rmdir, &[Arg::U(s as u64), Arg::B(path)])
    }

    /// `unlink(2)`: `EISDIR` for a directory (Linux's choice; POSIX says `EPERM`).
    pub fn unlink(&mut self, start: Ino, path: &[u8]) -> SysResult<()> {
        if self.remote.is_none() {
            return self.unlink_here(start, path);
        }
        let s = self.there_dir(start, path)?;
        self.name_op(Op::Unlink, &[Arg::U(s as u64), Arg::B(path)])
    }

    /// `symlink(2)`.
    pub fn symlink(&mut self, target: &[u8], start: Ino, path: &[u8]) -> SysResult<()> {
        if self.remote.is_none() {
            return self.symlink_here(target, start, path);
        }
        let s = self.there_dir(start, path)?;
        self.name_op(Op::Symlink, &[Arg::B(target), Arg::U(s as u64), Arg::B(path)])
    }

    /// `link(2)` (never follows a final symlink of `old`, as Linux).
    pub fn link(&mut self, ostart: Ino, old: &[u8], nstart: Ino, new: &[u8]) -> SysResult<()> {
        if self.remote.is_none() {
            return self.link_here(ostart, old, nstart, new);
        }
        let (os, ns) = (self.there_dir(ostart, old)?, self.there_dir(nstart, new)?);
        self.name_op(Op::Link, &[Arg::U(os as u64), Arg::B(old), Arg::U(ns as u64), Arg::B(new)])
    }

    /// `rename(2)`, with Linux's checks: same inode is a no-op; a directory
    /// may replace only an empty directory (`ENOTEMPTY`), a non-directory
    /// only a non-directory (`EISDIR`/`ENOTDIR`); a directory may not move
    /// into itself (`EINVAL`); `.`, `..` and `/` are `EBUSY`.
    pub fn rename(&mut self, ostart: Ino, old: &[u8], nstart: Ino, new: &[u8]) -> SysResult<()> {
        if self.remote.is_none() {
            return self.rename_here(ostart, old, nstart, new);
        }
        let (os, ns) = (self.there_dir(ostart, old)?, self.there_dir(nstart, new)?);
        self.name_op(Op::Rename, &[Arg::U(os as u64), Arg::B(old), Arg::U(ns as u64), Arg::B(new)])
    }

    /// `readlink(2)`: the target of the symbolic link at `path` (`EINVAL` if
    /// it is not one).
    pub fn readlink(&self, start: Ino, path: &[u8]) -> SysResult<Vec<u8>> {
        if self.remote.is_none() {
            return self.readlink_here(start, path).map(<[u8]>::to_vec);
        }
        let s = self.there_dir(start, path)?;
        self.client().bytes_op(Op::Readlink, &[Arg::U(s as u64), Arg::B(path)], self.now)
    }

    /// `access(2)` as root: existence, and for `X_OK` on a non-directory,
    /// some execute bit.
    pub fn access(&self, start: Ino, path: &[u8], mode: u32, follow: bool) -> SysResult<()> {
        if self.remote.is_none() {
            return self.access_here(start, path, mode, follow);
        }
        let s = self.there_dir(start, path)?;
        let args = [Arg::U(s as u64), Arg::U(u64::from(mode)), Arg::U(follow as u64), Arg::B(path)];
        self.client().name_op(Op::Access, &args, self.now, self.umask)
    }

    /// The absolute path of directory `dir` (`getcwd(2)`); `ENOENT` if it
    /// has been removed.
    pub fn path_of(&self, dir: Ino) -> SysResult<Vec<u8>> {
        match self.route(dir) {
            Route::Here(i) => self.path_of_here(i),
            Route::There(i) => self.client().bytes_op(Op::PathOf, &[Arg::U(i as u64)], self.now),
        }
    }

    /// `struct stat` of `ino` (an error only when a server cannot answer).
    pub fn stat(&self, ino: Ino) -> SysResult<Stat> {
        match self.route(ino) {
            Route::Here(i) => {
                let mut st = self.stat_here(i);
                st.ino = ino as u64 + 1;
                Ok(st)
            }
            Route::There(i) => self.client().stat(i, self.now).map(|s| s.0),
        }
    }

    /// The device `ino` is, if it is one.
    pub fn device(&self, ino: Ino) -> Option<Device> {
        match self.route(ino) {
            Route::Here(i) => self.device_here(i),
            Route::There(i) => match self.client().kind(i, self.now) {
                Ok(RKind::Dev(d)) => Some(d),
                _ => None,
            },
        }
    }

    /// The size of regular file `ino` (0 for anything else).
    pub fn size(&self, ino: Ino) -> u64 {
        match self.route(ino) {
            Route::Here(i) => self.size_here(i),
            Route::There(i) => match self.client().stat(i, self.now) {
                Ok((st, RKind::Plain)) if st.mode & S_IFMT == S_IFREG => st.size as u64,
                _ => 0,
            },
        }
    }

    /// The bytes of regular file `ino` (for file mappings and `execve`).
    pub fn contents(&self, ino: Ino) -> SysResult<Cow<'_, [u8]>> {
        match self.route(ino) {
            Route::Here(i) => self.contents_here(i).map(Cow::Borrowed),
            Route::There(i) => {
                if let Some(b) = self.archive_bytes(ino) {
                    return Ok(Cow::Borrowed(b));
                }
                let (st, kind) = self.client().stat(i, self.now)?;
                match kind {
                    RKind::Dir => return Err(EISDIR),
                    RKind::Plain if st.mode & S_IFMT == S_IFREG => {}
                    _ => return Err(EINVAL),
                }
                let size = usize::try_from(st.size).map_err(|_| EIO)?;
                if size as u64 > remote::MAX_FILE {
                    return Err(EIO);
                }
                let mut v = alloc::vec![0u8; size];
                let n = self.client().read(i, 0, &mut v, self.now)?;
                v.truncate(n);
                Ok(Cow::Owned(v))
            }
        }
    }

    /// Reads from `ino` at `off` (ignored by devices). `EISDIR` for a directory.
    pub fn read_at(&mut self, ino: Ino, off: u64, buf: &mut [u8]) -> SysResult<usize> {
        match self.route(ino) {
            Route::Here(i) => self.read_at_here(i, off, buf),
            Route::There(i) => self.client().read(i, off, buf, self.now),
        }
    }

    /// Writes to `ino` at `off` (ignored by devices), extending a regular
    /// file with zeros past its end as needed.
    pub fn write_at(&mut self, ino: Ino, off: u64, data: &[u8]) -> SysResult<usize> {
        self.write(ino, off, false, data).map(|(n, _)| n)
    }

    /// Writes to `ino` at `off`, or at its end when `append` (one step, so
    /// that appends of two processes do not overwrite each other); returns
    /// the bytes written and the offset after them.
    pub fn write(
        &mut self,
        ino: Ino,
        off: u64,
        append: bool,
        data: &[u8],
    ) -> SysResult<(usize, u64)> {
        match self.route(ino) {
            Route::Here(i) => {
                let off = if append { self.size_here(i) } else { off };
                let n = self.write_at_here(i, off, data)?;
                Ok((n, off + n as u64))
            }
            Route::There(i) => self.client().write(i, off, append, data, self.now),
        }
    }

    /// Sets regular file `ino`'s length (`EISDIR` for a directory, `EINVAL`
    /// for anything else that is not a regular file).
    pub fn truncate(&mut self, ino: Ino, len: u64) -> SysResult<()> {
        match self.route(ino) {
            Route::Here(i) => self.truncate_here(i, len),
            Route::There(i) => self.client().ino_op(Op::Truncate, i, &[len], self.now),
        }
    }

    /// Entry `index` of directory `dir` as `getdents64` lists it: `.` and
    /// `..` first, then the names in byte order. `(st_ino, d_type, name)`.
    pub fn dirent(&self, dir: Ino, index: usize) -> SysResult<Option<(u64, u8, Vec<u8>)>> {
        match self.route(dir) {
            Route::Here(i) => Ok(self.dirent_here(i, index)?.map(|(a, b, c)| (a, b, c.to_vec()))),
            Route::There(i) => self.client().dirent(i, index, self.now),
        }
    }

    /// In remote mode, an open-file description of the server's regular
    /// file `ino` (holding it), shared by the processes that inherit it:
    /// its handle. `None` for anything else (the caller holds `ino` and
    /// keeps the offset itself).
    pub fn desc_open(&mut self, ino: Ino) -> SysResult<Option<u64>> {
        let Route::There(i) = self.route(ino) else { return Ok(None) };
        match self.client().stat(i, self.now)? {
            (st, RKind::Plain) if st.mode & S_IFMT == S_IFREG => {}
            _ => return Ok(None),
        }
        self.client().desc_open(i, self.now).map(Some)
    }

    /// One more reference to description `handle` (a child inherits it).
    pub fn desc_dup(&mut self, handle: u64) -> SysResult<()> {
        self.client().desc_op(Op::DescDup, handle, self.now)
    }

    /// One reference less to description `handle`.
    pub fn desc_close(&mut self, handle: u64) {
        // A refused close (a peer closed it for us) leaves nothing to do.
        let _ = self.client().desc_op(Op::DescClose, handle, self.now);
    }

    /// Reads at description `handle`'s offset, which advances.
    pub fn desc_read(&mut self, handle: u64, buf: &mut [u8]) -> SysResult<usize> {
        self.client().desc_read(handle, buf, self.now)
    }

    /// Writes at description `handle`'s offset (or its file's end when
    /// `append`), which advances; the bytes written and the new offset.
    pub fn desc_write(
        &mut self,
        handle: u64,
        append: bool,
        data: &[u8],
    ) -> SysResult<(usize, u64)> {
        self.client().desc_write(handle, append, data, self.now)
    }

    /// `lseek` of description `handle`.
    pub fn desc_seek(&mut self, handle: u64, off: i64, whence: u32) -> SysResult<u64> {
        self.client().desc_seek(handle, off, whence, self.now)
    }

    /// Whether regular file `ino`'s contents are still the archive's bytes.
    pub fn is_zero_copy(&self, ino: Ino) -> bool {
        match self.route(ino) {
            Route::Here(i) => self.is_zero_copy_here(i),
            Route::There(_) => self.archive_bytes(ino).is_some(),
        }
    }
}

#[cfg(test)]
mod tests;
