//! The kernel side of the submission/completion ring ([`abi::ring`]).
//!
//! The ring lives in frames the environment owns; the machine layer maps
//! them, pins them and hands this module a [`RingMemory`]: narrow
//! accessors to the header's indices and to entries by slot. Everything
//! else — which entries to consume, how to validate them, link chains,
//! where completions go and when to stop — is decided here, by a [`RingState`]
//! that keeps the kernel's private copies of its indices. On the host the
//! tests implement [`RingMemory`] over plain vectors (and over loom atomics
//! to model-check the acquire/release protocol).
//!
//! # Protocol
//!
//! [`RingState::submit`] loads `sq_tail` (acquire) and `cq_head` (acquire)
//! once each, copies every entry it consumes once and looks only at the
//! copy, writes the completions, then stores `cq_tail` (release) and
//! finally `sq_head` (release). A libOS that sees the new `sq_head`
//! therefore also sees the completions of the entries it covers, and may
//! reuse those submission slots: the kernel has finished reading them.
//!
//! The copy of an entry is taken in two parts, each word read exactly once:
//! the head word and `user_data` ([`RingMemory::sq_head`]) of every entry, and
//! the six arguments ([`RingMemory::sq_args`]) only of an entry handed to `exec` — a
//! `Nop`, a malformed or a canceled entry needs none, so a batch of `Nop`s
//! costs two loads per entry.
//!
//! Each consumed entry gets exactly one completion with its `user_data`:
//! * `InvalidArgument` if its opcode is not an [`Op`], it has flags outside
//!   [`SQE_FLAGS`] or a non-zero reserved byte;
//! * otherwise `Canceled` if an earlier entry of its link chain failed;
//! * otherwise, for a `Nop`, `Ok(0)`, answered here without `exec`;
//! * otherwise whatever the caller's `exec` decides ([`Outcome::Done`]), or,
//!   for operations that finish later (timers), a completion the caller
//!   posts with [`RingState::complete`] ([`Outcome::Pending`]).
//!
//! # Link chains
//!
//! [`SQE_LINK`] on an entry means the *next* entry belongs to the same
//! chain; a chain ends at the first entry without it. When an entry of a
//! chain fails (its completion is an error: `InvalidArgument`, `Canceled`
//! or an error from `exec`), every later entry of the chain completes with
//! `Canceled` without running. The link bit is read from the raw flags even
//! of an entry rejected as malformed, so a malformed link cancels the rest
//! of its chain. A [`Outcome::Pending`] entry counts as a success for its
//! chain (its eventual result does not cancel anything). Chains may span
//! several `submit` calls: the "chain failed" state lives in the
//! [`RingState`].
//!
//! # A hostile libOS
//!
//! The libOS may write anything into the header and the entries at any
//! time, including while the kernel is working. The kernel relies on none
//! of it:
//! * **Private indices.** `sq_head` and `cq_tail` are kept in the
//!   [`RingState`] and only ever *stored* to the header; the only header
//!   values read are `sq_tail` and `cq_head`, once per call.
//! * **Masked slots.** [`RingMemory`] is handed free-running indices and
//!   wraps them itself with a power-of-two mask it owns (the kernel's, set
//!   at registration, never read from the header), so no index the libOS
//!   influences can reach outside a queue.
//! * **Bounded work.** One `submit` consumes at most
//!   `min(max, sq_entries, free completion slots)` entries and does O(1)
//!   work per entry; nothing loops on shared memory.
//! * **Bad index rule.** A `sq_tail` more than `sq_entries` ahead of the
//!   kernel's `sq_head` (wrapping arithmetic; this includes a tail moved
//!   backwards) raises [`RING_ERR_BAD_INDEX`] and consumes nothing.
//! * **No overwriting.** Completion space is
//!   `cq_entries - (cq_tail - cq_head) - reserved`. A `cq_head` ahead of the
//!   kernel's `cq_tail`, or more than `cq_entries` behind it, means "no free
//!   space": the kernel stops rather than overwrite a completion the libOS
//!   may not have read.
//! * **Overflow rule.** When completion space runs out before the
//!   submissions do, `submit` stops early and counts one `overflow`. The
//!   unconsumed submissions stay in the queue: nothing is lost.
//! * **Deferred completions never get lost.** A [`Outcome::Pending`] entry
//!   reserves a completion slot when it is consumed; later submissions
//!   cannot use it. [`RingState::complete`] fills a reserved slot without
//!   looking at `cq_head` again (a libOS that moved `cq_head` backwards in
//!   the meantime only confuses itself).
//! * **Torn entries.** An entry the libOS rewrites while it is being copied
//!   (the head, then perhaps the arguments) yields a mixture of old and new
//!   words; the copy is validated like any other entry, and no word is read
//!   twice, so no decision is taken on a value that changes under it.

use abi::Error;
use abi::ring::{
    CqEntry, MAX_ENTRIES, OP_COUNT, Op, RING_ERR_BAD_INDEX, SQE_FLAGS, SQE_LINK, SqEntry,
};

/// The ring's memory as the kernel sees it.
///
/// The kernel implements it over the pinned frames of a registered ring
/// (with a table of each slot's address, so that an entry costs one load to
/// find whatever page it lies in); the tests implement it over vectors or
/// loom atomics. Entries are named by their free-running *index* (the value
/// of `sq_head` or `cq_tail` that reaches them): index `i` is slot
/// `i mod sq_entries` (or `cq_entries`), and the implementation does the
/// wrapping — with a power-of-two mask it owns, so no slot it computes can
/// be out of range.
pub trait RingMemory {
    /// The header's `sq_tail`, loaded with acquire ordering.
    fn load_sq_tail(&self) -> u32;
    /// The header's `cq_head`, loaded with acquire ordering.
    fn load_cq_head(&self) -> u32;
    /// Stores the header's `sq_head` with release ordering.
    fn store_sq_head(&self, v: u32);
    /// Stores the header's `cq_tail` with release ordering.
    fn store_cq_tail(&self, v: u32);
    /// A copy of the first two words of submission `index`: its head word
    /// ([`SqEntry::head_word`]: opcode, flags, reserved bytes) and its
    /// `user_data`.
    fn sq_head(&self, index: u32) -> [u64; 2];
    /// A copy of the six argument words of submission `index`.
    fn sq_args(&self, index: u32) -> [u64; 6];
    /// Writes completion `index`.
    fn cq_write(&self, index: u32, e: CqEntry);
    /// `header.overflow += 1` (wrapping).
    fn add_overflow(&self);
    /// `header.errors |= bits`.
    fn raise_error(&self, bits: u32);
}

/// What the caller did with one valid, non-canceled submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Finished: complete it now with this result.
    Done(Result<u64, Error>),
    /// Started; the caller will post its completion later with
    /// [`RingState::complete`]. A completion slot is reserved for it now.
    Pending,
    /// Not now: `submit` stops before this entry and leaves it queued, so
    /// that a later `submit` (whose `exec` can run it) copies it afresh.
    /// The kernel's fast path uses it for everything but Nops.
    Defer,
}

/// What [`RingState::submit_batch`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// Entries consumed.
    pub consumed: u32,
    /// It stopped, without consuming it, at an entry `exec` answered with
    /// [`Outcome::Defer`].
    pub deferred: bool,
}

