//! The attachment itself, once the plugin has its bridge: the veth pair as a bridge port, IPAM, the
//! pod side, the plugin's gateway step, masquerade and spoof check, each step pushed on an undo stack
//! that [`rollback`] takes back newest first; and the host veth's removal for DEL.

use crate::host::{Host, PodSysctls, Real, VethPair};
use crate::os::os;
use crate::plan::PortPlan;
pub use crate::steps::{GatewayStep, OwnStep, Undo};
use crate::{naming, ports, results};
use plumb_cni::result::{Interface, IpConfig};
use plumb_cni::{code, failpoint, AddResult, CniError, CniResult, Request};
use plumb_net::addr::RouteSpec;
use plumb_net::link::{format_mac, Link};
use plumb_net::nl::Route;
use plumb_net::session::Session;
use std::io;

/// Everything ADD does once the bridge is there: the veth pair as a bridge port, IPAM, the container
/// side, the gateway (the plugin's `gateway` step, with `isGateway`), masquerade and spoof check.
/// Each step it makes is pushed on `undo`. `pod` is the request's session in CNI_NETNS.
pub fn add_attachment(
    req: &Request,
    cfg: &PortPlan,
    pod: &mut Session,
    host: &mut Route,
    bridge: Link,
    undo: &mut Vec<Undo>,
    gateway: Option<GatewayStep>,
) -> CniResult<AddResult> {
    add_attachment_with(
        &mut Real::with_pod(host, pod),
        req,
        cfg,
        bridge,
        undo,
        gateway,
    )
}

