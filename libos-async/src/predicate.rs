//! A tiny assembler for wakeup predicates ([`abi::predicate`]).
//!
//! [`Pred`] collects up to [`MAX_INSNS`] instructions in a fixed array (no
//! allocation); every instruction has a builder method named after its
//! opcode, and [`Pred::sleep`] hands the program to `SleepOn`:
//!
//! ```ignore
//! // wake when the word at `va` is no longer 0, or at `deadline`
//! Pred::word_ne(va, 0).either(Pred::deadline(deadline)).sleep()?;
//! // the same by hand
//! Pred::new().load_user(R1, va).konst(R2, 0).ne(R3, R1, R2)
//!     .konst(R4, deadline).tsc(R5).le(R6, R4, R5).or(R0, R3, R6).ret(R0);
//! ```
//!
//! **Convention of the ready-made predicates** ([`Pred::word_ne`],
//! [`Pred::deadline`], ...): no `Ret`; their value is left in `r0` at
//! their end, and they clobber `r0..=r2`. That is what lets
//! [`Pred::either`] and [`Pred::both`] glue two of them together with a
//! short-circuit jump instead of register allocation.
//!
//! **Jumps.** The ABI says a jump "skips `imm` (≥ 1) instructions
//! forward"; the combinators emit jumps that land on the same behaviour
//! whether that is read as `pc + 1 + imm` or as `pc + imm` (a no-op
//! `or r0, r0, r0` fills the one instruction where the two readings
//! differ), so they stay correct whichever the kernel implements; the
//! host tests run both readings. [`Pred::jump`] and
//! [`Pred::jump_if_zero`] emit `imm` as given.
//!
//! A program that does not fit, or a composition the convention cannot
//! express (see [`Pred::either`]), marks the `Pred` invalid: [`Pred::sleep`]
//! then fails with `InvalidArgument` without asking the kernel.

use abi::predicate::{Insn, MAX_INSNS, PredOp};
use abi::{Error, InfoPage};

/// A register number (`0..REGS`).
pub type Reg = u8;
/// Register 0: the value of a program that runs off its end.
pub const R0: Reg = 0;
/// Register 1.
pub const R1: Reg = 1;
/// Register 2.
pub const R2: Reg = 2;
/// Register 3.
pub const R3: Reg = 3;
/// Register 4.
pub const R4: Reg = 4;
/// Register 5.
pub const R5: Reg = 5;
/// Register 6.
pub const R6: Reg = 6;
/// Register 7.
pub const R7: Reg = 7;

/// Offset of `InfoPage::notifications`, for [`Pred::load_info`].
pub const NOTIFICATIONS_OFFSET: u64 = core::mem::offset_of!(InfoPage, notifications) as u64;

/// One raw instruction (no checks: for tests of the kernel's verifier).
pub const fn insn(op: u8, dst: u8, a: u8, b: u8, imm: u64) -> Insn {
    Insn { op, dst, a, b, reserved: 0, imm }
}

/// A predicate program under construction.
#[derive(Clone, Copy, Debug)]
pub struct Pred {
    insns: [Insn; MAX_INSNS],
    len: usize,
    /// Too long, or an impossible composition.
    invalid: bool,
    /// Contains a `Ret` whose value may be zero (user-written).
    ret_any: bool,
    /// Contains a `Ret` that only ever returns non-zero (from `either`).
    ret_true: bool,
}

impl Default for Pred {
    fn default() -> Self {
        Self::new()
    }
}

impl Pred {
    /// An empty program (the kernel refuses empty programs: add something).
    pub const fn new() -> Self {
        Self {
            insns: [insn(0, 0, 0, 0, 0); MAX_INSNS],
            len: 0,
            invalid: false,
            ret_any: false,
            ret_true: false,
        }
    }

    /// Appends one instruction.
    pub fn push(mut self, i: Insn) -> Self {
        if self.len == MAX_INSNS {
            self.invalid = true;
        } else {
            self.insns[self.len] = i;
            self.len += 1;
        }
        self
    }

    fn op(self, op: PredOp, dst: Reg, a: Reg, b: Reg, imm: u64) -> Self {
        self.push(insn(op as u8, dst, a, b, imm))
    }

    /// `dst = value` (`Const`; `const` is a keyword).
    pub fn konst(self, dst: Reg, value: u64) -> Self {
        self.op(PredOp::Const, dst, 0, 0, value)
    }

    /// `dst = *(u64 *)va` (8-aligned, mapped readable at install time).
    pub fn load_user(self, dst: Reg, va: u64) -> Self {
        self.op(PredOp::LoadUser, dst, 0, 0, va)
    }

    /// `dst = the InfoPage word at offset` (8-aligned).
    pub fn load_info(self, dst: Reg, offset: u64) -> Self {
        self.op(PredOp::LoadInfo, dst, 0, 0, offset)
    }

