//! The bridge: created or adopted (with its settings enforced), a non-bridge by its name refused, a
//! bridge this ADD made removed again.

use super::*;
use crate::ports::{ensure_bridge, remove_created_bridge};
use fake::link;
use plumb_cni::code;

#[test]
fn a_missing_bridge_is_created_up_without_router_advertisements() {
    let mut f = Fake::new();
    let (br, created) = ensure_bridge(&mut f, &cfg(json!({"mtu": 9000}))).unwrap();
    assert!(created);
    assert_eq!(
        f.changes(),
        vec![
            "create_bridge br0 mtu=9000 vlan_filtering=false",
            "sysctl net/ipv6/conf/br0/accept_ra=0",
            "set_up br0",
        ]
    );
    assert_eq!(br, *f.get("br0"));
    assert!(br.up && br.mtu == 9000 && br.vlan_filtering == Some(false));
}

#[test]
fn a_bridge_for_vlans_is_created_filtering() {
    let mut f = Fake::new();
    let (br, created) = ensure_bridge(&mut f, &cfg(json!({"vlan": 100}))).unwrap();
    assert!(created);
    assert_eq!(f.changes()[0], "create_bridge br0 vlan_filtering=true");
    assert_eq!(br.vlan_filtering, Some(true));
}

#[test]
fn an_existing_bridge_is_adopted_and_given_what_the_config_needs() {
    let mut f = Fake::new();
    let mut old = link(3, "br0", "bridge");
    old.mtu = 1400;
    f.with(old);
    let (br, created) = ensure_bridge(
        &mut f,
        &cfg(json!({"vlan": 100, "promiscMode": true, "mtu": 9000})),
    )
    .unwrap();
    assert!(!created);
    // Its MTU is not the config's to change; VLAN filtering, promiscuous mode and up are.
    assert_eq!(
        f.changes(),
        vec![
            "set_vlan_filtering br0 true",
            "set_promisc br0 true",
            "sysctl net/ipv6/conf/br0/accept_ra=0",
            "set_up br0",
        ]
    );
    assert_eq!((br.index, br.mtu), (3, 1400));
    assert!(br.up && br.promisc && br.vlan_filtering == Some(true));
}

#[test]
fn a_bridge_already_as_needed_is_only_read() {
    let mut f = Fake::new();
    let mut old = link(3, "br0", "bridge");
    (old.up, old.vlan_filtering) = (true, Some(true));
    f.with(old.clone());
    let (br, created) = ensure_bridge(&mut f, &cfg(json!({"vlan": 100}))).unwrap();
    assert_eq!((br, created), (old, false));
    assert_eq!(f.changes(), vec!["sysctl net/ipv6/conf/br0/accept_ra=0"]);
}

#[test]
fn a_link_by_the_bridges_name_that_is_no_bridge_is_refused_untouched() {
    for (kind, what) in [(Some("veth"), "veth"), (None, "plain")] {
        let mut f = Fake::new();
        let mut l = link(3, "br0", "veth");
        l.kind = kind.map(str::to_string);
        f.with(l.clone());
        let e = ensure_bridge(&mut f, &cfg(json!({}))).unwrap_err();
        assert_err(
            &e,
            code::INVALID_CONFIG,
            &format!("field \"bridge\": br0 already exists as a {what} interface, not a bridge; choose another bridge name"),
        );
        assert!(f.changes().is_empty(), "{:?}", f.calls);
        assert_eq!(f.get("br0"), &l);
    }
}

#[test]
fn a_bridge_created_but_not_set_up_is_removed_before_the_error() {
    for (op, msg) in [
        ("set_up", "cannot bring the bridge up"),
        ("set_promisc", "cannot set the bridge promiscuous"),
    ] {
        let mut f = Fake::new();
        f.fail_on(op);
        let e = ensure_bridge(&mut f, &cfg(json!({"promiscMode": true}))).unwrap_err();
        assert_err(&e, code::IO_FAILURE, msg);
        assert!(f.model.links.is_empty(), "{op}: {:?}", f.model.links);
        assert_eq!(f.changes().last().unwrap(), "delete_link br0");
    }
}

#[test]
fn a_bridge_without_vlan_filtering_support_names_the_fields() {
    let mut f = Fake::new();
    f.fail_on("create_bridge");
    let e = ensure_bridge(&mut f, &cfg(json!({"vlanTrunk": [{"id": 5}]}))).unwrap_err();
    assert_err(&e, code::IO_FAILURE, "cannot create bridge br0 with vlan_filtering, which \"vlan\"/\"vlanTrunk\" need (does this kernel support bridge VLAN filtering?)");
    let mut f = Fake::new();
    f.with(link(3, "br0", "bridge"));
    f.fail_on("set_vlan_filtering");
    let e = ensure_bridge(&mut f, &cfg(json!({"vlan": 7}))).unwrap_err();
    assert_err(&e, code::IO_FAILURE, "cannot turn on vlan_filtering on bridge br0, which \"vlan\"/\"vlanTrunk\" need (does this kernel support bridge VLAN filtering?)");
    assert!(
        f.model.links.contains_key("br0"),
        "an adopted bridge is never removed"
    );
}

#[test]
fn a_failed_create_is_an_io_error_leaving_nothing() {
    let mut f = Fake::new();
    f.fail_on("create_bridge");
    let e = ensure_bridge(&mut f, &cfg(json!({}))).unwrap_err();
    assert_err(&e, code::IO_FAILURE, "cannot create the bridge");
    assert!(f.model.links.is_empty());
}

#[test]
fn the_created_bridge_goes_only_while_it_is_that_empty_bridge() {
    let mut f = Fake::new();
    let (br, _) = ensure_bridge(&mut f, &cfg(json!({}))).unwrap();
    // Another port joined meanwhile: kept.
    let port = f.with(link(40, "veth9", "veth"));
    f.set_controller(&port, &br).unwrap();
    remove_created_bridge(&mut f, &br).unwrap();
    assert!(f.model.links.contains_key("br0"));
    f.set_nomaster(&port).unwrap();
    remove_created_bridge(&mut f, &br).unwrap();
    assert!(!f.model.links.contains_key("br0"));
    // Gone already, or its index now another link's: nothing is deleted.
    remove_created_bridge(&mut f, &br).unwrap();
    let mut other = link(br.index, "eth7", "veth");
    other.index = br.index;
    f.with(other);
    f.calls.clear();
    remove_created_bridge(&mut f, &br).unwrap();
    assert!(f.changes().is_empty() && f.model.links.contains_key("eth7"));
}
