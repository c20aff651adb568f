//! The serial console (COM1), the program console streams, and the `log`
//! backend.
//!
//! All kernel output goes to COM1, which QEMU connects to stdio (xtask reads
//! it through a pipe and keeps it under `target/logs/`). Environments write
//! to three streams (`abi::ConsoleStream`): stream 0 is the kernel console
//! (COM1, as text); streams 1 and 2 — a program's stdout and stderr — go to
//! COM1 as well unless the command line says `console=split`, and then each
//! goes to its own QEMU `isa-debugcon` device ([`STDOUT_PORT`],
//! [`STDERR_PORT`]): one `out` per byte, no UART line discipline, no flow
//! control, no translation, so the host file behind the device holds
//! exactly the bytes written and never a kernel line. Writers take
//! one spin lock with interrupts disabled, so a line is never interleaved
//! with another core's line and an interrupt handler on the same core cannot
//! deadlock on it. The panic path bypasses the lock ([`emergency_write`]):
//! a core that panicked while holding it must still be heard.
//!
//! Log lines look like `[cpu 3] INFO  message`; machine-read lines (the boot
//! line, test results, bench results) are printed with [`kprintln!`] without
//! any prefix.

use abi::ConsoleStream;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::cmdline::LogLevel;
use spin::Mutex;
use uart_16550::SerialPort;
use x86_64::instructions::interrupts::without_interrupts;
use x86_64::instructions::port::PortWriteOnly;

const COM1: u16 = 0x3f8;
/// The I/O port of the `isa-debugcon` device that takes stream 1 (stdout)
/// under `console=split` (xtask: `-device isa-debugcon,iobase=0xe9,...`).
pub const STDOUT_PORT: u16 = 0xe9;
/// The I/O port of the device that takes stream 2 (stderr).
pub const STDERR_PORT: u16 = 0xea;

/// Whether `console=split` is on (set once at boot, before any environment).
static SPLIT: AtomicBool = AtomicBool::new(false);
/// One lock per split stream: one call's bytes are never interleaved with
/// another's.
static STREAM_LOCKS: [Mutex<()>; 2] = [Mutex::new(()), Mutex::new(())];

// SAFETY: COM1 is the standard PC serial port; QEMU always provides it and
// nothing else in the kernel drives these ports.
static SERIAL: Mutex<SerialPort> = Mutex::new(unsafe { SerialPort::new(COM1) });

/// Initialises the UART. Call once on the bootstrap processor, first thing.
pub fn init() {
    SERIAL.lock().init();
}

/// Writes formatted text under the console lock.
pub fn write_fmt(args: fmt::Arguments) {
    without_interrupts(|| {
        // The UART never reports an error; a formatting error is dropped.
        let _ = SERIAL.lock().write_fmt(args);
    });
}

/// Sends streams 1 and 2 to their own devices from now on
/// (`console=split`). Call at boot, before any environment runs.
pub fn set_split(split: bool) {
    SPLIT.store(split, Ordering::Release);
}

/// Writes `bytes` to console stream `stream` (the `ConsoleWrite` system
/// call and ring operation, after the copy from user memory).
pub fn write_stream(stream: ConsoleStream, bytes: &[u8]) {
    let port = match stream {
        ConsoleStream::Stdout => STDOUT_PORT,
        ConsoleStream::Stderr => STDERR_PORT,
        ConsoleStream::Kernel => {
            let text = core::str::from_utf8(bytes).unwrap_or("<invalid UTF-8>");
            return write_fmt(format_args!("{text}"));
        }
    };
    if !SPLIT.load(Ordering::Acquire) {
        // Shared console: the bytes as they are, in one piece among the
        // kernel's lines (no text translation of backspace or DEL).
        return without_interrupts(|| {
            let mut serial = SERIAL.lock();
            for &b in bytes {
                serial.send_raw(b);
            }
        });
    }
    let lock = &STREAM_LOCKS[usize::from(port == STDERR_PORT)];
    without_interrupts(|| {
        let _held = lock.lock();
        let mut out = PortWriteOnly::<u8>::new(port);
        for &b in bytes {
            // SAFETY: the port is the `isa-debugcon` device xtask attaches
            // for this stream under `console=split`; writing a byte only
            // hands it to the device (on a machine without it the port is
            // unclaimed and the write is ignored). Nothing else in the
            // kernel uses these ports.
            unsafe { out.write(b) };
        }
    });
}

/// Writes formatted text without the lock, for the panic path only.
pub fn emergency_write(args: fmt::Arguments) {
    // SAFETY: a second handle on COM1. At worst its bytes interleave with a
    // line another core is printing; the panic report must not wait for a
    // lock that the panicking core itself may hold.
    let mut port = unsafe { SerialPort::new(COM1) };
    let _ = port.write_fmt(args);
}

/// Prints a line to the console, with no prefix.
macro_rules! kprintln {
    ($($arg:tt)*) => {
        $crate::machine::console::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use kprintln;

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let cpu = super::percpu::try_current_index().unwrap_or(0);
            write_fmt(format_args!("[cpu {cpu}] {:<5} {}\n", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}

/// Installs the `log` backend at the given level.
pub fn init_log(level: LogLevel) {
    let filter = match level {
        LogLevel::Off => log::LevelFilter::Off,
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    };
    // Only fails if called twice, which the boot path does not do.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(filter);
}
