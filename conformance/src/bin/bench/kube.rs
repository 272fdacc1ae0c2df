//! Mode `kube`: plumb-ipam's Kubernetes store against plumb's test API server (in this process, on
//! 127.0.0.1), driven through the plumb-ipam library the way the binary drives it after parsing.
//!
//! 1. Requests per uncontended ADD, each measured alone from the server's counters: the first ADD on a
//!    fresh node (list + create of its block) and an ADD on a node whose block has room (list + update)
//!    (target: ≤ 2 each).
//! 2. 50 simulated nodes × 20 concurrent ADDs on one /16 with 2 ms injected latency per request, each
//!    ADD on its own thread with its own client (as separate processes would), each node with its own
//!    `dataDir` (its node lock): allocations/s, API requests per ADD, real 409 conflicts, ADD latency;
//!    then DEL of all. Targets: every ADD succeeds, 0 duplicate addresses, every reservation is in the
//!    IPBlocks exactly as returned, and none is left after the DELs.
//!
//! The kubeconfig carries a certificate-authority-data, as real kubeconfigs and in-cluster config do:
//! without one kube-rs loads the host's whole trust store for every client (one per CNI call), which
//! a real node never pays. The server speaks plain HTTP, so the certificate never verifies anything.

use super::{Spread, Stop, Target};
use plumb_cni::args::PodRef;
use plumb_cni::{CniResult, NetConf};
use plumb_ipam::alloc::Attachment;
use plumb_ipam::config::{IpamConfig, KubeSettings, Store};
use plumb_ipam_kube::ops;
use plumb_kubeapi::{Counts, Faults, Options as ServerOptions, Resource, TestApiServer, Verb};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// The range every node allocates from.
const RANGE: &str = "10.33.0.0/16";
/// The CNI network name.
const NETWORK: &str = "bench-kube";
/// Every attachment's interface.
const IFNAME: &str = "eth0";
/// Simulated nodes.
const NODES: usize = 50;
/// Concurrent ADDs per node.
const PER_NODE: usize = 20;
/// Latency the server adds to every request.
const LATENCY: Duration = Duration::from_millis(2);
/// `lockTimeoutSeconds` of the simulated nodes: a node's 20 ADDs queue on its lock, and the bench
/// measures the store, not how long the last of them may wait.
const LOCK_TIMEOUT_SECS: u64 = 300;

/// Runs both measurements; the temp dir (kubeconfig, node lock dirs) is removed before returning.
pub fn run_kube(_opts: &super::Options) -> Result<Vec<Target>, Stop> {
    if cfg!(debug_assertions) {
        println!("warning: bench built without --release: numbers are for an unoptimized library and test API server");
    }
    let root = super::bench_dir()?;
    let result = measure(root.path());
    let path = root.path().to_path_buf();
    drop(root);
    match path.exists() {
        false => println!("removed {}", path.display()),
        true => println!("warning: could not remove {}", path.display()),
    }
    result
}

fn measure(root: &Path) -> Result<Vec<Target>, Stop> {
    let mut targets = single_add_requests(&root.join("single"))?;
    targets.extend(many_nodes(&root.join("scale"))?);
    Ok(targets)
}

/// A started test API server and where its kubeconfig and the nodes' data dirs are.
struct Lab {
    server: TestApiServer,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

/// One simulated node: its store settings and its config (its own `dataDir`).
struct Node {
    k: KubeSettings,
    cfg: IpamConfig,
}

impl Lab {
    /// A server with `faults` and a kubeconfig for it under `dir`.
    fn start(dir: &Path, faults: Faults) -> Result<Lab, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let server = TestApiServer::start(ServerOptions {
            log_capacity: 1_000_000,
            faults,
            ..ServerOptions::default()
        })
        .map_err(|e| format!("cannot start the test API server: {e}"))?;
        let kubeconfig = dir.join("kubeconfig");
        let kc = server.kubeconfig_with_test_ca(None);
        std::fs::write(&kubeconfig, kc.to_string())
            .map_err(|e| format!("write {}: {e}", kubeconfig.display()))?;
        Ok(Lab {
            server,
            dir: dir.to_path_buf(),
            kubeconfig,
        })
    }

