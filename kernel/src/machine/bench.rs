//! In-kernel benchmarks, booted with `mode=bench` (`cargo xtask bench`).
//!
//! Each result is one line `bench {json}` with the name, the unit (TSC
//! cycles; under `-icount shift=0` these are guest instructions), the median,
//! the 99th percentile and the number of samples; `bench done` ends the run.
//!
//! * `ipi_roundtrip_0_to_N`: core 0 sends a bare IPI ([`BENCH_PING`]) to
//!   core N, whose handler answers with a bare IPI ([`BENCH_PONG`]); timed
//!   from before the send until core 0's pong handler has run.
//! * ring 3 (`apps/benchsys`): `syscall_null`, `fault_upcall_resume`,
//!   `map_unmap`, `frame_alloc_free`; see that application's docs.
//! * ring 3 (`apps/ringbench`): `ring_nop_batch_{1,8,64,256}` (cycles per
//!   operation), `syscall_null_for_ring`, `wakeup_notify_cross_core`.
//! * ring 3 (`apps/cpubench`): `pct_call_reply`, `yield_to_switch`,
//!   `acall_wakeup_cross_core`.
//! * ring 3, pairs and groups of environments (`apps/chanbench`,
//!   `apps/kv`): channel round trips, throughput, key-value operations.
//! * ring 3 (`apps/rtbench`): the async runtime's `rt_spawn_join_local`,
//!   `rt_spawn_join_cross_core`, `rt_wakeup_ring_completion`,
//!   `rt_wakeup_cross_core`, `rt_yield`.
//! * ring 3 on all cores (`apps/tlbbench`): TLB shootdown latency to 1..7
//!   cores for one page, a 64-page batch and a full flush.
//! * `mailbox_roundtrip_0_to_N`: core 0 posts an echo request (a
//!   [`Message::Run`] of this module's `echo`) to core N's mailbox (queue
//!   push + IPI); N's handler posts the reply back the same way; timed until
//!   core 0 has handled the reply. The target: within 2x the
//!   bare IPI round trip.
//!
//!
//! The benchmark's IPI handlers and counters are this module's own: it
//! registers the handlers of [`BENCH_PING`] and [`BENCH_PONG`] with
//! [`trap::register`] when it starts, and counts pongs and echo replies in
//! per-core statics.
//!
//! [`BENCH_PING`]: super::trap::vectors::BENCH_PING
//! [`BENCH_PONG`]: super::trap::vectors::BENCH_PONG

use super::console::kprintln;
use super::cpu::{pause, rdtsc};
use super::mailbox::{self, Message};
use super::percpu::{MAX_CPUS, cpu, online_cpus, this_cpu};
use super::time::Deadline;
use super::trap::{self, vectors};
use super::{apic, time};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::stats::summarize;

/// APIC id of the core that started the current ping benchmark.
static PING_FROM: AtomicU32 = AtomicU32::new(0);

/// Bare-IPI pongs received, per core (IPI round-trip benchmark).
static PONGS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Echo replies received, per core (mailbox round-trip benchmark).
static ECHO_REPLIES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Handler of [`vectors::BENCH_PING`]: answer with a pong.
fn on_ping() {
    apic::send_ipi(PING_FROM.load(Ordering::Relaxed), vectors::BENCH_PONG);
}

/// Handler of [`vectors::BENCH_PONG`].
fn on_pong() {
    PONGS[this_cpu().index].fetch_add(1, Ordering::Release);
}

/// Run by the target's mailbox handler: answers the echo request of core
/// `from` (from interrupt context: posting never waits for an ack).
fn echo(from: usize) {
    if let Err(e) = mailbox::post(from, Message::Run(echo_reply), None) {
        log::warn!("echo reply to core {from} failed: {e:?}");
    }
}

/// Run by the requester's mailbox handler: counts the reply.
fn echo_reply(_from: usize) {
    ECHO_REPLIES[this_cpu().index].fetch_add(1, Ordering::Release);
}

/// Waits (interrupts on) until `counter` passes `seen`; `None` on timeout.
fn wait_past(counter: &AtomicU64, seen: u64) -> Option<()> {
    let deadline = Deadline::after_ms(5000);
    while counter.load(Ordering::Acquire) <= seen {
        if deadline.passed() {
            return None;
        }
        pause();
    }
    Some(())
}

fn report(name: &str, samples: &mut [u64]) {
    if let Some(s) = summarize(samples) {
        kprintln!(
            "bench {{\"name\":\"{name}\",\"unit\":\"cycles\",\"median\":{},\"p99\":{},\"samples\":{}}}",
            s.median,
            s.p99,
            s.samples
        );
    }
}

