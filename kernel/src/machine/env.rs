//! Environments: protection domains, their frames and their mappings.
//!
//! An [`Env`] is the kernel's only notion of a protection domain: an address
//! space, the frames charged to it (data frames it owns, the page-table pages
//! of its address space), its exception entry, and the vCPUs that run it (see
//! `machine::sched`). This module implements the memory secure bindings:
//! every frame allocation, free, grant, revoke, map, unmap and protect goes
//! through here and is checked against the frame ownership table
//! ([`kernel::ownership`]), sharded over [`SHARDS`] locks by frame number.
//!
//! # Lock order
//!
//! ```text
//! ENVS (read or write, briefly, interrupts off)
//!   → one Env::aspace (never two at once)
//!     → one frame-table shard
//!       → the frame bitmap
//! leaf locks, taken alone: Env::owned, Env::kernel_frames, Env::event_lock,
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

use super::console::kprintln;
use super::mailbox;
use super::memory;
use super::paging::{AddressSpace, leaf_flags, rights_of};
use super::percpu::{MAX_CPUS, online_cpus};
use super::tlb::{self, Flush};
use abi::{Error, Rights};
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use kernel::frames::{FrameError, FrameNumber};
use kernel::ownership::{EnvId, FrameKind, FrameTable, Mapping, ReleaseStep, UnmapStep};
use spin::{Mutex, MutexGuard, Once, RwLock};
use x86_64::instructions::interrupts::without_interrupts;

/// Number of frame-table shards (frame number modulo this).
pub const SHARDS: usize = 64;

static FRAME_TABLE: [Mutex<FrameTable>; SHARDS] = [const { Mutex::new(FrameTable::new()) }; SHARDS];
static ENVS: RwLock<BTreeMap<EnvId, Arc<Env>>> = RwLock::new(BTreeMap::new());
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

fn shard(frame: FrameNumber) -> MutexGuard<'static, FrameTable> {
    FRAME_TABLE[(frame % SHARDS as u64) as usize].lock()
}

/// Default frame quota of an environment (16 MiB).
pub const DEFAULT_QUOTA: u64 = 4096;
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
    /// Data frames it owns (for reclaim), under this leaf lock.
    owned: Mutex<BTreeSet<FrameNumber>>,
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
    /// Frame quota (data and page-table frames).
    pub quota: u64,
    /// Pages it has mapped (each costs the kernel a reverse-map entry).
    mappings: AtomicU64,
    charged: AtomicU64,
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
    dying: AtomicBool,
    outcome: Once<Outcome>,
    finished: AtomicBool,
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
    fn charge(&self) -> Result<(), Error> {
        self.charged
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < self.quota).then_some(c + 1)
            })
            .map(|_| ())
            .map_err(|_| Error::QuotaExceeded)
    }

    fn uncharge(&self) {
        self.charged.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Finds a live environment.
pub fn lookup(id: EnvId) -> Option<Arc<Env>> {
    without_interrupts(|| ENVS.read().get(&id).cloned())
}

/// Finds a live environment by application name (the oldest, if several).
pub fn lookup_name(name: &str) -> Option<Arc<Env>> {
    without_interrupts(|| ENVS.read().values().find(|e| e.name == name && !e.is_dying()).cloned())
}

/// Acquires an address-space lock while serving this core's mailbox, so that
/// shootdown requests from a core holding another address space are
/// answered (see the module docs).
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
    pub fn tlb_space(&self) -> tlb::Space<'_> {
        tlb::Space { id: self.id, root: self.root_cr3, active_cores: &self.active_cores }
    }
}

// --- frames -----------------------------------------------------------------

fn frame_error(e: FrameError) -> Error {
    match e {
        FrameError::OutOfMemory => Error::NoMemory,
        FrameError::OutOfRange(_) => Error::BadFrame,
        FrameError::NotAllocated(_) => Error::FrameUnavailable,
    }
}

/// Allocates a zeroed data frame for `env`: any, or exactly `which`.
pub fn frame_alloc(env: &Env, which: Option<FrameNumber>) -> Result<FrameNumber, Error> {
    env.charge()?;
    let taken = match which {
        None => memory::alloc_frame(),
        Some(f) if f >= memory::FRAME_CAPACITY => Err(FrameError::OutOfRange(f)),
        Some(f) => memory::take_frame(f).map(|()| f),
    };
    let frame = match taken {
        Ok(f) => f,
        Err(e) => {
            env.uncharge();
            return Err(frame_error(e));
        }
    };
    shard(frame).insert(frame, env.id, FrameKind::Data);
    env.owned.lock().insert(frame);
    Ok(frame)
}

/// Allocates a zeroed page-table frame charged to `env`.
fn alloc_table_frame(env: &Env) -> Result<FrameNumber, Error> {
    env.charge()?;
    match memory::alloc_frame() {
        Ok(frame) => {
            shard(frame).insert(frame, env.id, FrameKind::PageTable);
            Ok(frame)
        }
        Err(e) => {
            env.uncharge();
            Err(frame_error(e))
        }
    }
}

/// Frees a data frame `env` owns (not mapped, not granted).
pub fn frame_free(env: &Env, frame: FrameNumber) -> Result<(), Error> {
    if frame >= memory::FRAME_CAPACITY {
        return Err(Error::BadFrame);
    }
    shard(frame).free(frame, env.id)?;
    env.owned.lock().remove(&frame);
    memory::free_frame(frame).expect("an owned frame is allocated");
    env.uncharge();
    Ok(())
}

