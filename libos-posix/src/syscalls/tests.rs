use super::*;
use crate::fs::tar;
use crate::mock::*;
use alloc::string::String;

const SCRATCH: u64 = 0x7000_0000;
const LAYOUT: Layout = Layout {
    min_addr: 0x10000,
    user_end: 0x8000_0000_0000,
    brk_start: 0x60_0000,
    brk_limit: 0x4000_0000,
    mmap_lo: 0x10_0000_0000,
    mmap_hi: 0x7f00_0000_0000,
};

struct T {
    p: Process<'static>,
    mem: Shared,
    con: MockConsole,
    host: MockHost,
    clock: MockClock,
    next: u64,
}

/// A file server's tree shared by test processes (the transport is a call).
#[derive(Clone)]
struct Direct(Rc<RefCell<crate::fs::remote::Server<'static>>>);

impl crate::fs::remote::Transport for Direct {
    fn call(&mut self, req: &[u8]) -> SysResult<Vec<u8>> {
        Ok(self.0.borrow_mut().serve(req))
    }
}

fn archive() -> &'static [u8] {
    let a = tar::build(&[
        (b"etc/motd", b'0', 0o644, b"", b"hello, world\n"),
        (b"bin/busybox", b'0', 0o755, b"", b"BB"),
        (b"bin/sh", b'2', 0o777, b"busybox", b""),
    ]);
    Box::leak(a.into_boxed_slice())
}

/// A server's tree of [`archive`].
fn server() -> Direct {
    let fs = Fs::from_initrd(archive(), MockConsole::default().boxed()).unwrap();
    Direct(Rc::new(RefCell::new(crate::fs::remote::Server::new(fs))))
}

