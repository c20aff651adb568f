//! The async runtime: one executor per core, tasks, wakers, ring futures,
//! timers and memory-word watchers.
//!
//! ```ignore
//! libos_async::main!(main_async);
//!
//! async fn main_async(_arg: u64) -> i32 {
//!     let h = libos_async::rt::spawn_on(2, async { 6 * 7 });
//!     assert_eq!(h.await, 42);
//!     libos_async::rt::sleep(core::time::Duration::from_millis(5)).await;
//!     0
//! }
//! ```
//!
//! What lives where:
//!
//! - [`exec`]: per-core run queues, [`spawn`], [`spawn_on`],
//!   [`spawn_local`] (a `!Send` future pinned to its core), [`block_on`],
//!   [`yield_now`], cross-core wake-ups, work stealing, the idle sleep on
//!   a wakeup predicate;
//! - [`task`]: the task state machine and [`JoinHandle`] (with
//!   [`JoinHandle::try_join`]);
//! - [`catch`]: a task's panic caught at its [`JoinHandle`] (the executor
//!   loops run on a poll stack that a panic abandons);
//! - [`policy`]: the open [`Policy`] trait an application implements (or
//!   picks: [`Fifo`], [`Lifo`], [`Priority`], [`Stride`], [`Edf`]), the
//!   [`Task`] a policy holds, per-task data;
//! - [`metrics`](mod@metrics): per-executor counters and the queueing-delay histogram;
//! - [`trace`]: the task-event trace (per-core ring buffers, dumped for
//!   `cargo xtask run --trace`);
//! - [`reactor`]: ring operations as futures ([`op`], [`nop`], [`timer_at`],
//!   [`notify`], [`console_write`], [`frame_alloc`], [`map`], ...);
//!   [`slots`] is its completion table (generations in `user_data`);
//! - [`watch`]: [`wait_word_change`] and [`wait_notification`];
//! - [`sync`]: channels (`mpsc`, `oneshot`, `broadcast`), `Mutex`,
//!   `RwLock`, [`Notify`], `select_biased!`/`join!`, [`JoinSet`], abort;
//! - [`select`](mod@select): a fair select ([`select_fair`],
//!   [`select_fair_all`]: a random order on each poll);
//! - [`time`]: [`Instant`], [`sleep`], [`timeout`], [`interval`], over the
//!   per-core [`timer::TimerHeap`];
//! - [`machine`]: the few machine contacts, with host stand-ins so that
//!   all of the above runs under `cargo test`.
//!
//! [`run`] (what [`crate::main!`] calls) starts an executor vCPU on every
//! configured core and runs the application's future on the first one;
//! when that future returns, the environment exits with its value (every
//! other vCPU ends with it, like a process whose `main` returns).
//!
//! **CPU time.** With [`RuntimeConfig::slots_per_core`] `n > 0`, the
//! runtime takes `n` slots of each executor core's time vector
//! ([`request_slots`]) before it starts the executors; with 0 it runs in
//! the kernel's default round-robin. The executor's idle predicate watches
//! `InfoPage::notifications`, which asynchronous calls (`Acall`) and ring
//! `Notify`s both bump, so any of them wakes a sleeping executor at once.
//!
//! **Not done** (said plainly): the executor does not read the event queue
//! itself (applications read it with [`crate::cpu::Events`]); protected
//! control transfer has no async wrapper (it is synchronous by nature: see
//! [`crate::cpu::call`]). A [`spawn_local`] task that never completes
//! stays allocated until the environment ends (see there).

#[allow(unsafe_code, reason = "the stack switch of caught task panics")]
pub mod catch;
#[allow(unsafe_code, reason = "block_on's loop state crosses to the poll stack as raw pointers")]
pub mod exec;
pub mod machine;
pub mod metrics;
pub mod policy;
pub mod reactor;
pub mod select;
pub mod slots;
pub mod sync;
#[allow(unsafe_code, reason = "a task's future lives inline in its Arc; the waker vtable")]
pub mod task;
pub mod time;
pub mod timer;
pub mod trace;
pub mod watch;

#[cfg(test)]
mod tests;

pub use catch::{JoinError, panic_ends_env, panics_caught, set_panic_ends_env};
pub use exec::{
    Budgets, Builder, NoExecutor, PolicyFn, block_on, budgets, current_task, executor_cores,
    policy_name, queued, set_budgets, set_policy, set_stealing, set_task_data, spawn, spawn_local,
    spawn_on, spawn_with_priority, stealing, stolen_tasks, try_spawn_on, yield_now,
};
pub use metrics::{ExecMetrics, metrics};
pub use policy::{Edf, Fifo, Lifo, Policy, Priority, Stop, Stride, Task, TaskId, Why};
pub use reactor::{
    RingOp, console_write, frame_alloc, frame_free, grant, in_flight, last_reap_tsc, map, nop,
    notify, op, protect, revoke, timer_at, unmap,
};
pub use select::{select_fair, select_fair_all};
pub use sync::{JoinSet, Notify, spawn_abortable};
pub use task::{JoinHandle, TryJoin};
pub use time::{Elapsed, Instant, Interval, Sleep, interval, sleep, sleep_until, timeout};
pub use watch::{wait_notification, wait_word_change};

use core::future::Future;

/// The core the caller runs on.
pub fn current_core() -> usize {
    machine::current_core()
}

