//! The local APIC, in x2APIC mode where CPUID offers it and xAPIC otherwise.
//!
//! Register access goes through the `x2apic` crate, which handles both modes
//! (MSRs for x2APIC, MMIO through the direct map for xAPIC). Two differences
//! between the modes are the caller's business in that crate, and handled
//! here: in xAPIC mode the ID register and the ICR destination carry the
//! 8-bit APIC id in bits 24..32 of their 32-bit halves.
//!
//! The timer runs in one-shot mode, calibrated once against the TSC on the
//! BSP. The scheduler arms it for the next event it needs (a slot's end, the
//! end of a grace period, a ring timer's deadline); every timer interrupt
//! first re-arms the *idle tick* (`tick_hz`), so a core whose scheduler
//! does not ask for an earlier one still wakes up regularly.

use super::memory::phys_to_virt;
use super::percpu::cpu_local;
use super::time;
use super::trap::vectors;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use x2apic::lapic::{LocalApic, LocalApicBuilder, TimerDivide, TimerMode, xapic_base};

cpu_local! {
    /// This core's local APIC; only this core may program it (set by
    /// [`install`] during the core's bring-up).
    static APIC: Option<Apic> = None;
}

static X2APIC_MODE: AtomicBool = AtomicBool::new(false);
static TIMER_HZ: AtomicU64 = AtomicU64::new(0);
static IDLE_TICK_TSC: AtomicU64 = AtomicU64::new(0);

/// Which APIC interface the kernel uses, as printed in the boot line.
pub fn mode_name() -> &'static str {
    if X2APIC_MODE.load(Ordering::Relaxed) { "x2apic" } else { "xapic" }
}

/// One core's local APIC.
pub struct Apic {
    lapic: LocalApic,
    x2apic: bool,
}

impl Apic {
    /// Enables this core's local APIC with the kernel's vectors and the timer
    /// stopped (initial count 0).
    pub fn enable_this_cpu() -> Apic {
        // SAFETY: reads IA32_APIC_BASE, which exists on every x86-64 CPU.
        let base_phys = unsafe { xapic_base() };
        let mut lapic = LocalApicBuilder::new()
            .timer_vector(vectors::TIMER as usize)
            .error_vector(vectors::APIC_ERROR as usize)
            .spurious_vector(vectors::SPURIOUS as usize)
            .timer_mode(TimerMode::OneShot)
            .timer_divide(TimerDivide::Div16)
            .timer_initial(0)
            .set_xapic_base(phys_to_virt(base_phys))
            .build()
            .expect("local APIC builder: all fields are set");
        let x2apic = raw_cpuid::CpuId::new().get_feature_info().is_some_and(|f| f.has_x2apic());
        X2APIC_MODE.store(x2apic, Ordering::Relaxed);
        // SAFETY: programs this core's own local APIC: switches to x2APIC mode
        // if available, sets the LVT vectors (all handled by the IDT), masks
        // LINT0/1 and software-enables it. The xAPIC page is in the uncached
        // part of the direct map.
        unsafe { lapic.enable() };
        Apic { lapic, x2apic }
    }

    /// This core's APIC id.
    pub fn id(&self) -> u32 {
        // SAFETY: reading the ID register has no side effect.
        let raw = unsafe { self.lapic.id() };
        if self.x2apic { raw } else { raw >> 24 }
    }

    /// Sends a fixed-delivery IPI with `vector` to the core with `apic_id`.
    pub fn send_ipi(&mut self, apic_id: u32, vector: u8) {
        self.wait_icr_idle();
        // SAFETY: an IPI to a valid vector that the target's IDT handles.
        unsafe { self.lapic.send_ipi(vector, self.destination(apic_id)) };
    }

    /// Sends INIT to `apic_id` (AP bring-up).
    pub fn send_init(&mut self, apic_id: u32) {
        self.wait_icr_idle();
        // SAFETY: INIT resets the target core, which is an AP not yet started.
        unsafe { self.lapic.send_init_ipi(self.destination(apic_id)) };
    }

    /// Sends a start-up IPI for the real-mode page `page` to `apic_id`.
    pub fn send_startup(&mut self, apic_id: u32, page: u8) {
        self.wait_icr_idle();
        // SAFETY: the target is in wait-for-SIPI state after INIT and starts
        // at `page << 12`, where the trampoline has been copied.
        unsafe { self.lapic.send_sipi(page, self.destination(apic_id)) };
    }

