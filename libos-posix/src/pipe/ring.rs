//! The pipe ring: a byte queue in a frame shared by every process holding
//! an end, and the sleep/wake rendezvous on its header words.
//!
//! # Layout (all words little-endian `u64`, in the shared frame)
//!
//! | word | name | written by |
//! |---|---|---|
//! | 0 | `head`: bytes ever written (free-running) | writers, under `wlock` |
//! | 1 | `tail`: bytes ever read (free-running) | readers, under `rlock` |
//! | 2 | `readers`: open read descriptions, all processes | opening/closing readers |
//! | 3 | `writers`: open write descriptions, all processes | opening/closing writers |
//! | 4 | `reader_waiting`: a reader may sleep on `head`/`writers` | readers set, writers clear |
//! | 5 | `writer_waiting`: a writer may sleep on `tail`/`readers` | writers set, readers clear |
//! | 6 | `wlock`: 1 while a writer copies in | writers |
//! | 7 | `rlock`: 1 while a reader copies out | readers |
//!
//! The data area holds [`Frame::capacity`] bytes; byte `i` of the stream
//! lives at `i mod capacity`.
//!
//! # Every shared word is hostile
//!
//! Any process holding an end can write anything into the frame at any
//! time. This side therefore never trusts a value it loads:
//!
//! - the capacity is this side's own constant ([`Frame::capacity`], a power
//!   of two), never read from the frame; every data offset is
//!   `index & (capacity - 1)` and every copy length is at most the free (or
//!   used) space computed below, itself at most `capacity`, and the copy is
//!   split at the end of the area — so no copy leaves the data area;
//! - `head - tail` (wrapping) above `capacity` is a corrupt frame: the
//!   operation fails with [`Stop::Corrupt`] (the caller answers `EIO`)
//!   instead of guessing;
//! - every operation is a bounded number of loads, stores and at most two
//!   copies: no loop here runs on a value from the frame. Waiting is the
//!   caller's business and always ends in a system call (`SleepOn`), so a
//!   peer that keeps changing words makes us re-check, never spin;
//! - what a peer *can* do is what it could do honestly or by closing its
//!   end: fake data, fake end-of-file or `EPIPE` (by zeroing a count), or
//!   stall the pipe (by holding a lock or never reading). Locks are only a
//!   courtesy between honest processes: a waiter for a lock sleeps with a
//!   deadline and tries again, so a lock held forever stalls this pipe and
//!   nothing else.
//!
//! # No lost wake-ups
//!
//! A reader that finds the ring empty *announces* itself before sleeping:
//! it stores `reader_waiting = 1`, then loads `head` and `writers` again
//! (sequentially consistent), and sleeps only on a predicate "`head` !=
//! what I saw, or `writers` == 0" built from those second loads. A writer
//! stores `head` (or a closer decrements `writers`), then swaps
//! `reader_waiting` to 0 and, if it was set, wakes the readers. In the
//! single total order of these sequentially consistent accesses, either the
//! reader's second load of `head` comes after the writer's store — then
//! the predicate is already true when `SleepOn` installs it (the kernel
//! evaluates a predicate at install) and the reader does not sleep — or the
//! writer's swap comes after the reader's store of the flag — then the
//! writer sees 1 and wakes it; the wake is an event for the sleeper's
//! environment, on which the kernel re-evaluates the predicate. Writers
//! waiting for space are the mirror image (`writer_waiting`, `tail`,
//! `readers`). A wake clears the flag for every sleeper at once, so the
//! caller wakes *all* environments sleeping on that side; a sleeper that
//! wakes without progress announces itself again. `loom` checks this
//! protocol (module `loom` beside the tests).

/// Index of a header word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Word {
    /// Bytes ever written.
    Head = 0,
    /// Bytes ever read.
    Tail = 1,
    /// Open read descriptions.
    Readers = 2,
    /// Open write descriptions.
    Writers = 3,
    /// A reader may be asleep.
    ReaderWaiting = 4,
    /// A writer may be asleep.
    WriterWaiting = 5,
    /// A writer is copying in.
    WLock = 6,
    /// A reader is copying out.
    RLock = 7,
}

/// Number of header words.
pub const HEADER_WORDS: usize = 8;

/// Linux's default pipe capacity (`pipe_max_size` default, 16 pages).
pub const CAPACITY: usize = 64 * 1024;

