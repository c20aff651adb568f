//! Wakeup predicates: verifying an untrusted program once, evaluating it often.
//!
//! A vCPU blocks by handing the kernel a short program of
//! [`abi::predicate::Insn`]s ([`abi::Syscall::SleepOn`]); the program's value
//! says whether the vCPU should wake up. This module owns the two halves of
//! that contract, both pure functions of their inputs:
//!
//! * [`verify`] checks the instructions once, at install time, and returns a
//!   [`Program`] (the only way to get one) or a [`VerifyError`];
//! * [`Program::eval`] runs a verified program. It never panics and never
//!   loops: every step moves the program counter strictly forward, so it
//!   executes at most [`Program::len`] instructions.
//!
//! Memory is reached only through the [`Memory`] trait, which the kernel
//! implements over the environment's address space and InfoPage (and the
//! tests implement over a map).
//!
//! # What an accepted program looks like
//!
//! * 1 to [`MAX_INSNS`] instructions ([`VerifyError::Empty`],
//!   [`VerifyError::TooLong`]).
//! * Every opcode is a [`PredOp`] ([`VerifyError::BadOpcode`]).
//! * Every register field the opcode uses names one of the [`REGS`]
//!   registers ([`VerifyError::BadRegister`]).
//! * The encoding is canonical ([`VerifyError::ReservedNotZero`]): `reserved`
//!   is 0, and so is every field the opcode does not use. The fields each
//!   opcode uses are:
//!
//!   | opcode | `dst` | `a` | `b` | `imm` |
//!   |---|---|---|---|---|
//!   | `Const`, `LoadUser`, `LoadInfo` | ✓ | | | ✓ |
//!   | `Tsc` | ✓ | | | |
//!   | `Eq`, `Ne`, `Lt`, `Le`, `And`, `Or`, `Add` | ✓ | ✓ | ✓ | |
//!   | `Not` | ✓ | ✓ | | |
//!   | `JumpIfZero` | | ✓ | | ✓ |
//!   | `Jump` | | | | ✓ |
//!   | `Ret` | | ✓ | | |
//!
//! * A jump at `pc` with distance `imm` continues at `pc + 1 + imm`. The
//!   distance must be at least 1 and not negative when read as an `i64`
//!   ([`VerifyError::BackwardOrZeroJump`]), and the target at most `len`
//!   ([`VerifyError::JumpOutOfRange`]); a target of exactly `len` runs off
//!   the end.
//! * A `LoadUser` address is 8-byte aligned ([`VerifyError::MisalignedLoad`])
//!   and [`Memory::readable`] at install time
//!   ([`VerifyError::UnreadableLoad`]).
//! * A `LoadInfo` offset is 8-byte aligned and the whole word lies inside
//!   [`InfoPage`] ([`VerifyError::BadInfoOffset`]).
//!
//! Checks run instruction by instruction, in the order above within one
//! instruction; the error names the first failing instruction (`at`).
//!
//! # Semantics
//!
//! Eight 64-bit registers start at 0. Comparisons are unsigned and yield 0
//! or 1; `And`, `Or` and `Not` are logical (any non-zero operand is true) and
//! yield 0 or 1; `Add` wraps. `Ret a` stops with the value `a != 0`; running
//! off the end (the last instruction, or a jump to `len`) yields `r0 != 0`.
//! A `LoadUser` whose word is no longer mapped stops the program with the
//! value `true`: a vCPU whose condition cannot be read any more is woken up
//! to find out for itself.

use abi::InfoPage;
use abi::predicate::{Insn, MAX_INSNS, PredOp, REGS};
use alloc::vec::Vec;

/// Where a verified program may load from; implemented by the kernel (and by
/// tests).
pub trait Memory {
    /// Whether the 8-byte word at `va` is in a page the environment has
    /// mapped readable (install-time check).
    fn readable(&self, va: u64) -> bool;
    /// The word at `va`, or `None` if it is no longer mapped (evaluation
    /// time). Only called with addresses [`Memory::readable`] approved.
    fn load(&self, va: u64) -> Option<u64>;
    /// The [`InfoPage`] word at byte `offset` (a multiple of 8, with
    /// `offset + 8 <= size_of::<InfoPage>()`).
    fn info(&self, offset: u64) -> u64;
    /// The TSC.
    fn tsc(&self) -> u64;
}

