//! nginx `hash $remote_addr [consistent]` (the upstream hash module,
//! `src/stream/ngx_stream_upstream_hash_module.c`, nginx 1.22). The key is the client's
//! IPv4 address as text.
//!
//! **Without `consistent`** (`ngx_stream_upstream_get_hash_peer`) a pick walks the peers in
//! configuration order with weights:
//!
//! ```text
//! hash += (crc32([rehash] key) >> 16) & 0x7fff     ("compatible with Cache::Memcached";
//! w = hash % Σ weights                              the rehash count, as decimal text,
//! peer = the one whose weight range holds w         prefixes the key from the 2nd try)
//! ```
//!
//! A peer that is down is skipped by hashing again; after 21 tries nginx falls back to
//! its smooth weighted round robin over the peers. `Σ weights` counts every peer, down
//! ones included (`peers->total_weight`). nginx marks a peer down from its passive checks
//! (`max_fails`, `fail_timeout`); here a peer is down when the balancer's view says so.
//!
//! **With `consistent`** (`ngx_stream_upstream_init_chash`, `…_get_chash_peer`) every peer
//! places `160 × weight` points on a ring of 32-bit hashes, whatever its health; point
//! `j` of a peer is `crc32(HOST \0 PORT prev)`, where `HOST` and `PORT` are the text of the
//! peer's `server` line and `prev` the peer's point `j − 1` (0 for the first) as 4
//! little-endian bytes ("compatible with Cache::Memcached::Fast"). The points are sorted
//! and equal hashes kept once. A pick finds the first point at or after `crc32(key)`
//! (wrapping to the first), and walks on point by point past peers that are down; after 21
//! points it falls back to smooth weighted round robin, as above. The ring therefore
//! depends on the servers' addresses: lbsim names server `i` `127.0.0.1:{port_base + i}`,
//! and live mode serves it at exactly that address when it replays `--via nginx`, so the
//! real nginx builds the same ring (see `live::proxy`).
//!
//! **The key.** A connection's client address is [`super::hash::client_address`] of the
//! key lbsim hashes: at connection level (`[connections]`) the key is the connection's
//! slot, and live mode opens that slot's connections from exactly that loopback address,
//! so a replay `--via nginx` (`hash $remote_addr;`) sends every connection where the
//! simulator does. At request level the request key stands for the client.

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::SpecError;
use super::hash::client_address;
use super::ranges::Ranges;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::{Backend, Backends, LOOKAHEAD, PickContext, SmoothWeightedRoundRobin, Strategy};
use prefetch_index::prefetch_index_nta;

/// Tries by hashing before the round-robin fallback (`hp->tries > 20`).
const TRIES: u32 = 21;

/// Points a peer places on the consistent ring per unit of weight.
const POINTS_PER_WEIGHT: u32 = 160;

/// Parameters of `kind = "nginx_hash"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NginxHashParams {
    /// `hash $remote_addr consistent` (a ring of points) instead of the weighted walk.
    /// Default false.
    pub consistent: bool,
    /// With `consistent`: server `i`'s `server` line is `127.0.0.1:{port_base + i}`, the
    /// text nginx hashes into the ring (and the address live mode serves it at through
    /// nginx). Default 29100.
    pub port_base: u32,
}

impl Default for NginxHashParams {
    fn default() -> Self {
        NginxHashParams {
            consistent: false,
            port_base: 29_100,
        }
    }
}

impl NginxHashParams {
    /// The address text of server `i`'s `server` line (what the consistent ring hashes).
    pub fn server_line(&self, i: usize) -> String {
        format!("127.0.0.1:{}", u64::from(self.port_base) + i as u64)
    }
}

/// nginx `hash $remote_addr [consistent]`.
#[derive(Debug, Default)]
pub struct NginxHash {
    params: NginxHashParams,
    /// The servers it was built for: it reads ahead ([`Strategy::reads_ahead`]) from
    /// [`READ_AHEAD_FROM`] on.
    servers: usize,
    /// The consistent ring, built from the weights at the first pick (or shared with the
    /// strategy that last built it from the same: [`LAST_RING`]), again when a weight
    /// changes.
    ring: Option<Arc<Ring>>,
    /// The fallback after [`TRIES`] failed tries (and with a single peer), with the state
    /// nginx keeps for the upstream: only fallback picks move it.
    fallback: SmoothWeightedRoundRobin,
    /// The peers' weight ranges, for the walk. Rebuilt when a weight changes.
    ranges: Ranges,
    /// The lookups begun for the last [`TOLD`] keys told ([`Strategy::upcoming`]), the
    /// `told`-th in slot `told % TOLD`: the simulator tells the key of request
    /// `k + LOOKAHEAD` just before it picks for request `k`, so these are the keys of
    /// requests `k` to `k + LOOKAHEAD`. Emptied when the ring is dropped.
    begun: [Option<Begun>; TOLD],
    /// How many keys were told.
    told: usize,
}

/// The fewest servers at which a consistent ring is read ahead ([`Strategy::upcoming`]).
/// Below, the ring is in the cache and drawing arrivals ahead only costs: without it the
/// cost bench ran 0.920x at 10 servers and 0.949x at 100 (7 alternating pairs, load 1.4);
/// at 1,000 the read-ahead pays (without it, 1.038x). With the prefetch
/// ([`Ring::prefetch`]): without it 1.085x at 1,000 (11 pairs, load 4.5); reading ahead
/// from 100, 0.987x at 100 (11 pairs, per pair 0.91–1.03: within noise).
const READ_AHEAD_FROM: usize = 1_000;

/// Keys kept told ahead: the one picked next and the [`LOOKAHEAD`] after it.
const TOLD: usize = LOOKAHEAD + 1;

/// A consistent lookup begun before its pick ([`Strategy::upcoming`]): the key's hash
/// and where its pick will search ([`Ring::window`]), whose entries were prefetched.
#[derive(Clone, Copy, Debug)]
struct Begun {
    key: u64,
    hash: u32,
    window: Window,
}

/// The consistent ring's points, sorted by hash with equal hashes once, and an index by
/// the top bits of a hash: a pick reads where the hash's bucket starts and ends (a small
/// table, 128 KB at 10,000 peers, that mostly stays in the cache), guesses the position
/// within the bucket from the hash's other bits (the points' hashes are spread evenly),
/// and searches a window of [`WINDOW`] entries there: one cache miss, on the entries,
/// where a finer index (2^18 buckets of six points, 1 MB) cost two in a row. The entries
/// pack each point's peer with enough of its hash to find the first point at or after
/// the key's hash (4 bytes a point, not the points' 8: 6.4 MB at 10,000 peers of weight
/// 1, 1.6M points). The position found is always the binary search's (see
/// [`Ring::first`]).
#[derive(Clone, Debug, Default)]
struct Ring {
    /// (point hash, peer), sorted by hash, equal hashes once; emptied once indexed (the
    /// entries hold the same, [`Ring::points`]).
    points: Vec<(u32, u32)>,
    /// How many points the ring has.
    len: usize,
    /// For each value `v` of a hash's top [`Ring::bits`] bits, the position of the first
    /// point whose hash is at least `v << (32 - bits)`; then one more, the number of
    /// points. Empty when the ring is too small for an index, or has a peer too large
    /// for one ([`MAX_BITS`]): a pick then searches `points`.
    starts: Vec<u32>,
    /// Each point as `hash << bits | peer`: the hash's low `32 - bits` bits (its top bits
    /// are its bucket's) above the peer's `bits` bits; then an end marker,
    /// `u32::MAX << bits` with the peer of the first point (where the walk wraps to).
    entries: Vec<u32>,
    /// Bits of the index: about [`BUCKET_POINTS`] points a bucket, more bits (smaller
    /// buckets) when a peer needs them in an entry. 0 without an index.
    bits: u32,
    /// What the ring was built from.
    from: RingKey,
}

/// Points a bucket of the ring's index aims at: at 10,000 peers (1.6M points) 2^15
/// buckets of 49 points (a 128 KB index); the guess of a position within a bucket is then
/// off by a few points, so a [`WINDOW`] around it holds the answer but in a few percent
/// of the lookups (6.4% at 10,000 peers, 3.9% at 1,000), which then search the bucket.
const BUCKET_POINTS: usize = 32;

/// The most bits an index takes (4 MB of starts); a ring whose peers need more (over a
/// million peers) is searched without one.
const MAX_BITS: u32 = 20;

/// Entries searched around the guessed position (48 bytes: one or two cache lines, one in
/// 5 of 16 windows, where a window of 16 entries nearly always took two). At 10,000 peers
/// it holds the position in 93.6% of the lookups (16: 98.4%), and the cost bench ran
/// 0.981× and 0.973× of 16's (21 pairs each, load 3.2 and 2.2); 8 (with the guide below,
/// 1.001×) holds too few. Tried with 12, not kept: a guide in the index (each bucket's
/// start with how many of its points are in its lower half, the position then guessed
/// within the hash's half: 98.7% held at 10,000 peers in the same 128 KB), 1.005× (21
/// pairs, noise).
const WINDOW: usize = 12;

