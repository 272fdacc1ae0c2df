//! The network configuration on stdin: the fields every plugin shares, and typed field readers that
//! turn a wrong type (such as `"true"` for a boolean) into an error naming the field and the fix.

use crate::error::{CniError, CniResult};
use crate::result::AddResult;
use crate::version::Version;
use serde_json::{Map, Value};

/// One `(containerID, ifname)` pair from `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttachmentRef {
    /// The container ID.
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
}

/// The shared part of a plugin configuration; the whole object stays in `raw` for plugin fields.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// The configuration's `cniVersion`: results and errors are written in it.
    pub version: Version,
    /// `name`: the network name.
    pub name: String,
    /// `type`: the plugin binary name.
    pub plugin_type: String,
    /// `runtimeConfig` (an empty object when absent).
    pub runtime_config: Map<String, Value>,
    /// `args.cni` (an empty object when absent).
    pub args_cni: Map<String, Value>,
    /// `prevResult`, converted to the current result type.
    pub prev_result: Option<AddResult>,
    /// `cni.dev/valid-attachments` (or the older `cni.dev/attachments`), for GC.
    pub valid_attachments: Option<Vec<AttachmentRef>>,
    /// The whole configuration object.
    pub raw: Map<String, Value>,
}

impl NetConf {
    /// Parses stdin bytes. Broken JSON is code 6, an unknown version code 1, a missing name or type code 7.
    pub fn parse(bytes: &[u8]) -> CniResult<NetConf> {
        let raw = parse_object(bytes)?;
        let version = version_of(&raw)?;
        let name = required_str(&raw, "name")?;
        validate_network_name(&name)?;
        let plugin_type = required_str(&raw, "type")?;
        let runtime_config = object_field(&raw, "runtimeConfig")?;
        let args_cni = match raw.get("args") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(a)) => object_field(a, "cni").map_err(|e| prefix(e, "args."))?,
            Some(_) => return Err(CniError::config("field \"args\" must be a JSON object")),
        };
        let prev_result = match raw.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => Some(AddResult::parse(v, version).map_err(|e| prefix(e, "prevResult: "))?),
        };
        let valid_attachments = parse_attachments(&raw)?;
        Ok(NetConf {
            version,
            name,
            plugin_type,
            runtime_config,
            args_cni,
            prev_result,
            valid_attachments,
            raw,
        })
    }

    /// Reads an optional boolean field of the configuration.
    pub fn bool_field(&self, field: &str) -> CniResult<Option<bool>> {
        opt_bool(&self.raw, field)
    }

    /// Reads an optional string field of the configuration.
    pub fn str_field(&self, field: &str) -> CniResult<Option<String>> {
        opt_str(&self.raw, field)
    }
}

/// Checks a network name as the spec defines it (code 7 otherwise): an ASCII letter or digit, then
/// ASCII letters, digits, `_`, `.`, `-`. The name keys stored state and shows up in admin output, so a
/// newline or a `/` in it must never get that far.
pub fn validate_network_name(name: &str) -> CniResult<()> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok_first && ok_rest {
        return Ok(());
    }
    Err(CniError::config(format!(
        "field \"name\" {name:?} is not a valid network name: it must start with an ASCII letter or digit and hold only ASCII letters, digits, '_', '.' and '-'"
    )))
}

/// Parses bytes as one JSON object (code 6 otherwise).
pub fn parse_object(bytes: &[u8]) -> CniResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CniError::decode(
            "network configuration on stdin must be a JSON object",
        )),
        Err(e) => {
            Err(CniError::decode("network configuration on stdin is not valid JSON").caused_by(e))
        }
    }
}

/// Reads `cniVersion` from a config object (absent means 0.1.0, as libcni reads it).
pub fn version_of(raw: &Map<String, Value>) -> CniResult<Version> {
    match raw.get("cniVersion") {
        None => Version::parse(""),
        Some(Value::String(s)) => Version::parse(s),
        Some(_) => Err(CniError::decode(
            "field \"cniVersion\" must be a string such as \"1.0.0\"",
        )),
    }
}

/// Reads an optional boolean; a string such as `"true"` is a clear error, not silently false.
pub fn opt_bool(obj: &Map<String, Value>, field: &str) -> CniResult<Option<bool>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => Err(CniError::config(format!(
            "field {field:?} must be a JSON boolean: write {field:?}: {} without quotes, not the string {s:?}",
            if s.eq_ignore_ascii_case("true") { "true" } else { "false" }
        ))),
        Some(other) => Err(CniError::config(format!("field {field:?} must be a JSON boolean (true or false), not {other}"))),
    }
}

