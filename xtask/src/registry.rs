//! The benchmark registry, `benches/registry.toml`: every benchmark's
//! name, what it measures, its unit, the kernel `benches=` group that runs
//! it and its Linux counterpart. This module parses it (expanding `{x}`
//! families), selects benchmarks by name fragment and maps a selection to
//! the kernel's groups and the Linux guest's groups.

use serde::Deserialize;

/// The registry's path, relative to the workspace root.
pub const PATH: &str = "benches/registry.toml";

/// The kernel's `benches=` groups (kernel/src/machine/bench.rs).
pub const KERNEL_GROUPS: &[&str] = &[
    "ipi_mailbox",
    "benchsys",
    "forkbench",
    "spawnbench",
    "ringbench",
    "cpubench",
    "rtbench",
    "chanbench",
    "kv",
    "ring_scaling",
    "rt_scaling",
    "isobench_acall",
    "isobench_revoke",
    "isobench_unmap_range",
    "isobench_gap",
    "memrevoke",
    "tlbbench",
];

/// The Linux guest's groups (benches/linux/init.c).
pub const LINUX_GROUPS: &[&str] = &["getpid", "sigsegv", "pipe", "io_uring", "munmap", "busybox"];

/// The line figures a family may belong to.
pub const PLOTS: &[&str] = &["cores", "batch", "throughput"];

/// One `[[bench]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    name: String,
    #[serde(default)]
    x: Vec<toml::Value>,
    measures: String,
    unit: String,
    group: String,
    linux: Option<String>,
    linux_group: Option<String>,
    plot: Option<String>,
    #[serde(default)]
    cores: Vec<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    bench: Vec<Spec>,
}

/// One benchmark (a family expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bench {
    /// The name the guest prints.
    pub name: String,
    /// What it measures, one line.
    pub measures: String,
    /// Unit of the figures.
    pub unit: String,
    /// The kernel group that runs it.
    pub group: String,
    /// The Linux counterpart's name.
    pub linux: Option<String>,
    /// The Linux guest's group that runs the counterpart.
    pub linux_group: Option<String>,
    /// The family's name template (`name` itself when not a family).
    pub family: String,
    /// The family's `x` value for this member.
    pub x: Option<String>,
    /// The line figure of its family.
    pub plot: Option<String>,
    /// Throughput benchmarks: the cores doing the work (the registry's
    /// `cores` entry for this `x`, or `x` itself).
    pub cores: Option<u32>,
}

/// Parses the registry's text, expanding families; checks that names are
/// unique and that groups and plots are known.
pub fn parse(text: &str) -> Result<Vec<Bench>, String> {
    let file: File = toml::from_str(text).map_err(|e| format!("{PATH}: {e}"))?;
    let mut out: Vec<Bench> = Vec::new();
    for spec in file.bench {
        let what = &spec.name;
        if spec.measures.trim().is_empty() || spec.unit.trim().is_empty() {
            return Err(format!("{PATH}: {what}: empty `measures` or `unit`"));
        }
        if !KERNEL_GROUPS.contains(&spec.group.as_str()) && spec.group != crate::workloads::GROUP {
            return Err(format!("{PATH}: {what}: unknown kernel group {:?}", spec.group));
        }
        match (&spec.linux, &spec.linux_group) {
            (None, None) => {}
            (Some(_), Some(g)) if LINUX_GROUPS.contains(&g.as_str()) => {}
            (Some(_), Some(g)) => return Err(format!("{PATH}: {what}: unknown linux_group {g:?}")),
            _ => return Err(format!("{PATH}: {what}: `linux` and `linux_group` go together")),
        }
        if let Some(p) = &spec.plot
            && !PLOTS.contains(&p.as_str())
        {
            return Err(format!("{PATH}: {what}: unknown plot {p:?}"));
        }
        let templated = spec.name.contains("{x}");
        if templated == spec.x.is_empty() {
            return Err(format!(
                "{PATH}: {what}: `{{x}}` in the name needs `x` values, and only it"
            ));
        }
        if spec.plot.is_some() && !templated {
            return Err(format!("{PATH}: {what}: only a family can have a plot"));
        }
        let throughput = spec.plot.as_deref() == Some("throughput");
        if !spec.cores.is_empty() && (!throughput || spec.cores.len() != spec.x.len()) {
            return Err(format!(
                "{PATH}: {what}: `cores` needs plot = \"throughput\" and one value per x"
            ));
        }
        let values: Vec<Option<String>> = if templated {
            spec.x
                .iter()
                .map(|v| match v {
                    toml::Value::Integer(i) => Ok(Some(i.to_string())),
                    toml::Value::String(s) => Ok(Some(s.clone())),
                    other => Err(format!("{PATH}: {what}: bad x value {other}")),
                })
                .collect::<Result<_, _>>()?
        } else {
            vec![None]
        };
        for (i, x) in values.into_iter().enumerate() {
            let cores = if !throughput {
                None
            } else if let Some(&c) = spec.cores.get(i) {
                Some(c)
            } else {
                match x.as_deref().map(str::parse::<u32>) {
                    Some(Ok(c)) => Some(c),
                    _ => {
                        return Err(format!("{PATH}: {what}: a throughput x must be a core count"));
                    }
                }
            };
            let fill = |t: &str| match &x {
                Some(x) => t.replace("{x}", x),
                None => t.to_string(),
            };
            let bench = Bench {
                name: fill(&spec.name),
                measures: fill(&spec.measures),
                unit: spec.unit.clone(),
                group: spec.group.clone(),
                linux: spec.linux.as_deref().map(fill),
                linux_group: spec.linux_group.clone(),
                family: spec.name.clone(),
                x: x.clone(),
                plot: spec.plot.clone(),
                cores,
            };
            if out.iter().any(|b| b.name == bench.name) {
                return Err(format!("{PATH}: {} appears twice", bench.name));
            }
            out.push(bench);
        }
    }
    Ok(out)
}

