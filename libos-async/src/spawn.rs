//! `spawn`: a program from the initrd loaded into a child environment this
//! library builds itself (the kernel's own loader is needed only for the
//! first environment).
//!
//! [`spawn`] (or [`spawn_with`]) finds the image in the initrd —
//! mapped read-only once per environment with `InitrdMap` at
//! [`INITRD_VA`] and indexed by name on first use — checks it with the
//! kernel's own loader rules (the same source, `kernel/src/elf.rs`,
//! compiled here: the same refusals and limits), creates a child
//! (`EnvCreate`), and fills it:
//!
//! - **segments** are *copied*: the initrd's frames are the kernel's (no
//!   ownership record), so `ChildMap` refuses them (`NotOwner`) and no
//!   text can be shared from the initrd. Each segment's pages that hold
//!   file bytes are allocated and mapped in this environment's staging
//!   window [`STAGING_VA`] with `AllocMap` (64 a call), the bytes copied
//!   in, the window unmapped (`UnmapRange`, one shootdown) and every frame
//!   *given* to the child (`ChildMap` with `CHILD_MAP_GIVE`: ownership and
//!   charge move); pages without file bytes (`.bss`) are fresh zeroed
//!   frames given directly.
//! - **the stack**: `abi::STACK_SIZE` at `STACK_TOP - STACK_SIZE`, as the
//!   kernel's loader maps it (or fewer pages, [`SpawnOptions`]); its top
//!   page holds the System V start
//!   layout (`[rsp]` = argc, then argv pointers and NULL, an empty envp,
//!   an empty auxiliary vector, the strings above).
//! - **registers**: `rip` the ELF entry, `rsp` as above (16-aligned),
//!   `rdi` = argc, `rsi` = argv (so a libos-async program's start argument
//!   is its argument count), everything else 0; `ChildStart` on `core`.
//!
//! The child has no exception, IPC or signal entry: a libos-async program
//! registers its own. Its info page says the creator's name and start
//! argument 0. [`crate::fork::wait`] reads its exit status. Any failure
//! destroys the half-built child (frames given to it go with it) and waits
//! until it is reclaimed, so the quota is back when [`spawn`] returns, and
//! frees what was not given yet; the result is a [`SpawnError`].
//!
//! One spawn at a time per environment (a lock: the staging window is
//! shared by its vCPUs).

use abi::{Error, PAGE_SIZE, Rights, UpcallFrame};
use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;

use crate::sys;

#[path = "../../kernel/src/elf.rs"]
#[allow(dead_code, reason = "the kernel's loader, shared source: not every item is used here")]
mod elfplan;
#[path = "../../kernel/src/initrd.rs"]
#[allow(dead_code, reason = "the kernel's archive reader, shared source")]
#[allow(clippy::enum_variant_names, reason = "the kernel's names, shared source")]
mod tar;

/// Where this library maps the initrd (read-only), once per environment.
pub const INITRD_VA: u64 = 0x0000_6800_0000_0000;
/// The staging window: segment pages are filled here before they are
/// given to the child (at most [`abi::ALLOC_MAP_MAX`] pages at a time).
pub const STAGING_VA: u64 = 0x0000_6900_0000_0000;

const _: () = assert!(crate::layout::ring_base(abi::MAX_CORES) <= INITRD_VA);
const _: () =
    assert!(STAGING_VA + abi::ALLOC_MAP_MAX * PAGE_SIZE <= crate::layout::VCPU_STACKS_BASE);

/// Why [`spawn`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// The kernel has no initrd.
    NoInitrd,
    /// The initrd is not a well-formed archive.
    BadInitrd,
    /// No such file in the initrd.
    NotFound,
    /// The image was refused by the loader's checks (their reason).
    BadImage(&'static str),
    /// The arguments do not fit in the stack's top page.
    ArgsTooBig,
    /// `core` is not a core number.
    BadCore,
    /// A system call failed (quota, memory, core).
    Kernel(Error),
}

impl From<Error> for SpawnError {
    fn from(e: Error) -> Self {
        SpawnError::Kernel(e)
    }
}