    /// Sends an NMI to every other core (used by the panic path).
    pub fn send_nmi_to_others(&mut self) {
        // SAFETY: NMIs land in the IST-backed NMI handler on every core.
        unsafe { self.lapic.send_nmi_all(x2apic::lapic::IpiAllShorthand::AllExcludingSelf) };
    }

    /// Signals end of interrupt.
    pub fn end_of_interrupt(&mut self) {
        // SAFETY: called at the end of a handler for an APIC-delivered vector.
        unsafe { self.lapic.end_of_interrupt() };
    }

    /// Measures the timer's ticks per second against the TSC (BSP, once).
    pub fn calibrate_timer(&mut self) -> u64 {
        const WINDOW_MS: u64 = 10;
        // SAFETY: one-shot countdown with the timer interrupt masked; nothing
        // else uses the timer yet.
        unsafe {
            self.lapic.disable_timer();
            self.lapic.set_timer_mode(TimerMode::OneShot);
            self.lapic.set_timer_initial(u32::MAX);
        }
        time::spin_for_ms(WINDOW_MS);
        // SAFETY: reading the current count, then stopping the timer.
        let elapsed = unsafe {
            let remaining = self.lapic.timer_current();
            self.lapic.set_timer_initial(0);
            u64::from(u32::MAX - remaining)
        };
        elapsed * 1000 / WINDOW_MS
    }

    /// Starts the one-shot timer with the idle tick.
    pub fn start_timer(&mut self) {
        // SAFETY: one-shot timer on the kernel's TIMER vector.
        unsafe {
            self.lapic.set_timer_mode(TimerMode::OneShot);
            self.lapic.enable_timer();
        }
        self.arm_after(IDLE_TICK_TSC.load(Ordering::Relaxed));
    }

    /// Makes the timer interrupt fire `tsc` TSC ticks from now (at least one
    /// timer count; at most the counter's range, about a minute).
    pub fn arm_after(&mut self, tsc: u64) {
        let hz = TIMER_HZ.load(Ordering::Relaxed);
        let count = (u128::from(tsc) * u128::from(hz) / u128::from(time::tsc_hz().max(1)))
            .clamp(1, u128::from(u32::MAX)) as u32;
        // SAFETY: writing the initial count (re)starts this core's one-shot
        // countdown; the timer vector is handled by the IDT.
        unsafe { self.lapic.set_timer_initial(count) };
    }

    fn destination(&self, apic_id: u32) -> u32 {
        if self.x2apic { apic_id } else { apic_id << 24 }
    }

    fn wait_icr_idle(&mut self) {
        if self.x2apic {
            return; // x2APIC ICR writes are not queued
        }
        for _ in 0..1_000_000 {
            // SAFETY: reading the ICR has no side effect.
            if !unsafe { self.lapic.get_ipi_delivery_status() } {
                return;
            }
            super::cpu::pause();
        }
        log::warn!("xAPIC ICR still busy after 1M polls; sending anyway");
    }
}

/// Records the timer's frequency (from the BSP's calibration) and the idle
/// tick rate.
pub fn set_tick_rate(timer_hz: u64, tick_hz: u32) {
    TIMER_HZ.store(timer_hz, Ordering::Relaxed);
    IDLE_TICK_TSC.store(time::tsc_hz() / u64::from(tick_hz.max(1)), Ordering::Relaxed);
}

/// Makes `apic` this core's local APIC (bring-up, after the core's
/// per-core state is set up).
pub fn install(apic: Apic) {
    APIC.with(|slot| *slot = Some(apic));
}

/// Runs `f` with this core's local APIC (interrupts off meanwhile).
pub fn with_local<R>(f: impl FnOnce(&mut Apic) -> R) -> R {
    APIC.with(|slot| f(slot.as_mut().expect("local APIC used before its core installed it")))
}

/// Arms this core's timer `tsc` TSC ticks from now.
pub fn arm_timer_after(tsc: u64) {
    with_local(|a| a.arm_after(tsc));
}

/// Arms this core's timer for the idle tick (every timer interrupt does).
pub fn arm_idle_tick() {
    arm_timer_after(IDLE_TICK_TSC.load(Ordering::Relaxed));
}

/// EOI on this core.
pub fn end_of_interrupt() {
    with_local(|a| a.end_of_interrupt());
}

/// Sends `vector` to the core with `apic_id`, from this core.
pub fn send_ipi(apic_id: u32, vector: u8) {
    with_local(|a| a.send_ipi(apic_id, vector));
}

/// Sends an NMI to every other core (the panic path).
pub fn send_nmi_to_others() {
    with_local(|a| a.send_nmi_to_others());
}
