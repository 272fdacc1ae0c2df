//! plumb-vxlan against real network namespaces.
//!
//! Every test builds its own fabric: two "node" namespaces joined by a veth carrier `car0` (IPv4
//! 10.99.0.1/.2 or IPv6 fd00:99::1/::2, each node with a default route out of the carrier), pod
//! namespaces with a primary `eth0` (a veth to their node, with an address and a default route, as a
//! primary CNI leaves it) and, for a router pod, an "outside" namespace that sits on the far end of the
//! router pod's eth0 and nowhere else. plumb-vxlan runs inside a node namespace (`ip netns exec`) and
//! gives pods `net1` on the overlay 192.168.50.0/24 (plumb-ipam, file store shared by both nodes).
//! Namespace, bridge and network names and IPAM data directories are unique per test, so the tests run
//! in parallel; traffic only flows between the namespaces a test made.

use conformance::iproute::{ifnames, parse_json};
use conformance::netns::Netns;
use conformance::plugin::{Call, Outcome};
use conformance::result::{first_address, host_veth};
use conformance::skip::unavailable;
use conformance::skip::{have_command, skip};
use conformance::{plumb_bin, unique_name, TempDir};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

const IFNAME: &str = "net1";
const CARRIER: &str = "car0";
const VNI: u64 = 42;
const GROUP: &str = "224.0.0.88";
const GROUP6: &str = "ff05::88";
const OVERLAY: &str = "192.168.50.0/24";
const ROUTER_IP: &str = "192.168.50.254";
const OUTSIDE_NET: &str = "172.31.0.0/24";
const OUTSIDE_IP: &str = "172.31.0.1";
const ROUTER_ETH0_IP: &str = "172.31.0.2";
const ROUTER_TABLE: &str = "plumb_router";
const ZERO_MAC: &str = "00:00:00:00:00:00";

// ---------------------------------------------------------------------------------------------------
// Fixtures

fn vxlan_bin() -> PathBuf {
    plumb_bin("plumb-vxlan")
}

