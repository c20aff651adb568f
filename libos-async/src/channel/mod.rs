//! Channels between environments: bounded message rings in granted frames.
//!
//! A *connection* joins a server environment and a client environment with
//! two single-producer/single-consumer rings ([`ring`]): requests (client
//! → server) and replies (server → client). A server accepts any number of
//! clients; each connection has its own frames.
//!
//! ```text
//!  client env                                  server env
//!  ClientConn.tx (Sender)  ── request ring ──▶ ServerConn.rx (Receiver)
//!  ClientConn.rx (Receiver) ◀── reply ring ──  ServerConn.tx (Sender)
//!                  both rings: frames the server owns, granted RW
//! ```
//!
//! # Finding each other: doorbells and the hello page
//!
//! The kernel offers no way to send a first message to an environment
//! that does not know you: a grant needs the grantee's id, a `Notify`
//! carries no data. What any environment *can* do is allocate a frame by
//! number, grant it, and ask who holds a frame (`FrameStatus`). So:
//!
//! 1. The client finds the server's id by name (`EnvLookup`).
//! 2. It allocates its *hello frame* at the first free one of the server's
//!    [`DOORBELL_PROBES`] doorbell frames, [`setup::doorbell`]`(server, k)`
//!    — fixed pseudo-random frame numbers in a 128 MiB area starting at
//!    [`setup::DOORBELL_BASE`] — writes `{magic, its env id, state 0}` into
//!    it, grants it RW to the server and posts a `Notify` to the server.
//! 3. The server ([`Listener`]) scans its doorbells when notified (and
//!    every 10 ms): a doorbell frame owned by another environment that it
//!    is allowed to map is a hello page. It checks the magic and that the
//!    env id written there is the frame's owner (from `FrameStatus`, which
//!    cannot lie), allocates the two rings, initializes them, grants their
//!    frames RW to the client, writes the ring frame numbers and sizes into
//!    the hello page, sets `state = accepted` and unmaps it.
//! 4. The client sees the state change (a predicate on that word),
//!    withdraws its grant, maps the rings and checks their headers. It
//!    keeps the hello frame allocated for the life of the connection: it
//!    is the server's *liveness token* for that client.
//!
//! Hostile environments can only hurt themselves or waste doorbells: every
//! value read from a hello page or a ring is validated; an environment
//! that squats on all of a server's doorbells keeps new clients out (a
//! denial of service this design does not prevent).
//!
//! # Waiting and waking
//!
//! See [`ring`] for the counter words and their `WAITING` bit. A blocked
//! end spins a little, then sets `WAITING` in the peer's counter word and
//! sleeps on "that word changed, or a notification, or the liveness-poll
//! deadline" ([`Sender::send_blocking`], [`Receiver::recv_blocking`]), or
//! asynchronously registers the same wait with the executor
//! ([`Sender::send`], [`Receiver::recv`], [`ready_any`]). The other side's
//! next publish sees `WAITING` in the old value and posts a ring `Notify`
//! to the sleeper's environment, which wakes its halted core at once. When
//! nobody waits the fast path is a few loads and stores and one `xchg`.
//!
//! # Peer death
//!
//! Each end holds a [`Peer`]: the peer's id and a frame the peer owns (the
//! client's hello frame; the server's first request-ring frame). The
//! kernel frees a dead environment's frames, so `FrameStatus` of the token
//! stops naming it. A waiting end checks every [`LIVENESS_POLL_MS`]; any
//! ring error is checked too. Frames the dead peer owned are unmapped by
//! the kernel under our feet: [`shm`] maps a zero page instead of letting
//! the access fault, the ring then reports a bad header, and the liveness
//! check turns that into [`ChannelError::PeerGone`].
//!
//! # Not done
//!
//! * The channel futures run under the runtime's executor ([`crate::rt`])
//!   or, for programs without one, under this module's [`block_on`] (see
//!   [`wait`]).
//! * A peer is woken by an asynchronous call (`Acall`, a direct system
//!   call), which bumps its `notifications`; both executors watch that.
//! * RPC over protected control transfer is [`rpc_over_pct`]: eight words
//!   each way, synchronous, on the caller's core and time, to a server
//!   that serves calls with [`crate::cpu::serve_calls`]. It is not wired
//!   into [`ClientConn`]: a caller chooses it for small same-core requests.

pub mod endpoint;
pub mod ring;
pub mod serve;
pub mod setup;
#[allow(unsafe_code, reason = "atomic views of shared frames; the page-fault fix-up")]
pub mod shm;
pub mod wait;

pub use endpoint::{LIVENESS_POLL_MS, Peer, Receiver, Sender, ready_any};
pub use serve::{Event, ServeStats, serve};
pub use setup::{ClientConn, Config, DOORBELL_PROBES, Listener, ServerConn, connect, connect_env};
pub use wait::block_on;

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

/// A synchronous request/reply to `server` by protected control
/// transfer: the server's [`crate::cpu::serve_calls`] handler runs at once
/// on this core, in its own address space, on our time, with `request` in
/// registers, and its reply comes back the same way. No shared memory, no
/// wake-up, no sleep: the same-core fast path beside a [`ClientConn`].
pub fn rpc_over_pct(server: u64, request: [u64; 8]) -> Result<[u64; 8], ChannelError> {
    crate::cpu::call(server, &request).map_err(ChannelError::Sys)
}
