//! User memory: ranges an environment names, read and written only through
//! its own page tables (the direct map under them), so a bad pointer is an
//! error, never a kernel fault; and console output on an environment's
//! behalf.
//!
//! A [`USlice`] is a range of user addresses that passed the range check
//! (inside the user half, not at 0); it can only be read or written
//! through [`USlice::read_into`] and [`USlice::write`], which translate
//! every page through the owner's page tables under its address-space lock
//! and check the page's user and write permissions first (as Hubris'
//! `umem.rs`). The `copy_*` functions are the short forms the rest of the
//! kernel uses.
//!
//! May not touch: frame ownership (it only translates under the
//! address-space lock, which keeps the frames from being freed).

use super::Env;
use super::lock_serving_mailbox;
use crate::machine::{memory, paging};
use abi::Error;
use alloc::vec::Vec;
use kernel::frames::FrameNumber;

/// A range of an environment's memory: `len` bytes at user address `va`,
/// inside the user range (checked when it is made). Says nothing about
/// what is mapped there: every access checks that again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct USlice {
    va: u64,
    len: usize,
}

impl USlice {
    /// The range `va .. va + len`, if it lies in the user range (an empty
    /// range anywhere but 0 is fine).
    pub fn new(va: u64, len: usize) -> Result<USlice, Error> {
        let end = va.checked_add(len as u64).ok_or(Error::BadAddress)?;
        if va < abi::USER_MIN && len > 0 || end > abi::USER_MAX + abi::PAGE_SIZE {
            return Err(Error::BadAddress);
        }
        if va == 0 {
            return Err(Error::BadAddress);
        }
        Ok(USlice { va, len })
    }

    /// Copies the range out of `env`'s memory into `out` (exactly
    /// `self.len()` bytes long). Every page must be mapped user-readable.
    pub fn read_into(&self, env: &Env, out: &mut [u8]) -> Result<(), Error> {
        self.read_into_lock(env, out, Lock::Wait)
    }

    /// [`read_into`](Self::read_into), waiting for the address-space lock
    /// or not (`Busy`).
    pub fn read_into_lock(&self, env: &Env, out: &mut [u8], lock: Lock) -> Result<(), Error> {
        assert_eq!(out.len(), self.len, "USlice::read_into with a buffer of another length");
        let mut done = 0;
        self.with_pages(env, false, lock, |chunk_phys, n| {
            // SAFETY: `chunk_phys..+n` lies inside one frame mapped
            // user-readable in `env`, which cannot be freed while the aspace
            // lock is held.
            let bytes = unsafe {
                core::slice::from_raw_parts(memory::phys_to_virt(chunk_phys) as *const u8, n)
            };
            out[done..done + n].copy_from_slice(bytes);
            done += n;
        })
    }

    /// Copies `bytes` (exactly `self.len()` long) into the range of `env`'s
    /// memory; every page must be mapped user-writable, and nothing is
    /// written unless all are. With [`Lock::Try`], `Busy` if the address
    /// space is locked now.
    pub fn write(&self, env: &Env, bytes: &[u8], lock: Lock) -> Result<(), Error> {
        assert_eq!(bytes.len(), self.len, "USlice::write with a buffer of another length");
        let mut done = 0;
        self.with_pages(env, true, lock, |chunk_phys, n| {
            // SAFETY: as in `read_into`, and the page is mapped writable.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    bytes[done..].as_ptr(),
                    memory::phys_to_virt(chunk_phys) as *mut u8,
                    n,
                )
            };
            done += n;
        })
    }

    /// Calls `chunk(physical address, length)` for each piece of the range
    /// that lies in one page, in order, after checking every page's
    /// permissions, under `env`'s address-space lock.
    fn with_pages(
        &self,
        env: &Env,
        write: bool,
        lock: Lock,
        mut chunk: impl FnMut(u64, usize),
    ) -> Result<(), Error> {
        let (va, len) = (self.va, self.len);
        let end = va + len as u64;
        let aspace = match lock {
            Lock::Wait => lock_serving_mailbox(&env.aspace),
            Lock::Try => env.aspace.try_lock().ok_or(Error::Busy)?,
        };
        use x86_64::structures::paging::PageTableFlags as F;
        let allowed = |flags: F| {
            flags.contains(F::USER_ACCESSIBLE) && (!write || flags.contains(F::WRITABLE))
        };
        // Fast path: the whole range in one page (upcall frames, small buffers).
        if len > 0
            && (va ^ (end - 1)) < abi::PAGE_SIZE
            && va % abi::PAGE_SIZE + len as u64 <= abi::PAGE_SIZE
        {
            let (frame, flags) =
                aspace.translate(va & !(abi::PAGE_SIZE - 1)).ok_or(Error::BadAddress)?;
            if !allowed(flags) {
                return Err(Error::BadAddress);
            }
            chunk(frame.addr() + va % abi::PAGE_SIZE, len);
            return Ok(());
        }
        // Check every page first so that a failing write writes nothing.
        let mut page = va & !(abi::PAGE_SIZE - 1);
        while page < end {
            let (_, flags) = aspace.translate(page).ok_or(Error::BadAddress)?;
            if !allowed(flags) {
                return Err(Error::BadAddress);
            }
            page += abi::PAGE_SIZE;
        }
        let mut at = va;
        while at < end {
            let (frame, _) =
                aspace.translate(at & !(abi::PAGE_SIZE - 1)).ok_or(Error::BadAddress)?;
            let offset = at % abi::PAGE_SIZE;
            let n = (abi::PAGE_SIZE - offset).min(end - at) as usize;
            chunk(frame.addr() + offset, n);
            at += n as u64;
        }
        Ok(())
    }
}

