//! [`Sender`] and [`Receiver`]: one end of a ring in mapped shared frames,
//! with waiting (blocking or async), peer wake-ups and peer-death checks.

use core::future::poll_fn;
use core::task::{Context, Poll};

use abi::FrameHolder;

use super::ChannelError;
use super::ring::{Consumer, Done, Producer, SharedMem, Wait};
use super::shm::{self, Mapped};
use super::wait::{self, ms_to_tsc};
use crate::predicate::Pred;
use crate::sys;

/// How often a waiting end checks that its peer still lives.
pub const LIVENESS_POLL_MS: u64 = 20;

/// Default spin budget of the blocking calls (tries with `pause` before
/// sleeping).
pub const DEFAULT_SPIN: u32 = 2_000;

/// The other environment of a channel and how to tell it is alive: a frame
/// it owns (a ring frame for the client, the client's hello frame for the
/// server). When the environment dies the kernel frees its frames, so the
/// frame's status stops naming it (environment ids are never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The peer's environment id.
    pub env: u64,
    /// A frame the peer owns.
    pub token: u64,
}

impl Peer {
    /// Whether the peer still owns its token frame.
    pub fn alive(&self) -> bool {
        sys::frame_status(self.token)
            .is_ok_and(|s| s.holder() == Some(FrameHolder::Owned) && s.env == self.env)
    }

    /// Wakes the peer's sleeping vCPUs (best effort: if the call is refused
    /// the peer notices the changed word at its next slot boundary).
    fn wake(&self) {
        let _ = shm::notify(self.env);
    }
}

/// How long a ring error waits for a dying peer to show as dead before it
/// is reported as `Corrupt`. The kernel's reclaim of a dead peer unmaps its
/// frames from us one at a time, in frame order, and frees the token frame
/// [`Peer::alive`] reads only when its turn comes: the ring can read a zero
/// page a moment before the token stops naming the peer. A live peer that
/// scribbles stays alive, so its corruption is reported after the wait.
const PEER_DEATH_GRACE_MS: u64 = 500;

/// Turns a ring error into `PeerGone` when the reason is a dead peer (a
/// peer that closed its end properly and then exited stays `Closed`).
fn classify(e: ChannelError, peer: &Peer) -> ChannelError {
    match e {
        ChannelError::Corrupt(_)
            if !peer.alive() || crate::wait_for_ms(PEER_DEATH_GRACE_MS, || !peer.alive()) =>
        {
            ChannelError::PeerGone
        }
        e => e,
    }
}

/// Blocks until the word at `addr` differs from `value` or the liveness
/// poll is due; returns whether the peer was found dead (the caller tries
/// its operation once more first, so a close just before the death is
/// still seen as `Closed`).
fn sleep_on_word(addr: u64, value: u64, peer: &Peer) -> bool {
    let seen = sys::notifications();
    let deadline = sys::rdtsc() + ms_to_tsc(LIVENESS_POLL_MS);
    let _ = Pred::word_ne(addr, value)
        .either(Pred::notifications_ne(seen))
        .either(Pred::deadline(deadline))
        .sleep();
    sys::rdtsc() >= deadline && !peer.alive()
}

/// State shared by the waiting loops of both ends.
#[derive(Debug)]
struct Liveness {
    next_check: u64,
}

impl Liveness {
    fn new() -> Self {
        Liveness { next_check: sys::rdtsc() + ms_to_tsc(LIVENESS_POLL_MS) }
    }

    /// In async waits: `Err(PeerGone)` once the peer is found dead; the
    /// deadline of the next check otherwise.
    fn poll(&mut self, peer: &Peer) -> Result<u64, ChannelError> {
        if sys::rdtsc() >= self.next_check {
            if !peer.alive() {
                return Err(ChannelError::PeerGone);
            }
            self.next_check = sys::rdtsc() + ms_to_tsc(LIVENESS_POLL_MS);
        }
        Ok(self.next_check)
    }
}

/// The sending end of a channel.
#[derive(Debug)]
pub struct Sender {
    mem: Mapped,
    ring: Producer,
    peer: Peer,
    spin: u32,
}

impl Sender {
    pub(crate) fn new(mem: Mapped, ring: Producer, peer: Peer) -> Sender {
        Sender { mem, ring, peer, spin: DEFAULT_SPIN }
    }

    /// The receiving environment.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// The longest message.
    pub fn max_msg(&self) -> usize {
        self.ring.geometry().max_msg()
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.ring.sent()
    }

