//! Host mocks of the glue's traits, for the tests.
#![allow(missing_docs)]

use crate::host::{Clock, Console, Host, Memory, UserMemory};
use crate::linux::{PAGE_SIZE, PROT_READ, PROT_WRITE, SysResult, errno};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

/// A console whose output is kept and whose input is a fixed string.
#[derive(Clone, Default)]
pub struct MockConsole {
    pub out: Rc<RefCell<Vec<u8>>>,
    pub input: Rc<RefCell<Vec<u8>>>,
}

impl Console for MockConsole {
    fn write(&mut self, data: &[u8]) -> usize {
        self.out.borrow_mut().extend_from_slice(data);
        data.len()
    }
    fn read(&mut self, buf: &mut [u8]) -> SysResult<usize> {
        let mut i = self.input.borrow_mut();
        let n = buf.len().min(i.len());
        buf[..n].copy_from_slice(&i[..n]);
        i.drain(..n);
        Ok(n)
    }
}

impl MockConsole {
    pub fn boxed(&self) -> Box<dyn Console> {
        Box::new(self.clone())
    }
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.out.borrow()).into()
    }
}

/// A sparse address space of 4 KiB pages with rights.
#[derive(Default)]
pub struct MockMemory {
    pub pages: BTreeMap<u64, (u32, Vec<u8>)>,
    pub calls: Vec<(&'static str, u64, u64, u32)>,
    /// Take images without a copy by the loader (`map_image` answers
    /// `true`, filling the pages itself, as a lazy glue does at first touch).
    pub image_maps: bool,
}

impl MockMemory {
    fn each(&self, addr: u64, len: usize, need: u32) -> SysResult<()> {
        if len == 0 {
            return Ok(());
        }
        let end = addr.checked_add(len as u64).ok_or(errno::EFAULT)?;
        let mut p = addr & !(PAGE_SIZE - 1);
        while p < end {
            match self.pages.get(&p) {
                Some((prot, _)) if prot & need == need => {}
                _ => return Err(errno::EFAULT),
            }
            p += PAGE_SIZE;
        }
        Ok(())
    }
    /// Makes `[addr, addr+len)` readable and writable (for test setup).
    pub fn ensure(&mut self, addr: u64, len: u64) {
        let mut p = addr & !(PAGE_SIZE - 1);
        while p < addr + len {
            self.pages.entry(p).or_insert((PROT_READ | PROT_WRITE, vec![0; PAGE_SIZE as usize]));
            p += PAGE_SIZE;
        }
    }
    pub fn put(&mut self, addr: u64, data: &[u8]) {
        self.ensure(addr, data.len() as u64);
        self.write(addr, data).unwrap();
    }
    pub fn get(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.read(addr, &mut v).unwrap();
        v
    }
    pub fn prot(&self, addr: u64) -> Option<u32> {
        self.pages.get(&(addr & !(PAGE_SIZE - 1))).map(|p| p.0)
    }
}

impl UserMemory for MockMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> SysResult<()> {
        self.each(addr, buf.len(), PROT_READ)?;
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr + i as u64;
            *b = self.pages[&(a & !(PAGE_SIZE - 1))].1[(a % PAGE_SIZE) as usize];
        }
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> SysResult<()> {
        self.each(addr, data.len(), PROT_WRITE)?;
        for (i, b) in data.iter().enumerate() {
            let a = addr + i as u64;
            self.pages.get_mut(&(a & !(PAGE_SIZE - 1))).unwrap().1[(a % PAGE_SIZE) as usize] = *b;
        }
        Ok(())
    }
}

impl Memory for MockMemory {
    fn map(&mut self, addr: u64, len: u64, prot: u32) -> SysResult<()> {
        assert!(addr.is_multiple_of(PAGE_SIZE) && len.is_multiple_of(PAGE_SIZE) && len > 0);
        self.calls.push(("map", addr, len, prot));
        for p in (addr..addr + len).step_by(PAGE_SIZE as usize) {
            self.pages.insert(p, (prot, vec![0; PAGE_SIZE as usize]));
        }
        Ok(())
    }
    fn unmap(&mut self, addr: u64, len: u64) -> SysResult<()> {
        self.calls.push(("unmap", addr, len, 0));
        for p in (addr..addr + len).step_by(PAGE_SIZE as usize) {
            assert!(self.pages.remove(&p).is_some(), "unmap of an unmapped page {p:#x}");
        }
        Ok(())
    }
    fn protect(&mut self, addr: u64, len: u64, prot: u32) -> SysResult<()> {
        self.calls.push(("protect", addr, len, prot));
        for p in (addr..addr + len).step_by(PAGE_SIZE as usize) {
            self.pages.get_mut(&p).expect("protect of an unmapped page").0 = prot;
        }
        Ok(())
    }
    fn map_image(
        &mut self,
        addr: u64,
        len: u64,
        prot: u32,
        vaddr: u64,
        bytes: &[u8],
    ) -> SysResult<bool> {
        if !self.image_maps {
            return Ok(false);
        }
        assert!(addr <= vaddr && vaddr + bytes.len() as u64 <= addr + len);
        self.calls.push(("map_image", addr, len, prot));
        for p in (addr..addr + len).step_by(PAGE_SIZE as usize) {
            self.pages.insert(p, (prot, vec![0; PAGE_SIZE as usize]));
        }
        for (i, &b) in bytes.iter().enumerate() {
            let a = vaddr + i as u64;
            self.pages.get_mut(&(a & !(PAGE_SIZE - 1))).unwrap().1[(a % PAGE_SIZE) as usize] = b;
        }
        Ok(true)
    }
}

