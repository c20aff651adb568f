//! `worker`: a well-behaved environment. Allocates 64 frames, maps them in
//! the scratch window, fills them with a pattern and verifies it, makes
//! 100,000 null system calls, unmaps and frees everything, prints
//! `worker: done` and exits 0.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::abi::{PAGE_SIZE, Rights};
use libos_async::check::{fail, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::println;
use libos_async::sys::{self, probe};

libos_async::entry!(app_main);

const FRAMES: usize = 64;
const NULL_CALLS: u32 = 100_000;
/// Where the frames are mapped.
const BASE: u64 = SCRATCH_BASE;

fn pattern(page: usize, word: u64) -> u64 {
    0x5a5a_0000_0000_0000 ^ ((page as u64) << 32) ^ word
}

fn app_main(_arg: u64) -> i32 {
    let mut frames = [0u64; FRAMES];
    for (i, f) in frames.iter_mut().enumerate() {
        *f = require("frame_alloc", sys::frame_alloc(None));
        require("map", sys::map(*f, BASE + i as u64 * PAGE_SIZE, Rights::RW));
    }
    for (page, frame) in frames.iter().enumerate() {
        let va = BASE + page as u64 * PAGE_SIZE;
        for w in 0..PAGE_SIZE / 8 {
            if probe::read(va + w * 8) != 0 {
                fail(format_args!("fresh frame {frame} not zeroed"));
            }
            probe::write(va + w * 8, pattern(page, w));
        }
    }
    for page in 0..FRAMES {
        let va = BASE + page as u64 * PAGE_SIZE;
        for w in 0..PAGE_SIZE / 8 {
            if probe::read(va + w * 8) != pattern(page, w) {
                fail(format_args!("pattern mismatch page {page} word {w}"));
            }
        }
    }
    for _ in 0..NULL_CALLS {
        require("null", sys::null());
    }
    for (i, f) in frames.iter().enumerate() {
        require("unmap", sys::unmap(BASE + i as u64 * PAGE_SIZE));
        require("frame_free", sys::frame_free(*f));
    }
    println!("worker: done");
    0
}
