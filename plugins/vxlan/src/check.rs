//! CHECK: the node's bridge and VTEP (settings, port, MTU, flood list), the router role in the pod,
//! then everything plumb-bridge checks of the pod's port (veth, MAC, addresses, routes, MTU, spoof
//! check) and the IPAM plugin's CHECK.

use crate::config::{Flood, Role, VxlanConfig};
use crate::host::{Ns, Real, VxlanHost};
use crate::{router, underlay, vtep};
use plumb_attach::os::{enter_netns, os};
use plumb_cni::{code, AddResult, CniError, CniResult, Request};
use std::collections::BTreeSet;

fn mismatch(msg: String) -> CniError {
    CniError::new(code::CHECK_MISMATCH, msg)
}

/// Verifies the attachment against the config and `prevResult`: the node's side first, then the
/// pod's (entered only then).
pub fn check(req: &Request, cfg: &VxlanConfig) -> CniResult<()> {
    let prev = req
        .conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::config("CHECK needs \"prevResult\" in the configuration"))?;
    let mut h = Real::open(None)?;
    let mtu = check_node(&mut h, cfg)?;
    h.enter(enter_netns(req)?);
    check_pod(&mut h, req, cfg, prev, mtu)
}

/// The node's side: underlay, bridge and VTEP (settings, port, state, MTU) and a fixed flood list.
/// Returns the overlay MTU.
pub fn check_node(h: &mut impl VxlanHost, cfg: &VxlanConfig) -> CniResult<u32> {
    let underlay = underlay::find(h, cfg)?.map_err(|m| mismatch(m.message()))?;
    let mtu = underlay::overlay_mtu(cfg, &underlay)?;
    let bridge = h
        .link(Ns::Host, &cfg.bridge)
        .map_err(os("cannot look up the bridge"))?
        .ok_or_else(|| mismatch(format!("bridge {} does not exist", cfg.bridge)))?;
    if bridge.mtu != mtu {
        return Err(mismatch(format!(
            "bridge {} has MTU {}, the overlay needs {mtu}",
            bridge.name, bridge.mtu
        )));
    }
    let (vt, have) = h
        .vxlan(&cfg.vtep)
        .map_err(os("cannot look up the VTEP"))?
        .ok_or_else(|| mismatch(format!("VTEP {} does not exist", cfg.vtep)))?;
    let have = have.ok_or_else(|| mismatch(format!("{} is not a VXLAN device", cfg.vtep)))?;
    let want = vtep::wanted(cfg, &underlay);
    if let Some(diff) = vtep::difference(&want, &have, cfg.local.is_some(), &underlay) {
        return Err(mismatch(format!("VTEP {} has {diff}", cfg.vtep)));
    }
    if vt.controller != Some(bridge.index) {
        return Err(mismatch(format!(
            "VTEP {} is not a port of bridge {}",
            vt.name, bridge.name
        )));
    }
    if !vt.up || !bridge.up {
        return Err(mismatch(format!(
            "bridge {} or VTEP {} is down",
            bridge.name, vt.name
        )));
    }
    if vt.mtu != mtu {
        return Err(mismatch(format!(
            "VTEP {} has MTU {}, the overlay needs {mtu}",
            vt.name, vt.mtu
        )));
    }
    let own = underlay::own_addresses(h)?;
    // A listing of the Nodes is only as current as the last ADD, so only a fixed list is compared.
    if let Flood::Peers(p) = &cfg.flood {
        let want: BTreeSet<_> = vtep::wanted_peers(cfg, p, &own)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let got: BTreeSet<_> = h
            .flood_list(vt.index)
            .map_err(os("cannot read the VTEP flood list"))?
            .into_iter()
            .collect();
        if want != got {
            return Err(mismatch(format!(
                "VTEP {} floods to {got:?}, the config's peers need {want:?}",
                vt.name
            )));
        }
    }
    Ok(mtu)
}

/// The pod's side: the router role, then the attach engine's CHECK of the port (veth, MAC,
/// addresses, routes, MTU clamped to the pod's primary interface, spoof check, IPAM).
pub fn check_pod(
    h: &mut impl VxlanHost,
    req: &Request,
    cfg: &VxlanConfig,
    prev: &AddResult,
    mtu: u32,
) -> CniResult<()> {
    let ifname = &req.env.ifname;
    let container = prev
        .interfaces
        .iter()
        .position(|i| &i.name == ifname && i.sandbox.is_some());
    if let Role::Router { masquerade_out } = &cfg.role {
        let ips: Vec<_> = prev
            .ips
            .iter()
            .filter(|i| i.interface.is_none() || i.interface == container)
            .cloned()
            .collect();
        let chain = router::chain(&req.conf.name, &req.env.container_id, ifname);
        if let Some(what) = router::missing(h, &chain, &ips, masquerade_out.as_deref())
            .map_err(os("cannot read the router pod's settings"))?
        {
            return Err(mismatch(what));
        }
    }
    let port = cfg.port_plan(underlay::veth_mtu(h, mtu)?);
    h.check_port(req, &port)
}
