//! nginx `hash $remote_addr` (the upstream hash module without `consistent`;
//! `src/stream/ngx_stream_upstream_hash_module.c`, `ngx_stream_upstream_get_hash_peer`,
//! nginx 1.22): the key is the client's IPv4 address as text, and a pick walks the peers
//! in configuration order with weights:
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
//! **The key.** A connection's client address is [`super::hash::client_address`] of the
//! key lbsim hashes: at connection level (`[connections]`) the key is the connection's
//! slot, and live mode opens that slot's connections from exactly that loopback address,
//! so a replay `--via nginx` (`hash $remote_addr;`) sends every connection where the
//! simulator does. At request level the request key stands for the client.

use std::fmt::Write as _;

use super::SpecError;
use super::hash::client_address;
use super::registry::{About, Kind, NoParams, PickCost, Reads, Split};
use super::{Backend, PickContext, SmoothWeightedRoundRobin, Strategy};

/// Tries by hashing before the round-robin fallback (`hp->tries > 20`).
const TRIES: u32 = 21;

/// nginx `hash $remote_addr` (without `consistent`).
#[derive(Debug, Default)]
pub struct NginxHash {
    /// The fallback after [`TRIES`] failed tries (and with a single peer), with the state
    /// nginx keeps for the upstream: only fallback picks move it.
    fallback: SmoothWeightedRoundRobin,
    /// Scratch for the key's text.
    text: String,
}

impl NginxHash {
    /// The peer nginx's `try`-th hash of `key` lands on (0-based), given the running sum
    /// `sum` of the earlier tries' hashes, which it advances.
    fn peer(key: &str, attempt: u32, sum: &mut u64, backends: &[Backend], total: u64) -> usize {
        let mut crc = crc32fast::Hasher::new();
        if attempt > 0 {
            crc.update(attempt.to_string().as_bytes());
        }
        crc.update(key.as_bytes());
        *sum += u64::from((crc.finalize() >> 16) & 0x7fff);
        let mut w = *sum % total;
        let mut p = 0;
        while w >= u64::from(backends[p].weight) {
            w -= u64::from(backends[p].weight);
            p += 1;
        }
        p
    }
}

impl Strategy for NginxHash {
    fn pick(&mut self, backends: &[Backend], ctx: &PickContext) -> Option<usize> {
        let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
        // `peers->single`: one peer is round robin's.
        if backends.len() > 1 && total > 0 {
            self.text.clear();
            let _ = write!(self.text, "{}", client_address(ctx.key));
            let mut sum = 0u64;
            for attempt in 0..TRIES {
                let p = Self::peer(&self.text, attempt, &mut sum, backends, total);
                if backends[p].up {
                    return Some(p);
                }
            }
        }
        self.fallback.pick(backends, ctx)
    }
}

/// `kind = "nginx_hash"`: no parameters.
impl Kind for NginxHash {
    type Params = NoParams;
    const ABOUT: About = About {
        kind: "nginx_hash",
        aliases: &[],
        follows: "nginx `hash $remote_addr` without `consistent` (upstream hash module, nginx 1.22: crc32 of the client address, weighted peer walk, 21 tries, then smooth weighted round robin)",
        knobs: &[],
        reads: Reads::WEIGHTS,
        split: Split::Dynamic,
    };
    fn validate(_: &NoParams, _: usize) -> Result<(), SpecError> {
        Ok(())
    }
    fn build(_: &NoParams, _: usize, _: crate::rng::SimRng) -> NginxHash {
        NginxHash::default()
    }
    fn cost(_: &NoParams) -> PickCost {
        PickCost::SCAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::time::Nanos;

    fn view(weights: &[u32]) -> Vec<Backend> {
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
        assert_eq!(
            NginxHash::peer("127.1.0.0", 0, &mut sum, &view(&[2, 1, 1]), 4),
            0
        );
        assert_eq!(sum, 7632);
        // The second try hashes "1127.1.0.0" and adds: crc32 = 0x1f62_6b50, 0x1f62 &
        // 0x7fff = 8034, sum 15666, 15666 % 4 = 2: the second peer ([2, 3)).
        assert_eq!(
            NginxHash::peer("127.1.0.0", 1, &mut sum, &view(&[2, 1, 1]), 4),
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
}
