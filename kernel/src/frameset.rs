//! A set of frame numbers whose insert and remove cost the same every time:
//! the frames one environment owns (`Env::owned`, walked when it dies).
//!
//! **Why not a `BTreeSet`.** A B-tree leaf holds 11 keys. When the number of
//! frames an environment owns sits at a node boundary, every `FrameAlloc`
//! splits a leaf (a heap allocation, a copy of half a node) and the
//! `FrameFree` that follows merges it back (a heap free, another copy):
//! about 450 instructions on top of a 2,000-instruction allocate/free pair
//! — which boundary a program sits at depends on how many frames it holds,
//! so it changed with unrelated builds (issue 14's `frame_alloc_free`
//! regression: fat LTO deepened the benchmark's stack by one page).
//!
//! Here the set is a map from a 64-frame group to a bitmap word. A frame's
//! allocate/free toggles one bit in a word that already exists (the frame
//! allocator hands out frames next to the ones it handed out before), so
//! the map's shape does not change. Words that become empty are kept, with
//! hysteresis: once more than half of the words (and more than a few) are
//! empty, all empty words go in one sweep, so memory stays within twice
//! what the live frames need (plus a constant), an alternating
//! allocate/free never reshapes the map, and a sweep happens at most once
//! per as many removals as words it drops.

use crate::frames::FrameNumber;
use alloc::collections::BTreeMap;

/// Empty words always allowed (below this, none is ever removed).
const SLACK_WORDS: usize = 8;

/// A set of frame numbers (see the module documentation).
#[derive(Default, Debug)]
pub struct FrameSet {
    words: BTreeMap<u64, u64>,
    len: usize,
    empty_words: usize,
}

impl FrameSet {
    /// An empty set.
    pub const fn new() -> FrameSet {
        FrameSet { words: BTreeMap::new(), len: 0, empty_words: 0 }
    }

    /// Number of frames in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `frame`; `false` if it was there already.
    #[inline]
    pub fn insert(&mut self, frame: FrameNumber) -> bool {
        let (key, bit) = split(frame);
        let word = self.words.entry(key).or_insert_with(|| {
            // Counted as empty until the bit below lands.
            self.empty_words += 1;
            0
        });
        if *word & bit != 0 {
            return false;
        }
        if *word == 0 {
            self.empty_words -= 1;
        }
        *word |= bit;
        self.len += 1;
        true
    }

    /// Removes `frame`; `false` if it was not there.
    #[inline]
    pub fn remove(&mut self, frame: FrameNumber) -> bool {
        let (key, bit) = split(frame);
        let Some(word) = self.words.get_mut(&key) else { return false };
        if *word & bit == 0 {
            return false;
        }
        *word &= !bit;
        self.len -= 1;
        if *word == 0 {
            self.empty_words += 1;
            self.trim();
        }
        true
    }

    /// Whether `frame` is in the set.
    pub fn contains(&self, frame: FrameNumber) -> bool {
        let (key, bit) = split(frame);
        self.words.get(&key).is_some_and(|w| w & bit != 0)
    }

    /// Removes and returns the lowest frame.
    pub fn pop_first(&mut self) -> Option<FrameNumber> {
        loop {
            let mut entry = self.words.first_entry()?;
            let word = *entry.get();
            if word == 0 {
                // An empty word kept by the hysteresis: drop it now.
                entry.remove();
                self.empty_words -= 1;
                continue;
            }
            let bit = word.trailing_zeros();
            let key = *entry.key();
            *entry.get_mut() = word & !(1 << bit);
            self.len -= 1;
            if word & !(1 << bit) == 0 {
                entry.remove();
            }
            return Some(FrameNumber(key * 64 + u64::from(bit)));
        }
    }

    /// Drops every empty word once more than half are empty (amortised:
    /// it takes as many removals again before the next sweep).
    fn trim(&mut self) {
        let live = self.words.len() - self.empty_words;
        if self.empty_words > SLACK_WORDS.max(live) {
            self.words.retain(|_, w| *w != 0);
            self.empty_words = 0;
        }
    }

    /// Words held (live and empty), for tests of the memory bound.
    pub fn words(&self) -> usize {
        self.words.len()
    }
}

#[inline]
fn split(frame: FrameNumber) -> (u64, u64) {
    (frame.0 / 64, 1 << (frame.0 % 64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn insert_remove_pop() {
        let mut s = FrameSet::new();
        assert!(s.insert(FrameNumber(5)));
        assert!(!s.insert(FrameNumber(5)));
        assert!(s.insert(FrameNumber(700)));
        assert!(s.contains(FrameNumber(700)));
        assert_eq!(s.len(), 2);
        assert!(s.remove(FrameNumber(5)));
        assert!(!s.remove(FrameNumber(5)));
        assert!(!s.remove(FrameNumber(6)));
        assert_eq!(s.pop_first(), Some(FrameNumber(700)));
        assert_eq!(s.pop_first(), None);
        assert!(s.is_empty());
    }

    #[test]
    fn alternating_alloc_free_keeps_the_shape() {
        let mut s = FrameSet::new();
        for f in 0..11 {
            s.insert(FrameNumber(f * 64));
        }
        let words = s.words();
        for _ in 0..100 {
            s.insert(FrameNumber(12 * 64));
            s.remove(FrameNumber(12 * 64));
            assert_eq!(s.words(), words + 1);
        }
    }

    proptest! {
        /// The set behaves as a `BTreeSet`, and its words stay within
        /// twice the live words plus the slack.
        #[test]
        fn model(ops in proptest::collection::vec((0u8..3, 0u64..4096), 1..400)) {
            let mut s = FrameSet::new();
            let mut m = BTreeSet::new();
            for (op, f) in ops {
                let f = FrameNumber(f);
                match op {
                    0 => prop_assert_eq!(s.insert(f), m.insert(f)),
                    1 => prop_assert_eq!(s.remove(f), m.remove(&f)),
                    _ => prop_assert_eq!(s.pop_first(), m.pop_first()),
                }
                prop_assert_eq!(s.len(), m.len());
                let live: BTreeSet<u64> = m.iter().map(|f| f.0 / 64).collect();
                prop_assert!(s.words() <= 2 * live.len() + SLACK_WORDS + 1);
                for f in &m {
                    prop_assert!(s.contains(*f));
                }
            }
        }
    }
}
