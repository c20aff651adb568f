//! Exception upcalls.
//!
//! [`set_exception_handler`] maps one 16 KiB exception stack per core that
//! may run this environment's vCPUs (every core in `info().user_cores`, or
//! every online core if that set is empty), each at
//! [`crate::layout::exc_stack_top`]`(core)` with an unmapped guard below it
//! (once per core; later calls only map what is missing), and registers the
//! assembly stub in `sys` with the kernel, with stack top
//! [`crate::layout::EXC_STACK_TOP`] and stride
//! [`crate::layout::EXC_STACK_SLOT`]. On an upcall the stub calls the handler
//! with the [`UpcallFrame`]; if it returns `true` the (possibly edited) frame
//! is resumed (in user space, or through the kernel: [`resume_via_kernel`]),
//! otherwise the frame is printed and the environment exits with code 102.
//! Before the handler, the library's own fix-ups run: a page fault in a
//! region the library fills (the heap, vCPU stacks, [`crate::vm`] regions)
//! is served by [`crate::vm`], and one in the channel window is repaired by
//! [`crate::channel::shm`]; the application's handler sees every other
//! exception. [`ensure_registered`] registers the stub without a handler,
//! for those fix-ups alone (the heap does so before its first page).
//! Clearing the handler leaves the stub (and the fix-ups) in place.
//!
//! **One exception stack per core.** Each vCPU's frames land on its own
//! core's stack, so several vCPUs may fault at the same time; a nested fault
//! on the same vCPU, inside the handler, lands below the current frame. The
//! handler itself runs concurrently on every core that faults: it must only
//! touch shared state through atomics or locks.

use abi::{Error, PAGE_SIZE, Rights, UpcallFrame};
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

use crate::{layout, mem, sys};

/// An exception handler: may edit the frame; `true` resumes it.
pub type Handler = fn(&mut UpcallFrame) -> bool;

static HANDLER: Mutex<Option<Handler>> = Mutex::new(None);
/// The upcall stub is registered with the kernel.
static REGISTERED: AtomicBool = AtomicBool::new(false);
static RESUME_VIA_KERNEL: AtomicBool = AtomicBool::new(false);

/// Chooses how a handled exception resumes: by default in user space (no
/// system call; see `entry::resume_in_user`), or with `true`, through the
/// kernel's `ExceptionResume` (needed by code that uses a red zone).
pub fn resume_via_kernel(yes: bool) {
    RESUME_VIA_KERNEL.store(yes, Ordering::Relaxed);
}
/// Bit `c`: core `c`'s exception stack is mapped.
static STACKS_MAPPED: Mutex<u64> = Mutex::new(0);

/// The cores whose vCPUs may fault: the user cores, or every online core.
pub(crate) fn fault_cores() -> u64 {
    let info = sys::info();
    if info.user_cores != 0 {
        info.user_cores
    } else if info.cores as usize >= abi::MAX_CORES {
        u64::MAX
    } else {
        (1u64 << info.cores) - 1
    }
}

/// Maps the exception stack of every core in `cores` not mapped yet.
pub(crate) fn map_stacks(cores: u64) -> Result<(), Error> {
    let mut mapped = STACKS_MAPPED.lock();
    let missing = cores & !*mapped;
    for core in (0..abi::MAX_CORES).filter(|&c| missing & (1 << c) != 0) {
        let top = layout::exc_stack_top(core);
        mem::map_fresh(
            top - layout::EXC_STACK_SIZE,
            layout::EXC_STACK_SIZE / PAGE_SIZE,
            Rights::RW,
        )?;
        *mapped |= 1 << core;
    }
    Ok(())
}

/// Installs `handler` for every exception of this environment (replacing
/// any previous one), with one exception stack per core (see the module
/// documentation).
pub fn set_exception_handler(handler: Handler) -> Result<(), Error> {
    map_stacks(fault_cores())?;
    *HANDLER.lock() = Some(handler);
    register_stub()
}

fn register_stub() -> Result<(), Error> {
    sys::set_exception_handler(
        crate::entry::exception_entry_addr(),
        layout::EXC_STACK_TOP,
        layout::EXC_STACK_SLOT,
    )?;
    REGISTERED.store(true, Ordering::Release);
    Ok(())
}

/// In a child just forked on `core` (see [`crate::fork`]): only that
/// core's exception stack is mapped (the parent's others were not shared).
pub(crate) fn forked_child(core: usize) {
    *STACKS_MAPPED.lock() = 1 << core;
}

/// Registers the upcall stub (with the exception stacks) if nothing is
/// registered yet, without an application handler: the library's own
/// fix-ups (channel pages whose peer vanished, see
/// [`crate::channel::shm`]) and slot upcalls ([`crate::cpu`]) then work;
/// any other exception still ends the environment with code 102.
pub fn ensure_registered() -> Result<(), Error> {
    if REGISTERED.load(Ordering::Acquire) {
        return Ok(());
    }
    map_stacks(fault_cores())?;
    register_stub()
}

/// Removes the application's handler: later exceptions that no library
/// fix-up owns end the environment (exit 102, the frame printed). The
/// stub stays registered, because lazy regions (the heap among them) need
/// it to be filled.
pub fn clear_exception_handler() -> Result<(), Error> {
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

/// Rust side of the upcall stub. The exceptions (vectors below
/// [`abi::vector::SLOT_START`]) take the short way here; the kernel's own
/// upcalls, the unhandled end and the resumption through the kernel are
/// out of line, so that the fault → handler → resume path saves and sets
/// up no more than it uses.
#[inline(always)]
pub(crate) fn dispatch(frame: &mut UpcallFrame) -> ! {
    if frame.vector >= abi::vector::SLOT_START {
        kernel_upcall(frame);
    }
    let resume = crate::fork::cow_fixup(frame) || crate::vm::fixup(frame) || {
        let handler = *HANDLER.lock();
        crate::channel::shm::fixup(frame)
            || match handler {
                Some(h) => h(frame),
                None => false,
            }
    };
    if resume && !RESUME_VIA_KERNEL.load(Ordering::Relaxed) {
        crate::entry::resume_in_user(frame);
    }
    resume_or_exit(frame, resume)
}

/// A signal or a slot upcall.
#[cold]
#[inline(never)]
fn kernel_upcall(frame: &mut UpcallFrame) -> ! {
    if frame.vector == abi::vector::SIGNAL {
        crate::signal::upcall(frame);
    }
    crate::cpu::slot_upcall(frame)
}

/// A handled exception resumed through the kernel, or an unhandled one.
#[cold]
#[inline(never)]
fn resume_or_exit(frame: &UpcallFrame, resume: bool) -> ! {
    if resume {
        let e = sys::exception_resume(frame);
        crate::println!("libos: exception_resume failed: {e:?}");
    } else {
        crate::print!("libos: unhandled ");
    }
    print_frame(frame);
    sys::exit(102)
}
