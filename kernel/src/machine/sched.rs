//! vCPUs and the per-core run queue: entering ring 3 and coming back.
//!
//! A [`Vcpu`] is one environment's context on one core. Each core owns a
//! [`RunQueue`] (reached only by that core, through `CpuLocal`): the vCPU it
//! is running, if any, and those ready to run. Other cores hand a core new
//! vCPUs through its `incoming` list (a leaf lock) plus a mailbox IPI.
//! Placement is static: a vCPU never moves. This round-robin among a core's
//! ready vCPUs at every timer tick is the stand-in policy until the time
//! vectors of the CPU issue replace it.
//!
//! # Stacks and transitions
//!
//! Each core has two kernel stacks. The *idle stack* runs the idle loop (and,
//! on the BSP, the boot path and the test harness). The *trap stack* is
//! `TSS.rsp0`: every entry from ring 3 (interrupt, exception or `syscall`)
//! builds a [`TrapFrame`] at its top. The running vCPU's registers live in
//! that frame while the kernel handles the entry; they are copied into the
//! vCPU only when the core switches to another vCPU or back to idle.
//!
//! * idle → ring 3: [`enter_user`] writes the vCPU's saved frame at the
//!   trap-stack top and jumps to the interrupt return path (`iretq`).
//! * ring 3 → ring 3: the entry handler calls [`reschedule`], which may
//!   replace the frame's contents with another vCPU's before `iretq`.
//! * ring 3 → idle: [`switch_to_idle`] abandons the trap stack and restarts
//!   the idle loop at the top of the idle stack; the idle loop keeps no state
//!   on its stack across this, and no lock or `CpuLocal` borrow is held.
//!
//! Both return paths use `iretq`, also after `syscall`: `sysret` would save a
//! few cycles but brings the non-canonical-`rcx` hazard and cannot return to
//! a context that was interrupted (whose `rcx`/`r11` must be restored).

use super::env::{self, Env, Outcome};
use super::gdt::{USER_CS, USER_DS};
use super::interrupts::TrapFrame;
use super::interrupts::vectors;
use super::percpu::{cpu, this_cpu};
use super::tlb;
use super::uring::{PredicateMemory, VcpuRing};
use abi::Error;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use kernel::predicate::Program;
use x86_64::VirtAddr;
use x86_64::registers::model_specific::KernelGsBase;

/// One environment's context on one core.
pub struct Vcpu {
    /// Whose.
    pub env: Arc<Env>,
    /// Saved user registers (stale while it runs: the live copy is the trap
    /// frame).
    pub context: TrapFrame,
    /// Its submission/completion ring, once registered.
    pub ring: Option<VcpuRing>,
    /// What it sleeps on, while in the sleeping list.
    pub wait: Option<Wait>,
}

/// Why a vCPU sleeps.
pub enum Wait {
    /// Until a verified predicate holds (`SleepOn`).
    Predicate(Program),
    /// Until its ring has this many completions waiting (`RingEnter`).
    Completions(u32),
}

/// A core's vCPUs.
#[derive(Default)]
pub struct RunQueue {
    /// The vCPU whose registers are in the trap frame, if any.
    pub current: Option<Box<Vcpu>>,
    /// The current vCPU asked to end (`VcpuExit`).
    pub exiting: bool,
    /// vCPUs waiting for this core.
    pub ready: VecDeque<Box<Vcpu>>,
    /// vCPUs blocked on a [`Wait`]; evaluated at every scheduling decision
    /// (tick, IPI, idle loop), so a condition that becomes true is noticed
    /// by the next one at the latest.
    #[allow(clippy::vec_box, reason = "vCPUs move between the lists as boxes, without copying")]
    pub sleeping: Vec<Box<Vcpu>>,
}

/// The register state a new vCPU starts with.
pub fn initial_context(entry: u64, stack_top: u64, arg: u64) -> TrapFrame {
    TrapFrame {
        rip: entry,
        rsp: stack_top,
        rdi: arg,
        rflags: 0x202,
        cs: u64::from(USER_CS),
        ss: u64::from(USER_DS),
        ..TrapFrame::default()
    }
}

