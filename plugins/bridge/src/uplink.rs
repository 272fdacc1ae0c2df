//! `uplink`: plumb-bridge connects its bridge to the node's trunked NIC on ADD, with no daemon and no
//! host preconfiguration, in one of two layouts ([`UplinkLayout`]); see docs/bridge.md, "Uplinks".
//!
//! The pieces are made under the per-bridge lock plus a lock on the interface that becomes the bridge's
//! port to the NIC, so two bridges never both take it. Every ADD verifies them; an interface that was
//! there before is used only as it is (never moved to another bridge, never given another VLAN), and an
//! interface holding the node's addresses or default route is never made a bridge port. What plumb makes
//! carries the alias [`MARK`]`<uplink>`, by which `plumb-bridge --gc-uplinks` finds it.

use crate::config::{wanted_ranges, BridgeConfig, UplinkLayout};
use crate::host::BridgeHost;
use plumb_attach::attach::{OwnStep, Undo};
use plumb_attach::lock::LOCK_TIMEOUT;
use plumb_attach::naming;
use plumb_attach::os::os;
use plumb_cni::lock::LockGuard;
use plumb_cni::{code, CniError, CniResult};
use plumb_net::link::Link;
use plumb_net::nl::{is_exists, Route};
use plumb_net::vlan::Target;
use std::net::IpAddr;

/// The alias prefix of the bridges and VLAN interfaces plumb made for an uplink (`plumb-uplink:<uplink>`).
pub const MARK: &str = "plumb-uplink:";

/// Sorted, contiguous runs of a set of VLAN ids (for range requests).
fn runs(mut vids: Vec<u16>) -> Vec<(u16, u16)> {
    vids.sort_unstable();
    vids.dedup();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for v in vids {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == v => *hi = v,
            _ => out.push((v, v)),
        }
    }
    out
}

/// The interface that becomes the bridge's port to the NIC: `<uplink>.<vlan>` (short form if needed) in
/// the per-VLAN layout, the uplink itself in the one-bridge layout.
pub fn port_name(uplink: &str, layout: UplinkLayout) -> String {
    match layout {
        UplinkLayout::PerVlan(vid) => naming::uplink_vlan(uplink, vid),
        UplinkLayout::Trunk => uplink.to_string(),
    }
}

/// Locks the uplink port `name` (taken under the bridge lock, never the other way round), so two
/// bridges never both make it their port. The lock file goes on release when the interface is gone.
pub fn lock_port(name: &str) -> CniResult<LockGuard> {
    let owned = name.to_string();
    let still_there = move || {
        Route::open()
            .map(|mut nl| nl.link_by_name(&owned).map_or(true, |l| l.is_some()))
            .unwrap_or(true)
    };
    Ok(plumb_cni::lock::lock_resource(
        &format!("uplink-{:016x}", naming::fnv64(&[name])),
        LOCK_TIMEOUT,
    )?
    .remove_on_release_unless(still_there))
}

/// What [`preflight`] found: the uplink, and the held lock on the bridge's port to it.
#[derive(Debug)]
pub struct Prepared {
    /// The uplink NIC.
    pub uplink: Link,
    /// The lock of the port interface, held until ADD is done (or rolled back).
    pub lock: LockGuard,
}

/// Before the bridge is made: locks the port interface, finds the uplink and refuses every unsafe or
/// conflicting state (nothing is changed here).
pub fn preflight(nl: &mut dyn BridgeHost, cfg: &BridgeConfig) -> CniResult<Option<Prepared>> {
    let (Some(up), Some(layout)) = (&cfg.uplink, cfg.uplink_layout) else {
        return Ok(None);
    };
    let lock = lock_port(&port_name(up, layout))?;
    Ok(verify(nl, cfg)?.map(|uplink| Prepared { uplink, lock }))
}

