//! Environments: protection domains, their frames and their mappings.
//!
//! An [`Env`] is the kernel's only notion of a protection domain: an address
//! space, the frames charged to it (data frames it owns, the page-table pages
//! of its address space), its exception entry, and the vCPUs that run it (see
//! `machine::sched`). This module (in [`bindings`]) implements the memory
//! secure bindings:
//! every frame allocation, free, grant, revoke, map, unmap and protect goes
//! through here and is checked against the frame ownership table
//! ([`kernel::ownership`]), sharded over [`SHARDS`] locks by frame number.
//!
//! # Lock order
//!
//! ```text
//! ENVS (read or write, briefly, interrupts off)
//!   → one Env::aspace (two only as creator then child: `ShareRange`;
//!     the creation tree is acyclic, so this order cannot cycle)
//!     → one frame-table shard
//!       → the frame bitmap
//! leaf locks, taken alone: terminal::TERMINAL, Env::owned, Env::kernel_frames, Env::event_lock,
//!   Env::exception, Ipc::accept, RECLAIMS, the scheduler's `incoming` lists
//! ```
//!
//! A shard lock is never held while waiting for another core. The `aspace`
//! lock may be held across a TLB shootdown, so it is acquired with
//! [`lock_serving_mailbox`], which keeps this core answering shootdown
//! requests while it spins: two cores that each hold one address space and
//! shoot at the other cannot deadlock. Code that must unmap from *other*
//! environments (revocation, a dead owner's reclaim) holds no address-space
//! lock of its own meanwhile ([`unmap_foreign`]).
//!
//! **A scheduling decision never waits for an environment's lock**: the
//! environment's other vCPUs could keep it busy for as long as they like.
//! Predicate evaluation and slot upcalls use `try_lock`; a busy lock defers
//! the predicate to the next decision and counts as an undeliverable upcall.
//! Every lock holder works in bounded steps ([`Progress`], [`RangeStep`],
//! [`Reclaim`]), so a waiter's spin is bounded too.
//!
//! # Life cycle
//!
//! `spawn` → running (one or more vCPUs) → [`terminate`] (first outcome
//! wins; every core holding one of its vCPUs is told) → the last vCPU is
//! dropped by its core → [`Reclaim`], in bounded steps at scheduling
//! decisions and in idle loops: every mapping others have of its frames is
//! removed, every frame returns to the pool, and only then is the outcome
//! published, so a test that sees the outcome can count free frames.
//!
//! # Files
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`Env`], its exception and IPC registrations, the frame table's shards, the address-space lock discipline |
//! | [`registry`] | the registry of live environments, ending ([`terminate`]), the [`Reclaim`] state machine, run-mode power-off |
//! | [`bindings`] | the secure bindings: frames, grants, mappings, pinned ring frames |
//! | [`child`] | child environments made from user space, copy-on-write sharing, `FrameCopy` |
//! | [`umem`] | user memory: [`USlice`], copies through the owner's page tables, console output |
//! | [`spawn`] | creating an environment from an ELF image in the initrd, its kernel pages |
//! | [`terminal`] | console input as a capability: the reader, `ConsoleRead`, `ConsoleGive`, the receive interrupt's wake-up |
//! | [`events`] | the info page, vCPU pages, the event queue and wake-ups |
//! | [`signal`] | signals between environments: pending bits, entry, mask, who may post |
//! | [`repossess`] | memory repossession: demands, the repossession list, forced taking in bounded steps, the accessed-bit scan |
//!
//! This layer never calls the scheduler: starting a vCPU is
//! `sched::spawn`'s, and waking one is a [`mailbox::kick`].

pub mod bindings;
pub mod child;
#[allow(unsafe_code, reason = "kernel-owned pages' words through the direct map")]
pub mod events;
pub mod registry;
pub mod repossess;
pub mod signal;
#[allow(unsafe_code, reason = "writes ELF segments and kernel pages into fresh frames")]
pub mod spawn;
pub mod terminal;
#[allow(unsafe_code, reason = "user memory through the direct map, under the address-space lock")]
pub mod umem;

pub use bindings::*;
pub use child::*;
pub use events::*;
pub use registry::*;
pub use repossess::repossess_step;
pub use spawn::*;
pub use umem::*;

use super::mailbox;
use super::paging::AddressSpace;
use super::percpu::MAX_CPUS;
use super::tlb;
use abi::Error;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use kernel::frames::FrameNumber;
use kernel::ownership::{EnvId, FrameTable};
use kernel::syscall::Redirect;
use spin::{Mutex, MutexGuard, Once};

/// Number of frame-table shards (frame number modulo this).
pub const SHARDS: usize = 64;

