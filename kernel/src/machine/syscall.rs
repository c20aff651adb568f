//! The `syscall` entry and the system-call dispatcher.
//!
//! `syscall` lands in `syscall_entry` with interrupts masked (`SFMASK`
//! clears IF, TF, DF, AC, NT). It swaps to the kernel GS, parks the user
//! `rsp` in the per-core area and switches to this core's trap stack.
//!
//! `RingEnter` and `Protect` first take a fast path without a trap frame:
//! the entry keeps only the registers a call may clobber, calls
//! [`ring_enter_fast`] (the ring protocol's own answers, in place) or
//! [`protect_fast`] (the whole call) and, when that was the whole call,
//! returns with `sysretq`. Everything else — every other call, and a call
//! the fast path hands on — pushes what an interrupt from ring 3 would have
//! (`vector` = [`SYSCALL_VECTOR`]) and then every register in the interrupt
//! path's order, so the frame is the same [`TrapFrame`], and calls the
//! handler `HOT_TABLE` gives for the number (a hot call's own, or
//! [`dispatch_general`]); it leaves through the interrupt path's
//! `isr_restore`, so every way back to ring 3 that may switch vCPUs is the
//! one `iretq` path. (The entry tests two numbers before the frame; the
//! table, which replaced a second dispatch in Rust after it, pays for the
//! second test: no call got slower.)
//!
//! Past the hot calls, a call goes decode → typed call → handler → one
//! writer: [`kernel::syscall::decode`] turns the registers into a
//! [`Request`] (the pure argument checks), [`handle`] runs it and returns a
//! [`Next`] (the result and what comes after: return, restart, switch,
//! sleep, hand over, or a frame already replaced), and [`complete`] writes
//! `rax` and takes that step. Pointers are copied through the owner's page
//! tables, never dereferenced.
//!
//! System calls run to completion with interrupts off; the long ones (TLB
//! shootdowns) keep serving this core's mailbox while they wait.

use super::env::{self, Outcome, Progress, console_write};
use super::gdt::{KERNEL_CS, USER_DS};
use super::interrupts::TrapFrame;
use super::percpu::PERCPU_KERNEL_STACK_OFFSET;
use super::percpu::PERCPU_USER_RSP_OFFSET;
use super::percpu::{self, MAX_CPUS, current_index};
use super::sched;
use super::uring::{Entered, FastEntered, PredicateMemory, VcpuRing};
use abi::{Error, Rights, Syscall};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::frames::FrameNumber;
use kernel::ownership::{EnvId, ShareMode};
use kernel::syscall::{Accept, Request};
use x86_64::VirtAddr;
use x86_64::registers::model_specific::{Efer, EferFlags, LStar, SFMask, Star};
use x86_64::registers::rflags::RFlags;

/// The `vector` field of a trap frame built by `syscall`.
pub const SYSCALL_VECTOR: u64 = 0x100;

