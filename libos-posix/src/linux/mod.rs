//! The x86-64 Linux user ABI that static executables are compiled against.
//!
//! This module owns every number and byte layout the POSIX personality shares
//! with Linux programs: system-call numbers and names ([`sysno`], generated
//! from `asm/unistd_64.h`), errno values ([`errno`], generated from
//! `asm-generic/errno*.h`), flag and command constants, and the structures
//! the kernel writes into user memory. Nothing here has behaviour beyond
//! serialising a structure to its exact bytes.
//!
//! Structures are plain Rust structs with an `encode` method producing the
//! little-endian bytes Linux would write, instead of `#[repr(C)]` casts: the
//! crate forbids `unsafe`, and an explicit encoder cannot pick up padding by
//! accident. The tests pin every size and field offset, and on an x86-64
//! Linux host cross-check them against the C library's own structs.
//!
//! ```text
//! struct stat (x86-64, 144 bytes)          struct linux_dirent64 (reclen % 8 == 0)
//!   0 st_dev      8 st_ino   16 st_nlink     0 d_ino  8 d_off  16 d_reclen
//!  24 st_mode    28 st_uid   32 st_gid      18 d_type 19 d_name (NUL-terminated)
//!  40 st_rdev    48 st_size  56 st_blksize
//!  64 st_blocks  72 st_atim  88 st_mtim    104 st_ctim  120 reserved[3]
//! ```

pub mod errno;
pub mod sysno;

use alloc::vec::Vec;

/// A Linux error number (positive; system calls return its negation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The value a system call returns in `rax` for this error.
    pub const fn to_ret(self) -> i64 {
        -(self.0 as i64)
    }
}

/// A system call's result before it is written to `rax`.
pub type SysResult<T> = core::result::Result<T, Errno>;

/// The name of system call `nr`, if x86-64 Linux defines one.
pub fn syscall_name(nr: u64) -> Option<&'static str> {
    sysno::NAMES.binary_search_by_key(&nr, |&(n, _)| n).ok().map(|i| sysno::NAMES[i].1)
}

// ---- open(2) flags (octal, as in `asm-generic/fcntl.h`) ----
/// Access mode mask.
pub const O_ACCMODE: u32 = 0o3;
/// Open for reading only.
pub const O_RDONLY: u32 = 0o0;
/// Open for writing only.
pub const O_WRONLY: u32 = 0o1;
/// Open for reading and writing.
pub const O_RDWR: u32 = 0o2;
/// Create the file if it does not exist.
pub const O_CREAT: u32 = 0o100;
/// With `O_CREAT`: fail with `EEXIST` if the name exists.
pub const O_EXCL: u32 = 0o200;
/// Do not make a terminal the controlling terminal.
pub const O_NOCTTY: u32 = 0o400;
/// Truncate a regular file to length 0.
pub const O_TRUNC: u32 = 0o1000;
/// Every write goes to the end of the file.
pub const O_APPEND: u32 = 0o2000;
/// Non-blocking I/O.
pub const O_NONBLOCK: u32 = 0o4000;
/// Synchronised data writes.
pub const O_DSYNC: u32 = 0o10000;
/// Signal-driven I/O.
pub const O_ASYNC: u32 = 0o20000;
/// Direct I/O.
pub const O_DIRECT: u32 = 0o40000;
/// Large-file offsets (always on for 64-bit).
pub const O_LARGEFILE: u32 = 0o100000;
/// Fail with `ENOTDIR` unless the path names a directory.
pub const O_DIRECTORY: u32 = 0o200000;
/// Fail with `ELOOP` if the last component is a symbolic link.
pub const O_NOFOLLOW: u32 = 0o400000;
/// Do not update the access time.
pub const O_NOATIME: u32 = 0o1000000;
/// Close the descriptor on `execve`.
pub const O_CLOEXEC: u32 = 0o2000000;
/// Synchronised writes (includes `O_DSYNC`).
pub const O_SYNC: u32 = 0o4010000;
/// A path-only descriptor.
pub const O_PATH: u32 = 0o10000000;
/// An unnamed temporary file (includes `O_DIRECTORY`).
pub const O_TMPFILE: u32 = 0o20200000;

