//! The kernel/libOS contract.
//!
//! This crate is the one place the exokernel and the library operating
//! systems share: syscall numbers, ring entry layouts, error codes, upcall
//! frames, the predicate bytecode and the read-only info page will all be
//! defined here, documented item by item, and nowhere else.
//!
//! Status: the boot issue only fixes the ABI version. Ring 3, system calls
//! and everything they carry arrive with the environments issue; until then
//! no libOS exists and nothing else is defined here.

#![no_std]
#![forbid(unsafe_code)]

/// Version of this contract. The kernel will refuse to start an environment
/// built against another version (once environments exist).
pub const ABI_VERSION: u32 = 0;