/// Why [`verify`] refused a program. `at` is the index of the offending
/// instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// The program has no instructions.
    Empty,
    /// The program has more than [`MAX_INSNS`] instructions.
    TooLong,
    /// The opcode is not a [`PredOp`].
    BadOpcode {
        /// Offending instruction.
        at: usize,
    },
    /// A register field the opcode uses is not below [`REGS`].
    BadRegister {
        /// Offending instruction.
        at: usize,
    },
    /// `reserved`, or a field the opcode does not use, is not 0.
    ReservedNotZero {
        /// Offending instruction.
        at: usize,
    },
    /// A jump distance is 0 or negative (as an `i64`).
    BackwardOrZeroJump {
        /// Offending instruction.
        at: usize,
    },
    /// A jump lands past the end of the program (beyond `len`).
    JumpOutOfRange {
        /// Offending instruction.
        at: usize,
    },
    /// A `LoadUser` address is not 8-byte aligned.
    MisalignedLoad {
        /// Offending instruction.
        at: usize,
    },
    /// A `LoadUser` address is not mapped readable.
    UnreadableLoad {
        /// Offending instruction.
        at: usize,
    },
    /// A `LoadInfo` offset is misaligned or outside [`InfoPage`].
    BadInfoOffset {
        /// Offending instruction.
        at: usize,
    },
}

impl VerifyError {
    /// The error the system call returns: `BadAddress` for a load that
    /// cannot be proven safe, `InvalidArgument` for everything else.
    pub fn to_abi(self) -> abi::Error {
        match self {
            VerifyError::UnreadableLoad { .. } => abi::Error::BadAddress,
            _ => abi::Error::InvalidArgument,
        }
    }
}

/// A verified predicate. Only [`verify`] makes one, so every instance
/// satisfies the rules in the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
    /// See [`Program::deadlines`].
    deadlines: Vec<u64>,
}

/// The opcode numbered `n`, if defined.
fn pred_op(n: u8) -> Option<PredOp> {
    PredOp::from_number(n)
}

/// Which fields an opcode uses: `(dst, a, b, imm)`.
fn fields(op: PredOp) -> (bool, bool, bool, bool) {
    use PredOp::*;
    match op {
        Const | LoadUser | LoadInfo => (true, false, false, true),
        Tsc => (true, false, false, false),
        Eq | Ne | Lt | Le | And | Or | Add => (true, true, true, false),
        Not => (true, true, false, false),
        JumpIfZero => (false, true, false, true),
        Jump => (false, false, false, true),
        Ret => (false, true, false, false),
    }
}

/// Checks one instruction at index `at` of a program of `len` instructions.
fn verify_insn(at: usize, insn: &Insn, len: usize, mem: &impl Memory) -> Result<(), VerifyError> {
    let op = pred_op(insn.op).ok_or(VerifyError::BadOpcode { at })?;
    if insn.reserved != 0 {
        return Err(VerifyError::ReservedNotZero { at });
    }
    let (uses_dst, uses_a, uses_b, uses_imm) = fields(op);
    let regs = [(uses_dst, insn.dst), (uses_a, insn.a), (uses_b, insn.b)];
    if regs.iter().any(|&(used, r)| used && r >= REGS) {
        return Err(VerifyError::BadRegister { at });
    }
    if regs.iter().any(|&(used, r)| !used && r != 0) || (!uses_imm && insn.imm != 0) {
        return Err(VerifyError::ReservedNotZero { at });
    }
    match op {
        PredOp::JumpIfZero | PredOp::Jump => {
            if insn.imm == 0 || i64::try_from(insn.imm).is_err() {
                return Err(VerifyError::BackwardOrZeroJump { at });
            }
            let in_range = usize::try_from(insn.imm)
                .ok()
                .and_then(|d| at.checked_add(1)?.checked_add(d))
                .is_some_and(|target| target <= len);
            if !in_range {
                return Err(VerifyError::JumpOutOfRange { at });
            }
        }
        PredOp::LoadUser => {
            if !insn.imm.is_multiple_of(8) {
                return Err(VerifyError::MisalignedLoad { at });
            }
            if !mem.readable(insn.imm) {
                return Err(VerifyError::UnreadableLoad { at });
            }
        }
        PredOp::LoadInfo => {
            let inside = insn
                .imm
                .checked_add(8)
                .is_some_and(|end| end <= core::mem::size_of::<InfoPage>() as u64);
            if !insn.imm.is_multiple_of(8) || !inside {
                return Err(VerifyError::BadInfoOffset { at });
            }
        }
        _ => {}
    }
    Ok(())
}

/// Verifies `insns` against the rules in the [module docs](self), asking
/// `mem` whether each `LoadUser` address is readable now.
pub fn verify(insns: &[Insn], mem: &impl Memory) -> Result<Program, VerifyError> {
    if insns.is_empty() {
        return Err(VerifyError::Empty);
    }
    if insns.len() > MAX_INSNS {
        return Err(VerifyError::TooLong);
    }
    for (at, insn) in insns.iter().enumerate() {
        verify_insn(at, insn, insns.len(), mem)?;
    }
    Ok(Program { insns: insns.to_vec(), deadlines: tsc_deadlines(insns) })
}

