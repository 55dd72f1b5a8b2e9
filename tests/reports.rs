//! Reports end to end: every file is written, plots parse as SVG/PNG with one series per
//! strategy, and paired comparisons are narrower than unpaired ones on a shipped scenario.

use std::path::Path;

use lbsim::metrics::Metric;
use lbsim::report::timeseries::{Timeseries, trace_spec};
use lbsim::report::{
    ImageFormat, ReportInput, compare, standard_reports, standard_reports_with, write_reports,
};
use lbsim::runner::{RunOptions, TraceSink, run};
use lbsim::scenario::Scenario;

fn heterogeneous(reps: u32) -> (Scenario, lbsim::runner::RunResults) {
    let (s, r, _) = heterogeneous_recorded(reps);
    (s, r)
}

/// [`heterogeneous`], with replication 0's time series recorded while it runs (reports
/// never simulate: the time series exists only if recorded).
fn heterogeneous_recorded(reps: u32) -> (Scenario, lbsim::runner::RunResults, Timeseries) {
    let mut s = Scenario::load(Path::new("scenarios/heterogeneous.toml")).unwrap();
    s.set_run_length(2.0, 10.0);
    let sink = TraceSink::new(trace_spec(&s, false));
    let r = run(
        &s,
        &RunOptions {
            replications: Some(reps),
            trace: Some(sink.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    (s, r, Timeseries::recorded(sink.take()))
}

fn write(format: ImageFormat) -> (tempfile::TempDir, Scenario) {
    let (s, r, timeseries) = heterogeneous_recorded(4);
    let dir = tempfile::tempdir().unwrap();
    let input = ReportInput {
        scenario: &s,
        results: &r,
        command: "lbsim run scenarios/heterogeneous.toml --seed 2026 --replications 4",
        format,
        sweep: None,
    };
    let files = write_reports(dir.path(), &input, &standard_reports_with(timeseries)).unwrap();
    assert!(files.iter().all(|f| f.exists()));
    (dir, s)
}

#[test]
fn svg_plots_have_one_series_per_strategy() {
    let (dir, s) = write(ImageFormat::Svg);
    for name in ["latency_ccdf.svg", "servers.svg"] {
        let svg = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Well-formed enough: every opened element is closed.
        let opened = svg.matches("<svg").count();
        assert_eq!(opened, svg.matches("</svg>").count());
        for e in &s.strategies {
            // plotters writes each text on a line of its own.
            let label = e.label();
            let n = svg.lines().filter(|l| l.trim() == label).count();
            assert_eq!(n, 1, "{name}: legend for {label}");
        }
    }
    let ccdf = std::fs::read_to_string(dir.path().join("latency_ccdf.svg")).unwrap();
    assert!(ccdf.matches("<polyline").count() >= s.strategies.len());
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("](latency_ccdf.svg)") && md.contains("--seed 2026"));
    assert!(md.contains("has the lowest p99 response time"));
    // No queue capacity, no faults: a line instead of two tables of zeros.
    assert!(
        md.contains("No request was rejected or failed under any strategy")
            && !md.contains("### Rejected requests")
            && !md.contains("### Failed requests"),
        "{md}"
    );
    let csv = std::fs::read_to_string(dir.path().join("comparisons.csv")).unwrap();
    let n = s.strategies.len();
    assert_eq!(
        csv.lines().count(),
        1 + lbsim::metrics::Metric::listed(false).count() * n * (n - 1) / 2
    );
}

#[test]
fn png_plots_decode() {
    let (dir, _) = write(ImageFormat::Png);
    for name in ["latency_ccdf.png", "servers.png"] {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert!(info.width >= 800 && info.height >= 600);
        // Not blank: several distinct colours.
        let distinct: std::collections::HashSet<&[u8]> = buf.chunks(3).take(200_000).collect();
        assert!(distinct.len() > 8);
    }
}

/// Issue 8: reports never simulate. Without a time series recorded during the run there
/// is no `timeseries.csv` nor queue-over-time plot (none is simulated after the fact), and
/// `report.md` links only the plots written.
#[test]
fn reports_without_a_recording_simulate_nothing() {
    let (s, r) = heterogeneous(2);
    let dir = tempfile::tempdir().unwrap();
    let input = ReportInput {
        scenario: &s,
        results: &r,
        command: "lbsim run",
        format: ImageFormat::Svg,
        sweep: None,
    };
    let files = write_reports(dir.path(), &input, &standard_reports()).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"summary.csv".to_string()), "{names:?}");
    assert!(
        !dir.path().join("timeseries.csv").exists()
            && !dir.path().join("queue_over_time.svg").exists(),
        "{names:?}"
    );
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("](latency_ccdf.svg)"), "{md}");
    assert!(!md.contains("queue_over_time"), "{md}");
}