/// Writes of at most this many bytes are atomic (`PIPE_BUF`).
pub const PIPE_BUF: usize = 4096;

/// The shared frame as one side sees it: header words and the data area.
///
/// All word accesses are sequentially consistent (the wake-up argument in
/// the module doc needs it of the flag and index accesses; the others
/// cost the same on x86-64 except stores, which are rare). Data copies
/// need no ordering of their own: the store of `head`/`tail` that follows
/// a copy and the load that precedes the peer's copy order them.
pub trait Frame {
    /// Size of the data area: a power of two, at most [`CAPACITY`].
    /// This side's constant, never read from shared memory.
    fn capacity(&self) -> usize;
    /// Loads word `w`.
    fn load(&self, w: Word) -> u64;
    /// Stores `v` into word `w`.
    fn store(&self, w: Word, v: u64);
    /// Atomically replaces word `w` with `v`; returns the old value.
    fn swap(&self, w: Word, v: u64) -> u64;
    /// Atomically adds `d` (wrapping) to word `w`; returns the old value.
    fn fetch_add(&self, w: Word, d: u64) -> u64;
    /// Atomically sets word `w` to `new` if it is `old`; whether it did.
    fn compare_exchange(&self, w: Word, old: u64, new: u64) -> bool;
    /// Copies data bytes `off..off + buf.len()` out. The caller guarantees
    /// `off + buf.len() <= capacity()`.
    fn copy_out(&self, off: usize, buf: &mut [u8]);
    /// Copies `data` into data bytes `off..off + data.len()`. The caller
    /// guarantees `off + data.len() <= capacity()`.
    fn copy_in(&self, off: usize, data: &[u8]);
    /// The address of word `w` in this environment (for a `SleepOn`
    /// predicate's `LoadUser`), 8-byte aligned.
    fn word_addr(&self, w: Word) -> u64;
    /// The frame's table of environments to wake (`id + 1` per slot, 0 =
    /// free), shared like the header, so as untrusted: a frame within one
    /// process has none (the default).
    fn peers(&self) -> &[core::sync::atomic::AtomicU64] {
        &[]
    }
}

/// Which end's sleepers to wake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Processes waiting to read.
    Readers,
    /// Processes waiting to write.
    Writers,
}

/// One condition of a wake-up predicate: word `word` compared with `value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cond {
    /// The word.
    pub word: Word,
    /// `true`: holds when the word differs from `value`; `false`: when it
    /// equals it.
    pub ne: bool,
    /// The value.
    pub value: u64,
}

/// What to sleep on before trying again: wake when either condition holds
/// (`retry_soon`: or after a short while, for a lock held by a peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// The conditions, any of which ends the sleep.
    pub conds: [Cond; 2],
    /// A peer holds the lock: sleep briefly whatever the words say (locks
    /// have no wake-up of their own).
    pub retry_soon: bool,
}

/// Why an operation moved no bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Nothing to read or no room: sleep on this, then try again.
    Block(Wait),
    /// Reading: empty and no writer is left (end of file).
    Eof,
    /// Writing: no reader is left (`EPIPE`).
    Broken,
    /// The frame's words make no sense (`head - tail > capacity`).
    Corrupt,
}

/// The result of a successful transfer: bytes moved, and which side to
/// wake (a sleeper announced itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    /// Bytes moved (≥ 1).
    pub n: usize,
    /// Wake this side's sleepers.
    pub wake: Option<Side>,
}

fn mask(f: &dyn Frame) -> u64 {
    // A power of two by contract; forced so a wrong implementation cannot
    // make offsets leave the area (a smaller mask only wastes space).
    let cap = f.capacity().clamp(1, CAPACITY);
    let p = if cap.is_power_of_two() { cap } else { cap.next_power_of_two() >> 1 };
    (p - 1) as u64
}

/// The usable capacity: [`Frame::capacity`] clamped to 1..=[`CAPACITY`] and
/// rounded down to a power of two.
pub fn capacity(f: &dyn Frame) -> usize {
    mask(f) as usize + 1
}

/// `head - tail` if it is sane.
fn used(f: &dyn Frame, head: u64, tail: u64) -> Result<usize, Stop> {
    let u = head.wrapping_sub(tail);
    if u > capacity(f) as u64 { Err(Stop::Corrupt) } else { Ok(u as usize) }
}

