//! `syscall_abuse`: hostile arguments to every system call, each with its
//! exact expected error. Exits 0 if every answer is as expected, else prints
//! one `CHECK FAILED: ...` line per surprise and exits 1.
//!
//! Pointer arguments (ConsoleWrite, EnvLookup, ExceptionResume): null, the
//! two kernel-half bases, an unmapped user page, the end of the user half,
//! and a pointer that starts in a mapped page and runs into an unmapped one
//! are `BadAddress`; lengths beyond the call's maximum (`u64::MAX`,
//! `CONSOLE_WRITE_MAX + 1`, `NAME_MAX + 1`) with a valid pointer are
//! `InvalidArgument`; a misaligned pointer inside mapped memory is valid.
//! The other calls: see the checks below.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::abi::{
    self, CONSOLE_WRITE_MAX, Error, NAME_MAX, PAGE_SIZE, Rights, SYSCALL_COUNT, Syscall,
};
use libos_async::check::{Checks, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::sys::{self, probe};
use libos_async::{env_id, println};

libos_async::entry!(app_main);

/// One mapped page (P) followed by an unmapped one.
const P: u64 = SCRATCH_BASE;
/// Never mapped.
const UNMAPPED: u64 = SCRATCH_BASE + 0x10_0000;
/// Kernel-half addresses.
const KERNEL_LOW: u64 = 0xffff_8000_0000_0000;
const KERNEL_HIGH: u64 = 0xffff_ffff_8000_0000;
/// A frame number far beyond any RAM the guest has.
const HUGE_FRAME: u64 = 1 << 40;

fn raw(n: Syscall, args: [u64; 6]) -> Result<u64, Error> {
    abi::decode(sys::syscall_raw(n as u64, args))
}

/// Writes `text` at `va` (in the scratch window) with 8-byte stores.
fn put_bytes(va: u64, text: &[u8]) {
    for (i, chunk) in text.chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        probe::write(va + 8 * i as u64, u64::from_le_bytes(word));
    }
}

