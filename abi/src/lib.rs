//! The kernel/libOS contract.
//!
//! This crate is the one place the exokernel and the library operating
//! systems share: system call numbers and calling convention, error codes,
//! access rights, the user address-space layout, the exception upcall frame
//! and the read-only info pages. Both sides depend on it; nothing else is
//! shared between them. Every item is part of the ABI: changing a number or
//! a layout means bumping [`ABI_VERSION`].
//!
//! # System calls
//!
//! `syscall` with the number in `rax` and up to six arguments in `rdi`,
//! `rsi`, `rdx`, `r10`, `r8`, `r9`. The result comes back in `rax`: a value
//! `0..=MAX_VALUE` on success, or `-(code)` for an [`Error`] (so the top 4095
//! values of `u64` are errors). `rcx` and `r11` are clobbered (by the
//! instruction itself); every other register is preserved. [`decode`] turns
//! `rax` into a `Result`.
//!
//! # User address space
//!
//! ```text
//! 0x0000_0000_0000_0000  unmapped (null page and below USER_MIN)
//! USER_MIN               applications are linked from here (ELF segments)
//! ...                    free for the libOS: map() anything here
//! INFO_VA                the environment's InfoPage (read-only, kernel-owned)
//! INFO_VA + 4 KiB * (1+c) the VcpuPage of core c (read-only)
//! EVENTS_VA              the environment's event queue (read-only)
//! SCHEDULE_VA            every core's time vector (read-only, shared by all)
//! STACK_TOP - STACK_SIZE the initial stack (frames owned by the environment)
//! USER_MAX (exclusive)   end of the user half (last page excluded)
//! ```
//!
//! `map`, `unmap` and `protect` refuse the info region and anything outside
//! `USER_MIN..USER_MAX`.
//!
//! # Exceptions
//!
//! An environment registers an entry point and its vCPUs' exception stacks
//! with [`Syscall::SetExceptionHandler`]. When one of its vCPUs raises a page
//! fault, general-protection fault, divide error, invalid opcode,
//! breakpoint, x87 floating-point error (#MF) or SIMD floating-point
//! exception (#XM), the kernel writes an [`UpcallFrame`] onto that core's
//! exception stack (below the interrupted `rsp` if that is already on it,
//! after a 128-byte red zone; else at the stack's top), and enters the entry
//! point with `rsp` = `rdi` = the frame's address. The handler may edit the
//! frame and resume it with [`Syscall::ExceptionResume`]. Without a handler,
//! or if the frame does not fit on a mapped, writable exception stack, the
//! environment is killed with a one-line reason on the console.
//!
//! # Vector registers
//!
//! x87, SSE and (where the CPU has it) AVX are usable in ring 3; CPUID and
//! `xgetbv` say which. Each vCPU has its own vector registers and FS base,
//! saved and restored by the kernel whenever another context runs on the
//! core; a vCPU starts with every vector register 0, MXCSR 0x1f80 and the
//! x87 control word 0x37f. A protected control transfer's callee starts
//! from that same initial state and never sees the caller's; the caller's
//! are back when the call ends. An upcall handler (exceptions, slot
//! prologue and epilogue) runs with the interrupted code's vector registers
//! as they are — it is the environment's own code — and must preserve what
//! it uses; `ExceptionResume` does not touch them.

#![no_std]
#![forbid(unsafe_code)]

/// Version of this contract, written into every [`InfoPage`].
pub const ABI_VERSION: u32 = 2;

/// Size of a page and of a frame.
pub const PAGE_SIZE: u64 = 4096;

/// Lowest address an environment may map (the first 4 MiB stay unmapped so
/// that null-pointer dereferences fault).
pub const USER_MIN: u64 = 0x0000_0000_0040_0000;
/// End (exclusive) of the addresses an environment may map: the user half
/// less its last page, so that no user instruction ends at the canonical
/// boundary.
pub const USER_MAX: u64 = 0x0000_7fff_ffff_f000;
/// Address of the environment's [`InfoPage`].
pub const INFO_VA: u64 = 0x0000_7fff_f000_0000;
/// Address of the environment's [`event::EventQueue`].
pub const EVENTS_VA: u64 = INFO_VA + PAGE_SIZE * (1 + MAX_CORES as u64);
/// Address of the [`schedule::Schedule`]: every core's time vector.
pub const SCHEDULE_VA: u64 = EVENTS_VA + PAGE_SIZE;
/// Pages of the [`schedule::Schedule`].
pub const SCHEDULE_PAGES: u64 =
    (core::mem::size_of::<schedule::Schedule>() as u64).div_ceil(PAGE_SIZE);
/// Size of the info region: the info page, one [`VcpuPage`] per core, the
/// event queue and the schedule.
pub const INFO_REGION_SIZE: u64 = PAGE_SIZE * (2 + MAX_CORES as u64) + SCHEDULE_PAGES * PAGE_SIZE;
/// Top (exclusive) of the initial stack of an environment's first vCPU.
pub const STACK_TOP: u64 = 0x0000_7fff_e000_0000;
/// Size of that initial stack.
pub const STACK_SIZE: u64 = 64 * 1024;

/// The most cores the ABI describes.
pub const MAX_CORES: usize = 64;

/// An environment's id. Ids are handed out from 1; `EnvId(0)` is
/// [`EnvId::NONE`], "no environment" (a free slot's owner, an unset
/// caller). On the wire (registers, [`InfoPage::env_id`], the schedule's
/// owners, events) it is the plain `u32`, widened to a `u64` in registers.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EnvId(pub u32);

impl EnvId {
    /// "No environment" (0).
    pub const NONE: EnvId = EnvId(0);

    /// The id as its wire value.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Whether this is [`EnvId::NONE`].
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The id a register names, if it fits in 32 bits.
    pub const fn from_word(word: u64) -> Option<EnvId> {
        if word <= u32::MAX as u64 { Some(EnvId(word as u32)) } else { None }
    }
}

impl From<u32> for EnvId {
    fn from(id: u32) -> EnvId {
        EnvId(id)
    }
}

impl From<EnvId> for u32 {
    fn from(id: EnvId) -> u32 {
        id.0
    }
}

impl From<EnvId> for u64 {
    fn from(id: EnvId) -> u64 {
        u64::from(id.0)
    }
}

impl core::fmt::Display for EnvId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

/// A physical frame number: the frame's physical address divided by
/// [`PAGE_SIZE`]. On the wire (system call arguments, [`FrameStatus`]) it is
/// the plain `u64`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FrameNumber(pub u64);

impl FrameNumber {
    /// The frame holding physical address `addr` (rounded down).
    pub const fn from_addr(addr: u64) -> FrameNumber {
        FrameNumber(addr / PAGE_SIZE)
    }

    /// The physical address of the frame's first byte.
    pub const fn addr(self) -> u64 {
        self.0 * PAGE_SIZE
    }

    /// The number as its wire value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The frame `n` frames further on.
    pub const fn add(self, n: u64) -> FrameNumber {
        FrameNumber(self.0 + n)
    }
}

impl From<u64> for FrameNumber {
    fn from(n: u64) -> FrameNumber {
        FrameNumber(n)
    }
}

impl From<FrameNumber> for u64 {
    fn from(n: FrameNumber) -> u64 {
        n.0
    }
}

impl core::fmt::Display for FrameNumber {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

/// A core's index, `0..`[`MAX_CORES`] (the kernel's numbering: the boot
/// core is 0; not the APIC id). On the wire it is a plain `u64` register.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CoreId(pub u32);

impl CoreId {
    /// The boot core.
    pub const BOOT: CoreId = CoreId(0);

    /// The core with index `index` (which must be below [`MAX_CORES`]).
    pub const fn new(index: usize) -> CoreId {
        assert!(index < MAX_CORES);
        CoreId(index as u32)
    }

    /// The core a register names, if below [`MAX_CORES`].
    pub const fn from_word(word: u64) -> Option<CoreId> {
        if word < MAX_CORES as u64 { Some(CoreId(word as u32)) } else { None }
    }

