//! Caps on TLS handshakes in progress: across all clients (`api.max_pending_handshakes`) and per
//! source address (`api.max_handshakes_per_address`). A handshake costs a task, a buffer and, once
//! the client certificate arrives, signature checks; a client that opens many TCP connections and
//! never finishes them would otherwise hold them all for `api.handshake_timeout_secs` each. These
//! caps are apart from `api.max_connections`, which counts connections once they are served.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct HandshakeLimits {
    max_total: u32,
    max_per_address: u32,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    total: u32,
    by_address: HashMap<IpAddr, u32>,
}

/// Why a handshake was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRefusal {
    Total,
    Address,
}

/// One handshake in progress; dropping it (done, failed or timed out) frees its place.
pub struct HandshakeSlot {
    limits: Arc<HandshakeLimits>,
    address: IpAddr,
}

impl HandshakeLimits {
    pub fn new(max_total: u32, max_per_address: u32) -> Arc<Self> {
        Arc::new(Self { max_total, max_per_address, pending: Mutex::default() })
    }

    pub fn try_begin(self: &Arc<Self>, address: IpAddr) -> Result<HandshakeSlot, HandshakeRefusal> {
        let address = source_of(address);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.total >= self.max_total {
            return Err(HandshakeRefusal::Total);
        }
        let of_address = pending.by_address.entry(address).or_default();
        if *of_address >= self.max_per_address {
            return Err(HandshakeRefusal::Address);
        }
        *of_address += 1;
        pending.total += 1;
        Ok(HandshakeSlot { limits: self.clone(), address })
    }
}

/// What counts as one source: an IPv4 address, or an IPv6 /64 (one host is routinely given a whole
/// /64, so counting single IPv6 addresses would not cap anything).
fn source_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut pending = self.limits.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.total -= 1;
        if let Some(n) = pending.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                pending.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_cannot_take_every_pending_handshake() {
        let limits = HandshakeLimits::new(3, 2);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = limits.try_begin(a).unwrap();
        let _second = limits.try_begin(a).unwrap();
        assert_eq!(limits.try_begin(a).err(), Some(HandshakeRefusal::Address));
        // Another address still gets in, up to the total.
        let _other = limits.try_begin(b).unwrap();
        assert_eq!(limits.try_begin(b).err(), Some(HandshakeRefusal::Total));
        // A finished handshake frees its place for its address.
        drop(first);
        assert!(limits.try_begin(a).is_ok());
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_source() {
        let limits = HandshakeLimits::new(10, 1);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _held = limits.try_begin(one).unwrap();
        assert_eq!(limits.try_begin(same_64).err(), Some(HandshakeRefusal::Address));
        assert!(limits.try_begin(other_64).is_ok());
        // An IPv4-mapped address is its IPv4 address.
        let _v4 = limits.try_begin(IpAddr::from([192, 0, 2, 1])).unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(limits.try_begin(mapped).err(), Some(HandshakeRefusal::Address));
    }

    #[test]
    fn the_per_address_count_is_forgotten_when_it_reaches_zero() {
        let limits = HandshakeLimits::new(10, 1);
        let a = IpAddr::from([10, 0, 0, 1]);
        drop(limits.try_begin(a).unwrap());
        assert!(limits.pending.lock().unwrap().by_address.is_empty());
        assert_eq!(limits.pending.lock().unwrap().total, 0);
    }
}
