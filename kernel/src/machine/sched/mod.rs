//! vCPUs, the per-core run queue and time vector, protected control
//! transfer: entering ring 3 and coming back.
//!
//! A [`Vcpu`] is one environment's context on one core. Each core owns a
//! [`RunQueue`] (reached only by that core, through `CpuLocal`): the vCPU it
//! is running, those ready to run, those asleep on a [`Wait`], and the
//! [`SlotClock`](kernel::slotclock::SlotClock) of its time vector. Other cores hand a core new vCPUs
//! through its `incoming` list (a leaf lock) plus a mailbox IPI. Placement is
//! static: a vCPU never moves.
//!
//! # Time slots
//!
//! The rules are documented for environments in `abi::schedule`; the
//! allocation logic and the picking rule are `kernel::timevec`'s, the shared
//! owner table is `slots.rs`'s. Here each core runs its vector: a slot lasts
//! `slot_us` from the moment it really starts (so an overrun never shortens
//! someone else's slot); the one-shot APIC timer is armed for the slot's end,
//! the grace period's end or the earliest ring timer, whichever is first. At
//! a slot's end the owner's running vCPU gets its epilogue upcall and the
//! grace period; past it, the abort protocol stops it and its next slot here
//! is forfeited. A vCPU that wakes up during its own slot preempts whoever
//! runs there; one that wakes during a default slot preempts too (quick
//! wake-ups), unless the running vCPU owns the slot.
//!
//! # Protected control transfer
//!
//! `Call` runs the target's IPC entry *on the caller's vCPU*: the caller's
//! registers are saved in its [`Vcpu::context`] and an [`Activation`] of the
//! target (its own address space, registers and stack) becomes the vCPU's
//! live context until `Reply` (or the target's death) pops it. The vCPU keeps
//! its slot, ring and accounting: the call runs on the caller's time. An
//! activation holds a reference on the target like a vCPU does
//! (`live_vcpus`), so the target's memory outlives every activation of it.
//!
//! # Vector registers and FS base
//!
//! The kernel never touches a vector register (it is built soft-float), so
//! ring 3's x87/SSE/AVX registers and FS base stay live in the CPU across
//! kernel entries; they belong to the context whose registers are in the
//! trap frame. Wherever that changes, they move too (eagerly: see
//! `xstate`): [`park_current`] and [`sleep_current`] save them into the
//! vCPU's [`Vcpu::live_ext`], [`load`] restores them; `Call` saves the
//! caller's and starts the callee from the initial state, `Reply` (and an
//! abandoned or failed call) restores the caller's. Upcalls change nothing:
//! the handler is the same environment's code.
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
//! Every return to ring 3 that may switch vCPUs uses `iretq`, also after
//! `syscall`: `sysret` cannot return to a context that was interrupted
//! (whose `rcx`/`r11` must be restored). The one exception is the
//! `RingEnter` fast path in `syscall.rs`, which never switches and returns
//! with `sysretq` (its `rcx` is the caller's own, canonical by
//! construction).
//!
//! # Files
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`Vcpu`], [`Wait`], the decision entry points [`reschedule`], [`finish`] and [`user_trap`] |
//! | [`runq`] | the per-core run queue and incoming lists, starting vCPUs and environments, sleepers, the current vCPU |
//! | [`clock`] | the slot clock and the scheduling decision within the time vector |
//! | [`pct`] | directed yield and protected control transfer |
//! | [`upcall`] | exceptions, slot and signal upcalls delivered to ring 3, `ExceptionResume` |
//! | [`switch`] | entering and leaving ring 3, address-space activation, the idle loop |

pub mod clock;
pub mod pct;
pub mod runq;
#[allow(unsafe_code, reason = "stack switches into ring 3 and the idle loop")]
pub mod switch;
pub mod upcall;

use clock::*;
pub use pct::*;
pub use runq::*;
pub use switch::*;
pub use upcall::*;

pub use super::mailbox::{kick, resched_pending};

use super::apic;
use super::env::{self, Env};
use super::interrupts::{self, Device};
use super::mailbox;
use super::percpu::this_cpu;
use super::trap::TrapFrame;
use super::uring::VcpuRing;
use super::xstate::UserExt;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use kernel::predicate::Program;
use kernel::timevec::Candidate;

