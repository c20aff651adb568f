//! `rttest`: in-QEMU tests of the async runtime, one mode per start
//! argument; exit 0 iff every check passed (`CHECK FAILED: ...` lines say
//! what did not).
//!
//! * 0 — spawn/join across cores: 8 rounds of one task per executor core
//!   (`spawn_on`), each spawning a child on the next core and joining it
//!   (joins across cores both ways); 1000 small tasks spread over the
//!   cores; the allocator under all cores at once (vectors grown and
//!   freed, a 1 MiB block).
//! * 1 — work stealing moves work off a loaded core: 48 compute-bound
//!   tasks (each ~2 ms of TSC, no await) spawned on one core; the other
//!   executors must steal and run some of them. Then the same with
//!   stealing off: every task must run on its core.
//! * 2 — timers fire in order and never early: 24 sleeps of shuffled
//!   lengths (deadlines from one base instant 100 ms ahead, stealing off)
//!   on one core complete in deadline order, each at or after its
//!   deadline; sleeps on every core are never early; `timeout` and
//!   `interval` behave.
//! * 3 — ring futures: nop, frame alloc/map/unmap/free and console write
//!   as futures; 64 `Timer` operations (200 ms ahead) dropped while in
//!   flight (through `timeout`), then 200 more operations that reuse the slots and must
//!   get their own results; after the dropped timers' deadlines their
//!   completions are absorbed and nothing stays in flight.
//! * 4 — `wait_word_change`: a task on one core waits for a word another
//!   core's task writes (with a wake-up through `Notify`), 100 rounds of
//!   ping-pong.
//! * 5 — out of memory: allocates until the quota runs out; must end with
//!   exit code 104 (the test expects that code, not 0).
//! * 6 — a task panic is caught by its joiner: on every executor core
//!   (the main core's `block_on` loop and the executor vCPUs), 5 rounds of
//!   a task that panics at some depth after a yield while sibling tasks
//!   run; each joiner gets `JoinError::Panicked` with the message, the
//!   siblings finish, and the executors still run new work (1000 tasks)
//!   afterwards; awaiting a panicked task re-raises in the joiner (itself
//!   a task, so caught again); an abortable task that waits for ever
//!   ends when aborted.
//! * 8 — in-environment sync across cores: a task waiting on a `Notify`
//!   lets its executor sleep (its core polls almost nothing meanwhile)
//!   and a `notify_one` from another core wakes it; an `mpsc` with 4
//!   producers on 4 cores keeps each producer's order; an async `Mutex`
//!   loses no update under contention from every core; a `JoinSet` and
//!   `select_biased!`.
//! * 7 — `set_panic_ends_env(true)`: a task's panic ends the environment
//!   with exit code 101 (the test expects that code).

#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use core::time::Duration;

use libos_async::check::Checks;
use libos_async::rng::Rng;
use libos_async::rt::{self, Instant, RuntimeConfig};
use libos_async::{abi, println, sys};

libos_async::main!(main_async, RuntimeConfig::new());

fn cores() -> Vec<usize> {
    let set = rt::executor_cores();
    (0..abi::MAX_CORES).filter(|&c| set & (1 << c) != 0).collect()
}

async fn main_async(mode: u64) -> i32 {
    let mut c = Checks::new();
    match mode {
        0 => spawn_join(&mut c).await,
        1 => stealing(&mut c).await,
        2 => timers(&mut c).await,
        3 => ring_ops(&mut c).await,
        4 => words(&mut c).await,
        5 => out_of_memory().await,
        6 => panics(&mut c).await,
        8 => sync_prims(&mut c).await,
        7 => {
            rt::set_panic_ends_env(true);
            let h = rt::spawn(async {
                if rt::current_core() < usize::MAX {
                    panic!("this one ends the environment");
                }
            });
            let _ = h.try_join().await;
            c.check(false, format_args!("the environment survived a panic it should not have"));
        }
        _ => {
            c.check(false, format_args!("unknown mode {mode}"));
        }
    }
    println!("rttest {mode}: {} checks passed, {} failed", c.passed(), c.failed());
    c.finish()
}

