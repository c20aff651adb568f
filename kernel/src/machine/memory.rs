//! Physical memory: the direct map, the kernel's frame allocator and heap.
//!
//! * The **direct map** (`PHYS_OFFSET + p` for physical `p` below
//!   [`DIRECT_MAP_LIMIT`]) is set up by [`boot`](super::boot); every
//!   physical access the kernel makes goes through it.
//! * The **frame allocator** is one [`FrameBitmap`] and the pool of frames
//!   zeroed ahead ([`ZeroPool`]) behind one spin lock taken with interrupts
//!   disabled (lock order: it is a leaf lock; nothing else is taken while it
//!   is held). RAM above 4 GiB is not used yet (logged).
//! * **Zeroing ahead.** [`alloc_frame`] hands out a frame of the pool first
//!   and zeroes one on demand only when the pool is empty. Idle cores fill
//!   the pool one frame at a time ([`zero_step`], from the idle loop, with
//!   interrupts on): a frame is taken out of the bitmap first — from then
//!   on no one else can be handed it — zeroed, then pushed. A freed frame
//!   goes back to the bitmap, never to the pool: every frame in the pool is
//!   zero and unowned, so a dirty frame never reaches anyone unzeroed. The
//!   pool holds `zero_pool` frames (command line, default 4096 = 16 MiB,
//!   at most an eighth of free memory; 0 turns it off).
//! * The **kernel heap** is a fixed contiguous run of frames managed by
//!   `linked_list_allocator`, also behind a leaf spin lock with interrupts
//!   disabled, so allocating in an interrupt handler cannot deadlock against
//!   the interrupted code on the same core.

use core::alloc::{GlobalAlloc, Layout};
use kernel::PAGE_SIZE;
use kernel::frames::{FrameBitmap, FrameError, FrameNumber};
use kernel::zeropool::ZeroPool;
use linked_list_allocator::LockedHeap;
use spin::Mutex;
use x86_64::instructions::interrupts::without_interrupts;

/// Virtual address of physical address 0 in the direct map.
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;
/// The direct map covers physical `0..DIRECT_MAP_LIMIT`.
pub const DIRECT_MAP_LIMIT: u64 = 4 << 30;
/// Kernel heap size.
pub const HEAP_SIZE: u64 = 32 << 20;

/// Frames below 4 GiB: 1 Mi frames, a 128 KiB bitmap.
const BITMAP_WORDS: usize = (DIRECT_MAP_LIMIT / PAGE_SIZE / 64) as usize;

/// The frame allocator's state, under one leaf lock.
struct Frames {
    /// Free (clear) and used (set) frames. Frames in the pool, and frames
    /// an idle core is zeroing for it, are marked used here.
    bitmap: FrameBitmap<BITMAP_WORDS>,
    /// Zeroed, unowned frames, handed out first.
    pool: ZeroPool,
    /// Bit per frame: in the pool (so `FrameStatus` and `FrameAlloc` of a
    /// given frame answer in O(1)).
    pooled: [u64; BITMAP_WORDS],
    /// Frames taken out of the bitmap by an idle core and being zeroed for
    /// the pool (still counted as free).
    zeroing: u64,
}

static FRAMES: Mutex<Frames> = Mutex::new(Frames {
    bitmap: FrameBitmap::new(),
    pool: ZeroPool::new(),
    pooled: [0; BITMAP_WORDS],
    zeroing: 0,
});

impl Frames {
    fn mark_pooled(&mut self, frame: FrameNumber, on: bool) {
        let (word, bit) = ((frame.raw() / 64) as usize, 1u64 << (frame.raw() % 64));
        if let Some(w) = self.pooled.get_mut(word) {
            if on { *w |= bit } else { *w &= !bit }
        }
    }

    fn is_pooled(&self, frame: FrameNumber) -> bool {
        let (word, bit) = ((frame.raw() / 64) as usize, 1u64 << (frame.raw() % 64));
        self.pooled.get(word).is_some_and(|w| w & bit != 0)
    }