/// What [`RingState::submit`] does with an entry that is not a live Nop.
enum Slow {
    /// Complete it with this encoded result; whether it failed.
    Complete(u64, bool),
    /// Consumed; its completion comes later (a slot is reserved).
    Pending,
    /// Leave it queued and stop.
    Defer,
}

/// Checks a submission's format: a defined opcode, only defined flags and
/// zero reserved bytes. Returns its op, or `InvalidArgument`.
pub fn validate(e: &SqEntry) -> Result<Op, Error> {
    if !well_formed(e.head_word()) {
        return Err(Error::InvalidArgument);
    }
    Op::from_number(e.opcode).ok_or(Error::InvalidArgument)
}

/// The bits of an entry's head word that may be set: the opcode byte and
/// the defined flags.
const HEAD_BITS: u64 = 0xff | (SQE_FLAGS as u64) << 8;

/// [`validate`] on the head word ([`SqEntry::head_word`]): a defined
/// opcode, no flag outside [`SQE_FLAGS`], zero reserved bytes.
#[inline]
fn well_formed(head: u64) -> bool {
    head & !HEAD_BITS == 0 && (head as u8) < OP_COUNT
}

/// The bits that may be set in the head word of a well-formed `Nop`:
/// [`SQE_LINK`] (its opcode is 0).
const NOP_HEAD_BITS: u64 = (SQE_LINK as u64) << 8;
const _: () = assert!(Op::Nop as u8 == 0 && SQE_FLAGS & SQE_LINK != 0);

/// The head word's [`SQE_LINK`] bit.
#[inline]
fn links(head: u64) -> bool {
    (head >> 8) as u8 & SQE_LINK != 0
}

/// The kernel's own view of one ring: its sizes and its private copies of
/// the indices it owns (never re-read from the shared header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingState {
    sq_entries: u32,
    cq_entries: u32,
    /// Next submission to consume.
    sq_head: u32,
    /// One past the last completion posted.
    cq_tail: u32,
    /// Completion slots owed to [`Outcome::Pending`] entries.
    reserved: u32,
    /// An entry of the current link chain failed.
    chain_failed: bool,
}

impl RingState {
    /// The state of a freshly registered ring (all indices 0). Both sizes
    /// must be powers of two in `1..=MAX_ENTRIES`, else `InvalidArgument`.
    pub fn new(sq_entries: u32, cq_entries: u32) -> Result<RingState, Error> {
        let ok = |n: u32| n.is_power_of_two() && n <= MAX_ENTRIES;
        if !ok(sq_entries) || !ok(cq_entries) {
            return Err(Error::InvalidArgument);
        }
        Ok(RingState {
            sq_entries,
            cq_entries,
            sq_head: 0,
            cq_tail: 0,
            reserved: 0,
            chain_failed: false,
        })
    }

    /// Number of submission entries.
    pub const fn sq_entries(&self) -> u32 {
        self.sq_entries
    }

    /// Number of completion entries.
    pub const fn cq_entries(&self) -> u32 {
        self.cq_entries
    }

    /// The kernel's `sq_head`: submissions consumed so far (wrapping).
    pub const fn sq_head(&self) -> u32 {
        self.sq_head
    }

    /// The kernel's `cq_tail`: completions posted so far (wrapping).
    pub const fn cq_tail(&self) -> u32 {
        self.cq_tail
    }

    /// Completions still owed to [`Outcome::Pending`] entries.
    pub const fn reserved(&self) -> u32 {
        self.reserved
    }

    /// Whether the next entry is canceled because the current link chain
    /// already failed.
    pub const fn chain_failed(&self) -> bool {
        self.chain_failed
    }

    /// Stores the kernel's `sq_head` and `cq_tail` into the header (release),
    /// e.g. to initialise it at registration or repair a scribbled one.
    pub fn publish(&self, mem: &impl RingMemory) {
        mem.store_cq_tail(self.cq_tail);
        mem.store_sq_head(self.sq_head);
    }

    /// Consumes up to `max` submissions and returns how many it consumed.
    ///
    /// Each one is copied once and validated; a malformed one completes
    /// with `InvalidArgument`, one whose chain already failed with
    /// `Canceled`, a `Nop` with `Ok(0)`, and the others are handed to `exec`
    /// (which sees only entries [`validate`] accepts, never a `Nop`). Stops
    /// early, counting one overflow, when no completion slot is free
    /// (reserved slots are not free), and, without consuming it, at an
    /// entry `exec` answers with [`Outcome::Defer`]. A `sq_tail` more than
    /// `sq_entries` ahead raises [`RING_ERR_BAD_INDEX`] and consumes nothing.
    #[inline]
    pub fn submit(
        &mut self,
        mem: &impl RingMemory,
        max: u32,
        exec: impl FnMut(&SqEntry) -> Outcome,
    ) -> u32 {
        self.submit_batch(mem, max, exec).consumed
    }

    /// [`RingState::submit`], saying also whether it stopped at an entry
    /// `exec` deferred.
    #[inline]
    pub fn submit_batch(
        &mut self,
        mem: &impl RingMemory,
        max: u32,
        mut exec: impl FnMut(&SqEntry) -> Outcome,
    ) -> Submitted {
        let nothing = Submitted { consumed: 0, deferred: false };
        let available = mem.load_sq_tail().wrapping_sub(self.sq_head);
        if available > self.sq_entries {
            mem.raise_error(RING_ERR_BAD_INDEX);
            return nothing;
        }
        let wanted = available.min(max);
        if wanted == 0 {
            return nothing;
        }
        let count = wanted.min(self.free_completion_slots(mem));
        if count < wanted {
            mem.add_overflow();
            if count == 0 {
                return nothing;
            }
        }

        // The inner loop is the common case, small enough to stay in
        // registers: well-formed Nops in a live chain, two loads and two
        // stores each. The first other entry, already read, goes out of
        // line to `slow`; then the inner loop resumes after it.
        let (mut sq_head, mut cq_tail) = (self.sq_head, self.cq_tail);
        let end = sq_head.wrapping_add(count);
        let mut chain_failed = self.chain_failed;
        while sq_head != end {
            let index = sq_head;
            let [head, user_data] = mem.sq_head(index);
            if head & !NOP_HEAD_BITS == 0 && !chain_failed {
                mem.cq_write(cq_tail, CqEntry { user_data, result: 0 });
            } else {
                match self.slow(head, user_data, chain_failed, || mem.sq_args(index), &mut exec) {
                    Slow::Complete(result, failed) => {
                        mem.cq_write(cq_tail, CqEntry { user_data, result });
                        chain_failed = failed && links(head);
                    }
                    Slow::Pending => {
                        chain_failed = false;
                        sq_head = sq_head.wrapping_add(1);
                        continue;
                    }
                    Slow::Defer => break,
                }
            }
            cq_tail = cq_tail.wrapping_add(1);
            sq_head = sq_head.wrapping_add(1);
        }
        let submitted =
            Submitted { consumed: sq_head.wrapping_sub(self.sq_head), deferred: sq_head != end };
        self.chain_failed = chain_failed;
        self.cq_tail = cq_tail;
        mem.store_cq_tail(cq_tail);
        self.sq_head = sq_head;
        mem.store_sq_head(sq_head);
        submitted
    }

