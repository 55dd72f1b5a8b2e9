//! Plots with plotters, SVG by default and PNG on request: the response-time tail
//! (complementary CDF on log-log axes, from the merged HDR histograms), per-server share
//! and utilisation per strategy (grouped bars), and a metric against the swept parameter
//! with 95% CI bands.
//!
//! Every series has its own colour (a colour-blind-safe palette of 8) *and* its own marker,
//! and strategies past the fourth are dashed, so 8 strategies stay apart in print too.
//! Legends sit in a strip of their own beside (or above) the charts, never over data; times
//! are shown in µs, ms or s by magnitude ([`time_axis`]).

use std::ops::Range;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::output::Folder;
use super::{Report, ReportError, ReportInput, create_parent};
use crate::metrics::Metric;
use crate::runner::RunResults;
use crate::scenario::Scenario;
use crate::stats::estimate;
use crate::sweep::SweepResults;

/// Image format of plots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageFormat {
    /// Scalable vector graphics (default).
    #[default]
    Svg,
    /// PNG bitmap.
    Png,
}

impl ImageFormat {
    /// File extension.
    pub fn ext(self) -> &'static str {
        match self {
            ImageFormat::Svg => "svg",
            ImageFormat::Png => "png",
        }
    }
}

/// Okabe–Ito colours (yellow, unreadable on white, swapped for brown), then grey.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(140, 86, 75),
];

/// Colour of series `i`.
pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

const SIZE: (u32, u32) = (1000, 640);

/// The plot files a run writes, as (title, file name), for `report.md` to link.
pub fn plot_files(input: &ReportInput<'_>) -> Vec<(&'static str, String)> {
    let ext = input.format.ext();
    let mut v = vec![
        (
            "Response-time tail (complementary CDF)",
            format!("latency_ccdf.{ext}"),
        ),
        ("Per-server share and utilisation", format!("servers.{ext}")),
    ];
    if input.sweep.is_some() {
        v.push((
            "p99 against the swept parameter",
            format!("sweep_p99.{ext}"),
        ));
    }
    v.push((
        "Requests at each server over time (replication 0)",
        format!("queue_over_time.{ext}"),
    ));
    v.push((
        "Offered load (with retries) and goodput over time (replication 0)",
        format!("rates_over_time.{ext}"),
    ));
    v
}

/// Every plot as a [`Report`].
pub struct Plots;

impl Report for Plots {
    fn name(&self) -> &'static str {
        "plots"
    }

    /// The plots are drawn in parallel (on the current rayon pool), each into its own
    /// file; the files are listed in the order of [`plot_files`], and the first failure
    /// in that order is the one returned.
    fn write(
        &self,
        dir: &Folder<'_>,
        input: &ReportInput<'_>,
    ) -> Result<Vec<PathBuf>, ReportError> {
        let files = plot_files(input);
        let (results, format) = (input.results, input.format);
        let ((a, b), c) = rayon::join(
            || {
                rayon::join(
                    || dir.write_with(&files[0].1, |p| latency_ccdf(p, results, format)),
                    || {
                        dir.write_with(&files[1].1, |p| {
                            server_bars(p, input.scenario, results, format)
                        })
                    },
                )
            },
            || match input.sweep {
                Some(s) => dir
                    .write_with(&files[2].1, |p| {
                        sweep_plot(p, s, Metric::LatencyP99, format)
                    })
                    .map(Some),
                None => Ok(None),
            },
        );
        Ok([a?, b?].into_iter().chain(c?).collect())
    }
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws `$body` (which uses the drawing area `$root`) as SVG or PNG at `$path`.
macro_rules! render {
    ($path:expr, $format:expr, $size:expr, |$root:ident| $body:block) => {{
        create_parent($path)?;
        let result: DrawResult = match $format {
            ImageFormat::Svg => {
                let $root = SVGBackend::new($path, $size).into_drawing_area();
                (|| -> DrawResult { $body })()
            }
            ImageFormat::Png => {
                let $root = BitMapBackend::new($path, $size).into_drawing_area();
                (|| -> DrawResult { $body })()
            }
        };
        result.map_err(|e| ReportError::Plot {
            path: $path.to_path_buf(),
            message: e.to_string(),
        })
    }};
}

/// A legend entry for series `i`: a short line (dashed from the fifth series on) with the
/// series marker, drawn straight on the backend.
struct LegendMark {
    at: (i32, i32),
    i: usize,
}

impl<'b> plotters::element::PointCollection<'b, (i32, i32)> for &'b LegendMark {
    type Point = &'b (i32, i32);
    type IntoIter = std::iter::Once<&'b (i32, i32)>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<DB: DrawingBackend> plotters::element::Drawable<DB> for LegendMark {
    fn draw<I: Iterator<Item = (i32, i32)>>(
        &self,
        mut pos: I,
        backend: &mut DB,
        _parent_dim: (u32, u32),
    ) -> Result<(), plotters_backend::DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = pos.next() else {
            return Ok(());
        };
        let style = colour(self.i).stroke_width(2);
        let segments: &[(i32, i32)] = if self.i >= 4 {
            &[(0, 6), (10, 14), (18, 24)]
        } else {
            &[(0, 24)]
        };
        for &(a, b) in segments {
            backend.draw_line((x + a, y), (x + b, y), &style)?;
        }
        let (cx, filled) = (x + 12, style.filled());
        match self.i % 4 {
            0 => backend.draw_circle((cx, y), 4, &filled, true),
            1 => backend.fill_polygon(vec![(cx, y - 6), (cx - 5, y + 4), (cx + 5, y + 4)], &filled),
            2 => backend.draw_rect((cx - 4, y - 4), (cx + 4, y + 4), &filled, true),
            _ => {
                backend.draw_line((cx - 5, y - 5), (cx + 5, y + 5), &style)?;
                backend.draw_line((cx - 5, y + 5), (cx + 5, y - 5), &style)
            }
        }
    }
}