async fn spawn_join(c: &mut Checks) {
    let cores = cores();
    c.check(cores.len() >= 2, format_args!("executors on {} cores", cores.len()));
    for round in 0..8u64 {
        let hs: Vec<_> = cores
            .iter()
            .enumerate()
            .map(|(i, &core)| {
                let next = cores[(i + 1) % cores.len()];
                rt::spawn_on(core, async move {
                    let here = rt::current_core();
                    let child = rt::spawn_on(next, async move { (rt::current_core(), round) });
                    (here, child.await)
                })
            })
            .collect();
        for (i, h) in hs.into_iter().enumerate() {
            let (here, (there, r)) = h.await;
            let next = cores[(i + 1) % cores.len()];
            // Stealing may move a task before it first runs; either way it
            // must run somewhere with an executor and return its value.
            c.check(cores.contains(&here) && cores.contains(&there) && r == round, format_args!(
                "round {round} task {i}: ran on {here}, child on {there} (wanted near {next}), r {r}"
            ));
        }
    }
    let sum = Arc::new(AtomicU64::new(0));
    let hs: Vec<_> = (0..1000u64)
        .map(|i| {
            let sum = sum.clone();
            rt::spawn_on(cores[i as usize % cores.len()], async move {
                if i % 3 == 0 {
                    rt::yield_now().await;
                }
                sum.fetch_add(i, SeqCst);
                i
            })
        })
        .collect();
    let mut joined = 0;
    for h in hs {
        joined += h.await;
    }
    let want = (0..1000u64).sum::<u64>();
    c.check(joined == want && sum.load(SeqCst) == want, format_args!("1000 tasks: {joined}"));
    // The allocator from every core at once.
    let hs: Vec<_> = cores
        .iter()
        .map(|&core| {
            rt::spawn_on(core, async move {
                let mut ok = true;
                for round in 0..20usize {
                    let mut v: Vec<u64> = Vec::new();
                    for k in 0..(500 + round * 37) {
                        v.push((core * 1_000_000 + k) as u64);
                    }
                    let boxes: Vec<Box<[u8]>> =
                        (0..50).map(|k| vec![k as u8; 1 + k * 41].into_boxed_slice()).collect();
                    ok &= v.iter().enumerate().all(|(k, &x)| x == (core * 1_000_000 + k) as u64);
                    ok &= boxes.iter().enumerate().all(|(k, b)| b.iter().all(|&x| x == k as u8));
                    rt::yield_now().await;
                }
                let big = vec![0x5au8; 1 << 20];
                ok && big.iter().all(|&x| x == 0x5a)
            })
        })
        .collect();
    for (i, h) in hs.into_iter().enumerate() {
        c.check(h.await, format_args!("allocator on core {}", cores[i]));
    }
}

/// Spins (no await) for `ms` milliseconds of TSC time.
fn busy(ms: u64) {
    let end = sys::rdtsc() + sys::info().tsc_hz / 1000 * ms;
    while sys::rdtsc() < end {
        core::hint::spin_loop();
    }
}

