//! Who holds each physical frame: the secure binding for memory.
//!
//! The kernel's [`FrameBitmap`](crate::frames::FrameBitmap) says whether a
//! frame is free; this table says, for every frame handed to an environment,
//! who owns it, what it is (a data frame the environment may map, or one of
//! its page-table pages, which it may never map), whom the owner granted it
//! to with which rights, and where it is mapped (the reverse map). Every
//! `map` is checked here first; `free` and `grant` revocation use the reverse
//! map to know what must be unmapped.
//!
//! One [`FrameTable`] holds the records of a subset of frames; the machine
//! layer shards the frame space over several tables, each behind its own
//! lock, so operations on different frames do not contend. Everything here
//! is a pure function of the table's contents and is tested on the host.

use crate::frames::FrameNumber;
use crate::mappingset::MappingSet;
use abi::{Error, Rights};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// An environment's id (never 0: [`EnvId::NONE`] means "no environment").
pub use abi::EnvId;

/// What an allocated frame is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Memory the owner may map, grant and free.
    Data,
    /// A page-table page of the owner's address space: charged to the owner
    /// but never mappable by anyone.
    PageTable,
}

/// One grant: `grantee` may map the frame with at most `rights`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Who may map it.
    pub grantee: EnvId,
    /// With at most these rights.
    pub rights: Rights,
}

/// One mapping of the frame: page `va` in `env`'s address space. Ordered by
/// environment first, so one environment's mappings form a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mapping {
    /// Whose address space.
    pub env: EnvId,
    /// The virtual page.
    pub va: u64,
}

/// Everything known about one allocated frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRecord {
    /// The environment charged for it.
    pub owner: EnvId,
    /// Data or page table.
    pub kind: FrameKind,
    /// Who else may map it.
    pub grants: Vec<Grant>,
    /// Where it is mapped (owner and grantees): a set, so that adding and
    /// removing one of many mappings stays O(log n); a single mapping is
    /// held inline ([`MappingSet`]: no heap trip for the common case).
    pub mappings: MappingSet,
    /// Registered rings using it (the kernel writes into it directly).
    pub pins: u32,
    /// Grantees whose mappings are being taken away (a revoke or a lowered
    /// grant in progress): they may not map the frame until the owner's
    /// call has removed every one of them ([`FrameTable::unmap_step`]).
    pub withdrawing: Vec<EnvId>,
}

/// What [`FrameTable::unmap_step`] asks of its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnmapStep {
    /// Remove these mappings (one environment's), then ask again.
    Unmap(Vec<Mapping>),
    /// Nothing is left to remove.
    Done,
}

/// What [`FrameTable::release_step`] asks of its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseStep {
    /// Remove these mappings (ordered by environment), then ask again.
    Unmap(Vec<Mapping>),
    /// The record is gone: free the frame.
    Released,
}

/// A shard of the frame ownership table.
#[derive(Default, Debug)]
pub struct FrameTable {
    records: BTreeMap<FrameNumber, FrameRecord>,
}

impl FrameTable {
    /// An empty table.
    pub const fn new() -> FrameTable {
        FrameTable { records: BTreeMap::new() }
    }

    /// The record of `frame`, if an environment holds it.
    pub fn get(&self, frame: FrameNumber) -> Option<&FrameRecord> {
        self.records.get(&frame)
    }

    /// Records that `owner` now holds `frame` (just taken from the free pool).
    pub fn insert(&mut self, frame: FrameNumber, owner: EnvId, kind: FrameKind) {
        let previous = self.records.insert(
            frame,
            FrameRecord {
                owner,
                kind,
                grants: Vec::new(),
                mappings: MappingSet::new(),
                pins: 0,
                withdrawing: Vec::new(),
            },
        );
        debug_assert!(previous.is_none(), "frame {frame} recorded twice");
    }

    /// The secure binding: may `env` map `frame` with `rights`?
    pub fn check_map(&self, frame: FrameNumber, env: EnvId, rights: Rights) -> Result<(), Error> {
        let record = self.records.get(&frame).ok_or(Error::NotOwner)?;
        if record.kind == FrameKind::PageTable {
            return Err(if record.owner == env {
                Error::PermissionDenied
            } else {
                Error::NotOwner
            });
        }
        if record.owner == env {
            return Ok(());
        }
        if record.withdrawing.contains(&env) {
            return Err(Error::Busy);
        }
        let grant = record.grants.iter().find(|g| g.grantee == env).ok_or(Error::NotOwner)?;
        if grant.rights.contains(rights) { Ok(()) } else { Err(Error::PermissionDenied) }
    }

