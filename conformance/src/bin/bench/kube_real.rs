//! Mode `kube-real`: plumb-ipam side by side with whereabouts on a real kube-apiserver.
//!
//! The control plane is the kube-real lane's (`scripts/control-plane`: etcd + kube-apiserver on
//! loopback, RBAC, an audit log); whereabouts is built from the Go module proxy by
//! `scripts/whereabouts`, which also gives its CRDs and `daemonset-install.yaml`. Set up as installed:
//!
//! - plumb-ipam: `deploy/crds` and `deploy/rbac.yaml` applied as they are, the plugin runs with a
//!   TokenRequest token of the `kube-system/plumb` service account;
//! - whereabouts: its three CRDs and the ServiceAccount, ClusterRole and ClusterRoleBinding of its
//!   `daemonset-install.yaml` applied as they are, the plugin runs with a token of
//!   `kube-system/whereabouts` (its own ClusterRole, not the admin certificate).
//!
//! Both run as whole processes (the release `plumb-ipam`, the built `whereabouts`) on the same
//! workload: a few uncontended ADDs first (requests each, from the audit log), then `--nodes` ×
//! `--per-node` concurrent ADDs (each simulated node is a node name: `PLUMB_NODE_NAME` for plumb-ipam,
//! which also gets the node's own `dataDir` for its node lock; `NODENAME` for whereabouts, which only
//! reads it in node-slice mode), then DELs of all of them. Each plugin has its own /16 and pool.
//! Requests are counted the same way for both: audit-log events of the plugin's service account.
//! whereabouts also gets the flat file its installer would write (named by `configuration_path`) and
//! otherwise its defaults. Targets are on plumb-ipam (allocations/s ≥ 20× whereabouts', ≤ 2 requests
//! per uncontended ADD, no failed ADD, 0 duplicates, 0 leftovers); whereabouts' failures, duplicates
//! and leftovers are printed as measured. If whereabouts cannot be built the bench stops (exit 2)
//! with the build's error.

use super::{ms, Spread, Stop, Target};
use conformance::control_plane::{Auth, ControlPlane};
use conformance::plugin::Call;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// plumb-ipam's range and space.
const PLUMB_RANGE: &str = "10.74.0.0/16";
/// plumb-ipam's space (`network_name`).
const PLUMB_SPACE: &str = "bench-plumb";
/// whereabouts' range and `network_name` (its IPPool is `<network_name>-10.75.0.0-16`).
const WB_RANGE: &str = "10.75.0.0/16";
/// whereabouts' `network_name`.
const WB_NETWORK: &str = "bench-wb";
/// The namespace the pods of CNI_ARGS are in (no Pod objects are made: neither plugin reads them on ADD).
const POD_NS: &str = "bench";
/// The audit log's names of the plugins' service accounts.
pub(super) const PLUMB_USER: &str = "system:serviceaccount:kube-system:plumb";
/// The audit log's name for whereabouts' service account.
pub(super) const WB_USER: &str = "system:serviceaccount:kube-system:whereabouts";
/// IPBlocks (plumb-ipam), IPPools and OverlappingRangeIPReservations (whereabouts, in kube-system).
const IPBLOCKS: &str = "/apis/plumb.dev/v1alpha1/ipblocks";
/// whereabouts' IPPools in kube-system (its kubeconfig's namespace).
const IPPOOLS: &str = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/kube-system/ippools";
/// whereabouts' OverlappingRangeIPReservations in kube-system.
const OVERLAPPING: &str =
    "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/kube-system/overlappingrangeipreservations";

/// One IPAM plugin as a whole process, with what the bench needs to drive and count it.
struct Plugin {
    label: &'static str,
    binary: PathBuf,
    /// The audit log's user of its token.
    user: &'static str,
    /// The env var naming the node.
    node_env: &'static str,
    /// The network config of node `n`.
    conf: Box<dyn Fn(&str) -> Value + Sync>,
    /// Reservations of this plugin left in the API (read as the admin).
    leftovers: fn(&ControlPlane) -> Result<(usize, String), String>,
}

/// What one ADD or DEL process gave: the address (ADD) or the error, and its wall time.
struct Outcome {
    cid: String,
    result: Result<Option<String>, String>,
    took: Duration,
    /// Error-level lines the process logged on stderr though it exited 0 (whereabouts' DEL always
    /// exits 0 and only logs why it did not free).
    logged: Vec<String>,
}