/// Starts a vCPU of `env` on `core` with `context`.
pub fn start_vcpu(env: &Arc<Env>, core: usize, context: TrapFrame) -> Result<(), Error> {
    let target = cpu(core).ok_or(Error::NoSuchCore)?;
    if env::user_cores() & (1 << core) == 0 {
        return Err(Error::NoSuchCore);
    }
    env::ensure_vcpu_page(env, core)?;
    if env.vcpu_cores.fetch_or(1 << core, Ordering::AcqRel) & (1 << core) != 0 {
        return Err(Error::NoSuchCore); // one vCPU per core per environment
    }
    env.live_vcpus.fetch_add(1, Ordering::AcqRel);
    target.incoming.lock().push(Vcpu { env: Arc::clone(env), context, ring: None, wait: None });
    target.incoming_pending.store(true, Ordering::Release);
    target.vcpus.fetch_add(1, Ordering::AcqRel);
    let _ = super::mailbox::post(core, super::mailbox::Message::Reschedule, None);
    Ok(())
}

/// What the core should do after handling an entry from ring 3.
pub enum Next {
    /// Return to ring 3 with the (possibly replaced) trap frame.
    Resume,
    /// Nothing to run here: go to the idle loop.
    Idle,
}

/// Decides which vCPU runs next on this core and puts its registers in
/// `frame`. `preempt` rotates the ready queue (timer tick); dying vCPUs are
/// dropped; pending idle-loop work sends the core to idle.
pub fn reschedule(frame: &mut TrapFrame, preempt: bool) -> Next {
    let me = this_cpu();
    let mut dropped: alloc::vec::Vec<Arc<Env>> = alloc::vec::Vec::new();
    me.resched_pending.store(false, Ordering::Release);
    let next = me.runq.with(|rq| {
        absorb_incoming(rq);
        drop_dying(rq, &mut dropped);
        // A vCPU that wakes up runs next (wake-up preempts).
        let preempt = wake_sleepers(rq) || preempt;
        let keep_current = rq.current.as_ref().is_some_and(|v| !v.env.is_dying()) && !rq.exiting;
        rq.exiting = false;
        if !keep_current && let Some(dead) = rq.current.take() {
            dropped.push(Arc::clone(&dead.env));
        }
        if me.mailbox.has_work() {
            park_current(rq, frame);
            return Next::Idle;
        }
        let switch = rq.current.is_none() || (preempt && !rq.ready.is_empty());
        if !switch {
            return Next::Resume;
        }
        if let Some(mut old) = rq.current.take() {
            old.context = frame.clone();
            // Behind any vCPU that just woke (those went to the front).
            rq.ready.push_back(old);
        }
        match rq.ready.pop_front() {
            Some(v) => {
                *frame = v.context.clone();
                activate(&v.env);
                rq.current = Some(v);
                Next::Resume
            }
            None => Next::Idle,
        }
    });
    if matches!(next, Next::Idle) {
        deactivate_user();
    }
    for env in dropped {
        release_vcpu(&env);
    }
    next
}

/// Releases a dropped vCPU's hold on its environment: its address space is
/// unloaded from this core first, then the environment learns the vCPU is
/// gone (and the last one reclaims it).
fn release_vcpu(env: &Arc<Env>) {
    let me = this_cpu();
    let loaded = me.loaded_env.with(|l| l.as_ref().is_some_and(|e| Arc::ptr_eq(e, env)));
    if loaded {
        deactivate_user();
    }
    env.vcpu_cores.fetch_and(!(1 << me.index), Ordering::AcqRel);
    me.vcpus.fetch_sub(1, Ordering::AcqRel);
    env::vcpu_dropped(env);
}

/// Takes the dying environments' vCPUs out of the ready and sleeping lists
/// (their environments are released by the caller).
fn drop_dying(rq: &mut RunQueue, dropped: &mut Vec<Arc<Env>>) {
    let mut keep = |v: &Vcpu| {
        if v.env.is_dying() {
            dropped.push(Arc::clone(&v.env));
            false
        } else {
            true
        }
    };
    rq.ready.retain(|v| keep(v));
    rq.sleeping.retain(|v| keep(v));
}

