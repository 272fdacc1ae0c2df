//! plumb-vxlan: parse → validate → under the bridge lock, make or verify the node's bridge and VTEP →
//! attach the pod as plumb-bridge does (veth, IPAM, addresses, routes, spoof check) → the router role.
//! A failed ADD takes back every step, including a bridge or VTEP it created itself.

use crate::config::{DelConfig, Role, VxlanConfig};
use crate::host::{Ns, Real, VxlanHost};
use crate::{peers, router, underlay, vtep};
use plumb_attach::cleanup::{self, Cleanup};
use plumb_attach::firewall;
use plumb_attach::host::Real as AttachHost;
use plumb_attach::lock::{lock_bridge, sweep_bridge_locks};
use plumb_attach::os::{enter_netns, os};
use plumb_cni::result::Interface;
use plumb_cni::{
    code, delegate, failpoint, AddResult, CniError, CniResult, Command, Plugin, Request,
};
use plumb_net::link::format_mac;
use plumb_net::nl::Route;
use plumb_net::session::Session;
use std::net::IpAddr;

/// The plumb-vxlan plugin.
#[derive(Debug, Default)]
pub struct Vxlan;

fn masquerade_out(cfg: &VxlanConfig) -> Option<&str> {
    match &cfg.role {
        Role::Router { masquerade_out } => masquerade_out.as_deref(),
        Role::Client => None,
    }
}

impl Plugin for Vxlan {
    fn name(&self) -> &'static str {
        "plumb-vxlan"
    }

    fn about(&self) -> plumb_cni::cli::About {
        plumb_cni::cli::About::new(
            self.name(),
            "a VXLAN overlay: a shared VTEP and bridge per network, peers by multicast, a unicast list or the cluster's Nodes",
            "docs/vxlan.md; README.md section \"plumb-vxlan config\"",
        )
    }

    fn add(&self, req: &Request) -> CniResult<AddResult> {
        req.env.args.check_known(self.name(), &[])?;
        let mut cfg = VxlanConfig::from_conf(&req.conf, req.env.args.get("MAC"))?;
        let guard = crate::policy::enforce(req, &mut cfg)?;
        log::debug!("plan: {cfg:?}");
        // The request's one entry into the pod's namespace; every pod-side step below uses it.
        let mut h = Real::open(Some(enter_netns(req)?))?;
        require_out_interface(&mut h, &cfg)?;
        // Before the lock: listing the Nodes may wait on the API server.
        let listed = peers::configured(&cfg, &req.env.path)?;
        crate::policy::listed_peers(&guard, &cfg, listed.as_deref())?;
        let _lock = lock_bridge(&cfg.bridge)?;
        add_with(&mut h, req, &cfg, listed.as_deref())
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        let cfg = DelConfig::from_conf(&req.conf);
        let mut sweep = Cleanup::new(self.name());
        let _lock = match &cfg.bridge {
            Some(b) => lock_bridge(b)
                .map_err(|e| sweep.fail("bridge lock", e))
                .ok(),
            None => None,
        };
        let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
        // The router chain is ours by name; it is removed while the pod's netns exists (and is not
        // the host's). The pod interface is never deleted by name: it goes with its host veth.
        if let Some(ns) = cleanup::pod_netns(req, &mut sweep).filter(|_| cfg.router) {
            sweep.run("router chain", || {
                // The DEL's one entry into the pod: only a router has something there.
                let pod = Session::enter(ns).map_err(os("cannot enter the router pod's netns"))?;
                router::remove(
                    &mut Real::pod_only(pod),
                    &router::chain(&req.conf.name, cid, ifname),
                )
                .map_err(os("cannot remove the router's masquerade chain"))
            });
        }
        match Route::open() {
            Ok(mut host) => {
                cleanup::del_port(&mut sweep, &mut AttachHost::host(&mut host), req, false)
            }
            Err(e) => {
                sweep.fail("netlink", os("cannot open a netlink socket")(e));
                cleanup::del_port(&mut sweep, &mut AttachHost::without_netlink(), req, false);
            }
        }
        let ipam = cfg.ipam_type.as_deref();
        cleanup::del_ipam(&mut sweep, &mut AttachHost::without_netlink(), req, ipam);
        sweep.finish()
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let mut cfg = VxlanConfig::from_conf(&req.conf, None)?;
        // An attachment made before the policy changed is reported as a violation.
        crate::policy::enforce(req, &mut cfg)?;
        crate::check::check(req, &cfg)
    }

    fn status(&self, req: &Request) -> CniResult<()> {
        let cfg = VxlanConfig::from_conf(&req.conf, None)?;
        let dev = underlay::find(&mut Real::open(None)?, &cfg)?
            .map_err(|m| CniError::new(code::NOT_AVAILABLE, m.message()))?;
        if !dev.up || !dev.lower_up {
            return Err(CniError::new(
                code::NOT_AVAILABLE,
                format!(
                    "underlay device {} is {}; VXLAN traffic cannot leave this node until it is up",
                    dev.name,
                    if dev.up { "without carrier" } else { "down" }
                ),
            ));
        }
        match &cfg.ipam_type {
            Some(ipam) => delegate::run(ipam, Command::Status, &req.env.path, &req.stdin, &[]),
            None => Ok(()),
        }
    }

    fn gc(&self, req: &Request) -> CniResult<()> {
        let cfg = VxlanConfig::from_conf(&req.conf, None)?;
        sweep_bridge_locks(self.name());
        firewall::gc_invalid(&req.conf).map_err(os("cannot collect stale nftables chains"))?;
        match &cfg.ipam_type {
            Some(ipam) => delegate::run(ipam, Command::Gc, &req.env.path, &req.stdin, &[]),
            None => Ok(()),
        }
    }
}

