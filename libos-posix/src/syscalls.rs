//! The Linux system-call dispatcher and the per-process state it works on.
//!
//! This module owns [`Process`] (file system, descriptors, working
//! directory, address-space record, the glue's traits) and [`dispatch`]:
//! the one place that turns a system-call number and six raw arguments into
//! a handler call and the handler's `Result` into Linux's return value
//! (`-errno` on failure). Every pointer argument goes through
//! [`UserMemory`]; nothing here dereferences user addresses.
//!
//! Tier 1 is implemented (files, memory, clocks, identity, `exit_group`);
//! any other number answers `-ENOSYS` and is reported once per process,
//! by name, through [`Host::report`].
//!
//! Notes on Linux exactness:
//! - `read`/`write` move at most 64 KiB per copy and stop at the first
//!   fault after progress (returning the bytes done), as Linux does.
//! - `lseek` on a terminal is `ESPIPE`; on `/dev/null`/`/dev/zero` it
//!   succeeds with 0; on a directory only `SEEK_SET`/`SEEK_CUR` work.
//! - `pwrite64` on an `O_APPEND` description appends (a documented Linux
//!   bug, `man 2 pwrite`).
//! - File mappings are private copies made at `mmap` time; `MAP_SHARED`
//!   file mappings with `PROT_WRITE` are `ENODEV` (not supported), read-only
//!   shared ones are copies too (later writes to the file are not seen).
//! - The process CPU-time clocks read [`Clock::cpu_ns`].

use crate::exec;
use crate::fd::{DEFAULT_LIMIT, FdTable};
use crate::fs::{Device, Fs, Ino};
use crate::host::{Clock, Host, Memory, UserMemory};
use crate::linux::errno::*;
use crate::linux::sysno::*;
use crate::linux::*;
use crate::mm::{Layout, Mm, page_up};
use crate::proc::{ProcHost, ProcState};
use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

/// An open-file description: what `open` creates and `dup` shares.
#[derive(Debug)]
pub struct OpenFile {
    /// The inode.
    pub ino: Ino,
    /// Access mode and status flags (`O_APPEND`, `O_NONBLOCK`, `O_LARGEFILE`, ...).
    pub flags: u32,
    /// The file offset (for a directory: the index of the next entry);
    /// unused while `handle` is set.
    pub offset: u64,
    /// A file server's description of a regular file (its offset is
    /// there, shared with the processes that inherited it); 0: none.
    pub handle: u64,
}

/// A shared description, as the descriptor table holds it.
pub type Desc = RefCell<OpenFile>;

/// The largest copy through a kernel-side buffer.
const CHUNK: usize = 64 * 1024;
/// Status flags `F_SETFL` may change (`fs/fcntl.c: SETFL_MASK`).
const SETFL_MASK: u32 = O_APPEND | O_ASYNC | O_DIRECT | O_NOATIME | O_NONBLOCK;

/// One Linux process in this environment.
pub struct Process<'a> {
    /// Its file system.
    pub fs: Fs<'a>,
    /// Its descriptors.
    pub fds: FdTable<Desc>,
    /// Its address-space record.
    pub mm: Mm,
    /// Its process identity, parent and children ([`crate::proc`]).
    pub proc: ProcState,
    pub(crate) cwd: Ino,
    pub(crate) memory: Box<dyn Memory + 'a>,
    pub(crate) clock: Box<dyn Clock + 'a>,
    /// Its pipe ends ([`crate::pipe`]).
    pub(crate) pipes: crate::pipe::Pipes<'a>,
    /// Its channel ends ([`crate::chan`]).
    pub(crate) chans: crate::chan::Chans<'a>,
    pub(crate) host: Box<dyn Host + 'a>,
    pub(crate) procs: Option<Box<dyn ProcHost + 'a>>,
    pub(crate) fs_base: u64,
    reported: BTreeSet<u64>,
    pub(crate) exit_status: Option<i32>,
    /// Its signal state (`crate::signal`).
    pub signals: crate::signal::Signals,
}

impl core::fmt::Debug for Process<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Process").field("pid", &self.proc.pid).field("fds", &self.fds).finish()
    }
}

/// Where the program starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Initial `rip`.
    pub rip: u64,
    /// Initial `rsp` (16-byte aligned, at `argc`); `rdx` must be 0.
    pub rsp: u64,
}

impl<'a> Process<'a> {
    /// A process with `fs`, the console open on descriptors 0, 1 and 2
    /// (read/write; 0 and 1 share one description, as Linux's `init` gets,
    /// 2 has its own on [`Device::ConsoleErr`] so that standard error can
    /// be told apart), `/` as its working directory, and nothing mapped.
    pub fn new(
        mut fs: Fs<'a>,
        layout: Layout,
        pid: i32,
        memory: Box<dyn Memory + 'a>,
        clock: Box<dyn Clock + 'a>,
        host: Box<dyn Host + 'a>,
    ) -> Self {
        let root = fs.root();
        fs.hold(root);
        // The first process leads its session and its process group, which
        // is the terminal's foreground group.
        fs.tty.pgrp = pid;
        let mut fds = FdTable::new(DEFAULT_LIMIT);
        if let Ok(con) = fs.lookup(root, b"/dev/console", true) {
            fs.hold(con);
            let d = Rc::new(RefCell::new(OpenFile {
                ino: con,
                flags: O_RDWR | O_LARGEFILE,
                offset: 0,
                handle: 0,
            }));
            for _ in 0..2 {
                fds.insert(d.clone(), false, 0).expect("empty table");
            }
            // Standard error: the same terminal through its own description,
            // so that the glue can tell the two output streams apart.
            let err = fs.anonymous_device(Device::ConsoleErr);
            fs.hold(err);
            let e = OpenFile { ino: err, flags: O_RDWR | O_LARGEFILE, offset: 0, handle: 0 };
            fds.insert(Rc::new(RefCell::new(e)), false, 0).expect("empty table");
        }
        Process {
            fs,
            fds,
            mm: Mm::new(layout),
            cwd: root,
            proc: ProcState::new(pid),
            memory,
            clock,
            pipes: Default::default(),
            chans: Default::default(),
            host,
            procs: None,
            fs_base: 0,
            reported: BTreeSet::new(),
            exit_status: None,
            signals: crate::signal::Signals::new(),
        }
    }

    /// Changes the working directory to `path` (`chdir`, for the glue's
    /// start-up).
    pub fn chdir(&mut self, path: &[u8]) -> SysResult<()> {
        let ino = self.fs.lookup(self.cwd, path, true)?;
        set_cwd(self, ino).map(|_| ())
    }

