//! `fuzz`: a system-call fuzzer. A xorshift64 generator seeded from the
//! start argument (a fixed seed when it is 0) drives 1,000,000 system calls
//! with numbers in `0..SYSCALL_COUNT + 4` and arguments drawn from small
//! integers, random words, pointers into its own mapped buffer, unmapped
//! user addresses, kernel-half and non-canonical addresses, info-region
//! addresses, frame numbers near its own frames and pages of a fuzz window.
//!
//! It must survive, so it never makes a call that kills it on purpose:
//! - no `Exit` or `VcpuExit` (those draws become `Null`); `Yield` only once
//!   in 1024 draws (else `Null`), to stay fast when cores are shared;
//! - `ExceptionResume` only with kernel-half, non-canonical or never-mapped
//!   pointers; `VcpuStart` only with a kernel-half entry; `SetExceptionHandler`
//!   only with null or kernel-half values;
//! - `Map`/`Unmap`/`Protect` addresses come from a 64-page window it never
//!   uses otherwise, or are invalid (kernel half, info region, below
//!   `USER_MIN`, unaligned, ...), so its code, data and stacks stay mapped;
//! - `ConsoleWrite` with a readable pointer only with an invalid length (no
//!   garbage on the console);
//! - slot upcall and IPC entries only null or kernel-half, default time
//!   kept on every core; slots, directed yields, calls and asynchronous
//!   calls with small or random arguments.
//!
//! Prints progress every 250,000 calls and `fuzz: N syscalls, M errors`,
//! then checks that the basic calls still work and exits 0.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::abi::{self, CONSOLE_WRITE_MAX, PAGE_SIZE, Rights, SYSCALL_COUNT, Syscall};
use libos_async::check::{fail, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::println;
use libos_async::sys::{self, probe};

use libos_async::rng::Rng;

libos_async::entry!(app_main);

const CALLS: u64 = 1_000_000;
const PROGRESS: u64 = 250_000;
const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Its readable buffer: one mapped page of random bytes.
const BUF: u64 = SCRATCH_BASE;
/// The window `Map`/`Unmap`/`Protect` may touch.
const WINDOW: u64 = SCRATCH_BASE + 0x100_0000;
const WINDOW_PAGES: u64 = 64;
/// A gigabyte that is never mapped.
const NEVER_MAPPED: u64 = SCRATCH_BASE + 0x8000_0000;
/// Frames it owns from the start.
const OWN_FRAMES: usize = 8;

struct Fuzz {
    rng: Rng,
    /// Frames allocated at start (the "near own frames" base).
    own: [u64; OWN_FRAMES],
}

impl Fuzz {
    fn kernel_addr(&mut self) -> u64 {
        let base =
            self.rng.pick(&[0xffff_8000_0000_0000, 0xffff_ffff_8000_0000, 0xffff_ffff_ffff_f000]);
        base + (self.rng.below(1 << 20) & !7)
    }

    fn noncanonical(&mut self) -> u64 {
        0x0000_8000_0000_0000 + self.rng.below(1 << 40)
    }

    fn unmapped(&mut self) -> u64 {
        NEVER_MAPPED + self.rng.below(1 << 30)
    }

    fn info_addr(&mut self) -> u64 {
        abi::INFO_VA + self.rng.below(abi::INFO_REGION_SIZE)
    }

    fn buf_ptr(&mut self) -> u64 {
        BUF + self.rng.below(PAGE_SIZE)
    }

    fn window_page(&mut self) -> u64 {
        WINDOW + self.rng.below(WINDOW_PAGES) * PAGE_SIZE
    }

    fn frame(&mut self) -> u64 {
        match self.rng.below(6) {
            0 => self.rng.below(64),
            1 => self.rng.next_u64(),
            2 => abi::ANY_FRAME,
            _ => {
                let base = self.own[self.rng.below(OWN_FRAMES as u64) as usize];
                (base + self.rng.below(64)).saturating_sub(32)
            }
        }
    }

    /// A pointer that is surely not readable.
    fn bad_ptr(&mut self) -> u64 {
        match self.rng.below(4) {
            0 => 0,
            1 => self.kernel_addr(),
            2 => self.noncanonical(),
            _ => self.unmapped(),
        }
    }

    /// Any pointer, readable or not.
    fn any_ptr(&mut self) -> u64 {
        match self.rng.below(5) {
            0 => self.buf_ptr(),
            1 => self.info_addr(),
            2 => self.window_page() + self.rng.below(PAGE_SIZE),
            _ => self.bad_ptr(),
        }
    }

    /// An address for Map/Unmap/Protect: the window or an invalid one.
    fn map_va(&mut self) -> u64 {
        match self.rng.below(10) {
            0 => self.kernel_addr(),
            1 => self.info_addr() & !(PAGE_SIZE - 1),
            2 => self.rng.below(abi::USER_MIN) & !(PAGE_SIZE - 1),
            3 => self.window_page() + 1 + self.rng.below(PAGE_SIZE - 1),
            4 => self.rng.pick(&[abi::USER_MAX, 0, abi::STACK_TOP + 7]),
            5 => self.noncanonical() & !(PAGE_SIZE - 1),
            _ => self.window_page(),
        }
    }

    fn rights(&mut self) -> u64 {
        match self.rng.below(4) {
            0 => self.rng.next_u64(),
            _ => self.rng.below(16),
        }
    }

    /// Any argument word.
    fn any(&mut self) -> u64 {
        match self.rng.below(8) {
            0 | 1 => self.rng.below(16),
            2 => self.rng.next_u64(),
            3 => self.frame(),
            4 => self.any_ptr(),
            5 => self.rng.pick(&[u64::MAX, 1 << 63, CONSOLE_WRITE_MAX + 1, abi::NAME_MAX]),
            _ => self.rng.below(1 << 20),
        }
    }

    /// One system call: its number and arguments.
    fn draw(&mut self) -> (u64, [u64; 6]) {
        let n = self.rng.below(SYSCALL_COUNT + 4);
        let mut a = [0u64; 6];
        for w in &mut a {
            *w = self.any();
        }
        let Some(call) = Syscall::from_number(n) else {
            return (n, a);
        };
        match call {
            Syscall::Exit | Syscall::VcpuExit => return (Syscall::Null as u64, a),
            Syscall::Yield if self.rng.below(1024) != 0 => return (Syscall::Null as u64, a),
            Syscall::ConsoleWrite => {
                // Every stream, and unknown ones.
                a[2] = if self.rng.below(2) == 0 { self.rng.below(4) } else { self.any() };
                if self.rng.below(2) == 0 {
                    a[0] = self.bad_ptr();
                } else {
                    a[0] = self.any_ptr();
                    a[1] = CONSOLE_WRITE_MAX + 1 + self.rng.below(u64::MAX - CONSOLE_WRITE_MAX - 1);
                }
            }
            Syscall::EnvLookup => {
                a[0] = self.any_ptr();
                a[1] = if self.rng.below(2) == 0 { self.rng.below(80) } else { self.any() };
            }
            Syscall::ExceptionResume => a[0] = self.bad_ptr(),
            Syscall::VcpuStart => a[1] = self.kernel_addr(),
            Syscall::SetExceptionHandler => {
                a[0] = if self.rng.below(2) == 0 { 0 } else { self.kernel_addr() };
                a[1] = if self.rng.below(2) == 0 { 0 } else { self.kernel_addr() };
            }
            Syscall::Map => {
                a[0] = self.frame();
                a[1] = self.map_va();
                a[2] = self.rights();
            }
            Syscall::Unmap => a[0] = self.map_va(),
            // Pages only in the map window (nothing of ours lives there);
            // the frame numbers to an address that cannot hold our data.
            Syscall::AllocMap => {
                a[0] = self.map_va();
                a[1] = self.rng.below(70);
                a[2] = self.rights();
                a[3] = if self.rng.below(2) == 0 { 0 } else { self.bad_ptr() };
            }
            // Never block: no wait for completions, and predicates only
            // from addresses that cannot hold a verifiable program.
            Syscall::RingEnter => a[1] = 0,
            Syscall::SleepOn => a[0] = self.bad_ptr(),
            Syscall::RingSetup => {
                // Not on mapped pages: the window may map frames of our
                // own buffer, and a ring there would (rightly) be written
                // by the kernel, defeating the buffer-integrity check.
                a[0] = self.bad_ptr();
                a[1] = 1 << self.rng.below(14);
                a[2] = 1 << self.rng.below(14);
            }
            Syscall::UnmapRange => {
                // At most 64 pages past the map window: nothing of ours
                // lives there, so the range cannot hit code or stacks.
                a[0] = self.map_va();
                a[1] =
                    if self.rng.below(8) == 0 { self.rng.next_u64() } else { self.rng.below(64) };
            }
            Syscall::Protect => {
                a[0] = self.map_va();
                a[1] = self.rights();
            }
            // Children: small quotas and handles that often name one.
            // Sharing only from the map window (never our own code, data or
            // stacks, which would turn read-only under us), starting only
            // from unreadable frames, copying from nowhere.
            Syscall::EnvCreate => a[0] = self.rng.below(64),
            Syscall::ShareRange | Syscall::ShareWritable => {
                a[0] = self.rng.below(64);
                a[1] = self.map_va();
                a[3] = self.rng.below(64);
                a[4] = 0;
            }
            Syscall::ChildStart => {
                a[0] = self.rng.below(64);
                a[2] = self.bad_ptr();
            }
            Syscall::FrameCopy => a[1] = self.bad_ptr(),
            // Entries from an address that cannot hold them.
            Syscall::MapBatch => {
                a[0] = self.bad_ptr();
                a[1] = self.rng.below(70);
            }
            // Small quotas: the fuzzer's own stays enough to go on.
            Syscall::ChildQuota => {
                a[0] = self.rng.below(64);
                a[1] = self.rng.below(128);
            }
            Syscall::PageQuery | Syscall::CowBreak => {}
            // Any word as the core: a read of a counter, or NoSuchCore.
            Syscall::QueueDelay => {}
            Syscall::ChildMap
            | Syscall::ChildUnmap
            | Syscall::ChildSetEntry
            | Syscall::ChildStatus
            | Syscall::ChildDestroy => a[0] = self.rng.below(64),
            Syscall::FrameAlloc
            | Syscall::FrameFree
            | Syscall::FrameStatus
            | Syscall::FrameRevoke
            | Syscall::FrameGrant => {
                a[0] = self.frame();
                a[1] = self.rng.below(16);
                if call == Syscall::FrameGrant {
                    a[2] = self.rights();
                }
            }
            // Signals: to anyone (only this environment is of its family;
            // with no entry the bits just stay pending), entries only
            // refused or none, resumes only of unreadable frames.
            Syscall::SignalPost => a[0] = self.rng.below(16),
            Syscall::SignalEntry => {
                a[0] = if self.rng.below(2) == 0 { 0 } else { self.kernel_addr() };
            }
            Syscall::SignalCtl => {
                a[0] = self.rng.below(5);
                a[1] = self.bad_ptr();
            }
            // Upcall entries only where no code is: a random user address
            // would make this program jump into garbage.
            Syscall::SetSlotHandlers | Syscall::IpcRegister => {
                a[0] = if self.rng.below(2) == 0 { 0 } else { self.kernel_addr() };
                a[1] = if self.rng.below(2) == 0 { 0 } else { self.kernel_addr() };
            }
            // Redirection only refused or disabled: a registered one would
            // send this program's own system calls into garbage.
            Syscall::SetSyscallRedirect => {
                a[0] = if self.rng.below(2) == 0 { 0 } else { self.kernel_addr() };
            }
            // Any FS base: nothing here uses `fs:` (no TLS).
            Syscall::SetFsBase => {}
            // Never turn default time off (only on, or refused): without
            // slots, off on its core would stop this program for good
            // (correctly).
            Syscall::SetDefaultTime => {
                a[1] = if self.rng.below(2) == 0 { 1 } else { 2 + self.rng.below(100) };
            }
            Syscall::SlotAlloc | Syscall::SlotFree => {
                a[0] = self.rng.below(10);
                if self.rng.below(2) == 0 {
                    a[1] = self.rng.below(20);
                }
                a[2] = self.rng.below(4);
            }
            Syscall::YieldTo | Syscall::Call | Syscall::Acall | Syscall::IpcAccept => {
                a[0] = if self.rng.below(4) == 0 { self.any() } else { self.rng.below(16) };
            }
            Syscall::InitrdMap => {
                // Into the map window (read-only pages: nothing of ours
                // can be overwritten), with hostile restart state.
                a[0] = if self.rng.below(8) == 0 { 0 } else { self.map_va() };
                a[1] = if self.rng.below(2) == 0 { 0 } else { self.rng.below(8) };
                a[2] = if self.rng.below(2) == 0 { 0 } else { self.rng.below(32) };
            }
            // The list is only read when a demand is open (never here).
            Syscall::RepossessList => {
                a[1] = if self.rng.below(2) == 0 { self.rng.below(1 << 17) } else { self.any() };
            }
            // The bitmap is written: never into our own buffer.
            Syscall::PageAccess => {
                a[0] = self.map_va();
                a[1] = self.rng.below(600);
                a[2] = self.kernel_addr();
                a[3] = self.rng.below(3);
            }
            Syscall::Null
            | Syscall::Yield
            | Syscall::Reply
            | Syscall::RepossessStatus
            | Syscall::ChildSignal => {}
            // Not the console reader: refused whatever the arguments (and
            // a read would only write the kernel-half or window addresses).
            Syscall::ConsoleRead => {
                a[0] = if self.rng.below(2) == 0 { self.kernel_addr() } else { self.map_va() };
                a[1] = self.rng.below(300);
            }
            Syscall::ConsoleGive => a[0] = self.rng.below(16),
        }
        (n, a)
    }
}

fn app_main(seed: u64) -> i32 {
    let seed = if seed == 0 { DEFAULT_SEED } else { seed };
    let mut fuzz = Fuzz { rng: Rng::new(seed), own: [0; OWN_FRAMES] };
    let buf_frame = require("frame_alloc", sys::frame_alloc(None));
    require("map buffer", sys::map(buf_frame, BUF, Rights::RW));
    for w in 0..PAGE_SIZE / 8 {
        probe::write(BUF + w * 8, fuzz.rng.next_u64());
    }
    for i in 0..OWN_FRAMES {
        fuzz.own[i] = require("frame_alloc", sys::frame_alloc(None));
        if i % 2 == 0 {
            let va = WINDOW + i as u64 * PAGE_SIZE;
            require("map window", sys::map(fuzz.own[i], va, Rights::RW));
        }
    }
    println!("fuzz: seed {seed:#x}, {CALLS} syscalls");

    let mut errors = 0u64;
    for i in 1..=CALLS {
        let (n, args) = fuzz.draw();
        if abi::decode(sys::syscall_raw(n, args)).is_err() {
            errors += 1;
        }
        if i % PROGRESS == 0 && i != CALLS {
            println!("fuzz: {i} syscalls, {errors} errors");
        }
    }
    println!("fuzz: {CALLS} syscalls, {errors} errors");

    // Still healthy?
    if sys::null() != Ok(0) {
        fail(format_args!("null after fuzzing"));
    }
    if probe::read(BUF) == 0 && probe::read(BUF + 8) == 0 {
        fail(format_args!("fuzz buffer lost its contents"));
    }
    0
}
