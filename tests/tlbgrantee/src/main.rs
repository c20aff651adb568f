//! `tlbgrantee` (runs with `tlbgranter`; start argument F: F is granted
//! READ, F+1 is the RW control page): the revocation stale-translation
//! detector, grantee side.
//!
//! 1. maps F READ and F+1 RW (retrying, bounded, until granted), checks that
//!    F holds [`OLD`];
//! 2. starts a reader vCPU on every other user core: each spins reading F
//!    with `probe::read_fixed`. [`OLD`] is fine until the granter's
//!    "revoked" word is seen, a fault (the handler returns [`MARKER`]) ends
//!    the reader's loop; anything else — the granter's [`SENTINEL`], `OLD`
//!    after "revoked" — is a violation. A reader whose bounded spin ends
//!    without a fault waits for "revoked" and then must fault on one read;
//! 3. once every reader runs, writes 1 into control word 0 (readers
//!    running); once every reader has faulted (bounded wait), writes the
//!    violation count into word 2 and 1 into word 3 (reported);
//! 4. exits 0 if there was no violation, else 1.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos_async::abi::{Error, Rights, UpcallFrame, vector};
use libos_async::check::{fail, require};
use libos_async::sys::{self, probe};
use libos_async::{core_id, info, println, set_exception_handler, start_vcpu, wait_for_ms};
use tlb_proto::*;

libos_async::entry!(app_main);

/// What a faulting probe returns.
const MARKER: u64 = 0xfa17_fa17_fa17_fa17;
const SPIN_MAX: u64 = 5_000_000;

static STARTED: AtomicU64 = AtomicU64::new(0);
static FAULTED: AtomicU64 = AtomicU64::new(0);
static SAW_OLD: AtomicU64 = AtomicU64::new(0);
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);

fn handler(frame: &mut UpcallFrame) -> bool {
    frame.vector == vector::PAGE_FAULT && probe::skip_fixed(frame, MARKER)
}

fn violation(what: core::fmt::Arguments) {
    if VIOLATIONS.fetch_add(1, SeqCst) < 8 {
        println!("CHECK FAILED: tlbgrantee core {}: {}", core_id(), what);
    }
}

/// Retries `map(frame, va, rights)` while it fails with `NotOwner`.
fn map_when_granted(what: &str, frame: u64, va: u64, rights: Rights) {
    let mut last = Err(Error::NotOwner);
    if !wait_for_ms(WAIT_MS, || {
        last = sys::map(frame, va, rights);
        last != Err(Error::NotOwner)
    }) {
        fail(format_args!("tlbgrantee: {what} never granted"));
    }
    require(what, last);
}

fn reader(_: u64) -> ! {
    let mut first = true;
    let mut settled = false;
    let mut saw_old = false;
    for _ in 0..SPIN_MAX {
        let revoked = probe::read(REVOKED) != 0;
        let v = probe::read_fixed(VA_F);
        if first {
            STARTED.fetch_add(1, SeqCst);
            first = false;
        }
        if v == MARKER {
            settled = true;
            break;
        }
        if v == OLD && !revoked {
            saw_old = true;
            continue;
        }
        if v == OLD {
            violation(format_args!("read OLD after the revocation returned"));
        } else if v == SENTINEL {
            violation(format_args!("read the owner's SENTINEL after the revocation"));
        } else {
            violation(format_args!("read {v:#x}"));
        }
        settled = true;
        break;
    }
    if !settled {
        if !wait_for_ms(WAIT_MS, || probe::read(REVOKED) != 0) {
            violation(format_args!("the granter never revoked"));
        } else {
            let v = probe::read_fixed(VA_F);
            if v != MARKER {
                violation(format_args!("read {v:#x} after the revocation returned"));
            }
        }
    }
    if saw_old {
        SAW_OLD.fetch_add(1, SeqCst);
    }
    FAULTED.fetch_add(1, SeqCst);
    sys::vcpu_exit()
}

fn app_main(f: u64) -> i32 {
    let g = f + 1;
    require("set_exception_handler", set_exception_handler(handler));
    map_when_granted("map F READ", f, VA_F, Rights::READ);
    map_when_granted("map F+1 RW", g, VA_G, Rights::RW);
    let v = probe::read(VA_F);
    if v != OLD {
        fail(format_args!("tlbgrantee: F holds {v:#x}, expected {OLD:#x}"));
    }

    let me = core_id();
    let cores = match info().user_cores {
        0 => u64::MAX,
        c => c,
    };
    let mut readers = 0;
    for core in (0..info().cores as usize).filter(|&c| c != me && cores & (1 << c) != 0) {
        require("start_vcpu", start_vcpu(core, reader, 0));
        readers += 1;
    }
    if readers == 0 {
        fail(format_args!("tlbgrantee: no other core for readers"));
    }
    if !wait_for_ms(WAIT_MS, || STARTED.load(SeqCst) >= readers) {
        fail(format_args!(
            "tlbgrantee: only {} of {readers} readers started",
            STARTED.load(SeqCst)
        ));
    }
    probe::write(READERS_RUNNING, 1);
    if !wait_for_ms(WAIT_MS, || FAULTED.load(SeqCst) >= readers) {
        violation(format_args!(
            "only {} of {readers} readers saw the revocation",
            FAULTED.load(SeqCst)
        ));
    }
    let violations = VIOLATIONS.load(SeqCst);
    probe::write(VIOLATION_COUNT, violations);
    probe::write(REPORTED, 1);
    println!(
        "tlbgrantee: {readers} readers, {} read F before the revocation, {violations} violations",
        SAW_OLD.load(SeqCst)
    );
    i32::from(violations != 0)
}
