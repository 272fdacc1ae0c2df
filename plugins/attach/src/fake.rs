//! A recording [`Host`] for the engine's unit tests (no root, no kernel): every call is written to
//! [`Fake::calls`] in order, a small model of what the kernel and IPAM would hold (links, addresses,
//! routes, port VLANs, nftables chains, reservations, the plugin's own objects) changes as the real
//! calls would change it, and [`Fake::fail_on`] makes one named call fail.

use crate::host::{Host, PodSysctls, VethPair};
use crate::naming;
use crate::steps::{BridgeCheck, GatewayStep, OwnStep, Undo};
use plumb_cni::result::{Cidr, IpConfig};
use plumb_cni::{code, AddResult, CniError, CniResult, Command, Env, NetConf, Request};
use plumb_net::addr::{RouteEntry, RouteSpec};
use plumb_net::link::{Link, PortOptions};
use plumb_net::vlan::Membership;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

/// What the fake kernel and IPAM hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Model {
    /// Host links by name.
    pub host: BTreeMap<String, Link>,
    /// Pod links by name.
    pub pod: BTreeMap<String, Link>,
    /// The pod end of each host veth.
    pub peers: BTreeMap<String, String>,
    /// Host addresses (index, ip, prefix).
    pub host_addrs: BTreeSet<(u32, IpAddr, u8)>,
    /// Pod addresses (index, ip, prefix).
    pub pod_addrs: BTreeSet<(u32, IpAddr, u8)>,
    /// Pod routes.
    pub pod_routes: Vec<RouteSpec>,
    /// Port VLANs: (port index, vid) → (pvid, untagged).
    pub vlans: BTreeMap<(u32, u16), (bool, bool)>,
    /// nftables chains, as "spoofcheck <chain>" / "masquerade-v4|v6 <chain>".
    pub chains: BTreeSet<String>,
    /// IPAM reservations, as "<cid>/<ifname>".
    pub reservations: BTreeSet<String>,
    /// The plugin's own objects (its [`OwnStep`] labels).
    pub own: BTreeSet<&'static str>,
}

/// The recording fake.
#[derive(Debug)]
pub struct Fake {
    /// Every call, in order: `"<op> <arguments>"`; lookups start with `get`.
    pub calls: Vec<String>,
    /// The model.
    pub model: Model,
    /// What IPAM ADD returns.
    pub ipam: AddResult,
    /// The ID the host's namespace gives the pod's (pod ends of host veths report it).
    pub pod_nsid: Option<i32>,
    /// Which calls fail.
    failures: Failures,
    next_index: u32,
}

/// Which calls of a recording fake fail: every call of a named operation, or the call at one position
/// of the log. Shared by the fakes of plumb-attach, plumb-bridge and plumb-vxlan.
#[derive(Debug, Clone, Default)]
pub struct Failures {
    ops: BTreeSet<String>,
    nth: Option<usize>,
}

impl Failures {
    /// Makes every call of `op` fail from now on.
    pub fn on(&mut self, op: &str) {
        self.ops.insert(op.to_string());
    }

    /// Makes the call at position `n` of the log (counting from 0) fail.
    pub fn nth(&mut self, n: usize) {
        self.nth = Some(n);
    }

    /// Appends `op args` to the log `calls`; an error naming `op` if this call is one to fail.
    pub fn record(&self, calls: &mut Vec<String>, op: &str, args: String) -> io::Result<()> {
        let position = calls.len();
        calls.push(format!("{op} {args}").trim_end().to_string());
        if self.ops.contains(op) || self.nth == Some(position) {
            return Err(io::Error::other(format!("injected failure in {op}")));
        }
        Ok(())
    }
}

/// A request as a runtime makes it, for the fakes' tests: `command` for container `cid`, interface
/// `ifname`, namespace `netns`, config `stdin` (which must parse).
pub fn request(command: Command, cid: &str, ifname: &str, netns: &str, stdin: Vec<u8>) -> Request {
    Request {
        env: Env {
            command,
            container_id: cid.into(),
            netns: Some(netns.into()),
            ifname: ifname.into(),
            args: Default::default(),
            path: Vec::new(),
            refused_identity: None,
        },
        conf: NetConf::parse(&stdin).expect("test config parses"),
        stdin,
    }
}

/// The calls of a log that change something (lookups start with `get`).
pub fn changes(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| !c.starts_with("get"))
        .cloned()
        .collect()
}

/// The operation names of [`changes`].
pub fn ops(calls: &[String]) -> Vec<String> {
    changes(calls)
        .iter()
        .map(|c| c.split(' ').next().unwrap_or_default().to_string())
        .collect()
}

/// The namespace ID of the fake pod, as the host sees it.
pub const FAKE_NSID: i32 = 7;

