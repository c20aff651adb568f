//! The slot clock applied: [`decide`] asks `kernel::slotclock::SlotClock`
//! (the hardware-free state machine that owns the rules — slot and
//! grace-period ends, epilogues and the abort protocol, forfeits, who runs
//! in a slot) for a decision and carries it out on the run queue; and when
//! the timer must fire next. The allocation and picking rules are
//! `kernel::timevec`'s; the owner table is `slots`'.
use super::runq::*;
use super::*;
use crate::machine::env::{self, Env};
use crate::machine::ktrace;
use crate::machine::slots;
use crate::machine::trap::TrapFrame;
use crate::machine::uring::VcpuRing;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use core::mem::offset_of;
use core::sync::atomic::Ordering;
use kernel::ownership::EnvId;
use kernel::slotclock;
use kernel::timevec::Candidate;
use kernel::trace::Kind;

#[inline]
pub(super) fn slot_tsc() -> (u64, u64) {
    let config = slots::config();
    let hz = crate::machine::time::tsc_hz();
    (hz / 1_000_000 * u64::from(config.slot_us), hz / 1_000_000 * u64::from(config.grace_us))
}

/// The scheduling decision proper: the slot clock's
/// ([`SlotClock::step`](kernel::slotclock::SlotClock::step), which owns the rules), applied here.
pub(super) fn decide(
    rq: &mut RunQueue,
    frame: &mut TrapFrame,
    why: Why,
    now: u64,
    woke: usize,
    core: usize,
    upcall: &mut Option<Upcall>,
) -> Next {
    let (slot, grace) = slot_tsc();
    let event = match why {
        Why::Timer => slotclock::Event::Timer,
        Why::Yield => slotclock::Event::Yield,
        Why::Event => slotclock::Event::Other,
    };
    let view = QueueView { current: rq.current.as_deref(), ready: &rq.ready, core };
    let d = rq.clock.step(event, now, woke, &view, slotclock::Times { slot, grace });
    if let Some(v) = rq.current.as_mut() {
        if d.yielded {
            v.owes_yield = false;
        }
        if let Some(index) = d.overrun {
            ktrace::record(Kind::Overrun, v.env.id.raw(), index as u64);
            charge_overrun(&v.env, core, index);
        }
        if let Some(entry) = d.epilogue {
            v.owes_yield = true;
            bump_vcpu_stat(&v.env, core, offset_of!(abi::VcpuPage, epilogues));
            *upcall = Some(Upcall::Epilogue(entry));
        }
    }
    if let Some(position) = d.park {
        park_current(rq, frame, now, core, position);
    }
    if let Some(index) = d.slot_started {
        ktrace::record(Kind::SlotStart, slots::owner(core, index).raw(), index as u64);
        slots::publish_current(core, index);
    }
    if let Some(v) = d.run.and_then(|i| rq.ready.remove(i)) {
        load(rq, v, frame, now);
    }
    if d.owner_started
        && let Some(v) = rq.current.as_ref()
    {
        bump_vcpu_stat(&v.env, core, offset_of!(abi::VcpuPage, slots_started));
    }
    if let Some(entry) = d.prologue {
        *upcall = Some(Upcall::Prologue(entry));
    }
    if rq.current.is_some() { Next::Resume } else { Next::Idle }
}

/// A core's run queue as the slot clock sees it.
struct QueueView<'a> {
    current: Option<&'a Vcpu>,
    ready: &'a VecDeque<Box<Vcpu>>,
    core: usize,
}

impl slotclock::View for QueueView<'_> {
    fn current(&self) -> Option<slotclock::Running> {
        self.current.map(|v| slotclock::Running {
            env: v.env.id,
            default_time: v.candidate(self.core).default_time,
            in_call: v.call.is_some(),
            owes_yield: v.owes_yield,
            epilogue: v.env.epilogue.load(Ordering::Relaxed),
        })
    }

    fn ready(&self) -> impl Iterator<Item = Candidate> + Clone {
        self.ready.iter().map(|v| v.candidate(self.core))
    }

    fn ready_len(&self) -> usize {
        self.ready.len()
    }

    fn prologue(&self, who: slotclock::Who) -> (u64, bool) {
        let v = match who {
            slotclock::Who::Current => self.current,
            slotclock::Who::Ready(i) => self.ready.get(i).map(|v| &**v),
        };
        v.map_or((0, false), |v| (v.env.prologue.load(Ordering::Relaxed), v.call.is_some()))
    }

    fn slots(&self) -> usize {
        slots::len(self.core)
    }

    fn owner(&self, index: usize) -> EnvId {
        slots::owner(self.core, index)
    }

    fn owns_a_slot(&self, env: EnvId) -> bool {
        slots::owned_by(self.core, env) != 0
    }
}

/// The abort protocol's bookkeeping: count the overrun where the
/// environment sees it and tell it through its event queue.
#[inline]
pub(super) fn charge_overrun(env: &Env, core: usize, slot: usize) {
    bump_vcpu_stat(env, core, offset_of!(abi::VcpuPage, overruns));
    env::info_word(env, offset_of!(abi::InfoPage, overruns) as u64).fetch_add(1, Ordering::Relaxed);
    env::post_event(env, abi::event::OVERRUN, EnvId::NONE, [core as u64, slot as u64]);
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
    let clock = rq.clock.deadline();
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
