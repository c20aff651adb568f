//! `chanserver`: the server half of the channel tests (with `chanpeer`).
//! The start argument picks the case; exit 0 iff the case behaved:
//!
//! * 1 — the client dies mid-conversation: the connection must end with
//!   `PeerGone` (not hang).
//! * 2 — this server dies mid-conversation: after 3 echoes it exits
//!   without closing anything (`chanpeer 2` must see `PeerGone`).
//! * 3 — a hostile client scribbles over the request ring: the connection
//!   must end with `Corrupt`, and the server goes on (exits cleanly).
//! * 4 — this server turns hostile: after 2 echoes it writes garbage into
//!   the reply ring's header and slots instead of answering the third
//!   request (`chanpeer 4` must see `Corrupt`);
//!   then it waits for the client to leave.
//! * 5 — 7 producers: accepts 7 clients, each sending `chanpeer`'s
//!   `MESSAGES` one-way sequence numbers; every connection must deliver
//!   each number exactly once, in order, and then close.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::channel::ring::{HEADER_BYTES, SharedMem, TAIL_OFF};
use libos_async::channel::{self, ChannelError, Config, Event, Listener};
use libos_async::println;

libos_async::entry!(app_main);

/// Messages each producer of case 5 sends (`chanpeer` uses the same).
const MESSAGES: u64 = 3000;
const PRODUCERS: u64 = 7;

fn app_main(case: u64) -> i32 {
    let Ok(mut listener) = Listener::new(Config::default()) else {
        println!("chanserver: cannot listen");
        return 1;
    };
    match case {
        1 | 3 => {
            let mut ended = None;
            let stats = channel::block_on(channel::serve(&mut listener, 1, 60_000, |ev, out| {
                match ev {
                    Event::Request(_, msg) => {
                        out[..msg.len()].copy_from_slice(msg);
                        return Some(msg.len());
                    }
                    Event::Ended(_, e) => ended = Some(e),
                    Event::Connected(..) => {}
                }
                None
            }));
            let ok = match (case, ended) {
                (1, Some(ChannelError::PeerGone)) => true,
                (3, Some(ChannelError::Corrupt(why))) => {
                    println!("chanserver: hostile client detected: {why}");
                    true
                }
                _ => false,
            };
            println!(
                "chanserver {case}: {} requests, connection ended with {ended:?}",
                stats.requests
            );
            i32::from(!ok)
        }
        2 | 4 => {
            let mut conn = match listener.accept_blocking(60_000) {
                Ok(c) => c,
                Err(e) => {
                    println!("chanserver {case}: accept: {e:?}");
                    return 1;
                }
            };
            let mut buf = [0u8; 64];
            let echoes = if case == 2 { 3 } else { 2 };
            for _ in 0..echoes {
                let r =
                    conn.rx.recv_blocking(&mut buf).and_then(|n| conn.tx.send_blocking(&buf[..n]));
                if let Err(e) = r {
                    println!("chanserver {case}: echo: {e:?}");
                    return 1;
                }
            }
            if case == 2 {
                println!("chanserver 2: dying mid-conversation");
                libos_async::sys::exit(0);
            }
            // The client has read both echoes once its third request
            // arrives; that one is answered with garbage instead.
            if let Err(e) = conn.rx.recv_blocking(&mut buf) {
                println!("chanserver 4: third request: {e:?}");
                return 1;
            }
            // Hostile: a tail far beyond capacity, and huge lengths.
            let ring = conn.tx.shared();
            for off in (HEADER_BYTES..ring.size()).step_by(64) {
                ring.store(off, 1 << 40, core::sync::atomic::Ordering::Relaxed);
            }
            ring.store(TAIL_OFF, 1 << 40, core::sync::atomic::Ordering::Release);
            let _ = channel::shm::notify(conn.client().env);
            println!("chanserver 4: scribbled over the reply ring");
            // Wait for the client to leave (it closes, or dies).
            let end = loop {
                match conn.rx.recv_blocking(&mut buf) {
                    Ok(_) => continue,
                    Err(e) => break e,
                }
            };
            println!("chanserver 4: client left ({end:?})");
            conn.close();
            i32::from(!matches!(end, ChannelError::Closed | ChannelError::PeerGone))
        }
        5 => {
            let mut next = [0u64; channel::serve::MAX_CONNS];
            let mut bad = 0u64;
            let mut complete = 0u64;
            let stats =
                channel::block_on(channel::serve(&mut listener, PRODUCERS, 60_000, |ev, _| {
                    match ev {
                        Event::Connected(i, _) => next[i] = 0,
                        Event::Request(i, msg) => {
                            let seq = msg.try_into().map(u64::from_le_bytes).unwrap_or(u64::MAX);
                            if seq != next[i] {
                                bad += 1;
                            }
                            next[i] = seq.wrapping_add(1);
                        }
                        Event::Ended(i, e) => {
                            if e == ChannelError::Closed && next[i] == MESSAGES {
                                complete += 1;
                            } else {
                                println!(
                                    "chanserver 5: a producer ended with {e:?} after {}",
                                    next[i]
                                );
                            }
                        }
                    }
                    None
                }));
            let ok = bad == 0 && complete == PRODUCERS && stats.requests == PRODUCERS * MESSAGES;
            println!(
                "chanserver 5: {} messages from {} producers, {bad} out of order, {complete} complete",
                stats.requests, stats.accepted
            );
            i32::from(!ok)
        }
        _ => {
            println!("chanserver: unknown case {case}");
            2
        }
    }
}