    /// The index, for per-core arrays.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The index as a register word.
    pub const fn word(self) -> u64 {
        self.0 as u64
    }
}

impl From<CoreId> for usize {
    fn from(core: CoreId) -> usize {
        core.index()
    }
}

impl From<CoreId> for u64 {
    fn from(core: CoreId) -> u64 {
        core.word()
    }
}

impl core::fmt::Display for CoreId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

// The layout's ordering, checked at compile time.
const _: () = assert!(USER_MIN < STACK_TOP && STACK_TOP < INFO_VA);
const _: () = assert!(INFO_VA + INFO_REGION_SIZE < USER_MAX);
const _: () = assert!(core::mem::size_of::<InfoPage>() as u64 <= PAGE_SIZE);
const _: () = assert!(core::mem::size_of::<event::EventQueue>() as u64 <= PAGE_SIZE);

/// Address of core `core`'s [`VcpuPage`].
pub const fn vcpu_page_va(core: usize) -> u64 {
    INFO_VA + PAGE_SIZE * (1 + core as u64)
}

/// Whether `va` lies in the kernel-managed info region.
pub const fn in_info_region(va: u64) -> bool {
    va >= INFO_VA && va < INFO_VA + INFO_REGION_SIZE
}

/// Declares a `#[repr(int)]` enum whose variants are numbered in increasing
/// order, with `ALL` (every variant, in number order) and `from_value` (the
/// variant numbered `n`). Numbers may leave gaps (a number nobody defines
/// decodes as `None`); a number out of order or repeated fails to compile.
macro_rules! numbered {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $int:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr($int)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $name {
            /// Every variant, in number order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The variant numbered `value`, if any.
            #[inline]
            fn from_value(value: u64) -> Option<$name> {
                match value {
                    $( $value => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        const _: () = {
            let mut i = 1;
            while i < $name::ALL.len() {
                assert!($name::ALL[i] as u64 > $name::ALL[i - 1] as u64);
                i += 1;
            }
        };
    };
}

numbered! {
/// System call numbers (`rax`).
///
/// Arguments are listed as `(rdi, rsi, rdx, r10, r8, r9)`; "→" is the value
/// returned on success.
pub enum Syscall: u64 {
    /// `()` → 0. Does nothing: the null-syscall benchmark.
    Null = 0,
    /// `(ptr, len, stream)` → bytes written. Writes `len` bytes (at most
    /// [`CONSOLE_WRITE_MAX`]) to console stream `stream` ([`ConsoleStream`]:
    /// 0 the kernel console, 1 the program's standard output, 2 its
    /// standard error). With the kernel command line's `console=split`,
    /// streams 1 and 2 each go to a channel of their own, byte for byte,
    /// and never mix with kernel lines; otherwise all three go to the
    /// kernel console. Errors: [`Error::InvalidArgument`] for a length
    /// over the maximum or an unknown stream (checked before the pointer),
    /// [`Error::BadAddress`] if the bytes are not readable user memory.
    /// Stream 0 text that is not UTF-8 prints as `<invalid UTF-8>`;
    /// streams 1 and 2 carry any bytes. One call's bytes are never
    /// interleaved with another call's on the same stream.
    ConsoleWrite = 1,
    /// `(code)` → does not return. Ends the environment (every vCPU).
    Exit = 2,
    /// `()` → 0. Gives up the rest of this vCPU's time.
    Yield = 3,
    /// `(frame)` → frame number. Allocates a zeroed frame: any frame if
    /// `frame` is [`ANY_FRAME`], otherwise exactly that physical frame.
    /// Counts against the quota.
    FrameAlloc = 4,
    /// `(frame)` → 0. Frees a frame this environment owns. Fails with
    /// [`Error::Busy`] while the frame is mapped anywhere or granted.
    FrameFree = 5,
    /// `(frame, grantee, rights)` → 0. Lets environment `grantee` map a frame
    /// this environment owns, with at most `rights` ([`Rights`] bits).
    /// Lowering the rights of an existing grant removes the grantee's
    /// mappings of the frame first, as [`Syscall::FrameRevoke`] does (in
    /// restarted steps; the grantee's `Map` of it gets [`Error::Busy`]
    /// meanwhile).
    FrameGrant = 6,
    /// `(frame, grantee)` → 0. Withdraws a grant; every mapping the grantee
    /// has of the frame is removed, on every core, before this returns.
    /// Many mappings are removed in bounded steps (at most 64 each, one TLB
    /// shootdown round each): between steps the kernel returns to the
    /// `syscall` instruction itself, with every register as it was, so that
    /// interrupts and the slot's end are taken in between and the work is
    /// done on the caller's time. The frame cannot be freed until the last
    /// step; the grantee may not map it from the first.
    FrameRevoke = 7,
    /// `(frame, va, rights)` → 0. Maps `frame` at page `va` with `rights`.
    /// The frame must be owned by or granted to this environment (and the
    /// rights within the grant); `va` must be page-aligned, in
    /// `USER_MIN..USER_MAX`, outside the info region and not mapped yet.
    /// Page-table frames the kernel needs count against the quota.
    Map = 8,
    /// `(va)` → 0. Removes the mapping of page `va`.
    Unmap = 9,
    /// `(va, rights)` → 0. Changes the rights of the mapping at `va`
    /// (within what the binding allows).
    Protect = 10,
    /// `(entry, stack_top, stride)` → 0. Registers the exception entry point
    /// and the exception stacks: core `c`'s stack ends at
    /// `stack_top - c * stride` (stride 0: one stack shared by every vCPU,
    /// which is only safe if they never fault at the same time). `entry` 0
    /// unregisters.
    SetExceptionHandler = 11,
    /// `(frame_ptr)` → does not return on success. Resumes the context in
    /// the [`UpcallFrame`] at `frame_ptr`.
    ExceptionResume = 12,
    /// `(core, entry, stack_top, arg)` → 0. Starts a vCPU of this
    /// environment on `core` at `entry` with `rsp = stack_top` and
    /// `rdi = arg`. One vCPU per core per environment.
    VcpuStart = 13,
    /// `()` → does not return. Ends this vCPU; the environment ends (with
    /// code 0) when its last vCPU does.
    VcpuExit = 14,
    /// `(name_ptr, name_len)` → environment id of the live environment
    /// started from the application `name`.
    EnvLookup = 15,
    /// `(frame)` → [`FrameStatus`] word: who holds the frame, for libOS
    /// pagers and tests. Any environment may ask about any frame.
    FrameStatus = 16,
    /// `(va, pages, 0)` → pages unmapped. Removes every mapping in
    /// `va .. va + pages * PAGE_SIZE` (holes are skipped; `pages` at most
    /// [`UNMAP_RANGE_MAX`]) in bounded steps, each with one TLB shootdown
    /// round (a full flush above 64 pages). Restartable: between steps the
    /// kernel returns to the `syscall` instruction with `rdi` and `rsi`
    /// advanced to the rest of the range and `rdx` the count so far, so
    /// those three registers do not survive the call and the third argument
    /// must be 0.
    UnmapRange = 17,
    /// `(base_va, sq_entries, cq_entries)` → 0. Registers this vCPU's
    /// [`ring`]: `ring::ring_bytes(sq, cq)` bytes at page-aligned `base_va`,
    /// mapped read-write and owned by the caller; both sizes powers of two
    /// up to `ring::MAX_ENTRIES`. The frames stay pinned until the vCPU ends.
    RingSetup = 18,
    /// `(to_submit, min_complete)` → submissions consumed. Processes up to
    /// `to_submit` submissions, then, if `min_complete > 0`, blocks until at
    /// least that many completions are waiting. It stops early, leaving the
    /// rest queued, when the completion queue is full or after 64
    /// operations other than `Nop` (so that one call's work is bounded); a
    /// call that stopped early this way does not block: submit the rest.
    RingEnter = 19,
    /// `(insns_ptr, count)` → 0 once the [`predicate`] holds. Verifies the
    /// program (refusing it with an error) and blocks this vCPU until it
    /// evaluates non-zero.
    SleepOn = 20,
    /// `(core, index, count)` → bit set of the slots obtained. Allocates
    /// time slots of `core`'s time vector (see [`schedule`]): exactly slot
    /// `index`, or, with `index` = [`schedule::ANY_SLOT`], any `count` free
    /// slots (all or none). Fails with [`Error::Busy`] if the named slot is
    /// taken, [`Error::QuotaExceeded`] if the core's unreserved slots would
    /// not suffice, [`Error::NoSuchCore`] for a core that runs no vCPUs.
    SlotAlloc = 21,
    /// `(core, mask)` → 0. Frees the slots in `mask` (bit = slot index); all
    /// must be the caller's ([`Error::NotOwner`], and nothing is freed).
    SlotFree = 22,
    /// `(prologue, epilogue)` → 0. Registers the slot upcalls (0: none).
    /// At the start of one of its slots a vCPU enters `prologue` (if set)
    /// instead of resuming; at the end of one of its slots it enters
    /// `epilogue` (if set) and must yield within the grace period (the
    /// abort protocol, see [`schedule`]). Both are delivered like exceptions:
    /// an [`UpcallFrame`] with vector [`vector::SLOT_START`] /
    /// [`vector::SLOT_END`] on the exception stack.
    SetSlotHandlers = 23,
    /// `(core, on)` → 0. Whether this environment's vCPU on `core` may run
    /// in slots nobody owns (the default round-robin; `on` 1) or not (0).
    /// On for every core at start. A vCPU with neither slots
    /// nor default time on its core runs only when handed time
    /// ([`Syscall::YieldTo`]) or called ([`Syscall::Call`] runs on the
    /// caller's vCPU, not on it).
    SetDefaultTime = 24,
    /// `(env)` → 0 when this vCPU runs again. Directed yield: gives the rest
    /// of the current slot to `env`'s vCPU on this core
    /// ([`Error::NotRunnable`] if it has none that can run now).
    YieldTo = 25,
    /// `(entry, stack_top, stride)` → 0. Registers the entry point of
    /// protected control transfers into this environment and their stacks
    /// (core `c`'s at `stack_top - c * stride`). `entry` 0 unregisters.
    IpcRegister = 26,
    /// `(env, allow)` → 0. Adds (`allow` = 1) or removes (`allow` = 0) `env`
    /// from the callers this environment accepts [`Syscall::Call`]s,
    /// [`Syscall::Acall`]s and ring `Notify`s from; `env` = [`ANY_ENV`]
    /// accepts (or stops accepting) everyone. An environment starts out
    /// accepting everyone (a `Call` still needs its [`Syscall::IpcRegister`]
    /// entry). At most [`ACCEPT_MAX`] named callers.
    IpcAccept = 27,
    /// `(target, m0, m1, m2, m3, m4)` with `m5..m7` in `r12`, `r13`, `r14`
    /// → 0, with the reply's eight words in `rsi`, `rdx`, `r10`, `r8`, `r9`,
    /// `r12`, `r13`, `r14`. Protected control transfer: runs `target`'s IPC
    /// entry on this core, now, on the rest of this slot, with the message
    /// in the same registers and `rdi` = the caller's id; the target's
    /// [`Syscall::Reply`] returns here. [`Error::NoSuchEnv`],
    /// [`Error::Refused`] (no entry, or the caller is not accepted),
    /// [`Error::CallFailed`] (the target ended, faulted fatally or left the
    /// call without replying), [`Error::Busy`] (called from inside a call,
    /// or the target's IPC stack on this core is in use).
    ///
    /// **One activation per stack.** A call runs on the target's IPC stack
    /// for this core, and owns it until its `Reply` (or the call's end): a
    /// second call into the same target on the same core meanwhile (the
    /// first caller was preempted at its slot's end, say) gets
    /// [`Error::Busy`] at once and may try again later; calls on other cores
    /// use their own stacks. An exception inside a call is delivered on the
    /// activation's own stack, below its interrupted `rsp` and red zone, not
    /// on the target's exception stack (which the target's own vCPU on this
    /// core may be using).
    Call = 28,
    /// `(_, r0, r1, r2, r3, r4)` with `r5..r7` in `r12`, `r13`, `r14` → does
    /// not return: ends the current protected control transfer, resuming
    /// the caller with these words. [`Error::InvalidArgument`] outside a
    /// call.
    Reply = 29,
    /// `(target, w0, w1)` → 0. Asynchronous call: increments `target`'s
    /// `InfoPage::notifications`, posts an [`event::CALL`] event carrying
    /// `w0`, `w1` to its event queue and wakes its sleeping vCPUs on any
    /// core. Same acceptance rule as [`Syscall::Call`].
    Acall = 30,
    /// `(va, 0, 0)` → the initrd's size in bytes. With `va` 0 only the size
    /// is returned (0 when the machine was booted without an initrd).
    /// Otherwise maps the whole initrd archive (the ustar archive the kernel
    /// starts applications from: `size` bytes, rounded up to pages, the
    /// tail of the last page zero) read-only and not executable at
    /// page-aligned `va`: user-readable, never writable, never executable
    /// (it is data: programs in it are copied out by their loader). The
    /// range must lie in `USER_MIN..USER_MAX`, clear of the info region,
    /// with nothing mapped in it yet; all of it is mapped or none of it.
    ///
    /// The frames are the kernel's: no environment owns them, any number of
    /// environments may map them, [`Syscall::FrameFree`],
    /// [`Syscall::FrameGrant`], `FrameAlloc` of them and a writable `Map`
    /// of them fail (their [`FrameStatus`] is [`FrameHolder::Kernel`]),
    /// `Protect` of the pages fails with [`Error::NotOwner`]. `Map` and
    /// [`Syscall::MapBatch`] of an initrd frame without [`Rights::WRITE`]
    /// work anywhere (the archive is everyone's to read: a library OS maps
    /// an image's read-only pages straight from it), and
    /// [`Syscall::ShareRange`] gives a child the same read-only page.
    /// [`Syscall::Unmap`], [`Syscall::UnmapRange`] and the environment's end
    /// remove the mappings and never free the frames. Each page counts as
    /// one mapping against the quota, and page-table frames the mapping
    /// needs count against the frame quota.
    ///
    /// At a 2 MiB boundary (when no page table covers those 2 MiB spans
    /// yet) the environment's page directory points at leaf tables the
    /// kernel built once at boot and shares with every environment that
    /// maps the initrd so: one entry per 2 MiB instead of one per page, and
    /// nothing for `ShareRange` or the environment's end to visit. Such a
    /// mapping takes its last span whole (mapping a page in its tail is
    /// [`Error::Reserved`]), and goes only whole spans at a time: `Unmap`
    /// of one of its pages, or an `UnmapRange` that covers a span only in
    /// part, is [`Error::Reserved`].
    ///
    /// Restartable, like [`Syscall::UnmapRange`]: the first step checks the
    /// whole range and makes the page tables, then each step maps at most
    /// [`INITRD_MAP_CHUNK`] pages; between steps the kernel returns to the
    /// `syscall` instruction with `rsi` the pages mapped so far and `rdx` 0
    /// (or, while undoing a failed call, the error code), so both
    /// registers are outputs and must be 0 on the first call. A step that
    /// finds a page mapped meanwhile (another vCPU of the caller raced it)
    /// unmaps, in steps, what the call mapped, then fails.
    ///
    /// Errors: [`Error::Unsupported`] (no initrd), [`Error::InvalidArgument`]
    /// (unaligned, outside the user range), [`Error::Reserved`] (overlaps the
    /// info region), [`Error::AlreadyMapped`], [`Error::QuotaExceeded`],
    /// [`Error::NoMemory`].
    InitrdMap = 31,
    /// `(base)` → 0. Sets the FS base of the calling vCPU (what
    /// `fs:`-relative accesses add, the thread pointer of x86-64 TLS; Linux's
    /// `arch_prctl(ARCH_SET_FS)`). `base` must lie in the canonical user half
    /// (below `0x0000_8000_0000_0000`), else [`Error::InvalidArgument`]. It
    /// is per vCPU, saved and restored on every switch; a new vCPU starts
    /// with 0. A protected control transfer ([`Syscall::Call`]) runs the
    /// callee with its own FS base, 0 at the start of each call (an
    /// activation is a fresh thread of the callee, like its registers), and
    /// gives the caller its own back when the call ends; a `SetFsBase`
    /// inside a call changes only the activation's FS base.
    SetFsBase = 32,
    /// `(entry, stack_top, stride, lib_start, lib_end)` → 0. Registers
    /// **system-call redirection** for this environment (as Xok's emulator
    /// and Linux's Syscall User Dispatch do), replacing any earlier
    /// registration; `entry` 0 disables it (the other arguments are then
    /// ignored). Checks as for [`Syscall::SetExceptionHandler`], and more:
    /// `entry` in `USER_MIN..USER_MAX`; `stack_top` at most `USER_MAX`;
    /// `stack_top` and `stride` multiples of 16; every core's stack top
    /// `stack_top - c * stride` (`c` < [`MAX_CORES`]) at least `USER_MIN`;
    /// `lib_start < lib_end`, both in `USER_MIN..=USER_MAX`. Anything else
    /// is [`Error::InvalidArgument`] and leaves the old registration in
    /// place. Core `c`'s handler stack ends at `stack_top - c * stride`.
    ///
    /// While it is registered, a `syscall` whose return address (`rcx`, the
    /// address after the instruction) lies **outside** `[lib_start,
    /// lib_end)` is not an exokernel call: the kernel records the program's
    /// `rip` (= `rcx`), `rflags` (= `r11`) and `rsp` in
    /// [`VcpuPage::redirect_rip`], [`VcpuPage::redirect_rflags`] and
    /// [`VcpuPage::redirect_rsp`] of that core's (read-only) page, then
    /// returns to ring 3 (`sysretq`) at `entry` with `rsp` = that core's
    /// handler stack top, `rcx` = `entry` (the instruction's return address
    /// is in `redirect_rip`), `r11` = the program's `rflags` as the
    /// `syscall` instruction saved it, `rflags` = the same (less RF), and
    /// every other register exactly as the program left it (`rax` = the
    /// number, `rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9` = the arguments).
    /// Nothing else changes: nothing is written to the program's memory; the
    /// vector registers and FS base are the program's. The library returns
    /// to the program without entering the kernel: it restores the
    /// registers (`rax` = the result; `rcx` and `r11` are clobbered, as by
    /// a `syscall`), then, still on its own stack, `push gs:[rflags field];
    /// popfq`, `mov rsp, gs:[rsp field]`, `jmp gs:[rip field]` (user GS
    /// points at this core's page). A `syscall` from inside the range is an
    /// exokernel call as without redirection.
    ///
    /// The three fields are overwritten by the next redirected `syscall` on
    /// that core: the handler must copy them before it can run code that
    /// makes one (its own code lies in the range, but an exception upcall
    /// or a nested handler may not). If the handler stack is not mapped
    /// writable, the handler's first push faults in ring 3 like any other
    /// fault (an exception upcall, or the environment is killed with a
    /// one-line reason) — never the kernel.
    ///
    /// The registration is per environment: a protected control transfer
    /// into another environment runs under the callee's registration (its
    /// code, its range) and the caller's applies again when the call ends.
    SetSyscallRedirect = 33,
    /// `(quota)` → a [`ChildHandle`]. Creates an empty child environment:
    /// its own address space (only the kernel's info region mapped), no
    /// vCPU, exception and IPC entries unset, the caller's name. `quota`
    /// frames (at least [`CHILD_QUOTA_MIN`]) are taken from the caller's
    /// quota: they count as charged to the caller until the child is
    /// reclaimed, then return to it (see [`child`] for the exceptions).
    /// [`Error::QuotaExceeded`] if the caller has not that much room.
    EnvCreate = 34,
    /// `(child, frame, va, rights, flags)` → 0. Maps one of the caller's
    /// frames at page `va` of the child. With [`CHILD_MAP_GIVE`] in `flags`
    /// the frame changes owner: it must be a data frame the caller owns,
    /// mapped nowhere, granted to nobody, not shared; the child is charged
    /// for it (its quota, [`Error::QuotaExceeded`]) and the caller
    /// uncharged; the child maps it with `rights`. `frame` [`ANY_FRAME`]
    /// with [`CHILD_MAP_GIVE`]: a fresh zeroed frame, owned by and charged
    /// to the child (none of the caller's). Without it, the child
    /// becomes a copy-on-write holder ([`child`]): `rights` less
    /// [`Rights::WRITE`], within the caller's; a frame nobody shares yet
    /// must be mapped nowhere ([`Error::Busy`]: use
    /// [`Syscall::ShareRange`] for mapped memory).
    ChildMap = 35,
    /// `(child, va)` → 0. Removes the child's mapping at page `va`.
    ChildUnmap = 36,
    /// `(child, src_va, dst_va, pages, done)` → pages shared.
    /// Copy-on-write sharing of a range: every page the caller maps in
    /// `src_va .. src_va + pages * PAGE_SIZE` whose frame it holds (owned
    /// or shared; frames mapped by a grant are skipped) is mapped
    /// read-only at the same offset from `dst_va` in the child, and the
    /// caller's own mapping is made read-only; a page already mapped in the
    /// child is skipped, and so are pinned (ring) frames. Any length within
    /// `USER_MIN..USER_MAX` (absent page tables are skipped whole); neither
    /// range may touch the info region. Restartable in bounded steps (at most 256
    /// page-table entries, one TLB shootdown round for the caller's
    /// write-protect each): between steps the kernel returns to the
    /// `syscall` instruction with `rsi`, `rdx`, `r10` advanced to the rest
    /// and `r8` the count so far (`done` must be 0 at first). A frame with
    /// a writable grant or another mapping (an alias) stops the call with
    /// [`Error::Busy`] at that page, the earlier pages shared.
    ShareRange = 37,
    /// `(child, which, entry, stack_top, stride)` → 0. Sets the child's
    /// exception entry and stacks ([`CHILD_ENTRY_EXCEPTION`], as
    /// [`Syscall::SetExceptionHandler`]) or its IPC entry
    /// ([`CHILD_ENTRY_IPC`], as [`Syscall::IpcRegister`]).
    ChildSetEntry = 38,
    /// `(child, core, frame_ptr)` → 0. Starts a vCPU of the child on
    /// `core` with the full register state of the [`UpcallFrame`] at
    /// `frame_ptr` in the caller's memory (checked as by
    /// [`Syscall::ExceptionResume`]: `rip` in the user half, privileged
    /// flags the kernel's). One vCPU per core per environment
    /// ([`Error::NoSuchCore`]).
    ChildStart = 39,
    /// `(child)` → the child's exit status, once it has ended and been
    /// reclaimed (its frames are back in the pool): its exit code, or
    /// [`CHILD_KILLED`]. [`Error::Busy`] while it lives. The status is kept
    /// for the creator until read (at most [`CHILD_EXITS_KEPT`] unread
    /// ones; older ones are dropped); reading it frees the handle
    /// (afterwards [`Error::NoSuchEnv`]).
    ChildStatus = 40,
    /// `(child)` → 0. Ends the child (killed: "destroyed by its creator");
    /// its resources are reclaimed in the background and its status
    /// ([`CHILD_KILLED`]) posted like any exit.
    ChildDestroy = 41,
    /// `(dst_frame, src_va)` → the frame at `src_va`. Copies the page the
    /// caller maps readable at `src_va` into `dst_frame`, a data frame the
    /// caller owns and could map writable (not shared): the copy-on-write
    /// fault's copy, without a temporary mapping.
    FrameCopy = 42,
    /// `(va)` → what maps the page holding `va` in the caller, packed: bits
    /// 0..3 the mapping's [`Rights`], [`PAGE_QUERY_COW`], [`PAGE_QUERY_OWNED`],
    /// the number of holders of the frame (see [`FrameStatus`], at most
    /// 127) from bit [`PAGE_QUERY_HOLDERS_SHIFT`], and the frame's physical
    /// address (bits 12 and up: [`FrameNumber`] `<< 12`).
    /// [`Error::NotMapped`] if nothing is mapped there. The libOS's
    /// copy-on-write fault handler asks this first.
    PageQuery = 43,
    /// `(child, src_va, dst_va, pages, done)` → pages shared.
    /// **Writable sharing** of a range (shared memory: pipes, `MAP_SHARED`
    /// anonymous memory, any buffer between a process and its children):
    /// every page the caller maps in `src_va .. src_va + pages * PAGE_SIZE`
    /// whose frame it holds (owned, or held by such a share) is mapped at
    /// the same offset from `dst_va` in the child **with the rights of the
    /// caller's mapping, writable included**; the caller's mapping is left
    /// as it is. Caller and child (and any holder the child passes it on
    /// to, generations down) then read and write the same frame. The frame
    /// is *shared writable* from then on and for as long as anyone holds
    /// it: it is never copy-on-write ([`Syscall::ShareRange`] and
    /// [`Syscall::ChildMap`] of it share it writable too, no mapping of it
    /// carries [`PAGE_QUERY_COW`]), never repossessed while shared, never
    /// pinned by a ring. Charging and lifetime are those of every shared
    /// frame ([`child`]): charged to its owner until the last holder lets
    /// go; the owner's exit or [`Syscall::FrameFree`] ends only the owner's
    /// hold; a sharer lets go by unmapping its last mapping of it.
    ///
    /// Skipped, as by [`Syscall::ShareRange`]: a page already mapped in the
    /// child, a frame mapped by a grant, a pinned (ring) frame. Any length
    /// within `USER_MIN..USER_MAX`; restartable in the same bounded steps,
    /// with the same registers (`rsi`, `rdx`, `r10` advanced, `r8` the count
    /// so far; `done` 0 at first). Errors, stopping at that page with the
    /// earlier pages shared: [`Error::Busy`] for a frame shared
    /// copy-on-write now, or a page the caller maps copy-on-write
    /// ([`PAGE_QUERY_COW`]: write it first); [`Error::QuotaExceeded`] (the
    /// child's mappings or page tables); [`Error::NoSuchEnv`] (the child is
    /// dying); the handle errors of [`child`]; [`Error::InvalidArgument`] /
    /// [`Error::Reserved`] for a bad range, as `ShareRange`.
    ShareWritable = 44,
    /// `(child, quota)` → the child's previous quota. Sets the frame quota
    /// of a child the caller created (see [`child`]) to `quota` frames (at
    /// least [`CHILD_QUOTA_MIN`], at most `u32::MAX`): raising it takes the
    /// difference from the caller's quota ([`Error::QuotaExceeded`] if the
    /// caller has not that much room); lowering it gives the difference
    /// back, but never below what the child uses — its charged frames (plus
    /// frames repossession took) must fit in the new quota and its mappings
    /// in the new mapping bound, else [`Error::Busy`] and nothing changes.
    /// The child's [`InfoPage::frame_quota`] follows. A child's quota stays
    /// charged to its creator as a whole until the child is reclaimed, so a
    /// quota given and not used comes back at the child's end, or now by
    /// lowering it. Handle errors as for every child call
    /// ([`Error::NotOwner`], [`Error::NoSuchEnv`]).
    ChildQuota = 45,
    /// `(va, pages, rights, out)` → the frame number mapped at `va`.
    /// Allocates `pages` (1 ..= [`ALLOC_MAP_MAX`]) fresh zeroed data frames,
    /// charged to the caller's quota like [`Syscall::FrameAlloc`]'s, and
    /// maps them at `va .. va + pages * PAGE_SIZE` with `rights`, one frame
    /// per page in order, as many [`Syscall::Map`]s would: the first-touch
    /// path of a library OS in one call (frames zeroed ahead by idle cores
    /// when the kernel has them). `out` is 0 (allowed only for one page) or
    /// the address of `pages` writable `u64` words, which receive the frame
    /// numbers in page order before anything is mapped (their contents mean
    /// nothing if the call fails).
    ///
    /// **All or nothing**: on any error no page of the range was mapped and
    /// every frame allocated for the call is free again (the quota as
    /// before). Bounded (at most [`ALLOC_MAP_MAX`] pages, one lock of the
    /// address space), so it is not restartable. Errors:
    /// [`Error::InvalidArgument`] (`pages` 0 or above [`ALLOC_MAP_MAX`],
    /// `va` not a page-aligned user address, the range leaving the user
    /// half, invalid or non-readable `rights`, `out` 0 with more than one
    /// page), [`Error::Reserved`] (the range overlaps the info region),
    /// [`Error::QuotaExceeded`] (frames, or mappings: the same bound as
    /// `Map`'s), [`Error::NoMemory`], [`Error::BadAddress`] (`out` not
    /// writable), [`Error::AlreadyMapped`] (a page of the range is mapped).
    AllocMap = 46,
    /// `(entries, count)` → `count`. Maps many pages in one call: `count`
    /// (1 ..= [`MAP_BATCH_MAX`]) [`MapEntry`]s at `entries` in the caller's
    /// memory, each `(frame, va, rights)` checked exactly as by
    /// [`Syscall::Map`] (the frame owned by the caller or granted to it
    /// with at least `rights`, a copy-on-write shared frame never
    /// writable, `va` a free user page outside the info region).
    ///
    /// **All or nothing**: on any error no page of the batch is mapped
    /// (pages mapped before the failing entry are unmapped again, with one
    /// TLB shootdown round) and the error is the first entry's that failed.
    /// Bounded (at most [`MAP_BATCH_MAX`] entries under one lock of the
    /// address space), so not restartable. A frame may appear in several
    /// entries (aliases, as with `Map`); a page may not
    /// ([`Error::InvalidArgument`]). Errors: [`Error::InvalidArgument`]
    /// (`count` 0 or above the maximum, a page twice, an entry's `va` not a
    /// page-aligned user address, an entry's invalid or non-readable
    /// rights), [`Error::BadAddress`] (the entries not readable),
    /// [`Error::Reserved`] (an entry's `va` in the info region),
    /// [`Error::BadFrame`], [`Error::NotOwner`],
    /// [`Error::PermissionDenied`], [`Error::AlreadyMapped`],
    /// [`Error::QuotaExceeded`] (mappings or page tables), as `Map`'s.
    MapBatch = 47,
    /// `(ptr, len)` → 0. Publishes this environment's **repossession list**
    /// (see [`repossess`]): `len` words at 8-aligned `ptr` (at most
    /// [`repossess::LIST_MAX`]), each a frame number, in the order the
    /// kernel may take them by force. The kernel keeps only `(ptr, len)`
    /// and reads the words when it repossesses, through checked copies, so
    /// the environment keeps the list up to date in place. `(0, 0)`
    /// withdraws it. [`Error::InvalidArgument`] for a misaligned pointer or
    /// a length above the maximum, [`Error::BadAddress`] for a range
    /// outside `USER_MIN..USER_MAX` (its pages need not be mapped now).
    RepossessList = 48,
    /// `(va, pages, bitmap_ptr, clear_dirty)` → pages found accessed. Reads
    /// and clears the accessed bits of the caller's mappings of
    /// `va .. va + pages * PAGE_SIZE` (`pages` at most
    /// [`repossess::ACCESS_SCAN_MAX`]; page-aligned `va` in the user half),
    /// and writes two bits per page to `bitmap_ptr`: bit `2i` accessed,
    /// bit `2i + 1` dirty (written since mapped or since the last clear),
    /// both 0 for a page not mapped. `clear_dirty` 1 clears the dirty bits
    /// too (0 leaves them). The cleared translations are flushed on every
    /// core before it returns. The bitmap is `ceil(pages / 32)` words.
    /// Bounded (one address-space lock, at most 512 entries, one shootdown);
    /// scan more by calling again from the next page.
    /// [`Error::InvalidArgument`] for a bad range or flag,
    /// [`Error::BadAddress`] if the bitmap is not writable (the bits are
    /// then already cleared: the information is lost, nothing else).
    PageAccess = 49,
    /// `()` → frames still owed. The debt of the current repossession
    /// demand (0: none). See [`repossess`].
    RepossessStatus = 50,
    /// `(bits)` → 0. From now on, whenever a child of the caller (an
    /// environment it made with [`Syscall::EnvCreate`]) ends and is
    /// reclaimed — the moment [`Syscall::ChildStatus`] starts answering and
    /// [`event::CHILD_EXIT`] is posted — the kernel also posts `bits` to
    /// the caller as [`Syscall::SignalPost`] would (see [`signal`]), so a
    /// parent busy elsewhere learns of the end at once (POSIX `SIGCHLD`).
    /// `bits` 0 stops it (the default). Never fails.
    ChildSignal = 51,
    /// `(target, bits)` → 1 if `target` has a signal entry
    /// ([`Syscall::SignalEntry`]) and will get an upcall, 0 if it only
    /// keeps the bits pending. Posts **signal bits** to environment
    /// `target` (see [`signal`]): ORs the word `bits` into its
    /// pending word; `bits` 0 is a probe: the checks below only, nothing
    /// posted (POSIX `kill(pid, 0)`). Who may signal whom: `target` must be the caller
    /// itself or belong to the same *family* — the environments created,
    /// directly or through children, from one environment the kernel
    /// started ([`Syscall::EnvCreate`] chains); an environment started by
    /// the kernel is a family of its own. Errors: [`Error::NoSuchEnv`] (no
    /// such environment, or it is ending), [`Error::PermissionDenied`]
    /// (another family).
    SignalPost = 52,
    /// `(entry, cores)` → 0. Registers the signal upcall entry (`entry` 0
    /// unregisters: the bits then only stay pending) and the cores whose
    /// vCPU of this environment takes signal upcalls (bit per core; 0 means
    /// every core). The upcall uses the exception stacks of
    /// [`Syscall::SetExceptionHandler`] and their rules. See [`signal`].
    /// [`Error::InvalidArgument`] for an entry outside the user range.
    SignalEntry = 53,
    /// `(op, arg)` → per `op` ([`signal::TAKE`], [`signal::MASK`],
    /// [`signal::UNMASK`], [`signal::RESUME`]); see [`signal`].
    /// [`Error::InvalidArgument`] for an unknown op; `RESUME` fails as
    /// [`Syscall::ExceptionResume`] does.
    SignalCtl = 54,
    /// `(ptr, len)` → bytes read. Takes up to `len` bytes (at most
    /// [`CONSOLE_READ_MAX`]) of **console input** — what was typed on the
    /// serial console (COM1), received by interrupt into a bounded kernel
    /// buffer of [`CONSOLE_INPUT_BUFFER`] bytes — and copies them to `ptr`.
    /// Never blocks: 0 when nothing is waiting. To wait, sleep on a
    /// predicate over [`InfoPage::console_input`] (read it first, then call
    /// this, then sleep until it differs: no byte can slip between).
    ///
    /// Console input is a capability: only the **console reader** may take
    /// it, the environment the boot gave it to (the first `init`
    /// application under the command line's `stdin=console`), or the one
    /// it was handed to with [`Syscall::ConsoleGive`]. Errors:
    /// [`Error::InvalidArgument`] for a length over the maximum (checked
    /// first), [`Error::PermissionDenied`] for anyone but the reader,
    /// [`Error::BadAddress`] if bytes are waiting and `ptr` is not
    /// writable user memory for them (they then stay in the buffer). Bytes that arrive while
    /// the buffer is full are dropped and counted (the kernel logs the
    /// count), never anything else: the interrupt path never waits for a
    /// reader.
    ConsoleRead = 59,
    /// `(child)` → 0. The console reader hands console input
    /// ([`Syscall::ConsoleRead`]) to `child`, a live environment it created
    /// (a [`ChildHandle`]). When a reader that was given the console ends,
    /// the console goes back to the environment that gave it, if that one
    /// still lives (else nobody reads it any more). Errors:
    /// [`Error::PermissionDenied`] if the caller is not the reader,
    /// [`Error::NotOwner`] if `child` is not the caller's child,
    /// [`Error::NoSuchEnv`] if it does not exist (any more) or is ending.
    ConsoleGive = 60,
    /// `(core)` → TSC ticks. The **queueing delay** of `core`: the total
    /// time that runnable vCPUs — of every environment — waited in that
    /// core's ready queue before they ran, since boot (monotonic; sample it
    /// twice for a rate). A vCPU waits there when it was preempted, yielded
    /// or woke while another ran; sleeping vCPUs are not runnable and do
    /// not count. An environment's own share, and how many of its waits
    /// ended, are in its [`VcpuPage::queue_tsc`] and
    /// [`VcpuPage::queue_waits`] of that core. No capability is needed (the
    /// figure says how busy a core is, like the public time vectors of
    /// [`SCHEDULE_VA`]). Errors: [`Error::NoSuchCore`] for a core index not
    /// below [`MAX_CORES`] (an absent core reads 0).
    QueueDelay = 61,
    /// `(va)` → the frame mapped at the page holding `va` afterwards.
    /// **The copy-on-write fault in one call**: ends the caller's
    /// copy-on-write sharing of that page, which must be mapped
    /// ([`Error::NotMapped`]) and marked copy-on-write
    /// ([`PAGE_QUERY_COW`]), or writable already: then there is nothing to
    /// break (the fault was fixed by another fix-up of the same page — a
    /// nested upcall on this vCPU, or another vCPU — between the fault and
    /// this call) and the frame mapped there is returned, unchanged, so
    /// the access can simply be retried. A read-only page that is not
    /// copy-on-write is [`Error::InvalidArgument`]. If the
    /// caller is the frame's only holder the page is made writable in
    /// place (taken over if its owner let go, as [`Syscall::Protect`]
    /// does). Otherwise a new frame, charged to the caller, gets a copy of
    /// the page and replaces it with the mapping's rights plus write, and
    /// the caller's hold on the old frame ends (if the caller owned it, it
    /// is let go of as [`Syscall::FrameFree`] does: it lives on for its
    /// other holders). [`Error::QuotaExceeded`] and [`Error::NoMemory`]
    /// leave the page as it was.
    CowBreak = 64,
}
}

/// [`Syscall::PageQuery`]: the page was made read-only by
/// [`Syscall::ShareRange`] from a writable mapping (in the caller that
/// shared it and in the child it was shared into): a write to it is a
/// copy-on-write fault, not a protection error. A mapping made with
/// `Map`/`Protect` never has it.
pub const PAGE_QUERY_COW: u64 = 1 << 3;
/// [`Syscall::PageQuery`]: the caller owns the frame (and has not let go).
pub const PAGE_QUERY_OWNED: u64 = 1 << 4;
/// [`Syscall::PageQuery`]: where the holder count starts (7 bits).
pub const PAGE_QUERY_HOLDERS_SHIFT: u64 = 5;

/// One past the highest system call number; numbers from here on (and any
/// number in a gap below it) are [`Error::InvalidSyscall`].
pub const SYSCALL_COUNT: u64 = Syscall::ALL[Syscall::ALL.len() - 1] as u64 + 1;

const _: () = assert!(Syscall::ALL[0] as u64 == 0);

impl Syscall {
    /// The call with number `n`, if defined.
    pub fn from_number(n: u64) -> Option<Syscall> {
        Self::from_value(n)
    }
}

/// [`Syscall::FrameAlloc`]'s argument for "any frame" (and
/// [`Syscall::ChildMap`]'s, given: a fresh frame of the child's own).
pub const ANY_FRAME: u64 = u64::MAX;
/// The most bytes one [`Syscall::ConsoleWrite`] takes.
pub const CONSOLE_WRITE_MAX: u64 = 4096;
/// The most bytes one [`Syscall::ConsoleRead`] returns.
pub const CONSOLE_READ_MAX: u64 = 256;
/// Bytes of console input the kernel keeps for the reader; more is dropped
/// (and counted) until the reader takes some.
pub const CONSOLE_INPUT_BUFFER: u64 = 1024;

numbered! {
/// The console streams of [`Syscall::ConsoleWrite`] (`rdx`).
pub enum ConsoleStream: u64 {
    /// The kernel console: what every environment printed before streams
    /// existed. Text; shares its channel with the kernel's own lines.
    Kernel = 0,
    /// The program's standard output (what `cargo xtask posix` forwards to
    /// its stdout). Bytes.
    Stdout = 1,
    /// The program's standard error (forwarded to xtask's stderr). Bytes.
    Stderr = 2,
}
}

impl ConsoleStream {
    /// The stream `rdx` names, if any.
    pub fn from_number(n: u64) -> Option<ConsoleStream> {
        Self::from_value(n)
    }
}
/// The most entries one [`Syscall::MapBatch`] takes.
pub const MAP_BATCH_MAX: u64 = 64;

/// One page of a [`Syscall::MapBatch`]: map `frame` at `va` with `rights`
/// (a [`Rights`] word).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapEntry {
    /// The frame number.
    pub frame: u64,
    /// The page (page-aligned user address).
    pub va: u64,
    /// Its rights ([`Rights`] bits).
    pub rights: u64,
}

/// Bytes of one [`MapEntry`].
pub const MAP_ENTRY_SIZE: u64 = 24;
const _: () = assert!(core::mem::size_of::<MapEntry>() == MAP_ENTRY_SIZE as usize);

/// The most pages one [`Syscall::AllocMap`] maps.
pub const ALLOC_MAP_MAX: u64 = 64;
/// The most pages one [`Syscall::UnmapRange`] takes.
pub const UNMAP_RANGE_MAX: u64 = 1 << 20;
/// The most pages one step of [`Syscall::InitrdMap`] maps.
pub const INITRD_MAP_CHUNK: u64 = 256;
/// The longest application name [`Syscall::EnvLookup`] accepts.
pub const NAME_MAX: u64 = 64;
/// [`Syscall::IpcAccept`]'s "every environment".
pub const ANY_ENV: u64 = u64::MAX;
/// The most callers one environment names in [`Syscall::IpcAccept`].
pub const ACCEPT_MAX: usize = 32;

/// [`Syscall::FrameStatus`]'s answer, packed in one word:
/// bits 0..8 the [`FrameHolder`] kind, bits 8..32 the number of
/// environments holding the frame ([`FrameHolder::Owned`] and
/// [`FrameHolder::Released`]: the owner unless it let go, plus every
/// copy-on-write sharer; 1 means the asker, if it holds it, is alone),
/// bits 32..64 the environment charged for it.
pub type FrameStatus = u64;

/// Child environments and copy-on-write sharing.
///
/// **Handles.** [`Syscall::EnvCreate`] returns a [`ChildHandle`]: the
/// child's environment id. Ids are never reused, and every call taking a
/// handle checks that the caller created the child ([`Error::NotOwner`]
/// otherwise: a forged handle) and that it lives ([`Error::NoSuchEnv`]: a
/// stale one; [`Syscall::ChildStatus`] excepted). So the capability is the
/// pair (creator, id), kept by the kernel: it cannot be passed on, and a
/// child cannot reach its creator's (it has no handle on it).
///
/// **Life.** A child lives on when its creator ends (it keeps running;
/// nobody holds a handle on it any more), except a child never started,
/// which is destroyed with its creator. When a child is reclaimed, an
/// [`event::CHILD_EXIT`] event `[handle, status]` goes to its creator, if
/// alive, and the status is kept for [`Syscall::ChildStatus`].
///
/// **Quota.** A child's quota is carved out of its creator's at creation
/// (charged to the creator as if it were frames) and handed back when the
/// child is reclaimed, less the frames still charged to the child then
/// (shared frames that outlive it, below): those stay lost to the creator.
///
/// **Shared frames (copy-on-write).** A frame has one owner. The owner, or
/// anyone holding it, may let a child hold it too ([`Syscall::ChildMap`],
/// [`Syscall::ShareRange`]). While more than one holds it, every mapping
/// of it is read-only, the owner's included: a holder that writes takes a
/// page fault and copies ([`Syscall::FrameCopy`]). A sharer stops holding
/// the frame when its last mapping of it goes. **Charging: a frame is
/// charged to its owner, and stays charged to it until the last holder
/// lets go**, even after the owner frees it ([`Syscall::FrameFree`] of a
/// frame others share succeeds, the frame staying for them) or ends. So
/// each frame counts against exactly one quota, and no holder is charged
/// for frames it did not choose to own: sharing can move no cost onto
/// anyone. The last holder may take the frame over: [`Syscall::Protect`]
/// with [`Rights::WRITE`] by the only holder of a frame its owner let go of
/// makes it the owner (charged from then on, if its quota allows) and
/// maps it writable, without a copy.
///
/// **Shared frames (writable).** [`Syscall::ShareWritable`] shares frames
/// without copy-on-write: every holder maps the frame with the rights it
/// was given, writable included, and sees the others' writes. Holding,
/// passing on, letting go and charging are as above; such a frame stays
/// shared writable while anyone holds it (no later share makes it
/// copy-on-write) and is not repossessed while shared.
pub mod child {}

/// A handle on a child environment (see [`child`]): its id.
pub type ChildHandle = u64;
/// The smallest quota [`Syscall::EnvCreate`] accepts.
pub const CHILD_QUOTA_MIN: u64 = 8;
/// [`Syscall::ChildMap`] flag: give the frame to the child.
pub const CHILD_MAP_GIVE: u64 = 1;
/// [`Syscall::ChildSetEntry`]: the exception entry.
pub const CHILD_ENTRY_EXCEPTION: u64 = 0;
/// [`Syscall::ChildSetEntry`]: the IPC entry.
pub const CHILD_ENTRY_IPC: u64 = 1;
/// A child's status when it was killed (not exited); exit codes at or
/// above it read as `CHILD_KILLED - 1`.
pub const CHILD_KILLED: u64 = MAX_VALUE;
/// Unread exit statuses kept per creator.
pub const CHILD_EXITS_KEPT: usize = 64;

/// Who holds a frame, as reported by [`Syscall::FrameStatus`].
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameHolder {
    /// Free: [`Syscall::FrameAlloc`] may take it.
    Free = 0,
    /// Used by the kernel (its image, heap, boot structures) or not RAM.
    Kernel = 1,
    /// A page-table page of the environment in the high bits.
    PageTable = 2,
    /// A data frame owned by the environment in the high bits.
    Owned = 3,
    /// A data frame its owner (in the high bits, still charged for it) let
    /// go of, held by copy-on-write sharers only (see [`child`]).
    Released = 4,
}

/// Access rights of a mapping or a grant (bit set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rights(pub u64);

impl Rights {
    /// No access.
    pub const NONE: Rights = Rights(0);
    /// Readable.
    pub const READ: Rights = Rights(1);
    /// Writable (implies nothing else; mapping needs READ too).
    pub const WRITE: Rights = Rights(2);
    /// Executable.
    pub const EXEC: Rights = Rights(4);
    /// Read and write.
    pub const RW: Rights = Rights(3);
    /// Read, write and execute.
    pub const RWX: Rights = Rights(7);
    /// All defined bits.
    pub const ALL_BITS: u64 = 7;

    /// Whether every right in `other` is also in `self`.
    pub const fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether only defined bits are set.
    pub const fn is_valid(self) -> bool {
        self.0 & !Self::ALL_BITS == 0
    }

    /// The union of both.
    pub const fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }
}

numbered! {
/// Errors, with their stable numeric codes (returned as `-(code)`).
pub enum Error: u64 {
    /// The system call number is not defined.
    InvalidSyscall = 1,
    /// An argument is out of its range (bad rights bits, unaligned address,
    /// absurd length, ...).
    InvalidArgument = 2,
    /// A pointer argument is null, in the kernel half, unmapped, or lacks
    /// the access the call needs.
    BadAddress = 3,
    /// No free frame is left in the machine.
    NoMemory = 4,
    /// The environment's frame quota would be exceeded.
    QuotaExceeded = 5,
    /// The frame is not owned by (or granted to) the caller.
    NotOwner = 6,
    /// The rights asked for exceed what the binding allows.
    PermissionDenied = 7,
    /// The specific frame asked for is not free.
    FrameUnavailable = 8,
    /// In use: a frame mapped, granted or being withdrawn (cannot be freed
    /// or mapped yet), an IPC stack taken by another call, a call from
    /// inside a call.
    Busy = 9,
    /// Nothing is mapped at that address.
    NotMapped = 10,
    /// Something is already mapped at that address.
    AlreadyMapped = 11,
    /// No such (live) environment.
    NoSuchEnv = 12,
    /// No such core, or the environment already has a vCPU there.
    NoSuchCore = 13,
    /// The frame number names no RAM frame an environment could hold.
    BadFrame = 14,
    /// The address lies in a region the kernel reserves (info pages).
    Reserved = 15,
    /// A linked ring entry was not run because an earlier entry of its
    /// chain failed.
    Canceled = 16,
    /// The operation exists in the ABI but this kernel does not implement
    /// it yet.
    Unsupported = 17,
    /// The environment named has no vCPU on this core that can run now.
    NotRunnable = 18,
    /// The target has no IPC entry, or does not accept the caller.
    Refused = 19,
    /// The target of a [`Syscall::Call`] ended, faulted fatally or left the
    /// call without replying.
    CallFailed = 20,
    /// `SleepOn` was cut short: signal bits are pending for the
    /// environment and its signal upcalls are enabled (see [`signal`]).
    Interrupted = 26,
}
}

/// The highest defined error code (codes may leave gaps, like system-call
/// numbers: helpers' branches are given numbers of their own).
pub const ERROR_COUNT: u64 = Error::ALL[Error::ALL.len() - 1] as u64;

const _: () = assert!(Error::ALL[0] as u64 == 1);

/// The largest success value a system call returns.
pub const MAX_VALUE: u64 = u64::MAX - 4095;

impl Error {
    /// The error with code `code`, if defined.
    pub fn from_code(code: u64) -> Option<Error> {
        Self::from_value(code)
    }

    /// The `rax` value that reports this error.
    pub const fn to_raw(self) -> u64 {
        (self as u64).wrapping_neg()
    }
}

/// Encodes a system call result into `rax`.
#[inline]
pub fn encode(result: Result<u64, Error>) -> u64 {
    match result {
        Ok(v) => v.min(MAX_VALUE),
        Err(e) => e.to_raw(),
    }
}

/// Decodes `rax` after a system call. An error code the ABI does not define
/// decodes as [`Error::InvalidSyscall`].
#[inline]
pub fn decode(rax: u64) -> Result<u64, Error> {
    if rax <= MAX_VALUE {
        Ok(rax)
    } else {
        Err(Error::from_code(rax.wrapping_neg()).unwrap_or(Error::InvalidSyscall))
    }
}

/// Exception vectors delivered to environments.
pub mod vector {
    /// Divide error (#DE).
    pub const DIVIDE_ERROR: u64 = 0;
    /// Breakpoint (#BP, `int3`).
    pub const BREAKPOINT: u64 = 3;
    /// Invalid opcode (#UD).
    pub const INVALID_OPCODE: u64 = 6;
    /// General-protection fault (#GP).
    pub const GENERAL_PROTECTION: u64 = 13;
    /// Page fault (#PF); `fault_addr` is CR2.
    pub const PAGE_FAULT: u64 = 14;
    /// x87 floating-point error (#MF): an unmasked x87 exception (FPU
    /// control word) raised by the next x87 instruction. The x87 state is
    /// left as the fault found it (the handler reads and clears the status
    /// word itself with `fnstsw`/`fnclex`).
    pub const X87_FLOATING_POINT: u64 = 16;
    /// SIMD floating-point exception (#XM): an SSE/AVX instruction raised an
    /// exception unmasked in MXCSR. MXCSR is left as the fault found it (the
    /// flags say which exception; the handler reads it with `stmxcsr`).
    pub const SIMD_FLOATING_POINT: u64 = 19;
    /// Not an exception: one of the environment's time slots starts (the
    /// prologue upcall); the frame is the context the vCPU left off in.
    pub const SLOT_START: u64 = 0x100;
    /// Not an exception: the vCPU's time slot is over (the epilogue
    /// upcall); the frame is the interrupted context. Yield within the
    /// grace period.
    pub const SLOT_END: u64 = 0x101;
    /// Not an exception: signal bits were posted ([`crate::signal`]); the
    /// frame is the interrupted context and `error_code` holds the bits
    /// taken (now no longer pending).
    pub const SIGNAL: u64 = 0x102;
}

/// Signals between environments: a word of pending bits per environment,
/// an upcall that interrupts a running vCPU.
///
/// [`Syscall::SignalPost`] ORs bits into the target's **pending word**. The
/// kernel gives the bits no meaning (a library OS maps them, e.g. bit
/// `n - 1` for POSIX signal `n`). Posts coalesce: a bit already pending is
/// not posted twice, and a flood of posts costs the poster one system call
/// each and the target nothing more than one pending word.
///
/// **Delivery.** An environment with a signal entry ([`Syscall::SignalEntry`])
/// and upcalls unmasked gets, when its pending word is non-zero, one
/// upcall on one of its vCPUs on the registered cores: the kernel takes
/// the whole word (it becomes 0), **masks** further signal upcalls, and
/// writes an [`crate::UpcallFrame`] with vector [`crate::vector::SIGNAL`]
/// and `error_code` = the bits on that core's exception stack, exactly as
/// for an exception (below the interrupted `rsp` and a 128-byte red zone
/// if that is already on the exception stack, else at its top), and enters
/// the entry with `rsp` = `rdi` = the frame. The poster's core interrupts a
/// vCPU running on another core (one IPI per transition of the pending
/// word from 0, while upcalls are unmasked); a vCPU that is ready but not
/// running gets the upcall when it next runs; one in a blocking call
/// (`SleepOn`, a blocking `RingEnter`) is woken and the call returns
/// [`crate::Error::Interrupted`] (the upcall is then delivered on the way
/// out). A vCPU inside a protected control transfer gets no signal upcall
/// until the call ends (the code running is the callee's). If the frame
/// cannot be written (no exception stack, or not mapped writable) the
/// environment is killed with a one-line reason, as for an exception.
///
/// **Re-entrancy.** Upcalls stay masked until the handler unmasks them:
/// [`signal::UNMASK`] alone, or [`signal::RESUME`], which unmasks and resumes a frame in
/// one step (bits pending by then are delivered at once, on top of the
/// resumed context), so that no post is lost between the two.
///
/// An environment without an entry only accumulates bits (it can poll
/// them with [`signal::TAKE`]); the transition of its word from 0 posts one
/// [`crate::event::SIGNAL`] event, so its event queue sees at most one per
/// take however many posts arrive.
pub mod signal {
    /// [`crate::Syscall::SignalCtl`] `(TAKE, 0)` → the pending bits, now 0.
    pub const TAKE: u64 = 0;
    /// `(MASK, 0)` → 0: no signal upcalls until unmasked (bits accumulate).
    pub const MASK: u64 = 1;
    /// `(UNMASK, 0)` → 0: signal upcalls again (pending bits come at once).
    pub const UNMASK: u64 = 2;
    /// `(RESUME, frame_ptr)` → does not return on success: unmasks and
    /// resumes the [`crate::UpcallFrame`] at `frame_ptr` as
    /// [`crate::Syscall::ExceptionResume`] does.
    pub const RESUME: u64 = 3;
}

/// The state of a vCPU at an exception, as written on its exception stack.
///
/// `ExceptionResume` restores every field but `vector`, `error_code` and
/// `fault_addr`. The kernel only accepts a `rip` in the user half and keeps
/// the privileged bits of `rflags` (IOPL, IF, ...) to itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct UpcallFrame {
    /// Exception vector (see [`vector`]).
    pub vector: u64,
    /// The CPU's error code (0 where it pushes none).
    pub error_code: u64,
    /// For page faults, the faulting address (CR2); else 0.
    pub fault_addr: u64,
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl UpcallFrame {
    /// Number of 64-bit words in the frame.
    pub const WORDS: usize = 21;

    /// The frame as words, in field (memory) order.
    pub const fn to_words(&self) -> [u64; Self::WORDS] {
        [
            self.vector,
            self.error_code,
            self.fault_addr,
            self.rip,
            self.rsp,
            self.rflags,
            self.rax,
            self.rbx,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.rbp,
            self.r8,
            self.r9,
            self.r10,
            self.r11,
            self.r12,
            self.r13,
            self.r14,
            self.r15,
        ]
    }

    /// The frame from words in field (memory) order.
    pub const fn from_words(w: [u64; Self::WORDS]) -> UpcallFrame {
        let [
            vector,
            error_code,
            fault_addr,
            rip,
            rsp,
            rflags,
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rbp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
        ] = w;
        UpcallFrame {
            vector,
            error_code,
            fault_addr,
            rip,
            rsp,
            rflags,
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rbp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
        }
    }
}

/// Size of [`UpcallFrame`] in bytes.
pub const UPCALL_FRAME_SIZE: u64 = core::mem::size_of::<UpcallFrame>() as u64;

/// Bits of page-fault error codes.
pub mod pf {
    /// The page was present (a protection violation, not a missing page).
    pub const PRESENT: u64 = 1;
    /// The access was a write.
    pub const WRITE: u64 = 2;
    /// The access came from ring 3.
    pub const USER: u64 = 4;
    /// The access was an instruction fetch.
    pub const FETCH: u64 = 16;
}

/// The environment-wide read-only page at [`INFO_VA`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InfoPage {
    /// [`ABI_VERSION`] of the kernel.
    pub abi_version: u32,
    /// This environment's id.
    pub env_id: u32,
    /// TSC ticks per second.
    pub tsc_hz: u64,
    /// Cores online.
    pub cores: u32,
    /// Frame quota of this environment (lowered by one per frame paid to
    /// a repossession demand, see [`repossess`]).
    pub frame_quota: u32,
    /// Notifications and asynchronous calls posted to this environment
    /// (the ring's `Notify` operation, [`Syscall::Acall`]); a predicate can
    /// wait for it to change.
    pub notifications: u64,
    /// Bit `c` set: core `c` runs environments' vCPUs. In `test` and `bench`
    /// modes core 0 runs the kernel's harness and takes no vCPUs;
    /// [`Syscall::VcpuStart`] on a core outside this set fails with
    /// [`Error::NoSuchCore`].
    pub user_cores: u64,
    /// Argument word the environment was started with.
    pub start_arg: u64,
    /// The application's name (NUL-padded).
    pub name: [u8; NAME_MAX as usize],
    /// Times the kernel stopped one of this environment's vCPUs by force
    /// because it did not yield within the grace period after its epilogue
    /// (the abort protocol; see [`schedule`]).
    pub overruns: u64,
    /// The [`event::EventQueue`]'s tail, mirrored here so that a predicate
    /// (`LoadInfo`) can wait for new events.
    pub event_tail: u64,
    /// Slots in each core's time vector.
    pub slots_per_core: u32,
    /// Length of a slot, in microseconds.
    pub slot_us: u32,
    /// The grace period after an epilogue upcall, in microseconds.
    pub grace_us: u32,
    /// Slots per core that nobody may own (they always run the default
    /// round-robin).
    pub slots_reserved: u32,
    /// Changes whenever console input becomes readable by this
    /// environment ([`Syscall::ConsoleRead`]): it grows by the number of
    /// bytes that arrive while it is the console reader, and by one when the
    /// console is handed to it; 0 for an environment never the reader. A
    /// predicate (`LoadInfo`) waits for it to change; the receive interrupt
    /// wakes the reader's sleeping vCPUs.
    pub console_input: u64,
}

/// The per-core read-only page at [`vcpu_page_va`]`(core)`. A vCPU's user
/// GS base points at its own page, so `gs:[0]` is the core it runs on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuPage {
    /// The core this page describes.
    pub core: u64,
    /// This environment's id.
    pub env_id: u64,
    /// TSC ticks this environment's vCPU has run on this core (including
    /// protected control transfers it made).
    pub run_tsc: u64,
    /// Slots of this environment's that started on this core.
    pub slots_started: u64,
    /// Epilogue upcalls delivered on this core.
    pub epilogues: u64,
    /// Of those, how many ended by force (the abort protocol).
    pub overruns: u64,
    /// [`Syscall::SetSyscallRedirect`]: the program's `rip` (the address
    /// after its `syscall`, = `rcx`) at the last redirected `syscall` on this
    /// core.
    pub redirect_rip: u64,
    /// The program's `rflags` (= `r11`) at that `syscall`.
    pub redirect_rflags: u64,
    /// The program's `rsp` at that `syscall`.
    pub redirect_rsp: u64,
    /// TSC ticks this environment's vCPU on this core waited runnable in
    /// the core's ready queue before it ran ([`Syscall::QueueDelay`]).
    pub queue_tsc: u64,
    /// How many of those waits ended (the vCPU ran): `queue_tsc /
    /// queue_waits` is the mean queueing delay.
    pub queue_waits: u64,
}