    /// What the process holds outside its environment goes, as at Linux's
    /// exit — whether it exits or is killed by a signal or a fault: its
    /// entry in the session's process-group table goes, every
    /// descriptor is closed (pipe ends are counted out of their shared
    /// frames, so a peer sees end of file or `EPIPE`; a file server's
    /// descriptions are closed) and a file server's hold on the working
    /// directory is dropped. Call it once, just before the environment ends.
    pub fn close_all(&mut self) {
        // Out of the session's process-group table.
        self.publish_group(self.proc.pid, 0);
        let fds: Vec<i32> = self.fds.fds().collect();
        for fd in fds {
            if let Ok(d) = self.fds.close(fd) {
                self.release(d);
            }
        }
        if self.fs.is_remote() {
            // The server's tree outlives us: our working directory's hold goes.
            let cwd = self.cwd;
            self.fs.release(cwd);
        }
    }

    /// Gives the process its doors to child environments (`fork`, `wait4`;
    /// without them those calls are `ENOSYS`).
    pub fn set_proc_host(&mut self, host: Box<dyn ProcHost + 'a>) {
        self.procs = Some(host);
        self.publish_group(self.proc.pid, self.proc.pgid);
        // The first process's group starts as the terminal's foreground.
        let pgrp = self.fs.tty.pgrp;
        if let Some(h) = self.procs.as_mut()
            && h.foreground().is_some_and(|g| g <= 0)
        {
            h.set_foreground(pgrp);
        }
    }

    /// The terminal's foreground process group: the session's record if
    /// there is one, else this process's own.
    pub fn foreground_pgrp(&mut self) -> i32 {
        let own = self.fs.tty.pgrp;
        self.procs.as_mut().and_then(|h| h.foreground()).filter(|&g| g > 0).unwrap_or(own)
    }

    /// While blocked in a wait that is not a terminal read (`wait4`,
    /// `rt_sigsuspend`): takes what was typed meanwhile into the line
    /// discipline (if this process reads the terminal), so that `^C`, `^\`
    /// reach the foreground job at once, as a kernel's tty layer does at
    /// interrupt time. Typed-ahead bytes stay buffered for the next read.
    pub(crate) fn watch_terminal(&mut self) {
        let (tty, console) = self.fs.tty_parts();
        if console.is_terminal() && console.reads_input() {
            let _ = crate::tty::poll_readable(tty, console);
            self.deliver_tty_signals();
        }
    }

    /// [`ProcHost::publish_group`], if there is a host.
    pub(crate) fn publish_group(&mut self, pid: i32, pgid: i32) {
        if let Some(h) = self.procs.as_mut() {
            h.publish_group(pid, pgid);
        }
    }

    /// The status passed to `exit`/`exit_group`, once the program has called it.
    pub fn exit_status(&self) -> Option<i32> {
        self.exit_status
    }

    /// Maps `image` (a static executable, see [`exec::plan`]) and its stack,
    /// writes the start stack for `argv`/`envp` and returns where to start.
    /// The stack is `stack_size` bytes just below `stack_top`; `pie_bias`
    /// places a static PIE.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        &mut self,
        image: &[u8],
        pie_bias: u64,
        argv: &[&[u8]],
        envp: &[&[u8]],
        random: &[u8; 16],
        stack_top: u64,
        stack_size: u64,
        mem: &mut dyn UserMemory,
    ) -> Result<Entry, exec::ExecError> {
        let l = self.mm.layout();
        let plan = exec::plan(image, pie_bias, l.user_end)?;
        let fault = exec::ExecError::Map;
        for s in &plan.segments {
            let (start, end) = (s.page_start(), s.page_end());
            let bytes = &image[s.offset as usize..(s.offset + s.filesz) as usize];
            if start >= l.min_addr
                && end <= l.user_end
                && self
                    .memory
                    .map_image(start, end - start, s.prot(), s.vaddr, bytes)
                    .map_err(fault)?
            {
                self.mm.record(start, end, s.prot());
                continue;
            }
            self.mm
                .map(start, end - start, PROT_READ | PROT_WRITE, true, false, &mut *self.memory)
                .map_err(fault)?;
            mem.write(s.vaddr, bytes).map_err(fault)?;
            self.mm.protect(start, end - start, s.prot(), &mut *self.memory).map_err(fault)?;
        }
        let stack_prot = PROT_READ | PROT_WRITE | if plan.exec_stack { PROT_EXEC } else { 0 };
        let top = stack_top & !(PAGE_SIZE - 1);
        self.mm
            .map(top - stack_size, stack_size, stack_prot, true, false, &mut *self.memory)
            .map_err(fault)?;
        let execfn = argv.first().copied().unwrap_or(b"");
        let st = exec::build_stack(top, argv, envp, execfn, random, &plan.auxv())?;
        if top - st.rsp > stack_size {
            return Err(exec::ExecError::TooBig);
        }
        mem.write(st.rsp, &st.bytes).map_err(fault)?;
        Ok(Entry { rip: plan.entry, rsp: st.rsp })
    }

    /// With a file server: one more hold on the working directory and on
    /// the inode of every open description (each once), for a child about
    /// to inherit them; returns the inodes held. Without one: nothing (the
    /// child's tree is its own copy).
    pub(crate) fn hold_for_child(&mut self) -> Vec<(Ino, u64)> {
        if !self.fs.is_remote() {
            return Vec::new();
        }
        let mut seen = BTreeSet::new();
        let mut held = vec![(self.cwd, 0)];
        for fd in self.fds.fds() {
            if let Ok(d) = self.fds.get(fd)
                && seen.insert(Rc::as_ptr(d) as usize)
            {
                let f = d.borrow();
                held.push((f.ino, f.handle));
            }
        }
        for &(ino, handle) in &held {
            if handle != 0 {
                // A refused dup (a peer closed it) shows as EBADF later.
                let _ = self.fs.desc_dup(handle);
            } else {
                self.fs.hold(ino);
            }
        }
        held
    }

    /// Gives back what [`Process::hold_for_child`] took (the fork failed).
    pub(crate) fn unhold_for_child(&mut self, held: Vec<(Ino, u64)>) {
        for (ino, handle) in held {
            if handle != 0 { self.fs.desc_close(handle) } else { self.fs.release(ino) }
        }
    }

    pub(crate) fn desc(&self, fd: i32) -> SysResult<Rc<Desc>> {
        self.fds.get(fd).cloned()
    }

    pub(crate) fn release(&mut self, d: Rc<Desc>) {
        if let Ok(d) = Rc::try_unwrap(d) {
            let f = d.into_inner();
            if f.handle != 0 {
                self.fs.desc_close(f.handle);
                return;
            }
            crate::pipe::released(self, f.ino);
            crate::chan::released(self, f.ino);
            self.fs.release(f.ino);
        }
    }

    /// The directory a `*at` call starts from, for a path not starting at `/`.
    pub(crate) fn at_dir(&self, dirfd: i32, path: &[u8]) -> SysResult<Ino> {
        if path.is_empty() {
            return Err(ENOENT); // before dirfd is looked at, as getname() does
        }
        if path.first() == Some(&b'/') || dirfd == AT_FDCWD {
            return Ok(self.cwd);
        }
        let ino = self.desc(dirfd)?.borrow().ino;
        if !self.fs.is_dir(ino) { Err(ENOTDIR) } else { Ok(ino) }
    }

    /// The monotonic clock (for `tty`'s `poll`).
    pub(crate) fn clock_now_ns(&self) -> u64 {
        self.clock.monotonic_ns()
    }

    /// Sleeps until the monotonic clock reaches `deadline`.
    pub(crate) fn sleep_until_ns(&mut self, deadline: u64) {
        self.clock.sleep_until(deadline);
    }

    /// This process's session.
    pub(crate) fn session(&self) -> i32 {
        self.proc.sid
    }

    fn report_once(&mut self, nr: u64) {
        if self.reported.insert(nr) {
            let name = syscall_name(nr).unwrap_or("?");
            self.host.report(&format!("libos-posix: unimplemented syscall {name} ({nr})"));
        }
    }
}

