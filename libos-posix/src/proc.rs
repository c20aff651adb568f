//! The POSIX process model: identities, parent and children, process
//! groups, `fork`/`vfork`/`clone`, `execve`, `wait4`, exit statuses, and
//! the file-mode calls that go with a process (`umask`, `chmod`,
//! `utimensat`).
//!
//! **One process, one environment.** Nothing of POSIX is in the kernel:
//! `fork` is the library's copy-on-write fork over the kernel's child
//! environments (the glue's [`ProcHost::fork`]), the child's exit status
//! travels through the kernel's `ChildStatus` (an environment exit code
//! encoded by [`env_status_of_wait`]), and everything else — pids, the
//! parent's list of children, process groups — is this module's record in
//! each process's own memory.
//!
//! **Pids** are environment ids (`InfoPage::env_id`): the kernel never
//! reuses one, so a pid is unique for the machine's life without any
//! coordination between processes, and the parent's handle on a child *is*
//! the child's pid. The first process has no POSIX parent (`getppid` 0).
//! `gettid` is the pid (one thread per process).
//!
//! **What a process knows of others.** A parent records each child's pid
//! and process group; a child knows its parent's pid. `setpgid` on a child
//! changes only the parent's record (the child's own `getpgid` is what the
//! child set: shells call `setpgid` in both, as POSIX advises).
//!
//! **Exit statuses.** A forked child ends its environment with
//! `ENV_WAIT_TAG | wstatus` ([`env_status_of_wait`]); the first process
//! ends with the plain exit code, as part 1 did (the run's status). The
//! parent decodes with [`wait_of_env_status`]: a tagged word is the wait
//! status, `abi::CHILD_KILLED` (destroyed by the kernel or its creator) is
//! `SIGKILL`, anything else an exit code.
//!
//! **Hooks for the other parts.** [`Process::child_exited`] is called once
//! per child when its end is noticed (by `wait4` or [`Process::poll_children`]):
//! the signal layer raises `SIGCHLD` there (it counts in
//! [`ProcState::sigchld_pending`] until then). [`ProcState::shared_ranges`]
//! lists ranges `fork` must share *writable* with the child instead of
//! copy-on-write (pipe frames, mapped when fork runs); the glue marks them
//! in libos-async's shared-range table (`ShareWritable`).
//!
//! **vfork.** `vfork` and `clone(CLONE_VM|CLONE_VFORK)` are done as a fork:
//! the child gets a copy-on-write copy, not the parent's memory, and the
//! parent is not suspended. Programs that use vfork correctly (the child
//! only `execve`s or `_exit`s, like musl's `posix_spawn`/`system`) cannot
//! tell; a child that writes its parent's memory is not seen by the parent.
//! A new stack (`clone`'s second argument) is honoured.

use crate::exec;
use crate::fs::Ino;
use crate::host::UserMemory;
use crate::linux::errno::*;
use crate::linux::sysno::*;
use crate::linux::*;
use crate::mm::{Layout, Mm};
use crate::syscalls::{Entry, Process, read_path};
use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;

/// `clone` flags (`include/uapi/linux/sched.h`).
pub const CLONE_VM: u64 = 0x0000_0100;
/// See [`CLONE_VM`].
pub const CLONE_FS: u64 = 0x0000_0200;
/// See [`CLONE_VM`].
pub const CLONE_FILES: u64 = 0x0000_0400;
/// See [`CLONE_VM`].
pub const CLONE_SIGHAND: u64 = 0x0000_0800;
/// See [`CLONE_VM`].
pub const CLONE_VFORK: u64 = 0x0000_4000;
/// See [`CLONE_VM`].
pub const CLONE_THREAD: u64 = 0x0001_0000;
/// See [`CLONE_VM`].
pub const CLONE_SETTLS: u64 = 0x0008_0000;
/// See [`CLONE_VM`].
pub const CLONE_PARENT_SETTID: u64 = 0x0010_0000;
/// See [`CLONE_VM`].
pub const CLONE_CHILD_CLEARTID: u64 = 0x0020_0000;
/// See [`CLONE_VM`].
pub const CLONE_CHILD_SETTID: u64 = 0x0100_0000;
/// `siginfo.si_code` of a `SIGCHLD` for a child's end (`CLD_EXITED`).
pub(crate) const CLD_EXITED: i32 = 1;

/// `SIGCHLD`, the exit signal of every accepted `clone`.
pub const SIGCHLD: u64 = 17;
/// `SIGKILL`.
pub const SIGKILL: i32 = 9;

/// `wait4` options (`include/uapi/linux/wait.h`).
pub const WNOHANG: u32 = 1;
/// See [`WNOHANG`]: accepted, no stopped children exist here.
pub const WUNTRACED: u32 = 2;
/// See [`WNOHANG`]: accepted, no continued children exist here.
pub const WCONTINUED: u32 = 8;
/// See [`WNOHANG`]: `__WNOTHREAD`, `__WALL`, `__WCLONE`: accepted, one
/// thread per process.
pub const W_THREAD_BITS: u32 = 0x2000_0000 | 0x4000_0000 | 0x8000_0000;

