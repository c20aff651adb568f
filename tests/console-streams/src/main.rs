//! `console-streams`: the split console's end-to-end check (`cargo xtask
//! test`'s `[posix] console_streams_*`, booted with `console=split`).
//!
//! Writes to stream 1 (stdout) every byte value 0..=255 in one call, then
//! one call of exactly `CONSOLE_WRITE_MAX` bytes (`i * 7 mod 251`), then
//! `"out end\n"`; to stream 2 (stderr) `"err\r\n\0\x7f\x08 end\n"`; a line on
//! stream 0 (the kernel console, which must not show up in either) between
//! them; then checks that an unknown stream is refused. xtask compares the
//! two channels with the same bytes (`xtask/src/posix.rs`,
//! `console_streams_expected`). The start argument's low 32 bits are the
//! exit code; with bit 32 set the program executes `ud2` instead of
//! exiting (the kernel kills it: the "killed" report).

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

use libos_async::abi::{self, ConsoleStream};
use libos_async::sys::{self, probe};

libos_async::entry!(app_main);

fn app_main(arg: u64) -> i32 {
    let mut all = [0u8; 256];
    for (i, b) in all.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut big = [0u8; abi::CONSOLE_WRITE_MAX as usize];
    for (i, b) in big.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    let mut failed = false;
    let mut write = |stream, bytes: &[u8]| {
        let got = sys::console_write_to(stream, bytes);
        if got != Ok(bytes.len() as u64) {
            failed = true;
        }
    };
    write(ConsoleStream::Stdout, &all);
    write(ConsoleStream::Kernel, b"console-streams: a kernel-console line\n");
    write(ConsoleStream::Stdout, &big);
    write(ConsoleStream::Stderr, b"err\r\n\0\x7f\x08 end\n");
    write(ConsoleStream::Stdout, b"out end\n");
    let bad = sys::syscall3(abi::Syscall::ConsoleWrite as u64, 0, 0, 3);
    if abi::decode(bad) != Err(abi::Error::InvalidArgument) {
        failed = true;
    }
    if failed {
        // Status 254 with this line: xtask's comparison names it.
        let _ = sys::console_write_to(ConsoleStream::Stderr, b"CHECK FAILED: a write\n");
        return 254;
    }
    if arg & (1 << 32) != 0 {
        probe::ud2();
    }
    arg as u32 as i32
}
