//! The ADD plan, call by call.

use super::*;

#[test]
fn plain_port_plan_in_order() {
    let mut f = Fake::new();
    f.ipam.ips = vec![ip("10.1.0.5/24", Some("10.1.0.1"))];
    let mut undo = Vec::new();
    let r = add(&mut f, &ipam_plan(), &mut undo).unwrap();
    let v = veth();
    assert_eq!(
        f.calls,
        vec![
            format!("get_host_link {v}"),
            "get_pod_link eth0".into(),
            format!("create_veth {v}/eth0"),
            format!("get_host_link {v}"),
            format!("host_sysctl net/ipv6/conf/{v}/accept_ra=0"),
            format!("set_controller {v} br0"),
            format!("set_port_options {v} hairpin=None isolated=None"),
            "ipam_add plumb-ipam".into(),
            "get_host_link_by_index 1".into(),
            "get_pod_link eth0".into(),
            "pod_sysctls eth0 layer3=true dad=false v6=false".into(),
            "pod_add_address 11 10.1.0.5/24".into(),
            "pod_set_up eth0".into(),
            // Last: no rtnetlink request waits behind the kernel's IPv6 start on the pod side.
            format!("host_set_up {v}"),
        ]
    );
    let labels: Vec<_> = undo.iter().map(Undo::label).collect();
    assert_eq!(labels, vec!["host veth", "ipam"]);
    let host = &f.model.host[&v];
    assert_eq!((host.controller, host.up), (Some(1), true));
    assert!(f.model.pod["eth0"].up);
    assert_eq!(
        f.model.pod_addrs,
        BTreeSet::from([(11, "10.1.0.5".parse().unwrap(), 24)])
    );
    // The port keeps the bridge's default VLAN when the plan has none.
    assert_eq!(f.model.vlans.keys().collect::<Vec<_>>(), [&(10, 1)]);
    let names: Vec<_> = r.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, vec!["br0", v.as_str(), "eth0"]);
    assert_eq!(r.ips[0].interface, Some(2));
}

#[test]
fn an_existing_host_veth_is_refused_before_anything_is_made() {
    let mut f = Fake::new();
    f.model
        .host
        .insert(veth(), crate::fake::link(5, &veth(), "veth"));
    let before = f.model.clone();
    let mut undo = Vec::new();
    let e = add(&mut f, &ipam_plan(), &mut undo).unwrap_err();
    assert_eq!(e.code, code::INTERFACE_EXISTS);
    assert!(e.msg.contains("DEL this attachment"), "{}", e.msg);
    assert!(f.changes().is_empty() && undo.is_empty());
    assert_eq!(f.model, before);
}

#[test]
fn vlan_trunk_port_plan() {
    let mut f = Fake::new();
    let plan = PortPlan {
        bridge: "br0".into(),
        vlan: 100,
        trunk: vec![(200, 202), (300, 300)],
        hairpin: true,
        port_isolation: true,
        ..Default::default()
    };
    add(&mut f, &plan, &mut Vec::new()).unwrap();
    let v = veth();
    assert_eq!(
        f.changes(),
        vec![
            format!("create_veth {v}/eth0"),
            format!("host_sysctl net/ipv6/conf/{v}/accept_ra=0"),
            format!("set_controller {v} br0"),
            format!("set_port_options {v} hairpin=Some(true) isolated=Some(true)"),
            format!("vlan_remove {v} 1-1"),
            format!("vlan_add {v} 200-202 pvid=false untagged=false"),
            format!("vlan_add {v} 300-300 pvid=false untagged=false"),
            format!("vlan_add {v} 100-100 pvid=true untagged=true"),
            "pod_set_up eth0".into(),
            format!("host_set_up {v}"),
        ]
    );
    let vids: Vec<u16> = f.model.vlans.keys().map(|(_, v)| *v).collect();
    assert_eq!(vids, vec![100, 200, 201, 202, 300]);

    // preserveDefaultVlan (or access VLAN 1) keeps VLAN 1: no removal.
    for plan in [
        PortPlan {
            preserve_default_vlan: true,
            ..plan.clone()
        },
        PortPlan {
            vlan: 1,
            trunk: Vec::new(),
            ..plan.clone()
        },
    ] {
        let mut f = Fake::new();
        add(&mut f, &plan, &mut Vec::new()).unwrap();
        assert!(!f.ops().contains(&"vlan_remove".to_string()), "{plan:?}");
        assert!(f.model.vlans.contains_key(&(10, 1)), "{plan:?}");
    }
}

