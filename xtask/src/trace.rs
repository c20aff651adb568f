//! `cargo xtask run --trace`: turns the runtime's task-event dump
//! (`rttrace` lines on the serial console, written by
//! `libos_async::rt::trace::dump`; format in that module's documentation)
//! and the kernel's (`ktrace` lines, `kernel::trace` and
//! `machine/ktrace.rs`) into one Chrome trace-event JSON file that
//! ui.perfetto.dev (or chrome://tracing) opens (tracks: see
//! [`to_chrome`]). Each poll is a slice named after its task, each vCPU
//! run a slice named after its environment, each slot a slice named after
//! its owner; task wake-ups, spawns, yields, steals and the kernel's other
//! events are instants.

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// The prefix of the runtime's trace lines.
pub const PREFIX: &str = "rttrace ";
/// The prefix of the kernel's trace lines (`kernel::trace`, dumped by
/// `machine/ktrace.rs` at the end of a run booted with `trace=N`).
pub const KERNEL_PREFIX: &str = "ktrace ";
/// The Chrome process of the kernel's per-core tracks.
pub const KERNEL_PID: u64 = 0;
/// Thread ids of the kernel's tracks: `core` (vCPU slices and kernel
/// instants) in the kernel process and, in each environment's process,
/// `KERNEL_TID + core` (when its vCPU ran there, and the kernel's events
/// about it); `SLOT_TID + core` in the kernel process (time-vector slots).
const KERNEL_TID: u64 = 1000;
const SLOT_TID: u64 = 2000;

/// One parsed trace line.
struct Ev {
    env: u64,
    core: u64,
    tsc: u64,
    hz: u64,
    task: u64,
    name: String,
    arg: u64,
}

/// Fields of the line's part after `prefix`, with a number parser.
fn fields<'a>(line: &'a str, prefix: &str) -> Option<Vec<&'a str>> {
    let at = line.find(prefix)?;
    Some(line[at + prefix.len()..].split_whitespace().collect())
}

fn num(f: &[&str], i: usize, n: usize) -> Result<u64, String> {
    let s = f.get(i).ok_or_else(|| format!("line {}: too few fields", n + 1))?;
    let radix = if s.starts_with("0x") { 16 } else { 10 };
    u64::from_str_radix(s.trim_start_matches("0x"), radix)
        .map_err(|e| format!("line {}: {e}", n + 1))
}

/// The runtime's events (`rttrace`) and lost counts of `log`.
fn runtime_events(log: &str) -> Result<(Vec<Ev>, Vec<Value>), String> {
    let (mut hz, mut env) = (0u64, 0u64);
    let mut evs = Vec::new();
    let mut lost = Vec::new();
    for (n, line) in log.lines().enumerate() {
        let Some(f) = fields(line, PREFIX) else { continue };
        match f.first().copied() {
            Some("hz") => {
                hz = num(&f, 1, n)?;
                env = num(&f, 3, n)?;
            }
            Some("ev") => {
                if hz == 0 {
                    return Err(format!("line {}: event before a header", n + 1));
                }
                let name = f.get(4).ok_or_else(|| format!("line {}: no event name", n + 1))?;
                evs.push(Ev {
                    env,
                    core: num(&f, 1, n)?,
                    tsc: num(&f, 2, n)?,
                    hz,
                    task: num(&f, 3, n)?,
                    name: name.to_string(),
                    arg: num(&f, 5, n)?,
                });
            }
            Some("lost") => {
                lost.push(json!({"env": env, "core": num(&f, 1, n)?, "lost": num(&f, 2, n)?}))
            }
            _ => {}
        }
    }
    Ok((evs, lost))
}

