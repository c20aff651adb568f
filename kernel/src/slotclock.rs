//! The slot clock: one core's walk through its time vector, as a state
//! machine.
//!
//! Each core runs its vector of slots (`abi::schedule` has the rules
//! environments see). This module owns those rules and nothing else: given
//! what happened ([`Event`]), the time, and a [`View`] of the core's run
//! queue, [`SlotClock::step`] updates the clock and returns a [`Decision`]
//! that says what the machine side (`machine/sched.rs`) must do — charge an
//! overrun, deliver an upcall, park the running vCPU, start a slot, run a
//! ready vCPU. The machine applies decisions; it makes none of these rules
//! itself. No hardware, no locks, no time source: the property tests below
//! drive it with a model run queue.
//!
//! The rules:
//! * A slot lasts `slot` TSC ticks from the moment it really starts (the
//!   step that starts it), so a late start (an overrun's grace period)
//!   never shortens it.
//! * At a slot's start its owner runs if it is ready, unless it forfeited
//!   the slot (then the slot is run as an unowned one); the owner picked
//!   gets its prologue upcall (if it registered one and is not inside a
//!   protected control transfer, whose code is not the owner's).
//!   Otherwise, and in unowned slots, the first ready vCPU taking default
//!   time runs ([`timevec::pick`]), or the core idles.
//! * Within a slot: a vCPU that yields goes to the back of the queue (the
//!   owner yielding gives up the rest of its slot); vCPUs that woke up
//!   preempt whoever runs unless it is entitled to the slot (the owner that
//!   has not given it up), and the preempted one goes right behind them.
//! * At a slot's end the owner, if it is running as itself (not inside a
//!   call) and registered an epilogue, gets the epilogue upcall and `grace`
//!   ticks to yield (any way of giving up the CPU). **Abort protocol**:
//!   still running at the grace period's end, it is stopped, charged an
//!   overrun, and forfeits its next slot on this core. One still inside the
//!   epilogue it was stopped in (it has not yielded since) gets no new
//!   upcall at its next slot's end: it is charged again at once.
//! * Otherwise at a slot's end the running vCPU goes to the back of the
//!   queue and the next slot starts.

use crate::ownership::EnvId;
use crate::timevec::{self, Candidate};
use alloc::vec::Vec;

/// What made the core reconsider who runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The timer: a slot or a grace period may be over.
    Timer,
    /// The running vCPU gives up the rest of its time (`Yield`).
    Yield,
    /// Anything else: a wake-up, a new vCPU, an exit, a sleep, a death.
    Other,
}

/// The running vCPU, as the clock sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Running {
    /// Its environment.
    pub env: EnvId,
    /// Whether it may run in slots nobody owns.
    pub default_time: bool,
    /// Whether it is inside a protected control transfer (another
    /// environment's code runs on it).
    pub in_call: bool,
    /// It got an epilogue upcall and has not yielded since.
    pub owes_yield: bool,
    /// Its environment's epilogue entry (0: none).
    pub epilogue: u64,
}

/// A vCPU the decision names: the running one, or one of the ready queue
/// (its position *before* any park of the same decision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// The running vCPU.
    Current,
    /// Ready vCPU `i`.
    Ready(usize),
}

/// One core's run queue and time vector, as the clock needs to see them.
pub trait View {
    /// The running vCPU, if any.
    fn current(&self) -> Option<Running>;
    /// The ready vCPUs, in queue order.
    fn ready(&self) -> impl Iterator<Item = Candidate> + Clone;
    /// How many are ready.
    fn ready_len(&self) -> usize;
    /// `who`'s prologue entry (0: none) and whether it is inside a call.
    fn prologue(&self, who: Who) -> (u64, bool);
    /// Slots in this core's vector.
    fn slots(&self) -> usize;
    /// The owner of slot `index` (0: nobody).
    fn owner(&self, index: usize) -> EnvId;
    /// Whether `env` owns any slot of this core.
    fn owns_a_slot(&self, env: EnvId) -> bool;
}

