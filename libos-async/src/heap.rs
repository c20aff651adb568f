//! The global allocator: a size-class heap over a lazy region, so that a
//! heap page costs a frame only once it is touched.
//!
//! This module owns the heap region [`crate::layout::HEAP_BASE`] ..
//! `+ HEAP_SIZE`: nothing else touches it, and only the region layer
//! ([`crate::vm`], the lazy region `"heap"`) maps it. It is one of the few
//! modules of libos-async with `unsafe` (free blocks carry their list links
//! inside themselves, and [`GlobalAlloc`] is an unsafe trait).
//!
//! ```text
//! base                      top                 mapped              end
//!  | pages handed out ...    | (bump) ........... |  not mapped yet ... |
//!                              grow(): make GROW_PAGES (or more) usable
//! ```
//!
//! * **Small** requests (size and alignment rounded up to a power of two
//!   `16 ..= 2048`) come from one free list per size class. An empty class
//!   takes a whole page and cuts it into blocks of its size, so every block
//!   is aligned to its size. Freed blocks go back to their class; pages are
//!   never returned to the kernel (the frames go back when the environment
//!   ends).
//! * **Large** requests take whole pages: first fit from a list of freed
//!   runs (a bigger run is split), else from the bump pointer. Freed runs
//!   are not coalesced (a known limitation: a program that frees and
//!   allocates large blocks of ever-changing sizes fragments the region).
//! * **Growth**: when the bump pointer reaches the end of what is usable,
//!   [`Grow::grow`] makes at least [`GROW_PAGES`] more pages usable. On the
//!   machine that maps nothing: the whole region is the lazy region
//!   `"heap"` (registered with the first growth), whose pages the fault
//!   handler fills with zeroed frames on first touch.
//! * **Zeroed requests** ([`Heap::alloc_zeroed`]): pages never handed out
//!   before (above the bump pointer) read as zero — fresh frames, or lazy
//!   pages never touched — so a large zeroed request from the bump pointer
//!   is not written at all: `vec![0; n]` costs frames only where it is
//!   touched. Anything reused is zeroed by hand.
//! * **Fast path**: a small request whose class has a free block is a
//!   table lookup for the class and a list pop under the lock
//!   ([`Heap::take_free`], inlined into [`FrameHeap`]'s `alloc`, which
//!   compiles to a leaf); everything else is out of line.
//! * **Multi-core**: one [`spin::Mutex`] around the whole heap (short
//!   critical sections; growth makes system calls under it, which other
//!   cores wait out). Uncontended, the lock is a few instructions of the
//!   fast path; per-core caches would relieve contention between cores,
//!   not shorten the path, and are not done.
//! * **Out of memory**: when the region is full `alloc` returns null and
//!   records it; Rust's allocation-error path then panics, and the panic
//!   handler sees [`out_of_memory`] and exits with code
//!   [`EXIT_OUT_OF_MEMORY`] (104) instead of 101. When the frame quota is
//!   exhausted, the fault handler that finds no frame for a touched page
//!   prints `libos: out of memory: ...` and exits 104 itself.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use abi::PAGE_SIZE;

/// Exit code of an application whose allocation failed.
pub const EXIT_OUT_OF_MEMORY: u64 = 104;
/// Smallest block.
pub const MIN_BLOCK: usize = 16;
/// Largest small block; bigger requests take whole pages.
pub const MAX_SMALL: usize = 2048;
/// Number of small size classes (16, 32, ..., 2048).
pub const CLASSES: usize = 8;
/// Pages mapped at least per growth step (64 KiB).
pub const GROW_PAGES: usize = 16;

const PAGE: usize = PAGE_SIZE as usize;
const _: () = assert!(MIN_BLOCK << (CLASSES - 1) == MAX_SMALL);

static OUT_OF_MEMORY: AtomicBool = AtomicBool::new(false);

/// Whether an allocation has failed in this environment (the panic handler
/// uses it to exit with [`EXIT_OUT_OF_MEMORY`]).
pub fn out_of_memory() -> bool {
    OUT_OF_MEMORY.load(Ordering::Relaxed)
}

