//! The uplink: refused states, the per-VLAN and one-bridge layouts attached (made, joined, VLANs
//! added) or found as they are, their undo, DEL's release of unused VLANs, and CHECK's drift.

use super::*;
use crate::uplink::{check, ensure, release_vlans, verify};
use fake::link;
use plumb_cni::code;
use plumb_net::addr::RouteEntry;
use plumb_net::link::Link;
use plumb_net::vlan::Target;

/// A host with the NIC `up0` (index 2, up) and bridge `br0` (index 3, up, VLAN filtering).
fn host() -> (Fake, Link, Link) {
    let mut f = Fake::new();
    let mut up = link(2, "up0", "veth");
    up.up = true;
    let mut br = link(3, "br0", "bridge");
    (br.up, br.vlan_filtering) = (true, Some(true));
    f.with(up.clone());
    f.with(br.clone());
    (f, up, br)
}

fn per_vlan() -> BridgeConfig {
    cfg(json!({"uplink": "up0", "vlan": 2003}))
}

fn trunk() -> BridgeConfig {
    cfg(
        json!({"uplink": "up0", "vlanFiltering": true, "vlanTrunk": [{"minID": 10, "maxID": 12}], "vlan": 20}),
    )
}

#[test]
fn an_uplink_that_cannot_be_a_port_is_refused_before_anything_changes() {
    let (mut f, _, _) = host();
    f.model.links.remove("up0");
    let e = verify(&mut f, &per_vlan()).unwrap_err();
    assert_err(
        &e,
        code::INVALID_CONFIG,
        "field \"uplink\": this node has no interface up0; name the node's trunked NIC",
    );

    let (mut f, _, _) = host();
    f.with(link(2, "up0", "bridge"));
    let e = verify(&mut f, &per_vlan()).unwrap_err();
    assert_err(
        &e,
        code::INVALID_CONFIG,
        "field \"uplink\": up0 is a bridge; name the NIC (or bond) the bridge should reach",
    );

    let (mut f, _, _) = host();
    f.model.addrs.insert((2, "192.0.2.10".parse().unwrap(), 24));
    f.model.routes.push(RouteEntry {
        dst: "0.0.0.0".parse().unwrap(),
        prefix: 0,
        gw: None,
        oif: Some(2),
    });
    let e = verify(&mut f, &trunk()).unwrap_err();
    assert!(e.msg.starts_with("refusing to make up0 a bridge port: it holds the address(es) 192.0.2.10/24 and the default route of this node"), "{}", e.msg);
    assert_eq!(e.code, code::INVALID_CONFIG);

    let (mut f, _, _) = host();
    let other = f.with(link(9, "br9", "bridge"));
    let up = f.get("up0").clone();
    f.set_controller(&up, &other).unwrap();
    let e = verify(&mut f, &trunk()).unwrap_err();
    assert_err(&e, code::INVALID_CONFIG, "up0 is already a port of br9; plumb never moves an interface to another bridge: use \"bridge\": \"br9\", or release it first (ip link set up0 nomaster)");

    let (mut f, _, _) = host();
    let mut sub = link(7, "up0.2003", "vlan");
    (sub.parent, sub.vlan_id) = (Some(2), Some(2004));
    f.with(sub);
    let e = verify(&mut f, &per_vlan()).unwrap_err();
    assert_err(&e, code::INVALID_CONFIG, "up0.2003 carries VLAN 2004, the config needs VLAN 2003; plumb does not change an interface's VLAN: remove it or correct \"vlan\"");
    assert!(
        f.changes().iter().all(|c| c.starts_with("set_controller")),
        "{:?}",
        f.calls
    );
}

#[test]
fn per_vlan_layout_makes_marks_and_joins_the_vlan_interface_then_takes_it_back() {
    let (mut f, up, br) = host();
    let pristine = f.model.clone();
    let mut undo = Vec::new();
    ensure(&mut f, &per_vlan(), &up, &br, true, &mut undo).unwrap();
    let sub = f.get("up0.2003").clone();
    assert_eq!(
        f.changes(),
        vec![
            "set_alias br0 plumb-uplink:up0",
            "create_vlan up0.2003 on up0 id 2003",
            "set_alias up0.2003 plumb-uplink:up0",
            "set_controller up0.2003 br0",
            "set_up up0.2003",
        ]
    );
    assert_eq!(
        (sub.controller, sub.up, sub.vlan_id),
        (Some(3), true, Some(2003))
    );
    let labels: Vec<_> = undo.iter().map(Undo::label).collect();
    assert_eq!(labels, ["uplink vlan interface", "uplink port"]);
    assert!(rollback(&mut f, undo).is_empty());
    // The bridge's mark is its own ADD's (a created bridge goes as a whole).
    f.model.links.get_mut("br0").unwrap().alias = None;
    assert_eq!(f.model, pristine);
}