/// The time vectors (the CPU resource), read-only at [`SCHEDULE_VA`].
///
/// Each core runs a vector of `slots_per_core` slots of `slot_us`
/// microseconds in a cycle. A slot is owned by one environment or by nobody
/// (owner 0). At the start of a slot the core runs the owner's vCPU on that
/// core if it can run; otherwise, and in unowned slots, the *default
/// round-robin* among the runnable vCPUs whose environment asked for default
/// time on that core ([`crate::Syscall::SetDefaultTime`]), or nothing
/// (`hlt`).
///
/// **Slot end (visible revocation).** When a slot's time is up and its
/// owner's vCPU is running with an epilogue registered, the kernel upcalls
/// the epilogue (vector [`crate::vector::SLOT_END`]) and gives it `grace_us`
/// microseconds to yield (any of `Yield`, `YieldTo`, `SleepOn`, a blocking
/// `RingEnter`, `VcpuExit`). Without an epilogue the vCPU is preempted.
///
/// **Abort protocol.** A vCPU still running when the grace period ends is
/// stopped by force: its registers are saved as they are (it resumes there
/// later), `overruns` is counted in its [`crate::VcpuPage`] and
/// [`crate::InfoPage`], an [`crate::event::OVERRUN`] event is posted, and
/// the penalty applies: **its next slot on that core is forfeited** (run as
/// an unowned slot). Every slot lasts its full length from the moment it
/// really starts, so an overrun never shortens another environment's slot.
///
/// A vCPU inside a protected control transfer at its slot's end is preempted
/// without an epilogue (the code running is not the slot owner's).
pub mod schedule {
    use super::MAX_CORES;

