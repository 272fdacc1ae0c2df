//! The seam between the attach engine and the kernel: [`Host`] names what the engine does (make the
//! veth pair with its peer in the pod, make it a bridge port, address and route the pod side, add and
//! remove the nftables chains, reserve and release through IPAM, delete the host veth), [`Real`] does
//! it over `plumb_net` (host `Route`, the request's pod `Session`), `plumb-nft` and the IPAM delegate.
//! The engine ([`crate::attach`]) only talks to a `Host`, so its plan, undo stack and rollback order
//! are unit-tested without root against the recording fake in `crate::fake` (tests only).

use crate::firewall;
use crate::steps::{BridgeCheck, GatewayStep, OwnStep, Undo};
use plumb_cni::result::{Cidr, IpConfig};
use plumb_cni::{delegate, AddResult, CniResult, Command, Request};
use plumb_net::addr::{add_address, add_route_global, addresses, del_address, routes};
use plumb_net::addr::{RouteEntry, RouteSpec};
use plumb_net::link::{self, Link, PortOptions, VethSpec};
use plumb_net::nl::Route;
use plumb_net::session::Session;
use plumb_net::sysctl;
use plumb_net::vlan::{self, Membership, Target};
use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

/// The veth pair ADD makes: `host` in the host namespace, `peer` born in the pod's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VethPair<'a> {
    /// The host end's (derived) name.
    pub host: &'a str,
    /// The pod end's name (CNI_IFNAME).
    pub peer: &'a str,
    /// MTU of both ends.
    pub mtu: Option<u32>,
    /// The pod end's MAC.
    pub peer_mac: Option<[u8; 6]>,
}

/// The pod-side sysctls ADD sets on the container interface before it gets addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodSysctls {
    /// The interface gets IPAM addresses: DAD as `enabledad` says and `arp_notify`.
    pub layer3: bool,
    /// IPv6 duplicate address detection on.
    pub dad: bool,
    /// An IPv6 address comes: IPv6 switched on and `keep_addr_on_down`.
    pub v6: bool,
}

