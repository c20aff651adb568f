//! The memory secure bindings: every frame allocation, free, grant,
//! revoke, map, unmap and protect, and the pinning of ring frames, checked
//! against the frame ownership table ([`kernel::ownership`]) under the
//! frame's shard lock. See the parent module for the lock order.
//!
//! May not touch: the registry (only [`super::lookup`]), the
//! scheduler, user memory contents.

use super::events::post_event;
use super::{Env, shard};
use super::{MAPPINGS_PER_FRAME, lock_serving_mailbox, lookup};
use crate::machine::memory;
use crate::machine::paging::{AddressSpace, SharedLeafTable, leaf_flags, rights_of};
use crate::machine::tlb::{self, Flush};
use abi::{Error, Rights};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::frames::{FrameError, FrameNumber};
use kernel::ownership::{EnvId, FrameKind, Freed, Mapping, Removed, UnmapStep};

#[inline]
pub(super) fn frame_error(e: FrameError) -> Error {
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
        Some(f) if f.raw() >= memory::FRAME_CAPACITY => Err(FrameError::OutOfRange(f)),
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
pub(super) fn alloc_table_frame(env: &Env) -> Result<FrameNumber, Error> {
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
    if frame.raw() >= memory::FRAME_CAPACITY {
        return Err(Error::BadFrame);
    }
    let freed = shard(frame).free(frame, env.id)?;
    env.owned.lock().remove(frame);
    // Shared: it lives on for its sharers, still charged to `env`.
    if freed == Freed::Now {
        memory::free_frame(frame).expect("an owned frame is allocated");
        env.uncharge();
        // A frame given back pays a repossession debt; a shared one is still
        // charged to `env` and pays nothing.
        super::repossess::on_free(env);
    }
    Ok(())
}

/// Forgets `env`'s mapping of `frame` at `va` (its page-table entry is
/// gone); frees the frame if that was the last hold on one its owner let
/// go of. Takes the frame's shard lock, then (without it) the registry's.
pub(super) fn forget_mapping(frame: FrameNumber, env: EnvId, va: u64) {
    let removed = shard(frame).remove_mapping(frame, env, va);
    released(frame, removed);
}

/// Frees a frame [`Removed::Released`] by its last holder and uncharges
/// its owner (if it still lives; a dead owner's account is closed).
pub(super) fn released(frame: FrameNumber, removed: Removed) {
    if let Removed::Released { owner } = removed {
        memory::free_frame(frame).expect("a recorded frame is allocated");
        if let Some(owner) = lookup(owner) {
            owner.uncharge();
        }
    }
}

/// Who holds `frame`, as [`abi::FrameStatus`].
pub fn frame_status(frame: FrameNumber) -> Result<u64, Error> {
    if frame.raw() >= memory::FRAME_CAPACITY {
        return Err(Error::BadFrame);
    }
    if let Some(r) = shard(frame).get(frame) {
        let kind = match r.kind {
            FrameKind::Data if r.released => abi::FrameHolder::Released,
            FrameKind::Data => abi::FrameHolder::Owned,
            FrameKind::PageTable => abi::FrameHolder::PageTable,
        };
        let holders = (r.holders() as u64).min(0xff_ffff);
        return Ok(kind as u64 | holders << 8 | u64::from(r.owner) << 32);
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
/// the call for the next step (`Next::Restart` in `machine/syscall.rs`), the ring leaves the
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
    let target = lookup(grantee).filter(|g| !g.is_dying()).ok_or(Error::NoSuchEnv)?;
    if frame.raw() >= memory::FRAME_CAPACITY {
        return Err(Error::BadFrame);
    }
    // Before the grant exists: a reclaim that finds the flag clear has no
    // grant to forget (see `Env::granted_to`).
    target.granted_to.store(true, Ordering::SeqCst);
    drop(target);
    shard(frame).grant(frame, owner.id, grantee, rights)?;
    Ok(withdraw_step(frame, grantee))
}

/// `owner` withdraws `grantee`'s grant of `frame`; the grantee's mappings
/// are gone (on every core) when this returns `Done`. Many mappings are
/// removed in steps: [`Progress::More`] means "call again".
pub fn frame_revoke(owner: &Env, frame: FrameNumber, grantee: EnvId) -> Result<Progress, Error> {
    if frame.raw() >= memory::FRAME_CAPACITY {
        return Err(Error::BadFrame);
    }
    shard(frame).revoke(frame, owner.id, grantee)?;
    let progress = withdraw_step(frame, grantee);
    if progress == Progress::Done(0)
        && let Some(grantee) = lookup(grantee)
    {
        post_event(&grantee, abi::event::GRANT_REVOKED, owner.id, [frame.raw(), 0]);
    }
    Ok(progress)
}

/// One step of a withdrawal of `grantee`'s mappings of `frame`: at most
/// [`UNMAP_CHUNK`] of them, one lock of its address space, one shootdown.
fn withdraw_step(frame: FrameNumber, grantee: EnvId) -> Progress {
    let step = shard(frame).unmap_step(frame, grantee, UNMAP_CHUNK);
    let UnmapStep::Unmap(batch) = step else { return Progress::Done(0) };
    let full = batch.len() == UNMAP_CHUNK;
    unmap_foreign(frame, &batch, LockPolicy::Wait);
    // A short batch was the last one: finish in this call.
    if !full && shard(frame).unmap_step(frame, grantee, UNMAP_CHUNK) == UnmapStep::Done {
        return Progress::Done(0);
    }
    Progress::More
}

/// How [`unmap_foreign`] takes another environment's address-space lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LockPolicy {
    /// Wait for it, serving this core's mailbox meanwhile (system calls and
    /// the exit reclaim: the caller's own time).
    Wait,
    /// Skip an environment whose lock is busy or which is dying: its
    /// mappings stay recorded and come back in the caller's next step (a
    /// scheduling decision, which never waits for an environment's lock; a
    /// dying environment's vCPUs may still run, so its mappings, and the
    /// frame, stay until its own reclaim forgets them).
    Skip,
}

/// Removes other environments' mappings of `frame` (a withdrawal's batch,
/// a repossession's, or what a dead owner leaves), each environment's under
/// one lock of its address space with one shootdown round, then forgets
/// them. Takes only those address-space locks, one at a time: the caller
/// holds none.
pub(super) fn unmap_foreign(frame: FrameNumber, mappings: &[Mapping], policy: LockPolicy) {
    // `mappings` come ordered by environment (the reverse map's order).
    for group in mappings.chunk_by(|a, b| a.env == b.env) {
        if let Some(env) = lookup(group[0].env) {
            let mut aspace = match policy {
                LockPolicy::Wait => lock_serving_mailbox(&env.aspace),
                LockPolicy::Skip if env.is_dying() => continue,
                LockPolicy::Skip => match env.aspace.try_lock() {
                    Some(aspace) => aspace,
                    None => continue,
                },
            };
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
        let mut last = Removed::Kept;
        for m in group {
            if let r @ Removed::Released { .. } = table.remove_mapping(frame, m.env, m.va) {
                last = r;
            }
        }
        drop(table);
        released(frame, last);
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
    if frame.raw() >= memory::FRAME_CAPACITY {
        return Err(Error::BadFrame);
    }
    let mut aspace = lock_serving_mailbox(&env.aspace);
    map_locked(env, &mut aspace, frame, va, rights)
}

pub(super) fn map_locked(
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
    if env.mappings.load(Ordering::Relaxed) >= env.quota() * MAPPINGS_PER_FRAME {
        return Err(Error::QuotaExceeded);
    }
    // Intermediate tables first (they may take other shards' locks), then the
    // leaf under the frame's shard lock, so the check and the mapping are one
    // step that a concurrent free or revoke cannot split.
    aspace.ensure_tables(va, &mut || alloc_table_frame(env))?;
    if is_initrd_frame(frame) {
        map_initrd_page(aspace, frame, va, rights)?;
        env.mappings.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    let mut table = shard(frame);
    table.check_map(frame, env.id, rights)?;
    aspace.map(va, frame, leaf_flags(rights), &mut || Err(Error::NoMemory))?;
    table.add_mapping(frame, env.id, va);
    env.mappings.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Whether `frame` holds part of the initrd: the kernel's, immutable, never
/// in the frame table.
pub(super) fn is_initrd_frame(frame: FrameNumber) -> bool {
    // Read on every `Map`, every shared page and every reclaimed leaf: the
    // range is kept from boot ([`build_initrd_tables`]), not recomputed.
    let (first, end) = (INITRD_FIRST.load(Ordering::Relaxed), INITRD_END.load(Ordering::Relaxed));
    (first..end).contains(&frame.raw())
}

/// The initrd's frames, `INITRD_FIRST..INITRD_END` (empty without one), set
/// once at boot.
static INITRD_FIRST: AtomicU64 = AtomicU64::new(0);
static INITRD_END: AtomicU64 = AtomicU64::new(0);

/// Maps initrd page `frame` at `va` (tables made) read-only: every
/// environment may read the initrd (`InitrdMap`), so a page of it mapped
/// anywhere without `WRITE` gives nothing new, and needs no record (the
/// frame is never freed, revoked or repossessed). `WRITE` is `NotOwner`.
fn map_initrd_page(
    aspace: &mut AddressSpace,
    frame: FrameNumber,
    va: u64,
    rights: Rights,
) -> Result<(), Error> {
    if rights.contains(Rights::WRITE) {
        return Err(Error::NotOwner);
    }
    aspace.map(va, frame, leaf_flags(rights), &mut || Err(Error::NoMemory))
}

/// `AllocMap`: allocates `pages` zeroed frames for `env` and maps them at
/// `va ..` with `rights`, all or nothing (see `abi::Syscall::AllocMap`);
/// the frame numbers go to `out` (if not 0) before anything is mapped.
/// Returns the frame mapped at `va`.
///
/// Steps: (1) charge and allocate every frame — nothing is visible yet, so
/// a failure frees them; (2) write `out` (takes the address-space lock by
/// itself); (3) under one lock of the address space: every page free, the
/// mapping quota, the intermediate tables, then each leaf checked against
/// the ownership table (another vCPU of `env` may have freed one of the
/// new frames meanwhile) and mapped. A failure in (3) undoes the leaves it
/// mapped (with a shootdown: other vCPUs may already have used them) and
/// frees the frames. Bounded: at most `ALLOC_MAP_MAX` pages.
pub fn alloc_map(
    env: &Env,
    va: u64,
    pages: u64,
    rights: Rights,
    out: u64,
) -> Result<FrameNumber, Error> {
    // The decoder's checks, again: this must hold whoever calls.
    kernel::syscall::check_alloc_map(va, pages, out)?;
    check_rights(rights)?;
    if pages == 1 {
        // The first-touch path: no array to clear.
        let mut one = [FrameNumber(0)];
        return alloc_map_frames(env, va, rights, out, &mut one);
    }
    let mut frames = [FrameNumber(0); abi::ALLOC_MAP_MAX as usize];
    alloc_map_frames(env, va, rights, out, &mut frames[..pages as usize])
}

/// [`alloc_map`] once the arguments are checked, with room for the frames.
fn alloc_map_frames(
    env: &Env,
    va: u64,
    rights: Rights,
    out: u64,
    frames: &mut [FrameNumber],
) -> Result<FrameNumber, Error> {
    let n = frames.len();
    let pages = n as u64;
    for i in 0..n {
        match frame_alloc(env, None) {
            Ok(f) => frames[i] = f,
            Err(e) => {
                free_fresh(env, &frames[..i]);
                return Err(e);
            }
        }
    }
    let frames = &frames[..];
    if out != 0 {
        let mut bytes = [0u8; abi::ALLOC_MAP_MAX as usize * 8];
        for (chunk, f) in bytes.as_chunks_mut::<8>().0.iter_mut().zip(frames) {
            *chunk = f.raw().to_le_bytes();
        }
        if let Err(e) = super::copy_to_user(env, out, &bytes[..n * 8]) {
            free_fresh(env, frames);
            return Err(e);
        }
    }
    let page = |i: usize| va + i as u64 * abi::PAGE_SIZE;
    let mut aspace = lock_serving_mailbox(&env.aspace);
    let mut mapped = 0;
    let result = (|| {
        if (0..n).any(|i| aspace.translate(page(i)).is_some()) {
            return Err(Error::AlreadyMapped);
        }
        if env.mappings.load(Ordering::Relaxed) + pages > env.quota() * MAPPINGS_PER_FRAME {
            return Err(Error::QuotaExceeded);
        }
        for i in 0..n {
            aspace.ensure_tables(page(i), &mut || alloc_table_frame(env))?;
        }
        for (i, &frame) in frames.iter().enumerate() {
            let mut table = shard(frame);
            table.check_map(frame, env.id, rights)?;
            aspace.map(page(i), frame, leaf_flags(rights), &mut || Err(Error::NoMemory))?;
            table.add_mapping(frame, env.id, page(i));
            env.mappings.fetch_add(1, Ordering::Relaxed);
            mapped += 1;
        }
        Ok(())
    })();
    if let Err(e) = result {
        if mapped > 0 {
            for (i, &frame) in frames[..mapped].iter().enumerate() {
                if aspace.unmap(page(i)).is_ok() {
                    // Fresh frames of `env`'s own, shared with nobody: the
                    // record stays (the frames are freed below).
                    let removed = shard(frame).remove_mapping(frame, env.id, page(i));
                    debug_assert!(matches!(removed, kernel::ownership::Removed::Kept));
                    env.mappings.fetch_sub(1, Ordering::Relaxed);
                }
            }
            tlb::shootdown(&env.tlb_space(), Flush { start: va, pages: mapped as u64 });
        }
        drop(aspace);
        free_fresh(env, frames);
        return Err(e);
    }
    Ok(frames[0])
}

/// `MapBatch`: maps the `count` entries at user address `ptr` (see
/// `abi::Syscall::MapBatch`), all or nothing; returns `count`.
///
/// Steps: (1) copy the entries in (a bounded stack buffer) and make
/// `Map`'s argument checks on each, and the no-page-twice check (nothing
/// locked, nothing changed); (2) under one lock of the address space:
/// every page free, the mapping quota for all, the intermediate tables;
/// then each leaf as `map_locked` does — the frame's shard lock, its
/// ownership check, the entry, the reverse mapping — so a `FrameFree` or
/// `FrameRevoke` on another core is ordered before the entry's check
/// (refused) or after its mapping (which it then removes like any other).
/// A failure undoes the leaves mapped so far with one shootdown round
/// (another vCPU may have used them meanwhile) before the lock goes; a
/// frame released meanwhile by its owner is freed as `unmap` would.
/// Tables made for pages of a failed batch stay (charged, as `Map`'s do).
pub fn map_batch(env: &Env, ptr: u64, count: u32) -> Result<u64, Error> {
    const MAX: usize = abi::MAP_BATCH_MAX as usize;
    let n = count as usize;
    if n == 0 || n > MAX {
        return Err(Error::InvalidArgument);
    }
    let mut bytes = [0u8; MAX * abi::MAP_ENTRY_SIZE as usize];
    let bytes = &mut bytes[..n * abi::MAP_ENTRY_SIZE as usize];
    super::copy_from_user_into(env, ptr, bytes)?;
    let mut entries = [(FrameNumber(0), 0u64, Rights(0)); MAX];
    let entries = &mut entries[..n];
    for (e, chunk) in entries.iter_mut().zip(bytes.as_chunks::<24>().0) {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&chunk[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let (frame, va, rights) = (FrameNumber(word(0)), word(1), Rights(word(2)));
        check_va(va)?;
        check_rights(rights)?;
        if frame.raw() >= memory::FRAME_CAPACITY {
            return Err(Error::BadFrame);
        }
        *e = (frame, va, rights);
    }
    // No page twice: sorted by page, neighbours differ (at most 64 entries,
    // sorted on a copy so the error order stays the caller's).
    let mut pages = [0u64; MAX];
    let pages = &mut pages[..n];
    for (p, e) in pages.iter_mut().zip(entries.iter()) {
        *p = e.1;
    }
    pages.sort_unstable();
    if pages.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::InvalidArgument);
    }
    let mut aspace = lock_serving_mailbox(&env.aspace);
    let mut mapped = 0;
    let result = (|| {
        if entries.iter().any(|e| aspace.translate(e.1).is_some()) {
            return Err(Error::AlreadyMapped);
        }
        if env.mappings.load(Ordering::Relaxed) + n as u64 > env.quota() * MAPPINGS_PER_FRAME {
            return Err(Error::QuotaExceeded);
        }
        for e in entries.iter() {
            aspace.ensure_tables(e.1, &mut || alloc_table_frame(env))?;
        }
        for &(frame, va, rights) in entries.iter() {
            if is_initrd_frame(frame) {
                map_initrd_page(&mut aspace, frame, va, rights)?;
                env.mappings.fetch_add(1, Ordering::Relaxed);
                mapped += 1;
                continue;
            }
            let mut table = shard(frame);
            table.check_map(frame, env.id, rights)?;
            aspace.map(va, frame, leaf_flags(rights), &mut || Err(Error::NoMemory))?;
            table.add_mapping(frame, env.id, va);
            env.mappings.fetch_add(1, Ordering::Relaxed);
            mapped += 1;
        }
        Ok(())
    })();
    let Err(e) = result else { return Ok(u64::from(count)) };
    // Undo: entries first, one shootdown round, then the reverse mappings
    // (the order `unmap` keeps), frames released meanwhile freed after the
    // lock.
    let mut undone = [(FrameNumber(0), 0u64); MAX];
    let mut k = 0;
    for &(_, va, _) in &entries[..mapped] {
        if let Ok(f) = aspace.unmap(va) {
            undone[k] = (f, va);
            k += 1;
        }
    }
    if k > 0 {
        let flush = if k == 1 { Flush::page(undone[0].1) } else { Flush::everything() };
        tlb::shootdown(&env.tlb_space(), flush);
    }
    let mut outcomes = [None; MAX];
    for (o, &(frame, va)) in outcomes.iter_mut().zip(&undone[..k]) {
        *o = Some((frame, shard(frame).remove_mapping(frame, env.id, va)));
        env.mappings.fetch_sub(1, Ordering::Relaxed);
    }
    drop(aspace);
    for (frame, removed) in outcomes[..k].iter().flatten() {
        released(*frame, *removed);
    }
    Err(e)
}

/// Frees frames [`alloc_map`] allocated and did not map. One that another
/// vCPU of `env` freed (or mapped) meanwhile is left as it is.
fn free_fresh(env: &Env, frames: &[FrameNumber]) {
    for &frame in frames {
        let _ = frame_free(env, frame);
    }
}

/// Removes the mapping at `va`; other cores have forgotten it on return.
pub fn unmap(env: &Env, va: u64) -> Result<(), Error> {
    check_va(va)?;
    let mut aspace = lock_serving_mailbox(&env.aspace);
    let frame = aspace.unmap(va)?;
    tlb::shootdown(&env.tlb_space(), Flush::page(va));
    // As in `unmap_range`: the record goes before the lock does.
    let outcome = shard(frame).remove_mapping(frame, env.id, va);
    drop(aspace);
    released(frame, outcome);
    env.mappings.fetch_sub(1, Ordering::Relaxed);
    Ok(())
}

/// Page-table entries one step of [`unmap_range`] visits at most (present
/// pages, and absent tables skipped whole).
pub const RANGE_CHUNK: usize = 256;

crate::machine::percpu::cpu_local! {
    /// Each core's spare [`LeafBuf`] storage (taken out while in use).
    static SPARE_LEAVES: Option<Vec<(u64, FrameNumber)>> = None;
}

/// Gives this core its spare [`LeafBuf`] storage at boot: taken later, its
/// heap block would show as frames an environment's end did not give back
/// (the frame-accounting tests compare free frames around a run).
pub fn init_this_cpu() {
    SPARE_LEAVES.with(|spare| {
        if spare.is_none() {
            *spare = Some(Vec::with_capacity(RANGE_CHUNK));
        }
    });
}

/// A buffer for one bounded walk's `(va, frame)` leaves, [`RANGE_CHUNK`]
/// of them at most (a walk's budget: no regrowth). The storage is the
/// core's spare one when it is there, so a step of `ShareRange`,
/// `UnmapRange` or a reclaim does not go through the kernel heap (a 4 KiB
/// block, its free-list search) each time; a nested user (none today) gets
/// a fresh one. Dropped, the storage goes back as the spare.
pub(super) struct LeafBuf(Vec<(u64, FrameNumber)>);

impl LeafBuf {
    pub(super) fn new() -> LeafBuf {
        let mut v =
            SPARE_LEAVES.with(Option::take).unwrap_or_else(|| Vec::with_capacity(RANGE_CHUNK));
        v.clear();
        LeafBuf(v)
    }
}

impl core::ops::Deref for LeafBuf {
    type Target = Vec<(u64, FrameNumber)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl core::ops::DerefMut for LeafBuf {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for LeafBuf {
    fn drop(&mut self) {
        let v = core::mem::take(&mut self.0);
        if v.capacity() == RANGE_CHUNK {
            // A spare there already (a nested buffer's): this one goes
            // back to the heap, outside the per-core access.
            let extra = SPARE_LEAVES.with(|spare| spare.replace(v));
            drop(extra);
        }
    }
}

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
    let mut removed = LeafBuf::new();
    let (stop, shared) = aspace.unmap_some(va, end, RANGE_CHUNK, &mut removed);
    if shared.refused && stop == va {
        // Part of a shared span (the initrd's): it goes whole or not at all.
        return Err(Error::Reserved);
    }
    if !removed.is_empty() || shared.removed_pages > 0 {
        tlb::shootdown(&env.tlb_space(), Flush { start: va, pages: (stop - va) / abi::PAGE_SIZE });
    }
    // The records go while the address-space lock is still held (after the
    // shootdown, so no stale translation outlives them): a `FrameFree` by
    // another vCPU that finds the page unmapped must not still find it
    // recorded (`Busy`). Freeing a released frame waits until the lock is
    // dropped (it takes the registry's).
    let outcomes: Vec<(FrameNumber, Removed)> = removed
        .iter()
        .map(|&(at, frame)| (frame, shard(frame).remove_mapping(frame, env.id, at)))
        .collect();
    drop(aspace);
    for (frame, outcome) in outcomes {
        released(frame, outcome);
    }
    let n = removed.len() as u64 + shared.removed_pages;
    env.mappings.fetch_sub(n, Ordering::Relaxed);
    let done = done.saturating_add(n);
    Ok(if stop >= end {
        RangeStep::Done(done)
    } else {
        RangeStep::More { va: stop, pages: (end - stop) / abi::PAGE_SIZE, done }
    })
}

/// Changes the rights of the mapping at `va`. Asking for
/// [`Rights::WRITE`] on a shared frame whose owner let go of it, when `env`
/// is its only holder, makes `env` its owner (charged for it from now on)
/// instead of refusing: the last holder takes it over without a copy.
pub fn protect(env: &Env, va: u64, rights: Rights) -> Result<(), Error> {
    check_va(va)?;
    check_rights(rights)?;
    let mut aspace = lock_serving_mailbox(&env.aspace);
    let mut adopted = None;
    let old = aspace.protect(va, |frame, _| {
        let mut table = shard(frame);
        match table.check_map(frame, env.id, rights) {
            Err(Error::PermissionDenied) if rights.contains(Rights::WRITE) => {
                env.charge()?;
                match table.adopt(frame, env.id) {
                    Ok(previous) => adopted = Some((frame, previous)),
                    Err(e) => {
                        env.uncharge();
                        return Err(e);
                    }
                }
            }
            checked => checked?,
        }
        Ok(leaf_flags(rights))
    })?;
    if let Some((frame, _)) = adopted {
        env.owned.lock().insert(frame);
    }
    if !rights.contains(rights_of(old)) {
        tlb::shootdown(&env.tlb_space(), Flush::page(va));
    }
    drop(aspace);
    if let Some((_, previous)) = adopted
        && let Some(previous) = lookup(previous)
    {
        previous.uncharge();
    }
    Ok(())
}

// --- ring frames ----------------------------------------------------------

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

// --- the initrd -------------------------------------------------------------

/// How far [`initrd_map`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitrdStep {
    /// Finished: the initrd's size in bytes.
    Done(u64),
    /// One step done: go on with `done` pages mapped so far; `undo` is 0,
    /// or the code of the error the call is undoing its mappings for.
    More {
        /// Pages mapped so far.
        done: u64,
        /// 0, or the error code being undone for.
        undo: u64,
    },
}

/// Page-table coverage of one last-level table (2 MiB).
const LEAF_TABLE_SPAN: u64 = 512 * abi::PAGE_SIZE;

/// `InitrdMap`: one bounded step of mapping the whole initrd read-only at
/// `va` in `env` (see `abi::Syscall::InitrdMap`).
///
/// The frames are the kernel's (reserved at boot, never in the free pool,
/// absent from the ownership table), so no reverse-map entry is made:
/// `Unmap`, `UnmapRange` and the end of the environment clear the entries
/// and count the mapping down, and nothing ever frees the frames. The
/// first step checks the whole range (every absent table is skipped at
/// once, so it costs about one visit per 2 MiB) and makes its page tables
/// (one per 2 MiB, charged); each step then maps at most
/// [`abi::INITRD_MAP_CHUNK`] pages under the address-space lock. A step that
/// fails after pages were mapped (the caller's other vCPU mapped in the
/// range meanwhile) turns into undo steps that unmap them again, so the
/// call maps all or nothing.
pub fn initrd_map(env: &Env, va: u64, done: u64, undo: u64) -> Result<InitrdStep, Error> {
    let Some((first, size)) = super::initrd_frames() else {
        return if va == 0 { Ok(InitrdStep::Done(0)) } else { Err(Error::Unsupported) };
    };
    if va == 0 {
        return Ok(InitrdStep::Done(size));
    }
    let pages = size.div_ceil(abi::PAGE_SIZE);
    check_va(va)?;
    let end = pages
        .checked_mul(abi::PAGE_SIZE)
        .and_then(|len| va.checked_add(len))
        .filter(|&e| e <= abi::USER_MAX)
        .ok_or(Error::InvalidArgument)?;
    if va < abi::INFO_VA + abi::INFO_REGION_SIZE && end > abi::INFO_VA {
        return Err(Error::Reserved);
    }
    if done > pages {
        return Err(Error::InvalidArgument);
    }
    let frame_of = |i: u64| FrameNumber(first.raw() + i);
    if undo != 0 {
        return initrd_undo(env, va, done, undo, frame_of);
    }
    if done == 0
        && va.is_multiple_of(LEAF_TABLE_SPAN)
        && let Some(step) = initrd_map_shared(env, va, pages, size)
    {
        return step;
    }
    let limit = env.quota() * MAPPINGS_PER_FRAME;
    let mut aspace = lock_serving_mailbox(&env.aspace);
    if done == 0 {
        if aspace.shared_in(va, end) {
            return Err(Error::AlreadyMapped);
        }
        let mut found = Vec::new();
        let mut at = va;
        while at < end {
            at = aspace.leaves_in(at, end, RANGE_CHUNK, &mut found);
            if !found.is_empty() {
                return Err(Error::AlreadyMapped);
            }
        }
        if env.mappings.load(Ordering::Relaxed).saturating_add(pages) > limit {
            return Err(Error::QuotaExceeded);
        }
        let mut table = va;
        while table < end {
            aspace.ensure_tables(table, &mut || alloc_table_frame(env))?;
            table = (table | (LEAF_TABLE_SPAN - 1)) + 1;
        }
    }
    let stop = (done + abi::INITRD_MAP_CHUNK).min(pages);
    let flags = leaf_flags(Rights::READ);
    let mut mapped = done;
    let mut failure = None;
    for i in done..stop {
        if env.mappings.load(Ordering::Relaxed) >= limit {
            failure = Some(Error::QuotaExceeded);
            break;
        }
        let at = va + i * abi::PAGE_SIZE;
        match aspace.map(at, frame_of(i), flags, &mut || alloc_table_frame(env)) {
            Ok(()) => {
                env.mappings.fetch_add(1, Ordering::Relaxed);
                mapped = i + 1;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(aspace);
    Ok(match failure {
        None if mapped == pages => InitrdStep::Done(size),
        None => InitrdStep::More { done: mapped, undo: 0 },
        Some(e) if mapped == 0 => return Err(e),
        Some(e) => InitrdStep::More { done: mapped, undo: e as u64 },
    })
}

/// The initrd's shared leaf tables (one per 2 MiB, the last one partly
/// empty), built on the first `InitrdMap` at a 2 MiB boundary; `None` if
/// there is no initrd or the kernel could not get the frames (the calls then
/// map page by page).
static INITRD_TABLES: spin::Once<Option<Vec<SharedLeafTable>>> = spin::Once::new();

/// Records the initrd's frame range and builds its shared leaf tables (at
/// boot, once the initrd is known, before any environment runs).
pub fn build_initrd_tables() {
    if let Some((first, size)) = super::initrd_frames() {
        INITRD_FIRST.store(first.raw(), Ordering::Relaxed);
        INITRD_END.store(first.raw() + size.div_ceil(abi::PAGE_SIZE), Ordering::Relaxed);
    }
    let _ = initrd_tables();
}

fn initrd_tables() -> Option<&'static [SharedLeafTable]> {
    INITRD_TABLES
        .call_once(|| {
            let (first, size) = super::initrd_frames()?;
            let pages = size.div_ceil(abi::PAGE_SIZE);
            let mut tables = Vec::new();
            for t in 0..pages.div_ceil(512) {
                let Ok(frame) = memory::alloc_frame() else {
                    for table in tables {
                        let _ = memory::free_frame(SharedLeafTable::frame(&table));
                    }
                    return None;
                };
                let count = (pages - t * 512).min(512) as usize;
                tables.push(SharedLeafTable::build(
                    frame,
                    FrameNumber(first.raw() + t * 512),
                    count,
                ));
            }
            Some(tables)
        })
        .as_deref()
}

/// `InitrdMap` at a 2 MiB boundary whose spans hold no page table yet: the
/// environment's directory entries point to the kernel's shared leaf tables
/// ([`initrd_tables`]), one store per 2 MiB instead of one per page, and no
/// leaf for its walks to visit, share or forget. The mapping takes the
/// whole last span (nothing else can be mapped in its tail) and goes only
/// whole spans at a time (`Unmap` of one page, `UnmapRange` of part of a
/// span: `Reserved`). `None`: not possible here, map page by page.
fn initrd_map_shared(
    env: &Env,
    va: u64,
    pages: u64,
    size: u64,
) -> Option<Result<InitrdStep, Error>> {
    let tables = initrd_tables()?;
    let span_end = va.checked_add(tables.len() as u64 * LEAF_TABLE_SPAN)?;
    if span_end > abi::USER_MAX
        || (va < abi::INFO_VA + abi::INFO_REGION_SIZE && span_end > abi::INFO_VA)
    {
        return None;
    }
    let spans = (0..tables.len() as u64).map(|t| va + t * LEAF_TABLE_SPAN);
    let mut aspace = lock_serving_mailbox(&env.aspace);
    if !spans.clone().all(|at| aspace.span_is_vacant(at)) {
        // A page table there already: the page-by-page path decides.
        return None;
    }
    let limit = env.quota() * MAPPINGS_PER_FRAME;
    if env.mappings.load(Ordering::Relaxed).saturating_add(pages) > limit {
        return Some(Err(Error::QuotaExceeded));
    }
    for (n, (at, table)) in spans.zip(tables).enumerate() {
        if let Err(e) = aspace.install_shared(at, table, &mut || alloc_table_frame(env)) {
            // All or nothing: the spans installed so far go again (another
            // vCPU of the caller may have walked them meanwhile: flushed).
            if n > 0 {
                let (mut from, mut none) = (va, Vec::new());
                while from < at {
                    from = aspace.unmap_some(from, at, RANGE_CHUNK, &mut none).0;
                }
                tlb::shootdown(
                    &env.tlb_space(),
                    Flush { start: va, pages: (at - va) / abi::PAGE_SIZE },
                );
            }
            return Some(Err(e));
        }
    }
    drop(aspace);
    env.mappings.fetch_add(pages, Ordering::Relaxed);
    Some(Ok(InitrdStep::Done(size)))
}

/// One undo step of a failed [`initrd_map`]: unmaps the initrd pages among
/// the last [`abi::INITRD_MAP_CHUNK`] of the `done` mapped (only entries
/// that still hold the initrd frame the call put there), then goes on, or
/// fails with the error being undone for once none is left.
fn initrd_undo(
    env: &Env,
    va: u64,
    done: u64,
    undo: u64,
    frame_of: impl Fn(u64) -> FrameNumber,
) -> Result<InitrdStep, Error> {
    let error = Error::from_code(undo).unwrap_or(Error::AlreadyMapped);
    let from = done.saturating_sub(abi::INITRD_MAP_CHUNK);
    let mut aspace = lock_serving_mailbox(&env.aspace);
    let mut removed = 0;
    for i in from..done {
        let at = va + i * abi::PAGE_SIZE;
        if aspace.translate(at).is_some_and(|(f, _)| f == frame_of(i)) && aspace.unmap(at).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        let start = va + from * abi::PAGE_SIZE;
        tlb::shootdown(&env.tlb_space(), Flush { start, pages: done - from });
    }
    drop(aspace);
    env.mappings.fetch_sub(removed, Ordering::Relaxed);
    if from == 0 { Err(error) } else { Ok(InitrdStep::More { done: from, undo }) }
}
