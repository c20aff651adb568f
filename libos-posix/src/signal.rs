//! POSIX signals: dispositions, the blocked mask, pending signals, the
//! `ITIMER_REAL` conversions, the Linux `rt_sigframe` a handler runs on,
//! and the system calls that work on them.
//!
//! This module owns the process's signal state ([`Signals`]) and every
//! decision about it; the glue owns the machine side through
//! [`SignalHost`] (signals arriving asynchronously, blocking until one
//! does, the real-time interval timer, posting to another process) and
//! the registers (it hands [`Signals::deliver`] a [`Regs`] and the saved
//! vector state, and resumes what comes back).
//!
//! **Delivery** follows Linux (`arch/x86/kernel/signal.c`): the lowest
//! pending unblocked signal first; `SIG_IGN` and default-ignore signals are
//! dropped; a default "terminate" or "core" action ends the process with
//! the shell's status 128 + signal; a handler gets an `rt_sigframe` below
//! the interrupted stack pointer and its 128-byte red zone (or on the
//! alternate stack with `SA_ONSTACK`): the return address (`sa_restorer`),
//! a `ucontext` (flags, link, the alternate stack, the `sigcontext` with
//! every general register, `rflags` and a pointer to the vector state, the
//! blocked mask to restore), a `siginfo`, then the vector state itself
//! (64-byte aligned: an `fxsave` image, or an `xsave` image with Linux's
//! `FP_XSTATE_MAGIC` words). The handler starts with `rdi` = the signal,
//! `rsi` = the `siginfo`, `rdx` = the `ucontext`, `rax` = 0 and `rsp` 8
//! below a 16-byte boundary (as after a `call`). `rt_sigreturn` reads all
//! of it back ([`Signals::sigreturn`]).
//!
//! **Interrupted system calls.** A blocking call interrupted by a signal
//! returns [`ERESTARTSYS`] (or [`ERESTARTNOHAND`] for `pause` and
//! `rt_sigsuspend`) from the dispatcher; [`Signals::deliver`] turns that
//! into `EINTR` when a handler runs (or restarts the call — `rip` back over
//! the `syscall`, `rax` the number again — for `ERESTARTSYS` under
//! `SA_RESTART`), and restarts it when no handler runs. `nanosleep` is
//! `EINTR` with the time left, as on Linux.
//!
//! Not done: stopping (`SIGSTOP`, `SIGTSTP`, `SIGTTIN`, `SIGTTOU` are not
//! catchable or are ignored by default here: there is no job control yet),
//! queued real-time signals (each is pending at most once, like a standard
//! one), `ITIMER_VIRTUAL`/`ITIMER_PROF` (`EINVAL`), `rt_sigtimedwait`.

use crate::host::UserMemory;
use crate::linux::errno::*;
use crate::linux::{Errno, SysResult};
use alloc::boxed::Box;
use alloc::vec;

/// The number of signals (1..=64).
pub const NSIG: u32 = 64;

/// Hang-up.
pub const SIGHUP: u32 = 1;
/// Interrupt (`^C`).
pub const SIGINT: u32 = 2;
/// Quit.
pub const SIGQUIT: u32 = 3;
/// Illegal instruction.
pub const SIGILL: u32 = 4;
/// Trace trap.
pub const SIGTRAP: u32 = 5;
/// Abort.
pub const SIGABRT: u32 = 6;
/// Bus error.
pub const SIGBUS: u32 = 7;
/// Arithmetic error.
pub const SIGFPE: u32 = 8;
/// Kill (not catchable).
pub const SIGKILL: u32 = 9;
/// User signal 1.
pub const SIGUSR1: u32 = 10;
/// Segmentation fault.
pub const SIGSEGV: u32 = 11;
/// User signal 2.
pub const SIGUSR2: u32 = 12;
/// Write to a pipe nobody reads.
pub const SIGPIPE: u32 = 13;
/// `alarm` / `ITIMER_REAL`.
pub const SIGALRM: u32 = 14;
/// Terminate.
pub const SIGTERM: u32 = 15;
/// A child stopped or ended.
pub const SIGCHLD: u32 = 17;
/// Continue.
pub const SIGCONT: u32 = 18;
/// Stop (not catchable).
pub const SIGSTOP: u32 = 19;
/// Terminal stop.
pub const SIGTSTP: u32 = 20;
/// Background read.
pub const SIGTTIN: u32 = 21;
/// Background write.
pub const SIGTTOU: u32 = 22;
/// Urgent socket data.
pub const SIGURG: u32 = 23;
/// CPU time limit.
pub const SIGXCPU: u32 = 24;
/// File size limit.
pub const SIGXFSZ: u32 = 25;
/// Window size change.
pub const SIGWINCH: u32 = 28;
/// Bad system call.
pub const SIGSYS: u32 = 31;

