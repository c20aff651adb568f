//! Model checks of the pipe ring's protocol: run with
//! `RUSTFLAGS="--cfg loom" cargo test -p libos-posix --lib --release pipe::loom`
//! (`cargo xtask check` does).
//!
//! The kernel's side is modelled too: a sleeper's predicate is evaluated
//! under the sleeper's lock (as the kernel evaluates it at install and at
//! each event, atomically with respect to the wake-up), and a wake-up is a
//! notification under that lock. A lost wake-up leaves a thread waiting on
//! the condition variable forever, which loom reports as a deadlock; a
//! missing ordering lets a reader see a stale data byte (the data bytes
//! are relaxed atomics, ordered only by the header's accesses).

use super::ring::{self, Cond, Frame, Side, Stop, Word};
use ::loom::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use ::loom::sync::{Arc, Condvar, Mutex};
use ::loom::thread;
use alloc::vec::Vec;

struct LoomFrame {
    header: Vec<AtomicU64>,
    data: Vec<AtomicU8>,
    /// The "kernel": events per side, and the sleepers' lock.
    events: Mutex<[u64; 2]>,
    cv: Condvar,
}

impl Frame for LoomFrame {
    fn capacity(&self) -> usize {
        self.data.len()
    }
    fn load(&self, w: Word) -> u64 {
        self.header[w as usize].load(Ordering::SeqCst)
    }
    fn store(&self, w: Word, v: u64) {
        self.header[w as usize].store(v, Ordering::SeqCst)
    }
    fn swap(&self, w: Word, v: u64) -> u64 {
        self.header[w as usize].swap(v, Ordering::SeqCst)
    }
    fn fetch_add(&self, w: Word, d: u64) -> u64 {
        self.header[w as usize].fetch_add(d, Ordering::SeqCst)
    }
    fn compare_exchange(&self, w: Word, old: u64, new: u64) -> bool {
        self.header[w as usize]
            .compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
    fn copy_out(&self, off: usize, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.data[off + i].load(Ordering::Relaxed);
        }
    }
    fn copy_in(&self, off: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            self.data[off + i].store(*b, Ordering::Relaxed);
        }
    }
    fn word_addr(&self, w: Word) -> u64 {
        w as u64 * 8
    }
}

impl LoomFrame {
    fn new(cap: usize) -> Arc<LoomFrame> {
        let f = LoomFrame {
            header: (0..ring::HEADER_WORDS).map(|_| AtomicU64::new(0)).collect(),
            data: (0..cap).map(|_| AtomicU8::new(0xee)).collect(),
            events: Mutex::new([0, 0]),
            cv: Condvar::new(),
        };
        ring::init(&f);
        Arc::new(f)
    }

    fn holds(&self, c: &Cond) -> bool {
        (self.load(c.word) != c.value) == c.ne
    }

    /// `SleepOn` the two conditions: returns once one holds (checked under
    /// the lock, so that a wake-up between the check and the wait cannot
    /// be missed — the kernel's guarantee).
    fn sleep(&self, w: ring::Wait) {
        assert!(!w.retry_soon, "no lock contention in these models");
        let mut ev = self.events.lock().unwrap();
        while !w.conds.iter().any(|c| self.holds(c)) {
            ev = self.cv.wait(ev).unwrap();
        }
    }

    fn wake(&self, side: Option<Side>) {
        if let Some(s) = side {
            let mut ev = self.events.lock().unwrap();
            ev[s as usize] += 1;
            self.cv.notify_all();
        }
    }
}

fn write_all(f: &LoomFrame, data: &[u8], atomic: bool) {
    let mut at = 0;
    while at < data.len() {
        match ring::write(f, &data[at..], atomic) {
            Ok(m) => {
                f.wake(m.wake);
                at += m.n;
            }
            Err(Stop::Block(w)) => f.sleep(w),
            Err(e) => panic!("write: {e:?}"),
        }
    }
}

fn read_to_eof(f: &LoomFrame) -> Vec<u8> {
    let mut out = Vec::new();
    let mut scratch = [0u8; 4];
    loop {
        let r = ring::read(f, 4, &mut scratch, &mut |b| {
            out.extend_from_slice(b);
            true
        });
        match r {
            Ok(m) => f.wake(m.wake),
            Err(Stop::Eof) => return out,
            Err(Stop::Block(w)) => f.sleep(w),
            Err(e) => panic!("read: {e:?}"),
        }
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = ::loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// A writer of three bytes through a two-byte ring, then its close; a
/// reader to end of file: both sides sleep, neither wake-up is lost, and
/// the bytes arrive in order, never stale.
#[test]
fn stream_through_a_small_ring() {
    model(|| {
        let f = LoomFrame::new(2);
        let w = f.clone();
        let writer = thread::spawn(move || {
            write_all(&w, &[1, 2, 3], false);
            let wake = ring::close_end(&*w, Side::Writers);
            w.wake(wake);
        });
        assert_eq!(read_to_eof(&f), [1, 2, 3]);
        writer.join().unwrap();
    });
}

/// The last reader closes while a writer waits for room: the writer is
/// woken and sees `EPIPE` (no lost wake-up on close).
#[test]
fn close_wakes_a_blocked_writer() {
    model(|| {
        let f = LoomFrame::new(1);
        let w = f.clone();
        let writer = thread::spawn(move || {
            loop {
                match ring::write(&*w, &[9], true) {
                    Ok(m) => w.wake(m.wake),
                    Err(Stop::Block(wait)) => w.sleep(wait),
                    Err(Stop::Broken) => return,
                    Err(e) => panic!("write: {e:?}"),
                }
            }
        });
        let wake = ring::close_end(&*f, Side::Readers);
        f.wake(wake);
        writer.join().unwrap();
    });
}
