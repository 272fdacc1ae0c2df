//! The node's tenant policy (docs/policy.md) applied to a plumb-bridge config, in ADD and CHECK,
//! before anything is made: the bridge name, the uplink (a host interface), the VLANs (the port's, the
//! per-VLAN bridge's, the uplink trunk's) and a required spoof check. The IPAM
//! limits are enforced by plumb-ipam itself, which the config delegates to.

use crate::config::{BridgeConfig, UplinkLayout};
use plumb_attach::fields::given_bool;
use plumb_cni::policy::Guard;
use plumb_cni::{CniResult, Request};

/// Checks `cfg` against the policy for the request's namespace and turns the spoof check on where the
/// policy requires it and the config does not mention it. Returns the guard, for checks of fields
/// other modules read (a host interface to enslave: [`Guard::host_interface`]).
pub fn enforce(req: &Request, cfg: &mut BridgeConfig) -> CniResult<Guard> {
    let guard = Guard::load(&req.env.args)?;
    guard.bridge(&cfg.bridge)?;
    if let Some(uplink) = &cfg.uplink {
        guard.host_interface("uplink", uplink)?;
    }
    match cfg.uplink_layout {
        // The pods are untagged ports of a bridge that sits on VLAN `vlan` of the uplink: that VLAN is
        // the one the network joins.
        Some(UplinkLayout::PerVlan(vlan)) => guard.vlans(vlan, &[], false)?,
        _ => guard.vlans(cfg.vlan, &cfg.trunk, cfg.preserve_default_vlan)?,
    }
    guard.vlan_spans("uplinkTrunk", &cfg.uplink_trunk)?;
    cfg.macspoofchk = guard.macspoofchk(given_bool(req, "macspoofchk"))?;
    Ok(guard)
}
