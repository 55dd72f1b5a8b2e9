//! Shards: a deterministic slice of a run's replications (`--shard K/N` runs indices `i`
//! with `i % N == K`), saved as a JSON file, and [`merge`] which combines shards into the
//! [`RunResults`] a single run would have produced — bit for bit, since per-replication
//! figures are stored as exact f64 bits and merged in replication order, histogram
//! counts add the same in any order, and each replication's compact distributions (for the
//! intervals of pooled percentiles) are stored whole.
//!
//! Also [`combine`], which appends the results of further replications (used by
//! sequential stopping).
//!
//! Format `lbsim-shard-6` (2026-11-28) writes each server's pool and each replication's
//! distributions compactly (`codec`: varints, zlib, base64), where format 5 wrote a
//! whole histogram per server (V2 + deflate, hex) and the distributions as JSON pairs.
//! Shards of format 5 are still read, and merge with shards of format 6: the same counts.
//! At 256 servers and 4 strategies, 4 replications of 10^6 requests in 2 shards take
//! 13.4 MB instead of 59.0 MB, and `lbsim merge` 0.55× the CPU time and 170 MB instead of
//! 263 MB (it now reads, decodes and adds one shard at a time; 4 shards: 0.50×, 136 MB
//! instead of 278 MB); see benches/README.md, "Shard files compact".
//!
//! Format `lbsim-shard-7` (2026-11-28) adds the file's `checksum` ([`ShardFile::digest`]):
//! an edit of any value is refused, the plain JSON numbers (metrics, servers' figures,
//! batches, the time series) included, which no check could tell from measured ones.
//! Formats 6 and 5 are still read, without. [`ShardFile::read`] takes regular files only,
//! of at most [`MAX_SHARD_BYTES`]; `tests/fuzz.rs` merges mutants of shard files.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::metrics::{
    MAX_SERVER_HISTOGRAMS, Metric, PerMetric, Pooled, PooledSource, RunSummary, SOURCE_SERVERS,
    ServerPool, ServerSummary, latency_histogram,
};
use crate::runner::{RunResults, StrategyResult};
use crate::scenario::cost::MAX_REPLICATIONS;
use crate::sim::{Counts, Sample, Trace};
use crate::stats::quantile::Cdf;
use crate::time::Nanos;

mod codec;

/// An error reading, writing or merging shards.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// `--shard` is not `K/N` with `K < N`.
    #[error(
        "--shard `{0}`: expected K/N with 0 ≤ K < N, e.g. 0/4\n  fix: number shards from 0, as Slurm's SLURM_ARRAY_TASK_ID and Kubernetes' JOB_COMPLETION_INDEX do"
    )]
    BadSpec(String),
    /// A file could not be read or written.
    #[error("cannot access `{}`: {cause}\n  fix: check the path and permissions", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// A file is not a shard file.
    #[error("`{}` is not an lbsim shard file: {message}\n  fix: pass folders holding shard-K-of-N.json files written by `lbsim run --shard`", .path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Shards of different runs.
    #[error(
        "shards do not belong to the same run: {0}\n  fix: merge shards written with the same scenario, seed, --replications and N"
    )]
    Mismatch(String),
    /// A shard file's path (named like one in a folder, or passed) is not a regular file.
    #[error(
        "`{}` is {what}, not a shard file (a regular file)\n  fix: pass folders holding shard-K-of-N.json files, or the files themselves; move anything else named like one out of the folder",
        .path.display()
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is: a folder, a FIFO, a device.
        what: &'static str,
    },
    /// A shard file larger than any shard lbsim writes.
    #[error(
        "`{}` is {bytes} bytes, above the limit of {MAX_SHARD_BYTES} bytes (16 GiB) for a shard file: it is not one lbsim wrote, or holds too many replications\n  fix: rerun the run in more shards (`--shard K/N` with a larger N: each shard holds 1/N of the replications)",
        .path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (at least; it may still be growing).
        bytes: u64,
    },
    /// Two files hold the same shard.
    #[error(
        "shard {index} of {count} appears twice: in `{}` and in `{}`\n  fix: keep one of them (a copy of a shard, or the same shard from two runs)",
        .first.display(),
        .again.display()
    )]
    Duplicate {
        /// Shard index.
        index: u32,
        /// Number of shards.
        count: u32,
        /// The file read first.
        first: PathBuf,
        /// The other.
        again: PathBuf,
    },
    /// No shard found.
    #[error(
        "no shard-*-of-*.json file in {0}\n  fix: pass the folders that `lbsim run --shard K/N --out DIR` wrote to"
    )]
    Empty(String),
}

