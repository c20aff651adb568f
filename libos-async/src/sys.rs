//! The machine boundary, calls out: the `syscall` instruction, the pages
//! the kernel writes, and single instructions for tests.
//!
//! - raw `syscall` stubs ([`syscall0`] .. [`syscall6`], [`syscall_raw`]) and
//!   one typed wrapper per [`abi::Syscall`];
//! - reads of the kernel-provided pages ([`info`], [`notifications`],
//!   [`core_id`], [`vcpu_page`], [`core_schedule`], the event queue);
//! - [`rdtsc`], and [`probe`]: single instructions that tests use to
//!   provoke faults.
//!
//! The way in — the entry points the kernel jumps to (`_start`, the
//! secondary-vCPU trampoline, the exception-upcall and IPC stubs) and the
//! user-space resumption of an upcall frame — is in
//! [`entry`](mod@crate::entry); this module calls none of the runtime (only
//! [`vcpu_exit`] tells [`crate::ring`] that this vCPU's ring registration
//! ends). Nearly every function here holds an `unsafe` block (inline
//! assembly or a read of a kernel page), each with its reason.
//!
//! # Why the system calls are safe functions
//!
//! The kernel never writes user memory except a registered ring: every
//! other call only reads from user pointers (and the kernel checks them),
//! so passing any value cannot make the kernel scribble on Rust objects.
//! [`ring_setup`] is the exception — from then on the kernel writes the
//! pages it names — so it is an `unsafe fn`; [`crate::ring::Ring`] is its
//! safe door (it registers only pages of [`crate::layout::RINGS_BASE`],
//! where no Rust object lives). What calls *can* do to this program
//! is change its address space — unmap its own stack, map another frame
//! under a live object, resume an arbitrary [`UpcallFrame`]. An exokernel
//! hands that power to the library OS on purpose; like `/proc/self/mem` in
//! `std`, it is outside what Rust's type system can police, and the libOS's
//! own layout ([`crate::layout`]) is what keeps its memory out of harm's
//! way. Hostile tests pass arbitrary values through [`syscall_raw`].

use core::arch::asm;

use abi::predicate::Insn;
use abi::{Error, FrameHolder, InfoPage, Rights, Syscall, UpcallFrame};

// ---------------------------------------------------------------------------
// Raw system calls.