impl Ring {
    /// The ring of `points` (sorted by hash, equal hashes once), indexed when it has at
    /// least [`BUCKET_POINTS`] points and its peers fit an entry ([`MAX_BITS`]).
    fn new(points: Vec<(u32, u32)>) -> Ring {
        let last = points.iter().map(|&(_, p)| p).max().unwrap_or(0);
        let bits = Ring::bits(points.len(), last);
        let mut ring = Ring {
            len: points.len(),
            points,
            bits,
            ..Ring::default()
        };
        if bits > 0 {
            ring.index();
            ring.points = Vec::new();
        }
        ring
    }

    /// The bits of the index of a ring of `points` points whose largest peer is `last`
    /// (0: no index): about [`BUCKET_POINTS`] points a bucket, and the peers' bits at
    /// least, so that an entry holds its peer; none beyond [`MAX_BITS`].
    fn bits(points: usize, last: u32) -> u32 {
        let peer_bits = u32::BITS - last.leading_zeros();
        match (points / BUCKET_POINTS).checked_ilog2() {
            Some(b) if b.max(peer_bits) <= MAX_BITS => b.max(peer_bits).max(1),
            _ => 0,
        }
    }

    /// The ring of the points whose hashes are `hashes`, peer after peer (peer `i`'s
    /// `counts[i]`), indexed with `bits` bits (more than 0), equal hashes kept once with
    /// their least peer: the one nginx keeps, as it makes the points peer after peer and
    /// sorts them stably. The points are counted by bucket, then placed as entries in their
    /// buckets (in no order within one); then each bucket is sorted by entry (a point's low
    /// hash bits above its peer: by hash, then peer) and its equal hashes dropped but the
    /// first, the entries after moved down over them. No memory but the ring's and the
    /// hashes' (6.4 MB at 10,000 peers; the radix sort of the points before took 12.8 MB,
    /// as much again to sort into, then the entries: page faults were half its time). A
    /// process of one run at 10,000 servers: 0.944x the CPU time with the radix sort (11
    /// pairs, load 4; 10 ms less, 5,870 page faults against 10,533), 0.955x for six runs.
    /// Making the points twice, to count then to
    /// place, without the hashes' buffer: 0.95x this at 10,000 for one run (11 pairs),
    /// but at 1,000 no large block was then freed, and glibc, whose threshold for mapping
    /// an allocation rises to the size of the largest mapped block freed, kept mapping and
    /// unmapping each run's allocations of 128–640 KB: 5,577 page faults a process of 20
    /// runs against 1,139 with the buffer (and 1,613 with the radix sort, which freed
    /// 1.3 MB), 1.024x the radix sort's time where this is 0.967x (11 pairs each). The
    /// buckets sorted by insertion, or by rank (a count of the entries below each), made
    /// the build 1.54x and 1.35x slower (a copy of it outside the crate).
    fn made(bits: u32, hashes: &[u32], counts: &[usize]) -> Ring {
        let bucket = |hash: u32| (hash >> (32 - bits)) as usize;
        let mut starts = vec![0u32; (1 << bits) + 1];
        for &hash in hashes {
            starts[bucket(hash) + 1] += 1;
        }
        for v in 1..starts.len() {
            starts[v] += starts[v - 1];
        }
        let mut entries = vec![0; hashes.len() + 1];
        let mut next = starts.clone();
        let mut from = 0;
        for (peer, &count) in counts.iter().enumerate() {
            for &hash in &hashes[from..from + count] {
                let at = &mut next[bucket(hash)];
                entries[*at as usize] = hash << bits | peer as u32;
                *at += 1;
            }
            from += count;
        }
        let (mut kept, mut scratch) = (0, Vec::new());
        for v in 0..1 << bits {
            let (lo, hi) = (starts[v] as usize, starts[v + 1] as usize);
            sort_bucket(&mut entries[lo..hi], &mut scratch);
            starts[v] = kept as u32;
            let mut last = None;
            for at in lo..hi {
                let e = entries[at];
                if last != Some(e >> bits) {
                    (entries[kept], last) = (e, Some(e >> bits));
                    kept += 1;
                }
            }
        }
        starts[1 << bits] = kept as u32;
        entries.truncate(kept);
        entries.push(u32::MAX << bits | entries[0] & ((1 << bits) - 1));
        Ring {
            len: kept,
            starts,
            entries,
            bits,
            ..Ring::default()
        }
    }

    /// The points, as built: kept whole without an index, else read back from the
    /// entries (a point's hash is its bucket's top bits above its entry's low bits).
    #[cfg(test)]
    fn points(&self) -> Vec<(u32, u32)> {
        if self.starts.is_empty() {
            return self.points.clone();
        }
        let mask = (1u32 << self.bits) - 1;
        (0..self.starts.len() - 1)
            .flat_map(|v| {
                let top = (v as u32) << (32 - self.bits);
                (self.starts[v]..self.starts[v + 1]).map(move |at| (top, at as usize))
            })
            .map(|(top, at)| {
                let e = self.entries[at];
                (top | e >> self.bits, e & mask)
            })
            .collect()
    }

    /// Fills `starts` and `entries` from `points`.
    fn index(&mut self) {
        let (points, bits) = (&self.points, self.bits);
        // `starts[v]` counts the points of prefixes below `v`: the points are sorted, so
        // it is the position of the first of prefix `v` or above.
        let mut starts = vec![0u32; (1 << bits) + 1];
        for &(hash, _) in points {
            starts[(hash >> (32 - bits)) as usize + 1] += 1;
        }
        for v in 1..starts.len() {
            starts[v] += starts[v - 1];
        }
        let mut entries: Vec<u32> = points.iter().map(|&(h, peer)| h << bits | peer).collect();
        entries.push(u32::MAX << bits | points[0].1);
        self.starts = starts;
        self.entries = entries;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The peer of the point at `at`.
    #[inline]
    fn peer(&self, at: usize) -> usize {
        match self.starts.is_empty() {
            true => self.points[at].1 as usize,
            false => (self.entries[at] & ((1 << self.bits) - 1)) as usize,
        }
    }

    /// The position of the first point at or after `hash`, wrapping to the first point
    /// when every point is below it (`ngx_stream_upstream_find_chash_point`, then the
    /// pick's wrap), and its peer. The ring must not be empty.
    ///
    /// The same position as `points.partition_point(|p| p.0 < hash)` (or 0 at the end):
    /// every point before `starts[v]` is below the smallest hash of prefix `v`, so below
    /// `hash`, and every point from `starts[v + 1]` on is at least the smallest hash of
    /// prefix `v + 1`, so above `hash`; between them, the points' top bits are `hash`'s,
    /// so an entry is below `hash << bits` exactly when its point's low bits are below
    /// `hash`'s (its peer's bits are below `1 << bits`). Within the bucket the entries
    /// below are those before the position, so a window of them holds the position
    /// unless all its entries are below (and more follow in the bucket) or none is (and
    /// more come before): then the whole bucket is searched. The entry at the position
    /// found is its point's, or at the end the marker, with the first point's peer.
    #[inline]
    fn first(&self, hash: u32) -> (usize, usize) {
        if !self.indexed() {
            let at = self.points.partition_point(|&(h, _)| h < hash);
            let at = if at == self.points.len() { 0 } else { at };
            return (at, self.peer(at));
        }
        self.first_in(hash, self.window(hash))
    }

    /// [`Ring::first`] on an indexed ring, given `hash`'s [`Ring::window`].
    #[inline(always)]
    fn first_in(&self, hash: u32, window: Window) -> (usize, usize) {
        let (at, _) = self.search_in(hash, window);
        let peer = self.entries[at] & ((1 << self.bits) - 1);
        (if at == self.len { 0 } else { at }, peer as usize)
    }

    /// [`Ring::first`] on an indexed ring, before the wrap (the position may be the
    /// number of points), and whether the window around the guess held it (else the
    /// whole bucket was searched).
    #[cfg(test)]
    fn search(&self, hash: u32) -> (usize, bool) {
        self.search_in(hash, self.window(hash))
    }

    /// `hash`'s bucket `lo..hi` in the entries, and the window `from..to` within it
    /// around the guess of its position: as far into the bucket as the hash's low bits
    /// are into their range. The ring must be [`Ring::indexed`].
    #[inline(always)]
    fn window(&self, hash: u32) -> Window {
        let v = (hash >> (32 - self.bits)) as usize;
        let (lo, hi) = (self.starts[v] as usize, self.starts[v + 1] as usize);
        let guess = lo + ((u64::from(hash << self.bits) * (hi - lo) as u64) >> 32) as usize;
        let from = guess
            .saturating_sub(WINDOW / 2)
            .min(hi.saturating_sub(WINDOW))
            .max(lo);
        Window {
            lo,
            hi,
            from,
            to: (from + WINDOW).min(hi),
        }
    }

    /// Prefetches the window's one or two cache lines: its first entry and its last (or
    /// at an empty window the entry after it, the end marker at the latest).
    ///
    /// A prefetch is an instruction that `unsafe` alone reaches (`_mm_prefetch`, `prfm`),
    /// and this crate forbids `unsafe`: `prefetch_index` (the `prefetch-index` crate, MIT,
    /// no dependencies) wraps it safely, and is a no-op on other processors. A prefetch
    /// does not hold up the instructions after it, where a load that misses does: the
    /// loads that stood in for it (seven lookups at a time, every window's ends read
    /// first so that their misses overlapped, the values kept in a sink): this is 0.883x
    /// of them (the cost bench at 10,000 servers, 9 pairs, load 1.9). Non-temporal (the lines are read once,
    /// at the pick, and should not evict the servers' state from the other levels): 0.98x
    /// of a plain prefetch at 10,000 servers twice (9 and 15 pairs), the same at 1,000.
    #[inline(always)]
    fn prefetch(&self, window: &Window) {
        prefetch_index_nta(&self.entries, window.from);
        prefetch_index_nta(&self.entries, window.to.max(window.from + 1) - 1);
    }

    /// [`Ring::search`] given `hash`'s [`Ring::window`].
    #[inline(always)]
    fn search_in(&self, hash: u32, w: Window) -> (usize, bool) {
        let Window { lo, hi, from, to } = w;
        let probe = hash << self.bits;
        // A count, not a binary search: the window's loads are independent, so its two
        // cache lines are read at once (a binary search reads the second line only once
        // the first has come in). The entries are sorted, so the count is the position.
        let below: usize = self.entries[from..to]
            .iter()
            .map(|&e| usize::from(e < probe))
            .sum();
        if (below == 0 && from > lo) || (from + below == to && to < hi) {
            (
                lo + self.entries[lo..hi].partition_point(|&e| e < probe),
                false,
            )
        } else {
            (from + below, true)
        }
    }

    /// Whether the ring has its bucket index.
    fn indexed(&self) -> bool {
        !self.starts.is_empty()
    }
}

/// Where a lookup searches ([`Ring::window`]): the bucket `lo..hi` and the window
/// `from..to` within it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Window {
    lo: usize,
    hi: usize,
    from: usize,
    to: usize,
}

