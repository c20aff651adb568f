//! vCPUs and the per-core run queue: starting vCPUs (and environments
//! with their first one), the incoming lists other cores fill, parking and
//! loading the current vCPU with its accounting, sleepers and their wake-up
//! conditions, dropping the vCPUs of dying environments, and the current
//! vCPU's ring.
//!
//! Owns the per-core `RUNQ` (a `CpuLocal`: this core only, interrupts off)
//! and `INBOUND` (other cores push vCPUs there under a leaf lock).
use super::switch::*;
use super::*;
use crate::machine::env::{self, Env};
use crate::machine::gdt::{USER_CS, USER_DS};
use crate::machine::ktrace;
use crate::machine::percpu::{CacheAligned, MAX_CPUS, cpu, cpu_local, this_cpu};
use crate::machine::trap::{RFLAGS_USER, TrapFrame};
use crate::machine::uring::{FastEntered, PredicateMemory, VcpuRing};
use crate::machine::xstate::UserExt;
use abi::{CoreId, Error};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kernel::trace::Kind;

cpu_local! {
    /// This core's vCPUs and time vector.
    pub(super) static RUNQ: RunQueue = RunQueue::new();
    /// The environment whose address space is loaded in CR3, if any.
    pub(super) static LOADED_ENV: Option<Arc<Env>> = None;
}

/// What other cores hand a core: vCPUs they started there.
pub(super) struct Inbound {
    /// vCPUs other cores started here, not yet in the run queue (leaf lock).
    pub(super) incoming: spin::Mutex<Vec<Vcpu>>,
    /// Set after a push to `incoming`, cleared when it is drained.
    pub(super) incoming_pending: AtomicBool,
    /// vCPUs assigned to this core (incoming, ready or running).
    pub(super) vcpus: AtomicUsize,
}

pub(super) static INBOUND: [CacheAligned<Inbound>; MAX_CPUS] = [const {
    CacheAligned(Inbound {
        incoming: spin::Mutex::new(Vec::new()),
        incoming_pending: AtomicBool::new(false),
        vcpus: AtomicUsize::new(0),
    })
}; MAX_CPUS];

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
    pub clock: kernel::slotclock::SlotClock,
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
            clock: kernel::slotclock::SlotClock::new(),
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
    let started = CoreId::from_word(core as u64)
        .ok_or(Error::NoSuchCore)
        .and_then(|core| start_vcpu(&env, core, context));
    if let Err(e) = started {
        env::abort_start(&env, e);
        return Err(env::SpawnError::Memory(e));
    }
    log::debug!("env {} ({name}) started on core {core}", env.id);
    Ok(env)
}

/// Starts a vCPU of `env` on `core` with `context`.
pub fn start_vcpu(env: &Arc<Env>, core: CoreId, context: TrapFrame) -> Result<(), Error> {
    let core = core.index();
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
        // A new vCPU never sees another context's leftover registers.
        ext: UserExt::initial(),
        call_ext: UserExt::initial(),
        ready_since: 0,
    });
    inbound.incoming_pending.store(true, Ordering::Release);
    inbound.vcpus.fetch_add(1, Ordering::AcqRel);
    kick(core);
    Ok(())
}

/// Per core: TSC ticks runnable vCPUs waited in its ready queue before
/// they ran, since boot (`abi::Syscall::QueueDelay`). Written only by
/// that core ([`load`]).
static QUEUE_DELAY: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// `core`'s [`QUEUE_DELAY`] (0 for a core index past the table).
pub fn queue_delay(core: usize) -> u64 {
    QUEUE_DELAY.get(core).map_or(0, |w| w.load(Ordering::Relaxed))
}

/// Charges `v`'s wait in the ready queue, if it was stamped, to `core`
/// and to its environment's `VcpuPage` there.
#[inline]
fn charge_queue_delay(v: &mut Vcpu, core: usize, now: u64) {
    let since = core::mem::replace(&mut v.ready_since, 0);
    if since == 0 {
        return;
    }
    let waited = now.saturating_sub(since);
    if let Some(w) = QUEUE_DELAY.get(core) {
        w.fetch_add(waited, Ordering::Relaxed);
    }
    if let Some(word) = env::vcpu_word(&v.env, core, offset_of!(abi::VcpuPage, queue_tsc) as u64) {
        word.fetch_add(waited, Ordering::Relaxed);
    }
    bump_vcpu_stat(&v.env, core, offset_of!(abi::VcpuPage, queue_waits));
}

/// Makes `v` current with its live registers in `frame` and its vector
/// registers and FS base in the CPU; charges its queueing delay.
#[inline]
pub(super) fn load(rq: &mut RunQueue, mut v: Box<Vcpu>, frame: &mut TrapFrame, now: u64) {
    if ktrace::enabled() {
        let waited = if v.ready_since == 0 { 0 } else { now.saturating_sub(v.ready_since) };
        ktrace::record(Kind::Run, v.env.id.raw(), waited);
    }
    charge_queue_delay(&mut v, this_cpu().index, now);
    *frame = v.live_context().clone();
    v.live_ext().restore();
    activate(v.running_env());
    rq.current = Some(v);
    rq.run_since = now;
}

/// Saves the current vCPU's registers from `frame` (and its vector
/// registers and FS base from the CPU), charges its run time and queues it
/// at `position` of the ready queue (clamped to the end).
#[inline]
pub(super) fn park_current(
    rq: &mut RunQueue,
    frame: &TrapFrame,
    now: u64,
    core: usize,
    position: usize,
) {
    if let Some(mut v) = rq.current.take() {
        ktrace::record(Kind::Stop, v.env.id.raw(), ktrace::STOP_PREEMPTED);
        *v.live_context() = frame.clone();
        v.live_ext().save();
        account(&v, core, now.saturating_sub(rq.run_since));
        v.ready_since = now;
        rq.ready.insert(position.min(rq.ready.len()), v);
    }
}

