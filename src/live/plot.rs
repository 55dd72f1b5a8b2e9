//! The simulated and live response-time CDFs of every strategy, one panel each, in one SVG
//! (or PNG with `lbsim live --png`).

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::ImageFormat;
use crate::report::plots::time_axis;

/// Points `(latency in seconds, cumulative probability)` of a latency histogram (ns).
fn cdf_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    (0..=1000)
        .map(|k| {
            let q = f64::from(k) / 1000.0;
            (h.value_at_quantile(q) as f64 * 1e-9, q)
        })
        .collect()
}

/// Draws `(label, simulated, live)` latency histograms (ns, scenario time) into `path`, as
/// SVG or PNG.
pub(crate) fn cdf_plot(
    path: &Path,
    format: ImageFormat,
    title: &str,
    curves: &[(&str, &Histogram<u64>, &Histogram<u64>)],
) -> Result<(), String> {
    let n = curves.len().max(1);
    let size = (800, 300 * u32::try_from(n).unwrap_or(1));
    match format {
        ImageFormat::Svg => draw(
            SVGBackend::new(path, size).into_drawing_area(),
            title,
            curves,
        ),
        ImageFormat::Png => draw(
            BitMapBackend::new(path, size).into_drawing_area(),
            title,
            curves,
        ),
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    curves: &[(&str, &Histogram<u64>, &Histogram<u64>)],
) -> Result<(), String> {
    let n = curves.len().max(1);
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((n, 1));
    for (panel, (label, sim, live)) in panels.iter().zip(curves) {
        // Up to the larger 99.9th percentile: the tail beyond is a handful of points.
        let p999 = |h: &Histogram<u64>| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(0.999) as f64 * 1e-9
            }
        };
        let top = (p999(sim).max(p999(live)) * 1.05).max(1e-6);
        let (scale, unit) = time_axis(top);
        let x_max = top * scale;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{title} — {label}"), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(0.0..x_max, 0.0..1.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(format!("response time ({unit}, scenario time)"))
            .y_desc("P(latency ≤ x)")
            .draw()
            .map_err(|e| e.to_string())?;
        // A wide translucent band for the simulation under a thin line for live, so both stay
        // visible where they agree (which is the point).
        let sim_style = RGBColor(0, 114, 178).mix(0.4).stroke_width(7);
        let live_style = RGBColor(213, 94, 0).stroke_width(2);
        for (h, name, style) in [(*sim, "simulated", sim_style), (*live, "live", live_style)] {
            chart
                .draw_series(LineSeries::new(
                    cdf_points(h)
                        .into_iter()
                        .map(|(x, p)| (x * scale, p))
                        .filter(|&(x, _)| x <= x_max),
                    style,
                ))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
