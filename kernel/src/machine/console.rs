//! The serial console (COM1) and the `log` backend.
//!
//! All kernel output goes to COM1, which QEMU connects to stdio. Writers take
//! one spin lock with interrupts disabled, so a line is never interleaved
//! with another core's line and an interrupt handler on the same core cannot
//! deadlock on it. The panic path bypasses the lock ([`emergency_write`]):
//! a core that panicked while holding it must still be heard.
//!
//! Log lines look like `[cpu 3] INFO  message`; machine-read lines (the boot
//! line, test results, bench results) are printed with [`kprintln!`] without
//! any prefix.

use core::fmt::{self, Write};
use kernel::cmdline::LogLevel;
use spin::Mutex;
use uart_16550::SerialPort;
use x86_64::instructions::interrupts::without_interrupts;

const COM1: u16 = 0x3f8;

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