#[test]
fn paired_ci_is_narrower_than_unpaired_on_heterogeneous() {
    let (_, r) = heterogeneous(10);
    let c = compare(&r, Metric::LatencyP99, 2, 3); // least_connections vs weighted_least_connections
    assert!(c.diff.half_width() < 0.5 * c.unpaired_half_width, "{c:?}");
}

#[test]
fn sweep_writes_csv_and_p99_plot_with_bands() {
    let mut s = Scenario::load(Path::new("scenarios/load-sweep.toml")).unwrap();
    s.set_run_length(1.0, 4.0);
    let opts = RunOptions {
        replications: Some(3),
        ..Default::default()
    };
    let r = run(&s, &opts).unwrap();
    let sweep = lbsim::sweep::run_sweep(&s, &opts).unwrap().unwrap();
    assert_eq!(sweep.points.len(), 5);
    assert!((sweep.points[2].offered_load - 0.5).abs() < 1e-9);
    let dir = tempfile::tempdir().unwrap();
    let input = ReportInput {
        scenario: &s,
        results: &r,
        command: "lbsim run scenarios/load-sweep.toml",
        format: ImageFormat::Svg,
        sweep: Some(&sweep),
    };
    write_reports(dir.path(), &input, &standard_reports()).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 5 * s.strategies.len() * lbsim::metrics::Metric::listed(false).count()
    );
    let svg = std::fs::read_to_string(dir.path().join("sweep_p99.svg")).unwrap();
    assert_eq!(
        svg.matches("<polygon opacity=\"0.15\"").count(),
        s.strategies.len(),
        "one CI band per strategy"
    );
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("## Sweep over `load`") && md.contains("](sweep_p99.svg)"));
}

#[test]
fn two_parameter_sweep_writes_every_point_and_one_panel_per_second_value() {
    let mut s = Scenario::load(Path::new("scenarios/load-by-balancers.toml")).unwrap();
    s.set_run_length(0.5, 3.0);
    let opts = RunOptions {
        replications: Some(2),
        ..Default::default()
    };
    let r = run(&s, &opts).unwrap();
    let sweep = lbsim::sweep::run_sweep(&s, &opts).unwrap().unwrap();
    let (loads, balancers) = (3, 3);
    assert_eq!(sweep.points.len(), loads * balancers);
    // The first parameter varies fastest.
    assert_eq!(sweep.points[1].x, 0.7);
    assert_eq!(sweep.points[1].by, Some(1.0));
    assert_eq!(sweep.points[3].by, Some(4.0));
    assert_eq!(s.at_sweep_point(3).balancers, 4);
    let dir = tempfile::tempdir().unwrap();
    let input = ReportInput {
        scenario: &s,
        results: &r,
        command: "lbsim run scenarios/load-by-balancers.toml",
        format: ImageFormat::Svg,
        sweep: Some(&sweep),
    };
    write_reports(dir.path(), &input, &standard_reports()).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
    let n_strat = s.strategies.len();
    assert_eq!(
        csv.lines().count(),
        1 + loads * balancers * n_strat * lbsim::metrics::Metric::listed(false).count()
    );
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("scenario,parameter,value,offered_load,strategy,")
            && header.ends_with(",parameter2,value2"),
        "{header}"
    );
    assert!(lines.all(|l| l.contains(",balancers,")));
    let svg = std::fs::read_to_string(dir.path().join("sweep_p99.svg")).unwrap();
    for b in ["1", "4", "16"] {
        let caption = format!("balancers = {b}");
        assert_eq!(
            svg.lines().filter(|l| l.trim() == caption).count(),
            1,
            "one panel captioned {caption}"
        );
    }
    assert_eq!(
        svg.lines()
            .filter(|l| l.trim().starts_with("balancers = "))
            .count(),
        balancers
    );
    assert_eq!(
        svg.matches("<polygon opacity=\"0.15\"").count(),
        balancers * n_strat,
        "one CI band per strategy and panel"
    );
    // One legend for all panels.
    for e in &s.strategies {
        assert_eq!(svg.lines().filter(|l| l.trim() == e.label()).count(), 1);
    }
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("## Sweep over `load` by `balancers`"), "{md}");
    assert!(md.contains("| balancers | load | offered load |"), "{md}");
    assert!(md.contains("| 16 | 0.9 | 90% |"), "{md}");
}

