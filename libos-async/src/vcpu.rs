//! Secondary vCPUs.
//!
//! [`start_vcpu`]`(core, f, arg)` gives core `core` a stack: the growable
//! region `"stack C"` ([`crate::vm::stack`]) below
//! [`crate::layout::vcpu_stack_top`]`(core)`, 16 KiB committed at first,
//! growing on faults to the whole slot but its lowest page, the guard
//! (made once, and reused when a later vCPU starts there) and starts a vCPU on it at an assembly
//! trampoline that aligns the stack and calls `f(arg)`. The first vCPU runs
//! on the kernel-provided stack below `abi::STACK_TOP`; if it runs on core
//! `c`, slot `c` is simply unused until another vCPU starts there.

use abi::{Error, MAX_CORES, PAGE_SIZE};
use spin::Mutex;

use crate::{exception, layout, sys, vm};

/// What each core's next vCPU runs, and which stacks are mapped.
struct Table {
    /// The function the vCPU started on each core calls.
    entry: [Option<fn(u64) -> !>; MAX_CORES],
    /// Bit `c`: core `c`'s stack is mapped.
    stacks: u64,
}

static TABLE: Mutex<Table> = Mutex::new(Table { entry: [None; MAX_CORES], stacks: 0 });

/// Starts a vCPU on `core` that runs `f(arg)` on its own stack.
///
/// Errors: [`Error::NoSuchCore`] for a core beyond [`MAX_CORES`] (or one the
/// kernel refuses: offline, or this environment already runs there), and
/// the allocation errors of mapping the stack.
pub fn start_vcpu(core: usize, f: fn(u64) -> !, arg: u64) -> Result<(), Error> {
    if core >= MAX_CORES {
        return Err(Error::NoSuchCore);
    }
    let mut table = TABLE.lock();
    if table.stacks & (1 << core) == 0 {
        // The stub must be there to serve the stack's growth faults.
        exception::ensure_registered()?;
        vm::stack(
            vm::stack_name(core),
            layout::vcpu_stack_top(core),
            layout::VCPU_STACK_SLOT - PAGE_SIZE,
            layout::VCPU_STACK_SIZE,
        )?;
        table.stacks |= 1 << core;
    }
    table.entry[core] = Some(f);
    sys::vcpu_start(
        core as u64,
        crate::entry::vcpu_entry_addr(),
        layout::vcpu_stack_top(core),
        arg,
    )?;
    Ok(())
}

/// Rust side of the vCPU trampoline.
pub(crate) fn vcpu_main(arg: u64) -> ! {
    let core = sys::core_id();
    let f = TABLE.lock().entry.get(core).copied().flatten();
    match f {
        Some(f) => f(arg),
        None => {
            crate::println!("libos: vCPU on core {core} has no entry");
            sys::exit(103)
        }
    }
}
