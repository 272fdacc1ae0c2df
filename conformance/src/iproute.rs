//! Reading what iproute2's `-j` (JSON) output says.

use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Parses a command's stdout as JSON (empty output, as `ip -j` gives for nothing, is an empty array).
pub fn parse_json(out: &str) -> Value {
    if out.trim().is_empty() {
        return json!([]);
    }
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The `ifname`s of an `ip -j link` listing.
pub fn ifnames(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}