// ---- fcntl(2) ----
/// Duplicate to the lowest free descriptor ≥ arg.
pub const F_DUPFD: u32 = 0;
/// Read the descriptor flags.
pub const F_GETFD: u32 = 1;
/// Set the descriptor flags.
pub const F_SETFD: u32 = 2;
/// Read the file status flags.
pub const F_GETFL: u32 = 3;
/// Set the file status flags (`O_APPEND O_ASYNC O_DIRECT O_NOATIME O_NONBLOCK`).
pub const F_SETFL: u32 = 4;
/// `F_DUPFD` with close-on-exec set on the new descriptor.
pub const F_DUPFD_CLOEXEC: u32 = 1030;
/// The close-on-exec descriptor flag.
pub const FD_CLOEXEC: u64 = 1;

// ---- *at(2) ----
/// The `dirfd` meaning "the current working directory".
pub const AT_FDCWD: i32 = -100;
/// Do not follow a final symbolic link.
pub const AT_SYMLINK_NOFOLLOW: u32 = 0x100;
/// `unlinkat`: remove a directory.
pub const AT_REMOVEDIR: u32 = 0x200;
/// `faccessat`: check with the effective ids.
pub const AT_EACCESS: u32 = 0x200;
/// Follow a final symbolic link (`linkat`).
pub const AT_SYMLINK_FOLLOW: u32 = 0x400;
/// Do not automount.
pub const AT_NO_AUTOMOUNT: u32 = 0x800;
/// An empty path names `dirfd` itself.
pub const AT_EMPTY_PATH: u32 = 0x1000;

// ---- auxiliary vector keys ----
/// End of the vector.
pub const AT_NULL: u64 = 0;
/// Entry to ignore.
pub const AT_IGNORE: u64 = 1;
/// Address of the program headers.
pub const AT_PHDR: u64 = 3;
/// Size of one program header.
pub const AT_PHENT: u64 = 4;
/// Number of program headers.
pub const AT_PHNUM: u64 = 5;
/// Page size.
pub const AT_PAGESZ: u64 = 6;
/// Interpreter base (0: none).
pub const AT_BASE: u64 = 7;
/// Flags (0).
pub const AT_FLAGS: u64 = 8;
/// Program entry point.
pub const AT_ENTRY: u64 = 9;
/// Real user id.
pub const AT_UID: u64 = 11;
/// Effective user id.
pub const AT_EUID: u64 = 12;
/// Real group id.
pub const AT_GID: u64 = 13;
/// Effective group id.
pub const AT_EGID: u64 = 14;
/// Address of the platform string.
pub const AT_PLATFORM: u64 = 15;
/// CPU capability bits.
pub const AT_HWCAP: u64 = 16;
/// Clock ticks per second (`times`).
pub const AT_CLKTCK: u64 = 17;
/// Secure mode (setuid).
pub const AT_SECURE: u64 = 23;
/// Address of 16 random bytes.
pub const AT_RANDOM: u64 = 25;
/// More CPU capability bits.
pub const AT_HWCAP2: u64 = 26;
/// Address of the executable's file name.
pub const AT_EXECFN: u64 = 31;
/// Address of the vDSO (absent here).
pub const AT_SYSINFO_EHDR: u64 = 33;

// ---- mmap(2) ----
/// Pages may be read.
pub const PROT_READ: u32 = 1;
/// Pages may be written.
pub const PROT_WRITE: u32 = 2;
/// Pages may be executed.
pub const PROT_EXEC: u32 = 4;
/// Shared mapping.
pub const MAP_SHARED: u32 = 0x01;
/// Private copy-on-write mapping.
pub const MAP_PRIVATE: u32 = 0x02;
/// Shared, with unknown flags refused.
pub const MAP_SHARED_VALIDATE: u32 = 0x03;
/// The mapping type mask.
pub const MAP_TYPE: u32 = 0x0f;
/// Place exactly at `addr`, replacing what is there.
pub const MAP_FIXED: u32 = 0x10;
/// Not backed by a file.
pub const MAP_ANONYMOUS: u32 = 0x20;
/// Below 2 GiB.
pub const MAP_32BIT: u32 = 0x40;
/// Stack-like segment (ignored).
pub const MAP_GROWSDOWN: u32 = 0x100;
/// Ignored.
pub const MAP_DENYWRITE: u32 = 0x800;
/// Ignored.
pub const MAP_EXECUTABLE: u32 = 0x1000;
/// Lock the pages (ignored).
pub const MAP_LOCKED: u32 = 0x2000;
/// No swap reservation (ignored).
pub const MAP_NORESERVE: u32 = 0x4000;
/// Prefault (ignored).
pub const MAP_POPULATE: u32 = 0x8000;
/// Do not block on I/O (ignored).
pub const MAP_NONBLOCK: u32 = 0x10000;
/// A thread stack (ignored).
pub const MAP_STACK: u32 = 0x20000;
/// Huge pages.
pub const MAP_HUGETLB: u32 = 0x40000;
/// Like `MAP_FIXED`, but `EEXIST` instead of replacing.
pub const MAP_FIXED_NOREPLACE: u32 = 0x100000;
/// `mremap`: the mapping may move.
pub const MREMAP_MAYMOVE: u32 = 1;
/// `mremap`: move to `new_addr`.
pub const MREMAP_FIXED: u32 = 2;

