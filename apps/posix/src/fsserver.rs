//! The file server of a POSIX run: one environment owns the tree, every
//! process reaches it through request slots in shared memory
//! (`libos_posix::fs::remote` is the protocol; this is the transport and
//! the server's loop).
//!
//! **Start.** The run's first process builds the tree from the initrd,
//! makes the slot region (`libos_async::shared::alloc`: committed now and
//! shared writable with every environment forked afterwards, generations
//! down) and forks the server (`fork_on`, a sixteenth of its quota, at most
//! [`SERVER_QUOTA_MAX`] frames, on the next user core; its children then
//! share out the rest, `procs`). Every byte written to the tree lives in
//! that quota: past it, writes fail with `ENOSPC`. The server keeps
//! the forked copy of the tree and serves forever; the first process and
//! every process forked later turn their own copy into a client
//! (`Fs::set_remote`). When the first process ends, it destroys the server
//! (`ChildDestroy`); processes still running then get `EIO` from their next
//! request.
//!
//! **A request.** [`SLOTS`] slots of [`SLOT_BYTES`] each: word 0 the state
//! (`FREE`, `CLAIMED`, `REQUEST`, `ANSWER`), word 1 the claimer's tag (its
//! id plus one), word 2 the message length, the message from byte 64. A
//! client claims a free slot (compare-and-swap of the state), writes the
//! request, sets `REQUEST`, sends the server an `Acall` and sleeps on "state
//! is not `REQUEST`" (with a deadline: it checks at most every
//! [`WAIT_NS`] and gives up with `EIO` after [`GIVE_UP_NS`]). The server
//! takes its event-queue tail, scans every slot for `REQUEST`, copies the
//! request into its own memory, answers it (`remote::Server::serve`) into the slot,
//! sets `ANSWER` and `Acall`s the tag's environment; then it sleeps until
//! its event tail moves. A request stored before the tail was read is seen
//! by the scan; one stored after it comes with an `Acall` that moves the
//! tail: no wake-up is lost.
//!
//! **Hostile peers.** Every process of the tree maps the whole region. The
//! server reads each slot's words once into its own memory, bounds the
//! length by the slot, and `serve` checks everything else; a garbage slot
//! costs it one errno answer. A client bounds the answer's length the same
//! way and `remote::Client` parses it with checks (malformed: `EIO`). A
//! peer can thus fake or stall the answers of requests in flight, or hold
//! slots (others then wait, then `EIO`), and nothing else: it cannot make
//! the server or another client panic, read out of bounds or loop.

use crate::shmcopy;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use libos_async::abi::PAGE_SIZE;
use libos_async::{Pred, info, sys};
use libos_posix::fs::Fs;
use libos_posix::fs::remote::{self, Transport};
use libos_posix::linux::SysResult;
use libos_posix::linux::errno::EIO;

/// Request slots (requests in flight at once, over all processes).
pub const SLOTS: usize = 8;
/// Bytes per slot: a 64-byte header and the message, in whole pages.
pub const SLOT_BYTES: usize = (HEADER + remote::MAX_MESSAGE).div_ceil(PAGE) * PAGE;
const PAGE: usize = PAGE_SIZE as usize;
const HEADER: usize = 64;
const _: () = assert!(SLOT_BYTES - HEADER >= remote::MAX_MESSAGE);

const FREE: u64 = 0;
const CLAIMED: u64 = 1;
const REQUEST: u64 = 2;
const ANSWER: u64 = 3;

/// The longest a client sleeps before it looks again.
const WAIT_NS: u64 = 10_000_000;
/// The longest a client sleeps when every slot is taken.
const FULL_NS: u64 = 200_000;
/// How long a client waits for a slot or an answer before `EIO`.
const GIVE_UP_NS: u64 = 10_000_000_000;
/// The most quota the server gets (64 MiB).
pub const SERVER_QUOTA_MAX: u64 = 16384;