/// System call `n` without arguments; returns `rax`.
#[inline(always)]
pub fn syscall0(n: u64) -> u64 {
    let ret: u64;
    // SAFETY: `syscall` enters the kernel, which (per the ABI) clobbers only
    // rax, rcx and r11 and never writes user memory; no stack is used.
    unsafe {
        asm!("syscall", inlateout("rax") n => ret, lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    ret
}

/// System call `n` with one argument; returns `rax`.
#[inline(always)]
pub fn syscall1(n: u64, a0: u64) -> u64 {
    let ret: u64;
    // SAFETY: as in `syscall0`; the argument is passed in rdi.
    unsafe {
        asm!("syscall", inlateout("rax") n => ret, in("rdi") a0,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// System call `n` with two arguments; returns `rax`.
#[inline(always)]
pub fn syscall2(n: u64, a0: u64, a1: u64) -> u64 {
    let ret: u64;
    // SAFETY: as in `syscall0`; arguments in rdi, rsi.
    unsafe {
        asm!("syscall", inlateout("rax") n => ret, in("rdi") a0, in("rsi") a1,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// System call `n` with three arguments; returns `rax`.
#[inline(always)]
pub fn syscall3(n: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    let ret: u64;
    // SAFETY: as in `syscall0`; arguments in rdi, rsi, rdx.
    unsafe {
        asm!("syscall", inlateout("rax") n => ret, in("rdi") a0, in("rsi") a1, in("rdx") a2,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// System call `n` with four arguments; returns `rax`.
#[inline(always)]
pub fn syscall4(n: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let ret: u64;
    // SAFETY: as in `syscall0`; arguments in rdi, rsi, rdx, r10.
    unsafe {
        asm!("syscall", inlateout("rax") n => ret, in("rdi") a0, in("rsi") a1, in("rdx") a2,
             in("r10") a3, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// System call `n` with five arguments; returns `rax`.
#[inline(always)]
pub fn syscall5(n: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> u64 {
    let ret: u64;
    // SAFETY: as in `syscall0`; arguments in rdi, rsi, rdx, r10, r8.
    unsafe {
        asm!("syscall", inlateout("rax") n => ret, in("rdi") a0, in("rsi") a1, in("rdx") a2,
             in("r10") a3, in("r8") a4, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// System call `n` with six arguments; returns `rax`.
#[inline(always)]
pub fn syscall6(n: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> u64 {
    let ret: u64;
    // SAFETY: as in `syscall0`; arguments in rdi, rsi, rdx, r10, r8, r9.
    unsafe {
        asm!("syscall", inlateout("rax") n => ret, in("rdi") a0, in("rsi") a1, in("rdx") a2,
             in("r10") a3, in("r8") a4, in("r9") a5, lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    ret
}

/// Any system call number with any six argument words; returns raw `rax`.
/// For hostile tests and fuzzing (see the module documentation). Every
/// argument register counts as clobbered: a restartable call (see
/// [`unmap_range`]) may advance them.
#[inline(never)]
pub fn syscall_raw(n: u64, args: [u64; 6]) -> u64 {
    let ret: u64;
    // SAFETY: as in `syscall0`; every argument register is declared
    // clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") n => ret, inlateout("rdi") args[0] => _,
             inlateout("rsi") args[1] => _, inlateout("rdx") args[2] => _,
             in("r10") args[3], in("r8") args[4], in("r9") args[5], lateout("rcx") _,
             lateout("r11") _, options(nostack));
    }
    ret
}

// ---------------------------------------------------------------------------
// Typed wrappers, one per `abi::Syscall`.

/// `Null`: does nothing.
pub fn null() -> Result<u64, Error> {
    abi::decode(syscall0(Syscall::Null as u64))
}

/// `ConsoleWrite` to the kernel console (stream 0): writes `bytes` (at
/// most [`abi::CONSOLE_WRITE_MAX`]).
pub fn console_write(bytes: &[u8]) -> Result<u64, Error> {
    console_write_to(abi::ConsoleStream::Kernel, bytes)
}

/// `ConsoleWrite` to `stream`: a program's stdout or stderr
/// ([`abi::ConsoleStream`]), or the kernel console. At most
/// [`abi::CONSOLE_WRITE_MAX`] bytes, any bytes on streams 1 and 2.
pub fn console_write_to(stream: abi::ConsoleStream, bytes: &[u8]) -> Result<u64, Error> {
    abi::decode(syscall3(
        Syscall::ConsoleWrite as u64,
        bytes.as_ptr() as u64,
        bytes.len() as u64,
        stream as u64,
    ))
}

/// `Exit`: ends the environment with `code`.
pub fn exit(code: u64) -> ! {
    loop {
        syscall1(Syscall::Exit as u64, code);
    }
}

/// `Yield`: gives up the rest of this vCPU's time slice.
pub fn yield_now() -> Result<u64, Error> {
    abi::decode(syscall0(Syscall::Yield as u64))
}

/// `FrameAlloc`: a zeroed frame, `Some(n)` for exactly frame `n`, `None`
/// for any. Returns the frame number.
pub fn frame_alloc(frame: Option<u64>) -> Result<u64, Error> {
    abi::decode(syscall1(Syscall::FrameAlloc as u64, frame.unwrap_or(abi::ANY_FRAME)))
}

/// `FrameFree`.
pub fn frame_free(frame: u64) -> Result<u64, Error> {
    abi::decode(syscall1(Syscall::FrameFree as u64, frame))
}

/// `FrameGrant`: lets environment `env` map `frame` with at most `rights`.
pub fn frame_grant(frame: u64, env: u64, rights: Rights) -> Result<u64, Error> {
    abi::decode(syscall3(Syscall::FrameGrant as u64, frame, env, rights.0))
}

/// `FrameRevoke`: withdraws the grant of `frame` to `env`.
pub fn frame_revoke(frame: u64, env: u64) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::FrameRevoke as u64, frame, env))
}

/// `Map`: maps `frame` at page `va` with `rights`.
pub fn map(frame: u64, va: u64, rights: Rights) -> Result<u64, Error> {
    abi::decode(syscall3(Syscall::Map as u64, frame, va, rights.0))
}

/// `AllocMap` of one page: a fresh zeroed frame mapped at page `va` with
/// `rights`, in one call; returns the frame number.
#[inline]
pub fn alloc_map_one(va: u64, rights: Rights) -> Result<u64, Error> {
    abi::decode(syscall4(Syscall::AllocMap as u64, va, 1, rights.0, 0))
}

/// `MapBatch`: maps every entry (1 ..= `abi::MAP_BATCH_MAX`), all or
/// nothing; returns how many.
pub fn map_batch(entries: &[abi::MapEntry]) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::MapBatch as u64, entries.as_ptr() as u64, entries.len() as u64))
}

/// `AllocMap`: `out.len()` fresh zeroed frames (1 ..=
/// [`abi::ALLOC_MAP_MAX`]) mapped at `va ..` with `rights`, all or nothing;
/// their numbers land in `out` in page order.
pub fn alloc_map(va: u64, rights: Rights, out: &mut [u64]) -> Result<u64, Error> {
    let (ptr, len) = (out.as_mut_ptr() as u64, out.len() as u64);
    abi::decode(syscall4(Syscall::AllocMap as u64, va, len, rights.0, ptr))
}

/// `Unmap`: removes the mapping of page `va`.
pub fn unmap(va: u64) -> Result<u64, Error> {
    abi::decode(syscall1(Syscall::Unmap as u64, va))
}

/// `UnmapRange`: removes every mapping in `va .. va + pages * 4 KiB` (holes
/// are skipped; `pages` at most [`abi::UNMAP_RANGE_MAX`]), a bounded step
/// with one TLB shootdown round at a time. Returns how many pages were
/// mapped.
///
/// Restartable: between steps the kernel returns to the `syscall`
/// instruction with `rdi`/`rsi` advanced and `rdx` the count so far (which
/// starts at 0), so those registers are outputs too.
pub fn unmap_range(va: u64, pages: u64) -> Result<u64, Error> {
    let ret: u64;
    // SAFETY: as in `syscall0`; the registers the kernel advances between
    // steps are declared clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") Syscall::UnmapRange as u64 => ret,
             inlateout("rdi") va => _, inlateout("rsi") pages => _, inlateout("rdx") 0u64 => _,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    abi::decode(ret)
}

/// `InitrdMap`: maps the whole initrd archive read-only (not executable) at
/// page-aligned `va`, all or nothing, and returns its size in bytes; with
/// `va` 0 only returns the size (0: no initrd).
///
/// Restartable: between steps the kernel returns to the `syscall`
/// instruction with `rsi` the pages mapped so far and `rdx` its undo state
/// (both start at 0), so those registers are outputs too.
pub fn initrd_map(va: u64) -> Result<u64, Error> {
    let ret: u64;
    // SAFETY: as in `syscall0`; the registers the kernel advances between
    // steps are declared clobbered. The mapping is read-only and lands only
    // where nothing was mapped, so no Rust object changes under us.
    unsafe {
        asm!("syscall", inlateout("rax") Syscall::InitrdMap as u64 => ret,
             in("rdi") va, inlateout("rsi") 0u64 => _, inlateout("rdx") 0u64 => _,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    abi::decode(ret)
}

/// `RepossessList`: publishes the repossession list (`abi::repossess`):
/// the kernel keeps the slice's address and length and reads it when it
/// repossesses, so the slice must stay where it is (and mapped) until
/// withdrawn with an empty one.
pub fn repossess_list(list: &[u64]) -> Result<u64, Error> {
    let ptr = if list.is_empty() { 0 } else { list.as_ptr() as u64 };
    abi::decode(syscall2(Syscall::RepossessList as u64, ptr, list.len() as u64))
}

/// `RepossessStatus`: frames still owed to the open repossession demand.
pub fn repossess_status() -> Result<u64, Error> {
    abi::decode(syscall0(Syscall::RepossessStatus as u64))
}

/// `ConsoleRead`: up to `buf.len()` (at most [`abi::CONSOLE_READ_MAX`])
/// bytes of console input, 0 if none is waiting (never blocks: sleep on
/// [`crate::Pred::console_input_ne`]). `PermissionDenied` unless this
/// environment is the console reader.
pub fn console_read(buf: &mut [u8]) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::ConsoleRead as u64, buf.as_mut_ptr() as u64, buf.len() as u64))
}

/// `ConsoleGive`: hands console input to `child`, a child of this
/// environment.
pub fn console_give(child: u64) -> Result<u64, Error> {
    abi::decode(syscall1(Syscall::ConsoleGive as u64, child))
}

/// `InfoPage::console_input`: changes whenever console input becomes
/// readable by this environment.
pub fn console_input() -> u64 {
    // SAFETY: the field lies in the InfoPage, mapped read-only for the
    // environment's whole life, 8-aligned; the kernel updates it atomically
    // and this view is only loaded from.
    unsafe { kernel_word(abi::INFO_VA + core::mem::offset_of!(InfoPage, console_input) as u64) }
}

/// `PageAccess`: reads and clears the accessed (and, with `clear_dirty`,
/// dirty) bits of `pages` (≤ `abi::repossess::ACCESS_SCAN_MAX`) pages from
/// `va` into `bitmap` (two bits per page: accessed, dirty); returns how
/// many were accessed.
pub fn page_access(
    va: u64,
    pages: u64,
    bitmap: &mut [u64],
    clear_dirty: bool,
) -> Result<u64, Error> {
    if (bitmap.len() as u64) < pages.div_ceil(32) {
        return Err(Error::InvalidArgument);
    }
    let ptr = bitmap.as_mut_ptr() as u64;
    abi::decode(syscall4(Syscall::PageAccess as u64, va, pages, ptr, u64::from(clear_dirty)))
}

/// `Protect`: changes the rights of the mapping at `va`.
pub fn protect(va: u64, rights: Rights) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::Protect as u64, va, rights.0))
}

/// `SetExceptionHandler`: raw registration of an entry address and an
/// exception-stack top (`entry` 0 unregisters). Most code wants
/// [`crate::set_exception_handler`], which provides both.
pub fn set_exception_handler(entry: u64, stack_top: u64, stride: u64) -> Result<u64, Error> {
    abi::decode(syscall3(Syscall::SetExceptionHandler as u64, entry, stack_top, stride))
}

/// `SetFsBase`: sets this vCPU's FS base (`fs:`-relative accesses add it;
/// the thread pointer of x86-64 TLS). [`Error::InvalidArgument`] unless it
/// lies in the canonical user half. Safe: Rust code built for this target
/// has no thread-local storage, so nothing here reads `fs:`.
pub fn set_fs_base(base: u64) -> Result<u64, Error> {
    abi::decode(syscall1(Syscall::SetFsBase as u64, base))
}

/// `SetSyscallRedirect`: raw registration of system-call redirection
/// (see [`abi::Syscall::SetSyscallRedirect`]); [`crate::redirect`] has the
/// safe registrations.
///
/// # Safety
///
/// From the return on, every `syscall` of this environment whose return
/// address lies outside `lib_start..lib_end` jumps to `entry` on the
/// handler stack instead of entering the kernel: `lib_start..lib_end` must
/// hold every `syscall` instruction of this program that expects the
/// kernel (this library's stubs are inlined all over the program), and
/// `entry` must be code that follows the handler protocol (return to the
/// recorded `rip` with the recorded `rsp`, registers other than `rax`,
/// `rcx`, `r11` preserved).
pub unsafe fn set_syscall_redirect(
    entry: u64,
    stack_top: u64,
    stride: u64,
    lib_start: u64,
    lib_end: u64,
) -> Result<u64, Error> {
    abi::decode(syscall5(
        Syscall::SetSyscallRedirect as u64,
        entry,
        stack_top,
        stride,
        lib_start,
        lib_end,
    ))
}

/// `SetSyscallRedirect` with `entry` 0: every `syscall` enters the kernel
/// again.
pub fn clear_syscall_redirect() -> Result<u64, Error> {
    abi::decode(syscall5(Syscall::SetSyscallRedirect as u64, 0, 0, 0, 0, 0))
}

/// `ExceptionResume`: resumes `frame`; returns only on failure.
pub fn exception_resume(frame: &UpcallFrame) -> Error {
    let rax = syscall1(Syscall::ExceptionResume as u64, frame as *const UpcallFrame as u64);
    abi::decode(rax).err().unwrap_or(Error::InvalidSyscall)
}

/// `VcpuStart`: raw start of a vCPU on `core` at `entry` with
/// `rsp = stack_top`, `rdi = arg`. Most code wants [`crate::start_vcpu`].
pub fn vcpu_start(core: u64, entry: u64, stack_top: u64, arg: u64) -> Result<u64, Error> {
    abi::decode(syscall4(Syscall::VcpuStart as u64, core, entry, stack_top, arg))
}

/// `VcpuExit`: ends this vCPU (and with it the registration of its ring:
/// [`crate::ring::Ring::new`] may be called again on this core).
pub fn vcpu_exit() -> ! {
    crate::ring::vcpu_exiting();
    loop {
        syscall0(Syscall::VcpuExit as u64);
    }
}

/// `EnvLookup`: the id of the live environment started from app `name`.
pub fn env_lookup(name: &str) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::EnvLookup as u64, name.as_ptr() as u64, name.len() as u64))
}

/// A decoded [`abi::FrameStatus`] word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// Bits 0..8: the holder kind (see [`FrameInfo::holder`]).
    pub kind: u64,
    /// Bits 32..64: the owning environment (meaningful for
    /// [`FrameHolder::PageTable`], [`FrameHolder::Owned`] and
    /// [`FrameHolder::Released`]).
    pub env: u64,
    /// Bits 8..32: how many environments hold it (owner and copy-on-write
    /// sharers).
    pub holders: u64,
}

impl FrameInfo {
    /// Decodes a status word.
    pub fn from_word(word: u64) -> Self {
        Self { kind: word & 0xff, env: word >> 32, holders: (word >> 8) & 0xff_ffff }
    }

    /// The holder, if the kind is one the ABI defines.
    pub fn holder(self) -> Option<FrameHolder> {
        match self.kind {
            0 => Some(FrameHolder::Free),
            1 => Some(FrameHolder::Kernel),
            2 => Some(FrameHolder::PageTable),
            3 => Some(FrameHolder::Owned),
            4 => Some(FrameHolder::Released),
            _ => None,
        }
    }
}

/// `FrameStatus`: who holds `frame`.
pub fn frame_status(frame: u64) -> Result<FrameInfo, Error> {
    abi::decode(syscall1(Syscall::FrameStatus as u64, frame)).map(FrameInfo::from_word)
}

// ---------------------------------------------------------------------------
// Child environments and copy-on-write sharing (see `abi::child`).

/// `EnvCreate`: an empty child with `quota` frames of ours; its handle.
pub fn env_create(quota: u64) -> Result<u64, Error> {
    abi::decode(syscall1(Syscall::EnvCreate as u64, quota))
}

/// `ChildMap`: maps our `frame` at `va` in `child` (shared read-only, or
/// given with [`abi::CHILD_MAP_GIVE`] in `flags`).
pub fn child_map(
    child: u64,
    frame: u64,
    va: u64,
    rights: Rights,
    flags: u64,
) -> Result<u64, Error> {
    abi::decode(syscall5(Syscall::ChildMap as u64, child, frame, va, rights.0, flags))
}

/// `ChildUnmap`.
pub fn child_unmap(child: u64, va: u64) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::ChildUnmap as u64, child, va))
}

/// `ShareRange`: shares our mappings in `src .. src + pages` pages into
/// `child` at `dst`, copy-on-write; the pages shared. Restartable: the
/// kernel advances `rsi`, `rdx`, `r10` and `r8` between steps, so they
/// are outputs too.
pub fn share_range(child: u64, src: u64, dst: u64, pages: u64) -> Result<u64, Error> {
    let ret: u64;
    // SAFETY: as in `syscall0`; the registers the kernel advances between
    // steps are declared clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") Syscall::ShareRange as u64 => ret,
             in("rdi") child, inlateout("rsi") src => _, inlateout("rdx") dst => _,
             inlateout("r10") pages => _, inlateout("r8") 0u64 => _,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    abi::decode(ret)
}

/// `ShareWritable`: shares our mappings in `src .. src + pages` pages into
/// `child` at `dst`, writable (shared memory, not copy-on-write); the pages
/// shared. Restartable like [`share_range`].
pub fn share_writable(child: u64, src: u64, dst: u64, pages: u64) -> Result<u64, Error> {
    let ret: u64;
    // SAFETY: as in `syscall0`; the registers the kernel advances between
    // steps are declared clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") Syscall::ShareWritable as u64 => ret,
             in("rdi") child, inlateout("rsi") src => _, inlateout("rdx") dst => _,
             inlateout("r10") pages => _, inlateout("r8") 0u64 => _,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    abi::decode(ret)
}

/// `ChildSetEntry`: the child's exception (`which` =
/// [`abi::CHILD_ENTRY_EXCEPTION`]) or IPC entry.
pub fn child_set_entry(
    child: u64,
    which: u64,
    entry: u64,
    stack_top: u64,
    stride: u64,
) -> Result<u64, Error> {
    abi::decode(syscall5(Syscall::ChildSetEntry as u64, child, which, entry, stack_top, stride))
}

/// `ChildStart`: a vCPU of `child` on `core` with the registers in `frame`.
pub fn child_start(child: u64, core: u64, frame: &UpcallFrame) -> Result<u64, Error> {
    abi::decode(syscall3(
        Syscall::ChildStart as u64,
        child,
        core,
        frame as *const UpcallFrame as u64,
    ))
}

/// `ChildStatus`: the child's exit status once reclaimed (`Busy` before).
pub fn child_status(child: u64) -> Result<u64, Error> {
    abi::decode(syscall1(Syscall::ChildStatus as u64, child))
}

/// `ChildQuota`: sets the child's frame quota to `quota`, returns the
/// previous one (see `abi::Syscall::ChildQuota`).
pub fn child_quota(child: u64, quota: u64) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::ChildQuota as u64, child, quota))
}

