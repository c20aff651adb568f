//! Entering and leaving ring 3, and the idle loop: loading an environment's
//! address space on this core, `iretq` into a vCPU from the idle stack,
//! abandoning the trap stack for the idle loop.
//!
//! The only `unsafe` of the scheduler is here (stack switches).
use super::runq::*;
use super::*;
use crate::machine::env::{self, Env};
use crate::machine::gdt::USER_CS;
use crate::machine::mailbox;
use crate::machine::percpu::MAX_CPUS;
use crate::machine::percpu::this_cpu;
use crate::machine::tlb;
use crate::machine::trap::TrapFrame;
use abi::CoreId;
use alloc::sync::Arc;
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use x86_64::VirtAddr;
use x86_64::registers::model_specific::KernelGsBase;

/// Loads `env`'s address space (if not loaded already), this core's vCPU
/// page as the user GS base and `env`'s system-call redirection into the
/// `syscall` entry's per-core copy.
#[inline]
pub(super) fn activate(env: &Arc<Env>) {
    let me = this_cpu();
    LOADED_ENV.with(|loaded| {
        if !loaded.as_ref().is_some_and(|e| Arc::ptr_eq(e, env)) {
            // Announce before loading, so that a shootdown which misses the
            // bit finds the fresh CR3 load already done (see tlb.rs).
            env.active_cores.fetch_or(1 << me.index, Ordering::SeqCst);
            tlb::load(&env.tlb_space());
            if let Some(prev) = loaded.replace(Arc::clone(env))
                && !tlb::pcids_enabled()
            {
                // Without PCIDs the load flushed all of `prev`; with them
                // this core stays in its set ("lazily left", see tlb.rs).
                prev.active_cores.fetch_and(!(1 << me.index), Ordering::SeqCst);
            }
        }
    });
    KernelGsBase::write(VirtAddr::new(abi::vcpu_page_va(me.index)));
    load_redirect(env);
}

/// Cores whose copy of the running environment's redirection may be stale
/// (its `SetSyscallRedirect` ran on another core): the next scheduling
/// decision there reloads it.
static REDIRECT_STALE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Copies `env`'s system-call redirection into this core's `PerCpu`, where
/// the `syscall` entry reads it (see `syscall.rs`). Interrupts are off (a
/// trap or system call, or the idle loop entering ring 3): the entry cannot
/// run on this core in between.
#[inline]
pub fn load_redirect(env: &Env) {
    let me = this_cpu();
    let record = |core| {
        let word = env::vcpu_word(env, core, offset_of!(abi::VcpuPage, redirect_rsp) as u64)?;
        // Just past `redirect_rsp`: the entry pushes rsp, rflags, rip.
        Some(word as *const AtomicU64 as u64 + 8)
    };
    let loaded = if env.redirect.maybe_set() {
        env.redirect.get().and_then(|r| Some((r, record(me.index)?)))
    } else {
        None
    };
    match loaded {
        Some((r, record)) => {
            me.redirect_record.store(record, Ordering::Relaxed);
            me.redirect_entry.store(r.entry, Ordering::Relaxed);
            me.redirect_stack.store(r.stack_for(CoreId::new(me.index)), Ordering::Relaxed);
            me.redirect_start.store(r.lib_start, Ordering::Relaxed);
            me.redirect_end.store(r.lib_end, Ordering::Relaxed);
        }
        None => {
            me.redirect_start.store(0, Ordering::Relaxed);
            me.redirect_end.store(u64::MAX, Ordering::Relaxed);
        }
    }
}

/// `SetSyscallRedirect` of `env` (the caller's running environment) took
/// effect: this core's copy is reloaded now, and every other core where
/// `env`'s address space may be loaded is told to reload its copy at its
/// next scheduling decision (kicked, so that one comes at once).
pub fn redirect_changed(env: &Env) {
    let me = this_cpu().index;
    load_redirect(env);
    // Pairs with `activate`'s SeqCst `active_cores` update: a core that
    // activates `env` after this either is in the set read here, or reads
    // the new registration itself.
    fence(Ordering::SeqCst);
    let cores = env.active_cores.load(Ordering::SeqCst) | env.vcpu_cores.load(Ordering::SeqCst);
    for core in (0..MAX_CPUS).filter(|&c| c != me && cores & (1 << c) != 0) {
        REDIRECT_STALE[core].store(true, Ordering::Release);
        kick(core);
    }
}

/// Takes this core's "redirection copy stale" mark ([`redirect_changed`]):
/// whether it was set.
#[inline]
pub(super) fn take_redirect_stale() -> bool {
    let stale = &REDIRECT_STALE[this_cpu().index];
    stale.load(Ordering::Relaxed) && stale.swap(false, Ordering::Acquire)
}

