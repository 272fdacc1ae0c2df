//! plumb-vxlan `"peers": {"fromNodes": ...}` inside node network namespaces against the REAL
//! kube-apiserver (kube-real lane): three node namespaces joined by an underlay, each running
//! plumb-vxlan with a kubeconfig holding the plugin's installer-written `plumb` token. Node objects are
//! created, relabelled and deleted through the real API, and each VTEP's flood list follows them at
//! the next ADD; a node's own address, unlabelled Nodes and other address types never appear. The
//! pods' addresses come from plumb-ipam's Kubernetes store on the same server, and pods on two nodes
//! reach each other over the VXLAN.
//!
//! The server listens on the host's loopback, which a node namespace cannot reach: in each node a
//! [`Forward`] listens on 127.0.0.1 and relays to it (TLS passes through; the serving certificate names
//! 127.0.0.1), so the plugin reaches the API as a node-local kubeconfig would.

#[allow(dead_code)]
mod kube_real_support;

use conformance::forward::Forward;
use conformance::netns::{run, Netns};
use conformance::plugin::Call;
use conformance::skip::{skip_unless_netns, unavailable};
use conformance::{plumb_bin, unique_name, TempDir};
use kube_real_support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;

const RANGE: &str = "192.168.77.0/24";
const CARRIER: &str = "car0";

/// One node: its namespace, underlay address, Node object name, forwarder and kubeconfig.
struct Node {
    ns: Netns,
    addr: String,
    name: String,
    kubeconfig: PathBuf,
    _fwd: Forward,
}

impl Node {
    /// The VTEP's flood list: the `dst` of its all-zero-MAC FDB entries.
    fn flood_list(&self) -> BTreeSet<String> {
        let v: Value = serde_json::from_str(
            &self
                .ns
                .exec(&["bridge", "-j", "fdb", "show", "dev", "kr0-vx"]),
        )
        .expect("bridge -j fdb");
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["mac"] == "00:00:00:00:00:00")
            .filter_map(|e| e["dst"].as_str().map(String::from))
            .collect()
    }
}

/// `count` nodes on 10.77.0.<i+1>/24, each with a veth into one fabric namespace's bridge and its
/// default route on the carrier (so the carrier is the underlay), each with a forwarder to the real
/// server and a kubeconfig pointing at it.
fn nodes(r: &Real, fabric: &Netns, dir: &TempDir, count: usize) -> Vec<Node> {
    fabric.exec(&["ip", "link", "add", "fab0", "type", "bridge"]);
    fabric.exec(&["ip", "link", "set", "fab0", "up"]);
    (0..count)
        .map(|i| {
            let ns = Netns::new("krvn");
            let port = format!("p{i}");
            run(&[
                "ip",
                "link",
                "add",
                CARRIER,
                "netns",
                &ns.name,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &fabric.name,
            ]);
            fabric.exec(&["ip", "link", "set", &port, "master", "fab0", "up"]);
            let addr = format!("10.77.0.{}", i + 1);
            ns.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", CARRIER]);
            ns.exec(&["ip", "link", "set", CARRIER, "up"]);
            ns.exec(&["ip", "route", "add", "default", "via", "10.77.0.254"]);
            let fwd = Forward::start(Some(&ns.name), server_addr(r.cp)).expect("forwarder");
            let kubeconfig = kubeconfig_via(r, &fwd, dir.path());
            Node {
                ns,
                addr,
                name: unique_name("krn"),
                kubeconfig,
                _fwd: fwd,
            }
        })
        .collect()
}

