//! What `tests/pctserver`, `tests/pctclient` and `benches/cpubench` agree
//! on: the control words of the first message word, and the reply the
//! echo server computes.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

/// The eight words of a protected control transfer's message or reply
/// (the same type as `libos_async::sys::Message`).
pub type Message = [u64; 8];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_depends_on_every_word_and_the_caller() {
        let msg: Message = core::array::from_fn(|i| i as u64 * 0x1111);
        let r = pct_reply(&msg, 5);
        assert_ne!(r, pct_reply(&msg, 6));
        for i in 0..8 {
            let mut m = msg;
            m[i] ^= 1;
            assert_ne!(pct_reply(&m, 5)[i], r[i]);
        }
    }
}
