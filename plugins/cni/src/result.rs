//! Typed CNI ADD results and exact conversion between every spec version plumb speaks.
//!
//! [`AddResult`] holds the 1.1.0 shape. [`AddResult::parse`] reads any version's layout into it
//! and [`AddResult::to_json`] writes it in any version's layout. Fields a version does not define
//! are dropped only where the spec makes them optional; what an older layout cannot hold at all
//! (a second IPv4 address in 0.2.0, say) is refused with code 1 rather than silently lost.

use crate::error::{code, CniError, CniResult};
use crate::version::Version;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

// ---------------------------------------------------------------------------------------------
// Cidr
// ---------------------------------------------------------------------------------------------

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
fn family(addr: IpAddr) -> &'static str {
    family_name(addr.is_ipv4())
}

/// "IPv4" or "IPv6", for messages.
fn family_name(is_v4: bool) -> &'static str {
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

// ---------------------------------------------------------------------------------------------
// Result types
// ---------------------------------------------------------------------------------------------

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
fn has_v1_1_attributes(version: Version) -> bool {
    version >= Version::V1_1_0
}

/// Whether `version` writes `ips[].version` (0.3.0, 0.3.1, 0.4.0).
fn has_ip_version_field(version: Version) -> bool {
    !version.is_legacy_result() && version < Version::V1_0_0
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// A decode error (code 6) naming the JSON field path.
fn decode_error(path: &str, problem: impl fmt::Display) -> CniError {
    if path.is_empty() {
        CniError::decode(format!("result: {problem}"))
    } else {
        CniError::decode(format!("result field {path}: {problem}"))
    }
}

/// "a string", "a number", … for messages about wrong JSON types.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A wrong-type decode error.
fn type_error(path: &str, want: &str, found: &Value) -> CniError {
    decode_error(path, format!("expected {want}, found {}", json_kind(found)))
}

/// A JSON object being decoded, with its path for error messages.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    /// Wraps `value`, which must be an object.
    fn new(value: &'a Value, path: String) -> CniResult<Obj<'a>> {
        match value {
            Value::Object(map) => Ok(Obj { path, map }),
            other => Err(type_error(&path, "an object", other)),
        }
    }

    /// The path of `key` inside this object.
    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value under `key`; `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// An optional string field, borrowed.
    fn opt_str(&self, key: &str) -> CniResult<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(type_error(&self.path_of(key), "a string", other)),
        }
    }

    /// An optional string field; an empty string counts as absent, as in the Go reference.
    fn opt_string(&self, key: &str) -> CniResult<Option<String>> {
        let text = self.opt_str(key)?;
        Ok(text.filter(|s| !s.is_empty()).map(str::to_string))
    }

    /// A required string field.
    fn req_str(&self, key: &str) -> CniResult<&'a str> {
        self.opt_str(key)?
            .ok_or_else(|| decode_error(&self.path_of(key), "missing"))
    }

    /// An optional unsigned integer field that must fit `T`.
    fn opt_uint<T: TryFrom<u64>>(&self, key: &str) -> CniResult<Option<T>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let path = self.path_of(key);
        let n = value
            .as_u64()
            .ok_or_else(|| type_error(&path, "an unsigned integer", value))?;
        T::try_from(n)
            .map(Some)
            .map_err(|_| decode_error(&path, format!("{n} is out of range")))
    }

    /// An optional IP address field; an empty string counts as absent.
    fn opt_ip(&self, key: &str) -> CniResult<Option<IpAddr>> {
        match self.opt_str(key)? {
            None | Some("") => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                decode_error(&self.path_of(key), format!("{text:?} is not an IP address"))
            }),
        }
    }

    /// A required CIDR field.
    fn cidr(&self, key: &str) -> CniResult<Cidr> {
        let text = self.req_str(key)?;
        text.parse()
            .map_err(|e: CidrError| decode_error(&self.path_of(key), e))
    }

    /// An optional array field; absent means empty.
    fn array(&self, key: &str) -> CniResult<&'a [Value]> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(type_error(&self.path_of(key), "an array", other)),
        }
    }

    /// An optional array of objects; absent means empty.
    fn objects(&self, key: &str) -> CniResult<Vec<Obj<'a>>> {
        let path = self.path_of(key);
        let items = self.array(key)?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| Obj::new(item, format!("{path}[{i}]")))
            .collect()
    }

    /// An optional array of strings; absent means empty.
    fn strings(&self, key: &str) -> CniResult<Vec<String>> {
        let path = self.path_of(key);
        let items = self.array(key)?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(type_error(&format!("{path}[{i}]"), "a string", other)),
            })
            .collect()
    }

    /// An optional object field.
    fn child(&self, key: &str) -> CniResult<Option<Obj<'a>>> {
        self.get(key)
            .map(|value| Obj::new(value, self.path_of(key)))
            .transpose()
    }
}

impl Interface {
    /// Decodes one `interfaces` entry; 1.1.0 attributes are read only for 1.1.0.
    fn decode(obj: &Obj, version: Version) -> CniResult<Interface> {
        let mut iface = Interface {
            name: obj.req_str("name")?.to_string(),
            mac: obj.opt_string("mac")?,
            sandbox: obj.opt_string("sandbox")?,
            ..Interface::default()
        };
        if has_v1_1_attributes(version) {
            iface.mtu = obj.opt_uint("mtu")?;
            iface.socket_path = obj.opt_string("socketPath")?;
            iface.pci_id = obj.opt_string("pciID")?;
        }
        Ok(iface)
    }
}

impl IpConfig {
    /// Decodes one `ips` entry; for 0.3.x/0.4.0 a `version` field must match the address.
    fn decode(obj: &Obj, version: Version) -> CniResult<IpConfig> {
        let address = obj.cidr("address")?;
        if has_ip_version_field(version) {
            check_ip_version(obj, address)?;
        }
        Ok(IpConfig {
            address,
            gateway: obj.opt_ip("gateway")?,
            interface: obj.opt_uint("interface")?,
        })
    }
}

/// Checks `ips[].version` ("4" or "6") against the address family; absence is tolerated.
fn check_ip_version(obj: &Obj, address: Cidr) -> CniResult<()> {
    let Some(found) = obj.opt_str("version")? else {
        return Ok(());
    };
    let expected = if address.is_ipv4() { "4" } else { "6" };
    if found == expected {
        return Ok(());
    }
    let problem = match found {
        "4" | "6" => format!(
            "\"{found}\" does not match address {address}, an {} address",
            family(address.addr)
        ),
        _ => format!("{found:?} is neither \"4\" nor \"6\""),
    };
    Err(decode_error(&obj.path_of("version"), problem))
}

impl Route {
    /// Decodes one route; 1.1.0 attributes are read only for 1.1.0.
    fn decode(obj: &Obj, version: Version) -> CniResult<Route> {
        let mut route = Route::new(obj.cidr("dst")?, obj.opt_ip("gw")?);
        if has_v1_1_attributes(version) {
            route.mtu = obj.opt_uint("mtu")?;
            route.advmss = obj.opt_uint("advmss")?;
            route.priority = obj.opt_uint("priority")?;
            route.table = obj.opt_uint("table")?;
            route.scope = obj.opt_uint("scope")?;
        }
        Ok(route)
    }
}

impl Dns {
    /// Decodes the optional `dns` object of `top`; absent means empty.
    fn decode(top: &Obj) -> CniResult<Dns> {
        let Some(obj) = top.child("dns")? else {
            return Ok(Dns::default());
        };
        Ok(Dns {
            nameservers: obj.strings("nameservers")?,
            domain: obj.opt_string("domain")?,
            search: obj.strings("search")?,
            options: obj.strings("options")?,
        })
    }
}

/// Decodes every entry of the array `key` with `decode`.
fn decode_list<T>(
    top: &Obj,
    key: &str,
    version: Version,
    decode: fn(&Obj, Version) -> CniResult<T>,
) -> CniResult<Vec<T>> {
    top.objects(key)?
        .iter()
        .map(|obj| decode(obj, version))
        .collect()
}

/// Decodes the 0.3.0-and-later layout: `interfaces`, `ips`, `routes`, `dns`.
fn decode_current(top: &Obj, version: Version) -> CniResult<AddResult> {
    Ok(AddResult {
        interfaces: decode_list(top, "interfaces", version, Interface::decode)?,
        ips: decode_list(top, "ips", version, IpConfig::decode)?,
        routes: decode_list(top, "routes", version, Route::decode)?,
        dns: Dns::decode(top)?,
    })
}

/// Decodes the 0.1.0/0.2.0 layout: `ip4` then `ip6`, their routes appended in that order.
fn decode_legacy(top: &Obj, version: Version) -> CniResult<AddResult> {
    let mut result = AddResult {
        dns: Dns::decode(top)?,
        ..AddResult::default()
    };
    for (key, is_v4) in [("ip4", true), ("ip6", false)] {
        let Some(obj) = top.child(key)? else {
            continue;
        };
        let address = obj.cidr("ip")?;
        if address.is_ipv4() != is_v4 {
            let problem = format!("{address} is not an {} address", family_name(is_v4));
            return Err(decode_error(&obj.path_of("ip"), problem));
        }
        result.ips.push(IpConfig {
            address,
            gateway: obj.opt_ip("gateway")?,
            interface: None,
        });
        result
            .routes
            .extend(decode_list(&obj, "routes", version, Route::decode)?);
    }
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Inserts `value` under `key` when present.
fn put_opt<T: Into<Value>>(map: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        map.insert(key.to_string(), value.into());
    }
}

/// Inserts a string under `key` when present and not empty.
fn put_str(map: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    let value = value.as_deref().filter(|s| !s.is_empty());
    put_opt(map, key, value);
}

/// Inserts an array under `key` when it has items.
fn put_list(map: &mut Map<String, Value>, key: &str, items: Vec<Value>) {
    if !items.is_empty() {
        map.insert(key.to_string(), Value::Array(items));
    }
}

/// An array of strings as JSON.
fn string_list(items: &[String]) -> Vec<Value> {
    items.iter().cloned().map(Value::String).collect()
}

impl Interface {
    /// This interface in `version`'s layout.
    fn encode(&self, version: Version) -> Value {
        let mut map = Map::new();
        map.insert("name".into(), self.name.clone().into());
        put_str(&mut map, "mac", &self.mac);
        put_str(&mut map, "sandbox", &self.sandbox);
        if has_v1_1_attributes(version) {
            put_opt(&mut map, "mtu", self.mtu);
            put_str(&mut map, "socketPath", &self.socket_path);
            put_str(&mut map, "pciID", &self.pci_id);
        }
        Value::Object(map)
    }
}

impl IpConfig {
    /// This address in `version`'s layout (0.3.0 and later).
    fn encode(&self, version: Version) -> Value {
        let mut map = Map::new();
        if has_ip_version_field(version) {
            let family = if self.address.is_ipv4() { "4" } else { "6" };
            map.insert("version".into(), family.into());
        }
        map.insert("address".into(), self.address.to_string().into());
        put_opt(&mut map, "gateway", self.gateway.map(|g| g.to_string()));
        put_opt(&mut map, "interface", self.interface);
        Value::Object(map)
    }
}

impl Route {
    /// This route in `version`'s layout.
    fn encode(&self, version: Version) -> Value {
        let mut map = Map::new();
        map.insert("dst".into(), self.dst.to_string().into());
        put_opt(&mut map, "gw", self.gw.map(|g| g.to_string()));
        if has_v1_1_attributes(version) {
            put_opt(&mut map, "mtu", self.mtu);
            put_opt(&mut map, "advmss", self.advmss);
            put_opt(&mut map, "priority", self.priority);
            put_opt(&mut map, "table", self.table);
            put_opt(&mut map, "scope", self.scope);
        }
        Value::Object(map)
    }
}

impl Dns {
    /// The `dns` object (the same in every version).
    fn encode(&self) -> Value {
        let mut map = Map::new();
        put_list(&mut map, "nameservers", string_list(&self.nameservers));
        put_str(&mut map, "domain", &self.domain);
        put_list(&mut map, "search", string_list(&self.search));
        put_list(&mut map, "options", string_list(&self.options));
        Value::Object(map)
    }
}

/// An incompatible-version error (code 1).
fn unrepresentable(msg: String) -> CniError {
    CniError::new(code::INCOMPATIBLE_VERSION, msg)
}

impl AddResult {
    /// Parses a result (a prevResult, a delegated plugin's stdout) written in `version`'s layout.
    ///
    /// Wrong types and bad addresses are code 6 with the field path in the message; unknown
    /// fields, including those newer than `version`, are ignored; empty strings count as absent.
    pub fn parse(v: &Value, version: Version) -> CniResult<AddResult> {
        let top = Obj::new(v, String::new())?;
        if version.is_legacy_result() {
            decode_legacy(&top, version)
        } else {
            decode_current(&top, version)
        }
    }

    /// Parses a result in the layout its own `cniVersion` names (missing means 0.1.0).
    pub fn parse_any(v: &Value) -> CniResult<AddResult> {
        let top = Obj::new(v, String::new())?;
        let version = Version::parse(top.opt_str("cniVersion")?.unwrap_or(""))?;
        AddResult::parse(v, version)
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

    /// The 0.3.0-and-later layout, without `cniVersion`.
    fn encode_current(&self, version: Version) -> Map<String, Value> {
        let mut map = Map::new();
        let interfaces = self.interfaces.iter().map(|i| i.encode(version));
        put_list(&mut map, "interfaces", interfaces.collect());
        let ips = self.ips.iter().map(|ip| ip.encode(version));
        put_list(&mut map, "ips", ips.collect());
        let routes = self.routes.iter().map(|r| r.encode(version));
        put_list(&mut map, "routes", routes.collect());
        self.put_dns(&mut map);
        map
    }

    /// The 0.1.0/0.2.0 layout, without `cniVersion`.
    fn encode_legacy(&self, version: Version) -> CniResult<Map<String, Value>> {
        let mut map = Map::new();
        for (key, is_v4) in [("ip4", true), ("ip6", false)] {
            put_opt(&mut map, key, self.legacy_ip(version, is_v4)?);
        }
        self.check_legacy_routes(version)?;
        self.put_dns(&mut map);
        Ok(map)
    }

    /// The `ip4` (or `ip6`) object: the family's one address and the routes of that family.
    fn legacy_ip(&self, version: Version, is_v4: bool) -> CniResult<Option<Value>> {
        let of_family = |cidr: &Cidr| cidr.is_ipv4() == is_v4;
        let ips: Vec<&IpConfig> = self
            .ips
            .iter()
            .filter(|ip| of_family(&ip.address))
            .collect();
        let ip = match ips.as_slice() {
            [] => return Ok(None),
            [ip] => ip,
            _ => {
                return Err(unrepresentable(format!(
                    "a {version} result holds one {} address; this result has {}",
                    family_name(is_v4),
                    ips.len()
                )))
            }
        };
        let mut map = Map::new();
        map.insert("ip".into(), ip.address.to_string().into());
        put_opt(&mut map, "gateway", ip.gateway.map(|g| g.to_string()));
        let routes = self.routes.iter().filter(|r| of_family(&r.dst));
        put_list(
            &mut map,
            "routes",
            routes.map(|r| r.encode(version)).collect(),
        );
        Ok(Some(Value::Object(map)))
    }

    /// Refuses a route whose family has no address: 0.1.0/0.2.0 routes live beside one.
    fn check_legacy_routes(&self, version: Version) -> CniResult<()> {
        for route in &self.routes {
            let is_v4 = route.dst.is_ipv4();
            if !self.ips.iter().any(|ip| ip.address.is_ipv4() == is_v4) {
                let fam = family_name(is_v4);
                return Err(unrepresentable(format!(
                    "a {version} result holds routes only beside an address of their family; \
                     route {} is {fam} and this result has no {fam} address",
                    route.dst
                )));
            }
        }
        Ok(())
    }

    /// Inserts `dns` when it holds anything.
    fn put_dns(&self, map: &mut Map<String, Value>) {
        if !self.dns.is_empty() {
            map.insert("dns".into(), self.dns.encode());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A dual-stack result using every 1.1.0 field.
    fn full_result() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:0a:00:00:05".into()),
                    mtu: Some(1450),
                    sandbox: Some("/var/run/netns/c1".into()),
                    socket_path: Some("/run/vhost.sock".into()),
                    pci_id: Some("0000:00:1f.6".into()),
                },
                Interface {
                    name: "veth1".into(),
                    ..Interface::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: cidr("10.0.0.5/24"),
                    gateway: Some(ip("10.0.0.1")),
                    interface: Some(0),
                },
                IpConfig {
                    address: cidr("2001:db8::5/64"),
                    gateway: Some(ip("2001:db8::1")),
                    interface: Some(0),
                },
            ],
            routes: vec![
                Route {
                    mtu: Some(1400),
                    advmss: Some(1360),
                    priority: Some(10),
                    table: Some(100),
                    scope: Some(0),
                    ..Route::new(cidr("0.0.0.0/0"), Some(ip("10.0.0.1")))
                },
                Route::new(cidr("::/0"), None),
            ],
            dns: Dns {
                nameservers: vec!["10.0.0.53".into()],
                domain: Some("cluster.local".into()),
                search: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            },
        }
    }

    /// What `full_result` keeps once written in `version` (interfaces and attributes dropped).
    fn representable(version: Version) -> AddResult {
        let mut r = full_result();
        if !has_v1_1_attributes(version) {
            for iface in &mut r.interfaces {
                (iface.mtu, iface.socket_path, iface.pci_id) = (None, None, None);
            }
            for route in &mut r.routes {
                *route = Route::new(route.dst, route.gw);
            }
        }
        if version.is_legacy_result() {
            r = r.ipam_form();
        }
        r
    }

    #[test]
    fn round_trips_every_version() {
        for version in crate::version::SUPPORTED {
            let expected = representable(version);
            let json = full_result().to_json(version).unwrap();
            assert_eq!(json["cniVersion"], version.as_str());
            assert_eq!(
                AddResult::parse(&json, version).unwrap(),
                expected,
                "{version}"
            );
            assert_eq!(AddResult::parse_any(&json).unwrap(), expected, "{version}");
            assert_eq!(expected.to_json(version).unwrap(), json, "{version}");
        }
    }

    #[test]
    fn writes_1_1_0_exactly() {
        let json = full_result().to_json(Version::V1_1_0).unwrap();
        assert_eq!(
            json,
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "eth0", "mac": "0a:58:0a:00:00:05", "mtu": 1450,
                     "sandbox": "/var/run/netns/c1", "socketPath": "/run/vhost.sock",
                     "pciID": "0000:00:1f.6"},
                    {"name": "veth1"}
                ],
                "ips": [
                    {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0},
                    {"address": "2001:db8::5/64", "gateway": "2001:db8::1", "interface": 0}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1400, "advmss": 1360,
                     "priority": 10, "table": 100, "scope": 0},
                    {"dst": "::/0"}
                ],
                "dns": {"nameservers": ["10.0.0.53"], "domain": "cluster.local",
                        "search": ["svc.cluster.local"], "options": ["ndots:5"]}
            })
        );
    }

    #[test]
    fn drops_1_1_0_attributes_in_1_0_0() {
        let json = full_result().to_json(Version::V1_0_0).unwrap();
        assert_eq!(
            json["interfaces"][0],
            json!({"name": "eth0", "mac": "0a:58:0a:00:00:05", "sandbox": "/var/run/netns/c1"})
        );
        assert_eq!(
            json["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "::/0"}])
        );
        assert!(json["ips"][0].get("version").is_none());
    }

    #[test]
    fn parse_1_0_0_ignores_1_1_0_attributes() {
        let json = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mtu": 9000, "pciID": "x"}],
            "routes": [{"dst": "0.0.0.0/0", "table": 5}],
            "somethingNew": true
        });
        let r = AddResult::parse_any(&json).unwrap();
        assert_eq!(r.interfaces[0].mtu, None);
        assert_eq!(r.interfaces[0].pci_id, None);
        assert_eq!(r.routes, vec![Route::new(cidr("0.0.0.0/0"), None)]);
    }

    #[test]
    fn writes_0_4_0_with_ip_versions() {
        let json = full_result().to_json(Version::V0_4_0).unwrap();
        assert_eq!(
            json["ips"],
            json!([
                {"version": "4", "address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0},
                {"version": "6", "address": "2001:db8::5/64", "gateway": "2001:db8::1",
                 "interface": 0}
            ])
        );
    }

    #[test]
    fn converts_dual_stack_1_0_0_to_0_2_0() {
        let current = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": "0a:58:0a:00:00:05", "sandbox": "/ns"}],
            "ips": [
                {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0},
                {"address": "2001:db8::5/64", "gateway": "2001:db8::1", "interface": 0}
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.0.0.1"},
                {"dst": "::/0"},
                {"dst": "192.168.0.0/16"}
            ],
            "dns": {"nameservers": ["10.0.0.53"]}
        });
        let r = AddResult::parse_any(&current).unwrap();
        assert_eq!(
            r.to_json(Version::V0_2_0).unwrap(),
            json!({
                "cniVersion": "0.2.0",
                "ip4": {
                    "ip": "10.0.0.5/24",
                    "gateway": "10.0.0.1",
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "192.168.0.0/16"}]
                },
                "ip6": {"ip": "2001:db8::5/64", "gateway": "2001:db8::1", "routes": [{"dst": "::/0"}]},
                "dns": {"nameservers": ["10.0.0.53"]}
            })
        );
    }

    #[test]
    fn refuses_two_ipv4_addresses_in_0_2_0() {
        let mut r = full_result();
        r.ips.push(IpConfig {
            address: cidr("10.0.1.5/24"),
            gateway: None,
            interface: None,
        });
        let err = r.to_json(Version::V0_2_0).unwrap_err();
        assert_eq!(err.code, code::INCOMPATIBLE_VERSION);
        assert_eq!(
            err.msg,
            "a 0.2.0 result holds one IPv4 address; this result has 2"
        );
    }

    #[test]
    fn refuses_route_without_address_of_its_family_in_0_1_0() {
        let mut r = full_result();
        r.ips.truncate(1);
        let err = r.to_json(Version::V0_1_0).unwrap_err();
        assert_eq!(err.code, code::INCOMPATIBLE_VERSION);
        assert_eq!(
            err.msg,
            "a 0.1.0 result holds routes only beside an address of their family; \
             route ::/0 is IPv6 and this result has no IPv6 address"
        );
    }

    #[test]
    fn rejects_mismatched_ip_version_in_0_3_1() {
        let json = json!({
            "cniVersion": "0.3.1",
            "ips": [
                {"version": "4", "address": "10.0.0.5/24"},
                {"version": "4", "address": "2001:db8::5/64"}
            ]
        });
        let err = AddResult::parse_any(&json).unwrap_err();
        assert_eq!(err.code, code::DECODE_FAILURE);
        assert_eq!(
            err.msg,
            "result field ips[1].version: \"4\" does not match address 2001:db8::5/64, \
             an IPv6 address"
        );
    }

    #[test]
    fn rejects_unknown_ip_version_but_tolerates_missing_one() {
        let bad = json!({"ips": [{"version": 4, "address": "10.0.0.5/24"}]});
        let err = AddResult::parse(&bad, Version::V0_3_0).unwrap_err();
        assert_eq!(
            err.msg,
            "result field ips[0].version: expected a string, found a number"
        );
        let bad = json!({"ips": [{"version": "5", "address": "10.0.0.5/24"}]});
        let err = AddResult::parse(&bad, Version::V0_4_0).unwrap_err();
        assert_eq!(
            err.msg,
            "result field ips[0].version: \"5\" is neither \"4\" nor \"6\""
        );
        let missing = json!({"ips": [{"address": "10.0.0.5/24"}]});
        assert!(AddResult::parse(&missing, Version::V0_4_0).is_ok());
    }

    #[test]
    fn converts_0_2_0_prev_result_to_current() {
        let prev = json!({
            "cniVersion": "0.2.0",
            "ip4": {
                "ip": "10.1.0.7/16",
                "gateway": "10.1.0.1",
                "routes": [{"dst": "0.0.0.0/0"}]
            },
            "ip6": {"ip": "fd00::7/64", "routes": [{"dst": "fd01::/64", "gw": "fd00::1"}]},
            "dns": {"nameservers": ["10.1.0.10"], "search": ["example.org"]}
        });
        let r = AddResult::parse_any(&prev).unwrap();
        assert_eq!(
            r.to_json(Version::LATEST).unwrap(),
            json!({
                "cniVersion": "1.1.0",
                "ips": [
                    {"address": "10.1.0.7/16", "gateway": "10.1.0.1"},
                    {"address": "fd00::7/64"}
                ],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd01::/64", "gw": "fd00::1"}],
                "dns": {"nameservers": ["10.1.0.10"], "search": ["example.org"]}
            })
        );
    }

    #[test]
    fn rejects_ip6_address_in_ip4_object() {
        let json = json!({"ip4": {"ip": "fd00::7/64"}});
        let err = AddResult::parse(&json, Version::V0_1_0).unwrap_err();
        assert_eq!(
            err.msg,
            "result field ip4.ip: fd00::7/64 is not an IPv4 address"
        );
    }

    #[test]
    fn preserves_interface_index() {
        let json = json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "br0"}, {"name": "veth0"}, {"name": "eth0", "sandbox": "/ns"}],
            "ips": [{"version": "4", "address": "10.0.0.5/24", "interface": 2}]
        });
        let r = AddResult::parse_any(&json).unwrap();
        assert_eq!(r.ips[0].interface, Some(2));
        let out = r.to_json(Version::V1_1_0).unwrap();
        assert_eq!(out["ips"][0]["interface"], 2);
        assert_eq!(AddResult::parse_any(&out).unwrap(), r);
    }

    #[test]
    fn bad_cidr_error_names_the_field() {
        let json = json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": "10.0.0.5/24"}, {"address": "10.0.0.6/33"}]
        });
        let err = AddResult::parse_any(&json).unwrap_err();
        assert_eq!(err.code, code::DECODE_FAILURE);
        assert_eq!(
            err.msg,
            "result field ips[1].address: \"10.0.0.6/33\" is not a CIDR: \
             prefix 33 exceeds 32, the longest for IPv4"
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let cases = [
            (
                json!({"routes": [{"dst": "::/0", "gw": 7}]}),
                "result field routes[0].gw: expected a string, found a number",
            ),
            (
                json!({"interfaces": [{}]}),
                "result field interfaces[0].name: missing",
            ),
            (
                json!({"ips": {}}),
                "result field ips: expected an array, found an object",
            ),
            (
                json!({"ips": [{"address": "10.0.0.5/24", "interface": -1}]}),
                "result field ips[0].interface: expected an unsigned integer, found a number",
            ),
            (
                json!({"routes": [{"dst": "::/0", "scope": 256}]}),
                "result field routes[0].scope: 256 is out of range",
            ),
            (
                json!({"dns": {"search": ["a", 1]}}),
                "result field dns.search[1]: expected a string, found a number",
            ),
            (
                json!({"ips": [{"address": "10.0.0.5/24", "gateway": "nope"}]}),
                "result field ips[0].gateway: \"nope\" is not an IP address",
            ),
            (json!([]), "result: expected an object, found an array"),
        ];
        for (json, msg) in cases {
            let err = AddResult::parse(&json, Version::V1_1_0).unwrap_err();
            assert_eq!(err.code, code::DECODE_FAILURE);
            assert_eq!(err.msg, msg);
        }
    }

    #[test]
    fn parse_any_rejects_unknown_version() {
        let err = AddResult::parse_any(&json!({"cniVersion": "9.9.9"})).unwrap_err();
        assert_eq!(err.code, code::INCOMPATIBLE_VERSION);
        let err = AddResult::parse_any(&json!({"cniVersion": 1})).unwrap_err();
        assert_eq!(err.code, code::DECODE_FAILURE);
    }

    #[test]
    fn omits_empty_fields() {
        let r = AddResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some(String::new()),
                ..Interface::default()
            }],
            ..AddResult::default()
        };
        assert_eq!(
            r.to_json(Version::V1_1_0).unwrap(),
            json!({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0"}]})
        );
        assert_eq!(
            AddResult::default().to_json(Version::V0_2_0).unwrap(),
            json!({"cniVersion": "0.2.0"})
        );
    }

    #[test]
    fn null_and_empty_strings_count_as_absent() {
        let json = json!({
            "interfaces": [{"name": "eth0", "mac": "", "sandbox": null}],
            "ips": [{"address": "10.0.0.5/24", "gateway": ""}],
            "dns": null
        });
        let r = AddResult::parse(&json, Version::V1_0_0).unwrap();
        assert_eq!(
            r.interfaces[0],
            Interface {
                name: "eth0".into(),
                ..Interface::default()
            }
        );
        assert_eq!(r.ips[0].gateway, None);
        assert!(r.dns.is_empty());
    }

    #[test]
    fn ipam_form_clears_interfaces() {
        let r = full_result().ipam_form();
        assert!(r.interfaces.is_empty());
        assert!(r.ips.iter().all(|ip| ip.interface.is_none()));
        assert_eq!(r.routes, full_result().routes);
    }

    #[test]
    fn cidr_parses_and_prints() {
        let c = cidr("10.0.0.5/24");
        assert_eq!((c.addr, c.prefix), (ip("10.0.0.5"), 24));
        assert_eq!(c.to_string(), "10.0.0.5/24");
        assert_eq!(cidr("2001:DB8::5/64").to_string(), "2001:db8::5/64");
        assert!(c.is_ipv4());
        assert!(!cidr("::/0").is_ipv4());
    }

    #[test]
    fn cidr_errors_quote_the_input() {
        let err = |s: &str| s.parse::<Cidr>().unwrap_err().to_string();
        assert_eq!(
            err("10.0.0.5"),
            "\"10.0.0.5\" is not a CIDR: it has no /prefix"
        );
        assert_eq!(
            err("10.0.0.300/24"),
            "\"10.0.0.300/24\" is not a CIDR: \"10.0.0.300\" is not an IP address"
        );
        assert_eq!(
            err("10.0.0.5/+4"),
            "\"10.0.0.5/+4\" is not a CIDR: \"+4\" is not a prefix length"
        );
        assert_eq!(
            err("::1/129"),
            "\"::1/129\" is not a CIDR: prefix 129 exceeds 128, the longest for IPv6"
        );
        assert_eq!(
            err("::1/999999"),
            "\"::1/999999\" is not a CIDR: prefix 999999 exceeds 128, the longest for IPv6"
        );
        assert_eq!(
            Cidr::new(ip("10.0.0.1"), 40).unwrap_err().to_string(),
            "\"10.0.0.1/40\" is not a CIDR: prefix 40 exceeds 32, the longest for IPv4"
        );
        assert_eq!(Cidr::new(ip("10.0.0.1"), 32).unwrap(), cidr("10.0.0.1/32"));
    }

    #[test]
    fn cidr_network_and_contains() {
        assert_eq!(cidr("10.0.0.5/24").network(), cidr("10.0.0.0/24"));
        assert_eq!(cidr("10.1.2.3/0").network(), cidr("0.0.0.0/0"));
        assert_eq!(cidr("10.1.2.3/32").network(), cidr("10.1.2.3/32"));
        assert_eq!(cidr("2001:db8::5/64").network(), cidr("2001:db8::/64"));
        assert_eq!(cidr("2001:db8::5/128").network(), cidr("2001:db8::5/128"));
        let net = cidr("10.0.0.5/24");
        assert!(net.contains(ip("10.0.0.255")));
        assert!(!net.contains(ip("10.0.1.0")));
        assert!(!net.contains(ip("::a00:5")));
        assert!(cidr("0.0.0.0/0").contains(ip("192.0.2.1")));
        assert!(!cidr("::/0").contains(ip("192.0.2.1")));
        assert!(cidr("fd00::/8").contains(ip("fdff::1")));
    }

    #[test]
    fn cidr_serde_uses_the_string_form() {
        let c = cidr("fd00::7/64");
        assert_eq!(serde_json::to_value(c).unwrap(), json!("fd00::7/64"));
        assert_eq!(
            serde_json::from_value::<Cidr>(json!("fd00::7/64")).unwrap(),
            c
        );
        let err = serde_json::from_value::<Cidr>(json!("fd00::7")).unwrap_err();
        assert!(err.to_string().contains("\"fd00::7\" is not a CIDR"));
    }
}
