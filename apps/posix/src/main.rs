//! `posix`: the POSIX runtime environment. It runs one unmodified static
//! x86-64 Linux executable from the initrd, in its own address space, with
//! the program's system calls redirected to this environment's own library
//! (libos-posix), as Xok's emulator did.
//!
//! At start it
//! 1. maps the initrd read-only (`InitrdMap`) at `layout::INITRD_VA` and
//!    builds libos-posix's file system on it (zero-copy);
//! 2. reads the run request `/etc/exo-run` (`libos_posix::request`);
//! 3. loads the program with libos-posix's plan into this address space
//!    (frames from `FrameAlloc`, `Map`) and builds its start stack
//!    (argc, argv, envp, auxv with `AT_RANDOM`, `AT_PHDR`/`PHENT`/`PHNUM`,
//!    `AT_PAGESZ`, `AT_ENTRY`);
//! 4. registers system-call redirection with its own image as the library
//!    range (`redirect`) and jumps to the entry point with `rdx` = 0.
//!
//! From then on every `syscall` of the program enters `redirect`'s
//! handler in ring 3, which answers it with
//! `libos_posix::syscalls::dispatch` over the `glue` (the exokernel's
//! primitives) and returns to the program without entering the kernel.
//! `exit_group` ends the environment with the program's status.
//!
//! Start argument 0 runs the request; 1–3 run built-in programs for the
//! kernel's tests (`builtin`).
//!
//! Exit statuses of its own: 127 when there is nothing to run (no initrd,
//! no request, no such program), 126 when the program cannot be loaded (not
//! a static x86-64 ELF, out of memory); each with one line on standard
//! error saying why. A program killed by an exception (a page fault, an
//! invalid opcode, ...) ends with 128 + the signal Linux would send (139
//! for a segmentation fault) and one line on standard error.
//!
//! Linked at `0x7000_0000` (see `build.rs`), away from the programs'
//! `0x400000` and their break. Built for `x86_64-unknown-none` (soft-float: no SSE
//! instruction anywhere), so the handler never touches the program's
//! vector registers.

#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

#[cfg(target_os = "none")]
mod builtin;
#[cfg(target_os = "none")]
mod chans;
#[cfg(target_os = "none")]
mod fsserver;
#[cfg(target_os = "none")]
mod glue;
#[cfg(target_os = "none")]
mod layout;
#[cfg(target_os = "none")]
mod pipes;
#[cfg(target_os = "none")]
mod procs;
#[cfg(target_os = "none")]
mod redirect;
#[cfg(target_os = "none")]
mod run;
#[cfg(target_os = "none")]
mod shmcopy;
#[cfg(target_os = "none")]
mod signal;

libos_async::entry!(app_main);

#[cfg(target_os = "none")]
fn app_main(arg: u64) -> i32 {
    run::run(arg)
}

#[cfg(not(target_os = "none"))]
fn app_main(_arg: u64) -> i32 {
    0
}
