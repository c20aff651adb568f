//! The reverse map of one frame: where it is mapped, as a set of
//! [`Mapping`]s ordered by environment, then address.
//!
//! Almost every frame is mapped once, by its owner, or twice (its owner and
//! a forked child sharing it copy-on-write). A `BTreeSet` allocates a node
//! on its first insert and costs a tree search per insert and remove (a
//! trip through the kernel heap on every first-touch fault, and a few
//! hundred instructions per page on every fork and exit); this set holds up
//! to [`INLINE`] mappings in a sorted inline array and moves to a
//! `BTreeSet` only when a third arrives. It moves back to the array once the
//! tree is down to one mapping (not at two: a frame that goes back and
//! forth between two and three holders does not move each time).

use crate::ownership::Mapping;
use alloc::collections::BTreeSet;
use alloc::collections::btree_set;
use core::ops::RangeBounds;

/// How many mappings are held without a heap allocation (the inline
/// operations are written out for exactly two).
pub const INLINE: usize = 2;

/// The unused slots of the inline array (never read).
const VACANT: Mapping = Mapping { env: crate::ownership::EnvId(0), va: 0 };

/// A frame's mappings (see the module documentation).
#[derive(Clone, Debug)]
pub enum MappingSet {
    /// At most [`INLINE`] mappings, sorted, in `items[..len]`.
    Inline {
        /// How many of `items` are used.
        len: u8,
        /// The mappings in order, then vacant slots.
        items: [Mapping; INLINE],
    },
    /// More than [`INLINE`] at some point, and more than one now.
    Tree(BTreeSet<Mapping>),
}

impl Default for MappingSet {
    fn default() -> MappingSet {
        MappingSet::new()
    }
}

impl PartialEq for MappingSet {
    fn eq(&self, other: &MappingSet) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for MappingSet {}

/// The mappings of a [`MappingSet`] in order.
pub enum Iter<'a> {
    /// Of the inline array.
    Inline(core::slice::Iter<'a, Mapping>),
    /// Of the tree.
    Tree(btree_set::Iter<'a, Mapping>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Mapping;

    #[inline]
    fn next(&mut self) -> Option<&'a Mapping> {
        match self {
            Iter::Inline(it) => it.next(),
            Iter::Tree(it) => it.next(),
        }
    }
}

/// The mappings of a [`MappingSet`] in a range, in order.
pub enum RangeIter<'a, R> {
    /// Of the inline array, filtered by the range.
    Inline(core::slice::Iter<'a, Mapping>, R),
    /// Of the tree.
    Tree(btree_set::Range<'a, Mapping>),
}

impl<'a, R: RangeBounds<Mapping>> Iterator for RangeIter<'a, R> {
    type Item = &'a Mapping;

    #[inline]
    fn next(&mut self) -> Option<&'a Mapping> {
        match self {
            RangeIter::Inline(it, range) => it.find(|m| range.contains(m)),
            RangeIter::Tree(it) => it.next(),
        }
    }
}

impl MappingSet {
    /// An empty set (allocates nothing).
    pub const fn new() -> MappingSet {
        MappingSet::Inline { len: 0, items: [VACANT; INLINE] }
    }

    /// Adds `m`; `false` if it was there.
    pub fn insert(&mut self, m: Mapping) -> bool {
        match self {
            MappingSet::Inline { len, items } => {
                // Written out for two slots: no search, no memmove call.
                match *len {
                    0 => items[0] = m,
                    1 if items[0] == m => return false,
                    1 if m < items[0] => {
                        items[1] = items[0];
                        items[0] = m;
                    }
                    1 => items[1] = m,
                    _ if items[0] == m || items[1] == m => return false,
                    _ => {
                        let mut set = BTreeSet::from(*items);
                        set.insert(m);
                        *self = MappingSet::Tree(set);
                        return true;
                    }
                }
                *len += 1;
                true
            }
            MappingSet::Tree(set) => set.insert(m),
        }
    }

