//! In-kernel tests of the CPU resource: time slots, the abort protocol,
//! directed yield, protected control transfer and asynchronous calls.
//!
//! The slot tests run CPU-bound `cpuhog` environments that hold slots on one
//! core and stay out of its default round-robin, and measure over a window
//! while all of them run: the slots each one started, the CPU time the
//! kernel accounted to it (`VcpuPage::run_tsc`) and the work it got done
//! (turns of its loop, a word in its memory). Shares are compared per slot
//! owned. The slot counts must match within [`SLOT_TOLERANCE_PCT`] (they
//! are the scheduler's decisions) and the work within [`TOLERANCE_PCT`].
//! The accounted TSC time is printed, not judged.
//!
//! The tests named `cpu_time_*` need exact guest time: `cargo xtask test`
//! runs them in a boot of their own under `-icount shift=0` (guest time is
//! instructions) and leaves them out of the plain TCG boots, where a vCPU
//! thread the overcommitted host deschedules loses work while the TSC runs
//! on. With hardware KVM they run in the one boot.

use super::{TestResult, check, frames_restored, wait};
use crate::machine::env::{self, Env, Outcome};
use crate::machine::percpu::{cpu, online_cpus};
use crate::machine::sched;
use crate::machine::slots;
use crate::machine::time::{self, Deadline};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem::offset_of;
use core::sync::atomic::Ordering;

/// Allowed deviation of a measured share of work from the expected one,
/// percent.
const TOLERANCE_PCT: u64 = 10;
/// Allowed deviation of the slots started from the expected share, percent.
const SLOT_TOLERANCE_PCT: u64 = 10;
/// Where `cpuhog` counts the turns of its loop (its `WORK_VA`).
const HOG_WORK_VA: u64 = 0x0000_2000_0000_0000;
/// Measuring window.
const WINDOW_MS: u64 = 400;
/// How long each `cpuhog` runs (covers start-up, the window and slack).
const HOG_MS: u64 = 1200;

fn spawn_on(name: &str, arg: u64, core: usize) -> Result<Arc<Env>, String> {
    sched::spawn(name, arg, Some(core)).map_err(|e| format!("cannot start {name}: {e}"))
}

fn hog_arg(mode: u64, slots: u64) -> u64 {
    mode | slots << 8 | HOG_MS << 16
}

/// A word of `env`'s vCPU page for `core`.
fn vcpu_stat(env: &Env, core: usize, offset: usize) -> u64 {
    env::vcpu_word(env, core, offset as u64).map_or(0, |w| w.load(Ordering::Relaxed))
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    run: u64,
    slots: u64,
    overruns: u64,
    work: u64,
}

fn sample(env: &Env, core: usize) -> Sample {
    let mut work = [0u8; 8];
    let _ = env::copy_from_user_into(env, HOG_WORK_VA, &mut work);
    Sample {
        run: vcpu_stat(env, core, offset_of!(abi::VcpuPage, run_tsc)),
        slots: vcpu_stat(env, core, offset_of!(abi::VcpuPage, slots_started)),
        overruns: vcpu_stat(env, core, offset_of!(abi::VcpuPage, overruns)),
        work: u64::from_le_bytes(work),
    }
}