    /// The most slots in a core's time vector.
    pub const MAX_SLOTS: usize = 64;
    /// [`crate::Syscall::SlotAlloc`]'s "any free slots".
    pub const ANY_SLOT: u64 = u64::MAX;

    /// One core's time vector.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct CoreSchedule {
        /// Index of the slot running now.
        pub current: u32,
        /// Slots in use (`slots_per_core`).
        pub len: u32,
        /// Slot starts on this core so far.
        pub generation: u64,
        /// Owner of each slot (an environment id; 0: nobody).
        pub owner: [u32; MAX_SLOTS],
    }

    /// Every core's time vector.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct Schedule {
        /// Slots per core.
        pub slots_per_core: u32,
        /// Slot length in microseconds.
        pub slot_us: u32,
        /// Grace period in microseconds.
        pub grace_us: u32,
        /// Slots per core nobody may own.
        pub slots_reserved: u32,
        /// Cores online (entries of `core` in use).
        pub cores: u32,
        /// Must be 0.
        pub reserved: [u32; 11],
        /// Core `c`'s vector.
        pub core: [CoreSchedule; MAX_CORES],
    }
}

/// Memory as a revocable resource: the repossession protocol.
///
/// Visible revocation for memory, as [`schedule`] does for time. The kernel
/// (an operator's `memrevoke=APP:N:MS` on the command line, or a kernel
/// test) asks an environment for `n` data frames back by a deadline: a
/// [`crate::event::REPOSSESS_REQUEST`] event `[n, deadline_tsc]`. From then
/// on its **debt** is `n` (queried with [`crate::Syscall::RepossessStatus`])
/// and every data frame it frees ([`crate::Syscall::FrameFree`]) pays one
/// frame of it and lowers its quota by one (as [`crate::InfoPage`]'s
/// `frame_quota` shows), so that memory it returns is not simply allocated
/// again. The libOS chooses which frames to give.
/// When the debt reaches 0 a [`crate::event::REPOSSESSED`] event
/// `[SETTLED, taken]` is posted. A second demand while one is open is
/// refused (to the kernel's caller); the environment sees one at a time.
///
/// **Repossession list.** Beforehand the environment publishes an ordered
/// list of frame numbers it is willing to lose
/// ([`crate::Syscall::RepossessList`]). The kernel keeps only the pointer
/// and the length, and reads the words through checked user copies when it
/// repossesses: the list may change at any time, the kernel uses what it
/// reads. The list should hold frames with nothing precious in them (zero
/// pages first, then clean, least recently used ones).
///
/// **Past the deadline** the kernel takes the rest of the debt by force,
/// walking the list from its start: an entry naming a data frame the
/// environment owns and that no registered ring pins is taken — every
/// mapping of it removed (the environment's and its grantees', on every
/// core), its grants ended, the frame returned to the pool, the quota
/// lowered by one — and a [`crate::event::REPOSSESSED`] `[frame, index]`
/// is posted. Every other entry (another environment's frame, a free or
/// kernel frame, a page-table frame, a pinned ring frame, a duplicate of
/// one already taken, a number out of range) is skipped without effect.
/// The contents of a taken frame are lost: a page of a lazily filled
/// region faults in again as zero.
///
/// **Bounded steps.** The kernel does this work at scheduling decisions
/// and in idle loops, at most [`repossess::FORCE_ENTRIES_PER_STEP`] list
/// entries and [`repossess::FORCE_FRAMES_PER_STEP`] frames per step (a
/// frame mapped many times takes several steps, at most 64 mappings each
/// with one shootdown round), never waiting for the environment's address-space lock (a busy
/// lock puts the step off), so the environment keeps running meanwhile and
/// no core is held for long. The deadline is noticed at the first
/// scheduling decision after it (within a slot).
///
/// **A list that does not cover the debt** (too short, unreadable or
/// unmapped where the kernel reads, entries it cannot use) ends the
/// environment: it is killed with the line
/// `repossession: list covered K of N frames owed` once the walk has
/// reached the end of the list. A frame the environment frees meanwhile
/// still pays, so a libOS that answers late but before the walk ends is
/// not killed. An environment that ends during a repossession is
/// reclaimed as usual; the demand ends with it.
pub mod repossess {
    /// The most entries in a repossession list.
    pub const LIST_MAX: u64 = 65536;
    /// The most pages one [`crate::Syscall::PageAccess`] scans.
    pub const ACCESS_SCAN_MAX: u64 = 512;
    /// List entries the kernel examines per step of a forced repossession.
    pub const FORCE_ENTRIES_PER_STEP: u64 = 32;
    /// Frames the kernel takes per step of a forced repossession.
    pub const FORCE_FRAMES_PER_STEP: u64 = 4;
    /// `data[0]` of the [`crate::event::REPOSSESSED`] event that ends a
    /// demand.
    pub const SETTLED: u64 = u64::MAX;
}

