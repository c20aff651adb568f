//! Per-core mailboxes: queued requests from one core to another.
//!
//! Nothing that guards isolation goes through here, because a bounded queue
//! can be full: TLB shootdowns have per-core inboxes (`tlb.rs`) and wake-ups
//! a per-core flag (`sched::kick`); both share this module's IPI vector, and
//! [`serve_urgent`] serves the shootdown inbox first. What remains is the
//! test harness's and the benchmarks' traffic (pings, echoes, work run on
//! every core).
//!
//! Each core has two bounded lock-free queues (`crossbeam_queue::ArrayQueue`,
//! multi-producer): `urgent` for [`Message`]s that the target handles in its
//! mailbox IPI handler (interrupts off, must be short and must not wait), and
//! `work` for functions that the target runs from its idle loop with
//! interrupts on (these may wait for other cores). Posting pushes the item
//! and sends the target a [`MAILBOX`](super::trap::vectors::MAILBOX)
//! IPI, which also wakes it from `hlt`.
//!
//! No wake-up is lost: the target drains `urgent` inside the IPI handler and
//! its idle loop (`sched::idle_loop`) checks `work` with interrupts disabled
//! right before `sti; hlt`, and an IPI that arrives in between stays pending
//! until `sti` takes effect.
//!
//! A *reschedule request* ([`kick`]) is one flag per core plus, when the
//! flag was clear, one mailbox IPI: it asks the core to look at its run
//! queue before it next returns to ring 3 or halts, and coalesces.
//!
//! This module owns each core's queues ([`init_this_cpu`] installs them at
//! bring-up) and reschedule flag, and registers the mailbox IPI's handler
//! ([`init`]); the interrupt path does not name it. It serves TLB shootdown
//! inboxes before its own queue (`tlb` sits below it) and never calls the
//! scheduler or the environments.
//!
//! Acknowledgement: an item may carry a reference to a counter; the target
//! increments it (release) after handling the item, and the sender waits for
//! the count it expects (acquire), bounded by a deadline. Handlers never wait,
//! so two cores waiting on each other's acknowledgements cannot deadlock: the
//! waits happen in idle-loop context, where interrupts stay enabled.

use super::apic;
use super::cpu::pause;
use super::percpu::{CacheAligned, MAX_CPUS, PerCore, cpu, current_index, online_cpus, this_cpu};
use super::time::Deadline;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crossbeam_queue::ArrayQueue;

/// Each core's queues (other cores push to them).
static MAILBOXES: PerCore<Mailbox> = PerCore::new();

/// Each core's reschedule request (see [`kick`]): set by any core, taken by
/// the owner.
static RESCHED: [CacheAligned<AtomicBool>; MAX_CPUS] =
    [const { CacheAligned(AtomicBool::new(false)) }; MAX_CPUS];

/// Capacity of each queue.
pub const QUEUE_CAPACITY: usize = 256;

/// Something a core asks another core to do in interrupt context.
#[derive(Clone, Copy, Debug)]
pub enum Message {
    /// Nothing but the acknowledgement: proves delivery.
    Ping,
    /// Run this function in the target's mailbox handler (interrupts off:
    /// it must be short and must not wait), with the sender's core index.
    Run(fn(usize)),
}

/// A function for a core's idle loop: `func(arg)`.
#[derive(Clone, Copy)]
pub struct Work {
    /// What to run.
    pub func: fn(usize),
    /// Its argument.
    pub arg: usize,
}

struct Envelope<T> {
    from: usize,
    item: T,
    ack: Option<&'static AtomicU64>,
}

/// One core's incoming queues.
pub struct Mailbox {
    urgent: ArrayQueue<Envelope<Message>>,
    work: ArrayQueue<Envelope<Work>>,
}

impl Default for Mailbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Mailbox {
    /// Empty queues.
    pub fn new() -> Mailbox {
        Mailbox { urgent: ArrayQueue::new(QUEUE_CAPACITY), work: ArrayQueue::new(QUEUE_CAPACITY) }
    }
}

/// Creates core `index`'s mailbox (its bring-up, before the core is
/// published: whoever finds the core online finds its mailbox).
pub fn init_this_cpu(index: usize) {
    MAILBOXES.install(index, Mailbox::new());
}

/// Whether there is idle-loop work pending for this core.
#[inline]
pub fn has_work() -> bool {
    !MAILBOXES.this().work.is_empty()
}

/// The next idle-loop work item posted to this core, if any; the caller
/// runs it, then [`Taken::acknowledge`]s it.
#[inline]
pub fn take_work() -> Option<Taken> {
    MAILBOXES.this().work.pop().map(|e| Taken { work: e.item, ack: e.ack })
}

/// An idle-loop work item taken from this core's queue.
pub struct Taken {
    /// What to run.
    pub work: Work,
    ack: Option<&'static AtomicU64>,
}

impl Taken {
    /// Tells the sender the work is done (if it asked to know).
    #[inline]
    pub fn acknowledge(self) {
        if let Some(ack) = self.ack {
            ack.fetch_add(1, Ordering::Release);
        }
    }
}

/// Makes `core` look at its run queue before it next returns to ring 3 or
/// halts: sets its reschedule request and, if the request was clear and
/// the core is another one, sends it one mailbox IPI. Never queues
/// anything, so it cannot fail or wait, and requests coalesce into the one
/// flag.
pub fn kick(core: usize) {
    let me = current_index();
    if core == me {
        // Checked before this core returns from the system call or interrupt
        // (`sched::finish`): no IPI to itself.
        RESCHED[me].store(true, Ordering::Release);
        return;
    }
    if let Some(target) = cpu(core)
        && !RESCHED[core].swap(true, Ordering::AcqRel)
    {
        apic::send_ipi(target.apic_id, super::trap::vectors::MAILBOX);
        traced_ipi(core);
    }
}