#[test]
fn per_vlan_pieces_already_there_are_only_verified() {
    let (mut f, up, br) = host();
    ensure(&mut f, &per_vlan(), &up, &br, false, &mut Vec::new()).unwrap();
    f.calls.clear();
    let mut undo = Vec::new();
    ensure(&mut f, &per_vlan(), &up, &br, false, &mut undo).unwrap();
    assert!(f.changes().is_empty(), "{:?}", f.calls);
    assert!(undo.is_empty());
}

#[test]
fn trunk_layout_joins_the_uplink_without_vlan_1_and_adds_only_missing_vlans() {
    let (mut f, up, br) = host();
    let pristine = f.model.clone();
    let mut undo = Vec::new();
    ensure(&mut f, &trunk(), &up, &br, false, &mut undo).unwrap();
    assert_eq!(
        f.changes(),
        vec![
            "set_controller up0 br0",
            "vlan_remove up0 Port 1-1",
            "vlan_add up0 Port 10-12 pvid=false untagged=false",
            "vlan_add up0 Port 20-20 pvid=false untagged=false",
        ]
    );
    let vids: Vec<u16> = f
        .model
        .vlans
        .keys()
        .filter(|(i, _)| *i == 2)
        .map(|k| k.1)
        .collect();
    assert_eq!(vids, [10, 11, 12, 20]);
    // A second attachment with VLANs 12 and 13: only 13 is added, and only 13 is its to take back.
    let up = f.get("up0").clone();
    let c = cfg(
        json!({"uplink": "up0", "vlanFiltering": true, "vlanTrunk": [{"minID": 12, "maxID": 13}]}),
    );
    f.calls.clear();
    let mut second = Vec::new();
    ensure(&mut f, &c, &up, &br, false, &mut second).unwrap();
    assert_eq!(
        f.changes(),
        vec!["vlan_add up0 Port 13-13 pvid=false untagged=false"]
    );
    assert!(rollback(&mut f, second).is_empty());
    assert_eq!(f.model.vlans.keys().filter(|(i, _)| *i == 2).count(), 4);
    assert!(rollback(&mut f, undo).is_empty());
    assert_eq!(f.model, pristine);
}

#[test]
fn del_releases_from_the_uplink_only_vlans_no_other_port_carries() {
    let (mut f, up, br) = host();
    ensure(&mut f, &trunk(), &up, &br, false, &mut Vec::new()).unwrap();
    let port = f.with(link(40, "veth1", "veth"));
    f.set_controller(&port, &br).unwrap();
    f.vlan_add(&port, Target::Port, 11, 11, false, false)
        .unwrap();
    f.calls.clear();
    release_vlans(&mut f, "br0", "up0", &[(10, 12), (20, 20)]).unwrap();
    assert_eq!(
        f.changes(),
        vec![
            "vlan_remove up0 Port 10-10",
            "vlan_remove up0 Port 12-12",
            "vlan_remove up0 Port 20-20"
        ]
    );
    // An uplink that is no port of this bridge, or no bridge: untouched.
    let up = f.get("up0").clone();
    f.set_nomaster(&up).unwrap();
    f.calls.clear();
    release_vlans(&mut f, "br0", "up0", &[(11, 11)]).unwrap();
    release_vlans(&mut f, "gone0", "up0", &[(11, 11)]).unwrap();
    assert!(f.changes().is_empty());
}

#[test]
fn check_reports_each_drift_of_the_uplink_pieces() {
    let (mut f, up, br) = host();
    let c = per_vlan();
    ensure(&mut f, &c, &up, &br, false, &mut Vec::new()).unwrap();
    let now = f.get("br0").clone();
    check(&mut f, &c, &now).unwrap();
    let drift = |f: &mut Fake, want: &str| {
        let br = f.get("br0").clone();
        let e = check(f, &c, &br).unwrap_err();
        assert_err(&e, code::CHECK_MISMATCH, want);
    };
    f.model.links.get_mut("up0.2003").unwrap().up = false;
    drift(&mut f, "uplink VLAN interface up0.2003 is down");
    f.model.links.get_mut("up0.2003").unwrap().controller = None;
    drift(
        &mut f,
        "uplink VLAN interface up0.2003 is not a port of bridge br0",
    );
    f.model.links.remove("up0.2003");
    drift(
        &mut f,
        "uplink VLAN interface up0.2003 (VLAN 2003 on up0) is missing",
    );
    f.model.links.get_mut("up0").unwrap().up = false;
    drift(&mut f, "uplink up0 is down");
    f.model.links.remove("up0");
    drift(&mut f, "uplink up0 is missing");
    f.model.links.get_mut("br0").unwrap().up = false;
    drift(&mut f, "bridge br0 is not up");

    let (mut f, up, br) = host();
    let c = trunk();
    ensure(&mut f, &c, &up, &br, false, &mut Vec::new()).unwrap();
    check(&mut f, &c, &br).unwrap();
    let up = f.get("up0").clone();
    f.vlan_remove(&up, Target::Port, 11, 11).unwrap();
    let e = check(&mut f, &c, &br).unwrap_err();
    assert_err(
        &e,
        code::CHECK_MISMATCH,
        "uplink up0 does not carry VLAN 11 tagged",
    );
}
