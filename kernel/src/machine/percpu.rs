//! Per-core state every module needs, reached through the GS base, and the
//! mechanisms by which each module keeps its own per-core state.
//!
//! Each core owns one [`PerCpu`], allocated on that core during its bring-up
//! and never freed. `IA32_GS_BASE` points at it and its first word points at
//! itself, so [`this_cpu`] is one `mov rax, gs:[0]`. It holds only what
//! every layer needs — the self pointer, the stack tops the entry stubs use,
//! the core's index and APIC id, and statistics counters — so this module
//! names no type of any other module: the scheduler's run queue, the
//! mailboxes, the TLB inboxes and the local APIC handle live in their own
//! modules, declared there with
//!
//! * [`cpu_local!`] / [`CpuLocal`]: a value per core that only that core
//!   touches, with interrupts off (in the spirit of Asterinas' `cpu_local!`);
//!   the core's own slot is found by [`current_index`], so another core's
//!   slot cannot be reached at all;
//! * [`PerCore`]: a value per core that other cores reach too (through
//!   atomics or locks inside it), installed once when the core comes up;
//! * plain `static [T; MAX_CPUS]` arrays of atomics, indexed by core, for
//!   single flags and counters (padded with [`CacheAligned`] where cores
//!   write each other's).
//!
//! Other cores may look at a core's `PerCpu` through [`cpu`] (its APIC id,
//! its counters), only through atomics.
//!
//! Invariants: `self_ptr` is the first field (`gs:[0]`); the `syscall`
//! entry's `gs:[8]` and `gs:[16]` are [`PERCPU_KERNEL_STACK_OFFSET`] and
//! [`PERCPU_USER_RSP_OFFSET`], taken with `offset_of!`; a `PerCpu` is
//! published only once it is complete.

use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::interrupts;
use x86_64::registers::model_specific::GsBase;

/// The most cores the kernel supports.
pub const MAX_CPUS: usize = abi::MAX_CORES;

/// Offset of [`PerCpu::kernel_stack_top`], used by the `syscall` entry.
pub const PERCPU_KERNEL_STACK_OFFSET: u64 = offset_of!(PerCpu, kernel_stack_top) as u64;
/// Offset of [`PerCpu::user_rsp`], used by the `syscall` entry.
pub const PERCPU_USER_RSP_OFFSET: u64 = offset_of!(PerCpu, user_rsp) as u64;
// `current_index` masks with `MAX_CPUS - 1`.
const _: () = assert!(MAX_CPUS.is_power_of_two());
// The offsets the entry stubs and the docs name.
const _: () = assert!(PERCPU_KERNEL_STACK_OFFSET == 8 && PERCPU_USER_RSP_OFFSET == 16);
/// Offset of [`PerCpu::index`], read by [`current_index`].
const PERCPU_INDEX_OFFSET: usize = offset_of!(PerCpu, index);

/// One core's state.
#[repr(C)]
pub struct PerCpu {
    /// Points at this structure; must stay the first field (`gs:[0]`).
    self_ptr: u64,
    /// Top of this core's trap stack (`TSS.rsp0`); `gs:[8]`.
    pub kernel_stack_top: AtomicU64,
    /// The user `rsp` parked by the `syscall` entry; `gs:[16]`.
    pub user_rsp: AtomicU64,
    /// Top of the stack the idle loop restarts on.
    pub idle_stack_top: AtomicU64,
    /// Dense core number: 0 is the bootstrap processor.
    pub index: usize,
    /// This core's local APIC id.
    pub apic_id: u32,
    /// Timer interrupts taken.
    pub ticks: AtomicU64,
    /// Times the idle loop halted this core.
    pub halts: AtomicU64,
    /// Acknowledgements received for work this core posted.
    pub work_acks: AtomicU64,
    /// Shootdown IPIs this core sent.
    pub flush_ipis_sent: AtomicU64,
    /// Shootdown IPIs this core received.
    pub flush_ipis_received: AtomicU64,
    /// The `syscall` entry's copy of the system-call redirection of the
    /// environment whose code runs here (written by this core only, at
    /// every change of that environment; see `sched::switch::activate`): a
    /// `syscall` returning outside `redirect_start..redirect_end` is
    /// redirected. Disabled: `0..u64::MAX` (nothing is outside).
    pub redirect_start: AtomicU64,
    /// End (exclusive) of the library's range.
    pub redirect_end: AtomicU64,
    /// The handler's entry point.
    pub redirect_entry: AtomicU64,
    /// This core's handler stack top.
    pub redirect_stack: AtomicU64,
    /// Kernel address just past `VcpuPage::redirect_rsp` of the running
    /// environment's page for this core (the entry pushes `rsp`, `rflags`,
    /// `rip` below it).
    pub redirect_record: AtomicU64,
}

