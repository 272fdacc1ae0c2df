//! plumb-bridge: parse → validate → plan → apply with an undo stack → result. A failed ADD undoes
//! every step it made (veth, IP reservation, gateway interface, nftables chains) before answering.

use crate::cleanup::{self, Cleanup};
use crate::config::{BridgeConfig, DelConfig};
use crate::{firewall, gateway, naming, ports, results};
use plumb_cni::result::{Interface, IpConfig};
use plumb_cni::{
    code, delegate, failpoint, AddResult, CniError, CniResult, Command, Plugin, Request,
};
use plumb_net::addr::{add_address, add_route_global, RouteSpec};
use plumb_net::link::{self, format_mac, Link, VethSpec};
use plumb_net::netns::{Netns, OpenError};
use plumb_net::nl::Route;
use plumb_net::sysctl;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

/// The plumb-bridge plugin.
#[derive(Debug, Default)]
pub struct Bridge;

/// How long ADD and DEL wait for the per-bridge lock ([`lock_bridge`]).
pub(crate) const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// Turns a netlink or OS error into a CNI error (I/O failure, code 5) with what was being done.
pub fn os(what: &str) -> impl FnOnce(io::Error) -> CniError + '_ {
    move |e| CniError::new(code::IO_FAILURE, what.to_string()).caused_by(e)
}

/// Takes the per-bridge lock every plugin attaching to bridge `name` shares (plumb-bridge, plumb-vxlan),
/// so the create-or-verify of the bridge and its shared ports never races. On release the lock file is
/// removed when no bridge of that name exists (a refused ADD, the DEL after the bridge went), so lock
/// files do not pile up: one netlink lookup, made while the lock is still held.
pub fn lock_bridge(name: &str) -> CniResult<plumb_cni::lock::LockGuard> {
    let bridge = name.to_string();
    let still_there = move || {
        Route::open()
            .map(|mut nl| is_bridge(&mut nl, &bridge))
            .unwrap_or(true)
    };
    Ok(
        plumb_cni::lock::lock_resource(&format!("bridge-{name}"), LOCK_TIMEOUT)?
            .remove_on_release_unless(still_there),
    )
}

/// Whether a bridge `name` exists; when the lookup fails, true (removing a lock file is only tidying).
fn is_bridge(nl: &mut Route, name: &str) -> bool {
    link::by_name(nl, name).map_or(true, |l| {
        l.is_some_and(|l| l.kind.as_deref() == Some("bridge"))
    })
}

/// For GC: removes the lock file of every bridge that went outside plumb (an operator deleted it, its
/// namespace went), which no DEL would take any more. Held files are skipped without waiting, so GC
/// never waits on an ADD or DEL. Only tidying: a failure is logged, and GC goes on.
pub fn sweep_bridge_locks(plugin: &str) {
    let mut nl = match Route::open() {
        Ok(nl) => nl,
        Err(e) => {
            eprintln!("{plugin}: GC: cannot open a netlink socket to sweep bridge lock files: {e}");
            return;
        }
    };
    match plumb_cni::lock::sweep_resources("bridge-", |name| is_bridge(&mut nl, name)) {
        Ok(0) => {}
        Ok(n) => eprintln!("{plugin}: GC: removed {n} lock file(s) of bridges that are gone"),
        Err(e) => eprintln!("{plugin}: GC: cannot sweep the bridge lock files: {e}"),
    }
}

/// Opens CNI_NETNS for ADD and CHECK. A path that is no network namespace (missing, an empty file
/// left by `umount`, a directory, another kind of file) is code 3, the container does not exist; the
/// host's own network namespace is code 4, an invalid CNI_NETNS (see docs/bridge.md).
pub fn open_netns(req: &Request) -> CniResult<Netns> {
    let path = req.env.netns.clone().unwrap_or_default();
    let ns = Netns::open(&path).map_err(|e| match e {
        OpenError::Gone { why, .. } => CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("CNI_NETNS {path:?} is not a network namespace ({why}): the container is gone or the path is wrong"),
        ),
        OpenError::Io(e) => CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("CNI_NETNS {path} cannot be opened"),
        )
        .caused_by(e),
    })?;
    if ns.is_host().map_err(os("cannot examine CNI_NETNS"))? {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_NETNS {path} is the host's own network namespace; give the container's network namespace (plumbing a container interface into the host namespace is never meant)"),
        ));
    }
    Ok(ns)
}

