//! `chanbench`: the server half of the channel benchmarks (with
//! `chanbench-peer`; the kernel's bench harness starts both, placing them
//! on cores). Start argument: `case | samples << 8`.
//!
//! * 1, 2 — echo server for the round-trip benchmarks (the peer measures);
//!   case 1 runs on the peer's core, so it never spins.
//! * 3 — consumer of one producer's one-way messages: prints
//!   `channel_throughput_1_producer` (cycles per message, from the first
//!   message to the last).
//! * 4 — the same with 7 producers: `channel_throughput_7_producers`.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::bench::report;
use libos_async::channel::{self, Config, Event, Listener};
use libos_async::println;
use libos_async::sys::rdtsc;

libos_async::entry!(app_main);

/// One-way messages per sample in the throughput cases (as `chanbench-peer`).
const MESSAGES_PER_SAMPLE: u64 = 5;

fn app_main(arg: u64) -> i32 {
    let (case, samples) = (arg & 0xff, arg >> 8);
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
        3 | 4 => {
            let producers = if case == 3 { 1 } else { 7 };
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
            let name = if case == 3 {
                "channel_throughput_1_producer"
            } else {
                "channel_throughput_7_producers"
            };
            report(name, &mut [cycles / count.max(1)]);
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
