//! `console_thief`: console input is a capability (`ConsoleRead`,
//! `ConsoleGive`). Run by the kernel test
//! `console_input_only_the_reader_gets_keystrokes`, which makes start
//! argument 1 the console reader, starts argument 0 beside it, then types
//! [`SECRET`] into the console buffer.
//!
//! - **0, the thief**: for a while, on every core it can, tries to take
//!   the keystrokes: `ConsoleRead` with good and bad buffers and lengths
//!   (always `PermissionDenied`, or `InvalidArgument` for a length over
//!   the maximum), `ConsoleGive` to itself and to made-up children
//!   (`PermissionDenied`); its `InfoPage::console_input` must stay 0. Exits
//!   0 if no byte ever came, 1 otherwise.
//! - **1, the reader**: sleeps on its `console_input` until input comes,
//!   checks that a bad buffer is `BadAddress` and loses nothing, that a
//!   length over the maximum is `InvalidArgument`, that `ConsoleGive` to
//!   itself or to nobody is refused, then reads until it has
//!   [`SECRET`]. Exits 0 if it got exactly that, 1 otherwise.
//! - **2, the giver**: once the reader, forks; the child runs as 1 does,
//!   the parent hands it the console (`ConsoleGive`), checks that it no
//!   longer reads it itself, waits for the child's exit (0) and checks the
//!   console came back to it.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::abi::{self, CONSOLE_READ_MAX, Error};
use libos_async::check::Checks;
use libos_async::{Pred, info, println, sys};

libos_async::entry!(app_main);

/// What the test types.
pub const SECRET: &[u8] = b"secret-keystrokes\n";

/// The thief's attempts.
const ATTEMPTS: u32 = 20_000;

fn app_main(arg: u64) -> i32 {
    match arg {
        0 => thief(),
        1 => reader(),
        2 => giver(),
        _ => 2,
    }
}

fn thief() -> i32 {
    let mut c = Checks::new();
    let mut buf = [0u8; CONSOLE_READ_MAX as usize];
    let mut got = 0u64;
    for i in 0..ATTEMPTS {
        let len = match i % 4 {
            0 => 1,
            1 => CONSOLE_READ_MAX,
            2 => 0,
            _ => CONSOLE_READ_MAX + 1 + u64::from(i),
        };
        let r = if len <= CONSOLE_READ_MAX {
            sys::console_read(&mut buf[..len as usize])
        } else {
            abi::decode(sys::syscall2(
                abi::Syscall::ConsoleRead as u64,
                buf.as_mut_ptr() as u64,
                len,
            ))
        };
        let want =
            if len > CONSOLE_READ_MAX { Error::InvalidArgument } else { Error::PermissionDenied };
        if let Ok(n) = r {
            got += n;
        }
        if !c.expect_err("ConsoleRead by a non-reader", r, want) {
            break;
        }
        // A bad pointer changes nothing either.
        let bad = abi::decode(sys::syscall2(abi::Syscall::ConsoleRead as u64, 0, 8));
        if !c.expect_err("ConsoleRead(null)", bad, Error::PermissionDenied) {
            break;
        }
        let give = sys::console_give(u64::from(info().env_id) + u64::from(i % 8));
        if !c.expect_err("ConsoleGive by a non-reader", give, Error::PermissionDenied) {
            break;
        }
        if i % 64 == 0 {
            let _ = sys::yield_now();
        }
    }
    c.check(got == 0, format_args!("the thief read {got} bytes"));
    c.check(
        sys::console_input() == 0,
        format_args!("the thief's console_input is {}", sys::console_input()),
    );
    println!("console_thief: {} attempts refused", ATTEMPTS);
    c.finish()
}

fn reader() -> i32 {
    let mut c = Checks::new();
    let mut got = alloc_buf();
    let mut buf = [0u8; CONSOLE_READ_MAX as usize];
    let deadline = sys::rdtsc() + info().tsc_hz * 120;
    // The kernel test makes us the reader just after starting us.
    while sys::console_read(&mut []).is_err() {
        if sys::rdtsc() > deadline {
            c.check(false, format_args!("never became the console reader"));
            return c.finish();
        }
        let _ = sys::yield_now();
    }
    // Length over the maximum: refused before anything.
    let r = abi::decode(sys::syscall2(
        abi::Syscall::ConsoleRead as u64,
        buf.as_mut_ptr() as u64,
        CONSOLE_READ_MAX + 1,
    ));
    c.expect_err("ConsoleRead over the maximum", r, Error::InvalidArgument);
    // Not a child of ours: refused, and we stay the reader.
    let me = u64::from(info().env_id);
    c.expect_err("ConsoleGive to itself", sys::console_give(me), Error::NotOwner);
    c.expect_err("ConsoleGive to nobody", sys::console_give(1 << 31), Error::NoSuchEnv);
    let mut bad_tried = false;
    while got.1 < SECRET.len() && sys::rdtsc() < deadline {
        let seen = sys::console_input();
        if !bad_tried {
            // Once input waits, a bad buffer is refused and loses none of
            // it (the final comparison says so); before, there is nothing
            // to copy (0).
            match abi::decode(sys::syscall2(abi::Syscall::ConsoleRead as u64, 0, 8)) {
                Err(Error::BadAddress) => bad_tried = true,
                Ok(0) => {}
                other => {
                    c.check(false, format_args!("ConsoleRead(null): {other:?}"));
                    bad_tried = true;
                }
            }
        }
        match sys::console_read(&mut buf) {
            Ok(0) => {
                if Pred::console_input_ne(seen).either(Pred::deadline(deadline)).sleep().is_err() {
                    let _ = sys::yield_now();
                }
            }
            Ok(n) => {
                let n = n as usize;
                let room = got.0.len() - got.1;
                let take = n.min(room);
                got.0[got.1..got.1 + take].copy_from_slice(&buf[..take]);
                got.1 += take;
            }
            Err(e) => {
                c.check(false, format_args!("the reader's ConsoleRead: {e:?}"));
                break;
            }
        }
    }
    c.check(bad_tried, format_args!("no input came to try a bad buffer with"));
    c.check(
        &got.0[..got.1] == SECRET,
        format_args!("the reader got {:?}", core::str::from_utf8(&got.0[..got.1])),
    );
    c.finish()
}

fn giver() -> i32 {
    let mut c = Checks::new();
    let deadline = sys::rdtsc() + info().tsc_hz * 120;
    while sys::console_read(&mut []).is_err() {
        if sys::rdtsc() > deadline {
            c.check(false, format_args!("never became the console reader"));
            return c.finish();
        }
        let _ = sys::yield_now();
    }
    let child = match libos_async::fork::fork(0) {
        Ok(Some(child)) => child,
        Ok(None) => sys::exit(reader() as u64),
        Err(e) => {
            c.check(false, format_args!("fork: {e:?}"));
            return c.finish();
        }
    };
    c.expect_ok("ConsoleGive to our child", sys::console_give(child));
    c.expect_err("ConsoleRead after giving", sys::console_read(&mut []), Error::PermissionDenied);
    c.expect_err("ConsoleGive after giving", sys::console_give(child), Error::PermissionDenied);
    let status = libos_async::fork::wait(child);
    c.check(status == Ok(0), format_args!("the child's status: {status:?}"));
    c.expect_ok("ConsoleRead once the child ended", sys::console_read(&mut []));
    c.finish()
}

fn alloc_buf() -> ([u8; 64], usize) {
    ([0u8; 64], 0)
}
