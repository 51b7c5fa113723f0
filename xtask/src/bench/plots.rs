//! One SVG per workload: speedup against thread count, a line per build, and the ideal line.

use std::path::Path;

use plotters::prelude::*;

use super::report::Report;
use crate::steps::Failed;

const COLOURS: [RGBColor; 6] = [
    RGBColor(200, 60, 40),
    RGBColor(40, 110, 200),
    RGBColor(40, 160, 80),
    RGBColor(150, 80, 170),
    RGBColor(230, 150, 20),
    RGBColor(90, 90, 90),
];

pub fn draw_all(report: &Report, out: &Path) -> Result<(), Failed> {
    for workload in &report.workloads {
        let path = out.join(format!("{workload}.svg"));
        draw(report, workload, &path)
            .map_err(|e| Failed(format!("cannot draw {}: {e}", path.display())))?;
    }
    Ok(())
}

fn draw(report: &Report, workload: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let max_threads = report.threads.iter().copied().max().unwrap_or(1) as f64;
    let series: Vec<(&String, Vec<(f64, f64)>)> = report
        .builds
        .iter()
        .map(|build| {
            let points = report
                .threads
                .iter()
                .filter_map(|&t| Some((t as f64, report.cell(workload, build, t)?.speedup?)))
                .collect::<Vec<_>>();
            (build, points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect();
    let top = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, s)| *s))
        .fold(max_threads, f64::max)
        * 1.1;

    let root = SVGBackend::new(path, (640, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{workload}: speedup against threads"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..max_threads * 1.05, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("threads")
        .y_desc("speedup (1 thread / N threads)")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(1.0, 1.0), (max_threads, max_threads)],
            BLACK.mix(0.3),
        ))?
        .label("ideal")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.mix(0.3)));
    for (i, (build, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(build.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
