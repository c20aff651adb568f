//! In-kernel tests of ring 3's vector state, FS base and system-call
//! redirection (`tests/vecredir`; its docs say what each mode checks).
//! Every environment must exit 0 (or, for the hostile one, be killed with
//! the reason named while a worker beside it finishes), and every frame
//! must come back.
//!
//! * `vec_*_two_envs_one_core`: two honest victims on one core, each
//!   checking after every switch that its registers (XMM, YMM where AVX is
//!   usable, MXCSR; FS base) are its own;
//! * `vec_new_env_*`: environments started one after another on the core
//!   where the last one left its registers dirty see only the initial
//!   state;
//! * `vec_pct_*`: a caller's vector registers and FS base are invisible to
//!   the callee and restored after the reply; the callee runs under its own
//!   system-call redirection, and the caller's applies again afterwards;
//! * `redirect_*`: see `vecredir` modes 7 and 8.

use super::{ENV_TIMEOUT_MS, TestResult, check, frames_restored};
use crate::machine::env::{Env, Outcome};
use crate::machine::percpu::online_cpus;
use crate::machine::sched;
use crate::machine::time::{self, Deadline};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// The core the pairs share.
const CORE: usize = 2;
/// The PCT tests' caller core (the server's own vCPU is on `CORE`).
const CALLER_CORE: usize = 1;

fn spawn_on(arg: u64, core: usize) -> Result<Arc<Env>, String> {
    if online_cpus() <= core {
        return Err(format!("needs core {core}, {} online", online_cpus()));
    }
    sched::spawn("vecredir", arg, Some(core)).map_err(|e| format!("cannot start vecredir: {e}"))
}

fn wait(env: &Arc<Env>) -> Result<Outcome, String> {
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

fn all_exit_0(envs: &[Arc<Env>]) -> TestResult {
    let mut failed = Vec::new();
    for e in envs {
        let outcome = wait(e)?;
        if outcome != Outcome::Exited(0) {
            failed.push(format!("vecredir({:#x}) {outcome:?}", e.start_arg));
        }
    }
    check(failed.is_empty(), || failed.join(", "))
}

/// Two environments of `mode` on one core.
pub fn pair_on_one_core(mode: u64) -> TestResult {
    frames_restored(|| all_exit_0(&[spawn_on(mode, CORE)?, spawn_on(mode, CORE)?]))
}

/// Three `fresh` environments one after another on one core, the first
/// beside a `hammer` pair that dirties every register there.
pub fn new_env_starts_clean() -> TestResult {
    frames_restored(|| {
        let dirt = [spawn_on(1, CORE)?, spawn_on(1, CORE)?];
        all_exit_0(&[spawn_on(2, CORE)?])?;
        all_exit_0(&dirt)?;
        all_exit_0(&[spawn_on(2, CORE)?])?;
        all_exit_0(&[spawn_on(2, CORE)?])
    })
}

/// A `vecredir` server (mode 5, redirecting if `server_redirects`) on
/// [`CORE`] and a client (mode 6, redirecting itself if `own`) calling it
/// from [`CALLER_CORE`].
pub fn pct(server_redirects: bool, own: bool) -> TestResult {
    frames_restored(|| {
        let server = spawn_on(5 | u64::from(server_redirects) << 8, CORE)?;
        let arg = 6
            | u64::from(server.id) << 8
            | u64::from(server_redirects) << 40
            | u64::from(own) << 41;
        let client = spawn_on(arg, CALLER_CORE)?;
        all_exit_0(&[client, server])
    })
}