/// Fires due ring timers of every vCPU here and moves the sleepers whose
/// condition now holds to the front of the ready queue. Returns whether
/// any woke.
fn wake_sleepers(rq: &mut RunQueue) -> bool {
    let now = super::cpu::rdtsc();
    for v in rq.current.iter_mut().chain(rq.ready.iter_mut()).chain(rq.sleeping.iter_mut()) {
        if let Some(ring) = v.ring.as_mut() {
            ring.fire_timers(now);
        }
    }
    let mut woke = false;
    let mut i = 0;
    while i < rq.sleeping.len() {
        if condition_holds(&rq.sleeping[i]) {
            let mut v = rq.sleeping.swap_remove(i);
            v.wait = None;
            rq.ready.push_front(v);
            woke = true;
        } else {
            i += 1;
        }
    }
    woke
}

fn condition_holds(v: &Vcpu) -> bool {
    match &v.wait {
        None => true,
        Some(Wait::Predicate(program)) => program.eval(&PredicateMemory::new(&v.env)),
        Some(Wait::Completions(n)) => v.ring.as_ref().is_none_or(|r| r.pending_completions() >= *n),
    }
}

/// Puts the current vCPU to sleep on `wait`; `frame` holds the registers it
/// resumes with (its system call's result already in `rax`). The caller
/// then calls [`finish`].
pub fn sleep_current(frame: &TrapFrame, wait: Wait) {
    this_cpu().runq.with(|rq| {
        if let Some(mut v) = rq.current.take() {
            v.context = frame.clone();
            v.wait = Some(wait);
            rq.sleeping.push(v);
        }
    });
}

/// Runs `f` with the current vCPU's ring slot (taken out of the run queue
/// for the call, so `f` may do anything the kernel does on this core).
pub fn with_current_ring<R>(f: impl FnOnce(&mut Option<VcpuRing>) -> R) -> R {
    let me = this_cpu();
    let mut ring = me.runq.with(|rq| rq.current.as_mut().and_then(|v| v.ring.take()));
    let result = f(&mut ring);
    me.runq.with(|rq| {
        // The slot is still empty (nothing else reaches it during `f`), so
        // this stores one pointer and drops nothing; if the vCPU is gone,
        // the ring is dropped here (unpinning its frames).
        if let Some(v) = rq.current.as_mut()
            && v.ring.is_none()
        {
            v.ring = ring;
        }
    });
    result
}

fn absorb_incoming(rq: &mut RunQueue) {
    let me = this_cpu();
    if me.incoming_pending.load(Ordering::Acquire) {
        let mut incoming = me.incoming.lock();
        me.incoming_pending.store(false, Ordering::Release);
        rq.ready.extend(incoming.drain(..).map(Box::new));
    }
}

fn park_current(rq: &mut RunQueue, frame: &TrapFrame) {
    if let Some(mut v) = rq.current.take() {
        v.context = frame.clone();
        rq.ready.push_front(v);
    }
}

/// Loads `env`'s address space (if not loaded already) and this core's vCPU
/// page as the user GS base.
fn activate(env: &Arc<Env>) {
    let me = this_cpu();
    me.loaded_env.with(|loaded| {
        if !loaded.as_ref().is_some_and(|e| Arc::ptr_eq(e, env)) {
            // Announce before loading, so that a shootdown which misses the
            // bit finds the fresh CR3 load already done (see tlb.rs).
            env.active_cores.fetch_or(1 << me.index, Ordering::SeqCst);
            tlb::load(env);
            if let Some(prev) = loaded.replace(Arc::clone(env))
                && !tlb::pcids_enabled()
            {
                // Without PCIDs the load flushed all of `prev`; with them
                // this core stays in its set ("lazily left", see tlb.rs).
                prev.active_cores.fetch_and(!(1 << me.index), Ordering::SeqCst);
            }
        }
    });
    KernelGsBase::write(VirtAddr::new(abi::vcpu_page_va(me.index)));
}

