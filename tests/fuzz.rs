//! Mutation fuzzing of scenario files (issue 10): mutants of the shipped scenarios are fed
//! to `lbsim validate` and, when valid, to `lbsim run`. Whatever the input, the binary must
//! exit 0 or 2, never panic, and finish within a time proportional to the work it
//! estimated (`--max-events` keeps that small here).
//!
//! CI runs it for a bounded time with a pinned seed (`PROPTEST_RNG_SEED`, as the property
//! tests). To search longer: `LBSIM_FUZZ_SECS=900 LBSIM_FUZZ_SEED=7 cargo test --release
//! --test fuzz -- --nocapture`; failing mutants are saved in `target/fuzz-failures/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use toml::{Table, Value};

/// Events `lbsim run` may simulate per mutant: runs stay well under a second.
const MAX_EVENTS: f64 = 3e6;
/// Wall-clock allowance: a fixed part (start-up, reports, plots) plus one per event at a
/// tenth of the engine's speed, so a slow shared machine does not fail the test.
const FIXED: Duration = Duration::from_secs(20);
const EVENTS_PER_SEC: f64 = 1e6;

fn shipped() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Numbers that have broken simulators: zeros, signs, extremes, non-finite values.
const NUMBERS: &[f64] = &[
    0.0,
    -1.0,
    1e-300,
    1e-155,
    1e-12,
    1e-9,
    1e-6,
    1e-3,
    0.5,
    1.0,
    2.0,
    1e6,
    1e9,
    1e12,
    1e300,
    f64::MAX,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
];
const INTEGERS: &[i64] = &[
    0,
    1,
    2,
    3,
    -1,
    1000,
    65537,
    1 << 20,
    4_294_967_295,
    1 << 32,
    i64::MAX,
    1_000_000_000,
];
const TEXT_NUMBERS: &[&str] = &[
    "18446744073709551615",
    "18446744073709551557",
    "4294967296",
    "1e309",
    "-0",
    "nan",
    "inf",
    "1e-320",
];
const STRINGS: &[&str] = &[
    "",
    " ",
    ".",
    "..",
    "../x",
    "a/b",
    "/dev/zero",
    "x\u{0}y",
    "é",
    "round_robin",
    "jsq",
    "maglev",
    "poisson",
    "piecewise",
    "mmpp",
    "on_off",
    "trace",
    "gamma",
    "mixture",
    "crash",
    "slow",
    "cold",
    "join",
    "leave",
    "deploy",
    "delay",
    "unreachable",
];
const KEYS: &[&str] = &[
    "d",
    "weighted",
    "label",
    "rate",
    "count",
    "workers",
    "lifetime",
    "load_report_interval",
    "queue_capacity",
    "table_size",
    "choice_count",
    "mean_sojourn",
    "points",
    "interpolation",
    "cv",
    "warmup",
    "drain_timeout",
    "restart",
    "delay",
    "connect_timeout",
    "slow_start_window",
    "aggression",
    "min_weight_percent",
    "enforcing_success_rate",
    "success_rate_stdev_factor",
    "consecutive_failures",
    "max_requests",
    "max_pending_requests",
    "max_retries",
    "queue_timeout",
    "codel",
    "adaptive_lifo",
    "after",
    "percentile",
    "refresh",
    "bogus",
];

