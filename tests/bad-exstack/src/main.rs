//! `bad_exstack`: registers its exception entry with a stack top in an
//! unmapped page (raw system call), then executes `ud2`. The kernel cannot
//! write the upcall frame, so it must kill the environment; surviving
//! exits 1.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::check::require;
use libos_async::layout::SCRATCH_BASE;
use libos_async::println;
use libos_async::sys::{self, probe};

libos_async::entry!(app_main);

/// Never mapped.
const UNMAPPED_STACK_TOP: u64 = SCRATCH_BASE + 0x10_0000;

fn never_called(_arg: u64) -> ! {
    println!("CHECK FAILED: bad_exstack handler ran");
    sys::exit(1)
}

fn app_main(_arg: u64) -> i32 {
    // Any user-half code address serves as the entry; it must never run.
    let entry = never_called as fn(u64) -> ! as usize as u64;
    require("set_exception_handler", sys::set_exception_handler(entry, UNMAPPED_STACK_TOP, 0));
    probe::ud2();
    println!("CHECK FAILED: bad_exstack survived a fault with an unmapped exception stack");
    1
}
