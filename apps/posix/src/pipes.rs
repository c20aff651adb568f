//! Frames, sleeping and waking for pipes ([`libos_posix::pipe::PipeHost`]).
//!
//! **Frames** ([`ShmFrame`]) are 17-page regions from
//! `libos_async::shared::alloc`: mapped now, and shared *writable* with
//! every child forked later (and their children), so a pipe made before a
//! `fork` is one ring for both processes. Page 0 holds the ring's header
//! words and a table of [`PEERS`] environment ids to wake; pages 1..=16 the
//! 64 KiB data area. A process holds at most
//! `libos_async::shared::SHARED_RANGES_MAX` (16) such frames at once, so at
//! most 16 live pipes: the next `pipe` gets `ENFILE`.
//!
//! **Sleeping**: a blocked pipe call sleeps with `SleepOn` on a predicate
//! over the ring's header words ("`head` moved, or no writer is left",
//! ...), built from the conditions the ring hands over, with the deadline
//! as a TSC condition. The kernel evaluates the predicate when it is
//! installed and whenever an event reaches this environment, so a change
//! between the ring's last check and the sleep is never missed.
//!
//! **Waking another environment**: a plain store into shared memory wakes
//! nobody, so every environment holding an end of a frame records its id
//! (+1) in the frame's table when it gets the end (`join`: at `pipe`, and
//! in the fork child), before it could ever set a waiting flag. The side
//! that publishes and finds the flag set (`ring`'s Dekker protocol) sends
//! an `Acall` to every id in the table but its own: the kernel then
//! re-evaluates that environment's sleeping predicate. The table is shared
//! memory, so a peer may fill it with garbage: that costs at most [`PEERS`]
//! refused or spurious `Acall`s per wake-up, nothing else. An environment
//! that finds the table full cannot be woken: it then never sleeps longer
//! than [`FALLBACK_NS`] per wait (a bounded poll), said in the log.

use crate::shmcopy;
use alloc::rc::Rc;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libos_async::vm::Region;
use libos_async::{Pred, sys};
use libos_posix::linux::SysResult;
use libos_posix::linux::errno::{ENFILE, ENOMEM};
use libos_posix::pipe::ring::{Frame, Side};
use libos_posix::pipe::ring::{HEADER_WORDS, Word};
use libos_posix::pipe::{CAPACITY, PipeHost, WaitWord};

/// How long a wait with too many words for one predicate sleeps before
/// the caller checks again (poll of many pipes: a bounded busy-wait), and
/// the longest sleep of an environment missing from a frame's table.
const FALLBACK_NS: u64 = 1_000_000;

/// Slots in a frame's table of environments to wake.
pub const PEERS: usize = 32;

/// Set when this environment could not join some frame's table (full):
/// its waits are then bounded by [`FALLBACK_NS`].
static UNJOINED: AtomicBool = AtomicBool::new(false);

/// A pipe frame in memory shared with children (see the module doc).
pub struct ShmFrame {
    header: &'static [AtomicU64],
    peers: &'static [AtomicU64],
    data: &'static [AtomicU64],
    region: Option<Region>,
}

impl ShmFrame {
    /// A fresh frame: 17 committed pages, marked shared with children.
    pub fn new() -> SysResult<Self> {
        let bytes = PAGE + CAPACITY as u64;
        let region = libos_async::shared::alloc("pipe", bytes).map_err(|e| match e {
            libos_async::abi::Error::QuotaExceeded => ENFILE,
            _ => ENOMEM,
        })?;
        let base = region.base();
        const { assert!((HEADER_WORDS + PEERS) * 8 <= PAGE as usize) };
        // SAFETY: `region` is `bytes` of committed, read-write, page-aligned
        // memory (`shared::alloc` maps every page now), kept mapped until
        // `Drop` releases it after the slices' last use (they are private
        // fields dropped with it). Its contents are only ever accessed as
        // atomics by Rust code, here and by the other environments mapping
        // it (the data area's bulk copies are `shmcopy`'s opaque `rep
        // movs`), so `AtomicU64` views are sound whatever they write.
        let (header, peers, data) = unsafe {
            (
                core::slice::from_raw_parts(base as *const AtomicU64, HEADER_WORDS),
                core::slice::from_raw_parts(
                    (base + HEADER_WORDS as u64 * 8) as *const AtomicU64,
                    PEERS,
                ),
                core::slice::from_raw_parts((base + PAGE) as *const AtomicU64, CAPACITY / 8),
            )
        };
        Ok(ShmFrame { header, peers, data, region: Some(region) })
    }
}

const PAGE: u64 = libos_async::abi::PAGE_SIZE;

impl Drop for ShmFrame {
    fn drop(&mut self) {
        // Our hold ends; other environments keep the frames they map.
        if let Some(r) = self.region.take() {
            let _ = libos_async::shared::release(r);
        }
    }
}