/// A client address as the text nginx hashes (`$remote_addr`, dotted decimal): what
/// `Ipv4Addr`'s `Display` writes, without the formatting machinery (which took a third of
/// a pick's time).
struct AddressText {
    buf: [u8; 15],
    len: usize,
}

impl AddressText {
    fn of(addr: std::net::Ipv4Addr) -> AddressText {
        let mut t = AddressText {
            buf: [0; 15],
            len: 0,
        };
        for (k, octet) in addr.octets().into_iter().enumerate() {
            if k > 0 {
                t.push(b'.');
            }
            if octet >= 100 {
                t.push(b'0' + octet / 100);
            }
            if octet >= 10 {
                t.push(b'0' + octet / 10 % 10);
            }
            t.push(b'0' + octet % 10);
        }
        t
    }

    fn push(&mut self, byte: u8) {
        self.buf[self.len] = byte;
        self.len += 1;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl NginxHash {
    /// The peer nginx's `try`-th hash of `key` lands on (0-based), given the running sum
    /// `sum` of the earlier tries' hashes, which it advances.
    fn peer(addr: std::net::Ipv4Addr, attempt: u32, sum: &mut u64, ranges: &Ranges) -> usize {
        let crc = if attempt > 0 {
            let key = AddressText::of(addr);
            crc32_extend(
                crc32_extend(0, attempt.to_string().as_bytes()),
                key.as_bytes(),
            )
        } else {
            address_crc(addr)
        };
        *sum += u64::from((crc >> 16) & 0x7fff);
        ranges.holding(*sum % ranges.total())
    }

    /// nginx's walk to the peer whose weight range holds `w` (`w` < `Σ weights`).
    #[cfg(test)]
    fn walk(backends: &Backends, mut w: u64) -> usize {
        let mut p = 0;
        while w >= u64::from(backends.weight(p)) {
            w -= u64::from(backends.weight(p));
            p += 1;
        }
        p
    }

    /// Drops the ring, to be built again at the next pick, and the lookups begun on it.
    fn drop_ring(&mut self) {
        self.ring = None;
        self.begun = [None; TOLD];
    }

    /// The weight ranges of `backends`, rebuilt if the backends are new.
    fn ranges(&mut self, backends: &Backends) -> &Ranges {
        if self.ranges.ends.len() != backends.len() {
            self.ranges = Ranges::new(backends.iter().map(|b| u64::from(b.weight)));
        }
        &self.ranges
    }
}

impl NginxHash {
    /// nginx's ring over `backends`' weights (`ngx_stream_upstream_init_chash`): every
    /// peer's `160 × weight` points ([`NginxHash::points`]), sorted by hash (stably, as glibc's
    /// merge-sort `qsort`), equal hashes kept once (the first), indexed ([`Ring::made`]).
    fn ring(params: &NginxHashParams, backends: &Backends) -> Ring {
        let counts: Vec<usize> = backends.iter().map(|b| points_of(b.weight)).collect();
        let hashes = Self::points(params, &counts);
        let last = counts.iter().rposition(|&c| c > 0).unwrap_or(0);
        match Ring::bits(hashes.len(), last as u32) {
            0 => {
                // Fewer than [`BUCKET_POINTS`] points (every weight 0: no point).
                let peers =
                    (0..counts.len()).flat_map(|p| std::iter::repeat_n(p as u32, counts[p]));
                let mut points: Vec<(u32, u32)> = hashes.into_iter().zip(peers).collect();
                points.sort_unstable();
                points.dedup_by_key(|&mut (hash, _)| hash);
                Ring::new(points)
            }
            bits => Ring::made(bits, &hashes, &counts),
        }
    }

    /// The hashes of nginx's points, peer after peer: peer `i`'s `counts[i]`, point `j` the
    /// crc32 of the peer's `server` line followed by point `j − 1` (0 for the first). Each
    /// peer's points are a chain (a point's hash is made from the one before): four peers'
    /// chains are made side by side, so the processor overlaps their steps.
    fn points(params: &NginxHashParams, counts: &[usize]) -> Vec<u32> {
        let mut hashes = vec![0; counts.iter().sum()];
        let mut at = 0;
        for (group, counts) in counts.chunks(4).enumerate() {
            // (base, the point before, where the peer's points start, how many)
            let mut chains = [(0u32, 0u32, 0usize, 0usize); 4];
            for ((j, &count), chain) in counts.iter().enumerate().zip(&mut chains) {
                *chain = (Self::point_base(params, 4 * group + j), 0, at, count);
                at += count;
            }
            let longest = counts.iter().max().copied().unwrap_or(0);
            for k in 0..longest {
                for (base, prev, start, count) in &mut chains {
                    if k < *count {
                        *prev = crc32_append(*base, *prev);
                        hashes[*start + k] = *prev;
                    }
                }
            }
        }
        hashes
    }

    /// The crc32 of peer `i`'s `server` line as its points hash it: `HOST \0 PORT`.
    fn point_base(params: &NginxHashParams, i: usize) -> u32 {
        let line = params.server_line(i);
        let (host, port) = line.rsplit_once(':').expect("host:port");
        let mut base = crc32fast::Hasher::new();
        base.update(host.as_bytes());
        base.update(b"\0");
        base.update(port.as_bytes());
        base.finalize()
    }

    /// The consistent pick of a key whose crc32 is `hash`, given its lookup if it was
    /// begun before ([`Begun`]): `None` when nginx falls back to round robin (one peer, no
    /// points, or 21 points in a row whose peers are down).
    fn consistent_pick(
        &mut self,
        backends: &Backends,
        hash: u32,
        begun: Option<Begun>,
    ) -> Option<usize> {
        let ring = self
            .ring
            .get_or_insert_with(|| LAST_RING.ring(&self.params, backends));
        if backends.len() < 2 || ring.is_empty() {
            return None;
        }
        let (first, peer) = match begun {
            Some(b) => ring.first_in(hash, b.window),
            None => ring.first(hash),
        };
        if backends.up(peer) {
            return Some(peer);
        }
        (first + 1..first + TRIES as usize)
            .map(|at| ring.peer(at % ring.len()))
            .find(|&peer| backends.up(peer))
    }
}

/// Sorts a bucket of the ring's entries ([`Ring::made`]): counted and placed by their top
/// [`DIGIT_BITS`] bits into `scratch` (their hash's bits below the bucket's, spread
/// evenly: about one entry a digit in a bucket of [`BUCKET_POINTS`] points), then moved
/// back by insertion, which moves an entry only past the few of its digit. A bucket of
/// more than `2 × 2^DIGIT_BITS` entries is left to `sort_unstable`. At 10,000 peers (2^15
/// buckets of 49) 5.0 ms against 7.0 ms with `sort_unstable` alone.
fn sort_bucket(bucket: &mut [u32], scratch: &mut Vec<u32>) {
    const DIGITS: usize = 1 << DIGIT_BITS;
    if bucket.len() > 2 * DIGITS {
        bucket.sort_unstable();
        return;
    }
    let digit = |e: u32| (e >> (32 - DIGIT_BITS)) as usize;
    let mut next = [0u16; DIGITS + 1];
    for &e in bucket.iter() {
        next[digit(e) + 1] += 1;
    }
    for d in 1..DIGITS {
        next[d] += next[d - 1];
    }
    scratch.clear();
    scratch.resize(bucket.len(), 0);
    for &e in bucket.iter() {
        let at = &mut next[digit(e)];
        scratch[usize::from(*at)] = e;
        *at += 1;
    }
    for (i, &e) in scratch.iter().enumerate() {
        let mut j = i;
        while j > 0 && bucket[j - 1] > e {
            bucket[j] = bucket[j - 1];
            j -= 1;
        }
        bucket[j] = e;
    }
}

/// The digit [`sort_bucket`] places by: 7 bits, 128 digits.
const DIGIT_BITS: u32 = 7;

/// The points a peer of weight `weight` places on the ring.
fn points_of(weight: u32) -> usize {
    weight as usize * POINTS_PER_WEIGHT as usize
}

/// crc32 tables for four bytes at a time ("slicing by 4"): `CRC_TABLES[0]` is the
/// byte-at-a-time table of the reflected polynomial 0xEDB88320 (crc32 as zlib and nginx
/// compute it), and `CRC_TABLES[k][b]` the remainder of byte `b` followed by `k` zero bytes.
const CRC_TABLES: [[u32; 256]; 4] = crc_tables();

const fn crc_tables() -> [[u32; 256]; 4] {
    let mut t = [[0u32; 256]; 4];
    let mut b = 0;
    while b < 256 {
        let mut c = b as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        t[0][b] = c;
        b += 1;
    }
    let mut k = 1;
    while k < 4 {
        let mut b = 0;
        while b < 256 {
            let c = t[k - 1][b];
            t[k][b] = (c >> 8) ^ t[0][(c & 0xff) as usize];
            b += 1;
        }
        k += 1;
    }
    t
}

/// The crc32 of some bytes followed by `word`'s 4 little-endian bytes, given `crc`, the
/// crc32 of those bytes: what `crc32fast::Hasher` computes for them, as one step of
/// "slicing by 4" ([`crc_step`] on the register, which is the crc inverted). The ring's
/// 1.6M points at 10,000 peers are such hashes, each of the one before.
#[inline]
fn crc32_append(crc: u32, word: u32) -> u32 {
    !crc_step(!crc ^ word)
}

/// One step of "slicing by 4": the crc register `c`, the 4 bytes just taken in already
/// xored into it (the low byte first, as the little-endian order sends it), after those
/// bytes. Each byte's remainder after the bytes that follow it is one lookup.
#[inline]
fn crc_step(c: u32) -> u32 {
    let t = &CRC_TABLES;
    t[3][(c & 0xff) as usize]
        ^ t[2][(c >> 8 & 0xff) as usize]
        ^ t[1][(c >> 16 & 0xff) as usize]
        ^ t[0][(c >> 24) as usize]
}

/// The crc32 of a client address's text (`$remote_addr`, dotted decimal, as
/// [`AddressText`] writes it): what nginx hashes for a key, by tables: five independent
/// loads and their xor, no loop and no branch.
///
/// crc32's register is affine over GF(2) in what it takes in: the register after a text
/// is the xor of what its initial register (all ones) becomes after as many zero bytes as
/// the text has, and of what each byte, taken into a zero register, becomes after the
/// bytes that follow it. The text `a.b.c.d` is four parts, an octet's digits (1 to 3)
/// each and, but for the last, a dot; a part's share depends only on its octet and on how
/// many bytes follow it (0 to 11), so [`DOTTED_OCTET_CRC`] and [`LAST_OCTET_CRC`] hold
/// it for every octet and distance (13 KB), and [`TEXT_START`] the initial register's for
/// every length, inverted as crc32 inverts its register at the end.
///
/// It replaced the text made in a `u128` (each octet's digits and dot from a table,
/// shifted to end at byte 16, the register started at the state that the padding's zero
/// bytes take to all ones) and four steps of "slicing by 4", 16 loads in four dependent
/// rounds (the cost bench at 10,000 servers: 0.957× and 0.979× that build, 9 and 11
/// pairs, load 2.3 and 3.8; `address_crc` was 4% of the samples).
#[inline]
fn address_crc(addr: std::net::Ipv4Addr) -> u32 {
    let [a, b, c, d] = addr.octets();
    let digits = |o: u8| 1 + usize::from(o >= 10) + usize::from(o >= 100);
    // The bytes after each octet's dot.
    let after_c = digits(d);
    let after_b = after_c + 1 + digits(c);
    let after_a = after_b + 1 + digits(b);
    TEXT_START[after_a + 1 + digits(a)]
        ^ DOTTED_OCTET_CRC[after_a][usize::from(a)]
        ^ DOTTED_OCTET_CRC[after_b][usize::from(b)]
        ^ DOTTED_OCTET_CRC[after_c][usize::from(c)]
        ^ LAST_OCTET_CRC[usize::from(d)]
}

/// `DOTTED_OCTET_CRC[k][o]`: the crc register after octet `o`'s digits, a dot and `k`
/// zero bytes, from a zero register (an octet's share in [`address_crc`] when `k` bytes
/// follow its dot).
const DOTTED_OCTET_CRC: [[u32; 256]; 12] = dotted_octet_crc();

/// `LAST_OCTET_CRC[o]`: the crc register after octet `o`'s digits from a zero register
/// (the last octet's share in [`address_crc`]).
const LAST_OCTET_CRC: [u32; 256] = last_octet_crc();

/// `TEXT_START[n]`: crc32's initial register after `n` zero bytes, inverted (the
/// initial register's share in the crc of an `n`-byte text).
const TEXT_START: [u32; 16] = text_start();

/// The register `r` after byte `byte` (crc32, reflected, one byte at a time).
const fn crc_byte(r: u32, byte: u32) -> u32 {
    CRC_TABLES[0][((r ^ byte) & 0xff) as usize] ^ (r >> 8)
}

/// The register after octet `o`'s decimal digits, from a zero register.
const fn octet_digits_crc(o: u32) -> u32 {
    let mut r = 0;
    if o >= 100 {
        r = crc_byte(r, b'0' as u32 + o / 100);
    }
    if o >= 10 {
        r = crc_byte(r, b'0' as u32 + o / 10 % 10);
    }
    crc_byte(r, b'0' as u32 + o % 10)
}

const fn dotted_octet_crc() -> [[u32; 256]; 12] {
    let mut t = [[0; 256]; 12];
    let mut o = 0;
    while o < 256 {
        let mut r = crc_byte(octet_digits_crc(o as u32), b'.' as u32);
        let mut k = 0;
        while k < 12 {
            t[k][o] = r;
            r = crc_byte(r, 0);
            k += 1;
        }
        o += 1;
    }
    t
}

const fn last_octet_crc() -> [u32; 256] {
    let mut t = [0; 256];
    let mut o = 0;
    while o < 256 {
        t[o] = octet_digits_crc(o as u32);
        o += 1;
    }
    t
}

const fn text_start() -> [u32; 16] {
    let mut t = [0; 16];
    let mut r = u32::MAX;
    let mut n = 0;
    while n < 16 {
        t[n] = !r;
        r = crc_byte(r, 0);
        n += 1;
    }
    t
}

/// The crc32 of some bytes followed by `bytes`, given `crc`, the crc32 of those bytes (0
/// for none): four bytes at a time ([`crc32_append`]), then the rest one at a time. For the
/// few bytes of an address, `crc32fast::hash` took 6% of a whole run at 10,000 peers
/// (its fast paths are for long inputs).
fn crc32_extend(crc: u32, bytes: &[u8]) -> u32 {
    let mut words = bytes.chunks_exact(4);
    let crc = words.by_ref().fold(crc, |crc, word| {
        crc32_append(crc, u32::from_le_bytes(word.try_into().expect("4 bytes")))
    });
    let c = (words.remainder().iter()).fold(!crc, |c, &byte| crc_byte(c, u32::from(byte)));
    !c
}

/// The ring last built in this process, with what it was built from: the replications of
/// a run, and the runs of a sweep or a benchmark, share it instead of building it again
/// (at 10,000 peers, 1.6M points made, sorted and indexed, about 40% of the CPU time of
/// the cost bench's run of 200,000 requests). A ring is a function of the port base and
/// the weights alone, so sharing it changes no pick. One ring is kept (7.4 MB at 10,000
/// peers of weight 1): two rings used in turn are built in turn, as without it.
static LAST_RING: RingCache = RingCache::new();

/// The last ring built.
struct RingCache(Mutex<Option<Arc<Ring>>>);

/// What a ring is built from.
#[derive(Clone, Debug, Default, PartialEq)]
struct RingKey {
    port_base: u32,
    /// Every peer's weight.
    weights: Vec<u32>,
}

impl RingCache {
    const fn new() -> RingCache {
        RingCache(Mutex::new(None))
    }

    /// nginx's ring for `params` over `backends`' weights: the last one built if it is
    /// the same, else a new one (then the last). Building holds the lock, so replications
    /// starting together build the ring once.
    fn ring(&self, params: &NginxHashParams, backends: &Backends) -> Arc<Ring> {
        let key = RingKey {
            port_base: params.port_base,
            weights: backends.iter().map(|b| b.weight).collect(),
        };
        // A panic elsewhere while the lock was held leaves a whole ring or none: both
        // usable.
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ring) = &*last
            && ring.from == key
        {
            return Arc::clone(ring);
        }
        let ring = Arc::new(Ring {
            from: key,
            ..NginxHash::ring(params, backends)
        });
        *last = Some(Arc::clone(&ring));
        ring
    }
}

impl Strategy for NginxHash {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        let addr = client_address(ctx.key);
        if self.params.consistent {
            // Told [`LOOKAHEAD`] keys ahead, the key picked is the one told
            // [`LOOKAHEAD`] calls before the last: in slot `told % TOLD`.
            let begun = match self.begun[self.told % TOLD] {
                Some(b) if b.key == ctx.key => Some(b),
                _ => self
                    .begun
                    .iter()
                    .flatten()
                    .find(|b| b.key == ctx.key)
                    .copied(),
            };
            let hash = begun.map_or_else(|| address_crc(addr), |b| b.hash);
            let picked = self.consistent_pick(backends, hash, begun);
            return picked.or_else(|| self.fallback.pick(backends, ctx));
        }
        let ranges = self.ranges(backends);
        // `peers->single`: one peer is round robin's.
        if backends.len() > 1 && ranges.total() > 0 {
            let mut sum = 0u64;
            for attempt in 0..TRIES {
                let p = Self::peer(addr, attempt, &mut sum, ranges);
                if backends.up(p) {
                    return Some(p);
                }
            }
        }
        self.fallback.pick(backends, ctx)
    }

