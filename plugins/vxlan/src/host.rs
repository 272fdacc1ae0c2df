//! The seam between plumb-vxlan's logic and the kernel: [`VxlanHost`] names each operation the
//! plugin performs on the node (links, routes, addresses, the bridge and VTEP, the flood list,
//! sysctls) and in the pod (links, routes, forwarding sysctls, the router's nftables chains), plus the
//! attach engine as three opaque steps. [`Real`] does them over plumb-net (the host `Route`, the
//! request's `Session`), plumb-nft and plumb-attach; the unit tests drive the same logic with a
//! recording fake (`crate::fake`, tests only).

use plumb_attach::attach::{add_attachment, rollback, Undo};
use plumb_attach::os::os;
use plumb_attach::plan::PortPlan;
use plumb_cni::{AddResult, CniResult, Request};
use plumb_net::addr::{addresses, routes, RouteEntry};
use plumb_net::link::{self, Link};
use plumb_net::nl::Route;
use plumb_net::session::Session;
use plumb_net::vxlan::{self, VxlanSettings};
use plumb_net::{fdb, sysctl};
use plumb_nft::{Family, Nft};
use std::io;
use std::net::IpAddr;

/// The namespace a call acts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ns {
    /// The node's (the plugin's own).
    Host,
    /// The pod's (CNI_NETNS), through the request's session.
    Pod,
}

/// What plumb-vxlan does to the node and the pod: one method per kernel operation, so a fake can
/// record the plan and fail any one call.
pub trait VxlanHost {
    /// A link by name.
    fn link(&mut self, ns: Ns, name: &str) -> io::Result<Option<Link>>;
    /// A link by index.
    fn link_by_index(&mut self, ns: Ns, index: u32) -> io::Result<Option<Link>>;
    /// Every link.
    fn links(&mut self, ns: Ns) -> io::Result<Vec<Link>>;
    /// The main-table routes of one family.
    fn routes(&mut self, ns: Ns, v6: bool) -> io::Result<Vec<RouteEntry>>;
    /// Every address configured on the node.
    fn host_addresses(&mut self) -> io::Result<Vec<IpAddr>>;
    /// Reads a sysctl (`net/...`).
    fn read_sysctl(&mut self, ns: Ns, key: &str) -> io::Result<String>;
    /// Writes a sysctl (`net/...`).
    fn write_sysctl(&mut self, ns: Ns, key: &str, value: &str) -> io::Result<()>;
    /// Creates a bridge on the node (EEXIST when the name is taken).
    fn create_bridge(&mut self, name: &str) -> io::Result<()>;
    /// Sets a host link's MTU.
    fn set_mtu(&mut self, l: &Link, mtu: u32) -> io::Result<()>;
    /// Sets a host link up.
    fn set_up(&mut self, l: &Link) -> io::Result<()>;
    /// Makes host link `port` a port of `bridge`.
    fn set_controller(&mut self, port: &Link, bridge: &Link) -> io::Result<()>;
    /// Deletes the host link `index` (named `name` in errors); gone is success.
    fn delete_link(&mut self, index: u32, name: &str) -> io::Result<()>;
    /// Deletes a host link by name (a rollback that may not know the index); none is success.
    fn delete_link_by_name(&mut self, name: &str) -> io::Result<()>;
    /// A host link by name with its VXLAN settings (`None` when it is not a VXLAN device).
    fn vxlan(&mut self, name: &str) -> io::Result<Option<(Link, Option<VxlanSettings>)>>;
    /// Creates a VTEP (EEXIST when the name, or its VNI and port, are taken).
    fn create_vxlan(&mut self, name: &str, s: &VxlanSettings, mtu: u32) -> io::Result<()>;
    /// The VTEP's flood list (its all-zero FDB entries).
    fn flood_list(&mut self, vtep: u32) -> io::Result<Vec<IpAddr>>;
    /// Appends a peer to the VTEP's flood list.
    fn flood_add(&mut self, vtep: u32, peer: IpAddr) -> io::Result<()>;
    /// Removes a peer from the VTEP's flood list.
    fn flood_remove(&mut self, vtep: u32, peer: IpAddr) -> io::Result<()>;
    /// Pod: adds a nat chain masquerading `src` leaving through `out`.
    fn add_masquerade_out(
        &mut self,
        f: Family,
        table: &str,
        chain: &str,
        src: (IpAddr, u8),
        out: &str,
    ) -> io::Result<()>;
    /// Pod: deletes a chain; none is success.
    fn delete_chain(&mut self, f: Family, table: &str, chain: &str) -> io::Result<()>;
    /// Pod: the chains of a table (none for a missing table).
    fn list_chains(&mut self, f: Family, table: &str) -> io::Result<Vec<String>>;
    /// Pod: deletes a table; none is success.
    fn delete_table(&mut self, f: Family, table: &str) -> io::Result<()>;
    /// Pod: whether a chain exists.
    fn chain_exists(&mut self, f: Family, table: &str, chain: &str) -> io::Result<bool>;
    /// The attach engine's ADD of the pod's port on `bridge`; its steps are kept for [`Self::detach`].
    fn attach(&mut self, req: &Request, port: &PortPlan, bridge: Link) -> CniResult<AddResult>;
    /// Takes back every step [`Self::attach`] made (also those of a failed attach), newest first.
    fn detach(&mut self, req: &Request, port: &PortPlan);
    /// The attach engine's CHECK of the pod's port.
    fn check_port(&mut self, req: &Request, port: &PortPlan) -> CniResult<()>;
}