/// Reads and parses the registry of the workspace at `root`.
pub fn load(root: &std::path::Path) -> Result<Vec<Bench>, String> {
    let path = root.join(PATH);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse(&text)
}

/// The benchmarks whose names contain one of `fragments` (all of them when
/// there are none), restricted to those with a Linux counterpart when
/// `paired`. Fails when a fragment matches nothing.
pub fn select<'a>(
    all: &'a [Bench],
    fragments: &[String],
    paired: bool,
) -> Result<Vec<&'a Bench>, String> {
    for f in fragments {
        if !all.iter().any(|b| b.name.contains(f.as_str())) {
            return Err(format!(
                "no benchmark name contains {f:?} (see `cargo xtask bench --list`)"
            ));
        }
    }
    Ok(all
        .iter()
        .filter(|b| fragments.is_empty() || fragments.iter().any(|f| b.name.contains(f.as_str())))
        .filter(|b| !paired || b.linux.is_some())
        .collect())
}

/// The kernel groups that run `selected`, comma-separated in the kernel's
/// order (each group's name selects only that group).
pub fn kernel_groups(selected: &[&Bench]) -> String {
    groups(selected.iter().map(|b| b.group.as_str()), KERNEL_GROUPS)
}

/// The Linux guest's groups that run the counterparts of `selected`.
pub fn linux_groups(selected: &[&Bench]) -> String {
    groups(selected.iter().filter_map(|b| b.linux_group.as_deref()), LINUX_GROUPS)
}

fn groups<'a>(used: impl Iterator<Item = &'a str> + Clone, order: &[&str]) -> String {
    order.iter().filter(|g| used.clone().any(|u| u == **g)).copied().collect::<Vec<_>>().join(",")
}

