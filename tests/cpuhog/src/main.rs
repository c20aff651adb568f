//! `cpuhog`: a CPU-bound environment that holds time slots on its core, for
//! the time-vector tests. Start argument: bits 0..8 the mode, 8..16 how many
//! slots to take on its core, 16..48 how long to run in milliseconds.
//!
//! It takes its slots (any free ones), leaves the default round-robin on
//! its core (so it runs only in its own slots), then spins on the TSC until
//! its time is up and exits 0. Each turn of the loop adds one to the word
//! at [`WORK_VA`] (the first page of the scratch window): the work it got
//! done, which the kernel's test reads beside the CPU time the kernel
//! accounts (`VcpuPage::run_tsc`).
//!
//! Modes:
//! * 0, **plain**: no slot upcalls (preempted at each slot end);
//! * 1, **polite**: a prologue and an epilogue that count themselves and
//!   return (after the epilogue the library yields at once); exits 0 only
//!   if both upcalls arrived;
//! * 2, **rude**: an epilogue that never yields: it spins until the time
//!   is up and exits from there. The kernel's abort protocol must stop it
//!   at every slot end and charge it.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use libos_async::abi::{Rights, UpcallFrame};
use libos_async::check::{fail, require};
use libos_async::sys::{self, rdtsc};
use libos_async::{core_id, cpu, info, println};

libos_async::entry!(app_main);

/// Where the loop counts its turns (known to the kernel's test).
pub const WORK_VA: u64 = libos_async::layout::SCRATCH_BASE;

static DEADLINE: AtomicU64 = AtomicU64::new(0);
static EPILOGUES: AtomicU64 = AtomicU64::new(0);
static PROLOGUES: AtomicU64 = AtomicU64::new(0);

fn polite(_frame: &mut UpcallFrame) {
    EPILOGUES.fetch_add(1, SeqCst);
}

fn prologue(_frame: &mut UpcallFrame) {
    PROLOGUES.fetch_add(1, SeqCst);
}

fn rude(_frame: &mut UpcallFrame) {
    EPILOGUES.fetch_add(1, SeqCst);
    while rdtsc() < DEADLINE.load(SeqCst) {
        core::hint::spin_loop();
    }
    report_and_exit(2);
}

fn report_and_exit(mode: u64) -> ! {
    let page = sys::vcpu_page();
    println!(
        "cpuhog {} (mode {mode}): {} slots started, {} prologues seen, {} epilogues ({} seen), {} overruns",
        libos_async::env_id(),
        page.slots_started,
        PROLOGUES.load(SeqCst),
        page.epilogues,
        EPILOGUES.load(SeqCst),
        page.overruns
    );
    if mode == 1 && (EPILOGUES.load(SeqCst) == 0 || PROLOGUES.load(SeqCst) == 0) {
        println!("CHECK FAILED: cpuhog: a slot upcall never arrived");
        sys::exit(1);
    }
    sys::exit(0)
}

fn app_main(arg: u64) -> i32 {
    let mode = arg & 0xff;
    let count = (arg >> 8) & 0xff;
    let run_ms = (arg >> 16) & 0xffff_ffff;
    let core = core_id();
    let deadline = rdtsc() + info().tsc_hz / 1000 * run_ms;
    DEADLINE.store(deadline, SeqCst);
    match mode {
        0 => {}
        1 => require("set_slot_handlers", cpu::set_slot_handlers(Some(prologue), Some(polite))),
        2 => require("set_slot_handlers", cpu::set_slot_handlers(None, Some(rude))),
        _ => fail(format_args!("cpuhog: unknown mode {mode}")),
    }
    let mask = require("alloc_slots", cpu::alloc_slots(core, count));
    if mask.count_ones() as u64 != count || cpu::my_slots(core) != mask {
        fail(format_args!("cpuhog: slots {mask:#x}, schedule says {:#x}", cpu::my_slots(core)));
    }
    require("map the work counter", libos_async::mem::map_fresh(WORK_VA, 1, Rights::RW));
    require("default_time off", cpu::default_time(core, false));
    let mut turns = 0u64;
    while rdtsc() < deadline {
        turns += 1;
        sys::probe::write(WORK_VA, turns);
    }
    report_and_exit(mode)
}
