//! This vCPU's submission/completion ring ([`abi::ring`]), behind a safe
//! handle. The second (and last) module of libos-async with `unsafe`: the
//! atomic and volatile accesses to the pages shared with the kernel.
//!
//! ```text
//! layout::ring_base(core)  RingHeader   sq_head  sq_tail  cq_head  cq_tail ...
//!   + SQ_OFFSET            SqEntry × sq_entries   (libOS writes, kernel copies)
//!   + cq_offset(sq)        CqEntry × cq_entries   (kernel writes, libOS reads)
//! ```
//!
//! [`Ring::new`] maps fresh frames at [`crate::layout::ring_base`] of the
//! calling vCPU's core (once; a later, bigger ring maps the missing pages)
//! and registers them with `RingSetup`. No Rust object ever lives in that
//! region and libos-async never unmaps it, so a `Ring` may hand out atomic
//! views of its header and volatile copies of its entries for as long as
//! the environment lives.
//!
//! Protocol (the ABI's): [`Ring::push`] writes the entry, then stores
//! `sq_tail` with release; [`Ring::submit`] asks the kernel to consume
//! everything between `sq_head` and `sq_tail`; [`Ring::pop`] loads
//! `cq_tail` with acquire, copies the entry, then stores `cq_head` with
//! release. Every index is read back from the shared header rather than
//! cached, and every slot is masked with the ring's own sizes, so a header
//! someone scribbled on (the hostile tests do, with [`Ring::poke`]) can make
//! the ring misbehave but never make this code touch memory outside it.
//!
//! One ring per vCPU: a `Ring` is neither `Send` nor `Sync` (it names the
//! ring of the vCPU that made it), and [`Ring::new`] refuses with
//! [`Error::Busy`] while a handle for this core is alive. Dropping the
//! handle does not unregister the ring (the ABI has no call for that; the
//! kernel keeps it until the vCPU ends, see [`crate::sys::vcpu_exit`]).

use core::marker::PhantomData;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use abi::ring::{self, CqEntry, MAX_ENTRIES, RingHeader, SqEntry};
use abi::{Error, MAX_CORES, PAGE_SIZE, Rights};
use spin::Mutex;

use crate::{layout, sys};

/// Per core: pages mapped at its ring slot (they stay mapped).
static MAPPED: Mutex<[u32; MAX_CORES]> = Mutex::new([0; MAX_CORES]);
/// Bit `c`: a live [`Ring`] handle exists for core `c`.
static LIVE: AtomicU64 = AtomicU64::new(0);

/// [`Ring::push`]'s error: the submission queue is full (submit first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// The ring of the vCPU that created it.
#[derive(Debug)]
pub struct Ring {
    /// The ring's base address (`layout::ring_base(core)`).
    base: u64,
    /// The core, for [`Drop`].
    core: usize,
    /// Our own copies of the sizes: slots are masked with these, never with
    /// the header's (which user code may overwrite).
    sq_entries: u32,
    cq_entries: u32,
    /// Not `Send`/`Sync`: the ring belongs to this vCPU.
    _vcpu: PhantomData<*mut ()>,
}

/// Offsets of the header's fields (for [`Ring::poke`] users and tests).
pub mod field {
    use super::{RingHeader, offset_of};
    /// `sq_head`.
    pub const SQ_HEAD: u64 = offset_of!(RingHeader, sq_head) as u64;
    /// `sq_tail`.
    pub const SQ_TAIL: u64 = offset_of!(RingHeader, sq_tail) as u64;
    /// `cq_head`.
    pub const CQ_HEAD: u64 = offset_of!(RingHeader, cq_head) as u64;
    /// `cq_tail`.
    pub const CQ_TAIL: u64 = offset_of!(RingHeader, cq_tail) as u64;
    /// `sq_entries`.
    pub const SQ_ENTRIES: u64 = offset_of!(RingHeader, sq_entries) as u64;
    /// `cq_entries`.
    pub const CQ_ENTRIES: u64 = offset_of!(RingHeader, cq_entries) as u64;
    /// `overflow`.
    pub const OVERFLOW: u64 = offset_of!(RingHeader, overflow) as u64;
    /// `errors`.
    pub const ERRORS: u64 = offset_of!(RingHeader, errors) as u64;
}

