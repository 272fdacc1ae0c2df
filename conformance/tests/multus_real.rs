//! plumb under the real Multus thin plugin (kube-real lane): `multus` built by `scripts/multus` from
//! gopkg.in/k8snetworkplumbingwg/multus-cni.v4, invoked exactly as a container runtime invokes it (CNI_*
//! environment, CNI_ARGS with the K8S_POD_* keys, the pod's netns, the Multus config on stdin), against the
//! real kube-apiserver of `conformance::control_plane`.
//!
//! The test writes the NetworkAttachmentDefinition CRD itself (group `k8s.cni.cncf.io`, version v1,
//! `spec.config` a string), a ClusterRole for what the thin plugin reads and writes (pods, their status,
//! NADs, events) bound to a service account, and gives Multus a kubeconfig holding that account's token
//! (from the TokenRequest API), so RBAC is really exercised. NADs and Pods with the
//! `k8s.v1.cni.cncf.io/networks` annotation are created through the API.
//!
//! Multus runs in the host network namespace (it must reach the API server on loopback), so the bridges
//! are host bridges with names unique to the test, removed at the end; the pods are namespaces the test
//! made. The seed scenarios run in node namespaces in `multus_seeds.rs`.

use conformance::control_plane::{self, ControlPlane};
use conformance::multus::{self, MULTUS_USER};
use conformance::netns::{run, Netns};
use conformance::plugin::{Call, Outcome};
use conformance::{bin_dir, unique_name, TempDir};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

// ---------------------------------------------------------------------------------------------
// Cluster setup, once per test binary
// ---------------------------------------------------------------------------------------------

/// The control plane with the NAD CRD and Multus's RBAC ([`multus::install`]), and a kubeconfig for
/// Multus.
struct Cluster {
    cp: &'static ControlPlane,
    multus_dir: PathBuf,
    kubeconfig: PathBuf,
}

/// The shared cluster, or `None` after a loud skip when Multus cannot be built (no Go >= 1.26).
fn cluster(test: &str) -> Option<&'static Cluster> {
    let multus_dir = multus::dir(test)?;
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    Some(CLUSTER.get_or_init(|| {
        let cp = control_plane::shared();
        eprintln!(
            "multus: {}",
            std::fs::read_to_string(multus_dir.join("VERSIONS"))
                .unwrap_or_default()
                .trim()
                .replace('\n', "; ")
        );
        let token = multus::install(cp);
        let kubeconfig = cp.scratch("multus").join("multus.kubeconfig");
        multus::write_kubeconfig(cp, &kubeconfig, cp.url(), &token);
        Cluster {
            cp,
            multus_dir,
            kubeconfig,
        }
    }))
}

// ---------------------------------------------------------------------------------------------
// One test's world: a namespace, bridges, an IPAM data dir, a Multus config
// ---------------------------------------------------------------------------------------------

/// A Pod created through the API.
struct Pod {
    name: String,
    uid: String,
    /// The sandbox (infra container) ID the runtime uses as CNI_CONTAINERID.
    cid: String,
}

struct World {
    c: &'static Cluster,
    ns: String,
    data: TempDir,
    /// Multus's `cniDir` (its delegate cache and libcni's result cache).
    cache: PathBuf,
    log: PathBuf,
    conf: Value,
    bridges: Vec<String>,
}

impl World {
    /// A namespace, the cluster-default network (plumb-bridge + plumb-ipam on `default_range`) in the
    /// Multus config.
    fn new(c: &'static Cluster, default_range: &str) -> World {
        let ns = unique_name("mt");
        c.cp.create_namespace(&ns);
        let data = TempDir::new("mtdata");
        let scratch = c.cp.scratch("mtw");
        let mut w = World {
            c,
            ns,
            data,
            cache: scratch.join("cache"),
            log: scratch.join("multus.log"),
            conf: Value::Null,
            bridges: Vec::new(),
        };
        let default = w.conflist("plumb-default", default_range, json!({}));
        w.conf = json!({
            "cniVersion": "1.0.0",
            "name": "multus-cni-network",
            "type": "multus",
            "kubeconfig": c.kubeconfig.to_str().expect("UTF-8 path"),
            "confDir": scratch.join("net.d").to_str().expect("UTF-8 path"),
            "cniDir": w.cache.to_str().expect("UTF-8 path"),
            "binDir": bin_dir().to_str().expect("UTF-8 path"),
            "logFile": w.log.to_str().expect("UTF-8 path"),
            "logLevel": "verbose",
            "delegates": [default],
        });
        w
    }