/// Who holds `frame`, as [`abi::FrameStatus`].
pub fn frame_status(frame: FrameNumber) -> Result<u64, Error> {
    if frame >= memory::FRAME_CAPACITY {
        return Err(Error::BadFrame);
    }
    if let Some(r) = shard(frame).get(frame) {
        let kind = match r.kind {
            FrameKind::Data => abi::FrameHolder::Owned,
            FrameKind::PageTable => abi::FrameHolder::PageTable,
        };
        return Ok(kind as u64 | u64::from(r.owner) << 32);
    }
    Ok(if memory::frame_is_free(frame) { abi::FrameHolder::Free } else { abi::FrameHolder::Kernel }
        as u64)
}

/// Mappings one step of a withdrawal removes (under one address-space lock,
/// with one shootdown round), and frames one step of a reclaim releases.
pub const UNMAP_CHUNK: usize = 64;

/// How far a long operation got. Long operations (revoking a frame mapped
/// many times, unmapping a large range, reclaiming a dead environment) work
/// in bounded steps, so that no system call keeps its core, with interrupts
/// off, from the next slot's owner for long: the system-call layer restarts
/// the call for the next step (see `syscall::restart`), the ring leaves the
/// entry queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Finished, with this result.
    Done(u64),
    /// One step done, more to do: call again with the same arguments.
    More,
}

/// `owner` lets `grantee` map `frame` with at most `rights`. Lowering the
/// rights of an existing grant removes the grantee's mappings first, in
/// steps ([`Progress::More`] until they are all gone; the grantee may not
/// map the frame meanwhile).
pub fn frame_grant(
    owner: &Env,
    frame: FrameNumber,
    grantee: EnvId,
    rights: Rights,
) -> Result<Progress, Error> {
    lookup(grantee).filter(|g| !g.is_dying()).ok_or(Error::NoSuchEnv)?;
    if frame >= memory::FRAME_CAPACITY {
        return Err(Error::BadFrame);
    }
    shard(frame).grant(frame, owner.id, grantee, rights)?;
    Ok(withdraw_step(frame, grantee))
}

/// `owner` withdraws `grantee`'s grant of `frame`; the grantee's mappings
/// are gone (on every core) when this returns `Done`. Many mappings are
/// removed in steps: [`Progress::More`] means "call again".
pub fn frame_revoke(owner: &Env, frame: FrameNumber, grantee: EnvId) -> Result<Progress, Error> {
    if frame >= memory::FRAME_CAPACITY {
        return Err(Error::BadFrame);
    }
    shard(frame).revoke(frame, owner.id, grantee)?;
    let progress = withdraw_step(frame, grantee);
    if progress == Progress::Done(0)
        && let Some(grantee) = lookup(grantee)
    {
        post_event(&grantee, abi::event::GRANT_REVOKED, owner.id, [frame, 0]);
    }
    Ok(progress)
}

/// One step of a withdrawal of `grantee`'s mappings of `frame`: at most
/// [`UNMAP_CHUNK`] of them, one lock of its address space, one shootdown.
fn withdraw_step(frame: FrameNumber, grantee: EnvId) -> Progress {
    let step = shard(frame).unmap_step(frame, grantee, UNMAP_CHUNK);
    let UnmapStep::Unmap(batch) = step else { return Progress::Done(0) };
    let full = batch.len() == UNMAP_CHUNK;
    unmap_foreign(frame, &batch);
    // A short batch was the last one: finish in this call.
    if !full && shard(frame).unmap_step(frame, grantee, UNMAP_CHUNK) == UnmapStep::Done {
        return Progress::Done(0);
    }
    Progress::More
}

/// Removes other environments' mappings of `frame` (a withdrawal's batch,
/// or what a dead owner leaves), each environment's under one lock of its
/// address space with one shootdown round, then forgets them. Takes only
/// those address-space locks, one at a time: the caller holds none.
fn unmap_foreign(frame: FrameNumber, mappings: &[Mapping]) {
    // `mappings` come ordered by environment (the reverse map's order).
    for group in mappings.chunk_by(|a, b| a.env == b.env) {
        if let Some(env) = lookup(group[0].env) {
            let mut aspace = lock_serving_mailbox(&env.aspace);
            let mut removed = 0u64;
            let mut first = 0;
            for m in group {
                if aspace.translate(m.va).is_some_and(|(f, _)| f == frame) {
                    let _ = aspace.unmap(m.va);
                    removed += 1;
                    first = m.va;
                }
            }
            if removed > 0 {
                // Scattered pages: one page, or the whole space.
                let flush = if removed == 1 { Flush::page(first) } else { Flush::everything() };
                tlb::shootdown(&env.tlb_space(), flush);
                env.mappings.fetch_sub(removed, Ordering::Relaxed);
            }
            drop(aspace);
        }
        // Forgotten only now: a frame is reusable once nobody can reach it.
        let mut table = shard(frame);
        for m in group {
            table.remove_mapping(frame, m.env, m.va);
        }
    }
}

// --- mappings ---------------------------------------------------------------

/// Checks a user page address for `map`/`unmap`/`protect`.
fn check_va(va: u64) -> Result<(), Error> {
    if !va.is_multiple_of(abi::PAGE_SIZE) || !(abi::USER_MIN..abi::USER_MAX).contains(&va) {
        return Err(Error::InvalidArgument);
    }
    if abi::in_info_region(va) {
        return Err(Error::Reserved);
    }
    Ok(())
}

