//! `benchsys`: ring-3 microbenchmarks of the kernel's hot paths, run by the
//! kernel's `mode=bench` (`cargo xtask bench`).
//!
//! Each benchmark times one operation with `rdtsc` around it, `start_arg`
//! samples (default 1000) after a short warm-up, and prints one line
//! `bench {"name":..,"unit":"cycles","median":..,"p99":..,"samples":..}`
//! that xtask collects. Under `--icount` the unit is guest instructions.
//!
//! * `syscall_null`: one `Null` system call, entry to return.
//! * `fault_upcall_resume`: a write to a read-only page, through the page
//!   fault, the upcall to the handler (which upgrades the page with
//!   `Protect`) and the libOS's user-space resume, to the retried write
//!   completing — the path Linux measures as SIGSEGV + `mprotect` + return.
//! * `map_unmap`: `Map` then `Unmap` of one page (the unmap includes its
//!   TLB shootdown to the other cores running this environment: none here).
//! * `map_batch_per_page` / `map_single_per_page`: 64 pages mapped by one
//!   `MapBatch` of 64 entries, or by 64 `Map` calls; one sample is the
//!   whole batch divided by 64 (the pages are unmapped outside the timing).
//! * `frame_alloc_free`: `FrameAlloc(ANY)` then `FrameFree`.
//! * `first_touch_per_page`: the first write to a page of a lazy region
//!   (`libos_async::vm`), through the page fault, the upcall, the region
//!   layer's fill (`FrameAlloc` — the kernel zeroes the frame — `Map`, the
//!   frame recorded) and the user-space resume, to the retried write
//!   completing; one sample per page (the frame-table page filled once per
//!   1024 pages lands in the tail, not the median).
//! * `syscall_redirect_roundtrip`: Linux `getpid` (39) made by code outside
//!   the library range (`libos_async::redirect`'s `.foreign` stub, the
//!   stand-in for an unmodified binary) with a redirection registered: the
//!   kernel's fast path sends it to the library's `Answer` handler, which
//!   answers and returns to the program without entering the kernel again.
//!   Timed around the stub's call, like `syscall_null`.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};
use libos_async::abi::{MapEntry, PAGE_SIZE, Rights, UpcallFrame, vector};
use libos_async::bench::report;
use libos_async::check::require;
use libos_async::layout::SCRATCH_BASE;
use libos_async::sys::{self, probe, rdtsc};
use libos_async::vm::{self, Fill};
use libos_async::{println, redirect, set_exception_handler};

libos_async::entry!(app_main);

const MAX_SAMPLES: usize = 4096;
const WARMUP: usize = 32;
/// The page the fault benchmark writes to.
const FAULT_PAGE: u64 = SCRATCH_BASE;
/// The page the map benchmark maps.
const MAP_PAGE: u64 = SCRATCH_BASE + 16 * PAGE_SIZE;
/// The 64 pages the batch benchmarks map.
const BATCH_BASE: u64 = SCRATCH_BASE + 0x200_0000;
/// The lazy region the first-touch benchmark writes to.
const LAZY_BASE: u64 = SCRATCH_BASE + 0x4000_0000;
/// The redirection handler's stack page (every core's: stride 0).
const REDIRECT_STACK: u64 = SCRATCH_BASE + 0x100_0000;

/// Times `op` `n` times (after a warm-up) into `out`.
fn measure(n: usize, out: &mut [u64; MAX_SAMPLES], mut op: impl FnMut()) -> usize {
    for i in 0..n + WARMUP {
        let start = rdtsc();
        op();
        let cycles = rdtsc() - start;
        if i >= WARMUP {
            out[i - WARMUP] = cycles;
        }
    }
    n
}

static FAULTS: AtomicU64 = AtomicU64::new(0);

/// Fixes the fault the way a libOS pager would: upgrade the page, resume.
fn upgrade_on_fault(frame: &mut UpcallFrame) -> bool {
    if frame.vector != vector::PAGE_FAULT || frame.fault_addr & !(PAGE_SIZE - 1) != FAULT_PAGE {
        return false;
    }
    FAULTS.fetch_add(1, Ordering::Relaxed);
    sys::protect(FAULT_PAGE, Rights::RW).is_ok()
}

