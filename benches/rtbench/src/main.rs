//! `rtbench`: benchmarks of the async runtime, `bench {...}` lines like
//! `ringbench` (`start_arg` samples, default 200, after a warm-up).
//!
//! * `rt_spawn_join_local`: a task spawns an empty task on its own core
//!   and awaits its `JoinHandle`; timed from before `spawn` until the
//!   awaiting task runs again (task allocation, queue push and pop, the
//!   child's poll and completion, the join wake-up, the parent's poll).
//! * `rt_spawn_join_cross_core`: the same with `spawn_on` another core
//!   (whose executor sleeps in `SleepOn` between samples), so it includes
//!   two cross-core wake-ups (`Notify` + the kernel's IPI each way) and
//!   everything the other vCPUs run meanwhile under `--icount`.
//! * `rt_wakeup_ring_completion`: a task awaits a ring `Nop`; timed from
//!   the executor finding the completion on its ring (the reactor's
//!   `last_reap_tsc`) until the task runs again: completion dispatch,
//!   waker, queue, poll.
//! * `rt_wakeup_cross_core`: a task on core A awaits a task on core B;
//!   timed from B's task reading the TSC just before it returns until A's
//!   task runs (A's executor sleeps meanwhile): join wake-up across cores,
//!   `Notify`, IPI, predicate, poll.
//! * `rt_yield`: one `yield_now` round trip of a lone task.
//!
//! With [`SCALING`] set in the start argument it runs only the throughput
//! curve `rt_spawn_K_cores` (K = 1 .. the executor cores): a driver task on
//! each of K executor cores spawns [`SPAWN_TASKS`] small tasks on its own
//! core, [`SPAWN_WAVE`] at a time, and joins them. A sample is the window
//! from before the first driver's `spawn_on` until the last driver is
//! joined, divided by all the tasks spawned: cycles per task of the whole
//! machine (ops/s = TSC Hz / that; per core, divided by K). [`SCALE_REPS`]
//! samples per K.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use libos_async::bench::report;
use libos_async::rt::{self, RuntimeConfig};
use libos_async::sys::rdtsc;
use libos_async::{abi, println};

// Stealing off: the cross-core figures must not be short-circuited by the
// idle core stealing its own work back.
libos_async::main!(main_async, RuntimeConfig::new().stealing(false));

const WARMUP: usize = 20;

/// Start-argument bit: run only the spawn throughput curve.
const SCALING: u64 = 1 << 32;
/// Tasks each driver spawns per sample.
const SPAWN_TASKS: u64 = 256;
/// Tasks a driver spawns before it joins them.
const SPAWN_WAVE: u64 = 16;
/// Samples per core count.
const SCALE_REPS: usize = 5;

/// One driver: [`SPAWN_TASKS`] tasks on this core in waves; the sum of
/// their results (each returns its index), checked by the caller.
async fn spawn_driver() -> u64 {
    let mut sum = 0;
    for wave in 0..SPAWN_TASKS / SPAWN_WAVE {
        let handles: Vec<_> = (0..SPAWN_WAVE)
            .map(|i| rt::spawn(async move { core::hint::black_box(wave * SPAWN_WAVE + i) }))
            .collect();
        for h in handles {
            sum += h.await;
        }
    }
    sum
}

/// The spawn throughput curve over `cores` (see the module docs); whether
/// every task ran once.
async fn spawn_scaling(cores: &[usize]) -> bool {
    let want = SPAWN_TASKS * (SPAWN_TASKS - 1) / 2;
    for k in 1..=cores.len() {
        let mut samples = [0u64; SCALE_REPS];
        for slot in &mut samples {
            let t0 = rdtsc();
            let drivers: Vec<_> =
                cores[..k].iter().map(|&c| rt::spawn_on(c, spawn_driver())).collect();
            let mut ok = true;
            for d in drivers {
                ok &= d.await == want;
            }
            let t1 = rdtsc();
            if !ok {
                println!("CHECK FAILED: rt_spawn_{k}_cores: a task's result is missing");
                return false;
            }
            *slot = (t1 - t0) / (k as u64 * SPAWN_TASKS);
        }
        report(&alloc::format!("rt_spawn_{k}_cores"), &mut samples);
    }
    true
}

async fn main_async(arg: u64) -> i32 {
    let n = if arg & 0xffff_ffff == 0 { 200 } else { (arg as usize & 0xffff_ffff).min(4096) };
    let set = rt::executor_cores();
    let cores: Vec<usize> = (0..abi::MAX_CORES).filter(|&c| set & (1 << c) != 0).collect();
    let here = rt::current_core();
    if arg & SCALING != 0 {
        // This core first: K = 1 is the driver on the main task's own core.
        let mut order = alloc::vec![here];
        order.extend(cores.iter().copied().filter(|&c| c != here));
        return i32::from(!spawn_scaling(&order).await);
    }
    let Some(&other) = cores.iter().find(|&&c| c != here) else {
        println!("CHECK FAILED: rtbench needs two executor cores");
        return 1;
    };
    let mut samples = rt::spawn_on(here, bench_local(n)).await;
    report("rt_spawn_join_local", &mut samples.0);
    report("rt_wakeup_ring_completion", &mut samples.1);
    report("rt_yield", &mut samples.2);
    let (mut spawn, mut wake) = rt::spawn_on(here, bench_cross(n, other)).await;
    report("rt_spawn_join_cross_core", &mut spawn);
    report("rt_wakeup_cross_core", &mut wake);
    0
}

async fn bench_local(n: usize) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let (mut spawn, mut ring, mut yields) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n + WARMUP {
        let t0 = rdtsc();
        rt::spawn(async {}).await;
        let t1 = rdtsc();
        if i >= WARMUP {
            spawn.push(t1 - t0);
        }
    }
    for i in 0..n + WARMUP {
        let r = rt::nop().await;
        let t1 = rdtsc();
        let t0 = rt::last_reap_tsc();
        if r != Ok(0) {
            println!("CHECK FAILED: nop: {r:?}");
        }
        if i >= WARMUP {
            ring.push(t1.saturating_sub(t0));
        }
    }
    for i in 0..n + WARMUP {
        let t0 = rdtsc();
        rt::yield_now().await;
        let t1 = rdtsc();
        if i >= WARMUP {
            yields.push(t1 - t0);
        }
    }
    (spawn, ring, yields)
}

async fn bench_cross(n: usize, other: usize) -> (Vec<u64>, Vec<u64>) {
    let (mut spawn, mut wake) = (Vec::new(), Vec::new());
    for i in 0..n + WARMUP {
        let t0 = rdtsc();
        rt::spawn_on(other, async {}).await;
        let t1 = rdtsc();
        if i >= WARMUP {
            spawn.push(t1 - t0);
        }
    }
    for i in 0..n + WARMUP {
        // Give the other core time to go to sleep first.
        let h = rt::spawn_on(other, async {
            let until = rdtsc() + libos_async::info().tsc_hz / 2000;
            while rdtsc() < until {
                core::hint::spin_loop();
            }
            rdtsc()
        });
        let t0 = h.await;
        let t1 = rdtsc();
        if i >= WARMUP {
            wake.push(t1.saturating_sub(t0));
        }
    }
    (spawn, wake)
}
