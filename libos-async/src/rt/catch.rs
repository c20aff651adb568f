//! A task's panic caught at its [`JoinHandle`](super::JoinHandle): the
//! environment goes on, the joiner gets [`JoinError::Panicked`].
//!
//! **What this module owns**: each core's *poll stack* (the stack its
//! executor loop runs on), the saved stack pointer to resume at when a
//! task panics, the message of a caught panic until its joiner takes it,
//! and the switch [`set_panic_ends_env`].
//!
//! **Why not unwinding.** Ring-3 programs are built for
//! `x86_64-unknown-none` with `panic = "abort"`; stable Rust has no
//! unwinder for that target (`panic_unwind` needs `-Z build-std`). So a
//! panic cannot run the panicking task's destructors.
//!
//! **What is done instead: the poll stack is abandoned.** An executor
//! loop (`block_on`'s and every executor vCPU's) does not run on the
//! vCPU's own stack but on a poll stack of its core (a lazily filled
//! region of [`POLL_STACK_BYTES`] with a guard page, [`crate::vm`]),
//! entered once by a small assembly switch that saves the callee-saved
//! registers and the stack pointer on the vCPU stack (`guarded`). When a
//! task panics *inside its poll*, the panic handler (`on_panic`) records
//! the message and the task, and switches back to the saved stack pointer:
//! `guarded` returns "panicked" to the loop's owner, which marks the task
//! done-with-error (`settle`), wakes its joiner, takes a fresh poll
//! stack and enters the loop again. The old poll stack — every frame from
//! the executor loop down to the panic, the task's future included — is
//! **never returned to, never reused and never freed**: its memory and the
//! task's allocation (one strong count stays on it) are leaked. That is
//! what makes it sound without unwinding: nothing is deallocated or
//! overwritten under a live frame (pinned data, including anything the
//! future pinned on its stack, stays where it was, forever), exactly as
//! if the task's poll had blocked for ever on a thread of its own. No
//! reference held by an abandoned frame is used again either: the loops
//! hand their state to the poll stack as raw pointers and make short-lived
//! references from them (`exec::block_on`), the task's stage (its
//! future) is never touched again, and its header is only read and
//! written through atomics and locks.
//!
//! **What a caught panic costs the survivors**, said plainly: the
//! destructors of the task's locals never run, so what it held stays
//! held — a spin lock it held stays locked (other tasks that take it spin
//! for ever), a `RefCell` stays borrowed, its memory stays allocated. The
//! leaked memory is the poll stack's touched pages (a few KiB for a
//! shallow task) plus the task. Panics the runtime cannot recover from
//! are not caught and end the environment with exit code 101 as before:
//! a panic outside a task's poll (the executor's own code), in
//! `block_on`'s main future, while any run-queue lock is held (a
//! user [`Policy`](super::Policy) that panicked inside `enqueue`, for
//! instance), a panic while handling a panic, and running out of memory
//! (exit 104). [`set_panic_ends_env`]`(true)` (or
//! [`RuntimeConfig::panic_ends_env`](super::RuntimeConfig::panic_ends_env))
//! turns catching off altogether.
//!
//! **Cost**: one stack switch when an executor loop starts (and after
//! each caught panic); nothing per poll.
//!
//! Under `cargo test` (host, unwinding) the same bookkeeping (`settle`)
//! runs from a `catch_unwind` around each poll (`task::Cell::poll_once`).

use alloc::collections::BTreeMap;
use alloc::string::String;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Mutex;

use super::policy::TaskId;
use super::task::{DONE, Header};

/// Why a task has no output for its [`JoinHandle`](super::JoinHandle).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// The task panicked; the runtime caught it (see [`catch`](self)).
    Panicked {
        /// The task's id.
        task: TaskId,
        /// The panic's message and location (cut to
        /// [`MESSAGE_MAX`] bytes).
        message: String,
    },
}

impl JoinError {
    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panicked { .. })
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked { task, message } => {
                write!(f, "task {} panicked: {message}", task.0)
            }
        }
    }
}

/// The longest message kept of a caught panic, in bytes.
pub const MESSAGE_MAX: usize = 256;
/// Each poll stack's size (a lazily filled region: only touched pages
/// cost a frame).
pub const POLL_STACK_BYTES: u64 = 256 * 1024;

/// Task panics end the environment (no catching).
static PANIC_ENDS_ENV: AtomicBool = AtomicBool::new(false);
/// Panics caught so far.
static CAUGHT: AtomicU64 = AtomicU64::new(0);

