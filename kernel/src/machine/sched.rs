//! vCPUs, the per-core run queue and time vector, protected control
//! transfer: entering ring 3 and coming back.
//!
//! A [`Vcpu`] is one environment's context on one core. Each core owns a
//! [`RunQueue`] (reached only by that core, through `CpuLocal`): the vCPU it
//! is running, those ready to run, those asleep on a [`Wait`], and the
//! [`SlotClock`] of its time vector. Other cores hand a core new vCPUs
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
use super::interrupts::{self, Device};
use super::mailbox;
use super::percpu::{CacheAligned, MAX_CPUS, cpu, cpu_local, this_cpu};
use super::trap::{RFLAGS_USER, TrapFrame};
use super::uring::{FastEntered, PredicateMemory, VcpuRing};
use super::{apic, slots, tlb};
use abi::Error;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use kernel::ownership::EnvId;
use kernel::predicate::Program;
use kernel::timevec::{self, Candidate};
use x86_64::VirtAddr;
use x86_64::registers::model_specific::KernelGsBase;

cpu_local! {
    /// This core's vCPUs and time vector.
    static RUNQ: RunQueue = RunQueue::new();
    /// The environment whose address space is loaded in CR3, if any.
    static LOADED_ENV: Option<Arc<Env>> = None;
}

/// What other cores hand a core: vCPUs they started there.
struct Inbound {
    /// vCPUs other cores started here, not yet in the run queue (leaf lock).
    incoming: spin::Mutex<Vec<Vcpu>>,
    /// Set after a push to `incoming`, cleared when it is drained.
    incoming_pending: AtomicBool,
    /// vCPUs assigned to this core (incoming, ready or running).
    vcpus: AtomicUsize,
}

static INBOUND: [CacheAligned<Inbound>; MAX_CPUS] = [const {
    CacheAligned(Inbound {
        incoming: spin::Mutex::new(Vec::new()),
        incoming_pending: AtomicBool::new(false),
        vcpus: AtomicUsize::new(0),
    })
}; MAX_CPUS];

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
}

/// Another environment running on a vCPU's time (`Call` until `Reply`);
/// its registers are the vCPU's `call_context`.
///
/// An activation owns its target's IPC stack on this core: the target's
/// `ipc.stack_busy` bit for the core is set when the call starts and
/// cleared by [`Activation::end`], the only way an activation goes, so two
/// activations never share a stack (a second call gets `Busy`).
pub struct Activation {
    /// The environment called.
    target: Arc<Env>,
}

impl Activation {
    /// Ends the activation on this core (the one it ran on: vCPUs never
    /// move): frees the target's IPC stack here and returns the target,
    /// whose hold (`live_vcpus`) the caller releases.
    fn end(self) -> Arc<Env> {
        let bit = 1 << this_cpu().index;
        self.target.ipc.stack_busy.fetch_and(!bit, Ordering::Release);
        self.target
    }
}

impl Vcpu {
    /// The environment whose code runs: the callee during a call.
    fn running_env(&self) -> &Arc<Env> {
        self.call.as_ref().map_or(&self.env, |a| &a.target)
    }

    /// Where the registers of the code that runs are saved.
    fn live_context(&mut self) -> &mut TrapFrame {
        if self.call.is_some() { &mut self.call_context } else { &mut self.context }
    }

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

/// Where a core is in its time vector.
pub struct SlotClock {
    /// Whether the first slot has started.
    started: bool,
    /// The slot running.
    index: usize,
    /// TSC at which it ends.
    ends_at: u64,
    /// Its owner, 0 if nobody owns it or the owner forfeited it.
    owner: EnvId,
    /// The owner gave up (or away) the rest of it.
    owner_done: bool,
    /// The epilogue was delivered; the owner must yield by then.
    grace_until: Option<u64>,
}

impl SlotClock {
    /// Before the first slot.
    pub const fn new() -> SlotClock {
        SlotClock {
            started: false,
            index: 0,
            ends_at: 0,
            owner: 0,
            owner_done: false,
            grace_until: None,
        }
    }