/// A clock that advances only when slept on.
#[derive(Clone, Default)]
pub struct MockClock {
    pub now: Rc<RefCell<u64>>,
}

impl Clock for MockClock {
    fn monotonic_ns(&self) -> u64 {
        *self.now.borrow()
    }
    fn realtime_ns(&self) -> u64 {
        1_700_000_000_000_000_000 + *self.now.borrow()
    }
    fn resolution_ns(&self) -> u64 {
        1000
    }
    fn sleep_until(&mut self, deadline: u64) {
        let mut n = self.now.borrow_mut();
        *n = (*n).max(deadline);
    }
}

/// Records FS bases and reports.
#[derive(Clone, Default)]
pub struct MockHost {
    pub fs: Rc<RefCell<Option<u64>>>,
    pub reports: Rc<RefCell<Vec<String>>>,
}

impl Host for MockHost {
    fn set_fs(&mut self, base: u64) -> SysResult<()> {
        *self.fs.borrow_mut() = Some(base);
        Ok(())
    }
    fn random(&mut self, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
    }
    fn report(&mut self, line: &str) {
        self.reports.borrow_mut().push(line.into());
    }
}

/// One mock address space shared by the `Memory` the process owns and the
/// `UserMemory` passed to each call.
#[derive(Clone, Default)]
pub struct Shared(pub Rc<RefCell<MockMemory>>);

impl Shared {
    /// The page holding all of `[addr, addr+len)` (`len` ≥ 1) with `need`,
    /// and the range's offset in it: the ranges `read_with`/`write_with`
    /// hand over in place, as the glue does (others go through a buffer,
    /// the trait's default).
    fn in_page(&self, addr: u64, len: usize, need: u32) -> Option<(u64, usize)> {
        let page = addr & !(PAGE_SIZE - 1);
        let off = (addr - page) as usize;
        let ok = len > 0
            && off + len <= PAGE_SIZE as usize
            && self.0.borrow().pages.get(&page).is_some_and(|(prot, _)| prot & need == need);
        ok.then_some((page, off))
    }
}

impl UserMemory for Shared {
    fn read(&self, addr: u64, buf: &mut [u8]) -> SysResult<()> {
        self.0.borrow().read(addr, buf)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> SysResult<()> {
        self.0.borrow_mut().write(addr, data)
    }
    fn read_with(&self, addr: u64, len: usize, f: &mut dyn FnMut(&[u8])) -> SysResult<()> {
        let Some((page, off)) = self.in_page(addr, len, PROT_READ) else {
            let mut buf = vec![0; len];
            self.read(addr, &mut buf)?;
            f(&buf);
            return Ok(());
        };
        // Borrowed while `f` runs: a call back into this memory from `f`
        // (the glue's program memory is not to be touched then) panics.
        let m = self.0.borrow();
        f(&m.pages[&page].1[off..off + len]);
        Ok(())
    }
    fn write_with(&mut self, addr: u64, len: usize, f: &mut dyn FnMut(&mut [u8])) -> SysResult<()> {
        let Some((page, off)) = self.in_page(addr, len, PROT_WRITE) else {
            let mut buf = vec![0; len];
            f(&mut buf);
            return self.write(addr, &buf);
        };
        let mut m = self.0.borrow_mut();
        let p = &mut m.pages.get_mut(&page).expect("checked").1;
        // Poisoned first: `f` must overwrite every byte.
        p[off..off + len].fill(0xa5);
        f(&mut p[off..off + len]);
        Ok(())
    }
}

impl Memory for Shared {
    fn map(&mut self, addr: u64, len: u64, prot: u32) -> SysResult<()> {
        self.0.borrow_mut().map(addr, len, prot)
    }
    fn unmap(&mut self, addr: u64, len: u64) -> SysResult<()> {
        self.0.borrow_mut().unmap(addr, len)
    }
    fn protect(&mut self, addr: u64, len: u64, prot: u32) -> SysResult<()> {
        self.0.borrow_mut().protect(addr, len, prot)
    }
    fn map_image(
        &mut self,
        addr: u64,
        len: u64,
        prot: u32,
        vaddr: u64,
        bytes: &[u8],
    ) -> SysResult<bool> {
        self.0.borrow_mut().map_image(addr, len, prot, vaddr, bytes)
    }
}
