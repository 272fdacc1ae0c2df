//! [`Cidr`]: an address with its prefix length, as CNI results and configs write it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address with a prefix length, as CNI writes it: `10.0.0.5/24`, `2001:db8::5/64`.
///
/// Host bits are kept: `10.0.0.5/24` is an address in its subnet, and [`Cidr::network`] gives
/// the subnet. [`Cidr::new`] and [`str::parse`] check that `prefix` fits the address family;
/// methods treat a longer prefix built by hand as the full length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The address, host bits included.
    pub addr: IpAddr,
    /// The prefix length: at most 32 for IPv4, 128 for IPv6.
    pub prefix: u8,
}

/// Why a string or an address/prefix pair is not a [`Cidr`]; the message quotes the bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError {
    input: String,
    reason: String,
}

impl Cidr {
    /// A CIDR from an address and a prefix length, checked against the address family.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(CidrError {
                input: format!("{addr}/{prefix}"),
                reason: format!(
                    "prefix {prefix} exceeds {max}, the longest for {}",
                    family(addr)
                ),
            });
        }
        Ok(Cidr { addr, prefix })
    }

    /// Whether the address is IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The subnet: the same prefix with the host bits cleared (`10.0.0.5/24` → `10.0.0.0/24`).
    pub fn network(&self) -> Cidr {
        Cidr {
            addr: masked(self.addr, self.prefix),
            prefix: self.prefix,
        }
    }

    /// Whether `ip` lies in this subnet; an address of the other family never does.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4() && masked(ip, self.prefix) == masked(self.addr, self.prefix)
    }
}

/// The longest prefix the address's family allows.
fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// "IPv4" or "IPv6", for messages.
pub(super) fn family(addr: IpAddr) -> &'static str {
    family_name(addr.is_ipv4())
}

/// "IPv4" or "IPv6", for messages.
pub(super) fn family_name(is_v4: bool) -> &'static str {
    if is_v4 {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// `addr` with every bit past the first `prefix` cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let keep = 32 - u32::from(prefix.min(32));
            let mask = u32::MAX.checked_shl(keep).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let keep = 128 - u32::from(prefix.min(128));
            let mask = u128::MAX.checked_shl(keep).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// Parses the digits after the slash, checked against the address family.
fn parse_prefix(text: &str, addr: IpAddr) -> Result<u8, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a prefix length"));
    }
    let max = max_prefix(addr);
    match text.parse::<u8>() {
        Ok(prefix) if prefix <= max => Ok(prefix),
        _ => Err(format!(
            "prefix {text} exceeds {max}, the longest for {}",
            family(addr)
        )),
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `address/prefix`; both parts are required.
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let fail = |reason: String| CidrError {
            input: s.to_string(),
            reason,
        };
        let (addr_text, prefix_text) = s
            .split_once('/')
            .ok_or_else(|| fail("it has no /prefix".to_string()))?;
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| fail(format!("{addr_text:?} is not an IP address")))?;
        let prefix = parse_prefix(prefix_text, addr).map_err(fail)?;
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a CIDR: {}", self.input, self.reason)
    }
}

impl std::error::Error for CidrError {}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