/// `ChildDestroy`.
pub fn child_destroy(child: u64) -> Result<u64, Error> {
    abi::decode(syscall1(Syscall::ChildDestroy as u64, child))
}

/// `FrameCopy`: copies the page we map at `src_va` into our frame `dst`;
/// returns the source frame.
pub fn frame_copy(dst: u64, src_va: u64) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::FrameCopy as u64, dst, src_va))
}

/// `CowBreak`: ends our copy-on-write sharing of the page at `va` (made
/// writable in place if we are its only holder, else replaced by a copy);
/// returns the frame mapped there afterwards.
pub fn cow_break(va: u64) -> Result<u64, Error> {
    abi::decode(syscall1(Syscall::CowBreak as u64, va))
}

/// `PageQuery`: the packed description of our mapping at `va`.
pub fn page_query(va: u64) -> Result<u64, Error> {
    abi::decode(syscall1(Syscall::PageQuery as u64, va))
}

/// `RingSetup`: registers this vCPU's ring of `sq_entries` submissions and
/// `cq_entries` completions at page-aligned `base_va`
/// (`abi::ring::ring_bytes(sq, cq)` bytes, mapped read-write, owned).
/// Most code wants [`crate::ring::Ring::new`].
///
/// # Safety
///
/// Until this vCPU ends, the kernel writes ring headers and completions
/// into those pages at any time (timer completions arrive
/// asynchronously): no Rust object may live in
/// `base_va .. base_va + ring_bytes(sq, cq)`, and every access to it must
/// be atomic or volatile.
pub unsafe fn ring_setup(base_va: u64, sq_entries: u32, cq_entries: u32) -> Result<u64, Error> {
    abi::decode(syscall3(
        Syscall::RingSetup as u64,
        base_va,
        u64::from(sq_entries),
        u64::from(cq_entries),
    ))
}