/// `sa_flags`: the handler takes `(sig, siginfo, ucontext)`.
pub const SA_SIGINFO: u64 = 4;
/// `sa_flags`: `sa_restorer` is set (musl and glibc always set it).
pub const SA_RESTORER: u64 = 0x0400_0000;
/// `sa_flags`: run on the alternate stack.
pub const SA_ONSTACK: u64 = 0x0800_0000;
/// `sa_flags`: restart interrupted system calls.
pub const SA_RESTART: u64 = 0x1000_0000;
/// `sa_flags`: do not block the signal in its own handler.
pub const SA_NODEFER: u64 = 0x4000_0000;
/// `sa_flags`: back to `SIG_DFL` once delivered.
pub const SA_RESETHAND: u64 = 0x8000_0000;
/// Default action.
pub const SIG_DFL: u64 = 0;
/// Ignore.
pub const SIG_IGN: u64 = 1;
/// `rt_sigprocmask` `how`.
pub const SIG_BLOCK: u64 = 0;
/// `rt_sigprocmask` `how`.
pub const SIG_UNBLOCK: u64 = 1;
/// `rt_sigprocmask` `how`.
pub const SIG_SETMASK: u64 = 2;
/// `sigaltstack`: the process runs on it now.
pub const SS_ONSTACK: u32 = 1;
/// `sigaltstack`: no alternate stack.
pub const SS_DISABLE: u32 = 2;
/// `sigaltstack`: the least size accepted.
pub const MINSIGSTKSZ: u64 = 2048;
/// `si_code`: sent by `kill`.
pub const SI_USER: i32 = 0;
/// `si_code`: sent by the kernel (here: the runtime).
pub const SI_KERNEL: i32 = 0x80;
/// `si_code`: sent by `tkill`/`tgkill`.
pub const SI_TKILL: i32 = -6;

/// Internal: restart the call unless a handler without `SA_RESTART` runs
/// (then `EINTR`). Never seen by the program.
pub const ERESTARTSYS: Errno = Errno(512);
/// Internal: `EINTR` if a handler runs, else restart (`pause`,
/// `rt_sigsuspend`). Never seen by the program.
pub const ERESTARTNOHAND: Errno = Errno(514);

/// Bytes of the `rt_sigframe` up to the vector state: the return address,
/// the `ucontext` (304) and the `siginfo` (128).
pub const FRAME_SIZE: u64 = 8 + UC_SIZE + 128;
/// Offset of the `ucontext` in the frame.
pub const UC_OFFSET: u64 = 8;
/// Offset of the `siginfo` in the frame.
pub const INFO_OFFSET: u64 = 8 + UC_SIZE;
const UC_SIZE: u64 = 304;
/// Offset of the `sigcontext` in the `ucontext`.
const MCONTEXT: u64 = 40;
/// Offset of the blocked mask in the `ucontext`.
const UC_SIGMASK: u64 = 296;
/// `uc_flags`: the vector state is an `xsave` image.
pub const UC_FP_XSTATE: u64 = 1;
/// `uc_flags` Linux sets on x86-64 (`UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS`).
const UC_SS_FLAGS: u64 = 2 | 4;
/// `fpstate.sw_reserved.magic1` of an `xsave` image.
pub const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// The word after an `xsave` image.
pub const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// `rflags` bits a handler starts without (DF, TF, RF; and AC, NT).
const RFLAGS_CLEARED: u64 = (1 << 10) | (1 << 8) | (1 << 16) | (1 << 18) | (1 << 14);
/// `rflags` bits `rt_sigreturn` takes from the frame (`FIX_EFLAGS`).
pub const RFLAGS_RESTORED: u64 = 0x0004_0dd5;

/// The bit of signal `sig` in a mask.
pub const fn bit(sig: u32) -> u64 {
    1 << (sig - 1)
}

/// Signals that can be neither caught, blocked nor ignored.
const UNBLOCKABLE: u64 = bit(SIGKILL) | bit(SIGSTOP);

/// What a signal does by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Default {
    /// End the process.
    Terminate,
    /// End the process "with a core dump" (the status is the same here).
    Core,
    /// Nothing.
    Ignore,
    /// Stop the process (no job control yet: nothing happens).
    Stop,
}

/// Linux's default action for `sig` (`man 7 signal`).
pub fn default_action(sig: u32) -> Default {
    match sig {
        SIGCHLD | SIGURG | SIGWINCH | SIGCONT => Default::Ignore,
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => Default::Stop,
        SIGQUIT | SIGILL | SIGTRAP | SIGABRT | SIGBUS | SIGFPE | SIGSEGV | SIGXCPU | SIGXFSZ
        | SIGSYS => Default::Core,
        _ => Default::Terminate,
    }
}

