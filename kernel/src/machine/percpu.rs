//! Per-core state, reached through the GS base.
//!
//! Each core owns one [`PerCpu`], allocated on that core during its bring-up
//! and never freed. `IA32_GS_BASE` points at it and its first word points at
//! itself, so [`this_cpu`] is one `mov rax, gs:[0]`. Other cores may look at
//! a core's `PerCpu` through [`cpu`] (to reach its mailbox, read its
//! counters), but only through atomics or the mailbox queues: mutable state
//! that only the owner may touch is wrapped in [`CpuLocal`].

use super::apic::Apic;
use super::env::Env;
use super::mailbox::Mailbox;
use super::sched::{RunQueue, Vcpu};
use super::tlb::FlushInbox;
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::interrupts;
use x86_64::registers::model_specific::GsBase;

/// The most cores the kernel supports.
pub const MAX_CPUS: usize = abi::MAX_CORES;

/// Offset of [`PerCpu::kernel_stack_top`], used by the `syscall` entry.
pub const PERCPU_KERNEL_STACK_OFFSET: u64 = 8;
/// Offset of [`PerCpu::user_rsp`], used by the `syscall` entry.
pub const PERCPU_USER_RSP_OFFSET: u64 = 16;

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
    /// Generation of the last TLB shootdown this core made.
    pub flush_generation: AtomicU64,
    /// TLB shootdown requests addressed to this core (see `tlb.rs`).
    pub flush_inbox: FlushInbox,
    /// Shootdown IPIs this core sent.
    pub flush_ipis_sent: AtomicU64,
    /// Shootdown IPIs this core received.
    pub flush_ipis_received: AtomicU64,
    /// Per PCID, the environment whose translations this core may cache.
    pub pcid_owner: CpuLocal<Vec<u32>>,
    /// vCPUs other cores started here, not yet in the run queue (leaf lock).
    pub incoming: spin::Mutex<Vec<Vcpu>>,
    /// Set after a push to `incoming`, cleared when it is drained.
    pub incoming_pending: AtomicBool,
    /// Set by a `Reschedule` message: the next return to ring 3 must look
    /// at the run queue (a sleeper may have become runnable).
    pub resched_pending: AtomicBool,
    /// Entries the `RingEnter` fast path consumed before handing the call
    /// to the full path (set and taken within one system call).
    pub ring_carry: AtomicU64,
    /// vCPUs assigned to this core (incoming, ready or running).
    pub vcpus: AtomicUsize,
    /// This core's vCPUs.
    pub runq: CpuLocal<RunQueue>,
    /// The environment whose address space is loaded in CR3, if any.
    pub loaded_env: CpuLocal<Option<Arc<Env>>>,
    /// Incoming messages and work.
    pub mailbox: Mailbox,
    /// This core's local APIC; only this core may program it.
    pub apic: CpuLocal<Apic>,
}

static CPUS: [Once<&'static PerCpu>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// Creates this core's `PerCpu`, points GS at it and publishes it.
/// Call once per core, on that core, with its dense index.
pub fn init_this_cpu(
    index: usize,
    apic: Apic,
    kernel_stack_top: u64,
    idle_stack_top: u64,
    pcid_owner: Vec<u32>,
) -> &'static PerCpu {
    assert!(index < MAX_CPUS, "core index {index} beyond MAX_CPUS");
    let apic_id = apic.id();
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
        flush_generation: AtomicU64::new(0),
        flush_inbox: FlushInbox::default(),
        flush_ipis_sent: AtomicU64::new(0),
        flush_ipis_received: AtomicU64::new(0),
        pcid_owner: CpuLocal::new(index, pcid_owner),
        incoming: spin::Mutex::new(Vec::new()),
        incoming_pending: AtomicBool::new(false),
        resched_pending: AtomicBool::new(false),
        ring_carry: AtomicU64::new(0),
        vcpus: AtomicUsize::new(0),
        runq: CpuLocal::new(index, RunQueue::default()),
        loaded_env: CpuLocal::new(index, None),
        mailbox: Mailbox::new(),
        apic: CpuLocal::new(index, apic),
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

/// Iterates over the online cores.
pub fn all_cpus() -> impl Iterator<Item = &'static PerCpu> {
    CPUS.iter().filter_map(|c| c.get().copied())
}

/// State that belongs to one core and is only ever touched by that core,
/// with interrupts disabled.
///
/// [`CpuLocal::with`] checks both at run time: it panics if another core
/// calls it, and it refuses re-entry (an interrupt handler cannot interrupt
/// it because interrupts are off; an NMI handler must not use it).
pub struct CpuLocal<T> {
    owner: usize,
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through `with` and `with_masked`, which
// run on the owning core only (checked), with a busy flag against re-entry
// (and interrupts disabled, so that no handler meets it), so at most one
// `&mut T` exists at any time and it never crosses cores. `T` itself need
// not be `Send` (the local APIC handle is not) because
// it is created by and never leaves its core.
unsafe impl<T> Sync for CpuLocal<T> {}

impl<T> CpuLocal<T> {
    /// Wraps a value owned by core `owner`.
    pub const fn new(owner: usize, value: T) -> Self {
        CpuLocal { owner, busy: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// [`CpuLocal::with`] for a caller that runs with interrupts masked
    /// (the system-call path: `SFMASK` clears IF), which it does not
    /// re-check. If one did call it with interrupts on, an interrupt
    /// handler using the same value would panic on the busy flag: the
    /// exclusive access rests on the owner and busy checks, which stay.
    #[inline(always)]
    pub fn with_masked<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        debug_assert!(!interrupts::are_enabled(), "with_masked with interrupts on");
        assert_eq!(this_cpu().index, self.owner, "CpuLocal touched by another core");
        assert!(!self.busy.swap(true, Ordering::Acquire), "CpuLocal re-entered");
        // SAFETY: owner core, busy flag set: this is the only reference to
        // the value until the flag is cleared below.
        let result = f(unsafe { &mut *self.value.get() });
        self.busy.store(false, Ordering::Release);
        result
    }

    /// Runs `f` with exclusive access to the value.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        assert_eq!(this_cpu().index, self.owner, "CpuLocal touched by another core");
        // `without_interrupts`, spelt out so that `f` is inlined once rather
        // than called from both of its branches (system calls, the hottest
        // callers, arrive with interrupts already masked).
        let enabled = interrupts::are_enabled();
        if enabled {
            interrupts::disable();
        }
        assert!(!self.busy.swap(true, Ordering::Acquire), "CpuLocal re-entered");
        // SAFETY: owner core, interrupts off, busy flag set: this is the
        // only reference to the value until the flag is cleared below.
        let result = f(unsafe { &mut *self.value.get() });
        self.busy.store(false, Ordering::Release);
        if enabled {
            interrupts::enable();
        }
        result
    }
}