// ---- ioctl(2) on terminals ----
/// Read the terminal attributes (`struct termios`, kernel layout).
pub const TCGETS: u32 = 0x5401;
/// Set the terminal attributes.
pub const TCSETS: u32 = 0x5402;
/// Set after draining output.
pub const TCSETSW: u32 = 0x5403;
/// Set after draining output and flushing input.
pub const TCSETSF: u32 = 0x5404;
/// Read the foreground process group.
pub const TIOCGPGRP: u32 = 0x540f;
/// Read the window size (`struct winsize`).
pub const TIOCGWINSZ: u32 = 0x5413;
/// Set the window size.
pub const TIOCSWINSZ: u32 = 0x5414;
/// Bytes available to read.
pub const FIONREAD: u32 = 0x541b;

// ---- file types (st_mode) and dirent types ----
/// File-type mask of `st_mode`.
pub const S_IFMT: u32 = 0o170000;
/// Socket.
pub const S_IFSOCK: u32 = 0o140000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Block device.
pub const S_IFBLK: u32 = 0o060000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;
/// FIFO.
pub const S_IFIFO: u32 = 0o010000;
/// `d_type`: unknown.
pub const DT_UNKNOWN: u8 = 0;
/// `d_type`: FIFO.
pub const DT_FIFO: u8 = 1;
/// `d_type`: character device.
pub const DT_CHR: u8 = 2;
/// `d_type`: directory.
pub const DT_DIR: u8 = 4;
/// `d_type`: regular file.
pub const DT_REG: u8 = 8;
/// `d_type`: symbolic link.
pub const DT_LNK: u8 = 10;

// ---- lseek, access ----
/// Offset is absolute.
pub const SEEK_SET: u32 = 0;
/// Offset is relative to the current position.
pub const SEEK_CUR: u32 = 1;
/// Offset is relative to the end of the file.
pub const SEEK_END: u32 = 2;
/// Next data at or after the offset.
pub const SEEK_DATA: u32 = 3;
/// Next hole at or after the offset.
pub const SEEK_HOLE: u32 = 4;
/// Existence test.
pub const F_OK: u32 = 0;
/// Execute/search permission.
pub const X_OK: u32 = 1;
/// Write permission.
pub const W_OK: u32 = 2;
/// Read permission.
pub const R_OK: u32 = 4;

// ---- arch_prctl(2) ----
/// Set the GS base.
pub const ARCH_SET_GS: u64 = 0x1001;
/// Set the FS base (the thread pointer on x86-64).
pub const ARCH_SET_FS: u64 = 0x1002;
/// Read the FS base.
pub const ARCH_GET_FS: u64 = 0x1003;
/// Read the GS base.
pub const ARCH_GET_GS: u64 = 0x1004;

// ---- clocks ----
/// Wall-clock time.
pub const CLOCK_REALTIME: u32 = 0;
/// Time since an unspecified start, never set.
pub const CLOCK_MONOTONIC: u32 = 1;
/// CPU time of the process.
pub const CLOCK_PROCESS_CPUTIME_ID: u32 = 2;
/// CPU time of the thread.
pub const CLOCK_THREAD_CPUTIME_ID: u32 = 3;
/// Monotonic, not slewed.
pub const CLOCK_MONOTONIC_RAW: u32 = 4;
/// Coarse wall-clock time.
pub const CLOCK_REALTIME_COARSE: u32 = 5;
/// Coarse monotonic time.
pub const CLOCK_MONOTONIC_COARSE: u32 = 6;
/// Monotonic including suspend.
pub const CLOCK_BOOTTIME: u32 = 7;
/// `clock_nanosleep`: the request is an absolute time.
pub const TIMER_ABSTIME: u32 = 1;

