//! Determinism across execution layouts: shards merged with `lbsim merge` write the same
//! bytes as a single run, and results do not depend on the thread count.

use std::path::Path;
use std::process::Command;

fn lbsim(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lbsim {args:?}: {text}");
    text
}

/// `v` as a shard file whose checksum fits its contents (format 7): an edit made as a bug
/// in the writer would make it, to reach the checks beneath the checksum. As it is if it
/// is no shard file.
fn sealed(v: &serde_json::Value) -> String {
    match serde_json::from_value::<lbsim::shard::ShardFile>(v.clone()) {
        Ok(mut f) => {
            f.seal();
            serde_json::to_string(&f).unwrap()
        }
        Err(_) => v.to_string(),
    }
}

/// Runs scenario `s` as shards 0/2 and 1/2 of 2 replications into folder `out`.
fn two_shards(s: &str, out: &str) {
    for k in ["0/2", "1/2"] {
        lbsim(&["run", s, "--replications", "2", "--shard", k, "--out", out]);
    }
}

fn short_scenario(dir: &Path) -> String {
    let src = std::fs::read_to_string("scenarios/heterogeneous.toml")
        .unwrap()
        .replace("duration = 60.0", "duration = 8.0")
        .replace("warmup = 10.0", "warmup = 1.0");
    let path = dir.join("heterogeneous.toml");
    std::fs::write(&path, src).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn merged_shards_are_bit_identical_to_a_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let s = short_scenario(tmp.path());
    let d = |n: &str| tmp.path().join(n).to_string_lossy().into_owned();
    lbsim(&["run", &s, "--replications", "5", "--out", &d("single")]);
    for k in ["1/2", "0/2"] {
        lbsim(&[
            "run",
            &s,
            "--replications",
            "5",
            "--shard",
            k,
            "--out",
            &d("shards"),
        ]);
    }
    lbsim(&["merge", &d("shards"), "--out", &d("merged")]);
    for f in [
        "summary.csv",
        "servers.csv",
        "replications.csv",
        "comparisons.csv",
        "latency_ccdf.svg",
        "timeseries.csv",
        "queue_over_time.svg",
        "rates.csv",
        "rates_over_time.svg",
    ] {
        let a = std::fs::read(tmp.path().join("single").join(f)).unwrap();
        let b = std::fs::read(tmp.path().join("merged").join(f)).unwrap();
        assert!(a == b, "{f} differs between a single run and merged shards");
    }
    // A missing shard is reported, not silently merged.
    std::fs::remove_file(tmp.path().join("shards/shard-1-of-2.json")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .args(["merge", &d("shards"), "--out", &d("partial")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard missing"));
}

/// Issue 8: reports never simulate. `merge` writes the time series that the shard running
/// replication 0 recorded: an edit of the shard's recording shows up in `timeseries.csv`.
#[test]
fn merge_takes_the_time_series_from_the_shard_without_simulating() {
    let tmp = tempfile::tempdir().unwrap();
    let s = short_scenario(tmp.path());
    let d = |n: &str| tmp.path().join(n).to_string_lossy().into_owned();
    two_shards(&s, &d("shards"));
    let file = tmp.path().join("shards/shard-0-of-2.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let other: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("shards/shard-1-of-2.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        other["timeseries"],
        serde_json::json!([]),
        "shard 1 ran no replication 0"
    );
    let strategies = v["strategies"].as_array().unwrap().len();
    assert_eq!(v["timeseries"].as_array().unwrap().len(), strategies);
    // Sample 0 of the first strategy: (time, queued, in service, in flight).
    v["timeseries"][0]["samples"][0][1][0] = 424_242.into();
    // Edited, the file is refused (its checksum); sealed again, merged.
    std::fs::write(&file, v.to_string()).unwrap();
    let err = refused(&["merge", &d("shards"), "--out", &d("merged")]);
    assert!(
        err.contains("shard-0-of-2.json") && err.contains("checksum"),
        "{err}"
    );
    std::fs::write(&file, sealed(&v)).unwrap();
    lbsim(&["merge", &d("shards"), "--out", &d("merged")]);
    let csv = std::fs::read_to_string(tmp.path().join("merged/timeseries.csv")).unwrap();
    assert!(
        csv.contains(",424242,"),
        "the recorded sample is written as read"
    );
    assert!(tmp.path().join("merged/queue_over_time.svg").exists());
}

#[test]
fn reports_do_not_depend_on_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let s = short_scenario(tmp.path());
    let d = |n: &str| tmp.path().join(n).to_string_lossy().into_owned();
    for t in ["1", "2"] {
        lbsim(&[
            "run",
            &s,
            "--replications",
            "4",
            "--threads",
            t,
            "--out",
            &d(t),
        ]);
    }
    for f in ["summary.csv", "comparisons.csv", "servers.svg"] {
        let a = std::fs::read(tmp.path().join("1").join(f)).unwrap();
        let b = std::fs::read(tmp.path().join("2").join(f)).unwrap();
        assert!(a == b, "{f} depends on --threads");
    }
}

#[test]
fn sequential_stopping_reports_replications_needed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = short_scenario(tmp.path());
    let out = lbsim(&[
        "run",
        &s,
        "--replications",
        "3",
        "--precision",
        "0.1",
        "--metric",
        "latency_mean",
        "--max-replications",
        "40",
        "--out",
        &tmp.path().join("p").to_string_lossy(),
    ]);
    assert!(out.contains("precision: "), "{out}");
    let md = std::fs::read_to_string(tmp.path().join("p/report.md")).unwrap();
    // The reproduce command pins the number of replications that was needed.
    let n: String = out
        .split("precision: ")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(md.contains(&format!("--replications {n}")), "{md}");
}

/// Runs `lbsim ARGS`, expecting bad input (exit 2, no panic); returns stderr.
fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "lbsim {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Regression (issue 10): `merge` trusts nothing it reads. A scenario edited between the
/// shards and the merge (more or fewer servers) and hand-edited shard fields are refused
/// with exit status 2, without a panic or an absurd allocation.
#[test]
fn merge_refuses_edited_scenarios_and_corrupted_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let s = short_scenario(tmp.path());
    let d = |n: &str| tmp.path().join(n).to_string_lossy().into_owned();
    for k in ["0/2", "1/2"] {
        lbsim(&[
            "run",
            &s,
            "--replications",
            "4",
            "--shard",
            k,
            "--out",
            &d("shards"),
        ]);
    }
    let original = std::fs::read_to_string(&s).unwrap();
    for (what, edited) in [
        ("more servers", original.replace("count = 6", "count = 7")),
        ("fewer servers", original.replace("count = 6", "count = 5")),
        (
            "another warm-up",
            original.replace("warmup = 1.0", "warmup = 1.5"),
        ),
    ] {
        assert_ne!(edited, original, "{what}: the edit must change the file");
        std::fs::write(&s, &edited).unwrap();
        let err = refused(&["merge", &d("shards"), "--out", &d("merged")]);
        assert!(err.contains("fingerprint"), "{what}: {err}");
    }
    std::fs::write(&s, &original).unwrap();
    lbsim(&["merge", &d("shards"), "--out", &d("merged")]);

    let file = tmp.path().join("shards/shard-1-of-2.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("index ≥ N", Box::new(|v| v["shard"] = 5.into())),
        ("N = 0", Box::new(|v| v["shards"] = 0.into())),
        ("N = 2^32 − 1", Box::new(|v| v["shards"] = u32::MAX.into())),
        (
            "replications huge",
            Box::new(|v| v["replications"] = u32::MAX.into()),
        ),
        (
            "short values",
            Box::new(|v| {
                v["strategies"][0]["values"][0]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }),
        ),
        (
            "short servers",
            Box::new(|v| {
                v["strategies"][0]["servers"][0]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }),
        ),
        (
            "runs missing",
            Box::new(|v| {
                v["strategies"][0]["values"].as_array_mut().unwrap().pop();
            }),
        ),
        ("foreign index", Box::new(|v| v["finished"][0] = 2.into())),
        (
            "duplicate index",
            Box::new(|v| {
                let f = v["finished"][0].clone();
                v["finished"][1] = f;
            }),
        ),
        (
            "bad histogram",
            Box::new(|v| v["strategies"][0]["pooled"][0] = "zz".into()),
        ),
        (
            "no fingerprint",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("fingerprint");
            }),
        ),
        (
            "other fingerprint",
            Box::new(|v| v["fingerprint"] = "0123456789abcdef".into()),
        ),
        (
            "time series of a server that does not exist",
            Box::new(|v| {
                let n = v["strategies"].as_array().unwrap().len();
                v["timeseries"] =
                    vec![serde_json::json!({"servers": [99_999], "samples": []}); n].into();
            }),
        ),
    ];
    for (what, edit) in edits {
        let mut v = json.clone();
        edit(&mut v);
        // As edited (the checksum refuses it), and sealed (the check beneath).
        for text in [v.to_string(), sealed(&v)] {
            std::fs::write(&file, text).unwrap();
            let err = refused(&["merge", &d("shards"), "--out", &d("merged")]);
            assert!(err.contains("fix:"), "{what}: {err}");
        }
    }

    // Format 6's compact fields (issue 14): corrupted, cut short, or hostile but well
    // formed, each refused with the file, the field and the fix named.
    assert_eq!(json["format"], "lbsim-shard-7");
    let packed = |bytes: &[u8]| {
        use base64::Engine as _;
        use std::io::Write as _;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(bytes).unwrap();
        serde_json::Value::from(
            base64::engine::general_purpose::STANDARD.encode(z.finish().unwrap()),
        )
    };
    let pool = json["strategies"][0]["server_pools"][1]
        .as_str()
        .unwrap()
        .to_string();
    let changed = {
        let mut b = pool.clone().into_bytes();
        let at = b.len() / 2;
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    // A pooled histogram (HdrHistogram's V2 + deflate, whose reader checks no checksum):
    // a byte of its zlib stream changed, and bytes duplicated in it.
    let v2 = |edit: fn(&mut Vec<u8>)| {
        let text = json["strategies"][0]["pooled"][0].as_str().unwrap();
        let mut b: Vec<u8> = (0..text.len() / 2)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        edit(&mut b);
        serde_json::Value::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
    };
    let (flipped, doubled) = (
        v2(|b| {
            let at = b.len() - 6;
            b[at] ^= 4;
        }),
        v2(|b| {
            let at = b.len() - 20;
            let piece = b[at..at + 8].to_vec();
            b.splice(at..at, piece);
            let n = (b.len() - 8) as u32;
            b[4..8].copy_from_slice(&n.to_be_bytes());
        }),
    );
    let edits: Vec<(&str, &str, Edit)> = vec![
        (
            "a pooled histogram's stream changed",
            "pooled[0]",
            Box::new(move |v| v["strategies"][0]["pooled"][0] = flipped.clone()),
        ),
        (
            "bytes duplicated in a pooled histogram's stream",
            "pooled[0]",
            Box::new(move |v| v["strategies"][0]["pooled"][0] = doubled.clone()),
        ),
        (
            "a pool changed",
            "server_pools[1]",
            Box::new(move |v| v["strategies"][0]["server_pools"][1] = changed.clone().into()),
        ),
        (
            "a pool cut short",
            "server_pools[1]",
            Box::new(move |v| {
                v["strategies"][0]["server_pools"][1] = pool[..pool.len() / 2 / 4 * 4].into()
            }),
        ),
        (
            "a pool not base64",
            "server_pools[0]",
            Box::new(|v| v["strategies"][1]["server_pools"][0] = "zz!".into()),
        ),
        (
            "a bucket past the histogram's range",
            "server_pools[2]",
            Box::new(move |v| {
                v["strategies"][0]["server_pools"][2] = packed(&[0, 1, 0x80, 0x90, 0x02, 1])
            }),
        ),
        (
            "a pool whose total is not its counts'",
            "server_pools[2]",
            Box::new(move |v| v["strategies"][0]["server_pools"][2] = packed(&[0, 9, 0, 1])),
        ),
        (
            "a pool inflating to 64 MB",
            "server_pools[0]",
            Box::new(move |v| v["strategies"][0]["server_pools"][0] = packed(&vec![0u8; 64 << 20])),
        ),
        (
            "a distribution changed",
            "distributions[0]",
            Box::new(move |v| {
                v["strategies"][0]["distributions"][0][3] = packed(&[0xff, 0xff, 0x04, 1])
            }),
        ),
        (
            "a pool missing",
            "7 server pools for 8 servers",
            Box::new(|v| {
                v["strategies"][0]["server_pools"]
                    .as_array_mut()
                    .unwrap()
                    .pop();
                for run in v["strategies"][0]["distributions"].as_array_mut().unwrap() {
                    run.as_array_mut().unwrap().pop();
                }
            }),
        ),
        (
            "format 5's field in format 6",
            "another format",
            Box::new(|v| v["strategies"][0]["cdfs"] = serde_json::json!([[[[0, 1]]], [[[0, 1]]]])),
        ),
    ];
    for (what, field, edit) in edits {
        let mut v = json.clone();
        edit(&mut v);
        std::fs::write(&file, sealed(&v)).unwrap();
        let err = refused(&["merge", &d("shards"), "--out", &d("merged")]);
        assert!(
            err.contains("fix:") && err.contains("shard-1-of-2.json") && err.contains(field),
            "{what}: {err}"
        );
    }
}