/// Removes, best effort, everything a plumb-bridge attachment made host-side: the host veth by its
/// derived name (its peer, the container interface, goes with it: nothing in the container is ever
/// deleted by name), the nftables chains, an unused VLAN gateway interface, then the IPAM reservation.
fn del_attachment(req: &Request, cfg: &DelConfig, sweep: &mut Cleanup) {
    let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
    // No pod-side step: the pod end is the peer of the host veth. The namespace is still classified,
    // so an unreadable one is reported, while a gone one or the host's own is simply skipped.
    let _ = cleanup::pod_netns(req, sweep);
    let mut host = match Route::open() {
        Ok(h) => Some(h),
        Err(e) => {
            sweep.fail("netlink", os("cannot open a netlink socket")(e));
            None
        }
    };
    if let Some(host) = host.as_mut() {
        sweep.run("host veth", || delete_host_veth(host, cid, ifname));
    }
    sweep.run("spoofcheck", || {
        firewall::del_spoofcheck(&req.conf.name, cid, ifname)
            .map_err(os("cannot remove the MAC spoof check"))
    });
    sweep.run("masquerade", || {
        firewall::del_masquerade(&req.conf.name, cid, ifname)
            .map_err(os("cannot remove the masquerade rules"))
    });
    if let (Some(host), Some(bridge), Some(vid)) = (host.as_mut(), &cfg.bridge, cfg.vlan_gateway) {
        sweep.run("vlan gateway", || {
            gateway::remove_vlan_gateway_if_unused(host, bridge, vid)
        });
    }
    if let (Some(host), Some(bridge), Some((up, vids))) =
        (host.as_mut(), &cfg.bridge, &cfg.uplink_vlans)
    {
        sweep.run("uplink vlans", || {
            crate::uplink::release_vlans(host, bridge, up, vids)
        });
    }
    if let Some(ipam) = &cfg.ipam_type {
        sweep.run("ipam", || {
            delegate::run(ipam, Command::Del, &req.env.path, &req.stdin, &[])
        });
    }
}

/// Deletes the attachment's host veth (derived name, and a veth: anything else by that name is not
/// ours); its peer in the container goes with it.
pub fn delete_host_veth(host: &mut Route, cid: &str, ifname: &str) -> CniResult<()> {
    let name = naming::host_veth(cid, ifname);
    match link::by_name(host, &name).map_err(os("cannot look up the host veth"))? {
        Some(l) if l.kind.as_deref() == Some("veth") => {
            link::delete(host, l.index, &name).map_err(os("cannot delete the host veth"))
        }
        Some(l) => Err(CniError::new(
            code::IO_FAILURE,
            format!(
                "{name} is a {} interface, not this attachment's veth; it was left alone",
                l.kind.as_deref().unwrap_or("plain")
            ),
        )),
        None => Ok(()),
    }
}