// ---- getrandom(2) ----
/// Do not block.
pub const GRND_NONBLOCK: u32 = 1;
/// Use the blocking pool.
pub const GRND_RANDOM: u32 = 2;
/// Never block, even before seeding.
pub const GRND_INSECURE: u32 = 4;

// ---- limits ----
/// Longest `iovec` array (`UIO_MAXIOV`).
pub const UIO_MAXIOV: u64 = 1024;
/// Longest path, including its NUL.
pub const PATH_MAX: usize = 4096;
/// Longest path component.
pub const NAME_MAX: usize = 255;
/// The page size of x86-64.
pub const PAGE_SIZE: u64 = 4096;

/// Makes a device number the way glibc's `makedev` (and the kernel's
/// `new_encode_dev`) does.
pub const fn makedev(major: u32, minor: u32) -> u64 {
    let (ma, mi) = (major as u64, minor as u64);
    ((ma & 0xffff_f000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0xff)
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// `struct timespec` (16 bytes: `tv_sec` then `tv_nsec`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timespec {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000` when valid.
    pub nsec: i64,
}

impl Timespec {
    /// Size in user memory.
    pub const SIZE: usize = 16;

    /// From a count of nanoseconds.
    pub const fn from_ns(ns: u64) -> Self {
        Timespec { sec: (ns / 1_000_000_000) as i64, nsec: (ns % 1_000_000_000) as i64 }
    }

    /// As nanoseconds, or `EINVAL` as Linux reports for a negative time or
    /// `tv_nsec` outside `0..1e9` (`timespec64_valid`). Saturates far times.
    pub fn to_ns(self) -> SysResult<u64> {
        if self.sec < 0 || !(0..1_000_000_000).contains(&self.nsec) {
            return Err(errno::EINVAL);
        }
        Ok((self.sec as u64).saturating_mul(1_000_000_000).saturating_add(self.nsec as u64))
    }

    /// The bytes Linux writes.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        put_u64(&mut b, 0, self.sec as u64);
        put_u64(&mut b, 8, self.nsec as u64);
        b
    }

    /// Reads one from user bytes.
    pub fn decode(b: &[u8; 16]) -> Self {
        Timespec { sec: get_u64(b, 0) as i64, nsec: get_u64(b, 8) as i64 }
    }
}

/// `struct stat` of x86-64 (`arch/x86/include/uapi/asm/stat.h`), 144 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// Device of the file system.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Number of hard links.
    pub nlink: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number of a device file.
    pub rdev: u64,
    /// Size in bytes.
    pub size: i64,
    /// Preferred I/O block size.
    pub blksize: i64,
    /// Number of 512-byte blocks allocated.
    pub blocks: i64,
    /// Last access.
    pub atime: Timespec,
    /// Last modification.
    pub mtime: Timespec,
    /// Last status change.
    pub ctime: Timespec,
}

impl Stat {
    /// Size in user memory.
    pub const SIZE: usize = 144;
    /// Offset of `st_mode`.
    pub const OFF_MODE: usize = 24;
    /// Offset of `st_size`.
    pub const OFF_SIZE: usize = 48;
    /// Offset of `st_mtim`.
    pub const OFF_MTIME: usize = 88;

    /// The bytes Linux writes (padding and reserved words zero).
    pub fn encode(&self) -> [u8; 144] {
        let mut b = [0u8; 144];
        put_u64(&mut b, 0, self.dev);
        put_u64(&mut b, 8, self.ino);
        put_u64(&mut b, 16, self.nlink);
        put_u32(&mut b, 24, self.mode);
        put_u32(&mut b, 28, self.uid);
        put_u32(&mut b, 32, self.gid);
        put_u64(&mut b, 40, self.rdev);
        put_u64(&mut b, 48, self.size as u64);
        put_u64(&mut b, 56, self.blksize as u64);
        put_u64(&mut b, 64, self.blocks as u64);
        b[72..88].copy_from_slice(&self.atime.encode());
        b[88..104].copy_from_slice(&self.mtime.encode());
        b[104..120].copy_from_slice(&self.ctime.encode());
        b
    }