core::arch::global_asm!(
    r#"
    .macro PUSH_CLOBBERED
    push rcx
    push r11
    push rdi
    push rsi
    push rdx
    push r8
    push r9
    push r10
    .endm
    .macro POP_CLOBBERED
    pop r10
    pop r9
    pop r8
    pop rdx
    pop rsi
    pop rdi
    pop r11
    pop rcx
    .endm
    // What an interrupt from ring 3 pushes, then every register in the
    // interrupt path's order: a `TrapFrame`, whose address goes in rdi.
    .macro PUSH_SYSCALL_FRAME
    push {user_ds}
    push qword ptr gs:[{user_rsp}]
    push r11
    push {user_cs}
    push rcx
    push 0
    push {vector}
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    .endm
    .section .text.syscall_entry, "ax"
    .global syscall_entry
syscall_entry:
    swapgs
    mov gs:[{user_rsp}], rsp
    // System-call redirection: a `syscall` whose return address lies
    // outside the running environment's library range goes to its handler
    // (label 3). Disabled, the range is 0..u64::MAX.
    cmp rcx, gs:[{redirect_start}]
    jb 3f
    cmp rcx, gs:[{redirect_end}]
    jae 3f
    mov rsp, gs:[{kernel_stack}]
    cmp rax, {ring_enter}
    je 5f
    cmp rax, {protect}
    je 6f
2:
    PUSH_SYSCALL_FRAME
    // The hot calls' handlers and `dispatch_general` straight from the
    // table (no second dispatch); numbers past it are general.
    cmp rax, {table_len}
    jae 4f
    call qword ptr [{table} + rax * 8]
    jmp isr_restore
4:
    call {general}
    jmp isr_restore
5:
    // RingEnter first tries `ring_enter_fast` with no trap frame: only the
    // registers a call may clobber are kept, and it returns with `sysretq`.
    PUSH_CLOBBERED
    call {ring_enter_fast}
    test rdx, rdx
    POP_CLOBBERED
    jnz 1f
    // rax holds the result, rcx the user rip (canonical: below USER_MAX),
    // r11 the user rflags.
    mov rsp, gs:[{user_rsp}]
    swapgs
    sysretq
1:
    // The full path goes on from where the fast one stopped (the count it
    // consumed is in `RING_CARRY`).
    mov eax, {ring_enter}
    jmp 2b
6:
    // Protect, the fault path's call, the same way (`protect_fast`: the
    // whole call; the full path only to look at a wake-up or a death).
    PUSH_CLOBBERED
    call {protect_fast}
    test rdx, rdx
    POP_CLOBBERED
    jnz 7f
    mov rsp, gs:[{user_rsp}]
    swapgs
    sysretq
7:
    // rax holds the result: a frame, then `protect_finish`.
    PUSH_SYSCALL_FRAME
    call {protect_finish}
    jmp isr_restore
3:
    // Redirected: rip (rcx), rflags (r11) and rsp go to the three words of
    // this core's VcpuPage (pushed through the kernel's mapping of it: rsp
    // is the only register free here); then `sysretq` to the handler entry
    // on this core's handler stack, every other register untouched.
    mov rsp, gs:[{redirect_record}]
    push qword ptr gs:[{user_rsp}]
    push r11
    push rcx
    // The entry was checked to lie below USER_MAX: canonical, so `sysretq`
    // cannot fault in ring 0.
    mov rcx, gs:[{redirect_entry}]
    mov rsp, gs:[{redirect_stack}]
    swapgs
    sysretq
    "#,
    user_rsp = const PERCPU_USER_RSP_OFFSET,
    kernel_stack = const PERCPU_KERNEL_STACK_OFFSET,
    redirect_start = const percpu::PERCPU_REDIRECT_START_OFFSET,
    redirect_end = const percpu::PERCPU_REDIRECT_END_OFFSET,
    redirect_entry = const percpu::PERCPU_REDIRECT_ENTRY_OFFSET,
    redirect_stack = const percpu::PERCPU_REDIRECT_STACK_OFFSET,
    redirect_record = const percpu::PERCPU_REDIRECT_RECORD_OFFSET,
    user_ds = const USER_DS as u64,
    user_cs = const super::gdt::USER_CS as u64,
    vector = const SYSCALL_VECTOR,
    table = sym HOT_TABLE,
    table_len = const HOT_TABLE_LEN,
    general = sym dispatch_general,
    ring_enter = const Syscall::RingEnter as u64,
    ring_enter_fast = sym ring_enter_fast,
    protect = const Syscall::Protect as u64,
    protect_fast = sym protect_fast,
    protect_finish = sym protect_finish,
);

unsafe extern "C" {
    fn syscall_entry();
}

/// Enables `syscall` on this core.
pub fn init_this_cpu() {
    // SAFETY: enabling SCE only makes the `syscall` instruction usable; its
    // target is programmed right below, before any ring-3 code runs.
    unsafe { Efer::update(|f| f.insert(EferFlags::SYSTEM_CALL_EXTENSIONS)) };
    // STAR: kernel CS/SS from 0x08; user SS/CS from 0x10 + 8 and + 16
    // (`USER_DS`, `USER_CS`), for the RingEnter fast path's `sysretq` (every
    // other return is `iretq`).
    // SAFETY: selectors of this core's GDT (see gdt.rs for the layout).
    unsafe { Star::write_raw(0x10, KERNEL_CS) };
    LStar::write(VirtAddr::new(syscall_entry as *const () as u64));
    SFMask::write(
        RFlags::INTERRUPT_FLAG
            | RFlags::TRAP_FLAG
            | RFlags::DIRECTION_FLAG
            | RFlags::ALIGNMENT_CHECK
            | RFlags::NESTED_TASK,
    );
}

/// The calls `syscall_entry` sends straight to their own handler, by number
/// (`HOT_TABLE_LEN` entries; every other number goes to
/// [`dispatch_general`]).
const HOT_TABLE_LEN: usize = Syscall::CowBreak as usize + 1;

