//! Child environments made from user space, and copy-on-write sharing.
//!
//! `EnvCreate` builds an empty [`Env`] whose quota is carved from its
//! creator's; the creator alone may then map frames into it (given, or
//! shared copy-on-write), share ranges of its own mappings into it
//! (`ShareRange`, in bounded restartable steps), set its entries, start it
//! (in `machine/syscall.rs`: that is the scheduler's), read its exit status
//! and destroy it. The handle is the child's id, checked against
//! [`Env::creator`] on every call (see `abi::child`). `FrameCopy` copies a
//! page the caller maps into a frame it owns: the copy of a copy-on-write
//! fault without a temporary mapping.
//!
//! Lock discipline: a call that maps into the child takes the child's
//! address-space lock and checks, under it, that the child is not dying:
//! its reclaim takes the same lock to walk its mappings, so whatever this
//! adds (mappings, owned frames) is either seen by that walk or refused.
//! `ShareRange` holds the creator's lock, then the child's (the creation
//! tree is acyclic, so no two cores can take them in the other order).
//!
//! May not touch: the scheduler.

use super::bindings::{LeafBuf, RANGE_CHUNK, alloc_table_frame, frame_error, unmap};
use super::events::post_event;
use super::registry::{terminate, vcpu_dropped};
use super::spawn::create_child;
use super::umem::copy_frame;
use super::{Env, MAPPINGS_PER_FRAME, Outcome, lock_serving_mailbox, lookup, shard};
use crate::machine::memory;
use crate::machine::paging::{AddressSpace, leaf_flags, rights_of};
use crate::machine::tlb::{self, Flush};
use abi::{Error, Rights};
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use kernel::frames::FrameNumber;
use kernel::ownership::{EnvId, FrameKind, ShareMode};
use x86_64::structures::paging::PageTableFlags as F;

/// The most children an environment may have alive at once (each also
/// costs it at least `abi::CHILD_QUOTA_MIN` frames of quota).
pub const CHILDREN_MAX: usize = 256;

/// `EnvCreate`: a new child of `env` with `quota` frames of its quota.
pub fn env_create(env: &Env, quota: u64) -> Result<u64, Error> {
    if quota < abi::CHILD_QUOTA_MIN {
        return Err(Error::InvalidArgument);
    }
    if env.is_dying() {
        return Err(Error::NoSuchEnv);
    }
    {
        let book = env.children.lock();
        if book.live.len() >= CHILDREN_MAX {
            return Err(Error::QuotaExceeded);
        }
    }
    env.charge_n(quota)?;
    let child = match create_child(env, quota) {
        Ok(c) => c,
        Err(e) => {
            env.uncharge_n(quota);
            return Err(e);
        }
    };
    env.children.lock().live.push(child.id);
    Ok(u64::from(child.id))
}

/// The live child `handle` names, if `env` created it: `NoSuchEnv` for a
/// stale or meaningless handle, `NotOwner` for someone else's environment.
pub fn child_of(env: &Env, handle: u64) -> Result<Arc<Env>, Error> {
    let id = EnvId::from_word(handle).ok_or(Error::NoSuchEnv)?;
    let child = lookup(id).ok_or(Error::NoSuchEnv)?;
    if child.creator != env.id || child.id == env.id {
        return Err(Error::NotOwner);
    }
    if child.is_dying() {
        return Err(Error::NoSuchEnv);
    }
    Ok(child)
}

fn check_va(va: u64) -> Result<(), Error> {
    kernel::syscall::check_range(va, 1)
}

fn room_for_mapping(child: &Env) -> Result<(), Error> {
    if child.mappings.load(Ordering::Relaxed) >= child.quota() * MAPPINGS_PER_FRAME {
        return Err(Error::QuotaExceeded);
    }
    Ok(())
}