/// Starts one `cpuhog` per `(mode, slots)` on `core`, waits until each
/// holds its slots and left the default round-robin, and returns the
/// environments with the CPU time each got during the window.
fn run_hogs(core: usize, hogs: &[(u64, u64)]) -> Result<(Vec<Arc<Env>>, Vec<Sample>), String> {
    if online_cpus() <= core {
        return Err(format!("needs core {core}, {} online", online_cpus()));
    }
    let envs = hogs
        .iter()
        .map(|&(mode, n)| spawn_on("cpuhog", hog_arg(mode, n), core))
        .collect::<Result<Vec<_>, _>>()?;
    let settled = Deadline::after_ms(super::ENV_TIMEOUT_MS);
    let ready = |e: &Arc<Env>, n: u64| {
        slots::owned_by(core, e.id).count_ones() as u64 == n
            && e.default_time.load(Ordering::Acquire) & (1 << core) == 0
            && sample(e, core).work > 0
    };
    while !envs.iter().zip(hogs).all(|(e, &(_, n))| ready(e, n)) {
        if settled.passed() || envs.iter().any(|e| e.is_dying()) {
            return Err(String::from("the hogs did not all take their slots"));
        }
        core::hint::spin_loop();
    }
    let before: Vec<Sample> = envs.iter().map(|e| sample(e, core)).collect();
    time::halt_for_ms(WINDOW_MS);
    let after: Vec<Sample> = envs.iter().map(|e| sample(e, core)).collect();
    let delta = before
        .iter()
        .zip(&after)
        .map(|(b, a)| Sample {
            run: a.run - b.run,
            slots: a.slots - b.slots,
            overruns: a.overruns - b.overruns,
            work: a.work - b.work,
        })
        .collect();
    Ok((envs, delta))
}

fn wait_all(envs: &[Arc<Env>], expect: &[Outcome]) -> TestResult {
    for (e, want) in envs.iter().zip(expect) {
        let got = wait(e)?;
        check(got == *want, || format!("cpuhog {}: {got:?}, expected {want:?}", e.id))?;
    }
    Ok(())
}

/// Each value per slot owned, as a percentage of their mean.
fn per_slot(hogs: &[(u64, u64)], values: impl Iterator<Item = u64>) -> Vec<u64> {
    let per: Vec<u64> = hogs.iter().zip(values).map(|(&(_, n), v)| v / n).collect();
    let mean = per.iter().sum::<u64>() / per.len() as u64;
    per.iter().map(|&p| p * 100 / mean.max(1)).collect()
}

/// Each hog's slots started and work done, per slot owned, are within the
/// tolerances of the mean.
fn shares_follow_slots(hogs: &[(u64, u64)], delta: &[Sample]) -> TestResult {
    let slots = per_slot(hogs, delta.iter().map(|d| d.slots));
    let work = per_slot(hogs, delta.iter().map(|d| d.work));
    let tsc = per_slot(hogs, delta.iter().map(|d| d.run));
    crate::machine::console::kprintln!(
        "  slots {:?}, per slot owned in % of the mean: slots started {slots:?}, work {work:?}, accounted TSC {tsc:?}",
        hogs.iter().map(|h| h.1).collect::<Vec<_>>()
    );
    check(slots.iter().all(|&p| p.abs_diff(100) <= SLOT_TOLERANCE_PCT), || {
        format!("slots started per slot owned {slots:?} % of the mean ({delta:?})")
    })?;
    check(work.iter().all(|&p| p.abs_diff(100) <= TOLERANCE_PCT), || {
        format!("work per slot owned {work:?} % of the mean ({delta:?})")
    })
}