/// Draws series `i`: a line (dashed from the fifth on) with a marker every few points.
fn draw_series<'a, DB: DrawingBackend + 'a, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    i: usize,
    points: &[(X::ValueType, Y::ValueType)],
    marker_every: usize,
) -> DrawResult
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
    X::ValueType: Clone + 'static,
    Y::ValueType: Clone + 'static,
{
    let text = |e: DrawingAreaErrorKind<DB::ErrorType>| -> Box<dyn std::error::Error> {
        e.to_string().into()
    };
    let style = colour(i).stroke_width(2);
    if i >= 4 {
        chart
            .draw_series(DashedLineSeries::new(points.iter().cloned(), 9, 5, style))
            .map_err(text)?;
    } else {
        chart
            .draw_series(LineSeries::new(points.iter().cloned(), style))
            .map_err(text)?;
    }
    // Offset markers per series so that overlapping curves still show every marker.
    let step = marker_every.max(1);
    let offset = (i * step / 8) % step;
    let marked = points.iter().skip(offset).step_by(step).cloned();
    let filled = style.filled();
    match i % 4 {
        0 => chart
            .draw_series(marked.map(|p| Circle::new(p, 4, filled)))
            .map(|_| ()),
        1 => chart
            .draw_series(marked.map(|p| TriangleMarker::new(p, 6, filled)))
            .map(|_| ()),
        2 => chart
            .draw_series(
                marked.map(|p| EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], filled)),
            )
            .map(|_| ()),
        _ => chart
            .draw_series(marked.map(|p| Cross::new(p, 5, colour(i).stroke_width(2))))
            .map(|_| ()),
    }
    .map_err(text)?;
    Ok(())
}

/// The unit to show times of at most `max_seconds` in, as (factor from seconds, unit):
/// µs below 1 ms, ms below 1 s, s from 1 s on, so that 141 s reads `141 s`, not
/// `141056 ms`.
pub fn time_axis(max_seconds: f64) -> (f64, &'static str) {
    let m = max_seconds.abs();
    if m >= 1.0 {
        (1.0, "s")
    } else if m >= 1e-3 || m == 0.0 || !m.is_finite() {
        (1e3, "ms")
    } else {
        (1e6, "µs")
    }
}

/// What marks a legend entry.
#[derive(Clone, Copy, Debug)]
enum Swatch {
    /// Series `i` of [`draw_series`]: its colour, dash and marker.
    Series(usize),
    /// A filled box (bars).
    Bar(RGBColor),
    /// A plain line (server groups).
    Line(RGBColor),
    /// A dashed grey line (guides such as the end of the warm-up).
    Dashed,
    /// A translucent box (a shaded span of time, such as a fault window).
    Shade(RGBColor),
}

/// Approximate width in pixels of `text` at `font` px (about 0.6 em a character).
fn text_width(text: &str, font: u32) -> u32 {
    text.chars().count() as u32 * font * 6 / 10
}

/// Width of a legend strip beside a chart holding `labels` at `font` px.
fn legend_width<'a>(labels: impl Iterator<Item = &'a str>, font: u32) -> u32 {
    (labels.map(|l| text_width(l, font)).max().unwrap_or(0) + 56).clamp(120, 420)
}

const GUIDE: RGBColor = RGBColor(150, 150, 150);

/// Colour of a fault window's shading, drawn at [`FAULT_ALPHA`] opacity.
pub const FAULT: RGBColor = RGBColor(214, 39, 40);

/// Opacity of a fault window's shading: translucent, so the lines stay readable.
pub const FAULT_ALPHA: f64 = 0.12;

/// The spans of time `scenario`'s faults cover, as (start, end) in seconds from the start
/// of the run with a label (the fault's kind and servers): `at` to the fault's end, or to
/// `t_end` for a fault without one (`cold` and `deploy` faults, and those without
/// `duration`).
pub fn fault_windows(scenario: &Scenario, t_end: f64) -> Vec<(f64, f64, String)> {
    let servers = scenario.servers();
    scenario
        .faults
        .iter()
        .map(|f| {
            let on = match f.servers.as_slice() {
                [i] => servers[*i].name.clone(),
                many => format!("{} servers", many.len()),
            };
            (
                f.at.min(t_end),
                f.until.unwrap_or(t_end).min(t_end),
                format!("{} {on}", f.kind.name()),
            )
        })
        .filter(|(a, b, _)| b > a)
        .collect()
}

