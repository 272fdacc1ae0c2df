//! plumb-ipam's Kubernetes store at cluster scale, against plumb's strict test API server: many nodes
//! allocating from one /16 at the same time, with and without injected API faults.
//!
//! The big runs simulate the nodes in this process through the library (`plumb_ipam_kube::ops`), the
//! code path the binary takes after parsing: every simulated node has its own `dataDir`, so its
//! node-local lock is its own, and every ADD and DEL runs on its own thread with its own client and
//! runtime, as separate processes would. A smaller run starts the built binary as real processes.
//!
//! Each run prints what it measured (time, allocations/s, API requests per ADD, 409 conflicts).

use conformance::plugin::Call;
use conformance::{plumb_bin, TempDir};
use plumb_cni::args::PodRef;
use plumb_cni::{CniResult, NetConf};
use plumb_ipam::alloc::Attachment;
use plumb_ipam::config::{IpamConfig, KubeSettings, Store};
use plumb_ipam_kube::ops;
use plumb_kubeapi::{Counts, FaultKind, FaultRule, Faults, Options, Resource, TestApiServer, Verb};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// The range every node allocates from.
const RANGE: &str = "10.40.0.0/16";
/// The CNI network name.
const NETWORK: &str = "scale";
/// Every attachment's interface.
const IFNAME: &str = "eth0";
/// Simulated nodes of the big runs.
const NODES: usize = 50;
/// Concurrent ADDs per node of the big runs.
const PER_NODE: usize = 20;
/// Simulated nodes of the run under faults: 50 in release builds (`cargo test --release`), 25 in debug
/// builds, where the client and the in-process server parse and print every listing unoptimized and
/// 50 nodes take up to a minute per phase on a busy 2-CPU machine.
const FAULT_NODES: usize = if cfg!(debug_assertions) { 25 } else { NODES };
/// `lockTimeoutSeconds` of the simulated nodes. A node's 20 ADDs wait for each other on the node lock;
/// in a debug build on a busy 2-CPU machine the last one can wait longer than the default 30 s, which
/// would measure the machine rather than the store.
const LOCK_TIMEOUT_SECS: u64 = 300;

/// The big runs measure time and requests: one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A test API server, its kubeconfig and the nodes' data dirs.
struct Lab {
    server: TestApiServer,
    dir: TempDir,
    kubeconfig: PathBuf,
}

/// One simulated node: its store settings and its config (its own `dataDir`).
struct Node {
    k: KubeSettings,
    cfg: IpamConfig,
}

/// What one ADD returned.
struct Added {
    cid: String,
    result: CniResult<Vec<IpAddr>>,
    /// How long the call took, lock wait included.
    took: Duration,
}

/// One reservation found in the IPBlocks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    ip: IpAddr,
    cid: String,
    ifname: String,
    node: String,
}

impl Lab {
    fn start() -> Lab {
        let server = TestApiServer::start(Options {
            log_capacity: 1_000_000,
            ..Options::default()
        })
        .expect("start the test API server");
        let dir = TempDir::new("kubescale");
        let kubeconfig = dir.path().join("kubeconfig");
        let kc = server.kubeconfig_with_test_ca(None);
        std::fs::write(&kubeconfig, kc.to_string()).expect("write kubeconfig");
        Lab {
            server,
            dir,
            kubeconfig,
        }
    }

    /// The `ipam` section node `name` uses.
    fn ipam(&self, name: &str) -> Value {
        let data = self.dir.path().join(format!("data-{name}"));
        json!({"type": "plumb-ipam", "range": RANGE, "dataDir": data.to_str().expect("UTF-8"),
               "lockTimeoutSeconds": LOCK_TIMEOUT_SECS,
               "kubernetes": {"kubeconfig": self.kubeconfig.to_str().expect("UTF-8"), "nodeName": name}})
    }

