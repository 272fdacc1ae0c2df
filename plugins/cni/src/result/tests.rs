//! Round trips and refusals of every layout.

use super::types::has_v1_1_attributes;
use super::*;
use crate::error::code;
use crate::version::Version;
use serde_json::json;
use std::net::IpAddr;

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
