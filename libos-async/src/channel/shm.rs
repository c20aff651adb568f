//! The machine side of channels, and their only `unsafe`: mappings of
//! shared frames in the channel window, atomic word access to them, the
//! page-fault fix-up that keeps a vanished mapping from killing us, and the
//! wake-up of a peer ([`notify`], an asynchronous call).
//!
//! # The channel window
//!
//! [`layout::CHANNELS_BASE`]`..`[`layout::CHANNELS_END`] holds nothing but
//! frames mapped by [`map_frames`]. Address space is handed out by a bump
//! pointer (never reused; 1 TiB lasts), each mapping followed by an
//! unmapped guard page. No Rust object ever lives there, so an atomic view
//! of a word in it can alias no Rust reference, and whatever a peer writes
//! is just bits.
//!
//! # When the peer dies
//!
//! A shared frame belongs to one of the two environments. When its owner
//! dies (or revokes the grant), the kernel unmaps it from the other side on
//! every core; the next access there would page-fault and kill the
//! environment. `fixup` (called first by every exception upcall, see
//! [`crate::exception`]) instead maps a fresh zeroed frame at the faulting
//! page of the window and resumes: the access then reads zeros (a bad magic,
//! counters at 0), which the ring's validation reports, and the endpoint's
//! liveness check turns into [`super::ChannelError::PeerGone`].
//! [`ensure_fault_handling`] registers the upcall stub with the kernel if
//! the application has not registered a handler of its own.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::{Error, PAGE_SIZE, Rights, UpcallFrame, vector};

use super::ring::SharedMem;
use crate::{layout, sys};

/// Next free address of the channel window.
static NEXT_VA: AtomicU64 = AtomicU64::new(layout::CHANNELS_BASE);
/// Pages the fault fix-up has replaced by fresh zeroed frames.
static REPLACED: AtomicU64 = AtomicU64::new(0);

/// Reserves `pages` pages (plus a guard page) of the channel window.
fn reserve(pages: u64) -> Result<u64, Error> {
    let bytes = (pages + 1) * PAGE_SIZE;
    let va = NEXT_VA.fetch_add(bytes, Ordering::Relaxed);
    if va + bytes > layout::CHANNELS_END {
        return Err(Error::NoMemory);
    }
    Ok(va)
}

/// A run of frames mapped contiguously in the channel window.
///
/// The only way to get one is [`map_frames`], so `base .. base + bytes`
/// always lies in the window (see the module documentation). It is not
/// `Clone`: [`Mapped::unmap`] consumes it.
#[derive(Debug)]
pub struct Mapped {
    base: u64,
    bytes: usize,
}

/// Maps `frames` (owned by or granted to this environment) at fresh
/// consecutive pages of the channel window with `rights`. On failure
/// nothing stays mapped.
pub fn map_frames(frames: &[u64], rights: Rights) -> Result<Mapped, Error> {
    let base = reserve(frames.len() as u64)?;
    for (i, &frame) in frames.iter().enumerate() {
        if let Err(e) = sys::map(frame, base + i as u64 * PAGE_SIZE, rights) {
            let _ = sys::unmap_range(base, i as u64);
            return Err(e);
        }
    }
    Ok(Mapped { base, bytes: frames.len() * PAGE_SIZE as usize })
}

impl Mapped {
    /// The address of byte `off` (for predicates and the executor's
    /// word watch).
    pub fn addr(&self, off: usize) -> u64 {
        assert!(off < self.bytes);
        self.base + off as u64
    }

    /// Unmaps the pages (the address range is not reused).
    pub fn unmap(self) {
        let _ = sys::unmap_range(self.base, (self.bytes as u64) / PAGE_SIZE);
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.bytes, "channel word {off} out of range");
        // SAFETY: `base + off` is 8-aligned and inside this mapping, which
        // lies in the channel window: no Rust object lives there (module
        // documentation), so the atomic view aliases no Rust reference.
        // The page is mapped (by `map_frames`) or, if the kernel took it
        // away, re-mapped by `fixup` on the first access, so the access
        // never kills the environment. Every access to shared channel
        // memory is through such atomics, on our side; the peer's accesses
        // are in another address space and cannot make these UB (a torn or
        // arbitrary value is just a value).
        unsafe { AtomicU64::from_ptr((self.base + off as u64) as *mut u64) }
    }
}

impl SharedMem for Mapped {
    fn size(&self) -> usize {
        self.bytes
    }
    fn load(&self, off: usize, order: Ordering) -> u64 {
        self.word(off).load(order)
    }
    fn store(&self, off: usize, value: u64, order: Ordering) {
        self.word(off).store(value, order)
    }
    fn swap(&self, off: usize, value: u64, order: Ordering) -> u64 {
        self.word(off).swap(value, order)
    }
    fn compare_exchange(&self, off: usize, current: u64, new: u64) -> Result<u64, u64> {
        self.word(off).compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
    }
}

/// The exception-upcall hook: a page fault inside the used part of the
/// channel window gets a fresh zeroed frame mapped at its page; returns
/// whether the faulting access may be resumed.
pub(crate) fn fixup(frame: &UpcallFrame) -> bool {
    let addr = frame.fault_addr;
    if frame.vector != vector::PAGE_FAULT
        || !(layout::CHANNELS_BASE..NEXT_VA.load(Ordering::Relaxed)).contains(&addr)
    {
        return false;
    }
    let page = addr & !(PAGE_SIZE - 1);
    let ok = sys::frame_alloc(None).is_ok_and(|f| {
        let mapped = sys::map(f, page, Rights::RW).is_ok();
        if !mapped {
            let _ = sys::frame_free(f);
        }
        mapped
    });
    if ok {
        REPLACED.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

/// How many channel pages `fixup` has replaced (each one a peer that
/// went away under a live mapping).
pub fn replaced_pages() -> u64 {
    REPLACED.load(Ordering::Relaxed)
}

/// Makes sure exception upcalls reach `fixup`: registers the libOS's
/// upcall stub (without an application handler) unless one is registered.
pub fn ensure_fault_handling() -> Result<(), Error> {
    crate::exception::ensure_registered()
}

/// Wakes environment `env`'s sleeping vCPUs at once: an asynchronous call
/// (a direct system call, so it never competes with the runtime for this
/// core's ring), which bumps its `InfoPage::notifications` — the word every
/// channel wait and the executor's idle predicate watch.
pub fn notify(env: u64) -> Result<(), Error> {
    sys::acall(env, WAKE_EVENT, 0).map(|_| ())
}

/// First word of the `CALL` event a channel wake-up posts.
pub const WAKE_EVENT: u64 = 0x6368_616e; // "chan"
