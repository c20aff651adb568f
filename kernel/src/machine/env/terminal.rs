//! Console input as a capability: who may read what is typed on COM1.
//!
//! The kernel keeps one **reader**: the environment the boot gave the
//! console to (`stdin=console`: the first `init` application), or one it
//! handed it to with `ConsoleGive` (a child of its own). Only the reader's
//! `ConsoleRead` takes bytes; anyone else gets `PermissionDenied`, so a
//! hostile environment cannot steal keystrokes. When a reader that was
//! given the console ends, the console goes back to its giver if that one
//! still lives (the givers are kept as a bounded stack, [`GIVERS_MAX`]).
//!
//! The receive interrupt ([`on_receive`], on the bootstrap processor)
//! moves the UART's bytes into the console's bounded buffer, adds their
//! number to the reader's `InfoPage::console_input` and wakes the reader's
//! sleeping vCPUs — the same wake-up as an event's, so a predicate over
//! that word sleeps until input. It never waits for a reader.
//!
//! Locks: [`TERMINAL`] is a leaf taken with interrupts off (the receive
//! interrupt takes it; nothing is looked up or freed under it).
//! [`READING`] serialises readers around their copy to user memory:
//! `READING → Env::aspace`.

use super::{Env, info_word, lookup, wake};
use crate::machine::console;
use abi::Error;
use alloc::sync::Arc;
use alloc::vec::Vec;
use kernel::ownership::EnvId;
use spin::Mutex;
use x86_64::instructions::interrupts::without_interrupts;

/// The most givers remembered; a deeper chain forgets its oldest.
pub const GIVERS_MAX: usize = 16;

struct Terminal {
    /// Who may read.
    reader: Option<Arc<Env>>,
    /// Who gave it the console, most recent last.
    givers: Vec<EnvId>,
}

static TERMINAL: Mutex<Terminal> = Mutex::new(Terminal { reader: None, givers: Vec::new() });

/// Held by a reader from its look at the buffer to taking the bytes.
static READING: Mutex<()> = Mutex::new(());

/// Dropped bytes already reported in the log.
static DROPS_REPORTED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn console_input_offset() -> u64 {
    core::mem::offset_of!(abi::InfoPage, console_input) as u64
}

/// The receive interrupt's handler (registered by `start` for the vector
/// COM1's line is routed to).
pub fn on_receive() {
    let arrived = console::receive();
    if arrived == 0 {
        return;
    }
    without_interrupts(|| {
        let t = TERMINAL.lock();
        if let Some(env) = &t.reader {
            info_word(env, console_input_offset())
                .fetch_add(arrived as u64, core::sync::atomic::Ordering::AcqRel);
            wake(env);
        }
    });
}

/// Puts `bytes` into the console input as if typed, and tells the reader
/// as the receive interrupt does (the kernel's tests). Returns how many
/// were accepted.
pub fn inject(bytes: &[u8]) -> usize {
    let accepted = console::inject_input(bytes);
    without_interrupts(|| {
        let t = TERMINAL.lock();
        if let Some(env) = &t.reader {
            info_word(env, console_input_offset())
                .fetch_add(bytes.len() as u64, core::sync::atomic::Ordering::AcqRel);
            wake(env);
        }
    });
    accepted
}

/// Makes `env` the reader (the boot's `stdin=console`), unless it is
/// already ending.
pub fn give_at_boot(env: &Arc<Env>) {
    let old = without_interrupts(|| {
        let mut t = TERMINAL.lock();
        // Under the lock: `terminate` marks an environment dying before it
        // takes this lock (`reader_ended`), so either it sees the new
        // reader and clears it, or this sees it dying. A dead reader would
        // have the interrupt write into its reclaimed info page.
        if env.is_dying() {
            return None;
        }
        t.givers.clear();
        t.reader.replace(env.clone())
    });
    drop(old);
}

/// Whether anybody reads the console now.
pub fn has_reader() -> bool {
    without_interrupts(|| TERMINAL.lock().reader.is_some())
}