fn valid_size(n: u32) -> bool {
    n.is_power_of_two() && n <= MAX_ENTRIES
}

/// Called by [`sys::vcpu_exit`]: the ring of this core's vCPU ends with it.
pub(crate) fn vcpu_exiting() {
    let core = sys::core_id();
    if core < MAX_CORES {
        LIVE.fetch_and(!(1 << core), Ordering::AcqRel);
    }
}

/// Maps fresh RW frames at `base + mapped * 4 KiB .. base + to * 4 KiB`,
/// advancing `mapped` page by page: on failure the pages mapped so far stay
/// (and are reused by the next attempt).
fn map_pages(base: u64, mapped: &mut u32, to: u32) -> Result<(), Error> {
    while *mapped < to {
        let va = base + u64::from(*mapped) * PAGE_SIZE;
        let frame = sys::frame_alloc(None)?;
        sys::map(frame, va, Rights::RW).inspect_err(|_| {
            let _ = sys::frame_free(frame);
        })?;
        *mapped += 1;
    }
    Ok(())
}

impl Ring {
    /// Maps (if needed) and registers the ring of the calling vCPU with
    /// `sq_entries` submissions and `cq_entries` completions (powers of two
    /// up to [`MAX_ENTRIES`]).
    ///
    /// Errors: `InvalidArgument` for bad sizes, `Busy` if a handle for this
    /// core is alive, the allocation errors of mapping, and whatever
    /// `RingSetup` answers (`Unsupported` from a kernel without rings).
    pub fn new(sq_entries: u32, cq_entries: u32) -> Result<Ring, Error> {
        if !valid_size(sq_entries) || !valid_size(cq_entries) {
            return Err(Error::InvalidArgument);
        }
        let core = sys::core_id();
        if core >= MAX_CORES {
            return Err(Error::NoSuchCore);
        }
        if LIVE.fetch_or(1 << core, Ordering::AcqRel) & (1 << core) != 0 {
            return Err(Error::Busy);
        }
        let ring = Ring {
            base: layout::ring_base(core),
            core,
            sq_entries,
            cq_entries,
            _vcpu: PhantomData,
        };
        // From here on, dropping `ring` clears the LIVE bit.
        let pages = (ring::ring_bytes(sq_entries, cq_entries) / PAGE_SIZE) as u32;
        {
            let mut mapped = MAPPED.lock();
            map_pages(ring.base, &mut mapped[core], pages)?;
        }
        // A reused region may hold an old ring's header: start from zero.
        for off in (0..size_of::<RingHeader>() as u64).step_by(4) {
            ring.header_word(off).store(0, Ordering::Relaxed);
        }
        // SAFETY: `base .. base + ring_bytes` lies in this core's ring slot
        // of `layout` (RINGS_BASE), where no Rust object lives and which
        // libos-async never unmaps; this module only touches it atomically
        // (header) or volatilely (entries).
        unsafe { sys::ring_setup(ring.base, sq_entries, cq_entries) }?;
        Ok(ring)
    }

    /// The ring's base address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Number of submission entries.
    pub fn sq_entries(&self) -> u32 {
        self.sq_entries
    }

    /// Number of completion entries.
    pub fn cq_entries(&self) -> u32 {
        self.cq_entries
    }

    /// Bytes the ring occupies.
    pub fn bytes(&self) -> u64 {
        ring::ring_bytes(self.sq_entries, self.cq_entries)
    }

