//! The pager: this library OS's answer to the kernel's memory
//! repossession (`abi::repossess`).
//!
//! A [`Pager`] watches the regions it is given ([`Pager::track`]) and a
//! **free pool** of frames it holds unmapped ([`Pager::fill_pool`],
//! [`Pager::pool_take`]). It keeps for each mapped page of its regions an
//! age and whether it was ever written, from the kernel's accessed and
//! dirty bits ([`Pager::scan`], the `PageAccess` call), and orders them by
//! its **policy** ([`victim_order`]):
//!
//! 1. pool frames (nothing in them);
//! 2. *zero pages*: pages a region filled on a fault but that were never
//!    written (their dirty bit is clear), oldest first;
//! 3. the other pages, least recently used first: a clock sweep — each
//!    scan reads and clears every page's reference (accessed) bit; a page
//!    referenced since the last sweep gets age 0, any other one ages by
//!    one, and the oldest go first.
//!
//! The same order is the **repossession list** it publishes
//! ([`Pager::publish`]): the kernel takes from it, in order, what the
//! pager does not give back in time. A request (`REPOSSESS_REQUEST`) is
//! answered at once by [`Pager::poll`]: frames are given back in the same
//! order (a pool frame is freed; a page is unmapped and freed with
//! [`crate::vm::evict()`]) until `RepossessStatus` says nothing is owed; a
//! frame the kernel took (`REPOSSESSED`) is forgotten
//! ([`crate::vm::forget_taken`]). After either the pager scans and
//! publishes again.
//!
//! **Data loss.** A page given back or taken loses its contents: the next
//! touch of a lazily filled page maps a fresh zero frame. The policy gives
//! zero pages first, so data is lost only when they and the pool do not
//! cover the demand. Pages of regions that are not tracked are never
//! listed nor given back.
//!
//! The pager is one object, used from one vCPU at a time (it is not
//! `Sync`); other vCPUs may keep touching the tracked regions meanwhile (a
//! page evicted under them faults in again as zero).

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use abi::event::{REPOSSESS_REQUEST, REPOSSESSED};
use abi::repossess::{ACCESS_SCAN_MAX, SETTLED};
use abi::{Error, PAGE_SIZE};

use crate::cpu::{Events, Received};
use crate::sys;
use crate::vm::{self, Region};

/// What the pager knows of one mapped page of a tracked region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// The page.
    pub va: u64,
    /// The frame behind it.
    pub frame: u64,
    /// Sweeps since it was last referenced (0: referenced in the last).
    pub age: u32,
    /// Written since it was mapped (its dirty bit).
    pub written: bool,
}

/// One sweep's update of a page: `accessed` and `dirty` bits just read
/// (and the accessed bit cleared), `old` the page's state before (if it was
/// known with the same frame).
pub fn sweep(old: Option<&Page>, va: u64, frame: u64, accessed: bool, dirty: bool) -> Page {
    let (age, written) = match old.filter(|p| p.frame == frame) {
        Some(p) => (if accessed { 0 } else { p.age.saturating_add(1) }, p.written || dirty),
        None => (if accessed { 0 } else { 1 }, dirty),
    };
    Page { va, frame, age, written }
}

/// The policy: what to give up first. Pool frames, then pages never
/// written (oldest first), then written pages least recently used first;
/// ties by address. Returns frame numbers with, for pages, their address
/// (`None` for a pool frame).
pub fn victim_order(pool: &[u64], pages: &[Page]) -> Vec<(u64, Option<u64>)> {
    let mut order: Vec<&Page> = pages.iter().collect();
    order.sort_by_key(|p| (p.written, core::cmp::Reverse(p.age), p.va));
    pool.iter()
        .map(|&f| (f, None))
        .chain(order.into_iter().map(|p| (p.frame, Some(p.va))))
        .collect()
}

/// What the pager did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests received.
    pub requests: u64,
    /// Frames given back (pool frames and pages).
    pub given: u64,
    /// Of those, pages of regions (their contents lost).
    pub pages_given: u64,
    /// Frames the kernel took by force.
    pub taken: u64,
    /// Demands settled.
    pub settled: u64,
    /// Events lost (the queue overflowed); a full check followed.
    pub lost: u64,
}

