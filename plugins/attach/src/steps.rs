//! What the engine and its [`crate::host::Host`] share: the undo stack's steps and the plugin's hooks
//! (its own undo steps, its gateway step, its bridge check), apart from both so neither imports the
//! other.

use plumb_cni::result::IpConfig;
use plumb_cni::CniResult;
use plumb_net::link::Link;
use plumb_net::nl::Route;
use std::net::IpAddr;

/// A step of the plugin's own (a bridge it created, an uplink piece, a VLAN gateway interface) on the
/// shared undo stack, so one rollback takes back the plugin's and the engine's steps in one order.
pub trait OwnStep: std::fmt::Debug {
    /// The step's name in log lines and in `PLUMB_FAILPOINT=rollback-<label>`.
    fn label(&self) -> &'static str;
    /// Takes the step back; the error as the log line shows it.
    fn undo(&self, host: &mut Route) -> Result<(), String>;
    /// The step as its own type, for a plugin's unit tests that take their steps back against their
    /// own fake host (`undo` needs a real socket); `None` unless the plugin's step offers it.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// One step to take back if ADD fails later.
#[derive(Debug)]
pub enum Undo {
    /// The host veth (its peer goes with it).
    HostVeth(String),
    /// The IPAM reservation (IPAM DEL).
    Ipam,
    /// The spoof-check chain.
    Spoofcheck,
    /// The masquerade chains.
    Masquerade,
    /// A gateway address this ADD added to the bridge (or VLAN gateway interface) at `index`; only
    /// this exact address is removed, never one that was there before.
    GatewayAddress {
        /// The interface the address was added to.
        index: u32,
        /// The address.
        ip: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// A step of the plugin's own.
    Own(Box<dyn OwnStep>),
}

impl Undo {
    /// The step's name in log lines.
    pub fn label(&self) -> &'static str {
        match self {
            Undo::HostVeth(_) => "host veth",
            Undo::Ipam => "ipam",
            Undo::Spoofcheck => "spoofcheck",
            Undo::Masquerade => "masquerade",
            Undo::GatewayAddress { .. } => "gateway address",
            Undo::Own(step) => step.label(),
        }
    }
}

/// The plugin's gateway step (`isGateway`): puts the result's gateway addresses on its side of the
/// bridge, pushing each thing it makes on the undo stack.
pub type GatewayStep<'a> =
    &'a dyn Fn(&mut Route, &Link, &[IpConfig], &mut Vec<Undo>) -> CniResult<()>;

/// The plugin's own check of the bridge (its uplink, say), run once the bridge is found.
pub type BridgeCheck<'a> = &'a dyn Fn(&mut Route, &Link) -> CniResult<()>;
