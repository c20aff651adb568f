//! In-kernel tests of memory repossession (`abi::repossess`), with the
//! `revokee` environments (that application's docs say what each mode
//! checks on its side). The kernel's side here: it makes the demand
//! through the test hook ([`repossess::request`]), then checks the frame
//! table, the quota and the outcome; every test also checks that every
//! frame came back and that no demand stays open.
//!
//! * `memrevoke_compliant_*`: the libOS pager answers in time, from its
//!   pool and its zero pages; nothing is taken by force; the quota is
//!   smaller by exactly the demand.
//! * `memrevoke_noncompliant_*`: an environment that ignores the demand
//!   loses exactly the first frames of its list, in order, keeps running
//!   and exits 0; a bystander beside it keeps every frame intact.
//! * `memrevoke_hostile_list_*`: a list naming another environment's
//!   frame, the kernel's, free and absurd frame numbers, duplicates: only
//!   its own two frames are taken, the bystander's frame is untouched, and
//!   the list cannot cover the debt, so it is killed with the line.
//! * `memrevoke_unmapped_list_*`: the list's page is unmapped at the
//!   deadline: killed, "list covered 0 of 2".
//! * `memrevoke_exit_mid_repossession_*`: the environment exits while
//!   frames mapped 100 times each are being taken: no frame is lost.
//! * `memrevoke_cpu_time_victim_gap_*`: `isovictim`'s gap meter on
//!   [`GAP_CORE`] beside a forced repossession of 32 frames mapped 100
//!   times each on the same core (and a computing `isohog`): the victim's
//!   longest time off the CPU stays within its bound. Timing: judged in
//!   the `-icount` boot like the `cpu_time_victim_gap_*` tests.

use super::{ENV_TIMEOUT_MS, TestResult, check, frames_restored};
use crate::machine::env::{self, Env, Outcome, repossess};
use crate::machine::percpu::online_cpus;
use crate::machine::sched;
use crate::machine::time::{self, Deadline};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use kernel::frames::FrameNumber;

/// `revokee`'s control page and its words (see that application).
const CONTROL: u64 = 0x0000_2000_0000_0000;
const READY: u64 = 0x7265_6164;
const GO_ON: u64 = 0x676f_6f6e;
const LIST_WORD: u64 = 8;
const RAW_LISTED: u64 = 12;
/// The core of the tested environments; the bystander's.
const CORE: usize = 1;
const BYSTANDER_CORE: usize = 2;
/// The victim's core in the gap test (as the isolation tests').
const GAP_CORE: usize = 4;
const VICTIM_PROGRESS_VA: u64 = 0x0000_2000_0000_0000;

fn spawn_on(name: &str, arg: u64, core: usize) -> Result<Arc<Env>, String> {
    if online_cpus() <= core {
        return Err(format!("needs core {core}, {} online", online_cpus()));
    }
    sched::spawn(name, arg, Some(core)).map_err(|e| format!("cannot start {name}: {e}"))
}

fn word(env: &Env, i: u64) -> Result<u64, String> {
    let mut w = [0u8; 8];
    env::copy_from_user_into(env, CONTROL + i * 8, &mut w)
        .map_err(|e| format!("{} control word {i}: {e:?}", env.name))?;
    Ok(u64::from_le_bytes(w))
}

fn set_word(env: &Env, i: u64, v: u64) -> Result<(), String> {
    env::copy_to_user(env, CONTROL + i * 8, &v.to_le_bytes())
        .map_err(|e| format!("{} control word {i}: {e:?}", env.name))
}

/// Waits (halted between looks) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> Result<bool, String>) -> TestResult {
    let deadline = Deadline::after_ms(ENV_TIMEOUT_MS);
    loop {
        if cond()? {
            return Ok(());
        }
        if deadline.passed() {
            return Err(format!("timed out waiting for {what}"));
        }
        time::halt_for_ms(1);
    }
}

fn wait_ready(env: &Arc<Env>) -> TestResult {
    wait_until("READY", || {
        if let Some(o) = env.finished() {
            return Err(format!("{} ({:#x}) ended before READY: {o:?}", env.name, env.start_arg));
        }
        Ok(word(env, 0).unwrap_or(0) == READY)
    })
}

fn wait_outcome(env: &Arc<Env>) -> Result<Outcome, String> {
    let mut out = None;
    wait_until("the env's end", || {
        out = env.finished().cloned();
        Ok(out.is_some())
    })?;
    Ok(out.expect("finished"))
}

fn exit_0(env: &Arc<Env>) -> TestResult {
    let o = wait_outcome(env)?;
    check(o == Outcome::Exited(0), || format!("{} ({:#x}): {o:?}", env.name, env.start_arg))
}

/// A TSC deadline `ms` from now.
fn in_ms(ms: u64) -> u64 {
    crate::machine::cpu::rdtsc() + ms * (time::tsc_hz() / 1000)
}

fn demand(env: &Arc<Env>, frames: u64, ms: u64) -> TestResult {
    repossess::request(env, frames, in_ms(ms)).map_err(|e| format!("request: {e:?}"))
}

