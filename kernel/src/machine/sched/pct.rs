//! Directed yield and protected control transfer: `YieldTo`, `Call`,
//! `Reply` and the end of a call without a reply. A call runs the target's
//! IPC entry on the caller's vCPU, as an [`Activation`] (see the parent
//! module's docs).
use super::*;
use super::{runq::*, switch::*};
use crate::machine::env::{self, Env};
use crate::machine::gdt::{USER_CS, USER_DS};
use crate::machine::percpu::this_cpu;
use crate::machine::trap::{RFLAGS_USER, TrapFrame};
use crate::machine::xstate;
use abi::Error;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use kernel::ownership::EnvId;
use kernel::trace::Kind;

/// Another environment running on a vCPU's time (`Call` until `Reply`);
/// its registers are the vCPU's `call_context`.
///
/// An activation owns its target's IPC stack on this core: the target's
/// `ipc.stack_busy` bit for the core is set when the call starts and
/// cleared by [`Activation::end`], the only way an activation goes, so two
/// activations never share a stack (a second call gets `Busy`).
pub struct Activation {
    /// The environment called.
    pub(super) target: Arc<Env>,
}

impl Activation {
    /// Ends the activation on this core (the one it ran on: vCPUs never
    /// move): frees the target's IPC stack here and returns the target,
    /// whose hold (`live_vcpus`) the caller releases.
    #[inline]
    pub(super) fn end(self) -> Arc<Env> {
        let bit = 1 << this_cpu().index;
        self.target.ipc.stack_busy.fetch_and(!bit, Ordering::Release);
        self.target
    }
}

/// `YieldTo`: hands the rest of the slot to `target`'s vCPU on this core.
/// On success `frame` holds the target's registers (the caller's result,
/// 0, is saved with its own).
pub fn yield_to(frame: &mut TrapFrame, target: EnvId) -> Result<(), Error> {
    let me = this_cpu();
    let core = me.index;
    let now = crate::machine::cpu::rdtsc();
    let result = RUNQ.with(|rq| {
        let current = rq.current.as_mut().ok_or(Error::NotRunnable)?;
        current.owes_yield = false;
        if current.call.is_some() {
            return Err(Error::Busy);
        }
        if current.env.id == target {
            return Err(Error::InvalidArgument);
        }
        let i = rq.ready.iter().position(|v| v.env.id == target).ok_or(Error::NotRunnable)?;
        if rq.clock.in_grace() {
            // Its slot is over anyway: this counts as the epilogue's yield.
            return Ok(false);
        }
        rq.clock.give_away(current.env.id);
        frame.rax = 0;
        park_current(rq, frame, now, core, usize::MAX);
        let i = i.min(rq.ready.len() - 1);
        let v = rq.ready.remove(i).expect("index in range");
        load(rq, v, frame, now);
        Ok(true)
    });
    match result {
        Ok(true) => Ok(()),
        Ok(false) => {
            frame.rax = 0;
            if let Next::Idle = reschedule(frame, Why::Yield) {
                switch_to_idle();
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `Call`: enters `target`'s IPC entry on this vCPU. On success `frame`
/// holds the activation's registers.
pub fn call(frame: &mut TrapFrame, target: u64) -> Result<(), Error> {
    let me = this_cpu();
    let core = me.index;
    let (caller, cached) = RUNQ.with(|rq| {
        let v = rq.current.as_mut().expect("a system call has a current vCPU");
        if v.call.is_some() {
            return Err(Error::Busy);
        }
        Ok((v.env.id, v.call_cache.take()))
    })?;
    let target = match cached {
        Some(t) if u64::from(t.id) == target => t,
        _ => EnvId::from_word(target).and_then(env::lookup).ok_or(Error::NoSuchEnv)?,
    };
    let (entry, stack_top) = target.ipc.entry_for(core).ok_or(Error::Refused)?;
    if !target.ipc.accepts(caller) {
        return Err(Error::Refused);
    }
    // Hold the target like a vCPU does, unless its last vCPU is already gone,
    // *before* touching its address space: with the hold taken it cannot be
    // reclaimed under us, however soon it is told to die.
    #[allow(
        deprecated,
        reason = "fetch_update is try_update from Rust 1.99 on; kept for older stables"
    )]
    target
        .live_vcpus
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n > 0).then_some(n + 1))
        .map_err(|_| Error::NoSuchEnv)?;
    // Its IPC stack on this core is this activation's alone (see `abi`).
    let bit = 1 << core;
    if target.ipc.stack_busy.fetch_or(bit, Ordering::Acquire) & bit != 0 {
        env::vcpu_dropped(&target);
        return Err(Error::Busy);
    }
    let ready = if target.is_dying() {
        Err(Error::NoSuchEnv)
    } else {
        env::ensure_vcpu_page(&target, core)
    };
    if let Err(e) = ready {
        target.ipc.stack_busy.fetch_and(!bit, Ordering::Release);
        env::vcpu_dropped(&target);
        return Err(e);
    }
    activate(&target);
    crate::machine::ktrace::record(Kind::PctCall, caller.raw(), u64::from(target.id.raw()));
    RUNQ.with(|rq| {
        let v = rq.current.as_mut().expect("a system call has a current vCPU");
        v.context = frame.clone();
        v.ext.save();
        v.call = Some(Activation { target });
    });
    // Nor any of the caller's vector registers or its FS base: the callee
    // starts from the initial state (`Reply` or the call's end restores the
    // caller's).
    xstate::load_initial();
    // The callee starts with the message (rsi, rdx, r10, r8, r9, r12, r13,
    // r14, left in place) and nothing else of the caller's.
    frame.rip = entry;
    frame.rsp = stack_top;
    frame.rdi = u64::from(caller);
    frame.rflags = RFLAGS_USER;
    frame.cs = u64::from(USER_CS);
    frame.ss = u64::from(USER_DS);
    frame.rax = 0;
    frame.rbx = 0;
    frame.rcx = 0;
    frame.rbp = 0;
    frame.r11 = 0;
    frame.r15 = 0;
    Ok(())
}