/// `syscall_entry`'s table, indexed by call number, after it built the
/// trap frame: the hot calls — the ring, the null call, `CowBreak` (the
/// copy-on-write fault's call) and protected control transfer — are
/// answered before decoding and with nothing else loaded (their arguments
/// need no checks of [`kernel::syscall::decode`]'s, and each handler writes
/// its own `rax` or replaces the frame); every other entry is
/// [`dispatch_general`] (`Protect` never arrives here: the entry answers it
/// with [`protect_fast`]).
#[unsafe(no_mangle)]
static HOT_TABLE: [extern "C" fn(&mut TrapFrame); HOT_TABLE_LEN] = {
    let mut table = [dispatch_general as extern "C" fn(&mut TrapFrame); HOT_TABLE_LEN];
    table[Syscall::Null as usize] = null;
    table[Syscall::RingEnter as usize] = ring_enter;
    table[Syscall::CowBreak as usize] = cow_break_hot;
    table[Syscall::Call as usize] = pct_call;
    table[Syscall::Reply as usize] = pct_reply;
    table
};

/// Handles the system call in `frame` as `syscall_entry` would once it has
/// built the frame (a hot call [`Next::Hot`] hands back).
fn syscall_dispatch(frame: &mut TrapFrame) {
    match HOT_TABLE.get(frame.rax as usize) {
        Some(handler) => handler(frame),
        None => dispatch_general(frame),
    }
}

/// `Null`.
extern "C" fn null(frame: &mut TrapFrame) {
    frame.rax = 0;
}

/// What a handler of [`dispatch_general`] leaves to do: the result and the
/// step after it. [`complete`] applies it and is the one writer of `rax`.
enum Next {
    /// Back to the caller with this result, once a wake-up for this core
    /// (`env::wake` sets `resched_pending` instead of interrupting itself)
    /// and the death of the running environment have been looked at.
    Return(Result<u64, Error>),
    /// One step of a long operation done: the caller executes the same
    /// `syscall` again (`rip` two bytes back, `rax` still the number; see
    /// [`dispatch_general`]). Wake-ups and death are looked at as for
    /// `Return`.
    Restart,
    /// The result, then the caller gives up the CPU (`Yield`, `Exit`,
    /// `VcpuExit`).
    Switch(Result<u64, Error>, sched::Why),
    /// The result (what the caller resumes with), then it sleeps.
    Sleep(Result<u64, Error>, sched::Wait),
    /// Back to the caller at once with this error: nothing happened (an
    /// unknown number, a directed yield to nobody).
    Refuse(Error),
    /// Directed yield: the rest of the slot goes to this environment's
    /// vCPU here; a refusal comes back at once.
    HandOver(EnvId),
    /// A hot call, whose handler in `HOT_TABLE` writes its own
    /// result or replaces the frame (not reached: those calls are answered
    /// before decoding).
    Hot,
    /// The frame holds the context to resume now, `rax` included (an
    /// exception frame resumed, a call abandoned).
    Replaced,
    /// As `Replaced`, then wake-ups (a signal unmasked with bits pending)
    /// are looked at as for `Return`.
    Resumed,
}

/// Every system call but the hot ones of `HOT_TABLE`: decode,
/// handle, then [`complete`].
///
/// **Restartable calls.** A long operation (`FrameRevoke` or a lowering
/// `FrameGrant` of a frame mapped many times, `UnmapRange`, `InitrdMap`) does one bounded
/// step ([`Progress::More`]) and makes the caller execute the same
/// `syscall` instruction again (two bytes back, `rax` still the call
/// number, arguments possibly advanced). Pending interrupts — the slot's
/// end among them — are taken between the steps with the caller's
/// registers saved as at any other point in ring 3, so no step keeps the
/// core for long and the work is done on the caller's own time.
extern "C" fn dispatch_general(frame: &mut TrapFrame) {
    let args = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9];
    let (env, next) = match kernel::syscall::decode(frame.rax, args) {
        // An unknown number does nothing: straight back.
        Err(Error::InvalidSyscall) => (None, Next::Refuse(Error::InvalidSyscall)),
        Err(e) => (Some(sched::current_env()), Next::Return(Err(e))),
        Ok(request) => {
            let env = sched::current_env();
            let next = handle(request, &env, frame);
            (Some(env), next)
        }
    };
    complete(frame, env, next);
}

