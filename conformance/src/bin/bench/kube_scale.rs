//! Mode `kube-scale`: what one plumb-ipam ADD and DEL cost on the Kubernetes store as the cluster
//! grows, against plumb's test API server (in this process, on 127.0.0.1), driven through the
//! plumb-ipam library the way the binary drives it after parsing (one client and runtime per call).
//! Mode `kube-scale-real` runs the same workload against the real kube-apiserver of the kube-real
//! lane (see `kube_scale_real.rs` for how it counts).
//!
//! Two pools, each its own space: IPv4 `10.64.0.0/12` (16,384 /26 blocks) and IPv6 `fd00:64::/64`
//! (2^56 /120 blocks). `--scale-nodes` simulated nodes (default 1000; a node is a node name and its own
//! `dataDir`) make `--allocations` reservations (default 20,000), half in each pool, the same number
//! on every node, in batches of [`BATCH`] concurrent ADDs (one thread, client and runtime each).
//!
//! **Occupancy** is the share of the pool's blocks that are claimed. 20,000 reservations cannot fill a
//! /12 (1,048,576 addresses), so the IPv4 pool is brought to 1 %, 50 % and 95 % with filler blocks put
//! into the server's store directly on the test server (no API request), created through the API (many
//! at once) on the real one; each claimed by one of 4,000 other node names and holding
//! [`FILL_RESERVATIONS`] reservations, labelled as plumb labels them. An IPv6 /64 stays at 0 %
//! whatever a cluster does, so the IPv6 pool is measured at 10 and at all nodes only.
//!
//! Stages, each followed by `--samples` (default 100) uncontended ADDs (and their DELs) per pool, one at a time, each
//! on a node that holds its share of reservations already, measured alone: requests, response bytes,
//! call time (what is counted depends on the server, see [`Server`]):
//! 1. 10 nodes, IPv4 pool at 1 %;
//! 2. every node (the bulk: 20,000 ADDs in batches; aggregate requests, bytes, 409s and call times);
//! 3. IPv4 pool filled to 50 %; 4. to 95 % (then also the first ADDs of a few fresh nodes, which claim
//!    a block: the rare path, for information).
//!
//! Targets: bytes per uncontended ADD flat (largest stage mean over smallest, per pool, ≤ 1.2),
//! requests per uncontended ADD ≤ 2, no failed ADD and no duplicate address.

use super::{Spread, Stop, Target};
use plumb_cni::args::PodRef;
use plumb_cni::{CniResult, NetConf};
use plumb_ipam::alloc::Attachment;
use plumb_ipam::config::{IpamConfig, KubeSettings, Store};
use plumb_ipam::range::Subnet;
use plumb_ipam_kube::blocks::{block_of, new_block, recount};
use plumb_ipam_kube::crd::Allocation;
use plumb_ipam_kube::ops;
use plumb_kubeapi::{Options as ServerOptions, Resource, TestApiServer, Verb};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The IPv4 pool.
const V4_POOL: &str = "10.64.0.0/12";
/// Blocks of the IPv4 pool (/12 in /26 blocks).
const V4_BLOCKS: u32 = 1 << 14;
/// The IPv6 pool.
const V6_POOL: &str = "fd00:64::/64";
/// Concurrent ADDs in the bulk phase.
const BATCH: usize = 100;
/// Reservations in each filler block.
const FILL_RESERVATIONS: u32 = 4;
/// Fresh nodes whose first ADD (a claim) is measured at 95 %.
const FRESH: usize = 5;

/// One pool: its network (and space) name and range.
#[derive(Clone, Copy)]
struct Pool {
    name: &'static str,
    range: &'static str,
}

const POOLS: [Pool; 2] = [
    Pool {
        name: "scale-v4",
        range: V4_POOL,
    },
    Pool {
        name: "scale-v6",
        range: V6_POOL,
    },
];

/// A point in a server's counters, taken before and after what is measured.
#[derive(Clone, Copy, Debug)]
pub(super) struct Mark {
    /// When (the real server's audit log is matched by time).
    pub at: SystemTime,
    /// Requests so far (test server).
    pub requests: u64,
    /// Response bytes so far.
    pub bytes: u64,
    /// IPBlock creates so far (test server).
    pub creates: u64,
    /// The audit log's length (real server).
    pub audit: u64,
}