    /// A plumb-bridge + plumb-ipam (files store) conflist on a fresh host bridge, with `extra` fields
    /// of plumb-bridge.
    fn conflist(&mut self, name: &str, range: &str, extra: Value) -> Value {
        let bridge = unique_name("mtb");
        self.bridges.push(bridge.clone());
        let mut plugin = json!({
            "type": "plumb-bridge",
            "bridge": bridge,
            "ipam": {"type": "plumb-ipam", "range": range,
                     "dataDir": self.data.path().to_str().expect("UTF-8 path")},
        });
        for (k, v) in extra.as_object().expect("extra is an object") {
            plugin[k] = v.clone();
        }
        json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]})
    }

    /// The bridge of the `i`th conflist made (0: the cluster default).
    fn bridge(&self, i: usize) -> &str {
        &self.bridges[i]
    }

    /// Creates NAD `name` in the world's namespace with `config` as its `spec.config` text.
    fn nad(&self, name: &str, config: &Value) {
        let body = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name}, "spec": {"config": config.to_string()}});
        self.c.cp.admin(
            "POST",
            &format!(
                "/apis/k8s.cni.cncf.io/v1/namespaces/{}/network-attachment-definitions",
                self.ns
            ),
            Some(&body),
            201,
        );
    }

    /// Creates a pod with the networks annotation `networks` (Pending: no kubelet runs).
    fn pod(&self, name: &str, networks: &str) -> Pod {
        let body = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {NETWORKS: networks}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "app:1"}]}});
        let p = self.c.cp.admin(
            "POST",
            &format!("/api/v1/namespaces/{}/pods", self.ns),
            Some(&body),
            201,
        );
        Pod {
            name: name.to_string(),
            uid: p["metadata"]["uid"].as_str().expect("uid").to_string(),
            // 64 hex digits, as runtimes make sandbox IDs.
            cid: format!("{:0>64}", unique_name("a")),
        }
    }

    /// Deletes a pod at once (grace period 0: no kubelet would confirm a graceful deletion).
    fn delete_pod(&self, pod: &Pod) {
        self.c.cp.admin(
            "DELETE",
            &format!("/api/v1/namespaces/{}/pods/{}", self.ns, pod.name),
            Some(&json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})),
            200,
        );
    }

    /// Multus invoked as a runtime invokes it: CNI_COMMAND, the sandbox ID, the netns, eth0, CNI_PATH
    /// with Multus's directory first, CNI_ARGS with the K8S_POD_* keys, the Multus config on stdin.
    fn multus(&self, command: &str, pod: &Pod, netns: &str) -> Outcome {
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.ns, pod.name, pod.cid, pod.uid
        );
        Call::new(command, &pod.cid, netns, "eth0", &self.conf)
            .env(
                "CNI_PATH",
                &format!("{}:{}", self.c.multus_dir.display(), bin_dir().display()),
            )
            .env("CNI_ARGS", &args)
            .run(&self.c.multus_dir.join("multus"))
    }

    /// `multus` must succeed; its result (Null when empty).
    fn multus_ok(&self, command: &str, pod: &Pod, netns: &str) -> Value {
        let out = self.multus(command, pod, netns);
        assert_eq!(
            out.exit,
            0,
            "multus {command}: stdout={} stderr={}\nmultus log:\n{}",
            out.stdout,
            out.stderr,
            self.log_tail()
        );
        out.ok()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The pod's annotations, read from the API.
    fn annotations(&self, pod: &Pod) -> Value {
        let p = self.c.cp.admin(
            "GET",
            &format!("/api/v1/namespaces/{}/pods/{}", self.ns, pod.name),
            None,
            200,
        );
        p["metadata"]["annotations"].clone()
    }

    /// The plumb-ipam attachment records (files store), every space.
    fn records(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for space in std::fs::read_dir(self.data.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(space.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if f.file_name().to_string_lossy().starts_with("att-") {
                    let text = std::fs::read_to_string(f.path()).expect("read record");
                    out.push(serde_json::from_str(&text).expect("record is JSON"));
                }
            }
        }
        out
    }

    /// Every file under Multus's cniDir (delegate and result caches).
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
        walk(&self.cache, &mut out);
        out
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for b in &self.bridges {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", b])
                .output();
        }
    }
}