/// Bit 16 of an environment exit code: the low 16 bits are a Linux wait
/// status (a forked POSIX child's end, see the module documentation).
pub const ENV_WAIT_TAG: u64 = 1 << 16;
/// `abi::CHILD_KILLED` (the kernel's "killed"), repeated here because this
/// crate does not depend on `abi`.
pub const ENV_KILLED: u64 = u64::MAX;

/// Most children (live or unwaited) one process keeps: `fork` answers
/// `EAGAIN` beyond (Linux's `RLIMIT_NPROC` analogue; the quota stops a
/// fork bomb long before).
pub const MAX_CHILDREN: usize = 1024;
/// Most bytes of `argv` plus `envp` strings `execve` takes (`E2BIG`
/// beyond): a quarter of the start stack, as Linux bounds them by a
/// quarter of the stack limit.
pub const ARG_BYTES_MAX: usize = 256 * 1024;
/// Most `#!` interpreters in a chain (Linux: 4 rewrites, then `ELOOP`).
pub const INTERP_DEPTH_MAX: usize = 4;
/// The longest `#!` line read (Linux's `BINPRM_BUF_SIZE`).
pub const SHEBANG_MAX: usize = 256;

/// The wait status of `exit(code)`.
pub const fn wait_exited(code: i32) -> i32 {
    (code & 0xff) << 8
}

/// The wait status of a death by `signal`.
pub const fn wait_signaled(signal: i32) -> i32 {
    signal & 0x7f
}

/// What a forked child's environment exits with for wait status `wstatus`.
pub const fn env_status_of_wait(wstatus: i32) -> u64 {
    ENV_WAIT_TAG | (wstatus as u64 & 0xffff)
}

/// The wait status a parent reports for a child environment that ended
/// with `status` (see the module documentation).
pub const fn wait_of_env_status(status: u64) -> i32 {
    if status == ENV_KILLED {
        wait_signaled(SIGKILL)
    } else if status & !0xffff == ENV_WAIT_TAG {
        (status & 0xffff) as i32
    } else {
        wait_exited(status as i32)
    }
}

/// Which fork a `clone` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloneKind {
    /// A plain fork (glibc's `CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD`,
    /// or just `SIGCHLD`).
    Fork,
    /// musl's `posix_spawn`/`system`: `CLONE_VM|CLONE_VFORK|SIGCHLD`, done as
    /// a fork (see the module documentation).
    Vfork,
}

/// Classifies `clone`'s flags: the fork and vfork sets are accepted;
/// threads (`CLONE_VM` without `CLONE_VFORK`, `CLONE_THREAD`, shared
/// tables) are `ENOSYS` (not implemented), any other set `EINVAL`.
pub fn classify_clone(flags: u64) -> SysResult<CloneKind> {
    let signal = flags & 0xff;
    let rest = flags & !0xff;
    let tid_bits = CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID;
    if rest & (CLONE_THREAD | CLONE_SIGHAND | CLONE_FILES | CLONE_FS | CLONE_SETTLS) != 0
        || rest & (CLONE_VM | CLONE_VFORK) == CLONE_VM
    {
        return Err(ENOSYS);
    }
    if signal != SIGCHLD && signal != 0 {
        return Err(EINVAL);
    }
    match rest {
        r if r & !tid_bits == 0 => Ok(CloneKind::Fork),
        r if r == CLONE_VM | CLONE_VFORK => Ok(CloneKind::Vfork),
        _ => Err(EINVAL),
    }
}

/// What [`ProcHost::fork`] returns, on each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(i32),
    /// In the child: its own pid.
    Child(i32),
}

/// What [`ProcHost::child_status`] finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildPoll {
    /// It runs.
    Running,
    /// It ended with this environment exit status (see [`wait_of_env_status`]).
    Ended(u64),
    /// The kernel no longer knows it (its status was dropped: more than
    /// the kernel keeps were left unread): reported as `SIGKILL`.
    Lost,
}