    /// The environment entitled to the rest of this slot (0: default).
    fn entitled(&self) -> EnvId {
        if self.owner_done { 0 } else { self.owner }
    }
}

/// A core's vCPUs and time vector.
pub struct RunQueue {
    /// The vCPU whose registers are in the trap frame, if any.
    pub current: Option<Box<Vcpu>>,
    /// The current vCPU asked to end (`VcpuExit`).
    pub exiting: bool,
    /// vCPUs waiting for this core.
    pub ready: VecDeque<Box<Vcpu>>,
    /// vCPUs blocked on a [`Wait`]; evaluated at every scheduling decision
    /// (slot boundary, IPI, idle loop), so a condition that becomes true is
    /// noticed at the next slot boundary at the latest.
    #[allow(clippy::vec_box, reason = "vCPUs move between the lists as boxes, without copying")]
    pub sleeping: Vec<Box<Vcpu>>,
    /// The time vector's state.
    pub clock: SlotClock,
    /// Environments that lose their next slot here (abort protocol).
    pub forfeits: Vec<EnvId>,
    /// TSC when `current` started running (for accounting).
    pub run_since: u64,
}

impl RunQueue {
    /// No vCPUs, before the first slot.
    pub const fn new() -> RunQueue {
        RunQueue {
            current: None,
            exiting: false,
            ready: VecDeque::new(),
            sleeping: Vec::new(),
            clock: SlotClock::new(),
            forfeits: Vec::new(),
            run_since: 0,
        }
    }
}

/// The register state a new vCPU starts with.
pub fn initial_context(entry: u64, stack_top: u64, arg: u64) -> TrapFrame {
    TrapFrame {
        rip: entry,
        rsp: stack_top,
        rdi: arg,
        rflags: RFLAGS_USER,
        cs: u64::from(USER_CS),
        ss: u64::from(USER_DS),
        ..TrapFrame::default()
    }
}

/// Starts application `name` from the initrd with `arg`; its first vCPU
/// runs on `core` (or a core chosen round-robin).
pub fn spawn(name: &str, arg: u64, core: Option<usize>) -> Result<Arc<Env>, env::SpawnError> {
    spawn_image(name, env::find_app(name)?, arg, core.unwrap_or_else(env::pick_core))
}

/// Starts an environment from an ELF image, its first vCPU on `core`.
pub fn spawn_image(
    name: &str,
    image: &[u8],
    arg: u64,
    core: usize,
) -> Result<Arc<Env>, env::SpawnError> {
    let (env, entry) = env::create(name, image, arg)?;
    let context = initial_context(entry, abi::STACK_TOP, arg);
    if let Err(e) = start_vcpu(&env, core, context) {
        env::abort_start(&env, e);
        return Err(env::SpawnError::Memory(e));
    }
    log::debug!("env {} ({name}) started on core {core}", env.id);
    Ok(env)
}

/// Starts a vCPU of `env` on `core` with `context`.
pub fn start_vcpu(env: &Arc<Env>, core: usize, context: TrapFrame) -> Result<(), Error> {
    cpu(core).ok_or(Error::NoSuchCore)?;
    if env::user_cores() & (1 << core) == 0 {
        return Err(Error::NoSuchCore);
    }
    env::ensure_vcpu_page(env, core)?;
    if env.vcpu_cores.fetch_or(1 << core, Ordering::AcqRel) & (1 << core) != 0 {
        return Err(Error::NoSuchCore); // one vCPU per core per environment
    }
    env.live_vcpus.fetch_add(1, Ordering::AcqRel);
    let inbound = &INBOUND[core];
    inbound.incoming.lock().push(Vcpu {
        env: Arc::clone(env),
        context,
        ring: None,
        wait: None,
        call: None,
        call_context: TrapFrame::default(),
        owes_yield: false,
        call_cache: None,
    });
    inbound.incoming_pending.store(true, Ordering::Release);
    inbound.vcpus.fetch_add(1, Ordering::AcqRel);
    kick(core);
    Ok(())
}

pub use super::mailbox::{kick, resched_pending};

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

fn slot_tsc() -> (u64, u64) {
    let config = slots::config();
    let hz = super::time::tsc_hz();
    (hz / 1_000_000 * u64::from(config.slot_us), hz / 1_000_000 * u64::from(config.grace_us))
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
        absorb_incoming(rq);
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
            deliver_upcall(frame, &env, &handler, vector, entry, UpcallStack::ExceptionNoWait)
        });
        if delivered.is_err() && matches!(upcall, Upcall::Epilogue(_)) {
            // It cannot be told: the abort protocol applies right away.
            drop(env);
            RUNQ.with(|rq| rq.clock.grace_until = Some(0));
            return reschedule(frame, Why::Timer);
        }
    }
    let now = super::cpu::rdtsc();
    match deadline {
        Some(at) => apic::arm_timer_after(at.saturating_sub(now).max(1)),
        None => apic::arm_idle_tick(),
    }
    next
}