/// The per-environment event queue, read-only at [`crate::EVENTS_VA`].
///
/// The kernel appends; the environment reads without a system call. Entry
/// `i` (counting from 0, free-running) lives at `entries[i % CAPACITY]` and
/// is valid when its `seq` reads `i + 1` both before and after the fields
/// are read (the kernel writes `seq = 0`, the fields, then `seq = i + 1`,
/// then `tail = i + 1`, all with release ordering). The kernel never waits
/// for the reader: an entry more than [`CAPACITY`] behind `tail` has been
/// overwritten, which the reader sees as a larger `seq` and counts as lost.
/// `InfoPage::event_tail` mirrors `tail` for predicates.
///
/// [`CAPACITY`]: crate::event::CAPACITY
pub mod event {
    /// Entries in the queue.
    pub const CAPACITY: u64 = 64;

    /// [`crate::Syscall::Acall`]: `data` = the two words.
    pub const CALL: u32 = 1;
    /// The ring's `Notify` operation: `data` = `[0, 0]`.
    pub const NOTIFY: u32 = 2;
    /// A vCPU was stopped by the abort protocol: `data` = `[core, slot]`.
    pub const OVERRUN: u32 = 3;
    /// The owner revoked a grant: `data` = `[frame, 0]`; the mappings are
    /// already gone.
    pub const GRANT_REVOKED: u32 = 4;
    /// A child of this environment was reclaimed: `data` = `[handle,
    /// status]` (see [`crate::Syscall::ChildStatus`]).
    pub const CHILD_EXIT: u32 = 5;
    /// The kernel asks for memory back ([`crate::repossess`]): `data` =
    /// `[n, deadline_tsc]`: free `n` data frames before the TSC reaches
    /// `deadline_tsc`; the quota shrinks by one per frame paid.
    pub const REPOSSESS_REQUEST: u32 = 7;
    /// Repossession news ([`crate::repossess`]): `data` = `[frame, index]`
    /// for a frame taken by force (`index` its position in the list), or
    /// `[SETTLED, taken]` once the demand is paid (`taken` of its frames
    /// by force, the others freed by the environment).
    pub const REPOSSESSED: u32 = 8;
    /// Signal bits became pending for an environment without a signal
    /// entry ([`crate::signal`]): `data` = `[bits, 0]`, `source` the
    /// poster. One per transition of the pending word from 0.
    pub const SIGNAL: u32 = 9;

