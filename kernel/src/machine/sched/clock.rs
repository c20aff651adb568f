//! The slot clock: where a core is in its time vector, and the scheduling
//! decision proper ([`decide`]) — slot and grace-period ends, epilogues and
//! the abort protocol, picking who runs in a slot, and when the timer must
//! fire next. The allocation and picking rules themselves are
//! `kernel::timevec`'s; the owner table is `slots`'.
use super::runq::*;
use super::*;
use crate::machine::env::{self, Env};
use crate::machine::slots;
use crate::machine::trap::TrapFrame;
use crate::machine::uring::VcpuRing;
use core::mem::offset_of;
use core::sync::atomic::Ordering;
use kernel::ownership::EnvId;
use kernel::timevec;

/// Where a core is in its time vector.
pub struct SlotClock {
    /// Whether the first slot has started.
    pub(super) started: bool,
    /// The slot running.
    pub(super) index: usize,
    /// TSC at which it ends.
    pub(super) ends_at: u64,
    /// Its owner, 0 if nobody owns it or the owner forfeited it.
    pub(super) owner: EnvId,
    /// The owner gave up (or away) the rest of it.
    pub(super) owner_done: bool,
    /// The epilogue was delivered; the owner must yield by then.
    pub(super) grace_until: Option<u64>,
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
    #[inline]
    fn entitled(&self) -> EnvId {
        if self.owner_done { 0 } else { self.owner }
    }
}

#[inline]
pub(super) fn slot_tsc() -> (u64, u64) {
    let config = slots::config();
    let hz = crate::machine::time::tsc_hz();
    (hz / 1_000_000 * u64::from(config.slot_us), hz / 1_000_000 * u64::from(config.grace_us))
}

/// The scheduling decision proper (see the module docs).
#[inline]
pub(super) fn decide(
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
#[inline]
pub(super) fn start_next_slot(
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
#[inline]
pub(super) fn pick_in_slot(
    rq: &mut RunQueue,
    frame: &mut TrapFrame,
    now: u64,
    core: usize,
) -> Next {
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

/// Records that `env` forfeits its next slot here. Entries of
/// environments that no longer own a slot here (they freed them or ended)
/// are dropped once the list grows, so it stays small.
#[inline]
pub(super) fn forfeit_next(rq: &mut RunQueue, env: EnvId, core: usize) {
    rq.forfeits.push(env);
    if rq.forfeits.len() > 32 {
        rq.forfeits.retain(|&e| slots::owned_by(core, e) != 0);
    }
}

/// The abort protocol's bookkeeping: count the overrun where the
/// environment sees it and tell it through its event queue.
#[inline]
pub(super) fn charge_overrun(env: &Env, core: usize, slot: usize) {
    bump_vcpu_stat(env, core, offset_of!(abi::VcpuPage, overruns));
    env::info_word(env, offset_of!(abi::InfoPage, overruns) as u64).fetch_add(1, Ordering::Relaxed);
    env::post_event(env, abi::event::OVERRUN, 0, [core as u64, slot as u64]);
}

/// When the timer must fire next: the grace period's or slot's end while
/// this core has vCPUs (sleepers' predicates are evaluated at slot
/// boundaries), the earliest ring timer, or the earliest TSC deadline a
/// sleeper's predicate compares the clock with; `None` (idle tick)
/// otherwise.
#[inline]
pub(super) fn timer_deadline(rq: &RunQueue, now: u64) -> Option<u64> {
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
