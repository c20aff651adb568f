//! libos-posix's doors to processes ([`libos_posix::proc::ProcHost`]),
//! over the kernel's child environments and libos-async's copy-on-write
//! fork.
//!
//! - **fork**: `libos_async::fork::fork_on` with the child on the next core
//!   of `InfoPage::user_cores` after the last one used (round robin,
//!   starting after our own), so that a pipeline's processes spread over
//!   the machine. The child then registers the system-call redirection
//!   again (it is per environment), maps the initrd (`InitrdMap` frames are
//!   not shared by `ShareRange`) and returns into the program with `rax` 0
//!   (libos-posix sets its FS base). The exception entry is registered by
//!   `fork_on`; the runtime's handler is in the copied memory.
//! - **Quota**: a child gets an eighth of our quota (at most
//!   [`CHILD_QUOTA_MAX`]); when that much is not left, half as much, down
//!   to [`CHILD_QUOTA_MIN`], then `fork` fails with `EAGAIN`. Every frame
//!   of a process tree is thus carved out of the first process's quota: a
//!   fork bomb runs out of it and gets `EAGAIN` while the rest of the
//!   system is untouched.
//! - **wait**: `ChildStatus`, sleeping on the event queue's tail (the
//!   kernel posts `CHILD_EXIT` there when a child is reclaimed).

use crate::glue;
use crate::layout;
use crate::redirect;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use libos_async::abi::Error;
use libos_async::{info, sys};
use libos_posix::linux::SysResult;
use libos_posix::linux::errno::{EAGAIN, EINVAL, ENOMEM};
use libos_posix::proc::{ChildPoll, Forked, ProcHost};

/// The most quota a child gets (64 MiB).
pub const CHILD_QUOTA_MAX: u64 = 16384;
/// The least quota a child gets (4 MiB: room for `execve` of busybox and
/// the pages it touches; memory is backed at first touch, `glue::Book`).
pub const CHILD_QUOTA_MIN: u64 = 1024;

/// Set once this environment forked or was forked: its pages may then be
/// copy-on-write, and the page record's frame numbers may be stale
/// (`glue::Mem` asks the kernel before freeing).
pub static FORKED: AtomicBool = AtomicBool::new(false);
/// Set in a forked child: its environment exits with a tagged wait status.
pub static IS_CHILD: AtomicBool = AtomicBool::new(false);
/// The core the last child went to.
static LAST_CORE: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The kernel's child environments, for libos-posix.
pub struct Procs;

/// The affinity mask children are placed within (`sched_setaffinity`;
/// all ones: any user core). Inherited by a forked child with its memory.
static AFFINITY: AtomicU64 = AtomicU64::new(u64::MAX);

/// The user cores (bit per core).
fn user_cores() -> u64 {
    match info().user_cores {
        0 => 1 << sys::core_id(),
        m => m,
    }
}

/// The next core of `user_cores` (within the affinity mask, if it leaves
/// any) after `from` (round robin).
pub fn next_core(from: usize) -> usize {
    let all = info().user_cores;
    if all == 0 {
        return sys::core_id();
    }
    let mask = match all & AFFINITY.load(Ordering::Relaxed) {
        0 => all,
        m => m,
    };
    let n = (info().cores as usize).clamp(1, 64);
    (1..=n).map(|i| (from + i) % n).find(|c| mask & (1 << c) != 0).unwrap_or(sys::core_id())
}

impl ProcHost for Procs {
    fn fork(&mut self, shared: &[(u64, u64)]) -> SysResult<Forked> {
        for &(start, len) in shared {
            // Shared writable with the child (pipes): marked once in
            // libos-async's table, which `fork_on` shares first
            // (`ShareWritable`); the marks are inherited.
            if libos_async::shared::contains(start) {
                continue;
            }
            match libos_async::shared::share_with_children(start, len) {
                Ok(()) => {}
                Err(Error::QuotaExceeded) => return Err(EAGAIN),
                Err(_) => return Err(EINVAL),
            }
        }
        let last = LAST_CORE.load(Ordering::Relaxed);
        let core = next_core(if last == usize::MAX { sys::core_id() } else { last });
        // The first process's quota less what its file server got.
        let ours = u64::from(info().frame_quota).saturating_sub(crate::fsserver::quota_given());
        let mut quota = (ours / 8).clamp(CHILD_QUOTA_MIN, CHILD_QUOTA_MAX);
        FORKED.store(true, Ordering::Release);
        loop {
            match libos_async::fork::fork_on(quota, core) {
                Ok(Some(child)) => {
                    LAST_CORE.store(core, Ordering::Relaxed);
                    return Ok(Forked::Parent(child as i32));
                }
                Ok(None) => return Ok(Forked::Child(child_side())),
                Err(Error::QuotaExceeded) if quota / 2 >= CHILD_QUOTA_MIN => quota /= 2,
                Err(Error::QuotaExceeded) => return Err(EAGAIN),
                Err(Error::NoMemory) => return Err(ENOMEM),
                Err(e) => {
                    glue::log_line(&alloc::format!("posix: fork failed: {e:?}"));
                    return Err(EAGAIN);
                }
            }
        }
    }