fn check_rights(rights: Rights) -> Result<(), Error> {
    if !rights.is_valid() || !rights.contains(Rights::READ) {
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

/// Maps `frame` at `va` in `env`'s address space with `rights`.
pub fn map(env: &Env, frame: FrameNumber, va: u64, rights: Rights) -> Result<(), Error> {
    check_va(va)?;
    check_rights(rights)?;
    if frame >= memory::FRAME_CAPACITY {
        return Err(Error::BadFrame);
    }
    let mut aspace = lock_serving_mailbox(&env.aspace);
    map_locked(env, &mut aspace, frame, va, rights)
}

fn map_locked(
    env: &Env,
    aspace: &mut AddressSpace,
    frame: FrameNumber,
    va: u64,
    rights: Rights,
) -> Result<(), Error> {
    if aspace.translate(va).is_some() {
        return Err(Error::AlreadyMapped);
    }
    // Kernel memory spent on an environment's behalf is bounded by its
    // quota: the reverse map holds at most MAPPINGS_PER_FRAME entries per
    // frame of quota.
    if env.mappings.load(Ordering::Relaxed) >= env.quota * MAPPINGS_PER_FRAME {
        return Err(Error::QuotaExceeded);
    }
    // Intermediate tables first (they may take other shards' locks), then the
    // leaf under the frame's shard lock, so the check and the mapping are one
    // step that a concurrent free or revoke cannot split.
    aspace.ensure_tables(va, &mut || alloc_table_frame(env))?;
    let mut table = shard(frame);
    table.check_map(frame, env.id, rights)?;
    aspace.map(va, frame, leaf_flags(rights), &mut || Err(Error::NoMemory))?;
    table.add_mapping(frame, env.id, va);
    env.mappings.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Removes the mapping at `va`; other cores have forgotten it on return.
pub fn unmap(env: &Env, va: u64) -> Result<(), Error> {
    check_va(va)?;
    let mut aspace = lock_serving_mailbox(&env.aspace);
    let frame = aspace.unmap(va)?;
    tlb::shootdown(&env.tlb_space(), Flush::page(va));
    shard(frame).remove_mapping(frame, env.id, va);
    env.mappings.fetch_sub(1, Ordering::Relaxed);
    Ok(())
}

/// Page-table entries one step of [`unmap_range`] visits at most (present
/// pages, and absent tables skipped whole).
pub const RANGE_CHUNK: usize = 256;

/// How far [`unmap_range`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeStep {
    /// The range is done: this many pages were mapped in all.
    Done(u64),
    /// One step done: go on with `pages` pages from `va`, `done` pages
    /// removed so far.
    More {
        /// Where to go on.
        va: u64,
        /// Pages left.
        pages: u64,
        /// Pages removed so far.
        done: u64,
    },
}

/// Removes the mappings in `va .. va + pages` pages, one bounded step
/// ([`RANGE_CHUNK`] entries, one shootdown round: a full flush above the
/// threshold); `done` is what earlier steps removed.
pub fn unmap_range(env: &Env, va: u64, pages: u64, done: u64) -> Result<RangeStep, Error> {
    if pages > abi::UNMAP_RANGE_MAX {
        return Err(Error::InvalidArgument);
    }
    if pages == 0 {
        return Ok(RangeStep::Done(done));
    }
    check_va(va)?;
    let end = va + pages * abi::PAGE_SIZE;
    if end > abi::USER_MAX {
        return Err(Error::InvalidArgument);
    }
    if va < abi::INFO_VA + abi::INFO_REGION_SIZE && end > abi::INFO_VA {
        return Err(Error::Reserved);
    }
    let mut aspace = lock_serving_mailbox(&env.aspace);
    let mut removed = Vec::new();
    let stop = aspace.unmap_some(va, end, RANGE_CHUNK, &mut removed);
    if !removed.is_empty() {
        tlb::shootdown(&env.tlb_space(), Flush { start: va, pages: (stop - va) / abi::PAGE_SIZE });
    }
    drop(aspace);
    for &(at, frame) in &removed {
        shard(frame).remove_mapping(frame, env.id, at);
    }
    let n = removed.len() as u64;
    env.mappings.fetch_sub(n, Ordering::Relaxed);
    let done = done.saturating_add(n);
    Ok(if stop >= end {
        RangeStep::Done(done)
    } else {
        RangeStep::More { va: stop, pages: (end - stop) / abi::PAGE_SIZE, done }
    })
}

/// Changes the rights of the mapping at `va`.
pub fn protect(env: &Env, va: u64, rights: Rights) -> Result<(), Error> {
    check_va(va)?;
    check_rights(rights)?;
    let mut aspace = lock_serving_mailbox(&env.aspace);
    let old = aspace.protect(va, |frame, _| {
        shard(frame).check_map(frame, env.id, rights)?;
        Ok(leaf_flags(rights))
    })?;
    if !rights.contains(rights_of(old)) {
        tlb::shootdown(&env.tlb_space(), Flush::page(va));
    }
    Ok(())
}

// --- user memory ------------------------------------------------------------

/// Copies `len` bytes from `env`'s memory at `va`. Every page must be mapped
/// user-readable; the copy goes through the direct map, so a bad pointer is
/// an error, never a kernel fault.
pub fn copy_from_user(env: &Env, va: u64, len: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| Error::InvalidArgument)?;
    out.resize(len, 0);
    copy_from_user_into(env, va, &mut out)?;
    Ok(out)
}

/// Copies `out.len()` bytes from `env`'s memory at `va` into `out` (no
/// allocation: the hot paths use a buffer on the stack).
pub fn copy_from_user_into(env: &Env, va: u64, out: &mut [u8]) -> Result<(), Error> {
    let mut done = 0;
    with_user_pages(env, va, out.len(), false, Lock::Wait, |chunk_phys, n| {
        // SAFETY: `chunk_phys..+n` lies inside one frame mapped user-readable
        // in `env`, which cannot be freed while the aspace lock is held.
        let bytes = unsafe {
            core::slice::from_raw_parts(memory::phys_to_virt(chunk_phys) as *const u8, n)
        };
        out[done..done + n].copy_from_slice(bytes);
        done += n;
    })
}

/// Copies `bytes` into `env`'s memory at `va` (pages must be user-writable).
pub fn copy_to_user(env: &Env, va: u64, bytes: &[u8]) -> Result<(), Error> {
    copy_to_user_with(env, va, bytes, Lock::Wait)
}

/// [`copy_to_user`] for a scheduling decision, which never waits for an
/// environment's lock: `Busy` if its address space is locked now.
pub fn copy_to_user_nowait(env: &Env, va: u64, bytes: &[u8]) -> Result<(), Error> {
    copy_to_user_with(env, va, bytes, Lock::Try)
}

/// Whether a user copy may wait for the address-space lock.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    Wait,
    Try,
}