    fn indexes_view(&self) -> bool {
        true
    }

    /// Only a weight matters ([`Strategy::on_view`] below), never a count: spared two
    /// calls a request.
    fn indexes_in_flight(&self) -> bool {
        false
    }

    fn reads_ahead(&self) -> bool {
        self.params.consistent && self.servers >= READ_AHEAD_FROM
    }

    /// Begins the lookup of `key` on the ring: its hash, its `Ring::window` (a read of
    /// the index, which mostly stays in the cache), and a prefetch of the window's
    /// entries (`Ring::prefetch`), so that they are in the cache by the key's pick,
    /// [`LOOKAHEAD`] arrivals on. Tried with the prefetch and not kept (the cost bench at
    /// 10,000 servers, new over this, 11–15 pairs, load 4.5–5.5, per pair 0.8–1.3): the
    /// index's line prefetched when told and the window two calls later, [`LOOKAHEAD`] 8,
    /// 0.946 / 0.987 / 1.009 in three sets; [`LOOKAHEAD`] 4, 0.988 (0.998 with a plain
    /// prefetch), 10, 0.974; buckets of 64 points (a 64 KB index) and a window of 32
    /// (three lines), 1.037; each key's lookup finished three calls after its prefetch,
    /// and its server's state prefetched by the simulator then (the stall moved from
    /// `Sim::arrival` to the lookups), 1.004. Later (window of 16, new over the build
    /// before, 10,000 servers, 11–21 pairs, load 2–5): the index's starts as 16-bit
    /// offsets from an even spread (64 KB: its read's share of this call's samples fell
    /// from 31% to 25%), 1.010 / 0.976 / 0.998 in three sets; the entries in a mapping
    /// advised as huge pages (`memmap2`; 4 pages of 2 MB, not 1,600 of 4 KB), 1.003: the
    /// stall after the prefetch stayed (about a quarter of this call's samples, so not a
    /// page walk); the window's first line prefetched alone, 1.050.
    fn upcoming(&mut self, key: u64) {
        let Some(ring) = self.ring.as_deref().filter(|r| r.indexed()) else {
            return;
        };
        let hash = address_crc(client_address(key));
        let window = ring.window(hash);
        ring.prefetch(&window);
        self.begun[self.told % TOLD] = Some(Begun { key, hash, window });
        self.told += 1;
    }