/// How [`run`] sets the runtime up.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeConfig {
    /// Cores to run executors on, as a bit set; 0 means every usable core
    /// ([`crate::usable_cores`]). The calling core always gets one.
    pub cores: u64,
    /// Whether idle executors steal tasks from loaded ones.
    pub stealing: bool,
    /// Makes each executor core's run-queue policy (`None`: the built-in
    /// [`Fifo`]).
    pub policy: Option<PolicyFn>,
    /// Each executor's timer and ring polling [`Budgets`].
    pub budgets: Budgets,
    /// Time slots to ask for on each core (see [`request_slots`]); 0: none
    /// (the kernel's default round-robin).
    pub slots_per_core: u32,
    /// Task-event trace records per core (see [`trace`]); 0: no trace.
    /// With n > 0, [`run`] turns tracing on before the executors start and
    /// dumps the trace on the console when `main` returns (for
    /// `cargo xtask run --trace`).
    pub trace_records: usize,
    /// A task's panic ends the environment (exit code 101) instead of
    /// being caught at its [`JoinHandle`] (see [`catch`]).
    pub panic_ends_env: bool,
}

impl RuntimeConfig {
    /// Every usable core, stealing on, FIFO, default budgets, no slot
    /// request.
    pub const fn new() -> Self {
        RuntimeConfig {
            cores: 0,
            stealing: true,
            policy: None,
            budgets: Budgets::DEFAULT,
            slots_per_core: 0,
            trace_records: 0,
            panic_ends_env: false,
        }
    }

    /// With `true`, a task's panic ends the environment instead of being
    /// caught at its [`JoinHandle`].
    pub const fn panic_ends_env(mut self, on: bool) -> Self {
        self.panic_ends_env = on;
        self
    }

    /// Only these cores (bit set).
    pub const fn cores(mut self, cores: u64) -> Self {
        self.cores = cores;
        self
    }

    /// Stealing on or off.
    pub const fn stealing(mut self, on: bool) -> Self {
        self.stealing = on;
        self
    }

    /// The run-queue policy of each executor: `make(core)` (a function,
    /// so that cores may get different policies), e.g.
    /// `.policy(|_| Box::new(Stride::new()))`.
    pub const fn policy(mut self, make: PolicyFn) -> Self {
        self.policy = Some(make);
        self
    }

    /// The timer and ring polling budgets of every executor.
    pub const fn budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// Traces task events, `records` per core, dumped when `main` returns.
    pub const fn trace(mut self, records: usize) -> Self {
        self.trace_records = records;
        self
    }

    /// Slots to ask for per core.
    pub const fn slots_per_core(mut self, n: u32) -> Self {
        self.slots_per_core = n;
        self
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Takes `config.slots_per_core` time slots of each of `cores` (any free
/// ones: `SlotAlloc(core, ANY, n)`); nothing with 0. The slots are the
/// environment's until it frees them or ends. Stops at the first core
/// where the kernel refuses (its error), keeping what it got; the
/// executors still run in the default round-robin there.
pub fn request_slots(config: &RuntimeConfig, cores: u64) -> Result<(), abi::Error> {
    if config.slots_per_core == 0 {
        return Ok(());
    }
    for core in (0..abi::MAX_CORES).filter(|&c| cores & (1 << c) != 0) {
        crate::cpu::alloc_slots(core, u64::from(config.slots_per_core))?;
    }
    Ok(())
}

/// Runs `main` under the runtime described by `config` and returns its
/// value (see the module documentation). Executors on other cores that
/// cannot be started are reported and left out.
pub fn run<F: Future<Output = i32>>(config: RuntimeConfig, main: F) -> i32 {
    let here = current_core();
    let usable = crate::usable_cores();
    let cores = (if config.cores == 0 { usable } else { config.cores & usable }) | (1 << here);
    exec::set_stealing(config.stealing);
    catch::set_panic_ends_env(config.panic_ends_env);
    exec::set_default_policy(config.policy);
    if config.trace_records > 0 {
        trace::enable(config.trace_records);
    }
    for core in (0..abi::MAX_CORES).filter(|&c| cores & (1 << c) != 0) {
        exec::set_budgets(core, config.budgets);
    }
    if let Err(e) = request_slots(&config, cores) {
        crate::println!("libos: slot request failed: {e:?}");
    }
    // Every run queue exists before any vCPU starts, so spawn_on works at
    // once; a queue's tasks wait until its vCPU runs.
    for core in (0..abi::MAX_CORES).filter(|&c| cores & (1 << c) != 0) {
        exec::ensure_queue(core);
    }
    exec::ensure_executor();
    for core in (0..abi::MAX_CORES).filter(|&c| c != here && cores & (1 << c) != 0) {
        if let Err(e) = crate::start_vcpu(core, executor_vcpu, 0) {
            crate::println!("libos: no executor on core {core}: {e:?}");
            exec::retire(core);
        }
    }
    let code = block_on(main);
    if config.trace_records > 0 {
        trace::dump();
    }
    code
}

fn executor_vcpu(_arg: u64) -> ! {
    exec::serve()
}

/// Declares the application's async main, `async fn(start_arg: u64) ->
/// i32`, run by [`rt::run`](crate::rt::run) with a
/// [`RuntimeConfig`](crate::rt::RuntimeConfig) (default: executors on
/// every usable core, stealing, FIFO). Installs the global allocator.
///
/// ```ignore
/// libos_async::main!(main_async);
/// libos_async::main!(main_async, RuntimeConfig::new().stealing(false));
/// async fn main_async(arg: u64) -> i32 { 0 }
/// ```
#[macro_export]
macro_rules! main {
    ($main:path) => {
        $crate::main!($main, $crate::rt::RuntimeConfig::new());
    };
    ($main:path, $config:expr) => {
        $crate::entry!(__libos_async_rt_main);
        fn __libos_async_rt_main(start_arg: u64) -> i32 {
            $crate::rt::run($config, $main(start_arg))
        }
    };
}
