//! `kv-client`: runs a deterministic sequence of `kv_proto::OPS` put / get /
//! delete operations against `kv` in its own key space (named by its
//! environment id), checks every GET against a local model, then asks the
//! server for the checksum of its key space and compares it with the
//! expected one. Exit 0 iff everything matched.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use kv_proto::*;
use libos_async::channel::{self, ChannelError};
use libos_async::sys::rdtsc;
use libos_async::{core_id, env_id, println};

libos_async::entry!(app_main);

fn app_main(_arg: u64) -> i32 {
    let id = env_id();
    let mut conn = match channel::connect("kv", 60_000) {
        Ok(c) => c,
        Err(e) => {
            println!("kv-client: cannot connect: {e:?}");
            return 1;
        }
    };
    println!("kv-client: env {id} on core {} connected", core_id());
    let t0 = rdtsc();
    let result = channel::block_on(async {
        let mut model = [None::<u64>; KEYS as usize];
        let mut buf = [0u8; 64];
        let mut call = async |op: u8, key: u64, value: u64| {
            conn.tx.send(&request(op, key, value)).await?;
            let n = conn.rx.recv(&mut buf).await?;
            parse_reply(&buf[..n]).ok_or(ChannelError::Corrupt("bad reply"))
        };
        let mut mismatches = 0u32;
        for i in 0..OPS {
            let (op, key, value) = op(id, i);
            let slot = &mut model[(key & 0xffff_ffff) as usize];
            let (status, got) = call(op, key, value).await?;
            let want = match op {
                PUT => {
                    *slot = Some(value);
                    (OK, 0)
                }
                GET => slot.map_or((NOT_FOUND, 0), |v| (OK, v)),
                _ => {
                    let w = if slot.is_some() { (OK, 0) } else { (NOT_FOUND, 0) };
                    *slot = None;
                    w
                }
            };
            if (status, got) != want {
                mismatches += 1;
            }
        }
        let (_, sum) = call(SUM, id << 32, 0).await?;
        Ok::<_, ChannelError>((mismatches, sum))
    });
    let cycles = rdtsc() - t0;
    conn.close();
    match result {
        Ok((0, sum)) if sum == expected(id) => {
            println!(
                "kv-client: env {id}: {OPS} ops ok in {} Mcycles, checksum {sum:#x} matches",
                cycles / 1_000_000
            );
            0
        }
        Ok((bad, sum)) => {
            println!(
                "kv-client: CHECK FAILED: env {id}: {bad} wrong replies, checksum {sum:#x} (expected {:#x})",
                expected(id)
            );
            1
        }
        Err(e) => {
            println!("kv-client: CHECK FAILED: env {id}: {e:?}");
            1
        }
    }
}