/// Records an IPI to `core` on the mailbox vector, if tracing is on.
#[inline(always)]
fn traced_ipi(core: usize) {
    let vector = u64::from(super::trap::vectors::MAILBOX);
    super::ktrace::record(kernel::trace::Kind::IpiSend, 0, core as u64 | vector << 32);
}

/// Whether this core has a reschedule request pending.
#[inline]
pub fn resched_pending() -> bool {
    RESCHED[current_index()].load(Ordering::Acquire)
}

/// Takes this core's reschedule request: whether there was one. Acquire:
/// pairs with [`kick`], so every wake-up that found the request set is
/// visible to the caller.
#[inline]
pub fn take_resched() -> bool {
    RESCHED[current_index()].swap(false, Ordering::AcqRel)
}

/// Why a post or a wait failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxError {
    /// No online core has that index.
    NoSuchCore(usize),
    /// The target's queue stayed full until the deadline.
    QueueFull(usize),
    /// The acknowledgements did not all arrive before the deadline.
    Timeout,
}

/// How long a post waits for room in a full queue.
const POST_TIMEOUT_MS: u64 = 1000;

/// Posts `msg` to core `target`'s urgent queue and wakes it.
pub fn post(
    target: usize,
    msg: Message,
    ack: Option<&'static AtomicU64>,
) -> Result<(), MailboxError> {
    let dest = cpu(target).ok_or(MailboxError::NoSuchCore(target))?;
    let mailbox = MAILBOXES.get(target).ok_or(MailboxError::NoSuchCore(target))?;
    push(&mailbox.urgent, Envelope { from: this_cpu().index, item: msg, ack }, dest.apic_id, target)
}

/// Posts `work` to core `target`'s idle-loop queue and wakes it.
pub fn post_work(
    target: usize,
    work: Work,
    ack: Option<&'static AtomicU64>,
) -> Result<(), MailboxError> {
    let dest = cpu(target).ok_or(MailboxError::NoSuchCore(target))?;
    let mailbox = MAILBOXES.get(target).ok_or(MailboxError::NoSuchCore(target))?;
    push(&mailbox.work, Envelope { from: this_cpu().index, item: work, ack }, dest.apic_id, target)
}

fn push<T>(
    queue: &ArrayQueue<T>,
    item: T,
    apic_id: u32,
    target: usize,
) -> Result<(), MailboxError> {
    if let Err(mut item) = queue.push(item) {
        // Full: keep the target awake and draining, retry until the deadline.
        let deadline = Deadline::after_ms(POST_TIMEOUT_MS);
        loop {
            apic::send_ipi(apic_id, super::trap::vectors::MAILBOX);
            // Keep answering other cores' shootdowns while waiting for room.
            super::tlb::serve_flushes();
            pause();
            match queue.push(item) {
                Ok(()) => break,
                Err(back) if deadline.passed() => {
                    drop(back);
                    return Err(MailboxError::QueueFull(target));
                }
                Err(back) => item = back,
            }
        }
    }
    apic::send_ipi(apic_id, super::trap::vectors::MAILBOX);
    traced_ipi(target);
    Ok(())
}

/// Waits until `counter` reaches `target`, bounded by `timeout_ms`. Must be
/// called with interrupts enabled (idle-loop or BSP context), so that this
/// core keeps serving its own mailbox while it waits.
pub fn wait_for(counter: &AtomicU64, target: u64, timeout_ms: u64) -> Result<(), MailboxError> {
    let deadline = Deadline::after_ms(timeout_ms);
    while counter.load(Ordering::Acquire) < target {
        if deadline.passed() {
            return Err(MailboxError::Timeout);
        }
        pause();
    }
    Ok(())
}

/// Runs `func(arg)` on every online core (this one included, directly) and
/// waits until all have finished.
pub fn run_on_all_cores(func: fn(usize), arg: usize, timeout_ms: u64) -> Result<(), MailboxError> {
    let me = this_cpu();
    let acks = &me.work_acks;
    let others = online_cpus() as u64 - 1;
    let expect = acks.load(Ordering::Acquire) + others;
    for index in (0..online_cpus()).filter(|&i| i != me.index) {
        post_work(index, Work { func, arg }, Some(acks))?;
    }
    func(arg);
    wait_for(acks, expect, timeout_ms)
}

/// Registers the mailbox IPI handler (boot, before the first IPI).
pub fn init() {
    super::trap::register(super::trap::vectors::MAILBOX, on_ipi);
}

/// The mailbox IPI handler: handles every urgent message (interrupts off).
fn on_ipi() {
    serve_urgent();
}

/// Handles every urgent message now. Also called by code that spins with
/// interrupts off (lock acquisition, shootdown waits), so that this core
/// never blocks another core's request while it waits.
pub fn serve_urgent() {
    // TLB shootdowns first: they have their own inbox, never a queue slot.
    super::tlb::serve_flushes();
    let Some(mailbox) = MAILBOXES.get(current_index()) else {
        return; // this core is still coming up: nobody can post to it yet
    };
    while let Some(env) = mailbox.urgent.pop() {
        match env.item {
            Message::Ping => {}
            Message::Run(func) => func(env.from),
        }
        if let Some(ack) = env.ack {
            ack.fetch_add(1, Ordering::Release);
        }
    }
}