/// Two hogs with 3 slots each on one core (default round-robin off): each
/// is runnable all the time, so whatever part of the window it did not run
/// it waited in the ready queue — its `VcpuPage::queue_tsc` grows by the
/// window less its run time — and the core's queueing delay
/// (`Syscall::QueueDelay`) grows by the sum of theirs (nothing else runs
/// there). Boundary waits are charged when they end, hence the tolerance.
pub fn queue_delay_is_runnable_time_not_run() -> TestResult {
    let core = 3;
    frames_restored(|| {
        let queue = |e: &Env| {
            (
                vcpu_stat(e, core, offset_of!(abi::VcpuPage, queue_tsc)),
                vcpu_stat(e, core, offset_of!(abi::VcpuPage, queue_waits)),
            )
        };
        let envs = [("cpuhog", hog_arg(0, 3)), ("cpuhog", hog_arg(0, 3))]
            .iter()
            .map(|&(n, a)| spawn_on(n, a, core))
            .collect::<Result<Vec<_>, _>>()?;
        hogs_hold_three_slots(&envs, core)?;
        let t0 = crate::machine::cpu::rdtsc();
        let core0 = sched::queue_delay(core);
        let before: Vec<_> = envs.iter().map(|e| (queue(e), sample(e, core).run)).collect();
        time::halt_for_ms(WINDOW_MS);
        let after: Vec<_> = envs.iter().map(|e| (queue(e), sample(e, core).run)).collect();
        let core_delta = sched::queue_delay(core) - core0;
        let window = crate::machine::cpu::rdtsc() - t0;
        let mut sum = 0;
        let mut report = Vec::new();
        for (((q0, w0), r0), ((q1, w1), r1)) in before.iter().zip(&after) {
            let (dq, dw, dr) = (q1 - q0, w1 - w0, r1 - r0);
            sum += dq;
            report.push((dq * 100 / window, dr * 100 / window, dw));
        }
        crate::machine::console::kprintln!(
            "  per hog (queued % of window, run % of window, waits ended): {report:?}; core total {} % of window",
            core_delta * 100 / window
        );
        let waits_ok = report.iter().all(|&(_, _, w)| w >= 3);
        let each_ok = report.iter().all(|&(q, r, _)| (q + r).abs_diff(100) <= 15);
        let core_ok = core_delta.abs_diff(sum) * 100 <= window * 15;
        let outcome = wait_all(&envs, &[Outcome::Exited(0), Outcome::Exited(0)]);
        check(waits_ok, || format!("too few waits ended: {report:?}"))?;
        check(each_ok, || format!("queued + run is not the window: {report:?}"))?;
        check(core_ok, || format!("core total {core_delta} vs hogs' sum {sum}"))?;
        outcome
    })
}

/// `sched-lab`'s slot controller (start argument 1) beside its competitor
/// (start argument 2, spinning in the default round-robin of core 3): it
/// starts queued about half the time, takes free slots while its queueing
/// delay is high, and must end queued markedly less while holding slots
/// (it exits 0 only then); it holds slots on that core while it runs.
pub fn slot_controller_takes_slots_when_queued() -> TestResult {
    let core = 3;
    frames_restored(|| {
        let rival = spawn_on("sched-lab", 2, core)?;
        let settled = Deadline::after_ms(super::ENV_TIMEOUT_MS);
        while vcpu_stat(&rival, core, offset_of!(abi::VcpuPage, run_tsc)) == 0 {
            if settled.passed() || rival.is_dying() {
                return Err(String::from("the competitor did not run"));
            }
            core::hint::spin_loop();
        }
        let lab = spawn_on("sched-lab", 1, core)?;
        let mut held = 0;
        while lab.finished().is_none() && !settled.passed() {
            held = held.max(slots::owned_by(core, lab.id).count_ones());
            time::halt_for_ms(5);
        }
        let got = wait(&lab)?;
        wait_all(&[rival], &[Outcome::Exited(0)])?;
        check(got == Outcome::Exited(0), || format!("sched-lab controller: {got:?}"))?;
        check(held > 0, || String::from("the controller never held a slot"))
    })
}

/// k environments with equal slots on one core get equal CPU time.
pub fn equal_slots_equal_share() -> TestResult {
    let hogs = [(0, 3), (0, 3), (0, 3)];
    frames_restored(|| {
        let (envs, delta) = run_hogs(3, &hogs)?;
        let shares = shares_follow_slots(&hogs, &delta);
        wait_all(&envs, &[Outcome::Exited(0), Outcome::Exited(0), Outcome::Exited(0)])?;
        shares
    })
}

/// Slots in ratio 1:2:3 give CPU time in ratio 1:2:3.
pub fn slot_ratio_is_cpu_ratio() -> TestResult {
    let hogs = [(0, 2), (0, 4), (0, 6)];
    frames_restored(|| {
        let (envs, delta) = run_hogs(4, &hogs)?;
        let shares = shares_follow_slots(&hogs, &delta);
        wait_all(&envs, &[Outcome::Exited(0), Outcome::Exited(0), Outcome::Exited(0)])?;
        shares
    })
}