/// What the attach engine does to the host, the pod and IPAM; one call per kernel (or delegate)
/// operation, so a fake can record the plan and fail any one step.
pub trait Host {
    /// Whether host netlink calls can be made (a DEL whose socket could not be opened reports that
    /// once, as its own step, and skips the netlink steps).
    fn has_netlink(&self) -> bool {
        true
    }
    /// A host link by name.
    fn host_link(&mut self, name: &str) -> io::Result<Option<Link>>;
    /// A host link by index.
    fn host_link_by_index(&mut self, index: u32) -> io::Result<Option<Link>>;
    /// Writes a host sysctl (best effort at the caller).
    fn host_sysctl(&mut self, key: &str, value: &str) -> io::Result<()>;
    /// Creates the veth pair, its peer in the pod's namespace.
    fn create_veth(&mut self, pair: &VethPair) -> io::Result<()>;
    /// Makes `port` a port of `bridge`.
    fn set_controller(&mut self, port: &Link, bridge: &Link) -> io::Result<()>;
    /// Sets bridge port options on `port`.
    fn set_port_options(&mut self, port: &Link, opts: PortOptions) -> io::Result<()>;
    /// Adds VLANs `lo..=hi` to a bridge port.
    fn vlan_add(
        &mut self,
        port: &Link,
        lo: u16,
        hi: u16,
        pvid: bool,
        untagged: bool,
    ) -> io::Result<()>;
    /// Removes VLANs `lo..=hi` from a bridge port.
    fn vlan_remove(&mut self, port: &Link, lo: u16, hi: u16) -> io::Result<()>;
    /// Sets a host link up.
    fn host_set_up(&mut self, link: &Link) -> io::Result<()>;
    /// Ends the request's work in the pod (its session's worker thread) before the last step, when the
    /// plan says nothing else runs there: the kernel's work on carrier would otherwise keep that thread
    /// from a CPU when it must end, and the process with it. A no-op by default.
    fn end_pod_work(&mut self) {}
    /// Deletes a host link by name; none by that name is success.
    fn delete_host_link_by_name(&mut self, name: &str) -> io::Result<()>;
    /// Deletes the host link `index` (named `name` in errors).
    fn delete_host_link(&mut self, index: u32, name: &str) -> io::Result<()>;
    /// Removes an address from a host link.
    fn del_host_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()>;
    /// A pod link by name.
    fn pod_link(&mut self, name: &str) -> io::Result<Option<Link>>;
    /// A pod link by index.
    fn pod_link_by_index(&mut self, index: u32) -> io::Result<Option<Link>>;
    /// The pod-side sysctls of `ifname`.
    fn pod_sysctls(&mut self, l: &Link, s: PodSysctls) -> io::Result<()>;
    /// Adds an address to a pod link.
    fn pod_add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()>;
    /// Sets a pod link up.
    fn pod_set_up(&mut self, link: &Link) -> io::Result<()>;
    /// Adds a (scope universe) route in the pod.
    fn pod_add_route(&mut self, r: &RouteSpec) -> io::Result<()>;
    /// IPAM ADD through the delegate.
    fn ipam_add(&mut self, ipam: &str, req: &Request) -> CniResult<AddResult>;
    /// IPAM DEL through the delegate.
    fn ipam_del(&mut self, ipam: &str, req: &Request) -> CniResult<()>;
    /// Adds the masquerade rule for `src` leaving `subnet`.
    fn add_masquerade(
        &mut self,
        net: &str,
        cid: &str,
        ifname: &str,
        src: IpAddr,
        subnet: Cidr,
    ) -> io::Result<()>;
    /// Removes the attachment's masquerade chains; none is success.
    fn del_masquerade(&mut self, net: &str, cid: &str, ifname: &str) -> io::Result<()>;
    /// Adds the spoof-check chain on `host_veth` for `mac`.
    fn add_spoofcheck(
        &mut self,
        net: &str,
        cid: &str,
        ifname: &str,
        host_veth: &str,
        mac: [u8; 6],
    ) -> io::Result<()>;
    /// Removes the attachment's spoof-check chain; none is success.
    fn del_spoofcheck(&mut self, net: &str, cid: &str, ifname: &str) -> io::Result<()>;
    /// Runs the plugin's gateway step.
    fn gateway(
        &mut self,
        step: GatewayStep,
        bridge: &Link,
        ips: &[IpConfig],
        undo: &mut Vec<Undo>,
    ) -> CniResult<()>;
    /// Takes back a step of the plugin's own.
    fn undo_own(&mut self, step: &dyn OwnStep) -> Result<(), String>;
    /// A host veth's peer: its index and the ID (in the host's namespace) of the namespace it is in;
    /// `None` when `name` is no veth.
    fn veth_peer(&mut self, name: &str) -> io::Result<Option<(u32, Option<i32>)>>;
    /// The ID the host's namespace gives the pod's (`None`: it has none).
    fn pod_nsid(&mut self) -> io::Result<Option<i32>>;
    /// CHECK: makes sure host netlink calls can be made from here on (opens the socket if needed).
    fn open_host(&mut self) -> io::Result<()>;
    /// CHECK: the addresses of a pod link.
    fn pod_addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>>;
    /// CHECK: the pod's main-table routes, IPv4 then IPv6.
    fn pod_routes(&mut self) -> io::Result<Vec<RouteEntry>>;
    /// CHECK: the VLAN memberships of a bridge port.
    fn port_vlans(&mut self, index: u32) -> io::Result<BTreeSet<Membership>>;
    /// CHECK: whether the attachment's spoof-check chain is there.
    fn has_spoofcheck(&mut self, net: &str, cid: &str, ifname: &str) -> io::Result<bool>;
    /// CHECK: IPAM CHECK through the delegate.
    fn ipam_check(&mut self, ipam: &str, req: &Request) -> CniResult<()>;
    /// CHECK: runs the plugin's check of its bridge.
    fn bridge_check(&mut self, step: BridgeCheck, bridge: &Link) -> CniResult<()>;
}