    /// How many tries (with `pause`) [`Sender::send_blocking`] makes before
    /// it sleeps.
    pub fn set_spin(&mut self, spin: u32) {
        self.spin = spin;
    }

    fn finish(&self, d: Done) {
        if d.wake_peer {
            self.peer.wake();
        }
    }

    /// Sends `msg` if the ring has room (`WouldBlock` if not).
    pub fn try_send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        match self.ring.try_send(&self.mem, msg) {
            Ok(d) => {
                self.finish(d);
                Ok(())
            }
            Err(e) => Err(classify(e, &self.peer)),
        }
    }

    /// Sends `msg`, sleeping (`SleepOn`) while the ring is full; no
    /// executor needed. `PeerGone` if the receiver dies meanwhile.
    pub fn send_blocking(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        let mut spins = 0;
        let mut dead = false;
        loop {
            match self.try_send(msg) {
                Err(ChannelError::WouldBlock) if dead => return Err(ChannelError::PeerGone),
                Err(ChannelError::WouldBlock) => {}
                r => return r,
            }
            if spins < self.spin {
                spins += 1;
                core::hint::spin_loop();
                continue;
            }
            match self.ring.prepare_wait(&self.mem).map_err(|e| classify(e, &self.peer))? {
                Wait::Ready => {}
                Wait::Sleep { off, value } => {
                    dead = sleep_on_word(self.mem.addr(off), value, &self.peer);
                }
            }
        }
    }

    /// Sends `msg`, waiting (asynchronously) while the ring is full.
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        let mut live = Liveness::new();
        poll_fn(|cx| self.poll_send(cx, msg, &mut live)).await
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        msg: &[u8],
        live: &mut Liveness,
    ) -> Poll<Result<(), ChannelError>> {
        loop {
            match self.try_send(msg) {
                Err(ChannelError::WouldBlock) => {}
                r => return Poll::Ready(r),
            }
            let deadline = match live.poll(&self.peer) {
                Ok(d) => d,
                Err(e) => return Poll::Ready(Err(e)),
            };
            match self.ring.prepare_wait(&self.mem) {
                Err(e) => return Poll::Ready(Err(classify(e, &self.peer))),
                Ok(Wait::Ready) => continue,
                Ok(Wait::Sleep { off, value }) => {
                    wait::watch(cx, self.mem.addr(off), value, deadline);
                    return Poll::Pending;
                }
            }
        }
    }

    /// Closes the channel from this side (the receiver gets `Closed` after
    /// the messages already sent).
    pub fn close(&mut self) {
        if self.ring.close(&self.mem) {
            self.peer.wake();
        }
    }

    /// For hostile tests: the shared ring memory.
    pub fn shared(&self) -> &impl SharedMem {
        &self.mem
    }

    pub(crate) fn into_mapping(mut self) -> Mapped {
        self.close();
        self.mem
    }
}

/// The receiving end of a channel.
#[derive(Debug)]
pub struct Receiver {
    mem: Mapped,
    ring: Consumer,
    peer: Peer,
    spin: u32,
}

impl Receiver {
    pub(crate) fn new(mem: Mapped, ring: Consumer, peer: Peer) -> Receiver {
        Receiver { mem, ring, peer, spin: DEFAULT_SPIN }
    }

    /// The sending environment.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// The longest message (the buffer [`Receiver::recv`] needs).
    pub fn max_msg(&self) -> usize {
        self.ring.geometry().max_msg()
    }

    /// Messages received so far.
    pub fn received(&self) -> u64 {
        self.ring.received()
    }

    /// How many tries (with `pause`) [`Receiver::recv_blocking`] makes
    /// before it sleeps.
    pub fn set_spin(&mut self, spin: u32) {
        self.spin = spin;
    }

