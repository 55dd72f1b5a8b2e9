//! Least connections, as nginx's `least_conn`: the backend with the fewest requests in
//! flight wins; in the weighted variant the comparison is `in_flight / weight` (nginx
//! compares `conns * best.weight < best.conns * weight`). Ties are broken by smooth
//! weighted round robin among the tied backends, as nginx does — with equal weights that is
//! plain round robin.
//!
//! nginx scans every backend twice per pick. Here the picks are the same, exactly, but come
//! from an index of the view kept up to date as it changes ([`Strategy::on_view`]): the
//! backends grouped by their ratio `in_flight / weight` in an ordered map, and within a
//! ratio by their smooth-round-robin counter. A pick adds `weight` to the counter of every
//! backend at the lowest ratio: that is one counter per ratio class ("picks made at this
//! ratio"), and a member's counter is its key plus `weight ×` that counter, so the order of
//! members of equal weight never changes while they stay in the class. A pick, a dispatch
//! and a completion cost O(log n) (times the number of distinct weights at the lowest
//! ratio, which is one without weights). The full scan is kept in the tests as the oracle.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet};

use super::{Backend, PickContext, Strategy};

/// nginx `least_conn`, optionally weighted.
#[derive(Debug, Default)]
pub struct LeastConnections {
    weighted: bool,
    index: Option<Index>,
}

impl LeastConnections {
    /// Least connections; `weighted` compares `in_flight / weight`.
    pub fn new(weighted: bool) -> LeastConnections {
        LeastConnections {
            weighted,
            index: None,
        }
    }
}

impl Strategy for LeastConnections {
    fn pick(&mut self, backends: &[Backend], _ctx: &PickContext) -> Option<usize> {
        let weighted = self.weighted;
        let index = match &mut self.index {
            Some(index) if index.flight.len() == backends.len() => index,
            stale => stale.insert(Index::new(backends, weighted)),
        };
        index.pick()
    }

    fn indexes_view(&self) -> bool {
        true
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        let weighted = self.weighted;
        if let Some(index) = &mut self.index {
            index.update(backend, view, weighted);
        }
    }
}

/// `in_flight / weight`, reduced, ordered by value (cross-multiplication, exact).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ratio {
    conns: u64,
    weight: u64,
}

impl Ratio {
    fn new(conns: u32, weight: u32) -> Ratio {
        let (mut a, mut b) = (u64::from(conns), u64::from(weight));
        while b != 0 {
            (a, b) = (b, a % b);
        }
        Ratio {
            conns: u64::from(conns) / a,
            weight: u64::from(weight) / a,
        }
    }
}

impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        // Both below 2^32: the products fit in u64.
        (self.conns * other.weight).cmp(&(other.conns * self.weight))
    }
}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Members of one weight in a class, by key descending then index ascending.
type Members = BTreeSet<(Reverse<i64>, u32)>;

/// The backends at one ratio.
#[derive(Debug, Default)]
struct Class {
    /// Picks made among this class (each added its weight to every member's counter).
    picks: i64,
    /// Sum of the members' weights.
    total: i64,
    /// Per distinct weight, the members ordered by key descending then index ascending
    /// (nginx keeps the first backend of highest counter).
    by_weight: Vec<(i64, Members)>,
}

/// The view, indexed.
#[derive(Debug)]
struct Index {
    /// The in-flight count each backend is filed under.
    flight: Vec<u32>,
    /// Whether it is eligible (up, and of non-zero weight when weighted).
    member: Vec<bool>,
    /// Its weight (1 when unweighted).
    weight: Vec<u32>,
    /// Smooth-round-robin counter of a non-member; for a member, its key: the counter
    /// minus `weight × picks` of its class.
    current: Vec<i64>,
    classes: BTreeMap<Ratio, Class>,
}

impl Index {
    fn new(backends: &[Backend], weighted: bool) -> Index {
        let mut index = Index {
            flight: backends.iter().map(|b| b.in_flight).collect(),
            member: vec![false; backends.len()],
            weight: backends
                .iter()
                .map(|b| if weighted { b.weight } else { 1 })
                .collect(),
            current: vec![0; backends.len()],
            classes: BTreeMap::new(),
        };
        for (i, b) in backends.iter().enumerate() {
            if b.up && index.weight[i] > 0 {
                index.member[i] = true;
                index.insert(i);
            }
        }
        index
    }

    fn update(&mut self, i: usize, view: &Backend, weighted: bool) {
        if i >= self.flight.len() {
            return;
        }
        let w = if weighted { view.weight } else { 1 };
        let member = view.up && w > 0;
        if member == self.member[i] && (!member || view.in_flight == self.flight[i]) {
            self.flight[i] = view.in_flight;
            return;
        }
        if self.member[i] {
            self.remove(i);
        }
        self.flight[i] = view.in_flight;
        self.weight[i] = w;
        self.member[i] = member;
        if member {
            self.insert(i);
        }
    }

    fn insert(&mut self, i: usize) {
        let w = self.weight[i];
        let class = self
            .classes
            .entry(Ratio::new(self.flight[i], w))
            .or_default();
        let key = self.current[i] - i64::from(w) * class.picks;
        self.current[i] = key;
        class.total += i64::from(w);
        let set = match class
            .by_weight
            .iter()
            .position(|(cw, _)| *cw == i64::from(w))
        {
            Some(k) => &mut class.by_weight[k].1,
            None => {
                class.by_weight.push((i64::from(w), Members::new()));
                &mut class.by_weight.last_mut().expect("just pushed").1
            }
        };
        set.insert((Reverse(key), i as u32));
    }

