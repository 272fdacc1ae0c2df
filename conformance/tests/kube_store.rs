//! plumb-ipam on the Kubernetes store, black-box: the built binary runs the way a runtime runs it, with
//! `"kubernetes": {"kubeconfig": ...}` pointing at plumb's strict test API server and `PLUMB_NODE_NAME`
//! saying which node it runs on. Every test starts its own server (so the tests run in parallel) and
//! gives every simulated node its own `dataDir` (where only the node-local lock lives).
//!
//! The store's state is read straight from the server's IPBlock objects; the requests an operation
//! costs are read from the server's counters.

use conformance::plugin::{Call, Outcome};
use conformance::{plumb_bin, TempDir};
use plumb_ipam::range::Range;
use plumb_ipam_kube::blocks::{block_of, start_offset};
use plumb_kubeapi::{FaultKind, FaultRule, Faults, Options, Resource, TestApiServer, Verb};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// IPAM never enters the namespace, so any path will do.
const NETNS: &str = "/run/netns/none";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A test API server, its kubeconfig and a temp dir holding the nodes' data dirs.
struct Cluster {
    server: TestApiServer,
    dir: TempDir,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn start() -> Cluster {
        let server = TestApiServer::start(Options::default()).expect("start the test API server");
        let dir = TempDir::new("kubestore");
        let kubeconfig = dir.path().join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig, None)
            .expect("write kubeconfig");
        Cluster {
            server,
            dir,
            kubeconfig,
        }
    }

    /// An `ipam` section on `range` using this cluster's API, plus `extra` fields.
    fn ipam(&self, range: &str, extra: Value) -> Value {
        let mut v = json!({
            "type": "plumb-ipam",
            "range": range,
            "dataDir": self.dir.path().join("data").to_str().expect("UTF-8 temp dir"),
            "kubernetes": {"kubeconfig": self.kubeconfig.to_str().expect("UTF-8 temp dir")},
        });
        for (k, x) in extra.as_object().expect("extra is an object") {
            v[k] = x.clone();
        }
        v
    }

    /// Every IPBlock object.
    fn blocks(&self) -> Vec<Value> {
        self.server.objects(Resource::IpBlocks)
    }

    /// Every reservation in the IPBlocks: (address, allocation object).
    fn records(&self) -> Vec<(IpAddr, Value)> {
        let mut out = Vec::new();
        for b in self.blocks() {
            let cidr = b["spec"]["cidr"].as_str().expect("spec.cidr");
            let allocations = b["spec"]["allocations"].as_object().cloned();
            for (off, a) in allocations.unwrap_or_default() {
                let off: u128 = off.parse().expect("allocation keys are offsets");
                out.push((addr_in(cidr, off), a));
            }
        }
        out.sort_by_key(|(ip, _)| *ip);
        out
    }

    /// The reserved addresses.
    fn reserved(&self) -> BTreeSet<IpAddr> {
        self.records().into_iter().map(|(ip, _)| ip).collect()
    }

    /// The addresses reserved for one attachment.
    fn held_by(&self, cid: &str, ifname: &str) -> BTreeSet<IpAddr> {
        self.records()
            .into_iter()
            .filter(|(_, a)| a["containerID"] == cid && a["ifname"] == ifname)
            .map(|(ip, _)| ip)
            .collect()
    }
}

/// The address at `offset` of block `cidr` (IPv4 or IPv6).
fn addr_in(cidr: &str, offset: u128) -> IpAddr {
    let base: IpAddr = cidr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("block cidr");
    match base {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) + offset as u32).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) + offset).into()),
    }
}

/// A network configuration with plumb-ipam as its plugin.
fn net(version: &str, name: &str, ipam: Value) -> Value {
    json!({"cniVersion": version, "name": name, "type": "plumb-ipam", "ipam": ipam})
}

/// A copy of `conf` with one more top-level field.
fn with(conf: &Value, key: &str, value: Value) -> Value {
    let mut c = conf.clone();
    c[key] = value;
    c
}

/// An attachment command (ADD, DEL, CHECK) on `node`.
fn call(cmd: &str, node: &str, cid: &str, ifname: &str, conf: &Value) -> Call {
    Call::new(cmd, cid, NETNS, ifname, conf).env("PLUMB_NODE_NAME", node)
}

/// A network-wide command (STATUS, GC) on `node`.
fn network_call(cmd: &str, node: &str, conf: &Value) -> Call {
    Call::new(cmd, "", "", "", conf)
        .without("CNI_CONTAINERID")
        .without("CNI_NETNS")
        .without("CNI_IFNAME")
        .env("PLUMB_NODE_NAME", node)
}

fn run(c: &Call) -> Outcome {
    c.run(&plumb_bin("plumb-ipam"))
}

fn add(conf: &Value, node: &str, cid: &str, ifname: &str) -> Outcome {
    run(&call("ADD", node, cid, ifname, conf))
}

fn add_ok(conf: &Value, node: &str, cid: &str, ifname: &str) -> Value {
    add(conf, node, cid, ifname).ok()
}

fn del_ok(conf: &Value, node: &str, cid: &str, ifname: &str) {
    assert_eq!(run(&call("DEL", node, cid, ifname, conf)).ok(), Value::Null);
}

/// `ips[i].address` of a result.
fn address(result: &Value, i: usize) -> String {
    result["ips"][i]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ips[{i}].address in {result}"))
        .to_string()
}

/// The bare address of `ips[i]`.
fn ip(result: &Value, i: usize) -> IpAddr {
    let a = address(result, i);
    a.split('/').next().unwrap().parse().expect("an address")
}

/// The `n`-th address (0: the first) `node` is handed in an empty `range` (with `exclude` and
/// `gateway`): nodes start their search at a block derived from their name (see
/// `plumb_ipam_kube::blocks::start_offset`), then count up.
fn nth(range: &str, exclude: &[&str], gateway: Option<&str>, node: &str, n: usize) -> IpAddr {
    let ex: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
    let gw = gateway.map(|g| g.parse().expect("gateway"));
    let r = Range::build("ipam.range", range, None, None, &ex, gw).expect("a range");
    let mut off = r
        .next_allowed(start_offset(&r, node))
        .or_else(|| r.next_allowed(0))
        .expect("a free address");
    for _ in 0..n {
        off = r.next_allowed(off + 1).expect("room in the block");
    }
    r.addr(off)
}

