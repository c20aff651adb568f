//! The pool of frames zeroed ahead of time.
//!
//! Idle cores take free frames from the allocator, zero them and push them
//! here ([`ZeroPool::push`]); the frame allocator hands these out first
//! ([`ZeroPool::pop`]) and zeroes on demand only when the pool is empty, so
//! the zeroing leaves the page-fault path.
//!
//! **The zero guarantee** is a rule of the machine layer that fills the
//! pool (`machine::memory`): a frame enters the pool only after it was
//! taken out of the allocator's free bitmap (so nobody else can be handed
//! it or write to it) *and* zeroed; a freed frame goes back to the bitmap,
//! never here. Every frame in the pool is therefore zero and unowned, and
//! every frame the allocator hands out either comes from here or is zeroed
//! right then.
//!
//! This type is only the container: a fixed-capacity stack (no
//! allocation, so it can live behind the allocator's own lock), whose most
//! recently zeroed frame goes out first (the likeliest to be in the cache).

use crate::frames::FrameNumber;

/// Frames the pool holds at most: 16 MiB zeroed ahead.
pub const POOL_CAPACITY: usize = 4096;

/// A stack of zeroed, unowned frames (see the module documentation).
pub struct ZeroPool {
    frames: [FrameNumber; POOL_CAPACITY],
    len: usize,
    /// The pool keeps at most this many (a share of free memory, set at boot).
    target: usize,
}

impl Default for ZeroPool {
    fn default() -> Self {
        Self::new()
    }
}

impl ZeroPool {
    /// An empty pool that wants nothing until [`set_target`](Self::set_target).
    pub const fn new() -> ZeroPool {
        ZeroPool { frames: [FrameNumber(0); POOL_CAPACITY], len: 0, target: 0 }
    }

    /// How many frames the pool should hold (clipped to its capacity).
    pub fn set_target(&mut self, target: usize) {
        self.target = target.min(POOL_CAPACITY);
    }

    /// Frames held now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether an idle core should zero another frame for the pool.
    pub fn wants_more(&self) -> bool {
        self.len < self.target
    }

    /// Adds a zeroed frame; gives it back if the pool is full.
    pub fn push(&mut self, frame: FrameNumber) -> Result<(), FrameNumber> {
        if self.len >= self.target {
            return Err(frame);
        }
        self.frames[self.len] = frame;
        self.len += 1;
        Ok(())
    }

    /// Takes the most recently zeroed frame.
    #[inline]
    pub fn pop(&mut self) -> Option<FrameNumber> {
        self.len = self.len.checked_sub(1)?;
        Some(self.frames[self.len])
    }

    /// Takes `frame` out of the pool if it is there (a request for a
    /// specific frame); O(pool size), which only that rare call pays.
    pub fn take(&mut self, frame: FrameNumber) -> bool {
        match self.frames[..self.len].iter().position(|&f| f == frame) {
            Some(i) => {
                self.len -= 1;
                self.frames[i] = self.frames[self.len];
                true
            }
            None => false,
        }
    }

    /// Whether `frame` is in the pool.
    pub fn contains(&self, frame: FrameNumber) -> bool {
        self.frames[..self.len].contains(&frame)
    }

    /// The frames in the pool (for the zero-guarantee test).
    pub fn frames(&self) -> &[FrameNumber] {
        &self.frames[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifo_target_and_take() {
        let mut p = ZeroPool::new();
        assert!(!p.wants_more());
        assert_eq!(p.push(FrameNumber(1)), Err(FrameNumber(1)));
        p.set_target(3);
        for f in 1..=3 {
            assert!(p.wants_more());
            p.push(FrameNumber(f)).unwrap();
        }
        assert!(!p.wants_more());
        assert_eq!(p.push(FrameNumber(9)), Err(FrameNumber(9)));
        assert!(p.take(FrameNumber(1)));
        assert!(!p.take(FrameNumber(1)));
        assert!(!p.contains(FrameNumber(1)));
        assert_eq!(p.pop(), Some(FrameNumber(2)));
        assert_eq!(p.pop(), Some(FrameNumber(3)));
        assert_eq!(p.pop(), None);
        assert!(p.is_empty());
        p.set_target(usize::MAX);
        assert!(p.wants_more());
    }
}
