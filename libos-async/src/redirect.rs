//! System-call redirection ([`abi::Syscall::SetSyscallRedirect`]) with the
//! library's own handlers, and "foreign" code to exercise it.
//!
//! The linker script (`user.ld`) puts every input section of the program
//! below `__lib_text_end` except `.foreign`, which follows it: the
//! program's own code is the *library range* ([`lib_range`]), and the
//! `.foreign` stubs here stand for code loaded from elsewhere (an
//! unmodified binary) whose `syscall`s the handler answers. Because the
//! range holds every `syscall` of the program but those stubs, the
//! registrations below cannot send this program's own system calls
//! anywhere but the kernel: they are safe.
//!
//! Handlers (ring 3, entered by the kernel's `sysretq` with `rsp` = this
//! core's handler stack top and the program's registers):
//!
//! * [`Handler::Answer`]: answers `rax = rax + rdi` (the number plus the
//!   first argument), restores the program's `rflags` and `rsp` from this
//!   core's [`abi::VcpuPage`] and jumps back to its `rip`: 5 instructions,
//!   the benchmark's handler;
//! * [`Handler::Record`]: first stores every register as it arrived and
//!   the page's record ([`seen`]), then answers like `Answer`.
//!
//! Both push on the handler stack (the `rflags` restore), so an unmapped
//! handler stack faults in ring 3 at the handler's first push.
#![allow(unsafe_code, reason = "the handler and foreign stubs are assembly")]

use abi::Error;

/// Which library handler a registration uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    /// Answers `rax + rdi` and returns.
    Answer,
    /// Records the registers ([`seen`]), then answers as `Answer`.
    Record,
}

/// Registers in [`seen`] and [`after`], in this order.
pub const REGS: [&str; 19] = [
    "rax",
    "rbx",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "rbp",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "rsp",
    "page.rip",
    "page.rflags",
    "page.rsp",
];

/// The value [`foreign_probe`] loads into register `i` of [`REGS`] (for
/// `rax` the number it is given; `rsp`, `rcx`, `r11` are not loaded).
pub const fn probe_value(i: usize) -> u64 {
    0x5eed_0000_0000_0000 | (i as u64) << 8 | 0x11
}

#[cfg(target_os = "none")]
mod imp {
    use core::arch::global_asm;
    use core::mem::offset_of;

    /// Registers as the record handler saw them (see `REGS`).
    #[unsafe(no_mangle)]
    static mut LIBOS_REDIRECT_SEEN: [u64; 19] = [0; 19];
    /// Registers as `foreign_probe` found them after its `syscall`.
    #[unsafe(no_mangle)]
    static mut LIBOS_REDIRECT_AFTER: [u64; 19] = [0; 19];