/// `Reply`: ends the current call; `frame` then holds the caller's
/// registers with the reply words and `rax` = 0.
pub fn reply(frame: &mut TrapFrame) -> Result<(), Error> {
    let target = RUNQ.with(|rq| {
        let v = rq.current.as_mut().expect("a system call has a current vCPU");
        let call = v.call.take().ok_or(Error::InvalidArgument)?;
        let words = [frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9, frame.r12, frame.r13];
        let last = frame.r14;
        *frame = v.context.clone();
        frame.rax = 0;
        [frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9, frame.r12, frame.r13] = words;
        frame.r14 = last;
        // The callee's vector state and FS base are dropped with the call.
        v.ext.restore();
        activate(&v.env);
        Ok(call.end())
    })?;
    // The caller's space is loaded: the target's hold can go, and the
    // reference is kept for the next call.
    env::vcpu_dropped(&target);
    if crate::machine::ktrace::enabled() {
        let caller = RUNQ.with(|rq| rq.current.as_ref().map_or(0, |v| v.env.id.raw()));
        crate::machine::ktrace::record(Kind::PctReply, target.id.raw(), u64::from(caller));
    }
    RUNQ.with(|rq| {
        if let Some(v) = rq.current.as_mut() {
            v.call_cache = Some(target);
        }
    });
    Ok(())
}

/// Ends the current call without a reply (the callee's `VcpuExit`): the
/// caller resumes with `CallFailed`. Returns whether there was a call.
pub fn abandon_call(frame: &mut TrapFrame) -> bool {
    let ended = RUNQ.with(|rq| {
        let v = rq.current.as_mut()?;
        let call = v.call.take()?;
        *frame = v.context.clone();
        frame.rax = Error::CallFailed.to_raw();
        v.ext.restore();
        Some((Arc::clone(&v.env), call.end()))
    });
    match ended {
        Some((caller_env, target)) => {
            activate(&caller_env);
            release_activation(&target);
            true
        }
        None => false,
    }
}