    /// One event.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Event {
        /// Index + 1 of the event in this entry (0 while being written).
        pub seq: u64,
        /// What happened (`CALL`, `NOTIFY`, ...).
        pub kind: u32,
        /// The environment that caused it (0: the kernel).
        pub source: u32,
        /// Kind-specific words.
        pub data: [u64; 2],
    }

    /// The queue page.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct EventQueue {
        /// Events posted so far.
        pub tail: u64,
        /// Must be 0.
        pub reserved: [u64; 7],
        /// The ring of entries.
        pub entries: [Event; CAPACITY as usize],
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn id_newtypes() {
        assert_eq!(EnvId::from_word(u64::from(u32::MAX)), Some(EnvId(u32::MAX)));
        assert_eq!(EnvId::from_word(u64::from(u32::MAX) + 1), None);
        assert!(EnvId::NONE.is_none() && EnvId::default() == EnvId::NONE);
        assert_eq!(FrameNumber::from_addr(0x5fff), FrameNumber(5));
        assert_eq!(FrameNumber(5).addr(), 0x5000);
        assert_eq!(CoreId::from_word(MAX_CORES as u64 - 1), Some(CoreId::new(MAX_CORES - 1)));
        assert_eq!(CoreId::from_word(MAX_CORES as u64), None);
        assert_eq!(CoreId::new(3).index(), 3);
        assert_eq!(std::format!("{} {} {}", EnvId(7), FrameNumber(8), CoreId(9)), "7 8 9");
    }

    #[test]
    fn syscall_numbers_round_trip() {
        for &call in Syscall::ALL {
            assert_eq!(Syscall::from_number(call as u64), Some(call));
        }
        for n in 0..SYSCALL_COUNT {
            let defined = Syscall::ALL.iter().any(|&c| c as u64 == n);
            assert_eq!(Syscall::from_number(n).is_some(), defined, "number {n}");
        }
        assert_eq!(Syscall::from_number(SYSCALL_COUNT), None);
        assert_eq!(Syscall::from_number(u64::MAX), None);
    }

    #[test]
    fn errors_round_trip_through_rax() {
        for &e in Error::ALL {
            assert_eq!(Error::from_code(e as u64), Some(e));
            assert_eq!(decode(encode(Err(e))), Err(e));
        }
        assert_eq!(Error::from_code(0), None);
        assert_eq!(Error::from_code(ERROR_COUNT + 1), None);
        assert_eq!(decode(encode(Ok(42))), Ok(42));
        assert_eq!(decode(MAX_VALUE), Ok(MAX_VALUE));
        assert_eq!(decode(u64::MAX - 100), Err(Error::InvalidSyscall));
    }

    #[test]
    fn rights_and_layout() {
        assert!(Rights::RWX.contains(Rights::RW));
        assert!(!Rights::READ.contains(Rights::WRITE));
        assert!(!Rights(8).is_valid());
        assert!(in_info_region(INFO_VA) && in_info_region(vcpu_page_va(MAX_CORES - 1)));
        assert!(!in_info_region(INFO_VA + INFO_REGION_SIZE));
        assert_eq!(UPCALL_FRAME_SIZE, UpcallFrame::WORDS as u64 * 8);
        let words: [u64; UpcallFrame::WORDS] = core::array::from_fn(|i| i as u64 * 3 + 1);
        let frame = UpcallFrame::from_words(words);
        assert_eq!((frame.vector, frame.rip, frame.r15), (1, 10, 61));
        assert_eq!(frame.to_words(), words);
    }

    #[test]
    fn sq_entry_words_are_its_memory_layout() {
        use ring::SqEntry;
        let e = SqEntry {
            opcode: 0x11,
            flags: 0x22,
            reserved: [0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
            user_data: 9,
            args: [1, 2, 3, 4, 5, 6],
        };
        let words = e.to_words();
        assert_eq!(words, [0x8877_6655_4433_2211, 9, 1, 2, 3, 4, 5, 6]);
        assert_eq!(words.len() * 8, core::mem::size_of::<SqEntry>());
        assert_eq!(core::mem::offset_of!(SqEntry, user_data), 8);
        assert_eq!(core::mem::offset_of!(SqEntry, args), 16);
        let args = [words[2], words[3], words[4], words[5], words[6], words[7]];
        assert_eq!(SqEntry::from_parts(words[0], words[1], args), e);
    }
}