/// Writes the result into `rax` and takes the step after it. `env` is the
/// caller's running environment (`None`: nothing happened that could make
/// anyone else run first); it is dropped before anything that may leave
/// this stack for the idle loop, so that it is not leaked.
fn complete(frame: &mut TrapFrame, env: Option<Arc<env::Env>>, next: Next) {
    match next {
        Next::Return(result) => {
            frame.rax = abi::encode(result);
            look_before_returning(frame, env);
        }
        Next::Restart => {
            // `rax` still holds the call number.
            frame.rip -= 2;
            look_before_returning(frame, env);
        }
        Next::Switch(result, why) => {
            frame.rax = abi::encode(result);
            drop(env);
            sched::finish(frame, why);
        }
        Next::Sleep(result, wait) => {
            frame.rax = abi::encode(result);
            drop(env);
            sched::sleep_current(frame, wait);
            sched::finish(frame, sched::Why::Event);
        }
        Next::Refuse(e) => frame.rax = e.to_raw(),
        Next::HandOver(target) => {
            drop(env);
            // On success the frame holds the registers of whoever runs now.
            if let Err(e) = sched::yield_to(frame, target) {
                frame.rax = e.to_raw();
            }
        }
        Next::Hot => {
            drop(env);
            syscall_dispatch(frame);
        }
        Next::Replaced => {}
        Next::Resumed => look_before_returning(frame, env),
    }
}

/// Before returning to the caller: switches away if its environment is
/// dying or an event woke a vCPU on this core during the call.
fn look_before_returning(frame: &mut TrapFrame, env: Option<Arc<env::Env>>) {
    let Some(env) = env else { return };
    let dying = env.is_dying();
    drop(env);
    if dying || sched::resched_pending() {
        sched::finish(frame, sched::Why::Event);
    }
}

