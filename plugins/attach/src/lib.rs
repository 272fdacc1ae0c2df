//! plumb-attach: the attach engine plumb-bridge, plumb-vxlan and plumb-macspoofchk share. A plugin
//! parses its config into a [`plan::PortPlan`], makes or finds its bridge, and hands both to
//! [`attach::add_attachment`]: the veth pair as a bridge port with its options and VLANs, IPAM, the pod
//! side (addresses, routes), masquerade and the MAC spoof check, each step on an undo stack that
//! [`attach::rollback`] takes back. [`check::check`] verifies such a port, [`cleanup`] runs DEL as a
//! best-effort sweep. All of them reach the kernel, nftables and IPAM through [`host::Host`]
//! ([`host::Real`] in the plugins, the recording `fake` in the unit tests). No module here imports a
//! plugin crate; the plugins import this one.

pub mod attach;
pub mod check;
pub mod cleanup;
pub mod fields;
pub mod firewall;
pub mod host;
pub mod lock;
pub mod naming;
pub mod os;
pub mod plan;
pub mod ports;
pub mod results;
pub mod steps;

/// The recording fake [`host::Host`]: the engine's own tests, and other crates' tests through the
/// `testing` feature (a dev-dependency feature only; never on in a plugin binary).
#[cfg(any(test, feature = "testing"))]
pub mod fake;
#[cfg(test)]
mod tests;
