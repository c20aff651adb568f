use super::*;
use crate::linux::sysno::*;
use crate::mock::MockMemory;

const STACK: u64 = 0x7000_0000;
const ACT: u64 = 0x6000_0000;

fn mem() -> MockMemory {
    let mut m = MockMemory::default();
    m.ensure(STACK - 0x4000, 0x4000);
    m.ensure(ACT, 0x1000);
    m
}

fn set_action(s: &mut Signals, m: &mut MockMemory, sig: u32, a: Action) {
    m.put(ACT, &a.encode());
    assert_eq!(s.syscall(SYS_RT_SIGACTION, [u64::from(sig), ACT, 0, 8, 0, 0], 1, m), Some(Ok(0)));
}

fn fx() -> [u8; 512] {
    core::array::from_fn(|i| i as u8)
}

fn regs() -> Regs {
    Regs {
        r8: 8,
        r15: 15,
        rax: 0xaa,
        rcx: 0xcc,
        rsp: STACK - 0x100,
        rip: 0x40_1000,
        rflags: 0x202 | 1 << 10,
        ..Regs::default()
    }
}

fn vs(image: &[u8]) -> VectorState<'_> {
    VectorState { image, xsave: None }
}

#[test]
fn default_actions_match_linux() {
    assert_eq!(default_action(SIGCHLD), Default::Ignore);
    assert_eq!(default_action(SIGWINCH), Default::Ignore);
    assert_eq!(default_action(SIGURG), Default::Ignore);
    assert_eq!(default_action(SIGSEGV), Default::Core);
    assert_eq!(default_action(SIGABRT), Default::Core);
    assert_eq!(default_action(SIGTERM), Default::Terminate);
    assert_eq!(default_action(SIGALRM), Default::Terminate);
    assert_eq!(default_action(40), Default::Terminate);
}

#[test]
fn kill_and_stop_cannot_be_caught_or_blocked() {
    let mut s = Signals::new();
    let mut m = mem();
    m.put(ACT, &Action { handler: 0x40_2000, ..Action::default() }.encode());
    for sig in [SIGKILL, SIGSTOP] {
        let r = s.syscall(SYS_RT_SIGACTION, [u64::from(sig), ACT, 0, 8, 0, 0], 1, &mut m);
        assert_eq!(r, Some(Err(EINVAL)));
    }
    m.put(ACT, &u64::MAX.to_le_bytes());
    s.syscall(SYS_RT_SIGPROCMASK, [SIG_SETMASK, ACT, 0, 8, 0, 0], 1, &mut m);
    assert_eq!(s.blocked, !UNBLOCKABLE);
    s.raise(SIGKILL, SI_USER, 1);
    s.raise(SIGTERM, SI_USER, 1);
    assert_eq!(s.next_signal(), Next::Terminate(SIGKILL));
    assert_eq!(s.next_signal(), Next::Nothing, "SIGTERM stays blocked");
}

#[test]
fn ignored_signals_are_dropped_and_defaults_ignore() {
    let mut s = Signals::new();
    let mut m = mem();
    s.raise(SIGCHLD, SI_KERNEL, 0);
    assert_eq!(s.pending(), 0);
    set_action(&mut s, &mut m, SIGUSR1, Action { handler: SIG_IGN, ..Action::default() });
    s.raise(SIGUSR1, SI_USER, 1);
    assert_eq!(s.next_signal(), Next::Nothing);
    // Becoming ignored discards a pending one.
    let mut r = regs();
    m.put(ACT, &bit(SIGUSR2).to_le_bytes());
    s.syscall(SYS_RT_SIGPROCMASK, [SIG_BLOCK, ACT, 0, 8, 0, 0], 1, &mut m);
    s.raise(SIGUSR2, SI_USER, 1);
    assert_eq!(s.pending(), bit(SIGUSR2));
    set_action(&mut s, &mut m, SIGUSR2, Action { handler: SIG_IGN, ..Action::default() });
    assert_eq!(s.pending(), 0);
    let image = fx();
    assert_eq!(s.deliver(&mut r, None, vs(&image), vs(&image), &mut m), Delivered::Resume);
    assert_eq!(r, regs());
}

