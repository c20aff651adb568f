//! `sigtest`: signals between environments (`abi::signal`).
//!
//! - arg 0: posts to itself: the upcall comes on the way back from
//!   `SignalPost` with the bits in `error_code`; a post from inside the
//!   handler is not delivered nested (upcalls are masked) but right after
//!   `RESUME`; `MASK` holds bits back and `UNMASK` delivers them; without
//!   an entry the bits accumulate, one `SIGNAL` event per transition, and
//!   `TAKE` returns them; bits 0 is a probe (no upcall, nothing pending);
//!   refusals: no such environment, a destroyed child; a live child of its
//!   own family may be signalled.
//! - arg 1: a vCPU on another core computing with no system call is
//!   interrupted promptly; a vCPU asleep in `SleepOn` on a predicate that
//!   never holds gets `Interrupted`.
//! - arg 2: flooding: 20,000 posts at a busy vCPU on another core; it
//!   takes at most as many upcalls, at least one, keeps running, and no
//!   event is queued (it has an entry).
//! - arg 3: (beside `worker`) signalling another family's environment is
//!   `PermissionDenied`; the worker is untouched.
//! - arg 4: an entry registered with an unmapped exception stack: the post
//!   to itself kills it with a reason (never the kernel).
//! - arg 5: `ChildSignal`: the bits come when a child is reclaimed, not
//!   before its status can be read, once per child; 0 stops them; bits of
//!   another kind of post are not mixed in.
//!
//! Exits 0 if every check passed.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos_async::abi::{Error, UpcallFrame, vector};
use libos_async::check::{Checks, require};
use libos_async::signal as sig;
use libos_async::{Pred, sys};

libos_async::entry!(app_main);

/// Upcalls handled, the bits they carried, the deepest nesting seen.
static UPCALLS: AtomicU64 = AtomicU64::new(0);
static BITS: AtomicU64 = AtomicU64::new(0);
static DEPTH: AtomicU64 = AtomicU64::new(0);
static MAX_DEPTH: AtomicU64 = AtomicU64::new(0);
static BAD_VECTOR: AtomicU64 = AtomicU64::new(0);
/// Post this to itself from inside the next upcall (0: nothing).
static REPOST: AtomicU64 = AtomicU64::new(0);
/// Set by the handler: a busy vCPU stops spinning.
static STOP: AtomicU64 = AtomicU64::new(0);
/// The spinner's progress: 1 spinning, 2 out of the loop, 3 asleep, then
/// 10 + the sleep's error code (or 100 if the sleep returned Ok).
static SPINNER: AtomicU64 = AtomicU64::new(0);
/// A word that never changes (a predicate that never holds).
static NEVER: AtomicU64 = AtomicU64::new(0);

fn handler(frame: &mut UpcallFrame) -> ! {
    if frame.vector != vector::SIGNAL {
        BAD_VECTOR.store(frame.vector, SeqCst);
    }
    let d = DEPTH.fetch_add(1, SeqCst) + 1;
    MAX_DEPTH.fetch_max(d, SeqCst);
    UPCALLS.fetch_add(1, SeqCst);
    BITS.fetch_or(frame.error_code, SeqCst);
    STOP.store(1, SeqCst);
    let again = REPOST.swap(0, SeqCst);
    if again != 0 {
        let _ = sig::post(me(), again);
    }
    DEPTH.fetch_sub(1, SeqCst);
    let e = sig::resume(frame);
    libos_async::check::fail(format_args!("signal resume failed: {e:?}"))
}

fn me() -> u64 {
    u64::from(sys::info().env_id)
}

/// Another user core than this one.
fn other_core() -> usize {
    let mine = sys::core_id();
    let cores = sys::info().user_cores;
    (0..64)
        .find(|&c| c != mine && cores & (1 << c) != 0)
        .unwrap_or_else(|| libos_async::check::fail(format_args!("no second user core")))
}

/// Waits (yielding) until `cond` or about a second passes.
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let end = sys::rdtsc() + sys::info().tsc_hz;
    while !cond() {
        if sys::rdtsc() > end {
            return false;
        }
        let _ = sys::yield_now();
    }
    true
}

/// The other core's vCPU: spins with no system call until the handler
/// stops it, then sleeps on a predicate that never holds.
fn spinner(_: u64) -> ! {
    SPINNER.store(1, SeqCst);
    while STOP.load(SeqCst) == 0 {
        core::hint::spin_loop();
    }
    SPINNER.store(2, SeqCst);
    SPINNER.store(3, SeqCst);
    let r = Pred::word_ne(NEVER.as_ptr() as u64, 0).sleep();
    SPINNER.store(r.map_or_else(|e| 10 + e as u64, |_| 100), SeqCst);
    sys::vcpu_exit()
}

