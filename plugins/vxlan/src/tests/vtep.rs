//! The node's bridge and VTEP: made on the first ADD, adopted when they match, refused when not.

use super::*;
use crate::fake::NODE_IP;

const NEVER_CHANGED: &str = "an existing VTEP is never changed under running pods: give this network another \"bridge\"/\"vtep\", or delete gw0-vx once no pod uses it";

#[test]
fn first_add_creates_the_bridge_and_the_vtep_at_the_overlay_mtu() {
    let mut f = Fake::new();
    let r = add(&mut f, &multicast()).unwrap();
    assert_eq!(
        f.changes(),
        [
            "create_bridge gw0",
            "set_mtu gw0 1450",
            "write_sysctl host net/ipv6/conf/gw0/accept_ra 0",
            "set_up gw0",
            "create_vxlan gw0-vx vni 42 mtu 1450",
            "set_controller gw0-vx gw0",
            "set_up gw0-vx",
            "attach gw0 mtu 1450",
        ]
    );
    let (br, vt) = (f.host(BRIDGE).clone(), f.host(VTEP).clone());
    assert!(br.up && vt.up);
    assert_eq!(
        (br.mtu, vt.mtu, vt.controller),
        (1450, 1450, Some(br.index))
    );
    let s = &f.model.vxlan[VTEP];
    assert_eq!(
        (s.vni, s.group, s.port, s.underlay, s.learning),
        (42, Some(ip("239.1.1.1")), 4789, Some(2), true)
    );
    // The VTEP is reported after the attach engine's interfaces.
    let last = r.interfaces.last().unwrap();
    assert_eq!((last.name.as_str(), last.mtu), (VTEP, Some(1450)));
}

#[test]
fn matching_bridge_and_vtep_are_adopted_without_being_recreated() {
    let mut f = Fake::new();
    node_with_vtep(&mut f, &multicast(), 1450);
    let before = f.model.clone();
    add(&mut f, &multicast()).unwrap();
    let ops = f.ops();
    assert!(
        !ops.iter()
            .any(|o| o == "create_bridge" || o == "create_vxlan" || o == "delete_link"),
        "{ops:?}"
    );
    // The bridge MTU is set explicitly every time; the VTEP, up and on the bridge, is left alone.
    assert_eq!(
        f.changes(),
        [
            "set_mtu gw0 1450",
            "write_sysctl host net/ipv6/conf/gw0/accept_ra 0",
            "attach gw0 mtu 1450",
        ]
    );
    assert_eq!(f.host(VTEP), &before.links[&(Ns::Host, VTEP.into())]);
}

#[test]
fn an_adopted_vtep_off_the_bridge_is_joined_to_it_and_brought_up() {
    let mut f = Fake::new();
    node_with_vtep(&mut f, &multicast(), 1400);
    let vt = f.host_mut(VTEP);
    (vt.controller, vt.up) = (None, false);
    add(&mut f, &multicast()).unwrap();
    assert_eq!(
        f.changes()[..5],
        [
            "set_mtu gw0 1450",
            "write_sysctl host net/ipv6/conf/gw0/accept_ra 0",
            "set_mtu gw0-vx 1450",
            "set_controller gw0-vx gw0",
            "set_up gw0-vx",
        ]
    );
}

/// A change to a VTEP's settings.
type Change = fn(&mut plumb_net::vxlan::VxlanSettings);

/// Each setting an existing VTEP may differ in, and the message ADD gives (code 7), with the model
/// left exactly as it was.
#[test]
fn a_vtep_with_other_settings_is_refused_with_the_difference_and_left_alone() {
    let cases: [(&str, Change, &str); 4] = [
        (
            "vni",
            |s| s.vni = 7,
            "vni 7 but this config says \"vni\": 42",
        ),
        (
            "port",
            |s| s.port = 8472,
            "UDP port 8472 but this config says \"port\": 4789",
        ),
        (
            "underlay",
            |s| s.underlay = Some(99),
            "underlay device index 99 but this config's underlay is ens3 (index 2)",
        ),
        (
            "group",
            |s| s.group = Some("239.9.9.9".parse().unwrap()),
            "multicast group 239.9.9.9 but this config says 239.1.1.1",
        ),
    ];
    for (what, change, diff) in cases {
        let mut f = Fake::new();
        node_with_vtep(&mut f, &multicast(), 1450);
        change(f.model.vxlan.get_mut(VTEP).unwrap());
        let before = f.model.clone();
        assert_eq!(
            refused(add(&mut f, &multicast())),
            (
                code::INVALID_CONFIG,
                format!("VTEP gw0-vx already exists with {diff}; {NEVER_CHANGED}")
            ),
            "{what}"
        );
        assert_eq!(f.model, before, "{what}");
        assert!(!f.ops().iter().any(|o| o == "attach"), "{what}");
    }
}

