//! A bridge port: attach a host veth with its port options and VLANs, and the VLANs CHECK expects.

use crate::os::os;
use crate::plan::PortPlan;
use plumb_cni::CniResult;
use plumb_net::link::{self, Link, PortOptions};
use plumb_net::nl::Route;
use plumb_net::vlan::{self, Target};

/// VLAN 1 is what a VLAN-filtering bridge gives every new port (its `default_pvid`).
pub const DEFAULT_VLAN: u16 = 1;

/// Makes the host veth a port of the bridge with the config's options and VLANs, and brings it up.
pub fn attach(nl: &mut Route, cfg: &PortPlan, bridge: &Link, port: &Link) -> CniResult<()> {
    link::set_controller(nl, port, bridge)
        .map_err(os("cannot attach the host veth to the bridge"))?;
    let opts = PortOptions {
        hairpin: cfg.hairpin.then_some(true),
        learning: None,
        isolated: cfg.port_isolation.then_some(true),
    };
    link::set_port_options(nl, port, opts).map_err(os("cannot set bridge port options"))?;
    if cfg.uses_vlans() {
        if !cfg.preserve_default_vlan && cfg.vlan != DEFAULT_VLAN {
            vlan::remove(nl, port, Target::Port, DEFAULT_VLAN, DEFAULT_VLAN)
                .map_err(os("cannot remove the default VLAN from the port"))?;
        }
        for &(lo, hi) in &cfg.trunk {
            vlan::add(nl, port, Target::Port, lo, hi, false, false)
                .map_err(os("cannot add trunk VLANs to the port"))?;
        }
        // After the trunk, so an access VLAN inside a trunk range stays the untagged PVID.
        if cfg.vlan != 0 {
            vlan::add(nl, port, Target::Port, cfg.vlan, cfg.vlan, true, true)
                .map_err(os("cannot add the access VLAN to the port"))?;
        }
    }
    link::set_up(nl, port, true).map_err(os("cannot bring the host veth up"))
}
