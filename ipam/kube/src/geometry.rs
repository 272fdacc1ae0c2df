//! What a block is: an aligned /26 (IPv4) or /120 (IPv6) of a space, its subnet, size and object
//! name, and the space's label hash. Shared by the planning (`blocks.rs`), the labels and the
//! block positions, none of which this module imports.

use crate::crd::IPBlock;
use plumb_ipam::range::{from_int, Family, Subnet};
use std::net::IpAddr;

/// Prefix length of IPv4 blocks (64 addresses).
pub const V4_BLOCK_PREFIX: u8 = 26;
/// Prefix length of IPv6 blocks (256 addresses).
pub const V6_BLOCK_PREFIX: u8 = 120;

/// The block holding an address.
pub fn block_of(ip: IpAddr) -> Subnet {
    let prefix = match Family::of(ip) {
        Family::V4 => V4_BLOCK_PREFIX,
        Family::V6 => V6_BLOCK_PREFIX,
    };
    Subnet::parse(&format!("{ip}/{prefix}"), "block").expect("a block of a valid address")
}

/// Number of addresses in a subnet (saturating at `u128::MAX` for `::/0`, which a hand-made object
/// could name).
pub fn block_size(net: &Subnet) -> u128 {
    1u128
        .checked_shl((net.family().bits() - net.prefix) as u32)
        .unwrap_or(u128::MAX)
}

/// An 8-hex-digit hash of a space name, used as a label value (names may hold characters labels cannot).
pub fn space_hash(space: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in space.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// The object name of a block: readable, unique per (space, block), a valid Kubernetes name.
pub fn block_name(space: &str, block: &Subnet) -> String {
    let clean: String = space
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cidr: String = block
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!(
        "{}-{}-{}",
        clean.trim_matches('-'),
        space_hash(space),
        cidr.trim_matches('-')
    )
    .trim_start_matches('-')
    .to_string()
}

/// The block's subnet, if its `cidr` parses.
pub fn subnet(b: &IPBlock) -> Option<Subnet> {
    Subnet::parse(&b.spec.cidr, "spec.cidr").ok()
}

/// The address at an offset of a block.
pub fn addr_at(block: &Subnet, offset: u128) -> IpAddr {
    from_int(block.family(), block.first().wrapping_add(offset))
}
