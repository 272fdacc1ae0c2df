//! plumb-bridge: the reference bridge plugin's configuration and behaviour, plus VLAN access and trunk
//! ports enforced on any bridge, a MAC spoof check over nftables netlink, and an undo stack so that a
//! failed ADD leaves nothing behind. The spoof check is shared with the chained plumb-macspoofchk.

pub mod check;
pub mod cleanup;
pub mod config;
pub mod firewall;
pub mod gateway;
pub mod naming;
pub mod plugin;
pub mod policy;
pub mod ports;
pub mod results;
pub mod uplink;
pub mod uplink_gc;
