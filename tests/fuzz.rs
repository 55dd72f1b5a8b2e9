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

// ---------------------------------------------------------------------------------------
// Shard files (issue 14): mutants of real shards fed to `lbsim merge`.
// ---------------------------------------------------------------------------------------

/// A scenario small enough that a merge takes some 50 ms: 3 servers, 2 strategies, about
/// 100 requests a replication.
const TINY: &str = r#"name = "tiny"
seed = 11
replications = 4
duration = 0.5
warmup = 0.1

[arrivals]
process = "poisson"
rate = 200.0

[[servers]]
name = "s"
count = 3
workers = 2
service = { dist = "lognormal", mean = 0.01, cv = 1.5 }

[[strategies]]
kind = "round_robin"

[[strategies]]
kind = "least_connections"
"#;

/// Wall-clock allowance for one merge of the tiny shards (some 50 ms when alone).
const MERGE_LIMIT: Duration = Duration::from_secs(20);

/// What a mutant changed: the oracle differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Touched {
    /// Only bytes of a packed field (base64 of zlib, or hex of V2 + deflate), each
    /// carrying its own checksum.
    Packed,
    /// Anything else: a plain JSON value, or the text.
    Plain,
}

/// Every value in `v`, as JSON pointers (`/strategies/0/values/1`).
fn pointers(v: &serde_json::Value, here: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                pointers(x, format!("{here}/{k}"), out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{here}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(here);
}

/// Whether the value at `pointer` is a packed field.
fn packed_field(pointer: &str) -> bool {
    let parts: Vec<&str> = pointer.split('/').collect();
    matches!(
        parts.as_slice(),
        ["", "strategies", _, "server_pools" | "pooled", _]
            | ["", "strategies", _, "distributions", _, _]
    )
}

/// Bytes of a packed field changed: one flipped, a range cut or duplicated.
fn mutate_bytes(rng: &mut StdRng, b: &mut Vec<u8>) {
    if b.is_empty() {
        b.push(rng.random());
        return;
    }
    let at = rng.random_range(0..b.len());
    match rng.random_range(0..4) {
        0 | 1 => b[at] ^= 1 << rng.random_range(0..8),
        2 => b.truncate(at),
        _ => {
            let end = rng.random_range(at..=b.len()).min(at + 16);
            let piece = b[at..end].to_vec();
            b.splice(at..at, piece);
        }
    }
}

/// One edit of a packed field's text: its bytes (decoded, changed, encoded again), or its
/// characters.
fn mutate_packed(rng: &mut StdRng, pointer: &str, text: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let hex = pointer.contains("/pooled/");
    let decoded = if hex {
        (0..text.len() / 2)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .ok()
    } else {
        b64.decode(text).ok()
    };
    match (decoded, rng.random_range(0..4)) {
        (Some(mut b), 0..=2) => {
            mutate_bytes(rng, &mut b);
            if hex {
                b.iter().map(|x| format!("{x:02x}")).collect()
            } else {
                b64.encode(b)
            }
        }
        _ => {
            let mut t = text.as_bytes().to_vec();
            mutate_bytes(rng, &mut t);
            String::from_utf8_lossy(&t).into_owned()
        }
    }
}

const SHARD_NUMBERS: &[i128] = &[
    0,
    1,
    2,
    3,
    -1,
    255,
    256,
    65_535,
    65_536,
    1 << 31,
    u32::MAX as i128,
    1 << 32,
    (1 << 53) + 1,
    i64::MAX as i128,
    u64::MAX as i128,
    u64::MAX as i128 + 1,
];
const SHARD_STRINGS: &[&str] = &[
    "",
    "x",
    "lbsim-shard-5",
    "lbsim-shard-6",
    "lbsim-shard-7",
    "lbsim-shard-8",
    "round_robin",
    "/dev/zero",
    "../tiny.toml",
    "AAAA",
    "eJwDAAAAAAE=",
    "00",
];

/// One structural edit of the parsed file; returns what it touched.
fn mutate_json(rng: &mut StdRng, root: &mut serde_json::Value) -> Touched {
    use serde_json::Value;
    let mut all = Vec::new();
    pointers(root, String::new(), &mut all);
    all.pop(); // the root
    // Packed fields often: they are few among the numbers.
    let packed: Vec<&String> = all.iter().filter(|p| packed_field(p)).collect();
    let pointer = if !packed.is_empty() && rng.random_bool(0.35) {
        packed[rng.random_range(0..packed.len())].clone()
    } else {
        all[rng.random_range(0..all.len())].clone()
    };
    let (parent, last) = pointer.rsplit_split();
    let v = root.pointer_mut(&pointer).unwrap();
    if packed_field(&pointer) && rng.random_bool(0.8) {
        let text = v.as_str().unwrap_or_default().to_string();
        *v = mutate_packed(rng, &pointer, &text).into();
        return Touched::Packed;
    }
    match rng.random_range(0..12) {
        // A number nudged or replaced.
        0..=3 => {
            *v = match (v.as_u64(), rng.random_range(0..3)) {
                (Some(n), 0) => n.wrapping_add(1).into(),
                (Some(n), 1) => n.wrapping_sub(1).into(),
                _ => {
                    let n = SHARD_NUMBERS[rng.random_range(0..SHARD_NUMBERS.len())];
                    serde_json::from_str(&n.to_string()).unwrap()
                }
            }
        }
        // A string replaced.
        4 => {
            *v = SHARD_STRINGS[rng.random_range(0..SHARD_STRINGS.len())].into();
        }
        // An array cut, an element duplicated or removed, an object's field removed.
        5..=8 => match v {
            Value::Array(a) if !a.is_empty() => {
                let at = rng.random_range(0..a.len());
                match rng.random_range(0..3) {
                    0 => a.truncate(at),
                    1 => {
                        let x = a[at].clone();
                        a.insert(at, x);
                    }
                    _ => {
                        a.remove(at);
                    }
                }
            }
            _ => match root.pointer_mut(&parent) {
                Some(Value::Object(m)) => {
                    m.remove(&last);
                }
                Some(Value::Array(a)) => {
                    let i: usize = last.parse().unwrap();
                    a.remove(i);
                }
                _ => {}
            },
        },
        // A field added to an object (unknown ones are ignored).
        9 => {
            if let Some(Value::Object(m)) = root.pointer_mut(&parent) {
                m.insert("bogus".into(), 1.into());
            }
        }
        // A value of another type.
        _ => {
            *v = [
                Value::Null,
                Value::Bool(true),
                Value::Array(vec![]),
                serde_json::json!({}),
                0.5.into(),
                "".into(),
            ][rng.random_range(0..6)]
            .clone();
        }
    }
    Touched::Plain
}

trait SplitPointer {
    fn rsplit_split(&self) -> (String, String);
}

impl SplitPointer for String {
    fn rsplit_split(&self) -> (String, String) {
        let (a, b) = self.rsplit_once('/').unwrap();
        (a.to_string(), b.to_string())
    }
}

/// One edit of the text: a byte flipped, a range cut or duplicated, the file cut short,
/// or whitespace inserted between tokens (which must change nothing).
fn mutate_text_bytes(rng: &mut StdRng, text: &mut Vec<u8>) -> Touched {
    if rng.random_bool(0.25) {
        // Whitespace after a comma (outside strings: the file has no comma in its
        // strings but the encoding's prose, which this avoids).
        let commas: Vec<usize> = (text.iter().enumerate())
            .filter(|&(i, &c)| c == b',' && text.get(i + 1) == Some(&b'"'))
            .map(|(i, _)| i)
            .collect();
        if let Some(&at) = commas.get(rng.random_range(0..commas.len().max(1))) {
            let ws: &[u8] = [&b" "[..], b"\n", b"\t  ", b"\r\n"][rng.random_range(0..4)];
            text.splice(at + 1..at + 1, ws.iter().copied());
        }
        return Touched::Plain;
    }
    mutate_bytes(rng, text);
    Touched::Plain
}

/// A mutant of `text`: 1 or 2 edits; sealed (its checksum recomputed, as a bug in the
/// writer or a deliberate edit would leave it) when `seal` and it still parses.
fn shard_mutant(rng: &mut StdRng, text: &str, seal: bool) -> (Vec<u8>, Touched, bool) {
    let mut bytes = text.as_bytes().to_vec();
    let mut touched = Touched::Packed;
    for _ in 0..rng.random_range(1..3) {
        let t = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(mut v) if rng.random_bool(0.8) => {
                let t = mutate_json(rng, &mut v);
                bytes = serde_json::to_vec(&v).unwrap();
                t
            }
            _ => mutate_text_bytes(rng, &mut bytes),
        };
        if t == Touched::Plain {
            touched = Touched::Plain;
        }
    }
    if seal && let Ok(mut f) = serde_json::from_slice::<lbsim::shard::ShardFile>(&bytes) {
        f.seal();
        return (serde_json::to_vec(&f).unwrap(), touched, true);
    }
    (bytes, touched, false)
}