/// The shared submission/completion ring (io_uring-like).
///
/// One ring per vCPU, in memory the environment owns and registers once;
/// the kernel reads submissions and writes completions through its own
/// mapping of those frames, which stay pinned (not freeable) while
/// registered.
///
/// ```text
/// base + 0                 RingHeader (one cache line, see below)
/// base + SQ_OFFSET         sq_entries × SqEntry (64 bytes each)
/// base + cq_offset(sq)     cq_entries × CqEntry (16 bytes each)
/// ```
///
/// Both sizes are powers of two. Indices are free-running `u32` counters;
/// an entry's slot is `index & (entries - 1)`.
///
/// Ordering: the libOS writes submission entries, then stores `sq_tail`
/// with release; the kernel loads `sq_tail` with acquire, copies each entry
/// once before looking at it, and stores `sq_head` with release after
/// consuming. The kernel writes completion entries, then stores `cq_tail`
/// with release; the libOS loads `cq_tail` with acquire, reads them, and
/// stores `cq_head` with release. The kernel never trusts the header: a
/// `sq_tail` more than `sq_entries` ahead of `sq_head` is an error (nothing
/// is consumed, `RING_ERR_BAD_INDEX` is raised), and a full completion queue
/// stops consumption (`overflow` is incremented; nothing is lost: the
/// unconsumed submissions stay in the queue).
pub mod ring {
    use super::PAGE_SIZE;

