//! The kernel's physical frame allocator.
//!
//! A bitmap over frame numbers `0..WORDS*64`: a set bit is a frame that is in
//! use or was never RAM, a clear bit a free frame. It starts with every frame
//! in use; [`FrameBitmap::add_free_range`] releases the usable RAM that the
//! memory map reports. Allocation searches from a rotating hint, so repeated
//! allocations are O(1) amortised; contiguous runs (the heap, stacks) are
//! found by a linear scan, which only happens at boot.
//!
//! This type owns the answer to "is this frame free?". It does not know who
//! owns a used frame: the per-frame ownership table of the environments
//! issue builds on top of it. It holds no lock itself; the machine layer
//! wraps it in one (see `machine::memory`).

/// A physical frame number (physical address / 4096).
pub use abi::FrameNumber;

/// Why a frame operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free frame (or no free run of the requested length) is left.
    OutOfMemory,
    /// The frame number lies outside the bitmap.
    OutOfRange(FrameNumber),
    /// The frame was already free (a double free), or, for
    /// [`FrameBitmap::take`], already in use.
    NotAllocated(FrameNumber),
}

/// A bitmap frame allocator covering `WORDS * 64` frames.
pub struct FrameBitmap<const WORDS: usize> {
    used: [u64; WORDS],
    hint: usize,
    free: u64,
}

impl<const WORDS: usize> Default for FrameBitmap<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORDS: usize> FrameBitmap<WORDS> {
    /// Number of frames the bitmap can describe.
    pub const CAPACITY: u64 = WORDS as u64 * 64;

    /// A bitmap with every frame marked used.
    pub const fn new() -> Self {
        FrameBitmap { used: [u64::MAX; WORDS], hint: 0, free: 0 }
    }

    /// Number of free frames.
    pub fn free_frames(&self) -> u64 {
        self.free
    }

    /// Marks frames `start..end` free (frames beyond the capacity are
    /// ignored). Freeing an already-free frame here is harmless, so
    /// overlapping memory map entries cannot corrupt the count.
    pub fn add_free_range(&mut self, start: FrameNumber, end: FrameNumber) {
        for frame in start.0..end.0.min(Self::CAPACITY) {
            let (word, bit) = Self::split(frame);
            if self.used[word] & bit != 0 {
                self.used[word] &= !bit;
                self.free += 1;
            }
        }
    }

    /// Allocates one frame.
    pub fn alloc(&mut self) -> Result<FrameNumber, FrameError> {
        for i in 0..WORDS {
            let word = (self.hint + i) % WORDS;
            let bits = self.used[word];
            if bits != u64::MAX {
                let bit = (!bits).trailing_zeros() as u64;
                self.used[word] |= 1 << bit;
                self.free -= 1;
                self.hint = word;
                return Ok(FrameNumber(word as u64 * 64 + bit));
            }
        }
        Err(FrameError::OutOfMemory)
    }

    /// Allocates `count` physically contiguous frames whose first frame
    /// number is a multiple of `align` (a power of two), returning the first.
    pub fn alloc_contiguous(&mut self, count: u64, align: u64) -> Result<FrameNumber, FrameError> {
        let align = align.max(1);
        if count == 0 || !align.is_power_of_two() {
            return Err(FrameError::OutOfMemory);
        }
        let mut start = 0;
        while start + count <= Self::CAPACITY {
            match (start..start + count).find(|&f| self.is_used_raw(f)) {
                Some(used) => start = (used + 1).next_multiple_of(align),
                None => {
                    for f in start..start + count {
                        let (word, bit) = Self::split(f);
                        self.used[word] |= bit;
                    }
                    self.free -= count;
                    return Ok(FrameNumber(start));
                }
            }
        }
        Err(FrameError::OutOfMemory)
    }

    /// Takes the specific frame `frame` out of the pool.
    pub fn take(&mut self, frame: FrameNumber) -> Result<(), FrameError> {
        if frame.0 >= Self::CAPACITY {
            return Err(FrameError::OutOfRange(frame));
        }
        let (word, bit) = Self::split(frame.0);
        if self.used[word] & bit != 0 {
            return Err(FrameError::NotAllocated(frame));
        }
        self.used[word] |= bit;
        self.free -= 1;
        Ok(())
    }