/// Extra sections a mutant may gain, each hostile in its own way.
const SNIPPETS: &[&str] = &[
    "[connections]\nclients = 4000000000\npool_size = 4000000000\n",
    "[connections]\nclients = 10\npool_size = 2\nlifetime = 1e-9\n",
    "[connections]\nclients = 10\nlifetime = 1e-300\n",
    "[[faults]]\nserver = \"fast-0\"\nkind = \"crash\"\nat = 1e300\n",
    "[[faults]]\nserver = \"slow\"\nkind = \"slow\"\nat = 1\nfactor = 1e300\n",
    "[keys]\ndist = \"zipf\"\ncount = 18446744073709551615\nexponent = 1e300\n",
    "[keys]\ndist = \"uniform\"\ncount = 0\n",
    "[sweep]\nload = [0.1, 0.5, 0.9]\n[sweep.by]\nbalancers = [1, 100000, 4000000000]\n",
    "[sweep]\nparameter = \"d\"\nvalues = [1e300, -1, 0.5]\n",
    "[sweep]\nparameter = \"table_size\"\nvalues = [18446744073709551557]\n",
    "[sweep]\nload_report_interval = [1e-300]\n",
    "[[strategies]]\nkind = \"jsq\"\nd = 3\n",
    "[[strategies]]\nkind = \"round_robin\"\nlabel = \"\"\n",
    "[[strategies]]\nkind = \"maglev\"\ntable_size = 18446744073709551557\n",
    "[[strategies]]\nkind = \"least_request\"\nchoice_count = 9223372036854775807\n",
    "[[strategies]]\nkind = \"ring_hash\"\nmin_ring_size = 8388608\nmax_ring_size = 8388608\n",
    "[[strategies]]\nkind = \"ring_hash\"\nmin_ring_size = 1\nmax_ring_size = 1\n",
    "[[strategies]]\nkind = \"peak_ewma\"\ndecay_time = 1e-300\ndefault_rtt = 1e300\n",
    "[[strategies]]\nkind = \"peak_ewma\"\ndecay_time = 1e-9\ndefault_rtt = 0\n",
    "[[strategies]]\nkind = \"aperture\"\nlow_load = 0\nhigh_load = 1e300\nsmooth_win = 1e-300\n",
    "[[strategies]]\nkind = \"grpc_wrr\"\nweight_update_period = 0.1\nblackout_period = 0\nweight_expiration_period = 1e-300\n",
    "[[strategies]]\nkind = \"least_response_time\"\nalpha = 1e-300\n",
    "[[strategies]]\nkind = \"least_request\"\nchoice_count = 2\nactive_request_bias = 1e300\n",
    "[[strategies]]\nkind = \"first\"\nmaxconn = 4294967295\n",
    "[[strategies]]\nkind = \"bounded_load_hash\"\nhash_balance_factor = 4294967295\nmin_ring_size = 1\n",
    "[[strategies]]\nkind = \"power_of_d\"\nd = 1\nreplacement = true\n",
    "[[strategies]]\nkind = \"jiq\"\n[[strategies]]\nkind = \"edf_wrr\"\n[[strategies]]\nkind = \"jsq\"\n",
    "[keys]\ndist = \"zipf\"\ncount = 1\nexponent = 0\n",
    "[keys]\ndist = \"zipf\"\ncount = 1000\nexponent = 1e300\n",
    "[[servers]]\nname = \"z\"\nweight = 0\nservice = { dist = \"uniform\", min = 0, max = 1e-300 }\n",
    "[[servers]]\nname = \"w\"\nspeed = 1e-300\nservice = { dist = \"weibull\", shape = 1e-3, scale = 1 }\n",
    "[[servers]]\nname = \"e\"\nqueue_capacity = 0\nservice = { dist = \"empirical\", min = 0, p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 1e-12 }\n",
    "[[servers]]\nname = \"m\"\nspeed = 1e300\nservice = { dist = \"mixture\", components = [{ weight = 1e300, dist = { dist = \"pareto\", shape = 1.01, scale = 1e-3 } }, { weight = 1e-300, dist = { dist = \"lognormal\", mean = 1e9, cv = 100 } }] }\n",
    "[[faults]]\nserver = \"fast\"\nkind = \"crash\"\nat = 0\ndetection = 1e9\n",
    "[[faults]]\nserver = \"s-0\"\nkind = \"crash\"\nat = 0\nduration = 1e-300\n",
    "[[faults]]\nserver = \"fast\"\nkind = \"deploy\"\nat = 0\nrestart = 0\ndrain_timeout = 0\nwarmup = 1e-300\nfraction = 1e-300\n",
    "[[faults]]\nserver = \"fast\"\nkind = \"join\"\nat = 1e300\nwarmup = 1e300\n",
    "[[faults]]\nserver = \"fast-0\"\nkind = \"leave\"\nat = 0\nduration = 1e-300\ndrain_timeout = 1e300\n",
    "[[faults]]\nserver = \"slow\"\nkind = \"delay\"\nat = 0\ndelay = 1e300\n",
    "[[faults]]\nserver = \"slow\"\nkind = \"unreachable\"\nat = 0\nconnect_timeout = 0\ndetection = 1e9\n",
    "[[faults]]\nserver = \"fast\"\nkind = \"cold\"\nat = 0\nwarmup = 1e-9\nfraction = 1e-300\n",
    "[[strategies]]\nkind = \"edf_wrr\"\n[strategies.policy.slow_start]\nkind = \"envoy\"\nslow_start_window = 1e-300\naggression = 1e300\n",
    "[[strategies]]\nkind = \"least_request\"\n[strategies.policy.slow_start]\nkind = \"envoy\"\nslow_start_window = 0.001\naggression = 1e-300\nmin_weight_percent = 0\n",
    "[[strategies]]\nkind = \"smooth_weighted_round_robin\"\n[strategies.policy.slow_start]\nkind = \"nginx\"\nwindow = 1e-9\n[[faults]]\nserver = \"s-0\"\nkind = \"crash\"\nat = 0.5\nduration = 0.5\n",
    "[[strategies]]\nkind = \"jsq\"\n[strategies.policy.slow_start]\nkind = \"nginx\"\nwindow = 86400\n",
    "[[strategies]]\nkind = \"least_connections\"\n[strategies.policy.outlier]\nkind = \"finagle\"\nconsecutive_failures = 1\nmark_dead_for = 1e-9\nmax_mark_dead_for = 86400\n",
    "[[strategies]]\nkind = \"least_request\"\n[strategies.policy.circuit_breakers]\nmax_requests = 1\nmax_pending_requests = 0\nmax_retries = 4294967295\n[strategies.policy.retry]\nmax_attempts = 10\n",
    "[[strategies]]\nkind = \"least_connections\"\n[strategies.policy.circuit_breakers]\nmax_requests = 0\n",
    "[[servers]]\nname = \"q\"\nservice = { dist = \"exponential\", mean = 1 }\n[servers.admission]\nqueue_timeout = 1e-6\n",
    "[[strategies]]\nkind = \"least_request\"\n[strategies.policy.hedge]\ndelay = { percentile = 0.999999, window = 0.001, refresh = 0.001 }\nmax_attempts = 10\n",
    "[[strategies]]\nkind = \"round_robin\"\n[strategies.policy.hedge]\ndelay = { percentile = 1e-9, window = 1e9, refresh = 1e9 }\ncancel_losers = false\n",
    "[[servers]]\nname = \"q\"\nservice = { dist = \"exponential\", mean = 1e-3 }\n[servers.admission]\nqueue_timeout = 1e300\n",
    "[[servers]]\nname = \"q\"\nworkers = 3\nservice = { dist = \"pareto\", scale = 1e-3, shape = 1.1 }\n[servers.admission]\ncodel = { target = 1e-6, interval = 1e-6 }\nadaptive_lifo = { after = 0 }\n",
    "[[servers]]\nname = \"q\"\nqueue_capacity = 0\nservice = { dist = \"deterministic\", value = 0.01 }\n[servers.admission]\nadaptive_lifo = {}\ncodel = {}\n",
    "[[strategies]]\nkind = \"round_robin\"\n[strategies.policy]\nper_try_timeout = 1e-9\ncancel = true\n[strategies.policy.circuit_breakers]\nmax_requests = 4294967295\nmax_retries = 0\n[strategies.policy.hedge]\ndelay = 0\nmax_attempts = 10\n",
    "[[strategies]]\nkind = \"round_robin\"\n[strategies.policy.outlier]\nkind = \"envoy\"\ninterval = 0.001\nenforcing_success_rate = 100\nsuccess_rate_minimum_hosts = 0\nsuccess_rate_request_volume = 1\nsuccess_rate_stdev_factor = 0\nenforcing_failure_percentage = 50\nfailure_percentage_threshold = 0\n",
];

