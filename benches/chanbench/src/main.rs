//! `chanbench`: the server half of the channel benchmarks (with
//! `chanbench-peer`; the kernel's bench harness starts both, placing them
//! on cores). Start argument: `case | samples << 8 | producers << 32`.
//!
//! * 1, 2 — echo server for the round-trip benchmarks (the peer measures);
//!   case 1 runs on the peer's core, so it never spins.
//! * 3 — consumer of `producers` (1 to 7; 0 means 1) producers' one-way
//!   messages: prints `channel_throughput_N_producers`, N the producer
//!   count (cycles per message, all producers together: from the first
//!   message to the last, divided by the messages received).

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use libos_async::bench::report;
use libos_async::channel::{self, Config, Event, Listener};
use libos_async::println;
use libos_async::sys::rdtsc;

libos_async::entry!(app_main);

/// One-way messages per sample in the throughput cases (as `chanbench-peer`).
const MESSAGES_PER_SAMPLE: u64 = 5;

fn app_main(arg: u64) -> i32 {
    let (case, samples) = (arg & 0xff, (arg >> 8) & 0xff_ffff);
    let Ok(mut listener) = Listener::new(Config::default()) else {
        println!("chanbench: cannot listen");
        return 1;
    };
    match case {
        1 | 2 => {
            let Ok(mut conn) = listener.accept_blocking(60_000) else { return 1 };
            if case == 1 {
                conn.rx.set_spin(0);
                conn.tx.set_spin(0);
            }
            let mut buf = [0u8; 64];
            loop {
                match conn.rx.recv_blocking(&mut buf) {
                    Ok(n) => {
                        if conn.tx.send_blocking(&buf[..n]).is_err() {
                            return 1;
                        }
                    }
                    Err(channel::ChannelError::Closed) => break,
                    Err(_) => return 1,
                }
            }
            conn.close();
            0
        }
        3 => {
            let producers = ((arg >> 32) & 0xff).max(1);
            let mut first = 0;
            let mut count = 0u64;
            let stats =
                channel::block_on(channel::serve(&mut listener, producers, 60_000, |ev, _| {
                    if let Event::Request(..) = ev {
                        if count == 0 {
                            first = rdtsc();
                        }
                        count += 1;
                    }
                    None
                }));
            let cycles = rdtsc() - first;
            let want = producers * samples * MESSAGES_PER_SAMPLE;
            let name = alloc::format!("channel_throughput_{producers}_producers");
            report(&name, &mut [cycles / count.max(1)]);
            if stats.requests != want || stats.closed != producers {
                println!(
                    "chanbench: {name}: {} of {want} messages, {} of {producers} producers closed ({stats:?})",
                    stats.requests, stats.closed
                );
                return 1;
            }
            0
        }
        _ => 2,
    }
}
