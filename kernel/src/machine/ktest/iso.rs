//! In-kernel tests of isolation under multi-core attack (issue 13). Each
//! runs a hostile environment beside an honest one that checks its own
//! memory and its own CPU time; every environment must exit 0 (the hostile
//! ones check that their attack failed, the honest ones that nothing
//! happened to them) and every frame must come back.
//!
//! * `iso_flood_*`: `isoflood` floods asynchronous calls at itself from
//!   every user core (filling the cores' urgent mailboxes) while it
//!   unmaps and frees a frame that its other vCPUs have cached; the freed
//!   frame goes to `isovictim` (mode 0, holder), and no stale translation
//!   may read or write it.
//! * `pct_two_callers_*`: two `pctclient`s (mode 2) on one core call one
//!   slow `pctserver` (mode 4) on that core; calls are preempted at slot
//!   ends, a second call into a target whose IPC stack on that core is in
//!   use may get `Busy` (retried), and no reply may carry the other
//!   caller's data.
//! * `cpu_time_victim_*`: `isovictim` (mode 1, gap meter) on [`GAP_CORE`]
//!   measures its longest time off the CPU while `isohog` runs one long
//!   kernel operation after another on that core (or keeps the lock of an
//!   address space busy that a sleeper there needs); the gap must stay
//!   within two slots plus the grace period (plus the victim's documented
//!   margin). Timing tests: they run in the `-icount` boot.

use super::{ENV_TIMEOUT_MS, TestResult, check, frames_restored};
use crate::machine::env::{self, Env, Outcome};
use crate::machine::percpu::online_cpus;
use crate::machine::sched;
use crate::machine::time::{self, Deadline};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// The victim's core in the gap tests.
const GAP_CORE: usize = 4;
/// `isovictim`'s progress counter (its `PROGRESS_VA`).
const VICTIM_PROGRESS_VA: u64 = 0x0000_2000_0000_0000;
/// The core of the flood test's unmapping vCPU and victim.
const FLOOD_CORE: usize = 1;
/// The core of the two callers and the server.
const PCT_CORE: usize = 3;

fn spawn_on(name: &str, arg: u64, core: usize) -> Result<Arc<Env>, String> {
    if online_cpus() <= core {
        return Err(format!("needs core {core}, {} online", online_cpus()));
    }
    sched::spawn(name, arg, Some(core)).map_err(|e| format!("cannot start {name}: {e}"))
}

/// Waits for `env` halted between looks, so that an `-icount` machine's
/// time is not spent by this core.
fn wait_halted(env: &Arc<Env>) -> Result<Outcome, String> {
    let deadline = Deadline::after_ms(ENV_TIMEOUT_MS);
    loop {
        if let Some(outcome) = env.finished() {
            return Ok(outcome.clone());
        }
        if deadline.passed() {
            return Err(format!("env {} ({}) still running", env.id, env.name));
        }
        time::halt_for_ms(2);
    }
}

/// Waits for every environment; all must exit 0.
fn all_exit_0(envs: &[Arc<Env>]) -> TestResult {
    let mut failed = Vec::new();
    for e in envs {
        let outcome = wait_halted(e)?;
        if outcome != Outcome::Exited(0) {
            failed.push(format!("{} ({:#x}) {outcome:?}", e.name, e.start_arg));
        }
    }
    check(failed.is_empty(), || failed.join(", "))
}

/// Rounds of the flood test (each ends with an unmap, a free and the
/// victim taking the frame).
const FLOOD_ROUNDS: u64 = 24;

/// Bug 1: a shootdown skipped because the target's mailbox was full.
pub fn flood_never_leaves_stale_translation() -> TestResult {
    frames_restored(|| {
        let victim = spawn_on("isovictim", 0, FLOOD_CORE)?;
        let attacker = spawn_on("isoflood", u64::from(victim.id) | FLOOD_ROUNDS << 32, FLOOD_CORE)?;
        all_exit_0(&[attacker, victim])
    })
}

/// Bug 2: two callers, one target, one core.
pub fn pct_two_callers_one_core() -> TestResult {
    frames_restored(|| {
        // Slow echo server that expects two QUIT calls.
        let server = spawn_on("pctserver", 4 | 2 << 8, PCT_CORE)?;
        let calls_log2 = 8u64;
        let arg = u64::from(server.id) | calls_log2 << 48 | 2 << 56;
        let a = spawn_on("pctclient", arg, PCT_CORE)?;
        let b = spawn_on("pctclient", arg, PCT_CORE)?;
        all_exit_0(&[a, b, server])
    })
}

/// Bug 3: the victim on [`GAP_CORE`] beside `isohog`s started with
/// `hogs` (start argument and core; a peer id is filled in for the revoke
/// owner, which follows its grantee).
fn victim_gap(hogs: &[(u64, usize)]) -> TestResult {
    frames_restored(|| {
        let victim = spawn_on("isovictim", 1, GAP_CORE)?;
        // Start the attack once the victim has set up and is measuring.
        let running = Deadline::after_ms(ENV_TIMEOUT_MS);
        loop {
            let mut word = [0u8; 8];
            let _ = env::copy_from_user_into(&victim, VICTIM_PROGRESS_VA, &mut word);
            if u64::from_le_bytes(word) != 0 {
                break;
            }
            if running.passed() || victim.finished().is_some() {
                return Err(format!("isovictim never started: {:?}", victim.finished()));
            }
            time::halt_for_ms(2);
        }
        let mut envs: Vec<Arc<Env>> = Vec::new();
        for &(arg, core) in hogs {
            let arg = match (arg & 0xff, envs.last()) {
                (2, Some(grantee)) => arg | u64::from(grantee.id) << 32,
                _ => arg,
            };
            envs.push(spawn_on("isohog", arg, core)?);
        }
        envs.push(victim);
        all_exit_0(&envs)
    })
}

/// The baseline: an attacker that only computes.
pub fn victim_gap_control() -> TestResult {
    victim_gap(&[(0, GAP_CORE)])
}

/// (a) a sleeper on the victim's core whose address-space lock other
/// cores keep busy.
pub fn victim_gap_sleeper_lock_churn() -> TestResult {
    victim_gap(&[(1, GAP_CORE)])
}

/// (b) revoke of a frame mapped tens of thousands of times.
pub fn victim_gap_mass_revoke() -> TestResult {
    victim_gap(&[(3, GAP_CORE), (2, GAP_CORE)])
}

/// (c) `unmap_range` over 2^20 pages, populated and empty.
pub fn victim_gap_huge_unmap_range() -> TestResult {
    victim_gap(&[(4, GAP_CORE)])
}

/// (d) exit with tens of thousands of mappings.
pub fn victim_gap_exit_with_mappings() -> TestResult {
    victim_gap(&[(5, GAP_CORE)])
}