#[test]
fn a_mismatched_vtep_on_a_new_bridge_takes_back_only_the_bridge() {
    let mut f = Fake::new();
    f.add_host_link(VTEP, "vxlan");
    let underlay = f.host(UNDERLAY).clone();
    let mut s = wanted(&config(&multicast()), &underlay);
    s.vni = 7;
    f.model.vxlan.insert(VTEP.into(), s);
    let before = f.model.clone();
    let (c, msg) = refused(add(&mut f, &multicast()));
    assert_eq!(c, code::INVALID_CONFIG);
    assert!(
        msg.starts_with("VTEP gw0-vx already exists with vni 7"),
        "{msg}"
    );
    assert_eq!(f.changes().last().unwrap(), "delete_link gw0");
    assert_eq!(f.model, before);
}

#[test]
fn a_second_vtep_on_the_bridge_is_refused() {
    let mut f = Fake::new();
    node_with_vtep(&mut f, &multicast(), 1450);
    // This network names another VTEP for the same bridge.
    let other = conf(json!({"group": "239.1.1.1", "vtep": "other-vx", "vni": 43}));
    let before = f.model.clone();
    assert_eq!(
        refused(add(&mut f, &other)),
        (
            code::INVALID_CONFIG,
            "bridge gw0 already has VTEP gw0-vx as a port; set \"vtep\": \"gw0-vx\" or use another bridge"
                .to_string()
        )
    );
    assert_eq!(f.model, before);
    assert!(
        !f.ops().iter().any(|o| o == "create_vxlan"),
        "{:?}",
        f.calls
    );
}

#[test]
fn a_vtep_name_taken_by_another_kind_of_link_is_refused() {
    let mut f = Fake::new();
    f.add_host_link(VTEP, "dummy");
    let before = f.model.clone();
    assert_eq!(
        refused(add(&mut f, &multicast())),
        (
            code::INVALID_CONFIG,
            "field \"vtep\": gw0-vx already exists as a dummy interface, not a VXLAN device; choose another name"
                .to_string()
        )
    );
    assert_eq!(f.model, before, "the bridge this ADD made is gone again");
}

#[test]
fn a_vtep_whose_vni_and_port_another_device_holds_is_refused() {
    let mut f = Fake::new();
    let underlay = f.host(UNDERLAY).clone();
    f.add_host_link("old-vx", "vxlan");
    f.model
        .vxlan
        .insert("old-vx".into(), wanted(&config(&multicast()), &underlay));
    let before = f.model.clone();
    assert_eq!(
        refused(add(&mut f, &multicast())),
        (
            code::INVALID_CONFIG,
            "cannot create VTEP gw0-vx: the node already has a VXLAN device with vni 42 on UDP port 4789 (or the name is taken); use another vni, or remove that device"
                .to_string()
        )
    );
    assert_eq!(f.model, before);
}

#[test]
fn a_bridge_name_taken_by_another_kind_of_link_is_refused() {
    let mut f = Fake::new();
    f.add_host_link(BRIDGE, "dummy");
    let before = f.model.clone();
    assert_eq!(
        refused(add(&mut f, &multicast())),
        (
            code::INVALID_CONFIG,
            "field \"bridge\": gw0 already exists as a dummy interface, not a bridge; choose another bridge name"
                .to_string()
        )
    );
    assert_eq!(f.model, before);
}

#[test]
fn a_local_address_the_node_lacks_is_refused_before_anything_is_made() {
    let mut f = Fake::new();
    let v = conf(json!({"group": "239.1.1.1", "local": "192.168.0.77"}));
    assert_eq!(
        refused(add(&mut f, &v)),
        (
            code::INVALID_CONFIG,
            "field \"local\": 192.168.0.77 is not an address of this node; remove \"local\" or give an address the node has"
                .to_string()
        )
    );
    assert!(f.changes().is_empty(), "{:?}", f.calls);
    // The node's own address is accepted, and the VTEP gets it as its source.
    let v = conf(json!({"group": "239.1.1.1", "local": NODE_IP}));
    let mut f = Fake::new();
    add(&mut f, &v).unwrap();
    assert_eq!(f.model.vxlan[VTEP].local, Some(ip(NODE_IP)));
}
