//! `forkbench`: `libos_async::fork` timed in ring 3, run by the kernel's
//! `mode=bench` (group `forkbench`). Under `--icount` the unit is guest
//! instructions.
//!
//! * `fork_exit_wait_0_pages`: `fork` + the child's `exit` + `wait`, the
//!   parent with no pages touched beyond its own image, stacks and heap.
//! * `fork_exit_wait_1024_pages`: the same with 1,024 more pages written
//!   (before each sample the parent writes them all again, untimed, so that
//!   each fork shares — and write-protects — 1,024 writable pages).
//! * `cow_fault_per_page_child`: in a forked child, the first write to each
//!   of those 1,024 pages: the fault, `PageQuery`, a new frame, `FrameCopy`,
//!   `Unmap` + `Map`, the resume, the write done; one sample per page,
//!   printed by the child.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::abi::{PAGE_SIZE, Rights};
use libos_async::bench::report;
use libos_async::check::require;
use libos_async::fork::{fork, wait};
use libos_async::layout::SCRATCH_BASE;
use libos_async::println;
use libos_async::sys::{self, probe, rdtsc};

libos_async::entry!(app_main);

const MAX_SAMPLES: usize = 1024;
const WARMUP: usize = 4;
const PAGES: u64 = 1024;
const BASE: u64 = SCRATCH_BASE + 0x1000_0000;

fn touch_all(tag: u64) {
    for i in 0..PAGES {
        probe::write(BASE + i * PAGE_SIZE, tag + i);
    }
}

/// `n` samples of fork + exit + wait; `before` runs untimed before each.
fn fork_samples(n: usize, samples: &mut [u64; MAX_SAMPLES], mut before: impl FnMut(u64)) -> usize {
    for i in 0..n + WARMUP {
        before(i as u64);
        let start = rdtsc();
        match require("fork", fork(256)) {
            Some(child) => {
                let status = require("wait", wait(child));
                let t = rdtsc() - start;
                if status != 0 {
                    println!("CHECK FAILED: child status {status}");
                    sys::exit(1);
                }
                if i >= WARMUP {
                    samples[i - WARMUP] = t;
                }
            }
            None => sys::exit(0),
        }
    }
    n
}

fn app_main(arg: u64) -> i32 {
    let n = if arg == 0 { 200 } else { (arg as usize).min(200) };
    let mut samples = [0u64; MAX_SAMPLES];

    let k = fork_samples(n, &mut samples, |_| {});
    report("fork_exit_wait_0_pages", &mut samples[..k]);

    let chunk = libos_async::mem::MAP_FRESH_MAX_PAGES;
    for c in 0..PAGES / chunk {
        let va = BASE + c * chunk * PAGE_SIZE;
        require("map_fresh", libos_async::mem::map_fresh(va, chunk, Rights::RW));
    }
    let m = (n / 4).max(10);
    let k = fork_samples(m, &mut samples, touch_all);
    report("fork_exit_wait_1024_pages", &mut samples[..k]);

    // Copy-on-write faults in a child: every page written once.
    touch_all(7);
    match require("fork", fork(2048)) {
        Some(child) => {
            let status = require("wait", wait(child));
            if status != 0 {
                println!("CHECK FAILED: cow child status {status}");
                return 1;
            }
        }
        None => {
            let mut cow = [0u64; MAX_SAMPLES];
            for i in 0..PAGES {
                let va = BASE + i * PAGE_SIZE;
                let start = rdtsc();
                probe::write(va, i);
                cow[i as usize] = rdtsc() - start;
            }
            for i in 0..PAGES {
                if probe::read(BASE + i * PAGE_SIZE) != i {
                    println!("CHECK FAILED: cow page {i}");
                    sys::exit(1);
                }
            }
            report("cow_fault_per_page_child", &mut cow[..PAGES as usize]);
            sys::exit(0)
        }
    }
    for i in 0..PAGES {
        if probe::read(BASE + i * PAGE_SIZE) != 7 + i {
            println!("CHECK FAILED: parent page {i} changed by the child");
            return 1;
        }
    }
    0
}