    /// `dst = TSC`.
    pub fn tsc(self, dst: Reg) -> Self {
        self.op(PredOp::Tsc, dst, 0, 0, 0)
    }

    /// `dst = (a == b)`.
    pub fn eq(self, dst: Reg, a: Reg, b: Reg) -> Self {
        self.op(PredOp::Eq, dst, a, b, 0)
    }

    /// `dst = (a != b)`.
    pub fn ne(self, dst: Reg, a: Reg, b: Reg) -> Self {
        self.op(PredOp::Ne, dst, a, b, 0)
    }

    /// `dst = (a < b)`, unsigned.
    pub fn lt(self, dst: Reg, a: Reg, b: Reg) -> Self {
        self.op(PredOp::Lt, dst, a, b, 0)
    }

    /// `dst = (a <= b)`, unsigned.
    pub fn le(self, dst: Reg, a: Reg, b: Reg) -> Self {
        self.op(PredOp::Le, dst, a, b, 0)
    }

    /// `dst = (a != 0 && b != 0)`.
    pub fn and(self, dst: Reg, a: Reg, b: Reg) -> Self {
        self.op(PredOp::And, dst, a, b, 0)
    }

    /// `dst = (a != 0 || b != 0)`.
    pub fn or(self, dst: Reg, a: Reg, b: Reg) -> Self {
        self.op(PredOp::Or, dst, a, b, 0)
    }

    /// `dst = a + b` (wrapping).
    pub fn add(self, dst: Reg, a: Reg, b: Reg) -> Self {
        self.op(PredOp::Add, dst, a, b, 0)
    }

    /// `dst = !(a != 0)`.
    pub fn not(self, dst: Reg, a: Reg) -> Self {
        self.op(PredOp::Not, dst, a, 0, 0)
    }

    /// `JumpIfZero a, imm` (see the module documentation on jumps).
    pub fn jump_if_zero(self, a: Reg, imm: u64) -> Self {
        self.op(PredOp::JumpIfZero, 0, a, 0, imm)
    }

    /// `Jump imm`.
    pub fn jump(self, imm: u64) -> Self {
        self.op(PredOp::Jump, 0, 0, 0, imm)
    }

    /// `Ret a`: stop with register `a`'s value.
    pub fn ret(mut self, a: Reg) -> Self {
        self.ret_any = true;
        self.op(PredOp::Ret, 0, a, 0, 0)
    }

    /// Wake when the word at `va` differs from `value`.
    pub fn word_ne(va: u64, value: u64) -> Self {
        Self::new().load_user(R1, va).konst(R2, value).ne(R0, R1, R2)
    }

    /// Wake when the word at `va` equals `value`.
    pub fn word_eq(va: u64, value: u64) -> Self {
        Self::new().load_user(R1, va).konst(R2, value).eq(R0, R1, R2)
    }

    /// Wake once the TSC has reached `tsc`.
    pub fn deadline(tsc: u64) -> Self {
        Self::new().konst(R1, tsc).tsc(R2).le(R0, R1, R2)
    }

    /// Wake when `InfoPage::notifications` differs from `seen` (read it
    /// with [`crate::sys::notifications`] before sleeping).
    pub fn notifications_ne(seen: u64) -> Self {
        Self::new().load_info(R1, NOTIFICATIONS_OFFSET).konst(R2, seen).ne(R0, R1, R2)
    }

    /// Wake when `InfoPage::event_tail` differs from `seen` (a new event in
    /// the queue; read it with [`crate::sys::event_tail`] before sleeping).
    pub fn events_ne(seen: u64) -> Self {
        let offset = core::mem::offset_of!(abi::InfoPage, event_tail) as u64;
        Self::new().load_info(R1, offset).konst(R2, seen).ne(R0, R1, R2)
    }

    /// Wake when `InfoPage::console_input` differs from `seen` (console
    /// input for the reader; read it with [`crate::sys::console_input`]
    /// before looking for input).
    pub fn console_input_ne(seen: u64) -> Self {
        let offset = core::mem::offset_of!(abi::InfoPage, console_input) as u64;
        Self::new().load_info(R1, offset).konst(R2, seen).ne(R0, R1, R2)
    }

    /// Appends `other`'s instructions.
    fn append(mut self, other: &Pred) -> Self {
        self.invalid |= other.invalid;
        for &i in other.insns() {
            self = self.push(i);
        }
        self
    }

