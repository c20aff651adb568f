//! `upcall`: exception upcalls, resumed by the handler.
//!
//! (a) a write to an unmapped scratch page: `PAGE_FAULT`, `fault_addr` = the
//!     address, error code USER|WRITE without PRESENT; the handler maps a
//!     fresh frame there and resumes, the write retries and reads back;
//!     a read of another unmapped page likewise (error code without WRITE);
//! (b) `int3`: `BREAKPOINT`, resumed as is (the saved rip is past it);
//! (c) `ud2`: `INVALID_OPCODE`, the handler skips 2 bytes;
//! (d) `div rcx` with rcx = 0: `DIVIDE_ERROR`, the handler skips 3 bytes;
//! (e) `cli`: `GENERAL_PROTECTION`, the handler skips 1 byte;
//! (f) rax, rcx, rdx, rsi, rdi, r8..r15 hold known values across a `ud2`
//!     that is skipped and resumed.
//!
//! Exits 0 if every upcall came exactly as expected.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos_async::abi::{PAGE_SIZE, Rights, UpcallFrame, pf, vector};
use libos_async::check::{Checks, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::sys::{self, probe};
use libos_async::{println, set_exception_handler};

libos_async::entry!(app_main);

/// The vector the next upcall must have.
static EXPECT: AtomicU64 = AtomicU64::new(u64::MAX);
/// Bytes to skip for it (non-page-fault vectors).
static SKIP: AtomicU64 = AtomicU64::new(0);
/// Upcalls handled.
static SEEN: AtomicU64 = AtomicU64::new(0);
/// The last upcall's error code and fault address.
static ERROR_CODE: AtomicU64 = AtomicU64::new(0);
static FAULT_ADDR: AtomicU64 = AtomicU64::new(0);

fn handler(frame: &mut UpcallFrame) -> bool {
    SEEN.fetch_add(1, SeqCst);
    ERROR_CODE.store(frame.error_code, SeqCst);
    FAULT_ADDR.store(frame.fault_addr, SeqCst);
    if frame.vector != EXPECT.load(SeqCst) {
        println!(
            "CHECK FAILED: upcall vector {} but expected {}",
            frame.vector,
            EXPECT.load(SeqCst)
        );
        return false;
    }
    if frame.vector == vector::PAGE_FAULT {
        let page = frame.fault_addr & !(PAGE_SIZE - 1);
        let mapped = sys::frame_alloc(None).and_then(|f| sys::map(f, page, Rights::RW));
        if let Err(e) = mapped {
            println!("CHECK FAILED: mapping {page:#x} in the handler: {e:?}");
            return false;
        }
    } else {
        frame.rip += SKIP.load(SeqCst);
    }
    true
}

/// Arms the handler for one upcall of `vec`, skipping `skip` bytes.
fn expect(vec: u64, skip: u64) -> u64 {
    EXPECT.store(vec, SeqCst);
    SKIP.store(skip, SeqCst);
    SEEN.load(SeqCst)
}

fn seen_one(c: &mut Checks, before: u64, what: &str) {
    let seen = SEEN.load(SeqCst) - before;
    c.check(seen == 1, format_args!("{what}: {seen} upcalls instead of 1"));
}

fn app_main(arg: u64) -> i32 {
    // arg 1: resume through the kernel's ExceptionResume instead of in user
    // space, so that both paths are exercised.
    libos_async::exception::resume_via_kernel(arg == 1);
    let mut c = Checks::new();
    require("set_exception_handler", set_exception_handler(handler));

    // (a) page faults.
    let va = SCRATCH_BASE + 0x20_0000 + 8;
    let before = expect(vector::PAGE_FAULT, 0);
    probe::write(va, 0x1234_5678_9abc_def0);
    seen_one(&mut c, before, "write fault");
    c.check(
        FAULT_ADDR.load(SeqCst) == va,
        format_args!("fault_addr {:#x}, expected {va:#x}", FAULT_ADDR.load(SeqCst)),
    );
    let code = ERROR_CODE.load(SeqCst);
    c.check(
        code & pf::PRESENT == 0 && code & pf::WRITE != 0 && code & pf::USER != 0,
        format_args!("write fault error code {code:#x}"),
    );
    let v = probe::read(va);
    c.check(v == 0x1234_5678_9abc_def0, format_args!("value after resumed write: {v:#x}"));
    let va_r = SCRATCH_BASE + 0x30_0000 + 0x10;
    let before = expect(vector::PAGE_FAULT, 0);
    let v = probe::read(va_r);
    seen_one(&mut c, before, "read fault");
    let code = ERROR_CODE.load(SeqCst);
    c.check(
        code & (pf::PRESENT | pf::WRITE) == 0 && FAULT_ADDR.load(SeqCst) == va_r && v == 0,
        format_args!(
            "read fault: error code {code:#x}, addr {:#x}, value {v:#x}",
            FAULT_ADDR.load(SeqCst)
        ),
    );

    // (b) int3: a trap, nothing to skip.
    let before = expect(vector::BREAKPOINT, 0);
    probe::int3();
    seen_one(&mut c, before, "int3");

    // (c) ud2.
    let before = expect(vector::INVALID_OPCODE, probe::UD2_LEN);
    probe::ud2();
    seen_one(&mut c, before, "ud2");

    // (d) divide error.
    let before = expect(vector::DIVIDE_ERROR, probe::DIV_LEN);
    let rax = probe::div_zero();
    seen_one(&mut c, before, "div");
    c.check(rax == 1, format_args!("rax after skipped div: {rax:#x}"));

    // (e) cli.
    let before = expect(vector::GENERAL_PROTECTION, probe::CLI_LEN);
    probe::cli();
    seen_one(&mut c, before, "cli");

    // (f) registers survive.
    let values: [u64; 13] =
        core::array::from_fn(|i| 0x1111_1111_1111_1111u64.wrapping_mul(i as u64 + 1) ^ 0x5a);
    let before = expect(vector::INVALID_OPCODE, probe::UD2_LEN);
    let after = probe::ud2_with_registers(values);
    seen_one(&mut c, before, "ud2 with registers");
    const NAMES: [&str; 13] =
        ["rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
    for i in 0..13 {
        c.check(
            after[i] == values[i],
            format_args!("{} after resume: {:#x}, expected {:#x}", NAMES[i], after[i], values[i]),
        );
    }

    println!("upcall: {} checks passed, {} failed", c.passed(), c.failed());
    c.finish()
}