/// Leaves any user address space: the kernel's own tables are loaded, so an
/// idle core holds no environment's translations.
fn deactivate_user() {
    let me = this_cpu();
    me.loaded_env.with(|loaded| {
        if let Some(prev) = loaded.take() {
            tlb::load_kernel();
            if !tlb::pcids_enabled() {
                prev.active_cores.fetch_and(!(1 << me.index), Ordering::SeqCst);
            }
        }
    });
}

/// From the idle loop: if a vCPU is ready, run it (does not return).
pub fn run_ready() {
    let me = this_cpu();
    if me.vcpus.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut dropped: alloc::vec::Vec<Arc<Env>> = alloc::vec::Vec::new();
    me.resched_pending.store(false, Ordering::Release);
    let chosen = me.runq.with(|rq| {
        absorb_incoming(rq);
        drop_dying(rq, &mut dropped);
        wake_sleepers(rq);
        let v = rq.ready.pop_front()?;
        let context = v.context.clone();
        let env = Arc::clone(&v.env);
        rq.current = Some(v);
        Some((env, context))
    });
    for env in dropped {
        release_vcpu(&env);
    }
    if let Some((env, context)) = chosen {
        activate(&env);
        drop(env);
        enter_user(&context);
    }
}

unsafe extern "C" {
    /// The interrupt return path in `interrupts.rs`: pops a `TrapFrame` at
    /// `rsp` and `iretq`s.
    fn isr_restore() -> !;
}

/// Enters ring 3 with `context`, on this core's trap stack. Never returns.
pub fn enter_user(context: &TrapFrame) -> ! {
    let top = this_cpu().kernel_stack_top.load(Ordering::Relaxed);
    let at = top - core::mem::size_of::<TrapFrame>() as u64;
    debug_assert!(context.cs == u64::from(USER_CS) && context.rip < abi::USER_MAX);
    // SAFETY: `at..top` is the top of this core's trap stack, which nothing
    // uses while the core is in the idle loop or about to leave a trap (its
    // old contents are dead). `isr_restore` pops the frame and `iretq`s to
    // ring 3 with a user CS/SS and a user-half RIP, so the kernel stack we
    // abandon is never returned to.
    unsafe {
        (at as *mut TrapFrame).write(context.clone());
        core::arch::asm!("mov rsp, {0}", "jmp {1}", in(reg) at, sym isr_restore, options(noreturn));
    }
}

/// Abandons the current (trap) stack and restarts the idle loop on the idle
/// stack. The caller holds no lock and no `CpuLocal` borrow.
pub fn switch_to_idle() -> ! {
    let top = this_cpu().idle_stack_top.load(Ordering::Relaxed);
    // SAFETY: the idle stack is this core's and holds no live frame: the idle
    // loop was left by `enter_user`, which never returns, or this core is
    // already running on the trap stack. `idle_entry` never returns.
    unsafe {
        core::arch::asm!(
            "mov rsp, {0}",
            "xor ebp, ebp",
            "call {1}",
            "ud2",
            in(reg) top,
            sym idle_entry,
            options(noreturn)
        );
    }
}

extern "C" fn idle_entry() -> ! {
    super::mailbox::idle_loop()
}

/// Handles an entry from ring 3 other than `syscall`: timer, IPIs,
/// exceptions. Called by `trap_dispatch` with the live frame.
pub fn user_trap(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    let mut preempt = false;
    match vector {
        vectors::TIMER => {
            this_cpu().ticks.fetch_add(1, Ordering::Relaxed);
            super::apic::end_of_interrupt();
            preempt = true;
        }
        vectors::MAILBOX => {
            super::mailbox::on_ipi();
            super::apic::end_of_interrupt();
        }
        vectors::BENCH_PING => {
            super::bench::on_ping();
            super::apic::end_of_interrupt();
        }
        vectors::BENCH_PONG => {
            super::bench::on_pong();
            super::apic::end_of_interrupt();
        }
        vectors::SPURIOUS | 0x20..=0x2f => {}
        0..=31 => user_exception(frame),
        _ => super::apic::end_of_interrupt(),
    }
    finish(frame, preempt);
}

