//! `ud`: executes `ud2` without an exception handler. The kernel must kill
//! it (invalid opcode); reaching the exit is a failure.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::println;
use libos_async::sys::probe;

libos_async::entry!(app_main);

fn app_main(_arg: u64) -> i32 {
    probe::ud2();
    println!("CHECK FAILED: ud2 did not kill the environment");
    1
}