/// The kernel: the host's rtnetlink socket and, for ADD, the request's session in the pod.
pub struct Real<'a> {
    host: Option<&'a mut Route>,
    pod: Option<&'a mut Session>,
    /// CHECK's host socket, opened by [`Host::open_host`] once the pod side is read.
    own: Option<Route>,
}

impl<'a> Real<'a> {
    /// The host side only (rollback, DEL): pod calls fail.
    pub fn host(host: &'a mut Route) -> Real<'a> {
        Real {
            host: Some(host),
            pod: None,
            own: None,
        }
    }

    /// No netlink socket could be opened (DEL goes on): nftables and IPAM only, netlink calls fail
    /// and [`Host::has_netlink`] says so.
    pub fn without_netlink() -> Real<'a> {
        Real {
            host: None,
            pod: None,
            own: None,
        }
    }

    /// The host and the request's session in the pod (ADD).
    pub fn with_pod(host: &'a mut Route, pod: &'a mut Session) -> Real<'a> {
        Real {
            host: Some(host),
            pod: Some(pod),
            own: None,
        }
    }

    /// The request's session in the pod, the host socket opened later by [`Host::open_host`] (CHECK).
    pub fn pod_first(pod: &'a mut Session) -> Real<'a> {
        Real {
            host: None,
            pod: Some(pod),
            own: None,
        }
    }

    fn nl(&mut self) -> io::Result<&mut Route> {
        match (self.host.as_deref_mut(), self.own.as_mut()) {
            (Some(h), _) | (None, Some(h)) => Ok(h),
            (None, None) => Err(io::Error::other("no netlink socket in the host namespace")),
        }
    }

    fn pod(&mut self) -> io::Result<&mut Session> {
        self.pod
            .as_deref_mut()
            .ok_or_else(|| io::Error::other("no session in the pod's namespace"))
    }
}