#[test]
fn frame_layout_is_linux_and_sigreturn_restores_everything() {
    let mut s = Signals::new();
    let mut m = mem();
    let act = Action {
        handler: 0x40_2000,
        flags: SA_SIGINFO | SA_RESTORER,
        restorer: 0x40_3000,
        mask: bit(SIGUSR2),
    };
    set_action(&mut s, &mut m, SIGUSR1, act);
    s.raise(SIGUSR1, SI_USER, 7);
    let before = regs();
    let mut r = before;
    let image = fx();
    let init = [0u8; 512];
    assert_eq!(s.deliver(&mut r, None, vs(&image), vs(&init), &mut m), Delivered::Resume);
    // The handler's entry: rsp ≡ 8 (mod 16), below the red zone and the
    // vector state.
    assert_eq!(r.rip, 0x40_2000);
    assert_eq!(r.rsp % 16, 8);
    assert!(r.rsp + FRAME_SIZE + 512 <= before.rsp - 128);
    assert_eq!((r.rdi, r.rsi, r.rdx, r.rax), (10, r.rsp + INFO_OFFSET, r.rsp + UC_OFFSET, 0));
    assert_eq!(r.rflags & (1 << 10), 0, "DF cleared");
    let frame = m.get(r.rsp, FRAME_SIZE as usize);
    let w = |at: usize| u64::from_le_bytes(frame[at..at + 8].try_into().unwrap());
    assert_eq!(w(0), 0x40_3000, "return address = sa_restorer");
    // sigcontext: r8 first, rip at 16 words, rflags at 17, then fpstate.
    let mc = 8 + 40;
    assert_eq!(w(mc), 8);
    assert_eq!(w(mc + 7 * 8), 15);
    assert_eq!(w(mc + 13 * 8), 0xaa);
    assert_eq!(w(mc + 14 * 8), 0xcc);
    assert_eq!(w(mc + 15 * 8), before.rsp);
    assert_eq!(w(mc + 16 * 8), before.rip);
    assert_eq!(w(mc + 17 * 8), before.rflags);
    let fp = w(mc + 24 * 8);
    assert_eq!(fp % 64, 0);
    assert_eq!(m.get(fp, 512), image.to_vec());
    // siginfo: signo, errno, code, pid.
    let info = INFO_OFFSET as usize;
    assert_eq!(&frame[info..info + 4], &10u32.to_le_bytes());
    assert_eq!(&frame[info + 8..info + 12], &SI_USER.to_le_bytes());
    assert_eq!(&frame[info + 16..info + 20], &7i32.to_le_bytes());
    // Blocked while it runs: its own signal and sa_mask; restored after.
    assert_eq!(s.blocked, bit(SIGUSR1) | bit(SIGUSR2));
    assert_eq!(w(8 + 296), 0);
    // The handler returns: `ret` pops the restorer; rt_sigreturn.
    let (back, fpstate, xsave) = s.sigreturn(r.rsp + 8, &m).unwrap();
    assert_eq!(back, before);
    assert_eq!((fpstate, xsave), (fp, false));
    assert_eq!(s.blocked, 0);
}

#[test]
fn xsave_images_carry_linux_magic() {
    let mut s = Signals::new();
    let mut m = mem();
    set_action(&mut s, &mut m, SIGUSR1, Action { handler: 0x40_2000, ..Action::default() });
    s.raise(SIGUSR1, SI_USER, 1);
    let mut r = regs();
    let image = [0u8; 832];
    let state = VectorState { image: &image, xsave: Some(7) };
    s.deliver(&mut r, None, state, state, &mut m);
    let frame = m.get(r.rsp, FRAME_SIZE as usize);
    let fp = u64::from_le_bytes(frame[8 + 40 + 192..8 + 40 + 200].try_into().unwrap());
    let img = m.get(fp, 836);
    assert_eq!(&img[464..468], &FP_XSTATE_MAGIC1.to_le_bytes());
    assert_eq!(&img[468..472], &836u32.to_le_bytes());
    assert_eq!(&img[472..480], &7u64.to_le_bytes());
    assert_eq!(&img[832..836], &FP_XSTATE_MAGIC2.to_le_bytes());
    assert_eq!(u64::from_le_bytes(frame[8..16].try_into().unwrap()) & UC_FP_XSTATE, 1);
    assert!(s.sigreturn(r.rsp + 8, &m).unwrap().2);
}