/// The kernel's events (`ktrace`, `task` unused) and lost counts of `log`.
fn kernel_events(log: &str) -> Result<(Vec<Ev>, Vec<Value>), String> {
    let mut hz = 0u64;
    let mut evs = Vec::new();
    let mut lost = Vec::new();
    for (n, line) in log.lines().enumerate() {
        let Some(f) = fields(line, KERNEL_PREFIX) else { continue };
        match f.first().copied() {
            Some("hz") => hz = num(&f, 1, n)?,
            Some("ev") => {
                if hz == 0 {
                    return Err(format!("line {}: kernel event before a header", n + 1));
                }
                let name = f.get(3).ok_or_else(|| format!("line {}: no event name", n + 1))?;
                evs.push(Ev {
                    core: num(&f, 1, n)?,
                    tsc: num(&f, 2, n)?,
                    hz,
                    task: 0,
                    name: name.to_string(),
                    env: num(&f, 4, n)?,
                    arg: num(&f, 5, n)?,
                });
            }
            Some("lost") => {
                lost.push(json!({"kernel": true, "core": num(&f, 1, n)?, "lost": num(&f, 2, n)?}))
            }
            _ => {}
        }
    }
    Ok((evs, lost))
}

/// `exo: env E (NAME) ...` lines: environment names.
fn env_names(log: &str) -> BTreeMap<u64, String> {
    let mut names = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.find("exo: env ").map(|at| &line[at + 9..]) else { continue };
        let Some((id, rest)) = rest.split_once(" (") else { continue };
        let (Ok(id), Some((name, _))) = (id.parse::<u64>(), rest.split_once(')')) else { continue };
        names.insert(id, name.to_string());
    }
    names
}

