//! Decoding a system call: from `(number, [u64; 6])` to a typed [`Request`].
//!
//! The machine's dispatcher (`machine/syscall.rs`) decodes first and then
//! dispatches on the [`Request`]; each handler sees typed, range-checked
//! arguments. This module owns the *pure* argument checks: those that look
//! only at the registers and that the handlers made before any side effect
//! or any look at the kernel's state, so that moving them here changes no
//! answer (the same error for the same registers; the property tests below
//! hold that against a copy of the handlers' old checks). Checks that need
//! state (an environment's existence, a frame's owner, the machine's frame
//! capacity, the cores online), or that the handlers make only after such a
//! check, stay with the handlers: `SleepOn`, `YieldTo` and `RingSetup` first
//! refuse a caller inside a protected control transfer (`Busy`), so their
//! arguments are decoded without checks (`YieldTo`'s target as an
//! `Option`: `None` is "no such environment" once the caller may yield).
//!
//! The memory operations (`Map`, `Unmap`, `Protect`, `UnmapRange`) and
//! `ConsoleWrite` are also ring operations, which reach the same handlers
//! without this decoder: those handlers keep their own checks (the same
//! functions' answers, so the decoder only answers them earlier).

use crate::frames::FrameNumber;
use crate::ownership::EnvId;
use abi::{ConsoleStream, CoreId, Error, Rights, Syscall};
use alloc::boxed::Box;