#[test]
fn restart_rules() {
    let mut m = mem();
    let image = fx();
    for (flags, ret, want_restart) in [
        (SA_RESTART, ERESTARTSYS, true),
        (0, ERESTARTSYS, false),
        (SA_RESTART, ERESTARTNOHAND, false),
    ] {
        let mut s = Signals::new();
        set_action(
            &mut s,
            &mut m,
            SIGALRM,
            Action { handler: 0x40_2000, flags, ..Action::default() },
        );
        s.raise(SIGALRM, SI_KERNEL, 0);
        let mut r = regs();
        r.rax = ret.to_ret() as u64;
        s.deliver(&mut r, Some(SYS_READ), vs(&image), vs(&image), &mut m);
        let frame = m.get(r.rsp, FRAME_SIZE as usize);
        let saved_rax = u64::from_le_bytes(frame[48 + 13 * 8..48 + 14 * 8].try_into().unwrap());
        let saved_rip = u64::from_le_bytes(frame[48 + 16 * 8..48 + 17 * 8].try_into().unwrap());
        if want_restart {
            assert_eq!((saved_rax, saved_rip), (SYS_READ, regs().rip - 2));
        } else {
            assert_eq!((saved_rax as i64, saved_rip), (EINTR.to_ret(), regs().rip));
        }
    }
    // No handler: the call restarts.
    let mut s = Signals::new();
    let mut r = regs();
    r.rax = ERESTARTNOHAND.to_ret() as u64;
    s.deliver(&mut r, Some(SYS_PAUSE), vs(&image), vs(&image), &mut m);
    assert_eq!((r.rax, r.rip), (SYS_PAUSE, regs().rip - 2));
}

#[test]
fn nodefer_resethand_and_nesting() {
    let mut s = Signals::new();
    let mut m = mem();
    let a = Action { handler: 0x40_2000, flags: SA_NODEFER | SA_RESETHAND, ..Action::default() };
    set_action(&mut s, &mut m, SIGUSR1, a);
    set_action(&mut s, &mut m, SIGUSR2, Action { handler: 0x40_4000, ..Action::default() });
    s.raise(SIGUSR1, SI_USER, 1);
    s.raise(SIGUSR2, SI_USER, 1);
    let mut r = regs();
    let image = fx();
    s.deliver(&mut r, None, vs(&image), vs(&image), &mut m);
    // Both delivered, the higher number on top (delivered second).
    assert_eq!(r.rip, 0x40_4000);
    assert_eq!(s.blocked, bit(SIGUSR2), "NODEFER: USR1 not blocked");
    assert_eq!(s.action(SIGUSR1), Action::default(), "RESETHAND");
    // A signal whose default terminates ends the process.
    s.raise(SIGUSR1, SI_USER, 1);
    assert_eq!(
        s.deliver(&mut r, None, vs(&image), vs(&image), &mut m),
        Delivered::Terminate(SIGUSR1)
    );
}

#[test]
fn unwritable_stack_is_sigsegv() {
    let mut s = Signals::new();
    let mut m = mem();
    set_action(&mut s, &mut m, SIGUSR1, Action { handler: 0x40_2000, ..Action::default() });
    s.raise(SIGUSR1, SI_USER, 1);
    let mut r = regs();
    r.rsp = 0x1000;
    let image = fx();
    assert_eq!(
        s.deliver(&mut r, None, vs(&image), vs(&image), &mut m),
        Delivered::Terminate(SIGSEGV)
    );
}