    unsafe extern "C" {
        static __lib_text_end: u8;
        static __text_end: u8;
        pub fn libos_redirect_answer();
        pub fn libos_redirect_record();
        pub fn libos_foreign_syscall(n: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> u64;
        pub fn libos_foreign_probe(n: u64) -> u64;
    }

    pub fn lib_end() -> u64 {
        (&raw const __lib_text_end) as u64
    }
    pub fn text_end() -> u64 {
        (&raw const __text_end) as u64
    }
    pub fn seen() -> [u64; 19] {
        // SAFETY: a plain copy of a static only the handler (this vCPU, not
        // running now) writes.
        unsafe { core::ptr::read_volatile(&raw const LIBOS_REDIRECT_SEEN) }
    }
    pub fn after() -> [u64; 19] {
        // SAFETY: as `seen`.
        unsafe { core::ptr::read_volatile(&raw const LIBOS_REDIRECT_AFTER) }
    }

    global_asm!(
        r#"
    // Stores the 16 general registers, as they are, into the `REGS`-ordered
    // table `\table` (rsp as it is at this point); leaves rax = the
    // table's address.
    .macro libos_redirect_store_regs table
    push rax
    lea rax, [rip + \table]
    pop qword ptr [rax]
    mov [rax + 8], rbx
    mov [rax + 16], rcx
    mov [rax + 24], rdx
    mov [rax + 32], rsi
    mov [rax + 40], rdi
    mov [rax + 48], rbp
    mov [rax + 56], r8
    mov [rax + 64], r9
    mov [rax + 72], r10
    mov [rax + 80], r11
    mov [rax + 88], r12
    mov [rax + 96], r13
    mov [rax + 104], r14
    mov [rax + 112], r15
    mov [rax + 120], rsp
    .endm

    .text
    .global libos_redirect_answer
libos_redirect_answer:
    add rax, rdi
    push qword ptr gs:[{rflags}]
    popfq
    mov rsp, qword ptr gs:[{rsp}]
    jmp qword ptr gs:[{rip}]

    .global libos_redirect_record
libos_redirect_record:
    libos_redirect_store_regs LIBOS_REDIRECT_SEEN
    mov rcx, qword ptr gs:[{rip}]
    mov [rax + 128], rcx
    mov rcx, qword ptr gs:[{rflags}]
    mov [rax + 136], rcx
    mov rcx, qword ptr gs:[{rsp}]
    mov [rax + 144], rcx
    mov rax, [rax]
    jmp libos_redirect_answer

    .pushsection .foreign, "ax"
    .global libos_foreign_syscall
libos_foreign_syscall:
    mov rax, rdi
    mov rdi, rsi
    mov rsi, rdx
    mov rdx, rcx
    mov r10, r8
    mov r8, r9
    xor r9d, r9d
    syscall
    ret

    .global libos_foreign_probe
libos_foreign_probe:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov rax, rdi
    mov rbx, {v1}
    mov rdx, {v3}
    mov rsi, {v4}
    mov rdi, {v5}
    mov rbp, {v6}
    mov r8, {v7}
    mov r9, {v8}
    mov r10, {v9}
    mov r12, {v11}
    mov r13, {v12}
    mov r14, {v13}
    mov r15, {v14}
    syscall
    libos_redirect_store_regs LIBOS_REDIRECT_AFTER
    mov rax, [rax]
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
    .popsection
    "#,
        rip = const offset_of!(abi::VcpuPage, redirect_rip),
        rflags = const offset_of!(abi::VcpuPage, redirect_rflags),
        rsp = const offset_of!(abi::VcpuPage, redirect_rsp),
        v1 = const super::probe_value(1),
        v3 = const super::probe_value(3),
        v4 = const super::probe_value(4),
        v5 = const super::probe_value(5),
        v6 = const super::probe_value(6),
        v7 = const super::probe_value(7),
        v8 = const super::probe_value(8),
        v9 = const super::probe_value(9),
        v11 = const super::probe_value(11),
        v12 = const super::probe_value(12),
        v13 = const super::probe_value(13),
        v14 = const super::probe_value(14),
    );
}

/// The program's own code: `USER_MIN` up to the `.foreign` stubs.
pub fn lib_range() -> (u64, u64) {
    #[cfg(target_os = "none")]
    return (abi::USER_MIN, imp::lib_end());
    #[cfg(not(target_os = "none"))]
    (abi::USER_MIN, abi::USER_MIN + 1)
}

/// Where the `.foreign` stubs lie (outside [`lib_range`]).
pub fn foreign_range() -> (u64, u64) {
    #[cfg(target_os = "none")]
    return (imp::lib_end(), imp::text_end());
    #[cfg(not(target_os = "none"))]
    (0, 0)
}

/// Entry address of `handler`.
pub fn handler_addr(handler: Handler) -> u64 {
    #[cfg(target_os = "none")]
    return match handler {
        Handler::Answer => imp::libos_redirect_answer as *const () as u64,
        Handler::Record => imp::libos_redirect_record as *const () as u64,
    };
    #[cfg(not(target_os = "none"))]
    {
        let _ = handler;
        0
    }
}

/// Registers `handler` for this environment's `.foreign` code, with core
/// `c`'s handler stack ending at `stack_top - c * stride` (the caller maps
/// it; an unmapped one makes the handler fault at its first push).
pub fn install(handler: Handler, stack_top: u64, stride: u64) -> Result<u64, Error> {
    let (start, end) = lib_range();
    // SAFETY: the range holds every `syscall` of this program but the
    // `.foreign` stubs (see the module docs), and both handlers return to
    // the recorded `rip`/`rsp` with only `rax`, `rcx`, `r11` changed.
    unsafe {
        crate::sys::set_syscall_redirect(handler_addr(handler), stack_top, stride, start, end)
    }
}

/// A `syscall` from the `.foreign` code: `rax = n`, the arguments in
/// `rdi, rsi, rdx, r10, r8` (`r9` = 0). With a redirection registered, the
/// handler answers; otherwise the kernel does.
pub fn foreign_syscall(n: u64, args: [u64; 5]) -> u64 {
    #[cfg(target_os = "none")]
    // SAFETY: the stub follows the C ABI; it clobbers only caller-saved
    // registers (and rcx/r11 through `syscall`); whoever answers, it
    // returns here with its stack as it left it.
    return unsafe { imp::libos_foreign_syscall(n, args[0], args[1], args[2], args[3], args[4]) };
    #[cfg(not(target_os = "none"))]
    {
        let _ = (n, args);
        u64::MAX
    }
}

/// A `syscall` from the `.foreign` code with every register loaded with
/// [`probe_value`] (and `rax = n`); afterwards [`after`] holds the
/// registers as the stub found them. Returns `rax`.
pub fn foreign_probe(n: u64) -> u64 {
    #[cfg(target_os = "none")]
    // SAFETY: the stub saves and restores the callee-saved registers it
    // loads; it writes only its own static.
    return unsafe { imp::libos_foreign_probe(n) };
    #[cfg(not(target_os = "none"))]
    {
        let _ = n;
        u64::MAX
    }
}

/// The registers [`Handler::Record`] last saw ([`REGS`] order).
pub fn seen() -> [u64; 19] {
    #[cfg(target_os = "none")]
    return imp::seen();
    #[cfg(not(target_os = "none"))]
    [0; 19]
}

/// The registers [`foreign_probe`]'s stub found after its last `syscall`
/// (the first 16 of [`REGS`]).
pub fn after() -> [u64; 19] {
    #[cfg(target_os = "none")]
    return imp::after();
    #[cfg(not(target_os = "none"))]
    [0; 19]
}
