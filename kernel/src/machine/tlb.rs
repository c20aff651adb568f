//! TLB consistency across cores: PCIDs and shootdowns.
//!
//! # PCIDs
//!
//! When CPUID offers PCIDs, every environment's address space is tagged with
//! PCID `id % 4095 + 1` (0 is the kernel's own tables), and switching address
//! spaces does not flush: a core keeps, per PCID, the id of the environment
//! whose translations it may hold (`PCID_OWNER`, this module's
//! `cpu_local!`). Loading an address space whose PCID this core last used
//! for the same environment sets CR3's
//! no-flush bit; anything else (first use, a PCID reused by a newer
//! environment, or one invalidated by a shootdown while not loaded) loads
//! without it, which drops every translation of that PCID on this core.
//! Without PCIDs every CR3 load flushes, and nothing lingers.
//!
//! # Shootdown protocol
//!
//! Every environment keeps `active_cores`: the cores that may hold its
//! translations. A core sets its bit *before* loading the address space; with
//! PCIDs the bit stays set after the core moves on (it may still cache
//! entries: "lazily left") until a shootdown clears it; without PCIDs it is
//! cleared once another CR3 is loaded.
//!
//! An operation that removes or reduces translations (`unmap`, `protect` to
//! fewer rights, grant revocation, an owner's death) runs, holding the
//! address space's lock:
//!
//! 1. edit the page-table entries;
//! 2. a full fence, then read `active_cores` (a core that sets its bit after
//!    this read loads CR3 after the edit, so it cannot cache the old entry);
//! 3. invalidate locally, write the request into each other target's
//!    [`FlushInbox`] slot for this core, set this core's bit in the target's
//!    pending mask, send one IPI each, and wait until every target has
//!    acknowledged this request's generation;
//! 4. only then release the frames (the caller removes the reverse mappings,
//!    after which a frame may be freed and reused).
//!
//! # Why an inbox and not a queue
//!
//! A request cannot be lost or refused: each core has, in every other core's
//! [`FlushInbox`], one slot of its own. A core makes one shootdown at a time
//! (it waits for it to complete, and nothing it does while waiting starts
//! another), so the slot is free whenever it writes it; the target finds it
//! through an atomic bit mask, which any number of requests coalesce into,
//! and the IPI only says "look". No other traffic — wake-ups, pings, work
//! — shares this path, so no flood of anything can delay or drop it.
//!
//! A target that has the address space loaded invalidates the pages
//! (`invlpg`, or a full flush of its PCID above [`FULL_FLUSH_THRESHOLD`]
//! pages); one that only caches it lazily forgets the PCID (its next load
//! flushes) and leaves the set. The handler runs in interrupt context and
//! never waits.
//!
//! No deadlock: the waiting core spins with interrupts off but keeps serving
//! its own inbox ([`serve_flushes`]), and so does a core spinning for an
//! address-space lock (`env::lock_serving_mailbox`, through
//! `mailbox::serve_urgent`, which serves this inbox first) or for room in a
//! mailbox queue.
//!
//! This module knows an address space only as a [`Space`] (id, root,
//! active-core set), so it sits below the mailboxes and the environments.
//! Two cores shooting at each other both answer each other's request while
//! they wait; a halted target is woken by the IPI; a target inside its own
//! IPI handler finds the bit on its next drain (the IPI stays pending until
//! its EOI).

use super::paging;
use super::percpu::{MAX_CPUS, PerCore, cpu, cpu_local, current_index, online_cpus, this_cpu};
use super::time::Deadline;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use kernel::ownership::EnvId;

/// Above this many pages a shootdown flushes the whole address space.
pub const FULL_FLUSH_THRESHOLD: u64 = 64;

const NUM_PCIDS: usize = 4096;
const CR3_NO_FLUSH: u64 = 1 << 63;

static PCID_ENABLED: AtomicBool = AtomicBool::new(false);

cpu_local! {
    /// Per PCID, the environment whose translations this core may cache.
    static PCID_OWNER: Vec<EnvId> = Vec::new();
}

/// Each core's inbox of shootdown requests (other cores write it).
static INBOXES: PerCore<FlushInbox> = PerCore::new();

/// Each core's generation of the last shootdown it made (only that core
/// writes its entry; targets compare against the copy in their inbox).
static GENERATIONS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Whether address spaces are tagged with PCIDs.
pub fn pcids_enabled() -> bool {
    PCID_ENABLED.load(Ordering::Relaxed)
}

