use super::*;
use crate::exec::tests::tiny_elf;
use crate::fs::{Fs, tar};
use crate::mock::*;
use crate::syscalls::dispatch;
use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec;
use core::cell::RefCell;
use proptest::prelude::*;

const SCRATCH: u64 = 0x7000_0000;
const LAYOUT: Layout = Layout {
    min_addr: 0x10000,
    user_end: 0x8000_0000_0000,
    brk_start: 0x60_0000,
    brk_limit: 0x4000_0000,
    mmap_lo: 0x10_0000_0000,
    mmap_hi: 0x7f00_0000_0000,
};
const EXEC: ExecLayout = ExecLayout {
    pie_bias: 0x5555_0000_0000,
    stack_top: 0x7f80_0000_0000,
    stack_size: 0x10_0000,
    brk_limit: 0x4000_0000,
};

/// A scripted kernel: `fork` answers as the parent (next pid) or, when
/// `as_child` is set, as the child; children end when `ended` says so.
#[derive(Clone, Default)]
struct Kernel(Rc<RefCell<KState>>);

#[derive(Default)]
struct KState {
    next_pid: i32,
    as_child: bool,
    refuse: bool,
    ended: BTreeMap<i32, u64>,
    sleeps: u32,
    /// What a sleep makes happen: (pid, status) ends.
    on_sleep: Vec<(i32, u64)>,
    /// The session's process-group table (`publish_group`).
    groups: BTreeMap<i32, i32>,
}

impl ProcHost for Kernel {
    fn fork(&mut self, shared: &[(u64, u64)]) -> SysResult<Forked> {
        assert!(shared.is_empty());
        let mut k = self.0.borrow_mut();
        if k.refuse {
            return Err(EAGAIN);
        }
        k.next_pid += 1;
        Ok(if k.as_child { Forked::Child(k.next_pid) } else { Forked::Parent(k.next_pid) })
    }
    fn child_status(&mut self, pid: i32) -> ChildPoll {
        match self.0.borrow_mut().ended.remove(&pid) {
            Some(s) => ChildPoll::Ended(s),
            None => ChildPoll::Running,
        }
    }
    fn mark(&self) -> u64 {
        0
    }
    fn sleep(&mut self, _mark: u64) -> SysResult<()> {
        let mut k = self.0.borrow_mut();
        k.sleeps += 1;
        if k.on_sleep.is_empty() {
            panic!("sleeping forever");
        }
        let (pid, s) = k.on_sleep.remove(0);
        k.ended.insert(pid, s);
        Ok(())
    }
    fn publish_group(&mut self, pid: i32, pgid: i32) {
        let mut k = self.0.borrow_mut();
        if pgid == 0 {
            k.groups.remove(&pid);
        } else {
            k.groups.insert(pid, pgid);
        }
    }
    fn group_members(&mut self, pgid: i32) -> Vec<i32> {
        self.0.borrow().groups.iter().filter(|&(_, &g)| g == pgid).map(|(&p, _)| p).collect()
    }
}

/// Records the posts to other processes (`kill`).
#[derive(Clone, Default)]
struct Posts(Rc<RefCell<Vec<(i32, u32)>>>);

impl crate::signal::SignalHost for Posts {
    fn take(&mut self) -> u64 {
        0
    }
    fn wait(&mut self) {}
    fn set_itimer(&mut self, _: u64, _: u64) -> (u64, u64) {
        (0, 0)
    }
    fn get_itimer(&self) -> (u64, u64) {
        (0, 0)
    }
    fn post(&mut self, pid: i32, sig: u32) -> SysResult<()> {
        // 900..: ended (entries not yet gone from the table); 800..900:
        // alive but not ours to signal.
        match pid {
            900.. => return Err(ESRCH),
            800..900 => return Err(EPERM),
            _ => {}
        }
        self.0.borrow_mut().push((pid, sig));
        Ok(())
    }
}