/// `ChildMap`: maps `frame` of `env` at `va` in `child`, given or shared.
pub fn child_map(
    env: &Env,
    child: &Env,
    frame: FrameNumber,
    va: u64,
    rights: Rights,
    flags: u64,
) -> Result<(), Error> {
    check_va(va)?;
    if !rights.is_valid() || !rights.contains(Rights::READ) || flags & !abi::CHILD_MAP_GIVE != 0 {
        return Err(Error::InvalidArgument);
    }
    let give = flags & abi::CHILD_MAP_GIVE != 0;
    if give && frame.raw() == abi::ANY_FRAME {
        return child_map_fresh(child, va, rights);
    }
    if frame.raw() >= memory::FRAME_CAPACITY {
        return Err(Error::BadFrame);
    }
    let mut aspace = lock_serving_mailbox(&child.aspace);
    if child.is_dying() {
        return Err(Error::NoSuchEnv);
    }
    if aspace.translate(va).is_some() {
        return Err(Error::AlreadyMapped);
    }
    room_for_mapping(child)?;
    aspace.ensure_tables(va, &mut || alloc_table_frame(child))?;
    if give {
        child.charge()?;
    }
    let mut table = shard(frame);
    let granted = if give {
        table.give(frame, env.id, child.id).map(|()| rights)
    } else {
        // Copy-on-write, unless the frame is shared writable already.
        table.share(frame, env.id, None, child.id, rights, ShareMode::CopyOnWrite).map(|s| s.rights)
    };
    let granted = match granted {
        Ok(r) => r,
        Err(e) => {
            drop(table);
            if give {
                child.uncharge();
            }
            return Err(e);
        }
    };
    aspace.map(va, frame, leaf_flags(granted), &mut || Err(Error::NoMemory))?;
    table.add_mapping(frame, child.id, va);
    drop(table);
    child.mappings.fetch_add(1, Ordering::Relaxed);
    if give {
        // Under the child's lock: its reclaim sees the frame or refuses us.
        child.owned.lock().insert(frame);
        env.owned.lock().remove(frame);
        env.uncharge();
    }
    Ok(())
}

/// `ChildMap` of [`abi::ANY_FRAME`], given: a fresh zeroed frame owned by
/// and charged to `child`, mapped at `va` with `rights` (a forked child's
/// exception stack: one call a page instead of `FrameAlloc` + a give).
/// Under the child's lock, as [`child_map`]: its reclaim sees the frame or
/// refuses us.
fn child_map_fresh(child: &Env, va: u64, rights: Rights) -> Result<(), Error> {
    let mut aspace = lock_serving_mailbox(&child.aspace);
    if child.is_dying() {
        return Err(Error::NoSuchEnv);
    }
    room_for_mapping(child)?;
    // The tables first (charged to the child): once the frame is taken
    // nothing can fail.
    let Some(slot) = aspace.vacant(va, &mut || alloc_table_frame(child))? else {
        return Err(Error::AlreadyMapped);
    };
    child.charge()?;
    let frame = match memory::alloc_frame() {
        Ok(f) => f,
        Err(e) => {
            child.uncharge();
            return Err(frame_error(e));
        }
    };
    let mut table = shard(frame);
    table.insert(frame, child.id, FrameKind::Data);
    slot.fill(frame, leaf_flags(rights));
    table.add_mapping(frame, child.id, va);
    drop(table);
    child.mappings.fetch_add(1, Ordering::Relaxed);
    child.owned.lock().insert(frame);
    Ok(())
}

/// `ChildUnmap`.
pub fn child_unmap(child: &Env, va: u64) -> Result<(), Error> {
    unmap(child, va)
}

/// How far [`share_range`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareStep {
    /// Done: this many pages shared in all.
    Done(u64),
    /// One step done: go on from `src`/`dst` with `pages` left, `done` so
    /// far.
    More {
        /// Next source page.
        src: u64,
        /// Next destination page.
        dst: u64,
        /// Pages left.
        pages: u64,
        /// Pages shared so far.
        done: u64,
    },
}