/// Arrival sections swapped in whole.
const ARRIVALS: &[&str] = &[
    "process = \"piecewise\"\npoints = [{ at = 0, rate = 100 }, { at = 1, rate = 0 }]\n",
    "process = \"piecewise\"\npoints = [{ at = 0, rate = 1e300 }]\n",
    "process = \"on_off\"\nrate = 100\nmean_on = 1\nmean_off = 1e300\n",
    "process = \"mmpp\"\nrates = [100, 10]\nmean_sojourn = [1e-300, 1e-300]\n",
    "process = \"renewal\"\ninterarrival = { dist = \"gamma\", mean = 0.01, cv = 1e-200 }\n",
    "process = \"renewal\"\ninterarrival = { dist = \"pareto\", shape = 1.0000001, scale = 0.001 }\n",
    "process = \"trace\"\npath = \"/dev/zero\"\n",
    "process = \"trace\"\npath = \"fifo\"\n",
    "process = \"trace\"\npath = \".\"\n",
    "process = \"trace\"\npath = \"trace.csv\"\n",
];

/// A trace with hostile rows, written beside every mutant.
const TRACE: &str = "time,work\n0.1,0.01\n0.2,1e30\n0.3,0.01\n";

fn pick<'a, T>(rng: &mut StdRng, xs: &'a [T]) -> &'a T {
    &xs[rng.random_range(0..xs.len())]
}

