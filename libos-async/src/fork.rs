//! `fork`, `wait` and the copy-on-write fault handler, over the kernel's
//! child environments (`abi::child`).
//!
//! [`fork`] (of a single-vCPU environment): captures the caller's
//! callee-saved registers, stack pointer and return address
//! (`capture`, a setjmp), creates an empty child with part of our quota,
//! shares every mapping of ours with it copy-on-write (`ShareRange`: the
//! kernel write-protects our side in bounded steps) except the exception
//! stacks, gives it a fresh exception stack for the core it will run on,
//! registers our upcall stub as its exception entry and starts its vCPU on
//! our core with the captured registers and `rax` = 0: the child returns
//! from `capture` a second time, with 0, and `fork` returns `None` there.
//! Our ring pages (pinned by the kernel) are not shared; a child must not
//! use the parent's ring or async runtime (it has none). Ranges marked
//! with [`crate::shared`] are shared writable first (`ShareWritable`):
//! parent and child see each other's writes there.
//!
//! **Copy-on-write faults** (`cow_fixup`, run first by the upcall
//! dispatcher): a write to a present page is handed to `CowBreak`, one
//! system call that does the whole fix if the kernel marked the page
//! copy-on-write (and refuses otherwise): if we are its only holder the
//! page becomes writable again (taken over if its owner let go);
//! otherwise a new frame gets a copy and replaces the shared one, and the
//! old one is let go of if it was ours (it lives on for the other
//! holders). The region layer's frame table follows the page.
//!
//! Ranges marked with [`not_shared_with_children`] are left out of the
//! sharing: memory every environment maps for itself (the POSIX runtime's
//! `InitrdMap` of the whole initrd, thousands of pages the kernel would walk
//! at each fork only to skip them, since initrd frames are nobody's to
//! share).
//!
//! [`wait`] sleeps on the event queue's tail until `ChildStatus` answers.
//!
//! The module's `unsafe`: the register capture (naked assembly).

use abi::{Error, PAGE_SIZE, Rights, UpcallFrame, pf, vector};
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::{exception, layout, sys};

/// Quota [`fork`] gives a child when asked for 0: its page tables and the
/// pages it copies come out of it.
pub const DEFAULT_CHILD_QUOTA: u64 = 512;

/// Frames [`fork`] leaves us at least (beyond the child's quota), or it
/// refuses with `QuotaExceeded`: after a fork every writable page of ours is
/// copy-on-write, and the first writes to them — our stack, our statics —
/// need frames to copy into. A fork bomb at its quota then gets an error
/// instead of dying at its next write.
pub const FORK_HEADROOM: u64 = 16;

/// The most ranges [`not_shared_with_children`] marks.
pub const UNSHARED_MAX: usize = 4;

/// `(base, end)` pairs [`fork`] leaves out of the child; `end == 0`: free.
static UNSHARED: spin::Mutex<[(u64, u64); UNSHARED_MAX]> = spin::Mutex::new([(0, 0); UNSHARED_MAX]);

/// Leaves `va .. va + bytes` (page-aligned) out of what [`fork`] shares
/// with the children forked from now on: memory each environment maps for
/// itself (the child maps its own there after the fork). The child
/// inherits the mark. [`Error::InvalidArgument`] for a malformed range,
/// [`Error::QuotaExceeded`] when [`UNSHARED_MAX`] are marked.
pub fn not_shared_with_children(va: u64, bytes: u64) -> Result<(), Error> {
    let end = va.checked_add(bytes).ok_or(Error::InvalidArgument)?;
    if bytes == 0 || !va.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
        return Err(Error::InvalidArgument);
    }
    let mut ranges = UNSHARED.lock();
    let slot = ranges.iter_mut().find(|r| r.1 == 0).ok_or(Error::QuotaExceeded)?;
    *slot = (va, end);
    Ok(())
}

/// `ShareRange` of `[start, end)` into `child` at the same addresses, less
/// the ranges in `skip` (sorted by base).
fn share_except(child: u64, start: u64, end: u64, skip: &[(u64, u64)]) -> Result<(), Error> {
    let mut at = start;
    for &(b, e) in skip {
        if e <= at || b >= end {
            continue;
        }
        if b > at {
            sys::share_range(child, at, at, (b - at) / PAGE_SIZE)?;
        }
        at = at.max(e);
    }
    if at < end {
        sys::share_range(child, at, at, (end - at) / PAGE_SIZE)?;
    }
    Ok(())
}

