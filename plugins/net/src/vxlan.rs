//! VXLAN devices (VTEPs): create one with its VNI, multicast group or none, UDP port, underlay device,
//! source address and learning; read those settings back so a caller can verify an existing VTEP.

use crate::link::{self, msg, Link};
use crate::nl::Route;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo};
use netlink_packet_route::RouteNetlinkMessage;
use std::io;
use std::net::IpAddr;

/// The settings of a VTEP that decide which overlay it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSettings {
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    /// Multicast group for flooding; `None` for unicast (flooding through all-zero FDB entries).
    pub group: Option<IpAddr>,
    /// Source address of the outer packets; `None` lets the kernel pick.
    pub local: Option<IpAddr>,
    /// UDP destination port.
    pub port: u16,
    /// Index of the underlay device; `None` when not bound to one.
    pub underlay: Option<u32>,
    /// Whether the VTEP learns remote MACs from received packets.
    pub learning: bool,
}

/// Creates a VTEP `name` with `settings` and `mtu`; fails with EEXIST if the name is taken.
pub fn create(nl: &mut Route, name: &str, s: &VxlanSettings, mtu: Option<u32>) -> io::Result<()> {
    let mut data = vec![InfoVxlan::Id(s.vni)];
    match s.group {
        Some(IpAddr::V4(g)) => data.push(InfoVxlan::Group(g)),
        Some(IpAddr::V6(g)) => data.push(InfoVxlan::Group6(g)),
        None => {}
    }
    match s.local {
        Some(IpAddr::V4(l)) => data.push(InfoVxlan::Local(l)),
        Some(IpAddr::V6(l)) => data.push(InfoVxlan::Local6(l)),
        None => {}
    }
    if let Some(dev) = s.underlay {
        data.push(InfoVxlan::Link(dev));
    }
    data.push(InfoVxlan::Port(s.port));
    data.push(InfoVxlan::Learning(s.learning));
    let mut m = msg(0);
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(data)),
    ]));
    nl.change(
        RouteNetlinkMessage::NewLink(m),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("create vxlan {name} (vni {})", s.vni),
    )
}

/// Looks a link up by name and, if it is a VXLAN device, reads its settings. `None` when there is no
/// such link; `Some((link, None))` when the link exists but is not a VXLAN device.
pub fn lookup(nl: &mut Route, name: &str) -> io::Result<Option<(Link, Option<VxlanSettings>)>> {
    let Some(m) = link::message_by_name(nl, name)? else {
        return Ok(None);
    };
    let link = Link::from_message(&m);
    let data = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(d)) => Some(d),
            _ => None,
        }),
        _ => None,
    });
    Ok(Some((link, data.map(|d| settings_from(d)))))
}

fn settings_from(data: &[InfoVxlan]) -> VxlanSettings {
    let mut s = VxlanSettings {
        vni: 0,
        group: None,
        local: None,
        port: 0,
        underlay: None,
        learning: false,
    };
    let set = |ip: IpAddr| (!ip.is_unspecified()).then_some(ip);
    for d in data {
        match d {
            InfoVxlan::Id(v) => s.vni = *v,
            InfoVxlan::Group(g) => s.group = set(IpAddr::V4(*g)),
            InfoVxlan::Group6(g) => s.group = s.group.or(set(IpAddr::V6(*g))),
            InfoVxlan::Local(l) => s.local = set(IpAddr::V4(*l)),
            InfoVxlan::Local6(l) => s.local = s.local.or(set(IpAddr::V6(*l))),
            InfoVxlan::Link(i) if *i != 0 => s.underlay = Some(*i),
            InfoVxlan::Port(p) => s.port = *p,
            InfoVxlan::Learning(l) => s.learning = *l,
            _ => {}
        }
    }
    s
}
