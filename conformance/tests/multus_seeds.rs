//! The seed scenarios under the real Multus thin plugin, on simulated nodes (kube-real lane).
//!
//! Each node is a network namespace the test makes, with its own underlay address, its own Multus
//! config dir, cache and cluster-default network (plumb-bridge `cni0` + plumb-ipam, files store) and its
//! own `conformance::forward::Forward` listening on `127.0.0.1:<P>` inside it and relaying to the real
//! kube-apiserver on the host's loopback. Multus, plumb-vxlan, plumb-ipam's Kubernetes store and
//! `plumb-ipam nodes` all run INSIDE the node namespace (`ip netns exec`), as on a real node, and reach
//! the API server through that forwarder. Every forwarder has the same port, so one kubeconfig serves
//! every node, as `/etc/cni/net.d/plumb.d/plumb.kubeconfig` does in a cluster; the node name comes from
//! `PLUMB_NODE_NAME` in the runtime's environment (Multus passes its environment to the plugins).
//!
//! The NADs are the files of `deploy/examples/gateway-network/` as written, parsed from their YAML. Two
//! things are substituted, because they are node-local host paths: `kubeconfig` (the file above does
//! not exist on a test machine; the test's own kubeconfig, holding a TokenRequest token of
//! deploy/rbac.yaml's `plumb` account, takes its place) and `ipam.dataDir` (added: the node lock of the
//! Kubernetes store would otherwise go to the host's /var/lib/cni/plumb-ipam). Bridge names (`gw0`)
//! stay: they live in the node namespaces.
//!
//! - seed 002 (gateway network): a router pod on node A, client pods on A and B, over plumb-vxlan with
//!   the multicast group, one L2 underlay segment between the nodes.
//! - seed 000 (cloud): the same with `peers.fromNodes` (deploy/examples/gateway-network/from-nodes.yaml),
//!   Node objects created through the API with the nodes' underlay addresses as InternalIP, the nodes in
//!   two subnets behind a routed "cloud" fabric that carries no multicast and drops frames with a foreign
//!   source MAC.
//! - seed 004 (VMs on VLANs, without the trunk this host's kernel cannot make): the NADs of
//!   deploy/examples/vlan-trunk/nads.yaml as written (in `default`), KubeVirt-style annotations with a MAC,
//!   on node A's preconfigured bridges; the trunk itself runs in the VM lane (`seed_vlan_trunk.rs`).
//!
//! The gateway scenarios check: the pod interfaces and addresses, the derived MTU (and a full-size DF ping across the
//! nodes), the clients' traffic to a "world" namespace behind node A leaving through the router's
//! masquerade (the world sees the router's `eth0` address as the source), the network-status annotation,
//! the IPBlocks' allocations naming the pods (namespace, name, UID, node), CHECK, and DEL (with the netns,
//! again after it is gone, and with the netns gone first) leaving no pod link, spoof-check rule, router
//! table, reservation or Multus cache file.

#[allow(dead_code)]
#[path = "kube_real_support/mod.rs"]
mod kube_real_support;

use conformance::control_plane::ControlPlane;
use conformance::forward::Forward;
use conformance::multus;
use conformance::netns::{in_netns, run, veth_between, Netns};
use conformance::plugin::{Call, Outcome};
use conformance::{bin_dir, unique_name, TempDir};
use kube_real_support::{blocks, real, workspace_file, yaml_docs, IPBLOCKS};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
/// The node-local kubeconfig path the example NADs name.
const KUBECONFIG_AS_WRITTEN: &str = "/etc/cni/net.d/plumb.d/plumb.kubeconfig";
/// The examples' IPAM space (`network_name`).
const SPACE: &str = "gateway-net";
/// The world namespace's address, behind node A.
const WORLD: &str = "10.78.0.2";
/// Underlay MTU of every node; plumb-vxlan derives 1450 from it.
const UNDERLAY_MTU: u32 = 1500;

// ---------------------------------------------------------------------------------------------
// Cluster setup, once per test binary
// ---------------------------------------------------------------------------------------------

/// The control plane with deploy/crds, deploy/rbac.yaml, the NAD CRD and Multus's RBAC.
struct Cluster {
    cp: &'static ControlPlane,
    multus_dir: PathBuf,
    multus_token: String,
    plumb_token: String,
}

/// The shared cluster, or `None` after a loud skip when Multus cannot be built (no Go >= 1.26).
fn cluster(test: &str) -> Option<&'static Cluster> {
    let multus_dir = multus::dir(test)?;
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    Some(CLUSTER.get_or_init(|| {
        let r = real();
        Cluster {
            cp: r.cp,
            multus_dir,
            multus_token: multus::install(r.cp),
            plumb_token: r.plugin_token.clone(),
        }
    }))
}