#[test]
fn group_kill_reaches_every_member_the_session_table_knows() {
    let mut t = T::new();
    let posts = Posts::default();
    t.p.signals.set_host(Box::new(posts.clone()));
    assert_eq!(t.k.0.borrow().groups.get(&100), Some(&100), "the process published itself");
    let child = t.sys(SYS_FORK, &[]);
    assert_eq!(child, 101);
    assert_eq!(t.sys(SYS_SETPGID, &[101, 101]), 0);
    assert_eq!(t.k.0.borrow().groups.get(&101), Some(&101), "the parent wrote its child's entry");
    // A grandchild in the child's group (written there by the child).
    t.k.0.borrow_mut().groups.insert(500, 101);
    assert_eq!(t.sys(SYS_KILL, &[(-101i64) as u64, 15]), 0);
    assert_eq!(*posts.0.borrow(), [(101, 15), (500, 15)], "each member once, the grandchild too");
    posts.0.borrow_mut().clear();
    // A group only the table knows; a probe posts signal 0.
    t.k.0.borrow_mut().groups.insert(600, 77);
    assert_eq!(t.sys(SYS_KILL, &[(-77i64) as u64, 0]), 0);
    assert_eq!(*posts.0.borrow(), [(600, 0)]);
    assert_eq!(t.sys(SYS_KILL, &[(-78i64) as u64, 15]), ESRCH.to_ret());
    // A group whose members the table still names but which all ended
    // (seen as a race after a group's last member was reaped) is no group;
    // one that exists but refuses is EPERM; one delivery is enough.
    t.k.0.borrow_mut().groups.insert(901, 79);
    t.k.0.borrow_mut().groups.insert(902, 79);
    assert_eq!(t.sys(SYS_KILL, &[(-79i64) as u64, 0]), ESRCH.to_ret());
    t.k.0.borrow_mut().groups.insert(801, 79);
    assert_eq!(t.sys(SYS_KILL, &[(-79i64) as u64, 15]), EPERM.to_ret());
    t.k.0.borrow_mut().groups.insert(601, 79);
    assert_eq!(t.sys(SYS_KILL, &[(-79i64) as u64, 15]), 0);
    // Exit clears the entry.
    t.p.close_all();
    assert_eq!(t.k.0.borrow().groups.get(&100), None);
}

struct T {
    p: Process<'static>,
    mem: Shared,
    host: MockHost,
    k: Kernel,
    next: u64,
}

