//! Connection set-up between environments: doorbell frames, the hello
//! page, and the frames of a connection's two rings.
//!
//! See the protocol in the [parent module](super).

use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use abi::{Error, FrameHolder, PAGE_SIZE, Rights};

use super::ChannelError;
use super::endpoint::{Peer, Receiver, Sender};
use super::ring::{self, Consumer, Geometry, Producer, SharedMem};
use super::shm::{self, Mapped};
use super::wait::ms_to_tsc;
use crate::predicate::Pred;
use crate::sys;

/// First frame number of the doorbell area (128 MiB).
pub const DOORBELL_BASE: u64 = 0x8000;
/// Frames in the doorbell area.
pub const DOORBELL_SPAN: u64 = 0x8000;
/// Doorbell candidates per server.
pub const DOORBELL_PROBES: u64 = 32;
/// Most pages per ring.
pub const MAX_RING_PAGES: usize = 8;

/// `b"EXOHELLO"`.
pub const HELLO_MAGIC: u64 = u64::from_le_bytes(*b"EXOHELLO");

/// Hello page words (byte offsets).
mod hello {
    /// [`super::HELLO_MAGIC`] (client).
    pub const MAGIC: usize = 0;
    /// The client's environment id (client).
    pub const CLIENT: usize = 8;
    /// 0 asking (client), [`ACCEPTED`] or [`REFUSED`] (server).
    pub const STATE: usize = 16;
    /// Pages per ring (server).
    pub const PAGES: usize = 24;
    /// Longest message (server).
    pub const MAX_MSG: usize = 32;
    /// Request ring frames, `PAGES` words (server).
    pub const REQUEST: usize = 64;
    /// Reply ring frames, `PAGES` words (server).
    pub const REPLY: usize = 128;
    /// Server says: accepted, frames granted.
    pub const ACCEPTED: u64 = 1;
    /// Server says: refused (out of frames or connections).
    pub const REFUSED: u64 = 2;
}

/// The `k`-th doorbell candidate of server `env`: a fixed pseudo-random
/// frame in the doorbell area (splitmix64 of `env` and `k`).
pub fn doorbell(env: u64, k: u64) -> u64 {
    let mut z = env.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k.wrapping_add(0x632b_e59b_d9b4_e019);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    DOORBELL_BASE + z % DOORBELL_SPAN
}

/// The shape of a connection's rings, chosen by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Pages per ring (1..=[`MAX_RING_PAGES`]).
    pub pages: usize,
    /// Longest message.
    pub max_msg: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { pages: 1, max_msg: 56 }
    }
}

impl Config {
    fn geometry(self) -> Result<Geometry, ChannelError> {
        if self.pages == 0 || self.pages > MAX_RING_PAGES {
            return Err(ChannelError::TooLarge);
        }
        Geometry::fit(self.pages * PAGE_SIZE as usize, self.max_msg).ok_or(ChannelError::TooLarge)
    }
}

/// A server's side of a connection: requests in, replies out.
#[derive(Debug)]
pub struct ServerConn {
    /// Requests from the client.
    pub rx: Receiver,
    /// Replies to the client.
    pub tx: Sender,
    frames: [u64; 2 * MAX_RING_PAGES],
    pages: usize,
}

impl ServerConn {
    /// The client.
    pub fn client(&self) -> Peer {
        self.rx.peer()
    }

    /// Closes both rings, withdraws the client's grants (the kernel unmaps
    /// them there), unmaps and frees the frames.
    pub fn close(self) {
        let client = self.rx.peer().env;
        let rx = self.rx.into_mapping();
        let tx = self.tx.into_mapping();
        for &f in &self.frames[..2 * self.pages] {
            let _ = sys::frame_revoke(f, client);
        }
        rx.unmap();
        tx.unmap();
        for &f in &self.frames[..2 * self.pages] {
            let _ = sys::frame_free(f);
        }
    }
}

/// A client's side of a connection: requests out, replies in.
#[derive(Debug)]
pub struct ClientConn {
    /// Requests to the server.
    pub tx: Sender,
    /// Replies from the server.
    pub rx: Receiver,
    hello: u64,
}

impl ClientConn {
    /// The server.
    pub fn server(&self) -> Peer {
        self.tx.peer()
    }

