//! Async synchronization inside an environment: channels, locks,
//! notification, `select!`/`join!`, task sets and abort.
//!
//! **What this module owns**: only the glue and the pieces no well-kept
//! `no_std` crate offered in the form we wanted ([`mpsc`], [`broadcast`],
//! [`JoinSet`], [`Notify`]'s names); everything else is re-exported
//! unchanged:
//!
//! | here | from |
//! |---|---|
//! | [`oneshot`] | `futures-channel` (alloc, no std) |
//! | [`mpsc`], [`broadcast`] | here, over `maitake-sync`'s [`WaitQueue`] (`futures-channel`'s `mpsc` needs `std`) |
//! | [`Mutex`], [`RwLock`], [`Semaphore`], [`WaitQueue`], [`WaitCell`] | `maitake-sync` (intrusive wait lists, no allocation per wait) |
//! | [`Notify`] | a thin tokio-named wrapper over `maitake-sync`'s [`WaitQueue`] |
//! | [`select_biased!`](crate::select_biased), [`join!`](crate::join), [`try_join!`](crate::try_join), [`pin_mut!`](crate::pin_mut) | `futures-util` |
//! | [`abortable`], [`AbortHandle`] | `futures-util` |
//!
//! **Integration with the executor** needs nothing special: every one of
//! these parks a task by keeping its [`Waker`](core::task::Waker) and
//! wakes it through it, and a waker of this runtime queues the task on its
//! home core and — if that core's executor sleeps in `SleepOn` — makes the
//! kernel re-evaluate its predicate at once (`exec`'s cross-core wake-up).
//! So a task waiting on a [`Notify`] lets its vCPU halt, and a
//! notification from another core wakes it (`rttest` 8 checks both).
//!
//! **Said plainly**: the `select!` macro is
//! [`select_biased!`](crate::select_biased) (branches are tried in order;
//! `futures-util`'s fair `select!` needs `std` for its random number); a
//! fair select is a function here, [`super::select_fair`] /
//! [`super::select_fair_all`] (a random order on each poll), not a macro.
//! `!Send` futures go to [`super::spawn_local`]. Abort is cooperative through
//! [`abortable`]: the future is dropped at its next poll, which the abort
//! causes (it wakes the task), and a poll under way is not interrupted.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::task::{Context, Poll};

pub use futures_channel::oneshot;
pub use futures_util::future::{AbortHandle, AbortRegistration, Abortable, Aborted, abortable};
pub use futures_util::{FutureExt, StreamExt, future::FusedFuture, stream::FuturesUnordered};
pub use maitake_sync::{
    Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Semaphore, WaitCell, WaitQueue,
};

use super::JoinHandle;
use super::catch::JoinError;

/// `futures-util`'s macros, re-exported at the crate root: see
/// [`crate::select_biased`], [`crate::join`], [`crate::try_join`],
/// [`crate::pin_mut`].
#[doc(hidden)]
pub use futures_util as __futures_util;

/// A notification for tasks, with tokio's names: [`notified`](Self::notified)
/// waits; [`notify_one`](Self::notify_one) wakes one waiter, or — if none
/// waits — lets the next `notified()` finish at once (one stored permit);
/// [`notify_waiters`](Self::notify_waiters) wakes every current waiter.
#[derive(Debug, Default)]
pub struct Notify {
    queue: WaitQueue,
}

impl Notify {
    /// No waiters, no stored permit.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Notify { queue: WaitQueue::new() }
    }

    /// No waiters, no stored permit (under `--cfg loom`, for the crate's
    /// loom models, maitake-sync's queue cannot be built in a `const fn`).
    #[cfg(loom)]
    pub fn new() -> Self {
        Notify { queue: WaitQueue::new() }
    }

    /// Waits for a notification.
    pub async fn notified(&self) {
        // A `Notify` is never closed (we never call `close`).
        let _ = self.queue.wait().await;
    }

    /// Wakes one waiter, or stores one permit if none waits.
    pub fn notify_one(&self) {
        self.queue.wake();
    }

    /// Wakes every task waiting now (stores nothing).
    pub fn notify_waiters(&self) {
        self.queue.wake_all();
    }
}