/// Lengths, in TSC ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Times {
    /// A slot.
    pub slot: u64,
    /// The grace period after an epilogue upcall.
    pub grace: u64,
}

/// What the machine side must do, in this order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The running vCPU yielded: it owes no yield any more.
    pub yielded: bool,
    /// The abort protocol stopped the running vCPU: charge its environment
    /// an overrun in this slot (its next slot is already forfeited).
    pub overrun: Option<usize>,
    /// Deliver this epilogue entry to the running vCPU, which now owes a
    /// yield (count the epilogue).
    pub epilogue: Option<u64>,
    /// Save the running vCPU and queue it at this position of the ready
    /// queue (clamped to its end).
    pub park: Option<usize>,
    /// A slot starts: publish its index.
    pub slot_started: Option<usize>,
    /// Run the ready vCPU at this position (after the park).
    pub run: Option<usize>,
    /// The vCPU that runs is the new slot's owner: count the slot.
    pub owner_started: bool,
    /// Deliver this prologue entry to the vCPU that runs.
    pub prologue: Option<u64>,
    /// Whether a vCPU runs afterwards (else the core idles).
    pub resume: bool,
}

/// Where a core is in its time vector.
#[derive(Clone, Debug, Default)]
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
    /// Environments that lose their next slot here (abort protocol).
    forfeits: Vec<EnvId>,
}

impl SlotClock {
    /// Before the first slot.
    pub const fn new() -> SlotClock {
        SlotClock {
            started: false,
            index: 0,
            ends_at: 0,
            owner: EnvId::NONE,
            owner_done: false,
            grace_until: None,
            forfeits: Vec::new(),
        }
    }

    /// The environment entitled to the rest of this slot (0: default).
    pub fn entitled(&self) -> EnvId {
        if self.owner_done { EnvId::NONE } else { self.owner }
    }

    /// The slot's owner (0: nobody, or it forfeited the slot).
    pub fn owner(&self) -> EnvId {
        self.owner
    }

    /// The slot running.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether an epilogue's grace period is running (the slot is over).
    pub fn in_grace(&self) -> bool {
        self.grace_until.is_some()
    }

    /// When the clock needs the next [`Event::Timer`]: the grace period's
    /// end, else the slot's.
    pub fn deadline(&self) -> u64 {
        self.grace_until.unwrap_or(self.ends_at)
    }

    /// `env` hands the rest of the slot away (a directed yield): if it owns
    /// the slot, it is done with it.
    pub fn give_away(&mut self, env: EnvId) {
        if env == self.owner {
            self.owner_done = true;
        }
    }

    /// The epilogue could not be delivered: the grace period is over at
    /// once (the next step applies the abort protocol).
    pub fn abort_now(&mut self) {
        self.grace_until = Some(0);
    }

    /// The environments that forfeit their next slot here.
    pub fn forfeits(&self) -> &[EnvId] {
        &self.forfeits
    }