fn copy_to_user_with(env: &Env, va: u64, bytes: &[u8], lock: Lock) -> Result<(), Error> {
    let mut done = 0;
    with_user_pages(env, va, bytes.len(), true, lock, |chunk_phys, n| {
        // SAFETY: as in `copy_from_user`, and the page is mapped writable.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes[done..].as_ptr(),
                memory::phys_to_virt(chunk_phys) as *mut u8,
                n,
            )
        };
        done += n;
    })
}

fn with_user_pages(
    env: &Env,
    va: u64,
    len: usize,
    write: bool,
    lock: Lock,
    mut chunk: impl FnMut(u64, usize),
) -> Result<(), Error> {
    let end = va.checked_add(len as u64).ok_or(Error::BadAddress)?;
    if va < abi::USER_MIN && len > 0 || end > abi::USER_MAX + abi::PAGE_SIZE {
        return Err(Error::BadAddress);
    }
    if va == 0 {
        return Err(Error::BadAddress);
    }
    let aspace = match lock {
        Lock::Wait => lock_serving_mailbox(&env.aspace),
        Lock::Try => env.aspace.try_lock().ok_or(Error::Busy)?,
    };
    use x86_64::structures::paging::PageTableFlags as F;
    let allowed =
        |flags: F| flags.contains(F::USER_ACCESSIBLE) && (!write || flags.contains(F::WRITABLE));
    // Fast path: the whole range in one page (upcall frames, small buffers).
    if len > 0
        && (va ^ (end - 1)) < abi::PAGE_SIZE
        && va % abi::PAGE_SIZE + len as u64 <= abi::PAGE_SIZE
    {
        let (frame, flags) =
            aspace.translate(va & !(abi::PAGE_SIZE - 1)).ok_or(Error::BadAddress)?;
        if !allowed(flags) {
            return Err(Error::BadAddress);
        }
        chunk(frame * abi::PAGE_SIZE + va % abi::PAGE_SIZE, len);
        return Ok(());
    }
    // Check every page first so that a failing copy_to_user writes nothing.
    let mut page = va & !(abi::PAGE_SIZE - 1);
    while page < end {
        let (_, flags) = aspace.translate(page).ok_or(Error::BadAddress)?;
        if !allowed(flags) {
            return Err(Error::BadAddress);
        }
        page += abi::PAGE_SIZE;
    }
    let mut at = va;
    while at < end {
        let (frame, _) = aspace.translate(at & !(abi::PAGE_SIZE - 1)).ok_or(Error::BadAddress)?;
        let offset = at % abi::PAGE_SIZE;
        let n = (abi::PAGE_SIZE - offset).min(end - at) as usize;
        chunk(frame * abi::PAGE_SIZE + offset, n);
        at += n as u64;
    }
    Ok(())
}

/// `ConsoleWrite` (also the ring's `ConsoleWrite` operation).
pub fn console_write(env: &Env, ptr: u64, len: u64) -> Result<u64, Error> {
    if len > abi::CONSOLE_WRITE_MAX {
        return Err(Error::InvalidArgument);
    }
    let bytes = copy_from_user(env, ptr, len as usize)?;
    let text = core::str::from_utf8(&bytes).unwrap_or("<invalid UTF-8>");
    super::console::write_fmt(format_args!("{text}"));
    Ok(len)
}

// --- creation ---------------------------------------------------------------

/// Why an application could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// No such application in the initrd.
    NotFound,
    /// Its ELF image was refused by the loader.
    BadElf(kernel::elf::ElfError),
    /// Loading it ran out of frames or quota.
    Memory(Error),
}

