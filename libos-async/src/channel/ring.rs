//! The channel ring: a bounded single-producer/single-consumer queue of
//! byte messages in memory both sides can write, and neither trusts.
//!
//! Hardware-free: every access goes through [`SharedMem`] (eight-byte
//! words at byte offsets), implemented over mapped frames by
//! [`super::shm`] and over vectors (and loom atomics) by the tests.
//!
//! # Layout
//!
//! ```text
//! offset 0    MAGIC          b"EXOCHAN" + version        (creator writes once)
//!        8    GEOMETRY       capacity << 32 | slot stride (creator writes once)
//!       64    TAIL word      producer's counter           (own line)
//!      128    HEAD word      consumer's counter           (own line)
//!      192    slot 0         len: u64 | data: stride - 8 bytes
//!             slot 1 ...     (capacity slots, capacity a power of two)
//! ```
//!
//! A counter word packs three things, so that every hand-over is a single
//! atomic read-modify-write of one word:
//!
//! ```text
//!  63        62       61 .. 0
//! [WAITING] [CLOSED] [count mod 2^62]
//! ```
//!
//! * `count` — messages written (`TAIL`) or consumed (`HEAD`); only the
//!   word's owner changes it;
//! * `CLOSED` — the owner's end is closed (set once by the owner);
//! * `WAITING` — set by the *other* side, with a compare-and-swap from the
//!   exact value it last saw, just before it goes to sleep waiting for
//!   this word to change. The owner publishes with a swap, which clears
//!   the bit, and learns from the old value whether it must wake the
//!   sleeper (post a `Notify`). The compare-and-swap fails if the owner
//!   moved in between, so a wake-up is never lost; when nobody waits the
//!   fast path costs one `xchg` and no system call.
//!
//! # Protocol
//!
//! The producer keeps its own `tail`, writes the slot `tail % capacity`
//! (length word, then data, relaxed), then swaps `TAIL` (release: the slot
//! is visible before the count). The consumer keeps its own `head`, loads
//! `TAIL` (acquire), copies the slot, then swaps `HEAD` (release: the slot
//! may be reused). Neither side ever re-reads its own counter from shared
//! memory, and slots are indexed with the side's own capacity, never the
//! header's.
//!
//! # A hostile peer
//!
//! The peer may write anything anywhere in the ring at any time. Every
//! word read from it is validated before use, and a bad one is
//! [`ChannelError::Corrupt`] (sticky: the end stays poisoned), never an
//! out-of-bounds access or a panic:
//!
//! * the magic or geometry differs from what this side expects (checked
//!   when attaching and before sleeping);
//! * the peer's count moved backwards, or more than `capacity` ahead of
//!   this side's own count (`TAIL - head > capacity`, `HEAD` behind its
//!   last value or beyond `tail`);
//! * a slot length greater than the slot's data size.
//!
//! Message *contents* are whatever the peer wrote (it may rewrite a slot
//! while it is being copied): the channel guarantees bounds, not meaning.

use core::sync::atomic::Ordering::{self, Acquire, Relaxed};

use super::ChannelError;

/// Eight-byte words of memory shared with an untrusted peer.
///
/// Offsets are in bytes, 8-aligned and below [`SharedMem::size`]: the
/// ring logic guarantees that (an implementation may panic otherwise, and
/// the tests' implementations do, so any bounds bug is a test failure).
pub trait SharedMem {
    /// The size in bytes (a multiple of 8).
    fn size(&self) -> usize;
    /// Loads the word at `off`.
    fn load(&self, off: usize, order: Ordering) -> u64;
    /// Stores `value` at `off`.
    fn store(&self, off: usize, value: u64, order: Ordering);
    /// Swaps `value` into the word at `off`; returns the old value.
    fn swap(&self, off: usize, value: u64, order: Ordering) -> u64;
    /// Compare-and-swap at `off` (acquire-release): `Ok(old)` if it held
    /// `current`, else `Err(actual)`.
    fn compare_exchange(&self, off: usize, current: u64, new: u64) -> Result<u64, u64>;
}

/// `b"EXOCHAN"` and version 1.
pub const MAGIC: u64 = u64::from_le_bytes(*b"EXOCHAN\x01");
/// Byte offset of the magic word.
pub const MAGIC_OFF: usize = 0;
/// Byte offset of the geometry word.
pub const GEOMETRY_OFF: usize = 8;
/// Byte offset of the producer's counter word.
pub const TAIL_OFF: usize = 64;
/// Byte offset of the consumer's counter word.
pub const HEAD_OFF: usize = 128;
/// Bytes before slot 0.
pub const HEADER_BYTES: usize = 192;

/// The counter part of a counter word.
pub const COUNT_MASK: u64 = (1 << 62) - 1;
/// The owner's end is closed.
pub const CLOSED: u64 = 1 << 62;
/// The other side sleeps until this word changes.
pub const WAITING: u64 = 1 << 63;

