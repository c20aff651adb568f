//! What `pctserver` and `pctclient` agree on (included by both).

use libos_async::sys::Message;

/// First word of the message that ends the echo server.
pub const QUIT: u64 = 0x5155_4954;
/// First word of the message that makes the faulty server fault.
pub const BAD: u64 = 0xbad;
/// First word of the asynchronous call the waiter expects.
pub const WAKE: u64 = 0x77a4e;

/// The reply to `msg` from `caller`: every word transformed, so that a
/// swapped, dropped or stale word shows.
pub fn pct_reply(msg: &Message, caller: u64) -> Message {
    core::array::from_fn(|i| msg[i].rotate_left(i as u32 + 1) ^ caller ^ 0x5a5a_0000)
}