/// One step to take back if ADD fails later.
#[derive(Debug)]
pub enum Undo {
    /// The bridge, created by this ADD (removed when no other port joined it meanwhile).
    Bridge(Link),
    /// The host veth (its peer goes with it).
    HostVeth(String),
    /// The IPAM reservation (IPAM DEL).
    Ipam,
    /// The spoof-check chain.
    Spoofcheck,
    /// The masquerade chains.
    Masquerade,
    /// The VLAN gateway interface, if no other port uses its VLAN.
    VlanGateway,
    /// The uplink's VLAN interface, created by this ADD (per-VLAN uplink layout).
    UplinkVlanIf(Link),
    /// The uplink (one-bridge layout) or its VLAN interface (per-VLAN layout), made a port of the
    /// bridge by this ADD.
    UplinkJoined(Link),
    /// VLAN ranges this ADD added to the uplink port.
    UplinkVlans(Link, Vec<(u16, u16)>),
    /// A gateway address this ADD added to the bridge (or VLAN gateway interface) at `index`; only
    /// this exact address is removed, never one that was there before.
    GatewayAddress {
        /// The interface the address was added to.
        index: u32,
        /// The address.
        ip: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
}

impl Undo {
    /// The step's name in log lines.
    pub fn label(&self) -> &'static str {
        match self {
            Undo::Bridge(_) => "bridge",
            Undo::HostVeth(_) => "host veth",
            Undo::Ipam => "ipam",
            Undo::Spoofcheck => "spoofcheck",
            Undo::Masquerade => "masquerade",
            Undo::VlanGateway => "vlan gateway",
            Undo::UplinkVlanIf(_) => "uplink vlan interface",
            Undo::UplinkJoined(_) => "uplink port",
            Undo::UplinkVlans(..) => "uplink vlans",
            Undo::GatewayAddress { .. } => "gateway address",
        }
    }
}

impl Plugin for Bridge {
    fn name(&self) -> &'static str {
        "plumb-bridge"
    }

    fn about(&self) -> plumb_cni::cli::About {
        plumb_cni::cli::About {
            more: "admin command (without CNI_COMMAND):\n  plumb-bridge --gc-uplinks [--remove]   list (or remove) the uplink bridges and VLAN interfaces\n                                         plumb made that no attachment uses (docs/bridge.md \"Uplinks\")",
            ..plumb_cni::cli::About::new(
                self.name(),
                "a Linux bridge with VLAN access/trunk ports and a MAC spoof check, compatible with the reference bridge config",
                "docs/bridge.md; README.md section \"plumb-bridge config\"",
            )
        }
    }

    fn add(&self, req: &Request) -> CniResult<AddResult> {
        req.env.args.check_known(self.name(), &[])?;
        let mut cfg = BridgeConfig::from_conf(&req.conf, req.env.args.get("MAC"))?;
        crate::policy::enforce(req, &mut cfg)?;
        log::debug!("plan: {cfg:?}");
        let ns = open_netns(req)?;
        let _lock = lock_bridge(&cfg.bridge)?;
        let mut host = Route::open().map_err(os("cannot open a netlink socket"))?;
        let mut undo = Vec::new();
        // The uplink port's lock, held through a rollback too.
        let mut uplink_lock = None;
        match add_steps(req, &cfg, &ns, &mut host, &mut undo, &mut uplink_lock) {
            Ok(r) => Ok(r),
            Err(e) => {
                rollback(req, &cfg, &mut host, undo);
                Err(e)
            }
        }
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        let cfg = DelConfig::from_conf(&req.conf);
        let mut sweep = Cleanup::new(self.name());
        // A bridge name ADD refuses names no bridge: nothing shared to serialise with.
        let _lock = match &cfg.bridge {
            Some(b) => lock_bridge(b)
                .map_err(|e| sweep.fail("bridge lock", e))
                .ok(),
            None => None,
        };
        del_attachment(req, &cfg, &mut sweep);
        sweep.finish()
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let mut cfg = BridgeConfig::from_conf(&req.conf, None)?;
        // An attachment made before the policy changed is reported as a violation.
        crate::policy::enforce(req, &mut cfg)?;
        crate::check::check(req, &cfg)
    }

    fn status(&self, req: &Request) -> CniResult<()> {
        let cfg = BridgeConfig::from_conf(&req.conf, None)?;
        match &cfg.ipam_type {
            Some(ipam) => delegate::run(ipam, Command::Status, &req.env.path, &req.stdin, &[]),
            None => Ok(()),
        }
    }

    fn gc(&self, req: &Request) -> CniResult<()> {
        let cfg = BridgeConfig::from_conf(&req.conf, None)?;
        sweep_bridge_locks(self.name());
        firewall::gc_invalid(&req.conf).map_err(os("cannot collect stale nftables chains"))?;
        match &cfg.ipam_type {
            Some(ipam) => delegate::run(ipam, Command::Gc, &req.env.path, &req.stdin, &[]),
            None => Ok(()),
        }
    }
}