/// The TSC values at which `insns` may start to hold because of the clock:
/// every `c` of a comparison `c <= tsc` or `c < tsc` (as `Le`/`Lt` with a
/// `Const` in `a` and a `Tsc` in `b`, tracked through straight-line code;
/// a jump target forgets what it knew). A hint only: the kernel arms its
/// timer for the earliest one still ahead and evaluates the program then,
/// so a missed or spurious hint costs a late or an extra evaluation, never
/// a wrong answer.
fn tsc_deadlines(insns: &[Insn]) -> Vec<u64> {
    #[derive(Clone, Copy, PartialEq)]
    enum Known {
        Nothing,
        Const(u64),
        Tsc,
    }
    let mut regs = [Known::Nothing; REGS as usize];
    let mut targets = [false; MAX_INSNS + 1];
    let mut out = Vec::new();
    for (at, insn) in insns.iter().enumerate() {
        if targets[at] {
            regs = [Known::Nothing; REGS as usize];
        }
        let op = pred_op(insn.op);
        if matches!(op, Some(PredOp::Jump | PredOp::JumpIfZero)) {
            let to = at + 1 + insn.imm as usize;
            if to <= MAX_INSNS {
                targets[to] = true;
            }
            continue;
        }
        let (a, b) = (regs[reg(insn.a)], regs[reg(insn.b)]);
        if let (Some(PredOp::Le | PredOp::Lt), Known::Const(c), Known::Tsc) = (op, a, b) {
            out.push(if op == Some(PredOp::Lt) { c.saturating_add(1) } else { c });
        }
        regs[reg(insn.dst)] = match op {
            Some(PredOp::Const) => Known::Const(insn.imm),
            Some(PredOp::Tsc) => Known::Tsc,
            _ => Known::Nothing,
        };
    }
    out
}

/// Register index of a verified register field (`r < REGS`; the mask keeps
/// indexing panic-free whatever the field holds).
fn reg(r: u8) -> usize {
    usize::from(r % REGS)
}

impl Program {
    /// Number of instructions (1 to [`MAX_INSNS`]).
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// The earliest TSC deadline the program compares the clock with that
    /// is after `now`, if any (a hint for the kernel's timer; see
    /// `tsc_deadlines`).
    pub fn next_deadline(&self, now: u64) -> Option<u64> {
        self.deadlines.iter().copied().filter(|&d| d > now).min()
    }

    /// Always `false`: [`verify`] refuses empty programs.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// The verified instructions.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Evaluates the program: `true` means "wake up". Never panics, never
    /// loops: at most [`Program::len`] steps. A `LoadUser` of a word no
    /// longer mapped makes the result `true` (fail-safe wake-up).
    pub fn eval(&self, mem: &impl Memory) -> bool {
        self.eval_counted(mem).0
    }