fn flags(link: &Value) -> Vec<String> {
    link["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

/// Runs a command in a namespace; (success, stdout + stderr).
fn try_in(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `ip -d -j link show <name>` in a namespace, the one entry.
fn link_in(ns: &Netns, name: &str) -> Value {
    parse_json(&ns.exec(&["ip", "-d", "-j", "link", "show", name]))[0].clone()
}

fn mtu_in(ns: &Netns, name: &str) -> u64 {
    link_in(ns, name)["mtu"]
        .as_u64()
        .unwrap_or_else(|| panic!("no mtu for {name}"))
}

fn links_in(ns: &Netns) -> BTreeSet<String> {
    ifnames(&parse_json(&ns.exec(&["ip", "-j", "link", "show"])))
}

/// The nftables tables of a namespace, as "family name".
fn tables_in(ns: &Netns) -> BTreeSet<String> {
    if !have_command("nft") {
        return BTreeSet::new();
    }
    parse_json(&ns.exec(&["nft", "-j", "list", "tables"]))["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("table"))
        .map(|t| {
            format!(
                "{} {}",
                t["family"].as_str().unwrap_or(""),
                t["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn sysctl_in(ns: &Netns, key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.exec(&["cat", &path]).trim().to_string()
}

/// Asserts a CNI error with `code` whose msg contains every needle (case-insensitively).
fn assert_err(out: &Outcome, code: u64, needles: &[&str]) -> Value {
    let e = out.err(code);
    let msg = e["msg"].as_str().unwrap_or_default().to_string();
    for n in needles {
        assert!(
            msg.to_ascii_lowercase().contains(&n.to_ascii_lowercase()),
            "error message {msg:?} does not name {n:?}: {e}"
        );
    }
    e
}

/// One node: a namespace with the carrier `car0` and its underlay address.
struct Node {
    ns: Netns,
    addr: String,
}

impl Node {
    fn sh(&self, args: &[&str]) -> String {
        self.ns.exec(args)
    }

    fn json(&self, args: &[&str]) -> Value {
        parse_json(&self.sh(args))
    }

    fn link(&self, name: &str) -> Value {
        link_in(&self.ns, name)
    }

    fn mtu(&self, name: &str) -> u64 {
        mtu_in(&self.ns, name)
    }

    fn links(&self) -> BTreeSet<String> {
        links_in(&self.ns)
    }

    fn has_link(&self, name: &str) -> bool {
        self.links().contains(name)
    }

    fn links_of_type(&self, kind: &str) -> BTreeSet<String> {
        ifnames(&self.json(&["ip", "-j", "link", "show", "type", kind]))
    }

    /// Host veths made by plumb (`plb` + 12 hex).
    fn plb_veths(&self) -> BTreeSet<String> {
        self.links()
            .into_iter()
            .filter(|l| l.starts_with("plb"))
            .collect()
    }

    fn ports(&self, bridge: &str) -> BTreeSet<String> {
        ifnames(&self.json(&["ip", "-j", "link", "show", "master", bridge]))
    }

    /// The `dst` of every all-zero-MAC FDB entry of the VTEP, in the kernel's order (duplicates kept).
    fn flood_list(&self, vtep: &str) -> Vec<String> {
        let v = self.json(&["bridge", "-j", "fdb", "show", "dev", vtep]);
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["mac"] == ZERO_MAC)
            .map(|e| e["dst"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// A pod: its namespace, container ID, and the node-side end of its primary eth0.
struct Pod {
    ns: Option<Netns>,
    path: String,
    cid: String,
    /// Where eth0's peer lives, for a router pod: the outside host.
    outside: Option<Netns>,
}

impl Pod {
    fn ns(&self) -> &Netns {
        self.ns.as_ref().expect("pod netns already deleted")
    }

    fn exec(&self, args: &[&str]) -> String {
        self.ns().exec(args)
    }

    fn mtu(&self, name: &str) -> u64 {
        mtu_in(self.ns(), name)
    }

    fn links(&self) -> BTreeSet<String> {
        links_in(self.ns())
    }

    fn ping(&self, ip: &str) -> (bool, String) {
        try_in(&self.ns().name, &["ping", "-c1", "-W2", ip])
    }

    /// A ping with DF set and `size` bytes of payload.
    fn ping_df(&self, ip: &str, size: u64) -> (bool, String) {
        try_in(
            &self.ns().name,
            &[
                "ping",
                "-M",
                "do",
                "-s",
                &size.to_string(),
                "-c1",
                "-W2",
                ip,
            ],
        )
    }

    fn outside(&self) -> &Netns {
        self.outside.as_ref().expect("not a router pod")
    }

    /// Deletes the namespace now (the pod's path stays, as a runtime would still pass it).
    fn delete_netns(&mut self) {
        self.ns = None;
    }
}

/// Two nodes joined by a carrier, one overlay network (bridge, VTEP, network name, IPAM data dir).
struct Fabric {
    nodes: Vec<Node>,
    v6: bool,
    bridge: String,
    vtep: String,
    net: String,
    data: TempDir,
    next_pod: AtomicU32,
}

impl Fabric {
    /// Two nodes with a veth carrier of `carrier_mtu`, IPv4 or IPv6 underlay.
    fn new(carrier_mtu: u32, v6: bool) -> Fabric {
        let a = Netns::new("vxa");
        let b = Netns::new("vxb");
        conformance::netns::veth_between(&a, &b, CARRIER, carrier_mtu);
        let addrs: [&str; 2] = if v6 {
            ["fd00:99::1", "fd00:99::2"]
        } else {
            ["10.99.0.1", "10.99.0.2"]
        };
        let nodes: Vec<Node> = [a, b]
            .into_iter()
            .zip(addrs)
            .map(|(ns, addr)| Node {
                ns,
                addr: addr.to_string(),
            })
            .collect();
        for (i, n) in nodes.iter().enumerate() {
            let other = addrs[1 - i];
            // Nodes only bridge; they must not route pods anywhere on their own.
            n.sh(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
            n.sh(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"]);
            if v6 {
                n.sh(&[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{}/64", n.addr),
                    "dev",
                    CARRIER,
                    "nodad",
                ]);
            } else {
                n.sh(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/24", n.addr),
                    "dev",
                    CARRIER,
                ]);
            }
            n.sh(&["ip", "link", "set", CARRIER, "up"]);
            n.sh(&[
                "ip", "route", "add", "default", "via", other, "dev", CARRIER,
            ]);
        }
        let bridge = unique_name("vx");
        Fabric {
            vtep: format!("{bridge}-vx"),
            net: format!("vxnet-{bridge}"),
            bridge,
            nodes,
            v6,
            data: TempDir::new("vxipam"),
            next_pod: AtomicU32::new(1),
        }
    }

    fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Both nodes' carrier addresses (the `peers` of a unicast fabric).
    fn peers(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// The default MTU overhead for this fabric's underlay.
    fn overhead(&self) -> u64 {
        if self.v6 {
            70
        } else {
            50
        }
    }

    /// A plumb-vxlan config (cniVersion 1.1.0) with plumb-ipam on the overlay; `extra` keys override,
    /// `ipam` keys are merged into the ipam section, a null removes a key.
    fn conf(&self, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0",
            "name": self.net,
            "type": "plumb-vxlan",
            "bridge": self.bridge,
            "vni": VNI,
            "ipam": {
                "type": "plumb-ipam",
                "range": OVERLAY,
                "dataDir": self.data.path(),
            },
        });
        for (k, v) in extra.as_object().expect("extra is an object") {
            if k == "ipam" {
                for (ik, iv) in v.as_object().expect("ipam is an object") {
                    c["ipam"][ik] = iv.clone();
                }
            } else if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn group_conf(&self, extra: Value) -> Value {
        let mut c = self.conf(extra);
        c["group"] = json!(GROUP);
        c
    }

    fn peers_conf(&self, extra: Value) -> Value {
        let mut c = self.conf(extra);
        c["peers"] = json!(self.peers());
        c
    }

    /// A pod on node `node` with a primary eth0 of `eth0_mtu` (a veth to the node, address and default
    /// route), as a primary CNI leaves it.
    fn pod(&self, node: usize, eth0_mtu: u32) -> Pod {
        let k = self.next_pod.fetch_add(1, Ordering::Relaxed);
        assert!(k < 250, "too many pods");
        let ns = Netns::new("vxp");
        let n = self.node(node);
        let peer = format!("pp{k}");
        let mtu = eth0_mtu.to_string();
        conformance::netns::run(&[
            "ip", "link", "add", &peer, "netns", &n.ns.name, "mtu", &mtu, "type", "veth", "peer",
            "name", "eth0", "netns", &ns.name, "mtu", &mtu,
        ]);
        n.sh(&[
            "ip",
            "addr",
            "add",
            &format!("172.20.{k}.1/24"),
            "dev",
            &peer,
        ]);
        n.sh(&["ip", "link", "set", &peer, "up"]);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("172.20.{k}.2/24"),
            "dev",
            "eth0",
        ]);
        ns.exec(&["ip", "link", "set", "eth0", "up"]);
        ns.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("172.20.{k}.1"),
        ]);
        Pod {
            path: ns.path(),
            cid: format!("vx-{}", ns.name),
            ns: Some(ns),
            outside: None,
        }
    }

    /// A router pod (for whichever node runs its ADD): its eth0 (MTU `eth0_mtu`) leads to an "outside" namespace holding
    /// 172.31.0.1/24 and nothing else, with no route to the overlay; forwarding is off until the plugin
    /// turns it on.
    fn router_pod(&self, eth0_mtu: u32) -> Pod {
        let ns = Netns::new("vxr");
        let outside = Netns::new("vxo");
        let mtu = eth0_mtu.to_string();
        conformance::netns::run(&[
            "ip",
            "link",
            "add",
            "up0",
            "netns",
            &outside.name,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns.name,
            "mtu",
            &mtu,
        ]);
        outside.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{OUTSIDE_IP}/24"),
            "dev",
            "up0",
        ]);
        outside.exec(&["ip", "link", "set", "up0", "up"]);
        outside.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{ROUTER_ETH0_IP}/24"),
            "dev",
            "eth0",
        ]);
        ns.exec(&["ip", "link", "set", "eth0", "up"]);
        ns.exec(&["ip", "route", "add", "default", "via", OUTSIDE_IP]);
        ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"]);
        Pod {
            path: ns.path(),
            cid: format!("vx-{}", ns.name),
            ns: Some(ns),
            outside: Some(outside),
        }
    }

    fn call(&self, command: &str, pod: &Pod, conf: &Value) -> Call {
        Call::new(command, &pod.cid, &pod.path, IFNAME, conf)
    }

    /// Runs plumb-vxlan on node `node`.
    fn run(&self, node: usize, call: &Call) -> Outcome {
        call.run_in(&vxlan_bin(), &self.node(node).ns.name)
    }

    fn add(&self, node: usize, pod: &Pod, conf: &Value) -> Value {
        self.run(node, &self.call("ADD", pod, conf)).ok()
    }

    fn del(&self, node: usize, pod: &Pod, conf: &Value) {
        self.run(node, &self.call("DEL", pod, conf)).ok();
    }

    fn check(&self, node: usize, pod: &Pod, conf: &Value, prev: &Value) -> Outcome {
        let mut c = conf.clone();
        c["prevResult"] = prev.clone();
        self.run(node, &self.call("CHECK", pod, &c))
    }

    /// STATUS, GC: no container, namespace or interface.
    fn network_call(&self, command: &str, conf: &Value) -> Call {
        Call::new(command, "", "", "", conf)
            .without("CNI_CONTAINERID")
            .without("CNI_NETNS")
            .without("CNI_IFNAME")
    }

    /// IPAM reservations (`ip-*` files) in the shared data directory.
    fn reservations(&self) -> BTreeSet<String> {
        conformance::ipam_records(self.data.path(), &["ip-"])
    }

    /// What a failed ADD on `node` for `pod` must not change.
    fn snapshot(&self, node: usize, pod: &Pod) -> Snapshot {
        Snapshot {
            node_links: self.node(node).links(),
            pod_links: pod.links(),
            pod_tables: tables_in(pod.ns()),
            reservations: self.reservations(),
        }
    }

    /// Asserts the VTEP on `node` is a vxlan port of the bridge with VNI 42, port 4789, on car0, up.
    fn assert_vtep(&self, node: usize) -> Value {
        let n = self.node(node);
        let v = n.link(&self.vtep);
        let d = &v["linkinfo"]["info_data"];
        assert_eq!(v["linkinfo"]["info_kind"], "vxlan", "{v}");
        assert_eq!(d["id"], VNI, "{v}");
        assert_eq!(d["port"], 4789, "{v}");
        assert_eq!(d["link"], CARRIER, "{v}");
        assert_eq!(v["master"], self.bridge.as_str(), "{v}");
        assert!(flags(&v).contains(&"UP".to_string()), "{v}");
        let br = n.link(&self.bridge);
        assert_eq!(br["linkinfo"]["info_kind"], "bridge", "{br}");
        assert!(flags(&br).contains(&"UP".to_string()), "{br}");
        v
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    node_links: BTreeSet<String>,
    pod_links: BTreeSet<String>,
    pod_tables: BTreeSet<String>,
    reservations: BTreeSet<String>,
}

/// The rules of table `plumb_router` in a pod's ruleset, and its chains (hook, type).
fn router_rules(pod: &Pod) -> (Vec<Value>, Vec<Value>) {
    let rs = parse_json(&pod.exec(&["nft", "-j", "list", "ruleset"]));
    let objs = rs["nftables"].as_array().cloned().unwrap_or_default();
    let chains = objs
        .iter()
        .filter_map(|o| o.get("chain"))
        .filter(|c| c["table"] == ROUTER_TABLE)
        .cloned()
        .collect();
    let rules = objs
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["table"] == ROUTER_TABLE)
        .cloned()
        .collect();
    (chains, rules)
}

/// Observes echo requests arriving at the outside host: rule 0 counts those from the router's eth0
/// address, rule 1 those from the overlay subnet (nft counters; no conntrack involved).
fn observe_outside(outside: &Netns) {
    outside.exec(&["nft", "add", "table", "ip", "obs"]);
    outside.exec(&[
        "nft",
        "add chain ip obs in { type filter hook input priority 0; }",
    ]);
    outside.exec(&[
        "nft",
        &format!("add rule ip obs in ip saddr {ROUTER_ETH0_IP} icmp type echo-request counter"),
    ]);
    outside.exec(&[
        "nft",
        &format!("add rule ip obs in ip saddr {OVERLAY} icmp type echo-request counter"),
    ]);
}

/// Packet counts of the outside observer's rules, in order.
fn observed(outside: &Netns) -> Vec<u64> {
    let v = parse_json(&outside.exec(&["nft", "-j", "list", "table", "ip", "obs"]));
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("rule"))
        .map(|r| {
            r["expr"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|e| e.get("counter"))
                .and_then(|c| c["packets"].as_u64())
                .unwrap_or(0)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// 1-3. Gateway: a client pod reaches an outside host through a router pod over the overlay

#[derive(Clone, Copy, PartialEq, Debug)]
enum Flood {
    Group,
    Peers,
}

fn gateway_scenario(test: &str, flood: Flood, single_node: bool) {
    if unavailable(test, &["ping", "bridge"]) {
        return;
    }
    let fab = Fabric::new(1500, false);
    let (cn, rn) = (0, if single_node { 0 } else { 1 });
    let client = fab.pod(cn, 1500);
    let router = fab.router_pod(1500);

    // Before the overlay: the client has no way to the outside host, and the outside host has no
    // route to the overlay subnet (so an answer to an overlay source is impossible).
    assert!(!client.ping(OUTSIDE_IP).0, "client reaches outside already");
    let (routed, text) = try_in(
        &router.outside().name,
        &["ip", "route", "get", "192.168.50.10"],
    );
    assert!(!routed, "outside host has a route to the overlay: {text}");

    let base = |extra: Value| match flood {
        Flood::Group => fab.group_conf(extra),
        Flood::Peers => fab.peers_conf(extra),
    };
    let router_conf = base(json!({
        "role": "router",
        "runtimeConfig": {"ips": [format!("{ROUTER_IP}/24")]},
    }));
    let client_conf = base(json!({
        "ipam": {"routes": [{"dst": OUTSIDE_NET, "gw": ROUTER_IP}]},
    }));
    let rr = fab.add(rn, &router, &router_conf);
    assert_eq!(first_address(&rr), ROUTER_IP, "{rr}");
    let rc = fab.add(cn, &client, &client_conf);
    let client_ip = first_address(&rc);
    assert!(client_ip.starts_with("192.168.50."), "{rc}");

    // Host side on each node used: bridge + VTEP with the configured VXLAN settings.
    let used: BTreeSet<usize> = [cn, rn].into();
    for &n in &used {
        let v = fab.assert_vtep(n);
        let d = &v["linkinfo"]["info_data"];
        match flood {
            Flood::Group => assert_eq!(d["group"], GROUP, "node {n}: {v}"),
            Flood::Peers => assert!(d.get("group").is_none(), "node {n}: {v}"),
        }
        println!(
            "{test}: node {n} vtep {} vni {} group {} mtu {}",
            fab.vtep, d["id"], d["group"], v["mtu"]
        );
    }
    if flood == Flood::Peers {
        for &n in &used {
            let other = fab.node(1 - n).addr.clone();
            let fl = fab.node(n).flood_list(&fab.vtep);
            println!("{test}: node {n} flood list {fl:?}");
            assert_eq!(
                fl,
                vec![other],
                "node {n}: exactly one all-zero FDB entry, to the other node"
            );
        }
    }

    // The client routes the outside subnet via the router's overlay address on net1.
    let routes = parse_json(&client.exec(&["ip", "-j", "route", "show", OUTSIDE_NET]));
    assert_eq!(routes[0]["gateway"], ROUTER_IP, "{routes}");
    assert_eq!(routes[0]["dev"], IFNAME, "{routes}");

    // Router pod: forwarding on, masquerade in table plumb_router.
    assert_eq!(
        sysctl_in(router.ns(), "net.ipv4.ip_forward"),
        "1",
        "router pod ip_forward"
    );
    let have_nft = have_command("nft");
    if have_nft {
        let (chains, rules) = router_rules(&router);
        println!("{test}: router chains {chains:?}");
        assert!(
            chains
                .iter()
                .any(|c| c["family"] == "ip" && c["hook"] == "postrouting" && c["type"] == "nat"),
            "no ip nat postrouting chain in {ROUTER_TABLE}: {chains:?}"
        );
        let masq: Vec<&Value> = rules
            .iter()
            .filter(|r| r["expr"].to_string().contains("masquerade"))
            .collect();
        assert_eq!(masq.len(), 1, "one masquerade rule expected: {rules:?}");
        let expr = masq[0]["expr"].to_string();
        assert!(
            expr.contains("\"eth0\"") && expr.contains("192.168.50.0"),
            "masquerade rule does not match the overlay subnet leaving eth0: {expr}"
        );
        observe_outside(router.outside());
    } else {
        skip(
            test,
            "no `nft` command: the plumb_router masquerade rule is NOT checked",
        );
    }

    // Traffic: client -> router over the overlay, then client -> outside through the router.
    let (ok, text) = client.ping(ROUTER_IP);
    assert!(ok, "client cannot ping the router over the overlay: {text}");
    let (ok, text) = client.ping(OUTSIDE_IP);
    assert!(
        ok,
        "client cannot reach the outside host via the router: {text}"
    );
    if have_nft {
        let seen = observed(router.outside());
        println!("{test}: outside saw echo requests from [router eth0, overlay] = {seen:?}");
        assert!(seen[0] >= 1, "no request from {ROUTER_ETH0_IP}: {seen:?}");
        assert_eq!(seen[1], 0, "un-masqueraded overlay source seen: {seen:?}");
    }

    fab.del(cn, &client, &client_conf);
    fab.del(rn, &router, &router_conf);
    assert_eq!(client.links(), BTreeSet::from(["lo".into(), "eth0".into()]));
    assert_eq!(router.links(), BTreeSet::from(["lo".into(), "eth0".into()]));
    if have_nft {
        let (chains, rules) = router_rules(&router);
        assert!(
            chains.is_empty() && rules.is_empty(),
            "router chains left after DEL: {chains:?} {rules:?}"
        );
    }
    assert!(fab.reservations().is_empty(), "{:?}", fab.reservations());
    for &n in &used {
        assert!(fab.node(n).plb_veths().is_empty());
    }
}

#[test]
fn gateway_over_multicast_group_masquerades_to_the_outside() {
    gateway_scenario(
        "gateway_over_multicast_group_masquerades_to_the_outside",
        Flood::Group,
        false,
    );
}

#[test]
fn gateway_over_unicast_peers_masquerades_to_the_outside() {
    gateway_scenario(
        "gateway_over_unicast_peers_masquerades_to_the_outside",
        Flood::Peers,
        false,
    );
}

#[test]
fn gateway_on_a_single_node() {
    gateway_scenario("gateway_on_a_single_node", Flood::Group, true);
}

/// The control for the tests above: with `"masquerade": false` the router still forwards, the outside
/// host sees the client's overlay address and, having no route back, never answers.
#[test]
fn gateway_without_masquerade_gets_no_answer() {
    let test = "gateway_without_masquerade_gets_no_answer";
    if unavailable(test, &["ping", "nft"]) {
        return;
    }
    let fab = Fabric::new(1500, false);
    let client = fab.pod(0, 1500);
    let router = fab.router_pod(1500);
    let router_conf = fab.group_conf(json!({
        "role": "router",
        "masquerade": false,
        "runtimeConfig": {"ips": [format!("{ROUTER_IP}/24")]},
    }));
    let client_conf = fab.group_conf(json!({
        "ipam": {"routes": [{"dst": OUTSIDE_NET, "gw": ROUTER_IP}]},
    }));
    fab.add(1, &router, &router_conf);
    fab.add(0, &client, &client_conf);
    assert_eq!(sysctl_in(router.ns(), "net.ipv4.ip_forward"), "1");
    let (_, rules) = router_rules(&router);
    assert!(
        !rules
            .iter()
            .any(|r| r["expr"].to_string().contains("masquerade")),
        "masquerade rule despite \"masquerade\": false: {rules:?}"
    );
    observe_outside(router.outside());
    let (ok, _) = client.ping(ROUTER_IP);
    assert!(ok, "client cannot ping the router over the overlay");
    let (ok, text) = client.ping(OUTSIDE_IP);
    assert!(!ok, "answered without masquerade: {text}");
    let seen = observed(router.outside());
    println!("{test}: outside saw echo requests from [router eth0, overlay] = {seen:?}");
    assert_eq!(seen[0], 0, "{seen:?}");
    assert!(
        seen[1] >= 1,
        "forwarded request never reached the outside: {seen:?}"
    );
    fab.del(0, &client, &client_conf);
    fab.del(1, &router, &router_conf);
    assert!(fab.reservations().is_empty());
}

// ---------------------------------------------------------------------------------------------------
// 4. MTU

/// Two pods (eth0 as large as the carrier, so nothing clamps) on different nodes: every MTU is the
/// carrier's minus the VXLAN overhead, and DF pings of exactly that size cross, one byte more does not.
fn mtu_case(test: &str, carrier: u32, v6: bool, flood: Flood, want: u64) {
    if unavailable(test, &["ping", "bridge"]) {
        return;
    }
    let fab = Fabric::new(carrier, v6);
    assert_eq!(carrier as u64 - fab.overhead(), want);
    let conf = match (flood, v6) {
        (Flood::Peers, _) => fab.peers_conf(json!({})),
        (Flood::Group, false) => fab.group_conf(json!({})),
        (Flood::Group, true) => fab.conf(json!({"group": GROUP6})),
    };
    let a = fab.pod(0, carrier);
    let b = fab.pod(1, carrier);
    let ra = fab.add(0, &a, &conf);
    let rb = fab.add(1, &b, &conf);
    for (n, pod, r) in [(0, &a, &ra), (1, &b, &rb)] {
        let node = fab.node(n);
        fab.assert_vtep(n);
        let hv = host_veth(r);
        let got = [
            ("vtep", node.mtu(&fab.vtep)),
            ("bridge", node.mtu(&fab.bridge)),
            ("host veth", node.mtu(&hv)),
            ("net1", pod.mtu(IFNAME)),
        ];
        println!(
            "{test}: carrier {carrier} ({}, {flood:?}) node {n}: {got:?}",
            if v6 { "IPv6" } else { "IPv4" }
        );
        for (what, m) in got {
            assert_eq!(m, want, "node {n}: {what} MTU");
        }
        // The result: [bridge, host veth, container, vtep], each with its MTU.
        let ifs = r["interfaces"].as_array().expect("interfaces");
        assert_eq!(ifs.len(), 4, "{r}");
        assert_eq!(ifs[0]["name"], fab.bridge.as_str(), "{r}");
        assert!(hv.starts_with("plb") && hv.len() == 15, "host veth {hv}");
        assert_eq!(ifs[2]["name"], IFNAME, "{r}");
        assert_eq!(ifs[2]["sandbox"], pod.path.as_str(), "{r}");
        assert_eq!(ifs[3]["name"], fab.vtep.as_str(), "{r}");
        for (i, iface) in ifs.iter().enumerate() {
            assert_eq!(iface["mtu"], want, "interface {i} of {r}");
            if i != 2 {
                assert!(iface.get("sandbox").is_none(), "interface {i} of {r}");
            }
        }
        assert_eq!(r["ips"][0]["interface"], 2, "{r}");
    }
    let (ok, text) = a.ping_df(&first_address(&rb), want - 28);
    println!("{test}: DF ping -s {} a -> b: {ok}", want - 28);
    assert!(
        ok,
        "DF ping of {} bytes (MTU {want}) failed: {text}",
        want - 28
    );
    let (ok, text) = b.ping_df(&first_address(&ra), want - 28);
    assert!(ok, "DF ping of {} bytes b -> a failed: {text}", want - 28);
    let (ok, text) = a.ping_df(&first_address(&rb), want - 27);
    println!("{test}: DF ping -s {} a -> b: {ok}", want - 27);
    assert!(
        !ok,
        "DF ping of {} bytes passed an MTU of {want}: {text}",
        want - 27
    );
    fab.del(0, &a, &conf);
    fab.del(1, &b, &conf);
}

#[test]
fn mtu_ipv4_underlay_1500_gives_1450() {
    mtu_case(
        "mtu_ipv4_underlay_1500_gives_1450",
        1500,
        false,
        Flood::Group,
        1450,
    );
}

#[test]
fn mtu_ipv6_unicast_underlay_1500_gives_1430() {
    mtu_case(
        "mtu_ipv6_unicast_underlay_1500_gives_1430",
        1500,
        true,
        Flood::Peers,
        1430,
    );
}

#[test]
fn mtu_ipv6_multicast_underlay_1500_gives_1430() {
    mtu_case(
        "mtu_ipv6_multicast_underlay_1500_gives_1430",
        1500,
        true,
        Flood::Group,
        1430,
    );
}

#[test]
fn mtu_ipv4_underlay_9000_gives_8950() {
    mtu_case(
        "mtu_ipv4_underlay_9000_gives_8950",
        9000,
        false,
        Flood::Group,
        8950,
    );
}

#[test]
fn mtu_clamped_to_the_pods_primary_interface() {
    let test = "mtu_clamped_to_the_pods_primary_interface";
    if unavailable(test, &["ping", "bridge"]) {
        return;
    }
    let fab = Fabric::new(1500, false);
    let client = fab.pod(0, 1500);
    let router = fab.router_pod(1400);
    let router_conf = fab.group_conf(json!({
        "role": "router",
        "runtimeConfig": {"ips": [format!("{ROUTER_IP}/24")]},
    }));
    let client_conf = fab.group_conf(json!({}));
    let rr = fab.add(1, &router, &router_conf);
    let rc = fab.add(0, &client, &client_conf);
    let b = fab.node(1);
    let got = [
        ("router eth0", router.mtu("eth0")),
        ("router net1", router.mtu(IFNAME)),
        ("router host veth", b.mtu(&host_veth(&rr))),
        ("node B vtep", b.mtu(&fab.vtep)),
        ("node B bridge", b.mtu(&fab.bridge)),
        ("client net1", client.mtu(IFNAME)),
    ];
    println!("{test}: {got:?}");
    assert_eq!(
        got.iter().map(|g| g.1).collect::<Vec<_>>(),
        vec![1400, 1400, 1400, 1450, 1450, 1450],
        "{got:?}"
    );
    assert_eq!(rr["interfaces"][2]["mtu"], 1400, "{rr}");
    assert_eq!(rr["interfaces"][1]["mtu"], 1400, "{rr}");
    assert_eq!(rr["interfaces"][3]["mtu"], 1450, "{rr}");
    let (ok, text) = client.ping_df(ROUTER_IP, 1400 - 28);
    assert!(
        ok,
        "DF ping of 1372 bytes to the clamped router failed: {text}"
    );
    let (ok, _) = router.ping_df(&first_address(&rc), 1400 - 27);
    assert!(!ok, "DF ping of 1373 bytes left a 1400-byte net1");
    fab.del(0, &client, &client_conf);
    fab.del(1, &router, &router_conf);
}

#[test]
fn mtu_explicit_value_and_one_too_large() {
    let test = "mtu_explicit_value_and_one_too_large";
    if unavailable(test, &["bridge"]) {
        return;
    }
    let fab = Fabric::new(1500, false);
    let pod = fab.pod(0, 1500);
    // One byte over the derived 1450: code 7 naming both numbers, nothing made.
    let before = fab.snapshot(0, &pod);
    let too_big = fab.group_conf(json!({"mtu": 1451}));
    let out = fab.run(0, &fab.call("ADD", &pod, &too_big));
    println!(
        "{test}: mtu 1451 -> exit {} {}",
        out.exit,
        out.stdout.trim()
    );
    assert_err(&out, 7, &["1451", "1450"]);
    assert_eq!(fab.snapshot(0, &pod), before);

    let conf = fab.group_conf(json!({"mtu": 1400}));
    let r = fab.add(0, &pod, &conf);
    let node = fab.node(0);
    let hv = host_veth(&r);
    println!(
        "{test}: mtu 1400 -> net1 {} host veth {} bridge {} vtep {}",
        pod.mtu(IFNAME),
        node.mtu(&hv),
        node.mtu(&fab.bridge),
        node.mtu(&fab.vtep)
    );
    assert_eq!(pod.mtu(IFNAME), 1400);
    assert_eq!(node.mtu(&hv), 1400);
    assert_eq!(r["interfaces"][2]["mtu"], 1400, "{r}");
    fab.del(0, &pod, &conf);
}

// ---------------------------------------------------------------------------------------------------
// 5. Parallel ADDs on a fresh node

#[test]
fn parallel_adds_make_one_bridge_one_vtep_one_fdb_entry_per_peer() {
    let test = "parallel_adds_make_one_bridge_one_vtep_one_fdb_entry_per_peer";
    if unavailable(test, &["bridge"]) {
        return;
    }
    const N: usize = 16;
    let fab = Fabric::new(1500, false);
    // Both nodes plus a third underlay address: node A skips its own, floods to the other two.
    let mut peers = fab.peers();
    peers.push("10.99.0.3".into());
    let conf = fab.conf(json!({"peers": peers}));
    let pods: Vec<Pod> = (0..N).map(|_| fab.pod(0, 1500)).collect();
    let node = fab.node(0);
    assert!(!node.has_link(&fab.bridge));
    let bin = vxlan_bin();
    let run_all = |cmd: &str| -> Vec<Outcome> {
        std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .map(|p| {
                    let call = fab.call(cmd, p, &conf);
                    let (bin, ns) = (&bin, &node.ns.name);
                    s.spawn(move || call.run_in(bin, ns))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let results: Vec<Value> = run_all("ADD").iter().map(Outcome::ok).collect();
    assert_eq!(
        node.links_of_type("bridge"),
        BTreeSet::from([fab.bridge.clone()])
    );
    assert_eq!(
        node.links_of_type("vxlan"),
        BTreeSet::from([fab.vtep.clone()])
    );
    fab.assert_vtep(0);
    let mut fl = node.flood_list(&fab.vtep);
    println!("{test}: flood list after {N} parallel ADDs: {fl:?}");
    fl.sort();
    assert_eq!(fl, vec!["10.99.0.2".to_string(), "10.99.0.3".to_string()]);
    let ips: BTreeSet<String> = results.iter().map(first_address).collect();
    assert_eq!(ips.len(), N, "{ips:?}");
    let veths: BTreeSet<String> = results.iter().map(host_veth).collect();
    assert_eq!(veths.len(), N);
    let mut want_ports = veths.clone();
    want_ports.insert(fab.vtep.clone());
    assert_eq!(node.ports(&fab.bridge), want_ports);
    assert_eq!(fab.reservations().len(), N);
    let mtus: BTreeSet<u64> = pods.iter().map(|p| p.mtu(IFNAME)).collect();
    println!("{test}: net1 MTUs {mtus:?}");
    assert_eq!(mtus, BTreeSet::from([1450]));
    for out in run_all("DEL") {
        out.ok();
    }
    assert!(node.plb_veths().is_empty(), "{:?}", node.plb_veths());
    assert!(fab.reservations().is_empty());
    assert_eq!(node.ports(&fab.bridge), BTreeSet::from([fab.vtep.clone()]));
}

// ---------------------------------------------------------------------------------------------------
// 6. The peer list changes

#[test]
fn peers_change_replaces_stale_fdb_entries() {
    let test = "peers_change_replaces_stale_fdb_entries";
    if unavailable(test, &["bridge"]) {
        return;
    }
    let fab = Fabric::new(1500, false);
    let (x, y, z) = ("10.99.0.2", "10.99.0.3", "10.99.0.4");
    let c1 = fab.conf(json!({"peers": [x, y]}));
    let c2 = fab.conf(json!({"peers": [x, z]}));
    let p1 = fab.pod(0, 1500);
    let p2 = fab.pod(0, 1500);
    let node = fab.node(0);
    fab.add(0, &p1, &c1);
    let mut fl = node.flood_list(&fab.vtep);
    println!("{test}: after peers [X, Y]: {fl:?}");
    fl.sort();
    assert_eq!(fl, vec![x.to_string(), y.to_string()]);
    fab.add(0, &p2, &c2);
    let mut fl = node.flood_list(&fab.vtep);
    println!("{test}: after peers [X, Z]: {fl:?}");
    fl.sort();
    assert_eq!(
        fl,
        vec![x.to_string(), z.to_string()],
        "no duplicates, Y gone"
    );
    fab.del(0, &p1, &c1);
    fab.del(0, &p2, &c2);
}

// ---------------------------------------------------------------------------------------------------
// 7. Bad inputs

#[test]
fn bad_inputs_fail_with_code_7_and_leave_nothing() {
    let test = "bad_inputs_fail_with_code_7_and_leave_nothing";
    if unavailable(test, &["bridge"]) {
        return;
    }
    let fab = Fabric::new(1500, false);
    let pod = fab.pod(0, 1500);
    let router = fab.router_pod(1500);
    let peers = json!(fab.peers());
    let cases: Vec<(&str, &Pod, Value, Vec<&str>)> = vec![
        (
            "group and peers",
            &pod,
            fab.conf(json!({"group": GROUP, "peers": peers})),
            vec!["group", "peers"],
        ),
        (
            "neither group nor peers",
            &pod,
            fab.conf(json!({})),
            vec!["group", "peers"],
        ),
        (
            "vni 0",
            &pod,
            fab.group_conf(json!({"vni": 0})),
            vec!["vni"],
        ),
        (
            "vni 16777216",
            &pod,
            fab.group_conf(json!({"vni": 16_777_216u64})),
            vec!["vni"],
        ),
        (
            "group not multicast",
            &pod,
            fab.conf(json!({"group": "10.1.1.1"})),
            vec!["group"],
        ),
        (
            "peers empty",
            &pod,
            fab.conf(json!({"peers": []})),
            vec!["peers"],
        ),
        (
            "peers of mixed families",
            &pod,
            fab.conf(json!({"peers": ["10.99.0.2", "fd00:99::2"]})),
            vec!["peers"],
        ),
        (
            "underlayDevice missing",
            &pod,
            fab.group_conf(json!({"underlayDevice": "nope0"})),
            vec!["underlayDevice"],
        ),
        (
            "mtu too large",
            &pod,
            fab.group_conf(json!({"mtu": 1451})),
            vec!["mtu", "1451", "1450"],
        ),
        (
            "bridge missing",
            &pod,
            fab.group_conf(json!({"bridge": null})),
            vec!["bridge"],
        ),
        (
            "router outInterface missing in the pod",
            &router,
            fab.group_conf(json!({"role": "router", "masquerade": {"outInterface": "nope1"}})),
            vec!["outInterface"],
        ),
    ];
    for (label, p, conf, needles) in &cases {
        let before = fab.snapshot(0, p);
        let out = fab.run(0, &fab.call("ADD", p, conf));
        println!("{test}: {label}: exit {} {}", out.exit, out.stdout.trim());
        assert_ne!(out.exit, 0, "{label}: ADD succeeded");
        assert_err(&out, 7, needles);
        assert_eq!(fab.snapshot(0, p), before, "{label}: something was left");
    }

    // A route that clashes with the pod's own default route fails (the message suggests the two
    // halves) and leaves nothing, not even the bridge and VTEP this ADD created.
    let clash =
        fab.group_conf(json!({"ipam": {"routes": [{"dst": "0.0.0.0/0", "gw": ROUTER_IP}]}}));
    let before = fab.snapshot(0, &pod);
    let out = fab.run(0, &fab.call("ADD", &pod, &clash));
    println!(
        "{test}: clashing default route: exit {} {}",
        out.exit,
        out.stdout.trim()
    );
    assert_ne!(out.exit, 0, "clashing default route: ADD succeeded");
    let msg = out.json()["msg"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("0.0.0.0/1") && msg.contains("128.0.0.0/1"),
        "clash message does not suggest 0.0.0.0/1 + 128.0.0.0/1: {msg}"
    );
    assert_eq!(
        fab.snapshot(0, &pod),
        before,
        "clashing route: something was left"
    );
}

#[test]
fn existing_vtep_with_another_vni_is_refused_and_kept() {
    let test = "existing_vtep_with_another_vni_is_refused_and_kept";
    if unavailable(test, &["bridge"]) {
        return;
    }
    let fab = Fabric::new(1500, false);
    let p1 = fab.pod(0, 1500);
    let p2 = fab.pod(0, 1500);
    let c42 = fab.group_conf(json!({"vni": 42}));
    let c43 = fab.group_conf(json!({"vni": 43}));
    fab.add(0, &p1, &c42);
    let before = fab.snapshot(0, &p2);
    let out = fab.run(0, &fab.call("ADD", &p2, &c43));
    println!(
        "{test}: vni 43 on a vni-42 VTEP: exit {} {}",
        out.exit,
        out.stdout.trim()
    );
    assert_err(&out, 7, &["vni", "42", "43"]);
    assert_eq!(fab.snapshot(0, &p2), before);
    let v = fab.node(0).link(&fab.vtep);
    assert_eq!(v["linkinfo"]["info_data"]["id"], 42, "{v}");
    fab.del(0, &p1, &c42);
}

// ---------------------------------------------------------------------------------------------------
// 8. DEL, CHECK, STATUS

#[test]
fn del_is_idempotent_and_keeps_bridge_and_vtep() {
    let test = "del_is_idempotent_and_keeps_bridge_and_vtep";
    if unavailable(test, &["bridge"]) {
        return;
    }
    let fab = Fabric::new(1500, false);
    let conf = fab.peers_conf(json!({}));
    let node = fab.node(0);
    for how in ["twice", "netns deleted", "CNI_NETNS empty"] {
        let mut pod = fab.pod(0, 1500);
        let r = fab.add(0, &pod, &conf);
        let hv = host_veth(&r);
        assert!(node.has_link(&hv));
        assert_eq!(fab.reservations().len(), 1);
        let mut call = fab.call("DEL", &pod, &conf);
        match how {
            "netns deleted" => pod.delete_netns(),
            "CNI_NETNS empty" => call = call.env("CNI_NETNS", ""),
            _ => {}
        }
        for round in 0..2 {
            let out = fab.run(0, &call);
            assert_eq!(
                out.exit, 0,
                "{how}, DEL {round}: {} {}",
                out.stdout, out.stderr
            );
            assert!(!node.has_link(&hv), "{how}, DEL {round}: host veth left");
            assert!(
                fab.reservations().is_empty(),
                "{how}, DEL {round}: reservation left"
            );
            if pod.ns.is_some() {
                assert_eq!(
                    pod.links(),
                    BTreeSet::from(["lo".into(), "eth0".into()]),
                    "{how}"
                );
            }
        }
    }
    assert!(node.plb_veths().is_empty(), "{:?}", node.plb_veths());
    assert!(fab.reservations().is_empty());
    assert!(node.has_link(&fab.bridge), "DEL removed the shared bridge");
    assert!(node.has_link(&fab.vtep), "DEL removed the shared VTEP");
    assert_eq!(node.ports(&fab.bridge), BTreeSet::from([fab.vtep.clone()]));
}

#[test]
fn check_passes_then_detects_drift() {
    let test = "check_passes_then_detects_drift";
    if unavailable(test, &["bridge"]) {
        return;
    }
    let fab = Fabric::new(1500, false);
    let conf = fab.peers_conf(json!({}));
    let p1 = fab.pod(0, 1500);
    let p2 = fab.pod(0, 1500);
    let r1 = fab.add(0, &p1, &conf);
    let r2 = fab.add(0, &p2, &conf);
    fab.check(0, &p1, &conf, &r1).ok();
    fab.check(0, &p2, &conf, &r2).ok();
    // CHECK without prevResult is refused.
    let out = fab.run(0, &fab.call("CHECK", &p1, &conf));
    assert_ne!(out.exit, 0, "CHECK without prevResult passed");

    // Someone changes net1's MTU.
    p1.exec(&["ip", "link", "set", IFNAME, "mtu", "1300"]);
    let out = fab.check(0, &p1, &conf, &r1);
    println!(
        "{test}: after net1 mtu 1300: exit {} {}",
        out.exit,
        out.stdout.trim()
    );
    assert_err(&out, 102, &[]);
    // The flood-list entry to the other node disappears.
    let node = fab.node(0);
    node.sh(&[
        "bridge",
        "fdb",
        "del",
        ZERO_MAC,
        "dev",
        &fab.vtep,
        "dst",
        &fab.node(1).addr,
    ]);
    let out = fab.check(0, &p2, &conf, &r2);
    println!(
        "{test}: after FDB entry removed: exit {} {}",
        out.exit,
        out.stdout.trim()
    );
    assert_err(&out, 102, &[]);
    fab.del(0, &p1, &conf);
    fab.del(0, &p2, &conf);
}

#[test]
fn status_follows_the_underlay() {
    let test = "status_follows_the_underlay";
    if unavailable(test, &[]) {
        return;
    }
    let fab = Fabric::new(1500, false);
    let node = fab.node(0);
    let auto = fab.group_conf(json!({}));
    let explicit = fab.group_conf(json!({"underlayDevice": CARRIER}));
    let status = |conf: &Value| fab.run(0, &fab.network_call("STATUS", conf));
    status(&auto).ok();
    status(&explicit).ok();

    let out = status(&fab.group_conf(json!({"underlayDevice": "nope0"})));
    println!(
        "{test}: underlayDevice nope0: exit {} {}",
        out.exit,
        out.stdout.trim()
    );
    assert_err(&out, 50, &[]);

    node.sh(&["ip", "link", "set", CARRIER, "down"]);
    for (label, conf) in [("default route", &auto), ("underlayDevice car0", &explicit)] {
        let out = status(conf);
        println!(
            "{test}: car0 down, {label}: exit {} {}",
            out.exit,
            out.stdout.trim()
        );
        assert_err(&out, 50, &[]);
    }
    node.sh(&["ip", "link", "set", CARRIER, "up"]);
    // Taking the link down flushed its routes; with no default route there is nothing to pick.
    let _ = try_in(&node.ns.name, &["ip", "route", "del", "default"]);
    let out = status(&auto);
    println!(
        "{test}: no default route: exit {} {}",
        out.exit,
        out.stdout.trim()
    );
    assert_err(&out, 50, &[]);
    status(&explicit).ok();
    node.sh(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        &fab.node(1).addr,
        "dev",
        CARRIER,
    ]);
    status(&auto).ok();
}

// ---------------------------------------------------------------------------------------------------
// 9. Rollback at every step, GC

/// The spoof-check chains in the node's netdev table.
fn spoof_chains(node: &Node) -> BTreeSet<String> {
    let v =
        parse_json(
            &node
                .ns
                .exec(&["sh", "-c", "nft -j list chains netdev 2>/dev/null || true"]),
        );
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["chain"]["name"].as_str().map(String::from))
        .collect()
}

/// The VTEP's flood list, or `None` when there is no VTEP.
fn flood_if_any(node: &Node, vtep: &str) -> Option<Vec<String>> {
    node.has_link(vtep).then(|| node.flood_list(vtep))
}

#[test]
fn failed_add_at_every_step_leaves_nothing() {
    let test = "failed_add_at_every_step_leaves_nothing";
    if unavailable(test, &["bridge", "nft"]) {
        return;
    }
    // The steps of a router ADD with the spoof check, in order (plumb-vxlan's and plumb-bridge's).
    let steps = [
        "vtep",
        "veth",
        "port",
        "ipam",
        "container",
        "spoofcheck",
        "router",
    ];
    for existing in [false, true] {
        for step in steps {
            let fab = Fabric::new(1500, false);
            let conf = fab.peers_conf(json!({"role": "router", "macspoofchk": true}));
            let other = fab.pod(0, 1500);
            if existing {
                // The bridge and VTEP are there already, made by another pod's ADD.
                fab.add(0, &other, &conf);
            }
            let pod = fab.router_pod(1500);
            let node = fab.node(0);
            let before = (
                fab.snapshot(0, &pod),
                spoof_chains(node),
                flood_if_any(node, &fab.vtep),
                sysctl_in(pod.ns(), "net.ipv4.ip_forward"),
            );
            let out = fab.run(
                0,
                &fab.call("ADD", &pod, &conf).env("PLUMB_FAILPOINT", step),
            );
            assert_err(&out, 199, &[step]);
            let after = (
                fab.snapshot(0, &pod),
                spoof_chains(node),
                flood_if_any(node, &fab.vtep),
                sysctl_in(pod.ns(), "net.ipv4.ip_forward"),
            );
            assert_eq!(
                after, before,
                "failpoint {step} (bridge existing: {existing}) left something"
            );
            println!("{test}: failpoint {step}, bridge existing {existing}: nothing left");
        }
    }
}

#[test]
fn gc_removes_what_is_not_valid() {
    let test = "gc_removes_what_is_not_valid";
    if unavailable(test, &["bridge", "nft"]) {
        return;
    }
    let fab = Fabric::new(1500, false);
    let conf = fab.group_conf(json!({"macspoofchk": true}));
    let (keep, stale) = (fab.pod(0, 1500), fab.pod(0, 1500));
    fab.add(0, &keep, &conf);
    fab.add(0, &stale, &conf);
    assert_eq!(spoof_chains(fab.node(0)).len(), 2);
    assert_eq!(fab.reservations().len(), 2);
    // The runtime lost the stale pod without a DEL; GC names only the live attachment.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep.cid, "ifname": IFNAME}]);
    fab.run(0, &fab.network_call("GC", &gc)).ok();
    assert_eq!(spoof_chains(fab.node(0)).len(), 1, "the stale chain stays");
    assert_eq!(fab.reservations().len(), 1, "the stale address stays");
    fab.del(0, &keep, &conf);
    fab.del(0, &stale, &conf);
    assert!(spoof_chains(fab.node(0)).is_empty());
    assert!(fab.reservations().is_empty());
}

#[test]
fn a_port_held_by_an_external_vxlan_is_refused_and_nothing_left() {
    let test = "a_port_held_by_an_external_vxlan_is_refused_and_nothing_left";
    if unavailable(test, &["bridge"]) {
        return;
    }
    let fab = Fabric::new(1500, false);
    let node = fab.node(0);
    // What some primary CNIs run: a metadata-mode VXLAN device on the standard port.
    node.sh(&[
        "ip", "link", "add", "vxext", "type", "vxlan", "external", "dstport", "4789",
    ]);
    node.sh(&["ip", "link", "set", "vxext", "up"]);
    let pod = fab.pod(0, 1500);
    let conf = fab.group_conf(json!({}));
    let before = fab.snapshot(0, &pod);
    let out = fab.run(0, &fab.call("ADD", &pod, &conf));
    println!("{test}: exit {} {}", out.exit, out.stdout.trim());
    assert_err(&out, 7, &["port", "4789"]);
    assert_eq!(fab.snapshot(0, &pod), before, "something was left");
    // Another port works beside it.
    let other = fab.group_conf(json!({"port": 4790}));
    fab.add(0, &pod, &other);
    assert_eq!(node.link(&fab.vtep)["linkinfo"]["info_data"]["port"], 4790);
    fab.del(0, &pod, &other);
}