/// The Chrome trace of every `rttrace` and `ktrace` dump in `log`, and the
/// number of events in it. Timestamps are microseconds from the earliest
/// event of the log (both dumps stamp with the TSC, which QEMU keeps in
/// step across cores).
///
/// Tracks: each environment is a process (`env E (NAME)`) with one thread
/// per core for its tasks (the runtime's polls as slices) and one
/// `core C (kernel)` thread per core for its vCPU's runs there (slices)
/// and the kernel's events about it; the kernel is process 0 with one
/// thread per core (vCPU runs as slices named after the environment, and
/// every kernel event as an instant) and one `core C slots` thread per core
/// (the time vector's slots as slices).
pub fn to_chrome(log: &str) -> Result<(Value, usize), String> {
    let (rt, mut lost) = runtime_events(log)?;
    let (kern, klost) = kernel_events(log)?;
    lost.extend(klost);
    let names = env_names(log);
    let env_label = |env: u64| match names.get(&env) {
        Some(name) => format!("env {env} ({name})"),
        None => format!("env {env}"),
    };
    let t0 = rt.iter().chain(&kern).map(|e| e.tsc).min().unwrap_or(0);
    let us = |e: &Ev| e.tsc.saturating_sub(t0) as f64 * 1e6 / e.hz as f64;
    let mut out = Vec::new();
    let mut named = BTreeSet::new();
    let mut name_track = |out: &mut Vec<Value>, pid: u64, tid: u64, thread: String| {
        if named.insert((pid, u64::MAX)) {
            let process = if pid == KERNEL_PID { "kernel".to_string() } else { env_label(pid) };
            out.push(json!({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                "args": {"name": process}}));
            out.push(json!({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                "args": {"sort_index": pid}}));
        }
        if named.insert((pid, tid)) {
            out.push(json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                "args": {"name": thread}}));
        }
    };
    // Per (env, core): the task whose poll slice is open.
    let mut open = BTreeMap::new();
    for e in &rt {
        name_track(&mut out, e.env, e.core, format!("core {}", e.core));
        let ts = us(e);
        match e.name.as_str() {
            "run" => {
                open.insert((e.env, e.core), e.task);
                out.push(json!({"ph": "B", "name": format!("task {}", e.task), "pid": e.env,
                    "tid": e.core, "ts": ts,
                    "args": {"task": e.task, "waited_cycles": e.arg}}));
            }
            "blocked" | "yielded" | "done" => {
                // An end whose start was overwritten (the ring wrapped) is
                // left out: Perfetto wants matched slices.
                if open.remove(&(e.env, e.core)) == Some(e.task) {
                    out.push(json!({"ph": "E", "pid": e.env, "tid": e.core, "ts": ts,
                        "args": {"end": e.name, "cycles": e.arg}}));
                }
            }
            _ => out.push(json!({"ph": "i", "s": "t", "name": e.name, "pid": e.env,
                "tid": e.core, "ts": ts, "args": {"task": e.task, "arg": e.arg}})),
        }
    }
    // Per core: the env whose vCPU slice is open, and the open slot.
    let mut running: BTreeMap<u64, u64> = BTreeMap::new();
    let mut slot: BTreeMap<u64, bool> = BTreeMap::new();
    let last = kern.iter().map(&us).fold(0.0, f64::max);
    for e in &kern {
        let (ts, core) = (us(e), e.core);
        name_track(&mut out, KERNEL_PID, core, format!("core {core}"));
        if e.env != 0 {
            name_track(&mut out, e.env, KERNEL_TID + core, format!("core {core} (kernel)"));
        }
        match e.name.as_str() {
            "run" => {
                // A run whose stop was overwritten or never came: close it.
                if let Some(prev) = running.insert(core, e.env) {
                    out.push(json!({"ph": "E", "pid": KERNEL_PID, "tid": core, "ts": ts}));
                    out.push(json!({"ph": "E", "pid": prev, "tid": KERNEL_TID + core, "ts": ts}));
                }
                out.push(json!({"ph": "B", "name": env_label(e.env), "pid": KERNEL_PID,
                    "tid": core, "ts": ts, "args": {"env": e.env, "waited_cycles": e.arg}}));
                out.push(json!({"ph": "B", "name": "vCPU runs", "pid": e.env,
                    "tid": KERNEL_TID + core, "ts": ts, "args": {"waited_cycles": e.arg}}));
            }
            "stop" => {
                let why = match e.arg {
                    0 => "preempted",
                    1 => "sleep",
                    _ => "gone",
                };
                if running.get(&core) == Some(&e.env) {
                    running.remove(&core);
                    out.push(json!({"ph": "E", "pid": KERNEL_PID, "tid": core, "ts": ts,
                        "args": {"stop": why}}));
                    out.push(json!({"ph": "E", "pid": e.env, "tid": KERNEL_TID + core,
                        "ts": ts, "args": {"stop": why}}));
                }
            }
            "slot" => {
                name_track(&mut out, KERNEL_PID, SLOT_TID + core, format!("core {core} slots"));
                if slot.insert(core, true).is_some() {
                    out.push(json!({"ph": "E", "pid": KERNEL_PID, "tid": SLOT_TID + core,
                        "ts": ts}));
                }
                let owner = if e.env == 0 { "free".to_string() } else { env_label(e.env) };
                out.push(json!({"ph": "B", "name": format!("slot {}: {owner}", e.arg),
                    "pid": KERNEL_PID, "tid": SLOT_TID + core, "ts": ts,
                    "args": {"slot": e.arg, "owner": e.env}}));
            }
            _ => {
                let ev = json!({"ph": "i", "s": "t", "name": e.name, "pid": KERNEL_PID,
                    "tid": core, "ts": ts, "args": {"env": e.env, "arg": e.arg}});
                if e.env != 0 {
                    let mut mine = ev.clone();
                    mine["pid"] = json!(e.env);
                    mine["tid"] = json!(KERNEL_TID + core);
                    out.push(mine);
                }
                out.push(ev);
            }
        }
    }
    // Close what the dump left open.
    for (core, env) in running {
        out.push(json!({"ph": "E", "pid": KERNEL_PID, "tid": core, "ts": last}));
        out.push(json!({"ph": "E", "pid": env, "tid": KERNEL_TID + core, "ts": last}));
    }
    for core in slot.keys() {
        out.push(json!({"ph": "E", "pid": KERNEL_PID, "tid": SLOT_TID + core, "ts": last}));
    }
    let count = rt.len() + kern.len();
    Ok((json!({"traceEvents": out, "displayTimeUnit": "ns", "otherData": {"lost": lost}}), count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_becomes_matched_slices_and_instants() {
        let log = "\
[cpu 0] INFO  boot
rttrace hz 1000000000 env 0x3 cores 0x3
rttrace ev 0 1000 5 spawn 0
rttrace ev 0 2000 5 run 1000
rttrace ev 0 3000 5 done 1000
rttrace ev 1 2500 7 yielded 10
rttrace lost 1 4
rttrace end
";
        let (v, n) = to_chrome(log).unwrap();
        assert_eq!(n, 4);
        let evs = v["traceEvents"].as_array().unwrap();
        let phases: Vec<&str> = evs.iter().map(|e| e["ph"].as_str().unwrap()).collect();
        // Names for env 3 and its cores 0 and 1; the unmatched end on core
        // 1 is dropped.
        assert_eq!(phases, ["M", "M", "M", "i", "B", "E", "M"]);
        let b = &evs[4];
        assert_eq!(b["pid"], 3);
        assert_eq!(b["name"], "task 5");
        assert_eq!(b["ts"].as_f64(), Some(1.0));
        assert_eq!(evs[5]["ts"].as_f64(), Some(2.0));
        assert_eq!(v["otherData"]["lost"][0]["lost"], 4);
    }

    #[test]
    fn events_before_a_header_are_refused() {
        assert!(to_chrome("rttrace ev 0 1 2 run 0\n").is_err());
        assert_eq!(to_chrome("nothing here\n").unwrap().1, 0);
    }

    #[test]
    fn kernel_events_merge_with_the_runtime_s_on_one_clock() {
        let log = "\
exo: env 3 (rttest) exited with code 0
rttrace hz 1000000000 env 3 cores 0x1
rttrace ev 0 5000 9 run 0
rttrace ev 0 6000 9 done 1000
rttrace end
ktrace hz 1000000000 cores 2 records 64
ktrace ev 0 1000 slot 3 0
ktrace ev 0 2000 run 3 500
ktrace ev 0 3000 upcall 3 14
ktrace ev 0 7000 stop 3 0
ktrace ev 0 8000 slot 0 1
ktrace ev 1 4000 ipi 0 0
ktrace lost 1 2
ktrace end
";
        let (v, n) = to_chrome(log).unwrap();
        assert_eq!(n, 8);
        let evs = v["traceEvents"].as_array().unwrap();
        let find = |pid: u64, tid: u64, ph: &str| -> Vec<&Value> {
            evs.iter().filter(|e| e["pid"] == pid && e["tid"] == tid && e["ph"] == ph).collect()
        };
        // One clock: the first kernel event is time 0, the poll at 4 us.
        let poll = find(3, 0, "B");
        assert_eq!(poll[0]["ts"].as_f64(), Some(4.0));
        // The vCPU run: a slice on the kernel's core 0, named after the
        // environment, and on the environment's own kernel track.
        let run = find(KERNEL_PID, 0, "B");
        assert_eq!(run[0]["name"], "env 3 (rttest)");
        assert_eq!(run[0]["ts"].as_f64(), Some(1.0));
        assert_eq!(find(KERNEL_PID, 0, "E")[0]["ts"].as_f64(), Some(6.0));
        assert_eq!(find(3, KERNEL_TID, "B").len(), 1);
        assert_eq!(find(3, KERNEL_TID, "E").len(), 1);
        // The upcall is an instant on both; the IPI on the kernel's only.
        assert_eq!(find(3, KERNEL_TID, "i")[0]["name"], "upcall");
        assert_eq!(find(KERNEL_PID, 1, "i")[0]["name"], "ipi");
        // Slots: the owned one ends where the free one starts, which the
        // end of the dump closes.
        let slots = find(KERNEL_PID, SLOT_TID, "B");
        assert_eq!(slots[0]["name"], "slot 0: env 3 (rttest)");
        assert_eq!(slots[1]["name"], "slot 1: free");
        let ends = find(KERNEL_PID, SLOT_TID, "E");
        assert_eq!(ends.len(), 2);
        assert_eq!(ends[0]["ts"].as_f64(), Some(7.0));
        assert_eq!(v["otherData"]["lost"][0]["lost"], 2);
        // Kernel events without a header are refused.
        assert!(to_chrome("ktrace ev 0 1 run 3 0\n").is_err());
    }
}
