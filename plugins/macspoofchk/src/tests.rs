//! ADD's pair check, DEL and CHECK against the attach engine's recording fake: no root, no kernel.
//! The pod `eth0` has the host veth `veth1`; `veth2` is another pod's (its peer `eth9`).

use super::{add, check, del, find_pair};
use plumb_attach::fake::Fake;
use plumb_attach::host::{Host, VethPair};
use plumb_attach::naming;
use plumb_cni::result::Interface;
use plumb_cni::{code, AddResult, CniError, Command, Request};

const CID: &str = "c0ffee";
const IFNAME: &str = "eth0";
const POD: &str = "/var/run/netns/pod1";
const MAC: &str = "02:00:00:00:00:aa";

fn request(command: Command) -> Request {
    let stdin = br#"{"cniVersion":"1.0.0","name":"net1","type":"plumb-macspoofchk"}"#.to_vec();
    plumb_attach::fake::request(command, CID, IFNAME, POD, stdin)
}

/// A fake host with this pod's veth pair (the pod end with [`MAC`]) and another pod's.
fn host() -> Fake {
    let mut f = Fake::new();
    let mac = plumb_net::link::parse_mac(MAC);
    for (host, peer, peer_mac) in [("veth1", IFNAME, mac), ("veth2", "eth9", None)] {
        let pair = VethPair {
            host,
            peer,
            mtu: None,
            peer_mac,
        };
        f.create_veth(&pair).unwrap();
    }
    f.calls.clear();
    f
}

fn iface(name: &str, mac: Option<&str>, sandbox: Option<&str>) -> Interface {
    Interface {
        name: name.into(),
        mac: mac.map(str::to_string),
        sandbox: sandbox.map(str::to_string),
        ..Default::default()
    }
}

/// A prevResult naming `host_veth` and the container's `eth0` with `mac`.
fn prev(host_veth: &str, mac: &str) -> AddResult {
    AddResult {
        interfaces: vec![
            iface(host_veth, Some("02:00:00:00:00:01"), None),
            iface(IFNAME, Some(mac), Some(POD)),
        ],
        ..Default::default()
    }
}

fn chain() -> String {
    format!("spoofcheck {}", naming::chain("net1", CID, IFNAME))
}

fn config_error(e: &CniError, msg: &str) {
    assert_eq!(e.code, code::INVALID_CONFIG, "{e:?}");
    assert_eq!(e.msg, msg);
}

#[test]
fn add_puts_the_chain_on_the_proven_peer_and_passes_prev_result_on() {
    let mut f = host();
    let p = prev("veth1", MAC);
    let out = add(&mut f, &request(Command::Add), p.clone(), POD).unwrap();
    assert_eq!(out, p);
    assert_eq!(f.changes(), vec![format!("add_spoofcheck veth1 {MAC}")]);
    assert_eq!(
        f.calls,
        vec![
            "get_veth_peer veth1".to_string(),
            "get_pod_nsid".into(),
            "get_pod_link eth0".into(),
            format!("add_spoofcheck veth1 {MAC}"),
        ]
    );
    assert!(f.model.chains.contains(&chain()));
}

#[test]
fn the_mac_is_compared_as_an_address_not_as_text() {
    let mut f = host();
    let got = find_pair(
        &mut f,
        &request(Command::Add),
        &prev("veth1", "02:00:00:00:00:AA"),
        POD,
    );
    assert_eq!(got.unwrap(), ("veth1".to_string(), [2, 0, 0, 0, 0, 0xaa]));
}

#[test]
fn another_pods_veth_is_refused_and_nothing_installed() {
    let mut f = host();
    let e = add(&mut f, &request(Command::Add), prev("veth2", MAC), POD).unwrap_err();
    config_error(&e, "prevResult's host veth veth2 is not the peer of the container interface eth0 in CNI_NETNS /var/run/netns/pod1; the check is installed only on the veth of this container: give the prevResult of this attachment");
    assert!(f.changes().is_empty(), "{:?}", f.calls);
    assert!(f.model.chains.is_empty());
}

#[test]
fn the_right_veth_among_others_is_found() {
    let mut f = host();
    let mut p = prev("veth2", MAC);
    p.interfaces.push(iface("veth1", None, None));
    let got = find_pair(&mut f, &request(Command::Add), &p, POD).unwrap();
    assert_eq!(got.0, "veth1");
}

#[test]
fn a_peer_in_another_namespace_is_not_the_pods() {
    // The pod's namespace has no ID on the host: no veth can be proven to lead into it.
    let mut f = host();
    f.pod_nsid = None;
    let e = find_pair(&mut f, &request(Command::Add), &prev("veth1", MAC), POD).unwrap_err();
    config_error(&e, "prevResult's host veth veth1 is not the peer of the container interface eth0 in CNI_NETNS /var/run/netns/pod1; the check is installed only on the veth of this container: give the prevResult of this attachment");
}

#[test]
fn a_container_without_the_interface_is_named_in_the_error() {
    // The pod end was renamed: the veth still leads into the pod, to no eth0.
    let mut f = host();
    let mut moved = f.model.pod.remove(IFNAME).unwrap();
    moved.name = "eth5".into();
    f.model.pod.insert("eth5".into(), moved);
    f.model.peers.insert("veth1".into(), "eth5".into());
    let e = find_pair(&mut f, &request(Command::Add), &prev("veth1", MAC), POD).unwrap_err();
    config_error(&e, "prevResult's host veth veth1 is not the peer of the container interface eth0 in CNI_NETNS /var/run/netns/pod1 (the container has no eth0); the check is installed only on the veth of this container: give the prevResult of this attachment");
}