/// The glue's doors for processes (the exokernel's child environments).
pub trait ProcHost {
    /// Forks the environment (copy-on-write), `shared` ranges `(start,
    /// len)` writable in both instead; returns in both. `EAGAIN` when the
    /// quota has no room for a child.
    fn fork(&mut self, shared: &[(u64, u64)]) -> SysResult<Forked>;
    /// Whether child `pid` has ended; an end is reported once (the
    /// kernel's record is consumed).
    fn child_status(&mut self, pid: i32) -> ChildPoll;
    /// A mark of the events seen so far (for [`ProcHost::sleep`]).
    fn mark(&self) -> u64;
    /// Sleeps until an event arrives after `mark` (a child's end among
    /// them). `EINTR` is the signal layer's to return.
    fn sleep(&mut self, mark: u64) -> SysResult<()>;
    /// The cores a process may run on (bit per core): the machine's user
    /// cores.
    fn cores(&self) -> u64 {
        1
    }
    /// The core this process runs on (it never moves: a vCPU stays on its
    /// core).
    fn core(&self) -> usize {
        0
    }
    /// The affinity mask set (never 0): children forked from now on are
    /// placed on its cores.
    fn set_affinity(&mut self, _mask: u64) {}
    /// Records in the session's process-group table (shared by every
    /// process of the run) that process `pid` is in group `pgid`; `pgid` 0:
    /// the process ended. Without a table: nothing (a group then reaches
    /// only the caller and its own children).
    fn publish_group(&mut self, _pid: i32, _pgid: i32) {}
    /// The processes the session's table puts in group `pgid` (whoever
    /// wrote them: a hostile process can only add pids, which `kill` may
    /// reach anyway).
    fn group_members(&mut self, _pgid: i32) -> Vec<i32> {
        Vec::new()
    }
    /// The terminal's foreground process group as the whole session sees
    /// it (`None`: no session-wide record; each process keeps its own).
    fn foreground(&mut self) -> Option<i32> {
        None
    }
    /// Records the terminal's foreground process group for the session
    /// (`tcsetpgrp` in any process: a shell's child makes its job the
    /// foreground, and the shell's `^C` must reach that job).
    fn set_foreground(&mut self, _pgrp: i32) {}
}

/// Where an `execve`d program goes (the glue's layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecLayout {
    /// Where a static PIE is placed.
    pub pie_bias: u64,
    /// Top of the start stack.
    pub stack_top: u64,
    /// Size of the start stack (mapped at load).
    pub stack_size: u64,
    /// The break's limit (at least the image's end).
    pub brk_limit: u64,
}

/// One child as its parent records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Child {
    pgid: i32,
}

/// The process part of a [`Process`].
#[derive(Debug, Default)]
pub struct ProcState {
    /// Its pid (its environment id).
    pub pid: i32,
    /// Its parent's pid (0: none, the first process).
    pub ppid: i32,
    /// Its process group.
    pub pgid: i32,
    /// Its session.
    pub sid: i32,
    /// Absolute path of the running executable (`/proc/self/exe`).
    pub exe: Vec<u8>,
    /// Where `execve` loads (unset: `execve` is `ENOSYS`).
    pub layout: Option<ExecLayout>,
    /// Whether this process is a forked child (its environment exits with
    /// a tagged wait status).
    pub forked_child: bool,
    /// Ranges `fork` shares writable instead of copy-on-write (pipes).
    pub shared_ranges: Vec<(u64, u64)>,
    /// Children that ended, noticed but not yet reported to the signal
    /// layer (`SIGCHLD`).
    pub sigchld_pending: u32,
    /// Set when the glue has the kernel post `SIGCHLD` at each child's end
    /// (it then arrives asynchronously, at once, wherever the process is):
    /// noticing an end here then raises nothing more.
    pub sigchld_from_kernel: bool,
    /// The CPU affinity mask set by `sched_setaffinity` (0: never set, all
    /// cores); inherited by children.
    pub affinity: u64,
    /// `set_tid_address`/`CLONE_CHILD_CLEARTID`'s word (kept; one thread,
    /// so nobody waits on it).
    pub clear_child_tid: u64,
    children: BTreeMap<i32, Child>,
    /// Ended children not yet waited for: pid → wait status.
    zombies: BTreeMap<i32, i32>,
    pending_exec: Option<Entry>,
    pending_stack: Option<u64>,
}

impl ProcState {
    /// A first process: pid `pid`, its own group and session, no parent.
    pub fn new(pid: i32) -> Self {
        ProcState { pid, ppid: 0, pgid: pid, sid: pid, ..Default::default() }
    }

    /// Live or unwaited children.
    pub fn child_count(&self) -> usize {
        self.children.len()
    }
}

