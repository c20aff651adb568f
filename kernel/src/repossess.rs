//! The rules of a repossession demand (memory as a revocable resource, see
//! `abi::repossess`): how much an environment owes, when the kernel may
//! take by force, which list entries one bounded step looks at, and how a
//! demand ends. The machine layer (`machine/env/repossess.rs`) reads the
//! list, takes the frames and posts the events; everything it decides is
//! asked of a [`Demand`], which is tested here on the host.
//!
//! A demand goes `Waiting` (before its deadline: only the environment's own
//! frees pay) → `Forcing` (the list is walked from its start, a window of
//! at most [`abi::repossess::FORCE_ENTRIES_PER_STEP`] entries and
//! [`abi::repossess::FORCE_FRAMES_PER_STEP`] frames per step; a frame
//! whose mappings take several steps stays `current`) → ended: `Settled`
//! (the debt is paid) or `Uncovered` (the walk reached the list's end, or
//! an unreadable entry, with frames still owed: the environment is killed).

use abi::repossess::FORCE_ENTRIES_PER_STEP;

/// Where a demand is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the deadline.
    Waiting,
    /// Taking by force; `next` is the first list index not looked at yet.
    Forcing {
        /// Next list index to read.
        next: u64,
        /// A frame being taken (its mappings go in several steps), with its
        /// list index.
        current: Option<(u64, u64)>,
    },
}

/// How a demand ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Paid: `taken` frames by force, the rest freed by the environment.
    Settled {
        /// Frames taken by force.
        taken: u64,
    },
    /// The list ran out with `owed` frames still owed (of `asked`).
    Uncovered {
        /// Frames the demand asked for.
        asked: u64,
        /// Frames still owed.
        owed: u64,
    },
}

/// One repossession demand on one environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    asked: u64,
    owed: u64,
    deadline: u64,
    taken: u64,
    phase: Phase,
}

/// What one forced step should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing yet (before the deadline).
    Wait,
    /// Go on taking the frame `frame` (list index `index`).
    Continue {
        /// The frame.
        frame: u64,
        /// Its list index.
        index: u64,
    },
    /// Read list entries `start .. start + count` and try them in order.
    Read {
        /// First index.
        start: u64,
        /// How many (≥ 1).
        count: u64,
    },
    /// The demand is over.
    Over(End),
}

impl Demand {
    /// A demand for `n` frames by TSC `deadline`; `None` for `n` = 0.
    pub fn new(n: u64, deadline: u64) -> Option<Demand> {
        (n > 0).then_some(Demand { asked: n, owed: n, deadline, taken: 0, phase: Phase::Waiting })
    }

    /// Frames still owed.
    pub fn owed(&self) -> u64 {
        self.owed
    }

    /// Frames asked for.
    pub fn asked(&self) -> u64 {
        self.asked
    }

