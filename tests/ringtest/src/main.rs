//! `ringtest`: the submission/completion ring, end to end. Exit 0 iff every
//! check passed; one summary line per part.
//!
//! * **a, every op in one batch** (ring 64/64 on the first vCPU): 8 `Nop`,
//!   `ConsoleWrite`, `FrameAlloc`, `Map`, `Protect`, `Unmap`, `FrameFree`,
//!   `FrameGrant` and `FrameRevoke` to itself (`InvalidArgument`,
//!   `NoSuchEnv`: a grant to oneself is refused, so there is none to
//!   revoke), a `Timer` 3 ms ahead, `Notify` to itself and `SlotAlloc` of
//!   one slot on its core (seen in the schedule, then freed) in one `submit`: every entry consumed, every
//!   completion's `user_data` seen exactly once with its expected result,
//!   the timer not before its deadline, `notifications` up by one, the
//!   allocated frame ours.
//! * **b, linked chains**: A→B→C→D, E where B (`Unmap` of an unmapped page)
//!   fails with `NotMapped`: A ok, C and D `Canceled`, E ok; a chain that
//!   succeeds runs whole; a failing entry without `SQE_LINK` cancels nothing.
//! * **c, completion overflow** (on a vCPU on another core, ring 32/8): 20
//!   `Nop`s, submit: at most 8 consumed and `overflow` > 0; pop and submit
//!   again until all 20 completed exactly once, in order.
//! * **d, blocking submit**: with only a `Timer` 10 ms ahead pending,
//!   `submit(min_complete = 1)` returns with its completion, not before the
//!   deadline.
//! * **e, invalid entries**: unknown opcodes, undefined flag bits, non-zero
//!   reserved bytes complete with `InvalidArgument`; a valid entry after
//!   them runs.
//! * **f, bad index**: `sq_tail` more than `sq_entries` past `sq_head`:
//!   nothing consumed, `RING_ERR_BAD_INDEX` raised; after the tail is put
//!   back the ring works again.
//! * **g, registers**: `RingEnter` keeps every register but `rax`, `rcx`
//!   and `r11`, both on its fast path (a `Nop`, answered without a trap
//!   frame, returning with `sysretq`) and when the fast path hands the call
//!   on to the full one (a `Notify` to itself).
//!
//! Unsafe code is denied but in part g's `enter_keeping_registers`: an
//! inline `syscall` that names every register the ABI says `RingEnter`
//! keeps, which no library wrapper can do.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use libos_async::abi::ring::{CqEntry, OP_COUNT, RING_ERR_BAD_INDEX, SqEntry};
use libos_async::abi::{self, Error, FrameHolder, Rights};
use libos_async::check::{Checks, fail, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::ring::{Ring, field};
use libos_async::sqe::{self, SqeExt};
use libos_async::sys::{self, rdtsc};
use libos_async::{core_id, env_id, info, other_cores, println, start_vcpu, wait_for_ms};

libos_async::entry!(app_main);

/// Bounded waits for completions.
const WAIT_MS: u64 = 20_000;
/// Page mapped, protected and unmapped through the ring in part a.
const VA: u64 = SCRATCH_BASE + 0x10_0000;
/// A page that is never mapped.
const UNMAPPED: u64 = SCRATCH_BASE + 0x20_0000;
const TEXT: &str = "ringtest: console write through the ring\n";

/// What a completion must say.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Exactly `Ok(v)`.
    Val(u64),
    /// Any `Ok`.
    AnyOk,
    /// Exactly `Err(e)`.
    Err(Error),
}

impl Want {
    fn matches(self, got: Result<u64, Error>) -> bool {
        match self {
            Want::Val(v) => got == Ok(v),
            Want::AnyOk => got.is_ok(),
            Want::Err(e) => got == Err(e),
        }
    }
}

fn ms(n: u64) -> u64 {
    info().tsc_hz / 1000 * n
}

