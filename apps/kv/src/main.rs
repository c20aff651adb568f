//! `kv`: a key-value server over channels, serving several client
//! environments at once (one connection each, answered in turn by one
//! async loop that sleeps on all of their request rings).
//!
//! Start argument: how many clients to serve in its low 32 bits (0 means
//! 2, the demo's `init=kv,kv-client,kv-client`); any upper bit: print the
//! `kv_op_N_clients` benchmark line, N the client count (cycles per
//! request, all clients together: from the first connection to the last
//! close, divided by the requests served). When they have all left, the server
//! checks its final state: for every client it replays that client's
//! deterministic workload (`kv_proto::expected`) and compares with the
//! checksum of the pairs it holds in that client's key space, and it
//! checks that it holds nothing else. Exit 0 iff every client closed
//! normally and every checksum matches.
//!
//! **Service mode** (start argument bit [`SERVICE`], e.g. `init=posix,kv:
//! 4611686018427387904`; `cargo xtask posix --also kv-service`): serves
//! any number of clients until the run ends, text requests included
//! (`kv_proto::text_requests`: what a shell sends through the POSIX
//! library's `/dev/chan/kv`), and checks no workload.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use kv_proto::*;
use libos_async::channel::{self, Config, Event, Listener};
use libos_async::{core_id, env_id, println};

libos_async::entry!(app_main);

/// Start-argument bit: service mode (see the module documentation).
const SERVICE: u64 = 1 << 62;
/// How long a service waits for its first client.
const SERVICE_IDLE_MS: u64 = 24 * 3600 * 1000;

/// Slots of the open-addressing table.
const SLOTS: usize = 512;

/// An open-addressing hash table with tombstones, no allocation.
struct Table {
    keys: [u64; SLOTS],
    values: [u64; SLOTS],
    /// 0 empty, 1 used, 2 deleted.
    state: [u8; SLOTS],
}

impl Table {
    fn slot(&self, key: u64) -> (Option<usize>, Option<usize>) {
        let mut free = None;
        let mut i = (mix(key, 0) as usize) % SLOTS;
        for _ in 0..SLOTS {
            match self.state[i] {
                0 => return (None, free.or(Some(i))),
                1 if self.keys[i] == key => return (Some(i), None),
                2 if free.is_none() => free = Some(i),
                _ => {}
            }
            i = (i + 1) % SLOTS;
        }
        (None, free)
    }

    fn apply(&mut self, op: u8, key: u64, value: u64) -> (u8, u64) {
        match op {
            GET => match self.slot(key).0 {
                Some(i) => (OK, self.values[i]),
                None => (NOT_FOUND, 0),
            },
            PUT => match self.slot(key) {
                (Some(i), _) | (None, Some(i)) => {
                    self.keys[i] = key;
                    self.values[i] = value;
                    self.state[i] = 1;
                    (OK, 0)
                }
                (None, None) => (FULL, 0),
            },
            DELETE => match self.slot(key).0 {
                Some(i) => {
                    self.state[i] = 2;
                    (OK, 0)
                }
                None => (NOT_FOUND, 0),
            },
            SUM => (OK, self.sum(|k| k >> 32 == key >> 32)),
            _ => (BAD, 0),
        }
    }

    fn sum(&self, pick: impl Fn(u64) -> bool) -> u64 {
        (0..SLOTS)
            .filter(|&i| self.state[i] == 1 && pick(self.keys[i]))
            .fold(0u64, |s, i| s.wrapping_add(mix(self.keys[i], self.values[i])))
    }
}

/// Answers a text request message into `out`; the reply's length. Lines
/// whose answers no longer fit are not answered.
fn text(table: &mut Table, msg: &[u8], out: &mut [u8]) -> usize {
    let mut at = 0;
    for req in text_requests(msg) {
        let (op, (status, value)) = match req {
            Some((op, key, value)) => (op, table.apply(op, key, value)),
            None => (0, (BAD, 0)),
        };
        match text_reply(op, status, value, &mut out[at..]) {
            Some(n) => at += n,
            None => break,
        }
    }
    at
}

fn app_main(arg: u64) -> i32 {
    let service = arg & SERVICE != 0;
    let clients = match arg & 0xffff_ffff {
        _ if service => u64::MAX,
        0 => 2,
        n => n,
    };
    let bench = !service && arg >> 32 != 0;
    let mut first = 0u64;
    let mut table = Table { keys: [0; SLOTS], values: [0; SLOTS], state: [0; SLOTS] };
    let Ok(mut listener) = Listener::new(Config::default()) else {
        println!("kv: cannot listen");
        return 1;
    };
    if service {
        println!("kv: env {} serving as a service from core {}", env_id(), core_id());
    } else {
        println!("kv: env {} serving {clients} clients from core {}", env_id(), core_id());
    }
    let idle_ms = if service { SERVICE_IDLE_MS } else { 60_000 };
    let mut ids = [0u64; channel::serve::MAX_CONNS * 4];
    let mut n_ids = 0;
    let stats =
        channel::block_on(channel::serve(&mut listener, clients, idle_ms, |ev, out| match ev {
            Event::Connected(_, conn) => {
                if first == 0 {
                    first = libos_async::sys::rdtsc();
                }
                if n_ids < ids.len() {
                    ids[n_ids] = conn.client().env;
                    n_ids += 1;
                }
                println!("kv: client env {} connected", conn.client().env);
                None
            }
            Event::Request(_, msg) if is_text(msg) => Some(text(&mut table, msg, out)),
            Event::Request(_, msg) => {
                let r = match parse_request(msg) {
                    Some((op, key, value)) => table.apply(op, key, value),
                    None => (BAD, 0),
                };
                out[..16].copy_from_slice(&reply(r.0, r.1));
                Some(16)
            }
            Event::Ended(_, e) => {
                println!("kv: a client left ({e:?})");
                None
            }
        }));
    if service {
        println!("kv: service ends: {} requests from {} clients", stats.requests, stats.accepted);
        return 0;
    }
    if bench {
        let cycles = libos_async::sys::rdtsc() - first;
        let name = alloc::format!("kv_op_{clients}_clients");
        libos_async::bench::report(&name, &mut [cycles / stats.requests.max(1)]);
    }
    let mut ok = stats.closed == clients && stats.accepted == clients;
    let mut total = 0u64;
    for &id in &ids[..n_ids] {
        let want = expected(id);
        let got = table.sum(|k| k >> 32 == id);
        total = total.wrapping_add(got);
        if got != want {
            println!("kv: CHECK FAILED: client {id}: checksum {got:#x}, expected {want:#x}");
            ok = false;
        }
    }
    let all = table.sum(|_| true);
    if all != total {
        println!("kv: CHECK FAILED: pairs outside the clients' key spaces");
        ok = false;
    }
    println!(
        "kv: {} requests from {} clients; final checksum {all:#x} {}",
        stats.requests,
        stats.accepted,
        if ok { "matches every client's workload" } else { "MISMATCH" }
    );
    i32::from(!ok)
}