    /// Offset of the submission entries from the ring's base.
    pub const SQ_OFFSET: u64 = 64;
    /// The most submission or completion entries in a ring.
    pub const MAX_ENTRIES: u32 = 4096;

    /// Offset of the completion entries for a ring with `sq_entries`.
    pub const fn cq_offset(sq_entries: u32) -> u64 {
        SQ_OFFSET + sq_entries as u64 * core::mem::size_of::<SqEntry>() as u64
    }

    /// Bytes (whole pages) a ring with these sizes occupies.
    pub const fn ring_bytes(sq_entries: u32, cq_entries: u32) -> u64 {
        let bytes =
            cq_offset(sq_entries) + cq_entries as u64 * core::mem::size_of::<CqEntry>() as u64;
        bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE
    }

    /// The ring's header, at its base.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct RingHeader {
        /// Next submission the kernel will consume (kernel writes).
        pub sq_head: u32,
        /// One past the last submission (libOS writes).
        pub sq_tail: u32,
        /// Next completion the libOS will read (libOS writes).
        pub cq_head: u32,
        /// One past the last completion (kernel writes).
        pub cq_tail: u32,
        /// Number of submission entries (kernel writes at registration).
        pub sq_entries: u32,
        /// Number of completion entries (kernel writes at registration).
        pub cq_entries: u32,
        /// Times the kernel stopped consuming because the completion queue
        /// was full (kernel writes).
        pub overflow: u32,
        /// `RING_ERR_*` bits the kernel raised (kernel writes).
        pub errors: u32,
    }

    /// The header's `sq_tail` was more than `sq_entries` past `sq_head`.
    pub const RING_ERR_BAD_INDEX: u32 = 1;

    /// One submission.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SqEntry {
        /// An [`Op`] number.
        pub opcode: u8,
        /// `SQE_*` flags.
        pub flags: u8,
        /// Must be 0.
        pub reserved: [u8; 6],
        /// Echoed in the completion.
        pub user_data: u64,
        /// Operation arguments (see [`Op`]).
        pub args: [u64; 6],
    }

    impl SqEntry {
        /// Number of 64-bit words in an entry.
        pub const WORDS: usize = 8;

        /// The entry's first word: `opcode`, `flags` and `reserved` as they
        /// lie in memory (little-endian: `opcode` is the low byte).
        pub const fn head_word(&self) -> u64 {
            let r = self.reserved;
            u64::from_le_bytes([self.opcode, self.flags, r[0], r[1], r[2], r[3], r[4], r[5]])
        }

        /// The entry as words, in memory order.
        pub const fn to_words(&self) -> [u64; Self::WORDS] {
            let a = self.args;
            [self.head_word(), self.user_data, a[0], a[1], a[2], a[3], a[4], a[5]]
        }

        /// The entry from its first word, `user_data` and arguments (memory
        /// order).
        pub const fn from_parts(head: u64, user_data: u64, args: [u64; 6]) -> SqEntry {
            let h = head.to_le_bytes();
            SqEntry {
                opcode: h[0],
                flags: h[1],
                reserved: [h[2], h[3], h[4], h[5], h[6], h[7]],
                user_data,
                args,
            }
        }
    }

    /// One completion.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct CqEntry {
        /// The submission's `user_data`.
        pub user_data: u64,
        /// The result, encoded like a system call's `rax` ([`crate::decode`]).
        pub result: u64,
    }

    /// If this entry fails, every following entry of its chain (entries
    /// carrying `SQE_LINK`, up to and including the first without it)
    /// completes with [`crate::Error::Canceled`] instead of running.
    pub const SQE_LINK: u8 = 1;
    /// All defined flag bits.
    pub const SQE_FLAGS: u8 = SQE_LINK;

    numbered! {
    /// Ring operations. Arguments are those of the system call of the same
    /// name unless stated.
    pub enum Op: u8 {
        /// `()` → 0. Its argument words are ignored (never read).
        Nop = 0,
        /// `(ptr, len, stream)`, as `Syscall::ConsoleWrite`.
        ConsoleWrite = 1,
        /// `(frame)`, as `Syscall::FrameAlloc`.
        FrameAlloc = 2,
        /// `(frame)`.
        FrameFree = 3,
        /// `(frame, va, rights)`.
        Map = 4,
        /// `(va)`.
        Unmap = 5,
        /// `(va, rights)`.
        Protect = 6,
        /// `(frame, grantee, rights)`.
        FrameGrant = 7,
        /// `(frame, grantee)`.
        FrameRevoke = 8,
        /// `(tsc_deadline)` → 0 once the TSC has reached the deadline.
        Timer = 9,
        /// `(env)` → 0: increments `InfoPage::notifications` of `env`,
        /// posts a [`crate::event::NOTIFY`] event and wakes its sleeping
        /// vCPUs. [`crate::Error::Refused`] if `env` does not accept the
        /// caller (`Syscall::IpcAccept`).
        Notify = 10,
        /// `(core, index, count)`, as `Syscall::SlotAlloc`.
        SlotAlloc = 11,
    }
    }

    /// Number of defined ops.
    pub const OP_COUNT: u8 = Op::ALL.len() as u8;

    const _: () = assert!(Op::ALL[0] as u8 == 0);

    impl Op {
        /// The op with number `n`, if defined.
        pub fn from_number(n: u8) -> Option<Op> {
            Self::from_value(u64::from(n))
        }
    }
}

/// Wakeup predicates: the only way a vCPU blocks.
///
/// A predicate is a short program of [`Insn`]s over eight 64-bit registers.
/// The kernel verifies it once when it is installed and refuses it
/// (`InvalidArgument`, or `BadAddress` for a load it cannot prove safe)
/// unless:
/// * it has 1 to [`MAX_INSNS`] instructions, every opcode and register is
///   valid and reserved fields are 0;
/// * every jump goes strictly forward and lands inside the program or just
///   past its end (so it terminates after at most `len` steps);
/// * every `LoadUser` address is 8-byte aligned and lies in a page the
///   environment has mapped readable at install time (the kernel
///   re-translates at each evaluation: a page unmapped since reads as
///   "wake up");
/// * every `LoadInfo` offset is 8-byte aligned and inside [`InfoPage`].
///
/// The program's value is the register named by the `Ret` it reaches (or
/// `r0` if it runs off the end); non-zero means "wake up". The kernel
/// evaluates it when it considers the vCPU for the CPU and whenever an event
/// (a notification, a completion) concerns the environment, so a condition
/// that becomes true between a check and the sleep is never missed.
///
/// [`Insn`]: crate::predicate::Insn
/// [`MAX_INSNS`]: crate::predicate::MAX_INSNS
pub mod predicate {
    /// The most instructions in a predicate.
    pub const MAX_INSNS: usize = 64;
    /// Number of registers.
    pub const REGS: u8 = 8;

    /// One instruction (16 bytes).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Insn {
        /// A [`PredOp`] number.
        pub op: u8,
        /// Destination register.
        pub dst: u8,
        /// First source register.
        pub a: u8,
        /// Second source register.
        pub b: u8,
        /// Must be 0.
        pub reserved: u32,
        /// Immediate: a constant, an address, an offset or a jump distance.
        pub imm: u64,
    }

    numbered! {
    /// Predicate opcodes.
    pub enum PredOp: u8 {
        /// `dst = imm`.
        Const = 0,
        /// `dst = *(u64 *)imm`, a word of the environment's memory.
        LoadUser = 1,
        /// `dst = word at offset imm of the environment's InfoPage`.
        LoadInfo = 2,
        /// `dst = TSC`.
        Tsc = 3,
        /// `dst = (a == b)`.
        Eq = 4,
        /// `dst = (a != b)`.
        Ne = 5,
        /// `dst = (a < b)`, unsigned.
        Lt = 6,
        /// `dst = (a <= b)`, unsigned.
        Le = 7,
        /// `dst = (a != 0 && b != 0)`.
        And = 8,
        /// `dst = (a != 0 || b != 0)`.
        Or = 9,
        /// `dst = a + b` (wrapping).
        Add = 10,
        /// `dst = !(a != 0)`.
        Not = 11,
        /// Skip `imm` (≥ 1) instructions forward if `a == 0`.
        JumpIfZero = 12,
        /// Skip `imm` (≥ 1) instructions forward.
        Jump = 13,
        /// Stop; the value is register `a`.
        Ret = 14,
    }
    }

    /// Number of defined opcodes.
    pub const PRED_OP_COUNT: u8 = PredOp::ALL.len() as u8;

    impl PredOp {
        /// The opcode with number `n`, if defined.
        pub fn from_number(n: u8) -> Option<PredOp> {
            Self::from_value(u64::from(n))
        }
    }

    const _: () = assert!(PredOp::ALL[0] as u8 == 0);
}
