//! `isGateway`: the gateway address added or adopted, what is in its way, the MAC pinned, forwarding,
//! the VLAN gateway interface made, reused and removed when unused, and each step's undo.

use super::*;
use crate::gateway::{ensure, remove_vlan_gateway_if_unused};
use fake::link;
use plumb_cni::code;
use plumb_net::vlan::Target;
use std::net::IpAddr;

/// A host with bridge `br0` (index 3, up, VLAN filtering) and its MAC before the port joined.
fn host() -> (Fake, plumb_net::link::Link) {
    let mut f = Fake::new();
    let mut br = link(3, "br0", "bridge");
    (br.up, br.vlan_filtering) = (true, Some(true));
    let br = f.with(br);
    (f, br)
}

fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A host whose bridge got its VLAN 100 gateway `br0.100` from an ADD of `plb0` (`isGateway`, `vlan:
/// 100`, gateway 10.1.0.1), with that ADD's undo stack.
fn with_vlan_gateway() -> (Fake, plumb_net::link::Link, Vec<Undo>) {
    let (mut f, br) = host();
    let c = cfg(json!({"isGateway": true, "vlan": 100}));
    let mut undo = Vec::new();
    let ips = [ip("10.1.0.5/24", "10.1.0.1")];
    ensure(&mut f, &c, &br, &ips, "plb0", &mut undo).unwrap();
    (f, br, undo)
}

/// Adds veth `name` (index `index`) as a port of `br` carrying VLAN `vid`, untagged PVID when `pvid`.
fn port_on_vlan(
    f: &mut Fake,
    br: &plumb_net::link::Link,
    index: u32,
    name: &str,
    vid: u16,
    pvid: bool,
) -> plumb_net::link::Link {
    let port = f.with(link(index, name, "veth"));
    f.set_controller(&port, br).unwrap();
    f.vlan_add(&port, Target::Port, vid, vid, pvid, pvid)
        .unwrap();
    port
}

#[test]
fn gateway_addresses_are_added_pinned_forwarded_and_each_on_the_undo_stack() {
    let (mut f, br) = host();
    let mut undo = Vec::new();
    let ips = [
        ip("10.1.0.5/24", "10.1.0.1"),
        ip("fd00:1::5/64", "fd00:1::1"),
    ];
    ensure(
        &mut f,
        &cfg(json!({"isGateway": true})),
        &br,
        &ips,
        "plb0",
        &mut undo,
    )
    .unwrap();
    assert_eq!(
        f.changes(),
        vec![
            "add_address 3 10.1.0.1/24",
            "set_mac br0 02:00:00:00:01:03",
            "add_address 3 fd00:1::1/64",
            "set_mac br0 02:00:00:00:01:03",
            "sysctl net/ipv4/ip_forward=1",
            "sysctl net/ipv6/conf/all/forwarding=1",
        ]
    );
    assert_eq!(f.model.forwarding, [Some(true), Some(true)]);
    let labels: Vec<_> = undo.iter().map(Undo::label).collect();
    assert_eq!(labels, ["gateway address", "gateway address"]);
    // The undo takes back exactly those two; forwarding, once on, stays on.
    assert!(rollback(&mut f, undo).is_empty());
    assert!(f.model.addrs.is_empty());
}

#[test]
fn a_gateway_address_already_there_is_adopted_and_never_undone() {
    let (mut f, br) = host();
    f.model.addrs.insert((3, a("10.1.0.1"), 24));
    f.model.forwarding[0] = Some(true);
    let mut undo = Vec::new();
    ensure(
        &mut f,
        &cfg(json!({"isGateway": true})),
        &br,
        &[ip("10.1.0.5/24", "10.1.0.1")],
        "plb0",
        &mut undo,
    )
    .unwrap();
    // The MAC is pinned all the same; forwarding already on is not written.
    assert_eq!(f.changes(), vec!["set_mac br0 02:00:00:00:01:03"]);
    assert!(undo.is_empty());
}