/// [`add_attachment`] over any [`Host`]: the engine itself, which the unit tests drive with a fake.
pub fn add_attachment_with(
    h: &mut impl Host,
    req: &Request,
    cfg: &PortPlan,
    bridge: Link,
    undo: &mut Vec<Undo>,
    gateway: Option<GatewayStep>,
) -> CniResult<AddResult> {
    let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
    let host_name = naming::host_veth(cid, ifname);
    if h.host_link(&host_name)
        .map_err(os("cannot look up the host veth"))?
        .is_some()
    {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            format!("host interface {host_name} of container {cid} interface {ifname} already exists; DEL this attachment before adding it again"),
        ));
    }
    if h.pod_link(ifname)
        .map_err(os("cannot look into the container netns"))?
        .is_some()
    {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            format!("the container already has an interface named {ifname}"),
        ));
    }
    let pair = VethPair {
        host: &host_name,
        peer: ifname,
        mtu: cfg.mtu,
        peer_mac: cfg.mac,
    };
    h.create_veth(&pair)
        .map_err(os("cannot create the veth pair"))?;
    undo.push(Undo::HostVeth(host_name.clone()));
    failpoint::check("veth")?;
    let host_veth = h
        .host_link(&host_name)
        .map_err(os("cannot look up the host veth"))?
        .ok_or_else(|| {
            CniError::new(
                code::IO_FAILURE,
                format!("host veth {host_name} vanished after creation"),
            )
        })?;
    // As the reference does: the host veth takes no router advertisements (the runtime owns its routes).
    let _ = h.host_sysctl(&format!("net/ipv6/conf/{host_name}/accept_ra"), "0");
    ports::attach_with(h, cfg, &bridge, &host_veth)?;
    failpoint::check("port")?;

    let mut ipam_result = match &cfg.ipam_type {
        Some(ipam) => {
            let r = h.ipam_add(ipam, req)?;
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
    if let Some(gateway) = gateway.filter(|_| cfg.is_gateway && !ipam_result.ips.is_empty()) {
        h.gateway(gateway, &bridge, &ipam_result.ips, undo)?;
        failpoint::check("gateway")?;
    }
    // Read once the port has joined and the gateway step has pinned its MAC: the result's bridge.
    let bridge = h
        .host_link_by_index(bridge.index)
        .map_err(os("cannot read the bridge"))?
        .unwrap_or(bridge);
    let container = configure_container(h, cfg, ifname, &ipam_result)?;
    failpoint::check("container")?;
    let network = &req.conf.name;
    if cfg.ip_masq {
        undo.push(Undo::Masquerade);
        for ipc in &ipam_result.ips {
            h.add_masquerade(
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
        h.add_spoofcheck(network, cid, ifname, &host_name, mac)
            .map_err(os("cannot install the MAC spoof check"))?;
        failpoint::check("spoofcheck")?;
    }
    // Last: the host end up gives both ends carrier, the first moment a frame can pass, so the spoof
    // check is in place before it. It is also the kernel's cue for the pod interface's IPv6 start
    // (with DAD off, at once: a worker holds the rtnl lock while the pod's MLD report and router
    // solicitation are flooded to every port of the bridge, several ms with 1000 ports); no rtnetlink
    // request of this ADD comes after it to wait for that (docs/design.md, "growth").
    if cfg.pod_work_ends {
        h.end_pod_work();
    }
    h.host_set_up(&host_veth)
        .map_err(os("cannot bring the host veth up"))?;
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
pub fn rollback(req: &Request, cfg: &PortPlan, host: &mut Route, undo: Vec<Undo>) {
    rollback_with(&mut Real::host(host), req, cfg, undo)
}

/// [`rollback`] over any [`Host`].
pub fn rollback_with(h: &mut impl Host, req: &Request, cfg: &PortPlan, undo: Vec<Undo>) {
    let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
    for step in undo.into_iter().rev() {
        let label = step.label();
        log::debug!("rollback step: {label}");
        if let Err(e) = failpoint::check(&format!("rollback-{label}")) {
            plumb_cni::log::failed_step(&format!("rollback {label}"), &e.msg);
            continue;
        }
        let outcome = match step {
            Undo::HostVeth(name) => h.delete_host_link_by_name(&name).map_err(|e| e.to_string()),
            Undo::Ipam => match &cfg.ipam_type {
                Some(ipam) => h.ipam_del(ipam, req).map_err(|e| e.to_string()),
                None => Ok(()),
            },
            Undo::Spoofcheck => h
                .del_spoofcheck(&req.conf.name, cid, ifname)
                .map_err(|e| e.to_string()),
            Undo::Masquerade => h
                .del_masquerade(&req.conf.name, cid, ifname)
                .map_err(|e| e.to_string()),
            Undo::GatewayAddress { index, ip, prefix } => h
                .del_host_address(index, ip, prefix)
                .map_err(|e| e.to_string()),
            Undo::Own(step) => h.undo_own(step.as_ref()),
        };
        if let Err(e) = outcome {
            eprintln!("plumb-bridge: rollback step failed: {e}");
            plumb_cni::log::failed_step(&format!("rollback {label}"), &e);
        }
    }
}

/// Deletes the attachment's host veth (derived name, and a veth: anything else by that name is not
/// ours); its peer in the container goes with it.
pub fn delete_host_veth(host: &mut Route, cid: &str, ifname: &str) -> CniResult<()> {
    delete_host_veth_with(&mut Real::host(host), cid, ifname)
}

/// [`delete_host_veth`] over any [`Host`].
pub fn delete_host_veth_with(h: &mut impl Host, cid: &str, ifname: &str) -> CniResult<()> {
    let name = naming::host_veth(cid, ifname);
    match h
        .host_link(&name)
        .map_err(os("cannot look up the host veth"))?
    {
        Some(l) if l.kind.as_deref() == Some("veth") => h
            .delete_host_link(l.index, &name)
            .map_err(os("cannot delete the host veth")),
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

/// What ADD learned about the container interface.
#[derive(Debug, Clone)]
pub struct ContainerSide {
    /// The interface.
    pub mac: Option<[u8; 6]>,
    /// Its MTU.
    pub mtu: u32,
}

fn configure_container(
    h: &mut impl Host,
    cfg: &PortPlan,
    ifname: &str,
    r: &AddResult,
) -> CniResult<ContainerSide> {
    let up = !cfg.disable_container_interface;
    let sysctls = PodSysctls {
        layer3: cfg.ipam_type.is_some(),
        dad: cfg.enable_dad,
        v6: r.ips.iter().any(|i| i.address.addr.is_ipv6()),
    };
    let l = h
        .pod_link(ifname)
        .and_then(|l| {
            l.ok_or_else(|| io::Error::other(format!("{ifname} missing in the container")))
        })
        .map_err(os("cannot configure the container interface"))?;
    if sysctls.layer3 || sysctls.v6 {
        h.pod_sysctls(&l, sysctls)
            .map_err(os("cannot configure the container interface"))?;
    }
    (|| -> io::Result<ContainerSide> {
        for ipc in &r.ips {
            h.pod_add_address(l.index, ipc.address.addr, ipc.address.prefix)?;
        }
        if up {
            h.pod_set_up(&l)?;
            for rt in &r.routes {
                let dst = rt.dst.addr;
                // A route without a next hop goes via the first gateway of its family, if any.
                let gw = rt.gw.or_else(|| {
                    r.ips
                        .iter()
                        .filter(|i| i.address.addr.is_ipv4() == dst.is_ipv4())
                        .find_map(|i| i.gateway)
                });
                // Scope universe even without a next hop, as the reference installs container routes.
                h.pod_add_route(&RouteSpec {
                    dst,
                    prefix: rt.dst.prefix,
                    gw,
                    oif: l.index,
                    mtu: rt.mtu,
                    priority: None,
                })?;
            }
        }
        // MAC and MTU are as read before: addresses and the up flag change neither.
        Ok(ContainerSide {
            mac: l.mac,
            mtu: l.mtu,
        })
    })()
    .map_err(os("cannot configure the container interface"))
}

fn result(
    req: &Request,
    cfg: &PortPlan,
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