/// The scheduling decision proper (see the module docs).
fn decide(
    rq: &mut RunQueue,
    frame: &mut TrapFrame,
    why: Why,
    now: u64,
    woke: usize,
    core: usize,
    upcall: &mut Option<Upcall>,
) -> Next {
    let (_, grace_tsc) = slot_tsc();
    if why == Why::Yield
        && let Some(v) = rq.current.as_mut()
    {
        v.owes_yield = false;
    }
    // An epilogue is running: did it yield, or is its time up?
    if let Some(deadline) = rq.clock.grace_until {
        if rq.current.is_none() || why == Why::Yield {
            rq.clock.grace_until = None;
            park_current(rq, frame, now, core, usize::MAX);
            return start_next_slot(rq, frame, now, core, upcall);
        }
        if now >= deadline {
            rq.clock.grace_until = None;
            if let Some(v) = rq.current.as_ref() {
                charge_overrun(&v.env, core, rq.clock.index);
                forfeit_next(rq, v.env.id, core);
            }
            park_current(rq, frame, now, core, usize::MAX);
            return start_next_slot(rq, frame, now, core, upcall);
        }
        return Next::Resume;
    }
    // The slot is over.
    if !rq.clock.started || now >= rq.clock.ends_at {
        if let Some(v) = rq.current.as_mut()
            && rq.clock.started
            && why != Why::Yield
            && v.env.id == rq.clock.entitled()
            && v.call.is_none()
        {
            let entry = v.env.epilogue.load(Ordering::Relaxed);
            if entry != 0 && v.owes_yield {
                // Still inside the epilogue it was stopped in: no new
                // upcall (they would pile up on its stack); charged again.
                charge_overrun(&v.env, core, rq.clock.index);
                let id = v.env.id;
                forfeit_next(rq, id, core);
            } else if entry != 0 {
                v.owes_yield = true;
                bump_vcpu_stat(&v.env, core, offset_of!(abi::VcpuPage, epilogues));
                rq.clock.grace_until = Some(now.saturating_add(grace_tsc));
                *upcall = Some(Upcall::Epilogue(entry));
                return Next::Resume;
            }
        }
        park_current(rq, frame, now, core, usize::MAX);
        return start_next_slot(rq, frame, now, core, upcall);
    }
    // Within the slot.
    if why == Why::Yield {
        if rq.current.as_ref().is_some_and(|v| v.env.id == rq.clock.owner) {
            rq.clock.owner_done = true;
        }
        park_current(rq, frame, now, core, usize::MAX);
        return pick_in_slot(rq, frame, now, core);
    }
    let Some(current) = rq.current.as_ref() else {
        return pick_in_slot(rq, frame, now, core);
    };
    if woke > 0 && current.env.id != rq.clock.entitled() {
        // Woken vCPUs are at the front of the queue; the preempted one goes
        // right behind them.
        park_current(rq, frame, now, core, woke);
        return pick_in_slot(rq, frame, now, core);
    }
    Next::Resume
}