/// Every route of the result really goes out of the pod's overlay interface. The kernel refuses a
/// second route to a prefix the pod already has (typically the primary network's default route), and
/// such a route must fail the ADD rather than be silently missing.
fn verify_routes(h: &mut impl VxlanHost, ifname: &str, r: &AddResult) -> CniResult<()> {
    if r.routes.is_empty() {
        return Ok(());
    }
    let (index, table, links) = (|| -> std::io::Result<_> {
        let index = h.link(Ns::Pod, ifname)?.map(|l| l.index);
        let mut t = h.routes(Ns::Pod, false)?;
        t.extend(h.routes(Ns::Pod, true)?);
        Ok((index, t, h.links(Ns::Pod)?))
    })()
    .map_err(os("cannot read the pod's routes"))?;
    let name_of = |i: u32| {
        links
            .iter()
            .find(|l| l.index == i)
            .map_or_else(|| format!("interface index {i}"), |l| l.name.clone())
    };
    for rt in &r.routes {
        let dst = rt.dst.network();
        let same = |e: &&plumb_net::addr::RouteEntry| e.dst == dst.addr && e.prefix == dst.prefix;
        if table
            .iter()
            .filter(same)
            .any(|e| e.oif == index && index.is_some())
        {
            continue;
        }
        let other = table.iter().find(same).and_then(|e| e.oif);
        let default = dst.prefix == 0;
        return Err(CniError::config(format!(
            "route {}/{} from the IPAM config cannot go through {ifname}: the pod already has a route to it{}; {}",
            dst.addr,
            dst.prefix,
            other.map(|i| format!(" via {}", name_of(i))).unwrap_or_default(),
            if default {
                "to send all traffic through the router, use the two halves (0.0.0.0/1 and 128.0.0.0/1, or ::/1 and 8000::/1), which win over the primary default route without replacing it"
            } else {
                "remove the route from the IPAM config or use a more specific prefix"
            }
        )));
    }
    Ok(())
}

/// The router's `masquerade.outInterface` must be an interface of the pod (checked before the node
/// is touched).
pub(crate) fn require_out_interface(h: &mut impl VxlanHost, cfg: &VxlanConfig) -> CniResult<()> {
    let Some(out) = masquerade_out(cfg) else {
        return Ok(());
    };
    if router::has_interface(h, out).map_err(os("cannot look into the pod netns"))? {
        return Ok(());
    }
    Err(CniError::config(format!(
        "field \"masquerade.outInterface\": the pod has no interface {out}; name the interface the router pod sends traffic out of, or set \"masquerade\": false"
    )))
}

/// ADD under the bridge lock, over any [`VxlanHost`] (the unit tests drive it with a fake): the
/// underlay and MTU, the bridge and VTEP with their flood list, the attachment, its routes and the
/// router role. A failure takes back, newest first, the router setup, the attachment and whatever
/// of the bridge and VTEP this call created. `listed` is the configured or listed peers.
pub fn add_with(
    h: &mut impl VxlanHost,
    req: &Request,
    cfg: &VxlanConfig,
    listed: Option<&[IpAddr]>,
) -> CniResult<AddResult> {
    let underlay = underlay::require(h, cfg)?;
    let own = underlay::own_addresses(h)?;
    if let Some(l) = cfg.local.filter(|l| !own.contains(l)) {
        return Err(CniError::config(format!(
            "field \"local\": {l} is not an address of this node; remove \"local\" or give an address the node has"
        )));
    }
    let mtu = underlay::overlay_mtu(cfg, &underlay)?;
    let port = cfg.port_plan(underlay::veth_mtu(h, mtu)?);
    let want = listed.and_then(|p| vtep::wanted_peers(cfg, p, &own));
    let shared = vtep::ensure(h, cfg, &underlay, mtu, want.as_deref())?;
    failpoint::check("vtep").inspect_err(|_| vtep::remove_created(h, &shared))?;
    let mut changed = router::Changed::default();
    let chain = router::chain(&req.conf.name, &req.env.container_id, &req.env.ifname);
    let attached = h.attach(req, &port, shared.bridge.clone()).and_then(|r| {
        verify_routes(h, &req.env.ifname, &r)?;
        if let Role::Router { masquerade_out } = &cfg.role {
            router::install(h, &chain, &r.ips, masquerade_out.as_deref(), &mut changed)
                .map_err(os("cannot set up the router role in the pod"))?;
            failpoint::check("router")?;
        }
        Ok(r)
    });
    let mut result = match attached {
        Ok(r) => r,
        Err(e) => {
            if matches!(cfg.role, Role::Router { .. }) {
                if let Err(u) = router::undo(h, &chain, changed) {
                    eprintln!("plumb-vxlan: rollback of the router setup failed: {u}");
                    plumb_cni::log::failed_step("rollback router", &u.to_string());
                }
            }
            h.detach(req, &port);
            vtep::remove_created(h, &shared);
            return Err(e);
        }
    };
    result.interfaces.push(Interface {
        name: shared.vtep.name.clone(),
        mac: shared.vtep.mac.map(|m| format_mac(&m)),
        mtu: Some(shared.vtep.mtu),
        ..Default::default()
    });
    Ok(result)
}
