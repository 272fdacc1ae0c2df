//! The engine's plan, rollback order and DEL, run against the recording fake: no root, no kernel.

use crate::attach::{add_attachment_with, delete_host_veth_with, rollback_with, OwnStep, Undo};
use crate::fake::Fake;
use crate::naming;
use crate::plan::PortPlan;
use plumb_cni::result::{IpConfig, Route as CniRoute};
use plumb_cni::{code, AddResult, Command, Env, NetConf, Request};
use plumb_net::nl::Route;
use std::collections::BTreeSet;

const CID: &str = "c0ffee";
const IFNAME: &str = "eth0";

fn request() -> Request {
    let stdin = br#"{"cniVersion":"1.0.0","name":"net1","type":"plumb-bridge"}"#.to_vec();
    Request {
        env: Env {
            command: Command::Add,
            container_id: CID.into(),
            netns: Some("/var/run/netns/fake".into()),
            ifname: IFNAME.into(),
            args: Default::default(),
            path: Vec::new(),
            refused_identity: None,
        },
        conf: NetConf::parse(&stdin).expect("test config parses"),
        stdin,
    }
}

fn veth() -> String {
    naming::host_veth(CID, IFNAME)
}

fn ip(addr: &str, gw: Option<&str>) -> IpConfig {
    IpConfig {
        address: addr.parse().unwrap(),
        gateway: gw.map(|g| g.parse().unwrap()),
        interface: None,
    }
}

fn ipam_plan() -> PortPlan {
    PortPlan {
        bridge: "br0".into(),
        ipam_type: Some("plumb-ipam".into()),
        ..Default::default()
    }
}

fn dual_stack() -> AddResult {
    AddResult {
        ips: vec![
            ip("10.1.0.5/24", Some("10.1.0.1")),
            ip("fd00:1::5/64", Some("fd00:1::1")),
        ],
        ..Default::default()
    }
}

/// The gateway step the fake stands in for (the fake never calls it).
fn no_gateway(
    _: &mut Route,
    _: &plumb_net::link::Link,
    _: &[IpConfig],
    _: &mut Vec<Undo>,
) -> plumb_cni::CniResult<()> {
    unreachable!("the fake runs its own gateway step")
}

fn add(f: &mut Fake, plan: &PortPlan, undo: &mut Vec<Undo>) -> plumb_cni::CniResult<AddResult> {
    let bridge = f.bridge();
    add_attachment_with(f, &request(), plan, bridge, undo, Some(&no_gateway))
}

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
            format!("host_set_up {v}"),
            "ipam_add plumb-ipam".into(),
            "get_pod_link eth0".into(),
            "pod_sysctls eth0 layer3=true dad=false v6=false".into(),
            "pod_add_address 11 10.1.0.5/24".into(),
            "pod_set_up eth0".into(),
            "get_pod_link_by_index 11".into(),
            "get_host_link_by_index 1".into(),
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
            format!("host_set_up {v}"),
            "pod_set_up eth0".into(),
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
        f.changes()[5..],
        [
            "ipam_add plumb-ipam",
            "pod_sysctls eth0 layer3=true dad=false v6=true",
            "pod_add_address 11 10.1.0.5/24",
            "pod_add_address 11 fd00:1::5/64",
            "pod_set_up eth0",
            "add_masquerade 10.1.0.5",
            "add_masquerade fd00:1::5",
            &format!("add_spoofcheck {} 0a:58:00:00:00:07", veth()),
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
fn gateway_plan_puts_gateways_on_the_bridge_after_the_pod_and_routes_default() {
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
    assert!(pos("pod_set_up") < pos("gateway") && pos("gateway") < pos("add_masquerade"));
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

/// A plugin's own step (the bridge it created), pushed before the engine runs.
#[derive(Debug)]
struct CreatedBridge;

impl OwnStep for CreatedBridge {
    fn label(&self) -> &'static str {
        "created bridge"
    }
    fn undo(&self, _: &mut Route) -> Result<(), String> {
        unreachable!("the fake takes it back by label")
    }
}

/// Every step the full plan makes, with the undo op that takes it back (masquerade and spoof check
/// are on the stack before their first rule, so their failing call is taken back too).
fn undo_op(op: &str) -> Option<&'static str> {
    Some(match op {
        "create_veth" => "delete_host_link",
        "ipam_add" => "ipam_del",
        "gateway" => "del_host_address",
        "add_masquerade" => "del_masquerade",
        "add_spoofcheck" => "del_spoofcheck",
        _ => return None,
    })
}