    /// Wake when `self` or `other` holds (`self` is evaluated first; if it
    /// holds, `other` is not). `self` must not contain a `ret` of its own
    /// (it would end the program before `other` runs): such a
    /// composition is invalid. Emits `self; jz r0 +2; ret r0; or r0,r0,r0;
    /// other`.
    pub fn either(self, other: Pred) -> Self {
        let invalid = self.ret_any;
        let mut p =
            self.jump_if_zero(R0, 2).op(PredOp::Ret, 0, R0, 0, 0).or(R0, R0, R0).append(&other);
        p.invalid |= invalid;
        p.ret_true = true;
        p.ret_any = other.ret_any;
        p
    }

    /// Wake when `self` and `other` both hold (`other` is evaluated only if
    /// `self` holds). `self` must contain no `ret` at all (a composition
    /// with one is invalid). Emits `self; jz r0 +len(other)+1; other;
    /// or r0,r0,r0`.
    pub fn both(self, other: Pred) -> Self {
        let invalid = self.ret_any || self.ret_true;
        let mut p = self.jump_if_zero(R0, other.len as u64 + 1).append(&other).or(R0, R0, R0);
        p.invalid |= invalid;
        p.ret_true = other.ret_true;
        p.ret_any = other.ret_any;
        p
    }

