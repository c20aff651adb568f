//! What the ring-3 glue provides: the only doors from the core to the
//! machine.
//!
//! The core never dereferences a pointer, maps a page, reads a clock or
//! prints. Each of those is one of these traits, implemented by the glue
//! with the exokernel's primitives (and by `mock` in the tests):
//!
//! | trait | used for | glue implements it with |
//! |---|---|---|
//! | [`UserMemory`] | every pointer argument | checked copies in its own address space |
//! | [`Memory`] | `brk`, `mmap`, `munmap`, `mprotect`, `madvise` | frame allocation and page-table calls |
//! | [`Clock`] | `clock_*`, `nanosleep`, file times | the TSC / info page and a wake-up predicate |
//! | [`Console`] | fds 0–2, `/dev/console`, `/dev/tty` | the console channel |
//! | [`Host`] | `arch_prctl(ARCH_SET_FS)`, `getrandom`, "unimplemented" reports | the vCPU's FS base, `rdrand`/TSC mixing, the log |

use crate::linux::{SysResult, Winsize};

/// The program's memory, as seen from its own environment. Both methods fail
/// with `EFAULT` when any byte of the range is not mapped with the needed
/// access; they never panic on a bad address.
pub trait UserMemory {
    /// Copies `buf.len()` bytes from user address `addr`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> SysResult<()>;
    /// Copies `data` to user address `addr`.
    fn write(&mut self, addr: u64, data: &[u8]) -> SysResult<()>;
    /// Calls `f` once with the `len` bytes at user address `addr` (for
    /// copies straight from the program's memory, as a pipe write's into
    /// the shared frame), or fails as [`UserMemory::read`] without calling
    /// it. The default reads them into a buffer first.
    fn read_with(&self, addr: u64, len: usize, f: &mut dyn FnMut(&[u8])) -> SysResult<()> {
        let mut buf = alloc::vec![0; len];
        self.read(addr, &mut buf)?;
        f(&buf);
        Ok(())
    }
    /// Has `f` fill the `len` bytes at user address `addr` (for copies
    /// straight into the program's memory, as a pipe read's from the
    /// shared frame): `f` is called once, with a slice of exactly `len`
    /// bytes, and must overwrite all of them. Fails as
    /// [`UserMemory::write`]; `f` may then have been called or not, and
    /// the program's bytes are unchanged. The default fills a buffer,
    /// then writes it.
    fn write_with(&mut self, addr: u64, len: usize, f: &mut dyn FnMut(&mut [u8])) -> SysResult<()> {
        let mut buf = alloc::vec![0; len];
        f(&mut buf);
        self.write(addr, &buf)
    }
}

/// The program's address space. Addresses and lengths are page-aligned and
/// lie in the ranges the core was configured with; the core tracks what is
/// mapped and asks only for consistent changes.
pub trait Memory {
    /// Maps fresh zero-filled private pages over `[addr, addr+len)` with
    /// `prot` (`PROT_*`), replacing whatever was mapped there.
    fn map(&mut self, addr: u64, len: u64, prot: u32) -> SysResult<()>;
    /// Unmaps `[addr, addr+len)`, which is entirely mapped.
    fn unmap(&mut self, addr: u64, len: u64) -> SysResult<()>;
    /// Changes the rights of `[addr, addr+len)`, which is entirely mapped.
    fn protect(&mut self, addr: u64, len: u64, prot: u32) -> SysResult<()>;
    /// Maps `[addr, addr+len)` with `prot`, replacing whatever was mapped
    /// there, its bytes from `vaddr` on being `bytes` and zero elsewhere
    /// (an image's segment), if this memory can do so without copying the
    /// bytes now — for instance lazily, page by page at first touch, from a
    /// read-only source that outlives every mapping. Returns `false` (and
    /// changes nothing) when it cannot: the loader then maps and copies.
    fn map_image(
        &mut self,
        addr: u64,
        len: u64,
        prot: u32,
        vaddr: u64,
        bytes: &[u8],
    ) -> SysResult<bool> {
        let _ = (addr, len, prot, vaddr, bytes);
        Ok(false)
    }
}

/// Time. All values are nanoseconds.
pub trait Clock {
    /// Time since an arbitrary start, never going back (`CLOCK_MONOTONIC`).
    fn monotonic_ns(&self) -> u64;
    /// Time since the Unix epoch (`CLOCK_REALTIME`).
    fn realtime_ns(&self) -> u64;
    /// CPU time this process has used (`CLOCK_PROCESS_CPUTIME_ID`).
    fn cpu_ns(&self) -> u64 {
        self.monotonic_ns()
    }
    /// The clocks' resolution.
    fn resolution_ns(&self) -> u64 {
        1
    }
    /// Blocks until `monotonic_ns() >= deadline`.
    fn sleep_until(&mut self, deadline_ns: u64);
}

/// The console: a terminal the program's standard streams are attached to.
pub trait Console {
    /// Writes `data` (the program's standard output, or anything written
    /// to the terminal by name); returns how many bytes were taken.
    fn write(&mut self, data: &[u8]) -> usize;
    /// Writes `data` to the program's standard error (descriptor 2 as the
    /// process started); the same terminal unless the glue keeps the two
    /// streams apart.
    fn write_err(&mut self, data: &[u8]) -> usize {
        self.write(data)
    }
    /// Reads up to `buf.len()` bytes, blocking until at least one (or end of
    /// input, 0).
    fn read(&mut self, buf: &mut [u8]) -> SysResult<usize>;
    /// The window size `TIOCGWINSZ` reports at first.
    fn winsize(&self) -> Winsize {
        Winsize { rows: 24, cols: 80 }
    }
    /// Whether the console is a terminal with a keyboard: then reads go
    /// through the line discipline (`tty`) over [`Console::read_input`],
    /// and writes through its output processing. `false` (the default):
    /// [`Console::read`] and the writes are used as they are.
    fn is_terminal(&self) -> bool {
        false
    }
    /// Whether this process is the one the keyboard's bytes go to now (a
    /// terminal may be shared by a session whose other processes cannot
    /// read it): only then is input taken while waiting for something else.
    fn reads_input(&self) -> bool {
        self.is_terminal()
    }
    /// Raw keyboard input: up to `buf.len()` bytes as typed, waiting up to
    /// `timeout_ns` (forever if `None`) for at least one. 0 when the time
    /// is up, or (without a timeout) at the end of input.
    fn read_input(&mut self, buf: &mut [u8], timeout_ns: Option<u64>) -> SysResult<usize> {
        let _ = timeout_ns;
        self.read(buf)
    }
}

/// Everything else the core asks of its environment.
pub trait Host {
    /// Sets this vCPU's FS base (`arch_prctl(ARCH_SET_FS)`); the address is
    /// canonical and in the user half.
    fn set_fs(&mut self, base: u64) -> SysResult<()>;
    /// Fills `buf` with unpredictable bytes (`getrandom`).
    fn random(&mut self, buf: &mut [u8]);
    /// A diagnostic line, e.g. `libos-posix: unimplemented syscall mremap (25)`.
    fn report(&mut self, line: &str);
}