/// What the server saw between two marks.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counted {
    /// Requests of the plugin.
    pub requests: u64,
    /// Response bytes (bodies on the test server; TCP payload, TLS included, on the real one).
    pub bytes: u64,
    /// IPBlock creates.
    pub creates: u64,
    /// Responses 409 (the real server's audit log; `None` on the test server, which does not count them).
    pub conflicts: Option<u64>,
    /// The server's own time for the plugin's list and write requests (received to response complete,
    /// from the real server's audit log; `None` on the test server).
    pub server_time: Option<ServerTime>,
}

/// The server's time for one call's requests, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ServerTime {
    /// Sum over the call's list requests.
    pub list: Duration,
    /// Sum over its create and update requests.
    pub write: Duration,
}

/// The API server a run measures: plumb's test server or a real kube-apiserver.
pub(super) trait Server: Sync {
    /// One line saying what it is and how it counts.
    fn describe(&self) -> String;
    /// The kubeconfig the plugin's library uses.
    fn kubeconfig(&self) -> &Path;
    /// Every IPBlock, read with the server's admin view (not counted as the plugin's).
    fn blocks(&self) -> Result<Vec<Value>, String>;
    /// Creates these IPBlocks (filler; not counted as the plugin's).
    fn create_blocks(&self, blocks: Vec<Value>) -> Result<(), String>;
    /// How [`Server::create_blocks`] makes them, for the output.
    fn fill_how(&self) -> &'static str;
    /// The counters now.
    fn mark(&self) -> Mark;
    /// What the plugin cost in each (before, after) span; spans must not overlap.
    fn counted(&self, spans: &[(Mark, Mark)]) -> Result<Vec<Counted>, String>;
}

/// plumb's test API server in this process: exact request counts and response body bytes.
struct TestServer {
    server: TestApiServer,
    kubeconfig: PathBuf,
}

impl Server for TestServer {
    fn describe(&self) -> String {
        "plumb's test API server in this process (requests and response body bytes from its counters)"
            .into()
    }

    fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    fn blocks(&self) -> Result<Vec<Value>, String> {
        Ok(self.server.objects(Resource::IpBlocks))
    }

    fn create_blocks(&self, blocks: Vec<Value>) -> Result<(), String> {
        for b in blocks {
            self.server.put_object(Resource::IpBlocks, b)?;
        }
        Ok(())
    }

    fn fill_how(&self) -> &'static str {
        "put into the test server's store directly (no API request)"
    }

    fn mark(&self) -> Mark {
        let c = self.server.counts();
        Mark {
            at: SystemTime::now(),
            requests: c.total() + c.other,
            bytes: c.response_bytes,
            creates: c.get(Resource::IpBlocks, Verb::Create),
            audit: 0,
        }
    }

    fn counted(&self, spans: &[(Mark, Mark)]) -> Result<Vec<Counted>, String> {
        Ok(spans
            .iter()
            .map(|(a, b)| Counted {
                requests: b.requests - a.requests,
                bytes: b.bytes - a.bytes,
                creates: b.creates - a.creates,
                conflicts: None,
                server_time: None,
            })
            .collect())
    }
}

/// The started server and where the nodes' data dirs are.
struct Lab {
    server: Box<dyn Server>,
    dir: PathBuf,
}

/// One simulated node in one pool: its store settings and config.
struct Node {
    k: KubeSettings,
    cfg: IpamConfig,
}

/// What one ADD cost, measured alone.
#[derive(Default)]
struct Cost {
    requests: Vec<u64>,
    bytes: Vec<u64>,
    times: Vec<Duration>,
    /// The server's own time per call (real server only).
    server: Vec<ServerTime>,
}

impl Cost {
    fn mean(v: &[u64]) -> f64 {
        v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
    }

    fn line(&self) -> String {
        let s = Spread::of(&self.times);
        format!(
            "requests {:.2} (max {}), response bytes mean {:.0} (min {}, max {}), call time median {} p90 {}",
            Cost::mean(&self.requests),
            self.requests.iter().max().copied().unwrap_or(0),
            Cost::mean(&self.bytes),
            self.bytes.iter().min().copied().unwrap_or(0),
            self.bytes.iter().max().copied().unwrap_or(0),
            super::ms(s.median),
            super::ms(s.p90)
        ) + &self.server_line()
    }