    /// A weight that changed invalidates the weight ranges and the ring (the balancer's
    /// weights are fixed today: this keeps them right should that change).
    fn on_view(&mut self, backend: usize, view: &Backend) {
        if let Some(ring) = &self.ring
            && ring.from.weights.get(backend) != Some(&view.weight)
        {
            self.drop_ring();
        }
        let ends = &self.ranges.ends;
        let Some(&end) = ends.get(backend) else {
            return;
        };
        let start = backend.checked_sub(1).map_or(0, |k| ends[k]);
        if end - start != u64::from(view.weight) {
            self.ranges = Ranges::default();
            self.drop_ring();
        }
    }
}

impl Kind for NginxHash {
    type Params = NginxHashParams;
    const ABOUT: About = About {
        kind: "nginx_hash",
        aliases: &[],
        follows: "nginx `hash $remote_addr [consistent]` (upstream hash module, nginx 1.22): crc32 of the client address, weighted peer walk, or with consistent the first of 160 × weight points per peer at or after it (server i at 127.0.0.1:port_base+i); 21 tries, then smooth weighted round robin",
        knobs: &[
            Knob::new("consistent", Ty::Bool).meaning("hash … consistent"),
            Knob::new("port_base", Ty::Int).meaning("server i is 127.0.0.1:port_base+i"),
        ],
        reads: Reads::WEIGHTS,
        split: Split::Dynamic,
    };
    fn validate(p: &NginxHashParams, n: usize) -> Result<(), SpecError> {
        let last = u64::from(p.port_base) + n.saturating_sub(1) as u64;
        if p.consistent && (p.port_base == 0 || last > 65_535) {
            return Err(SpecError::new(
                "port_base",
                format!(
                    "is {}, so the {n} servers' ports run from {} to {last}",
                    p.port_base, p.port_base
                ),
                "use a port from 1 to 65535 minus the number of servers, e.g. 29100",
            ));
        }
        Ok(())
    }
    fn build(p: &NginxHashParams, n: usize, _: crate::rng::SimRng) -> NginxHash {
        NginxHash {
            params: p.clone(),
            servers: n,
            ..NginxHash::default()
        }
    }
    fn cost(_: &NginxHashParams) -> PickCost {
        PickCost::SCAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::time::Nanos;

    /// The lookup in the weight ranges (a binary search, or a division when the weights
    /// are equal) stops at the peer nginx's walk stops at, for every `w`, weights of 0
    /// included.
    #[test]
    fn the_search_finds_the_peer_the_walk_finds() {
        for weights in [
            vec![1, 0, 3, 0, 0, 2, 5],
            vec![0, 1],
            vec![4, 0],
            vec![1; 9],
            vec![3; 7],
            vec![2, 2, 2, 0],
            vec![5],
        ] {
            let backends = view(&weights);
            let mut h = NginxHash::default();
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let ranges = h.ranges(&backends);
            assert_eq!(ranges.total(), total);
            for w in 0..total {
                assert_eq!(
                    ranges.holding(w),
                    NginxHash::walk(&backends, w),
                    "{weights:?} at {w}"
                );
            }
        }
    }

    /// nginx's ring as the code before the bucket index built it, independently of
    /// [`crc32_append`] and [`Ring::made`]: a `crc32fast::Hasher` per point, the
    /// standard library's stable sort.
    fn reference_ring(params: &NginxHashParams, weights: &[u32]) -> Vec<(u32, u32)> {
        let mut ring = Vec::new();
        for (i, &w) in weights.iter().enumerate() {
            let line = params.server_line(i);
            let (host, port) = line.rsplit_once(':').unwrap();
            let mut prev = 0u32;
            for _ in 0..w * POINTS_PER_WEIGHT {
                let mut h = crc32fast::Hasher::new();
                h.update(host.as_bytes());
                h.update(b"\0");
                h.update(port.as_bytes());
                h.update(&prev.to_le_bytes());
                prev = h.finalize();
                ring.push((prev, i as u32));
            }
        }
        ring.sort_by_key(|&(hash, _)| hash);
        ring.dedup_by_key(|&mut (hash, _)| hash);
        ring
    }

    /// nginx's consistent pick over a plain ring: a binary search, then the walk past
    /// down peers.
    fn reference_pick(ring: &[(u32, u32)], up: &[bool], hash: u32) -> Option<usize> {
        let first = ring.partition_point(|&(h, _)| h < hash);
        (first..first + TRIES as usize)
            .map(|at| ring[at % ring.len()].1 as usize)
            .find(|&peer| up[peer])
    }

    /// Hashes to look up in `points`: `probes`, every point's hash and its neighbours,
    /// every bucket's first and last hash, 0 and `u32::MAX`.
    fn probes(points: &[(u32, u32)], mut probes: Vec<u32>) -> Vec<u32> {
        probes.extend(
            points
                .iter()
                .flat_map(|p| [p.0, p.0.wrapping_sub(1), p.0.wrapping_add(1)]),
        );
        let bits = Ring::new(points.to_vec()).bits;
        if bits > 0 {
            probes.extend((0..1u32 << bits).flat_map(|v| {
                let low = v << (32 - bits);
                [low, low | (u32::MAX >> bits)]
            }));
        }
        probes.extend([0, u32::MAX]);
        probes
    }

    /// [`Ring::first`] is the binary search of the whole ring (wrapping past the last
    /// point to the first), with that point's peer, at every hash of [`probes`].
    fn check_first(
        points: &[(u32, u32)],
        at: Vec<u32>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let ring = Ring::new(points.to_vec());
        for h in probes(points, at) {
            let want = points.partition_point(|&(x, _)| x < h) % points.len();
            proptest::prop_assert_eq!(
                ring.first(h),
                (want, points[want].1 as usize),
                "hash {:#x}, {} points, {} bits, indexed {}",
                h,
                points.len(),
                ring.bits,
                !ring.starts.is_empty()
            );
        }
        Ok(())
    }

    /// The index is built for the rings of the cost bench (10 to 10,000 peers of weight
    /// 1), and not for a ring of fewer than [`BUCKET_POINTS`] points or whose peers need
    /// more than [`MAX_BITS`] bits.
    #[test]
    fn the_index_is_built_when_the_peers_fit_its_entries() {
        for n in [2, 10, 1000, 10_000] {
            let ring = Ring::new(reference_ring(&NginxHashParams::default(), &vec![1; n]));
            assert!(ring.indexed(), "{n} peers");
        }
        let points = |n: u32, peer| (0..n).map(|k| (k << 24, peer)).collect::<Vec<_>>();
        assert!(!Ring::new(points(31, 2)).indexed());
        assert!(Ring::new(points(32, 2)).indexed());
        assert!(Ring::new(points(64, (1 << MAX_BITS) - 1)).indexed());
        assert!(!Ring::new(points(64, 1 << MAX_BITS)).indexed());
    }

    /// Strategies over the same port base and weights share a ring; another port base or
    /// other weights build another, which is then the one kept.
    #[test]
    fn the_last_ring_is_shared_and_replaced_by_another() {
        let cache = RingCache::new();
        let params = |port_base| NginxHashParams {
            consistent: true,
            port_base,
        };
        let (p, w) = (params(29_100), view(&[1, 2, 1]));
        let first = cache.ring(&p, &w);
        assert!(Arc::ptr_eq(&first, &cache.ring(&p, &w)));
        assert_eq!(first.points(), reference_ring(&p, &[1, 2, 1]));
        let other = cache.ring(&params(30_000), &w);
        assert_eq!(other.points(), reference_ring(&params(30_000), &[1, 2, 1]));
        let heavier = cache.ring(&p, &view(&[1, 3, 1]));
        assert_eq!(heavier.points(), reference_ring(&p, &[1, 3, 1]));
        assert!(Arc::ptr_eq(&heavier, &cache.ring(&p, &view(&[1, 3, 1]))));
        assert!(!Arc::ptr_eq(&first, &cache.ring(&p, &w)));
    }

    /// A strategy whose view reports a new weight builds the ring of the new weights.
    #[test]
    fn a_new_weight_rebuilds_the_ring() {
        let mut h = consistent(29_100);
        let mut backends = view(&[1, 1, 1]);
        h.consistent_pick(&backends, 7, None);
        backends = view(&[1, 4, 1]);
        h.on_view(1, &backends.iter().nth(1).unwrap().clone());
        let want = reference_ring(&h.params, &[1, 4, 1]);
        let up = [true; 3];
        for hash in probes(&want, vec![1, 2, 3]) {
            assert_eq!(
                h.consistent_pick(&backends, hash, None),
                reference_pick(&want, &up, hash)
            );
        }
    }

    proptest::proptest! {
        /// The lookup in the weight ranges, through their index, stops at the peer nginx's
        /// walk stops at, for every `w`: weights drawn small, with zeros, or skewed (1 and
        /// up to 300 side by side, so that one range of the index spans many peers).
        #[test]
        fn the_indexed_search_finds_the_peer_the_walk_finds(
            weights in proptest::collection::vec(
                proptest::prop_oneof![0u32..3, 1u32..5, proptest::prelude::Just(1u32), 200u32..300],
                1..80,
            ),
        ) {
            let backends = view(&weights);
            let mut h = NginxHash::default();
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            proptest::prop_assume!(total > 0);
            let ranges = h.ranges(&backends);
            for w in 0..total {
                proptest::prop_assert_eq!(ranges.holding(w), NginxHash::walk(&backends, w), "at {}", w);
            }
        }

        /// The ring of points made in order of peer ([`Ring::made`]) holds the stable
        /// sort by hash, with of equal hashes the one of the first peer, as `dedup` keeps
        /// (hashes drawn whole, or from few values so that most are equal to others, or
        /// equal in their low bits or their bucket's bits), with the index [`Ring::new`]
        /// makes of those points at the same bits.
        #[test]
        fn the_made_ring_is_the_stable_sort_of_its_points(
            hashes in proptest::collection::vec(proptest::prelude::any::<u32>(), 1..3000),
            shape in 0u32..4,
            per_peer in 1usize..9,
        ) {
            let points: Vec<(u32, u32)> = hashes
                .iter()
                .enumerate()
                .map(|(i, &h)| {
                    let h = match shape {
                        0 => h,
                        1 => h % 60,
                        2 => h & 0xffc0_0000,
                        _ => h & 0x7ff,
                    };
                    (h, (i / per_peer) as u32)
                })
                .collect();
            let mut want = points.clone();
            want.sort_by_key(|&(h, _)| h);
            want.dedup_by_key(|&mut (h, _)| h);
            let last = points.last().map_or(0, |p| p.1);
            let bits = Ring::bits(points.len(), last).max(Ring::bits(want.len(), last));
            if bits == 0 {
                return Ok(());
            }
            let hashes: Vec<u32> = points.iter().map(|&(h, _)| h).collect();
            let mut counts = vec![0; last as usize + 1];
            for &(_, peer) in &points {
                counts[peer as usize] += 1;
            }
            let made = Ring::made(bits, &hashes, &counts);
            let new = Ring::new(want.clone());
            proptest::prop_assert_eq!(made.points(), want);
            if new.bits == bits {
                proptest::prop_assert_eq!(
                    (made.len, &made.starts, &made.entries),
                    (new.len, &new.starts, &new.entries)
                );
            }
        }

        /// The bucket index finds the position a binary search of the whole ring finds,
        /// and its peer, for rings of every size up to a few thousand points (hashes
        /// drawn whole, crowded into a few prefixes so that buckets are large or empty, or
        /// on few values with low bits 0, so that points are on buckets' first hashes;
        /// peers drawn below a bound, which is sometimes too large for the index), at
        /// every point, next to it, at every bucket's edges and at random hashes.
        #[test]
        fn the_indexed_first_point_is_the_binary_search(
            hashes in proptest::collection::vec(proptest::prelude::any::<u32>(), 1..3000),
            crowd in 0u32..4,
            peers in 1u32..600,
            probes in proptest::collection::vec(proptest::prelude::any::<u32>(), 1..50),
        ) {
            let mut points: Vec<(u32, u32)> = hashes
                .iter()
                .enumerate()
                .map(|(i, &h)| {
                    let h = if crowd == 3 { h & 0xfff0_0000 } else { h >> (crowd * 12) };
                    (h, (i as u32).wrapping_mul(2_654_435_761) % peers)
                })
                .collect();
            points.sort_by_key(|&(h, _)| h);
            points.dedup_by_key(|&mut (h, _)| h);
            check_first(&points, probes)?;
        }

        /// The slicing-by-4 step is crc32fast's hash of the bytes and the word's, and so
        /// is the extension by any bytes (every length of remainder).
        #[test]
        fn crc32_append_and_extend_are_crc32fasts(
            before in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            after in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            word: u32,
        ) {
            let mut h = crc32fast::Hasher::new();
            h.update(&before);
            h.update(&word.to_le_bytes());
            proptest::prop_assert_eq!(crc32_append(crc32fast::hash(&before), word), h.finalize());
            let mut h = crc32fast::Hasher::new();
            h.update(&before);
            h.update(&after);
            proptest::prop_assert_eq!(crc32_extend(crc32fast::hash(&before), &after), h.finalize());
            proptest::prop_assert_eq!(crc32_extend(0, &after), crc32fast::hash(&after));
        }

        /// The consistent pick is nginx's over the ring built the plain way (a binary
        /// search, the walk past down peers), for any weights (0 included) and down
        /// peers, on rings with and without an index, at random keys and at every
        /// point's hash.
        #[test]
        fn the_consistent_pick_is_nginxs(
            weights in proptest::collection::vec(0u32..4, 2..24),
            down in proptest::collection::vec(proptest::prelude::any::<bool>(), 24),
            keys in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..200),
        ) {
            let params = NginxHashParams { consistent: true, port_base: 29_100 };
            let plain = reference_ring(&params, &weights);
            proptest::prop_assert_eq!(NginxHash::ring(&params, &view(&weights)).points(), plain.clone());
            if plain.is_empty() {
                return Ok(());
            }
            check_first(&plain, Vec::new())?;
            let mut backends = view(&weights);
            for (i, &d) in down.iter().take(weights.len()).enumerate() {
                backends.set_up(i, !d);
            }
            let up: Vec<bool> = (0..weights.len()).map(|i| backends.up(i)).collect();
            let mut h = consistent(29_100);
            let hashes = keys
                .iter()
                .map(|&key| crc32fast::hash(AddressText::of(client_address(key)).as_bytes()));
            for hash in hashes.chain(probes(&plain, Vec::new())) {
                let want = reference_pick(&plain, &up, hash);
                proptest::prop_assert_eq!(h.consistent_pick(&backends, hash, None), want, "hash {:#x}", hash);
            }
        }

        /// The crc made in registers is crc32fast's of the address's text.
        #[test]
        fn the_address_crc_is_the_crc_of_its_text(bits: u32) {
            let addr = std::net::Ipv4Addr::from(bits);
            let text = addr.to_string();
            proptest::prop_assert_eq!(address_crc(addr), crc32fast::hash(text.as_bytes()));
        }

        /// Keys told and picked in any order (each pick perhaps of a key told just
        /// before, two keys before, or never), peers going down and up and weights
        /// changing between: a strategy told the keys picks as one never told.
        #[test]
        fn picks_told_ahead_are_the_picks_without(
            ops in proptest::collection::vec((0u8..8, 0u64..24), 1..300),
        ) {
            let mut weights = vec![1u32; 12];
            let mut backends = view(&weights);
            let (mut told, mut never) = (consistent(29_100), consistent(29_100));
            for (op, k) in ops {
                let i = k as usize % weights.len();
                match op {
                    0..=2 => told.upcoming(k),
                    3..=5 => {
                        let ctx = PickContext::new(Nanos(0), k);
                        let want = never.pick(&backends, &ctx);
                        proptest::prop_assert_eq!(told.pick(&backends, &ctx), want, "key {}", k);
                    }
                    6 => {
                        backends.set_up(i, !backends.up(i));
                        told.on_view(i, &backends.at(i));
                        never.on_view(i, &backends.at(i));
                    }
                    _ => {
                        weights[i] = weights[i] % 3 + 1;
                        let up: Vec<bool> = (0..weights.len()).map(|j| backends.up(j)).collect();
                        backends = view(&weights);
                        for (j, &u) in up.iter().enumerate() {
                            backends.set_up(j, u);
                        }
                        told.on_view(i, &backends.at(i));
                        never.on_view(i, &backends.at(i));
                    }
                }
            }
        }

        /// The key's text is what `Ipv4Addr`'s `Display` writes, for every address.
        #[test]
        fn the_address_text_is_the_dotted_decimal(bits: u32) {
            let addr = std::net::Ipv4Addr::from(bits);
            let text = AddressText::of(addr);
            let display = addr.to_string();
            proptest::prop_assert_eq!(text.as_bytes(), display.as_bytes());
        }
    }

