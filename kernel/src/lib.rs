//! Hardware-free kernel logic.
//!
//! Everything in this library compiles and unit-tests on the host: it owns
//! no hardware, touches no physical memory and contains no `unsafe`. The
//! machine-facing half of the kernel (`src/main.rs` and `src/machine/`)
//! feeds it plain data (byte slices, numbers) and acts on its answers.
//!
//! | module | owns |
//! |---|---|
//! | [`cmdline`] | the kernel command line: modes, log level, tunables |
//! | [`pvh`] | parsing the PVH `hvm_start_info` and its memory map |
//! | [`memmap`] | turning a firmware memory map into free frame ranges |
//! | [`mappingset`] | one frame's reverse map (one mapping inline, more in a B-tree) |
//! | [`ownership`] | who holds each frame: owner, kind, grants, reverse map |
//! | [`frames`] | the physical frame allocator (a bitmap) |
//! | [`frameset`] | a set of frames with a steady cost per insert and remove (an environment's frames) |
//! | [`zeropool`] | the pool of frames zeroed ahead of time (idle cores fill it) |
//! | [`initrd`] | the initrd archive format (ustar) reader |
//! | [`elf`] | checking an application's ELF image and planning its load |
//! | [`repossess`] | the rules of a memory repossession demand (debt, deadline, list walk) |
//! | [`serialin`] | console input: the bounded receive buffer, ISA interrupt routing through an I/O APIC |
//! | [`ring`] | the kernel side of the submission/completion ring protocol |
//! | [`stats`] | benchmark summaries (median, p99) |
//! | [`predicate`] | verifying and evaluating wakeup predicates |
//! | [`timevec`] | time-slot ownership and the slot picking rule |
//! | [`slotclock`] | the rules of a core's walk through its time vector (the abort protocol) |
//! | [`syscall`] | decoding a system call's registers into a typed request |
//! | [`trace`] | the kernel's per-core trace ring: record format, lock-free single-writer ring, dump lines |

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod cmdline;
pub mod elf;
pub mod frames;
pub mod frameset;
pub mod initrd;
pub mod mappingset;
pub mod memmap;
pub mod ownership;
pub mod predicate;
pub mod pvh;
pub mod repossess;
pub mod ring;
pub mod serialin;
pub mod slotclock;
pub mod stats;
pub mod syscall;
pub mod timevec;
pub mod trace;
pub mod zeropool;

/// Size of a base page and of a physical frame.
pub const PAGE_SIZE: u64 = 4096;
