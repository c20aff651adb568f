//! Ring operations as futures, and the per-core reactor that submits them
//! and dispatches their completions.
//!
//! Each executor core owns its vCPU's [`Ring`] (made by the runtime when
//! the executor is set up, kept in [`CoreLocal`] storage: only that core
//! touches it). [`op`]`(sqe).await` gives the operation's result:
//!
//! 1. first poll: take a slot in the core's [`SlotTable`], put its
//!    `user_data` (`generation << 32 | slot`) in the entry, push it;
//! 2. the executor submits everything pushed at the end of its tick (one
//!    `RingEnter` for the whole batch) and before it sleeps;
//! 3. it pops completions at every tick and after waking (its idle
//!    predicate watches the completion tail while operations are in
//!    flight), stores each result in its slot and wakes the waiter;
//! 4. the future's next poll takes the result and frees the slot.
//!
//! **Dropping an operation in flight is safe**: the slot stays taken
//! (with any buffer the kernel may still read, e.g. [`console_write`]'s
//! bytes) until the completion arrives, which is then absorbed; the slot is
//! only reused under a new generation, so a late completion never reaches
//! another operation. A task that moves to another core (stealing) keeps
//! polling the slot table of the core that submitted its operation: slot
//! tables are shared (locked), only rings are core-local.
//!
//! On a core without a ring (the app made its own [`Ring`] there before
//! the runtime started, or `RingSetup` failed) every operation completes
//! with that error (`Busy` for an app-owned ring).
//!
//! [`SlotTable`]: super::slots::SlotTable

use alloc::boxed::Box;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll};

use abi::ring::SqEntry;
use abi::{Error, Rights};

use super::exec::CORES;
use super::machine;
use super::slots::Delivery;
use crate::percore::CoreLocal;
use crate::ring::{Ring, field};
use crate::sqe;

/// Submission entries of each executor's ring.
pub const RING_SQ: u32 = 128;
/// Completion entries of each executor's ring.
pub const RING_CQ: u32 = 512;

/// Each executor core's ring (or why it has none).
static RINGS: CoreLocal<Result<Ring, Error>> = CoreLocal::new();

/// Makes the calling core's ring if it has none yet.
pub(crate) fn ensure_ring() {
    RINGS.try_with(|slot| {
        if slot.is_none() {
            *slot = Some(if cfg!(test) {
                Err(Error::Unsupported)
            } else {
                Ring::new(RING_SQ, RING_CQ)
            });
        }
    });
}

/// The TSC when the last batch of completions was found on a ring (set
/// when the first of a reap is found, before it is dispatched): benchmarks
/// measure wake-up latency from it.
static LAST_REAP_TSC: AtomicU64 = AtomicU64::new(0);

/// When the last batch of completions was found (see `LAST_REAP_TSC`),
/// for wake-up benchmarks.
pub fn last_reap_tsc() -> u64 {
    LAST_REAP_TSC.load(Ordering::Relaxed)
}

/// Submits what is pending and dispatches every completion waiting on
/// `core`'s ring (the calling core's); whether any completion arrived.
///
/// Completions are taken one at a time (ring, then slot table, each lock
/// dropped before the waiter is woken): no batch buffers to fill and
/// drain on the wake-up path.
#[inline(always)]
pub(crate) fn flush_and_reap(core: usize) -> bool {
    let exec = &CORES[core];
    // Clear before looking: a push after this sets it again.
    if !exec.ring_busy.swap(false, Ordering::SeqCst) {
        return false;
    }
    let mut submit = true;
    let mut any = false;
    loop {
        let got = RINGS
            .try_with(|slot| {
                let Some(Ok(ring)) = slot else { return None };
                if submit && ring.pending() > 0 {
                    let _ = ring.submit(0);
                }
                ring.pop()
            })
            .flatten();
        submit = false;
        let Some(c) = got else { break };
        if !any {
            LAST_REAP_TSC.store(machine::now(), Ordering::Relaxed);
            any = true;
        }
        let delivery = exec.slots.lock().complete(c.user_data, c.result);
        if let Delivery::Wake(Some(w)) = delivery {
            w.wake();
        }
    }
    if exec.slots.lock().in_flight() > 0 {
        // Completions may still come: look again next tick.
        exec.ring_busy.store(true, Ordering::SeqCst);
    }
    any
}

/// What the idle predicate must know about the ring.
pub(crate) enum RingIdle {
    /// Nothing in flight: do not watch the ring.
    Quiet,
    /// Watch the word at this address (`cq_head | cq_tail << 32`) for a
    /// change from this snapshot.
    Watch(u64, u64),
    /// Completions (or unsubmitted entries) wait already: do not sleep.
    Ready,
}

/// The ring's part of `core`'s idle predicate (the calling core).
pub(crate) fn idle_ring(core: usize) -> RingIdle {
    if CORES[core].slots.lock().in_flight() == 0 {
        return RingIdle::Quiet;
    }
    RINGS
        .try_with(|slot| match slot {
            Some(Ok(ring)) => {
                let h = ring.header();
                if ring.ready() > 0 || ring.pending() > 0 {
                    RingIdle::Ready
                } else {
                    let word = u64::from(h.cq_head) | (u64::from(h.cq_tail) << 32);
                    RingIdle::Watch(ring.base() + field::CQ_HEAD, word)
                }
            }
            _ => RingIdle::Quiet,
        })
        .unwrap_or(RingIdle::Ready)
}

