//! CNI specification versions: which ones plumb speaks and what each allows.

use crate::error::{code, CniError, CniResult};
use std::fmt;

/// A CNI specification version plumb supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// 0.1.0: `ip4`/`ip6` results.
    V0_1_0,
    /// 0.2.0: `ip4`/`ip6` results.
    V0_2_0,
    /// 0.3.0: `interfaces`/`ips` with `ips[].version`.
    V0_3_0,
    /// 0.3.1: as 0.3.0.
    V0_3_1,
    /// 0.4.0: adds CHECK.
    V0_4_0,
    /// 1.0.0: drops `ips[].version`.
    V1_0_0,
    /// 1.1.0: adds STATUS, GC, interface/route attributes.
    V1_1_0,
}

/// Every supported version, oldest first, as VERSION reports them.
pub const SUPPORTED: [Version; 7] = [
    Version::V0_1_0,
    Version::V0_2_0,
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

impl Version {
    /// The newest version plumb speaks.
    pub const LATEST: Version = Version::V1_1_0;

    /// Parses a `cniVersion` string; an unknown one is error code 1. An empty string means 0.1.0, as libcni reads it.
    pub fn parse(s: &str) -> CniResult<Version> {
        Ok(match s {
            "" | "0.1.0" => Version::V0_1_0,
            "0.2.0" => Version::V0_2_0,
            "0.3.0" => Version::V0_3_0,
            "0.3.1" => Version::V0_3_1,
            "0.4.0" => Version::V0_4_0,
            "1.0.0" => Version::V1_0_0,
            "1.1.0" => Version::V1_1_0,
            other => {
                return Err(CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    format!(
                        "cniVersion {other:?} is not supported; use one of {}",
                        SUPPORTED
                            .iter()
                            .map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        })
    }

    /// The version as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Whether results of this version use the `ip4`/`ip6` layout (0.1.0, 0.2.0).
    pub fn is_legacy_result(self) -> bool {
        self <= Version::V0_2_0
    }

    /// Whether CHECK may be sent with a config of this version (0.4.0 and later).
    pub fn allows_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// Whether STATUS and GC may be sent with a config of this version (1.1.0 and later).
    pub fn allows_status_and_gc(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
