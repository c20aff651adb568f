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
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
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
    if crate::heap::out_of_memory() {
        crate::println!("libos: out of memory");
        crate::sys::exit(crate::heap::EXIT_OUT_OF_MEMORY)
    }
    crate::sys::exit(101)
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