impl Process<'_> {
    /// The hook where a child's end is noticed (once per child): records
    /// its wait status for `wait4` and counts a `SIGCHLD` for the signal
    /// layer.
    pub fn child_exited(&mut self, pid: i32, wstatus: i32) {
        if self.proc.children.contains_key(&pid) {
            self.proc.zombies.insert(pid, wstatus);
            if !self.proc.sigchld_from_kernel {
                self.proc.sigchld_pending += 1;
            }
        }
    }

    /// `kill` to a process group (`target` 0: the caller's own, `< -1`:
    /// group `-target`): the caller if it is in the group, and each child
    /// it knows in the group (the members a shell signals: its jobs).
    /// Members that are neither (a grandchild that moved into the group)
    /// are not reached: the process model keeps no machine-wide table.
    pub(crate) fn kill_group(&mut self, target: i32, sig: u64) -> SysResult<u64> {
        if sig > 64 {
            return Err(EINVAL);
        }
        let pgrp = if target == 0 { self.proc.pgid } else { target.checked_neg().ok_or(ESRCH)? };
        // Our children in the group, and every other member the session's
        // table knows (grandchildren, siblings, ...).
        let mut members: Vec<i32> = self
            .proc
            .children
            .iter()
            .filter(|(_, c)| c.pgid == pgrp)
            .map(|(&pid, _)| pid)
            .collect();
        if let Some(host) = self.procs.as_mut() {
            members.extend(host.group_members(pgrp));
        }
        let pid = self.proc.pid;
        members.retain(|&m| m > 0 && m != pid);
        members.sort_unstable();
        members.dedup();
        let me = self.proc.pgid == pgrp;
        if !me && members.is_empty() {
            return Err(ESRCH);
        }
        // The session's table may still name members that just ended (their
        // entries go as they are reclaimed): those answer ESRCH, and a group
        // of only such is no group (Linux's ESRCH); EPERM is for a member
        // that exists but refused.
        let mut delivered = me;
        let mut refused = false;
        for pid in members {
            match self.signals.post(pid, sig as u32) {
                Ok(()) => delivered = true,
                Err(ESRCH) => {}
                Err(_) => refused = true,
            }
        }
        if me && sig != 0 {
            self.signals.raise(sig as u32, crate::signal::SI_USER, pid);
        }
        match (delivered, refused) {
            (true, _) => Ok(0),
            (false, true) => Err(EPERM),
            (false, false) => Err(ESRCH),
        }
    }

    /// Notices children that ended ([`Process::poll_children`]) and raises
    /// one `SIGCHLD` for them (signals do not queue: one pending bit).
    pub fn raise_sigchld(&mut self) {
        self.poll_children();
        if self.proc.sigchld_pending > 0 {
            self.proc.sigchld_pending = 0;
            self.signals.raise(SIGCHLD as u32, CLD_EXITED, 0);
        }
    }

    /// Asks about every live child without sleeping; calls
    /// [`Process::child_exited`] for each one found ended.
    pub fn poll_children(&mut self) {
        let Some(host) = self.procs.as_mut() else { return };
        let mut ended = Vec::new();
        for &pid in self.proc.children.keys() {
            if self.proc.zombies.contains_key(&pid) {
                continue;
            }
            match host.child_status(pid) {
                ChildPoll::Running => {}
                ChildPoll::Ended(s) => ended.push((pid, wait_of_env_status(s))),
                ChildPoll::Lost => ended.push((pid, wait_signaled(SIGKILL))),
            }
        }
        for (pid, w) in ended {
            self.child_exited(pid, w);
        }
    }

    /// The new image's entry after a successful `execve`, once: the glue
    /// jumps there instead of returning to the old program.
    pub fn take_exec(&mut self) -> Option<Entry> {
        self.proc.pending_exec.take()
    }

    /// The stack a `clone` child starts on (`clone`'s `newsp`), once.
    pub fn take_child_stack(&mut self) -> Option<u64> {
        self.proc.pending_stack.take()
    }

    /// What the environment exits with once the program called `exit`:
    /// the plain code for the first process, a tagged wait status for a
    /// forked child.
    pub fn env_exit_status(&self) -> Option<u64> {
        let code = self.exit_status()?;
        Some(if self.proc.forked_child {
            env_status_of_wait(wait_exited(code))
        } else {
            code as u8 as u64
        })
    }
}

/// What the environment exits with when the program dies of `signal`: a
/// tagged wait status for a forked child, the shell's `128 + signal` for
/// the first process.
pub fn env_status_of_signal(forked_child: bool, signal: i32) -> u64 {
    if forked_child { env_status_of_wait(wait_signaled(signal)) } else { 128 + signal as u64 }
}

/// Whether `nr` is one of this module's calls.
pub fn handles(nr: u64) -> bool {
    matches!(
        nr,
        SYS_FORK
            | SYS_VFORK
            | SYS_CLONE
            | SYS_EXECVE
            | SYS_WAIT4
            | SYS_GETPID
            | SYS_GETTID
            | SYS_SET_TID_ADDRESS
            | SYS_GETPPID
            | SYS_SETPGID
            | SYS_GETPGID
            | SYS_GETPGRP
            | SYS_SETSID
            | SYS_GETSID
            | SYS_UMASK
            | SYS_CHMOD
            | SYS_FCHMOD
            | SYS_FCHMODAT
            | SYS_UTIMENSAT
            | SYS_SCHED_GETAFFINITY
            | SYS_SCHED_SETAFFINITY
    )
}

