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
//!
//! Frames are a dense numbered space, so a table is an array indexed by
//! frame number (divided by the table's stride: shard `s` of `n` holds
//! frames `s`, `s + n`, ..., and no other), in chunks of [`CHUNK`] records allocated when
//! a frame of theirs is first recorded and freed when their last record
//! goes (`Records`): finding a record is an index, not a tree search (the
//! fork and exit paths look up a record per shared page several times).

use crate::frames::FrameNumber;
use crate::mappingset::MappingSet;
use abi::{Error, Rights};
use alloc::boxed::Box;
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

/// A holder of a shared frame other than its owner ([`FrameTable::share`]):
/// it may map the frame with at most `rights` (never writable in a
/// copy-on-write share), and it keeps the frame alive while it maps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// Who holds it.
    pub env: EnvId,
    /// With at most these rights ([`Rights::WRITE`] only in a
    /// [`ShareMode::Writable`] share).
    pub rights: Rights,
}

/// How a frame is shared between its holders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareMode {
    /// Copy-on-write: while more than one holds it, nobody maps it
    /// writable; a holder that writes copies.
    CopyOnWrite,
    /// Shared memory: every holder may map it with the rights it was given,
    /// writable included, and all see each other's writes. Once a frame is
    /// shared this way it stays so while its record lives (a later
    /// copy-on-write share of it is a writable one): the other holders'
    /// writable mappings must never be made read-only under them.
    Writable,
}

/// What [`FrameTable::share`] gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shared {
    /// The rights the new holder may map it with.
    pub rights: Rights,
    /// How the frame is shared (writable if it already was, whatever was
    /// asked).
    pub mode: ShareMode,
}

/// What [`FrameTable::remove_mapping`] leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    /// The frame lives on (or was not recorded).
    Kept,
    /// That was the last holder of a frame its owner had let go of: the
    /// record is gone; the caller frees the frame and uncharges `owner`
    /// (the environment charged for it all along).
    Released {
        /// The environment charged for the frame.
        owner: EnvId,
    },
}

/// What [`FrameTable::free`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freed {
    /// The record is gone: return the frame to the pool, uncharge the owner.
    Now,
    /// Others still hold it (shares): it stays, charged to the owner, who
    /// may no longer map or free it, until the last sharer lets go
    /// ([`Removed::Released`]).
    Later,
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
    /// Where it is mapped (owner, grantees, sharers): a set, so that adding
    /// and removing one of many mappings stays O(log n); up to two mappings
    /// (an owner's and a forked child's) are held inline ([`MappingSet`]:
    /// no heap trip nor tree search for the common cases).
    pub mappings: MappingSet,
    /// Registered rings using it (the kernel writes into it directly).
    pub pins: u32,
    /// Grantees whose mappings are being taken away (a revoke or a lowered
    /// grant in progress): they may not map the frame until the owner's
    /// call has removed every one of them ([`FrameTable::unmap_step`]).
    pub withdrawing: Vec<EnvId>,
    /// Holders besides the owner. In a copy-on-write share (not
    /// [`shared_writable`](Self::shared_writable)), while any exists no
    /// mapping of the frame is writable (the invariant [`share`] keeps):
    /// the owner's and grantees' writable mappings are refused, and a
    /// writable grant blocks sharing.
    ///
    /// [`share`]: FrameTable::share
    pub sharers: Vec<Share>,
    /// The frame was shared writable ([`ShareMode::Writable`]): its
    /// holders map it writable at once, so it is never copy-on-write; set
    /// for the rest of the record's life.
    pub shared_writable: bool,
    /// The owner let go of it (freed it, or died) while sharers held it:
    /// it stays charged to the owner until the last sharer's last mapping
    /// goes, but the owner may not map, grant or free it any more.
    pub released: bool,
}

impl FrameRecord {
    /// How many environments hold the frame: the owner (unless it let go)
    /// and every sharer.
    pub fn holders(&self) -> usize {
        usize::from(!self.released) + self.sharers.len()
    }

    /// Shared copy-on-write right now: nobody may map it writable.
    pub fn cow_shared(&self) -> bool {
        !self.sharers.is_empty() && !self.shared_writable
    }

    fn share_of(&self, env: EnvId) -> Option<&Share> {
        self.sharers.iter().find(|s| s.env == env)
    }
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
    /// Sharers still hold it: it stays (released by its owner, still
    /// charged to it) until the last of them lets go.
    Kept,
}

/// Records per chunk of a table's array.
pub const CHUNK: usize = 64;

/// One chunk of [`Records`]: `CHUNK` consecutive records, `used` of them
/// present.
#[derive(Debug)]
struct Chunk {
    used: u32,
    slots: Box<[Option<FrameRecord>]>,
}

/// The records of a table's frames (those equal to `residue` modulo
/// `stride`), indexed by `frame / stride`: a vector of chunks, each
/// allocated on its first record and freed with its last, so memory follows
/// the frames in use (a chunk's worth at most per frame recorded, about the
/// same per frame as a search tree's nodes when frames are handed out
/// densely, as the pool does). One emptied chunk is kept as a spare: a
/// frame allocated and freed over and over at a chunk's edge (a child's page
/// tables, fork after fork) would otherwise allocate and free a chunk each
/// time.
#[derive(Debug)]
struct Records {
    /// `log2(stride)`.
    shift: u32,
    residue: u64,
    chunks: Vec<Option<Chunk>>,
    spare: Option<Chunk>,
}

