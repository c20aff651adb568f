//! The program's system calls: the redirection entry, its stack, the
//! process state it works on, and the jump into the program.
//!
//! The kernel enters [`syscall_entry`] in ring 3 (`SetSyscallRedirect`)
//! for every `syscall` the program executes outside this runtime's image,
//! with `rsp` = the handler stack's top and every other register as the
//! program left it (`rax` = the Linux number, `rdi`, `rsi`, `rdx`, `r10`,
//! `r8`, `r9` = the arguments); the program's `rip`, `rflags` and `rsp`
//! are in this core's `VcpuPage` (`gs:`). The stub saves all of that in a
//! [`Frame`] on the handler stack, calls [`handle`], and returns to the
//! program itself, as Linux's `sysret` would leave it: `rax` = the result,
//! `rcx` = the return `rip`, `r11` = `rflags`, every other register as it
//! was (this runtime is soft-float: the vector registers are never
//! touched).
//!
//! One program, one vCPU: the handler stack is one (stride 0) and the
//! state is touched only by that vCPU, inside the handler.

use crate::glue::{self, Umem};
use core::cell::UnsafeCell;
use core::mem::offset_of;
use libos_async::abi::{self, VcpuPage};
use libos_async::sys;
use libos_posix::syscalls::{Process, dispatch};

/// The program's registers at its `syscall`, as the stub saves them
/// (lowest address first).
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    /// The Linux system-call number, then the result.
    pub rax: u64,
    /// Argument 1.
    pub rdi: u64,
    /// Argument 2.
    pub rsi: u64,
    /// Argument 3.
    pub rdx: u64,
    /// Argument 4.
    pub r10: u64,
    /// Argument 5.
    pub r8: u64,
    /// Argument 6.
    pub r9: u64,
    #[allow(missing_docs)]
    pub r15: u64,
    #[allow(missing_docs)]
    pub r14: u64,
    #[allow(missing_docs)]
    pub r13: u64,
    #[allow(missing_docs)]
    pub r12: u64,
    #[allow(missing_docs)]
    pub rbp: u64,
    #[allow(missing_docs)]
    pub rbx: u64,
    /// The program's `rflags` (from `VcpuPage::redirect_rflags`).
    pub rflags: u64,
    /// Where it resumes (`VcpuPage::redirect_rip`).
    pub rip: u64,
    /// Its stack pointer (`VcpuPage::redirect_rsp`).
    pub rsp: u64,
}

/// What the handler works on.
pub struct State {
    /// The Linux process.
    pub process: Process<'static>,
    /// Checked copies into its memory.
    pub umem: Umem,
    /// TSC when the runtime started (before the initrd was mapped).
    pub start_tsc: u64,
    /// TSC when the program was entered.
    pub entered_tsc: u64,
}

struct Global(UnsafeCell<Option<State>>);

// SAFETY: only the program's one vCPU touches it, inside the handler (and
// `install`, before the program starts); the handler is never re-entered
// (a `syscall` from this runtime's code is an exokernel call).
unsafe impl Sync for Global {}

static STATE: Global = Global(UnsafeCell::new(None));

/// Makes `state` the handler's, before the program starts.
pub fn install(state: State) {
    // SAFETY: see `Global`: the program has not started, nothing else reads it.
    unsafe { *STATE.0.get() = Some(state) };
}

/// The state, for the signal upcall (`crate::signal`) and the stub's last
/// look: only while the system-call handler is not running on this vCPU
/// (the upcall checks where it interrupted), so this is the only reference.
pub fn state() -> Option<&'static mut State> {
    // SAFETY: see above and `Global`.
    unsafe { (*STATE.0.get()).as_mut() }
}

/// Where the stub saves the program's [`Frame`]: just below the handler
/// stack's top (it is entered at the top every time).
pub fn saved_frame() -> *mut Frame {
    (HANDLER_STACK.0.get() as u64 + HANDLER_STACK_SIZE as u64
        - core::mem::size_of::<Frame>() as u64) as *mut Frame
}

/// Size of the handler stack.
const HANDLER_STACK_SIZE: usize = 256 * 1024;

#[repr(C, align(16))]
struct HandlerStack(UnsafeCell<[u8; HANDLER_STACK_SIZE]>);

// SAFETY: used only as the handler's stack, by the kernel's redirection on
// the program's one vCPU; no Rust reference to its bytes is made.
unsafe impl Sync for HandlerStack {}

static HANDLER_STACK: HandlerStack = HandlerStack(UnsafeCell::new([0; HANDLER_STACK_SIZE]));

/// `SetSyscallRedirect`.
const SET_SYSCALL_REDIRECT: u64 = 33;
/// Where `build.rs` links this runtime.
const LINK_BASE: u64 = 0x7000_0000;