impl T {
    fn new() -> Self {
        let elf = tiny_elf(2, None);
        let elf: &'static [u8] = Box::leak(elf.into_boxed_slice());
        let a = tar::build(&[
            (b"bin/prog", b'0', 0o755, b"", elf),
            (b"bin/noexec", b'0', 0o644, b"", elf),
            (b"bin/garbage", b'0', 0o755, b"", b"not an executable"),
            (b"bin/script", b'0', 0o755, b"", b"#!/bin/prog  -x y \nrest"),
            (b"bin/loop", b'0', 0o755, b"", b"#!/bin/loop\n"),
            (b"bin/missing", b'0', 0o755, b"", b"#!/bin/nothing\n"),
        ]);
        let a: &'static [u8] = Box::leak(a.into_boxed_slice());
        let con = MockConsole::default();
        let fs = Fs::from_initrd(a, con.boxed()).unwrap();
        let mem = Shared::default();
        mem.0.borrow_mut().ensure(SCRATCH, 0x10000);
        let host = MockHost::default();
        let mut p = Process::new(
            fs,
            LAYOUT,
            100,
            Box::new(mem.clone()),
            Box::new(MockClock::default()),
            Box::new(host.clone()),
        );
        let k = Kernel::default();
        k.0.borrow_mut().next_pid = 100;
        p.set_proc_host(Box::new(k.clone()));
        p.proc.layout = Some(EXEC);
        p.proc.exe = b"/bin/prog".to_vec();
        T { p, mem, host, k, next: SCRATCH }
    }
    fn put(&mut self, b: &[u8]) -> u64 {
        let at = self.next;
        self.mem.0.borrow_mut().put(at, b);
        self.next += (b.len() as u64 + 16) & !15;
        at
    }
    fn cstr(&mut self, s: &str) -> u64 {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(&v)
    }
    fn strv(&mut self, v: &[&str]) -> u64 {
        let mut words = Vec::new();
        for s in v {
            words.extend_from_slice(&self.cstr(s).to_le_bytes());
        }
        words.extend_from_slice(&0u64.to_le_bytes());
        self.put(&words)
    }
    fn get(&self, addr: u64, n: usize) -> Vec<u8> {
        self.mem.0.borrow().get(addr, n)
    }
    fn sys(&mut self, nr: u64, args: &[u64]) -> i64 {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        let mut m = self.mem.clone();
        dispatch(&mut self.p, nr, a, &mut m)
    }
    fn wait(&mut self, pid: i32, options: u32) -> (i64, i32) {
        let w = self.put(&[0xee; 4]);
        let r = self.sys(SYS_WAIT4, &[pid as i64 as u64, w, options as u64, 0]);
        (r, i32::from_le_bytes(self.get(w, 4).try_into().unwrap()))
    }
    fn execve(&mut self, path: &str, argv: &[&str]) -> i64 {
        let p = self.cstr(path);
        let a = self.strv(argv);
        let e = self.strv(&["K=V"]);
        self.sys(SYS_EXECVE, &[p, a, e])
    }
}

#[test]
fn clone_flag_sets() {
    let glibc_fork = CLONE_CHILD_CLEARTID | CLONE_CHILD_SETTID | SIGCHLD;
    assert_eq!(glibc_fork, 0x0120_0011);
    assert_eq!(classify_clone(glibc_fork), Ok(CloneKind::Fork));
    assert_eq!(classify_clone(SIGCHLD), Ok(CloneKind::Fork));
    assert_eq!(classify_clone(CLONE_VM | CLONE_VFORK | SIGCHLD), Ok(CloneKind::Vfork));
    // pthread_create's set, and CLONE_VM alone: threads, not implemented.
    let pthread = 0x003d_0f00;
    assert_eq!(classify_clone(pthread), Err(ENOSYS));
    assert_eq!(classify_clone(CLONE_VM | SIGCHLD), Err(ENOSYS));
    assert_eq!(classify_clone(CLONE_FILES | SIGCHLD), Err(ENOSYS));
    assert_eq!(classify_clone(CLONE_PARENT_SETTID | SIGCHLD), Err(EINVAL));
    assert_eq!(classify_clone(glibc_fork & !0xff | 15), Err(EINVAL));
}

#[test]
fn wait_status_round_trip() {
    assert_eq!(wait_exited(9), 0x900);
    assert_eq!(wait_of_env_status(env_status_of_wait(wait_exited(9))), 0x900);
    assert_eq!(wait_of_env_status(env_status_of_wait(wait_signaled(11))), 11);
    assert_eq!(wait_of_env_status(ENV_KILLED), 9);
    assert_eq!(wait_of_env_status(3), 0x300);
    assert_eq!(env_status_of_signal(false, 11), 139);
    assert_eq!(wait_of_env_status(env_status_of_signal(true, 11)), 11);
}

proptest! {
    #[test]
    fn any_exit_code_survives_the_environment(code in any::<i32>(), sig in 1i32..32) {
        let w = wait_exited(code);
        prop_assert_eq!(wait_of_env_status(env_status_of_wait(w)), w);
        prop_assert_eq!((w >> 8) & 0xff, code & 0xff);
        let s = wait_signaled(sig);
        prop_assert_eq!(wait_of_env_status(env_status_of_wait(s)), sig);
    }

    #[test]
    fn shebang_never_panics(head in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut h = b"#!".to_vec();
        h.extend(head);
        if let Some((interp, arg)) = parse_shebang(&h) {
            prop_assert!(!interp.is_empty());
            prop_assert!(arg.is_none_or(|a| !a.is_empty()));
        }
    }
}