/// The initrd as this environment maps it: who mapped it (a forked child
/// inherits the record but not the mapping), its length, and its regular
/// files by name (offset, length).
struct Initrd {
    env: u32,
    len: usize,
    files: Vec<(String, usize, usize)>,
}

static INITRD: Mutex<Option<Initrd>> = Mutex::new(None);
/// One spawn at a time (the staging window).
static SPAWNING: Mutex<()> = Mutex::new(());

/// The bytes of the initrd file `name`, mapping and indexing the initrd
/// first if this environment has not.
fn image(name: &str) -> Result<&'static [u8], SpawnError> {
    let me = sys::info().env_id;
    let mut cached = INITRD.lock();
    if cached.as_ref().is_none_or(|i| i.env != me) {
        let len = sys::initrd_map(0)? as usize;
        if len == 0 {
            return Err(SpawnError::NoInitrd);
        }
        match sys::initrd_map(INITRD_VA) {
            Ok(_) | Err(Error::AlreadyMapped) => {}
            Err(e) => return Err(e.into()),
        }
        let archive = initrd_bytes(len);
        let mut files = Vec::new();
        for file in tar::files(archive) {
            let file = file.map_err(|_| SpawnError::BadInitrd)?;
            let at = file.data.as_ptr() as usize - INITRD_VA as usize;
            let mut name = String::new();
            if !file.prefix.is_empty() {
                name.push_str(file.prefix);
                name.push('/');
            }
            name.push_str(file.name);
            files.push((name, at, file.data.len()));
        }
        *cached = Some(Initrd { env: me, len, files });
    }
    let initrd = cached.as_ref().expect("just set");
    let &(_, at, len) =
        initrd.files.iter().find(|(n, _, _)| n == name).ok_or(SpawnError::NotFound)?;
    Ok(&initrd_bytes(initrd.len)[at..at + len])
}

fn initrd_bytes(len: usize) -> &'static [u8] {
    // SAFETY: `InitrdMap` mapped the whole archive (`len` bytes, read-only)
    // at INITRD_VA in this environment, and this library never unmaps it;
    // the kernel never writes the initrd's frames. (An application that
    // unmaps it itself faults on the next read, in its own code.)
    unsafe { core::slice::from_raw_parts(INITRD_VA as *const u8, len) }
}

/// How [`spawn_with`] builds the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpawnOptions {
    /// Frames of this environment's quota the child gets (it pays for its
    /// image, stack and page tables from them; `ChildQuota` changes it
    /// later).
    pub quota: u64,
    /// Stack pages mapped below `STACK_TOP` (at least 1, at most
    /// `STACK_SIZE / PAGE_SIZE`): a libos-async program needs them all
    /// (its main stack is not grown on demand); a program that uses only
    /// the start page needs 1.
    pub stack_pages: u64,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions {
            quota: crate::fork::DEFAULT_CHILD_QUOTA,
            stack_pages: abi::STACK_SIZE / PAGE_SIZE,
        }
    }
}

/// [`spawn_with`] with the default options (the whole stack, the default
/// child quota).
pub fn spawn(name: &str, args: &[&[u8]], core: usize) -> Result<u64, SpawnError> {
    spawn_with(name, args, core, SpawnOptions::default())
}

/// Loads initrd program `name` into a new child built as `opts` says,
/// starts it on `core` with `args` and returns its handle (see the module
/// documentation).
pub fn spawn_with(
    name: &str,
    args: &[&[u8]],
    core: usize,
    opts: SpawnOptions,
) -> Result<u64, SpawnError> {
    if core >= abi::MAX_CORES {
        return Err(SpawnError::BadCore);
    }
    if opts.stack_pages == 0 || opts.stack_pages > abi::STACK_SIZE / PAGE_SIZE {
        return Err(SpawnError::Kernel(Error::InvalidArgument));
    }
    let _one = SPAWNING.lock();
    let image = image(name)?;
    let plan = elfplan::plan(image).map_err(|e| SpawnError::BadImage(e.reason()))?;
    let top = start_page(args)?;
    let child = sys::env_create(opts.quota)?;
    match build(child, image, &plan, &top, args.len() as u64, core, opts.stack_pages) {
        Ok(()) => Ok(child),
        Err(e) => {
            // Destroyed and waited for: its quota (and what it was given)
            // is back when this returns.
            let _ = sys::child_destroy(child);
            let _ = crate::fork::wait(child);
            Err(e.into())
        }
    }
}

