//! Kernel event tracing: one [`kernel::trace::Ring`] per core, the global
//! on/off flag, the hook every traced kernel path calls ([`record`]), and
//! the dump on the serial console (`ktrace` lines) that `cargo xtask run
//! --trace` merges with the runtime's `rttrace` lines into one Perfetto
//! file.
//!
//! Owns: the rings (allocated once, [`init`]), the flag, and each core's
//! dump cursor. It may not touch anything else: the hooks pass plain
//! numbers (an environment id, a slot index, a vector).
//!
//! Off (the default): [`record`] is one load of a read-mostly cache line
//! and one branch, inlined at each hook; the recording itself is out of
//! line. On (`trace=N` on the command line, which `cargo xtask run
//! --trace` adds, or [`enable`]): each event costs an `rdtsc`, the
//! interrupt flag saved and cleared around the push (so an interrupt
//! handler that records on the same core cannot interleave with it: each
//! ring has one writer at a time), and the push (two counter stores,
//! three word stores).
//!
//! Records are never dropped for being unread: a full ring overwrites its
//! oldest record and the dump says how many were lost. Nothing in here
//! guards isolation, so losing trace records is harmless.

use super::console::kprintln;
use super::cpu;
use super::percpu::{CacheAligned, MAX_CPUS, current_index};
use super::time;
use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::trace::{Kind, PREFIX, Record, Ring};
use spin::Once;

pub use kernel::trace::{STOP_GONE, STOP_PREEMPTED, STOP_SLEEP};

/// Whether the hooks record. Alone on its cache line: written twice per
/// run, read by every hook.
static ON: CacheAligned<AtomicBool> = CacheAligned(AtomicBool::new(false));

/// One ring per online core, made once.
static RINGS: Once<Box<[Ring]>> = Once::new();

/// The command line asked for tracing: the end of the run dumps (a test
/// that made the rings for itself does not fill the log).
static DUMP_AT_END: AtomicBool = AtomicBool::new(false);

/// Per core: the index its next dump starts at.
static DUMPED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// The most records per core the command line may ask for (24 bytes each).
pub const MAX_RECORDS: usize = kernel::cmdline::MAX_TRACE_RECORDS as usize;

/// Makes the rings (`records` per online core, clamped to
/// 1..=[`MAX_RECORDS`]) if they are not made yet, and returns their
/// capacity: 0 if the kernel heap could not hold them (tracing then
/// stays off; the heap is not left short, the rings are freed).
pub fn init(records: usize) -> u64 {
    let rings = RINGS.call_once(|| {
        let n = records.clamp(1, MAX_RECORDS);
        let cores = super::percpu::online_cpus().min(MAX_CPUS);
        (0..cores).map(|_| Ring::try_new(n)).collect::<Option<Box<[Ring]>>>().unwrap_or_default()
    });
    rings.first().map_or(0, Ring::capacity)
}

/// `trace=N` on the command line: makes the rings, turns recording on and
/// has the end of the run [`dump`] them. Returns the records per core.
pub fn start_from_cmdline(records: usize) -> u64 {
    let capacity = init(records);
    DUMP_AT_END.store(true, Ordering::Relaxed);
    enable(true);
    capacity
}

/// Turns recording on or off (on only once the rings are made).
pub fn enable(on: bool) {
    ON.store(on && RINGS.get().is_some_and(|r| !r.is_empty()), Ordering::Release);
}

/// Whether the hooks record.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// `core`'s ring, once made.
pub fn ring(core: usize) -> Option<&'static Ring> {
    RINGS.get().and_then(|r| r.get(core))
}

/// Records `kind` for environment `env` with `arg` on this core, if
/// tracing is on. Any context (interrupt handlers too).
#[inline(always)]
pub fn record(kind: Kind, env: u32, arg: u64) {
    if ON.load(Ordering::Relaxed) {
        record_on(kind, env, arg);
    }
}

#[cold]
#[inline(never)]
fn record_on(kind: Kind, env: u32, arg: u64) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(ring) = ring(current_index()) {
            ring.push(Record { tsc: cpu::rdtsc(), kind, env, arg });
        }
    });
}

/// Stops recording and prints every core's records not dumped before, as
/// `ktrace` lines (format in `kernel::trace` and below), then the lost
/// counts:
///
/// ```text
/// ktrace hz <tsc hz> cores <n> records <per core>
/// ktrace ev <core> <tsc> <kind> <env> <arg>
/// ktrace lost <core> <records overwritten before this dump>
/// ktrace end
/// ```
///
/// Nothing is printed unless the command line asked for tracing. Other cores may still
/// be recording when recording stops; a record they are writing is
/// either complete or left out (the ring's protocol).
pub fn dump() {
    let Some(rings) = RINGS.get().filter(|_| DUMP_AT_END.load(Ordering::Relaxed)) else {
        return;
    };
    enable(false);
    let cores = super::percpu::online_cpus().min(MAX_CPUS);
    let cap = rings.first().map_or(0, Ring::capacity);
    kprintln!("{PREFIX} hz {} cores {cores} records {cap}", time::tsc_hz());
    let mut lost = [0u64; MAX_CPUS];
    for (core, ring) in rings.iter().enumerate().take(cores) {
        let from = DUMPED[core].load(Ordering::Relaxed);
        let d = ring.drain(from, |r| kprintln!("{}", r.line(core)));
        DUMPED[core].store(d.next, Ordering::Relaxed);
        lost[core] = d.lost;
    }
    for (core, n) in lost.iter().enumerate().take(cores).filter(|(_, n)| **n > 0) {
        kprintln!("{PREFIX} lost {core} {n}");
    }
    kprintln!("{PREFIX} end");
}