/// Saves rbx, rbp, r12..r15, rflags, the return address (as `rip`) and the
/// stack pointer after the return (as `rsp`) into `*frame`, with `rax` 0;
/// returns 1. A vCPU started from that frame returns from this call again,
/// with 0.
///
/// # Safety
///
/// `frame` must be valid for writes of an `UpcallFrame`.
#[unsafe(naked)]
unsafe extern "C" fn capture(frame: *mut UpcallFrame) -> u64 {
    // SAFETY (naked): reads only the return address at [rsp] and the
    // registers; writes only the frame `rdi` points to (a valid, exclusive
    // `&mut UpcallFrame` at the one call site); returns with the stack as
    // it came.
    core::arch::naked_asm!(
        "mov rax, [rsp]",
        "mov [rdi + {rip}], rax",
        "lea rax, [rsp + 8]",
        "mov [rdi + {rsp}], rax",
        "mov [rdi + {rbx}], rbx",
        "mov [rdi + {rbp}], rbp",
        "mov [rdi + {r12}], r12",
        "mov [rdi + {r13}], r13",
        "mov [rdi + {r14}], r14",
        "mov [rdi + {r15}], r15",
        "pushfq",
        "pop rax",
        "mov [rdi + {rflags}], rax",
        "mov qword ptr [rdi + {rax}], 0",
        "mov eax, 1",
        "ret",
        rip = const offset_of!(UpcallFrame, rip),
        rsp = const offset_of!(UpcallFrame, rsp),
        rbx = const offset_of!(UpcallFrame, rbx),
        rbp = const offset_of!(UpcallFrame, rbp),
        r12 = const offset_of!(UpcallFrame, r12),
        r13 = const offset_of!(UpcallFrame, r13),
        r14 = const offset_of!(UpcallFrame, r14),
        r15 = const offset_of!(UpcallFrame, r15),
        rflags = const offset_of!(UpcallFrame, rflags),
        rax = const offset_of!(UpcallFrame, rax),
    )
}

/// Forks this (single-vCPU) environment: `Ok(Some(child))` in the parent,
/// `Ok(None)` in the child. The child gets `quota` frames of ours
/// ([`DEFAULT_CHILD_QUOTA`] if 0) and runs on our core.
///
/// Between the register capture and the sharing, only this function's own
/// frame changes; the child, which returns at once, reads nothing of it.
#[inline(never)]
pub fn fork(quota: u64) -> Result<Option<u64>, Error> {
    fork_on(quota, sys::core_id())
}

/// [`fork`], with the child's vCPU on `core` (any core of
/// `InfoPage::user_cores`: the child is an environment of its own, so it
/// may share a core with us). A fresh exception stack is mapped for that
/// core in the child; everything else is as [`fork`].
#[inline(never)]
pub fn fork_on(quota: u64, core: usize) -> Result<Option<u64>, Error> {
    if core >= abi::MAX_CORES {
        return Err(Error::InvalidArgument);
    }
    exception::ensure_registered()?;
    let mut frame = UpcallFrame::default();
    // SAFETY: `frame` is a live local; see `capture`.
    if unsafe { capture(&mut frame) } == 0 {
        exception::forked_child(core);
        return Ok(None);
    }
    let quota = if quota == 0 { DEFAULT_CHILD_QUOTA } else { quota };
    // Created with `FORK_HEADROOM` frames more than it gets, which go back
    // at once: a fork that would leave us less than that refuses now
    // (`QuotaExceeded`), before our memory turns copy-on-write and our own
    // next writes need frames to copy into.
    let child = sys::env_create(quota + FORK_HEADROOM)?;
    if let Err(e) = sys::child_quota(child, quota) {
        let _ = sys::child_destroy(child);
        let _ = wait(child);
        return Err(e);
    }
    match build_child(child, core, &frame) {
        Ok(()) => Ok(Some(child)),
        Err(e) => {
            // Destroyed and waited for, as `spawn` does: its quota (and the
            // page tables charged to it) is back when this returns, so a
            // caller that goes on after a failed fork — a fork bomb at its
            // quota — can still break its own copy-on-write pages.
            let _ = sys::child_destroy(child);
            let _ = wait(child);
            Err(e)
        }
    }
}