/// node-a's `n`-th addresses of 10.1.0.0/24, for each `n`.
fn a_ips(ns: &[usize]) -> BTreeSet<IpAddr> {
    ns.iter()
        .map(|n| nth("10.1.0.0/24", &[], None, "node-a", *n))
        .collect()
}

/// [`nth`] with a prefix length, as CNI results show it.
fn nth_cidr(range: &str, node: &str, n: usize) -> String {
    let prefix = range.split('/').nth(1).expect("a prefix");
    format!("{}/{prefix}", nth(range, &[], None, node, n))
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter()
        .map(|s| s.parse().expect("an address"))
        .collect()
}

/// The error's `msg`, asserted to contain every needle.
fn assert_msg(err: &Value, needles: &[&str]) {
    let msg = err["msg"].as_str().unwrap_or_default();
    for n in needles {
        assert!(msg.contains(n), "error msg lacks {n:?}: {err}");
    }
}

/// The requests the server saw since the last reset, as (list, get, create, update, patch, delete,
/// everything else); resets the counters.
fn take_counts(server: &TestApiServer) -> [u64; 7] {
    let c = server.counts();
    server.reset_counts();
    let ipb = |v| c.get(Resource::IpBlocks, v);
    let known = ipb(Verb::List)
        + ipb(Verb::Get)
        + ipb(Verb::Create)
        + ipb(Verb::Update)
        + ipb(Verb::Patch)
        + ipb(Verb::Delete);
    [
        ipb(Verb::List),
        ipb(Verb::Get),
        ipb(Verb::Create),
        ipb(Verb::Update),
        ipb(Verb::Patch),
        ipb(Verb::Delete),
        c.total() - known + c.other,
    ]
}

// ---------------------------------------------------------------------------------------------
// ADD, DEL, CHECK
// ---------------------------------------------------------------------------------------------

#[test]
fn add_is_idempotent_per_container_and_interface() {
    let k = Cluster::start();
    let conf = net("1.0.0", "net", k.ipam("10.1.0.0/24", json!({})));
    let a = |n| nth("10.1.0.0/24", &[], None, "node-a", n);
    let first = add_ok(&conf, "node-a", "c1", "eth0");
    assert_eq!(address(&first, 0), nth_cidr("10.1.0.0/24", "node-a", 0));
    let again = add_ok(&conf, "node-a", "c1", "eth0");
    assert_eq!(again, first, "the same attachment gets the same result");
    // Another interface of the same container is another attachment.
    assert_eq!(
        address(&add_ok(&conf, "node-a", "c1", "net1"), 0),
        nth_cidr("10.1.0.0/24", "node-a", 1)
    );
    assert_eq!(
        address(&add_ok(&conf, "node-a", "c2", "eth0"), 0),
        nth_cidr("10.1.0.0/24", "node-a", 2)
    );
    assert_eq!(k.reserved(), [a(0), a(1), a(2)].into());
    assert_eq!(k.held_by("c1", "eth0"), [a(0)].into());
    // ADD is idempotent per node: a node lists only the blocks it holds, so the same attachment
    // re-ADDed from another node (which a kubelet never does: a sandbox lives on one node) gets an
    // address of that node; the attachment's DEL, from either node, releases both.
    let elsewhere = add_ok(&conf, "node-b", "c1", "eth0");
    assert_eq!(address(&elsewhere, 0), nth_cidr("10.1.0.0/24", "node-b", 0));
    assert_eq!(k.records().len(), 4);
    del_ok(&conf, "node-a", "c1", "eth0");
    assert_eq!(k.reserved(), [a(1), a(2)].into());
}

#[test]
fn del_releases_and_succeeds_for_unknown_attachments_and_twice() {
    let k = Cluster::start();
    let conf = net("1.0.0", "net", k.ipam("10.1.0.0/24", json!({})));
    assert_eq!(
        address(&add_ok(&conf, "node-a", "c1", "eth0"), 0),
        nth_cidr("10.1.0.0/24", "node-a", 0)
    );
    assert_eq!(
        address(&add_ok(&conf, "node-a", "c2", "eth0"), 0),
        nth_cidr("10.1.0.0/24", "node-a", 1)
    );
    del_ok(&conf, "node-a", "c1", "eth0");
    assert_eq!(
        k.reserved(),
        [nth("10.1.0.0/24", &[], None, "node-a", 1)].into()
    );
    del_ok(&conf, "node-a", "c1", "eth0");
    del_ok(&conf, "node-a", "never-added", "eth0");
    // DEL from another node (the pod moved, the call is retried elsewhere) releases too.
    del_ok(&conf, "node-b", "c2", "eth0");
    assert!(k.records().is_empty(), "{:?}", k.records());
    // The released address is handed out again.
    assert_eq!(
        address(&add_ok(&conf, "node-a", "c3", "eth0"), 0),
        nth_cidr("10.1.0.0/24", "node-a", 0)
    );
}

#[test]
fn huge_exclusions_are_jumped_and_del_needs_only_the_store_location() {
    let k = Cluster::start();
    let conf = net(
        "1.0.0",
        "net",
        k.ipam("fd00:ad0::/64", json!({"exclude": ["fd00:ad0::/65"]})),
    );
    // Before, the claim search walked 65,536 excluded blocks and answered "exhausted".
    let t = Instant::now();
    let first = add_ok(&conf, "node-a", "c1", "eth0");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "ADD took {:?}",
        t.elapsed()
    );
    assert_eq!(
        ip(&first, 0),
        nth("fd00:ad0::/64", &["fd00:ad0::/65"], None, "node-a", 0)
    );
    assert!(ip(&first, 0) >= "fd00:ad0:0:0:8000::".parse::<IpAddr>().unwrap());
    add_ok(&conf, "node-b", "c2", "eth0");
    // DEL with ranges ADD would refuse, and with a relative dataDir (no node lock, nothing created
    // relative to the current directory), still releases in the cluster.
    let mut broken = conf.clone();
    broken["ipam"]["range"] = json!("banana");
    del_ok(&broken, "node-a", "c1", "eth0");
    let mut relative = conf.clone();
    relative["ipam"]["dataDir"] = json!("relative/dir");
    del_ok(&relative, "node-b", "c2", "eth0");
    assert!(!std::path::Path::new("relative").exists());
    assert!(k.records().is_empty(), "{:?}", k.records());
}