/// Leaves any user address space: the kernel's own tables are loaded, so an
/// idle core holds no environment's translations.
#[inline]
pub(super) fn deactivate_user() {
    let me = this_cpu();
    LOADED_ENV.with(|loaded| {
        if let Some(prev) = loaded.take() {
            tlb::load_kernel();
            if !tlb::pcids_enabled() {
                prev.active_cores.fetch_and(!(1 << me.index), Ordering::SeqCst);
            }
        }
    });
}

/// From the idle loop: runs this core's time vector; if a vCPU should run,
/// enters it (does not return).
pub fn run_ready() {
    if INBOUND[this_cpu().index].vcpus.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut frame = TrapFrame::default();
    if let Next::Resume = reschedule(&mut frame, Why::Event) {
        enter_user(&frame);
    }
}

unsafe extern "C" {
    /// The interrupt return path in `interrupts.rs`: pops a `TrapFrame` at
    /// `rsp` and `iretq`s.
    fn isr_restore() -> !;
}

/// Enters ring 3 with `context`, on this core's trap stack. Never returns.
pub fn enter_user(context: &TrapFrame) -> ! {
    let top = this_cpu().kernel_stack_top.load(Ordering::Relaxed);
    let at = top - core::mem::size_of::<TrapFrame>() as u64;
    debug_assert!(context.cs == u64::from(USER_CS) && context.rip < abi::USER_MAX);
    // SAFETY: `at..top` is the top of this core's trap stack, which nothing
    // uses while the core is in the idle loop or about to leave a trap (its
    // old contents are dead). `isr_restore` pops the frame and `iretq`s to
    // ring 3 with a user CS/SS and a user-half RIP, so the kernel stack we
    // abandon is never returned to.
    unsafe {
        (at as *mut TrapFrame).write(context.clone());
        core::arch::asm!("mov rsp, {0}", "jmp {1}", in(reg) at, sym isr_restore, options(noreturn));
    }
}

/// Abandons the current (trap) stack and restarts the idle loop on the idle
/// stack. The caller holds no lock and no `CpuLocal` borrow.
pub fn switch_to_idle() -> ! {
    let top = this_cpu().idle_stack_top.load(Ordering::Relaxed);
    // SAFETY: the idle stack is this core's and holds no live frame: the idle
    // loop was left by `enter_user`, which never returns, or this core is
    // already running on the trap stack. `idle_entry` never returns.
    unsafe {
        core::arch::asm!(
            "mov rsp, {0}",
            "xor ebp, ebp",
            "call {1}",
            "ud2",
            in(reg) top,
            sym idle_entry,
            options(noreturn)
        );
    }
}

extern "C" fn idle_entry() -> ! {
    idle_loop()
}

/// A core's idle loop: runs work posted to its mailbox with interrupts on,
/// steps dead environments' reclaims, enters a ready vCPU, zeroes frames
/// ahead for the allocator's pool while it wants some, and halts when
/// there is nothing to do. Never returns.
pub fn idle_loop() -> ! {
    let me = this_cpu();
    loop {
        while let Some(taken) = mailbox::take_work() {
            x86_64::instructions::interrupts::enable();
            (taken.work.func)(taken.work.arg);
            taken.acknowledge();
        }
        // Dead environments' reclaims, a bounded step at a time with
        // interrupts on between them.
        if env::reclaim_step() | env::repossess_step() {
            continue;
        }
        x86_64::instructions::interrupts::disable();
        if mailbox::has_work() {
            continue;
        }
        // A ready vCPU: enter ring 3 (does not return).
        run_ready();
        // About to halt: a reschedule request is answered (there was nothing
        // to run), and clearing the flag makes the next `kick` send an IPI
        // again; one that came after `run_ready` looked goes round again.
        if mailbox::take_resched() {
            continue;
        }
        // Nothing to run: zero one frame ahead for the allocator's pool
        // (a few hundred instructions, interrupts on), then look again, so
        // a wake-up waits for at most one frame's zeroing.
        if crate::machine::memory::zero_pool_wants_more() {
            x86_64::instructions::interrupts::enable();
            if crate::machine::memory::zero_step() {
                continue;
            }
            x86_64::instructions::interrupts::disable();
            if mailbox::has_work() || mailbox::resched_pending() {
                continue;
            }
        }
        me.halts.fetch_add(1, Ordering::Relaxed);
        // `sti; hlt`: an interrupt pending since the check above wakes us.
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}