impl Records {
    const fn new(stride: u64, residue: u64) -> Records {
        Records { shift: stride.trailing_zeros(), residue, chunks: Vec::new(), spare: None }
    }

    /// The chunk and slot of `frame` (`None` for a frame not of this table,
    /// or a number too large to index: never recorded).
    #[inline]
    fn place(&self, frame: &FrameNumber) -> Option<(usize, usize)> {
        let raw = frame.raw();
        if raw & ((1 << self.shift) - 1) != self.residue {
            return None;
        }
        let i = usize::try_from(raw >> self.shift).ok()?;
        Some((i / CHUNK, i % CHUNK))
    }

    #[inline]
    fn get(&self, frame: &FrameNumber) -> Option<&FrameRecord> {
        let (c, i) = self.place(frame)?;
        self.chunks.get(c)?.as_ref()?.slots[i].as_ref()
    }

    #[inline]
    fn get_mut(&mut self, frame: &FrameNumber) -> Option<&mut FrameRecord> {
        let (c, i) = self.place(frame)?;
        self.chunks.get_mut(c)?.as_mut()?.slots[i].as_mut()
    }

    /// Records `frame` (replacing and returning an earlier record).
    fn insert(&mut self, frame: FrameNumber, record: FrameRecord) -> Option<FrameRecord> {
        let (c, i) = self.place(&frame).expect("a frame recorded in its own shard");
        if self.chunks.len() <= c {
            self.chunks.resize_with(c + 1, || None);
        }
        let spare = &mut self.spare;
        let chunk = self.chunks[c].get_or_insert_with(|| {
            spare.take().unwrap_or_else(|| {
                let mut slots = Vec::with_capacity(CHUNK);
                slots.resize_with(CHUNK, || None);
                Chunk { used: 0, slots: slots.into_boxed_slice() }
            })
        });
        let previous = chunk.slots[i].replace(record);
        if previous.is_none() {
            chunk.used += 1;
        }
        previous
    }

    fn remove(&mut self, frame: &FrameNumber) -> Option<FrameRecord> {
        let (c, i) = self.place(frame)?;
        let slot = self.chunks.get_mut(c)?;
        let chunk = slot.as_mut()?;
        let record = chunk.slots[i].take()?;
        chunk.used -= 1;
        if chunk.used == 0 {
            // Every slot is empty: it may serve any other chunk index.
            let empty = slot.take();
            if self.spare.is_none() {
                self.spare = empty;
            }
        }
        Some(record)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut FrameRecord> {
        self.chunks.iter_mut().flatten().flat_map(|c| c.slots.iter_mut().flatten())
    }
}

/// A shard of the frame ownership table.
#[derive(Debug)]
pub struct FrameTable {
    records: Records,
}

impl Default for FrameTable {
    fn default() -> FrameTable {
        FrameTable::new()
    }
}

impl FrameTable {
    /// An empty table for every frame.
    pub const fn new() -> FrameTable {
        FrameTable::shard(1, 0)
    }

    /// An empty table for the frames equal to `residue` modulo `stride` (a
    /// power of two: shard `residue` of `stride`): it indexes them by `frame / stride`,
    /// so its array has no holes for the other shards' frames. Other frames
    /// are never recorded here (looking one up finds nothing; recording
    /// one is a kernel bug and panics).
    pub const fn shard(stride: u64, residue: u64) -> FrameTable {
        assert!(stride.is_power_of_two() && residue < stride);
        FrameTable { records: Records::new(stride, residue) }
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
                sharers: Vec::new(),
                shared_writable: false,
                released: false,
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
        // The owner itself is "withdrawing" while the kernel repossesses
        // the frame (`repossess_step`): it may not map it again meanwhile.
        if record.withdrawing.contains(&env) {
            return Err(Error::Busy);
        }
        // A copy-on-write shared frame is mapped read-only by everyone.
        let shared_write = record.cow_shared() && rights.contains(Rights::WRITE);
        if record.owner == env && !record.released {
            return if shared_write { Err(Error::PermissionDenied) } else { Ok(()) };
        }
        if let Some(share) = record.share_of(env) {
            return if share.rights.contains(rights) {
                Ok(())
            } else {
                Err(Error::PermissionDenied)
            };
        }
        if record.released {
            return Err(Error::NotOwner);
        }
        if record.owner == env {
            return Ok(());
        }
        let grant = record.grants.iter().find(|g| g.grantee == env).ok_or(Error::NotOwner)?;
        if grant.rights.contains(rights) && !shared_write {
            Ok(())
        } else {
            Err(Error::PermissionDenied)
        }
    }

