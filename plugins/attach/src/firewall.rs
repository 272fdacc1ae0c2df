//! nftables rules of an attachment, over netlink (no `nft` binary): the MAC spoof check as a netdev
//! ingress chain on the host veth, and masquerade as a nat postrouting chain per address family. Chains
//! are named from (network, containerID, ifname), so DEL and GC remove them without the netns.

use crate::naming;
use plumb_cni::result::Cidr;
use plumb_nft::{Family, Nft};
use std::io;
use std::net::IpAddr;

/// Table (netdev family) holding one spoof-check chain per attachment.
pub const SPOOFCHK_TABLE: &str = "plumb_spoofchk";
/// Table (ip and ip6 families) holding one masquerade chain per attachment.
pub const MASQ_TABLE: &str = "plumb_masq";

/// Drops frames arriving from the container on `host_veth` whose source MAC is not `mac`.
pub fn add_spoofcheck(
    network: &str,
    cid: &str,
    ifname: &str,
    host_veth: &str,
    mac: [u8; 6],
) -> io::Result<()> {
    Nft::new()?.add_spoofcheck(
        SPOOFCHK_TABLE,
        &naming::chain(network, cid, ifname),
        host_veth,
        mac,
    )
}

/// Removes the spoof check of an attachment; nothing there is success.
pub fn del_spoofcheck(network: &str, cid: &str, ifname: &str) -> io::Result<()> {
    Nft::new()?.delete_chain(
        Family::Netdev,
        SPOOFCHK_TABLE,
        &naming::chain(network, cid, ifname),
    )
}

/// Whether the spoof check of an attachment is installed.
pub fn has_spoofcheck(network: &str, cid: &str, ifname: &str) -> io::Result<bool> {
    Nft::new()?.chain_exists(
        Family::Netdev,
        SPOOFCHK_TABLE,
        &naming::chain(network, cid, ifname),
    )
}

/// Masquerades traffic from `src` leaving `subnet`.
pub fn add_masquerade(
    network: &str,
    cid: &str,
    ifname: &str,
    src: IpAddr,
    subnet: Cidr,
) -> io::Result<()> {
    let family = if src.is_ipv4() {
        Family::Ip
    } else {
        Family::Ip6
    };
    Nft::new()?.add_masquerade(
        family,
        MASQ_TABLE,
        &naming::chain(network, cid, ifname),
        src,
        (subnet.addr, subnet.prefix),
    )
}

/// Removes the masquerade chains of an attachment (both families); nothing there is success. The
/// table of a family goes with its last chain: deleted only if empty, which the kernel decides at
/// commit time, so an ADD on another bridge (another lock) adding a chain at the same moment is safe.
pub fn del_masquerade(network: &str, cid: &str, ifname: &str) -> io::Result<()> {
    let nft = Nft::new()?;
    let chain = naming::chain(network, cid, ifname);
    for family in [Family::Ip, Family::Ip6] {
        if nft.chain_exists(family, MASQ_TABLE, &chain)? {
            nft.delete_chain(family, MASQ_TABLE, &chain)?;
            nft.delete_table_if_empty(family, MASQ_TABLE)?;
        }
    }
    Ok(())
}

/// GC: removes the chains of the config's network whose attachment is not in its
/// `cni.dev/valid-attachments`; without that list, nothing.
pub fn gc_invalid(conf: &plumb_cni::NetConf) -> io::Result<usize> {
    let Some(valid) = &conf.valid_attachments else {
        return Ok(0);
    };
    let keep: Vec<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    gc(&conf.name, &keep)
}

/// Removes the chains of `network` whose attachment is not in `keep`; returns how many.
pub fn gc(network: &str, keep: &[(&str, &str)]) -> io::Result<usize> {
    let nft = Nft::new()?;
    let prefix = naming::chain_prefix(network);
    let keep: Vec<String> = keep
        .iter()
        .map(|(c, i)| naming::chain(network, c, i))
        .collect();
    let mut removed = 0;
    for (family, table) in [
        (Family::Netdev, SPOOFCHK_TABLE),
        (Family::Ip, MASQ_TABLE),
        (Family::Ip6, MASQ_TABLE),
    ] {
        for chain in nft.list_chains(family, table)? {
            if chain.starts_with(&prefix) && !keep.contains(&chain) {
                nft.delete_chain(family, table, &chain)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}
