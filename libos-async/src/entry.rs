//! The entry points the kernel jumps to, and the way back to interrupted
//! code: the naked stubs that turn the kernel's register conventions into
//! calls of the runtime's Rust functions.
//!
//! - `_start`: the ELF entry, the first vCPU; runs the application's
//!   [`crate::entry!`] function and exits with its result;
//! - the secondary-vCPU trampoline (`vcpu_entry_addr`, for
//!   [`crate::start_vcpu`]) into [`crate::vcpu`];
//! - the exception-upcall stub (`exception_entry_addr`) into
//!   [`crate::exception`], and `resume_in_user`, the resumption of an
//!   upcall frame without entering the kernel;
//! - the protected-control-transfer stub (`ipc_entry_addr`) into
//!   [`crate::cpu`].
//!
//! This module is what ties the machine boundary to the runtime; the
//! system-call wrappers of [`crate::sys`] import none of it. Every stub
//! is `unsafe` (naked functions, a raw pointer from the kernel), each
//! with its reason beside it.

use abi::UpcallFrame;

use crate::sys::Message;
#[cfg(target_os = "none")]
use crate::sys::exit;

#[cfg(target_os = "none")]
unsafe extern "Rust" {
    /// The application's main function, defined by [`crate::entry!`].
    fn __libos_async_main(start_arg: u64) -> i32;
}

/// The ELF entry of every application: the kernel starts the first vCPU
/// here with `rsp = STACK_TOP`, `rdi = start_arg`.
#[cfg(target_os = "none")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start() -> ! {
    // SAFETY (naked): no prologue exists; the stub aligns the stack, ends the
    // frame-pointer chain and calls a Rust function that never returns, with
    // rdi (start_arg) untouched.
    core::arch::naked_asm!(
        "xor ebp, ebp",
        "and rsp, -16",
        "call {main}",
        "ud2",
        main = sym rust_start,
    )
}

/// `_start`'s Rust half: runs the app and exits with its code.
#[cfg(target_os = "none")]
extern "C" fn rust_start(start_arg: u64) -> ! {
    crate::vm::register_main_stack();
    // SAFETY: `entry!` defines `__libos_async_main` with exactly this
    // signature; the linker fails if the app did not use `entry!`.
    let code = unsafe { __libos_async_main(start_arg) };
    exit(code as i64 as u64)
}

/// Entry of every vCPU started by [`crate::start_vcpu`]: `rsp` = the top of
/// its stack, `rdi` = the argument.
#[unsafe(naked)]
extern "C" fn vcpu_entry() -> ! {
    // SAFETY (naked): as `_start`: align, end the frame chain, call a
    // diverging Rust function with rdi untouched.
    core::arch::naked_asm!(
        "xor ebp, ebp",
        "and rsp, -16",
        "call {main}",
        "ud2",
        main = sym vcpu_rust_entry,
    )
}

/// `vcpu_entry`'s Rust half.
extern "C" fn vcpu_rust_entry(arg: u64) -> ! {
    crate::vcpu::vcpu_main(arg)
}

/// Address of the vCPU trampoline, for [`crate::sys::vcpu_start`].
pub(crate) fn vcpu_entry_addr() -> u64 {
    vcpu_entry as *const () as u64
}

/// Entry of exception upcalls: `rsp` = `rdi` = the [`UpcallFrame`].
#[unsafe(naked)]
extern "C" fn exception_entry() -> ! {
    // SAFETY (naked): the frame lies at and above rsp; aligning rsp down and
    // calling only uses memory below it, so the frame stays intact. rdi (the
    // frame's address) is passed on untouched.
    core::arch::naked_asm!(
        "xor ebp, ebp",
        "and rsp, -16",
        "call {dispatch}",
        "ud2",
        dispatch = sym exception_rust_entry,
    )
}

/// `exception_entry`'s Rust half.
extern "C" fn exception_rust_entry(frame: *mut UpcallFrame) -> ! {
    // SAFETY: the kernel wrote a complete UpcallFrame at `frame` (8-byte
    // aligned, on the mapped, writable exception stack) and nothing else
    // refers to it: this activation owns it until it resumes or exits.
    let frame = unsafe { &mut *frame };
    crate::exception::dispatch(frame)
}