#[test]
fn check_matches_prev_result_and_fails_with_code_102_otherwise() {
    let k = Cluster::start();
    let conf = net(
        "1.0.0",
        "net",
        k.ipam(
            "10.1.0.0/24",
            json!({"ipRanges": [{"range": "fd00:1::/64"}]}),
        ),
    );
    let result = add_ok(&conf, "node-a", "c1", "eth0");
    let check = |prev: &Value| {
        run(&call(
            "CHECK",
            "node-a",
            "c1",
            "eth0",
            &with(&conf, "prevResult", prev.clone()),
        ))
    };
    assert_eq!(check(&result).ok(), Value::Null);
    assert_eq!(
        run(&call("CHECK", "node-a", "c1", "eth0", &conf)).ok(),
        Value::Null,
        "without prevResult CHECK verifies the reservation alone"
    );
    let mut wrong = result.clone();
    wrong["ips"][0]["address"] = json!("10.1.0.99/24");
    let e = check(&wrong).err(102);
    let held = nth("10.1.0.0/24", &[], None, "node-a", 0).to_string();
    assert_msg(&e, &["10.1.0.99", &held, "prevResult"]);
    let mut missing = result.clone();
    missing["ips"].as_array_mut().unwrap().pop();
    let e = check(&missing).err(102);
    assert_msg(
        &e,
        &[&nth("fd00:1::/64", &[], None, "node-a", 0).to_string()],
    );
    let e = run(&call(
        "CHECK",
        "node-a",
        "c1",
        "net1",
        &with(&conf, "prevResult", result.clone()),
    ))
    .err(102);
    assert_msg(&e, &["c1", "net1"]);
    del_ok(&conf, "node-a", "c1", "eth0");
    let e = check(&result).err(102);
    assert_msg(&e, &["no reservation", "c1", "eth0"]);
}

// ---------------------------------------------------------------------------------------------
// GC and STATUS
// ---------------------------------------------------------------------------------------------

#[test]
fn gc_releases_only_this_nodes_unlisted_attachments_of_this_network() {
    let k = Cluster::start();
    let net_a = net("1.1.0", "net-a", k.ipam("10.1.0.0/24", json!({})));
    let net_b = net("1.1.0", "net-b", k.ipam("10.1.0.0/24", json!({})));
    let a1 = ip(&add_ok(&net_a, "node-a", "a1", "eth0"), 0);
    let a1n = ip(&add_ok(&net_a, "node-a", "a1", "net1"), 0);
    let a2 = ip(&add_ok(&net_a, "node-a", "a2", "eth0"), 0);
    let b1 = ip(&add_ok(&net_b, "node-a", "b1", "eth0"), 0);
    let r1 = ip(&add_ok(&net_a, "node-r", "r1", "eth0"), 0);
    let all: BTreeSet<IpAddr> = [a1, a1n, a2, b1, r1].into();
    assert_eq!(all.len(), 5, "one space: all addresses differ");
    assert_eq!(k.reserved(), all);

    let gc_a = with(
        &net_a,
        "cni.dev/valid-attachments",
        json!([{"containerID": "a1", "ifname": "eth0"}]),
    );
    assert_eq!(run(&network_call("GC", "node-a", &gc_a)).ok(), Value::Null);
    // a1/net1 and a2 (node-a, net-a, not valid) are released; b1 (net-b) and r1 (node-r) are kept.
    assert_eq!(k.reserved(), [a1, b1, r1].into());
    // Idempotent, and the kept attachment still passes CHECK.
    assert_eq!(run(&network_call("GC", "node-a", &gc_a)).ok(), Value::Null);
    assert_eq!(k.reserved(), [a1, b1, r1].into());
    assert_eq!(
        run(&call("CHECK", "node-a", "a1", "eth0", &net_a)).ok(),
        Value::Null
    );
    run(&call("CHECK", "node-a", "a2", "eth0", &net_a)).err(102);
    // node-r's own GC with nothing valid releases r1 only.
    let gc_none = with(&net_a, "cni.dev/valid-attachments", json!([]));
    assert_eq!(
        run(&network_call("GC", "node-r", &gc_none)).ok(),
        Value::Null
    );
    assert_eq!(k.reserved(), [a1, b1].into());
    // disableGC releases nothing.
    let disabled = with(&gc_none, "disableGC", json!(true));
    assert_eq!(
        run(&network_call("GC", "node-a", &disabled)).ok(),
        Value::Null
    );
    assert_eq!(k.reserved(), [a1, b1].into());
}

#[test]
fn status_is_0_then_50_when_a_range_is_full_or_the_api_is_unreachable() {
    let mut k = Cluster::start();
    let conf = net(
        "1.1.0",
        "net",
        k.ipam(
            "10.1.0.0/30",
            json!({"ipRanges": [{"range": "fd00:1::/64"}], "kubernetes": {
                "kubeconfig": k.kubeconfig.to_str().unwrap(), "timeoutSeconds": 2}}),
        ),
    );
    let status = || run(&network_call("STATUS", "node-a", &conf));
    assert_eq!(status().ok(), Value::Null, "no IPBlock yet");
    add_ok(&conf, "node-a", "c1", "eth0");
    assert_eq!(status().ok(), Value::Null, "one of two used");
    add_ok(&conf, "node-b", "c2", "eth0");
    let e = status().err(50);
    assert_msg(&e, &["10.1.0.0/30", "full"]);
    del_ok(&conf, "node-a", "c1", "eth0");
    assert_eq!(status().ok(), Value::Null, "one freed");

    k.server.stop();
    let start = Instant::now();
    let e = status().err(50);
    eprintln!(
        "STATUS with the API stopped: code 50 after {:?}: {}",
        start.elapsed(),
        e["msg"]
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "STATUS honours timeoutSeconds"
    );
    // ADD cannot reach the API either: try again later.
    let e = add(&conf, "node-a", "c3", "eth0").err(11);
    assert_msg(&e, &["timeoutSeconds"]);
}

// ---------------------------------------------------------------------------------------------
// Allocation semantics
// ---------------------------------------------------------------------------------------------