/// Runs every benchmark with `n` samples each, then powers off (failure if
/// one did not run).
pub fn run_all(n: usize, all_cores: u64) -> ! {
    let me = this_cpu();
    PING_FROM.store(me.apic_id, Ordering::Relaxed);
    trap::register(vectors::BENCH_PING, on_ping);
    trap::register(vectors::BENCH_PONG, on_pong);
    let pongs = &PONGS[me.index];
    let echo_replies = &ECHO_REPLIES[me.index];
    log::info!("benchmarks: {n} samples each, TSC {} MHz", time::tsc_hz() / 1_000_000);
    let mut ok = true;
    let warmup = 16;
    for target in 1..online_cpus() {
        let Some(dest) = cpu(target) else { continue };

        let mut samples = Vec::with_capacity(n);
        for i in 0..n + warmup {
            let seen = pongs.load(Ordering::Acquire);
            let start = rdtsc();
            apic::send_ipi(dest.apic_id, vectors::BENCH_PING);
            if wait_past(pongs, seen).is_none() {
                log::error!("ipi round trip to core {target}: no pong");
                ok = false;
                break;
            }
            if i >= warmup {
                samples.push(rdtsc() - start);
            }
        }
        report(&alloc::format!("ipi_roundtrip_0_to_{target}"), &mut samples);

        let mut samples = Vec::with_capacity(n);
        for i in 0..n + warmup {
            let seen = echo_replies.load(Ordering::Acquire);
            let start = rdtsc();
            if mailbox::post(target, Message::Run(echo), None).is_err()
                || wait_past(echo_replies, seen).is_none()
            {
                log::error!("mailbox round trip to core {target}: no reply");
                ok = false;
                break;
            }
            if i >= warmup {
                samples.push(rdtsc() - start);
            }
        }
        report(&alloc::format!("mailbox_roundtrip_0_to_{target}"), &mut samples);
    }
    ok &= run_ring3_benchmarks(n);
    if !ok {
        super::cpu::exit_qemu(false);
    }
    // The shootdown benchmarks want every core, so core 0 stops being the
    // harness and joins the others; the last environment to end powers off.
    super::env::set_user_cores(all_cores);
    super::env::power_off_when_all_done("bench done");
    if let Err(e) = super::sched::spawn("tlbbench", (n / 5).max(20) as u64, Some(0)) {
        log::error!("cannot start tlbbench: {e}");
        super::cpu::exit_qemu(false);
    }
    super::sched::idle_loop()
}

/// The system-call, upcall, mapping and frame benchmarks run in ring 3 (the
/// `benchsys` application measures them itself and prints its own lines).
fn run_ring3_benchmarks(n: usize) -> bool {
    run_app("benchsys", n)
        && run_app("ringbench", n)
        && run_cpubench(n)
        && run_app("rtbench", n)
        && run_channel_benchmarks(n)
}

/// `cpubench` on core 1 with its partners: an echo `pctserver` (on core 2;
/// the calls run on core 1) and a `yielder` target on core 1.
fn run_cpubench(n: usize) -> bool {
    let partners = super::sched::spawn("pctserver", 0, Some(2))
        .and_then(|server| super::sched::spawn("yielder", 0, Some(1)).map(|y| (server, y)));
    let (server, yielder) = match partners {
        Ok(p) => p,
        Err(e) => {
            log::error!("cannot start cpubench's partners: {e}");
            return false;
        }
    };
    let arg = n as u64 | u64::from(server.id) << 32 | u64::from(yielder.id) << 48;
    let ok = run_env("cpubench", arg, Some(1));
    ok && [server, yielder].iter().all(|e| wait_env(e) == Some(super::env::Outcome::Exited(0)))
}

/// Channel benchmarks between environments placed on chosen cores
/// (`apps/chanbench` + `apps/chanbench-peer`, `apps/kv` + `apps/kv-client`):
/// `channel_roundtrip_same_core` / `_cross_core`,
/// `channel_throughput_1_producer` / `_7_producers` (cycles per message),
/// `kv_op_7_clients` (cycles per request at the server).
fn run_channel_benchmarks(n: usize) -> bool {
    let s = (n.min(2000) as u64) << 8;
    let mut seven = alloc::vec![("chanbench", 4 | s, 1)];
    let mut kv = alloc::vec![("kv", 7 | 1 << 32, 1)];
    for core in 1..=7 {
        seven.push(("chanbench-peer", 4 | s, core));
        kv.push(("kv-client", 0, core));
    }
    run_group(&[("chanbench", 1 | s, 1), ("chanbench-peer", 1 | s, 1)])
        && run_group(&[("chanbench", 2 | s, 1), ("chanbench-peer", 2 | s, 2)])
        && run_group(&[("chanbench", 3 | s, 1), ("chanbench-peer", 3 | s, 2)])
        && run_group(&seven)
        && run_group(&kv)
}

/// Starts every `(app, start_arg, core)` and waits for all; whether every
/// one exited 0.
fn run_group(apps: &[(&str, u64, usize)]) -> bool {
    let mut envs = Vec::new();
    for &(name, arg, core) in apps {
        match super::sched::spawn(name, arg, Some(core)) {
            Ok(env) => envs.push(env),
            Err(e) => {
                log::error!("cannot start {name}: {e}");
                return false;
            }
        }
    }
    let deadline = Deadline::after_ms(600_000);
    let mut ok = true;
    for env in &envs {
        loop {
            if let Some(outcome) = env.finished() {
                ok &= *outcome == super::env::Outcome::Exited(0);
                break;
            }
            if deadline.passed() {
                log::error!("{} did not finish", env.name);
                return false;
            }
            pause();
        }
    }
    ok
}

/// Runs one benchmark application to its end; whether it exited 0.
fn run_app(name: &str, n: usize) -> bool {
    run_env(name, n as u64, None)
}

fn run_env(name: &str, arg: u64, core: Option<usize>) -> bool {
    match super::sched::spawn(name, arg, core) {
        Ok(env) => wait_env(&env) == Some(super::env::Outcome::Exited(0)),
        Err(e) => {
            log::error!("cannot start {name}: {e}");
            false
        }
    }
}

/// Waits (10 minutes at most) for `env` to end; its outcome.
fn wait_env(env: &super::env::Env) -> Option<super::env::Outcome> {
    let deadline = Deadline::after_ms(600_000);
    loop {
        if let Some(outcome) = env.finished() {
            return Some(outcome.clone());
        }
        if deadline.passed() {
            log::error!("{} did not finish", env.name);
            return None;
        }
        pause();
    }
}
