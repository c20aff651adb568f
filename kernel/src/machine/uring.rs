//! The machine side of the submission/completion ring and of wakeup
//! predicates: pinned ring memory, operation dispatch, timers,
//! notifications, and the memory view predicates evaluate against.
//!
//! The protocol itself (indices, validation, link chains, overflow) is
//! [`kernel::ring`]; the predicate verifier and interpreter is
//! [`kernel::predicate`]. This module gives them memory: a registered ring's
//! frames are pinned in the frame table (they cannot be freed while the
//! kernel may write them) and reached through the direct map; a predicate
//! reads the environment's memory through its page tables at every
//! evaluation.
//!
//! Shared memory is hostile: the kernel reads each word of a submission
//! entry at most once, with a volatile load, and never reads a header field
//! twice for one decision (the protocol module keeps its own copies of the
//! indices).

use super::env::{self, Env};
use super::memory;
use abi::ring::{CqEntry, Op, SqEntry};
use abi::{CoreId, Error, PAGE_SIZE};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::frames::FrameNumber;
use kernel::ownership::EnvId;
use kernel::ring::{Outcome, RingMemory, RingState, Submitted};
use kernel::trace::Kind;

/// One vCPU's registered ring: a pointer, so that taking it out of the run
/// queue for a `RingEnter`'s full path ([`super::sched::with_current_ring`];
/// the fast path, [`VcpuRing::enter_fast`], works on it in place) and
/// putting it back moves one word.
pub struct VcpuRing(Box<Registered>);

struct Registered {
    /// Protocol state (the kernel's private indices).
    state: RingState,
    env: EnvId,
    /// The ring's frames, pinned, in order.
    frames: Vec<FrameNumber>,
    /// The direct-map address of the header (the start of the first frame).
    header: usize,
    /// Where each submission slot is.
    sq_slots: SlotTable,
    /// Where each completion slot is.
    cq_slots: SlotTable,
    /// Pending `Timer` operations: (TSC deadline, user data).
    timers: Vec<(u64, u64)>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        env::unpin_frames(self.env, &self.frames);
    }
}

/// The ring's memory, reached through the pinned frames' direct-map
/// addresses: one per slot, so that an entry costs one table load whatever
/// page it lies in.
struct Pinned<'a> {
    header: usize,
    sq_slots: &'a SlotTable,
    cq_slots: &'a SlotTable,
}

impl Pinned<'_> {
    #[inline]
    fn header_word(&self, index: u64) -> &AtomicU32 {
        // SAFETY: the header is the first 32 bytes of the first pinned
        // frame; `index` < 8 (callers use the fixed field indices below);
        // u32 fields are 4-aligned; atomics make concurrent libOS writes
        // well-defined.
        unsafe { &*((self.header + index as usize * 4) as *const AtomicU32) }
    }
}

/// The direct-map address of every entry of one queue, in slot order:
/// each that of a whole, 8-aligned entry inside one pinned frame (entries
/// never straddle a page: 64-byte submissions after a 64-byte header,
/// 16-byte completions at a 16-byte-aligned offset). Their number is a
/// power of two.
struct SlotTable {
    addresses: Box<[usize]>,
    /// `addresses.len() - 1`.
    mask: usize,
}

impl SlotTable {
    /// The table of `count` (a power of two) entries of `size` bytes from
    /// byte `offset` of a ring whose frames' direct-map addresses are
    /// `pages` (`setup` pinned enough frames for all of them).
    fn new(pages: &[usize], offset: u64, size: u64, count: u32) -> SlotTable {
        assert!(count.is_power_of_two(), "ring sizes are powers of two");
        let addresses: Box<[usize]> = (0..u64::from(count))
            .map(|i| {
                let at = offset + i * size;
                pages[(at / PAGE_SIZE) as usize] + (at % PAGE_SIZE) as usize
            })
            .collect();
        SlotTable { mask: addresses.len() - 1, addresses }
    }

    /// The first word of the entry with free-running index `index` (slot
    /// `index mod count`).
    #[inline]
    fn entry(&self, index: u32) -> *mut u64 {
        // SAFETY: the length is a power of two (asserted in `new`) and
        // `mask` is one less, so the masked index is in bounds.
        (unsafe { *self.addresses.get_unchecked(index as usize & self.mask) }) as *mut u64
    }
}