/// Reads an optional string field.
pub fn opt_str(obj: &Map<String, Value>, field: &str) -> CniResult<Option<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::config(format!(
            "field {field:?} must be a string, not {other}"
        ))),
    }
}

/// Reads an optional unsigned integer field no larger than `max`.
pub fn opt_u64(obj: &Map<String, Value>, field: &str, max: u64) -> CniResult<Option<u64>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            _ => Err(CniError::config(format!(
                "field {field:?} must be a whole number from 0 to {max}, not {v}"
            ))),
        },
    }
}

/// Reads an optional array of strings.
pub fn opt_str_list(obj: &Map<String, Value>, field: &str) -> CniResult<Vec<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    CniError::config(format!("{field}[{i}] must be a string, not {v}"))
                })
            })
            .collect(),
        Some(other) => Err(CniError::config(format!(
            "field {field:?} must be an array of strings, not {other}"
        ))),
    }
}

fn required_str(obj: &Map<String, Value>, field: &str) -> CniResult<String> {
    match opt_str(obj, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(CniError::config(format!(
            "field {field:?} is required in the network configuration"
        ))),
    }
}

fn object_field(obj: &Map<String, Value>, field: &str) -> CniResult<Map<String, Value>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(CniError::config(format!(
            "field {field:?} must be a JSON object"
        ))),
    }
}

fn prefix(mut e: CniError, p: &str) -> CniError {
    e.msg = format!("{p}{}", e.msg);
    e
}

fn parse_attachments(raw: &Map<String, Value>) -> CniResult<Option<Vec<AttachmentRef>>> {
    let (key, list) = match (
        raw.get("cni.dev/valid-attachments"),
        raw.get("cni.dev/attachments"),
    ) {
        (Some(v), _) => ("cni.dev/valid-attachments", v),
        (None, Some(v)) => ("cni.dev/attachments", v),
        (None, None) => return Ok(None),
    };
    let items = list
        .as_array()
        .ok_or_else(|| CniError::decode(format!("{key:?} must be an array")))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let get = |f: &str| item.get(f).and_then(Value::as_str).map(str::to_string);
            match (get("containerID"), get("ifname")) {
                (Some(container_id), Some(ifname)) => Ok(AttachmentRef {
                    container_id,
                    ifname,
                }),
                _ => Err(CniError::decode(format!(
                    "{key}[{i}] must have string fields containerID and ifname"
                ))),
            }
        })
        .collect::<CniResult<Vec<_>>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shared_fields() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"t","runtimeConfig":{"ips":["10.0.0.5/24"]},
               "args":{"cni":{"ips":["10.0.0.6"]}},
               "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"net1"}]}"#,
        )
        .unwrap();
        assert_eq!(c.version, Version::V1_1_0);
        assert_eq!(c.name, "n");
        assert_eq!(c.runtime_config["ips"][0], "10.0.0.5/24");
        assert_eq!(c.args_cni["ips"][0], "10.0.0.6");
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![AttachmentRef {
                container_id: "c1".into(),
                ifname: "net1".into()
            }]
        );
    }

    #[test]
    fn legacy_attachments_key() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/attachments":[]}"#,
        )
        .unwrap();
        assert_eq!(c.valid_attachments, Some(vec![]));
    }

    #[test]
    fn errors_have_spec_codes() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, 6);
        assert_eq!(NetConf::parse(b"[]").unwrap_err().code, 6);
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"t"}"#)
                .unwrap_err()
                .code,
            1
        );
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","type":"t"}"#).unwrap_err();
        assert_eq!((e.code, e.msg.contains("\"name\"")), (7, true));
    }

    #[test]
    fn network_names_follow_the_spec_charset() {
        for bad in [
            "a\nb", "-net", ".net", "_net", "net/1", "net 1", "n\u{e9}t", "net;1",
        ] {
            let conf = serde_json::json!({"cniVersion": "1.0.0", "name": bad, "type": "t"});
            let e = NetConf::parse(conf.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.code, 7, "{bad:?}");
            assert!(
                e.msg.contains("field \"name\"") && e.msg.contains("'_', '.' and '-'"),
                "{}",
                e.msg
            );
        }
        for good in ["n", "0net", "my_net.v1-2", "A"] {
            assert!(validate_network_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn string_booleans_are_errors() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"t","isGateway":"true","b":false}"#,
        )
        .unwrap();
        let e = c.bool_field("isGateway").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.contains("\"isGateway\": true without quotes"),
            "{}",
            e.msg
        );
        assert_eq!(c.bool_field("b").unwrap(), Some(false));
        assert_eq!(c.bool_field("absent").unwrap(), None);
    }
}
