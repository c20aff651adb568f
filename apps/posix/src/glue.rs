//! libos-posix's doors to the machine ([`libos_posix::host`]), built from
//! the exokernel's primitives.
//!
//! | trait | here |
//! |---|---|
//! | `Memory` | [`Mem`]: lazy areas ([`Book`]): a page gets its frame (`AllocMap`, zeroed, or filled from the initrd for an image's segment, then `Protect`ed) at its first touch; `Unmap`/`Protect`/`FrameFree` of backed pages; a backed page made `PROT_NONE` keeps its frame unmapped |
//! | `UserMemory` | [`Umem`]: copies checked page by page against the same page record (backing lazy pages first), so a program's pointer can reach only its own mappings with the rights they have, never this runtime's memory |
//! | `Clock` | [`Clk`]: the TSC and the info page's `tsc_hz`; sleeping with a `SleepOn` TSC-deadline predicate |
//! | `Console` | [`Con`]: [`emit`], stream 1 (stdout) and 2 (stderr) |
//! | `Host` | [`Sys`]: `SetFsBase`, `rdrand` mixed with the TSC, reports on the kernel console |
//!
//! After a fork (`procs::FORKED`) the record's frame numbers may be stale
//! (copy-on-write copies replace frames); freeing asks the kernel
//! (`PageQuery`) which frame is mapped and whether it is ours. Not done: a
//! `PROT_NONE` page inherited from the parent keeps the parent's frame
//! number, which the child does not hold, so `mprotect`ing it accessible
//! again in the child fails (`ENOMEM`).
//!
//! The program's memory is lazy, as Linux's: `mmap`, `brk`, the stack and
//! the segments of an image from the initrd (`Memory::map_image`: no copy
//! at `execve`) are areas; a page is backed at the program's first fault on
//! it (`redirect::program_exception` → [`Umem::fault_in`], resumed through
//! the kernel) or when a checked copy reaches it, so a checked copy never
//! faults. Fewer backed pages make `fork` (`ShareRange`), `execve` and the
//! end of a process cheaper. A page that cannot get a frame (quota) is a
//! fault (`SIGSEGV`, where Linux's OOM killer would send `SIGKILL`) or
//! `ENOMEM` from a system call.

use crate::layout;
use abi::{ConsoleStream, Error, Rights};
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libos_async::Pred;
use libos_async::abi;
use libos_async::sys;
use libos_posix::host::{Clock, Console, Host, Memory, UserMemory};
use libos_posix::linux::errno::{EFAULT, EINTR, EINVAL, EIO, ENOMEM};
use libos_posix::linux::{PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, SysResult};

/// Standard output's stream.
pub const STDOUT: ConsoleStream = ConsoleStream::Stdout;
/// Standard error's stream.
pub const STDERR: ConsoleStream = ConsoleStream::Stderr;

/// The one place the program's output leaves this environment: console
/// stream 1 (stdout) or 2 (stderr) (`ConsoleWrite`'s `rdx`; under
/// `console=split` each is its own byte-exact channel).
pub fn emit(stream: ConsoleStream, data: &[u8]) {
    for chunk in data.chunks(abi::CONSOLE_WRITE_MAX as usize) {
        let _ = sys::console_write_to(stream, chunk);
    }
}

/// A line of the runtime's own (diagnostics: unimplemented system calls),
/// on the kernel console (stream 0, the run's log), never mixed into the
/// program's output.
pub fn log_line(line: &str) {
    let _ = sys::console_write(line.as_bytes());
    let _ = sys::console_write(b"\n");
}

/// One backed page of the program: its frame and its `PROT_*` rights (0:
/// mapped nowhere, the frame kept for a later `mprotect`).
#[derive(Clone, Copy, Debug)]
pub struct Page {
    frame: u64,
    prot: u32,
}

