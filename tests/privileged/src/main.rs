//! `privileged`: the start argument picks one forbidden operation; there is
//! no exception handler, so the kernel must kill the environment.
//!
//! | arg | operation | expected |
//! |---|---|---|
//! | 0 | `cli` | #GP |
//! | 1 | `hlt` | #GP |
//! | 2 | `wrmsr` to IA32_EFER | #GP |
//! | 3 | `mov cr3, rax` | #GP |
//! | 4 | `lgdt` | #GP |
//! | 5 | read `0xffffffff80100000` (kernel image) | #PF |
//! | 6 | write it | #PF |
//! | 7 | read `0xffff800000001000` (direct map) | #PF |
//!
//! If the operation returns, it prints `CHECK FAILED: privileged op N
//! succeeded` and exits 1; an unknown argument exits 2.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::println;
use libos_async::sys::probe;

libos_async::entry!(app_main);

/// A kernel-image address.
const KERNEL_VA: u64 = 0xffff_ffff_8010_0000;
/// A direct-map address.
const DIRECT_MAP_VA: u64 = 0xffff_8000_0000_1000;

fn app_main(op: u64) -> i32 {
    match op {
        0 => probe::cli(),
        1 => probe::hlt(),
        2 => probe::wrmsr_efer(),
        3 => probe::write_cr3(),
        4 => probe::lgdt(),
        5 => {
            let _ = probe::read(KERNEL_VA);
        }
        6 => probe::write(KERNEL_VA, 0xdead_beef),
        7 => {
            let _ = probe::read(DIRECT_MAP_VA);
        }
        _ => {
            println!("privileged: unknown op {op}");
            return 2;
        }
    }
    println!("CHECK FAILED: privileged op {op} succeeded");
    1
}
