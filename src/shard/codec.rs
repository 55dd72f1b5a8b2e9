//! The compact fields of shard files (formats `lbsim-shard-6` and `-7`): each server's pooled
//! response times ([`ServerPool`]) and each replication's compact distributions ([`Cdf`]),
//! as text that JSON holds without escapes.
//!
//! A field is a stream of LEB128 varints, zlib-compressed (its Adler-32 checksum catches
//! a corrupted field), in standard padded base64:
//! - a server pool: its form, its total, then its counts. Form 0 ("gaps"): per bucket with
//!   a count, in increasing index order, the number of empty buckets since the previous
//!   one (or since index 0), then its count (at least 1). Form 1 ("dense"): the count of
//!   every index from 0 to the last with a count (which is not 0). The writer takes the
//!   shorter stream: gaps while few buckets hold a count (a short run), dense once most
//!   buckets up to the largest do (a long one).
//! - a distribution: per entry of [`Cdf::to_pairs`], the number of buckets skipped since
//!   the previous entry (or since bucket 0), then the values in its bucket (the
//!   difference of cumulative counts): the encoding a [`Cdf`] holds in memory.
//!
//! Reading trusts nothing: base64, the checksum, the inflated length (at most
//! [`MAX_INFLATED`], so a small field cannot inflate to gigabytes), every varint (no
//! truncation, no bit past 64), indices in a latency histogram's range, counts and totals
//! without overflow, and the total against the counts. Each failure is an error naming
//! what is wrong, never a panic.
//!
//! Against format 5 (whole histograms V2 + deflate in hex, distributions as JSON pairs of
//! bucket and cumulative count), 4 strategies at 256 servers, 2 replications a shard:
//! of 10^6 requests, the distributions 23.3 MB → 1.9 MB and the server pools 5.5 MB →
//! 4.0 MB a shard; of 4·10^4, 3.2 MB → 0.45 MB and 0.92 MB → 0.55 MB. A server pool
//! shrinks least: V2 + deflate was near the limit already (a long run's pool holds some
//! 5,000 buckets of count 1 or 2 scattered over 15,000: the gaps carry the information;
//! `xz` does 10% better than zlib on them), and the gain is mostly base64 for hex. See
//! benches/README.md ("Shard files compact").

use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flate2::write::ZlibEncoder;
use flate2::{Compression, Decompress, FlushDecompress, Status};

use crate::metrics::ServerPool;
use crate::stats::quantile::Cdf;

/// Largest stream a field may inflate to: a pool of every bucket of a latency histogram
/// with counts past 2^63 takes 35 k × 10 bytes dense (35 k × 11 as gaps), a distribution of
/// every bucket 65 k × 11 bytes (one of u64 values has at most 7,424), so 1 MB is past any
/// field lbsim writes. A field is at most this much memory, whatever its text; a whole
/// file is not bounded beyond that (a long run's fields inflate 1.4–2.6× their text, but a
/// legitimate field of repeated entries over 100×, so no ratio is safe to require).
pub const MAX_INFLATED: u64 = 1 << 20;

/// zlib's compression level: a shard of 4 strategies × 2 replications of 10^6 requests at
/// 256 servers is 6.77 MB at level 6 (zlib's default), 6.89 MB at 4, 7.22 MB at 2 and
/// 7.94 MB at 1; at 6 its `lbsim run --shard` took 1.04× the CPU time of format 5's, at 4
/// 0.87× (3 rounds each).
const LEVEL: u32 = 4;

/// Form of a pool's stream: gaps and counts of the buckets with a count.
const GAPS: u64 = 0;
/// Form of a pool's stream: a count per index from 0.
const DENSE: u64 = 1;

fn put_varint(bytes: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        bytes.push((v as u8) | 0x80);
        v >>= 7;
    }
    bytes.push(v as u8);
}

/// Bytes of `v` as a varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads varints strictly: a truncated one or one past 64 bits is an error.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err("truncated number".into());
            };
            self.at += 1;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err("number past 2^64".into());
            }
            v |= bits << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("number past 2^64".into())
    }
}

/// `bytes` zlib-compressed, in base64.
fn pack(bytes: &[u8]) -> String {
    let mut z = ZlibEncoder::new(
        Vec::with_capacity(bytes.len() / 2 + 16),
        Compression::new(LEVEL),
    );
    // Writing to memory cannot fail.
    let _ = z.write_all(bytes);
    STANDARD.encode(z.finish().unwrap_or_default())
}