    fn remove(&mut self, i: usize) {
        let w = self.weight[i];
        let ratio = Ratio::new(self.flight[i], w);
        let Some(class) = self.classes.get_mut(&ratio) else {
            return;
        };
        let key = self.current[i];
        if let Some(k) = class
            .by_weight
            .iter()
            .position(|(cw, _)| *cw == i64::from(w))
        {
            class.by_weight[k].1.remove(&(Reverse(key), i as u32));
            if class.by_weight[k].1.is_empty() {
                class.by_weight.swap_remove(k);
            }
        }
        self.current[i] = key + i64::from(w) * class.picks;
        class.total -= i64::from(w);
        if class.by_weight.is_empty() {
            self.classes.remove(&ratio);
        }
    }

    fn pick(&mut self) -> Option<usize> {
        let mut entry = self.classes.first_entry()?;
        let class = entry.get_mut();
        class.picks += 1;
        // The highest counter (key + weight × picks), lowest index among equals.
        let mut best: Option<(i64, u32, usize)> = None;
        for (k, (w, set)) in class.by_weight.iter().enumerate() {
            let Some(&(Reverse(key), i)) = set.first() else {
                continue;
            };
            let counter = key + w * class.picks;
            if best.is_none_or(|(bc, bi, _)| counter > bc || (counter == bc && i < bi)) {
                best = Some((counter, i, k));
            }
        }
        let (_, i, k) = best?;
        // The chosen one gives back the class's total weight.
        let set = &mut class.by_weight[k].1;
        let key = self.current[i as usize];
        set.remove(&(Reverse(key), i));
        let key = key - class.total;
        set.insert((Reverse(key), i));
        self.current[i as usize] = key;
        Some(i as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Strategy;
    use crate::strategy::testing::{both, op};
    use crate::strategy::{Balancer, Outcome};
    use crate::time::Nanos;
    use proptest::prelude::*;

    /// The reference: nginx's two full scans, as this strategy was first written.
    #[derive(Debug, Default)]
    struct Scan {
        weighted: bool,
        current: Vec<i64>,
    }

    impl Strategy for Scan {
        fn pick(&mut self, backends: &[Backend], _ctx: &PickContext) -> Option<usize> {
            let weighted = self.weighted;
            let wt = |b: &Backend| if weighted { u64::from(b.weight) } else { 1 };
            let mut best: Option<(u64, u64)> = None;
            for b in backends {
                let w = wt(b);
                if !b.up || w == 0 {
                    continue;
                }
                let c = u64::from(b.in_flight);
                if best.is_none_or(|(bc, bw)| c * bw < bc * w) {
                    best = Some((c, w));
                }
            }
            let (cj, wj) = best?;
            if self.current.len() != backends.len() {
                self.current.resize(backends.len(), 0);
            }
            let mut total = 0i64;
            let mut chosen: Option<usize> = None;
            for (i, b) in backends.iter().enumerate() {
                let w = wt(b);
                if !b.up || w == 0 || u64::from(b.in_flight) * wj != cj * w {
                    continue;
                }
                self.current[i] += w as i64;
                total += w as i64;
                if chosen.is_none_or(|k| self.current[i] > self.current[k]) {
                    chosen = Some(i);
                }
            }
            let i = chosen?;
            self.current[i] -= total;
            Some(i)
        }
    }

    #[test]
    fn picks_fewest_in_flight() {
        let mut b = Balancer::new(Box::new(LeastConnections::new(false)), &[1, 1, 1]);
        // Three requests outstanding spread one each, then complete backend 1's.
        let a = b.route(Nanos(0), 0).unwrap();
        let c = b.route(Nanos(0), 0).unwrap();
        let d = b.route(Nanos(0), 0).unwrap();
        let mut got = vec![a, c, d];
        got.sort();
        assert_eq!(got, vec![0, 1, 2]);
        b.complete(1, Nanos(5), Outcome::Ok, Nanos(5));
        assert_eq!(b.route(Nanos(6), 0), Some(1));
    }

    #[test]
    fn ties_are_broken_round_robin() {
        let mut b = Balancer::new(Box::new(LeastConnections::new(false)), &[1, 1, 1]);
        let seq = crate::strategy::testing::picks(&mut b, 6);
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_compares_in_flight_over_weight() {
        let mut b = Balancer::new(Box::new(LeastConnections::new(true)), &[3, 1]);
        // Keep everything in flight: the 3-weight backend should take 3 of every 4.
        let picks: Vec<usize> = (0..8).map(|_| b.route(Nanos(0), 0).unwrap()).collect();
        let zero = picks.iter().filter(|&&i| i == 0).count();
        assert_eq!(zero, 6, "{picks:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn index_picks_what_the_scan_picks(
            weighted in any::<bool>(),
            weights in proptest::collection::vec(0u32..5, 1..12),
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let (fast, oracle) = both(
                Box::new(LeastConnections::new(weighted)),
                Box::new(Scan { weighted, current: Vec::new() }),
                &weights,
                &ops,
            );
            prop_assert_eq!(fast, oracle);
        }
    }
}