    /// Receives the oldest message into `buf` if there is one
    /// (`WouldBlock` if not); returns its length.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize, ChannelError> {
        match self.ring.try_recv(&self.mem, buf) {
            Ok(d) => {
                if d.wake_peer {
                    self.peer.wake();
                }
                Ok(d.len)
            }
            Err(e) => Err(classify(e, &self.peer)),
        }
    }

    /// Receives a message, sleeping (`SleepOn`) while the ring is empty; no
    /// executor needed. `Closed` once the sender closed and everything was
    /// delivered, `PeerGone` if it died.
    pub fn recv_blocking(&mut self, buf: &mut [u8]) -> Result<usize, ChannelError> {
        self.recv_until(buf, u64::MAX)
    }

    /// [`recv_blocking`](Self::recv_blocking) that gives up at TSC
    /// `deadline` (`WouldBlock`; the wait's slices are at most
    /// [`LIVENESS_POLL_MS`] long, so it ends at most that late): for a
    /// caller that must look at something else now and then (a POSIX
    /// process's signals).
    pub fn recv_until(&mut self, buf: &mut [u8], deadline: u64) -> Result<usize, ChannelError> {
        let mut spins = 0;
        let mut dead = false;
        loop {
            match self.try_recv(buf) {
                Err(ChannelError::WouldBlock) if dead => return Err(ChannelError::PeerGone),
                Err(ChannelError::WouldBlock) if sys::rdtsc() >= deadline => {
                    return Err(ChannelError::WouldBlock);
                }
                Err(ChannelError::WouldBlock) => {}
                r => return r,
            }
            if spins < self.spin {
                spins += 1;
                core::hint::spin_loop();
                continue;
            }
            match self.ring.prepare_wait(&self.mem).map_err(|e| classify(e, &self.peer))? {
                Wait::Ready => {}
                Wait::Sleep { off, value } => {
                    dead = sleep_on_word(self.mem.addr(off), value, &self.peer);
                }
            }
        }
    }

    /// Receives a message into `buf`, waiting (asynchronously) while the
    /// ring is empty; returns its length.
    pub async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, ChannelError> {
        let mut live = Liveness::new();
        poll_fn(|cx| self.poll_recv(cx, buf, &mut live)).await
    }

    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        live: &mut Liveness,
    ) -> Poll<Result<usize, ChannelError>> {
        loop {
            match self.try_recv(buf) {
                Err(ChannelError::WouldBlock) => {}
                r => return Poll::Ready(r),
            }
            match self.poll_wait(cx, live) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// `Ready(Ok)` when a message (or the close) can be received, after
    /// registering the wait with the executor otherwise.
    fn poll_wait(
        &mut self,
        cx: &mut Context<'_>,
        live: &mut Liveness,
    ) -> Poll<Result<(), ChannelError>> {
        let deadline = match live.poll(&self.peer) {
            Ok(d) => d,
            Err(e) => return Poll::Ready(Err(e)),
        };
        match self.ring.prepare_wait(&self.mem) {
            Err(e) => Poll::Ready(Err(classify(e, &self.peer))),
            Ok(Wait::Ready) => Poll::Ready(Ok(())),
            Ok(Wait::Sleep { off, value }) => {
                wait::watch(cx, self.mem.addr(off), value, deadline);
                Poll::Pending
            }
        }
    }

    /// For hand-written futures: `Ready` when [`Receiver::try_recv`] has
    /// something to say (a message or an error), else registers the wait
    /// with the executor and returns `Pending`. It does not check the
    /// peer's liveness: the caller does (see [`Receiver::check_peer`]).
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.ring.prepare_wait(&self.mem) {
            Err(_) | Ok(Wait::Ready) => Poll::Ready(()),
            Ok(Wait::Sleep { off, value }) => {
                wait::watch(cx, self.mem.addr(off), value, u64::MAX);
                Poll::Pending
            }
        }
    }

    /// `Err(PeerGone)` if the sender's environment is gone.
    pub fn check_peer(&self) -> Result<(), ChannelError> {
        if self.peer.alive() { Ok(()) } else { Err(ChannelError::PeerGone) }
    }

    /// Closes the channel from this side (later sends fail with `Closed`).
    pub fn close(&mut self) {
        if self.ring.close(&self.mem) {
            self.peer.wake();
        }
    }

    /// For hostile tests: the shared ring memory.
    pub fn shared(&self) -> &impl SharedMem {
        &self.mem
    }

    pub(crate) fn into_mapping(mut self) -> Mapped {
        self.close();
        self.mem
    }
}

/// Waits until one of `receivers` has a message (or an error) to take;
/// returns its index. The peers of the others are not checked meanwhile.
pub async fn ready_any(receivers: &mut [&mut Receiver]) -> usize {
    let mut lives: [Option<Liveness>; 16] = [const { None }; 16];
    poll_fn(|cx| {
        for (i, r) in receivers.iter_mut().enumerate() {
            let live = lives[i % 16].get_or_insert_with(Liveness::new);
            if r.poll_wait(cx, live).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    })
    .await
}
