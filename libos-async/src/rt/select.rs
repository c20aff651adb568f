//! A fair `select`: wait for the first of several futures, trying them
//! in a random order on every poll.
//!
//! `futures-util`'s fair `select!` macro needs `std` (for its random
//! number), so this runtime's [`select_biased!`](crate::select_biased)
//! always tries its branches in order: in a loop where the first branch
//! is always ready, the others starve. [`select_fair`] (two futures of any
//! types) and [`select_fair_all`] (any number of one type) try them in a
//! random order on each poll instead, so when several are ready each is
//! the one returned equally often. The random numbers come from the libOS's
//! xorshift ([`crate::rng::Rng`]), one state per core, stepped once per
//! poll (no lock, no shared cache line between cores); they are not
//! unpredictable, only spread evenly.
//!
//! Like `futures-util`'s `select` and `select_all`, these take `Unpin`
//! futures (pin others with `Box::pin` or
//! [`pin_mut!`](crate::pin_mut)) and give back the ones that lost, so a
//! loop can select on them again.
//!
//! ```ignore
//! use libos_async::rt::select::{select_fair, Either};
//! loop {
//!     match select_fair(rx_a.recv(), rx_b.recv()).await {
//!         Either::Left((msg, _)) => handle_a(msg),
//!         Either::Right((msg, _)) => handle_b(msg),
//!     }
//! }
//! ```

use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll};

pub use futures_util::future::Either;

use crate::rng::Rng;

/// One xorshift state per core (each written only by its own core; an
/// atomic only so that a static can hold it).
static STATE: [AtomicU64; abi::MAX_CORES] = {
    let mut s = [const { AtomicU64::new(0) }; abi::MAX_CORES];
    let mut i = 0;
    while i < abi::MAX_CORES {
        // Distinct odd seeds per core (never 0).
        s[i] = AtomicU64::new(0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) << 32) | 1);
        i += 1;
    }
    s
};

/// A random number in `0..n` (`n` > 0) from the calling core's state.
pub fn random_below(n: usize) -> usize {
    let core = super::machine::current_core() % abi::MAX_CORES;
    let slot = &STATE[core];
    let mut rng = Rng::new(slot.load(Ordering::Relaxed));
    let x = rng.next_u64();
    slot.store(x, Ordering::Relaxed);
    // The high half: xorshift's low bits are its weakest.
    ((x >> 32) % n as u64) as usize
}

/// Waits for the first of `a` and `b` to finish, trying them in a random
/// order on every poll: `Left((a's output, b))` or `Right((b's output,
/// a))`, the loser given back unfinished.
pub fn select_fair<A, B>(a: A, b: B) -> SelectFair<A, B>
where
    A: Future + Unpin,
    B: Future + Unpin,
{
    SelectFair { inner: Some((a, b)) }
}

/// The future of [`select_fair`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct SelectFair<A, B> {
    /// `None` once it returned.
    inner: Option<(A, B)>,
}

impl<A: Future + Unpin, B: Future + Unpin> Future for SelectFair<A, B> {
    type Output = Either<(A::Output, B), (B::Output, A)>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some((a, b)) = self.inner.as_mut() else {
            panic!("SelectFair polled after it returned");
        };
        let a_first = random_below(2) == 0;
        let which = if a_first {
            if let Poll::Ready(v) = Pin::new(&mut *a).poll(cx) {
                Some(Either::Left(v))
            } else if let Poll::Ready(v) = Pin::new(&mut *b).poll(cx) {
                Some(Either::Right(v))
            } else {
                None
            }
        } else if let Poll::Ready(v) = Pin::new(&mut *b).poll(cx) {
            Some(Either::Right(v))
        } else if let Poll::Ready(v) = Pin::new(&mut *a).poll(cx) {
            Some(Either::Left(v))
        } else {
            None
        };
        let Some(which) = which else { return Poll::Pending };
        let Some((a, b)) = self.inner.take() else { unreachable!("checked above") };
        Poll::Ready(match which {
            Either::Left(v) => Either::Left((v, b)),
            Either::Right(v) => Either::Right((v, a)),
        })
    }
}

/// Waits for the first of `futures` to finish, trying them in a random
/// order on every poll: its output, its index, and the others (in their
/// order, without it). `n` futures cost up to `n` random numbers a poll.
///
/// # Panics
/// When polled with no futures (as `futures-util`'s `select_all`).
pub fn select_fair_all<I>(futures: I) -> SelectFairAll<I::Item>
where
    I: IntoIterator,
    I::Item: Future + Unpin,
{
    let futures: Vec<I::Item> = futures.into_iter().collect();
    let order = (0..futures.len()).collect();
    SelectFairAll { futures, order }
}

/// The future of [`select_fair_all`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct SelectFairAll<F> {
    futures: Vec<F>,
    /// A permutation of the indices of `futures`, shuffled as each poll
    /// goes (kept to avoid an allocation per poll).
    order: Vec<usize>,
}