    /// The inverse of [`Stat::encode`] (`None` unless `b` is 144 bytes).
    pub fn decode(b: &[u8]) -> Option<Stat> {
        let b: &[u8; 144] = b.try_into().ok()?;
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let ts = |o: usize| Timespec::decode(b[o..o + 16].try_into().expect("16 bytes"));
        Some(Stat {
            dev: u64_at(0),
            ino: u64_at(8),
            nlink: u64_at(16),
            mode: u32_at(24),
            uid: u32_at(28),
            gid: u32_at(32),
            rdev: u64_at(40),
            size: u64_at(48) as i64,
            blksize: u64_at(56) as i64,
            blocks: u64_at(64) as i64,
            atime: ts(72),
            mtime: ts(88),
            ctime: ts(104),
        })
    }
}

/// One `struct linux_dirent64` record as `getdents64` writes it.
///
/// `d_reclen` is the header (19 bytes) plus the name and its NUL, rounded up
/// to 8 (`fs/readdir.c`, `ALIGN(offsetof(..., d_name) + namlen + 1, 8)`).
pub fn encode_dirent64(out: &mut Vec<u8>, ino: u64, off: i64, dtype: u8, name: &[u8]) {
    let reclen = dirent64_reclen(name.len());
    let start = out.len();
    out.resize(start + reclen, 0);
    let b = &mut out[start..];
    put_u64(b, 0, ino);
    put_u64(b, 8, off as u64);
    put_u16(b, 16, reclen as u16);
    b[18] = dtype;
    b[19..19 + name.len()].copy_from_slice(name);
}

/// The record length of a `linux_dirent64` with a name of `namelen` bytes.
pub const fn dirent64_reclen(namelen: usize) -> usize {
    (19 + namelen + 1 + 7) & !7
}

/// `struct utsname` (six fields of 65 bytes, 390 bytes).
#[derive(Clone, Copy, Debug)]
pub struct Utsname<'a> {
    /// Operating system name (`Linux`: libcs and scripts test for it).
    pub sysname: &'a str,
    /// Host name.
    pub nodename: &'a str,
    /// Kernel release.
    pub release: &'a str,
    /// Kernel version.
    pub version: &'a str,
    /// Machine (`x86_64`).
    pub machine: &'a str,
    /// NIS domain name.
    pub domainname: &'a str,
}

impl Utsname<'_> {
    /// Size in user memory.
    pub const SIZE: usize = 390;
    /// Length of each field, including the NUL.
    pub const FIELD: usize = 65;

    /// The bytes Linux writes (each field NUL-padded, truncated to 64 bytes).
    pub fn encode(&self) -> [u8; 390] {
        let mut b = [0u8; 390];
        let fields = [
            self.sysname,
            self.nodename,
            self.release,
            self.version,
            self.machine,
            self.domainname,
        ];
        for (i, f) in fields.iter().enumerate() {
            let n = f.len().min(Self::FIELD - 1);
            b[i * Self::FIELD..i * Self::FIELD + n].copy_from_slice(&f.as_bytes()[..n]);
        }
        b
    }
}

/// `struct iovec` (16 bytes: base, length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iovec {
    /// Start of the buffer.
    pub base: u64,
    /// Length of the buffer.
    pub len: u64,
}

impl Iovec {
    /// Size in user memory.
    pub const SIZE: usize = 16;

    /// Reads one from user bytes.
    pub fn decode(b: &[u8]) -> Self {
        Iovec { base: get_u64(b, 0), len: get_u64(b, 8) }
    }
}

/// The kernel's `struct termios` as `TCGETS` writes it (36 bytes; the C
/// library's `struct termios` is larger and converted by libc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Termios {
    /// Input modes.
    pub iflag: u32,
    /// Output modes.
    pub oflag: u32,
    /// Control modes.
    pub cflag: u32,
    /// Local modes.
    pub lflag: u32,
    /// Line discipline.
    pub line: u8,
    /// Control characters (`NCCS` = 19).
    pub cc: [u8; 19],
}

impl Termios {
    /// Size in user memory.
    pub const SIZE: usize = 36;

