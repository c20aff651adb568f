//! Vector registers from ring 3, for tests and for code that checks what
//! the CPU offers: filling and reading every XMM/YMM register, MXCSR, the
//! x87 control word, the instructions that raise #XM and #MF, and
//! `fs:`-relative loads.
//!
//! Programs built for this target are soft-float: the compiler never
//! touches a vector register, so values placed with [`xmm_fill`] stay
//! there across any Rust code and system calls until [`xmm_read`] (the
//! kernel saves and restores them at every switch of context).
#![allow(unsafe_code, reason = "vector instructions are inline assembly")]

use core::arch::asm;

/// Words in [`xmm_read`]'s answer: 16 registers of 2 words.
pub const XMM_WORDS: usize = 32;
/// Words in [`ymm_read`]'s answer: 16 registers of 4 words.
pub const YMM_WORDS: usize = 64;
/// Length of the `divsd xmm0, xmm1` in [`sse_div_zero`] (`f2 0f 5e c1`).
pub const DIVSD_LEN: u64 = 4;
/// Length of the `fwait` in [`x87_div_zero`] (`9b`).
pub const FWAIT_LEN: u64 = 1;
/// MXCSR's divide-by-zero mask bit (set: masked).
pub const MXCSR_ZM: u32 = 1 << 9;
/// MXCSR's divide-by-zero flag.
pub const MXCSR_ZE: u32 = 1 << 2;

/// Whether AVX is usable here: the CPU has it and the kernel enabled it
/// (CR4.OSXSAVE, XCR0 with SSE and AVX state).
pub fn avx_usable() -> bool {
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    if ecx & (1 << 27) == 0 || ecx & (1 << 28) == 0 {
        return false;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: `xgetbv` with ECX = 0 reads XCR0; allowed in ring 3 once
    // CR4.OSXSAVE is set (checked above through CPUID.1:ECX.OSXSAVE).
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") _hi, options(nomem, nostack))
    };
    lo & 6 == 6
}

/// Loads the 16 XMM registers from `words` (register `i` = words `2i`,
/// `2i + 1`).
pub fn xmm_fill(words: &[u64; XMM_WORDS]) {
    // SAFETY: reads 256 bytes of `words`; writes only XMM registers, which
    // no compiled code of this program uses (soft-float target).
    unsafe {
        asm!(
            "movdqu xmm0, [{p}]", "movdqu xmm1, [{p} + 16]", "movdqu xmm2, [{p} + 32]",
            "movdqu xmm3, [{p} + 48]", "movdqu xmm4, [{p} + 64]", "movdqu xmm5, [{p} + 80]",
            "movdqu xmm6, [{p} + 96]", "movdqu xmm7, [{p} + 112]", "movdqu xmm8, [{p} + 128]",
            "movdqu xmm9, [{p} + 144]", "movdqu xmm10, [{p} + 160]", "movdqu xmm11, [{p} + 176]",
            "movdqu xmm12, [{p} + 192]", "movdqu xmm13, [{p} + 208]", "movdqu xmm14, [{p} + 224]",
            "movdqu xmm15, [{p} + 240]",
            p = in(reg) words.as_ptr(), options(nostack, readonly, preserves_flags)
        );
    }
}

/// The 16 XMM registers.
pub fn xmm_read() -> [u64; XMM_WORDS] {
    let mut words = [0u64; XMM_WORDS];
    // SAFETY: writes 256 bytes into `words`; reads registers only.
    unsafe {
        asm!(
            "movdqu [{p}], xmm0", "movdqu [{p} + 16], xmm1", "movdqu [{p} + 32], xmm2",
            "movdqu [{p} + 48], xmm3", "movdqu [{p} + 64], xmm4", "movdqu [{p} + 80], xmm5",
            "movdqu [{p} + 96], xmm6", "movdqu [{p} + 112], xmm7", "movdqu [{p} + 128], xmm8",
            "movdqu [{p} + 144], xmm9", "movdqu [{p} + 160], xmm10", "movdqu [{p} + 176], xmm11",
            "movdqu [{p} + 192], xmm12", "movdqu [{p} + 208], xmm13", "movdqu [{p} + 224], xmm14",
            "movdqu [{p} + 240], xmm15",
            p = in(reg) words.as_mut_ptr(), options(nostack, preserves_flags)
        );
    }
    words
}

/// Loads the 16 YMM registers from `words` (register `i` = words `4i ..
/// 4i + 4`). Only where [`avx_usable`] (else #UD).
pub fn ymm_fill(words: &[u64; YMM_WORDS]) {
    assert!(avx_usable(), "ymm_fill without AVX");
    // SAFETY: as `xmm_fill`, 512 bytes; AVX is enabled (asserted).
    unsafe {
        asm!(
            "vmovdqu ymm0, [{p}]", "vmovdqu ymm1, [{p} + 32]", "vmovdqu ymm2, [{p} + 64]",
            "vmovdqu ymm3, [{p} + 96]", "vmovdqu ymm4, [{p} + 128]", "vmovdqu ymm5, [{p} + 160]",
            "vmovdqu ymm6, [{p} + 192]", "vmovdqu ymm7, [{p} + 224]", "vmovdqu ymm8, [{p} + 256]",
            "vmovdqu ymm9, [{p} + 288]", "vmovdqu ymm10, [{p} + 320]", "vmovdqu ymm11, [{p} + 352]",
            "vmovdqu ymm12, [{p} + 384]", "vmovdqu ymm13, [{p} + 416]", "vmovdqu ymm14, [{p} + 448]",
            "vmovdqu ymm15, [{p} + 480]",
            p = in(reg) words.as_ptr(), options(nostack, readonly, preserves_flags)
        );
    }
}

