//! The descriptor table: small integers naming shared open-file descriptions.
//!
//! This module owns which descriptor numbers are in use, their close-on-exec
//! flag, and the sharing of descriptions between duplicates: `dup`,
//! `dup2`, `dup3` and `F_DUPFD` give a second number for the *same*
//! description (`Rc<D>`), so offset and status flags are shared, while
//! `FD_CLOEXEC` belongs to the number (POSIX; Linux `fs/file.c`).
//!
//! Invariants: a new descriptor is the lowest free number ≥ the minimum
//! asked for; numbers are below [`FdTable::limit`] (`RLIMIT_NOFILE`,
//! default 1024); a description is released (its last `Rc` handed back to
//! the caller) exactly when its last number is closed or replaced. Errors
//! are Linux's: `EBADF` for a closed or out-of-range number, `EMFILE` when
//! none is free, `EINVAL` for an `F_DUPFD` minimum at or past the limit or a
//! `dup3` to the same number.

use crate::linux::{SysResult, errno};
use alloc::rc::Rc;
use alloc::vec::Vec;

/// Linux's default `RLIMIT_NOFILE` soft limit.
pub const DEFAULT_LIMIT: usize = 1024;

struct Slot<D> {
    desc: Rc<D>,
    cloexec: bool,
}

/// A descriptor table over descriptions of type `D`.
pub struct FdTable<D> {
    slots: Vec<Option<Slot<D>>>,
    limit: usize,
}

impl<D> core::fmt::Debug for FdTable<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.fds()).finish()
    }
}

impl<D> FdTable<D> {
    /// An empty table with room for `limit` descriptors.
    pub fn new(limit: usize) -> Self {
        FdTable { slots: Vec::new(), limit }
    }

