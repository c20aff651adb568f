//! Builders for ring submissions ([`abi::ring::SqEntry`]), one per
//! [`Op`], each taking the operation's arguments and the `user_data` its
//! completion echoes; [`SqeExt::linked`] chains an entry to the next.
//!
//! ```ignore
//! use libos_async::sqe::{self, SqeExt};
//! ring.push(sqe::frame_alloc(None, 1).linked())?;
//! ring.push(sqe::nop(2))?;
//! ```

use abi::Rights;
use abi::ring::{Op, SQE_LINK, SqEntry};

/// An entry for `op` with `args` (missing ones 0).
#[inline]
pub fn op(op: Op, args: &[u64], user_data: u64) -> SqEntry {
    let mut entry = SqEntry { opcode: op as u8, user_data, ..SqEntry::default() };
    for (slot, &arg) in entry.args.iter_mut().zip(args) {
        *slot = arg;
    }
    entry
}

/// `Nop` → 0.
#[inline]
pub fn nop(user_data: u64) -> SqEntry {
    op(Op::Nop, &[], user_data)
}

/// `ConsoleWrite(ptr, len)` to the kernel console (stream 0) → bytes
/// written. The bytes must stay valid until the entry is submitted (the
/// kernel copies them then).
pub fn console_write(ptr: u64, len: u64, user_data: u64) -> SqEntry {
    console_write_to(abi::ConsoleStream::Kernel, ptr, len, user_data)
}

/// `ConsoleWrite(ptr, len, stream)` → bytes written, as [`console_write`]
/// to any [`abi::ConsoleStream`].
pub fn console_write_to(stream: abi::ConsoleStream, ptr: u64, len: u64, user_data: u64) -> SqEntry {
    op(Op::ConsoleWrite, &[ptr, len, stream as u64], user_data)
}

/// `ConsoleWrite` of a static string.
pub fn console_str(text: &'static str, user_data: u64) -> SqEntry {
    console_write(text.as_ptr() as u64, text.len() as u64, user_data)
}

/// `FrameAlloc(frame)` → frame number (`None`: any frame).
pub fn frame_alloc(frame: Option<u64>, user_data: u64) -> SqEntry {
    op(Op::FrameAlloc, &[frame.unwrap_or(abi::ANY_FRAME)], user_data)
}

/// `FrameFree(frame)` → 0.
pub fn frame_free(frame: u64, user_data: u64) -> SqEntry {
    op(Op::FrameFree, &[frame], user_data)
}

/// `Map(frame, va, rights)` → 0.
pub fn map(frame: u64, va: u64, rights: Rights, user_data: u64) -> SqEntry {
    op(Op::Map, &[frame, va, rights.0], user_data)
}

/// `Unmap(va)` → 0.
pub fn unmap(va: u64, user_data: u64) -> SqEntry {
    op(Op::Unmap, &[va], user_data)
}

/// `Protect(va, rights)` → 0.
pub fn protect(va: u64, rights: Rights, user_data: u64) -> SqEntry {
    op(Op::Protect, &[va, rights.0], user_data)
}

/// `FrameGrant(frame, env, rights)` → 0.
pub fn grant(frame: u64, env: u64, rights: Rights, user_data: u64) -> SqEntry {
    op(Op::FrameGrant, &[frame, env, rights.0], user_data)
}

/// `FrameRevoke(frame, env)` → 0.
pub fn revoke(frame: u64, env: u64, user_data: u64) -> SqEntry {
    op(Op::FrameRevoke, &[frame, env], user_data)
}

/// `Timer(deadline)` → 0 once the TSC has reached `deadline_tsc`.
pub fn timer(deadline_tsc: u64, user_data: u64) -> SqEntry {
    op(Op::Timer, &[deadline_tsc], user_data)
}

/// `Notify(env)` → 0: bumps `env`'s `InfoPage::notifications` and wakes
/// its sleeping vCPUs.
pub fn notify(env: u64, user_data: u64) -> SqEntry {
    op(Op::Notify, &[env], user_data)
}

/// `SlotAlloc(core, index, count)`: exactly slot `index` (`Some`), or any
/// `count` free slots (`None`).
pub fn slot_alloc(core: u64, index: Option<u64>, count: u64, user_data: u64) -> SqEntry {
    op(Op::SlotAlloc, &[core, index.unwrap_or(abi::schedule::ANY_SLOT), count], user_data)
}

/// Chaining for entries.
pub trait SqeExt {
    /// Sets [`SQE_LINK`]: if this entry fails, the rest of its chain
    /// completes with `Canceled`.
    fn linked(self) -> Self;
}

impl SqeExt for SqEntry {
    fn linked(mut self) -> Self {
        self.flags |= SQE_LINK;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_opcode_args_and_user_data() {
        let e = map(7, 0x40_0000, Rights::RW, 99);
        assert_eq!(e.opcode, Op::Map as u8);
        assert_eq!(e.args, [7, 0x40_0000, 3, 0, 0, 0]);
        assert_eq!(e.user_data, 99);
        assert_eq!((e.flags, e.reserved), (0, [0; 6]));
        assert_eq!(frame_alloc(None, 1).args[0], abi::ANY_FRAME);
        assert_eq!(timer(123, 5).args[0], 123);
        assert_eq!(nop(3).linked().flags, SQE_LINK);
        assert_eq!(nop(3).linked().linked().flags, SQE_LINK);
        assert_eq!(notify(4, 0).opcode, Op::Notify as u8);
        assert_eq!(slot_alloc(1, Some(2), 1, 0).args[..3], [1, 2, 1]);
        assert_eq!(slot_alloc(1, None, 3, 0).args[1], abi::schedule::ANY_SLOT);
    }

    #[test]
    fn every_op_has_a_builder_with_its_number() {
        let all = [
            nop(0),
            console_write(0, 0, 0),
            frame_alloc(None, 0),
            frame_free(0, 0),
            map(0, 0, Rights::NONE, 0),
            unmap(0, 0),
            protect(0, Rights::NONE, 0),
            grant(0, 0, Rights::NONE, 0),
            revoke(0, 0, 0),
            timer(0, 0),
            notify(0, 0),
            slot_alloc(0, None, 0, 0),
        ];
        assert_eq!(all.len(), abi::ring::OP_COUNT as usize);
        for (n, e) in all.iter().enumerate() {
            assert_eq!(Op::from_number(e.opcode), Op::from_number(n as u8));
        }
    }
}