    fn child_status(&mut self, pid: i32) -> ChildPoll {
        match sys::child_status(pid as u32 as u64) {
            Ok(s) => ChildPoll::Ended(s),
            Err(Error::Busy) => ChildPoll::Running,
            Err(_) => ChildPoll::Lost,
        }
    }

    fn mark(&self) -> u64 {
        sys::event_tail()
    }

    fn sleep(&mut self, mark: u64) -> SysResult<()> {
        let pred = libos_async::Pred::events_ne(mark);
        let pred = match glue::terminal_wake() {
            Some(keys) => pred.either(keys),
            None => pred,
        };
        if pred.sleep().is_err() {
            let _ = sys::yield_now();
        }
        Ok(())
    }

    fn cores(&self) -> u64 {
        user_cores()
    }

    fn core(&self) -> usize {
        sys::core_id()
    }

    fn set_affinity(&mut self, mask: u64) {
        AFFINITY.store(mask, Ordering::Relaxed);
    }

    fn publish_group(&mut self, pid: i32, pgid: i32) {
        if pid == info().env_id as i32 {
            MY_PGID.store(pgid, Ordering::Relaxed);
        }
        groups::publish(pid, pgid);
    }

    fn group_members(&mut self, pgid: i32) -> Vec<i32> {
        groups::members(pgid)
    }

    fn foreground(&mut self) -> Option<i32> {
        groups::foreground()
    }

    fn set_foreground(&mut self, pgrp: i32) {
        groups::set_foreground(pgrp);
    }
}

