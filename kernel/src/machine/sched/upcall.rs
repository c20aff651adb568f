//! Upcalls: exceptions raised in ring 3 delivered to the environment's
//! handler (or the environment killed), the slot prologue/epilogue frames,
//! and `ExceptionResume` loading a user-supplied frame back.
use super::runq::*;
use crate::machine::env::{self, Env, Lock, Outcome};
use crate::machine::gdt::{USER_CS, USER_DS};
use crate::machine::interrupts;
use crate::machine::mailbox;
use crate::machine::percpu::this_cpu;
use crate::machine::trap::{RFLAGS_USER, TrapFrame};
use abi::Error;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;

/// The exceptions ring 3 may handle itself (delivered as upcalls); the
/// others end the environment.
fn deliverable(vector: u64) -> bool {
    matches!(
        vector,
        abi::vector::DIVIDE_ERROR
            | abi::vector::BREAKPOINT
            | abi::vector::INVALID_OPCODE
            | abi::vector::GENERAL_PROTECTION
            | abi::vector::PAGE_FAULT
            | abi::vector::X87_FLOATING_POINT
            | abi::vector::SIMD_FLOATING_POINT
    )
}

/// The exception fast path: the common case of [`user_exception`] followed
/// by `finish`, taken when nothing else is owed on this core. It upcalls a
/// deliverable exception of a vCPU outside a protected control transfer
/// whose environment is not dying and has an entry, with the frame on this
/// core's exception stack (nested below the interrupted `rsp` as usual)
/// inside one user-writable page. It takes no lock but the handler's (tried,
/// not waited for) and no reference count: the run queue is borrowed once,
/// the frame is written through [`env::write_upcall_frame_loaded`] (the
/// loaded address space, no address-space lock). Returns `false` with
/// nothing changed otherwise: the ordinary path then runs, and gives the
/// same answer, slower (kills, messages, nested rules stay there).
///
/// Skipping `finish` is sound: its own fast path returns at once under the
/// same conditions, checked here before anything is changed; a wake-up
/// that arrives meanwhile comes with an IPI, taken when ring 3 resumes.
#[inline]
pub(super) fn user_exception_fast(frame: &mut TrapFrame) -> bool {
    let vector = frame.vector;
    if !deliverable(vector) {
        return false;
    }
    let me = this_cpu().index;
    if INBOUND[me].incoming_pending.load(Ordering::Acquire)
        || mailbox::resched_pending()
        || mailbox::has_work()
    {
        return false;
    }
    RUNQ.with(|rq| {
        let Some(v) = rq.current.as_ref() else { return false };
        if rq.exiting || v.call.is_some() || v.env.is_dying() {
            return false;
        }
        let Some(handler) = v.env.exception.try_lock().map(|h| *h) else { return false };
        if handler.entry == 0 {
            return false;
        }
        let stack_top = handler.stack_top_for(me);
        let window = if handler.stride > 0 { handler.stride } else { 1 << 20 };
        let nested = frame.rsp < stack_top && frame.rsp >= stack_top.saturating_sub(window);
        let base = if nested { frame.rsp.saturating_sub(128) } else { stack_top };
        let at = base.saturating_sub(abi::UPCALL_FRAME_SIZE) & !0xf;
        let fault_addr = if vector == abi::vector::PAGE_FAULT {
            x86_64::registers::control::Cr2::read_raw()
        } else {
            0
        };
        if env::write_upcall_frame_loaded(at, [vector, frame.error_code, fault_addr], frame)
            .is_none()
        {
            return false;
        }
        frame.rip = handler.entry;
        frame.rsp = at;
        frame.rdi = at;
        frame.rflags = RFLAGS_USER;
        true
    })
}