    /// `; server time of its lists median .. p90 .., of its writes ..` when the server told it.
    fn server_line(&self) -> String {
        if self.server.is_empty() {
            return String::new();
        }
        let lists = Spread::of(&self.server.iter().map(|t| t.list).collect::<Vec<_>>());
        let writes = Spread::of(&self.server.iter().map(|t| t.write).collect::<Vec<_>>());
        format!(
            "; kube-apiserver's own time (audit log) for its list median {} p90 {}, for its write median {} p90 {}",
            super::ms(lists.median),
            super::ms(lists.p90),
            super::ms(writes.median),
            super::ms(writes.p90)
        )
    }
}

/// Runs the measurement; the temp dir (kubeconfig, node lock dirs) is removed before returning.
/// With `real`, on a real kube-apiserver (`kube-scale-real`).
pub fn run_kube_scale(opts: &super::Options, real: bool) -> Result<Vec<Target>, Stop> {
    if cfg!(debug_assertions) {
        println!("warning: bench built without --release: numbers are for an unoptimized library and test API server");
    }
    let root = super::bench_dir()?;
    let result = measure(
        root.path(),
        real,
        opts.scale_nodes,
        opts.allocations,
        opts.samples,
    );
    if real && result.is_ok() && !opts.no_whereabouts {
        if let Err(e) = super::kube_scale_real::control_plane().and_then(super::kube_scale_wb::run)
        {
            println!("whereabouts: not measured: {e}");
        }
    }
    let path = root.path().to_path_buf();
    drop(root);
    match path.exists() {
        false => println!("removed {}", path.display()),
        true => println!("warning: could not remove {}", path.display()),
    }
    result
}

fn lib<T>(what: &str, r: CniResult<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e} (code {})", e.code))
}

fn attachment(pool: Pool, cid: &str) -> Attachment {
    Attachment {
        container_id: cid.to_string(),
        ifname: "eth0".into(),
        network: pool.name.to_string(),
        pod: PodRef::default(),
    }
}

fn node_name(n: usize) -> String {
    format!("node-{n:04}.scale.example.com")
}