/// `a - b` in counter arithmetic (mod 2^62).
fn dist(a: u64, b: u64) -> u64 {
    a.wrapping_sub(b) & COUNT_MASK
}

/// A ring's shape: how many slots of what size. Both ends must agree (the
/// creator writes it into the header; each end checks it when attaching).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Slots (a power of two, at least 1).
    capacity: u32,
    /// Bytes per slot: 8 for the length, the rest data (a multiple of 8).
    stride: u32,
}

impl Geometry {
    /// The largest power-of-two number of slots carrying messages of up to
    /// `max_msg` bytes that fits in `bytes`; `None` if not even one does.
    pub const fn fit(bytes: usize, max_msg: usize) -> Option<Geometry> {
        let stride = 8 + max_msg.next_multiple_of(8);
        if bytes < HEADER_BYTES + stride || stride > u32::MAX as usize {
            return None;
        }
        let slots = (bytes - HEADER_BYTES) / stride;
        let capacity = 1usize << (usize::BITS - 1 - slots.leading_zeros());
        if capacity > 1 << 30 {
            return None;
        }
        Some(Geometry { capacity: capacity as u32, stride: stride as u32 })
    }

    /// Slots.
    pub const fn capacity(self) -> u32 {
        self.capacity
    }

    /// The longest message.
    pub const fn max_msg(self) -> usize {
        self.stride as usize - 8
    }

    /// Bytes the ring occupies.
    pub const fn bytes(self) -> usize {
        HEADER_BYTES + self.capacity as usize * self.stride as usize
    }

    /// The geometry word of the header.
    pub const fn word(self) -> u64 {
        (self.capacity as u64) << 32 | self.stride as u64
    }

    /// Offset of the slot of counter value `n`.
    fn slot(self, n: u64) -> usize {
        HEADER_BYTES + (n & (u64::from(self.capacity) - 1)) as usize * self.stride as usize
    }
}

/// Writes a fresh header (magic, geometry, zero counters) and zeroes the
/// slots. Done by the creator before the peer may map the ring.
pub fn init(mem: &impl SharedMem, geom: Geometry) -> Result<(), ChannelError> {
    if geom.bytes() > mem.size() {
        return Err(ChannelError::TooLarge);
    }
    for off in (0..geom.bytes()).step_by(8) {
        mem.store(off, 0, Relaxed);
    }
    mem.store(GEOMETRY_OFF, geom.word(), Relaxed);
    mem.store(MAGIC_OFF, MAGIC, Ordering::Release);
    Ok(())
}

/// Checks the magic and geometry words.
fn check_header(mem: &impl SharedMem, geom: Geometry) -> Result<(), ChannelError> {
    if geom.bytes() > mem.size() {
        return Err(ChannelError::TooLarge);
    }
    if mem.load(MAGIC_OFF, Acquire) != MAGIC {
        return Err(ChannelError::Corrupt("bad magic"));
    }
    if mem.load(GEOMETRY_OFF, Relaxed) != geom.word() {
        return Err(ChannelError::Corrupt("geometry changed"));
    }
    Ok(())
}

/// Copies `dst.len()` bytes from `off` (8-aligned) out of shared memory,
/// one relaxed word load per eight bytes.
fn copy_out(mem: &impl SharedMem, off: usize, dst: &mut [u8]) {
    for (i, chunk) in dst.chunks_mut(8).enumerate() {
        let word = mem.load(off + i * 8, Relaxed).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Copies `src` into shared memory at `off` (8-aligned), one relaxed word
/// store per eight bytes (the last word zero-padded).
fn copy_in(mem: &impl SharedMem, off: usize, src: &[u8]) {
    for (i, chunk) in src.chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        mem.store(off + i * 8, u64::from_le_bytes(word), Relaxed);
    }
}

/// What a successful send or receive asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    /// Bytes moved.
    pub len: usize,
    /// The peer said it sleeps until this side's counter moves: wake it
    /// (a `Notify` to its environment).
    pub wake_peer: bool,
}

/// What a would-be sleeper learned from [`Producer::prepare_wait`] or
/// [`Consumer::prepare_wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Progress is possible now (or the peer closed): try again.
    Ready,
    /// `WAITING` is set in the peer's word at `off`, which holds `value`:
    /// sleep until that word differs from `value`.
    Sleep {
        /// Byte offset of the word to watch.
        off: usize,
        /// Its value when the sleep was registered.
        value: u64,
    },
}

/// The producer's end: its private `tail` and what it last saw of `HEAD`.
#[derive(Clone, Debug)]
pub struct Producer {
    geom: Geometry,
    tail: u64,
    last_head: u64,
    closed: bool,
    poisoned: Option<ChannelError>,
}