const SQ_HEAD: u64 = 0;
const SQ_TAIL: u64 = 1;
const CQ_HEAD: u64 = 2;
const CQ_TAIL: u64 = 3;
const SQ_ENTRIES: u64 = 4;
const CQ_ENTRIES: u64 = 5;
const OVERFLOW: u64 = 6;
const ERRORS: u64 = 7;

impl RingMemory for Pinned<'_> {
    #[inline]
    fn load_sq_tail(&self) -> u32 {
        self.header_word(SQ_TAIL).load(Ordering::Acquire)
    }
    #[inline]
    fn load_cq_head(&self) -> u32 {
        self.header_word(CQ_HEAD).load(Ordering::Acquire)
    }
    #[inline]
    fn store_sq_head(&self, v: u32) {
        self.header_word(SQ_HEAD).store(v, Ordering::Release)
    }
    #[inline]
    fn store_cq_tail(&self, v: u32) {
        self.header_word(CQ_TAIL).store(v, Ordering::Release)
    }
    #[inline]
    fn sq_head(&self, index: u32) -> [u64; 2] {
        let words = self.sq_slots.entry(index);
        // SAFETY: `entry` gives a submission's eight words inside a pinned
        // frame (see `SlotTable`); two volatile loads (the compiler may
        // neither repeat nor merge them), taken once; any bits are valid.
        unsafe { [words.read_volatile(), words.add(1).read_volatile()] }
    }
    #[inline]
    fn sq_args(&self, index: u32) -> [u64; 6] {
        let words = self.sq_slots.entry(index);
        // SAFETY: as in `sq_head`, words 2..8 of the entry.
        core::array::from_fn(|k| unsafe { words.add(2 + k).read_volatile() })
    }
    #[inline]
    fn cq_write(&self, index: u32, e: CqEntry) {
        let words = self.cq_slots.entry(index);
        // SAFETY: `entry` gives a completion's two words inside a pinned
        // frame (see `SlotTable`); two volatile stores.
        unsafe {
            words.write_volatile(e.user_data);
            words.add(1).write_volatile(e.result);
        }
    }
    fn add_overflow(&self) {
        self.header_word(OVERFLOW).fetch_add(1, Ordering::Release);
    }
    fn raise_error(&self, bits: u32) {
        self.header_word(ERRORS).fetch_or(bits, Ordering::Release);
    }
}

impl Registered {
    fn memory(&self) -> Pinned<'_> {
        Pinned { header: self.header, sq_slots: &self.sq_slots, cq_slots: &self.cq_slots }
    }
}

impl VcpuRing {
    /// Registers `ring_bytes(sq, cq)` bytes at `base` of `env` as a ring.
    pub fn setup(
        env: &Env,
        base: u64,
        sq_entries: u64,
        cq_entries: u64,
    ) -> Result<VcpuRing, Error> {
        let sq = u32::try_from(sq_entries).map_err(|_| Error::InvalidArgument)?;
        let cq = u32::try_from(cq_entries).map_err(|_| Error::InvalidArgument)?;
        let state = RingState::new(sq, cq)?;
        let bytes = abi::ring::ring_bytes(sq, cq);
        if !base.is_multiple_of(PAGE_SIZE)
            || base < abi::USER_MIN
            || base.checked_add(bytes).is_none_or(|end| end > abi::USER_MAX)
        {
            return Err(Error::InvalidArgument);
        }
        let frames = env::pin_user_pages(env, base, bytes / PAGE_SIZE)?;
        let pages: Vec<usize> = frames.iter().map(|&f| memory::frame_virt(f) as usize).collect();
        let (sq_size, cq_size) = (size_of::<SqEntry>() as u64, size_of::<CqEntry>() as u64);
        let ring = Registered {
            state,
            env: env.id,
            header: pages[0],
            sq_slots: SlotTable::new(&pages, abi::ring::SQ_OFFSET, sq_size, sq),
            cq_slots: SlotTable::new(&pages, abi::ring::cq_offset(sq), cq_size, cq),
            frames,
            timers: Vec::new(),
        };
        let mem =
            Pinned { header: ring.header, sq_slots: &ring.sq_slots, cq_slots: &ring.cq_slots };
        for (field, value) in [
            (SQ_HEAD, 0),
            (SQ_TAIL, 0),
            (CQ_HEAD, 0),
            (CQ_TAIL, 0),
            (SQ_ENTRIES, sq),
            (CQ_ENTRIES, cq),
            (OVERFLOW, 0),
            (ERRORS, 0),
        ] {
            mem.header_word(field).store(value, Ordering::Release);
        }
        Ok(VcpuRing(Box::new(ring)))
    }