/// A hog that never yields after its epilogue is stopped at every slot end
/// and charged; the two polite ones beside it get every slot they own in
/// full.
pub fn abort_protocol_stops_and_charges() -> TestResult {
    let core = 5;
    let hogs = [(0, 3), (0, 3), (2, 3)];
    frames_restored(|| {
        let (envs, delta) = run_hogs(core, &hogs)?;
        let config = slots::config();
        let slot_tsc = time::tsc_hz() / 1_000_000 * u64::from(config.slot_us);
        let grace_tsc = time::tsc_hz() / 1_000_000 * u64::from(config.grace_us);
        let rude = delta[2];
        let result = (|| {
            check(rude.overruns > 0, || format!("the rude hog was never charged: {rude:?}"))?;
            // Per slot it may get a slot plus the grace period of work,
            // compared with what a polite hog gets done in a slot (TCG runs
            // slower than the TSC suggests, see the module docs).
            let polite = (delta[0].work + delta[1].work) / (delta[0].slots + delta[1].slots).max(1);
            let allowed = polite + polite * grace_tsc / slot_tsc.max(1);
            check(rude.work / rude.slots.max(1) <= allowed * (100 + TOLERANCE_PCT) / 100, || {
                format!("the rude hog got more than its slots and grace: {delta:?}")
            })?;
            for (i, d) in delta[..2].iter().enumerate() {
                check(d.slots > 0 && d.run >= d.slots * slot_tsc * 85 / 100, || {
                    format!(
                        "polite hog {i} got {} TSC in {} slots of {slot_tsc}: {delta:?}",
                        d.run, d.slots
                    )
                })?;
            }
            // Every slot the polite ones own starts: the rude one cannot
            // take them (3 slots each of the 16, like the rude one's).
            check(delta[0].slots.abs_diff(delta[1].slots) * 10 <= delta[0].slots, || {
                format!("the polite hogs started different numbers of slots: {delta:?}")
            })?;
            shares_follow_slots(&hogs[..2], &delta[..2])?;
            let forfeited = delta[0].slots.saturating_sub(rude.slots);
            crate::machine::console::kprintln!(
                "  rude hog: {} overruns, {} slots started vs {} for a polite one ({} forfeited)",
                rude.overruns,
                rude.slots,
                delta[0].slots,
                forfeited
            );
            check(rude.slots < delta[0].slots, || {
                format!("the rude hog forfeited no slot: {delta:?}")
            })
        })();
        let info_overruns = env::info_word(&envs[2], offset_of!(abi::InfoPage, overruns) as u64)
            .load(Ordering::Relaxed);
        wait_all(&envs, &[Outcome::Exited(0), Outcome::Exited(0), Outcome::Exited(0)])?;
        result?;
        check(info_overruns >= rude.overruns, || {
            format!("InfoPage::overruns {info_overruns} < {} counted per core", rude.overruns)
        })
    })
}

/// A hog with a prologue and an epilogue that return at once gets both
/// upcalls (it checks itself).
pub fn slot_upcalls() -> TestResult {
    frames_restored(|| {
        let hog = spawn_on("cpuhog", 1 | 2 << 8 | 600 << 16, 6)?;
        let outcome = wait(&hog)?;
        check(outcome == Outcome::Exited(0), || format!("polite cpuhog: {outcome:?}"))
    })
}

/// Directed yield hands the slot to the named environment: the target has
/// no slot and no default time, so it runs only when handed time.
pub fn directed_yield() -> TestResult {
    frames_restored(|| {
        let target = spawn_on("yielder", 0, 2)?;
        let source = spawn_on("yielder", 1 | u64::from(target.id) << 32, 2)?;
        let t = wait(&target)?;
        let s = wait(&source)?;
        check(t == Outcome::Exited(0) && s == Outcome::Exited(0), || {
            format!("yielder target {t:?}, source {s:?}")
        })
    })
}