/// The kernel: the host's rtnetlink socket, the request's session in the pod, the pod's nftables
/// socket (opened on the session's worker at first use), and the attach engine's undo stack.
pub struct Real {
    host: Option<Route>,
    pod: Option<Session>,
    nft: Option<Nft>,
    undo: Vec<Undo>,
}

impl Real {
    /// Opens the host's netlink socket; `pod` is the request's session, if it has entered the pod.
    pub fn open(pod: Option<Session>) -> CniResult<Real> {
        let host = Route::open().map_err(os("cannot open a netlink socket"))?;
        Ok(Real {
            host: Some(host),
            pod,
            nft: None,
            undo: Vec::new(),
        })
    }

    /// The pod only (DEL of the router chain): host calls fail.
    pub fn pod_only(pod: Session) -> Real {
        Real {
            host: None,
            pod: Some(pod),
            nft: None,
            undo: Vec::new(),
        }
    }

    /// Hands the request's session in the pod to a `Real` opened without one (CHECK enters the pod
    /// after the node's side is verified).
    pub fn enter(&mut self, pod: Session) {
        self.pod = Some(pod);
    }

    fn host(&mut self) -> io::Result<&mut Route> {
        self.host
            .as_mut()
            .ok_or_else(|| io::Error::other("no netlink socket in the host namespace"))
    }

    fn pod(&mut self) -> io::Result<&mut Session> {
        self.pod
            .as_mut()
            .ok_or_else(|| io::Error::other("no session in the pod's namespace"))
    }

    fn nl(&mut self, ns: Ns) -> io::Result<&mut Route> {
        match ns {
            Ns::Host => self.host(),
            Ns::Pod => Ok(self.pod()?.route()),
        }
    }

    fn nft(&mut self) -> io::Result<&Nft> {
        if self.nft.is_none() {
            let fd = self.pod()?.run(plumb_nft::open_socket)?;
            self.nft = Some(Nft::from_fd(fd)?);
        }
        Ok(self.nft.as_ref().expect("opened above"))
    }

    fn both(&mut self) -> CniResult<(&mut Route, &mut Session)> {
        match (self.host.as_mut(), self.pod.as_mut()) {
            (Some(h), Some(p)) => Ok((h, p)),
            _ => Err(os("cannot reach the host and the pod")(io::Error::other(
                "a netlink socket in the host and a session in the pod are both needed",
            ))),
        }
    }
}