/// The scenarios share the examples' space and its single router address: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The NetworkAttachmentDefinitions of a `deploy/examples` file as written, with the node-local paths
/// of their configs replaced (see the module doc): (the object to create, its parsed config).
fn example_nads(rel: &str, kubeconfig: &Path, data: &Path) -> Vec<(Value, Value)> {
    let kc = json!(kubeconfig.to_str().expect("UTF-8 path"));
    yaml_docs(&workspace_file(rel))
        .into_iter()
        .map(|mut doc| {
            assert_eq!(doc["kind"], "NetworkAttachmentDefinition", "{rel}: {doc}");
            let name = doc["metadata"]["name"]
                .as_str()
                .expect("metadata.name")
                .to_string();
            let text = doc["spec"]["config"].as_str().expect("spec.config");
            let mut conf: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("{rel}: {name}: spec.config is not JSON: {e}"));
            assert_eq!(
                conf["name"],
                name.as_str(),
                "{rel}: the CNI name is the NAD's"
            );
            if conf["ipam"]["type"] == "plumb-ipam" {
                assert_eq!(
                    conf["ipam"]["kubernetes"]["kubeconfig"], KUBECONFIG_AS_WRITTEN,
                    "{rel}: {name}"
                );
                conf["ipam"]["kubernetes"]["kubeconfig"] = kc.clone();
                assert!(conf["ipam"]["dataDir"].is_null(), "{rel}: {name}");
                conf["ipam"]["dataDir"] = json!(data.to_str().expect("UTF-8 path"));
            }
            if !conf["kubernetes"].is_null() {
                assert_eq!(conf["kubernetes"]["kubeconfig"], KUBECONFIG_AS_WRITTEN);
                conf["kubernetes"]["kubeconfig"] = kc.clone();
            }
            doc["spec"]["config"] = json!(conf.to_string());
            (doc, conf)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Nodes, the underlay and the world
// ---------------------------------------------------------------------------------------------

/// How the nodes' underlay addresses reach each other.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Underlay {
    /// One L2 segment (a veth between the nodes): multicast passes.
    OneSegment,
    /// Each node in its own subnet behind a routing "cloud" namespace that forwards only unicast and
    /// drops frames whose source MAC is not the node's own.
    Cloud,
}

/// A simulated node.
struct Node {
    /// The Node name (`PLUMB_NODE_NAME`, the pods' `spec.nodeName`).
    name: String,
    ns: Netns,
    underlay: String,
    /// Multus's config for this node (its cluster default, confDir, cniDir, log).
    conf: Value,
    cache: PathBuf,
    log: PathBuf,
    /// The files store of the cluster-default network.
    default_data: PathBuf,
    /// The node's way to the API server.
    fwd: Forward,
}

/// A Pod created through the API, scheduled on node `node`.
struct Pod {
    name: String,
    uid: String,
    cid: String,
    node: usize,
}

/// One scenario's cluster side and machines.
struct Scenario {
    c: &'static Cluster,
    ns: String,
    _dir: TempDir,
    plumb_kubeconfig: PathBuf,
    kube_data: PathBuf,
    nodes: Vec<Node>,
    world: Netns,
    /// The cloud fabric (Cloud underlay only).
    fabric: Option<Netns>,
    /// Node objects this scenario created through the API.
    node_objects: Vec<String>,
    /// NADs created outside the scenario's namespace (paths), deleted at the end.
    foreign_nads: Vec<String>,
}

impl Scenario {
    fn new(c: &'static Cluster, underlay: Underlay) -> Scenario {
        let ns = unique_name("ms");
        c.cp.create_namespace(&ns);
        let dir = TempDir::new("msd");
        let (a, b) = (Netns::new("msna"), Netns::new("msnb"));
        let mut fabric = None;
        let underlays = match underlay {
            Underlay::OneSegment => {
                veth_between(&a, &b, "car0", UNDERLAY_MTU);
                ["10.77.0.1", "10.77.0.2"].map(String::from)
            }
            Underlay::Cloud => {
                let f = Netns::new("msf");
                f.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
                f.exec(&["nft", "add", "table", "netdev", "cloud"]);
                for (i, n) in [&a, &b].into_iter().enumerate() {
                    let port = format!("f{i}");
                    let mtu = UNDERLAY_MTU.to_string();
                    run(&[
                        "ip", "link", "add", "car0", "netns", &n.name, "mtu", &mtu, "type", "veth",
                        "peer", "name", &port, "netns", &f.name, "mtu", &mtu,
                    ]);
                    f.exec(&[
                        "ip",
                        "addr",
                        "add",
                        &format!("10.77.{}.1/24", i + 1),
                        "dev",
                        &port,
                    ]);
                    f.exec(&["ip", "link", "set", &port, "up"]);
                    // The cloud's anti-spoofing: a frame from the node with any source MAC but the
                    // node's own NIC's is dropped (and counted).
                    let mac = link(n, "car0")["address"].as_str().unwrap().to_string();
                    f.exec(&[
                        "nft", "add", "chain", "netdev", "cloud", &port, "{", "type", "filter",
                        "hook", "ingress", "device", &port, "priority", "0", ";", "}",
                    ]);
                    f.exec(&[
                        "nft", "add", "rule", "netdev", "cloud", &port, "ether", "saddr", "!=",
                        &mac, "counter", "drop",
                    ]);
                }
                fabric = Some(f);
                ["10.77.1.2", "10.77.2.2"].map(String::from)
            }
        };
        for (i, (n, addr)) in [&a, &b].into_iter().zip(&underlays).enumerate() {
            n.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "car0"]);
            n.exec(&["ip", "link", "set", "car0", "up"]);
            let via = match underlay {
                Underlay::OneSegment => underlays[1 - i].clone(),
                Underlay::Cloud => format!("10.77.{}.1", i + 1),
            };
            n.exec(&["ip", "route", "add", "default", "via", &via]);
        }
        // The world: a namespace behind node A, which routes to it.
        let world = Netns::new("msw");
        veth_between(&a, &world, "wd0", 1500);
        a.exec(&["ip", "addr", "add", "10.78.0.1/24", "dev", "wd0"]);
        a.exec(&["ip", "link", "set", "wd0", "up"]);
        a.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        world.exec(&["ip", "addr", "add", &format!("{WORLD}/24"), "dev", "wd0"]);
        world.exec(&["ip", "link", "set", "wd0", "up"]);
        world.exec(&["ip", "route", "add", "10.240.0.0/16", "via", "10.78.0.1"]);

        // One forwarder per node, all on the same port, and the kubeconfigs naming it.
        let target: SocketAddr =
            c.cp.url()
                .trim_start_matches("https://")
                .parse()
                .expect("the API server's address");
        let fa = Forward::start(Some(&a.name), target).expect("forwarder in node A");
        let port = fa.addr().port();
        let fb = Forward::start_at(Some(&b.name), port, target).expect("forwarder in node B");
        let server = fa.https_url();
        let multus_kubeconfig = dir.path().join("multus.kubeconfig");
        multus::write_kubeconfig(c.cp, &multus_kubeconfig, &server, &c.multus_token);
        let plumb_kubeconfig = dir.path().join("plumb.kubeconfig");
        multus::write_kubeconfig(c.cp, &plumb_kubeconfig, &server, &c.plumb_token);

        let mut nodes = Vec::new();
        for (i, ((n, fwd), underlay)) in [(a, fa), (b, fb)].into_iter().zip(underlays).enumerate() {
            let nd = dir.path().join(format!("node{i}"));
            let default_data = nd.join("default-ipam");
            let subnet = format!("10.240.{}", i + 1);
            let default = json!({"cniVersion": "1.0.0", "name": "plumb-default", "plugins": [{
                "type": "plumb-bridge", "bridge": "cni0", "isDefaultGateway": true,
                "ipam": {"type": "plumb-ipam", "range": format!("{subnet}.0/24"),
                         "gateway": format!("{subnet}.1"),
                         "dataDir": default_data.to_str().expect("UTF-8 path")}}]});
            let cache = nd.join("cache");
            let log = nd.join("multus.log");
            let conf = json!({
                "cniVersion": "1.0.0",
                "name": "multus-cni-network",
                "type": "multus",
                "kubeconfig": multus_kubeconfig.to_str().expect("UTF-8 path"),
                "confDir": nd.join("net.d").to_str().expect("UTF-8 path"),
                "cniDir": cache.to_str().expect("UTF-8 path"),
                "binDir": bin_dir().to_str().expect("UTF-8 path"),
                "logFile": log.to_str().expect("UTF-8 path"),
                "logLevel": "verbose",
                "delegates": [default],
            });
            nodes.push(Node {
                name: unique_name(&format!("ms-node{i}")),
                ns: n,
                underlay,
                conf,
                cache,
                log,
                default_data,
                fwd,
            });
        }
        Scenario {
            c,
            ns,
            kube_data: dir.path().join("kube-ipam"),
            _dir: dir,
            plumb_kubeconfig,
            nodes,
            world,
            fabric,
            node_objects: Vec::new(),
            foreign_nads: Vec::new(),
        }
    }

    /// Creates the NADs of a `deploy/examples` file, in the namespace they name or else the scenario's;
    /// their configs by name.
    fn apply_example(&mut self, rel: &str) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for (doc, conf) in example_nads(rel, &self.plumb_kubeconfig, &self.kube_data) {
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or(&self.ns)
                .to_string();
            let collection =
                format!("/apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions");
            self.c.cp.admin("POST", &collection, Some(&doc), 201);
            let name = doc["metadata"]["name"].as_str().expect("name").to_string();
            if ns != self.ns {
                self.foreign_nads.push(format!("{collection}/{name}"));
            }
            out.insert(name, conf);
        }
        out
    }

    /// A Node object per node, with its underlay address as InternalIP.
    fn create_node_objects(&mut self) {
        for n in &self.nodes {
            kube_real_support::create_node(
                self.c.cp,
                &n.name,
                json!({}),
                json!([{"type": "InternalIP", "address": n.underlay},
                       {"type": "Hostname", "address": n.name}]),
            );
            self.node_objects.push(n.name.clone());
        }
    }

    /// A pod on node `node` with the networks annotation `networks` (Pending: no kubelet runs).
    fn pod(&self, name: &str, node: usize, networks: &str) -> Pod {
        let body = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {NETWORKS: networks}},
            "spec": {"nodeName": self.nodes[node].name,
                     "containers": [{"name": "app", "image": "app:1"}]}});
        let p = self.c.cp.admin(
            "POST",
            &format!("/api/v1/namespaces/{}/pods", self.ns),
            Some(&body),
            201,
        );
        Pod {
            name: name.to_string(),
            uid: p["metadata"]["uid"].as_str().expect("uid").to_string(),
            cid: format!("{:0>64}", unique_name("a")),
            node,
        }
    }

    /// Multus invoked inside the pod's node namespace as a runtime invokes it there.
    fn multus(&self, command: &str, pod: &Pod, netns: &str) -> Outcome {
        let node = &self.nodes[pod.node];
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.ns, pod.name, pod.cid, pod.uid
        );
        Call::new(command, &pod.cid, netns, "eth0", &node.conf)
            .env(
                "CNI_PATH",
                &format!("{}:{}", self.c.multus_dir.display(), bin_dir().display()),
            )
            .env("CNI_ARGS", &args)
            .env("PLUMB_NODE_NAME", &node.name)
            .run_in(&self.c.multus_dir.join("multus"), &node.ns.name)
    }

    /// `multus` must succeed; its result (Null when empty).
    fn multus_ok(&self, command: &str, pod: &Pod, netns: &str) -> Value {
        let out = self.multus(command, pod, netns);
        let log = std::fs::read_to_string(&self.nodes[pod.node].log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        assert_eq!(
            out.exit,
            0,
            "multus {command} {}: stdout={} stderr={}\nmultus log (newest first):\n{}",
            pod.name,
            out.stdout,
            out.stderr,
            tail.join("\n")
        );
        out.ok()
    }

    /// The pod's network-status annotation, parsed.
    fn network_status(&self, pod: &Pod) -> Vec<Value> {
        let p = self.c.cp.admin(
            "GET",
            &format!("/api/v1/namespaces/{}/pods/{}", self.ns, pod.name),
            None,
            200,
        );
        let text = p["metadata"]["annotations"][NETWORK_STATUS]
            .as_str()
            .unwrap_or_else(|| panic!("no {NETWORK_STATUS} on {}: {p}", pod.name));
        serde_json::from_str::<Value>(text)
            .expect("network-status is JSON")
            .as_array()
            .expect("an array")
            .clone()
    }

    /// Every allocation of the examples' space.
    fn allocations(&self) -> Vec<Value> {
        blocks(self.c.cp, SPACE)
            .iter()
            .flat_map(|b| {
                b["spec"]["allocations"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
                    .into_values()
            })
            .collect()
    }

    /// The cluster-default network's records (files store) on every node.
    fn default_records(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| conformance::ipam_records(&n.default_data, &["att-"]).len())
            .sum()
    }

    /// Every file under every node's Multus cniDir.
    fn cache_files(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        for n in &self.nodes {
            walk(&n.cache, &mut out);
        }
        out
    }

    /// The cloud fabric's anti-spoof drops so far (0 without a fabric).
    fn spoofed_frames_dropped(&self) -> u64 {
        let Some(f) = &self.fabric else { return 0 };
        let v: Value =
            serde_json::from_str(&f.exec(&["nft", "-j", "list", "table", "netdev", "cloud"]))
                .expect("nft -j");
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("rule"))
            .flat_map(|r| r["expr"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["counter"]["packets"].as_u64())
            .sum()
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // What reconcile would do once these nodes are gone: their blocks go, so the next scenario's
        // router can claim the single router address.
        for b in blocks(self.c.cp, SPACE) {
            if let Some(name) = b["metadata"]["name"].as_str() {
                let _ = self.c.cp.request(
                    "DELETE",
                    &format!("{IPBLOCKS}/{name}"),
                    None,
                    conformance::control_plane::Auth::Admin,
                );
            }
        }
        for path in &self.foreign_nads {
            let _ = self.c.cp.request(
                "DELETE",
                path,
                None,
                conformance::control_plane::Auth::Admin,
            );
        }
        for n in &self.node_objects {
            let _ = self.c.cp.request(
                "DELETE",
                &format!("/api/v1/nodes/{n}"),
                None,
                conformance::control_plane::Auth::Admin,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the machines
// ---------------------------------------------------------------------------------------------

/// `ip -j -d link show dev <ifname>` in `ns`, the one link.
fn link(ns: &Netns, ifname: &str) -> Value {
    let v: Value =
        serde_json::from_str(&ns.exec(&["ip", "-j", "-d", "link", "show", "dev", ifname]))
            .expect("ip -j");
    v[0].clone()
}

/// The links of a namespace by name.
fn links(ns: &Netns) -> BTreeSet<String> {
    let v: Value = serde_json::from_str(&ns.exec(&["ip", "-j", "link", "show"])).expect("ip -j");
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .collect()
}

/// IPv4 addresses (with prefix) of `ifname` in `ns`.
fn addrs(ns: &Netns, ifname: &str) -> Vec<String> {
    let v: Value =
        serde_json::from_str(&ns.exec(&["ip", "-j", "-4", "addr", "show", "dev", ifname]))
            .expect("ip -j");
    v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect()
}

/// The IPv4 routes of a namespace as `dst via gw dev` lines.
fn routes(ns: &Netns) -> BTreeSet<String> {
    let v: Value =
        serde_json::from_str(&ns.exec(&["ip", "-j", "-4", "route", "show"])).expect("ip -j");
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} via {} dev {}",
                r["dst"].as_str().unwrap_or(""),
                r["gateway"].as_str().unwrap_or("-"),
                r["dev"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The address part of a CIDR.
fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap_or_default().to_string()
}

/// The source address the world sees for a TCP connection from each of `clients`.
fn sources_seen_by_world(world: &Netns, clients: &[&Netns]) -> Vec<IpAddr> {
    let listener =
        in_netns(&world.name, || TcpListener::bind((WORLD, 0))).expect("listen in world");
    let port = listener.local_addr().expect("addr").port();
    let dst: SocketAddr = format!("{WORLD}:{port}").parse().unwrap();
    clients
        .iter()
        .map(|c| {
            let stream = in_netns(&c.name, || {
                TcpStream::connect_timeout(&dst, Duration::from_secs(5))
            })
            .unwrap_or_else(|e| panic!("connect from {} to the world: {e}", c.name));
            let (_conn, peer) = listener.accept().expect("accept in world");
            drop(stream);
            peer.ip()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

/// The gateway network, its NADs applied, on a two-node scenario: router on node A, clients on A and
/// B. `from_nodes`: the NADs take their peers from the Node objects (made here) instead of a group.
fn gateway_network(s: &mut Scenario, example: &str, from_nodes: bool) {
    if from_nodes {
        s.create_node_objects();
    }
    let router = s.pod("router", 0, "gateway-net-router");
    let client_a = s.pod("client-a", 0, "gateway-net-client");
    let client_b = s.pod("client-b", 1, "gateway-net-client");
    let (nr, na, nb) = (Netns::new("msr"), Netns::new("msca"), Netns::new("mscb"));

    // ADD, router first (a client's routes point at it).
    let mut results = Vec::new();
    for (p, n) in [(&router, &nr), (&client_a, &na), (&client_b, &nb)] {
        let r = s.multus_ok("ADD", p, &n.path());
        assert_eq!(r["cniVersion"], "1.0.0", "{r}");
        results.push(r);
    }
    let subnet = |i: usize| format!("10.240.{}.", i + 1);
    for (r, node) in results.iter().zip([0, 0, 1]) {
        let ip = r["ips"][0]["address"].as_str().unwrap_or_default();
        assert!(
            ip.starts_with(&subnet(node)),
            "cluster default on node {node}: {r}"
        );
    }

    // Pod interfaces and addresses.
    for n in [&nr, &na, &nb] {
        assert_eq!(
            links(n),
            ["eth0", "lo", "net1"].map(String::from).into(),
            "{}",
            n.name
        );
    }
    assert_eq!(addrs(&nr, "net1"), ["192.168.50.1/24"]);
    let (ca, cb) = (addrs(&na, "net1"), addrs(&nb, "net1"));
    for c in [&ca, &cb] {
        assert_eq!(c.len(), 1, "{c:?}");
        let last: u8 = bare(&c[0]).rsplit('.').next().unwrap().parse().unwrap();
        assert!(
            c[0].starts_with("192.168.50.") && c[0].ends_with("/24") && last >= 10,
            "{c:?}"
        );
    }
    assert_ne!(ca, cb);
    for c in [&na, &nb] {
        let r = routes(c);
        for want in [
            "0.0.0.0/1 via 192.168.50.1 dev net1",
            "128.0.0.0/1 via 192.168.50.1 dev net1",
        ] {
            assert!(r.contains(want), "{want:?} not in {r:?}");
        }
    }
    let router_eth0 = bare(&addrs(&nr, "eth0")[0]);
    assert!(router_eth0.starts_with(&subnet(0)), "{router_eth0}");
    // The router's masquerade lives in its netns.
    assert!(nr.try_exec(&["nft", "list", "table", "ip", "plumb_router"]));

    // MTU derived from the 1500-byte underlay: 1450 on the VTEP, the bridge and the pods' net1.
    for node in &s.nodes {
        for l in ["gw0", "gw0-vx"] {
            assert_eq!(link(&node.ns, l)["mtu"], 1450, "{l} on {}", node.name);
        }
        let vx = &link(&node.ns, "gw0-vx")["linkinfo"]["info_data"];
        assert_eq!(vx["id"], 42, "{vx}");
        if from_nodes {
            assert!(
                vx.get("group").is_none(),
                "a group on the unicast VTEP: {vx}"
            );
        } else {
            assert_eq!(vx["group"], "224.0.0.88", "{vx}");
        }
    }
    for n in [&nr, &na, &nb] {
        assert_eq!(link(n, "net1")["mtu"], 1450, "{}", n.name);
    }
    if from_nodes {
        // The flood lists are the other Node's InternalIP, from the Node objects.
        for (i, node) in s.nodes.iter().enumerate() {
            let v: Value = serde_json::from_str(
                &node
                    .ns
                    .exec(&["bridge", "-j", "fdb", "show", "dev", "gw0-vx"]),
            )
            .expect("bridge -j");
            let flood: BTreeSet<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["mac"] == "00:00:00:00:00:00")
                .filter_map(|e| e["dst"].as_str().map(String::from))
                .collect();
            assert_eq!(
                flood,
                [s.nodes[1 - i].underlay.clone()].into(),
                "{}",
                node.name
            );
        }
    }

    // Across the nodes: client B reaches the router with a full-size, unfragmentable packet
    // (1450 - 28 bytes of ICMP payload) and client A.
    nb.exec(&[
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        "-M",
        "do",
        "-s",
        "1422",
        "192.168.50.1",
    ]);
    nb.exec(&["ping", "-c", "1", "-W", "3", &bare(&ca[0])]);
    // The clients' traffic to the world leaves through the router's masquerade.
    let seen = sources_seen_by_world(&s.world, &[&na, &nb]);
    let want: IpAddr = router_eth0.parse().unwrap();
    assert_eq!(
        seen,
        [want, want],
        "the world saw {seen:?}, not the router's {want}"
    );
    nb.exec(&["ping", "-c", "1", "-W", "3", WORLD]);
    assert_eq!(
        s.spoofed_frames_dropped(),
        0,
        "a frame with a pod's MAC reached the cloud fabric"
    );

    // The network-status annotation Multus wrote through the API.
    for (p, n, nad) in [
        (&router, &nr, "gateway-net-router"),
        (&client_a, &na, "gateway-net-client"),
        (&client_b, &nb, "gateway-net-client"),
    ] {
        let st = s.network_status(p);
        assert_eq!(st.len(), 2, "{st:?}");
        assert_eq!(st[0]["interface"], "eth0", "{st:?}");
        assert_eq!(st[0]["name"], "plumb-default");
        assert_eq!(st[0]["default"], true);
        assert_eq!(st[0]["ips"], json!([bare(&addrs(n, "eth0")[0])]));
        assert_eq!(st[1]["interface"], "net1", "{st:?}");
        assert_eq!(st[1]["name"], format!("{}/{nad}", s.ns));
        assert_eq!(st[1]["ips"], json!([bare(&addrs(n, "net1")[0])]));
        assert_eq!(st[1]["mac"], link(n, "net1")["address"]);
    }

    // The IPBlocks' allocations name the pods and their nodes.
    let allocs = s.allocations();
    assert_eq!(allocs.len(), 3, "{allocs:?}");
    let mut seen = BTreeSet::new();
    for a in &allocs {
        let p = [&router, &client_a, &client_b]
            .into_iter()
            .find(|p| a["containerID"] == p.cid.as_str())
            .unwrap_or_else(|| panic!("an allocation of no pod: {a}"));
        assert_eq!(a["ifname"], "net1", "{a}");
        assert_eq!(a["node"], s.nodes[p.node].name.as_str(), "{a}");
        assert_eq!(a["podNamespace"], s.ns.as_str(), "{a}");
        assert_eq!(a["podName"], p.name.as_str(), "{a}");
        assert_eq!(a["podUID"], p.uid.as_str(), "{a}");
        seen.insert(p.name.clone());
    }
    assert_eq!(seen.len(), 3);
    // Multus and plumb reached the API server from inside each node, through its forwarder.
    for node in &s.nodes {
        let c = node.fwd.counts();
        assert!(c.connections > 0 && c.to_client > 0, "{}: {c:?}", node.name);
    }

    // Client A's spoof-check rule on node A holds its MAC.
    let mac_a = link(&na, "net1")["address"].as_str().unwrap().to_string();
    let mac_b = link(&nb, "net1")["address"].as_str().unwrap().to_string();
    assert_eq!(s.nodes[0].ns.spoof_rules_naming(&mac_a), 1);
    assert_eq!(s.nodes[1].ns.spoof_rules_naming(&mac_b), 1);

    // Multus v4's CHECK checks its own delegates (the cluster default).
    assert_eq!(s.multus_ok("CHECK", &router, &nr.path()), Value::Null);

    // DEL: client A with its netns, then again once it is gone; client B's netns goes first; the
    // router with its netns.
    let base = |i: usize| -> BTreeSet<String> {
        let mut b: BTreeSet<String> = ["lo", "car0", "cni0", "gw0", "gw0-vx"]
            .map(String::from)
            .into();
        if i == 0 {
            b.insert("wd0".into());
        }
        b
    };
    assert_eq!(s.multus_ok("DEL", &client_a, &na.path()), Value::Null);
    assert_eq!(links(&na), ["lo".to_string()].into());
    assert_eq!(s.nodes[0].ns.spoof_rules_naming(&mac_a), 0);
    let path_a = na.path();
    drop(na);
    assert_eq!(s.multus_ok("DEL", &client_a, &path_a), Value::Null);
    let path_b = nb.path();
    drop(nb);
    assert_eq!(s.multus_ok("DEL", &client_b, &path_b), Value::Null);
    assert_eq!(links(&s.nodes[1].ns), base(1), "node B after its last pod");
    assert_eq!(s.nodes[1].ns.spoof_rules_naming(&mac_b), 0);
    assert_eq!(s.multus_ok("DEL", &router, &nr.path()), Value::Null);
    assert_eq!(links(&nr), ["lo".to_string()].into());
    assert!(
        !nr.try_exec(&["nft", "list", "table", "ip", "plumb_router"]),
        "the router table outlived DEL"
    );
    assert_eq!(links(&s.nodes[0].ns), base(0), "node A after its last pod");
    let left = s.allocations();
    assert!(left.is_empty(), "reservations left: {left:?}");
    assert_eq!(s.default_records(), 0);
    assert!(s.cache_files().is_empty(), "{:?}", s.cache_files());
    println!(
        "{example}: router {router_eth0} masquerades clients {} (node A) and {} (node B); \
         MTU 1450; {} allocations during, 0 after DEL",
        ca[0],
        cb[0],
        allocs.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Seed 002: router-nad.yaml and client-nad.yaml as written (multicast group 224.0.0.88, Kubernetes
/// store), router on node A, clients on A and B, under Multus inside the node namespaces.
#[test]
fn seed_002_gateway_network_under_multus_on_two_nodes() {
    let test = "seed_002_gateway_network_under_multus_on_two_nodes";
    if conformance::skip::skip_unless_netns(test) {
        return;
    }
    let Some(c) = cluster(test) else { return };
    let _serial = serial();
    let mut s = Scenario::new(c, Underlay::OneSegment);
    // The two files are one network: the router's and the client's NADs.
    let mut nads = s.apply_example("deploy/examples/gateway-network/router-nad.yaml");
    nads.extend(s.apply_example("deploy/examples/gateway-network/client-nad.yaml"));
    assert_eq!(
        nads.keys().collect::<Vec<_>>(),
        ["gateway-net-client", "gateway-net-router"]
    );
    gateway_network(&mut s, "seed 002 (router-nad.yaml, client-nad.yaml)", false);
}

/// Seed 000: from-nodes.yaml as written (unicast peers from the Node objects, no multicast), the nodes
/// in two subnets behind a routed fabric that drops foreign source MACs.
#[test]
fn seed_000_unicast_peers_from_nodes_under_multus_behind_a_cloud_fabric() {
    let test = "seed_000_unicast_peers_from_nodes_under_multus_behind_a_cloud_fabric";
    if conformance::skip::skip_unless_netns(test) {
        return;
    }
    let Some(c) = cluster(test) else { return };
    let _serial = serial();
    let mut s = Scenario::new(c, Underlay::Cloud);
    let nads = s.apply_example("deploy/examples/gateway-network/from-nodes.yaml");
    assert_eq!(
        nads.keys().collect::<Vec<_>>(),
        ["gateway-net-client", "gateway-net-router"]
    );
    for conf in nads.values() {
        assert!(conf.get("group").is_none(), "{conf}");
        assert_eq!(conf["peers"]["fromNodes"]["addressType"], "InternalIP");
    }
    gateway_network(&mut s, "seed 000 (from-nodes.yaml)", true);
    // The fabric's anti-spoofing is live (so its 0 drops above mean something): node B sending with
    // another MAC is dropped and counted.
    let b = &s.nodes[1].ns;
    let own = link(b, "car0")["address"].as_str().unwrap().to_string();
    b.exec(&[
        "ip",
        "link",
        "set",
        "dev",
        "car0",
        "address",
        "02:00:00:00:0b:0b",
    ]);
    assert!(!b.try_exec(&["ping", "-c", "1", "-W", "1", "10.77.2.1"]));
    assert!(
        s.spoofed_frames_dropped() > 0,
        "the cloud fabric dropped nothing"
    );
    b.exec(&["ip", "link", "set", "dev", "car0", "address", &own]);
}

/// Seed 004 under the real Multus, without the trunk: `deploy/examples/vlan-trunk/nads.yaml` as written
/// (in `default`, the `mac` capability, the spoof check), on node A's preconfigured bridges
/// bridge2003-2005 — here without their 802.1Q port, which this host's kernel lacks (the trunk and the
/// VLAN isolation run in the VM lane, `seed_vlan_trunk.rs`). VM pods are annotated as KubeVirt does
/// (`{"name": "vlan2003", "namespace": "default", "mac": ...}`): the pod interface gets the MAC, the
/// network-status names `default/vlan2003` with that MAC, the node's spoof-check rule holds it, VMs on
/// one VLAN reach each other, a VM that changes its MAC is cut off until it restores it, and DEL (also
/// with the netns gone) leaves the bridges without ports and no rule.
#[test]
fn seed_004_vlan_nads_under_multus_with_requested_macs_and_spoof_check() {
    let test = "seed_004_vlan_nads_under_multus_with_requested_macs_and_spoof_check";
    if conformance::skip::skip_unless_netns(test) {
        return;
    }
    let Some(c) = cluster(test) else { return };
    let _serial = serial();
    let mut s = Scenario::new(c, Underlay::OneSegment);
    let nads = s.apply_example("deploy/examples/vlan-trunk/nads.yaml");
    assert_eq!(
        nads.keys().collect::<Vec<_>>(),
        ["vlan2003", "vlan2004", "vlan2005"]
    );
    let node = &s.nodes[0].ns;
    for (name, conf) in &nads {
        assert_eq!(conf["macspoofchk"], true, "{name}");
        assert_eq!(conf["capabilities"]["mac"], true, "{name}");
        let br = conf["bridge"].as_str().expect("bridge");
        node.exec(&["ip", "link", "add", br, "type", "bridge"]);
        node.exec(&["ip", "link", "set", br, "up"]);
    }
    let ports = |br: &str| -> usize {
        let v: Value =
            serde_json::from_str(&node.exec(&["ip", "-j", "link", "show", "master", br]))
                .expect("ip -j");
        v.as_array().map(|a| a.len()).unwrap_or(0)
    };

    let specs = [
        ("vm1", "vlan2003", "02:16:04:00:02:08", "172.16.4.208/24"),
        ("vm4", "vlan2003", "02:16:04:00:02:09", "172.16.4.209/24"),
        ("vm3", "vlan2004", "02:16:05:00:02:08", "172.16.5.208/24"),
    ];
    let mut vms = Vec::new();
    for (name, nad, mac, cidr) in specs {
        let annotation = json!([{"name": nad, "namespace": "default", "mac": mac}]).to_string();
        let pod = s.pod(&format!("virt-launcher-{name}"), 0, &annotation);
        let ns = Netns::new("msv");
        s.multus_ok("ADD", &pod, &ns.path());
        assert_eq!(
            links(&ns),
            ["eth0", "lo", "net1"].map(String::from).into(),
            "{name}"
        );
        assert_eq!(
            link(&ns, "net1")["address"],
            mac,
            "{name}: the requested MAC"
        );
        let st = s.network_status(&pod);
        assert_eq!(st.len(), 2, "{st:?}");
        assert_eq!(st[1]["interface"], "net1", "{st:?}");
        assert_eq!(st[1]["name"], format!("default/{nad}"), "{st:?}");
        assert_eq!(st[1]["mac"], mac, "{st:?}");
        assert_eq!(
            node.spoof_rules_naming(mac),
            1,
            "{name}: its spoof-check rule"
        );
        ns.exec(&["ip", "addr", "add", cidr, "dev", "net1"]);
        vms.push((pod, Some(ns), mac));
    }
    assert_eq!(
        (
            ports("bridge2003"),
            ports("bridge2004"),
            ports("bridge2005")
        ),
        (2, 1, 0)
    );

    // VMs on one VLAN reach each other; a VM with another MAC is dropped until it restores its own.
    let vm1 = vms[0].1.as_ref().unwrap();
    let vm4 = vms[1].1.as_ref().unwrap();
    vm1.exec(&["ping", "-c", "1", "-W", "3", "172.16.4.209"]);
    vm1.exec(&[
        "ip",
        "link",
        "set",
        "dev",
        "net1",
        "address",
        "02:16:04:00:66:66",
    ]);
    vm4.exec(&["ip", "neigh", "flush", "all"]);
    assert!(
        !vm1.try_exec(&["ping", "-c", "1", "-W", "2", "172.16.4.209"]),
        "a spoofed source MAC got through"
    );
    vm1.exec(&["ip", "link", "set", "dev", "net1", "address", vms[0].2]);
    vm4.exec(&["ip", "neigh", "flush", "all"]);
    vm1.exec(&["ping", "-c", "1", "-W", "3", "172.16.4.209"]);

    // DEL: vm1 with its netns, then again once it is gone; vm3's netns goes first; vm4.
    let path = |v: &(Pod, Option<Netns>, &str)| v.1.as_ref().map(|n| n.path()).unwrap();
    let p1 = path(&vms[0]);
    assert_eq!(s.multus_ok("DEL", &vms[0].0, &p1), Value::Null);
    assert_eq!(links(vms[0].1.as_ref().unwrap()), ["lo".to_string()].into());
    vms[0].1 = None;
    assert_eq!(s.multus_ok("DEL", &vms[0].0, &p1), Value::Null);
    let p3 = path(&vms[2]);
    vms[2].1 = None;
    assert_eq!(s.multus_ok("DEL", &vms[2].0, &p3), Value::Null);
    let p4 = path(&vms[1]);
    assert_eq!(s.multus_ok("DEL", &vms[1].0, &p4), Value::Null);
    assert_eq!(
        (
            ports("bridge2003"),
            ports("bridge2004"),
            ports("bridge2005")
        ),
        (0, 0, 0)
    );
    for (_, _, mac) in &vms {
        assert_eq!(node.spoof_rules_naming(mac), 0, "{mac}");
    }
    assert!(s.cache_files().is_empty(), "{:?}", s.cache_files());
}