impl Host for Real<'_> {
    fn has_netlink(&self) -> bool {
        self.host.is_some() || self.own.is_some()
    }
    fn host_link(&mut self, name: &str) -> io::Result<Option<Link>> {
        link::by_name(self.nl()?, name)
    }
    fn host_link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        link::by_index(self.nl()?, index)
    }
    fn host_sysctl(&mut self, key: &str, value: &str) -> io::Result<()> {
        sysctl::write(key, value)
    }
    fn create_veth(&mut self, pair: &VethPair) -> io::Result<()> {
        let fd = self.pod()?.netns().fd();
        let host = self.nl()?;
        let spec = VethSpec {
            host_name: pair.host,
            peer_name: pair.peer,
            peer_netns_fd: fd,
            mtu: pair.mtu,
            peer_mac: pair.peer_mac,
            host_mac: None,
        };
        link::create_veth(host, &spec)
    }
    fn set_controller(&mut self, port: &Link, bridge: &Link) -> io::Result<()> {
        link::set_controller(self.nl()?, port, bridge)
    }
    fn set_port_options(&mut self, port: &Link, opts: PortOptions) -> io::Result<()> {
        link::set_port_options(self.nl()?, port, opts)
    }
    fn vlan_add(
        &mut self,
        port: &Link,
        lo: u16,
        hi: u16,
        pvid: bool,
        untagged: bool,
    ) -> io::Result<()> {
        vlan::add(self.nl()?, port, Target::Port, lo, hi, pvid, untagged)
    }
    fn vlan_remove(&mut self, port: &Link, lo: u16, hi: u16) -> io::Result<()> {
        vlan::remove(self.nl()?, port, Target::Port, lo, hi)
    }
    fn end_pod_work(&mut self) {
        if let Some(pod) = self.pod.as_mut() {
            pod.end_worker();
        }
    }
    fn host_set_up(&mut self, l: &Link) -> io::Result<()> {
        // The ADD's last step: the kernel's IPv6 start of the pod interface follows at once and floods
        // the bridge's ports in softirq. The private procfs instance goes first, while the machine is
        // quiet, so the process's exit does not wait for that work (its unmount waits for an RCU grace
        // period); see plumb_net::sysctl::release.
        sysctl::release();
        link::set_up(self.nl()?, l, true)
    }
    fn delete_host_link_by_name(&mut self, name: &str) -> io::Result<()> {
        link::delete_by_name(self.nl()?, name)
    }
    fn delete_host_link(&mut self, index: u32, name: &str) -> io::Result<()> {
        link::delete(self.nl()?, index, name)
    }
    fn del_host_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        del_address(self.nl()?, index, ip, prefix)
    }
    fn pod_link(&mut self, name: &str) -> io::Result<Option<Link>> {
        link::by_name(self.pod()?.route(), name)
    }
    fn pod_link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        link::by_index(self.pod()?.route(), index)
    }
    fn pod_sysctls(&mut self, l: &Link, s: PodSysctls) -> io::Result<()> {
        // Sysctls resolve against the namespace of the thread that opens them: one job on the
        // session's worker, inside the pod.
        let name = l.name.clone();
        let pod = self.pod()?;
        pod.run(move || pod_sysctls(&name, s))?;
        if s.layer3 {
            // Gratuitous ARP on link changes, as the reference sets it, through rtnetlink: the
            // sysctl would be one more /proc/sys/net lookup, which walks every namespace's entry
            // (plumb_net::sysctl says why). Best effort, before the link is up.
            let _ = link::set_arp_notify(pod.route(), l);
        }
        Ok(())
    }
    fn pod_add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        add_address(self.pod()?.route(), index, ip, prefix, false)
    }
    fn pod_set_up(&mut self, l: &Link) -> io::Result<()> {
        link::set_up(self.pod()?.route(), l, true)
    }
    fn pod_add_route(&mut self, r: &RouteSpec) -> io::Result<()> {
        add_route_global(self.pod()?.route(), r)
    }
    fn ipam_add(&mut self, ipam: &str, req: &Request) -> CniResult<AddResult> {
        delegate::add(ipam, &req.env.path, &req.stdin, req.conf.version, &[])
    }
    fn ipam_del(&mut self, ipam: &str, req: &Request) -> CniResult<()> {
        delegate::run(ipam, Command::Del, &req.env.path, &req.stdin, &[])
    }
    fn add_masquerade(
        &mut self,
        net: &str,
        cid: &str,
        ifname: &str,
        src: IpAddr,
        subnet: Cidr,
    ) -> io::Result<()> {
        firewall::add_masquerade(net, cid, ifname, src, subnet)
    }
    fn del_masquerade(&mut self, net: &str, cid: &str, ifname: &str) -> io::Result<()> {
        firewall::del_masquerade(net, cid, ifname)
    }
    fn add_spoofcheck(
        &mut self,
        net: &str,
        cid: &str,
        ifname: &str,
        host_veth: &str,
        mac: [u8; 6],
    ) -> io::Result<()> {
        firewall::add_spoofcheck(net, cid, ifname, host_veth, mac)
    }
    fn del_spoofcheck(&mut self, net: &str, cid: &str, ifname: &str) -> io::Result<()> {
        firewall::del_spoofcheck(net, cid, ifname)
    }
    fn gateway(
        &mut self,
        step: GatewayStep,
        bridge: &Link,
        ips: &[IpConfig],
        undo: &mut Vec<Undo>,
    ) -> CniResult<()> {
        let host = self
            .nl()
            .map_err(crate::os::os("cannot reach the host's netlink"))?;
        step(host, bridge, ips, undo)
    }
    fn undo_own(&mut self, step: &dyn OwnStep) -> Result<(), String> {
        step.undo(self.nl().map_err(|e| e.to_string())?)
    }
    fn veth_peer(&mut self, name: &str) -> io::Result<Option<(u32, Option<i32>)>> {
        link::veth_peer(self.nl()?, name)
    }
    fn pod_nsid(&mut self) -> io::Result<Option<i32>> {
        let pod = self
            .pod
            .as_deref()
            .ok_or_else(|| io::Error::other("no session in the pod's namespace"))?;
        let host = match (self.host.as_deref_mut(), self.own.as_mut()) {
            (Some(h), _) | (None, Some(h)) => h,
            (None, None) => {
                return Err(io::Error::other("no netlink socket in the host namespace"))
            }
        };
        plumb_net::netns::nsid(host, pod.netns())
    }
    fn open_host(&mut self) -> io::Result<()> {
        if !self.has_netlink() {
            self.own = Some(Route::open()?);
        }
        Ok(())
    }
    fn pod_addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        addresses(self.pod()?.route(), index)
    }
    fn pod_routes(&mut self) -> io::Result<Vec<RouteEntry>> {
        let nl = self.pod()?.route();
        let mut t = routes(nl, false)?;
        t.extend(routes(nl, true)?);
        Ok(t)
    }
    fn port_vlans(&mut self, index: u32) -> io::Result<BTreeSet<Membership>> {
        Ok(vlan::list(self.nl()?)?
            .into_iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, m)| m)
            .collect())
    }
    fn has_spoofcheck(&mut self, net: &str, cid: &str, ifname: &str) -> io::Result<bool> {
        firewall::has_spoofcheck(net, cid, ifname)
    }
    fn ipam_check(&mut self, ipam: &str, req: &Request) -> CniResult<()> {
        delegate::run(ipam, Command::Check, &req.env.path, &req.stdin, &[])
    }
    fn bridge_check(&mut self, step: BridgeCheck, bridge: &Link) -> CniResult<()> {
        let host = self
            .nl()
            .map_err(crate::os::os("cannot reach the host's netlink"))?;
        step(host, bridge)
    }
}