/// The pager (see the module documentation).
pub struct Pager {
    regions: Vec<(u64, u64)>,
    pool: Vec<u64>,
    pages: Vec<Page>,
    list: Box<[u64]>,
    events: Events,
    /// Whether to answer requests (a test of the kernel's forced path
    /// turns it off).
    pub comply: bool,
    stats: Stats,
}

impl Pager {
    /// A pager whose repossession list holds at most `list_max` frames
    /// (at most `abi::repossess::LIST_MAX`). It sees events from now on.
    pub fn new(list_max: usize) -> Result<Pager, Error> {
        if list_max == 0 || list_max as u64 > abi::repossess::LIST_MAX {
            return Err(Error::InvalidArgument);
        }
        // Written now, so its pages are mapped when the kernel reads them.
        let list = vec![0u64; list_max].into_boxed_slice();
        Ok(Pager {
            regions: Vec::new(),
            pool: Vec::new(),
            pages: Vec::new(),
            list,
            events: Events::from_now(),
            comply: true,
            stats: Stats::default(),
        })
    }

    /// What it did so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The pages it knows, from the last scan (by address).
    pub fn pages(&self) -> &[Page] {
        &self.pages
    }

    /// The frames of its free pool.
    pub fn pool(&self) -> &[u64] {
        &self.pool
    }

    /// Watches `region`'s pages.
    pub fn track(&mut self, region: &Region) {
        self.regions.push((region.base(), region.end()));
    }

    /// Allocates `n` frames into the free pool.
    pub fn fill_pool(&mut self, n: usize) -> Result<(), Error> {
        for _ in 0..n {
            self.pool.push(sys::frame_alloc(None)?);
        }
        Ok(())
    }

    /// Takes a frame from the free pool (zeroed when it was allocated).
    pub fn pool_take(&mut self) -> Option<u64> {
        self.pool.pop()
    }

    /// One sweep over the tracked regions: reads and clears the accessed
    /// bits, updates every mapped page's age and written flag.
    pub fn scan(&mut self) -> Result<(), Error> {
        let old = core::mem::take(&mut self.pages);
        let mut bits = [0u64; (ACCESS_SCAN_MAX / 32) as usize];
        for &(base, end) in &self.regions {
            let mut va = base;
            while va < end {
                let n = ((end - va) / PAGE_SIZE).min(ACCESS_SCAN_MAX);
                sys::page_access(va, n, &mut bits, false)?;
                for i in 0..n {
                    let at = va + i * PAGE_SIZE;
                    let Some(frame) = vm::frame_at(at) else { continue };
                    let b = bits[(i / 32) as usize] >> ((i % 32) * 2);
                    let prev = old.binary_search_by_key(&at, |p| p.va).ok().map(|k| &old[k]);
                    self.pages.push(sweep(prev, at, frame, b & 1 != 0, b & 2 != 0));
                }
                va += n * PAGE_SIZE;
            }
        }
        self.pages.sort_unstable_by_key(|p| p.va);
        Ok(())
    }

    /// Publishes the repossession list in the policy's order (as much of
    /// it as fits). Returns its length.
    pub fn publish(&mut self) -> Result<usize, Error> {
        let order = victim_order(&self.pool, &self.pages);
        let n = order.len().min(self.list.len());
        // Rewritten in place: the kernel may read a mix of the old and the
        // new list, whose entries it checks one by one anyway.
        for (slot, (frame, _)) in self.list.iter_mut().zip(&order) {
            *slot = *frame;
        }
        sys::repossess_list(&self.list[..n])?;
        Ok(n)
    }

    /// Withdraws the list (before dropping the pager).
    pub fn withdraw(&mut self) -> Result<(), Error> {
        sys::repossess_list(&[]).map(|_| ())
    }