    /// Like [`Program::eval`], also returning the number of instructions
    /// executed (always at most [`Program::len`]).
    pub fn eval_counted(&self, mem: &impl Memory) -> (bool, usize) {
        let mut r = [0u64; REGS as usize];
        let mut pc = 0usize;
        let mut steps = 0usize;
        while let Some(insn) = self.insns.get(pc) {
            steps += 1;
            let (a, b) = (r[reg(insn.a)], r[reg(insn.b)]);
            let mut next = pc + 1;
            let value = match pred_op(insn.op) {
                Some(PredOp::Const) => insn.imm,
                Some(PredOp::LoadUser) => match mem.load(insn.imm) {
                    Some(word) => word,
                    None => return (true, steps),
                },
                Some(PredOp::LoadInfo) => mem.info(insn.imm),
                Some(PredOp::Tsc) => mem.tsc(),
                Some(PredOp::Eq) => u64::from(a == b),
                Some(PredOp::Ne) => u64::from(a != b),
                Some(PredOp::Lt) => u64::from(a < b),
                Some(PredOp::Le) => u64::from(a <= b),
                Some(PredOp::And) => u64::from(a != 0 && b != 0),
                Some(PredOp::Or) => u64::from(a != 0 || b != 0),
                Some(PredOp::Add) => a.wrapping_add(b),
                Some(PredOp::Not) => u64::from(a == 0),
                Some(PredOp::JumpIfZero | PredOp::Jump) => {
                    if insn.op == PredOp::Jump as u8 || a == 0 {
                        let distance = usize::try_from(insn.imm).unwrap_or(usize::MAX);
                        next = next.saturating_add(distance);
                    }
                    pc = next;
                    continue;
                }
                Some(PredOp::Ret) => return (a != 0, steps),
                // Unreachable for a verified program; stop rather than guess.
                None => return (true, steps),
            };
            r[reg(insn.dst)] = value;
            pc = next;
        }
        (r[0] != 0, steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::predicate::PRED_OP_COUNT;
    use core::cell::{Cell, RefCell};
    use core::mem::{offset_of, size_of};
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    const INFO_WORDS: usize = size_of::<InfoPage>() / 8;

    /// A fake address space: readable words, an InfoPage, a TSC. It records
    /// which addresses `readable` approved and every access that breaks the
    /// [`Memory`] contract (instead of panicking, so the tests can assert).
    #[derive(Default)]
    struct FakeMemory {
        words: BTreeMap<u64, u64>,
        info: [u64; INFO_WORDS],
        tsc: Cell<u64>,
        approved: RefCell<BTreeSet<u64>>,
        violations: RefCell<Vec<String>>,
        /// Set once verification is over: `readable` is then a violation.
        evaluating: Cell<bool>,
    }

    impl FakeMemory {
        fn with_words(words: &[(u64, u64)]) -> Self {
            FakeMemory { words: words.iter().copied().collect(), ..FakeMemory::default() }
        }

        fn unmap(&mut self, va: u64) {
            self.words.remove(&va);
        }

        fn set_info(&mut self, offset: usize, value: u64) {
            self.info[offset / 8] = value;
        }

        fn violations(&self) -> Vec<String> {
            self.violations.borrow().clone()
        }
    }

    impl Memory for FakeMemory {
        fn readable(&self, va: u64) -> bool {
            if self.evaluating.get() {
                self.violations.borrow_mut().push(format!("readable({va:#x}) during evaluation"));
            }
            let ok = self.words.contains_key(&va);
            if ok {
                self.approved.borrow_mut().insert(va);
            }
            ok
        }

        fn load(&self, va: u64) -> Option<u64> {
            if !self.approved.borrow().contains(&va) {
                self.violations.borrow_mut().push(format!("load({va:#x}) never approved"));
            }
            self.words.get(&va).copied()
        }

        fn info(&self, offset: u64) -> u64 {
            let index = usize::try_from(offset / 8).unwrap_or(usize::MAX);
            if !offset.is_multiple_of(8) || index >= INFO_WORDS {
                self.violations.borrow_mut().push(format!("info({offset:#x}) out of the InfoPage"));
                return 0;
            }
            self.info[index]
        }

        fn tsc(&self) -> u64 {
            self.tsc.get()
        }
    }

    fn i(op: PredOp, dst: u8, a: u8, b: u8, imm: u64) -> Insn {
        Insn { op: op as u8, dst, a, b, reserved: 0, imm }
    }
    fn konst(dst: u8, imm: u64) -> Insn {
        i(PredOp::Const, dst, 0, 0, imm)
    }
    fn load_user(dst: u8, va: u64) -> Insn {
        i(PredOp::LoadUser, dst, 0, 0, va)
    }
    fn load_info(dst: u8, offset: usize) -> Insn {
        i(PredOp::LoadInfo, dst, 0, 0, offset as u64)
    }
    fn tsc(dst: u8) -> Insn {
        i(PredOp::Tsc, dst, 0, 0, 0)
    }
    fn bin(op: PredOp, dst: u8, a: u8, b: u8) -> Insn {
        i(op, dst, a, b, 0)
    }
    fn not(dst: u8, a: u8) -> Insn {
        i(PredOp::Not, dst, a, 0, 0)
    }
    fn jz(a: u8, skip: u64) -> Insn {
        i(PredOp::JumpIfZero, 0, a, 0, skip)
    }
    fn jump(skip: u64) -> Insn {
        i(PredOp::Jump, 0, 0, 0, skip)
    }
    fn ret(a: u8) -> Insn {
        i(PredOp::Ret, 0, a, 0, 0)
    }

    const X: u64 = 0x4000_1000;

    #[test]
    fn deadline_hints_follow_clock_comparisons() {
        let mem = FakeMemory::with_words(&[(X, 0)]);
        // `deadline <= tsc`, as the libOS's `Pred::deadline` emits it, or a
        // word change: one hint, the deadline.
        let p = verify(
            &[
                konst(1, 5_000),
                tsc(2),
                bin(PredOp::Le, 0, 1, 2),
                load_user(3, X),
                konst(4, 7),
                bin(PredOp::Ne, 3, 3, 4),
                bin(PredOp::Or, 0, 0, 3),
            ],
            &mem,
        )
        .unwrap();
        assert_eq!(p.next_deadline(0), Some(5_000));
        assert_eq!(p.next_deadline(5_000), None);
        // `c < tsc` holds from c + 1; `tsc < c` never starts to hold later.
        let p = verify(&[konst(1, 9), tsc(2), bin(PredOp::Lt, 0, 1, 2)], &mem).unwrap();
        assert_eq!(p.next_deadline(0), Some(10));
        let p = verify(&[konst(1, 9), tsc(2), bin(PredOp::Lt, 0, 2, 1)], &mem).unwrap();
        assert_eq!(p.next_deadline(0), None);
        // A jump target forgets the constant; the earliest of two wins.
        let p = verify(
            &[
                konst(1, 300),
                jz(1, 1),
                tsc(2),
                bin(PredOp::Le, 0, 1, 2),
                konst(5, 200),
                tsc(6),
                bin(PredOp::Le, 3, 5, 6),
                bin(PredOp::Or, 0, 0, 3),
            ],
            &mem,
        )
        .unwrap();
        assert_eq!(p.next_deadline(0), Some(200));
        // No clock, no hint.
        let p = verify(&[load_user(1, X), konst(2, 1), bin(PredOp::Eq, 0, 1, 2)], &mem).unwrap();
        assert_eq!(p.next_deadline(0), None);
    }

    fn run(insns: &[Insn], mem: &FakeMemory) -> bool {
        let p = verify(insns, mem).expect("verifies");
        mem.evaluating.set(true);
        let (value, steps) = p.eval_counted(mem);
        mem.evaluating.set(false);
        assert!(steps <= p.len());
        assert_eq!(mem.violations(), Vec::<String>::new());
        value
    }

    fn err(insns: &[Insn]) -> VerifyError {
        let mem = FakeMemory::with_words(&[(X, 0)]);
        verify(insns, &mem).expect_err("refused")
    }

    #[test]
    fn opcode_table_matches_abi() {
        for n in 0..PRED_OP_COUNT {
            assert_eq!(pred_op(n).map(|op| op as u8), Some(n));
        }
        assert_eq!(pred_op(PRED_OP_COUNT), None);
        assert_eq!(pred_op(u8::MAX), None);
        assert_eq!(size_of::<Insn>(), 16);
    }

    #[test]
    fn refuses_empty_and_too_long() {
        assert_eq!(err(&[]), VerifyError::Empty);
        assert!(verify(&[konst(0, 1); MAX_INSNS], &FakeMemory::default()).is_ok());
        assert_eq!(err(&[konst(0, 1); MAX_INSNS + 1]), VerifyError::TooLong);
    }

    #[test]
    fn refuses_bad_opcodes() {
        let bad = Insn { op: PRED_OP_COUNT, ..Insn::default() };
        assert_eq!(err(&[konst(0, 1), bad]), VerifyError::BadOpcode { at: 1 });
        let bad = Insn { op: 0xff, ..Insn::default() };
        assert_eq!(err(&[bad]), VerifyError::BadOpcode { at: 0 });
    }

    #[test]
    fn refuses_bad_registers() {
        assert_eq!(err(&[konst(REGS, 1)]), VerifyError::BadRegister { at: 0 });
        assert_eq!(err(&[bin(PredOp::Add, 0, 1, REGS)]), VerifyError::BadRegister { at: 0 });
        assert_eq!(err(&[not(0, 200)]), VerifyError::BadRegister { at: 0 });
        assert_eq!(err(&[ret(REGS)]), VerifyError::BadRegister { at: 0 });
        assert_eq!(err(&[jz(9, 1), ret(0)]), VerifyError::BadRegister { at: 0 });
        // Register 7 is the last valid one.
        assert!(verify(&[bin(PredOp::Add, 7, 7, 7)], &FakeMemory::default()).is_ok());
    }

    #[test]
    fn refuses_non_canonical_encodings() {
        let mut reserved = konst(0, 1);
        reserved.reserved = 1;
        assert_eq!(err(&[reserved]), VerifyError::ReservedNotZero { at: 0 });
        // Unused register fields.
        assert_eq!(err(&[i(PredOp::Const, 0, 1, 0, 5)]), VerifyError::ReservedNotZero { at: 0 });
        assert_eq!(err(&[i(PredOp::Not, 0, 1, 1, 0)]), VerifyError::ReservedNotZero { at: 0 });
        assert_eq!(err(&[i(PredOp::Ret, 1, 0, 0, 0)]), VerifyError::ReservedNotZero { at: 0 });
        assert_eq!(
            err(&[i(PredOp::Jump, 0, 2, 0, 1), ret(0)]),
            VerifyError::ReservedNotZero { at: 0 }
        );
        // Unused immediates.
        assert_eq!(err(&[i(PredOp::Tsc, 0, 0, 0, 1)]), VerifyError::ReservedNotZero { at: 0 });
        assert_eq!(err(&[i(PredOp::Eq, 0, 1, 2, 3)]), VerifyError::ReservedNotZero { at: 0 });
        assert_eq!(err(&[i(PredOp::Ret, 0, 0, 0, 1)]), VerifyError::ReservedNotZero { at: 0 });
    }

    #[test]
    fn refuses_zero_and_backward_jumps() {
        assert_eq!(err(&[jump(0), ret(0)]), VerifyError::BackwardOrZeroJump { at: 0 });
        assert_eq!(err(&[konst(0, 1), jz(0, u64::MAX)]), VerifyError::BackwardOrZeroJump { at: 1 });
        assert_eq!(err(&[jump(1 << 63), ret(0)]), VerifyError::BackwardOrZeroJump { at: 0 });
    }

    #[test]
    fn refuses_jumps_past_the_end() {
        assert_eq!(err(&[jump(2), ret(0)]), VerifyError::JumpOutOfRange { at: 0 });
        assert_eq!(err(&[jz(0, i64::MAX as u64)]), VerifyError::JumpOutOfRange { at: 0 });
        // Exactly to `len` is fine.
        assert!(verify(&[jump(1), ret(0)], &FakeMemory::default()).is_ok());
    }

    #[test]
    fn refuses_bad_user_loads() {
        assert_eq!(err(&[load_user(0, X + 4)]), VerifyError::MisalignedLoad { at: 0 });
        assert_eq!(err(&[konst(1, 0), load_user(0, X + 8)]), VerifyError::UnreadableLoad { at: 1 });
    }

    #[test]
    fn refuses_bad_info_offsets() {
        let last = size_of::<InfoPage>() - 8;
        assert!(verify(&[load_info(0, last)], &FakeMemory::default()).is_ok());
        assert_eq!(err(&[load_info(0, last + 8)]), VerifyError::BadInfoOffset { at: 0 });
        assert_eq!(err(&[load_info(0, 4)]), VerifyError::BadInfoOffset { at: 0 });
        assert_eq!(
            err(&[i(PredOp::LoadInfo, 0, 0, 0, u64::MAX - 7)]),
            VerifyError::BadInfoOffset { at: 0 }
        );
    }

    #[test]
    fn errors_map_to_abi_errors() {
        let all = [
            VerifyError::Empty,
            VerifyError::TooLong,
            VerifyError::BadOpcode { at: 0 },
            VerifyError::BadRegister { at: 0 },
            VerifyError::ReservedNotZero { at: 0 },
            VerifyError::BackwardOrZeroJump { at: 0 },
            VerifyError::JumpOutOfRange { at: 0 },
            VerifyError::MisalignedLoad { at: 0 },
            VerifyError::BadInfoOffset { at: 0 },
        ];
        for e in all {
            assert_eq!(e.to_abi(), abi::Error::InvalidArgument, "{e:?}");
        }
        assert_eq!(VerifyError::UnreadableLoad { at: 3 }.to_abi(), abi::Error::BadAddress);
    }

    #[test]
    fn wakes_when_word_changes_from_5() {
        let prog = [load_user(1, X), konst(2, 5), bin(PredOp::Ne, 0, 1, 2)];
        let mut mem = FakeMemory::with_words(&[(X, 5)]);
        assert!(!run(&prog, &mem));
        mem.words.insert(X, 6);
        assert!(run(&prog, &mem));
        mem.words.insert(X, 0);
        assert!(run(&prog, &mem));
    }

    #[test]
    fn wakes_at_deadline_or_on_notification() {
        const DEADLINE: u64 = 1_000;
        const SEEN: u64 = 7;
        let notifications = offset_of!(InfoPage, notifications);
        let prog = [
            tsc(1),
            konst(2, DEADLINE),
            bin(PredOp::Le, 3, 2, 1), // deadline <= now
            load_info(4, notifications),
            konst(5, SEEN),
            bin(PredOp::Ne, 6, 4, 5), // count changed
            bin(PredOp::Or, 7, 3, 6),
            ret(7),
        ];
        let mut mem = FakeMemory::default();
        mem.set_info(notifications, SEEN);
        mem.tsc.set(DEADLINE - 1);
        assert!(!run(&prog, &mem));
        mem.tsc.set(DEADLINE);
        assert!(run(&prog, &mem));
        mem.tsc.set(0);
        mem.set_info(notifications, SEEN + 1);
        assert!(run(&prog, &mem));
    }

    #[test]
    fn running_off_the_end_returns_r0() {
        let mem = FakeMemory::default();
        assert!(!run(&[konst(1, 1)], &mem));
        assert!(run(&[konst(0, 2)], &mem));
        assert!(!run(&[konst(0, 2), konst(0, 0)], &mem));
    }

    #[test]
    fn jump_to_len_runs_off_the_end() {
        let mem = FakeMemory::default();
        let p = verify(&[konst(0, 1), jump(1), ret(1)], &mem).unwrap();
        assert_eq!(p.eval_counted(&mem), (true, 2));
        // Taken conditional jump to `len`; not taken falls through to Ret r1.
        let p = verify(&[jz(0, 2), konst(1, 1), ret(2)], &mem).unwrap();
        assert_eq!(p.eval_counted(&mem), (false, 1));
        let p = verify(&[konst(0, 1), jz(0, 2), konst(1, 1), ret(1)], &mem).unwrap();
        assert_eq!(p.eval_counted(&mem), (true, 4));
    }

    #[test]
    fn unmapped_after_verify_wakes() {
        let prog = [load_user(1, X), ret(1)];
        let mut mem = FakeMemory::with_words(&[(X, 0)]);
        assert!(!run(&prog, &mem));
        let p = verify(&prog, &mem).unwrap();
        mem.unmap(X);
        assert_eq!(p.eval_counted(&mem), (true, 1));
        assert_eq!(mem.violations(), Vec::<String>::new());
    }

    #[test]
    fn operators() {
        let mem = FakeMemory::default();
        // r2 = op(x, y); wake iff r2 == expected.
        let check = |op: PredOp, x: u64, y: u64, expected: u64| {
            let prog = [
                konst(0, x),
                konst(1, y),
                bin(op, 2, 0, 1),
                konst(3, expected),
                bin(PredOp::Eq, 4, 2, 3),
                ret(4),
            ];
            assert!(run(&prog, &mem), "{op:?}({x}, {y}) != {expected}");
        };
        use PredOp::*;
        check(Eq, 3, 3, 1);
        check(Eq, 3, 4, 0);
        check(Ne, 3, 4, 1);
        check(Ne, 4, 4, 0);
        check(Lt, 3, 4, 1);
        check(Lt, 4, 4, 0);
        check(Lt, u64::MAX, 0, 0); // unsigned
        check(Le, 4, 4, 1);
        check(Le, 5, 4, 0);
        check(And, 2, 4, 1); // logical, not bitwise
        check(And, 2, 0, 0);
        check(Or, 0, 8, 1);
        check(Or, 0, 0, 0);
        check(Add, u64::MAX, 2, 1); // wrapping
        check(Add, 40, 2, 42);
        assert!(run(&[not(0, 0)], &mem)); // registers start at 0
        assert!(!run(&[konst(1, 9), not(0, 1)], &mem));
        assert!(!run(&[konst(1, 9), ret(0)], &mem));
        assert!(run(&[konst(1, 9), ret(1)], &mem));
    }

    // ---- Property tests ----

    /// Readable words of the property tests' fake: `BASE + 8 * k`, `k < 8`.
    const BASE: u64 = 0x10_0000;
    const WORDS: u64 = 8;

    /// A reference interpreter written straight from the module docs, with
    /// none of [`Program::eval_counted`]'s structure.
    fn reference(insns: &[Insn], mem: &FakeMemory) -> bool {
        let mut r = [0u64; 8];
        let mut pc = 0;
        while pc < insns.len() {
            let x = insns[pc];
            let (a, b) = (r[x.a as usize], r[x.b as usize]);
            let mut set = |v: u64| r[x.dst as usize] = v;
            pc += 1;
            match pred_op(x.op).unwrap() {
                PredOp::Const => set(x.imm),
                PredOp::LoadUser => match mem.words.get(&x.imm) {
                    Some(&w) => set(w),
                    None => return true,
                },
                PredOp::LoadInfo => set(mem.info[x.imm as usize / 8]),
                PredOp::Tsc => set(mem.tsc.get()),
                PredOp::Eq => set((a == b) as u64),
                PredOp::Ne => set((a != b) as u64),
                PredOp::Lt => set((a < b) as u64),
                PredOp::Le => set((a <= b) as u64),
                PredOp::And => set((a != 0 && b != 0) as u64),
                PredOp::Or => set((a != 0 || b != 0) as u64),
                PredOp::Add => set(a.wrapping_add(b)),
                PredOp::Not => set((a == 0) as u64),
                PredOp::JumpIfZero if a == 0 => pc += x.imm as usize,
                PredOp::JumpIfZero => {}
                PredOp::Jump => pc += x.imm as usize,
                PredOp::Ret => return a != 0,
            }
        }
        r[0] != 0
    }

    fn any_reg() -> impl Strategy<Value = u8> {
        prop_oneof![8 => 0..REGS, 1 => any::<u8>()]
    }

    fn any_imm() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => 0..4u64,
            // Readable words, one past them, misaligned ones.
            3 => (0..WORDS + 2).prop_map(|k| BASE + 8 * k),
            1 => (0..WORDS * 8).prop_map(|k| BASE + k),
            2 => 0..size_of::<InfoPage>() as u64 + 16,
            1 => any::<u64>(),
        ]
    }