/// Where a lazy area's bytes come from: program addresses `lo..hi` hold
/// the bytes at `from..` of this runtime's read-only initrd mapping (an
/// image's file contents); every other byte of the area is zero.
#[derive(Clone, Copy, Debug)]
struct Src {
    lo: u64,
    hi: u64,
    from: u64,
}

/// A range mapped for the program whose pages get a frame only when first
/// touched (a fault of the program, or a checked copy of this runtime).
#[derive(Clone, Copy, Debug)]
struct Area {
    end: u64,
    prot: u32,
    src: Option<Src>,
}

/// The program's memory: pages backed by a frame, and lazy areas (keyed
/// by their start, never overlapping). A page is mapped for the program if
/// it is backed, or else lies in a lazy area; a backed page's entry wins
/// over the area it lies in.
#[derive(Default)]
pub struct Book {
    pages: BTreeMap<u64, Page>,
    lazy: BTreeMap<u64, Area>,
}

/// The program's pages, shared by [`Mem`] (which changes them) and
/// [`Umem`] (which checks copies against them and backs lazy pages).
pub type Pages = Rc<RefCell<Book>>;

/// A new, empty page record.
pub fn pages() -> Pages {
    Rc::new(RefCell::new(Book::default()))
}

/// Bytes of the initrd mapped at `layout::INITRD_VA` (set at start, kept
/// by a forked child, which maps the initrd again at the same address).
pub static INITRD_LEN: AtomicU64 = AtomicU64::new(0);

/// The frame number of the initrd's first page (0: unknown): its frames
/// are consecutive, so an image page at a page-aligned offset of the
/// initrd is frame `INITRD_FIRST_FRAME + offset / PAGE_SIZE`.
static INITRD_FIRST_FRAME: AtomicU64 = AtomicU64::new(0);

/// Records the initrd's first frame (after `InitrdMap` at
/// `layout::INITRD_VA`), for [`Book::back`]'s direct mappings.
pub fn note_initrd_frames() {
    if let Ok(q) = sys::page_query(layout::INITRD_VA) {
        INITRD_FIRST_FRAME.store(q >> 12, Ordering::Relaxed);
    }
}

/// The initrd frame holding the bytes at `from` (in the initrd mapping,
/// page-aligned), if known.
fn initrd_frame(from: u64) -> Option<u64> {
    let first = INITRD_FIRST_FRAME.load(Ordering::Relaxed);
    let len = INITRD_LEN.load(Ordering::Relaxed);
    let offset = from.checked_sub(layout::INITRD_VA)?;
    (first != 0 && from.is_multiple_of(PAGE_SIZE) && offset + PAGE_SIZE <= len)
        .then(|| first + offset / PAGE_SIZE)
}

/// Whether `frame` is one of the initrd's (the kernel's: never freed by us,
/// never made writable).
fn is_initrd_frame(frame: u64) -> bool {
    let first = INITRD_FIRST_FRAME.load(Ordering::Relaxed);
    first != 0
        && (first..first + INITRD_LEN.load(Ordering::Relaxed).div_ceil(PAGE_SIZE)).contains(&frame)
}

/// Replaces initrd page `frame` at `va` (mapped there if `mapped`) by a
/// copy in a frame of our own, mapped with `r`; returns the new frame.
fn private_copy(va: u64, frame: u64, mapped: bool, r: Rights) -> Result<u64, Error> {
    let first = INITRD_FIRST_FRAME.load(Ordering::Relaxed);
    let from = layout::INITRD_VA + (frame - first) * PAGE_SIZE;
    if mapped {
        sys::unmap(va)?;
    }
    let copy = sys::alloc_map_one(va, Rights::RW)?;
    // SAFETY: `va`'s page was just mapped writable for us (a program page,
    // below PROGRAM_END: no object of this runtime); `from` is a whole
    // page of the read-only initrd mapping (`frame` is an initrd frame),
    // mapped for the environment's life.
    unsafe { core::ptr::copy_nonoverlapping(from as *const u8, va as *mut u8, PAGE_SIZE as usize) };
    if r != Rights::RW {
        sys::protect(va, r)?;
    }
    Ok(copy)
}