/// Whether `env` is the reader now.
pub fn is_reader(env: &Env) -> bool {
    without_interrupts(|| TERMINAL.lock().reader.as_ref().is_some_and(|r| r.id == env.id))
}

/// `ConsoleRead`: up to `len` (≤ `CONSOLE_READ_MAX`, decoded) bytes to `ptr`.
pub fn read(env: &Env, ptr: u64, len: u64) -> Result<u64, Error> {
    if !is_reader(env) {
        return Err(Error::PermissionDenied);
    }
    let mut buf = [0u8; abi::CONSOLE_READ_MAX as usize];
    let want = (len as usize).min(buf.len());
    let _reading = READING.lock();
    let n = console::peek_input(&mut buf[..want]);
    if n > 0 {
        // A bad pointer leaves the bytes where they are.
        super::copy_to_user(env, ptr, &buf[..n])?;
        console::consume_input(n);
    }
    let (_, _, dropped) = console::input_counts();
    let reported = DROPS_REPORTED.swap(dropped, core::sync::atomic::Ordering::AcqRel);
    if dropped > reported {
        log::warn!("console input: {} bytes dropped (buffer full)", dropped - reported);
    }
    Ok(n as u64)
}

/// `ConsoleGive`: the reader `env` hands the console to its child `child`.
pub fn give(env: &Env, child: EnvId) -> Result<(), Error> {
    if !is_reader(env) {
        return Err(Error::PermissionDenied);
    }
    let target = lookup(child).filter(|c| !c.is_dying()).ok_or(Error::NoSuchEnv)?;
    if target.creator != env.id || target.id == env.id {
        return Err(Error::NotOwner);
    }
    let old = without_interrupts(|| {
        let mut t = TERMINAL.lock();
        // Another vCPU of the reader may have given it away meanwhile.
        if t.reader.as_ref().is_none_or(|r| r.id != env.id) {
            return Err(Error::PermissionDenied);
        }
        // Checked under the lock, as in `give_at_boot`.
        if target.is_dying() {
            return Err(Error::NoSuchEnv);
        }
        if t.givers.len() == GIVERS_MAX {
            t.givers.remove(0);
        }
        t.givers.push(env.id);
        // Told under the lock, as the receive interrupt does.
        handed_over(&target);
        Ok(t.reader.replace(target))
    })?;
    drop(old);
    Ok(())
}

/// Tells a new reader to look at the buffer: its `console_input` changes
/// and its sleepers wake.
fn handed_over(env: &Env) {
    info_word(env, console_input_offset()).fetch_add(1, core::sync::atomic::Ordering::AcqRel);
    wake(env);
}

/// `env` is ending (`terminate`): if it reads the console, the console
/// goes back to the most recent giver still alive.
pub fn reader_ended(env: &Env) {
    let givers = without_interrupts(|| {
        let mut t = TERMINAL.lock();
        if t.reader.as_ref().is_none_or(|r| r.id != env.id) {
            return None;
        }
        Some((t.reader.take(), core::mem::take(&mut t.givers)))
    });
    let Some((old, mut givers)) = givers else { return };
    // Dropped with no lock held (the caller holds `env`: not the last).
    drop(old);
    while let Some(id) = givers.pop() {
        let Some(giver) = lookup(id).filter(|g| !g.is_dying()) else { continue };
        let put = without_interrupts(|| {
            let mut t = TERMINAL.lock();
            if t.reader.is_some() || giver.is_dying() {
                return false;
            }
            // Bytes may be waiting that the giver's sleep never saw. Told
            // under the lock: a reader seen here is not reclaimed yet.
            handed_over(&giver);
            t.reader = Some(giver.clone());
            t.givers = core::mem::take(&mut givers);
            true
        });
        if put {
            return;
        }
        if without_interrupts(|| TERMINAL.lock().reader.is_some()) {
            return;
        }
    }
}