/// Pushes `batch`, submits it (expecting every entry consumed), waits for
/// as many completions and checks each against its expectation by
/// `user_data`. Returns the completions in arrival order.
fn run_batch<const N: usize>(
    c: &mut Checks,
    ring: &mut Ring,
    part: &str,
    batch: &[(SqEntry, Want)],
    out: &mut [CqEntry; N],
) -> usize {
    assert!(batch.len() <= N);
    for (e, _) in batch {
        if ring.push(*e).is_err() {
            fail(format_args!("{part}: submission queue full"));
        }
    }
    let n = batch.len() as u64;
    let consumed = ring.submit(0);
    c.check(consumed == Ok(n), format_args!("{part}: submit consumed {consumed:?} of {n}"));
    let got = collect(ring, out, batch.len());
    c.check(got == batch.len(), format_args!("{part}: {got} of {n} completions"));
    let mut seen = [false; N];
    for cqe in &out[..got] {
        let result = abi::decode(cqe.result);
        match batch.iter().position(|(e, _)| e.user_data == cqe.user_data) {
            None => {
                c.check(false, format_args!("{part}: stray user_data {:#x}", cqe.user_data));
            }
            Some(i) => {
                c.check(
                    !seen[i],
                    format_args!("{part}: user_data {} completed twice", cqe.user_data),
                );
                seen[i] = true;
                let want = batch[i].1;
                c.check(
                    want.matches(result),
                    format_args!(
                        "{part}: user_data {}: want {want:?}, got {result:?}",
                        cqe.user_data
                    ),
                );
            }
        }
    }
    got
}

/// Pops up to `n` completions into `out`, waiting (bounded) for them.
fn collect(ring: &mut Ring, out: &mut [CqEntry], n: usize) -> usize {
    let mut got = 0;
    wait_for_ms(WAIT_MS, || {
        while got < n {
            match ring.pop() {
                Some(cqe) => {
                    out[got] = cqe;
                    got += 1;
                }
                None => break,
            }
        }
        got >= n
    });
    got
}

fn part_a(c: &mut Checks, ring: &mut Ring) {
    let me = env_id();
    let p = require("frame_alloc", sys::frame_alloc(None));
    let g = require("frame_alloc", sys::frame_alloc(None));
    let notified = sys::notifications();
    let deadline = rdtsc() + ms(3);
    let mut batch = [(sqe::nop(0), Want::Val(0)); 19];
    for (i, slot) in batch.iter_mut().take(8).enumerate() {
        *slot = (sqe::nop(1 + i as u64), Want::Val(0));
    }
    batch[8] = (sqe::console_str(TEXT, 10), Want::Val(TEXT.len() as u64));
    batch[9] = (sqe::frame_alloc(None, 11), Want::AnyOk);
    batch[10] = (sqe::map(p, VA, Rights::RW, 12), Want::Val(0));
    batch[11] = (sqe::protect(VA, Rights::READ, 13), Want::Val(0));
    batch[12] = (sqe::unmap(VA, 14), Want::Val(0));
    batch[13] = (sqe::frame_free(p, 15), Want::Val(0));
    batch[14] = (sqe::grant(g, me, Rights::READ, 16), Want::Err(Error::InvalidArgument));
    batch[15] = (sqe::revoke(g, me, 17), Want::Err(Error::NoSuchEnv));
    batch[16] = (sqe::timer(deadline, 18), Want::Val(0));
    batch[17] = (sqe::notify(me, 19), Want::Val(0));
    batch[18] = (sqe::slot_alloc(core_id() as u64, None, 1, 20), Want::AnyOk);
    let mut out = [CqEntry::default(); 32];
    let got = run_batch(c, ring, "a", &batch, &mut out);
    let now = rdtsc();
    if let Some(t) = out[..got].iter().find(|e| e.user_data == 18) {
        c.check(
            now >= deadline && t.result == 0,
            format_args!("a: timer completed before its deadline"),
        );
    }
    let n = sys::notifications();
    c.check(n == notified + 1, format_args!("a: notifications {notified} -> {n}, want +1"));
    if let Some(s) = out[..got].iter().find(|e| e.user_data == 20) {
        let mask = s.result;
        c.check(
            mask.count_ones() == 1 && libos_async::cpu::my_slots(core_id()) == mask,
            format_args!("a: slot mask {mask:#x}, schedule says {:#x}", {
                libos_async::cpu::my_slots(core_id())
            }),
        );
        c.check(
            sys::slot_free(core_id(), mask).is_ok(),
            format_args!("a: freeing the slot the ring allocated"),
        );
    }
    let allocated = out[..got].iter().find(|e| e.user_data == 11);
    if let Some(Ok(frame)) = allocated.map(|f| abi::decode(f.result)) {
        let status = sys::frame_status(frame);
        let ours = status.is_ok_and(|s| s.holder() == Some(FrameHolder::Owned) && s.env == me);
        c.check(ours, format_args!("a: frame {frame} from FrameAlloc: {status:?}"));
        c.expect_ok("a: free the ring's frame", sys::frame_free(frame));
    }
    c.expect_err("a: VA unmapped by the ring", sys::unmap(VA), Error::NotMapped);
    c.expect_err("a: P freed by the ring", sys::frame_free(p), Error::NotOwner);
    c.expect_ok("a: free G", sys::frame_free(g));
    println!("ringtest a: {got} completions of 19");
}