/// `RingEnter`: processes up to `to_submit` submissions of this vCPU's
/// ring, then, if `min_complete > 0`, blocks until at least that many
/// completions wait in its completion queue. Returns the number of
/// submissions consumed.
#[inline]
pub fn ring_enter(to_submit: u64, min_complete: u64) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::RingEnter as u64, to_submit, min_complete))
}

/// `SleepOn`: blocks this vCPU until the [`abi::predicate`] program
/// `insns` evaluates non-zero (at once if it already does). The kernel
/// verifies the program first: `InvalidArgument` or `BadAddress` when it
/// refuses it. [`crate::predicate::Pred`] builds programs.
pub fn sleep_on(insns: &[Insn]) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::SleepOn as u64, insns.as_ptr() as u64, insns.len() as u64))
}

/// `SlotAlloc`: time slots of `core`: exactly slot `index`
/// (`Some(index)`), or any `count` free ones (`None`). Returns the bit set
/// of the slots obtained.
pub fn slot_alloc(core: usize, index: Option<u64>, count: u64) -> Result<u64, Error> {
    let index = index.unwrap_or(abi::schedule::ANY_SLOT);
    abi::decode(syscall3(Syscall::SlotAlloc as u64, core as u64, index, count))
}

/// `SlotFree`: gives back the slots in `mask` of `core`.
pub fn slot_free(core: usize, mask: u64) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::SlotFree as u64, core as u64, mask))
}