    /// Takes the most recently zeroed frame out of the pool.
    #[inline]
    fn pop_pooled(&mut self) -> Option<FrameNumber> {
        let frame = self.pool.pop()?;
        self.mark_pooled(frame, false);
        Some(frame)
    }
}

/// Virtual address of a physical address in the direct map.
pub fn phys_to_virt(phys: u64) -> u64 {
    debug_assert!(phys < DIRECT_MAP_LIMIT);
    PHYS_OFFSET + phys
}

/// Where the kernel image is linked (`kernel/linker.ld`): a kernel-image
/// address minus this is its physical address.
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;

/// Physical address of a static in the kernel image.
pub fn kernel_image_phys(virt: u64) -> u64 {
    debug_assert!(virt >= KERNEL_VMA);
    virt - KERNEL_VMA
}

/// Reads `len` bytes of physical memory.
///
/// Only for boot-time structures handed over by the loader and firmware
/// (start info, memory map, modules), which lie in RAM the frame allocator
/// never hands out. Returns `None` if the range leaves the direct map.
pub fn boot_phys_slice(phys: u64, len: usize) -> Option<&'static [u8]> {
    let end = phys.checked_add(len as u64)?;
    if end > DIRECT_MAP_LIMIT {
        return None;
    }
    // SAFETY: the range lies inside the direct map (checked above), which maps
    // all of physical 0..4 GiB for the kernel's lifetime; callers only pass
    // loader/firmware structures that nothing writes after boot.
    Some(unsafe { core::slice::from_raw_parts(phys_to_virt(phys) as *const u8, len) })
}

/// Releases the usable frames of the memory map to the allocator.
pub fn add_free_range(start: u64, end: u64) {
    without_interrupts(|| {
        FRAMES
            .lock()
            .bitmap
            .add_free_range(FrameNumber::from_addr(start), FrameNumber::from_addr(end))
    });
}

/// Allocates one zeroed frame: from the pool zeroed ahead, or zeroed now.
#[inline]
pub fn alloc_frame() -> Result<FrameNumber, FrameError> {
    let (frame, zeroed) = without_interrupts(|| {
        let mut frames = FRAMES.lock();
        match frames.pop_pooled() {
            Some(frame) => Ok((frame, true)),
            None => frames.bitmap.alloc().map(|frame| (frame, false)),
        }
    })?;
    if !zeroed {
        zero_frames(frame, 1);
    }
    Ok(frame)
}

/// Returns a frame to the allocator (to the bitmap: it may be dirty).
pub fn free_frame(frame: FrameNumber) -> Result<(), FrameError> {
    without_interrupts(|| FRAMES.lock().bitmap.free(frame))
}

/// Number of free frames (the pool's and those being zeroed for it
/// included).
pub fn free_frames() -> u64 {
    without_interrupts(|| {
        let frames = FRAMES.lock();
        frames.bitmap.free_frames() + frames.pool.len() as u64 + frames.zeroing
    })
}

/// Sets how many frames idle cores keep zeroed ahead (clipped to an eighth
/// of the free frames and to the pool's capacity; 0: none). Called once at
/// boot, after the memory map was added.
pub fn set_zero_pool_target(frames: u64) {
    without_interrupts(|| {
        let mut f = FRAMES.lock();
        let target = frames.min(f.bitmap.free_frames() / 8);
        f.pool.set_target(target as usize);
    });
}

/// Whether the pool wants another zeroed frame (a cheap look for the idle
/// loop; [`zero_step`] decides under the lock).
pub fn zero_pool_wants_more() -> bool {
    without_interrupts(|| FRAMES.lock().pool.wants_more())
}

/// Frames in the pool now.
pub fn zero_pool_len() -> usize {
    without_interrupts(|| FRAMES.lock().pool.len())
}