/// Pages a fault on a read-only image page maps at once around it, in one
/// `MapBatch` of initrd frames (Linux's `fault_around_bytes` is 64 KiB).
/// Measured (`cargo xtask bench --icount posix_busybox_true
/// posix_sh_echo`): 16 made `busybox true` 1.29 M against 1.12 M at 1, and
/// 4 was no better than 1 on any workload: a short process touches few of
/// the pages around, and each extra page costs its record in the [`Book`]
/// (a `BTreeMap` insert), its mapping and its removal at the end.
const FAULT_AROUND: u64 = 1;

fn rights(prot: u32) -> Option<Rights> {
    if prot & (PROT_READ | PROT_WRITE | PROT_EXEC) == 0 {
        return None;
    }
    // x86 pages are always readable when present; the kernel asks for READ.
    let mut r = Rights::READ;
    if prot & PROT_WRITE != 0 {
        r = r.union(Rights::WRITE);
    }
    if prot & PROT_EXEC != 0 {
        r = r.union(Rights::EXEC);
    }
    Some(r)
}

fn nomem(_: Error) -> libos_posix::linux::Errno {
    ENOMEM
}

impl Book {
    /// The lazy area holding `va`, if any.
    fn area_at(&self, va: u64) -> Option<Area> {
        self.lazy.range(..=va).next_back().map(|(_, a)| *a).filter(|a| a.end > va)
    }

    /// Cuts `[start, end)` out of the lazy areas; returns the pieces cut
    /// out (clipped), for a caller that puts them back changed.
    fn cut(&mut self, start: u64, end: u64) -> Vec<(u64, Area)> {
        let first = self.lazy.range(..start).next_back().map_or(start, |(&s, _)| s);
        let hit: Vec<(u64, Area)> = self
            .lazy
            .range(first..end)
            .filter(|(_, a)| a.end > start)
            .map(|(&s, &a)| (s, a))
            .collect();
        let mut out = Vec::with_capacity(hit.len());
        for (s, a) in hit {
            self.lazy.remove(&s);
            if s < start {
                self.lazy.insert(s, Area { end: start, ..a });
            }
            if a.end > end {
                self.lazy.insert(end, a);
            }
            out.push((s.max(start), Area { end: a.end.min(end), ..a }));
        }
        out
    }

    /// The backed pages in `[start, end)`.
    fn backed(&self, start: u64, end: u64) -> Vec<u64> {
        self.pages.range(start..end).map(|(&va, _)| va).collect()
    }

    /// Gives lazy page `va` of `area` its frame (zeroed, or filled from the
    /// area's source), mapped with the area's rights, and records it.
    fn back(&mut self, va: u64, area: Area) -> SysResult<()> {
        let r = rights(area.prot).ok_or(EFAULT)?;
        if self.back_from_initrd(va, area, r) {
            return Ok(());
        }
        let src = area.src.filter(|s| s.lo < va + PAGE_SIZE && s.hi > va);
        let frame = match src {
            None => sys::alloc_map_one(va, r).map_err(nomem)?,
            Some(s) => {
                let frame = sys::alloc_map_one(va, Rights::RW).map_err(nomem)?;
                let (a, b) = (s.lo.max(va), s.hi.min(va + PAGE_SIZE));
                // SAFETY: `va`'s page was just mapped writable for us (and
                // is the program's, below PROGRAM_END: no object of this
                // runtime); the source lies in the read-only initrd mapping
                // (`Mem::map_image` checked it against INITRD_LEN), which
                // stays mapped for the environment's life.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        (s.from + (a - s.lo)) as *const u8,
                        a as *mut u8,
                        (b - a) as usize,
                    )
                };
                if area.prot & PROT_WRITE == 0 {
                    sys::protect(va, r).map_err(nomem)?;
                }
                frame
            }
        };
        self.pages.insert(va, Page { frame, prot: area.prot & 7 });
        Ok(())
    }
}

