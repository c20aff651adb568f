//! Where libos-async puts things in the user address space.
//!
//! ```text
//! USER_MIN (4 MiB)        the application image (user.ld), a few MiB
//! HEAP_BASE               the global allocator's region (crate::heap):
//!                         the lazy region "heap" (crate::vm)
//! SCRATCH_BASE            1 TiB that libos-async never touches: apps map
//!                         frames here for experiments, and probe::write
//!                         may write here
//! CHANNELS_BASE           1 TiB of channel mappings (crate::channel::shm):
//!                         rings and rendezvous pages shared with other
//!                         environments, each followed by an unmapped
//!                         guard page; no Rust object lives there
//! FRAME_TABLE_BASE        128 GiB: the region layer's frame table, one u32
//!                         per user page, filled lazily (crate::vm::frames)
//! REGIONS_BASE            1 TiB where crate::vm::reserve places regions
//! RINGS_BASE              one RING_SLOT per core c: the submission/
//!                         completion ring of the vCPU on core c
//!                         (crate::ring::Ring) at ring_base(c), as many
//!                         pages as abi::ring::ring_bytes says (at most
//!                         RING_MAX_BYTES), the rest of the slot an
//!                         unmapped guard; shared with the kernel, so no
//!                         Rust object ever lives there
//! VCPU_STACKS_BASE        one VCPU_STACK_SLOT per core c: the stack of the
//!                         vCPU started by start_vcpu(c) is the top
//!                         VCPU_STACK_SIZE of slot c, the rest is an
//!                         unmapped guard
//! EXC_STACKS_BASE         one EXC_STACK_SLOT per core c, counted down
//!                         from EXC_STACK_TOP: core c's exception stack is
//!                         the EXC_STACK_SIZE bytes below
//!                         exc_stack_top(c) = EXC_STACK_TOP - c * slot
//!                         (the kernel's stride, see crate::exception); the
//!                         rest of each slot is an unmapped guard
//! STACK_TOP - STACK_SIZE  the first vCPU's stack (the kernel maps it)
//! INFO_VA                 info pages (kernel)
//! ```
//!
//! Everything here lies between the image and `abi::STACK_TOP -
//! abi::STACK_SIZE`.

use abi::{MAX_CORES, PAGE_SIZE, STACK_SIZE, STACK_TOP};

/// Start of the global allocator's region ([`crate::heap`]).
pub const HEAP_BASE: u64 = 0x0000_1000_0000_0000;
/// Size of the heap region.
pub const HEAP_SIZE: u64 = 0x0000_0000_4000_0000;

/// Start of the scratch window: never used by libos-async.
pub const SCRATCH_BASE: u64 = 0x0000_2000_0000_0000;
/// End (exclusive) of the scratch window.
pub const SCRATCH_END: u64 = SCRATCH_BASE + 0x0000_0100_0000_0000;

/// Start of the channel window (`crate::channel::shm`).
pub const CHANNELS_BASE: u64 = 0x0000_3000_0000_0000;
/// End (exclusive) of the channel window.
pub const CHANNELS_END: u64 = CHANNELS_BASE + 0x0000_0100_0000_0000;

/// Start of the frame table's window ([`crate::vm::frames`]).
pub const FRAME_TABLE_BASE: u64 = 0x0000_4000_0000_0000;
/// Size of the frame table's window: 4 bytes per page of user space.
pub const FRAME_TABLE_SIZE: u64 = abi::USER_MAX / PAGE_SIZE * 4;

/// Start of the window [`crate::vm::reserve`] places regions in.
pub const REGIONS_BASE: u64 = 0x0000_5000_0000_0000;
/// End (exclusive) of that window.
pub const REGIONS_END: u64 = REGIONS_BASE + 0x0000_0100_0000_0000;

/// Base of the per-core ring slots.
pub const RINGS_BASE: u64 = 0x0000_6000_0000_0000;
/// Address space per core for its ring (ring plus guard).
pub const RING_SLOT: u64 = 1024 * 1024;
/// The largest ring: `MAX_ENTRIES` submissions and completions.
pub const RING_MAX_BYTES: u64 =
    abi::ring::ring_bytes(abi::ring::MAX_ENTRIES, abi::ring::MAX_ENTRIES);

/// The base of core `core`'s ring.
pub const fn ring_base(core: usize) -> u64 {
    RINGS_BASE + RING_SLOT * core as u64
}

/// Base of the per-core vCPU stack slots.
pub const VCPU_STACKS_BASE: u64 = 0x0000_7000_0000_0000;
/// Address space per core (stack plus guard).
pub const VCPU_STACK_SLOT: u64 = 64 * 1024;
/// Mapped stack per vCPU.
pub const VCPU_STACK_SIZE: u64 = 16 * 1024;

/// Bottom of the per-core exception stack slots.
pub const EXC_STACKS_BASE: u64 = 0x0000_7100_0000_0000;
/// Address space per core (exception stack plus guard): the stride
/// registered with `SetExceptionHandler`.
pub const EXC_STACK_SLOT: u64 = 64 * 1024;
/// Top (exclusive) of core 0's exception stack; core `c`'s ends
/// `c * EXC_STACK_SLOT` lower (see [`exc_stack_top`]).
pub const EXC_STACK_TOP: u64 = EXC_STACKS_BASE + EXC_STACK_SLOT * MAX_CORES as u64;
/// Size of each core's exception stack.
pub const EXC_STACK_SIZE: u64 = 16 * 1024;

