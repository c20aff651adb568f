//! CPU time and control transfer: time slots, slot upcalls, directed
//! yield, protected control transfer and the event queue.
//!
//! - [`alloc_slots`] / [`free_slots`] / [`schedule`]: this environment's
//!   share of a core's time vector (`abi::schedule` has the rules), and
//!   [`default_time`] to stay out of (or join) the default round-robin.
//! - [`set_slot_handlers`]: functions called at the start of one of our
//!   slots (prologue) and at its end (epilogue). After the epilogue
//!   function returns, this library yields — within the grace period, if
//!   the function is quick — and, when the vCPU runs again, resumes the
//!   interrupted code. Both run on the exception stacks ([`crate::exception`]).
//! - [`serve_calls`]: become a target of protected control transfers; each
//!   call runs the handler on the caller's core and time, on this
//!   environment's per-core IPC stack, and its result is the reply.
//!   [`call`] makes one; [`acall`] posts an asynchronous one to the
//!   target's event queue.
//! - [`Events`]: reads this environment's event queue without a system
//!   call.
//!
//! **Concurrency.** A call handler runs on the caller's core; several run
//! at once when callers on several cores call: it must only touch shared
//! state through atomics or locks. Calls into an environment on one core
//! share that core's IPC stack, so they nest only through the kernel's
//! rule: a call made from inside a call fails with `Busy`.

use abi::{Error, Rights, UpcallFrame, event::Event};
use spin::RwLock;

use crate::sys::{self, Message};
use crate::{exception, layout, mem};

/// A slot upcall: sees (and may edit) the interrupted context.
pub type SlotHandler = fn(&mut UpcallFrame);

static PROLOGUE: RwLock<Option<SlotHandler>> = RwLock::new(None);
static EPILOGUE: RwLock<Option<SlotHandler>> = RwLock::new(None);

/// Takes `count` free slots of `core`'s time vector; returns their bits.
pub fn alloc_slots(core: usize, count: u64) -> Result<u64, Error> {
    sys::slot_alloc(core, None, count)
}

/// The queueing delay of `core` since boot: TSC ticks that runnable
/// vCPUs of every environment waited there before they ran
/// ([`abi::Syscall::QueueDelay`]). This environment's own share on the
/// core it runs on is [`my_queue_delay`].
pub fn queue_delay(core: usize) -> Result<u64, Error> {
    sys::queue_delay(core)
}

/// This vCPU's queueing delay on the core it runs on: (TSC ticks it
/// waited runnable, waits that ended) since it started
/// ([`abi::VcpuPage::queue_tsc`], [`abi::VcpuPage::queue_waits`]).
pub fn my_queue_delay() -> (u64, u64) {
    let p = sys::vcpu_page();
    (p.queue_tsc, p.queue_waits)
}

/// Takes slot `index` of `core`'s time vector.
pub fn alloc_slot(core: usize, index: u64) -> Result<u64, Error> {
    sys::slot_alloc(core, Some(index), 1)
}

/// Gives back the slots in `mask` of `core`.
pub fn free_slots(core: usize, mask: u64) -> Result<(), Error> {
    sys::slot_free(core, mask).map(|_| ())
}

/// Whether this environment's vCPU on `core` takes part in the default
/// round-robin of unowned slots (it does at start).
pub fn default_time(core: usize, on: bool) -> Result<(), Error> {
    sys::set_default_time(core, on).map(|_| ())
}

/// `core`'s time vector as the kernel publishes it.
pub fn schedule(core: usize) -> Option<abi::schedule::CoreSchedule> {
    sys::core_schedule(core)
}

/// The slots of `core` this environment owns.
pub fn my_slots(core: usize) -> u64 {
    let me = crate::env_id() as u32;
    schedule(core).map_or(0, |s| {
        s.owner[..(s.len as usize).min(s.owner.len())]
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == me)
            .fold(0, |m, (i, _)| m | 1 << i)
    })
}

/// Installs the slot upcalls (`None`: none). Maps the exception stacks
/// if needed.
pub fn set_slot_handlers(
    prologue: Option<SlotHandler>,
    epilogue: Option<SlotHandler>,
) -> Result<(), Error> {
    exception::ensure_registered()?;
    *PROLOGUE.write() = prologue;
    *EPILOGUE.write() = epilogue;
    let entry = crate::entry::exception_entry_addr();
    sys::set_slot_handlers(
        if prologue.is_some() { entry } else { 0 },
        if epilogue.is_some() { entry } else { 0 },
    )
    .map(|_| ())
}