/// The plumb-vxlan config of `node`: peers from the Nodes labelled `run`, addresses from plumb-ipam's
/// Kubernetes store in `space`, both through the node's forwarder.
fn config(node: &Node, selector: &str, space: &str, data: &TempDir) -> Value {
    let kc = node.kubeconfig.to_str().expect("UTF-8 path");
    json!({
        "cniVersion": "1.1.0",
        "name": space,
        "type": "plumb-vxlan",
        "bridge": "kr0",
        "vni": 77,
        "peers": {"fromNodes": {"addressType": "InternalIP", "labelSelector": selector}},
        "kubernetes": {"kubeconfig": kc, "timeoutSeconds": 10},
        "ipam": {
            "type": "plumb-ipam",
            "range": RANGE,
            "network_name": space,
            "dataDir": data.path().join(&node.name).to_str().expect("UTF-8 path"),
            "kubernetes": {"kubeconfig": kc, "timeoutSeconds": 10},
        },
    })
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn vxlan_flood_lists_follow_the_real_servers_nodes_and_pods_talk_across_nodes() {
    let test = "vxlan_flood_lists_follow_the_real_servers_nodes_and_pods_talk_across_nodes";
    if skip_unless_netns(test) || unavailable(test, &["bridge", "ping"]) {
        return;
    }
    let r = real();
    let cp = r.cp;
    let _serial = serial();
    let dir = TempDir::new("krvx");
    let fabric = Netns::new("krvf");
    let nodes = nodes(r, &fabric, &dir, 3);
    let run_id = unique_name("vx");
    let selector = format!("plumb.test/vxlan={run_id}");
    let labelled = json!({"plumb.test/vxlan": run_id});
    let space = unique_name("krvx");
    let plugin = plumb_bin("plumb-vxlan");

    // Nodes 0 and 1 are labelled (node 1 also has an ExternalIP); node 2 has no Node object yet; an
    // unlabelled Node with an address on the underlay must never be flooded to.
    create_node(
        cp,
        &nodes[0].name,
        labelled.clone(),
        json!([{"type": "InternalIP", "address": nodes[0].addr}]),
    );
    create_node(
        cp,
        &nodes[1].name,
        labelled.clone(),
        json!([{"type": "InternalIP", "address": nodes[1].addr},
               {"type": "ExternalIP", "address": "203.0.113.2"}]),
    );
    let stray = unique_name("krs");
    create_node(
        cp,
        &stray,
        json!({}),
        json!([{"type": "InternalIP", "address": "10.77.0.9"}]),
    );

    let mut pods: Vec<(Netns, usize, String)> = Vec::new();
    let add = |pods: &mut Vec<(Netns, usize, String)>, on: usize| -> Value {
        let pod = Netns::new("krvp");
        let cid = unique_name("krvc");
        let out = Call::new(
            "ADD",
            &cid,
            &pod.path(),
            "net1",
            &config(&nodes[on], &selector, &space, &dir),
        )
        .env("PLUMB_NODE_NAME", &nodes[on].name)
        .run_in(&plugin, &nodes[on].ns.name)
        .ok();
        pods.push((pod, on, cid));
        out
    };

    let a = add(&mut pods, 0);
    assert_eq!(
        nodes[0].flood_list(),
        set(&["10.77.0.2"]),
        "own address, the unlabelled Node and the ExternalIP stay out"
    );
    let b = add(&mut pods, 1);
    assert_eq!(nodes[1].flood_list(), set(&["10.77.0.1"]));
    eprintln!(
        "node 0 floods to {:?}, node 1 to {:?}",
        nodes[0].flood_list(),
        nodes[1].flood_list()
    );

    // Pods on two nodes, addresses from the Kubernetes store on the real server, over the VXLAN.
    let (ip_a, ip_b) = (address(&a, 0), address(&b, 0));
    assert_ne!(ip_a, ip_b);
    let bare_b = ip_b.split('/').next().expect("address");
    let ping = pods[0].0.try_exec(&["ping", "-c2", "-W2", "-i0.2", bare_b]);
    assert!(
        ping,
        "the pod on node 0 ({ip_a}) cannot reach the pod on node 1 ({ip_b})"
    );
    eprintln!("pod {ip_a} on node 0 pings pod {ip_b} on node 1 over the VXLAN");

    // Node 2 joins: the next ADD on each node floods to it too.
    create_node(
        cp,
        &nodes[2].name,
        labelled.clone(),
        json!([{"type": "InternalIP", "address": nodes[2].addr}]),
    );
    add(&mut pods, 2);
    assert_eq!(nodes[2].flood_list(), set(&["10.77.0.1", "10.77.0.2"]));
    add(&mut pods, 0);
    assert_eq!(nodes[0].flood_list(), set(&["10.77.0.2", "10.77.0.3"]));
    eprintln!(
        "after node 2 joined: node 0 floods to {:?}",
        nodes[0].flood_list()
    );

    // Node 1 loses the label: it leaves node 0's flood list at the next ADD.
    cp.admin(
        "PATCH",
        &format!("/api/v1/nodes/{}", nodes[1].name),
        Some(&json!({"metadata": {"labels": {"plumb.test/vxlan": null}}})),
        200,
    );
    add(&mut pods, 0);
    assert_eq!(nodes[0].flood_list(), set(&["10.77.0.3"]));
    eprintln!(
        "after node 1 was unlabelled: node 0 floods to {:?}",
        nodes[0].flood_list()
    );

    // Node 2's Node object is deleted, node 1 labelled again.
    delete_node(cp, &nodes[2].name);
    cp.admin(
        "PATCH",
        &format!("/api/v1/nodes/{}", nodes[1].name),
        Some(&json!({"metadata": {"labels": {"plumb.test/vxlan": run_id}}})),
        200,
    );
    add(&mut pods, 0);
    assert_eq!(nodes[0].flood_list(), set(&["10.77.0.2"]));
    eprintln!(
        "after node 2 was deleted and node 1 relabelled: node 0 floods to {:?}",
        nodes[0].flood_list()
    );

    // Every pod's address is held in the real server's blocks, once; DEL frees them all.
    let held = holders(cp, &space);
    assert_eq!(held.len(), pods.len(), "{held:?}");
    for (pod, on, cid) in &pods {
        Call::new(
            "DEL",
            cid,
            &pod.path(),
            "net1",
            &config(&nodes[*on], &selector, &space, &dir),
        )
        .env("PLUMB_NODE_NAME", &nodes[*on].name)
        .run_in(&plugin, &nodes[*on].ns.name)
        .ok();
    }
    assert!(holders(cp, &space).is_empty(), "{:?}", usage(cp, &space));
    for n in [&nodes[0].name, &nodes[1].name, &stray] {
        delete_node(cp, n);
    }
}