/// The stack's top page: the strings at its end, the vectors below them;
/// returns the page and the child's `rsp` and `argv`.
struct StartPage {
    bytes: [u8; PAGE_SIZE as usize],
    rsp: u64,
    argv: u64,
}

fn start_page(args: &[&[u8]]) -> Result<StartPage, SpawnError> {
    let page_va = abi::STACK_TOP - PAGE_SIZE;
    let mut p = StartPage { bytes: [0; PAGE_SIZE as usize], rsp: 0, argv: 0 };
    let mut at = PAGE_SIZE as usize - 16;
    let mut ptrs = Vec::with_capacity(args.len());
    for a in args.iter().rev() {
        at = at.checked_sub(a.len() + 1).ok_or(SpawnError::ArgsTooBig)?;
        p.bytes[at..at + a.len()].copy_from_slice(a);
        ptrs.push(page_va + at as u64);
    }
    ptrs.reverse();
    // argc, argv[..], NULL, envp NULL, AT_NULL pair: 8 bytes each.
    let words = 1 + args.len() + 1 + 1 + 2;
    let base = (at & !15).checked_sub(words * 8).ok_or(SpawnError::ArgsTooBig)? & !15;
    if base < 64 {
        return Err(SpawnError::ArgsTooBig);
    }
    let mut w = base;
    let mut put = |v: u64| {
        p.bytes[w..w + 8].copy_from_slice(&v.to_le_bytes());
        w += 8;
    };
    put(args.len() as u64);
    for &ptr in &ptrs {
        put(ptr);
    }
    put(0); // argv's NULL
    put(0); // envp's NULL
    put(0); // AT_NULL
    put(0);
    p.rsp = page_va + base as u64;
    p.argv = p.rsp + 8;
    Ok(p)
}

/// Gives the child `pages` fresh zeroed frames at `va ..` with `rights`.
fn give_zero(child: u64, va: u64, pages: u64, rights: Rights) -> Result<(), Error> {
    for i in 0..pages {
        let f = sys::frame_alloc(None)?;
        if let Err(e) = sys::child_map(child, f, va + i * PAGE_SIZE, rights, abi::CHILD_MAP_GIVE) {
            let _ = sys::frame_free(f);
            return Err(e);
        }
    }
    Ok(())
}

/// Gives the child `pages` frames at `va ..` with `rights`, each filled by
/// `fill(i, page bytes)` in the staging window first.
fn give_filled(
    child: u64,
    va: u64,
    pages: u64,
    rights: Rights,
    mut fill: impl FnMut(u64, &mut [u8]),
) -> Result<(), Error> {
    let mut done = 0;
    let mut frames = [0u64; abi::ALLOC_MAP_MAX as usize];
    while done < pages {
        let n = (pages - done).min(abi::ALLOC_MAP_MAX);
        let frames = &mut frames[..n as usize];
        sys::alloc_map(STAGING_VA, Rights::RW, frames)?;
        for i in 0..n {
            // SAFETY: `AllocMap` just mapped these `n` pages read-write at
            // STAGING_VA for this environment alone (the window is used under
            // `SPAWNING`, and no Rust object lives there); the slice ends
            // before `UnmapRange` below.
            let page = unsafe {
                core::slice::from_raw_parts_mut(
                    (STAGING_VA + i * PAGE_SIZE) as *mut u8,
                    PAGE_SIZE as usize,
                )
            };
            fill(done + i, page);
        }
        let unmapped = sys::unmap_range(STAGING_VA, n);
        let mut result = unmapped.map(|_| ());
        for (i, &f) in frames.iter().enumerate() {
            if result.is_ok() {
                let at = va + (done + i as u64) * PAGE_SIZE;
                result = sys::child_map(child, f, at, rights, abi::CHILD_MAP_GIVE).map(|_| ());
                if result.is_ok() {
                    continue;
                }
            }
            // Not given: still ours (a mapped one goes with the unmap).
            let _ = sys::frame_free(f);
        }
        result?;
        done += n;
    }
    Ok(())
}

