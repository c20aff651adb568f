//! `hello`: prints `hello from ring 3: env E on core C` on its first core,
//! starts a vCPU on every other core that takes vCPUs (`user_cores`), each
//! of which prints the same line and exits, waits (bounded) until all of
//! them have printed, and exits 0.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use libos_async::{check, core_id, env_id, info, println, start_vcpu, sys, wait_until};

libos_async::entry!(app_main);

/// vCPUs that have printed.
static PRINTED: AtomicU64 = AtomicU64::new(0);

fn greet() {
    println!("hello from ring 3: env {} on core {}", env_id(), core_id());
}

fn secondary(_arg: u64) -> ! {
    greet();
    PRINTED.fetch_add(1, Ordering::SeqCst);
    sys::vcpu_exit()
}

fn app_main(_arg: u64) -> i32 {
    greet();
    let me = core_id();
    let cores = info().cores as usize;
    let user_cores = info().user_cores;
    let mut started = 0;
    for core in (0..cores).filter(|&c| c != me && user_cores & (1 << c) != 0) {
        check::require("start_vcpu", start_vcpu(core, secondary, 0));
        started += 1;
    }
    if !wait_until(1_000_000, || PRINTED.load(Ordering::SeqCst) == started) {
        check::fail(format_args!(
            "only {} of {started} vCPUs printed",
            PRINTED.load(Ordering::SeqCst)
        ));
    }
    0
}
