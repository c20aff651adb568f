//! The machine side of POSIX signals: the signal upcall, the vector state
//! a handler frame saves and `rt_sigreturn` restores, the `ITIMER_REAL`
//! timer vCPU, and `kill` to other environments. The decisions (what is
//! delivered, the frame's layout, the restart rules) are
//! `libos_posix::signal`'s.
//!
//! **Arrival.** Signals from outside the process — `SIGALRM` from the timer
//! vCPU, `kill` from another environment — are kernel signal bits (bit
//! `n - 1` for signal `n`, `SignalPost`) delivered as an upcall on the
//! program's core ([`on_upcall`]), which adds them to [`ASYNC`]. Where the
//! upcall finds the vCPU decides what happens next:
//! - in the program's own code (a busy loop, say): the signal is delivered
//!   at once, from the upcall frame's registers;
//! - in the redirection stub's return sequence (`posix_tail_start` ..
//!   `posix_tail_end`, after the handler's result is in the saved
//!   [`Frame`]): the program's state *is* that frame, so it is delivered
//!   from there;
//! - anywhere else in this runtime (inside a system call): it stays in
//!   [`ASYNC`]; the call's end (or the stub's last check) delivers it,
//!   and a sleeping call (`SleepOn` returns `Interrupted`) ends early.
//!
//! **Vector state.** This runtime is soft-float, so at every point here the
//! vector registers are the program's: [`save_vector`] saves them with
//! `xsave` (when the OS enabled it, every component of XCR0) or `fxsave`
//! into the handler frame's image; the handler then starts from the
//! initial state (as on Linux); `rt_sigreturn` loads the (checked) image
//! back with `xrstor`/`fxrstor` just before the context is resumed.

use crate::glue::Umem;
use crate::redirect::{Frame, State};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};
use libos_async::abi::{self, UpcallFrame};
use libos_async::{Pred, sys};
use libos_posix::linux::SysResult;
use libos_posix::linux::errno::{EPERM, ESRCH};
use libos_posix::signal::{self as sig, Delivered, Regs, SignalHost, VectorState};

/// Signal bits that arrived by upcall and the process has not taken.
pub static ASYNC: AtomicU64 = AtomicU64::new(0);
/// `ITIMER_REAL`: the TSC at which it fires (`u64::MAX`: disarmed).
static ALARM_AT: AtomicU64 = AtomicU64::new(u64::MAX);
/// Its reload interval in TSC ticks (0: one shot).
static ALARM_EVERY: AtomicU64 = AtomicU64::new(0);
/// The core the timer vCPU runs on (`u64::MAX`: none started; then the
/// timer is polled at each system call).
static TIMER_CORE: AtomicU64 = AtomicU64::new(u64::MAX);

/// The largest vector-state image kept (an `xsave` area must fit).
const IMAGE_MAX: usize = 4096;

#[repr(C, align(64))]
struct Image(UnsafeCell<[u8; IMAGE_MAX]>);

// SAFETY: used only by the program's one vCPU, in the upcall handler (upcalls
// are masked there) and in the system-call handler, which never run at
// once on it over the image (an upcall inside the system-call handler
// only records bits).
unsafe impl Sync for Image {}

/// The saved image of the interrupted context.
static SAVED: Image = Image(UnsafeCell::new([0; IMAGE_MAX]));
/// The initial state a handler starts from: FCW 0x37f, MXCSR 0x1f80,
/// every component in its initial state (XSTATE_BV 0).
static INIT: Image = Image(UnsafeCell::new(init_image()));

const fn init_image() -> [u8; IMAGE_MAX] {
    let mut b = [0u8; IMAGE_MAX];
    b[0] = 0x7f;
    b[1] = 0x03;
    b[24] = 0x80;
    b[25] = 0x1f;
    b
}

/// [`xsave_mode`] once found: XCR0 (0: `fxsave`), and the area's size
/// (0: not looked at yet).
static XMODE: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));