#[test]
fn another_address_in_the_way_is_refused_or_replaced_with_force_address() {
    let (mut f, br) = host();
    // Another IPv4 address, and an IPv6 one outside the gateway's subnet (not in the way).
    f.model.addrs.insert((3, a("10.9.0.1"), 16));
    f.model.addrs.insert((3, a("fd00:9::1"), 64));
    let ips = [
        ip("10.1.0.5/24", "10.1.0.1"),
        ip("fd00:1::5/64", "fd00:1::1"),
    ];
    let e = ensure(
        &mut f,
        &cfg(json!({"isGateway": true})),
        &br,
        &ips,
        "plb0",
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_err(&e, code::INVALID_CONFIG, "br0 already has 10.9.0.1/16, which is not the gateway address 10.1.0.1/24; set \"forceAddress\": true to replace it");
    assert!(f.changes().is_empty());

    let mut undo = Vec::new();
    let force = cfg(json!({"isGateway": true, "forceAddress": true}));
    ensure(&mut f, &force, &br, &ips, "plb0", &mut undo).unwrap();
    let have: Vec<_> = f.model.addrs.iter().copied().collect();
    assert_eq!(
        have,
        vec![
            (3, a("10.1.0.1"), 24),
            (3, a("fd00:1::1"), 64),
            (3, a("fd00:9::1"), 64)
        ]
    );
    assert!(f
        .changes()
        .contains(&"del_address 3 10.9.0.1/16".to_string()));
    // The replaced address is not the undo's to bring back; the added ones are its to remove.
    assert_eq!(undo.len(), 2);
}

#[test]
fn the_mac_pinned_is_the_one_before_the_port_joined_or_else_the_current_valid_one() {
    let (mut f, mut br) = host();
    br.mac = None;
    f.edit_mac("br0", [0x02, 0, 0, 0, 0, 0x42]);
    ensure(
        &mut f,
        &cfg(json!({"isGateway": true})),
        &br,
        &[ip("10.1.0.5/24", "10.1.0.1")],
        "plb0",
        &mut Vec::new(),
    )
    .unwrap();
    assert!(
        f.changes()
            .contains(&"set_mac br0 02:00:00:00:00:42".to_string()),
        "{:?}",
        f.calls
    );
    // A multicast MAC is never pinned.
    let (mut f, mut br) = host();
    br.mac = Some([0x01, 0, 0x5e, 0, 0, 1]);
    f.edit_mac("br0", [0x01, 0, 0x5e, 0, 0, 1]);
    ensure(
        &mut f,
        &cfg(json!({"isGateway": true})),
        &br,
        &[ip("10.1.0.5/24", "10.1.0.1")],
        "plb0",
        &mut Vec::new(),
    )
    .unwrap();
    assert!(
        !f.changes().iter().any(|c| c.starts_with("set_mac")),
        "{:?}",
        f.calls
    );
    // Pinning that fails fails ADD.
    let (mut f, br) = host();
    f.fail_on("set_mac");
    let e = ensure(
        &mut f,
        &cfg(json!({"isGateway": true})),
        &br,
        &[ip("10.1.0.5/24", "10.1.0.1")],
        "plb0",
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_err(&e, code::IO_FAILURE, "cannot pin the bridge MAC");
}

#[test]
fn a_vlan_gateway_is_created_on_the_bridge_and_taken_back() {
    let (mut f, br) = host();
    let pristine = f.model.clone();
    let mut undo = Vec::new();
    let c = cfg(json!({"isGateway": true, "vlan": 100}));
    ensure(
        &mut f,
        &c,
        &br,
        &[ip("10.1.0.5/24", "10.1.0.1")],
        "plb0",
        &mut undo,
    )
    .unwrap();
    let gw = f.get("br0.100").clone();
    assert_eq!(
        (gw.kind.as_deref(), gw.parent, gw.vlan_id, gw.up),
        (Some("vlan"), Some(3), Some(100), true)
    );
    assert_eq!(
        f.changes(),
        vec![
            "vlan_add br0 BridgeSelf 100-100 pvid=false untagged=false".to_string(),
            "create_vlan br0.100 on br0 id 100".into(),
            "set_up br0.100".into(),
            format!("add_address {} 10.1.0.1/24", gw.index),
            "sysctl net/ipv4/ip_forward=1".into(),
        ]
    );
    let labels: Vec<_> = undo.iter().map(Undo::label).collect();
    assert_eq!(labels, ["vlan gateway", "gateway address"]);
    assert!(rollback(&mut f, undo).is_empty());
    f.model.forwarding = pristine.forwarding;
    assert_eq!(f.model, pristine);
}

#[test]
fn an_existing_vlan_gateway_is_reused_and_a_non_vlan_by_its_name_refused() {
    let (mut f, br, _) = with_vlan_gateway();
    let c = cfg(json!({"isGateway": true, "vlan": 100}));
    f.calls.clear();
    let mut undo = Vec::new();
    ensure(
        &mut f,
        &c,
        &br,
        &[ip("10.1.0.6/24", "10.1.0.1")],
        "plb0",
        &mut undo,
    )
    .unwrap();
    assert!(f.changes().is_empty(), "{:?}", f.calls);
    assert!(undo.is_empty());

    let (mut f, br) = host();
    f.with(link(8, "br0.100", "dummy"));
    let e = ensure(
        &mut f,
        &c,
        &br,
        &[ip("10.1.0.5/24", "10.1.0.1")],
        "plb0",
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_err(
        &e,
        code::INVALID_CONFIG,
        "br0.100 exists and is not a VLAN interface; remove it or change \"bridge\"/\"vlan\"",
    );
    assert!(f.changes().is_empty());
}

#[test]
fn the_vlan_gateway_goes_only_when_no_port_carries_its_vlan() {
    let (mut f, br, _) = with_vlan_gateway();
    let port = port_on_vlan(&mut f, &br, 40, "veth1", 100, true);
    f.calls.clear();
    remove_vlan_gateway_if_unused(&mut f, "br0", 100, &[]).unwrap();
    assert!(f.changes().is_empty() && f.model.links.contains_key("br0.100"));
    // A port of another VLAN does not keep it.
    f.vlan_remove(&port, Target::Port, 100, 100).unwrap();
    f.vlan_add(&port, Target::Port, 200, 200, true, true)
        .unwrap();
    f.calls.clear();
    remove_vlan_gateway_if_unused(&mut f, "br0", 100, &[]).unwrap();
    assert_eq!(
        f.changes(),
        vec!["delete_link br0.100", "vlan_remove br0 BridgeSelf 100-100"]
    );
    assert!(!f.model.vlans.contains_key(&(3, 100)));
    // Bridge gone: nothing to do.
    f.model.links.remove("br0");
    f.calls.clear();
    remove_vlan_gateway_if_unused(&mut f, "br0", 100, &[]).unwrap();
    assert_eq!(f.calls, vec!["get_link br0"]);
}

#[test]
fn only_a_vlan_interface_by_the_gateways_name_is_removed() {
    let (mut f, _) = host();
    f.with(link(8, "br0.100", "dummy"));
    remove_vlan_gateway_if_unused(&mut f, "br0", 100, &[]).unwrap();
    assert!(f.model.links.contains_key("br0.100"));
    assert_eq!(f.changes(), vec!["vlan_remove br0 BridgeSelf 100-100"]);
}

#[test]
fn a_failed_adds_own_port_does_not_keep_the_vlan_gateway_another_pods_does() {
    for other_pod in [false, true] {
        let (mut f, br, undo) = with_vlan_gateway();
        // The ADD's own port carries VLAN 100; its undo runs after the gateway's.
        port_on_vlan(&mut f, &br, 40, "plb0", 100, true);
        if other_pod {
            port_on_vlan(&mut f, &br, 41, "plb1", 100, true);
        }
        assert!(rollback(&mut f, undo).is_empty());
        assert_eq!(
            f.model.links.contains_key("br0.100"),
            other_pod,
            "other pod on VLAN 100: {other_pod}"
        );
    }
}

#[test]
fn the_uplink_does_not_keep_the_vlan_gateway() {
    let (mut f, br, _) = with_vlan_gateway();
    port_on_vlan(&mut f, &br, 41, "up0", 100, false);
    remove_vlan_gateway_if_unused(&mut f, "br0", 100, &[]).unwrap();
    assert!(
        f.model.links.contains_key("br0.100"),
        "counted without ignore"
    );
    remove_vlan_gateway_if_unused(&mut f, "br0", 100, &["up0"]).unwrap();
    assert!(!f.model.links.contains_key("br0.100"));
}