fn app_main(_arg: u64) -> i32 {
    let mut c = Checks::new();
    let page_frame = require("frame_alloc", sys::frame_alloc(None));
    require("map P", sys::map(page_frame, P, Rights::RW));
    let spanning = P + PAGE_SIZE - 3;

    // Bad pointers, shared by the three pointer-taking calls.
    let bad_ptrs = [
        ("null", 0),
        ("kernel half low", KERNEL_LOW),
        ("kernel half high", KERNEL_HIGH),
        ("unmapped", UNMAPPED),
        ("end of user half", abi::USER_MAX - 4),
        ("non-canonical", 0x0000_8000_0000_0000),
        ("spanning into unmapped", spanning),
    ];

    // ConsoleWrite.
    for (what, ptr) in bad_ptrs {
        c.expect_err(what, raw(Syscall::ConsoleWrite, [ptr, 8, 0, 0, 0, 0]), Error::BadAddress);
    }
    for len in [u64::MAX, CONSOLE_WRITE_MAX + 1, 1 << 32] {
        c.expect_err(
            "console_write absurd length",
            raw(Syscall::ConsoleWrite, [P, len, 0, 0, 0, 0]),
            Error::InvalidArgument,
        );
    }
    // An unknown stream is refused before the pointer is looked at.
    for stream in [3, 4, 1 << 32, u64::MAX] {
        c.expect_err(
            "console_write unknown stream",
            raw(Syscall::ConsoleWrite, [0, 8, stream, 0, 0, 0]),
            Error::InvalidArgument,
        );
    }
    let line = b"#syscall_abuse: misaligned console_write ok\n";
    put_bytes(P, line);
    let n = line.len() as u64 - 1;
    let got = raw(Syscall::ConsoleWrite, [P + 1, n, 0, 0, 0, 0]);
    c.check(got == Ok(n), format_args!("misaligned mapped console_write: {got:?}"));

    // EnvLookup.
    for (what, ptr) in bad_ptrs {
        c.expect_err(what, raw(Syscall::EnvLookup, [ptr, 8, 0, 0, 0, 0]), Error::BadAddress);
    }
    for len in [u64::MAX, NAME_MAX + 1] {
        c.expect_err(
            "env_lookup absurd length",
            raw(Syscall::EnvLookup, [P, len, 0, 0, 0, 0]),
            Error::InvalidArgument,
        );
    }
    c.expect_err("env_lookup unknown", sys::env_lookup("no_such_app"), Error::NoSuchEnv);
    let me = b"#syscall_abuse";
    put_bytes(P + 0x100, me);
    let got = raw(Syscall::EnvLookup, [P + 0x101, me.len() as u64 - 1, 0, 0, 0, 0]);
    c.check(
        got == Ok(env_id()),
        format_args!("misaligned env_lookup of itself: {got:?}, env {}", env_id()),
    );

    // ExceptionResume: a frame that starts mapped but runs into the next
    // (unmapped) page, aligned or not; the bad pointers above.
    for (what, ptr) in bad_ptrs {
        let got = raw(Syscall::ExceptionResume, [ptr, 0, 0, 0, 0, 0]);
        if ptr % 8 == 0 {
            c.expect_err(what, got, Error::BadAddress);
        } else {
            // A misaligned frame pointer may be refused for its alignment.
            c.check(
                matches!(got, Err(Error::BadAddress | Error::InvalidArgument)),
                format_args!("exception_resume {what}: {got:?}"),
            );
        }
    }
    let got = raw(Syscall::ExceptionResume, [P + PAGE_SIZE - 8, 0, 0, 0, 0, 0]);
    c.expect_err("exception_resume aligned spanning", got, Error::BadAddress);
    let got = raw(Syscall::ExceptionResume, [P + PAGE_SIZE - 7, 0, 0, 0, 0, 0]);
    c.check(
        matches!(got, Err(Error::BadAddress | Error::InvalidArgument)),
        format_args!("exception_resume misaligned spanning: {got:?}"),
    );

    // Undefined numbers.
    for n in [SYSCALL_COUNT, SYSCALL_COUNT + 1, 1000, 1 << 32, u64::MAX] {
        let got = abi::decode(sys::syscall_raw(n, [1, 2, 3, 4, 5, 6]));
        c.check(
            got == Err(Error::InvalidSyscall),
            format_args!("syscall {n:#x}: expected InvalidSyscall, got {got:?}"),
        );
    }

    // Map.
    let f = require("frame_alloc", sys::frame_alloc(None));
    let va = P + 4 * PAGE_SIZE;
    for bits in [8, 0x10, 1 << 63, u64::MAX] {
        c.expect_err(
            "map invalid rights",
            raw(Syscall::Map, [f, va, bits, 0, 0, 0]),
            Error::InvalidArgument,
        );
    }
    for (what, bad_va) in [
        ("map unaligned va", va + 1),
        ("map va 0", 0),
        ("map va below USER_MIN", abi::USER_MIN - PAGE_SIZE),
        ("map va at USER_MAX", abi::USER_MAX),
        ("map va non-canonical", 0x0000_8000_0000_0000),
        ("map va kernel half low", KERNEL_LOW),
        ("map va kernel half high", KERNEL_HIGH),
    ] {
        c.expect_err(what, sys::map(f, bad_va, Rights::RW), Error::InvalidArgument);
    }
    c.expect_err("map info page", sys::map(f, abi::INFO_VA, Rights::READ), Error::Reserved);
    c.expect_err("map vcpu page", sys::map(f, abi::vcpu_page_va(1), Rights::READ), Error::Reserved);
    c.expect_err(
        "map last info-region page",
        sys::map(f, abi::INFO_VA + abi::INFO_REGION_SIZE - PAGE_SIZE, Rights::READ),
        Error::Reserved,
    );
    c.expect_err("map huge frame", sys::map(HUGE_FRAME, va, Rights::RW), Error::BadFrame);

    // Unmap / Protect.
    c.expect_err("unmap unmapped", sys::unmap(UNMAPPED), Error::NotMapped);
    c.expect_err("unmap info page", sys::unmap(abi::INFO_VA), Error::Reserved);
    c.expect_err("unmap unaligned", sys::unmap(P + 1), Error::InvalidArgument);
    c.expect_err("unmap kernel half", sys::unmap(KERNEL_HIGH), Error::InvalidArgument);
    c.expect_err("protect unmapped", sys::protect(UNMAPPED, Rights::READ), Error::NotMapped);
    c.expect_err(
        "protect invalid rights",
        raw(Syscall::Protect, [P, 8, 0, 0, 0, 0]),
        Error::InvalidArgument,
    );
    c.expect_err("protect info page", sys::protect(abi::INFO_VA, Rights::READ), Error::Reserved);

    // Frames.
    let spare = require("frame_alloc", sys::frame_alloc(None));
    require("frame_free", sys::frame_free(spare));
    c.expect_err("free freed frame", sys::frame_free(spare), Error::NotOwner);
    c.expect_err("free kernel frame", sys::frame_free(256), Error::NotOwner);
    c.expect_err("free huge frame", sys::frame_free(HUGE_FRAME), Error::BadFrame);
    c.expect_err("alloc huge frame", sys::frame_alloc(Some(HUGE_FRAME)), Error::BadFrame);
    c.expect_err("alloc frame u64::MAX - 1", sys::frame_alloc(Some(u64::MAX - 1)), Error::BadFrame);
    c.expect_err(
        "grant to env 999999",
        sys::frame_grant(f, 999_999, Rights::READ),
        Error::NoSuchEnv,
    );
    // (To itself, the only environment surely alive: that may be refused
    // as InvalidArgument before the frame is looked at.)
    let got = sys::frame_grant(HUGE_FRAME, env_id(), Rights::READ);
    c.check(
        matches!(got, Err(Error::BadFrame | Error::InvalidArgument)),
        format_args!("grant huge frame: {got:?}"),
    );
    let got = sys::frame_revoke(f, 999_999);
    c.check(got.is_err(), format_args!("revoke from env 999999: {got:?}"));
    let got = sys::frame_status(HUGE_FRAME);
    c.check(
        matches!(got, Err(Error::BadFrame))
            || got.is_ok_and(|s| s.holder() == Some(abi::FrameHolder::Kernel)),
        format_args!("frame_status of a huge frame: {got:?}"),
    );

    // vCPUs and handlers.
    let entry = app_main as fn(u64) -> i32 as usize as u64;
    c.expect_err(
        "vcpu_start core 1000",
        sys::vcpu_start(1000, entry, abi::STACK_TOP - 4096, 0),
        Error::NoSuchCore,
    );
    c.expect_err(
        "vcpu_start core u64::MAX",
        sys::vcpu_start(u64::MAX, entry, abi::STACK_TOP - 4096, 0),
        Error::NoSuchCore,
    );
    let got = sys::set_exception_handler(KERNEL_HIGH, P + PAGE_SIZE, 0);
    c.check(
        matches!(got, Err(Error::InvalidArgument | Error::BadAddress)),
        format_args!("handler entry in kernel half: {got:?}"),
    );
    // A kernel-half stack top may be refused now or only when an upcall
    // cannot be delivered (the ABI allows both): it must just not crash.
    let _ = sys::set_exception_handler(entry, KERNEL_HIGH, 0);
    // Whatever happened above, leave no handler registered.
    let _ = sys::set_exception_handler(0, 0, 0);

    cpu_calls(&mut c, entry);

    // Clean up.
    c.expect_ok("unmap P", sys::unmap(P));
    c.expect_ok("free P", sys::frame_free(page_frame));
    c.expect_ok("free f", sys::frame_free(f));
    println!("syscall_abuse: {} checks passed, {} failed", c.passed(), c.failed());
    c.finish()
}

