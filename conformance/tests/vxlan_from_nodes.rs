//! plumb-vxlan `"peers": {"fromNodes": ...}` against the project's test API server: each ADD lists the
//! Nodes (through `plumb-ipam nodes`), and the VTEP's flood list follows them — a Node added shows up,
//! a Node deleted goes, the node's own address and Nodes outside the label selector never appear, and
//! another address type is ignored. An API that fails makes ADD answer code 11 and leave nothing.
//!
//! The "node" is a namespace the test makes; the API server listens inside it (its listening socket is
//! created from a thread that entered the namespace), so the plugin reaches it at 127.0.0.1 as a
//! node-local kubeconfig would.

use conformance::netns::Netns;
use conformance::plugin::Call;
use conformance::skip::skip_unless_netns;
use conformance::{plumb_bin, unique_name, TempDir};
use plumb_kubeapi::{FaultKind, FaultRule, Faults, Options, Resource, TestApiServer};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::Path;

const SELECTOR_LABEL: &str = "plumb.dev/vxlan";
const OWN: &str = "10.66.0.1";

/// Runs `work` on a thread inside the namespace `name` (sockets it creates stay in that namespace).
fn in_netns<T: Send>(name: &str, work: impl FnOnce() -> T + Send) -> T {
    let ns = std::fs::File::open(format!("/run/netns/{name}")).expect("open netns");
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns switches only this scoped thread, which ends when `work` returns; the fd
            // is open for the whole call.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            work()
        })
        .join()
        .expect("netns thread")
    })
}

/// The API server, started and stopped inside the node's namespace.
struct NodeApi {
    server: Option<TestApiServer>,
    node: String,
}

impl NodeApi {
    fn start(node: &str) -> NodeApi {
        let server = in_netns(node, || TestApiServer::start(Options::default()))
            .expect("start the test API server");
        NodeApi {
            server: Some(server),
            node: node.to_string(),
        }
    }

    fn api(&self) -> &TestApiServer {
        self.server.as_ref().expect("running")
    }

    fn put_node(&self, name: &str, labelled: bool, addresses: &[(&str, &str)]) {
        let labels = if labelled {
            json!({ SELECTOR_LABEL: "true" })
        } else {
            json!({})
        };
        let addrs: Vec<Value> = addresses
            .iter()
            .map(|(t, a)| json!({"type": t, "address": a}))
            .collect();
        self.api()
            .put_object(
                Resource::Nodes,
                json!({"metadata": {"name": name, "labels": labels}, "status": {"addresses": addrs}}),
            )
            .expect("put Node");
    }
}

impl Drop for NodeApi {
    fn drop(&mut self) {
        // Stopping wakes the accept loop by connecting to its address: from inside the namespace.
        if let Some(mut s) = self.server.take() {
            in_netns(&self.node, move || s.stop());
        }
    }
}

/// A node namespace whose `car0` (a veth to a second namespace) holds 10.66.0.1/24 and the default
/// route, so `car0` is the underlay.
fn node() -> (Netns, Netns) {
    let (n, fabric) = (Netns::new("vfn"), Netns::new("vff"));
    conformance::netns::veth_between(&n, &fabric, "car0", 1500);
    n.exec(&["ip", "addr", "add", &format!("{OWN}/24"), "dev", "car0"]);
    n.exec(&["ip", "link", "set", "car0", "up"]);
    fabric.exec(&["ip", "link", "set", "car0", "up"]);
    n.exec(&["ip", "route", "add", "default", "via", "10.66.0.254"]);
    (n, fabric)
}

fn config(kubeconfig: &Path, data: &Path) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": unique_name("vfnnet"),
        "type": "plumb-vxlan",
        "bridge": "fn0",
        "vni": 66,
        "peers": {"fromNodes": {"addressType": "InternalIP", "labelSelector": format!("{SELECTOR_LABEL}=true")}},
        "kubernetes": {"kubeconfig": kubeconfig.display().to_string(), "timeoutSeconds": 5},
        "ipam": {"type": "plumb-ipam", "range": "192.168.66.0/24", "dataDir": data.display().to_string()},
    })
}