/// One plugin's measured figures.
struct Figures {
    adds: usize,
    ok: usize,
    rate: f64,
    spread: Option<Spread>,
    requests_per_add: f64,
    duplicates: usize,
    failures: BTreeMap<String, usize>,
    del_failures: BTreeMap<String, usize>,
    /// DELs that exited 0 but logged an error.
    del_logged: usize,
    del_seconds: f64,
    requests_per_del: f64,
    leftovers: usize,
    leftover_detail: String,
    uncontended: Vec<usize>,
}

/// Runs the side-by-side measurement; the control plane and its directory go at exit.
pub fn run_kube_real(opts: &super::Options) -> Result<Vec<Target>, Stop> {
    if cfg!(debug_assertions) {
        println!("warning: bench built without --release");
    }
    let plumb = super::release_binary("plumb-ipam")?;
    super::warn_if_stale(&plumb, &["ipam/src", "ipam/kube/src"]);
    let wb_dir = script_dir("scripts/whereabouts")?;
    let whereabouts = wb_dir.join("whereabouts");
    println!("whereabouts: {}", whereabouts.display());
    let cp = ControlPlane::start().map_err(|e| format!("control plane: {e}"))?;
    println!(
        "control plane: kube-apiserver {} (etcd from scripts/control-plane) ready in {:.1}s at {}",
        cp.version,
        cp.start_seconds,
        cp.url()
    );
    let wb_version = wb_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('-').next())
        .unwrap_or("?")
        .to_string();
    println!("whereabouts version: {wb_version}");

    setup(&cp, &wb_dir)?;
    let dir = cp.scratch("bench");
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, cp.ca_pem()).map_err(|e| e.to_string())?;
    let plumb_kc = kubeconfig(&cp, &dir, "plumb", &ca, "kube-system", "plumb")?;
    let wb_kc = kubeconfig(&cp, &dir, "whereabouts", &ca, "kube-system", "whereabouts")?;

    // whereabouts refuses to run without its flat file (`config file not found`): its installer writes
    // one into /etc/cni/net.d/whereabouts.d; here it is named by `configuration_path`.
    let wb_flat = dir.join("whereabouts.conf");
    let flat = json!({"datastore": "kubernetes", "kubernetes": {"kubeconfig": wb_kc}});
    std::fs::write(&wb_flat, flat.to_string()).map_err(|e| e.to_string())?;
    let data = dir.join("plumb-data");
    let plugins = [
        Plugin {
            label: "plumb-ipam",
            binary: plumb,
            user: PLUMB_USER,
            node_env: "PLUMB_NODE_NAME",
            conf: Box::new(move |node: &str| {
                // As the kube-real scale test: a node's ADDs queue on its node lock, and on a busy
                // 2-CPU machine the last may wait longer than the default lock timeout.
                json!({"cniVersion": "1.0.0", "name": PLUMB_SPACE, "type": "plumb-ipam", "ipam": {
                    "type": "plumb-ipam", "range": PLUMB_RANGE, "network_name": PLUMB_SPACE,
                    "dataDir": data.join(node), "lockTimeoutSeconds": 300,
                    "kubernetes": {"kubeconfig": plumb_kc, "timeoutSeconds": 300}}})
            }),
            leftovers: plumb_leftovers,
        },
        Plugin {
            label: "whereabouts",
            binary: whereabouts,
            user: WB_USER,
            node_env: "NODENAME",
            conf: Box::new(move |_node: &str| {
                json!({"cniVersion": "1.0.0", "name": WB_NETWORK, "type": "whereabouts", "ipam": {
                    "type": "whereabouts", "range": WB_RANGE, "network_name": WB_NETWORK,
                    "configuration_path": wb_flat, "kubernetes": {"kubeconfig": wb_kc}}})
            }),
            leftovers: wb_leftovers,
        },
    ];
    let (nodes, per_node) = (opts.nodes, opts.per_node);
    let mut figures = Vec::new();
    for p in &plugins {
        println!();
        println!(
            "== {}: {nodes} nodes x {per_node} concurrent ADDs, then DELs",
            p.label
        );
        figures.push(measure(&cp, p, nodes, per_node)?);
    }
    Ok(report(&plugins, &figures, nodes, per_node))
}

