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
//! Shared memory is hostile: the kernel reads each submission entry once
//! with a volatile copy and never reads a header field twice for one
//! decision (the protocol module keeps its own copies of the indices).

use super::env::{self, Env};
use super::memory;
use abi::ring::{CqEntry, Op, SqEntry};
use abi::{Error, PAGE_SIZE};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::frames::FrameNumber;
use kernel::ring::{Outcome, RingMemory, RingState};

/// One vCPU's registered ring.
pub struct VcpuRing {
    /// Protocol state (the kernel's private indices).
    pub state: RingState,
    env: u32,
    frames: Vec<FrameNumber>,
    /// Pending `Timer` operations: (TSC deadline, user data).
    timers: Vec<(u64, u64)>,
}

impl Drop for VcpuRing {
    fn drop(&mut self) {
        env::unpin_frames(self.env, &self.frames);
    }
}

/// The ring's memory, reached through the pinned frames.
struct Pinned<'a> {
    frames: &'a [FrameNumber],
    cq_offset: u64,
}

impl Pinned<'_> {
    /// The kernel address of byte `offset` of the ring. Entries and header
    /// fields never straddle a page (64-byte submissions after a 64-byte
    /// header; 16-byte completions at a 16-byte-aligned offset).
    fn at(&self, offset: u64) -> *mut u8 {
        let frame = self.frames[(offset / PAGE_SIZE) as usize];
        // SAFETY: arithmetic only; the frame is pinned and in the direct map.
        unsafe { memory::frame_virt(frame).add((offset % PAGE_SIZE) as usize) }
    }

    fn header_word(&self, index: u64) -> &AtomicU32 {
        // SAFETY: the header is the first 32 bytes of the first pinned
        // frame; `index` < 8 (callers use the fixed field indices below);
        // u32 fields are 4-aligned; atomics make concurrent libOS writes
        // well-defined.
        unsafe { &*(self.at(index * 4) as *const AtomicU32) }
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
    fn load_sq_tail(&self) -> u32 {
        self.header_word(SQ_TAIL).load(Ordering::Acquire)
    }
    fn load_cq_head(&self) -> u32 {
        self.header_word(CQ_HEAD).load(Ordering::Acquire)
    }
    fn store_sq_head(&self, v: u32) {
        self.header_word(SQ_HEAD).store(v, Ordering::Release)
    }
    fn store_cq_tail(&self, v: u32) {
        self.header_word(CQ_TAIL).store(v, Ordering::Release)
    }
    fn read_sqe(&self, slot: u32) -> SqEntry {
        let offset =
            abi::ring::SQ_OFFSET + u64::from(slot) * core::mem::size_of::<SqEntry>() as u64;
        let words = self.at(offset) as *const u64;
        // SAFETY: `slot` < sq_entries (the protocol masks it), so the 64-byte
        // entry lies inside the pinned ring, 8-aligned; eight volatile word
        // loads (a volatile load of the whole struct may be lowered to byte
        // loads), taken once; every bit pattern is a valid SqEntry.
        let w: [u64; 8] = core::array::from_fn(|i| unsafe { words.add(i).read_volatile() });
        let head = w[0].to_le_bytes();
        SqEntry {
            opcode: head[0],
            flags: head[1],
            reserved: [head[2], head[3], head[4], head[5], head[6], head[7]],
            user_data: w[1],
            args: [w[2], w[3], w[4], w[5], w[6], w[7]],
        }
    }
    fn write_cqe(&self, slot: u32, e: CqEntry) {
        let offset = self.cq_offset + u64::from(slot) * core::mem::size_of::<CqEntry>() as u64;
        let words = self.at(offset) as *mut u64;
        // SAFETY: `slot` < cq_entries (masked): the 16-byte entry lies inside
        // the pinned ring, 16-aligned; two volatile word stores.
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

impl VcpuRing {
    fn memory(&self) -> Pinned<'_> {
        Pinned { frames: &self.frames, cq_offset: abi::ring::cq_offset(self.state.sq_entries()) }
    }

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
        let ring = VcpuRing { state, env: env.id, frames, timers: Vec::new() };
        let mem = ring.memory();
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
        Ok(ring)
    }

    /// `RingEnter`'s submission half: consumes up to `to_submit` entries.
    pub fn submit(&mut self, env: &Env, to_submit: u64) -> u64 {
        let max = to_submit.min(u64::from(self.state.sq_entries())) as u32;
        let frames = core::mem::take(&mut self.frames);
        let mem =
            Pinned { frames: &frames, cq_offset: abi::ring::cq_offset(self.state.sq_entries()) };
        let timers = &mut self.timers;
        let consumed = self.state.submit(&mem, max, |sqe| execute(env, sqe, timers));
        self.frames = frames;
        u64::from(consumed)
    }

    /// The earliest pending timer's deadline.
    pub fn next_timer(&self) -> Option<u64> {
        self.timers.iter().map(|&(deadline, _)| deadline).min()
    }

    /// Completes every timer whose deadline has passed.
    pub fn fire_timers(&mut self, now: u64) {
        if self.timers.iter().all(|&(deadline, _)| deadline > now) {
            return;
        }
        let frames = core::mem::take(&mut self.frames);
        let mem =
            Pinned { frames: &frames, cq_offset: abi::ring::cq_offset(self.state.sq_entries()) };
        let state = &mut self.state;
        self.timers.retain(|&(deadline, user_data)| {
            if deadline <= now {
                state.complete(&mem, user_data, Ok(0));
                false
            } else {
                true
            }
        });
        self.frames = frames;
    }

    /// Completions waiting to be read by the libOS.
    pub fn pending_completions(&self) -> u32 {
        self.state.pending_completions(&self.memory())
    }
}