impl Book {
    /// The initrd frame to map read-only at page `va` of `area`: the page
    /// is wholly file bytes at a page-aligned place of the initrd, and the
    /// area is not writable.
    fn direct_frame(va: u64, area: &Area) -> Option<u64> {
        let s = area.src?;
        if area.prot & PROT_WRITE != 0 || va < s.lo || va + PAGE_SIZE > s.hi {
            return None;
        }
        initrd_frame(s.from + (va - s.lo))
    }

    /// Backs page `va` of `area` (rights `r`) with its initrd frame, and
    /// the lazy pages around it in the area that can be too (at most
    /// [`FAULT_AROUND`], one `MapBatch`); `false` if `va` cannot be.
    fn back_from_initrd(&mut self, va: u64, area: Area, r: Rights) -> bool {
        if Self::direct_frame(va, &area).is_none() {
            return false;
        }
        let start = self.lazy.range(..=va).next_back().map_or(va, |(&s, _)| s);
        let lo = va.saturating_sub(FAULT_AROUND / 2 * PAGE_SIZE).max(start);
        let mut entries = [abi::MapEntry { frame: 0, va: 0, rights: 0 }; FAULT_AROUND as usize];
        let mut n = 0;
        let mut at = lo;
        let stop = (lo + FAULT_AROUND * PAGE_SIZE).min(area.end);
        while at < stop {
            // The faulting page, and the lazy ones around it that can be.
            if (at == va || !self.pages.contains_key(&at))
                && let Some(frame) = Self::direct_frame(at, &area)
            {
                entries[n] = abi::MapEntry { frame, va: at, rights: r.0 };
                n += 1;
            }
            at += PAGE_SIZE;
        }
        if sys::map_batch(&entries[..n]).is_err() {
            // Some page is mapped after all (or no room): the one page.
            let Some(frame) = Self::direct_frame(va, &area) else { return false };
            if sys::map(frame, va, r).is_err() {
                return false;
            }
            self.pages.insert(va, Page { frame, prot: area.prot & 7 });
            return true;
        }
        for e in &entries[..n] {
            self.pages.insert(e.va, Page { frame: e.frame, prot: area.prot & 7 });
        }
        true
    }
}

/// `Memory` over frames and mappings.
pub struct Mem {
    pub pages: Pages,
}

impl Mem {
    fn drop_page(&mut self, va: u64) {
        let Some(p) = self.pages.borrow_mut().pages.remove(&va) else { return };
        if is_initrd_frame(p.frame) {
            // The kernel's: unmapped, never freed.
            if p.prot != 0 {
                let _ = sys::unmap(va);
            }
            return;
        }
        if p.prot != 0 && crate::procs::FORKED.load(Ordering::Acquire) {
            // After a fork the page may be copy-on-write, or a copy made
            // since: the frame mapped now is the kernel's answer, and it is
            // ours to free only if we own it (a shared frame goes when its
            // last mapping does).
            if let Ok(q) = sys::page_query(va) {
                let _ = sys::unmap(va);
                if q & abi::PAGE_QUERY_OWNED != 0 {
                    let _ = sys::frame_free(q >> 12);
                }
            }
            return;
        }
        if p.prot != 0 {
            let _ = sys::unmap(va);
        }
        // Before any fork, or a PROT_NONE page (its frame is ours unless the
        // record came from our parent: then the kernel refuses, NotOwner).
        let _ = sys::frame_free(p.frame);
    }

    /// Forgets `[addr, addr+len)`: its backed pages unmapped and freed, its
    /// lazy areas cut out.
    fn forget(&mut self, addr: u64, len: u64) {
        let end = addr.saturating_add(len);
        let backed = self.pages.borrow().backed(addr, end);
        for va in backed {
            self.drop_page(va);
        }
        self.pages.borrow_mut().cut(addr, end);
    }
}