/// The top of core `core`'s exception stack.
pub const fn exc_stack_top(core: usize) -> u64 {
    EXC_STACK_TOP - EXC_STACK_SLOT * core as u64
}

/// Bottom of the per-core stacks of protected control transfers.
pub const IPC_STACKS_BASE: u64 = 0x0000_7200_0000_0000;
/// Address space per core (IPC stack plus guard): the stride registered
/// with `IpcRegister`.
pub const IPC_STACK_SLOT: u64 = 64 * 1024;
/// Top (exclusive) of core 0's IPC stack.
pub const IPC_STACK_TOP: u64 = IPC_STACKS_BASE + IPC_STACK_SLOT * MAX_CORES as u64;
/// Size of each core's IPC stack.
pub const IPC_STACK_SIZE: u64 = 16 * 1024;

/// The top of core `core`'s IPC stack.
pub const fn ipc_stack_top(core: usize) -> u64 {
    IPC_STACK_TOP - IPC_STACK_SLOT * core as u64
}

/// The top of core `core`'s vCPU stack.
pub const fn vcpu_stack_top(core: usize) -> u64 {
    VCPU_STACKS_BASE + VCPU_STACK_SLOT * (core as u64 + 1)
}

const _: () = assert!(HEAP_BASE + HEAP_SIZE <= SCRATCH_BASE);
const _: () = assert!(SCRATCH_END <= CHANNELS_BASE && CHANNELS_END <= FRAME_TABLE_BASE);
const _: () = assert!(FRAME_TABLE_BASE + FRAME_TABLE_SIZE <= REGIONS_BASE);
const _: () = assert!(REGIONS_END <= RINGS_BASE);
const _: () =
    assert!(RING_MAX_BYTES + PAGE_SIZE <= RING_SLOT && RING_SLOT.is_multiple_of(PAGE_SIZE));
const _: () = assert!(ring_base(MAX_CORES) <= VCPU_STACKS_BASE);
const _: () = assert!(EXC_STACK_TOP <= IPC_STACKS_BASE && IPC_STACK_TOP < STACK_TOP - STACK_SIZE);
const _: () = assert!(vcpu_stack_top(MAX_CORES - 1) + PAGE_SIZE <= EXC_STACKS_BASE);
const _: () = assert!(EXC_STACKS_BASE + PAGE_SIZE <= exc_stack_top(MAX_CORES - 1) - EXC_STACK_SIZE);
const _: () = assert!(EXC_STACK_TOP <= STACK_TOP - STACK_SIZE);
const _: () =
    assert!(VCPU_STACK_SIZE < VCPU_STACK_SLOT && VCPU_STACK_SIZE.is_multiple_of(PAGE_SIZE));
const _: () =
    assert!(EXC_STACK_SIZE.is_multiple_of(PAGE_SIZE) && EXC_STACK_TOP.is_multiple_of(PAGE_SIZE));
const _: () = assert!(
    EXC_STACK_SIZE + PAGE_SIZE <= EXC_STACK_SLOT && EXC_STACK_SLOT.is_multiple_of(PAGE_SIZE)
);

const _: () = assert!(abi::USER_MIN < HEAP_BASE && EXC_STACK_TOP < abi::USER_MAX);
const _: () = assert!(!abi::in_info_region(EXC_STACK_TOP));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_stacks_are_disjoint_with_guards() {
        for core in 0..MAX_CORES {
            let top = vcpu_stack_top(core);
            let bottom = top - VCPU_STACK_SIZE;
            assert_eq!(top % PAGE_SIZE, 0);
            assert!(bottom >= VCPU_STACKS_BASE + VCPU_STACK_SLOT * core as u64 + PAGE_SIZE);
            if core > 0 {
                assert!(bottom > vcpu_stack_top(core - 1));
            }
        }
    }

    #[test]
    fn rings_fit_their_slots() {
        assert_eq!(RING_MAX_BYTES % PAGE_SIZE, 0);
        for core in 0..MAX_CORES {
            let base = ring_base(core);
            assert_eq!(base % PAGE_SIZE, 0);
            assert!(base >= SCRATCH_END && base + RING_SLOT <= VCPU_STACKS_BASE);
            // At least one unmapped guard page before the next core's ring.
            assert!(base + RING_MAX_BYTES + PAGE_SIZE <= ring_base(core + 1));
        }
    }

    #[test]
    fn exception_stacks_are_disjoint_with_guards() {
        for core in 0..MAX_CORES {
            let top = exc_stack_top(core);
            let bottom = top - EXC_STACK_SIZE;
            assert_eq!(top, EXC_STACK_TOP - core as u64 * EXC_STACK_SLOT);
            assert!(bottom >= EXC_STACKS_BASE + PAGE_SIZE);
            if core > 0 {
                // The guard: at least a page between this stack's top and
                // the bottom of the next-lower core's stack.
                assert!(exc_stack_top(core - 1) - EXC_STACK_SIZE >= top + PAGE_SIZE);
            }
        }
    }
}
