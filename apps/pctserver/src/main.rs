//! `pctserver`: a target of protected control transfers and asynchronous
//! calls, for the tests and benchmarks. Start argument: bits 0..8 the
//! mode, bits 8..40 an environment id (picky mode).
//!
//! Its call handler answers message `m` from caller `c` with
//! `protocol::pct_reply(m, c)`, so a caller can check that every word of the
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

#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use libos_async::abi::{ANY_ENV, event::CALL};
use libos_async::check::{fail, require};
use libos_async::cpu::{self, Events, Received};
use libos_async::sys::{self, Message, probe};
use libos_async::{Pred, println};

libos_async::entry!(app_main);

mod protocol;
use protocol::{BAD, QUIT, WAKE, pct_reply};

static QUIT_SEEN: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);

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

fn wait_for_quit() -> i32 {
    while QUIT_SEEN.load(SeqCst) == 0 {
        let _ = Pred::word_ne(QUIT_SEEN.as_ptr() as u64, 0).sleep();
    }
    println!("pctserver {}: {} calls served", libos_async::env_id(), CALLS.load(SeqCst));
    0
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
        _ => fail(format_args!("pctserver: unknown mode {mode}")),
    }
    wait_for_quit()
}