/// Starts the next slot of this core's vector and picks who runs in it.
fn start_next_slot(
    rq: &mut RunQueue,
    frame: &mut TrapFrame,
    now: u64,
    core: usize,
    upcall: &mut Option<Upcall>,
) -> Next {
    let (slot_tsc, _) = slot_tsc();
    let len = slots::len(core).max(1);
    let clock = &mut rq.clock;
    clock.index = if clock.started { (clock.index + 1) % len } else { 0 };
    clock.started = true;
    clock.ends_at = now.saturating_add(slot_tsc);
    clock.owner_done = false;
    clock.grace_until = None;
    let mut owner = slots::owner(core, clock.index);
    if owner != 0
        && let Some(i) = rq.forfeits.iter().position(|&e| e == owner)
    {
        rq.forfeits.swap_remove(i);
        owner = 0;
    }
    clock.owner = owner;
    slots::publish_current(core, clock.index);
    let next = pick_in_slot(rq, frame, now, core);
    if let Some(v) = rq.current.as_ref()
        && owner != 0
        && v.env.id == owner
    {
        bump_vcpu_stat(&v.env, core, offset_of!(abi::VcpuPage, slots_started));
        let entry = v.env.prologue.load(Ordering::Relaxed);
        if entry != 0 && v.call.is_none() {
            *upcall = Some(Upcall::Prologue(entry));
        }
    }
    next
}

/// With no vCPU current, picks one for the rest of the slot: its owner if
/// it can run and is entitled, else the first taking default time.
fn pick_in_slot(rq: &mut RunQueue, frame: &mut TrapFrame, now: u64, core: usize) -> Next {
    debug_assert!(rq.current.is_none());
    let entitled = rq.clock.entitled();
    let choice = timevec::pick(entitled, rq.ready.iter().map(|v| v.candidate(core)));
    match choice.and_then(|i| rq.ready.remove(i)) {
        Some(v) => {
            load(rq, v, frame, now);
            Next::Resume
        }
        None => Next::Idle,
    }
}

/// Makes `v` current with its live registers in `frame`.
fn load(rq: &mut RunQueue, mut v: Box<Vcpu>, frame: &mut TrapFrame, now: u64) {
    *frame = v.live_context().clone();
    activate(v.running_env());
    rq.current = Some(v);
    rq.run_since = now;
}

/// Saves the current vCPU's registers from `frame`, charges its run time
/// and queues it at `position` of the ready queue (clamped to the end).
fn park_current(rq: &mut RunQueue, frame: &TrapFrame, now: u64, core: usize, position: usize) {
    if let Some(mut v) = rq.current.take() {
        *v.live_context() = frame.clone();
        account(&v, core, now.saturating_sub(rq.run_since));
        rq.ready.insert(position.min(rq.ready.len()), v);
    }
}

fn account(v: &Vcpu, core: usize, tsc: u64) {
    if let Some(word) = env::vcpu_word(&v.env, core, offset_of!(abi::VcpuPage, run_tsc) as u64) {
        word.fetch_add(tsc, Ordering::Relaxed);
    }
}

fn bump_vcpu_stat(env: &Env, core: usize, offset: usize) {
    if let Some(word) = env::vcpu_word(env, core, offset as u64) {
        word.fetch_add(1, Ordering::Relaxed);
    }
}

/// Records that `env` forfeits its next slot here. Entries of
/// environments that no longer own a slot here (they freed them or ended)
/// are dropped once the list grows, so it stays small.
fn forfeit_next(rq: &mut RunQueue, env: EnvId, core: usize) {
    rq.forfeits.push(env);
    if rq.forfeits.len() > 32 {
        rq.forfeits.retain(|&e| slots::owned_by(core, e) != 0);
    }
}