fn number(rng: &mut StdRng) -> Value {
    if rng.random_bool(0.5) {
        Value::Float(*pick(rng, NUMBERS))
    } else {
        Value::Integer(*pick(rng, INTEGERS))
    }
}

/// Every value reachable in `v`, as paths of keys and indices.
fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Table(t) => {
            for (k, x) in t {
                here.push(Step::Key(k.clone()));
                paths(x, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                here.push(Step::Index(i));
                paths(x, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

fn at<'a>(v: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(v, |v, s| match (s, v) {
        (Step::Key(k), Value::Table(t)) => t.get_mut(k).unwrap(),
        (Step::Index(i), Value::Array(a)) => &mut a[*i],
        _ => unreachable!("paths come from the same value"),
    })
}

/// One structural mutation of the parsed file.
fn mutate_tree(rng: &mut StdRng, root: &mut Value) {
    let mut all = Vec::new();
    paths(root, &mut Vec::new(), &mut all);
    let path = pick(rng, &all[1..]).clone();
    let (parent_path, last) = path.split_at(path.len() - 1);
    match rng.random_range(0..14) {
        // Nudge a number, keeping most mutants valid so that `run` is exercised too.
        10..=13 => {
            let v = at(root, &path);
            match v {
                Value::Float(f) => *f *= *pick(rng, &[0.1, 0.5, 2.0, 10.0, 100.0]),
                Value::Integer(i) => {
                    *i = i.saturating_mul(*pick(rng, &[2, 10, 100])) + pick(rng, &[-1, 0, 1])
                }
                _ => {}
            }
        }
        // Replace a value by a hostile one of any type.
        0..=4 => {
            let v = at(root, &path);
            *v = match (&*v, rng.random_range(0..6)) {
                (Value::String(_), 0..=3) => Value::String(pick(rng, STRINGS).to_string()),
                (Value::Float(f), 0..=2) => Value::Float(f * pick(rng, &[1e-6, 1e6, -1.0, 1e300])),
                (Value::Integer(i), 0..=2) => {
                    Value::Integer(i.saturating_mul(*pick(rng, &[0, -1, 1000, 1 << 31])))
                }
                (_, 4) => Value::Boolean(rng.random()),
                (_, 5) => Value::Array(vec![]),
                _ => number(rng),
            };
        }
        // Remove it.
        5 | 6 => match (at(root, parent_path), &last[0]) {
            (Value::Table(t), Step::Key(k)) => {
                t.remove(k);
            }
            (Value::Array(a), Step::Index(i)) => {
                a.remove(*i);
            }
            _ => {}
        },
        // Duplicate an array element, or add a key to a table.
        7 | 8 => match at(root, parent_path) {
            Value::Array(a) => {
                let x = a[rng.random_range(0..a.len())].clone();
                for _ in 0..rng.random_range(1..4) {
                    a.push(x.clone());
                }
            }
            Value::Table(t) => {
                t.insert(pick(rng, KEYS).to_string(), number(rng));
            }
            _ => {}
        },
        // Replace a table or array by a scalar.
        _ => *at(root, &path) = number(rng),
    }
}

/// One textual mutation: a number replaced by one TOML's integer type cannot hold, a
/// section appended, or the arrivals swapped.
fn mutate_text(rng: &mut StdRng, src: &str) -> String {
    match rng.random_range(0..3) {
        0 => {
            let starts: Vec<usize> = src
                .char_indices()
                .filter(|&(i, c)| {
                    c.is_ascii_digit()
                        && src[..i]
                            .chars()
                            .last()
                            .is_some_and(|p| p == ' ' || p == '=' || p == '[')
                })
                .map(|(i, _)| i)
                .collect();
            if starts.is_empty() {
                return src.to_string();
            }
            let s = *pick(rng, &starts);
            let e = s + src[s..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '+'))
                .unwrap_or(src.len() - s);
            format!("{}{}{}", &src[..s], pick(rng, TEXT_NUMBERS), &src[e..])
        }
        1 => format!("{src}\n{}", pick(rng, SNIPPETS)),
        _ => {
            let Some(a) = src.find("[arrivals]") else {
                return src.to_string();
            };
            let rest = &src[a + 10..];
            let end = rest.find("\n[").map_or(src.len(), |e| a + 10 + e);
            format!(
                "{}[arrivals]\n{}{}",
                &src[..a],
                pick(rng, ARRIVALS),
                &src[end..]
            )
        }
    }
}

