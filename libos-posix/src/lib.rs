//! `libos-posix`: the POSIX personality of the exokernel, as a library in
//! the program's own environment (DESIGN §6).
//!
//! This crate is the **hardware-free core**: everything that can be decided
//! without touching the machine, unit- and property-tested on the host. It
//! runs unmodified static x86-64 Linux executables by
//!
//! - planning their load and building the start stack ([`exec`]);
//! - keeping a file system: the initrd's ustar tree, zero-copy, under a
//!   writable in-memory layer, plus devices ([`fs`]);
//! - keeping descriptors and open-file descriptions ([`fd`]);
//! - pipes on frames shared between processes, and `poll` ([`pipe`]);
//! - keeping the program break and anonymous/file mappings ([`mm`]);
//! - the process model: pids, fork, execve, wait ([`proc`]);
//! - being a terminal: line discipline, `termios`, `poll` ([`tty`]);
//! - answering Linux system calls with Linux's semantics and errno values
//!   ([`syscalls::dispatch`]).
//!
//! It touches nothing directly: user memory, mappings, clocks, the console,
//! the FS base and diagnostics go through the traits in [`host`], which the
//! ring-3 glue implements with the exokernel's primitives (and the tests
//! with host mocks). Hence `#![forbid(unsafe_code)]` here; the glue that
//! receives redirected `syscall`s lives apart and may use `unsafe`.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod chan;
pub mod exec;
pub mod fd;
pub mod fs;
pub mod host;
pub mod linux;
pub mod mm;
pub mod path;
pub mod pipe;
pub mod proc;
pub mod request;
pub mod signal;
pub mod syscalls;
pub mod tty;

#[cfg(test)]
pub mod mock;
