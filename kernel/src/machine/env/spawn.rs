//! Creating environments: applications from the initrd, ELF loading, and
//! the kernel-owned pages every environment has (info page, event queue,
//! time vectors, per-core vCPU pages).
//!
//! May not touch: the scheduler (`sched::spawn` starts the first vCPU of
//! what [`create`] built).

use super::bindings::{alloc_table_frame, frame_alloc, frame_error, map_locked};
use super::registry::{ENVS, NEXT_ID, Reclaim, terminate};
use super::{ChildBook, ExceptionHandler, Ipc, Outcome, RedirectCell, lock_serving_mailbox};
use super::{Env, shard};
use crate::machine::memory;
use crate::machine::paging::{AddressSpace, leaf_flags};
use crate::machine::percpu::{MAX_CPUS, online_cpus};
use abi::{Error, Rights};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kernel::ownership::{EnvId, FrameKind};
use spin::{Mutex, Once};
use x86_64::instructions::interrupts::without_interrupts;

/// Why an application could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// No such application in the initrd.
    NotFound,
    /// Its ELF image was refused by the loader.
    BadElf(kernel::elf::ElfError),
    /// Loading it ran out of frames or quota.
    Memory(Error),
}

impl core::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpawnError::NotFound => write!(f, "no such application in the initrd"),
            SpawnError::BadElf(e) => write!(f, "malformed ELF: {e}"),
            SpawnError::Memory(e) => write!(f, "out of memory while loading: {e:?}"),
        }
    }
}

/// Round-robin placement of first vCPUs.
static NEXT_CORE: AtomicUsize = AtomicUsize::new(0);

pub use crate::machine::percpu::{set_user_cores, user_cores};

/// The initrd the applications are started from (set once at boot).
static INITRD: Once<&'static [u8]> = Once::new();

/// Gives this module the initrd (boot, before any environment starts).
pub fn set_initrd(initrd: &'static [u8]) {
    INITRD.call_once(|| initrd);
}

/// The initrd, if the loader passed one.
pub fn initrd() -> Option<&'static [u8]> {
    INITRD.get().copied()
}

/// The initrd's first frame and its size in bytes, for `InitrdMap`: `None`
/// without an initrd, or if it does not start on a page boundary in the
/// direct map (boot places it so; see `start::place_initrd`).
pub fn initrd_frames() -> Option<(kernel::frames::FrameNumber, u64)> {
    let initrd = INITRD.get()?;
    let phys = crate::machine::memory::direct_map_phys(initrd.as_ptr() as u64)?;
    phys.is_multiple_of(abi::PAGE_SIZE)
        .then(|| (kernel::frames::FrameNumber::from_addr(phys), initrd.len() as u64))
}

/// The ELF image of application `name` in the initrd.
pub fn find_app(name: &str) -> Result<&'static [u8], SpawnError> {
    let initrd = INITRD.get().ok_or(SpawnError::NotFound)?;
    let file = kernel::initrd::find(initrd, name).ok().flatten().ok_or(SpawnError::NotFound)?;
    Ok(file.data)
}

/// A core for a new environment's first vCPU: the cores that run
/// environments, round-robin.
pub fn pick_core() -> usize {
    let mask = user_cores();
    let n = online_cpus();
    for _ in 0..n {
        let c = NEXT_CORE.fetch_add(1, Ordering::Relaxed) % n;
        if mask & (1 << c) != 0 {
            return c;
        }
    }
    0
}

/// Creates an environment from an ELF image and registers it; returns it
/// with its entry point. It has no vCPU yet: `sched::spawn` starts its
/// first one, or [`abort_start`] ends it.
pub fn create(name: &str, image: &[u8], arg: u64) -> Result<(Arc<Env>, u64), SpawnError> {
    let plan = kernel::elf::plan(image).map_err(SpawnError::BadElf)?;
    let env = new_env(name, arg, super::quota(), EnvId::NONE, EnvId::NONE)
        .map_err(|e| SpawnError::Memory(frame_error(e)))?;
    if let Err(e) = load(&env, image, &plan).and_then(|()| map_kernel_pages(&env)) {
        Reclaim::new(Arc::clone(&env)).run();
        return Err(SpawnError::Memory(e));
    }
    without_interrupts(|| ENVS.write().insert(env.id, Arc::clone(&env)));
    crate::machine::ktrace::record(kernel::trace::Kind::EnvStart, env.id.raw(), 0);
    Ok((env, plan.entry))
}