/// Protected control transfer: `2^calls_log2` calls with checked payloads,
/// the error cases, and a target that faults inside a call.
pub fn protected_control_transfer(calls_log2: u64) -> TestResult {
    frames_restored(|| {
        let echo = spawn_on("pctserver", 0, 1)?;
        let faulty = spawn_on("pctserver", 1, 1)?;
        // Accepts only environment 1, long gone.
        let picky = spawn_on("pctserver", 2 | 1 << 8, 1)?;
        let ids = u64::from(echo.id) | u64::from(picky.id) << 16 | u64::from(faulty.id) << 32;
        let client = spawn_on("pctclient", ids | calls_log2 << 48, 2)?;
        let c = wait(&client)?;
        let e = wait(&echo)?;
        let f = wait(&faulty)?;
        env::terminate(&picky, Outcome::Exited(0));
        let _ = wait(&picky)?;
        check(c == Outcome::Exited(0), || format!("pctclient: {c:?}"))?;
        check(e == Outcome::Exited(0), || format!("echo pctserver: {e:?}"))?;
        check(matches!(&f, Outcome::Killed(why) if why.contains("page fault")), || {
            format!("faulty pctserver: {f:?}, expected killed for a page fault")
        })
    })
}

/// An asynchronous call from one core wakes a target asleep on a halted
/// core.
pub fn async_call_wakes_halted_core() -> TestResult {
    let core = 6;
    frames_restored(|| {
        let waiter = spawn_on("pctserver", 3, core)?;
        // Wait until the waiter sleeps and its core halts.
        let asleep = Deadline::after_ms(super::ENV_TIMEOUT_MS);
        let halted = || {
            let before = cpu(core).map_or(0, |c| c.halts.load(Ordering::Relaxed));
            time::spin_for_ms(20);
            cpu(core).map_or(0, |c| c.halts.load(Ordering::Relaxed)) > before
        };
        while !halted() {
            if asleep.passed() {
                return Err(String::from("the waiter's core never halted"));
            }
        }
        let client = spawn_on("pctclient", u64::from(waiter.id) | 1 << 56, 3)?;
        let c = wait(&client)?;
        let w = wait(&waiter)?;
        check(c == Outcome::Exited(0) && w == Outcome::Exited(0), || {
            format!("pctclient {c:?}, waiter {w:?}")
        })
    })
}

