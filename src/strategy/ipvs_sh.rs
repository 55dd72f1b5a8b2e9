//! Linux IPVS source hashing, `ipvsadm -s sh` (`net/netfilter/ipvs/ip_vs_sh.c`, Linux
//! 4.7 and later), as kube-proxy's IPVS mode runs it with `--ipvs-scheduler sh`: a table
//! of 256 buckets filled in turn with the destinations, each taking `weight` consecutive
//! buckets before the next (`ip_vs_sh_reassign`, cycling through the list until the table
//! is full), and a connection from address `a` goes to bucket `hash_32(a, 8)` =
//! `(a × 0x61C88647) >> 24` (the address in host order; the port counts only with the
//! `sh-port` flag, which kube-proxy does not set). A destination of weight 0 keeps its
//! bucket but takes nothing (`is_unavailable`: the connection is refused).
//!
//! The destinations are the servers up, in scenario order: kube-proxy removes an endpoint
//! that is not ready and the table is reassigned over the others, so most clients move.
//! Which endpoint fills which buckets follows the order in which kube-proxy added them (Go
//! map order, then IPVS's head insertion): lbsim takes scenario order, so the shape of the
//! split is IPVS's and the server a given client reaches is one draw of it.
//!
//! **The key.** A connection's client address is [`super::hash::client_address`] of the
//! key (at connection level, its slot).

use super::hash::client_address;
use super::registry::{About, Parameterless, PickCost, Reads, Scanned, Split, Table};
use super::{Backend, Backends, BuiltFor, PickContext, Strategy};

/// Buckets of the table (`IP_VS_SH_TAB_BITS` = 8).
const BITS: u32 = 8;

/// The kernel's `hash_32(val, bits)`: multiplication by `GOLDEN_RATIO_32`, top bits.
fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(0x61c8_8647) >> (32 - bits)
}

/// IPVS `sh`.
#[derive(Debug, Default)]
pub struct IpvsSh {
    /// Bucket → destination (empty when no server is up).
    table: Vec<usize>,
    /// The view it was built for.
    built_for: BuiltFor,
}

impl IpvsSh {
    /// `ip_vs_sh_reassign` over the destinations `dests` (index, weight), in list order.
    fn reassign(dests: &[(usize, u32)]) -> Vec<usize> {
        if dests.is_empty() {
            return Vec::new();
        }
        let (mut p, mut count) = (0, 0u32);
        (0..1usize << BITS)
            .map(|_| {
                let (d, w) = dests[p];
                count += 1;
                if count >= w {
                    p = (p + 1) % dests.len();
                    count = 0;
                }
                d
            })
            .collect()
    }
}

impl Strategy for IpvsSh {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        if self.built_for.changed(backends) {
            let dests: Vec<(usize, u32)> = (0..backends.len())
                .filter(|&i| backends.up(i))
                .map(|i| (i, backends.weight(i)))
                .collect();
            self.table = Self::reassign(&dests);
            self.built_for.built(backends);
        }
        let bucket = hash_32(u32::from(client_address(ctx.key)), BITS) as usize;
        let d = *self.table.get(bucket)?;
        (backends.weight(d) > 0).then_some(d)
    }

    fn indexes_view(&self) -> bool {
        true
    }

    fn indexes_in_flight(&self) -> bool {
        // The table depends on who is up and on the weights, not on requests in flight.
        false
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        self.built_for.told(backend, view);
    }
}

/// `kind = "ipvs_sh"`: no parameters.
impl Parameterless for IpvsSh {
    const ABOUT: About = About {
        kind: "ipvs_sh",
        aliases: &[],
        follows: "Linux IPVS sh, as kube-proxy's IPVS mode runs it (ip_vs_sh.c: 256 buckets filled by weight, bucket hash_32 of the client address)",
        knobs: &[],
        reads: Reads::WEIGHTS,
        split: Split::Dynamic,
    };
    /// A bucket lookup; the table is rebuilt only when a destination goes up or down.
    const COST: PickCost = PickCost {
        scanned: Scanned::Few(0),
        table: Some(Table::Slots(1 << BITS)),
    };
    fn start(_: usize, _: crate::rng::SimRng) -> IpvsSh {
        IpvsSh::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::time::Nanos;

    /// hash_32 keeps the top 8 bits of val × 0x61C88647 (mod 2³²): 1 gives 0x61, 2 gives
    /// 0xc3 (0xc391_0c8e).
    #[test]
    fn buckets_are_the_top_byte_of_the_golden_ratio_product() {
        let a = 0x7f01_0000u32;
        assert_eq!(hash_32(a, 8), (a.wrapping_mul(0x61c8_8647)) >> 24);
        assert_eq!(hash_32(1, 8), 0x61);
        assert_eq!(hash_32(2, 8), 0xc3);
    }

    #[test]
    fn the_table_gives_each_destination_weight_buckets_in_turn() {
        let t = IpvsSh::reassign(&[(0, 2), (1, 1), (2, 3)]);
        assert_eq!(t.len(), 256);
        assert_eq!(&t[..12], &[0, 0, 1, 2, 2, 2, 0, 0, 1, 2, 2, 2]);
        // 256 = 42 × 6 + 4: two more for the first, one for the second, one for the third.
        let count = |d| t.iter().filter(|&&x| x == d).count();
        assert_eq!((count(0), count(1), count(2)), (86, 43, 127));
    }

    #[test]
    fn a_removed_destination_reassigns_the_table_until_it_returns_and_weight_zero_takes_nothing() {
        let mut b = Balancer::new(Box::new(IpvsSh::default()), &[1, 1, 1]);
        let picks: Vec<_> = (0..300).map(|k| b.route(Nanos(0), k)).collect();
        assert!(picks.iter().all(Option::is_some));
        b.set_up(1, false);
        assert!((0..300).all(|k| b.route(Nanos(0), k) != Some(1)));
        // Back up: the table is the first one again.
        b.set_up(1, true);
        let again: Vec<_> = (0..300).map(|k| b.route(Nanos(0), k)).collect();
        assert_eq!(again, picks);
        for i in 0..3 {
            b.set_up(i, false);
        }
        assert_eq!(b.route(Nanos(0), 0), None);
        let mut z = Balancer::new(Box::new(IpvsSh::default()), &[0, 1]);
        let to_zero = (0..300).filter(|&k| z.route(Nanos(0), k).is_none()).count();
        assert!(to_zero > 0 && to_zero < 300, "{to_zero}");
    }
}