    /// Closes both rings, unmaps them and frees the hello frame (the
    /// server's liveness token for this client).
    pub fn close(self) {
        self.tx.into_mapping().unmap();
        self.rx.into_mapping().unmap();
        let _ = sys::frame_free(self.hello);
    }
}

/// A server's doorbell listener.
#[derive(Debug)]
pub struct Listener {
    me: u64,
    config: Config,
    geom: Geometry,
}

impl Listener {
    /// A listener for this environment with rings shaped by `config`.
    pub fn new(config: Config) -> Result<Listener, ChannelError> {
        let geom = config.geometry()?;
        shm::ensure_fault_handling()?;
        Ok(Listener { me: crate::env_id(), config, geom })
    }

    /// Scans the doorbells once; returns the first new connection.
    pub fn try_accept(&mut self) -> Result<Option<ServerConn>, ChannelError> {
        for k in 0..DOORBELL_PROBES {
            let frame = doorbell(self.me, k);
            let Ok(status) = sys::frame_status(frame) else { continue };
            if status.holder() != Some(FrameHolder::Owned) || status.env == self.me {
                continue;
            }
            // Fails (NotOwner) unless that environment granted it to us.
            let Ok(page) = shm::map_frames(&[frame], Rights::RW) else { continue };
            let result = self.answer(&page, Peer { env: status.env, token: frame });
            page.unmap();
            if let Some(conn) = result? {
                let _ = shm::notify(status.env);
                return Ok(Some(conn));
            }
        }
        Ok(None)
    }

    /// Reads a mapped hello page; accepts a well-formed request.
    fn answer(&self, page: &Mapped, client: Peer) -> Result<Option<ServerConn>, ChannelError> {
        if page.load(hello::MAGIC, Acquire) != HELLO_MAGIC
            || page.load(hello::CLIENT, Relaxed) != client.env
            || page.load(hello::STATE, Relaxed) != 0
        {
            return Ok(None);
        }
        match self.make_rings(client) {
            Ok(conn) => {
                page.store(hello::PAGES, self.config.pages as u64, Relaxed);
                page.store(hello::MAX_MSG, self.config.max_msg as u64, Relaxed);
                for i in 0..self.config.pages {
                    page.store(hello::REQUEST + 8 * i, conn.frames[i], Relaxed);
                    page.store(hello::REPLY + 8 * i, conn.frames[conn.pages + i], Relaxed);
                }
                page.store(hello::STATE, hello::ACCEPTED, Release);
                Ok(Some(conn))
            }
            Err(_) => {
                page.store(hello::STATE, hello::REFUSED, Release);
                Ok(None)
            }
        }
    }

    /// Allocates, maps and initializes both rings and grants their frames
    /// to the client.
    fn make_rings(&self, client: Peer) -> Result<ServerConn, ChannelError> {
        let pages = self.config.pages;
        let mut frames = [0u64; 2 * MAX_RING_PAGES];
        let mut n = 0;
        let result = (|| {
            while n < 2 * pages {
                frames[n] = sys::frame_alloc(None)?;
                n += 1;
            }
            for &f in &frames[..n] {
                sys::frame_grant(f, client.env, Rights::RW)?;
            }
            Ok::<(), Error>(())
        })();
        let undo = |frames: &[u64]| {
            for &f in frames {
                let _ = sys::frame_revoke(f, client.env);
                let _ = sys::frame_free(f);
            }
        };
        if let Err(e) = result {
            undo(&frames[..n]);
            return Err(e.into());
        }
        let maps = shm::map_frames(&frames[..pages], Rights::RW).and_then(|req| {
            match shm::map_frames(&frames[pages..2 * pages], Rights::RW) {
                Ok(rep) => Ok((req, rep)),
                Err(e) => {
                    req.unmap();
                    Err(e)
                }
            }
        });
        let (req, rep) = match maps {
            Ok(m) => m,
            Err(e) => {
                undo(&frames[..n]);
                return Err(e.into());
            }
        };
        ring::init(&req, self.geom)?;
        ring::init(&rep, self.geom)?;
        let rx = Consumer::attach(&req, self.geom)?;
        let tx = Producer::attach(&rep, self.geom)?;
        Ok(ServerConn {
            rx: Receiver::new(req, rx, client),
            tx: Sender::new(rep, tx, client),
            frames,
            pages,
        })
    }

