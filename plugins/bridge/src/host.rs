//! The seam between plumb-bridge's own host logic (its bridge, gateway, uplink and their undo steps)
//! and the kernel: [`BridgeHost`], one method per rtnetlink (or sysctl) operation that logic performs,
//! implemented for plumb-net's host [`Route`] by one-line calls. `ports`, `gateway`, `uplink` and
//! `uplink_gc` take a `&mut dyn BridgeHost`, so their decisions and undo steps are unit-tested without
//! root against the recording fake in `crate::tests` (tests only). The pod's port itself is the attach
//! engine's, behind `plumb_attach::host::Host`.

use plumb_net::addr::{self, RouteEntry};
use plumb_net::link::{self, Link};
use plumb_net::nl::Route;
use plumb_net::vlan::{self, Membership, Target};
use plumb_net::{netconf, sysctl};
use std::io;
use std::net::IpAddr;

/// What plumb-bridge's own steps do to the host namespace.
pub trait BridgeHost {
    /// A link by name.
    fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>>;
    /// A link by index.
    fn link_by_index(&mut self, index: u32) -> io::Result<Option<Link>>;
    /// Every link.
    fn links(&mut self) -> io::Result<Vec<Link>>;
    /// Creates a bridge (an existing link by that name is an `EEXIST` error).
    fn create_bridge(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        vlan_filtering: bool,
    ) -> io::Result<()>;
    /// Creates the 802.1Q interface `name` on `parent`.
    fn create_vlan(&mut self, name: &str, parent: &Link, vid: u16) -> io::Result<()>;
    /// Turns a bridge's VLAN filtering on or off.
    fn set_vlan_filtering(&mut self, bridge: &Link, on: bool) -> io::Result<()>;
    /// Sets a link promiscuous.
    fn set_promisc(&mut self, l: &Link, on: bool) -> io::Result<()>;
    /// Sets a link up.
    fn set_up(&mut self, l: &Link) -> io::Result<()>;
    /// Sets a link's MAC.
    fn set_mac(&mut self, l: &Link, mac: [u8; 6]) -> io::Result<()>;
    /// Sets a link's alias.
    fn set_alias(&mut self, l: &Link, alias: &str) -> io::Result<()>;
    /// Makes `port` a port of `bridge`.
    fn set_controller(&mut self, port: &Link, bridge: &Link) -> io::Result<()>;
    /// Releases a port from its bridge.
    fn set_nomaster(&mut self, l: &Link) -> io::Result<()>;
    /// Deletes the link `index` (named `name` in errors).
    fn delete_link(&mut self, index: u32, name: &str) -> io::Result<()>;
    /// Deletes a link by name; none by that name is success.
    fn delete_link_by_name(&mut self, name: &str) -> io::Result<()>;
    /// The addresses of a link.
    fn addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>>;
    /// Adds an address to a link.
    fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()>;
    /// Removes an address from a link.
    fn del_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()>;
    /// The main-table routes, IPv4 then IPv6.
    fn routes(&mut self) -> io::Result<Vec<RouteEntry>>;
    /// Adds VLANs `lo..=hi` to a port or the bridge itself.
    fn vlan_add(
        &mut self,
        l: &Link,
        t: Target,
        lo: u16,
        hi: u16,
        pvid: bool,
        untagged: bool,
    ) -> io::Result<()>;
    /// Removes VLANs `lo..=hi` from a port or the bridge itself.
    fn vlan_remove(&mut self, l: &Link, t: Target, lo: u16, hi: u16) -> io::Result<()>;
    /// Every bridge VLAN membership: (link index, membership).
    fn vlans(&mut self) -> io::Result<Vec<(u32, Membership)>>;
    /// Whether forwarding is on (`None`: the kernel cannot say).
    fn forwarding(&mut self, v6: bool) -> io::Result<Option<bool>>;
    /// Writes a sysctl of the host namespace.
    fn sysctl(&mut self, key: &str, value: &str) -> io::Result<()>;
}

impl BridgeHost for Route {
    fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>> {
        link::by_name(self, name)
    }
    fn link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        link::by_index(self, index)
    }
    fn links(&mut self) -> io::Result<Vec<Link>> {
        link::list(self)
    }
    fn create_bridge(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        vlan_filtering: bool,
    ) -> io::Result<()> {
        link::create_bridge(self, name, mtu, vlan_filtering)
    }
    fn create_vlan(&mut self, name: &str, parent: &Link, vid: u16) -> io::Result<()> {
        link::create_vlan(self, name, parent, vid)
    }
    fn set_vlan_filtering(&mut self, bridge: &Link, on: bool) -> io::Result<()> {
        link::set_vlan_filtering(self, bridge, on)
    }
    fn set_promisc(&mut self, l: &Link, on: bool) -> io::Result<()> {
        link::set_promisc(self, l, on)
    }
    fn set_up(&mut self, l: &Link) -> io::Result<()> {
        link::set_up(self, l, true)
    }
    fn set_mac(&mut self, l: &Link, mac: [u8; 6]) -> io::Result<()> {
        link::set_mac(self, l, mac)
    }
    fn set_alias(&mut self, l: &Link, alias: &str) -> io::Result<()> {
        link::set_alias(self, l, alias)
    }
    fn set_controller(&mut self, port: &Link, bridge: &Link) -> io::Result<()> {
        link::set_controller(self, port, bridge)
    }
    fn set_nomaster(&mut self, l: &Link) -> io::Result<()> {
        link::set_nomaster(self, l)
    }
    fn delete_link(&mut self, index: u32, name: &str) -> io::Result<()> {
        link::delete(self, index, name)
    }
    fn delete_link_by_name(&mut self, name: &str) -> io::Result<()> {
        link::delete_by_name(self, name)
    }
    fn addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        addr::addresses(self, index)
    }
    fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        addr::add_address(self, index, ip, prefix, false)
    }
    fn del_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        addr::del_address(self, index, ip, prefix)
    }
    fn routes(&mut self) -> io::Result<Vec<RouteEntry>> {
        let mut t = addr::routes(self, false)?;
        t.extend(addr::routes(self, true)?);
        Ok(t)
    }
    fn vlan_add(
        &mut self,
        l: &Link,
        t: Target,
        lo: u16,
        hi: u16,
        pvid: bool,
        untagged: bool,
    ) -> io::Result<()> {
        vlan::add(self, l, t, lo, hi, pvid, untagged)
    }
    fn vlan_remove(&mut self, l: &Link, t: Target, lo: u16, hi: u16) -> io::Result<()> {
        vlan::remove(self, l, t, lo, hi)
    }
    fn vlans(&mut self) -> io::Result<Vec<(u32, Membership)>> {
        vlan::list(self)
    }
    fn forwarding(&mut self, v6: bool) -> io::Result<Option<bool>> {
        netconf::forwarding(self, v6)
    }
    fn sysctl(&mut self, key: &str, value: &str) -> io::Result<()> {
        sysctl::write(key, value)
    }
}