/// One environment's context on one core.
pub struct Vcpu {
    /// Whose.
    pub env: Arc<Env>,
    /// Saved user registers (stale while it runs: the live copy is the trap
    /// frame). During a call, the caller's registers.
    pub context: TrapFrame,
    /// Its submission/completion ring, once registered.
    pub ring: Option<VcpuRing>,
    /// What it sleeps on, while in the sleeping list.
    pub wait: Option<Wait>,
    /// The protected control transfer it is making, if any.
    pub call: Option<Activation>,
    /// The callee's registers during a call (stale while it runs; not
    /// meaningful outside a call).
    pub call_context: TrapFrame,
    /// It got an epilogue upcall and has not yielded since (the abort
    /// protocol stopped it): it gets no new epilogue until it yields.
    pub owes_yield: bool,
    /// The target of its last call, kept for the next one (no lookup and
    /// no reference-count traffic on a repeated call).
    pub call_cache: Option<Arc<Env>>,
    /// Its vector registers and FS base (stale while it runs: the live copy
    /// is the CPU's). During a call, the caller's.
    pub ext: UserExt,
    /// The callee's vector registers and FS base during a call (stale while
    /// it runs; not meaningful outside a call).
    pub call_ext: UserExt,
    /// TSC when it joined this core's ready queue (0: not in it, or not
    /// stamped): what [`runq::load`] charges as its queueing delay.
    pub ready_since: u64,
}

impl Vcpu {
    /// The environment whose code runs: the callee during a call.
    #[inline]
    fn running_env(&self) -> &Arc<Env> {
        self.call.as_ref().map_or(&self.env, |a| &a.target)
    }

    /// Where the registers of the code that runs are saved.
    #[inline]
    fn live_context(&mut self) -> &mut TrapFrame {
        if self.call.is_some() { &mut self.call_context } else { &mut self.context }
    }

    /// Where the vector registers and FS base of the code that runs are
    /// saved (the pair of [`Vcpu::live_context`]).
    #[inline]
    fn live_ext(&mut self) -> &mut UserExt {
        if self.call.is_some() { &mut self.call_ext } else { &mut self.ext }
    }

    #[inline]
    fn candidate(&self, core: usize) -> Candidate {
        Candidate {
            env: self.env.id,
            default_time: self.env.default_time.load(Ordering::Relaxed) & (1 << core) != 0,
        }
    }
}

/// Why a vCPU sleeps.
pub enum Wait {
    /// Until a verified predicate holds (`SleepOn`).
    Predicate(Program),
    /// Until its ring has this many completions waiting (`RingEnter`).
    Completions(u32),
}

/// What the core should do after handling an entry from ring 3.
pub enum Next {
    /// Return to ring 3 with the (possibly replaced) trap frame.
    Resume,
    /// Nothing to run here: go to the idle loop.
    Idle,
}

/// What made the core reconsider who runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The timer: a slot, a grace period or a ring timer may be over.
    Timer,
    /// The current vCPU gives up the rest of its time (`Yield`).
    Yield,
    /// Anything else: a wake-up, a new vCPU, an exit, a sleep, a death.
    Event,
}

/// An upcall to deliver once the run queue is released.
enum Upcall {
    Prologue(u64),
    Epilogue(u64),
}

/// Released references, acted on once the run queue is released.
#[derive(Default)]
struct Released {
    /// Environments whose vCPU here was dropped.
    vcpus: Vec<Arc<Env>>,
    /// Targets of activations that ended.
    activations: Vec<Arc<Env>>,
}

