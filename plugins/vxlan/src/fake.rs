//! A recording [`VxlanHost`] for the unit tests (no root, no kernel): every call is written to
//! [`Fake::calls`] in order, a small model of the node and the pod (links, VXLAN settings, routes,
//! addresses, flood lists, sysctls, nftables tables and chains) changes as the kernel would change it,
//! and [`Fake::fail_on`] / [`Fake::fail_nth`] make a named or the n-th call fail. The attach engine
//! is one opaque step here (its own fake tests it): `attach` adds the host veth on the bridge, the pod
//! link and the result's routes, `detach` removes them.

use crate::host::{Ns, VxlanHost};
use plumb_attach::fake::{changes, ops, Failures};
use plumb_attach::naming;
use plumb_attach::plan::PortPlan;
use plumb_cni::{code, AddResult, CniError, CniResult, Request};
use plumb_net::addr::RouteEntry;
use plumb_net::link::Link;
use plumb_net::vxlan::VxlanSettings;
use plumb_nft::Family;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

/// The pod's primary interface, as [`Fake::new`] makes it.
pub const POD_PRIMARY: &str = "eth0";
/// The node's underlay device, as [`Fake::new`] makes it.
pub const UNDERLAY: &str = "ens3";
/// The underlay's index.
pub const UNDERLAY_INDEX: u32 = 2;
/// The node's own underlay address.
pub const NODE_IP: &str = "192.168.0.1";

/// What the fake node and pod hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Model {
    /// Links by namespace and name.
    pub links: BTreeMap<(Ns, String), Link>,
    /// The VXLAN settings of the node's VTEPs, by name.
    pub vxlan: BTreeMap<String, VxlanSettings>,
    /// Main-table routes.
    pub routes: Vec<(Ns, RouteEntry)>,
    /// The node's addresses.
    pub addresses: Vec<IpAddr>,
    /// Flood lists by VTEP index.
    pub fdb: BTreeMap<u32, Vec<IpAddr>>,
    /// Sysctls by namespace and key.
    pub sysctls: BTreeMap<(Ns, String), String>,
    /// The pod's nftables tables: (family, table).
    pub tables: BTreeSet<(&'static str, String)>,
    /// The pod's nftables chains: (family, table, chain) → rules, as "<src>/<prefix> oifname <out>".
    pub chains: BTreeMap<(&'static str, String, String), Vec<String>>,
}

/// The recording fake.
#[derive(Debug)]
pub struct Fake {
    /// Every call, in order: `"<op> <arguments>"`; lookups start with `get`.
    pub calls: Vec<String>,
    /// The model.
    pub model: Model,
    /// What the attach engine's ADD returns.
    pub attached: AddResult,
    failures: Failures,
    next_index: u32,
    /// The host veth and pod link of the attachment made, for `detach`.
    attachment: Option<(String, String)>,
}

/// A link of `kind` as the fake makes it: down, MTU 1500.
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
        vlan_filtering: None,
        alias: None,
        parent: None,
        vlan_id: None,
    }
}

/// A default route out of `oif`.
pub fn default_route(v6: bool, oif: u32) -> RouteEntry {
    RouteEntry {
        dst: if v6 {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        },
        prefix: 0,
        gw: None,
        oif: Some(oif),
    }
}

fn errno(n: i32) -> io::Error {
    io::Error::from_raw_os_error(n)
}