/// `select!` of this runtime: [`futures_util::select_biased!`] (branches
/// polled in the order written).
#[macro_export]
macro_rules! select_biased {
    ($($t:tt)*) => { $crate::rt::sync::__futures_util::select_biased!($($t)*) };
}

/// A fair `select!`: the branches of [`select_biased!`](crate::select_biased)
/// (`pattern = future => body,`; each future `FusedFuture + Unpin`, as
/// there), tried from a random one on, as tokio's `select!` does: each
/// call picks a rotation of the branch order with
/// [`random_below`](crate::rt::select::random_below) (the core's own
/// generator; `futures-util`'s fair `select!` needs `std` for its), so
/// when all are ready each wins equally often, and no branch that stays
/// ready is starved by one written before it. A pending branch passes its
/// turn to the next one. The rotation is chosen once per call (tokio
/// chooses at every poll); a future that becomes ready first still wins.
/// `complete` and `default` branches are not supported (use
/// `select_biased!`).
#[macro_export]
macro_rules! select {
    ($($p:pat = $f:expr => $b:expr),+ $(,)?) => {{
        let __select_n = 0usize $(+ { let _ = ::core::stringify!($b); 1usize })+;
        let __select_r = $crate::rt::select::random_below(__select_n);
        $crate::__select_rotation!(__select_r, 0usize, [], [$((($p) ($f) ($b)))+])
    }};
}

/// `select!`'s rotations: `[front] [back]` is the order `back ++ front`;
/// the arm for rotation `k` runs when the random pick is `k`.
#[doc(hidden)]
#[macro_export]
macro_rules! __select_rotation {
    ($r:ident, $k:expr, [$($front:tt)*], []) => {
        ::core::unreachable!("select!: rotation out of range")
    };
    ($r:ident, $k:expr, [$($front:tt)*], [$first:tt $($rest:tt)*]) => {
        if $r == $k {
            $crate::__select_branches!([] $first $($rest)* $($front)*)
        } else {
            $crate::__select_rotation!($r, $k + 1usize, [$($front)* $first], [$($rest)*])
        }
    };
}

/// `select!`'s branches, in one rotation, as `select_biased!` takes them.
#[doc(hidden)]
#[macro_export]
macro_rules! __select_branches {
    ([$($acc:tt)*]) => { $crate::select_biased! { $($acc)* } };
    ([$($acc:tt)*] (($p:pat) ($f:expr) ($b:expr)) $($more:tt)*) => {
        $crate::__select_branches!([$($acc)* $p = $f => $b,] $($more)*)
    };
}

/// Polls futures concurrently, returns all their outputs
/// ([`futures_util::join!`]).
#[macro_export]
macro_rules! join {
    ($($t:tt)*) => { $crate::rt::sync::__futures_util::join!($($t)*) };
}

/// [`futures_util::try_join!`]: like [`join!`](crate::join) for `Result`s,
/// ending at the first error.
#[macro_export]
macro_rules! try_join {
    ($($t:tt)*) => { $crate::rt::sync::__futures_util::try_join!($($t)*) };
}

/// Pins futures on the stack ([`futures_util::pin_mut!`]).
#[macro_export]
macro_rules! pin_mut {
    ($($t:tt)*) => { $crate::rt::sync::__futures_util::pin_mut!($($t)*) };
}

/// Spawns `fut` on the calling core like [`spawn`](super::spawn), with an
/// [`AbortHandle`]: `abort()` wakes the task, and its next poll drops
/// the future instead (the handle's output is then `Err(Aborted)`).
pub fn spawn_abortable<F>(fut: F) -> (JoinHandle<Result<F::Output, Aborted>>, AbortHandle)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (fut, handle) = abortable(fut);
    (super::spawn(fut), handle)
}

/// What a [`JoinSet`] task ended with.
pub type JoinResult<T> = Result<T, SetError>;

/// Why a [`JoinSet`] task has no output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetError {
    /// It panicked (caught: see [`catch`](super::catch)).
    Join(JoinError),
    /// [`JoinSet::abort_all`] ended it first.
    Aborted,
}