/// An exception raised in ring 3: upcall to the environment or kill it.
#[inline]
pub(super) fn user_exception(frame: &mut TrapFrame) {
    // The running environment and whether it runs inside a call, in one
    // borrow of the run queue.
    let (env, in_call) = RUNQ
        .with(|rq| rq.current.as_ref().map(|v| (Arc::clone(v.running_env()), v.call.is_some())))
        .expect("an entry from ring 3 has a current vCPU");
    let vector = frame.vector;
    let name = interrupts::exception_name(vector);
    if !deliverable(vector) {
        env::terminate(
            &env,
            Outcome::Killed(alloc::format!("{name} at rip {:#x} (not deliverable)", frame.rip)),
        );
        return;
    }
    let handler = *env.exception.lock();
    let entry = handler.entry;
    if entry == 0 {
        let what = if vector == abi::vector::PAGE_FAULT {
            let fault_addr = x86_64::registers::control::Cr2::read_raw();
            alloc::format!(
                "{name} at rip {:#x} accessing {fault_addr:#x}, no exception handler",
                frame.rip
            )
        } else {
            alloc::format!("{name} at rip {:#x}, no exception handler", frame.rip)
        };
        env::terminate(&env, Outcome::Killed(what));
        return;
    }
    let rip = frame.rip;
    // Inside a protected control transfer the target's exception stack on
    // this core may hold a frame of its own vCPU here (preempted in its
    // handler): the upcall goes on the activation's own IPC stack instead,
    // below the interrupted `rsp`, which no other activation uses.
    let stack = if in_call { UpcallStack::Interrupted } else { UpcallStack::Exception };
    if let Err((at, _)) = deliver_upcall(frame, &env, &handler, vector, entry, stack, 0) {
        env::terminate(
            &env,
            Outcome::Killed(alloc::format!(
                "{name} at rip {rip:#x}, and its exception stack at {at:#x} is not mapped writable"
            )),
        );
    }
}

/// Which stack an upcall frame goes on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum UpcallStack {
    /// The environment's exception stack for this core (nested upcalls go
    /// below the interrupted handler's `rsp`).
    Exception,
    /// Below the interrupted code's own `rsp` and red zone (an activation's
    /// IPC stack).
    Interrupted,
    /// As `Exception`, for a slot upcall delivered by a scheduling decision:
    /// fails rather than wait for the address-space lock (the environment's
    /// other vCPUs may keep it busy; the epilogue's abort protocol then
    /// applies at once).
    ExceptionNoWait,
}

/// Writes an [`abi::UpcallFrame`] of `frame` (an exception's, or a slot or
/// signal upcall's with `vector` ≥ 0x100, whose `error_code` is `code`) on
/// `stack` and makes `frame` enter `entry` with `rsp` = `rdi` = its
/// address. Fails with the address it could not write and why
/// ([`Error::Busy`]: the address-space lock, with `ExceptionNoWait`).
#[inline]
pub(super) fn deliver_upcall(
    frame: &mut TrapFrame,
    env: &Env,
    handler: &env::ExceptionHandler,
    vector: u64,
    entry: u64,
    stack: UpcallStack,
    code: u64,
) -> Result<(), (u64, Error)> {
    let fault_addr = if vector == abi::vector::PAGE_FAULT {
        x86_64::registers::control::Cr2::read_raw()
    } else {
        0
    };
    // Nested upcall on the exception stack: go below the interrupted rsp
    // and its red zone; otherwise start at the top. No handler registered:
    // there is no stack (address 0 fails below).
    let stack_top = if handler.entry == 0 { 0 } else { handler.stack_top_for(this_cpu().index) };
    let window = if handler.stride > 0 { handler.stride } else { 1 << 20 };
    let nested = stack == UpcallStack::Interrupted
        || frame.rsp < stack_top && frame.rsp >= stack_top.saturating_sub(window);
    let base = if nested { frame.rsp.saturating_sub(128) } else { stack_top };
    let at = base.saturating_sub(abi::UPCALL_FRAME_SIZE) & !0xf;
    let lock = if stack == UpcallStack::ExceptionNoWait { Lock::Try } else { Lock::Wait };
    let error_code = if vector < 32 { frame.error_code } else { code };
    env::write_upcall_frame(env, at, lock, [vector, error_code, fault_addr], frame)
        .map_err(|e| (at, e))?;
    crate::machine::ktrace::record(kernel::trace::Kind::Upcall, env.id.raw(), vector);
    frame.rip = entry;
    frame.rsp = at;
    frame.rdi = at;
    frame.rflags = RFLAGS_USER;
    Ok(())
}

