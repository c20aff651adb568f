//! libos-async: the library operating system ring-3 applications link.
//!
//! The async runtime ([`rt`]: executors, tasks, ring futures, timers,
//! word watchers; [`main!`] declares an async `main`), the global
//! allocator ([`heap`]), channels between environments ([`channel`]), the
//! CPU and IPC calls ([`cpu`]), and underneath them the minimal runtime:
//!
//! - [`sys`]: the system calls (raw and typed), reads of the pages the
//!   kernel writes, and [`sys::probe`]; it calls nothing of the runtime;
//! - [`entry`](mod@entry): the entry points the kernel jumps to (`_start`,
//!   new vCPUs, exception upcalls, protected control transfers) and the
//!   user-space resumption of an upcall frame, which hand over to the
//!   runtime;
//! - [`ring`]: [`ring::Ring`], this vCPU's submission/completion ring over
//!   pages shared with the kernel (atomic and volatile accesses to those
//!   pages); [`sqe`] builds its entries;
//! - [`predicate`]: [`predicate::Pred`], an assembler for wakeup
//!   predicates (`SleepOn`);
//! - [`entry!`]: the application's `main(start_arg) -> i32`; `_start` runs it
//!   on the first vCPU and exits with its result;
//! - [`info`], [`core_id`], [`env_id`]: who and where we are;
//! - [`print!`] / [`println!`] and a panic handler (`panic in env E on core
//!   C: msg`, exit code 101);
//! - [`start_vcpu`]: more vCPUs, each on its own stack;
//! - [`set_exception_handler`]: exception upcalls (unhandled: exit 102);
//! - [`cpu`]: time slots and their upcalls, directed yield, protected
//!   control transfer (exit 105 if a reply fails), the event queue;
//! - [`layout`]: the address regions libos-async uses, and the scratch
//!   window it leaves to applications;
//! - [`vm`]: regions — reserved, lazily zero-filled, growable stacks,
//!   guard pages — filled by the page-fault upcall (the heap and vCPU
//!   stacks are regions);
//! - [`pager`]: the answer to the kernel's memory repossession — a free
//!   pool, an accessed-bit clock over regions, the repossession list;
//! - [`check`]: helpers for test applications;
//! - [`mod@bench`]: benchmark report lines for `cargo xtask bench`.
//!
//! Exit codes chosen by the library: 101 panic, 102 unhandled or
//! unresumable exception, 103 vCPU started without an entry, 104 out of
//! memory (an allocation failed, or no frame was left for a touched page:
//! [`heap::EXIT_OUT_OF_MEMORY`]), 105 a protected-control-transfer reply
//! refused by the kernel, 106 a guard page hit ([`vm::EXIT_GUARD_PAGE`]).
//!
//! `unsafe` is denied at the crate root and allowed, each with its reason,
//! on exactly these modules: [`sys`] (the `syscall` instruction, reads of
//! kernel pages, probes), [`entry`](mod@entry) (naked entry stubs),
//! [`ring`] (the ring pages the kernel writes), [`heap`] (the allocator's
//! free lists), [`percore`] (core-local storage's `Sync`),
//! [`channel::shm`] (shared channel frames and their fault fix-up),
//! [`vm::frames`] (the frame table's lazily mapped window), [`spawn`]
//! (the mapped initrd and the staging window it fills) and
//! [`rt::task`] (a task's future stored inline in its `Arc`, guarded by
//! the run state, and its waker vtable); everything else, the rest of the
//! runtime included, is safe code, and the compiler holds it to that.
//!
//! On the host everything compiles (so `cargo test`/`clippy --workspace`
//! work), but only the pure parts are meaningful.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod bench;
pub mod channel;
pub mod check;
pub mod console;
pub mod cpu;
#[allow(unsafe_code, reason = "naked entry stubs; resuming an upcall frame in user space")]
pub mod entry;
pub mod exception;
#[allow(unsafe_code, reason = "the register capture of fork (naked assembly)")]
pub mod fork;
#[allow(unsafe_code, reason = "the allocator's free lists live in the frames it maps")]
pub mod heap;
pub mod layout;
pub mod mem;
pub mod pager;
#[allow(unsafe_code, reason = "CoreLocal is Sync: each core touches only its own slot")]
pub mod percore;
pub mod predicate;
pub mod redirect;
#[allow(unsafe_code, reason = "atomic and volatile access to ring pages the kernel writes")]
pub mod ring;
pub mod rng;
pub mod rt;
pub mod shared;
pub mod signal;
#[allow(unsafe_code, reason = "reads of the mapped initrd; writes into the staging window")]
pub mod spawn;
pub mod sqe;
#[allow(unsafe_code, reason = "the syscall instruction, kernel-page reads, test probes")]
pub mod sys;
pub mod vcpu;
pub mod vector;
pub mod vm;