/// Handles one of this module's calls ([`handles`]).
pub fn call(p: &mut Process<'_>, nr: u64, a: [u64; 6], mem: &mut dyn UserMemory) -> SysResult<u64> {
    match nr {
        SYS_FORK | SYS_VFORK => fork(p, 0, 0, mem),
        SYS_CLONE => match classify_clone(a[0]) {
            Ok(_) => fork(p, a[1], if a[0] & CLONE_CHILD_SETTID != 0 { a[3] } else { 0 }, mem),
            Err(e) => {
                p.host.report(&format!(
                    "libos-posix: clone flags {:#x} refused (errno {}): only fork and vfork \
                     are implemented, not threads",
                    a[0], e.0
                ));
                Err(e)
            }
        },
        SYS_EXECVE => execve(p, a[0], a[1], a[2], mem),
        SYS_WAIT4 => wait4(p, a[0] as i32, a[1], a[2] as u32, a[3], mem),
        SYS_GETPID | SYS_GETTID => Ok(p.proc.pid as u64),
        SYS_SET_TID_ADDRESS => {
            p.proc.clear_child_tid = a[0];
            Ok(p.proc.pid as u64)
        }
        SYS_GETPPID => Ok(p.proc.ppid as u64),
        SYS_SETPGID => setpgid(p, a[0] as i32, a[1] as i32).map(|_| 0),
        SYS_GETPGID => getpgid(p, a[0] as i32).map(|g| g as u64),
        SYS_GETPGRP => Ok(p.proc.pgid as u64),
        SYS_SETSID => {
            if p.proc.pgid == p.proc.pid {
                return Err(EPERM);
            }
            p.proc.sid = p.proc.pid;
            p.proc.pgid = p.proc.pid;
            p.publish_group(p.proc.pid, p.proc.pid);
            Ok(p.proc.pid as u64)
        }
        SYS_GETSID => match a[0] as i32 {
            0 => Ok(p.proc.sid as u64),
            pid if pid == p.proc.pid || p.proc.children.contains_key(&pid) => Ok(p.proc.sid as u64),
            _ => Err(ESRCH),
        },
        SYS_UMASK => {
            let old = p.fs.umask;
            p.fs.umask = a[0] as u32 & 0o777;
            Ok(old as u64)
        }
        SYS_CHMOD => {
            let path = read_path(mem, a[0])?;
            let ino = p.fs.lookup(p.cwd, &path, true)?;
            p.fs.set_perm(ino, a[1] as u32)?;
            Ok(0)
        }
        SYS_FCHMOD => {
            let ino = p.fds.get(a[0] as i32)?.borrow().ino;
            p.fs.set_perm(ino, a[1] as u32)?;
            Ok(0)
        }
        SYS_FCHMODAT => {
            let path = read_path(mem, a[1])?;
            let start = p.at_dir(a[0] as i32, &path)?;
            let ino = p.fs.lookup(start, &path, true)?;
            p.fs.set_perm(ino, a[2] as u32)?;
            Ok(0)
        }
        SYS_UTIMENSAT => utimensat(p, a[0] as i32, a[1], a[2], a[3] as u32, mem),
        SYS_SCHED_GETAFFINITY | SYS_SCHED_SETAFFINITY => {
            affinity(p, nr == SYS_SCHED_SETAFFINITY, a[0] as i32, a[1], a[2], mem)
        }
        _ => Err(ENOSYS),
    }
}

fn fork(
    p: &mut Process<'_>,
    new_stack: u64,
    child_tid: u64,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    if p.procs.is_none() {
        return Err(ENOSYS);
    }
    p.poll_children();
    if p.proc.children.len() >= MAX_CHILDREN {
        return Err(EAGAIN);
    }
    let shared = p.proc.shared_ranges.clone();
    // The child's pipe ends are counted in now, before it exists: see
    // `Pipes::inherit`.
    p.pipes.inherit();
    // Likewise the child's holds on a file server's inodes (its working
    // directory and one per open description): taken before it exists.
    let held = p.hold_for_child();
    let forked = p.procs.as_mut().ok_or(ENOSYS)?.fork(&shared);
    if forked.is_err() {
        p.pipes.fork_failed();
        p.unhold_for_child(held);
    }
    match forked? {
        Forked::Parent(pid) => {
            p.proc.children.insert(pid, Child { pgid: p.proc.pgid });
            Ok(pid as u64)
        }
        Forked::Child(pid) => {
            let st = &mut p.proc;
            st.ppid = st.pid;
            st.pid = pid;
            st.forked_child = true;
            st.children.clear();
            st.zombies.clear();
            st.sigchld_pending = 0;
            let (pid, pgid) = (st.pid, st.pgid);
            p.publish_group(pid, pgid);
            // Our copies of the parent's pipe ends (counted in by the
            // parent): wake-ups must reach us.
            p.pipes.join_as_child();
            // The parent's channel connections stay the parent's.
            crate::chan::forked_child(p);
            if p.fs_base != 0 {
                // The FS base is per vCPU: the child's starts at 0.
                // SetFsBase of a base the parent had set cannot fail; if it
                // did, the child is still the child (never -errno here).
                let _ = p.host.set_fs(p.fs_base);
            }
            if new_stack != 0 {
                p.proc.pending_stack = Some(new_stack);
            }
            if child_tid != 0 {
                // CLONE_CHILD_SETTID: in the child's memory (now its own).
                let _ = mem.write(child_tid, &pid.to_le_bytes());
            }
            Ok(0)
        }
    }
}

