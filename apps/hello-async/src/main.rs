//! `hello-async`: the async runtime's greeting. `main!` starts an executor
//! on every usable core (8 in run mode, 7 in test mode), work stealing off;
//! the main task
//! spawns one task on each of them with `spawn_on`, each task yields once,
//! sleeps a millisecond, and returns the core it ran on; the main task
//! joins them all, prints `hello-async: task N ran on core C` for each,
//! and exits 0 iff every task ran on the core it was spawned on.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use core::time::Duration;

use libos_async::rt::{self, Instant, RuntimeConfig};
use libos_async::{println, usable_cores};

// Stealing off: each task runs where it was spawned (with stealing on, an
// executor that starts early takes tasks queued for cores still booting).
libos_async::main!(main_async, RuntimeConfig::new().stealing(false));

async fn main_async(_arg: u64) -> i32 {
    let start = Instant::now();
    let cores: Vec<usize> =
        (0..libos_async::abi::MAX_CORES).filter(|&c| usable_cores() & (1 << c) != 0).collect();
    println!(
        "hello-async: main task on core {}, executors on {} cores",
        rt::current_core(),
        cores.len()
    );
    let handles: Vec<_> = cores
        .iter()
        .enumerate()
        .map(|(n, &core)| {
            let h = rt::spawn_on(core, async move {
                rt::yield_now().await;
                rt::sleep(Duration::from_millis(1)).await;
                (n, rt::current_core())
            });
            (core, h)
        })
        .collect();
    let mut failed = 0;
    for (core, h) in handles {
        let (n, ran) = h.await;
        println!("hello-async: task {n} ran on core {ran}");
        if ran != core {
            println!("CHECK FAILED: task {n} was spawned on core {core} but ran on {ran}");
            failed += 1;
        }
    }
    println!("hello-async: {} tasks joined in {} us", cores.len(), start.elapsed().as_micros());
    i32::from(failed != 0)
}