/// Reads a NUL-terminated path from user memory, page by page so that a
/// string ending just before an unmapped page is read without fault.
pub fn read_path(mem: &dyn UserMemory, addr: u64) -> SysResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < PATH_MAX {
        let chunk = (PAGE_SIZE - at % PAGE_SIZE).min((PATH_MAX - out.len()) as u64) as usize;
        let mut buf = vec![0u8; chunk];
        mem.read(at, &mut buf)?;
        if let Some(n) = buf.iter().position(|&c| c == 0) {
            out.extend_from_slice(&buf[..n]);
            return Ok(out);
        }
        out.extend_from_slice(&buf);
        at += chunk as u64;
    }
    Err(ENAMETOOLONG)
}

fn read_struct<const N: usize>(mem: &dyn UserMemory, addr: u64) -> SysResult<[u8; N]> {
    let mut b = [0u8; N];
    mem.read(addr, &mut b)?;
    Ok(b)
}

/// Handles system call `nr` with `args` for `p`; returns what goes in `rax`.
pub fn dispatch(p: &mut Process<'_>, nr: u64, args: [u64; 6], mem: &mut impl UserMemory) -> i64 {
    // The file system stamps what it creates or changes with `now`; calls
    // that never touch a file's times skip the clock (a 128-bit division
    // on the path of the cheapest calls).
    if may_touch_file_times(nr) {
        p.fs.now = Timespec::from_ns(p.clock.realtime_ns());
    }
    let ret = match call(p, nr, args, mem) {
        Ok(v) => v as i64,
        Err(e) => e.to_ret(),
    };
    if p.fs.tty.has_raised() {
        p.deliver_tty_signals();
    }
    ret
}

/// Whether call `nr` may create a file or change its times (every call but
/// those known not to).
fn may_touch_file_times(nr: u64) -> bool {
    !matches!(
        nr,
        SYS_GETPID
            | SYS_GETPPID
            | SYS_GETTID
            | SYS_GETUID
            | SYS_GETEUID
            | SYS_GETGID
            | SYS_GETEGID
            | SYS_CLOCK_GETTIME
            | SYS_CLOCK_GETRES
            | SYS_GETTIMEOFDAY
            | SYS_TIME
            | SYS_NANOSLEEP
            | SYS_CLOCK_NANOSLEEP
            | SYS_SCHED_YIELD
            | SYS_BRK
            | SYS_MMAP
            | SYS_MUNMAP
            | SYS_MPROTECT
            | SYS_ARCH_PRCTL
            | SYS_SET_TID_ADDRESS
            | SYS_RT_SIGACTION
            | SYS_RT_SIGPROCMASK
            | SYS_GETRANDOM
            | SYS_UNAME
            | SYS_LSEEK
            | SYS_FSTAT
    )
}

