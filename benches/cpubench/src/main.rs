//! `cpubench`: benchmarks of the CPU resource, `bench {...}` lines like
//! `benchsys`. Start argument: bits 0..32 the sample count (default 200),
//! bits 32..48 an echo `pctserver`, bits 48..64 a `yielder` target on this
//! core (the kernel's bench harness starts both).
//!
//! * `pct_call_reply`: one protected control transfer with an 8-word
//!   message into the echo server and its reply, on this core (the
//!   server's code runs in its own address space on our time).
//! * `yield_to_switch`: half of a directed-yield round trip with the
//!   `yielder` target (we `YieldTo` it, it `YieldTo`s us back): the cost
//!   of handing the core to another environment, the kernel's slot-switch
//!   path without the timer interrupt.
//! * `acall_wakeup_cross_core`: a vCPU of ours on another core sleeps on
//!   `event_tail`; we post an `Acall` to ourselves carrying the TSC; the
//!   sample is the sleeper's TSC after `SleepOn` returns minus that.
//!
//! Ends the echo server with its `QUIT` message.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos_async::bench::report;
use libos_async::check::{fail, require};
use libos_async::cpu::{self, Events, Received};
use libos_async::predicate::Pred;
use libos_async::sys::{self, rdtsc};
use libos_async::{env_id, info, other_cores, println, spin_until, start_vcpu, wait_for_ms};

libos_async::entry!(app_main);

const MAX_SAMPLES: usize = 4096;
const WARMUP: usize = 16;
const WAIT_MS: u64 = 30_000;

fn pct(server: u64, samples: &mut [u64]) {
    let me = env_id();
    // The server may not have registered its entry yet.
    wait_for_ms(WAIT_MS, || cpu::call(server, &[0; 8]) != Err(libos_async::abi::Error::Refused));
    for i in 0..samples.len() + WARMUP {
        let msg = [i as u64; 8];
        let t0 = rdtsc();
        let reply = cpu::call(server, &msg);
        let t1 = rdtsc();
        if reply != Ok(pct_proto::pct_reply(&msg, me)) {
            fail(format_args!("pct_call_reply: call {i}: {reply:?}"));
        }
        if i >= WARMUP {
            samples[i - WARMUP] = t1 - t0;
        }
    }
    report("pct_call_reply", samples);
    let mut quit = [0; 8];
    quit[0] = pct_proto::QUIT;
    require("quit the echo server", cpu::call(server, &quit));
}

fn yield_switch(target: u64, samples: &mut [u64]) {
    require("acall the yielder", cpu::acall(target, env_id(), 0));
    let mut k = 0;
    for _ in 0..samples.len() + WARMUP {
        let t0 = rdtsc();
        if cpu::yield_to(target).is_err() {
            break; // the target ran its rounds and ended
        }
        let t1 = rdtsc();
        if k < samples.len() {
            samples[k] = (t1 - t0) / 2;
            k += 1;
        }
    }
    // Let the target finish its rounds.
    while cpu::yield_to(target).is_ok() {}
    let skip = WARMUP.min(k);
    report("yield_to_switch", &mut samples[skip..k]);
}

static READY: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU64 = AtomicU64::new(0);

fn sender(rounds: u64) -> ! {
    let settle = info().tsc_hz / 1000;
    for round in 1..=rounds {
        if !spin_until(WAIT_MS, || READY.load(SeqCst) >= round) {
            DONE.store(2, SeqCst);
            sys::vcpu_exit();
        }
        let at = rdtsc() + settle;
        while rdtsc() < at {
            core::hint::spin_loop();
        }
        if cpu::acall(env_id(), round, rdtsc()).is_err() {
            DONE.store(2, SeqCst);
            sys::vcpu_exit();
        }
    }
    DONE.store(1, SeqCst);
    sys::vcpu_exit()
}

fn acall_wakeup(samples: &mut [u64]) {
    let Some(core) = other_cores().next() else {
        println!("cpubench: acall_wakeup_cross_core skipped (one core)");
        return;
    };
    let rounds = (samples.len() + WARMUP) as u64;
    require("start_vcpu", start_vcpu(core, sender, rounds));
    let mut events = Events::from_now();
    let mut k = 0;
    for round in 1..=rounds {
        let seen = sys::event_tail();
        READY.store(round, SeqCst);
        let slept =
            Pred::events_ne(seen).either(Pred::deadline(rdtsc() + info().tsc_hz * 2)).sleep();
        let woke = rdtsc();
        if slept != Ok(0) || DONE.load(SeqCst) == 2 {
            fail(format_args!("acall round {round}: sleep {slept:?}"));
        }
        let sent = loop {
            match events.next() {
                Some(Received::Event(e)) if e.data[0] == round => break e.data[1],
                Some(_) => {}
                None => fail(format_args!("acall round {round}: woke without the event")),
            }
        };
        if round as usize > WARMUP && woke >= sent {
            samples[k] = woke - sent;
            k += 1;
        }
    }
    if !wait_for_ms(WAIT_MS, || DONE.load(SeqCst) != 0) || DONE.load(SeqCst) != 1 {
        fail(format_args!("the acall sender did not finish cleanly"));
    }
    report("acall_wakeup_cross_core", &mut samples[..k]);
}

fn app_main(arg: u64) -> i32 {
    let n = match arg & 0xffff_ffff {
        0 => 200,
        n => (n as usize).min(MAX_SAMPLES),
    };
    let server = (arg >> 32) & 0xffff;
    let yielder = arg >> 48;
    let mut samples = [0u64; MAX_SAMPLES];
    pct(server, &mut samples[..n]);
    yield_switch(yielder, &mut samples[..n.min(900)]);
    acall_wakeup(&mut samples[..n]);
    0
}
