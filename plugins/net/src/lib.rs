//! The host side of plumb plugins, over rtnetlink without an async runtime: a network namespace
//! session per request (one `setns`, no thread left switched), links (bridges, veth pairs made directly in the container
//! netns), bridge-port options and VLANs, VXLAN devices and their flood list, addresses, routes and sysctls.

pub mod addr;
pub mod fdb;
pub mod link;
pub mod netconf;
pub mod netns;
pub mod nl;
pub mod session;
pub mod sysctl;
pub mod vlan;
pub mod vxlan;