fn call(p: &mut Process<'_>, nr: u64, a: [u64; 6], mem: &mut dyn UserMemory) -> SysResult<u64> {
    if crate::proc::handles(nr) {
        return crate::proc::call(p, nr, a, mem);
    }
    let fd = a[0] as i32;
    match nr {
        SYS_READ => sys_read(p, fd, None, a[1], a[2], mem),
        SYS_WRITE => sys_write(p, fd, None, a[1], a[2], mem),
        SYS_PREAD64 => sys_read(p, fd, Some(a[3] as i64), a[1], a[2], mem),
        SYS_SENDFILE => sys_sendfile(p, fd, a[1] as i32, a[2], a[3], mem),
        SYS_PWRITE64 => sys_write(p, fd, Some(a[3] as i64), a[1], a[2], mem),
        SYS_READV => sys_rwv(p, fd, a[1], a[2], false, mem),
        SYS_WRITEV => sys_rwv(p, fd, a[1], a[2], true, mem),
        SYS_LSEEK => sys_lseek(p, fd, a[1] as i64, a[2] as u32),
        SYS_OPEN => sys_openat(p, AT_FDCWD, a[0], a[1] as u32, a[2] as u32, mem),
        SYS_OPENAT => sys_openat(p, a[0] as i32, a[1], a[2] as u32, a[3] as u32, mem),
        SYS_CREAT => sys_openat(p, AT_FDCWD, a[0], O_CREAT | O_WRONLY | O_TRUNC, a[1] as u32, mem),
        SYS_CLOSE => {
            let d = p.fds.close(fd)?;
            p.release(d);
            Ok(0)
        }
        SYS_ACCESS => sys_access(p, AT_FDCWD, a[0], a[1] as u32, 0, mem),
        SYS_FACCESSAT => sys_access(p, a[0] as i32, a[1], a[2] as u32, 0, mem),
        SYS_FACCESSAT2 => sys_access(p, a[0] as i32, a[1], a[2] as u32, a[3] as u32, mem),
        SYS_STAT => sys_stat(p, AT_FDCWD, a[0], a[1], 0, mem),
        SYS_LSTAT => sys_stat(p, AT_FDCWD, a[0], a[1], AT_SYMLINK_NOFOLLOW, mem),
        SYS_NEWFSTATAT => sys_stat(p, a[0] as i32, a[1], a[2], a[3] as u32, mem),
        SYS_FSTAT => {
            let st = p.fs.stat(p.desc(fd)?.borrow().ino)?;
            mem.write(a[1], &st.encode())?;
            Ok(0)
        }
        SYS_GETDENTS64 => sys_getdents64(p, fd, a[1], a[2], mem),
        SYS_GETCWD => {
            let mut path = p.fs.path_of(p.cwd)?;
            path.push(0);
            if (a[1] as usize) < path.len() {
                return Err(ERANGE);
            }
            mem.write(a[0], &path)?;
            Ok(path.len() as u64)
        }
        SYS_CHDIR => {
            let path = read_path(mem, a[0])?;
            let ino = p.fs.lookup(p.cwd, &path, true)?;
            set_cwd(p, ino)
        }
        SYS_FCHDIR => {
            let ino = p.desc(fd)?.borrow().ino;
            set_cwd(p, ino)
        }
        SYS_MKDIR => sys_mkdirat(p, AT_FDCWD, a[0], a[1] as u32, mem),
        SYS_MKDIRAT => sys_mkdirat(p, a[0] as i32, a[1], a[2] as u32, mem),
        SYS_RMDIR => {
            let path = read_path(mem, a[0])?;
            p.fs.rmdir(p.cwd, &path).map(|_| 0)
        }
        SYS_UNLINK => sys_unlinkat(p, AT_FDCWD, a[0], 0, mem),
        SYS_UNLINKAT => sys_unlinkat(p, a[0] as i32, a[1], a[2] as u32, mem),
        SYS_RENAME => sys_renameat(p, AT_FDCWD, a[0], AT_FDCWD, a[1], 0, mem),
        SYS_RENAMEAT => sys_renameat(p, a[0] as i32, a[1], a[2] as i32, a[3], 0, mem),
        SYS_RENAMEAT2 => sys_renameat(p, a[0] as i32, a[1], a[2] as i32, a[3], a[4] as u32, mem),
        SYS_READLINK => sys_readlinkat(p, AT_FDCWD, a[0], a[1], a[2] as i64, mem),
        SYS_READLINKAT => sys_readlinkat(p, a[0] as i32, a[1], a[2], a[3] as i64, mem),
        SYS_SYMLINK => {
            let (target, path) = (read_path(mem, a[0])?, read_path(mem, a[1])?);
            p.fs.symlink(&target, p.cwd, &path).map(|_| 0)
        }
        SYS_LINK => {
            let (old, new) = (read_path(mem, a[0])?, read_path(mem, a[1])?);
            p.fs.link(p.cwd, &old, p.cwd, &new).map(|_| 0)
        }
        SYS_FTRUNCATE => {
            let d = p.desc(fd)?;
            let f = d.borrow();
            if f.flags & O_ACCMODE == O_RDONLY || (a[1] as i64) < 0 {
                return Err(EINVAL);
            }
            p.fs.truncate(f.ino, a[1]).map(|_| 0)
        }
        SYS_TRUNCATE => {
            let path = read_path(mem, a[0])?;
            if (a[1] as i64) < 0 {
                return Err(EINVAL);
            }
            let ino = p.fs.lookup(p.cwd, &path, true)?;
            p.fs.truncate(ino, a[1]).map(|_| 0)
        }
        SYS_DUP => p.fds.dup(fd).map(|n| n as u64),
        SYS_DUP2 => sys_dup3(p, fd, a[1] as i32, 0, false),
        SYS_DUP3 => sys_dup3(p, fd, a[1] as i32, a[2] as u32, true),
        SYS_FCNTL => sys_fcntl(p, fd, a[1] as u32, a[2]),
        // Pipes and poll: crate::pipe.
        SYS_PIPE => crate::pipe::sys_pipe2(p, a[0], 0, mem),
        SYS_PIPE2 => crate::pipe::sys_pipe2(p, a[0], a[1] as u32, mem),
        SYS_IOCTL => sys_ioctl(p, fd, a[1] as u32, a[2], mem),
        SYS_POLL => {
            let timeout = (a[2] as i32 >= 0).then(|| u64::from(a[2] as u32) * 1_000_000);
            sys_poll(p, a[0], a[1], timeout, mem)
        }
        SYS_PPOLL => {
            let timeout = match a[2] {
                0 => None,
                t => Some(Timespec::decode(&read_struct::<16>(mem, t)?).to_ns()?),
            };
            sys_poll(p, a[0], a[1], timeout, mem)
        }
        SYS_BRK => Ok(p.mm.brk(a[0], &mut *p.memory)),
        SYS_MMAP => sys_mmap(p, a, mem),
        SYS_MUNMAP => p.mm.unmap(a[0], a[1], &mut *p.memory).map(|_| 0),
        SYS_MPROTECT => p.mm.protect(a[0], a[1], a[2] as u32, &mut *p.memory).map(|_| 0),
        SYS_MADVISE => sys_madvise(p, a[0], a[1], a[2] as u32),
        SYS_CLOCK_GETTIME => {
            let ns = clock_now(p, a[0] as u32)?;
            mem.write(a[1], &Timespec::from_ns(ns).encode())?;
            Ok(0)
        }
        SYS_CLOCK_GETRES => {
            clock_now(p, a[0] as u32)?;
            if a[1] != 0 {
                mem.write(a[1], &Timespec::from_ns(p.clock.resolution_ns()).encode())?;
            }
            Ok(0)
        }
        SYS_TIME => {
            let sec = p.clock.realtime_ns() / 1_000_000_000;
            if a[0] != 0 {
                mem.write(a[0], &sec.to_le_bytes())?;
            }
            Ok(sec)
        }
        SYS_GETTIMEOFDAY => {
            let ns = p.clock.realtime_ns();
            if a[0] != 0 {
                let (sec, usec) = (ns / 1_000_000_000, ns % 1_000_000_000 / 1000);
                let mut tv = [0u8; 16];
                tv[..8].copy_from_slice(&sec.to_le_bytes());
                tv[8..].copy_from_slice(&usec.to_le_bytes());
                mem.write(a[0], &tv)?;
            }
            Ok(0)
        }
        SYS_NANOSLEEP => sys_sleep(p, CLOCK_MONOTONIC, 0, a[0], a[1], mem),
        SYS_CLOCK_NANOSLEEP => sys_sleep(p, a[0] as u32, a[1] as u32, a[2], a[3], mem),
        SYS_EXIT | SYS_EXIT_GROUP => {
            p.exit_status = Some(a[0] as i32 & 0xff);
            p.close_all();
            Ok(0)
        }
        SYS_ARCH_PRCTL => match a[0] {
            ARCH_SET_FS => {
                // Linux refuses a base outside the user half (EPERM).
                if a[1] >= p.mm.layout().user_end {
                    return Err(EPERM);
                }
                p.host.set_fs(a[1])?;
                p.fs_base = a[1];
                Ok(0)
            }
            ARCH_GET_FS => {
                mem.write(a[1], &p.fs_base.to_le_bytes())?;
                Ok(0)
            }
            _ => Err(EINVAL),
        },
        SYS_GETUID | SYS_GETEUID | SYS_GETGID | SYS_GETEGID => Ok(0),
        SYS_UNAME => {
            let u = Utsname {
                sysname: "Linux",
                nodename: "exo",
                release: "6.1.0-exo",
                version: "#1 libos-posix",
                machine: "x86_64",
                domainname: "(none)",
            };
            mem.write(a[0], &u.encode())?;
            Ok(0)
        }
        SYS_GETRANDOM => {
            if a[2] as u32 & !(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE) != 0
                || a[2] as u32 & (GRND_RANDOM | GRND_INSECURE) == GRND_RANDOM | GRND_INSECURE
            {
                return Err(EINVAL);
            }
            let n = (a[1] as usize).min(CHUNK);
            let mut buf = vec![0u8; n];
            p.host.random(&mut buf);
            mem.write(a[0], &buf)?;
            Ok(n as u64)
        }
        // Signals: `crate::signal` (rt_sigreturn is the glue's: it needs
        // every register).
        // `rt_sigsuspend` and `pause` wait here, so that a child's end
        // (an event) raises `SIGCHLD` meanwhile: how a shell's `wait` sleeps.
        SYS_RT_SIGSUSPEND | SYS_PAUSE => {
            let old = p.signals.suspend_begin(nr, a, mem)?;
            loop {
                // The mark first: an end after it moves the queue and wakes us.
                let mark = p.procs.as_ref().map(|h| h.mark());
                p.raise_sigchld();
                p.watch_terminal();
                if p.signals.suspend_wait(mark) {
                    break;
                }
            }
            p.signals.suspend_end(old)
        }
        SYS_KILL if a[0] as i32 == 0 || (a[0] as i32) < -1 => p.kill_group(a[0] as i32, a[1]),
        SYS_RT_SIGACTION | SYS_RT_SIGPROCMASK | SYS_RT_SIGPENDING | SYS_SIGALTSTACK | SYS_KILL
        | SYS_TKILL | SYS_TGKILL | SYS_ALARM | SYS_SETITIMER | SYS_GETITIMER => {
            p.signals.syscall(nr, a, p.proc.pid, mem).expect("a signal call")
        }
        _ => {
            p.report_once(nr);
            Err(ENOSYS)
        }
    }
}

