//! The registry of live environments and their life cycle's end: lookup,
//! [`terminate`], the last vCPU's drop, the [`Reclaim`] state machine that
//! returns a dead environment's resources in bounded steps, and the run
//! mode's power-off once none is left (or, under `console=split`, once the
//! init environment has ended: [`power_off_when_ends`]).
//!
//! May not touch: the scheduler (cores holding a dying environment's vCPUs
//! are told with [`mailbox::kick`]).

use super::bindings::{
    LeafBuf, LockPolicy, RANGE_CHUNK, UNMAP_CHUNK, forget_mapping, unmap_foreign,
};
use super::{Env, shard};
use super::{FRAME_TABLE, Outcome, SHARDS, lock_serving_mailbox};
use crate::machine::console::kprintln;
use crate::machine::mailbox;
use crate::machine::memory;
use crate::machine::percpu::{MAX_CPUS, online_cpus};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use kernel::ownership::{EnvId, ReleaseStep};
use spin::RwLock;
use spin::{Mutex, Once};
use x86_64::instructions::interrupts::without_interrupts;

pub(super) static ENVS: RwLock<BTreeMap<EnvId, Arc<Env>>> = RwLock::new(BTreeMap::new());
pub(super) static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// Finds a live environment.
pub fn lookup(id: EnvId) -> Option<Arc<Env>> {
    without_interrupts(|| ENVS.read().get(&id).cloned())
}

/// Finds a live environment by application name (the oldest, if several).
pub fn lookup_name(name: &str) -> Option<Arc<Env>> {
    without_interrupts(|| ENVS.read().values().find(|e| e.name == name && !e.is_dying()).cloned())
}

/// A live child of `creator` (the oldest), for the kernel's tests.
pub fn find_child(creator: EnvId) -> Option<Arc<Env>> {
    without_interrupts(|| ENVS.read().values().find(|e| e.creator == creator).cloned())
}

/// Ends `env` with `outcome` (the first call wins) and tells every core that
/// holds one of its vCPUs to drop it. Prints the one-line report.
pub fn terminate(env: &Env, outcome: Outcome) {
    let mut first = false;
    env.outcome.call_once(|| {
        first = true;
        outcome
    });
    if !first {
        return;
    }
    env.dying.store(true, Ordering::Release);
    let code = match env.outcome.get() {
        Some(Outcome::Exited(code)) => *code,
        _ => u64::MAX,
    };
    crate::machine::ktrace::record(kernel::trace::Kind::EnvExit, env.id.raw(), code);
    // Console input goes back to whoever gave it (if anyone).
    super::terminal::reader_ended(env);
    match env.outcome.get() {
        // A child environment's exit is its creator's business (the
        // status reaches it through `ChildStatus`): logged, not printed,
        // so that a shell's every fork does not write to the console.
        Some(Outcome::Exited(code)) if env.creator != EnvId::NONE => {
            log::debug!("env {} ({}) exited with code {}", env.id, env.name, code)
        }
        Some(Outcome::Exited(code)) => {
            kprintln!("exo: env {} ({}) exited with code {}", env.id, env.name, code)
        }
        Some(Outcome::Killed(why)) => {
            kprintln!("exo: env {} ({}) killed: {}", env.id, env.name, why)
        }
        None => {}
    }
    let cores = env.vcpu_cores.load(Ordering::Acquire);
    for core in (0..MAX_CPUS.min(online_cpus())).filter(|&c| cores & (1 << c) != 0) {
        mailbox::kick(core);
    }
}

/// Called by a core that dropped one of `env`'s vCPUs (after it stopped
/// using the address space). The last one queues the environment's reclaim
/// on this core (see [`Reclaim`]).
pub fn vcpu_dropped(env: &Arc<Env>) {
    if env.live_vcpus.fetch_sub(1, Ordering::AcqRel) == 1 {
        if !env.is_dying() {
            terminate(env, Outcome::Exited(0));
        }
        let reclaim = Reclaim::new(Arc::clone(env));
        without_interrupts(|| RECLAIMS.lock().push_back(reclaim));
        RECLAIMS_QUEUED.fetch_add(1, Ordering::Release);
    }
}