/// A vCPU that spins until told to stop (the flood's target).
fn busy(_: u64) -> ! {
    SPINNER.store(1, SeqCst);
    while NEVER.load(SeqCst) == 0 {
        core::hint::spin_loop();
    }
    SPINNER.store(2, SeqCst);
    sys::vcpu_exit()
}

fn self_signals(c: &mut Checks) {
    // Without an entry: bits accumulate, one event for the transition.
    let tail = sys::event_tail();
    c.expect_ok("post to self, no entry", sig::post(me(), 0b01).map(u64::from));
    c.expect_ok("again", sig::post(me(), 0b10).map(u64::from));
    c.check(sys::event_tail() == tail + 1, format_args!("events {}", sys::event_tail() - tail));
    c.check(sig::take() == 0b11, format_args!("TAKE"));
    c.check(sig::take() == 0, format_args!("TAKE again"));

    require("entry", sig::set_signal_handler(handler, 0));
    let r = sig::post(me(), 0b100);
    c.check(r == Ok(true), format_args!("post with an entry: {r:?}"));
    c.check(UPCALLS.load(SeqCst) == 1, format_args!("upcalls {}", UPCALLS.load(SeqCst)));
    c.check(BITS.load(SeqCst) == 0b100, format_args!("bits {:#x}", BITS.load(SeqCst)));
    c.check(sys::event_tail() == tail + 1, format_args!("an event with an entry"));

    // A post from inside the handler waits for its RESUME.
    REPOST.store(0b1000, SeqCst);
    let _ = sig::post(me(), 0b1);
    c.check(UPCALLS.load(SeqCst) == 3, format_args!("repost: upcalls {}", UPCALLS.load(SeqCst)));
    c.check(MAX_DEPTH.load(SeqCst) == 1, format_args!("nested {}", MAX_DEPTH.load(SeqCst)));

    // MASK holds them back, UNMASK delivers.
    let ctl = |op| abi_ctl(op);
    c.expect_ok("MASK", ctl(libos_async::abi::signal::MASK));
    let _ = sig::post(me(), 0b10000);
    c.check(UPCALLS.load(SeqCst) == 3, format_args!("delivered while masked"));
    c.expect_ok("UNMASK", ctl(libos_async::abi::signal::UNMASK));
    c.check(UPCALLS.load(SeqCst) == 4, format_args!("unmask: upcalls {}", UPCALLS.load(SeqCst)));
    c.check(BITS.load(SeqCst) & 0b10000 != 0, format_args!("unmask bits"));
    c.expect_err("unknown op", ctl(9), Error::InvalidArgument);

    // A probe: the checks only, nothing posted (no upcall, nothing pending).
    let before = UPCALLS.load(SeqCst);
    let r = sig::post(me(), 0);
    c.check(r == Ok(true), format_args!("probe of itself: {r:?}"));
    c.check(UPCALLS.load(SeqCst) == before, format_args!("a probe made an upcall"));
    c.expect_err(
        "probe of no env",
        sig::post(u64::from(u32::MAX), 0).map(u64::from),
        Error::NoSuchEnv,
    );
    // Refusals.
    c.expect_err("no such env", sig::post(u64::from(u32::MAX), 1).map(u64::from), Error::NoSuchEnv);
    c.expect_err("not an id", sig::post(1 << 40, 1).map(u64::from), Error::NoSuchEnv);
    let child = require("env_create", sys::env_create(16));
    let r = sig::post(child, 1);
    c.check(r == Ok(false), format_args!("post to a child: {r:?}"));
    require("child_destroy", sys::child_destroy(child));
    c.check(
        wait_for(|| sig::post(child, 1) == Err(Error::NoSuchEnv)),
        format_args!("a destroyed child can still be signalled"),
    );
    c.check(BAD_VECTOR.load(SeqCst) == 0, format_args!("vector {}", BAD_VECTOR.load(SeqCst)));
}

fn abi_ctl(op: u64) -> Result<u64, Error> {
    libos_async::abi::decode(sys::syscall2(54, op, 0))
}