    /// Mostly well-formed instructions (an opcode with exactly its fields
    /// set, valid registers and, usually, an immediate that fits the
    /// opcode), sometimes arbitrary ones.
    fn any_insn() -> impl Strategy<Value = Insn> {
        let shaped = (
            0..PRED_OP_COUNT,
            [0..REGS, 0..REGS, 0..REGS],
            // Constant, user address, info offset, jump distance.
            (
                0..4u64,
                (0..WORDS + 1).prop_map(|k| BASE + 8 * k),
                (0..INFO_WORDS as u64 + 1).prop_map(|k| 8 * k),
                1..4u64,
            ),
            prop_oneof![9 => Just(None), 1 => any_imm().prop_map(Some)],
        )
            .prop_map(|(op, [dst, a, b], (c, user, info, dist), wild)| {
                let kind = pred_op(op).unwrap();
                let (d, ua, ub, ui) = fields(kind);
                let imm = match kind {
                    PredOp::LoadUser => user,
                    PredOp::LoadInfo => info,
                    PredOp::Jump | PredOp::JumpIfZero => dist,
                    _ => c,
                };
                Insn {
                    op,
                    dst: if d { dst } else { 0 },
                    a: if ua { a } else { 0 },
                    b: if ub { b } else { 0 },
                    reserved: 0,
                    imm: if ui { wild.unwrap_or(imm) } else { 0 },
                }
            });
        let raw = (
            prop_oneof![3 => 0..PRED_OP_COUNT, 1 => any::<u8>()],
            any_reg(),
            any_reg(),
            any_reg(),
            prop_oneof![4 => Just(0u32), 1 => any::<u32>()],
            any_imm(),
        )
            .prop_map(|(op, dst, a, b, reserved, imm)| Insn {
                op,
                dst,
                a,
                b,
                reserved,
                imm,
            });
        prop_oneof![40 => shaped, 1 => raw]
    }