    /// Linux's default for a fresh tty (`tty_std_termios`): `ICRNL IXON`,
    /// `OPOST ONLCR`, `B38400 CS8 CREAD HUPCL`, `ISIG ICANON ECHO ECHOE ECHOK
    /// ECHOCTL ECHOKE IEXTEN`, `INIT_C_CC`.
    pub const fn default_tty() -> Self {
        Termios {
            iflag: 0o400 | 0o2000,
            oflag: 0o1 | 0o4,
            cflag: 0o17 | 0o60 | 0o200 | 0o2000,
            lflag: 0o1 | 0o2 | 0o10 | 0o20 | 0o40 | 0o1000 | 0o4000 | 0o100000,
            line: 0,
            cc: [3, 28, 127, 21, 4, 0, 1, 0, 17, 19, 26, 0, 18, 15, 23, 22, 0, 0, 0],
        }
    }

    /// The bytes Linux writes.
    pub fn encode(&self) -> [u8; 36] {
        let mut b = [0u8; 36];
        put_u32(&mut b, 0, self.iflag);
        put_u32(&mut b, 4, self.oflag);
        put_u32(&mut b, 8, self.cflag);
        put_u32(&mut b, 12, self.lflag);
        b[16] = self.line;
        b[17..36].copy_from_slice(&self.cc);
        b
    }
}

