//! Privileged instructions: port I/O, `rdtsc`, `pause`, halting, and leaving
//! QEMU with a status.
//!
//! The `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4`) turns a
//! write of `v` into QEMU exiting with status `(v << 1) | 1`: the kernel
//! writes [`EXIT_SUCCESS`] (status 33) or [`EXIT_FAILURE`] (status 35), and
//! under `console=split` [`EXIT_INIT_ENDED`] (status 37) once the init
//! environment has ended. A process status has 8 bits, so `v` cannot carry
//! a program's 0..=255 status by itself: that goes in the marker line
//! printed just before (`env::EXIT_MARKER`), which status 37 vouches for.

use x86_64::instructions::port::Port;

/// Value written to the debug-exit port for success (QEMU exits with 33).
pub const EXIT_SUCCESS: u32 = 0x10;
/// Value written to the debug-exit port for failure (QEMU exits with 35).
pub const EXIT_FAILURE: u32 = 0x11;
/// Value written under `console=split` when the init environment has ended
/// (QEMU exits with 37); its status is in the marker line.
pub const EXIT_INIT_ENDED: u32 = 0x12;
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Reads the time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` has no side effects and is allowed in ring 0.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Spin-loop hint.
#[inline(always)]
pub fn pause() {
    core::hint::spin_loop();
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// The caller must own the device behind `port` and know the write's effect.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: forwarded to the caller.
    unsafe { Port::new(port).write(value) }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// The caller must own the device behind `port`.
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: forwarded to the caller.
    unsafe { Port::new(port).read() }
}

/// Leaves QEMU with a success or failure status. Without the debug-exit
/// device the write does nothing, and the core halts for good instead.
pub fn exit_qemu(success: bool) -> ! {
    exit_qemu_with(if success { EXIT_SUCCESS } else { EXIT_FAILURE })
}

/// Leaves QEMU with status `(code << 1) | 1` (or halts, as [`exit_qemu`]).
pub fn exit_qemu_with(code: u32) -> ! {
    // SAFETY: port 0xf4 is the isa-debug-exit device that xtask attaches; on
    // a machine without it the port is unclaimed and the write is ignored.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(code) };
    halt_forever()
}

/// Disables interrupts and halts this core forever.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