    /// The header word at byte offset `off` (4-aligned, inside the header).
    #[inline]
    fn header_word(&self, off: u64) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off < size_of::<RingHeader>() as u64);
        let ptr = (self.base + off) as *mut u32;
        // SAFETY: the header lies at the start of this ring's mapped region
        // (see the module documentation: mapped RW for the life of the
        // environment, no Rust object in it); `off` is 4-aligned inside it.
        // Both the kernel and this module access these words only
        // atomically.
        unsafe { AtomicU32::from_ptr(ptr) }
    }

    /// Address of submission slot `index & (sq_entries - 1)`.
    #[inline]
    fn sq_slot(&self, index: u32) -> *mut SqEntry {
        let slot = u64::from(index & (self.sq_entries - 1));
        (self.base + ring::SQ_OFFSET + slot * size_of::<SqEntry>() as u64) as *mut SqEntry
    }

    /// Address of completion slot `index & (cq_entries - 1)`.
    #[inline]
    fn cq_slot(&self, index: u32) -> *const CqEntry {
        let slot = u64::from(index & (self.cq_entries - 1));
        (self.base + ring::cq_offset(self.sq_entries) + slot * size_of::<CqEntry>() as u64)
            as *const CqEntry
    }

    /// Queues `entry` (not yet seen by the kernel: see [`Ring::submit`]).
    #[inline]
    pub fn push(&mut self, entry: SqEntry) -> Result<(), Full> {
        let tail = self.header_word(field::SQ_TAIL).load(Ordering::Relaxed);
        let head = self.header_word(field::SQ_HEAD).load(Ordering::Acquire);
        if tail.wrapping_sub(head) >= self.sq_entries {
            return Err(Full);
        }
        // SAFETY: the slot is inside this ring's submission array (masked
        // index), in the shared region described in the module
        // documentation; SqEntry is plain integers, and the kernel reads the
        // slot only after our release store of sq_tail below.
        unsafe { write_sqe(self.sq_slot(tail), &entry) };
        self.header_word(field::SQ_TAIL).store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Submissions pushed but not consumed by the kernel yet (at most
    /// `sq_entries`).
    #[inline]
    pub fn pending(&self) -> u32 {
        let tail = self.header_word(field::SQ_TAIL).load(Ordering::Relaxed);
        let head = self.header_word(field::SQ_HEAD).load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.sq_entries)
    }

    /// `RingEnter` with every pending submission; blocks until at least
    /// `min_complete` completions wait (0: does not block). Returns the
    /// number consumed, which is smaller than [`Ring::pending`] was when
    /// the completion queue filled up (the rest stays queued: pop and
    /// submit again).
    #[inline]
    pub fn submit(&mut self, min_complete: u32) -> Result<u64, Error> {
        sys::ring_enter(u64::from(self.pending()), u64::from(min_complete))
    }

    /// `RingEnter` with explicit counts (for tests that lie about them).
    pub fn enter(&mut self, to_submit: u64, min_complete: u64) -> Result<u64, Error> {
        sys::ring_enter(to_submit, min_complete)
    }

    /// Completions waiting to be popped (0 if the header is inconsistent).
    #[inline]
    pub fn ready(&self) -> u32 {
        let head = self.header_word(field::CQ_HEAD).load(Ordering::Relaxed);
        let tail = self.header_word(field::CQ_TAIL).load(Ordering::Acquire);
        let n = tail.wrapping_sub(head);
        if n > self.cq_entries { 0 } else { n }
    }

    /// The oldest completion, if any. `None` also when `cq_tail` is more
    /// than `cq_entries` past `cq_head` (a scribbled header).
    #[inline]
    pub fn pop(&mut self) -> Option<CqEntry> {
        let head = self.header_word(field::CQ_HEAD).load(Ordering::Relaxed);
        let tail = self.header_word(field::CQ_TAIL).load(Ordering::Acquire);
        let n = tail.wrapping_sub(head);
        if n == 0 || n > self.cq_entries {
            return None;
        }
        // SAFETY: the slot is inside this ring's completion array (masked
        // index) in the shared region; the kernel wrote it before its
        // release store of cq_tail, which our acquire load above observed,
        // and does not rewrite it until we release it below. CqEntry is
        // plain integers: any bytes are valid.
        let entry = unsafe { read_cqe(self.cq_slot(head)) };
        self.header_word(field::CQ_HEAD).store(head.wrapping_add(1), Ordering::Release);
        Some(entry)
    }

    /// A snapshot of the header (each field loaded atomically; the
    /// snapshot as a whole is not atomic).
    pub fn header(&self) -> RingHeader {
        let w = |off| self.header_word(off).load(Ordering::Acquire);
        RingHeader {
            sq_head: w(field::SQ_HEAD),
            sq_tail: w(field::SQ_TAIL),
            cq_head: w(field::CQ_HEAD),
            cq_tail: w(field::CQ_TAIL),
            sq_entries: w(field::SQ_ENTRIES),
            cq_entries: w(field::CQ_ENTRIES),
            overflow: w(field::OVERFLOW),
            errors: w(field::ERRORS),
        }
    }

    /// Stores `value` into the header word at byte offset `off` (rounded
    /// down to 4, taken modulo the header size). For tests that repair or
    /// sabotage the header.
    pub fn poke_header(&mut self, off: u64, value: u32) {
        let off = (off % size_of::<RingHeader>() as u64) & !3;
        self.header_word(off).store(value, Ordering::Release);
    }

    /// Writes the 8 bytes at byte offset `off` of the ring (rounded down to
    /// 8, taken modulo the ring's size) — header, submissions or
    /// completions alike. For hostile tests: the kernel must cope with
    /// anything here.
    pub fn poke(&mut self, off: u64, value: u64) {
        let off = (off % self.bytes()) & !7;
        let ptr = (self.base + off) as *mut u64;
        // SAFETY: `off` is 8-aligned and inside this ring's region (mapped
        // RW, no Rust object in it, see the module documentation). The
        // kernel accesses the header with 4-byte atomics and the entries
        // by copying; an 8-byte atomic store here is single-copy atomic and
        // cannot fault or alias Rust memory.
        let word = unsafe { AtomicU64::from_ptr(ptr) };
        word.store(value, Ordering::Release);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        LIVE.fetch_and(!(1 << self.core), Ordering::AcqRel);
    }
}