/// Creates an empty child of `creator` with `quota` (already taken from
/// the creator's) and registers it: only the kernel's pages are mapped;
/// it has no vCPU and holds one creation count of `live_vcpus` until it
/// is first started or destroyed.
pub fn create_child(creator: &Env, quota: u64) -> Result<Arc<Env>, Error> {
    let env = new_env(&creator.name, 0, quota, creator.id, creator.family).map_err(frame_error)?;
    env.live_vcpus.store(1, Ordering::Release);
    env.unstarted.store(true, Ordering::Release);
    if let Err(e) = map_kernel_pages(&env) {
        Reclaim::new(Arc::clone(&env)).run();
        return Err(e);
    }
    without_interrupts(|| ENVS.write().insert(env.id, Arc::clone(&env)));
    crate::machine::ktrace::record(
        kernel::trace::Kind::EnvStart,
        env.id.raw(),
        u64::from(creator.id.raw()),
    );
    Ok(env)
}

/// A new environment with a fresh PML4 (charged to it) and nothing mapped.
fn new_env(
    name: &str,
    arg: u64,
    quota: u64,
    creator: EnvId,
    family: EnvId,
) -> Result<Arc<Env>, kernel::frames::FrameError> {
    let id = EnvId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
    // A kernel-started environment is a family of its own.
    let family = if family.is_none() { id } else { family };
    let pml4 = memory::alloc_frame()?;
    shard(pml4).insert(pml4, id, FrameKind::PageTable);
    Ok(Arc::new(Env {
        id,
        name: String::from(name),
        start_arg: arg,
        aspace: Mutex::new(AddressSpace::new(pml4)),
        root_cr3: pml4.addr(),
        owned: Mutex::new(kernel::frameset::FrameSet::new()),
        kernel_frames: Mutex::new(Vec::new()),
        vcpu_pages: AtomicU64::new(0),
        vcpu_page_frames: [const { AtomicU64::new(0) }; MAX_CPUS],
        event_frame: AtomicU64::new(0),
        event_lock: Mutex::new(()),
        prologue: AtomicU64::new(0),
        epilogue: AtomicU64::new(0),
        default_time: AtomicU64::new(u64::MAX),
        ipc: Ipc {
            entry: AtomicU64::new(0),
            stack_top: AtomicU64::new(0),
            stride: AtomicU64::new(0),
            accept_any: AtomicBool::new(true),
            accept: Mutex::new(Vec::new()),
            stack_busy: AtomicU64::new(0),
        },
        info_frame: AtomicU64::new(0),
        quota: AtomicU64::new(quota),
        repossess: super::repossess::Repossess::new(),
        mappings: AtomicU64::new(0),
        granted_to: AtomicBool::new(false),
        charged: AtomicU64::new(1),
        exception: Mutex::new(ExceptionHandler::default()),
        active_cores: AtomicU64::new(0),
        vcpu_cores: AtomicU64::new(0),
        live_vcpus: AtomicUsize::new(0),
        wake_owed: AtomicU64::new(0),
        redirect: RedirectCell::new(),
        dying: AtomicBool::new(false),
        outcome: Once::new(),
        finished: AtomicBool::new(false),
        creator,
        family,
        signals: super::signal::Signals::new(),
        children: Mutex::new(ChildBook::default()),
        unstarted: AtomicBool::new(false),
        kept: AtomicU64::new(0),
    }))
}

/// Ends an environment [`create`]d whose first vCPU could not start, and
/// reclaims it at once.
pub fn abort_start(env: &Arc<Env>, e: Error) {
    terminate(env, Outcome::Killed(alloc::format!("could not start its first vCPU: {e:?}")));
    Reclaim::new(Arc::clone(env)).run();
}

/// The initrd frame holding page `va` of `seg` of `image`, when the
/// segment is not writable, the page is wholly file bytes, and those bytes
/// are a whole page of the initrd (the packers put an ELF's data on a page
/// boundary of the archive).
fn initrd_page(
    image: &[u8],
    seg: &kernel::elf::Segment,
    va: u64,
) -> Option<kernel::frames::FrameNumber> {
    if seg.rights.contains(Rights::WRITE) {
        return None;
    }
    let file_end = seg.copy_to + seg.file_len as u64;
    if va < seg.copy_to || va + abi::PAGE_SIZE > file_end {
        return None;
    }
    let src = seg.file_offset + (va - seg.copy_to) as usize;
    let at = image.get(src..src + abi::PAGE_SIZE as usize)?.as_ptr() as u64;
    let phys = crate::machine::memory::direct_map_phys(at)?;
    let frame = kernel::frames::FrameNumber::from_addr(phys);
    (phys.is_multiple_of(abi::PAGE_SIZE) && super::bindings::is_initrd_frame(frame))
        .then_some(frame)
}