    #[test]
    fn the_address_text_of_the_edges() {
        for (addr, text) in [
            ([0, 0, 0, 0], "0.0.0.0"),
            ([255, 255, 255, 255], "255.255.255.255"),
            ([127, 1, 0, 10], "127.1.0.10"),
            ([9, 10, 99, 100], "9.10.99.100"),
        ] {
            let t = AddressText::of(addr.into());
            assert_eq!(t.as_bytes(), text.as_bytes());
            assert_eq!(address_crc(addr.into()), crc32fast::hash(text.as_bytes()));
        }
    }

    /// The crc by tables is crc32fast's of the text for every octet at each of the four
    /// places, beside octets of one, two and three digits: every entry of the tables, at
    /// every distance from the end and every length of text, is read by one of these.
    #[test]
    fn the_address_crc_of_every_octet_at_every_place() {
        let others = [7u8, 42, 200];
        for place in 0..4 {
            for o in 0..=255u8 {
                for k in 0..27 {
                    let mut rest = [others[k % 3], others[k / 3 % 3], others[k / 9]].into_iter();
                    let octets: [u8; 4] =
                        std::array::from_fn(|i| if i == place { o } else { rest.next().unwrap() });
                    let addr = std::net::Ipv4Addr::from(octets);
                    let text = addr.to_string();
                    assert_eq!(
                        address_crc(addr),
                        crc32fast::hash(text.as_bytes()),
                        "{text}"
                    );
                }
            }
        }
    }

