//! Links: look up, create bridges and veth pairs (the peer made directly in the container netns), set
//! state, MTU, MAC, controller and bridge-port options, delete.

use crate::nl::Route;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecUnspec, InetDevConf, InfoBridge, InfoBridgePort, InfoData, InfoKind,
    InfoPortData, InfoPortKind, InfoVeth, InfoVlan, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use std::io;

/// What plumb needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, `vxlan`, ...), if any.
    pub kind: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Hardware address.
    pub mac: Option<[u8; 6]>,
    /// Index of the controller (bridge) this link is a port of.
    pub controller: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// Carrier present (IFF_LOWER_UP): the device can pass traffic.
    pub lower_up: bool,
    /// Promiscuous mode on.
    pub promisc: bool,
    /// For a bridge: whether VLAN filtering is on.
    pub vlan_filtering: Option<bool>,
    /// `IFLA_IFALIAS`: the free-text alias (`ip link set X alias ...`), if set.
    pub alias: Option<String>,
    /// `IFLA_LINK`: the index of the lower device (the parent of a VLAN interface), if any.
    pub parent: Option<u32>,
    /// For an 802.1Q VLAN interface: its VLAN id.
    pub vlan_id: Option<u16>,
}

impl Link {
    pub(crate) fn from_message(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            kind: None,
            mtu: 0,
            mac: None,
            controller: None,
            up: m.header.flags.contains(LinkFlags::Up),
            lower_up: m.header.flags.contains(LinkFlags::LowerUp),
            promisc: m.header.flags.contains(LinkFlags::Promisc),
            vlan_filtering: None,
            alias: None,
            parent: None,
            vlan_id: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Mtu(v) => l.mtu = *v,
                LinkAttribute::Address(a) if a.len() == 6 => l.mac = a.as_slice().try_into().ok(),
                LinkAttribute::Controller(c) if *c != 0 => l.controller = Some(*c),
                LinkAttribute::IfAlias(a) if !a.is_empty() => l.alias = Some(a.clone()),
                LinkAttribute::Link(p) if *p != 0 => l.parent = Some(*p),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => l.kind = Some(kind_name(k)),
                            LinkInfo::Data(InfoData::Bridge(opts)) => {
                                for o in opts {
                                    if let InfoBridge::VlanFiltering(v) = o {
                                        l.vlan_filtering = Some(*v);
                                    }
                                }
                            }
                            LinkInfo::Data(InfoData::Vlan(opts)) => {
                                for o in opts {
                                    if let InfoVlan::Id(id) = o {
                                        l.vlan_id = Some(*id);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Vlan => "vlan".into(),
        InfoKind::Vxlan => "vxlan".into(),
        InfoKind::Dummy => "dummy".into(),
        InfoKind::Other(s) => s.clone(),
        other => format!("{other:?}").to_lowercase(),
    }
}

pub(crate) fn msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

/// Looks a link up by name; `None` if there is none.
pub fn by_name(nl: &mut Route, name: &str) -> io::Result<Option<Link>> {
    Ok(message_by_name(nl, name)?.map(|m| Link::from_message(&m)))
}

/// The kernel's whole description of the link `name` (for readers of kind-specific attributes).
pub(crate) fn message_by_name(nl: &mut Route, name: &str) -> io::Result<Option<LinkMessage>> {
    let mut m = msg(0);
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    let reply = nl.get(
        RouteNetlinkMessage::GetLink(m),
        &format!("look up link {name}"),
    )?;
    Ok(match reply {
        Some(RouteNetlinkMessage::NewLink(m)) => Some(m),
        _ => None,
    })
}

/// Looks a link up by index; `None` if there is none.
pub fn by_index(nl: &mut Route, index: u32) -> io::Result<Option<Link>> {
    let reply = nl.get(
        RouteNetlinkMessage::GetLink(msg(index)),
        &format!("look up link #{index}"),
    )?;
    Ok(match reply {
        Some(RouteNetlinkMessage::NewLink(m)) => Some(Link::from_message(&m)),
        _ => None,
    })
}

/// Every link of the namespace.
pub fn list(nl: &mut Route) -> io::Result<Vec<Link>> {
    let replies = nl.dump(RouteNetlinkMessage::GetLink(msg(0)), "list links")?;
    Ok(replies
        .iter()
        .filter_map(|r| match r {
            RouteNetlinkMessage::NewLink(m) => Some(Link::from_message(m)),
            _ => None,
        })
        .collect())
}

/// Creates a bridge (fails with EEXIST if the name is taken). `vlan_filtering` is set at creation.
pub fn create_bridge(
    nl: &mut Route,
    name: &str,
    mtu: Option<u32>,
    vlan_filtering: bool,
) -> io::Result<()> {
    let mut m = msg(0);
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    let mut info = vec![LinkInfo::Kind(InfoKind::Bridge)];
    if vlan_filtering {
        info.push(LinkInfo::Data(InfoData::Bridge(vec![
            InfoBridge::VlanFiltering(true),
        ])));
    }
    m.attributes.push(LinkAttribute::LinkInfo(info));
    nl.change(
        RouteNetlinkMessage::NewLink(m),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("create bridge {name}"),
    )
}

/// Creates an 802.1Q VLAN interface `name` with id `vid` on top of `parent`.
pub fn create_vlan(nl: &mut Route, name: &str, parent: &Link, vid: u16) -> io::Result<()> {
    let mut m = msg(0);
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m.attributes.push(LinkAttribute::Link(parent.index));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vlan),
        LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(vid)])),
    ]));
    nl.change(
        RouteNetlinkMessage::NewLink(m),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("create vlan {name} (id {vid} on {})", parent.name),
    )
}