fn wait4(
    p: &mut Process<'_>,
    pid: i32,
    wstatus: u64,
    options: u32,
    rusage: u64,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    if options & !(WNOHANG | WUNTRACED | WCONTINUED | W_THREAD_BITS) != 0 {
        return Err(EINVAL);
    }
    if pid == i32::MIN {
        return Err(ESRCH); // -INT_MIN overflows, as Linux answers
    }
    let wanted = |st: &ProcState, child: i32, c: &Child| match pid {
        -1 => true,
        0 => c.pgid == st.pgid,
        p if p > 0 => child == p,
        p => c.pgid == -p,
    };
    loop {
        let mark = p.procs.as_ref().map(|h| h.mark()).unwrap_or(0);
        p.poll_children();
        let st = &p.proc;
        let candidates: Vec<i32> =
            st.children.iter().filter(|(k, c)| wanted(st, **k, c)).map(|(k, _)| *k).collect();
        if candidates.is_empty() {
            return Err(ECHILD);
        }
        if let Some(&child) = candidates.iter().find(|c| st.zombies.contains_key(c)) {
            let w = st.zombies[&child];
            if wstatus != 0 {
                mem.write(wstatus, &w.to_le_bytes())?;
            }
            if rusage != 0 {
                mem.write(rusage, &[0u8; 144])?;
            }
            p.proc.zombies.remove(&child);
            p.proc.children.remove(&child);
            return Ok(child as u64);
        }
        if options & WNOHANG != 0 {
            return Ok(0);
        }
        // ^C typed meanwhile goes to the foreground job now.
        p.watch_terminal();
        // A signal cuts the wait short (restarted under SA_RESTART).
        if p.signals.interrupting() {
            return Err(crate::signal::ERESTARTSYS);
        }
        match p.procs.as_mut() {
            Some(h) => h.sleep(mark)?,
            None => return Err(ECHILD),
        }
    }
}

/// The bytes of a CPU mask as Linux copies them (`cpumask_size()` for at
/// most 64 CPUs).
const CPUMASK_BYTES: u64 = 8;

/// `sched_getaffinity`/`sched_setaffinity` of this process (pid 0 or its
/// own). The mask is the process's record, inherited by its children; a
/// process never moves to another core (its vCPU stays where it was
/// created: said once on the report line when the mask excludes it), but
/// the children it forks afterwards are placed on the mask's cores. Other
/// processes' masks: `EPERM` for a child (not kept here), `ESRCH` for
/// anyone else. Linux's checks: a length below the mask or not a multiple
/// of 8 is `EINVAL` for `get`; `set` reads what `len` covers (the rest 0)
/// and refuses a mask with no online core (`EINVAL`).
fn affinity(
    p: &mut Process<'_>,
    set: bool,
    pid: i32,
    len: u64,
    ptr: u64,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    let (online, here) = match p.procs.as_ref() {
        Some(h) => (h.cores(), h.core()),
        None => (1, 0),
    };
    if pid < 0 {
        return Err(EINVAL);
    }
    if pid != 0 && pid != p.proc.pid {
        return Err(if p.proc.children.contains_key(&pid) { EPERM } else { ESRCH });
    }
    let current = if p.proc.affinity == 0 { online } else { p.proc.affinity };
    if !set {
        if len < CPUMASK_BYTES || !len.is_multiple_of(8) {
            return Err(EINVAL);
        }
        mem.write(ptr, &current.to_le_bytes())?;
        return Ok(CPUMASK_BYTES);
    }
    let mut raw = [0u8; 8];
    let n = len.min(CPUMASK_BYTES) as usize;
    mem.read(ptr, &mut raw[..n])?;
    let mask = u64::from_le_bytes(raw) & online;
    if mask == 0 {
        return Err(EINVAL);
    }
    if here < 64 && mask & (1 << here) == 0 {
        p.host.report(&format!(
            "libos-posix: sched_setaffinity: pid {} stays on core {here} (a vCPU does not move); its children go to the mask's cores",
            p.proc.pid
        ));
    }
    p.proc.affinity = mask;
    if let Some(h) = p.procs.as_mut() {
        h.set_affinity(mask);
    }
    Ok(0)
}