/// After an entry from ring 3: pick who runs, and go there.
pub fn finish(frame: &mut TrapFrame, preempt: bool) {
    let me = this_cpu();
    // Fast path: nothing changed for this core, the same vCPU continues.
    if !preempt
        && !me.incoming_pending.load(Ordering::Acquire)
        && !me.resched_pending.load(Ordering::Acquire)
        && !me.mailbox.has_work()
    {
        let same = me
            .runq
            .with(|rq| !rq.exiting && rq.current.as_ref().is_some_and(|v| !v.env.is_dying()));
        if same {
            return;
        }
    }
    if let Next::Idle = reschedule(frame, preempt) {
        switch_to_idle();
    }
}

/// Marks the current vCPU as ending; the next [`reschedule`] drops it.
pub fn exit_current_vcpu() {
    this_cpu().runq.with(|rq| rq.exiting = true);
}

/// The environment of the vCPU in the trap frame.
pub fn current_env() -> Arc<Env> {
    this_cpu()
        .runq
        .with(|rq| rq.current.as_ref().map(|v| Arc::clone(&v.env)))
        .expect("an entry from ring 3 has a current vCPU")
}

/// An exception raised in ring 3: upcall to the environment or kill it.
fn user_exception(frame: &mut TrapFrame) {
    let env = current_env();
    let vector = frame.vector;
    let name = super::interrupts::exception_name(vector);
    let deliverable = matches!(
        vector,
        abi::vector::DIVIDE_ERROR
            | abi::vector::BREAKPOINT
            | abi::vector::INVALID_OPCODE
            | abi::vector::GENERAL_PROTECTION
            | abi::vector::PAGE_FAULT
    );
    let fault_addr = if vector == abi::vector::PAGE_FAULT {
        x86_64::registers::control::Cr2::read_raw()
    } else {
        0
    };
    if !deliverable {
        env::terminate(
            &env,
            Outcome::Killed(alloc::format!("{name} at rip {:#x} (not deliverable)", frame.rip)),
        );
        return;
    }
    let handler = *env.exception.lock();
    if handler.entry == 0 {
        let what = if vector == abi::vector::PAGE_FAULT {
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
    let upcall = abi::UpcallFrame {
        vector,
        error_code: frame.error_code,
        fault_addr,
        rip: frame.rip,
        rsp: frame.rsp,
        rflags: frame.rflags,
        rax: frame.rax,
        rbx: frame.rbx,
        rcx: frame.rcx,
        rdx: frame.rdx,
        rsi: frame.rsi,
        rdi: frame.rdi,
        rbp: frame.rbp,
        r8: frame.r8,
        r9: frame.r9,
        r10: frame.r10,
        r11: frame.r11,
        r12: frame.r12,
        r13: frame.r13,
        r14: frame.r14,
        r15: frame.r15,
    };
    // Nested fault on the exception stack: go below the interrupted rsp and
    // its red zone; otherwise start at the top.
    let stack_top = handler.stack_top_for(this_cpu().index);
    let window = if handler.stride > 0 { handler.stride } else { 1 << 20 };
    let nested = frame.rsp < stack_top && frame.rsp >= stack_top.saturating_sub(window);
    let base = if nested { frame.rsp.saturating_sub(128) } else { stack_top };
    let at = base.saturating_sub(abi::UPCALL_FRAME_SIZE) & !0xf;
    // SAFETY: `UpcallFrame` is `repr(C)` plain data (21 `u64`s, no
    // padding); viewing it as bytes to copy it out is sound.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            &upcall as *const abi::UpcallFrame as *const u8,
            abi::UPCALL_FRAME_SIZE as usize,
        )
    };
    if env::copy_to_user(&env, at, bytes).is_err() {
        env::terminate(
            &env,
            Outcome::Killed(alloc::format!(
                "{name} at rip {:#x}, and its exception stack at {at:#x} is not mapped writable",
                frame.rip
            )),
        );
        return;
    }
    frame.rip = handler.entry;
    frame.rsp = at;
    frame.rdi = at;
    frame.rflags = 0x202;
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
        rflags: (upcall.rflags & USER_FLAGS) | 0x202,
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