unsafe extern "C" {
    /// End of this runtime's image (libos-async's `user.ld`).
    static __image_end: u8;
}

/// Registers the redirection: the entry, the handler stack, and this
/// runtime's image as the library range.
pub fn register() -> Result<u64, abi::Error> {
    let top = HANDLER_STACK.0.get() as u64 + HANDLER_STACK_SIZE as u64;
    let lib_end = (&raw const __image_end) as u64;
    let entry = syscall_entry as *const () as u64;
    abi::decode(sys::syscall5(SET_SYSCALL_REDIRECT, entry, top, 0, LINK_BASE, lib_end))
}

/// The redirection entry (see the module docs).
#[unsafe(naked)]
extern "C" fn syscall_entry() -> ! {
    // SAFETY (naked): entered by the kernel with rsp = the handler stack's
    // 16-byte aligned top. 16 pushes keep it aligned for the call; the
    // frame layout is `Frame`'s. The return path pops what was pushed,
    // then, still on the handler stack, loads rflags and jumps to the
    // program's rip on its own rsp, writing nothing below the program's
    // stack (its red zone stays intact).
    core::arch::naked_asm!(
        "push qword ptr gs:[{rsp}]",
        "push qword ptr gs:[{rip}]",
        "push qword ptr gs:[{rflags}]",
        "push rbx",
        "push rbp",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "push r9",
        "push r8",
        "push r10",
        "push rdx",
        "push rsi",
        "push rdi",
        "push rax",
        "mov rdi, rsp",
        "cld",
        "call {handle}",
        // From here the program's state is the saved frame (`crate::signal`).
        ".globl posix_tail_start",
        "posix_tail_start:",
        "cmp qword ptr [rip + {async_bits}], 0",
        "jne 3f",
        "pop rax",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop r10",
        "pop r8",
        "pop r9",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbp",
        "pop rbx",
        "mov r11, [rsp]",
        "mov rcx, [rsp + 8]",
        "popfq",
        "mov rsp, [rsp + 8]",
        "jmp rcx",
        ".globl posix_tail_end",
        "posix_tail_end:",
        // A signal arrived after the handler's own look: deliver, look again.
        "3:",
        "mov rdi, rsp",
        "call {late}",
        "jmp posix_tail_start",
        rsp = const offset_of!(VcpuPage, redirect_rsp),
        rip = const offset_of!(VcpuPage, redirect_rip),
        rflags = const offset_of!(VcpuPage, redirect_rflags),
        handle = sym handle,
        async_bits = sym crate::signal::ASYNC,
        late = sym late,
    )
}

/// The stub's last look at signals (see `crate::signal`).
extern "C" fn late(frame: &mut Frame) {
    if let Some(state) = state() {
        crate::signal::late(state, frame);
    }
}

/// The line the runtime logs when the program ends with `status` — the
/// run's first process only: a forked child's end is its parent's to
/// report (`wait4`), and a shell's every command would otherwise write a
/// line to the console.
pub fn log_exit(state: &State, status: u64) {
    if crate::procs::IS_CHILD.load(core::sync::atomic::Ordering::Acquire) {
        return;
    }
    let hz = libos_async::info().tsc_hz.max(1);
    let us = |ticks: u64| u128::from(ticks) * 1_000_000 / u128::from(hz);
    let now = sys::rdtsc();
    glue::log_line(&alloc::format!(
        "posix: pid {} on core {} exit {} (environment status {status:#x}) after {} us ({} us \
         to load and start, {} us running)",
        state.process.proc.pid,
        sys::core_id(),
        state.process.exit_status().unwrap_or(0),
        us(now - state.start_tsc),
        us(state.entered_tsc - state.start_tsc),
        us(now - state.entered_tsc)
    ));
}

/// One system call of the program.
extern "C" fn handle(frame: &mut Frame) {
    // SAFETY: see `Global`: this vCPU is the only user, and the handler is
    // not re-entered, so this is the only reference while it lives.
    let Some(state) = (unsafe { &mut *STATE.0.get() }).as_mut() else {
        glue::log_line("posix: system call before the process exists");
        sys::exit(127);
    };
    let nr = frame.rax;
    if nr == libos_posix::linux::sysno::SYS_RT_SIGRETURN {
        crate::signal::sigreturn(state, frame);
    }
    let args = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9];
    let result = dispatch(&mut state.process, nr, args, &mut state.umem);
    if let Some(status) = state.process.env_exit_status() {
        log_exit(state, status);
        crate::fsserver::stop();
        sys::exit(status);
    }
    if let Some(entry) = state.process.take_exec() {
        // execve: the old program is gone; the handler stack is abandoned
        // (the next system call starts it afresh).
        // `enter_program` pushes below the start stack: back that page.
        if state.umem.check(entry.rsp - 8, 8, true).is_err() {
            glue::log_line("posix: no frame for the new program's stack");
            sys::exit(libos_posix::proc::env_status_of_signal(
                crate::procs::IS_CHILD.load(core::sync::atomic::Ordering::Acquire),
                9,
            ));
        }
        enter_program(entry.rip, entry.rsp);
    }
    if let Some(sp) = state.process.take_child_stack() {
        // A clone child on the stack its parent gave it.
        frame.rsp = sp;
    }
    frame.rax = result as u64;
    if crate::signal::pending(state, result) {
        crate::signal::at_syscall_end(state, frame, nr);
    }
}

