//! `tlbbench`: TLB shootdown latency against k cores that run this
//! environment, for k = 1..=7 (as many as `info().user_cores` has besides
//! the measuring core). Run by the kernel's `mode=bench`.
//!
//! For each k, k *spinner* vCPUs on k other cores read a page of this
//! environment in a loop (so the address space stays loaded there) until a
//! stop flag; then the first vCPU measures with `rdtsc`:
//!
//! * `tlb_shootdown_1page_k{k}`: `Unmap` of one page (mapped untimed);
//! * `tlb_shootdown_64pages_k{k}`: `UnmapRange` of 64 pages;
//! * `tlb_shootdown_full_k{k}`: `UnmapRange` of 512 pages, above the
//!   kernel's full-flush threshold.
//!
//! The pages are 512 distinct frames allocated once and mapped again
//! (untimed) before every sample. (One frame mapped at 512 addresses would
//! be cheaper to set up but times the kernel's per-frame reverse-mapping
//! list, which is linear per removal: quadratic for the whole range.)
//!
//! `start_arg` samples per benchmark (0: 200; the 512-page case takes a
//! quarter of that, at least 20), after a short warm-up. The spinners exit
//! between values of k. Each result is one line
//! `bench {"name":..,"unit":"cycles","median":..,"p99":..,"samples":..}`.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use libos_async::abi::{Error, PAGE_SIZE, Rights};
use libos_async::bench::report;
use libos_async::check::{fail, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::sys::{self, probe, rdtsc};
use libos_async::{core_id, info, println, start_vcpu, wait_for_ms};

libos_async::entry!(app_main);

const MAX_SAMPLES: usize = 4096;
const DEFAULT_SAMPLES: usize = 200;
const MIN_FULL_SAMPLES: usize = 20;
const WARMUP: usize = 4;
const MAX_K: usize = 7;
/// The page the spinners read.
const SPIN_VA: u64 = SCRATCH_BASE;
/// The pages that are mapped and shot down.
const BENCH_VA: u64 = SCRATCH_BASE + 0x100_0000;
const RANGE_PAGES: u64 = 64;
const FULL_PAGES: u64 = 512;
use libos_async::TEST_WAIT_MS as WAIT_MS;

static STOP: AtomicBool = AtomicBool::new(false);
static RUNNING: AtomicU64 = AtomicU64::new(0);
static EXITED: AtomicU64 = AtomicU64::new(0);

fn spinner(_: u64) -> ! {
    RUNNING.fetch_add(1, SeqCst);
    let deadline = rdtsc().saturating_add(info().tsc_hz.saturating_mul(600));
    let mut i: u64 = 0;
    while !STOP.load(SeqCst) {
        core::hint::black_box(probe::read(SPIN_VA));
        // `pause`: a well-behaved spinner (and under `-icount`, the point
        // where QEMU's round-robin moves to the next vCPU, so the figures
        // are the shootdown's path length, not the spinners' loops).
        core::hint::spin_loop();
        i += 1;
        if i.is_multiple_of(1024) && rdtsc() > deadline {
            println!("CHECK FAILED: tlbbench spinner on core {} never stopped", core_id());
            break;
        }
    }
    EXITED.fetch_add(1, SeqCst);
    sys::vcpu_exit()
}

/// Starts a spinner on `core`, retrying while the previous one there is
/// still on its way out.
fn start_spinner(core: usize) {
    let mut last = Err(Error::NoSuchCore);
    if !wait_for_ms(WAIT_MS, || {
        last = start_vcpu(core, spinner, 0);
        last != Err(Error::NoSuchCore)
    }) {
        fail(format_args!("tlbbench: cannot start a spinner on core {core}: {last:?}"));
    }
    require("start_vcpu", last);
}

/// Maps the first `pages` of `frames` at [`BENCH_VA`] onwards.
fn map_pages(frames: &[u64], pages: u64) {
    for (p, &frame) in frames[..pages as usize].iter().enumerate() {
        require("map", sys::map(frame, BENCH_VA + p as u64 * PAGE_SIZE, Rights::RW));
    }
}

/// Times `n` (after a warm-up) removals of `pages` pages into `out`.
fn measure(n: usize, pages: u64, frames: &[u64], out: &mut [u64]) {
    for i in 0..n + WARMUP {
        map_pages(frames, pages);
        let (cycles, removed) = if pages == 1 {
            let t = rdtsc();
            require("unmap", sys::unmap(BENCH_VA));
            (rdtsc() - t, 1)
        } else {
            let t = rdtsc();
            let removed = require("unmap_range", sys::unmap_range(BENCH_VA, pages));
            (rdtsc() - t, removed)
        };
        if removed != pages {
            fail(format_args!("tlbbench: removed {removed} of {pages} pages"));
        }
        if i >= WARMUP {
            out[i - WARMUP] = cycles;
        }
    }
}

fn app_main(arg: u64) -> i32 {
    let n = match arg {
        0 => DEFAULT_SAMPLES,
        a => (a as usize).min(MAX_SAMPLES),
    };
    let n_full = (n / 4).clamp(MIN_FULL_SAMPLES, MAX_SAMPLES);
    let me = core_id();
    let user = match info().user_cores {
        0 => u64::MAX,
        c => c,
    };
    let mut others = [0usize; MAX_K];
    let mut count = 0;
    for core in (0..info().cores as usize).filter(|&c| c != me && user & (1 << c) != 0) {
        if count < MAX_K {
            others[count] = core;
            count += 1;
        }
    }
    if count == 0 {
        fail(format_args!("tlbbench: no other core"));
    }

    let spin_frame = require("frame_alloc", sys::frame_alloc(None));
    require("map spin page", sys::map(spin_frame, SPIN_VA, Rights::RW));
    probe::write(SPIN_VA, 1);
    let mut frames = [0u64; FULL_PAGES as usize];
    for f in frames.iter_mut() {
        *f = require("frame_alloc", sys::frame_alloc(None));
    }
    let mut samples = [0u64; MAX_SAMPLES];
    let t0 = rdtsc();

    for k in 1..=count {
        STOP.store(false, SeqCst);
        RUNNING.store(0, SeqCst);
        EXITED.store(0, SeqCst);
        for &core in &others[..k] {
            start_spinner(core);
        }
        if !wait_for_ms(WAIT_MS, || RUNNING.load(SeqCst) >= k as u64) {
            fail(format_args!("tlbbench: only {} of {k} spinners run", RUNNING.load(SeqCst)));
        }

        measure(n, 1, &frames, &mut samples);
        report(&format_name("tlb_shootdown_1page_k", k), &mut samples[..n]);
        measure(n, RANGE_PAGES, &frames, &mut samples);
        report(&format_name("tlb_shootdown_64pages_k", k), &mut samples[..n]);
        measure(n_full, FULL_PAGES, &frames, &mut samples);
        report(&format_name("tlb_shootdown_full_k", k), &mut samples[..n_full]);

        STOP.store(true, SeqCst);
        if !wait_for_ms(WAIT_MS, || EXITED.load(SeqCst) >= k as u64) {
            fail(format_args!("tlbbench: only {} of {k} spinners stopped", EXITED.load(SeqCst)));
        }
    }

    require("unmap spin page", sys::unmap(SPIN_VA));
    require("frame_free", sys::frame_free(spin_frame));
    for f in frames {
        require("frame_free", sys::frame_free(f));
    }
    println!(
        "tlbbench: k = 1..={count}, {n} samples ({n_full} for 512 pages), {} Mcycles",
        (rdtsc() - t0) / 1_000_000
    );
    0
}

/// `prefix` followed by `k`, in a fixed buffer (no allocator).
fn format_name(prefix: &str, k: usize) -> Name {
    let mut name = Name { buf: [0; 48], len: 0 };
    let _ = core::fmt::Write::write_fmt(&mut name, format_args!("{prefix}{k}"));
    name
}

/// A short string on the stack.
struct Name {
    buf: [u8; 48],
    len: usize,
}

impl core::fmt::Write for Name {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let b = s.as_bytes();
        let end = self.len + b.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(b);
        self.len = end;
        Ok(())
    }
}

impl core::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}