impl core::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpawnError::NotFound => write!(f, "no such application in the initrd"),
            SpawnError::BadElf(e) => write!(f, "malformed ELF: {e}"),
            SpawnError::Memory(e) => write!(f, "out of memory while loading: {e:?}"),
        }
    }
}

/// Round-robin placement of first vCPUs.
static NEXT_CORE: AtomicUsize = AtomicUsize::new(0);

pub use super::percpu::{set_user_cores, user_cores};

/// The initrd the applications are started from (set once at boot).
static INITRD: Once<&'static [u8]> = Once::new();

/// Gives this module the initrd (boot, before any environment starts).
pub fn set_initrd(initrd: &'static [u8]) {
    INITRD.call_once(|| initrd);
}

/// The ELF image of application `name` in the initrd.
pub fn find_app(name: &str) -> Result<&'static [u8], SpawnError> {
    let initrd = INITRD.get().ok_or(SpawnError::NotFound)?;
    let file = kernel::initrd::find(initrd, name).ok().flatten().ok_or(SpawnError::NotFound)?;
    Ok(file.data)
}

/// A core for a new environment's first vCPU: the cores that run
/// environments, round-robin.
pub fn pick_core() -> usize {
    let mask = user_cores();
    let n = online_cpus();
    for _ in 0..n {
        let c = NEXT_CORE.fetch_add(1, Ordering::Relaxed) % n;
        if mask & (1 << c) != 0 {
            return c;
        }
    }
    0
}

/// Creates an environment from an ELF image and registers it; returns it
/// with its entry point. It has no vCPU yet: `sched::spawn` starts its
/// first one, or [`abort_start`] ends it.
pub fn create(name: &str, image: &[u8], arg: u64) -> Result<(Arc<Env>, u64), SpawnError> {
    let plan = kernel::elf::plan(image).map_err(SpawnError::BadElf)?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let pml4 = memory::alloc_frame().map_err(|e| SpawnError::Memory(frame_error(e)))?;
    shard(pml4).insert(pml4, id, FrameKind::PageTable);
    let env = Arc::new(Env {
        id,
        name: String::from(name),
        start_arg: arg,
        aspace: Mutex::new(AddressSpace::new(pml4)),
        root_cr3: pml4 * abi::PAGE_SIZE,
        owned: Mutex::new(BTreeSet::new()),
        kernel_frames: Mutex::new(Vec::new()),
        vcpu_pages: AtomicU64::new(0),
        vcpu_page_frames: [const { AtomicU64::new(0) }; MAX_CPUS],
        event_frame: AtomicU64::new(0),
        event_lock: Mutex::new(()),
        prologue: AtomicU64::new(0),
        epilogue: AtomicU64::new(0),
        default_time: AtomicU64::new(u64::MAX),
        ipc: Ipc {
            entry: AtomicU64::new(0),
            stack_top: AtomicU64::new(0),
            stride: AtomicU64::new(0),
            accept_any: AtomicBool::new(true),
            accept: Mutex::new(Vec::new()),
            stack_busy: AtomicU64::new(0),
        },
        info_frame: AtomicU64::new(0),
        quota: DEFAULT_QUOTA,
        mappings: AtomicU64::new(0),
        charged: AtomicU64::new(1),
        exception: Mutex::new(ExceptionHandler::default()),
        active_cores: AtomicU64::new(0),
        vcpu_cores: AtomicU64::new(0),
        live_vcpus: AtomicUsize::new(0),
        wake_owed: AtomicU64::new(0),
        dying: AtomicBool::new(false),
        outcome: Once::new(),
        finished: AtomicBool::new(false),
    });
    if let Err(e) = load(&env, image, &plan) {
        Reclaim::new(Arc::clone(&env)).run();
        return Err(SpawnError::Memory(e));
    }
    without_interrupts(|| ENVS.write().insert(id, Arc::clone(&env)));
    Ok((env, plan.entry))
}

/// Ends an environment [`create`]d whose first vCPU could not start, and
/// reclaims it at once.
pub fn abort_start(env: &Arc<Env>, e: Error) {
    terminate(env, Outcome::Killed(alloc::format!("could not start its first vCPU: {e:?}")));
    Reclaim::new(Arc::clone(env)).run();
}