/// One bounded step of zeroing ahead, for an idle core: takes one free
/// frame out of the bitmap, zeroes it with interrupts as the caller has
/// them (the idle loop: on), and pushes it into the pool. `false` if the
/// pool wants nothing or no frame is free.
pub fn zero_step() -> bool {
    let taken = without_interrupts(|| {
        let mut f = FRAMES.lock();
        if !f.pool.wants_more() {
            return None;
        }
        let frame = f.bitmap.alloc().ok()?;
        f.zeroing += 1;
        Some(frame)
    });
    let Some(frame) = taken else { return false };
    // The frame is out of the bitmap and in no pool: this core alone holds it.
    zero_frames(frame, 1);
    without_interrupts(|| {
        let mut f = FRAMES.lock();
        f.zeroing -= 1;
        match f.pool.push(frame) {
            Ok(()) => f.mark_pooled(frame, true),
            // Filled meanwhile by another core.
            Err(frame) => f.bitmap.free(frame).expect("a frame taken for zeroing is allocated"),
        }
    });
    true
}

/// Whether every byte of `frame` is zero.
///
/// Only for frames no one else may write: the pool's (under its lock) and
/// frames the caller just allocated.
fn is_zero(frame: FrameNumber) -> bool {
    // SAFETY: the frame lies in the direct map, and the callers hold it
    // exclusively (see above): nothing writes it during the read.
    let words = unsafe {
        core::slice::from_raw_parts(frame_virt(frame) as *const u64, PAGE_SIZE as usize / 8)
    };
    words.iter().all(|&w| w == 0)
}

/// The zero-guarantee test's probes: frames in the pool that are not zero
/// (under the allocator's lock: interrupts off for the whole walk).
pub fn pooled_frames_not_zero() -> usize {
    without_interrupts(|| {
        let f = FRAMES.lock();
        f.pool.frames().iter().filter(|&&frame| !is_zero(frame)).count()
    })
}

/// The zero-guarantee test's probes: allocates `n` frames (from the pool
/// first, then zeroed on demand), counts those that are not zero, fills
/// every one with a non-zero pattern and frees them all (dirty). Returns
/// the count, or `None` if memory ran out (what was taken is freed).
pub fn alloc_check_dirty_free(n: usize) -> Option<usize> {
    let mut frames = alloc::vec::Vec::with_capacity(n);
    let mut not_zero = 0;
    for _ in 0..n {
        let Ok(frame) = alloc_frame() else { break };
        not_zero += usize::from(!is_zero(frame));
        // SAFETY: just allocated: this core holds the frame alone, and it
        // lies in the direct map.
        unsafe { core::ptr::write_bytes(frame_virt(frame), 0x5a, PAGE_SIZE as usize) };
        frames.push(frame);
    }
    let complete = frames.len() == n;
    for frame in frames {
        free_frame(frame).expect("a frame just allocated is allocated");
    }
    complete.then_some(not_zero)
}

/// The direct-map address of a frame.
pub fn frame_virt(frame: FrameNumber) -> *mut u8 {
    phys_to_virt(frame.addr()) as *mut u8
}

fn zero_frames(first: FrameNumber, count: u64) {
    // `rep stosq` rather than `write_bytes`: what the compiler makes of a
    // constant-size memset changes with inlining (with LTO it was a slower
    // loop), and zeroing is a large part of a frame allocation.
    // SAFETY: the frames were just taken from the allocator, so this core owns
    // them exclusively, and they lie in the direct map (the bitmap only covers
    // frames below DIRECT_MAP_LIMIT); `rcx` quadwords from `rdi` is exactly
    // those frames. DF is clear in the kernel (SFMASK clears it on `syscall`,
    // and interrupt entry does not set it).
    unsafe {
        core::arch::asm!(
            "rep stosq",
            inout("rdi") frame_virt(first) => _,
            inout("rcx") count * PAGE_SIZE / 8 => _,
            in("rax") 0u64,
            options(nostack, preserves_flags)
        );
    }
}

/// The global allocator: a locked linked-list heap used with interrupts off.
struct KernelHeap(LockedHeap);

// SAFETY: delegates to `LockedHeap`, a correct `GlobalAlloc`; disabling
// interrupts around it changes nothing about the memory it returns.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        without_interrupts(|| unsafe { self.0.alloc(layout) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
        without_interrupts(|| unsafe { self.0.dealloc(ptr, layout) })
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(LockedHeap::empty());