/// Runs one validated submission.
fn execute(env: &Env, sqe: &SqEntry, timers: &mut Vec<(u64, u64)>) -> Outcome {
    let [a0, a1, a2, ..] = sqe.args;
    let done = |r: Result<u64, Error>| Outcome::Done(r);
    let Some(op) = Op::from_number(sqe.opcode) else {
        return done(Err(Error::InvalidArgument));
    };
    match op {
        Op::Nop => done(Ok(0)),
        Op::ConsoleWrite => done(super::syscall::console_write(env, a0, a1)),
        Op::FrameAlloc => done(env::frame_alloc(env, (a0 != abi::ANY_FRAME).then_some(a0))),
        Op::FrameFree => done(env::frame_free(env, a0).map(|()| 0)),
        Op::Map => done(env::map(env, a0, a1, abi::Rights(a2)).map(|()| 0)),
        Op::Unmap => done(env::unmap(env, a0).map(|()| 0)),
        Op::Protect => done(env::protect(env, a0, abi::Rights(a1)).map(|()| 0)),
        Op::FrameGrant => done(
            u32::try_from(a1)
                .map_err(|_| Error::NoSuchEnv)
                .and_then(|g| env::frame_grant(env, a0, g, abi::Rights(a2)))
                .map(|()| 0),
        ),
        Op::FrameRevoke => done(
            u32::try_from(a1)
                .map_err(|_| Error::NoSuchEnv)
                .and_then(|g| env::frame_revoke(env, a0, g))
                .map(|()| 0),
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
            u32::try_from(a0)
                .map_err(|_| Error::NoSuchEnv)
                .and_then(|t| notify(env, t))
                .map(|()| 0),
        ),
        Op::SlotAlloc => done(super::slots::alloc(env.id, a0, a1, a2)),
    }
}

/// The most timers one ring may have pending.
pub const MAX_TIMERS: usize = 4096;

/// Increments environment `target`'s notification counter, posts a
/// `NOTIFY` event and wakes its vCPUs' cores so that sleeping predicates
/// are evaluated again.
pub fn notify(source: &Env, target: u32) -> Result<(), Error> {
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
pub fn acall(source: &Env, target: u64, words: [u64; 2]) -> Result<(), Error> {
    let env = u32::try_from(target)
        .ok()
        .and_then(env::lookup)
        .filter(|e| !e.is_dying())
        .ok_or(Error::NoSuchEnv)?;
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
    /// Locks `env`'s address space for one verification or evaluation.
    pub fn new(env: &'a Env) -> PredicateMemory<'a> {
        PredicateMemory { env, aspace: env::lock_serving_mailbox(&env.aspace) }
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
