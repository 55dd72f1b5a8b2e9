//! Maglev hashing (Eisenbud et al., "Maglev: a fast and reliable software network load
//! balancer", NSDI 2016, §3.4; Envoy `MAGLEV`): a lookup table of prime size `M` (default
//! 65537) filled by letting each backend in turn claim the next free slot of its own
//! permutation `(offset + j × skip) mod M`, with `offset = h1(b) mod M` and
//! `skip = h2(b) mod (M − 1) + 1`. A request goes to `table[hash(key) mod M]`.
//!
//! Weights follow Envoy's weighted variant: in round `r` a backend takes a turn only if
//! `r × w ≥ target`, and each turn adds `w_max` to its target, so turns (and table
//! entries) are in proportion to weight; with equal weights every backend takes one turn
//! per round, as in the paper, and owns ⌊M/N⌋ or ⌈M/N⌉ entries. The table is built over
//! the up backends and rebuilt when that set changes, as Envoy rebuilds on host changes.

use std::sync::Arc;

use super::SpecError;
use super::hash::{Membership, key_hash, point_hash, shared};
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Table, Ty};
use super::{Backend, Backends, PickContext, Strategy};

const OFFSET_SALT: u64 = 0x6d61_676c_6576_5f6f;
const SKIP_SALT: u64 = 0x6d61_676c_6576_5f73;

/// Maglev consistent hashing.
#[derive(Debug)]
pub struct Maglev {
    table_size: usize,
    /// Shared with the other balancers that built the same table ([`shared`]).
    table: Arc<Vec<u32>>,
    members: Membership,
}

impl Maglev {
    /// Maglev with a table of `table_size` entries (a prime; checked by the spec).
    pub fn new(table_size: usize) -> Maglev {
        Maglev {
            table_size,
            table: Arc::default(),
            members: Membership::default(),
        }
    }

    /// Fills a table of size `m` over `weights` (0: left out); empty if all are 0.
    pub fn build_table(weights: &[u32], m: usize) -> Vec<u32> {
        let hosts: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
        if hosts.is_empty() || m == 0 {
            return Vec::new();
        }
        let m64 = m as u64;
        let max_w = hosts
            .iter()
            .map(|&i| f64::from(weights[i]))
            .fold(0.0, f64::max);
        struct Build {
            host: usize,
            offset: u64,
            skip: u64,
            next: u64,
            weight: f64,
            target: f64,
        }
        let mut entries: Vec<Build> = hosts
            .iter()
            .map(|&i| Build {
                host: i,
                offset: point_hash(i, 0, OFFSET_SALT) % m64,
                skip: if m64 > 1 {
                    point_hash(i, 0, SKIP_SALT) % (m64 - 1) + 1
                } else {
                    1
                },
                next: 0,
                weight: f64::from(weights[i]),
                target: 0.0,
            })
            .collect();
        let mut table = vec![u32::MAX; m];
        let mut filled = 0usize;
        let mut round = 0u64;
        while filled < m {
            for e in entries.iter_mut() {
                if filled == m {
                    break;
                }
                if (round as f64) * e.weight < e.target {
                    continue;
                }
                e.target += max_w;
                let mut c = (e.offset + e.skip * e.next) % m64;
                while table[c as usize] != u32::MAX {
                    e.next += 1;
                    c = (e.offset + e.skip * e.next) % m64;
                }
                table[c as usize] = e.host as u32;
                e.next += 1;
                filled += 1;
            }
            round += 1;
        }
        table
    }
}

impl Strategy for Maglev {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        let h = key_hash(ctx.key);
        let size = self.table_size;
        self.members.pick(
            &mut self.table,
            backends,
            |t: &Arc<Vec<u32>>| (!t.is_empty()).then(|| t[(h % t.len() as u64) as usize] as usize),
            |weights| {
                shared("Maglev::build_table", [size as u64, 0], weights, |w| {
                    Maglev::build_table(w, size)
                })
            },
        )
    }

    /// The table is rebuilt when a backend left out of it comes back: the balancer tells
    /// of every backend going up or down (`Membership::told`).
    fn indexes_view(&self) -> bool {
        true
    }

    /// Counts are not kept (only up/down is told).
    fn indexes_in_flight(&self) -> bool {
        false
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        self.members.told(backend, view);
    }
}

/// Parameters of `kind = "maglev"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaglevParams {
    /// Lookup table size, a prime. Default 65537 (Envoy).
    pub table_size: u64,
}

impl Default for MaglevParams {
    fn default() -> MaglevParams {
        MaglevParams { table_size: 65537 }
    }
}

fn is_prime(m: u64) -> bool {
    m >= 2
        && (2..)
            .take_while(|d| d * d <= m)
            .all(|d| !m.is_multiple_of(d))
}

