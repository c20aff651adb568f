//! `sched-lab`: one workload under several run-queue policies, one
//! executor core, and a table to compare them.
//!
//! The workload: `LONG` long tasks, each `LONG_CHUNKS` chunks of
//! `LONG_CHUNK_US` µs of busy work with a `yield_now` between chunks,
//! and `SHORT` short tasks (one chunk of `SHORT_US` µs), spawned by the
//! main task one every `GAP_US` µs while the long ones run. A short
//! task's latency is from its spawn to its completion.
//!
//! Policies: FIFO, LIFO, stride (short tasks 10 tickets, long ones 1),
//! EDF (short tasks' deadline: spawn + `SHORT_DEADLINE_US`, long ones
//! none), and `ShortestFirst`, a policy written here, outside the
//! runtime, as an application would (it runs tasks whose data says
//! "short" before the others). Each is installed with `rt::set_policy`
//! on the one executor core; the main task runs under it too.
//!
//! Prints one line per policy: `sched-lab: POLICY short p50 .. p99 ..
//! max .. us, long tasks done at .. us, N tasks in .. us`, and one
//! machine-readable result line, `lab workload=long-short policy=..
//! tasks=.. total_us=.. throughput_per_s=.. p50_us=.. p99_us=..
//! p999_us=.. max_us=.. long_done_us=.. jain_permille=..` (latencies of the short
//! tasks; `jain_permille`: Jain's fairness index over every task's service
//! time divided by its time from spawn to completion, in thousandths), then
//! `sched-lab: done`. `cargo xtask lab` collects the `lab` lines (under
//! `--icount` two boots must print the same). Exit 0 iff every task of
//! every run completed.
//!
//! **Start argument 1: a Caladan-style slot controller** ([`controller`]),
//! in the exokernel's decentralized form: the environment watches its own
//! queueing delay on its core (how long it waited runnable:
//! `VcpuPage::queue_tsc`, charged by the kernel) in windows of
//! `CTL_WINDOW_MS`, and takes one more time slot of that core
//! (`SlotAlloc`) whenever it waited more than `CTL_HIGH_PCT` % of a
//! window, giving one back below `CTL_LOW_PCT` %. The kernel arbitrates
//! (free slots only; reserved ones stay unowned), so the environment with
//! the longest queueing delay is the one that asks. It prints one `lab
//! controller` line per window (its queued %, the core's total queueing
//! delay from `QueueDelay`, its slots) and exits 0 iff its queued share
//! fell to at most `CTL_SUCCESS_PCT` % of the first window's while it held
//! slots. The test `cpu_time_sched_lab_controller_takes_slots_when_queued`
//! runs it beside start argument 2, a competitor that spins in the default
//! round-robin of the same core for `COMPETITOR_MS` without asking for
//! slots: both start queued about half the time; each slot the controller
//! takes is its alone, so its queued share falls (measured under
//! `--icount`: 49 % → 22 % with 8 slots).

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::time::Duration;

use libos_async::println;
use libos_async::rt::{self, Builder, Policy, RuntimeConfig, Task, Why};
use libos_async::sys::rdtsc;

// One executor: the policy alone decides the order.
libos_async::main!(main_async, RuntimeConfig::new().cores(1).stealing(false));

const LONG: usize = 4;
const LONG_CHUNKS: usize = 40;
const LONG_CHUNK_US: u64 = 200;
const SHORT: usize = 40;
const SHORT_US: u64 = 20;
const GAP_US: u64 = 300;
const SHORT_DEADLINE_US: u64 = 500;
/// `data` of short tasks under `ShortestFirst` and stride.
const SHORT_MARK: u64 = 10;

/// A user-defined policy: tasks whose data is `SHORT_MARK` first (FIFO
/// among them), then the others (FIFO).
#[derive(Default)]
struct ShortestFirst {
    short: VecDeque<Task>,
    other: VecDeque<Task>,
}

impl Policy for ShortestFirst {
    fn name(&self) -> &'static str {
        "short-first"
    }
    fn enqueue(&mut self, task: Task, _why: Why) {
        if task.data() == SHORT_MARK {
            self.short.push_back(task);
        } else {
            self.other.push_back(task);
        }
    }
    fn pick(&mut self) -> Option<Task> {
        self.short.pop_front().or_else(|| self.other.pop_front())
    }
    fn len(&self) -> usize {
        self.short.len() + self.other.len()
    }
}

