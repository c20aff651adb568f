//! The slot clock driven by a model run queue, which applies every
//! [`Decision`] as `machine/sched.rs` does, checking the abort protocol's
//! rules at each step.

use super::*;
use alloc::collections::VecDeque;
use alloc::vec;
use proptest::prelude::*;

extern crate std;
use std::collections::HashMap;

/// A model vCPU (one per environment: `env` = its index + 1).
#[derive(Clone, Debug)]
struct V {
    env: EnvId,
    default_time: bool,
    epilogue: u64,
    prologue: u64,
    in_call: bool,
    owes_yield: bool,
    /// Never yields, sleeps or calls: ignores its epilogue.
    rude: bool,
}

struct Queue<'a> {
    current: &'a Option<V>,
    ready: &'a VecDeque<V>,
    owners: &'a [EnvId],
}

impl View for Queue<'_> {
    fn current(&self) -> Option<Running> {
        self.current.as_ref().map(|v| Running {
            env: v.env,
            default_time: v.default_time,
            in_call: v.in_call,
            owes_yield: v.owes_yield,
            epilogue: v.epilogue,
        })
    }
    fn ready(&self) -> impl Iterator<Item = Candidate> + Clone {
        self.ready.iter().map(|v| Candidate { env: v.env, default_time: v.default_time })
    }
    fn ready_len(&self) -> usize {
        self.ready.len()
    }
    fn prologue(&self, who: Who) -> (u64, bool) {
        let v = match who {
            Who::Current => self.current.as_ref().unwrap(),
            Who::Ready(i) => &self.ready[i],
        };
        (v.prologue, v.in_call)
    }
    fn slots(&self) -> usize {
        self.owners.len()
    }
    fn owner(&self, index: usize) -> EnvId {
        self.owners.get(index).copied().unwrap_or(EnvId::NONE)
    }
    fn owns_a_slot(&self, env: EnvId) -> bool {
        self.owners.contains(&env)
    }
}

const TIMES: Times = Times { slot: 1000, grace: 50 };

#[derive(Clone, Debug)]
enum Action {
    /// The timer fires at the clock's deadline.
    Timer,
    /// A timer fires this much later (a ring timer, say: maybe early).
    Tick(u64),
    /// The running vCPU yields (unless rude).
    Yield,
    /// The running vCPU sleeps (unless rude).
    Sleep,
    /// A sleeper wakes.
    Wake(usize),
    /// Anything else.
    Other,
    /// The running vCPU enters or leaves a protected control transfer.
    ToggleCall,
}

struct Sim {
    clock: SlotClock,
    current: Option<V>,
    ready: VecDeque<V>,
    sleeping: Vec<V>,
    owners: Vec<EnvId>,
    now: u64,
    count: usize,
    /// Real start of the slot running.
    slot_start: Option<u64>,
    /// Overruns charged per environment.
    overruns: HashMap<EnvId, u64>,
    /// Forfeits owed per environment, as the rules say.
    owed: HashMap<EnvId, u32>,
    /// A rude owner got its epilogue in this slot: it must be charged for
    /// it when the grace period ends.
    grace_of: Option<(EnvId, usize)>,
}

impl Sim {
    fn new(vcpus: Vec<V>, owners: Vec<EnvId>) -> Sim {
        Sim {
            clock: SlotClock::default(),
            count: vcpus.len(),
            current: None,
            ready: vcpus.into(),
            sleeping: Vec::new(),
            owners,
            now: 0,
            slot_start: None,
            overruns: HashMap::new(),
            owed: HashMap::new(),
            grace_of: None,
        }
    }

    fn all(&self) -> impl Iterator<Item = &V> {
        self.current.iter().chain(self.ready.iter()).chain(self.sleeping.iter())
    }

