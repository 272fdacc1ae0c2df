//! Writing a result in any version's layout: optional attributes a version lacks are dropped,
//! what a 0.1.0/0.2.0 layout cannot hold is refused (code 1).

use super::cidr::{family_name, Cidr};
use super::types::{has_ip_version_field, has_v1_1_attributes};
use super::types::{AddResult, Dns, Interface, IpConfig, Route};
use crate::error::{code, CniError, CniResult};
use crate::version::Version;
use serde_json::{Map, Value};

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
    /// The 0.3.0-and-later layout, without `cniVersion`.
    pub(super) fn encode_current(&self, version: Version) -> Map<String, Value> {
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
    pub(super) fn encode_legacy(&self, version: Version) -> CniResult<Map<String, Value>> {
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