fn add_steps(
    req: &Request,
    cfg: &BridgeConfig,
    ns: &Netns,
    host: &mut Route,
    undo: &mut Vec<Undo>,
    uplink_lock: &mut Option<plumb_cni::lock::LockGuard>,
) -> CniResult<AddResult> {
    let prepared = crate::uplink::preflight(host, cfg)?;
    let mut cfg = cfg.clone();
    if let Some(p) = &prepared {
        // The bridge and both veth ends take the uplink's MTU unless the config says less.
        cfg.mtu = cfg.mtu.or(Some(p.uplink.mtu));
    }
    let (bridge, created) = ports::ensure_bridge(host, &cfg)?;
    if created {
        undo.push(Undo::Bridge(bridge.clone()));
    }
    if let Some(p) = prepared {
        let done = crate::uplink::ensure(host, &cfg, &p, &bridge, created, undo);
        *uplink_lock = Some(p.lock);
        done?;
    }
    failpoint::check("bridge")?;
    add_attachment(req, &cfg, ns, host, bridge, undo)
}

/// Everything ADD does once the bridge is there: the veth pair as a bridge port, IPAM, the container
/// side, the gateway, masquerade and spoof check. Each step it makes is pushed on `undo`.
pub fn add_attachment(
    req: &Request,
    cfg: &BridgeConfig,
    ns: &Netns,
    host: &mut Route,
    bridge: Link,
    undo: &mut Vec<Undo>,
) -> CniResult<AddResult> {
    let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
    let host_name = naming::host_veth(cid, ifname);
    if link::by_name(host, &host_name)
        .map_err(os("cannot look up the host veth"))?
        .is_some()
    {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            format!("host interface {host_name} of container {cid} interface {ifname} already exists; DEL this attachment before adding it again"),
        ));
    }
    let taken = {
        let name = ifname.clone();
        ns.run(move || Ok(link::by_name(&mut Route::open()?, &name)?.is_some()))
            .map_err(os("cannot look into the container netns"))?
    };
    if taken {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            format!("the container already has an interface named {ifname}"),
        ));
    }
    let spec = VethSpec {
        host_name: &host_name,
        peer_name: ifname,
        peer_netns_fd: ns.fd(),
        mtu: cfg.mtu,
        peer_mac: cfg.mac,
        host_mac: None,
    };
    link::create_veth(host, &spec).map_err(os("cannot create the veth pair"))?;
    undo.push(Undo::HostVeth(host_name.clone()));
    failpoint::check("veth")?;
    let host_veth = link::by_name(host, &host_name)
        .map_err(os("cannot look up the host veth"))?
        .ok_or_else(|| {
            CniError::new(
                code::IO_FAILURE,
                format!("host veth {host_name} vanished after creation"),
            )
        })?;
    // As the reference does: the host veth takes no router advertisements (the runtime owns its routes).
    let _ = sysctl::write(&format!("net/ipv6/conf/{host_name}/accept_ra"), "0");
    ports::attach(host, cfg, &bridge, &host_veth)?;
    failpoint::check("port")?;

    let mut ipam_result = match &cfg.ipam_type {
        Some(ipam) => {
            let r = delegate::add(ipam, &req.env.path, &req.stdin, req.conf.version, &[])?;
            undo.push(Undo::Ipam);
            failpoint::check("ipam")?;
            r
        }
        None => AddResult::default(),
    };
    // Before the container is touched: the result must be what the container gets.
    if cfg.is_gateway {
        results::require_gateways(&ipam_result)?;
    }
    results::check_addresses(&ipam_result)?;
    if cfg.is_default_gateway {
        results::add_default_routes(&mut ipam_result)?;
    }
    results::check_routes(&ipam_result)?;
    let container = configure_container(ns, cfg, ifname, &ipam_result)?;
    failpoint::check("container")?;
    if cfg.is_gateway && !ipam_result.ips.is_empty() {
        gateway::ensure(host, cfg, &bridge, &ipam_result.ips, undo)?;
        failpoint::check("gateway")?;
    }
    let network = &req.conf.name;
    if cfg.ip_masq {
        undo.push(Undo::Masquerade);
        for ipc in &ipam_result.ips {
            firewall::add_masquerade(
                network,
                cid,
                ifname,
                ipc.address.addr,
                ipc.address.network(),
            )
            .map_err(os("cannot install the masquerade rule"))?;
        }
        failpoint::check("masquerade")?;
    }
    if cfg.macspoofchk {
        let mac = container.mac.ok_or_else(|| {
            CniError::new(
                code::IO_FAILURE,
                "the container interface has no MAC address",
            )
        })?;
        undo.push(Undo::Spoofcheck);
        firewall::add_spoofcheck(network, cid, ifname, &host_name, mac)
            .map_err(os("cannot install the MAC spoof check"))?;
        failpoint::check("spoofcheck")?;
    }
    let bridge = link::by_index(host, bridge.index)
        .map_err(os("cannot read the bridge"))?
        .unwrap_or(bridge);
    Ok(result(
        req,
        cfg,
        &bridge,
        &host_veth,
        &container,
        ipam_result,
    ))
}

