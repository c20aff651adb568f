//! Where things go in the shared address space.
//!
//! ```text
//! 0x1_0000 .. PROGRAM_END    the Linux program's (libos-posix's Layout.user_end)
//!   0x40_0000                its ET_EXEC image (a static PIE at PIE_BIAS)
//!   image end .. BRK_LIMIT   its break
//!   0x7000_0000              this runtime's image (build.rs: below 2 GiB for
//!                            the small code model), the handler stack in its .bss
//!   MMAP_LO .. MMAP_HI       its mmap area (top-down)
//!   STACK_TOP - STACK_SIZE   its stack
//! INITRD_VA                  the initrd, read-only
//! 0x1000_0000_0000 ..        libos-async's heap, regions, stacks (its layout)
//! ```
//!
//! The program can never unmap or overwrite this runtime: `glue::Mem`
//! unmaps only pages it mapped for the program, and a `MAP_FIXED` over the
//! runtime's image fails (`glue::Mem` refuses it: `ENOMEM`); checked
//! copies reach only the program's own pages.

/// Lowest address the program may map (Linux's `mmap_min_addr`).
pub const MIN_ADDR: u64 = 0x1_0000;
/// First address the program may not use: this runtime's image.
pub const PROGRAM_END: u64 = 0x20_0000_0000;
/// Where a static PIE is placed.
pub const PIE_BIAS: u64 = 0x1000_0000;
/// The break's limit (its start is the page after the image), below this
/// runtime's image.
pub const BRK_LIMIT: u64 = 0x6000_0000;
/// Lowest address of non-fixed `mmap`s.
pub const MMAP_LO: u64 = 0x1_0000_0000;
/// End of the non-fixed `mmap` area.
pub const MMAP_HI: u64 = 0x1f_0000_0000;
/// Top of the program's stack.
pub const STACK_TOP: u64 = 0x1f_f000_0000;
/// The program's stack, mapped at start as a lazy area (`glue::Book`): a
/// page takes a frame from the quota at its first touch.
pub const STACK_SIZE: u64 = 1 << 20;
/// Where the initrd is mapped (read-only), above this runtime's image.
pub const INITRD_VA: u64 = 0x30_0000_0000;

const _: () = assert!(STACK_TOP <= PROGRAM_END && MMAP_HI <= STACK_TOP - STACK_SIZE);
const _: () = assert!(PIE_BIAS < BRK_LIMIT && BRK_LIMIT <= MMAP_LO);