/// Shard `i` of the frame table.
macro_rules! frame_tables {
    ($($i:literal)*) => { [$(Mutex::new(FrameTable::shard(SHARDS as u64, $i))),*] };
}

/// The frame table, sharded by frame number modulo [`SHARDS`] (each shard
/// an array of its own frames' records: `FrameTable::shard`).
pub(super) static FRAME_TABLE: [Mutex<FrameTable>; SHARDS] = frame_tables!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63
);

#[inline]
pub(super) fn shard(frame: FrameNumber) -> MutexGuard<'static, FrameTable> {
    FRAME_TABLE[(frame.raw() % SHARDS as u64) as usize].lock()
}

/// Default frame quota of an environment (16 MiB).
pub const DEFAULT_QUOTA: u64 = kernel::cmdline::DEFAULT_QUOTA;

/// The frame quota new environments get (`quota=` on the command line).
static QUOTA: AtomicU64 = AtomicU64::new(DEFAULT_QUOTA);

/// Sets the frame quota of environments created from now on (boot).
pub fn set_quota(frames: u64) {
    QUOTA.store(frames, Ordering::Relaxed);
}

/// The frame quota a new environment gets.
pub fn quota() -> u64 {
    QUOTA.load(Ordering::Relaxed)
}
/// Mappings an environment may hold per frame of quota (see `map_locked`).
pub const MAPPINGS_PER_FRAME: u64 = 16;

/// How an environment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `exit(code)`, or its last vCPU ended (code 0).
    Exited(u64),
    /// Stopped by the kernel, with the reason printed on the console.
    Killed(String),
}

/// The registered exception entry and stack.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExceptionHandler {
    /// Entry point (0: none).
    pub entry: u64,
    /// Top of core 0's exception stack.
    pub stack_top: u64,
    /// Distance between consecutive cores' stack tops (0: one shared stack).
    pub stride: u64,
}

impl ExceptionHandler {
    /// Top of core `core`'s exception stack.
    pub fn stack_top_for(&self, core: usize) -> u64 {
        per_core_stack_top(self.stack_top, self.stride, core)
    }
}

/// Top of core `core`'s stack in a per-core stack array registered as core
/// 0's top and the distance between consecutive cores' tops (exception and
/// IPC stacks); saturates at 0, which is never mapped.
pub fn per_core_stack_top(top: u64, stride: u64, core: usize) -> u64 {
    top.saturating_sub(stride.saturating_mul(core as u64))
}

/// Where protected control transfers enter an environment, and whom it
/// accepts calls (and notifications) from. Read on every call without a
/// lock: the entry is stored last (release) and loaded first (acquire).
pub struct Ipc {
    /// Entry point (0: none registered).
    pub entry: AtomicU64,
    /// Top of core 0's IPC stack.
    pub stack_top: AtomicU64,
    /// Distance between consecutive cores' IPC stack tops.
    pub stride: AtomicU64,
    /// Everyone is accepted.
    pub accept_any: AtomicBool,
    /// Callers accepted by name (at most `abi::ACCEPT_MAX`).
    pub accept: Mutex<Vec<EnvId>>,
    /// Cores whose IPC stack an activation is using (bit per core): a call
    /// into a busy stack gets `Busy` (see `sched::Activation`).
    pub stack_busy: AtomicU64,
}

impl Ipc {
    /// Whether `caller` may call (or notify) this environment.
    pub fn accepts(&self, caller: EnvId) -> bool {
        self.accept_any.load(Ordering::Acquire) || self.accept.lock().contains(&caller)
    }

    /// The entry and the top of core `core`'s IPC stack, if registered.
    pub fn entry_for(&self, core: usize) -> Option<(u64, u64)> {
        let entry = self.entry.load(Ordering::Acquire);
        let top = self.stack_top.load(Ordering::Relaxed);
        let stride = self.stride.load(Ordering::Relaxed);
        (entry != 0).then(|| (entry, per_core_stack_top(top, stride, core)))
    }
}

/// An environment's system-call redirection ([`Redirect`]), read without a
/// lock by scheduling decisions on any core: a sequence lock over five
/// words. Writers (`SetSyscallRedirect`, interrupts off) serialize on a
/// leaf lock and hold it for five stores; a reader retries while a write
/// is in progress, so its wait is bounded by one writer's few stores.
pub struct RedirectCell {
    /// Even: stable; odd: a write in progress.
    seq: AtomicU64,
    /// `entry` (0: none), `stack_top`, `stride`, `lib_start`, `lib_end`.
    words: [AtomicU64; 5],
    writer: Mutex<()>,
}