/// `SetSlotHandlers`: raw registration of the slot prologue and epilogue
/// entries (0: none). Most code wants [`crate::cpu::set_slot_handlers`].
pub fn set_slot_handlers(prologue: u64, epilogue: u64) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::SetSlotHandlers as u64, prologue, epilogue))
}

/// `SetDefaultTime`: whether this environment's vCPU on `core` may run in
/// unowned slots.
pub fn set_default_time(core: usize, on: bool) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::SetDefaultTime as u64, core as u64, u64::from(on)))
}

/// `YieldTo`: gives the rest of this slot to `env`'s vCPU on this core.
pub fn yield_to(env: u64) -> Result<u64, Error> {
    abi::decode(syscall1(Syscall::YieldTo as u64, env))
}

/// `IpcRegister`: raw registration of the protected-control-transfer entry
/// and its per-core stacks. Most code wants [`crate::cpu::serve_calls`].
pub fn ipc_register(entry: u64, stack_top: u64, stride: u64) -> Result<u64, Error> {
    abi::decode(syscall3(Syscall::IpcRegister as u64, entry, stack_top, stride))
}

/// `IpcAccept`: accept (or stop accepting) calls and notifications from
/// `env` ([`abi::ANY_ENV`]: everyone).
pub fn ipc_accept(env: u64, allow: bool) -> Result<u64, Error> {
    abi::decode(syscall2(Syscall::IpcAccept as u64, env, u64::from(allow)))
}

/// The eight words of a protected control transfer's message or reply.
pub type Message = [u64; 8];