/// The 16 YMM registers. Only where [`avx_usable`].
pub fn ymm_read() -> [u64; YMM_WORDS] {
    assert!(avx_usable(), "ymm_read without AVX");
    let mut words = [0u64; YMM_WORDS];
    // SAFETY: as `xmm_read`, 512 bytes; AVX is enabled (asserted).
    unsafe {
        asm!(
            "vmovdqu [{p}], ymm0", "vmovdqu [{p} + 32], ymm1", "vmovdqu [{p} + 64], ymm2",
            "vmovdqu [{p} + 96], ymm3", "vmovdqu [{p} + 128], ymm4", "vmovdqu [{p} + 160], ymm5",
            "vmovdqu [{p} + 192], ymm6", "vmovdqu [{p} + 224], ymm7", "vmovdqu [{p} + 256], ymm8",
            "vmovdqu [{p} + 288], ymm9", "vmovdqu [{p} + 320], ymm10", "vmovdqu [{p} + 352], ymm11",
            "vmovdqu [{p} + 384], ymm12", "vmovdqu [{p} + 416], ymm13", "vmovdqu [{p} + 448], ymm14",
            "vmovdqu [{p} + 480], ymm15",
            p = in(reg) words.as_mut_ptr(), options(nostack, preserves_flags)
        );
    }
    words
}

/// MXCSR.
pub fn mxcsr() -> u32 {
    let mut v = 0u32;
    // SAFETY: stores 4 bytes into `v`.
    unsafe { asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack, preserves_flags)) };
    v
}

/// Sets MXCSR (reserved bits set: #GP, delivered like any fault).
pub fn set_mxcsr(value: u32) {
    // SAFETY: loads 4 bytes from `value`; affects only SSE arithmetic,
    // which compiled code here does not use.
    unsafe { asm!("ldmxcsr [{}]", in(reg) &value, options(nostack, readonly, preserves_flags)) };
}

/// The x87 control word.
pub fn fpu_control_word() -> u16 {
    let mut v = 0u16;
    // SAFETY: stores 2 bytes into `v`.
    unsafe { asm!("fnstcw [{}]", in(reg) &mut v, options(nostack, preserves_flags)) };
    v
}

/// `divsd xmm0, xmm1` with `xmm0 = 1.0`, `xmm1 = 0.0` (clobbers both):
/// with divide-by-zero unmasked in MXCSR it raises #XM at the `divsd`
/// ([`DIVSD_LEN`] bytes to skip); masked, it sets MXCSR.ZE.
pub fn sse_div_zero() {
    // SAFETY: register-only; #XM is delivered to this environment's
    // exception handler by the kernel.
    unsafe {
        asm!(
            "mov {t}, 0x3ff0000000000000", "movq xmm0, {t}", "xor {t:e}, {t:e}", "movq xmm1, {t}",
            ".byte 0xf2, 0x0f, 0x5e, 0xc1",
            t = out(reg) _, options(nostack, nomem)
        );
    }
}

/// `fninit`, x87 divide-by-zero unmasked, `1 / 0`, then `fwait`: raises
/// #MF at the `fwait` ([`FWAIT_LEN`] bytes to skip); ends with `fninit`.
pub fn x87_div_zero() {
    let cw: u16 = 0x037f & !(1 << 2);
    // SAFETY: x87 stack and control word only (no compiled code uses
    // them); #MF is delivered to this environment's handler.
    unsafe {
        asm!(
            "fninit", "fldcw [{cw}]", "fld1", "fldz", "fdivp st(1), st", ".byte 0x9b", "fninit",
            cw = in(reg) &cw, options(nostack, readonly)
        );
    }
}

/// Clears pending x87 exceptions (`fnclex`) and resets the x87 unit
/// (`fninit`), for an #MF handler.
pub fn x87_clear() {
    // SAFETY: x87 state only.
    unsafe { asm!("fnclex", "fninit", options(nostack, nomem)) };
}

/// `mov rax, fs:[offset]`: the 8 bytes at FS base + `offset`.
pub fn fs_read(offset: u64) -> u64 {
    let v: u64;
    // SAFETY: a load through FS; an unmapped address faults (delivered to
    // this environment).
    unsafe {
        asm!("mov {v}, qword ptr fs:[{o}]", v = out(reg) v, o = in(reg) offset,
             options(nostack, readonly, preserves_flags));
    }
    v
}
