//! CHECK of the node's side (bridge, VTEP, flood list) and the pod's (router role, the port's MTU):
//! each drift reported as code 102 with what differs.

use super::*;
use crate::check::{check_node, check_pod};

/// A node as a unicast ADD left it.
fn added() -> Fake {
    let mut f = Fake::new();
    add(&mut f, &unicast()).unwrap();
    f
}

/// A change behind the plugin's back.
type Drift = fn(&mut Fake);

fn drift(f: &mut Fake) -> String {
    let (c, msg) = refused(check_node(f, &config(&unicast())));
    assert_eq!(c, code::CHECK_MISMATCH, "{msg}");
    msg
}

#[test]
fn a_node_as_add_left_it_passes_with_the_overlay_mtu() {
    let mut f = added();
    let before = f.model.clone();
    assert_eq!(check_node(&mut f, &config(&unicast())).unwrap(), 1450);
    assert!(
        f.changes().len() > 1,
        "the ADD's changes are still recorded"
    );
    assert_eq!(f.model, before, "CHECK changes nothing");
}

#[test]
fn each_drift_of_the_node_is_named() {
    let cases: [(&str, Drift); 8] = [
        ("bridge gw0 does not exist", |f| {
            f.model.links.remove(&(Ns::Host, BRIDGE.into()));
        }),
        ("bridge gw0 has MTU 1500, the overlay needs 1450", |f| {
            f.host_mut(BRIDGE).mtu = 1500
        }),
        ("VTEP gw0-vx does not exist", |f| {
            f.model.links.remove(&(Ns::Host, VTEP.into()));
        }),
        ("VTEP gw0-vx has vni 7 but this config says \"vni\": 42", |f| {
            f.model.vxlan.get_mut(VTEP).unwrap().vni = 7
        }),
        ("VTEP gw0-vx is not a port of bridge gw0", |f| {
            f.host_mut(VTEP).controller = None
        }),
        ("bridge gw0 or VTEP gw0-vx is down", |f| {
            f.host_mut(VTEP).up = false
        }),
        ("VTEP gw0-vx has MTU 1400, the overlay needs 1450", |f| {
            f.host_mut(VTEP).mtu = 1400
        }),
        (
            "VTEP gw0-vx floods to {192.168.0.2}, the config's peers need {192.168.0.2, 192.168.0.3}",
            |f| {
                let vt = f.host(VTEP).index;
                f.model.fdb.insert(vt, vec!["192.168.0.2".parse().unwrap()]);
            },
        ),
    ];
    for (want, change) in cases {
        let mut f = added();
        change(&mut f);
        assert_eq!(drift(&mut f), want);
    }
}

#[test]
fn a_vanished_underlay_is_a_mismatch_naming_the_field() {
    let mut f = added();
    f.model.routes.retain(|(n, _)| *n != Ns::Host);
    assert_eq!(
        drift(&mut f),
        "this node has no IPv4 default route to take the VXLAN underlay device from; set \"underlayDevice\""
    );
}

#[test]
fn the_pod_side_checks_the_router_then_the_port_at_the_clamped_mtu() {
    let v = conf(json!({"group": "239.1.1.1", "role": "router"}));
    let mut f = Fake::new();
    f.attached = AddResult {
        ips: vec![ipc("10.1.0.5/24")],
        ..Default::default()
    };
    let prev = add(&mut f, &v).unwrap();
    f.model
        .links
        .get_mut(&(Ns::Pod, crate::fake::POD_PRIMARY.into()))
        .unwrap()
        .mtu = 1400;
    let (req, cfg) = (request(&v), config(&v));
    check_pod(&mut f, &req, &cfg, &prev, 1450).unwrap();
    assert_eq!(f.calls.last().unwrap(), "check_port mtu 1400");
    // Forwarding turned off behind the plugin's back.
    f.model
        .sysctls
        .insert((Ns::Pod, "net/ipv4/ip_forward".into()), "0".into());
    assert_eq!(
        refused(check_pod(&mut f, &req, &cfg, &prev, 1450)),
        (
            code::CHECK_MISMATCH,
            "forwarding is off in the router pod (net.ipv4.ip_forward = 0)".to_string()
        )
    );
}