impl Memory for Mem {
    /// Lazy: the range becomes an area whose pages get their zeroed frames
    /// when first touched ([`Book::back`]).
    fn map(&mut self, addr: u64, len: u64, prot: u32) -> SysResult<()> {
        let end = addr.saturating_add(len);
        if crate::redirect::overlaps_runtime(addr, end) {
            // This runtime's pages are never the program's (as `Map` over
            // them refused when memory was eager).
            return Err(ENOMEM);
        }
        self.forget(addr, len);
        self.pages.borrow_mut().lazy.insert(addr, Area { end, prot: prot & 7, src: None });
        Ok(())
    }

    /// Lazy when `bytes` lie in the initrd mapping (an image from the
    /// archive): each page is filled from there when first touched.
    fn map_image(
        &mut self,
        addr: u64,
        len: u64,
        prot: u32,
        vaddr: u64,
        bytes: &[u8],
    ) -> SysResult<bool> {
        let (from, n) = (bytes.as_ptr() as u64, bytes.len() as u64);
        let initrd = layout::INITRD_VA..layout::INITRD_VA + INITRD_LEN.load(Ordering::Relaxed);
        let end = addr.saturating_add(len);
        if crate::redirect::overlaps_runtime(addr, end) {
            return Err(ENOMEM);
        }
        if !(initrd.contains(&from) && from + n <= initrd.end)
            || vaddr < addr
            || vaddr.saturating_add(n) > end
        {
            return Ok(false);
        }
        self.forget(addr, len);
        let src = Some(Src { lo: vaddr, hi: vaddr + n, from });
        self.pages.borrow_mut().lazy.insert(addr, Area { end, prot: prot & 7, src });
        Ok(true)
    }

    fn unmap(&mut self, addr: u64, len: u64) -> SysResult<()> {
        self.forget(addr, len);
        Ok(())
    }

    fn protect(&mut self, addr: u64, len: u64, prot: u32) -> SysResult<()> {
        let end = addr.saturating_add(len);
        let backed = self.pages.borrow().backed(addr, end);
        for va in backed {
            let Some(old) = self.pages.borrow().pages.get(&va).copied() else { continue };
            let mut frame = old.frame;
            let result = match (old.prot != 0, rights(prot)) {
                // An initrd page made writable: a copy of our own.
                (mapped, Some(r)) if r.contains(Rights::WRITE) && is_initrd_frame(old.frame) => {
                    private_copy(va, old.frame, mapped, r).map(|f| frame = f)
                }
                (true, Some(r)) => sys::protect(va, r).map(drop),
                (true, None) => sys::unmap(va).map(drop),
                (false, Some(r)) => sys::map(old.frame, va, r).map(drop),
                (false, None) => Ok(()),
            };
            result.map_err(nomem)?;
            self.pages.borrow_mut().pages.insert(va, Page { frame, prot: prot & 7 });
        }
        let mut book = self.pages.borrow_mut();
        for (s, a) in book.cut(addr, end) {
            book.lazy.insert(s, Area { prot: prot & 7, ..a });
        }
        Ok(())
    }
}

/// Checked copies in and out of the program's memory.
pub struct Umem {
    pub pages: Pages,
}

impl Umem {
    /// Whether every page of `[addr, addr+len)` is the program's, with
    /// `PROT_WRITE` if `write`; lazy pages of the range are backed.
    pub fn check(&self, addr: u64, len: usize, write: bool) -> SysResult<()> {
        if len == 0 {
            return Ok(());
        }
        let end = addr.checked_add(len as u64).ok_or(EFAULT)?;
        if addr < layout::MIN_ADDR || end > layout::PROGRAM_END {
            return Err(EFAULT);
        }
        let ok = |prot: u32| prot != 0 && (!write || prot & PROT_WRITE != 0);
        let mut book = self.pages.borrow_mut();
        let mut va = addr & !(PAGE_SIZE - 1);
        while va < end {
            match book.pages.get(&va) {
                Some(p) if ok(p.prot) => {}
                Some(_) => return Err(EFAULT),
                None => match book.area_at(va) {
                    Some(a) if ok(a.prot) => book.back(va, a)?,
                    _ => return Err(EFAULT),
                },
            }
            va += PAGE_SIZE;
        }
        Ok(())
    }