/// Who holds `frame`: the owner's id if an environment owns it as data.
fn owner(frame: u64) -> Option<u32> {
    let w = env::frame_status(FrameNumber(frame)).ok()?;
    (w & 0xff == abi::FrameHolder::Owned as u64).then_some((w >> 32) as u32)
}

/// Every open demand has ended (they end at the next steps after the
/// environment's end).
fn no_demand_left() -> TestResult {
    wait_until("no open demand", || Ok(repossess::open_demands() == 0))
}

pub fn compliant_pager_gives_back_in_time() -> TestResult {
    frames_restored(|| {
        let env = spawn_on("revokee", 0, CORE)?;
        wait_ready(&env)?;
        // 8 pool frames and 8 of its 16 zero pages.
        demand(&env, 16, 2_000)?;
        exit_0(&env)?;
        let cut = env.repossess.quota_cut();
        check(cut == 16, || format!("quota cut by {cut}, not 16"))?;
        no_demand_left()
    })
}

pub fn noncompliant_loses_its_list_in_order() -> TestResult {
    frames_restored(|| {
        let bystander = spawn_on("revokee", 4, BYSTANDER_CORE)?;
        let env = spawn_on("revokee", 1, CORE)?;
        wait_ready(&bystander)?;
        wait_ready(&env)?;
        let list: Vec<u64> =
            (0..RAW_LISTED).map(|i| word(&env, LIST_WORD + i)).collect::<Result<_, _>>()?;
        const N: usize = 5;
        demand(&env, N as u64, 5)?;
        wait_until("the debt paid", || Ok(env.repossess.owed() == 0))?;
        let me = env.id.raw();
        for (i, &f) in list.iter().enumerate() {
            let held = owner(f) == Some(me);
            check(held == (i >= N), || {
                format!("list entry {i} (frame {f}): held {held}, owner {:?}", owner(f))
            })?;
        }
        let cut = env.repossess.quota_cut();
        check(cut == N as u64, || format!("quota cut by {cut}, not {N}"))?;
        // It has seen the settled event (and allocates nothing until told).
        wait_until("the settled event seen", || Ok(word(&env, 2)? == N as u64))?;
        set_word(&env, 1, GO_ON)?;
        exit_0(&env)?;
        set_word(&bystander, 1, GO_ON)?;
        exit_0(&bystander)?;
        no_demand_left()
    })
}

pub fn hostile_list_skipped_then_killed() -> TestResult {
    frames_restored(|| {
        let bystander = spawn_on("revokee", 4, BYSTANDER_CORE)?;
        wait_ready(&bystander)?;
        let theirs = word(&bystander, 2)?;
        let env = spawn_on("revokee", 2 | theirs << 8, CORE)?;
        wait_ready(&env)?;
        let (a, b) = (word(&env, 2)?, word(&env, 3)?);
        demand(&env, 4, 5)?;
        let o = wait_outcome(&env)?;
        let want = "repossession: list covered 2 of 4 frames owed";
        check(matches!(&o, Outcome::Killed(why) if why == want), || format!("hostile: {o:?}"))?;
        check(owner(theirs) == Some(bystander.id.raw()), || {
            format!("the bystander's frame {theirs}: owner {:?}", owner(theirs))
        })?;
        let cut = env.repossess.quota_cut();
        check(cut == 2, || format!("quota cut by {cut}, not 2 (frames {a}, {b})"))?;
        set_word(&bystander, 1, GO_ON)?;
        exit_0(&bystander)?;
        no_demand_left()
    })
}

pub fn unmapped_list_kills() -> TestResult {
    frames_restored(|| {
        let env = spawn_on("revokee", 3, CORE)?;
        wait_ready(&env)?;
        demand(&env, 2, 5)?;
        let o = wait_outcome(&env)?;
        let want = "repossession: list covered 0 of 2 frames owed";
        check(matches!(&o, Outcome::Killed(why) if why == want), || format!("{o:?}"))?;
        no_demand_left()
    })
}

pub fn exit_mid_repossession_leaks_nothing() -> TestResult {
    frames_restored(|| {
        let env = spawn_on("revokee", 5, CORE)?;
        wait_ready(&env)?;
        demand(&env, 32, 5)?;
        exit_0(&env)?;
        no_demand_left()
    })
}

pub fn victim_gap_beside_forced_repossession() -> TestResult {
    frames_restored(|| {
        let victim = spawn_on("isovictim", 1, GAP_CORE)?;
        wait_until("the victim measuring", || {
            let mut w = [0u8; 8];
            let _ = env::copy_from_user_into(&victim, VICTIM_PROGRESS_VA, &mut w);
            if victim.finished().is_some() {
                return Err(format!("isovictim ended: {:?}", victim.finished()));
            }
            Ok(u64::from_le_bytes(w) != 0)
        })?;
        let revokee = spawn_on("revokee", 6, GAP_CORE)?;
        wait_ready(&revokee)?;
        // Keeps the victim measuring while the repossession runs.
        let hog = spawn_on("isohog", 0, GAP_CORE)?;
        demand(&revokee, 32, 1)?;
        for e in [&revokee, &hog, &victim] {
            exit_0(e)?;
        }
        no_demand_left()
    })
}
