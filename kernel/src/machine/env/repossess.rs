//! Memory as a revocable resource: repossession demands, the repossession
//! list, forced taking in bounded steps, and the accessed/dirty scan for
//! libOS pagers (`abi::repossess` is the contract; the rules of a demand
//! are `kernel::repossess`'s).
//!
//! Owns: each environment's [`Repossess`] state (its debt, quota cut and
//! published list), the queue of open demands [`DEMANDS`], the command-line
//! trigger, and the `RepossessList`, `RepossessStatus` and `PageAccess`
//! calls.
//!
//! # Where the forced work runs
//!
//! A demand in the queue is stepped by [`repossess_step`], called next to
//! the dead environments' reclaim: once per scheduling decision (timer,
//! slot end, wake-up) on every core, and back to back in idle loops. A
//! core pops the oldest demand (so a demand is stepped by one core at a
//! time and owned by it meanwhile, without a lock), runs one bounded step
//! and queues it again. A step reads at most
//! [`FORCE_ENTRIES_PER_STEP`] list words (one user copy), and takes at
//! most [`FORCE_FRAMES_PER_STEP`] frames
//! or removes at most [`UNMAP_CHUNK`] mappings of one frame, each
//! environment's under one address-space lock with one shootdown round.
//! Like every scheduling-decision path it never *waits* for an
//! environment's lock: a busy address space puts the step off to the next
//! decision. No lock of this module is held across a shootdown.
//!
//! # Accounting
//!
//! The debt (`owed`) is an atomic, paid by the environment's own frees
//! ([`on_free`], from `frame_free`) and by forced takes, whichever comes
//! first: each payment lowers the quota by one (`quota_cut`). A free that
//! races the last forced take of a step may leave the kernel with one
//! frame more than owed; that frame is not charged to the quota (the
//! environment may allocate one again), only its contents are lost — it
//! was on the list the environment published.

use super::bindings::{LockPolicy, UNMAP_CHUNK, unmap_foreign};
use super::events::post_event;
use super::{Env, Outcome, lock_serving_mailbox, lookup_name, shard, terminate};
use crate::machine::memory;
use crate::machine::paging::AddressSpace;
use crate::machine::tlb::{self, Flush};
use abi::Error;
use abi::event::{REPOSSESS_REQUEST, REPOSSESSED};
use abi::repossess::{FORCE_ENTRIES_PER_STEP, FORCE_FRAMES_PER_STEP, SETTLED};
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kernel::frames::FrameNumber;
use kernel::ownership::{EnvId, ReleaseStep};
use kernel::repossess::{Demand, End, Plan};
use spin::Mutex;
use x86_64::instructions::interrupts::without_interrupts;

/// An environment's side of the protocol.
pub struct Repossess {
    /// Frames still owed to the open demand (0: none open).
    owed: AtomicU64,
    /// Frames of quota taken away so far (every payment, ever).
    quota_cut: AtomicU64,
    /// The published list: `(ptr, len)` (a leaf lock, held for a copy).
    list: Mutex<(u64, u64)>,
    /// A demand of its is in the queue (until its last step has run, which
    /// may be after the debt is paid): one at a time.
    queued: AtomicBool,
}

impl Repossess {
    /// No demand, no list.
    pub const fn new() -> Repossess {
        Repossess {
            owed: AtomicU64::new(0),
            quota_cut: AtomicU64::new(0),
            list: Mutex::new((0, 0)),
            queued: AtomicBool::new(false),
        }
    }

    /// Frames of quota taken away so far.
    pub fn quota_cut(&self) -> u64 {
        self.quota_cut.load(Ordering::Acquire)
    }

    /// Frames still owed.
    pub fn owed(&self) -> u64 {
        self.owed.load(Ordering::Acquire)
    }

    /// Pays one frame of the debt if any is owed: whether it did.
    #[allow(
        deprecated,
        reason = "fetch_update is try_update from Rust 1.99 on; kept for older stables"
    )]
    fn pay_one(&self) -> bool {
        let paid = self
            .owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| o.checked_sub(1))
            .is_ok();
        if paid {
            self.quota_cut.fetch_add(1, Ordering::AcqRel);
        }
        paid
    }

    fn list(&self) -> (u64, u64) {
        without_interrupts(|| *self.list.lock())
    }
}

impl Default for Repossess {
    fn default() -> Repossess {
        Repossess::new()
    }
}

