//! `yielder`: directed yield between two environments on one core.
//! Start argument: bit 0 the role, bits 32..64 the peer (source role).
//!
//! * **target** (role 0, started first): leaves the default round-robin on
//!   its core and holds no slot, so from then on it runs only when someone
//!   hands it time with `YieldTo`. It learns the source from the `CALL`
//!   event the source posts, then plays [`ROUNDS`] rounds of `YieldTo`
//!   back to the source, checking each one succeeds, and exits 0.
//! * **source** (role 1): posts its id to the target (`Acall`), then
//!   `YieldTo`s the target until it has ended. Also checks the errors:
//!   `YieldTo` a dead id → `NoSuchEnv`, to itself → `InvalidArgument`.
//!   Exits 0 if the target ran every round.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::abi::Error;
use libos_async::abi::event::CALL;
use libos_async::check::{Checks, fail, require};
use libos_async::cpu::{self, Events, Received};
use libos_async::{TEST_WAIT_MS, core_id, env_id, println, sys, wait_for_ms};

libos_async::entry!(app_main);

/// Directed yields each way.
const ROUNDS: u64 = 1000;

fn target() -> i32 {
    require("default_time off", cpu::default_time(core_id(), false));
    // From here on only a directed yield runs us.
    let _ = sys::yield_now();
    let mut events = Events::from_start();
    let source = loop {
        match events.next() {
            Some(Received::Event(e)) if e.kind == CALL => break e.data[0],
            Some(_) => {}
            None => fail(format_args!("yielder target: run without the source's event")),
        }
    };
    for round in 0..ROUNDS {
        if let Err(e) = cpu::yield_to(source) {
            fail(format_args!("yielder target: round {round}: yield_to source: {e:?}"));
        }
    }
    println!("yielder: target ran {ROUNDS} rounds, handed over by env {source}");
    0
}

fn source(peer: u64) -> i32 {
    let mut c = Checks::new();
    c.expect_err("yield_to a dead env", sys::yield_to(0xffff_fff0), Error::NoSuchEnv);
    c.expect_err("yield_to an absurd id", sys::yield_to(u64::MAX), Error::NoSuchEnv);
    c.expect_err("yield_to itself", sys::yield_to(env_id()), Error::InvalidArgument);
    require("acall target", cpu::acall(peer, env_id(), 0));
    let mut handed = 0u64;
    // The target ends after ROUNDS rounds; every successful yield_to ran it.
    let ended = wait_for_ms(TEST_WAIT_MS, || match cpu::yield_to(peer) {
        Ok(()) => {
            handed += 1;
            false
        }
        Err(Error::NoSuchEnv) => true,
        // Not runnable here at this instant (it is being started or ending).
        Err(_) => false,
    });
    c.check(ended, format_args!("target still alive after {handed} hand-overs"));
    c.check(
        handed >= ROUNDS,
        format_args!("only {handed} hand-overs for {ROUNDS} rounds of the target"),
    );
    println!("yielder: source handed its time over {handed} times");
    c.finish()
}

fn app_main(arg: u64) -> i32 {
    match arg & 1 {
        0 => target(),
        _ => source(arg >> 32),
    }
}
