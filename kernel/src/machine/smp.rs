//! Starting the application processors.
//!
//! The BSP copies the real-mode trampoline to [`TRAMPOLINE_PHYS`] and starts
//! the APs one at a time with INIT, then SIPI (a second SIPI only if the
//! first did not take), as the Intel SDM's MP initialisation protocol says.
//! Before each start it hands the AP a fresh stack and a core index through
//! [`AP_BOOT_STACK_TOP`] and `NEXT_INDEX`; the AP publishes its `PerCpu` and
//! bumps `STARTED`, and only then does the BSP move on, so the hand-over
//! variables are never shared by two starting APs.

use super::apic::Apic;
use super::boot::{AP_BOOT_STACK_TOP, TRAMPOLINE_PHYS, trampoline_code};
use super::memory::phys_to_virt;
use super::percpu::{self, this_cpu};
use super::time::{self, Deadline};
use super::{gdt, interrupts, mailbox};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};
use spin::Once;

static NEXT_INDEX: AtomicUsize = AtomicUsize::new(0);
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// How long the BSP waits for one AP to reach Rust.
const AP_START_TIMEOUT_MS: u64 = 5000;

/// The local APIC ids the MADT listed (set by [`start_aps`]).
static MADT_APIC_IDS: Once<Vec<u32>> = Once::new();

/// The local APIC ids the MADT listed, BSP included (empty before
/// [`start_aps`]).
pub fn madt_apic_ids() -> &'static [u32] {
    MADT_APIC_IDS.get().map_or(&[], |ids| ids.as_slice())
}

/// Starts every AP in `apic_ids` (the MADT's list; the BSP's own id is
/// skipped) and keeps the list. Returns how many came up; an AP that does
/// not answer is logged and left out.
pub fn start_aps(apic_ids: Vec<u32>) -> usize {
    let apic_ids = MADT_APIC_IDS.call_once(|| apic_ids);
    let code = trampoline_code();
    assert!(code.len() <= 4096, "trampoline larger than a page");
    // SAFETY: the trampoline page lies below 1 MiB, which the frame allocator
    // never hands out, and is mapped writable in the direct map; no AP runs
    // yet, so nothing executes it while it is written.
    unsafe {
        core::ptr::copy_nonoverlapping(
            code.as_ptr(),
            phys_to_virt(TRAMPOLINE_PHYS) as *mut u8,
            code.len(),
        );
    }
    let bsp = this_cpu();
    let mut started = 0;
    for &apic_id in apic_ids.iter().filter(|&&id| id != bsp.apic_id) {
        let index = started + 1;
        if index >= percpu::MAX_CPUS {
            log::warn!("more than {} processors: ignoring the rest", percpu::MAX_CPUS);
            break;
        }
        if start_one(apic_id, index) {
            started += 1;
        } else {
            log::error!("AP with APIC id {apic_id} did not start");
        }
    }
    started
}

fn start_one(apic_id: u32, index: usize) -> bool {
    let before = STARTED.load(Ordering::Acquire);
    AP_BOOT_STACK_TOP.store(gdt::alloc_stack().as_u64(), Ordering::Release);
    NEXT_INDEX.store(index, Ordering::Release);
    let page = (TRAMPOLINE_PHYS >> 12) as u8;
    let arrived = || STARTED.load(Ordering::Acquire) > before;

    super::apic::with_local(|a| a.send_init(apic_id));
    time::spin_for_ms(10);
    super::apic::with_local(|a| a.send_startup(apic_id, page));
    let first = Deadline::after_ms(1);
    while !arrived() && !first.passed() {
        super::cpu::pause();
    }
    if !arrived() {
        super::apic::with_local(|a| a.send_startup(apic_id, page));
    }
    let deadline = Deadline::after_ms(AP_START_TIMEOUT_MS);
    while !arrived() {
        if deadline.passed() {
            return false;
        }
        super::cpu::pause();
    }
    true
}

/// The AP's first Rust code, called by the boot stub on its fresh stack.
#[unsafe(no_mangle)]
extern "C" fn kernel_ap_main() -> ! {
    let index = NEXT_INDEX.load(Ordering::Acquire);
    let idle_stack_top = AP_BOOT_STACK_TOP.load(Ordering::Acquire);
    let trap_stack_top = gdt::init_this_cpu();
    interrupts::init_this_cpu();
    super::syscall::init_this_cpu();
    super::xstate::init_this_cpu();
    let mut apic = Apic::enable_this_cpu();
    apic.start_timer();
    mailbox::init_this_cpu(index);
    let me = percpu::init_this_cpu(index, apic.id(), trap_stack_top.as_u64(), idle_stack_top);
    super::apic::install(apic);
    super::tlb::init_this_cpu(index, false);
    super::env::init_this_cpu();
    log::debug!("core {index} up (APIC id {})", me.apic_id);
    STARTED.fetch_add(1, Ordering::AcqRel);
    super::sched::idle_loop()
}