/// Draws a legend into `area`, an area of its own beside (or above, `horizontal`) the
/// charts, so that it never covers data.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, Swatch)],
    font: u32,
    horizontal: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let line = (font * 18 / 10) as i32;
    let (mut x, mut y) = (12, line / 2 + 16);
    let style = TextStyle::from(("sans-serif", font).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center))
        .color(&BLACK);
    for (label, swatch) in entries {
        match *swatch {
            Swatch::Series(i) => area.draw(&LegendMark { at: (x, y), i })?,
            Swatch::Bar(c) => {
                area.draw(&Rectangle::new([(x, y - 6), (x + 24, y + 6)], c.filled()))?
            }
            Swatch::Line(c) => area.draw(&PathElement::new(
                vec![(x, y), (x + 24, y)],
                c.stroke_width(2),
            ))?,
            Swatch::Shade(c) => area.draw(&Rectangle::new(
                [(x, y - 6), (x + 24, y + 6)],
                c.mix(FAULT_ALPHA).filled(),
            ))?,
            Swatch::Dashed => {
                for a in [0, 8, 16] {
                    area.draw(&PathElement::new(
                        vec![(x + a, y), (x + a + 5, y)],
                        GUIDE.stroke_width(1),
                    ))?;
                }
            }
        }
        area.draw(&Text::new(label.clone(), (x + 32, y), style.clone()))?;
        if horizontal {
            x += text_width(label, font) as i32 + 60;
        } else {
            y += line;
        }
    }
    Ok(())
}

/// Top of each panel's y axis in [`queue_over_time`]: 5% above the most requests any server
/// holds in that strategy's trace (at least 1). Each panel has its own axis, so that a
/// balanced strategy is not flattened to zero by one whose queues grow into thousands.
pub fn queue_panel_tops(traces: &[(String, crate::sim::Trace)]) -> Vec<f64> {
    traces
        .iter()
        .map(|(_, trace)| {
            trace
                .samples
                .iter()
                .flat_map(|s| s.queued.iter().zip(&s.in_service).map(|(q, b)| q + b))
                .max()
                .unwrap_or(1)
                .max(1) as f64
                * 1.05
        })
        .collect()
}

/// Small multiples, one panel per strategy: two columns (one for a single strategy), rows
/// of 230 pixels under a title and a legend of their own.
#[derive(Clone, Copy, Debug)]
struct Grid {
    rows: usize,
    cols: usize,
}

impl Grid {
    /// The grid of `panels` panels.
    fn of(panels: usize) -> Grid {
        let cols = if panels > 1 { 2 } else { 1 };
        Grid {
            rows: panels.div_ceil(cols).max(1),
            cols,
        }
    }

    /// The picture's height, title and legend included.
    fn height(self) -> u32 {
        86 + 230 * self.rows as u32
    }

    /// Fills `root` white, writes `heading` and the legend `key` (in `font`) above the
    /// panels, and returns the panels, row by row.
    fn draw<DB: DrawingBackend>(
        self,
        root: &DrawingArea<DB, Shift>,
        heading: &str,
        key: &[(String, Swatch)],
        font: u32,
    ) -> Result<Vec<DrawingArea<DB, Shift>>, Box<dyn std::error::Error>>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(44);
        title.titled(heading, ("sans-serif", 17))?;
        let (key_area, body) = body.split_vertically(42);
        legend(&key_area, key, font, true)?;
        Ok(body.split_evenly((self.rows, self.cols)))
    }
}

/// The heading of a plot of `shown` of `all` servers: `every` when it shows them all,
/// else "`before` {shown} of {all} servers `after`".
fn servers_heading(
    (shown, all): (usize, usize),
    (before, after): (&str, &str),
    every: &str,
) -> String {
    if shown < all {
        format!("{before} {shown} of {all} servers {after}")
    } else {
        every.to_string()
    }
}

/// The fault windows of `scenario` up to `t_end` ([`fault_windows`]), with their swatch
/// added to `key` when there are any.
fn fault_key(
    scenario: &Scenario,
    t_end: f64,
    key: &mut Vec<(String, Swatch)>,
) -> Vec<(f64, f64, String)> {
    let faults = fault_windows(scenario, t_end);
    if !faults.is_empty() {
        key.push(("fault window".into(), Swatch::Shade(FAULT)));
    }
    faults
}

/// Small multiples, one panel per strategy: requests at each server (waiting + in service)
/// over time in replication 0, one line per server coloured by server group, with the end
/// of the warm-up marked and labelled. Each panel has its own y axis
/// ([`queue_panel_tops`]); the legend (server groups) sits above the panels.
pub fn queue_over_time(
    path: &Path,
    scenario: &Scenario,
    traces: &[(String, crate::sim::Trace)],
    format: ImageFormat,
) -> Result<(), ReportError> {
    let servers = scenario.servers();
    let grid = Grid::of(traces.len());
    let t_end = scenario.end();
    let tops = queue_panel_tops(traces);
    let mut key: Vec<(String, Swatch)> = scenario
        .groups
        .iter()
        .enumerate()
        .map(|(g, group)| {
            (
                format!(
                    "group {} ({} server{})",
                    group.name,
                    group.count,
                    if group.count == 1 { "" } else { "s" }
                ),
                Swatch::Line(colour(g)),
            )
        })
        .collect();
    if scenario.warmup > 0.0 {
        key.push((
            "end of warm-up (not measured before)".into(),
            Swatch::Dashed,
        ));
    }
    let faults = fault_key(scenario, t_end, &mut key);
    render!(path, format, (SIZE.0, grid.height()), |root| {
        let shown = traces
            .first()
            .map_or(servers.len(), |(_, t)| t.servers.len());
        let heading = servers_heading(
            (shown, servers.len()),
            (
                "Requests at",
                "(a sample of each group) over time, replication 0; each panel has its own y axis",
            ),
            "Requests at each server (waiting + in service) over time, replication 0; each panel has its own y axis",
        );
        let panels = grid.draw(&root, &heading, &key, 13)?;
        for (((label, trace), panel), &y_max) in traces.iter().zip(panels.iter()).zip(&tops) {
            let mut chart = time_panel(
                panel,
                label,
                (t_end, y_max),
                ("requests", 50),
                &faults,
                scenario.warmup,
            )?;
            for (k, &i) in trace.servers.iter().enumerate() {
                let info = &servers[i];
                let pts = trace.samples.iter().map(|s| {
                    (
                        s.time.as_secs_f64(),
                        f64::from(s.queued[k] + s.in_service[k]),
                    )
                });
                chart.draw_series(LineSeries::new(
                    pts,
                    colour(info.group).mix(0.75).stroke_width(1),
                ))?;
            }
        }
        root.present()?;
        Ok(())
    })
}