    /// Records a mapping that [`check_map`](Self::check_map) allowed.
    pub fn add_mapping(&mut self, frame: FrameNumber, env: EnvId, va: u64) {
        if let Some(r) = self.records.get_mut(&frame) {
            r.mappings.insert(Mapping { env, va });
        }
    }

    /// Forgets a mapping (after the page-table entry was cleared).
    pub fn remove_mapping(&mut self, frame: FrameNumber, env: EnvId, va: u64) {
        if let Some(r) = self.records.get_mut(&frame) {
            r.mappings.remove(&Mapping { env, va });
        }
    }

    /// Frees a data frame: only its owner may, and only once nothing maps it
    /// and no grant is outstanding. On success the record is gone and the
    /// caller returns the frame to the free pool.
    pub fn free(&mut self, frame: FrameNumber, env: EnvId) -> Result<(), Error> {
        let record = self.records.get(&frame).ok_or(Error::NotOwner)?;
        if record.owner != env || record.kind != FrameKind::Data {
            return Err(Error::NotOwner);
        }
        if !record.mappings.is_empty() || !record.grants.is_empty() || record.pins > 0 {
            return Err(Error::Busy);
        }
        self.records.remove(&frame);
        Ok(())
    }

    /// Pins a data frame `env` owns (a registered ring): until unpinned it
    /// cannot be freed and reused under the kernel.
    pub fn pin(&mut self, frame: FrameNumber, env: EnvId) -> Result<(), Error> {
        self.owned_data(frame, env)?.pins += 1;
        Ok(())
    }

    /// Removes one pin of `env`'s frame (no effect if it has none, or if the
    /// frame now belongs to someone else).
    pub fn unpin(&mut self, frame: FrameNumber, env: EnvId) {
        if let Some(r) = self.records.get_mut(&frame)
            && r.owner == env
        {
            r.pins = r.pins.saturating_sub(1);
        }
    }

    /// Drops the record of a page-table frame its address space released.
    pub fn free_page_table(&mut self, frame: FrameNumber) {
        if self.records.get(&frame).is_some_and(|r| r.kind == FrameKind::PageTable) {
            self.records.remove(&frame);
        }
    }

    /// The owner grants `grantee` the right to map `frame` with `rights`
    /// (replacing an earlier grant to the same grantee). A grant that lowers
    /// the rights withdraws the grantee's mappings (they may carry rights
    /// beyond the new grant): the caller then removes them with
    /// [`unmap_step`](Self::unmap_step) until it says `Done`. Granting again
    /// while that is in progress goes on with it.
    pub fn grant(
        &mut self,
        frame: FrameNumber,
        owner: EnvId,
        grantee: EnvId,
        rights: Rights,
    ) -> Result<(), Error> {
        if !rights.is_valid() || rights == Rights::NONE {
            return Err(Error::InvalidArgument);
        }
        let record = self.owned_data(frame, owner)?;
        if grantee == owner {
            return Err(Error::InvalidArgument);
        }
        match record.grants.iter_mut().find(|g| g.grantee == grantee) {
            Some(g) => {
                let lowered = !rights.contains(g.rights);
                g.rights = rights;
                if lowered {
                    Self::withdraw(record, grantee);
                }
            }
            None => record.grants.push(Grant { grantee, rights }),
        }
        Ok(())
    }

    /// Withdraws `grantee`'s grant: it may no longer map the frame, and the
    /// caller removes its mappings with [`unmap_step`](Self::unmap_step)
    /// until it says `Done`. Revoking again while that is in progress goes
    /// on with it; `NoSuchEnv` if there is neither a grant nor a withdrawal.
    pub fn revoke(
        &mut self,
        frame: FrameNumber,
        owner: EnvId,
        grantee: EnvId,
    ) -> Result<(), Error> {
        let record = self.owned_data(frame, owner)?;
        let before = record.grants.len();
        record.grants.retain(|g| g.grantee != grantee);
        if record.grants.len() < before {
            Self::withdraw(record, grantee);
        } else if !record.withdrawing.contains(&grantee) {
            return Err(Error::NoSuchEnv);
        }
        Ok(())
    }

    fn withdraw(record: &mut FrameRecord, grantee: EnvId) {
        if !record.withdrawing.contains(&grantee) {
            record.withdrawing.push(grantee);
        }
    }

