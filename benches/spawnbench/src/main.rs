//! `spawnbench`: `libos_async::spawn` timed in ring 3, run by the kernel's
//! `mode=bench` (group `spawnbench`). Under `--icount` the unit is guest
//! instructions.
//!
//! * `spawn_tiny_image`: `spawn("tiny_exit", ["tiny_exit"], this core)` —
//!   the initrd lookup (mapped and indexed once, in the warm-up), the
//!   loader's checks, `EnvCreate`, the image page copied through the
//!   staging window and given, its one stack page (the start layout)
//!   filled and given, `ChildStart` —
//!   then the child's run (it counts its arguments and exits) and `wait`
//!   (`ChildStatus` once its reclaim is done). The counterpart of Linux's
//!   `fork` + `execve` of a static no-libc binary + `waitpid`.
//! * `spawn_tiny_image_call`: the same samples' `spawn` call alone (until
//!   `ChildStart` returned); the rest is the child's run, its exit and
//!   reclaim, the `CHILD_EXIT` event and `wait`.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::bench::report;
use libos_async::check::require;
use libos_async::fork::wait;
use libos_async::println;
use libos_async::spawn::{SpawnOptions, spawn_with};
use libos_async::sys::{self, rdtsc};

libos_async::entry!(app_main);

const MAX_SAMPLES: usize = 1024;
const WARMUP: usize = 4;
/// The child's quota (its image page, stack, page tables and kernel pages)
/// and a one-page stack: `tiny_exit` uses only the start page.
const OPTS: SpawnOptions = SpawnOptions { quota: 64, stack_pages: 1 };

fn app_main(arg: u64) -> i32 {
    let n = if arg == 0 { 200 } else { (arg as usize).min(200) };
    let mut samples = [0u64; MAX_SAMPLES];
    let mut spawn_part = [0u64; MAX_SAMPLES];
    let core = sys::core_id();
    const ARGS: &[&[u8]] = &[b"tiny_exit"];
    for i in 0..n + WARMUP {
        let start = rdtsc();
        let child = match spawn_with("tiny_exit", ARGS, core, OPTS) {
            Ok(c) => c,
            Err(e) => {
                println!("CHECK FAILED: spawn: {e:?}");
                return 1;
            }
        };
        let mid = rdtsc();
        let status = require("wait", wait(child));
        if i >= WARMUP {
            spawn_part[i - WARMUP] = mid - start;
        }
        let t = rdtsc() - start;
        // argc 1 + "tiny_exit".len() 9.
        if status != 10 {
            println!("CHECK FAILED: tiny_exit's status {status}, expected 10");
            return 1;
        }
        if i >= WARMUP {
            samples[i - WARMUP] = t;
        }
    }
    report("spawn_tiny_image", &mut samples[..n]);
    report("spawn_tiny_image_call", &mut spawn_part[..n]);
    0
}
