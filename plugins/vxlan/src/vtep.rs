//! The node's shared half of the overlay, made on the first ADD and verified on every later one: the
//! bridge, the VTEP as its port, and (for unicast peers) the VTEP's flood list. Runs under the bridge
//! lock. A VTEP whose settings differ from the config is an error; it is never changed under pods.

use crate::config::{Flood, VxlanConfig};
use crate::host::{Ns, VxlanHost};
use plumb_attach::os::os;
use plumb_cni::{code, CniError, CniResult};
use plumb_net::link::Link;
use plumb_net::nl::is_exists;
use plumb_net::vxlan::VxlanSettings;
use std::net::IpAddr;

/// What the config wants the VTEP to be.
pub fn wanted(cfg: &VxlanConfig, underlay: &Link) -> VxlanSettings {
    let group = match &cfg.flood {
        Flood::Group(g) => Some(*g),
        Flood::Peers(_) | Flood::FromNodes(_) => None,
    };
    // Without a group or a local address nothing tells the kernel the underlay family, and it makes
    // an IPv4 VTEP, which refuses IPv6 flood entries: the unspecified IPv6 source says IPv6.
    let local = match (cfg.local, group, cfg.flood.is_ipv6()) {
        (None, None, true) => Some(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
        (l, _, _) => l,
    };
    VxlanSettings {
        vni: cfg.vni,
        group,
        local,
        port: cfg.port,
        underlay: Some(underlay.index),
        learning: cfg.learning,
    }
}

/// The shared devices after [`ensure`], and which of them this call created.
#[derive(Debug)]
pub struct Shared {
    /// The bridge.
    pub bridge: Link,
    /// The VTEP.
    pub vtep: Link,
    /// This call created the bridge.
    pub created_bridge: bool,
    /// This call created the VTEP.
    pub created_vtep: bool,
}

/// Creates or verifies the bridge and the VTEP, with `mtu` set explicitly on both.
pub fn ensure(
    nl: &mut impl VxlanHost,
    cfg: &VxlanConfig,
    underlay: &Link,
    mtu: u32,
    peers: Option<&[IpAddr]>,
) -> CniResult<Shared> {
    let (bridge, created_bridge) = ensure_bridge(nl, cfg, mtu)?;
    let made = ensure_vtep(nl, cfg, underlay, mtu, &bridge);
    let (vtep, created_vtep) = match made {
        Ok(v) => v,
        Err(e) => {
            if created_bridge {
                let _ = nl.delete_link(bridge.index, &bridge.name);
            }
            return Err(e);
        }
    };
    let shared = Shared {
        bridge,
        vtep,
        created_bridge,
        created_vtep,
    };
    if let Err(e) = peers.map_or(Ok(()), |p| sync_flood_list(nl, &shared.vtep, p)) {
        remove_created(nl, &shared);
        return Err(e);
    }
    Ok(shared)
}

/// Deletes whatever of the shared devices [`ensure`] created (rollback of a failed first ADD).
pub fn remove_created(nl: &mut impl VxlanHost, s: &Shared) {
    if s.created_vtep {
        if let Err(e) = nl.delete_link(s.vtep.index, &s.vtep.name) {
            plumb_cni::log::failed_step("rollback vtep", &e.to_string());
        }
    }
    if s.created_bridge {
        if let Err(e) = nl.delete_link(s.bridge.index, &s.bridge.name) {
            plumb_cni::log::failed_step("rollback bridge", &e.to_string());
        }
    }
}

fn vanished(name: &str) -> CniError {
    CniError::new(code::IO_FAILURE, format!("{name} vanished after creation"))
}

/// The bridge, made if missing. Whatever fails after this call made it deletes it again.
fn ensure_bridge(nl: &mut impl VxlanHost, cfg: &VxlanConfig, mtu: u32) -> CniResult<(Link, bool)> {
    let name = &cfg.bridge;
    let found = nl
        .link(Ns::Host, name)
        .map_err(os("cannot look up the bridge"))?;
    let created = match found {
        Some(_) => false,
        None => match nl.create_bridge(name) {
            Ok(()) => true,
            Err(e) if is_exists(&e) => false,
            Err(e) => return Err(os("cannot create the bridge")(e)),
        },
    };
    match set_up_bridge(nl, cfg, found, mtu) {
        Ok(br) => Ok((br, created)),
        Err(e) => {
            if created {
                // By name: the failing step may have been the lookup that gives the index.
                let _ = nl.delete_link_by_name(name);
            }
            Err(e)
        }
    }
}

/// Verifies the bridge `found` (looked up again when just made) is one, and sets its MTU and state.
fn set_up_bridge(
    nl: &mut impl VxlanHost,
    cfg: &VxlanConfig,
    found: Option<Link>,
    mtu: u32,
) -> CniResult<Link> {
    let name = &cfg.bridge;
    let br = match found {
        Some(l) => l,
        None => nl
            .link(Ns::Host, name)
            .map_err(os("cannot look up the bridge"))?
            .ok_or_else(|| vanished(name))?,
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(CniError::config(format!(
            "field \"bridge\": {name} already exists as a {} interface, not a bridge; choose another bridge name",
            br.kind.as_deref().unwrap_or("plain")
        )));
    }
    (|| -> std::io::Result<()> {
        // Set explicitly (even on a new bridge), so the kernel keeps it when ports with other MTUs join.
        nl.set_mtu(&br, mtu)?;
        // No router advertisements on the bridge: it carries no addresses of the node.
        let _ = nl.write_sysctl(Ns::Host, &format!("net/ipv6/conf/{name}/accept_ra"), "0");
        if !br.up {
            nl.set_up(&br)?;
        }
        Ok(())
    })()
    .map_err(os("cannot set up the bridge"))?;
    nl.link_by_index(Ns::Host, br.index)
        .map_err(os("cannot look up the bridge"))?
        .ok_or_else(|| vanished(name))
}

/// The VTEP on `bridge`, made if missing. Whatever fails after this call made it deletes it again.
fn ensure_vtep(
    nl: &mut impl VxlanHost,
    cfg: &VxlanConfig,
    underlay: &Link,
    mtu: u32,
    bridge: &Link,
) -> CniResult<(Link, bool)> {
    let name = &cfg.vtep;
    let want = wanted(cfg, underlay);
    let found = nl.vxlan(name).map_err(os("cannot look up the VTEP"))?;
    let created = found.is_none();
    if created {
        refuse_second_vtep(nl, cfg, bridge)?;
        match nl.create_vxlan(name, &want, mtu) {
            Ok(()) => {}
            Err(e) if is_exists(&e) => {
                return Err(CniError::config(format!(
                    "cannot create VTEP {name}: the node already has a VXLAN device with vni {} on UDP port {} (or the name is taken); use another vni, or remove that device",
                    cfg.vni, cfg.port
                ))
                .caused_by(e))
            }
            Err(e) => return Err(os("cannot create the VTEP")(e)),
        }
    }
    let adopted = (|| {
        let found = match found {
            Some(f) => f,
            None => nl
                .vxlan(name)
                .map_err(os("cannot look up the VTEP"))?
                .ok_or_else(|| vanished(name))?,
        };
        set_up_vtep(nl, cfg, underlay, &want, mtu, bridge, found)
    })();
    match adopted {
        Ok(v) => Ok((v, created)),
        Err(e) => {
            if created {
                let _ = nl.delete_link_by_name(name);
            }
            Err(e)
        }
    }
}

/// Verifies an existing (or just made) VTEP against the config and joins it to `bridge`, up, at
/// `mtu`. A VTEP that differs is refused, never changed.
fn set_up_vtep(
    nl: &mut impl VxlanHost,
    cfg: &VxlanConfig,
    underlay: &Link,
    want: &VxlanSettings,
    mtu: u32,
    bridge: &Link,
    (vtep, have): (Link, Option<VxlanSettings>),
) -> CniResult<Link> {
    let name = &cfg.vtep;
    let Some(have) = have else {
        return Err(CniError::config(format!(
            "field \"vtep\": {name} already exists as a {} interface, not a VXLAN device; choose another name",
            vtep.kind.as_deref().unwrap_or("plain")
        )));
    };
    if let Some(diff) = difference(want, &have, cfg.local.is_some(), underlay) {
        return Err(CniError::config(format!(
            "VTEP {name} already exists with {diff}; an existing VTEP is never changed under running pods: give this network another \"bridge\"/\"vtep\", or delete {name} once no pod uses it"
        )));
    }
    if let Some(c) = vtep.controller.filter(|c| *c != bridge.index) {
        return Err(CniError::config(format!(
            "VTEP {name} is a port of another bridge (index {c}), not of {}; give this network its own \"vtep\"",
            bridge.name
        )));
    }
    (|| -> std::io::Result<()> {
        if vtep.mtu != mtu {
            nl.set_mtu(&vtep, mtu)?;
        }
        if vtep.controller.is_none() {
            nl.set_controller(&vtep, bridge)?;
        }
        if !vtep.up {
            nl.set_up(&vtep)?;
        }
        Ok(())
    })()
    .map_err(|e| {
        // Bringing a VTEP up opens its UDP socket; the port is taken when another VXLAN device uses it
        // in external (metadata) mode, which no other device can share, or a process holds it.
        if plumb_net::nl::errno(&e) == Some(libc::EADDRINUSE) {
            CniError::config(format!(
                "field \"port\": VTEP {name} cannot open UDP port {}: it is in use on this node (by a VXLAN device in external mode, as some primary CNIs make, or by a process); use another \"port\", the same on every node",
                cfg.port
            ))
            .caused_by(e)
        } else {
            os("cannot set up the VTEP")(e)
        }
    })?;
    nl.link_by_index(Ns::Host, vtep.index)
        .map_err(os("cannot look up the VTEP"))?
        .ok_or_else(|| vanished(name))
}

/// A bridge joins one overlay: a VXLAN port under another name means another network's VTEP.
fn refuse_second_vtep(nl: &mut impl VxlanHost, cfg: &VxlanConfig, bridge: &Link) -> CniResult<()> {
    let other = nl
        .links(Ns::Host)
        .map_err(os("cannot list links"))?
        .into_iter()
        .find(|l| l.controller == Some(bridge.index) && l.kind.as_deref() == Some("vxlan"));
    match other {
        Some(o) => Err(CniError::config(format!(
            "bridge {} already has VTEP {} as a port; set \"vtep\": {:?} or use another bridge",
            cfg.bridge, o.name, o.name
        ))),
        None => Ok(()),
    }
}

/// The first setting in which an existing VTEP differs from the wanted one, described with both values.
pub fn difference(
    want: &VxlanSettings,
    have: &VxlanSettings,
    compare_local: bool,
    underlay: &Link,
) -> Option<String> {
    let show = |ip: Option<IpAddr>| ip.map_or_else(|| "none".to_string(), |i| i.to_string());
    if want.vni != have.vni {
        return Some(format!(
            "vni {} but this config says \"vni\": {}",
            have.vni, want.vni
        ));
    }
    if want.group != have.group {
        return Some(format!(
            "multicast group {} but this config says {}",
            show(have.group),
            show(want.group)
        ));
    }
    if want.port != have.port {
        return Some(format!(
            "UDP port {} but this config says \"port\": {}",
            have.port, want.port
        ));
    }
    if want.underlay != have.underlay {
        return Some(format!(
            "underlay device index {} but this config's underlay is {} (index {})",
            have.underlay.map_or("none".into(), |i| i.to_string()),
            underlay.name,
            underlay.index
        ));
    }
    if compare_local && want.local != have.local {
        return Some(format!(
            "local address {} but this config says \"local\": {}",
            show(have.local),
            show(want.local)
        ));
    }
    if want.learning != have.learning {
        return Some(format!(
            "learning {} but this config says \"learning\": {}",
            have.learning, want.learning
        ));
    }
    None
}

/// The peers the flood list must hold: `peers` (the configured or listed underlay addresses) minus
/// this node's own addresses. `None` for a multicast VTEP, whose list is the kernel's.
pub fn wanted_peers(cfg: &VxlanConfig, peers: &[IpAddr], own: &[IpAddr]) -> Option<Vec<IpAddr>> {
    match &cfg.flood {
        Flood::Group(_) => None,
        Flood::Peers(_) | Flood::FromNodes(_) => Some(
            peers
                .iter()
                .filter(|ip| !own.contains(ip) && ip.is_ipv6() == cfg.flood.is_ipv6())
                .copied()
                .collect(),
        ),
    }
}

/// Makes the flood list of a unicast VTEP exactly `want`: appends the missing peers, removes stale
/// ones (a peer dropped from the config or a Node gone).
fn sync_flood_list(nl: &mut impl VxlanHost, vtep: &Link, want: &[IpAddr]) -> CniResult<()> {
    // EAFNOSUPPORT is the kernel's answer to a flood entry of another family than the VTEP's.
    let have = nl
        .flood_list(vtep.index)
        .map_err(os("cannot read the VTEP flood list"))?;
    for p in want.iter().filter(|p| !have.contains(p)) {
        nl.flood_add(vtep.index, *p).map_err(|e| {
            if plumb_net::nl::errno(&e) == Some(libc::EAFNOSUPPORT) {
                CniError::config(format!(
                    "VTEP {} was made for another underlay address family than peer {p}; give this network its own \"vtep\", or delete {} once no pod uses it",
                    vtep.name, vtep.name
                ))
            } else {
                os("cannot add a peer to the VTEP flood list")(e)
            }
        })?;
    }
    for p in have.iter().filter(|p| !want.contains(p)) {
        nl.flood_remove(vtep.index, *p)
            .map_err(os("cannot remove a stale peer from the VTEP flood list"))?;
    }
    Ok(())
}
