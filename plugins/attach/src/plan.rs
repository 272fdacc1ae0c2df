//! The plan of one veth-on-a-bridge attachment: what a plugin's config decides about the pod's port,
//! and all the engine reads. plumb-bridge's config converts into it; plumb-vxlan builds one for its
//! overlay bridge.

use plumb_cni::result::Dns;

/// The pod's port on a bridge, as the engine makes and checks it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortPlan {
    /// The bridge the host veth joins.
    pub bridge: String,
    /// MTU of both veth ends (the kernel's default when `None`).
    pub mtu: Option<u32>,
    /// The container interface's MAC (the kernel picks one when `None`).
    pub mac: Option<[u8; 6]>,
    /// Access VLAN (untagged PVID), 0 for none.
    pub vlan: u16,
    /// Tagged trunk VLAN ranges.
    pub trunk: Vec<(u16, u16)>,
    /// Keep the port in the bridge's default VLAN 1 as well.
    pub preserve_default_vlan: bool,
    /// Hairpin mode on the port.
    pub hairpin: bool,
    /// Port isolation on the port.
    pub port_isolation: bool,
    /// Drop frames from the pod whose source MAC is not its interface's.
    pub macspoofchk: bool,
    /// Masquerade traffic from the pod's addresses leaving their subnet.
    pub ip_masq: bool,
    /// The IPAM result must give gateways, which the plugin puts on its bridge side.
    pub is_gateway: bool,
    /// A default route via the gateway in the pod.
    pub is_default_gateway: bool,
    /// IPv6 duplicate address detection on the pod interface.
    pub enable_dad: bool,
    /// Leave the pod interface down (and without routes).
    pub disable_container_interface: bool,
    /// The IPAM plugin, if any.
    pub ipam_type: Option<String>,
    /// DNS that overrides the IPAM plugin's.
    pub dns: Option<Dns>,
    /// The caller has no work left in the pod after the attachment: the engine ends the pod session's
    /// worker before the port comes up (see [`crate::host::Host::end_pod_work`]).
    pub pod_work_ends: bool,
}

impl PortPlan {
    /// Whether the port carries any VLAN configuration (which needs a VLAN-filtering bridge).
    pub fn uses_vlans(&self) -> bool {
        self.vlan != 0 || !self.trunk.is_empty()
    }
}
