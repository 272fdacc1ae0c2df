//! The node's tenant policy (docs/policy.md) applied to a plumb-vxlan config, in ADD and CHECK, before
//! anything is made: the bridge, the VNI, the multicast group or unicast peers, and a required spoof
//! check. Peers listed from the Nodes (`peers.fromNodes`) are checked by ADD once listed
//! ([`listed_peers`]). The IPAM limits are enforced by plumb-ipam, which the config delegates to.

use crate::config::{Flood, VxlanConfig};
use plumb_attach::fields::given_bool;
use plumb_cni::policy::Guard;
use plumb_cni::{CniResult, Request};
use std::net::IpAddr;

/// Checks `cfg` against the policy for the request's namespace and turns the spoof check on where the
/// policy requires it and the config does not mention it.
pub fn enforce(req: &Request, cfg: &mut VxlanConfig) -> CniResult<Guard> {
    let guard = Guard::load(&req.env.args)?;
    guard.bridge(&cfg.bridge)?;
    guard.vni(cfg.vni)?;
    match &cfg.flood {
        Flood::Group(g) => guard.group(*g)?,
        Flood::Peers(p) => guard.peers("peers", p)?,
        Flood::FromNodes(_) => {} // known only once listed: listed_peers
    }
    cfg.macspoofchk = guard.macspoofchk(given_bool(req, "macspoofchk"))?;
    Ok(guard)
}

/// The addresses `peers.fromNodes` listed must each be allowed as peers.
pub fn listed_peers(guard: &Guard, cfg: &VxlanConfig, listed: Option<&[IpAddr]>) -> CniResult<()> {
    match (&cfg.flood, listed) {
        (Flood::FromNodes(_), Some(p)) => guard.peers("peers.fromNodes", p),
        _ => Ok(()),
    }
}