/// Dead environments whose reclaim is under way, stepped by
/// [`reclaim_step`]. A leaf lock (taken with interrupts off).
static RECLAIMS: Mutex<VecDeque<Reclaim>> = Mutex::new(VecDeque::new());
/// How many reclaims are queued: lets the idle loop and every scheduling
/// decision skip the lock when there is nothing to do.
static RECLAIMS_QUEUED: AtomicUsize = AtomicUsize::new(0);

/// Runs one bounded step of the oldest reclaim under way, if any (at every
/// scheduling decision and in the idle loop: a dead environment with tens of
/// thousands of mappings never holds a core for long). Returns whether a
/// step ran.
pub fn reclaim_step() -> bool {
    if RECLAIMS_QUEUED.load(Ordering::Acquire) == 0 {
        return false;
    }
    let Some(mut reclaim) = without_interrupts(|| RECLAIMS.lock().pop_front()) else {
        return false;
    };
    if reclaim.step() {
        without_interrupts(|| RECLAIMS.lock().push_back(reclaim));
    } else {
        RECLAIMS_QUEUED.fetch_sub(1, Ordering::Release);
    }
    true
}

/// A dead environment returned to the pool in bounded steps: every mapping
/// others have of its frames is removed, every frame goes back, and only
/// then is the outcome published, so a test that sees the outcome can count
/// free frames. Holds the environment's last reference.
pub struct Reclaim {
    env: Arc<Env>,
    stage: ReclaimStage,
}

enum ReclaimStage {
    /// Take it out of the registry and the time vectors.
    Start,
    /// End the grants others gave it, shard by shard.
    ForgetGrantee(usize),
    /// Forget its mappings, of its own frames and of others' (its page
    /// tables go), walking them from this address on.
    OwnMappings(u64),
    /// Release its data frames (others' mappings of them first).
    OwnedFrames,
    /// Free its page tables and kernel frames, publish the outcome.
    Finish,
}

/// Owned frames one reclaim step releases at most (each a record removed
/// and a frame freed: a few hundred instructions). Back to 1 (16 came with
/// `fork15b`): the `-icount` boot's
/// `memrevoke_cpu_time_victim_gap_beside_forced_repossession` failed in 2
/// of 4 CI runs since (a victim off its core for 3.2–3.6 ms against 2.25),
/// after passing every run before; not proven to be the cause.
const OWNED_PER_STEP: usize = 1;

impl Reclaim {
    pub(super) fn new(env: Arc<Env>) -> Reclaim {
        Reclaim { env, stage: ReclaimStage::Start }
    }

    /// Runs the whole reclaim at once (a small environment that failed to
    /// start).
    pub(super) fn run(mut self) {
        while self.step() {}
    }

