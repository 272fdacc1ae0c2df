//! The overlay MTU from the underlay, and the pod's veth MTU clamped to its primary interface.

use super::*;
use crate::fake::default_route;
use crate::underlay::{overlay_mtu, require, veth_mtu};

fn set_underlay_mtu(f: &mut Fake, mtu: u32) {
    f.host_mut(UNDERLAY).mtu = mtu;
}

fn set_pod_primary_mtu(f: &mut Fake, mtu: u32) {
    f.model
        .links
        .get_mut(&(Ns::Pod, crate::fake::POD_PRIMARY.into()))
        .unwrap()
        .mtu = mtu;
}

#[test]
fn overlay_mtu_is_the_underlays_minus_the_vxlan_overhead_of_its_family() {
    let mut f = Fake::new();
    let v4 = config(&multicast());
    let v6 = config(&conf(json!({"group": "ff05::42"})));
    let u = f.host(UNDERLAY).clone();
    assert_eq!(overlay_mtu(&v4, &u).unwrap(), 1450);
    assert_eq!(overlay_mtu(&v6, &u).unwrap(), 1430);
    set_underlay_mtu(&mut f, 9000);
    assert_eq!(overlay_mtu(&v4, f.host(UNDERLAY)).unwrap(), 8950);
}

#[test]
fn a_fixed_mtu_may_not_exceed_what_the_underlay_allows() {
    let f = Fake::new();
    let u = f.host(UNDERLAY);
    let fixed = |m: u32| config(&conf(json!({"group": "239.1.1.1", "mtu": m})));
    assert_eq!(overlay_mtu(&fixed(1400), u).unwrap(), 1400);
    assert_eq!(overlay_mtu(&fixed(1450), u).unwrap(), 1450);
    assert_eq!(
        refused(overlay_mtu(&fixed(1451), u)),
        (
            code::INVALID_CONFIG,
            "field \"mtu\" 1451 is larger than 1450, the most the underlay allows (ens3 MTU 1500 minus 50 bytes of VXLAN over IPv4); use at most 1450 or \"auto\""
                .to_string()
        )
    );
    let mut tiny = u.clone();
    tiny.mtu = 100;
    assert_eq!(
        refused(overlay_mtu(&config(&multicast()), &tiny)),
        (
            code::INVALID_CONFIG,
            "underlay device ens3 has MTU 100, too small to carry VXLAN (50 bytes of overhead)"
                .to_string()
        )
    );
}

#[test]
fn the_underlay_is_the_named_device_or_the_default_routes() {
    let mut f = Fake::new();
    assert_eq!(
        require(&mut f, &config(&multicast())).unwrap().name,
        UNDERLAY
    );
    let other = f.add_host_link("ens4", "device");
    let named = conf(json!({"group": "239.1.1.1", "underlayDevice": "ens4"}));
    assert_eq!(require(&mut f, &config(&named)).unwrap(), other);
    let missing = conf(json!({"group": "239.1.1.1", "underlayDevice": "ens9"}));
    assert_eq!(
        refused(require(&mut f, &config(&missing))),
        (
            code::INVALID_CONFIG,
            "field \"underlayDevice\": ens9 does not exist on this node; name the device that carries VXLAN traffic between nodes (see `ip route get <peer>`)"
                .to_string()
        )
    );
    // An IPv6 underlay and only an IPv4 default route.
    let v6 = conf(json!({"group": "ff05::42"}));
    assert_eq!(
        refused(require(&mut f, &config(&v6))),
        (
            code::INVALID_CONFIG,
            "this node has no IPv6 default route to take the VXLAN underlay device from; set \"underlayDevice\""
                .to_string()
        )
    );
}

#[test]
fn veth_mtu_is_clamped_to_the_pods_primary_interface() {
    let mut f = Fake::new();
    set_pod_primary_mtu(&mut f, 1400);
    assert_eq!(veth_mtu(&mut f, 1450).unwrap(), 1400);
    set_pod_primary_mtu(&mut f, 9000);
    assert_eq!(veth_mtu(&mut f, 1450).unwrap(), 1450);
    // Only an IPv6 default route: its device counts.
    f.model.routes.retain(|(n, _)| *n != Ns::Pod);
    f.model.routes.push((Ns::Pod, default_route(true, 2)));
    set_pod_primary_mtu(&mut f, 1280);
    assert_eq!(veth_mtu(&mut f, 1450).unwrap(), 1280);
    // No default route at all: the overlay's.
    f.model.routes.retain(|(n, _)| *n != Ns::Pod);
    assert_eq!(veth_mtu(&mut f, 1450).unwrap(), 1450);
}

#[test]
fn add_puts_the_overlay_mtu_on_bridge_and_vtep_and_the_clamped_one_on_the_pod() {
    let mut f = Fake::new();
    set_underlay_mtu(&mut f, 9000);
    set_pod_primary_mtu(&mut f, 1500);
    add(&mut f, &multicast()).unwrap();
    let changes = f.changes();
    assert!(
        changes.contains(&"set_mtu gw0 8950".to_string()),
        "{changes:?}"
    );
    assert!(
        changes.contains(&"create_vxlan gw0-vx vni 42 mtu 8950".to_string()),
        "{changes:?}"
    );
    assert_eq!(changes.last().unwrap(), "attach gw0 mtu 1500");
    assert_eq!((f.host(BRIDGE).mtu, f.host(VTEP).mtu), (8950, 8950));
}
