//! CHECK of a port ADD made, and each drift it reports.

use super::*;

/// A port made by ADD with VLANs, spoof check and routes, and the CHECK request for it.
fn checked_port() -> (Fake, PortPlan, Request) {
    let mut f = Fake::new();
    f.ipam.ips = vec![ip("10.1.0.5/24", Some("10.1.0.1"))];
    let plan = PortPlan {
        vlan: 100,
        trunk: vec![(200, 201)],
        macspoofchk: true,
        is_default_gateway: true,
        mtu: Some(1400),
        ..ipam_plan()
    };
    let r = add(&mut f, &plan, &mut Vec::new()).unwrap();
    let mut req = request();
    req.env.command = Command::Check;
    req.conf.prev_result = Some(r);
    (f, plan, req)
}

fn check(f: &mut Fake, plan: &PortPlan, req: &Request) -> plumb_cni::CniResult<()> {
    crate::check::check_with(f, req, plan, None)
}

#[test]
fn check_passes_on_what_add_made_and_reads_in_order() {
    let (mut f, plan, req) = checked_port();
    let before = f.calls.len();
    check(&mut f, &plan, &req).unwrap();
    let ops: Vec<_> = f.calls[before..]
        .iter()
        .map(|c| c.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "get_pod_link",
            "get_pod_addresses",
            "get_pod_routes",
            "open_host",
            "get_host_link",
            "get_host_link",
            "get_port_vlans",
            "get_spoofcheck",
            "ipam_check",
        ]
    );
}

#[test]
fn check_reports_each_drift_as_a_mismatch() {
    type Drift = fn(&mut Fake);
    let v = veth();
    let cases: [(Drift, String); 7] = [
        (
            |f| f.model.pod_addrs.clear(),
            "container interface eth0 lacks 10.1.0.5/24".into(),
        ),
        (
            |f| f.model.pod_routes.clear(),
            "route to 0.0.0.0/0 via 10.1.0.1 is missing from container interface eth0".into(),
        ),
        (
            |f| f.model.pod.get_mut("eth0").unwrap().mac = Some([2, 9, 9, 9, 9, 9]),
            "container interface eth0 has MAC 02:09:09:09:09:09".into(),
        ),
        (
            |f| f.model.host.get_mut(&veth()).unwrap().controller = None,
            format!("host veth {v} is not a port of bridge br0"),
        ),
        (
            |f| f.model.host.get_mut(&veth()).unwrap().mtu = 1500,
            "host veth has MTU 1500, the config says 1400".into(),
        ),
        (
            |f| f.model.vlans.retain(|(_, vid), _| *vid != 201),
            format!("host veth {v} VLANs are"),
        ),
        (
            |f| f.model.chains.clear(),
            format!("the MAC spoof check of {v} is missing"),
        ),
    ];
    for (drift, want) in cases {
        let (mut f, plan, req) = checked_port();
        drift(&mut f);
        let e = check(&mut f, &plan, &req).unwrap_err();
        assert_eq!(e.code, code::CHECK_MISMATCH, "{want}: {e:?}");
        assert!(e.msg.contains(&want), "want {want:?} in {:?}", e.msg);
    }
    // The host veth gone, and the reservation gone (IPAM CHECK's answer is passed on).
    let (mut f, plan, req) = checked_port();
    f.model.host.remove(&v);
    let e = check(&mut f, &plan, &req).unwrap_err();
    assert_eq!(e.msg, format!("host veth {v} does not exist"));
    let (mut f, plan, req) = checked_port();
    f.model.reservations.clear();
    let e = check(&mut f, &plan, &req).unwrap_err();
    assert_eq!(e.msg, format!("no reservation of {CID}/{IFNAME}"));
}
