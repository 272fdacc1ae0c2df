//! The flood list of a unicast VTEP: forwarding-database entries with the all-zero MAC, one per remote
//! VTEP, which the kernel uses for broadcast, unknown-unicast and multicast frames. Entries are added
//! with NLM_F_APPEND (a new remote for the same MAC), which the high-level netlink crates do not offer.

use crate::nl::Route;
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::io;
use std::net::IpAddr;

const ZERO_MAC: [u8; 6] = [0; 6];

fn entry(vtep: u32, dst: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = vtep;
    m.header.flags = NeighbourFlags::Own;
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(ZERO_MAC.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(match dst {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
    m
}

/// The remote VTEPs in the flood list of the VTEP with index `vtep`.
pub fn flood_list(nl: &mut Route, vtep: u32) -> io::Result<Vec<IpAddr>> {
    // A bare ndmsg with an ifindex asks the kernel for that device's entries only, so the cost does
    // not grow with the other ports (pods) of the node.
    let mut q = NeighbourMessage::default();
    q.header.family = AddressFamily::Bridge;
    q.header.ifindex = vtep;
    let replies = nl.dump(
        RouteNetlinkMessage::GetNeighbour(q),
        "list the VTEP's forwarding entries",
    )?;
    let mut out = Vec::new();
    for r in replies {
        let RouteNetlinkMessage::NewNeighbour(m) = r else {
            continue;
        };
        if m.header.ifindex != vtep || !m.header.flags.contains(NeighbourFlags::Own) {
            continue;
        }
        let mut zero = false;
        let mut dst = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::LinkLayerAddress(mac) => zero = mac.as_slice() == ZERO_MAC,
                NeighbourAttribute::Destination(d) => dst = ip_of(d),
                _ => {}
            }
        }
        if let (true, Some(d)) = (zero, dst) {
            out.push(d);
        }
    }
    Ok(out)
}

fn ip_of(d: &NeighbourAddress) -> Option<IpAddr> {
    match d {
        NeighbourAddress::Inet(a) => Some(IpAddr::V4(*a)),
        NeighbourAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        // In an AF_BRIDGE message the crate cannot tell the family; the length can.
        NeighbourAddress::Other(b) => match b.len() {
            4 => Some(IpAddr::from(<[u8; 4]>::try_from(b.as_slice()).ok()?)),
            16 => Some(IpAddr::from(<[u8; 16]>::try_from(b.as_slice()).ok()?)),
            _ => None,
        },
        _ => None,
    }
}

/// Appends `dst` to the flood list of the VTEP with index `vtep` (`bridge fdb append 00:00:00:00:00:00
/// dev <vtep> dst <dst>`). An entry already there is success.
pub fn append(nl: &mut Route, vtep: u32, dst: IpAddr) -> io::Result<()> {
    match nl.change(
        RouteNetlinkMessage::NewNeighbour(entry(vtep, dst)),
        NLM_F_CREATE | NLM_F_APPEND,
        &format!("append flood entry to {dst}"),
    ) {
        Err(e) if crate::nl::is_exists(&e) => Ok(()),
        r => r,
    }
}

/// Removes `dst` from the flood list of the VTEP with index `vtep`; absent is success.
pub fn remove(nl: &mut Route, vtep: u32, dst: IpAddr) -> io::Result<()> {
    match nl.change(
        RouteNetlinkMessage::DelNeighbour(entry(vtep, dst)),
        0,
        &format!("remove flood entry to {dst}"),
    ) {
        Err(e) if crate::nl::is_not_found(&e) => Ok(()),
        r => r,
    }
}