/// Carves the heap out of the frame allocator. Call once, on the BSP, after
/// the memory map has been added.
pub fn init_heap() -> Result<(), FrameError> {
    let frames = HEAP_SIZE / PAGE_SIZE;
    let first = without_interrupts(|| FRAMES.lock().bitmap.alloc_contiguous(frames, 512))?;
    let start = frame_virt(first);
    // SAFETY: `first..first+frames` were just allocated, are owned by the heap
    // from now on, never freed, and mapped writable in the direct map.
    unsafe { HEAP.0.lock().init(start, HEAP_SIZE as usize) };
    Ok(())
}

/// The physical address behind a direct-map address.
pub fn direct_map_phys(virt: u64) -> Option<u64> {
    virt.checked_sub(PHYS_OFFSET).filter(|&p| p < DIRECT_MAP_LIMIT)
}

/// Makes the boot module (the initrd) at physical `paddr..paddr+size`
/// mappable whole by environments (`InitrdMap`): it must start on a page
/// boundary and the rest of its last page must hold nothing else (it is
/// zeroed). Where the loader placed it so (QEMU puts it page-aligned at the
/// top of low RAM) and `tail_shared` is false, it stays in place: the
/// caller reserved its pages, rounded out to whole pages, so none of them
/// is in the free pool. Otherwise it is copied into frames taken from the
/// pool for good (never freed). Call once, on the BSP, after
/// [`init_heap`]. `None` if it leaves the direct map or no frames are left.
pub fn place_boot_module(paddr: u64, size: u64, tail_shared: bool) -> Option<&'static [u8]> {
    paddr.checked_add(size).filter(|&e| e <= DIRECT_MAP_LIMIT)?;
    let tail = |end: u64| (end, end.next_multiple_of(PAGE_SIZE) - end);
    let base = if paddr.is_multiple_of(PAGE_SIZE) && !tail_shared {
        paddr
    } else {
        let frames = size.div_ceil(PAGE_SIZE).max(1);
        let first = without_interrupts(|| FRAMES.lock().bitmap.alloc_contiguous(frames, 1)).ok()?;
        // SAFETY: the source lies in the direct map (checked above) and is
        // reserved boot memory nothing writes; the destination frames were
        // just taken from the pool and are this core's alone.
        unsafe {
            core::ptr::copy_nonoverlapping(
                phys_to_virt(paddr) as *const u8,
                frame_virt(first),
                size as usize,
            );
        }
        first.addr()
    };
    let (at, n) = tail(base + size);
    // SAFETY: `at..at+n` is the rest of the module's last page, which the
    // module owns alone (in place: reserved and not shared, checked by the
    // caller; copied: our own frame); no Rust reference covers it.
    unsafe { core::ptr::write_bytes(phys_to_virt(at) as *mut u8, 0, n as usize) };
    boot_phys_slice(base, size as usize)
}

/// Takes the specific frame `frame` from the free frames, zeroed (if it
/// waits in the pool zeroed ahead, from there).
pub fn take_frame(frame: FrameNumber) -> Result<(), FrameError> {
    let zeroed = without_interrupts(|| {
        let mut f = FRAMES.lock();
        match f.bitmap.take(frame) {
            Err(FrameError::NotAllocated(_)) if f.is_pooled(frame) && f.pool.take(frame) => {
                f.mark_pooled(frame, false);
                Ok(true)
            }
            other => other.map(|()| false),
        }
    })?;
    if !zeroed {
        zero_frames(frame, 1);
    }
    Ok(())
}

/// Whether `frame` is free (in the bitmap or in the pool zeroed ahead).
pub fn frame_is_free(frame: FrameNumber) -> bool {
    without_interrupts(|| {
        let f = FRAMES.lock();
        !f.bitmap.is_used(frame) || f.is_pooled(frame)
    })
}

/// Number of frames the allocator describes (frames at or above this do
/// not exist for it).
pub const FRAME_CAPACITY: u64 = FrameBitmap::<BITMAP_WORDS>::CAPACITY;