    /// The library view of node `name`: what plumb-ipam builds from its config.
    fn node(&self, name: &str) -> Result<Node, String> {
        let data = self.dir.join(format!("data-{name}"));
        let conf = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "plumb-ipam", "ipam": {
            "type": "plumb-ipam", "range": RANGE, "dataDir": data, "lockTimeoutSeconds": LOCK_TIMEOUT_SECS,
            "kubernetes": {"kubeconfig": self.kubeconfig, "nodeName": name}}});
        let conf = lib("parse config", NetConf::parse(conf.to_string().as_bytes()))?;
        let cfg = lib("read ipam config", IpamConfig::from_conf(&conf))?;
        let Store::Kubernetes(mut k) = cfg.store.clone() else {
            return Err("the kubernetes section did not select the kubernetes store".into());
        };
        k.node = name.to_string(); // PLUMB_NODE_NAME in the bench's environment must not matter
        Ok(Node { k, cfg })
    }

    /// Every reservation in the IPBlocks as (address, containerID); errors on inconsistent counters.
    fn records(&self) -> Result<Vec<(IpAddr, String)>, String> {
        let mut out = Vec::new();
        for b in self.server.objects(Resource::IpBlocks) {
            let spec = &b["spec"];
            let cidr = spec["cidr"].as_str().unwrap_or_default();
            let allocations = spec["allocations"].as_object().cloned().unwrap_or_default();
            if spec["used"].as_u64() != Some(allocations.len() as u64) {
                return Err(format!(
                    "block {cidr}: used {} but {} allocations",
                    spec["used"],
                    allocations.len()
                ));
            }
            let base: std::net::Ipv4Addr = cidr
                .split('/')
                .next()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("block cidr {cidr:?}"))?;
            for (off, a) in allocations {
                let off: u32 = off.parse().map_err(|_| format!("offset {off:?}"))?;
                let cid = a["containerID"].as_str().unwrap_or_default().to_string();
                out.push((IpAddr::V4((u32::from(base) + off).into()), cid));
            }
        }
        Ok(out)
    }

    /// Counters and real (not injected) 409s since the last call; resets both.
    fn take(&self) -> (Counts, usize) {
        let c = self.server.counts();
        let conflicts = self
            .server
            .requests()
            .iter()
            .filter(|r| r.status == 409 && r.fault.is_none())
            .count();
        self.server.reset_counts();
        self.server.clear_requests();
        (c, conflicts)
    }
}

/// Turns a library error into the bench's error, saying what was being done.
fn lib<T>(what: &str, r: CniResult<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e} (code {})", e.code))
}

fn attachment(cid: &str) -> Attachment {
    Attachment {
        container_id: cid.to_string(),
        ifname: IFNAME.to_string(),
        network: NETWORK.to_string(),
        pod: PodRef::default(),
    }
}

/// Requests per IPBlock verb, for the output.
fn verbs(c: &Counts) -> String {
    let ipb = |v| c.get(Resource::IpBlocks, v);
    let known = ipb(Verb::List) + ipb(Verb::Create) + ipb(Verb::Update);
    format!(
        "{} list, {} create, {} update, {} other",
        ipb(Verb::List),
        ipb(Verb::Create),
        ipb(Verb::Update),
        c.total() - known + c.other
    )
}

/// All requests the server counted.
fn total(c: &Counts) -> u64 {
    c.total() + c.other
}

/// Section 1: the requests of single uncontended ADDs, each counted alone.
fn single_add_requests(dir: &Path) -> Result<Vec<Target>, Stop> {
    println!();
    println!("== requests per uncontended ADD (one ADD at a time, counted by the test API server)");
    let lab = Lab::start(dir, Faults::default())?;
    let node = lab.node("node-single")?;
    let mut worst = 0;
    for (what, cid) in [
        ("first ADD on a fresh node", "single-1"),
        ("ADD on a node whose block has room", "single-2"),
    ] {
        lab.take();
        let start = Instant::now();
        lib(what, ops::add(&node.k, &node.cfg, &attachment(cid), &[]))?;
        let took = start.elapsed();
        let (c, _) = lab.take();
        println!(
            "{what}: {} requests ({}) in {:.2} ms",
            total(&c),
            verbs(&c),
            took.as_secs_f64() * 1e3
        );
        worst = worst.max(total(&c));
    }
    lab.take();
    lib("DEL", ops::del(&node.k, &node.cfg, "single-1", IFNAME))?;
    let (c, _) = lab.take();
    println!("DEL: {} requests ({})", total(&c), verbs(&c));
    Ok(vec![Target::at_most(
        "requests per uncontended ADD",
        2.0,
        worst as f64,
        0,
    )])
}

/// What one ADD returned and how long it took (node lock wait included).
struct Added {
    cid: String,
    result: CniResult<Vec<IpAddr>>,
    took: Duration,
}

