//! `cargo xtask bench --plot`: SVG figures of `results.json` under
//! `target/bench/plots/` (plotters' SVG backend only: it writes `<text>`
//! and needs no fonts), and with `--docs` the same figures plus a generated
//! page under `docs/bench/`.
//!
//! Figures, per timing mode that has data: ours vs Linux per operation
//! (horizontal bars, log scale); shootdown latency vs target cores (the
//! registry's `plot = "cores"` families); ring cost per operation vs batch
//! size (`plot = "batch"`); throughput vs cores (`plot = "throughput"`:
//! operations per second of the whole machine, and per core, one series
//! per family).

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::bench::Entry;
use crate::registry::Bench;

/// One line of a line figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// One pair of bars: our figure and Linux's.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The operation.
    pub label: String,
    /// Ours.
    pub ours: Option<f64>,
    /// Linux's.
    pub linux: Option<f64>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];
/// Our bars' colour.
pub const OURS: RGBColor = PALETTE[0];
/// Linux's bars' colour.
pub const LINUX: RGBColor = PALETTE[1];

fn err(e: impl std::fmt::Display) -> String {
    format!("plotting: {e}")
}

/// A log axis range covering `values`, with `headroom` times the largest
/// on top (room for the legend).
fn log_range(values: impl Iterator<Item = f64>, headroom: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi { 1.0..10.0 } else { (lo / 2.0).max(0.5)..hi * headroom }
}