impl Frame for ShmFrame {
    fn capacity(&self) -> usize {
        CAPACITY
    }
    fn load(&self, w: Word) -> u64 {
        self.header[w as usize].load(Ordering::SeqCst)
    }
    fn store(&self, w: Word, v: u64) {
        self.header[w as usize].store(v, Ordering::SeqCst)
    }
    fn swap(&self, w: Word, v: u64) -> u64 {
        self.header[w as usize].swap(v, Ordering::SeqCst)
    }
    fn fetch_add(&self, w: Word, d: u64) -> u64 {
        self.header[w as usize].fetch_add(d, Ordering::SeqCst)
    }
    fn compare_exchange(&self, w: Word, old: u64, new: u64) -> bool {
        self.header[w as usize]
            .compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
    fn copy_out(&self, off: usize, buf: &mut [u8]) {
        shmcopy::copy_out(self.data, off, buf)
    }
    fn copy_in(&self, off: usize, data: &[u8]) {
        shmcopy::copy_in(self.data, off, data)
    }
    fn word_addr(&self, w: Word) -> u64 {
        &self.header[w as usize] as *const AtomicU64 as u64
    }
    fn peers(&self) -> &[AtomicU64] {
        self.peers
    }
}

/// This environment's entry in a frame's table.
fn my_tag() -> u64 {
    u64::from(libos_async::info().env_id) + 1
}

/// The runtime's [`PipeHost`].
pub struct PipeGlue {
    /// TSC at the monotonic clock's zero (as the runtime's `Clk`).
    pub tsc0: u64,
    /// TSC frequency.
    pub hz: u64,
}

impl PipeGlue {
    fn tsc_at(&self, ns: u64) -> u64 {
        let ticks = u128::from(ns) * u128::from(self.hz) / 1_000_000_000;
        self.tsc0.saturating_add(ticks.min(u128::from(u64::MAX)) as u64)
    }
    fn now_ns(&self) -> u64 {
        let d = sys::rdtsc().saturating_sub(self.tsc0);
        (u128::from(d) * 1_000_000_000 / u128::from(self.hz.max(1))) as u64
    }
}

impl PipeHost for PipeGlue {
    fn wait(&mut self, words: &[WaitWord], deadline_ns: Option<u64>) {
        let mut pred: Option<Pred> = None;
        for w in words {
            let q =
                if w.ne { Pred::word_ne(w.addr, w.value) } else { Pred::word_eq(w.addr, w.value) };
            pred = Some(match pred {
                None => q,
                Some(p) => p.either(q),
            });
        }
        let deadline = match pred {
            Some(p) if p.is_valid() && !UNJOINED.load(Ordering::Relaxed) => deadline_ns,
            // Nothing to watch, or too much for one predicate: wake on time.
            _ => {
                pred = None;
                let soon = self.now_ns().saturating_add(FALLBACK_NS);
                Some(deadline_ns.map_or(soon, |d| d.min(soon)))
            }
        };
        if let Some(d) = deadline {
            let t = Pred::deadline(self.tsc_at(d));
            pred = Some(match pred {
                None => t,
                Some(p) => p.either(t),
            });
        }
        let ok = pred.is_some_and(|p| p.is_valid() && p.sleep().is_ok());
        if !ok {
            let _ = sys::yield_now();
        }
    }

    fn new_frame(&mut self) -> SysResult<Rc<dyn Frame>> {
        Ok(Rc::new(ShmFrame::new()?))
    }

    fn wake(&mut self, frame: &dyn Frame, _side: Side) {
        // Sleepers of the other environments (ours is this vCPU, awake).
        // Bounded by the table's size whatever a peer wrote there.
        let me = my_tag();
        for slot in frame.peers() {
            let tag = slot.load(Ordering::SeqCst);
            if tag != 0 && tag != me && tag <= u64::from(u32::MAX) + 1 {
                // A gone or unwilling environment refuses: nothing to do.
                let _ = sys::acall(tag - 1, 0, 0);
            }
        }
    }

    fn join(&mut self, frame: &dyn Frame) {
        let me = my_tag();
        let peers = frame.peers();
        if peers.is_empty() || peers.iter().any(|s| s.load(Ordering::SeqCst) == me) {
            return;
        }
        // One attempt per slot: a peer racing us for slots cannot make us spin.
        let joined = peers
            .iter()
            .any(|s| s.compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst).is_ok());
        if !joined && !UNJOINED.swap(true, Ordering::Relaxed) {
            crate::glue::log_line("posix: a pipe's wake-up table is full: its waits poll");
        }
    }

    fn leave(&mut self, frame: &dyn Frame) {
        let me = my_tag();
        for s in frame.peers() {
            let _ = s.compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}
