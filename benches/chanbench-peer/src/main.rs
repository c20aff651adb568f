//! `chanbench-peer`: the client half of the channel benchmarks (see
//! `chanbench`; same start argument).
//!
//! * 1, 2 — `samples` echo round trips of an 8-byte message after a
//!   warm-up; prints `channel_roundtrip_same_core` / `_cross_core`
//!   (cycles per round trip).
//! * 3 — sends `samples * 5` one-way 8-byte messages as fast as the
//!   ring allows, then closes.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::bench::report;
use libos_async::channel;
use libos_async::println;
use libos_async::sys::rdtsc;

libos_async::entry!(app_main);

const MAX_SAMPLES: usize = 2000;
/// One-way messages per sample in the throughput cases (as `chanbench`).
const MESSAGES_PER_SAMPLE: u64 = 5;

fn app_main(arg: u64) -> i32 {
    let (case, samples) = (arg & 0xff, (arg >> 8) as usize);
    let mut conn = match channel::connect("chanbench", 60_000) {
        Ok(c) => c,
        Err(e) => {
            println!("chanbench-peer: cannot connect: {e:?}");
            return 1;
        }
    };
    let ok = match case {
        1 | 2 => {
            if case == 1 {
                conn.rx.set_spin(0);
                conn.tx.set_spin(0);
            }
            let n = samples.clamp(1, MAX_SAMPLES);
            let mut times = [0u64; MAX_SAMPLES];
            let mut buf = [0u8; 64];
            let mut ok = true;
            for i in 0..n + 50 {
                let t0 = rdtsc();
                let r = conn
                    .tx
                    .send_blocking(&(i as u64).to_le_bytes())
                    .and_then(|_| conn.rx.recv_blocking(&mut buf));
                let t = rdtsc() - t0;
                if r != Ok(8) {
                    ok = false;
                    break;
                }
                if i >= 50 {
                    times[i - 50] = t;
                }
            }
            let name = if case == 1 {
                "channel_roundtrip_same_core"
            } else {
                "channel_roundtrip_cross_core"
            };
            report(name, &mut times[..n]);
            ok
        }
        3 => (0..samples as u64 * MESSAGES_PER_SAMPLE)
            .all(|i| conn.tx.send_blocking(&i.to_le_bytes()).is_ok()),
        _ => false,
    };
    conn.close();
    i32::from(!ok)
}
