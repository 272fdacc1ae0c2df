//! Reading a result in any version's layout, with the JSON path of every bad field in the error.

use super::cidr::{family, family_name, Cidr, CidrError};
use super::types::{has_ip_version_field, has_v1_1_attributes};
use super::types::{AddResult, Dns, Interface, IpConfig, Route};
use crate::error::{CniError, CniResult};
use crate::version::Version;
use serde_json::{Map, Value};
use std::fmt;
use std::net::IpAddr;

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

/// Reads `v` in `version`'s layout.
pub(super) fn in_layout(v: &Value, version: Version) -> CniResult<AddResult> {
    let top = Obj::new(v, String::new())?;
    if version.is_legacy_result() {
        decode_legacy(&top, version)
    } else {
        decode_current(&top, version)
    }
}

/// The version a result names in its own `cniVersion` (missing means 0.1.0).
pub(super) fn own_version(v: &Value) -> CniResult<Version> {
    let top = Obj::new(v, String::new())?;
    Version::parse(top.opt_str("cniVersion")?.unwrap_or(""))
}
