//! The bridge itself: create or verify it (VLAN filtering enforced on a bridge that already exists),
//! and remove one a failed ADD created. Its ports are the attach engine's (`plumb_attach::ports`).

use crate::config::BridgeConfig;
use crate::host::BridgeHost;
use plumb_attach::attach::OwnStep;
use plumb_attach::os::os;
use plumb_cni::{CniError, CniResult};
use plumb_net::link::Link;
use plumb_net::nl::{is_exists, Route};

/// Creates the bridge if it is missing, or checks the one there is; enforces VLAN filtering when the
/// config uses VLANs, promiscuous mode when asked, and brings it up. Runs under the bridge lock.
/// Returns the bridge and whether this call created it (so a failed ADD can remove it again); a bridge
/// it created but could not set up is removed before the error is returned.
pub fn ensure_bridge(nl: &mut dyn BridgeHost, cfg: &BridgeConfig) -> CniResult<(Link, bool)> {
    let mut created = None;
    let made = ensure_bridge_inner(nl, cfg, &mut created);
    match (made, created) {
        (Ok(l), created) => Ok((l, created.is_some())),
        (Err(e), Some(index)) => {
            if let Err(u) = nl.delete_link(index, &cfg.bridge) {
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
        self.take_back(host)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl CreatedBridge {
    /// [`OwnStep::undo`] over any [`BridgeHost`].
    pub fn take_back(&self, host: &mut dyn BridgeHost) -> Result<(), String> {
        remove_created_bridge(host, &self.0).map_err(|e| e.to_string())
    }
}

/// Removes a bridge a failed ADD created, if it is still that bridge and no port joined it meanwhile.
pub fn remove_created_bridge(nl: &mut dyn BridgeHost, bridge: &Link) -> std::io::Result<()> {
    match nl.link_by_index(bridge.index)? {
        Some(l) if l.name == bridge.name && l.kind.as_deref() == Some("bridge") => {
            if nl
                .links()?
                .iter()
                .any(|p| p.controller == Some(bridge.index))
            {
                return Ok(());
            }
            nl.delete_link(bridge.index, &bridge.name)
        }
        _ => Ok(()),
    }
}

fn ensure_bridge_inner(
    nl: &mut dyn BridgeHost,
    cfg: &BridgeConfig,
    created: &mut Option<u32>,
) -> CniResult<Link> {
    let name = &cfg.bridge;
    let existing = nl
        .link_by_name(name)
        .map_err(os("cannot look up the bridge"))?;
    let br = match existing {
        Some(l) => l,
        None => {
            let made = nl.create_bridge(name, cfg.mtu, cfg.uses_vlans());
            if made.is_ok() {
                // Learn its index now, so a failure below can remove it. If even that fails, it
                // goes by name: under the bridge lock the bridge of that name is the one just made.
                match nl.link_by_name(name) {
                    Ok(l) => *created = l.map(|l| l.index),
                    Err(e) => {
                        if let Err(u) = nl.delete_link_by_name(name) {
                            eprintln!("plumb-bridge: rollback: cannot delete bridge {name}: {u}");
                        }
                        return Err(os("cannot look up the bridge")(e));
                    }
                }
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
            nl.link_by_name(name)
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
        nl.set_vlan_filtering(&br, true).map_err(|e| {
            CniError::new(
                plumb_cni::code::IO_FAILURE,
                format!("cannot turn on vlan_filtering on bridge {name}, which \"vlan\"/\"vlanTrunk\" need (does this kernel support bridge VLAN filtering?)"),
            )
            .caused_by(e)
        })?;
    }
    if cfg.promisc && !br.promisc {
        nl.set_promisc(&br, true)
            .map_err(os("cannot set the bridge promiscuous"))?;
    }
    // As the reference does on every ADD: the bridge takes no router advertisements (the gateway
    // address and routes are the plugin's). Best effort: a kernel without IPv6 has no such sysctl.
    let _ = nl.sysctl(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
    if !br.up {
        nl.set_up(&br).map_err(os("cannot bring the bridge up"))?;
    }
    nl.link_by_index(br.index)
        .map_err(os("cannot look up the bridge"))?
        .ok_or_else(|| {
            CniError::new(
                plumb_cni::code::IO_FAILURE,
                format!("bridge {name} vanished"),
            )
        })
}
