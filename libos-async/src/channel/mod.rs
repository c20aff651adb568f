//! Channels between environments: bounded message rings in granted frames.
//!
//! (The full protocol description is filled in below as the parts land.)

pub mod ring;

/// Why a channel operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// The shared memory holds something the protocol forbids (a counter
    /// out of range, a length beyond its slot, a bad magic): the peer is
    /// broken or hostile. Sticky: the end stays failed.
    Corrupt(&'static str),
    /// The peer environment is gone (exited or killed).
    PeerGone,
    /// The peer closed its end (and, for a receiver, every message sent
    /// before was delivered).
    Closed,
    /// The message does not fit a slot (or the receive buffer).
    TooLarge,
    /// `try_` operations: the ring is full (send) or empty (receive).
    WouldBlock,
    /// Setting up or waiting failed in the kernel.
    Sys(abi::Error),
    /// No server answered (connect) within the time allowed.
    TimedOut,
}

impl From<abi::Error> for ChannelError {
    fn from(e: abi::Error) -> Self {
        ChannelError::Sys(e)
    }
}
