//! A bridge port: attach a host veth with its port options and VLANs, and the VLANs CHECK expects.

use crate::host::Host;
use crate::os::os;
use crate::plan::PortPlan;
use plumb_cni::CniResult;
use plumb_net::link::{Link, PortOptions};

/// VLAN 1 is what a VLAN-filtering bridge gives every new port (its `default_pvid`).
pub const DEFAULT_VLAN: u16 = 1;

/// Makes the host veth a port of the bridge with the config's options and VLANs. It stays down: ADD
/// brings it up as its last step ([`crate::attach::add_attachment_with`] says why).
pub fn attach_with(h: &mut impl Host, cfg: &PortPlan, bridge: &Link, port: &Link) -> CniResult<()> {
    h.set_controller(port, bridge)
        .map_err(os("cannot attach the host veth to the bridge"))?;
    let opts = PortOptions {
        hairpin: cfg.hairpin.then_some(true),
        learning: None,
        isolated: cfg.port_isolation.then_some(true),
    };
    h.set_port_options(port, opts)
        .map_err(os("cannot set bridge port options"))?;
    if cfg.uses_vlans() {
        if !cfg.preserve_default_vlan && cfg.vlan != DEFAULT_VLAN {
            h.vlan_remove(port, DEFAULT_VLAN, DEFAULT_VLAN)
                .map_err(os("cannot remove the default VLAN from the port"))?;
        }
        for &(lo, hi) in &cfg.trunk {
            h.vlan_add(port, lo, hi, false, false)
                .map_err(os("cannot add trunk VLANs to the port"))?;
        }
        // After the trunk, so an access VLAN inside a trunk range stays the untagged PVID.
        if cfg.vlan != 0 {
            h.vlan_add(port, cfg.vlan, cfg.vlan, true, true)
                .map_err(os("cannot add the access VLAN to the port"))?;
        }
    }
    Ok(())
}