/// Rust side of a slot upcall (from the exception stub).
pub(crate) fn slot_upcall(frame: &mut UpcallFrame) -> ! {
    if frame.vector == abi::vector::SLOT_END {
        if let Some(f) = *EPILOGUE.read() {
            f(frame);
        }
        // The slot is over: yield (the kernel's abort protocol gives us the
        // grace period for everything up to here).
        let _ = sys::yield_now();
    } else if let Some(f) = *PROLOGUE.read() {
        f(frame);
    }
    crate::entry::resume_in_user(frame)
}

/// Directed yield: gives the rest of this slot to `env`'s vCPU on this core.
pub fn yield_to(env: u64) -> Result<(), Error> {
    sys::yield_to(env).map(|_| ())
}

/// A protected-control-transfer handler: `(caller, message) → reply`.
pub type CallHandler = fn(u64, Message) -> Message;

static CALL_HANDLER: RwLock<Option<CallHandler>> = RwLock::new(None);

/// Serves protected control transfers with `handler` (replacing any
/// previous one): maps an IPC stack for every core this environment may
/// be called on and registers the entry. Callers must be accepted
/// ([`accept`]; at start everyone is).
pub fn serve_calls(handler: CallHandler) -> Result<(), Error> {
    let cores = exception::fault_cores();
    for core in (0..abi::MAX_CORES).filter(|&c| cores & (1 << c) != 0) {
        let top = layout::ipc_stack_top(core);
        // Already mapped by an earlier call: fine.
        match mem::map_fresh(
            top - layout::IPC_STACK_SIZE,
            layout::IPC_STACK_SIZE / abi::PAGE_SIZE,
            Rights::RW,
        ) {
            Ok(()) | Err(Error::AlreadyMapped) => {}
            Err(e) => return Err(e),
        }
    }
    *CALL_HANDLER.write() = Some(handler);
    sys::ipc_register(crate::entry::ipc_entry_addr(), layout::IPC_STACK_TOP, layout::IPC_STACK_SLOT)
        .map(|_| ())
}

/// Accepts (or stops accepting) calls and notifications from `env`
/// (`abi::ANY_ENV`: everyone).
pub fn accept(env: u64, allow: bool) -> Result<(), Error> {
    sys::ipc_accept(env, allow).map(|_| ())
}

/// Rust side of the IPC entry: runs the handler and replies.
pub(crate) fn serve(caller: u64, msg: Message) -> ! {
    let handler = *CALL_HANDLER.read();
    let reply = match handler {
        Some(h) => h(caller, msg),
        None => [u64::MAX; 8],
    };
    let e = sys::reply(&reply);
    crate::println!("libos: reply failed: {e:?}");
    sys::exit(105)
}

/// Protected control transfer into `target`: runs its handler now, on this
/// core, and returns its reply.
pub fn call(target: u64, msg: &Message) -> Result<Message, Error> {
    sys::call(target, msg)
}

/// Asynchronous call: posts `[w0, w1]` to `target`'s event queue and wakes
/// it, on whatever core it sleeps.
pub fn acall(target: u64, w0: u64, w1: u64) -> Result<(), Error> {
    sys::acall(target, w0, w1).map(|_| ())
}

/// What [`Events::next`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// The next event.
    Event(Event),
    /// This many events were overwritten before we read them.
    Lost(u64),
}

/// A reader of this environment's event queue (`abi::event`).
#[derive(Debug)]
pub struct Events {
    next: u64,
}

impl Events {
    /// A reader that starts with the oldest event still in the queue.
    pub fn from_start() -> Events {
        Events { next: sys::event_tail().saturating_sub(abi::event::CAPACITY) }
    }

    /// A reader that sees only events posted from now on.
    pub fn from_now() -> Events {
        Events { next: sys::event_tail() }
    }

    /// Index of the next event this reader returns.
    pub fn position(&self) -> u64 {
        self.next
    }
}

/// Yields what has been posted so far; `None` means "nothing new yet" (the
/// reader can be polled again later: it is not fused).
impl Iterator for Events {
    type Item = Received;

    fn next(&mut self) -> Option<Received> {
        let tail = sys::event_tail();
        if self.next >= tail {
            return None;
        }
        if tail - self.next > abi::event::CAPACITY {
            let lost = tail - abi::event::CAPACITY - self.next;
            self.next += lost;
            return Some(Received::Lost(lost));
        }
        match sys::event_at(self.next) {
            Ok(event) => {
                self.next += 1;
                Some(Received::Event(event))
            }
            Err(seq) if seq > self.next + 1 => {
                // Overwritten while we looked: skip to what survives.
                let lost = tail.saturating_sub(abi::event::CAPACITY).max(self.next + 1) - self.next;
                self.next += lost;
                Some(Received::Lost(lost))
            }
            // Being written: the tail moved before the entry settled.
            Err(_) => None,
        }
    }
}
