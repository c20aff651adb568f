//! `tlbgranter` (runs with `tlbgrantee`; start argument F: frames F and F+1
//! are free): the revocation stale-translation detector, owner side.
//!
//! 1. allocates exactly F and F+1, maps both RW, writes `OLD` into F;
//! 2. finds `tlbgrantee` (bounded retries), grants it F READ and F+1 RW;
//! 3. waits until the grantee writes 1 into control word 0 (its readers
//!    spin on F);
//! 4. revokes F; as soon as that returns, writes `SENTINEL` into F (it still
//!    owns it: a grantee reader that sees it used a stale translation), then
//!    1 into control word 1 ("revoked");
//! 5. waits until the grantee reports (word 3 = 1) its violation count
//!    (word 2), or has exited;
//! 6. revokes F+1, unmaps and frees both, exits 0 if the grantee reported 0
//!    violations, else 1.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::abi::{Error, Rights};
use libos_async::check::{fail, require};
use libos_async::sys::{self, probe};
use libos_async::{println, wait_for_ms};
use tlb_proto::*;

libos_async::entry!(app_main);

fn app_main(f: u64) -> i32 {
    let g = f + 1;
    require("frame_alloc(F)", sys::frame_alloc(Some(f)));
    require("frame_alloc(F+1)", sys::frame_alloc(Some(g)));
    require("map F", sys::map(f, VA_F, Rights::RW));
    require("map F+1", sys::map(g, VA_G, Rights::RW));
    probe::write(VA_F, OLD);

    let grantee = require("find tlbgrantee", libos_async::find_env("tlbgrantee", WAIT_MS));
    require("grant F", sys::frame_grant(f, grantee, Rights::READ));
    require("grant F+1", sys::frame_grant(g, grantee, Rights::RW));

    let gone = || sys::env_lookup("tlbgrantee") == Err(Error::NoSuchEnv);
    if !wait_for_ms(WAIT_MS, || probe::read(READERS_RUNNING) == 1 || gone()) || gone() {
        fail(format_args!("tlbgranter: the grantee's readers never ran"));
    }
    let t = sys::rdtsc();
    require("revoke F", sys::frame_revoke(f, grantee));
    let revoke_cycles = sys::rdtsc() - t;
    probe::write(VA_F, SENTINEL);
    probe::write(REVOKED, 1);

    let reported =
        wait_for_ms(WAIT_MS, || probe::read(REPORTED) == 1 || gone()) && probe::read(REPORTED) == 1;
    let violations = probe::read(VIOLATION_COUNT);

    let _ = sys::frame_revoke(g, grantee);
    require("unmap F", sys::unmap(VA_F));
    require("unmap F+1", sys::unmap(VA_G));
    require("free F", sys::frame_free(f));
    // The grantee may be gone while its reclaim, in bounded steps, has not
    // yet forgotten its own mapping of F+1 (its grant already is, so the
    // revoke above had nothing to withdraw): `Busy` until that step.
    let mut freed = sys::frame_free(g);
    wait_for_ms(WAIT_MS, || {
        if freed == Err(Error::Busy) {
            freed = sys::frame_free(g);
        }
        freed != Err(Error::Busy)
    });
    require("free F+1", freed);
    if !reported {
        fail(format_args!("tlbgranter: the grantee never reported"));
    }
    if violations != 0 {
        fail(format_args!(
            "tlbgranter: the grantee saw {violations} stale reads after the revocation"
        ));
    }
    println!("tlbgranter: done, 0 violations (revoke took {revoke_cycles} cycles)");
    0
}