/// The errors of ended tasks, keyed by their header's address (a
/// panicked task is never freed, so the address stays unique), until the
/// joiner takes them. One whose [`JoinHandle`](super::JoinHandle) is
/// dropped unjoined stays, like the task itself (the handle's drop does not
/// look: that check cost the spawn-join path more than the 5 % allowed).
static ERRORS: Mutex<BTreeMap<usize, JoinError>> = Mutex::new(BTreeMap::new());

/// With `true`, a task's panic ends the environment (exit code 101, as
/// before catching existed); with `false` (the default) it is caught and
/// handed to the task's joiner.
pub fn set_panic_ends_env(on: bool) {
    PANIC_ENDS_ENV.store(on, Ordering::SeqCst);
}

/// Whether a task's panic ends the environment.
pub fn panic_ends_env() -> bool {
    PANIC_ENDS_ENV.load(Ordering::SeqCst)
}

/// Task panics caught so far in this environment.
pub fn panics_caught() -> u64 {
    CAUGHT.load(Ordering::Relaxed)
}

#[cfg_attr(
    all(not(test), not(target_os = "none")),
    allow(dead_code, reason = "called by the target's panic path and the host tests")
)]
/// Ends the task of `header` with `error`: stores the error for its
/// joiner, marks it `DONE` and panicked, wakes the joiner. The task's
/// stage (its future) is not touched: it stays where it is, for ever.
pub(crate) fn settle(header: &Header, error: JoinError) {
    CAUGHT.fetch_add(1, Ordering::Relaxed);
    ERRORS.lock().insert(header as *const Header as usize, error);
    header.panicked.store(true, Ordering::Relaxed);
    // Release: the joiner's Acquire load of DONE sees the error (and it
    // is under a lock anyway). A waker racing with us may have moved
    // RUNNING to NOTIFIED: it queued nothing (only IDLE -> SCHEDULED
    // queues), and DONE overrides it.
    header.state.store(DONE, Ordering::Release);
    let joiner = header.joiner.lock().take();
    if let Some(w) = joiner {
        w.wake();
    }
}

/// The error of the ended task of `header` (for its joiner), taken out of
/// the table.
pub(crate) fn take_error(header: &Header) -> Option<JoinError> {
    ERRORS.lock().remove(&(header as *const Header as usize))
}

/// Errors waiting for a joiner (for tests).
#[cfg(test)]
pub(crate) fn errors_pending() -> usize {
    ERRORS.lock().len()
}

/// Host (unwinding) stand-in: a panic payload's message.
#[cfg(test)]
pub(crate) fn payload_message(payload: &(dyn core::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        String::from(*s)
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("(non-string panic payload)")
    }
}

/// How [`guarded`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_os = "none"), allow(dead_code, reason = "the host never switches stacks"))]
pub(crate) enum Exit {
    /// The body returned.
    Returned,
    /// A task panicked inside the body: the caller calls [`settle_caught`]
    /// and enters its loop again.
    Panicked,
}

#[cfg(target_os = "none")]
pub(crate) use imp::on_panic;
pub(crate) use imp::{guarded, settle_caught};

#[cfg(not(target_os = "none"))]
mod imp {
    use super::Exit;

    /// Host: runs `body(ctx)` on the current stack (the host catches task
    /// panics around each poll instead).
    ///
    /// # Safety
    /// `body` may be called with `ctx`.
    pub(crate) unsafe fn guarded(
        _core: usize,
        body: unsafe extern "C" fn(*mut ()),
        ctx: *mut (),
    ) -> Exit {
        // SAFETY: the caller's promise.
        unsafe { body(ctx) };
        Exit::Returned
    }

    /// Host: never called (nothing is caught by switching stacks).
    pub(crate) fn settle_caught(_core: usize) {}
}

#[cfg(target_os = "none")]
mod imp {
    use core::fmt::Write;
    use core::sync::atomic::{AtomicU64, Ordering};

    use abi::MAX_CORES;
    use spin::Mutex;

    use super::{Exit, JoinError, MESSAGE_MAX, PANIC_ENDS_ENV, POLL_STACK_BYTES};
    use crate::rt::policy::TaskId;
    use crate::rt::task::{self, Header};