/// Turns VLAN filtering of an existing bridge on or off.
pub fn set_vlan_filtering(nl: &mut Route, bridge: &Link, on: bool) -> io::Result<()> {
    let mut m = msg(bridge.index);
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(on)])),
    ]));
    nl.change(
        RouteNetlinkMessage::NewLink(m),
        0,
        &format!("set vlan_filtering={} on bridge {}", on as u8, bridge.name),
    )
}

/// The veth pair to create: host end in the caller's namespace, peer directly in `peer_netns_fd`.
#[derive(Debug, Clone)]
pub struct VethSpec<'a> {
    /// Host-side name.
    pub host_name: &'a str,
    /// Container-side name.
    pub peer_name: &'a str,
    /// fd of the container network namespace.
    pub peer_netns_fd: i32,
    /// MTU of both ends.
    pub mtu: Option<u32>,
    /// MAC of the container end.
    pub peer_mac: Option<[u8; 6]>,
    /// MAC of the host end.
    pub host_mac: Option<[u8; 6]>,
}

/// Creates a veth pair whose peer is born inside the container namespace (no window in which it sits
/// in the host namespace under a name that could clash). Fails with EEXIST if a name is taken.
pub fn create_veth(nl: &mut Route, spec: &VethSpec) -> io::Result<()> {
    let mut peer = msg(0);
    peer.attributes
        .push(LinkAttribute::IfName(spec.peer_name.to_string()));
    peer.attributes
        .push(LinkAttribute::NetNsFd(spec.peer_netns_fd));
    if let Some(mtu) = spec.mtu {
        peer.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.peer_mac {
        peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    let mut m = msg(0);
    m.attributes
        .push(LinkAttribute::IfName(spec.host_name.to_string()));
    if let Some(mtu) = spec.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.host_mac {
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    nl.change(
        RouteNetlinkMessage::NewLink(m),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!(
            "create veth {} with peer {} in the container",
            spec.host_name, spec.peer_name
        ),
    )
}

fn set(nl: &mut Route, m: LinkMessage, what: String) -> io::Result<()> {
    nl.change(RouteNetlinkMessage::SetLink(m), 0, &what)
}

/// Sets a link up or down.
pub fn set_up(nl: &mut Route, link: &Link, up: bool) -> io::Result<()> {
    let mut m = msg(link.index);
    m.header.change_mask = LinkFlags::Up;
    if up {
        m.header.flags = LinkFlags::Up;
    }
    set(
        nl,
        m,
        format!("set {} {}", link.name, if up { "up" } else { "down" }),
    )
}

/// Turns promiscuous mode on or off.
pub fn set_promisc(nl: &mut Route, link: &Link, on: bool) -> io::Result<()> {
    let mut m = msg(link.index);
    m.header.change_mask = LinkFlags::Promisc;
    if on {
        m.header.flags = LinkFlags::Promisc;
    }
    set(nl, m, format!("set promisc {} on {}", on as u8, link.name))
}

/// Sets the MTU.
pub fn set_mtu(nl: &mut Route, link: &Link, mtu: u32) -> io::Result<()> {
    let mut m = msg(link.index);
    m.attributes.push(LinkAttribute::Mtu(mtu));
    set(nl, m, format!("set mtu {mtu} on {}", link.name))
}

/// Sets the hardware address.
pub fn set_mac(nl: &mut Route, link: &Link, mac: [u8; 6]) -> io::Result<()> {
    let mut m = msg(link.index);
    m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    set(
        nl,
        m,
        format!("set mac {} on {}", format_mac(&mac), link.name),
    )
}

/// Turns on `arp_notify` of `link` (gratuitous ARP when the link comes up or changes address)
/// through rtnetlink (`IFLA_AF_SPEC` → `AF_INET` → `IFLA_INET_CONF`) rather than its sysctl: same
/// effect, and no path lookup under `/proc/sys/net/ipv4`, which costs a walk over every namespace's
/// entry there (see `sysctl`).
pub fn set_arp_notify(nl: &mut Route, link: &Link) -> io::Result<()> {
    let mut conf = InetDevConf::default();
    conf.arp_notify = 1;
    let mut m = msg(link.index);
    m.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
            AfSpecInet::DevConfRequest(conf),
        ])]));
    set(nl, m, format!("set arp_notify on {}", link.name))
}

