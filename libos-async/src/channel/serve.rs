//! A ready-made server loop: accept clients, answer every request, until
//! the expected number of clients have come and gone.

use core::future::poll_fn;
use core::task::Poll;

use super::wait::{self, ms_to_tsc};
use super::{ChannelError, Listener, ServerConn};
use crate::sys;

/// Most connections [`serve`] holds at once.
pub const MAX_CONNS: usize = 8;

/// How a connection ended, for [`serve`]'s handler and statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Clients accepted.
    pub accepted: u64,
    /// Requests answered.
    pub requests: u64,
    /// Connections the client closed.
    pub closed: u64,
    /// Connections whose client died.
    pub gone: u64,
    /// Connections dropped because the client corrupted a ring.
    pub corrupt: u64,
}

/// What the request handler is told about.
pub enum Event<'a> {
    /// Client `conn` (its index in the connection table) connected.
    Connected(usize, &'a ServerConn),
    /// A request: answer into the buffer and return `Some(reply length)`,
    /// or `None` to send no reply (one-way messages).
    Request(usize, &'a [u8]),
    /// The connection ended with this error (`Closed`, `PeerGone`,
    /// `Corrupt`, ...).
    Ended(usize, ChannelError),
}

/// Accepts clients on `listener` and answers their requests with
/// `handler(event, reply_buf) -> Option<reply length>` (for
/// [`Event::Request`]; ignored otherwise), until `clients` connections have
/// been accepted and have all ended, or `idle_ms` pass without any client
/// connected. Each connection is served in turn; a waiting server sleeps
/// on all of their request rings at once (and on notifications, for new
/// clients).
pub async fn serve(
    listener: &mut Listener,
    clients: u64,
    idle_ms: u64,
    mut handler: impl FnMut(Event<'_>, &mut [u8]) -> Option<usize>,
) -> ServeStats {
    let mut stats = ServeStats::default();
    let mut conns: [Option<ServerConn>; MAX_CONNS] = [const { None }; MAX_CONNS];
    let mut req = [0u8; 4096];
    let mut reply = [0u8; 4096];
    let mut seen = u64::MAX;
    let mut next_scan = 0;
    let mut next_live = 0;
    let mut idle_since = sys::rdtsc();
    loop {
        let open = conns.iter().filter(|c| c.is_some()).count();
        if stats.accepted >= clients && open == 0 {
            return stats;
        }
        if open == 0 && sys::rdtsc() - idle_since > ms_to_tsc(idle_ms) {
            return stats;
        }
        // New clients: when notified, and every 10 ms.
        let now_seen = sys::notifications();
        if (now_seen != seen || sys::rdtsc() >= next_scan) && open < MAX_CONNS {
            seen = now_seen;
            next_scan = sys::rdtsc() + ms_to_tsc(10);
            if let Ok(Some(conn)) = listener.try_accept() {
                let slot = conns.iter().position(|c| c.is_none()).unwrap_or(0);
                stats.accepted += 1;
                handler(Event::Connected(slot, &conn), &mut reply);
                conns[slot] = Some(conn);
                continue;
            }
        }
        let mut progressed = false;
        let live_check = sys::rdtsc() >= next_live;
        if live_check {
            next_live = sys::rdtsc() + ms_to_tsc(super::LIVENESS_POLL_MS);
        }
        for (i, slot) in conns.iter_mut().enumerate() {
            let Some(conn) = slot else { continue };
            let result = match conn.rx.try_recv(&mut req) {
                Err(ChannelError::WouldBlock) if live_check => conn.rx.check_peer(),
                Ok(n) => {
                    progressed = true;
                    stats.requests += 1;
                    match handler(Event::Request(i, &req[..n]), &mut reply) {
                        Some(len) => conn.tx.send(&reply[..len.min(reply.len())]).await,
                        None => Ok(()),
                    }
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) | Err(ChannelError::WouldBlock) => {}
                Err(e) => {
                    match e {
                        ChannelError::Closed => stats.closed += 1,
                        ChannelError::PeerGone => stats.gone += 1,
                        _ => stats.corrupt += 1,
                    }
                    handler(Event::Ended(i, e), &mut reply);
                    if let Some(conn) = slot.take() {
                        conn.close();
                    }
                    idle_since = sys::rdtsc();
                    progressed = true;
                }
            }
        }
        if progressed {
            continue;
        }
        // Nothing to do: wait for a request, a notification or the scan.
        let mut rxs = conns.iter_mut().flatten().map(|c| &mut c.rx);
        let mut arr: [Option<&mut super::Receiver>; MAX_CONNS] = [const { None }; MAX_CONNS];
        for (a, r) in arr.iter_mut().zip(&mut rxs) {
            *a = Some(r);
        }
        poll_fn(|cx| {
            let now = sys::rdtsc();
            if sys::notifications() != seen || now >= next_scan || now >= next_live {
                return Poll::Ready(());
            }
            wait::watch_deadline(next_scan.min(next_live));
            for r in arr.iter_mut().flatten() {
                if r.poll_ready(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await;
    }
}