/// Writes an [`abi::UpcallFrame`] at user address `at` of `env`: the words
/// `head` (vector, error code, fault address), then the trap frame's
/// `rip`, `rsp`, `rflags` and general registers in the ABI's order. On the
/// exception path: when the frame lies in one page (always, for a 16-byte
/// aligned `at`) it takes one translation and stores each word straight
/// from the trap frame into the user page through the direct map, with no
/// staging buffer; otherwise it goes through [`USlice::write`]. The page
/// must be mapped user-writable.
#[inline]
pub fn write_upcall_frame(
    env: &Env,
    at: u64,
    lock: Lock,
    head: [u64; 3],
    f: &crate::machine::trap::TrapFrame,
) -> Result<(), Error> {
    let words = || {
        [
            head[0], head[1], head[2], f.rip, f.rsp, f.rflags, f.rax, f.rbx, f.rcx, f.rdx, f.rsi,
            f.rdi, f.rbp, f.r8, f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15,
        ]
    };
    const _: () = assert!(abi::UpcallFrame::WORDS == 21);
    let len = abi::UPCALL_FRAME_SIZE;
    let slice = USlice::new(at, len as usize)?;
    if !at.is_multiple_of(8) || at % abi::PAGE_SIZE + len > abi::PAGE_SIZE {
        let mut bytes = [0u8; abi::UPCALL_FRAME_SIZE as usize];
        for (chunk, w) in bytes.as_chunks_mut::<8>().0.iter_mut().zip(words()) {
            *chunk = w.to_le_bytes();
        }
        return slice.write(env, &bytes, lock);
    }
    let aspace = match lock {
        Lock::Wait => lock_serving_mailbox(&env.aspace),
        Lock::Try => env.aspace.try_lock().ok_or(Error::Busy)?,
    };
    use x86_64::structures::paging::PageTableFlags as F;
    let (frame, flags) = aspace.translate(at & !(abi::PAGE_SIZE - 1)).ok_or(Error::BadAddress)?;
    if !flags.contains(F::USER_ACCESSIBLE | F::WRITABLE) {
        return Err(Error::BadAddress);
    }
    // SAFETY: `frame` is mapped user-writable in `env` (checked above) and
    // cannot be freed while the address-space lock is held; `at` is
    // 8-aligned and the frame fits in its page (checked above).
    unsafe { store_upcall_frame(frame, at, head, f) };
    drop(aspace);
    Ok(())
}

/// [`write_upcall_frame`] for the exception fast path: into the address
/// space loaded on this core, found by [`paging::translate_loaded_user`]
/// without the address-space lock (see there why none is needed on the
/// core where the faulting code ran, interrupts off). Only a frame that is
/// 8-aligned and lies in one page; `None` otherwise or when the page is not
/// mapped user-writable (the caller takes the ordinary path, which says
/// why).
#[inline]
pub fn write_upcall_frame_loaded(
    at: u64,
    head: [u64; 3],
    f: &crate::machine::trap::TrapFrame,
) -> Option<()> {
    use x86_64::structures::paging::PageTableFlags as F;
    let len = abi::UPCALL_FRAME_SIZE;
    if !at.is_multiple_of(8) || at % abi::PAGE_SIZE + len > abi::PAGE_SIZE || at < abi::USER_MIN {
        return None;
    }
    let (frame, flags) = paging::translate_loaded_user(at & !(abi::PAGE_SIZE - 1))?;
    if !flags.contains(F::USER_ACCESSIBLE | F::WRITABLE) {
        return None;
    }
    // SAFETY: `frame` is mapped user-writable in the loaded space and stays
    // allocated until this core returns to ring 3
    // (`translate_loaded_user`); `at` is 8-aligned, the frame fits its page.
    unsafe { store_upcall_frame(frame, at, head, f) };
    Some(())
}