    /// Told each key [`LOOKAHEAD`] picks ahead, as the simulator tells it, a strategy
    /// keeps the keys from the one picked next on, has begun each one's lookup (its hash
    /// and its window, prefetched: the picks below search there), and picks as one never
    /// told; a key
    /// told and then not picked, or picked after other keys were told, changes nothing
    /// either.
    #[test]
    fn lookups_begun_when_told_pick_as_without() {
        let mut backends = view(&[1; 12]);
        backends.set_up(3, false);
        let (mut told, mut never) = (consistent(29_100), consistent(29_100));
        let pick = |h: &mut NginxHash, backends: &Backends, key| {
            h.pick(backends, &PickContext::new(Nanos(0), key))
        };
        let keys: Vec<u64> = (0..400).map(|k| k * 7_919 % 1_000).collect();
        pick(&mut told, &backends, keys[0]);
        pick(&mut never, &backends, keys[0]);
        for &k in &keys[1..=LOOKAHEAD] {
            told.upcoming(k);
        }
        for j in 1..keys.len() - LOOKAHEAD {
            told.upcoming(keys[j + LOOKAHEAD]);
            let mut kept: Vec<u64> = told.begun.iter().flatten().map(|b| b.key).collect();
            let mut want = keys[j..=j + LOOKAHEAD].to_vec();
            kept.sort_unstable();
            want.sort_unstable();
            assert_eq!(kept, want);
            let ring = told.ring.as_deref().expect("built at the first pick");
            assert!(
                told.begun
                    .iter()
                    .flatten()
                    .all(|b| b.hash == address_crc(client_address(b.key))
                        && b.window == ring.window(b.hash))
            );
            assert_eq!(
                pick(&mut told, &backends, keys[j]),
                pick(&mut never, &backends, keys[j])
            );
        }
        for (tell, picked) in [(5, 6), (6, 5), (7, 7)] {
            told.upcoming(tell);
            assert_eq!(
                pick(&mut told, &backends, picked),
                pick(&mut never, &backends, picked)
            );
        }
    }

    fn view(weights: &[u32]) -> Backends {
        weights
            .iter()
            .map(|&weight| Backend {
                in_flight: 0,
                weight,
                up: true,
            })
            .collect()
    }

    /// The first try by hand: crc32("127.1.0.0") = 0x9dd0_fe8e (Python's zlib.crc32), so
    /// the hash is 0x9dd0 & 0x7fff = 7632, and 7632 % 4 = 0 lands on the first peer, whose
    /// range is [0, 2) with weights 2:1:1.
    #[test]
    fn first_try_is_the_high_half_of_the_crc_of_the_address() {
        assert_eq!(crc32fast::hash(b"127.1.0.0"), 0x9dd0_fe8e);
        let mut sum = 0;
        let ranges = NginxHash::default().ranges(&view(&[2, 1, 1])).clone();
        assert_eq!(
            NginxHash::peer([127, 1, 0, 0].into(), 0, &mut sum, &ranges),
            0
        );
        assert_eq!(sum, 7632);
        // The second try hashes "1127.1.0.0" and adds: crc32 = 0x1f62_6b50, 0x1f62 &
        // 0x7fff = 8034, sum 15666, 15666 % 4 = 2: the second peer ([2, 3)).
        assert_eq!(
            NginxHash::peer([127, 1, 0, 0].into(), 1, &mut sum, &ranges),
            1
        );
        assert_eq!(sum, 15666);
    }