#[test]
fn static_requests_are_honoured_and_taken_ones_are_code_101() {
    let k = Cluster::start();
    let conf = net("1.0.0", "net", k.ipam("10.1.0.0/24", json!({})));
    let asking = |ip: &str| with(&conf, "runtimeConfig", json!({"ips": [ip]}));
    let r = add_ok(&asking("10.1.0.77/24"), "node-a", "c1", "eth0");
    assert_eq!(address(&r, 0), "10.1.0.77/24");
    // Another attachment, on this node or another, cannot have it.
    for node in ["node-a", "node-b"] {
        let e = add(&asking("10.1.0.77/24"), node, "c2", "eth0").err(101);
        assert_msg(&e, &["10.1.0.77", "c1"]);
    }
    // A static address in a block nobody claimed yet (10.1.0.128/26) creates that block.
    assert_eq!(
        address(&add_ok(&asking("10.1.0.200"), "node-b", "c2", "eth0"), 0),
        "10.1.0.200/24"
    );
    // Dynamic ADDs never collide with statics.
    let d = ip(&add_ok(&conf, "node-a", "c3", "eth0"), 0);
    assert!(!ips(&["10.1.0.77", "10.1.0.200"]).contains(&d));
    // Re-ADD with the held static is idempotent; asking for another one is refused (code 7).
    assert_eq!(
        address(&add_ok(&asking("10.1.0.77/24"), "node-a", "c1", "eth0"), 0),
        "10.1.0.77/24"
    );
    add(&asking("10.1.0.78/24"), "node-a", "c1", "eth0").err(7);
    // Outside every range or excluded: code 7, nothing reserved.
    add(&asking("10.9.9.9/24"), "node-a", "c4", "eth0").err(7);
    assert_eq!(
        k.reserved(),
        [ip(&r, 0), "10.1.0.200".parse().unwrap(), d].into()
    );
    // CNI_ARGS IP= works too.
    let c = call("ADD", "node-a", "c5", "eth0", &conf).env("CNI_ARGS", "IP=10.1.0.99");
    assert_eq!(address(&run(&c).ok(), 0), "10.1.0.99/24");
}