/// The abort protocol's bookkeeping: count the overrun where the
/// environment sees it and tell it through its event queue.
fn charge_overrun(env: &Env, core: usize, slot: usize) {
    bump_vcpu_stat(env, core, offset_of!(abi::VcpuPage, overruns));
    env::info_word(env, offset_of!(abi::InfoPage, overruns) as u64).fetch_add(1, Ordering::Relaxed);
    env::post_event(env, abi::event::OVERRUN, 0, [core as u64, slot as u64]);
}

/// When the timer must fire next: the grace period's or slot's end while
/// this core has vCPUs (sleepers' predicates are evaluated at slot
/// boundaries), the earliest ring timer, or the earliest TSC deadline a
/// sleeper's predicate compares the clock with; `None` (idle tick)
/// otherwise.
fn timer_deadline(rq: &RunQueue, now: u64) -> Option<u64> {
    let busy = rq.current.is_some() || !rq.ready.is_empty() || !rq.sleeping.is_empty();
    if !busy {
        return None;
    }
    let clock = rq.clock.grace_until.unwrap_or(rq.clock.ends_at);
    let timers = rq
        .current
        .iter()
        .chain(rq.ready.iter())
        .chain(rq.sleeping.iter())
        .filter_map(|v| v.ring.as_ref().and_then(VcpuRing::next_timer))
        .min();
    let predicates = rq
        .sleeping
        .iter()
        .filter_map(|v| match &v.wait {
            Some(Wait::Predicate(program)) => program.next_deadline(now),
            _ => None,
        })
        .min();
    Some([timers, predicates].into_iter().flatten().fold(clock, u64::min))
}

/// Releases a dropped vCPU's hold on its environment: its address space is
/// unloaded from this core first, then the environment learns the vCPU is
/// gone (and the last one reclaims it).
fn release_vcpu(env: &Arc<Env>) {
    let me = this_cpu();
    unload_if_loaded(env);
    env.vcpu_cores.fetch_and(!(1 << me.index), Ordering::AcqRel);
    INBOUND[me.index].vcpus.fetch_sub(1, Ordering::AcqRel);
    env::vcpu_dropped(env);
}

/// Releases an ended activation's hold on its target.
fn release_activation(target: &Arc<Env>) {
    unload_if_loaded(target);
    env::vcpu_dropped(target);
}

fn unload_if_loaded(env: &Arc<Env>) {
    let loaded = LOADED_ENV.with(|l| l.as_ref().is_some_and(|e| Arc::ptr_eq(e, env)));
    if loaded {
        deactivate_user();
    }
}

/// Drops the vCPUs of dying environments (the current one too, with
/// `exiting`), and ends calls into dying targets: their callers resume
/// with `CallFailed`.
fn drop_dying(
    rq: &mut RunQueue,
    frame: &mut TrapFrame,
    now: u64,
    core: usize,
    released: &mut Released,
) {
    let exiting = core::mem::take(&mut rq.exiting);
    if let Some(v) = rq.current.as_mut() {
        if exiting || v.env.is_dying() {
            let v = rq.current.take().expect("checked");
            account(&v, core, now.saturating_sub(rq.run_since));
            release_into(*v, released);
        } else if v.call.as_ref().is_some_and(|a| a.target.is_dying()) {
            let call = v.call.take().expect("checked");
            released.activations.push(call.end());
            *frame = v.context.clone();
            frame.rax = Error::CallFailed.to_raw();
            activate(&v.env);
        }
    }
    let keep = |v: &mut Box<Vcpu>, released: &mut Released| {
        if v.env.is_dying() {
            return false;
        }
        if v.call.as_ref().is_some_and(|a| a.target.is_dying()) {
            let call = v.call.take().expect("checked");
            released.activations.push(call.end());
            v.context.rax = Error::CallFailed.to_raw();
        }
        true
    };
    for list in [0, 1] {
        let mut i = 0;
        loop {
            let v = match list {
                0 => rq.ready.get_mut(i),
                _ => rq.sleeping.get_mut(i),
            };
            let Some(v) = v else { break };
            if keep(v, released) {
                i += 1;
                continue;
            }
            let v = match list {
                0 => rq.ready.remove(i).expect("index in range"),
                _ => rq.sleeping.swap_remove(i),
            };
            release_into(*v, released);
        }
    }
}