fn part_b(c: &mut Checks, ring: &mut Ring) {
    let batch = [
        (sqe::nop(30).linked(), Want::Val(0)),
        (sqe::unmap(UNMAPPED, 31).linked(), Want::Err(Error::NotMapped)),
        (sqe::nop(32).linked(), Want::Err(Error::Canceled)),
        (sqe::nop(33), Want::Err(Error::Canceled)),
        (sqe::nop(34), Want::Val(0)),
        (sqe::nop(35).linked(), Want::Val(0)),
        (sqe::nop(36).linked(), Want::Val(0)),
        (sqe::nop(37), Want::Val(0)),
        // A failure without SQE_LINK ends no chain.
        (sqe::unmap(UNMAPPED, 38), Want::Err(Error::NotMapped)),
        (sqe::nop(39), Want::Val(0)),
        // A chain whose first entry fails.
        (sqe::unmap(UNMAPPED, 40).linked(), Want::Err(Error::NotMapped)),
        (sqe::console_str("ringtest: CANCELED ENTRY RAN\n", 41), Want::Err(Error::Canceled)),
        (sqe::nop(42), Want::Val(0)),
    ];
    let mut out = [CqEntry::default(); 16];
    let got = run_batch(c, ring, "b", &batch, &mut out);
    println!("ringtest b: {got} completions of {}", batch.len());
}

/// Part c's verdict: failed checks (u32::MAX until it is done).
static C_FAILED: AtomicU32 = AtomicU32::new(u32::MAX);
/// Part c's rounds, for the summary.
static C_ROUNDS: AtomicU64 = AtomicU64::new(0);

const C_NOPS: u64 = 20;

fn part_c_vcpu(_arg: u64) -> ! {
    let mut c = Checks::new();
    match Ring::new(32, 8) {
        Err(e) => {
            c.check(false, format_args!("c: Ring::new(32, 8): {e:?}"));
        }
        Ok(mut ring) => overflow(&mut c, &mut ring),
    }
    C_FAILED.store(c.failed(), SeqCst);
    sys::vcpu_exit()
}

fn overflow(c: &mut Checks, ring: &mut Ring) {
    for ud in 0..C_NOPS {
        if ring.push(sqe::nop(100 + ud)).is_err() {
            fail(format_args!("c: submission queue full at {ud}"));
        }
    }
    let mut next = 0;
    let mut rounds = 0;
    while next < C_NOPS && rounds < 10 {
        rounds += 1;
        let pending = ring.pending();
        let consumed = ring.submit(0);
        let h = ring.header();
        if rounds == 1 {
            c.check(
                consumed.is_ok_and(|n| n <= 8) && h.overflow > 0,
                format_args!("c: first submit consumed {consumed:?}, overflow {}", h.overflow),
            );
        }
        c.check(
            consumed.is_ok_and(|n| n > 0 && n <= u64::from(pending)),
            format_args!("c: round {rounds}: consumed {consumed:?} of {pending}"),
        );
        while let Some(cqe) = ring.pop() {
            let ok = cqe.user_data == 100 + next && cqe.result == 0;
            c.check(
                ok,
                format_args!(
                    "c: completion {next}: user_data {} result {:#x}",
                    cqe.user_data, cqe.result
                ),
            );
            next += 1;
        }
    }
    let h = ring.header();
    c.check(
        next == C_NOPS && ring.pending() == 0 && ring.pop().is_none(),
        format_args!("c: {next} of {C_NOPS} completed, {} pending", ring.pending()),
    );
    c.check(h.errors == 0, format_args!("c: ring errors {:#x}", h.errors));
    C_ROUNDS.store(rounds, SeqCst);
}