/// The format of shard files (`format` field). Version 2 added the scenario fingerprint,
/// version 3 the per-replication distributions of pooled percentiles, version 4
/// replication 0's time series, version 5 its request counts per interval, version 6
/// the compact server pools and distributions ([`ENCODING`]), version 7 the file's
/// `checksum` ([`ShardFile::digest`]).
pub const FORMAT: &str = "lbsim-shard-7";
/// The previous format, still read: format 7 without its checksum.
pub const FORMAT_6: &str = "lbsim-shard-6";
/// The format before, still read: each server's pool as a histogram in `pooled`, the
/// distributions as pairs in `cdfs`; no checksum.
pub const FORMAT_5: &str = "lbsim-shard-5";
/// What a shard file of [`FORMAT`] says of its compact fields (`encoding` field), for a
/// reader without lbsim.
pub const ENCODING: &str = "distributions and server_pools: base64 (RFC 4648, padded) of zlib (RFC 1950) of LEB128 varints. A distribution: per entry, buckets skipped since the previous one (or bucket 0), then its count. A server pool (latency histogram bucket counts, 1 ns, 3 significant digits): form, total, then form 0: per bucket with a count, buckets skipped since the previous one (or index 0), then its count; form 1: the count of every index from 0 to the last with one. pooled: response and waiting times, HdrHistogram V2 + deflate, hex. checksum: CRC-32 (IEEE), 8 lowercase hex digits, of this file's JSON without the checksum field as lbsim writes it (the fields in this order, no whitespace).";
/// Longest pooled histogram (hex) or compact field (base64) a shard may hold (16 MB of
/// text).
const MAX_HISTOGRAM_HEX: usize = 16 << 20;
/// Largest shard file read (16 GiB), checked before reading it (and its reading stops
/// there, should it grow meanwhile). A shard's text grows with its replications, each
/// strategy's replication holding its servers' 7 figures as f64 bits in decimal (at most
/// 7 × 20 digits, 149 bytes with separators): one replication at the format's limits,
/// 100,000 servers and 1,000 strategies, takes 14.9 GB, plus some 5 kB of metrics and
/// batches and 2 distributions (a few kB) per strategy, so 16 GiB (17.2 GB) holds it, and any
/// run can be sharded into files within the bound (the error says so). Beyond the
/// servers' figures, text is bounded per field (`MAX_HISTOGRAM_HEX`, inflated at most
/// `codec::MAX_INFLATED`). For scale: the largest shard a run within the default
/// `--max-memory` (4 GB, which counts 64 bytes a server per finished replication) writes is
/// about 10 GB, and 4 strategies × 2 replications at 256 servers take 6.9 MB. The file is
/// read whole and parsed from memory (as before), so the bound is also the memory its
/// text may take.
pub const MAX_SHARD_BYTES: u64 = 16 << 30;

/// `K/N`: this process runs shard `K` of `N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// Shard index, from 0.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl std::str::FromStr for ShardSpec {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<ShardSpec, ShardError> {
        let bad = || ShardError::BadSpec(s.to_string());
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(ShardSpec { index, count })
    }
}

impl ShardSpec {
    /// The replication indices of this shard among `0..replications`.
    pub fn indices(&self, replications: u32) -> Vec<u64> {
        (0..u64::from(replications))
            .filter(|i| i % u64::from(self.count) == u64::from(self.index))
            .collect()
    }

    /// Whether replication `i` belongs to this shard.
    pub fn owns(&self, i: u64) -> bool {
        i % u64::from(self.count) == u64::from(self.index)
    }

    /// File name of this shard.
    pub fn file_name(&self) -> String {
        format!("shard-{}-of-{}.json", self.index, self.count)
    }
}

/// What a shard file holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// Scenario name.
    pub scenario: String,
    /// [`crate::scenario::Scenario::fingerprint`] of the scenario the shard ran: `merge`
    /// refuses a scenario edited since.
    pub fingerprint: String,
    /// Scenario file as given on the command line (for `merge` to reload it).
    pub scenario_path: PathBuf,
    /// Seed.
    pub seed: u64,
    /// Replications of the whole run.
    pub replications: u32,
    /// This shard's index.
    pub shard: u32,
    /// Number of shards.
    pub shards: u32,
    /// Replications this shard should have run.
    pub requested: u32,
    /// Replication indices that finished, ascending.
    pub finished: Vec<u64>,
    /// Per strategy.
    pub strategies: Vec<ShardStrategy>,
    /// Per strategy, replication 0's time series as recorded while it ran (only in the
    /// shard that ran replication 0, and where it finished), so that `merge` writes the
    /// time series without simulating.
    #[serde(default)]
    pub timeseries: Vec<Option<ShardTrace>>,
    /// [`ENCODING`] (format 6; documentation for other readers, not read).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub encoding: String,
    /// Format 7: [`ShardFile::digest`] of the rest, which [`ShardFile::read`] checks, so
    /// that an edit of any field (the measured figures in plain JSON numbers included) is
    /// refused; whitespace, the order of fields and unknown fields are not part of it.
    /// Last, so that the writer appends it to the text it hashed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checksum: String,
}

/// An `io::Write` that only hashes.
struct Crc(crc32fast::Hasher);

impl std::io::Write for Crc {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A [`Trace`] in a shard file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardTrace {
    /// [`Trace::servers`].
    pub servers: Vec<usize>,
    /// [`Trace::samples`].
    pub samples: Vec<ShardSample>,
    /// [`Trace::every`], in nanoseconds.
    pub every: u64,
    /// [`Trace::counts`].
    pub counts: Vec<Counts>,
    /// [`Trace::after`].
    pub after: Counts,
}

/// A [`Sample`] in a shard file: (time in nanoseconds, queued, in service, in flight).
pub type ShardSample = (u64, Vec<u32>, Vec<u32>, Vec<u32>);

impl ShardTrace {
    fn of(t: &Trace) -> ShardTrace {
        ShardTrace {
            servers: t.servers.clone(),
            samples: t
                .samples
                .iter()
                .map(|s| {
                    (
                        s.time.0,
                        s.queued.clone(),
                        s.in_service.clone(),
                        s.in_flight.clone(),
                    )
                })
                .collect(),
            every: t.every.0,
            counts: t.counts.clone(),
            after: t.after,
        }
    }