    /// [`RingState::submit`] for an entry that is not a well-formed Nop in a
    /// live chain.
    #[inline(never)]
    fn slow(
        &mut self,
        head: u64,
        user_data: u64,
        chain_failed: bool,
        args: impl FnOnce() -> [u64; 6],
        exec: &mut impl FnMut(&SqEntry) -> Outcome,
    ) -> Slow {
        if !well_formed(head) {
            Slow::Complete(Error::InvalidArgument.to_raw(), true)
        } else if chain_failed {
            Slow::Complete(Error::Canceled.to_raw(), true)
        } else {
            match exec(&SqEntry::from_parts(head, user_data, args())) {
                Outcome::Done(result) => Slow::Complete(abi::encode(result), result.is_err()),
                Outcome::Pending => {
                    self.reserved += 1;
                    Slow::Pending
                }
                Outcome::Defer => Slow::Defer,
            }
        }
    }

    /// Posts the completion of an entry `exec` answered with
    /// [`Outcome::Pending`], in the slot reserved for it. Call it exactly
    /// once per pending entry. (Called without a reservation — a kernel
    /// bug — it posts only into a free slot, and otherwise drops the
    /// completion and counts an overflow.)
    pub fn complete(&mut self, mem: &impl RingMemory, user_data: u64, result: Result<u64, Error>) {
        if self.reserved > 0 {
            self.reserved -= 1;
        } else if self.free_completion_slots(mem) == 0 {
            mem.add_overflow();
            return;
        }
        self.post(mem, user_data, result);
        mem.store_cq_tail(self.cq_tail);
    }

    /// Completions waiting for the libOS: `cq_tail - cq_head`, clamped to
    /// `0..=cq_entries` (a `cq_head` ahead of `cq_tail` counts as 0, one
    /// more than `cq_entries` behind as `cq_entries`).
    pub fn pending_completions(&self, mem: &impl RingMemory) -> u32 {
        let used = self.cq_tail.wrapping_sub(mem.load_cq_head());
        if (used as i32) < 0 { 0 } else { used.min(self.cq_entries) }
    }

    /// Completion slots neither holding an unread completion nor reserved:
    /// 0 if `cq_head` is ahead of `cq_tail` or more than `cq_entries` behind.
    pub fn free_completion_slots(&self, mem: &impl RingMemory) -> u32 {
        let used = self.cq_tail.wrapping_sub(mem.load_cq_head());
        if used > self.cq_entries {
            return 0;
        }
        (self.cq_entries - used).saturating_sub(self.reserved)
    }