/// `--list`: the registry as a table.
pub fn list(all: &[Bench]) -> String {
    let rows: Vec<[String; 5]> = all
        .iter()
        .map(|b| {
            [
                b.name.clone(),
                b.unit.clone(),
                b.group.clone(),
                b.linux.clone().unwrap_or_else(|| "-".into()),
                b.measures.clone(),
            ]
        })
        .collect();
    crate::bench::render(&["name", "unit", "group", "linux", "measures"], &rows, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_expand_and_errors_are_caught() {
        let text = r#"
[[bench]]
name = "ring_nop_batch_{x}"
x = [1, 8]
measures = "{x} nops"
unit = "cycles/op"
group = "ringbench"
linux = "linux_io_uring_nop_batch_{x}"
linux_group = "io_uring"
plot = "batch"

[[bench]]
name = "victim_{x}"
x = ["control"]
measures = "m"
unit = "cycles"
group = "isobench_gap"
"#;
        let all = parse(text).unwrap();
        let names: Vec<_> = all.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["ring_nop_batch_1", "ring_nop_batch_8", "victim_control"]);
        assert_eq!(all[1].linux.as_deref(), Some("linux_io_uring_nop_batch_8"));
        assert_eq!(all[1].measures, "8 nops");
        assert_eq!(all[1].x.as_deref(), Some("8"));
        assert_eq!(all[1].family, "ring_nop_batch_{x}");

        let bad = |t: &str| parse(t).unwrap_err();
        let base = "[[bench]]\nname = \"a\"\nmeasures = \"m\"\nunit = \"u\"\n";
        assert!(bad(&format!("{base}group = \"nope\"")).contains("unknown kernel group"));
        assert!(bad(&format!("{base}group = \"kv\"\nlinux = \"l\"")).contains("go together"));
        assert!(bad(&format!("{base}group = \"kv\"\nx = [1]")).contains("{x}"));
        assert!(bad(&format!("{base}group = \"kv\"\ncolour = 1")).contains("colour"));
        assert!(bad(&format!("{base}group = \"kv\"\n{base}group = \"kv\"")).contains("twice"));
    }

    #[test]
    fn selection_maps_to_groups() {
        let all = load(&crate::root()).unwrap();
        let sel =
            select(&all, &["syscall_null".into(), "tlb_shootdown_1page".into()], false).unwrap();
        assert_eq!(sel.len(), 2 + 7);
        assert_eq!(kernel_groups(&sel), "benchsys,ringbench,tlbbench");
        assert_eq!(linux_groups(&sel), "getpid,munmap");
        let paired = select(&all, &["syscall_null".into()], true).unwrap();
        assert_eq!(paired.len(), 1);
        assert!(select(&all, &["no_such_bench".into()], false).is_err());
        assert_eq!(select(&all, &[], false).unwrap().len(), all.len());
    }

    /// Every name the guest prints, as the sources print them (kept by hand:
    /// some are built with `format!`). The test below checks this list
    /// against the sources and against the registry.
    const PRINTED: &[&str] = &[
        "ipi_roundtrip_0_to_",
        "mailbox_roundtrip_0_to_",
        "syscall_null",
        "fault_upcall_resume",
        "first_touch_per_page",
        "fork_exit_wait_0_pages",
        "fork_exit_wait_1024_pages",
        "cow_fault_per_page_child",
        "map_unmap",
        "map_batch_per_page",
        "map_single_per_page",
        "spawn_tiny_image",
        "spawn_tiny_image_call",
        "frame_alloc_free",
        "syscall_redirect_roundtrip",
        "ring_nop_batch_1",
        "ring_nop_batch_8",
        "ring_nop_batch_64",
        "ring_nop_batch_256",
        "syscall_null_for_ring",
        "wakeup_notify_cross_core",
        "pct_call_reply",
        "yield_to_switch",
        "acall_wakeup_cross_core",
        "rt_spawn_join_local",
        "rt_wakeup_ring_completion",
        "rt_yield",
        "rt_spawn_join_cross_core",
        "rt_wakeup_cross_core",
        "channel_roundtrip_same_core",
        "channel_roundtrip_cross_core",
        "channel_throughput_{x}_producers",
        "kv_op_{x}_clients",
        "ring_timer_notify_{x}_cores",
        "rt_spawn_{x}_cores",
        "acall_noflood_cost",
        "acall_flood_cost",
        "frame_revoke_1",
        "frame_revoke_1000",
        "frame_revoke_60000",
        "unmap_range_64_per_page",
        "unmap_range_4096_per_page",
        "unmap_range_65000_per_page",
        "victim_longest_gap_control",
        "victim_longest_gap_revoke_60000",
        "victim_longest_gap_unmap_range_60000",
        "victim_longest_gap_exit_60000",
        "tlb_shootdown_1page_k",
        "tlb_shootdown_64pages_k",
        "tlb_shootdown_full_k",
        "memrevoke_roundtrip_",
    ];

    /// The string literals of every Rust source under `dirs`.
    fn literals(dirs: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let mut files = Vec::new();
        for d in dirs {
            let mut stack = vec![crate::root().join(d)];
            while let Some(p) = stack.pop() {
                if p.is_dir() {
                    for e in std::fs::read_dir(&p).unwrap().flatten() {
                        stack.push(e.path());
                    }
                } else if p.extension().is_some_and(|e| e == "rs") {
                    files.push(p);
                }
            }
        }
        for f in files {
            let text = std::fs::read_to_string(f).unwrap();
            for (i, part) in text.split('"').enumerate() {
                if i % 2 == 1 {
                    out.push(part.to_string());
                }
            }
        }
        out
    }

    /// Whether registered name `name` is printed name `p`: equal, or `p`
    /// a prefix (ending in `_` or `k`) completed with a number, or `p` a
    /// `PREFIX{x}SUFFIX` pattern with a number in place of `{x}`.
    fn matches_printed(name: &str, p: &str) -> bool {
        let number = |r: &str| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit());
        if let Some((pre, suf)) = p.split_once("{x}") {
            return name.strip_prefix(pre).and_then(|r| r.strip_suffix(suf)).is_some_and(number);
        }
        name == p || (p.ends_with(['_', 'k']) && name.strip_prefix(p).is_some_and(number))
    }

    #[test]
    fn every_printed_name_is_registered() {
        let all = load(&crate::root()).unwrap();
        // The whole kernel source: the benchmark driver may move.
        let lits = literals(&["benches", "apps", "kernel/src"]);
        for name in PRINTED {
            // The sources print it: as a literal, as the start of a
            // `format!`-ed literal (a prefix completed with a number), or
            // (a `{x}` pattern) as a `format!` literal `PREFIX{..}SUFFIX`.
            let in_sources = lits.iter().any(|l| match name.split_once("{x}") {
                Some((pre, suf)) => l
                    .strip_prefix(pre)
                    .and_then(|r| r.strip_suffix(suf))
                    .is_some_and(|mid| mid.starts_with('{') && mid.ends_with('}')),
                None => l == name || (name.ends_with('_') && l.starts_with(name)),
            });
            assert!(in_sources, "{name} is not in the benchmark sources: update PRINTED");
            let registered = all.iter().any(|b| matches_printed(&b.name, name));
            assert!(registered, "{name} is printed but not in {PATH}");
        }
        // And the other way: every registered name is one of these (but
        // the POSIX workloads, which benches/posix/workloads.c prints:
        // checked in crate::workloads).
        for b in all.iter().filter(|b| b.group != crate::workloads::GROUP) {
            let printed = PRINTED.iter().any(|p| matches_printed(&b.name, p));
            assert!(printed, "{} is registered but nothing prints it", b.name);
        }
    }

    #[test]
    fn printed_patterns_match_numbers_only() {
        assert!(matches_printed("kv_op_7_clients", "kv_op_{x}_clients"));
        assert!(!matches_printed("kv_op__clients", "kv_op_{x}_clients"));
        assert!(!matches_printed("kv_op_x_clients", "kv_op_{x}_clients"));
        assert!(matches_printed("tlb_shootdown_full_k3", "tlb_shootdown_full_k"));
        assert!(!matches_printed("syscall_null_for_ring", "syscall_null"));
    }

    #[test]
    fn kernel_groups_match_the_kernel() {
        let lits = literals(&["kernel/src"]);
        for g in KERNEL_GROUPS {
            assert!(lits.iter().any(|l| l == g), "group {g} is not in the kernel's sources");
        }
    }

    #[test]
    fn linux_counterparts_match_init_c() {
        let all = load(&crate::root()).unwrap();
        let src = std::fs::read_to_string(crate::root().join("benches/linux/init.c")).unwrap();
        for g in LINUX_GROUPS {
            assert!(src.contains(&format!("selected(\"{g}\")")), "init.c has no group {g}");
        }
        // The busybox group's names come from benches/posix/workloads.c
        // (`PREFIX_NAME`; checked in crate::workloads).
        let paired = all.iter().filter(|b| b.group != crate::workloads::GROUP);
        for b in paired.filter_map(|b| b.linux.as_deref()) {
            // A literal name, or a `%u`/`%d`-formatted one.
            let stem = b.trim_end_matches(|c: char| c.is_ascii_digit());
            assert!(
                src.contains(&format!("\"{b}\""))
                    || src.contains(&format!("\"{stem}%u\""))
                    || src.contains(&format!("\"{stem}%d\"")),
                "init.c does not print {b}"
            );
        }
    }
}
