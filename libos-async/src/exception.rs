//! Exception upcalls.
//!
//! [`set_exception_handler`] maps the exception stack (16 KiB ending at
//! [`crate::layout::EXC_STACK_TOP`], once) and registers the assembly stub
//! in `sys` with the kernel. On an upcall the stub calls the handler with the
//! [`UpcallFrame`]; if it returns `true` the (possibly edited) frame is
//! resumed (in user space, or through the kernel: [`resume_via_kernel`]),
//! otherwise the frame is printed and the environment exits with
//! code 102.
//!
//! **One exception stack per environment.** The ABI registers one stack per
//! environment, and the kernel writes each frame at its top unless the
//! interrupted `rsp` is already on it. Two vCPUs that fault at the same time
//! would therefore overwrite each other's frames: applications must not
//! fault on several cores at once (a nested fault on the *same* vCPU, inside
//! the handler, is fine: it lands below the current frame).

use abi::{Error, PAGE_SIZE, Rights, UpcallFrame};
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

use crate::{layout, mem, sys};

/// An exception handler: may edit the frame; `true` resumes it.
pub type Handler = fn(&mut UpcallFrame) -> bool;

static HANDLER: Mutex<Option<Handler>> = Mutex::new(None);
static RESUME_VIA_KERNEL: AtomicBool = AtomicBool::new(false);

/// Chooses how a handled exception resumes: by default in user space (no
/// system call; see `sys::resume_in_user`), or with `true`, through the
/// kernel's `ExceptionResume` (needed by code that uses a red zone).
pub fn resume_via_kernel(yes: bool) {
    RESUME_VIA_KERNEL.store(yes, Ordering::Relaxed);
}
static STACK_MAPPED: AtomicBool = AtomicBool::new(false);
static STACK_LOCK: Mutex<()> = Mutex::new(());

/// Installs `handler` for every exception of this environment (replacing
/// any previous one).
pub fn set_exception_handler(handler: Handler) -> Result<(), Error> {
    *HANDLER.lock() = Some(handler);
    {
        let _guard = STACK_LOCK.lock();
        if !STACK_MAPPED.load(Ordering::Acquire) {
            mem::map_fresh(
                layout::EXC_STACK_TOP - layout::EXC_STACK_SIZE,
                layout::EXC_STACK_SIZE / PAGE_SIZE,
                Rights::RW,
            )?;
            STACK_MAPPED.store(true, Ordering::Release);
        }
    }
    sys::set_exception_handler(sys::exception_entry_addr(), layout::EXC_STACK_TOP, 0)?;
    Ok(())
}

/// Unregisters the handler: later exceptions kill the environment.
pub fn clear_exception_handler() -> Result<(), Error> {
    sys::set_exception_handler(0, 0, 0)?;
    *HANDLER.lock() = None;
    Ok(())
}

/// Prints a frame on one line.
pub fn print_frame(frame: &UpcallFrame) {
    crate::println!(
        "exception: vector {} error {:#x} addr {:#x} rip {:#x} rsp {:#x} rflags {:#x}",
        frame.vector,
        frame.error_code,
        frame.fault_addr,
        frame.rip,
        frame.rsp,
        frame.rflags
    );
}

/// Rust side of the upcall stub.
pub(crate) fn dispatch(frame: &mut UpcallFrame) -> ! {
    let handler = *HANDLER.lock();
    let resume = match handler {
        Some(h) => h(frame),
        None => false,
    };
    if resume {
        if !RESUME_VIA_KERNEL.load(Ordering::Relaxed) {
            sys::resume_in_user(frame);
        }
        let e = sys::exception_resume(frame);
        crate::println!("libos: exception_resume failed: {e:?}");
    } else {
        crate::print!("libos: unhandled ");
    }
    print_frame(frame);
    sys::exit(102)
}