    /// Writes one completion at `cq_tail` (without publishing the tail).
    fn post(&mut self, mem: &impl RingMemory, user_data: u64, result: Result<u64, Error>) {
        mem.cq_write(self.cq_tail, CqEntry { user_data, result: abi::encode(result) });
        self.cq_tail = self.cq_tail.wrapping_add(1);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use abi::decode;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::{Cell, RefCell};
    use proptest::prelude::*;

    /// A ring in plain memory, with the libOS's side of the protocol.
    struct VecRing {
        sq_head: Cell<u32>,
        sq_tail: Cell<u32>,
        cq_head: Cell<u32>,
        cq_tail: Cell<u32>,
        overflow: Cell<u32>,
        errors: Cell<u32>,
        sqes: RefCell<Vec<SqEntry>>,
        cqes: RefCell<Vec<CqEntry>>,
        /// Per completion slot: written by the kernel, not yet read.
        unread: RefCell<Vec<bool>>,
        /// Panic when the kernel overwrites an unread completion, or the
        /// libOS reads a slot the kernel has not rewritten.
        strict: bool,
        /// Completions the kernel wrote.
        writes: Cell<u32>,
        /// The libOS's private indices.
        lib_sq_tail: Cell<u32>,
        lib_cq_head: Cell<u32>,
    }

    impl VecRing {
        fn new(sq: u32, cq: u32) -> VecRing {
            VecRing {
                sq_head: Cell::new(0),
                sq_tail: Cell::new(0),
                cq_head: Cell::new(0),
                cq_tail: Cell::new(0),
                overflow: Cell::new(0),
                errors: Cell::new(0),
                sqes: RefCell::new(vec![SqEntry::default(); sq as usize]),
                cqes: RefCell::new(vec![CqEntry::default(); cq as usize]),
                unread: RefCell::new(vec![false; cq as usize]),
                strict: true,
                writes: Cell::new(0),
                lib_sq_tail: Cell::new(0),
                lib_cq_head: Cell::new(0),
            }
        }

        fn sq_len(&self) -> u32 {
            self.sqes.borrow().len() as u32
        }

        fn cq_len(&self) -> u32 {
            self.cqes.borrow().len() as u32
        }

        /// libOS: queues `e` if the kernel's published `sq_head` leaves room.
        fn push(&self, e: SqEntry) -> bool {
            let tail = self.lib_sq_tail.get();
            if tail.wrapping_sub(self.sq_head.get()) >= self.sq_len() {
                return false;
            }
            let slot = (tail & (self.sq_len() - 1)) as usize;
            self.sqes.borrow_mut()[slot] = e;
            self.lib_sq_tail.set(tail.wrapping_add(1));
            self.sq_tail.set(tail.wrapping_add(1));
            true
        }

        /// libOS: reads up to `max` completions and publishes `cq_head`.
        fn drain(&self, max: u32) -> Vec<CqEntry> {
            let mut head = self.lib_cq_head.get();
            let tail = self.cq_tail.get();
            let mut out = Vec::new();
            while head != tail && (out.len() as u32) < max.min(self.cq_len()) {
                let slot = (head & (self.cq_len() - 1)) as usize;
                let mut unread = self.unread.borrow_mut();
                assert!(!self.strict || unread[slot], "read a stale completion");
                unread[slot] = false;
                out.push(self.cqes.borrow()[slot]);
                head = head.wrapping_add(1);
            }
            self.lib_cq_head.set(head);
            self.cq_head.set(head);
            out
        }

        fn drain_all(&self) -> Vec<CqEntry> {
            self.drain(u32::MAX)
        }
    }

    impl RingMemory for VecRing {
        fn load_sq_tail(&self) -> u32 {
            self.sq_tail.get()
        }
        fn load_cq_head(&self) -> u32 {
            self.cq_head.get()
        }
        fn store_sq_head(&self, v: u32) {
            self.sq_head.set(v);
        }
        fn store_cq_tail(&self, v: u32) {
            self.cq_tail.set(v);
        }
        fn sq_head(&self, index: u32) -> [u64; 2] {
            let e = self.sqes.borrow()[(index % self.sq_len()) as usize];
            [e.head_word(), e.user_data]
        }
        fn sq_args(&self, index: u32) -> [u64; 6] {
            self.sqes.borrow()[(index % self.sq_len()) as usize].args
        }
        fn cq_write(&self, index: u32, e: CqEntry) {
            let slot = (index % self.cq_len()) as usize;
            let mut unread = self.unread.borrow_mut();
            assert!(!self.strict || !unread[slot], "overwrote unread completion in slot {slot}");
            unread[slot] = true;
            self.cqes.borrow_mut()[slot] = e;
            self.writes.set(self.writes.get().wrapping_add(1));
        }
        fn add_overflow(&self) {
            self.overflow.set(self.overflow.get().wrapping_add(1));
        }
        fn raise_error(&self, bits: u32) {
            self.errors.set(self.errors.get() | bits);
        }
    }

    fn sqe(op: Op, flags: u8, user_data: u64) -> SqEntry {
        SqEntry { opcode: op as u8, flags, user_data, ..SqEntry::default() }
    }

    fn nop(user_data: u64) -> SqEntry {
        sqe(Op::Nop, 0, user_data)
    }

    /// The tests' `exec` (and the model's expectation): Nop → 0 (which
    /// `submit` answers itself, never calling `exec`), Timer → pending, anything else succeeds
    /// with `args[1] % 1000` if `args[0] == 0` and fails with `Busy`
    /// otherwise.
    fn rule(e: &SqEntry) -> Outcome {
        match Op::from_number(e.opcode).expect("exec saw an invalid op") {
            Op::Nop => Outcome::Done(Ok(0)),
            Op::Timer => Outcome::Pending,
            _ if e.args[0] == 0 => Outcome::Done(Ok(e.args[1] % 1000)),
            _ => Outcome::Done(Err(Error::Busy)),
        }
    }

    fn results(cqes: &[CqEntry]) -> Vec<(u64, Result<u64, Error>)> {
        cqes.iter().map(|c| (c.user_data, decode(c.result))).collect()
    }

    #[test]
    fn sizes_must_be_powers_of_two_up_to_max() {
        assert!(RingState::new(1, 1).is_ok());
        assert!(RingState::new(MAX_ENTRIES, MAX_ENTRIES).is_ok());
        for (sq, cq) in [(0, 4), (4, 0), (3, 4), (4, 6), (MAX_ENTRIES * 2, 4), (4, u32::MAX)] {
            assert_eq!(RingState::new(sq, cq), Err(Error::InvalidArgument));
        }
    }

    #[test]
    fn nop_batch_echoes_user_data_in_order() {
        let ring = VecRing::new(8, 8);
        let mut k = RingState::new(8, 8).unwrap();
        for i in 0..8 {
            assert!(ring.push(nop(100 + i)));
        }
        assert!(!ring.push(nop(0)), "the submission queue is full");
        // Nops are answered by the protocol itself, without `exec`.
        assert_eq!(k.submit(&ring, 8, |_| panic!("exec saw a Nop")), 8);
        assert_eq!((ring.sq_head.get(), ring.cq_tail.get()), (8, 8));
        assert_eq!(k.pending_completions(&ring), 8);
        let got = results(&ring.drain_all());
        assert_eq!(got, (100..108).map(|u| (u, Ok(0))).collect::<Vec<_>>());
        assert_eq!(k.pending_completions(&ring), 0);
        assert_eq!((ring.overflow.get(), ring.errors.get()), (0, 0));
        // Nothing queued: nothing happens.
        assert_eq!(k.submit(&ring, 8, rule), 0);
        assert_eq!(ring.overflow.get(), 0);
    }

    #[test]
    fn max_limits_a_batch() {
        let ring = VecRing::new(8, 8);
        let mut k = RingState::new(8, 8).unwrap();
        for i in 0..5 {
            ring.push(nop(i));
        }
        assert_eq!(k.submit(&ring, 0, rule), 0);
        assert_eq!(k.submit(&ring, 2, rule), 2);
        assert_eq!(k.submit(&ring, 2, rule), 2);
        assert_eq!(k.submit(&ring, 2, rule), 1);
        assert_eq!(ring.overflow.get(), 0, "max is not an overflow");
        assert_eq!(ring.drain_all().len(), 5);
    }

    #[test]
    fn wraps_around_over_many_rounds() {
        for (sq, cq) in [(4, 8), (8, 4), (4, 4), (1, 1), (2, 8)] {
            let ring = VecRing::new(sq, cq);
            let mut k = RingState::new(sq, cq).unwrap();
            let total = 5000u64;
            let (mut next, mut got) = (0u64, Vec::new());
            let mut round = 0u32;
            while (got.len() as u64) < total {
                // Vary the batch sizes so that the indices drift against
                // each other.
                for _ in 0..=(round % 5) {
                    if next < total && ring.push(nop(next)) {
                        next += 1;
                    }
                }
                k.submit(&ring, 1 + round % 3, rule);
                got.extend(ring.drain(1 + round % 4).iter().map(|c| c.user_data));
                round += 1;
            }
            assert_eq!(got, (0..total).collect::<Vec<_>>(), "sq {sq} cq {cq}");
            assert_eq!(k.sq_head(), total as u32);
            assert_eq!(ring.errors.get(), 0);
        }
    }

    #[test]
    fn indices_wrap_past_u32_max() {
        let ring = VecRing::new(4, 4);
        let mut k = RingState::new(4, 4).unwrap();
        let start = u32::MAX - 5;
        k.sq_head = start;
        k.cq_tail = start;
        ring.lib_sq_tail.set(start);
        ring.sq_head.set(start);
        ring.sq_tail.set(start);
        ring.lib_cq_head.set(start);
        ring.cq_head.set(start);
        let mut got = Vec::new();
        for i in 0..40 {
            ring.push(nop(i));
            ring.push(nop(i + 1000));
            k.submit(&ring, 4, rule);
            got.extend(ring.drain_all().iter().map(|c| c.user_data));
        }
        assert_eq!(got.len(), 80);
        assert_eq!(ring.errors.get(), 0);
    }

    #[test]
    fn failing_middle_entry_cancels_the_rest_of_its_chain() {
        let ring = VecRing::new(8, 8);
        let mut k = RingState::new(8, 8).unwrap();
        let mut failing = sqe(Op::Map, SQE_LINK, 2);
        failing.args[0] = 1;
        ring.push(sqe(Op::Nop, SQE_LINK, 1));
        ring.push(failing);
        ring.push(sqe(Op::Nop, SQE_LINK, 3));
        ring.push(sqe(Op::Nop, 0, 4)); // the chain's last entry
        ring.push(nop(5)); // a new chain
        let mut ran = Vec::new();
        assert_eq!(
            k.submit(&ring, 8, |e| {
                ran.push(e.user_data);
                rule(e)
            }),
            5
        );
        assert_eq!(ran, [2], "only the Map runs: Nops never reach exec");
        assert_eq!(
            results(&ring.drain_all()),
            [
                (1, Ok(0)),
                (2, Err(Error::Busy)),
                (3, Err(Error::Canceled)),
                (4, Err(Error::Canceled)),
                (5, Ok(0)),
            ]
        );
        assert!(!k.chain_failed());
    }

    #[test]
    fn a_failing_last_entry_cancels_nothing() {
        let ring = VecRing::new(4, 4);
        let mut k = RingState::new(4, 4).unwrap();
        let mut failing = sqe(Op::Unmap, 0, 1);
        failing.args[0] = 1;
        ring.push(failing);
        ring.push(nop(2));
        k.submit(&ring, 4, rule);
        assert_eq!(results(&ring.drain_all()), [(1, Err(Error::Busy)), (2, Ok(0))]);
    }

    #[test]
    fn chains_span_submit_calls() {
        let ring = VecRing::new(4, 4);
        let mut k = RingState::new(4, 4).unwrap();
        let mut failing = sqe(Op::Protect, SQE_LINK, 1);
        failing.args[0] = 7;
        ring.push(failing);
        assert_eq!(k.submit(&ring, 4, rule), 1);
        assert!(k.chain_failed());
        ring.push(sqe(Op::Nop, SQE_LINK, 2));
        assert_eq!(k.submit(&ring, 4, rule), 1);
        ring.push(nop(3));
        ring.push(nop(4));
        assert_eq!(k.submit(&ring, 1, rule), 1);
        assert_eq!(k.submit(&ring, 1, rule), 1);
        assert_eq!(
            results(&ring.drain_all()),
            [
                (1, Err(Error::Busy)),
                (2, Err(Error::Canceled)),
                (3, Err(Error::Canceled)),
                (4, Ok(0)),
            ]
        );
    }

    #[test]
    fn malformed_entries_fail_and_their_link_bit_counts() {
        let ring = VecRing::new(8, 8);
        let mut k = RingState::new(8, 8).unwrap();
        let mut reserved = nop(1);
        reserved.reserved[5] = 1;
        ring.push(reserved);
        ring.push(SqEntry { opcode: 200, flags: SQE_LINK, user_data: 2, ..SqEntry::default() });
        ring.push(nop(3)); // canceled: the malformed entry linked to it
        ring.push(sqe(Op::Nop, 0x80 | SQE_LINK, 4)); // unknown flag
        ring.push(nop(5));
        ring.push(nop(6));
        k.submit(&ring, 8, rule);
        assert_eq!(
            results(&ring.drain_all()),
            [
                (1, Err(Error::InvalidArgument)),
                (2, Err(Error::InvalidArgument)),
                (3, Err(Error::Canceled)),
                (4, Err(Error::InvalidArgument)),
                (5, Err(Error::Canceled)),
                (6, Ok(0)),
            ]
        );
    }

    #[test]
    fn validate_accepts_exactly_the_defined_format() {
        assert_eq!(validate(&nop(0)), Ok(Op::Nop));
        assert_eq!(validate(&sqe(Op::SlotAlloc, SQE_LINK, 0)), Ok(Op::SlotAlloc));
        for n in abi::ring::OP_COUNT..=u8::MAX {
            let e = SqEntry { opcode: n, ..SqEntry::default() };
            assert_eq!(validate(&e), Err(Error::InvalidArgument));
        }
        for f in 0..=u8::MAX {
            let ok = f & !SQE_FLAGS == 0;
            assert_eq!(validate(&sqe(Op::Nop, f, 0)).is_ok(), ok);
        }
    }

    #[test]
    fn pending_entries_count_as_success_for_their_chain() {
        let ring = VecRing::new(4, 4);
        let mut k = RingState::new(4, 4).unwrap();
        ring.push(sqe(Op::Timer, SQE_LINK, 1));
        ring.push(nop(2));
        assert_eq!(k.submit(&ring, 4, rule), 2);
        assert_eq!(results(&ring.drain_all()), [(2, Ok(0))]);
        assert_eq!(k.reserved(), 1);
        k.complete(&ring, 1, Err(Error::Busy));
        assert_eq!(results(&ring.drain_all()), [(1, Err(Error::Busy))]);
        assert_eq!(k.reserved(), 0);
    }

    #[test]
    fn full_completion_queue_stops_consumption_without_loss() {
        let ring = VecRing::new(16, 4);
        let mut k = RingState::new(16, 4).unwrap();
        for i in 0..10 {
            ring.push(nop(i));
        }
        assert_eq!(k.submit(&ring, u32::MAX, rule), 4);
        assert_eq!(ring.overflow.get(), 1);
        assert_eq!(ring.sq_head.get(), 4, "the rest stays queued");
        assert_eq!(k.pending_completions(&ring), 4);
        assert_eq!(k.submit(&ring, u32::MAX, rule), 0, "still full");
        assert_eq!(ring.overflow.get(), 2);
        let mut got = ring.drain_all();
        assert_eq!(k.submit(&ring, u32::MAX, rule), 4);
        assert_eq!(ring.overflow.get(), 3, "six were left for four slots");
        got.extend(ring.drain(2));
        assert_eq!(k.submit(&ring, u32::MAX, rule), 2);
        assert_eq!(ring.overflow.get(), 3, "room for all that was left");
        got.extend(ring.drain_all());
        assert_eq!(
            got.iter().map(|c| c.user_data).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn deferred_completions_reserve_slots() {
        let ring = VecRing::new(8, 4);
        let mut k = RingState::new(8, 4).unwrap();
        for i in 0..3 {
            ring.push(sqe(Op::Timer, 0, i));
        }
        ring.push(nop(10));
        ring.push(nop(11));
        // Three timers reserve three slots; one is left for the first Nop.
        assert_eq!(k.submit(&ring, 8, rule), 4);
        assert_eq!((k.reserved(), ring.overflow.get()), (3, 1));
        assert_eq!(k.free_completion_slots(&ring), 0);
        assert_eq!(results(&ring.drain_all()), [(10, Ok(0))]);
        // The libOS read the Nop, but only that slot is free.
        assert_eq!(k.submit(&ring, 8, rule), 1);
        assert_eq!(k.submit(&ring, 8, rule), 0);
        assert_eq!(results(&ring.drain_all()), [(11, Ok(0))]);
        // The timers fire, out of order; their slots were kept for them.
        k.complete(&ring, 2, Ok(0));
        k.complete(&ring, 0, Ok(0));
        k.complete(&ring, 1, Err(Error::Canceled));
        assert_eq!(k.reserved(), 0);
        assert_eq!(results(&ring.drain_all()), [(2, Ok(0)), (0, Ok(0)), (1, Err(Error::Canceled))]);
    }

    #[test]
    fn complete_without_reservation_never_overwrites() {
        let ring = VecRing::new(4, 2);
        let mut k = RingState::new(4, 2).unwrap();
        k.complete(&ring, 7, Ok(1));
        k.complete(&ring, 8, Ok(2));
        k.complete(&ring, 9, Ok(3)); // no room: dropped and counted
        assert_eq!(ring.overflow.get(), 1);
        assert_eq!(results(&ring.drain_all()), [(7, Ok(1)), (8, Ok(2))]);
    }

    #[test]
    fn sq_tail_too_far_ahead_is_a_bad_index() {
        let ring = VecRing::new(4, 4);
        let mut k = RingState::new(4, 4).unwrap();
        ring.sq_tail.set(5);
        assert_eq!(k.submit(&ring, u32::MAX, |_| panic!("consumed a bad ring")), 0);
        assert_eq!(ring.errors.get(), RING_ERR_BAD_INDEX);
        assert_eq!((ring.sq_head.get(), ring.cq_tail.get(), k.sq_head()), (0, 0, 0));
        ring.sq_tail.set(u32::MAX / 2);
        assert_eq!(k.submit(&ring, u32::MAX, rule), 0);
        // Exactly sq_entries ahead is fine (the queue is full of Nops).
        ring.sq_tail.set(4);
        assert_eq!(k.submit(&ring, u32::MAX, rule), 4);
        assert_eq!(ring.drain_all().len(), 4);
    }

    #[test]
    fn sq_tail_moved_backwards_is_a_bad_index() {
        let ring = VecRing::new(4, 4);
        let mut k = RingState::new(4, 4).unwrap();
        for i in 0..3 {
            ring.push(nop(i));
        }
        assert_eq!(k.submit(&ring, u32::MAX, rule), 3);
        ring.sq_tail.set(1);
        assert_eq!(k.submit(&ring, u32::MAX, rule), 0);
        assert_eq!(ring.errors.get(), RING_ERR_BAD_INDEX);
        assert_eq!(k.sq_head(), 3);
        // Back to a sane tail: the kernel carries on from its own head.
        ring.sq_tail.set(3);
        ring.push(nop(3));
        assert_eq!(k.submit(&ring, u32::MAX, rule), 1);
        let got = ring.drain_all();
        assert_eq!(got.iter().map(|c| c.user_data).collect::<Vec<_>>(), [0, 1, 2, 3]);
    }

    #[test]
    fn scribbled_sq_head_and_cq_tail_are_never_read_back() {
        let ring = VecRing::new(4, 4);
        let mut k = RingState::new(4, 4).unwrap();
        ring.push(nop(0));
        ring.sq_head.set(0xdead_beef);
        ring.cq_tail.set(0x1234_5678);
        assert_eq!(k.submit(&ring, u32::MAX, rule), 1);
        assert_eq!((ring.sq_head.get(), ring.cq_tail.get()), (1, 1));
        ring.sq_head.set(77);
        k.publish(&ring);
        assert_eq!(ring.sq_head.get(), 1);
    }

    /// The kernel's fast path: `exec` defers whatever it is handed.
    fn defer(_: &SqEntry) -> Outcome {
        Outcome::Defer
    }

    #[test]
    fn a_deferred_entry_stays_queued_for_the_next_submit() {
        let ring = VecRing::new(8, 8);
        let mut k = RingState::new(8, 8).unwrap();
        ring.push(nop(1));
        ring.push(nop(2));
        ring.push(sqe(Op::Map, 0, 3));
        ring.push(nop(4));
        assert_eq!(k.submit(&ring, 8, defer), 2, "the Nops before the Map");
        assert_eq!((ring.sq_head.get(), ring.cq_tail.get(), k.reserved()), (2, 2, 0));
        assert_eq!(k.submit(&ring, 8, defer), 0, "still at the Map");
        assert_eq!(ring.overflow.get(), 0, "a deferral is not an overflow");
        assert_eq!(k.submit(&ring, 8, rule), 2, "the Map (copied afresh) and the last Nop");
        let got = results(&ring.drain_all());
        assert_eq!(got, vec![(1, Ok(0)), (2, Ok(0)), (3, Ok(0)), (4, Ok(0))]);
    }

    #[test]
    fn deferring_submit_still_answers_malformed_and_canceled_entries() {
        let ring = VecRing::new(8, 8);
        let mut k = RingState::new(8, 8).unwrap();
        let bad = SqEntry { opcode: 0xee, flags: SQE_LINK, user_data: 1, ..SqEntry::default() };
        ring.push(bad);
        ring.push(sqe(Op::Map, SQE_LINK, 2));
        ring.push(nop(3));
        ring.push(sqe(Op::Map, 0, 4));
        // None of the first three needs `exec`; the fourth (a fresh chain)
        // does, and stays queued.
        assert_eq!(k.submit(&ring, 8, defer), 3);
        let got = results(&ring.drain_all());
        let canceled = Err(Error::Canceled);
        assert_eq!(got, vec![(1, Err(Error::InvalidArgument)), (2, canceled), (3, canceled)]);
        assert!(!k.chain_failed(), "the chain ended at the Nop");
        assert_eq!(k.submit(&ring, 8, rule), 1);
        assert_eq!(results(&ring.drain_all()), vec![(4, Ok(0))]);
    }

    #[test]
    fn a_deferral_inside_a_chain_keeps_the_chain() {
        let ring = VecRing::new(8, 8);
        let mut k = RingState::new(8, 8).unwrap();
        let mut failing = sqe(Op::Map, SQE_LINK, 1);
        failing.args[0] = 1; // the rule fails it
        ring.push(failing);
        ring.push(nop(2));
        assert_eq!(k.submit(&ring, 8, defer), 0);
        assert_eq!(k.submit(&ring, 8, rule), 2);
        assert_eq!(
            results(&ring.drain_all()),
            vec![(1, Err(Error::Busy)), (2, Err(Error::Canceled))]
        );
    }

    #[test]
    fn garbage_cq_head_means_no_space() {
        let ring = VecRing::new(4, 4);
        let mut k = RingState::new(4, 4).unwrap();
        ring.push(nop(0));
        ring.push(nop(1));
        assert_eq!(k.submit(&ring, 1, rule), 1);
        let honest = ring.cq_head.get();
        // The kernel's cq_tail is 1; the libOS has read nothing (head 0).
        for garbage in
            [2, 100, 0x8000_0000, 0x8000_0001, 1u32.wrapping_sub(5), 1u32.wrapping_sub(1000)]
        {
            ring.cq_head.set(garbage);
            assert_eq!(k.submit(&ring, u32::MAX, |_| panic!("no room")), 0, "{garbage:#x}");
            assert_eq!(k.free_completion_slots(&ring), 0);
            let waiting = k.pending_completions(&ring);
            let ahead = (1u32.wrapping_sub(garbage) as i32) < 0;
            assert_eq!(waiting, if ahead { 0 } else { 4 }, "{garbage:#x}");
        }
        // Exactly cq_entries behind is a legitimately full queue... of which
        // only one completion is real; the kernel cannot tell and waits.
        ring.cq_head.set(1u32.wrapping_sub(4));
        assert_eq!(k.pending_completions(&ring), 4);
        ring.cq_head.set(honest);
        assert_eq!(k.submit(&ring, u32::MAX, rule), 1);
        assert_eq!(ring.drain_all().len(), 2);
        assert!(ring.overflow.get() >= 6);
    }

    /// A deterministic generator for the random-bytes test (xorshift64*).
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn random_bytes_in_entries_never_panic() {
        let ring = VecRing::new(8, 8);
        let mut k = RingState::new(8, 8).unwrap();
        let mut s = 0x1234_5678_9abc_def1;
        for _ in 0..2000 {
            let mut bytes = [0u8; 64];
            for chunk in bytes.chunks_mut(8) {
                chunk.copy_from_slice(&next(&mut s).to_le_bytes());
            }
            // Often make the format valid so that exec runs too.
            if bytes[1] & 1 == 0 {
                bytes[0] %= abi::ring::OP_COUNT;
                bytes[1] &= SQE_FLAGS;
                bytes[2..8].fill(0);
            }
            let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
            let e = SqEntry {
                opcode: bytes[0],
                flags: bytes[1],
                reserved: bytes[2..8].try_into().unwrap(),
                user_data: word(8),
                args: core::array::from_fn(|i| word(16 + 8 * i)),
            };
            assert!(ring.push(e));
            assert_eq!(k.submit(&ring, 1, rule), 1);
            if k.reserved() > 0 {
                k.complete(&ring, e.user_data, Ok(0));
            }
            let got = ring.drain_all();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].user_data, e.user_data);
            let result = decode(got[0].result);
            if validate(&e).is_err() {
                assert_eq!(result, Err(Error::InvalidArgument));
            }
        }
    }

    // ---- proptest: random libOS behaviour against the kernel ----

    /// One libOS or kernel step.
    #[derive(Clone, Debug)]
    enum Action {
        /// libOS queues these entries (as many as fit); `user_data` is
        /// replaced by a unique counter.
        Push(Vec<SqEntry>),
        /// Kernel: `submit(max)`; with `true`, the fast path's `exec`, which
        /// defers every entry it is handed.
        Submit(u32, bool),
        /// libOS reads up to this many completions.
        Drain(u32),
        /// Kernel: completes the pending entry at this index (modulo), with
        /// success or not.
        Complete(usize, bool),
        /// libOS writes a value into a header field (0..4: sq_head,
        /// sq_tail, cq_head, cq_tail), hostile runs only.
        ScribbleHeader(u8, u32),
        /// libOS overwrites a submission slot, hostile runs only.
        ScribbleEntry(u32, SqEntry),
    }

    fn entry() -> impl Strategy<Value = SqEntry> {
        let opcode = prop_oneof![Just(Op::Nop as u8), Just(Op::Timer as u8), 0..16u8, any::<u8>()];
        let flags = prop_oneof![4 => Just(0u8), 4 => Just(SQE_LINK), 1 => any::<u8>()];
        let reserved = prop_oneof![9 => Just([0u8; 6]), 1 => any::<[u8; 6]>()];
        (opcode, flags, reserved, 0..2u64, any::<u64>()).prop_map(
            |(opcode, flags, reserved, a0, a1)| SqEntry {
                opcode,
                flags,
                reserved,
                user_data: 0,
                args: [a0, a1, 0, 0, 0, 0],
            },
        )
    }

    fn action(hostile: bool) -> BoxedStrategy<Action> {
        let honest = prop_oneof![
            3 => prop::collection::vec(entry(), 0..10).prop_map(Action::Push),
            3 => (0..12u32, any::<bool>()).prop_map(|(max, fast)| Action::Submit(max, fast)),
            2 => (0..10u32).prop_map(Action::Drain),
            1 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Action::Complete(i, ok)),
        ];
        if !hostile {
            return honest.boxed();
        }
        let value = prop_oneof![any::<u32>(), 0..20u32, (u32::MAX - 20)..=u32::MAX];
        prop_oneof![
            6 => honest,
            1 => (0..4u8, value).prop_map(|(f, v)| Action::ScribbleHeader(f, v)),
            1 => (any::<u32>(), any::<[u64; 8]>()).prop_map(|(slot, w)| Action::ScribbleEntry(slot, SqEntry {
                opcode: w[0] as u8,
                flags: (w[0] >> 8) as u8,
                reserved: core::array::from_fn(|i| (w[0] >> (16 + 8 * i)) as u8),
                user_data: w[1],
                args: [w[2], w[3], w[4], w[5], w[6], w[7]],
            })),
        ]
        .boxed()
    }

