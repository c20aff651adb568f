//! TLB consistency across cores: PCIDs and shootdowns.
//!
//! # PCIDs
//!
//! When CPUID offers PCIDs, every environment's address space is tagged with
//! PCID `id % 4095 + 1` (0 is the kernel's own tables), and switching address
//! spaces does not flush: a core keeps, per PCID, the id of the environment
//! whose translations it may hold (`pcid_owner`). Loading an address space
//! whose PCID this core last used for the same environment sets CR3's
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
//! 3. invalidate locally, post a [`Message::FlushTlb`] to exactly the other
//!    cores in the set (one IPI each, whatever the number of pages) and wait
//!    for every acknowledgement;
//! 4. only then release the frames (the caller removes the reverse mappings,
//!    after which a frame may be freed and reused).
//!
//! A target that has the address space loaded invalidates the pages
//! (`invlpg`, or a full flush of its PCID above [`FULL_FLUSH_THRESHOLD`]
//! pages); one that only caches it lazily forgets the PCID (its next load
//! flushes) and leaves the set. The handler runs in interrupt context and
//! never waits.
//!
//! No deadlock: the waiting core spins with interrupts off but keeps serving
//! its own urgent mailbox (`mailbox::wait_serving`), and so does a core
//! spinning for an address-space lock (`env::lock_serving_mailbox`). Two
//! cores shooting at each other both answer each other's request while they
//! wait; a halted target is woken by the IPI; a target inside its own IPI
//! handler finds the message on its next drain (the IPI stays pending until
//! its EOI).

use super::env::{self, Env};
use super::mailbox::{self, Message};
use super::paging;
use super::percpu::{online_cpus, this_cpu};
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

/// Above this many pages a shootdown flushes the whole address space.
pub const FULL_FLUSH_THRESHOLD: u64 = 64;

const NUM_PCIDS: usize = 4096;
const CR3_NO_FLUSH: u64 = 1 << 63;

static PCID_ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether address spaces are tagged with PCIDs.
pub fn pcids_enabled() -> bool {
    PCID_ENABLED.load(Ordering::Relaxed)
}

/// Enables PCIDs on this core if the CPU has them (all cores agree: the BSP
/// decides from CPUID and the APs follow). Returns the per-core PCID owner
/// table.
pub fn init_this_cpu(bsp: bool) -> Vec<u32> {
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
    vec![0; NUM_PCIDS]
}

/// The PCID of environment `id` (0 without PCIDs).
pub fn pcid_of(id: u32) -> u64 {
    if pcids_enabled() { u64::from(id % (NUM_PCIDS as u32 - 1)) + 1 } else { 0 }
}

/// Loads `env`'s address space on this core, flushing only if this core's
/// cached translations for its PCID may belong to someone else.
pub fn load(env: &Env) {
    let root = env.aspace_cr3();
    if !pcids_enabled() {
        paging::load_cr3(root);
        return;
    }
    let pcid = pcid_of(env.id);
    let fresh = this_cpu().pcid_owner.with(|owner| {
        let slot = &mut owner[pcid as usize];
        let fresh = *slot == env.id;
        *slot = env.id;
        fresh
    });
    paging::load_cr3(root | pcid | if fresh { CR3_NO_FLUSH } else { 0 });
}

/// Loads the kernel's own tables (an idle core), keeping cached PCIDs.
pub fn load_kernel() {
    let no_flush = if pcids_enabled() { CR3_NO_FLUSH } else { 0 };
    paging::load_cr3(paging::kernel_cr3() | no_flush);
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
}

/// Invalidates `flush` of `env`'s address space on every core that may
/// cache it, and returns once all of them have.
pub fn shootdown(env: &Env, flush: Flush) {
    core::sync::atomic::fence(Ordering::SeqCst);
    let me = this_cpu();
    let cores = env.active_cores.load(Ordering::SeqCst);
    if cores & (1 << me.index) != 0 {
        flush_here(env.id, env.aspace_cr3(), flush);
    }
    let acks = &me.flush_acks;
    let mut expect = acks.load(Ordering::Acquire);
    for core in (0..online_cpus()).filter(|&c| c != me.index && cores & (1 << c) != 0) {
        let msg = Message::FlushTlb {
            env: env.id,
            root: env.aspace_cr3(),
            start: flush.start,
            pages: flush.pages,
        };
        if mailbox::post(core, msg, Some(acks)).is_ok() {
            expect += 1;
            me.flush_ipis_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    // A target can be slow (a long system call on it, or its vCPU thread
    // descheduled by the host); correctness requires waiting, so warn and
    // keep waiting. A core that never answers is a kernel bug.
    if mailbox::wait_serving(acks, expect, 5_000).is_err() {
        log::warn!("TLB shootdown for env {}: acknowledgements slow, still waiting", env.id);
        if let Err(e) = mailbox::wait_serving(acks, expect, 120_000) {
            panic!("TLB shootdown for env {} not acknowledged in 2 minutes: {e:?}", env.id);
        }
    }
}

/// Carries out a shootdown request on this core (from the mailbox, or for
/// the requesting core itself).
pub fn flush_here(env_id: u32, root: u64, flush: Flush) {
    let me = this_cpu();
    if paging::current_cr3() == root {
        if flush.pages > FULL_FLUSH_THRESHOLD {
            // Reloading without the no-flush bit drops this PCID's entries.
            paging::load_cr3(root | pcid_of(env_id));
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
        let pcid = pcid_of(env_id) as usize;
        me.pcid_owner.with(|owner| {
            if owner[pcid] == env_id {
                owner[pcid] = 0;
            }
        });
    }
    if let Some(env) = env::lookup(env_id) {
        env.active_cores.fetch_and(!(1 << me.index), Ordering::SeqCst);
    }
}
