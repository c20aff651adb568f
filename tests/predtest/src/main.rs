//! `predtest`: wakeup predicates (`SleepOn`). Exit 0 iff every check
//! passed; one summary line per part. Every sleep also holds a deadline
//! (a few seconds out) so that a lost wake-up is a failed check, not a hang.
//!
//! A *peer* vCPU on another core serves commands posted through atomics
//! (write a word now, or at a TSC time, or after a random spin).
//!
//! * **a, memory**: the peer writes `WORD` 5 ms after the start; this vCPU
//!   sleeps on `WORD != 0` and must return after the write, no earlier than
//!   5 ms after the start.
//! * **b, deadline**: `deadline(now + 20 ms)` returns no earlier than that.
//! * **c, notification from another environment**: with `predpeer` running
//!   (`init=predtest,predpeer`; `start_arg` bit 0 skips this part), a vCPU
//!   on the lowest usable core reads `notifications`, tells `predpeer` it
//!   is ready with a ring `Notify`, and sleeps on `notifications_ne(seen)`;
//!   `predpeer` (from the highest usable core) waits 5 ms and notifies back.
//! * **d, refusals**: backward jumps, jumps of 0 and past the end, 0 and
//!   `MAX_INSNS + 1` instructions, bad opcodes, bad registers, non-zero
//!   reserved fields, misaligned or out-of-page `LoadInfo` and misaligned
//!   `LoadUser` are `InvalidArgument`; `LoadUser` of an unmapped page, a
//!   kernel address or the null page, and a bad program pointer, are
//!   `BadAddress`. Every refused program would be true if it were run, so
//!   a wrong acceptance returns at once instead of hanging. Valid controls
//!   (a forward jump to the end, a `Ret` in the middle, `LoadInfo`) return.
//! * **e, the check-then-sleep race**: the peer writes the word before the
//!   sleep (it must return at once); then 200 rounds in which the peer
//!   writes after a random spin of 0-4095 iterations (none in a quarter of
//!   the rounds) while this vCPU spins 0, 0-4095 or 0-65535 iterations before
//!   `SleepOn`, so that the write lands before, during (between the
//!   kernel's check and the sleep) or after it: every round must wake (the
//!   peer gives the sleeper 2 s to say it woke, else `CHECK FAILED: lost
//!   wake-up`).

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos_async::abi::predicate::{Insn, MAX_INSNS, PRED_OP_COUNT, PredOp};
use libos_async::abi::{self, Error, Syscall};
use libos_async::check::{Checks, fail, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::predicate::{NOTIFICATIONS_OFFSET, Pred, R0, R1, R2, insn};
use libos_async::ring::Ring;
use libos_async::sys::{self, rdtsc};
use libos_async::{
    core_id, find_env, info, other_cores, println, sqe, start_vcpu, usable_cores, wait_for_ms,
};

use libos_async::rng::Rng;

libos_async::entry!(app_main);

/// Bounded waits for the other vCPUs.
const WAIT_MS: u64 = 30_000;
/// How long any sleep may last before it counts as a lost wake-up.
const SLEEP_CAP_MS: u64 = 5_000;
const RACE_ROUNDS: u64 = 200;

fn ms(n: u64) -> u64 {
    info().tsc_hz / 1000 * n
}

/// Sleeps on `p` or, failing that, `SLEEP_CAP_MS`.
fn sleep_capped(p: Pred) -> Result<u64, Error> {
    p.either(Pred::deadline(rdtsc() + ms(SLEEP_CAP_MS))).sleep()
}

// --- the peer vCPU ---------------------------------------------------------

/// Part a's word.
static WORD: AtomicU64 = AtomicU64::new(0);
/// Part e's word (round number).
static RACE_WORD: AtomicU64 = AtomicU64::new(0);
/// Part e: the last round whose sleeper woke.
static WOKE: AtomicU64 = AtomicU64::new(0);
/// Lost wake-ups the peer detected.
static LOST: AtomicU64 = AtomicU64::new(0);

/// Commands (`CMD`), with their parameters in `ARG`.
const CMD_WRITE_AT: u64 = 1;
const CMD_WRITE_NOW: u64 = 2;
const CMD_RACE: u64 = 3;
const CMD_QUIT: u64 = 4;
static CMD: AtomicU64 = AtomicU64::new(0);
static ARG: AtomicU64 = AtomicU64::new(0);
/// Posted command number; the peer copies it to `DONE` when done.
static SEQ: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU64 = AtomicU64::new(0);
/// The TSC just before the peer's write of part a.
static WRITE_TSC: AtomicU64 = AtomicU64::new(0);

/// Waits for `done()`: first spinning (to catch the post at once), then
/// yielding; bounded.
fn spin_then_wait(done: impl Fn() -> bool) -> bool {
    for _ in 0..200_000 {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    wait_for_ms(WAIT_MS, done)
}

fn peer(_arg: u64) -> ! {
    let mut seen = 0;
    loop {
        if !spin_then_wait(|| SEQ.load(SeqCst) != seen) {
            println!("CHECK FAILED: peer: no command for {WAIT_MS} ms");
            LOST.fetch_add(1, SeqCst);
            break;
        }
        seen = SEQ.load(SeqCst);
        let arg = ARG.load(SeqCst);
        match CMD.load(SeqCst) {
            CMD_WRITE_AT => {
                while rdtsc() < arg {
                    let _ = sys::yield_now();
                }
                WRITE_TSC.store(rdtsc(), SeqCst);
                WORD.store(1, SeqCst);
            }
            CMD_WRITE_NOW => RACE_WORD.store(arg, SeqCst),
            CMD_RACE => {
                let (round, spins) = (arg >> 16, arg & 0xffff);
                for _ in 0..spins {
                    core::hint::spin_loop();
                }
                RACE_WORD.store(round, SeqCst);
                if !wait_for_ms(2_000, || WOKE.load(SeqCst) >= round) {
                    println!("CHECK FAILED: e: lost wake-up in round {round}");
                    LOST.fetch_add(1, SeqCst);
                }
            }
            _ => {
                DONE.store(seen, SeqCst);
                break;
            }
        }
        DONE.store(seen, SeqCst);
    }
    sys::vcpu_exit()
}

/// Posts a command to the peer.
fn post(cmd: u64, arg: u64) -> u64 {
    CMD.store(cmd, SeqCst);
    ARG.store(arg, SeqCst);
    SEQ.fetch_add(1, SeqCst) + 1
}

/// Waits (bounded) until the peer finished command `seq`.
fn await_peer(seq: u64) -> bool {
    wait_for_ms(WAIT_MS, || DONE.load(SeqCst) >= seq)
}

// --- parts -----------------------------------------------------------------

fn part_a(c: &mut Checks) {
    let start = rdtsc();
    let at = start + ms(5);
    let seq = post(CMD_WRITE_AT, at);
    let r = sleep_capped(Pred::word_ne(WORD.as_ptr() as u64, 0));
    let woke = rdtsc();
    c.check(r == Ok(0), format_args!("a: sleep_on returned {r:?}"));
    c.check(WORD.load(SeqCst) != 0, format_args!("a: woke without the write (lost wake-up?)"));
    c.check(woke >= at, format_args!("a: woke {} cycles before the write time", at - woke));
    c.check(await_peer(seq), format_args!("a: peer did not finish"));
    let late = woke.saturating_sub(WRITE_TSC.load(SeqCst));
    println!(
        "predtest a: woke {} us after the peer's write",
        late / (info().tsc_hz / 1_000_000).max(1)
    );
}

fn part_b(c: &mut Checks) {
    let deadline = rdtsc() + ms(20);
    let r = Pred::deadline(deadline).sleep();
    let woke = rdtsc();
    c.check(r == Ok(0), format_args!("b: sleep_on returned {r:?}"));
    c.check(
        woke >= deadline,
        format_args!("b: woke {} cycles early", deadline.saturating_sub(woke)),
    );
    c.check(
        woke - deadline < ms(SLEEP_CAP_MS),
        format_args!("b: woke {} ms late", (woke - deadline) / ms(1)),
    );
    println!(
        "predtest b: woke {} us after a 20 ms deadline",
        (woke - deadline) / (info().tsc_hz / 1_000_000).max(1)
    );
}

/// Part c's verdict from the sleeper vCPU: 1 + failed checks (0: running).
static C_RESULT: AtomicU64 = AtomicU64::new(0);

fn part_c_sleeper(peer_env: u64) -> u64 {
    let mut c = Checks::new();
    let mut ring = match Ring::new(8, 8) {
        Ok(r) => r,
        Err(e) => {
            c.check(false, format_args!("c: Ring::new: {e:?}"));
            return u64::from(c.failed());
        }
    };
    let seen = sys::notifications();
    let pushed = ring.push(sqe::notify(peer_env, 1)).is_ok();
    let r = ring.submit(0);
    c.check(pushed && r == Ok(1), format_args!("c: ready notify submit {r:?}"));
    let done = wait_for_ms(WAIT_MS, || ring.ready() > 0);
    let cqe = ring.pop();
    c.check(
        done && cqe.is_some_and(|e| e.user_data == 1 && e.result == 0),
        format_args!("c: ready notify completion {cqe:?}"),
    );
    let t0 = rdtsc();
    let r = Pred::notifications_ne(seen).either(Pred::deadline(t0 + ms(2 * WAIT_MS))).sleep();
    let woke = rdtsc();
    let now = sys::notifications();
    c.check(r == Ok(0), format_args!("c: sleep_on returned {r:?}"));
    c.check(now > seen, format_args!("c: no notification from predpeer (still {seen})"));
    println!(
        "predtest c: woke on core {} after {} ms, notifications {seen} -> {now}",
        core_id(),
        (woke - t0) / ms(1)
    );
    u64::from(c.failed())
}

fn part_c_vcpu(peer_env: u64) -> ! {
    let failed = part_c_sleeper(peer_env);
    C_RESULT.store(1 + failed, SeqCst);
    sys::vcpu_exit()
}

fn part_c(c: &mut Checks, skip: bool, peer_core: usize) {
    if skip {
        println!("predtest c: skipped (start_arg bit 0)");
        return;
    }
    let peer_env = match find_env("predpeer", WAIT_MS) {
        Ok(e) => e,
        Err(e) => {
            c.check(
                false,
                format_args!("c: predpeer not found ({e:?}); run init=predtest,predpeer"),
            );
            return;
        }
    };
    let lo = usable_cores().trailing_zeros() as usize;
    if lo == core_id() || lo == peer_core {
        let failed = part_c_sleeper(peer_env);
        c.check(failed == 0, format_args!("c: {failed} checks failed"));
        return;
    }
    require("start_vcpu (c)", start_vcpu(lo, part_c_vcpu, peer_env));
    let done = wait_for_ms(3 * WAIT_MS, || C_RESULT.load(SeqCst) != 0);
    let result = C_RESULT.load(SeqCst);
    c.check(done && result == 1, format_args!("c: sleeper on core {lo}: result {result}"));
}

fn bad_program(c: &mut Checks, what: &str, p: &[Insn], want: Error) {
    let r = sys::sleep_on(p);
    c.check(r == Err(want), format_args!("d: {what}: want {want:?}, got {r:?}"));
}

fn part_d(c: &mut Checks) {
    let one = insn(PredOp::Const as u8, 0, 0, 0, 1);
    let zero_r1 = insn(PredOp::Const as u8, 1, 0, 0, 0);
    let ret0 = insn(PredOp::Ret as u8, 0, 0, 0, 0);
    let jump = |imm| insn(PredOp::Jump as u8, 0, 0, 0, imm);
    let jz = |imm| insn(PredOp::JumpIfZero as u8, 0, 1, 0, imm);
    let load = |va| insn(PredOp::LoadUser as u8, 2, 0, 0, va);
    let info_load = |off| insn(PredOp::LoadInfo as u8, 2, 0, 0, off);
    let word = WORD.as_ptr() as u64;
    let unmapped = SCRATCH_BASE + 0x3000_0000;
    let inv = Error::InvalidArgument;
    let bad = Error::BadAddress;

    bad_program(c, "backward jump", &[one, jump(u64::MAX), ret0], inv);
    bad_program(c, "backward jump by 2", &[one, zero_r1, jz((-2i64) as u64), ret0], inv);
    bad_program(c, "jump of 0", &[one, jump(0), ret0], inv);
    bad_program(c, "jump-if-zero of 0", &[one, zero_r1, jz(0), ret0], inv);
    bad_program(c, "jump past the end", &[one, jump(3), ret0], inv);
    bad_program(c, "huge jump", &[one, jump(1 << 63), ret0], inv);
    bad_program(c, "too long", &[one; MAX_INSNS + 1], inv);
    bad_program(c, "empty", &[], inv);
    let mut op = one;
    op.op = PRED_OP_COUNT;
    bad_program(c, "opcode PRED_OP_COUNT", &[one, op, ret0], inv);
    op.op = 0xff;
    bad_program(c, "opcode 0xff", &[one, op, ret0], inv);
    let mut reg = insn(PredOp::Const as u8, 8, 0, 0, 1);
    bad_program(c, "dst r8", &[one, reg], inv);
    reg = insn(PredOp::Ne as u8, 1, 8, 0, 0);
    bad_program(c, "a r8", &[one, reg], inv);
    reg = insn(PredOp::Or as u8, 1, 0, 200, 0);
    bad_program(c, "b r200", &[one, reg], inv);
    reg = insn(PredOp::Ret as u8, 0, 9, 0, 0);
    bad_program(c, "ret r9", &[one, reg], inv);
    let mut res = one;
    res.reserved = 1;
    bad_program(c, "reserved field", &[res], inv);
    bad_program(c, "misaligned LoadUser", &[one, load(word + 4)], inv);
    bad_program(c, "LoadInfo offset 4", &[one, info_load(4)], inv);
    bad_program(c, "LoadInfo offset 4096", &[one, info_load(4096)], inv);
    bad_program(c, "LoadUser unmapped", &[one, load(unmapped)], bad);
    bad_program(c, "LoadUser kernel", &[one, load(0xffff_8000_0000_0000)], bad);
    bad_program(c, "LoadUser null page", &[one, load(0)], bad);
    bad_program(c, "LoadUser non-canonical", &[one, load(0x0000_8000_0000_0000)], bad);
    let raw =
        |ptr, len| abi::decode(sys::syscall_raw(Syscall::SleepOn as u64, [ptr, len, 0, 0, 0, 0]));
    let r = raw(0, 1);
    c.check(r == Err(bad), format_args!("d: null program: {r:?}"));
    let r = raw(0xffff_8000_0000_0000, 1);
    c.check(r == Err(bad), format_args!("d: kernel program: {r:?}"));
    let r = raw(unmapped, 1);
    c.check(r == Err(bad), format_args!("d: unmapped program: {r:?}"));
    let r = raw(word, u64::MAX);
    c.check(r == Err(inv), format_args!("d: count u64::MAX: {r:?}"));

    // Controls: valid, and true at once.
    let ok = |c: &mut Checks, what: &str, p: &[Insn]| {
        let r = sys::sleep_on(p);
        c.check(r == Ok(0), format_args!("d: control {what}: {r:?}"));
    };
    ok(c, "const 1", &[one]);
    // r1 = 0: the jump is taken. Read as pc+1+imm it lands just past the
    // end; read as pc+imm on the last instruction, which sets r0 = 1 too.
    ok(c, "jump to the end", &[one, zero_r1, jz(1), one]);
    ok(
        c,
        "ret in the middle",
        &[
            zero_r1,
            insn(PredOp::Not as u8, 3, 1, 0, 0),
            insn(PredOp::Ret as u8, 0, 3, 0, 0),
            zero_r1,
        ],
    );
    ok(
        c,
        "LoadInfo notifications",
        Pred::new().load_info(R1, NOTIFICATIONS_OFFSET).konst(R2, u64::MAX).ne(R0, R1, R2).insns(),
    );
    ok(c, "LoadUser word", Pred::word_eq(word, WORD.load(SeqCst)).insns());
    println!("predtest d: verifier refusals checked");
}

fn part_e(c: &mut Checks) {
    let va = RACE_WORD.as_ptr() as u64;
    // The condition is already true when the sleep starts.
    let seq = post(CMD_WRITE_NOW, 1);
    c.check(await_peer(seq), format_args!("e: peer did not write"));
    let t0 = rdtsc();
    let r = sleep_capped(Pred::word_ne(va, 0));
    let took = rdtsc() - t0;
    c.check(
        r == Ok(0) && took < ms(200),
        format_args!("e: already-true predicate: {r:?} after {} ms", took / ms(1)),
    );
    println!(
        "predtest e: already-true predicate returned in {} us",
        took / (info().tsc_hz / 1_000_000).max(1)
    );

    let mut random = Rng::new(rdtsc());
    let mut early = 0;
    let mut slept = 0;
    for round in 2..RACE_ROUNDS + 2 {
        let rng = random.next_u64();
        // A quarter of the rounds without any spin.
        let spins = if rng & 3 == 0 { 0 } else { (rng >> 8) & 0xfff };
        // This vCPU's own spin: none, short or long (a third each), so the
        // write lands before, during or after the sleep.
        let mine = match (rng >> 40) % 3 {
            0 => 0,
            1 => (rng >> 24) & 0xfff,
            _ => (rng >> 24) & 0xffff,
        };
        let before = round - 1;
        let seq = post(CMD_RACE, round << 16 | spins);
        for _ in 0..mine {
            core::hint::spin_loop();
        }
        if RACE_WORD.load(SeqCst) != before {
            early += 1;
        }
        let t0 = rdtsc();
        let r = sleep_capped(Pred::word_ne(va, before));
        if rdtsc() - t0 > ms(1) {
            slept += 1;
        }
        let got = RACE_WORD.load(SeqCst);
        WOKE.store(round, SeqCst);
        c.check(
            r == Ok(0) && got == round,
            format_args!("e: round {round}: sleep {r:?}, word {got}"),
        );
        if !await_peer(seq) {
            fail(format_args!("e: round {round}: the peer is stuck"));
        }
        if c.failed() > 20 {
            break;
        }
    }
    let lost = LOST.load(SeqCst);
    c.check(lost == 0, format_args!("e: {lost} lost wake-ups"));
    println!(
        "predtest e: {RACE_ROUNDS} rounds, {early} written before the sleep, {slept} slept >1 ms, {lost} lost"
    );
}

fn app_main(arg: u64) -> i32 {
    let mut c = Checks::new();
    // The peer avoids the lowest core if it can: part c's sleeper goes there.
    let lo = usable_cores().trailing_zeros() as usize;
    let Some(peer_core) = other_cores().find(|&p| p != lo).or_else(|| other_cores().next()) else {
        fail(format_args!("needs two usable cores"));
    };
    require("start_vcpu (peer)", start_vcpu(peer_core, peer, 0));
    part_a(&mut c);
    part_b(&mut c);
    part_c(&mut c, arg & 1 != 0, peer_core);
    part_d(&mut c);
    part_e(&mut c);
    let seq = post(CMD_QUIT, 0);
    c.check(await_peer(seq), format_args!("peer did not quit"));
    println!("predtest: {} checks passed, {} failed", c.passed(), c.failed());
    c.finish()
}