#[test]
fn one_parameter_sweep_csv_leaves_the_second_pair_empty() {
    let mut s = Scenario::load(Path::new("scenarios/load-sweep.toml")).unwrap();
    s.set_run_length(0.5, 2.0);
    s.sweep.as_mut().unwrap().first.values.truncate(2);
    let opts = RunOptions {
        replications: Some(2),
        ..Default::default()
    };
    let r = run(&s, &opts).unwrap();
    let sweep = lbsim::sweep::run_sweep(&s, &opts).unwrap().unwrap();
    assert!(sweep.by.is_none() && sweep.points.iter().all(|p| p.by.is_none()));
    let dir = tempfile::tempdir().unwrap();
    let input = ReportInput {
        scenario: &s,
        results: &r,
        command: "lbsim run scenarios/load-sweep.toml",
        format: ImageFormat::Svg,
        sweep: Some(&sweep),
    };
    write_reports(dir.path(), &input, &standard_reports()).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
    assert!(csv.lines().skip(1).all(|l| l.ends_with(",,")), "{csv}");
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("| load | offered load |") && !md.contains(" by `"));
}

#[test]
fn timeseries_samples_every_server_and_agrees_with_the_balancer_view() {
    let (dir, s) = write(ImageFormat::Svg);
    let csv = std::fs::read_to_string(dir.path().join("timeseries.csv")).unwrap();
    let servers = s.servers().len();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    // One row per strategy × sample × server; samples cover the run at SAMPLES points.
    let samples = rows.len() / (servers * s.strategies.len());
    assert_eq!(rows.len(), samples * servers * s.strategies.len());
    assert!(
        (lbsim::report::timeseries::SAMPLES as usize
            ..=lbsim::report::timeseries::SAMPLES as usize + 1)
            .contains(&samples)
    );
    let workers = s.groups[0].workers;
    let mut busy_seen = false;
    for r in &rows {
        let (queued, in_service, in_flight): (u32, u32, u32) = (
            r[5].parse().unwrap(),
            r[6].parse().unwrap(),
            r[7].parse().unwrap(),
        );
        // One request-level balancer sees exactly what the server holds.
        assert_eq!(in_flight, queued + in_service, "{r:?}");
        assert!(in_service <= workers);
        busy_seen |= in_service > 0;
    }
    assert!(busy_seen);
    let svg = std::fs::read_to_string(dir.path().join("queue_over_time.svg")).unwrap();
    for e in &s.strategies {
        assert_eq!(
            svg.lines().filter(|l| l.trim() == e.label()).count(),
            1,
            "panel for {}",
            e.label()
        );
    }
}

#[test]
fn replications_csv_has_every_replication_strategy_and_metric() {
    let (dir, s) = write(ImageFormat::Svg);
    let mut reader = csv::Reader::from_path(dir.path().join("replications.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        [
            "scenario",
            "strategy",
            "replication",
            "metric",
            "unit",
            "value"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(
        rows.len(),
        s.strategies.len() * 4 * lbsim::metrics::Metric::listed(false).count()
    );
    // Means in summary.csv are the means of these rows.
    let first = s.strategies[0].label();
    let values: Vec<f64> = rows
        .iter()
        .filter(|r| &r[1] == first.as_str() && &r[3] == "latency_mean")
        .map(|r| r[5].parse().unwrap())
        .collect();
    assert_eq!(values.len(), 4);
    let summary = std::fs::read_to_string(dir.path().join("summary.csv")).unwrap();
    let line = summary
        .lines()
        .find(|l| l.contains(&format!(",{first},latency_mean,")))
        .unwrap();
    let mean: f64 = line.split(',').nth(4).unwrap().parse().unwrap();
    assert!((mean - values.iter().sum::<f64>() / 4.0).abs() < 1e-12);
}

/// `servers.csv` (issue 9): every figure with its 95% interval, including each server's
/// mean response time and pooled p99, and intervals that hold their figure.
#[test]
fn servers_csv_gives_every_column_an_interval() {
    let (dir, s) = write(ImageFormat::Svg);
    let mut reader = csv::Reader::from_path(dir.path().join("servers.csv")).unwrap();
    let headers: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let figures = [
        "requests",
        "share",
        "utilization",
        "queue_mean",
        "queue_max",
        "latency_mean",
        "latency_p99",
    ];
    for f in figures {
        for column in [
            f.to_string(),
            format!("{f}_ci95_low"),
            format!("{f}_ci95_high"),
        ] {
            assert!(headers.contains(&column), "{column} missing: {headers:?}");
        }
    }
    let at = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), s.strategies.len() * s.servers().len());
    for row in &rows {
        for f in figures {
            let [v, low, high] = [
                f.to_string(),
                format!("{f}_ci95_low"),
                format!("{f}_ci95_high"),
            ]
            .map(|c| row[at(&c)].parse::<f64>().unwrap());
            assert!(
                low <= v && v <= high,
                "{f}: {v} not in [{low}, {high}] in {row:?}"
            );
        }
        assert_eq!(&row[at("replications")], "4");
    }
}