    fn any_program() -> impl Strategy<Value = Vec<Insn>> {
        prop_oneof![
            3 => proptest::collection::vec(any_insn(), 0..12),
            1 => proptest::collection::vec(any_insn(), 0..80),
        ]
    }

    fn fake(values: &[u64; WORDS as usize], info: &[u64; INFO_WORDS], tsc: u64) -> FakeMemory {
        let mut mem = FakeMemory::default();
        for (k, &v) in values.iter().enumerate() {
            mem.words.insert(BASE + 8 * k as u64, v);
        }
        mem.info = *info;
        mem.tsc.set(tsc);
        mem
    }

    fn config() -> ProptestConfig {
        ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() }
    }

    /// The generator is useful only if it yields accepted programs too.
    #[test]
    fn generator_yields_accepted_programs() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let strategy = any_program();
        let mem = fake(&[0; WORDS as usize], &[0; INFO_WORDS], 0);
        let accepted = (0..2000)
            .filter(|_| {
                let insns = strategy.new_tree(&mut runner).unwrap().current();
                verify(&insns, &mem).is_ok_and(|p| p.len() > 2)
            })
            .count();
        assert!(accepted >= 300, "only {accepted} of 2000 accepted");
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn verified_programs_are_safe(
            insns in any_program(),
            values in any::<[u64; WORDS as usize]>().prop_map(|v| v.map(|w| w % 4)),
            info in any::<[u64; INFO_WORDS]>().prop_map(|v| v.map(|w| w % 4)),
            tsc in 0..4u64,
            unmap in any::<u8>(),
        ) {
            let mut mem = fake(&values, &info, tsc);
            let Ok(program) = verify(&insns, &mem) else {
                return Ok(());
            };
            prop_assert_eq!(program.insns(), &insns[..]);
            // Unmap some words after verification.
            for k in 0..WORDS {
                if unmap & (1 << k) != 0 {
                    mem.unmap(BASE + 8 * k);
                }
            }
            mem.evaluating.set(true);
            let (value, steps) = program.eval_counted(&mem);
            prop_assert!(steps >= 1 && steps <= program.len());
            prop_assert_eq!(mem.violations(), Vec::<String>::new());
            prop_assert_eq!(value, reference(&insns, &mem));
            prop_assert_eq!(program.eval(&mem), value);
        }

        #[test]
        fn verify_never_panics(
            insns in proptest::collection::vec(
                any::<(u8, u8, u8, u8, u32, u64)>().prop_map(|(op, dst, a, b, reserved, imm)| {
                    Insn { op, dst, a, b, reserved, imm }
                }),
                0..80,
            ),
        ) {
            let mem = FakeMemory::with_words(&[(X, 1)]);
            if let Ok(program) = verify(&insns, &mem) {
                let (_, steps) = program.eval_counted(&mem);
                prop_assert!(steps <= program.len());
            }
        }
    }
}