/// Open demands, each owned by the queue (or by the core stepping it).
static DEMANDS: Mutex<VecDeque<(Arc<Env>, Demand)>> = Mutex::new(VecDeque::new());
/// How many demands are open (the queue's length, plus one being stepped):
/// lets every scheduling decision skip the lock when there is none.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// The command line's `memrevoke=APP:N:MS`, armed by `run` mode.
struct Trigger {
    app: String,
    frames: u64,
    ms: u64,
    at_tsc: u64,
}
static TRIGGER: Mutex<Option<Trigger>> = Mutex::new(None);
static TRIGGER_ARMED: AtomicUsize = AtomicUsize::new(0);

/// Demands open now (the tests' check that every one ended).
pub fn open_demands() -> usize {
    OPEN.load(Ordering::Acquire)
}

/// Asks `env` for `frames` data frames back by TSC `deadline`: posts the
/// [`REPOSSESS_REQUEST`] event and opens the demand (the test hook and the
/// command-line trigger). `Busy` if a demand is open already,
/// `InvalidArgument` for 0 frames, `NoSuchEnv` for a dying environment.
pub fn request(env: &Arc<Env>, frames: u64, deadline: u64) -> Result<(), Error> {
    if env.is_dying() {
        return Err(Error::NoSuchEnv);
    }
    let demand = Demand::new(frames, deadline).ok_or(Error::InvalidArgument)?;
    let rp = &env.repossess;
    rp.queued
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .map_err(|_| Error::Busy)?;
    rp.owed.store(frames, Ordering::Release);
    OPEN.fetch_add(1, Ordering::AcqRel);
    without_interrupts(|| DEMANDS.lock().push_back((Arc::clone(env), demand)));
    post_event(env, REPOSSESS_REQUEST, EnvId::NONE, [frames, deadline]);
    Ok(())
}

/// `env` freed a data frame (`frame_free`): it pays one frame of an open
/// demand, which lowers its quota.
#[inline]
pub fn on_free(env: &Env) {
    if env.repossess.owed.load(Ordering::Relaxed) != 0 {
        pay(env);
    }
}

/// Pays one frame of `env`'s debt if any is owed, and shows the smaller
/// quota in its info page (`InfoPage::frame_quota`, the high half of the
/// word it shares with `cores`): whether it paid.
#[allow(
    deprecated,
    reason = "fetch_update is try_update from Rust 1.99 on; kept for older stables"
)]
fn pay(env: &Env) -> bool {
    const WORD: usize = core::mem::offset_of!(abi::InfoPage, cores);
    const _: () = assert!(core::mem::offset_of!(abi::InfoPage, frame_quota) == WORD + 4);
    const _: () = assert!(WORD.is_multiple_of(8));
    let paid = env.repossess.pay_one();
    if paid && env.info_frame.load(Ordering::Acquire) != 0 {
        let word = super::info_word(env, WORD as u64);
        // Never below 0: the info page's quota starts at the whole quota
        // and loses one per payment, as `Env::quota_now` does.
        let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            (w >> 32 != 0).then(|| w - (1 << 32))
        });
    }
    paid
}

/// `memrevoke=APP:N:MS`: `MS` milliseconds from now, the oldest live
/// environment named `app` is asked for `frames` frames with a deadline
/// `MS` milliseconds after that.
pub fn arm_trigger(app: &str, frames: u64, ms: u64) {
    let at_tsc = crate::machine::cpu::rdtsc() + ms_to_tsc(ms);
    let trigger = Trigger { app: String::from(app), frames, ms, at_tsc };
    without_interrupts(|| *TRIGGER.lock() = Some(trigger));
    TRIGGER_ARMED.store(1, Ordering::Release);
}

fn ms_to_tsc(ms: u64) -> u64 {
    ms.saturating_mul(crate::machine::time::tsc_hz() / 1000)
}

fn fire_trigger(now: u64) {
    let due = without_interrupts(|| {
        let mut t = TRIGGER.lock();
        if t.as_ref().is_some_and(|t| now >= t.at_tsc) { t.take() } else { None }
    });
    let Some(t) = due else { return };
    TRIGGER_ARMED.store(0, Ordering::Release);
    match lookup_name(&t.app) {
        Some(env) => {
            let result = request(&env, t.frames, now + ms_to_tsc(t.ms));
            crate::machine::console::kprintln!(
                "exo: memrevoke: asked env {} ({}) for {} frames within {} ms: {:?}",
                env.id,
                env.name,
                t.frames,
                t.ms,
                result
            );
        }
        None => crate::machine::console::kprintln!("exo: memrevoke: no live env named {}", t.app),
    }
}

