//! Channels of the async library OS as descriptors
//! ([`libos_posix::chan::ChanHost`]): `/dev/chan/NAME` is a client
//! connection (`libos_async::channel::connect`) to the server environment
//! named NAME — the `kv` service, for one — so a shell pipeline can drive
//! a libos-async service.
//!
//! Connections are this environment's (their rings are granted to it): a
//! forked child forgets the ones it inherited without touching them (the
//! memory it would touch is its parent's rings, not mapped in the child),
//! and `libos_posix::chan` connects the child anew on its first use.

use alloc::vec::Vec;
use libos_async::channel::{self, ChannelError, ClientConn};
use libos_async::{info, sys};
use libos_posix::chan::ChanHost;
use libos_posix::linux::SysResult;
use libos_posix::linux::errno::{EAGAIN, EINVAL, EIO, EMFILE, ENOENT, EPIPE};

/// How long `open` waits for the server to be there (a service started in
/// the same boot may still be coming up).
const CONNECT_MS: u64 = 5_000;
/// The most connections one process holds.
const MAX_CONNS: usize = 16;

/// The process's connections (index + 1 is the id the core holds).
#[derive(Default)]
pub struct ChanGlue {
    conns: Vec<Option<ClientConn>>,
}

fn error(e: ChannelError) -> libos_posix::linux::Errno {
    match e {
        ChannelError::Closed | ChannelError::PeerGone => EPIPE,
        ChannelError::WouldBlock => EAGAIN,
        _ => EIO,
    }
}

impl ChanGlue {
    fn slot(&mut self, id: u64) -> Option<&mut Option<ClientConn>> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        self.conns.get_mut(i)
    }

    fn conn(&mut self, id: u64) -> SysResult<&mut ClientConn> {
        self.slot(id).and_then(Option::as_mut).ok_or(EIO)
    }

    fn take(&mut self, id: u64) -> Option<ClientConn> {
        self.slot(id).and_then(Option::take)
    }
}

impl ChanHost for ChanGlue {
    fn connect(&mut self, name: &[u8]) -> SysResult<u64> {
        let name = core::str::from_utf8(name).map_err(|_| EINVAL)?;
        let slot = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.conns.len() < MAX_CONNS => {
                self.conns.push(None);
                self.conns.len() - 1
            }
            None => return Err(EMFILE),
        };
        let conn = channel::connect(name, CONNECT_MS).map_err(|e| match e {
            ChannelError::TimedOut => ENOENT,
            e => error(e),
        })?;
        self.conns[slot] = Some(conn);
        Ok(slot as u64 + 1)
    }

    fn send(&mut self, id: u64, msg: &[u8]) -> SysResult<()> {
        self.conn(id)?.tx.send_blocking(msg).map_err(error)
    }

    fn recv(&mut self, id: u64, buf: &mut [u8], wait_ns: u64) -> SysResult<Option<usize>> {
        let rx = &mut self.conn(id)?.rx;
        let ticks = (u128::from(wait_ns) * u128::from(info().tsc_hz) / 1_000_000_000) as u64;
        let got = if wait_ns == 0 {
            rx.try_recv(buf)
        } else {
            rx.recv_until(buf, sys::rdtsc().saturating_add(ticks))
        };
        match got {
            Ok(n) => Ok(Some(n)),
            Err(ChannelError::Closed | ChannelError::PeerGone) => Ok(None),
            Err(e) => Err(error(e)),
        }
    }

    fn close(&mut self, id: u64) {
        if let Some(c) = self.take(id) {
            c.close();
        }
    }

    fn max_message(&mut self, id: u64) -> usize {
        // The server chose the rings' geometry.
        self.conn(id).map_or(0, |c| c.tx.max_msg().min(c.rx.max_msg()))
    }

    fn forget(&mut self, id: u64) {
        // Dropped without `close`: the parent's rings and hello frame are
        // nothing of ours to unmap or free (no end has a `Drop` that would).
        let _ = self.take(id);
    }
}
