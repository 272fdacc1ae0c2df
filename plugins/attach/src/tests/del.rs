//! DEL: every step runs, one error names what failed.

use super::*;

#[test]
fn delete_host_veth_removes_only_this_attachments_veth() {
    // Present: the veth and its peer go.
    let mut f = Fake::new();
    add(&mut f, &ipam_plan(), &mut Vec::new()).unwrap();
    delete_host_veth_with(&mut f, CID, IFNAME).unwrap();
    assert!(f.model.pod.is_empty() && f.model.pod_addrs.is_empty());
    assert!(f.model.vlans.is_empty() && f.model.peers.is_empty());
    assert_eq!(f.model.host.keys().collect::<Vec<_>>(), ["br0"]);

    // Gone: success, nothing deleted.
    let mut f = Fake::new();
    delete_host_veth_with(&mut f, CID, IFNAME).unwrap();
    assert_eq!(f.changes(), Vec::<String>::new());

    // Something else by that name: left alone, said so.
    let mut f = Fake::new();
    f.model
        .host
        .insert(veth(), crate::fake::link(7, &veth(), "dummy"));
    let e = delete_host_veth_with(&mut f, CID, IFNAME).unwrap_err();
    assert_eq!(e.code, code::IO_FAILURE);
    assert!(
        e.msg
            .contains("is a dummy interface, not this attachment's veth"),
        "{}",
        e.msg
    );
    assert!(f.model.host.contains_key(&veth()));
}

/// The DEL sweep the plugins run: the engine's host-side steps, then IPAM.
fn del(f: &mut Fake, masquerade: bool) -> plumb_cni::CniResult<()> {
    let req = request();
    let mut sweep = crate::cleanup::Cleanup::new("plumb-test");
    crate::cleanup::del_port(&mut sweep, f, &req, masquerade);
    crate::cleanup::del_ipam(&mut sweep, f, &req, Some("plumb-ipam"));
    sweep.finish()
}

#[test]
fn del_undoes_a_full_add_and_leaves_the_model_as_before() {
    let mut f = Fake::new();
    f.ipam = dual_stack();
    let pristine = f.model.clone();
    let plan = PortPlan {
        ip_masq: true,
        macspoofchk: true,
        ..ipam_plan()
    };
    add(&mut f, &plan, &mut Vec::new()).unwrap();
    let before = f.calls.len();
    del(&mut f, true).unwrap();
    let ops: Vec<_> = f.calls[before..].iter().map(String::as_str).collect();
    let v = veth();
    assert_eq!(
        ops,
        [
            format!("get_host_link {v}").as_str(),
            &format!("delete_host_link {v}"),
            "del_spoofcheck",
            "del_masquerade",
            "ipam_del plumb-ipam",
        ]
    );
    assert_eq!(f.model, pristine);
    // A second DEL finds everything gone and succeeds.
    del(&mut f, true).unwrap();
    assert_eq!(f.model, pristine);
}

#[test]
fn del_with_the_netns_and_veth_gone_runs_every_step() {
    // The pod's namespace went, and the veth pair with it: nothing on the pod side, no host veth.
    let mut f = Fake::new();
    f.model.reservations.insert(format!("{CID}/{IFNAME}"));
    let chain = naming::chain("net1", CID, IFNAME);
    f.model.chains.insert(format!("spoofcheck {chain}"));
    del(&mut f, false).unwrap();
    assert_eq!(
        f.ops(),
        ["del_spoofcheck", "ipam_del"],
        "without masquerade (plumb-vxlan) no masquerade step"
    );
    assert!(f.model.reservations.is_empty() && f.model.chains.is_empty());
}

#[test]
fn del_with_ipam_failing_runs_every_step_and_names_it() {
    let mut f = Fake::new();
    f.ipam.ips = vec![ip("10.1.0.5/24", None)];
    add(&mut f, &ipam_plan(), &mut Vec::new()).unwrap();
    f.fail_on("ipam_del");
    let e = del(&mut f, true).unwrap_err();
    assert_eq!(e.code, code::IO_FAILURE);
    assert!(e.msg.contains("1 failed"), "{}", e.msg);
    assert!(
        e.msg.contains("ipam: injected failure in ipam_del"),
        "{}",
        e.msg
    );
    // Everything else was done.
    assert_eq!(f.model.host.keys().collect::<Vec<_>>(), ["br0"]);
    assert_eq!(f.model.reservations.len(), 1);
}

#[test]
fn del_with_several_failures_returns_one_error_naming_each() {
    let mut f = Fake::new();
    add(&mut f, &ipam_plan(), &mut Vec::new()).unwrap();
    f.fail_on("delete_host_link");
    f.fail_on("del_masquerade");
    f.fail_on("ipam_del");
    let e = del(&mut f, true).unwrap_err();
    assert_eq!(
        f.ops()[f.ops().len() - 4..],
        [
            "delete_host_link",
            "del_spoofcheck",
            "del_masquerade",
            "ipam_del"
        ]
    );
    assert!(e.msg.contains("3 failed"), "{}", e.msg);
    for step in [
        "host veth: cannot delete the host veth",
        "masquerade: cannot remove the masquerade rules",
        "ipam: injected failure",
    ] {
        assert!(e.msg.contains(step), "{step} missing in {}", e.msg);
    }
    assert!(
        e.details
            .iter()
            .any(|d| d.contains("injected failure in delete_host_link")),
        "{:?}",
        e.details
    );
}
