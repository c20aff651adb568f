//! `cargo xtask run --trace`: turns the runtime's task-event dump
//! (`rttrace` lines on the serial console, written by
//! `libos_async::rt::trace::dump`; format in that module's documentation)
//! into a Chrome trace-event JSON file that ui.perfetto.dev (or
//! chrome://tracing) opens: one process per environment, one thread per
//! core; each poll is a slice named after its task, and task wake-ups,
//! spawns, yields and steals are instant events.

use serde_json::{Value, json};

/// The prefix of the runtime's trace lines.
pub const PREFIX: &str = "rttrace ";

/// The Chrome trace of every `rttrace` dump in `log`, and the number of
/// task events in it. Timestamps are microseconds from the earliest
/// event of the log.
pub fn to_chrome(log: &str) -> Result<(Value, usize), String> {
    struct Ev {
        env: u64,
        core: u64,
        tsc: u64,
        hz: u64,
        task: u64,
        name: String,
        arg: u64,
    }
    let (mut hz, mut env) = (0u64, 0u64);
    let mut evs = Vec::new();
    let mut lost = Vec::new();
    for (n, line) in log.lines().enumerate() {
        let Some(at) = line.find(PREFIX) else { continue };
        let f: Vec<&str> = line[at + PREFIX.len()..].split_whitespace().collect();
        let num = |i: usize| -> Result<u64, String> {
            let s = f.get(i).ok_or_else(|| format!("line {}: too few fields", n + 1))?;
            let s = s.trim_start_matches("0x");
            let radix = if f[i].starts_with("0x") { 16 } else { 10 };
            u64::from_str_radix(s, radix).map_err(|e| format!("line {}: {e}", n + 1))
        };
        match f.first().copied() {
            Some("hz") => {
                hz = num(1)?;
                env = num(3)?;
            }
            Some("ev") => {
                if hz == 0 {
                    return Err(format!("line {}: event before a header", n + 1));
                }
                let name = f.get(4).ok_or_else(|| format!("line {}: no event name", n + 1))?;
                evs.push(Ev {
                    env,
                    core: num(1)?,
                    tsc: num(2)?,
                    hz,
                    task: num(3)?,
                    name: name.to_string(),
                    arg: num(5)?,
                });
            }
            Some("lost") => lost.push((env, num(1)?, num(2)?)),
            _ => {}
        }
    }
    let t0 = evs.iter().map(|e| e.tsc).min().unwrap_or(0);
    let us = |e: &Ev| (e.tsc - t0) as f64 * 1e6 / e.hz as f64;
    let mut out = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    // Per (env, core): the task whose poll slice is open.
    let mut open = std::collections::BTreeMap::new();
    for e in &evs {
        if named.insert((e.env, u64::MAX)) {
            out.push(json!({"ph": "M", "name": "process_name", "pid": e.env, "tid": 0,
                "args": {"name": format!("env {}", e.env)}}));
        }
        if named.insert((e.env, e.core)) {
            out.push(json!({"ph": "M", "name": "thread_name", "pid": e.env, "tid": e.core,
                "args": {"name": format!("core {}", e.core)}}));
        }
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
    let lost: Vec<Value> =
        lost.iter().map(|(env, core, n)| json!({"env": env, "core": core, "lost": n})).collect();
    let count = evs.len();
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
        assert_eq!(phases, ["M", "M", "i", "B", "E", "M"]);
        let b = &evs[3];
        assert_eq!(b["pid"], 3);
        assert_eq!(b["name"], "task 5");
        assert_eq!(b["ts"].as_f64(), Some(1.0));
        assert_eq!(evs[4]["ts"].as_f64(), Some(2.0));
        assert_eq!(v["otherData"]["lost"][0]["lost"], 4);
    }

    #[test]
    fn events_before_a_header_are_refused() {
        assert!(to_chrome("rttrace ev 0 1 2 run 0\n").is_err());
        assert_eq!(to_chrome("nothing here\n").unwrap().1, 0);
    }
}
