//! Console output: [`print!`](crate::print) and [`println!`](crate::println)
//! format into a buffer on the stack and hand it to `ConsoleWrite` — one
//! system call per line as long as the line fits in [`LINE_MAX`] bytes, so
//! lines from different vCPUs do not interleave.

use core::fmt::{self, Write};

/// Bytes buffered before a write is forced (well under
/// [`abi::CONSOLE_WRITE_MAX`]).
pub const LINE_MAX: usize = 512;

const _: () = assert!(LINE_MAX as u64 <= abi::CONSOLE_WRITE_MAX);

/// A formatting buffer that passes full chunks to `sink`.
pub struct LineBuf<F: FnMut(&[u8])> {
    buf: [u8; LINE_MAX],
    len: usize,
    sink: F,
}

impl<F: FnMut(&[u8])> LineBuf<F> {
    /// An empty buffer writing to `sink`.
    pub fn new(sink: F) -> Self {
        Self { buf: [0; LINE_MAX], len: 0, sink }
    }

    /// Passes whatever is buffered to the sink.
    pub fn flush(&mut self) {
        if self.len > 0 {
            (self.sink)(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl<F: FnMut(&[u8])> Write for LineBuf<F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut bytes = s.as_bytes();
        while !bytes.is_empty() {
            if self.len == LINE_MAX {
                self.flush();
            }
            let n = bytes.len().min(LINE_MAX - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
        Ok(())
    }
}

fn console_sink(bytes: &[u8]) {
    let _ = crate::sys::console_write(bytes);
}

/// Implementation of [`print!`](crate::print).
pub fn _print(args: fmt::Arguments) {
    let mut w = LineBuf::new(console_sink);
    let _ = w.write_fmt(args);
    w.flush();
}

/// Implementation of [`println!`](crate::println).
pub fn _print_line(args: fmt::Arguments) {
    let mut w = LineBuf::new(console_sink);
    let _ = w.write_fmt(args);
    let _ = w.write_str("\n");
    w.flush();
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!($($arg)*))
    };
}

/// Prints a line to the console (one system call when it fits in
/// [`console::LINE_MAX`](crate::console::LINE_MAX)).
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::_print(::core::format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::_print_line(::core::format_args!($($arg)*))
    };
}

/// The panic handler: `panic in env E on core C: msg at file:line`, then
/// exit code 101 — or 104 ([`crate::heap::EXIT_OUT_OF_MEMORY`]) when an
/// allocation failed (Rust's allocation-error path panics).
///
/// A task's panic inside its poll is first offered to
/// [`crate::rt::catch`], which hands it to the task's joiner and goes on
/// (it does not come back here) unless the runtime cannot recover from it.
/// Either way a `backtrace:` line of return addresses follows the report
/// ([`print_backtrace`]; `cargo xtask` symbolizes it).
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    crate::rt::catch::on_panic(info);
    let mut w = LineBuf::new(console_sink);
    let _ = write!(
        w,
        "panic in env {} on core {}: {}",
        crate::env_id(),
        crate::core_id(),
        info.message()
    );
    if let Some(loc) = info.location() {
        let _ = write!(w, " at {}:{}", loc.file(), loc.line());
    }
    let _ = w.write_str("\n");
    w.flush();
    print_backtrace();
    if crate::heap::out_of_memory() {
        crate::println!("libos: out of memory");
        crate::sys::exit(crate::heap::EXIT_OUT_OF_MEMORY)
    }
    crate::sys::exit(101)
}

/// Prints `backtrace [env E core C]: 0x... 0x...`: the return addresses of the calling
/// stack, newest first, at most 32, found by walking the frame-pointer
/// chain (every program is built with frame pointers). The walk reads
/// only 8-aligned words inside regions of [`crate::vm`] (stacks are
/// regions), so a corrupted chain ends it early instead of faulting; it
/// stops at a return address outside the program's text. `cargo xtask`
/// resolves the addresses with the program's ELF.
#[cfg(target_os = "none")]
#[allow(unsafe_code, reason = "reads the frame-pointer chain")]
pub fn print_backtrace() {
    let mut w = LineBuf::new(console_sink);
    // Tagged with env and core: panics on several cores may interleave.
    let _ = write!(w, "backtrace [env {} core {}]:", crate::env_id(), crate::core_id());
    let mut rbp: u64;
    // SAFETY: reads the frame pointer register.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags))
    };
    let text = abi::USER_MIN..crate::redirect::foreign_range().1;
    let mut span = None::<(u64, u64)>;
    for _ in 0..32 {
        if rbp == 0 || !rbp.is_multiple_of(8) {
            break;
        }
        // Both words must lie in one region's mapped part (not its guard).
        let inside = |(lo, hi): (u64, u64)| rbp >= lo && rbp + 16 <= hi;
        if !span.is_some_and(inside) {
            span = crate::vm::try_region_at(rbp).map(|r| (r.base, r.end));
            if !span.is_some_and(inside) {
                break;
            }
        }
        // SAFETY: `rbp` is 8-aligned and both words lie inside a region
        // of this environment (mapped, or filled on first touch).
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if !text.contains(&ret) {
            break;
        }
        let _ = write!(w, " {ret:#x}");
        if next <= rbp {
            break; // stacks grow down: the chain must go up
        }
        rbp = next;
    }
    let _ = w.write_str("\n");
    w.flush();
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn short_lines_are_one_write_and_long_ones_are_chunked() {
        let mut writes: Vec<Vec<u8>> = Vec::new();
        {
            let mut w = LineBuf::new(|b: &[u8]| writes.push(b.to_vec()));
            writeln!(w, "hello {} on core {}", 3, 1).unwrap();
            w.flush();
        }
        assert_eq!(writes, [b"hello 3 on core 1\n".to_vec()]);

        writes.clear();
        {
            let mut w = LineBuf::new(|b: &[u8]| writes.push(b.to_vec()));
            for _ in 0..(LINE_MAX * 2 + 10) {
                w.write_str("x").unwrap();
            }
            w.flush();
        }
        let lens: Vec<usize> = writes.iter().map(Vec::len).collect();
        assert_eq!(lens, [LINE_MAX, LINE_MAX, 10]);
    }
}
