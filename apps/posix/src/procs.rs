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
        if libos_async::Pred::events_ne(mark).sleep().is_err() {
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