    /// Sharing: `from`, which holds `frame` (its owner, or a sharer), lets
    /// `to` hold it too, with at most `rights` (and at most `from`'s own);
    /// returns the rights `to` gets and how the frame is now shared.
    ///
    /// [`ShareMode::CopyOnWrite`] takes [`Rights::WRITE`] away; `from_va`
    /// is `from`'s own mapping of it that the caller write-protects in the
    /// same step (`None`: `from` maps it nowhere writable, see below). The
    /// invariant "no writable mapping while shared copy-on-write" needs, at
    /// the first share: no writable grant (`Busy`), and no mapping other
    /// than `from`'s at `from_va` (`Busy`; the kernel cannot see the other
    /// mappings' rights from here). A frame already shared writable is
    /// shared writable instead (the returned mode says so; `from_va` is
    /// then left writable).
    ///
    /// [`ShareMode::Writable`] keeps [`Rights::WRITE`] if given: `Busy` if
    /// the frame is shared copy-on-write now (its holders' read-only
    /// mappings are what keeps their copies apart).
    ///
    /// Either mode: a pinned (ring) frame is `Busy`; `to` may not be the
    /// owner, a grantee or `from` (`InvalidArgument`); `PermissionDenied`
    /// if `to` would not even get [`Rights::READ`].
    pub fn share(
        &mut self,
        frame: FrameNumber,
        from: EnvId,
        from_va: Option<u64>,
        to: EnvId,
        rights: Rights,
        mode: ShareMode,
    ) -> Result<Shared, Error> {
        let record = self.records.get_mut(&frame).ok_or(Error::NotOwner)?;
        if record.kind != FrameKind::Data {
            return Err(Error::NotOwner);
        }
        let from_rights = if record.owner == from && !record.released {
            Rights::RWX
        } else {
            record.share_of(from).ok_or(Error::NotOwner)?.rights
        };
        if to == from
            || to == record.owner
            || record.grants.iter().any(|g| g.grantee == to)
            || record.withdrawing.contains(&to)
        {
            return Err(Error::InvalidArgument);
        }
        if record.pins > 0 {
            return Err(Error::Busy);
        }
        let mode = if record.shared_writable { ShareMode::Writable } else { mode };
        let mask = match mode {
            ShareMode::CopyOnWrite => !Rights::WRITE.0,
            ShareMode::Writable => !0,
        };
        let given = Rights(rights.0 & from_rights.0 & mask);
        if !given.contains(Rights::READ) {
            return Err(Error::PermissionDenied);
        }
        match mode {
            ShareMode::CopyOnWrite if record.sharers.is_empty() => {
                let mine = from_va.map(|va| Mapping { env: from, va });
                if record.grants.iter().any(|g| g.rights.contains(Rights::WRITE))
                    || record.mappings.any_but(mine)
                {
                    return Err(Error::Busy);
                }
            }
            ShareMode::CopyOnWrite => {}
            ShareMode::Writable if record.cow_shared() => return Err(Error::Busy),
            ShareMode::Writable => record.shared_writable = true,
        }
        match record.sharers.iter_mut().find(|s| s.env == to) {
            Some(s) => s.rights = s.rights.union(given),
            None => record.sharers.push(Share { env: to, rights: given }),
        }
        Ok(Shared { rights: given, mode })
    }

    /// The owner hands a data frame to `to` (it then owns it and is charged
    /// for it): the frame must be mapped nowhere, granted to nobody, not
    /// shared, not pinned (`Busy`).
    pub fn give(&mut self, frame: FrameNumber, from: EnvId, to: EnvId) -> Result<(), Error> {
        let r = self.owned_data(frame, from)?;
        if !r.mappings.is_empty()
            || !r.grants.is_empty()
            || !r.withdrawing.is_empty()
            || !r.sharers.is_empty()
            || r.pins > 0
        {
            return Err(Error::Busy);
        }
        r.owner = to;
        Ok(())
    }

    /// The last holder of a frame its owner let go of takes it over (to map
    /// it writable without a copy): `env` must be its only holder. Returns
    /// the previous owner, whom the caller uncharges after charging `env`.
    pub fn adopt(&mut self, frame: FrameNumber, env: EnvId) -> Result<EnvId, Error> {
        let record = self.records.get_mut(&frame).ok_or(Error::NotOwner)?;
        let sole = record.released
            && record.sharers.len() == 1
            && record.sharers[0].env == env
            && record.grants.is_empty()
            && record.mappings.iter().all(|m| m.env == env);
        if !sole {
            return Err(Error::PermissionDenied);
        }
        let previous = record.owner;
        record.owner = env;
        record.released = false;
        record.sharers.clear();
        Ok(previous)
    }

    /// Records a mapping that [`check_map`](Self::check_map) allowed.
    pub fn add_mapping(&mut self, frame: FrameNumber, env: EnvId, va: u64) {
        if let Some(r) = self.records.get_mut(&frame) {
            r.mappings.insert(Mapping { env, va });
        }
    }

    /// Forgets a mapping (after the page-table entry was cleared). A
    /// sharer whose last mapping this was stops holding the frame; if it
    /// was the last holder of a frame its owner let go of, the record goes
    /// ([`Removed::Released`]: the caller frees the frame).
    #[must_use = "a released frame must be freed and its owner uncharged"]
    pub fn remove_mapping(&mut self, frame: FrameNumber, env: EnvId, va: u64) -> Removed {
        let Some(r) = self.records.get_mut(&frame) else { return Removed::Kept };
        r.mappings.remove(&Mapping { env, va });
        if r.sharers.is_empty() {
            return Removed::Kept;
        }
        if !r.mappings.has_env(env) {
            r.sharers.retain(|s| s.env != env);
        }
        if r.released && r.sharers.is_empty() && r.mappings.is_empty() {
            let owner = r.owner;
            self.records.remove(&frame);
            return Removed::Released { owner };
        }
        Removed::Kept
    }

