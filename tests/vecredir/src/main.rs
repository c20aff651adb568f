//! `vecredir`: vector registers, FS base and system-call redirection, seen
//! from ring 3. Start argument: bits 0..8 the mode, the rest its parameter.
//!
//! * 1, **hammer** (two on one core): each round fills every XMM register
//!   (and YMM where AVX is usable) with a pattern of its own environment
//!   and round, a rounding mode of its own in MXCSR and an FS base of its
//!   own, yields, and checks all of them: an honest victim of whoever ran
//!   in between.
//! * 2, **fresh**: at start every XMM/YMM register is 0, MXCSR 0x1f80, the
//!   x87 control word 0x37f; then leaves its registers dirty and exits.
//! * 3, **#XM and #MF**: divide by zero with the exception unmasked in
//!   MXCSR (delivered as `SIMD_FLOATING_POINT`, MXCSR.ZE set in the
//!   handler, which masks it again and skips the `divsd`); masked, no
//!   upcall and ZE set; x87 divide by zero unmasked (`X87_FLOATING_POINT`
//!   at the `fwait`, the handler clears it).
//! * 4, **FS base**: `SetFsBase` to a page of its own, `fs:[0]`/`fs:[8]`
//!   read back across 500 yields; values outside the canonical user half
//!   refused (`InvalidArgument`) with the old base kept.
//! * 5, **PCT server** (bit 8: with a redirection of its own): each call
//!   checks that it starts with clean vector registers (all 0, MXCSR
//!   0x1f80), dirties them, sets an FS base of its own and reads it back,
//!   makes a `syscall` from foreign code, and replies `[clean, fs ok,
//!   foreign answer]`; a message `[QUIT, ..]` ends it.
//! * 6, **PCT client** (bits 8..40: the server; bit 40: the server
//!   redirects; bit 41: register a redirection here too): fills its XMM
//!   registers and FS base, calls the server 200 times and checks the
//!   reply (the callee saw none of its registers, ran under the callee's
//!   redirection, not ours) and that its own registers and FS base are
//!   back; then its own foreign `syscall` goes to its own handler (or to
//!   the kernel).
//! * 7, **redirect**: bad registrations refused; foreign `syscall`s
//!   answered by the handler with every register intact at the handler and
//!   back in the program; `syscall`s from the program's own code go to the
//!   kernel; disabled with entry 0; an unmapped handler stack faults at the
//!   handler's first push, delivered to the exception handler, which
//!   returns to the program.
//! * 8, **hostile redirect**: a handler stack that is not mapped and no
//!   exception handler: the kernel kills this environment (the test checks
//!   the reason and that a worker beside it finishes).
//!
//! Exits 0 if every check passed.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use libos_async::abi::{Error, PAGE_SIZE, Rights, Syscall, UpcallFrame, vector as vec};
use libos_async::check::{Checks, fail, require};
use libos_async::layout::SCRATCH_BASE;
use libos_async::redirect::{self, Handler};
use libos_async::sys::{self, Message, probe};
use libos_async::vector::{self as v, XMM_WORDS, YMM_WORDS};
use libos_async::{Pred, cpu, env_id, println, set_exception_handler};

libos_async::entry!(app_main);

/// The FS page of this environment.
const FS_PAGE: u64 = SCRATCH_BASE;
/// The PCT server's FS page.
const SERVER_FS_PAGE: u64 = SCRATCH_BASE + 4 * PAGE_SIZE;
/// The redirection handler stacks (one page each, stride 2 pages, per core).
const REDIRECT_STACKS: u64 = SCRATCH_BASE + 0x10_0000;
/// An address range nothing maps (for the hostile stack).
const UNMAPPED_TOP: u64 = SCRATCH_BASE + 0x80_0000;
const QUIT: u64 = 0x5155_4954;