async fn stealing(c: &mut Checks) {
    let cores = cores();
    let Some(&loaded) = cores.iter().find(|&&x| x != rt::current_core()) else {
        c.check(false, format_args!("needs two executor cores"));
        return;
    };
    for steal in [true, false] {
        rt::set_stealing(steal);
        let before = rt::stolen_tasks();
        let hs: Vec<_> = (0..48)
            .map(|_| {
                rt::spawn_on(loaded, async {
                    busy(2);
                    rt::current_core()
                })
            })
            .collect();
        let mut ran = [0u32; abi::MAX_CORES];
        for h in hs {
            ran[h.await] += 1;
        }
        let elsewhere: u32 =
            ran.iter().enumerate().filter(|&(k, _)| k != loaded).map(|(_, n)| n).sum();
        let stolen = rt::stolen_tasks() - before;
        println!(
            "rttest: stealing {steal}: {} of 48 tasks ran off core {loaded}, {stolen} stolen",
            elsewhere
        );
        if steal {
            c.check(elsewhere > 0 && stolen > 0, format_args!("nothing moved off core {loaded}"));
        } else {
            c.check(
                elsewhere == 0 && stolen == 0,
                format_args!("{elsewhere} moved with stealing off"),
            );
        }
    }
    rt::set_stealing(true);
}