/// Stores the upcall frame's 21 words at offset `at % PAGE_SIZE` of
/// `frame`, each loaded from the trap frame and stored at once (no array
/// on the stack in between).
///
/// # Safety
/// `frame` is an allocated RAM frame that stays allocated for the call
/// (user memory: plain data to the kernel), `at` is 8-aligned and
/// `at % PAGE_SIZE + UPCALL_FRAME_SIZE <= PAGE_SIZE`.
#[inline(always)]
unsafe fn store_upcall_frame(
    frame: FrameNumber,
    at: u64,
    head: [u64; 3],
    f: &crate::machine::trap::TrapFrame,
) {
    let dst = memory::phys_to_virt(frame.addr() + at % abi::PAGE_SIZE) as *mut u64;
    // Each word loaded from the trap frame and stored at once (no array on
    // the stack in between).
    let store = |i: usize, w: u64| {
        // SAFETY: `dst .. dst + UPCALL_FRAME_SIZE` lies inside `frame`
        // (the caller's contract; `i` < 21), which stays allocated; user
        // memory is plain data to the kernel (as `USlice::write`'s copy).
        unsafe { dst.add(i).write(w) }
    };
    store(0, head[0]);
    store(1, head[1]);
    store(2, head[2]);
    store(3, f.rip);
    store(4, f.rsp);
    store(5, f.rflags);
    store(6, f.rax);
    store(7, f.rbx);
    store(8, f.rcx);
    store(9, f.rdx);
    store(10, f.rsi);
    store(11, f.rdi);
    store(12, f.rbp);
    store(13, f.r8);
    store(14, f.r9);
    store(15, f.r10);
    store(16, f.r11);
    store(17, f.r12);
    store(18, f.r13);
    store(19, f.r14);
    store(20, f.r15);
}

/// Whether a user copy may wait for the address-space lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    /// Wait (serving this core's mailbox meanwhile).
    Wait,
    /// Fail with `Busy` if it is held now (scheduling decisions, which never
    /// wait for an environment's lock).
    Try,
}

/// Copies `len` bytes from `env`'s memory at `va`. Every page must be mapped
/// user-readable; the copy goes through the direct map, so a bad pointer is
/// an error, never a kernel fault.
pub fn copy_from_user(env: &Env, va: u64, len: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| Error::InvalidArgument)?;
    out.resize(len, 0);
    copy_from_user_into(env, va, &mut out)?;
    Ok(out)
}

/// Copies `out.len()` bytes from `env`'s memory at `va` into `out` (no
/// allocation: the hot paths use a buffer on the stack).
pub fn copy_from_user_into(env: &Env, va: u64, out: &mut [u8]) -> Result<(), Error> {
    USlice::new(va, out.len())?.read_into(env, out)
}

/// [`copy_from_user_into`] for a scheduling decision: `Busy` if `env`'s
/// address space is locked now.
pub fn copy_from_user_nowait(env: &Env, va: u64, out: &mut [u8]) -> Result<(), Error> {
    USlice::new(va, out.len())?.read_into_lock(env, out, Lock::Try)
}

/// Copies `bytes` into `env`'s memory at `va` (pages must be user-writable).
pub fn copy_to_user(env: &Env, va: u64, bytes: &[u8]) -> Result<(), Error> {
    USlice::new(va, bytes.len())?.write(env, bytes, Lock::Wait)
}

/// `ConsoleWrite` (also the ring's `ConsoleWrite` operation, whose stream
/// word is checked here: the ring does not go through the decoder).
pub fn console_write(env: &Env, ptr: u64, len: u64, stream: u64) -> Result<u64, Error> {
    let Some(stream) = abi::ConsoleStream::from_number(stream) else {
        return Err(Error::InvalidArgument);
    };
    if len > abi::CONSOLE_WRITE_MAX {
        return Err(Error::InvalidArgument);
    }
    let bytes = copy_from_user(env, ptr, len as usize)?;
    crate::machine::console::write_stream(stream, &bytes);
    Ok(len)
}

/// Copies frame `src` into frame `dst` through the direct map. The caller
/// keeps both from being freed meanwhile (`src` mapped under the held
/// address-space lock, `dst` under its shard lock).
pub(super) fn copy_frame(dst: FrameNumber, src: FrameNumber) {
    if dst == src {
        return;
    }
    // SAFETY: both are allocated RAM frames (their holders keep them so for
    // the call, see above), distinct, each PAGE_SIZE bytes in the direct
    // map; user code may write `src` concurrently through another vCPU,
    // which makes the copy's bytes unspecified, not unsafe (plain bytes).
    unsafe {
        core::ptr::copy_nonoverlapping(
            memory::frame_virt(src) as *const u8,
            memory::frame_virt(dst),
            abi::PAGE_SIZE as usize,
        )
    };
}
