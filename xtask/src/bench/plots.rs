//! The report's SVG plots.
//!
//! - One per workload: throughput against threads, relative to the baseline build (`gil`) at one
//!   thread, one line per build and per Python interpreter, on a log scale, so that single-thread
//!   cost (where a line starts) and scaling (how it rises) read at once. The ideal line runs to
//!   N = cores, where strong scaling must stop. A value far from the rest (a broken cell) is
//!   drawn at the edge with its number, so that it does not flatten the other lines.
//! - `io-latency-under-load`: the ping latency (p50, interval and fair mode) against threads.
//! - `vs_gil.svg`: a heat map of `vs_gil` for every timed workload × (free-threaded runner,
//!   threads).

use std::path::Path;

use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{Cell, Report, MEASURED_BY_LATENCY};
use crate::steps::Failed;

const COLOURS: [RGBColor; 8] = [
    RGBColor(200, 60, 40),
    RGBColor(40, 110, 200),
    RGBColor(40, 160, 80),
    RGBColor(150, 80, 170),
    RGBColor(230, 150, 20),
    RGBColor(90, 90, 90),
    RGBColor(20, 170, 170),
    RGBColor(170, 120, 60),
];

/// How far (as a factor) from the median of a plot's values a point may lie before it is
/// clipped to the edge.
const OUTLIER_FACTOR: f64 = 12.0;

type Drawn = Result<(), Box<dyn std::error::Error>>;

/// (threads, value) points of one line.
type Points = Vec<(f64, f64)>;

pub fn draw_all(report: &Report, out: &Path) -> Result<(), Failed> {
    let failed = |path: &Path, e: Box<dyn std::error::Error>| {
        Failed(format!("cannot draw {}: {e}", path.display()))
    };
    for workload in &report.workloads {
        let path = out.join(format!("{workload}.svg"));
        let drawn = if workload == "io-latency-under-load" {
            draw_latency(report, workload, &path)
        } else {
            draw_throughput(report, workload, &path)
        };
        drawn.map_err(|e| failed(&path, e))?;
    }
    let path = out.join("vs_gil.svg");
    draw_vs_gil(report, &path).map_err(|e| failed(&path, e))
}

/// The y range of a log plot of `values` (and `always`, which must show): the values' range,
/// but no further than [`OUTLIER_FACTOR`] from their median.
fn log_range(values: &[f64], always: &[f64]) -> (f64, f64) {
    let mut sorted: Vec<f64> = values
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(1.0);
    let (lo_limit, hi_limit) = (median / OUTLIER_FACTOR, median * OUTLIER_FACTOR);
    let within = sorted
        .iter()
        .copied()
        .filter(|v| (lo_limit..=hi_limit).contains(v));
    let (lo, hi) = within
        .chain(always.iter().copied())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo.is_finite() && hi.is_finite() {
        (lo / 1.3, hi * 1.3)
    } else {
        (0.1, 10.0)
    }
}

/// One legend line: label, colour, stroke width, dashed.
type LegendEntry = (String, RGBColor, u32, bool);

/// The width of a plot's legend column, right of the plot (so that it never hides a line).
const LEGEND_WIDTH: u32 = 190;

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[LegendEntry],
) -> Drawn
where
    DB::ErrorType: 'static,
{
    let label =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (text, colour, width, dashed)) in entries.iter().enumerate() {
        let y = 48 + 20 * i as i32;
        let style = colour.stroke_width(*width);
        if *dashed {
            area.draw(&PathElement::new([(4, y), (10, y)], style))?;
            area.draw(&PathElement::new([(16, y), (24, y)], style))?;
        } else {
            area.draw(&PathElement::new([(4, y), (24, y)], style))?;
        }
        area.draw(&Text::new(text.clone(), (30, y), label.clone()))?;
    }
    Ok(())
}

/// Labels for a log axis over `(lo, hi)`: the powers of two in it, with halves between them
/// when there are few.
fn log_key_points((lo, hi): (f64, f64)) -> Vec<f64> {
    let powers: Vec<f64> = (-20..=20)
        .map(|e| 2f64.powi(e))
        .filter(|v| (lo..=hi).contains(v))
        .collect();
    if powers.len() >= 4 {
        return powers;
    }
    let mut points: Vec<f64> = (-40..=40)
        .map(|e| 2f64.powf(f64::from(e) / 2.0))
        .filter(|v| (lo..=hi).contains(v))
        .collect();
    if points.len() < 2 {
        points = vec![lo, (lo * hi).sqrt(), hi];
    }
    points
}

