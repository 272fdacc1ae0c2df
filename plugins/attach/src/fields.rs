//! Config fields every attaching plugin reads the same way: `ipam.type`, `dns`, the container MAC,
//! interface names given in the config, and booleans as the config gives them.

use plumb_cni::config::opt_str;
use plumb_cni::result::Dns;
use plumb_cni::{AddResult, CniError, CniResult, NetConf, Request, Version};
use serde_json::{Map, Value};

/// `ipam.type` if it is a non-empty string, for DEL (which must not fail on a config ADD refused).
pub fn lenient_ipam_type(raw: &Map<String, Value>) -> Option<String> {
    raw.get("ipam")
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// `dns` overrides the IPAM plugin's DNS only when it sets something, as in the reference plugin: a
/// `nameservers`, `search` or `options` list (even an empty one) or a non-empty `domain`. `"dns": {}`
/// keeps the IPAM plugin's DNS.
pub fn parse_dns(raw: &Map<String, Value>) -> CniResult<Option<Dns>> {
    let sets_something = |o: &Map<String, Value>| {
        ["nameservers", "search", "options"]
            .iter()
            .any(|k| !matches!(o.get(*k), None | Some(Value::Null)))
            || (!matches!(o.get("domain"), None | Some(Value::Null))
                && o.get("domain").and_then(Value::as_str) != Some(""))
    };
    match raw.get("dns") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) if !sets_something(o) => Ok(None),
        Some(v) => AddResult::parse(
            &serde_json::json!({"cniVersion": "1.1.0", "dns": v}),
            Version::V1_1_0,
        )
        .map(|r| Some(r.dns))
        .map_err(|e| CniError::config(format!("field \"dns\": {}", e.msg))),
    }
}

/// `ipam.type` when an `ipam` section is given; an `ipam` object without a type is an error.
pub fn ipam_type(raw: &Map<String, Value>) -> CniResult<Option<String>> {
    match raw.get("ipam") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) if m.is_empty() => Ok(None),
        Some(Value::Object(m)) => match opt_str(m, "type")? {
            Some(t) if !t.is_empty() => Ok(Some(t)),
            _ => Err(CniError::config("field \"ipam.type\" is required when \"ipam\" is given (e.g. \"plumb-ipam\", \"host-local\")")),
        },
        Some(_) => Err(CniError::config("field \"ipam\" must be a JSON object")),
    }
}

/// The container MAC, from runtimeConfig.mac, args.cni.mac or CNI_ARGS `MAC=` (in that order).
pub fn pick_mac(conf: &NetConf, cni_args_mac: Option<&str>) -> CniResult<Option<[u8; 6]>> {
    let from_rc =
        opt_str(&conf.runtime_config, "mac").map_err(|e| named(e, "runtimeConfig.mac"))?;
    let from_args = opt_str(&conf.args_cni, "mac").map_err(|e| named(e, "args.cni.mac"))?;
    let (source, text) = match (from_rc, from_args, cni_args_mac) {
        (Some(m), _, _) => ("runtimeConfig.mac", m),
        (None, Some(m), _) => ("args.cni.mac", m),
        (None, None, Some(m)) => ("CNI_ARGS MAC", m.to_string()),
        (None, None, None) => return Ok(None),
    };
    let mac = plumb_net::link::parse_mac(&text).ok_or_else(|| {
        CniError::config(format!(
            "{source} {text:?} is not a MAC address like 02:42:ac:11:00:02"
        ))
    })?;
    if mac[0] & 1 == 1 {
        return Err(CniError::config(format!("{source} {text} is a multicast address; a unicast MAC has the lowest bit of the first byte clear")));
    }
    Ok(Some(mac))
}

fn named(mut e: CniError, field: &str) -> CniError {
    e.msg = format!("{field}: {}", e.msg);
    e
}

/// Checks an interface name given in the config: 1-15 bytes, no `/`, `:` or whitespace.
pub fn validate_ifname(field: &str, name: &str) -> CniResult<()> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(CniError::config(format!(
            "{field} {name:?} is not a valid interface name: 1-15 bytes, no '/', ':' or whitespace"
        )));
    }
    Ok(())
}

/// A boolean field as the config gives it (`None` when absent or null; the config reader has already
/// refused any other type).
pub fn given_bool(req: &Request, field: &str) -> Option<bool> {
    req.conf.raw.get(field).and_then(Value::as_bool)
}
