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
use abi::{Error, Rights};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

/// An environment's id (never 0: 0 means "no environment").
pub type EnvId = u32;

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
    /// removing one of many mappings stays O(log n).
    pub mappings: BTreeSet<Mapping>,
    /// Registered rings using it (the kernel writes into it directly).
    pub pins: u32,
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
            FrameRecord { owner, kind, grants: Vec::new(), mappings: BTreeSet::new(), pins: 0 },
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
    /// the rights returns the grantee's mappings, which the caller must
    /// unmap (they may carry rights beyond the new grant).
    pub fn grant(
        &mut self,
        frame: FrameNumber,
        owner: EnvId,
        grantee: EnvId,
        rights: Rights,
    ) -> Result<Vec<Mapping>, Error> {
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
                    return Ok(Self::mappings_of(record, grantee));
                }
            }
            None => record.grants.push(Grant { grantee, rights }),
        }
        Ok(Vec::new())
    }

    /// Withdraws `grantee`'s grant. Returns the grantee's mappings of the
    /// frame, which the caller must unmap (and remove with
    /// [`remove_mapping`](Self::remove_mapping)) before reporting success.
    pub fn revoke(
        &mut self,
        frame: FrameNumber,
        owner: EnvId,
        grantee: EnvId,
    ) -> Result<Vec<Mapping>, Error> {
        let record = self.owned_data(frame, owner)?;
        let before = record.grants.len();
        record.grants.retain(|g| g.grantee != grantee);
        if record.grants.len() == before {
            return Err(Error::NoSuchEnv);
        }
        Ok(Self::mappings_of(record, grantee))
    }

    fn mappings_of(record: &FrameRecord, env: EnvId) -> Vec<Mapping> {
        let range = Mapping { env, va: 0 }..=Mapping { env, va: u64::MAX };
        record.mappings.range(range).copied().collect()
    }

    /// When `env` dies: removes its grants on other environments' frames and
    /// its mappings of them (they vanish with its address space). Its own
    /// frames are handled by [`release`](Self::release).
    pub fn forget_grantee(&mut self, env: EnvId) {
        for record in self.records.values_mut() {
            record.grants.retain(|g| g.grantee != env);
            for m in Self::mappings_of(record, env) {
                record.mappings.remove(&m);
            }
        }
    }

    /// Releases a frame of a dying owner: returns the mappings other
    /// environments still have (to unmap) and removes the record.
    pub fn release(&mut self, frame: FrameNumber, owner: EnvId) -> Option<Vec<Mapping>> {
        if self.records.get(&frame)?.owner != owner {
            return None;
        }
        let record = self.records.remove(&frame)?;
        Some(record.mappings.into_iter().filter(|m| m.env != owner).collect())
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

    const A: EnvId = 1;
    const B: EnvId = 2;
    const C: EnvId = 3;

    fn table() -> FrameTable {
        let mut t = FrameTable::new();
        t.insert(10, A, FrameKind::Data);
        t.insert(11, A, FrameKind::PageTable);
        t
    }

    #[test]
    fn only_owner_and_grantees_may_map() {
        let mut t = table();
        assert_eq!(t.check_map(10, A, Rights::RWX), Ok(()));
        assert_eq!(t.check_map(10, B, Rights::READ), Err(Error::NotOwner));
        assert_eq!(t.check_map(99, A, Rights::READ), Err(Error::NotOwner));
        t.grant(10, A, B, Rights::READ).unwrap();
        assert_eq!(t.check_map(10, B, Rights::READ), Ok(()));
        assert_eq!(t.check_map(10, B, Rights::RW), Err(Error::PermissionDenied));
        assert_eq!(t.check_map(10, C, Rights::READ), Err(Error::NotOwner));
    }

    #[test]
    fn page_tables_are_never_mappable_or_grantable() {
        let mut t = table();
        assert_eq!(t.check_map(11, A, Rights::READ), Err(Error::PermissionDenied));
        assert_eq!(t.check_map(11, B, Rights::READ), Err(Error::NotOwner));
        assert_eq!(t.grant(11, A, B, Rights::READ), Err(Error::NotOwner));
        assert_eq!(t.free(11, A), Err(Error::NotOwner));
        t.free_page_table(11);
        assert!(t.get(11).is_none());
    }

    #[test]
    fn free_needs_owner_and_no_mappings_or_grants() {
        let mut t = table();
        assert_eq!(t.free(10, B), Err(Error::NotOwner));
        t.add_mapping(10, A, 0x40_0000);
        assert_eq!(t.free(10, A), Err(Error::Busy));
        t.remove_mapping(10, A, 0x40_0000);
        t.grant(10, A, B, Rights::READ).unwrap();
        assert_eq!(t.free(10, A), Err(Error::Busy));
        t.revoke(10, A, B).unwrap();
        assert_eq!(t.free(10, A), Ok(()));
        assert!(t.get(10).is_none());
    }

    #[test]
    fn revoke_returns_the_grantees_mappings_only() {
        let mut t = table();
        t.grant(10, A, B, Rights::RW).unwrap();
        t.grant(10, A, C, Rights::READ).unwrap();
        t.add_mapping(10, A, 0x1000);
        t.add_mapping(10, B, 0x2000);
        t.add_mapping(10, B, 0x3000);
        t.add_mapping(10, C, 0x4000);
        let m = t.revoke(10, A, B).unwrap();
        assert_eq!(m, [Mapping { env: B, va: 0x2000 }, Mapping { env: B, va: 0x3000 }]);
        assert_eq!(t.check_map(10, B, Rights::READ), Err(Error::NotOwner));
        assert_eq!(t.revoke(10, A, B), Err(Error::NoSuchEnv));
        assert_eq!(t.revoke(10, B, C), Err(Error::NotOwner));
    }

    #[test]
    fn lowering_a_grant_returns_mappings_to_redo() {
        let mut t = table();
        t.grant(10, A, B, Rights::RW).unwrap();
        t.add_mapping(10, B, 0x2000);
        assert!(t.grant(10, A, B, Rights::RWX).unwrap().is_empty());
        assert_eq!(t.grant(10, A, B, Rights::READ).unwrap(), [Mapping { env: B, va: 0x2000 }]);
        assert_eq!(t.grant(10, A, A, Rights::READ), Err(Error::InvalidArgument));
        assert_eq!(t.grant(10, A, B, Rights(8)), Err(Error::InvalidArgument));
        assert_eq!(t.grant(10, A, B, Rights::NONE), Err(Error::InvalidArgument));
    }

    #[test]
    fn pinned_frames_cannot_be_freed() {
        let mut t = table();
        assert_eq!(t.pin(10, B), Err(Error::NotOwner));
        assert_eq!(t.pin(11, A), Err(Error::NotOwner));
        t.pin(10, A).unwrap();
        assert_eq!(t.free(10, A), Err(Error::Busy));
        t.pin(10, A).unwrap();
        t.unpin(10, B);
        t.unpin(10, A);
        assert_eq!(t.free(10, A), Err(Error::Busy), "pinned twice, unpinned once");
        t.unpin(10, A);
        assert_eq!(t.free(10, A), Ok(()));
    }

    #[test]
    fn release_on_death_reports_foreign_mappings() {
        let mut t = table();
        t.grant(10, A, B, Rights::READ).unwrap();
        t.add_mapping(10, A, 0x1000);
        t.add_mapping(10, B, 0x2000);
        assert_eq!(t.release(10, B), None);
        assert_eq!(t.release(10, A), Some(vec![Mapping { env: B, va: 0x2000 }]));
        assert!(t.get(10).is_none());
    }

    #[test]
    fn forget_grantee_drops_its_grants_and_mappings() {
        let mut t = table();
        t.grant(10, A, B, Rights::READ).unwrap();
        t.add_mapping(10, B, 0x2000);
        t.forget_grantee(B);
        let r = t.get(10).unwrap();
        assert!(r.grants.is_empty() && r.mappings.is_empty());
        let mut t = table();
        for va in 0..10_000u64 {
            t.add_mapping(10, A, va << 12);
        }
        for va in 0..10_000u64 {
            t.remove_mapping(10, A, va << 12);
        }
        assert!(t.get(10).unwrap().mappings.is_empty());
        assert_eq!(t.free(10, A), Ok(()));
    }
}
