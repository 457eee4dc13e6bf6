//! SVG figures of `mtcp-bench compare`, in the style of the mTCP paper's: for one workload,
//! transactions per second and CPU µs per transaction (both log scale) against concurrency
//! (one core per side) and, when the run measured more than one core count, against cores at
//! the largest concurrency measured so; one line per stack.

use crate::pingpong::Record;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use std::path::Path;

/// Colours of the stacks' lines, in the order they first appear.
const COLOURS: [RGBColor; 8] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Pixels kept right of each chart for its legend.
const LEGEND_WIDTH: u32 = 130;

/// One panel: y of each stack against x.
struct Panel<'a> {
    title: String,
    x_label: &'static str,
    y_label: &'static str,
    /// (stack, points sorted by x).
    lines: Vec<(&'a str, Vec<(f64, f64)>)>,
}

impl Panel<'_> {
    fn is_empty(&self) -> bool {
        self.lines.iter().all(|(_, p)| p.is_empty())
    }
}

/// The lines of `y` against `x` for `records` (only finite, positive points).
fn lines<'a>(
    records: &[&'a Record],
    stacks: &[&'a str],
    x: impl Fn(&Record) -> f64,
    y: impl Fn(&Record) -> f64,
) -> Vec<(&'a str, Vec<(f64, f64)>)> {
    stacks
        .iter()
        .map(|&s| {
            let mut pts: Vec<(f64, f64)> = records
                .iter()
                .filter(|r| r.stack == s)
                .map(|r| (x(r), y(r)))
                .filter(|&(x, y)| x.is_finite() && y.is_finite() && x > 0.0 && y > 0.0)
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (s, pts)
        })
        .collect()
}

/// Writes the figure of `mode` to `path`; `Ok(false)` when `records` hold nothing to draw
/// for it.
pub fn write_figure(records: &[Record], mode: &str, path: &Path) -> Result<bool, String> {
    let of_mode: Vec<&Record> = records.iter().filter(|r| r.mode == mode).collect();
    let mut stacks: Vec<&str> = Vec::new();
    for r in &of_mode {
        if !stacks.contains(&r.stack.as_str()) {
            stacks.push(&r.stack);
        }
    }
    let one_core: Vec<&Record> = of_mode.iter().copied().filter(|r| r.cores == 1).collect();
    let conc = |r: &Record| r.concurrency as f64;
    let mut panels = vec![
        Panel {
            title: format!("{mode}: transactions/s, 1 core per side"),
            x_label: "concurrent connections",
            y_label: "transactions/s",
            lines: lines(&one_core, &stacks, conc, |r| r.tx_per_s),
        },
        Panel {
            title: format!("{mode}: CPU per transaction, 1 core per side"),
            x_label: "concurrent connections",
            y_label: "CPU µs per transaction",
            lines: lines(&one_core, &stacks, conc, |r| r.cpu_us_per_tx),
        },
    ];
    // Against cores: at the largest concurrency measured with more than one core count.
    let multi = of_mode
        .iter()
        .filter(|r| {
            of_mode
                .iter()
                .any(|o| o.concurrency == r.concurrency && o.cores != r.cores)
        })
        .map(|r| r.concurrency)
        .max();
    if let Some(c) = multi {
        let at: Vec<&Record> = of_mode
            .iter()
            .copied()
            .filter(|r| r.concurrency == c)
            .collect();
        let cores = |r: &Record| r.cores as f64;
        panels.push(Panel {
            title: format!("{mode}: transactions/s, {c} connections"),
            x_label: "cores per side",
            y_label: "transactions/s",
            lines: lines(&at, &stacks, cores, |r| r.tx_per_s),
        });
        panels.push(Panel {
            title: format!("{mode}: CPU per transaction, {c} connections"),
            x_label: "cores per side",
            y_label: "CPU µs per transaction",
            lines: lines(&at, &stacks, cores, |r| r.cpu_us_per_tx),
        });
    }
    panels.retain(|p| !p.is_empty());
    if panels.is_empty() {
        return Ok(false);
    }
    let rows = panels.len().div_ceil(2);
    let size = (1100, 420 * rows as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let areas = root.split_evenly((rows, 2));
    for (panel, area) in panels.iter().zip(&areas) {
        draw_panel(panel, &stacks, area).map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(true)
}

/// A log-scale range around `values` (a decade's margin when they are all equal).
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || hi <= 0.0 {
        return (1.0, 10.0);
    }
    if hi / lo < 1.5 {
        (lo / 2.0, hi * 2.0)
    } else {
        (lo / 1.3, hi * 1.3)
    }
}

fn draw_panel<DB: DrawingBackend>(
    panel: &Panel<'_>,
    stacks: &[&str],
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let pts = || panel.lines.iter().flat_map(|(_, p)| p.iter());
    let (x0, x1) = log_range(pts().map(|p| p.0));
    let (y0, y1) = log_range(pts().map(|p| p.1));
    let (w, _) = area.dim_in_pixel();
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(12)
        // Room on the right for the legend, so that it never hides a line.
        .margin_right(LEGEND_WIDTH + 12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
    mesh(&mut chart, panel)?;
    for (s, p) in &panel.lines {
        if p.is_empty() {
            continue;
        }
        let k = stacks.iter().position(|x| x == s).unwrap_or(0);
        let colour = COLOURS[k % COLOURS.len()];
        let style = ShapeStyle::from(&colour).stroke_width(2);
        chart.draw_series(LineSeries::new(p.iter().copied(), style))?;
        // The legend, right of the chart (the chart's own legend would be clipped there).
        let (x, y) = (w as i32 - LEGEND_WIDTH as i32 - 4, 40 + 16 * k as i32);
        area.draw(&PathElement::new(vec![(x, y), (x + 18, y)], style))?;
        area.draw(&Text::new(
            s.to_string(),
            (x + 24, y - 6),
            ("sans-serif", 12).into_font(),
        ))?;
        chart.draw_series(
            p.iter()
                .map(|&(x, y)| Circle::new((x, y), 3, colour.filled())),
        )?;
    }
    Ok(())
}

fn mesh<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    panel: &Panel<'_>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(panel.x_label)
        .y_desc(panel.y_label)
        .light_line_style(TRANSPARENT)
        .y_labels(12)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .draw()
}

/// `1.2k`, `35`, `0.61`, `3.1M`.
fn short(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e3 {
        return format!("{v:.0}");
    }
    match v.abs() {
        a if a >= 1e6 => format!("{:.3}M", v / 1e6),
        a if a >= 1e3 => format!("{:.3}k", v / 1e3),
        a if a >= 10.0 => format!("{v:.0}"),
        a if a >= 1.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
    .replace(".000", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(stack: &str, mode: &str, concurrency: usize, cores: usize, tx: f64) -> Record {
        Record {
            stack: stack.into(),
            mode: mode.into(),
            concurrency,
            cores,
            tx_per_s: tx,
            cpu_us_per_tx: 1e6 / tx,
            gbit_per_s: 0.0,
            p50_us: f64::NAN,
            p99_us: f64::NAN,
        }
    }

    #[test]
    fn a_figure_has_a_line_per_stack_and_skips_what_it_cannot_draw() {
        let dir = std::env::temp_dir().join(format!("mtcp-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rs = Vec::new();
        for (s, k) in [("mtcp-shm", 30.0), ("linux-loopback", 1.0)] {
            for c in [16, 64, 1024] {
                rs.push(rec(s, "new-conn", c, 1, k * 1e4 * (c as f64).sqrt()));
            }
            rs.push(rec(s, "new-conn", 1024, 2, k * 5e5));
        }
        rs.push(rec("linux-loopback", "bulk", 1, 1, f64::NAN));
        let path = dir.join("new-conn.svg");
        assert!(write_figure(&rs, "new-conn", &path).unwrap());
        let svg = std::fs::read_to_string(&path).unwrap();
        for needle in [
            "mtcp-shm",
            "linux-loopback",
            "cores per side",
            "1024 connections",
        ] {
            assert!(svg.contains(needle), "{needle} missing");
        }
        // Nothing finite to draw: no file.
        assert!(!write_figure(&rs, "bulk", &dir.join("bulk.svg")).unwrap());
        assert!(!write_figure(&rs, "setup", &dir.join("setup.svg")).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