/// `ShareRange` (`mode` copy-on-write) or `ShareWritable` (writable): one
/// bounded step (at most [`RANGE_CHUNK`] page-table entries of `env`'s, one
/// shootdown round for its write-protect).
pub fn share_range(
    env: &Env,
    child: &Env,
    src: u64,
    dst: u64,
    pages: u64,
    done: u64,
    mode: ShareMode,
) -> Result<ShareStep, Error> {
    if pages == 0 {
        return Ok(ShareStep::Done(done));
    }
    check_share_range(src, pages)?;
    check_share_range(dst, pages)?;
    let end = src + pages * abi::PAGE_SIZE;
    let mut aspace = lock_serving_mailbox(&env.aspace);
    let mut leaves = LeafBuf::new();
    let stop = aspace.leaves_in(src, end, RANGE_CHUNK, &mut leaves);
    let mut shared = 0u64;
    let mut protected = false;
    let result = {
        let mut caspace = lock_serving_mailbox(&child.aspace);
        if child.is_dying() {
            Err(Error::NoSuchEnv)
        } else {
            let offset = dst.wrapping_sub(src);
            share_leaves(env, &mut aspace, child, &mut caspace, &leaves, offset, mode)
                .map(|(n, p)| {
                    shared = n;
                    protected = p;
                })
                .map_err(|(n, p, e)| {
                    shared = n;
                    protected = p;
                    e
                })
        }
    };
    if protected {
        tlb::shootdown(
            &env.tlb_space(),
            Flush { start: src, pages: (stop - src) / abi::PAGE_SIZE },
        );
    }
    drop(aspace);
    result?;
    let done = done.saturating_add(shared);
    Ok(if stop >= end {
        ShareStep::Done(done)
    } else {
        let moved = stop - src;
        ShareStep::More { src: stop, dst: dst + moved, pages: (end - stop) / abi::PAGE_SIZE, done }
    })
}

/// A `ShareRange` range: page-aligned, inside `USER_MIN..USER_MAX`, clear
/// of the info region (any length: the work is bounded per step).
fn check_share_range(va: u64, pages: u64) -> Result<(), Error> {
    check_va(va)?;
    let end = pages
        .checked_mul(abi::PAGE_SIZE)
        .and_then(|b| va.checked_add(b))
        .filter(|&e| e <= abi::USER_MAX)
        .ok_or(Error::InvalidArgument)?;
    if va < abi::INFO_VA + abi::INFO_REGION_SIZE && end > abi::INFO_VA {
        return Err(Error::Reserved);
    }
    Ok(())
}

type ShareResult = Result<(u64, bool), (u64, bool, Error)>;

/// Shares each of `leaves` (`env`'s) into `child` at `va + offset`, in
/// `mode` (a frame shared writable already is shared writable whatever
/// `mode` says); returns how many were shared and whether a writable
/// mapping of `env`'s was made read-only (its TLBs need a flush), also on
/// error.
fn share_leaves(
    env: &Env,
    aspace: &mut AddressSpace,
    child: &Env,
    caspace: &mut AddressSpace,
    leaves: &[(u64, FrameNumber)],
    offset: u64,
    mode: ShareMode,
) -> ShareResult {
    let mut shared = 0;
    let mut protected = false;
    for &(va, frame) in leaves {
        let cva = va.wrapping_add(offset);
        let fail = |e: Error| -> ShareResult { Err((shared, protected, e)) };
        // One walk of each side per page: the child's makes its tables
        // (charged to it, reclaimed with it) and finds the empty entry, the
        // caller's reads the flags and write-protects in place.
        let slot = match caspace.vacant(cva, &mut || alloc_table_frame(child)) {
            Ok(Some(slot)) => slot,
            Ok(None) => continue,
            Err(e) => return fail(e),
        };
        let Some(mut leaf) = aspace.leaf_mut(va) else { continue };
        let flags = leaf.flags();
        // Marked copy-on-write in the caller: a writable share would leave
        // the caller's own next write to copy it away from the child.
        if mode == ShareMode::Writable && flags.contains(F::BIT_9) {
            return fail(Error::Busy);
        }
        if let Err(e) = room_for_mapping(child) {
            return fail(e);
        }
        if super::bindings::is_initrd_frame(frame) {
            // The kernel's immutable initrd, which anyone may map read-only
            // (`Map`): the child gets the same read-only page, and there is
            // no record to keep.
            slot.fill(frame, leaf_flags(rights_of(flags - F::WRITABLE)));
            child.mappings.fetch_add(1, Ordering::Relaxed);
            shared += 1;
            continue;
        }
        let mut table = shard(frame);
        // A ring's frames stay the caller's alone (the kernel writes them).
        if table.get(frame).is_some_and(|r| r.pins > 0) {
            continue;
        }
        let given = match table.share(frame, env.id, Some(va), child.id, rights_of(flags), mode) {
            Ok(s) => s,
            // Mapped by a grant (or a page table, never): not the caller's
            // to share; skipped.
            Err(Error::NotOwner) => continue,
            Err(e) => return fail(e),
        };
        let cow = given.mode == ShareMode::CopyOnWrite;
        // Copy-on-write from a writable mapping (or an already
        // copy-on-write one): both sides' mappings carry the mark the
        // libOS's fault handler asks `PageQuery` for. A writable share
        // never carries it.
        let mark =
            if cow && flags.intersects(F::WRITABLE | F::BIT_9) { F::BIT_9 } else { F::empty() };
        slot.fill(frame, leaf_flags(given.rights) | mark);
        table.add_mapping(frame, child.id, cva);
        if cow && flags.contains(F::WRITABLE) {
            // The same step as the share: no writable mapping while shared
            // (the TLBs are flushed once for the whole step).
            leaf.set_flags((flags - F::WRITABLE) | F::BIT_9);
            protected = true;
        }
        drop(table);
        child.mappings.fetch_add(1, Ordering::Relaxed);
        shared += 1;
    }
    Ok((shared, protected))
}

