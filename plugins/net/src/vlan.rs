//! Bridge VLANs on ports (and on the bridge itself with `self`): PVID/untagged access VLANs, tagged
//! trunk VLANs and ranges, removal and listing. Needs a kernel with bridge `vlan_filtering`.

use crate::link::Link;
use crate::nl::Route;
use netlink_packet_route::link::{
    AfSpecBridge, BridgeFlag, BridgeVlanInfo, BridgeVlanInfoFlags, LinkAttribute, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::io;

/// One VLAN membership of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Membership {
    /// VLAN id.
    pub vid: u16,
    /// Frames without a tag entering the port belong to this VLAN.
    pub pvid: bool,
    /// Frames of this VLAN leave the port untagged.
    pub untagged: bool,
}

/// Which entry to change: the port's own (`controller`, like `bridge vlan add dev X`) or the bridge
/// device's (`self`, like `bridge vlan add dev br0 self`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A port of a bridge.
    Port,
    /// The bridge device itself.
    BridgeSelf,
}

fn request(link: &Link, target: Target, infos: Vec<BridgeVlanInfo>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.interface_family = AddressFamily::Bridge;
    m.header.index = link.index;
    let mut spec = vec![AfSpecBridge::Flags(match target {
        Target::Port => BridgeFlag::Controller,
        Target::BridgeSelf => BridgeFlag::LowerDev,
    })];
    spec.extend(infos.into_iter().map(AfSpecBridge::VlanInfo));
    m.attributes.push(LinkAttribute::AfSpecBridge(spec));
    m
}

fn infos(first: u16, last: u16, pvid: bool, untagged: bool) -> Vec<BridgeVlanInfo> {
    let mut flags = BridgeVlanInfoFlags::empty();
    if pvid {
        flags |= BridgeVlanInfoFlags::Pvid;
    }
    if untagged {
        flags |= BridgeVlanInfoFlags::Untagged;
    }
    if first == last {
        return vec![BridgeVlanInfo { flags, vid: first }];
    }
    vec![
        BridgeVlanInfo {
            flags: flags | BridgeVlanInfoFlags::RangeBegin,
            vid: first,
        },
        BridgeVlanInfo {
            flags: flags | BridgeVlanInfoFlags::RangeEnd,
            vid: last,
        },
    ]
}

/// Adds VLANs `first..=last` to a port or the bridge itself.
pub fn add(
    nl: &mut Route,
    link: &Link,
    target: Target,
    first: u16,
    last: u16,
    pvid: bool,
    untagged: bool,
) -> io::Result<()> {
    let m = request(link, target, infos(first, last, pvid, untagged));
    nl.change(
        RouteNetlinkMessage::SetLink(m),
        0,
        &format!("add vlan {first}-{last} to {}", link.name),
    )
}

/// Removes VLANs `first..=last` from a port or the bridge itself.
pub fn remove(
    nl: &mut Route,
    link: &Link,
    target: Target,
    first: u16,
    last: u16,
) -> io::Result<()> {
    let m = request(link, target, infos(first, last, false, false));
    match nl.change(
        RouteNetlinkMessage::DelLink(m),
        0,
        &format!("remove vlan {first}-{last} from {}", link.name),
    ) {
        Err(e) if crate::nl::is_not_found(&e) => Ok(()),
        r => r,
    }
}

/// VLAN memberships of every bridge port (and bridge with `self` entries), by link index.
pub fn list(nl: &mut Route) -> io::Result<Vec<(u32, Membership)>> {
    let mut q = LinkMessage::default();
    q.header.interface_family = AddressFamily::Bridge;
    // RTEXT_FILTER_BRVLAN (1 << 1): ask for each VLAN (not compressed ranges).
    q.attributes.push(LinkAttribute::ExtMask(vec![
        netlink_packet_route::link::LinkExtentMask::Brvlan,
    ]));
    let replies = nl.dump(RouteNetlinkMessage::GetLink(q), "list bridge vlans")?;
    let mut out = Vec::new();
    for r in replies {
        let RouteNetlinkMessage::NewLink(m) = r else {
            continue;
        };
        for a in &m.attributes {
            let LinkAttribute::AfSpecBridge(spec) = a else {
                continue;
            };
            for s in spec {
                if let AfSpecBridge::VlanInfo(v) = s {
                    out.push((
                        m.header.index,
                        Membership {
                            vid: v.vid,
                            pvid: v.flags.contains(BridgeVlanInfoFlags::Pvid),
                            untagged: v.flags.contains(BridgeVlanInfoFlags::Untagged),
                        },
                    ));
                }
            }
        }
    }
    Ok(out)
}