/// Starts the program: `rsp` = its start stack, `rdx` = 0 (no `atexit`
/// function), every other register 0, at `rip`.
#[unsafe(naked)]
pub extern "C" fn enter_program(rip: u64, rsp: u64) -> ! {
    // SAFETY (naked): switches to the program's stack (built by the
    // loader), pushes the entry just below its start (unused memory of the
    // stack's own mapping) and `ret`s there, leaving rsp exactly at argc.
    core::arch::naked_asm!(
        "mov rsp, rsi",
        "push rdi",
        "xor eax, eax",
        "xor ebx, ebx",
        "xor ecx, ecx",
        "xor edx, edx",
        "xor esi, esi",
        "xor edi, edi",
        "xor ebp, ebp",
        "xor r8d, r8d",
        "xor r9d, r9d",
        "xor r10d, r10d",
        "xor r11d, r11d",
        "xor r12d, r12d",
        "xor r13d, r13d",
        "xor r14d, r14d",
        "xor r15d, r15d",
        "ret",
    )
}

/// Whether `[start, end)` overlaps this runtime's image.
pub fn overlaps_runtime(start: u64, end: u64) -> bool {
    start < (&raw const __image_end) as u64 && end > LINK_BASE
}

/// Whether `rip` lies in this runtime's image.
pub fn in_runtime(rip: u64) -> bool {
    (LINK_BASE..(&raw const __image_end) as u64).contains(&rip)
}

/// The program's fatal exceptions: as Linux's default action for the
/// signal the exception raises (the process dies), one line on its
/// standard error and the shell's status for "killed by signal N"
/// (128 + N). Exceptions in this runtime's own code are left to
/// libos-async (it prints the frame and exits 102).
fn program_exception(frame: &mut abi::UpcallFrame) -> bool {
    use abi::vector;
    if in_runtime(frame.rip) || frame.vector >= vector::SLOT_START {
        return false;
    }
    // The first touch of a lazy page (`glue::Book`): back it and retry.
    if frame.vector == vector::PAGE_FAULT
        && frame.error_code & abi::pf::PRESENT == 0
        && let Some(state) = state()
        && state.umem.fault_in(
            frame.fault_addr,
            frame.error_code & abi::pf::WRITE != 0,
            frame.error_code & abi::pf::FETCH != 0,
        )
    {
        return true;
    }
    let (signal, name) = match frame.vector {
        vector::PAGE_FAULT | vector::GENERAL_PROTECTION => (11, "Segmentation fault"),
        vector::INVALID_OPCODE => (4, "Illegal instruction"),
        vector::DIVIDE_ERROR | vector::X87_FLOATING_POINT | vector::SIMD_FLOATING_POINT => {
            (8, "Floating point exception")
        }
        vector::BREAKPOINT => (5, "Trace/breakpoint trap"),
        _ => (11, "Segmentation fault"),
    };
    let line = alloc::format!(
        "posix: {name} (vector {}, address {:#x}, rip {:#x})\n",
        frame.vector,
        frame.fault_addr,
        frame.rip
    );
    glue::emit(glue::STDERR, line.as_bytes());
    let child = crate::procs::IS_CHILD.load(core::sync::atomic::Ordering::Acquire);
    // The program's code faulted, not the runtime's (checked above): no
    // system call is in progress, so the process state is ours to close.
    if let Some(state) = state() {
        state.process.close_all();
    }
    crate::fsserver::stop();
    sys::exit(libos_posix::proc::env_status_of_signal(child, signal))
}

/// Registers [`program_exception`]. A handled exception of the program
/// resumes through the kernel (`ExceptionResume`): libos-async's return
/// in user space writes the return address below the interrupted `rsp`,
/// into the red zone a Linux program may keep live data in.
pub fn catch_program_exceptions() -> Result<(), abi::Error> {
    libos_async::exception::resume_via_kernel(true);
    libos_async::set_exception_handler(program_exception)
}