impl Lab {
    fn start(dir: &Path, real: bool) -> Result<Lab, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let server: Box<dyn Server> = if real {
            Box::new(super::kube_scale_real::RealServer::start()?)
        } else {
            let server = TestApiServer::start(ServerOptions {
                log_capacity: 10,
                ..ServerOptions::default()
            })
            .map_err(|e| format!("cannot start the test API server: {e}"))?;
            let kubeconfig = dir.join("kubeconfig");
            std::fs::write(
                &kubeconfig,
                server.kubeconfig_with_test_ca(None).to_string(),
            )
            .map_err(|e| format!("write {}: {e}", kubeconfig.display()))?;
            Box::new(TestServer { server, kubeconfig })
        };
        println!("server: {}", server.describe());
        Ok(Lab {
            server,
            dir: dir.to_path_buf(),
        })
    }

    fn node(&self, pool: Pool, name: &str) -> Result<Node, String> {
        let data = self.dir.join(format!("data-{name}"));
        let conf = json!({"cniVersion": "1.0.0", "name": pool.name, "type": "plumb-ipam", "ipam": {
            "type": "plumb-ipam", "range": pool.range, "network_name": pool.name, "dataDir": data,
            "lockTimeoutSeconds": 300,
            "kubernetes": {"kubeconfig": self.server.kubeconfig(), "nodeName": name, "timeoutSeconds": 120}}});
        let conf = lib("parse config", NetConf::parse(conf.to_string().as_bytes()))?;
        let cfg = lib("read ipam config", IpamConfig::from_conf(&conf))?;
        let Store::Kubernetes(mut k) = cfg.store.clone() else {
            return Err("the kubernetes section did not select the kubernetes store".into());
        };
        k.node = name.to_string();
        Ok(Node { k, cfg })
    }

    /// The pool's blocks in the server: (cidr, reservations as (address, containerID)).
    fn reservations(&self, pool: Pool) -> Result<Vec<(IpAddr, String)>, String> {
        let mut out = Vec::new();
        for b in self.server.blocks()? {
            if b["spec"]["space"] != pool.name {
                continue;
            }
            let Ok(net) = Subnet::parse(b["spec"]["cidr"].as_str().unwrap_or_default(), "cidr")
            else {
                continue;
            };
            for (off, a) in b["spec"]["allocations"]
                .as_object()
                .cloned()
                .unwrap_or_default()
            {
                let Ok(off) = off.parse::<u128>() else {
                    continue;
                };
                let ip = plumb_ipam_kube::blocks::addr_at(&net, off);
                out.push((
                    ip,
                    a["containerID"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        Ok(out)
    }

    /// Claimed blocks of the pool.
    fn claimed(&self, pool: Pool) -> Result<usize, String> {
        Ok(self
            .server
            .blocks()?
            .iter()
            .filter(|b| b["spec"]["space"] == pool.name)
            .count())
    }

    /// Puts filler blocks into the IPv4 pool until `share` of its blocks are claimed; how many.
    fn fill(&self, pool: Pool, share: f64) -> Result<usize, String> {
        let want = (V4_BLOCKS as f64 * share).round() as usize;
        let taken: HashSet<String> = self
            .server
            .blocks()?
            .iter()
            .filter(|b| b["spec"]["space"] == pool.name)
            .map(|b| b["spec"]["cidr"].as_str().unwrap_or_default().to_string())
            .collect();
        let mut have = taken.len();
        let base = u32::from(std::net::Ipv4Addr::new(10, 64, 0, 0));
        // A fixed odd stride visits every block once, spread over the pool.
        let mut i = 0u32;
        // Numbered on from the blocks already there: a later fill's container IDs are new ones.
        let mut k = have;
        let mut new = Vec::new();
        while have < want && i < V4_BLOCKS {
            let index = (i.wrapping_mul(7919)) % V4_BLOCKS;
            i += 1;
            let net = block_of(IpAddr::V4((base + index * 64).into()));
            if taken.contains(&net.to_string()) {
                continue;
            }
            let owner = format!("filler-{}.scale.example.com", k % 4000);
            let mut b = new_block(pool.name, &net, &owner);
            for r in 0..FILL_RESERVATIONS {
                b.spec.allocations.insert(
                    (r + 1).to_string(),
                    Allocation {
                        container_id: format!("filler-{k}-{r}"),
                        ifname: "eth0".into(),
                        network: pool.name.into(),
                        node: owner.clone(),
                        pod_namespace: Some("fill".into()),
                        pod_name: Some(format!("fill-{k}-{r}")),
                        pod_uid: None,
                        created: 1_700_000_000,
                    },
                );
            }
            recount(&mut b);
            new.push(serde_json::to_value(&b).map_err(|e| e.to_string())?);
            have += 1;
            k += 1;
        }
        let made = new.len();
        self.server.create_blocks(new)?;
        Ok(made)
    }
}

/// `per_node` ADDs on every node of `nodes` in `pool`, in batches of [`BATCH`] concurrent calls; returns
/// (containerID, result, call time) of each.
type Done = (String, CniResult<Vec<IpAddr>>, Duration);

fn bulk(lab: &Lab, pool: Pool, nodes: &[usize], per_node: usize) -> Result<Vec<Done>, String> {
    let built: Vec<(usize, Node)> = nodes
        .iter()
        .map(|n| lab.node(pool, &node_name(*n)).map(|x| (*n, x)))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for round in 0..per_node {
        for chunk in built.chunks(BATCH) {
            let done: Vec<Done> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|(n, node)| {
                        s.spawn(move || {
                            let cid = format!("{}-{n:04}-{round:03}", pool.name);
                            let t = Instant::now();
                            let r = ops::add(&node.k, &node.cfg, &attachment(pool, &cid), &[]);
                            (cid, r, t.elapsed())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a bench thread panicked"))
                    .collect()
            });
            out.extend(done);
        }
    }
    Ok(out)
}

/// `samples` uncontended ADDs, each followed by its DEL, one at a time, spread over `nodes`.
fn sample(lab: &Lab, pool: Pool, nodes: &[usize], samples: usize) -> Result<(Cost, Cost), String> {
    let (mut add, mut del) = (Cost::default(), Cost::default());
    let (mut add_spans, mut del_spans) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let n = nodes[(i * 7) % nodes.len()];
        let node = lab.node(pool, &node_name(n))?;
        let cid = format!("{}-sample-{n:04}-{i:03}", pool.name);
        let before = lab.server.mark();
        let t = Instant::now();
        lib(
            "sample ADD",
            ops::add(&node.k, &node.cfg, &attachment(pool, &cid), &[]),
        )?;
        add.times.push(t.elapsed());
        let after = lab.server.mark();
        add_spans.push((before, after));
        let before = lab.server.mark();
        let t = Instant::now();
        lib("sample DEL", ops::del(&node.k, &node.cfg, &cid, "eth0"))?;
        del.times.push(t.elapsed());
        del_spans.push((before, lab.server.mark()));
    }
    for (cost, spans) in [(&mut add, add_spans), (&mut del, del_spans)] {
        for c in lab.server.counted(&spans)? {
            cost.requests.push(c.requests);
            cost.bytes.push(c.bytes);
            cost.server.extend(c.server_time);
        }
    }
    Ok((add, del))
}

/// One measured stage of one pool, for the flatness target.
struct Stage {
    pool: &'static str,
    what: String,
    add: Cost,
}

fn occupancy(lab: &Lab, pool: Pool) -> Result<String, String> {
    let c = lab.claimed(pool)?;
    Ok(if pool.range == V4_POOL {
        format!(
            "occupancy {:.1}% ({c} of {V4_BLOCKS} blocks claimed)",
            100.0 * c as f64 / V4_BLOCKS as f64
        )
    } else {
        format!("occupancy 0.0% ({c} of 2^56 blocks claimed)")
    })
}

fn measure_stage(
    lab: &Lab,
    what: &str,
    nodes: &[usize],
    samples: usize,
    stages: &mut Vec<Stage>,
    pools: &[Pool],
) -> Result<(), String> {
    for pool in pools {
        let (add, del) = sample(lab, *pool, nodes, samples)?;
        let what = format!("{what}, {}", occupancy(lab, *pool)?);
        println!("{} {what}:", pool.range);
        println!("  uncontended ADD: {}", add.line());
        println!("  its DEL:         {}", del.line());
        stages.push(Stage {
            pool: pool.name,
            what,
            add,
        });
    }
    Ok(())
}

fn measure(
    root: &Path,
    real: bool,
    node_count: usize,
    allocations: usize,
    samples: usize,
) -> Result<Vec<Target>, Stop> {
    let node_count = node_count.max(10);
    let per_node = (allocations / (node_count * POOLS.len())).max(1);
    println!(
        "== kube-scale{}: {node_count} nodes, {} allocations ({per_node} per node in each of {V4_POOL} and {V6_POOL}), batches of {BATCH} concurrent ADDs; {samples} uncontended ADD+DEL per pool and stage",
        if real { "-real" } else { "" },
        per_node * node_count * POOLS.len()
    );
    let lab = Lab::start(&root.join("lab"), real)?;
    let (v4, v6) = (POOLS[0], POOLS[1]);
    let mut stages = Vec::new();
    let mut done: Vec<(Pool, Done)> = Vec::new();
    let first: Vec<usize> = (0..10).collect();
    let rest: Vec<usize> = (10..node_count).collect();
    let all: Vec<usize> = (0..node_count).collect();

    // 1. Ten nodes, the IPv4 pool at 1 %.
    lab.fill(v4, 0.01)?;
    for pool in POOLS {
        done.extend(
            bulk(&lab, pool, &first, per_node)?
                .into_iter()
                .map(|d| (pool, d)),
        );
    }
    measure_stage(&lab, "10 nodes", &first, samples, &mut stages, &POOLS)?;

    // 2. Every node: the bulk.
    let mut bulk_failed = 0;
    for pool in POOLS {
        let before = lab.server.mark();
        let t = Instant::now();
        let got = bulk(&lab, pool, &rest, per_node)?;
        let took = t.elapsed();
        let after = lab.server.mark();
        let c = lab.server.counted(&[(before, after)])?[0];
        let times: Vec<Duration> = got.iter().map(|d| d.2).collect();
        let s = Spread::of(&times);
        let failed = got.iter().filter(|d| d.1.is_err()).count();
        if let Some((cid, Err(e), _)) = got.iter().find(|d| d.1.is_err()) {
            println!("failed ADD {cid}: {e} (code {})", e.code);
        }
        bulk_failed += failed;
        let n = got.len().max(1) as f64;
        println!(
            "{} bulk: {} ADDs on {} nodes in {:.1} s ({:.0}/s): {:.2} requests and {:.0} response bytes per ADD, {} creates{}, call time median {} p90 {}; {failed} failed",
            pool.range,
            got.len(),
            rest.len(),
            took.as_secs_f64(),
            n / took.as_secs_f64(),
            c.requests as f64 / n,
            c.bytes as f64 / n,
            c.creates,
            c.conflicts
                .map(|n| format!(", {n} responses 409"))
                .unwrap_or_default(),
            super::ms(s.median),
            super::ms(s.p90)
        );
        done.extend(got.into_iter().map(|d| (pool, d)));
    }
    measure_stage(
        &lab,
        &format!("{node_count} nodes"),
        &all,
        samples,
        &mut stages,
        &POOLS,
    )?;

    // 3. and 4. The IPv4 pool at 50 % and 95 %.
    for share in [0.5, 0.95] {
        let t = Instant::now();
        let made = lab.fill(v4, share)?;
        println!(
            "(filled {V4_POOL} to {:.0}% in {:.1} s: {made} filler blocks {})",
            share * 100.0,
            t.elapsed().as_secs_f64(),
            lab.server.fill_how()
        );
        measure_stage(
            &lab,
            &format!("{node_count} nodes"),
            &all,
            samples,
            &mut stages,
            &[v4],
        )?;
    }

    // The rare path at 95 %: fresh nodes' first ADDs claim a block.
    let mut fresh = Cost::default();
    let mut spans = Vec::new();
    for i in 0..FRESH {
        let node = lab.node(v4, &format!("fresh-{i}.scale.example.com"))?;
        let before = lab.server.mark();
        let t = Instant::now();
        lib(
            "fresh ADD",
            ops::add(
                &node.k,
                &node.cfg,
                &attachment(v4, &format!("fresh-{i}")),
                &[],
            ),
        )?;
        fresh.times.push(t.elapsed());
        spans.push((before, lab.server.mark()));
    }
    for c in lab.server.counted(&spans)? {
        fresh.requests.push(c.requests);
        fresh.bytes.push(c.bytes);
        fresh.server.extend(c.server_time);
    }
    println!(
        "{V4_POOL} first ADD of a fresh node at {} (claims a block; information): {}",
        occupancy(&lab, v4)?,
        fresh.line()
    );

    // Every ADD result distinct and held exactly so in the blocks.
    let mut duplicates = 0;
    let mut mismatched = 0;
    for pool in [v4, v6] {
        let held: BTreeMap<String, Vec<IpAddr>> =
            lab.reservations(pool)?
                .into_iter()
                .fold(BTreeMap::new(), |mut m, (ip, cid)| {
                    m.entry(cid).or_default().push(ip);
                    m
                });
        let mut seen = BTreeSet::new();
        for (_, (cid, r, _)) in done.iter().filter(|(p, _)| p.name == pool.name) {
            let Ok(ips) = r else { continue };
            for ip in ips {
                if !seen.insert(*ip) {
                    duplicates += 1;
                }
            }
            if held.get(cid) != Some(ips) {
                mismatched += 1;
            }
        }
    }
    println!(
        "{} ADDs: {bulk_failed} failed, {duplicates} duplicate addresses, {mismatched} whose reservations differ from the result",
        done.len()
    );

    let mut targets = Vec::new();
    let mut worst_ratio: f64 = 0.0;
    let mut ratio_text = Vec::new();
    for pool in POOLS {
        let means: Vec<(f64, &str)> = stages
            .iter()
            .filter(|s| s.pool == pool.name)
            .map(|s| (Cost::mean(&s.add.bytes), s.what.as_str()))
            .collect();
        let lo = means.iter().map(|m| m.0).fold(f64::MAX, f64::min);
        let hi = means.iter().map(|m| m.0).fold(0.0, f64::max);
        let ratio = hi / lo.max(1.0);
        worst_ratio = worst_ratio.max(ratio);
        ratio_text.push(format!(
            "{} {:.0}..{:.0} bytes = {ratio:.3}",
            pool.range, lo, hi
        ));
    }
    let max_requests = stages
        .iter()
        .flat_map(|s| s.add.requests.iter())
        .max()
        .copied()
        .unwrap_or(0);
    targets.push(Target {
        name: format!(
            "bytes per uncontended ADD flat (1%→95% occupancy, 10→{node_count} nodes): ratio {worst_ratio:.3} <= 1.2"
        ),
        pass: worst_ratio <= 1.2,
        value: ratio_text.join("; "),
    });
    targets.push(Target::at_most(
        "requests per uncontended ADD",
        2.0,
        max_requests as f64,
        0,
    ));
    targets.push(Target::at_most(
        "kube-scale failed ADDs",
        0.0,
        bulk_failed as f64,
        0,
    ));
    targets.push(Target::at_most(
        "kube-scale duplicate addresses",
        0.0,
        duplicates as f64,
        0,
    ));
    targets.push(Target::at_most(
        "kube-scale reservations differing from ADD results",
        0.0,
        mismatched as f64,
        0,
    ));
    Ok(targets)
}