/// A link of `kind` as the fake makes it.
pub fn link(index: u32, name: &str, kind: &str) -> Link {
    Link {
        index,
        name: name.to_string(),
        kind: Some(kind.to_string()),
        mtu: 1500,
        mac: Some([0x02, 0, 0, 0, 0, index as u8]),
        controller: None,
        up: false,
        lower_up: false,
        promisc: false,
        vlan_filtering: (kind == "bridge").then_some(true),
        alias: None,
        parent: None,
        vlan_id: None,
    }
}

impl Default for Fake {
    fn default() -> Fake {
        Fake::new()
    }
}

impl Fake {
    /// A host with the bridge `br0` (index 1, VLAN filtering) and an empty pod.
    pub fn new() -> Fake {
        let mut model = Model::default();
        model.host.insert("br0".into(), link(1, "br0", "bridge"));
        Fake {
            calls: Vec::new(),
            model,
            ipam: AddResult::default(),
            pod_nsid: Some(FAKE_NSID),
            failures: Failures::default(),
            next_index: 10,
        }
    }

    /// Makes every call of `op` fail from now on.
    pub fn fail_on(&mut self, op: &str) {
        self.failures.on(op);
    }

    /// Makes the call at position `n` of [`Fake::calls`] (counting from 0) fail.
    pub fn fail_nth(&mut self, n: usize) {
        self.failures.nth(n);
    }

    /// The bridge as the engine gets it.
    pub fn bridge(&self) -> Link {
        self.model.host["br0"].clone()
    }

    /// The calls that change something (no lookups).
    pub fn changes(&self) -> Vec<String> {
        changes(&self.calls)
    }

    /// The op names of [`Fake::changes`].
    pub fn ops(&self) -> Vec<String> {
        ops(&self.calls)
    }

    fn call(&mut self, op: &str, args: String) -> io::Result<()> {
        self.failures.record(&mut self.calls, op, args)
    }

    fn cni_call(&mut self, op: &str, args: String) -> CniResult<()> {
        self.call(op, args)
            .map_err(|e| CniError::new(code::IO_FAILURE, e.to_string()))
    }

    fn host_by_index(&mut self, index: u32) -> Option<&mut Link> {
        self.model.host.values_mut().find(|l| l.index == index)
    }

    fn remove_host(&mut self, name: &str) {
        let Some(l) = self.model.host.remove(name) else {
            return;
        };
        self.model.vlans.retain(|(i, _), _| *i != l.index);
        self.model.host_addrs.retain(|(i, _, _)| *i != l.index);
        if let Some(peer) = self.model.peers.remove(name) {
            if let Some(p) = self.model.pod.remove(&peer) {
                self.model.pod_addrs.retain(|(i, _, _)| *i != p.index);
                self.model.pod_routes.retain(|r| r.oif != p.index);
            }
        }
    }
}

fn chains_of(net: &str, cid: &str, ifname: &str) -> String {
    naming::chain(net, cid, ifname)
}