    /// The library view of node `name`: what plumb-ipam builds from the config.
    fn node(&self, name: &str) -> Node {
        let conf = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "plumb-ipam", "ipam": self.ipam(name)});
        let conf = NetConf::parse(conf.to_string().as_bytes()).expect("network config");
        let cfg = IpamConfig::from_conf(&conf).expect("ipam config");
        let Store::Kubernetes(mut k) = cfg.store.clone() else {
            panic!("the kubernetes section selects the kubernetes store")
        };
        k.node = name.to_string(); // PLUMB_NODE_NAME in this process's environment must not matter
        Node { k, cfg }
    }

    /// Every reservation in the IPBlocks, after checking each block's counters.
    fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for b in self.server.objects(Resource::IpBlocks) {
            let spec = &b["spec"];
            let cidr = spec["cidr"].as_str().expect("spec.cidr");
            let allocations = spec["allocations"].as_object().cloned().unwrap_or_default();
            assert_eq!(
                spec["used"].as_u64(),
                Some(allocations.len() as u64),
                "{cidr}: used counts the allocations"
            );
            assert_eq!(
                spec["free"].as_u64(),
                Some(64 - allocations.len() as u64),
                "{cidr}: free"
            );
            for (off, a) in allocations {
                let off: u32 = off.parse().expect("allocation keys are offsets");
                let base: std::net::Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
                out.push(Record {
                    ip: IpAddr::V4((u32::from(base) + off).into()),
                    cid: a["containerID"].as_str().unwrap().to_string(),
                    ifname: a["ifname"].as_str().unwrap().to_string(),
                    node: a["node"].as_str().unwrap().to_string(),
                });
            }
        }
        out
    }

    /// Requests answered 409 that were not injected (real conflicts), since the last log clear.
    fn real_conflicts(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.status == 409 && r.fault.is_none())
            .count()
    }

    /// Injected faults since the last log clear, by kind.
    fn fault_kinds(&self) -> String {
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for r in self.server.requests() {
            if let Some(f) = r.fault {
                *kinds.entry(format!("{f:?}")).or_default() += 1;
            }
        }
        let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        parts.join(", ")
    }

    /// Counters and real 409s since the last reset; resets both (and prints the injected faults).
    fn take(&self) -> (Counts, usize) {
        let c = self.server.counts();
        let conflicts = self.real_conflicts();
        if c.faults_injected > 0 {
            eprintln!("faults injected: {}", self.fault_kinds());
        }
        self.server.reset_counts();
        self.server.clear_requests();
        (c, conflicts)
    }
}

/// Node `n`'s name.
fn node_name(n: usize) -> String {
    format!("node-{n:02}")
}

/// Container `i` of node `n`.
fn cid(n: usize, i: usize) -> String {
    format!("pod-{n:02}-{i:02}")
}

fn attachment(cid: &str) -> Attachment {
    Attachment {
        container_id: cid.to_string(),
        ifname: IFNAME.to_string(),
        network: NETWORK.to_string(),
        pod: PodRef::default(),
    }
}

/// Runs `f(node, i)` for every node and every `i < per_node`, each on its own thread, all started
/// together; results in (node, i) order.
fn storm<T: Send>(
    nodes: &[Node],
    per_node: usize,
    f: impl Fn(&Node, usize, usize) -> T + Sync,
) -> Vec<T> {
    let go = Barrier::new(nodes.len() * per_node);
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .enumerate()
            .flat_map(|(n, node)| (0..per_node).map(move |i| (n, node, i)))
            .map(|(n, node, i)| {
                let (go, f) = (&go, &f);
                std::thread::Builder::new()
                    .name(format!("n{n}-{i}"))
                    .spawn_scoped(s, move || {
                        go.wait();
                        f(node, n, i)
                    })
                    .expect("spawn")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    })
}

/// Per-verb counts of IPBlock requests, for the report.
fn verbs(c: &Counts) -> String {
    let ipb = |v| c.get(Resource::IpBlocks, v);
    format!(
        "{} list, {} create, {} update, {} other",
        ipb(Verb::List),
        ipb(Verb::Create),
        ipb(Verb::Update),
        c.total() - ipb(Verb::List) - ipb(Verb::Create) - ipb(Verb::Update) + c.other
    )
}

/// Checks a completed ADD phase against the blocks: successful ADDs hold exactly their address,
/// failed ones (only code 11 allowed) hold nothing, no address twice. Returns the successes.
fn verify_adds(lab: &Lab, added: &[Added], allow_failures: bool) -> BTreeMap<String, IpAddr> {
    let records = lab.records();
    let mut by_cid: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for r in &records {
        assert_eq!(r.ifname, IFNAME);
        by_cid.entry(r.cid.clone()).or_default().push(r.ip);
    }
    let distinct: BTreeSet<IpAddr> = records.iter().map(|r| r.ip).collect();
    assert_eq!(distinct.len(), records.len(), "an address reserved twice");
    let mut ok = BTreeMap::new();
    for a in added {
        let held = by_cid.get(&a.cid).cloned().unwrap_or_default();
        match &a.result {
            Ok(ips) => {
                assert_eq!(ips.len(), 1, "{}: one range, one address", a.cid);
                assert_eq!(held, *ips, "{}: the blocks hold exactly its address", a.cid);
                ok.insert(a.cid.clone(), ips[0]);
            }
            Err(e) => {
                assert!(
                    allow_failures,
                    "ADD {} failed: {e} (code {})",
                    a.cid, e.code
                );
                assert_eq!(e.code, 11, "ADD {} failed with {e}", a.cid);
                assert!(held.is_empty(), "failed ADD {} left {held:?} behind", a.cid);
            }
        }
    }
    let handed: BTreeSet<IpAddr> = ok.values().copied().collect();
    assert_eq!(handed.len(), ok.len(), "two ADDs got the same address");
    assert_eq!(records.len(), ok.len(), "records without a successful ADD");
    ok
}