impl VxlanHost for Real {
    fn link(&mut self, ns: Ns, name: &str) -> io::Result<Option<Link>> {
        link::by_name(self.nl(ns)?, name)
    }
    fn link_by_index(&mut self, ns: Ns, index: u32) -> io::Result<Option<Link>> {
        link::by_index(self.nl(ns)?, index)
    }
    fn links(&mut self, ns: Ns) -> io::Result<Vec<Link>> {
        link::list(self.nl(ns)?)
    }
    fn routes(&mut self, ns: Ns, v6: bool) -> io::Result<Vec<RouteEntry>> {
        routes(self.nl(ns)?, v6)
    }
    fn host_addresses(&mut self) -> io::Result<Vec<IpAddr>> {
        Ok(addresses(self.host()?, 0)?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect())
    }
    fn read_sysctl(&mut self, ns: Ns, key: &str) -> io::Result<String> {
        match ns {
            Ns::Host => sysctl::read(key),
            Ns::Pod => self.pod()?.read_sysctl(key),
        }
    }
    fn write_sysctl(&mut self, ns: Ns, key: &str, value: &str) -> io::Result<()> {
        match ns {
            Ns::Host => sysctl::write(key, value),
            Ns::Pod => self.pod()?.write_sysctl(key, value),
        }
    }
    fn create_bridge(&mut self, name: &str) -> io::Result<()> {
        link::create_bridge(self.host()?, name, None, false)
    }
    fn set_mtu(&mut self, l: &Link, mtu: u32) -> io::Result<()> {
        link::set_mtu(self.host()?, l, mtu)
    }
    fn set_up(&mut self, l: &Link) -> io::Result<()> {
        link::set_up(self.host()?, l, true)
    }
    fn set_controller(&mut self, port: &Link, bridge: &Link) -> io::Result<()> {
        link::set_controller(self.host()?, port, bridge)
    }
    fn delete_link(&mut self, index: u32, name: &str) -> io::Result<()> {
        link::delete(self.host()?, index, name)
    }
    fn delete_link_by_name(&mut self, name: &str) -> io::Result<()> {
        link::delete_by_name(self.host()?, name)
    }
    fn vxlan(&mut self, name: &str) -> io::Result<Option<(Link, Option<VxlanSettings>)>> {
        vxlan::lookup(self.host()?, name)
    }
    fn create_vxlan(&mut self, name: &str, s: &VxlanSettings, mtu: u32) -> io::Result<()> {
        vxlan::create(self.host()?, name, s, Some(mtu))
    }
    fn flood_list(&mut self, vtep: u32) -> io::Result<Vec<IpAddr>> {
        fdb::flood_list(self.host()?, vtep)
    }
    fn flood_add(&mut self, vtep: u32, peer: IpAddr) -> io::Result<()> {
        fdb::append(self.host()?, vtep, peer)
    }
    fn flood_remove(&mut self, vtep: u32, peer: IpAddr) -> io::Result<()> {
        fdb::remove(self.host()?, vtep, peer)
    }
    fn add_masquerade_out(
        &mut self,
        f: Family,
        table: &str,
        chain: &str,
        src: (IpAddr, u8),
        out: &str,
    ) -> io::Result<()> {
        self.nft()?.add_masquerade_out(f, table, chain, src, out)
    }
    fn delete_chain(&mut self, f: Family, table: &str, chain: &str) -> io::Result<()> {
        self.nft()?.delete_chain(f, table, chain)
    }
    fn list_chains(&mut self, f: Family, table: &str) -> io::Result<Vec<String>> {
        self.nft()?.list_chains(f, table)
    }
    fn delete_table(&mut self, f: Family, table: &str) -> io::Result<()> {
        self.nft()?.delete_table(f, table)
    }
    fn chain_exists(&mut self, f: Family, table: &str, chain: &str) -> io::Result<bool> {
        self.nft()?.chain_exists(f, table, chain)
    }
    fn attach(&mut self, req: &Request, port: &PortPlan, bridge: Link) -> CniResult<AddResult> {
        let mut undo = std::mem::take(&mut self.undo);
        let made = self
            .both()
            .and_then(|(host, pod)| add_attachment(req, port, pod, host, bridge, &mut undo, None));
        self.undo = undo;
        made
    }
    fn detach(&mut self, req: &Request, port: &PortPlan) {
        let undo = std::mem::take(&mut self.undo);
        match self.host() {
            Ok(host) => rollback(req, port, host, undo),
            Err(e) if !undo.is_empty() => {
                plumb_cni::log::failed_step("rollback attachment", &e.to_string())
            }
            Err(_) => {}
        }
    }
    fn check_port(&mut self, req: &Request, port: &PortPlan) -> CniResult<()> {
        let pod = self.pod().map_err(os("cannot look into the pod"))?;
        plumb_attach::check::check(req, port, pod, None)
    }
}
