//! A map key for a client's address that hashes cheaply: the handlers look
//! a peer up in the lanes and in the guard's records on every request, and
//! `SocketAddr`'s own `Hash` feeds the hasher four times (each a SipHash
//! round trip); this one feeds it one word (two for IPv6). Equal exactly
//! when the addresses are, so nothing changes but the cost.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

/// A peer address, as a hash-map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerKey(pub SocketAddr);

impl Hash for PeerKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self.0 {
            SocketAddr::V4(a) => {
                h.write_u64(u64::from(a.ip().to_bits()) << 16 | u64::from(a.port()))
            }
            SocketAddr::V6(a) => {
                h.write_u128(a.ip().to_bits());
                h.write_u16(a.port());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_are_equal_exactly_when_the_addresses_are() {
        let addrs: Vec<SocketAddr> = [
            "10.0.0.1:80",
            "10.0.0.1:81",
            "10.0.0.2:80",
            "0.0.0.80:1",
            "[::1]:80",
            "[::1]:81",
            "[::ffff:10.0.0.1]:80",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let keys: HashSet<PeerKey> = addrs.iter().copied().map(PeerKey).collect();
        assert_eq!(keys.len(), addrs.len());
        for a in &addrs {
            assert!(keys.contains(&PeerKey(*a)), "{a}");
        }
    }
}
