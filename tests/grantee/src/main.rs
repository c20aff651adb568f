//! `grantee` (runs with `granter`; start argument F, the granted frame;
//! F+1 is the shared control page).
//!
//! 1. registers an exception handler (it maps a fresh frame of its own at a
//!    faulting page, counts the fault and resumes);
//! 2. retries `map(F, READ)` until the grant arrives (before it: exactly
//!    `NotOwner`), checks the `0xfeedface` pattern, checks that
//!    `map(F, RW)` is `PermissionDenied`;
//! 3. maps F+1 RW (retrying until granted) and writes 1 into its word 0;
//! 4. waits for 2 in word 1 (F revoked), reads its old mapping of F again:
//!    that must page-fault at exactly that address (the handler maps a fresh
//!    zero frame, so the read then gives 0);
//! 5. writes 3 into word 2 and exits 0.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos_async::abi::{Error, PAGE_SIZE, Rights, UpcallFrame, vector};
use libos_async::check::{Checks, fail, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::sys::{self, probe};
use libos_async::{println, set_exception_handler, wait_until};

libos_async::entry!(app_main);

/// Where F is mapped (read-only), where the RW attempt goes, where F+1 is.
const VA_F: u64 = SCRATCH_BASE;
const VA_F_RW: u64 = SCRATCH_BASE + PAGE_SIZE;
const VA_G: u64 = SCRATCH_BASE + 2 * PAGE_SIZE;
const WAIT: u64 = 500_000;

static FAULTS: AtomicU64 = AtomicU64::new(0);
static FAULT_ADDR: AtomicU64 = AtomicU64::new(0);

fn handler(frame: &mut UpcallFrame) -> bool {
    if frame.vector != vector::PAGE_FAULT {
        return false;
    }
    FAULTS.fetch_add(1, SeqCst);
    FAULT_ADDR.store(frame.fault_addr, SeqCst);
    let page = frame.fault_addr & !(PAGE_SIZE - 1);
    sys::frame_alloc(None).and_then(|f| sys::map(f, page, Rights::RW)).is_ok()
}

/// Retries `map(frame, va, rights)` while it fails with `NotOwner` (the
/// grant has not arrived yet).
fn map_when_granted(c: &mut Checks, what: &str, frame: u64, va: u64, rights: Rights) {
    let mut last = Err(Error::NotOwner);
    let granted = wait_until(WAIT, || {
        last = sys::map(frame, va, rights);
        last != Err(Error::NotOwner)
    });
    if !granted {
        fail(format_args!("grantee: {what} never granted"));
    }
    if !c.expect_ok(what, last) {
        fail(format_args!("grantee: cannot go on"));
    }
}

fn app_main(f: u64) -> i32 {
    let mut c = Checks::new();
    let g = f + 1;
    require("set_exception_handler", set_exception_handler(handler));

    map_when_granted(&mut c, "map F READ", f, VA_F, Rights::READ);
    let v = probe::read(VA_F);
    c.check(v == 0xfeed_face, format_args!("pattern in F: {v:#x}"));
    c.expect_err(
        "map F RW beyond the grant",
        sys::map(f, VA_F_RW, Rights::RW),
        Error::PermissionDenied,
    );

    map_when_granted(&mut c, "map F+1 RW", g, VA_G, Rights::RW);
    probe::write(VA_G, 1);
    if !wait_until(WAIT, || probe::read(VA_G + 8) == 2) {
        fail(format_args!("grantee: granter never revoked"));
    }
    let before = FAULTS.load(SeqCst);
    let v = probe::read(VA_F);
    let faults = FAULTS.load(SeqCst) - before;
    c.check(
        faults == 1 && FAULT_ADDR.load(SeqCst) == VA_F && v == 0,
        format_args!(
            "read after revoke: {faults} faults at {:#x}, value {v:#x}",
            FAULT_ADDR.load(SeqCst)
        ),
    );
    probe::write(VA_G + 16, 3);
    println!("grantee: {} checks passed, {} failed", c.passed(), c.failed());
    c.finish()
}