/// Runs `f(node index, i)` for every node and `i < PER_NODE`, each on its own thread, all released
/// together; results in (node, i) order.
fn storm<T: Send>(nodes: &[Node], f: impl Fn(&Node, usize, usize) -> T + Sync) -> Vec<T> {
    let go = Barrier::new(nodes.len() * PER_NODE);
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .enumerate()
            .flat_map(|(n, node)| (0..PER_NODE).map(move |i| (n, node, i)))
            .map(|(n, node, i)| {
                let (go, f) = (&go, &f);
                s.spawn(move || {
                    go.wait();
                    f(node, n, i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a bench thread panicked"))
            .collect()
    })
}

fn cid(n: usize, i: usize) -> String {
    format!("pod-{n:02}-{i:02}")
}

/// Section 2: 50 nodes × 20 concurrent ADDs with 2 ms latency, then DEL of all.
fn many_nodes(dir: &Path) -> Result<Vec<Target>, Stop> {
    println!();
    println!(
        "== {NODES} nodes x {PER_NODE} concurrent ADDs on {RANGE}, {} ms latency per request, one thread and one client per ADD, then DEL of all",
        LATENCY.as_millis()
    );
    let lab = Lab::start(
        dir,
        Faults {
            latency: LATENCY,
            ..Faults::default()
        },
    )?;
    let nodes = (0..NODES)
        .map(|n| lab.node(&format!("node-{n:02}")))
        .collect::<Result<Vec<_>, _>>()?;
    lab.take();
    let start = Instant::now();
    let added = storm(&nodes, |node, n, i| {
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
    let adds = added.len();
    let rate = adds as f64 / took.as_secs_f64();
    let per_add = total(&c) as f64 / adds as f64;
    println!(
        "ADD: {adds} in {:.2} s = {rate:.0} allocations/s; {} requests ({}) = {per_add:.2} per ADD; {conflicts} real 409 conflicts",
        took.as_secs_f64(),
        total(&c),
        verbs(&c)
    );
    let times: Vec<Duration> = added.iter().map(|a| a.took).collect();
    let spread = Spread::of(&times);
    let max = times.iter().max().copied().unwrap_or_default();
    println!(
        "ADD call time (node lock wait included): median {} p90 {} max {}",
        super::ms(spread.median),
        super::ms(spread.p90),
        super::ms(max)
    );

    let failed: Vec<&Added> = added.iter().filter(|a| a.result.is_err()).collect();
    for a in failed.iter().take(3) {
        if let Err(e) = &a.result {
            println!("failed ADD {}: {e} (code {})", a.cid, e.code);
        }
    }
    let (duplicates, mismatched) = check_records(&lab, &added)?;
    println!(
        "{} ADDs failed; {duplicates} duplicate addresses; {mismatched} attachments whose reservations differ from what ADD returned",
        failed.len()
    );

    let start = Instant::now();
    let deleted = storm(&nodes, |node, n, i| {
        ops::del(&node.k, &node.cfg, &cid(n, i), IFNAME)
    });
    let took = start.elapsed();
    let (c, del_conflicts) = lab.take();
    let del_failed = deleted.iter().filter(|r| r.is_err()).count();
    println!(
        "DEL: {} in {:.2} s = {:.0} releases/s; {} requests ({}) = {:.2} per DEL; {del_conflicts} real 409 conflicts; {del_failed} failed",
        deleted.len(),
        took.as_secs_f64(),
        deleted.len() as f64 / took.as_secs_f64(),
        total(&c),
        verbs(&c),
        total(&c) as f64 / deleted.len() as f64
    );
    let left = lab.records()?.len() as f64;
    let blocks = lab.server.objects(Resource::IpBlocks).len();
    println!("after DEL: {left} reservations left in {blocks} IPBlocks");
    Ok(vec![
        Target::at_most("50x20 failed ADDs", 0.0, failed.len() as f64, 0),
        Target::at_most("50x20 duplicate addresses", 0.0, duplicates as f64, 0),
        Target::at_most(
            "50x20 reservations differing from ADD results",
            0.0,
            mismatched as f64,
            0,
        ),
        Target::at_most(
            "50x20 reservations left after DEL",
            0.0,
            left + del_failed as f64,
            0,
        ),
        Target {
            name: "50x20 allocations/s (informational)".into(),
            pass: true,
            value: format!("{rate:.0}; {per_add:.2} requests per ADD; {conflicts} real 409s"),
        },
    ])
}

/// Compares the IPBlocks with the ADD results: (addresses reserved more than once, attachments whose
/// reservations are not exactly what their ADD returned — nothing for a failed ADD).
fn check_records(lab: &Lab, added: &[Added]) -> Result<(usize, usize), String> {
    let records = lab.records()?;
    let mut seen = BTreeSet::new();
    let mut duplicates = records.iter().filter(|(ip, _)| !seen.insert(*ip)).count();
    let mut by_cid: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    for (ip, cid) in &records {
        by_cid.entry(cid).or_default().push(*ip);
    }
    let mut handed = BTreeSet::new();
    let mut mismatched = 0;
    for a in added {
        let held = by_cid.remove(a.cid.as_str()).unwrap_or_default();
        let expected = a.result.as_ref().cloned().unwrap_or_default();
        for ip in &expected {
            if !handed.insert(*ip) {
                duplicates += 1;
            }
        }
        if held != expected {
            mismatched += 1;
        }
    }
    // Reservations of no attachment the bench made.
    mismatched += by_cid.len();
    Ok((duplicates, mismatched))
}