/// One system call's handler: its effect, and what comes next.
fn handle(request: Request, env: &Arc<env::Env>, frame: &mut TrapFrame) -> Next {
    let done = |r: Result<(), Error>| Next::Return(r.map(|()| 0));
    let progress = |r: Result<Progress, Error>| match r {
        Ok(Progress::More) => Next::Restart,
        Ok(Progress::Done(v)) => Next::Return(Ok(v)),
        Err(e) => Next::Return(Err(e)),
    };
    match request {
        Request::Null => Next::Return(Ok(0)),
        // Answered from `HOT_TABLE` before decoding.
        Request::RingEnter { .. } | Request::Call { .. } | Request::Reply => Next::Hot,
        Request::ConsoleWrite { ptr, len, stream } => {
            Next::Return(console_write(env, ptr, len, stream as u64))
        }
        Request::Exit { code } => {
            env::terminate(env, Outcome::Exited(code));
            Next::Switch(Ok(0), sched::Why::Event)
        }
        Request::Yield => Next::Switch(Ok(0), sched::Why::Yield),
        Request::FrameAlloc { frame: which } => {
            Next::Return(env::frame_alloc(env, which).map(u64::from))
        }
        Request::FrameFree { frame: f } => done(env::frame_free(env, f)),
        Request::FrameGrant { frame: f, grantee, rights } => {
            progress(env::frame_grant(env, f, grantee, rights))
        }
        Request::FrameRevoke { frame: f, grantee } => progress(env::frame_revoke(env, f, grantee)),
        Request::Map { frame: f, va, rights } => done(env::map(env, f, va, rights)),
        Request::AllocMap { va, pages, rights, out } => {
            Next::Return(env::alloc_map(env, va, u64::from(pages), rights, out).map(u64::from))
        }
        Request::MapBatch { ptr, count } => Next::Return(env::map_batch(env, ptr, count)),
        Request::Unmap { va } => done(env::unmap(env, va)),
        // Answered by `syscall_entry`'s `protect_fast` (kept for the ring).
        Request::Protect { va, rights } => done(env::protect(env, va, rights)),
        Request::SetExceptionHandler { entry, stack_top, stride } => {
            *env.exception.lock() = env::ExceptionHandler { entry, stack_top, stride };
            Next::Return(Ok(0))
        }
        Request::ExceptionResume { frame_ptr } => match exception_resume(env, frame, frame_ptr) {
            // The frame now holds the resumed context, rax included.
            Ok(()) => Next::Replaced,
            Err(e) => Next::Return(Err(e)),
        },
        Request::VcpuStart { core, entry, stack_top, arg } => {
            let context = sched::initial_context(entry, stack_top, arg);
            done(sched::start_vcpu(env, core, context))
        }
        Request::VcpuExit => {
            // Inside a call this ends the call (the caller gets
            // `CallFailed`); otherwise the scheduler drops the vCPU.
            if sched::abandon_call(frame) {
                return Next::Replaced;
            }
            sched::exit_current_vcpu();
            Next::Switch(Ok(0), sched::Why::Event)
        }
        Request::EnvLookup { ptr, len } => Next::Return(env_lookup(env, ptr, len)),
        Request::FrameStatus { frame: f } => Next::Return(env::frame_status(f)),
        Request::UnmapRange { va, pages, done: so_far } => {
            match env::unmap_range(env, va, pages, so_far) {
                Ok(env::RangeStep::More { va, pages, done }) => {
                    (frame.rdi, frame.rsi, frame.rdx) = (va, pages, done);
                    Next::Restart
                }
                Ok(env::RangeStep::Done(n)) => Next::Return(Ok(n)),
                Err(e) => Next::Return(Err(e)),
            }
        }
        // These belong to the caller's vCPU, not to a callee (the ring ones
        // check inside `with_current_ring`).
        Request::SleepOn { .. } | Request::YieldTo { .. } if sched::in_call() => {
            Next::Return(Err(Error::Busy))
        }
        Request::RingSetup { base, sq_entries, cq_entries } => {
            Next::Return(sched::with_current_ring(|slot, _| {
                // A new registration replaces (and unpins) the old ring.
                *slot = Some(VcpuRing::setup(env, base, sq_entries, cq_entries)?);
                Ok(0)
            }))
        }
        Request::SleepOn { ptr, count } => match sleep_on(env, ptr, count) {
            Ok(Some(program)) => Next::Sleep(Ok(0), sched::Wait::Predicate(program)),
            Ok(None) => Next::Return(Ok(0)),
            Err(e) => Next::Return(Err(e)),
        },
        Request::SlotAlloc { core, index, count } => {
            Next::Return(super::slots::alloc(env.id, core, index, count))
        }
        Request::SlotFree { core, mask } => done(super::slots::free(env.id, core, mask)),
        Request::QueueDelay { core } => Next::Return(Ok(sched::queue_delay(core.index()))),
        Request::SetSlotHandlers { prologue, epilogue } => {
            env.prologue.store(prologue, Ordering::Release);
            env.epilogue.store(epilogue, Ordering::Release);
            Next::Return(Ok(0))
        }
        Request::SetDefaultTime { core, on } => {
            if on {
                env.default_time.fetch_or(1 << core.index(), Ordering::AcqRel);
            } else {
                env.default_time.fetch_and(!(1 << core.index()), Ordering::AcqRel);
            }
            Next::Return(Ok(0))
        }
        Request::YieldTo { target } => {
            match target.and_then(env::lookup).filter(|t| !t.is_dying()) {
                Some(t) => Next::HandOver(t.id),
                None => Next::Refuse(Error::NoSuchEnv),
            }
        }
        Request::IpcRegister { entry, stack_top, stride } => {
            // The entry last: a concurrent call sees the stacks that go with it.
            env.ipc.stack_top.store(stack_top, Ordering::Relaxed);
            env.ipc.stride.store(stride, Ordering::Relaxed);
            env.ipc.entry.store(entry, Ordering::Release);
            Next::Return(Ok(0))
        }
        Request::IpcAccept { who, allow } => Next::Return(ipc_accept(env, who, allow)),
        Request::Acall { target, words } => done(super::uring::acall(env, target, words)),
        Request::InitrdMap { va, done: so_far, undo } => {
            match env::initrd_map(env, va, so_far, undo) {
                Ok(env::InitrdStep::More { done, undo }) => {
                    (frame.rsi, frame.rdx) = (done, undo);
                    Next::Restart
                }
                Ok(env::InitrdStep::Done(size)) => Next::Return(Ok(size)),
                Err(e) => Next::Return(Err(e)),
            }
        }
        Request::SetFsBase { base } => {
            // The live FS base is the running context's (the activation's
            // inside a call); it is saved with the context when it stops.
            super::xstate::set_fs_base(base);
            Next::Return(Ok(0))
        }
        Request::SetSyscallRedirect { redirect } => {
            env.redirect.set(redirect.map(|r| *r));
            sched::redirect_changed(env);
            Next::Return(Ok(0))
        }
        Request::Child { call } => {
            // The registers as `decode` read them (nothing wrote the frame
            // since).
            let args = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9];
            child_call(env, frame, call, args)
        }
        Request::RepossessList { ptr, len } => {
            env::repossess::set_list(env, ptr, len);
            Next::Return(Ok(0))
        }
        Request::PageAccess { va, pages, bitmap, clear_dirty } => {
            Next::Return(env::repossess::page_access(env, va, pages, bitmap, clear_dirty))
        }
        Request::RepossessStatus => Next::Return(Ok(env::repossess::status(env))),
        Request::SignalPost { target, bits } => Next::Return(env::signal::post(env, target, bits)),
        Request::ChildSignal { bits } => {
            env.signals.on_child_end.store(bits, core::sync::atomic::Ordering::Release);
            Next::Return(Ok(0))
        }
        Request::SignalEntry { entry, cores } => {
            env.signals.cores.store(cores, Ordering::Release);
            env.signals.entry.store(entry, Ordering::Release);
            if entry != 0 {
                // Bits posted before the entry existed come now.
                env::signal::unmask(env);
            }
            Next::Return(Ok(0))
        }
        Request::SignalCtl { op: abi::signal::RESUME, arg } => {
            match exception_resume(env, frame, arg) {
                Ok(()) => {
                    env::signal::unmask(env);
                    Next::Resumed
                }
                Err(e) => Next::Return(Err(e)),
            }
        }
        Request::SignalCtl { op, .. } => Next::Return(env::signal::control(env, op)),
        Request::ConsoleRead { ptr, len } => Next::Return(env::terminal::read(env, ptr, len)),
        Request::ConsoleGive { child } => done(env::terminal::give(env, child)),
    }
}