/// A set of spawned tasks, joined in the order they finish (tokio's
/// `JoinSet`): [`spawn`](Self::spawn), [`join_next`](Self::join_next),
/// [`abort_all`](Self::abort_all). Dropping the set aborts what is left.
pub struct JoinSet<T> {
    tasks: Vec<(JoinHandle<Result<T, Aborted>>, AbortHandle)>,
}

impl<T: Send + 'static> JoinSet<T> {
    /// An empty set.
    pub const fn new() -> Self {
        JoinSet { tasks: Vec::new() }
    }

    /// Tasks not joined yet.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether every task was joined.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Spawns `fut` on the calling core into the set.
    pub fn spawn<F>(&mut self, fut: F)
    where
        F: Future<Output = T> + Send + 'static,
    {
        self.tasks.push(spawn_abortable(fut));
    }

    /// Spawns `fut` on `core`'s executor into the set.
    pub fn spawn_on<F>(&mut self, core: usize, fut: F) -> Result<(), super::NoExecutor>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (fut, abort) = abortable(fut);
        let h = super::Builder::new().spawn_on(core, fut)?;
        self.tasks.push((h, abort));
        Ok(())
    }

    /// The next task to finish, `None` when the set is empty.
    pub fn join_next(&mut self) -> impl Future<Output = Option<JoinResult<T>>> + '_ {
        core::future::poll_fn(move |cx| self.poll_join_next(cx))
    }

    /// Polls for the next task to finish (every handle is polled: the
    /// set is meant for tens of tasks, not thousands).
    pub fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<JoinResult<T>>> {
        if self.tasks.is_empty() {
            return Poll::Ready(None);
        }
        for i in 0..self.tasks.len() {
            if let Poll::Ready(r) = self.tasks[i].0.poll_result(cx) {
                self.tasks.swap_remove(i);
                return Poll::Ready(Some(match r {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(Aborted)) => Err(SetError::Aborted),
                    Err(e) => Err(SetError::Join(e)),
                }));
            }
        }
        Poll::Pending
    }

    /// Aborts every task of the set (they end at their next poll; join
    /// them to see `SetError::Aborted`, or drop the set).
    pub fn abort_all(&self) {
        for (_, a) in &self.tasks {
            a.abort();
        }
    }
}

impl<T: Send + 'static> Default for JoinSet<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for JoinSet<T> {
    fn drop(&mut self) {
        for (_, a) in &self.tasks {
            a.abort();
        }
    }
}

pub mod broadcast {
    //! A bounded broadcast channel: every receiver sees every value sent
    //! after it subscribed, unless it falls more than `capacity` values
    //! behind; then its next `recv` says how many it missed
    //! ([`RecvError::Lagged`]) and goes on from the oldest value kept.
    //! Senders never wait. Values are cloned for each receiver.

    use super::*;
    use spin::Mutex as SpinMutex;

    struct Shared<T> {
        state: SpinMutex<State<T>>,
        /// Receivers wait here for the next value.
        waiters: WaitQueue,
    }

    struct State<T> {
        /// The last `capacity` values; `buf[0]` has sequence number `head`.
        buf: VecDeque<T>,
        head: u64,
        capacity: usize,
        senders: usize,
        receivers: usize,
    }

