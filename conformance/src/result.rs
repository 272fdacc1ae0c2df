//! Reading a plugin's ADD result (JSON), as the bridge-style plugins lay it out: interfaces
//! [bridge, host veth, container, ...], addresses of the container.

use serde_json::Value;

/// The first address of the result, without its prefix length.
pub fn first_address(result: &Value) -> String {
    let a = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"));
    a.split('/').next().unwrap().to_string()
}

/// The host veth's name: the result's second interface.
pub fn host_veth(result: &Value) -> String {
    result["interfaces"][1]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no host veth in {result}"))
        .to_string()
}