/// The child-environment and sharing calls (see `env::child`).
fn child_call(env: &Arc<env::Env>, frame: &mut TrapFrame, call: Syscall, a: [u64; 6]) -> Next {
    let done = |r: Result<(), Error>| Next::Return(r.map(|()| 0));
    if call == Syscall::EnvCreate {
        return Next::Return(env::env_create(env, a[0]));
    }
    if call == Syscall::FrameCopy {
        return Next::Return(env::frame_copy(env, FrameNumber(a[0]), a[1]));
    }
    if call == Syscall::PageQuery {
        return Next::Return(env::page_query(env, a[0]));
    }
    if call == Syscall::CowBreak {
        return Next::Return(env::cow_break(env, a[0]));
    }
    if call == Syscall::ChildStatus {
        return Next::Return(env::child_status(env, a[0]));
    }
    let child = match env::child_of(env, a[0]) {
        Ok(c) => c,
        Err(e) => return Next::Return(Err(e)),
    };
    match call {
        Syscall::ChildMap => {
            done(env::child_map(env, &child, FrameNumber(a[1]), a[2], Rights(a[3]), a[4]))
        }
        Syscall::ChildUnmap => done(env::child_unmap(&child, a[1])),
        Syscall::ShareRange | Syscall::ShareWritable => {
            let mode = if call == Syscall::ShareWritable {
                ShareMode::Writable
            } else {
                ShareMode::CopyOnWrite
            };
            share_step(frame, env::share_range(env, &child, a[1], a[2], a[3], a[4], mode))
        }
        Syscall::ChildSetEntry => done(env::child_set_entry(&child, a[1], a[2], a[3], a[4])),
        Syscall::ChildStart => done(child_start(env, &child, a[1], a[2])),
        Syscall::ChildDestroy => {
            env::child_destroy(&child);
            Next::Return(Ok(0))
        }
        Syscall::ChildQuota => Next::Return(env::child_quota(env, &child, a[1])),
        _ => Next::Return(Err(Error::InvalidSyscall)),
    }
}

/// A `ShareRange`/`ShareWritable` step: restarted with the registers
/// advanced, or the result.
fn share_step(frame: &mut TrapFrame, step: Result<env::ShareStep, Error>) -> Next {
    match step {
        Ok(env::ShareStep::More { src, dst, pages, done }) => {
            (frame.rsi, frame.rdx, frame.r10, frame.r8) = (src, dst, pages, done);
            Next::Restart
        }
        Ok(env::ShareStep::Done(n)) => Next::Return(Ok(n)),
        Err(e) => Next::Return(Err(e)),
    }
}