    /// Frees a data frame: only its owner may, and only once it maps it
    /// nowhere, nobody maps it by a grant and no grant is outstanding. If
    /// sharers still hold it, it lives on for them ([`Freed::Later`]: still
    /// charged to the owner, who lets go of it); otherwise the record is
    /// gone and the caller returns the frame to the pool.
    pub fn free(&mut self, frame: FrameNumber, env: EnvId) -> Result<Freed, Error> {
        let record = self.records.get_mut(&frame).ok_or(Error::NotOwner)?;
        if record.owner != env || record.kind != FrameKind::Data || record.released {
            return Err(Error::NotOwner);
        }
        let shared_only = record.mappings.iter().all(|m| record.share_of(m.env).is_some());
        if !shared_only || !record.grants.is_empty() || record.pins > 0 {
            return Err(Error::Busy);
        }
        if !record.sharers.is_empty() {
            record.released = true;
            return Ok(Freed::Later);
        }
        self.records.remove(&frame);
        Ok(Freed::Now)
    }

    /// Pins a data frame `env` owns (a registered ring): until unpinned it
    /// cannot be freed and reused under the kernel.
    pub fn pin(&mut self, frame: FrameNumber, env: EnvId) -> Result<(), Error> {
        let record = self.owned_data(frame, env)?;
        // Being repossessed (on its way out), or held by others too (a
        // ring's frames stay the caller's alone: the kernel writes them).
        if record.withdrawing.contains(&env) || !record.sharers.is_empty() {
            return Err(Error::Busy);
        }
        record.pins += 1;
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
        if grantee == owner || record.share_of(grantee).is_some() {
            return Err(Error::InvalidArgument);
        }
        if record.cow_shared() && rights.contains(Rights::WRITE) {
            return Err(Error::PermissionDenied);
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
        let record = self.records.get_mut(&frame).filter(|r| r.owner == owner && !r.released)?;
        record.grants.clear();
        record.withdrawing.clear();
        let foreign: Vec<Mapping> = record
            .mappings
            .iter()
            .filter(|m| record.share_of(m.env).is_none())
            .take(limit)
            .copied()
            .collect();
        if !foreign.is_empty() {
            return Some(ReleaseStep::Unmap(foreign));
        }
        if record.sharers.is_empty() {
            self.records.remove(&frame);
            return Some(ReleaseStep::Released);
        }
        record.released = true;
        Some(ReleaseStep::Kept)
    }

    /// One step of repossessing a data frame `owner` still holds (the
    /// kernel takes it by force, `abi::repossess`): the first step ends
    /// every grant and marks the owner itself as withdrawing, so that
    /// nobody maps the frame anew (nor pins it); then at most `limit` of
    /// its mappings (the owner's and others', ordered by environment) are
    /// returned for the caller to remove before asking again; once none is
    /// left the record goes and the caller frees the frame. `None` (and
    /// nothing changed, or the owner's mark lifted) if `owner` does not
    /// hold it as a data frame, or a registered ring pins it.
    pub fn repossess_step(
        &mut self,
        frame: FrameNumber,
        owner: EnvId,
        limit: usize,
    ) -> Option<ReleaseStep> {
        let record = self.owned_data(frame, owner).ok()?;
        // Pinned (ring) frames and copy-on-write shared ones are not taken:
        // a sharer's copy of the page must not vanish with the owner's debt.
        if record.pins > 0 || !record.sharers.is_empty() {
            record.withdrawing.retain(|&e| e != owner);
            return None;
        }
        for g in core::mem::take(&mut record.grants) {
            Self::withdraw(record, g.grantee);
        }
        Self::withdraw(record, owner);
        if record.mappings.is_empty() {
            self.records.remove(&frame);
            return Some(ReleaseStep::Released);
        }
        Some(ReleaseStep::Unmap(record.mappings.iter().take(limit).copied().collect()))
    }

    /// Gives up a repossession of `frame` begun with
    /// [`repossess_step`](Self::repossess_step) (its owner may map it
    /// again; grants already ended stay ended).
    pub fn repossess_abandon(&mut self, frame: FrameNumber, owner: EnvId) {
        if let Ok(record) = self.owned_data(frame, owner) {
            record.withdrawing.retain(|&e| e != owner);
        }
    }

    fn owned_data(&mut self, frame: FrameNumber, owner: EnvId) -> Result<&mut FrameRecord, Error> {
        match self.records.get_mut(&frame) {
            Some(r) if r.owner == owner && r.kind == FrameKind::Data && !r.released => Ok(r),
            _ => Err(Error::NotOwner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repossession_takes_every_mapping_and_blocks_remaps() {
        let mut t = table();
        let f = FrameNumber(10);
        t.grant(f, A, B, Rights::RW).unwrap();
        t.add_mapping(f, A, 0x1000);
        t.add_mapping(f, B, 0x2000);
        // Not a data frame of A's: nothing happens.
        assert_eq!(t.repossess_step(FrameNumber(11), A, 8), None);
        assert_eq!(t.repossess_step(f, B, 8), None);
        let Some(ReleaseStep::Unmap(batch)) = t.repossess_step(f, A, 1) else { panic!() };
        assert_eq!(batch, [Mapping { env: A, va: 0x1000 }]);
        // Neither the owner nor the former grantee may map it now.
        assert_eq!(t.check_map(f, A, Rights::READ), Err(Error::Busy));
        assert!(t.check_map(f, B, Rights::READ).is_err());
        assert_eq!(t.pin(f, A), Err(Error::Busy));
        assert_eq!(t.remove_mapping(f, A, 0x1000), Removed::Kept);
        assert_eq!(t.remove_mapping(f, B, 0x2000), Removed::Kept);
        assert_eq!(t.repossess_step(f, A, 1), Some(ReleaseStep::Released));
        assert!(t.get(f).is_none());
    }

    #[test]
    fn a_pinned_frame_is_not_repossessed() {
        let mut t = table();
        let f = FrameNumber(10);
        t.add_mapping(f, A, 0x1000);
        assert!(matches!(t.repossess_step(f, A, 8), Some(ReleaseStep::Unmap(_))));
        t.repossess_abandon(f, A);
        t.pin(f, A).unwrap();
        assert_eq!(t.repossess_step(f, A, 8), None);
        assert_eq!(t.check_map(f, A, Rights::READ), Ok(()));
    }

    const A: EnvId = EnvId(1);
    const B: EnvId = EnvId(2);
    const C: EnvId = EnvId(3);

    #[test]
    fn a_shard_indexes_only_its_own_frames_and_frees_empty_chunks() {
        let mut t = FrameTable::shard(64, 5);
        let mine = |k: u64| FrameNumber(5 + 64 * k);
        // Not of this shard, or beyond anything indexable: never found.
        assert!(t.get(FrameNumber(6)).is_none());
        assert_eq!(t.check_map(FrameNumber(u64::MAX), A, Rights::READ), Err(Error::NotOwner));
        for k in [0, 1, 63, 64, 1000] {
            t.insert(mine(k), A, FrameKind::Data);
        }
        assert!(t.get(FrameNumber(4)).is_none() && t.get(FrameNumber(6)).is_none());
        assert_eq!(t.check_map(FrameNumber(6), A, Rights::READ), Err(Error::NotOwner));
        assert_eq!(t.get(mine(1000)).unwrap().owner, A);
        let chunks = |t: &FrameTable| t.records.chunks.iter().flatten().count();
        assert_eq!(chunks(&t), 3, "chunks 0, 1 and 15");
        assert_eq!(t.free(mine(64), A), Ok(Freed::Now));
        assert_eq!(chunks(&t), 2, "chunk 1 emptied with its last record");
        assert!(t.records.spare.is_some(), "kept as the spare");
        t.insert(mine(640), A, FrameKind::Data);
        assert!(t.records.spare.is_none(), "the spare serves chunk 10");
        assert_eq!(t.free(mine(640), A), Ok(Freed::Now));
        assert_eq!(t.free(mine(0), A), Ok(Freed::Now));
        assert_eq!(chunks(&t), 2, "chunk 0 still holds frames 1 and 63");
        assert_eq!(t.get(mine(63)).unwrap().owner, A);
        t.insert(mine(64), B, FrameKind::PageTable);
        assert_eq!(t.get(mine(64)).unwrap().kind, FrameKind::PageTable);
        t.free_page_table(mine(64));
        assert!(t.get(mine(64)).is_none());
        // Grants to B are forgotten in every chunk.
        t.grant(mine(1), A, B, Rights::READ).unwrap();
        t.grant(mine(1000), A, B, Rights::READ).unwrap();
        t.forget_grants_to(B);
        assert!(t.get(mine(1)).unwrap().grants.is_empty());
        assert!(t.get(mine(1000)).unwrap().grants.is_empty());
    }

    #[test]
    #[should_panic(expected = "its own shard")]
    fn recording_a_frame_in_another_shard_is_a_bug() {
        FrameTable::shard(64, 5).insert(FrameNumber(6), A, FrameKind::Data);
    }

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
        let _ = t.remove_mapping(FrameNumber(10), A, 0x40_0000);
        t.grant(FrameNumber(10), A, B, Rights::READ).unwrap();
        assert_eq!(t.free(FrameNumber(10), A), Err(Error::Busy));
        t.revoke(FrameNumber(10), A, B).unwrap();
        assert_eq!(t.unmap_step(FrameNumber(10), B, 8), UnmapStep::Done);
        assert_eq!(t.free(FrameNumber(10), A), Ok(Freed::Now));
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
                let _ = t.remove_mapping(frame, m.env, m.va);
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
                let _ = t.remove_mapping(FrameNumber(10), m.env, m.va);
            }
        }
        assert_eq!(steps, 1000_usize.div_ceil(64));
        assert_eq!(t.free(FrameNumber(10), A), Ok(Freed::Now));
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
        let _ = t.remove_mapping(FrameNumber(10), B, 0x2000);
        assert_eq!(t.unmap_step(FrameNumber(10), B, 8), UnmapStep::Done);
        assert_eq!(t.free(FrameNumber(10), A), Ok(Freed::Now));
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
        assert_eq!(t.free(FrameNumber(10), A), Ok(Freed::Now));
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
            let _ = t.remove_mapping(FrameNumber(10), m.env, m.va);
        }
        assert_eq!(
            t.release_step(FrameNumber(10), A, 2),
            Some(ReleaseStep::Unmap(vec![Mapping { env: C, va: 0x4000 }]))
        );
        let _ = t.remove_mapping(FrameNumber(10), C, 0x4000);
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
            let _ = t.remove_mapping(FrameNumber(10), A, va << 12);
        }
        assert!(t.get(FrameNumber(10)).unwrap().mappings.is_empty());
        assert_eq!(t.free(FrameNumber(10), A), Ok(Freed::Now));
    }

