//! Time: the TSC frequency and bounded waits.
//!
//! The TSC is the kernel's clock. Its frequency comes from CPUID leaf 0x15
//! when the CPU reports it (with a crystal frequency), otherwise from a
//! 50 ms measurement against the PIT (channel 2, gated through port 0x61),
//! which QEMU drives from its virtual clock in every accelerator mode. Under
//! `-icount shift=0` the TSC advances once per guest instruction, so the
//! measured frequency is nominal and benchmark "cycles" are path lengths.

use super::cpu::{self, pause, rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// TSC ticks per second (0 before [`calibrate`]).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Determines the TSC frequency. Call once on the BSP, interrupts off.
pub fn calibrate() -> u64 {
    let hz = cpuid_tsc_hz().unwrap_or_else(pit_tsc_hz);
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

fn cpuid_tsc_hz() -> Option<u64> {
    let info = raw_cpuid::CpuId::new().get_tsc_info()?;
    info.tsc_frequency().filter(|&hz| hz > 0)
}

fn pit_tsc_hz() -> u64 {
    const PIT_HZ: u64 = 1_193_182;
    const WINDOW_MS: u64 = 50;
    let count = (PIT_HZ * WINDOW_MS / 1000) as u16;
    // SAFETY: PIT channel 2 and the port 0x61 gate belong to the kernel; the
    // speaker output is kept off. Mode 0 counts down once and raises OUT2.
    let (start, end) = unsafe {
        let gate = (cpu::inb(0x61) & !0x02) | 0x01;
        cpu::outb(0x61, gate & !0x01);
        cpu::outb(0x43, 0xb0); // channel 2, lobyte/hibyte, mode 0, binary
        cpu::outb(0x42, count as u8);
        cpu::outb(0x42, (count >> 8) as u8);
        cpu::outb(0x61, gate); // rising gate edge starts the count
        let start = rdtsc();
        let mut polls: u64 = 0;
        while cpu::inb(0x61) & 0x20 == 0 && polls < 100_000_000 {
            polls += 1;
        }
        (start, rdtsc())
    };
    ((end - start) * 1000 / WINDOW_MS).max(1_000_000)
}

/// Spins for `ms` milliseconds of TSC time.
pub fn spin_for_ms(ms: u64) {
    let deadline = Deadline::after_ms(ms);
    while !deadline.passed() {
        pause();
    }
}

/// Waits `ms` milliseconds halted (interrupts on; woken by the idle tick
/// or any interrupt): for a harness that must not burn the instructions
/// of an `-icount` machine while it waits.
pub fn halt_for_ms(ms: u64) {
    let deadline = Deadline::after_ms(ms);
    while !deadline.passed() {
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

/// A point in TSC time; every wait in the kernel is bounded by one.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(u64);

impl Deadline {
    /// `ms` milliseconds from now.
    pub fn after_ms(ms: u64) -> Deadline {
        Deadline(rdtsc().saturating_add(tsc_hz().saturating_mul(ms) / 1000))
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        rdtsc() >= self.0
    }
}
