//! The router role, set up inside the pod's own netns so its image needs no iptables and no script:
//! IP forwarding for each family the pod got an address of, and an nftables nat chain per attachment
//! masquerading overlay traffic that leaves through `outInterface`.

use crate::host::{Ns, VxlanHost};
use plumb_attach::naming;
use plumb_cni::result::IpConfig;
use plumb_nft::Family;
use std::io;

/// nftables table (families ip and ip6) in the router pod holding one masquerade chain per attachment.
pub const TABLE: &str = "plumb_router";

fn forwarding_key(v6: bool) -> &'static str {
    if v6 {
        "net/ipv6/conf/all/forwarding"
    } else {
        "net/ipv4/ip_forward"
    }
}

fn family(v6: bool) -> Family {
    if v6 {
        Family::Ip6
    } else {
        Family::Ip
    }
}

/// Whether the pod has an interface named `name`.
pub fn has_interface(h: &mut impl VxlanHost, name: &str) -> io::Result<bool> {
    Ok(h.link(Ns::Pod, name)?.is_some())
}

/// The forwarding settings a router ADD changed, with their values before, to put back if the ADD fails.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    forwarding: Vec<(&'static str, String)>,
}

/// Masquerades traffic from each address's subnet leaving through `out` (when given), then turns on
/// forwarding for the families of `ips`; records in `changed` what it changed.
pub fn install(
    h: &mut impl VxlanHost,
    chain_name: &str,
    ips: &[IpConfig],
    out: Option<&str>,
    changed: &mut Changed,
) -> io::Result<()> {
    if let Some(out) = out {
        for ipc in ips {
            let net = ipc.address.network();
            h.add_masquerade_out(
                family(net.addr.is_ipv6()),
                TABLE,
                chain_name,
                (net.addr, net.prefix),
                out,
            )?;
        }
    }
    for v6 in [false, true] {
        if !ips.iter().any(|i| i.address.addr.is_ipv6() == v6) {
            continue;
        }
        let key = forwarding_key(v6);
        let before = h.read_sysctl(Ns::Pod, key)?;
        let before = before.trim().to_string();
        if before != "1" {
            h.write_sysctl(Ns::Pod, key, "1")?;
            changed.forwarding.push((key, before));
        }
    }
    Ok(())
}

/// Takes back a failed ADD's router setup, newest first: the forwarding settings it changed, then
/// the attachment's chains (and the table, once empty).
pub fn undo(h: &mut impl VxlanHost, chain_name: &str, changed: Changed) -> io::Result<()> {
    for (key, before) in changed.forwarding.into_iter().rev() {
        h.write_sysctl(Ns::Pod, key, &before)?;
    }
    remove(h, chain_name)
}

/// Removes the attachment's masquerade chains from the pod, and the table of a family once it holds
/// no chain. Forwarding stays on: other attachments or the pod itself may rely on it.
pub fn remove(h: &mut impl VxlanHost, chain_name: &str) -> io::Result<()> {
    for f in [Family::Ip, Family::Ip6] {
        h.delete_chain(f, TABLE, chain_name)?;
        // A table that never existed lists no chains; deleting it is then a no-op.
        if h.list_chains(f, TABLE)?.is_empty() {
            h.delete_table(f, TABLE)?;
        }
    }
    Ok(())
}

/// What CHECK finds missing of the router setup, if anything.
pub fn missing(
    h: &mut impl VxlanHost,
    chain_name: &str,
    ips: &[IpConfig],
    out: Option<&str>,
) -> io::Result<Option<String>> {
    for v6 in [false, true] {
        if !ips.iter().any(|i| i.address.addr.is_ipv6() == v6) {
            continue;
        }
        let key = forwarding_key(v6);
        let on = h.read_sysctl(Ns::Pod, key)?;
        if on.trim() != "1" {
            return Ok(Some(format!(
                "forwarding is off in the router pod ({} = {})",
                key.replace('/', "."),
                on.trim()
            )));
        }
        if out.is_some() && !h.chain_exists(family(v6), TABLE, chain_name)? {
            return Ok(Some(format!(
                "the masquerade chain {chain_name} is missing from table {} {TABLE} in the router pod",
                family(v6).name()
            )));
        }
    }
    Ok(None)
}

/// The masquerade chain name of an attachment (the same scheme as plumb-bridge's chains).
pub fn chain(network: &str, container_id: &str, ifname: &str) -> String {
    naming::chain(network, container_id, ifname)
}