async fn timers(c: &mut Checks) {
    let here = rt::current_core();
    let order = Arc::new(AtomicUsize::new(0));
    let mut rng = Rng::new(7);
    let mut lens: Vec<u64> = (0..24).map(|i| 2 + i * 3).collect();
    for i in (1..lens.len()).rev() {
        lens.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // Deadlines from one base 100 ms ahead, so that every sleep is armed
    // before the first deadline whatever the order of first polls (the
    // vCPU may lose the host CPU between them); stealing off, so that all
    // timers are in this core's heap.
    rt::set_stealing(false);
    let base = Instant::now() + Duration::from_millis(100);
    let hs: Vec<_> = lens
        .iter()
        .map(|&ms| {
            let order = order.clone();
            rt::spawn_on(here, async move {
                let deadline = base + Duration::from_millis(ms);
                // Armed in time: its timer was in the heap before the first
                // deadline (a host that stalls this vCPU past it leaves a
                // late-polled sleep nothing to order against).
                let armed = Instant::now() < base;
                rt::sleep_until(deadline).await;
                let late = Instant::now() >= deadline;
                (ms, order.fetch_add(1, SeqCst), late, armed)
            })
        })
        .collect();
    let mut results: Vec<(u64, usize, bool, bool)> = Vec::new();
    for h in hs {
        results.push(h.await);
    }
    rt::set_stealing(true);
    for &(ms, _, late, _) in &results {
        c.check(late, format_args!("the sleep until base + {ms} ms ended early"));
    }
    let unarmed = results.iter().filter(|r| !r.3).count();
    if unarmed > 0 {
        println!(
            "rttest: {unarmed} of 24 sleeps were first polled after the base (host stall): left out of the order check"
        );
    }
    c.check(unarmed < results.len(), format_args!("no sleep was armed in time"));
    results.retain(|r| r.3);
    results.sort_by_key(|r| r.1);
    let fired: Vec<u64> = results.iter().map(|r| r.0).collect();
    let mut sorted = fired.clone();
    sorted.sort_unstable();
    c.check(fired == sorted, format_args!("fired out of order: {fired:?}"));
    // Never early on any core.
    let hs: Vec<_> = cores()
        .into_iter()
        .map(|core| {
            rt::spawn_on(core, async move {
                let mut ok = true;
                for ms in [1u64, 3, 7] {
                    let start = Instant::now();
                    rt::sleep(Duration::from_millis(ms)).await;
                    ok &= start.elapsed() >= Duration::from_millis(ms);
                }
                ok
            })
        })
        .collect();
    for h in hs {
        c.check(h.await, format_args!("a sleep on another core ended early"));
    }
    let r = rt::timeout(Duration::from_millis(3), rt::sleep(Duration::from_secs(60))).await;
    c.check(r.is_err(), format_args!("timeout did not elapse"));
    let r = rt::timeout(Duration::from_secs(60), async { 5 }).await;
    c.check(r == Ok(5), format_args!("timeout of a ready future: {r:?}"));
    let mut iv = rt::interval(Duration::from_millis(2));
    let mut last = iv.tick().await;
    for _ in 0..5 {
        let t = iv.tick().await;
        c.check(t.duration_since(last) >= Duration::from_millis(2), format_args!("interval early"));
        c.check(Instant::now() >= t, format_args!("interval tick before its instant"));
        last = t;
    }
}

async fn ring_ops(c: &mut Checks) {
    let core = rt::current_core();
    c.check(rt::nop().await == Ok(0), format_args!("nop"));
    let text = alloc::string::String::from("rttest: console write through a ring future\n");
    let len = text.len() as u64;
    let n = rt::console_write(text.into_bytes()).await;
    c.check(n == Ok(len), format_args!("console_write: {n:?}, wanted {len}"));
    let va = libos_async::layout::SCRATCH_BASE + 0x10_0000;
    match rt::frame_alloc(None).await {
        Ok(frame) => {
            c.expect_ok("ring map", rt::map(frame, va, abi::Rights::RW).await);
            sys::probe::write(va, 0x1234);
            c.check(sys::probe::read(va) == 0x1234, format_args!("mapped page"));
            c.expect_ok("ring unmap", rt::unmap(va).await);
            c.expect_ok("ring frame_free", rt::frame_free(frame).await);
        }
        Err(e) => {
            c.check(false, format_args!("ring frame_alloc: {e:?}"));
        }
    }
    c.check(rt::unmap(va).await == Err(abi::Error::NotMapped), format_args!("unmap twice"));
    // Drop 64 timers while in flight (each 200 ms ahead; one that
    // completes within its 1 µs timeout anyway — the vCPU lost the host
    // CPU for that long — is not dropped in flight and not counted).
    let mut dropped = 0;
    let mut far = Instant::now();
    for _ in 0..64 {
        far = Instant::now() + Duration::from_millis(200);
        let r = rt::timeout(Duration::from_micros(1), rt::timer_at(far.tsc())).await;
        dropped += usize::from(r.is_err());
    }
    c.check(dropped > 0, format_args!("no ring timer was dropped in flight"));
    c.check(
        rt::in_flight(core) == dropped,
        format_args!("in flight: {}, dropped {dropped}", rt::in_flight(core)),
    );
    // Reuse: each op must get its own result.
    for i in 0..200u64 {
        let r = if i % 2 == 0 {
            rt::nop().await
        } else {
            rt::unmap(libos_async::layout::SCRATCH_BASE + i * 4096).await
        };
        let want = if i % 2 == 0 { Ok(0) } else { Err(abi::Error::NotMapped) };
        c.check(r == want, format_args!("op {i}: {r:?}, wanted {want:?}"));
    }
    rt::sleep_until(far + Duration::from_millis(1)).await;
    // The absorbed completions arrive at the kernel's tick; wait for them.
    let start = Instant::now();
    while rt::in_flight(core) != 0 && start.elapsed() < Duration::from_secs(10) {
        rt::sleep(Duration::from_millis(5)).await;
    }
    c.check(rt::in_flight(core) == 0, format_args!("still in flight: {}", rt::in_flight(core)));
    c.check(rt::nop().await == Ok(0), format_args!("nop after absorption"));
}

static PING: AtomicU64 = AtomicU64::new(0);
static PONG: AtomicU64 = AtomicU64::new(0);

async fn words(c: &mut Checks) {
    let cores = cores();
    let (a, b) = (cores[0], cores[cores.len() - 1]);
    const ROUNDS: u64 = 100;
    let ponger = rt::spawn_on(b, async {
        for r in 1..=ROUNDS {
            let v = rt::wait_word_change(&PING, r - 1).await;
            if v != r {
                return false;
            }
            PONG.store(r, SeqCst);
            let _ = rt::notify(libos_async::env_id()).await;
        }
        true
    });
    let pinger = rt::spawn_on(a, async {
        for r in 1..=ROUNDS {
            PING.store(r, SeqCst);
            let _ = rt::notify(libos_async::env_id()).await;
            if rt::wait_word_change(&PONG, r - 1).await != r {
                return false;
            }
        }
        true
    });
    let start = Instant::now();
    let (p, q) = (pinger.await, ponger.await);
    c.check(p && q, format_args!("ping-pong between cores {a} and {b}: {p} {q}"));
    println!("rttest: {ROUNDS} word ping-pongs between cores {a} and {b} in {:?}", start.elapsed());
}

async fn out_of_memory() {
    let mut keep: Vec<Vec<u8>> = Vec::new();
    loop {
        keep.push(vec![1u8; 1 << 20]);
        if keep.len() > 1 << 12 {
            println!("CHECK FAILED: 4 GiB allocated without running out");
            sys::exit(1);
        }
    }
}

/// Recurses `depth` frames, then panics (deep enough to use the poll
/// stack a little).
#[inline(never)]
fn deep_panic(depth: u32, tag: u64) -> u64 {
    if depth == 0 {
        panic!("deliberate panic {tag}");
    }
    let mut buf = [0u64; 16];
    buf[depth as usize % 16] = tag;
    core::hint::black_box(&mut buf);
    deep_panic(depth - 1, tag) + buf[depth as usize % 16]
}

async fn panics(c: &mut Checks) {
    let cores = cores();
    let before = rt::panics_caught();
    let done = Arc::new(AtomicUsize::new(0));
    for round in 0..5u64 {
        let mut bad = Vec::new();
        let mut good = Vec::new();
        for (i, &core) in cores.iter().enumerate() {
            let tag = round * 100 + i as u64;
            bad.push(rt::spawn_on(core, async move {
                rt::yield_now().await;
                deep_panic(8 + round as u32 * 20, tag)
            }));
            let done = done.clone();
            good.push(rt::spawn_on(core, async move {
                for _ in 0..3 {
                    rt::yield_now().await;
                }
                done.fetch_add(1, SeqCst);
                tag
            }));
        }
        for (i, h) in bad.into_iter().enumerate() {
            let tag = round * 100 + i as u64;
            match h.try_join().await {
                Err(rt::JoinError::Panicked { message, .. }) => c.check(
                    message.contains(&alloc::format!("deliberate panic {tag}")),
                    format_args!("round {round} task {i}: message {message:?}"),
                ),
                other => c.check(false, format_args!("round {round} task {i}: {other:?}")),
            };
        }
        for (i, h) in good.into_iter().enumerate() {
            let tag = round * 100 + i as u64;
            let got = h.await;
            c.check(got == tag, format_args!("round {round} sibling {i}: {got}"));
        }
    }
    c.check(
        done.load(SeqCst) == 5 * cores.len(),
        format_args!("siblings finished: {}", done.load(SeqCst)),
    );
    let caught = rt::panics_caught() - before;
    c.check(caught == 5 * cores.len() as u64, format_args!("{caught} panics caught"));
    // Awaiting a panicked task re-raises in the joiner, itself a task.
    let outer = rt::spawn(async {
        let inner = rt::spawn(async {
            if rt::current_core() < usize::MAX {
                panic!("inner");
            }
        });
        inner.await;
    });
    match outer.try_join().await {
        Err(e) => c.check(
            e.is_panic() && alloc::format!("{e}").contains("panicked: inner"),
            format_args!("re-raised: {e}"),
        ),
        Ok(()) => c.check(false, format_args!("the outer task did not panic")),
    };
    // Abort a task that waits for ever.
    let (waiting, abort) = rt::spawn_abortable(core::future::pending::<u32>());
    rt::sleep(Duration::from_millis(2)).await;
    abort.abort();
    let r = waiting.await;
    c.check(r == Err(rt::sync::Aborted), format_args!("aborted: {r:?}"));
    // The executors still run new work, everywhere.
    let hs: Vec<_> = (0..1000u64)
        .map(|i| rt::spawn_on(cores[i as usize % cores.len()], async move { i }))
        .collect();
    let mut sum = 0;
    for h in hs {
        sum += h.await;
    }
    c.check(sum == (0..1000u64).sum::<u64>(), format_args!("1000 tasks after the panics: {sum}"));
}

async fn sync_prims(c: &mut Checks) {
    use rt::sync::{Mutex, mpsc};
    let cores = cores();
    let here = rt::current_core();
    let Some(&there) = cores.iter().find(|&&x| x != here) else {
        c.check(false, format_args!("needs two executor cores"));
        return;
    };
    // A waiter on `there`; the notifier is us, after 30 ms.
    let n = Arc::new(rt::Notify::new());
    let woke_at = Arc::new(AtomicU64::new(0));
    let before = rt::metrics(there).polls;
    let waiter = {
        let (n, woke_at) = (n.clone(), woke_at.clone());
        rt::spawn_on(there, async move {
            n.notified().await;
            woke_at.store(Instant::now().tsc(), SeqCst);
        })
    };
    rt::sleep(Duration::from_millis(30)).await;
    let during = rt::metrics(there).polls - before;
    let sent = Instant::now().tsc();
    n.notify_one();
    waiter.await;
    let lat_us = rt::time::duration(woke_at.load(SeqCst).saturating_sub(sent)).as_micros();
    // One poll of the waiter (plus perhaps a steal-check task): no spinning.
    c.check(during <= 3, format_args!("core {there} polled {during} times while its task waited"));
    c.check(lat_us < 50_000, format_args!("cross-core notify woke the waiter after {lat_us} us"));
    // mpsc: 4 producers (one per core, cycling), bounded to 8.
    let (tx, mut rx) = mpsc::channel::<u64>(8);
    let hs: Vec<_> = (0..4u64)
        .map(|p| {
            let tx = tx.clone();
            rt::spawn_on(cores[p as usize % cores.len()], async move {
                for i in 0..500 {
                    if tx.send(p << 32 | i).await.is_err() {
                        return false;
                    }
                }
                true
            })
        })
        .collect();
    drop(tx);
    let mut next = [0u64; 4];
    let mut in_order = true;
    let mut count = 0;
    while let Some(v) = rx.recv().await {
        let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
        in_order &= next[p] == i;
        next[p] = i + 1;
        count += 1;
    }
    let mut sent_all = true;
    for h in hs {
        sent_all &= h.await;
    }
    c.check(
        in_order && count == 2000 && sent_all,
        format_args!("mpsc: {count} values, in order {in_order}"),
    );
    // An async Mutex held across awaits, from every core.
    let m = Arc::new(Mutex::new(0u64));
    let hs: Vec<_> = cores
        .iter()
        .map(|&core| {
            let m = m.clone();
            rt::spawn_on(core, async move {
                for _ in 0..200 {
                    let mut g = m.lock().await;
                    let v = *g;
                    rt::yield_now().await;
                    *g = v + 1;
                }
            })
        })
        .collect();
    for h in hs {
        h.await;
    }
    let total = *m.lock().await;
    c.check(total == 200 * cores.len() as u64, format_args!("mutex: {total}"));
    // JoinSet over every core, select_biased! with a timer.
    let mut set = rt::JoinSet::new();
    for (i, &core) in cores.iter().enumerate() {
        let _ = set.spawn_on(core, async move { i as u64 * 10 });
    }
    let mut sum = 0;
    while let Some(r) = set.join_next().await {
        sum += r.unwrap_or(1_000_000);
    }
    let want: u64 = (0..cores.len() as u64).map(|i| i * 10).sum();
    c.check(sum == want, format_args!("JoinSet sum {sum}, want {want}"));
    use rt::sync::FutureExt;
    let picked = libos_async::select_biased! {
        _ = rt::sleep(Duration::from_secs(5)).fuse() => 0u32,
        v = async { 7u32 }.fuse() => v,
    };
    c.check(picked == 7, format_args!("select_biased picked {picked}"));
}