    /// `RingEnter(to_submit, min_complete)`: consumes up to `to_submit`
    /// entries, completes the timers that are due, and returns the number
    /// consumed and, if fewer than `min_complete` completions wait, the
    /// count to sleep for. `InvalidArgument` if `min_complete` exceeds the
    /// completion queue.
    pub fn enter(
        &mut self,
        env: &Env,
        to_submit: u64,
        min_complete: u64,
    ) -> Result<Entered, Error> {
        let ring = &mut *self.0;
        if min_complete > u64::from(ring.state.cq_entries()) {
            return Err(Error::InvalidArgument);
        }
        let max = to_submit.min(u64::from(ring.state.sq_entries())) as u32;
        let mem =
            Pinned { header: ring.header, sq_slots: &ring.sq_slots, cq_slots: &ring.cq_slots };
        let timers = &mut ring.timers;
        // A batch's work is bounded: after `RING_OPS_PER_ENTER` operations
        // (Nops aside) the rest stays queued for the next `RingEnter`.
        let mut ops = 0usize;
        let submitted = ring.state.submit_batch(&mem, max, |sqe| {
            if sqe.opcode != Op::Nop as u8 {
                if ops == RING_OPS_PER_ENTER {
                    return Outcome::Defer;
                }
                ops += 1;
            }
            execute(env, sqe, timers)
        });
        if submitted.consumed > 0 {
            super::ktrace::record(Kind::RingSubmit, ring.env.raw(), u64::from(submitted.consumed));
        }
        if !ring.timers.is_empty() {
            ring.fire_timers(super::cpu::rdtsc());
        }
        // Stopped early: the caller resubmits the rest, it does not sleep.
        let wait = (min_complete != 0
            && !submitted.deferred
            && u64::from(ring.state.pending_completions(&ring.memory())) < min_complete)
            .then_some(min_complete as u32);
        Ok(Entered { consumed: u64::from(submitted.consumed), wait })
    }

    /// The part of [`VcpuRing::enter`] the ring protocol answers by itself:
    /// Nops, malformed and canceled entries. It touches nothing outside the
    /// ring, so the scheduler may run it while it holds the run queue.
    ///
    /// It returns [`FastEntered::Full`] (for [`VcpuRing::enter`] to go on
    /// from there) at the first entry that needs [`execute`], with a timer
    /// pending, when fewer than `min_complete` completions wait, and, having
    /// consumed nothing, when `min_complete` is out of range.
    #[inline]
    pub fn enter_fast(&mut self, to_submit: u64, min_complete: u64) -> FastEntered {
        let ring = &mut *self.0;
        if min_complete > u64::from(ring.state.cq_entries()) {
            return FastEntered::Full(0);
        }
        let max = to_submit.min(u64::from(ring.state.sq_entries())) as u32;
        let mem =
            Pinned { header: ring.header, sq_slots: &ring.sq_slots, cq_slots: &ring.cq_slots };
        let Submitted { consumed, deferred } =
            ring.state.submit_batch(&mem, max, |_| Outcome::Defer);
        // The flag first: off, one load and branch (the count is not tested).
        if super::ktrace::enabled() && consumed > 0 {
            super::ktrace::record(Kind::RingSubmit, ring.env.raw(), u64::from(consumed));
        }
        if deferred
            || !ring.timers.is_empty()
            || min_complete != 0 && u64::from(ring.state.pending_completions(&mem)) < min_complete
        {
            FastEntered::Full(consumed)
        } else {
            FastEntered::Done(consumed)
        }
    }

    /// The earliest pending timer's deadline.
    pub fn next_timer(&self) -> Option<u64> {
        self.0.timers.iter().map(|&(deadline, _)| deadline).min()
    }

