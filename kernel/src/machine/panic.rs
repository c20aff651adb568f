//! The panic path: report, backtrace, stop the other cores, fail the run.
//!
//! The report is `exo: PANIC on cpu N: message`, then one line
//! `backtrace: 0x... 0x...` of return addresses found by walking the frame
//! pointer chain (the kernel is built with frame pointers; `cargo xtask` or
//! `addr2line -e kernel` turns them into source lines). The other cores get
//! an NMI and halt in [`on_nmi`], so the report is the last thing printed,
//! and QEMU exits with the failure status.

use super::console::emergency_write;
use super::cpu::{exit_qemu, halt_forever};
use super::memory::{DIRECT_MAP_LIMIT, PHYS_OFFSET};
use super::percpu::try_current_index;
use super::trap::TrapFrame;
use core::sync::atomic::{AtomicBool, Ordering};

static PANICKING: AtomicBool = AtomicBool::new(false);

/// The kernel image's virtual range; frame pointers outside it end the walk.
const KERNEL_TEXT_START: u64 = 0xffff_ffff_8000_0000;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    x86_64::instructions::interrupts::disable();
    let cpu = try_current_index().unwrap_or(0);
    if PANICKING.swap(true, Ordering::AcqRel) {
        // A second panic (on this or another core): the first one reports.
        emergency_write(format_args!("exo: nested PANIC on cpu {cpu}: {}\n", info.message()));
        exit_qemu(false);
    }
    if try_current_index().is_some() {
        super::apic::send_nmi_to_others();
    }
    emergency_write(format_args!("exo: PANIC on cpu {cpu}: {info}\n"));
    emergency_write(format_args!("backtrace:"));
    walk_frames(|ret| emergency_write(format_args!(" {ret:#x}")));
    emergency_write(format_args!("\n"));
    exit_qemu(false)
}

/// Calls `visit` with each return address on this core's stack, newest
/// first, at most 32.
fn walk_frames(mut visit: impl FnMut(u64)) {
    let mut rbp: u64;
    // SAFETY: reads the frame pointer register.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags))
    };
    for _ in 0..32 {
        // Stop at the first frame pointer that cannot be a kernel stack slot.
        let in_direct_map = (PHYS_OFFSET..PHYS_OFFSET + DIRECT_MAP_LIMIT - 16).contains(&rbp);
        if !(in_direct_map || rbp >= KERNEL_TEXT_START) || !rbp.is_multiple_of(8) {
            break;
        }
        // SAFETY: `rbp` is 8-aligned and in the kernel half, where kernel
        // stacks (heap or boot bss, all mapped) live; with frame pointers every
        // frame stores the caller's rbp at [rbp] and the return address at
        // [rbp+8]. A corrupted chain ends the walk at the checks above.
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if ret < KERNEL_TEXT_START {
            break;
        }
        visit(ret);
        if next <= rbp {
            break; // stacks grow down: the chain must go up
        }
        rbp = next;
    }
}

/// NMI handler: other cores park here while one core panics.
pub fn on_nmi(frame: &TrapFrame) {
    if PANICKING.load(Ordering::Acquire) {
        halt_forever();
    }
    log::warn!("unexpected NMI at {:#x}", frame.rip);
}
