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
//! `sched-lab: done`.
//!
//! **Bursty open-loop arrivals** (start argument 0 runs these after the
//! long/short mix): requests arrive on a fixed schedule whatever the
//! server does (open loop), in bursts of [`BURST`] at once, at two offered
//! loads ([`BURSTY_LOADS`], per cent of the one core), one request in
//! [`BURSTY_BIG_EVERY`] [`BURSTY_BIG`] times the work of the others. A
//! request's latency is from its arrival to its completion; the schedule
//! comes from a fixed-seed generator, so `--icount` runs repeat exactly.
//! Result lines `lab workload=bursty-L policy=..` with the same keys
//! (`long_done_us`: the big requests' worst latency).
//!
//! `cargo xtask lab` collects the `lab` lines (under
//! `--icount` two boots must print the same). Exit 0 iff every task of
//! every run completed.
//!
//! **Start arguments 3–6** (tests): 3 runs the same on a small mix
//! ([`QUICK`]; `cargo xtask test` boots it twice under `--icount` and
//! compares the `lab` lines byte for byte); 4 [`user_policy_decides`]
//! (a second policy written here, [`MaxData`], orders `spawn_local`
//! tasks); 5 [`stride_shares`] (shares within 5 % of tickets, FIFO as the
//! control); 6 [`edf_deadlines`] (a feasible periodic set: EDF meets every
//! deadline, FIFO misses some). 5 and 6 measure time: `--icount` only.
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
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use libos_async::println;
use libos_async::rt::{self, Builder, Policy, RuntimeConfig, Task, Why};
use libos_async::sys::rdtsc;

// One executor: the policy alone decides the order.
libos_async::main!(main_async, RuntimeConfig::new().cores(1).stealing(false));

/// The long/short mix: how many tasks of each kind and how big.
#[derive(Clone, Copy)]
struct Mix {
    long: usize,
    long_chunks: usize,
    short: usize,
}

/// The lab's mix (start argument 0).
const FULL: Mix = Mix { long: 4, long_chunks: 40, short: 40 };
/// A small mix with the same shape (start argument 3): what
/// `cargo xtask test` boots twice to check that `--icount` runs print
/// identical results.
const QUICK: Mix = Mix { long: 2, long_chunks: 10, short: 10 };
const LONG_CHUNK_US: u64 = 200;
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

#[derive(Default)]
struct Outcome {
    short_us: Vec<u64>,
    /// Every task's (service µs, µs from spawn to completion).
    stretch: Vec<(u64, u64)>,
    long_done_us: u64,
    total_us: u64,
    completed: usize,
}