    /// The descriptor limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn slot(&self, fd: i32) -> SysResult<&Slot<D>> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get(i))
            .and_then(Option::as_ref)
            .ok_or(errno::EBADF)
    }

    /// The description `fd` names.
    pub fn get(&self, fd: i32) -> SysResult<&Rc<D>> {
        self.slot(fd).map(|s| &s.desc)
    }

    /// Installs `desc` at the lowest free number ≥ `min`.
    pub fn insert(&mut self, desc: Rc<D>, cloexec: bool, min: usize) -> SysResult<i32> {
        if min >= self.limit {
            return Err(errno::EINVAL);
        }
        let free = (min..self.limit).find(|&i| self.slots.get(i).is_none_or(Option::is_none));
        let i = free.ok_or(errno::EMFILE)?;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some(Slot { desc, cloexec });
        Ok(i as i32)
    }

    /// Removes `fd`; returns its description (the caller releases it if this
    /// was the last reference).
    pub fn close(&mut self, fd: i32) -> SysResult<Rc<D>> {
        self.slot(fd)?;
        let s = self.slots[fd as usize].take().expect("checked");
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        Ok(s.desc)
    }

    /// `dup(2)`: a new number for `fd`'s description, close-on-exec clear.
    pub fn dup(&mut self, fd: i32) -> SysResult<i32> {
        let d = self.get(fd)?.clone();
        self.insert(d, false, 0).map_err(|e| if e == errno::EINVAL { errno::EMFILE } else { e })
    }

    /// `fcntl(F_DUPFD / F_DUPFD_CLOEXEC)`.
    pub fn dup_min(&mut self, fd: i32, min: usize, cloexec: bool) -> SysResult<i32> {
        let d = self.get(fd)?.clone();
        self.insert(d, cloexec, min)
    }

    /// `dup2(2)`/`dup3(2)`: makes `new` name `old`'s description, closing
    /// what `new` named (returned for release). `dup2(fd, fd)` checks `fd`
    /// and does nothing; `dup3` refuses it with `EINVAL` (`same_is_error`).
    pub fn dup2(
        &mut self,
        old: i32,
        new: i32,
        cloexec: bool,
        same_is_error: bool,
    ) -> SysResult<(i32, Option<Rc<D>>)> {
        let d = self.get(old)?.clone();
        if old == new {
            return if same_is_error { Err(errno::EINVAL) } else { Ok((new, None)) };
        }
        let i = usize::try_from(new).ok().filter(|&i| i < self.limit).ok_or(errno::EBADF)?;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        let old_slot = self.slots[i].replace(Slot { desc: d, cloexec });
        Ok((new, old_slot.map(|s| s.desc)))
    }

    /// Whether `fd` is close-on-exec.
    pub fn cloexec(&self, fd: i32) -> SysResult<bool> {
        self.slot(fd).map(|s| s.cloexec)
    }

    /// Sets or clears `fd`'s close-on-exec flag.
    pub fn set_cloexec(&mut self, fd: i32, on: bool) -> SysResult<()> {
        self.slot(fd)?;
        self.slots[fd as usize].as_mut().expect("checked").cloexec = on;
        Ok(())
    }

    /// Closes every close-on-exec descriptor (at `execve`); returns their
    /// descriptions for release.
    pub fn close_on_exec(&mut self) -> Vec<Rc<D>> {
        let fds: Vec<i32> = self.fds().filter(|&fd| self.cloexec(fd) == Ok(true)).collect();
        fds.into_iter().map(|fd| self.close(fd).expect("open")).collect()
    }

    /// The open descriptor numbers, ascending.
    pub fn fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.slots.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| i as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use proptest::prelude::*;

    #[test]
    fn lowest_free_and_errors() {
        let mut t = FdTable::new(4);
        let a = Rc::new(Cell::new(0u64));
        assert_eq!(t.insert(a.clone(), false, 0), Ok(0));
        assert_eq!(t.insert(a.clone(), false, 0), Ok(1));
        assert_eq!(t.insert(a.clone(), false, 3), Ok(3));
        assert_eq!(t.insert(a.clone(), false, 0), Ok(2));
        assert_eq!(t.insert(a.clone(), false, 0), Err(errno::EMFILE));
        assert_eq!(t.dup(0), Err(errno::EMFILE));
        assert_eq!(t.dup_min(0, 4, false), Err(errno::EINVAL));
        t.close(1).unwrap();
        assert_eq!(t.close(1).unwrap_err(), errno::EBADF);
        assert_eq!(t.get(-1).unwrap_err(), errno::EBADF);
        assert_eq!(t.get(99).unwrap_err(), errno::EBADF);
        assert_eq!(t.dup(0), Ok(1));
        assert_eq!(t.dup2(0, 4, false, false).unwrap_err(), errno::EBADF);
        assert_eq!(t.dup2(0, -1, false, false).unwrap_err(), errno::EBADF);
        assert_eq!(t.dup2(9, 1, false, false).unwrap_err(), errno::EBADF);
        assert_eq!(t.dup2(0, 0, false, false).unwrap().0, 0);
        assert_eq!(t.dup2(0, 0, false, true).unwrap_err(), errno::EINVAL);
    }

    #[test]
    fn shared_description_and_cloexec() {
        let mut t = FdTable::new(DEFAULT_LIMIT);
        let a = Rc::new(Cell::new(0u64));
        let fd = t.insert(a.clone(), true, 0).unwrap();
        let d = t.dup(fd).unwrap();
        t.get(fd).unwrap().set(42);
        assert_eq!(t.get(d).unwrap().get(), 42, "offset shared");
        assert_eq!(t.cloexec(fd), Ok(true));
        assert_eq!(t.cloexec(d), Ok(false), "dup clears FD_CLOEXEC");
        let c = t.dup_min(fd, 10, true).unwrap();
        assert_eq!(c, 10);
        assert_eq!(t.close_on_exec().len(), 2);
        assert_eq!(t.fds().collect::<Vec<_>>(), [d]);
        // Replaced description comes back for release.
        let b = Rc::new(Cell::new(7));
        t.insert(b, false, 0).unwrap();
        let (_, old) = t.dup2(d, 0, false, false).unwrap();
        assert_eq!(old.unwrap().get(), 7);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Open,
        Dup(i32),
        Dup2(i32, i32),
        DupMin(i32, usize),
        Close(i32),
        Set(i32, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let fd = -1i32..10;
        prop_oneof![
            Just(Op::Open),
            fd.clone().prop_map(Op::Dup),
            (fd.clone(), fd.clone()).prop_map(|(a, b)| Op::Dup2(a, b)),
            (fd.clone(), 0usize..10).prop_map(|(a, m)| Op::DupMin(a, m)),
            fd.clone().prop_map(Op::Close),
            (fd, any::<u64>()).prop_map(|(a, v)| Op::Set(a, v)),
        ]
    }

    proptest! {
        /// Against a model of fd → description id: lowest-free allocation,
        /// EBADF/EMFILE, sharing through dups, and release exactly when the
        /// last number of a description goes.
        #[test]
        fn dup_semantics(ops in proptest::collection::vec(op(), 1..60)) {
            const LIMIT: usize = 8;
            let mut t: FdTable<(usize, Cell<u64>)> = FdTable::new(LIMIT);
            let mut model: [Option<usize>; LIMIT] = [None; LIMIT];
            let mut values: std::collections::HashMap<usize, u64> = Default::default();
            let mut next_id = 0;
            let mut released = 0usize;
            let ok = |fd: i32, m: &[Option<usize>; LIMIT]| (0..LIMIT as i32).contains(&fd) && m[fd as usize].is_some();
            let lowest = |min: usize, m: &[Option<usize>; LIMIT]| (min..LIMIT).find(|&i| m[i].is_none());
            let mut release = |d: Option<Rc<(usize, Cell<u64>)>>| if d.is_some_and(|d| Rc::strong_count(&d) == 1) { released += 1; };
            for op in ops {
                match op {
                    Op::Open => {
                        let want = lowest(0, &model).map(|i| i as i32).ok_or(errno::EMFILE);
                        let got = t.insert(Rc::new((next_id, Cell::new(0))), false, 0);
                        prop_assert_eq!(got, want);
                        if let Ok(i) = got { model[i as usize] = Some(next_id); values.insert(next_id, 0); }
                        next_id += 1;
                    }
                    Op::Dup(fd) => {
                        let want = if !ok(fd, &model) { Err(errno::EBADF) } else { lowest(0, &model).map(|i| i as i32).ok_or(errno::EMFILE) };
                        let got = t.dup(fd);
                        prop_assert_eq!(got, want);
                        if let Ok(i) = got { model[i as usize] = model[fd as usize]; }
                    }
                    Op::DupMin(fd, min) => {
                        let want = if !ok(fd, &model) { Err(errno::EBADF) } else if min >= LIMIT { Err(errno::EINVAL) } else { lowest(min, &model).map(|i| i as i32).ok_or(errno::EMFILE) };
                        let got = t.dup_min(fd, min, true);
                        prop_assert_eq!(got, want);
                        if let Ok(i) = got { model[i as usize] = model[fd as usize]; }
                    }
                    Op::Dup2(a, b) => {
                        let want = if !ok(a, &model) || !(0..LIMIT as i32).contains(&b) { Err(errno::EBADF) } else { Ok(b) };
                        let got = t.dup2(a, b, false, false);
                        prop_assert_eq!(got.as_ref().map(|g| g.0).map_err(|e| *e), want);
                        if let Ok((_, old)) = got { release(old); model[b as usize] = model[a as usize]; }
                    }
                    Op::Close(fd) => {
                        let got = t.close(fd);
                        prop_assert_eq!(got.is_ok(), ok(fd, &model));
                        if let Ok(d) = got { release(Some(d)); model[fd as usize] = None; }
                    }
                    Op::Set(fd, v) => {
                        if let Ok(d) = t.get(fd) { d.1.set(v); values.insert(model[fd as usize].unwrap(), v); }
                    }
                }
                // Every number names the description the model says, with its shared value.
                for (i, m) in model.iter().enumerate() {
                    match (t.get(i as i32), m) {
                        (Ok(d), Some(id)) => { prop_assert_eq!(d.0, *id); prop_assert_eq!(d.1.get(), values[id]); }
                        (Err(_), None) => {}
                        _ => prop_assert!(false, "fd {} disagrees", i),
                    }
                }
            }
            let live: std::collections::HashSet<usize> = model.iter().flatten().copied().collect();
            prop_assert_eq!(released + live.len(), next_id - (next_id - values.len()));
        }
    }
}