/// One disposition (the kernel's `struct sigaction`: handler, flags,
/// restorer, mask; 32 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Action {
    /// `SIG_DFL`, `SIG_IGN` or the handler's address.
    pub handler: u64,
    /// `SA_*`.
    pub flags: u64,
    /// Where the handler returns (`__restore_rt`).
    pub restorer: u64,
    /// Signals blocked while it runs.
    pub mask: u64,
}

impl Action {
    const SIZE: usize = 32;

    fn decode(b: &[u8; 32]) -> Action {
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Action { handler: w(0), flags: w(1), restorer: w(2), mask: w(3) }
    }

    fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, w) in [self.handler, self.flags, self.restorer, self.mask].iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        b
    }
}

/// The registers of the interrupted context, in `sigcontext` order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Regs {
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rsp: u64,
    pub rip: u64,
    pub rflags: u64,
}

impl Regs {
    fn words(&self) -> [u64; 18] {
        [
            self.r8,
            self.r9,
            self.r10,
            self.r11,
            self.r12,
            self.r13,
            self.r14,
            self.r15,
            self.rdi,
            self.rsi,
            self.rbp,
            self.rbx,
            self.rdx,
            self.rax,
            self.rcx,
            self.rsp,
            self.rip,
            self.rflags,
        ]
    }

    fn from_words(w: [u64; 18]) -> Regs {
        let [
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
            rdi,
            rsi,
            rbp,
            rbx,
            rdx,
            rax,
            rcx,
            rsp,
            rip,
            rflags,
        ] = w;
        Regs {
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
            rdi,
            rsi,
            rbp,
            rbx,
            rdx,
            rax,
            rcx,
            rsp,
            rip,
            rflags,
        }
    }
}

/// The vector state the glue saved at the interruption.
#[derive(Clone, Copy, Debug)]
pub struct VectorState<'a> {
    /// The `fxsave` or `xsave` image.
    pub image: &'a [u8],
    /// It is an `xsave` image (with `xfeatures` its requested-feature
    /// bitmap): written with Linux's magic words.
    pub xsave: Option<u64>,
}

/// The machine side of signals, implemented by the glue.
pub trait SignalHost {
    /// Signals that arrived asynchronously since the last call (bit
    /// `n - 1` for signal `n`), now taken.
    fn take(&mut self) -> u64;
    /// Blocks until a signal arrives asynchronously (at once if one
    /// already has, untaken).
    fn wait(&mut self);
    /// As [`SignalHost::wait`], and also returns when the environment's
    /// event queue moves past `events_mark` (a child's end is an event:
    /// the caller then looks for ended children and raises `SIGCHLD`).
    fn wait_or_event(&mut self, events_mark: u64) {
        let _ = events_mark;
        self.wait();
    }
    /// Arms `ITIMER_REAL` (`value_ns` 0 disarms) with a reload interval;
    /// returns the old value left and interval. It raises `SIGALRM`
    /// through [`SignalHost::take`].
    fn set_itimer(&mut self, value_ns: u64, interval_ns: u64) -> (u64, u64);
    /// The time left and interval of `ITIMER_REAL` (0: disarmed).
    fn get_itimer(&self) -> (u64, u64);
    /// Sends `sig` to the process `pid` (not this one); `sig` 0 only
    /// checks that it could.
    fn post(&mut self, pid: i32, sig: u32) -> SysResult<()>;
}

/// A host with no machine: nothing arrives, `wait` returns at once, the
/// timer never fires, other processes do not exist (host tests, and a
/// process before the glue installs its own).
#[derive(Debug, Default)]
pub struct NoHost {
    itimer: (u64, u64),
}

impl SignalHost for NoHost {
    fn take(&mut self) -> u64 {
        0
    }
    fn wait(&mut self) {}
    fn set_itimer(&mut self, value_ns: u64, interval_ns: u64) -> (u64, u64) {
        core::mem::replace(&mut self.itimer, (value_ns, interval_ns))
    }
    fn get_itimer(&self) -> (u64, u64) {
        self.itimer
    }
    fn post(&mut self, _pid: i32, _sig: u32) -> SysResult<()> {
        Err(ESRCH)
    }
}

/// What the next pending signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing deliverable.
    Nothing,
    /// End the process: the status a shell sees (128 + signal).
    Terminate(u32),
    /// Run the handler of this signal.
    Handler(u32),
}

/// How [`Signals::deliver`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// `regs` are what the program resumes with (handlers set up, or
    /// nothing to do).
    Resume,
    /// The process ends with this signal's default action (exit status
    /// 128 + signal).
    Terminate(u32),
}

