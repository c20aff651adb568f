//! `ringbench`: ring and wake-up benchmarks, `bench {...}` lines like
//! `benchsys` (`start_arg` samples, default 200, after a short warm-up).
//!
//! * `ring_nop_batch_B` (B = 1, 8, 64, 256): push B `Nop`s, one
//!   `RingEnter(B, 0)`, pop the B completions; the whole batch is timed
//!   and the sample is cycles per op (total / B).
//! * `syscall_null_for_ring`: 64 direct `Null` system calls timed as one
//!   batch, cycles per call: the baseline the ring's per-op cost competes
//!   with.
//! * `wakeup_notify_cross_core`: the first vCPU sleeps on
//!   `notifications_ne(seen)`; a vCPU of the same environment on another
//!   core waits until it is about to sleep (plus 1 ms, so that it really
//!   sleeps), reads the TSC and submits `Notify(self)` through its ring;
//!   the sample is the sleeper's TSC right after `SleepOn` returns minus
//!   that. TSCs of different cores are compared: fine where they are
//!   synchronized (QEMU, modern hardware).
//!
//! With [`SCALING`] set in the start argument it runs only the throughput
//! curve `ring_timer_notify_K_cores` (K = 1..7): K vCPUs of this
//! environment, one per core (the first vCPU and K - 1 started ones), each
//! runs [`SCALE_ROUNDS`] rounds of one `RingEnter` with a batch of 4
//! already-due `Timer`s and 4 `Notify`s of this environment (each bumps the
//! counter, posts a `NOTIFY` event and kicks the cores of the environment's
//! other vCPUs), checking every completion. A sample is the window from the
//! start signal to the last vCPU's last completion, divided by all the
//! operations of all K vCPUs: cycles per operation of the whole machine
//! (ops/s = TSC Hz / that; per core, divided by K). [`SCALE_REPS`] samples
//! per K. The first vCPU sleeps on a predicate once it is done, so it adds
//! no spinning to the window.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos_async::bench::report;
use libos_async::check::{fail, require};
use libos_async::predicate::Pred;
use libos_async::ring::Ring;
use libos_async::sys::{self, rdtsc};
use libos_async::{env_id, info, other_cores, println, spin_until, sqe, start_vcpu, wait_for_ms};

libos_async::entry!(app_main);

const MAX_SAMPLES: usize = 4096;
const WARMUP: usize = 16;
const BATCHES: [u32; 4] = [1, 8, 64, 256];
const NULL_BATCH: u64 = 64;
const WAIT_MS: u64 = 30_000;

fn ms(n: u64) -> u64 {
    info().tsc_hz / 1000 * n
}

fn nop_batches(ring: &mut Ring, n: usize, samples: &mut [u64; MAX_SAMPLES]) {
    for b in BATCHES {
        for i in 0..n + WARMUP {
            let start = rdtsc();
            for k in 0..b {
                if ring.push(sqe::nop(u64::from(k))).is_err() {
                    fail(format_args!("batch {b}: submission queue full"));
                }
            }
            let consumed = ring.submit(0);
            let mut popped = 0;
            while ring.pop().is_some() {
                popped += 1;
            }
            let cycles = rdtsc() - start;
            if consumed != Ok(u64::from(b)) || popped != b {
                fail(format_args!("batch {b}: consumed {consumed:?}, popped {popped}"));
            }
            if i >= WARMUP {
                samples[i - WARMUP] = cycles / u64::from(b);
            }
        }
        let name = match b {
            1 => "ring_nop_batch_1",
            8 => "ring_nop_batch_8",
            64 => "ring_nop_batch_64",
            _ => "ring_nop_batch_256",
        };
        report(name, &mut samples[..n]);
    }
    for i in 0..n + WARMUP {
        let start = rdtsc();
        for _ in 0..NULL_BATCH {
            let _ = sys::null();
        }
        let cycles = rdtsc() - start;
        if i >= WARMUP {
            samples[i - WARMUP] = cycles / NULL_BATCH;
        }
    }
    report("syscall_null_for_ring", &mut samples[..n]);
}

/// The round the sleeper is about to sleep in.
static READY: AtomicU64 = AtomicU64::new(0);
/// The last round the sleeper woke in.
static WOKE: AtomicU64 = AtomicU64::new(0);
/// Per round: the notifier's TSC just before `RingEnter`.
static SEND: [AtomicU64; MAX_SAMPLES + WARMUP + 1] =
    [const { AtomicU64::new(0) }; MAX_SAMPLES + WARMUP + 1];