impl Producer {
    /// Attaches to a ring [`init`] prepared (checks its header). The
    /// producer starts at count 0: attach before the first message.
    pub fn attach(mem: &impl SharedMem, geom: Geometry) -> Result<Producer, ChannelError> {
        check_header(mem, geom)?;
        Ok(Producer { geom, tail: 0, last_head: 0, closed: false, poisoned: None })
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geom
    }

    /// Messages sent.
    pub fn sent(&self) -> u64 {
        self.tail
    }

    fn fail(&mut self, e: ChannelError) -> ChannelError {
        if matches!(e, ChannelError::Corrupt(_)) {
            self.poisoned = Some(e);
        }
        e
    }

    /// Loads and validates `HEAD`: the consumer's count (in
    /// `last_head ..= tail`) and whether it closed.
    fn head(&mut self, mem: &impl SharedMem) -> Result<(u64, u64, bool), ChannelError> {
        let word = mem.load(HEAD_OFF, Acquire);
        let head = word & COUNT_MASK;
        // HEAD may only move forward, and never past what was sent.
        if dist(head, self.last_head) > dist(self.tail, self.last_head) {
            return Err(self.fail(ChannelError::Corrupt("head out of range")));
        }
        self.last_head = head;
        Ok((word, head, word & CLOSED != 0))
    }

    /// Sends `msg` if there is room: `WouldBlock` when the ring is full,
    /// `Closed` when the consumer closed its end, `TooLarge` for a message
    /// longer than a slot.
    pub fn try_send(&mut self, mem: &impl SharedMem, msg: &[u8]) -> Result<Done, ChannelError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        if self.closed {
            return Err(ChannelError::Closed);
        }
        if msg.len() > self.geom.max_msg() {
            return Err(ChannelError::TooLarge);
        }
        let (_, head, peer_closed) = self.head(mem)?;
        if peer_closed {
            return Err(ChannelError::Closed);
        }
        if dist(self.tail, head) >= u64::from(self.geom.capacity) {
            return Err(ChannelError::WouldBlock);
        }
        let slot = self.geom.slot(self.tail);
        mem.store(slot, msg.len() as u64, Relaxed);
        copy_in(mem, slot + 8, msg);
        self.tail = (self.tail + 1) & COUNT_MASK;
        let old = mem.swap(TAIL_OFF, self.tail, Ordering::Release);
        Ok(Done { len: msg.len(), wake_peer: old & WAITING != 0 })
    }

    /// Before sleeping because the ring is full: sets `WAITING` in `HEAD`
    /// unless the consumer moved (or closed, or the header is bad).
    pub fn prepare_wait(&mut self, mem: &impl SharedMem) -> Result<Wait, ChannelError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        check_header(mem, self.geom).map_err(|e| self.fail(e))?;
        let (word, head, closed) = self.head(mem)?;
        if closed || dist(self.tail, head) < u64::from(self.geom.capacity) {
            return Ok(Wait::Ready);
        }
        let value = word | WAITING;
        match mem.compare_exchange(HEAD_OFF, word, value) {
            Ok(_) => Ok(Wait::Sleep { off: HEAD_OFF, value }),
            Err(_) => Ok(Wait::Ready),
        }
    }

    /// Closes this end (the consumer sees `Closed` once it has drained the
    /// ring). Returns whether the consumer must be woken.
    pub fn close(&mut self, mem: &impl SharedMem) -> bool {
        if self.closed {
            return false;
        }
        self.closed = true;
        let old = mem.swap(TAIL_OFF, self.tail | CLOSED, Ordering::Release);
        old & WAITING != 0
    }
}

/// The consumer's end: its private `head` and what it last saw of `TAIL`.
#[derive(Clone, Debug)]
pub struct Consumer {
    geom: Geometry,
    head: u64,
    last_tail: u64,
    closed: bool,
    poisoned: Option<ChannelError>,
}

impl Consumer {
    /// Attaches to a ring [`init`] prepared (checks its header).
    pub fn attach(mem: &impl SharedMem, geom: Geometry) -> Result<Consumer, ChannelError> {
        check_header(mem, geom)?;
        Ok(Consumer { geom, head: 0, last_tail: 0, closed: false, poisoned: None })
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geom
    }

    /// Messages received.
    pub fn received(&self) -> u64 {
        self.head
    }

    fn fail(&mut self, e: ChannelError) -> ChannelError {
        if matches!(e, ChannelError::Corrupt(_)) {
            self.poisoned = Some(e);
        }
        e
    }