fn pattern(env: u64, round: u64, i: usize) -> u64 {
    (env << 48) ^ (round << 16) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn fill(env: u64, round: u64) -> ([u64; XMM_WORDS], Option<[u64; YMM_WORDS]>) {
    if v::avx_usable() {
        let y: [u64; YMM_WORDS] = core::array::from_fn(|i| pattern(env, round, i));
        v::ymm_fill(&y);
        let x = core::array::from_fn(|i| y[(i / 2) * 4 + i % 2]);
        (x, Some(y))
    } else {
        let x = core::array::from_fn(|i| pattern(env, round, i));
        v::xmm_fill(&x);
        (x, None)
    }
}

/// Maps a fresh page at `va` holding `words` at its start.
fn fs_page(va: u64, words: [u64; 2]) {
    match sys::frame_alloc(None).and_then(|f| sys::map(f, va, Rights::RW)) {
        Ok(_) | Err(Error::AlreadyMapped) => {}
        Err(e) => fail(format_args!("map {va:#x}: {e:?}")),
    }
    probe::write(va, words[0]);
    probe::write(va + 8, words[1]);
}

fn hammer() -> i32 {
    let me = env_id();
    let avx = v::avx_usable();
    println!("vecredir {me}: hammer, AVX {}", if avx { "on" } else { "absent (XMM only)" });
    let fs = FS_PAGE + PAGE_SIZE * (me % 4);
    fs_page(fs, [0xf5f5_0000 | me, !me]);
    require("set_fs_base", sys::set_fs_base(fs));
    let mxcsr = 0x1f80 | ((me as u32 % 4) << 13);
    for round in 0..2000 {
        let (x, y) = fill(me, round);
        v::set_mxcsr(mxcsr);
        let _ = sys::yield_now();
        if v::xmm_read() != x {
            fail(format_args!("round {round}: XMM changed across a switch"));
        }
        if let Some(y) = y
            && v::ymm_read() != y
        {
            fail(format_args!("round {round}: YMM changed across a switch"));
        }
        if v::mxcsr() != mxcsr {
            fail(format_args!("round {round}: MXCSR {:#x}, expected {mxcsr:#x}", v::mxcsr()));
        }
        if v::fs_read(0) != 0xf5f5_0000 | me || v::fs_read(8) != !me {
            fail(format_args!("round {round}: fs:[0] {:#x}", v::fs_read(0)));
        }
    }
    0
}

fn fresh() -> i32 {
    let mut c = Checks::new();
    c.check(v::xmm_read() == [0; XMM_WORDS], format_args!("XMM not zero at start"));
    if v::avx_usable() {
        c.check(v::ymm_read() == [0; YMM_WORDS], format_args!("YMM not zero at start"));
    } else {
        println!("vecredir: no AVX on this CPU model: YMM check skipped");
    }
    c.check(v::mxcsr() == 0x1f80, format_args!("MXCSR {:#x} at start", v::mxcsr()));
    c.check(
        v::fpu_control_word() == 0x37f,
        format_args!("x87 control word {:#x} at start", v::fpu_control_word()),
    );
    // Leave dirt for whoever runs next on this core.
    fill(env_id() | 0x8000, 1);
    v::set_mxcsr(0x1f80 | 3 << 13);
    c.finish()
}

static EXPECT: AtomicU64 = AtomicU64::new(u64::MAX);
static SEEN: AtomicU64 = AtomicU64::new(0);
static SEEN_MXCSR: AtomicU64 = AtomicU64::new(0);

fn fp_handler(frame: &mut UpcallFrame) -> bool {
    if frame.vector != EXPECT.load(SeqCst) {
        println!("CHECK FAILED: upcall vector {} (expected {})", frame.vector, EXPECT.load(SeqCst));
        return false;
    }
    SEEN.fetch_add(1, SeqCst);
    // The handler shares the interrupted code's vector state (an upcall
    // is this environment's own code): it reads and repairs it directly.
    if frame.vector == vec::SIMD_FLOATING_POINT {
        SEEN_MXCSR.store(u64::from(v::mxcsr()), SeqCst);
        v::set_mxcsr(0x1f80);
        frame.rip += v::DIVSD_LEN;
    } else {
        v::x87_clear();
        frame.rip += v::FWAIT_LEN;
    }
    true
}

fn fp_exceptions() -> i32 {
    let mut c = Checks::new();
    require("set_exception_handler", set_exception_handler(fp_handler));
    EXPECT.store(vec::SIMD_FLOATING_POINT, SeqCst);
    v::set_mxcsr(0x1f80 & !v::MXCSR_ZM);
    v::sse_div_zero();
    match SEEN.load(SeqCst) {
        1 => {
            let m = SEEN_MXCSR.load(SeqCst) as u32;
            c.check(m & v::MXCSR_ZE != 0, format_args!("MXCSR in the #XM handler: {m:#x}"));
            c.check(v::mxcsr() == 0x1f80, format_args!("MXCSR after: {:#x}", v::mxcsr()));
        }
        0 => {
            // QEMU's TCG sets the flag but never raises #XM (real CPUs and
            // KVM do): the delivery is not exercised on this CPU.
            let m = v::mxcsr();
            c.check(m & v::MXCSR_ZE != 0, format_args!("no #XM and no ZE flag: {m:#x}"));
            println!("vecredir: this CPU does not raise #XM (QEMU TCG): #XM delivery skipped");
            v::set_mxcsr(0x1f80);
        }
        n => {
            c.check(false, format_args!("#XM upcalls: {n}"));
        }
    }
    let seen = SEEN.load(SeqCst);
    // Masked: no upcall, the flag is set.
    v::set_mxcsr(0x1f80);
    v::sse_div_zero();
    c.check(SEEN.load(SeqCst) == seen, format_args!("masked #XM delivered"));
    c.check(v::mxcsr() & v::MXCSR_ZE != 0, format_args!("masked: ZE not set"));
    EXPECT.store(vec::X87_FLOATING_POINT, SeqCst);
    v::x87_div_zero();
    c.check(
        SEEN.load(SeqCst) == seen + 1,
        format_args!("#MF upcalls: {}", SEEN.load(SeqCst) - seen),
    );
    c.check(
        v::fpu_control_word() == 0x37f,
        format_args!("x87 control word after: {:#x}", v::fpu_control_word()),
    );
    c.finish()
}

fn fs_base() -> i32 {
    let mut c = Checks::new();
    let me = env_id();
    let page = FS_PAGE + PAGE_SIZE * (me % 4);
    fs_page(page, [0xf5f5_0000 | me, me << 32]);
    c.expect_ok("set_fs_base", sys::set_fs_base(page));
    for bad in [1 << 47, u64::MAX, 0xffff_8000_0000_0000, 0x8000_0000_0000_0000] {
        c.expect_err("set_fs_base(non-user)", sys::set_fs_base(bad), Error::InvalidArgument);
    }
    c.expect_ok("set_fs_base(USER_MAX-ish)", sys::set_fs_base((1 << 47) - 1));
    c.expect_ok("set_fs_base back", sys::set_fs_base(page));
    for round in 0..500 {
        let _ = sys::yield_now();
        if v::fs_read(0) != 0xf5f5_0000 | me || v::fs_read(8) != me << 32 {
            c.check(false, format_args!("round {round}: fs:[0] {:#x}", v::fs_read(0)));
            break;
        }
    }
    c.finish()
}

/// Maps one handler-stack page for every core (a call into us runs on the
/// caller's core) and returns `(stack_top, stride)`.
fn map_redirect_stacks() -> (u64, u64) {
    let stride = 2 * PAGE_SIZE;
    let top = REDIRECT_STACKS + 64 * stride;
    for core in 0..u64::from(libos_async::info().cores) {
        let page = top - core * stride - PAGE_SIZE;
        match sys::frame_alloc(None).and_then(|f| sys::map(f, page, Rights::RW)) {
            Ok(_) | Err(Error::AlreadyMapped) => {}
            Err(e) => fail(format_args!("map the redirect stack of core {core}: {e:?}")),
        }
    }
    (top, stride)
}

static SERVER_QUIT: AtomicU64 = AtomicU64::new(0);

fn server_call(_caller: u64, msg: Message) -> Message {
    if msg[0] == QUIT {
        SERVER_QUIT.store(1, SeqCst);
        return [0; 8];
    }
    let clean = v::xmm_read() == [0; XMM_WORDS] && v::mxcsr() == 0x1f80;
    fill(0x5e5e, msg[1]);
    v::set_mxcsr(0x1f80 | 1 << 13);
    let fs_ok = sys::set_fs_base(SERVER_FS_PAGE).is_ok() && v::fs_read(0) == 0x5e5e_f5f5;
    let foreign = redirect::foreign_syscall(Syscall::Null as u64, [5, 0, 0, 0, 0]);
    [u64::from(clean), u64::from(fs_ok), foreign, 0, 0, 0, 0, 0]
}

fn pct_server(redirects: bool) -> i32 {
    fs_page(SERVER_FS_PAGE, [0x5e5e_f5f5, 0]);
    if redirects {
        let (top, stride) = map_redirect_stacks();
        require("install redirect", redirect::install(Handler::Answer, top, stride));
    }
    require("serve_calls", cpu::serve_calls(server_call));
    while SERVER_QUIT.load(SeqCst) == 0 {
        let _ = Pred::word_ne(SERVER_QUIT.as_ptr() as u64, 0).sleep();
    }
    0
}

fn pct_client(server: u64, server_redirects: bool, own: bool) -> i32 {
    let mut c = Checks::new();
    let me = env_id();
    fs_page(FS_PAGE, [0xc1c1_0000 | me, 0]);
    require("set_fs_base", sys::set_fs_base(FS_PAGE));
    if own {
        let (top, stride) = map_redirect_stacks();
        require("install redirect", redirect::install(Handler::Answer, top, stride));
    }
    // The server may not have registered its entry yet.
    for _ in 0..10_000 {
        if cpu::call(server, &[0, 0, 0, 0, 0, 0, 0, 0]) != Err(Error::Refused) {
            break;
        }
        let _ = sys::yield_now();
    }
    let expect_foreign = if server_redirects { 5 } else { 0 };
    for round in 0..200 {
        let (x, _) = fill(me, round);
        v::set_mxcsr(0x1f80 | 2 << 13);
        let reply = require("call", cpu::call(server, &[1, round, 0, 0, 0, 0, 0, 0]));
        let ok = c
            .check(reply[0] == 1, format_args!("round {round}: the callee saw our registers"))
            & c.check(reply[1] == 1, format_args!("round {round}: the callee's FS base"))
            & c.check(
                reply[2] == expect_foreign,
                format_args!("round {round}: callee's foreign syscall {:#x}", reply[2]),
            )
            & c.check(v::xmm_read() == x, format_args!("round {round}: XMM not restored"))
            & c.check(v::mxcsr() == 0x1f80 | 2 << 13, format_args!("round {round}: MXCSR"))
            & c.check(v::fs_read(0) == 0xc1c1_0000 | me, format_args!("round {round}: FS base"));
        if !ok {
            break;
        }
    }
    // Our own foreign syscall: our handler (Null + 7 = 7) or the kernel (0).
    let own_answer = redirect::foreign_syscall(Syscall::Null as u64, [7, 0, 0, 0, 0]);
    c.check(
        own_answer == if own { 7 } else { 0 },
        format_args!("own foreign syscall after calls: {own_answer:#x}"),
    );
    let _ = cpu::call(server, &[QUIT, 0, 0, 0, 0, 0, 0, 0]);
    c.finish()
}

static REDIRECT_FAULTS: AtomicU64 = AtomicU64::new(0);
static FAULT_ADDR: AtomicU64 = AtomicU64::new(0);

/// A fault at the handler's first push (its stack is unmapped): give up the
/// redirected call and return to the program with `-ENOSYS`-like marker.
fn redirect_fault(frame: &mut UpcallFrame) -> bool {
    let entry = redirect::handler_addr(Handler::Answer);
    if frame.vector != vec::PAGE_FAULT || !(entry..entry + 16).contains(&frame.rip) {
        println!("CHECK FAILED: unexpected upcall {} at {:#x}", frame.vector, frame.rip);
        return false;
    }
    REDIRECT_FAULTS.fetch_add(1, SeqCst);
    FAULT_ADDR.store(frame.fault_addr, SeqCst);
    let page = sys::vcpu_page();
    frame.rip = page.redirect_rip;
    frame.rsp = page.redirect_rsp;
    frame.rflags = page.redirect_rflags;
    frame.rax = 0xfa17;
    true
}

fn redirect_main() -> i32 {
    let mut c = Checks::new();
    let (top, stride) = map_redirect_stacks();
    let (lib_start, lib_end) = redirect::lib_range();
    let (foreign_start, foreign_end) = redirect::foreign_range();
    c.check(
        lib_end <= foreign_start && foreign_start < foreign_end,
        format_args!("foreign code {foreign_start:#x}..{foreign_end:#x} lib end {lib_end:#x}"),
    );
    let entry = redirect::handler_addr(Handler::Answer);
    // Refused registrations (raw: they must not take effect).
    let n = Syscall::SetSyscallRedirect as u64;
    let bad: [[u64; 5]; 9] = [
        [0xffff_8000_0000_0000, top, stride, lib_start, lib_end], // kernel entry
        [1, top, stride, lib_start, lib_end],                     // below USER_MIN
        [entry, top + 8, stride, lib_start, lib_end],             // unaligned stack
        [entry, top, stride + 8, lib_start, lib_end],             // unaligned stride
        [entry, abi_user_max() + 16, 0, lib_start, lib_end],      // stack above
        [entry, top, top, lib_start, lib_end],                    // stacks underflow
        [entry, top, stride, lib_end, lib_start],                 // reversed range
        [entry, top, stride, lib_start, lib_start],               // empty range
        [entry, top, stride, lib_start, u64::MAX],                // range above
    ];
    for (i, a) in bad.iter().enumerate() {
        let r = sys::syscall_raw(n, [a[0], a[1], a[2], a[3], a[4], 0]);
        c.check(
            libos_async::abi::decode(r) == Err(Error::InvalidArgument),
            format_args!("bad registration {i}: {:?}", libos_async::abi::decode(r)),
        );
    }
    // Nothing registered: the kernel answers foreign syscalls too.
    c.check(
        redirect::foreign_syscall(Syscall::Null as u64, [9, 0, 0, 0, 0]) == 0,
        format_args!("foreign Null before registering"),
    );
    require("install", redirect::install(Handler::Record, top, stride));
    let number = 0x1234;
    let answer = redirect::foreign_probe(number);
    c.check(
        answer == number + redirect::probe_value(5),
        format_args!("foreign probe answered {answer:#x}"),
    );
    let seen = redirect::seen();
    let after = redirect::after();
    let core_top = top - sys::core_id() as u64 * stride;
    for (i, name) in redirect::REGS.iter().enumerate() {
        let want_seen = match i {
            0 => Some(number),
            2 => Some(redirect::handler_addr(Handler::Record)), // rcx = entry (sysretq)
            10 => None,                                         // r11 = rflags
            15 => Some(core_top),
            16 => None, // page.rip: checked below
            17 => None,
            18 => None,
            _ => Some(redirect::probe_value(i)),
        };
        if let Some(w) = want_seen {
            c.check(
                seen[i] == w,
                format_args!("at the handler {name} = {:#x}, want {w:#x}", seen[i]),
            );
        }
        let want_after = match i {
            0 => Some(answer),
            2 | 10 | 15..=18 => None, // clobbered by syscall / the stub's own rsp
            _ => Some(redirect::probe_value(i)),
        };
        if let Some(w) = want_after {
            c.check(after[i] == w, format_args!("back in the program {name} = {:#x}", after[i]));
        }
    }
    c.check(
        seen[10] == seen[17],
        format_args!("r11 {:#x} != page.rflags {:#x}", seen[10], seen[17]),
    );
    c.check(seen[17] & 0x200 != 0, format_args!("page.rflags {:#x} without IF", seen[17]));
    c.check(
        (foreign_start..foreign_end).contains(&seen[16]),
        format_args!("page.rip {:#x} outside the foreign code", seen[16]),
    );
    c.check(
        seen[18] == after[15],
        format_args!("page.rsp {:#x}, the stub's rsp {:#x}", seen[18], after[15]),
    );
    // Our own code's syscalls are exokernel calls.
    c.check(sys::null() == Ok(0), format_args!("Null from the library range"));
    c.check(sys::core_id() < 64, format_args!("core id"));
    // Many round trips, both kinds interleaved.
    for i in 0..1000u64 {
        let a = redirect::foreign_syscall(Syscall::Yield as u64, [i, 0, 0, 0, 0]);
        if a != Syscall::Yield as u64 + i {
            c.check(false, format_args!("round trip {i}: {a:#x}"));
            break;
        }
    }
    // Disabled with entry 0.
    c.expect_ok("disable", sys::clear_syscall_redirect());
    c.check(
        redirect::foreign_syscall(Syscall::Null as u64, [9, 0, 0, 0, 0]) == 0,
        format_args!("foreign Null after disabling"),
    );
    // Hostile stack: unmapped; the handler's first push faults in ring 3.
    require("set_exception_handler", set_exception_handler(redirect_fault));
    require("install", redirect::install(Handler::Answer, UNMAPPED_TOP, 0));
    let r = redirect::foreign_syscall(Syscall::Null as u64, [9, 0, 0, 0, 0]);
    c.check(r == 0xfa17, format_args!("unmapped handler stack: {r:#x}"));
    c.check(
        REDIRECT_FAULTS.load(SeqCst) == 1,
        format_args!("faults {}", REDIRECT_FAULTS.load(SeqCst)),
    );
    c.check(
        FAULT_ADDR.load(SeqCst) == UNMAPPED_TOP - 8,
        format_args!("fault at {:#x}", FAULT_ADDR.load(SeqCst)),
    );
    c.expect_ok("disable", sys::clear_syscall_redirect());
    c.finish()
}

fn abi_user_max() -> u64 {
    libos_async::abi::USER_MAX
}

fn hostile_redirect() -> i32 {
    require("install", redirect::install(Handler::Answer, UNMAPPED_TOP, 0));
    let r = redirect::foreign_syscall(Syscall::Null as u64, [0; 5]);
    println!("CHECK FAILED: an unmapped handler stack returned {r:#x}");
    1
}

fn app_main(arg: u64) -> i32 {
    match arg & 0xff {
        1 => hammer(),
        2 => fresh(),
        3 => fp_exceptions(),
        4 => fs_base(),
        5 => pct_server(arg & 1 << 8 != 0),
        6 => pct_client((arg >> 8) & 0xffff_ffff, arg & 1 << 40 != 0, arg & 1 << 41 != 0),
        7 => redirect_main(),
        8 => hostile_redirect(),
        m => fail(format_args!("unknown mode {m}")),
    }
}