/// The summary line of an ADD phase.
fn report(what: &str, adds: usize, took: Duration, c: &Counts, conflicts: usize) {
    eprintln!(
        "{what}: {adds} ADDs in {:.2} s = {:.0} allocations/s; {} API requests ({}) = {:.2} per ADD; {conflicts} real 409 conflicts; {} faults injected",
        took.as_secs_f64(),
        adds as f64 / took.as_secs_f64(),
        c.total() + c.other,
        verbs(c),
        (c.total() + c.other) as f64 / adds as f64,
        c.faults_injected,
    );
}

/// `node_count` nodes × 20 concurrent ADDs, verified, then DEL of all, verified empty. With `faults`, failed
/// ADDs (code 11 only) and failed DELs (code 11, retried once the faults are off) are allowed.
fn many_nodes(node_count: usize, faults: Option<Faults>) {
    let _one_at_a_time = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::start();
    let nodes: Vec<Node> = (0..node_count).map(|n| lab.node(&node_name(n))).collect();
    let label = if faults.is_some() {
        "with faults"
    } else {
        "no faults"
    };
    if let Some(f) = &faults {
        lab.server.set_faults(f.clone());
    }
    lab.take();

    let start = Instant::now();
    let added = storm(&nodes, PER_NODE, |node, n, i| {
        let cid = cid(n, i);
        let t = Instant::now();
        let result = ops::add(&node.k, &node.cfg, &attachment(&cid), &[]);
        Added {
            cid,
            result,
            took: t.elapsed(),
        }
    });
    let took = start.elapsed();
    let (c, conflicts) = lab.take();
    report(
        &format!("{node_count}x{PER_NODE} ADD ({label})"),
        added.len(),
        took,
        &c,
        conflicts,
    );
    let ok = verify_adds(&lab, &added, faults.is_some());
    let mut times: Vec<Duration> = added.iter().map(|a| a.took).collect();
    times.sort();
    let at = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    eprintln!(
        "{label}: ADD call time, node lock wait included: median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        at(50).as_secs_f64() * 1e3,
        at(90).as_secs_f64() * 1e3,
        at(100).as_secs_f64() * 1e3
    );
    let failed = added.len() - ok.len();
    eprintln!(
        "{label}: {} ADDs succeeded, {failed} failed with code 11 and left nothing; 0 duplicates",
        ok.len()
    );
    for e in added.iter().filter_map(|a| a.result.as_ref().err()).take(3) {
        eprintln!("{label}: a failed ADD: {e}");
    }
    if faults.is_none() {
        assert_eq!(ok.len(), node_count * PER_NODE);
        // Nodes start claiming at a block derived from their name, so 50 nodes claiming at once
        // rarely pick the same one: one create per node, give or take a collision (each a 409 and
        // one more create). When they all started at the range's first block, 2.26 requests per ADD.
        let creates = c.get(Resource::IpBlocks, Verb::Create) as usize;
        assert!(
            creates <= node_count + 2,
            "{creates} creates for {node_count} nodes' first blocks"
        );
    }
    // Every node claimed blocks of its own; with 20 ADDs per node and 64-address blocks nobody borrows.
    for r in lab.records() {
        let owner = r.cid[4..6].parse::<usize>().unwrap();
        assert_eq!(r.node, node_name(owner), "{r:?}");
    }

    let start = Instant::now();
    let deleted = storm(&nodes, PER_NODE, |node, n, i| {
        ops::del(&node.k, &node.cfg, &cid(n, i), IFNAME)
    });
    let took = start.elapsed();
    let (c, conflicts) = lab.take();
    eprintln!(
        "{node_count}x{PER_NODE} DEL ({label}): {} DELs in {:.2} s; {} API requests ({}) = {:.2} per DEL; {conflicts} real 409 conflicts; {} faults injected",
        deleted.len(),
        took.as_secs_f64(),
        c.total() + c.other,
        verbs(&c),
        (c.total() + c.other) as f64 / deleted.len() as f64,
        c.faults_injected
    );
    lab.server.clear_faults();
    let mut retried = 0;
    for (j, r) in deleted.iter().enumerate() {
        if let Err(e) = r {
            assert!(faults.is_some(), "DEL failed without faults: {e}");
            assert_eq!(e.code, 11, "DEL failed with {e}");
            if retried < 3 {
                eprintln!("{label}: a failed DEL: {e}");
            }
            let (n, i) = (j / PER_NODE, j % PER_NODE);
            ops::del(&nodes[n].k, &nodes[n].cfg, &cid(n, i), IFNAME).expect("DEL retried");
            retried += 1;
        }
    }
    eprintln!("{label}: {retried} DELs failed with code 11 and succeeded when retried");
    let left = lab.records();
    assert!(left.is_empty(), "after DEL of all: {left:?}");
    let blocks = lab.server.objects(Resource::IpBlocks);
    assert!(
        blocks.len() >= node_count,
        "every node claimed a block ({})",
        blocks.len()
    );
    eprintln!(
        "{label}: after DEL all {} IPBlocks hold zero allocations",
        blocks.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn fifty_nodes_twenty_concurrent_adds_each_then_dels() {
    many_nodes(NODES, None);
}

#[test]
fn many_nodes_twenty_concurrent_adds_each_under_faults() {
    // 10 % of requests fail: writes get a 409, a 500, a dropped connection before the write or one
    // after it (the write lands, the answer is lost), 2.5 % each; reads a 500 or a dropped connection,
    // 5 % each. Every request waits 5 ms.
    let writes = [Verb::Create, Verb::Update];
    let reads = [Verb::List, Verb::Get];
    let faults = Faults {
        latency: Duration::from_millis(5),
        seed: 20_240_611,
        rules: vec![
            FaultRule::new(FaultKind::Conflict, 0.025).verbs(&writes),
            FaultRule::new(FaultKind::InternalError, 0.025).verbs(&writes),
            FaultRule::new(FaultKind::DropConnection, 0.025).verbs(&writes),
            FaultRule::new(FaultKind::DropResponse, 0.025).verbs(&writes),
            FaultRule::new(FaultKind::InternalError, 0.05).verbs(&reads),
            FaultRule::new(FaultKind::DropConnection, 0.05).verbs(&reads),
        ],
    };
    many_nodes(FAULT_NODES, Some(faults));
}

#[test]
fn ten_nodes_eight_concurrent_processes_each() {
    const N: usize = 10;
    const P: usize = 8;
    let _one_at_a_time = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::start();
    let bin = plumb_bin("plumb-ipam");
    let confs: Vec<Value> = (0..N)
        .map(|n| json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "plumb-ipam", "ipam": lab.ipam(&node_name(n))}))
        .collect();
    let call = |cmd: &str, n: usize, i: usize| {
        Call::new(cmd, &cid(n, i), "/run/netns/none", IFNAME, &confs[n])
            .env("PLUMB_NODE_NAME", &node_name(n))
    };
    let run_all = |cmd: &str| {
        let go = Barrier::new(N * P);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..N * P)
                .map(|j| {
                    let c = call(cmd, j / P, j % P);
                    let (go, bin) = (&go, &bin);
                    s.spawn(move || {
                        go.wait();
                        c.run(bin)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    };
    lab.take();
    let start = Instant::now();
    let outs = run_all("ADD");
    let took = start.elapsed();
    let (c, conflicts) = lab.take();
    report(
        &format!("{N}x{P} ADD processes"),
        N * P,
        took,
        &c,
        conflicts,
    );
    let added: Vec<Added> = outs
        .iter()
        .enumerate()
        .map(|(j, o)| {
            let v = o.ok();
            let addr = v["ips"][0]["address"].as_str().expect("an address");
            let ip: IpAddr = addr.split('/').next().unwrap().parse().unwrap();
            Added {
                cid: cid(j / P, j % P),
                result: Ok(vec![ip]),
                took: Duration::ZERO,
            }
        })
        .collect();
    let ok = verify_adds(&lab, &added, false);
    assert_eq!(ok.len(), N * P);
    for r in lab.records() {
        let owner = r.cid[4..6].parse::<usize>().unwrap();
        assert_eq!(r.node, node_name(owner), "{r:?}");
    }
    let start = Instant::now();
    for o in run_all("DEL") {
        o.ok();
    }
    let took = start.elapsed();
    let (c, _) = lab.take();
    eprintln!(
        "{N}x{P} DEL processes in {:.2} s; {} API requests ({})",
        took.as_secs_f64(),
        c.total() + c.other,
        verbs(&c)
    );
    assert!(lab.records().is_empty());
}