    /// A page fault of the program at `addr` (`write`: a write access,
    /// `fetch`: an instruction fetch) on a page not present: backs the page
    /// if it is lazy with the rights the access needs. `false`: a real
    /// fault (no such mapping, the rights refused, or no frame left).
    pub fn fault_in(&self, addr: u64, write: bool, fetch: bool) -> bool {
        if !(layout::MIN_ADDR..layout::PROGRAM_END).contains(&addr) {
            return false;
        }
        let va = addr & !(PAGE_SIZE - 1);
        let mut book = self.pages.borrow_mut();
        if book.pages.contains_key(&va) {
            return false;
        }
        match book.area_at(va) {
            Some(a)
                if a.prot != 0
                    && (!write || a.prot & PROT_WRITE != 0)
                    && (!fetch || a.prot & PROT_EXEC != 0) =>
            {
                book.back(va, a).is_ok()
            }
            _ => false,
        }
    }
}

impl UserMemory for Umem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> SysResult<()> {
        self.check(addr, buf.len(), false)?;
        if !buf.is_empty() {
            // SAFETY: every page of the range is mapped readable for the
            // program (checked against the record `Mem` keeps of what it
            // mapped, lazy pages backed by the check), lies below
            // PROGRAM_END, so in no object of this runtime; the program is
            // stopped in the handler while we copy.
            unsafe {
                core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len())
            };
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> SysResult<()> {
        self.check(addr, data.len(), true)?;
        if !data.is_empty() {
            // SAFETY: as in `read`, and the pages are mapped writable.
            unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
        }
        Ok(())
    }

    fn read_with(&self, addr: u64, len: usize, f: &mut dyn FnMut(&[u8])) -> SysResult<()> {
        self.check(addr, len, false)?;
        if len == 0 {
            f(&[]);
            return Ok(());
        }
        // SAFETY: as in `read`: every page of the range is mapped readable
        // for the program, below PROGRAM_END (so no object of this
        // runtime, and in particular not the pipe frame `f` copies into),
        // and the program is stopped in the handler while `f` runs.
        f(unsafe { core::slice::from_raw_parts(addr as *const u8, len) });
        Ok(())
    }

    fn write_with(&mut self, addr: u64, len: usize, f: &mut dyn FnMut(&mut [u8])) -> SysResult<()> {
        self.check(addr, len, true)?;
        if len == 0 {
            f(&mut []);
            return Ok(());
        }
        // SAFETY: as in `read_with`, and the pages are mapped writable.
        f(unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len) });
        Ok(())
    }
}

/// The realtime clock's value at the TSC's start (no RTC is read yet):
/// 2026-01-01T00:00:00Z.
const EPOCH_NS: u64 = 1_767_225_600 * 1_000_000_000;

/// Clocks from the TSC.
pub struct Clk {
    pub tsc0: u64,
    pub hz: u64,
}

impl Clk {
    fn ns(&self, tsc: u64) -> u64 {
        (u128::from(tsc.saturating_sub(self.tsc0)) * 1_000_000_000 / u128::from(self.hz.max(1)))
            as u64
    }
}

impl Clock for Clk {
    fn monotonic_ns(&self) -> u64 {
        self.ns(sys::rdtsc())
    }

    fn realtime_ns(&self) -> u64 {
        EPOCH_NS + self.monotonic_ns()
    }