/// `ChildSetEntry`.
pub fn child_set_entry(
    child: &Env,
    which: u64,
    entry: u64,
    stack_top: u64,
    stride: u64,
) -> Result<(), Error> {
    if entry != 0 && (!(abi::USER_MIN..abi::USER_MAX).contains(&entry) || stack_top > abi::USER_MAX)
    {
        return Err(Error::InvalidArgument);
    }
    match which {
        abi::CHILD_ENTRY_EXCEPTION => {
            *child.exception.lock() = super::ExceptionHandler { entry, stack_top, stride };
        }
        abi::CHILD_ENTRY_IPC => {
            child.ipc.stack_top.store(stack_top, Ordering::Relaxed);
            child.ipc.stride.store(stride, Ordering::Relaxed);
            child.ipc.entry.store(entry, Ordering::Release);
        }
        _ => return Err(Error::InvalidArgument),
    }
    Ok(())
}

/// After a vCPU of `child` was queued: drops the creation count if this was
/// its first start.
pub fn child_started(child: &Arc<Env>) {
    if child.unstarted.swap(false, Ordering::AcqRel) {
        vcpu_dropped(child);
    }
}

/// `ChildDestroy`.
pub fn child_destroy(child: &Arc<Env>) {
    terminate(child, Outcome::Killed(alloc::string::String::from("destroyed by its creator")));
    if child.unstarted.swap(false, Ordering::AcqRel) {
        vcpu_dropped(child);
    }
}

/// `ChildStatus`.
pub fn child_status(env: &Env, handle: u64) -> Result<u64, Error> {
    let id = EnvId::from_word(handle).ok_or(Error::NoSuchEnv)?;
    let mut book = env.children.lock();
    if let Some(i) = book.exits.iter().position(|&(c, _)| c == id) {
        let (_, status) = book.exits.remove(i).expect("just found");
        return Ok(status);
    }
    if book.live.contains(&id) {
        return Err(Error::Busy);
    }
    drop(book);
    if lookup(id).is_some() { Err(Error::NotOwner) } else { Err(Error::NoSuchEnv) }
}

/// The status word of an outcome (see `abi::Syscall::ChildStatus`).
pub fn status_word(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Exited(code) => (*code).min(abi::CHILD_KILLED - 1),
        Outcome::Killed(_) => abi::CHILD_KILLED,
    }
}

/// At the end of `env`'s reclaim (its frames are back): hands its quota
/// back to its creator (less the frames still charged to it), records its
/// status there and posts [`abi::event::CHILD_EXIT`].
pub(super) fn child_reclaimed(env: &Env, outcome: &Outcome) {
    if env.creator.is_none() {
        return;
    }
    let Some(creator) = lookup(env.creator) else { return };
    let status = status_word(outcome);
    {
        // The refund is read under the book's lock, which `child_quota`
        // holds while it changes the quota of a child it finds live here:
        // a change is either refunded here or refused there.
        let mut book = creator.children.lock();
        let refund = env.quota().saturating_sub(env.kept.load(Ordering::Acquire));
        creator.uncharge_n(refund);
        book.live.retain(|&c| c != env.id);
        if book.exits.len() >= abi::CHILD_EXITS_KEPT {
            book.exits.pop_front();
        }
        book.exits.push_back((env.id, status));
    }
    post_event(&creator, abi::event::CHILD_EXIT, env.id, [u64::from(env.id), status]);
    super::signal::child_ended(&creator);
}

