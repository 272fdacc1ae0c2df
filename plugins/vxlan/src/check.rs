//! CHECK: the node's bridge and VTEP (settings, port, MTU, flood list), the router role in the pod,
//! then everything plumb-bridge checks of the pod's port (veth, MAC, addresses, routes, MTU, spoof
//! check) and the IPAM plugin's CHECK.

use crate::config::{Role, VxlanConfig};
use crate::{router, underlay, vtep};
use plumb_attach::os::{enter_netns, os};
use plumb_cni::{code, CniError, CniResult, Request};
use plumb_net::fdb;
use plumb_net::link;
use plumb_net::nl::Route;
use plumb_net::vxlan;
use std::collections::BTreeSet;

fn mismatch(msg: String) -> CniError {
    CniError::new(code::CHECK_MISMATCH, msg)
}

/// Verifies the attachment against the config and `prevResult`.
pub fn check(req: &Request, cfg: &VxlanConfig) -> CniResult<()> {
    let prev = req
        .conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::config("CHECK needs \"prevResult\" in the configuration"))?;
    let mut host = Route::open().map_err(os("cannot open a netlink socket"))?;
    let underlay = underlay::find(&mut host, cfg)?.map_err(|m| mismatch(m.message()))?;
    let mtu = underlay::overlay_mtu(cfg, &underlay)?;
    let bridge = link::by_name(&mut host, &cfg.bridge)
        .map_err(os("cannot look up the bridge"))?
        .ok_or_else(|| mismatch(format!("bridge {} does not exist", cfg.bridge)))?;
    if bridge.mtu != mtu {
        return Err(mismatch(format!(
            "bridge {} has MTU {}, the overlay needs {mtu}",
            bridge.name, bridge.mtu
        )));
    }
    let (vt, have) = vxlan::lookup(&mut host, &cfg.vtep)
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
    let own = underlay::own_addresses(&mut host)?;
    // A listing of the Nodes is only as current as the last ADD, so only a fixed list is compared.
    if let crate::config::Flood::Peers(p) = &cfg.flood {
        let want: BTreeSet<_> = vtep::wanted_peers(cfg, p, &own)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let got: BTreeSet<_> = fdb::flood_list(&mut host, vt.index)
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
    let mut pod = enter_netns(req)?;
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
        let nft =
            router::nft(&pod).map_err(os("cannot open an nftables socket in the router pod"))?;
        if let Some(what) = router::missing(&pod, &nft, &chain, &ips, masquerade_out.as_deref())
            .map_err(os("cannot read the router pod's settings"))?
        {
            return Err(mismatch(what));
        }
    }
    let port = cfg.port_plan(underlay::veth_mtu(&mut pod, mtu)?);
    plumb_attach::check::check(req, &port, &mut pod, None)
}
