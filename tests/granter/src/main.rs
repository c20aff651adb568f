//! `granter` (runs with `grantee`; start argument F: frames F and F+1 are
//! free).
//!
//! 1. allocates exactly F and F+1, maps both RW, writes `0xfeedface` into
//!    word 0 of F;
//! 2. finds `grantee` with EnvLookup (bounded retries), grants it F
//!    READ-only and F+1 RW;
//! 3. waits until the grantee writes 1 into word 0 of F+1 (it mapped F and
//!    read the pattern);
//! 4. revokes F, then writes 2 into word 1 of F+1;
//! 5. waits until the grantee writes 3 into word 2 of F+1 (its access to F
//!    faulted) or has exited;
//! 6. revokes F+1, unmaps and frees both, exits 0.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::abi::{Error, PAGE_SIZE, Rights};
use libos_async::check::{fail, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::sys::{self, probe};
use libos_async::{println, wait_until};

libos_async::entry!(app_main);

/// Where F and F+1 are mapped.
const VA_F: u64 = SCRATCH_BASE;
const VA_G: u64 = SCRATCH_BASE + PAGE_SIZE;
/// Yields allowed per wait.
const WAIT: u64 = 500_000;

fn app_main(f: u64) -> i32 {
    let g = f + 1;
    require("frame_alloc(F)", sys::frame_alloc(Some(f)));
    require("frame_alloc(F+1)", sys::frame_alloc(Some(g)));
    require("map F", sys::map(f, VA_F, Rights::RW));
    require("map F+1", sys::map(g, VA_G, Rights::RW));
    probe::write(VA_F, 0xfeed_face);

    let grantee = require("find grantee", libos_async::find_env("grantee", 60_000));
    require("grant F", sys::frame_grant(f, grantee, Rights::READ));
    require("grant F+1", sys::frame_grant(g, grantee, Rights::RW));

    if !wait_until(WAIT, || probe::read(VA_G) == 1) {
        fail(format_args!("granter: grantee never read F"));
    }
    require("revoke F", sys::frame_revoke(f, grantee));
    probe::write(VA_G + 8, 2);
    if !wait_until(WAIT, || {
        probe::read(VA_G + 16) == 3 || sys::env_lookup("grantee") == Err(Error::NoSuchEnv)
    }) {
        fail(format_args!("granter: grantee never saw the revocation"));
    }
    let saw = probe::read(VA_G + 16) == 3;

    // The grantee may have exited already; either way the grant must go.
    let _ = sys::frame_revoke(g, grantee);
    require("unmap F", sys::unmap(VA_F));
    require("unmap F+1", sys::unmap(VA_G));
    require("free F", sys::frame_free(f));
    require("free F+1", sys::frame_free(g));
    println!("granter: done (grantee saw the revocation: {saw})");
    0
}