#[test]
fn shebang_lines() {
    assert_eq!(parse_shebang(b"#!/bin/sh\n"), Some((b"/bin/sh".to_vec(), None)));
    assert_eq!(
        parse_shebang(b"#! /bin/busybox  sh -e \r\necho"),
        Some((b"/bin/busybox".to_vec(), Some(b"sh -e".to_vec())))
    );
    assert_eq!(parse_shebang(b"#!\n"), None);
    assert_eq!(parse_shebang(b"\x7fELF"), None);
}

#[test]
fn fork_in_the_parent_and_wait() {
    let mut t = T::new();
    assert_eq!(t.sys(SYS_GETPID, &[]), 100);
    assert_eq!(t.sys(SYS_GETPPID, &[]), 0);
    assert_eq!(t.wait(-1, 0).0, -(ECHILD.0 as i64));
    let c1 = t.sys(SYS_FORK, &[]);
    let c2 = t.sys(SYS_CLONE, &[0x0120_0011, 0, 0, 0, 0]);
    assert_eq!((c1, c2), (101, 102));
    // Nothing ended: WNOHANG answers 0.
    assert_eq!(t.wait(-1, WNOHANG).0, 0);
    // A pid that is not a child.
    assert_eq!(t.wait(55, 0).0, -(ECHILD.0 as i64));
    // Child 102 exits 9 while we sleep; waiting for it by pid.
    t.k.0.borrow_mut().on_sleep.push((102, env_status_of_wait(wait_exited(9))));
    assert_eq!(t.wait(102, 0), (102, 0x900));
    assert_eq!(t.p.proc.sigchld_pending, 1);
    // Killed by the kernel: SIGKILL.
    t.k.0.borrow_mut().ended.insert(101, ENV_KILLED);
    assert_eq!(t.wait(-1, 0), (101, 9));
    assert_eq!(t.wait(-1, 0).0, -(ECHILD.0 as i64));
    assert_eq!(t.k.0.borrow().sleeps, 1);
    // Bad options.
    assert_eq!(t.wait(-1, 0x100).0, -(EINVAL.0 as i64));
}

#[test]
fn fork_in_the_child() {
    let mut t = T::new();
    let tid = t.put(&[0; 4]);
    t.sys(SYS_ARCH_PRCTL, &[ARCH_SET_FS, 0x1234_0000]);
    t.k.0.borrow_mut().as_child = true;
    let r = t.sys(SYS_CLONE, &[0x0120_0011, 0x7000_8000, 0, tid, 0]);
    assert_eq!(r, 0);
    assert_eq!(t.sys(SYS_GETPID, &[]), 101);
    assert_eq!(t.sys(SYS_GETPPID, &[]), 100);
    assert_eq!(t.sys(SYS_GETPGRP, &[]), 100, "the group is inherited");
    assert_eq!(i32::from_le_bytes(t.get(tid, 4).try_into().unwrap()), 101);
    assert_eq!(t.p.take_child_stack(), Some(0x7000_8000));
    assert_eq!(*t.host.fs.borrow(), Some(0x1234_0000), "FS base set again");
    assert!(t.p.proc.forked_child);
    t.sys(SYS_EXIT_GROUP, &[3]);
    assert_eq!(t.p.env_exit_status(), Some(env_status_of_wait(0x300)));
}

#[test]
fn threads_are_refused_with_a_report() {
    let mut t = T::new();
    assert_eq!(t.sys(SYS_CLONE, &[0x003d_0f00, 0x7000_8000]), -(ENOSYS.0 as i64));
    assert!(t.host.reports.borrow().iter().any(|r| r.contains("not threads")));
    t.k.0.borrow_mut().refuse = true;
    assert_eq!(t.sys(SYS_FORK, &[]), -(EAGAIN.0 as i64));
    assert_eq!(t.p.proc.child_count(), 0);
}