fn set_cwd(p: &mut Process<'_>, ino: Ino) -> SysResult<u64> {
    if !p.fs.is_dir(ino) {
        return Err(ENOTDIR);
    }
    p.fs.hold(ino);
    let old = core::mem::replace(&mut p.cwd, ino);
    p.fs.release(old);
    Ok(0)
}

/// Whether a description can be positioned (`FMODE_LSEEK`/`FMODE_PREAD`):
/// not a terminal, not a pipe.
fn seekable(p: &Process<'_>, ino: Ino) -> bool {
    !p.fs.device(ino).is_some_and(|d| d.is_tty() || matches!(d, Device::Pipe | Device::Chan))
}

fn sys_read(
    p: &mut Process<'_>,
    fd: i32,
    at: Option<i64>,
    buf: u64,
    count: u64,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    let d = p.desc(fd)?;
    let (ino, flags, offset, handle) = {
        let f = d.borrow();
        (f.ino, f.flags, f.offset, f.handle)
    };
    if flags & O_ACCMODE == O_WRONLY || flags & O_ACCMODE == 3 {
        return Err(EBADF);
    }
    if p.fs.is_dir(ino) {
        return Err(EISDIR);
    }
    if at.is_none() && crate::pipe::is_pipe(p, ino) {
        return crate::pipe::read(p, ino, flags, buf, count, mem);
    }
    if at.is_none() && crate::chan::is_chan(p, ino) {
        return crate::chan::read(p, ino, flags, buf, count, mem);
    }
    if let Some(off) = at {
        if !seekable(p, ino) {
            return Err(ESPIPE);
        }
        if off < 0 {
            return Err(EINVAL);
        }
    }
    let mut off = at.map_or(offset, |o| o as u64);
    let is_file = p.fs.device(ino).is_none();
    let mut done = 0u64;
    let mut tmp = vec![0u8; (count as usize).min(CHUNK)];
    while done < count {
        let want = ((count - done) as usize).min(CHUNK);
        let n = if handle != 0 && at.is_none() {
            p.fs.desc_read(handle, &mut tmp[..want])?
        } else {
            p.fs.read_at(ino, off, &mut tmp[..want])?
        };
        if let Err(e) = mem.write(buf + done, &tmp[..n]) {
            if done == 0 {
                return Err(e);
            }
            break;
        }
        done += n as u64;
        off += n as u64;
        if n < want || !is_file {
            break;
        }
    }
    if at.is_none() && is_file {
        d.borrow_mut().offset = off;
    }
    Ok(done)
}

