//! Signals between environments (`abi::signal`): each environment's
//! pending word, its signal entry and mask, who may post to whom, and the
//! post itself (the pending bits, the wake-up of sleepers, the interrupt of
//! a running vCPU).
//!
//! The upcall is delivered by the scheduler (`sched::upcall::deliver_signal`)
//! on the way back to ring 3: this module never touches a run queue, it
//! only kicks cores ([`mailbox::kick`]).
//!
//! **Who may signal whom.** An environment's *family* is the environment
//! the kernel started at the root of its `EnvCreate` chain, fixed at
//! creation ([`Env::family`]): a post is allowed to the caller itself and
//! within its family only. Families never mix (a child cannot leave its
//! family), so an application cannot signal another application's
//! processes, and the check is one comparison with no walk of a creator
//! chain whose members may already be gone.
//!
//! **Flooding.** Posts coalesce into the pending word; a core is kicked
//! only when the word goes from 0 to non-zero while the target's upcalls
//! are unmasked, i.e. at most once per upcall the target takes, and the
//! target re-arms that only by taking an upcall (and unmasking) itself. An
//! event is queued only for a target without an entry, and only on the
//! same transition (at most one per [`abi::signal::TAKE`]).

use super::{Env, lookup, mailbox, post_event, wake};
use abi::Error;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::ownership::EnvId;

/// An environment's signal state.
pub struct Signals {
    /// Bits posted and not yet taken.
    pub pending: AtomicU64,
    /// The upcall entry (0: none).
    pub entry: AtomicU64,
    /// Cores whose vCPU takes the upcalls (bit per core; all if 0).
    pub cores: AtomicU64,
    /// Upcalls masked: set by each delivery, cleared by `UNMASK`/`RESUME`.
    pub masked: AtomicBool,
    /// Bits posted to this environment when one of its children is
    /// reclaimed (`ChildSignal`; 0: none).
    pub on_child_end: AtomicU64,
}

impl Signals {
    /// No entry, nothing pending, unmasked.
    pub const fn new() -> Signals {
        Signals {
            pending: AtomicU64::new(0),
            entry: AtomicU64::new(0),
            cores: AtomicU64::new(0),
            masked: AtomicBool::new(false),
            on_child_end: AtomicU64::new(0),
        }
    }

    /// The cores that may take an upcall.
    #[inline]
    pub fn core_mask(&self) -> u64 {
        match self.cores.load(Ordering::Acquire) {
            0 => u64::MAX,
            m => m,
        }
    }

    /// Whether an upcall could be delivered now (an entry, unmasked, bits
    /// pending): what interrupts a blocking call.
    #[inline]
    pub fn deliverable(&self) -> bool {
        self.pending.load(Ordering::Acquire) != 0
            && !self.masked.load(Ordering::Acquire)
            && self.entry.load(Ordering::Acquire) != 0
    }
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `from` may post to `to` (see the module docs).
pub fn may_signal(from: &Env, to: &Env) -> bool {
    from.id == to.id || from.family == to.family
}

/// `SignalPost`: `Ok(1)` if `target` has an entry (an upcall will come),
/// `Ok(0)` if the bits only stay pending.
pub fn post(from: &Env, target: EnvId, bits: u64) -> Result<u64, Error> {
    let to = lookup(target).filter(|t| !t.is_dying()).ok_or(Error::NoSuchEnv)?;
    if !may_signal(from, &to) {
        return Err(Error::PermissionDenied);
    }
    if bits == 0 {
        // A probe (POSIX `kill(pid, 0)`): the checks only, nothing posted.
        return Ok(u64::from(to.signals.entry.load(Ordering::Acquire) != 0));
    }
    Ok(u64::from(post_bits(&to, from.id, bits)))
}

/// ORs `bits` into `to`'s pending word as a post from `source` (0: the
/// kernel) and, on the word's transition from 0, interrupts it (or queues
/// one `SIGNAL` event without an entry). Whether `to` has an entry.
fn post_bits(to: &Env, source: EnvId, bits: u64) -> bool {
    let before = to.signals.pending.fetch_or(bits, Ordering::AcqRel);
    let has_entry = to.signals.entry.load(Ordering::Acquire) != 0;
    if before == 0 {
        if has_entry {
            interrupt(to);
        } else {
            post_event(to, abi::event::SIGNAL, source, [bits, 0]);
        }
    }
    has_entry
}

/// A child of `creator` was reclaimed: its `ChildSignal` bits, if any,
/// are posted to it by the kernel (a dying creator gets nothing).
pub fn child_ended(creator: &Env) {
    let bits = creator.signals.on_child_end.load(Ordering::Acquire);
    if bits != 0 && !creator.is_dying() {
        post_bits(creator, EnvId(0), bits);
    }
}

/// Makes the target's vCPUs notice pending bits: sleepers are looked at
/// again (their blocking call ends with `Interrupted`), and each core that
/// holds a vCPU of it on the registered cores reschedules (one IPI at
/// most, coalesced by the core's reschedule flag).
pub fn interrupt(env: &Env) {
    if env.signals.masked.load(Ordering::Acquire) {
        return;
    }
    wake(env);
    let mut mask = env.vcpu_cores.load(Ordering::Acquire) & env.signals.core_mask();
    while mask != 0 {
        let core = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        mailbox::kick(core);
    }
}

/// `SignalCtl` `TAKE`, `MASK`, `UNMASK` (`RESUME` is the scheduler's).
pub fn control(env: &Env, op: u64) -> Result<u64, Error> {
    match op {
        abi::signal::TAKE => Ok(env.signals.pending.swap(0, Ordering::AcqRel)),
        abi::signal::MASK => {
            env.signals.masked.store(true, Ordering::Release);
            Ok(0)
        }
        abi::signal::UNMASK => {
            unmask(env);
            Ok(0)
        }
        _ => Err(Error::InvalidArgument),
    }
}

/// Unmasks upcalls; bits already pending are delivered at once.
pub fn unmask(env: &Env) {
    env.signals.masked.store(false, Ordering::Release);
    if env.signals.pending.load(Ordering::Acquire) != 0 {
        interrupt(env);
    }
}