/// The session's process-group table: one page of memory shared writable
/// with every process of the run (`libos_async::shared::alloc` in the first
/// process, before any fork): word 0 the terminal's foreground process
/// group (`tcsetpgrp` in any process), word 1 the pid of a foreground
/// process asking for the keyboard (`glue::terminal_wake`), then an entry
/// per live process, `pid << 32 | pgid` (0: free). Each process writes its own entry (at start, after
/// `fork`, at `setpgid`/`setsid`, cleared at exit) and a parent its child's
/// at `setpgid(child, …)`; `kill(-pgid)` reads every entry. Nothing read
/// here is trusted beyond what `kill` of a pid could do anyway: the kernel
/// checks every post (one family). A process ended without its exit path
/// (destroyed from outside) leaves a stale entry: environment ids are not
/// reused, so a post to it fails and is ignored.
mod groups {
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicU64, Ordering};

    /// Words (one page): the foreground word, the ask word, 510 entries.
    const WORDS: usize = 512;
    /// Where the process entries start.
    const FIRST_ENTRY: usize = 2;
    /// The table's base (0: none), inherited by every child with its memory.
    static BASE: AtomicU64 = AtomicU64::new(0);
    static FULL_REPORTED: core::sync::atomic::AtomicBool =
        core::sync::atomic::AtomicBool::new(false);

    /// Makes the table (the first process, before any fork). Without one
    /// a group reaches only its caller and the caller's children.
    pub fn create() {
        match libos_async::shared::alloc("posix-groups", (WORDS * 8) as u64) {
            Ok(r) => BASE.store(r.base(), Ordering::Release),
            Err(e) => crate::glue::log_line(&alloc::format!(
                "posix: no process-group table ({e:?}): kill(-pgid) reaches own children only"
            )),
        }
    }

    /// The terminal's foreground group (`None` without a table; `Some(0)`
    /// before anyone set it).
    pub fn foreground() -> Option<i32> {
        words().map(|w| w[0].load(Ordering::Acquire) as u32 as i32)
    }

    pub fn set_foreground(pgrp: i32) {
        if let Some(w) = words() {
            w[0].store(u64::from(pgrp as u32), Ordering::Release);
        }
    }

    /// The process entries (after the foreground and ask words).
    fn entries() -> Option<&'static [AtomicU64]> {
        words().map(|w| &w[FIRST_ENTRY..])
    }

    pub fn word(i: usize) -> Option<u64> {
        words().map(|w| w[i].load(Ordering::Acquire))
    }

    pub fn set_word(i: usize, v: u64) {
        if let Some(w) = words() {
            w[i].store(v, Ordering::Release);
        }
    }

    pub fn clear_word_if(i: usize, v: u64) {
        if let Some(w) = words() {
            let _ = w[i].compare_exchange(v, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    pub fn word_addr(i: usize) -> Option<u64> {
        words().map(|w| w[i].as_ptr() as u64)
    }

    fn words() -> Option<&'static [AtomicU64]> {
        let base = BASE.load(Ordering::Acquire);
        if base == 0 {
            return None;
        }
        // SAFETY: `BASE` is set only by `create`, to a committed read-write
        // region of `WORDS` words from `shared::alloc` that this
        // environment and every one forked from it keep mapped for their
        // whole lives (it is never released). Every access is atomic, here
        // and in the other processes, so the view is sound whatever they
        // write.
        Some(unsafe { core::slice::from_raw_parts(base as *const AtomicU64, WORDS) })
    }

    fn entry(pid: i32, pgid: i32) -> u64 {
        u64::from(pid as u32) << 32 | u64::from(pgid as u32)
    }

    pub fn publish(pid: i32, pgid: i32) {
        let Some(t) = entries() else { return };
        if pid <= 0 {
            return;
        }
        let mine = |w: u64| w >> 32 == u64::from(pid as u32);
        if let Some(e) = t.iter().find(|e| mine(e.load(Ordering::Acquire))) {
            e.store(if pgid == 0 { 0 } else { entry(pid, pgid) }, Ordering::Release);
            return;
        }
        if pgid == 0 {
            return;
        }
        let claimed = t.iter().any(|e| {
            e.compare_exchange(0, entry(pid, pgid), Ordering::AcqRel, Ordering::Acquire).is_ok()
        });
        if !claimed && !FULL_REPORTED.swap(true, Ordering::Relaxed) {
            crate::glue::log_line("posix: the process-group table is full");
        }
    }

    pub fn members(pgid: i32) -> Vec<i32> {
        let Some(t) = entries() else { return Vec::new() };
        let want = u64::from(pgid as u32);
        t.iter()
            .map(|e| e.load(Ordering::Acquire))
            .filter(|&w| w != 0 && w & 0xffff_ffff == want)
            .map(|w| (w >> 32) as u32 as i32)
            .collect()
    }
}

/// Makes the session's process-group table (the first process, before
/// any fork: the file server's included).
pub fn create_group_table() {
    groups::create();
}

/// This process's group, as last published.
static MY_PGID: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);

/// Whether this process's group is the terminal's foreground.
pub fn in_foreground() -> bool {
    let me = MY_PGID.load(Ordering::Relaxed);
    me > 0 && groups::foreground() == Some(me)
}

/// Asks the keyboard's reader for the keyboard (word 1 of the table).
pub fn ask_terminal() {
    groups::set_word(1, u64::from(info().env_id));
}

/// The process asking for the keyboard, if any.
pub fn terminal_asked() -> Option<u32> {
    groups::word(1).filter(|&w| w != 0).map(|w| w as u32)
}

/// Clears the ask of `pid` (answered, or not ours to answer: it asks again).
pub fn terminal_answered(pid: u32) {
    groups::clear_word_if(1, u64::from(pid));
}

/// The address of the ask word, for a sleep that wakes on an ask.
pub fn terminal_ask_word() -> Option<u64> {
    groups::word_addr(1)
}

/// The child's side of a fork: what is per environment, set up again.
/// Returns the child's pid. A child that cannot take the program's system
/// calls ends at once (its parent sees it killed by `SIGKILL`'s status).
fn child_side() -> i32 {
    IS_CHILD.store(true, Ordering::Release);
    LAST_CORE.store(sys::core_id(), Ordering::Relaxed);
    match sys::initrd_map(layout::INITRD_VA) {
        Ok(_) | Err(Error::AlreadyMapped) => {}
        Err(e) => {
            glue::log_line(&alloc::format!("posix: forked child cannot map the initrd: {e:?}"));
            sys::exit(libos_posix::proc::env_status_of_signal(true, 9));
        }
    }
    if let Err(e) = redirect::register() {
        glue::log_line(&alloc::format!("posix: forked child cannot redirect: {e:?}"));
        sys::exit(libos_posix::proc::env_status_of_signal(true, 9));
    }
    if let Err(e) = crate::signal::install_child() {
        glue::log_line(&alloc::format!("posix: forked child cannot take signals: {e:?}"));
        sys::exit(libos_posix::proc::env_status_of_signal(true, 9));
    }
    info().env_id as i32
}