fn setpgid(p: &mut Process<'_>, pid: i32, pgid: i32) -> SysResult<()> {
    if pgid < 0 {
        return Err(EINVAL);
    }
    let me = p.proc.pid;
    let target = if pid == 0 { me } else { pid };
    let pgid = if pgid == 0 { target } else { pgid };
    // The group must be the target's own or one this process knows in its
    // session (its own, a child's).
    let known =
        pgid == target || pgid == p.proc.pgid || p.proc.children.values().any(|c| c.pgid == pgid);
    if target == me {
        if p.proc.sid == me {
            return Err(EPERM); // a session leader cannot move
        }
        if !known {
            return Err(EPERM);
        }
        p.proc.pgid = pgid;
        p.publish_group(me, pgid);
        return Ok(());
    }
    let Some(c) = p.proc.children.get_mut(&target) else { return Err(ESRCH) };
    if !known {
        return Err(EPERM);
    }
    c.pgid = pgid;
    p.publish_group(target, pgid);
    Ok(())
}

fn getpgid(p: &Process<'_>, pid: i32) -> SysResult<i32> {
    if pid == 0 || pid == p.proc.pid {
        return Ok(p.proc.pgid);
    }
    p.proc.children.get(&pid).map(|c| c.pgid).ok_or(ESRCH)
}

/// `UTIME_NOW` and `UTIME_OMIT` (`include/uapi/linux/stat.h`).
const UTIME_NOW: i64 = (1 << 30) - 1;
const UTIME_OMIT: i64 = (1 << 30) - 2;

fn utimensat(
    p: &mut Process<'_>,
    dirfd: i32,
    path: u64,
    times: u64,
    flags: u32,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let ino: Ino = if path == 0 {
        // futimens: the descriptor itself.
        if dirfd == AT_FDCWD {
            return Err(EFAULT);
        }
        p.fds.get(dirfd)?.borrow().ino
    } else {
        let path = read_path(mem, path)?;
        if path.is_empty() && flags & AT_EMPTY_PATH != 0 {
            p.fds.get(dirfd)?.borrow().ino
        } else {
            let start = p.at_dir(dirfd, &path)?;
            p.fs.lookup(start, &path, flags & AT_SYMLINK_NOFOLLOW == 0)?
        }
    };
    let mtime = if times == 0 {
        Some(p.fs.now)
    } else {
        let mut b = [0u8; 32];
        mem.read(times, &mut b)?;
        let word = |i: usize| i64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        for (sec, nsec) in [(word(0), word(1)), (word(2), word(3))] {
            if nsec != UTIME_NOW && nsec != UTIME_OMIT {
                Timespec { sec, nsec }.to_ns()?;
            }
        }
        match word(3) {
            UTIME_OMIT => None,
            UTIME_NOW => Some(p.fs.now),
            nsec => Some(Timespec { sec: word(2), nsec }),
        }
    };
    if let Some(t) = mtime {
        p.fs.set_mtime(ino, t)?;
    }
    Ok(0)
}

/// Reads a NUL-terminated string of at most `max` bytes (`E2BIG` beyond).
fn read_cstr(mem: &dyn UserMemory, addr: u64, max: usize) -> SysResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = addr;
    loop {
        let chunk = (PAGE_SIZE - at % PAGE_SIZE) as usize;
        let mut buf = alloc::vec![0u8; chunk];
        mem.read(at, &mut buf)?;
        if let Some(n) = buf.iter().position(|&c| c == 0) {
            out.extend_from_slice(&buf[..n]);
            if out.len() > max {
                return Err(E2BIG);
            }
            return Ok(out);
        }
        out.extend_from_slice(&buf);
        if out.len() > max {
            return Err(E2BIG);
        }
        at = at.checked_add(chunk as u64).ok_or(EFAULT)?;
    }
}

/// Reads a NULL-terminated array of strings (`argv`, `envp`; a null
/// pointer is an empty array, as Linux takes it), `budget` bytes in all.
fn read_strv(mem: &dyn UserMemory, addr: u64, budget: &mut usize) -> SysResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    if addr == 0 {
        return Ok(out);
    }
    let mut at = addr;
    loop {
        let mut w = [0u8; 8];
        mem.read(at, &mut w)?;
        let ptr = u64::from_le_bytes(w);
        if ptr == 0 {
            return Ok(out);
        }
        let s = read_cstr(mem, ptr, *budget)?;
        // Each string and its pointer count (Linux counts the pointers too).
        *budget = budget.checked_sub(s.len() + 1 + 8).ok_or(E2BIG)?;
        out.push(s);
        at = at.checked_add(8).ok_or(EFAULT)?;
    }
}