fn lock(f: &dyn Frame, w: Word) -> Result<(), Stop> {
    if f.compare_exchange(w, 0, 1) {
        Ok(())
    } else {
        let c = Cond { word: w, ne: true, value: 1 };
        Err(Stop::Block(Wait { conds: [c, c], retry_soon: true }))
    }
}

/// Initialises a fresh frame: empty, one reader and one writer.
pub fn init(f: &dyn Frame) {
    for w in [Word::Head, Word::Tail, Word::ReaderWaiting, Word::WriterWaiting] {
        f.store(w, 0);
    }
    f.store(Word::WLock, 0);
    f.store(Word::RLock, 0);
    f.store(Word::Readers, 1);
    f.store(Word::Writers, 1);
}

/// Reads up to `max` bytes: hands the bytes to `sink` (at most two slices'
/// worth, joined in `scratch`) and consumes them only if `sink` accepts
/// them (a fault copying to the program leaves them in the pipe, as Linux
/// does).
pub fn read(
    f: &dyn Frame,
    max: usize,
    scratch: &mut [u8],
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<Moved, Stop> {
    read_pieces(f, max.min(scratch.len()), &mut |f, pieces| {
        let [(o1, n1), (o2, n2)] = pieces;
        f.copy_out(o1, &mut scratch[..n1]);
        f.copy_out(o2, &mut scratch[n1..n1 + n2]);
        sink(&scratch[..n1 + n2])
    })
}

/// Two pieces `(offset, length)` of a frame's data area (see
/// [`read_pieces`]).
pub type Pieces = [(usize, usize); 2];

/// Reads up to `max` bytes without copying them: `sink` is handed the
/// frame and the bytes waiting as two pieces `(offset, length)` of its
/// data area (in stream order; the second empty unless the bytes wrap),
/// each within the area and together at most `max` and at least 1 byte
/// long, for it to copy out with [`Frame::copy_out`]; they are consumed
/// only if `sink` accepts them.
pub fn read_pieces(
    f: &dyn Frame,
    max: usize,
    sink: &mut dyn FnMut(&dyn Frame, Pieces) -> bool,
) -> Result<Moved, Stop> {
    lock(f, Word::RLock)?;
    let r = read_locked(f, max, sink);
    f.store(Word::RLock, 0);
    r
}

fn read_locked(
    f: &dyn Frame,
    max: usize,
    sink: &mut dyn FnMut(&dyn Frame, Pieces) -> bool,
) -> Result<Moved, Stop> {
    let tail = f.load(Word::Tail);
    let mut head = f.load(Word::Head);
    let mut avail = used(f, head, tail)?;
    if avail == 0 {
        if f.load(Word::Writers) == 0 {
            return Err(Stop::Eof);
        }
        // Announce, then look again (module doc).
        f.store(Word::ReaderWaiting, 1);
        head = f.load(Word::Head);
        let writers = f.load(Word::Writers);
        avail = used(f, head, tail)?;
        if avail == 0 {
            if writers == 0 {
                return Err(Stop::Eof);
            }
            return Err(Stop::Block(Wait {
                conds: [
                    Cond { word: Word::Head, ne: true, value: head },
                    Cond { word: Word::Writers, ne: false, value: 0 },
                ],
                retry_soon: false,
            }));
        }
    }
    let n = avail.min(max);
    if n == 0 {
        return Ok(Moved { n: 0, wake: None });
    }
    let m = mask(f);
    let off = (tail & m) as usize;
    let first = n.min(capacity(f) - off);
    if !sink(f, [(off, first), (0, n - first)]) {
        return Ok(Moved { n: 0, wake: None });
    }
    f.store(Word::Tail, tail.wrapping_add(n as u64));
    let wake = (f.swap(Word::WriterWaiting, 0) != 0).then_some(Side::Writers);
    Ok(Moved { n, wake })
}

/// Writes a prefix of `data`: all of it or nothing when `atomic` (it must
/// then be at most the capacity), else as much as fits (at least 1 byte).
pub fn write(f: &dyn Frame, data: &[u8], atomic: bool) -> Result<Moved, Stop> {
    lock(f, Word::WLock)?;
    let r = write_locked(f, data, atomic);
    f.store(Word::WLock, 0);
    r
}

fn write_locked(f: &dyn Frame, data: &[u8], atomic: bool) -> Result<Moved, Stop> {
    if data.is_empty() {
        return Ok(Moved { n: 0, wake: None });
    }
    if f.load(Word::Readers) == 0 {
        return Err(Stop::Broken);
    }
    let cap = capacity(f);
    let need = if atomic { data.len().min(cap) } else { 1 };
    let head = f.load(Word::Head);
    let mut tail = f.load(Word::Tail);
    let mut free = cap - used(f, head, tail)?;
    if free < need {
        f.store(Word::WriterWaiting, 1);
        tail = f.load(Word::Tail);
        let readers = f.load(Word::Readers);
        free = cap - used(f, head, tail)?;
        if readers == 0 {
            return Err(Stop::Broken);
        }
        if free < need {
            return Err(Stop::Block(Wait {
                conds: [
                    Cond { word: Word::Tail, ne: true, value: tail },
                    Cond { word: Word::Readers, ne: false, value: 0 },
                ],
                retry_soon: false,
            }));
        }
    }
    let n = free.min(data.len());
    let off = (head & mask(f)) as usize;
    let first = n.min(cap - off);
    f.copy_in(off, &data[..first]);
    f.copy_in(0, &data[first..n]);
    f.store(Word::Head, head.wrapping_add(n as u64));
    let wake = (f.swap(Word::ReaderWaiting, 0) != 0).then_some(Side::Readers);
    Ok(Moved { n, wake })
}

/// What `poll` sees on one end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// Bytes waiting (0 if corrupt).
    pub used: usize,
    /// Free room (0 if corrupt).
    pub free: usize,
    /// No writer is left.
    pub no_writers: bool,
    /// No reader is left.
    pub no_readers: bool,
    /// The words make no sense.
    pub corrupt: bool,
    /// What to sleep on for this end to change (the side given to
    /// [`readiness`]).
    pub wait: Wait,
}