    /// The instructions so far.
    pub fn insns(&self) -> &[Insn] {
        &self.insns[..self.len]
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the program fitted and every composition was expressible.
    pub fn is_valid(&self) -> bool {
        !self.invalid && self.len > 0
    }

    /// `SleepOn` this program: returns once it holds (at once if it
    /// already does). `InvalidArgument` without a system call if the
    /// program is not [valid](Pred::is_valid).
    pub fn sleep(&self) -> Result<u64, Error> {
        if !self.is_valid() {
            return Err(Error::InvalidArgument);
        }
        crate::sys::sleep_on(self.insns())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use abi::predicate::REGS;

    /// How a jump's `imm` is read (the ABI's "skip imm instructions").
    #[derive(Clone, Copy)]
    pub(crate) enum Jumps {
        /// Next pc = pc + 1 + imm.
        Skip,
        /// Next pc = pc + imm.
        Target,
    }

    /// A reference interpreter: `mem(va)` for LoadUser, `info(off)` for
    /// LoadInfo. Panics on anything the kernel's verifier would refuse.
    pub(crate) fn eval(
        p: &[Insn],
        jumps: Jumps,
        mem: &dyn Fn(u64) -> u64,
        info: &dyn Fn(u64) -> u64,
        tsc: u64,
    ) -> u64 {
        assert!(!p.is_empty() && p.len() <= MAX_INSNS);
        let mut r = [0u64; REGS as usize];
        let mut pc = 0;
        let mut steps = 0;
        while pc < p.len() {
            steps += 1;
            assert!(steps <= p.len(), "did not terminate");
            let i = p[pc];
            assert!(i.dst < REGS && i.a < REGS && i.b < REGS && i.reserved == 0);
            let (a, b) = (r[i.a as usize], r[i.b as usize]);
            let mut next = pc + 1;
            let v = |x: bool| u64::from(x);
            let d = i.dst as usize;
            match i.op {
                x if x == PredOp::Const as u8 => r[d] = i.imm,
                x if x == PredOp::LoadUser as u8 => {
                    assert_eq!(i.imm % 8, 0);
                    r[d] = mem(i.imm)
                }
                x if x == PredOp::LoadInfo as u8 => {
                    assert_eq!(i.imm % 8, 0);
                    r[d] = info(i.imm)
                }
                x if x == PredOp::Tsc as u8 => r[d] = tsc,
                x if x == PredOp::Eq as u8 => r[d] = v(a == b),
                x if x == PredOp::Ne as u8 => r[d] = v(a != b),
                x if x == PredOp::Lt as u8 => r[d] = v(a < b),
                x if x == PredOp::Le as u8 => r[d] = v(a <= b),
                x if x == PredOp::And as u8 => r[d] = v(a != 0 && b != 0),
                x if x == PredOp::Or as u8 => r[d] = v(a != 0 || b != 0),
                x if x == PredOp::Add as u8 => r[d] = a.wrapping_add(b),
                x if x == PredOp::Not as u8 => r[d] = v(a == 0),
                x if x == PredOp::JumpIfZero as u8 || x == PredOp::Jump as u8 => {
                    assert!(i.imm >= 1);
                    let target = match jumps {
                        Jumps::Skip => pc + 1 + i.imm as usize,
                        Jumps::Target => pc + i.imm as usize,
                    };
                    assert!(target <= p.len(), "jump past the end");
                    if x == PredOp::Jump as u8 || a == 0 {
                        next = target;
                    }
                }
                x if x == PredOp::Ret as u8 => return a,
                _ => panic!("bad opcode {}", i.op),
            }
            pc = next;
        }
        r[0]
    }

    const W: u64 = 0x1000;
    const NOTIF: u64 = NOTIFICATIONS_OFFSET;

    fn run(p: &Pred, word: u64, notifications: u64, tsc: u64) -> bool {
        assert!(p.is_valid());
        let mem = move |va| if va == W { word } else { 0 };
        let info = move |off| if off == NOTIF { notifications } else { 0 };
        let skip = eval(p.insns(), Jumps::Skip, &mem, &info, tsc) != 0;
        let target = eval(p.insns(), Jumps::Target, &mem, &info, tsc) != 0;
        assert_eq!(skip, target, "the two jump readings disagree");
        skip
    }

    #[test]
    fn encoding_of_the_ready_made_predicates() {
        let p = Pred::word_ne(0x40_0008, 5);
        assert_eq!(
            p.insns(),
            [
                insn(PredOp::LoadUser as u8, 1, 0, 0, 0x40_0008),
                insn(PredOp::Const as u8, 2, 0, 0, 5),
                insn(PredOp::Ne as u8, 0, 1, 2, 0),
            ]
        );
        let p = Pred::deadline(1000);
        assert_eq!(
            p.insns(),
            [
                insn(PredOp::Const as u8, 1, 0, 0, 1000),
                insn(PredOp::Tsc as u8, 2, 0, 0, 0),
                insn(PredOp::Le as u8, 0, 1, 2, 0),
            ]
        );
        assert_eq!(NOTIFICATIONS_OFFSET, 24);
        assert_eq!(Pred::notifications_ne(3).insns()[0], insn(PredOp::LoadInfo as u8, 1, 0, 0, 24));
        let p = Pred::new().konst(R3, 9).not(R4, R3).jump_if_zero(R4, 1).jump(2).ret(R7);
        assert_eq!(p.insns()[1], insn(PredOp::Not as u8, 4, 3, 0, 0));
        assert_eq!(p.insns()[2], insn(PredOp::JumpIfZero as u8, 0, 4, 0, 1));
        assert_eq!(p.insns()[3], insn(PredOp::Jump as u8, 0, 0, 0, 2));
        assert_eq!(p.insns()[4], insn(PredOp::Ret as u8, 0, 7, 0, 0));
        assert_eq!(core::mem::size_of::<Insn>(), 16);
    }

    #[test]
    fn ready_made_predicates_evaluate() {
        assert!(!run(&Pred::word_ne(W, 0), 0, 0, 0));
        assert!(run(&Pred::word_ne(W, 0), 1, 0, 0));
        assert!(run(&Pred::word_eq(W, 7), 7, 0, 0));
        assert!(!run(&Pred::deadline(100), 0, 0, 99));
        assert!(run(&Pred::deadline(100), 0, 0, 100));
        assert!(!run(&Pred::notifications_ne(4), 0, 4, 0));
        assert!(run(&Pred::notifications_ne(4), 0, 5, 0));
    }

    #[test]
    fn either_and_both_short_circuit_under_both_jump_readings() {
        let either = Pred::word_ne(W, 0).either(Pred::deadline(100));
        let both = Pred::word_ne(W, 0).both(Pred::deadline(100));
        let three =
            Pred::word_ne(W, 0).either(Pred::notifications_ne(2)).either(Pred::deadline(100));
        for word in [0, 1] {
            for tsc in [50, 150] {
                for notif in [2, 3] {
                    let w = word != 0;
                    let d = tsc >= 100;
                    let n = notif != 2;
                    assert_eq!(run(&either, word, notif, tsc), w || d);
                    assert_eq!(run(&both, word, notif, tsc), w && d);
                    assert_eq!(run(&three, word, notif, tsc), w || n || d);
                    let nested = Pred::word_ne(W, 0)
                        .both(Pred::deadline(100).either(Pred::notifications_ne(2)));
                    assert_eq!(run(&nested, word, notif, tsc), w && (d || n));
                }
            }
        }
    }

    #[test]
    fn invalid_programs_are_flagged() {
        assert!(!Pred::new().is_valid());
        let mut p = Pred::new();
        for _ in 0..MAX_INSNS {
            p = p.konst(R0, 1);
        }
        assert!(p.is_valid() && p.len() == MAX_INSNS);
        let p = p.konst(R0, 1);
        assert!(!p.is_valid() && p.len() == MAX_INSNS);
        assert_eq!(p.sleep(), Err(Error::InvalidArgument));
        // A left operand with its own `ret` cannot be composed.
        let with_ret = Pred::new().konst(R0, 0).ret(R0);
        assert!(!with_ret.either(Pred::deadline(1)).is_valid());
        assert!(!with_ret.both(Pred::deadline(1)).is_valid());
        assert!(!Pred::deadline(1).either(Pred::deadline(2)).both(Pred::deadline(3)).is_valid());
        // On the right it is fine.
        assert!(Pred::deadline(1).either(with_ret).is_valid());
    }
}