/// Offset of [`PerCpu::redirect_start`], used by the `syscall` entry.
pub const PERCPU_REDIRECT_START_OFFSET: u64 = offset_of!(PerCpu, redirect_start) as u64;
/// Offset of [`PerCpu::redirect_end`], used by the `syscall` entry.
pub const PERCPU_REDIRECT_END_OFFSET: u64 = offset_of!(PerCpu, redirect_end) as u64;
/// Offset of [`PerCpu::redirect_entry`], used by the `syscall` entry.
pub const PERCPU_REDIRECT_ENTRY_OFFSET: u64 = offset_of!(PerCpu, redirect_entry) as u64;
/// Offset of [`PerCpu::redirect_stack`], used by the `syscall` entry.
pub const PERCPU_REDIRECT_STACK_OFFSET: u64 = offset_of!(PerCpu, redirect_stack) as u64;
/// Offset of [`PerCpu::redirect_record`], used by the `syscall` entry.
pub const PERCPU_REDIRECT_RECORD_OFFSET: u64 = offset_of!(PerCpu, redirect_record) as u64;

static CPUS: [Once<&'static PerCpu>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// Creates this core's `PerCpu`, points GS at it and publishes it.
/// Call once per core, on that core, with its dense index, after the
/// modules' shared per-core state ([`PerCore`]) for it is installed.
pub fn init_this_cpu(
    index: usize,
    apic_id: u32,
    kernel_stack_top: u64,
    idle_stack_top: u64,
) -> &'static PerCpu {
    assert!(index < MAX_CPUS, "core index {index} beyond MAX_CPUS");
    let cpu: &'static mut PerCpu = Box::leak(Box::new(PerCpu {
        self_ptr: 0,
        kernel_stack_top: AtomicU64::new(kernel_stack_top),
        user_rsp: AtomicU64::new(0),
        idle_stack_top: AtomicU64::new(idle_stack_top),
        index,
        apic_id,
        ticks: AtomicU64::new(0),
        halts: AtomicU64::new(0),
        work_acks: AtomicU64::new(0),
        flush_ipis_sent: AtomicU64::new(0),
        flush_ipis_received: AtomicU64::new(0),
        redirect_start: AtomicU64::new(0),
        redirect_end: AtomicU64::new(u64::MAX),
        redirect_entry: AtomicU64::new(0),
        redirect_stack: AtomicU64::new(0),
        redirect_record: AtomicU64::new(0),
    }));
    cpu.self_ptr = cpu as *mut PerCpu as u64;
    GsBase::write(VirtAddr::new(cpu.self_ptr));
    let cpu: &'static PerCpu = cpu;
    CPUS[index].call_once(|| cpu);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    cpu
}

/// This core's state. Panics if called before [`init_this_cpu`].
#[inline(always)]
pub fn this_cpu() -> &'static PerCpu {
    let ptr: u64;
    // SAFETY: reads one word at gs:[0]. After `init_this_cpu` GS points at a
    // leaked `PerCpu` whose first field is its own address; before it, the GS
    // base is 0 and the read would hit physical page 0 through the identity
    // map, which is why `try_current_index` checks the MSR first. `pure`:
    // the word only changes when the GS base does (a `wrmsr`, which the
    // compiler treats as writing memory), so repeated reads may be merged.
    unsafe {
        core::arch::asm!(
            "mov {}, gs:[0]",
            out(reg) ptr,
            options(pure, nostack, readonly, preserves_flags)
        )
    };
    assert!(ptr != 0, "per-cpu state used before init");
    // SAFETY: `ptr` came from `Box::leak` in `init_this_cpu`: valid forever,
    // and only shared references are ever made to it after publication.
    unsafe { &*(ptr as *const PerCpu) }
}