    #[test]
    fn the_same_key_always_reaches_the_same_server_and_weights_widen_ranges() {
        let mut b = Balancer::new(Box::new(NginxHash::default()), &[1, 1, 1, 1]);
        let first: Vec<_> = (0..64).map(|k| b.route(Nanos(0), k)).collect();
        let again: Vec<_> = (0..64).map(|k| b.route(Nanos(0), k)).collect();
        assert_eq!(first, again);
        // Weights 6:1:1: the first server's range holds 6 of every 8 hash values.
        let mut w = Balancer::new(Box::new(NginxHash::default()), &[6, 1, 1]);
        let to_first = (0..4000)
            .filter(|&k| w.route(Nanos(0), k) == Some(0))
            .count();
        assert!((2700..3300).contains(&to_first), "{to_first} of 4000");
    }

    #[test]
    fn a_down_peer_is_skipped_by_rehashing_and_others_keep_their_keys() {
        let mut b = Balancer::new(Box::new(NginxHash::default()), &[1, 1, 1]);
        let before: Vec<_> = (0..300).map(|k| b.route(Nanos(0), k).unwrap()).collect();
        b.set_up(1, false);
        for (k, &was) in before.iter().enumerate() {
            let now = b.route(Nanos(0), k as u64).unwrap();
            assert_ne!(now, 1);
            if was != 1 {
                assert_eq!(now, was, "key {k} moved although its server is up");
            }
        }
    }

    #[test]
    fn every_peer_down_but_one_falls_back_to_round_robin_and_none_up_is_none() {
        let mut b = Balancer::new(Box::new(NginxHash::default()), &[1, 1, 1]);
        b.set_up(0, false);
        b.set_up(2, false);
        assert!((0..50).all(|k| b.route(Nanos(0), k) == Some(1)));
        b.set_up(1, false);
        assert_eq!(b.route(Nanos(0), 0), None);
    }

    fn consistent(port_base: u32) -> NginxHash {
        NginxHash::build(
            &NginxHashParams {
                consistent: true,
                port_base,
            },
            0,
            <crate::rng::SimRng as rand::SeedableRng>::seed_from_u64(0),
        )
    }

    /// Only a consistent ring over [`READ_AHEAD_FROM`] servers or more is read ahead: below,
    /// the ring is in the cache and drawing arrivals ahead costs more than it saves.
    #[test]
    fn only_large_consistent_rings_read_ahead() {
        let build = |consistent, n| {
            let p = NginxHashParams {
                consistent,
                ..NginxHashParams::default()
            };
            NginxHash::build(
                &p,
                n,
                <crate::rng::SimRng as rand::SeedableRng>::seed_from_u64(0),
            )
        };
        for (consistent, n, reads) in [
            (true, 10, false),
            (true, READ_AHEAD_FROM - 1, false),
            (true, READ_AHEAD_FROM, true),
            (true, 10_000, true),
            (false, 10_000, false),
        ] {
            assert_eq!(
                build(consistent, n).reads_ahead(),
                reads,
                "{consistent} {n}"
            );
        }
    }

    /// At 1,000 and 10,000 peers the ring built ([`NginxHash::ring`]) holds the points of
    /// an independent build (at 10,000 with equal hashes among them), the window around
    /// the guess holds the first point at or after a hash in most lookups (the bucket is
    /// searched in the others), and the position found is the binary search's.
    #[test]
    fn the_window_mostly_holds_the_position_at_scale() {
        for (n, want) in [(1_000, 0.95), (10_000, 0.92)] {
            let params = NginxHashParams::default();
            let points = reference_ring(&params, &vec![1; n]);
            let ring = NginxHash::ring(&params, &view(&vec![1; n]));
            // Equal hashes among the points made (about 300 at 10,000 peers), kept once.
            assert!(n < 10_000 || points.len() < n * POINTS_PER_WEIGHT as usize);
            assert_eq!(ring.points(), points, "{n} peers");
            let mut held = 0;
            let lookups = 100_000u32;
            for k in 0..lookups {
                let hash = k.wrapping_mul(2_654_435_761) ^ k >> 7;
                let (at, window) = ring.search(hash);
                assert_eq!(at, points.partition_point(|&(h, _)| h < hash), "{hash:#x}");
                held += u32::from(window);
            }
            let share = f64::from(held) / f64::from(lookups);
            eprintln!("{n} peers: the window held {share:.4} of the lookups");
            assert!(share > want, "{n} peers: {share}");
        }
    }

    /// The ring and the picks against an independent implementation (Python's
    /// `zlib.crc32`, `struct.pack('<I', prev)`, `bisect_left`, written from nginx's C):
    /// 640 points over 4 peers of weight 1; the first is peer 1's 1015501; peer 0's first
    /// point is crc32 of `127.0.0.1`, a NUL byte, `29100` and four zero bytes: 0x840f9dcb.
    /// The picks of the keys 0..24 (clients 127.1.0.0, 127.1.0.1, …), with every peer up,
    /// then with peer 1 down, and over weights 3:1:2.
    #[test]
    fn the_ring_and_its_picks_match_an_independent_implementation() {
        let h = consistent(29_100);
        let ring = NginxHash::ring(&h.params, &view(&[1, 1, 1, 1])).points();
        assert_eq!(ring.len(), 640);
        assert_eq!(ring[0], (1_015_501, 1));
        assert!(ring.contains(&(0x840f_9dcb, 0)));
        let expect_up = [
            1, 2, 3, 0, 3, 3, 3, 3, 3, 3, 0, 1, 3, 2, 1, 0, 0, 0, 2, 1, 0, 0, 0, 3,
        ];
        let expect_down = [
            0, 2, 3, 0, 3, 3, 3, 3, 3, 3, 0, 0, 3, 2, 2, 0, 0, 0, 2, 0, 0, 0, 0, 3,
        ];
        let mut b = Balancer::new(Box::new(consistent(29_100)), &[1, 1, 1, 1]);
        let up: Vec<_> = (0..24).map(|k| b.route(Nanos(0), k).unwrap()).collect();
        assert_eq!(up, expect_up);
        b.set_up(1, false);
        let down: Vec<_> = (0..24).map(|k| b.route(Nanos(0), k).unwrap()).collect();
        assert_eq!(down, expect_down);
        let mut w = Balancer::new(Box::new(consistent(29_100)), &[3, 1, 2]);
        let weighted: Vec<_> = (0..24).map(|k| w.route(Nanos(0), k).unwrap()).collect();
        assert_eq!(
            weighted,
            [
                2, 2, 0, 0, 2, 0, 0, 2, 0, 0, 0, 1, 0, 2, 2, 0, 0, 0, 2, 1, 0, 0, 0, 2
            ]
        );
        // Another port base is another ring.
        let mut other = Balancer::new(Box::new(consistent(30_000)), &[1, 1, 1, 1]);
        let moved: Vec<_> = (0..24).map(|k| other.route(Nanos(0), k).unwrap()).collect();
        assert_ne!(moved, expect_up);
    }

    /// A down peer's keys go to the next points' peers; every other key stays; weights
    /// widen a peer's share of the ring (160 points per unit of weight).
    #[test]
    fn consistent_hashing_moves_only_a_down_peers_keys_and_follows_weights() {
        let mut b = Balancer::new(Box::new(consistent(29_100)), &[1; 8]);
        let keys = 0..4000u64;
        let spread = |k: u64| k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
        let before: Vec<_> = keys
            .clone()
            .map(|k| b.route(Nanos(0), spread(k)).unwrap())
            .collect();
        b.set_up(5, false);
        for (k, &was) in keys.clone().zip(&before) {
            let now = b.route(Nanos(0), spread(k)).unwrap();
            assert_ne!(now, 5);
            if was != 5 {
                assert_eq!(now, was, "key {k} moved although its server is up");
            }
        }
        let mut w = Balancer::new(Box::new(consistent(29_100)), &[6, 1, 1]);
        let to_first = keys
            .filter(|&k| w.route(Nanos(0), spread(k)) == Some(0))
            .count();
        assert!((2600..3400).contains(&to_first), "{to_first} of 4000");
    }

    /// One peer is round robin's; every peer down is no pick; a port range beyond 65535
    /// is refused by name.
    #[test]
    fn consistent_edges_and_validation() {
        let mut one = Balancer::new(Box::new(consistent(29_100)), &[1]);
        assert_eq!(one.route(Nanos(0), 7), Some(0));
        let mut b = Balancer::new(Box::new(consistent(29_100)), &[1, 1]);
        b.set_up(0, false);
        assert!((0..50).all(|k| b.route(Nanos(0), k) == Some(1)));
        b.set_up(1, false);
        assert_eq!(b.route(Nanos(0), 0), None);
        let p = |port_base| NginxHashParams {
            consistent: true,
            port_base,
        };
        assert!(NginxHash::validate(&p(65_530), 6).is_ok());
        let e = NginxHash::validate(&p(65_530), 7).unwrap_err().to_string();
        assert!(e.contains("port_base") && e.contains("65536"), "{e}");
        assert!(NginxHash::validate(&p(0), 2).is_err());
        // Without `consistent` the port base is not read.
        assert!(
            NginxHash::validate(
                &NginxHashParams {
                    consistent: false,
                    port_base: 0
                },
                2
            )
            .is_ok()
        );
    }
}