/// Makes `bytes` at `at` (page-aligned, a whole number of pages) usable.
///
/// What it makes usable must read as zero until the heap writes it
/// ([`Heap::alloc_zeroed`] relies on it).
pub trait Grow {
    /// Maps `at .. at + bytes` read-write, page by page from `at`; returns
    /// how many bytes it mapped (a multiple of the page size; fewer than
    /// asked when memory runs out — those stay mapped and are used).
    fn grow(&mut self, at: usize, bytes: usize) -> usize;
}

/// A free small block.
struct Block {
    next: *mut Block,
}

/// A free run of whole pages.
struct Run {
    pages: usize,
    next: *mut Run,
}

/// The heap's bookkeeping (see the module documentation).
pub struct Heap {
    base: usize,
    end: usize,
    /// Next never-used page.
    top: usize,
    /// End of the mapped part.
    mapped: usize,
    free: [*mut Block; CLASSES],
    runs: *mut Run,
}

// SAFETY: the raw pointers point into the heap region the `Heap` manages
// exclusively; the `Heap` is only used under a lock (`FrameHeap`) or by one
// thread (tests), so moving it between threads is fine.
unsafe impl Send for Heap {}

/// `CLASS[(s - 1) / MIN_BLOCK]`: the class of a request of `s` bytes
/// (`1 ..= MAX_SMALL`), `ceil(log2(max(s, 16))) - 4`, precomputed so that
/// the allocation fast path is a table load.
static CLASS: [u8; MAX_SMALL / MIN_BLOCK] = {
    let mut t = [0u8; MAX_SMALL / MIN_BLOCK];
    let mut i = 0;
    while i < t.len() {
        // Blocks of (i + 1) * 16 bytes need class ceil(log2(i + 1)).
        let mut class = 0;
        while (1usize << class) < i + 1 {
            class += 1;
        }
        t[i] = class as u8;
        i += 1;
    }
    t
};

/// The size class of `layout`, or `None` for a page-granular request:
/// `ceil(log2(max(size, align, 16))) - 4`.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align());
    if size > MAX_SMALL {
        return None;
    }
    // `align` is at least 1, so `size >= 1`.
    Some(usize::from(CLASS[(size - 1) / MIN_BLOCK]))
}

/// Pages for a large request.
fn pages_of(layout: Layout) -> usize {
    layout.size().max(1).div_ceil(PAGE)
}

impl Heap {
    /// A heap over `base .. base + size` (page-aligned), nothing mapped.
    pub const fn new(base: usize, size: usize) -> Heap {
        Heap {
            base,
            end: base + size,
            top: base,
            mapped: base,
            free: [ptr::null_mut(); CLASSES],
            runs: ptr::null_mut(),
        }
    }

    /// Bytes of the region handed out from the bump pointer so far.
    pub fn used_bytes(&self) -> usize {
        self.top - self.base
    }

    /// Bytes mapped so far.
    pub fn mapped_bytes(&self) -> usize {
        self.mapped - self.base
    }

    /// `pages` fresh pages from the bump pointer (aligned to `align`,
    /// itself at most a few pages), growing the mapping if needed.
    fn bump(&mut self, pages: usize, align: usize, grow: &mut dyn Grow) -> *mut u8 {
        let start = self.top.next_multiple_of(align.max(PAGE));
        let Some(new_top) = pages.checked_mul(PAGE).and_then(|b| start.checked_add(b)) else {
            return ptr::null_mut();
        };
        if new_top > self.end {
            return ptr::null_mut();
        }
        if new_top > self.mapped {
            let want = (new_top - self.mapped).max(GROW_PAGES * PAGE).min(self.end - self.mapped);
            self.mapped += grow.grow(self.mapped, want);
            if new_top > self.mapped {
                return ptr::null_mut();
            }
        }
        self.top = new_top;
        start as *mut u8
    }