/// The `#!` line of a script: the interpreter and its optional argument
/// (the rest of the line, trimmed, as one word, as Linux takes it).
pub fn parse_shebang(head: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.len().min(SHEBANG_MAX - 2)];
    let line = match line.iter().position(|&c| c == b'\n') {
        Some(n) => &line[..n],
        None => line,
    };
    let ws = |c: &u8| *c == b' ' || *c == b'\t';
    let start = line.iter().position(|c| !ws(c))?;
    let line = &line[start..];
    let end = line.iter().position(ws).unwrap_or(line.len());
    let interp = line[..end].to_vec();
    let rest = &line[end..];
    let arg = match rest.iter().position(|c| !ws(c)) {
        Some(s) => {
            let e = rest.iter().rposition(|c| !ws(c) && *c != b'\r').map_or(s, |e| e + 1);
            (e > s).then(|| rest[s..e].to_vec())
        }
        None => None,
    };
    Some((interp, arg))
}

/// The path `execve` names, made absolute (for `/proc/self/exe`).
fn absolute(p: &Process<'_>, path: &[u8]) -> Vec<u8> {
    if path.first() == Some(&b'/') {
        return path.to_vec();
    }
    let mut abs = p.fs.path_of(p.cwd).unwrap_or_else(|_| b"/".to_vec());
    if abs.last() != Some(&b'/') {
        abs.push(b'/');
    }
    abs.extend_from_slice(path);
    abs
}

/// `/proc/self/exe`.
pub const SELF_EXE: &[u8] = b"/proc/self/exe";

/// `readlink("/proc/self/exe")`'s target, if `path` names it.
pub fn self_exe_link<'p>(p: &'p Process<'_>, path: &[u8]) -> Option<&'p [u8]> {
    (path == SELF_EXE && !p.proc.exe.is_empty()).then_some(p.proc.exe.as_slice())
}

fn execve(
    p: &mut Process<'_>,
    path: u64,
    argv: u64,
    envp: u64,
    mem: &mut dyn UserMemory,
) -> SysResult<u64> {
    let Some(el) = p.proc.layout else { return Err(ENOSYS) };
    let mut path = read_path(mem, path)?;
    let mut budget = ARG_BYTES_MAX;
    let mut argv = read_strv(mem, argv, &mut budget)?;
    let envp = read_strv(mem, envp, &mut budget)?;
    // Resolve the file, following `#!` interpreters.
    let mut depth = 0;
    let image: Cow<'_, [u8]> = loop {
        if path.is_empty() {
            return Err(ENOENT);
        }
        if path == SELF_EXE && !p.proc.exe.is_empty() {
            path = p.proc.exe.clone();
        }
        let ino = p.fs.lookup(p.cwd, &path, true)?;
        // One question to a file server: a regular file with an execute bit.
        let st = p.fs.stat(ino)?;
        if st.mode & S_IFMT != S_IFREG || st.mode & 0o111 == 0 {
            return Err(EACCES);
        }
        let bytes: Cow<'_, [u8]> = match p.fs.archive_bytes(ino) {
            Some(b) => Cow::Borrowed(b),
            None => Cow::Owned(p.fs.contents(ino).map_err(|_| EACCES)?.to_vec()),
        };
        if let Some((interp, arg)) = parse_shebang(&bytes[..bytes.len().min(SHEBANG_MAX)]) {
            depth += 1;
            if depth > INTERP_DEPTH_MAX {
                return Err(ELOOP);
            }
            let mut new = Vec::with_capacity(argv.len() + 2);
            new.push(interp.clone());
            new.extend(arg);
            new.push(path.clone());
            new.extend(argv.into_iter().skip(1));
            argv = new;
            path = interp;
            continue;
        }
        break bytes;
    };
    let plan = exec::plan(&image, el.pie_bias, p.mm.layout().user_end).map_err(|e| e.errno())?;
    let exe = absolute(p, &path);

    // The point of no return: the old image goes.
    for d in p.fds.close_on_exec() {
        p.release(d);
    }
    let l = p.mm.layout();
    let _ = p.mm.unmap(l.min_addr, l.user_end - l.min_addr, &mut *p.memory);
    p.mm = Mm::new(Layout { brk_start: plan.end, brk_limit: el.brk_limit.max(plan.end), ..l });
    p.fs_base = 0;
    p.proc.clear_child_tid = 0;
    let mut random = [0u8; 16];
    p.host.random(&mut random);
    let argv_refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    let envp_refs: Vec<&[u8]> = envp.iter().map(Vec::as_slice).collect();
    match p.load(
        &image,
        el.pie_bias,
        &argv_refs,
        &envp_refs,
        &random,
        el.stack_top,
        el.stack_size,
        mem,
    ) {
        Ok(entry) => {
            p.proc.exe = exe;
            p.proc.pending_exec = Some(entry);
            Ok(0)
        }
        Err(e) => {
            // Linux kills the process when the new image cannot be set up
            // after the old one is gone (SIGKILL); the status reads 137.
            p.host.report(&format!("libos-posix: execve failed after the point of no return: {e}"));
            p.exit_status = Some(128 + SIGKILL);
            Err(ENOMEM)
        }
    }
}

#[cfg(test)]
mod tests;
