//! plumb-bridge: the reference bridge plugin's configuration and behaviour, plus VLAN access and trunk
//! ports enforced on any bridge, a MAC spoof check over nftables netlink, and an undo stack so that a
//! failed ADD leaves nothing behind. The pod's port itself (veth, IPAM, pod side, spoof check, CHECK,
//! DEL) is the attach engine's, `plumb-attach`, which plumb-vxlan and plumb-macspoofchk share.

pub mod config;
pub mod gateway;
pub mod host;
pub mod plugin;
pub mod policy;
pub mod ports;
pub mod uplink;
pub mod uplink_gc;

#[cfg(test)]
mod tests;
