//! The router role, set up inside the pod's own netns so its image needs no iptables and no script:
//! IP forwarding for each family the pod got an address of, and an nftables nat chain per attachment
//! masquerading overlay traffic that leaves through `outInterface`.

use plumb_attach::naming;
use plumb_cni::result::IpConfig;
use plumb_net::link;
use plumb_net::session::Session;
use plumb_nft::{Family, Nft};
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
pub fn has_interface(pod: &mut Session, name: &str) -> io::Result<bool> {
    Ok(link::by_name(pod.route(), name)?.is_some())
}

/// An nftables handle in the pod: its socket opened on the session's worker (inside the pod's
/// namespace, no further setns), then used from the calling thread for the rest of the request.
pub fn nft(pod: &Session) -> io::Result<Nft> {
    Nft::from_fd(pod.run(plumb_nft::open_socket)?)
}

/// The forwarding settings a router ADD changed, with their values before, to put back if the ADD fails.
#[derive(Debug, Default)]
pub struct Changed {
    forwarding: Vec<(&'static str, String)>,
}

/// Masquerades traffic from each address's subnet leaving through `out` (when given), then turns on
/// forwarding for the families of `ips`; records in `changed` what it changed.
pub fn install(
    pod: &Session,
    nft: &Nft,
    chain_name: &str,
    ips: &[IpConfig],
    out: Option<&str>,
    changed: &mut Changed,
) -> io::Result<()> {
    if let Some(out) = out {
        for ipc in ips {
            let net = ipc.address.network();
            nft.add_masquerade_out(
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
        let before = pod.read_sysctl(key)?;
        let before = before.trim().to_string();
        if before != "1" {
            pod.write_sysctl(key, "1")?;
        }
        if before != "1" {
            changed.forwarding.push((key, before));
        }
    }
    Ok(())
}

/// Takes back a failed ADD's router setup: the attachment's chains (and the table, once empty) and
/// the forwarding settings it changed.
pub fn undo(pod: &Session, nft: &Nft, chain_name: &str, changed: Changed) -> io::Result<()> {
    for (key, before) in changed.forwarding {
        pod.write_sysctl(key, &before)?;
    }
    remove(nft, chain_name)
}

/// Removes the attachment's masquerade chains from the pod (`nft` is a handle in the pod, see [`nft`]), and the table of a family once it holds
/// no chain. Forwarding stays on: other attachments or the pod itself may rely on it.
pub fn remove(nft: &Nft, chain_name: &str) -> io::Result<()> {
    for f in [Family::Ip, Family::Ip6] {
        nft.delete_chain(f, TABLE, chain_name)?;
        // A table that never existed lists no chains; deleting it is then a no-op.
        if nft.list_chains(f, TABLE)?.is_empty() {
            nft.delete_table(f, TABLE)?;
        }
    }
    Ok(())
}

/// What CHECK finds missing of the router setup, if anything.
pub fn missing(
    pod: &Session,
    nft: &Nft,
    chain_name: &str,
    ips: &[IpConfig],
    out: Option<&str>,
) -> io::Result<Option<String>> {
    for v6 in [false, true] {
        if !ips.iter().any(|i| i.address.addr.is_ipv6() == v6) {
            continue;
        }
        let key = forwarding_key(v6);
        let on = pod.read_sysctl(key)?;
        if on.trim() != "1" {
            return Ok(Some(format!(
                "forwarding is off in the router pod ({} = {})",
                key.replace('/', "."),
                on.trim()
            )));
        }
        if out.is_some() && !nft.chain_exists(family(v6), TABLE, chain_name)? {
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