    fn sizes() -> impl Strategy<Value = (u32, u32)> {
        (0..4u32, 0..4u32).prop_map(|(a, b)| (1 << a, 1 << b))
    }

    /// What a completion of each queued entry must say, computed from the
    /// entries in queue order (the order the kernel consumes them in).
    /// `None`: deferred (the result is whatever the test posts).
    struct Model {
        chain_failed: bool,
    }

    impl Model {
        fn expect(&mut self, e: &SqEntry) -> Option<Result<u64, Error>> {
            let result = if validate(e).is_err() {
                Some(Err(Error::InvalidArgument))
            } else if self.chain_failed {
                Some(Err(Error::Canceled))
            } else {
                match rule(e) {
                    Outcome::Done(r) => Some(r),
                    Outcome::Pending => None,
                    Outcome::Defer => unreachable!("the rule never defers"),
                }
            };
            self.chain_failed = matches!(result, Some(Err(_))) && e.flags & SQE_LINK != 0;
            result
        }
    }

    /// `k.submit(max)` with the tests' `exec` (`fast`: one that defers
    /// everything, as the kernel's fast path does), checking what must hold
    /// whatever the libOS did. Returns the count and whether it overflowed.
    fn checked_submit(
        k: &mut RingState,
        ring: &VecRing,
        max: u32,
        fast: bool,
        pending: &mut Vec<u64>,
    ) -> (u32, bool) {
        let (sq, cq) = (k.sq_entries(), k.cq_entries());
        let available = ring.sq_tail.get().wrapping_sub(k.sq_head());
        let free = k.free_completion_slots(ring);
        let (head, tail, writes) = (k.sq_head(), k.cq_tail(), ring.writes.get());
        let overflows = ring.overflow.get();
        let (mut execs, mut deferred) = (0, 0);
        let n = k.submit(ring, max, |e| {
            assert_ne!(e.opcode, Op::Nop as u8, "exec saw a Nop");
            assert_eq!(deferred, 0, "exec called after a deferral");
            if fast {
                deferred += 1;
                return Outcome::Defer;
            }
            execs += 1;
            let o = rule(e);
            if o == Outcome::Pending {
                pending.push(e.user_data);
            }
            o
        });
        assert!(n <= max && n <= sq && n <= free);
        assert!(execs <= n);
        assert_eq!(k.sq_head(), head.wrapping_add(n));
        assert_eq!(k.cq_tail().wrapping_sub(tail), ring.writes.get().wrapping_sub(writes));
        assert_eq!(k.reserved() as usize, pending.len());
        assert!(k.pending_completions(ring) <= cq);
        if available > sq {
            assert_eq!(n, 0);
            assert_ne!(ring.errors.get() & RING_ERR_BAD_INDEX, 0);
            return (n, false);
        }
        let wanted = available.min(max);
        if deferred == 0 {
            assert_eq!(n, wanted.min(free), "stopped only for lack of completion slots");
        } else {
            assert!(n < wanted.min(free), "a deferred entry stays queued");
        }
        let overflowed = free < wanted;
        assert_eq!(ring.overflow.get().wrapping_sub(overflows), u32::from(overflowed));
        (n, overflowed)
    }