/// Draws the fault windows and the end of the warm-up on a time chart whose y axis tops at
/// `y_max`, under the lines drawn next: one translucent box per fault, labelled with the
/// fault at its top left (below the warm-up's label; overlapping faults' labels stack),
/// and a dashed guide at the end of the warm-up, if any.
/// One strategy's panel of a plot over time (`queue_over_time`, `rates_over_time`): its
/// caption, a time axis from 0 to `t_end`, a y axis from 0 to `y_max` described by
/// `y_desc` (`y_area` pixels of labels), and the fault windows shaded.
fn time_panel<'a, DB: DrawingBackend>(
    panel: &'a DrawingArea<DB, Shift>,
    label: &str,
    (t_end, y_max): (f64, f64),
    (y_desc, y_area): (&str, u32),
    faults: &[(f64, f64, String)],
    warmup: f64,
) -> Result<
    ChartContext<
        'a,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    Box<dyn std::error::Error>,
>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(panel)
        .caption(label, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(35)
        .y_label_area_size(y_area)
        .build_cartesian_2d(0.0..t_end, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc(y_desc)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .y_labels(6)
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    shade_faults(&mut chart, faults, warmup, y_max)?;
    Ok(chart)
}

fn shade_faults<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    faults: &[(f64, f64, String)],
    warmup: f64,
    y_max: f64,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart.draw_series(faults.iter().map(|(a, b, _)| {
        Rectangle::new([(*a, 0.0), (*b, y_max)], FAULT.mix(FAULT_ALPHA).filled())
    }))?;
    let style = TextStyle::from(("sans-serif", 11).into_font())
        .pos(Pos::new(HPos::Left, VPos::Top))
        .color(&FAULT);
    chart.draw_series(faults.iter().enumerate().map(|(k, (a, _, text))| {
        EmptyElement::at((*a, y_max))
            + Text::new(text.clone(), (3, 14 + 12 * (k as i32 % 4)), style.clone())
    }))?;
    if warmup > 0.0 {
        chart.draw_series(DashedLineSeries::new(
            [(warmup, 0.0), (warmup, y_max)],
            4,
            4,
            GUIDE.stroke_width(1),
        ))?;
        let style = TextStyle::from(("sans-serif", 11).into_font())
            .pos(Pos::new(HPos::Left, VPos::Top))
            .color(&GUIDE);
        chart.draw_series(std::iter::once(
            EmptyElement::at((warmup, y_max)) + Text::new("warm-up", (4, 2), style),
        ))?;
    }
    Ok(())
}

/// Picks one count of an interval's [`crate::sim::Counts`].
pub type CountOf = fn(&crate::sim::Counts) -> u64;

/// The series of [`rates_over_time`], as (legend, count drawn per second).
pub const RATE_SERIES: [(&str, CountOf); 3] = [
    ("attempts/s (retries, hedges incl.)", |c| c.attempts),
    ("arrivals/s (offered load)", |c| c.arrived),
    ("goodput (served/s)", |c| c.ok),
];

/// Points of series `pick` of a trace: (middle of each interval up to `t_end`, per second).
pub fn rate_points(trace: &crate::sim::Trace, pick: CountOf, t_end: f64) -> Vec<(f64, f64)> {
    let dt = trace.every.as_secs_f64();
    trace
        .counts
        .iter()
        .enumerate()
        .map(|(k, c)| ((k as f64 + 0.5) * dt, pick(c) as f64 / dt))
        .filter(|(t, _)| *t <= t_end)
        .collect()
}