impl Kind for Maglev {
    type Params = MaglevParams;
    const ABOUT: About = About {
        kind: "maglev",
        aliases: &[],
        follows: "Maglev (NSDI 2016) / Envoy MAGLEV on the request key",
        knobs: &[Knob::new("table_size", Ty::Int)
            .unit("entries")
            .meaning("a prime")],
        reads: Reads::WEIGHTS,
        split: Split::Dynamic,
    };
    fn validate(p: &MaglevParams, n: usize) -> Result<(), SpecError> {
        let m = p.table_size;
        // Size first: testing a huge number for primality takes minutes.
        if m > 5_000_011 || (m as usize) < n || !is_prime(m) {
            return Err(SpecError::new(
                "table_size",
                format!("is {m} with {n} backends"),
                "use a prime at least the number of backends and at most 5000011 \
                 (65537 is Envoy's default; Maglev wants M ≫ N, e.g. M > 100 N)",
            ));
        }
        Ok(())
    }
    fn build(p: &MaglevParams, _: usize, _: crate::rng::SimRng) -> Maglev {
        Maglev::new(p.table_size as usize)
    }
    fn cost(p: &MaglevParams) -> PickCost {
        PickCost {
            table: Some(Table::Slots(p.table_size)),
            ..PickCost::CONSTANT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::time::Nanos;

    #[test]
    fn entries_per_backend_within_one_percent_of_m_over_n() {
        let m = 65537;
        for n in [1usize, 2, 3, 7, 10, 33, 64, 100] {
            let t = Maglev::build_table(&vec![1; n], m);
            let mut c = vec![0usize; n];
            for &i in &t {
                c[i as usize] += 1;
            }
            let ideal = m as f64 / n as f64;
            for &k in &c {
                assert!((k as f64 - ideal).abs() <= 0.01 * ideal, "n={n}: {c:?}");
                assert!(
                    (k as f64 - ideal).abs() < 1.0,
                    "equal weights: ⌊M/N⌋ or ⌈M/N⌉"
                );
            }
        }
    }

    #[test]
    fn weighted_entries_follow_weights() {
        let t = Maglev::build_table(&[3, 1, 0], 65537);
        let zero = t.iter().filter(|&&i| i == 0).count() as f64;
        assert!(t.iter().all(|&i| i != 2));
        assert!((zero / 65537.0 - 0.75).abs() < 0.001, "{zero}");
    }

    #[test]
    fn skips_down_backends() {
        let mut b = Balancer::new(Box::new(Maglev::new(251)), &[1, 1, 1]);
        b.set_up(0, false);
        assert!((0..500).all(|k| b.route(Nanos(0), k) != Some(0)));
        b.set_up(1, false);
        b.set_up(2, false);
        assert_eq!(b.route(Nanos(0), 1), None);
        b.set_up(2, true);
        assert_eq!(b.route(Nanos(0), 1), Some(2));
    }

    /// Balancers over the same backends hold one table; one whose view changed builds
    /// its own, which a balancer seeing the same change then shares.
    #[test]
    fn balancers_share_the_table_of_the_same_backends() {
        let mut m: Vec<Maglev> = (0..3).map(|_| Maglev::new(251)).collect();
        let all = Backends::new(&[1, 1, 1, 1]);
        let mut one_down = Backends::new(&[1, 1, 1, 1]);
        one_down.set_up(2, false);
        let ctx = PickContext::new(Nanos(0), 7);
        m[0].pick(&all, &ctx);
        m[1].pick(&all, &ctx);
        assert!(Arc::ptr_eq(&m[0].table, &m[1].table));
        m[2].pick(&one_down, &ctx);
        assert!(!Arc::ptr_eq(&m[0].table, &m[2].table));
        assert!(!m[2].table.contains(&2) && m[0].table.contains(&2));
        // A balancer rebuilds once a lookup lands on the backend gone down.
        for key in 0..100 {
            m[1].pick(&one_down, &PickContext::new(Nanos(0), key));
        }
        assert!(Arc::ptr_eq(&m[1].table, &m[2].table));
    }

    /// The table rebuilt when told of a backend coming back picks what it picks when it
    /// looks at every backend left out at every pick, through up/down (balancer-driven
    /// workouts) and weight changes (views changed directly).
    #[test]
    fn a_told_table_picks_as_a_rescan() {
        use crate::strategy::hash::told::{pair, views_agree};
        use crate::strategy::testing::{index_agrees_with_scan, weights};
        use proptest::prelude::*;
        let sizes = || prop::sample::select(vec![13usize, 31, 251]);
        let build = |&m: &usize| pair(Maglev::new(m), Maglev::new(m), |s| s.members.suspect());
        index_agrees_with_scan(sizes(), weights(), build);
        views_agree(sizes(), build);
    }
}