/// Fills and starts `child` (see the module documentation).
fn build(
    child: u64,
    image: &[u8],
    plan: &elfplan::LoadPlan,
    top: &StartPage,
    argc: u64,
    core: usize,
    stack_pages: u64,
) -> Result<(), Error> {
    for seg in &plan.segments {
        let file_start = seg.copy_to;
        let file_end = file_start + seg.file_len as u64;
        // Pages holding file bytes: copied; the rest of the segment: zero.
        let filled = if seg.file_len == 0 {
            0
        } else {
            (file_end - seg.vaddr).div_ceil(PAGE_SIZE).min(seg.pages)
        };
        give_filled(child, seg.vaddr, filled, seg.rights, |i, page| {
            let va = seg.vaddr + i * PAGE_SIZE;
            let lo = va.max(file_start);
            let hi = (va + PAGE_SIZE).min(file_end);
            if lo < hi {
                let src = seg.file_offset + (lo - file_start) as usize;
                page[(lo - va) as usize..(hi - va) as usize]
                    .copy_from_slice(&image[src..src + (hi - lo) as usize]);
            }
        })?;
        give_zero(child, seg.vaddr + filled * PAGE_SIZE, seg.pages - filled, seg.rights)?;
    }
    let below = abi::STACK_TOP - stack_pages * PAGE_SIZE;
    give_zero(child, below, stack_pages - 1, Rights::RW)?;
    give_filled(child, abi::STACK_TOP - PAGE_SIZE, 1, Rights::RW, |_, page| {
        page.copy_from_slice(&top.bytes);
    })?;
    let frame = UpcallFrame {
        rip: plan.entry,
        rsp: top.rsp,
        rflags: 0x202,
        rdi: argc,
        rsi: top.argv,
        ..UpcallFrame::default()
    };
    sys::child_start(child, core as u64, &frame)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(p: &StartPage, va: u64) -> u64 {
        let at = (va - (abi::STACK_TOP - PAGE_SIZE)) as usize;
        u64::from_le_bytes(p.bytes[at..at + 8].try_into().unwrap())
    }

    fn string(p: &StartPage, va: u64) -> &[u8] {
        let at = (va - (abi::STACK_TOP - PAGE_SIZE)) as usize;
        let len = p.bytes[at..].iter().position(|&b| b == 0).unwrap();
        &p.bytes[at..at + len]
    }

    #[test]
    fn start_page_is_the_system_v_layout() {
        let args: [&[u8]; 3] = [b"prog", b"", b"last arg"];
        let p = start_page(&args).unwrap();
        assert_eq!(p.rsp % 16, 0);
        assert_eq!(p.argv, p.rsp + 8);
        assert_eq!(word(&p, p.rsp), 3);
        for (i, a) in args.iter().enumerate() {
            assert_eq!(string(&p, word(&p, p.argv + 8 * i as u64)), *a);
        }
        // argv's NULL, envp's NULL, AT_NULL (0, 0).
        for k in 3..7 {
            assert_eq!(word(&p, p.argv + 8 * k), 0, "word {k} after argv");
        }
    }

    #[test]
    fn arguments_beyond_the_page_are_refused() {
        let big = [b'x'; PAGE_SIZE as usize];
        assert!(matches!(start_page(&[&big]), Err(SpawnError::ArgsTooBig)));
        let many = [&b"a"[..]; 500];
        assert!(matches!(start_page(&many), Err(SpawnError::ArgsTooBig)));
        let fits = [&b"a"[..]; 100];
        assert_eq!(word(&start_page(&fits).unwrap(), start_page(&fits).unwrap().rsp), 100);
    }
}
