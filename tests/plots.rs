//! What makes the plots legible, asserted on the SVG: a legend beside the chart (never over
//! data), server labels that do not overlap with 16 servers, one y axis per queue panel, a
//! labelled warm-up, and times in the unit that suits them. Run on
//! `scenarios/extra/spike-16.toml` (16 servers, 5 strategies, a spike above capacity) and on
//! the shipped heterogeneous scenario.

use std::path::Path;
use std::process::Command;

/// A `<text>` element of a plotters SVG: position, font size and content.
#[derive(Debug)]
struct Label {
    x: f64,
    y: f64,
    size: f64,
    text: String,
}

/// Every text element (plotters writes the content on a line of its own).
fn labels(svg: &str) -> Vec<Label> {
    let lines: Vec<&str> = svg.lines().collect();
    let attr = |line: &str, name: &str| -> f64 {
        let key = format!(" {name}=\"");
        let start = line.find(&key).unwrap() + key.len();
        line[start..].split('"').next().unwrap().parse().unwrap()
    };
    lines
        .windows(2)
        .filter(|w| w[0].starts_with("<text "))
        .map(|w| Label {
            x: attr(w[0], "x"),
            y: attr(w[0], "y"),
            size: attr(w[0], "font-size"),
            text: w[1].trim().to_string(),
        })
        .collect()
}

/// Width of `l` on screen, generously (0.6 em a character).
fn width(l: &Label) -> f64 {
    l.text.chars().count() as f64 * l.size * 0.6
}