/// Writes a submission with eight volatile word stores (a volatile store of
/// the whole struct may be lowered to byte stores).
///
/// # Safety
/// `slot` must point at a submission slot of a mapped ring (8-aligned).
#[inline]
unsafe fn write_sqe(slot: *mut SqEntry, e: &SqEntry) {
    let r = e.reserved;
    let head = u64::from_le_bytes([e.opcode, e.flags, r[0], r[1], r[2], r[3], r[4], r[5]]);
    let base = slot as *mut u64;
    // SAFETY: inside the 64-byte slot the caller vouches for.
    unsafe {
        base.write_volatile(head);
        base.add(1).write_volatile(e.user_data);
    }
    // A `Nop` has no arguments and the kernel never reads them: its
    // argument words are left as they are.
    if e.opcode == abi::ring::Op::Nop as u8 {
        return;
    }
    for (i, w) in e.args.into_iter().enumerate() {
        // SAFETY: inside the 64-byte slot the caller vouches for.
        unsafe { base.add(2 + i).write_volatile(w) };
    }
}

/// Reads a completion with two volatile word loads.
///
/// # Safety
/// `slot` must point at a completion slot of a mapped ring (8-aligned).
#[inline]
unsafe fn read_cqe(slot: *const CqEntry) -> CqEntry {
    let base = slot as *const u64;
    // SAFETY: inside the 16-byte slot the caller vouches for.
    unsafe { CqEntry { user_data: base.read_volatile(), result: base.add(1).read_volatile() } }
}
