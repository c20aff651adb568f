//! `echo-client`: connects to `echo`, sends numbered messages of varying
//! length, checks each echo, and prints the median round trip.
//!
//! Start argument: messages to send (0 means 1000). Exit 0 iff every echo
//! came back intact and in order.
//!
//! It runs on the async runtime (`main!`, one executor on its own core):
//! the conversation is a spawned task whose channel futures are woken by
//! the executor's idle predicate.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::channel::{self, ChannelError};
use libos_async::rt::{self, RuntimeConfig};
use libos_async::sys::rdtsc;
use libos_async::{core_id, env_id, info, println};

libos_async::main!(main_async, RuntimeConfig::new().cores(1 << core_id()));

async fn main_async(arg: u64) -> i32 {
    let n = if arg == 0 { 1000 } else { arg } as usize;
    let mut conn = match channel::connect("echo", 60_000) {
        Ok(c) => c,
        Err(e) => {
            println!("echo-client: cannot connect: {e:?}");
            return 1;
        }
    };
    println!(
        "echo-client: env {} on core {} connected to echo (env {})",
        env_id(),
        core_id(),
        conn.server().env
    );
    let conversation = rt::spawn(async move {
        let mut times = [0u64; 1000];
        let mut buf = [0u8; 64];
        for i in 0..n {
            let mut msg = [0u8; 56];
            let len = 8 + i % 48;
            msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
            msg[8..len].fill(i as u8);
            let t0 = rdtsc();
            if let Err(e) = conn.tx.send(&msg[..len]).await {
                return (conn, times, Err(e));
            }
            let got = match conn.rx.recv(&mut buf).await {
                Ok(got) => got,
                Err(e) => return (conn, times, Err(e)),
            };
            times[i % times.len()] = rdtsc() - t0;
            if buf[..got] != msg[..len] {
                return (conn, times, Err(ChannelError::Corrupt("echo differs")));
            }
        }
        (conn, times, Ok(()))
    });
    let (conn, mut times, result) = conversation.await;
    let samples = &mut times[..n.min(1000)];
    samples.sort_unstable();
    let median = samples[samples.len() / 2];
    let us = median / (info().tsc_hz / 1_000_000).max(1);
    conn.close();
    match result {
        Ok(()) => {
            println!("echo-client: {n} echoes ok, round trip median {median} cycles ({us} us)");
            0
        }
        Err(e) => {
            println!("echo-client: failed: {e:?}");
            1
        }
    }
}