impl Host for Fake {
    fn host_link(&mut self, name: &str) -> io::Result<Option<Link>> {
        self.call("get_host_link", name.to_string())?;
        Ok(self.model.host.get(name).cloned())
    }
    fn host_link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        self.call("get_host_link_by_index", index.to_string())?;
        Ok(self.host_by_index(index).map(|l| l.clone()))
    }
    fn host_sysctl(&mut self, key: &str, value: &str) -> io::Result<()> {
        self.call("host_sysctl", format!("{key}={value}"))
    }
    fn create_veth(&mut self, p: &VethPair) -> io::Result<()> {
        self.call("create_veth", format!("{}/{}", p.host, p.peer))?;
        let (h, c) = (self.next_index, self.next_index + 1);
        self.next_index += 2;
        let mut host = link(h, p.host, "veth");
        let mut peer = link(c, p.peer, "veth");
        if let Some(mtu) = p.mtu {
            host.mtu = mtu;
            peer.mtu = mtu;
        }
        if p.peer_mac.is_some() {
            peer.mac = p.peer_mac;
        }
        self.model.host.insert(p.host.to_string(), host);
        self.model.pod.insert(p.peer.to_string(), peer);
        self.model
            .peers
            .insert(p.host.to_string(), p.peer.to_string());
        Ok(())
    }
    fn set_controller(&mut self, port: &Link, bridge: &Link) -> io::Result<()> {
        self.call("set_controller", format!("{} {}", port.name, bridge.name))?;
        if bridge.vlan_filtering == Some(true) {
            // The kernel's default_pvid: VLAN 1, PVID and untagged.
            let key = (port.index, crate::ports::DEFAULT_VLAN);
            self.model.vlans.insert(key, (true, true));
        }
        if let Some(l) = self.host_by_index(port.index) {
            l.controller = Some(bridge.index);
        }
        Ok(())
    }
    fn set_port_options(&mut self, port: &Link, o: PortOptions) -> io::Result<()> {
        let args = format!(
            "{} hairpin={:?} isolated={:?}",
            port.name, o.hairpin, o.isolated
        );
        self.call("set_port_options", args)
    }
    fn vlan_add(
        &mut self,
        port: &Link,
        lo: u16,
        hi: u16,
        pvid: bool,
        untagged: bool,
    ) -> io::Result<()> {
        let args = format!("{} {lo}-{hi} pvid={pvid} untagged={untagged}", port.name);
        self.call("vlan_add", args)?;
        if pvid {
            // One PVID per port: the kernel moves it.
            for ((i, _), flags) in self.model.vlans.iter_mut() {
                if *i == port.index {
                    flags.0 = false;
                }
            }
        }
        let flags = (pvid, untagged);
        self.model
            .vlans
            .extend((lo..=hi).map(|v| ((port.index, v), flags)));
        Ok(())
    }
    fn vlan_remove(&mut self, port: &Link, lo: u16, hi: u16) -> io::Result<()> {
        self.call("vlan_remove", format!("{} {lo}-{hi}", port.name))?;
        self.model
            .vlans
            .retain(|(i, v), _| *i != port.index || !(lo..=hi).contains(v));
        Ok(())
    }
    fn end_pod_work(&mut self) {
        let _ = self.call("end_pod_work", String::new());
    }
    fn host_set_up(&mut self, l: &Link) -> io::Result<()> {
        self.call("host_set_up", l.name.clone())?;
        if let Some(l) = self.host_by_index(l.index) {
            l.up = true;
        }
        Ok(())
    }
    fn delete_host_link_by_name(&mut self, name: &str) -> io::Result<()> {
        self.call("delete_host_link", name.to_string())?;
        self.remove_host(name);
        Ok(())
    }
    fn delete_host_link(&mut self, _index: u32, name: &str) -> io::Result<()> {
        self.delete_host_link_by_name(name)
    }
    fn del_host_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        self.call("del_host_address", format!("{index} {ip}/{prefix}"))?;
        self.model.host_addrs.remove(&(index, ip, prefix));
        Ok(())
    }
    fn pod_link(&mut self, name: &str) -> io::Result<Option<Link>> {
        self.call("get_pod_link", name.to_string())?;
        Ok(self.model.pod.get(name).cloned())
    }
    fn pod_link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        self.call("get_pod_link_by_index", index.to_string())?;
        Ok(self.model.pod.values().find(|l| l.index == index).cloned())
    }
    fn pod_sysctls(&mut self, l: &Link, s: PodSysctls) -> io::Result<()> {
        let args = format!("{} layer3={} dad={} v6={}", l.name, s.layer3, s.dad, s.v6);
        self.call("pod_sysctls", args)
    }
    fn pod_add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        self.call("pod_add_address", format!("{index} {ip}/{prefix}"))?;
        self.model.pod_addrs.insert((index, ip, prefix));
        Ok(())
    }
    fn pod_set_up(&mut self, l: &Link) -> io::Result<()> {
        self.call("pod_set_up", l.name.clone())?;
        if let Some(l) = self.model.pod.values_mut().find(|p| p.index == l.index) {
            l.up = true;
        }
        Ok(())
    }
    fn pod_add_route(&mut self, r: &RouteSpec) -> io::Result<()> {
        let gw = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
        self.call("pod_add_route", format!("{}/{}{gw}", r.dst, r.prefix))?;
        self.model.pod_routes.push(*r);
        Ok(())
    }
    fn ipam_add(&mut self, ipam: &str, req: &Request) -> CniResult<AddResult> {
        self.cni_call("ipam_add", ipam.to_string())?;
        let key = format!("{}/{}", req.env.container_id, req.env.ifname);
        self.model.reservations.insert(key);
        Ok(self.ipam.clone())
    }
    fn ipam_del(&mut self, ipam: &str, req: &Request) -> CniResult<()> {
        self.cni_call("ipam_del", ipam.to_string())?;
        let key = format!("{}/{}", req.env.container_id, req.env.ifname);
        self.model.reservations.remove(&key);
        Ok(())
    }
    fn add_masquerade(
        &mut self,
        net: &str,
        cid: &str,
        ifname: &str,
        src: IpAddr,
        _: Cidr,
    ) -> io::Result<()> {
        self.call("add_masquerade", src.to_string())?;
        let v = if src.is_ipv4() { "v4" } else { "v6" };
        let chain = chains_of(net, cid, ifname);
        self.model.chains.insert(format!("masquerade-{v} {chain}"));
        Ok(())
    }
    fn del_masquerade(&mut self, net: &str, cid: &str, ifname: &str) -> io::Result<()> {
        self.call("del_masquerade", String::new())?;
        let chain = chains_of(net, cid, ifname);
        self.model
            .chains
            .retain(|c| !(c.starts_with("masquerade") && c.ends_with(&chain)));
        Ok(())
    }
    fn add_spoofcheck(
        &mut self,
        net: &str,
        cid: &str,
        ifname: &str,
        veth: &str,
        mac: [u8; 6],
    ) -> io::Result<()> {
        let args = format!("{veth} {}", plumb_net::link::format_mac(&mac));
        self.call("add_spoofcheck", args)?;
        let chain = chains_of(net, cid, ifname);
        self.model.chains.insert(format!("spoofcheck {chain}"));
        Ok(())
    }
    fn del_spoofcheck(&mut self, net: &str, cid: &str, ifname: &str) -> io::Result<()> {
        self.call("del_spoofcheck", String::new())?;
        let chain = chains_of(net, cid, ifname);
        self.model.chains.remove(&format!("spoofcheck {chain}"));
        Ok(())
    }
    /// The fake does not run the plugin's step (it needs a real `Route`): it does what plumb-bridge's
    /// gateway does, each IP's gateway onto the bridge, each on the undo stack.
    fn gateway(
        &mut self,
        _: GatewayStep,
        bridge: &Link,
        ips: &[IpConfig],
        undo: &mut Vec<Undo>,
    ) -> CniResult<()> {
        self.cni_call("gateway", bridge.name.clone())?;
        for ipc in ips {
            let Some(gw) = ipc.gateway else { continue };
            let key = (bridge.index, gw, ipc.address.prefix);
            if self.model.host_addrs.insert(key) {
                undo.push(Undo::GatewayAddress {
                    index: key.0,
                    ip: key.1,
                    prefix: key.2,
                });
            }
        }
        Ok(())
    }
    fn undo_own(&mut self, step: &dyn OwnStep) -> Result<(), String> {
        self.call("undo_own", step.label().to_string())
            .map_err(|e| e.to_string())?;
        self.model.own.remove(step.label());
        Ok(())
    }
    fn veth_peer(&mut self, name: &str) -> io::Result<Option<(u32, Option<i32>)>> {
        self.call("get_veth_peer", name.to_string())?;
        if self.model.host.get(name).and_then(|l| l.kind.as_deref()) != Some("veth") {
            return Ok(None);
        }
        let peer = self
            .model
            .peers
            .get(name)
            .and_then(|p| self.model.pod.get(p));
        Ok(peer.map(|p| (p.index, self.pod_nsid)))
    }
    fn pod_nsid(&mut self) -> io::Result<Option<i32>> {
        self.call("get_pod_nsid", String::new())?;
        Ok(self.pod_nsid)
    }
    fn open_host(&mut self) -> io::Result<()> {
        self.call("open_host", String::new())
    }
    fn pod_addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        self.call("get_pod_addresses", index.to_string())?;
        let a = self.model.pod_addrs.iter().filter(|a| a.0 == index);
        Ok(a.map(|a| (a.1, a.2)).collect())
    }
    fn pod_routes(&mut self) -> io::Result<Vec<RouteEntry>> {
        self.call("get_pod_routes", String::new())?;
        let entry = |r: &RouteSpec| RouteEntry {
            dst: r.dst,
            prefix: r.prefix,
            gw: r.gw,
            oif: Some(r.oif),
        };
        Ok(self.model.pod_routes.iter().map(entry).collect())
    }
    fn port_vlans(&mut self, index: u32) -> io::Result<BTreeSet<Membership>> {
        self.call("get_port_vlans", index.to_string())?;
        let of_port = self.model.vlans.iter().filter(|((i, _), _)| *i == index);
        Ok(of_port
            .map(|(&(_, vid), &(pvid, untagged))| Membership {
                vid,
                pvid,
                untagged,
            })
            .collect())
    }
    fn has_spoofcheck(&mut self, net: &str, cid: &str, ifname: &str) -> io::Result<bool> {
        self.call("get_spoofcheck", String::new())?;
        let chain = chains_of(net, cid, ifname);
        Ok(self.model.chains.contains(&format!("spoofcheck {chain}")))
    }
    fn ipam_check(&mut self, ipam: &str, req: &Request) -> CniResult<()> {
        self.cni_call("ipam_check", ipam.to_string())?;
        let key = format!("{}/{}", req.env.container_id, req.env.ifname);
        if !self.model.reservations.contains(&key) {
            return Err(CniError::new(
                code::CHECK_MISMATCH,
                format!("no reservation of {key}"),
            ));
        }
        Ok(())
    }
    /// The fake does not run the plugin's check (it needs a real `Route`), only records it.
    fn bridge_check(&mut self, _: BridgeCheck, bridge: &Link) -> CniResult<()> {
        self.cni_call("bridge_check", bridge.name.clone())
    }
}