async fn run_mix(mix: Mix, policy: &str, hz: u64) -> Outcome {
    let t0 = rdtsc();
    let us = move |c: u64| c * 1_000_000 / hz;
    let long_chunks = mix.long_chunks;
    let longs: Vec<_> = (0..mix.long)
        .map(|_| {
            Builder::new().data(1).spawn(async move {
                for _ in 0..long_chunks {
                    busy(LONG_CHUNK_US, hz);
                    rt::yield_now().await;
                }
                rdtsc()
            })
        })
        .collect();
    let mut shorts = Vec::new();
    for _ in 0..mix.short {
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
    let mut out = Outcome::default();
    for h in shorts {
        let lat = us(h.await);
        out.short_us.push(lat);
        out.stretch.push((SHORT_US, lat));
        out.completed += 1;
    }
    for h in longs {
        let done = us(h.await - t0);
        out.long_done_us = out.long_done_us.max(done);
        out.stretch.push((long_chunks as u64 * LONG_CHUNK_US, done));
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

/// Events the [`MaxData`] policy saw (it lives inside the executor).
static MAXDATA_SPAWNED: AtomicU64 = AtomicU64::new(0);
static MAXDATA_RUNNING: AtomicU64 = AtomicU64::new(0);
static MAXDATA_STOPPED: AtomicU64 = AtomicU64::new(0);

/// A second user-defined policy, for start argument 4: the queued task
/// with the largest data first (ties FIFO); counts the events it is given.
#[derive(Default)]
struct MaxData {
    queue: Vec<Task>,
}

impl Policy for MaxData {
    fn name(&self) -> &'static str {
        "max-data"
    }
    fn enqueue(&mut self, task: Task, why: Why) {
        if why == Why::Spawned {
            MAXDATA_SPAWNED.fetch_add(1, Ordering::Relaxed);
        }
        self.queue.push(task);
    }
    fn pick(&mut self) -> Option<Task> {
        // The first of the largest (max_by_key keeps the last: reversed).
        let (i, _) = self.queue.iter().enumerate().rev().max_by_key(|(_, t)| t.data())?;
        Some(self.queue.remove(i))
    }
    fn len(&self) -> usize {
        self.queue.len()
    }
    fn wants_run_events(&self) -> bool {
        true
    }
    fn running(&mut self, _task: &Task, _now: u64) {
        MAXDATA_RUNNING.fetch_add(1, Ordering::Relaxed);
    }
    fn stopped(&mut self, _task: &Task, _cycles: u64, _how: rt::Stop) {
        MAXDATA_STOPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Start argument 4: a policy defined in this crate decides the order.
/// Eight local tasks spawned with their data a permutation of 1..=8 (none runs
/// before all are queued: the main task spawns them without yielding)
/// must run in decreasing data order, each one's two polls (it yields
/// once) back to back, since it stays the largest;
/// the policy must have seen every spawn and a `running`/`stopped` pair
/// per poll. Exit 0 iff all of that holds.
async fn user_policy_decides() -> i32 {
    let core = rt::current_core();
    if rt::set_policy(core, Box::new(MaxData::default())).is_err() {
        println!("CHECK FAILED: sched-lab: no executor on core {core}");
        return 1;
    }
    let name = rt::policy_name(core).unwrap_or("none");
    // Local tasks (`spawn_local`: the log is an `Rc<RefCell<..>>`, not
    // `Send`) go through the policy like any other.
    let log = Rc::new(RefCell::new(Vec::new()));
    let spawned0 = MAXDATA_SPAWNED.load(Ordering::Relaxed);
    let handles: Vec<_> = [3u64, 8, 1, 6, 2, 7, 5, 4]
        .into_iter()
        .map(|d| {
            let log = log.clone();
            Builder::new().data(d).spawn_local(async move {
                log.borrow_mut().push(d);
                rt::yield_now().await;
                log.borrow_mut().push(100 + d);
            })
        })
        .collect();
    for h in handles {
        h.await;
    }
    let got = log.borrow().clone();
    // The largest data first; a task that yields is still the largest,
    // so it runs again at once: 8, 108, 7, 107, ...
    let want: Vec<u64> = (1..=8).rev().flat_map(|d| [d, 100 + d]).collect();
    let spawned = MAXDATA_SPAWNED.load(Ordering::Relaxed) - spawned0;
    let (running, stopped) =
        (MAXDATA_RUNNING.load(Ordering::Relaxed), MAXDATA_STOPPED.load(Ordering::Relaxed));
    println!(
        "sched-lab: user policy {name}: order {got:?}, {spawned} spawns, {running} running, {stopped} stopped"
    );
    // Each task is polled twice (16 `running`/`stopped` pairs);
    // `block_on`'s main task goes through the policy too: this poll of it
    // has had its `running` and not yet its `stopped`.
    let ok = name == "max-data"
        && got == want
        && spawned == 8
        && running == stopped + 1
        && stopped >= 16;
    // Back to FIFO for whatever runs next.
    let _ = rt::set_policy(core, Box::new(rt::Fifo::new()));
    if ok {
        0
    } else {
        println!("CHECK FAILED: sched-lab: user policy: want order {want:?}");
        1
    }
}

/// Requests per burst of the bursty workload.
const BURST: u64 = 4;
/// Its offered loads, per cent of the core.
const BURSTY_LOADS: [u64; 2] = [40, 80];
/// Its requests per load.
const BURSTY_REQUESTS: u64 = 120;
/// A small request's work.
const BURSTY_US: u64 = 20;
/// One request in this many is big.
const BURSTY_BIG_EVERY: u64 = 6;
/// A big request's work, in small ones.
const BURSTY_BIG: u64 = 8;

/// The bursty open-loop workload at `load` % (see the module
/// documentation): small requests' latencies in `short_us`, big ones'
/// worst in `long_done_us`.
async fn run_bursty(load: u64, policy: &str, hz: u64) -> Outcome {
    let us = move |c: u64| c * 1_000_000 / hz;
    let mean_work = BURSTY_US * (BURSTY_BIG_EVERY - 1 + BURSTY_BIG) / BURSTY_BIG_EVERY;
    // A burst's requests all arrive at once; bursts are spaced so that the
    // offered work is `load` % of the time.
    let gap_us = BURST * mean_work * 100 / load.max(1);
    let t0 = rdtsc();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut handles = Vec::new();
    for i in 0..BURSTY_REQUESTS {
        if i % BURST == 0 {
            // Each gap drawn from [gap/2, 3 gap/2) (xorshift, fixed seed).
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let jitter = seed % gap_us.max(1);
            rt::sleep(Duration::from_micros(gap_us / 2 + jitter)).await;
        }
        let big = i % BURSTY_BIG_EVERY == BURSTY_BIG_EVERY - 1;
        let work = if big { BURSTY_US * BURSTY_BIG } else { BURSTY_US };
        let arrived = rdtsc();
        let data = match policy {
            "edf" => arrived + 10 * work * hz / 1_000_000,
            _ if big => 1,
            _ => SHORT_MARK,
        };
        let h = Builder::new().data(data).spawn(async move {
            busy(work, hz);
            rdtsc() - arrived
        });
        handles.push((big, work, h));
    }
    let mut out = Outcome::default();
    for (big, work, h) in handles {
        let lat = us(h.await);
        if big {
            out.long_done_us = out.long_done_us.max(lat);
        } else {
            out.short_us.push(lat);
        }
        out.stretch.push((work, lat));
        out.completed += 1;
    }
    out.total_us = us(rdtsc() - t0);
    out
}

/// Prints a run's human line and its `lab` result line.
fn report(workload: &str, policy: &str, o: &mut Outcome) {
    o.short_us.sort_unstable();
    println!(
        "sched-lab: {workload:<10} {:<11} short p50 {:>6} p99 {:>6} max {:>6} us, long tasks done at {:>6} us, {} tasks in {} us",
        policy,
        percentile(&o.short_us, 50),
        percentile(&o.short_us, 99),
        o.short_us.last().copied().unwrap_or(0),
        o.long_done_us,
        o.completed,
        o.total_us,
    );
    println!(
        "lab workload={workload} policy={} tasks={} total_us={} throughput_per_s={} p50_us={} p99_us={} p999_us={} max_us={} long_done_us={} jain_permille={}",
        policy,
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
}

/// Start argument 5's window.
const SHARE_WINDOW_MS: u64 = 40;
/// Its chunk of work per poll.
const SHARE_CHUNK_US: u64 = 20;
/// Tickets of its four always-runnable tasks.
const TICKETS: [u64; 4] = [1, 2, 3, 4];

/// Four always-runnable tasks (a chunk of work, then `yield_now`) for
/// `SHARE_WINDOW_MS` under `make`'s policy; each one's chunks done.
async fn share_run(make: MakePolicy, hz: u64) -> [u64; 4] {
    let core = rt::current_core();
    let _ = rt::set_policy(core, make());
    let end = rdtsc() + SHARE_WINDOW_MS * hz / 1000;
    let hs: Vec<_> = TICKETS
        .iter()
        .map(|&t| {
            Builder::new().data(t).spawn(async move {
                let mut chunks = 0u64;
                while rdtsc() < end {
                    busy(SHARE_CHUNK_US, hz);
                    chunks += 1;
                    rt::yield_now().await;
                }
                chunks
            })
        })
        .collect();
    let mut out = [0; 4];
    for (o, h) in out.iter_mut().zip(hs) {
        *o = h.await;
    }
    let _ = rt::set_policy(core, Box::new(rt::Fifo::new()));
    out
}

/// Each task's share of the chunks against its share of the tickets: the
/// largest relative error, in thousandths.
fn share_error_permille(chunks: &[u64; 4]) -> u64 {
    let total: u64 = chunks.iter().sum();
    let tickets: u64 = TICKETS.iter().sum();
    chunks
        .iter()
        .zip(TICKETS)
        .map(|(&c, t)| {
            // |c/total - t/tickets| / (t/tickets), in thousandths.
            let (got, want) = (c * tickets, t * total);
            got.abs_diff(want) * 1000 / want.max(1)
        })
        .max()
        .unwrap_or(u64::MAX)
}

/// Start argument 5: under stride, four always-runnable tasks with 1, 2,
/// 3 and 4 tickets get shares of the CPU (chunks of equal work done in a
/// window) within 5 % of their tickets' shares. The same tasks under FIFO
/// get equal shares, off by far more: the measurement tells the two apart.
async fn stride_shares(hz: u64) -> i32 {
    let stride = share_run(|| Box::new(rt::Stride::new()), hz).await;
    let fifo = share_run(|| Box::new(rt::Fifo::new()), hz).await;
    let (es, ef) = (share_error_permille(&stride), share_error_permille(&fifo));
    println!(
        "sched-lab: stride shares: tickets {TICKETS:?} chunks {stride:?} (worst error {es} permille); fifo chunks {fifo:?} ({ef} permille)"
    );
    if es <= 50 && ef > 50 && stride.iter().all(|&c| c > 0) {
        0
    } else {
        println!("CHECK FAILED: sched-lab: stride shares not within 5% of tickets (or fifo was)");
        1
    }
}

/// Start argument 6's task set: (period µs, chunks of `EDF_CHUNK_US`).
/// Utilization 400/1000 + 2 × 1000/5000 = 0.8.
const EDF_SET: [(u64, u64); 3] = [(1000, 8), (5000, 20), (5000, 20)];
const EDF_CHUNK_US: u64 = 50;
/// How long the set runs.
const EDF_RUN_US: u64 = 20_000;

/// Runs [`EDF_SET`] as periodic tasks under `make`'s policy for
/// `EDF_RUN_US`: (jobs, deadlines missed, the largest lateness in µs,
/// negative: the smallest slack). Each job is released by a timer,
/// sets its deadline (the next release) as its data, and does its chunks
/// with a `yield_now` between them (EDF's preemption points). The timer
/// budget is 1 so that a release is seen after at most one chunk.
async fn edf_run(make: MakePolicy, hz: u64) -> (u64, u64, i64) {
    let core = rt::current_core();
    let _ = rt::set_policy(core, make());
    let old = rt::budgets(core);
    rt::set_budgets(core, rt::Budgets { timers: 1, ring: old.ring });
    let tick = move |us: u64| us * hz / 1_000_000;
    let t0 = rdtsc() + tick(200);
    let hs: Vec<_> = EDF_SET
        .iter()
        .map(|&(period, chunks)| {
            rt::spawn(async move {
                let (mut jobs, mut missed, mut worst) = (0u64, 0u64, i64::MIN);
                let mut k = 0;
                loop {
                    let release = t0 + k * tick(period);
                    let deadline = release + tick(period);
                    if deadline > t0 + tick(EDF_RUN_US) {
                        break;
                    }
                    rt::set_task_data(deadline);
                    rt::sleep_until(rt::Instant(release)).await;
                    for _ in 0..chunks {
                        busy(EDF_CHUNK_US, hz);
                        rt::yield_now().await;
                    }
                    let done = rdtsc();
                    let late = done as i64 - deadline as i64;
                    worst = worst.max(late);
                    missed += u64::from(done > deadline);
                    jobs += 1;
                    k += 1;
                }
                (jobs, missed, worst)
            })
        })
        .collect();
    let (mut jobs, mut missed, mut worst) = (0, 0, i64::MIN);
    for h in hs {
        let (j, m, w) = h.await;
        jobs += j;
        missed += m;
        worst = worst.max(w);
    }
    rt::set_budgets(core, old);
    let _ = rt::set_policy(core, Box::new(rt::Fifo::new()));
    (jobs, missed, worst * 1_000_000 / hz as i64)
}

/// Start argument 6: EDF meets every deadline of a feasible periodic set
/// (utilization 0.8, [`EDF_SET`]); FIFO, on the same set, misses some
/// (so the set does test the policy). Exit 0 iff both hold.
async fn edf_deadlines(hz: u64) -> i32 {
    let (jobs, missed, worst) = edf_run(|| Box::new(rt::Edf::new()), hz).await;
    let (fjobs, fmissed, fworst) = edf_run(|| Box::new(rt::Fifo::new()), hz).await;
    println!(
        "sched-lab: edf: {jobs} jobs, {missed} deadlines missed, worst lateness {worst} us; fifo: {fjobs} jobs, {fmissed} missed, worst lateness {fworst} us"
    );
    let want_jobs: u64 = EDF_SET.iter().map(|&(p, _)| EDF_RUN_US / p).sum();
    if jobs == want_jobs && missed == 0 && fjobs == want_jobs && fmissed > 0 {
        0
    } else {
        println!(
            "CHECK FAILED: sched-lab: edf missed deadlines of a feasible set (or fifo met all; {want_jobs} jobs expected)"
        );
        1
    }
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
    let mix = match arg {
        0 => FULL,
        3 => QUICK,
        4 => return user_policy_decides().await,
        5 => return stride_shares(hz).await,
        6 => return edf_deadlines(hz).await,
        _ => {
            println!("sched-lab: unknown start argument {arg}");
            return 2;
        }
    };
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
        let mut o = run_mix(mix, name, hz).await;
        report("long-short", name, &mut o);
        ok &= o.completed == mix.long + mix.short;
    }
    // The bursty open-loop workload, with the full mix only (start
    // argument 3's determinism check keeps its five lines).
    if arg == 0 {
        for load in BURSTY_LOADS {
            let workload = alloc::format!("bursty-{load}");
            for (name, make) in policies {
                let _ = rt::set_policy(core, make());
                let mut o = run_bursty(load, name, hz).await;
                report(&workload, name, &mut o);
                ok &= o.completed == BURSTY_REQUESTS as usize;
            }
        }
        let _ = rt::set_policy(core, Box::new(rt::Fifo::new()));
    }
    let m = rt::metrics(core);
    println!(
        "sched-lab: executor: {} polls, {} spawned, {} woken, {} yielded",
        m.polls, m.spawned, m.woken, m.yielded
    );
    println!("sched-lab: done");
    if ok { 0 } else { 1 }
}