/// Maps the ELF segments, the stack and the info page.
fn load(env: &Env, image: &[u8], plan: &kernel::elf::LoadPlan) -> Result<(), Error> {
    let mut aspace = env.aspace.lock();
    for seg in &plan.segments {
        for page in 0..seg.pages {
            let va = seg.vaddr + page * abi::PAGE_SIZE;
            let frame = frame_alloc(env, None)?;
            // Copy the part of the file that falls into this page.
            let file_start = seg.copy_to;
            let file_end = seg.copy_to + seg.file_len as u64;
            let lo = va.max(file_start);
            let hi = (va + abi::PAGE_SIZE).min(file_end);
            if lo < hi {
                let src = seg.file_offset + (lo - file_start) as usize;
                let bytes = &image[src..src + (hi - lo) as usize];
                // SAFETY: the frame was just allocated to this environment and
                // is not mapped anywhere yet; the range stays inside it.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        memory::frame_virt(frame).add((lo - va) as usize),
                        bytes.len(),
                    )
                };
            }
            map_locked(env, &mut aspace, frame, va, seg.rights)?;
        }
    }
    for page in 0..abi::STACK_SIZE / abi::PAGE_SIZE {
        let frame = frame_alloc(env, None)?;
        map_locked(
            env,
            &mut aspace,
            frame,
            abi::STACK_TOP - abi::STACK_SIZE + page * abi::PAGE_SIZE,
            Rights::RW,
        )?;
    }
    // The info page: kernel-owned, read-only for the environment.
    let info_frame = memory::alloc_frame().map_err(frame_error)?;
    env.kernel_frames.lock().push(info_frame);
    env.info_frame.store(info_frame, Ordering::Release);
    let mut info = abi::InfoPage {
        abi_version: abi::ABI_VERSION,
        env_id: env.id,
        tsc_hz: super::time::tsc_hz(),
        cores: online_cpus() as u32,
        frame_quota: env.quota as u32,
        user_cores: user_cores(),
        notifications: 0,
        start_arg: env.start_arg,
        name: [0; abi::NAME_MAX as usize],
        overruns: 0,
        event_tail: 0,
        slots_per_core: super::slots::config().slots,
        slot_us: super::slots::config().slot_us,
        grace_us: super::slots::config().grace_us,
        slots_reserved: super::slots::config().slots_reserved,
    };
    let n = env.name.len().min(info.name.len());
    info.name[..n].copy_from_slice(&env.name.as_bytes()[..n]);
    // SAFETY: the frame is ours, unmapped elsewhere, and large enough.
    unsafe { (memory::frame_virt(info_frame) as *mut abi::InfoPage).write(info) };
    aspace
        .map(abi::INFO_VA, info_frame, leaf_flags(Rights::READ), &mut || alloc_table_frame(env))?;
    // The event queue: kernel-owned, read-only for the environment; a fresh
    // frame is zeroed, which is an empty queue.
    let event_frame = memory::alloc_frame().map_err(frame_error)?;
    env.kernel_frames.lock().push(event_frame);
    env.event_frame.store(event_frame, Ordering::Release);
    aspace.map(abi::EVENTS_VA, event_frame, leaf_flags(Rights::READ), &mut || {
        alloc_table_frame(env)
    })?;
    // Every core's time vector: the same kernel frames in every environment.
    for (page, frame) in super::slots::schedule_frames().enumerate() {
        let va = abi::SCHEDULE_VA + page as u64 * abi::PAGE_SIZE;
        aspace.map(va, frame, leaf_flags(Rights::READ), &mut || alloc_table_frame(env))?;
    }
    Ok(())
}

/// Maps core `core`'s read-only vCPU page into `env` (once per core).
pub fn ensure_vcpu_page(env: &Env, core: usize) -> Result<(), Error> {
    if env.vcpu_pages.load(Ordering::Acquire) & (1 << core) != 0 {
        return Ok(());
    }
    let mut aspace = lock_serving_mailbox(&env.aspace);
    if env.vcpu_pages.load(Ordering::Acquire) & (1 << core) != 0 {
        return Ok(());
    }
    let frame = memory::alloc_frame().map_err(frame_error)?;
    env.kernel_frames.lock().push(frame);
    let page = abi::VcpuPage { core: core as u64, env_id: u64::from(env.id), ..Default::default() };
    // SAFETY: a fresh kernel frame, mapped nowhere yet.
    unsafe { (memory::frame_virt(frame) as *mut abi::VcpuPage).write(page) };
    aspace.map(abi::vcpu_page_va(core), frame, leaf_flags(Rights::READ), &mut || {
        alloc_table_frame(env)
    })?;
    env.vcpu_page_frames[core].store(frame, Ordering::Release);
    env.vcpu_pages.fetch_or(1 << core, Ordering::AcqRel);
    Ok(())
}

// --- ending -----------------------------------------------------------------

/// Ends `env` with `outcome` (the first call wins) and tells every core that
/// holds one of its vCPUs to drop it. Prints the one-line report.
pub fn terminate(env: &Env, outcome: Outcome) {
    let mut first = false;
    env.outcome.call_once(|| {
        first = true;
        outcome
    });
    if !first {
        return;
    }
    env.dying.store(true, Ordering::Release);
    match env.outcome.get() {
        Some(Outcome::Exited(code)) => {
            kprintln!("exo: env {} ({}) exited with code {}", env.id, env.name, code)
        }
        Some(Outcome::Killed(why)) => {
            kprintln!("exo: env {} ({}) killed: {}", env.id, env.name, why)
        }
        None => {}
    }
    let cores = env.vcpu_cores.load(Ordering::Acquire);
    for core in (0..MAX_CPUS.min(online_cpus())).filter(|&c| cores & (1 << c) != 0) {
        mailbox::kick(core);
    }
}

/// Called by a core that dropped one of `env`'s vCPUs (after it stopped
/// using the address space). The last one queues the environment's reclaim
/// on this core (see [`Reclaim`]).
pub fn vcpu_dropped(env: &Arc<Env>) {
    if env.live_vcpus.fetch_sub(1, Ordering::AcqRel) == 1 {
        if !env.is_dying() {
            terminate(env, Outcome::Exited(0));
        }
        let reclaim = Reclaim::new(Arc::clone(env));
        without_interrupts(|| RECLAIMS.lock().push_back(reclaim));
    }
}

/// Dead environments whose reclaim is under way, stepped by
/// [`reclaim_step`]. A leaf lock (taken with interrupts off).
static RECLAIMS: Mutex<VecDeque<Reclaim>> = Mutex::new(VecDeque::new());