/// The region's base (0: no server), and the server's id; both set before
/// any fork after the server's, so every process inherits them.
static BASE: AtomicU64 = AtomicU64::new(0);
static SERVER: AtomicU64 = AtomicU64::new(0);
/// The quota the server got, and from whom.
static GIVEN: AtomicU64 = AtomicU64::new(0);
static CREATOR: AtomicU64 = AtomicU64::new(0);

/// The part of this environment's quota that went to the server (0 but
/// in the first process), for [`crate::procs`] to share out the rest.
pub fn quota_given() -> u64 {
    if CREATOR.load(Ordering::Relaxed) == u64::from(info().env_id) {
        GIVEN.load(Ordering::Relaxed)
    } else {
        0
    }
}

fn slot_words(i: usize) -> &'static [AtomicU64] {
    let base = BASE.load(Ordering::Relaxed);
    // SAFETY: `BASE` is set only by `start`, to a region of `SLOTS *
    // SLOT_BYTES` committed read-write bytes from `shared::alloc` that this
    // environment (and every one forked from it) keeps mapped for its
    // whole life (the region is never released). Its bytes are only ever
    // accessed as atomics, here and in the peers mapping it, so an
    // `AtomicU64` view is sound whatever they write.
    unsafe {
        core::slice::from_raw_parts(
            (base + (i * SLOT_BYTES) as u64) as *const AtomicU64,
            SLOT_BYTES / 8,
        )
    }
}

fn tsc_after(ns: u64) -> u64 {
    let hz = info().tsc_hz.max(1);
    sys::rdtsc().saturating_add((u128::from(ns) * u128::from(hz) / 1_000_000_000) as u64)
}

/// Makes the slot region and forks the server, which never returns from
/// here. Returns `false` (and leaves the run on per-process trees, as
/// before the server existed) when either cannot be had.
pub fn start(fs: &mut Fs<'static>) -> bool {
    let region = match libos_async::shared::alloc("fs-slots", (SLOTS * SLOT_BYTES) as u64) {
        Ok(r) => r,
        Err(e) => {
            crate::glue::log_line(&alloc::format!("posix: no file server (slots: {e:?})"));
            return false;
        }
    };
    // The region stays mapped for the environment's life (a `Region` has
    // no `Drop`: only `shared::release` would give it back).
    BASE.store(region.base(), Ordering::Relaxed);
    let quota = (u64::from(info().frame_quota) / 16).clamp(1024, SERVER_QUOTA_MAX);
    let core = crate::procs::next_core(sys::core_id());
    crate::procs::FORKED.store(true, Ordering::Release);
    match libos_async::fork::fork_on(quota, core) {
        Ok(Some(id)) => {
            SERVER.store(id, Ordering::Relaxed);
            GIVEN.store(quota, Ordering::Relaxed);
            CREATOR.store(u64::from(info().env_id), Ordering::Relaxed);
            fs.set_remote(alloc::boxed::Box::new(Slots));
            true
        }
        Ok(None) => {
            serve(core::mem::replace(fs, Fs::new(alloc::boxed::Box::new(crate::glue::Con::new()))))
        }
        Err(e) => {
            crate::glue::log_line(&alloc::format!("posix: no file server (fork: {e:?})"));
            BASE.store(0, Ordering::Relaxed);
            false
        }
    }
}

/// Ends the server (the first process, at its end).
pub fn stop() {
    if crate::procs::IS_CHILD.load(Ordering::Acquire) {
        return;
    }
    let id = SERVER.swap(0, Ordering::Relaxed);
    if id != 0 {
        let _ = sys::child_destroy(id);
    }
}