/// Small multiples, one panel per strategy: offered load including retries and hedges,
/// offered load and goodput (requests per second, per sample interval) over time in
/// replication 0, with fault windows shaded and the end of the warm-up marked as in
/// [`queue_over_time`]. Every panel shares one y axis, so that panels compare.
pub fn rates_over_time(
    path: &Path,
    scenario: &Scenario,
    traces: &[(String, crate::sim::Trace)],
    format: ImageFormat,
) -> Result<(), ReportError> {
    let grid = Grid::of(traces.len());
    let t_end = scenario.end();
    let points: Vec<Vec<Vec<(f64, f64)>>> = traces
        .iter()
        .map(|(_, t)| {
            RATE_SERIES
                .iter()
                .map(|(_, pick)| rate_points(t, *pick, t_end))
                .collect()
        })
        .collect();
    let y_max = points
        .iter()
        .flatten()
        .flatten()
        .map(|p| p.1)
        .fold(1.0_f64, f64::max)
        * 1.05;
    let mut key: Vec<(String, Swatch)> = RATE_SERIES
        .iter()
        .enumerate()
        .map(|(i, (label, _))| (label.to_string(), Swatch::Series(i)))
        .collect();
    let faults = fault_key(scenario, t_end, &mut key);
    render!(path, format, (SIZE.0, grid.height()), |root| {
        let panels = grid.draw(
            &root,
            "Offered load and goodput over time, replication 0 (requests/s per sample interval)",
            &key,
            12,
        )?;
        for (((label, _), panel), series) in traces.iter().zip(panels.iter()).zip(&points) {
            let mut chart = time_panel(
                panel,
                label,
                (t_end, y_max),
                ("requests/s", 55),
                &faults,
                scenario.warmup,
            )?;
            for (i, pts) in series.iter().enumerate() {
                draw_series(&mut chart, i, pts, (pts.len() / 10).max(1))?;
            }
        }
        root.present()?;
        Ok(())
    })
}

/// An axis tick without trailing zeros (`10`, `2.5`, `0.01`).
pub fn tick(v: f64) -> String {
    let s = super::sig(v);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Whether `v` is 1, 2 or 5 times a power of ten (up to rounding).
fn is_1_2_5(v: f64) -> bool {
    if !(v.is_finite() && v > 0.0) {
        return false;
    }
    let m = v / 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|&t| (m - t).abs() < 1e-6 * t)
}

/// A probability tick as a percentage (`1%`, `0.01%`).
fn percent_tick(p: f64) -> String {
    format!("{}%", tick(p * 100.0))
}

/// Points `(latency in seconds, P(latency > x))` of the complementary CDF of `h` (ns),
/// log-spaced in the tail probability down to about ten requests in the histogram.
pub fn ccdf_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let n = h.len();
    if n == 0 {
        return Vec::new();
    }
    // Stop where ~10 requests remain: beyond that the curve is a handful of samples.
    let floor = (10.0 / n as f64).max(1e-6);
    let steps = 120;
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(steps + 1);
    for j in 0..=steps {
        // Tail probability from 0.9 down to `floor`, evenly on a log scale.
        let p = 0.9 * (floor / 0.9f64).powf(j as f64 / steps as f64);
        let x = h.value_at_quantile(1.0 - p) as f64 * 1e-9;
        if x > 0.0 && out.last().is_none_or(|&(lx, lp)| x > lx || p < lp) {
            out.push((x, p));
        }
    }
    out
}

/// The axes of log-log complementary CDFs through `points` (x > 0, P(X > x)), as
/// [`ccdf_points`] gives them: x from a little below the smallest to a little above the
/// largest, P from half the smallest to 1; fixed axes when there is no point.
fn ccdf_axes<'a>(points: impl Iterator<Item = &'a (f64, f64)>) -> (Range<f64>, Range<f64>) {
    let (mut x_lo, mut x_hi, mut p_lo) = (f64::INFINITY, 0.0f64, 1.0f64);
    for &(x, p) in points {
        x_lo = x_lo.min(x);
        x_hi = x_hi.max(x);
        p_lo = p_lo.min(p);
    }
    if !x_lo.is_finite() || x_lo <= 0.0 {
        (x_lo, x_hi, p_lo) = (0.1, 1.0, 0.01);
    }
    ((x_lo * 0.8)..(x_hi * 1.25), (p_lo * 0.5)..1.0)
}

/// A chart on log-log axes, as [`ccdf_chart`] builds it.
type CcdfChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<LogCoord<f64>, LogCoord<f64>>>;

/// A log-log chart of complementary CDFs on `area`, titled `caption` (in its font size),
/// over `ranges` ([`ccdf_axes`]), its axes described by `descs` (x, y), with its mesh
/// drawn: percent ticks on the y axis, no minor grid lines.
fn ccdf_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    (caption, size): (&str, u32),
    (x_range, y_range): (&Range<f64>, &Range<f64>),
    (x_desc, y_desc): (&str, &str),
) -> Result<CcdfChart<'a, DB>, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", size))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range.clone().log_scale(), y_range.clone().log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| percent_tick(*v))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    Ok(chart)
}