pub use abi;
pub use exception::{clear_exception_handler, set_exception_handler};
pub use predicate::Pred;
pub use ring::Ring;
pub use sys::{core_id, info};
pub use vcpu::start_vcpu;

/// This environment's id.
pub fn env_id() -> u64 {
    u64::from(info().env_id)
}

/// The cores this environment's vCPUs may run on, as a bit set: the user
/// cores of the info page, or every online core if that set is empty.
pub fn usable_cores() -> u64 {
    let info = info();
    let online =
        if info.cores as usize >= abi::MAX_CORES { u64::MAX } else { (1u64 << info.cores) - 1 };
    if info.user_cores == 0 { online } else { info.user_cores & online }
}

/// The usable cores other than the caller's, lowest first.
pub fn other_cores() -> impl Iterator<Item = usize> {
    let me = core_id();
    let usable = usable_cores();
    (0..abi::MAX_CORES).filter(move |&c| c != me && usable & (1 << c) != 0)
}

/// Yields up to `max` times until `done()` holds; returns whether it did.
/// The bounded wait every application uses instead of spinning.
pub fn wait_until(max: u64, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..max {
        if done() {
            return true;
        }
        let _ = sys::yield_now();
    }
    done()
}

/// How long one wait in a test program may take: the kernel's test harness
/// allows 120 s per environment, and TCG with 8 busy vCPUs on 2 host cores
/// is slow.
pub const TEST_WAIT_MS: u64 = 100_000;

/// Yields until `done()` holds or `ms` milliseconds of TSC time have
/// passed; returns whether it held. For waits whose length depends on other
/// cores getting the (possibly overcommitted) host CPU.
pub fn wait_for_ms(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let ticks = info().tsc_hz.saturating_mul(ms) / 1000;
    let deadline = sys::rdtsc().saturating_add(ticks);
    while sys::rdtsc() < deadline {
        if done() {
            return true;
        }
        let _ = sys::yield_now();
    }
    done()
}

/// Spins (with `pause`) up to a million turns until `done()` holds, then
/// waits yielding for up to `ms` milliseconds; whether it held. For a
/// partner on another core that usually answers within microseconds
/// (benchmarks), where a yield would add a scheduling round to the figure.
pub fn spin_until(ms: u64, done: impl Fn() -> bool) -> bool {
    for _ in 0..1_000_000 {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    wait_for_ms(ms, done)
}

/// Finds the environment started from application `name`, waiting up to
/// `ms` milliseconds for it to appear (it may be started after the caller).
pub fn find_env(name: &str, ms: u64) -> Result<u64, abi::Error> {
    let mut found = Err(abi::Error::NoSuchEnv);
    wait_for_ms(ms, || {
        found = sys::env_lookup(name);
        found.is_ok()
    });
    found
}

/// Declares the application's main function, `fn(start_arg: u64) -> i32`:
/// the environment exits with its result. Also installs libos-async's
/// global allocator ([`heap::FrameHeap`]), unless the second argument
/// `custom_allocator` says the application brings its own.
///
/// ```ignore
/// libos_async::entry!(app_main);
/// fn app_main(_arg: u64) -> i32 { 0 }
/// ```
///
/// On the bare-metal target this links the function to `_start`; on the host
/// it defines a `main` that says the app only runs under the kernel. The
/// application's crate root needs
/// `#![cfg_attr(target_os = "none", no_std, no_main)]`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        $crate::global_allocator!();
        $crate::entry!($main, custom_allocator);
    };
    ($main:path, custom_allocator) => {
        #[cfg(target_os = "none")]
        #[unsafe(no_mangle)]
        fn __libos_async_main(start_arg: u64) -> i32 {
            let main: fn(u64) -> i32 = $main;
            main(start_arg)
        }

        #[cfg(not(target_os = "none"))]
        fn main() {
            let _main: fn(u64) -> i32 = $main;
            eprintln!("this application runs only on x86_64-unknown-none, under the exokernel");
            std::process::exit(2);
        }
    };
}