    /// Completes every timer whose deadline has passed.
    pub fn fire_timers(&mut self, now: u64) {
        self.0.fire_timers(now);
    }

    /// Completions waiting to be read by the libOS.
    pub fn pending_completions(&self) -> u32 {
        self.0.state.pending_completions(&self.0.memory())
    }
}

/// What a `RingEnter` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entered {
    /// Submissions consumed.
    pub consumed: u64,
    /// Fewer than `min_complete` completions wait: sleep for this many.
    pub wait: Option<u32>,
}

/// What [`VcpuRing::enter_fast`] did: two words, returned in registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastEntered {
    /// The whole `RingEnter`: this many consumed, no sleep.
    Done(u32),
    /// This many consumed; [`VcpuRing::enter`] must do the rest.
    Full(u32),
}

impl Registered {
    fn fire_timers(&mut self, now: u64) {
        if self.timers.iter().all(|&(deadline, _)| deadline > now) {
            return;
        }
        let mem =
            Pinned { header: self.header, sq_slots: &self.sq_slots, cq_slots: &self.cq_slots };
        let state = &mut self.state;
        let before = self.timers.len();
        self.timers.retain(|&(deadline, user_data)| {
            if deadline <= now {
                state.complete(&mem, user_data, Ok(0));
                false
            } else {
                true
            }
        });
        let fired = (before - self.timers.len()) as u64;
        super::ktrace::record(Kind::RingComplete, self.env.raw(), fired);
    }
}

/// Runs one validated submission (the protocol answers `Nop`s itself).
#[inline(never)]
fn execute(env: &Env, sqe: &SqEntry, timers: &mut Vec<(u64, u64)>) -> Outcome {
    let [a0, a1, a2, ..] = sqe.args;
    let done = |r: Result<u64, Error>| Outcome::Done(r);
    let Some(op) = Op::from_number(sqe.opcode) else {
        return done(Err(Error::InvalidArgument));
    };
    match op {
        Op::Nop => done(Ok(0)),
        Op::ConsoleWrite => done(env::console_write(env, a0, a1, a2)),
        Op::FrameAlloc => done(
            env::frame_alloc(env, (a0 != abi::ANY_FRAME).then_some(FrameNumber(a0))).map(u64::from),
        ),
        Op::FrameFree => done(env::frame_free(env, FrameNumber(a0)).map(|()| 0)),
        Op::Map => done(env::map(env, FrameNumber(a0), a1, abi::Rights(a2)).map(|()| 0)),
        Op::Unmap => done(env::unmap(env, a0).map(|()| 0)),
        Op::Protect => done(env::protect(env, a0, abi::Rights(a1)).map(|()| 0)),
        // A withdrawal of many mappings goes in steps: the entry stays
        // queued (`Defer`) and the next `RingEnter` takes the next step.
        Op::FrameGrant => stepped(
            EnvId::from_word(a1)
                .ok_or(Error::NoSuchEnv)
                .and_then(|g| env::frame_grant(env, FrameNumber(a0), g, abi::Rights(a2))),
        ),
        Op::FrameRevoke => stepped(
            EnvId::from_word(a1)
                .ok_or(Error::NoSuchEnv)
                .and_then(|g| env::frame_revoke(env, FrameNumber(a0), g)),
        ),
        Op::Timer => {
            if a0 <= super::cpu::rdtsc() {
                done(Ok(0))
            } else if timers.len() >= MAX_TIMERS {
                done(Err(Error::QuotaExceeded))
            } else {
                timers.push((a0, sqe.user_data));
                Outcome::Pending
            }
        }
        Op::Notify => done(
            EnvId::from_word(a0).ok_or(Error::NoSuchEnv).and_then(|t| notify(env, t)).map(|()| 0),
        ),
        Op::SlotAlloc => done(
            CoreId::from_word(a0)
                .ok_or(Error::NoSuchCore)
                .and_then(|core| super::slots::alloc(env.id, core, a1, a2)),
        ),
    }
}

/// A stepped operation's outcome: done, or left queued for the next step.
fn stepped(result: Result<env::Progress, Error>) -> Outcome {
    match result {
        Ok(env::Progress::More) => Outcome::Defer,
        Ok(env::Progress::Done(v)) => Outcome::Done(Ok(v)),
        Err(e) => Outcome::Done(Err(e)),
    }
}