fn clip(value: f64, (lo, hi): (f64, f64)) -> (f64, bool) {
    if value < lo {
        (lo, true)
    } else if value > hi {
        (hi, true)
    } else {
        (value, false)
    }
}

/// What a per-workload plot puts on its axes: threads across, a log scale up.
struct ThreadsAxes {
    caption: String,
    x_desc: &'static str,
    y_desc: String,
    /// Decimals of the y labels.
    y_decimals: usize,
    max_threads: f64,
    /// How many thread counts were measured (sets the x label density).
    thread_counts: usize,
    /// The y range, both ends positive.
    range: (f64, f64),
}

type ThreadsChart<'a> =
    ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, WithKeyPoints<LogCoord<f64>>>>;

/// The canvas both per-workload plots draw on: whole thread counts labelled across, the log
/// scale's key points up, the mesh drawn.
fn threads_chart<'a>(
    plot: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    axes: ThreadsAxes,
) -> Result<ThreadsChart<'a>, Box<dyn std::error::Error>> {
    let ThreadsAxes {
        caption,
        x_desc,
        y_desc,
        y_decimals,
        max_threads,
        thread_counts,
        range,
    } = axes;
    let mut chart = ChartBuilder::on(plot)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(
            0.5..max_threads + 0.5,
            (range.0..range.1)
                .log_scale()
                .with_key_points(log_key_points(range)),
        )?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(thread_counts.max(2) * 2)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{}", x.round())
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.y_decimals$}"))
        .draw()?;
    Ok(chart)
}