#[inline]
pub(super) fn account(v: &Vcpu, core: usize, tsc: u64) {
    if let Some(word) = env::vcpu_word(&v.env, core, offset_of!(abi::VcpuPage, run_tsc) as u64) {
        word.fetch_add(tsc, Ordering::Relaxed);
    }
}

#[inline]
pub(super) fn bump_vcpu_stat(env: &Env, core: usize, offset: usize) {
    if let Some(word) = env::vcpu_word(env, core, offset as u64) {
        word.fetch_add(1, Ordering::Relaxed);
    }
}

/// Releases a dropped vCPU's hold on its environment: its address space is
/// unloaded from this core first, then the environment learns the vCPU is
/// gone (and the last one reclaims it).
#[inline]
pub(super) fn release_vcpu(env: &Arc<Env>) {
    let me = this_cpu();
    unload_if_loaded(env);
    env.vcpu_cores.fetch_and(!(1 << me.index), Ordering::AcqRel);
    INBOUND[me.index].vcpus.fetch_sub(1, Ordering::AcqRel);
    env::vcpu_dropped(env);
}

/// Releases an ended activation's hold on its target.
#[inline]
pub(super) fn release_activation(target: &Arc<Env>) {
    unload_if_loaded(target);
    env::vcpu_dropped(target);
}

#[inline]
pub(super) fn unload_if_loaded(env: &Arc<Env>) {
    let loaded = LOADED_ENV.with(|l| l.as_ref().is_some_and(|e| Arc::ptr_eq(e, env)));
    if loaded {
        deactivate_user();
    }
}

/// Drops the vCPUs of dying environments (the current one too, with
/// `exiting`), and ends calls into dying targets: their callers resume
/// with `CallFailed`.
#[inline]
pub(super) fn drop_dying(
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
            ktrace::record(Kind::Stop, v.env.id.raw(), ktrace::STOP_GONE);
            account(&v, core, now.saturating_sub(rq.run_since));
            release_into(*v, released);
        } else if v.call.as_ref().is_some_and(|a| a.target.is_dying()) {
            let call = v.call.take().expect("checked");
            released.activations.push(call.end());
            *frame = v.context.clone();
            frame.rax = Error::CallFailed.to_raw();
            v.ext.restore();
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

#[inline]
pub(super) fn release_into(v: Vcpu, released: &mut Released) {
    if let Some(call) = v.call {
        released.activations.push(call.end());
    }
    released.vcpus.push(v.env);
}

/// Fires due ring timers of every vCPU here and moves the sleepers whose
/// condition now holds to the front of the ready queue. Returns how many
/// woke.
#[inline]
pub(super) fn wake_sleepers(rq: &mut RunQueue, now: u64) -> usize {
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
        let holds = condition_holds(&rq.sleeping[i]);
        if holds || signal_interrupts(&rq.sleeping[i], bit) {
            let mut v = rq.sleeping.swap_remove(i);
            v.wait = None;
            if !holds {
                // Its blocking call ends early (see `abi::signal`); the
                // upcall follows when it runs.
                v.context.rax = Error::Interrupted.to_raw();
            }
            v.ready_since = now;
            rq.ready.push_front(v);
            woke += 1;
        } else {
            i += 1;
        }
    }
    woke
}

/// Whether a pending signal cuts a sleeper's `SleepOn` short: its
/// environment could take a signal upcall on this core (`core_bit`). A
/// blocking `RingEnter` is not cut short (its result, the submissions
/// consumed, would be lost); the upcall waits for its completions.
#[inline]
fn signal_interrupts(v: &Vcpu, core_bit: u64) -> bool {
    matches!(v.wait, Some(Wait::Predicate(_)))
        && v.env.signals.deliverable()
        && v.env.signals.core_mask() & core_bit != 0
}

#[inline]
pub(super) fn condition_holds(v: &Vcpu) -> bool {
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
    let now = crate::machine::cpu::rdtsc();
    RUNQ.with(|rq| {
        if let Some(mut v) = rq.current.take() {
            ktrace::record(Kind::Stop, v.env.id.raw(), ktrace::STOP_SLEEP);
            v.context = frame.clone();
            // Never inside a call (`SleepOn` and `RingEnter` refuse it).
            v.live_ext().save();
            account(&v, me.index, now.saturating_sub(rq.run_since));
            v.wait = Some(wait);
            v.owes_yield = false;
            rq.sleeping.push(v);
        }
    });
}

/// Whether the current vCPU is inside a protected control transfer.
#[inline]
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

#[inline]
pub(super) fn absorb_incoming(rq: &mut RunQueue, now: u64) {
    let inbound = &INBOUND[this_cpu().index];
    if inbound.incoming_pending.load(Ordering::Acquire) {
        let mut incoming = inbound.incoming.lock();
        inbound.incoming_pending.store(false, Ordering::Release);
        rq.ready.extend(incoming.drain(..).map(|mut v| {
            v.ready_since = now;
            Box::new(v)
        }));
    }
}

/// Marks the current vCPU as ending; the next [`reschedule`] drops it.
pub fn exit_current_vcpu() {
    RUNQ.with(|rq| rq.exiting = true);
}

/// The environment whose code is in the trap frame (the callee during a
/// protected control transfer).
#[inline]
pub fn current_env() -> Arc<Env> {
    RUNQ.with(|rq| rq.current.as_ref().map(|v| Arc::clone(v.running_env())))
        .expect("an entry from ring 3 has a current vCPU")
}