    /// Returns a frame to the pool.
    pub fn free(&mut self, frame: FrameNumber) -> Result<(), FrameError> {
        if frame.0 >= Self::CAPACITY {
            return Err(FrameError::OutOfRange(frame));
        }
        let (word, bit) = Self::split(frame.0);
        if self.used[word] & bit == 0 {
            return Err(FrameError::NotAllocated(frame));
        }
        self.used[word] &= !bit;
        self.free += 1;
        Ok(())
    }

    /// Whether `frame` is in use (or outside the bitmap).
    pub fn is_used(&self, frame: FrameNumber) -> bool {
        self.is_used_raw(frame.0)
    }

    fn is_used_raw(&self, frame: u64) -> bool {
        if frame >= Self::CAPACITY {
            return true;
        }
        let (word, bit) = Self::split(frame);
        self.used[word] & bit != 0
    }

    fn split(frame: u64) -> (usize, u64) {
        ((frame / 64) as usize, 1 << (frame % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn starts_full_and_hands_out_only_added_frames() {
        let mut b = FrameBitmap::<4>::new();
        assert_eq!(b.alloc(), Err(FrameError::OutOfMemory));
        b.add_free_range(FrameNumber(10), FrameNumber(13));
        b.add_free_range(FrameNumber(11), FrameNumber(12)); // overlap: no double count
        assert_eq!(b.free_frames(), 3);
        let got: HashSet<_> = (0..3).map(|_| b.alloc().unwrap()).collect();
        assert_eq!(got, HashSet::from([10, 11, 12].map(FrameNumber)));
        assert_eq!(b.alloc(), Err(FrameError::OutOfMemory));
    }

    #[test]
    fn free_detects_double_free_and_range() {
        let mut b = FrameBitmap::<1>::new();
        b.add_free_range(FrameNumber(0), FrameNumber(64));
        let f = b.alloc().unwrap();
        assert_eq!(b.free(f), Ok(()));
        assert_eq!(b.free(f), Err(FrameError::NotAllocated(f)));
        assert_eq!(b.free(FrameNumber(64)), Err(FrameError::OutOfRange(FrameNumber(64))));
        assert_eq!(b.free_frames(), 64);
    }

    #[test]
    fn contiguous_runs_respect_alignment_and_holes() {
        let mut b = FrameBitmap::<4>::new();
        b.add_free_range(FrameNumber(1), FrameNumber(200));
        let hole = b.alloc_contiguous(1, 1).unwrap();
        assert_eq!(hole, FrameNumber(1));
        let run = b.alloc_contiguous(16, 16).unwrap();
        assert_eq!(run, FrameNumber(16));
        assert!((16..32).all(|f| b.is_used(FrameNumber(f))));
        assert_eq!(b.alloc_contiguous(500, 1), Err(FrameError::OutOfMemory));
        assert_eq!(b.free_frames(), 199 - 17);
    }

    #[test]
    fn take_claims_exactly_one_free_frame() {
        let mut b = FrameBitmap::<1>::new();
        b.add_free_range(FrameNumber(4), FrameNumber(8));
        assert_eq!(b.take(FrameNumber(5)), Ok(()));
        assert_eq!(b.take(FrameNumber(5)), Err(FrameError::NotAllocated(FrameNumber(5))));
        assert_eq!(b.take(FrameNumber(2)), Err(FrameError::NotAllocated(FrameNumber(2))));
        assert_eq!(b.take(FrameNumber(64)), Err(FrameError::OutOfRange(FrameNumber(64))));
        assert_eq!(b.free_frames(), 3);
        assert!(b.is_used(FrameNumber(5)));
    }

    #[test]
    fn capacity_clips_ranges() {
        let mut b = FrameBitmap::<1>::new();
        b.add_free_range(FrameNumber(60), FrameNumber(1_000_000));
        assert_eq!(b.free_frames(), 4);
    }

    #[test]
    fn random_alloc_free_keeps_count_and_never_hands_out_twice() {
        // A small deterministic xorshift drives a long alloc/free sequence.
        let mut b = FrameBitmap::<8>::new();
        b.add_free_range(FrameNumber(3), FrameNumber(500));
        let mut live = HashSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if !x.is_multiple_of(3) {
                if let Ok(f) = b.alloc() {
                    assert!((3..500).contains(&f.0));
                    assert!(live.insert(f), "frame {f} handed out twice");
                }
            } else if let Some(&f) = live.iter().next() {
                live.remove(&f);
                b.free(f).unwrap();
            }
            assert_eq!(b.free_frames() + live.len() as u64, 497);
        }
    }
}