/// What [`deliver_signal`] did.
pub(super) enum SignalDelivery {
    /// Nothing to deliver here (or not now: retried at the next decision).
    None,
    /// `frame` now enters the signal entry.
    Delivered,
    /// The frame could not be written: the environment was told to end.
    Killed,
}

/// Delivers a signal upcall (see `abi::signal`) to the vCPU whose live
/// registers are in `frame`, if its environment has bits pending, an entry,
/// upcalls unmasked and this core among its signal cores, and it is not
/// inside a protected control transfer. Part of a scheduling decision:
/// never waits for the environment's locks (a busy one puts the delivery
/// off to this core's next decision).
pub(super) fn deliver_signal(frame: &mut TrapFrame) -> SignalDelivery {
    use core::sync::atomic::Ordering;
    let core = this_cpu().index;
    let Some(env) = RUNQ
        .with(|rq| rq.current.as_ref().filter(|v| v.call.is_none()).map(|v| Arc::clone(&v.env)))
    else {
        return SignalDelivery::None;
    };
    let s = &env.signals;
    let entry = s.entry.load(Ordering::Acquire);
    if entry == 0
        || s.pending.load(Ordering::Acquire) == 0
        || s.core_mask() & (1 << core) == 0
        || env.is_dying()
    {
        return SignalDelivery::None;
    }
    // Take the mask first: only one vCPU delivers, and posts from now on
    // do not kick (the handler's unmask does).
    if s.masked.swap(true, Ordering::AcqRel) {
        return SignalDelivery::None;
    }
    let bits = s.pending.swap(0, Ordering::AcqRel);
    let put_back = |bits: u64| {
        s.pending.fetch_or(bits, Ordering::AcqRel);
        s.masked.store(false, Ordering::Release);
        // A post while it was masked did not kick: look again next time.
        if s.pending.load(Ordering::Acquire) != 0 {
            super::kick(core);
        }
    };
    if bits == 0 {
        put_back(0);
        return SignalDelivery::None;
    }
    let Some(handler) = env.exception.try_lock().map(|h| *h) else {
        put_back(bits);
        return SignalDelivery::None;
    };
    let rip = frame.rip;
    match deliver_upcall(
        frame,
        &env,
        &handler,
        abi::vector::SIGNAL,
        entry,
        UpcallStack::ExceptionNoWait,
        bits,
    ) {
        Ok(()) => SignalDelivery::Delivered,
        Err((_, Error::Busy)) => {
            put_back(bits);
            SignalDelivery::None
        }
        Err((at, _)) => {
            env::terminate(
                &env,
                Outcome::Killed(alloc::format!(
                    "signal upcall at rip {rip:#x}, and its exception stack at {at:#x} is not mapped writable"
                )),
            );
            SignalDelivery::Killed
        }
    }
}

/// `ExceptionResume`: loads the user-supplied frame into the trap frame.
pub fn resume_from(frame: &mut TrapFrame, upcall: &abi::UpcallFrame) -> Result<(), Error> {
    if upcall.rip >= abi::USER_MAX || upcall.rsp > abi::USER_MAX {
        return Err(Error::InvalidArgument);
    }
    // Only the arithmetic flags, TF and DF come from user space; IF is on,
    // IOPL 0.
    const USER_FLAGS: u64 = 0xdd5;
    *frame = TrapFrame {
        rip: upcall.rip,
        rsp: upcall.rsp,
        rflags: (upcall.rflags & USER_FLAGS) | RFLAGS_USER,
        rax: upcall.rax,
        rbx: upcall.rbx,
        rcx: upcall.rcx,
        rdx: upcall.rdx,
        rsi: upcall.rsi,
        rdi: upcall.rdi,
        rbp: upcall.rbp,
        r8: upcall.r8,
        r9: upcall.r9,
        r10: upcall.r10,
        r11: upcall.r11,
        r12: upcall.r12,
        r13: upcall.r13,
        r14: upcall.r14,
        r15: upcall.r15,
        cs: u64::from(USER_CS),
        ss: u64::from(USER_DS),
        vector: frame.vector,
        error_code: 0,
    };
    Ok(())
}