#[test]
fn dual_stack_ip_ranges_give_one_address_per_range() {
    let k = Cluster::start();
    let conf = net(
        "1.0.0",
        "net",
        k.ipam(
            "10.1.0.0/24",
            json!({"gateway": "10.1.0.1", "ipRanges": [{"range": "fd00:1::/64"}],
                   "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]}),
        ),
    );
    let r = add_ok(&conf, "node-a", "c1", "eth0");
    assert_eq!(
        ip(&r, 0),
        nth("10.1.0.0/24", &[], Some("10.1.0.1"), "node-a", 0)
    );
    assert_ne!(ip(&r, 0).to_string(), "10.1.0.1", "never the gateway");
    assert_eq!(r["ips"][0]["gateway"], "10.1.0.1");
    assert_eq!(address(&r, 1), nth_cidr("fd00:1::/64", "node-a", 0));
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    let r2 = add_ok(&conf, "node-b", "c2", "eth0");
    assert_ne!(ip(&r2, 0), ip(&r, 0));
    assert_ne!(ip(&r2, 1), ip(&r, 1));
    assert_eq!(k.held_by("c1", "eth0"), [ip(&r, 0), ip(&r, 1)].into());
    let cidrs: BTreeSet<String> = k
        .blocks()
        .iter()
        .map(|b| b["spec"]["cidr"].as_str().unwrap().to_string())
        .collect();
    // node-a and node-b each claimed one block per family.
    let blocks_of = |r: &Value| {
        [
            block_of(ip(r, 0)).to_string(),
            block_of(ip(r, 1)).to_string(),
        ]
    };
    let expected: BTreeSet<String> = blocks_of(&r).into_iter().chain(blocks_of(&r2)).collect();
    assert_eq!(expected.len(), 4);
    assert_eq!(cidrs, expected);
    del_ok(&conf, "node-a", "c1", "eth0");
    assert_eq!(k.reserved(), [ip(&r2, 0), ip(&r2, 1)].into());
}

#[test]
fn excluded_addresses_and_the_gateway_are_never_handed_out() {
    let k = Cluster::start();
    // 10.1.0.0/27: usable .1-.30; gateway .1, excluded .2/32 and .8/30 (.8-.11) and .30/31 (.30).
    let conf = net(
        "1.0.0",
        "net",
        k.ipam(
            "10.1.0.0/27",
            json!({"gateway": "10.1.0.1", "exclude": ["10.1.0.2/32", "10.1.0.8/30", "10.1.0.30/31"]}),
        ),
    );
    let mut got = BTreeSet::new();
    for i in 0.. {
        let node = ["node-a", "node-b", "node-c"][i % 3];
        let out = add(&conf, node, &format!("c{i}"), "eth0");
        if out.exit != 0 {
            let e = out.err(100);
            assert_msg(&e, &["10.1.0.0/27", "exhausted"]);
            break;
        }
        assert!(got.insert(ip(&out.ok(), 0)), "duplicate address");
    }
    let blocked: BTreeSet<IpAddr> = ips(&[
        "10.1.0.0",
        "10.1.0.1",
        "10.1.0.2",
        "10.1.0.8",
        "10.1.0.9",
        "10.1.0.10",
        "10.1.0.11",
        "10.1.0.30",
        "10.1.0.31",
    ]);
    let expected: BTreeSet<IpAddr> = (0..32u8)
        .map(|o| IpAddr::from([10, 1, 0, o]))
        .filter(|a| !blocked.contains(a))
        .collect();
    assert_eq!(got, expected, "every allowed address exactly once");
    assert_eq!(k.reserved(), expected);
}

#[test]
fn exhausted_pool_is_code_100_naming_the_range_and_reserves_nothing() {
    let k = Cluster::start();
    let conf = net("1.0.0", "net", k.ipam("10.1.0.0/30", json!({})));
    assert_eq!(
        address(&add_ok(&conf, "node-a", "c1", "eth0"), 0),
        "10.1.0.1/30"
    );
    // node-b finds the only block claimed by node-a and borrows from it.
    assert_eq!(
        address(&add_ok(&conf, "node-b", "c2", "eth0"), 0),
        "10.1.0.2/30"
    );
    let e = add(&conf, "node-c", "c3", "eth0").err(100);
    assert_msg(&e, &["10.1.0.0/30", "exhausted"]);
    assert!(k.held_by("c3", "eth0").is_empty());
    assert_eq!(
        address(&add_ok(&conf, "node-a", "c1", "eth0"), 0),
        "10.1.0.1/30"
    );

    // Exhausting one range of a dual-stack ADD: the other range's address is not kept either.
    let dual = net(
        "1.0.0",
        "net",
        k.ipam(
            "10.1.0.0/30",
            json!({"ipRanges": [{"range": "fd00:1::/64"}]}),
        ),
    );
    let e = add(&dual, "node-a", "c4", "eth0").err(100);
    assert_msg(&e, &["10.1.0.0/30"]);
    assert!(k.held_by("c4", "eth0").is_empty(), "{:?}", k.records());
    let v6_first = net(
        "1.0.0",
        "net",
        k.ipam(
            "fd00:1::/64",
            json!({"ipRanges": [{"range": "10.1.0.0/30"}]}),
        ),
    );
    let e = add(&v6_first, "node-a", "c5", "eth0").err(100);
    assert_msg(&e, &["10.1.0.0/30"]);
    assert!(k.held_by("c5", "eth0").is_empty(), "{:?}", k.records());
    assert_eq!(k.reserved(), ips(&["10.1.0.1", "10.1.0.2"]));
}

#[test]
fn records_keep_the_pod_identity_node_container_and_interface() {
    let k = Cluster::start();
    let conf = net("1.0.0", "pods", k.ipam("10.1.0.0/24", json!({})));
    let c = call("ADD", "worker-1", "c1", "eth0", &conf).env(
        "CNI_ARGS",
        "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_UID=uid-123;K8S_POD_INFRA_CONTAINER_ID=c1",
    );
    assert_eq!(
        address(&run(&c).ok(), 0),
        nth_cidr("10.1.0.0/24", "worker-1", 0)
    );
    add_ok(&conf, "worker-1", "c2", "net1");
    let first = nth("10.1.0.0/24", &[], None, "worker-1", 0);
    let block = block_of(first);
    let key = |ip: IpAddr| {
        let (IpAddr::V4(a), IpAddr::V4(b)) = (ip, block.network) else {
            panic!("IPv4")
        };
        (u32::from(a) - u32::from(b)).to_string()
    };
    let second = nth("10.1.0.0/24", &[], None, "worker-1", 1);
    let blocks = k.blocks();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    let b = &blocks[0];
    assert_eq!(b["apiVersion"], "plumb.dev/v1alpha1");
    assert_eq!(b["kind"], "IPBlock");
    assert_eq!(b["spec"]["space"], "_default");
    assert_eq!(b["spec"]["cidr"], block.to_string());
    assert_eq!(b["spec"]["node"], "worker-1");
    assert_eq!(b["spec"]["used"], 2);
    assert_eq!(b["spec"]["free"], 62);
    assert!(b["metadata"]["labels"]["plumb.dev/space-hash"].is_string());
    let mut a1 = b["spec"]["allocations"][key(first)].clone();
    let created = a1["created"].as_u64().expect("created");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(created <= now && now - created < 600, "created {created}");
    a1.as_object_mut().unwrap().remove("created");
    assert_eq!(
        a1,
        json!({"containerID": "c1", "ifname": "eth0", "network": "pods", "node": "worker-1",
               "podNamespace": "ns1", "podName": "web-0", "podUID": "uid-123"})
    );
    let mut a2 = b["spec"]["allocations"][key(second)].clone();
    a2.as_object_mut().unwrap().remove("created");
    assert_eq!(
        a2,
        json!({"containerID": "c2", "ifname": "net1", "network": "pods", "node": "worker-1"})
    );
}

#[test]
fn network_name_shares_or_separates_uniqueness() {
    let k = Cluster::start();
    let shared = |name: &str| {
        net(
            "1.0.0",
            name,
            k.ipam("10.1.0.0/24", json!({"network_name": "shared"})),
        )
    };
    let (blue, green) = (shared("blue"), shared("green"));
    let red = net(
        "1.0.0",
        "red",
        k.ipam("10.1.0.0/24", json!({"network_name": "red"})),
    );
    let a = |n| nth("10.1.0.0/24", &[], None, "node-a", n);
    assert_eq!(ip(&add_ok(&blue, "node-a", "c1", "eth0"), 0), a(0));
    // Same network_name, another network: unique with blue's addresses, on any node.
    assert_eq!(ip(&add_ok(&green, "node-a", "c2", "eth0"), 0), a(1));
    let b0 = ip(&add_ok(&green, "node-b", "c3", "eth0"), 0);
    assert_ne!(
        block_of(b0),
        block_of(a(0)),
        "node-b claims a block of its own"
    );
    // Another network_name: an independent pool.
    assert_eq!(ip(&add_ok(&red, "node-a", "c1", "eth0"), 0), a(0));
    // The default space (no network_name) is independent of both.
    let plain = net("1.0.0", "plain", k.ipam("10.1.0.0/24", json!({})));
    assert_eq!(ip(&add_ok(&plain, "node-a", "c9", "eth0"), 0), a(0));
    let mut spaces: Vec<String> = k
        .blocks()
        .iter()
        .map(|b| {
            format!(
                "{} {}",
                b["spec"]["space"].as_str().unwrap(),
                b["spec"]["cidr"].as_str().unwrap()
            )
        })
        .collect();
    spaces.sort();
    let mut expected = vec![
        format!("_default {}", block_of(a(0))),
        format!("red {}", block_of(a(0))),
        format!("shared {}", block_of(a(0))),
        format!("shared {}", block_of(b0)),
    ];
    expected.sort();
    assert_eq!(spaces, expected);
    // DEL in one space leaves the other alone (c1 exists in "shared" and "red").
    del_ok(&red, "node-a", "c1", "eth0");
    let mut left: Vec<String> = k
        .records()
        .iter()
        .map(|(ip, a)| format!("{ip} {}", a["network"].as_str().unwrap()))
        .collect();
    left.sort();
    let mut expected = vec![
        format!("{} blue", a(0)),
        format!("{} plain", a(0)),
        format!("{} green", a(1)),
        format!("{b0} green"),
    ];
    expected.sort();
    assert_eq!(left, expected);
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/// A fault rule hitting every request of `verbs`, at most `hits` times.
fn always(kind: FaultKind, verbs: &[Verb], hits: u64) -> Faults {
    Faults {
        rules: vec![FaultRule::new(kind, 1.0).verbs(verbs).max_hits(hits)],
        ..Faults::default()
    }
}

#[test]
fn add_that_cannot_finish_before_the_deadline_is_code_11_and_leaves_nothing() {
    let k = Cluster::start();
    let kube = json!({"kubeconfig": k.kubeconfig.to_str().unwrap(), "timeoutSeconds": 1});
    let v4 = net(
        "1.0.0",
        "net",
        k.ipam("10.1.0.0/24", json!({"kubernetes": kube})),
    );
    let dual = net(
        "1.0.0",
        "net",
        k.ipam(
            "10.1.0.0/24",
            json!({"kubernetes": kube, "ipRanges": [{"range": "fd00:1::/64"}]}),
        ),
    );
    // node-a holds a v4 block, so c2's v4 address is an update that works; its v6 address needs a new
    // block, and every create fails: first with 500s, then with connections dropped before the server
    // reads them.
    add_ok(&v4, "node-a", "c1", "eth0");
    for kind in [FaultKind::InternalError, FaultKind::DropConnection] {
        k.server.set_faults(always(kind, &[Verb::Create], u64::MAX));
        k.server.reset_counts();
        let start = Instant::now();
        let e = add(&dual, "node-a", "c2", "eth0").err(11);
        let took = start.elapsed();
        assert_msg(&e, &["timeoutSeconds"]);
        let c = take_counts(&k.server);
        eprintln!("{kind:?} on every create: code 11 after {took:?}; requests (list, get, create, update, patch, delete, other) {c:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(k.held_by("c2", "eth0").is_empty(), "{:?}", k.records());
        assert_eq!(k.reserved(), a_ips(&[0]));
        // The v4 address was written once and removed once: two updates.
        assert_eq!(c[3], 2, "updates");
    }
    k.server.clear_faults();
    let r = add_ok(&dual, "node-a", "c2", "eth0");
    assert_eq!(address(&r, 0), nth_cidr("10.1.0.0/24", "node-a", 1));
    assert_eq!(address(&r, 1), nth_cidr("fd00:1::/64", "node-a", 0));
}

#[test]
fn writes_whose_answer_is_lost_or_refused_are_not_made_twice() {
    let k = Cluster::start();
    let conf = net("1.0.0", "net", k.ipam("10.1.0.0/24", json!({})));
    // The create of node-a's block lands but the answer is lost: the retry finds the reservation.
    k.server
        .set_faults(always(FaultKind::DropResponse, &[Verb::Create], 1));
    k.server.reset_counts();
    assert_eq!(
        address(&add_ok(&conf, "node-a", "c1", "eth0"), 0),
        nth_cidr("10.1.0.0/24", "node-a", 0)
    );
    assert_eq!(take_counts(&k.server), [2, 0, 1, 0, 0, 0, 0]);
    // The same for an update.
    k.server
        .set_faults(always(FaultKind::DropResponse, &[Verb::Update], 1));
    assert_eq!(
        address(&add_ok(&conf, "node-a", "c2", "eth0"), 0),
        nth_cidr("10.1.0.0/24", "node-a", 1)
    );
    assert_eq!(take_counts(&k.server), [2, 0, 0, 1, 0, 0, 0]);
    // A 409 on the update: re-listed and written again, once.
    k.server
        .set_faults(always(FaultKind::Conflict, &[Verb::Update], 1));
    assert_eq!(
        address(&add_ok(&conf, "node-a", "c3", "eth0"), 0),
        nth_cidr("10.1.0.0/24", "node-a", 2)
    );
    assert_eq!(take_counts(&k.server), [2, 0, 0, 2, 0, 0, 0]);
    // 429 and 500 on the listing, then a dropped connection: retried.
    for kind in [
        FaultKind::TooManyRequests,
        FaultKind::InternalError,
        FaultKind::DropConnection,
    ] {
        k.server.set_faults(always(kind, &[Verb::List], 2));
        assert_eq!(
            address(&add_ok(&conf, "node-a", "c4", "eth0"), 0),
            nth_cidr("10.1.0.0/24", "node-a", 3)
        );
        del_ok(&conf, "node-a", "c4", "eth0");
    }
    k.server.reset_counts();
    assert_eq!(k.reserved(), a_ips(&[0, 1, 2]));
    // DEL whose update lands with the answer lost: the retry finds nothing left and succeeds.
    k.server
        .set_faults(always(FaultKind::DropResponse, &[Verb::Update], 1));
    del_ok(&conf, "node-a", "c2", "eth0");
    assert_eq!(take_counts(&k.server), [2, 0, 0, 1, 0, 0, 0]);
    assert_eq!(k.reserved(), a_ips(&[0, 2]));
    for (_, a) in k.records() {
        assert_eq!(a["node"], "node-a");
    }
}

// ---------------------------------------------------------------------------------------------
// Cost in API requests
// ---------------------------------------------------------------------------------------------

#[test]
fn uncontended_add_and_del_cost_at_most_two_requests() {
    let k = Cluster::start();
    let conf = net("1.0.0", "net", k.ipam("10.1.0.0/16", json!({})));
    let names = [
        "list", "get", "create", "update", "patch", "delete", "other",
    ];
    let show = |what: &str, c: &[u64; 7]| {
        let parts: Vec<String> = names
            .iter()
            .zip(c)
            .filter(|(_, n)| **n > 0)
            .map(|(name, n)| format!("{n} {name}"))
            .collect();
        eprintln!(
            "{what}: {} requests ({})",
            c.iter().sum::<u64>(),
            parts.join(", ")
        );
    };
    k.server.reset_counts();

    // First ADD on a fresh node: 1 list + 1 create (claims a block).
    add_ok(&conf, "node-a", "c1", "eth0");
    let c = take_counts(&k.server);
    show("first ADD on a fresh node", &c);
    assert_eq!(
        c,
        [1, 0, 1, 0, 0, 0, 0],
        "list, get, create, update, patch, delete, other"
    );

    // ADD of a new attachment on a node whose block has room: 1 list + 1 update.
    add_ok(&conf, "node-a", "c2", "eth0");
    let c = take_counts(&k.server);
    show("ADD on a node with a block with room", &c);
    assert_eq!(
        c,
        [1, 0, 0, 1, 0, 0, 0],
        "list, get, create, update, patch, delete, other"
    );

    // Another fresh node claims its own block: 1 list + 1 create.
    add_ok(&conf, "node-b", "c3", "eth0");
    let c = take_counts(&k.server);
    show("first ADD on a second fresh node", &c);
    assert_eq!(
        c,
        [1, 0, 1, 0, 0, 0, 0],
        "list, get, create, update, patch, delete, other"
    );

    // Idempotent re-ADD: 1 list, no write.
    add_ok(&conf, "node-a", "c2", "eth0");
    let c = take_counts(&k.server);
    show("re-ADD of a held attachment", &c);
    assert_eq!(
        c,
        [1, 0, 0, 0, 0, 0, 0],
        "list, get, create, update, patch, delete, other"
    );

    // DEL: 1 list + 1 update.
    del_ok(&conf, "node-a", "c1", "eth0");
    let c = take_counts(&k.server);
    show("DEL", &c);
    assert_eq!(
        c,
        [1, 0, 0, 1, 0, 0, 0],
        "list, get, create, update, patch, delete, other"
    );

    // DEL of an attachment holding nothing: 1 list.
    del_ok(&conf, "node-a", "c1", "eth0");
    let c = take_counts(&k.server);
    show("DEL of nothing", &c);
    assert_eq!(
        c,
        [1, 0, 0, 0, 0, 0, 0],
        "list, get, create, update, patch, delete, other"
    );

    // Dual-stack: one list and one write per range.
    let dual = net(
        "1.0.0",
        "dual",
        k.ipam(
            "10.2.0.0/16",
            json!({"network_name": "dual", "ipRanges": [{"range": "fd00:2::/64"}]}),
        ),
    );
    add_ok(&dual, "node-a", "d1", "eth0");
    let c = take_counts(&k.server);
    show("first dual-stack ADD on a fresh node", &c);
    assert_eq!(
        c,
        [1, 0, 2, 0, 0, 0, 0],
        "list, get, create, update, patch, delete, other"
    );
    add_ok(&dual, "node-a", "d2", "eth0");
    let c = take_counts(&k.server);
    show("dual-stack ADD on a node with blocks with room", &c);
    assert_eq!(
        c,
        [1, 0, 0, 2, 0, 0, 0],
        "list, get, create, update, patch, delete, other"
    );
}

// ---------------------------------------------------------------------------------------------
// Cost at cluster scale: what an ADD reads does not grow with other nodes' blocks
// ---------------------------------------------------------------------------------------------

/// A block of `space` at `cidr` claimed by `node`, holding one reservation per (offset, container)
/// of `node`, labelled as this plumb labels it (or, with `legacy`, as an older plumb did: the space
/// hash only), as the server would store it after a create.
fn block_object(
    space: &str,
    cidr: &str,
    node: &str,
    reservations: &[(u32, &str)],
    legacy: bool,
) -> Value {
    use plumb_ipam_kube::blocks::{new_block, recount, space_hash};
    use plumb_ipam_kube::crd::{Allocation, SPACE_LABEL};
    let net = plumb_ipam::range::Subnet::parse(cidr, "cidr").expect("a block cidr");
    let mut b = new_block(space, &net, node);
    for (off, cid) in reservations {
        b.spec.allocations.insert(
            off.to_string(),
            Allocation {
                container_id: cid.to_string(),
                ifname: "eth0".into(),
                network: "net".into(),
                node: node.into(),
                pod_namespace: None,
                pod_name: None,
                pod_uid: None,
                created: 1_700_000_000,
            },
        );
    }
    recount(&mut b);
    if legacy {
        b.metadata.labels = Some([(SPACE_LABEL.to_string(), space_hash(space))].into());
    }
    serde_json::to_value(&b).expect("a block as JSON")
}

/// The IPBlock requests the server logged since `from` (a sequence number), as "VERB query".
fn block_requests(server: &TestApiServer, from: u64) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.seq > from && r.target.is_some_and(|(res, _)| res == Resource::IpBlocks))
        .map(|r| format!("{} {}", r.method, r.query))
        .collect()
}

fn last_seq(server: &TestApiServer) -> u64 {
    server.requests().last().map_or(0, |r| r.seq)
}

#[test]
fn uncontended_add_and_del_read_the_same_bytes_with_2_or_200_nodes_blocks() {
    let k = Cluster::start();
    // Node objects only to move the resourceVersion counter to four digits, so the resourceVersions
    // the responses carry have the same length in both measurements.
    for i in 0..1000 {
        k.server
            .put_object(
                Resource::Nodes,
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("filler-{i}")}}),
            )
            .expect("a node");
    }
    let conf = net("1.0.0", "net", k.ipam("10.8.0.0/16", json!({})));
    add_ok(&conf, "node-a", "c100", "eth0");
    add_ok(&conf, "node-b", "c200", "eth0");
    let measure = |cid: &str| {
        k.server.reset_counts();
        add_ok(&conf, "node-a", cid, "eth0");
        let add = k.server.counts();
        k.server.reset_counts();
        del_ok(&conf, "node-a", cid, "eth0");
        let del = k.server.counts();
        (
            add.total(),
            add.response_bytes,
            del.total(),
            del.response_bytes,
        )
    };
    let (add_req, add_bytes, del_req, del_bytes) = measure("c101");
    // 200 more nodes' blocks, 16 reservations each, in the same space.
    let space = "_default";
    let existing: BTreeSet<String> = k
        .blocks()
        .iter()
        .map(|b| b["spec"]["cidr"].as_str().unwrap().to_string())
        .collect();
    let free_cidrs = (0..1024u32)
        .map(|i| {
            format!(
                "{}/26",
                std::net::Ipv4Addr::from((10 << 24) + (8 << 16) + 64 * i)
            )
        })
        .filter(|c| !existing.contains(c));
    for (n, cidr) in (0..200u32).zip(free_cidrs) {
        let node = format!("other-{n}");
        let cids: Vec<String> = (0..16).map(|i| format!("x{n}-{i}")).collect();
        let res: Vec<(u32, &str)> = cids
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u32 + 1, c.as_str()))
            .collect();
        k.server
            .put_object(
                Resource::IpBlocks,
                block_object(space, &cidr, &node, &res, false),
            )
            .expect("a block");
    }
    assert_eq!(k.blocks().len(), 202);
    let (add_req2, add_bytes2, del_req2, del_bytes2) = measure("c102");
    eprintln!("uncontended ADD: {add_req} requests {add_bytes} bytes with 2 nodes' blocks, {add_req2} requests {add_bytes2} bytes with 202; DEL {del_req}/{del_bytes} and {del_req2}/{del_bytes2}");
    assert_eq!((add_req, add_req2), (2, 2), "list + update");
    assert_eq!((del_req, del_req2), (2, 2), "list + update");
    assert_eq!(
        add_bytes2, add_bytes,
        "ADD reads the same with 200 more blocks"
    );
    assert_eq!(
        del_bytes2, del_bytes,
        "DEL reads the same with 200 more blocks"
    );
}