impl Fake {
    /// A node with its underlay `ens3` (index 2, MTU 1500, up, the IPv4 default route's device,
    /// address 192.168.0.1) and a pod with its primary `eth0` (index 2, MTU 1500, default route) and
    /// forwarding off.
    pub fn new() -> Fake {
        let mut m = Model::default();
        let mut up = link(UNDERLAY_INDEX, UNDERLAY, "device");
        (up.up, up.lower_up) = (true, true);
        m.links.insert((Ns::Host, UNDERLAY.into()), up);
        m.routes
            .push((Ns::Host, default_route(false, UNDERLAY_INDEX)));
        m.addresses = vec![
            "127.0.0.1".parse().unwrap(),
            NODE_IP.parse().unwrap(),
            "fd00::1".parse().unwrap(),
        ];
        let mut primary = link(2, POD_PRIMARY, "veth");
        (primary.up, primary.lower_up) = (true, true);
        m.links.insert((Ns::Pod, POD_PRIMARY.into()), primary);
        m.routes.push((Ns::Pod, default_route(false, 2)));
        for key in ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"] {
            m.sysctls.insert((Ns::Pod, key.into()), "0".into());
        }
        Fake {
            calls: Vec::new(),
            model: m,
            attached: AddResult::default(),
            failures: Failures::default(),
            next_index: 10,
            attachment: None,
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

    /// The calls that change something (no lookups).
    pub fn changes(&self) -> Vec<String> {
        changes(&self.calls)
    }

    /// The op names of [`Fake::changes`].
    pub fn ops(&self) -> Vec<String> {
        ops(&self.calls)
    }

    /// Adds a host link (fresh index) with the kernel's default `accept_ra` and returns it.
    pub fn add_host_link(&mut self, name: &str, kind: &str) -> Link {
        let l = link(self.index(), name, kind);
        self.model.links.insert((Ns::Host, name.into()), l.clone());
        self.model.sysctls.insert(
            (Ns::Host, format!("net/ipv6/conf/{name}/accept_ra")),
            "1".into(),
        );
        l
    }

    /// A host link of the model by name.
    pub fn host(&self, name: &str) -> &Link {
        &self.model.links[&(Ns::Host, name.to_string())]
    }

    /// A host link of the model by name, to change it.
    pub fn host_mut(&mut self, name: &str) -> &mut Link {
        self.model
            .links
            .get_mut(&(Ns::Host, name.to_string()))
            .expect("the model has that link")
    }

    fn index(&mut self) -> u32 {
        self.next_index += 1;
        self.next_index
    }

    fn call(&mut self, op: &str, args: String) -> io::Result<()> {
        self.failures.record(&mut self.calls, op, args)
    }

    fn cni_call(&mut self, op: &str, args: String) -> CniResult<()> {
        self.call(op, args)
            .map_err(|e| CniError::new(code::IO_FAILURE, e.to_string()))
    }

    fn by_index(&mut self, ns: Ns, index: u32) -> Option<&mut Link> {
        self.model
            .links
            .iter_mut()
            .find(|((n, _), l)| *n == ns && l.index == index)
            .map(|(_, l)| l)
    }

    fn host_name(&self, index: u32) -> String {
        self.model
            .links
            .iter()
            .find(|((n, _), l)| *n == Ns::Host && l.index == index)
            .map_or_else(|| format!("#{index}"), |((_, name), _)| name.clone())
    }

    /// Removes host link `index` with what goes with it: its ports' membership, flood list, VXLAN
    /// settings and sysctls.
    fn remove_host_link(&mut self, index: u32, name: &str) {
        let m = &mut self.model;
        m.links
            .retain(|(n, _), l| !(*n == Ns::Host && l.index == index));
        for ((n, _), l) in m.links.iter_mut() {
            if *n == Ns::Host && l.controller == Some(index) {
                l.controller = None;
            }
        }
        m.fdb.remove(&index);
        m.vxlan.remove(name);
        let conf = format!("net/ipv6/conf/{name}/");
        m.sysctls
            .retain(|(n, k), _| !(*n == Ns::Host && k.starts_with(&conf)));
    }

    fn change(&mut self, index: u32, f: impl FnOnce(&mut Link)) -> io::Result<()> {
        f(self
            .by_index(Ns::Host, index)
            .ok_or_else(|| errno(libc::ENODEV))?);
        Ok(())
    }
}

/// The op name of a recorded call.
pub fn op_of(call: &str) -> &str {
    call.split(' ').next().unwrap_or_default()
}

fn ns_name(ns: Ns) -> &'static str {
    match ns {
        Ns::Host => "host",
        Ns::Pod => "pod",
    }
}