/// Enables PCIDs on this core if the CPU has them (all cores agree: the BSP
/// decides from CPUID and the APs follow), and sets up this core's PCID
/// owner table and shootdown inbox. Call on core `index` once its per-core
/// state exists, before it loads any environment's address space.
pub fn init_this_cpu(index: usize, bsp: bool) {
    if bsp {
        let has = raw_cpuid::CpuId::new().get_feature_info().is_some_and(|f| f.has_pcid());
        PCID_ENABLED.store(has, Ordering::Relaxed);
    }
    if pcids_enabled() {
        // SAFETY: CR3's PCID field is 0 (the boot tables are loaded with a
        // page-aligned root), which the SDM requires before setting PCIDE.
        unsafe {
            use x86_64::registers::control::{Cr4, Cr4Flags};
            Cr4::update(|f| f.insert(Cr4Flags::PCID));
        }
    }
    PCID_OWNER.with(|owner| *owner = vec![EnvId::NONE; NUM_PCIDS]);
    INBOXES.install(index, FlushInbox::default());
}

/// The PCID of environment `id` (0 without PCIDs).
pub fn pcid_of(id: EnvId) -> u64 {
    if pcids_enabled() { u64::from(id.raw() % (NUM_PCIDS as u32 - 1)) + 1 } else { 0 }
}

/// Loads `space` on this core, flushing only if this core's cached
/// translations for its PCID may belong to someone else.
pub fn load(space: &Space) {
    let root = space.root;
    if !pcids_enabled() {
        paging::load_cr3(root);
        return;
    }
    let pcid = pcid_of(space.id);
    let fresh = PCID_OWNER.with(|owner| {
        let slot = &mut owner[pcid as usize];
        let fresh = *slot == space.id;
        *slot = space.id;
        fresh
    });
    paging::load_cr3(root | pcid | if fresh { CR3_NO_FLUSH } else { 0 });
}

/// Loads the kernel's own tables (an idle core), keeping cached PCIDs.
pub fn load_kernel() {
    let no_flush = if pcids_enabled() { CR3_NO_FLUSH } else { 0 };
    paging::load_cr3(paging::kernel_cr3() | no_flush);
}

/// What this module needs to know of an address space (an environment's):
/// its PCID owner id, its page-table root and the set of cores that may
/// cache its translations. It names no environment type, so the
/// environment layer sits above this one.
#[derive(Clone, Copy)]
pub struct Space<'a> {
    /// The environment id (its PCID is derived from it).
    pub id: EnvId,
    /// Physical address of its PML4 (CR3 without flags).
    pub root: u64,
    /// Cores that may hold its translations (bit per core).
    pub active_cores: &'a AtomicU64,
}

/// What a shootdown invalidates.
#[derive(Clone, Copy, Debug)]
pub struct Flush {
    /// First page.
    pub start: u64,
    /// Number of pages (above [`FULL_FLUSH_THRESHOLD`]: everything).
    pub pages: u64,
}

impl Flush {
    /// One page.
    pub fn page(va: u64) -> Flush {
        Flush { start: va, pages: 1 }
    }

    /// The whole address space.
    pub fn everything() -> Flush {
        Flush { start: 0, pages: u64::MAX }
    }
}

/// One core's slot in another core's [`FlushInbox`]: the request it made
/// last and the target's acknowledgement of it.
struct FlushSlot {
    /// The requesting core's generation of this request (written last).
    request: AtomicU64,
    /// The generation the target has carried out (written by the target).
    done: AtomicU64,
    /// The environment whose translations go.
    id: AtomicU32,
    /// Its `active_cores`; the requester keeps it alive until `done`
    /// reaches `request`.
    active_cores: AtomicPtr<AtomicU64>,
    /// Physical root of its address space.
    root: AtomicU64,
    /// First page.
    start: AtomicU64,
    /// Page count (above [`FULL_FLUSH_THRESHOLD`]: everything).
    pages: AtomicU64,
}

/// The shootdown requests addressed to one core: a slot per requesting
/// core and a bit mask of the slots holding a new request. Never full.
pub struct FlushInbox {
    slots: [FlushSlot; MAX_CPUS],
    pending: AtomicU64,
}

impl Default for FlushInbox {
    fn default() -> Self {
        FlushInbox {
            slots: [const {
                FlushSlot {
                    request: AtomicU64::new(0),
                    done: AtomicU64::new(0),
                    id: AtomicU32::new(0),
                    active_cores: AtomicPtr::new(core::ptr::null_mut()),
                    root: AtomicU64::new(0),
                    start: AtomicU64::new(0),
                    pages: AtomicU64::new(0),
                }
            }; MAX_CPUS],
            pending: AtomicU64::new(0),
        }
    }
}

impl FlushInbox {
    /// Whether a request waits to be carried out.
    pub fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) != 0
    }
}