/// Takes back the steps of a failed ADD, newest first; a step that fails is logged and skipped.
pub fn rollback(req: &Request, cfg: &BridgeConfig, host: &mut Route, undo: Vec<Undo>) {
    let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
    for step in undo.into_iter().rev() {
        let label = step.label();
        log::debug!("rollback step: {label}");
        if let Err(e) = failpoint::check(&format!("rollback-{label}")) {
            plumb_cni::log::failed_step(&format!("rollback {label}"), &e.msg);
            continue;
        }
        let outcome = match step {
            Undo::Bridge(bridge) => {
                ports::remove_created_bridge(host, &bridge).map_err(|e| e.to_string())
            }
            Undo::HostVeth(name) => link::delete_by_name(host, &name).map_err(|e| e.to_string()),
            Undo::Ipam => match &cfg.ipam_type {
                Some(ipam) => delegate::run(ipam, Command::Del, &req.env.path, &req.stdin, &[])
                    .map_err(|e| e.to_string()),
                None => Ok(()),
            },
            Undo::Spoofcheck => {
                firewall::del_spoofcheck(&req.conf.name, cid, ifname).map_err(|e| e.to_string())
            }
            Undo::Masquerade => {
                firewall::del_masquerade(&req.conf.name, cid, ifname).map_err(|e| e.to_string())
            }
            Undo::VlanGateway => {
                gateway::remove_vlan_gateway_if_unused(host, &cfg.bridge, cfg.vlan)
                    .map_err(|e| e.to_string())
            }
            Undo::UplinkVlanIf(_) | Undo::UplinkJoined(_) | Undo::UplinkVlans(..) => {
                crate::uplink::undo(host, &step).map_err(|e| e.to_string())
            }
            Undo::GatewayAddress { index, ip, prefix } => {
                plumb_net::addr::del_address(host, index, ip, prefix).map_err(|e| e.to_string())
            }
        };
        if let Err(e) = outcome {
            eprintln!("plumb-bridge: rollback step failed: {e}");
            plumb_cni::log::failed_step(&format!("rollback {label}"), &e);
        }
    }
}

/// What ADD learned about the container interface.
#[derive(Debug, Clone)]
pub struct ContainerSide {
    /// The interface.
    pub mac: Option<[u8; 6]>,
    /// Its MTU.
    pub mtu: u32,
}