/// Makes a fresh policy.
type MakePolicy = fn() -> Box<dyn Policy>;

fn busy(us: u64, hz: u64) {
    let until = rdtsc() + us * hz / 1_000_000;
    while rdtsc() < until {
        core::hint::spin_loop();
    }
}

struct Outcome {
    short_us: Vec<u64>,
    /// Every task's (service µs, µs from spawn to completion).
    stretch: Vec<(u64, u64)>,
    long_done_us: u64,
    total_us: u64,
    completed: usize,
}

async fn run_mix(policy: &str, hz: u64) -> Outcome {
    let t0 = rdtsc();
    let us = move |c: u64| c * 1_000_000 / hz;
    let longs: Vec<_> = (0..LONG)
        .map(|_| {
            Builder::new().data(1).spawn(async move {
                for _ in 0..LONG_CHUNKS {
                    busy(LONG_CHUNK_US, hz);
                    rt::yield_now().await;
                }
                rdtsc()
            })
        })
        .collect();
    let mut shorts = Vec::new();
    for _ in 0..SHORT {
        rt::sleep(Duration::from_micros(GAP_US)).await;
        let spawned = rdtsc();
        let data = match policy {
            "edf" => spawned + SHORT_DEADLINE_US * hz / 1_000_000,
            _ => SHORT_MARK,
        };
        shorts.push(Builder::new().data(data).spawn(async move {
            busy(SHORT_US, hz);
            rdtsc() - spawned
        }));
    }
    let mut out = Outcome {
        short_us: Vec::new(),
        stretch: Vec::new(),
        long_done_us: 0,
        total_us: 0,
        completed: 0,
    };
    for h in shorts {
        let lat = us(h.await);
        out.short_us.push(lat);
        out.stretch.push((SHORT_US, lat));
        out.completed += 1;
    }
    for h in longs {
        let done = us(h.await - t0);
        out.long_done_us = out.long_done_us.max(done);
        out.stretch.push((LONG_CHUNKS as u64 * LONG_CHUNK_US, done));
        out.completed += 1;
    }
    out.total_us = us(rdtsc() - t0);
    out
}

/// The `p`-per-mille value of `sorted` (nearest rank).
fn permille(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() * p).div_ceil(1000)).clamp(1, sorted.len()) - 1]
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    permille(sorted, p * 10)
}

/// Jain's fairness index of x_i = service_i / elapsed_i, in thousandths
/// ((sum x)^2 / (n sum x^2); 1000: all tasks slowed down alike). Integer
/// arithmetic (x in millionths) so that the figure is exact.
fn jain_permille(stretch: &[(u64, u64)]) -> u64 {
    let xs: Vec<u128> =
        stretch.iter().map(|&(s, e)| u128::from(s) * 1_000_000 / u128::from(e.max(1))).collect();
    let sum: u128 = xs.iter().sum();
    let sq: u128 = xs.iter().map(|x| x * x).sum();
    if sq == 0 {
        return 0;
    }
    (sum * sum * 1000 / (xs.len() as u128 * sq)) as u64
}

/// Controller window.
const CTL_WINDOW_MS: u64 = 40;
/// Windows the controller runs.
const CTL_WINDOWS: usize = 12;
/// Take a slot above this queued share of a window.
const CTL_HIGH_PCT: u64 = 30;
/// Give one back below this.
const CTL_LOW_PCT: u64 = 5;
/// Success: the last window's queued share is at most this % of the first's.
const CTL_SUCCESS_PCT: u64 = 85;
/// How long the competitor of start argument 2 spins.
const COMPETITOR_MS: u64 = 900;
/// The most slots the controller takes.
const CTL_MAX_SLOTS: u32 = 8;