/// A decoded system call: one variant per [`abi::Syscall`], arguments typed
/// and checked as far as the registers alone allow. See `abi::Syscall` for
/// each call's meaning.
///
/// Kept to four words: every general system call moves one through the
/// dispatcher, and a larger enum cost each of them ~40 instructions under
/// `--icount` (measured when `SetSyscallRedirect`'s five words were added
/// inline); the one larger payload is boxed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `Null`.
    Null,
    /// `ConsoleWrite`: `len` ≤ [`abi::CONSOLE_WRITE_MAX`], a known stream.
    ConsoleWrite {
        /// The text.
        ptr: u64,
        /// Its length.
        len: u64,
        /// Where it goes.
        stream: ConsoleStream,
    },
    /// `Exit`.
    Exit {
        /// The exit code.
        code: u64,
    },
    /// `Yield`.
    Yield,
    /// `FrameAlloc`: `None` is [`abi::ANY_FRAME`].
    FrameAlloc {
        /// The frame asked for.
        frame: Option<FrameNumber>,
    },
    /// `FrameFree`.
    FrameFree {
        /// The frame.
        frame: FrameNumber,
    },
    /// `FrameGrant`.
    FrameGrant {
        /// The frame.
        frame: FrameNumber,
        /// Who may map it (an id in range; whether it lives is the
        /// handler's question).
        grantee: EnvId,
        /// With at most these rights (checked by the ownership table).
        rights: Rights,
    },
    /// `FrameRevoke`.
    FrameRevoke {
        /// The frame.
        frame: FrameNumber,
        /// Whose grant goes.
        grantee: EnvId,
    },
    /// `Map`: `va` a user page outside the info region, `rights` valid and
    /// readable.
    Map {
        /// The frame.
        frame: FrameNumber,
        /// The page.
        va: u64,
        /// Its rights.
        rights: Rights,
    },
    /// `MapBatch`: 1 ..= [`abi::MAP_BATCH_MAX`] entries at `ptr` (each
    /// checked by the handler, which copies them in).
    MapBatch {
        /// The entries' address in the caller's memory.
        ptr: u64,
        /// How many.
        count: u32,
    },
    /// `AllocMap`: 1 ..= [`abi::ALLOC_MAP_MAX`] pages from the user page
    /// `va`, inside the user half and clear of the info region; `rights`
    /// as `Map`'s; `out` non-zero for more than one page.
    AllocMap {
        /// The first page.
        va: u64,
        /// How many pages.
        pages: u32,
        /// Their rights.
        rights: Rights,
        /// Where the frame numbers go (0: nowhere, one page only).
        out: u64,
    },
    /// `Unmap`: `va` a user page outside the info region.
    Unmap {
        /// The page.
        va: u64,
    },
    /// `Protect`: as `Map`.
    Protect {
        /// The page.
        va: u64,
        /// Its new rights.
        rights: Rights,
    },
    /// `SetExceptionHandler`: `entry` 0 (none) or an [entry](entry_ok).
    SetExceptionHandler {
        /// The entry point (0: none).
        entry: u64,
        /// Core 0's exception stack top.
        stack_top: u64,
        /// Distance between cores' stacks.
        stride: u64,
    },
    /// `ExceptionResume`.
    ExceptionResume {
        /// The [`abi::UpcallFrame`] to resume.
        frame_ptr: u64,
    },
    /// `VcpuStart`: an [entry](entry_ok), a core index below
    /// [`abi::MAX_CORES`].
    VcpuStart {
        /// The core.
        core: CoreId,
        /// Where it starts.
        entry: u64,
        /// Its stack.
        stack_top: u64,
        /// Its `rdi`.
        arg: u64,
    },
    /// `VcpuExit`.
    VcpuExit,
    /// `EnvLookup`: `1 ≤ len ≤` [`abi::NAME_MAX`].
    EnvLookup {
        /// The name.
        ptr: u64,
        /// Its length.
        len: u64,
    },
    /// `FrameStatus`.
    FrameStatus {
        /// The frame.
        frame: FrameNumber,
    },
    /// `UnmapRange`: `pages` ≤ [`abi::UNMAP_RANGE_MAX`]; unless `pages` is
    /// 0, `va` a user page and the range inside the user half, clear of the
    /// info region.
    UnmapRange {
        /// Start of the rest of the range.
        va: u64,
        /// Pages left.
        pages: u64,
        /// Pages removed so far (0 on the first step).
        done: u64,
    },
    /// `RingSetup` (checked by the ring, after the in-call check).
    RingSetup {
        /// The ring's base.
        base: u64,
        /// Submission entries.
        sq_entries: u64,
        /// Completion entries.
        cq_entries: u64,
    },
    /// `RingEnter` (checked by the ring).
    RingEnter {
        /// Submissions to consume.
        to_submit: u64,
        /// Completions to wait for.
        min_complete: u64,
    },
    /// `SleepOn` (checked after the in-call check).
    SleepOn {
        /// The program.
        ptr: u64,
        /// Its instructions.
        count: u64,
    },
    /// `QueueDelay`: a core index below [`abi::MAX_CORES`].
    QueueDelay {
        /// The core.
        core: CoreId,
    },
    /// `SlotAlloc`: a core index below [`abi::MAX_CORES`].
    SlotAlloc {
        /// The core.
        core: CoreId,
        /// The slot, or [`abi::schedule::ANY_SLOT`].
        index: u64,
        /// How many (with `ANY_SLOT`).
        count: u64,
    },
    /// `SlotFree`: a core index below [`abi::MAX_CORES`].
    SlotFree {
        /// The core.
        core: CoreId,
        /// The slots.
        mask: u64,
    },
    /// `SetSlotHandlers`: each 0 (none) or an [entry](entry_ok).
    SetSlotHandlers {
        /// At a slot's start.
        prologue: u64,
        /// At a slot's end.
        epilogue: u64,
    },
    /// `SetDefaultTime`.
    SetDefaultTime {
        /// The core.
        core: CoreId,
        /// Take part in the default round-robin there.
        on: bool,
    },
    /// The child-environment and sharing calls (`EnvCreate` ..=
    /// `PageQuery`, and `ShareWritable`): every check needs the kernel's state (the handle's
    /// creator, the frames' holders), so their handlers decode the words,
    /// read from the caller's saved registers (not copied here: up to five
    /// words would not fit the size bound below, and a box per call was a
    /// kernel-heap round trip on every step of a fork).
    Child {
        /// Which call.
        call: Syscall,
    },
    /// `YieldTo`: `None` if the register cannot name an environment (the
    /// handler answers [`Error::NoSuchEnv`] after its in-call check).
    YieldTo {
        /// The environment.
        target: Option<EnvId>,
    },
    /// `IpcRegister`: `entry` 0 (none) or an [entry](entry_ok).
    IpcRegister {
        /// The entry point (0: none).
        entry: u64,
        /// Core 0's IPC stack top.
        stack_top: u64,
        /// Distance between cores' stacks.
        stride: u64,
    },
    /// `IpcAccept`.
    IpcAccept {
        /// Whom.
        who: Accept,
        /// Accept (true) or stop accepting.
        allow: bool,
    },
    /// `Call` (the hot path's; checked by the transfer, after its in-call
    /// check).
    Call {
        /// The environment called.
        target: u64,
    },
    /// `Reply`.
    Reply,
    /// `Acall`.
    Acall {
        /// The environment called.
        target: EnvId,
        /// The two words.
        words: [u64; 2],
    },
    /// `InitrdMap` (checked by the handler: the range's length is the
    /// initrd's).
    InitrdMap {
        /// Where the archive goes (0: only its size).
        va: u64,
        /// Pages mapped so far (0 on the first step).
        done: u64,
        /// 0, or the error a failed call is undoing its pages for.
        undo: u64,
    },
    /// `SetFsBase`: `base` in the canonical user half.
    SetFsBase {
        /// The new FS base.
        base: u64,
    },
    /// `SetSyscallRedirect`: `None` disables (`entry` 0), else a checked
    /// [`Redirect`] (boxed: see the type's docs; the call is rare).
    SetSyscallRedirect {
        /// The registration.
        redirect: Option<Box<Redirect>>,
    },
    /// `RepossessList`: `len` ≤ [`abi::repossess::LIST_MAX`], `ptr`
    /// 8-aligned, the words inside the user range (`len` 0: withdraw).
    RepossessList {
        /// The list's first word.
        ptr: u64,
        /// Its length in words.
        len: u64,
    },
    /// `PageAccess`: `pages` ≤ [`abi::repossess::ACCESS_SCAN_MAX`], the
    /// range as [`check_range`] wants it.
    PageAccess {
        /// First page.
        va: u64,
        /// Pages to scan.
        pages: u64,
        /// Where the bits go.
        bitmap: u64,
        /// Clear the dirty bits too.
        clear_dirty: bool,
    },
    /// `RepossessStatus`.
    RepossessStatus,
    /// `ChildSignal`: any bits (0: none).
    ChildSignal {
        /// The bits posted at each child's end.
        bits: u64,
    },
    /// `SignalPost` (`bits` 0: a probe).
    SignalPost {
        /// Whom.
        target: EnvId,
        /// The bits.
        bits: u64,
    },
    /// `SignalEntry`: `entry` 0 (none) or an [entry](entry_ok).
    SignalEntry {
        /// The upcall entry (0: none).
        entry: u64,
        /// Cores whose vCPU takes the upcalls (0: all).
        cores: u64,
    },
    /// `SignalCtl`: a known `op` (see `abi::signal`).
    SignalCtl {
        /// Which operation.
        op: u64,
        /// Its argument (`RESUME`'s frame pointer).
        arg: u64,
    },
    /// `ConsoleRead`: `len` ≤ [`abi::CONSOLE_READ_MAX`].
    ConsoleRead {
        /// Where the bytes go.
        ptr: u64,
        /// The most to take.
        len: u64,
    },
    /// `ConsoleGive`.
    ConsoleGive {
        /// The child to hand console input to.
        child: EnvId,
    },
}

const _: () = assert!(core::mem::size_of::<Request>() <= 32);

/// A checked system-call redirection ([`abi::Syscall::SetSyscallRedirect`]):
/// `entry` an [entry](entry_ok); `stack_top` ≤ `USER_MAX` and, with
/// `stride`, 16-byte aligned; every core's stack top at least `USER_MIN`;
/// `lib_start < lib_end`, both in `USER_MIN..=USER_MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// The handler's entry point.
    pub entry: u64,
    /// Core 0's handler stack top.
    pub stack_top: u64,
    /// Distance between cores' stacks.
    pub stride: u64,
    /// Start of the library's code (a `syscall` returning into
    /// `lib_start..lib_end` is an exokernel call).
    pub lib_start: u64,
    /// End (exclusive) of the library's code.
    pub lib_end: u64,
}

impl Redirect {
    /// Checks the five registers of `SetSyscallRedirect` with `entry` ≠ 0.
    pub fn new(
        entry: u64,
        stack_top: u64,
        stride: u64,
        lib_start: u64,
        lib_end: u64,
    ) -> Result<Redirect, Error> {
        let in_user = |va: u64| (abi::USER_MIN..=abi::USER_MAX).contains(&va);
        entry_and_stack(entry, stack_top, false)?;
        let lowest = stride
            .checked_mul(abi::MAX_CORES as u64 - 1)
            .and_then(|span| stack_top.checked_sub(span));
        let ok = stack_top.is_multiple_of(16)
            && stride.is_multiple_of(16)
            && lowest.is_some_and(|low| low >= abi::USER_MIN)
            && in_user(lib_start)
            && in_user(lib_end)
            && lib_start < lib_end;
        if !ok {
            return Err(Error::InvalidArgument);
        }
        Ok(Redirect { entry, stack_top, stride, lib_start, lib_end })
    }