    fn resolution_ns(&self) -> u64 {
        1_000_000_000u64.div_ceil(self.hz.max(1))
    }

    fn sleep_until(&mut self, deadline_ns: u64) {
        let ticks = u128::from(deadline_ns) * u128::from(self.hz) / 1_000_000_000;
        let tsc = self.tsc0.saturating_add(ticks.min(u128::from(u64::MAX)) as u64);
        while sys::rdtsc() < tsc {
            match libos_async::Pred::deadline(tsc).sleep() {
                // A signal arrived (`crate::signal`): the caller decides.
                Err(abi::Error::Interrupted) => return,
                Err(_) => {
                    let _ = sys::yield_now();
                }
                Ok(_) => {}
            }
        }
    }
}

/// The terminal: output through [`emit`]. Input: when this environment is
/// the console reader (the boot's `stdin=console`, as under `cargo xtask
/// sh`) the keyboard, through `ConsoleRead` and libos-posix's line
/// discipline; otherwise it is at its end (the program's stdin is empty).
pub struct Con {
    /// Whether this environment reads the console (probed once at start).
    terminal: bool,
}

impl Con {
    /// The console, a terminal if `ConsoleRead` is ours.
    pub fn new() -> Self {
        let terminal = sys::console_read(&mut []).is_ok();
        READS_KEYBOARD.store(terminal, Ordering::Relaxed);
        Con { terminal }
    }
}

/// The console-input counter (`InfoPage::console_input`) as the last look
/// at the keyboard saw it: a wait that must also wake for typed keys (see
/// [`terminal_wake`]) sleeps until it moves.
static CONSOLE_SEEN: AtomicU64 = AtomicU64::new(0);
/// Whether this environment reads the keyboard (set by [`Con::new`]).
static READS_KEYBOARD: AtomicBool = AtomicBool::new(false);

/// For waits that are not terminal reads (`wait4`, `rt_sigsuspend`): the
/// condition "a key was typed since the last look, or a process asks for
/// the keyboard", so that libos-posix takes `^C` to the foreground job
/// while the shell waits for it, and a foreground child that reads the
/// terminal gets the keyboard. Before it, a child's pending ask is
/// answered: `ConsoleGive` to it (the kernel refuses unless we read the
/// keyboard now and it is our own child; it comes back to us when that
/// child ends). `None` in a process that never read the keyboard.
pub fn terminal_wake() -> Option<Pred> {
    // Only the keyboard's reader now (a child given it, too) waits for keys
    // and answers asks; the others' waits must not wake on them.
    if !READS_KEYBOARD.load(Ordering::Relaxed) || sys::console_read(&mut []).is_err() {
        return None;
    }
    if let Some(child) = crate::procs::terminal_asked() {
        // Given, or not our child to give to: either way the ask is done
        // (a foreground child asks again while it waits).
        let _ = sys::console_give(u64::from(child));
        crate::procs::terminal_answered(child);
    }
    let keys = Pred::console_input_ne(CONSOLE_SEEN.load(Ordering::Acquire));
    Some(match crate::procs::terminal_ask_word() {
        Some(addr) => keys.either(Pred::word_ne(addr, 0)),
        None => keys,
    })
}

/// How long a foreground child waits between asks for the keyboard.
const ASK_RETRY_NS: u64 = 10_000_000;

/// A forked child that reads the terminal but is not the keyboard's reader:
/// waits until it is given the keyboard (`Ok`), as long as its process
/// group is the terminal's foreground (else `EIO`: a background read, which
/// Linux stops with `SIGTTIN`); `EINTR` when a signal comes meanwhile.
fn wait_for_keyboard() -> SysResult<()> {
    let hz = libos_async::info().tsc_hz;
    loop {
        if !crate::procs::in_foreground() {
            return Err(EIO);
        }
        crate::procs::ask_terminal();
        let at = sys::rdtsc().saturating_add(ASK_RETRY_NS * hz / 1_000_000_000);
        if let Err(abi::Error::Interrupted) = Pred::deadline(at).sleep() {
            return Err(EINTR);
        }
        if sys::console_read(&mut []).is_ok() {
            return Ok(());
        }
    }
}