/// Runs one bounded step of the oldest reclaim under way, if any (at every
/// scheduling decision and in the idle loop: a dead environment with tens of
/// thousands of mappings never holds a core for long). Returns whether a
/// step ran.
pub fn reclaim_step() -> bool {
    let Some(mut reclaim) = without_interrupts(|| RECLAIMS.lock().pop_front()) else {
        return false;
    };
    if reclaim.step() {
        without_interrupts(|| RECLAIMS.lock().push_back(reclaim));
    }
    true
}

/// A dead environment returned to the pool in bounded steps: every mapping
/// others have of its frames is removed, every frame goes back, and only
/// then is the outcome published, so a test that sees the outcome can count
/// free frames. Holds the environment's last reference.
pub struct Reclaim {
    env: Arc<Env>,
    stage: ReclaimStage,
}

enum ReclaimStage {
    /// Take it out of the registry and the time vectors.
    Start,
    /// Forget its grants and mappings of others' frames, shard by shard.
    ForgetGrantee(usize),
    /// Forget its own mappings (its page tables go), from this address on.
    OwnMappings(u64),
    /// Release its data frames (others' mappings of them first).
    OwnedFrames,
    /// Free its page tables and kernel frames, publish the outcome.
    Finish,
}

impl Reclaim {
    fn new(env: Arc<Env>) -> Reclaim {
        Reclaim { env, stage: ReclaimStage::Start }
    }

    /// Runs the whole reclaim at once (a small environment that failed to
    /// start).
    fn run(mut self) {
        while self.step() {}
    }

    /// One bounded step; whether more remain. Takes at most one
    /// address-space lock at a time (its own, or one of the others' it
    /// must unmap from), never two.
    fn step(&mut self) -> bool {
        let env = &self.env;
        match self.stage {
            ReclaimStage::Start => {
                without_interrupts(|| ENVS.write().remove(&env.id));
                super::slots::release_env(env.id);
                self.stage = ReclaimStage::ForgetGrantee(0);
            }
            ReclaimStage::ForgetGrantee(first) => {
                let last = (first + 8).min(SHARDS);
                for table in &FRAME_TABLE[first..last] {
                    table.lock().forget_grantee(env.id);
                }
                self.stage = if last == SHARDS {
                    ReclaimStage::OwnMappings(abi::USER_MIN)
                } else {
                    ReclaimStage::ForgetGrantee(last)
                };
            }
            ReclaimStage::OwnMappings(from) => {
                let mut leaves = Vec::new();
                let next =
                    lock_serving_mailbox(&env.aspace).leaves_from(from, RANGE_CHUNK, &mut leaves);
                for (va, frame) in leaves {
                    if !abi::in_info_region(va) {
                        shard(frame).remove_mapping(frame, env.id, va);
                    }
                }
                self.stage = match next {
                    Some(va) => ReclaimStage::OwnMappings(va),
                    None => ReclaimStage::OwnedFrames,
                };
            }
            ReclaimStage::OwnedFrames => {
                let Some(frame) = env.owned.lock().pop_first() else {
                    self.stage = ReclaimStage::Finish;
                    return true;
                };
                // Bound first: the shard lock must not be held across the
                // shootdown below.
                let step = shard(frame).release_step(frame, env.id, UNMAP_CHUNK);
                match step {
                    Some(ReleaseStep::Released) => {
                        memory::free_frame(frame).expect("owned frame was allocated");
                    }
                    Some(ReleaseStep::Unmap(foreign)) => {
                        unmap_foreign(frame, &foreign);
                        env.owned.lock().insert(frame);
                    }
                    None => log::error!("env {}: owned frame {frame} not recorded", env.id),
                }
            }
            ReclaimStage::Finish => {
                let aspace = lock_serving_mailbox(&env.aspace);
                for frame in aspace.table_frames().into_iter().chain([aspace.root()]) {
                    shard(frame).free_page_table(frame);
                    memory::free_frame(frame).expect("page-table frame was allocated");
                }
                drop(aspace);
                for frame in core::mem::take(&mut *env.kernel_frames.lock()) {
                    memory::free_frame(frame).expect("kernel frame was allocated");
                }
                env.charged.store(0, Ordering::Release);
                let outcome = env.outcome.call_once(|| Outcome::Exited(0));
                if *outcome != Outcome::Exited(0) {
                    note_run_failure();
                }
                env.finished.store(true, Ordering::Release);
                check_all_done();
                return false;
            }
        }
        true
    }
}

// --- run mode ---------------------------------------------------------------

static POWER_OFF_WHEN_DONE: Once<&'static str> = Once::new();
static RUN_FAILED: AtomicBool = AtomicBool::new(false);

/// `run` and `bench` modes: once no environment is left, print `last_line`
/// and power off (failure if anything failed).
pub fn power_off_when_all_done(last_line: &'static str) {
    POWER_OFF_WHEN_DONE.call_once(|| last_line);
}

/// Something failed, so the run's status is failure.
pub fn note_run_failure() {
    RUN_FAILED.store(true, Ordering::Release);
}

/// Powers off if asked to once every environment has ended.
pub fn check_all_done() {
    if let Some(line) = POWER_OFF_WHEN_DONE.get()
        && without_interrupts(|| ENVS.read().is_empty())
    {
        kprintln!("{line}");
        super::cpu::exit_qemu(!RUN_FAILED.load(Ordering::Acquire));
    }
}

