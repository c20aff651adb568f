//! In-kernel benchmarks, booted with `mode=bench` (`cargo xtask bench`).
//!
//! Each result is one line `bench {json}` with the name, the unit (TSC
//! cycles; under `-icount shift=0` these are guest instructions), the median,
//! the 99th percentile and the number of samples; `bench done` ends the run.
//!
//! * `ipi_roundtrip_0_to_N`: core 0 sends a bare IPI ([`BENCH_PING`]) to
//!   core N, whose handler answers with a bare IPI ([`BENCH_PONG`]); timed
//!   from before the send until core 0's pong handler has run.
//! * ring 3 (`benches/benchsys`): `syscall_null`, `fault_upcall_resume`,
//!   `map_unmap`, `frame_alloc_free`; see that application's docs.
//! * ring 3 (`benches/ringbench`): `ring_nop_batch_{1,8,64,256}` (cycles per
//!   operation), `syscall_null_for_ring`, `wakeup_notify_cross_core`.
//! * ring 3 (`benches/cpubench`): `pct_call_reply`, `yield_to_switch`,
//!   `acall_wakeup_cross_core`.
//! * ring 3, pairs and groups of environments (`benches/chanbench`,
//!   `apps/kv`): channel round trips; the throughput curves over cores
//!   `channel_throughput_K_producers` and `kv_op_K_clients`, K = 1..7.
//! * ring 3, throughput curves over cores (`ring_scaling`, `rt_scaling`):
//!   `ring_timer_notify_K_cores` (`benches/ringbench`: K vCPUs each
//!   submitting batches of due timers and notifications) and
//!   `rt_spawn_K_cores` (`benches/rtbench`: task spawn and join on K
//!   executor cores); cycles per operation of the whole machine.
//! * ring 3 (`benches/rtbench`): the async runtime's `rt_spawn_join_local`,
//!   `rt_spawn_join_cross_core`, `rt_wakeup_ring_completion`,
//!   `rt_wakeup_cross_core`, `rt_yield`.
//! * ring 3 on all cores (`benches/tlbbench`): TLB shootdown latency to 1..7
//!   cores for one page, a 64-page batch and a full flush.
//! * ring 3, isolation under multi-core attack (`benches/isobench`, issue 13;
//!   that application's docs say exactly what each times):
//!   - `acall_noflood_cost` / `acall_flood_cost`: one `Acall` on core 1 to
//!     a sink environment asleep on core 2, alone, then while a vCPU of the
//!     caller's environment on every other user core floods `Acall` at the
//!     same sink;
//!   - `frame_revoke_1` / `_1000` / `_60000`: the whole `FrameRevoke` (all
//!     restarted steps) of a frame another environment, on core 2, has
//!     mapped that many times (samples: `n` / 20 / 5);
//!   - `unmap_range_64_per_page` / `_4096_per_page` / `_65000_per_page`:
//!     the whole `UnmapRange` of that many populated pages divided by the
//!     page count (**cycles per page**; samples `n` / 20 / 5). 65,000 is
//!     the most an environment can map: 16 mappings per frame of its
//!     4096-frame quota (65,536), its own mappings included, so the
//!     issue's 262,144 cannot be reached;
//!   - `victim_longest_gap_control` / `_revoke_60000` /
//!     `_unmap_range_60000` / `_exit_60000`: one sample each, an honest
//!     vCPU's longest time off the CPU on [`GAP_CORE`] while `isohog`s
//!     there compute (the baseline), revoke a frame mapped 60,000 times,
//!     `UnmapRange` 2^20 pages with 60,000 populated, or exit with 60,000
//!     mappings.
//! * ring 3, memory repossession (`tests/revokee`, group `memrevoke`):
//!   `memrevoke_roundtrip_8`, request → the libOS pager gives 8 frames
//!   back → nothing owed (see [`run_memrevoke`]).
//! * `mailbox_roundtrip_0_to_N`: core 0 posts an echo request (a
//!   [`Message::Run`] of this module's `echo`) to core N's mailbox (queue
//!   push + IPI); N's handler posts the reply back the same way; timed until
//!   core 0 has handled the reply. The target: within 2x the
//!   bare IPI round trip.
//!
//! `benches=FRAGMENTS` on the command line (`cargo xtask bench --benches
//! FRAGMENTS`) runs only the groups whose names contain a fragment
//! (`-fragment` excludes; as `tests=`): `ipi_mailbox`, `benchsys`, `forkbench`,
//! `spawnbench`,
//! `ringbench`, `cpubench`, `rtbench`, `chanbench`, `kv`, `ring_scaling`,
//! `rt_scaling`,
//! `isobench_acall`, `isobench_revoke`, `isobench_unmap_range`,
//! `isobench_gap`, `memrevoke`, `tlbbench`.
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
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::cmdline::test_selected;
use kernel::stats::summarize;