enum OpState {
    New,
    InFlight { core: usize, user_data: u64 },
    Done,
}

/// A ring operation in flight (see the module documentation).
pub struct RingOp {
    entry: SqEntry,
    state: OpState,
    /// Bytes the kernel reads when it consumes the entry.
    keep: Option<Box<[u8]>>,
}

/// The operation `entry` as a future (its `user_data` is replaced).
pub fn op(entry: SqEntry) -> RingOp {
    RingOp { entry, state: OpState::New, keep: None }
}

impl Future for RingOp {
    type Output = Result<u64, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.state {
            OpState::Done => Poll::Ready(Err(Error::Canceled)),
            OpState::New => {
                let core = machine::current_core();
                let user_data = CORES[core].slots.lock().alloc();
                CORES[core].ring_busy.store(true, Ordering::SeqCst);
                this.entry.user_data = user_data;
                let entry = this.entry;
                let pushed = RINGS.try_with(|slot| match slot {
                    Some(Ok(ring)) => {
                        if ring.push(entry).is_ok() {
                            return Ok(true);
                        }
                        let _ = ring.submit(0);
                        Ok(ring.push(entry).is_ok())
                    }
                    Some(Err(e)) => Err(*e),
                    None => Err(Error::Unsupported),
                });
                match pushed {
                    Some(Ok(true)) => {
                        this.state = OpState::InFlight { core, user_data };
                        let mut slots = CORES[core].slots.lock();
                        match slots.poll(user_data, || cx.waker().clone()) {
                            Poll::Ready(raw) => {
                                this.state = OpState::Done;
                                Poll::Ready(abi::decode(raw))
                            }
                            Poll::Pending => Poll::Pending,
                        }
                    }
                    other => {
                        let mut slots = CORES[core].slots.lock();
                        slots.abandon(user_data, None);
                        let _ = slots.complete(user_data, 0);
                        drop(slots);
                        match other {
                            Some(Err(e)) => {
                                this.state = OpState::Done;
                                Poll::Ready(Err(e))
                            }
                            // Queue full or ring busy: try again next round.
                            _ => {
                                cx.waker().wake_by_ref();
                                Poll::Pending
                            }
                        }
                    }
                }
            }
            OpState::InFlight { core, user_data } => {
                match CORES[core].slots.lock().poll(user_data, || cx.waker().clone()) {
                    Poll::Ready(raw) => {
                        this.state = OpState::Done;
                        this.keep = None;
                        Poll::Ready(abi::decode(raw))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl Drop for RingOp {
    fn drop(&mut self) {
        if let OpState::InFlight { core, user_data } = self.state {
            CORES[core].slots.lock().abandon(user_data, self.keep.take());
        }
    }
}

/// Operations in flight on `core`'s ring (including abandoned ones whose
/// completion has not arrived yet).
pub fn in_flight(core: usize) -> usize {
    CORES.get(core).map_or(0, |c| c.slots.lock().in_flight())
}

/// `Nop` → 0.
pub fn nop() -> RingOp {
    op(sqe::nop(0))
}

/// `Timer`: completes once the TSC has reached `deadline_tsc` (the kernel
/// fires ring timers at its scheduling points: up to a tick late).
pub fn timer_at(deadline_tsc: u64) -> RingOp {
    op(sqe::timer(deadline_tsc, 0))
}

/// `Notify(env)`: bumps `env`'s notification counter and wakes its
/// sleeping vCPUs.
pub fn notify(env: u64) -> RingOp {
    op(sqe::notify(env, 0))
}

/// `ConsoleWrite` of `bytes` (at most [`abi::CONSOLE_WRITE_MAX`]); the
/// future keeps the bytes alive until the kernel has read them, even if it
/// is dropped.
pub fn console_write(bytes: impl Into<Box<[u8]>>) -> RingOp {
    let bytes: Box<[u8]> = bytes.into();
    let mut o = op(sqe::console_write(bytes.as_ptr() as u64, bytes.len() as u64, 0));
    o.keep = Some(bytes);
    o
}

/// `FrameAlloc` → frame number (`None`: any frame).
pub fn frame_alloc(frame: Option<u64>) -> RingOp {
    op(sqe::frame_alloc(frame, 0))
}

/// `FrameFree(frame)`.
pub fn frame_free(frame: u64) -> RingOp {
    op(sqe::frame_free(frame, 0))
}

/// `Map(frame, va, rights)`.
pub fn map(frame: u64, va: u64, rights: Rights) -> RingOp {
    op(sqe::map(frame, va, rights, 0))
}

/// `Unmap(va)`.
pub fn unmap(va: u64) -> RingOp {
    op(sqe::unmap(va, 0))
}

/// `Protect(va, rights)`.
pub fn protect(va: u64, rights: Rights) -> RingOp {
    op(sqe::protect(va, rights, 0))
}

/// `FrameGrant(frame, env, rights)`.
pub fn grant(frame: u64, env: u64, rights: Rights) -> RingOp {
    op(sqe::grant(frame, env, rights, 0))
}

/// `FrameRevoke(frame, env)`.
pub fn revoke(frame: u64, env: u64) -> RingOp {
    op(sqe::revoke(frame, env, 0))
}