    /// Frames taken by force so far.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// The deadline (TSC).
    pub fn deadline(&self) -> u64 {
        self.deadline
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The environment freed a data frame: whether it paid one frame of the
    /// debt (and so the quota shrinks by one).
    pub fn paid_by_free(&mut self) -> bool {
        if self.owed == 0 {
            return false;
        }
        self.owed -= 1;
        true
    }

    /// The environment's own count of frames owed, which its frees lower
    /// between steps: the demand follows it down (never up).
    pub fn sync_owed(&mut self, owed: u64) {
        self.owed = self.owed.min(owed);
    }

    /// Whether the demand is paid.
    pub fn is_settled(&self) -> bool {
        self.owed == 0
    }

    /// What the next step does at TSC `now` with a list of `list_len`
    /// entries (0 if none is registered). Enters `Forcing` at the deadline.
    pub fn plan(&mut self, now: u64, list_len: u64) -> Plan {
        if self.owed == 0 {
            return Plan::Over(End::Settled { taken: self.taken });
        }
        if self.phase == Phase::Waiting {
            if now < self.deadline {
                return Plan::Wait;
            }
            self.phase = Phase::Forcing { next: 0, current: None };
        }
        let Phase::Forcing { next, current } = self.phase else { unreachable!() };
        if let Some((frame, index)) = current {
            return Plan::Continue { frame, index };
        }
        if next >= list_len {
            return Plan::Over(End::Uncovered { asked: self.asked, owed: self.owed });
        }
        Plan::Read { start: next, count: (list_len - next).min(FORCE_ENTRIES_PER_STEP) }
    }

    /// The step started taking `frame` (list `index`) but its mappings need
    /// more steps: the next plan is [`Plan::Continue`].
    pub fn started(&mut self, frame: u64, index: u64) {
        if let Phase::Forcing { current, .. } = &mut self.phase {
            *current = Some((frame, index));
        }
    }

    /// Frame at list `index` taken (or, if it went otherwise, `paid`
    /// false: dropped from `current` without paying).
    pub fn finished_frame(&mut self, paid: bool) {
        if let Phase::Forcing { current, .. } = &mut self.phase {
            *current = None;
        }
        if paid && self.owed > 0 {
            self.owed -= 1;
            self.taken += 1;
        }
    }

    /// The entries before `index` have been looked at.
    pub fn advance(&mut self, index: u64) {
        if let Phase::Forcing { next, .. } = &mut self.phase {
            *next = (*next).max(index);
        }
    }

    /// The list could not be read at `index` (unmapped, say): the walk ends
    /// there, as at the list's end.
    pub fn list_ends_at(&mut self, index: u64) -> End {
        if let Phase::Forcing { next, .. } = &mut self.phase {
            *next = index;
        }
        if self.owed == 0 {
            End::Settled { taken: self.taken }
        } else {
            End::Uncovered { asked: self.asked, owed: self.owed }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::repossess::FORCE_FRAMES_PER_STEP;
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[test]
    fn zero_is_no_demand() {
        assert!(Demand::new(0, 5).is_none());
    }

    #[test]
    fn waits_then_forces() {
        let mut d = Demand::new(2, 100).unwrap();
        assert_eq!(d.plan(99, 10), Plan::Wait);
        assert!(d.paid_by_free());
        assert_eq!(d.owed(), 1);
        assert_eq!(d.plan(100, 10), Plan::Read { start: 0, count: 10 });
        d.started(7, 0);
        assert_eq!(d.plan(101, 10), Plan::Continue { frame: 7, index: 0 });
        d.finished_frame(true);
        d.advance(1);
        assert_eq!(d.plan(102, 10), Plan::Over(End::Settled { taken: 1 }));
        assert!(!d.paid_by_free());
    }

    #[test]
    fn uncovered_at_the_end_of_the_list() {
        let mut d = Demand::new(3, 0).unwrap();
        assert_eq!(d.plan(0, 0), Plan::Over(End::Uncovered { asked: 3, owed: 3 }));
        let mut d = Demand::new(3, 0).unwrap();
        assert_eq!(d.plan(0, 100), Plan::Read { start: 0, count: FORCE_ENTRIES_PER_STEP });
        assert_eq!(d.list_ends_at(0), End::Uncovered { asked: 3, owed: 3 });
    }

    /// A machine layer in miniature: the environment owns `owned`; the
    /// list is `list`; a step reads its window and takes what it owns, in
    /// order, one frame at a time, a frame needing `cost[f]` steps. Frees
    /// by the environment interleave.
    struct Sim {
        owned: BTreeSet<u64>,
        list: Vec<u64>,
        taken: Vec<(u64, u64)>,
        progress: Option<(u64, u32)>,
        steps_on_current: u32,
        frees: u64,
    }

    impl Sim {
        fn step(&mut self, d: &mut Demand, now: u64, cost: u32) -> Option<End> {
            let len = self.list.len() as u64;
            match d.plan(now, len) {
                Plan::Wait => None,
                Plan::Over(end) => Some(end),
                Plan::Continue { frame, index } => {
                    assert_eq!(self.progress.map(|p| p.0), Some(frame));
                    self.steps_on_current += 1;
                    if self.steps_on_current >= cost {
                        let paid = self.owned.remove(&frame);
                        if paid {
                            self.taken.push((frame, index));
                        }
                        self.progress = None;
                        d.finished_frame(paid);
                    }
                    None
                }
                Plan::Read { start, count } => {
                    assert!((1..=FORCE_ENTRIES_PER_STEP).contains(&count));
                    let mut frames = 0;
                    let mut looked = start;
                    for i in start..start + count {
                        if frames >= FORCE_FRAMES_PER_STEP || d.owed() == 0 {
                            break;
                        }
                        looked = i + 1;
                        let f = self.list[i as usize];
                        if !self.owned.contains(&f) {
                            continue;
                        }
                        if cost > 1 {
                            d.started(f, i);
                            d.advance(i + 1);
                            self.progress = Some((f, 0));
                            self.steps_on_current = 1;
                            return None;
                        }
                        self.owned.remove(&f);
                        self.taken.push((f, i));
                        d.finished_frame(true);
                        frames += 1;
                    }
                    assert!(frames <= FORCE_FRAMES_PER_STEP);
                    d.advance(looked);
                    None
                }
            }
        }

        fn free_one(&mut self, d: &mut Demand) {
            if let Some(&f) = self.owned.iter().next() {
                self.owned.remove(&f);
                if d.paid_by_free() {
                    self.frees += 1;
                }
            }
        }
    }

    proptest! {
        /// Whatever the list holds and however frees interleave: the frames
        /// taken are owned ones, in list order, each once; the debt is
        /// exactly paid (taken + frees = asked) when settled; "uncovered"
        /// only if the list held too few owned frames; every step is
        /// bounded; the walk ends.
        #[test]
        fn demands_end_paid_or_uncovered(
            owned in proptest::collection::btree_set(0u64..64, 0..40),
            list in proptest::collection::vec(0u64..80, 0..120),
            n in 1u64..40,
            frees in proptest::collection::vec(any::<bool>(), 0..200),
            deadline in 0u64..20,
            cost in 1u32..4,
        ) {
            let mut d = Demand::new(n, deadline).unwrap();
            let mut sim = Sim {
                owned: owned.clone(),
                list: list.clone(),
                taken: Vec::new(),
                progress: None,
                steps_on_current: 0,
                frees: 0,
            };
            let mut end = None;
            for now in 0..10_000u64 {
                if frees.get(now as usize).copied().unwrap_or(false) {
                    sim.free_one(&mut d);
                }
                if let Some(e) = sim.step(&mut d, now, cost) {
                    end = Some(e);
                    break;
                }
            }
            let end = end.expect("the demand ends");
            // Taken frames: owned at the start, distinct, in list order.
            let idx: Vec<u64> = sim.taken.iter().map(|t| t.1).collect();
            prop_assert!(idx.windows(2).all(|w| w[0] < w[1]));
            let frames: BTreeSet<u64> = sim.taken.iter().map(|t| t.0).collect();
            prop_assert_eq!(frames.len(), sim.taken.len());
            prop_assert!(frames.is_subset(&owned));
            prop_assert_eq!(d.taken(), sim.taken.len() as u64);
            prop_assert_eq!(d.taken() + sim.frees + d.owed(), n);
            match end {
                End::Settled { taken } => {
                    prop_assert_eq!(d.owed(), 0);
                    prop_assert_eq!(taken, sim.taken.len() as u64);
                }
                End::Uncovered { asked, owed } => {
                    prop_assert_eq!(asked, n);
                    prop_assert!(owed > 0);
                    // Every owned list entry still owned was looked at
                    // and could not be taken: none is left to take.
                    prop_assert!(list.iter().all(|f| !sim.owned.contains(f)));
                }
            }
            // Without frees, the frames taken are exactly the first owned
            // entries of the list, in order.
            if sim.frees == 0 {
                let mut seen = BTreeSet::new();
                let expect: Vec<u64> = list
                    .iter()
                    .copied()
                    .filter(|f| owned.contains(f) && seen.insert(*f))
                    .take(n as usize)
                    .collect();
                let got: Vec<u64> = sim.taken.iter().map(|t| t.0).collect();
                prop_assert_eq!(got, expect);
            }
        }
    }
}