fn full_plan() -> PortPlan {
    PortPlan {
        vlan: 100,
        trunk: vec![(200, 201)],
        is_gateway: true,
        is_default_gateway: true,
        ip_masq: true,
        macspoofchk: true,
        ..ipam_plan()
    }
}

#[test]
fn a_failure_at_each_step_is_rolled_back_in_reverse_leaving_the_model_as_it_was() {
    let mut ok = Fake::new();
    ok.ipam.ips = vec![ip("10.1.0.5/24", Some("10.1.0.1"))];
    add(&mut ok, &full_plan(), &mut Vec::new()).unwrap();
    let steps = ok.calls.len();
    assert!(steps >= 20, "{:?}", ok.calls);
    let mut failed_adds = 0;
    for n in 0..steps {
        let mut f = Fake::new();
        f.ipam = ok.ipam.clone();
        let pristine = f.model.clone();
        f.model.own.insert("created bridge");
        let mut undo: Vec<Undo> = vec![Undo::Own(Box::new(CreatedBridge))];
        f.fail_nth(n);
        let failed_op = ok.calls[n].split(' ').next().unwrap();
        let Err(e) = add(&mut f, &full_plan(), &mut undo) else {
            // Only the best-effort sysctl may fail without failing ADD.
            assert_eq!(
                failed_op, "host_sysctl",
                "call {n} failed but ADD succeeded"
            );
            continue;
        };
        failed_adds += 1;
        assert!(
            e.msg.contains("injected failure")
                || e.details.iter().any(|d| d.contains("injected failure")),
            "{e:?}"
        );
        // What was made before the failing call (one gateway address: the result has one IP), and
        // the failing call itself when its undo went on the stack first.
        let op = |c: &String| c.split(' ').next().unwrap().to_string();
        let mut made: Vec<String> = f.calls[..n].iter().map(op).collect();
        if matches!(failed_op, "add_masquerade" | "add_spoofcheck") {
            made.push(failed_op.to_string());
        }
        let mut expected: Vec<&str> = vec!["undo_own"];
        expected.extend(made.iter().filter_map(|o| undo_op(o)));
        expected.reverse();
        let before = f.calls.len();
        rollback_with(&mut f, &request(), &full_plan(), undo);
        let undone: Vec<_> = f.calls[before..]
            .iter()
            .map(|c| c.split(' ').next().unwrap())
            .collect();
        assert_eq!(undone, expected, "failure at call {n} ({failed_op})");
        assert_eq!(f.model, pristine, "failure at call {n} ({failed_op})");
    }
    assert_eq!(failed_adds, steps - 1);
}

#[test]
fn a_failing_undo_step_is_skipped_and_the_others_still_run() {
    let mut f = Fake::new();
    f.ipam.ips = vec![ip("10.1.0.5/24", Some("10.1.0.1"))];
    f.fail_on("add_spoofcheck");
    f.fail_on("ipam_del");
    let mut undo = Vec::new();
    add(&mut f, &full_plan(), &mut undo).unwrap_err();
    let before = f.calls.len();
    rollback_with(&mut f, &request(), &full_plan(), undo);
    let undone: Vec<_> = f.calls[before..].iter().map(|c| c.as_str()).collect();
    assert_eq!(
        undone,
        [
            "del_spoofcheck",
            "del_masquerade",
            "del_host_address 1 10.1.0.1/24",
            "ipam_del plumb-ipam",
            &format!("delete_host_link {}", veth()),
        ]
    );
    // Only the reservation whose release failed is left.
    assert_eq!(
        f.model.reservations,
        BTreeSet::from([format!("{CID}/{IFNAME}")])
    );
    assert!(f.model.chains.is_empty() && f.model.host_addrs.is_empty());
    assert_eq!(f.model.host.len(), 1);
}

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