/// One bounded step of the oldest open demand, if any (see the module
/// docs). Returns whether it did work (not merely looked at a demand
/// before its deadline), so that the idle loop does not spin on a waiting
/// demand.
pub fn repossess_step() -> bool {
    // The common case, at every decision: two loads, nothing else.
    if TRIGGER_ARMED.load(Ordering::Acquire) == 0 && OPEN.load(Ordering::Acquire) == 0 {
        return false;
    }
    let now = crate::machine::cpu::rdtsc();
    if TRIGGER_ARMED.load(Ordering::Acquire) != 0 {
        fire_trigger(now);
    }
    if OPEN.load(Ordering::Acquire) == 0 {
        return false;
    }
    let Some((env, mut demand)) = without_interrupts(|| DEMANDS.lock().pop_front()) else {
        return false;
    };
    let (worked, open) = without_interrupts(|| step(&env, &mut demand, now));
    if open {
        without_interrupts(|| DEMANDS.lock().push_back((env, demand)));
    } else {
        env.repossess.queued.store(false, Ordering::Release);
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
    worked
}

/// What taking one frame did.
enum Take {
    /// The frame went back to the pool.
    Taken,
    /// Some of its mappings went (or its address space was busy): again.
    More,
    /// Not a frame of the environment's the kernel may take: skipped.
    Skip,
}

/// One step of `demand` on `env`: `(did work, still open)`.
fn step(env: &Arc<Env>, demand: &mut Demand, now: u64) -> (bool, bool) {
    let rp = &env.repossess;
    if env.is_dying() {
        // Its reclaim returns everything; the demand ends with it.
        rp.owed.store(0, Ordering::Release);
        return (false, false);
    }
    demand.sync_owed(rp.owed());
    let (ptr, len) = rp.list();
    match demand.plan(now, len) {
        Plan::Wait => (false, true),
        Plan::Over(end) => {
            finish(env, end);
            (true, false)
        }
        Plan::Continue { frame, index } => {
            match take(env, FrameNumber(frame)) {
                Take::Taken => took(env, demand, frame, index),
                Take::Skip => demand.finished_frame(false),
                Take::More => {}
            }
            (true, true)
        }
        Plan::Read { start, count } => {
            let mut words = [0u64; FORCE_ENTRIES_PER_STEP as usize];
            let words = &mut words[..count as usize];
            match read_list(env, ptr, start, words) {
                Ok(()) => {}
                Err(Error::Busy) => return (false, true),
                Err(_) => {
                    // Unreadable from `start` on: the list ends there.
                    let readable = (0..count)
                        .take_while(|&i| {
                            read_list(env, ptr, start + i, &mut words[i as usize..=i as usize])
                                .is_ok()
                        })
                        .count() as u64;
                    if readable == 0 {
                        let end = demand.list_ends_at(start);
                        finish(env, end);
                        return (true, false);
                    }
                    // Go on with the readable part; the next step stops at
                    // the first unreadable word.
                    return walk(env, demand, start, &words[..readable as usize]);
                }
            }
            walk(env, demand, start, words)
        }
    }
}

/// Tries the list entries `words` (from list index `start`) in order.
fn walk(env: &Arc<Env>, demand: &mut Demand, start: u64, words: &[u64]) -> (bool, bool) {
    let mut frames = 0;
    let mut looked = start;
    for (i, &word) in (start..).zip(words) {
        if frames >= FORCE_FRAMES_PER_STEP || demand.owed() == 0 {
            break;
        }
        looked = i + 1;
        if word >= memory::FRAME_CAPACITY {
            continue;
        }
        match take(env, FrameNumber(word)) {
            Take::Taken => {
                took(env, demand, word, i);
                frames += 1;
            }
            Take::More => {
                // Mapped many times, or an address space was busy: this
                // frame goes on in the next steps.
                demand.started(word, i);
                demand.advance(i + 1);
                return (true, true);
            }
            Take::Skip => {}
        }
    }
    demand.advance(looked);
    (true, true)
}

fn took(env: &Env, demand: &mut Demand, frame: u64, index: u64) {
    let paid = pay(env);
    demand.finished_frame(paid);
    post_event(env, REPOSSESSED, EnvId::NONE, [frame, index]);
}

fn finish(env: &Arc<Env>, end: End) {
    match end {
        End::Settled { taken } => {
            post_event(env, REPOSSESSED, EnvId::NONE, [SETTLED, taken]);
        }
        End::Uncovered { asked, owed } => {
            env.repossess.owed.store(0, Ordering::Release);
            let why = format!("repossession: list covered {} of {asked} frames owed", asked - owed);
            terminate(env, Outcome::Killed(why));
        }
    }
}

/// Reads list words `start ..` into `out`, without waiting for the
/// address-space lock (`Busy`).
fn read_list(env: &Env, ptr: u64, start: u64, out: &mut [u64]) -> Result<(), Error> {
    let mut bytes = [0u8; FORCE_ENTRIES_PER_STEP as usize * 8];
    let bytes = &mut bytes[..out.len() * 8];
    super::copy_from_user_nowait(env, ptr + start * 8, bytes)?;
    for (w, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_le_bytes(b.try_into().expect("8 bytes"));
    }
    Ok(())
}

/// One step of taking `frame` from `env`: its mappings (the owner's and
/// any grantee's, at most [`UNMAP_CHUNK`], each address space's under one
/// lock taken without waiting, one shootdown each), then, once none is
/// left, the frame itself back to the pool and off the quota's charge.
fn take(env: &Env, frame: FrameNumber) -> Take {
    let step = shard(frame).repossess_step(frame, env.id, UNMAP_CHUNK);
    match step {
        // `repossess_step` skips shared frames, so `Kept` does not occur.
        None | Some(ReleaseStep::Kept) => Take::Skip,
        Some(ReleaseStep::Released) => {
            env.owned.lock().remove(frame);
            memory::free_frame(frame).expect("an owned frame is allocated");
            env.uncharge();
            Take::Taken
        }
        Some(ReleaseStep::Unmap(batch)) => {
            // Owned, not released, not shared (shared frames are never
            // repossessed): the records stay until `Released`.
            unmap_foreign(frame, &batch, LockPolicy::Skip);
            Take::More
        }
    }
}

// --- system calls -------------------------------------------------------------

/// `RepossessList(ptr, len)` (checked by the decoder): replaces the list.
pub fn set_list(env: &Env, ptr: u64, len: u64) {
    let value = if len == 0 { (0, 0) } else { (ptr, len) };
    without_interrupts(|| *env.repossess.list.lock() = value);
}

/// `RepossessStatus()`: frames still owed.
pub fn status(env: &Env) -> u64 {
    env.repossess.owed()
}

/// `PageAccess(va, pages, bitmap, clear_dirty)` (range checked by the
/// decoder): reads and clears the accessed (and, if asked, dirty) bits of
/// `env`'s mappings, flushes them on every core, writes the bitmap.
/// Returns how many pages were accessed.
pub fn page_access(
    env: &Env,
    va: u64,
    pages: u64,
    bitmap: u64,
    clear_dirty: bool,
) -> Result<u64, Error> {
    const WORDS: usize = (abi::repossess::ACCESS_SCAN_MAX / 32) as usize;
    let mut bits = [0u64; WORDS];
    let accessed = {
        let mut aspace = lock_serving_mailbox(&env.aspace);
        let n = scan_access(&mut aspace, va, pages, clear_dirty, &mut bits);
        if n.1 {
            tlb::shootdown(&env.tlb_space(), Flush { start: va, pages });
        }
        n.0
    };
    let words = pages.div_ceil(32) as usize;
    let mut bytes = [0u8; WORDS * 8];
    for (b, w) in bytes.chunks_exact_mut(8).zip(&bits[..words]) {
        b.copy_from_slice(&w.to_le_bytes());
    }
    if words > 0 {
        super::copy_to_user(env, bitmap, &bytes[..words * 8])?;
    }
    Ok(accessed)
}

/// The scan under the address-space lock: `(pages accessed, any bit
/// cleared)`.
fn scan_access(
    aspace: &mut AddressSpace,
    va: u64,
    pages: u64,
    clear_dirty: bool,
    bits: &mut [u64],
) -> (u64, bool) {
    use x86_64::structures::paging::PageTableFlags as F;
    let mut accessed = 0;
    let mut cleared = false;
    for i in 0..pages {
        let at = va + i * abi::PAGE_SIZE;
        let mut got = (false, false);
        let _ = aspace.protect(at, |_, old| {
            got = (old.contains(F::ACCESSED), old.contains(F::DIRTY));
            let mut new = old - F::ACCESSED;
            if clear_dirty {
                new -= F::DIRTY;
            }
            Ok(new)
        });
        let (a, d) = got;
        if a {
            accessed += 1;
        }
        cleared |= a || (d && clear_dirty);
        let word = &mut bits[(i / 32) as usize];
        *word |= (u64::from(a) | u64::from(d) << 1) << ((i % 32) * 2);
    }
    (accessed, cleared)
}