    /// Core `core`'s handler stack top.
    pub fn stack_for(&self, core: CoreId) -> u64 {
        // Checked in `new`: no core's top underflows.
        self.stack_top - self.stride * core.index() as u64
    }

    /// Whether a `syscall` returning to `rip` is redirected (lies outside
    /// the library's range).
    pub fn redirects(&self, rip: u64) -> bool {
        !(self.lib_start..self.lib_end).contains(&rip)
    }
}

/// `SetFsBase`'s check: a canonical user-half address
/// ([`Error::InvalidArgument`] otherwise).
pub fn check_fs_base(base: u64) -> Result<u64, Error> {
    if base >= 0x0000_8000_0000_0000 {
        return Err(Error::InvalidArgument);
    }
    Ok(base)
}

/// Whom [`Request::IpcAccept`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// Every environment ([`abi::ANY_ENV`]).
    Any,
    /// One environment.
    Env(EnvId),
}

/// Whether `entry` may be the entry point of user code: in
/// `USER_MIN..USER_MAX`.
pub fn entry_ok(entry: u64) -> bool {
    (abi::USER_MIN..abi::USER_MAX).contains(&entry)
}

/// An entry point with its stack: `entry` in the user range (or 0 when
/// `optional`, which unregisters and ignores the stack) and `stack_top` at
/// most `USER_MAX`. The one place the entry-address rule is written.
fn entry_and_stack(entry: u64, stack_top: u64, optional: bool) -> Result<(), Error> {
    if optional && entry == 0 {
        return Ok(());
    }
    if !entry_ok(entry) || stack_top > abi::USER_MAX {
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

/// An upcall entry: 0 (none) or in the user range.
fn handler_ok(entry: u64) -> bool {
    entry == 0 || entry_ok(entry)
}

/// A user page: aligned, in `USER_MIN..USER_MAX` ([`Error::InvalidArgument`])
/// and outside the info region ([`Error::Reserved`]).
pub fn check_page(va: u64) -> Result<u64, Error> {
    if !va.is_multiple_of(abi::PAGE_SIZE) || !(abi::USER_MIN..abi::USER_MAX).contains(&va) {
        return Err(Error::InvalidArgument);
    }
    if abi::in_info_region(va) {
        return Err(Error::Reserved);
    }
    Ok(va)
}

/// Rights a mapping may have: defined bits only, readable.
pub fn check_rights(rights: u64) -> Result<Rights, Error> {
    let rights = Rights(rights);
    if !rights.is_valid() || !rights.contains(Rights::READ) {
        return Err(Error::InvalidArgument);
    }
    Ok(rights)
}

/// A core index the ABI can name ([`Error::NoSuchCore`] otherwise).
fn core_index(core: u64) -> Result<CoreId, Error> {
    CoreId::from_word(core).ok_or(Error::NoSuchCore)
}

/// An environment id ([`Error::NoSuchEnv`] if the word cannot be one).
fn env_id(word: u64) -> Result<EnvId, Error> {
    EnvId::from_word(word).ok_or(Error::NoSuchEnv)
}

/// A 0/1 flag ([`Error::InvalidArgument`] otherwise).
fn flag(word: u64) -> Result<bool, Error> {
    match word {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::InvalidArgument),
    }
}

/// Decodes system call `number` with arguments `args` (`rdi`, `rsi`, `rdx`,
/// `r10`, `r8`, `r9`): [`Error::InvalidSyscall`] for an undefined number,
/// else [`decode_args`].
pub fn decode(number: u64, args: [u64; 6]) -> Result<Request, Error> {
    decode_args(Syscall::from_number(number).ok_or(Error::InvalidSyscall)?, args)
}

/// Decodes the arguments of `call`. Never panics; the errors are those the
/// handlers gave for the same registers.
pub fn decode_args(call: Syscall, args: [u64; 6]) -> Result<Request, Error> {
    let [a0, a1, a2, a3, ..] = args;
    Ok(match call {
        Syscall::Null => Request::Null,
        Syscall::ConsoleWrite => {
            let stream = ConsoleStream::from_number(a2);
            let (Some(stream), true) = (stream, a1 <= abi::CONSOLE_WRITE_MAX) else {
                return Err(Error::InvalidArgument);
            };
            Request::ConsoleWrite { ptr: a0, len: a1, stream }
        }
        Syscall::Exit => Request::Exit { code: a0 },
        Syscall::Yield => Request::Yield,
        Syscall::FrameAlloc => {
            Request::FrameAlloc { frame: (a0 != abi::ANY_FRAME).then_some(FrameNumber(a0)) }
        }
        Syscall::FrameFree => Request::FrameFree { frame: FrameNumber(a0) },
        Syscall::FrameGrant => {
            Request::FrameGrant { frame: FrameNumber(a0), grantee: env_id(a1)?, rights: Rights(a2) }
        }
        Syscall::FrameRevoke => {
            Request::FrameRevoke { frame: FrameNumber(a0), grantee: env_id(a1)? }
        }
        Syscall::Map => {
            Request::Map { frame: FrameNumber(a0), va: check_page(a1)?, rights: check_rights(a2)? }
        }
        Syscall::Unmap => Request::Unmap { va: check_page(a0)? },
        Syscall::Protect => Request::Protect { va: check_page(a0)?, rights: check_rights(a1)? },
        Syscall::SetExceptionHandler => {
            entry_and_stack(a0, a1, true)?;
            Request::SetExceptionHandler { entry: a0, stack_top: a1, stride: a2 }
        }
        Syscall::ExceptionResume => Request::ExceptionResume { frame_ptr: a0 },
        Syscall::VcpuStart => {
            entry_and_stack(a1, a2, false)?;
            Request::VcpuStart { core: core_index(a0)?, entry: a1, stack_top: a2, arg: a3 }
        }
        Syscall::VcpuExit => Request::VcpuExit,
        Syscall::EnvLookup => {
            if a1 == 0 || a1 > abi::NAME_MAX {
                return Err(Error::InvalidArgument);
            }
            Request::EnvLookup { ptr: a0, len: a1 }
        }
        Syscall::FrameStatus => Request::FrameStatus { frame: FrameNumber(a0) },
        Syscall::UnmapRange => {
            check_range(a0, a1)?;
            Request::UnmapRange { va: a0, pages: a1, done: a2 }
        }
        Syscall::RingSetup => Request::RingSetup { base: a0, sq_entries: a1, cq_entries: a2 },
        Syscall::RingEnter => Request::RingEnter { to_submit: a0, min_complete: a1 },
        Syscall::SleepOn => Request::SleepOn { ptr: a0, count: a1 },
        Syscall::SlotAlloc => Request::SlotAlloc { core: core_index(a0)?, index: a1, count: a2 },
        Syscall::QueueDelay => Request::QueueDelay { core: core_index(a0)? },
        Syscall::SlotFree => Request::SlotFree { core: core_index(a0)?, mask: a1 },
        Syscall::SetSlotHandlers => {
            if !handler_ok(a0) || !handler_ok(a1) {
                return Err(Error::InvalidArgument);
            }
            Request::SetSlotHandlers { prologue: a0, epilogue: a1 }
        }
        Syscall::SetDefaultTime => Request::SetDefaultTime { core: core_index(a0)?, on: flag(a1)? },
        Syscall::YieldTo => Request::YieldTo { target: EnvId::from_word(a0) },
        Syscall::IpcRegister => {
            entry_and_stack(a0, a1, true)?;
            Request::IpcRegister { entry: a0, stack_top: a1, stride: a2 }
        }
        Syscall::IpcAccept => {
            let allow = flag(a1)?;
            let who = if a0 == abi::ANY_ENV { Accept::Any } else { Accept::Env(env_id(a0)?) };
            Request::IpcAccept { who, allow }
        }
        Syscall::Call => Request::Call { target: a0 },
        Syscall::Reply => Request::Reply,
        Syscall::Acall => Request::Acall { target: env_id(a0)?, words: [a1, a2] },
        Syscall::InitrdMap => Request::InitrdMap { va: a0, done: a1, undo: a2 },
        Syscall::SetFsBase => Request::SetFsBase { base: check_fs_base(a0)? },
        Syscall::SetSyscallRedirect => Request::SetSyscallRedirect {
            redirect: match a0 {
                0 => None,
                entry => Some(Box::new(Redirect::new(entry, a1, a2, a3, args[4])?)),
            },
        },
        Syscall::EnvCreate
        | Syscall::ChildMap
        | Syscall::ChildUnmap
        | Syscall::ShareRange
        | Syscall::ShareWritable
        | Syscall::ChildSetEntry
        | Syscall::ChildStart
        | Syscall::ChildStatus
        | Syscall::ChildDestroy
        | Syscall::ChildQuota
        | Syscall::FrameCopy
        | Syscall::PageQuery
        | Syscall::CowBreak => Request::Child { call },
        Syscall::RepossessList => {
            check_list(a0, a1)?;
            Request::RepossessList { ptr: a0, len: a1 }
        }
        Syscall::PageAccess => {
            if a1 > abi::repossess::ACCESS_SCAN_MAX {
                return Err(Error::InvalidArgument);
            }
            check_range(a0, a1)?;
            Request::PageAccess { va: a0, pages: a1, bitmap: a2, clear_dirty: flag(a3)? }
        }
        Syscall::RepossessStatus => Request::RepossessStatus,
        Syscall::ChildSignal => Request::ChildSignal { bits: a0 },
        Syscall::SignalPost => {
            let target = env_id(a0)?;
            Request::SignalPost { target, bits: a1 }
        }
        Syscall::SignalEntry => {
            if !handler_ok(a0) {
                return Err(Error::InvalidArgument);
            }
            Request::SignalEntry { entry: a0, cores: a1 }
        }
        Syscall::SignalCtl => {
            if a0 > abi::signal::RESUME {
                return Err(Error::InvalidArgument);
            }
            Request::SignalCtl { op: a0, arg: a1 }
        }
        Syscall::ConsoleRead => {
            if a1 > abi::CONSOLE_READ_MAX {
                return Err(Error::InvalidArgument);
            }
            Request::ConsoleRead { ptr: a0, len: a1 }
        }
        Syscall::ConsoleGive => Request::ConsoleGive { child: env_id(a0)? },
        Syscall::MapBatch => {
            if a1 == 0 || a1 > abi::MAP_BATCH_MAX {
                return Err(Error::InvalidArgument);
            }
            Request::MapBatch { ptr: a0, count: a1 as u32 }
        }
        Syscall::AllocMap => {
            check_alloc_map(a0, a1, a3)?;
            Request::AllocMap { va: a0, pages: a1 as u32, rights: check_rights(a2)?, out: a3 }
        }
    })
}

/// `RepossessList`'s checks: a length of at most
/// [`abi::repossess::LIST_MAX`] words, an 8-aligned pointer, and (unless
/// the length is 0, which withdraws the list) every word inside
/// `USER_MIN..USER_MAX`.
pub fn check_list(ptr: u64, len: u64) -> Result<(), Error> {
    if len > abi::repossess::LIST_MAX || !ptr.is_multiple_of(8) {
        return Err(Error::InvalidArgument);
    }
    if len > 0 && (ptr < abi::USER_MIN || ptr.saturating_add(len * 8) > abi::USER_MAX) {
        return Err(Error::BadAddress);
    }
    Ok(())
}

/// `AllocMap`'s range checks: 1 ..= [`abi::ALLOC_MAP_MAX`] pages, a user
/// page start, an end within the user half, no overlap with the info
/// region, and somewhere to put the frame numbers of more than one page.
pub fn check_alloc_map(va: u64, pages: u64, out: u64) -> Result<(), Error> {
    if pages == 0 || pages > abi::ALLOC_MAP_MAX || out == 0 && pages > 1 {
        return Err(Error::InvalidArgument);
    }
    check_range(va, pages)
}

/// `UnmapRange`'s checks: at most [`abi::UNMAP_RANGE_MAX`] pages; an empty
/// range is done whatever its address; otherwise a user page start, an end
/// within the user half and no overlap with the info region.
pub fn check_range(va: u64, pages: u64) -> Result<(), Error> {
    if pages > abi::UNMAP_RANGE_MAX {
        return Err(Error::InvalidArgument);
    }
    if pages == 0 {
        return Ok(());
    }
    check_page(va)?;
    let end = va + pages * abi::PAGE_SIZE;
    if end > abi::USER_MAX {
        return Err(Error::InvalidArgument);
    }
    if va < abi::INFO_VA + abi::INFO_REGION_SIZE && end > abi::INFO_VA {
        return Err(Error::Reserved);
    }
    Ok(())
}

impl Request {
    /// The system call this is.
    pub fn syscall(&self) -> Syscall {
        match self {
            Request::Null => Syscall::Null,
            Request::ConsoleWrite { .. } => Syscall::ConsoleWrite,
            Request::Exit { .. } => Syscall::Exit,
            Request::Yield => Syscall::Yield,
            Request::FrameAlloc { .. } => Syscall::FrameAlloc,
            Request::FrameFree { .. } => Syscall::FrameFree,
            Request::FrameGrant { .. } => Syscall::FrameGrant,
            Request::FrameRevoke { .. } => Syscall::FrameRevoke,
            Request::Map { .. } => Syscall::Map,
            Request::Unmap { .. } => Syscall::Unmap,
            Request::Protect { .. } => Syscall::Protect,
            Request::SetExceptionHandler { .. } => Syscall::SetExceptionHandler,
            Request::ExceptionResume { .. } => Syscall::ExceptionResume,
            Request::VcpuStart { .. } => Syscall::VcpuStart,
            Request::VcpuExit => Syscall::VcpuExit,
            Request::EnvLookup { .. } => Syscall::EnvLookup,
            Request::FrameStatus { .. } => Syscall::FrameStatus,
            Request::UnmapRange { .. } => Syscall::UnmapRange,
            Request::RingSetup { .. } => Syscall::RingSetup,
            Request::RingEnter { .. } => Syscall::RingEnter,
            Request::SleepOn { .. } => Syscall::SleepOn,
            Request::SlotAlloc { .. } => Syscall::SlotAlloc,
            Request::QueueDelay { .. } => Syscall::QueueDelay,
            Request::SlotFree { .. } => Syscall::SlotFree,
            Request::SetSlotHandlers { .. } => Syscall::SetSlotHandlers,
            Request::SetDefaultTime { .. } => Syscall::SetDefaultTime,
            Request::YieldTo { .. } => Syscall::YieldTo,
            Request::IpcRegister { .. } => Syscall::IpcRegister,
            Request::IpcAccept { .. } => Syscall::IpcAccept,
            Request::Call { .. } => Syscall::Call,
            Request::Reply => Syscall::Reply,
            Request::Acall { .. } => Syscall::Acall,
            Request::InitrdMap { .. } => Syscall::InitrdMap,
            Request::SetFsBase { .. } => Syscall::SetFsBase,
            Request::SetSyscallRedirect { .. } => Syscall::SetSyscallRedirect,
            Request::Child { call, .. } => *call,
            Request::RepossessList { .. } => Syscall::RepossessList,
            Request::PageAccess { .. } => Syscall::PageAccess,
            Request::RepossessStatus => Syscall::RepossessStatus,
            Request::ChildSignal { .. } => Syscall::ChildSignal,
            Request::SignalPost { .. } => Syscall::SignalPost,
            Request::SignalEntry { .. } => Syscall::SignalEntry,
            Request::SignalCtl { .. } => Syscall::SignalCtl,
            Request::AllocMap { .. } => Syscall::AllocMap,
            Request::MapBatch { .. } => Syscall::MapBatch,
            Request::ConsoleRead { .. } => Syscall::ConsoleRead,
            Request::ConsoleGive { .. } => Syscall::ConsoleGive,
        }
    }

    /// The registers that make this call (`rax` and the six arguments;
    /// those the call does not read are 0): [`decode`]'s inverse.
    pub fn to_registers(&self) -> (u64, [u64; 6]) {
        let args: [u64; 3] = match *self {
            Request::Null
            | Request::Yield
            | Request::VcpuExit
            | Request::Reply
            | Request::RepossessStatus => [0; 3],
            Request::ConsoleWrite { ptr, len, stream } => [ptr, len, stream as u64],
            Request::EnvLookup { ptr, len } => [ptr, len, 0],
            Request::Exit { code } => [code, 0, 0],
            Request::FrameAlloc { frame } => [frame.map_or(abi::ANY_FRAME, u64::from), 0, 0],
            Request::FrameFree { frame } | Request::FrameStatus { frame } => [frame.raw(), 0, 0],
            Request::FrameGrant { frame, grantee, rights } => {
                [frame.raw(), u64::from(grantee), rights.0]
            }
            Request::FrameRevoke { frame, grantee } => [frame.raw(), u64::from(grantee), 0],
            Request::Map { frame, va, rights } => [frame.raw(), va, rights.0],
            Request::Unmap { va } => [va, 0, 0],
            Request::Protect { va, rights } => [va, rights.0, 0],
            Request::SetExceptionHandler { entry, stack_top, stride }
            | Request::IpcRegister { entry, stack_top, stride } => [entry, stack_top, stride],
            Request::ExceptionResume { frame_ptr } => [frame_ptr, 0, 0],
            Request::VcpuStart { core: c, entry, stack_top, arg } => {
                return (Syscall::VcpuStart as u64, [c.word(), entry, stack_top, arg, 0, 0]);
            }
            Request::UnmapRange { va, pages, done } => [va, pages, done],
            Request::MapBatch { ptr, count } => [ptr, u64::from(count), 0],
            Request::AllocMap { va, pages, rights, out } => {
                return (Syscall::AllocMap as u64, [va, u64::from(pages), rights.0, out, 0, 0]);
            }
            Request::RingSetup { base, sq_entries, cq_entries } => [base, sq_entries, cq_entries],
            Request::RingEnter { to_submit, min_complete } => [to_submit, min_complete, 0],
            Request::SleepOn { ptr, count } => [ptr, count, 0],
            Request::SlotAlloc { core: c, index, count } => [c.word(), index, count],
            Request::QueueDelay { core: c } => [c.word(), 0, 0],
            Request::SlotFree { core: c, mask } => [c.word(), mask, 0],
            Request::SetSlotHandlers { prologue, epilogue } => [prologue, epilogue, 0],
            Request::SetDefaultTime { core: c, on } => [c.word(), u64::from(on), 0],
            Request::YieldTo { target } => [target.map_or(u64::MAX, u64::from), 0, 0],
            Request::IpcAccept { who, allow } => {
                let who = match who {
                    Accept::Any => abi::ANY_ENV,
                    Accept::Env(e) => u64::from(e),
                };
                [who, u64::from(allow), 0]
            }
            Request::Call { target } => [target, 0, 0],
            Request::Acall { target, words: [w0, w1] } => [u64::from(target), w0, w1],
            Request::SignalPost { target, bits } => [u64::from(target), bits, 0],
            Request::ChildSignal { bits } => [bits, 0, 0],
            Request::SignalEntry { entry, cores } => [entry, cores, 0],
            Request::SignalCtl { op, arg } => [op, arg, 0],
            Request::InitrdMap { va, done, undo } => [va, done, undo],
            Request::SetFsBase { base } => [base, 0, 0],
            Request::SetSyscallRedirect { redirect: None } => [0; 3],
            Request::SetSyscallRedirect { redirect: Some(ref r) } => {
                return (
                    Syscall::SetSyscallRedirect as u64,
                    [r.entry, r.stack_top, r.stride, r.lib_start, r.lib_end, 0],
                );
            }
            Request::Child { call } => return (call as u64, [0; 6]),
            Request::RepossessList { ptr, len } | Request::ConsoleRead { ptr, len } => {
                [ptr, len, 0]
            }
            Request::ConsoleGive { child } => [u64::from(child), 0, 0],
            Request::PageAccess { va, pages, bitmap, clear_dirty } => {
                let regs = [va, pages, bitmap, u64::from(clear_dirty), 0, 0];
                return (Syscall::PageAccess as u64, regs);
            }
        };
        (self.syscall() as u64, [args[0], args[1], args[2], 0, 0, 0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The checks the handlers made before this module existed, copied from
    /// them in their order (`None`: none of them refused the registers).
    /// The decoder must refuse exactly these, with these errors.
    fn old_handler_checks(number: u64, a: [u64; 6]) -> Option<Error> {
        let Some(call) = Syscall::from_number(number) else {
            return Some(Error::InvalidSyscall);
        };
        let entry_in = |e: u64| (abi::USER_MIN..abi::USER_MAX).contains(&e);
        let check_va = |va: u64| {
            if !va.is_multiple_of(abi::PAGE_SIZE) || !entry_in(va) {
                Some(Error::InvalidArgument)
            } else if abi::in_info_region(va) {
                Some(Error::Reserved)
            } else {
                None
            }
        };
        // A non-empty page range: its first page as `check_va`, then its end
        // inside the user half and clear of the info region.
        let check_range = |va: u64, pages: u64| {
            check_va(va).or_else(|| {
                let end = va + pages * abi::PAGE_SIZE;
                if end > abi::USER_MAX {
                    Some(Error::InvalidArgument)
                } else if va < abi::INFO_VA + abi::INFO_REGION_SIZE && end > abi::INFO_VA {
                    Some(Error::Reserved)
                } else {
                    None
                }
            })
        };
        let check_rights = |r: u64| {
            (!Rights(r).is_valid() || !Rights(r).contains(Rights::READ))
                .then_some(Error::InvalidArgument)
        };
        let core = |c: u64| {
            (usize::try_from(c).is_err() || c >= abi::MAX_CORES as u64).then_some(Error::NoSuchCore)
        };
        let env = |e: u64| u32::try_from(e).is_err().then_some(Error::NoSuchEnv);
        match call {
            Syscall::ConsoleWrite => {
                (a[1] > abi::CONSOLE_WRITE_MAX || a[2] > 2).then_some(Error::InvalidArgument)
            }
            Syscall::FrameGrant | Syscall::FrameRevoke => env(a[1]),
            Syscall::Map => check_va(a[1]).or_else(|| check_rights(a[2])),
            Syscall::Unmap => check_va(a[0]),
            Syscall::Protect => check_va(a[0]).or_else(|| check_rights(a[1])),
            Syscall::SetExceptionHandler | Syscall::IpcRegister => (a[0] != 0
                && (!entry_in(a[0]) || a[1] > abi::USER_MAX))
                .then_some(Error::InvalidArgument),
            Syscall::VcpuStart => (!entry_in(a[1]) || a[2] > abi::USER_MAX)
                .then_some(Error::InvalidArgument)
                .or_else(|| core(a[0])),
            Syscall::EnvLookup => {
                (a[1] == 0 || a[1] > abi::NAME_MAX).then_some(Error::InvalidArgument)
            }
            Syscall::UnmapRange => {
                let (va, pages) = (a[0], a[1]);
                if pages > abi::UNMAP_RANGE_MAX {
                    return Some(Error::InvalidArgument);
                }
                if pages == 0 {
                    return None;
                }
                check_range(va, pages)
            }
            Syscall::AllocMap => {
                let (va, pages) = (a[0], a[1]);
                if pages == 0 || pages > abi::ALLOC_MAP_MAX || a[3] == 0 && pages > 1 {
                    return Some(Error::InvalidArgument);
                }
                check_range(va, pages).or_else(|| check_rights(a[2]))
            }
            Syscall::MapBatch => {
                (a[1] == 0 || a[1] > abi::MAP_BATCH_MAX).then_some(Error::InvalidArgument)
            }
            Syscall::SlotAlloc | Syscall::SlotFree | Syscall::QueueDelay => core(a[0]),
            Syscall::SetSlotHandlers => {
                let valid = |e: u64| e == 0 || entry_in(e);
                (!valid(a[0]) || !valid(a[1])).then_some(Error::InvalidArgument)
            }
            Syscall::SetDefaultTime => {
                core(a[0]).or_else(|| (a[1] > 1).then_some(Error::InvalidArgument))
            }
            Syscall::IpcAccept => (a[1] > 1)
                .then_some(Error::InvalidArgument)
                .or_else(|| if a[0] == abi::ANY_ENV { None } else { env(a[0]) }),
            Syscall::Acall => env(a[0]),
            // New calls, written here from their ABI text (no older handler).
            Syscall::SetFsBase => (a[0] >= 1 << 47).then_some(Error::InvalidArgument),
            Syscall::SetSyscallRedirect => {
                let user = |v: u64| (abi::USER_MIN..=abi::USER_MAX).contains(&v);
                let (entry, top, stride, start, end) = (a[0], a[1], a[2], a[3], a[4]);
                let span = u128::from(stride) * (abi::MAX_CORES as u128 - 1);
                let lowest_ok = u128::from(top) >= span + u128::from(abi::USER_MIN);
                (entry != 0
                    && (!entry_in(entry)
                        || top > abi::USER_MAX
                        || top % 16 != 0
                        || stride % 16 != 0
                        || !lowest_ok
                        || !(user(start) && user(end) && start < end)))
                    .then_some(Error::InvalidArgument)
            }
            // Signals: their documented checks.
            Syscall::SignalPost => env(a[0]),
            Syscall::SignalEntry => {
                (a[0] != 0 && !entry_in(a[0])).then_some(Error::InvalidArgument)
            }
            Syscall::SignalCtl => (a[0] > abi::signal::RESUME).then_some(Error::InvalidArgument),
            Syscall::ChildSignal => None,
            // Calls that came with the decoder: their documented checks.
            Syscall::RepossessList => {
                if a[1] > abi::repossess::LIST_MAX || !a[0].is_multiple_of(8) {
                    Some(Error::InvalidArgument)
                } else if a[1] > 0
                    && (a[0] < abi::USER_MIN || a[0].saturating_add(a[1] * 8) > abi::USER_MAX)
                {
                    Some(Error::BadAddress)
                } else {
                    None
                }
            }
            Syscall::PageAccess => {
                let (va, pages) = (a[0], a[1]);
                if pages > abi::repossess::ACCESS_SCAN_MAX {
                    return Some(Error::InvalidArgument);
                }
                let range = if pages == 0 { None } else { check_range(va, pages) };
                range.or_else(|| (a[3] > 1).then_some(Error::InvalidArgument))
            }
            Syscall::ConsoleRead => {
                (a[1] > abi::CONSOLE_READ_MAX).then_some(Error::InvalidArgument)
            }
            Syscall::ConsoleGive => env(a[0]),
            _ => None,
        }
    }

    /// A word that often lands on the interesting boundaries.
    fn word() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            0u64..4,
            Just(u64::MAX),
            Just(u64::from(u32::MAX)),
            Just(u64::from(u32::MAX) + 1),
            (abi::USER_MIN - 2..abi::USER_MIN + 2),
            (abi::USER_MAX - 2..abi::USER_MAX + 2),
            (0u64..16).prop_map(|p| abi::USER_MIN + p * abi::PAGE_SIZE),
            (0u64..8).prop_map(|p| abi::USER_MAX - p * abi::PAGE_SIZE),
            (0u64..0x50).prop_map(|p| abi::INFO_VA - 8 * abi::PAGE_SIZE + p * abi::PAGE_SIZE),
            (60u64..70),
            (abi::UNMAP_RANGE_MAX - 1..abi::UNMAP_RANGE_MAX + 2),
            (abi::CONSOLE_WRITE_MAX - 1..abi::CONSOLE_WRITE_MAX + 2),
            (abi::CONSOLE_READ_MAX - 1..abi::CONSOLE_READ_MAX + 2),
            (abi::NAME_MAX - 1..abi::NAME_MAX + 2),
        ]
    }

    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![0..abi::SYSCALL_COUNT + 2, any::<u64>()]
    }

    fn config() -> ProptestConfig {
        ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() }
    }

    proptest! {
        #![proptest_config(config())]

        /// Never panics, refuses exactly what the handlers refused, and a
        /// decoded call encodes back to the registers it reads.
        #[test]
        fn decode_matches_the_handlers(n in number(), args in [word(), word(), word(), word(), word(), word()]) {
            let decoded = decode(n, args);
            prop_assert_eq!(decoded.clone().err(), old_handler_checks(n, args));
            if let Ok(request) = decoded {
                prop_assert_eq!(request.syscall() as u64, n);
                let (number, regs) = request.to_registers();
                prop_assert_eq!(number, n);
                // The registers it reads are the ones given (the unused
                // ones encode as 0, and YieldTo's unnameable target as
                // u64::MAX), and they decode to the same request.
                prop_assert_eq!(decode(number, regs), Ok(request.clone()));
                for (i, (&given, &back)) in args.iter().zip(regs.iter()).enumerate() {
                    prop_assert!(back == 0 || back == given
                        || matches!(request, Request::YieldTo { target: None }) && i == 0,
                        "register {} of {:?}: {:#x} → {:#x}", i, request, given, back);
                }
            }
        }
    }

    #[test]
    fn every_call_round_trips() {
        let valid = [
            Request::Null,
            Request::ConsoleWrite {
                ptr: 5,
                len: abi::CONSOLE_WRITE_MAX,
                stream: ConsoleStream::Kernel,
            },
            Request::ConsoleWrite { ptr: 0, len: 0, stream: ConsoleStream::Stdout },
            Request::ConsoleWrite { ptr: u64::MAX, len: 1, stream: ConsoleStream::Stderr },
            Request::FrameAlloc { frame: None },
            Request::FrameAlloc { frame: Some(FrameNumber(7)) },
            Request::FrameGrant {
                frame: FrameNumber(1),
                grantee: EnvId(u32::MAX),
                rights: Rights(99),
            },
            Request::Map { frame: FrameNumber(1), va: abi::USER_MIN, rights: Rights::RWX },
            Request::SetExceptionHandler { entry: 0, stack_top: u64::MAX, stride: 3 },
            Request::VcpuStart {
                core: CoreId::new(abi::MAX_CORES - 1),
                entry: abi::USER_MAX - 1,
                stack_top: abi::USER_MAX,
                arg: 9,
            },
            Request::UnmapRange { va: 3, pages: 0, done: 4 },
            Request::YieldTo { target: None },
            Request::YieldTo { target: Some(EnvId(4)) },
            Request::IpcAccept { who: Accept::Any, allow: true },
            Request::IpcAccept { who: Accept::Env(EnvId::NONE), allow: false },
            Request::Acall { target: EnvId(2), words: [3, 4] },
            Request::SetFsBase { base: 0 },
            Request::SetFsBase { base: (1 << 47) - 1 },
            Request::SetSyscallRedirect { redirect: None },
            Request::SetSyscallRedirect {
                redirect: Some(Box::new(Redirect {
                    entry: abi::USER_MIN,
                    stack_top: abi::USER_MAX,
                    stride: 0x1_0000,
                    lib_start: abi::USER_MIN,
                    lib_end: abi::USER_MAX,
                })),
            },
            Request::Child { call: Syscall::ShareRange },
            Request::AllocMap { va: abi::USER_MIN, pages: 1, rights: Rights::RW, out: 0 },
            Request::ConsoleRead { ptr: 8, len: abi::CONSOLE_READ_MAX },
            Request::MapBatch { ptr: 0, count: 1 },
            Request::MapBatch { ptr: u64::MAX, count: abi::MAP_BATCH_MAX as u32 },
            Request::ConsoleGive { child: EnvId(7) },
            Request::QueueDelay { core: CoreId::from_word(3).unwrap() },
            Request::AllocMap {
                va: abi::USER_MAX - abi::ALLOC_MAP_MAX * abi::PAGE_SIZE,
                pages: abi::ALLOC_MAP_MAX as u32,
                rights: Rights::READ,
                out: 8,
            },
            Request::SignalPost { target: EnvId(u32::MAX), bits: u64::MAX },
            Request::SignalEntry { entry: 0, cores: 5 },
            Request::SignalEntry { entry: abi::USER_MIN, cores: 0 },
            Request::SignalCtl { op: abi::signal::RESUME, arg: 9 },
            Request::ChildSignal { bits: 0 },
            Request::ChildSignal { bits: 1 << 16 },
        ];
        for request in valid {
            let (n, args) = request.to_registers();
            assert_eq!(decode(n, args), Ok(request));
        }
        for &call in Syscall::ALL {
            // All-zero arguments: whatever it answers, the number is kept.
            if let Ok(r) = decode_args(call, [0; 6]) {
                assert_eq!(r.syscall(), call);
            }
        }
    }

    #[test]
    fn the_boundaries() {
        let d = |call: Syscall, a: [u64; 6]| decode(call as u64, a);
        assert_eq!(decode(abi::SYSCALL_COUNT, [0; 6]), Err(Error::InvalidSyscall));
        // Console streams 0..=2; anything else is refused, whatever the
        // pointer (the stream is checked with the length, before it).
        let cw = |len: u64, stream: u64| d(Syscall::ConsoleWrite, [0, len, stream, 0, 0, 0]);
        assert_eq!(
            cw(1, 2),
            Ok(Request::ConsoleWrite { ptr: 0, len: 1, stream: ConsoleStream::Stderr })
        );
        for stream in [3, 4, 1 << 32, u64::MAX] {
            assert_eq!(cw(1, stream), Err(Error::InvalidArgument));
        }
        assert_eq!(cw(abi::CONSOLE_WRITE_MAX + 1, 1), Err(Error::InvalidArgument));
        // Entry checked before the core.
        assert_eq!(d(Syscall::VcpuStart, [u64::MAX, 0, 0, 0, 0, 0]), Err(Error::InvalidArgument));
        let e = abi::USER_MIN;
        assert_eq!(d(Syscall::VcpuStart, [64, e, 0, 0, 0, 0]), Err(Error::NoSuchCore));
        // The core before the flag; the flag before the environment.
        assert_eq!(d(Syscall::SetDefaultTime, [64, 2, 0, 0, 0, 0]), Err(Error::NoSuchCore));
        assert_eq!(
            d(Syscall::IpcAccept, [u64::MAX - 1, 2, 0, 0, 0, 0]),
            Err(Error::InvalidArgument)
        );
        assert_eq!(d(Syscall::IpcAccept, [u64::MAX - 1, 1, 0, 0, 0, 0]), Err(Error::NoSuchEnv));
        // An info page is reserved; an empty range is fine anywhere.
        assert_eq!(d(Syscall::Unmap, [abi::INFO_VA, 0, 0, 0, 0, 0]), Err(Error::Reserved));
        assert!(d(Syscall::UnmapRange, [1, 0, 0, 0, 0, 0]).is_ok());
        assert_eq!(
            d(Syscall::UnmapRange, [abi::INFO_VA - abi::PAGE_SIZE, 2, 0, 0, 0, 0]),
            Err(Error::Reserved)
        );
        // FS base: the canonical user half only.
        assert!(d(Syscall::SetFsBase, [(1 << 47) - 1, 0, 0, 0, 0, 0]).is_ok());
        assert_eq!(d(Syscall::SetFsBase, [1 << 47, 0, 0, 0, 0, 0]), Err(Error::InvalidArgument));
        assert_eq!(d(Syscall::SetFsBase, [u64::MAX, 0, 0, 0, 0, 0]), Err(Error::InvalidArgument));
        // Redirection: entry 0 ignores the rest; each rule refuses alone.
        let r = |a: [u64; 5]| d(Syscall::SetSyscallRedirect, [a[0], a[1], a[2], a[3], a[4], 0]);
        let (m, top) = (abi::USER_MIN, 0x10_0000_0000);
        assert_eq!(r([0, 1, 3, 9, 2]), Ok(Request::SetSyscallRedirect { redirect: None }));
        assert!(r([m, top, 0x1000, m, m + 1]).is_ok());
        let bad = [
            [m - 1, top, 0x1000, m, m + 1],         // entry below the user range
            [abi::USER_MAX, top, 0x1000, m, m + 1], // entry at its end
            [m, abi::USER_MAX + 16, 0, m, m + 1],   // stack above it
            [m, top + 8, 0x1000, m, m + 1],         // stack not 16-aligned
            [m, top, 0x1008, m, m + 1],             // stride not 16-aligned
            [m, top, top / 32, m, m + 1],           // core 63's stack below USER_MIN
            [m, top, u64::MAX - 15, m, m + 1],      // the span overflows
            [m, top, 0x1000, m + 1, m + 1],         // empty range
            [m, top, 0x1000, m + 2, m + 1],         // reversed range
            [m, top, 0x1000, 0, m + 1],             // range below USER_MIN
            [m, top, 0x1000, m, abi::USER_MAX + 1], // range above USER_MAX
        ];
        for a in bad {
            assert_eq!(r(a), Err(Error::InvalidArgument), "{a:#x?}");
        }
        let ok = Redirect::new(m, top, 0x1000, m, m + 0x100).unwrap();
        assert_eq!(ok.stack_for(CoreId::new(3)), top - 0x3000);
        assert!(ok.redirects(m - 1) && ok.redirects(m + 0x100));
        assert!(!ok.redirects(m) && !ok.redirects(m + 0xff));
        // The in-call refusals come first: no checks here.
        assert!(d(Syscall::SleepOn, [0, 0, 0, 0, 0, 0]).is_ok());
        assert_eq!(
            d(Syscall::YieldTo, [u64::MAX, 0, 0, 0, 0, 0]),
            Ok(Request::YieldTo { target: None })
        );
    }
}