/// The kernel trace of a known run holds exactly the expected slot
/// switches. Two plain `cpuhog`s hold 3 slots each on one core and left its
/// default round-robin, so nothing else may run there: with tracing on for
/// [`TRACE_WINDOW_MS`], the core's records of kinds `slot`, `run` and
/// `stop` must be, slot after slot of its time vector in order, `slot i
/// owner` then — if a hog owns slot i — `run owner` and, at the slot's
/// end, `stop owner` (preempted); a free slot has no run. Decided by the
/// slot clock, not by timing, so it holds under plain TCG too.
pub fn trace_records_exact_slot_switches() -> TestResult {
    use crate::machine::ktrace;
    use kernel::trace::{Kind, Record};
    let core = 2;
    frames_restored(|| {
        let envs =
            [spawn_on("cpuhog", hog_arg(0, 3), core)?, spawn_on("cpuhog", hog_arg(0, 3), core)?];
        hogs_hold_three_slots(&envs, core)?;
        let was_on = ktrace::enabled();
        let capacity = ktrace::init(TRACE_TEST_RECORDS);
        let ring = ktrace::ring(core).ok_or_else(|| String::from("no trace ring"))?;
        let from = ring.head();
        ktrace::enable(true);
        time::halt_for_ms(TRACE_WINDOW_MS);
        ktrace::enable(was_on);
        let mut records: Vec<Record> = Vec::new();
        let drained = ring.drain(from, |r| records.push(r));
        // The vector as it was (the hogs hold their slots until they end).
        let len = slots::len(core);
        let owners: Vec<u32> = (0..len).map(|i| slots::owner(core, i).raw()).collect();
        let masks = [slots::owned_by(core, envs[0].id), slots::owned_by(core, envs[1].id)];
        let outcome = wait_all(&envs, &[Outcome::Exited(0), Outcome::Exited(0)]);
        check(drained.lost == 0, || {
            format!("{} of {} records lost (ring of {capacity})", drained.lost, drained.next - from)
        })?;
        let hogs: Vec<u32> = envs.iter().map(|e| e.id.raw()).collect();
        // The switches seen: from the first slot start on, up to the last
        // (whose slot the window cut short).
        let seen: Vec<(Kind, u32, u64)> = records
            .iter()
            .filter(|r| matches!(r.kind, Kind::SlotStart | Kind::Run | Kind::Stop))
            .skip_while(|r| r.kind != Kind::SlotStart)
            .map(|r| (r.kind, r.env, if r.kind == Kind::Run { 0 } else { r.arg }))
            .collect();
        let last_start = seen.iter().rposition(|s| s.0 == Kind::SlotStart).unwrap_or(0);
        let seen = &seen[..last_start];
        let first = seen.first().map_or(0, |s| s.2 as usize);
        let slots_seen = seen.iter().filter(|s| s.0 == Kind::SlotStart).count();
        let mut expected = Vec::new();
        for k in 0..slots_seen {
            let index = (first + k) % len.max(1);
            let owner = owners[index];
            expected.push((Kind::SlotStart, owner, index as u64));
            if hogs.contains(&owner) {
                expected.push((Kind::Run, owner, 0));
                expected.push((Kind::Stop, owner, ktrace::STOP_PREEMPTED));
            } else {
                check(owner == 0, || format!("slot {index} is owned by env {owner}, not a hog"))?;
            }
        }
        crate::machine::console::kprintln!(
            "  {slots_seen} slots traced ({} records), hogs {hogs:?} own {:#x} and {:#x} of {len}",
            records.len(),
            masks[0],
            masks[1]
        );
        // 1 ms slots: a slow TCG host starts fewer than one per ms (27 in
        // 100 ms seen), never this few.
        check(slots_seen >= (TRACE_WINDOW_MS / 20) as usize, || {
            format!("only {slots_seen} slots started in {TRACE_WINDOW_MS} ms")
        })?;
        if let Some(k) = seen.iter().zip(&expected).position(|(s, e)| s != e) {
            return Err(format!(
                "switch {k} differs: saw {:?}, expected {:?} (around: {:?})",
                seen[k],
                expected[k],
                &seen[k.saturating_sub(3)..(k + 3).min(seen.len())]
            ));
        }
        check(seen.len() == expected.len(), || {
            format!("{} switches seen, {} expected", seen.len(), expected.len())
        })?;
        outcome
    })
}

/// Records per core the trace test makes the rings with (when `trace=N`
/// did not make them already).
const TRACE_TEST_RECORDS: usize = 8192;
/// How long the trace test records.
const TRACE_WINDOW_MS: u64 = 300;

/// Waits until every hog of `envs` holds 3 slots of `core`, has left its
/// default time there and has done some work.
fn hogs_hold_three_slots(envs: &[Arc<Env>], core: usize) -> Result<(), String> {
    let settled = Deadline::after_ms(super::ENV_TIMEOUT_MS);
    while !envs.iter().all(|e| {
        slots::owned_by(core, e.id).count_ones() == 3
            && e.default_time.load(Ordering::Acquire) & (1 << core) == 0
            && sample(e, core).work > 0
    }) {
        if settled.passed() || envs.iter().any(|e| e.is_dying()) {
            return Err(String::from("the hogs did not all take their slots"));
        }
        core::hint::spin_loop();
    }
    Ok(())
}
