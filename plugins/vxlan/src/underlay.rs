//! The node's underlay: which device carries the VXLAN traffic, the overlay MTU it allows, the node's
//! own addresses (skipped in `peers`), and the MTU of a pod's primary interface (to clamp to).

use crate::config::{Mtu, VxlanConfig};
use crate::host::{Ns, VxlanHost};
use plumb_attach::os::os;
use plumb_cni::{code, CniError, CniResult};
use plumb_net::link::Link;
use std::net::IpAddr;

/// Why the underlay device cannot be found.
#[derive(Debug)]
pub enum Missing {
    /// `underlayDevice` names a device the node does not have.
    Named(String),
    /// No `underlayDevice`, and no default route of the underlay's family to take it from.
    NoDefaultRoute(&'static str),
}

impl Missing {
    /// The message for an operator, naming the field and the fix.
    pub fn message(&self) -> String {
        match self {
            Missing::Named(n) => format!(
                "field \"underlayDevice\": {n} does not exist on this node; name the device that carries VXLAN traffic between nodes (see `ip route get <peer>`)"
            ),
            Missing::NoDefaultRoute(f) => format!(
                "this node has no {f} default route to take the VXLAN underlay device from; set \"underlayDevice\""
            ),
        }
    }
}

/// Finds the underlay device: `underlayDevice`, else the device of the node's default route of the
/// underlay's family.
pub fn find(h: &mut impl VxlanHost, cfg: &VxlanConfig) -> CniResult<Result<Link, Missing>> {
    let found = match &cfg.underlay {
        Some(name) => h
            .link(Ns::Host, name)
            .map_err(os("cannot look up the underlay device"))?
            .ok_or_else(|| Missing::Named(name.clone())),
        None => {
            let v6 = cfg.flood.is_ipv6();
            let family = if v6 { "IPv6" } else { "IPv4" };
            let default = h
                .routes(Ns::Host, v6)
                .map_err(os("cannot read the node's routes"))?
                .into_iter()
                .find(|r| r.prefix == 0 && r.oif.is_some())
                .and_then(|r| r.oif);
            match default {
                Some(i) => h
                    .link_by_index(Ns::Host, i)
                    .map_err(os("cannot look up the underlay device"))?
                    .ok_or(Missing::NoDefaultRoute(family)),
                None => Err(Missing::NoDefaultRoute(family)),
            }
        }
    };
    Ok(found)
}

/// Like [`find`], with a missing device as a config error (code 7).
pub fn require(h: &mut impl VxlanHost, cfg: &VxlanConfig) -> CniResult<Link> {
    find(h, cfg)?.map_err(|m| CniError::config(m.message()))
}

/// The overlay MTU: the underlay's minus VXLAN's overhead, or the config's fixed MTU, which may not be
/// larger.
pub fn overlay_mtu(cfg: &VxlanConfig, underlay: &Link) -> CniResult<u32> {
    let overhead = cfg.overhead();
    let derived = underlay.mtu.checked_sub(overhead).filter(|m| *m >= 68).ok_or_else(|| {
        CniError::config(format!(
            "underlay device {} has MTU {}, too small to carry VXLAN ({overhead} bytes of overhead)",
            underlay.name, underlay.mtu
        ))
    })?;
    match cfg.mtu {
        Mtu::Auto => Ok(derived),
        Mtu::Fixed(m) if m > derived => Err(CniError::config(format!(
            "field \"mtu\" {m} is larger than {derived}, the most the underlay allows ({} MTU {} minus {overhead} bytes of VXLAN over {}); use at most {derived} or \"auto\"",
            underlay.name,
            underlay.mtu,
            if cfg.flood.is_ipv6() { "IPv6" } else { "IPv4" }
        ))),
        Mtu::Fixed(m) => Ok(m),
    }
}

/// Every address configured on the node (to skip the node itself in `peers`).
pub fn own_addresses(h: &mut impl VxlanHost) -> CniResult<Vec<IpAddr>> {
    h.host_addresses()
        .map_err(os("cannot list the node's addresses"))
}

/// The MTU of the pod's primary interface (the device of its default route, IPv4 first), if it has one.
pub fn pod_primary_mtu(h: &mut impl VxlanHost) -> CniResult<Option<u32>> {
    (|| {
        for v6 in [false, true] {
            let dev = h
                .routes(Ns::Pod, v6)?
                .into_iter()
                .find(|r| r.prefix == 0 && r.oif.is_some())
                .and_then(|r| r.oif);
            if let Some(i) = dev {
                if let Some(l) = h.link_by_index(Ns::Pod, i)? {
                    return Ok(Some(l.mtu));
                }
            }
        }
        Ok(None)
    })()
    .map_err(|e: std::io::Error| {
        CniError::new(code::IO_FAILURE, "cannot read the pod's routes").caused_by(e)
    })
}

/// The MTU of the pod's veth: the overlay's, clamped to the pod's primary interface.
pub fn veth_mtu(h: &mut impl VxlanHost, overlay: u32) -> CniResult<u32> {
    Ok(pod_primary_mtu(h)?.map_or(overlay, |p| p.min(overlay)))
}
