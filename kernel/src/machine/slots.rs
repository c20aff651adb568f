//! The time vectors' storage: the schedule pages every environment maps.
//!
//! Owns the one [`abi::schedule::Schedule`] of the machine — a page-aligned
//! static in the kernel image, mapped read-only at `abi::SCHEDULE_VA` into
//! every environment — and the per-core counts of owned slots. Allocation
//! rules are `kernel::timevec`'s; which vCPU runs in a slot is decided by
//! each core's scheduler (`sched.rs`), which alone writes its core's
//! `current` and `generation`. Any core may change any core's owners (by
//! compare-and-swap).

use super::percpu::MAX_CPUS;
use abi::CoreId;
use abi::schedule::MAX_SLOTS;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::frames::FrameNumber;
use kernel::ownership::EnvId;
use kernel::timevec::{SlotError, Slots};
use spin::Once;

/// The kernel's view of one `abi::schedule::CoreSchedule`.
#[repr(C)]
struct CoreVector {
    current: AtomicU32,
    len: AtomicU32,
    generation: AtomicU64,
    owner: [AtomicU32; MAX_SLOTS],
}

/// The kernel's view of `abi::schedule::Schedule`, padded to whole pages.
#[repr(C, align(4096))]
struct SchedulePages {
    slots_per_core: AtomicU32,
    slot_us: AtomicU32,
    grace_us: AtomicU32,
    slots_reserved: AtomicU32,
    cores: AtomicU32,
    reserved: [u32; 11],
    core: [CoreVector; abi::MAX_CORES],
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<CoreVector>() == size_of::<abi::schedule::CoreSchedule>());
    assert!(offset_of!(CoreVector, owner) == offset_of!(abi::schedule::CoreSchedule, owner));
    assert!(offset_of!(SchedulePages, core) == offset_of!(abi::schedule::Schedule, core));
    assert!(size_of::<SchedulePages>() as u64 == abi::SCHEDULE_PAGES * abi::PAGE_SIZE);
};

static SCHEDULE: SchedulePages = SchedulePages {
    slots_per_core: AtomicU32::new(0),
    slot_us: AtomicU32::new(0),
    grace_us: AtomicU32::new(0),
    slots_reserved: AtomicU32::new(0),
    cores: AtomicU32::new(0),
    reserved: [0; 11],
    core: [const {
        CoreVector {
            current: AtomicU32::new(0),
            len: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            owner: [const { AtomicU32::new(0) }; MAX_SLOTS],
        }
    }; abi::MAX_CORES],
};

/// Owned slots per core (kernel-private: the limit check needs a count).
static OWNED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// The time-vector settings from the command line.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Slots per core.
    pub slots: u32,
    /// Slot length, microseconds.
    pub slot_us: u32,
    /// Grace period, microseconds.
    pub grace_us: u32,
    /// Slots per core nobody may own.
    pub slots_reserved: u32,
}

static CONFIG: Once<Config> = Once::new();

/// Sets the time vectors up (BSP, once, before any environment exists).
pub fn init(config: Config, cores: usize) {
    CONFIG.call_once(|| config);
    SCHEDULE.slots_per_core.store(config.slots, Ordering::Relaxed);
    SCHEDULE.slot_us.store(config.slot_us, Ordering::Relaxed);
    SCHEDULE.grace_us.store(config.grace_us, Ordering::Relaxed);
    SCHEDULE.slots_reserved.store(config.slots_reserved, Ordering::Relaxed);
    SCHEDULE.cores.store(cores as u32, Ordering::Relaxed);
    for v in &SCHEDULE.core[..cores.min(abi::MAX_CORES)] {
        v.len.store(config.slots, Ordering::Release);
    }
}

/// The settings (defaults before [`init`]).
pub fn config() -> Config {
    *CONFIG.get().unwrap_or(&Config { slots: 16, slot_us: 1000, grace_us: 50, slots_reserved: 4 })
}

/// The physical frames of the schedule pages, in order.
pub fn schedule_frames() -> impl Iterator<Item = FrameNumber> {
    let phys = super::memory::kernel_image_phys(&SCHEDULE as *const SchedulePages as u64);
    (0..abi::SCHEDULE_PAGES).map(move |page| FrameNumber::from_addr(phys).add(page))
}

fn slots(core: usize) -> Option<Slots<'static>> {
    let vector = SCHEDULE.core.get(core)?;
    let owned = OWNED.get(core)?;
    let config = config();
    let len = (vector.len.load(Ordering::Acquire) as usize).min(MAX_SLOTS);
    if len == 0 {
        return None;
    }
    Some(Slots { owners: &vector.owner[..len], owned, limit: config.slots - config.slots_reserved })
}

/// `SlotAlloc` for environment `env`.
pub fn alloc(env: EnvId, core: CoreId, index: u64, count: u64) -> Result<u64, abi::Error> {
    let core = core.index();
    if core >= MAX_CPUS || super::percpu::user_cores() & (1 << core) == 0 {
        return Err(abi::Error::NoSuchCore);
    }
    let slots = slots(core).ok_or(abi::Error::NoSuchCore)?;
    let result = if index == abi::schedule::ANY_SLOT {
        slots.alloc_any(count, env)
    } else {
        slots.alloc_exact(index, env)
    };
    result.map_err(SlotError::to_abi)
}

/// `SlotFree` for environment `env`.
pub fn free(env: EnvId, core: CoreId, mask: u64) -> Result<(), abi::Error> {
    let core = core.index();
    let slots = slots(core).ok_or(abi::Error::NoSuchCore)?;
    slots.free(mask, env).map_err(SlotError::to_abi)
}

/// Frees every slot of an environment that ended.
pub fn release_env(env: EnvId) {
    for core in 0..MAX_CPUS {
        if let Some(slots) = slots(core) {
            slots.free_all(env);
        }
    }
}

/// The owner of slot `index` of `core` ([`EnvId::NONE`]: nobody).
pub fn owner(core: usize, index: usize) -> EnvId {
    SCHEDULE
        .core
        .get(core)
        .and_then(|v| v.owner.get(index))
        .map_or(EnvId::NONE, |o| EnvId(o.load(Ordering::Acquire)))
}

/// The slots `env` owns on `core`.
pub fn owned_by(core: usize, env: EnvId) -> u64 {
    slots(core).map_or(0, |s| s.owned_by(env))
}

/// Slots in `core`'s vector.
pub fn len(core: usize) -> usize {
    SCHEDULE.core.get(core).map_or(0, |v| v.len.load(Ordering::Acquire) as usize)
}

/// Publishes that slot `index` of `core` started (the core's own scheduler).
pub fn publish_current(core: usize, index: usize) {
    if let Some(v) = SCHEDULE.core.get(core) {
        v.current.store(index as u32, Ordering::Release);
        v.generation.fetch_add(1, Ordering::AcqRel);
    }
}