/// A line figure, one polyline (and its points) per series; empty series
/// are left out. Log y; x linear unless `log_x`.
pub fn lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    log_x: bool,
) -> Result<String, String> {
    let series: Vec<&Series> = series.iter().filter(|s| !s.points.is_empty()).collect();
    let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    // The legend sits above the lines, one row per series.
    let headroom = 2.0 * 3f64.powi(series.len() as i32 / 2);
    let ys = log_range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)), headroom);
    let (xmin, xmax) = xs().fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (xmin, xmax) = if xmin > xmax { (0.0, 1.0) } else { (xmin, xmax) };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut b = ChartBuilder::on(&root);
        b.caption(title, ("sans-serif", 18)).margin(12).x_label_area_size(40).y_label_area_size(80);
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(x_desc)
                    .y_desc(y_desc)
                    .x_label_formatter(&|v| format!("{v:.0}"))
                    .y_label_formatter(&|v| format!("{v:.0}"))
                    .draw()
                    .map_err(err)?;
                for (i, s) in series.iter().enumerate() {
                    let colour = PALETTE[i % PALETTE.len()];
                    chart
                        .draw_series(LineSeries::new(s.points.clone(), colour.stroke_width(2)))
                        .map_err(err)?
                        .label(s.name.clone())
                        .legend(move |(x, y)| {
                            Rectangle::new([(x, y - 4), (x + 14, y + 4)], colour.filled())
                        });
                    chart
                        .draw_series(s.points.iter().map(|p| Circle::new(*p, 3, colour.filled())))
                        .map_err(err)?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()
                    .map_err(err)?;
            }};
        }
        if log_x {
            draw!(
                b.build_cartesian_2d((xmin / 1.5..xmax * 1.5).log_scale(), ys.log_scale())
                    .map_err(err)?
            );
        } else {
            draw!(b.build_cartesian_2d(xmin - 0.5..xmax + 0.5, ys.log_scale()).map_err(err)?);
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Horizontal bars, ours and Linux's per operation, on a log axis.
pub fn bars(title: &str, x_desc: &str, pairs: &[Pair]) -> Result<String, String> {
    let n = pairs.len().max(1);
    let xs = log_range(pairs.iter().flat_map(|p| [p.ours, p.linux]).flatten(), 2.0);
    let height = 90 + 30 * n as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(400)
            .build_cartesian_2d(xs.clone().log_scale(), 0f64..n as f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(x_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(err)?;
        let base = xs.start;
        // Row i from the top: ours above, Linux below.
        let row = |i: usize| (n - 1 - i) as f64;
        for (series, colour, pick) in [
            ("ours", OURS, (|p: &Pair| p.ours) as fn(&Pair) -> Option<f64>),
            ("Linux", LINUX, |p: &Pair| p.linux),
        ] {
            let off = if series == "ours" { 0.5 } else { 0.1 };
            chart
                .draw_series(pairs.iter().enumerate().filter_map(|(i, p)| {
                    pick(p).map(|v| {
                        Rectangle::new(
                            [(base, row(i) + off), (v, row(i) + off + 0.38)],
                            colour.filled(),
                        )
                    })
                }))
                .map_err(err)?
                .label(series)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 4), (x + 14, y + 4)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        let style =
            ("sans-serif", 13).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, p) in pairs.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(base, row(i) + 0.5));
            root.draw(&Text::new(p.label.clone(), (x - 6, y), style.clone())).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Horizontal bars on a linear axis from 0, one per `(label, value)`, top
/// to bottom in order, each labelled with its value (the lab's figures).
pub fn labelled_bars(title: &str, x_desc: &str, rows: &[(String, f64)]) -> Result<String, String> {
    let n = rows.len().max(1);
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0);
    let height = 90 + 36 * n as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(140)
            .build_cartesian_2d(0f64..max * 1.2, 0f64..n as f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(x_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(err)?;
        let row = |i: usize| (n - 1 - i) as f64;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                Rectangle::new([(0.0, row(i) + 0.2), (r.1, row(i) + 0.8)], OURS.filled())
            }))
            .map_err(err)?;
        let left =
            ("sans-serif", 13).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
        let right =
            ("sans-serif", 12).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        for (i, r) in rows.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(0.0, row(i) + 0.5));
            root.draw(&Text::new(r.0.clone(), (x - 6, y), left.clone())).map_err(err)?;
            let (x, y) = chart.backend_coord(&(r.1, row(i) + 0.5));
            root.draw(&Text::new(format!("{:.0}", r.1), (x + 4, y), right.clone())).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The figures `results` allows, for each mode with data: `(file name,
/// SVG)`.
pub fn figures(registry: &[Bench], results: &[Entry]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (mode, unit) in
        [("icount", "guest instructions (-icount)"), ("wall", "TSC cycles (wall clock)")]
    {
        let get = |name: &str| {
            results
                .iter()
                .find(|e| e.name == name && e.mode == mode)
                .and_then(|e| e.median.as_f64())
        };
        if !registry.iter().any(|b| get(&b.name).is_some()) {
            continue;
        }
        // Ours vs Linux: every paired benchmark, the "cores" families only
        // at 7 cores.
        let pairs: Vec<Pair> = registry
            .iter()
            .filter(|b| b.linux.is_some())
            .filter(|b| b.plot.as_deref() != Some("cores") || b.x.as_deref() == Some("7"))
            .map(|b| Pair {
                label: format!("{} / {}", b.name, b.linux.as_deref().unwrap_or("")),
                ours: get(&b.name),
                linux: b.linux.as_deref().and_then(get),
            })
            .filter(|p| p.ours.is_some() || p.linux.is_some())
            .collect();
        if !pairs.is_empty() {
            out.push((
                format!("vs_linux_{mode}.svg"),
                bars(&format!("Ours vs Linux, median per operation ({mode})"), unit, &pairs)?,
            ));
        }
        for (plot, file, title, x_desc, log_x) in [
            (
                "cores",
                "shootdown_vs_cores",
                "TLB shootdown latency vs target cores",
                "other cores running the address space",
                false,
            ),
            ("batch", "ring_vs_batch", "Ring cost per operation vs batch size", "batch size", true),
        ] {
            let mut families: Vec<&str> = Vec::new();
            for b in registry.iter().filter(|b| b.plot.as_deref() == Some(plot)) {
                if !families.contains(&b.family.as_str()) {
                    families.push(&b.family);
                }
            }
            let mut series = Vec::new();
            for fam in families {
                let members: Vec<&Bench> = registry.iter().filter(|b| b.family == fam).collect();
                let points = |name: &dyn Fn(&Bench) -> Option<String>| {
                    members
                        .iter()
                        .filter_map(|b| {
                            let x: f64 = b.x.as_deref()?.parse().ok()?;
                            Some((x, get(&name(b)?)?))
                        })
                        .collect::<Vec<_>>()
                };
                let stem = fam.replace("{x}", "N");
                series.push(Series {
                    name: format!("ours: {stem}"),
                    points: points(&|b| Some(b.name.clone())),
                });
                if let Some(l) = members.first().and_then(|b| b.linux.as_deref()) {
                    let lstem = members[0]
                        .x
                        .as_deref()
                        .and_then(|x| l.strip_suffix(x))
                        .map_or(l.to_string(), |s| format!("{s}N"));
                    series.push(Series {
                        name: format!("Linux: {lstem}"),
                        points: points(&|b| b.linux.clone()),
                    });
                }
            }
            if series.iter().any(|s| !s.points.is_empty()) {
                out.push((
                    format!("{file}_{mode}.svg"),
                    lines(&format!("{title} ({mode})"), x_desc, unit, &series, log_x)?,
                ));
            }
        }
        // Throughput vs cores: ops/s of the whole machine and per core.
        let tput: Vec<&Entry> = results
            .iter()
            .filter(|e| e.mode == mode && e.cores.is_some() && e.ops_per_s.is_some())
            .collect();
        if !tput.is_empty() {
            let mut families: Vec<&str> = Vec::new();
            for b in registry.iter().filter(|b| b.plot.as_deref() == Some("throughput")) {
                if !families.contains(&b.family.as_str()) {
                    families.push(&b.family);
                }
            }
            for (file, what, pick) in [
                (
                    "throughput_vs_cores",
                    "operations per second",
                    (|e: &Entry| e.ops_per_s) as fn(&Entry) -> Option<u64>,
                ),
                ("throughput_per_core_vs_cores", "operations per second per core", |e: &Entry| {
                    e.ops_per_s_per_core
                }),
            ] {
                let series: Vec<Series> = families
                    .iter()
                    .map(|fam| {
                        let mut points: Vec<(f64, f64)> = registry
                            .iter()
                            .filter(|b| b.family == *fam)
                            .filter_map(|b| {
                                let e = tput.iter().find(|e| e.name == b.name)?;
                                let x: f64 = b.x.as_deref()?.parse().ok()?;
                                Some((x, pick(e)? as f64))
                            })
                            .collect();
                        points.sort_by(|a, b| a.0.total_cmp(&b.0));
                        Series { name: fam.replace("{x}", "K"), points }
                    })
                    .collect();
                let y = if mode == "icount" {
                    format!("{what} (per 10^9 guest instructions, all vCPUs)")
                } else {
                    format!("{what} (TCG wall clock)")
                };
                out.push((
                    format!("{file}_{mode}.svg"),
                    lines(
                        &format!("Throughput vs cores ({mode})"),
                        "K: producers / clients / cores (per core: over the cores in use)",
                        &y,
                        &series,
                        false,
                    )?,
                ));
            }
        }
    }
    Ok(out)
}