impl VxlanHost for Fake {
    fn link(&mut self, ns: Ns, name: &str) -> io::Result<Option<Link>> {
        self.call("get_link", format!("{} {name}", ns_name(ns)))?;
        Ok(self.model.links.get(&(ns, name.to_string())).cloned())
    }
    fn link_by_index(&mut self, ns: Ns, index: u32) -> io::Result<Option<Link>> {
        self.call("get_link_by_index", format!("{} {index}", ns_name(ns)))?;
        Ok(self.by_index(ns, index).map(|l| l.clone()))
    }
    fn links(&mut self, ns: Ns) -> io::Result<Vec<Link>> {
        self.call("get_links", ns_name(ns).into())?;
        Ok(self
            .model
            .links
            .iter()
            .filter(|((n, _), _)| *n == ns)
            .map(|(_, l)| l.clone())
            .collect())
    }
    fn routes(&mut self, ns: Ns, v6: bool) -> io::Result<Vec<RouteEntry>> {
        self.call("get_routes", format!("{} v6={v6}", ns_name(ns)))?;
        Ok(self
            .model
            .routes
            .iter()
            .filter(|(n, r)| *n == ns && r.dst.is_ipv6() == v6)
            .map(|(_, r)| *r)
            .collect())
    }
    fn host_addresses(&mut self) -> io::Result<Vec<IpAddr>> {
        self.call("get_addresses", String::new())?;
        Ok(self.model.addresses.clone())
    }
    fn read_sysctl(&mut self, ns: Ns, key: &str) -> io::Result<String> {
        self.call("get_sysctl", format!("{} {key}", ns_name(ns)))?;
        self.model
            .sysctls
            .get(&(ns, key.to_string()))
            .map(|v| format!("{v}\n"))
            .ok_or_else(|| errno(libc::ENOENT))
    }
    fn write_sysctl(&mut self, ns: Ns, key: &str, value: &str) -> io::Result<()> {
        self.call("write_sysctl", format!("{} {key} {value}", ns_name(ns)))?;
        self.model
            .sysctls
            .insert((ns, key.to_string()), value.to_string());
        Ok(())
    }
    fn create_bridge(&mut self, name: &str) -> io::Result<()> {
        self.call("create_bridge", name.into())?;
        if self.model.links.contains_key(&(Ns::Host, name.into())) {
            return Err(errno(libc::EEXIST));
        }
        self.add_host_link(name, "bridge");
        Ok(())
    }
    fn set_mtu(&mut self, l: &Link, mtu: u32) -> io::Result<()> {
        self.call("set_mtu", format!("{} {mtu}", l.name))?;
        self.change(l.index, |l| l.mtu = mtu)
    }
    fn set_up(&mut self, l: &Link) -> io::Result<()> {
        self.call("set_up", l.name.clone())?;
        self.change(l.index, |l| (l.up, l.lower_up) = (true, true))
    }
    fn set_controller(&mut self, port: &Link, bridge: &Link) -> io::Result<()> {
        self.call("set_controller", format!("{} {}", port.name, bridge.name))?;
        self.change(port.index, |l| l.controller = Some(bridge.index))
    }
    fn delete_link(&mut self, index: u32, name: &str) -> io::Result<()> {
        self.call("delete_link", name.into())?;
        self.remove_host_link(index, name);
        Ok(())
    }
    fn delete_link_by_name(&mut self, name: &str) -> io::Result<()> {
        self.call("delete_link_by_name", name.into())?;
        if let Some(l) = self.model.links.get(&(Ns::Host, name.to_string())) {
            self.remove_host_link(l.index, name);
        }
        Ok(())
    }
    fn vxlan(&mut self, name: &str) -> io::Result<Option<(Link, Option<VxlanSettings>)>> {
        self.call("get_vxlan", name.into())?;
        Ok(self
            .model
            .links
            .get(&(Ns::Host, name.to_string()))
            .map(|l| (l.clone(), self.model.vxlan.get(name).cloned())))
    }
    fn create_vxlan(&mut self, name: &str, s: &VxlanSettings, mtu: u32) -> io::Result<()> {
        self.call("create_vxlan", format!("{name} vni {} mtu {mtu}", s.vni))?;
        let taken = self.model.links.contains_key(&(Ns::Host, name.into()))
            || self
                .model
                .vxlan
                .values()
                .any(|o| o.vni == s.vni && o.port == s.port);
        if taken {
            return Err(errno(libc::EEXIST));
        }
        self.add_host_link(name, "vxlan");
        self.host_mut(name).mtu = mtu;
        self.model.vxlan.insert(name.into(), s.clone());
        Ok(())
    }
    fn flood_list(&mut self, vtep: u32) -> io::Result<Vec<IpAddr>> {
        self.call("get_flood_list", self.host_name(vtep))?;
        Ok(self.model.fdb.get(&vtep).cloned().unwrap_or_default())
    }
    fn flood_add(&mut self, vtep: u32, peer: IpAddr) -> io::Result<()> {
        self.call("flood_add", format!("{} {peer}", self.host_name(vtep)))?;
        self.model.fdb.entry(vtep).or_default().push(peer);
        Ok(())
    }
    fn flood_remove(&mut self, vtep: u32, peer: IpAddr) -> io::Result<()> {
        self.call("flood_remove", format!("{} {peer}", self.host_name(vtep)))?;
        let list = self.model.fdb.entry(vtep).or_default();
        let before = list.len();
        list.retain(|p| *p != peer);
        if list.len() == before {
            return Err(errno(libc::ENOENT));
        }
        Ok(())
    }
    fn add_masquerade_out(
        &mut self,
        f: Family,
        table: &str,
        chain: &str,
        src: (IpAddr, u8),
        out: &str,
    ) -> io::Result<()> {
        self.call(
            "add_masquerade_out",
            format!("{} {table} {chain} {}/{} {out}", f.name(), src.0, src.1),
        )?;
        // One batch: the table, the chain and its rule appear together.
        self.model.tables.insert((f.name(), table.into()));
        self.model
            .chains
            .entry((f.name(), table.into(), chain.into()))
            .or_default()
            .push(format!("{}/{} oifname {out}", src.0, src.1));
        Ok(())
    }
    fn delete_chain(&mut self, f: Family, table: &str, chain: &str) -> io::Result<()> {
        self.call("delete_chain", format!("{} {table} {chain}", f.name()))?;
        self.model
            .chains
            .remove(&(f.name(), table.into(), chain.into()));
        Ok(())
    }
    fn list_chains(&mut self, f: Family, table: &str) -> io::Result<Vec<String>> {
        self.call("get_chains", format!("{} {table}", f.name()))?;
        Ok(self
            .model
            .chains
            .keys()
            .filter(|(fam, t, _)| *fam == f.name() && t == table)
            .map(|(_, _, c)| c.clone())
            .collect())
    }
    fn delete_table(&mut self, f: Family, table: &str) -> io::Result<()> {
        self.call("delete_table", format!("{} {table}", f.name()))?;
        self.model.tables.remove(&(f.name(), table.into()));
        self.model
            .chains
            .retain(|(fam, t, _), _| !(*fam == f.name() && t == table));
        Ok(())
    }
    fn chain_exists(&mut self, f: Family, table: &str, chain: &str) -> io::Result<bool> {
        self.call("get_chain_exists", format!("{} {table} {chain}", f.name()))?;
        Ok(self
            .model
            .chains
            .contains_key(&(f.name(), table.into(), chain.into())))
    }
    fn attach(&mut self, req: &Request, port: &PortPlan, bridge: Link) -> CniResult<AddResult> {
        let mtu = port.mtu.unwrap_or(1500);
        self.cni_call("attach", format!("{} mtu {mtu}", bridge.name))?;
        let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
        let veth = naming::host_veth(cid, ifname);
        let mut host = link(self.index(), &veth, "veth");
        (host.mtu, host.controller, host.up) = (mtu, Some(bridge.index), true);
        self.model.links.insert((Ns::Host, veth.clone()), host);
        let mut pod = link(self.index(), ifname, "veth");
        (pod.mtu, pod.up) = (mtu, true);
        let index = pod.index;
        self.model.links.insert((Ns::Pod, ifname.clone()), pod);
        // The kernel keeps the first route to a prefix: a second one is not added.
        for r in &self.attached.routes {
            let dst = r.dst.network();
            let taken = self
                .model
                .routes
                .iter()
                .any(|(n, e)| *n == Ns::Pod && e.dst == dst.addr && e.prefix == dst.prefix);
            if !taken {
                let entry = RouteEntry {
                    dst: dst.addr,
                    prefix: dst.prefix,
                    gw: r.gw,
                    oif: Some(index),
                };
                self.model.routes.push((Ns::Pod, entry));
            }
        }
        self.attachment = Some((veth, ifname.clone()));
        Ok(self.attached.clone())
    }
    fn detach(&mut self, _req: &Request, _port: &PortPlan) {
        let _ = self.call("detach", String::new());
        let Some((veth, ifname)) = self.attachment.take() else {
            return;
        };
        let m = &mut self.model;
        m.links.remove(&(Ns::Host, veth));
        if let Some(pod) = m.links.remove(&(Ns::Pod, ifname)) {
            m.routes
                .retain(|(n, r)| !(*n == Ns::Pod && r.oif == Some(pod.index)));
        }
    }
    fn check_port(&mut self, _req: &Request, port: &PortPlan) -> CniResult<()> {
        self.cni_call("check_port", format!("mtu {}", port.mtu.unwrap_or(0)))
    }
}