/// `ChildQuota`: sets `child`'s frame quota to `quota` frames, taking the
/// difference from `env`'s quota (the child's quota stays charged to `env`
/// as a whole until the child is reclaimed) or giving it back; returns the
/// previous quota. Lowering never goes below what the child uses: its
/// charged frames plus what repossession took must fit, and its mappings
/// the new mapping bound ([`Error::Busy`] otherwise, nothing changed).
///
/// Races: the child's own charges run meanwhile on other cores. Lowering
/// first *reserves* the difference in the child's own charge count (one
/// atomic update that fails unless it fits in its quota now), then lowers
/// the quota, then drops the reservation: at no moment can the child's
/// charges exceed its quota. Changes are serialized by `env.children`'s
/// lock, under which the child must still be live (and under which its
/// reclaim computes the refund, see [`child_reclaimed`]).
pub fn child_quota(env: &Env, child: &Env, quota: u64) -> Result<u64, Error> {
    if quota < abi::CHILD_QUOTA_MIN || quota > u64::from(u32::MAX) {
        return Err(Error::InvalidArgument);
    }
    let book = env.children.lock();
    if !book.live.contains(&child.id) || child.is_dying() {
        return Err(Error::NoSuchEnv);
    }
    let old = child.quota();
    if quota > old {
        let more = quota - old;
        env.charge_n(more)?;
        child.quota.store(quota, Ordering::Release);
        info_quota_add(child, more as i64);
    } else if quota < old {
        let less = old - quota;
        child.reserve(less)?;
        if child.mappings.load(Ordering::Acquire) > quota * MAPPINGS_PER_FRAME {
            child.uncharge_n(less);
            return Err(Error::Busy);
        }
        child.quota.store(quota, Ordering::Release);
        child.uncharge_n(less);
        env.uncharge_n(less);
        info_quota_add(child, -(less as i64));
    }
    drop(book);
    Ok(old)
}

/// Moves the quota `child`'s info page shows (`InfoPage::frame_quota`, the
/// high half of the word it shares with `cores`) by `delta`, within
/// `0..=u32::MAX`.
#[allow(
    deprecated,
    reason = "fetch_update is try_update from Rust 1.99 on; kept for older stables"
)]
fn info_quota_add(child: &Env, delta: i64) {
    const WORD: usize = core::mem::offset_of!(abi::InfoPage, cores);
    const _: () = assert!(core::mem::offset_of!(abi::InfoPage, frame_quota) == WORD + 4);
    if child.info_frame.load(Ordering::Acquire) == 0 {
        return;
    }
    let word = super::info_word(child, WORD as u64);
    let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
        let q = ((w >> 32) as i64).saturating_add(delta).clamp(0, i64::from(u32::MAX)) as u64;
        Some(w & 0xffff_ffff | q << 32)
    });
}

/// At the start of `env`'s reclaim: its children never started die with
/// it (nothing would ever run or end them); started ones live on.
pub(super) fn destroy_unstarted_children(env: &Env) {
    let live = core::mem::take(&mut env.children.lock().live);
    for id in live {
        if let Some(child) = lookup(id)
            && child.unstarted.swap(false, Ordering::AcqRel)
        {
            terminate(
                &child,
                Outcome::Killed(alloc::string::String::from(
                    "its creator ended before starting it",
                )),
            );
            vcpu_dropped(&child);
        }
    }
}

/// `FrameCopy`: copies the page `env` maps readable at `src_va` into
/// `dst`, a frame `env` could map writable; returns the source frame.
pub fn frame_copy(env: &Env, dst: FrameNumber, src_va: u64) -> Result<u64, Error> {
    if dst.raw() >= memory::FRAME_CAPACITY {
        return Err(Error::BadFrame);
    }
    if !(abi::USER_MIN..abi::USER_MAX).contains(&src_va) {
        return Err(Error::BadAddress);
    }
    let page = src_va & !(abi::PAGE_SIZE - 1);
    let aspace = lock_serving_mailbox(&env.aspace);
    let (src, flags) = aspace.translate(page).ok_or(Error::BadAddress)?;
    if !flags.contains(F::USER_ACCESSIBLE) {
        return Err(Error::BadAddress);
    }
    let table = shard(dst);
    table.check_map(dst, env.id, Rights::RW)?;
    copy_frame(dst, src);
    drop(table);
    drop(aspace);
    Ok(src.raw())
}