/// Maps the ELF segments and the stack.
fn load(env: &Env, image: &[u8], plan: &kernel::elf::LoadPlan) -> Result<(), Error> {
    let mut aspace = env.aspace.lock();
    for seg in &plan.segments {
        for page in 0..seg.pages {
            let va = seg.vaddr + page * abi::PAGE_SIZE;
            let file_start = seg.copy_to;
            let file_end = seg.copy_to + seg.file_len as u64;
            if let Some(frame) = initrd_page(image, seg, va) {
                // A read-only page wholly of file bytes on a page of the
                // initrd: that frame itself, read-only (no copy, no frame of
                // the environment's; a fork shares it without a record).
                map_locked(env, &mut aspace, frame, va, seg.rights)?;
                continue;
            }
            let frame = frame_alloc(env, None)?;
            // Copy the part of the file that falls into this page.
            let lo = va.max(file_start);
            let hi = (va + abi::PAGE_SIZE).min(file_end);
            if lo < hi {
                let src = seg.file_offset + (lo - file_start) as usize;
                let bytes = &image[src..src + (hi - lo) as usize];
                // SAFETY: the frame was just allocated to this environment and
                // is not mapped anywhere yet; the range stays inside it.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        memory::frame_virt(frame).add((lo - va) as usize),
                        bytes.len(),
                    )
                };
            }
            map_locked(env, &mut aspace, frame, va, seg.rights)?;
        }
    }
    for page in 0..abi::STACK_SIZE / abi::PAGE_SIZE {
        let frame = frame_alloc(env, None)?;
        map_locked(
            env,
            &mut aspace,
            frame,
            abi::STACK_TOP - abi::STACK_SIZE + page * abi::PAGE_SIZE,
            Rights::RW,
        )?;
    }
    Ok(())
}

/// Maps the kernel's pages: the info page, the event queue, the schedule.
fn map_kernel_pages(env: &Env) -> Result<(), Error> {
    let mut aspace = env.aspace.lock();
    // The info page: kernel-owned, read-only for the environment.
    let info_frame = memory::alloc_frame().map_err(frame_error)?;
    env.kernel_frames.lock().push(info_frame);
    env.info_frame.store(info_frame.raw(), Ordering::Release);
    let mut info = abi::InfoPage {
        abi_version: abi::ABI_VERSION,
        env_id: env.id.raw(),
        tsc_hz: crate::machine::time::tsc_hz(),
        cores: online_cpus() as u32,
        frame_quota: env.quota() as u32,
        user_cores: user_cores(),
        notifications: 0,
        start_arg: env.start_arg,
        name: [0; abi::NAME_MAX as usize],
        overruns: 0,
        event_tail: 0,
        slots_per_core: crate::machine::slots::config().slots,
        slot_us: crate::machine::slots::config().slot_us,
        grace_us: crate::machine::slots::config().grace_us,
        slots_reserved: crate::machine::slots::config().slots_reserved,
        console_input: 0,
    };
    let n = env.name.len().min(info.name.len());
    info.name[..n].copy_from_slice(&env.name.as_bytes()[..n]);
    // SAFETY: the frame is ours, unmapped elsewhere, and large enough.
    unsafe { (memory::frame_virt(info_frame) as *mut abi::InfoPage).write(info) };
    aspace
        .map(abi::INFO_VA, info_frame, leaf_flags(Rights::READ), &mut || alloc_table_frame(env))?;
    // The event queue: kernel-owned, read-only for the environment; a fresh
    // frame is zeroed, which is an empty queue.
    let event_frame = memory::alloc_frame().map_err(frame_error)?;
    env.kernel_frames.lock().push(event_frame);
    env.event_frame.store(event_frame.raw(), Ordering::Release);
    aspace.map(abi::EVENTS_VA, event_frame, leaf_flags(Rights::READ), &mut || {
        alloc_table_frame(env)
    })?;
    // Every core's time vector: the same kernel frames in every environment.
    for (page, frame) in crate::machine::slots::schedule_frames().enumerate() {
        let va = abi::SCHEDULE_VA + page as u64 * abi::PAGE_SIZE;
        aspace.map(va, frame, leaf_flags(Rights::READ), &mut || alloc_table_frame(env))?;
    }
    Ok(())
}

/// Maps core `core`'s read-only vCPU page into `env` (once per core).
pub fn ensure_vcpu_page(env: &Env, core: usize) -> Result<(), Error> {
    if env.vcpu_pages.load(Ordering::Acquire) & (1 << core) != 0 {
        return Ok(());
    }
    let mut aspace = lock_serving_mailbox(&env.aspace);
    if env.vcpu_pages.load(Ordering::Acquire) & (1 << core) != 0 {
        return Ok(());
    }
    let frame = memory::alloc_frame().map_err(frame_error)?;
    env.kernel_frames.lock().push(frame);
    let page = abi::VcpuPage { core: core as u64, env_id: u64::from(env.id), ..Default::default() };
    // SAFETY: a fresh kernel frame, mapped nowhere yet.
    unsafe { (memory::frame_virt(frame) as *mut abi::VcpuPage).write(page) };
    aspace.map(abi::vcpu_page_va(core), frame, leaf_flags(Rights::READ), &mut || {
        alloc_table_frame(env)
    })?;
    env.vcpu_page_frames[core].store(frame.raw(), Ordering::Release);
    env.vcpu_pages.fetch_or(1 << core, Ordering::AcqRel);
    Ok(())
}
