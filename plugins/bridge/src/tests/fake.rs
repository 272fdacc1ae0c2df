//! A recording [`BridgeHost`]: every call is written to [`Fake::calls`] in order (lookups start with
//! `get`), a small model of the host namespace (links, addresses, routes, bridge VLANs, forwarding,
//! sysctls) changes as the kernel would change it, and [`Fake::fail_on`] / [`Fake::fail_nth`] make
//! a named or the n-th call fail.

use crate::host::BridgeHost;
use plumb_attach::fake::{changes, Failures};
use plumb_net::addr::RouteEntry;
use plumb_net::link::{format_mac, Link};
use plumb_net::vlan::{Membership, Target};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

/// What the fake host namespace holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Model {
    /// Links by name.
    pub links: BTreeMap<String, Link>,
    /// Addresses (index, ip, prefix).
    pub addrs: BTreeSet<(u32, IpAddr, u8)>,
    /// Main-table routes.
    pub routes: Vec<RouteEntry>,
    /// Bridge VLANs: (port or bridge index, vid) → (pvid, untagged).
    pub vlans: BTreeMap<(u32, u16), (bool, bool)>,
    /// IPv4 and IPv6 forwarding.
    pub forwarding: [Option<bool>; 2],
    /// Other sysctls written.
    pub sysctls: BTreeMap<String, String>,
}

/// The recording fake.
#[derive(Debug, Default)]
pub struct Fake {
    /// Every call, in order: `"<op> <arguments>"`.
    pub calls: Vec<String>,
    /// The model.
    pub model: Model,
    failures: Failures,
    next_index: u32,
}

/// A link of `kind` as the fake makes it (down, MAC derived from the index).
pub fn link(index: u32, name: &str, kind: &str) -> Link {
    Link {
        index,
        name: name.to_string(),
        kind: Some(kind.to_string()),
        mtu: 1500,
        mac: Some([0x02, 0, 0, 0, 1, index as u8]),
        controller: None,
        up: false,
        lower_up: false,
        promisc: false,
        vlan_filtering: (kind == "bridge").then_some(false),
        alias: None,
        parent: None,
        vlan_id: None,
    }
}