    /// One decision: `event` happened at `now`, `woke` vCPUs just woke up
    /// (they are at the front of the ready queue).
    pub fn step(
        &mut self,
        event: Event,
        now: u64,
        woke: usize,
        view: &impl View,
        times: Times,
    ) -> Decision {
        let yielded = event == Event::Yield;
        let current = view.current().map(|c| Running { owes_yield: c.owes_yield && !yielded, ..c });
        let d = Decision {
            yielded: yielded && current.is_some(),
            resume: current.is_some(),
            ..Decision::default()
        };
        // An epilogue is running: did it yield, or is its time up?
        if let Some(deadline) = self.grace_until {
            if current.is_none() || yielded {
                self.grace_until = None;
                return self.next_slot(d, now, current, view, times);
            }
            if now >= deadline {
                self.grace_until = None;
                let mut d = d;
                if let Some(c) = current {
                    d.overrun = Some(self.index);
                    self.forfeit(c.env, view);
                }
                return self.next_slot(d, now, current, view, times);
            }
            return d;
        }
        // The slot is over.
        if !self.started || now >= self.ends_at {
            let mut d = d;
            if let Some(c) = current
                && self.started
                && !yielded
                && c.env == self.entitled()
                && !c.in_call
                && c.epilogue != 0
            {
                if c.owes_yield {
                    // Still inside the epilogue it was stopped in: no new
                    // upcall (they would pile up on its stack); charged
                    // again.
                    d.overrun = Some(self.index);
                    self.forfeit(c.env, view);
                } else {
                    d.epilogue = Some(c.epilogue);
                    self.grace_until = Some(now.saturating_add(times.grace));
                    return d;
                }
            }
            return self.next_slot(d, now, current, view, times);
        }
        // Within the slot.
        if yielded {
            if let Some(c) = current {
                self.give_away(c.env);
            }
            return self.pick(d, current, usize::MAX, view).0;
        }
        let Some(c) = current else {
            return self.pick(d, None, usize::MAX, view).0;
        };
        if woke > 0 && c.env != self.entitled() {
            // Woken vCPUs are at the front of the queue; the preempted one
            // goes right behind them.
            return self.pick(d, current, woke, view).0;
        }
        d
    }

    /// Parks `current` (if any) at `at` and picks who runs for the rest of
    /// the slot: its owner if it is ready and entitled, else the first
    /// taking default time. Also returns the vCPU picked and its
    /// environment.
    fn pick(
        &self,
        mut d: Decision,
        current: Option<Running>,
        at: usize,
        view: &impl View,
    ) -> (Decision, Option<(Who, EnvId)>) {
        let ready = view.ready();
        let len = view.ready_len();
        let parked = current.map(|c| Candidate { env: c.env, default_time: c.default_time });
        let p = if parked.is_some() { at.min(len) } else { len };
        if parked.is_some() {
            d.park = Some(at);
        }
        let queue = ready.clone().take(p).chain(parked).chain(ready.skip(p));
        let choice = timevec::pick(self.entitled(), queue.clone());
        d.run = choice;
        d.resume = choice.is_some();
        let picked = choice.map(|i| {
            let who = match parked {
                Some(_) if i == p => Who::Current,
                Some(_) if i > p => Who::Ready(i - 1),
                _ => Who::Ready(i),
            };
            (who, queue.clone().nth(i).map_or(EnvId::NONE, |c| c.env))
        });
        (d, picked)
    }

    /// Parks `current` at the back, starts the next slot and picks who runs
    /// in it.
    fn next_slot(
        &mut self,
        d: Decision,
        now: u64,
        current: Option<Running>,
        view: &impl View,
        times: Times,
    ) -> Decision {
        let len = view.slots().max(1);
        self.index = if self.started { (self.index + 1) % len } else { 0 };
        self.started = true;
        self.ends_at = now.saturating_add(times.slot);
        self.owner_done = false;
        self.grace_until = None;
        let mut owner = view.owner(self.index);
        if !owner.is_none()
            && let Some(i) = self.forfeits.iter().position(|&e| e == owner)
        {
            self.forfeits.swap_remove(i);
            owner = EnvId::NONE;
        }
        self.owner = owner;
        let (mut d, picked) =
            self.pick(Decision { slot_started: Some(self.index), ..d }, current, usize::MAX, view);
        if let Some((who, env)) = picked
            && !owner.is_none()
            && env == owner
        {
            d.owner_started = true;
            let (entry, in_call) = view.prologue(who);
            if entry != 0 && !in_call {
                d.prologue = Some(entry);
            }
        }
        d
    }

    /// Records that `env` forfeits its next slot here. Entries of
    /// environments that no longer own a slot here (they freed them or
    /// ended) are dropped once the list grows, so it stays small.
    fn forfeit(&mut self, env: EnvId, view: &impl View) {
        self.forfeits.push(env);
        if self.forfeits.len() > 32 {
            self.forfeits.retain(|&e| view.owns_a_slot(e));
        }
    }
}

#[cfg(test)]
mod tests;