    #[test]
    fn a_shared_frame_is_read_only_and_outlives_its_owner() {
        let mut t = table();
        let f = FrameNumber(10);
        t.add_mapping(f, A, 0x1000);
        // First share: only A's own mapping at the given va may exist.
        assert_eq!(cow(&mut t, f, A, None, B, Rights::RWX), Err(Error::Busy));
        assert_eq!(cow(&mut t, f, A, Some(0x1000), A, Rights::READ), Err(Error::InvalidArgument));
        assert_eq!(cow(&mut t, f, A, Some(0x1000), B, Rights::RWX), Ok(Rights(5)));
        t.add_mapping(f, B, 0x1000);
        // Nobody maps it writable now, the owner included; no writable grant.
        assert_eq!(t.check_map(f, A, Rights::RW), Err(Error::PermissionDenied));
        assert_eq!(t.check_map(f, B, Rights::RW), Err(Error::PermissionDenied));
        assert_eq!(t.check_map(f, B, Rights::READ), Ok(()));
        assert_eq!(t.check_map(f, C, Rights::READ), Err(Error::NotOwner));
        assert_eq!(t.grant(f, A, C, Rights::RW), Err(Error::PermissionDenied));
        assert_eq!(t.grant(f, A, B, Rights::READ), Err(Error::InvalidArgument));
        // B cannot share what it does not hold, C cannot share at all.
        assert_eq!(cow(&mut t, f, C, None, A, Rights::READ), Err(Error::NotOwner));
        // B passes it on read-only to C (a grandchild).
        assert_eq!(cow(&mut t, f, B, Some(0x1000), C, Rights::RW), Ok(Rights::READ));
        t.add_mapping(f, C, 0x5000);
        assert_eq!(t.get(f).unwrap().holders(), 3);
        // The owner lets go: still mapped by it → Busy; unmapped → Later.
        assert_eq!(t.free(f, A), Err(Error::Busy));
        assert_eq!(t.remove_mapping(f, A, 0x1000), Removed::Kept);
        assert_eq!(t.free(f, A), Ok(Freed::Later));
        assert_eq!(t.free(f, A), Err(Error::NotOwner), "let go once");
        assert_eq!(t.check_map(f, A, Rights::READ), Err(Error::NotOwner));
        assert_eq!(t.get(f).unwrap().holders(), 2);
        // Two holders left: nobody adopts.
        assert_eq!(t.adopt(f, B), Err(Error::PermissionDenied));
        assert_eq!(t.remove_mapping(f, C, 0x5000), Removed::Kept);
        assert_eq!(t.get(f).unwrap().holders(), 1, "C let go by unmapping");
        // B is the sole holder: it adopts and may write.
        assert_eq!(t.adopt(f, B), Ok(A));
        assert_eq!(t.check_map(f, B, Rights::RW), Ok(()));
        assert_eq!(t.get(f).unwrap().owner, B);
    }