    fn step(&mut self, event: Event, woke: usize) {
        let before = self.current.clone();
        let (index, entitled) = (self.clock.index(), self.clock.entitled());
        let view = Queue { current: &self.current, ready: &self.ready, owners: &self.owners };
        let d = self.clock.step(event, self.now, woke, &view, TIMES);

        // Apply it as the machine does.
        if d.yielded {
            self.current.as_mut().unwrap().owes_yield = false;
        }
        if let Some(slot) = d.overrun {
            let v = self.current.as_ref().expect("an overrun charges the running vCPU");
            assert!(v.rude, "a vCPU that yields in time is never charged: {d:?}");
            assert_eq!(slot, index, "charged for the slot that ended");
            *self.overruns.entry(v.env).or_default() += 1;
            *self.owed.entry(v.env).or_default() += 1;
        }
        if let Some(entry) = d.epilogue {
            let v = self.current.as_mut().expect("an epilogue goes to the running vCPU");
            assert_eq!((entry, v.env, v.in_call), (v.epilogue, entitled, false));
            assert!(!v.owes_yield, "no new epilogue while it owes a yield");
            v.owes_yield = true;
            if v.rude {
                self.grace_of = Some((v.env, index));
            }
        }
        if let Some(at) = d.park {
            let v = self.current.take().expect("park needs a running vCPU");
            let at = at.min(self.ready.len());
            self.ready.insert(at, v);
        }
        if let Some(i) = d.slot_started {
            // Every slot lasts its full length from its real start, so an
            // overrun never shortens the next one.
            if let Some(start) = self.slot_start {
                assert!(self.now >= start + TIMES.slot, "slot cut short");
            }
            self.slot_start = Some(self.now);
            assert_eq!(self.clock.deadline(), self.now + TIMES.slot);
            assert_eq!(i, self.clock.index());
            // A rude owner running to its slot's end is charged exactly
            // once for it, by the time the next slot starts.
            if let Some((env, slot)) = self.grace_of.take() {
                assert_eq!(d.overrun, Some(slot));
                assert_eq!(before.as_ref().map(|v| v.env), Some(env));
            }
            if let Some(b) = &before
                && b.rude
                && b.env == entitled
            {
                assert_eq!(d.overrun, Some(index), "a rude owner at its slot's end is charged");
            }
            // The penalty: the next slot it owns is run as an unowned one.
            let table = self.owners[i];
            if !table.is_none() {
                let owed = self.owed.entry(table).or_default();
                if *owed > 0 {
                    *owed -= 1;
                    assert_eq!(self.clock.owner(), EnvId::NONE, "a forfeited slot has no owner");
                } else {
                    assert_eq!(self.clock.owner(), table);
                }
            }
        }
        if let Some(i) = d.run {
            assert!(self.current.is_none());
            self.current = Some(self.ready.remove(i).expect("a ready vCPU"));
        }
        if d.slot_started.is_some() {
            // The owner runs in its slot when it is ready, with its
            // prologue.
            let owner = self.clock.owner();
            let ready =
                !owner.is_none() && self.current.iter().chain(&self.ready).any(|v| v.env == owner);
            assert_eq!(d.owner_started, ready);
            if ready {
                let v = self.current.as_ref().unwrap();
                assert_eq!(v.env, owner);
                let want = (v.prologue != 0 && !v.in_call).then_some(v.prologue);
                assert_eq!(d.prologue, want);
            }
        } else {
            assert!(!d.owner_started && d.prologue.is_none());
        }
        assert_eq!(d.resume, self.current.is_some());
        // Nothing is lost.
        assert_eq!(self.all().count(), self.count);
        let mut envs: Vec<_> = self.all().map(|v| v.env).collect();
        envs.sort_unstable();
        envs.dedup();
        assert_eq!(envs.len(), self.count);
        // The vCPU entitled to the slot runs whenever it can.
        let entitled = self.clock.entitled();
        if !self.clock.in_grace()
            && !entitled.is_none()
            && self.ready.iter().any(|v| v.env == entitled)
        {
            panic!("{entitled} is entitled and ready but {:?} runs", self.current);
        }
        // A polite vCPU yields within its grace period.
        if d.epilogue.is_some() && self.current.as_ref().is_some_and(|v| !v.rude) {
            self.step(Event::Yield, 0);
        }
    }

    fn act(&mut self, action: &Action) {
        let polite = self.current.as_ref().is_some_and(|v| !v.rude);
        match *action {
            Action::Timer => {
                self.now = self.now.max(self.clock.deadline());
                self.step(Event::Timer, 0);
            }
            Action::Tick(dt) => {
                self.now += dt;
                self.step(Event::Timer, 0);
            }
            Action::Yield if polite => {
                let me = self.current.as_ref().unwrap().env;
                let owner_yields = me == self.clock.owner()
                    && !self.clock.in_grace()
                    && self.slot_start.is_some_and(|s| self.now < s + TIMES.slot);
                let others = self.ready.iter().any(|v| v.default_time);
                let start = self.slot_start;
                self.step(Event::Yield, 0);
                // The owner that yields gives up the rest of its slot.
                if owner_yields && self.slot_start == start {
                    assert_eq!(self.clock.entitled(), EnvId::NONE);
                    if others {
                        assert_ne!(self.current.as_ref().map(|v| v.env), Some(me));
                    }
                }
            }
            Action::Sleep if polite => {
                let mut v = self.current.take().unwrap();
                v.owes_yield = false;
                self.sleeping.push(v);
                self.step(Event::Other, 0);
            }
            Action::Wake(k) if !self.sleeping.is_empty() => {
                let v = self.sleeping.swap_remove(k % self.sleeping.len());
                let default_time = v.default_time;
                let env = v.env;
                self.ready.push_front(v);
                let preempts = self.clock.entitled().is_none()
                    && !self.clock.in_grace()
                    && self.current.is_some()
                    && default_time;
                self.step(Event::Other, 1);
                // A vCPU that wakes preempts a default-time runner.
                if preempts && self.slot_start.is_some_and(|s| self.now < s + TIMES.slot) {
                    assert_eq!(self.current.as_ref().map(|v| v.env), Some(env));
                }
            }
            Action::ToggleCall if polite => {
                let v = self.current.as_mut().unwrap();
                v.in_call = !v.in_call;
            }
            _ => self.step(Event::Other, 0),
        }
    }
}

