//! `chanpeer`: the client half of the channel tests (see `chanserver`,
//! same start argument). Exit 0 iff this side's case behaved:
//!
//! * 1 — five echoes, then exits without closing (dies mid-conversation).
//! * 2 — echoes until the server dies: must get `PeerGone`, not hang.
//! * 3 — two echoes, then scribbles over the request ring (a tail far
//!   beyond capacity, lengths beyond the slots) and waits until the
//!   server drops the connection.
//! * 4 — two echoes, then a third: the hostile server's reply ring must
//!   read as `Corrupt`.
//! * 5 — sends `MESSAGES` one-way sequence numbers, then closes.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::Ordering;

use libos_async::channel::ring::{HEADER_BYTES, SharedMem, TAIL_OFF};
use libos_async::channel::{self, ChannelError};
use libos_async::println;

libos_async::entry!(app_main);

const MESSAGES: u64 = 3000;

fn app_main(case: u64) -> i32 {
    let mut conn = match channel::connect("chanserver", 60_000) {
        Ok(c) => c,
        Err(e) => {
            println!("chanpeer {case}: cannot connect: {e:?}");
            return 1;
        }
    };
    let mut buf = [0u8; 64];
    let mut echo = |conn: &mut channel::ClientConn, i: u64| {
        conn.tx.send_blocking(&i.to_le_bytes())?;
        let n = conn.rx.recv_blocking(&mut buf)?;
        if buf[..n] != i.to_le_bytes() {
            return Err(ChannelError::Corrupt("wrong echo"));
        }
        Ok(())
    };
    match case {
        1 => {
            for i in 0..5 {
                if let Err(e) = echo(&mut conn, i) {
                    println!("chanpeer 1: echo: {e:?}");
                    return 1;
                }
            }
            println!("chanpeer 1: dying mid-conversation");
            libos_async::sys::exit(0)
        }
        2 => {
            let end = (0..100_000).find_map(|i| echo(&mut conn, i).err());
            println!("chanpeer 2: server went away: {end:?}");
            i32::from(end != Some(ChannelError::PeerGone))
        }
        3 => {
            for i in 0..2 {
                if let Err(e) = echo(&mut conn, i) {
                    println!("chanpeer 3: echo: {e:?}");
                    return 1;
                }
            }
            let ring = conn.tx.shared();
            for off in (HEADER_BYTES..ring.size()).step_by(8) {
                ring.store(off, u64::MAX - off as u64, Ordering::Relaxed);
            }
            ring.store(TAIL_OFF, 1 << 40, Ordering::Release);
            let _ = channel::shm::notify(conn.server().env);
            println!("chanpeer 3: scribbled over the request ring");
            // The server drops us: our reply ring's grant goes away.
            let end = conn.rx.recv_blocking(&mut buf);
            println!("chanpeer 3: server answered with {end:?}");
            conn.close();
            i32::from(end.is_ok())
        }
        4 => {
            for i in 0..2 {
                if let Err(e) = echo(&mut conn, i) {
                    println!("chanpeer 4: echo: {e:?}");
                    return 1;
                }
            }
            let r = echo(&mut conn, 2);
            println!("chanpeer 4: after the server scribbled: {r:?}");
            conn.close();
            i32::from(!matches!(r, Err(ChannelError::Corrupt(_))))
        }
        5 => {
            for i in 0..MESSAGES {
                if let Err(e) = conn.tx.send_blocking(&i.to_le_bytes()) {
                    println!("chanpeer 5: send {i}: {e:?}");
                    return 1;
                }
            }
            conn.close();
            0
        }
        _ => 2,
    }
}