/// In the pod's namespace (the session's worker thread).
fn pod_sysctls(name: &str, s: PodSysctls) -> io::Result<()> {
    if s.layer3 {
        // The reference's sysctls on an interface that gets addresses: DAD as `enabledad` says (off
        // by default, so addresses are usable at once). Best effort, as there: a kernel without
        // IPv6 has no accept_dad. (`arp_notify` goes through rtnetlink, in `Real::pod_sysctls`.)
        if s.dad {
            let _ = sysctl::write(&format!("net/ipv6/conf/{name}/enhanced_dad"), "1");
        }
        let _ = sysctl::write(
            &format!("net/ipv6/conf/{name}/accept_dad"),
            if s.dad { "1" } else { "0" },
        );
    }
    if s.v6 {
        enable_ipv6(name)?;
    }
    Ok(())
}

/// Before the first IPv6 address goes on `ifname` (in the container's namespace), as the reference
/// plugins v1.10 do: IPv6 switched on for `lo` and the interface if the namespace's defaults have it
/// off, and `keep_addr_on_down` set, so a chained plugin that takes the link down and up (tuning
/// changing the MAC or MTU) does not make the kernel drop the addresses.
fn enable_ipv6(ifname: &str) -> io::Result<()> {
    for dev in ["lo", ifname] {
        let key = format!("net/ipv6/conf/{dev}/disable_ipv6");
        if sysctl::read(&key).is_ok_and(|v| v.trim() != "0") {
            sysctl::write(&key, "0").map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot enable IPv6 on {dev} ({key}): {e}"),
                )
            })?;
        }
    }
    let key = format!("net/ipv6/conf/{ifname}/keep_addr_on_down");
    sysctl::write(&key, "1")
        .map_err(|e| io::Error::new(e.kind(), format!("cannot set {key} to 1: {e}")))
}