/// Interfaces of a netns other than `lo`: name -> (MAC, IPv4 addresses with prefix).
fn interfaces(ns: &Netns) -> BTreeMap<String, (String, Vec<String>)> {
    let v: Value = serde_json::from_str(&ns.exec(&["ip", "-j", "addr", "show"])).expect("ip -j");
    v.as_array()
        .expect("array")
        .iter()
        .filter(|l| l["ifname"] != "lo")
        .map(|l| {
            let addrs = l["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["family"] == "inet")
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
                .collect();
            (
                l["ifname"].as_str().unwrap_or("").to_string(),
                (l["address"].as_str().unwrap_or("").to_string(), addrs),
            )
        })
        .collect()
}

/// The ports of a host bridge.
fn ports(bridge: &str) -> BTreeSet<String> {
    let v: Value =
        serde_json::from_str(&run(&["ip", "-j", "link", "show", "master", bridge])).expect("ip -j");
    v.as_array()
        .into_iter()
        .flatten()
        .map(|l| l["ifname"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Whether a host link named `name` exists.
fn link_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The chains of the host's `netdev plumb_spoofchk` table with a rule naming `mac` (none without the
/// table).
fn spoof_chains(mac: &str) -> Vec<String> {
    let out = std::process::Command::new("nft")
        .args(["-j", "list", "table", "netdev", "plumb_spoofchk"])
        .output()
        .expect("run nft");
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("nft -j");
    let quoted = format!("\"{}\"", mac.to_ascii_lowercase());
    let mut found: Vec<String> = v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["expr"].to_string().to_ascii_lowercase().contains(&quoted))
        .map(|r| r["chain"].as_str().unwrap_or("").to_string())
        .collect();
    found.dedup();
    found
}

/// The one address of interface `ifname` in `ifs`.
fn addr_of(ifs: &BTreeMap<String, (String, Vec<String>)>, ifname: &str) -> String {
    let (_, a) = ifs
        .get(ifname)
        .unwrap_or_else(|| panic!("no {ifname} in {ifs:?}"));
    assert_eq!(a.len(), 1, "{ifname}: {a:?}");
    a[0].clone()
}

/// Whether `cidr`'s address is inside the /24 `prefix24` (`a.b.c.`).
fn in24(cidr: &str, prefix24: &str) -> bool {
    cidr.starts_with(prefix24) && cidr.ends_with("/24")
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Two plumb-bridge networks from NADs on one pod (one with a requested interface name, MAC and IP)
/// besides the cluster default, a second pod on net1: interfaces, addresses, MAC, the network-status
/// annotation Multus writes, plumb-ipam records naming the pod, traffic between the pods, CHECK, DEL,
/// DEL again after the netns is gone, and DEL of a pod whose netns went first — nothing left.
#[test]
fn multus_attaches_two_plumb_networks_with_requests_and_del_leaves_nothing() {
    let test = "multus_attaches_two_plumb_networks_with_requests_and_del_leaves_nothing";
    if conformance::skip::skip_unless_netns(test) {
        return;
    }
    let Some(c) = cluster(test) else { return };
    let mut w = World::new(c, "10.231.0.0/24");
    let net1 = w.conflist("net1", "10.232.1.0/24", json!({"macspoofchk": true}));
    let net2 = w.conflist("net2", "10.232.2.0/24", json!({}));
    w.nad("net1", &net1);
    w.nad("net2", &net2);
    let mac = "02:5a:00:00:00:0a";
    let a = w.pod(
        "pod-a",
        &json!([{"name": "net1", "interface": "lan0", "mac": mac, "ips": ["10.232.1.50/24"]},
                {"name": "net2"}])
        .to_string(),
    );
    let b = w.pod("pod-b", "net1");
    let (na, nb) = (Netns::new("mta"), Netns::new("mtb"));

    let mark = c.cp.audit_mark();
    let ra = w.multus_ok("ADD", &a, &na.path());
    let rb = w.multus_ok("ADD", &b, &nb.path());
    // Multus worked with its own service account's token, within its ClusterRole: it read the pods and
    // the NADs and wrote the pods' status.
    let events = c.cp.audit_events(mark);
    let mut calls = BTreeSet::new();
    for e in events.iter().filter(|e| {
        e["user"]["username"] == MULTUS_USER && e["objectRef"]["namespace"] == w.ns.as_str()
    }) {
        let code = e["responseStatus"]["code"].as_u64().unwrap_or(0);
        assert!((200..300).contains(&code), "Multus request refused: {e}");
        calls.insert(format!(
            "{} {}{}",
            e["verb"].as_str().unwrap_or(""),
            e["objectRef"]["resource"].as_str().unwrap_or(""),
            e["objectRef"]["subresource"]
                .as_str()
                .map(|s| format!("/{s}"))
                .unwrap_or_default()
        ));
    }
    for want in [
        "get pods",
        "get network-attachment-definitions",
        "update pods/status",
    ] {
        assert!(calls.contains(want), "no {want:?} by Multus in {calls:?}");
    }
    // The runtime gets the cluster-default network's result.
    for r in [&ra, &rb] {
        assert_eq!(r["cniVersion"], "1.0.0", "{r}");
        let ip = r["ips"][0]["address"].as_str().unwrap_or_default();
        assert!(in24(ip, "10.231.0."), "{r}");
    }

    let ifa = interfaces(&na);
    let ifb = interfaces(&nb);
    assert_eq!(
        ifa.keys().collect::<Vec<_>>(),
        ["eth0", "lan0", "net2"],
        "{ifa:?}"
    );
    assert_eq!(ifb.keys().collect::<Vec<_>>(), ["eth0", "net1"], "{ifb:?}");
    assert_eq!(
        addr_of(&ifa, "eth0"),
        ra["ips"][0]["address"].as_str().unwrap()
    );
    assert_eq!(ifa["lan0"].0, mac);
    assert_eq!(addr_of(&ifa, "lan0"), "10.232.1.50/24");
    assert!(in24(&addr_of(&ifa, "net2"), "10.232.2."), "{ifa:?}");
    let b_net1 = addr_of(&ifb, "net1");
    assert!(in24(&b_net1, "10.232.1."), "{ifb:?}");
    assert_ne!(b_net1, "10.232.1.50/24");

    // The network-status annotation Multus wrote through the API.
    let ann = w.annotations(&a);
    let status: Value = serde_json::from_str(
        ann[NETWORK_STATUS]
            .as_str()
            .unwrap_or_else(|| panic!("no {NETWORK_STATUS} on the pod: {ann}")),
    )
    .expect("network-status is JSON");
    let st = status.as_array().expect("array");
    assert_eq!(st.len(), 3, "{status}");
    let entry = |ifname: &str| {
        st.iter()
            .find(|e| e["interface"] == ifname)
            .unwrap_or_else(|| panic!("no {ifname} in {status}"))
    };
    let bare = |cidr: &str| cidr.split('/').next().unwrap().to_string();
    assert_eq!(entry("eth0")["name"], "plumb-default");
    assert_eq!(entry("eth0")["default"], true);
    assert_eq!(entry("eth0")["ips"], json!([bare(&addr_of(&ifa, "eth0"))]));
    assert_eq!(entry("lan0")["name"], format!("{}/net1", w.ns));
    assert_eq!(entry("lan0")["mac"], mac);
    assert_eq!(entry("lan0")["ips"], json!(["10.232.1.50"]));
    assert_eq!(entry("net2")["name"], format!("{}/net2", w.ns));
    assert_eq!(entry("net2")["ips"], json!([bare(&addr_of(&ifa, "net2"))]));
    assert_eq!(entry("net2")["mac"], json!(ifa["net2"].0));

    // plumb-ipam's records name the pod (namespace, name, UID) for each of its attachments.
    let recs = w.records();
    assert_eq!(recs.len(), 5, "{recs:?}");
    let mut seen = BTreeSet::new();
    for r in &recs {
        let p = if r["containerID"] == a.cid.as_str() {
            &a
        } else {
            &b
        };
        assert_eq!(r["containerID"], p.cid.as_str(), "{r}");
        assert_eq!(r["podNamespace"], w.ns.as_str(), "{r}");
        assert_eq!(r["podName"], p.name.as_str(), "{r}");
        assert_eq!(r["podUid"], p.uid.as_str(), "{r}");
        seen.insert((p.name.clone(), r["ifname"].as_str().unwrap().to_string()));
    }
    let want: BTreeSet<(String, String)> = [
        ("pod-a", "eth0"),
        ("pod-a", "lan0"),
        ("pod-a", "net2"),
        ("pod-b", "eth0"),
        ("pod-b", "net1"),
    ]
    .iter()
    .map(|(p, i)| (p.to_string(), i.to_string()))
    .collect();
    assert_eq!(seen, want);

    // net1 has the spoof check: a chain in the host holds pod A's requested MAC.
    let spoof = spoof_chains(mac);
    assert_eq!(spoof.len(), 1, "{spoof:?}");

    // Traffic between the two pods on net1 (one bridge), both ways.
    na.exec(&["ping", "-c", "1", "-W", "3", "-I", "lan0", &bare(&b_net1)]);
    nb.exec(&["ping", "-c", "1", "-W", "3", "-I", "net1", "10.232.1.50"]);

    // Multus v4's CHECK checks the delegates of its own config (the cluster default), from libcni's
    // cached result in its cniDir; the NAD networks are not re-checked by Multus.
    assert_eq!(w.multus_ok("CHECK", &a, &na.path()), Value::Null);

    // DEL of pod A with its netns: only lo is left in it, no port of A on any bridge, no record of A.
    let ports_before: Vec<usize> = (0..3).map(|i| ports(w.bridge(i)).len()).collect();
    assert_eq!(ports_before, [2, 2, 1]);
    // The host ends of every attachment, to see them gone (not merely detached) after DEL.
    let host_ends: BTreeSet<String> = (0..3).flat_map(|i| ports(w.bridge(i))).collect();
    assert_eq!(host_ends.len(), 5, "{host_ends:?}");
    assert_eq!(w.multus_ok("DEL", &a, &na.path()), Value::Null);
    assert!(interfaces(&na).is_empty(), "{:?}", interfaces(&na));
    let ports_after: Vec<usize> = (0..3).map(|i| ports(w.bridge(i)).len()).collect();
    assert_eq!(ports_after, [1, 1, 0]);
    let b_ends: BTreeSet<String> = (0..3).flat_map(|i| ports(w.bridge(i))).collect();
    for end in host_ends.difference(&b_ends) {
        assert!(!link_exists(end), "pod A's host end {end} left after DEL");
    }
    assert!(spoof_chains(mac).is_empty(), "{:?}", spoof_chains(mac));
    let left: Vec<Value> = w
        .records()
        .into_iter()
        .filter(|r| r["containerID"] == a.cid.as_str())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // DEL again once the netns is gone: success, nothing else touched.
    let path_a = na.path();
    drop(na);
    assert_eq!(w.multus_ok("DEL", &a, &path_a), Value::Null);
    assert_eq!(w.records().len(), 2);

    // Pod B's netns goes first (the sandbox died), then the runtime's DEL: success, nothing left.
    let path_b = nb.path();
    drop(nb);
    assert_eq!(w.multus_ok("DEL", &b, &path_b), Value::Null);
    assert!(w.records().is_empty(), "{:?}", w.records());
    for i in 0..3 {
        assert!(ports(w.bridge(i)).is_empty(), "{}", w.bridge(i));
    }
    for end in &host_ends {
        assert!(!link_exists(end), "host end {end} left after DEL");
    }
    assert!(w.cache_files().is_empty(), "{:?}", w.cache_files());
}

/// A pod whose NAD names a plugin that is not installed: Multus's ADD fails with a CNI error that
/// names the pod and the network, after undoing the cluster default it had added (no interface, port or
/// record left). The runtime's DEL that follows fails too (Multus DELs the missing plugin again) but
/// consumes Multus's cache; once the pod is deleted from the API, DEL succeeds.
#[test]
fn multus_nad_with_missing_plugin_fails_add_and_leaves_nothing() {
    let test = "multus_nad_with_missing_plugin_fails_add_and_leaves_nothing";
    if conformance::skip::skip_unless_netns(test) {
        return;
    }
    let Some(c) = cluster(test) else { return };
    let w = World::new(c, "10.233.0.0/24");
    w.nad(
        "denied",
        &json!({"cniVersion": "1.0.0", "name": "denied",
                "plugins": [{"type": "plumb-not-installed"}]}),
    );
    let p = w.pod("pod-c", "denied");
    let ns = Netns::new("mtc");

    let out = w.multus("ADD", &p, &ns.path());
    assert_ne!(out.exit, 0, "ADD succeeded: {}", out.stdout);
    let e = out.json();
    let msg = e["msg"].as_str().unwrap_or_default();
    assert_eq!(e["code"], 999, "{e}");
    for part in [
        "plumb-not-installed",
        // Multus names the pod (namespace/name/UID) and the network.
        &format!("[{}/pod-c/{}:denied]", w.ns, p.uid),
        "failed to find plugin",
    ] {
        assert!(msg.contains(part), "{part:?} not in {e}");
    }
    assert!(interfaces(&ns).is_empty(), "{:?}", interfaces(&ns));
    assert!(ports(w.bridge(0)).is_empty());
    assert!(w.records().is_empty(), "{:?}", w.records());
    assert!(
        w.annotations(&p).get(NETWORK_STATUS).is_none(),
        "{}",
        w.annotations(&p)
    );

    // The runtime's DEL after the failed ADD: Multus DELs every delegate again and, as libcni does,
    // counts a plugin it cannot find as a DEL error (code 999 naming it), though it consumed its cache.
    let out = w.multus("DEL", &p, &ns.path());
    assert_ne!(out.exit, 0, "DEL succeeded: {}", out.stdout);
    let e = out.json();
    assert_eq!(e["code"], 999, "{e}");
    let msg = e["msg"].as_str().unwrap_or_default();
    for part in [
        "DelegateDel",
        "plumb-not-installed",
        "failed to find plugin",
    ] {
        assert!(msg.contains(part), "{part:?} not in {e}");
    }
    assert!(w.cache_files().is_empty(), "{:?}", w.cache_files());
    assert!(w.records().is_empty(), "{:?}", w.records());
    assert!(ports(w.bridge(0)).is_empty());
    // Once the pod is deleted from the API (the kubelet's retries end there), DEL finds neither the
    // cache nor the pod and succeeds; nothing of plumb's was left at any point.
    w.delete_pod(&p);
    drop(ns);
    let path = format!("/run/netns/{}", unique_name("gone"));
    assert_eq!(w.multus_ok("DEL", &p, &path), Value::Null);
    assert!(w.cache_files().is_empty(), "{:?}", w.cache_files());
}
