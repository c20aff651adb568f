//! `echo`: a channel server that answers every message with itself.
//!
//! Start argument: how many clients to serve before exiting (0 means 1).
//! Run with `init=echo,echo-client` (or more clients:
//! `init=echo,echo-client,echo-client` with a start argument of 2 from a
//! test). Gives up after 60 s without any client. Exit 0 iff every client
//! closed its connection normally.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::channel::{self, Config, Event, Listener};
use libos_async::check::require;
use libos_async::{core_id, env_id, println};

libos_async::entry!(app_main);

fn app_main(arg: u64) -> i32 {
    let clients = arg.max(1);
    let mut listener = require("listen", Listener::new(Config::default()).map_err(sys_err));
    println!("echo: env {} listening on core {}", env_id(), core_id());
    let stats =
        channel::block_on(channel::serve(&mut listener, clients, 60_000, |ev, reply| match ev {
            Event::Connected(_, conn) => {
                println!("echo: client env {} connected", conn.client().env);
                None
            }
            Event::Request(_, msg) => {
                reply[..msg.len()].copy_from_slice(msg);
                Some(msg.len())
            }
            Event::Ended(_, e) => {
                println!("echo: a client left ({e:?})");
                None
            }
        }));
    println!(
        "echo: served {} clients, {} messages ({} closed, {} gone, {} corrupt)",
        stats.accepted, stats.requests, stats.closed, stats.gone, stats.corrupt
    );
    i32::from(stats.closed != clients || stats.accepted != clients)
}

fn sys_err(e: channel::ChannelError) -> libos_async::abi::Error {
    match e {
        channel::ChannelError::Sys(e) => e,
        _ => libos_async::abi::Error::InvalidArgument,
    }
}