    /// `pages` pages, first fit from the freed runs, else fresh; and
    /// whether they are fresh (never handed out: they read as zero).
    fn alloc_pages(&mut self, pages: usize, align: usize, grow: &mut dyn Grow) -> (*mut u8, bool) {
        if align <= PAGE {
            let mut link: *mut *mut Run = &mut self.runs;
            // SAFETY: every run on the list is a freed, mapped, page-aligned
            // part of the region holding a valid `Run` header written by
            // `free_pages`; nothing else refers to it.
            unsafe {
                while !(*link).is_null() {
                    let run = *link;
                    let have = (*run).pages;
                    if have >= pages {
                        if have == pages {
                            *link = (*run).next;
                        } else {
                            // Keep the tail on the list, hand out the head.
                            let rest = (run as usize + pages * PAGE) as *mut Run;
                            rest.write(Run { pages: have - pages, next: (*run).next });
                            *link = rest;
                        }
                        return (run as *mut u8, false);
                    }
                    link = &mut (*run).next;
                }
            }
        }
        (self.bump(pages, align, grow), true)
    }

    fn free_pages(&mut self, at: *mut u8, pages: usize) {
        let run = at as *mut Run;
        // SAFETY: `at` is the start of `pages` (≥ 1) whole pages this heap
        // handed out and the caller gave back; a `Run` fits in a page.
        unsafe { run.write(Run { pages, next: self.runs }) };
        self.runs = run;
    }

    /// Allocates for `layout`; null when the region or `grow` runs out.
    /// The common case ([`Heap::take_free`]) is a few inlined
    /// instructions; the rest is out of line.
    #[inline]
    pub fn alloc(&mut self, layout: Layout, grow: &mut dyn Grow) -> *mut u8 {
        if let Some(block) = self.take_free(layout) {
            return block;
        }
        match class_of(layout) {
            Some(class) => self.refill(class, grow),
            None => self.alloc_large(layout, grow),
        }
    }

    /// A free block of `layout`'s size class, if it is a small request
    /// and its class has one: the allocation fast path.
    #[inline]
    pub fn take_free(&mut self, layout: Layout) -> Option<*mut u8> {
        let class = class_of(layout)?;
        let block = self.free[class];
        if block.is_null() {
            return None;
        }
        // SAFETY: a block on the free list holds a valid link (written when
        // it was put there) and belongs to nobody else.
        self.free[class] = unsafe { (*block).next };
        Some(block as *mut u8)
    }

    #[cold]
    #[inline(never)]
    fn alloc_large(&mut self, layout: Layout, grow: &mut dyn Grow) -> *mut u8 {
        self.alloc_pages(pages_of(layout), layout.align(), grow).0
    }