/// [`preflight`] under the port lock: the uplink, once every unsafe or conflicting state is refused
/// (`None` without `uplink`).
pub fn verify(nl: &mut dyn BridgeHost, cfg: &BridgeConfig) -> CniResult<Option<Link>> {
    let (Some(up), Some(layout)) = (&cfg.uplink, cfg.uplink_layout) else {
        return Ok(None);
    };
    let port = port_name(up, layout);
    let uplink = nl
        .link_by_name(up)
        .map_err(os("cannot look up the uplink"))?
        .ok_or_else(|| {
            CniError::config(format!(
                "field \"uplink\": this node has no interface {up}; name the node's trunked NIC"
            ))
        })?;
    if uplink.kind.as_deref() == Some("bridge") {
        return Err(CniError::config(format!(
            "field \"uplink\": {up} is a bridge; name the NIC (or bond) the bridge should reach"
        )));
    }
    if let Some(mtu) = cfg.mtu {
        if mtu > uplink.mtu {
            return Err(CniError::config(format!("field \"mtu\" {mtu} exceeds the MTU {} of uplink {up}; leave \"mtu\" out to take the uplink's", uplink.mtu)));
        }
    }
    let bridge = nl
        .link_by_name(&cfg.bridge)
        .map_err(os("cannot look up the bridge"))?;
    let bridge_index = bridge.as_ref().map(|b| b.index);
    match layout {
        UplinkLayout::PerVlan(vid) => {
            if let Some(b) = &bridge {
                wrong_vlan_port(nl, b, &uplink, vid)?;
            }
            if let Some(sub) = nl
                .link_by_name(&port)
                .map_err(os("cannot look up the uplink VLAN interface"))?
            {
                verify_vlan_if(&sub, &uplink, vid).map_err(CniError::config)?;
                verify_master(nl, &sub, bridge_index)?;
                if sub.controller.is_none() {
                    refuse_if_node_traffic(nl, &sub, &format!("VLAN {vid}"))?;
                }
            }
        }
        UplinkLayout::Trunk => {
            verify_master(nl, &uplink, bridge_index)?;
            if uplink.controller.is_none() {
                refuse_if_node_traffic(nl, &uplink, "the network")?;
            }
        }
    }
    Ok(Some(uplink))
}

/// A per-VLAN bridge must not already reach the uplink through a VLAN interface of another VLAN.
fn wrong_vlan_port(
    nl: &mut dyn BridgeHost,
    bridge: &Link,
    uplink: &Link,
    vid: u16,
) -> CniResult<()> {
    let links = nl.links().map_err(os("cannot list links"))?;
    if let Some(p) = links.iter().find(|l| {
        l.controller == Some(bridge.index)
            && l.kind.as_deref() == Some("vlan")
            && l.parent == Some(uplink.index)
            && l.vlan_id != Some(vid)
    }) {
        return Err(CniError::config(format!(
            "bridge {} already reaches uplink {} through {} (VLAN {}), not VLAN {vid}; one bridge carries one VLAN in the per-VLAN layout: use another \"bridge\" for VLAN {vid}",
            bridge.name,
            uplink.name,
            p.name,
            p.vlan_id.unwrap_or(0)
        )));
    }
    Ok(())
}

/// `sub` is an 802.1Q interface with id `vid` on `uplink`; else why not (for ADD's refusal and CHECK).
fn verify_vlan_if(sub: &Link, uplink: &Link, vid: u16) -> Result<(), String> {
    if sub.kind.as_deref() != Some("vlan") {
        return Err(format!(
            "{} exists as a {} interface, not an 802.1Q VLAN interface of uplink {}; plumb does not replace it: remove or rename it",
            sub.name,
            sub.kind.as_deref().unwrap_or("plain"),
            uplink.name
        ));
    }
    if sub.parent != Some(uplink.index) {
        return Err(format!("{} is a VLAN interface of another device, not of uplink {}; plumb does not change it: remove it or correct \"uplink\"", sub.name, uplink.name));
    }
    if sub.vlan_id != Some(vid) {
        return Err(format!(
            "{} carries VLAN {}, the config needs VLAN {vid}; plumb does not change an interface's VLAN: remove it or correct \"vlan\"",
            sub.name,
            sub.vlan_id.unwrap_or(0)
        ));
    }
    Ok(())
}

/// An interface that is a port of another bridge than `bridge_index` (the config's, if it exists) is
/// never moved.
fn verify_master(nl: &mut dyn BridgeHost, l: &Link, bridge_index: Option<u32>) -> CniResult<()> {
    match l.controller {
        None => Ok(()),
        Some(c) if Some(c) == bridge_index => Ok(()),
        Some(c) => {
            let other = nl
                .link_by_index(c)
                .map_err(os("cannot look up a bridge"))?
                .map_or(format!("#{c}"), |o| o.name);
            Err(CniError::config(format!("{} is already a port of {other}; plumb never moves an interface to another bridge: use \"bridge\": {other:?}, or release it first (ip link set {} nomaster)", l.name, l.name)))
        }
    }
}