fn release_into(v: Vcpu, released: &mut Released) {
    if let Some(call) = v.call {
        released.activations.push(call.end());
    }
    released.vcpus.push(v.env);
}

/// Fires due ring timers of every vCPU here and moves the sleepers whose
/// condition now holds to the front of the ready queue. Returns how many
/// woke.
fn wake_sleepers(rq: &mut RunQueue, now: u64) -> usize {
    for v in rq.current.iter_mut().chain(rq.ready.iter_mut()).chain(rq.sleeping.iter_mut()) {
        if let Some(ring) = v.ring.as_mut() {
            ring.fire_timers(now);
        }
    }
    let mut woke = 0;
    let mut i = 0;
    let bit = 1 << this_cpu().index;
    while i < rq.sleeping.len() {
        // Clear the owed look before taking it (see `env::wake`): a wake-up
        // after this clear sets the bit again and kicks this core.
        rq.sleeping[i].env.wake_owed.fetch_and(!bit, Ordering::AcqRel);
        if condition_holds(&rq.sleeping[i]) {
            let mut v = rq.sleeping.swap_remove(i);
            v.wait = None;
            rq.ready.push_front(v);
            woke += 1;
        } else {
            i += 1;
        }
    }
    woke
}

fn condition_holds(v: &Vcpu) -> bool {
    match &v.wait {
        None => true,
        // Lock busy: deferred to the next decision (at the latest the slot's
        // end: a core with sleepers keeps its slot timer armed).
        Some(Wait::Predicate(program)) => {
            PredicateMemory::try_new(&v.env).is_some_and(|memory| program.eval(&memory))
        }
        Some(Wait::Completions(n)) => v.ring.as_ref().is_none_or(|r| r.pending_completions() >= *n),
    }
}

/// Puts the current vCPU to sleep on `wait`; `frame` holds the registers it
/// resumes with (its system call's result already in `rax`). The caller
/// then calls [`finish`].
pub fn sleep_current(frame: &TrapFrame, wait: Wait) {
    let me = this_cpu();
    let now = super::cpu::rdtsc();
    RUNQ.with(|rq| {
        if let Some(mut v) = rq.current.take() {
            v.context = frame.clone();
            account(&v, me.index, now.saturating_sub(rq.run_since));
            v.wait = Some(wait);
            v.owes_yield = false;
            rq.sleeping.push(v);
        }
    });
}

/// Whether the current vCPU is inside a protected control transfer.
pub fn in_call() -> bool {
    RUNQ.with(|rq| rq.current.as_ref().is_some_and(|v| v.call.is_some()))
}

/// [`VcpuRing::enter_fast`] on the current vCPU's ring, in place, within
/// one borrow of the run queue: the `RingEnter` fast path. `Full(0)` if
/// there is no ring to enter this way (none registered, or inside a
/// protected control transfer): [`with_current_ring`] then gives the right
/// error.
///
/// Called from the system-call path, with interrupts masked.
#[inline(always)]
pub fn enter_current_ring_fast(to_submit: u64, min_complete: u64) -> FastEntered {
    RUNQ.with_masked(|rq| match rq.current.as_deref_mut() {
        Some(Vcpu { call: None, ring: Some(ring), .. }) => ring.enter_fast(to_submit, min_complete),
        _ => FastEntered::Full(0),
    })
}

