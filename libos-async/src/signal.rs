//! Signal upcalls (`abi::signal`): the entry the kernel enters when signal
//! bits are posted to this environment.
//!
//! The entry is the exception stub (the same stacks, one per core); its
//! dispatcher hands a frame with vector [`abi::vector::SIGNAL`] to the
//! handler installed here, which must end by resuming a context itself
//! (normally with [`resume`], which unmasks the next upcall in the same
//! step). Without a handler the bits are dropped and the frame resumed.

use abi::{Error, UpcallFrame};
use spin::RwLock;

use crate::{exception, sys};

/// A signal upcall handler: `frame.error_code` holds the bits taken.
pub type Handler = fn(&mut UpcallFrame) -> !;

static HANDLER: RwLock<Option<Handler>> = RwLock::new(None);

/// `SignalPost`.
const SIGNAL_POST: u64 = 52;
/// `SignalEntry`.
const SIGNAL_ENTRY: u64 = 53;
/// `SignalCtl`.
const SIGNAL_CTL: u64 = 54;
/// `ChildSignal`.
const CHILD_SIGNAL: u64 = 51;

/// Installs `handler` and registers the entry with the kernel for the
/// vCPUs on `cores` (bit per core; 0: all).
pub fn set_signal_handler(handler: Handler, cores: u64) -> Result<(), Error> {
    exception::ensure_registered()?;
    *HANDLER.write() = Some(handler);
    abi::decode(sys::syscall2(SIGNAL_ENTRY, crate::entry::exception_entry_addr(), cores))
        .map(|_| ())
}

/// Posts `bits` to environment `target`: `Ok(true)` if it takes upcalls.
pub fn post(target: u64, bits: u64) -> Result<bool, Error> {
    abi::decode(sys::syscall2(SIGNAL_POST, target, bits)).map(|v| v == 1)
}

/// Asks the kernel to post `bits` to this environment whenever one of its
/// children ends (`abi::Syscall::ChildSignal`; 0: stop).
pub fn on_child_end(bits: u64) -> Result<(), Error> {
    abi::decode(sys::syscall1(CHILD_SIGNAL, bits)).map(|_| ())
}

/// Takes the bits pending for this environment (those no upcall took).
pub fn take() -> u64 {
    abi::decode(sys::syscall2(SIGNAL_CTL, abi::signal::TAKE, 0)).unwrap_or(0)
}

/// Masks signal upcalls (bits accumulate) until [`resume`] or an unmask.
pub fn mask() -> Result<u64, Error> {
    abi::decode(sys::syscall2(SIGNAL_CTL, abi::signal::MASK, 0))
}

/// Unmasks signal upcalls and resumes `frame` in one step (see
/// `abi::signal::RESUME`). Returns only on failure.
pub fn resume(frame: &UpcallFrame) -> Error {
    let r = sys::syscall2(SIGNAL_CTL, abi::signal::RESUME, frame as *const UpcallFrame as u64);
    abi::decode(r).err().unwrap_or(Error::InvalidArgument)
}

/// Rust side of a signal upcall (from the exception dispatcher).
pub(crate) fn upcall(frame: &mut UpcallFrame) -> ! {
    // The guard must go before the handler runs: a handler never returns,
    // so a guard held across it would stay taken for good (and a forked
    // child, which inherits this memory, could never install its own).
    let handler = *HANDLER.read();
    if let Some(h) = handler {
        h(frame);
    }
    let e = resume(frame);
    crate::println!("libos: signal resume failed: {e:?}");
    sys::exit(102)
}