    /// Runs `actions` over a ring; in honest runs, checks the full contract.
    fn run(sq: u32, cq: u32, actions: &[Action], hostile: bool) {
        let mut ring = VecRing::new(sq, cq);
        ring.strict = !hostile;
        let mut k = RingState::new(sq, cq).unwrap();
        let mut model = Model { chain_failed: false };
        let mut next_user_data = 1u64;
        // user_data → expected result (None: deferred), in queue order.
        let mut queued: Vec<(u64, Option<Result<u64, Error>>)> = Vec::new();
        let mut pending: Vec<u64> = Vec::new();
        let mut posted: Vec<(u64, Result<u64, Error>)> = Vec::new();
        let mut received: Vec<CqEntry> = Vec::new();
        let mut overflows = 0u32;
        let mut consumed_total = 0u32;

        for a in actions {
            match a {
                Action::Push(entries) => {
                    for e in entries {
                        let e = SqEntry { user_data: next_user_data, ..*e };
                        if !ring.push(e) {
                            break;
                        }
                        next_user_data += 1;
                        queued.push((e.user_data, model.expect(&e)));
                    }
                }
                Action::Submit(max, fast) => {
                    let (n, overflowed) = checked_submit(&mut k, &ring, *max, *fast, &mut pending);
                    consumed_total += n;
                    overflows += u32::from(overflowed);
                }
                Action::Drain(max) => received.extend(ring.drain(*max)),
                Action::Complete(i, ok) => {
                    if !pending.is_empty() {
                        let user_data = pending.remove(i % pending.len());
                        let result = if *ok { Ok(*i as u64 % 1000) } else { Err(Error::NoMemory) };
                        k.complete(&ring, user_data, result);
                        posted.push((user_data, result));
                    }
                }
                Action::ScribbleHeader(field, v) => {
                    let cell = match field {
                        0 => &ring.sq_head,
                        1 => &ring.sq_tail,
                        2 => &ring.cq_head,
                        _ => &ring.cq_tail,
                    };
                    cell.set(*v);
                    ring.lib_sq_tail.set(ring.sq_tail.get());
                    ring.lib_cq_head.set(ring.cq_head.get());
                }
                Action::ScribbleEntry(slot, e) => {
                    ring.sqes.borrow_mut()[(*slot % sq) as usize] = *e;
                }
            }
            assert!(k.pending_completions(&ring) <= cq);
        }
        assert_eq!(ring.overflow.get(), overflows);
        if hostile {
            return;
        }

        // Settle: fire every timer, drain, and consume until nothing is left.
        for _ in 0..4 * (queued.len() + 2) {
            for user_data in pending.drain(..) {
                k.complete(&ring, user_data, Ok(5));
                posted.push((user_data, Ok(5)));
            }
            received.extend(ring.drain_all());
            consumed_total += checked_submit(&mut k, &ring, u32::MAX, false, &mut pending).0;
        }
        received.extend(ring.drain_all());
        assert!(pending.is_empty());
        assert_eq!(consumed_total as usize, queued.len(), "everything queued was consumed");
        assert_eq!(received.len(), queued.len(), "one completion per submission");

        // Every submission completed exactly once, with the right result.
        let mut by_user_data: Vec<(u64, Result<u64, Error>)> = results(&received);
        by_user_data.sort_by_key(|&(u, _)| u);
        let deferred = |u: u64| posted.iter().find(|p| p.0 == u).map(|p| p.1);
        let expected: Vec<_> = queued
            .iter()
            .map(|&(u, r)| (u, r.unwrap_or_else(|| deferred(u).expect("deferred result posted"))))
            .collect();
        assert_eq!(by_user_data, expected);

        // Immediate completions arrive in queue order.
        let immediate: Vec<u64> = queued.iter().filter(|q| q.1.is_some()).map(|q| q.0).collect();
        let arrived: Vec<u64> =
            received.iter().map(|c| c.user_data).filter(|u| deferred(*u).is_none()).collect();
        assert_eq!(arrived, immediate);
    }