/// Runs `f` with the current vCPU's ring slot (taken out of the run queue
/// for the call, so `f` may do anything the kernel does on this core) and
/// its environment. `Busy` inside a protected control transfer: the ring is
/// the caller's.
pub fn with_current_ring<R>(
    f: impl FnOnce(&mut Option<VcpuRing>, &Arc<Env>) -> Result<R, Error>,
) -> Result<R, Error> {
    let (mut ring, env) = RUNQ.with(|rq| match rq.current.as_mut() {
        Some(v) if v.call.is_none() => Ok((v.ring.take(), Arc::clone(&v.env))),
        _ => Err(Error::Busy),
    })?;
    let result = f(&mut ring, &env);
    RUNQ.with(|rq| {
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
    let inbound = &INBOUND[this_cpu().index];
    if inbound.incoming_pending.load(Ordering::Acquire) {
        let mut incoming = inbound.incoming.lock();
        inbound.incoming_pending.store(false, Ordering::Release);
        rq.ready.extend(incoming.drain(..).map(Box::new));
    }
}

// --- directed yield and protected control transfer ---------------------------

/// `YieldTo`: hands the rest of the slot to `target`'s vCPU on this core.
/// On success `frame` holds the target's registers (the caller's result,
/// 0, is saved with its own).
pub fn yield_to(frame: &mut TrapFrame, target: EnvId) -> Result<(), Error> {
    let me = this_cpu();
    let core = me.index;
    let now = super::cpu::rdtsc();
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
        if rq.clock.grace_until.is_some() {
            // Its slot is over anyway: this counts as the epilogue's yield.
            return Ok(false);
        }
        if current.env.id == rq.clock.owner {
            rq.clock.owner_done = true;
        }
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
        _ => u32::try_from(target).ok().and_then(env::lookup).ok_or(Error::NoSuchEnv)?,
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
    RUNQ.with(|rq| {
        let v = rq.current.as_mut().expect("a system call has a current vCPU");
        v.context = frame.clone();
        v.call = Some(Activation { target });
    });
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
        activate(&v.env);
        Ok(call.end())
    })?;
    // The caller's space is loaded: the target's hold can go, and the
    // reference is kept for the next call.
    env::vcpu_dropped(&target);
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

/// Loads `env`'s address space (if not loaded already) and this core's vCPU
/// page as the user GS base.
fn activate(env: &Arc<Env>) {
    let me = this_cpu();
    LOADED_ENV.with(|loaded| {
        if !loaded.as_ref().is_some_and(|e| Arc::ptr_eq(e, env)) {
            // Announce before loading, so that a shootdown which misses the
            // bit finds the fresh CR3 load already done (see tlb.rs).
            env.active_cores.fetch_or(1 << me.index, Ordering::SeqCst);
            tlb::load(&env.tlb_space());
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
    LOADED_ENV.with(|loaded| {
        if let Some(prev) = loaded.take() {
            tlb::load_kernel();
            if !tlb::pcids_enabled() {
                prev.active_cores.fetch_and(!(1 << me.index), Ordering::SeqCst);
            }
        }
    });
}

/// From the idle loop: runs this core's time vector; if a vCPU should run,
/// enters it (does not return).
pub fn run_ready() {
    if INBOUND[this_cpu().index].vcpus.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut frame = TrapFrame::default();
    if let Next::Resume = reschedule(&mut frame, Why::Event) {
        enter_user(&frame);
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
    idle_loop()
}

/// A core's idle loop: runs work posted to its mailbox with interrupts on,
/// steps dead environments' reclaims, enters a ready vCPU, and halts when
/// there is nothing to do. Never returns.
pub fn idle_loop() -> ! {
    let me = this_cpu();
    loop {
        while let Some(taken) = mailbox::take_work() {
            x86_64::instructions::interrupts::enable();
            (taken.work.func)(taken.work.arg);
            taken.acknowledge();
        }
        // Dead environments' reclaims, a bounded step at a time with
        // interrupts on between them.
        if env::reclaim_step() {
            continue;
        }
        x86_64::instructions::interrupts::disable();
        if mailbox::has_work() {
            continue;
        }
        // A ready vCPU: enter ring 3 (does not return).
        run_ready();
        // About to halt: a reschedule request is answered (there was nothing
        // to run), and clearing the flag makes the next `kick` send an IPI
        // again; one that came after `run_ready` looked goes round again.
        if mailbox::take_resched() {
            continue;
        }
        me.halts.fetch_add(1, Ordering::Relaxed);
        // `sti; hlt`: an interrupt pending since the check above wakes us.
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

/// Handles an entry from ring 3 other than `syscall`: timer, IPIs,
/// exceptions. Called by `trap_dispatch` with the live frame.
pub fn user_trap(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    let mut why = Why::Event;
    if vector < 32 {
        user_exception(frame);
    } else if interrupts::device_interrupt(vector, true) == Device::Timer {
        why = Why::Timer;
    }
    finish(frame, why);
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

/// Marks the current vCPU as ending; the next [`reschedule`] drops it.
pub fn exit_current_vcpu() {
    RUNQ.with(|rq| rq.exiting = true);
}

/// The environment whose code is in the trap frame (the callee during a
/// protected control transfer).
pub fn current_env() -> Arc<Env> {
    RUNQ.with(|rq| rq.current.as_ref().map(|v| Arc::clone(v.running_env())))
        .expect("an entry from ring 3 has a current vCPU")
}

/// An exception raised in ring 3: upcall to the environment or kill it.
fn user_exception(frame: &mut TrapFrame) {
    let env = current_env();
    let vector = frame.vector;
    let name = interrupts::exception_name(vector);
    let deliverable = matches!(
        vector,
        abi::vector::DIVIDE_ERROR
            | abi::vector::BREAKPOINT
            | abi::vector::INVALID_OPCODE
            | abi::vector::GENERAL_PROTECTION
            | abi::vector::PAGE_FAULT
    );
    if !deliverable {
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
    let stack = if in_call() { UpcallStack::Interrupted } else { UpcallStack::Exception };
    if let Err(at) = deliver_upcall(frame, &env, &handler, vector, entry, stack) {
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
enum UpcallStack {
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

/// Writes an [`abi::UpcallFrame`] of `frame` (an exception's, or a slot
/// upcall's with `vector` ≥ 0x100) on `stack` and makes `frame` enter
/// `entry` with `rsp` = `rdi` = its address. Fails with the address it
/// could not write.
fn deliver_upcall(
    frame: &mut TrapFrame,
    env: &Env,
    handler: &env::ExceptionHandler,
    vector: u64,
    entry: u64,
    stack: UpcallStack,
) -> Result<(), u64> {
    let fault_addr = if vector == abi::vector::PAGE_FAULT {
        x86_64::registers::control::Cr2::read_raw()
    } else {
        0
    };
    let upcall = abi::UpcallFrame {
        vector,
        error_code: if vector < 32 { frame.error_code } else { 0 },
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
    // Nested upcall on the exception stack: go below the interrupted rsp
    // and its red zone; otherwise start at the top. No handler registered:
    // there is no stack (address 0 fails below).
    let stack_top = if handler.entry == 0 { 0 } else { handler.stack_top_for(this_cpu().index) };
    let window = if handler.stride > 0 { handler.stride } else { 1 << 20 };
    let nested = stack == UpcallStack::Interrupted
        || frame.rsp < stack_top && frame.rsp >= stack_top.saturating_sub(window);
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
    let copied = if stack == UpcallStack::ExceptionNoWait {
        env::copy_to_user_nowait(env, at, bytes)
    } else {
        env::copy_to_user(env, at, bytes)
    };
    copied.map_err(|_| at)?;
    frame.rip = entry;
    frame.rsp = at;
    frame.rdi = at;
    frame.rflags = RFLAGS_USER;
    Ok(())
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