    /// Waits (blocking) up to `ms` milliseconds for a connection.
    pub fn accept_blocking(&mut self, ms: u64) -> Result<ServerConn, ChannelError> {
        let deadline = sys::rdtsc() + ms_to_tsc(ms);
        loop {
            let seen = sys::notifications();
            if let Some(conn) = self.try_accept()? {
                return Ok(conn);
            }
            let now = sys::rdtsc();
            if now >= deadline {
                return Err(ChannelError::TimedOut);
            }
            // A client notifies us after ringing; poll every 10 ms anyway.
            let _ = Pred::notifications_ne(seen)
                .either(Pred::deadline(deadline.min(now + ms_to_tsc(10))))
                .sleep();
        }
    }
}

/// Connects to the server started from application `name` (waiting up to
/// `ms` milliseconds for it to start and answer).
pub fn connect(name: &str, ms: u64) -> Result<ClientConn, ChannelError> {
    let deadline = sys::rdtsc() + ms_to_tsc(ms);
    let server = crate::find_env(name, ms).map_err(|_| ChannelError::TimedOut)?;
    connect_env(server, deadline)
}

/// Connects to server environment `server`; gives up at TSC `deadline`.
pub fn connect_env(server: u64, deadline: u64) -> Result<ClientConn, ChannelError> {
    shm::ensure_fault_handling()?;
    let frame = (0..DOORBELL_PROBES)
        .map(|k| doorbell(server, k))
        .find(|&f| sys::frame_alloc(Some(f)).is_ok())
        .ok_or(ChannelError::Sys(Error::Busy))?;
    let page = match shm::map_frames(&[frame], Rights::RW) {
        Ok(p) => p,
        Err(e) => {
            let _ = sys::frame_free(frame);
            return Err(e.into());
        }
    };
    let result = ring_and_wait(server, frame, &page, deadline);
    let _ = sys::frame_revoke(frame, server);
    page.unmap();
    match result {
        Ok((tx, rx)) => Ok(ClientConn { tx, rx, hello: frame }),
        Err(e) => {
            let _ = sys::frame_free(frame);
            Err(e)
        }
    }
}

fn ring_and_wait(
    server: u64,
    frame: u64,
    page: &Mapped,
    deadline: u64,
) -> Result<(Sender, Receiver), ChannelError> {
    page.store(hello::CLIENT, crate::env_id(), Relaxed);
    page.store(hello::STATE, 0, Relaxed);
    page.store(hello::MAGIC, HELLO_MAGIC, Release);
    sys::frame_grant(frame, server, Rights::RW)?;
    let _ = shm::notify(server);
    let state_addr = page.addr(hello::STATE);
    loop {
        let state = page.load(hello::STATE, Acquire);
        if state == hello::ACCEPTED {
            break;
        }
        if state != 0 {
            return Err(ChannelError::Sys(Error::Busy));
        }
        let now = sys::rdtsc();
        if now >= deadline {
            return Err(ChannelError::TimedOut);
        }
        let _ = Pred::word_ne(state_addr, 0)
            .either(Pred::deadline(deadline.min(now + ms_to_tsc(20))))
            .sleep();
    }
    // The server's answer is untrusted: sizes, and frames it must own.
    let pages = page.load(hello::PAGES, Relaxed) as usize;
    let max_msg = page.load(hello::MAX_MSG, Relaxed) as usize;
    let geom = Config { pages, max_msg }.geometry()?;
    let mut frames = [0u64; 2 * MAX_RING_PAGES];
    for i in 0..pages {
        frames[i] = page.load(hello::REQUEST + 8 * i, Relaxed);
        frames[pages + i] = page.load(hello::REPLY + 8 * i, Relaxed);
    }
    let token = frames[0];
    let peer = Peer { env: server, token };
    if !peer.alive() {
        return Err(ChannelError::Corrupt("ring frame not owned by the server"));
    }
    let req = shm::map_frames(&frames[..pages], Rights::RW)?;
    let rep = match shm::map_frames(&frames[pages..2 * pages], Rights::RW) {
        Ok(m) => m,
        Err(e) => {
            req.unmap();
            return Err(e.into());
        }
    };
    let attached =
        Producer::attach(&req, geom).and_then(|p| Ok((p, Consumer::attach(&rep, geom)?)));
    match attached {
        Ok((p, c)) => Ok((Sender::new(req, p, peer), Receiver::new(rep, c, peer))),
        Err(e) => {
            req.unmap();
            rep.unmap();
            Err(e)
        }
    }
}