/// The server's loop.
fn serve(fs: Fs<'static>) -> ! {
    // The archive's bytes are read through our own mapping of the initrd
    // (`InitrdMap` frames are not shared by fork).
    match sys::initrd_map(crate::layout::INITRD_VA) {
        Ok(_) | Err(libos_async::abi::Error::AlreadyMapped) => {}
        Err(e) => {
            crate::glue::log_line(&alloc::format!(
                "posix: the file server cannot map the initrd: {e:?}"
            ));
            sys::exit(1);
        }
    }
    let mut server = remote::Server::new(fs);
    // Nothing of the program's world is ours: no redirection, no signals.
    let mut req = vec![0u8; SLOT_BYTES];
    loop {
        let mark = sys::event_tail();
        for i in 0..SLOTS {
            let w = slot_words(i);
            if w[0].load(Ordering::SeqCst) != REQUEST {
                continue;
            }
            let tag = w[1].load(Ordering::SeqCst);
            let len = usize::try_from(w[2].load(Ordering::SeqCst)).unwrap_or(usize::MAX);
            let answer = if len <= SLOT_BYTES - HEADER {
                shmcopy::copy_out(w, HEADER, &mut req[..len]);
                server.serve(&req[..len])
            } else {
                server.serve(&[]) // EINVAL
            };
            let n = answer.len().min(SLOT_BYTES - HEADER);
            shmcopy::copy_in(w, HEADER, &answer[..n]);
            w[2].store(n as u64, Ordering::SeqCst);
            // Only if the slot is still the request we answered.
            if w[0].compare_exchange(REQUEST, ANSWER, Ordering::SeqCst, Ordering::SeqCst).is_ok()
                && tag != 0
                && tag <= u64::from(u32::MAX) + 1
            {
                let _ = sys::acall(tag - 1, 0, 0);
            }
        }
        if Pred::events_ne(mark).sleep().is_err() {
            let _ = sys::yield_now();
        }
    }
}

/// The clients' transport.
pub struct Slots;

impl Transport for Slots {
    fn call(&mut self, req: &[u8]) -> SysResult<Vec<u8>> {
        let server = SERVER.load(Ordering::Relaxed);
        if BASE.load(Ordering::Relaxed) == 0 || server == 0 || req.len() > SLOT_BYTES - HEADER {
            return Err(EIO);
        }
        let me = u64::from(info().env_id) + 1;
        let give_up = tsc_after(GIVE_UP_NS);
        // Claim a slot, starting from one spread by id.
        let mut i = (me as usize) % SLOTS;
        let w = loop {
            let w = slot_words(i);
            if w[0].compare_exchange(FREE, CLAIMED, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                break w;
            }
            i = (i + 1) % SLOTS;
            if i == (me as usize) % SLOTS {
                if sys::rdtsc() > give_up {
                    return Err(EIO);
                }
                // All taken: sleep (a slot that frees wakes nobody, so in
                // short steps) rather than spin — spinners on every core
                // would starve the server that frees them.
                let state = &slot_words(i)[0] as *const AtomicU64 as u64;
                let p = Pred::word_eq(state, FREE).either(Pred::deadline(tsc_after(FULL_NS)));
                if p.sleep().is_err() {
                    let _ = sys::yield_now();
                }
            }
        };
        w[1].store(me, Ordering::SeqCst);
        shmcopy::copy_in(w, HEADER, req);
        w[2].store(req.len() as u64, Ordering::SeqCst);
        w[0].store(REQUEST, Ordering::SeqCst);
        let result = (|| {
            sys::acall(server, 0, 0).map_err(|_| EIO)?;
            loop {
                let s = w[0].load(Ordering::SeqCst);
                if s != REQUEST {
                    break;
                }
                if sys::rdtsc() > give_up {
                    return Err(EIO);
                }
                let state = &w[0] as *const AtomicU64 as u64;
                let p = Pred::word_ne(state, REQUEST).either(Pred::deadline(tsc_after(WAIT_NS)));
                if p.sleep().is_err() {
                    let _ = sys::yield_now();
                }
                // Still no answer: a server that is gone refuses the call.
                if w[0].load(Ordering::SeqCst) == REQUEST && sys::acall(server, 0, 0).is_err() {
                    return Err(EIO);
                }
            }
            let len = usize::try_from(w[2].load(Ordering::SeqCst)).map_err(|_| EIO)?;
            if len > SLOT_BYTES - HEADER {
                return Err(EIO);
            }
            let mut out = vec![0u8; len];
            shmcopy::copy_out(w, HEADER, &mut out);
            Ok(out)
        })();
        w[1].store(0, Ordering::SeqCst);
        w[0].store(FREE, Ordering::SeqCst);
        result
    }
}