#[test]
fn macspoofchk_and_ipmasq_plan() {
    let mut f = Fake::new();
    f.ipam = dual_stack();
    let plan = PortPlan {
        macspoofchk: true,
        ip_masq: true,
        mac: Some([0x0a, 0x58, 0, 0, 0, 7]),
        ..ipam_plan()
    };
    let mut undo = Vec::new();
    add(&mut f, &plan, &mut undo).unwrap();
    assert_eq!(
        f.changes()[4..],
        [
            "ipam_add plumb-ipam",
            "pod_sysctls eth0 layer3=true dad=false v6=true",
            "pod_add_address 11 10.1.0.5/24",
            "pod_add_address 11 fd00:1::5/64",
            "pod_set_up eth0",
            "add_masquerade 10.1.0.5",
            "add_masquerade fd00:1::5",
            &format!("add_spoofcheck {} 0a:58:00:00:00:07", veth()),
            // The port comes up once the spoof check is there: no frame passes before it.
            &format!("host_set_up {}", veth()),
        ]
    );
    let labels: Vec<_> = undo.iter().map(Undo::label).collect();
    assert_eq!(labels, ["host veth", "ipam", "masquerade", "spoofcheck"]);
    let chain = naming::chain("net1", CID, IFNAME);
    assert_eq!(
        f.model.chains,
        BTreeSet::from([
            format!("masquerade-v4 {chain}"),
            format!("masquerade-v6 {chain}"),
            format!("spoofcheck {chain}"),
        ])
    );
}

#[test]
fn gateway_plan_puts_gateways_on_the_bridge_before_the_pod_and_routes_default() {
    let mut f = Fake::new();
    f.ipam = dual_stack();
    f.ipam.routes = vec![CniRoute {
        dst: "10.9.0.0/16".parse().unwrap(),
        gw: None,
        mtu: None,
        advmss: None,
        priority: None,
        scope: None,
        table: None,
    }];
    let plan = PortPlan {
        is_gateway: true,
        is_default_gateway: true,
        ip_masq: true,
        ..ipam_plan()
    };
    let mut undo = Vec::new();
    let r = add(&mut f, &plan, &mut undo).unwrap();
    let ops = f.ops();
    let pos = |op: &str| ops.iter().position(|o| o == op).unwrap();
    // The host-side gateway work comes before the pod is configured; the host end comes up last.
    assert!(pos("gateway") < pos("pod_sysctls") && pos("pod_set_up") < pos("add_masquerade"));
    assert_eq!(ops.last().map(String::as_str), Some("host_set_up"));
    let routes: Vec<_> = f
        .changes()
        .into_iter()
        .filter(|c| c.starts_with("pod_add_route"))
        .collect();
    assert_eq!(
        routes,
        [
            "pod_add_route 10.9.0.0/16 via 10.1.0.1",
            "pod_add_route 0.0.0.0/0 via 10.1.0.1",
            "pod_add_route ::/0 via fd00:1::1",
        ]
    );
    assert_eq!(r.routes.len(), 3);
    let labels: Vec<_> = undo.iter().map(Undo::label).collect();
    assert_eq!(
        labels,
        [
            "host veth",
            "ipam",
            "gateway address",
            "gateway address",
            "masquerade"
        ]
    );
    assert_eq!(
        f.model.host_addrs,
        BTreeSet::from([
            (1, "10.1.0.1".parse().unwrap(), 24),
            (1, "fd00:1::1".parse().unwrap(), 64),
        ])
    );
}

#[test]
fn is_gateway_without_ipam_gateways_is_refused_before_the_pod_is_touched() {
    let mut f = Fake::new();
    f.ipam.ips = vec![ip("10.1.0.5/24", None)];
    let plan = PortPlan {
        is_gateway: true,
        ..ipam_plan()
    };
    let e = add(&mut f, &plan, &mut Vec::new()).unwrap_err();
    assert!(e.msg.contains("gateway"), "{}", e.msg);
    assert!(
        !f.ops().iter().any(|o| o.starts_with("pod_")),
        "{:?}",
        f.ops()
    );
}

#[test]
fn a_plan_with_no_pod_work_after_it_ends_the_pod_session_before_the_port_comes_up() {
    let mut f = Fake::new();
    let plan = PortPlan {
        pod_work_ends: true,
        ..ipam_plan()
    };
    add(&mut f, &plan, &mut Vec::new()).unwrap();
    let ops = f.ops();
    assert_eq!(ops[ops.len() - 2..], ["end_pod_work", "host_set_up"]);
    // Without the flag (plumb-vxlan's router runs in the pod afterwards) the session stays.
    let mut f = Fake::new();
    add(&mut f, &ipam_plan(), &mut Vec::new()).unwrap();
    assert!(!f.ops().contains(&"end_pod_work".to_string()));
}
