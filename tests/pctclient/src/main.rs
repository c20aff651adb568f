//! `pctclient`: makes protected control transfers and asynchronous calls
//! to `pctserver`s, for the tests. Start argument: bits 0..16 the echo
//! server, 16..32 the picky server, 32..48 the faulty server, 48..56 log2
//! of the number of calls, 56..64 the mode.
//!
//! * mode 0, **calls**: once the echo and faulty servers have registered
//!   their entries (their first call is no longer `Refused`), `2^n` calls
//!   to the echo server with random
//!   messages, each reply checked word by word; then the errors: the picky
//!   server refuses us (`Refused`), a dead or absurd id is `NoSuchEnv`, an
//!   environment without an entry (ourselves) is `Refused`, `Reply` outside
//!   a call is `InvalidArgument`; the faulty server dies inside our call
//!   (`CallFailed`) and we carry on: the echo server still answers. Last, a
//!   `QUIT` call ends the echo server. Exit 0 iff every check passed.
//! * mode 1, **async**: one `Acall` carrying `[WAKE, tsc]` to the waiter
//!   (in the echo field), plus `Acall` to a dead id (`NoSuchEnv`).
//! * mode 2, **shared core** (beside another caller on this core, calling
//!   the slow echo server, `pctserver` mode 4, on this core too): `2^n`
//!   calls whose word 0 is our id, the rest random; `Busy` (the target's
//!   IPC stack on this core is in use by a preempted call) is retried
//!   after a yield, any other error or a reply that is not exactly ours is
//!   a failure; then one `QUIT` call.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::abi::Error;
use libos_async::check::Checks;
use libos_async::cpu;
use libos_async::rng::Rng;
use libos_async::sys::{self, Message, rdtsc};
use libos_async::{TEST_WAIT_MS, env_id, println, wait_for_ms};
use pct_proto::{BAD, QUIT, WAKE, pct_reply};

libos_async::entry!(app_main);

const DEAD: u64 = 0xffff_fff0;

/// Waits until `server` has registered its entry (it may start after us).
fn wait_ready(server: u64) {
    let ready = wait_for_ms(TEST_WAIT_MS, || cpu::call(server, &[0; 8]) != Err(Error::Refused));
    if !ready {
        println!("pctclient: env {server} never registered its IPC entry");
    }
}

fn calls(c: &mut Checks, echo: u64, picky: u64, faulty: u64, rounds: u64) {
    let me = env_id();
    wait_ready(echo);
    wait_ready(faulty);
    let mut rng = Rng::new(0x9e37_79b9 ^ me);
    let mut bad = 0u64;
    for round in 0..rounds {
        let msg: Message = core::array::from_fn(|_| rng.next_u64());
        let msg = if msg[0] == QUIT || msg[0] == BAD { [round; 8] } else { msg };
        match cpu::call(echo, &msg) {
            Ok(reply) if reply == pct_reply(&msg, me) => {}
            other => {
                bad += 1;
                if bad <= 3 {
                    println!("pctclient: round {round}: {msg:x?} -> {other:x?}");
                }
            }
        }
    }
    c.check(bad == 0, format_args!("{bad} of {rounds} calls came back wrong"));
    println!("pctclient: {rounds} calls, every word of every reply checked");
    let call = |target| cpu::call(target, &[1; 8]).map(|_| 0);
    c.expect_err("call the picky server", call(picky), Error::Refused);
    c.expect_err("call a dead id", call(DEAD), Error::NoSuchEnv);
    c.expect_err("call an absurd id", call(u64::MAX), Error::NoSuchEnv);
    c.expect_err("call an env without an entry", call(me), Error::Refused);
    c.check(
        sys::reply(&[0; 8]) == Error::InvalidArgument,
        format_args!("reply outside a call is InvalidArgument"),
    );
    let mut died = [0u64; 8];
    died[0] = BAD;
    c.expect_err(
        "call into a target that faults",
        cpu::call(faulty, &died).map(|_| 0),
        Error::CallFailed,
    );
    let msg = [7; 8];
    c.check(
        cpu::call(echo, &msg) == Ok(pct_reply(&msg, me)),
        format_args!("the echo server answers after the faulty one died"),
    );
    let mut quit = [0u64; 8];
    quit[0] = QUIT;
    c.expect_ok("quit the echo server", cpu::call(echo, &quit).map(|_| 0));
}

/// Mode 2: `call` that retries `Busy` after a yield (bounded).
fn call_retrying_busy(target: u64, msg: &Message, busy: &mut u64) -> Result<Message, Error> {
    let mut got = cpu::call(target, msg);
    wait_for_ms(TEST_WAIT_MS, || {
        if got != Err(Error::Busy) {
            return true;
        }
        *busy += 1;
        got = cpu::call(target, msg);
        got != Err(Error::Busy)
    });
    got
}

fn shared_core(c: &mut Checks, server: u64, rounds: u64) {
    let me = env_id();
    let ready = wait_for_ms(TEST_WAIT_MS, || {
        let mut probe = [0; 8];
        probe[0] = me;
        !matches!(cpu::call(server, &probe), Err(Error::Refused))
    });
    c.check(ready, format_args!("env {server} never registered its IPC entry"));
    let mut rng = Rng::new(0x2545_f491 ^ me ^ rdtsc());
    let (mut bad, mut busy) = (0u64, 0u64);
    let t0 = rdtsc();
    for round in 0..rounds {
        let mut msg: Message = core::array::from_fn(|_| rng.next_u64());
        msg[0] = me;
        match call_retrying_busy(server, &msg, &mut busy) {
            Ok(reply) if reply == pct_reply(&msg, me) => {}
            other => {
                bad += 1;
                if bad <= 3 {
                    println!("pctclient {me}: round {round}: {msg:x?} -> {other:x?}");
                }
            }
        }
    }
    c.check(bad == 0, format_args!("{bad} of {rounds} calls came back wrong"));
    println!(
        "pctclient {me}: {rounds} calls on a shared core, {bad} wrong, {busy} Busy retried, \
         {} ms",
        (rdtsc() - t0) / (libos_async::info().tsc_hz / 1000).max(1)
    );
    let mut quit = [0u64; 8];
    quit[0] = QUIT;
    c.expect_ok("quit", call_retrying_busy(server, &quit, &mut busy).map(|_| 0));
}

fn app_main(arg: u64) -> i32 {
    let echo = arg & 0xffff;
    let picky = (arg >> 16) & 0xffff;
    let faulty = (arg >> 32) & 0xffff;
    let rounds = 1u64 << ((arg >> 48) & 0xff).min(24);
    let mut c = Checks::new();
    match arg >> 56 {
        0 => calls(&mut c, echo, picky, faulty, rounds),
        2 => shared_core(&mut c, echo, rounds),
        _ => {
            c.expect_err("acall a dead id", cpu::acall(DEAD, WAKE, 0).map(|_| 0), Error::NoSuchEnv);
            c.expect_ok("acall the waiter", cpu::acall(echo, WAKE, rdtsc()).map(|_| 0));
        }
    }
    c.finish()
}