/// `Call`: protected control transfer into `target` with `msg`; returns
/// its reply.
#[inline(always)]
pub fn call(target: u64, msg: &Message) -> Result<Message, Error> {
    let rax: u64;
    let mut m = *msg;
    // SAFETY: `syscall` with the message in the registers the ABI names; the
    // kernel returns with the reply in the same registers and clobbers only
    // rcx and r11 besides (the callee runs in its own address space and
    // cannot touch ours). r12-r14 are callee-saved in the Rust ABI but are
    // declared as outputs here, so the compiler saves them around this.
    unsafe {
        asm!("syscall",
             inlateout("rax") Syscall::Call as u64 => rax,
             in("rdi") target,
             inlateout("rsi") m[0] => m[0],
             inlateout("rdx") m[1] => m[1],
             inlateout("r10") m[2] => m[2],
             inlateout("r8") m[3] => m[3],
             inlateout("r9") m[4] => m[4],
             inlateout("r12") m[5] => m[5],
             inlateout("r13") m[6] => m[6],
             inlateout("r14") m[7] => m[7],
             lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    abi::decode(rax).map(|_| m)
}

/// `Reply`: ends the protected control transfer this activation serves,
/// giving `words` to the caller. Returns only on failure (not in a call).
pub fn reply(words: &Message) -> Error {
    let rax: u64;
    // SAFETY: as `call`; on success the kernel does not come back here.
    unsafe {
        asm!("syscall",
             inlateout("rax") Syscall::Reply as u64 => rax,
             in("rsi") words[0], in("rdx") words[1], in("r10") words[2],
             in("r8") words[3], in("r9") words[4], in("r12") words[5],
             in("r13") words[6], in("r14") words[7],
             lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    abi::decode(rax).err().unwrap_or(Error::InvalidSyscall)
}

/// `Acall`: posts a `CALL` event with `w0`, `w1` to `target`'s event queue
/// and wakes it.
pub fn acall(target: u64, w0: u64, w1: u64) -> Result<u64, Error> {
    abi::decode(syscall3(Syscall::Acall as u64, target, w0, w1))
}

// ---------------------------------------------------------------------------
// Kernel-provided pages.

/// A word of a kernel-written page, read with one atomic acquire load.
///
/// # Safety
///
/// `addr` must be 8-byte aligned inside a page the kernel keeps mapped
/// readable for the environment's whole life (the info region) and only
/// updates atomically.
unsafe fn kernel_word(addr: u64) -> u64 {
    // SAFETY: per the contract; the view is only loaded from.
    let word = unsafe { core::sync::atomic::AtomicU64::from_ptr(addr as *mut u64) };
    word.load(core::sync::atomic::Ordering::Acquire)
}

/// `QueueDelay`: TSC ticks runnable vCPUs of every environment waited in
/// `core`'s ready queue since boot (see [`abi::Syscall::QueueDelay`]).
pub fn queue_delay(core: usize) -> Result<u64, Error> {
    abi::decode(syscall1(Syscall::QueueDelay as u64, core as u64))
}

/// A snapshot of this vCPU's [`abi::VcpuPage`] (its run-time statistics on
/// this core).
pub fn vcpu_page() -> abi::VcpuPage {
    let base = abi::vcpu_page_va(core_id());
    // SAFETY: the kernel maps this core's VcpuPage read-only for as long as
    // this vCPU exists (it runs here now); a volatile copy of plain
    // integers, so any bytes are valid.
    unsafe { core::ptr::read_volatile(base as *const abi::VcpuPage) }
}

/// One core's time vector, copied from the schedule pages.
pub fn core_schedule(core: usize) -> Option<abi::schedule::CoreSchedule> {
    if core >= abi::MAX_CORES {
        return None;
    }
    let at = abi::SCHEDULE_VA
        + core::mem::offset_of!(abi::schedule::Schedule, core) as u64
        + (core * core::mem::size_of::<abi::schedule::CoreSchedule>()) as u64;
    // SAFETY: the schedule pages are mapped read-only in every environment
    // for its whole life; the entry lies inside them (core < MAX_CORES) and
    // is 8-aligned; a volatile copy of plain integers.
    Some(unsafe { core::ptr::read_volatile(at as *const abi::schedule::CoreSchedule) })
}

/// The event queue's `tail` (events posted so far).
pub fn event_tail() -> u64 {
    // SAFETY: the first word of the event queue page, which the kernel keeps
    // mapped read-only and updates atomically.
    unsafe { kernel_word(abi::EVENTS_VA) }
}

/// Entry `index` (free-running) of the event queue, if it still holds that
/// event: `Ok(event)`, or `Err(seq)` with the sequence number found (larger:
/// overwritten; smaller: not written yet).
pub fn event_at(index: u64) -> Result<abi::event::Event, u64> {
    use abi::event::{CAPACITY, Event, EventQueue};
    let at = abi::EVENTS_VA
        + core::mem::offset_of!(EventQueue, entries) as u64
        + (index % CAPACITY) * core::mem::size_of::<Event>() as u64;
    // SAFETY: the entry lies in the event queue page (index % CAPACITY), is
    // 8-aligned, and the kernel writes it atomically word by word; the
    // sequence word is read before and after (see `abi::event`).
    let (before, event, after) = unsafe {
        let before = kernel_word(at);
        let event = core::ptr::read_volatile(at as *const Event);
        (before, event, kernel_word(at))
    };
    if before == index + 1 && after == index + 1 { Ok(event) } else { Err(before.max(after)) }
}

/// A snapshot of the environment's read-only [`InfoPage`].
///
/// A copy, not a reference: the kernel changes `notifications` at any
/// time (see [`notifications`] for a single atomic read of it).
pub fn info() -> InfoPage {
    // SAFETY: the kernel maps the InfoPage read-only at INFO_VA for the whole
    // life of the environment, page-aligned (so aligned for InfoPage), and
    // nothing in user space can write it. The kernel may update
    // `notifications` concurrently, so this is a volatile copy (no reference
    // to the changing memory is ever made); every field is a plain integer,
    // so any bytes are a valid InfoPage.
    unsafe { core::ptr::read_volatile(abi::INFO_VA as *const InfoPage) }
}

/// `InfoPage::notifications`: how many notifications other environments
/// (or this one) have posted to this environment, read with one atomic
/// acquire load.
pub fn notifications() -> u64 {
    let ptr = (abi::INFO_VA as usize + core::mem::offset_of!(InfoPage, notifications)) as *mut u64;
    // SAFETY: the field lies in the InfoPage, mapped readable for the whole
    // life of the environment and 8-byte aligned (offset 24 of a page); the
    // kernel only ever updates it atomically, and this view is only loaded
    // from (the page is read-only: a store would fault, and none is made).
    let word = unsafe { core::sync::atomic::AtomicU64::from_ptr(ptr) };
    word.load(core::sync::atomic::Ordering::Acquire)
}

/// The core this vCPU runs on (`gs:[0]`, the `core` field of its
/// [`abi::VcpuPage`]).
pub fn core_id() -> usize {
    let core: u64;
    // SAFETY: the kernel sets this vCPU's user GS base to its VcpuPage,
    // which is mapped readable; reading 8 bytes at gs:0 touches nothing else.
    unsafe {
        asm!("mov {}, qword ptr gs:[0]", out(reg) core,
             options(nostack, readonly, preserves_flags));
    }
    core as usize
}

// ---------------------------------------------------------------------------
// Probes.

/// Reads the time-stamp counter (allowed in ring 3: the kernel leaves
/// CR4.TSD clear). Under `-icount` it counts guest instructions.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` reads a counter; no memory or state is affected.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Single instructions for tests that provoke faults or try privileged
/// operations. Each has a fixed encoding, so an exception handler knows how
/// many bytes to skip: see the `*_LEN` constants.
pub mod probe {
    use core::arch::asm;

    /// Length of `cli` (`fa`).
    pub const CLI_LEN: u64 = 1;
    /// Length of `hlt` (`f4`).
    pub const HLT_LEN: u64 = 1;
    /// Length of `ud2` (`0f 0b`).
    pub const UD2_LEN: u64 = 2;
    /// Length of `div rcx` (`48 f7 f1`).
    pub const DIV_LEN: u64 = 3;
    /// Length of `int3` (`cc`); a trap, so the saved `rip` is already past it.
    pub const INT3_LEN: u64 = 1;

    /// Executes `cli`.
    pub fn cli() {
        // SAFETY: a single instruction that touches no memory; in ring 3 it
        // faults (#GP), which the kernel handles.
        unsafe { asm!(".byte 0xfa", options(nostack)) }
    }

    /// Executes `hlt`.
    pub fn hlt() {
        // SAFETY: as `cli`.
        unsafe { asm!(".byte 0xf4", options(nostack)) }
    }

    /// Executes `ud2`.
    pub fn ud2() {
        // SAFETY: raises #UD; touches no memory.
        unsafe { asm!(".byte 0x0f, 0x0b", options(nostack)) }
    }

    /// Executes `int3`.
    pub fn int3() {
        // SAFETY: raises #BP; touches no memory.
        unsafe { asm!(".byte 0xcc", options(nostack)) }
    }

    /// Executes `div rcx` with `rcx = 0` (divide error); returns `rax`
    /// afterwards (unchanged, 1, if a handler skipped the instruction).
    pub fn div_zero() -> u64 {
        let rax: u64;
        // SAFETY: register-only instruction; #DE is handled by the kernel.
        unsafe {
            asm!(".byte 0x48, 0xf7, 0xf1", inout("rax") 1u64 => rax, inout("rdx") 0u64 => _,
                 in("rcx") 0u64, options(nostack));
        }
        rax
    }

    /// `wrmsr` to IA32_EFER (`ecx = 0xC0000080`) with `edx:eax = 0`.
    pub fn wrmsr_efer() {
        // SAFETY: privileged: #GP in ring 3; touches no memory.
        unsafe {
            asm!("wrmsr", in("ecx") 0xC000_0080u32, in("eax") 0u32, in("edx") 0u32,
                 options(nostack));
        }
    }

    /// `mov cr3, rax` with `rax = 0x1000`.
    pub fn write_cr3() {
        // SAFETY: privileged: #GP in ring 3.
        unsafe { asm!("mov cr3, rax", in("rax") 0x1000u64, options(nostack)) }
    }

    /// `lgdt` from a 10-byte descriptor on the stack.
    pub fn lgdt() {
        let desc = [0u8; 16];
        // SAFETY: privileged: #GP in ring 3; would only read `desc`.
        unsafe {
            asm!("lgdt [{}]", in(reg) desc.as_ptr(), options(nostack, readonly));
        }
    }

    /// Reads the 8 bytes at `addr` with one `mov`.
    ///
    /// Meant for addresses Rust does not otherwise use (kernel half,
    /// unmapped pages, the scratch window, pages shared with another
    /// environment): a fault goes to the exception handler or kills the
    /// environment.
    pub fn read(addr: u64) -> u64 {
        let v: u64;
        // SAFETY: the access is opaque to the compiler and aligned accesses
        // are single-copy atomic, so a concurrent writer (another vCPU or
        // environment) cannot cause a torn value; a bad address faults.
        unsafe {
            asm!("mov {}, qword ptr [{}]", out(reg) v, in(reg) addr,
                 options(nostack, readonly, preserves_flags));
        }
        v
    }

    /// Writes `value` to the 8 bytes at `addr` with one `mov`.
    ///
    /// # Panics
    ///
    /// Unless `addr` is outside the user half's mappable range (below
    /// `USER_MIN` or at/above `USER_MAX`: it can only fault) or inside
    /// [`crate::layout::SCRATCH_BASE`]`..`[`crate::layout::SCRATCH_END`],
    /// where no Rust object ever lives.
    pub fn write(addr: u64, value: u64) {
        let scratch =
            (crate::layout::SCRATCH_BASE..=crate::layout::SCRATCH_END - 8).contains(&addr);
        let outside = !(abi::USER_MIN..abi::USER_MAX).contains(&addr);
        assert!(scratch || outside, "probe::write({addr:#x}) outside the scratch window");
        // SAFETY: checked above: `addr` is in no Rust object (scratch window
        // or outside the user half), so the write cannot alias Rust memory;
        // a fault goes to the kernel.
        unsafe {
            asm!("mov qword ptr [{}], {}", in(reg) addr, in(reg) value,
                 options(nostack, preserves_flags));
        }
    }

    /// Length of the load in [`read_fixed`] (`mov rax, [rdi]`: `48 8b 07`).
    pub const READ_LEN: u64 = 3;
    /// Length of the store in [`write_fixed`] (`mov [rdi], rsi`: `48 89 37`).
    pub const WRITE_LEN: u64 = 3;

    /// `mov rax, [rdi]; ret`: the load is the function's first instruction.
    #[unsafe(naked)]
    extern "C" fn read_insn(_addr: u64) -> u64 {
        // SAFETY (naked): one load into the return register and `ret`; no
        // stack use, only rax (a return register) is written. A fault at the
        // load is seen by an exception handler at exactly this address.
        core::arch::naked_asm!(".byte 0x48, 0x8b, 0x07", "ret")
    }

    /// `mov rax, rsi; mov [rdi], rsi; ret`: the store starts 3 bytes in.
    #[unsafe(naked)]
    extern "C" fn write_insn(_addr: u64, _value: u64) -> u64 {
        // SAFETY (naked): copies the value to the return register, stores
        // it and returns; no stack use, only rax is written. A fault at the
        // store is seen by an exception handler at [`write_insn_addr`].
        core::arch::naked_asm!(".byte 0x48, 0x89, 0xf0", ".byte 0x48, 0x89, 0x37", "ret")
    }

    /// Address of [`read_fixed`]'s load instruction (`READ_LEN` bytes).
    pub fn read_insn_addr() -> u64 {
        read_insn as *const () as u64
    }

    /// Address of [`write_fixed`]'s store instruction (`WRITE_LEN` bytes).
    pub fn write_insn_addr() -> u64 {
        write_insn as *const () as u64 + 3
    }

    /// Reads the 8 bytes at `addr` with one `mov rax, [rdi]` at a known
    /// address ([`read_insn_addr`]), for tests whose exception handler
    /// survives the fault with [`skip_fixed`]: then the result is the
    /// handler's marker instead. Like [`read`], meant for addresses Rust
    /// does not otherwise use; the load is single-copy atomic when aligned.
    #[inline]
    pub fn read_fixed(addr: u64) -> u64 {
        read_insn(addr)
    }

    /// Writes `value` to the 8 bytes at `addr` with one `mov [rdi], rsi` at
    /// a known address ([`write_insn_addr`]) and returns `value` — or, if
    /// the store faulted and the handler skipped it with [`skip_fixed`],
    /// the handler's marker.
    ///
    /// # Panics
    ///
    /// Where [`fn@write`] does: unless `addr` is in the scratch window or
    /// outside the user half's mappable range.
    #[inline]
    pub fn write_fixed(addr: u64, value: u64) -> u64 {
        let scratch =
            (crate::layout::SCRATCH_BASE..=crate::layout::SCRATCH_END - 8).contains(&addr);
        let outside = !(abi::USER_MIN..abi::USER_MAX).contains(&addr);
        assert!(scratch || outside, "probe::write_fixed({addr:#x}) outside the scratch window");
        // The store cannot alias a Rust object (checked above), and the
        // naked function touches nothing else.
        write_insn(addr, value)
    }

    /// For exception handlers: if `frame` faulted at the access of
    /// [`read_fixed`] or [`write_fixed`], skips that instruction, puts
    /// `marker` in its result register (rax) and returns `true`; otherwise
    /// leaves the frame alone and returns `false`.
    pub fn skip_fixed(frame: &mut abi::UpcallFrame, marker: u64) -> bool {
        let len = if frame.rip == read_insn_addr() {
            READ_LEN
        } else if frame.rip == write_insn_addr() {
            WRITE_LEN
        } else {
            return false;
        };
        frame.rip += len;
        frame.rax = marker;
        true
    }

    /// Puts known values in rax, rcx, rdx, rsi, rdi, r8..r15, executes
    /// `ud2`, and returns what those registers hold afterwards, in that
    /// order. A handler that skips the `ud2` must see them all preserved.
    pub fn ud2_with_registers(values: [u64; 13]) -> [u64; 13] {
        let mut r = values;
        // SAFETY: register-only; #UD goes to the handler, which resumes the
        // saved context (every general-purpose register).
        unsafe {
            asm!(".byte 0x0f, 0x0b",
                 inout("rax") r[0] => r[0], inout("rcx") r[1] => r[1], inout("rdx") r[2] => r[2],
                 inout("rsi") r[3] => r[3], inout("rdi") r[4] => r[4], inout("r8") r[5] => r[5],
                 inout("r9") r[6] => r[6], inout("r10") r[7] => r[7], inout("r11") r[8] => r[8],
                 inout("r12") r[9] => r[9], inout("r13") r[10] => r[10],
                 inout("r14") r[11] => r[11], inout("r15") r[12] => r[12],
                 options(nostack));
        }
        r
    }
}
