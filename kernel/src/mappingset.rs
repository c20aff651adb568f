//! The reverse map of one frame: where it is mapped, as a set of
//! [`Mapping`]s ordered by environment, then address.
//!
//! Almost every frame is mapped once, by its owner. A `BTreeSet` allocates
//! a node on its first insert (a trip through the kernel heap on every
//! first-touch fault and every `Map` of a frame mapped nowhere); this set
//! holds a single mapping inline and moves to a `BTreeSet` only at the
//! second, and stays one from then on (a frame shared once tends to be
//! shared again; no back-and-forth between the two shapes).

use crate::ownership::Mapping;
use alloc::collections::BTreeSet;
use core::ops::RangeBounds;

/// A frame's mappings (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum MappingSet {
    /// No mapping or one.
    #[default]
    Small0,
    /// Exactly one mapping.
    Small1(Mapping),
    /// Any number, once there were two.
    Tree(BTreeSet<Mapping>),
}

impl MappingSet {
    /// An empty set (allocates nothing).
    pub const fn new() -> MappingSet {
        MappingSet::Small0
    }

    /// Adds `m`; `false` if it was there.
    pub fn insert(&mut self, m: Mapping) -> bool {
        match self {
            MappingSet::Small0 => {
                *self = MappingSet::Small1(m);
                true
            }
            MappingSet::Small1(one) if *one == m => false,
            MappingSet::Small1(one) => {
                let set = BTreeSet::from([*one, m]);
                *self = MappingSet::Tree(set);
                true
            }
            MappingSet::Tree(set) => set.insert(m),
        }
    }

    /// Removes `m`; `false` if it was not there.
    pub fn remove(&mut self, m: &Mapping) -> bool {
        match self {
            MappingSet::Small1(one) if one == m => {
                *self = MappingSet::Small0;
                true
            }
            MappingSet::Tree(set) => set.remove(m),
            _ => false,
        }
    }

    /// Number of mappings.
    pub fn len(&self) -> usize {
        match self {
            MappingSet::Small0 => 0,
            MappingSet::Small1(_) => 1,
            MappingSet::Tree(set) => set.len(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mappings in order.
    pub fn iter(&self) -> impl Iterator<Item = &Mapping> {
        let (one, tree) = self.parts();
        one.into_iter().chain(tree.into_iter().flatten())
    }

    /// The mappings in `range`, in order.
    pub fn range<R: RangeBounds<Mapping> + Clone>(
        &self,
        range: R,
    ) -> impl Iterator<Item = &Mapping> {
        let (one, tree) = self.parts();
        let r = range.clone();
        one.into_iter()
            .filter(move |m| r.contains(m))
            .chain(tree.map(|t| t.range(range)).into_iter().flatten())
    }

    fn parts(&self) -> (Option<&Mapping>, Option<&BTreeSet<Mapping>>) {
        match self {
            MappingSet::Small0 => (None, None),
            MappingSet::Small1(one) => (Some(one), None),
            MappingSet::Tree(set) => (None, Some(set)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::EnvId;
    use proptest::prelude::*;

    fn m(env: u32, va: u64) -> Mapping {
        Mapping { env: EnvId(env), va }
    }

    proptest! {
        /// Behaves as a `BTreeSet`: answers, length, order, ranges.
        #[test]
        fn model(ops in proptest::collection::vec((any::<bool>(), 1u32..4, 0u64..6), 1..60)) {
            let mut s = MappingSet::new();
            let mut b = BTreeSet::new();
            for (add, env, va) in ops {
                let x = m(env, va);
                if add {
                    prop_assert_eq!(s.insert(x), b.insert(x));
                } else {
                    prop_assert_eq!(s.remove(&x), b.remove(&x));
                }
                prop_assert_eq!(s.len(), b.len());
                prop_assert!(s.iter().eq(b.iter()));
                let r = m(2, 0)..=m(2, u64::MAX);
                prop_assert!(s.range(r.clone()).eq(b.range(r)));
            }
        }
    }

    #[test]
    fn one_mapping_stays_inline() {
        let mut s = MappingSet::new();
        assert!(s.insert(m(1, 4096)));
        assert!(matches!(s, MappingSet::Small1(_)));
        assert!(s.remove(&m(1, 4096)));
        assert!(s.is_empty() && matches!(s, MappingSet::Small0));
    }
}