/// The slot controller of start argument 1 (see the module documentation).
fn controller(hz: u64) -> i32 {
    use libos_async::cpu;
    let core = rt::current_core();
    let window = hz * CTL_WINDOW_MS / 1000;
    let mut owned: u32 = 0;
    let mut first = None;
    let mut last = 0;
    for round in 0..CTL_WINDOWS {
        let (q0, w0) = cpu::my_queue_delay();
        let c0 = cpu::queue_delay(core).unwrap_or(0);
        let t0 = rdtsc();
        // Runnable all the window: busy (preempted when others' slots come).
        while rdtsc() - t0 < window {
            core::hint::spin_loop();
        }
        let t = rdtsc() - t0;
        let (q1, w1) = cpu::my_queue_delay();
        let core_total = cpu::queue_delay(core).unwrap_or(0) - c0;
        let queued = (q1 - q0) * 100 / t.max(1);
        println!(
            "lab controller window={round} queued_pct={queued} waits={} core_queue_pct={} slots={owned}",
            w1 - w0,
            core_total * 100 / t.max(1),
        );
        first.get_or_insert(queued);
        last = queued;
        if queued > CTL_HIGH_PCT && owned < CTL_MAX_SLOTS {
            match cpu::alloc_slots(core, 1) {
                Ok(_) => owned += 1,
                Err(e) => println!("sched-lab: controller: no slot to take on core {core}: {e:?}"),
            }
        } else if queued < CTL_LOW_PCT && owned > 0 {
            let mine = libos_async::sys::core_schedule(core)
                .map(|s| {
                    let me = libos_async::env_id();
                    s.owner
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| u64::from(**o) == me)
                        .map(|(i, _)| i)
                        .next()
                })
                .unwrap_or(None);
            if let Some(i) = mine
                && cpu::free_slots(core, 1 << i).is_ok()
            {
                owned -= 1;
            }
        }
    }
    let first = first.unwrap_or(0);
    let ok = owned > 0 && last * 100 <= first * CTL_SUCCESS_PCT;
    println!("sched-lab: controller: queued {first}% -> {last}% of a window, {owned} slots held");
    if ok { 0 } else { 1 }
}

async fn main_async(arg: u64) -> i32 {
    let hz = libos_async::info().tsc_hz.max(1);
    if arg == 1 {
        return controller(hz);
    }
    if arg == 2 {
        // The controller's competitor: runnable all the time in the
        // default round-robin, never asking for slots.
        let t0 = rdtsc();
        while rdtsc() - t0 < hz * COMPETITOR_MS / 1000 {
            core::hint::spin_loop();
        }
        return 0;
    }
    let core = rt::current_core();
    let policies: [(&str, MakePolicy); 5] = [
        ("fifo", || Box::new(rt::Fifo::new())),
        ("lifo", || Box::new(rt::Lifo::new())),
        ("stride", || Box::new(rt::Stride::new())),
        ("edf", || Box::new(rt::Edf::new())),
        ("short-first", || Box::new(ShortestFirst::default())),
    ];
    let mut ok = true;
    for (name, make) in policies {
        if rt::set_policy(core, make()).is_err() {
            println!("CHECK FAILED: sched-lab: no executor on core {core}");
            return 1;
        }
        let mut o = run_mix(name, hz).await;
        o.short_us.sort_unstable();
        println!(
            "sched-lab: {:<11} short p50 {:>6} p99 {:>6} max {:>6} us, long tasks done at {:>6} us, {} tasks in {} us",
            name,
            percentile(&o.short_us, 50),
            percentile(&o.short_us, 99),
            o.short_us.last().copied().unwrap_or(0),
            o.long_done_us,
            o.completed,
            o.total_us,
        );
        println!(
            "lab workload=long-short policy={} tasks={} total_us={} throughput_per_s={} p50_us={} p99_us={} p999_us={} max_us={} long_done_us={} jain_permille={}",
            name,
            o.completed,
            o.total_us,
            o.completed as u64 * 1_000_000 / o.total_us.max(1),
            percentile(&o.short_us, 50),
            percentile(&o.short_us, 99),
            permille(&o.short_us, 999),
            o.short_us.last().copied().unwrap_or(0),
            o.long_done_us,
            jain_permille(&o.stretch),
        );
        ok &= o.completed == LONG + SHORT;
    }
    let m = rt::metrics(core);
    println!(
        "sched-lab: executor: {} polls, {} spawned, {} woken, {} yielded",
        m.polls, m.spawned, m.woken, m.yielded
    );
    println!("sched-lab: done");
    if ok { 0 } else { 1 }
}