/// Runs a build script of the workspace (it prints a directory on stdout).
pub(super) fn script_dir(rel: &str) -> Result<PathBuf, String> {
    let script = conformance::workspace_root().join(rel);
    let out = Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The documents of a multi-document YAML file, as JSON.
fn yaml_docs(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).map_err(|e| format!("{}: {e}", path.display())))
        .filter(|v| !matches!(v, Ok(Value::Null)))
        .collect()
}

/// Applies the CRDs and RBAC objects of `path` (other kinds, e.g. a DaemonSet, are skipped: nothing
/// runs pods here); returns the CRD names.
pub(super) fn apply_file(cp: &ControlPlane, path: &Path) -> Result<Vec<String>, String> {
    let mut crds = Vec::new();
    for doc in yaml_docs(path)? {
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
        let collection = match doc["kind"].as_str().unwrap_or_default() {
            "CustomResourceDefinition" => {
                crds.push(doc["metadata"]["name"].as_str().unwrap_or("").to_string());
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions".to_string()
            }
            "ServiceAccount" => format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            "ClusterRole" => "/apis/rbac.authorization.k8s.io/v1/clusterroles".into(),
            "ClusterRoleBinding" => "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into(),
            _ => continue,
        };
        cp.apply(&collection, &doc);
    }
    Ok(crds)
}

/// deploy/ for plumb-ipam, the module's CRDs and RBAC for whereabouts; waits until every CRD serves.
fn setup(cp: &ControlPlane, wb_dir: &Path) -> Result<(), String> {
    let root = conformance::workspace_root();
    let mut crds = apply_file(cp, &root.join("deploy/crds/ipblocks.plumb.dev.yaml"))?;
    apply_file(cp, &root.join("deploy/rbac.yaml"))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(wb_dir.join("crds"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        crds.extend(apply_file(cp, &f)?);
    }
    println!("applied deploy/crds, deploy/rbac.yaml and whereabouts' CRDs + RBAC; CRDs: {crds:?}");
    for name in crds {
        wait_served(cp, &name)?;
    }
    Ok(())
}

/// Waits until CRD `name` is Established and a list of its (first version's) objects answers 200.
pub(super) fn wait_served(cp: &ControlPlane, name: &str) -> Result<(), String> {
    let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let crd = cp.request("GET", &path, None, Auth::Admin)?.body;
        let established = crd["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        if established {
            let group = crd["spec"]["group"].as_str().unwrap_or_default();
            let version = crd["spec"]["versions"][0]["name"]
                .as_str()
                .unwrap_or_default();
            let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
            let list = format!("/apis/{group}/{version}/{plural}");
            if cp.request("GET", &list, None, Auth::Admin)?.status == 200 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("CRD {name} not served within 60 s: {crd}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A kubeconfig with a TokenRequest token of service account `ns/sa` (one hour), the CA by path, and
/// the context namespace `ns` (whereabouts keeps its IPPools and lease there).
pub(super) fn kubeconfig(
    cp: &ControlPlane,
    dir: &Path,
    name: &str,
    ca: &Path,
    ns: &str,
    sa: &str,
) -> Result<PathBuf, String> {
    let token = cp.token(ns, sa, 3600);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
         users:\n- name: {sa}\n  user:\n    token: \"{token}\"\ncontexts:\n- name: ctx\n  context:\n    cluster: real\n    user: {sa}\n    namespace: {ns}\n\
         current-context: ctx\n",
        cp.url(),
        ca.display()
    );
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Runs one ADD or DEL process of `p` for pod `cid` on `node`, with the CNI_ARGS containerd and
/// CRI-O pass (`IgnoreUnknown=1` first: whereabouts refuses `K8S_POD_UID` without it).
fn call(p: &Plugin, command: &str, node: &str, cid: &str) -> Outcome {
    let conf = (p.conf)(node);
    let uid = format!(
        "00000000-0000-4000-8000-{:012x}",
        cid.bytes()
            .fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(b as u64))
            & 0xffff_ffff_ffff
    );
    let started = Instant::now();
    let out = Call::new(command, cid, "/run/netns/none", "eth0", &conf)
        .env(p.node_env, node)
        .env(
            "CNI_ARGS",
            &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NS};K8S_POD_NAME={cid};K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={uid}"),
        )
        .run(&p.binary);
    let took = started.elapsed();
    let result = if out.exit != 0 {
        Err(error_text(&out))
    } else if command == "ADD" {
        serde_json::from_str::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["ips"][0]["address"].as_str().map(|a| a.to_string()))
            .map(Some)
            .ok_or_else(|| format!("exit 0 but no ips[0].address: {}", out.stdout.trim()))
    } else {
        Ok(None)
    };
    let logged = if out.exit == 0 {
        out.stderr
            .lines()
            .filter(|l| l.contains("[error]"))
            .map(|l| l.to_string())
            .collect()
    } else {
        Vec::new()
    };
    Outcome {
        cid: cid.to_string(),
        result,
        took,
        logged,
    }
}

/// The CNI error of a failed call: `msg: details` of the JSON on stdout, else the raw output.
pub(super) fn error_text(out: &conformance::plugin::Outcome) -> String {
    match serde_json::from_str::<Value>(&out.stdout) {
        Ok(v) if v["msg"].is_string() => {
            let details = v["details"].as_str().unwrap_or_default();
            format!(
                "code {}: {} {}",
                v["code"],
                v["msg"].as_str().unwrap_or(""),
                details
            )
            .trim()
            .to_string()
        }
        _ => format!(
            "exit {}: {} {}",
            out.exit,
            out.stdout.trim(),
            out.stderr.trim()
        ),
    }
}

/// Runs `command` for every (node, i) on its own thread, all released at once; the outcomes and the
/// wall time from release to the last one.
fn concurrently(
    p: &Plugin,
    command: &str,
    nodes: usize,
    per_node: usize,
) -> (Vec<Outcome>, Duration) {
    let go = Barrier::new(nodes * per_node + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..nodes)
            .flat_map(|n| (0..per_node).map(move |i| (n, i)))
            .map(|(n, i)| {
                let go = &go;
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || {
                        let node = format!("node-{n:02}");
                        let cid = format!("pod-{n:02}-{i:02}");
                        go.wait();
                        call(p, command, &node, &cid)
                    })
                    .expect("spawn a bench thread")
            })
            .collect();
        go.wait();
        let started = Instant::now();
        let outcomes: Vec<Outcome> = handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect();
        (outcomes, started.elapsed())
    })
}