/// Which benchmark groups run (the `benches=` filter; `None`: all).
#[derive(Clone, Copy)]
struct Selection<'a>(Option<&'a str>);

impl Selection<'_> {
    /// Whether group `name` runs.
    fn has(self, name: &str) -> bool {
        self.0.is_none_or(|f| test_selected(name, f))
    }

    /// Runs `bench` if group `name` is selected; whether it succeeded (or
    /// did not run).
    fn run(self, name: &str, bench: impl FnOnce() -> bool) -> bool {
        !self.has(name) || bench()
    }
}

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

/// Runs every benchmark (of the groups `filter` selects) with `n` samples
/// each, then powers off (failure if one did not run).
pub fn run_all(n: usize, all_cores: u64, filter: Option<&str>) -> ! {
    let sel = Selection(filter);
    log::info!("benchmarks: {n} samples each, TSC {} MHz", time::tsc_hz() / 1_000_000);
    let mut ok = sel.run("ipi_mailbox", || run_ipi_mailbox(n));
    ok &= run_ring3_benchmarks(n, sel);
    if !ok {
        super::cpu::exit_qemu(false);
    }
    if !sel.has("tlbbench") {
        super::ktrace::dump();
        kprintln!("bench done");
        super::cpu::exit_qemu(true);
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

/// `ipi_roundtrip_0_to_N` and `mailbox_roundtrip_0_to_N` for every other
/// core N; whether every round trip completed.
fn run_ipi_mailbox(n: usize) -> bool {
    let me = this_cpu();
    PING_FROM.store(me.apic_id, Ordering::Relaxed);
    trap::register(vectors::BENCH_PING, on_ping);
    trap::register(vectors::BENCH_PONG, on_pong);
    let pongs = &PONGS[me.index];
    let echo_replies = &ECHO_REPLIES[me.index];
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
    ok
}

/// The system-call, upcall, mapping and frame benchmarks run in ring 3 (the
/// `benchsys` application measures them itself and prints its own lines).
fn run_ring3_benchmarks(n: usize, sel: Selection) -> bool {
    sel.run("benchsys", || run_app("benchsys", n))
        && sel.run("forkbench", || run_app("forkbench", n))
        && sel.run("spawnbench", || run_app("spawnbench", n))
        && sel.run("ringbench", || run_app("ringbench", n))
        && sel.run("cpubench", || run_cpubench(n))
        && sel.run("rtbench", || run_app("rtbench", n))
        && run_channel_benchmarks(n, sel)
        && sel.run("ring_scaling", || run_scaling("ringbench"))
        && sel.run("rt_scaling", || run_scaling("rtbench"))
        && run_isobench(n, sel)
        && sel.run("memrevoke", || run_memrevoke(n))
}

/// `memrevoke_roundtrip_8`: the memory repossession round trip with a
/// compliant libOS pager (`tests/revokee`, mode 7, on core 1): from the
/// kernel's request (the test hook, deadline far away) until the pager has
/// given 8 frames back (8 zero pages of its region: unmapped and freed)
/// and nothing is owed. Core 0 spins on the debt meanwhile (a load), so
/// the figure includes the event's delivery: the pager's vCPU asleep on its
/// event queue is woken, scans, frees, and the `RepossessStatus` checks.
/// Between samples the pager refills its zero pages and publishes again.
fn run_memrevoke(n: usize) -> bool {
    use super::env::{self, repossess};
    const CONTROL: u64 = 0x0000_2000_0000_0000;
    const READY: u64 = 0x7265_6164;
    const GO_ON: u64 = 0x676f_6f6e;
    const FRAMES: u64 = 8;
    let word = |e: &super::env::Env, i: u64| {
        let mut w = [0u8; 8];
        env::copy_from_user_into(e, CONTROL + i * 8, &mut w).map(|()| u64::from_le_bytes(w))
    };
    let Some(envs) = spawn_all(&[("revokee", 7, 1)]) else { return false };
    let pager = &envs[0];
    let wait_word = |i: u64, want: u64| {
        let deadline = Deadline::after_ms(60_000);
        while word(pager, i) != Ok(want) {
            if deadline.passed() || pager.finished().is_some() {
                log::error!("revokee (bench) control word {i} never {want:#x}");
                return false;
            }
            time::halt_for_ms(1);
        }
        true
    };
    if !wait_word(0, READY) {
        return false;
    }
    let samples_wanted = n.min(200);
    let mut samples = Vec::with_capacity(samples_wanted);
    for round in 1..=samples_wanted as u64 {
        // The last demand's final step (the settled event) may still be
        // leaving the queue: `Busy` for a moment.
        let mut start = rdtsc();
        let mut tries = 0;
        while let Err(e) = repossess::request(pager, FRAMES, start + time::tsc_hz() * 10) {
            tries += 1;
            if e != abi::Error::Busy || tries > 1000 {
                log::error!("memrevoke request: {e:?}");
                return false;
            }
            pause();
            start = rdtsc();
        }
        let deadline = Deadline::after_ms(10_000);
        while pager.repossess.owed() != 0 {
            if deadline.passed() {
                log::error!("memrevoke: the pager did not give back in time");
                return false;
            }
            pause();
        }
        samples.push(rdtsc() - start);
        // Settled, refilled and published again before the next round.
        if !wait_word(2, round) {
            return false;
        }
    }
    report(&alloc::format!("memrevoke_roundtrip_{FRAMES}"), &mut samples);
    let _ = env::copy_to_user(pager, CONTROL + 8, &GO_ON.to_le_bytes());
    all_exit_0_halted(&envs)
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
/// (`benches/chanbench` + `benches/chanbench-peer`, `apps/kv` +
/// `apps/kv-client`): `channel_roundtrip_same_core` / `_cross_core`, and
/// the throughput curves `channel_throughput_K_producers` (cycles per
/// message at the consumer) and `kv_op_K_clients` (cycles per request at
/// the server), K = 1..7: the consumer or server on core 1, producer or
/// client i (1..=K) on core [`peer_core`]`(i)` (cores 2..7, the seventh
/// sharing core 2; `benches/registry.toml` records the cores in use). The
/// throughput runs wait halted between looks ([`all_exit_0_halted`]), so
/// that under `-icount` core 0 adds no instructions to the measured window.
fn run_channel_benchmarks(n: usize, sel: Selection) -> bool {
    let s = (n.min(2000) as u64) << 8;
    let peers = online_cpus().saturating_sub(1).min(7);
    sel.run("chanbench", || {
        run_group(&[("chanbench", 1 | s, 1), ("chanbench-peer", 1 | s, 1)])
            && run_group(&[("chanbench", 2 | s, 1), ("chanbench-peer", 2 | s, 2)])
            && (1..=peers).all(|k| {
                let mut apps = alloc::vec![("chanbench", 3 | s | (k as u64) << 32, 1)];
                apps.extend((1..=k).map(|i| ("chanbench-peer", 3 | s, peer_core(i))));
                spawn_all(&apps).is_some_and(|envs| all_exit_0_halted(&envs))
            })
    }) && sel.run("kv", || {
        (1..=peers).all(|k| {
            let mut apps = alloc::vec![("kv", k as u64 | 1 << 32, 1)];
            apps.extend((1..=k).map(|i| ("kv-client", 0, peer_core(i))));
            spawn_all(&apps).is_some_and(|envs| all_exit_0_halted(&envs))
        })
    })
}

/// The core of producer or client `i` (from 1) of the throughput curves:
/// cores 2.. in turn, wrapping around within the user cores other than the
/// consumer's core 1 (with 8 cores: 2..7, then 2 again).
fn peer_core(i: usize) -> usize {
    let others = online_cpus().saturating_sub(2).max(1);
    2 + (i - 1) % others
}

/// The ring and runtime throughput curves, one environment each started
/// on core 1 (their start argument's bit 32 selects the curve; see
/// `benches/ringbench` and `benches/rtbench`): `ring_timer_notify_K_cores`
/// and `rt_spawn_K_cores`. Waits halted, as [`run_channel_benchmarks`].
fn run_scaling(name: &str) -> bool {
    spawn_all(&[(name, 1 << 32, 1)]).is_some_and(|envs| all_exit_0_halted(&envs))
}

/// The core of the gap meter and its attackers.
const GAP_CORE: usize = 1;
/// `isobench`'s gap-meter progress counter (its `PROGRESS_VA`).
const ISOBENCH_PROGRESS_VA: u64 = 0x0000_2000_0000_0000;

/// Isolation under multi-core attack (`benches/isobench`, with `isohog`s as
/// the attackers of the gap meter), groups `isobench_acall`,
/// `isobench_revoke`, `isobench_unmap_range`, `isobench_gap`. The harness
/// halts between looks (as the in-kernel isolation tests do), so that
/// under `-icount` its core takes no turns from the measured ones.
fn run_isobench(n: usize, sel: Selection) -> bool {
    // Bits 8..32 of the start argument: the sample count.
    let s = (n.min(4096) as u64) << 8;
    let with_peer = |peer: &Arc<super::env::Env>, arg: u64| arg | u64::from(peer.id) << 32;
    sel.run("isobench_acall", || {
        with_partner(("isobench", 1, 2), |sink| ("isobench", with_peer(sink, s), 1))
    }) && sel.run("isobench_revoke", || {
        with_partner(("isobench", 3, 2), |grantee| ("isobench", with_peer(grantee, 2 | s), 1))
    }) && sel.run("isobench_unmap_range", || {
        spawn_all(&[("isobench", 4 | s, 1)]).is_some_and(|b| all_exit_0_halted(&b))
    }) && sel.run("isobench_gap", || {
        // Scenario k of `isobench`'s `GAPS`, with its `isohog` modes: only
        // computing; revoke (the grantee, mode 3, first: the owner, mode 2,
        // names it); huge `unmap_range`; exit with mappings.
        let hogs: [&[u64]; 4] = [&[0], &[3, 2], &[4], &[5]];
        hogs.iter().enumerate().all(|(k, modes)| victim_gap(k as u64, modes))
    })
}

/// One `victim_longest_gap_*` figure: the gap meter (`isobench` mode 5,
/// scenario `k`) on [`GAP_CORE`], then, once it measures, `isohog`s of
/// `modes` on the same core (a revoke owner, mode 2, gets the previous
/// hog's id as its grantee).
fn victim_gap(k: u64, modes: &[u64]) -> bool {
    let Some(victim) = spawn_all(&[("isobench", 5 | k << 8, GAP_CORE)]) else { return false };
    let deadline = Deadline::after_ms(600_000);
    loop {
        let mut word = [0u8; 8];
        let _ = super::env::copy_from_user_into(&victim[0], ISOBENCH_PROGRESS_VA, &mut word);
        if u64::from_le_bytes(word) != 0 {
            break;
        }
        if deadline.passed() || victim[0].finished().is_some() {
            log::error!("isobench gap meter {k} never started: {:?}", victim[0].finished());
            return false;
        }
        time::halt_for_ms(2);
    }
    let mut envs: Vec<Arc<super::env::Env>> = Vec::new();
    for &mode in modes {
        let arg = match (mode, envs.last()) {
            (2, Some(grantee)) => mode | u64::from(grantee.id) << 32,
            _ => mode,
        };
        match spawn_all(&[("isohog", arg, GAP_CORE)]) {
            Some(mut e) => envs.append(&mut e),
            None => return false,
        }
    }
    envs.extend(victim);
    all_exit_0_halted(&envs)
}

/// Starts `partner`, then the benchmark `bench` names given the partner,
/// and waits for both; whether both exited 0. A partner left waiting by a
/// failed benchmark is stopped.
fn with_partner(
    partner: (&str, u64, usize),
    bench: impl FnOnce(&Arc<super::env::Env>) -> (&'static str, u64, usize),
) -> bool {
    let Some(partner) = spawn_all(&[partner]) else { return false };
    let ok = spawn_all(&[bench(&partner[0])]).is_some_and(|b| all_exit_0_halted(&b));
    if !ok {
        let why = alloc::string::String::from("its benchmark failed");
        super::env::terminate(&partner[0], super::env::Outcome::Killed(why));
    }
    all_exit_0_halted(&partner) && ok
}

/// Starts every `(app, start_arg, core)`; `None` (logged) if one cannot be.
fn spawn_all(apps: &[(&str, u64, usize)]) -> Option<Vec<Arc<super::env::Env>>> {
    let mut envs = Vec::new();
    for &(name, arg, core) in apps {
        match super::sched::spawn(name, arg, Some(core)) {
            Ok(env) => envs.push(env),
            Err(e) => {
                log::error!("cannot start {name}: {e}");
                return None;
            }
        }
    }
    Some(envs)
}

/// Waits (10 minutes at most, halted between looks) for every environment;
/// whether all exited 0.
fn all_exit_0_halted(envs: &[Arc<super::env::Env>]) -> bool {
    let deadline = Deadline::after_ms(600_000);
    let mut ok = true;
    for env in envs {
        loop {
            if let Some(outcome) = env.finished() {
                if *outcome != super::env::Outcome::Exited(0) {
                    log::error!("{} ({:#x}): {outcome:?}", env.name, env.start_arg);
                    ok = false;
                }
                break;
            }
            if deadline.passed() {
                log::error!("{} did not finish", env.name);
                return false;
            }
            time::halt_for_ms(2);
        }
    }
    ok
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