fn part_c(c: &mut Checks) {
    let Some(core) = other_cores().next() else {
        println!("ringtest c: skipped (one core)");
        return;
    };
    require("start_vcpu", start_vcpu(core, part_c_vcpu, 0));
    let done = wait_for_ms(WAIT_MS * 3, || C_FAILED.load(SeqCst) != u32::MAX);
    c.check(done, format_args!("c: the vCPU on core {core} never finished"));
    let failed = C_FAILED.load(SeqCst);
    c.check(failed == 0, format_args!("c: {failed} checks failed on core {core}"));
    println!("ringtest c: {C_NOPS} nops through a CQ of 8 in {} submits", C_ROUNDS.load(SeqCst));
}

fn part_d(c: &mut Checks, ring: &mut Ring) {
    while ring.pop().is_some() {}
    let deadline = rdtsc() + ms(10);
    if ring.push(sqe::timer(deadline, 200)).is_err() {
        fail(format_args!("d: submission queue full"));
    }
    let t0 = rdtsc();
    let r = ring.submit(1);
    let t1 = rdtsc();
    c.check(r == Ok(1), format_args!("d: submit(1) returned {r:?}"));
    c.check(
        t1 >= deadline,
        format_args!("d: returned {} cycles before the deadline", deadline - t1),
    );
    let cqe = ring.pop();
    c.check(
        cqe == Some(CqEntry { user_data: 200, result: 0 }),
        format_args!("d: completion {cqe:?}"),
    );
    println!("ringtest d: submit(1) blocked {} ms for a 10 ms timer", (t1 - t0) / ms(1).max(1));
}

fn part_e(c: &mut Checks, ring: &mut Ring) {
    let bad = |f: fn(&mut SqEntry), ud| {
        let mut e = sqe::nop(ud);
        f(&mut e);
        (e, Want::Err(Error::InvalidArgument))
    };
    let batch = [
        bad(|e| e.opcode = OP_COUNT, 300),
        bad(|e| e.opcode = 0xff, 301),
        bad(|e| e.flags = 0x80, 302),
        bad(|e| e.flags = 0x02, 303),
        bad(|e| e.reserved[0] = 1, 304),
        bad(|e| e.reserved[5] = 0xff, 305),
        (sqe::nop(306), Want::Val(0)),
    ];
    let mut out = [CqEntry::default(); 8];
    let got = run_batch(c, ring, "e", &batch, &mut out);
    println!("ringtest e: {got} completions of {}", batch.len());
}

fn part_f(c: &mut Checks, ring: &mut Ring) {
    while ring.pop().is_some() {}
    let before = ring.header();
    let bogus = before.sq_head.wrapping_add(ring.sq_entries() + 1);
    ring.poke_header(field::SQ_TAIL, bogus);
    let r = ring.enter(1, 0);
    let after = ring.header();
    c.check(
        after.errors & RING_ERR_BAD_INDEX != 0,
        format_args!("f: errors {:#x} after a bad sq_tail", after.errors),
    );
    c.check(
        after.sq_head == before.sq_head && r.unwrap_or(0) == 0,
        format_args!(
            "f: bad sq_tail: enter {r:?}, sq_head {} -> {}",
            before.sq_head, after.sq_head
        ),
    );
    c.check(ring.ready() == 0, format_args!("f: a completion appeared"));
    ring.poke_header(field::SQ_TAIL, after.sq_head);
    let pushed = ring.push(sqe::nop(400)).is_ok();
    let r = ring.submit(0);
    let mut out = [CqEntry::default(); 1];
    let got = collect(ring, &mut out, 1);
    c.check(
        pushed && r == Ok(1) && got == 1 && out[0].user_data == 400 && out[0].result == 0,
        format_args!("f: after repair: submit {r:?}, completion {:?}", out[0]),
    );
    println!("ringtest f: bad index refused (enter {r:?} after repair)");
}