/// The inverse of [`pack`]: the whole zlib stream, its checksum checked, nothing after it,
/// at most [`MAX_INFLATED`] bytes.
fn unpack(text: &str) -> Result<Vec<u8>, String> {
    let z = STANDARD
        .decode(text)
        .map_err(|e| format!("not base64 ({e})"))?;
    inflate(&z)
}

/// A zlib stream inflated: the whole stream, its checksum checked, nothing after it, at
/// most [`MAX_INFLATED`] bytes.
fn inflate(z: &[u8]) -> Result<Vec<u8>, String> {
    let corrupt = |e: &dyn std::fmt::Display| format!("not zlib data, or corrupted ({e})");
    let mut d = Decompress::new(true);
    let mut out = Vec::with_capacity((z.len() * 4).min(MAX_INFLATED as usize));
    loop {
        if out.len() == out.capacity() {
            if out.len() as u64 > MAX_INFLATED {
                return Err(format!("inflates past {MAX_INFLATED} bytes"));
            }
            out.reserve_exact(out.len().clamp(1024, MAX_INFLATED as usize + 1 - out.len()));
        }
        let (read, written) = (d.total_in(), d.total_out());
        let rest = z.get(read as usize..).unwrap_or_default();
        match d.decompress_vec(rest, &mut out, FlushDecompress::None) {
            Ok(Status::StreamEnd) => break,
            Ok(_) if d.total_in() == read && d.total_out() == written => {
                return Err(corrupt(&"truncated"));
            }
            Ok(_) => {}
            Err(e) => return Err(corrupt(&e)),
        }
    }
    if out.len() as u64 > MAX_INFLATED {
        return Err(format!("inflates past {MAX_INFLATED} bytes"));
    }
    if d.total_in() != z.len() as u64 {
        return Err(corrupt(&"bytes after its end"));
    }
    Ok(out)
}

/// Checks a histogram in HdrHistogram's V2 + deflate form (a shard's `pooled`) before
/// it is read: its cookie, its length, its zlib stream whole (checksum checked, at most
/// [`MAX_INFLATED`] bytes, nothing after it) and holding exactly the V2 histogram its
/// header announces. HdrHistogram's reader checks none of these but the cookie: it
/// inflates without the checksum and reads the counts its header announces, so a changed
/// or duplicated byte in the stream was read as other counts (found by the shard fuzzer,
/// `tests/fuzz.rs`, in files sealed after the edit).
pub fn check_v2_deflate(bytes: &[u8]) -> Result<(), String> {
    const COOKIE: [u8; 4] = [0x1c, 0x84, 0x93, 0x14];
    /// A V2 histogram's header: cookie, payload length, normalizing offset, significant
    /// digits, lowest and highest trackable values, conversion ratio.
    const HEADER: usize = 40;
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if bytes.len() < 8 || bytes[..4] != COOKIE {
        return Err("not a V2 + deflate histogram (its cookie)".into());
    }
    if be(&bytes[4..8]) != bytes.len() - 8 {
        return Err(format!(
            "its length says {} bytes, it holds {}",
            be(&bytes[4..8]),
            bytes.len() - 8
        ));
    }
    let inflated = inflate(&bytes[8..])?;
    if inflated.len() < HEADER || be(&inflated[4..8]) != inflated.len() - HEADER {
        return Err("its counts are not the length its header says".into());
    }
    Ok(())
}

/// A server pool as a shard field.
pub fn encode_pool(pool: &ServerPool) -> String {
    let counts: Vec<(usize, u64)> = pool.iter().collect();
    // Stream lengths of both forms (after the form and total): each bucket's gap and
    // count, or every count up to the last.
    let (mut gaps, mut dense, mut next) = (0, 0, 0);
    for &(i, n) in &counts {
        gaps += varint_len((i - next) as u64) + varint_len(n);
        dense += (i - next) + varint_len(n);
        next = i + 1;
    }
    let mut bytes = Vec::with_capacity(gaps.min(dense) + 12);
    let form = if dense < gaps { DENSE } else { GAPS };
    put_varint(&mut bytes, form);
    put_varint(&mut bytes, pool.len());
    next = 0;
    for (i, n) in counts {
        if form == GAPS {
            put_varint(&mut bytes, (i - next) as u64);
        } else {
            bytes.resize(bytes.len() + (i - next), 0);
        }
        put_varint(&mut bytes, n);
        next = i + 1;
    }
    pack(&bytes)
}

