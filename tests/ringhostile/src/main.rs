//! `ringhostile`: a ring user that lies. The kernel must answer every call
//! and keep running (the kernel test runs this beside `worker`).
//!
//! With a ring of 16/16, for `start_arg` iterations (0: 1,000,000), chosen
//! at random (xorshift):
//!
//! * **chaos** (a quarter of the iterations): one or two random values
//!   into random header fields (any of the eight, `sq_entries` and
//!   `errors` included) or random words anywhere in the ring;
//! * **plausible** (the rest): the header is put back in an order the
//!   kernel can work with — `sq_tail` = the kernel's `sq_head` (this
//!   program knows it: the sum of what `RingEnter` consumed) plus 0-16 new
//!   entries, `cq_head` near `cq_tail` — and those entries are filled with
//!   valid opcodes carrying hostile arguments, a bad flag or reserved byte
//!   now and then, valid `Nop`/`Timer`/`Notify`, or random words; so the
//!   kernel really decodes and runs (or refuses) them;
//!
//! then `RingEnter(random 0..=40, 0)` (now and then a huge `to_submit`).
//! Now and then it drains completions or calls `RingSetup` with arguments
//! that must be refused. It never blocks: `min_complete` is always 0.
//! Hostile arguments never name its own memory (scratch pages that are not
//! mapped, the kernel half, non-canonical addresses, small numbers,
//! powers of two above the user half), so whatever the kernel runs cannot
//! hurt this program. Timer deadlines are past or at most ~10 ms ahead
//! (a pending timer holds a completion slot until it fires).
//!
//! Checks: `RingEnter` never reports more consumed than asked for, than
//! the ring holds or (in plausible iterations) than was queued; every bad
//! `RingSetup` fails; at the end, with the header repaired, a `Nop` goes
//! through. Prints `ringhostile: N iterations, ...`; exit 0 iff all held.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use libos_async::abi::ring::{OP_COUNT, SQ_OFFSET};
use libos_async::abi::{self, Syscall};
use libos_async::check::{Checks, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::ring::{Ring, field};
use libos_async::sys::{self, rdtsc};
use libos_async::{env_id, println, sqe, wait_for_ms};

use libos_async::rng::Rng;

libos_async::entry!(app_main);

const ITERATIONS: u64 = 1_000_000;

/// 0: not done; 1: the fresh ring's Nop came back; 2: it did not.
static FRESH: AtomicU64 = AtomicU64::new(0);

/// On another core: a new ring, one Nop, its completion.
fn fresh_ring_nop(_: u64) -> ! {
    let ok = (|| {
        let mut ring = Ring::new(4, 4).ok()?;
        ring.push(sqe::nop(7)).ok()?;
        (ring.submit(1).ok()? == 1).then_some(())?;
        let e = ring.pop()?;
        (e.user_data == 7 && e.result == 0).then_some(())
    })()
    .is_some();
    FRESH.store(if ok { 1 } else { 2 }, SeqCst);
    sys::vcpu_exit()
}
const SQ: u32 = 16;
const CQ: u32 = 16;
/// Size of a submission entry.
const SQE_BYTES: u64 = 64;
/// Size of the header.
const HEADER_BYTES: u64 = 32;

/// An argument word that is hostile but never names our own memory.
fn hostile_arg(rng: &mut Rng) -> u64 {
    match rng.below(10) {
        0 => 0,
        1 => u64::MAX,
        2 => SCRATCH_BASE + rng.below(1 << 20) * 4096,
        3 => SCRATCH_BASE + rng.below(1 << 32),
        4 => 0xffff_8000_0000_0000 + rng.below(1 << 30) * 8,
        5 => 0x0000_8000_0000_0000 + rng.below(1 << 20),
        6 => rng.below(1 << 20),
        7 => rng.below(8),
        // Powers of two above the user half only (0x40_0000 is our image).
        8 => 1 << (47 + rng.below(17)),
        _ => rng.next_u64(),
    }
}

/// The state this program keeps to put the header back in order.
struct Hostile {
    ring: Ring,
    rng: Rng,
    /// The kernel's private `sq_head`: everything `RingEnter` consumed.
    head: u32,
    /// A `cq_tail` we overwrote: (what we wrote, what was there).
    cq_tail_saved: Option<(u32, u32)>,
}

impl Hostile {
    /// Writes submission slot `index` (masked).
    fn fill(&mut self, index: u32, user_data: u64) {
        let base = SQ_OFFSET + u64::from(index % SQ) * SQE_BYTES;
        let rng = &mut self.rng;
        match rng.below(8) {
            // Random words.
            0 => {
                for w in 0..8 {
                    let v = rng.next_u64();
                    self.ring.poke(base + w * 8, v);
                }
            }
            // Valid entries.
            1 => {
                let e = match rng.below(3) {
                    0 => sqe::timer(rdtsc() + rng.below(1 << 24), user_data),
                    1 => sqe::notify(env_id(), user_data),
                    _ => sqe::nop(user_data),
                };
                let words = [
                    u64::from(e.opcode) | u64::from(e.flags) << 8,
                    e.user_data,
                    e.args[0],
                    e.args[1],
                    e.args[2],
                    e.args[3],
                    e.args[4],
                    e.args[5],
                ];
                for (w, v) in words.into_iter().enumerate() {
                    self.ring.poke(base + w as u64 * 8, v);
                }
            }
            // A valid opcode with hostile arguments (and now and then a bad
            // flag bit or reserved byte). ConsoleWrite only gets bad
            // pointers, so it cannot spam the console.
            _ => {
                let op = rng.below(u64::from(OP_COUNT));
                let flags = match rng.below(8) {
                    0 => rng.below(256),
                    1..=3 => 1,
                    _ => 0,
                };
                let reserved = if rng.below(16) == 0 { rng.next_u64() << 16 } else { 0 };
                let mut words = [op | flags << 8 | reserved, user_data, 0, 0, 0, 0, 0, 0];
                for w in &mut words[2..] {
                    *w = hostile_arg(rng);
                }
                if op == 9 {
                    words[2] = match rng.below(2) {
                        0 => rdtsc() + rng.below(1 << 24),
                        _ => rng.below(1 << 30),
                    };
                }
                for (w, v) in words.into_iter().enumerate() {
                    self.ring.poke(base + w as u64 * 8, v);
                }
            }
        }
    }

    /// One or two random header fields or ring words.
    fn chaos(&mut self) {
        for _ in 0..=self.rng.below(2) {
            if self.rng.below(2) == 0 {
                let off = self.rng.below(HEADER_BYTES / 4) * 4;
                let value = self.rng.next_u64() as u32;
                if off == field::CQ_TAIL {
                    // The kernel's value: what is there, unless that is
                    // our own earlier scribble (then what that replaced).
                    let now = self.ring.header().cq_tail;
                    let real = match self.cq_tail_saved {
                        Some((wrote, was)) if now == wrote => was,
                        _ => now,
                    };
                    self.cq_tail_saved = Some((value, real));
                }
                self.ring.poke_header(off, value);
            } else {
                // Anything past the header (the header is handled above,
                // with cq_tail saved).
                let off = HEADER_BYTES + self.rng.below(self.ring.bytes() - HEADER_BYTES);
                let value = self.rng.next_u64();
                self.ring.poke(off, value);
            }
        }
    }

    /// Puts back the kernel's `cq_tail` if we overwrote it and the kernel
    /// has not posted since.
    fn restore_cq_tail(&mut self) {
        if let Some((wrote, was)) = self.cq_tail_saved.take()
            && self.ring.header().cq_tail == wrote
        {
            self.ring.poke_header(field::CQ_TAIL, was);
        }
    }

    /// Puts the header in order and queues `n` new entries; returns `n`.
    fn plausible(&mut self, user_data: u64) -> u32 {
        self.restore_cq_tail();
        let cq_tail = self.ring.header().cq_tail;
        let lag = if self.rng.below(4) == 0 { self.rng.below(u64::from(CQ) + 1) as u32 } else { 0 };
        self.ring.poke_header(field::CQ_HEAD, cq_tail.wrapping_sub(lag));
        let n = self.rng.below(u64::from(SQ) + 1) as u32;
        for i in 0..n {
            self.fill(self.head.wrapping_add(i), user_data + u64::from(i));
        }
        self.ring.poke_header(field::SQ_TAIL, self.head.wrapping_add(n));
        n
    }
}

fn app_main(arg: u64) -> i32 {
    let iterations = if arg == 0 { ITERATIONS } else { arg };
    let mut c = Checks::new();
    let ring = require("Ring::new", Ring::new(SQ, CQ));
    let mut h = Hostile { ring, rng: Rng::new(rdtsc()), head: 0, cq_tail_saved: None };
    let (mut consumed, mut refused, mut popped, mut bad) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..iterations {
        let queued = if h.rng.below(4) == 0 {
            h.chaos();
            None
        } else {
            Some(h.plausible(i << 5))
        };
        match h.rng.below(64) {
            0..=7 => {
                while h.ring.pop().is_some() {
                    popped += 1;
                }
            }
            // RingSetup calls that must fail (and leave the ring alone).
            8 => {
                let args = match h.rng.below(5) {
                    0 => [SCRATCH_BASE + 0x4000_0000, 16, 16],
                    1 => [h.ring.base() + 8, 16, 16],
                    2 => [h.ring.base(), 3, 16],
                    3 => [0xffff_8000_0000_0000, 16, 16],
                    _ => [h.ring.base(), 16, 1 << 20],
                };
                let r = abi::decode(sys::syscall_raw(
                    Syscall::RingSetup as u64,
                    [args[0], args[1], args[2], 0, 0, 0],
                ));
                if r.is_ok() {
                    c.check(false, format_args!("RingSetup{args:x?} accepted"));
                }
            }
            _ => {}
        }
        let to_submit = if h.rng.below(256) == 0 { h.rng.next_u64() } else { h.rng.below(41) };
        match h.ring.enter(to_submit, 0) {
            Ok(n) => {
                consumed += n;
                h.head = h.head.wrapping_add(n as u32);
                let limit = to_submit.min(u64::from(SQ)).min(queued.map_or(u64::MAX, u64::from));
                if n > limit && bad < 5 {
                    bad += 1;
                    c.check(
                        false,
                        format_args!("RingEnter({to_submit}, 0) consumed {n}, queued {queued:?}"),
                    );
                }
            }
            Err(_) => refused += 1,
        }
        if i % 200_000 == 0 && i > 0 {
            println!("ringhostile: {i} iterations");
        }
    }
    // The kernel must still serve rings after all that: a fresh ring on
    // another core sends one Nop through. (Repairing this ring's header would
    // need the kernel's private indices, which a hostile writer has lost.)
    let healthy = match libos_async::other_cores().next() {
        Some(core) => {
            require("start_vcpu", libos_async::start_vcpu(core, fresh_ring_nop, 0));
            wait_for_ms(10_000, || FRESH.load(SeqCst) != 0) && FRESH.load(SeqCst) == 1
        }
        None => true,
    };
    c.check(
        healthy,
        format_args!("a fresh ring after the hostile run: state {}", FRESH.load(SeqCst)),
    );
    let hdr = h.ring.header();
    println!(
        "ringhostile: {iterations} iterations, {consumed} consumed, {refused} refused, {popped} popped, overflow {}",
        hdr.overflow
    );
    c.finish()
}