    #[test]
    fn the_last_sharer_releases_a_let_go_frame() {
        let mut t = table();
        let f = FrameNumber(10);
        t.add_mapping(f, A, 0x1000);
        cow(&mut t, f, A, Some(0x1000), B, Rights::READ).unwrap();
        t.add_mapping(f, B, 0x1000);
        t.add_mapping(f, B, 0x2000);
        // A dies: its own mapping was forgotten by the walk, then release.
        assert_eq!(t.remove_mapping(f, A, 0x1000), Removed::Kept);
        assert_eq!(t.release_step(f, A, 8), Some(ReleaseStep::Kept));
        assert_eq!(t.release_step(f, A, 8), None, "released already");
        assert_eq!(t.remove_mapping(f, B, 0x1000), Removed::Kept);
        assert_eq!(t.remove_mapping(f, B, 0x2000), Removed::Released { owner: A });
        assert!(t.get(f).is_none());
    }

    #[test]
    fn a_grantee_mapping_is_removed_but_sharers_keep_theirs_at_release() {
        let mut t = table();
        let f = FrameNumber(10);
        t.grant(f, A, C, Rights::READ).unwrap();
        t.add_mapping(f, C, 0x3000);
        // C's (read-only grant) mapping blocks the first share.
        assert_eq!(cow(&mut t, f, A, None, B, Rights::READ), Err(Error::Busy));
        let _ = t.remove_mapping(f, C, 0x3000);
        cow(&mut t, f, A, None, B, Rights::READ).unwrap();
        t.add_mapping(f, B, 0x1000);
        t.add_mapping(f, C, 0x3000);
        assert_eq!(
            t.release_step(f, A, 8),
            Some(ReleaseStep::Unmap(vec![Mapping { env: C, va: 0x3000 }]))
        );
        let _ = t.remove_mapping(f, C, 0x3000);
        assert_eq!(t.release_step(f, A, 8), Some(ReleaseStep::Kept));
        assert_eq!(t.check_map(f, C, Rights::READ), Err(Error::NotOwner), "grant ended");
        assert_eq!(t.remove_mapping(f, B, 0x1000), Removed::Released { owner: A });
    }