    /// The next at most `limit` mappings of a withdrawal of `grantee`'s
    /// rights to `frame` (a revoke or a lowered grant). The caller clears
    /// them from the page tables and calls
    /// [`remove_mapping`](Self::remove_mapping) for each, then asks again; `Done` (and the
    /// withdrawal ends) once none is left, or if none is in progress.
    pub fn unmap_step(&mut self, frame: FrameNumber, grantee: EnvId, limit: usize) -> UnmapStep {
        let Some(record) = self.records.get_mut(&frame) else { return UnmapStep::Done };
        let Some(i) = record.withdrawing.iter().position(|&g| g == grantee) else {
            return UnmapStep::Done;
        };
        let range = Mapping { env: grantee, va: 0 }..=Mapping { env: grantee, va: u64::MAX };
        let batch: Vec<Mapping> = record.mappings.range(range).take(limit).copied().collect();
        if batch.is_empty() {
            record.withdrawing.swap_remove(i);
            return UnmapStep::Done;
        }
        UnmapStep::Unmap(batch)
    }

    /// When `env` dies: removes its grants on other environments' frames,
    /// in time linear in the records only. Its mappings (of its own frames
    /// and of others') are forgotten one by one as the kernel walks its page
    /// tables, in bounded steps, however many there are; a withdrawal in
    /// progress against it stays, and finishes as they go. Its own frames
    /// are handled by [`release_step`](Self::release_step).
    pub fn forget_grants_to(&mut self, env: EnvId) {
        for record in self.records.values_mut() {
            record.grants.retain(|g| g.grantee != env);
        }
    }

    /// One step of releasing a frame of a dead owner, whose own mappings are
    /// already forgotten: ends every grant (so nobody maps it anew), then
    /// returns at most `limit` of the mappings others still have, for the
    /// caller to remove ([`remove_mapping`](Self::remove_mapping)) before
    /// asking again; once none is left the record goes and the caller frees
    /// the frame. `None` if `owner` does not hold it.
    pub fn release_step(
        &mut self,
        frame: FrameNumber,
        owner: EnvId,
        limit: usize,
    ) -> Option<ReleaseStep> {
        let record = self.records.get_mut(&frame).filter(|r| r.owner == owner)?;
        record.grants.clear();
        record.withdrawing.clear();
        if record.mappings.is_empty() {
            self.records.remove(&frame);
            return Some(ReleaseStep::Released);
        }
        Some(ReleaseStep::Unmap(record.mappings.iter().take(limit).copied().collect()))
    }