/// Invalidates `flush` of the address space `space` on every core that may
/// cache it, and returns once all of them have. Cannot fail: see the module
/// docs.
pub fn shootdown(space: &Space, flush: Flush) {
    core::sync::atomic::fence(Ordering::SeqCst);
    let me = this_cpu();
    let cores = space.active_cores.load(Ordering::SeqCst);
    if cores & (1 << me.index) != 0 {
        flush_here(space, flush);
    }
    let targets = cores & !(1 << me.index) & online_mask();
    if targets == 0 {
        return;
    }
    // Only shootdowns that reach other cores (a local flush is not traced).
    super::ktrace::record(kernel::trace::Kind::Shootdown, space.id.raw(), targets);
    let generation = GENERATIONS[me.index].fetch_add(1, Ordering::Relaxed) + 1;
    for core in bits(targets) {
        let (Some(target), Some(inbox)) = (cpu(core), INBOXES.get(core)) else { continue };
        let slot = &inbox.slots[me.index];
        slot.id.store(space.id.raw(), Ordering::Relaxed);
        slot.active_cores
            .store(core::ptr::from_ref(space.active_cores).cast_mut(), Ordering::Relaxed);
        slot.root.store(space.root, Ordering::Relaxed);
        slot.start.store(flush.start, Ordering::Relaxed);
        slot.pages.store(flush.pages, Ordering::Relaxed);
        slot.request.store(generation, Ordering::Release);
        inbox.pending.fetch_or(1 << me.index, Ordering::AcqRel);
        super::apic::send_ipi(target.apic_id, super::trap::vectors::MAILBOX);
        super::ktrace::record(
            kernel::trace::Kind::IpiSend,
            0,
            core as u64 | u64::from(super::trap::vectors::MAILBOX) << 32,
        );
        me.flush_ipis_sent.fetch_add(1, Ordering::Relaxed);
    }
    // A target can be slow (a bounded system call with interrupts off, or
    // its vCPU thread descheduled by the host); correctness requires
    // waiting, so warn and keep waiting. A core that never answers is a
    // kernel bug.
    let warn_at = Deadline::after_ms(5_000);
    let give_up_at = Deadline::after_ms(120_000);
    let mut warned = false;
    for core in bits(targets) {
        let Some(inbox) = INBOXES.get(core) else { continue };
        let slot = &inbox.slots[me.index];
        while slot.done.load(Ordering::Acquire) != generation {
            // Answer the others' shootdowns meanwhile (two cores may be
            // shooting at each other).
            serve_flushes();
            super::cpu::pause();
            if !warned && warn_at.passed() {
                warned = true;
                log::warn!("TLB shootdown for env {}: core {core} slow to answer", space.id);
            }
            assert!(!give_up_at.passed(), "TLB shootdown to core {core} not answered in 2 min");
        }
    }
}

fn online_mask() -> u64 {
    let n = online_cpus();
    if n >= 64 { u64::MAX } else { (1 << n) - 1 }
}

fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        (mask != 0).then(|| {
            let bit = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            bit
        })
    })
}

/// Carries out every shootdown request waiting for this core. Called by the
/// mailbox IPI handler and by every loop that waits with interrupts off.
pub fn serve_flushes() {
    let Some(inbox) = INBOXES.get(current_index()) else {
        return; // this core is still coming up: nobody can target it yet
    };
    if !inbox.has_pending() {
        return;
    }
    let me = this_cpu();
    for from in bits(inbox.pending.swap(0, Ordering::AcqRel)) {
        let slot = &inbox.slots[from];
        let generation = slot.request.load(Ordering::Acquire);
        let active_cores = slot.active_cores.load(Ordering::Relaxed);
        let flush = Flush {
            start: slot.start.load(Ordering::Relaxed),
            pages: slot.pages.load(Ordering::Relaxed),
        };
        // SAFETY: the requesting core keeps the environment (whose
        // `active_cores` this is) borrowed until it sees `done` reach
        // `generation`, which is stored only below.
        let active_cores = unsafe { &*active_cores };
        let space = Space {
            id: EnvId(slot.id.load(Ordering::Relaxed)),
            root: slot.root.load(Ordering::Relaxed),
            active_cores,
        };
        flush_here(&space, flush);
        super::ktrace::record(kernel::trace::Kind::ShootdownServed, space.id.raw(), from as u64);
        me.flush_ipis_received.fetch_add(1, Ordering::Relaxed);
        slot.done.store(generation, Ordering::Release);
    }
}

/// Carries out a shootdown request on this core (for another core, or for
/// the requesting core itself).
fn flush_here(space: &Space, flush: Flush) {
    let me = this_cpu();
    let root = space.root;
    if paging::current_cr3() == root {
        if flush.pages > FULL_FLUSH_THRESHOLD {
            // Reloading without the no-flush bit drops this PCID's entries.
            paging::load_cr3(root | pcid_of(space.id));
        } else {
            for i in 0..flush.pages {
                paging::flush_page(flush.start + i * abi::PAGE_SIZE);
            }
        }
        return;
    }
    // Not loaded here: forget the PCID so the next load flushes, and leave
    // the set of cores that may cache this address space.
    if pcids_enabled() {
        let pcid = pcid_of(space.id) as usize;
        PCID_OWNER.with(|owner| {
            if owner[pcid] == space.id {
                owner[pcid] = EnvId::NONE;
            }
        });
    }
    space.active_cores.fetch_and(!(1 << me.index), Ordering::SeqCst);
}