impl Console for Con {
    fn is_terminal(&self) -> bool {
        self.terminal
    }

    fn reads_input(&self) -> bool {
        self.terminal && !crate::procs::IS_CHILD.load(Ordering::Relaxed)
    }

    fn read_input(&mut self, buf: &mut [u8], timeout_ns: Option<u64>) -> SysResult<usize> {
        if !self.terminal {
            return Ok(0);
        }
        let hz = libos_async::info().tsc_hz;
        let deadline = timeout_ns.map(|ns| {
            let ticks = u128::from(ns) * u128::from(hz) / 1_000_000_000;
            sys::rdtsc().saturating_add(ticks.min(u128::from(u64::MAX)) as u64)
        });
        let want = buf.len().min(abi::CONSOLE_READ_MAX as usize);
        loop {
            // The counter first: input arriving after it is read changes it,
            // so the sleep below cannot miss it.
            let seen = sys::console_input();
            CONSOLE_SEEN.store(seen, Ordering::Release);
            match sys::console_read(&mut buf[..want]) {
                Ok(0) => {}
                Ok(n) => return Ok(n as usize),
                // A forked child in the foreground: wait to be given the
                // keyboard, then read.
                Err(_) if crate::procs::IS_CHILD.load(Ordering::Relaxed) => {
                    wait_for_keyboard()?;
                    continue;
                }
                // No longer the reader (given away): as at end of input.
                Err(_) => return Ok(0),
            }
            let wake = libos_async::Pred::console_input_ne(seen);
            let slept = match deadline {
                Some(d) if sys::rdtsc() >= d => return Ok(0),
                Some(d) => wake.either(libos_async::Pred::deadline(d)).sleep(),
                None => wake.sleep(),
            };
            if slept.is_err() {
                let _ = sys::yield_now();
            }
        }
    }

    fn write(&mut self, data: &[u8]) -> usize {
        emit(STDOUT, data);
        data.len()
    }

    fn write_err(&mut self, data: &[u8]) -> usize {
        emit(STDERR, data);
        data.len()
    }

    fn read(&mut self, _buf: &mut [u8]) -> SysResult<usize> {
        Ok(0)
    }
}

/// `SetFsBase`.
const SET_FS_BASE: u64 = 32;

/// The rest.
pub struct Sys {
    pub seed: u64,
}

impl Host for Sys {
    fn set_fs(&mut self, base: u64) -> SysResult<()> {
        abi::decode(sys::syscall1(SET_FS_BASE, base)).map(|_| ()).map_err(|_| EINVAL)
    }

    fn random(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = rdrand().unwrap_or(0) ^ splitmix(&mut self.seed, sys::rdtsc());
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
    }

    fn report(&mut self, line: &str) {
        log_line(line);
    }
}

fn splitmix(state: &mut u64, mix: u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15 ^ mix.rotate_left(17));
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `rdrand`, if the CPU has it and it delivers.
fn rdrand() -> Option<u64> {
    // CPUID.01H:ECX bit 30.
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    if ecx & (1 << 30) == 0 {
        return None;
    }
    for _ in 0..10 {
        let (v, ok): (u64, u8);
        // SAFETY: rdrand exists (checked above); it writes a register and
        // the carry flag only.
        unsafe {
            core::arch::asm!("rdrand {}", "setc {}", out(reg) v, out(reg_byte) ok, options(nomem, nostack))
        };
        if ok == 1 {
            return Some(v);
        }
    }
    None
}

/// 16 bytes for `AT_RANDOM`.
pub fn random16(s: &mut Sys) -> [u8; 16] {
    let mut b = [0u8; 16];
    s.random(&mut b);
    b
}