    fn cow(
        t: &mut FrameTable,
        frame: FrameNumber,
        from: EnvId,
        from_va: Option<u64>,
        to: EnvId,
        rights: Rights,
    ) -> Result<Rights, Error> {
        t.share(frame, from, from_va, to, rights, ShareMode::CopyOnWrite).map(|s| s.rights)
    }

    fn writable(t: &mut FrameTable, frame: FrameNumber, from: EnvId, to: EnvId) -> Shared {
        t.share(frame, from, None, to, Rights::RW, ShareMode::Writable).unwrap()
    }

    #[test]
    fn a_writable_share_is_writable_everywhere_and_stays_so() {
        let mut t = table();
        let f = FrameNumber(10);
        // The owner's own mapping and a grantee's do not block it.
        t.add_mapping(f, A, 0x1000);
        t.grant(f, A, D, Rights::RW).unwrap();
        t.add_mapping(f, D, 0x9000);
        assert_eq!(
            writable(&mut t, f, A, B),
            Shared { rights: Rights::RW, mode: ShareMode::Writable }
        );
        t.add_mapping(f, B, 0x1000);
        for env in [A, B, D] {
            assert_eq!(t.check_map(f, env, Rights::RW), Ok(()), "{env:?}");
        }
        assert_eq!(t.check_map(f, C, Rights::READ), Err(Error::NotOwner));
        // A copy-on-write share of it is a writable one (never turned COW),
        // and B (a sharer) may pass it on to its own child C.
        assert_eq!(
            t.share(f, B, Some(0x1000), C, Rights::RWX, ShareMode::CopyOnWrite),
            Ok(Shared { rights: Rights::RW, mode: ShareMode::Writable }),
            "at most B's rights, writable"
        );
        t.add_mapping(f, C, 0x2000);
        assert_eq!(t.check_map(f, C, Rights::RW), Ok(()));
        assert_eq!(t.check_map(f, C, Rights::RWX), Err(Error::PermissionDenied));
        // Writable grants are fine; a ring may not pin it; no repossession.
        assert_eq!(t.grant(f, A, E, Rights::RW), Ok(()));
        assert_eq!(t.pin(f, A), Err(Error::Busy));
        assert_eq!(t.repossess_step(f, A, 8), None);
        assert_eq!(t.check_map(f, A, Rights::READ), Ok(()), "repossession left no mark");
        assert_eq!(t.get(f).unwrap().holders(), 3);
    }

    #[test]
    fn a_writable_share_of_a_cow_or_pinned_frame_is_busy() {
        let mut t = table();
        let f = FrameNumber(10);
        t.add_mapping(f, A, 0x1000);
        cow(&mut t, f, A, Some(0x1000), B, Rights::READ).unwrap();
        t.add_mapping(f, B, 0x1000);
        assert_eq!(t.share(f, A, None, C, Rights::RW, ShareMode::Writable), Err(Error::Busy));
        assert_eq!(t.share(f, B, None, C, Rights::RW, ShareMode::Writable), Err(Error::Busy));
        assert!(!t.get(f).unwrap().shared_writable);
        // Once B lets go, A alone may share it writable.
        assert_eq!(t.remove_mapping(f, B, 0x1000), Removed::Kept);
        assert_eq!(writable(&mut t, f, A, C).mode, ShareMode::Writable);
        let g = FrameNumber(12);
        t.insert(g, A, FrameKind::Data);
        t.pin(g, A).unwrap();
        assert_eq!(t.share(g, A, None, B, Rights::RW, ShareMode::Writable), Err(Error::Busy));
        assert_eq!(t.share(g, A, None, B, Rights::READ, ShareMode::CopyOnWrite), Err(Error::Busy));
        // Read-only sharer rights stay read-only when passed on.
        let h = FrameNumber(13);
        t.insert(h, A, FrameKind::Data);
        t.share(h, A, None, B, Rights::READ, ShareMode::Writable).unwrap();
        t.add_mapping(h, B, 0x1000);
        assert_eq!(t.check_map(h, B, Rights::RW), Err(Error::PermissionDenied));
        assert_eq!(
            t.share(h, B, None, C, Rights::RW, ShareMode::Writable),
            Ok(Shared { rights: Rights::READ, mode: ShareMode::Writable })
        );
    }

    #[test]
    fn a_writable_share_outlives_its_owner_and_each_holder_lets_go_alone() {
        let mut t = table();
        let f = FrameNumber(10);
        t.add_mapping(f, A, 0x1000);
        writable(&mut t, f, A, B);
        t.add_mapping(f, B, 0x1000);
        writable(&mut t, f, B, C);
        t.add_mapping(f, C, 0x3000);
        // The owner frees it: only its own hold goes; still charged to A.
        assert_eq!(t.free(f, A), Err(Error::Busy), "A still maps it");
        assert_eq!(t.remove_mapping(f, A, 0x1000), Removed::Kept);
        assert_eq!(t.free(f, A), Ok(Freed::Later));
        assert_eq!(t.check_map(f, B, Rights::RW), Ok(()));
        assert_eq!(t.check_map(f, A, Rights::READ), Err(Error::NotOwner));
        // A sharer cannot free it (only let go by unmapping).
        assert_eq!(t.free(f, B), Err(Error::NotOwner));
        assert_eq!(t.remove_mapping(f, B, 0x1000), Removed::Kept);
        assert_eq!(t.check_map(f, B, Rights::READ), Err(Error::NotOwner), "B let go");
        assert_eq!(t.check_map(f, C, Rights::RW), Ok(()));
        assert_eq!(t.remove_mapping(f, C, 0x3000), Removed::Released { owner: A });
        assert!(t.get(f).is_none());
    }