fn run(scenario: &str, out: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .args(["run", scenario, "--replications", "2", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

const STRATEGIES: [&str; 5] = [
    "round_robin",
    "smooth_wrr",
    "least_connections",
    "p2c",
    "peak_ewma",
];

#[test]
fn sixteen_servers_five_strategies_and_a_spike_stay_legible() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run("scenarios/extra/spike-16.toml", dir);

    // Servers: 16 labels per panel, none overlapping its neighbour.
    let svg = read(dir, "servers.svg");
    let all = labels(&svg);
    let names: Vec<&Label> = all
        .iter()
        .filter(|l| {
            ["fast-", "medium-", "slow-"]
                .iter()
                .any(|p| l.text.starts_with(p))
        })
        .collect();
    assert_eq!(names.len(), 2 * 16, "every server labelled in both panels");
    for panel in [names[0].y, names[names.len() - 1].y] {
        let mut row: Vec<&&Label> = names.iter().filter(|l| l.y == panel).collect();
        row.sort_by(|a, b| a.x.total_cmp(&b.x));
        assert_eq!(row.len(), 16);
        for pair in row.windows(2) {
            let gap = pair[1].x - pair[0].x;
            let needed = (width(pair[0]) + width(pair[1])) / 2.0;
            assert!(
                gap > needed,
                "`{}` and `{}` overlap: {gap} px apart, {needed} px needed",
                pair[0].text,
                pair[1].text
            );
        }
    }
    // The legend is beside the bars: right of the last server label.
    let right = names
        .iter()
        .map(|l| l.x + width(l) / 2.0)
        .fold(0.0, f64::max);
    for s in STRATEGIES {
        let l = all.iter().find(|l| l.text == s).expect(s);
        assert!(
            l.x > right,
            "legend entry {s} at x = {} inside the chart",
            l.x
        );
    }
    // CI whiskers have caps: three strokes per bar with a CI (2 panels × 16 × 5).
    assert!(svg.matches("stroke=\"#000000\" stroke-width=\"1\"").count() >= 3 * 2 * 16 * 5);

    // Latency tail: round robin's backlog reaches seconds, so the axis is in seconds, and
    // the legend lies right of the 1000 px chart.
    let svg = read(dir, "latency_ccdf.svg");
    assert!(svg.contains("response time (s, log scale)"), "unit");
    for s in STRATEGIES {
        let l = labels(&svg).into_iter().find(|l| l.text == s).expect(s);
        assert!(l.x >= 1000.0, "ccdf legend entry {s} over the chart");
    }

    // Queues: one panel per strategy, each with its own y axis and a labelled warm-up.
    let svg = read(dir, "queue_over_time.svg");
    let all = labels(&svg);
    assert_eq!(all.iter().filter(|l| l.text == "warm-up").count(), 5);
    assert!(all.iter().any(|l| l.text.starts_with("end of warm-up")));
    // The highest y tick of each panel: round robin's queues grow into thousands, the
    // adaptive strategies' stay in the hundreds, and each panel's axis shows its own.
    let captions: Vec<&Label> = STRATEGIES
        .iter()
        .map(|s| all.iter().find(|l| l.text == *s).expect(s))
        .collect();
    let top_tick = |c: &Label| -> f64 {
        // Numeric labels of the panel: below its caption, within its column.
        all.iter()
            .filter(|l| l.y > c.y && l.y < c.y + 200.0 && (l.x - c.x).abs() < 260.0)
            .filter(|l| l.x < c.x - 150.0)
            .filter_map(|l| l.text.parse::<f64>().ok())
            .fold(0.0, f64::max)
    };
    let tops: Vec<f64> = captions.iter().map(|c| top_tick(c)).collect();
    println!("top y tick per panel: {tops:?}");
    assert!(tops.iter().all(|&t| t > 0.0), "{tops:?}");
    assert!(
        tops[0] >= 1000.0,
        "round robin's axis reaches its backlog: {tops:?}"
    );
    assert!(
        tops[2] < tops[0] / 5.0,
        "least connections is not flattened by round robin's scale: {tops:?}"
    );
}

#[test]
fn millisecond_latencies_stay_in_milliseconds() {
    let tmp = tempfile::tempdir().unwrap();
    run("scenarios/mm1.toml", tmp.path());
    let svg = read(tmp.path(), "latency_ccdf.svg");
    assert!(svg.contains("response time (ms, log scale)"));
}

/// Lines of `svg` drawing a fault window's translucent shading.
fn shaded(svg: &str) -> usize {
    svg.lines()
        .filter(|l| l.starts_with("<rect") && l.contains("fill=\"#D62728\""))
        .filter(|l| l.contains("opacity=\"0.12\""))
        .count()
}

#[test]
fn queue_over_time_shades_fault_windows() {
    let tmp = tempfile::tempdir().unwrap();
    // crash: one fault, three strategies: a box per panel and one in the legend.
    let dir = tmp.path().join("crash");
    run("scenarios/crash.toml", &dir);
    let svg = read(&dir, "queue_over_time.svg");
    assert_eq!(
        shaded(&svg),
        3 + 1,
        "one shaded window per panel, one in the key"
    );
    assert!(labels(&svg).iter().any(|l| l.text == "fault window"));
    // Each panel labels its window with the fault.
    let named = labels(&svg)
        .iter()
        .filter(|l| l.text.starts_with("crash "))
        .count();
    assert_eq!(named, 3, "one fault label per panel");
    // Each panel's box spans the crash, 20 s to 35 s of a 55 s axis: 15/55 of its width.
    let widths: Vec<f64> = svg
        .lines()
        .filter(|l| l.starts_with("<rect") && l.contains("fill=\"#D62728\""))
        .map(|l| {
            let key = " width=\"";
            let start = l.find(key).unwrap() + key.len();
            l[start..]
                .split('"')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap()
        })
        .collect();
    assert!(
        widths.iter().filter(|&&w| w > 50.0).count() == 3,
        "{widths:?}"
    );
    // Without faults: no shading and no key entry.
    let dir = tmp.path().join("mm1");
    run("scenarios/mm1.toml", &dir);
    let svg = read(&dir, "queue_over_time.svg");
    assert_eq!(shaded(&svg), 0);
    assert!(!labels(&svg).iter().any(|l| l.text == "fault window"));
}