/// A server pool read from a shard field.
pub fn decode_pool(text: &str) -> Result<ServerPool, String> {
    let bytes = unpack(text)?;
    let mut r = Reader::new(&bytes);
    let form = r.varint()?;
    if form > DENSE {
        return Err(format!("unknown form {form} (0: gaps, 1: dense)"));
    }
    let total = r.varint()?;
    let mut counts = Vec::new();
    let (mut next, mut sum, mut last) = (0u64, 0u64, 1u64);
    while !r.done() {
        let i = if form == GAPS {
            next.checked_add(r.varint()?).ok_or("index past 2^64")?
        } else {
            next
        };
        let n = r.varint()?;
        if form == GAPS && n == 0 {
            return Err("a bucket listed with no count".into());
        }
        if i >= ServerPool::BUCKETS as u64 {
            return Err(format!(
                "bucket {i} past a latency histogram's {}",
                ServerPool::BUCKETS
            ));
        }
        sum = sum.checked_add(n).ok_or("counts past 2^64")?;
        if n != 0 {
            counts.push((i as usize, n));
        }
        (next, last) = (i + 1, n);
    }
    if last == 0 {
        return Err("a dense pool ends with an empty bucket".into());
    }
    if sum != total {
        return Err(format!("counts sum to {sum}, the total says {total}"));
    }
    Ok(ServerPool::from_counts(&counts))
}

/// A replication's distribution as a shard field.
pub fn encode_cdf(cdf: &Cdf) -> String {
    let pairs = cdf.to_pairs();
    let mut bytes = Vec::with_capacity(pairs.len() * 3);
    let (mut next, mut below) = (0, 0);
    for [b, c] in pairs {
        put_varint(&mut bytes, b - next);
        put_varint(&mut bytes, c - below);
        (next, below) = (b + 1, c);
    }
    pack(&bytes)
}

