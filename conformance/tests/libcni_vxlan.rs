//! plumb-vxlan + plumb-ipam as a conflist driven through libcni (the library containerd and CRI-O
//! embed), on two "nodes" — namespaces joined by a veth carrier — with one pod each. libcni runs on
//! each node (inside its namespace), hands the cached result to CHECK as `prevResult`, and DELs.
//! The pods get distinct addresses from one shared plumb-ipam store, reach each other over the VXLAN,
//! pass CHECK, and after DEL (twice) nothing of theirs is left on the nodes or in the store, while the
//! shared bridge and VTEP stay.

use conformance::libcni::Driver;
use conformance::netns::Netns;
use conformance::plugin::Outcome;
use conformance::result::first_address;
use conformance::skip::skip_unless_netns;
use conformance::{unique_name, TempDir};
use serde_json::{json, Value};
use std::path::Path;

const BRIDGE: &str = "lvx0";
const VTEP: &str = "lvx0-vx";

fn expect_ok(what: &str, out: &Outcome) {
    assert_eq!(
        out.exit, 0,
        "{what} failed: stdout={} stderr={}",
        out.stdout, out.stderr
    );
}

/// Two node namespaces joined by a carrier veth with 10.77.0.1/.2 and a default route over it.
fn nodes() -> (Netns, Netns) {
    let (a, b) = (Netns::new("lvxa"), Netns::new("lvxb"));
    conformance::netns::veth_between(&a, &b, "car0", 1500);
    for (n, ip, gw) in [
        (&a, "10.77.0.1/24", "10.77.0.2"),
        (&b, "10.77.0.2/24", "10.77.0.1"),
    ] {
        n.exec(&["ip", "addr", "add", ip, "dev", "car0"]);
        n.exec(&["ip", "link", "set", "car0", "up"]);
        n.exec(&["ip", "route", "add", "default", "via", gw]);
    }
    (a, b)
}

fn conflist(version: &str, data: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": unique_name("lvxnet"),
        "plugins": [{
            "type": "plumb-vxlan",
            "bridge": BRIDGE,
            "vni": 4242,
            "group": "224.0.0.88",
            "ipam": {
                "type": "plumb-ipam",
                "range": "192.168.77.0/24",
                "dataDir": data.display().to_string(),
            },
        }],
    })
}

/// plumb-ipam's reservation records (`att-`) and address claims (`ip-`) under `dataDir`.
fn reservations(data: &Path) -> usize {
    conformance::ipam_records(data, &["ip-", "att-"]).len()
}

fn links(node: &Netns) -> String {
    node.exec(&["ip", "-o", "link", "show"])
}

fn run(version: &str) {
    let test = &format!("libcni_vxlan_{version}");
    if skip_unless_netns(test) {
        return;
    }
    let (a, b) = nodes();
    let data = TempDir::new("lvxd");
    let config = conflist(version, data.path());
    let Some(on_a) = Driver::new(test, &config) else {
        return;
    };
    let on_a = on_a.ifname("net1").on_node(&a.name);
    let on_b = Driver::new(test, &config)
        .expect("driver built above")
        .ifname("net1")
        .on_node(&b.name);
    let (pod_a, pod_b) = (Netns::new("lvxpa"), Netns::new("lvxpb"));

    let ra = on_a.add(&pod_a.path());
    expect_ok("ADD on node A", &ra);
    let rb = on_b.add(&pod_b.path());
    expect_ok("ADD on node B", &rb);
    let (ip_a, ip_b) = (first_address(&ra.json()), first_address(&rb.json()));
    assert_ne!(ip_a, ip_b, "one shared store must give distinct addresses");
    for node in [&a, &b] {
        let d = node.exec(&["ip", "-d", "link", "show", VTEP]);
        assert!(
            d.contains("vxlan id 4242") && d.contains("group 224.0.0.88") && d.contains("mtu 1450"),
            "VTEP on {}: {d}",
            node.name
        );
    }
    assert!(
        pod_a.try_exec(&["ping", "-c", "2", "-W", "2", &ip_b]),
        "pod A ({ip_a}) cannot reach pod B ({ip_b}) over the VXLAN"
    );

    expect_ok("CHECK on node A", &on_a.check(&pod_a.path()));
    expect_ok("CHECK on node B", &on_b.check(&pod_b.path()));

    expect_ok("DEL on node A", &on_a.del(&pod_a.path()));
    expect_ok("DEL on node B", &on_b.del(&pod_b.path()));
    expect_ok("second DEL on node A", &on_a.del(&pod_a.path()));
    assert_eq!(reservations(data.path()), 0, "plumb-ipam records left");
    for node in [&a, &b] {
        let l = links(node);
        assert!(!l.contains(" plb"), "host veth left on {}: {l}", node.name);
        assert!(
            l.contains(BRIDGE) && l.contains(VTEP),
            "the shared bridge and VTEP must stay on {}: {l}",
            node.name
        );
    }
    assert!(
        !pod_a.exec(&["ip", "-o", "link"]).contains("net1"),
        "net1 left in pod A"
    );
}

#[test]
fn libcni_vxlan_1_0_0() {
    run("1.0.0");
}

#[test]
fn libcni_vxlan_0_4_0() {
    run("0.4.0");
}
