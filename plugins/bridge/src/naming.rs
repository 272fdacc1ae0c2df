//! Names derived from an attachment, so DEL and GC find what ADD made without the container netns:
//! the host veth and the nftables chains are named from a stable hash of (containerID, ifname).

/// FNV-1a, 64 bit: stable across builds and releases (unlike std's hasher), which names on disk need.
pub fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            // A separator byte no interface name or container ID holds, so ("ab","c") != ("a","bc").
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// 12 hex characters identifying an attachment.
pub fn attachment_hash(container_id: &str, ifname: &str) -> String {
    format!("{:012x}", fnv64(&[container_id, ifname]) >> 16)
}

/// 8 hex characters identifying a network name.
pub fn network_hash(network: &str) -> String {
    format!("{:08x}", fnv64(&[network]) >> 32)
}

/// The host-side veth of an attachment: `plb` + 12 hex characters (15 bytes, the Linux limit).
pub fn host_veth(container_id: &str, ifname: &str) -> String {
    format!("plb{}", attachment_hash(container_id, ifname))
}

/// The nftables chain of an attachment in a network: `p<network hash>_<attachment hash>`. The leading
/// letter matters: the `nft` command line cannot name a chain that starts with a digit.
pub fn chain(network: &str, container_id: &str, ifname: &str) -> String {
    format!(
        "p{}_{}",
        network_hash(network),
        attachment_hash(container_id, ifname)
    )
}

/// The chain-name prefix shared by every attachment of a network (for GC).
pub fn chain_prefix(network: &str) -> String {
    format!("p{}_", network_hash(network))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_short_and_distinct() {
        assert_eq!(host_veth("abc", "eth0").len(), 15);
        assert_eq!(host_veth("abc", "eth0"), host_veth("abc", "eth0"));
        assert_ne!(host_veth("abc", "eth0"), host_veth("abc", "net1"));
        assert_ne!(fnv64(&["ab", "c"]), fnv64(&["a", "bc"]));
        // Pinned: a change here renames every live veth and chain and breaks DEL after an upgrade.
        assert_eq!(host_veth("0123456789abcdef", "eth0"), "plbef11d1f54fd3");
        // The published FNV-1a 64 test vector for "a".
        assert_eq!(fnv64(&["a"]), 0xaf63_dc4c_8601_ec8c);
        assert!(chain("net", "abc", "eth0").starts_with(&chain_prefix("net")));
        assert!(
            chain("net", "abc", "eth0").starts_with('p'),
            "nft's command line needs a letter first"
        );
        assert_ne!(chain_prefix("net"), chain_prefix("other"));
    }
}