/// Draws the complementary CDF of response time per strategy on log-log axes, with p99
/// and p99.9 guide lines; the legend beside the chart.
pub fn latency_ccdf(
    path: &Path,
    results: &RunResults,
    format: ImageFormat,
) -> Result<(), ReportError> {
    let raw: Vec<(String, Vec<(f64, f64)>)> = results
        .strategies
        .iter()
        .map(|s| (s.label.clone(), ccdf_points(s.latency())))
        .collect();
    let top = raw
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(0.0f64, f64::max);
    let (scale, unit) = time_axis(top);
    let series: Vec<(String, Vec<(f64, f64)>)> = raw
        .into_iter()
        .map(|(l, pts)| (l, pts.into_iter().map(|(x, p)| (x * scale, p)).collect()))
        .collect();
    let (x_range, y_range) = ccdf_axes(series.iter().flat_map(|s| s.1.iter()));
    let entries: Vec<(String, Swatch)> = series
        .iter()
        .enumerate()
        .map(|(i, s)| (s.0.clone(), Swatch::Series(i)))
        .collect();
    let key_w = legend_width(entries.iter().map(|e| e.0.as_str()), 15);
    render!(path, format, (SIZE.0 + key_w, SIZE.1), |root| {
        root.fill(&WHITE)?;
        let (plot, key) = root.split_horizontally(SIZE.0);
        let mut chart = ccdf_chart(
            &plot,
            (
                "Response time tail: P(latency > x), all replications merged",
                22,
            ),
            (&x_range, &y_range),
            (
                &format!("response time ({unit}, log scale)"),
                "fraction of requests slower (log scale)",
            ),
        )?;
        for (p, name) in [(0.01, "p99"), (0.001, "p99.9")] {
            if p > y_range.start {
                chart.draw_series(DashedLineSeries::new(
                    [(x_range.start, p), (x_range.end, p)],
                    4,
                    4,
                    GUIDE.stroke_width(1),
                ))?;
                chart.draw_series(std::iter::once(Text::new(
                    name,
                    (x_range.start * 1.05, p * 1.15),
                    ("sans-serif", 14).into_font().color(&GUIDE),
                )))?;
            }
        }
        for (i, (_, pts)) in series.iter().enumerate() {
            draw_series(&mut chart, i, pts, 12)?;
        }
        legend(&key.margin(60, 0, 0, 0), &entries, 15, false)?;
        root.present()?;
        Ok(())
    })
}

/// Server labels of [`server_bars`]: every `step`-th server is labelled so that labels
/// (about 0.6 em a character at `font` px) fit in `slot` pixels per server.
pub fn server_label_step(names: &[&str], slot: f64, font: u32) -> usize {
    let widest = names.iter().map(|n| text_width(n, font)).max().unwrap_or(0) as f64 + 8.0;
    ((widest / slot.max(1.0)).ceil() as usize).max(1)
}

/// Grouped bars: per server (x), one bar per strategy, for the share of requests (top)
/// and the utilisation (bottom), with 95% CI whiskers (capped, so that narrow intervals
/// still show). The figure widens with the servers (up to 4000 px; past that only every
/// k-th server is labelled), and the legend sits beside the charts.
pub fn server_bars(
    path: &Path,
    scenario: &Scenario,
    results: &RunResults,
    format: ImageFormat,
) -> Result<(), ReportError> {
    let all = scenario.servers();
    // A large cluster shows a sample of each group, as the time series does.
    let groups: Vec<usize> = all.iter().map(|s| s.group).collect();
    let shown = if all.len() <= super::timeseries::MAX_SERVERS {
        (0..all.len()).collect()
    } else {
        super::timeseries::sample_servers(&groups, super::timeseries::MAX_SERVERS)
    };
    let servers: Vec<_> = shown.iter().map(|&i| all[i].clone()).collect();
    let n_servers = servers.len();
    let n_strat = results.strategies.len();
    // [panel][strategy][server] = (mean, low, high)
    let panels: Vec<Vec<Vec<(f64, f64, f64)>>> = [1usize, 2]
        .iter()
        .map(|&k| {
            results
                .strategies
                .iter()
                .map(|s| {
                    (0..n_servers)
                        .map(|i| {
                            let v: Vec<f64> = s
                                .runs
                                .iter()
                                .map(|r| r.servers[shown[i]].as_array()[k])
                                .collect();
                            let e = estimate(&v);
                            (e.mean, e.low, e.high)
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let titles = [
        "share of requests (%)",
        "utilisation (% of worker time busy)",
    ];
    const FONT: u32 = 14;
    let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    let entries: Vec<(String, Swatch)> = results
        .strategies
        .iter()
        .enumerate()
        .map(|(i, s)| (s.label.clone(), Swatch::Bar(colour(i))))
        .collect();
    let key_w = legend_width(entries.iter().map(|e| e.0.as_str()), FONT);
    // Room per server for its label and for bars at least 8 px wide.
    let widest = names.iter().map(|n| text_width(n, FONT)).max().unwrap_or(0) + 12;
    let slot = widest.max(10 * n_strat as u32 + 12);
    let plot_w = (90 + slot * n_servers as u32).clamp(SIZE.0, 4000);
    let step = server_label_step(&names, (plot_w - 90) as f64 / n_servers.max(1) as f64, FONT);
    let height = 420 * 2 + 60;
    render!(path, format, (plot_w + key_w, height), |root| {
        root.fill(&WHITE)?;
        let heading = servers_heading(
            (n_servers, all.len()),
            (
                "Per-server load,",
                "(a sample of each group; all in servers.csv)",
            ),
            "Per-server load by strategy (mean over replications, whiskers: 95% CI)",
        );
        let root = root.titled(&heading, ("sans-serif", 22))?;
        let (plots, key) = root.split_horizontally(plot_w);
        let areas = plots.split_evenly((2, 1));
        for (pi, (area, panel)) in areas.iter().zip(&panels).enumerate() {
            let top = panel
                .iter()
                .flatten()
                .map(|v| if v.2.is_finite() { v.2 } else { v.0 })
                .fold(0.0f64, f64::max)
                * 100.0;
            let y_max = (top * 1.1).max(1.0);
            let mut chart = ChartBuilder::on(area)
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(0f64..n_servers as f64, 0f64..y_max)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n_servers.max(1) * 2 + 1)
                .x_label_formatter(&|x| {
                    let i = x.floor() as usize;
                    if (x - x.floor() - 0.5).abs() < 1e-6 && i < n_servers && i.is_multiple_of(step)
                    {
                        servers[i].name.clone()
                    } else {
                        String::new()
                    }
                })
                .light_line_style(WHITE.mix(0.0))
                .y_label_formatter(&|v| tick(*v))
                .x_desc("server")
                .y_desc(titles[pi])
                .label_style(("sans-serif", FONT))
                .axis_desc_style(("sans-serif", 17))
                .draw()?;
            // A faint line between server groups.
            for i in 1..n_servers {
                if servers[i].group != servers[i - 1].group {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(i as f64, 0.0), (i as f64, y_max)],
                        GUIDE.mix(0.6).stroke_width(1),
                    )))?;
                }
            }
            let width = 0.8 / n_strat.max(1) as f64;
            for (si, per_server) in panel.iter().enumerate() {
                let fill = colour(si).mix(0.85).filled();
                let x0 = |i: usize| i as f64 + 0.1 + si as f64 * width;
                chart.draw_series(per_server.iter().enumerate().map(|(i, v)| {
                    Rectangle::new([(x0(i), 0.0), (x0(i) + width * 0.92, v.0 * 100.0)], fill)
                }))?;
                let whisker = BLACK.stroke_width(1);
                for (i, v) in per_server
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.1.is_finite())
                {
                    let xm = x0(i) + width * 0.46;
                    let cap = width * 0.3;
                    let (lo, hi) = (v.1 * 100.0, v.2 * 100.0);
                    chart.draw_series([
                        PathElement::new(vec![(xm, lo), (xm, hi)], whisker),
                        PathElement::new(vec![(xm - cap, lo), (xm + cap, lo)], whisker),
                        PathElement::new(vec![(xm - cap, hi), (xm + cap, hi)], whisker),
                    ])?;
                }
            }
        }
        legend(&key.margin(40, 0, 0, 0), &entries, FONT, false)?;
        root.present()?;
        Ok(())
    })
}