/// Decides which vCPU runs next on this core and puts its registers in
/// `frame` (whose contents are the current vCPU's live registers, if there
/// is one), then arms the timer for the next decision.
pub fn reschedule(frame: &mut TrapFrame, why: Why) -> Next {
    let me = this_cpu();
    let core = me.index;
    let mut released = Released::default();
    let mut upcall = None;
    // Acquire: pairs with `kick`, so every wake-up that found the flag set
    // is visible to the sleeper evaluation below.
    mailbox::take_resched();
    let now = super::cpu::rdtsc();
    let (next, deadline) = RUNQ.with(|rq| {
        absorb_incoming(rq, now);
        drop_dying(rq, frame, now, core, &mut released);
        let woke = wake_sleepers(rq, now);
        let next = if mailbox::has_work() {
            // Kernel work queued for this core runs in the idle loop first.
            park_current(rq, frame, now, core, 0);
            Next::Idle
        } else {
            decide(rq, frame, why, now, woke, core, &mut upcall)
        };
        (next, timer_deadline(rq, now))
    });
    if matches!(next, Next::Idle) {
        deactivate_user();
    } else if take_redirect_stale() {
        // Another core changed the running environment's redirection.
        let running = RUNQ.with(|rq| rq.current.as_ref().map(|v| Arc::clone(v.running_env())));
        if let Some(env) = running {
            load_redirect(&env);
        }
    }
    for env in released.vcpus {
        release_vcpu(&env);
    }
    for target in released.activations {
        release_activation(&target);
    }
    // One bounded step of a dead environment's reclaim per decision (the
    // idle loop runs them back to back).
    env::reclaim_step();
    // And one of the oldest open memory repossession.
    env::repossess_step();
    if let Some(upcall) = upcall {
        let env = current_env();
        let (vector, entry) = match upcall {
            Upcall::Prologue(entry) => (abi::vector::SLOT_START, entry),
            Upcall::Epilogue(entry) => (abi::vector::SLOT_END, entry),
        };
        // A scheduling decision takes none of the environment's locks by
        // waiting: a busy one means "not delivered".
        let handler = env.exception.try_lock().map(|h| *h);
        let delivered = handler.ok_or(0).and_then(|handler| {
            deliver_upcall(frame, &env, &handler, vector, entry, UpcallStack::ExceptionNoWait, 0)
                .map_err(|(at, _)| at)
        });
        if delivered.is_err() && matches!(upcall, Upcall::Epilogue(_)) {
            // It cannot be told: the abort protocol applies right away.
            super::ktrace::record(kernel::trace::Kind::Abort, env.id.raw(), 0);
            drop(env);
            RUNQ.with(|rq| rq.clock.abort_now());
            return reschedule(frame, Why::Timer);
        }
    } else if matches!(next, Next::Resume)
        && matches!(deliver_signal(frame), SignalDelivery::Killed)
    {
        // Its exception stack is gone: it ends like a fatal exception.
        return reschedule(frame, Why::Event);
    }
    let now = super::cpu::rdtsc();
    match deadline {
        Some(at) => apic::arm_timer_after(at.saturating_sub(now).max(1)),
        None => apic::arm_idle_tick(),
    }
    next
}

/// Handles an entry from ring 3 other than `syscall`: timer, IPIs,
/// exceptions. Called by `trap_dispatch` with the live frame.
pub fn user_trap(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    let mut why = Why::Event;
    if vector < 32 {
        if upcall::user_exception_fast(frame) {
            if super::ktrace::enabled() {
                trace_fast_upcall(u64::from(vector));
            }
            return;
        }
        user_exception(frame);
    } else if interrupts::device_interrupt(vector, true) == Device::Timer {
        why = Why::Timer;
    }
    finish(frame, why);
}

/// Records the upcall [`upcall::user_exception_fast`] delivered (out of
/// line: in that path's closure the hook cost 18 instructions with
/// tracing off, `fault_upcall_resume` 640 -> 658).
#[cold]
#[inline(never)]
fn trace_fast_upcall(vector: u64) {
    let env = RUNQ.with(|rq| rq.current.as_ref().map_or(0, |v| v.env.id.raw()));
    super::ktrace::record(kernel::trace::Kind::Upcall, env, vector);
}

/// After an entry from ring 3: pick who runs, and go there.
pub fn finish(frame: &mut TrapFrame, why: Why) {
    let me = this_cpu();
    // Fast path: nothing changed for this core, the same vCPU continues.
    if why == Why::Event
        && !INBOUND[me.index].incoming_pending.load(Ordering::Acquire)
        && !mailbox::resched_pending()
        && !mailbox::has_work()
    {
        let same = RUNQ.with(|rq| {
            !rq.exiting
                && rq.current.as_ref().is_some_and(|v| {
                    !v.env.is_dying() && v.call.as_ref().is_none_or(|a| !a.target.is_dying())
                })
        });
        if same {
            return;
        }
    }
    if let Next::Idle = reschedule(frame, why) {
        switch_to_idle();
    }
}