fn exists(what: &str) -> io::Error {
    let e = io::Error::from_raw_os_error(libc::EEXIST);
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Fake {
    /// An empty host (forwarding off).
    pub fn new() -> Fake {
        Fake {
            next_index: 20,
            model: Model {
                forwarding: [Some(false), Some(false)],
                ..Model::default()
            },
            ..Fake::default()
        }
    }

    /// Adds a link to the model (not recorded) and returns it.
    pub fn with(&mut self, l: Link) -> Link {
        self.model.links.insert(l.name.clone(), l.clone());
        l
    }

    /// Makes every call of `op` fail from now on.
    pub fn fail_on(&mut self, op: &str) {
        self.failures.on(op);
    }

    /// Makes the call at position `n` of [`Fake::calls`] (counting from 0) fail.
    pub fn fail_nth(&mut self, n: usize) {
        self.failures.nth(n);
    }

    /// The calls that change something (no lookups).
    pub fn changes(&self) -> Vec<String> {
        changes(&self.calls)
    }

    /// Sets a link's MAC in the model (not recorded).
    pub fn edit_mac(&mut self, name: &str, mac: [u8; 6]) {
        if let Some(l) = self.model.links.get_mut(name) {
            l.mac = Some(mac);
        }
    }

    /// A link of the model by name.
    pub fn get(&self, name: &str) -> &Link {
        &self.model.links[name]
    }

    fn call(&mut self, op: &str, args: String) -> io::Result<()> {
        self.failures.record(&mut self.calls, op, args)
    }

    fn by_index(&mut self, index: u32) -> Option<&mut Link> {
        self.model.links.values_mut().find(|l| l.index == index)
    }

    fn edit(&mut self, index: u32, f: impl FnOnce(&mut Link)) -> io::Result<()> {
        match self.by_index(index) {
            Some(l) => {
                f(l);
                Ok(())
            }
            None => Err(io::Error::from_raw_os_error(libc::ENODEV)),
        }
    }

    fn add_link(&mut self, mut l: Link) -> io::Result<()> {
        if self.model.links.contains_key(&l.name) {
            return Err(exists(&format!("create {}", l.name)));
        }
        l.index = self.next_index;
        self.next_index += 1;
        self.model.links.insert(l.name.clone(), l);
        Ok(())
    }

    fn remove(&mut self, index: u32) {
        // The link's own sysctls go with it.
        if let Some(name) = self.by_index(index).map(|l| l.name.clone()) {
            let dir = format!("/conf/{name}/");
            self.model.sysctls.retain(|k, _| !k.contains(&dir));
        }
        self.model.links.retain(|_, l| l.index != index);
        for l in self.model.links.values_mut() {
            if l.controller == Some(index) {
                l.controller = None;
            }
        }
        // A VLAN interface goes with its lower device.
        let children: Vec<u32> = self
            .model
            .links
            .values()
            .filter(|l| l.kind.as_deref() == Some("vlan") && l.parent == Some(index))
            .map(|l| l.index)
            .collect();
        self.model.vlans.retain(|(i, _), _| *i != index);
        self.model.addrs.retain(|(i, _, _)| *i != index);
        for c in children {
            self.remove(c);
        }
    }
}

impl BridgeHost for Fake {
    fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>> {
        self.call("get_link", name.to_string())?;
        Ok(self.model.links.get(name).cloned())
    }
    fn link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        self.call("get_link_by_index", index.to_string())?;
        Ok(self.by_index(index).map(|l| l.clone()))
    }
    fn links(&mut self) -> io::Result<Vec<Link>> {
        self.call("get_links", String::new())?;
        Ok(self.model.links.values().cloned().collect())
    }
    fn create_bridge(&mut self, name: &str, mtu: Option<u32>, filtering: bool) -> io::Result<()> {
        let m = mtu.map(|m| format!(" mtu={m}")).unwrap_or_default();
        self.call(
            "create_bridge",
            format!("{name}{m} vlan_filtering={filtering}"),
        )?;
        let mut l = link(0, name, "bridge");
        l.mtu = mtu.unwrap_or(1500);
        l.vlan_filtering = Some(filtering);
        self.add_link(l)
    }
    fn create_vlan(&mut self, name: &str, parent: &Link, vid: u16) -> io::Result<()> {
        self.call("create_vlan", format!("{name} on {} id {vid}", parent.name))?;
        let mut l = link(0, name, "vlan");
        (l.parent, l.vlan_id, l.mtu) = (Some(parent.index), Some(vid), parent.mtu);
        self.add_link(l)
    }
    fn set_vlan_filtering(&mut self, bridge: &Link, on: bool) -> io::Result<()> {
        self.call("set_vlan_filtering", format!("{} {on}", bridge.name))?;
        self.edit(bridge.index, |l| l.vlan_filtering = Some(on))
    }
    fn set_promisc(&mut self, l: &Link, on: bool) -> io::Result<()> {
        self.call("set_promisc", format!("{} {on}", l.name))?;
        self.edit(l.index, |l| l.promisc = on)
    }
    fn set_up(&mut self, l: &Link) -> io::Result<()> {
        self.call("set_up", l.name.clone())?;
        self.edit(l.index, |l| l.up = true)
    }
    fn set_mac(&mut self, l: &Link, mac: [u8; 6]) -> io::Result<()> {
        self.call("set_mac", format!("{} {}", l.name, format_mac(&mac)))?;
        self.edit(l.index, |l| l.mac = Some(mac))
    }
    fn set_alias(&mut self, l: &Link, alias: &str) -> io::Result<()> {
        self.call("set_alias", format!("{} {alias}", l.name))?;
        self.edit(l.index, |l| l.alias = Some(alias.to_string()))
    }
    fn set_controller(&mut self, port: &Link, bridge: &Link) -> io::Result<()> {
        self.call("set_controller", format!("{} {}", port.name, bridge.name))?;
        let filtering = self.by_index(bridge.index).and_then(|b| b.vlan_filtering) == Some(true);
        self.edit(port.index, |l| l.controller = Some(bridge.index))?;
        if filtering {
            // The kernel's default_pvid: VLAN 1, PVID and untagged.
            self.model.vlans.insert((port.index, 1), (true, true));
        }
        Ok(())
    }
    fn set_nomaster(&mut self, l: &Link) -> io::Result<()> {
        self.call("set_nomaster", l.name.clone())?;
        self.model.vlans.retain(|(i, _), _| *i != l.index);
        self.edit(l.index, |l| l.controller = None)
    }
    fn delete_link(&mut self, index: u32, name: &str) -> io::Result<()> {
        self.call("delete_link", name.to_string())?;
        if self.by_index(index).is_none() {
            return Err(io::Error::from_raw_os_error(libc::ENODEV));
        }
        self.remove(index);
        Ok(())
    }
    fn delete_link_by_name(&mut self, name: &str) -> io::Result<()> {
        self.call("delete_link", name.to_string())?;
        if let Some(i) = self.model.links.get(name).map(|l| l.index) {
            self.remove(i);
        }
        Ok(())
    }
    fn addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        self.call("get_addresses", index.to_string())?;
        let a = self.model.addrs.iter().filter(|a| a.0 == index);
        Ok(a.map(|a| (a.1, a.2)).collect())
    }
    fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        self.call("add_address", format!("{index} {ip}/{prefix}"))?;
        if !self.model.addrs.insert((index, ip, prefix)) {
            return Err(exists("add address"));
        }
        Ok(())
    }
    fn del_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        self.call("del_address", format!("{index} {ip}/{prefix}"))?;
        self.model.addrs.remove(&(index, ip, prefix));
        Ok(())
    }
    fn routes(&mut self) -> io::Result<Vec<RouteEntry>> {
        self.call("get_routes", String::new())?;
        Ok(self.model.routes.clone())
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
        self.call(
            "vlan_add",
            format!("{} {t:?} {lo}-{hi} pvid={pvid} untagged={untagged}", l.name),
        )?;
        self.model
            .vlans
            .extend((lo..=hi).map(|v| ((l.index, v), (pvid, untagged))));
        Ok(())
    }
    fn vlan_remove(&mut self, l: &Link, t: Target, lo: u16, hi: u16) -> io::Result<()> {
        self.call("vlan_remove", format!("{} {t:?} {lo}-{hi}", l.name))?;
        self.model
            .vlans
            .retain(|(i, v), _| *i != l.index || !(lo..=hi).contains(v));
        Ok(())
    }
    fn vlans(&mut self) -> io::Result<Vec<(u32, Membership)>> {
        self.call("get_vlans", String::new())?;
        let m = |(&(i, vid), &(pvid, untagged)): (&(u32, u16), &(bool, bool))| {
            (
                i,
                Membership {
                    vid,
                    pvid,
                    untagged,
                },
            )
        };
        Ok(self.model.vlans.iter().map(m).collect())
    }
    fn forwarding(&mut self, v6: bool) -> io::Result<Option<bool>> {
        self.call("get_forwarding", if v6 { "v6" } else { "v4" }.to_string())?;
        Ok(self.model.forwarding[usize::from(v6)])
    }
    fn sysctl(&mut self, key: &str, value: &str) -> io::Result<()> {
        self.call("sysctl", format!("{key}={value}"))?;
        match key {
            "net/ipv4/ip_forward" => self.model.forwarding[0] = Some(value == "1"),
            "net/ipv6/conf/all/forwarding" => self.model.forwarding[1] = Some(value == "1"),
            _ => {
                self.model
                    .sysctls
                    .insert(key.to_string(), value.to_string());
            }
        }
        Ok(())
    }
}
