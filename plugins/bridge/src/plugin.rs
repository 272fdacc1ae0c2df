//! plumb-bridge: parse → validate → plan → apply with an undo stack → result. A failed ADD undoes
//! every step it made (veth, IP reservation, gateway interface, nftables chains) before answering.

use crate::config::{BridgeConfig, DelConfig};
use crate::{gateway, ports};
use plumb_attach::attach::{add_attachment, rollback, Undo};
use plumb_attach::cleanup::{self, Cleanup};
use plumb_attach::firewall;
use plumb_attach::host::Real;
use plumb_attach::lock::{lock_bridge, sweep_bridge_locks};
use plumb_attach::os::{enter_netns, os};
use plumb_cni::result::IpConfig;
use plumb_cni::{delegate, failpoint, AddResult, CniResult, Command, Plugin, Request};
use plumb_net::link::Link;
use plumb_net::nl::Route;
use plumb_net::session::Session;

/// The plumb-bridge plugin.
#[derive(Debug, Default)]
pub struct Bridge;

/// Removes, best effort, everything a plumb-bridge attachment made host-side: the host veth by its
/// derived name (its peer, the container interface, goes with it: nothing in the container is ever
/// deleted by name), the nftables chains, an unused VLAN gateway interface, then the IPAM reservation.
fn del_attachment(req: &Request, cfg: &DelConfig, sweep: &mut Cleanup) {
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
    match host.as_mut() {
        Some(host) => cleanup::del_port(sweep, &mut Real::host(host), req, true),
        None => cleanup::del_port(sweep, &mut Real::without_netlink(), req, true),
    }
    if let (Some(host), Some(bridge), Some(vid)) = (host.as_mut(), &cfg.bridge, cfg.vlan_gateway) {
        // The uplink carries the pods' VLANs: it does not keep the gateway.
        let ignore: Vec<&str> = cfg.uplink.iter().map(String::as_str).collect();
        sweep.run("vlan gateway", || {
            gateway::remove_vlan_gateway_if_unused(host, bridge, vid, &ignore)
        });
    }
    if let (Some(host), Some(bridge), Some((up, vids))) =
        (host.as_mut(), &cfg.bridge, &cfg.uplink_vlans)
    {
        sweep.run("uplink vlans", || {
            crate::uplink::release_vlans(host, bridge, up, vids)
        });
    }
    let ipam = cfg.ipam_type.as_deref();
    cleanup::del_ipam(sweep, &mut Real::without_netlink(), req, ipam);
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
        // The request's one entry into the pod's namespace, before the lock as the open was.
        let mut pod = enter_netns(req)?;
        let _lock = lock_bridge(&cfg.bridge)?;
        let mut host = Route::open().map_err(os("cannot open a netlink socket"))?;
        let mut undo = Vec::new();
        // The uplink port's lock, held through a rollback too.
        let mut uplink_lock = None;
        match add_steps(req, &cfg, &mut pod, &mut host, &mut undo, &mut uplink_lock) {
            Ok(r) => Ok(r),
            Err(e) => {
                rollback(req, &cfg.port_plan(), &mut host, undo);
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
        let plan = cfg.port_plan();
        // First: a gone or host CNI_NETNS is answered as such, whatever prevResult says.
        let mut pod = enter_netns(req)?;
        plumb_attach::check::check(
            req,
            &plan,
            &mut pod,
            Some(&|host, bridge| crate::uplink::check(host, &cfg, bridge)),
        )
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
    pod: &mut Session,
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
        undo.push(Undo::Own(Box::new(ports::CreatedBridge(bridge.clone()))));
    }
    if let Some(p) = prepared {
        let done = crate::uplink::ensure(host, &cfg, &p.uplink, &bridge, created, undo);
        *uplink_lock = Some(p.lock);
        done?;
    }
    failpoint::check("bridge")?;
    let port = plumb_attach::naming::host_veth(&req.env.container_id, &req.env.ifname);
    let gateway = |host: &mut Route, bridge: &Link, ips: &[IpConfig], undo: &mut Vec<Undo>| {
        gateway::ensure(host, &cfg, bridge, ips, &port, undo)
    };
    add_attachment(
        req,
        &cfg.port_plan(),
        pod,
        host,
        bridge,
        undo,
        Some(&gateway),
    )
}