    /// As [`Heap::alloc`], with the block zeroed; a large block from the
    /// bump pointer is zero already and is not written (see the module
    /// documentation).
    pub fn alloc_zeroed(&mut self, layout: Layout, grow: &mut dyn Grow) -> *mut u8 {
        let (p, fresh) = match class_of(layout) {
            Some(_) => (self.alloc(layout, grow), false),
            None => self.alloc_pages(pages_of(layout), layout.align(), grow),
        };
        if !p.is_null() && !fresh {
            // SAFETY: a block of at least `layout.size()` bytes just handed
            // out, that nobody else uses.
            unsafe { ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }

    /// Cuts a fresh page into blocks of `class` (whose list is empty) and
    /// hands out the first.
    #[cold]
    #[inline(never)]
    fn refill(&mut self, class: usize, grow: &mut dyn Grow) -> *mut u8 {
        let (page, _) = self.alloc_pages(1, PAGE, grow);
        if page.is_null() {
            return ptr::null_mut();
        }
        let size = MIN_BLOCK << class;
        // Thread the page's blocks but the first onto the (empty) list,
        // lowest first.
        for i in (1..PAGE / size).rev() {
            let block = (page as usize + i * size) as *mut Block;
            // SAFETY: inside the page just taken, `size`-aligned, and not
            // handed out to anyone.
            unsafe { block.write(Block { next: self.free[class] }) };
            self.free[class] = block;
        }
        page
    }

    /// Gives back a block from [`Heap::alloc`] with the same `layout`.
    ///
    /// # Safety
    /// `at` must come from `self.alloc(layout, ..)` and not be freed yet.
    #[inline]
    pub unsafe fn dealloc(&mut self, at: *mut u8, layout: Layout) {
        match class_of(layout) {
            Some(class) => {
                let block = at as *mut Block;
                // SAFETY: the caller returns a block of this class (at least
                // 16 bytes, 16-aligned), which nobody uses any more.
                unsafe { block.write(Block { next: self.free[class] }) };
                self.free[class] = block;
            }
            None => self.free_pages(at, pages_of(layout)),
        }
    }
}

/// The heap region is lazy (on the machine): growing maps nothing, once
/// the region is registered; its pages are filled on first touch.
struct LazyGrow;

impl Grow for LazyGrow {
    fn grow(&mut self, _at: usize, bytes: usize) -> usize {
        if crate::vm::heap_region_ready() { bytes } else { 0 }
    }
}

/// The `#[global_allocator]` of applications (installed by
/// [`crate::entry!`] and [`crate::main!`]): a [`Heap`] over
/// [`crate::layout::HEAP_BASE`] under a spin lock, over the lazy region
/// `"heap"`.
pub struct FrameHeap {
    heap: spin::Mutex<Heap>,
}

impl FrameHeap {
    /// The heap over the layout's heap region.
    pub const fn new() -> FrameHeap {
        FrameHeap {
            heap: spin::Mutex::new(Heap::new(
                crate::layout::HEAP_BASE as usize,
                crate::layout::HEAP_SIZE as usize,
            )),
        }
    }

    /// (bytes handed out from the region, bytes made usable — reserved in
    /// the lazy region, not necessarily backed by frames).
    pub fn usage(&self) -> (usize, usize) {
        let heap = self.heap.lock();
        (heap.used_bytes(), heap.mapped_bytes())
    }
}

impl FrameHeap {
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, layout: Layout) -> *mut u8 {
        let p = self.heap.lock().alloc(layout, &mut LazyGrow);
        if p.is_null() {
            OUT_OF_MEMORY.store(true, Ordering::Relaxed);
        }
        p
    }
}

impl Default for FrameHeap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: `Heap::alloc` returns blocks of at least `layout.size()` bytes
// aligned to `layout.align()` (classes are powers of two at least as large
// as both; pages are page-aligned and `bump` aligns further when asked),
// inside mapped memory of the heap region that nothing else uses, and never
// hands out a block twice until it is freed; the lock serializes all cores.
unsafe impl GlobalAlloc for FrameHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // The fast path first, kept apart so that it compiles to a leaf.
        if let Some(p) = self.heap.lock().take_free(layout) {
            return p;
        }
        self.alloc_slow(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = self.heap.lock().alloc_zeroed(layout, &mut LazyGrow);
        if p.is_null() {
            OUT_OF_MEMORY.store(true, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with this
        // layout and is not used any more.
        unsafe { self.heap.lock().dealloc(ptr, layout) }
    }
}

/// Defines the application's `#[global_allocator]` (a [`FrameHeap`]) on the
/// bare-metal target. [`crate::entry!`] and [`crate::main!`] invoke it;
/// an application with an allocator of its own uses
/// `entry!(main, custom_allocator)` instead.
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[cfg(target_os = "none")]
        #[global_allocator]
        static __LIBOS_ASYNC_HEAP: $crate::heap::FrameHeap = $crate::heap::FrameHeap::new();
    };
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A region backed by host memory; `limit` caps how far it may grow.
    struct Host {
        calls: Vec<(usize, usize)>,
        limit: usize,
        base: usize,
    }

    impl Grow for Host {
        fn grow(&mut self, at: usize, bytes: usize) -> usize {
            let got = bytes.min((self.base + self.limit).saturating_sub(at));
            self.calls.push((at, got));
            got
        }
    }

