//! CHECK: what the reference bridge plugin verifies (container interface, its MAC and addresses, the
//! host veth on the right bridge) plus VLAN membership, MTU and the spoof-check chain; then IPAM CHECK.
//! Shared by every plugin whose pod port is the engine's.

use crate::host::{Host, Real};
use crate::naming;
use crate::os::os;
use crate::plan::PortPlan;
use crate::ports::DEFAULT_VLAN;
pub use crate::steps::BridgeCheck;
use plumb_cni::{code, CniError, CniResult, Request};
use plumb_net::addr::RouteEntry;
use plumb_net::link::format_mac;
use plumb_net::session::Session;
use plumb_net::vlan::Membership;
use std::collections::BTreeSet;

fn mismatch(msg: String) -> CniError {
    CniError::new(code::CHECK_MISMATCH, msg)
}

/// Verifies the attachment against `prevResult` and the plan; `pod` is the request's session in
/// CNI_NETNS (entered first, so a gone or host CNI_NETNS is answered as such whatever prevResult says:
/// see [`crate::os::enter_netns`]); `bridge_check` is the plugin's check of the bridge itself, run after
/// the pod side and before the host veth.
pub fn check(
    req: &Request,
    cfg: &PortPlan,
    pod: &mut Session,
    bridge_check: Option<BridgeCheck>,
) -> CniResult<()> {
    check_with(&mut Real::pod_first(pod), req, cfg, bridge_check)
}

/// [`check`] over any [`Host`].
pub fn check_with(
    h: &mut impl Host,
    req: &Request,
    cfg: &PortPlan,
    bridge_check: Option<BridgeCheck>,
) -> CniResult<()> {
    let prev = req
        .conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::config("CHECK needs \"prevResult\" in the configuration"))?;
    let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
    let want = prev
        .interfaces
        .iter()
        .position(|i| &i.name == ifname && i.sandbox.is_some())
        .ok_or_else(|| {
            mismatch(format!(
                "prevResult has no interface {ifname} inside a sandbox"
            ))
        })?;
    let want_mac = prev.interfaces[want].mac.clone();
    let want_ips: Vec<_> = prev
        .ips
        .iter()
        .filter(|i| i.interface == Some(want))
        .map(|i| (i.address.addr, i.address.prefix))
        .collect();
    let (c, addrs, table) = (|| -> std::io::Result<_> {
        let l = h.pod_link(ifname)?;
        let a = match &l {
            Some(l) => h.pod_addresses(l.index)?,
            None => Vec::new(),
        };
        let t = h.pod_routes()?;
        Ok((l, a, t))
    })()
    .map_err(os("cannot look into the container netns"))?;
    let c = c.ok_or_else(|| mismatch(format!("the container has no interface {ifname}")))?;
    if c.kind.as_deref() != Some("veth") {
        return Err(mismatch(format!(
            "container interface {ifname} is a {:?}, not a veth",
            c.kind
        )));
    }
    if let (Some(w), Some(m)) = (&want_mac, c.mac) {
        if !w.eq_ignore_ascii_case(&format_mac(&m)) {
            return Err(mismatch(format!(
                "container interface {ifname} has MAC {} but prevResult says {w}",
                format_mac(&m)
            )));
        }
    }
    for ip in &want_ips {
        if !addrs.contains(ip) {
            return Err(mismatch(format!(
                "container interface {ifname} lacks {}/{}",
                ip.0, ip.1
            )));
        }
    }
    if !cfg.disable_container_interface {
        check_routes(prev, ifname, c.index, &table)?;
    }
    h.open_host().map_err(os("cannot open a netlink socket"))?;
    let bridge = h
        .host_link(&cfg.bridge)
        .map_err(os("cannot look up the bridge"))?
        .ok_or_else(|| mismatch(format!("bridge {} does not exist", cfg.bridge)))?;
    if let Some(bridge_check) = bridge_check {
        h.bridge_check(bridge_check, &bridge)?;
    }
    let host_name = naming::host_veth(cid, ifname);
    let hv = h
        .host_link(&host_name)
        .map_err(os("cannot look up the host veth"))?
        .ok_or_else(|| mismatch(format!("host veth {host_name} does not exist")))?;
    if hv.controller != Some(bridge.index) {
        return Err(mismatch(format!(
            "host veth {host_name} is not a port of bridge {}",
            cfg.bridge
        )));
    }
    if let Some(mtu) = cfg.mtu {
        for (what, got) in [("container interface", c.mtu), ("host veth", hv.mtu)] {
            if got != mtu {
                return Err(mismatch(format!(
                    "{what} has MTU {got}, the config says {mtu}"
                )));
            }
        }
    }
    if cfg.uses_vlans() {
        let got = h
            .port_vlans(hv.index)
            .map_err(os("cannot list bridge VLANs"))?;
        let want = expected_vlans(cfg, bridge.vlan_filtering);
        if got != want {
            return Err(mismatch(format!(
                "host veth {host_name} VLANs are {got:?}, the config needs {want:?}"
            )));
        }
    }
    if cfg.macspoofchk
        && !h
            .has_spoofcheck(&req.conf.name, cid, ifname)
            .map_err(os("cannot read nftables"))?
    {
        return Err(mismatch(format!(
            "the MAC spoof check of {host_name} is missing"
        )));
    }
    match &cfg.ipam_type {
        Some(ipam) => h.ipam_check(ipam, req),
        None => Ok(()),
    }
}