    /// One bounded step; whether more remain. Takes at most one
    /// address-space lock at a time (its own, or one of the others' it
    /// must unmap from), never two.
    fn step(&mut self) -> bool {
        let env = &self.env;
        match self.stage {
            ReclaimStage::Start => {
                without_interrupts(|| ENVS.write().remove(&env.id));
                super::child::destroy_unstarted_children(env);
                crate::machine::slots::release_env(env.id);
                self.stage = ReclaimStage::ForgetGrantee(0);
            }
            // Never granted anything: no shard holds a grant to it (the flag
            // is set before any grant is recorded), so the pass over the
            // whole frame table is skipped.
            ReclaimStage::ForgetGrantee(_) if !env.granted_to.load(Ordering::SeqCst) => {
                self.stage = ReclaimStage::OwnMappings(abi::USER_MIN);
            }
            ReclaimStage::ForgetGrantee(first) => {
                let last = (first + 8).min(SHARDS);
                for table in &FRAME_TABLE[first..last] {
                    table.lock().forget_grants_to(env.id);
                }
                self.stage = if last == SHARDS {
                    ReclaimStage::OwnMappings(abi::USER_MIN)
                } else {
                    ReclaimStage::ForgetGrantee(last)
                };
            }
            ReclaimStage::OwnMappings(from) => {
                let mut leaves = LeafBuf::new();
                let next =
                    lock_serving_mailbox(&env.aspace).leaves_from(from, RANGE_CHUNK, &mut leaves);
                for &(va, frame) in leaves.iter() {
                    // Initrd pages have no record to forget.
                    if !abi::in_info_region(va) && !super::bindings::is_initrd_frame(frame) {
                        forget_mapping(frame, env.id, va);
                    }
                }
                self.stage = match next {
                    Some(va) => ReclaimStage::OwnMappings(va),
                    None => ReclaimStage::OwnedFrames,
                };
            }
            ReclaimStage::OwnedFrames => {
                // Up to `OWNED_PER_STEP` frames that need no unmapping of
                // others' (the common case: a forked child's own stack
                // pages), or one that does: a step stays bounded either way.
                for _ in 0..OWNED_PER_STEP {
                    let Some(frame) = env.owned.lock().pop_first() else {
                        self.stage = ReclaimStage::Finish;
                        return true;
                    };
                    // Bound first: the shard lock must not be held across
                    // the shootdown below.
                    let step = shard(frame).release_step(frame, env.id, UNMAP_CHUNK);
                    match step {
                        Some(ReleaseStep::Released) => {
                            memory::free_frame(frame).expect("owned frame was allocated");
                        }
                        Some(ReleaseStep::Unmap(foreign)) => {
                            unmap_foreign(frame, &foreign, LockPolicy::Wait);
                            env.owned.lock().insert(frame);
                            break;
                        }
                        // Sharers hold it on; it stays charged to this account.
                        Some(ReleaseStep::Kept) => {
                            env.kept.fetch_add(1, Ordering::AcqRel);
                        }
                        None => log::error!("env {}: owned frame {frame} not recorded", env.id),
                    }
                }
            }
            ReclaimStage::Finish => {
                let aspace = lock_serving_mailbox(&env.aspace);
                for frame in aspace.table_frames().into_iter().chain([aspace.root()]) {
                    shard(frame).free_page_table(frame);
                    memory::free_frame(frame).expect("page-table frame was allocated");
                }
                drop(aspace);
                for frame in core::mem::take(&mut *env.kernel_frames.lock()) {
                    memory::free_frame(frame).expect("kernel frame was allocated");
                }
                env.charged.store(0, Ordering::Release);
                if env.outcome.get().is_none() {
                    // Its last vCPU ended without `terminate`: it ends here.
                    crate::machine::ktrace::record(kernel::trace::Kind::EnvExit, env.id.raw(), 0);
                }
                let outcome = env.outcome.call_once(|| Outcome::Exited(0));
                // A child's status is its creator's business.
                if *outcome != Outcome::Exited(0) && env.creator.is_none() {
                    note_run_failure();
                }
                env.finished.store(true, Ordering::Release);
                super::child::child_reclaimed(env, outcome);
                // Pairs with the fence in `power_off_when_ends`: either it
                // sees `finished` or this sees its `INIT_ENV`.
                fence(Ordering::SeqCst);
                if INIT_ENV.load(Ordering::SeqCst) == u64::from(env.id) {
                    report_init_end(env);
                }
                check_all_done();
                return false;
            }
        }
        true
    }
}

// --- run mode ---------------------------------------------------------------

static POWER_OFF_WHEN_DONE: Once<&'static str> = Once::new();
static RUN_FAILED: AtomicBool = AtomicBool::new(false);

/// `run` and `bench` modes: once no environment is left, print `last_line`
/// and power off (failure if anything failed).
pub fn power_off_when_all_done(last_line: &'static str) {
    POWER_OFF_WHEN_DONE.call_once(|| last_line);
}