/// Resumes the context in `frame` without entering the kernel (Aegis-style):
/// the trap-time `rip` is written just below the trap-time `rsp`, every
/// general-purpose register and the user flags are reloaded from the frame,
/// and a `ret` on the trap-time stack lands on `rip` with `rsp` restored.
///
/// The 8 bytes below the interrupted `rsp` are overwritten: fine for code
/// built without a red zone (like everything for `x86_64-unknown-none`);
/// code that keeps data in a red zone must resume through
/// [`crate::sys::exception_resume`] instead. `popfq` in ring 3 cannot change IF or IOPL,
/// so the frame's flags are taken as they are.
pub(crate) fn resume_in_user(frame: &UpcallFrame) -> ! {
    const RIP: usize = core::mem::offset_of!(UpcallFrame, rip);
    const RSP: usize = core::mem::offset_of!(UpcallFrame, rsp);
    const RFLAGS: usize = core::mem::offset_of!(UpcallFrame, rflags);
    // SAFETY: `frame` is the upcall frame on the exception stack, owned by
    // this activation; the stack below it is free, and the slot below the
    // trap-time rsp is dead stack space in the interrupted code (no red
    // zone). Every register the interrupted code had is restored before the
    // final `ret`, which only pops the slot we wrote.
    unsafe {
        core::arch::asm!(
            "mov rsp, {frame}",
            "mov rax, [rsp + {rsp_off}]",
            "sub rax, 8",
            "mov rbx, [rsp + {rip_off}]",
            "mov [rax], rbx",
            "mov [rsp + {rsp_off}], rax",
            "push qword ptr [rsp + {flags_off}]",
            "mov rax, [rsp + 8 + {rax}]",
            "mov rbx, [rsp + 8 + {rbx}]",
            "mov rcx, [rsp + 8 + {rcx}]",
            "mov rdx, [rsp + 8 + {rdx}]",
            "mov rsi, [rsp + 8 + {rsi}]",
            "mov rdi, [rsp + 8 + {rdi}]",
            "mov rbp, [rsp + 8 + {rbp}]",
            "mov r8, [rsp + 8 + {r8}]",
            "mov r9, [rsp + 8 + {r9}]",
            "mov r10, [rsp + 8 + {r10}]",
            "mov r11, [rsp + 8 + {r11}]",
            "mov r12, [rsp + 8 + {r12}]",
            "mov r13, [rsp + 8 + {r13}]",
            "mov r14, [rsp + 8 + {r14}]",
            "mov r15, [rsp + 8 + {r15}]",
            "popfq",
            "mov rsp, [rsp + {rsp_off}]",
            "ret",
            frame = in(reg) frame as *const UpcallFrame,
            rsp_off = const RSP,
            rip_off = const RIP,
            flags_off = const RFLAGS,
            rax = const core::mem::offset_of!(UpcallFrame, rax),
            rbx = const core::mem::offset_of!(UpcallFrame, rbx),
            rcx = const core::mem::offset_of!(UpcallFrame, rcx),
            rdx = const core::mem::offset_of!(UpcallFrame, rdx),
            rsi = const core::mem::offset_of!(UpcallFrame, rsi),
            rdi = const core::mem::offset_of!(UpcallFrame, rdi),
            rbp = const core::mem::offset_of!(UpcallFrame, rbp),
            r8 = const core::mem::offset_of!(UpcallFrame, r8),
            r9 = const core::mem::offset_of!(UpcallFrame, r9),
            r10 = const core::mem::offset_of!(UpcallFrame, r10),
            r11 = const core::mem::offset_of!(UpcallFrame, r11),
            r12 = const core::mem::offset_of!(UpcallFrame, r12),
            r13 = const core::mem::offset_of!(UpcallFrame, r13),
            r14 = const core::mem::offset_of!(UpcallFrame, r14),
            r15 = const core::mem::offset_of!(UpcallFrame, r15),
            options(noreturn)
        )
    }
}

/// Entry of protected control transfers: `rsp` = this core's IPC stack
/// top, `rdi` = the caller's id, the message in `rsi`, `rdx`, `r10`, `r8`,
/// `r9`, `r12`, `r13`, `r14`.
#[unsafe(naked)]
extern "C" fn ipc_entry() -> ! {
    // SAFETY (naked): the message registers are stored in a 64-byte array
    // on the fresh IPC stack (16-byte aligned), whose address is passed with
    // the caller id to a diverging Rust function.
    core::arch::naked_asm!(
        "xor ebp, ebp",
        "and rsp, -16",
        "sub rsp, 64",
        "mov [rsp], rsi",
        "mov [rsp + 8], rdx",
        "mov [rsp + 16], r10",
        "mov [rsp + 24], r8",
        "mov [rsp + 32], r9",
        "mov [rsp + 40], r12",
        "mov [rsp + 48], r13",
        "mov [rsp + 56], r14",
        "mov rsi, rsp",
        "call {serve}",
        "ud2",
        serve = sym ipc_rust_entry,
    )
}

/// `ipc_entry`'s Rust half.
extern "C" fn ipc_rust_entry(caller: u64, msg: *const Message) -> ! {
    // SAFETY: the stub stored the eight message words at `msg`, on this
    // activation's own stack, just above the return address.
    let msg = unsafe { *msg };
    crate::cpu::serve(caller, msg)
}

/// Address of the IPC entry stub, for [`crate::sys::ipc_register`].
pub(crate) fn ipc_entry_addr() -> u64 {
    ipc_entry as *const () as u64
}

/// Address of the exception stub, for [`crate::sys::set_exception_handler`].
pub(crate) fn exception_entry_addr() -> u64 {
    exception_entry as *const () as u64
}
