//! The result types in the 1.1.0 shape, and which attributes each version's layout defines.

use super::cidr::Cidr;
use crate::version::Version;
use std::net::IpAddr;

/// The result of ADD (also a prevResult) in the 1.1.0 shape, whatever version it came from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AddResult {
    /// Interfaces the plugin created or touched.
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    pub ips: Vec<IpConfig>,
    /// Routes installed.
    pub routes: Vec<Route>,
    /// DNS settings for the container.
    pub dns: Dns,
}

/// One entry of `interfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    /// Interface name (`name`).
    pub name: String,
    /// Hardware address (`mac`).
    pub mac: Option<String>,
    /// MTU (`mtu`, 1.1.0 only).
    pub mtu: Option<u32>,
    /// Network namespace path; `None` for host interfaces (`sandbox`).
    pub sandbox: Option<String>,
    /// vhost-user or similar socket path (`socketPath`, 1.1.0 only).
    pub socket_path: Option<String>,
    /// PCI address of a device (`pciID`, 1.1.0 only).
    pub pci_id: Option<String>,
}

/// One entry of `ips`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The address with its subnet's prefix (`address`).
    pub address: Cidr,
    /// Default gateway of the subnet (`gateway`).
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` of the interface holding the address (`interface`).
    pub interface: Option<usize>,
}

/// One entry of `routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination (`dst`).
    pub dst: Cidr,
    /// Next hop; `None` means the runtime's default gateway (`gw`).
    pub gw: Option<IpAddr>,
    /// Route MTU (`mtu`, 1.1.0 only).
    pub mtu: Option<u32>,
    /// Advertised MSS (`advmss`, 1.1.0 only).
    pub advmss: Option<u32>,
    /// Route priority (`priority`, 1.1.0 only).
    pub priority: Option<u32>,
    /// Routing table (`table`, 1.1.0 only).
    pub table: Option<u32>,
    /// Route scope (`scope`, 1.1.0 only).
    pub scope: Option<u8>,
}

/// The `dns` object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    /// Name server addresses, in priority order (`nameservers`).
    pub nameservers: Vec<String>,
    /// Local domain (`domain`).
    pub domain: Option<String>,
    /// Search domains (`search`).
    pub search: Vec<String>,
    /// Resolver options (`options`).
    pub options: Vec<String>,
}

impl Route {
    /// A route to `dst` via `gw` with no 1.1.0 attributes.
    pub fn new(dst: Cidr, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

impl Dns {
    /// Whether no DNS setting is present (the object is then omitted from JSON).
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// Whether `version` defines the 1.1.0 interface and route attributes.
pub(super) fn has_v1_1_attributes(version: Version) -> bool {
    version >= Version::V1_1_0
}

/// Whether `version` writes `ips[].version` (0.3.0, 0.3.1, 0.4.0).
pub(super) fn has_ip_version_field(version: Version) -> bool {
    !version.is_legacy_result() && version < Version::V1_0_0
}
