//! `isGateway`: the gateway address on the bridge, or, with `vlan`, on a VLAN gateway interface
//! `<bridge>.<vlan>` that ADD creates under the bridge lock and DEL removes when no port of that VLAN
//! remains.

use crate::config::BridgeConfig;
use crate::host::BridgeHost;
use plumb_attach::attach::{OwnStep, Undo};
use plumb_attach::os::os;
use plumb_cni::result::{Cidr, IpConfig};
use plumb_cni::{CniError, CniResult};
use plumb_net::link::Link;
use plumb_net::nl::Route;
use plumb_net::vlan::Target;
use std::net::IpAddr;

/// The undo step of a VLAN gateway interface this ADD created (label `vlan gateway`): removed if no
/// other port uses its VLAN.
#[derive(Debug)]
pub struct VlanGateway {
    /// The bridge.
    pub bridge: String,
    /// The VLAN.
    pub vid: u16,
    /// Ports whose VLANs do not keep the gateway: the config's `uplink` (it carries the pods'
    /// VLANs) and the failed ADD's own host veth (its undo comes after this one).
    pub ignore: Vec<String>,
}

impl OwnStep for VlanGateway {
    fn label(&self) -> &'static str {
        "vlan gateway"
    }

    fn undo(&self, host: &mut Route) -> Result<(), String> {
        self.take_back(host)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl VlanGateway {
    /// [`OwnStep::undo`] over any [`BridgeHost`].
    pub fn take_back(&self, host: &mut dyn BridgeHost) -> Result<(), String> {
        let ignore: Vec<&str> = self.ignore.iter().map(String::as_str).collect();
        remove_vlan_gateway_if_unused(host, &self.bridge, self.vid, &ignore)
            .map_err(|e| e.to_string())
    }
}

/// Puts each gateway address on the gateway interface and enables forwarding. Each thing it makes is
/// pushed on `undo` the moment it exists (the VLAN gateway interface, each address it adds), so a
/// failed ADD takes back exactly those and never an address that was there before. Under the bridge
/// lock no other ADD can have come to rely on an address this one added. Forwarding, once on, stays on.
///
/// The reference's rules for what else may be there: the exact `gateway/prefix` already present is
/// left alone; otherwise every other IPv4 address of the interface, and every IPv6 address whose
/// subnet overlaps the gateway's, is in the way. `forceAddress` removes those, else ADD fails. After
/// adding an address to the bridge its MAC is pinned to the one it had before the new port joined, so
/// it no longer follows the lowest port MAC as ports come and go.
pub fn ensure(
    nl: &mut dyn BridgeHost,
    cfg: &BridgeConfig,
    bridge: &Link,
    ips: &[IpConfig],
    port: &str,
    undo: &mut Vec<Undo>,
) -> CniResult<()> {
    let gw_link = if cfg.vlan != 0 {
        let (l, created) = vlan_gateway(nl, cfg, bridge)?;
        if created {
            undo.push(Undo::Own(Box::new(VlanGateway {
                bridge: cfg.bridge.clone(),
                vid: cfg.vlan,
                ignore: cfg
                    .uplink
                    .iter()
                    .cloned()
                    .chain([port.to_string()])
                    .collect(),
            })));
        }
        l
    } else {
        bridge.clone()
    };
    let (mut forward_v4, mut forward_v6) = (false, false);
    // `results::require_gateways` made sure every address has one.
    for ipc in ips {
        let subnet = ipc.address.network();
        let Some(gw) = ipc.gateway else { continue };
        if gw.is_ipv4() {
            forward_v4 = true;
        } else {
            forward_v6 = true;
        }
        // Listed again for each gateway: an address added for an earlier one counts too.
        let existing = nl
            .addresses(gw_link.index)
            .map_err(os("cannot list gateway addresses"))?;
        if existing.contains(&(gw, subnet.prefix)) {
            // Already there (another pod's ADD, or the admin): the MAC is pinned all the same, as the
            // reference v1.10 does, so it never follows the lowest port MAC.
            if cfg.vlan == 0 {
                pin_mac(nl, bridge)?;
            }
            continue;
        }
        let in_the_way: Vec<(IpAddr, u8)> = existing
            .into_iter()
            .filter(|&(a, p)| {
                a.is_ipv4() == gw.is_ipv4()
                    && (a.is_ipv4()
                        || Cidr::new(a, p).is_ok_and(|c| c.contains(gw))
                        || subnet.contains(a))
            })
            .collect();
        if let Some((other, p)) = in_the_way.first() {
            if !cfg.force_address {
                return Err(CniError::config(format!(
                    "{} already has {other}/{p}, which is not the gateway address {gw}/{}; set \"forceAddress\": true to replace it",
                    gw_link.name, subnet.prefix
                )));
            }
        }
        for (other, p) in in_the_way {
            nl.del_address(gw_link.index, other, p)
                .map_err(os("cannot remove the old gateway address"))?;
        }
        nl.add_address(gw_link.index, gw, subnet.prefix)
            .map_err(os("cannot add the gateway address"))?;
        undo.push(Undo::GatewayAddress {
            index: gw_link.index,
            ip: gw,
            prefix: subnet.prefix,
        });
        if cfg.vlan == 0 {
            pin_mac(nl, bridge)?;
        }
    }
    for (on, key) in [
        (forward_v4, "net/ipv4/ip_forward"),
        (forward_v6, "net/ipv6/conf/all/forwarding"),
    ] {
        // Written only when it is off (writing 1 over 1 changes nothing): reading it through
        // rtnetlink costs no /proc/sys/net lookup, which walks every namespace's entry (see
        // plumb_net::sysctl). If the kernel cannot say, it is written as before.
        if on && !matches!(nl.forwarding(key.starts_with("net/ipv6")), Ok(Some(true))) {
            nl.sysctl(key, "1")
                .map_err(os("cannot enable forwarding"))?;
        }
    }
    Ok(())
}

/// Sets the bridge's MAC explicitly to the one it had before this ADD attached its port (or, if that was
/// none, the current one), which stops the kernel from re-deriving it from the lowest port MAC.
fn pin_mac(nl: &mut dyn BridgeHost, before: &Link) -> CniResult<()> {
    let valid = |m: &[u8; 6]| *m != [0; 6] && m[0] & 1 == 0;
    let mac = match before.mac.filter(valid) {
        Some(m) => Some(m),
        None => nl
            .link_by_index(before.index)
            .map_err(os("cannot read the bridge"))?
            .and_then(|l| l.mac)
            .filter(valid),
    };
    match mac {
        Some(m) => nl
            .set_mac(before, m)
            .map_err(os("cannot pin the bridge MAC")),
        None => Ok(()),
    }
}

/// Creates (or finds) `<bridge>.<vlan>` and makes the bridge itself a member of that VLAN.
fn vlan_gateway(
    nl: &mut dyn BridgeHost,
    cfg: &BridgeConfig,
    bridge: &Link,
) -> CniResult<(Link, bool)> {
    let name = cfg.vlan_gateway_name();
    if let Some(l) = nl
        .link_by_name(&name)
        .map_err(os("cannot look up the VLAN gateway interface"))?
    {
        if l.kind.as_deref() != Some("vlan") {
            return Err(CniError::config(format!("{name} exists and is not a VLAN interface; remove it or change \"bridge\"/\"vlan\"")));
        }
        return Ok((l, false));
    }
    nl.vlan_add(bridge, Target::BridgeSelf, cfg.vlan, cfg.vlan, false, false)
        .map_err(os("cannot add the VLAN to the bridge itself"))?;
    nl.create_vlan(&name, bridge, cfg.vlan)
        .map_err(os("cannot create the VLAN gateway interface"))?;
    let l = nl
        .link_by_name(&name)
        .map_err(os("cannot look up the VLAN gateway interface"))?
        .ok_or_else(|| {
            CniError::new(
                plumb_cni::code::IO_FAILURE,
                format!("{name} vanished after creation"),
            )
        })?;
    nl.set_up(&l)
        .map_err(os("cannot bring the VLAN gateway interface up"))?;
    Ok((l, true))
}

/// Removes `<bridge>.<vlan>` (and the bridge's own membership of the VLAN) when no port of the bridge
/// is a member of that VLAN any more. Ports named in `ignore` do not count: the uplink carries the VLAN
/// for the pods (a trunk uplink for good), and a failed ADD's own port is about to go.
pub fn remove_vlan_gateway_if_unused(
    nl: &mut dyn BridgeHost,
    bridge: &str,
    vid: u16,
    ignore: &[&str],
) -> CniResult<()> {
    let name = format!("{bridge}.{vid}");
    let Some(bridge) = nl
        .link_by_name(bridge)
        .map_err(os("cannot look up the bridge"))?
    else {
        return Ok(());
    };
    let ports: Vec<u32> = nl
        .links()
        .map_err(os("cannot list links"))?
        .into_iter()
        .filter(|l| l.controller == Some(bridge.index) && !ignore.contains(&l.name.as_str()))
        .map(|l| l.index)
        .collect();
    let in_use = nl
        .vlans()
        .map_err(os("cannot list bridge VLANs"))?
        .iter()
        .any(|(idx, m)| m.vid == vid && ports.contains(idx));
    if in_use {
        return Ok(());
    }
    // Only a VLAN interface on this bridge is ours to remove.
    match nl
        .link_by_name(&name)
        .map_err(os("cannot look up the VLAN gateway interface"))?
    {
        Some(l) if l.kind.as_deref() == Some("vlan") => nl
            .delete_link(l.index, &name)
            .map_err(os("cannot delete the VLAN gateway interface"))?,
        _ => {}
    }
    nl.vlan_remove(&bridge, Target::BridgeSelf, vid, vid)
        .map_err(os("cannot remove the VLAN from the bridge itself"))
}