/// This core's index (one `mov rax, gs:[index]`, then masked so that the
/// compiler knows it is below [`MAX_CPUS`] and drops the bounds checks of
/// every per-core array indexed with it). Panics in debug builds if called
/// before [`init_this_cpu`].
#[inline(always)]
pub fn current_index() -> usize {
    let index: usize;
    // SAFETY: reads one word of this core's `PerCpu` through GS (see
    // `this_cpu`); `pure` as there: it changes only with the GS base.
    unsafe {
        core::arch::asm!(
            "mov {}, gs:[{offset}]",
            out(reg) index,
            offset = const PERCPU_INDEX_OFFSET,
            options(pure, nostack, readonly, preserves_flags)
        )
    };
    debug_assert!(GsBase::read().as_u64() != 0, "per-cpu state used before init");
    // `init_this_cpu` asserts `index < MAX_CPUS`, a power of two: the mask
    // changes nothing but what the compiler can prove.
    index & (MAX_CPUS - 1)
}

/// This core's index, or `None` if its per-cpu state is not set up yet.
pub fn try_current_index() -> Option<usize> {
    (GsBase::read().as_u64() != 0).then(|| this_cpu().index)
}

/// Core `index`'s state, if that core is online.
pub fn cpu(index: usize) -> Option<&'static PerCpu> {
    CPUS.get(index)?.get().copied()
}

/// Number of cores online.
pub fn online_cpus() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// Bit mask of the cores that run environments.
pub fn user_cores() -> u64 {
    USER_CORES.load(Ordering::Relaxed)
}

static USER_CORES: AtomicU64 = AtomicU64::new(0);

/// Sets the cores that run environments (boot, once all cores are up; the
/// benchmarks widen it).
pub fn set_user_cores(mask: u64) {
    USER_CORES.store(mask, Ordering::Relaxed);
}

/// Iterates over the online cores.
pub fn all_cpus() -> impl Iterator<Item = &'static PerCpu> {
    CPUS.iter().filter_map(|c| c.get().copied())
}

/// Pads a per-core value to its own cache line, so that cores writing
/// their neighbours' entries of a `[CacheAligned<T>; MAX_CPUS]` do not
/// contend.
#[repr(align(64))]
pub struct CacheAligned<T>(pub T);

