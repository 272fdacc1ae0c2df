//! The bridge itself: create or verify it (VLAN filtering enforced on a bridge that already exists),
//! and remove one a failed ADD created. Its ports are the attach engine's (`plumb_attach::ports`).

use crate::config::BridgeConfig;
use plumb_attach::attach::OwnStep;
use plumb_attach::os::os;
use plumb_cni::{CniError, CniResult};
use plumb_net::link::{self, Link};
use plumb_net::nl::{is_exists, Route};

/// Creates the bridge if it is missing, or checks the one there is; enforces VLAN filtering when the
/// config uses VLANs, promiscuous mode when asked, and brings it up. Runs under the bridge lock.
/// Returns the bridge and whether this call created it (so a failed ADD can remove it again); a bridge
/// it created but could not set up is removed before the error is returned.
pub fn ensure_bridge(nl: &mut Route, cfg: &BridgeConfig) -> CniResult<(Link, bool)> {
    let mut created = None;
    let made = ensure_bridge_inner(nl, cfg, &mut created);
    match (made, created) {
        (Ok(l), created) => Ok((l, created.is_some())),
        (Err(e), Some(index)) => {
            if let Err(u) = link::delete(nl, index, &cfg.bridge) {
                eprintln!(
                    "plumb-bridge: rollback: cannot delete bridge {}: {u}",
                    cfg.bridge
                );
            }
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

/// The undo step of a bridge this ADD created (label `bridge`): removed when no other port joined it.
#[derive(Debug)]
pub struct CreatedBridge(pub Link);

impl OwnStep for CreatedBridge {
    fn label(&self) -> &'static str {
        "bridge"
    }

    fn undo(&self, host: &mut Route) -> Result<(), String> {
        remove_created_bridge(host, &self.0).map_err(|e| e.to_string())
    }
}

/// Removes a bridge a failed ADD created, if it is still that bridge and no port joined it meanwhile.
pub fn remove_created_bridge(nl: &mut Route, bridge: &Link) -> std::io::Result<()> {
    match link::by_index(nl, bridge.index)? {
        Some(l) if l.name == bridge.name && l.kind.as_deref() == Some("bridge") => {
            if link::list(nl)?
                .iter()
                .any(|p| p.controller == Some(bridge.index))
            {
                return Ok(());
            }
            link::delete(nl, bridge.index, &bridge.name)
        }
        _ => Ok(()),
    }
}

fn ensure_bridge_inner(
    nl: &mut Route,
    cfg: &BridgeConfig,
    created: &mut Option<u32>,
) -> CniResult<Link> {
    let name = &cfg.bridge;
    let existing = link::by_name(nl, name).map_err(os("cannot look up the bridge"))?;
    let br = match existing {
        Some(l) => l,
        None => {
            let made = link::create_bridge(nl, name, cfg.mtu, cfg.uses_vlans());
            if made.is_ok() {
                // Learn its index now, so a failure below can remove it.
                *created = link::by_name(nl, name)
                    .map_err(os("cannot look up the bridge"))?
                    .map(|l| l.index);
            }
            match made {
                Err(e) if !is_exists(&e) && cfg.uses_vlans() => {
                    return Err(CniError::new(
                        plumb_cni::code::IO_FAILURE,
                        format!("cannot create bridge {name} with vlan_filtering, which \"vlan\"/\"vlanTrunk\" need (does this kernel support bridge VLAN filtering?)"),
                    )
                    .caused_by(e))
                }
                Err(e) if !is_exists(&e) => return Err(os("cannot create the bridge")(e)),
                _ => {}
            }
            link::by_name(nl, name)
                .map_err(os("cannot look up the bridge"))?
                .ok_or_else(|| {
                    CniError::new(
                        plumb_cni::code::IO_FAILURE,
                        format!("bridge {name} vanished after creation"),
                    )
                })?
        }
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(CniError::config(format!(
            "field \"bridge\": {name} already exists as a {} interface, not a bridge; choose another bridge name",
            br.kind.as_deref().unwrap_or("plain")
        )));
    }
    if cfg.uses_vlans() && br.vlan_filtering != Some(true) {
        link::set_vlan_filtering(nl, &br, true).map_err(|e| {
            CniError::new(
                plumb_cni::code::IO_FAILURE,
                format!("cannot turn on vlan_filtering on bridge {name}, which \"vlan\"/\"vlanTrunk\" need (does this kernel support bridge VLAN filtering?)"),
            )
            .caused_by(e)
        })?;
    }
    if cfg.promisc && !br.promisc {
        link::set_promisc(nl, &br, true).map_err(os("cannot set the bridge promiscuous"))?;
    }
    // As the reference does on every ADD: the bridge takes no router advertisements (the gateway
    // address and routes are the plugin's). Best effort: a kernel without IPv6 has no such sysctl.
    let _ = plumb_net::sysctl::write(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
    if !br.up {
        link::set_up(nl, &br, true).map_err(os("cannot bring the bridge up"))?;
    }
    link::by_index(nl, br.index)
        .map_err(os("cannot look up the bridge"))?
        .ok_or_else(|| {
            CniError::new(
                plumb_cni::code::IO_FAILURE,
                format!("bridge {name} vanished"),
            )
        })
}