fn draw_throughput(report: &Report, workload: &str, path: &Path) -> Drawn {
    let max_threads = report.threads.iter().copied().max().unwrap_or(1) as f64;
    let baseline = report.baseline_build().unwrap_or("gil");
    // Per runner: its passing cells' points, and its failed cells'.
    let series: Vec<(&str, Points, Points)> = report
        .builds()
        .map(|build| {
            let cells: Vec<&Cell> = report
                .threads
                .iter()
                .filter_map(|&t| report.cell(workload, build, t))
                .collect();
            let point = |c: &&Cell| Some((c.threads as f64, c.relative_throughput?));
            let ok = cells.iter().filter(|c| c.ok()).filter_map(point).collect();
            let failed = cells.iter().filter(|c| !c.ok()).filter_map(point).collect();
            (build, ok, failed)
        })
        .filter(|(_, ok, failed): &(_, Vec<_>, Vec<_>)| !ok.is_empty() || !failed.is_empty())
        .collect();
    let ideal_to = (report.cores as f64).min(max_threads).max(1.0);
    let values: Vec<f64> = series
        .iter()
        .flat_map(|(_, ok, failed)| ok.iter().chain(failed).map(|(_, y)| *y))
        .collect();
    let range = log_range(&values, &[1.0, ideal_to]);

    let root = SVGBackend::new(path, (720 + LEGEND_WIDTH, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, legend_area) = root.split_horizontally(720);
    let mut legend: Vec<LegendEntry> = Vec::new();
    let mut chart = threads_chart(
        &plot,
        ThreadsAxes {
            caption: format!("{workload}: throughput against threads"),
            x_desc: "threads",
            y_desc: format!("throughput / {baseline} at 1 thread (log)"),
            y_decimals: 2,
            max_threads,
            thread_counts: report.threads.len(),
            range,
        },
    )?;
    let ideal = RGBColor(160, 160, 160);
    chart.draw_series(LineSeries::new(
        [(1.0, 1.0), (ideal_to, ideal_to)],
        ideal.stroke_width(1),
    ))?;
    legend.push((
        format!("ideal (to {} cores)", report.cores),
        ideal,
        1,
        false,
    ));
    for (i, (build, ok, failed)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let clipped: Vec<(f64, f64, bool, f64)> = ok
            .iter()
            .map(|&(x, y)| {
                let (shown, was_clipped) = clip(y, range);
                (x, shown, was_clipped, y)
            })
            .collect();
        chart.draw_series(LineSeries::new(
            clipped.iter().map(|&(x, y, _, _)| (x, y)),
            colour.stroke_width(2),
        ))?;
        legend.push(((*build).to_owned(), colour, 2, false));
        chart.draw_series(clipped.iter().map(|&(x, y, was_clipped, _)| {
            if was_clipped {
                Circle::new((x, y), 5, colour.stroke_width(2))
            } else {
                Circle::new((x, y), 3, colour.filled())
            }
        }))?;
        chart.draw_series(clipped.iter().filter(|p| p.2).map(|&(x, y, _, real)| {
            Text::new(
                format!("{real:.3}"),
                (x, y),
                ("sans-serif", 12).into_font().color(&colour),
            )
        }))?;
        chart.draw_series(
            failed
                .iter()
                .map(|&(x, y)| Cross::new((x, clip(y, range).0), 6, RED.stroke_width(2))),
        )?;
    }
    if series.iter().any(|(_, _, failed)| !failed.is_empty()) {
        legend.push(("x: a failed cell".to_owned(), RED, 2, false));
    }
    draw_legend(&legend_area, &legend)?;
    root.present()?;
    Ok(())
}

fn draw_latency(report: &Report, workload: &str, path: &Path) -> Drawn {
    let max_threads = report.threads.iter().copied().max().unwrap_or(1) as f64;
    // Per line: label, points, fair mode.
    let mut series: Vec<(String, Points, bool)> = Vec::new();
    for build in report.builds() {
        for (metric, mode, fair) in [("p50_ms", "interval", false), ("fair_p50_ms", "fair", true)] {
            let points: Vec<(f64, f64)> = report
                .threads
                .iter()
                .filter_map(|&t| {
                    // A failed cell's latency is not drawn: its run did not do what it timed.
                    let cell = report.cell(workload, build, t).filter(|c| c.ok())?;
                    Some((t as f64, *cell.metrics.get(metric)?))
                })
                .collect();
            if !points.is_empty() {
                series.push((format!("{build} {mode} p50"), points, fair));
            }
        }
    }
    // No clipping here: a latency far above the rest is the convoy effect this plot shows.
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|(_, y)| *y))
        .filter(|y| y.is_finite() && *y > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        });
    let range = if lo.is_finite() {
        (lo / 1.5, hi * 1.5)
    } else {
        (0.01, 10.0)
    };

    let root = SVGBackend::new(path, (720 + LEGEND_WIDTH, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, legend_area) = root.split_horizontally(720);
    let mut legend: Vec<LegendEntry> = Vec::new();
    let mut chart = threads_chart(
        &plot,
        ThreadsAxes {
            caption: format!("{workload}: ping latency against threads"),
            x_desc: "threads (one answers pings, the others count down)",
            y_desc: "ping delay p50, ms (log)".to_owned(),
            y_decimals: 3,
            max_threads,
            thread_counts: report.threads.len(),
            range,
        },
    )?;
    for (i, (label, points, fair)) in series.iter().enumerate() {
        let colour = COLOURS[(i / 2) % COLOURS.len()];
        let style = if *fair {
            colour.stroke_width(1)
        } else {
            colour.stroke_width(2)
        };
        let shown: Vec<(f64, f64)> = points.clone();
        if *fair {
            chart.draw_series(DashedLineSeries::new(shown.iter().copied(), 6, 4, style))?;
        } else {
            chart.draw_series(LineSeries::new(shown.iter().copied(), style))?;
        }
        legend.push((label.clone(), colour, if *fair { 1 } else { 2 }, *fair));
        chart.draw_series(shown.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
    }
    draw_legend(&legend_area, &legend)?;
    root.present()?;
    Ok(())
}

/// White at 1, shading to red below (the GIL twin is faster) and to blue above, saturating at
/// 4x either way.
fn heat(value: f64) -> RGBColor {
    let t = (value.log2() / 2.0).clamp(-1.0, 1.0);
    let (towards, amount) = if t < 0.0 {
        ((200.0, 60.0, 40.0), -t)
    } else {
        ((40.0, 110.0, 200.0), t)
    };
    let mix = |target: f64| (255.0 + (target - 255.0) * amount).round() as u8;
    RGBColor(mix(towards.0), mix(towards.1), mix(towards.2))
}

fn draw_vs_gil(report: &Report, path: &Path) -> Drawn {
    let groups: Vec<&str> = report
        .runners
        .iter()
        .filter(|r| !r.has_gil && r.gil_reference.is_some())
        .map(|r| r.build.as_str())
        .collect();
    let rows: Vec<&String> = report
        .workloads
        .iter()
        .filter(|w| !MEASURED_BY_LATENCY.contains(&w.as_str()))
        .collect();
    let threads = report.threads.len().max(1) as i32;
    // Wide enough for the runner's name over its group of columns.
    let longest = groups.iter().map(|g| g.len()).max().unwrap_or(8) as i32;
    let cell_w = (longest * 8 / threads).max(56);
    let (left, top, cell_h) = (190_i32, 74_i32, 22_i32);
    let width = (left + cell_w * threads * groups.len().max(1) as i32 + 20).max(560);
    let height = top + cell_h * rows.len().max(1) as i32 + 56;
    let root = SVGBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let centred = |size: u32| {
        TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(HPos::Center, VPos::Center))
    };
    root.draw(&Text::new(
        "vs_gil: the GIL twin's time / this runner's, at the same thread count",
        (10, 16),
        ("sans-serif", 16).into_font(),
    ))?;
    root.draw(&Text::new(
        "blue: free-threaded is faster; red: its GIL twin is faster (saturating at 4x); x: failed; -: not run",
        (10, height - 22),
        ("sans-serif", 12).into_font(),
    ))?;
    for (g, build) in groups.iter().enumerate() {
        let x0 = left + cell_w * threads * g as i32;
        root.draw(&Text::new(
            build.to_string(),
            (x0 + cell_w * threads / 2, top - 32),
            centred(12),
        ))?;
        for (i, t) in report.threads.iter().enumerate() {
            let x = x0 + cell_w * i as i32 + cell_w / 2;
            root.draw(&Text::new(format!("x{t}"), (x, top - 13), centred(11)))?;
        }
    }
    let right_aligned =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for (row, workload) in rows.iter().enumerate() {
        let y0 = top + cell_h * row as i32;
        root.draw(&Text::new(
            workload.to_string(),
            (left - 8, y0 + cell_h / 2),
            right_aligned.clone(),
        ))?;
        for (g, build) in groups.iter().enumerate() {
            for (i, &threads_here) in report.threads.iter().enumerate() {
                let x0 = left + cell_w * (threads * g as i32 + i as i32);
                let (fill, text) = match report.cell(workload, build, threads_here) {
                    Some(c) if !c.ok() => (RGBColor(225, 225, 225), "x".to_owned()),
                    Some(c) => match c.vs_gil.filter(|v| v.is_finite() && *v > 0.0) {
                        Some(v) => (heat(v), format!("{v:.2}")),
                        None => (WHITE, "-".to_owned()),
                    },
                    None => (WHITE, "-".to_owned()),
                };
                let corners = [(x0, y0), (x0 + cell_w, y0 + cell_h)];
                root.draw(&Rectangle::new(corners, fill.filled()))?;
                root.draw(&Rectangle::new(corners, WHITE.stroke_width(1)))?;
                root.draw(&Text::new(
                    text,
                    (x0 + cell_w / 2, y0 + cell_h / 2),
                    centred(11),
                ))?;
            }
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_outlier_does_not_stretch_the_range() {
        let (lo, hi) = log_range(&[0.9, 1.0, 1.8, 2.0, 805.0], &[1.0, 2.0]);
        assert!(hi < 10.0, "the 805x outlier is clipped: {hi}");
        assert!(lo < 0.9 && hi > 2.0);
        assert_eq!(clip(805.0, (lo, hi)), (hi, true));
    }

    #[test]
    fn the_heat_map_is_white_at_one_and_saturates() {
        assert_eq!(heat(1.0), RGBColor(255, 255, 255));
        assert_eq!(heat(4.0), heat(100.0));
        assert_eq!(heat(0.25), RGBColor(200, 60, 40));
    }
}