/// A metric against the swept parameter, one line per strategy with its 95% CI band. A 2-D
/// sweep draws small multiples: one such panel per value of the second parameter, on shared
/// axes so that panels compare at a glance.
pub fn sweep_plot(
    path: &Path,
    sweep: &SweepResults,
    metric: Metric,
    format: ImageFormat,
) -> Result<(), ReportError> {
    let k = metric;
    let def = metric.def();
    let top = sweep
        .points
        .iter()
        .flat_map(|p| p.results.strategies.iter().map(|s| s.estimate(k).high))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let (scale, unit) = if def.unit == "s" {
        time_axis(top)
    } else {
        (1.0, def.unit)
    };
    let labels: Vec<String> = sweep
        .points
        .first()
        .map(|p| {
            p.results
                .strategies
                .iter()
                .map(|s| s.label.clone())
                .collect()
        })
        .unwrap_or_default();
    // [panel] = (caption, [strategy] = [(x, mean, low, high)])
    type Series = Vec<(f64, f64, f64, f64)>;
    let panels: Vec<(Option<String>, Vec<Series>)> = sweep
        .panels()
        .into_iter()
        .map(|(y, points)| {
            let caption = y
                .zip(sweep.by.as_ref())
                .map(|(y, b)| format!("{} = {}", b.parameter, tick(y)));
            let series = (0..labels.len())
                .map(|s| {
                    points
                        .iter()
                        .filter_map(|p| p.results.strategies.get(s).map(|r| (p.x, r.estimate(k))))
                        .map(|(x, e)| {
                            let (lo, hi) = if e.low.is_finite() {
                                (e.low, e.high)
                            } else {
                                (e.mean, e.mean)
                            };
                            (x, e.mean * scale, lo * scale, hi * scale)
                        })
                        .filter(|v| v.1.is_finite())
                        .collect()
                })
                .collect();
            (caption, series)
        })
        .collect();
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) =
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, 0.0f64);
    for v in panels.iter().flat_map(|p| p.1.iter().flatten()) {
        x_lo = x_lo.min(v.0);
        x_hi = x_hi.max(v.0);
        y_lo = y_lo.min(v.2.max(v.1 * 0.5));
        y_hi = y_hi.max(v.3);
    }
    if !x_lo.is_finite() || y_hi <= 0.0 {
        (x_lo, x_hi, y_lo, y_hi) = (0.0, 1.0, 0.1, 1.0);
    }
    let pad = ((x_hi - x_lo) * 0.04).max(1e-9);
    let x_range = (x_lo - pad)..(x_hi + pad);
    let y_range = (y_lo.max(1e-9) * 0.8)..(y_hi * 1.3);
    let x_desc = sweep.axis_label();
    let title = format!(
        "{} vs {}{} (bands: 95% CI)",
        def.doc,
        sweep.parameter,
        sweep.by.as_ref().map_or(String::new(), |b| format!(
            ", one panel per value of {}",
            b.parameter
        ))
    );
    let n = panels.len().max(1);
    let cols = if n <= 3 {
        n
    } else {
        n.isqrt() + usize::from(n.isqrt().pow(2) < n)
    };
    let rows = n.div_ceil(cols);
    let size = if sweep.by.is_none() {
        SIZE
    } else {
        ((480 * cols as u32).max(SIZE.0), 50 + 430 * rows as u32)
    };
    let entries: Vec<(String, Swatch)> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), Swatch::Series(i)))
        .collect();
    let key_w = legend_width(labels.iter().map(String::as_str), 15);
    render!(path, format, (size.0 + key_w, size.1), |root| {
        root.fill(&WHITE)?;
        let (plots, key) = root.split_horizontally(size.0);
        let areas = if sweep.by.is_none() {
            vec![plots.clone()]
        } else {
            plots
                .titled(&title, ("sans-serif", 22))?
                .split_evenly((rows, cols))
        };
        for ((caption, series), area) in panels.iter().zip(&areas) {
            let (caption, size) = match caption {
                Some(c) => (c.as_str(), 18),
                None => (title.as_str(), 22),
            };
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", size))
                .margin(15)
                .x_label_area_size(50)
                .y_label_area_size(80)
                .build_cartesian_2d(x_range.clone(), y_range.clone().log_scale())?;
            // Small panels: fewer x ticks, and y labels only at 1, 2 and 5 of each decade (the
            // grid keeps every line), so labels stay apart.
            let small = sweep.by.is_some();
            chart
                .configure_mesh()
                .x_labels(if small { 6 } else { 10 })
                .x_desc(x_desc.as_str())
                .y_desc(format!("{} ({unit}, log scale)", def.name))
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| {
                    if (small || y_range.end / y_range.start > 20.0) && !is_1_2_5(*v) {
                        String::new()
                    } else {
                        tick(*v)
                    }
                })
                .label_style(("sans-serif", 15))
                .axis_desc_style(("sans-serif", 17))
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            for (i, pts) in series.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
                let mut band: Vec<(f64, f64)> = pts.iter().map(|v| (v.0, v.3)).collect();
                band.extend(pts.iter().rev().map(|v| (v.0, v.2)));
                chart.draw_series(std::iter::once(Polygon::new(band, colour(i).mix(0.15))))?;
            }
            for (i, pts) in series.iter().enumerate() {
                let line: Vec<(f64, f64)> = pts.iter().map(|v| (v.0, v.1)).collect();
                draw_series(&mut chart, i, &line, 1)?;
            }
        }
        // One legend beside every panel: they have the same strategies.
        legend(&key.margin(60, 0, 0, 0), &entries, 15, false)?;
        root.present()?;
        Ok(())
    })
}