fn mutant(rng: &mut StdRng, base: &str) -> String {
    let mut src = base.to_string();
    for _ in 0..rng.random_range(1..3) {
        if rng.random_bool(0.6) {
            let Ok(table) = src.parse::<Table>() else {
                src = mutate_text(rng, &src);
                continue;
            };
            let mut root = Value::Table(table);
            mutate_tree(rng, &mut root);
            if let Ok(s) = toml::to_string(&root) {
                src = s;
            }
        } else {
            src = mutate_text(rng, &src);
        }
    }
    src
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    timed_out: bool,
}

fn lbsim(args: &[&str], dir: &Path, limit: Duration) -> Outcome {
    let start = Instant::now();
    let err_path = dir.join("stderr.txt");
    let out_path = dir.join("stdout.txt");
    // LBSIM_FUZZ_BIN: a copy of the binary, so that long local runs survive rebuilds.
    let bin =
        std::env::var("LBSIM_FUZZ_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lbsim").into());
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Outcome {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        elapsed: start.elapsed(),
        timed_out,
    }
}

/// The events `lbsim` estimated (`estimated cost: about N events`), if it printed them.
fn estimated_events(text: &str) -> Option<f64> {
    let rest = text.split("estimated cost: about ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn bad(o: &Outcome) -> Option<String> {
    if o.timed_out {
        return Some(format!("no answer within {:?}", o.elapsed));
    }
    if o.stderr.contains("panicked") || !matches!(o.code, Some(0 | 2)) {
        return Some(format!("exit {:?}", o.code));
    }
    None
}

fn failure_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures")
}

#[test]
fn mutated_scenarios_never_panic_hang_or_fail_oddly() {
    let secs: u64 = std::env::var("LBSIM_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("LBSIM_FUZZ_SEED")
        .or_else(|_| std::env::var("PROPTEST_RNG_SEED"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("fuzz: seed {seed}, {secs} s (LBSIM_FUZZ_SEED, LBSIM_FUZZ_SECS)");
    let mut rng = StdRng::seed_from_u64(seed);
    let bases = shipped();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("trace.csv"), TRACE).unwrap();
    #[cfg(unix)]
    {
        let _ = Command::new("mkfifo").arg(dir.path().join("fifo")).status();
    }
    let max_events = MAX_EVENTS.to_string();
    let limits = ["--max-events", max_events.as_str(), "--max-memory", "1G"];
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut tried, mut valid, mut failures) = (0usize, 0usize, Vec::new());
    while Instant::now() < deadline {
        let (name, base) = pick(&mut rng, &bases);
        let src = mutant(&mut rng, base);
        let file = dir.path().join("case.toml");
        std::fs::write(&file, &src).unwrap();
        tried += 1;
        // Priced for the run below: 2 replications.
        let mut args = vec!["validate", "case.toml", "--replications", "2"];
        args.extend(limits);
        let v = lbsim(&args, dir.path(), FIXED);
        let mut problem = bad(&v).map(|p| ("validate", p, v.stderr.clone()));
        if problem.is_none() && v.code == Some(0) {
            valid += 1;
            let mut args = vec![
                "run",
                "case.toml",
                "--replications",
                "2",
                "--threads",
                "1",
                "--out",
                "out",
            ];
            args.extend(limits);
            // Time proportional to the work estimated (which --max-events bounds).
            let Some(events) = estimated_events(&v.stdout) else {
                failures.push(format!("validate printed no cost estimate for {name}"));
                continue;
            };
            let limit = FIXED + Duration::from_secs_f64(events.min(MAX_EVENTS) / EVENTS_PER_SEC);
            let r = lbsim(&args, dir.path(), limit);
            if r.code == Some(0) && estimated_events(&r.stderr).is_none() {
                problem = Some(("run", "printed no cost estimate".into(), r.stderr.clone()));
            } else if let Some(p) = bad(&r) {
                problem = Some(("run", p, r.stderr.clone()));
            }
        }
        if let Some((cmd, what, stderr)) = problem {
            let out = failure_dir();
            std::fs::create_dir_all(&out).unwrap();
            let saved = out.join(format!("{name}-{seed}-{tried}.toml"));
            std::fs::write(&saved, &src).unwrap();
            let tail: String = stderr.lines().rev().take(6).collect::<Vec<_>>().join(" | ");
            eprintln!("FAIL {cmd}: {what}: {} :: {tail}", saved.display());
            failures.push(format!("{cmd} {}: {what}", saved.display()));
        }
    }
    eprintln!(
        "fuzz: {tried} mutants, {valid} valid and run, {} failures",
        failures.len()
    );
    assert!(tried > 0);
    assert!(failures.is_empty(), "{failures:#?}");
}
