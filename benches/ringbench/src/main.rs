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

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

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

fn app_main(arg: u64) -> i32 {
    let n = if arg == 0 { 200 } else { (arg as usize).min(MAX_SAMPLES) };
    let mut samples = [0u64; MAX_SAMPLES];
    let mut ring = require("Ring::new(256, 256)", Ring::new(256, 256));
    nop_batches(&mut ring, n, &mut samples);
    wakeup(n, &mut samples);
    0
}