    /// Removes `m`; `false` if it was not there.
    pub fn remove(&mut self, m: &Mapping) -> bool {
        match self {
            MappingSet::Inline { len, items } => {
                match *len {
                    1 | 2 if items[0] == *m => items[0] = items[1],
                    2 if items[1] == *m => {}
                    _ => return false,
                }
                items[1] = VACANT;
                *len -= 1;
                true
            }
            MappingSet::Tree(set) => {
                if !set.remove(m) {
                    return false;
                }
                if set.len() <= 1 {
                    let mut items = [VACANT; INLINE];
                    let len = set.len();
                    if let Some(first) = set.first() {
                        items[0] = *first;
                    }
                    *self = MappingSet::Inline { len: len as u8, items };
                }
                true
            }
        }
    }

    /// Number of mappings.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            MappingSet::Inline { len, .. } => usize::from(*len),
            MappingSet::Tree(set) => set.len(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mappings in order.
    #[inline]
    pub fn iter(&self) -> Iter<'_> {
        match self {
            MappingSet::Inline { len, items } => Iter::Inline(items[..usize::from(*len)].iter()),
            MappingSet::Tree(set) => Iter::Tree(set.iter()),
        }
    }

    /// The mappings in `range`, in order.
    pub fn range<R: RangeBounds<Mapping>>(&self, range: R) -> RangeIter<'_, R> {
        match self {
            MappingSet::Inline { len, items } => {
                RangeIter::Inline(items[..usize::from(*len)].iter(), range)
            }
            MappingSet::Tree(set) => RangeIter::Tree(set.range(range)),
        }
    }

    /// Whether `env` has any mapping here.
    #[inline]
    pub fn has_env(&self, env: crate::ownership::EnvId) -> bool {
        match self {
            // Two compares, not a range iterator (every reclaimed mapping
            // of a shared frame asks).
            MappingSet::Inline { len, items } => {
                items[..usize::from(*len)].iter().any(|m| m.env == env)
            }
            MappingSet::Tree(set) => {
                set.range(Mapping { env, va: 0 }..=Mapping { env, va: u64::MAX }).next().is_some()
            }
        }
    }

    /// Whether any mapping here is not `except` (all of them if `None`).
    #[inline]
    pub fn any_but(&self, except: Option<Mapping>) -> bool {
        match self {
            MappingSet::Inline { len, items } => {
                items[..usize::from(*len)].iter().any(|m| Some(*m) != except)
            }
            MappingSet::Tree(set) => set.iter().any(|m| Some(*m) != except),
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
                prop_assert_eq!(s.has_env(EnvId(2)), b.iter().any(|x| x.env == EnvId(2)));
                for except in [None, Some(x), Some(m(2, 0))] {
                    prop_assert_eq!(s.any_but(except), b.iter().any(|y| Some(*y) != except));
                }
                // Inline whenever it holds at most one; never a tree of one.
                let inline = matches!(s, MappingSet::Inline { .. });
                prop_assert!(inline || s.len() > 1);
            }
        }
    }

    #[test]
    fn two_mappings_stay_inline_a_third_spills_and_one_comes_back() {
        let mut s = MappingSet::new();
        assert!(s.insert(m(2, 4096)));
        assert!(s.insert(m(1, 8192)));
        assert!(!s.insert(m(1, 8192)));
        assert!(matches!(s, MappingSet::Inline { len: 2, .. }));
        assert!(s.iter().eq([m(1, 8192), m(2, 4096)].iter()), "sorted");
        assert!(s.insert(m(3, 0)));
        assert!(matches!(s, MappingSet::Tree(_)));
        assert!(s.remove(&m(3, 0)));
        assert!(matches!(s, MappingSet::Tree(_)), "two: stays a tree (no thrash)");
        assert!(s.remove(&m(1, 8192)));
        assert!(matches!(s, MappingSet::Inline { len: 1, .. }));
        assert_eq!(s, {
            let mut t = MappingSet::new();
            t.insert(m(2, 4096));
            t
        });
        assert!(s.remove(&m(2, 4096)) && s.is_empty());
        assert!(!s.remove(&m(2, 4096)));
    }
}