    fn region(pages: usize) -> (Vec<u8>, usize) {
        let mem = std::vec![0u8; (pages + 1) * PAGE];
        let base = (mem.as_ptr() as usize).next_multiple_of(PAGE);
        (mem, base)
    }

    #[test]
    fn classes_and_pages() {
        let l = |s, a| Layout::from_size_align(s, a).unwrap();
        assert_eq!(class_of(l(1, 1)), Some(0));
        assert_eq!(class_of(l(16, 8)), Some(0));
        assert_eq!(class_of(l(17, 8)), Some(1));
        assert_eq!(class_of(l(8, 64)), Some(2));
        assert_eq!(class_of(l(2048, 8)), Some(7));
        assert_eq!(class_of(l(2049, 8)), None);
        assert_eq!(pages_of(l(4097, 8)), 2);
        // The table agrees with the definition for every small size.
        for size in 1..=MAX_SMALL {
            let want = size.max(MIN_BLOCK).next_power_of_two().trailing_zeros() - 4;
            assert_eq!(class_of(l(size, 1)), Some(want as usize), "size {size}");
        }
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_reused() {
        let (_mem, base) = region(64);
        let mut heap = Heap::new(base, 64 * PAGE);
        let mut grow = Host { calls: Vec::new(), limit: 64 * PAGE, base };
        let mut got: Vec<(usize, usize)> = Vec::new();
        for (i, size) in [1usize, 16, 24, 100, 512, 2048, 3000, 9000, 40].iter().enumerate() {
            let align = [1, 8, 16, 64, 4096][i % 5].min(size.next_power_of_two());
            let layout = Layout::from_size_align(*size, align).unwrap();
            let p = heap.alloc(layout, &mut grow) as usize;
            assert_ne!(p, 0);
            assert_eq!(p % align, 0);
            assert!(p >= base && p + size <= base + 64 * PAGE);
            for &(q, qs) in &got {
                assert!(p + size <= q || q + qs <= p, "overlap");
            }
            got.push((p, *size));
        }
        // Growth happened in GROW_PAGES steps from the base.
        assert_eq!(grow.calls[0], (base, GROW_PAGES * PAGE));
        // A freed block of a class is the next one of that class.
        let l = Layout::from_size_align(100, 8).unwrap();
        let a = heap.alloc(l, &mut grow);
        // SAFETY: `a` came from this heap with `l`.
        unsafe { heap.dealloc(a, l) };
        assert_eq!(heap.alloc(l, &mut grow), a);
        // A freed run is reused (and split).
        let big = Layout::from_size_align(3 * PAGE, 8).unwrap();
        let r = heap.alloc(big, &mut grow);
        // SAFETY: as above.
        unsafe { heap.dealloc(r, big) };
        let one = Layout::from_size_align(PAGE, 8).unwrap();
        assert_eq!(heap.alloc(one, &mut grow), r);
        assert_eq!(heap.alloc(one, &mut grow) as usize, r as usize + PAGE);
    }

    #[test]
    fn exhaustion_returns_null_and_recovers_after_free() {
        let (_mem, base) = region(8);
        let mut heap = Heap::new(base, 8 * PAGE);
        let mut grow = Host { calls: Vec::new(), limit: 4 * PAGE, base };
        let l = Layout::from_size_align(PAGE, PAGE).unwrap();
        let ps: Vec<*mut u8> = (0..4).map(|_| heap.alloc(l, &mut grow)).collect();
        assert!(ps.iter().all(|p| !p.is_null()));
        assert!(heap.alloc(l, &mut grow).is_null(), "the grower refused");
        // SAFETY: from this heap with `l`.
        unsafe { heap.dealloc(ps[2], l) };
        assert_eq!(heap.alloc(l, &mut grow), ps[2]);
        let huge = Layout::from_size_align(1 << 40, 8).unwrap();
        assert!(heap.alloc(huge, &mut grow).is_null());
    }

    #[test]
    fn zeroed_blocks_are_zero_and_fresh_pages_are_not_written() {
        let (mem, base) = region(32);
        let mut heap = Heap::new(base, 32 * PAGE);
        let mut grow = Host { calls: Vec::new(), limit: 32 * PAGE, base };
        let big = Layout::from_size_align(4 * PAGE, 8).unwrap();
        // Dirty a run, free it, and take it back zeroed.
        let p = heap.alloc(big, &mut grow);
        // SAFETY: a fresh block of 4 pages.
        unsafe { ptr::write_bytes(p, 0xaa, 4 * PAGE) };
        // SAFETY: from this heap with `big`.
        unsafe { heap.dealloc(p, big) };
        let q = heap.alloc_zeroed(big, &mut grow);
        assert_eq!(q, p);
        // SAFETY: a live block of 4 pages.
        assert!(unsafe { core::slice::from_raw_parts(q, 4 * PAGE) }.iter().all(|&b| b == 0));
        // A fresh run from the bump pointer reads as zero without a write:
        // make the host memory behind it non-zero to see that it is not
        // touched (the machine's lazy pages would be zero).
        let fresh_at = heap.top;
        let offset = fresh_at - mem.as_ptr() as usize;
        let raw = mem.as_ptr() as *mut u8;
        // SAFETY: inside `mem`, beyond anything handed out.
        unsafe { raw.add(offset).write(7) };
        let r = heap.alloc_zeroed(big, &mut grow);
        assert_eq!(r as usize, fresh_at);
        // SAFETY: the block's first byte.
        assert_eq!(unsafe { r.read() }, 7, "a fresh block was written");
        let small = Layout::from_size_align(100, 8).unwrap();
        let s = heap.alloc(small, &mut grow);
        // SAFETY: a live block of 100 bytes.
        unsafe { ptr::write_bytes(s, 0xbb, 100) };
        // SAFETY: from this heap with `small`.
        unsafe { heap.dealloc(s, small) };
        let z = heap.alloc_zeroed(small, &mut grow);
        // SAFETY: a live block of 100 bytes.
        assert!(unsafe { core::slice::from_raw_parts(z, 100) }.iter().all(|&b| b == 0));
    }

    proptest::proptest! {
        /// Random allocations and frees: every live block stays disjoint,
        /// aligned, and keeps the bytes written into it.
        #[test]
        fn random_alloc_free_keeps_blocks_intact(
            ops in proptest::collection::vec((0usize..6000, 0u32..7, proptest::bool::ANY), 1..300)
        ) {
            let (_mem, base) = region(512);
            let mut heap = Heap::new(base, 512 * PAGE);
            let mut grow = Host { calls: Vec::new(), limit: 512 * PAGE, base };
            let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
            for (i, (size, align_pow, free)) in ops.into_iter().enumerate() {
                if free && !live.is_empty() {
                    let (p, l, tag) = live.swap_remove(i % live.len());
                    // SAFETY: `p` is a live block of `l` bytes.
                    let bytes = unsafe { core::slice::from_raw_parts(p, l.size()) };
                    proptest::prop_assert!(bytes.iter().all(|&b| b == tag));
                    // SAFETY: from this heap with `l`.
                    unsafe { heap.dealloc(p, l) };
                    continue;
                }
                let l = Layout::from_size_align(size.max(1), 1 << align_pow).unwrap();
                let p = heap.alloc(l, &mut grow);
                proptest::prop_assert!(!p.is_null());
                proptest::prop_assert_eq!(p as usize % l.align(), 0);
                let tag = i as u8;
                // SAFETY: a fresh block of `l.size()` bytes.
                unsafe { core::ptr::write_bytes(p, tag, l.size()) };
                live.push((p, l, tag));
            }
            for (p, l, tag) in live {
                // SAFETY: as above.
                let bytes = unsafe { core::slice::from_raw_parts(p, l.size()) };
                proptest::prop_assert!(bytes.iter().all(|&b| b == tag));
            }
        }
    }
}