    fn owned_data(&mut self, frame: FrameNumber, owner: EnvId) -> Result<&mut FrameRecord, Error> {
        match self.records.get_mut(&frame) {
            Some(r) if r.owner == owner && r.kind == FrameKind::Data => Ok(r),
            _ => Err(Error::NotOwner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: EnvId = EnvId(1);
    const B: EnvId = EnvId(2);
    const C: EnvId = EnvId(3);

    fn table() -> FrameTable {
        let mut t = FrameTable::new();
        t.insert(FrameNumber(10), A, FrameKind::Data);
        t.insert(FrameNumber(11), A, FrameKind::PageTable);
        t
    }

    #[test]
    fn only_owner_and_grantees_may_map() {
        let mut t = table();
        assert_eq!(t.check_map(FrameNumber(10), A, Rights::RWX), Ok(()));
        assert_eq!(t.check_map(FrameNumber(10), B, Rights::READ), Err(Error::NotOwner));
        assert_eq!(t.check_map(FrameNumber(99), A, Rights::READ), Err(Error::NotOwner));
        t.grant(FrameNumber(10), A, B, Rights::READ).unwrap();
        assert_eq!(t.check_map(FrameNumber(10), B, Rights::READ), Ok(()));
        assert_eq!(t.check_map(FrameNumber(10), B, Rights::RW), Err(Error::PermissionDenied));
        assert_eq!(t.check_map(FrameNumber(10), C, Rights::READ), Err(Error::NotOwner));
    }

    #[test]
    fn page_tables_are_never_mappable_or_grantable() {
        let mut t = table();
        assert_eq!(t.check_map(FrameNumber(11), A, Rights::READ), Err(Error::PermissionDenied));
        assert_eq!(t.check_map(FrameNumber(11), B, Rights::READ), Err(Error::NotOwner));
        assert_eq!(t.grant(FrameNumber(11), A, B, Rights::READ), Err(Error::NotOwner));
        assert_eq!(t.free(FrameNumber(11), A), Err(Error::NotOwner));
        t.free_page_table(FrameNumber(11));
        assert!(t.get(FrameNumber(11)).is_none());
    }

    #[test]
    fn free_needs_owner_and_no_mappings_or_grants() {
        let mut t = table();
        assert_eq!(t.free(FrameNumber(10), B), Err(Error::NotOwner));
        t.add_mapping(FrameNumber(10), A, 0x40_0000);
        assert_eq!(t.free(FrameNumber(10), A), Err(Error::Busy));
        t.remove_mapping(FrameNumber(10), A, 0x40_0000);
        t.grant(FrameNumber(10), A, B, Rights::READ).unwrap();
        assert_eq!(t.free(FrameNumber(10), A), Err(Error::Busy));
        t.revoke(FrameNumber(10), A, B).unwrap();
        assert_eq!(t.unmap_step(FrameNumber(10), B, 8), UnmapStep::Done);
        assert_eq!(t.free(FrameNumber(10), A), Ok(()));
        assert!(t.get(FrameNumber(10)).is_none());
    }

    /// Runs a withdrawal to the end the way the kernel does, `limit`
    /// mappings per step; returns the mappings in the order removed.
    fn drain(t: &mut FrameTable, frame: FrameNumber, grantee: EnvId, limit: usize) -> Vec<Mapping> {
        let mut removed = Vec::new();
        while let UnmapStep::Unmap(batch) = t.unmap_step(frame, grantee, limit) {
            assert!(!batch.is_empty() && batch.len() <= limit);
            for m in batch {
                assert_eq!(m.env, grantee);
                t.remove_mapping(frame, m.env, m.va);
                removed.push(m);
            }
        }
        removed
    }

    #[test]
    fn revoke_withdraws_the_grantees_mappings_only() {
        let mut t = table();
        t.grant(FrameNumber(10), A, B, Rights::RW).unwrap();
        t.grant(FrameNumber(10), A, C, Rights::READ).unwrap();
        t.add_mapping(FrameNumber(10), A, 0x1000);
        t.add_mapping(FrameNumber(10), B, 0x2000);
        t.add_mapping(FrameNumber(10), B, 0x3000);
        t.add_mapping(FrameNumber(10), C, 0x4000);
        t.revoke(FrameNumber(10), A, B).unwrap();
        // In progress: B may not map, revoking again goes on with it, and
        // the frame cannot be freed while B still maps it.
        assert_eq!(t.check_map(FrameNumber(10), B, Rights::READ), Err(Error::Busy));
        assert_eq!(t.revoke(FrameNumber(10), A, B), Ok(()));
        assert_eq!(t.revoke(FrameNumber(10), B, C), Err(Error::NotOwner));
        let m = drain(&mut t, FrameNumber(10), B, 1);
        assert_eq!(m, [Mapping { env: B, va: 0x2000 }, Mapping { env: B, va: 0x3000 }]);
        assert_eq!(t.check_map(FrameNumber(10), B, Rights::READ), Err(Error::NotOwner));
        assert_eq!(t.revoke(FrameNumber(10), A, B), Err(Error::NoSuchEnv));
        assert_eq!(t.get(FrameNumber(10)).unwrap().mappings.len(), 2, "A's and C's stay");
    }

    #[test]
    fn lowering_a_grant_withdraws_mappings_to_redo() {
        let mut t = table();
        t.grant(FrameNumber(10), A, B, Rights::RW).unwrap();
        t.add_mapping(FrameNumber(10), B, 0x2000);
        t.grant(FrameNumber(10), A, B, Rights::RWX).unwrap();
        assert_eq!(t.unmap_step(FrameNumber(10), B, 8), UnmapStep::Done, "raised: nothing to redo");
        t.grant(FrameNumber(10), A, B, Rights::READ).unwrap();
        assert_eq!(t.check_map(FrameNumber(10), B, Rights::READ), Err(Error::Busy));
        assert_eq!(drain(&mut t, FrameNumber(10), B, 8), [Mapping { env: B, va: 0x2000 }]);
        assert_eq!(t.check_map(FrameNumber(10), B, Rights::READ), Ok(()));
        assert_eq!(t.check_map(FrameNumber(10), B, Rights::RW), Err(Error::PermissionDenied));
        assert_eq!(t.grant(FrameNumber(10), A, A, Rights::READ), Err(Error::InvalidArgument));
        assert_eq!(t.grant(FrameNumber(10), A, B, Rights(8)), Err(Error::InvalidArgument));
        assert_eq!(t.grant(FrameNumber(10), A, B, Rights::NONE), Err(Error::InvalidArgument));
    }

    #[test]
    fn a_withdrawal_of_many_mappings_goes_in_bounded_steps() {
        let mut t = table();
        t.grant(FrameNumber(10), A, B, Rights::READ).unwrap();
        for page in 0..1000u64 {
            t.add_mapping(FrameNumber(10), B, page << 12);
        }
        t.revoke(FrameNumber(10), A, B).unwrap();
        let mut steps = 0;
        while let UnmapStep::Unmap(batch) = t.unmap_step(FrameNumber(10), B, 64) {
            assert!(batch.len() <= 64);
            steps += 1;
            for m in batch {
                t.remove_mapping(FrameNumber(10), m.env, m.va);
            }
        }
        assert_eq!(steps, 1000_usize.div_ceil(64));
        assert_eq!(t.free(FrameNumber(10), A), Ok(()));
    }

    #[test]
    fn a_dying_grantee_ends_its_withdrawal() {
        let mut t = table();
        t.grant(FrameNumber(10), A, B, Rights::READ).unwrap();
        t.add_mapping(FrameNumber(10), B, 0x2000);
        t.revoke(FrameNumber(10), A, B).unwrap();
        t.forget_grants_to(B);
        // The withdrawal goes on (the kernel finds B dead and only forgets
        // the mapping), or B's own reclaim forgets it first.
        assert_eq!(
            t.unmap_step(FrameNumber(10), B, 8),
            UnmapStep::Unmap(vec![Mapping { env: B, va: 0x2000 }])
        );
        t.remove_mapping(FrameNumber(10), B, 0x2000);
        assert_eq!(t.unmap_step(FrameNumber(10), B, 8), UnmapStep::Done);
        assert_eq!(t.free(FrameNumber(10), A), Ok(()));
    }

    #[test]
    fn pinned_frames_cannot_be_freed() {
        let mut t = table();
        assert_eq!(t.pin(FrameNumber(10), B), Err(Error::NotOwner));
        assert_eq!(t.pin(FrameNumber(11), A), Err(Error::NotOwner));
        t.pin(FrameNumber(10), A).unwrap();
        assert_eq!(t.free(FrameNumber(10), A), Err(Error::Busy));
        t.pin(FrameNumber(10), A).unwrap();
        t.unpin(FrameNumber(10), B);
        t.unpin(FrameNumber(10), A);
        assert_eq!(t.free(FrameNumber(10), A), Err(Error::Busy), "pinned twice, unpinned once");
        t.unpin(FrameNumber(10), A);
        assert_eq!(t.free(FrameNumber(10), A), Ok(()));
    }

    #[test]
    fn release_on_death_ends_grants_then_unmaps_in_steps() {
        let mut t = table();
        t.grant(FrameNumber(10), A, B, Rights::READ).unwrap();
        t.add_mapping(FrameNumber(10), B, 0x2000);
        t.add_mapping(FrameNumber(10), B, 0x3000);
        t.add_mapping(FrameNumber(10), C, 0x4000);
        assert_eq!(t.release_step(FrameNumber(10), B, 8), None);
        let Some(ReleaseStep::Unmap(first)) = t.release_step(FrameNumber(10), A, 2) else {
            panic!()
        };
        assert_eq!(first, [Mapping { env: B, va: 0x2000 }, Mapping { env: B, va: 0x3000 }]);
        assert_eq!(
            t.check_map(FrameNumber(10), B, Rights::READ),
            Err(Error::NotOwner),
            "grant ended"
        );
        for m in first {
            t.remove_mapping(FrameNumber(10), m.env, m.va);
        }
        assert_eq!(
            t.release_step(FrameNumber(10), A, 2),
            Some(ReleaseStep::Unmap(vec![Mapping { env: C, va: 0x4000 }]))
        );
        t.remove_mapping(FrameNumber(10), C, 0x4000);
        assert_eq!(t.release_step(FrameNumber(10), A, 2), Some(ReleaseStep::Released));
        assert!(t.get(FrameNumber(10)).is_none());
    }

    #[test]
    fn forget_grants_to_drops_grants_but_leaves_mappings_to_the_walk() {
        let mut t = table();
        t.grant(FrameNumber(10), A, B, Rights::READ).unwrap();
        t.add_mapping(FrameNumber(10), B, 0x2000);
        t.forget_grants_to(B);
        let r = t.get(FrameNumber(10)).unwrap();
        assert!(r.grants.is_empty() && r.mappings.len() == 1);
        let mut t = table();
        for va in 0..10_000u64 {
            t.add_mapping(FrameNumber(10), A, va << 12);
        }
        for va in 0..10_000u64 {
            t.remove_mapping(FrameNumber(10), A, va << 12);
        }
        assert!(t.get(FrameNumber(10)).unwrap().mappings.is_empty());
        assert_eq!(t.free(FrameNumber(10), A), Ok(()));
    }
}
