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

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// The 802.1Q interface of `uplink` for VLAN `vid`: `<uplink>.<vid>` when that fits in 15 bytes; else
/// the short form: the uplink name's first bytes, 4 hex digits of a hash of the whole uplink name, then
/// `.<vid>` (e.g. `enp4s0f0np0` + 2003 gives `enp4s0` + 4 hex + `.2003`, 15 bytes). Deterministic, so
/// every ADD, CHECK and the cleanup command find the same interface; two uplinks sharing the leading
/// bytes differ in the hash, and an interface found by this name is used only after its lower device
/// and VLAN id are verified, so a collision is refused, never shared.
pub fn uplink_vlan(uplink: &str, vid: u16) -> String {
    let plain = format!("{uplink}.{vid}");
    if plain.len() <= IFNAME_MAX {
        return plain;
    }
    let tail = format!("{:04x}.{vid}", fnv64(&["uplink", uplink]) >> 48);
    let mut head = IFNAME_MAX - tail.len();
    while !uplink.is_char_boundary(head) {
        head -= 1;
    }
    format!("{}{tail}", &uplink[..head])
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

    #[test]
    fn uplink_vlan_names_fit_and_stay_apart() {
        assert_eq!(uplink_vlan("enp4s0f0", 2003), "enp4s0f0.2003");
        assert_eq!(uplink_vlan("eth0", 5), "eth0.5");
        let a = uplink_vlan("enp4s0f0np0", 2003);
        let b = uplink_vlan("enp4s0f1np1", 2003);
        assert_eq!(a.len(), 15, "{a}");
        assert!(a.starts_with("enp4s0") && a.ends_with(".2003"), "{a}");
        assert_ne!(a, b, "uplinks sharing their first bytes differ in the hash");
        // Pinned: a change here renames the uplink pieces of every node.
        assert_eq!(a, "enp4s097e8.2003");
        assert_eq!(uplink_vlan("enp4s0f0np0", 7), "enp4s0f0np0.7");
        assert_ne!(
            uplink_vlan("enp4s0f0np0", 2003),
            uplink_vlan("enp4s0f0np0", 2004)
        );
        // A multi-byte name is cut on a character boundary.
        let u = uplink_vlan("éééééééééé", 2003);
        assert!(u.len() <= 15 && u.ends_with(".2003"), "{u}");
    }
}
