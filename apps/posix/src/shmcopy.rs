//! Copies in and out of memory shared with other environments (pipe
//! frames, the file server's slots) with `rep movsq` / `rep movsb`.
//!
//! libos-posix's [`copy_in_words`](libos_posix::pipe::copy_in_words) and
//! [`copy_out_words`](libos_posix::pipe::copy_out_words) do the same a
//! 64-bit atomic at a time, without `unsafe`: about 8 instructions a word
//! in this soft-float build (no vector copy), ~1,000 guest instructions
//! per KiB, which was 80 % of a pipe's cost between two processes
//! (profiled: docs/ARCHITECTURE.md §13a, "Cost"). `rep movsq` moves 8
//! bytes per iteration, and QEMU counts an iteration as one instruction:
//! 128 per KiB.
//!
//! Other environments may store into the shared side while we copy: the
//! copy then moves some mix of old and new bytes, which is all the users'
//! contracts promise of data (the ring's header words, accessed as
//! atomics, order the copies: `libos_posix::pipe::ring`). This side never
//! reads those bytes as anything but plain bytes, and the shared side is
//! only ever accessed as atomics by Rust code, the copy being opaque
//! assembly.

use core::sync::atomic::AtomicU64;

/// `n` bytes from `src` to `dst` with `rep movsq`, then `rep movsb` for
/// the last `n % 8`.
///
/// # Safety
///
/// `src..src + n` must be readable and `dst..dst + n` writable, and the
/// two must not overlap.
unsafe fn rep_movs(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract; the direction flag is clear (the
    // ABI's guarantee at every call), so both copies move forward. No
    // flag is changed and no stack is used.
    unsafe {
        core::arch::asm!(
            "rep movsq",
            "mov rcx, {rest}",
            "rep movsb",
            rest = in(reg) n & 7,
            inout("rcx") n / 8 => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
}

/// The byte range `off..off + len` of `data`, if it lies inside.
fn span(data: &[AtomicU64], off: usize, len: usize) -> *mut u8 {
    let end = off.checked_add(len);
    assert!(end.is_some_and(|e| e <= data.len() * 8), "copy outside the shared area");
    // In bounds (checked): `off <= data.len() * 8`.
    data.as_ptr().cast::<u8>().cast_mut().wrapping_add(off)
}

/// Copies bytes `off..off + buf.len()` of the shared area `data` out (as
/// `copy_out_words`). Panics if the range is outside `data`.
pub fn copy_out(data: &[AtomicU64], off: usize, buf: &mut [u8]) {
    let src = span(data, off, buf.len());
    // SAFETY: `src..src + len` lies inside `data` (checked by `span`),
    // mapped as long as the borrow of `data` lives; `buf` is ours
    // alone, so no overlap; concurrent stores by other environments only
    // change which bytes we get (module doc).
    unsafe { rep_movs(buf.as_mut_ptr(), src, buf.len()) }
}

/// Copies `src` into bytes `off..off + src.len()` of the shared area
/// `data` (as `copy_in_words`). Panics if the range is outside `data`.
pub fn copy_in(data: &[AtomicU64], off: usize, src: &[u8]) {
    let dst = span(data, off, src.len());
    // SAFETY: `dst..dst + len` lies inside `data` (checked by `span`),
    // mapped writable as long as the borrow lives (atomics are interior
    // mutable, so storing through a pointer derived from a shared borrow
    // of them is allowed); `src` is this process's own memory, not the
    // shared area, so no overlap.
    unsafe { rep_movs(dst, src.as_ptr(), src.len()) }
}