fn vcpu() -> impl Strategy<Value = (bool, bool, bool, bool)> {
    (any::<bool>(), any::<bool>(), any::<bool>(), prop::bool::weighted(0.3))
}

fn setup() -> impl Strategy<Value = (Vec<V>, Vec<EnvId>)> {
    prop::collection::vec(vcpu(), 1..6).prop_flat_map(|flags| {
        let n = flags.len() as u32;
        let vcpus: Vec<V> = flags
            .into_iter()
            .enumerate()
            .map(|(i, (default_time, epilogue, prologue, rude))| V {
                env: EnvId(i as u32 + 1),
                default_time,
                epilogue: if epilogue || rude { 0x40_1000 } else { 0 },
                prologue: if prologue { 0x40_2000 } else { 0 },
                in_call: false,
                owes_yield: false,
                rude,
            })
            .collect();
        (Just(vcpus), prop::collection::vec((0..=n).prop_map(EnvId), 1..8))
    })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => Just(Action::Timer),
        2 => (0u64..1500).prop_map(Action::Tick),
        2 => Just(Action::Yield),
        2 => Just(Action::Sleep),
        3 => any::<usize>().prop_map(Action::Wake),
        1 => Just(Action::Other),
        1 => Just(Action::ToggleCall),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// Every rule of the module docs, checked at every step of a random
    /// run: nothing lost, full-length slots, the owner first, the abort
    /// protocol's charge and forfeit, wake-up preemption.
    #[test]
    fn the_rules_hold((vcpus, owners) in setup(), actions in prop::collection::vec(action(), 0..150)) {
        let mut sim = Sim::new(vcpus, owners);
        sim.step(Event::Other, 0);
        for a in &actions {
            sim.act(a);
        }
    }

    /// An owner that never yields is charged once per slot of its own that
    /// it runs to the end, and loses every other one of them.
    #[test]
    fn a_rude_owner_is_charged_once_per_slot_end(len in 1usize..6, mine in 0usize..6, rounds in 1usize..6) {
        let mine = mine % len;
        let mut owners = vec![EnvId::NONE; len];
        owners[mine] = EnvId(1);
        let rude = V { env: EnvId(1), default_time: false, epilogue: 1 << 22, prologue: 0, in_call: false, owes_yield: false, rude: true };
        let polite = V { env: EnvId(2), default_time: true, rude: false, epilogue: 0, ..rude.clone() };
        let mut sim = Sim::new(vec![rude, polite], owners);
        sim.step(Event::Other, 0);
        for _ in 0..rounds * 2 * len + 2 {
            sim.act(&Action::Timer);
        }
        // Its slot came round at least `rounds * 2` times: it ran every
        // other one (the rest were forfeited) and was charged once each.
        let ran = sim.overruns.get(&EnvId(1)).copied().unwrap_or(0);
        prop_assert!(ran >= rounds as u64, "charged {} times in {} cycles", ran, rounds * 2);
        prop_assert!(ran <= (rounds as u64 + 1));
    }
}

#[test]
fn an_overrun_then_a_forfeit_then_a_charge_without_upcall() {
    // Slot 0 is env 1's (rude), slot 1 nobody's; env 2 takes default time.
    let rude = V {
        env: EnvId(1),
        default_time: false,
        epilogue: 0x40_1000,
        prologue: 0x40_2000,
        in_call: false,
        owes_yield: false,
        rude: true,
    };
    let polite = V {
        env: EnvId(2),
        default_time: true,
        rude: false,
        epilogue: 0,
        prologue: 0,
        ..rude.clone()
    };
    let mut sim = Sim::new(vec![polite, rude], vec![EnvId(1), EnvId::NONE]);
    sim.step(Event::Other, 0);
    assert_eq!(sim.current.as_ref().map(|v| v.env), Some(EnvId(1)));
    // Its slot ends: epilogue, grace.
    sim.act(&Action::Timer);
    assert!(sim.clock.in_grace());
    assert_eq!(sim.clock.deadline(), 1050);
    // The grace period ends: charged, slot 1 starts at 1050 for 1000.
    sim.act(&Action::Timer);
    assert_eq!((sim.overruns[&EnvId(1)], sim.clock.index(), sim.clock.deadline()), (1, 1, 2050));
    assert_eq!(sim.current.as_ref().map(|v| v.env), Some(EnvId(2)));
    // Slot 0 again: forfeited, so env 2 runs on.
    sim.act(&Action::Timer);
    assert_eq!((sim.clock.index(), sim.clock.owner()), (0, EnvId::NONE));
    sim.act(&Action::Timer);
    sim.act(&Action::Timer);
    // Its own again: it runs (prologue), still owing the yield...
    assert_eq!((sim.clock.index(), sim.clock.owner()), (0, EnvId(1)));
    assert_eq!(sim.current.as_ref().map(|v| v.env), Some(EnvId(1)));
    // ... so at the end it is charged at once, with no new epilogue.
    sim.act(&Action::Timer);
    assert!(!sim.clock.in_grace());
    assert_eq!((sim.overruns[&EnvId(1)], sim.clock.index()), (2, 1));
    assert_eq!(sim.clock.forfeits(), &[EnvId(1)]);
}
