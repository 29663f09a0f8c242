//! Plots beside the JSON: end-to-end latency over the run (P50 and P99 of each second, by
//! intended send time, so a stall shows where it was *due*), and the latency distribution by
//! percentile on HdrHistogram's axis (1/(1−q): the tail is as wide as the body). SVG, drawn
//! by plotters with its own font metrics, so nothing outside the binary is needed.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::report::{Report, ms};

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// A point's name and its P50 and P99 lines.
type Series = (String, Vec<(f64, f64)>, Vec<(f64, f64)>);

fn name(label: &str, profile: &str) -> String {
    if label.is_empty() {
        profile.to_owned()
    } else {
        format!("{label} {profile}")
    }
}

/// Writes both plots into `dir`; returns their paths.
pub fn write(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let over_time = dir.join("latency_over_time.svg");
    let percentiles = dir.join("latency_percentiles.svg");
    over_time_plot(report, &over_time)?;
    percentile_plot(report, &percentiles)?;
    Ok(vec![over_time, percentiles])
}

fn over_time_plot(report: &Report, path: &Path) -> anyhow::Result<()> {
    let series: Vec<Series> = report
        .points
        .iter()
        .map(|p| {
            let mut p50 = Vec::new();
            let mut p99 = Vec::new();
            for (i, s) in p.timeline.iter().enumerate() {
                if !s.e2el.is_empty() {
                    p50.push((i as f64 + 0.5, ms(&s.e2el, 0.5)));
                    p99.push((i as f64 + 0.5, ms(&s.e2el, 0.99)));
                }
            }
            (name(&p.label, &p.profile.name()), p50, p99)
        })
        .collect();
    let x_max = series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).fold(1.0, f64::max) + 0.5;
    let y_max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(0.001, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "end-to-end latency over the run (P50 solid, P99 dashed)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds (by intended send time)")
        .y_desc("ms")
        .draw()?;
    for (i, (label, p50, p99)) in series.into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(p50, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(DashedLineSeries::new(p99, 6, 4, color.stroke_width(1)))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Percentiles drawn: 0 to 99.99 on a 1/(1−q) axis.
const QUANTILES: [f64; 14] = [
    0.0, 0.25, 0.5, 0.75, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999,
];

fn percentile_plot(report: &Report, path: &Path) -> anyhow::Result<()> {
    let series: Vec<(String, Vec<(f64, f64)>)> = report
        .points
        .iter()
        .filter(|p| !p.hist.e2el.is_empty())
        .map(|p| {
            let pts = QUANTILES
                .iter()
                .map(|q| (1.0 / (1.0 - q), ms(&p.hist.e2el, *q)))
                .collect();
            (name(&p.label, &p.profile.name()), pts)
        })
        .collect();
    let y_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.001, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("end-to-end latency by percentile", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1.0..10_000.0).log_scale(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_label_formatter(&|x| {
            let q = 100.0 * (1.0 - 1.0 / x);
            format!("{q:.2}%")
        })
        .draw()?;
    for (i, (label, pts)) in series.into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