    /// Handles the events posted since the last call: answers requests,
    /// forgets frames the kernel took, counts settled demands; scans and
    /// publishes again if anything changed. Returns whether something
    /// happened.
    pub fn poll(&mut self) -> Result<bool, Error> {
        let mut changed = false;
        while let Some(r) = self.events.next() {
            match r {
                Received::Event(e) if e.kind == REPOSSESS_REQUEST => {
                    self.stats.requests += 1;
                    if self.comply {
                        self.give_back()?;
                    }
                    changed = true;
                }
                Received::Event(e) if e.kind == REPOSSESSED && e.data[0] == SETTLED => {
                    self.stats.settled += 1;
                    changed = true;
                }
                Received::Event(e) if e.kind == REPOSSESSED => {
                    self.forget(e.data[0]);
                    self.stats.taken += 1;
                    changed = true;
                }
                Received::Event(_) => {}
                Received::Lost(n) => {
                    self.stats.lost += n;
                    self.reconcile();
                    changed = true;
                }
            }
        }
        if changed {
            self.scan()?;
            self.publish()?;
        }
        Ok(changed)
    }

    /// Gives frames back in the policy's order until nothing is owed.
    pub fn give_back(&mut self) -> Result<u64, Error> {
        let mut given = 0;
        let order = victim_order(&self.pool, &self.pages);
        let mut owed = sys::repossess_status()?;
        for (frame, va) in order {
            if owed == 0 {
                break;
            }
            match va {
                None => {
                    sys::frame_free(frame)?;
                    self.pool.retain(|&f| f != frame);
                }
                Some(va) => {
                    // Gone meanwhile (taken, released): skip it.
                    if vm::frame_at(va) != Some(frame) || vm::evict(va).is_err() {
                        continue;
                    }
                    self.stats.pages_given += 1;
                }
            }
            given += 1;
            owed = sys::repossess_status()?;
        }
        self.stats.given += given;
        Ok(given)
    }

    /// The kernel took `frame`: forget it wherever it was.
    fn forget(&mut self, frame: u64) {
        let before = self.pool.len();
        self.pool.retain(|&f| f != frame);
        if self.pool.len() != before {
            return;
        }
        if let Some(k) = self.pages.iter().position(|p| p.frame == frame) {
            let page = self.pages.remove(k);
            vm::forget_taken(page.va, frame);
        }
    }

    /// After lost events: drops every pool frame and page whose frame is
    /// not ours any more.
    fn reconcile(&mut self) {
        let me = u64::from(crate::info().env_id);
        let ours = |f: u64| {
            sys::frame_status(f)
                .is_ok_and(|s| s.holder() == Some(abi::FrameHolder::Owned) && s.env == me)
        };
        self.pool.retain(|&f| ours(f));
        let gone: Vec<Page> = self.pages.iter().filter(|p| !ours(p.frame)).copied().collect();
        for p in gone {
            vm::forget_taken(p.va, p.frame);
        }
        self.pages.retain(|p| ours(p.frame));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(va: u64, age: u32, written: bool) -> Page {
        Page { va, frame: va / PAGE_SIZE + 100, age, written }
    }

    #[test]
    fn the_policy_gives_pool_then_zero_then_lru() {
        let pages = [
            page(0x1000, 0, true),
            page(0x2000, 5, true),
            page(0x3000, 0, false),
            page(0x4000, 3, false),
            page(0x5000, 2, true),
        ];
        let order: Vec<Option<u64>> = victim_order(&[7, 8], &pages).iter().map(|v| v.1).collect();
        assert_eq!(
            order,
            [None, None, Some(0x4000), Some(0x3000), Some(0x2000), Some(0x5000), Some(0x1000)]
        );
    }

    #[test]
    fn a_sweep_ages_unreferenced_pages_and_remembers_writes() {
        let p = sweep(None, 0x1000, 9, false, false);
        assert_eq!((p.age, p.written), (1, false));
        let p = sweep(Some(&p), 0x1000, 9, false, true);
        assert_eq!((p.age, p.written), (2, true));
        let p = sweep(Some(&p), 0x1000, 9, true, false);
        assert_eq!((p.age, p.written), (0, true));
        // Another frame now: a new page (refilled as zero).
        let p = sweep(Some(&p), 0x1000, 10, false, false);
        assert_eq!((p.age, p.written), (1, false));
    }
}
