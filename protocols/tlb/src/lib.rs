//! The protocol `tests/tlbgranter` and `tests/tlbgrantee` share: where F
//! and F+1 are mapped, what F holds, and the control words in F+1.

#![no_std]
#![forbid(unsafe_code)]

use libos_async::abi::PAGE_SIZE;
use libos_async::layout::SCRATCH_BASE;

/// What F holds while granted (the granter writes it).
pub const OLD: u64 = 0x01d0_0000_feed_face;
/// What the granter writes into F once the revocation has returned.
pub const SENTINEL: u64 = 0xdead_beef_0000_0005;
/// Where F is mapped (in both environments).
pub const VA_F: u64 = SCRATCH_BASE;
/// Where F+1, the control page, is mapped.
pub const VA_G: u64 = SCRATCH_BASE + PAGE_SIZE;
/// Control word: the grantee's readers are running.
pub const READERS_RUNNING: u64 = VA_G;
/// Control word: the granter's revocation of F has returned.
pub const REVOKED: u64 = VA_G + 8;
/// Control word: violations the grantee's readers saw.
pub const VIOLATION_COUNT: u64 = VA_G + 16;
/// Control word: the grantee has reported.
pub const REPORTED: u64 = VA_G + 24;
pub use libos_async::TEST_WAIT_MS as WAIT_MS;