/// How many operations (Nops aside) one `RingEnter` runs before it leaves
/// the rest queued: each is bounded (an unmap's shootdown to every core at
/// most), so a batch keeps its core for a bounded time however long the
/// queue, and the count does not depend on how fast the machine is.
pub const RING_OPS_PER_ENTER: usize = 64;

/// The most timers one ring may have pending.
pub const MAX_TIMERS: usize = 4096;

/// Increments environment `target`'s notification counter, posts a
/// `NOTIFY` event and wakes its vCPUs' cores so that sleeping predicates
/// are evaluated again.
pub fn notify(source: &Env, target: EnvId) -> Result<(), Error> {
    let env = env::lookup(target).filter(|e| !e.is_dying()).ok_or(Error::NoSuchEnv)?;
    if !env.ipc.accepts(source.id) {
        return Err(Error::Refused);
    }
    let counter = env::info_word(&env, core::mem::offset_of!(abi::InfoPage, notifications) as u64);
    counter.fetch_add(1, Ordering::Release);
    env::post_event(&env, abi::event::NOTIFY, source.id, [0, 0]);
    Ok(())
}

/// `Acall`: bumps `target`'s notification counter, posts a `CALL` event
/// with two words and wakes it.
pub fn acall(source: &Env, target: EnvId, words: [u64; 2]) -> Result<(), Error> {
    let env = env::lookup(target).filter(|e| !e.is_dying()).ok_or(Error::NoSuchEnv)?;
    if !env.ipc.accepts(source.id) {
        return Err(Error::Refused);
    }
    let counter = env::info_word(&env, core::mem::offset_of!(abi::InfoPage, notifications) as u64);
    counter.fetch_add(1, Ordering::Release);
    env::post_event(&env, abi::event::CALL, source.id, words);
    Ok(())
}

/// The environment's memory as a predicate sees it: words of pages mapped
/// user-readable, translated at each access (under the address-space lock
/// held by the caller's guard).
pub struct PredicateMemory<'a> {
    env: &'a Env,
    aspace: spin::MutexGuard<'a, super::paging::AddressSpace>,
}

impl<'a> PredicateMemory<'a> {
    /// Locks `env`'s address space for one verification or evaluation (on
    /// `env`'s own time: its `SleepOn`).
    pub fn new(env: &'a Env) -> PredicateMemory<'a> {
        PredicateMemory { env, aspace: env::lock_serving_mailbox(&env.aspace) }
    }

    /// The same if the lock is free now, `None` otherwise: a scheduling
    /// decision never waits for an environment's lock (its other vCPUs could
    /// keep it busy for as long as they like), it evaluates the predicate at
    /// its next decision instead.
    pub fn try_new(env: &'a Env) -> Option<PredicateMemory<'a>> {
        Some(PredicateMemory { env, aspace: env.aspace.try_lock()? })
    }

    fn word(&self, va: u64) -> Option<&AtomicU64> {
        use x86_64::structures::paging::PageTableFlags as F;
        if !va.is_multiple_of(8) || !(abi::USER_MIN..abi::USER_MAX).contains(&va) {
            return None;
        }
        let (frame, flags) = self.aspace.translate(va & !(PAGE_SIZE - 1))?;
        if !flags.contains(F::USER_ACCESSIBLE) {
            return None;
        }
        // SAFETY: the page is mapped user-readable in this environment and
        // cannot be freed while we hold its address-space lock; the word is
        // 8-aligned inside the frame.
        Some(unsafe {
            &*(memory::frame_virt(frame).add((va % PAGE_SIZE) as usize) as *const AtomicU64)
        })
    }
}

impl kernel::predicate::Memory for PredicateMemory<'_> {
    fn readable(&self, va: u64) -> bool {
        self.word(va).is_some()
    }
    fn load(&self, va: u64) -> Option<u64> {
        self.word(va).map(|w| w.load(Ordering::Acquire))
    }
    fn info(&self, offset: u64) -> u64 {
        env::info_word(self.env, offset).load(Ordering::Acquire)
    }
    fn tsc(&self) -> u64 {
        super::cpu::rdtsc()
    }
}