/// How the vector state is saved: `Some(xcr0, size)` with `xsave`.
fn xsave_mode() -> Option<(u64, usize)> {
    let size = XMODE.1.load(Ordering::Relaxed);
    if size == 0 {
        let (xcr0, size) = probe_xsave().unwrap_or((0, 512));
        XMODE.0.store(xcr0, Ordering::Relaxed);
        XMODE.1.store(size as u64, Ordering::Relaxed);
    }
    let xcr0 = XMODE.0.load(Ordering::Relaxed);
    (xcr0 != 0).then(|| (xcr0, XMODE.1.load(Ordering::Relaxed) as usize))
}

fn probe_xsave() -> Option<(u64, usize)> {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    if leaf1.ecx & (1 << 27) == 0 {
        return None;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: OSXSAVE is set, so `xgetbv` with ecx = 0 is allowed in ring 3.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    let xcr0 = u64::from(lo) | u64::from(hi) << 32;
    let size = core::arch::x86_64::__cpuid_count(0xd, 0).ebx as usize;
    (size >= 576 && size + 4 <= IMAGE_MAX).then_some((xcr0, size))
}

/// Saves the live vector registers into [`SAVED`]: the image and how.
fn save_vector() -> (&'static [u8], Option<u64>) {
    let buf = SAVED.0.get() as *mut u8;
    match xsave_mode() {
        Some((xcr0, size)) => {
            // SAFETY: `buf` is 64-byte aligned with room for `size` bytes;
            // the header (bytes 512..576) is zeroed first as the standard
            // form wants; only this vCPU uses it (see `Image`).
            unsafe {
                core::ptr::write_bytes(buf.add(512), 0, 64);
                core::arch::asm!("xsave64 [{}]", in(reg) buf, in("eax") xcr0 as u32,
                    in("edx") (xcr0 >> 32) as u32, options(nostack));
                (core::slice::from_raw_parts(buf, size), Some(xcr0))
            }
        }
        None => {
            // SAFETY: 512 bytes, 16-byte aligned (64), only this vCPU's.
            unsafe {
                core::arch::asm!("fxsave64 [{}]", in(reg) buf, options(nostack));
                (core::slice::from_raw_parts(buf, 512), None)
            }
        }
    }
}

/// The initial image, as the saving mode lays it out.
fn init_state() -> (&'static [u8], Option<u64>) {
    let buf = INIT.0.get() as *const u8;
    let (len, how) = match xsave_mode() {
        Some((xcr0, size)) => (size, Some(xcr0)),
        None => (512, None),
    };
    // SAFETY: INIT is never written after start; `len` is within it.
    (unsafe { core::slice::from_raw_parts(buf, len) }, how)
}

/// Loads `image` (at a 64-byte aligned static) into the vector registers.
/// The caller made it safe to load: MXCSR's reserved bits clear, and for
/// `xrstor` a standard-form header within XCR0.
fn load_vector(image: *const u8, xsave: Option<u64>) {
    match xsave {
        // SAFETY: an aligned image checked by the caller (see above).
        Some(mask) => unsafe {
            core::arch::asm!("xrstor64 [{}]", in(reg) image, in("eax") mask as u32,
                in("edx") (mask >> 32) as u32, options(nostack, readonly));
        },
        // SAFETY: as above.
        None => unsafe {
            core::arch::asm!("fxrstor64 [{}]", in(reg) image, options(nostack, readonly))
        },
    }
}

/// Starts a handler from the initial vector state.
fn load_init() {
    let (img, how) = init_state();
    load_vector(img.as_ptr(), how);
}

/// The registers of a saved system-call frame, as Linux's `sigcontext`
/// has them at a `syscall` (`rcx` = the return address, `r11` = `rflags`).
fn regs_of_frame(f: &Frame) -> Regs {
    Regs {
        r8: f.r8,
        r9: f.r9,
        r10: f.r10,
        r11: f.rflags,
        r12: f.r12,
        r13: f.r13,
        r14: f.r14,
        r15: f.r15,
        rdi: f.rdi,
        rsi: f.rsi,
        rbp: f.rbp,
        rbx: f.rbx,
        rdx: f.rdx,
        rax: f.rax,
        rcx: f.rip,
        rsp: f.rsp,
        rip: f.rip,
        rflags: f.rflags,
    }
}

fn regs_of_upcall(u: &UpcallFrame) -> Regs {
    Regs {
        r8: u.r8,
        r9: u.r9,
        r10: u.r10,
        r11: u.r11,
        r12: u.r12,
        r13: u.r13,
        r14: u.r14,
        r15: u.r15,
        rdi: u.rdi,
        rsi: u.rsi,
        rbp: u.rbp,
        rbx: u.rbx,
        rdx: u.rdx,
        rax: u.rax,
        rcx: u.rcx,
        rsp: u.rsp,
        rip: u.rip,
        rflags: u.rflags,
    }
}

fn upcall_of_regs(r: &Regs) -> UpcallFrame {
    UpcallFrame {
        rip: r.rip,
        rsp: r.rsp,
        rflags: r.rflags,
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        ..UpcallFrame::default()
    }
}

/// Ends the process with a signal's default action: a forked child's
/// parent sees a death by the signal (`WIFSIGNALED`), the run's first
/// process ends with the shell's status 128 + signal.
fn terminate(state: &mut State, signo: u32) -> ! {
    let child = crate::procs::IS_CHILD.load(core::sync::atomic::Ordering::Acquire);
    let status = libos_posix::proc::env_status_of_signal(child, signo as i32);
    // Its pipe ends and files go as at an exit: its peers see end of file
    // or EPIPE instead of waiting for a process that is gone.
    state.process.close_all();
    crate::redirect::log_exit(state, status);
    crate::fsserver::stop();
    sys::exit(status)
}

/// Delivers what is pending to `regs` (the program's context; `syscall`:
/// the call it just made). On return `regs` is what the program resumes
/// with; the vector registers are the initial state if a handler runs.
fn deliver(state: &mut State, regs: &mut Regs, syscall: Option<u64>) {
    poll_timer();
    let (saved, how) = save_vector();
    let (init, init_how) = init_state();
    let r = state.process.signals.deliver(
        regs,
        syscall,
        VectorState { image: saved, xsave: how },
        VectorState { image: init, xsave: init_how },
        &mut state.umem,
    );
    match r {
        Delivered::Terminate(signo) => terminate(state, signo),
        Delivered::Resume => {
            if state.process.signals.handlers_started > 0 {
                load_init();
            }
        }
    }
}

/// Whether the system-call path must look at signals (the fast path of
/// every call is this one load and compare).
#[inline]
pub fn pending(state: &State, result: i64) -> bool {
    ASYNC.load(Ordering::Relaxed) != 0
        || state.process.signals.pending() != 0
        || result == sig::ERESTARTSYS.to_ret()
        || result == sig::ERESTARTNOHAND.to_ret()
        || ALARM_AT.load(Ordering::Relaxed) != u64::MAX
            && TIMER_CORE.load(Ordering::Relaxed) == u64::MAX
}

/// At the end of system call `nr` whose result is in `frame.rax`:
/// delivers pending signals by editing `frame` (what the stub returns to).
pub fn at_syscall_end(state: &mut State, frame: &mut Frame, nr: u64) {
    let mut regs = regs_of_frame(frame);
    deliver(state, &mut regs, Some(nr));
    store_frame(frame, &regs);
}

/// The stub's last look (`posix_redirect` calls it when [`ASYNC`] is set
/// after the handler's own check).
pub fn late(state: &mut State, frame: &mut Frame) {
    let mut regs = regs_of_frame(frame);
    deliver(state, &mut regs, None);
    store_frame(frame, &regs);
}

fn store_frame(f: &mut Frame, r: &Regs) {
    // rcx and r11 cannot be given back through the stub (they carry the
    // return rip and rflags, as after any `syscall`).
    f.rax = r.rax;
    f.rdi = r.rdi;
    f.rsi = r.rsi;
    f.rdx = r.rdx;
    f.r10 = r.r10;
    f.r8 = r.r8;
    f.r9 = r.r9;
    f.r12 = r.r12;
    f.r13 = r.r13;
    f.r14 = r.r14;
    f.r15 = r.r15;
    f.rbp = r.rbp;
    f.rbx = r.rbx;
    f.rflags = r.rflags;
    f.rip = r.rip;
    f.rsp = r.rsp;
}

/// Resumes `regs` through the kernel (every register, `rcx` and `r11`
/// included), unmasking signal upcalls in the same step.
fn resume(regs: &Regs) -> ! {
    let frame = upcall_of_regs(regs);
    let e = libos_async::signal::resume(&frame);
    crate::glue::log_line(&alloc::format!("posix: cannot resume after a signal: {e:?}"));
    sys::exit(102)
}

/// `rt_sigreturn` (the program's `rsp` at the `syscall` is just past the
/// frame's return address). Never returns to the stub.
pub fn sigreturn(state: &mut State, frame: &Frame) -> ! {
    let Ok((mut regs, fpstate, xsave)) = state.process.signals.sigreturn(frame.rsp, &state.umem)
    else {
        terminate(state, sig::SIGSEGV)
    };
    if load_saved_image(&state.umem, fpstate, xsave).is_err() {
        terminate(state, sig::SIGSEGV);
    }
    regs.rflags = (frame.rflags & !sig::RFLAGS_RESTORED) | (regs.rflags & sig::RFLAGS_RESTORED);
    // Upcalls wait from here to the resume (which unmasks them in the same
    // step): a signal arriving in between would otherwise only be seen at
    // the program's next system call.
    let _ = libos_async::signal::mask();
    // Signals the restored mask unblocks come now, on top.
    deliver(state, &mut regs, None);
    resume(&regs)
}

/// Copies the frame's vector image into [`SAVED`], makes it safe to load
/// (MXCSR's reserved bits, the `xsave` header), and loads it.
fn load_saved_image(umem: &Umem, at: u64, xsave: bool) -> SysResult<()> {
    use libos_posix::host::UserMemory;
    let mode = xsave_mode().filter(|_| xsave);
    let len = mode.map_or(512, |(_, size)| size);
    // SAFETY: only this vCPU uses SAVED (see `Image`); no other reference
    // to it lives now.
    let buf = unsafe { &mut *SAVED.0.get() };
    umem.read(at, &mut buf[..len])?;
    // MXCSR (bytes 24..28): the reserved bits 16.. and DAZ's neighbour must
    // be clear, else the load faults.
    let mut mxcsr = u32::from_le_bytes(buf[24..28].try_into().expect("4 bytes"));
    mxcsr &= 0xffff;
    buf[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    if let Some((xcr0, _)) = mode {
        let mut bv = u64::from_le_bytes(buf[512..520].try_into().expect("8 bytes"));
        bv &= xcr0;
        buf[512..520].copy_from_slice(&bv.to_le_bytes());
        buf[520..576].fill(0);
    }
    load_vector(buf.as_ptr(), mode.map(|(xcr0, _)| xcr0));
    Ok(())
}

unsafe extern "C" {
    /// First instruction of the stub's return sequence (see the module
    /// docs): from here on the program's state is the saved [`Frame`].
    static posix_tail_start: u8;
    /// One past its last instruction.
    static posix_tail_end: u8;
}

/// The signal upcall (see the module docs).
fn on_upcall(frame: &mut UpcallFrame) -> ! {
    ASYNC.fetch_or(frame.error_code, Ordering::AcqRel);
    let tail = (&raw const posix_tail_start) as u64..(&raw const posix_tail_end) as u64;
    let regs = if tail.contains(&frame.rip) {
        // SAFETY: the stub's tail runs only after `handle` returned: the
        // saved frame at the handler stack's top is the program's state
        // and nothing else refers to it now.
        Some(regs_of_frame(unsafe { &*crate::redirect::saved_frame() }))
    } else if crate::redirect::in_runtime(frame.rip) {
        None
    } else {
        Some(regs_of_upcall(frame))
    };
    let Some(mut regs) = regs else {
        // Inside a system call: its end delivers.
        let e = libos_async::signal::resume(frame);
        crate::glue::log_line(&alloc::format!("posix: cannot resume an upcall: {e:?}"));
        sys::exit(102)
    };
    let Some(state) = crate::redirect::state() else { resume(&regs_of_upcall(frame)) };
    deliver(state, &mut regs, None);
    resume(&regs)
}

/// The process's side of [`SignalHost`].
pub struct Host {
    hz: u64,
}

impl Host {
    fn ticks(&self, ns: u64) -> u64 {
        (u128::from(ns) * u128::from(self.hz) / 1_000_000_000).min(u128::from(u64::MAX / 2)) as u64
    }
    fn ns(&self, ticks: u64) -> u64 {
        (u128::from(ticks) * 1_000_000_000 / u128::from(self.hz.max(1))) as u64
    }
}

impl SignalHost for Host {
    fn take(&mut self) -> u64 {
        ASYNC.swap(0, Ordering::AcqRel)
    }

    fn wait(&mut self) {
        poll_timer();
        if ASYNC.load(Ordering::Acquire) != 0 {
            return;
        }
        let pred = Pred::word_ne(ASYNC.as_ptr() as u64, 0);
        // Cut short by the upcall (`Interrupted`) or woken by the word;
        // without a timer vCPU, wake at the alarm to poll it.
        let at = ALARM_AT.load(Ordering::Acquire);
        let r = if at != u64::MAX && TIMER_CORE.load(Ordering::Acquire) == u64::MAX {
            pred.either(Pred::deadline(at)).sleep()
        } else {
            pred.sleep()
        };
        if matches!(r, Err(e) if e != abi::Error::Interrupted) {
            let _ = sys::yield_now();
        }
    }

    fn wait_or_event(&mut self, events_mark: u64) {
        poll_timer();
        if ASYNC.load(Ordering::Acquire) != 0 {
            return;
        }
        // As `wait`, or until the event queue moves (a child's end), or a
        // key is typed (libos-posix takes ^C to the foreground job).
        let pred = Pred::word_ne(ASYNC.as_ptr() as u64, 0).either(Pred::events_ne(events_mark));
        let pred = match crate::glue::terminal_wake() {
            Some(keys) => pred.either(keys),
            None => pred,
        };
        let at = ALARM_AT.load(Ordering::Acquire);
        let r = if at != u64::MAX && TIMER_CORE.load(Ordering::Acquire) == u64::MAX {
            pred.either(Pred::deadline(at)).sleep()
        } else {
            pred.sleep()
        };
        if matches!(r, Err(e) if e != abi::Error::Interrupted) {
            let _ = sys::yield_now();
        }
    }

    fn set_itimer(&mut self, value_ns: u64, interval_ns: u64) -> (u64, u64) {
        let now = sys::rdtsc();
        let at = if value_ns == 0 { u64::MAX } else { now.saturating_add(self.ticks(value_ns)) };
        let old_every = ALARM_EVERY.swap(self.ticks(interval_ns), Ordering::AcqRel);
        let old_at = ALARM_AT.swap(at, Ordering::AcqRel);
        if value_ns != 0 {
            ensure_timer();
        }
        let left = if old_at == u64::MAX { 0 } else { self.ns(old_at.saturating_sub(now)).max(1) };
        (left, if old_at == u64::MAX { 0 } else { self.ns(old_every) })
    }

    fn get_itimer(&self) -> (u64, u64) {
        let at = ALARM_AT.load(Ordering::Acquire);
        if at == u64::MAX {
            return (0, 0);
        }
        let left = self.ns(at.saturating_sub(sys::rdtsc())).max(1);
        (left, self.ns(ALARM_EVERY.load(Ordering::Acquire)))
    }

    /// Another process, by its environment id: `SignalPost` (`signo` 0: its
    /// probe, `kill(pid, 0)`).
    fn post(&mut self, pid: i32, signo: u32) -> SysResult<()> {
        if pid <= 0 {
            return Err(ESRCH);
        }
        let bits = if signo == 0 { 0 } else { sig::bit(signo) };
        match libos_async::signal::post(pid as u64, bits) {
            Ok(_) => Ok(()),
            Err(abi::Error::PermissionDenied) => Err(EPERM),
            Err(_) => Err(ESRCH),
        }
    }
}

/// Fires `ITIMER_REAL` if due: one `SIGALRM`, the reload or the end.
/// Called by the timer vCPU, and by the program's vCPU at each look
/// (which alone keeps it when no timer vCPU could start).
fn fire_if_due() -> bool {
    let at = ALARM_AT.load(Ordering::Acquire);
    let now = sys::rdtsc();
    if at == u64::MAX || now < at {
        return false;
    }
    let every = ALARM_EVERY.load(Ordering::Acquire);
    let next = if every == 0 { u64::MAX } else { at.saturating_add(every).max(now) };
    if ALARM_AT.compare_exchange(at, next, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return false; // re-armed meanwhile
    }
    true
}

/// The program's vCPU: fires a due alarm into [`ASYNC`] itself (it may be
/// ahead of the timer vCPU, which then finds nothing to do).
fn poll_timer() {
    if fire_if_due() {
        ASYNC.fetch_or(sig::bit(sig::SIGALRM), Ordering::AcqRel);
    }
}

/// The timer vCPU: sleeps until the alarm's TSC (a predicate on
/// [`ALARM_AT`], so a re-armed alarm is seen at its core's next look),
/// then posts `SIGALRM` to its own environment — an upcall that
/// interrupts the program wherever it is.
fn timer_main(env: u64) -> ! {
    loop {
        if fire_if_due() {
            let _ = libos_async::signal::post(env, sig::bit(sig::SIGALRM));
            continue;
        }
        let pred = Pred::new()
            .load_user(libos_async::predicate::R1, ALARM_AT.as_ptr() as u64)
            .tsc(libos_async::predicate::R2)
            .le(libos_async::predicate::R0, libos_async::predicate::R1, libos_async::predicate::R2);
        if pred.sleep().is_err() {
            let _ = sys::yield_now();
        }
    }
}

/// Starts the timer vCPU on another user core, once.
fn ensure_timer() {
    if TIMER_CORE.load(Ordering::Acquire) != u64::MAX {
        return;
    }
    let me = sys::core_id();
    let info = sys::info();
    let cores = if info.user_cores != 0 { info.user_cores } else { (1u64 << info.cores) - 1 };
    let Some(core) = (0..64).find(|&c| c != me && cores & (1 << c) != 0) else { return };
    if libos_async::start_vcpu(core, timer_main, u64::from(info.env_id)).is_ok() {
        TIMER_CORE.store(core as u64, Ordering::Release);
    }
}

/// Registers the upcall for the program's core and gives the process its
/// host. Before the program starts.
pub fn install(state: &mut State) -> Result<(), abi::Error> {
    state.process.signals.set_host(alloc::boxed::Box::new(Host { hz: sys::info().tsc_hz.max(1) }));
    libos_async::signal::set_signal_handler(on_upcall, 1 << sys::core_id())?;
    state.process.proc.sigchld_from_kernel = sigchld_at_child_end();
    Ok(())
}

/// `SIGCHLD` the moment a child ends: the kernel posts its bit when one
/// of our children is reclaimed (`ChildSignal`), whatever we are doing.
fn sigchld_at_child_end() -> bool {
    libos_async::signal::on_child_end(sig::bit(libos_posix::signal::SIGCHLD)).is_ok()
}

/// The upcall entry again in a forked child (the kernel's signal state is
/// per environment) for its own core; the parent's alarm, timer vCPU and
/// signals not yet taken are not the child's (Linux clears a child's
/// timers and pending signals at fork).
pub fn install_child() -> Result<(), abi::Error> {
    ALARM_AT.store(u64::MAX, Ordering::Release);
    ALARM_EVERY.store(0, Ordering::Release);
    TIMER_CORE.store(u64::MAX, Ordering::Release);
    ASYNC.store(0, Ordering::Release);
    libos_async::signal::set_signal_handler(on_upcall, 1 << sys::core_id())?;
    if let Some(state) = crate::redirect::state() {
        state.process.proc.sigchld_from_kernel = sigchld_at_child_end();
    }
    Ok(())
}