/// The plugin's requests in the audit log after `mark`, as "verb resource code" -> count.
fn requests(cp: &ControlPlane, mark: u64, user: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in cp.audit_events(mark) {
        if e["user"]["username"] != user {
            continue;
        }
        let key = format!(
            "{} {} {}",
            e["verb"].as_str().unwrap_or("?"),
            e["objectRef"]["resource"].as_str().unwrap_or("?"),
            e["responseStatus"]["code"].as_u64().unwrap_or(0)
        );
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// The number of requests in a breakdown.
fn total(m: &BTreeMap<String, usize>) -> usize {
    m.values().sum()
}

/// Error messages -> count, the pod's name replaced by `<pod>` so equal causes group together.
fn failure_counts(outcomes: &[Outcome]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for o in outcomes {
        if let Err(e) = &o.result {
            let short: String = e.replace(&o.cid, "<pod>").chars().take(300).collect();
            *out.entry(short).or_insert(0) += 1;
        }
    }
    out
}

/// Error lines logged by calls that exited 0 -> count (timestamps cut, pod names blurred).
fn logged_counts(outcomes: &[Outcome]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for o in outcomes {
        for l in &o.logged {
            let l = l.split_once("[error]").map_or(l.as_str(), |(_, rest)| rest);
            let short: String = l
                .trim()
                .replace(&o.cid, "<pod>")
                .chars()
                .take(300)
                .collect();
            *out.entry(short).or_insert(0) += 1;
        }
    }
    out
}

/// One un-timed ADD+DEL, three uncontended ADDs (one at a time on a fresh node: its first ADD, then
/// two more) with their requests each, then the concurrent ADDs and DELs of the workload.
fn measure(
    cp: &ControlPlane,
    p: &Plugin,
    nodes: usize,
    per_node: usize,
) -> Result<Figures, String> {
    // One un-timed ADD + DEL first, so the server's first-use costs (the token's authentication, the
    // custom resource's storage) fall on neither plugin's measured calls.
    for command in ["ADD", "DEL"] {
        let o = call(p, command, "node-warm", "warm-0");
        println!("warm-up {command}: {}", ms(o.took));
        o.result?;
    }
    let mut uncontended = Vec::new();
    for i in 0..3 {
        let cid = format!("solo-{i}");
        let mark = cp.audit_mark();
        let o = call(p, "ADD", "node-solo", &cid);
        let r = requests(cp, mark, p.user);
        println!(
            "uncontended ADD {i} ({}): {} in {}; {} requests {r:?}",
            if i == 0 {
                "first on its node"
            } else {
                "node has a reservation"
            },
            match &o.result {
                Ok(a) => a.clone().unwrap_or_default(),
                Err(e) => format!("FAILED {e}"),
            },
            ms(o.took),
            total(&r)
        );
        o.result?;
        uncontended.push(total(&r));
    }
    for i in 0..3 {
        call(p, "DEL", "node-solo", &format!("solo-{i}")).result?;
    }

    let mark = cp.audit_mark();
    let (added, took) = concurrently(p, "ADD", nodes, per_node);
    let add_requests = requests(cp, mark, p.user);
    let ok: Vec<&Outcome> = added.iter().filter(|o| o.result.is_ok()).collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for o in &ok {
        if let Ok(Some(a)) = &o.result {
            *seen.entry(a.clone()).or_insert(0) += 1;
        }
    }
    let duplicates = seen.values().filter(|&&n| n > 1).map(|n| n - 1).sum();
    let times: Vec<Duration> = ok.iter().map(|o| o.took).collect();
    let spread = (!times.is_empty()).then(|| Spread::of(&times));
    let max = added.iter().map(|o| o.took).max().unwrap_or_default();
    let rate = ok.len() as f64 / took.as_secs_f64();
    println!(
        "ADD: {} of {} succeeded in {:.2} s = {rate:.1} allocations/s; latency of successful ADDs median {} p90 {}; slowest ADD {}",
        ok.len(),
        added.len(),
        took.as_secs_f64(),
        spread.map(|s| ms(s.median)).unwrap_or("-".into()),
        spread.map(|s| ms(s.p90)).unwrap_or("-".into()),
        ms(max)
    );
    println!(
        "ADD requests: {} = {:.2} per ADD: {add_requests:?}",
        total(&add_requests),
        total(&add_requests) as f64 / added.len() as f64
    );
    let failures = failure_counts(&added);
    for (e, n) in &failures {
        println!("ADD failed {n}x: {e}");
    }
    for (e, n) in &logged_counts(&added) {
        println!("ADD exited 0 but logged {n}x: [error] {e}");
    }

    let mark = cp.audit_mark();
    let (deleted, del_took) = concurrently(p, "DEL", nodes, per_node);
    let del_requests = requests(cp, mark, p.user);
    let del_failures = failure_counts(&deleted);
    println!(
        "DEL: {} in {:.2} s; {} requests = {:.2} per DEL: {del_requests:?}",
        deleted.len(),
        del_took.as_secs_f64(),
        total(&del_requests),
        total(&del_requests) as f64 / deleted.len() as f64
    );
    for (e, n) in &del_failures {
        println!("DEL failed {n}x: {e}");
    }
    let del_logged = logged_counts(&deleted);
    for (e, n) in &del_logged {
        println!("DEL exited 0 but logged {n}x: [error] {e}");
    }
    let (leftovers, leftover_detail) = (p.leftovers)(cp)?;
    println!("left in the API after DEL: {leftovers} ({leftover_detail})");
    Ok(Figures {
        adds: added.len(),
        ok: ok.len(),
        rate,
        spread,
        requests_per_add: total(&add_requests) as f64 / added.len() as f64,
        duplicates,
        failures,
        del_failures,
        del_logged: deleted.iter().filter(|o| !o.logged.is_empty()).count(),
        del_seconds: del_took.as_secs_f64(),
        requests_per_del: total(&del_requests) as f64 / deleted.len() as f64,
        leftovers,
        leftover_detail,
        uncontended,
    })
}

/// Reservations left in plumb-ipam's IPBlocks of the bench space.
fn plumb_leftovers(cp: &ControlPlane) -> Result<(usize, String), String> {
    let list = cp.request("GET", IPBLOCKS, None, Auth::Admin)?.body;
    let blocks: Vec<&Value> = list["items"]
        .as_array()
        .ok_or_else(|| format!("GET {IPBLOCKS}: {list}"))?
        .iter()
        .filter(|b| b["spec"]["space"] == PLUMB_SPACE)
        .collect();
    let held: usize = blocks
        .iter()
        .map(|b| b["spec"]["allocations"].as_object().map_or(0, |a| a.len()))
        .sum();
    Ok((held, format!("reservations in {} IPBlocks", blocks.len())))
}

/// Reservations left in whereabouts' IPPool of the bench range, and OverlappingRangeIPReservations.
fn wb_leftovers(cp: &ControlPlane) -> Result<(usize, String), String> {
    let pools = cp.request("GET", IPPOOLS, None, Auth::Admin)?.body;
    let in_pools: usize = pools["items"]
        .as_array()
        .ok_or_else(|| format!("GET {IPPOOLS}: {pools}"))?
        .iter()
        .filter(|p| p["spec"]["range"] == WB_RANGE)
        .map(|p| p["spec"]["allocations"].as_object().map_or(0, |a| a.len()))
        .sum();
    let over = cp.request("GET", OVERLAPPING, None, Auth::Admin)?.body;
    let overlapping = over["items"].as_array().map_or(0, |a| a.len());
    Ok((
        in_pools + overlapping,
        format!("{in_pools} IPPool allocations + {overlapping} OverlappingRangeIPReservations"),
    ))
}

/// Prints the side-by-side table and ratios; the targets (on plumb-ipam).
fn report(plugins: &[Plugin; 2], f: &[Figures], nodes: usize, per_node: usize) -> Vec<Target> {
    println!();
    println!("== side by side: {nodes} nodes x {per_node} concurrent ADDs then DELs, each plugin on its own /16");
    for (p, x) in plugins.iter().zip(f) {
        println!(
            "{:<12} allocations/s {:>8.1}  ADD median {:>11} p90 {:>11}  requests/ADD {:>6.2} (uncontended {:?})  requests/DEL {:>6.2}  ok {}/{}  duplicates {}  leftovers {} ({})  ADD failures {}  DEL failures {} (+{} exit 0 with an error logged)  DEL phase {:.1} s",
            p.label,
            x.rate,
            x.spread.map(|s| ms(s.median)).unwrap_or("-".into()),
            x.spread.map(|s| ms(s.p90)).unwrap_or("-".into()),
            x.requests_per_add,
            x.uncontended,
            x.requests_per_del,
            x.ok,
            x.adds,
            x.duplicates,
            x.leftovers,
            x.leftover_detail,
            x.failures.values().sum::<usize>(),
            x.del_failures.values().sum::<usize>(),
            x.del_logged,
            x.del_seconds,
        );
    }
    let (pl, wb) = (&f[0], &f[1]);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    let alloc_ratio = ratio(pl.rate, wb.rate);
    println!("ratio plumb/whereabouts allocations/s: {alloc_ratio:.1}");
    if let (Some(a), Some(b)) = (pl.spread, wb.spread) {
        println!(
            "ratio plumb/whereabouts ADD median latency: {:.3}",
            ratio(a.median.as_secs_f64(), b.median.as_secs_f64())
        );
        println!(
            "ratio plumb/whereabouts ADD p90 latency: {:.3}",
            ratio(a.p90.as_secs_f64(), b.p90.as_secs_f64())
        );
    }
    println!(
        "ratio plumb/whereabouts requests per ADD: {:.3}",
        ratio(pl.requests_per_add, wb.requests_per_add)
    );
    println!(
        "whereabouts (information, no target): duplicates {}, leftovers {}, failed ADDs {}, DELs that exited 0 with an error logged {}",
        wb.duplicates,
        wb.leftovers,
        wb.adds - wb.ok,
        wb.del_logged
    );
    let worst_uncontended = pl.uncontended.iter().copied().max().unwrap_or(usize::MAX);
    vec![
        Target::at_least("plumb/whereabouts allocations/s", 20.0, alloc_ratio, 1),
        Target::at_most(
            "plumb requests per uncontended ADD (worst of 3)",
            2.0,
            worst_uncontended as f64,
            0,
        ),
        Target::at_most("plumb failed ADDs", 0.0, (pl.adds - pl.ok) as f64, 0),
        Target::at_most("plumb duplicates", 0.0, pl.duplicates as f64, 0),
        Target::at_most("plumb leftovers after DEL", 0.0, pl.leftovers as f64, 0),
    ]
}