fn app_main(arg: u64) -> i32 {
    let n = if arg == 0 { 1000 } else { (arg as usize).min(MAX_SAMPLES) };
    let mut samples = [0u64; MAX_SAMPLES];

    let k = measure(n, &mut samples, || {
        let _ = sys::null();
    });
    report("syscall_null", &mut samples[..k]);

    require("set_exception_handler", set_exception_handler(upgrade_on_fault));
    let frame = require("frame_alloc", sys::frame_alloc(None));
    require("map", sys::map(frame, FAULT_PAGE, Rights::READ));
    let mut value = 0;
    for i in 0..n + WARMUP {
        let start = rdtsc();
        probe::write(FAULT_PAGE, value);
        let cycles = rdtsc() - start;
        require("protect back", sys::protect(FAULT_PAGE, Rights::READ));
        value += 1;
        if i >= WARMUP {
            samples[i - WARMUP] = cycles;
        }
    }
    if FAULTS.load(Ordering::Relaxed) != (n + WARMUP) as u64 || probe::read(FAULT_PAGE) != value - 1
    {
        println!("CHECK FAILED: fault benchmark took {} faults", FAULTS.load(Ordering::Relaxed));
        return 1;
    }
    report("fault_upcall_resume", &mut samples[..n]);
    require("unmap", sys::unmap(FAULT_PAGE));

    let k = measure(n, &mut samples, || {
        require("map", sys::map(frame, MAP_PAGE, Rights::RW));
        require("unmap", sys::unmap(MAP_PAGE));
    });
    report("map_unmap", &mut samples[..k]);
    require("frame_free", sys::frame_free(frame));

    let k = measure(n, &mut samples, || {
        let f = require("frame_alloc", sys::frame_alloc(None));
        require("frame_free", sys::frame_free(f));
    });
    report("frame_alloc_free", &mut samples[..k]);

    // Warm-up pages first, so their page tables and frame-table pages do
    // not count; then one sample per fresh page.
    let pages = (n + WARMUP) as u64;
    let region = require(
        "reserve_at",
        vm::reserve_at("bench", LAZY_BASE, pages * PAGE_SIZE, 1, Rights::RW, Fill::Lazy),
    );
    let before = vm::stats().data_frames;
    for i in 0..n + WARMUP {
        let va = LAZY_BASE + i as u64 * PAGE_SIZE;
        let start = rdtsc();
        probe::write(va, i as u64);
        let cycles = rdtsc() - start;
        if i >= WARMUP {
            samples[i - WARMUP] = cycles;
        }
    }
    let filled = vm::stats().data_frames - before;
    let freed = require("release", region.release());
    if filled != pages || freed != pages {
        println!("CHECK FAILED: first touch of {pages} pages filled {filled}, freed {freed}");
        return 1;
    }
    report("first_touch_per_page", &mut samples[..n]);

    let stack = require("frame_alloc", sys::frame_alloc(None));
    require("map", sys::map(stack, REDIRECT_STACK, Rights::RW));
    require(
        "install redirect",
        redirect::install(redirect::Handler::Answer, REDIRECT_STACK + PAGE_SIZE, 0),
    );
    const LINUX_GETPID: u64 = 39;
    let mut wrong = 0;
    let k = measure(n, &mut samples, || {
        if redirect::foreign_syscall(LINUX_GETPID, [0; 5]) != LINUX_GETPID {
            wrong += 1;
        }
    });
    require("clear redirect", sys::clear_syscall_redirect());
    if wrong != 0 || redirect::foreign_syscall(LINUX_GETPID, [0; 5]) == LINUX_GETPID {
        println!("CHECK FAILED: redirected getpid answered wrong {wrong} times");
        return 1;
    }
    report("syscall_redirect_roundtrip", &mut samples[..k]);

    // Last: it leaves the frame allocator's state as the others found it.
    // 64 pages by one MapBatch, then by 64 Maps (page tables made first).
    const BATCH: usize = libos_async::abi::MAP_BATCH_MAX as usize;
    let frames: [u64; BATCH] =
        core::array::from_fn(|_| require("frame_alloc", sys::frame_alloc(None)));
    let entries: [MapEntry; BATCH] = core::array::from_fn(|i| MapEntry {
        frame: frames[i],
        va: BATCH_BASE + i as u64 * PAGE_SIZE,
        rights: Rights::RW.0,
    });
    require("map_batch", sys::map_batch(&entries));
    require("unmap_range", sys::unmap_range(BATCH_BASE, BATCH as u64));
    for (name, batch) in [("map_batch_per_page", true), ("map_single_per_page", false)] {
        for i in 0..n + WARMUP {
            let start = rdtsc();
            if batch {
                require("map_batch", sys::map_batch(&entries));
            } else {
                for e in &entries {
                    require("map", sys::map(e.frame, e.va, Rights::RW));
                }
            }
            let cycles = (rdtsc() - start) / BATCH as u64;
            require("unmap_range", sys::unmap_range(BATCH_BASE, BATCH as u64));
            if i >= WARMUP {
                samples[i - WARMUP] = cycles;
            }
        }
        report(name, &mut samples[..n]);
    }
    for f in frames {
        require("frame_free", sys::frame_free(f));
    }
    0
}
