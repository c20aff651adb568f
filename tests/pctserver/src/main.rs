//! `pctserver`: a target of protected control transfers and asynchronous
//! calls, for the tests and benchmarks. Start argument: bits 0..8 the
//! mode, bits 8..40 an environment id (picky mode).
//!
//! Its call handler answers message `m` from caller `c` with
//! `pct_proto::pct_reply(m, c)`, so a caller can check that every word of the
//! message and of the reply crossed intact. A message whose first word is
//! `QUIT` makes the first vCPU exit 0 (the handler runs on the caller's
//! core; the first vCPU sleeps on a predicate over a word the handler
//! sets).
//!
//! Modes:
//! * 0, **echo**: accepts everyone;
//! * 1, **faulty**: a message starting with `BAD` makes the handler read
//!   address 0: with no exception handler the kernel kills this
//!   environment in the middle of the call;
//! * 2, **picky**: accepts only the environment named in the argument;
//! * 3, **waiter**: no call entry; sleeps until an event arrives and exits
//!   0 if it is a `CALL` event carrying `[WAKE, _]` from someone.
//! * 4, **slow echo** (with `pctclient` mode 2; bits 8..16 of the argument:
//!   how many `QUIT` calls end it): the handler checks that the caller
//!   identity the kernel passed (rdi at IPC entry) is the one the caller
//!   put in word 0, keeps the message in a buffer on its IPC stack and
//!   spins there for half a slot (so that calls are preempted at slot
//!   ends), re-checking the buffer, and builds the reply from it: if a
//!   second call on the same core reuses the stack of one that is
//!   preempted, the buffer — and so the reply — carries the other
//!   caller's words. Exits 1 if it saw a wrong identity or a changed
//!   buffer.
//!
//! Unsafe code is denied but in `slow` (mode 4): volatile accesses to its
//! stack buffer, so that the buffer really sits in memory on the IPC stack
//! where a second call reusing that stack would overwrite it.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use libos_async::abi::{ANY_ENV, event::CALL};
use libos_async::check::{fail, require};
use libos_async::cpu::{self, Events, Received};
use libos_async::sys::{self, Message, probe};
use libos_async::{Pred, println};
use pct_proto::{BAD, QUIT, WAKE, pct_reply};

libos_async::entry!(app_main);

static QUIT_SEEN: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);
/// Mode 4: QUIT calls that end the server.
static QUITS_NEEDED: AtomicU64 = AtomicU64::new(1);
static QUITS: AtomicU64 = AtomicU64::new(0);
/// Mode 4: calls whose caller identity or stack buffer was wrong.
static WRONG_CALLER: AtomicU64 = AtomicU64::new(0);
static CLOBBERED: AtomicU64 = AtomicU64::new(0);
/// Mode 4: how long a call spins, TSC ticks.
static SPIN: AtomicU64 = AtomicU64::new(0);

fn echo(caller: u64, msg: Message) -> Message {
    CALLS.fetch_add(1, SeqCst);
    if msg[0] == QUIT {
        QUIT_SEEN.store(1, SeqCst);
    }
    pct_reply(&msg, caller)
}

fn faulty(caller: u64, msg: Message) -> Message {
    if msg[0] == BAD {
        // A fault inside the call, with no exception handler: fatal.
        let _ = probe::read(0);
    }
    echo(caller, msg)
}

#[allow(unsafe_code, reason = "volatile accesses keep the buffer on the IPC stack")]
fn slow(caller: u64, msg: Message) -> Message {
    if msg[0] == QUIT {
        if QUITS.fetch_add(1, SeqCst) + 1 >= QUITS_NEEDED.load(SeqCst) {
            QUIT_SEEN.store(1, SeqCst);
        }
        return pct_reply(&msg, caller);
    }
    CALLS.fetch_add(1, SeqCst);
    if msg[0] != caller && WRONG_CALLER.fetch_add(1, SeqCst) < 4 {
        println!("CHECK FAILED: pctserver: call from env {caller} carries env {}", msg[0]);
    }
    // The message lives on this call's IPC stack while we spin.
    let mut kept = [0u64; 8];
    for (k, &m) in kept.iter_mut().zip(&msg) {
        // SAFETY: a write to a local array element.
        unsafe { core::ptr::write_volatile(k, m) };
    }
    let read = |kept: &[u64; 8]| -> Message {
        // SAFETY: volatile reads of a local array (forces it into memory).
        core::array::from_fn(|i| unsafe { core::ptr::read_volatile(&kept[i]) })
    };
    let end = sys::rdtsc() + SPIN.load(SeqCst);
    let mut changed = false;
    while sys::rdtsc() < end {
        changed |= read(&kept) != msg;
    }
    let now = read(&kept);
    if (changed || now != msg) && CLOBBERED.fetch_add(1, SeqCst) < 4 {
        println!(
            "CHECK FAILED: pctserver: call from env {caller}: stack buffer {now:x?}, was {msg:x?}"
        );
    }
    pct_reply(&now, caller)
}

fn wait_for_quit() -> i32 {
    while QUIT_SEEN.load(SeqCst) == 0 {
        let _ = Pred::word_ne(QUIT_SEEN.as_ptr() as u64, 0).sleep();
    }
    let (wrong, clobbered) = (WRONG_CALLER.load(SeqCst), CLOBBERED.load(SeqCst));
    println!(
        "pctserver {}: {} calls served, {wrong} with a wrong caller, {clobbered} with a changed stack",
        libos_async::env_id(),
        CALLS.load(SeqCst)
    );
    i32::from(wrong + clobbered != 0)
}

fn waiter() -> i32 {
    let mut events = Events::from_start();
    loop {
        let seen = sys::event_tail();
        for got in events.by_ref() {
            match got {
                Received::Event(e) if e.kind == CALL && e.data[0] == WAKE => {
                    println!("pctserver: woken by an asynchronous call from env {}", e.source);
                    return 0;
                }
                other => println!("pctserver: unexpected event {other:?}"),
            }
        }
        require("sleep for an event", Pred::events_ne(seen).sleep());
    }
}

fn app_main(arg: u64) -> i32 {
    let mode = arg & 0xff;
    match mode {
        0 => require("serve_calls", cpu::serve_calls(echo)),
        1 => require("serve_calls", cpu::serve_calls(faulty)),
        2 => {
            require("accept nobody", cpu::accept(ANY_ENV, false));
            require("accept one", cpu::accept((arg >> 8) & 0xffff_ffff, true));
            require("serve_calls", cpu::serve_calls(echo));
        }
        3 => return waiter(),
        4 => {
            QUITS_NEEDED.store((arg >> 8) & 0xff, SeqCst);
            SPIN.store(
                libos_async::info().tsc_hz / 2_000_000 * u64::from(libos_async::info().slot_us),
                SeqCst,
            );
            require("serve_calls", cpu::serve_calls(slow));
        }
        _ => fail(format_args!("pctserver: unknown mode {mode}")),
    }
    wait_for_quit()
}