fn interrupts(c: &mut Checks) {
    let core = other_core();
    require("entry", sig::set_signal_handler(handler, 1 << core));
    require("spinner", libos_async::start_vcpu(core, spinner, 0));
    c.check(wait_for(|| SPINNER.load(SeqCst) == 1), format_args!("spinner never started"));
    // It computes; a post must interrupt it on its core.
    let r = sig::post(me(), 1);
    c.check(r == Ok(true), format_args!("post: {r:?}"));
    c.check(wait_for(|| SPINNER.load(SeqCst) >= 3), format_args!("busy vCPU not interrupted"));
    // Now asleep on a predicate that never holds: cut short.
    let asleep_since = sys::rdtsc();
    while sys::rdtsc() - asleep_since < sys::info().tsc_hz / 100 {
        let _ = sys::yield_now();
    }
    let _ = sig::post(me(), 2);
    c.check(
        wait_for(|| SPINNER.load(SeqCst) >= 10),
        format_args!("SleepOn not cut short: {}", SPINNER.load(SeqCst)),
    );
    let got = SPINNER.load(SeqCst);
    c.check(
        got == 10 + Error::Interrupted as u64,
        format_args!("SleepOn ended with {got} instead of Interrupted"),
    );
    c.check(UPCALLS.load(SeqCst) == 2, format_args!("upcalls {}", UPCALLS.load(SeqCst)));
}

fn flood(c: &mut Checks) {
    let core = other_core();
    require("entry", sig::set_signal_handler(handler, 1 << core));
    require("busy", libos_async::start_vcpu(core, busy, 0));
    c.check(wait_for(|| SPINNER.load(SeqCst) == 1), format_args!("busy vCPU never started"));
    let tail = sys::event_tail();
    const POSTS: u64 = 20_000;
    for i in 0..POSTS {
        if sig::post(me(), 1 << (i % 64)).is_err() {
            c.check(false, format_args!("post {i} failed"));
            break;
        }
    }
    c.check(wait_for(|| BITS.load(SeqCst) == u64::MAX), format_args!("bits lost"));
    let n = UPCALLS.load(SeqCst);
    c.check((1..=POSTS).contains(&n), format_args!("{n} upcalls for {POSTS} posts"));
    c.check(sys::event_tail() == tail, format_args!("events queued by a flood"));
    NEVER.store(1, SeqCst);
    c.check(wait_for(|| SPINNER.load(SeqCst) == 2), format_args!("busy vCPU held hostage"));
    libos_async::println!("sigtest: {n} upcalls for {POSTS} posts");
}

/// `ChildSignal` (no entry here: the bits accumulate and `TAKE` reads them).
fn child_signal(c: &mut Checks) {
    const CHLD: u64 = 1 << 16;
    let _ = sig::take();
    require("on_child_end", sig::on_child_end(CHLD));
    for round in 0..3 {
        let child = require("env_create", sys::env_create(16));
        c.check(sig::take() == 0, format_args!("round {round}: bits before the child's end"));
        require("child_destroy", sys::child_destroy(child));
        let mut bits = 0;
        let came = wait_for(|| {
            bits |= sig::take();
            bits != 0
        });
        // Posted after the status is published: readable at once.
        let status = sys::child_status(child);
        c.check(came && bits == CHLD, format_args!("round {round}: bits {bits:#x}"));
        c.check(status.is_ok(), format_args!("round {round}: status after the bits: {status:?}"));
    }
    // Another post keeps its own bits.
    require("post", sig::post(me(), 2));
    let child = require("env_create", sys::env_create(16));
    require("child_destroy", sys::child_destroy(child));
    let mut bits = 0;
    wait_for(|| {
        bits |= sig::take();
        bits & CHLD != 0
    });
    c.check(bits == CHLD | 2, format_args!("mixed posts: {bits:#x}"));
    // Off: a child's end posts nothing.
    require("off", sig::on_child_end(0));
    let child = require("env_create", sys::env_create(16));
    require("child_destroy", sys::child_destroy(child));
    c.check(wait_for(|| sys::child_status(child).is_ok()), format_args!("status"));
    let bits = sig::take();
    c.check(bits == 0, format_args!("bits with ChildSignal off: {bits:#x}"));
}

fn app_main(arg: u64) -> i32 {
    let mut c = Checks::new();
    match arg {
        0 => self_signals(&mut c),
        1 => interrupts(&mut c),
        2 => flood(&mut c),
        3 => {
            let mut worker = Err(Error::NoSuchEnv);
            wait_for(|| {
                worker = sys::env_lookup("worker");
                worker.is_ok()
            });
            let worker = require("worker", worker);
            let r = sig::post(worker, 1).map(u64::from);
            c.expect_err("another family", r, Error::PermissionDenied);
        }
        5 => child_signal(&mut c),
        4 => {
            require("entry", sig::set_signal_handler(handler, 0));
            // Exception stacks where nothing is mapped.
            require("stack", sys::set_exception_handler(0x40_0000, 0x7000_0000_0000, 0));
            let _ = sig::post(me(), 1);
            c.check(false, format_args!("survived an unwritable exception stack"));
        }
        _ => {
            c.check(false, format_args!("unknown arg {arg}"));
        }
    }
    c.finish()
}