/// Issue 14: `merge` reads regular files only, of at most 16 GiB, each once; a folder, a
/// FIFO or a device named like a shard, a file too large, and two files of one shard are
/// refused naming them (exit 2), before anything blocks or is read whole. Shards of format
/// 6 (no checksum) still merge, into the same files.
#[test]
fn merge_reads_regular_shard_files_once_each() {
    let tmp = tempfile::tempdir().unwrap();
    let s = short_scenario(tmp.path());
    let d = |n: &str| tmp.path().join(n).to_string_lossy().into_owned();
    two_shards(&s, &d("shards"));
    lbsim(&["merge", &d("shards"), "--out", &d("reference")]);
    let reference = |out: &str| {
        for f in ["summary.csv", "servers.csv", "timeseries.csv"] {
            let a = std::fs::read(tmp.path().join("reference").join(f)).unwrap();
            let b = std::fs::read(tmp.path().join(out).join(f)).unwrap();
            assert!(a == b, "{f} differs");
        }
    };
    // A folder passed twice, and a file with its folder: each file read once.
    lbsim(&["merge", &d("shards"), &d("shards"), "--out", &d("twice")]);
    reference("twice");
    let one = tmp.path().join("shards/shard-1-of-2.json");
    let one_path = one.to_string_lossy().into_owned();
    lbsim(&["merge", &d("shards"), &one_path, "--out", &d("twice")]);
    let bad = tmp.path().join("bad");
    let reset = || {
        let _ = std::fs::remove_dir_all(&bad);
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::copy(
            tmp.path().join("shards/shard-0-of-2.json"),
            bad.join("shard-0-of-2.json"),
        )
        .unwrap();
    };
    let merge_bad = || refused(&["merge", &d("bad"), "--out", &d("merged")]);
    // A copy of a shard under another name.
    reset();
    std::fs::copy(&one, bad.join("shard-1-of-2.json")).unwrap();
    std::fs::copy(&one, bad.join("shard-1-of-2-copy.json")).unwrap();
    let err = merge_bad();
    assert!(
        err.contains("appears twice")
            && err.contains("shard-1-of-2-copy.json")
            && err.contains("fix:"),
        "{err}"
    );
    // A folder named like a shard.
    reset();
    std::fs::create_dir(bad.join("shard-1-of-2.json")).unwrap();
    let err = merge_bad();
    assert!(
        err.contains("shard-1-of-2.json` is a folder") && err.contains("fix:"),
        "{err}"
    );
    // A file larger than the limit (sparse: nothing is written).
    reset();
    std::fs::File::create(bad.join("shard-1-of-2.json"))
        .unwrap()
        .set_len(lbsim::shard::MAX_SHARD_BYTES + 1)
        .unwrap();
    let err = merge_bad();
    assert!(
        err.contains("above the limit") && err.contains("more shards"),
        "{err}"
    );
    #[cfg(unix)]
    {
        // A FIFO (opening it would block until a writer comes) and a link to a device
        // (which never ends); a link to a shard file is followed.
        for (what, make) in [
            ("fifo", "mkfifo"),
            ("device", "/dev/zero"),
            ("link", "shard"),
        ] {
            reset();
            let path = bad.join("shard-1-of-2.json");
            match make {
                "mkfifo" => {
                    assert!(
                        Command::new("mkfifo")
                            .arg(&path)
                            .status()
                            .unwrap()
                            .success()
                    )
                }
                "shard" => std::os::unix::fs::symlink(&one, &path).unwrap(),
                device => std::os::unix::fs::symlink(device, &path).unwrap(),
            }
            if what == "link" {
                lbsim(&["merge", &d("bad"), "--out", &d("linked")]);
                reference("linked");
            } else {
                let err = merge_bad();
                assert!(err.contains("FIFO, socket or device"), "{what}: {err}");
            }
        }
    }
    // Format 6: the same contents without the checksum.
    reset();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&one).unwrap()).unwrap();
    v["format"] = "lbsim-shard-6".into();
    std::fs::write(bad.join("shard-1-of-2.json"), v.to_string()).unwrap();
    let err = merge_bad();
    assert!(
        err.contains("a checksum in a file of format `lbsim-shard-6`"),
        "{err}"
    );
    v.as_object_mut().unwrap().remove("checksum");
    std::fs::write(bad.join("shard-1-of-2.json"), v.to_string()).unwrap();
    lbsim(&["merge", &d("bad"), "--out", &d("six")]);
    reference("six");
    // Format 7 without its checksum.
    v["format"] = "lbsim-shard-7".into();
    std::fs::write(bad.join("shard-1-of-2.json"), v.to_string()).unwrap();
    let err = merge_bad();
    assert!(
        err.contains("checksum") && err.contains("shard-1-of-2.json"),
        "{err}"
    );
}
