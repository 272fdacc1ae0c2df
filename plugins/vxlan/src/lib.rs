//! plumb-vxlan: the gateway-network plugin. On the first ADD on a node it makes the bridge and a VXLAN
//! VTEP (multicast group or unicast peers) with the MTU the underlay allows; then it attaches the pod as
//! plumb-bridge does, and for the router pod turns on forwarding and masquerade inside the pod.

pub mod check;
pub mod config;
pub mod host;
pub mod peers;
pub mod plugin;
pub mod policy;
pub mod router;
pub mod underlay;
pub mod vtep;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