impl T {
    fn new() -> Self {
        Self::with(None)
    }
    /// A process whose names live in `server`'s tree.
    fn client(server: &Direct) -> Self {
        Self::with(Some(server.clone()))
    }
    fn with(server: Option<Direct>) -> Self {
        let a = archive();
        let con = MockConsole::default();
        let mut fs = Fs::from_initrd(a, con.boxed()).unwrap();
        if let Some(s) = server {
            fs.set_remote(Box::new(s));
        }
        let mem = Shared::default();
        mem.0.borrow_mut().ensure(SCRATCH, 0x10000);
        let host = MockHost::default();
        let clock = MockClock::default();
        let p = Process::new(
            fs,
            LAYOUT,
            1,
            Box::new(mem.clone()),
            Box::new(clock.clone()),
            Box::new(host.clone()),
        );
        T { p, mem, con, host, clock, next: SCRATCH }
    }
    /// Copies bytes into scratch memory; returns their address.
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
    fn buf(&mut self, n: usize) -> u64 {
        self.put(&vec![0; n])
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
    fn open(&mut self, path: &str, flags: u32, mode: u32) -> i64 {
        let s = self.cstr(path);
        self.sys(SYS_OPENAT, &[AT_FDCWD as u64, s, flags as u64, mode as u64])
    }
    fn write(&mut self, fd: i64, data: &[u8]) -> i64 {
        let b = self.put(data);
        self.sys(SYS_WRITE, &[fd as u64, b, data.len() as u64])
    }
    fn read(&mut self, fd: i64, n: usize) -> Result<Vec<u8>, i64> {
        let b = self.buf(n);
        let r = self.sys(SYS_READ, &[fd as u64, b, n as u64]);
        if r < 0 { Err(r) } else { Ok(self.get(b, r as usize)) }
    }
    fn stat(&mut self, path: &str, flags: u32) -> Result<Vec<u8>, i64> {
        let s = self.cstr(path);
        let b = self.buf(144);
        let r = self.sys(SYS_NEWFSTATAT, &[AT_FDCWD as u64, s, b, flags as u64]);
        if r < 0 { Err(r) } else { Ok(self.get(b, 144)) }
    }
}

fn e(x: Errno) -> i64 {
    x.to_ret()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn hello_on_the_console() {
    let mut t = T::new();
    assert_eq!(t.write(1, b"hi\n"), 3);
    let iov_data = [t.put(b"a"), t.put(b"bc")];
    let mut iov = Vec::new();
    iov.extend_from_slice(&iov_data[0].to_le_bytes());
    iov.extend_from_slice(&1u64.to_le_bytes());
    iov.extend_from_slice(&iov_data[1].to_le_bytes());
    iov.extend_from_slice(&2u64.to_le_bytes());
    let iov = t.put(&iov);
    assert_eq!(t.sys(SYS_WRITEV, &[2, iov, 2]), 3);
    assert_eq!(t.sys(SYS_WRITEV, &[2, iov, 1025]), e(EINVAL));
    assert_eq!(t.con.output(), "hi\nabc");
    assert_eq!(t.sys(SYS_LSEEK, &[1, 0, 0]), e(ESPIPE));
    assert_eq!(t.sys(SYS_PWRITE64, &[1, iov_data[0], 1, 0]), e(ESPIPE));
    // Bad buffer: EFAULT, nothing written.
    assert_eq!(t.sys(SYS_WRITE, &[1, 0x1000, 4]), e(EFAULT));
    assert_eq!(t.sys(SYS_WRITE, &[7, iov_data[0], 1]), e(EBADF));
    t.con.input.borrow_mut().extend_from_slice(b"typed");
    assert_eq!(t.read(0, 100), Ok(b"typed".to_vec()));
}

#[test]
fn file_io() {
    file_io_on(T::new());
}

/// The same through a file server ([`crate::fs::remote`]).
#[test]
fn file_io_remote() {
    file_io_on(T::client(&server()));
}

fn file_io_on(mut t: T) {
    let fd = t.open("/tmp/f", O_CREAT | O_RDWR | O_EXCL, 0o644);
    assert_eq!(fd, 3);
    assert_eq!(t.open("/tmp/f", O_CREAT | O_RDWR | O_EXCL, 0o644), e(EEXIST));
    assert_eq!(t.write(fd, b"0123456789"), 10);
    assert_eq!(t.sys(SYS_LSEEK, &[fd as u64, 2, SEEK_SET as u64]), 2);
    assert_eq!(t.read(fd, 3), Ok(b"234".to_vec()));
    assert_eq!(t.sys(SYS_LSEEK, &[fd as u64, (-1i64) as u64, SEEK_CUR as u64]), 4);
    assert_eq!(t.sys(SYS_LSEEK, &[fd as u64, (-20i64) as u64, SEEK_END as u64]), e(EINVAL));
    assert_eq!(t.sys(SYS_LSEEK, &[fd as u64, 0, 9]), e(EINVAL));
    assert_eq!(t.sys(SYS_LSEEK, &[fd as u64, 3, SEEK_HOLE as u64]), 10);
    assert_eq!(t.sys(SYS_LSEEK, &[fd as u64, 10, SEEK_DATA as u64]), e(ENXIO));
    // pread/pwrite leave the offset alone.
    let b = t.buf(4);
    t.sys(SYS_LSEEK, &[fd as u64, 1, SEEK_SET as u64]);
    assert_eq!(t.sys(SYS_PREAD64, &[fd as u64, b, 4, 6]), 4);
    assert_eq!(t.get(b, 4), b"6789");
    let x = t.put(b"XY");
    assert_eq!(t.sys(SYS_PWRITE64, &[fd as u64, x, 2, 12]), 2);
    assert_eq!(t.sys(SYS_PREAD64, &[fd as u64, b, 4, (-1i64) as u64]), e(EINVAL));
    assert_eq!(t.read(fd, 100), Ok(b"123456789\0\0XY".to_vec()));
    // dup shares the offset; dup2 onto stdout.
    let d = t.sys(SYS_DUP, &[fd as u64]);
    assert_eq!(d, 4);
    t.sys(SYS_LSEEK, &[fd as u64, 0, SEEK_SET as u64]);
    assert_eq!(t.read(d, 2), Ok(b"01".to_vec()));
    assert_eq!(t.read(fd, 2), Ok(b"23".to_vec()));
    assert_eq!(t.sys(SYS_DUP2, &[fd as u64, 1]), 1);
    assert_eq!(t.write(1, b"!"), 1);
    assert_eq!(t.con.output(), "");
    assert_eq!(t.sys(SYS_DUP3, &[fd as u64, fd as u64, 0]), e(EINVAL));
    assert_eq!(t.sys(SYS_DUP3, &[fd as u64, 9, O_CLOEXEC as u64]), 9);
    assert_eq!(t.sys(SYS_FCNTL, &[9, F_GETFD as u64]), 1);
    // Read-only descriptors refuse writes, and vice versa.
    let ro = t.open("/tmp/f", O_RDONLY, 0);
    assert_eq!(t.write(ro, b"z"), e(EBADF));
    let wo = t.open("/tmp/f", O_WRONLY | O_APPEND, 0);
    assert_eq!(t.read(wo, 1), Err(e(EBADF)));
    assert_eq!(t.write(wo, b"END"), 3);
    assert_eq!(t.sys(SYS_PWRITE64, &[wo as u64, x, 2, 0]), 2, "pwrite appends under O_APPEND");
    let st = t.stat("/tmp/f", 0).unwrap();
    assert_eq!(u64_at(&st, 48), 14 + 3 + 2);
    assert_eq!(u32::from_le_bytes(st[24..28].try_into().unwrap()), S_IFREG | 0o644);
    assert_eq!(
        t.sys(SYS_FCNTL, &[wo as u64, F_GETFL as u64]),
        (O_WRONLY | O_APPEND | O_LARGEFILE) as i64
    );
    assert_eq!(t.sys(SYS_FCNTL, &[wo as u64, F_SETFL as u64, O_NONBLOCK as u64]), 0);
    assert_eq!(
        t.sys(SYS_FCNTL, &[wo as u64, F_GETFL as u64]),
        (O_WRONLY | O_NONBLOCK | O_LARGEFILE) as i64
    );
    assert_eq!(t.sys(SYS_FCNTL, &[wo as u64, F_DUPFD as u64, 20]), 20);
    assert_eq!(t.sys(SYS_FCNTL, &[wo as u64, 9999]), e(EINVAL));
    assert_eq!(t.sys(SYS_CLOSE, &[wo as u64]), 0);
    assert_eq!(t.sys(SYS_CLOSE, &[wo as u64]), e(EBADF));
    assert_eq!(t.open("/nope/x", O_CREAT | O_WRONLY, 0o644), e(ENOENT));
    assert_eq!(t.open("/etc", O_WRONLY, 0), e(EISDIR));
    let etc = t.open("/etc", O_RDONLY, 0);
    assert_eq!(t.read(etc, 4), Err(e(EISDIR)));
    let zero = t.open("/dev/zero", O_RDONLY, 0);
    assert_eq!(t.read(zero, 4), Ok(vec![0; 4]));
    let null = t.open("/dev/null", O_RDWR, 0);
    assert_eq!(t.sys(SYS_LSEEK, &[null as u64, 100, SEEK_SET as u64]), 0);
    assert_eq!(t.sys(SYS_FTRUNCATE, &[fd as u64, 3]), 0);
    assert_eq!(t.sys(SYS_FTRUNCATE, &[ro as u64, 3]), e(EINVAL));
}

#[test]
fn emfile_and_fd_release() {
    let mut t = T::new();
    let n0 = t.p.fs.inode_count();
    let mut last = 0;
    for _ in 3..1024 {
        last = t.open("/etc/motd", O_RDONLY, 0);
    }
    assert_eq!(last, 1023);
    assert_eq!(t.open("/etc/motd", O_RDONLY, 0), e(EMFILE));
    assert_eq!(t.open("/tmp/new", O_CREAT | O_RDONLY, 0), e(EMFILE));
    assert_eq!(t.stat("/tmp/new", 0), Err(e(ENOENT)), "EMFILE before creating");
    assert_eq!(t.sys(SYS_DUP, &[0]), e(EMFILE));
    // An unlinked open file disappears when its last descriptor closes.
    for fd in 3..1024 {
        t.sys(SYS_CLOSE, &[fd]);
    }
    let fd = t.open("/tmp/x", O_CREAT | O_RDWR, 0o600);
    let d = t.sys(SYS_DUP, &[fd as u64]);
    let s = t.cstr("/tmp/x");
    assert_eq!(t.sys(SYS_UNLINK, &[s]), 0);
    assert_eq!(t.write(fd, b"still here"), 10);
    t.sys(SYS_CLOSE, &[fd as u64]);
    assert_eq!(t.p.fs.inode_count(), n0 + 1);
    t.sys(SYS_CLOSE, &[d as u64]);
    assert_eq!(t.p.fs.inode_count(), n0);
}

#[test]
fn names_and_directories() {
    names_and_directories_on(T::new());
}

/// The same through a file server ([`crate::fs::remote`]).
#[test]
fn names_and_directories_remote() {
    names_and_directories_on(T::client(&server()));
}

fn names_and_directories_on(mut t: T) {
    let d = t.cstr("/tmp/d");
    assert_eq!(t.sys(SYS_MKDIR, &[d, 0o755]), 0);
    assert_eq!(t.sys(SYS_MKDIR, &[d, 0o755]), e(EEXIST));
    assert_eq!(t.sys(SYS_CHDIR, &[d]), 0);
    let b = t.buf(64);
    assert_eq!(t.sys(SYS_GETCWD, &[b, 64]), 7);
    assert_eq!(t.get(b, 7), b"/tmp/d\0");
    assert_eq!(t.sys(SYS_GETCWD, &[b, 6]), e(ERANGE));
    assert_eq!(t.open("rel", O_CREAT | O_WRONLY, 0o644), 3);
    assert_eq!(t.sys(SYS_RMDIR, &[d]), e(ENOTEMPTY));
    let (rel, rel2) = (t.cstr("rel"), t.cstr("../rel2"));
    assert_eq!(t.sys(SYS_RENAME, &[rel, rel2]), 0);
    assert!(t.stat("/tmp/rel2", 0).is_ok());
    assert_eq!(t.sys(SYS_RMDIR, &[d]), 0);
    assert_eq!(t.sys(SYS_GETCWD, &[b, 64]), e(ENOENT));
    let dot = t.cstr("..");
    assert_eq!(t.sys(SYS_CHDIR, &[dot]), 0);
    assert_eq!(t.sys(SYS_GETCWD, &[b, 64]), 5);
    let motd = t.cstr("/etc/motd");
    assert_eq!(t.sys(SYS_CHDIR, &[motd]), e(ENOTDIR));
    let tmp = t.cstr("/tmp");
    assert_eq!(t.sys(SYS_UNLINK, &[tmp]), e(EISDIR));
    assert_eq!(t.sys(SYS_ACCESS, &[motd, X_OK as u64]), e(EACCES));
    assert_eq!(t.sys(SYS_ACCESS, &[motd, (R_OK | W_OK) as u64]), 0);
    let shx = t.cstr("/bin/sh");
    assert_eq!(t.sys(SYS_ACCESS, &[shx, X_OK as u64]), 0);
    // readlink, lstat vs stat, AT_EMPTY_PATH.
    let sh = t.cstr("/bin/sh");
    assert_eq!(t.sys(SYS_READLINK, &[sh, b, 64]), 7);
    assert_eq!(t.get(b, 7), b"busybox");
    assert_eq!(t.sys(SYS_READLINK, &[sh, b, 3]), 3);
    assert_eq!(t.sys(SYS_READLINK, &[motd, b, 64]), e(EINVAL));
    let lst = t.stat("/bin/sh", AT_SYMLINK_NOFOLLOW).unwrap();
    assert_eq!(u32::from_le_bytes(lst[24..28].try_into().unwrap()) & S_IFMT, S_IFLNK);
    let st = t.stat("/bin/sh", 0).unwrap();
    assert_eq!(u64_at(&st, 48), 2);
    let fd = t.open("/etc/motd", O_RDONLY, 0);
    let empty = t.cstr("");
    let sb = t.buf(144);
    assert_eq!(t.sys(SYS_NEWFSTATAT, &[fd as u64, empty, sb, AT_EMPTY_PATH as u64]), 0);
    assert_eq!(u64_at(&t.get(sb, 144), 48), 13);
    assert_eq!(t.sys(SYS_NEWFSTATAT, &[fd as u64, empty, sb, 0]), e(ENOENT));
    let xx = t.cstr("x");
    assert_eq!(t.sys(SYS_NEWFSTATAT, &[fd as u64, xx, sb, 0]), e(ENOTDIR));
    assert_eq!(t.sys(SYS_NEWFSTATAT, &[AT_FDCWD as u64, motd, sb, 0x8000]), e(EINVAL));
    // openat relative to a directory descriptor.
    let etc = t.open("/etc", O_RDONLY | O_DIRECTORY, 0);
    let m = t.cstr("motd");
    assert!(t.sys(SYS_OPENAT, &[etc as u64, m, 0, 0]) >= 0);
    assert_eq!(t.sys(SYS_UNLINKAT, &[etc as u64, m, AT_REMOVEDIR as u64]), e(ENOTDIR));
    assert_eq!(t.sys(SYS_UNLINKAT, &[etc as u64, m, 0]), 0);
}

#[test]
fn getdents64_in_small_buffers() {
    getdents64_in_small_buffers_on(T::new());
}

/// The same through a file server ([`crate::fs::remote`]).
#[test]
fn getdents64_in_small_buffers_remote() {
    getdents64_in_small_buffers_on(T::client(&server()));
}

fn getdents64_in_small_buffers_on(mut t: T) {
    for i in 0..20 {
        t.open(&alloc::format!("/tmp/file{i:02}"), O_CREAT | O_WRONLY, 0o644);
    }
    let fd = t.open("/tmp", O_RDONLY | O_DIRECTORY, 0);
    let b = t.buf(100);
    let mut names: Vec<String> = Vec::new();
    loop {
        let n = t.sys(SYS_GETDENTS64, &[fd as u64, b, 100]);
        assert!(n >= 0);
        if n == 0 {
            break;
        }
        let raw = t.get(b, n as usize);
        let mut at = 0;
        while at < raw.len() {
            let reclen = u16::from_le_bytes([raw[at + 16], raw[at + 17]]) as usize;
            assert_eq!(reclen % 8, 0);
            let name = &raw[at + 19..at + reclen];
            names.push(
                String::from_utf8_lossy(&name[..name.iter().position(|&c| c == 0).unwrap()]).into(),
            );
            at += reclen;
        }
    }
    assert_eq!(names.len(), 22);
    assert_eq!(names[0], ".");
    assert_eq!(names[2], "file00");
    assert_eq!(t.sys(SYS_GETDENTS64, &[fd as u64, b, 10]), 0, "at the end");
    t.sys(SYS_LSEEK, &[fd as u64, 0, SEEK_SET as u64]);
    assert_eq!(t.sys(SYS_GETDENTS64, &[fd as u64, b, 10]), e(EINVAL), "buffer too small");
    assert_eq!(t.sys(SYS_LSEEK, &[fd as u64, 0, SEEK_END as u64]), e(EINVAL));
    assert_eq!(t.sys(SYS_GETDENTS64, &[1, b, 100]), e(ENOTDIR));
}

#[test]
fn memory_calls() {
    let mut t = T::new();
    assert_eq!(t.sys(SYS_BRK, &[0]), 0x60_0000);
    assert_eq!(t.sys(SYS_BRK, &[0x60_5000]), 0x60_5000);
    t.mem.0.borrow_mut().write(0x60_4fff, b"x").unwrap();
    let anon = (MAP_PRIVATE | MAP_ANONYMOUS) as u64;
    let rw = (PROT_READ | PROT_WRITE) as u64;
    let a = t.sys(SYS_MMAP, &[0, 8 << 20, rw, anon, u64::MAX, 0]);
    assert!(a > 0 && (a as u64).is_multiple_of(PAGE_SIZE));
    let a = a as u64;
    t.mem.0.borrow_mut().write(a + (8 << 20) - 1, b"y").unwrap();
    assert_eq!(t.sys(SYS_MPROTECT, &[a, 4096, PROT_READ as u64]), 0);
    assert_eq!(t.mem.0.borrow_mut().write(a, b"z"), Err(EFAULT));
    assert_eq!(t.sys(SYS_MUNMAP, &[a, 8 << 20]), 0);
    assert_eq!(t.sys(SYS_MPROTECT, &[a, 4096, PROT_READ as u64]), e(ENOMEM));
    assert_eq!(t.sys(SYS_MMAP, &[0, 0, rw, anon, u64::MAX, 0]), e(EINVAL));
    assert_eq!(t.sys(SYS_MMAP, &[0, 4096, rw, MAP_ANONYMOUS as u64, u64::MAX, 0]), e(EINVAL));
    // A private file mapping is a copy of the file.
    let fd = t.open("/etc/motd", O_RDONLY, 0);
    let f = t.sys(SYS_MMAP, &[0, 4096, PROT_READ as u64, MAP_PRIVATE as u64, fd as u64, 0]) as u64;
    assert_eq!(t.get(f, 14), b"hello, world\n\0");
    assert_eq!(t.mem.0.borrow().prot(f), Some(PROT_READ));
    assert_eq!(t.sys(SYS_MMAP, &[0, 4096, rw, MAP_SHARED as u64, fd as u64, 0]), e(EACCES));
    assert_eq!(t.sys(SYS_MMAP, &[0, 4096, PROT_READ as u64, MAP_PRIVATE as u64, 99, 0]), e(EBADF));
    assert_eq!(
        t.sys(SYS_MMAP, &[0, 4096, PROT_READ as u64, MAP_PRIVATE as u64, fd as u64, 1]),
        e(EINVAL)
    );
    // MADV_DONTNEED zeroes.
    let g = t.sys(SYS_MMAP, &[0, 4096, rw, anon, u64::MAX, 0]) as u64;
    t.mem.0.borrow_mut().write(g, b"q").unwrap();
    assert_eq!(t.sys(SYS_MADVISE, &[g, 4096, 4]), 0);
    assert_eq!(t.get(g, 1), [0]);
}

#[test]
fn clocks_identity_and_misc() {
    let mut t = T::new();
    let ts = t.buf(16);
    *t.clock.now.borrow_mut() = 5_000_000_123;
    assert_eq!(t.sys(SYS_CLOCK_GETTIME, &[CLOCK_MONOTONIC as u64, ts]), 0);
    assert_eq!(
        Timespec::decode(&t.get(ts, 16).try_into().unwrap()),
        Timespec { sec: 5, nsec: 123 }
    );
    assert_eq!(t.sys(SYS_CLOCK_GETTIME, &[99, ts]), e(EINVAL));
    assert_eq!(t.sys(SYS_CLOCK_GETRES, &[CLOCK_REALTIME as u64, 0]), 0);
    let req = t.put(&Timespec { sec: 1, nsec: 500 }.encode());
    assert_eq!(t.sys(SYS_NANOSLEEP, &[req, 0]), 0);
    assert_eq!(*t.clock.now.borrow(), 6_000_000_623);
    let abs = t.put(&Timespec { sec: 7, nsec: 0 }.encode());
    assert_eq!(
        t.sys(SYS_CLOCK_NANOSLEEP, &[CLOCK_MONOTONIC as u64, TIMER_ABSTIME as u64, abs, 0]),
        0
    );
    assert_eq!(*t.clock.now.borrow(), 7_000_000_000);
    let bad = t.put(&Timespec { sec: 0, nsec: 1_000_000_000 }.encode());
    assert_eq!(t.sys(SYS_NANOSLEEP, &[bad, 0]), e(EINVAL));
    // arch_prctl, set_tid_address, uname, getrandom, ioctl.
    assert_eq!(t.sys(SYS_ARCH_PRCTL, &[ARCH_SET_FS, 0x7000_1234]), 0);
    assert_eq!(*t.host.fs.borrow(), Some(0x7000_1234));
    let b = t.buf(8);
    assert_eq!(t.sys(SYS_ARCH_PRCTL, &[ARCH_GET_FS, b]), 0);
    assert_eq!(u64_at(&t.get(b, 8), 0), 0x7000_1234);
    assert_eq!(t.sys(SYS_ARCH_PRCTL, &[ARCH_SET_FS, 1 << 63]), e(EPERM));
    assert_eq!(t.sys(SYS_SET_TID_ADDRESS, &[b]), 1);
    assert_eq!(t.sys(SYS_GETPID, &[]), 1);
    let u = t.buf(390);
    assert_eq!(t.sys(SYS_UNAME, &[u]), 0);
    assert_eq!(&t.get(u, 6), b"Linux\0");
    assert_eq!(&t.get(u + 4 * 65, 7), b"x86_64\0");
    assert_eq!(t.sys(SYS_GETRANDOM, &[u, 16, 0]), 16);
    assert_eq!(t.sys(SYS_GETRANDOM, &[u, 16, 0x80]), e(EINVAL));
    let tio = t.buf(36);
    assert_eq!(t.sys(SYS_IOCTL, &[1, TCGETS as u64, tio]), 0);
    assert_eq!(t.sys(SYS_IOCTL, &[1, TIOCGWINSZ as u64, tio]), 0);
    assert_eq!(t.get(tio, 4), [24, 0, 80, 0]);
    let fd = t.open("/etc/motd", O_RDONLY, 0);
    assert_eq!(t.sys(SYS_IOCTL, &[fd as u64, TCGETS as u64, tio]), e(ENOTTY));
    assert_eq!(t.sys(SYS_IOCTL, &[77, TCGETS as u64, tio]), e(EBADF));
    // Unimplemented: ENOSYS, reported once by name.
    assert_eq!(t.sys(SYS_MREMAP, &[]), e(ENOSYS));
    assert_eq!(t.sys(SYS_MREMAP, &[]), e(ENOSYS));
    assert_eq!(t.sys(9999, &[]), e(ENOSYS));
    assert_eq!(
        *t.host.reports.borrow(),
        [
            "libos-posix: unimplemented syscall mremap (25)",
            "libos-posix: unimplemented syscall ? (9999)"
        ]
    );
    assert_eq!(t.p.exit_status(), None);
    assert_eq!(t.sys(SYS_EXIT_GROUP, &[3]), 0);
    assert_eq!(t.p.exit_status(), Some(3));
}

#[test]
fn paths_from_user_memory() {
    let mut t = T::new();
    // A path ending exactly at the end of the mapping reads without fault.
    let end = SCRATCH + 0x10000;
    t.mem.0.borrow_mut().write(end - 10, b"/etc/motd\0").unwrap();
    assert_eq!(t.sys(SYS_OPEN, &[end - 10, 0, 0]), 3);
    t.mem.0.borrow_mut().write(end - 3, b"/et").unwrap();
    assert_eq!(t.sys(SYS_OPEN, &[end - 3, 0, 0]), e(EFAULT));
    assert_eq!(t.sys(SYS_OPEN, &[0, 0, 0]), e(EFAULT));
    let long = t.put(&[b'a'; 5000]);
    assert_eq!(t.sys(SYS_OPEN, &[long, 0, 0]), e(ENAMETOOLONG));
}

#[test]
fn load_maps_the_image_and_the_stack() {
    let mut t = T::new();
    let image = crate::exec::tests::tiny_elf(2, None);
    let mut m = t.mem.clone();
    let entry = t
        .p
        .load(&image, 0, &[b"prog", b"arg"], &[b"K=V"], &[1; 16], 0x7fff_0000_0000, 0x10000, &mut m)
        .unwrap();
    assert_eq!(entry.rip, 0x400100);
    assert_eq!(entry.rsp % 16, 0);
    let mm = t.mem.0.borrow();
    assert_eq!(mm.prot(0x400000), Some(PROT_READ | PROT_EXEC));
    assert_eq!(mm.prot(0x402000), Some(PROT_READ | PROT_WRITE));
    assert_eq!(mm.get(0x400000, 4), b"\x7fELF");
    assert_eq!(mm.get(0x401010, 4), [0; 4], "bss is zero");
    let stack = mm.get(entry.rsp, (0x7fff_0000_0000 - entry.rsp) as usize);
    let info = crate::exec::parse_stack(&stack, entry.rsp).unwrap();
    assert_eq!(info.argv, [b"prog".to_vec(), b"arg".to_vec()]);
    assert_eq!(info.aux(AT_PHDR), Some(0x400040));
}

/// A memory that takes images without a copy (`map_image`, lazy in the
/// runtime) gets each segment whole, with its final rights and bytes, and
/// the loader neither writes nor re-protects them; the stack is mapped as
/// before and the result is the same program.
#[test]
fn load_hands_segments_to_map_image() {
    let mut t = T::new();
    t.mem.0.borrow_mut().image_maps = true;
    let image = crate::exec::tests::tiny_elf(2, None);
    let mut m = t.mem.clone();
    let entry =
        t.p.load(&image, 0, &[b"prog"], &[], &[1; 16], 0x7fff_0000_0000, 0x10000, &mut m).unwrap();
    assert_eq!(entry.rip, 0x400100);
    let mm = t.mem.0.borrow();
    let images: Vec<_> = mm.calls.iter().filter(|c| c.0 == "map_image").collect();
    assert_eq!(images.len(), 2, "{:?}", mm.calls);
    assert!(mm.calls.iter().all(|c| c.0 != "protect"), "{:?}", mm.calls);
    assert_eq!(mm.prot(0x400000), Some(PROT_READ | PROT_EXEC));
    assert_eq!(mm.prot(0x402000), Some(PROT_READ | PROT_WRITE));
    assert_eq!(mm.get(0x400000, 4), b"\x7fELF");
    assert_eq!(mm.get(0x401010, 4), [0; 4], "bss is zero");
    drop(mm);
    // The record knows the segments: mprotect over them works, over a hole not.
    assert_eq!(t.sys(SYS_MPROTECT, &[0x400000, 4096, PROT_READ as u64]), 0);
}

/// Two processes on one file server see each other's names and bytes at
/// once; an unlinked file stays readable through a description held in
/// another process, and goes with its last hold.
#[test]
fn processes_share_a_file_server() {
    let srv = server();
    let mut a = T::client(&srv);
    let mut b = T::client(&srv);
    let fd = a.open("/tmp/f", O_CREAT | O_WRONLY | O_TRUNC, 0o644);
    assert_eq!(a.write(fd, b"from a\n"), 7);
    let r = b.open("/tmp/f", O_RDONLY, 0);
    assert_eq!(b.read(r, 100), Ok(b"from a\n".to_vec()));
    // O_APPEND from b lands after a's bytes, and a's next write after that
    // would overwrite (its offset is its own: descriptions are per process).
    let ap = b.open("/tmp/f", O_WRONLY | O_APPEND, 0);
    assert_eq!(b.write(ap, b"b\n"), 2);
    assert_eq!(u64_at(&a.stat("/tmp/f", 0).unwrap(), 48), 9);
    // Names: mkdir, rename and rm in one, seen by the other.
    let (d, x, y) = (a.cstr("/tmp/d"), a.cstr("/tmp/f"), a.cstr("/tmp/d/g"));
    assert_eq!(a.sys(SYS_MKDIR, &[d, 0o755]), 0);
    assert_eq!(a.sys(SYS_RENAME, &[x, y]), 0);
    assert_eq!(b.stat("/tmp/f", 0), Err(e(ENOENT)));
    assert_eq!(b.stat("/tmp/d/g", 0).map(|s| u64_at(&s, 48)), Ok(9));
    let n0 = srv.0.borrow().fs.inode_count();
    assert_eq!(a.sys(SYS_UNLINK, &[y]), 0);
    b.sys(SYS_LSEEK, &[r as u64, 0, SEEK_SET as u64]);
    assert_eq!(b.read(r, 100), Ok(b"from a\nb\n".to_vec()), "held by b's descriptions");
    assert_eq!(srv.0.borrow().fs.inode_count(), n0);
    for fd in [r, ap] {
        b.sys(SYS_CLOSE, &[fd as u64]);
    }
    assert_eq!(srv.0.borrow().fs.inode_count(), n0, "a still holds it");
    a.sys(SYS_CLOSE, &[fd as u64]);
    assert_eq!(srv.0.borrow().fs.inode_count(), n0 - 1, "freed with the last hold");
    // Devices named in the server's tree are the client's own.
    let null = b.open("/dev/null", O_WRONLY, 0);
    assert_eq!(b.write(null, b"gone"), 4);
    let tty = b.open("/dev/tty", O_WRONLY, 0);
    assert_eq!(b.write(tty, b"mine"), 4);
    assert_eq!(b.con.output(), "mine");
    assert_eq!(a.con.output(), "");
    // execve's zero-copy path: the archive's bytes, from the client's own archive.
    let bb = b.p.fs.lookup(0, b"/bin/busybox", true).unwrap();
    assert_eq!(b.p.fs.archive_bytes(bb), Some(&b"BB"[..]));
}

/// `sendfile` between files (with and without an offset pointer) and to
/// the console; `sched_{get,set}affinity` of the process itself.
#[test]
fn sendfile_and_affinity() {
    let mut t = T::new();
    let src = t.open("/etc/motd", O_RDONLY, 0);
    let dst = t.open("/tmp/copy", O_CREAT | O_WRONLY, 0o644);
    assert_eq!(t.sys(SYS_SENDFILE, &[dst as u64, src as u64, 0, 5]), 5);
    assert_eq!(t.sys(SYS_SENDFILE, &[dst as u64, src as u64, 0, 100]), 8, "to end of file");
    assert_eq!(t.sys(SYS_SENDFILE, &[dst as u64, src as u64, 0, 100]), 0);
    let off = t.put(&7i64.to_le_bytes());
    assert_eq!(t.sys(SYS_SENDFILE, &[1, src as u64, off, 100]), 6);
    assert_eq!(t.con.output(), "world\n");
    assert_eq!(i64::from_le_bytes(t.get(off, 8).try_into().unwrap()), 13, "*offset advanced");
    let back = t.open("/tmp/copy", O_RDONLY, 0);
    assert_eq!(t.read(back, 100), Ok(b"hello, world\n".to_vec()));
    let app = t.open("/tmp/copy", O_WRONLY | O_APPEND, 0);
    assert_eq!(t.sys(SYS_SENDFILE, &[app as u64, src as u64, 0, 1]), e(EINVAL));
    let neg = t.put(&(-1i64).to_le_bytes());
    assert_eq!(t.sys(SYS_SENDFILE, &[dst as u64, src as u64, neg, 1]), e(EINVAL));
    assert_eq!(t.sys(SYS_SENDFILE, &[dst as u64, 99, 0, 1]), e(EBADF));
    // Affinity: without a process host, one core (0).
    let m = t.buf(8);
    assert_eq!(t.sys(SYS_SCHED_GETAFFINITY, &[0, 8, m]), 8);
    assert_eq!(u64_at(&t.get(m, 8), 0), 1);
    assert_eq!(t.sys(SYS_SCHED_GETAFFINITY, &[0, 4, m]), e(EINVAL));
    assert_eq!(t.sys(SYS_SCHED_GETAFFINITY, &[0, 12, m]), e(EINVAL));
    assert_eq!(t.sys(SYS_SCHED_GETAFFINITY, &[4242, 8, m]), e(ESRCH));
    let two = t.put(&2u64.to_le_bytes());
    assert_eq!(t.sys(SYS_SCHED_SETAFFINITY, &[0, 8, two]), e(EINVAL), "no online core in it");
    let all = t.put(&u64::MAX.to_le_bytes());
    assert_eq!(t.sys(SYS_SCHED_SETAFFINITY, &[1, 8, all]), 0, "its own pid");
    assert_eq!(t.sys(SYS_SCHED_GETAFFINITY, &[0, 64, m]), 8);
    assert_eq!(u64_at(&t.get(m, 8), 0), 1, "the online part only");
}

// --- /dev/chan (crate::chan) ----------------------------------------------

/// A channel host with one server, `upper`, answering each message with
/// its bytes in upper case (and `split` lines as one message each).
#[derive(Clone, Default)]
struct MockChans(Rc<RefCell<ChanState>>);

#[derive(Default)]
struct ChanState {
    connects: u32,
    closed: Vec<u64>,
    forgotten: Vec<u64>,
    replies: alloc::collections::BTreeMap<u64, alloc::collections::VecDeque<Vec<u8>>>,
    /// The server has gone.
    gone: bool,
}

impl crate::chan::ChanHost for MockChans {
    fn connect(&mut self, name: &[u8]) -> SysResult<u64> {
        let mut s = self.0.borrow_mut();
        if name != b"upper" || s.gone {
            return Err(ENOENT);
        }
        s.connects += 1;
        let c = u64::from(s.connects);
        s.replies.insert(c, Default::default());
        Ok(c)
    }
    fn send(&mut self, conn: u64, msg: &[u8]) -> SysResult<()> {
        let mut s = self.0.borrow_mut();
        if s.gone {
            return Err(EPIPE);
        }
        let q = s.replies.get_mut(&conn).ok_or(EBADF)?;
        q.push_back(msg.to_ascii_uppercase());
        if msg == b"twice" {
            q.push_back(Vec::new());
            q.push_back(b"AGAIN".to_vec());
        }
        Ok(())
    }
    fn recv(&mut self, conn: u64, buf: &mut [u8], _wait_ns: u64) -> SysResult<Option<usize>> {
        let mut s = self.0.borrow_mut();
        let gone = s.gone;
        let q = s.replies.get_mut(&conn).ok_or(EBADF)?;
        match q.pop_front() {
            Some(m) => {
                buf[..m.len()].copy_from_slice(&m);
                Ok(Some(m.len()))
            }
            None if gone => Ok(None),
            None => Err(EAGAIN),
        }
    }
    fn close(&mut self, conn: u64) {
        self.0.borrow_mut().closed.push(conn);
    }
    fn max_message(&mut self, _: u64) -> usize {
        8
    }
    fn forget(&mut self, conn: u64) {
        self.0.borrow_mut().forgotten.push(conn);
    }
}

fn with_chans() -> (T, MockChans) {
    let mut t = T::new();
    let chans = MockChans::default();
    t.p.set_chan_host(Box::new(chans.clone()));
    (t, chans)
}

#[test]
fn chan_open_errors() {
    let mut t = T::new();
    assert_eq!(t.open("/dev/chan/upper", O_RDWR, 0), e(ENODEV), "no channel host");
    let (mut t, chans) = with_chans();
    assert_eq!(t.open("/dev/chan/nobody", O_RDWR, 0), e(ENOENT));
    assert_eq!(t.open("/dev/chan/", O_RDWR, 0), e(EINVAL));
    assert_eq!(t.open("/dev/chan/a/b", O_RDWR, 0), e(EINVAL));
    let long = alloc::format!("/dev/chan/{}", "x".repeat(crate::chan::NAME_MAX + 1));
    assert_eq!(t.open(&long, O_RDWR, 0), e(ENAMETOOLONG));
    assert_eq!(t.open("/dev/chan/upper", O_RDWR | O_DIRECTORY, 0), e(ENOTDIR));
    assert_eq!(chans.0.borrow().connects, 0);
}

#[test]
fn chan_messages_read_as_a_stream_never_mixed() {
    let (mut t, chans) = with_chans();
    let fd = t.open("/dev/chan/upper", O_RDWR, 0);
    assert!(fd >= 3, "{fd}");
    assert_eq!(t.write(fd, b"hello"), 5);
    assert_eq!(t.write(fd, b"abc"), 3);
    assert_eq!(t.read(fd, 2).unwrap(), b"HE");
    // The rest of the first message, not the start of the second.
    assert_eq!(t.read(fd, 10).unwrap(), b"LLO");
    assert_eq!(t.read(fd, 10).unwrap(), b"ABC");
    // Empty messages are skipped, never an end of file.
    assert_eq!(t.write(fd, b"twice"), 5);
    assert_eq!(t.read(fd, 10).unwrap(), b"TWICE");
    assert_eq!(t.read(fd, 10).unwrap(), b"AGAIN");
    // A write longer than a message sends one message's worth.
    assert_eq!(t.write(fd, b"0123456789"), 8);
    assert_eq!(t.read(fd, 20).unwrap(), b"01234567");
    // Not seekable; a character device.
    assert_eq!(t.sys(SYS_LSEEK, &[fd as u64, 0, 0]), e(ESPIPE));
    let b = t.buf(144);
    assert_eq!(t.sys(SYS_FSTAT, &[fd as u64, b]), 0);
    let mode = u32::from_le_bytes(t.get(b + 24, 4).try_into().unwrap());
    assert_eq!(mode & S_IFMT, S_IFCHR);
    // The last close closes the connection; a dup keeps it open.
    let dup = t.sys(SYS_DUP, &[fd as u64]);
    assert_eq!(t.sys(SYS_CLOSE, &[fd as u64]), 0);
    assert!(chans.0.borrow().closed.is_empty());
    assert_eq!(t.sys(SYS_CLOSE, &[dup as u64]), 0);
    assert_eq!(chans.0.borrow().closed, [1]);
}

#[test]
fn chan_nonblocking_end_of_file_and_broken_server() {
    let (mut t, chans) = with_chans();
    let fd = t.open("/dev/chan/upper", O_RDWR | O_NONBLOCK, 0);
    assert_eq!(t.read(fd, 4), Err(e(EAGAIN)));
    assert_eq!(t.write(fd, b"last"), 4);
    chans.0.borrow_mut().gone = true;
    // What the server sent is still read, then end of file.
    assert_eq!(t.read(fd, 10).unwrap(), b"LAST");
    assert_eq!(t.read(fd, 10).unwrap(), b"");
    assert_eq!(t.read(fd, 10).unwrap(), b"");
    // Writing to a server that has gone: EPIPE, with SIGPIPE raised.
    assert_eq!(t.write(fd, b"x"), e(EPIPE));
    assert!(t.p.signals.interrupting(), "SIGPIPE pending");
}

#[test]
fn chan_forked_child_reconnects_on_first_use() {
    let (mut t, chans) = with_chans();
    let fd = t.open("/dev/chan/upper", O_RDWR, 0);
    assert_eq!(t.write(fd, b"parent"), 6);
    assert_eq!(t.read(fd, 3).unwrap(), b"PAR");
    crate::chan::forked_child(&mut t.p);
    assert_eq!(chans.0.borrow().forgotten, [1], "the parent's connection is left alone");
    // The parent's unread bytes are not the child's; its first use
    // connects anew.
    assert_eq!(t.write(fd, b"child"), 5);
    assert_eq!(chans.0.borrow().connects, 2);
    assert_eq!(t.read(fd, 10).unwrap(), b"CHILD");
    assert_eq!(t.sys(SYS_CLOSE, &[fd as u64]), 0);
    assert_eq!(chans.0.borrow().closed, [2]);
}