/// The state of the ring for `poll`. With `arm`, first announces a
/// sleeper on `side` (module doc), so that the returned state may be slept
/// on without a lost wake-up.
pub fn readiness(f: &dyn Frame, side: Side, arm: bool) -> Readiness {
    if arm {
        let flag = match side {
            Side::Readers => Word::ReaderWaiting,
            Side::Writers => Word::WriterWaiting,
        };
        f.store(flag, 1);
    }
    let head = f.load(Word::Head);
    let tail = f.load(Word::Tail);
    let readers = f.load(Word::Readers);
    let writers = f.load(Word::Writers);
    let (u, corrupt) = match used(f, head, tail) {
        Ok(u) => (u, false),
        Err(_) => (0, true),
    };
    let wait = match side {
        Side::Readers => [
            Cond { word: Word::Head, ne: true, value: head },
            Cond { word: Word::Writers, ne: false, value: 0 },
        ],
        Side::Writers => [
            Cond { word: Word::Tail, ne: true, value: tail },
            Cond { word: Word::Readers, ne: false, value: 0 },
        ],
    };
    Readiness {
        used: u,
        free: if corrupt { 0 } else { capacity(f) - u },
        no_writers: writers == 0,
        no_readers: readers == 0,
        corrupt,
        wait: Wait { conds: wait, retry_soon: false },
    }
}

/// Counts one more open description of `side`'s kind (a `dup`licated
/// process's copy, at `fork`).
pub fn open_end(f: &dyn Frame, side: Side) {
    let w = if side == Side::Readers { Word::Readers } else { Word::Writers };
    f.fetch_add(w, 1);
}

/// Counts one description of `side`'s kind gone; returns the side to wake
/// (the *other* one) if this was the last, so that sleepers see end of file
/// or `EPIPE`. A count already 0 (a hostile peer) stays 0.
pub fn close_end(f: &dyn Frame, side: Side) -> Option<Side> {
    let (w, flag, other) = match side {
        Side::Readers => (Word::Readers, Word::WriterWaiting, Side::Writers),
        Side::Writers => (Word::Writers, Word::ReaderWaiting, Side::Readers),
    };
    // A bounded CAS loop would let a peer make us spin; one attempt plus a
    // fallback store is enough: the count is advisory between honest ends.
    let old = f.load(w);
    let new = old.saturating_sub(1);
    if !f.compare_exchange(w, old, new) {
        f.fetch_add(w, u64::MAX); // -1, wrapping: the peer changed it meanwhile
    }
    (f.swap(flag, 0) != 0 || new == 0).then_some(other)
}