/// One process's signal state.
pub struct Signals {
    actions: [Action; NSIG as usize],
    /// Blocked signals.
    pub blocked: u64,
    pending: u64,
    /// `si_code` and sender pid of each pending signal.
    origin: [(i32, i32); NSIG as usize],
    /// The alternate stack: base, size, `SS_DISABLE` or 0.
    altstack: (u64, u64, u32),
    /// The mask `rt_sigsuspend` replaced, restored by the handler's frame.
    suspend_saved: Option<u64>,
    host: Box<dyn SignalHost>,
    /// Handler frames the last [`Signals::deliver`] set up (the glue then
    /// starts the handler from the initial vector state).
    pub handlers_started: u32,
}

impl core::fmt::Debug for Signals {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Signals")
            .field("blocked", &self.blocked)
            .field("pending", &self.pending)
            .finish()
    }
}

impl core::default::Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

fn check_sig(sig: u64) -> SysResult<u32> {
    if (1..=u64::from(NSIG)).contains(&sig) { Ok(sig as u32) } else { Err(EINVAL) }
}

fn read_u64(mem: &dyn UserMemory, addr: u64) -> SysResult<u64> {
    let mut b = [0u8; 8];
    mem.read(addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn write_u64(mem: &mut dyn UserMemory, addr: u64, v: u64) -> SysResult<()> {
    mem.write(addr, &v.to_le_bytes())
}

/// A `timeval` in user memory as nanoseconds (`EINVAL` for a negative or
/// out-of-range `tv_usec`, as `setitimer` checks).
fn read_timeval(mem: &dyn UserMemory, addr: u64) -> SysResult<u64> {
    let sec = read_u64(mem, addr)? as i64;
    let usec = read_u64(mem, addr + 8)? as i64;
    if sec < 0 || !(0..1_000_000).contains(&usec) {
        return Err(EINVAL);
    }
    Ok((sec as u64).saturating_mul(1_000_000_000).saturating_add(usec as u64 * 1000))
}

/// Nanoseconds as a `timeval`, rounded up to a microsecond as Linux
/// reports a running timer (never 0 while armed).
fn timeval(ns: u64) -> [u8; 16] {
    let us = ns.div_ceil(1000);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(us / 1_000_000).to_le_bytes());
    b[8..].copy_from_slice(&(us % 1_000_000).to_le_bytes());
    b
}

impl Signals {
    /// Default dispositions, nothing blocked or pending, no host.
    pub fn new() -> Signals {
        Signals {
            actions: [Action::default(); NSIG as usize],
            blocked: 0,
            pending: 0,
            origin: [(0, 0); NSIG as usize],
            altstack: (0, 0, SS_DISABLE),
            suspend_saved: None,
            host: Box::new(NoHost::default()),
            handlers_started: 0,
        }
    }

    /// Installs the glue's machine side.
    pub fn set_host(&mut self, host: Box<dyn SignalHost>) {
        self.host = host;
    }

    /// Signals pending (raised and not yet delivered).
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// The disposition of `sig` (1..=64).
    pub fn action(&self, sig: u32) -> Action {
        self.actions[sig as usize - 1]
    }

    /// Raises `sig` for this process with its origin (`si_code`, sender
    /// pid). An ignored signal is dropped at once, as Linux does; a
    /// pending one stays pending once.
    pub fn raise(&mut self, sig: u32, code: i32, pid: i32) {
        if !(1..=NSIG).contains(&sig) || self.ignored(sig) {
            return;
        }
        if self.pending & bit(sig) == 0 {
            self.origin[sig as usize - 1] = (code, pid);
        }
        self.pending |= bit(sig);
    }

    /// Sends `sig` (1..=64; 0 only checks) to another process `pid`
    /// through the host ([`SignalHost::post`]).
    pub(crate) fn post(&mut self, pid: i32, sig: u32) -> SysResult<()> {
        self.host.post(pid, sig)
    }

    /// The hook other parts of the library call (a child ended:
    /// `SIGCHLD`; a write to a pipe without readers: `SIGPIPE`; `^C` on
    /// the terminal: `SIGINT`), raised by the runtime itself.
    pub fn raise_kernel(&mut self, sig: u32) {
        self.raise(sig, SI_KERNEL, 0);
    }

    fn ignored(&self, sig: u32) -> bool {
        if UNBLOCKABLE & bit(sig) != 0 {
            return false;
        }
        match self.action(sig).handler {
            SIG_IGN => true,
            SIG_DFL => matches!(default_action(sig), Default::Ignore | Default::Stop),
            _ => false,
        }
    }

    /// Takes the signals that arrived asynchronously into the pending set
    /// (`SIGALRM` from the timer, `kill` from other processes).
    pub fn absorb(&mut self) {
        let mut bits = self.host.take();
        while bits != 0 {
            let sig = bits.trailing_zeros() + 1;
            bits &= bits - 1;
            let code = match sig {
                SIGALRM => SI_KERNEL,
                // Posted by the kernel at a child's end (`ChildSignal`).
                SIGCHLD => crate::proc::CLD_EXITED,
                _ => SI_USER,
            };
            self.raise(sig, code, 0);
        }
    }

    /// Whether a pending signal would interrupt a blocking call: one not
    /// blocked (ignored ones are never pending).
    pub fn interrupting(&mut self) -> bool {
        self.absorb();
        self.pending & (!self.blocked | UNBLOCKABLE) != 0
    }

    /// Takes the next deliverable signal off the pending set and says
    /// what it asks for.
    pub fn next_signal(&mut self) -> Next {
        loop {
            let ready = self.pending & (!self.blocked | UNBLOCKABLE);
            if ready == 0 {
                return Next::Nothing;
            }
            let sig = ready.trailing_zeros() + 1;
            self.pending &= !bit(sig);
            match self.action(sig).handler {
                SIG_IGN if UNBLOCKABLE & bit(sig) == 0 => continue,
                SIG_DFL | SIG_IGN => match default_action(sig) {
                    Default::Terminate | Default::Core => return Next::Terminate(sig),
                    Default::Ignore | Default::Stop if UNBLOCKABLE & bit(sig) == 0 => continue,
                    // SIGSTOP: no job control yet; it does nothing.
                    Default::Ignore | Default::Stop => continue,
                },
                _ => return Next::Handler(sig),
            }
        }
    }

    /// Delivers what is pending to the context `regs`, which just made
    /// system call `syscall` (with its result in `rax`) or was interrupted
    /// (`syscall` `None`): sets up a frame per handler, one over the other
    /// as Linux does when several are deliverable, and settles an
    /// interrupted call's restart. `vector` is the saved vector state,
    /// written into the first frame (later frames hold the initial state
    /// a handler starts from, `init`). A frame that cannot be written ends
    /// the process with `SIGSEGV`, as on Linux.
    pub fn deliver(
        &mut self,
        regs: &mut Regs,
        syscall: Option<u64>,
        vector: VectorState<'_>,
        init: VectorState<'_>,
        mem: &mut dyn UserMemory,
    ) -> Delivered {
        self.absorb();
        let mut restart = syscall.and_then(|nr| {
            let ret = regs.rax as i64;
            (ret == ERESTARTSYS.to_ret() || ret == ERESTARTNOHAND.to_ret()).then_some((nr, ret))
        });
        let mut first = true;
        self.handlers_started = 0;
        loop {
            match self.next_signal() {
                Next::Nothing => break,
                Next::Terminate(sig) => return Delivered::Terminate(sig),
                Next::Handler(sig) => {
                    let act = self.action(sig);
                    if let Some((_, ret)) = restart.take() {
                        if ret == ERESTARTSYS.to_ret() && act.flags & SA_RESTART != 0 {
                            Self::rewind(regs, syscall);
                        } else {
                            regs.rax = EINTR.to_ret() as u64;
                        }
                    }
                    let state = if first { vector } else { init };
                    first = false;
                    if self.setup_frame(regs, sig, act, state, mem).is_err() {
                        return Delivered::Terminate(SIGSEGV);
                    }
                    self.handlers_started += 1;
                }
            }
        }
        if restart.is_some() {
            // No handler ran: the call starts again.
            Self::rewind(regs, syscall);
        }
        if let Some(mask) = self.suspend_saved.take() {
            // `rt_sigsuspend` ended without a handler frame to restore it.
            self.blocked = mask;
        }
        Delivered::Resume
    }

    fn rewind(regs: &mut Regs, syscall: Option<u64>) {
        if let Some(nr) = syscall {
            regs.rax = nr;
            regs.rip = regs.rip.wrapping_sub(2);
        }
    }

    /// Writes the `rt_sigframe` for `sig` below `regs`' stack and points
    /// `regs` at the handler.
    fn setup_frame(
        &mut self,
        regs: &mut Regs,
        sig: u32,
        act: Action,
        vector: VectorState<'_>,
        mem: &mut dyn UserMemory,
    ) -> SysResult<()> {
        let (ss_sp, ss_size, ss_flags) = self.altstack;
        let on_alt = self.on_altstack(regs.rsp);
        let mut sp = if act.flags & SA_ONSTACK != 0 && ss_flags & SS_DISABLE == 0 && !on_alt {
            ss_sp.wrapping_add(ss_size)
        } else {
            regs.rsp.wrapping_sub(128)
        };
        let fp_len = vector.image.len() as u64 + if vector.xsave.is_some() { 4 } else { 0 };
        sp = sp.wrapping_sub(fp_len) & !63;
        let fp = sp;
        let frame = (sp.wrapping_sub(FRAME_SIZE) & !15).wrapping_sub(8);
        // The vector state, with Linux's software words for an xsave image.
        let mut image = vec![0u8; fp_len as usize];
        image[..vector.image.len()].copy_from_slice(vector.image);
        if let Some(xfeatures) = vector.xsave {
            let size = vector.image.len() as u32;
            image[464..468].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
            image[468..472].copy_from_slice(&(size + 4).to_le_bytes());
            image[472..480].copy_from_slice(&xfeatures.to_le_bytes());
            image[480..484].copy_from_slice(&size.to_le_bytes());
            image[size as usize..].copy_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
        }
        mem.write(fp, &image)?;
        let mask_to_restore = self.suspend_saved.take().unwrap_or(self.blocked);
        let mut f = [0u8; FRAME_SIZE as usize];
        let put = |f: &mut [u8], at: u64, v: u64| {
            f[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
        };
        put(&mut f, 0, act.restorer);
        let uc = UC_OFFSET;
        let uc_flags = UC_SS_FLAGS | if vector.xsave.is_some() { UC_FP_XSTATE } else { 0 };
        put(&mut f, uc, uc_flags);
        put(&mut f, uc + 16, ss_sp);
        put(&mut f, uc + 24, u64::from(if on_alt { SS_ONSTACK } else { ss_flags }));
        put(&mut f, uc + 32, ss_size);
        let mc = uc + MCONTEXT;
        for (i, w) in regs.words().iter().enumerate() {
            put(&mut f, mc + i as u64 * 8, *w);
        }
        // cs, gs, fs, ss as Linux's user selectors (0x33, 0, 0, 0x2b).
        put(&mut f, mc + 18 * 8, 0x33 | 0x2b << 48);
        put(&mut f, mc + 22 * 8, self.blocked); // oldmask
        put(&mut f, mc + 24 * 8, fp); // fpstate
        put(&mut f, uc + UC_SIGMASK, mask_to_restore);
        let info = INFO_OFFSET as usize;
        let (code, pid) = self.origin[sig as usize - 1];
        f[info..info + 4].copy_from_slice(&sig.to_le_bytes());
        f[info + 8..info + 12].copy_from_slice(&code.to_le_bytes());
        f[info + 16..info + 20].copy_from_slice(&pid.to_le_bytes());
        mem.write(frame, &f)?;
        // The handler's context.
        regs.rip = act.handler;
        regs.rsp = frame;
        regs.rdi = u64::from(sig);
        regs.rsi = frame + INFO_OFFSET;
        regs.rdx = frame + UC_OFFSET;
        regs.rax = 0;
        regs.rflags &= !RFLAGS_CLEARED;
        // The mask while it runs; a one-shot handler goes back to default.
        self.blocked |= act.mask;
        if act.flags & SA_NODEFER == 0 {
            self.blocked |= bit(sig);
        }
        self.blocked &= !UNBLOCKABLE;
        if act.flags & SA_RESETHAND != 0 {
            self.actions[sig as usize - 1] = Action::default();
        }
        Ok(())
    }

    fn on_altstack(&self, sp: u64) -> bool {
        let (ss_sp, ss_size, ss_flags) = self.altstack;
        ss_flags & SS_DISABLE == 0 && sp > ss_sp && sp - ss_sp <= ss_size
    }

    /// `rt_sigreturn` with the program's `rsp` at the `syscall` (just past
    /// the return address the handler's `ret` popped): the registers to
    /// resume and where the saved vector state is (with its `xsave`
    /// flag). Restores the blocked mask. `EFAULT` if the frame cannot be
    /// read (the glue then ends the process with `SIGSEGV`, as Linux).
    pub fn sigreturn(&mut self, rsp: u64, mem: &dyn UserMemory) -> SysResult<(Regs, u64, bool)> {
        let uc = rsp; // = frame + UC_OFFSET
        let mut b = [0u8; UC_SIZE as usize];
        mem.read(uc, &mut b)?;
        let w =
            |at: u64| u64::from_le_bytes(b[at as usize..at as usize + 8].try_into().expect("8"));
        let regs = Regs::from_words(core::array::from_fn(|i| w(MCONTEXT + i as u64 * 8)));
        let fpstate = w(MCONTEXT + 24 * 8);
        self.blocked = w(UC_SIGMASK) & !UNBLOCKABLE;
        Ok((regs, fpstate, w(0) & UC_FP_XSTATE != 0))
    }

    /// The signal system calls; `None` for a number this module does not
    /// answer.
    pub fn syscall(
        &mut self,
        nr: u64,
        a: [u64; 6],
        pid: i32,
        mem: &mut dyn UserMemory,
    ) -> Option<SysResult<u64>> {
        use crate::linux::sysno::*;
        Some(match nr {
            SYS_RT_SIGACTION => self.sigaction(a[0], a[1], a[2], a[3], mem),
            SYS_RT_SIGPROCMASK => self.sigprocmask(a[0], a[1], a[2], a[3], mem),
            SYS_RT_SIGPENDING => {
                if a[1] > 8 {
                    Err(EINVAL)
                } else {
                    self.absorb();
                    let set = self.pending & self.blocked;
                    mem.write(a[0], &set.to_le_bytes()[..a[1] as usize]).map(|()| 0)
                }
            }
            SYS_RT_SIGSUSPEND => self.sigsuspend(a[0], a[1], mem),
            SYS_PAUSE => self.pause(),
            SYS_SIGALTSTACK => self.sigaltstack(a[0], a[1], mem),
            SYS_KILL => self.kill(a[0] as i32, a[1], pid),
            SYS_TKILL => self.tkill(a[0] as i32, a[1], pid),
            SYS_TGKILL => {
                if a[0] as i32 != pid && (a[0] as i32) > 0 {
                    Err(ESRCH)
                } else {
                    self.tkill(a[1] as i32, a[2], pid)
                }
            }
            SYS_ALARM => Ok(self.alarm(a[0] as u32)),
            SYS_SETITIMER => self.setitimer(a[0], a[1], a[2], mem),
            SYS_GETITIMER => self.getitimer(a[0], a[1], mem),
            _ => return None,
        })
    }

    fn sigaction(
        &mut self,
        sig: u64,
        act: u64,
        oact: u64,
        size: u64,
        mem: &mut dyn UserMemory,
    ) -> SysResult<u64> {
        if size != 8 {
            return Err(EINVAL);
        }
        let sig = check_sig(sig)?;
        let new = if act != 0 {
            let mut b = [0u8; Action::SIZE];
            mem.read(act, &mut b)?;
            Some(Action::decode(&b))
        } else {
            None
        };
        if new.is_some() && UNBLOCKABLE & bit(sig) != 0 {
            return Err(EINVAL);
        }
        if oact != 0 {
            mem.write(oact, &self.action(sig).encode())?;
        }
        if let Some(mut new) = new {
            new.mask &= !UNBLOCKABLE;
            self.actions[sig as usize - 1] = new;
            if self.ignored(sig) {
                // Setting SIG_IGN (or an ignoring default) discards it.
                self.pending &= !bit(sig);
            }
        }
        Ok(0)
    }

    fn sigprocmask(
        &mut self,
        how: u64,
        set: u64,
        oset: u64,
        size: u64,
        mem: &mut dyn UserMemory,
    ) -> SysResult<u64> {
        if size != 8 {
            return Err(EINVAL);
        }
        let old = self.blocked;
        if set != 0 {
            let new = read_u64(mem, set)?;
            self.blocked = match how {
                SIG_BLOCK => old | new,
                SIG_UNBLOCK => old & !new,
                SIG_SETMASK => new,
                _ => return Err(EINVAL),
            } & !UNBLOCKABLE;
        }
        if oset != 0 {
            write_u64(mem, oset, old)?;
        }
        Ok(0)
    }

    fn sigsuspend(&mut self, set: u64, size: u64, mem: &mut dyn UserMemory) -> SysResult<u64> {
        if size != 8 {
            return Err(EINVAL);
        }
        let new = read_u64(mem, set)? & !UNBLOCKABLE;
        let old = core::mem::replace(&mut self.blocked, new);
        self.wait_for_signal();
        self.suspend_saved = Some(old);
        Err(ERESTARTNOHAND)
    }

    fn pause(&mut self) -> SysResult<u64> {
        self.wait_for_signal();
        Err(ERESTARTNOHAND)
    }

    /// `rt_sigsuspend` (`Some(old mask)`, the temporary mask installed) or
    /// `pause` (`None`) up to the wait: the dispatcher waits itself, so that
    /// it can notice children's ends meanwhile ([`Signals::suspend_wait`]).
    pub(crate) fn suspend_begin(
        &mut self,
        nr: u64,
        a: [u64; 6],
        mem: &mut dyn UserMemory,
    ) -> SysResult<Option<u64>> {
        if nr == crate::linux::sysno::SYS_PAUSE {
            return Ok(None);
        }
        if a[1] != 8 {
            return Err(EINVAL);
        }
        let new = read_u64(mem, a[0])? & !UNBLOCKABLE;
        Ok(Some(core::mem::replace(&mut self.blocked, new)))
    }

    /// One round of the wait: true once a signal that is not blocked is
    /// pending; else sleeps until a signal arrives or the event queue moves
    /// past `events_mark`, and returns false.
    pub(crate) fn suspend_wait(&mut self, events_mark: Option<u64>) -> bool {
        if self.interrupting() {
            return true;
        }
        match events_mark {
            Some(mark) => self.host.wait_or_event(mark),
            None => self.host.wait(),
        }
        false
    }

    /// The end of `rt_sigsuspend`/`pause`: the old mask comes back when the
    /// handler returns; the call is never restarted.
    pub(crate) fn suspend_end(&mut self, old: Option<u64>) -> SysResult<u64> {
        if old.is_some() {
            self.suspend_saved = old;
        }
        Err(ERESTARTNOHAND)
    }

    /// Blocks until a signal that is not blocked is pending.
    fn wait_for_signal(&mut self) {
        while !self.interrupting() {
            self.host.wait();
        }
    }

    fn sigaltstack(&mut self, ss: u64, old: u64, mem: &mut dyn UserMemory) -> SysResult<u64> {
        let current = self.altstack;
        if ss != 0 {
            let sp = read_u64(mem, ss)?;
            let flags = read_u64(mem, ss + 8)? as u32;
            let size = read_u64(mem, ss + 16)?;
            // No change while running on it (the handler's rsp is not
            // known here: a frame on it marks SS_ONSTACK in uc_stack only).
            if flags & !SS_DISABLE != 0 && flags != SS_ONSTACK {
                return Err(EINVAL);
            }
            self.altstack = if flags & SS_DISABLE != 0 {
                (0, 0, SS_DISABLE)
            } else {
                if size < MINSIGSTKSZ {
                    return Err(ENOMEM);
                }
                (sp, size, 0)
            };
        }
        if old != 0 {
            let mut b = [0u8; 24];
            b[..8].copy_from_slice(&current.0.to_le_bytes());
            b[8..12].copy_from_slice(&current.2.to_le_bytes());
            b[16..].copy_from_slice(&current.1.to_le_bytes());
            if let Err(e) = mem.write(old, &b) {
                self.altstack = current;
                return Err(e);
            }
        }
        Ok(0)
    }

    /// `kill`: this process (its pid, its group `0` or `-pid`) gets the
    /// signal here; any other pid, and `-1` (everyone else), goes to the
    /// host.
    fn kill(&mut self, target: i32, sig: u64, pid: i32) -> SysResult<u64> {
        if sig > u64::from(NSIG) {
            return Err(EINVAL);
        }
        let sig = sig as u32;
        if target == -1 {
            // Everyone but this process (and init): the host's to say.
            return self.host.post(-1, sig).map(|()| 0);
        }
        if target == pid || target == 0 || target == -pid {
            if sig != 0 {
                self.raise(sig, SI_USER, pid);
            }
            return Ok(0);
        }
        if target == i32::MIN {
            return Err(ESRCH);
        }
        self.host.post(target, sig).map(|()| 0)
    }

    /// `tkill`/`tgkill` to this process's one thread.
    fn tkill(&mut self, tid: i32, sig: u64, pid: i32) -> SysResult<u64> {
        if tid <= 0 || sig > u64::from(NSIG) {
            return Err(EINVAL);
        }
        if tid != pid {
            return Err(ESRCH);
        }
        if sig != 0 {
            self.raise(sig as u32, SI_TKILL, pid);
        }
        Ok(0)
    }

    /// `alarm`: seconds left of the previous alarm, rounded as Linux
    /// (`alarm_setitimer`: to the nearest second, at least 1 if armed).
    fn alarm(&mut self, secs: u32) -> u64 {
        let (old, _) = self.host.set_itimer(u64::from(secs) * 1_000_000_000, 0);
        if old == 0 {
            return 0;
        }
        let us = old.div_ceil(1000);
        let s = us / 1_000_000 + u64::from(us % 1_000_000 >= 500_000);
        s.max(1)
    }

    fn setitimer(
        &mut self,
        which: u64,
        new: u64,
        old: u64,
        mem: &mut dyn UserMemory,
    ) -> SysResult<u64> {
        if which != 0 {
            return Err(EINVAL);
        }
        let (interval, value) =
            if new != 0 { (read_timeval(mem, new)?, read_timeval(mem, new + 16)?) } else { (0, 0) };
        let before = self.host.get_itimer();
        let (old_value, old_interval) = if new != 0 {
            self.host.set_itimer(value, if value == 0 { 0 } else { interval })
        } else {
            before
        };
        if old != 0 {
            let mut b = [0u8; 32];
            b[..16].copy_from_slice(&timeval(old_interval));
            b[16..].copy_from_slice(&timeval(old_value));
            mem.write(old, &b)?;
        }
        Ok(0)
    }

    fn getitimer(&mut self, which: u64, out: u64, mem: &mut dyn UserMemory) -> SysResult<u64> {
        if which > 2 {
            return Err(EINVAL);
        }
        let (value, interval) = if which == 0 { self.host.get_itimer() } else { (0, 0) };
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(&timeval(interval));
        b[16..].copy_from_slice(&timeval(value));
        mem.write(out, &b).map(|()| 0)
    }
}

#[cfg(test)]
mod tests;