/// `ChildStart`: the child's vCPU on `core` with the registers of the
/// `UpcallFrame` at `ptr` in the caller's memory.
fn child_start(env: &env::Env, child: &Arc<env::Env>, core: u64, ptr: u64) -> Result<(), Error> {
    let core = abi::CoreId::from_word(core).ok_or(Error::NoSuchCore)?;
    let mut bytes = [0u8; abi::UPCALL_FRAME_SIZE as usize];
    env::copy_from_user_into(env, ptr, &mut bytes)?;
    let words = core::array::from_fn(|i| {
        u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    });
    let mut context = sched::initial_context(abi::USER_MIN, 0, 0);
    sched::resume_from(&mut context, &abi::UpcallFrame::from_words(words))?;
    sched::start_vcpu(child, core, context)?;
    env::child_started(child);
    Ok(())
}

/// `Protect` from ring 3, called by `syscall_entry` before it builds a trap
/// frame, with interrupts masked: the call a library OS's page-fault
/// handler makes before it resumes (upgrade a page), on the fault → handler
/// → resume path, the whole call (`env::protect` makes the decoder's checks
/// itself — `va` a user page outside the info region, then `rights` — so
/// the answers are the same). It asks for the full path (a frame, then
/// [`protect_finish`]) only when, as `look_before_returning` would, the
/// caller's environment is dying or a vCPU of this core was woken.
#[unsafe(no_mangle)]
extern "C" fn protect_fast(va: u64, rights: u64) -> FastReturn {
    let env = sched::current_env();
    let result = env::protect(&env, va, abi::Rights(rights));
    let full = env.is_dying();
    drop(env);
    let full = full || sched::resched_pending();
    FastReturn { rax: abi::encode(result.map(|()| 0)), full: u64::from(full) }
}

/// The rest of a `Protect` [`protect_fast`] answered (its result in the
/// frame's `rax`): the switch it asked for.
extern "C" fn protect_finish(frame: &mut TrapFrame) {
    sched::finish(frame, sched::Why::Event);
}

/// `CowBreak`, answered before decoding: the whole copy-on-write fault's
/// kernel work, on the fault → handler → resume path (`env::cow_break`
/// makes every check itself).
extern "C" fn cow_break_hot(frame: &mut TrapFrame) {
    let env = sched::current_env();
    let result = env::cow_break(&env, frame.rdi);
    frame.rax = abi::encode(result);
    look_before_returning(frame, Some(env));
}

/// `Call`: on success the frame holds the callee's registers.
extern "C" fn pct_call(frame: &mut TrapFrame) {
    if let Err(e) = sched::call(frame, frame.rdi) {
        frame.rax = e.to_raw();
    }
}

/// `Reply`: on success the frame holds the caller's registers.
extern "C" fn pct_reply(frame: &mut TrapFrame) {
    if let Err(e) = sched::reply(frame) {
        frame.rax = e.to_raw();
    }
}

fn ipc_accept(env: &env::Env, who: Accept, allow: bool) -> Result<u64, Error> {
    let who = match who {
        Accept::Any => {
            env.ipc.accept_any.store(allow, Ordering::Release);
            return Ok(0);
        }
        Accept::Env(who) => who,
    };
    let mut accept = env.ipc.accept.lock();
    let known = accept.iter().position(|&e| e == who);
    match (allow, known) {
        (true, None) if accept.len() >= abi::ACCEPT_MAX => return Err(Error::QuotaExceeded),
        (true, None) => accept.push(who),
        (false, Some(i)) => {
            accept.swap_remove(i);
        }
        _ => {}
    }
    Ok(0)
}

/// `RingEnter`: submits, then sleeps for completions if asked to.
///
/// The fast path answers everything the ring protocol can by itself in
/// place, inside one borrow of the run queue; at the first entry that needs
/// an operation run, the rest goes through [`sched::with_current_ring`],
/// which takes the ring out of the run queue so that the operation may do
/// anything the kernel does on this core.
extern "C" fn ring_enter(frame: &mut TrapFrame) {
    let carried = RING_CARRY[current_index()].swap(0, Ordering::Relaxed);
    ring_enter_full(frame, carried);
}

/// Per core, the entries the `RingEnter` fast path consumed before handing
/// the call to the full path (set and taken within one system call).
static RING_CARRY: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// What [`ring_enter_fast`] returns to `syscall_entry` (in `rax`, `rdx`).
#[repr(C)]
struct FastReturn {
    /// The system call's result.
    rax: u64,
    /// Non-zero: the full path must go on.
    full: u64,
}