    /// Per core: the vCPU stack pointer [`guarded`] saved (0: no loop is
    /// guarded on that core). Written by this core only.
    static RESUME: [AtomicU64; MAX_CORES] = [const { AtomicU64::new(0) }; MAX_CORES];
    /// Per core: the top of its current poll stack (0: none yet, or the
    /// last one was abandoned).
    static STACK_TOP: [AtomicU64; MAX_CORES] = [const { AtomicU64::new(0) }; MAX_CORES];

    /// A caught panic between the panic handler and [`settle_caught`].
    struct Pending {
        header: usize,
        len: usize,
        msg: [u8; MESSAGE_MAX],
    }

    impl Write for Pending {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            for ch in s.chars() {
                let mut b = [0; 4];
                let b = ch.encode_utf8(&mut b).as_bytes();
                if self.len + b.len() > MESSAGE_MAX {
                    break;
                }
                self.msg[self.len..self.len + b.len()].copy_from_slice(b);
                self.len += b.len();
            }
            Ok(())
        }
    }

    /// The run queues' lock check, set by the first [`guarded`] call (a
    /// function pointer, not a call: the panic handler, which every
    /// program links, must not pull the executors' tables into programs
    /// that never run one — they made a forked benchmark's image 75 pages
    /// larger). A panic can be caught only inside `guarded`, so it is set
    /// whenever it is needed.
    static LOCKS_FREE: spin::Once<fn() -> bool> = spin::Once::new();

    static PENDING: [Mutex<Pending>; MAX_CORES] =
        [const { Mutex::new(Pending { header: 0, len: 0, msg: [0; MESSAGE_MAX] }) }; MAX_CORES];

    /// The stack switch. `rdi` = argument of `body`, `rsi` = `body`,
    /// `rdx` = the new stack's top (16-aligned), `rcx` = where to store
    /// the saved stack pointer. Returns 0 when `body` returned, 1 when
    /// `exo_rt_catch_resume` came back to the saved stack pointer.
    #[unsafe(naked)]
    unsafe extern "C" fn switch(
        _ctx: *mut (),
        _body: unsafe extern "C" fn(*mut ()),
        _top: u64,
        _slot: *mut u64,
    ) -> u64 {
        // SAFETY (naked): saves the System V callee-saved registers on the
        // current stack, stores that stack pointer in `*slot`, and calls
        // `body(ctx)` on the new stack (16-aligned at the call, as the ABI
        // wants). `rbp` is left pointing at the saved `rbp`, so frame-pointer
        // walks from the poll stack continue into the caller's frames. When
        // `body` returns, `rbx` (callee-saved, so preserved by `body`) still
        // holds `slot`: the saved stack pointer comes back from there.
        // `resume` re-enters at `2:` with the same stack pointer.
        core::arch::naked_asm!(
            "push rbp",
            "mov rbp, rsp",
            "push rbx",
            "push r12",
            "push r13",
            "push r14",
            "push r15",
            "mov rbx, rcx",
            "mov qword ptr [rbx], rsp",
            "mov rsp, rdx",
            "call rsi",
            "mov rsp, qword ptr [rbx]",
            "xor eax, eax",
            "2:",
            "pop r15",
            "pop r14",
            "pop r13",
            "pop r12",
            "pop rbx",
            "pop rbp",
            "ret",
            ".global exo_rt_catch_resume",
            "exo_rt_catch_resume:",
            "mov rsp, rdi",
            "mov eax, 1",
            "jmp 2b",
        )
    }

    unsafe extern "C" {
        /// Re-enters [`switch`]'s epilogue with the saved stack pointer
        /// `rsp`: [`switch`] returns 1.
        fn exo_rt_catch_resume(rsp: u64) -> !;
    }

    /// The top of `core`'s poll stack, made if there is none.
    fn poll_stack(core: usize) -> Option<u64> {
        let top = STACK_TOP[core].load(Ordering::Relaxed);
        if top != 0 {
            return Some(top);
        }
        crate::exception::ensure_registered().ok()?;
        let region = crate::vm::reserve(
            "poll stack",
            POLL_STACK_BYTES,
            abi::Rights::RW,
            crate::vm::Fill::Lazy,
        )
        .ok()?;
        let top = region.end() & !15;
        STACK_TOP[core].store(top, Ordering::Relaxed);
        Some(top)
    }

    /// Runs `body(ctx)` — an executor loop — on `core`'s poll stack, so
    /// that a task's panic inside it comes back here as
    /// [`Exit::Panicked`] (see the module documentation). Without a poll
    /// stack (no region left) the body runs here, unguarded: panics end
    /// the environment.
    ///
    /// # Safety
    /// `body` may be called with `ctx`; `core` is the calling core; no
    /// other `guarded` is active on this core. Whatever `body` reaches
    /// through `ctx` may be abandoned mid-use if a task panics: the caller
    /// passes only raw pointers in `ctx` and `body` keeps no reference
    /// derived from them across a task's poll.
    pub(crate) unsafe fn guarded(
        core: usize,
        body: unsafe extern "C" fn(*mut ()),
        ctx: *mut (),
    ) -> Exit {
        LOCKS_FREE.call_once(|| crate::rt::exec::queue_locks_free);
        let Some(top) = poll_stack(core) else {
            // SAFETY: the caller's promise.
            unsafe { body(ctx) };
            return Exit::Returned;
        };
        // SAFETY: `top` is the 16-aligned end of a mapped (lazily filled,
        // guard below) region used by no one else: poll stacks are per
        // core, and only one loop runs on a core. The slot is this core's.
        let r = unsafe { switch(ctx, body, top, RESUME[core].as_ptr()) };
        RESUME[core].store(0, Ordering::Relaxed);
        if r == 0 { Exit::Returned } else { Exit::Panicked }
    }

    /// Called by the panic handler first: if the panic can be caught (see
    /// the module documentation), reports it and switches back to the
    /// executor's saved stack; returns otherwise.
    pub(crate) fn on_panic(info: &core::panic::PanicInfo) {
        if PANIC_ENDS_ENV.load(Ordering::Relaxed) || crate::heap::out_of_memory() {
            return;
        }
        let core = crate::sys::core_id();
        if core >= MAX_CORES {
            return;
        }
        let resume = RESUME[core].load(Ordering::Relaxed);
        if resume == 0 {
            return;
        }
        let header = task::current_header(core);
        if header.is_null() {
            return;
        }
        // SAFETY: `CURRENT[core]` is set only while this core polls that
        // task, holding a strong count; the poll is still on the stack
        // (we are inside it).
        let h: &Header = unsafe { &*header };
        if h.pin == task::PIN_MAIN {
            return; // `block_on`'s main future: its panic ends the program
        }
        // Disarm first: a panic from here on ends the environment.
        RESUME[core].store(0, Ordering::Relaxed);
        if !LOCKS_FREE.get().is_some_and(|locks_free| locks_free()) {
            crate::println!(
                "libos: task panicked while a run-queue lock was held (in a policy?): not caught"
            );
            return;
        }
        let Some(mut p) = PENDING[core].try_lock() else { return };
        p.header = header as usize;
        p.len = 0;
        let _ = write!(p, "{}", info.message());
        if let Some(loc) = info.location() {
            let _ = write!(p, " at {}:{}", loc.file(), loc.line());
        }
        let id = h.id();
        crate::println!(
            "panic in env {} on core {core} in task {id} (caught; its JoinHandle gets the error): {}",
            crate::env_id(),
            core::str::from_utf8(&p.msg[..p.len]).unwrap_or("?"),
        );
        drop(p);
        crate::console::print_backtrace();
        task::clear_current(core);
        // The poll stack is abandoned with everything on it.
        STACK_TOP[core].store(0, Ordering::Relaxed);
        // SAFETY: `resume` is the stack pointer `switch` saved on this
        // core's vCPU stack, in a `guarded` call that is still active (it
        // is below us: we run on its poll stack), and nothing has touched
        // that part of the vCPU stack since. Every frame above it on the
        // poll stack is abandoned for ever (module documentation).
        unsafe { exo_rt_catch_resume(resume) }
    }

    /// After [`guarded`] returned [`Exit::Panicked`]: ends the task that
    /// panicked with its error and wakes its joiner.
    pub(crate) fn settle_caught(core: usize) {
        let (header, message) = {
            let mut p = PENDING[core].lock();
            let msg = core::str::from_utf8(&p.msg[..p.len]).unwrap_or("?");
            let message = alloc::string::String::from(msg);
            (core::mem::replace(&mut p.header, 0), message)
        };
        if header == 0 {
            return;
        }
        // SAFETY: the header of the task whose poll panicked: its
        // allocation is never freed (the strong count its executor held
        // for the poll was abandoned with the poll stack).
        let h: &Header = unsafe { &*(header as *const Header) };
        super::settle(h, JoinError::Panicked { task: TaskId(h.id()), message });
    }
}