/// Rounds the notifier should run.
static ROUNDS: AtomicU64 = AtomicU64::new(0);
/// Set by the notifier when it gives up or finishes (1 ok, 2 failed).
static NOTIFIER: AtomicU64 = AtomicU64::new(0);

fn notifier(env: u64) -> ! {
    let mut ring = match Ring::new(8, 8) {
        Ok(r) => r,
        Err(e) => {
            println!("CHECK FAILED: notifier: Ring::new: {e:?}");
            NOTIFIER.store(2, SeqCst);
            sys::vcpu_exit()
        }
    };
    let rounds = ROUNDS.load(SeqCst);
    let settle = ms(1);
    let mut status = 1;
    for round in 1..=rounds {
        if !spin_until(WAIT_MS, || READY.load(SeqCst) >= round) {
            println!("CHECK FAILED: notifier: sleeper never got to round {round}");
            status = 2;
            break;
        }
        let at = rdtsc() + settle;
        while rdtsc() < at {
            core::hint::spin_loop();
        }
        let pushed = ring.push(sqe::notify(env, round)).is_ok();
        let t = rdtsc();
        let r = ring.submit(0);
        SEND[round as usize].store(t, SeqCst);
        while ring.pop().is_some() {}
        if !pushed || r != Ok(1) {
            println!("CHECK FAILED: notifier: submit {r:?}");
            status = 2;
            break;
        }
        if !spin_until(WAIT_MS, || WOKE.load(SeqCst) >= round) {
            println!("CHECK FAILED: notifier: sleeper did not wake in round {round}");
            status = 2;
            break;
        }
    }
    NOTIFIER.store(status, SeqCst);
    sys::vcpu_exit()
}

fn wakeup(n: usize, samples: &mut [u64; MAX_SAMPLES]) {
    let Some(core) = other_cores().next() else {
        println!("ringbench: wakeup_notify_cross_core skipped (one core)");
        return;
    };
    let rounds = (n + WARMUP) as u64;
    ROUNDS.store(rounds, SeqCst);
    require("start_vcpu", start_vcpu(core, notifier, env_id()));
    let mut k = 0;
    let mut odd = 0;
    for round in 1..=rounds {
        let seen = sys::notifications();
        READY.store(round, SeqCst);
        let r = Pred::notifications_ne(seen).either(Pred::deadline(rdtsc() + ms(2_000))).sleep();
        let woke = rdtsc();
        WOKE.store(round, SeqCst);
        if r != Ok(0) || NOTIFIER.load(SeqCst) == 2 {
            fail(format_args!("wakeup round {round}: sleep {r:?}"));
        }
        // The send time is published after RingEnter returns, which may
        // be after the sleeper ran: wait for it.
        if !spin_until(WAIT_MS, || SEND[round as usize].load(SeqCst) != 0) {
            fail(format_args!("wakeup round {round}: no send time"));
        }
        let sent = SEND[round as usize].load(SeqCst);
        if woke < sent {
            odd += 1;
        } else if round as usize > WARMUP {
            samples[k] = woke - sent;
            k += 1;
        }
    }
    if !wait_for_ms(WAIT_MS, || NOTIFIER.load(SeqCst) != 0) || NOTIFIER.load(SeqCst) != 1 {
        fail(format_args!("notifier did not finish cleanly"));
    }
    if odd > 0 {
        println!("ringbench: {odd} wake-ups before the send time (not counted)");
    }
    report("wakeup_notify_cross_core", &mut samples[..k]);
}

/// Start-argument bit: run only the ring throughput curve.
const SCALING: u64 = 1 << 32;
/// Rounds (batches) per vCPU per sample of the throughput curve.
const SCALE_ROUNDS: u64 = 200;
/// Operations per round: 4 timers and 4 notifications.
const SCALE_BATCH: u64 = 8;
/// Samples per core count.
const SCALE_REPS: usize = 5;

/// Bumped to start a sample's workers.
static GO: AtomicU64 = AtomicU64::new(0);
/// Workers that have started and wait for [`GO`].
static WAITING: AtomicU64 = AtomicU64::new(0);
/// vCPUs done with the current sample (the first one included).
static FINISHED: AtomicU64 = AtomicU64::new(0);
/// The latest TSC at which a vCPU finished the current sample.
static LAST: AtomicU64 = AtomicU64::new(0);
/// Failed rounds (any wrong completion) so far.
static BAD: AtomicU64 = AtomicU64::new(0);