/// Every route of `prevResult` is in the container's main table out of its interface, via the next hop
/// ADD gave it: the route's own, else the first gateway of its family (as the reference checks them).
fn check_routes(
    prev: &plumb_cni::AddResult,
    ifname: &str,
    index: u32,
    table: &[RouteEntry],
) -> CniResult<()> {
    for rt in &prev.routes {
        let dst = rt.dst.network();
        let gw = rt.gw.or_else(|| {
            prev.ips
                .iter()
                .filter(|i| i.address.addr.is_ipv4() == dst.addr.is_ipv4())
                .find_map(|i| i.gateway)
        });
        // A route the result gives without a next hop may also be there without one: ADD accepts
        // a route the kernel already holds (such as the subnet's own prefix route).
        let found = table.iter().any(|e| {
            e.dst == dst.addr
                && e.prefix == dst.prefix
                && e.oif == Some(index)
                && (e.gw == gw || (rt.gw.is_none() && e.gw.is_none()))
        });
        if !found {
            return Err(mismatch(format!(
                "route to {}/{}{} is missing from container interface {ifname}",
                dst.addr,
                dst.prefix,
                gw.map(|g| format!(" via {g}")).unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// The VLAN memberships a port must have for the config.
pub fn expected_vlans(cfg: &PortPlan, _filtering: Option<bool>) -> BTreeSet<Membership> {
    let mut s = BTreeSet::new();
    if cfg.preserve_default_vlan && cfg.vlan != DEFAULT_VLAN {
        s.insert(Membership {
            vid: DEFAULT_VLAN,
            pvid: cfg.vlan == 0,
            untagged: true,
        });
    }
    if cfg.vlan != 0 {
        s.insert(Membership {
            vid: cfg.vlan,
            pvid: true,
            untagged: true,
        });
    }
    for &(lo, hi) in &cfg.trunk {
        for vid in lo..=hi {
            if vid != cfg.vlan {
                s.insert(Membership {
                    vid,
                    pvid: false,
                    untagged: false,
                });
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(vid: u16, pvid: bool, untagged: bool) -> Membership {
        Membership {
            vid,
            pvid,
            untagged,
        }
    }

    #[test]
    fn expected_vlans_of_access_trunk_and_default_vlan() {
        let plan = |vlan, trunk: &[(u16, u16)], preserve| PortPlan {
            vlan,
            trunk: trunk.to_vec(),
            preserve_default_vlan: preserve,
            ..PortPlan::default()
        };
        // An access VLAN inside the trunk stays the untagged PVID, not a tagged member.
        let got = expected_vlans(&plan(20, &[(19, 21)], false), Some(true));
        let want = BTreeSet::from([m(19, false, false), m(20, true, true), m(21, false, false)]);
        assert_eq!(got, want);
        // preserveDefaultVlan keeps VLAN 1 untagged; it is the PVID only without an access VLAN.
        let got = expected_vlans(&plan(0, &[(5, 5)], true), Some(true));
        assert_eq!(got, BTreeSet::from([m(1, true, true), m(5, false, false)]));
        let got = expected_vlans(&plan(7, &[], true), Some(true));
        assert_eq!(got, BTreeSet::from([m(1, false, true), m(7, true, true)]));
        assert!(expected_vlans(&plan(0, &[], false), None).is_empty());
    }
}