/// `console=split`: the environment whose end ends the run, or `NO_INIT`.
static INIT_ENV: AtomicU64 = AtomicU64::new(NO_INIT);
const NO_INIT: u64 = u64::MAX;
static INIT_REPORTED: AtomicBool = AtomicBool::new(false);
/// `console=split`: an init environment is being started or runs, so the
/// last environment's end is not the end of the run (the init's is; other
/// environments may end, and leave the registry empty, while the init's
/// reclaim is still under way on another core).
static INIT_PENDING: AtomicBool = AtomicBool::new(false);

/// `console=split`: the init environment is about to be spawned; until it
/// has ended (or [`init_not_started`]), only its end powers off.
pub fn expect_init() {
    INIT_PENDING.store(true, Ordering::SeqCst);
}

/// The init environment could not be started: the run ends as without
/// `console=split`, when no environment is left (with failure).
pub fn init_not_started() {
    INIT_PENDING.store(false, Ordering::SeqCst);
}

/// The marker line that says how the init environment ended, on the kernel
/// console just before the machine powers off under `console=split`:
/// `exo-exit: tag=TAG status N` (its `Exit` code, in decimal, all 64 bits)
/// or `exo-exit: tag=TAG killed WHY`, `TAG` the command line's `exit_tag`
/// (`-` without one). Ring 3 can print anything on the kernel console, but
/// it never sees the command line, so it cannot print the tag: xtask takes
/// only a marker with the tag it chose. The QEMU exit status
/// ([`crate::machine::cpu::EXIT_INIT_ENDED`]) says the marker is there.
pub const EXIT_MARKER: &str = "exo-exit:";
static EXIT_TAG: Once<String> = Once::new();

/// Sets the end marker's tag (the command line's `exit_tag`), at boot.
pub fn set_exit_tag(tag: &str) {
    EXIT_TAG.call_once(|| String::from(tag));
}

/// `console=split`: powers the machine off as soon as `env` has ended and
/// its resources are back, reporting its outcome ([`EXIT_MARKER`]) —
/// whatever other environments still run. For the first `init` app.
pub fn power_off_when_ends(env: &Env) {
    INIT_ENV.store(u64::from(env.id), Ordering::SeqCst);
    fence(Ordering::SeqCst);
    // It may have ended (and been reclaimed) already.
    if env.finished.load(Ordering::SeqCst) {
        report_init_end(env);
    }
}

/// Prints the init environment's outcome and leaves QEMU (once: the
/// reclaim and `power_off_when_ends` may both get here).
fn report_init_end(env: &Env) {
    if INIT_REPORTED.swap(true, Ordering::SeqCst) {
        return;
    }
    crate::machine::ktrace::dump();
    let tag = EXIT_TAG.get().map_or("-", String::as_str);
    match env.outcome.get() {
        Some(Outcome::Exited(code)) => kprintln!("{EXIT_MARKER} tag={tag} status {code}"),
        Some(Outcome::Killed(why)) => kprintln!("{EXIT_MARKER} tag={tag} killed {why}"),
        // Reclaimed environments always have an outcome.
        None => kprintln!("{EXIT_MARKER} tag={tag} killed (no outcome recorded)"),
    }
    crate::machine::cpu::exit_qemu_with(crate::machine::cpu::EXIT_INIT_ENDED)
}

/// Something failed, so the run's status is failure.
pub fn note_run_failure() {
    RUN_FAILED.store(true, Ordering::Release);
}

/// Powers off if asked to once every environment has ended.
pub fn check_all_done() {
    if INIT_PENDING.load(Ordering::SeqCst) {
        return;
    }
    if let Some(line) = POWER_OFF_WHEN_DONE.get()
        && without_interrupts(|| ENVS.read().is_empty())
    {
        crate::machine::ktrace::dump();
        kprintln!("{line}");
        crate::machine::cpu::exit_qemu(!RUN_FAILED.load(Ordering::Acquire));
    }
}