/// One vCPU's share of a sample: [`SCALE_ROUNDS`] batches through its own
/// ring (dropped before it returns, so the core's ring can be set up again).
fn ring_work() {
    let mut ring = match Ring::new(16, 16) {
        Ok(r) => r,
        Err(e) => {
            println!("CHECK FAILED: ring_work: Ring::new: {e:?}");
            BAD.fetch_add(1, SeqCst);
            return;
        }
    };
    let me = env_id();
    for _ in 0..SCALE_ROUNDS {
        let now = rdtsc();
        for k in 0..SCALE_BATCH / 2 {
            let a = ring.push(sqe::timer(now, k));
            let b = ring.push(sqe::notify(me, SCALE_BATCH + k));
            if a.is_err() || b.is_err() {
                BAD.fetch_add(1, SeqCst);
            }
        }
        let consumed = ring.submit(SCALE_BATCH as u32);
        let mut ok = 0;
        while let Some(c) = ring.pop() {
            ok += u64::from(libos_async::abi::decode(c.result) == Ok(0));
        }
        if consumed != Ok(SCALE_BATCH) || ok != SCALE_BATCH {
            BAD.fetch_add(1, SeqCst);
        }
    }
    drop(ring);
    LAST.fetch_max(rdtsc(), SeqCst);
    FINISHED.fetch_add(1, SeqCst);
}

/// A started vCPU of the throughput curve: waits for sample `arg`'s start
/// signal, works, exits.
fn scale_worker(arg: u64) -> ! {
    WAITING.fetch_add(1, SeqCst);
    while GO.load(SeqCst) < arg {
        core::hint::spin_loop();
    }
    ring_work();
    sys::vcpu_exit()
}

/// The throughput curve (see the module docs); whether every operation
/// completed as it should.
fn scaling() -> bool {
    let others: alloc::vec::Vec<usize> = other_cores().collect();
    let finished_va = &FINISHED as *const AtomicU64 as u64;
    let mut sample = 0u64;
    for k in 1..=others.len() as u64 + 1 {
        let mut samples = [0u64; SCALE_REPS];
        for slot in &mut samples {
            sample += 1;
            WAITING.store(0, SeqCst);
            FINISHED.store(0, SeqCst);
            LAST.store(0, SeqCst);
            for &core in &others[..k as usize - 1] {
                // The core's previous worker may not have left it yet.
                let started =
                    wait_for_ms(WAIT_MS, || start_vcpu(core, scale_worker, sample).is_ok());
                if !started {
                    println!("CHECK FAILED: cannot start a worker on core {core}");
                    return false;
                }
            }
            if !spin_until(WAIT_MS, || WAITING.load(SeqCst) == k - 1) {
                println!("CHECK FAILED: workers did not start");
                return false;
            }
            let t0 = rdtsc();
            GO.store(sample, SeqCst);
            ring_work();
            while FINISHED.load(SeqCst) < k {
                let deadline = Pred::deadline(rdtsc() + ms(WAIT_MS));
                let _ = Pred::word_eq(finished_va, k).either(deadline).sleep();
                if FINISHED.load(SeqCst) < k && rdtsc() > t0 + ms(4 * WAIT_MS) {
                    println!("CHECK FAILED: workers did not finish");
                    return false;
                }
            }
            *slot = (LAST.load(SeqCst) - t0) / (k * SCALE_ROUNDS * SCALE_BATCH);
        }
        report(&alloc::format!("ring_timer_notify_{k}_cores"), &mut samples);
    }
    let bad = BAD.load(SeqCst);
    if bad != 0 {
        println!("CHECK FAILED: {bad} rounds with a wrong completion");
    }
    bad == 0
}

fn app_main(arg: u64) -> i32 {
    if arg & SCALING != 0 {
        return i32::from(!scaling());
    }
    let n = if arg == 0 { 200 } else { (arg as usize).min(MAX_SAMPLES) };
    let mut samples = [0u64; MAX_SAMPLES];
    let mut ring = require("Ring::new(256, 256)", Ring::new(256, 256));
    nop_batches(&mut ring, n, &mut samples);
    wakeup(n, &mut samples);
    0
}