/// Time slots, slot upcalls, directed yield and IPC with bad arguments.
fn cpu_calls(c: &mut Checks, entry: u64) {
    use abi::schedule::ANY_SLOT;
    let me = env_id();
    let core = libos_async::core_id();
    let info = sys::info();
    let slots = u64::from(info.slots_per_core);
    let ownable = slots - u64::from(info.slots_reserved);
    c.expect_err("slot_alloc core 1000", sys::slot_alloc(1000, None, 1), Error::NoSuchCore);
    c.expect_err(
        "slot_alloc core u64::MAX",
        raw(Syscall::SlotAlloc, [u64::MAX, ANY_SLOT, 1, 0, 0, 0]),
        Error::NoSuchCore,
    );
    c.expect_err(
        "slot_alloc index past the vector",
        sys::slot_alloc(core, Some(slots), 1),
        Error::InvalidArgument,
    );
    c.expect_err("slot_alloc any 0", sys::slot_alloc(core, None, 0), Error::InvalidArgument);
    c.expect_err("slot_alloc any 1000", sys::slot_alloc(core, None, 1000), Error::InvalidArgument);
    c.expect_err(
        "slot_alloc more than ownable",
        sys::slot_alloc(core, None, ownable + 1),
        Error::QuotaExceeded,
    );
    match sys::slot_alloc(core, Some(0), 1) {
        Ok(mask) => {
            c.check(mask == 1, format_args!("slot_alloc slot 0: mask {mask:#x}"));
            c.expect_err("slot_alloc slot 0 again", sys::slot_alloc(core, Some(0), 1), Error::Busy);
            c.expect_ok("slot_free slot 0", sys::slot_free(core, 1));
        }
        // Another environment may hold slot 0 of this core: fine.
        Err(e) => {
            c.check(e == Error::Busy, format_args!("slot_alloc slot 0: {e:?}"));
        }
    }
    c.expect_err("slot_free nothing", sys::slot_free(core, 0), Error::InvalidArgument);
    c.expect_err(
        "slot_free a slot not ours",
        sys::slot_free(core, 1 << (slots - 1)),
        Error::NotOwner,
    );
    c.expect_err(
        "slot_free past the vector",
        raw(Syscall::SlotFree, [core as u64, u64::MAX, 0, 0, 0, 0]),
        Error::InvalidArgument,
    );
    c.expect_err(
        "slot handlers in the kernel half",
        sys::set_slot_handlers(KERNEL_HIGH, 0),
        Error::InvalidArgument,
    );
    c.expect_err(
        "slot handlers below USER_MIN",
        sys::set_slot_handlers(0, 0x1000),
        Error::InvalidArgument,
    );
    c.expect_ok("no slot handlers", sys::set_slot_handlers(0, 0));
    c.expect_err("default time on core 1000", sys::set_default_time(1000, true), Error::NoSuchCore);
    c.expect_err(
        "default time with on = 2",
        raw(Syscall::SetDefaultTime, [core as u64, 2, 0, 0, 0, 0]),
        Error::InvalidArgument,
    );
    c.expect_ok("default time on", sys::set_default_time(core, true));
    c.expect_err("yield_to u64::MAX", sys::yield_to(u64::MAX), Error::NoSuchEnv);
    c.expect_err("yield_to itself", sys::yield_to(me), Error::InvalidArgument);
    c.expect_err(
        "ipc entry in the kernel half",
        sys::ipc_register(KERNEL_HIGH, P, 0),
        Error::InvalidArgument,
    );
    c.expect_err(
        "ipc stack past the user half",
        sys::ipc_register(entry, KERNEL_HIGH, 0),
        Error::InvalidArgument,
    );
    c.expect_err(
        "ipc_accept allow = 2",
        raw(Syscall::IpcAccept, [me, 2, 0, 0, 0, 0]),
        Error::InvalidArgument,
    );
    c.expect_err("ipc_accept an absurd id", sys::ipc_accept(1 << 40, true), Error::NoSuchEnv);
    let mut refused = None;
    for id in 0..=abi::ACCEPT_MAX as u64 {
        if let Err(e) = sys::ipc_accept(10_000 + id, true) {
            refused = Some((id, e));
            break;
        }
    }
    c.check(
        refused == Some((abi::ACCEPT_MAX as u64, Error::QuotaExceeded)),
        format_args!("accept list beyond ACCEPT_MAX: {refused:?}"),
    );
    for id in 0..abi::ACCEPT_MAX as u64 {
        let _ = sys::ipc_accept(10_000 + id, false);
    }
    c.expect_err("call u64::MAX", sys::call(u64::MAX, &[0; 8]).map(|_| 0), Error::NoSuchEnv);
    c.expect_err("call itself without an entry", sys::call(me, &[0; 8]).map(|_| 0), Error::Refused);
    c.check(sys::reply(&[0; 8]) == Error::InvalidArgument, format_args!("reply outside a call"));
    c.expect_err("acall u64::MAX", sys::acall(u64::MAX, 0, 0), Error::NoSuchEnv);
    let seen = sys::event_tail();
    c.expect_ok("acall itself", sys::acall(me, 1, 2));
    let got = sys::event_at(seen);
    c.check(
        got.is_ok_and(|e| e.kind == abi::event::CALL && e.source as u64 == me && e.data == [1, 2]),
        format_args!("own asynchronous call in the event queue: {got:?}"),
    );
}
