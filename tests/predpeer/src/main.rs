//! `predpeer`: `predtest`'s partner for its cross-environment part (c).
//!
//! Finds `predtest` (waiting up to 30 s for it to start), then, on a vCPU
//! on the highest usable core (the first vCPU itself if it is there),
//! sleeps on `notifications_ne(0)` until `predtest` says it is ready with a
//! ring `Notify`, waits 5 ms, and notifies `predtest` back through its own
//! ring. Exit 0 iff that all worked: `predpeer: notified predtest from
//! core N`.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos_async::check::{Checks, require};
use libos_async::predicate::Pred;
use libos_async::ring::Ring;
use libos_async::sys::{self, rdtsc};
use libos_async::{core_id, find_env, info, println, sqe, start_vcpu, usable_cores, wait_for_ms};

libos_async::entry!(app_main);

/// How long predtest may take to start and to get ready.
const WAIT_MS: u64 = 60_000;

fn ms(n: u64) -> u64 {
    info().tsc_hz / 1000 * n
}

/// Waits for predtest's "ready" and notifies it; returns failed checks.
fn notify_back(target: u64) -> u32 {
    let mut c = Checks::new();
    let mut ring = match Ring::new(8, 8) {
        Ok(r) => r,
        Err(e) => {
            c.check(false, format_args!("predpeer: Ring::new: {e:?}"));
            return c.failed();
        }
    };
    let r = Pred::notifications_ne(0).either(Pred::deadline(rdtsc() + ms(WAIT_MS))).sleep();
    let ready = sys::notifications();
    c.check(r == Ok(0) && ready > 0, format_args!("predpeer: predtest never said ready ({r:?})"));
    let at = rdtsc() + ms(5);
    while rdtsc() < at {
        let _ = sys::yield_now();
    }
    let pushed = ring.push(sqe::notify(target, 7)).is_ok();
    let r = ring.submit(0);
    c.check(pushed && r == Ok(1), format_args!("predpeer: submit {r:?}"));
    let done = wait_for_ms(WAIT_MS, || ring.ready() > 0);
    let cqe = ring.pop();
    c.check(
        done && cqe.is_some_and(|e| e.user_data == 7 && e.result == 0),
        format_args!("predpeer: notify completion {cqe:?}"),
    );
    println!("predpeer: notified predtest from core {}", core_id());
    c.failed()
}

/// 1 + failed checks of the vCPU on the highest core (0: running).
static RESULT: AtomicU64 = AtomicU64::new(0);

fn notifier(target: u64) -> ! {
    RESULT.store(1 + u64::from(notify_back(target)), SeqCst);
    sys::vcpu_exit()
}

fn app_main(_arg: u64) -> i32 {
    let target = require("find predtest", find_env("predtest", WAIT_MS));
    let hi = 63 - usable_cores().leading_zeros() as usize;
    if hi == core_id() {
        return i32::from(notify_back(target) != 0);
    }
    require("start_vcpu", start_vcpu(hi, notifier, target));
    let done = wait_for_ms(3 * WAIT_MS, || RESULT.load(SeqCst) != 0);
    i32::from(!done || RESULT.load(SeqCst) != 1)
}