    /// Loads and validates `TAIL`: the producer's count (at least what was
    /// seen before, at most `capacity` past `head`) and whether it closed.
    fn tail(&mut self, mem: &impl SharedMem) -> Result<(u64, u64, bool), ChannelError> {
        let word = mem.load(TAIL_OFF, Acquire);
        let tail = word & COUNT_MASK;
        let avail = dist(tail, self.head);
        if avail > u64::from(self.geom.capacity) {
            return Err(self.fail(ChannelError::Corrupt("tail beyond capacity")));
        }
        if avail < dist(self.last_tail, self.head) {
            return Err(self.fail(ChannelError::Corrupt("tail moved backwards")));
        }
        self.last_tail = tail;
        Ok((word, avail, word & CLOSED != 0))
    }

    /// Messages waiting (validated; 0 after an error).
    pub fn available(&mut self, mem: &impl SharedMem) -> u64 {
        self.tail(mem).map_or(0, |(_, avail, _)| avail)
    }

    /// Receives the oldest message into `buf` (which must hold
    /// [`Geometry::max_msg`] bytes, or at least the message):
    /// `WouldBlock` when the ring is empty, `Closed` when it is empty and
    /// the producer closed.
    pub fn try_recv(&mut self, mem: &impl SharedMem, buf: &mut [u8]) -> Result<Done, ChannelError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        if self.closed {
            return Err(ChannelError::Closed);
        }
        let (_, avail, peer_closed) = self.tail(mem)?;
        if avail == 0 {
            return Err(if peer_closed { ChannelError::Closed } else { ChannelError::WouldBlock });
        }
        let slot = self.geom.slot(self.head);
        let len = mem.load(slot, Relaxed);
        if len > self.geom.max_msg() as u64 {
            return Err(self.fail(ChannelError::Corrupt("message length beyond the slot")));
        }
        let len = len as usize;
        let Some(dst) = buf.get_mut(..len) else {
            return Err(ChannelError::TooLarge);
        };
        copy_out(mem, slot + 8, dst);
        self.head = (self.head + 1) & COUNT_MASK;
        let old = mem.swap(HEAD_OFF, self.head, Ordering::Release);
        Ok(Done { len, wake_peer: old & WAITING != 0 })
    }

    /// Before sleeping because the ring is empty: sets `WAITING` in `TAIL`
    /// unless the producer moved (or closed, or the header is bad).
    pub fn prepare_wait(&mut self, mem: &impl SharedMem) -> Result<Wait, ChannelError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        check_header(mem, self.geom).map_err(|e| self.fail(e))?;
        let (word, avail, closed) = self.tail(mem)?;
        if closed || avail > 0 {
            return Ok(Wait::Ready);
        }
        let value = word | WAITING;
        match mem.compare_exchange(TAIL_OFF, word, value) {
            Ok(_) => Ok(Wait::Sleep { off: TAIL_OFF, value }),
            Err(_) => Ok(Wait::Ready),
        }
    }

    /// Closes this end (later sends fail with `Closed`). Returns whether
    /// the producer must be woken.
    pub fn close(&mut self, mem: &impl SharedMem) -> bool {
        if self.closed {
            return false;
        }
        self.closed = true;
        let old = mem.swap(HEAD_OFF, self.head | CLOSED, Ordering::Release);
        old & WAITING != 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::sync::atomic::Ordering::AcqRel;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicU64;
    use std::vec::Vec;

    /// Vector-backed memory that panics on any access out of bounds or
    /// misaligned.
    pub(crate) struct VecMem(Vec<AtomicU64>);

    impl VecMem {
        pub(crate) fn new(bytes: usize) -> VecMem {
            VecMem((0..bytes / 8).map(|_| AtomicU64::new(0)).collect())
        }
        fn w(&self, off: usize) -> &AtomicU64 {
            assert!(off.is_multiple_of(8), "misaligned access at {off}");
            &self.0[off / 8]
        }
    }

    impl SharedMem for VecMem {
        fn size(&self) -> usize {
            self.0.len() * 8
        }
        fn load(&self, off: usize, order: Ordering) -> u64 {
            self.w(off).load(order)
        }
        fn store(&self, off: usize, value: u64, order: Ordering) {
            self.w(off).store(value, order)
        }
        fn swap(&self, off: usize, value: u64, order: Ordering) -> u64 {
            self.w(off).swap(value, order)
        }
        fn compare_exchange(&self, off: usize, current: u64, new: u64) -> Result<u64, u64> {
            self.w(off).compare_exchange(current, new, AcqRel, Acquire)
        }
    }

    fn ring(bytes: usize, max_msg: usize) -> (VecMem, Geometry) {
        let geom = Geometry::fit(bytes, max_msg).unwrap();
        let mem = VecMem::new(bytes);
        init(&mem, geom).unwrap();
        (mem, geom)
    }

    #[test]
    fn geometry_fits_a_page() {
        let g = Geometry::fit(4096, 56).unwrap();
        assert_eq!((g.capacity(), g.max_msg()), (32, 56));
        assert!(g.bytes() <= 4096);
        let g = Geometry::fit(4096, 1).unwrap();
        assert_eq!((g.capacity(), g.max_msg()), (128, 8));
        assert_eq!(Geometry::fit(208, 8), Some(Geometry { capacity: 1, stride: 16 }));
        assert_eq!(Geometry::fit(208, 9), None);
        assert_eq!(Geometry::fit(0, 0), None);
    }

    #[test]
    fn messages_arrive_in_order_across_wrap_around() {
        let (mem, geom) = ring(HEADER_BYTES + 4 * 24, 16);
        assert_eq!(geom.capacity(), 4);
        let mut p = Producer::attach(&mem, geom).unwrap();
        let mut c = Consumer::attach(&mem, geom).unwrap();
        let mut buf = [0u8; 16];
        for round in 0..10u64 {
            for i in 0..4u64 {
                let msg = (round * 4 + i).to_le_bytes();
                let len = (round as usize + i as usize) % 9;
                assert!(!p.try_send(&mem, &msg[..len]).unwrap().wake_peer);
            }
            assert_eq!(p.try_send(&mem, b"x"), Err(ChannelError::WouldBlock));
            for i in 0..4u64 {
                let d = c.try_recv(&mem, &mut buf).unwrap();
                let len = (round as usize + i as usize) % 9;
                assert_eq!(d.len, len);
                assert_eq!(&buf[..len], &(round * 4 + i).to_le_bytes()[..len]);
            }
            assert_eq!(c.try_recv(&mem, &mut buf), Err(ChannelError::WouldBlock));
        }
        assert_eq!((p.sent(), c.received()), (40, 40));
    }

    #[test]
    fn too_large_and_closed() {
        let (mem, geom) = ring(4096, 16);
        let mut p = Producer::attach(&mem, geom).unwrap();
        let mut c = Consumer::attach(&mem, geom).unwrap();
        assert_eq!(p.try_send(&mem, &[0; 17]), Err(ChannelError::TooLarge));
        p.try_send(&mem, b"last").unwrap();
        assert!(!p.close(&mem));
        assert_eq!(p.try_send(&mem, b"x"), Err(ChannelError::Closed));
        let mut buf = [0u8; 16];
        assert_eq!(c.try_recv(&mem, &mut buf).unwrap().len, 4);
        assert_eq!(c.try_recv(&mem, &mut buf), Err(ChannelError::Closed));
        // The other direction: a closed consumer refuses new messages.
        let (mem, geom) = ring(4096, 16);
        let mut p = Producer::attach(&mem, geom).unwrap();
        let mut c = Consumer::attach(&mem, geom).unwrap();
        assert!(!c.close(&mem));
        assert_eq!(p.try_send(&mem, b"x"), Err(ChannelError::Closed));
    }

    #[test]
    fn waiting_bit_asks_for_a_wake_up_once() {
        let (mem, geom) = ring(4096, 8);
        let mut p = Producer::attach(&mem, geom).unwrap();
        let mut c = Consumer::attach(&mem, geom).unwrap();
        let w = c.prepare_wait(&mem).unwrap();
        assert_eq!(w, Wait::Sleep { off: TAIL_OFF, value: WAITING });
        assert!(p.try_send(&mem, b"a").unwrap().wake_peer);
        assert_ne!(mem.load(TAIL_OFF, Relaxed), WAITING);
        assert!(!p.try_send(&mem, b"b").unwrap().wake_peer);
        assert_eq!(c.prepare_wait(&mem).unwrap(), Wait::Ready);
        // Full ring: the producer waits on HEAD.
        let mut n = 2;
        while p.try_send(&mem, b"z").is_ok() {
            n += 1;
        }
        assert_eq!(n, geom.capacity() as usize);
        assert!(matches!(p.prepare_wait(&mem).unwrap(), Wait::Sleep { off: HEAD_OFF, .. }));
        let mut buf = [0u8; 8];
        assert!(c.try_recv(&mem, &mut buf).unwrap().wake_peer);
        assert!(!c.try_recv(&mem, &mut buf).unwrap().wake_peer);
        // Closing wakes a sleeper too.
        while c.try_recv(&mem, &mut buf).is_ok() {}
        assert!(matches!(c.prepare_wait(&mem).unwrap(), Wait::Sleep { .. }));
        assert!(p.close(&mem));
        assert_eq!(c.prepare_wait(&mem).unwrap(), Wait::Ready);
        assert_eq!(c.try_recv(&mem, &mut buf), Err(ChannelError::Closed));
    }

    #[test]
    fn hostile_counters_are_corrupt_and_sticky() {
        let corrupt = |r: Result<Done, ChannelError>| matches!(r, Err(ChannelError::Corrupt(_)));
        let (mem, geom) = ring(4096, 8);
        let mut c = Consumer::attach(&mem, geom).unwrap();
        let mut buf = [0u8; 8];
        // Tail far beyond capacity.
        mem.store(TAIL_OFF, 1000, Relaxed);
        assert!(corrupt(c.try_recv(&mem, &mut buf)));
        // Sticky even after the peer "repairs" it.
        mem.store(TAIL_OFF, 0, Relaxed);
        assert!(corrupt(c.try_recv(&mem, &mut buf)));

        // Tail moved backwards.
        let (mem, geom) = ring(4096, 8);
        let mut p = Producer::attach(&mem, geom).unwrap();
        let mut c = Consumer::attach(&mem, geom).unwrap();
        for _ in 0..3 {
            p.try_send(&mem, b"m").unwrap();
        }
        assert_eq!(c.available(&mem), 3);
        mem.store(TAIL_OFF, 1, Relaxed);
        assert!(corrupt(c.try_recv(&mem, &mut buf)));

        // A length beyond the slot.
        let (mem, geom) = ring(4096, 8);
        let mut p = Producer::attach(&mem, geom).unwrap();
        let mut c = Consumer::attach(&mem, geom).unwrap();
        p.try_send(&mem, b"m").unwrap();
        mem.store(HEADER_BYTES, 9, Relaxed);
        assert!(corrupt(c.try_recv(&mem, &mut buf)));

        // Head beyond tail, or backwards.
        let (mem, geom) = ring(4096, 8);
        let mut p = Producer::attach(&mem, geom).unwrap();
        mem.store(HEAD_OFF, 1, Relaxed);
        assert!(corrupt(p.try_send(&mem, b"m")));
        let (mem, geom) = ring(4096, 8);
        let mut p = Producer::attach(&mem, geom).unwrap();
        let mut c = Consumer::attach(&mem, geom).unwrap();
        p.try_send(&mem, b"m").unwrap();
        p.try_send(&mem, b"m").unwrap();
        c.try_recv(&mem, &mut buf).unwrap();
        c.try_recv(&mem, &mut buf).unwrap();
        p.try_send(&mem, b"m").unwrap();
        mem.store(HEAD_OFF, 1, Relaxed);
        assert!(corrupt(p.try_send(&mem, b"m")));

        // Magic and geometry are checked when attaching and before a sleep.
        let (mem, geom) = ring(4096, 8);
        let mut c = Consumer::attach(&mem, geom).unwrap();
        mem.store(MAGIC_OFF, 0, Relaxed);
        assert!(matches!(c.prepare_wait(&mem), Err(ChannelError::Corrupt(_))));
        assert!(matches!(Producer::attach(&mem, geom), Err(ChannelError::Corrupt(_))));
        let (mem, geom) = ring(4096, 8);
        mem.store(GEOMETRY_OFF, 1, Relaxed);
        assert!(matches!(Consumer::attach(&mem, geom), Err(ChannelError::Corrupt(_))));
    }

    #[test]
    fn counters_wrap_at_2_pow_62() {
        let (mem, geom) = ring(HEADER_BYTES + 2 * 16, 8);
        let mut p = Producer::attach(&mem, geom).unwrap();
        let mut c = Consumer::attach(&mem, geom).unwrap();
        let start = COUNT_MASK - 2;
        (p.tail, p.last_head) = (start, start);
        (c.head, c.last_tail) = (start, start);
        mem.store(TAIL_OFF, start, Relaxed);
        mem.store(HEAD_OFF, start, Relaxed);
        let mut buf = [0u8; 8];
        for i in 0..8u8 {
            p.try_send(&mem, &[i]).unwrap();
            assert_eq!(c.try_recv(&mem, &mut buf).unwrap().len, 1);
            assert_eq!(buf[0], i);
        }
        assert!(c.received() < 8);
    }

    /// One scribble: a word offset (anywhere in the ring) and a value.
    fn scribble() -> impl Strategy<Value = (usize, u64)> {
        let value = prop_oneof![
            any::<u64>(),
            0u64..70,
            (0u64..70).prop_map(|v| v | CLOSED),
            (0u64..70).prop_map(|v| v | WAITING),
        ];
        (0usize..64, value)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// A hostile producer writes random words into a ring between
        /// honest sends: every receive is an honest message, a message of
        /// valid length (contents the scribbler touched), `WouldBlock`,
        /// `Closed` or `Corrupt` — never a panic or an access out of
        /// bounds (VecMem would panic).
        #[test]
        fn consumer_survives_any_scribbles(
            ops in proptest::collection::vec((any::<bool>(), scribble()), 1..64),
        ) {
            let (mem, geom) = ring(HEADER_BYTES + 4 * 24, 16);
            let mut p = Producer::attach(&mem, geom).unwrap();
            let mut c = Consumer::attach(&mem, geom).unwrap();
            let mut buf = [0u8; 16];
            for (send, (word, value)) in ops {
                let off = (word * 8) % mem.size();
                if send {
                    let _ = p.try_send(&mem, b"honest");
                } else {
                    mem.store(off, value, Relaxed);
                }
                match c.try_recv(&mem, &mut buf) {
                    Ok(d) => prop_assert!(d.len <= geom.max_msg()),
                    Err(ChannelError::WouldBlock | ChannelError::Closed) => {}
                    Err(ChannelError::Corrupt(_)) => {
                        // Sticky.
                        prop_assert!(matches!(c.try_recv(&mem, &mut buf),
                            Err(ChannelError::Corrupt(_))));
                    }
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
                let _ = c.prepare_wait(&mem);
                let _ = c.available(&mem);
            }
        }

        /// The same for a producer facing a hostile consumer.
        #[test]
        fn producer_survives_any_scribbles(
            ops in proptest::collection::vec((any::<bool>(), scribble()), 1..64),
        ) {
            let (mem, geom) = ring(HEADER_BYTES + 4 * 24, 16);
            let mut p = Producer::attach(&mem, geom).unwrap();
            let mut c = Consumer::attach(&mem, geom).unwrap();
            let mut buf = [0u8; 16];
            for (recv, (word, value)) in ops {
                let off = (word * 8) % mem.size();
                if recv {
                    let _ = c.try_recv(&mem, &mut buf);
                } else {
                    mem.store(off, value, Relaxed);
                }
                match p.try_send(&mem, b"0123456789abcdef") {
                    Ok(_) | Err(ChannelError::WouldBlock | ChannelError::Closed) => {}
                    Err(ChannelError::Corrupt(_)) => {
                        prop_assert!(matches!(p.try_send(&mem, b""),
                            Err(ChannelError::Corrupt(_))));
                    }
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
                let _ = p.prepare_wait(&mem);
            }
        }

        /// Random header and slot bytes from the start (an arbitrary page
        /// mapped as a ring): attach refuses it or every receive is valid
        /// or an error; a consumer never takes more than `capacity`
        /// messages without the producer's count moving.
        #[test]
        fn random_ring_bytes_are_valid_or_corrupt(
            words in proptest::collection::vec(any::<u64>(), 48),
            fix_magic in any::<bool>(),
            tail in 0u64..12,
        ) {
            let geom = Geometry::fit(HEADER_BYTES + 4 * 24, 16).unwrap();
            let mem = VecMem::new(words.len() * 8);
            for (i, w) in words.iter().enumerate() {
                mem.store(i * 8, *w, Relaxed);
            }
            if fix_magic {
                mem.store(MAGIC_OFF, MAGIC, Relaxed);
                mem.store(GEOMETRY_OFF, geom.word(), Relaxed);
                mem.store(TAIL_OFF, tail, Relaxed);
            }
            let Ok(mut c) = Consumer::attach(&mem, geom) else {
                prop_assert!(!fix_magic);
                return Ok(());
            };
            let mut buf = [0u8; 16];
            let mut got = 0;
            while let Ok(d) = c.try_recv(&mem, &mut buf) {
                prop_assert!(d.len <= 16);
                got += 1;
                prop_assert!(got <= 4);
            }
        }
    }
}

/// Model checks of the protocol: run with
/// `RUSTFLAGS="--cfg loom" cargo test -p libos-async --lib --release channel::ring::loom`.
#[cfg(all(test, loom))]
mod loom {
    use super::*;
    use ::loom::sync::Arc;
    use ::loom::sync::atomic::{AtomicBool, AtomicU64};
    use ::loom::thread;
    use core::sync::atomic::Ordering::AcqRel;
    use std::vec::Vec;

    /// Ring memory made of loom atomics (slot contents relaxed, so only
    /// the counters' acquire/release can order them).
    struct LoomMem(Vec<AtomicU64>);

    impl SharedMem for LoomMem {
        fn size(&self) -> usize {
            self.0.len() * 8
        }
        fn load(&self, off: usize, order: Ordering) -> u64 {
            self.0[off / 8].load(order)
        }
        fn store(&self, off: usize, value: u64, order: Ordering) {
            self.0[off / 8].store(value, order)
        }
        fn swap(&self, off: usize, value: u64, order: Ordering) -> u64 {
            self.0[off / 8].swap(value, order)
        }
        fn compare_exchange(&self, off: usize, current: u64, new: u64) -> Result<u64, u64> {
            self.0[off / 8].compare_exchange(current, new, AcqRel, Acquire)
        }
    }

    fn new_ring(capacity: usize) -> (Arc<LoomMem>, Geometry) {
        let geom = Geometry::fit(HEADER_BYTES + capacity * 16, 8).unwrap();
        let mem = LoomMem((0..geom.bytes() / 8).map(|_| AtomicU64::new(0)).collect());
        init(&mem, geom).unwrap();
        (Arc::new(mem), geom)
    }

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound.get_or_insert(3);
        builder.check(f);
    }

    /// `n` messages through a ring of `capacity` slots, both sides polling
    /// (and yielding) when they cannot progress: every message arrives
    /// once, in order, with its contents (wrap-around when `n > capacity`).
    fn spsc(capacity: usize, n: u64) {
        let (mem, geom) = new_ring(capacity);
        let pmem = mem.clone();
        let producer = thread::spawn(move || {
            let mut p = Producer::attach(&*pmem, geom).unwrap();
            let mut i = 0;
            while i < n {
                match p.try_send(&*pmem, &(100 + i).to_le_bytes()) {
                    Ok(_) => i += 1,
                    Err(ChannelError::WouldBlock) => thread::yield_now(),
                    Err(e) => panic!("{e:?}"),
                }
            }
        });
        let mut c = Consumer::attach(&*mem, geom).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        while (got.len() as u64) < n {
            match c.try_recv(&*mem, &mut buf) {
                Ok(d) => {
                    assert_eq!(d.len, 8);
                    got.push(u64::from_le_bytes(buf));
                }
                Err(ChannelError::WouldBlock) => thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (0..n).map(|i| 100 + i).collect::<Vec<_>>());
    }

    #[test]
    fn one_slot_ring_wraps_around() {
        model(|| spsc(1, 3));
    }

    #[test]
    fn two_slot_ring_wraps_around() {
        model(|| spsc(2, 3));
    }

    /// The sleep hand-over: a consumer that registers `WAITING` (and would
    /// sleep) is always told about by the producer's send (`wake_peer`),
    /// so no wake-up is lost; one that does not register finds the message.
    #[test]
    fn no_lost_wake_up() {
        model(|| {
            let (mem, geom) = new_ring(2);
            let woken = Arc::new(AtomicBool::new(false));
            let (pmem, pwoken) = (mem.clone(), woken.clone());
            let producer = thread::spawn(move || {
                let mut p = Producer::attach(&*pmem, geom).unwrap();
                let d = p.try_send(&*pmem, &7u64.to_le_bytes()).unwrap();
                if d.wake_peer {
                    pwoken.store(true, Ordering::SeqCst);
                }
            });
            let mut c = Consumer::attach(&*mem, geom).unwrap();
            let mut buf = [0u8; 8];
            let first = c.try_recv(&*mem, &mut buf);
            let slept = match first {
                Ok(_) => false,
                Err(ChannelError::WouldBlock) => match c.prepare_wait(&*mem).unwrap() {
                    Wait::Ready => false,
                    Wait::Sleep { off, value } => {
                        // "Sleep" until the word changes.
                        while mem.load(off, Acquire) == value {
                            thread::yield_now();
                        }
                        true
                    }
                },
                Err(e) => panic!("{e:?}"),
            };
            producer.join().unwrap();
            if slept {
                assert!(woken.load(Ordering::SeqCst), "a sleeper was not woken");
            }
            let d = first.or_else(|_| c.try_recv(&*mem, &mut buf)).unwrap();
            assert_eq!((d.len, u64::from_le_bytes(buf)), (8, 7));
            assert_eq!(c.try_recv(&*mem, &mut buf), Err(ChannelError::WouldBlock));
        });
    }

    /// The same for a producer waiting for room.
    #[test]
    fn no_lost_wake_up_when_full() {
        model(|| {
            let (mem, geom) = new_ring(1);
            let mut p = Producer::attach(&*mem, geom).unwrap();
            p.try_send(&*mem, &1u64.to_le_bytes()).unwrap();
            let woken = Arc::new(AtomicBool::new(false));
            let (cmem, cwoken) = (mem.clone(), woken.clone());
            let consumer = thread::spawn(move || {
                let mut c = Consumer::attach(&*cmem, geom).unwrap();
                let mut buf = [0u8; 8];
                let d = c.try_recv(&*cmem, &mut buf).unwrap();
                if d.wake_peer {
                    cwoken.store(true, Ordering::SeqCst);
                }
            });
            let slept = match p.try_send(&*mem, &2u64.to_le_bytes()) {
                Ok(_) => false,
                Err(ChannelError::WouldBlock) => match p.prepare_wait(&*mem).unwrap() {
                    Wait::Ready => false,
                    Wait::Sleep { off, value } => {
                        while mem.load(off, Acquire) == value {
                            thread::yield_now();
                        }
                        true
                    }
                },
                Err(e) => panic!("{e:?}"),
            };
            consumer.join().unwrap();
            if slept {
                assert!(woken.load(Ordering::SeqCst), "a sleeper was not woken");
            }
        });
    }
}