fn configure_container(
    ns: &Netns,
    cfg: &BridgeConfig,
    ifname: &str,
    r: &AddResult,
) -> CniResult<ContainerSide> {
    let ips: Vec<(IpAddr, u8, Option<IpAddr>)> = r
        .ips
        .iter()
        .map(|i| (i.address.addr, i.address.prefix, i.gateway))
        .collect();
    let routes: Vec<(IpAddr, u8, Option<IpAddr>, Option<u32>)> = r
        .routes
        .iter()
        .map(|rt| (rt.dst.addr, rt.dst.prefix, rt.gw, rt.mtu))
        .collect();
    let (up, dad) = (!cfg.disable_container_interface, cfg.enable_dad);
    let layer3 = cfg.ipam_type.is_some();
    let name = ifname.to_string();
    ns.run(move || {
        let mut c = Route::open()?;
        let l = link::by_name(&mut c, &name)?
            .ok_or_else(|| io::Error::other(format!("{name} missing in the container")))?;
        if layer3 {
            // The reference's sysctls on an interface that gets addresses: DAD as `enabledad` says
            // (off by default, so addresses are usable at once) and gratuitous ARP on link changes.
            // Best effort, as there: a kernel without IPv6 has no accept_dad.
            if dad {
                let _ = sysctl::write(&format!("net/ipv6/conf/{name}/enhanced_dad"), "1");
            }
            let _ = sysctl::write(
                &format!("net/ipv6/conf/{name}/accept_dad"),
                if dad { "1" } else { "0" },
            );
            let _ = sysctl::write(&format!("net/ipv4/conf/{name}/arp_notify"), "1");
        }
        if ips.iter().any(|(ip, _, _)| ip.is_ipv6()) {
            enable_ipv6(&name)?;
        }
        for (ip, prefix, _) in &ips {
            add_address(&mut c, l.index, *ip, *prefix, false)?;
        }
        if up {
            link::set_up(&mut c, &l, true)?;
            for (dst, prefix, gw, mtu) in &routes {
                // A route without a next hop goes via the first gateway of its family, if any.
                let gw = gw.or_else(|| {
                    ips.iter()
                        .filter(|i| i.0.is_ipv4() == dst.is_ipv4())
                        .find_map(|i| i.2)
                });
                // Scope universe even without a next hop, as the reference installs container routes.
                add_route_global(
                    &mut c,
                    &RouteSpec {
                        dst: *dst,
                        prefix: *prefix,
                        gw,
                        oif: l.index,
                        mtu: *mtu,
                        priority: None,
                    },
                )?;
            }
        }
        let l = link::by_index(&mut c, l.index)?.unwrap_or(l);
        Ok(ContainerSide {
            mac: l.mac,
            mtu: l.mtu,
        })
    })
    .map_err(os("cannot configure the container interface"))
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

fn result(
    req: &Request,
    cfg: &BridgeConfig,
    bridge: &Link,
    host: &Link,
    c: &ContainerSide,
    ipam: AddResult,
) -> AddResult {
    let iface = |name: &str, mac: Option<[u8; 6]>, mtu: u32, sandbox: Option<String>| Interface {
        name: name.to_string(),
        mac: mac.map(|m| format_mac(&m)),
        mtu: Some(mtu),
        sandbox,
        ..Default::default()
    };
    let dns = cfg.dns.clone().unwrap_or(ipam.dns);
    AddResult {
        interfaces: vec![
            iface(&bridge.name, bridge.mac, bridge.mtu, None),
            iface(&host.name, host.mac, host.mtu, None),
            iface(&req.env.ifname, c.mac, c.mtu, req.env.netns.clone()),
        ],
        ips: ipam
            .ips
            .into_iter()
            .map(|i| IpConfig {
                interface: Some(2),
                ..i
            })
            .collect(),
        routes: ipam.routes,
        dns,
    }
}