#[test]
fn a_mac_not_the_containers_is_refused() {
    let mut f = host();
    let e = add(
        &mut f,
        &request(Command::Add),
        prev("veth1", "02:00:00:00:00:bb"),
        POD,
    )
    .unwrap_err();
    config_error(&e, "prevResult MAC 02:00:00:00:00:bb of eth0 is not the MAC 02:00:00:00:00:aa the container interface has; the check would let the container send only from a MAC not its own: give the prevResult of this attachment (after any plugin that changed the MAC)");
    assert!(f.model.chains.is_empty());
}

#[test]
fn prev_result_without_what_the_check_needs_is_refused_before_any_lookup() {
    let req = request(Command::Add);
    let cases: [(AddResult, &str); 4] = [
        (
            AddResult {
                interfaces: vec![iface("veth1", None, None), iface(IFNAME, Some(MAC), None)],
                ..Default::default()
            },
            "prevResult has no interface eth0 inside a sandbox",
        ),
        (
            AddResult {
                interfaces: vec![iface(IFNAME, None, Some(POD))],
                ..Default::default()
            },
            "prevResult gives no MAC for eth0",
        ),
        (
            prev("veth1", "02:00:00:00:aa"),
            "prevResult MAC \"02:00:00:00:aa\" of eth0 is not a MAC address",
        ),
        (
            AddResult {
                interfaces: vec![iface("br0", None, None), iface(IFNAME, Some(MAC), Some(POD))],
                ..Default::default()
            },
            "prevResult names no host-side veth (an interface without a sandbox); chain plumb-macspoofchk after a veth-based plugin such as bridge or ptp",
        ),
    ];
    for (p, msg) in cases {
        let mut f = host();
        let e = find_pair(&mut f, &req, &p, POD).unwrap_err();
        config_error(&e, msg);
        assert!(
            f.calls.iter().all(|c| c.starts_with("get_veth_peer")),
            "{:?}",
            f.calls
        );
    }
}

#[test]
fn a_failing_lookup_is_an_io_error_and_installs_nothing() {
    for (op, msg) in [
        ("get_veth_peer", "cannot look up a prevResult interface"),
        ("get_pod_nsid", "cannot identify CNI_NETNS"),
        ("get_pod_link", "cannot look into the container netns"),
        ("add_spoofcheck", "cannot install the MAC spoof check"),
    ] {
        let mut f = host();
        f.fail_on(op);
        let e = add(&mut f, &request(Command::Add), prev("veth1", MAC), POD).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (code::IO_FAILURE, msg), "{op}");
        assert!(f.model.chains.is_empty(), "{op}");
    }
}

#[test]
fn del_removes_the_chain_and_touches_nothing_else() {
    let mut f = host();
    add(&mut f, &request(Command::Add), prev("veth1", MAC), POD).unwrap();
    f.calls.clear();
    del(&mut f, &request(Command::Del), "plumb-macspoofchk").unwrap();
    assert_eq!(f.calls, vec!["del_spoofcheck"]);
    assert!(f.model.chains.is_empty());
}

#[test]
fn del_succeeds_when_the_netns_and_the_chain_are_gone() {
    let mut f = host();
    f.model.pod.clear();
    f.model.host.remove("veth1");
    let mut req = request(Command::Del);
    req.env.netns = Some("/var/run/netns/gone".into());
    del(&mut f, &req, "plumb-macspoofchk").unwrap();
    del(&mut f, &req, "plumb-macspoofchk").unwrap();
    // Nothing but the chain, by its derived name: no link or namespace lookup.
    assert_eq!(f.calls, vec!["del_spoofcheck", "del_spoofcheck"]);
}

#[test]
fn del_that_cannot_remove_the_chain_says_so() {
    let mut f = host();
    f.fail_on("del_spoofcheck");
    let e = del(&mut f, &request(Command::Del), "plumb-macspoofchk").unwrap_err();
    assert_eq!(e.code, code::IO_FAILURE);
    assert!(
        e.msg.contains("but 1 failed")
            && e.msg
                .contains("(spoofcheck: cannot remove the MAC spoof check)"),
        "{}",
        e.msg
    );
}

#[test]
fn check_passes_with_the_chain_and_reports_its_loss() {
    let mut f = host();
    add(&mut f, &request(Command::Add), prev("veth1", MAC), POD).unwrap();
    check(&mut f, &request(Command::Check)).unwrap();
    f.model.chains.clear();
    let e = check(&mut f, &request(Command::Check)).unwrap_err();
    assert_eq!(e.code, code::CHECK_MISMATCH);
    assert_eq!(
        e.msg,
        "the MAC spoof check of container c0ffee interface eth0 is missing"
    );
    f.fail_on("get_spoofcheck");
    let e = check(&mut f, &request(Command::Check)).unwrap_err();
    assert_eq!(
        (e.code, e.msg.as_str()),
        (code::IO_FAILURE, "cannot read nftables")
    );
}