    /// The trace, or `None` unless it fits a cluster of `servers` servers (indices in
    /// range and ascending, one value per recorded server in every sample).
    fn trace(&self, servers: usize) -> Option<Trace> {
        let n = self.servers.len();
        let fits = self.servers.iter().all(|&i| i < servers)
            && self.servers.windows(2).all(|w| w[0] < w[1])
            && self
                .samples
                .iter()
                .all(|s| s.1.len() == n && s.2.len() == n && s.3.len() == n)
            && self.every > 0
            && (self.counts.len() as u64).saturating_mul(self.every)
                >= self.samples.last().map_or(0, |s| s.0);
        fits.then(|| Trace {
            servers: self.servers.clone(),
            samples: self
                .samples
                .iter()
                .map(|(t, q, b, f)| Sample {
                    time: Nanos(*t),
                    queued: q.clone(),
                    in_service: b.clone(),
                    in_flight: f.clone(),
                })
                .collect(),
            every: Nanos(self.every),
            counts: self.counts.clone(),
            after: self.after,
        })
    }
}

/// What [`merge`] combines.
#[derive(Clone, Debug)]
pub struct Merged {
    /// The results a single run would have produced.
    pub results: RunResults,
    /// The first shard file (its header describes the run).
    pub head: ShardFile,
    /// Its path.
    pub head_path: PathBuf,
    /// Shards missing, by index.
    pub missing: Vec<u32>,
    /// Per strategy, replication 0's time series from the shard that ran it (`None`
    /// where none did).
    pub timeseries: Vec<Option<Trace>>,
}

/// One strategy in a shard file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardStrategy {
    /// Label.
    pub label: String,
    /// Per finished replication: metric values as f64 bit patterns (exact, NaN-safe).
    pub values: Vec<Vec<u64>>,
    /// Per finished replication and server: the [`ServerSummary`] figures as f64 bits.
    pub servers: Vec<Vec<[u64; 7]>>,
    /// Format 5: per finished replication and pooled source, its compact distribution
    /// ([`Cdf::to_pairs`]). Written empty in format 6: an lbsim of format 5 reads the
    /// file then, and refuses it for its format (naming it) instead of for a missing field.
    #[serde(default)]
    pub cdfs: Vec<Vec<Vec<[u64; 2]>>>,
    /// Per finished replication: its batches ([`RunSummary::batches`]) as f64 bits.
    pub batches: Vec<Vec<[u64; 2]>>,
    /// Format 6: per finished replication and pooled source, its compact distribution
    /// (`codec::encode_cdf`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distributions: Vec<Vec<String>>,
    /// The merged histograms of the response and waiting times (format 5: and then of
    /// each server), V2 + deflate encoded (HdrHistogram's interchange format), in
    /// hexadecimal.
    pub pooled: Vec<String>,
    /// Format 6: each server's pooled response times (`codec::encode_pool`), none
    /// past [`crate::metrics::MAX_SERVER_HISTOGRAMS`] servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_pools: Vec<String>,
}

impl ShardStrategy {
    /// Pooled sources: the two histograms and the servers' pools.
    fn source_count(&self) -> usize {
        self.pooled.len() + self.server_pools.len()
    }