fn sys_write(
    p: &mut Process<'_>,
    fd: i32,
    at: Option<i64>,
    buf: u64,
    count: u64,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    let d = p.desc(fd)?;
    let (ino, flags, offset, handle) = {
        let f = d.borrow();
        (f.ino, f.flags, f.offset, f.handle)
    };
    if flags & O_ACCMODE == O_RDONLY || flags & O_ACCMODE == 3 {
        return Err(EBADF);
    }
    if at.is_none() && crate::pipe::is_pipe(p, ino) {
        return crate::pipe::write(p, ino, flags, buf, count, mem);
    }
    if at.is_none() && crate::chan::is_chan(p, ino) {
        return crate::chan::write(p, ino, buf, count, mem);
    }
    if let Some(off) = at {
        if !seekable(p, ino) {
            return Err(ESPIPE);
        }
        if off < 0 {
            return Err(EINVAL);
        }
    }
    let is_file = p.fs.device(ino).is_none();
    // O_APPEND: each chunk goes at the end as the server (or this tree)
    // finds it, in the same step as the write.
    let append = flags & O_APPEND != 0 && is_file;
    let mut off = at.map_or(offset, |o| o as u64);
    let mut done = 0u64;
    let mut tmp = vec![0u8; (count as usize).min(CHUNK)];
    while done < count {
        let want = ((count - done) as usize).min(CHUNK);
        if let Err(e) = mem.read(buf + done, &mut tmp[..want]) {
            if done == 0 {
                return Err(e);
            }
            break;
        }
        let (n, end) = if handle != 0 && at.is_none() {
            p.fs.desc_write(handle, append, &tmp[..want])?
        } else {
            p.fs.write(ino, off, append, &tmp[..want])?
        };
        done += n as u64;
        off = end;
        if n < want {
            break;
        }
    }
    if at.is_none() && is_file {
        d.borrow_mut().offset = off;
    }
    Ok(done)
}

/// A buffer of the runtime's own posing as user memory at [`Bounce::BASE`]
/// (`sendfile` moves bytes with `read` and `write`'s own code).
struct Bounce(Vec<u8>);

impl Bounce {
    /// An address no program memory has (the upper half).
    const BASE: u64 = 1 << 63;
    fn range(&self, addr: u64, len: usize) -> SysResult<core::ops::Range<usize>> {
        let at = addr.checked_sub(Self::BASE).ok_or(EFAULT)? as usize;
        let end = at.checked_add(len).filter(|&e| e <= self.0.len()).ok_or(EFAULT)?;
        Ok(at..end)
    }
}

impl UserMemory for Bounce {
    fn read(&self, addr: u64, buf: &mut [u8]) -> SysResult<()> {
        let r = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.0[r]);
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> SysResult<()> {
        let r = self.range(addr, data.len())?;
        self.0[r].copy_from_slice(data);
        Ok(())
    }
}