    /// Why [`Receiver::recv`] returned no value.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum RecvError {
        /// Every sender is gone and every value was received.
        Closed,
        /// The receiver fell behind and missed this many values.
        Lagged(u64),
    }

    /// The sending half (cloneable).
    pub struct Sender<T> {
        shared: Arc<Shared<T>>,
    }

    /// A receiving half; [`Sender::subscribe`] makes more.
    pub struct Receiver<T> {
        shared: Arc<Shared<T>>,
        /// The sequence number of the next value to receive.
        next: u64,
    }

    /// A channel keeping the last `capacity` (at least 1) values.
    pub fn channel<T: Clone>(capacity: usize) -> (Sender<T>, Receiver<T>) {
        let shared = Arc::new(Shared {
            state: SpinMutex::new(State {
                buf: VecDeque::with_capacity(capacity.max(1)),
                head: 0,
                capacity: capacity.max(1),
                senders: 1,
                receivers: 1,
            }),
            waiters: WaitQueue::new(),
        });
        (Sender { shared: shared.clone() }, Receiver { shared, next: 0 })
    }

    impl<T: Clone> Sender<T> {
        /// Sends `value` to every receiver; returns how many receivers
        /// there are now (with none, the value is dropped at once).
        pub fn send(&self, value: T) -> usize {
            let receivers = {
                let mut s = self.shared.state.lock();
                if s.receivers > 0 {
                    if s.buf.len() == s.capacity {
                        s.buf.pop_front();
                        s.head += 1;
                    }
                    s.buf.push_back(value);
                }
                s.receivers
            };
            self.shared.waiters.wake_all();
            receivers
        }

        /// A new receiver that sees the values sent from now on.
        pub fn subscribe(&self) -> Receiver<T> {
            let mut s = self.shared.state.lock();
            let next = s.head + s.buf.len() as u64;
            s.receivers += 1;
            drop(s);
            Receiver { shared: self.shared.clone(), next }
        }
    }

    impl<T> Clone for Sender<T> {
        fn clone(&self) -> Self {
            self.shared.state.lock().senders += 1;
            Sender { shared: self.shared.clone() }
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            let last = {
                let mut s = self.shared.state.lock();
                s.senders -= 1;
                s.senders == 0
            };
            if last {
                self.shared.waiters.wake_all();
            }
        }
    }

    impl<T: Clone> Receiver<T> {
        /// The next value, or why there is none now and never will be
        /// ([`RecvError::Closed`]) or why some were skipped
        /// ([`RecvError::Lagged`]).
        pub async fn recv(&mut self) -> Result<T, RecvError> {
            loop {
                // Subscribe to the wake-up before looking, so that a send
                // between the look and the wait is not missed.
                let shared = &*self.shared;
                let wait = shared.waiters.wait();
                futures_util::pin_mut!(wait);
                let _ = wait.as_mut().subscribe();
                match try_recv(shared, &mut self.next) {
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Closed) => return Err(RecvError::Closed),
                    Err(TryRecvError::Lagged(n)) => return Err(RecvError::Lagged(n)),
                    Ok(v) => return Ok(v),
                }
                let _ = wait.await;
            }
        }

        /// The next value if one is there.
        pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
            try_recv(&self.shared, &mut self.next)
        }
    }

    fn try_recv<T: Clone>(shared: &Shared<T>, next: &mut u64) -> Result<T, TryRecvError> {
        let s = shared.state.lock();
        if *next < s.head {
            let missed = s.head - *next;
            *next = s.head;
            return Err(TryRecvError::Lagged(missed));
        }
        let i = (*next - s.head) as usize;
        match s.buf.get(i) {
            Some(v) => {
                *next += 1;
                Ok(v.clone())
            }
            None if s.senders == 0 => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    impl<T> Drop for Receiver<T> {
        fn drop(&mut self) {
            self.shared.state.lock().receivers -= 1;
        }
    }

    /// Why [`Receiver::try_recv`] returned no value.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum TryRecvError {
        /// Nothing new yet.
        Empty,
        /// Every sender is gone and every value was received.
        Closed,
        /// The receiver fell behind and missed this many values.
        Lagged(u64),
    }
}

pub mod mpsc {
    //! Multi-producer, single-consumer channels: [`channel`]`(n)` holds at
    //! most `n` values (senders wait for room), [`unbounded`] never makes a
    //! sender wait. [`Receiver::recv`] gives `None` once every sender is
    //! gone and the queue is empty; [`Sender::send`] gives the value back
    //! once the receiver is gone.

    use super::*;
    use spin::Mutex as SpinMutex;

    struct Shared<T> {
        state: SpinMutex<State<T>>,
        /// The receiver waits here for a value (or the last sender's end).
        recv_wait: WaitQueue,
        /// Senders of a full bounded channel wait here for room.
        send_wait: WaitQueue,
    }

    struct State<T> {
        queue: VecDeque<T>,
        /// `None`: unbounded.
        capacity: Option<usize>,
        senders: usize,
        receiver: bool,
    }

    /// The sending half (cloneable).
    pub struct Sender<T> {
        shared: Arc<Shared<T>>,
    }