/// `CowBreak`: ends the copy-on-write sharing of the page holding `va`
/// for `env` in one call (see the ABI; a page writable already is left as
/// it is, so two fix-ups of one fault both succeed): the sole holder's page is made
/// writable in place, as `Protect` does; otherwise a new frame charged to
/// `env` gets a copy and replaces the shared one under the address-space
/// lock, and `env`'s hold on the old one ends. Returns the frame mapped at
/// the page afterwards.
pub fn cow_break(env: &Env, va: u64) -> Result<u64, Error> {
    let page = va & !(abi::PAGE_SIZE - 1);
    check_va(page)?;
    let mut aspace = lock_serving_mailbox(&env.aspace);
    let (old, flags) = aspace.translate(page).ok_or(Error::NotMapped)?;
    if !flags.contains(F::BIT_9) {
        // Writable already: another fix-up of this page got here first (a
        // nested upcall on this vCPU — a signal upcall whose handler wrote
        // the page — or another vCPU of ours). Nothing to break; the
        // faulting access, retried, succeeds.
        return if flags.contains(F::WRITABLE) {
            Ok(old.raw())
        } else {
            Err(Error::InvalidArgument)
        };
    }
    let rights = rights_of(flags).union(Rights::WRITE);
    let (holders, owned) =
        shard(old).get(old).map_or((0, false), |r| (r.holders(), r.owner == env.id && !r.released));
    if holders == 1 {
        // Ours alone: no copy. `protect` takes the lock itself and checks
        // again (another vCPU of ours may have changed the page meanwhile);
        // if it refuses, the copy below is still right.
        drop(aspace);
        if super::bindings::protect(env, page, rights).is_ok() {
            return Ok(old.raw());
        }
        aspace = lock_serving_mailbox(&env.aspace);
        match aspace.translate(page) {
            Some((now, f)) if now == old && f.contains(F::BIT_9) => {}
            _ => return Err(Error::Busy),
        }
    }
    env.charge()?;
    let new = match memory::alloc_frame() {
        Ok(f) => f,
        Err(e) => {
            env.uncharge();
            return Err(super::bindings::frame_error(e));
        }
    };
    shard(new).insert(new, env.id, kernel::ownership::FrameKind::Data);
    env.owned.lock().insert(new);
    copy_frame(new, old);
    {
        // As `map_locked`: the check and the mapping under the new frame's
        // shard lock (another vCPU of ours may have freed it already: its
        // number is guessable), the old mapping replaced in the same step.
        let mut table = shard(new);
        table.check_map(new, env.id, rights)?;
        // In one store of the entry: another vCPU of ours walking the
        // tables now sees the old (read-only) page or the new one, never a
        // hole it would fault on as not present. Cannot fail: the page was
        // mapped a moment ago under this lock.
        aspace.replace(page, new, leaf_flags(rights)).expect("mapped under this lock");
        table.add_mapping(new, env.id, page);
    }
    tlb::shootdown(&env.tlb_space(), Flush::page(page));
    let outcome = shard(old).remove_mapping(old, env.id, page);
    drop(aspace);
    super::bindings::released(old, outcome);
    if owned {
        // Still held by its other sharers, charged to us until they let go.
        let _ = super::bindings::frame_free(env, old);
    }
    Ok(new.raw())
}

/// `PageQuery`: the mapping at the page holding `va` (see the ABI).
pub fn page_query(env: &Env, va: u64) -> Result<u64, Error> {
    if !(abi::USER_MIN..abi::USER_MAX).contains(&va) {
        return Err(Error::InvalidArgument);
    }
    let page = va & !(abi::PAGE_SIZE - 1);
    let aspace = lock_serving_mailbox(&env.aspace);
    let (frame, flags) = aspace.translate(page).ok_or(Error::NotMapped)?;
    let (holders, owned) = shard(frame)
        .get(frame)
        .map_or((0, false), |r| (r.holders() as u64, r.owner == env.id && !r.released));
    drop(aspace);
    let mut word =
        rights_of(flags).0 | frame.addr() | holders.min(127) << abi::PAGE_QUERY_HOLDERS_SHIFT;
    if flags.contains(F::BIT_9) {
        word |= abi::PAGE_QUERY_COW;
    }
    if owned {
        word |= abi::PAGE_QUERY_OWNED;
    }
    Ok(word)
}