/// `sendfile(2)`: `count` bytes from `in_fd` (at `*offp` if `offp` is not
/// null, which then advances instead of the description's offset) to
/// `out_fd`, in 64 KiB steps through the runtime's buffer with `read` and
/// `write`'s semantics (any readable input, any writable output); stops at
/// end of file or a short write. `EINVAL` for an `O_APPEND` output or a
/// negative offset, as Linux.
fn sys_sendfile(
    p: &mut Process<'_>,
    out_fd: i32,
    in_fd: i32,
    offp: u64,
    count: u64,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    let count = count.min(0x7fff_f000);
    if p.desc(out_fd)?.borrow().flags & O_APPEND != 0 {
        return Err(EINVAL);
    }
    p.desc(in_fd)?;
    let mut off = if offp == 0 {
        None
    } else {
        let mut b = [0u8; 8];
        mem.read(offp, &mut b)?;
        Some(i64::from_le_bytes(b))
    };
    if off.is_some_and(|o| o < 0) {
        return Err(EINVAL);
    }
    let mut bounce = Bounce(vec![0u8; (count as usize).min(CHUNK)]);
    let mut done = 0u64;
    while done < count {
        let want = (count - done).min(CHUNK as u64);
        let n = match sys_read(p, in_fd, off, Bounce::BASE, want, &mut bounce) {
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        let w = match sys_write(p, out_fd, None, Bounce::BASE, n, &mut bounce) {
            Ok(w) => w,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        done += w;
        off = off.map(|o| o + w as i64);
        if w < n {
            break;
        }
    }
    if let (Some(o), true) = (off, offp != 0) {
        mem.write(offp, &o.to_le_bytes())?;
    }
    Ok(done)
}

fn sys_rwv(
    p: &mut Process<'_>,
    fd: i32,
    iov: u64,
    cnt: u64,
    write: bool,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    if cnt > UIO_MAXIOV {
        return Err(EINVAL);
    }
    let mut raw = vec![0u8; cnt as usize * Iovec::SIZE];
    mem.read(iov, &mut raw)?;
    let vecs: Vec<Iovec> = raw.chunks(Iovec::SIZE).map(Iovec::decode).collect();
    if vecs.iter().try_fold(0u64, |s, v| s.checked_add(v.len)).is_none_or(|t| t > isize::MAX as u64)
    {
        return Err(EINVAL);
    }
    p.desc(fd)?;
    let mut total = 0;
    for v in vecs {
        if v.len == 0 {
            continue;
        }
        let r = if write {
            sys_write(p, fd, None, v.base, v.len, mem)
        } else {
            sys_read(p, fd, None, v.base, v.len, mem)
        };
        match r {
            Ok(n) => {
                total += n;
                if n < v.len {
                    break;
                }
            }
            Err(e) if total == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(total)
}

fn sys_lseek(p: &mut Process<'_>, fd: i32, off: i64, whence: u32) -> SysResult<u64> {
    let d = p.desc(fd)?;
    let mut f = d.borrow_mut();
    if f.handle != 0 {
        return p.fs.desc_seek(f.handle, off, whence);
    }
    match p.fs.device(f.ino) {
        Some(dev) if dev.is_tty() || matches!(dev, Device::Pipe | Device::Chan) => {
            return Err(ESPIPE);
        }
        Some(_) => {
            if whence > SEEK_END {
                return Err(EINVAL);
            }
            f.offset = 0;
            return Ok(0);
        }
        None => {}
    }
    let size = p.fs.size(f.ino);
    let dir = p.fs.is_dir(f.ino);
    f.offset = crate::fs::remote::seek(f.offset, size, dir, off, whence)?;
    Ok(f.offset)
}

fn sys_openat(
    p: &mut Process<'_>,
    dirfd: i32,
    path: u64,
    flags: u32,
    mode: u32,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    let path = read_path(mem, path)?;
    if let Some(name) = crate::chan::name_of(&path) {
        return crate::chan::open(p, name, flags);
    }
    let start = p.at_dir(dirfd, &path)?;
    // Linux reserves the descriptor before resolving the name: EMFILE wins.
    if p.fds.fds().count() >= p.fds.limit() {
        return Err(EMFILE);
    }
    let ino = p.fs.open(start, &path, flags, mode)?;
    // A file server's regular file: a description there (which holds it).
    let handle = p.fs.desc_open(ino)?.unwrap_or(0);
    if handle == 0 {
        p.fs.hold(ino);
    }
    let keep = (flags & !(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_CLOEXEC)) | O_LARGEFILE;
    let d = Rc::new(RefCell::new(OpenFile { ino, flags: keep, offset: 0, handle }));
    match p.fds.insert(d.clone(), flags & O_CLOEXEC != 0, 0) {
        Ok(fd) => Ok(fd as u64),
        Err(e) => {
            p.release(d);
            Err(e)
        }
    }
}

fn sys_access(
    p: &mut Process<'_>,
    dirfd: i32,
    path: u64,
    mode: u32,
    flags: u32,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    if flags & !(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let path = read_path(mem, path)?;
    let start = p.at_dir(dirfd, &path)?;
    p.fs.access(start, &path, mode, flags & AT_SYMLINK_NOFOLLOW == 0).map(|_| 0)
}

fn sys_stat(
    p: &mut Process<'_>,
    dirfd: i32,
    path: u64,
    buf: u64,
    flags: u32,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT) != 0 {
        return Err(EINVAL);
    }
    let path = read_path(mem, path)?;
    let ino = if path.is_empty() && flags & AT_EMPTY_PATH != 0 {
        if dirfd == AT_FDCWD { p.cwd } else { p.desc(dirfd)?.borrow().ino }
    } else {
        let start = p.at_dir(dirfd, &path)?;
        p.fs.lookup(start, &path, flags & AT_SYMLINK_NOFOLLOW == 0)?
    };
    mem.write(buf, &p.fs.stat(ino)?.encode())?;
    Ok(0)
}

fn sys_getdents64(
    p: &mut Process<'_>,
    fd: i32,
    buf: u64,
    count: u64,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    let d = p.desc(fd)?;
    let mut f = d.borrow_mut();
    if !p.fs.is_dir(f.ino) {
        return Err(ENOTDIR);
    }
    let mut out = Vec::new();
    let mut idx = f.offset as usize;
    while let Some((ino, t, name)) = p.fs.dirent(f.ino, idx)? {
        if (out.len() + dirent64_reclen(name.len())) as u64 > count {
            if out.is_empty() {
                return Err(EINVAL);
            }
            break;
        }
        idx += 1;
        encode_dirent64(&mut out, ino, idx as i64, t, &name);
    }
    mem.write(buf, &out)?;
    f.offset = idx as u64;
    Ok(out.len() as u64)
}

fn sys_mkdirat(
    p: &mut Process<'_>,
    dirfd: i32,
    path: u64,
    mode: u32,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    let path = read_path(mem, path)?;
    let start = p.at_dir(dirfd, &path)?;
    p.fs.mkdir(start, &path, mode).map(|_| 0)
}

fn sys_unlinkat(
    p: &mut Process<'_>,
    dirfd: i32,
    path: u64,
    flags: u32,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    if flags & !AT_REMOVEDIR != 0 {
        return Err(EINVAL);
    }
    let path = read_path(mem, path)?;
    let start = p.at_dir(dirfd, &path)?;
    if flags & AT_REMOVEDIR != 0 { p.fs.rmdir(start, &path) } else { p.fs.unlink(start, &path) }
        .map(|_| 0)
}

fn sys_renameat(
    p: &mut Process<'_>,
    odir: i32,
    old: u64,
    ndir: i32,
    new: u64,
    flags: u32,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    const RENAME_NOREPLACE: u32 = 1;
    if flags & !RENAME_NOREPLACE != 0 {
        return Err(EINVAL);
    }
    let (old, new) = (read_path(mem, old)?, read_path(mem, new)?);
    let (os, ns) = (p.at_dir(odir, &old)?, p.at_dir(ndir, &new)?);
    if flags & RENAME_NOREPLACE != 0 && p.fs.lookup(ns, &new, false).is_ok() {
        return Err(EEXIST);
    }
    p.fs.rename(os, &old, ns, &new).map(|_| 0)
}

fn sys_readlinkat(
    p: &mut Process<'_>,
    dirfd: i32,
    path: u64,
    buf: u64,
    size: i64,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    if size <= 0 {
        return Err(EINVAL);
    }
    let path = read_path(mem, path)?;
    let target = match crate::proc::self_exe_link(p, &path) {
        Some(t) => t.to_vec(),
        None => {
            let start = p.at_dir(dirfd, &path)?;
            p.fs.readlink(start, &path)?
        }
    };
    let n = target.len().min(size as usize);
    mem.write(buf, &target[..n])?;
    Ok(n as u64)
}

fn sys_dup3(p: &mut Process<'_>, old: i32, new: i32, flags: u32, is_dup3: bool) -> SysResult<u64> {
    if flags & !O_CLOEXEC != 0 {
        return Err(EINVAL);
    }
    let (fd, replaced) = p.fds.dup2(old, new, flags & O_CLOEXEC != 0, is_dup3)?;
    if let Some(d) = replaced {
        p.release(d);
    }
    Ok(fd as u64)
}

fn sys_fcntl(p: &mut Process<'_>, fd: i32, cmd: u32, arg: u64) -> SysResult<u64> {
    match cmd {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            let min = usize::try_from(arg as i32).map_err(|_| EINVAL)?;
            p.fds.dup_min(fd, min, cmd == F_DUPFD_CLOEXEC).map(|n| n as u64)
        }
        F_GETFD => p.fds.cloexec(fd).map(|c| if c { FD_CLOEXEC } else { 0 }),
        F_SETFD => p.fds.set_cloexec(fd, arg & FD_CLOEXEC != 0).map(|_| 0),
        F_GETFL => Ok(p.desc(fd)?.borrow().flags as u64),
        F_SETFL => {
            let d = p.desc(fd)?;
            let mut f = d.borrow_mut();
            f.flags = (f.flags & !SETFL_MASK) | (arg as u32 & SETFL_MASK);
            Ok(0)
        }
        crate::pipe::F_GETPIPE_SZ | crate::pipe::F_SETPIPE_SZ => {
            crate::pipe::fcntl_size(p, fd, cmd)
        }
        _ => {
            p.desc(fd)?;
            Err(EINVAL)
        }
    }
}

fn sys_ioctl(
    p: &mut Process<'_>,
    fd: i32,
    req: u32,
    arg: u64,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    let ino = p.desc(fd)?.borrow().ino;
    if crate::pipe::is_pipe(p, ino) {
        return crate::pipe::ioctl(p, ino, req, arg, mem);
    }
    if !p.fs.device(ino).is_some_and(Device::is_tty) {
        return Err(ENOTTY);
    }
    crate::tty::ioctl(p, req, arg, mem)
}

/// `poll`/`ppoll`: a set holding a pipe end waits on the pipes' shared
/// words ([`crate::pipe::sys_poll`]); any other set (the terminal, files)
/// on the terminal's input ([`crate::tty::poll`]). Not done: a set mixing a
/// pipe end and the terminal sees the terminal as always readable.
fn sys_poll(
    p: &mut Process<'_>,
    addr: u64,
    nfds: u64,
    timeout_ns: Option<u64>,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    const POLLFD_SIZE: usize = 8;
    let mut has_pipe = false;
    if nfds <= p.fds.limit() as u64 {
        let mut raw = vec![0u8; nfds as usize * POLLFD_SIZE];
        mem.read(addr, &mut raw)?;
        has_pipe = raw.chunks(POLLFD_SIZE).any(|e| {
            let fd = i32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            fd >= 0 && p.fds.get(fd).is_ok_and(|d| p.pipes.end(d.borrow().ino).is_some())
        });
    }
    if has_pipe {
        crate::pipe::sys_poll(p, addr, nfds, timeout_ns, mem)
    } else {
        crate::tty::poll(p, addr, nfds, timeout_ns, mem)
    }
}

fn sys_mmap(p: &mut Process<'_>, a: [u64; 6], mem: &mut dyn UserMemory) -> SysResult<u64> {
    let (addr, len, prot, flags, fd, off) =
        (a[0], a[1], a[2] as u32, a[3] as u32, a[4] as i32, a[5]);
    let typ = flags & MAP_TYPE;
    if !matches!(typ, MAP_SHARED | MAP_PRIVATE | MAP_SHARED_VALIDATE) || len == 0 {
        return Err(EINVAL);
    }
    if !off.is_multiple_of(PAGE_SIZE) || prot & !(PROT_READ | PROT_WRITE | PROT_EXEC) != 0 {
        return Err(EINVAL);
    }
    if flags & MAP_HUGETLB != 0 {
        return Err(EINVAL);
    }
    let fixed = flags & MAP_FIXED != 0;
    let noreplace = flags & MAP_FIXED_NOREPLACE != 0;
    let len = page_up(len).ok_or(ENOMEM)?;
    if flags & MAP_ANONYMOUS != 0 {
        return p.mm.map(addr, len, prot, fixed, noreplace, &mut *p.memory);
    }
    let d = p.desc(fd)?;
    let (ino, acc) = {
        let f = d.borrow();
        (f.ino, f.flags & O_ACCMODE)
    };
    if acc == O_WRONLY {
        return Err(EACCES);
    }
    match p.fs.device(ino) {
        Some(Device::Zero) => return p.mm.map(addr, len, prot, fixed, noreplace, &mut *p.memory),
        Some(_) => return Err(ENODEV),
        None if p.fs.is_dir(ino) => return Err(ENODEV),
        None => {}
    }
    if typ != MAP_PRIVATE && prot & PROT_WRITE != 0 {
        if acc != O_RDWR {
            return Err(EACCES);
        }
        return Err(ENODEV); // shared writable file mappings: not supported
    }
    let at = p.mm.map(addr, len, PROT_READ | PROT_WRITE, fixed, noreplace, &mut *p.memory)?;
    let data = p.fs.contents(ino)?;
    let start = (off as usize).min(data.len());
    let n = (data.len() - start).min(len as usize);
    let copied = mem.write(at, &data[start..start + n]);
    let prot_set = p.mm.protect(at, len, prot, &mut *p.memory);
    if let Err(e) = copied.and(prot_set) {
        let _ = p.mm.unmap(at, len, &mut *p.memory);
        return Err(e);
    }
    Ok(at)
}

fn sys_madvise(p: &mut Process<'_>, addr: u64, len: u64, advice: u32) -> SysResult<u64> {
    const MADV_DONTNEED: u32 = 4;
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(EINVAL);
    }
    match advice {
        MADV_DONTNEED => p.mm.discard(addr, len, &mut *p.memory).map(|_| 0),
        // NORMAL RANDOM SEQUENTIAL WILLNEED FREE and the hints: advice only.
        0..=3 | 8..=21 => Ok(0),
        _ => Err(EINVAL),
    }
}

fn clock_now(p: &Process<'_>, id: u32) -> SysResult<u64> {
    match id {
        CLOCK_REALTIME | CLOCK_REALTIME_COARSE => Ok(p.clock.realtime_ns()),
        CLOCK_MONOTONIC | CLOCK_MONOTONIC_RAW | CLOCK_MONOTONIC_COARSE | CLOCK_BOOTTIME => {
            Ok(p.clock.monotonic_ns())
        }
        CLOCK_PROCESS_CPUTIME_ID | CLOCK_THREAD_CPUTIME_ID => Ok(p.clock.cpu_ns()),
        _ => Err(EINVAL),
    }
}

fn sys_sleep(
    p: &mut Process<'_>,
    id: u32,
    flags: u32,
    req: u64,
    rem: u64,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    let t = Timespec::decode(&read_struct::<16>(mem, req)?);
    let ns = t.to_ns()?;
    let now_mono = p.clock.monotonic_ns();
    let deadline = match id {
        CLOCK_THREAD_CPUTIME_ID => return Err(EINVAL),
        CLOCK_PROCESS_CPUTIME_ID => return Err(EOPNOTSUPP), // Linux: ENOTSUP
        _ if flags & TIMER_ABSTIME != 0 => {
            let now = clock_now(p, id)?;
            now_mono.saturating_add(ns.saturating_sub(now))
        }
        _ => {
            clock_now(p, id)?;
            now_mono.saturating_add(ns)
        }
    };
    // A sleep that ends early was cut short by a signal: one that is
    // ignored lets it go on; one that is not ends it with `EINTR` and the
    // time left (relative sleeps), as Linux's `nanosleep`.
    loop {
        p.clock.sleep_until(deadline);
        let now = p.clock.monotonic_ns();
        if now >= deadline {
            return Ok(0);
        }
        if p.signals.interrupting() {
            if flags & TIMER_ABSTIME == 0 && rem != 0 {
                mem.write(rem, &Timespec::from_ns(deadline - now).encode())?;
            }
            return Err(EINTR);
        }
    }
}

#[cfg(test)]
mod tests;