    fn config() -> ProptestConfig {
        ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn honest_libos_gets_every_completion_once(
            (sq, cq) in sizes(),
            actions in prop::collection::vec(action(false), 0..60),
        ) {
            run(sq, cq, &actions, false);
        }

        #[test]
        fn hostile_libos_never_breaks_the_kernel(
            (sq, cq) in sizes(),
            actions in prop::collection::vec(action(true), 0..60),
        ) {
            run(sq, cq, &actions, true);
        }
    }
}

/// Model checks of the acquire/release protocol: run with
/// `RUSTFLAGS="--cfg loom" cargo test -p kernel --lib --release ring::loom`.
#[cfg(all(test, loom))]
mod loom {
    use super::*;
    use ::loom::sync::Arc;
    use ::loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    use ::loom::thread;
    use alloc::vec::Vec;

    /// A ring whose every word is a loom atomic. Entry contents use relaxed
    /// accesses, so only the header's acquire/release orders them: a
    /// missing or misplaced barrier lets loom read a stale entry.
    struct LoomRing {
        sq_head: AtomicU32,
        sq_tail: AtomicU32,
        cq_head: AtomicU32,
        cq_tail: AtomicU32,
        /// Per submission slot: `user_data` (the op is always Nop).
        sqes: Vec<AtomicU64>,
        /// Per completion slot: `user_data` and `result`.
        cqes: Vec<(AtomicU64, AtomicU64)>,
    }