/// Every file of a merge's output folder, by name.
fn outputs(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Mutants of real shard files (2 and 3 shards of a tiny scenario, written once per test
/// run) merged by `lbsim merge`. The oracle:
/// - never a panic, an answer later than [`MERGE_LIMIT`], nor an exit status other than 0
///   and 2 (1 would say shards are missing or partial: no edit of one file makes a
///   consistent partial shard);
/// - exit 2 names the mutated file (`path is not an lbsim shard file: ...`, or both files
///   of a mismatch or a duplicate);
/// - exit 0 writes the same files, byte for byte, as the merge of the unmutated shards.
///   What legitimately succeeds: whitespace between tokens, fields reordered or unknown
///   fields added (none is part of the checksum), and any edit that changes no parsed
///   value. Any other edit is refused by the file's checksum (format 7).
///
/// Sealed mutants (a third: the checksum recomputed after the edit, as a bug in the
/// writer or a deliberate edit would leave it) exercise every check beneath the
/// checksum: the same oracle, except that a merge may succeed with other outputs when a
/// plain JSON value was edited (a replication's metrics or servers' figures have no check
/// of their own: nothing tells a changed figure from a measured one); an edit of packed
/// fields only must still be refused, each carrying its own checksum.
///
/// `LBSIM_SHARD_FUZZ_SECS` (default 30) and `LBSIM_FUZZ_SEED` as above; failing mutants
/// are saved in `target/fuzz-failures/`.
#[test]
fn mutated_shards_never_panic_hang_or_merge_wrongly() {
    let secs: u64 = std::env::var("LBSIM_SHARD_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("LBSIM_FUZZ_SEED")
        .or_else(|_| std::env::var("PROPTEST_RNG_SEED"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("shard fuzz: seed {seed}, {secs} s (LBSIM_FUZZ_SEED, LBSIM_SHARD_FUZZ_SECS)");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("tiny.toml"), TINY).unwrap();
    // The shards, and the merge of each set unmutated, written to `out` as a mutant's
    // merge is (the report records the command line).
    let mut sets = Vec::new();
    for (n, replications) in [(2u32, "4"), (3, "3")] {
        let set = dir.join(format!("set{n}"));
        for k in 0..n {
            let spec = format!("{k}/{n}");
            let args = [
                "run",
                "tiny.toml",
                "--replications",
                replications,
                "--threads",
                "1",
                "--shard",
                &spec,
                "--out",
            ];
            let mut args = args.to_vec();
            let out = set.to_string_lossy().into_owned();
            args.push(&out);
            let o = lbsim(&args, dir, MERGE_LIMIT * 3);
            assert_eq!(o.code, Some(0), "{args:?}: {}", o.stderr);
        }
        let files: Vec<(String, String)> = (0..n)
            .map(|k| {
                let name = format!("shard-{k}-of-{n}.json");
                let text = std::fs::read_to_string(set.join(&name)).unwrap();
                (name, text)
            })
            .collect();
        let shards = dir.join("shards");
        let _ = std::fs::remove_dir_all(&shards);
        std::fs::create_dir_all(&shards).unwrap();
        for (name, text) in &files {
            std::fs::write(shards.join(name), text).unwrap();
        }
        let mut reference = Vec::new();
        for scenario in [true, false] {
            let _ = std::fs::remove_dir_all(dir.join("out"));
            let mut args = vec!["merge", "shards", "--out", "out"];
            if scenario {
                args.extend(["--scenario", "tiny.toml"]);
            }
            let o = lbsim(&args, dir, MERGE_LIMIT);
            assert_eq!(o.code, Some(0), "{}", o.stderr);
            reference.push(outputs(&dir.join("out")));
        }
        assert!(reference[0].contains_key("timeseries.csv"));
        sets.push((files, reference));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut tried, mut sealed, mut merged, mut failures) = (0usize, 0usize, 0usize, Vec::new());
    while Instant::now() < deadline {
        let (files, reference) = &sets[rng.random_range(0..sets.len())];
        let target = rng.random_range(0..files.len());
        let seal = rng.random_bool(0.33);
        let (mutant, touched, was_sealed) = shard_mutant(&mut rng, &files[target].1, seal);
        tried += 1;
        sealed += usize::from(was_sealed);
        let shards = dir.join("shards");
        let _ = std::fs::remove_dir_all(&shards);
        let _ = std::fs::remove_dir_all(dir.join("out"));
        std::fs::create_dir_all(&shards).unwrap();
        for (k, (name, text)) in files.iter().enumerate() {
            if k == target {
                std::fs::write(shards.join(name), &mutant).unwrap();
            } else {
                std::fs::write(shards.join(name), text).unwrap();
            }
        }
        let scenario = rng.random_bool(0.5);
        let mut args = vec!["merge", "shards", "--out", "out"];
        if scenario {
            args.extend(["--scenario", "tiny.toml"]);
        }
        let o = lbsim(&args, dir, MERGE_LIMIT);
        let name = &files[target].0;
        let problem = if o.timed_out {
            Some(format!("no answer within {:?}", o.elapsed))
        } else if o.stderr.contains("panicked") || !matches!(o.code, Some(0 | 2)) {
            Some(format!("exit {:?}", o.code))
        } else if o.code == Some(2) && !o.stderr.contains(name.as_str()) {
            Some(format!("an error not naming {name}"))
        } else if o.code == Some(0) {
            merged += 1;
            let out = outputs(&dir.join("out"));
            let same = out == reference[usize::from(!scenario)];
            if out.is_empty() {
                Some("exit 0 without output".into())
            } else if !(same || was_sealed && touched == Touched::Plain) {
                let differ: Vec<&String> = (out.keys())
                    .filter(|k| reference[0].get(*k) != out.get(*k))
                    .collect();
                Some(format!(
                    "merged into other files ({differ:?}) from a {} {touched:?} edit",
                    if was_sealed { "sealed" } else { "plain" }
                ))
            } else {
                None
            }
        } else {
            None
        };
        if let Some(what) = problem {
            let saved_dir = failure_dir();
            std::fs::create_dir_all(&saved_dir).unwrap();
            let saved = saved_dir.join(format!("shard-{seed}-{tried}-{name}"));
            std::fs::write(&saved, &mutant).unwrap();
            let tail: String = o
                .stderr
                .lines()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .join(" | ");
            eprintln!("FAIL merge: {what}: {} :: {tail}", saved.display());
            failures.push(format!("{}: {what}", saved.display()));
        }
    }
    eprintln!(
        "shard fuzz: {tried} mutants ({sealed} sealed), {merged} merged, {} failures",
        failures.len()
    );
    assert!(tried > 0);
    assert!(failures.is_empty(), "{failures:#?}");
}