fn build_child(child: u64, core: usize, frame: &UpcallFrame) -> Result<(), Error> {
    // Everything below the exception stacks, and between them and the info
    // region (vCPU stacks, the main stack); the exception stacks are each
    // core's own.
    let low = abi::USER_MIN;
    // Shared memory first (writable in both), so that the copy-on-write
    // pass below finds those pages mapped in the child and skips them.
    for (base, end) in crate::shared::snapshot() {
        if end > base {
            sys::share_writable(child, base, base, (end - base) / PAGE_SIZE)?;
        }
    }
    COW_SHARED.store(true, Ordering::Release);
    // A copy: the lock is not held while its page turns copy-on-write.
    let mut skip = *UNSHARED.lock();
    skip.sort_unstable();
    let skip: &[(u64, u64)] = &skip[skip.iter().position(|r| r.1 != 0).unwrap_or(skip.len())..];
    share_except(child, low, layout::EXC_STACKS_BASE, skip)?;
    let high = layout::EXC_STACK_TOP;
    share_except(child, high, abi::INFO_VA, skip)?;
    // A fresh exception stack for the child's core.
    let top = layout::exc_stack_top(core);
    let mut va = top - layout::EXC_STACK_SIZE;
    while va < top {
        // A fresh frame of the child's own (one call a page).
        sys::child_map(child, abi::ANY_FRAME, va, Rights::RW, abi::CHILD_MAP_GIVE)?;
        va += PAGE_SIZE;
    }
    sys::child_set_entry(
        child,
        abi::CHILD_ENTRY_EXCEPTION,
        crate::entry::exception_entry_addr(),
        layout::EXC_STACK_TOP,
        layout::EXC_STACK_SLOT,
    )?;
    sys::child_start(child, core as u64, frame)?;
    Ok(())
}

/// Waits for `child` to end and be reclaimed; its exit status
/// ([`abi::CHILD_KILLED`] if it was killed).
pub fn wait(child: u64) -> Result<u64, Error> {
    loop {
        let seen = sys::event_tail();
        match sys::child_status(child) {
            Err(Error::Busy) => {
                crate::predicate::Pred::events_ne(seen).sleep()?;
            }
            other => return other,
        }
    }
}

/// The copy-on-write fault handler (see the module documentation): whether
/// it fixed the fault.
/// Set once this environment has shared its memory copy-on-write
/// ([`fork`] sets it before `ShareRange`, so a forked child, whose memory is
/// the parent's, sees it set too). Until then no page can be copy-on-write,
/// and a write fault skips the `PageQuery` (the fault path of an
/// environment that never forked stays one system call long).
static COW_SHARED: AtomicBool = AtomicBool::new(false);

pub(crate) fn cow_fixup(frame: &UpcallFrame) -> bool {
    const WRITE_PRESENT: u64 = pf::PRESENT | pf::WRITE;
    if frame.vector != vector::PAGE_FAULT || frame.error_code & WRITE_PRESENT != WRITE_PRESENT {
        return false;
    }
    if !COW_SHARED.load(Ordering::Acquire) {
        return false;
    }
    let page = frame.fault_addr & !(PAGE_SIZE - 1);
    match sys::cow_break(page) {
        Ok(now) => {
            if crate::vm::frame_at(page).is_some() {
                crate::vm::frames::record(page, now);
            }
            true
        }
        // Not a copy-on-write page (or not mapped): some other handler's.
        // (A page made writable meanwhile — by a nested upcall's fix-up of
        // the same page, or by another vCPU — comes back `Ok`: the kernel
        // leaves it and the access is retried.)
        Err(Error::InvalidArgument | Error::NotMapped) => false,
        // Changed by another of our vCPUs meanwhile: the access, retried,
        // faults again if it still must.
        Err(Error::Busy) => true,
        Err(e) => {
            crate::println!("libos: copy-on-write of {page:#x} failed: {e:?}");
            sys::exit(crate::heap::EXIT_OUT_OF_MEMORY)
        }
    }
}