/// Makes `link` a port of `controller` (a bridge).
pub fn set_controller(nl: &mut Route, link: &Link, controller: &Link) -> io::Result<()> {
    let mut m = msg(link.index);
    m.attributes
        .push(LinkAttribute::Controller(controller.index));
    set(
        nl,
        m,
        format!("attach {} to bridge {}", link.name, controller.name),
    )
}

/// Releases `link` from the bridge it is a port of (`ip link set X nomaster`).
pub fn set_nomaster(nl: &mut Route, link: &Link) -> io::Result<()> {
    let mut m = msg(link.index);
    m.attributes.push(LinkAttribute::Controller(0));
    set(nl, m, format!("release {} from its bridge", link.name))
}

/// Sets the free-text alias of a link (`ip link set X alias TEXT`), at most 255 bytes.
pub fn set_alias(nl: &mut Route, link: &Link, alias: &str) -> io::Result<()> {
    let mut m = msg(link.index);
    m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
    set(nl, m, format!("set alias of {}", link.name))
}

/// Bridge-port options of a port; `None` leaves one unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortOptions {
    /// Hairpin mode (reflect frames back out of the port they came in).
    pub hairpin: Option<bool>,
    /// MAC learning.
    pub learning: Option<bool>,
    /// Port isolation (isolated ports cannot talk to each other).
    pub isolated: Option<bool>,
}

/// Sets bridge-port options on a port (`ip link set X type bridge_slave ...`).
pub fn set_port_options(nl: &mut Route, port: &Link, opts: PortOptions) -> io::Result<()> {
    let mut data = Vec::new();
    if let Some(v) = opts.hairpin {
        data.push(InfoBridgePort::HairpinMode(v));
    }
    if let Some(v) = opts.learning {
        data.push(InfoBridgePort::Learning(v));
    }
    if let Some(v) = opts.isolated {
        data.push(InfoBridgePort::Isolated(v));
    }
    if data.is_empty() {
        return Ok(());
    }
    let mut m = msg(port.index);
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(data)),
    ]));
    nl.change(
        RouteNetlinkMessage::NewLink(m),
        0,
        &format!("set bridge port options on {}", port.name),
    )
}

/// Deletes a link by index; a link already gone is success.
pub fn delete(nl: &mut Route, index: u32, name: &str) -> io::Result<()> {
    match nl.change(
        RouteNetlinkMessage::DelLink(msg(index)),
        0,
        &format!("delete link {name}"),
    ) {
        Err(e) if crate::nl::is_not_found(&e) => Ok(()),
        r => r,
    }
}

/// Deletes a link by name; absent is success.
pub fn delete_by_name(nl: &mut Route, name: &str) -> io::Result<()> {
    match by_name(nl, name)? {
        Some(l) => delete(nl, l.index, name),
        None => Ok(()),
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`); `None` if malformed.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        mac[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// Where the peer of veth `name` is: its index in the peer's namespace (`IFLA_LINK`) and, when that
/// namespace is not this one, its namespace ID as seen from here (`IFLA_LINK_NETNSID`). `None` when
/// there is no link `name` or it is not a veth.
pub fn veth_peer(nl: &mut Route, name: &str) -> io::Result<Option<(u32, Option<i32>)>> {
    let Some(m) = message_by_name(nl, name)? else {
        return Ok(None);
    };
    if Link::from_message(&m).kind.as_deref() != Some("veth") {
        return Ok(None);
    }
    let (mut index, mut nsid) = (None, None);
    for a in &m.attributes {
        match a {
            LinkAttribute::Link(i) => index = Some(*i),
            LinkAttribute::LinkNetNsId(n) => nsid = Some(*n),
            _ => {}
        }
    }
    Ok(index.map(|i| (i, nsid)))
}