impl<T> core::ops::Deref for CacheAligned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Declares a [`CpuLocal`] static: one `T` per core, each initialised with
/// the same constant expression.
///
/// ```ignore
/// cpu_local! {
///     /// This core's run queue.
///     static RUNQ: RunQueue = RunQueue::new();
/// }
/// ```
macro_rules! cpu_local {
    ($($(#[$attr:meta])* $vis:vis static $name:ident: $ty:ty = $init:expr;)+) => {
        $(
            $(#[$attr])*
            $vis static $name: $crate::machine::percpu::CpuLocal<$ty> =
                $crate::machine::percpu::CpuLocal::from_slots(
                    [const { $crate::machine::percpu::LocalSlot::new($init) };
                        $crate::machine::percpu::MAX_CPUS],
                );
        )+
    };
}
pub(crate) use cpu_local;

/// One core's slot of a [`CpuLocal`] (on its own cache line).
#[repr(align(64))]
pub struct LocalSlot<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

impl<T> LocalSlot<T> {
    /// A slot holding `value`.
    pub const fn new(value: T) -> Self {
        LocalSlot { busy: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }
}

/// State that belongs to one core and is only ever touched by that core,
/// with interrupts disabled: one slot per core, declared with
/// [`cpu_local!`] in the module that owns the state.
///
/// [`CpuLocal::with`] reaches the calling core's slot only (indexed by
/// [`current_index`], so no other core's slot can be named), and refuses
/// re-entry (an interrupt handler cannot interrupt it because interrupts
/// are off; an NMI handler must not use it).
pub struct CpuLocal<T> {
    slots: [LocalSlot<T>; MAX_CPUS],
}

// SAFETY: a slot's value is only reached through `with` and `with_masked`,
// which take the calling core's own slot, with a busy flag against re-entry
// (and interrupts disabled, so that no handler meets it), so at most one
// `&mut T` exists per slot at any time and it never crosses cores. `T`
// itself need not be `Send` (the local APIC handle is not) because each
// value is created in the static and never leaves its core's slot.
unsafe impl<T> Sync for CpuLocal<T> {}

impl<T> CpuLocal<T> {
    /// Wraps one slot per core (use [`cpu_local!`]).
    pub const fn from_slots(slots: [LocalSlot<T>; MAX_CPUS]) -> Self {
        CpuLocal { slots }
    }

    /// [`CpuLocal::with`] for a caller that runs with interrupts masked
    /// (the system-call path: `SFMASK` clears IF), which it does not
    /// re-check. If one did call it with interrupts on, an interrupt
    /// handler using the same value would panic on the busy flag: the
    /// exclusive access rests on the slot choice and the busy check, which
    /// stay.
    #[inline(always)]
    pub fn with_masked<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        debug_assert!(!interrupts::are_enabled(), "with_masked with interrupts on");
        let slot = &self.slots[current_index()];
        assert!(!slot.busy.swap(true, Ordering::Acquire), "CpuLocal re-entered");
        // SAFETY: this core's slot, busy flag set: this is the only
        // reference to the value until the flag is cleared below.
        let result = f(unsafe { &mut *slot.value.get() });
        slot.busy.store(false, Ordering::Release);
        result
    }

    /// Runs `f` with exclusive access to this core's value.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // `without_interrupts`, spelt out so that `f` is inlined once rather
        // than called from both of its branches (system calls, the hottest
        // callers, arrive with interrupts already masked).
        let enabled = interrupts::are_enabled();
        if enabled {
            interrupts::disable();
        }
        // The index is read with interrupts off: the caller cannot be
        // interrupted between choosing the slot and using it.
        let slot = &self.slots[current_index()];
        assert!(!slot.busy.swap(true, Ordering::Acquire), "CpuLocal re-entered");
        // SAFETY: this core's slot, interrupts off, busy flag set: this is
        // the only reference to the value until the flag is cleared below.
        let result = f(unsafe { &mut *slot.value.get() });
        slot.busy.store(false, Ordering::Release);
        if enabled {
            interrupts::enable();
        }
        result
    }
}

/// A value per core that other cores reach too (it synchronises itself:
/// atomics, lock-free queues), installed once by its core's bring-up and
/// never freed. Declared as a static in the module that owns it.
pub struct PerCore<T: 'static> {
    slots: [AtomicPtr<T>; MAX_CPUS],
}

impl<T: Sync + 'static> PerCore<T> {
    /// No core's value installed yet.
    pub const fn new() -> Self {
        PerCore { slots: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS] }
    }

    /// Installs core `index`'s value (once; a second value is dropped).
    pub fn install(&self, index: usize, value: T) {
        let ptr = Box::into_raw(Box::new(value));
        let slot = &self.slots[index];
        if slot
            .compare_exchange(core::ptr::null_mut(), ptr, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: `ptr` came from `Box::into_raw` above and was not
            // published: this is its only owner.
            drop(unsafe { Box::from_raw(ptr) });
        }
    }

    /// Core `index`'s value, if installed.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&'static T> {
        let ptr = self.slots.get(index)?.load(Ordering::Acquire);
        // SAFETY: a non-null pointer was published by `install` (release)
        // from a leaked `Box` that is never freed or written through again;
        // `T: Sync`, so shared references on any core are fine.
        unsafe { ptr.as_ref() }
    }

    /// This core's value. Panics if it is not installed.
    #[inline]
    pub fn this(&self) -> &'static T {
        self.get(current_index()).expect("per-core value used before its core installed it")
    }
}

impl<T: Sync + 'static> Default for PerCore<T> {
    fn default() -> Self {
        Self::new()
    }
}
