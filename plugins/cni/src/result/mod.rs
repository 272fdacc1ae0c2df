//! Typed CNI ADD results and exact conversion between every spec version plumb speaks.
//!
//! [`AddResult`] holds the 1.1.0 shape. [`AddResult::parse`] reads any version's layout into it
//! and [`AddResult::to_json`] writes it in any version's layout. Fields a version does not define
//! are dropped only where the spec makes them optional; what an older layout cannot hold at all
//! (a second IPv4 address in 0.2.0, say) is refused with code 1 rather than silently lost.
//!
//! The layout readers live in `decode`, the writers in `encode`; [`Cidr`] in `cidr`.

mod cidr;
mod decode;
mod encode;
mod types;

pub use cidr::{Cidr, CidrError};
pub use types::{AddResult, Dns, Interface, IpConfig, Route};

use crate::error::CniResult;
use crate::version::Version;
use serde_json::Value;

impl AddResult {
    /// Parses a result (a prevResult, a delegated plugin's stdout) written in `version`'s layout.
    ///
    /// Wrong types and bad addresses are code 6 with the field path in the message; unknown
    /// fields, including those newer than `version`, are ignored; empty strings count as absent.
    pub fn parse(v: &Value, version: Version) -> CniResult<AddResult> {
        decode::in_layout(v, version)
    }

    /// Parses a result in the layout its own `cniVersion` names (missing means 0.1.0).
    pub fn parse_any(v: &Value) -> CniResult<AddResult> {
        AddResult::parse(v, decode::own_version(v)?)
    }

    /// Writes the result in `version`'s layout, with `cniVersion`, omitting empty fields.
    ///
    /// Attributes `version` does not define are dropped; a 0.1.0/0.2.0 result that would lose
    /// an address or a route is refused with code 1.
    pub fn to_json(&self, version: Version) -> CniResult<Value> {
        let mut map = if version.is_legacy_result() {
            self.encode_legacy(version)?
        } else {
            self.encode_current(version)
        };
        map.insert("cniVersion".into(), version.as_str().into());
        Ok(Value::Object(map))
    }

    /// The IPAM form of this result: no interfaces, and no interface index on addresses.
    pub fn ipam_form(&self) -> AddResult {
        let mut result = self.clone();
        result.interfaces.clear();
        for ip in &mut result.ips {
            ip.interface = None;
        }
        result
    }
}

#[cfg(test)]
mod tests;