#[test]
fn process_groups() {
    let mut t = T::new();
    let c = t.sys(SYS_FORK, &[]) as u64;
    assert_eq!(t.sys(SYS_GETPGID, &[c]), 100);
    assert_eq!(t.sys(SYS_SETPGID, &[c, 0]), 0);
    assert_eq!(t.sys(SYS_GETPGID, &[c]), c as i64);
    assert_eq!(t.sys(SYS_GETPGID, &[999]), -(ESRCH.0 as i64));
    assert_eq!(t.sys(SYS_SETPGID, &[999, 0]), -(ESRCH.0 as i64));
    assert_eq!(t.sys(SYS_SETPGID, &[0, 4242]), -(EPERM.0 as i64));
    assert_eq!(t.sys(SYS_SETPGID, &[0, (-1i64) as u64]), -(EINVAL.0 as i64));
    // The first process leads its session: it cannot move, nor setsid.
    assert_eq!(t.sys(SYS_SETSID, &[]), -(EPERM.0 as i64));
    // wait4(0) waits for our group only; -pgid for the child's.
    t.k.0.borrow_mut().ended.insert(c as i32, env_status_of_wait(0));
    assert_eq!(t.wait(0, WNOHANG).0, -(ECHILD.0 as i64));
    assert_eq!(t.wait(-(c as i32), 0), (c as i64, 0));
}

#[test]
fn execve_replaces_the_image() {
    let mut t = T::new();
    let fd = t.sys(SYS_DUP3, &[1, 5, O_CLOEXEC as u64]);
    assert_eq!(fd, 5);
    let old = t.sys(SYS_MMAP, &[0, 0x2000, 3, 0x22, u64::MAX, 0]) as u64;
    assert!(t.mem.0.borrow().prot(old).is_some());
    assert_eq!(t.execve("/bin/prog", &["prog", "a"]), 0);
    let e = t.p.take_exec().expect("an entry");
    assert_eq!(e.rip, 0x400100);
    assert!(t.mem.0.borrow().prot(old).is_none(), "the old mapping is gone");
    assert_eq!(t.sys(SYS_FCNTL, &[5, F_GETFD as u64]), -(EBADF.0 as i64), "close-on-exec");
    assert_eq!(t.sys(SYS_FCNTL, &[1, F_GETFD as u64]), 0);
    let st = t.get(e.rsp, (EXEC.stack_top - e.rsp) as usize);
    let info = exec::parse_stack(&st, e.rsp).unwrap();
    assert_eq!(info.argv, vec![b"prog".to_vec(), b"a".to_vec()]);
    assert_eq!(info.envp, vec![b"K=V".to_vec()]);
    assert_eq!(t.sys(SYS_BRK, &[0]), 0x404000, "the break starts after the new image");
}