impl RedirectCell {
    /// Not registered.
    pub const fn new() -> RedirectCell {
        RedirectCell {
            seq: AtomicU64::new(0),
            words: [const { AtomicU64::new(0) }; 5],
            writer: Mutex::new(()),
        }
    }

    /// Replaces the registration (`None`: none).
    pub fn set(&self, redirect: Option<Redirect>) {
        let words =
            redirect.map_or([0; 5], |r| [r.entry, r.stack_top, r.stride, r.lib_start, r.lib_end]);
        let _writer = self.writer.lock();
        self.seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (slot, word) in self.words.iter().zip(words) {
            slot.store(word, Ordering::Relaxed);
        }
        self.seq.fetch_add(1, Ordering::Release);
    }

    /// Whether a registration may be present (one load: the common "never
    /// registered" case costs the switch paths nothing more). A `false`
    /// racing a concurrent `set` is answered by that `set`'s kick.
    #[inline(always)]
    pub fn maybe_set(&self) -> bool {
        self.words[0].load(Ordering::Relaxed) != 0 || self.seq.load(Ordering::Relaxed) & 1 != 0
    }

    /// The registration, if any (a consistent snapshot).
    #[inline]
    pub fn get(&self) -> Option<Redirect> {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let w: [u64; 5] = core::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    let [entry, stack_top, stride, lib_start, lib_end] = w;
                    return (entry != 0).then_some(Redirect {
                        entry,
                        stack_top,
                        stride,
                        lib_start,
                        lib_end,
                    });
                }
            }
            core::hint::spin_loop();
        }
    }
}

impl Default for RedirectCell {
    fn default() -> Self {
        Self::new()
    }
}

/// A protection domain.
pub struct Env {
    /// Its id, never reused.
    pub id: EnvId,
    /// The application it was started from.
    pub name: String,
    /// The argument word it was started with.
    pub start_arg: u64,
    /// Its page tables. See the module docs for the lock order.
    pub aspace: Mutex<AddressSpace>,
    /// CR3 of that address space (its PML4 never changes).
    root_cr3: u64,
    /// Data frames it owns (for reclaim), under this leaf lock: a
    /// [`FrameSet`](kernel::frameset::FrameSet), whose insert and remove
    /// cost the same at any size (a B-tree set split and merged a node on
    /// every allocate/free pair at some sizes).
    owned: Mutex<kernel::frameset::FrameSet>,
    /// Kernel-owned frames in its address space (info and vCPU pages).
    kernel_frames: Mutex<Vec<FrameNumber>>,
    /// vCPU pages already created, bit per core.
    vcpu_pages: AtomicU64,
    /// The frame of each core's vCPU page (0: none yet).
    vcpu_page_frames: [AtomicU64; MAX_CPUS],
    /// The frame of its event queue (kernel-owned; 0 until loaded).
    event_frame: AtomicU64,
    /// Serializes writers of the event queue (a leaf lock).
    event_lock: Mutex<()>,
    /// The slot prologue upcall entry (0: none).
    pub prologue: AtomicU64,
    /// The slot epilogue upcall entry (0: none).
    pub epilogue: AtomicU64,
    /// Cores where its vCPU may run in unowned slots (bit per core).
    pub default_time: AtomicU64,
    /// Protected control transfer entry and acceptance.
    pub ipc: Ipc,
    /// The frame of its info page (kernel-owned; 0 until loaded).
    info_frame: AtomicU64,
    /// Frame quota (data and page-table frames) given to it: at start, then
    /// as its creator changes it (`ChildQuota`, see [`child::child_quota`]);
    /// repossession lowers what it may use
    /// ([`repossess::Repossess::quota_cut`], see [`Env::quota_now`]).
    quota: AtomicU64,
    /// Its side of memory repossession (debt, quota cut, list).
    pub repossess: repossess::Repossess,
    /// Pages it has mapped (each costs the kernel a reverse-map entry).
    mappings: AtomicU64,
    charged: AtomicU64,
    /// Some environment granted it a frame (set before the grant is
    /// recorded, never cleared): its reclaim's pass over every shard
    /// forgetting grants to it — the whole frame table, whatever its size —
    /// is skipped when this is still false.
    pub(super) granted_to: AtomicBool,
    /// The exception entry, if registered.
    pub exception: Mutex<ExceptionHandler>,
    /// Cores that may hold translations of its address space (bit per core):
    /// set before a core loads its CR3, cleared after the core loads another.
    pub active_cores: AtomicU64,
    /// Cores where it has a vCPU (bit per core).
    pub vcpu_cores: AtomicU64,
    /// Live vCPUs; the one that drops it to 0 reclaims the environment.
    pub live_vcpus: AtomicUsize,
    /// Cores that owe it a look at its sleeping vCPU there (bit per core; see
    /// [`wake`]).
    pub wake_owed: AtomicU64,
    /// Its system-call redirection (`SetSyscallRedirect`), if registered.
    pub redirect: RedirectCell,
    dying: AtomicBool,
    outcome: Once<Outcome>,
    finished: AtomicBool,
    /// Who created it with `EnvCreate` (NONE: the kernel did). Only the
    /// creator may use its handle (see `child`).
    pub creator: EnvId,
    /// The environment the kernel started at the root of its creation
    /// chain (itself if the kernel started it): who may signal it
    /// ([`signal`]).
    pub family: EnvId,
    /// Its signal bits, entry and mask ([`signal`]).
    pub signals: signal::Signals,
    /// Its own children: those alive and the unread exit statuses.
    children: Mutex<ChildBook>,
    /// A child not yet started holds one count of `live_vcpus` (so that it
    /// is reclaimed when destroyed before any vCPU ran): the first start or
    /// the destruction drops it, whichever swaps this first.
    unstarted: AtomicBool,
    /// Frames it owned that sharers still held when it died (still charged
    /// to it; not handed back to its creator).
    kept: AtomicU64,
}