    #[test]
    fn an_owner_dying_leaves_writable_sharers_their_frame() {
        let mut t = table();
        let f = FrameNumber(10);
        t.add_mapping(f, A, 0x1000);
        t.grant(f, A, D, Rights::RW).unwrap();
        t.add_mapping(f, D, 0x4000);
        writable(&mut t, f, A, B);
        t.add_mapping(f, B, 0x1000);
        assert_eq!(t.remove_mapping(f, A, 0x1000), Removed::Kept);
        assert_eq!(
            t.release_step(f, A, 8),
            Some(ReleaseStep::Unmap(vec![Mapping { env: D, va: 0x4000 }])),
            "the grantee goes, the sharer stays"
        );
        assert_eq!(t.remove_mapping(f, D, 0x4000), Removed::Kept);
        assert_eq!(t.release_step(f, A, 8), Some(ReleaseStep::Kept));
        assert_eq!(t.check_map(f, B, Rights::RW), Ok(()));
        // B, the sole holder, adopts it (becomes charged for it).
        assert_eq!(t.adopt(f, B), Ok(A));
        assert_eq!(t.get(f).unwrap().owner, B);
        assert_eq!(t.free(f, B), Err(Error::Busy), "B maps it");
        assert_eq!(t.remove_mapping(f, B, 0x1000), Removed::Kept);
        assert_eq!(t.free(f, B), Ok(Freed::Now));
    }

    const D: EnvId = EnvId(4);
    const E: EnvId = EnvId(5);

    proptest::proptest! {
        /// Any sequence of writable shares, mappings, unmappings, frees and
        /// deaths among five environments: the frame is freed exactly once,
        /// charged to its first owner until then, and only when nobody holds
        /// it; every holder may map it writable (if given) while it holds.
        #[test]
        fn writable_shares_release_exactly_once(
            ops in proptest::collection::vec((0u8..5, 1u32..6, 1u32..6, 0u64..3), 1..60)
        ) {
            let mut t = FrameTable::new();
            let f = FrameNumber(7);
            t.insert(f, A, FrameKind::Data);
            t.add_mapping(f, A, 0);
            let mut released = false;
            let mut dead = [false; 6];
            for (op, x, y, va) in ops {
                let (x, y) = (EnvId(x), EnvId(y));
                if released || dead[x.0 as usize] {
                    continue;
                }
                let holding = |t: &FrameTable, e: EnvId| {
                    t.get(f).is_some_and(|r| {
                        (r.owner == e && !r.released) || r.sharers.iter().any(|s| s.env == e)
                    })
                };
                match op {
                    0 if !dead[y.0 as usize]
                        && t.share(f, x, None, y, Rights::RW, ShareMode::Writable).is_ok() =>
                    {
                        t.add_mapping(f, y, va);
                    }
                    1 if holding(&t, x) => t.add_mapping(f, x, va),
                    2 => {
                        if let Removed::Released { owner } = t.remove_mapping(f, x, va) {
                            proptest::prop_assert_eq!(owner, A);
                            released = true;
                        }
                    }
                    3 => match t.free(f, x) {
                        Ok(Freed::Now) => released = true,
                        Ok(Freed::Later) | Err(_) => {}
                    },
                    4 => {
                        // x dies: its mappings go, then its frame's release.
                        dead[x.0 as usize] = true;
                        let mine: Vec<Mapping> = t.get(f).map_or(Vec::new(), |r| {
                            r.mappings.iter().filter(|m| m.env == x).copied().collect()
                        });
                        for m in mine {
                            if let Removed::Released { .. } = t.remove_mapping(f, x, m.va) {
                                released = true;
                            }
                        }
                        if !released {
                            while let Some(step) = t.release_step(f, x, 2) {
                                match step {
                                    ReleaseStep::Unmap(ms) => {
                                        for m in ms {
                                            let r = t.remove_mapping(f, m.env, m.va);
                                            proptest::prop_assert_eq!(r, Removed::Kept);
                                        }
                                    }
                                    ReleaseStep::Released => { released = true; break; }
                                    ReleaseStep::Kept => break,
                                }
                            }
                        }
                    }
                    _ => {}
                }
                match t.get(f) {
                    None => proptest::prop_assert!(released),
                    Some(r) => {
                        proptest::prop_assert!(!released);
                        proptest::prop_assert_eq!(r.owner, A, "charged to A all along");
                        proptest::prop_assert!(r.holders() > 0 || !r.released);
                        for s in &r.sharers {
                            proptest::prop_assert!(!dead[s.env.0 as usize] || r.mappings.iter().all(|m| m.env != s.env));
                            proptest::prop_assert_eq!(t.check_map(f, s.env, Rights::RW), Ok(()));
                        }
                        proptest::prop_assert!(!r.cow_shared());
                    }
                }
            }
        }
    }
}