/// A replication's distribution read from a shard field.
pub fn decode_cdf(text: &str) -> Result<Cdf, String> {
    let bytes = unpack(text)?;
    let mut r = Reader::new(&bytes);
    let mut pairs = Vec::new();
    let (mut next, mut below) = (0u64, 0u64);
    while !r.done() {
        let b = next
            .checked_add(r.varint()?)
            .filter(|&b| b <= u64::from(u16::MAX))
            .ok_or("a bucket past 2^16")?;
        below = below.checked_add(r.varint()?).ok_or("counts past 2^64")?;
        pairs.push([b, below]);
        next = b + 1;
    }
    Cdf::from_pairs(&pairs).ok_or_else(|| "buckets or counts do not increase".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bucket counts in increasing index order: few and anywhere (a short run: written
    /// as gaps), many in the first octaves (a long one: dense), counts small, past 2^32,
    /// and up to 2^64 − 1.
    fn counts() -> impl Strategy<Value = Vec<(usize, u64)>> {
        let count =
            || prop_oneof![12 => 1u64..300, 1 => (1u64 << 31)..(1u64 << 40), 1 => Just(1u64 << 50)];
        prop_oneof![
            1 => proptest::collection::btree_map(0usize..ServerPool::BUCKETS, count(), 0..300),
            1 => proptest::collection::btree_map(0usize..3000, count(), 0..2500),
            1 => proptest::collection::btree_map(ServerPool::BUCKETS - 3..ServerPool::BUCKETS, count(), 0..3),
        ]
        .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        /// A pool written and read back is the same pool, sparse or dense, with counts past
        /// 2^32; and its text is plain base64.
        #[test]
        fn pools_round_trip(counts in counts(), more in counts()) {
            let mut pool = ServerPool::from_counts(&counts);
            let text = encode_pool(&pool);
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
            let back = decode_pool(&text).unwrap();
            prop_assert_eq!(&back, &pool);
            prop_assert_eq!(back.iter().collect::<Vec<_>>(), counts);
            // Pools added (a dense one, once large) read back as the sum.
            pool.add(&ServerPool::from_counts(&more));
            prop_assert_eq!(&decode_pool(&encode_pool(&pool)).unwrap(), &pool);
        }

        /// A distribution written and read back is the same distribution.
        #[test]
        fn distributions_round_trip(
            values in proptest::collection::btree_map(0u64..(1 << 44), 1u64..1000, 0..3000),
        ) {
            let cdf = Cdf::from_medians(values);
            prop_assert_eq!(decode_cdf(&encode_cdf(&cdf)).unwrap(), cdf);
        }

        /// Any text, any bytes packed, and any field cut short or with a byte changed is
        /// read as a pool or a distribution or refused: never a panic.
        #[test]
        fn hostile_fields_are_refused_or_read(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            text in "[A-Za-z0-9+/=]{0,40}",
            counts in counts(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            for t in [pack(&bytes), text] {
                let _ = decode_pool(&t);
                let _ = decode_cdf(&t);
            }
            let good = encode_pool(&ServerPool::from_counts(&counts));
            let cut = &good[..cut.index(good.len())];
            prop_assert!(decode_pool(cut).is_err(), "cut to {}", cut);
            let mut z = STANDARD.decode(&good).unwrap();
            let at = flip.index(z.len());
            z[at] ^= 0x5a;
            let _ = decode_pool(&STANDARD.encode(&z));
        }
    }

    /// A V2 + deflate histogram is checked whole: its cookie, its length, its zlib
    /// checksum, nothing after its stream.
    #[test]
    fn v2_histograms_are_checked_whole() {
        use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
        let mut h = crate::metrics::latency_histogram();
        for v in [1_000u64, 20_000, 3_000_000] {
            h.record(v).unwrap();
        }
        let mut good = Vec::new();
        V2DeflateSerializer::new().serialize(&h, &mut good).unwrap();
        assert!(check_v2_deflate(&good).is_ok());
        let err = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            edit(&mut b);
            check_v2_deflate(&b).unwrap_err()
        };
        assert!(err(&|b| *b.last_mut().unwrap() ^= 1).contains("corrupted"));
        assert!(err(&|b| b.push(0)).contains("length"));
        assert!(err(&|b| b[0] ^= 1).contains("cookie"));
        assert!(err(&|b| b.truncate(5)).contains("cookie"));
        assert!(
            err(&|b| {
                b.push(0);
                let n = (b.len() - 8) as u32;
                b[4..8].copy_from_slice(&n.to_be_bytes());
            })
            .contains("after its end")
        );
    }

    /// What each check refuses, with an error naming it.
    #[test]
    fn bad_streams_are_refused() {
        let err = |bytes: &[u8]| decode_pool(&pack(bytes)).unwrap_err();
        assert!(err(&[]).contains("truncated"));
        assert!(err(&[0]).contains("truncated"));
        assert!(err(&[0, 1, 0]).contains("truncated"));
        assert!(err(&[0, 2, 0, 1]).contains("sum to 1"));
        assert!(err(&[0, 0, 0, 0]).contains("no count"));
        assert!(err(&[7, 1, 0, 1]).contains("unknown form"));
        assert!(err(&[1, 1, 1, 0]).contains("empty bucket"));
        assert!(err(&[0, 1, 0x80, 0x90, 0x02, 1]).contains("past"));
        let mut far = vec![
            0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ];
        assert!(err(&far).contains("past 2^64"));
        far.truncate(10);
        assert!(err(&far).contains("truncated"));
        assert!(decode_pool("eJw!").unwrap_err().contains("base64"));
        assert!(decode_pool("AAAA").unwrap_err().contains("zlib"));
        // A bomb: a few kB of text inflating past the limit.
        let bomb = pack(&vec![1u8; MAX_INFLATED as usize + 1]);
        assert!(bomb.len() < 10_000);
        let e = decode_pool(&bomb).unwrap_err();
        assert!(e.contains("inflates past"), "{e}");
        // Distributions: a bucket past 2^16, cumulative counts past 2^64.
        let cdf_err = |bytes: &[u8]| decode_cdf(&pack(bytes)).unwrap_err();
        assert!(cdf_err(&[0xff, 0xff, 0x04, 1]).contains("2^16"));
        assert!(
            cdf_err(&[
                0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 1
            ])
            .contains("2^64")
        );
        assert!(cdf_err(&[0, 1, 3]).contains("truncated"));
        // A byte changed (the checksum), bytes after the end, a stream cut short.
        let good = pack(&[0, 3, 5, 1, 7, 2]);
        assert!(decode_pool(&good).is_ok());
        let mut z = STANDARD.decode(&good).unwrap();
        z[4] ^= 1;
        assert!(
            decode_pool(&STANDARD.encode(&z))
                .unwrap_err()
                .contains("corrupted")
        );
        z[4] ^= 1;
        z.push(0);
        assert!(
            decode_pool(&STANDARD.encode(&z))
                .unwrap_err()
                .contains("after its end")
        );
        z.truncate(z.len() - 3);
        assert!(
            decode_pool(&STANDARD.encode(&z))
                .unwrap_err()
                .contains("truncated")
        );
        // The largest counts and last bucket are read.
        let edge = ServerPool::from_counts(&[(0, u64::MAX - 1), (ServerPool::BUCKETS - 1, 1)]);
        assert_eq!(decode_pool(&encode_pool(&edge)).unwrap(), edge);
    }
}
