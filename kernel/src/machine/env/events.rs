//! What the kernel tells an environment through its kernel-owned pages:
//! info-page and vCPU-page words, the event queue, and the wake-up of its
//! sleeping vCPUs.
//!
//! May not touch: the scheduler (a wake-up is a [`mailbox::kick`] of each
//! core that owes a look).

use super::Env;
use crate::machine::mailbox;
use crate::machine::memory;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::frames::FrameNumber;
use kernel::ownership::EnvId;
use x86_64::instructions::interrupts::without_interrupts;

/// The info-page word at byte `offset` (8-aligned, inside `InfoPage`).
pub fn info_word(env: &Env, offset: u64) -> &AtomicU64 {
    assert!(offset.is_multiple_of(8) && offset + 8 <= core::mem::size_of::<abi::InfoPage>() as u64);
    let frame = FrameNumber(env.info_frame.load(Ordering::Acquire));
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
    let frame = FrameNumber(env.vcpu_page_frames.get(core)?.load(Ordering::Acquire));
    if frame.raw() == 0 {
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
    let frame = FrameNumber(env.event_frame.load(Ordering::Acquire));
    if frame.raw() == 0 {
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