#[test]
fn blocks_written_by_an_older_plumb_are_found_relabelled_and_read_in_pages() {
    let k = Cluster::start();
    let conf = net("1.0.0", "net", k.ipam("10.9.0.0/16", json!({})));
    // What an older plumb left: node-a's block holding two reservations, 300 other nodes' blocks,
    // none with the holder or attachment labels; node-a's space directory exists (it made its lock
    // there) without the marker.
    let space = "_default";
    k.server
        .put_object(
            Resource::IpBlocks,
            block_object(
                space,
                "10.9.200.0/26",
                "node-a",
                &[(5, "old-1"), (6, "old-2")],
                true,
            ),
        )
        .expect("a block");
    for n in 0..300u32 {
        let cidr = format!("10.9.{}.{}/26", n / 4, (n % 4) * 64);
        let cid = format!("other-{n}");
        k.server
            .put_object(
                Resource::IpBlocks,
                block_object(space, &cidr, &format!("old-node-{n}"), &[(1, &cid)], true),
            )
            .expect("a block");
    }
    let dir = k.dir.path().join("data").join(space);
    std::fs::create_dir_all(&dir).expect("the space directory");
    // DEL of a reservation in the unlabelled block: the node reads the space once, in pages of 250,
    // relabels its own block (one update), then finds the attachment by its label.
    let from = last_seq(&k.server);
    k.server.reset_counts();
    del_ok(&conf, "node-a", "old-1", "eth0");
    let log = block_requests(&k.server, from);
    eprintln!("first DEL after the upgrade: {log:#?}");
    assert!(
        log[0].starts_with("GET ") && log[0].contains("limit=250"),
        "{log:?}"
    );
    assert!(
        log[1].starts_with("GET ") && log[1].contains("continue="),
        "{log:?}"
    );
    assert_eq!(
        take_counts(&k.server),
        [3, 0, 0, 2, 0, 0, 0],
        "2 pages, relabel, list, free"
    );
    assert!(k.held_by("old-1", "eth0").is_empty());
    assert_eq!(k.held_by("old-2", "eth0"), ips(&["10.9.200.6"]));
    assert!(dir.join(plumb_ipam_kube::ops::INDEX_MARKER).exists());
    let labels = |name: &str| {
        let b = k
            .server
            .object(Resource::IpBlocks, None, name)
            .expect("the block");
        b["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    let own = k
        .blocks()
        .into_iter()
        .find(|b| b["spec"]["cidr"] == "10.9.200.0/26")
        .unwrap();
    let own_name = own["metadata"]["name"].as_str().unwrap().to_string();
    assert!(labels(&own_name).contains_key(&plumb_ipam_kube::blocks::node_label("node-a")));
    // Other nodes' old blocks are theirs to relabel: untouched.
    let other = k
        .blocks()
        .into_iter()
        .find(|b| b["spec"]["cidr"] == "10.9.0.0/26")
        .unwrap();
    assert_eq!(labels(other["metadata"]["name"].as_str().unwrap()).len(), 1);
    // From now on node-a trusts its labels: an ADD is 1 list + 1 update, into its old block; the
    // remaining old reservation is released by a DEL of 1 list + 1 update.
    let r = add_ok(&conf, "node-a", "new-1", "eth0");
    assert_eq!(take_counts(&k.server), [1, 0, 0, 1, 0, 0, 0]);
    assert_eq!(block_of(ip(&r, 0)).to_string(), "10.9.200.0/26");
    del_ok(&conf, "node-a", "old-2", "eth0");
    assert_eq!(take_counts(&k.server), [1, 0, 0, 1, 0, 0, 0]);
    assert!(k.held_by("old-2", "eth0").is_empty());
}

#[test]
fn claiming_collisions_then_borrowing_read_the_space_in_pages() {
    let k = Cluster::start();
    // Two blocks, claimed by node-a and node-b; node-c then finds both positions taken by its blind
    // creates, reads the space (paged) and borrows.
    let conf = net("1.0.0", "net", k.ipam("10.7.0.0/25", json!({})));
    let a = ip(&add_ok(&conf, "node-a", "a1", "eth0"), 0);
    let b = ip(&add_ok(&conf, "node-b", "b1", "eth0"), 0);
    assert_ne!(block_of(a), block_of(b));
    let from = last_seq(&k.server);
    k.server.reset_counts();
    let c = ip(&add_ok(&conf, "node-c", "c1", "eth0"), 0);
    let log = block_requests(&k.server, from);
    eprintln!("ADD on a node with no block, every position taken: {log:#?}");
    assert_eq!(
        take_counts(&k.server),
        [2, 0, 2, 1, 0, 0, 0],
        "own list, 2 creates (409), paged list, borrow"
    );
    assert!(
        !log[0].contains("limit="),
        "the own listing is not paged: {log:?}"
    );
    assert!(
        log[3].starts_with("GET ") && log[3].contains("limit=250"),
        "{log:?}"
    );
    assert!(block_of(c) == block_of(a) || block_of(c) == block_of(b));
    let owners: BTreeSet<String> = k
        .blocks()
        .iter()
        .map(|b| b["spec"]["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        owners,
        ["node-a", "node-b"].iter().map(|s| s.to_string()).collect()
    );
    // node-c now holds a reservation in the lender's block, which carries node-c's holder label: its
    // GC finds it with one listing of its own blocks and frees it with one update.
    let lender = k
        .blocks()
        .into_iter()
        .find(|b| b["spec"]["cidr"] == block_of(c).to_string())
        .unwrap();
    let labels = lender["metadata"]["labels"].as_object().unwrap();
    assert!(labels.contains_key(&plumb_ipam_kube::blocks::node_label("node-c")));
    let gc_none = with(
        &with(&conf, "cniVersion", json!("1.1.0")),
        "cni.dev/valid-attachments",
        json!([]),
    );
    k.server.reset_counts();
    assert_eq!(
        run(&network_call("GC", "node-c", &gc_none)).ok(),
        Value::Null
    );
    assert_eq!(take_counts(&k.server), [1, 0, 0, 1, 0, 0, 0]);
    assert!(k.held_by("c1", "eth0").is_empty());
    let lender = k
        .server
        .object(
            Resource::IpBlocks,
            None,
            lender["metadata"]["name"].as_str().unwrap(),
        )
        .unwrap();
    let labels = lender["metadata"]["labels"].as_object().unwrap();
    assert!(
        !labels.contains_key(&plumb_ipam_kube::blocks::node_label("node-c")),
        "the borrower's label goes with its last reservation"
    );
}