/// `struct winsize` (8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Winsize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl Winsize {
    /// Size in user memory.
    pub const SIZE: usize = 8;

    /// The bytes Linux writes (pixel sizes zero).
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        put_u16(&mut b, 0, self.rows);
        put_u16(&mut b, 2, self.cols);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn names_are_sorted_and_known() {
        assert!(sysno::NAMES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(syscall_name(0), Some("read"));
        assert_eq!(syscall_name(60), Some("exit"));
        assert_eq!(syscall_name(231), Some("exit_group"));
        assert_eq!(syscall_name(158), Some("arch_prctl"));
        assert_eq!(syscall_name(318), Some("getrandom"));
        assert_eq!(syscall_name(435), Some("clone3"));
        assert_eq!(syscall_name(400), None);
        assert_eq!(sysno::SYS_NEWFSTATAT, 262);
        assert_eq!(sysno::SYS_GETDENTS64, 217);
    }

    #[test]
    fn errno_values() {
        assert_eq!(errno::ENOENT, Errno(2));
        assert_eq!(errno::EBADF, Errno(9));
        assert_eq!(errno::EEXIST, Errno(17));
        assert_eq!(errno::ENOTDIR, Errno(20));
        assert_eq!(errno::EISDIR, Errno(21));
        assert_eq!(errno::EMFILE, Errno(24));
        assert_eq!(errno::ENOTTY, Errno(25));
        assert_eq!(errno::ESPIPE, Errno(29));
        assert_eq!(errno::EROFS, Errno(30));
        assert_eq!(errno::ENOSYS, Errno(38));
        assert_eq!(errno::ENOTEMPTY, Errno(39));
        assert_eq!(errno::ELOOP, Errno(40));
        assert_eq!(errno::EINVAL.to_ret(), -22);
    }

    #[test]
    fn stat_layout_matches_libc() {
        let s = Stat {
            dev: 1,
            ino: 2,
            nlink: 3,
            mode: 4,
            uid: 5,
            gid: 6,
            rdev: 7,
            size: 8,
            blksize: 9,
            blocks: 10,
            atime: Timespec { sec: 11, nsec: 12 },
            mtime: Timespec { sec: 13, nsec: 14 },
            ctime: Timespec { sec: 15, nsec: 16 },
        };
        let b = s.encode();
        assert_eq!(b.len(), 144);
        assert_eq!(size_of::<libc::stat>(), Stat::SIZE);
        let at = |off: usize| get_u64(&b, off);
        assert_eq!(at(offset_of!(libc::stat, st_dev)), 1);
        assert_eq!(at(offset_of!(libc::stat, st_ino)), 2);
        assert_eq!(at(offset_of!(libc::stat, st_nlink)), 3);
        assert_eq!(offset_of!(libc::stat, st_mode), Stat::OFF_MODE);
        assert_eq!(b[24], 4);
        assert_eq!(b[offset_of!(libc::stat, st_uid)], 5);
        assert_eq!(b[offset_of!(libc::stat, st_gid)], 6);
        assert_eq!(at(offset_of!(libc::stat, st_rdev)), 7);
        assert_eq!(offset_of!(libc::stat, st_size), Stat::OFF_SIZE);
        assert_eq!(at(Stat::OFF_SIZE), 8);
        assert_eq!(at(offset_of!(libc::stat, st_blksize)), 9);
        assert_eq!(at(offset_of!(libc::stat, st_blocks)), 10);
        assert_eq!(at(offset_of!(libc::stat, st_atime)), 11);
        assert_eq!(at(offset_of!(libc::stat, st_atime_nsec)), 12);
        assert_eq!(offset_of!(libc::stat, st_mtime), Stat::OFF_MTIME);
        assert_eq!(at(offset_of!(libc::stat, st_mtime_nsec)), 14);
        assert_eq!(at(offset_of!(libc::stat, st_ctime)), 15);
        assert_eq!(at(offset_of!(libc::stat, st_ctime_nsec)), 16);
        assert!(b[120..].iter().all(|&x| x == 0));
    }

    #[test]
    fn other_layouts_match_libc() {
        assert_eq!(size_of::<libc::timespec>(), Timespec::SIZE);
        assert_eq!(size_of::<libc::iovec>(), Iovec::SIZE);
        assert_eq!(size_of::<libc::utsname>(), Utsname::SIZE);
        assert_eq!(size_of::<libc::winsize>(), Winsize::SIZE);
        assert_eq!(offset_of!(libc::dirent64, d_name), 19);
        assert_eq!(offset_of!(libc::dirent64, d_reclen), 16);
        assert_eq!(offset_of!(libc::dirent64, d_type), 18);
        // The kernel's termios: 4 flags, c_line, NCCS = 19.
        assert_eq!(Termios::default_tty().encode().len(), 36);
        assert_eq!(libc::TCGETS as u32, TCGETS);
        assert_eq!(libc::TIOCGWINSZ as u32, TIOCGWINSZ);
        assert_eq!(libc::O_DIRECTORY as u32, O_DIRECTORY);
        assert_eq!(libc::O_CLOEXEC as u32, O_CLOEXEC);
        assert_eq!(libc::O_TMPFILE as u32, O_TMPFILE);
        assert_eq!(libc::F_DUPFD_CLOEXEC as u32, F_DUPFD_CLOEXEC);
        assert_eq!(libc::AT_FDCWD, AT_FDCWD);
        assert_eq!(libc::AT_EMPTY_PATH as u32, AT_EMPTY_PATH);
        assert_eq!(libc::AT_RANDOM, AT_RANDOM);
        assert_eq!(libc::AT_EXECFN, AT_EXECFN);
        assert_eq!(libc::MAP_FIXED_NOREPLACE as u32, MAP_FIXED_NOREPLACE);
        assert_eq!(libc::MAP_ANONYMOUS as u32, MAP_ANONYMOUS);
        assert_eq!(libc::makedev(1, 3), makedev(1, 3));
        assert_eq!(libc::makedev(0x1234, 0x56789), makedev(0x1234, 0x56789));
    }

    #[test]
    fn dirent_record() {
        let mut v = Vec::new();
        encode_dirent64(&mut v, 7, 1, DT_REG, b"abcde");
        assert_eq!(v.len(), 32); // 19 + 5 + 1 = 25 -> 32
        assert_eq!(u16::from_le_bytes([v[16], v[17]]), 32);
        assert_eq!(&v[19..24], b"abcde");
        assert_eq!(v[23], b'e');
        assert_eq!(v[24], 0);
        assert_eq!(dirent64_reclen(4), 24);
        assert_eq!(dirent64_reclen(5), 32);
    }

    #[test]
    fn timespec_validity() {
        assert_eq!(Timespec { sec: 1, nsec: 5 }.to_ns(), Ok(1_000_000_005));
        assert_eq!(Timespec { sec: -1, nsec: 0 }.to_ns(), Err(errno::EINVAL));
        assert_eq!(Timespec { sec: 0, nsec: 1_000_000_000 }.to_ns(), Err(errno::EINVAL));
        let t = Timespec::from_ns(3_000_000_007);
        assert_eq!(Timespec::decode(&t.encode()), t);
    }
}