#[test]
fn execve_scripts_and_errors() {
    let mut t = T::new();
    assert_eq!(t.execve("/bin/script", &["script", "arg"]), 0);
    let e = t.p.take_exec().unwrap();
    let info = exec::parse_stack(&t.get(e.rsp, (EXEC.stack_top - e.rsp) as usize), e.rsp).unwrap();
    let want: Vec<Vec<u8>> =
        [&b"/bin/prog"[..], b"-x y", b"/bin/script", b"arg"].iter().map(|s| s.to_vec()).collect();
    assert_eq!(info.argv, want);
    assert_eq!(t.p.proc.exe, b"/bin/prog");

    let mut t = T::new();
    assert_eq!(t.execve("/bin/nope", &["nope"]), -(ENOENT.0 as i64));
    assert_eq!(t.execve("/bin/noexec", &["x"]), -(EACCES.0 as i64));
    assert_eq!(t.execve("/bin", &["x"]), -(EACCES.0 as i64));
    assert_eq!(t.execve("/bin/garbage", &["x"]), -(ENOEXEC.0 as i64));
    assert_eq!(t.execve("/bin/loop", &["x"]), -(ELOOP.0 as i64));
    assert_eq!(t.execve("/bin/missing", &["x"]), -(ENOENT.0 as i64));
    assert_eq!(t.execve("", &["x"]), -(ENOENT.0 as i64));
    let p = t.cstr("/bin/prog");
    assert_eq!(t.sys(SYS_EXECVE, &[p, 8, 0]), -(EFAULT.0 as i64));
    assert!(t.p.take_exec().is_none());
    assert!(t.p.exit_status().is_none(), "a failed execve leaves the process as it was");
    // /proc/self/exe runs the current executable, and reads as its path.
    let buf = t.put(&[0; 64]);
    let path = t.cstr("/proc/self/exe");
    assert_eq!(t.sys(SYS_READLINK, &[path, buf, 64]), 9);
    assert_eq!(t.get(buf, 9), b"/bin/prog");
    assert_eq!(t.execve("/proc/self/exe", &["sh"]), 0);
}

#[test]
fn execve_argument_limits() {
    let mut t = T::new();
    t.mem.0.borrow_mut().ensure(0x100_0000, 0x50000);
    let big = vec![b'a'; ARG_BYTES_MAX + 1];
    let mut s = big.clone();
    s.push(0);
    t.mem.0.borrow_mut().put(0x100_0000, &s);
    let argv = t.put(&[0x100_0000u64.to_le_bytes(), 0u64.to_le_bytes()].concat());
    let p = t.cstr("/bin/prog");
    assert_eq!(t.sys(SYS_EXECVE, &[p, argv, 0]), -(E2BIG.0 as i64));
}

#[test]
fn umask_chmod_utimensat() {
    let mut t = T::new();
    assert_eq!(t.sys(SYS_UMASK, &[0o077]), 0o022);
    assert_eq!(t.sys(SYS_UMASK, &[0o022]), 0o077);
    t.sys(SYS_UMASK, &[0o077]);
    let path = t.cstr("/tmp/f");
    let fd = t.sys(SYS_OPEN, &[path, (O_CREAT | O_WRONLY) as u64, 0o666]);
    assert!(fd >= 0);
    let st = t.put(&[0; 144]);
    t.sys(SYS_STAT, &[path, st]);
    let mode = u32::from_le_bytes(t.get(st + 24, 4).try_into().unwrap());
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(t.sys(SYS_CHMOD, &[path, 0o4751]), 0);
    t.sys(SYS_STAT, &[path, st]);
    let mode = u32::from_le_bytes(t.get(st + 24, 4).try_into().unwrap());
    assert_eq!(mode & 0o7777, 0o4751);
    assert_eq!(t.sys(SYS_FCHMOD, &[fd as u64, 0o644]), 0);
    let times = t.put(
        &[[0u64, UTIME_OMIT as u64], [1000u64, 5]]
            .concat()
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    assert_eq!(t.sys(SYS_UTIMENSAT, &[AT_FDCWD as u64, path, times, 0]), 0);
    t.sys(SYS_STAT, &[path, st]);
    let mtime = u64::from_le_bytes(t.get(st + 88, 8).try_into().unwrap());
    assert_eq!(mtime, 1000);
    let bad = t.put(
        &[[0u64, 2_000_000_000u64], [0, 0]]
            .concat()
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    assert_eq!(t.sys(SYS_UTIMENSAT, &[AT_FDCWD as u64, path, bad, 0]), -(EINVAL.0 as i64));
    let nope = t.cstr("/tmp/nope");
    assert_eq!(t.sys(SYS_CHMOD, &[nope, 0o644]), -(ENOENT.0 as i64));
}