// --- rings and predicates ---------------------------------------------------

/// Pins the frames behind `pages` pages at `va` of `env` (each mapped
/// user-writable and owned by `env`), in page order, for a ring. On failure
/// nothing stays pinned.
pub fn pin_user_pages(env: &Env, va: u64, pages: u64) -> Result<Vec<FrameNumber>, Error> {
    use x86_64::structures::paging::PageTableFlags as F;
    let aspace = lock_serving_mailbox(&env.aspace);
    let mut frames = Vec::new();
    for page in 0..pages {
        let at = va + page * abi::PAGE_SIZE;
        let result = match aspace.translate(at) {
            Some((frame, flags)) if flags.contains(F::USER_ACCESSIBLE | F::WRITABLE) => {
                shard(frame).pin(frame, env.id).map(|()| frame)
            }
            _ => Err(Error::BadAddress),
        };
        match result {
            Ok(frame) => frames.push(frame),
            Err(e) => {
                unpin_frames(env.id, &frames);
                return Err(e);
            }
        }
    }
    Ok(frames)
}

/// Undoes [`pin_user_pages`].
pub fn unpin_frames(env: EnvId, frames: &[FrameNumber]) {
    for &frame in frames {
        shard(frame).unpin(frame, env);
    }
}

/// The info-page word at byte `offset` (8-aligned, inside `InfoPage`).
pub fn info_word(env: &Env, offset: u64) -> &AtomicU64 {
    assert!(offset.is_multiple_of(8) && offset + 8 <= core::mem::size_of::<abi::InfoPage>() as u64);
    let frame = env.info_frame.load(Ordering::Acquire);
    // SAFETY: the info frame is kernel-owned for the environment's lifetime
    // (freed only by reclaim, after its last reference is gone: `env` is
    // borrowed here), mapped in the direct map; the offset is 8-aligned
    // inside the page (asserted). The environment only has it read-only.
    unsafe { &*(memory::frame_virt(frame).add(offset as usize) as *const AtomicU64) }
}

/// The word at byte `offset` of `env`'s vCPU page for `core`, if that page
/// exists (the vCPU statistics the kernel keeps there).
pub fn vcpu_word(env: &Env, core: usize, offset: u64) -> Option<&AtomicU64> {
    assert!(offset.is_multiple_of(8) && offset + 8 <= core::mem::size_of::<abi::VcpuPage>() as u64);
    let frame = env.vcpu_page_frames.get(core)?.load(Ordering::Acquire);
    if frame == 0 {
        return None;
    }
    // SAFETY: as for `info_word`: a kernel-owned frame freed only by
    // reclaim, after `env`'s last use; the offset is 8-aligned in the page.
    Some(unsafe { &*(memory::frame_virt(frame).add(offset as usize) as *const AtomicU64) })
}

/// Appends an event to `env`'s queue (see `abi::event`) and wakes its
/// sleeping vCPUs. Never waits for the reader: the oldest entry is
/// overwritten when the queue is full.
pub fn post_event(env: &Env, kind: u32, source: EnvId, data: [u64; 2]) {
    let frame = env.event_frame.load(Ordering::Acquire);
    if frame == 0 {
        return;
    }
    let base = memory::frame_virt(frame);
    let word = |offset: usize| {
        // SAFETY: the event frame is kernel-owned for the environment's
        // lifetime (freed by reclaim after its last use); every offset used
        // below is 8-aligned inside the page (the queue fits: checked in abi).
        unsafe { &*(base.add(offset) as *const AtomicU64) }
    };
    {
        let _writer = without_interrupts(|| {
            loop {
                if let Some(guard) = env.event_lock.try_lock() {
                    break guard;
                }
                core::hint::spin_loop();
            }
        });
        let index = word(0).load(Ordering::Relaxed);
        let entry = core::mem::offset_of!(abi::event::EventQueue, entries)
            + (index % abi::event::CAPACITY) as usize * core::mem::size_of::<abi::event::Event>();
        word(entry).store(0, Ordering::Release);
        word(entry + 8).store(u64::from(kind) | u64::from(source) << 32, Ordering::Release);
        word(entry + 16).store(data[0], Ordering::Release);
        word(entry + 24).store(data[1], Ordering::Release);
        word(entry).store(index + 1, Ordering::Release);
        word(0).store(index + 1, Ordering::Release);
        info_word(env, core::mem::offset_of!(abi::InfoPage, event_tail) as u64)
            .store(index + 1, Ordering::Release);
    }
    wake(env);
}

/// Makes every core that holds one of `env`'s vCPUs look at its sleepers
/// again (their predicates may now hold).
///
/// Coalesced: `env.wake_owed` has a bit per core, set here and cleared by
/// that core just before it evaluates `env`'s sleeping vCPU. While the bit is
/// set the core already owes `env` a look, so another wake-up costs one
/// atomic and nothing cross-core; a core is interrupted only when its bit
/// goes from clear to set *and* it has no reschedule pending already
/// ([`mailbox::kick`]). However fast an environment notifies, each core
/// does at most one reschedule per look it takes on its own.
pub fn wake(env: &Env) {
    let cores = env.vcpu_cores.load(Ordering::Acquire);
    let mut mask = cores;
    while mask != 0 {
        let core = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        if env.wake_owed.fetch_or(1 << core, Ordering::AcqRel) & (1 << core) == 0 {
            mailbox::kick(core);
        }
    }
}