    impl LoomRing {
        fn new(sq: u32, cq: u32) -> LoomRing {
            LoomRing {
                sq_head: AtomicU32::new(0),
                sq_tail: AtomicU32::new(0),
                cq_head: AtomicU32::new(0),
                cq_tail: AtomicU32::new(0),
                sqes: (0..sq).map(|_| AtomicU64::new(u64::MAX)).collect(),
                cqes: (0..cq)
                    .map(|_| (AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)))
                    .collect(),
            }
        }
    }

    impl RingMemory for LoomRing {
        fn load_sq_tail(&self) -> u32 {
            self.sq_tail.load(Ordering::Acquire)
        }
        fn load_cq_head(&self) -> u32 {
            self.cq_head.load(Ordering::Acquire)
        }
        fn store_sq_head(&self, v: u32) {
            self.sq_head.store(v, Ordering::Release)
        }
        fn store_cq_tail(&self, v: u32) {
            self.cq_tail.store(v, Ordering::Release)
        }
        fn sq_head(&self, index: u32) -> [u64; 2] {
            let slot = index as usize % self.sqes.len();
            [Op::Nop as u64, self.sqes[slot].load(Ordering::Relaxed)]
        }
        fn sq_args(&self, _index: u32) -> [u64; 6] {
            panic!("a Nop has no arguments to read")
        }
        fn cq_write(&self, index: u32, e: CqEntry) {
            let (user_data, result) = &self.cqes[index as usize % self.cqes.len()];
            user_data.store(e.user_data, Ordering::Relaxed);
            result.store(e.result, Ordering::Relaxed);
        }
        fn add_overflow(&self) {}
        fn raise_error(&self, _bits: u32) {
            panic!("the kernel raised an error on an honest ring");
        }
    }

    /// One libOS thread queues `n` Nops (with `user_data` 100, 101, ...)
    /// and reads their completions while the kernel thread submits.
    fn producer_consumer(sq: u32, cq: u32, n: u64) {
        let ring = Arc::new(LoomRing::new(sq, cq));
        let kernel_ring = ring.clone();
        let kernel = thread::spawn(move || {
            let mut k = RingState::new(sq, cq).unwrap();
            let mut consumed = 0;
            while consumed < n {
                let got = k.submit(&*kernel_ring, u32::MAX, |_| Outcome::Done(Ok(0)));
                consumed += u64::from(got);
                if got == 0 {
                    thread::yield_now();
                }
            }
        });

        let (mut tail, mut head, mut queued) = (0u32, 0u32, 0u64);
        let mut ring_cq_head = 0u32;
        let mut got = Vec::new();
        while (got.len() as u64) < n {
            let mut progressed = false;
            if queued < n && tail.wrapping_sub(ring.sq_head.load(Ordering::Acquire)) < sq {
                ring.sqes[(tail & (sq - 1)) as usize].store(100 + queued, Ordering::Relaxed);
                tail = tail.wrapping_add(1);
                ring.sq_tail.store(tail, Ordering::Release);
                queued += 1;
                progressed = true;
            }
            let cq_tail = ring.cq_tail.load(Ordering::Acquire);
            while head != cq_tail {
                let (user_data, result) = &ring.cqes[(head & (cq - 1)) as usize];
                got.push((user_data.load(Ordering::Relaxed), result.load(Ordering::Relaxed)));
                head = head.wrapping_add(1);
                progressed = true;
            }
            if head != ring_cq_head {
                ring.cq_head.store(head, Ordering::Release);
                ring_cq_head = head;
            }
            if !progressed {
                thread::yield_now();
            }
        }
        kernel.join().unwrap();
        let expected: Vec<(u64, u64)> = (0..n).map(|i| (100 + i, 0)).collect();
        assert_eq!(got, expected);
    }

    /// Explores every interleaving with at most three preemptions (unless
    /// `LOOM_MAX_PREEMPTIONS` says otherwise): about 8 s in release mode.
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound.get_or_insert(3);
        builder.check(f);
    }

    #[test]
    fn two_entry_rings_wrap_around() {
        model(|| producer_consumer(2, 2, 3));
    }

    #[test]
    fn small_completion_queue_overflows_and_recovers() {
        model(|| producer_consumer(2, 1, 3));
    }
}