/// `RingEnter(to_submit, 0)` with a distinct pattern in every register the
/// ABI says it keeps (those inline assembly may name); returns the result
/// and the registers that came back changed.
#[cfg(target_os = "none")]
#[allow(unsafe_code, reason = "inline syscall with every kept register as an operand")]
fn enter_keeping_registers(to_submit: u64) -> (u64, u32) {
    const P: u64 = 0x5a5a_0000_0000_0000;
    let (mut rdi, mut rsi, mut rdx, mut r8, mut r9, mut r10) =
        (to_submit, 0, P | 2, P | 8, P | 9, P | 10);
    let (mut r12, mut r13, mut r14, mut r15) = (P | 12, P | 13, P | 14, P | 15);
    let ret: u64;
    // SAFETY: a system call; the kernel reads only its own ring (registered
    // by `Ring::new`). Every named register is an in-out operand, so the
    // compiler assumes nothing about them afterwards; rcx and r11 are
    // clobbered by `syscall`.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") abi::Syscall::RingEnter as u64 => ret,
            inout("rdi") rdi, inout("rsi") rsi, inout("rdx") rdx,
            inout("r8") r8, inout("r9") r9, inout("r10") r10,
            inout("r12") r12, inout("r13") r13, inout("r14") r14, inout("r15") r15,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    let kept = [
        (rdi, to_submit),
        (rsi, 0),
        (rdx, P | 2),
        (r8, P | 8),
        (r9, P | 9),
        (r10, P | 10),
        (r12, P | 12),
        (r13, P | 13),
        (r14, P | 14),
        (r15, P | 15),
    ];
    let changed = kept
        .iter()
        .enumerate()
        .filter(|(_, (got, want))| got != want)
        .fold(0, |m, (i, _)| m | 1 << i);
    (ret, changed)
}

#[cfg(not(target_os = "none"))]
fn enter_keeping_registers(_to_submit: u64) -> (u64, u32) {
    unreachable!("ringtest runs on the exokernel")
}

fn part_g(c: &mut Checks, ring: &mut Ring) {
    while ring.pop().is_some() {}
    let cases =
        [("fast path (Nop)", sqe::nop(500)), ("full path (Notify)", sqe::notify(env_id(), 501))];
    for (path, entry) in cases {
        let pushed = ring.push(entry).is_ok();
        let (ret, changed) = enter_keeping_registers(1);
        let mut out = [CqEntry::default(); 1];
        let got = collect(ring, &mut out, 1);
        c.check(
            pushed
                && ret == 1
                && got == 1
                && out[0].user_data == entry.user_data
                && out[0].result == 0,
            format_args!("g: {path}: RingEnter returned {ret:#x}, completion {:?}", out[0]),
        );
        c.check(
            changed == 0,
            format_args!(
                "g: {path}: registers changed (bit i of rdi, rsi, rdx, r8, r9, r10, \
                 r12, r13, r14, r15): {changed:#b}"
            ),
        );
    }
    println!("ringtest g: registers kept on both RingEnter paths");
}

fn app_main(_arg: u64) -> i32 {
    let mut c = Checks::new();
    let mut ring = require("Ring::new(64, 64)", Ring::new(64, 64));
    c.check(
        ring.header().sq_entries == 64 && ring.header().cq_entries == 64,
        format_args!("header sizes {:?}", ring.header()),
    );
    part_a(&mut c, &mut ring);
    part_b(&mut c, &mut ring);
    part_c(&mut c);
    part_d(&mut c, &mut ring);
    part_e(&mut c, &mut ring);
    part_f(&mut c, &mut ring);
    part_g(&mut c, &mut ring);
    let h = ring.header();
    println!(
        "ringtest: {} checks passed, {} failed (overflow {}, errors {:#x})",
        c.passed(),
        c.failed(),
        h.overflow,
        h.errors
    );
    c.finish()
}