/// The live verdict's plot: per replayed strategy, one panel with the simulated (replayed
/// replication) and live response-time tails, P(latency > x) on log axes, drawn like
/// [`latency_ccdf`]. `curves` holds `(label, simulated, live)` histograms in ns of
/// scenario time.
pub fn live_latency_ccdf(
    path: &Path,
    format: ImageFormat,
    title: &str,
    curves: &[(&str, &Histogram<u64>, &Histogram<u64>)],
) -> Result<(), ReportError> {
    let panels = curves.len().max(1);
    let series: Vec<[Vec<(f64, f64)>; 2]> = curves
        .iter()
        .map(|(_, sim, live)| [ccdf_points(sim), ccdf_points(live)])
        .collect();
    let top = series
        .iter()
        .flatten()
        .flat_map(|pts| pts.iter().map(|p| p.0))
        .fold(0.0f64, f64::max);
    let (scale, unit) = time_axis(top);
    let entries = vec![
        (
            "simulated (replayed replication)".to_string(),
            Swatch::Series(0),
        ),
        ("live".to_string(), Swatch::Series(1)),
    ];
    let key_w = legend_width(entries.iter().map(|e| e.0.as_str()), 15);
    let panel_h = SIZE.1 * 3 / 4;
    let size = (SIZE.0 + key_w, panel_h * u32::try_from(panels).unwrap_or(1));
    render!(path, format, size, |root| {
        root.fill(&WHITE)?;
        let (plots, key) = root.split_horizontally(SIZE.0);
        for (area, ((label, ..), pts)) in plots
            .split_evenly((panels, 1))
            .iter()
            .zip(curves.iter().zip(&series))
        {
            let scaled: Vec<Vec<(f64, f64)>> = pts
                .iter()
                .map(|p| p.iter().map(|&(x, q)| (x * scale, q)).collect())
                .collect();
            let (x_range, y_range) = ccdf_axes(scaled.iter().flatten());
            let mut chart = ccdf_chart(
                area,
                (&format!("{title} — {label}: P(latency > x)"), 20),
                (&x_range, &y_range),
                (
                    &format!("response time ({unit} of scenario time, log scale)"),
                    "fraction slower (log scale)",
                ),
            )?;
            if 0.01 > y_range.start {
                chart.draw_series(DashedLineSeries::new(
                    [(x_range.start, 0.01), (x_range.end, 0.01)],
                    4,
                    4,
                    GUIDE.stroke_width(1),
                ))?;
            }
            for (i, pts) in scaled.iter().enumerate() {
                draw_series(&mut chart, i, pts, 12)?;
            }
        }
        legend(&key.margin(60, 0, 0, 0), &entries, 15, false)?;
        root.present()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_two_five_ticks() {
        for v in [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 100.0, 200.0, 5000.0] {
            assert!(is_1_2_5(v), "{v}");
        }
        for v in [0.3, 3.0, 700.0, 900.0, 0.0, -1.0, f64::NAN] {
            assert!(!is_1_2_5(v), "{v}");
        }
    }
}
