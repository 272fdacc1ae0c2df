//! Addresses and routes.

use crate::nl::{is_exists, Route};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::io;
use std::net::IpAddr;

fn family(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// Adds `ip/prefix` to a link. `nodad` skips IPv6 duplicate address detection (the reference's
/// `enabledad: false`). An address already present is success.
pub fn add_address(
    nl: &mut Route,
    index: u32,
    ip: IpAddr,
    prefix: u8,
    nodad: bool,
) -> io::Result<()> {
    let mut m = AddressMessage::default();
    m.header.family = family(&ip);
    m.header.prefix_len = prefix;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(ip));
    m.attributes.push(AddressAttribute::Address(ip));
    if let IpAddr::V4(v4) = ip {
        if prefix < 31 {
            let host_bits = 32 - prefix as u32;
            let bcast = u32::from(v4) | ((1u32 << host_bits) - 1);
            m.attributes.push(AddressAttribute::Broadcast(bcast.into()));
        }
    }
    if nodad && ip.is_ipv6() {
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match nl.change(
        RouteNetlinkMessage::NewAddress(m),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("add address {ip}/{prefix}"),
    ) {
        Err(e) if is_exists(&e) => Ok(()),
        r => r,
    }
}

/// Removes `ip/prefix` from a link; an address already gone is success.
pub fn del_address(nl: &mut Route, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
    let mut m = AddressMessage::default();
    m.header.family = family(&ip);
    m.header.prefix_len = prefix;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(ip));
    m.attributes.push(AddressAttribute::Address(ip));
    match nl.change(
        RouteNetlinkMessage::DelAddress(m),
        0,
        &format!("remove address {ip}/{prefix}"),
    ) {
        Err(e) if crate::nl::is_not_found(&e) => Ok(()),
        r => r,
    }
}

/// The addresses of a link (all links when `index` is 0), as `(ip, prefix)`. For one link the kernel
/// is asked for that link's addresses only, so the cost does not grow with the links of the namespace
/// (each host veth of a bridge has its own IPv6 link-local address).
pub fn addresses(nl: &mut Route, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
    let replies = match index {
        0 => nl.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            "list addresses",
        )?,
        _ => {
            let mut m = AddressMessage::default();
            m.header.index = index;
            nl.dump_filtered(
                RouteNetlinkMessage::GetAddress(m),
                &format!("list addresses of link #{index}"),
            )?
        }
    };
    let mut out = Vec::new();
    for r in replies {
        let RouteNetlinkMessage::NewAddress(m) = r else {
            continue;
        };
        if index != 0 && m.header.index != index {
            continue;
        }
        let ip = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = ip {
            out.push((ip, m.header.prefix_len));
        }
    }
    Ok(out)
}

/// A route to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination network.
    pub dst: IpAddr,
    /// Destination prefix length.
    pub prefix: u8,
    /// Next hop; `None` for a link-scope route.
    pub gw: Option<IpAddr>,
    /// Output interface index.
    pub oif: u32,
    /// Route MTU (`RTAX_MTU`).
    pub mtu: Option<u32>,
    /// Route priority (metric).
    pub priority: Option<u32>,
}

/// Adds a route in the main table; an identical route already present is success. A route without a
/// next hop gets scope `link`, as `ip route add` gives it.
pub fn add_route(nl: &mut Route, r: &RouteSpec) -> io::Result<()> {
    let scope = if r.gw.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    add_route_in_scope(nl, r, scope)
}

/// Adds a route like [`add_route`], but in scope `universe` also without a next hop: what the reference
/// CNI plugins install in a container (through the Go netlink library), for plugins that must leave
/// the same routing table behind.
pub fn add_route_global(nl: &mut Route, r: &RouteSpec) -> io::Result<()> {
    add_route_in_scope(nl, r, RouteScope::Universe)
}

fn add_route_in_scope(nl: &mut Route, r: &RouteSpec, scope: RouteScope) -> io::Result<()> {
    let mut m = RouteMessage::default();
    m.header.address_family = family(&r.dst);
    m.header.destination_prefix_length = r.prefix;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = scope;
    m.header.kind = RouteType::Unicast;
    if r.prefix > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(r.dst)));
    }
    if let Some(gw) = r.gw {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    m.attributes.push(RouteAttribute::Oif(r.oif));
    if let Some(p) = r.priority {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    if let Some(mtu) = r.mtu {
        m.attributes.push(RouteAttribute::Metrics(vec![
            netlink_packet_route::route::RouteMetric::Mtu(mtu),
        ]));
    }
    let what = format!(
        "add route {}/{}{}",
        r.dst,
        r.prefix,
        r.gw.map(|g| format!(" via {g}")).unwrap_or_default()
    );
    match nl.change(
        RouteNetlinkMessage::NewRoute(m),
        NLM_F_CREATE | NLM_F_EXCL,
        &what,
    ) {
        Err(e) if is_exists(&e) => Ok(()),
        r => r,
    }
}

/// One route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination network (the unspecified address for a default route).
    pub dst: IpAddr,
    /// Destination prefix length.
    pub prefix: u8,
    /// Next hop, if any.
    pub gw: Option<IpAddr>,
    /// Output interface index, if any.
    pub oif: Option<u32>,
}

/// Routes of the main table of one family.
pub fn routes(nl: &mut Route, v6: bool) -> io::Result<Vec<RouteEntry>> {
    let mut q = RouteMessage::default();
    q.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let replies = nl.dump(RouteNetlinkMessage::GetRoute(q), "list routes")?;
    let mut out = Vec::new();
    for r in replies {
        let RouteNetlinkMessage::NewRoute(m) = r else {
            continue;
        };
        if m.header.table != RouteHeader::RT_TABLE_MAIN {
            continue;
        }
        let mut dst = None;
        let mut gw = None;
        let mut oif = None;
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(d) => dst = route_ip(d),
                RouteAttribute::Gateway(g) => gw = route_ip(g),
                RouteAttribute::Oif(o) => oif = Some(*o),
                _ => {}
            }
        }
        let unspecified = if v6 {
            IpAddr::from([0u16; 8])
        } else {
            IpAddr::from([0u8; 4])
        };
        out.push(RouteEntry {
            dst: dst.unwrap_or(unspecified),
            prefix: m.header.destination_prefix_length,
            gw,
            oif,
        });
    }
    Ok(out)
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}