    /// The receiving half.
    pub struct Receiver<T> {
        shared: Arc<Shared<T>>,
    }

    /// The value of a send whose receiver is gone.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SendError<T>(pub T);

    /// Why [`Sender::try_send`] did not send (the value comes back).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum TrySendError<T> {
        /// The bounded channel is full.
        Full(T),
        /// The receiver is gone.
        Closed(T),
    }

    /// Why [`Receiver::try_recv`] returned nothing.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum TryRecvError {
        /// Nothing queued now.
        Empty,
        /// Every sender is gone and nothing is queued.
        Closed,
    }

    fn make<T>(capacity: Option<usize>) -> (Sender<T>, Receiver<T>) {
        let shared = Arc::new(Shared {
            state: SpinMutex::new(State {
                queue: VecDeque::new(),
                capacity,
                senders: 1,
                receiver: true,
            }),
            recv_wait: WaitQueue::new(),
            send_wait: WaitQueue::new(),
        });
        (Sender { shared: shared.clone() }, Receiver { shared })
    }

    /// A channel holding at most `capacity` (at least 1) values.
    pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
        make(Some(capacity.max(1)))
    }

    /// A channel without a bound (senders never wait).
    pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
        make(None)
    }

    impl<T> Sender<T> {
        /// Queues `value` if there is room now.
        pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
            {
                let mut s = self.shared.state.lock();
                if !s.receiver {
                    return Err(TrySendError::Closed(value));
                }
                if s.capacity.is_some_and(|c| s.queue.len() >= c) {
                    return Err(TrySendError::Full(value));
                }
                s.queue.push_back(value);
            }
            // One receiver: `wake` stores the wake-up if it is not waiting.
            self.shared.recv_wait.wake();
            Ok(())
        }

        /// Queues `value`, waiting for room in a full bounded channel.
        pub async fn send(&self, value: T) -> Result<(), SendError<T>> {
            let mut value = value;
            loop {
                let wait = self.shared.send_wait.wait();
                futures_util::pin_mut!(wait);
                let _ = wait.as_mut().subscribe();
                match self.try_send(value) {
                    Ok(()) => return Ok(()),
                    Err(TrySendError::Closed(v)) => return Err(SendError(v)),
                    Err(TrySendError::Full(v)) => value = v,
                }
                let _ = wait.await;
            }
        }

        /// Whether the receiver is gone.
        pub fn is_closed(&self) -> bool {
            !self.shared.state.lock().receiver
        }
    }

    impl<T> Clone for Sender<T> {
        fn clone(&self) -> Self {
            self.shared.state.lock().senders += 1;
            Sender { shared: self.shared.clone() }
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            let last = {
                let mut s = self.shared.state.lock();
                s.senders -= 1;
                s.senders == 0
            };
            if last {
                self.shared.recv_wait.wake();
            }
        }
    }

    impl<T> Receiver<T> {
        /// The next value if one is queued.
        pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
            try_recv(&self.shared)
        }
    }

    fn try_recv<T>(shared: &Shared<T>) -> Result<T, TryRecvError> {
        {
            let v = {
                let mut s = shared.state.lock();
                match s.queue.pop_front() {
                    Some(v) => v,
                    None if s.senders == 0 => return Err(TryRecvError::Closed),
                    None => return Err(TryRecvError::Empty),
                }
            };
            // Room for one more: wake one waiting sender.
            shared.send_wait.wake();
            Ok(v)
        }
    }

    impl<T> Receiver<T> {
        /// The next value; `None` once every sender is gone and the queue
        /// is empty.
        pub async fn recv(&mut self) -> Option<T> {
            loop {
                let shared = &*self.shared;
                let wait = shared.recv_wait.wait();
                futures_util::pin_mut!(wait);
                let _ = wait.as_mut().subscribe();
                match try_recv(shared) {
                    Ok(v) => return Some(v),
                    Err(TryRecvError::Closed) => return None,
                    Err(TryRecvError::Empty) => {}
                }
                let _ = wait.await;
            }
        }
    }

    impl<T> Drop for Receiver<T> {
        fn drop(&mut self) {
            self.shared.state.lock().receiver = false;
            self.shared.send_wait.wake_all();
        }
    }
}