/// Whether an address is one the node is reached by (global scope: not loopback or link-local).
fn is_global(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local(),
        IpAddr::V6(a) => !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// Refuses to make `l` a bridge port while it carries the node's global addresses or a default route:
/// a bridge port stops delivering to its own addresses, so the node would be cut off from `what`.
fn refuse_if_node_traffic(nl: &mut dyn BridgeHost, l: &Link, what: &str) -> CniResult<()> {
    let addrs: Vec<String> = nl
        .addresses(l.index)
        .map_err(os("cannot list the uplink's addresses"))?
        .into_iter()
        .filter(|(a, _)| is_global(a))
        .map(|(a, p)| format!("{a}/{p}"))
        .collect();
    let table = nl.routes().map_err(os("cannot list routes"))?;
    let default = table
        .iter()
        .any(|r| r.prefix == 0 && r.oif == Some(l.index));
    if addrs.is_empty() && !default {
        return Ok(());
    }
    let mut held = Vec::new();
    if !addrs.is_empty() {
        held.push(format!("the address(es) {}", addrs.join(", ")));
    }
    if default {
        held.push("the default route".to_string());
    }
    Err(CniError::config(format!(
        "refusing to make {} a bridge port: it holds {} of this node, and a bridge port no longer delivers to its own addresses, which would cut the node off from {what}. Move them to another interface (or onto the bridge, by hand), or name a NIC that carries no node traffic; for a NIC that also carries the node's untagged traffic use the per-VLAN layout (\"vlan\" without \"vlanFiltering\"), which leaves the NIC itself alone",
        l.name,
        held.join(" and ")
    )))
}

/// After the bridge is there (under its lock, with [`preflight`]'s lock held): makes or verifies the
/// uplink pieces, pushing each step on `undo`. `uplink` is what [`preflight`] found; `bridge_created`:
/// this ADD made the bridge (it gets the [`MARK`] alias).
pub fn ensure(
    nl: &mut dyn BridgeHost,
    cfg: &BridgeConfig,
    uplink: &Link,
    bridge: &Link,
    bridge_created: bool,
    undo: &mut Vec<Undo>,
) -> CniResult<()> {
    let (Some(up), Some(layout)) = (&cfg.uplink, cfg.uplink_layout) else {
        return Ok(());
    };
    let mark = format!("{MARK}{up}");
    if bridge_created {
        nl.set_alias(bridge, &mark)
            .map_err(os("cannot mark the bridge"))?;
    }
    match layout {
        UplinkLayout::PerVlan(vid) => {
            let name = naming::uplink_vlan(up, vid);
            let sub = match nl
                .link_by_name(&name)
                .map_err(os("cannot look up the uplink VLAN interface"))?
            {
                Some(l) => l,
                None => {
                    match nl.create_vlan(&name, uplink, vid) {
                        Err(e) if is_exists(&e) => {}
                        Err(e) => {
                            return Err(CniError::new(code::IO_FAILURE, format!("cannot create the VLAN interface {name} (VLAN {vid} on {up}; does this kernel have 802.1Q, module 8021q?)")).caused_by(e))
                        }
                        Ok(()) => {}
                    }
                    let found = nl.link_by_name(&name);
                    if found.is_err() {
                        // Its index unknown, it goes by name: under the port lock, the interface
                        // of that name is the one just made.
                        if let Err(u) = nl.delete_link_by_name(&name) {
                            eprintln!("plumb-bridge: rollback: cannot delete {name}: {u}");
                        }
                    }
                    let l = found
                        .map_err(os("cannot look up the uplink VLAN interface"))?
                        .ok_or_else(|| {
                            CniError::new(
                                code::IO_FAILURE,
                                format!("{name} vanished after creation"),
                            )
                        })?;
                    undo.push(UplinkStep::VlanIf(l.clone()).into());
                    nl.set_alias(&l, &mark)
                        .map_err(os("cannot mark the uplink VLAN interface"))?;
                    l
                }
            };
            verify_vlan_if(&sub, uplink, vid).map_err(CniError::config)?;
            plumb_cni::failpoint::check("uplink")?;
            if sub.controller != Some(bridge.index) {
                nl.set_controller(&sub, bridge)
                    .map_err(os("cannot make the uplink VLAN interface a bridge port"))?;
                // Released again on rollback, so that a bridge this ADD made is empty and goes too.
                undo.push(UplinkStep::Joined(sub.clone()).into());
            }
            if !sub.up {
                nl.set_up(&sub)
                    .map_err(os("cannot bring the uplink VLAN interface up"))?;
            }
        }
        UplinkLayout::Trunk => {
            if uplink.controller != Some(bridge.index) {
                nl.set_controller(uplink, bridge)
                    .map_err(os("cannot make the uplink a port of the bridge"))?;
                undo.push(UplinkStep::Joined(uplink.clone()).into());
                // A pure trunk: untagged frames from the switch belong to no pod's VLAN.
                nl.vlan_remove(
                    uplink,
                    Target::Port,
                    plumb_attach::ports::DEFAULT_VLAN,
                    plumb_attach::ports::DEFAULT_VLAN,
                )
                .map_err(os("cannot remove the default VLAN from the uplink"))?;
            }
            plumb_cni::failpoint::check("uplink")?;
            let have: Vec<u16> = nl
                .vlans()
                .map_err(os("cannot list bridge VLANs"))?
                .into_iter()
                .filter(|(i, _)| *i == uplink.index)
                .map(|(_, m)| m.vid)
                .collect();
            let missing: Vec<u16> = wanted_ranges(cfg)
                .into_iter()
                .flat_map(|(lo, hi)| lo..=hi)
                .filter(|v| !have.contains(v))
                .collect();
            let missing = runs(missing);
            if !missing.is_empty() {
                undo.push(UplinkStep::Vlans(uplink.clone(), missing.clone()).into());
            }
            for &(lo, hi) in &missing {
                nl.vlan_add(uplink, Target::Port, lo, hi, false, false)
                    .map_err(os("cannot add the attachment's VLANs to the uplink"))?;
            }
        }
    }
    Ok(())
}

/// One uplink step of an ADD, taken back if the ADD fails later.
#[derive(Debug)]
pub enum UplinkStep {
    /// The uplink's VLAN interface, created by this ADD (per-VLAN uplink layout).
    VlanIf(Link),
    /// The uplink (one-bridge layout) or its VLAN interface (per-VLAN layout), made a port of the
    /// bridge by this ADD.
    Joined(Link),
    /// VLAN ranges this ADD added to the uplink port.
    Vlans(Link, Vec<(u16, u16)>),
}

impl From<UplinkStep> for Undo {
    fn from(step: UplinkStep) -> Undo {
        Undo::Own(Box::new(step))
    }
}

impl OwnStep for UplinkStep {
    fn label(&self) -> &'static str {
        match self {
            UplinkStep::VlanIf(_) => "uplink vlan interface",
            UplinkStep::Joined(_) => "uplink port",
            UplinkStep::Vlans(..) => "uplink vlans",
        }
    }

    fn undo(&self, nl: &mut Route) -> Result<(), String> {
        self.take_back(nl)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl UplinkStep {
    /// [`OwnStep::undo`] over any [`BridgeHost`].
    pub fn take_back(&self, nl: &mut dyn BridgeHost) -> Result<(), String> {
        undo(nl, self).map_err(|e| e.to_string())
    }
}

/// Takes back one uplink step of a failed ADD.
fn undo(nl: &mut dyn BridgeHost, step: &UplinkStep) -> std::io::Result<()> {
    match step {
        UplinkStep::VlanIf(l) => match nl.link_by_index(l.index)? {
            Some(now) if now.name == l.name => nl.delete_link(l.index, &l.name),
            _ => Ok(()),
        },
        UplinkStep::Joined(l) => nl.set_nomaster(l),
        UplinkStep::Vlans(l, ranges) => {
            for &(lo, hi) in ranges {
                nl.vlan_remove(l, Target::Port, lo, hi)?;
            }
            Ok(())
        }
    }
}

/// DEL, one-bridge layout without `uplinkTrunk`: takes off the uplink each VLAN of this attachment that
/// no other port of the bridge carries any more. Runs under the bridge lock after the attachment's
/// veth is gone, so the count is exact; an uplink that is not a port of this bridge is left alone.
pub fn release_vlans(
    nl: &mut dyn BridgeHost,
    bridge: &str,
    up: &str,
    ranges: &[(u16, u16)],
) -> CniResult<()> {
    let Some(bridge) = nl
        .link_by_name(bridge)
        .map_err(os("cannot look up the bridge"))?
    else {
        return Ok(());
    };
    let Some(uplink) = nl
        .link_by_name(up)
        .map_err(os("cannot look up the uplink"))?
    else {
        return Ok(());
    };
    if uplink.controller != Some(bridge.index) {
        return Ok(());
    }
    let ports: Vec<u32> = nl
        .links()
        .map_err(os("cannot list links"))?
        .into_iter()
        .filter(|l| l.controller == Some(bridge.index) && l.index != uplink.index)
        .map(|l| l.index)
        .collect();
    let members = nl.vlans().map_err(os("cannot list bridge VLANs"))?;
    let unused: Vec<u16> = ranges
        .iter()
        .flat_map(|&(lo, hi)| lo..=hi)
        .filter(|v| {
            !members
                .iter()
                .any(|(i, m)| m.vid == *v && ports.contains(i))
        })
        .collect();
    for (lo, hi) in runs(unused) {
        nl.vlan_remove(&uplink, Target::Port, lo, hi)
            .map_err(os("cannot remove an unused VLAN from the uplink"))?;
    }
    Ok(())
}

/// CHECK: the uplink pieces are as ADD left them (uplink there and up, the VLAN interface with the
/// right lower device and VLAN as a port of the bridge, the trunk VLANs on the uplink, the bridge up).
pub fn check(nl: &mut dyn BridgeHost, cfg: &BridgeConfig, bridge: &Link) -> CniResult<()> {
    let (Some(up), Some(layout)) = (&cfg.uplink, cfg.uplink_layout) else {
        return Ok(());
    };
    let drift = |m: String| CniError::new(code::CHECK_MISMATCH, m);
    if !bridge.up {
        return Err(drift(format!("bridge {} is not up", bridge.name)));
    }
    let uplink = nl
        .link_by_name(up)
        .map_err(os("cannot look up the uplink"))?
        .ok_or_else(|| drift(format!("uplink {up} is missing")))?;
    if !uplink.up {
        return Err(drift(format!("uplink {up} is down")));
    }
    match layout {
        UplinkLayout::PerVlan(vid) => {
            let name = naming::uplink_vlan(up, vid);
            let sub = nl
                .link_by_name(&name)
                .map_err(os("cannot look up the uplink VLAN interface"))?
                .ok_or_else(|| {
                    drift(format!(
                        "uplink VLAN interface {name} (VLAN {vid} on {up}) is missing"
                    ))
                })?;
            verify_vlan_if(&sub, &uplink, vid).map_err(drift)?;
            if sub.controller != Some(bridge.index) {
                return Err(drift(format!(
                    "uplink VLAN interface {name} is not a port of bridge {}",
                    bridge.name
                )));
            }
            if !sub.up {
                return Err(drift(format!("uplink VLAN interface {name} is down")));
            }
        }
        UplinkLayout::Trunk => {
            if uplink.controller != Some(bridge.index) {
                return Err(drift(format!(
                    "uplink {up} is not a port of bridge {}",
                    bridge.name
                )));
            }
            let have: Vec<u16> = nl
                .vlans()
                .map_err(os("cannot list bridge VLANs"))?
                .into_iter()
                .filter(|(i, m)| *i == uplink.index && !m.untagged)
                .map(|(_, m)| m.vid)
                .collect();
            for (lo, hi) in wanted_ranges(cfg) {
                if let Some(v) = (lo..=hi).find(|v| !have.contains(v)) {
                    return Err(drift(format!("uplink {up} does not carry VLAN {v} tagged")));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_neighbours() {
        assert_eq!(runs(vec![5, 3, 4, 9, 9, 1]), vec![(1, 1), (3, 5), (9, 9)]);
        assert!(runs(Vec::new()).is_empty());
    }

    #[test]
    fn global_addresses() {
        assert!(is_global(&"192.0.2.1".parse().unwrap()));
        assert!(is_global(&"2001:db8::1".parse().unwrap()));
        assert!(!is_global(&"169.254.1.1".parse().unwrap()));
        assert!(!is_global(&"fe80::1".parse().unwrap()));
        assert!(!is_global(&"127.0.0.1".parse().unwrap()));
    }
}