    /// Per finished replication, its number of distributions.
    fn distribution_counts(&self) -> Vec<usize> {
        if self.distributions.is_empty() {
            self.cdfs.iter().map(Vec::len).collect()
        } else {
            self.distributions.iter().map(Vec::len).collect()
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl ShardFile {
    /// The shard file of `results` (the replications of `spec`).
    pub fn new(
        results: &RunResults,
        scenario: &crate::scenario::Scenario,
        replications: u32,
        spec: ShardSpec,
    ) -> ShardFile {
        ShardFile {
            format: FORMAT.into(),
            scenario: scenario.name.clone(),
            fingerprint: scenario.fingerprint(),
            scenario_path: scenario.path.clone(),
            seed: results.seed,
            replications,
            shard: spec.index,
            shards: spec.count,
            requested: results.requested,
            finished: results.finished.clone(),
            strategies: results
                .strategies
                .iter()
                .map(|s| {
                    let encode = |h: &Histogram<u64>| {
                        let mut bytes = Vec::new();
                        // Serialising to memory cannot fail for a valid histogram.
                        let _ = V2DeflateSerializer::new().serialize(h, &mut bytes);
                        hex(&bytes)
                    };
                    let (mut pooled, mut server_pools) = (Vec::new(), Vec::new());
                    for i in 0..s.pooled.len() {
                        match s.pooled.source(i).expect("a pooled source") {
                            PooledSource::Histogram(h) => pooled.push(encode(h)),
                            PooledSource::Server(p) => server_pools.push(codec::encode_pool(p)),
                        }
                    }
                    ShardStrategy {
                        label: s.label.clone(),
                        values: s
                            .runs
                            .iter()
                            .map(|r| r.values.values().map(|v| v.to_bits()).collect())
                            .collect(),
                        servers: s
                            .runs
                            .iter()
                            .map(|r| {
                                r.servers
                                    .iter()
                                    .map(|x| x.as_array().map(f64::to_bits))
                                    .collect()
                            })
                            .collect(),
                        batches: s
                            .runs
                            .iter()
                            .map(|r| r.batches.iter().map(|b| b.map(f64::to_bits)).collect())
                            .collect(),
                        cdfs: Vec::new(),
                        distributions: s
                            .runs
                            .iter()
                            .map(|r| r.cdfs.iter().map(codec::encode_cdf).collect())
                            .collect(),
                        pooled,
                        server_pools,
                    }
                })
                .collect(),
            timeseries: Vec::new(),
            encoding: ENCODING.into(),
            checksum: String::new(),
        }
    }

    /// Whether the pools and distributions are in the compact fields (formats 6 and 7).
    fn compact(&self) -> bool {
        self.format == FORMAT || self.format == FORMAT_6
    }

    /// The checksum of this file as [`ShardFile::write`] writes it without its
    /// `checksum`: CRC-32 of that JSON text, in 8 hex digits. Computed while serialising,
    /// without the text: checking 2 shards of 6.9 and 6.5 MB (256 servers, 4 strategies,
    /// 2 replications each) took 9 ms, +2.2% of their merge's CPU time.
    pub fn digest(&self) -> String {
        if !self.checksum.is_empty() {
            let mut plain = self.clone();
            plain.checksum.clear();
            return plain.digest();
        }
        let mut crc = Crc(crc32fast::Hasher::new());
        // Serialising the structures lbsim reads into a sink cannot fail.
        let _ = serde_json::to_writer(&mut crc, self);
        format!("{:08x}", crc.0.finalize())
    }

    /// Sets `checksum` to [`ShardFile::digest`] (what [`ShardFile::write`] does for
    /// format 7), e.g. to seal a file edited on purpose.
    pub fn seal(&mut self) {
        self.checksum.clear();
        self.checksum = self.digest();
    }

    /// With replication 0's time series of each strategy, by strategy index (see
    /// [`crate::runner::TraceSink::take`]; empty unless this shard ran replication 0).
    pub fn with_timeseries(mut self, traces: &[Option<Trace>]) -> ShardFile {
        self.timeseries = traces
            .iter()
            .map(|t| t.as_ref().map(ShardTrace::of))
            .collect();
        self
    }

    /// Writes the file into `dir` and returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, ShardError> {
        let spec = ShardSpec {
            index: self.shard,
            count: self.shards,
        };
        let path = dir.join(spec.file_name());
        let io = |cause| ShardError::Io {
            path: path.clone(),
            cause,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let format = |e: serde_json::Error| ShardError::Format {
            path: path.clone(),
            message: e.to_string(),
        };
        let text = if self.format == FORMAT {
            // The text without the checksum, hashed, then the checksum appended as its last
            // field: what serialising the file with it writes.
            let mut plain = if self.checksum.is_empty() {
                serde_json::to_string(self)
            } else {
                serde_json::to_string(&ShardFile {
                    checksum: String::new(),
                    ..self.clone()
                })
            }
            .map_err(format)?;
            let crc = crc32fast::hash(plain.as_bytes());
            plain.pop();
            plain + &format!(",\"checksum\":\"{crc:08x}\"}}")
        } else {
            serde_json::to_string(self).map_err(format)?
        };
        // Atomically: a crash or a full disk never leaves a truncated shard to merge.
        crate::report::output::write_atomic(&path, text.as_bytes()).map_err(|e| {
            ShardError::Io {
                path: path.clone(),
                cause: std::io::Error::other(e.to_string()),
            }
        })?;
        Ok(path)
    }

    /// Reads a shard file: a regular file (a symbolic link to one is followed) of at most
    /// [`MAX_SHARD_BYTES`]. A folder, FIFO or device is refused before it is opened
    /// (opening a FIFO blocks until a writer comes; a device such as `/dev/zero` never
    /// ends).
    pub fn read(path: &Path) -> Result<ShardFile, ShardError> {
        use std::io::Read as _;
        let io = |cause| ShardError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(ShardError::NotAFile {
                path: path.to_path_buf(),
                what: if meta.is_dir() {
                    "a folder"
                } else {
                    "a FIFO, socket or device"
                },
            });
        }
        let too_large = |bytes| ShardError::TooLarge {
            path: path.to_path_buf(),
            bytes,
        };
        if meta.len() > MAX_SHARD_BYTES {
            return Err(too_large(meta.len()));
        }
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(meta.len() as usize)
            .map_err(|e| io(std::io::Error::other(e)))?;
        (std::fs::File::open(path).map_err(io)?)
            .take(MAX_SHARD_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_SHARD_BYTES {
            return Err(too_large(bytes.len() as u64));
        }
        // From bytes, not a string: text that is not UTF-8 is a format error naming where,
        // not an I/O error.
        let mut f: ShardFile = serde_json::from_slice(&bytes).map_err(|e| ShardError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        drop(bytes);
        let bad = |message: String| ShardError::Format {
            path: path.to_path_buf(),
            message,
        };
        if f.format != FORMAT && f.format != FORMAT_6 && f.format != FORMAT_5 {
            return Err(bad(format!(
                "unknown format `{}` (this lbsim reads `{FORMAT}`, `{FORMAT_6}` and `{FORMAT_5}`; rerun the shards with it)",
                f.format
            )));
        }
        // Format 7 is checked whole: its plain JSON numbers (each replication's metrics,
        // servers' figures, batches, the time series) carry no check of their own.
        let sum = std::mem::take(&mut f.checksum);
        if f.format == FORMAT {
            let want = f.digest();
            if sum != want {
                return Err(bad(format!(
                    "its checksum is `{sum}`, its contents' `{want}`: the file was changed or corrupted since lbsim wrote it (rerun this shard)"
                )));
            }
        } else if !sum.is_empty() {
            return Err(bad(format!(
                "a checksum in a file of format `{}` (only `{FORMAT}` has one)",
                f.format
            )));
        }
        f.checksum = sum;
        f.check_structure(path)?;
        Ok(f)
    }

    /// Checks every structural field against the others, so that a hand-edited or
    /// corrupted file is refused before anything is allocated from it or indexed by it.
    fn check_structure(&self, path: &Path) -> Result<(), ShardError> {
        let bad = |message: String| {
            Err(ShardError::Format {
                path: path.to_path_buf(),
                message,
            })
        };
        if self.shards == 0 || self.shard >= self.shards {
            return bad(format!(
                "shard {} of {}: need 0 ≤ K < N",
                self.shard, self.shards
            ));
        }
        if self.replications > MAX_REPLICATIONS || self.shards > self.replications.max(1) {
            return bad(format!(
                "{} replications in {} shards: need N ≤ replications ≤ {MAX_REPLICATIONS}",
                self.replications, self.shards
            ));
        }
        let spec = ShardSpec {
            index: self.shard,
            count: self.shards,
        };
        let mine = spec.indices(self.replications);
        if self.requested as usize != mine.len() {
            return bad(format!(
                "requested {} replications, but shard {}/{} of {} has {}",
                self.requested,
                self.shard,
                self.shards,
                self.replications,
                mine.len()
            ));
        }
        let in_shard = |i: u64| i < u64::from(self.replications) && spec.owns(i);
        if !self.finished.iter().all(|&i| in_shard(i))
            || !self.finished.windows(2).all(|w| w[0] < w[1])
        {
            return bad(
                "`finished` must list this shard's replication indices, ascending, once each"
                    .into(),
            );
        }
        if self.strategies.is_empty() {
            return bad("no strategy".into());
        }
        let runs = self.finished.len();
        for s in &self.strategies {
            if s.values.len() != runs || s.servers.len() != runs {
                return bad(format!("strategy `{}`: wrong number of runs", s.label));
            }
            if s.values.iter().any(|v| v.len() != Metric::COUNT) {
                return bad(format!(
                    "strategy `{}`: a run has other than {} metrics",
                    s.label,
                    Metric::COUNT
                ));
            }
            let servers = s.servers.first().map_or(0, Vec::len);
            if s.servers.iter().any(|v| v.len() != servers) {
                return bad(format!(
                    "strategy `{}`: runs have different numbers of servers",
                    s.label
                ));
            }
            // Format 6 keeps the distributions in `distributions` and the servers' pools
            // in `server_pools`; format 5 in `cdfs` and `pooled`.
            let (distributions, legacy) = if self.compact() {
                (s.distributions.len(), s.cdfs.len())
            } else {
                (s.cdfs.len(), s.distributions.len() + s.server_pools.len())
            };
            if distributions != runs || s.batches.len() != runs || legacy != 0 {
                return bad(format!(
                    "strategy `{}`: distributions or batches for other than {runs} runs, or fields of another format than `{}`",
                    s.label, self.format
                ));
            }
            if (self.compact() && s.pooled.len() != SOURCE_SERVERS)
                || (s.distribution_counts().iter()).any(|&n| n != s.source_count())
            {
                return bad(format!(
                    "strategy `{}`: other than {SOURCE_SERVERS} pooled histograms, or distributions per run other than pooled sources",
                    s.label
                ));
            }
            // Per server up to the limit, none past it (as a run pools them).
            let pools = s.source_count().saturating_sub(SOURCE_SERVERS);
            if runs > 0
                && pools
                    != if servers <= MAX_SERVER_HISTOGRAMS {
                        servers
                    } else {
                        0
                    }
            {
                return bad(format!(
                    "strategy `{}`: {pools} server pools for {servers} servers",
                    s.label
                ));
            }
            if (s.pooled.iter().chain(&s.server_pools)).any(|h| h.len() > MAX_HISTOGRAM_HEX)
                || (s.distributions.iter().flatten()).any(|h| h.len() > MAX_HISTOGRAM_HEX)
            {
                return bad(format!(
                    "strategy `{}`: a pooled histogram or distribution is too large",
                    s.label
                ));
            }
        }
        Ok(())
    }

    /// Checks that this shard (read from `path`) ran `scenario` as it is now: same
    /// fingerprint, strategies and servers.
    pub fn check_scenario(
        &self,
        path: &Path,
        scenario: &crate::scenario::Scenario,
        scenario_path: &Path,
    ) -> Result<(), ShardError> {
        let mismatch = |what: String| {
            Err(ShardError::Mismatch(format!(
                "{what}\n  the shards (`{}`, ...) ran `{}` with fingerprint {}, `{}` now has {}: it was edited since, or is another scenario; merge with the scenario file the shards ran (--scenario), or rerun the shards",
                path.display(),
                self.scenario,
                self.fingerprint,
                scenario_path.display(),
                scenario.fingerprint()
            )))
        };
        if self.fingerprint != scenario.fingerprint() {
            return mismatch("the scenario differs from the one the shards ran".into());
        }
        let labels: Vec<String> = scenario.strategies.iter().map(|e| e.label()).collect();
        let ours: Vec<String> = self.strategies.iter().map(|s| s.label.clone()).collect();
        if labels != ours {
            return mismatch(format!("strategies {ours:?}, scenario {labels:?}"));
        }
        let n = scenario.server_count() as usize;
        if let Some(s) = self
            .strategies
            .iter()
            .find(|s| s.servers.iter().any(|v| v.len() != n))
        {
            return mismatch(format!(
                "strategy `{}` has runs without {n} servers",
                s.label
            ));
        }
        Ok(())
    }

    /// The results this shard holds.
    pub fn results(&self, path: &Path) -> Result<RunResults, ShardError> {
        let bad = |message: String| ShardError::Format {
            path: path.to_path_buf(),
            message,
        };
        let mut strategies = Vec::new();
        for s in &self.strategies {
            let (mut histograms, mut servers) = (Vec::new(), Vec::new());
            let field = |what: &str, i: usize, e: String| {
                bad(format!(
                    "strategy `{}`: {what}[{i}]: {e} (the file is corrupted: rerun this shard)",
                    s.label
                ))
            };
            for (i, text) in s.server_pools.iter().enumerate() {
                servers.push(codec::decode_pool(text).map_err(|e| field("server_pools", i, e))?);
            }
            for (i, text) in s.pooled.iter().enumerate() {
                let bytes = unhex(text).ok_or_else(|| bad("histogram is not hex".into()))?;
                codec::check_v2_deflate(&bytes).map_err(|e| field("pooled", i, e))?;
                let h: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut Cursor::new(bytes))
                    .map_err(|e| bad(format!("histogram: {e:?}")))?;
                if i < SOURCE_SERVERS {
                    let mut merged = latency_histogram();
                    merged
                        .add(&h)
                        .map_err(|e| bad(format!("histogram: {e:?}")))?;
                    histograms.push(merged);
                } else {
                    servers.push(
                        ServerPool::from_histogram(&h)
                            .map_err(|e| bad(format!("histogram: {e}")))?,
                    );
                }
            }
            let pooled = Pooled::from_parts(histograms, servers).ok_or_else(|| {
                bad(format!(
                    "strategy `{}`: fewer than {SOURCE_SERVERS} pooled histograms",
                    s.label
                ))
            })?;
            let runs_ok = |n: usize| n == self.finished.len();
            if !runs_ok(s.values.len()) || !runs_ok(s.servers.len()) || !runs_ok(s.batches.len()) {
                return Err(bad(format!("strategy `{}`: wrong number of runs", s.label)));
            }
            let mut runs = Vec::new();
            let distributions: Vec<Vec<Cdf>> = if s.distributions.is_empty() {
                (s.cdfs.iter())
                    .map(|c| c.iter().map(|pairs| Cdf::from_pairs(pairs)).collect())
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad(format!("strategy `{}`: bad distribution", s.label)))?
            } else {
                let mut runs = Vec::with_capacity(s.distributions.len());
                for (k, run) in s.distributions.iter().enumerate() {
                    let decoded = (run.iter())
                        .map(|text| codec::decode_cdf(text))
                        .collect::<Result<Vec<Cdf>, String>>()
                        .map_err(|e| field("distributions", k, e))?;
                    runs.push(decoded);
                }
                runs
            };
            if distributions.len() != self.finished.len() {
                return Err(bad(format!("strategy `{}`: wrong number of runs", s.label)));
            }
            for (((v, sv), cdfs), bt) in (s.values.iter())
                .zip(&s.servers)
                .zip(distributions)
                .zip(&s.batches)
            {
                if cdfs.len() != pooled.len() {
                    return Err(bad(format!(
                        "strategy `{}`: {} distributions per run, {} pooled",
                        s.label,
                        cdfs.len(),
                        pooled.len()
                    )));
                }
                let values = v.iter().map(|&b| f64::from_bits(b)).collect::<Vec<_>>();
                runs.push(RunSummary {
                    values: PerMetric::from_slice(&values).ok_or_else(|| {
                        bad(format!(
                            "strategy `{}`: a run has other than {} metrics",
                            s.label,
                            Metric::COUNT
                        ))
                    })?,
                    servers: sv
                        .iter()
                        .map(|a| ServerSummary::from_array(a.map(f64::from_bits)))
                        .collect(),
                    cdfs,
                    batches: bt.iter().map(|b| b.map(f64::from_bits)).collect(),
                    // Phases feed only the live verdict, which never reads shards.
                    phases: Vec::new(),
                });
            }
            strategies.push(StrategyResult {
                label: s.label.clone(),
                runs,
                pooled,
                unstable: None,
                fits: Default::default(),
            });
        }
        Ok(RunResults {
            seed: self.seed,
            requested: self.requested,
            finished: self.finished.clone(),
            strategies,
        })
    }
}

/// Combines results of disjoint replication sets of the same scenario and seed: runs
/// sorted by replication index, histograms added, `requested` summed. Stability is the
/// first part's: call [`crate::stability::assess`] on the result.
pub fn combine(parts: Vec<RunResults>) -> RunResults {
    let mut parts = parts.into_iter();
    let Some(mut all) = parts.next() else {
        return RunResults {
            seed: 0,
            requested: 0,
            finished: Vec::new(),
            strategies: Vec::new(),
        };
    };
    for part in parts {
        absorb(&mut all, part);
    }
    sort_runs(&mut all);
    for s in &mut all.strategies {
        s.fits = Default::default();
    }
    all
}

/// Appends `part`'s runs after `all`'s (moved, not copied: until 2026-11-28 every run
/// was cloned, its distributions included) and adds its pools; [`sort_runs`] then puts
/// them in replication order.
fn absorb(all: &mut RunResults, part: RunResults) {
    all.requested += part.requested;
    all.finished.extend(&part.finished);
    for (s, o) in all.strategies.iter_mut().zip(part.strategies) {
        s.pooled.add(&o.pooled);
        s.runs.extend(o.runs);
    }
}

/// Sorts the runs by replication index (stably: runs of one index keep their order).
fn sort_runs(r: &mut RunResults) {
    let mut order: Vec<usize> = (0..r.finished.len()).collect();
    order.sort_by_key(|&k| r.finished[k]);
    r.finished = order.iter().map(|&k| r.finished[k]).collect();
    for s in &mut r.strategies {
        let mut runs: Vec<Option<RunSummary>> =
            std::mem::take(&mut s.runs).into_iter().map(Some).collect();
        s.runs = (order.iter())
            .filter_map(|&k| runs.get_mut(k).and_then(Option::take))
            .collect();
    }
}

/// Reads every `shard-*-of-*.json` in `dirs` (or the files themselves), checks they
/// belong to one run, and merges them. Returns the merged results, a shard file (for the
/// scenario path and totals) and the indices of shards that are missing.
pub fn merge(dirs: &[PathBuf]) -> Result<Merged, ShardError> {
    let mut files = Vec::new();
    for d in dirs {
        // Anything but a folder is taken as a shard file ([`ShardFile::read`] refuses what
        // is not a regular file).
        if !d.is_dir() {
            files.push(d.clone());
            continue;
        }
        let entries = std::fs::read_dir(d).map_err(|cause| ShardError::Io {
            path: d.clone(),
            cause,
        })?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("shard-") && name.ends_with(".json") {
                files.push(e.path());
            }
        }
    }
    files.sort();
    // A file reached twice (a folder passed twice, a file and its folder, a symbolic link
    // to a shard beside it) is read once; two files holding one shard are refused below.
    let mut canonical = std::collections::BTreeSet::new();
    files.retain(|f| canonical.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    if files.is_empty() {
        return Err(ShardError::Empty(
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    // One shard at a time: each is read, checked, decoded and added, then dropped, so
    // that merging N shards holds two files' pools, not N.
    let head = ShardFile::read(&files[0])?;
    // A map, not a vector of N entries: N comes from the file.
    let mut seen = std::collections::BTreeMap::new();
    let mut all: Option<RunResults> = None;
    let mut timeseries = Vec::new();
    for (k, path) in files.iter().enumerate() {
        let read;
        let s = if k == 0 {
            &head
        } else {
            read = ShardFile::read(path)?;
            &read
        };
        let labels = |f: &ShardFile| {
            f.strategies
                .iter()
                .map(|x| x.label.clone())
                .collect::<Vec<_>>()
        };
        if s.scenario != head.scenario
            || s.seed != head.seed
            || s.replications != head.replications
            || s.shards != head.shards
            || s.fingerprint != head.fingerprint
            || labels(s) != labels(&head)
            || (s.strategies.iter().map(ShardStrategy::source_count))
                .ne(head.strategies.iter().map(ShardStrategy::source_count))
            || (s.strategies.iter().zip(&head.strategies)).any(|(a, b)| {
                (a.servers.first().map(Vec::len))
                    .zip(b.servers.first().map(Vec::len))
                    .is_some_and(|(a, b)| a != b)
            })
        {
            return Err(ShardError::Mismatch(format!(
                "`{}` is {} seed {} ({} replications in {} shards), the first (`{}`) is {} seed {} ({} in {}), or their strategies or servers differ",
                path.display(),
                s.scenario,
                s.seed,
                s.replications,
                s.shards,
                files[0].display(),
                head.scenario,
                head.seed,
                head.replications,
                head.shards
            )));
        }
        if let Some(first) = seen.insert(s.shard, path) {
            return Err(ShardError::Duplicate {
                index: s.shard,
                count: s.shards,
                first: first.clone(),
                again: path.clone(),
            });
        }
        let part = s.results(path)?;
        match &mut all {
            None => all = Some(part),
            Some(all) => absorb(all, part),
        }
        if !s.timeseries.is_empty() {
            let servers = s.strategies[0].servers.first().map_or(0, Vec::len);
            let bad = || ShardError::Format {
                path: path.clone(),
                message: "`timeseries` does not fit the shard's strategies and servers".into(),
            };
            if s.timeseries.len() != s.strategies.len() {
                return Err(bad());
            }
            timeseries = s
                .timeseries
                .iter()
                .map(|t| {
                    t.as_ref()
                        .map(|t| t.trace(servers).ok_or_else(bad))
                        .transpose()
                })
                .collect::<Result<_, _>>()?;
        }
    }
    let missing = (0..head.shards).filter(|k| !seen.contains_key(k)).collect();
    let mut results = combine(all.into_iter().collect());
    results.requested = head.replications;
    Ok(Merged {
        results,
        head,
        head_path: files[0].clone(),
        missing,
        timeseries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_slice() {
        let s: ShardSpec = "1/3".parse().unwrap();
        assert_eq!(s.indices(8), vec![1, 4, 7]);
        assert!("3/3".parse::<ShardSpec>().is_err());
        assert!("x".parse::<ShardSpec>().is_err());
        let e = "0/0".parse::<ShardSpec>().unwrap_err().to_string();
        assert!(e.contains("fix:"), "{e}");
        assert_eq!(s.file_name(), "shard-1-of-3.json");
    }

    /// A format 5 shard of `six`'s results, as lbsim wrote them until 2026-11-28: each
    /// server's pool as the histogram it stands for in `pooled`, the distributions as
    /// pairs in `cdfs`.
    fn format_5(six: &ShardFile, results: &RunResults) -> ShardFile {
        let mut f = six.clone();
        (f.format, f.encoding) = (FORMAT_5.into(), String::new());
        for (s, r) in f.strategies.iter_mut().zip(&results.strategies) {
            s.cdfs = (r.runs.iter())
                .map(|run| run.cdfs.iter().map(Cdf::to_pairs).collect())
                .collect();
            s.distributions.clear();
            s.server_pools.clear();
            for i in SOURCE_SERVERS..r.pooled.len() {
                let Some(PooledSource::Server(p)) = r.pooled.source(i) else {
                    panic!("a server's pool");
                };
                let mut bytes = Vec::new();
                V2DeflateSerializer::new()
                    .serialize(&p.histogram(), &mut bytes)
                    .unwrap();
                s.pooled.push(hex(&bytes));
            }
        }
        f
    }

    /// The results of a run written as a shard of format 7, 6 (the same without its
    /// checksum) and 5 read back as they were, field for field (the runs bit for bit, the
    /// pools equal); formats 6 and 7 are the smaller, and a file holding fields of the other
    /// format is refused.
    #[test]
    fn shards_of_formats_5_to_7_read_back_the_results() {
        use crate::runner::{RunOptions, run};
        use crate::testing;
        let rest = testing::servers("s", 3, "", &testing::exponential(0.01))
            + &testing::kinds(&["round_robin", "random"]);
        let scenario = testing::scenario("duration = 3\nwarmup = 0.5", 240.0, &rest);
        let opts = RunOptions {
            replications: Some(3),
            ..Default::default()
        };
        let results = run(&scenario, &opts).expect("run");
        let spec = ShardSpec { index: 0, count: 1 };
        let six = ShardFile::new(&results, &scenario, 3, spec);
        let five = format_5(&six, &results);
        let legacy = ShardFile {
            format: FORMAT_6.into(),
            ..six.clone()
        };
        let tmp = tempfile::tempdir().unwrap();
        let mut sizes = Vec::new();
        for (name, f) in [("7", &six), ("5", &five), ("6", &legacy)] {
            let path = f.write(&tmp.path().join(name)).unwrap();
            sizes.push(std::fs::metadata(&path).unwrap().len());
            let back = ShardFile::read(&path).unwrap().results(&path).unwrap();
            assert_eq!(back.finished, results.finished);
            for (b, r) in back.strategies.iter().zip(&results.strategies) {
                assert_eq!(format!("{:?}", b.runs), format!("{:?}", r.runs), "{name}");
                assert!(b.pooled == r.pooled, "format {name}: the pools");
            }
        }
        assert!(sizes[0] < sizes[1], "{sizes:?}");
        // Fields of format 5 in a file of format 6, and the other way round.
        let mut mixed = six.clone();
        mixed.strategies[0].cdfs = five.strategies[0].cdfs.clone();
        let mut other = five.clone();
        other.strategies[1].server_pools = six.strategies[1].server_pools.clone();
        let mut more = six.clone();
        more.strategies[0]
            .pooled
            .push(five.strategies[0].pooled[2].clone());
        for (what, f) in [("mixed", mixed), ("other", other), ("more", more)] {
            let path = f.write(&tmp.path().join(what)).unwrap();
            let e = ShardFile::read(&path).unwrap_err().to_string();
            assert!(
                e.contains("fix:") && e.contains("strategy `"),
                "{what}: {e}"
            );
        }
    }

    #[test]
    fn hex_round_trips() {
        let b = vec![0u8, 1, 254, 255, 16];
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert!(unhex("abc").is_none());
    }
}