#[test]
fn sigsuspend_restores_the_mask_through_the_frame() {
    let mut s = Signals::new();
    let mut m = mem();
    set_action(&mut s, &mut m, SIGUSR1, Action { handler: 0x40_2000, ..Action::default() });
    m.put(ACT, &bit(SIGUSR1).to_le_bytes());
    s.syscall(SYS_RT_SIGPROCMASK, [SIG_BLOCK, ACT, 0, 8, 0, 0], 1, &mut m);
    s.raise(SIGUSR1, SI_USER, 1);
    m.put(ACT, &0u64.to_le_bytes());
    let r = s.syscall(SYS_RT_SIGSUSPEND, [ACT, 8, 0, 0, 0, 0], 1, &mut m);
    assert_eq!(r, Some(Err(ERESTARTNOHAND)));
    let mut regs = regs();
    regs.rax = ERESTARTNOHAND.to_ret() as u64;
    let image = fx();
    s.deliver(&mut regs, Some(SYS_RT_SIGSUSPEND), vs(&image), vs(&image), &mut m);
    s.sigreturn(regs.rsp + 8, &m).unwrap();
    assert_eq!(s.blocked, bit(SIGUSR1), "the mask before sigsuspend");
}

#[test]
fn alarm_rounding_and_itimer() {
    let mut s = Signals::new();
    let mut m = mem();
    assert_eq!(s.syscall(SYS_ALARM, [5, 0, 0, 0, 0, 0], 1, &mut m), Some(Ok(0)));
    assert_eq!(s.syscall(SYS_ALARM, [0, 0, 0, 0, 0, 0], 1, &mut m), Some(Ok(5)));
    // setitimer: interval 0.25 s, value 1.5 s; old value read back.
    let mut tv = [0u8; 32];
    tv[8..16].copy_from_slice(&250_000u64.to_le_bytes());
    tv[16..24].copy_from_slice(&1u64.to_le_bytes());
    tv[24..32].copy_from_slice(&500_000u64.to_le_bytes());
    m.put(ACT, &tv);
    assert_eq!(s.syscall(SYS_SETITIMER, [0, ACT, 0, 0, 0, 0], 1, &mut m), Some(Ok(0)));
    assert_eq!(s.syscall(SYS_GETITIMER, [0, ACT + 64, 0, 0, 0, 0], 1, &mut m), Some(Ok(0)));
    assert_eq!(m.get(ACT + 64, 32), tv.to_vec());
    assert_eq!(s.syscall(SYS_ALARM, [0, 0, 0, 0, 0, 0], 1, &mut m), Some(Ok(2)));
    tv[8..16].copy_from_slice(&1_000_000u64.to_le_bytes());
    m.put(ACT, &tv);
    assert_eq!(s.syscall(SYS_SETITIMER, [0, ACT, 0, 0, 0, 0], 1, &mut m), Some(Err(EINVAL)));
    assert_eq!(s.syscall(SYS_SETITIMER, [1, ACT, 0, 0, 0, 0], 1, &mut m), Some(Err(EINVAL)));
}

#[test]
fn kill_targets() {
    let mut s = Signals::new();
    let mut m = mem();
    assert_eq!(s.syscall(SYS_KILL, [1, 0, 0, 0, 0, 0], 1, &mut m), Some(Ok(0)));
    assert_eq!(s.syscall(SYS_KILL, [1, 65, 0, 0, 0, 0], 1, &mut m), Some(Err(EINVAL)));
    assert_eq!(s.syscall(SYS_KILL, [99, 15, 0, 0, 0, 0], 1, &mut m), Some(Err(ESRCH)));
    assert_eq!(s.syscall(SYS_KILL, [u64::MAX, 15, 0, 0, 0, 0], 1, &mut m), Some(Err(ESRCH)));
    assert_eq!(s.syscall(SYS_TGKILL, [1, 1, 15, 0, 0, 0], 1, &mut m), Some(Ok(0)));
    assert_eq!(s.syscall(SYS_TKILL, [2, 15, 0, 0, 0, 0], 1, &mut m), Some(Err(ESRCH)));
    assert_eq!(s.next_signal(), Next::Terminate(SIGTERM));
    assert_eq!(s.syscall(SYS_KILL, [0, 10, 0, 0, 0, 0], 1, &mut m), Some(Ok(0)));
    assert_eq!(s.next_signal(), Next::Terminate(SIGUSR1));
}