impl<F: Future + Unpin> Future for SelectFairAll<F> {
    type Output = (F::Output, usize, Vec<F>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let n = this.futures.len();
        assert!(n > 0, "select_fair_all with no futures");
        // The futures in a uniformly random order (Fisher-Yates, drawn as
        // it goes): the first ready one is any ready one with equal
        // chance, wherever the pending ones are. (A random start alone
        // would favour a ready future that follows a pending one.)
        for k in 0..n {
            let j = k + random_below(n - k);
            this.order.swap(k, j);
            let i = this.order[k];
            if let Poll::Ready(v) = Pin::new(&mut this.futures[i]).poll(cx) {
                let mut rest = core::mem::take(&mut this.futures);
                drop(rest.remove(i));
                return Poll::Ready((v, i, rest));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::future::{pending, ready};
    use futures_util::FutureExt;

    fn now<F: Future + Unpin>(mut f: F) -> F::Output {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match Pin::new(&mut f).poll(&mut cx) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("not ready"),
        }
    }

    #[test]
    fn both_ready_each_branch_is_chosen_about_half_the_time() {
        let mut left = 0;
        for _ in 0..10_000 {
            match now(select_fair(ready(1u8), ready(2u16))) {
                Either::Left((1, _)) => left += 1,
                Either::Right((2, _)) => {}
                other => panic!("{other:?}"),
            }
        }
        // Binomial(10000, 1/2): 4800..5200 is over 6 standard deviations.
        assert!((4800..=5200).contains(&left), "left chosen {left} times of 10000");
    }

    #[test]
    fn select_macro_is_fair_among_ready_branches_and_skips_pending_ones() {
        let mut wins = [0u32; 3];
        for _ in 0..9_000 {
            let a = ready(0usize).fuse();
            let b = ready(1usize).fuse();
            let c = ready(2usize).fuse();
            let won = now(Box::pin(async {
                crate::select! {
                    x = a => x,
                    x = b => x,
                    x = c => x,
                }
            }));
            wins[won] += 1;
        }
        // Binomial(9000, 1/3): 3000 +- 250 is over 5 standard deviations.
        for (i, &w) in wins.iter().enumerate() {
            assert!((2750..=3250).contains(&w), "branch {i} won {w} times of 9000: {wins:?}");
        }
        // A pending branch never wins; it passes its turn to the next
        // ready one (as tokio's random start does), so every ready one
        // still wins often.
        let mut wins = [0u32; 2];
        for _ in 0..4_000 {
            let a = ready(0usize).fuse();
            let never = pending::<usize>().fuse();
            let b = ready(1usize).fuse();
            let won = now(Box::pin(async {
                crate::select! {
                    x = a => x,
                    y = never => y + 100,
                    x = b => x,
                }
            }));
            wins[won] += 1;
        }
        assert!(wins.iter().all(|&w| w >= 1000), "{wins:?}");
        // One branch: always it.
        let only = ready(5u8).fuse();
        assert_eq!(
            now(Box::pin(async {
                crate::select! { v = only => v }
            })),
            5
        );
    }

    #[test]
    fn only_the_ready_branch_wins_and_the_loser_comes_back() {
        for _ in 0..100 {
            match now(select_fair(pending::<u8>(), ready(7u8))) {
                Either::Right((7, _)) => {}
                _ => panic!("pending branch won"),
            }
            let mut second_poll = false;
            let later = core::future::poll_fn(move |_| {
                if core::mem::replace(&mut second_poll, true) {
                    Poll::Ready(9u8)
                } else {
                    Poll::Pending
                }
            });
            let Either::Left((3, rest)) = now(select_fair(ready(3u8), later.boxed())) else {
                panic!("pending branch won");
            };
            // The loser is given back unfinished and still works (it
            // was polled once or not at all).
            let mut rest = rest;
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            let polls = (1..=2).find(|_| Pin::new(&mut rest).poll(&mut cx) == Poll::Ready(9));
            assert!(polls.is_some(), "the loser never finished");
        }
    }

    #[test]
    fn select_all_spreads_over_every_ready_future_and_returns_the_rest() {
        let mut wins = [0u32; 4];
        for _ in 0..8000 {
            let futs: Vec<_> = (0..4u32)
                .map(|i| if i == 2 { pending().boxed() } else { ready(i).boxed() })
                .collect();
            let (v, i, rest) = now(select_fair_all(futs));
            assert_eq!(v as usize, i);
            assert_eq!(rest.len(), 3);
            wins[i] += 1;
        }
        assert_eq!(wins[2], 0, "a pending future won");
        // Three ready futures: each wins a third of the time (about 2667;
        // the standard deviation is 42), the one after the pending one
        // no more often than the others.
        for i in [0, 1, 3] {
            assert!((wins[i] as i64 - 2667).abs() < 250, "wins {wins:?}");
        }
    }

    #[test]
    #[should_panic(expected = "no futures")]
    fn select_all_of_nothing_panics_like_futures_util() {
        let none: Vec<core::future::Ready<u8>> = Vec::new();
        let _ = now(select_fair_all(none));
    }
}