fn flood_list(node: &Netns) -> BTreeSet<String> {
    let v: Value =
        serde_json::from_str(&node.exec(&["bridge", "-j", "fdb", "show", "dev", "fn0-vx"]))
            .expect("bridge -j fdb");
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["mac"] == "00:00:00:00:00:00")
        .filter_map(|e| e["dst"].as_str().map(String::from))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn reservations(data: &Path) -> usize {
    conformance::ipam_records(data, &["att-"]).len()
}

#[test]
fn flood_list_follows_the_nodes() {
    let test = "flood_list_follows_the_nodes";
    if skip_unless_netns(test) {
        return;
    }
    let (node, _fabric) = node();
    let api = NodeApi::start(&node.name);
    let dir = TempDir::new("vfnd");
    let kubeconfig = dir.path().join("kubeconfig");
    api.api()
        .write_kubeconfig(&kubeconfig, None)
        .expect("kubeconfig");
    let data = dir.path().join("ipam");
    let conf = config(&kubeconfig, &data);
    api.put_node("node-a", true, &[("InternalIP", OWN)]);
    api.put_node(
        "node-b",
        true,
        &[("InternalIP", "10.66.0.2"), ("ExternalIP", "203.0.113.2")],
    );
    api.put_node("node-c", true, &[("InternalIP", "10.66.0.3")]);
    api.put_node("node-x", false, &[("InternalIP", "10.66.0.9")]);

    let plugin = plumb_bin("plumb-vxlan");
    let pods: Vec<Netns> = (0..4).map(|_| Netns::new("vfnp")).collect();
    let add = |i: usize| {
        Call::new("ADD", &format!("vfn-{i}"), &pods[i].path(), "net1", &conf)
            .run_in(&plugin, &node.name)
    };

    let first = add(0).ok();
    assert_eq!(first["interfaces"][3]["name"], "fn0-vx", "{first}");
    assert_eq!(
        flood_list(&node),
        set(&["10.66.0.2", "10.66.0.3"]),
        "own address, unlabelled Nodes and ExternalIPs stay out"
    );
    println!("first ADD: flood list {:?}", flood_list(&node));

    api.put_node("node-d", true, &[("InternalIP", "10.66.0.4")]);
    add(1).ok();
    assert_eq!(
        flood_list(&node),
        set(&["10.66.0.2", "10.66.0.3", "10.66.0.4"])
    );
    println!("after adding node-d: {:?}", flood_list(&node));

    api.api()
        .delete_object(Resource::Nodes, None, "node-b")
        .expect("delete node-b");
    add(2).ok();
    assert_eq!(flood_list(&node), set(&["10.66.0.3", "10.66.0.4"]));
    println!("after deleting node-b: {:?}", flood_list(&node));

    // The operator's view of the same listing.
    let listed = node.exec(&[
        plumb_bin("plumb-ipam").to_str().unwrap(),
        "nodes",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--selector",
        &format!("{SELECTOR_LABEL}=true"),
    ]);
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        vec![
            format!("node-a\t{OWN}"),
            "node-c\t10.66.0.3".into(),
            "node-d\t10.66.0.4".into()
        ],
        "{listed}"
    );

    let mut prev = conf.clone();
    prev["prevResult"] = first;
    Call::new("CHECK", "vfn-0", &pods[0].path(), "net1", &prev)
        .run_in(&plugin, &node.name)
        .ok();

    // The API failing every Node list: ADD answers "try again later" and leaves nothing.
    let before = (node.exec(&["ip", "-o", "link"]), reservations(&data));
    api.api().set_faults(Faults {
        rules: vec![FaultRule::new(FaultKind::InternalError, 1.0).resources(&[Resource::Nodes])],
        ..Faults::default()
    });
    let failed = add(3);
    let e = failed.err(11);
    assert!(
        e["msg"].as_str().unwrap().contains("Nodes"),
        "the error says what failed: {e}"
    );
    assert!(!pods[3].exec(&["ip", "-o", "link"]).contains("net1"));
    assert_eq!(
        (node.exec(&["ip", "-o", "link"]), reservations(&data)),
        before
    );
    assert_eq!(flood_list(&node), set(&["10.66.0.3", "10.66.0.4"]));
    api.api().clear_faults();

    for (i, pod) in pods.iter().enumerate().take(3) {
        Call::new("DEL", &format!("vfn-{i}"), &pod.path(), "net1", &conf)
            .run_in(&plugin, &node.name)
            .ok();
    }
    assert_eq!(reservations(&data), 0, "IPAM records left after DEL");
}