/// An environment's children (a leaf lock).
#[derive(Default)]
pub struct ChildBook {
    /// Children not yet reclaimed.
    pub live: Vec<EnvId>,
    /// Exit statuses not yet read, oldest first (at most
    /// `abi::CHILD_EXITS_KEPT`).
    pub exits: alloc::collections::VecDeque<(EnvId, u64)>,
}

impl Env {
    /// Whether it has been told to end.
    pub fn is_dying(&self) -> bool {
        self.dying.load(Ordering::Acquire)
    }

    /// Its outcome, once it has ended *and* been reclaimed.
    pub fn finished(&self) -> Option<&Outcome> {
        self.finished.load(Ordering::Acquire).then(|| self.outcome.get()).flatten()
    }

    #[allow(
        deprecated,
        reason = "fetch_update is try_update from Rust 1.99 on; kept for older stables"
    )]
    #[inline]
    fn charge(&self) -> Result<(), Error> {
        self.charged
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < self.quota_now()).then_some(c + 1)
            })
            .map(|_| ())
            .map_err(|_| Error::QuotaExceeded)
    }

    /// Its frame quota now: the quota given less what repossession took.
    #[inline]
    pub fn quota_now(&self) -> u64 {
        self.quota().saturating_sub(self.repossess.quota_cut())
    }

    /// The frame quota given to it (at start, or as its creator changed it).
    #[inline]
    pub fn quota(&self) -> u64 {
        self.quota.load(Ordering::Acquire)
    }

    #[inline]
    fn uncharge(&self) {
        self.uncharge_n(1);
    }

    /// Saturating: a late release (a shared frame its dead owner's reclaim
    /// already zeroed the count of) must not wrap.
    #[allow(
        deprecated,
        reason = "fetch_update is try_update from Rust 1.99 on; kept for older stables"
    )]
    fn uncharge_n(&self, n: u64) {
        let _ = self
            .charged
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| Some(c.saturating_sub(n)));
    }

    /// Charges `n` frames if they fit in its quota *now* (less what
    /// repossession took): the reservation by which `ChildQuota` lowers a
    /// quota safely. [`Error::Busy`]: the child uses too much.
    #[allow(
        deprecated,
        reason = "fetch_update is try_update from Rust 1.99 on; kept for older stables"
    )]
    fn reserve(&self, n: u64) -> Result<(), Error> {
        self.charged
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                c.checked_add(n).filter(|&t| t <= self.quota_now())
            })
            .map(|_| ())
            .map_err(|_| Error::Busy)
    }

    #[allow(
        deprecated,
        reason = "fetch_update is try_update from Rust 1.99 on; kept for older stables"
    )]
    fn charge_n(&self, n: u64) -> Result<(), Error> {
        self.charged
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                c.checked_add(n).filter(|&t| t <= self.quota())
            })
            .map(|_| ())
            .map_err(|_| Error::QuotaExceeded)
    }
}

/// Acquires an address-space lock while serving this core's mailbox, so that
/// shootdown requests from a core holding another address space are
/// answered (see the module docs).
#[inline]
pub fn lock_serving_mailbox<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    loop {
        if let Some(guard) = lock.try_lock() {
            return guard;
        }
        mailbox::serve_urgent();
        core::hint::spin_loop();
    }
}

impl Env {
    /// Its address space as the TLB protocol sees it.
    #[inline]
    pub fn tlb_space(&self) -> tlb::Space<'_> {
        tlb::Space { id: self.id, root: self.root_cr3, active_cores: &self.active_cores }
    }
}