/// Writes `figures` into `dir`; the paths.
pub fn write(dir: &Path, figures: &[(String, String)]) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for (name, svg) in figures {
        let p = dir.join(name);
        std::fs::write(&p, svg).map_err(|e| format!("writing {}: {e}", p.display()))?;
        paths.push(p);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(svg: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(svg).expect("the SVG parses")
    }

    /// Elements drawn in a series colour (the axes and mesh are grey and
    /// black).
    fn coloured(svg: &str, tag: &str) -> usize {
        let colours: Vec<String> =
            PALETTE.iter().map(|c| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)).collect();
        doc(svg)
            .descendants()
            .filter(|n| n.has_tag_name(tag))
            .filter(|n| {
                ["stroke", "fill"]
                    .iter()
                    .any(|a| n.attribute(*a).is_some_and(|v| colours.iter().any(|c| c == v)))
            })
            .count()
    }

    fn texts(svg: &str) -> Vec<String> {
        doc(svg)
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_string()))
            .collect()
    }

    #[test]
    fn line_figure_has_one_series_per_input() {
        let series = vec![
            Series {
                name: "ours".into(),
                points: vec![(1.0, 1200.0), (4.0, 2800.0), (7.0, 4400.0)],
            },
            Series { name: "Linux".into(), points: vec![(1.0, 11000.0), (7.0, 21000.0)] },
            Series { name: "empty".into(), points: vec![] },
        ];
        let svg = lines("t", "cores", "instructions", &series, false).unwrap();
        assert_eq!(coloured(&svg, "polyline"), 2);
        assert_eq!(coloured(&svg, "circle"), 5);
        let t = texts(&svg);
        assert!(t.contains(&"ours".to_string()) && t.contains(&"Linux".to_string()), "{t:?}");
        assert!(!t.contains(&"empty".to_string()));
        let svg = lines("t", "batch", "i", &series[..1], true).unwrap();
        assert_eq!(coloured(&svg, "polyline"), 1);
    }

    #[test]
    fn bar_figure_has_a_bar_per_figure() {
        let pairs = vec![
            Pair {
                label: "syscall_null / linux_getpid".into(),
                ours: Some(64.0),
                linux: Some(321.0),
            },
            Pair { label: "map_unmap".into(), ours: Some(1235.0), linux: None },
        ];
        let svg = bars("t", "instructions", &pairs).unwrap();
        let d = doc(&svg);
        let fill = |c: RGBColor| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
        let bars_of = |c: RGBColor| {
            d.descendants()
                .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some(fill(c).as_str()))
                .count()
        };
        // Two of ours, one of Linux, plus one legend swatch each.
        assert_eq!(bars_of(OURS), 2 + 1);
        assert_eq!(bars_of(LINUX), 1 + 1);
        assert!(texts(&svg).contains(&"syscall_null / linux_getpid".to_string()));
    }

    #[test]
    fn figures_from_results() {
        let registry = crate::registry::load(&crate::root()).unwrap();
        let e = |name: &str, v: u64| Entry {
            name: name.into(),
            unit: "cycles".into(),
            median: v.into(),
            p99: v.into(),
            samples: 1,
            mode: "icount".into(),
            run: None,
            ops_per_s: None,
            ops_per_s_per_core: None,
            cores: None,
        };
        let mut results = vec![e("syscall_null", 64), e("linux_getpid", 321)];
        for k in 1..=7 {
            results.push(e(&format!("tlb_shootdown_1page_k{k}"), 1000 + k * 100));
            results.push(e(&format!("linux_munmap_1page_k{k}"), 10000 + k * 100));
        }
        let figs = figures(&registry, &results).unwrap();
        let names: Vec<_> = figs.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["vs_linux_icount.svg", "shootdown_vs_cores_icount.svg"]);
        // Two of the six shootdown series have data.
        assert_eq!(coloured(&figs[1].1, "polyline"), 2);
    }

    #[test]
    fn throughput_figures_have_a_series_per_family() {
        let registry = crate::registry::load(&crate::root()).unwrap();
        let mut results = Vec::new();
        for k in 1..=7u64 {
            for (name, per_op) in [
                (format!("kv_op_{k}_clients"), 20_000 + k * 500),
                (format!("rt_spawn_{k}_cores"), 900 + k * 10),
            ] {
                results.push(Entry::from_line(
                    crate::report::BenchLine {
                        name,
                        unit: "cycles/op".into(),
                        median: per_op.into(),
                        p99: per_op.into(),
                        samples: 5,
                    },
                    crate::bench::Mode::Icount,
                ));
            }
        }
        crate::bench::add_throughput(&mut results, &registry, Some(1e9));
        let figs = figures(&registry, &results).unwrap();
        let names: Vec<_> = figs.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            names,
            ["throughput_vs_cores_icount.svg", "throughput_per_core_vs_cores_icount.svg"]
        );
        for (_, svg) in &figs {
            // Two families with data, seven points each.
            assert_eq!(coloured(svg, "polyline"), 2);
            assert_eq!(coloured(svg, "circle"), 14);
            let t = texts(svg);
            assert!(t.contains(&"kv_op_K_clients".to_string()), "{t:?}");
        }
    }
}