/// The `RingEnter` fast path, called by `syscall_entry` before it builds a
/// trap frame, with interrupts masked: the protocol's own answers in place
/// ([`sched::enter_current_ring_fast`]). When that is not the whole call
/// (an entry needs an operation run, a timer is pending, the caller must
/// wait, there is no ring to enter this way, or a switch is owed), it
/// leaves the count consumed in `RING_CARRY` and asks for the full
/// path, which builds the frame and goes on from there.
#[unsafe(no_mangle)]
extern "C" fn ring_enter_fast(to_submit: u64, min_complete: u64) -> FastReturn {
    match sched::enter_current_ring_fast(to_submit, min_complete) {
        FastEntered::Done(consumed) if !sched::resched_pending() => {
            FastReturn { rax: u64::from(consumed), full: 0 }
        }
        FastEntered::Done(consumed) | FastEntered::Full(consumed) => {
            RING_CARRY[current_index()].store(u64::from(consumed), Ordering::Relaxed);
            FastReturn { rax: 0, full: 1 }
        }
    }
}

/// The rest of a `RingEnter` whose fast path consumed `consumed` entries:
/// the operations that need the kernel, timers, and the wait.
#[inline(never)]
fn ring_enter_full(frame: &mut TrapFrame, consumed: u64) {
    let (to_submit, min_complete) = (frame.rdi, frame.rsi);
    let entered = sched::with_current_ring(|slot, env| {
        slot.as_mut().ok_or(Error::InvalidArgument)?.enter(env, to_submit - consumed, min_complete)
    });
    match entered {
        Ok(Entered { consumed: rest, wait: None }) => {
            frame.rax = consumed + rest;
            // A `Notify` may have woken a vCPU on this core.
            reschedule_if_woken(frame);
        }
        Ok(Entered { consumed: rest, wait: Some(wait) }) => {
            frame.rax = consumed + rest;
            sched::sleep_current(frame, sched::Wait::Completions(wait));
            sched::finish(frame, sched::Why::Event);
        }
        // Only before anything was consumed: the fast path gives up at once
        // on a missing ring, a call in progress or a bad `min_complete`.
        Err(e) => frame.rax = e.to_raw(),
    }
}

/// Switches away if an event woke a vCPU on this core during the call.
#[inline]
fn reschedule_if_woken(frame: &mut TrapFrame) {
    if sched::resched_pending() {
        sched::finish(frame, sched::Why::Event);
    }
}

/// `SleepOn`: copies and verifies the predicate; `None` if it already holds.
fn sleep_on(
    env: &env::Env,
    ptr: u64,
    count: u64,
) -> Result<Option<kernel::predicate::Program>, Error> {
    use abi::predicate::{Insn, MAX_INSNS};
    if count == 0 || count > MAX_INSNS as u64 {
        return Err(Error::InvalidArgument);
    }
    let mut bytes = [0u8; MAX_INSNS * core::mem::size_of::<Insn>()];
    let bytes = &mut bytes[..count as usize * core::mem::size_of::<Insn>()];
    env::copy_from_user_into(env, ptr, bytes)?;
    let insns: alloc::vec::Vec<Insn> = bytes
        .as_chunks::<16>()
        .0
        .iter()
        .map(|c| {
            let word = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().expect("8 bytes"));
            Insn {
                op: c[0],
                dst: c[1],
                a: c[2],
                b: c[3],
                reserved: u32::from_le_bytes(c[4..8].try_into().expect("4 bytes")),
                imm: word(8),
            }
        })
        .collect();
    let memory = PredicateMemory::new(env);
    let program = kernel::predicate::verify(&insns, &memory).map_err(|e| e.to_abi())?;
    let holds = program.eval(&memory);
    Ok((!holds).then_some(program))
}

fn exception_resume(env: &env::Env, frame: &mut TrapFrame, ptr: u64) -> Result<(), Error> {
    let mut bytes = [0u8; abi::UPCALL_FRAME_SIZE as usize];
    env::copy_from_user_into(env, ptr, &mut bytes)?;
    let words = core::array::from_fn(|i| {
        u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    });
    sched::resume_from(frame, &abi::UpcallFrame::from_words(words))
}

/// `EnvLookup` (`len` checked by the decoder).
fn env_lookup(env: &env::Env, ptr: u64, len: u64) -> Result<u64, Error> {
    let bytes = env::copy_from_user(env, ptr, len as usize)?;
    let name = core::str::from_utf8(&bytes).map_err(|_| Error::InvalidArgument)?;
    env::lookup_name(name).map(|e| u64::from(e.id)).ok_or(Error::NoSuchEnv)
}
