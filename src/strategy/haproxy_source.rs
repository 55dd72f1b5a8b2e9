//! HAProxy `balance source` with `hash-type map-based` (its default; HAProxy 2.6,
//! `src/backend.c` `get_server_sh`, `src/lb_map.c` `map_get_server_hash`): the client's
//! IPv4 address, as a 32-bit number in host order (the XOR of the address's 32-bit words,
//! which for IPv4 is the one word), indexes the static map of the usable servers —
//! `map.srv[hash % tot_weight]`, the very map `static-rr` walks ([`super::StaticRr`]),
//! rebuilt over the servers still up when one goes down or comes back, so that a server's
//! failure moves most clients, not only its own (what `consistent` hashing avoids).
//!
//! **The key.** A connection's client address is [`super::hash::client_address`] of the
//! key: at connection level (`[connections]`) the connection's slot, whose connections
//! live mode opens from exactly that loopback address, so a replay `--via haproxy`
//! (`balance source`) sends every connection where the simulator does.

use super::SpecError;
use super::hash::client_address;
use super::registry::{About, Kind, NoParams, PickCost, Reads, Split};
use super::{Backend, PickContext, StaticRr, Strategy};

/// HAProxy `balance source`, map-based.
#[derive(Debug, Default)]
pub struct HaproxySource {
    map: StaticRr,
}

impl Strategy for HaproxySource {
    fn pick(&mut self, backends: &[Backend], ctx: &PickContext) -> Option<usize> {
        let map = self.map.slots(backends);
        if map.is_empty() {
            return None;
        }
        let hash = u32::from(client_address(ctx.key));
        Some(map[(hash as usize) % map.len()])
    }
}

/// `kind = "haproxy_source"`: no parameters.
impl Kind for HaproxySource {
    type Params = NoParams;
    const ABOUT: About = About {
        kind: "haproxy_source",
        aliases: &[],
        follows: "HAProxy balance source, hash-type map-based (backend.c get_server_sh, HAProxy 2.6: the client's IPv4 address modulo the static-rr map of the servers up)",
        knobs: &[],
        reads: Reads::WEIGHTS,
        split: Split::Dynamic,
    };
    fn validate(_: &NoParams, _: usize) -> Result<(), SpecError> {
        Ok(())
    }
    fn build(_: &NoParams, _: usize, _: crate::rng::SimRng) -> HaproxySource {
        HaproxySource::default()
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

    /// 127.1.0.0 is 0x7f01_0000 = 2130771968; the map of weights 3:3:2:2:2:2:2:2 has 18
    /// slots (`a b c d e a b f g h c a b d e f g h`), and 2130771968 % 18 = 8: slot 8 is server g.
    #[test]
    fn the_address_modulo_the_static_rr_map() {
        let mut b = Balancer::new(
            Box::new(HaproxySource::default()),
            &[3, 3, 2, 2, 2, 2, 2, 2],
        );
        assert_eq!(2_130_771_968u64 % 18, 8);
        assert_eq!(b.route(Nanos(0), 0), Some(6));
        let map = StaticRr::map(&[3, 3, 2, 2, 2, 2, 2, 2]);
        for k in 0..200u64 {
            let h = u64::from(u32::from(client_address(k)));
            assert_eq!(b.route(Nanos(0), k), Some(map[(h % 18) as usize]));
        }
    }

    #[test]
    fn a_down_server_rebuilds_the_map_over_the_others() {
        let mut b = Balancer::new(Box::new(HaproxySource::default()), &[1, 1, 1]);
        b.set_up(1, false);
        // The map is now `a c`: even addresses go to a, odd ones to c.
        for k in 0..50u64 {
            let odd = u32::from(client_address(k)) % 2 == 1;
            assert_eq!(b.route(Nanos(0), k), Some(if odd { 2 } else { 0 }));
        }
        b.set_up(0, false);
        b.set_up(2, false);
        assert_eq!(b.route(Nanos(0), 0), None);
    }
}
