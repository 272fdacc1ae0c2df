//! whereabouts on a reduced form of the `kube-scale-real` workload, for information (no target): the
//! same real kube-apiserver, whereabouts (`scripts/whereabouts`) as whole processes with a token of
//! its own service account (its CRDs and RBAC applied as they are), through its own loopback
//! forwarder, counted as plumb-ipam is (audit-log events of its service account inside each call,
//! bytes relayed server->plugin).
//!
//! whereabouts keeps every reservation of a range in one IPPool object, so its cost depends on how
//! many reservations that object holds, not on nodes. The bench puts the IPPool of a /12 at
//! [`LEVELS`] reservations (written through the API as the admin, as whereabouts itself writes them:
//! offset -> containerID, podref, ifname) and measures [`SAMPLES`] uncontended ADDs, each followed by
//! its DEL, at each level. It stops at the first level the API will not store (etcd's request size
//! limit), and reports the level at which whereabouts' own ADD fails.

use super::kube_real::{apply_file, error_text, script_dir, wait_served, WB_USER};
use super::kube_scale::Counted;
use super::kube_scale_real::{counted, mark};
use super::{ms, Spread};
use conformance::control_plane::{Auth, ControlPlane};
use conformance::plugin::Call;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// whereabouts' range (one IPPool: `scale-wb-10.112.0.0-12` in kube-system).
const RANGE: &str = "10.112.0.0/12";
/// Its `network_name`.
const NETWORK: &str = "scale-wb";
/// Its IPPool's name.
const POOL: &str = "scale-wb-10.112.0.0-12";
/// whereabouts' IPPools in kube-system (its kubeconfig's namespace).
const IPPOOLS: &str = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/kube-system/ippools";
/// Reservations in the IPPool before each level's samples.
pub(super) const LEVELS: [usize; 6] = [0, 1_000, 5_000, 10_000, 12_500, 15_000];
/// Uncontended ADD+DEL per level.
pub(super) const SAMPLES: usize = 5;

/// One measured ADD or DEL.
struct One {
    counted: Counted,
    took: Duration,
    error: Option<String>,
}

/// Runs the measurement on `cp`; prints one line per level. Errors only when it cannot run at all.
pub(super) fn run(cp: &ControlPlane) -> Result<(), String> {
    println!();
    println!("== whereabouts on the same real kube-apiserver (information, no target): one IPPool for {RANGE}, {SAMPLES} uncontended ADD+DEL per fill level");
    let wb_dir = script_dir("scripts/whereabouts")?;
    let binary = wb_dir.join("whereabouts");
    let mut files: Vec<PathBuf> = std::fs::read_dir(wb_dir.join("crds"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for f in files {
        crds.extend(apply_file(cp, &f)?);
    }
    for name in crds {
        wait_served(cp, &name)?;
    }
    let dir = cp.scratch("scale-wb");
    let (forward, kc) = super::kube_scale_real::forwarded_kubeconfig(cp, &dir, "whereabouts")?;
    let flat = dir.join("whereabouts.conf");
    std::fs::write(
        &flat,
        json!({"datastore": "kubernetes", "kubernetes": {"kubeconfig": kc}}).to_string(),
    )
    .map_err(|e| e.to_string())?;
    let conf = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "whereabouts", "ipam": {
        "type": "whereabouts", "range": RANGE, "network_name": NETWORK,
        "configuration_path": flat, "kubernetes": {"kubeconfig": kc}}});

    // A first ADD+DEL, unmeasured: the server's first-use costs fall on no sample.
    for command in ["ADD", "DEL"] {
        let o = call(&binary, &conf, command, "wb-warm");
        if o.exit != 0 {
            return Err(format!("whereabouts warm-up {command}: {}", error_text(&o)));
        }
    }
    for level in LEVELS {
        let started = Instant::now();
        let size = match fill(cp, level) {
            Ok(size) => size,
            Err(e) => {
                println!(
                    "{level:>6} reservations in the IPPool: the API refused to store the object ({e}); whereabouts cannot hold this many reservations in one range: stopped here"
                );
                break;
            }
        };
        let fill_s = started.elapsed().as_secs_f64();
        let mut adds = Vec::new();
        let mut dels = Vec::new();
        for i in 0..SAMPLES {
            let cid = format!("wb-{level}-{i}");
            for (command, out) in [("ADD", &mut adds), ("DEL", &mut dels)] {
                let before = mark(cp, &forward);
                let t = Instant::now();
                let o = call(&binary, &conf, command, &cid);
                let took = t.elapsed();
                let after = mark(cp, &forward);
                let c = counted(cp, WB_USER, &[(before, after)])?[0];
                let logged = o.stderr.lines().find(|l| l.contains("[error]"));
                let error = match (o.exit, logged) {
                    (0, None) => None,
                    (0, Some(l)) => Some(format!("exit 0, logged {}", l.trim())),
                    _ => Some(error_text(&o)),
                };
                out.push(One {
                    counted: c,
                    took,
                    error,
                });
            }
        }
        println!(
            "{level:>6} reservations in the IPPool ({:.0} KB of JSON, written in {fill_s:.1} s): ADD {}; DEL {}",
            size as f64 / 1024.0,
            line(&adds),
            line(&dels)
        );
        for o in adds.iter().chain(&dels) {
            if let Some(e) = &o.error {
                println!("       failed: {}", e.chars().take(300).collect::<String>());
            }
        }
    }
    Ok(())
}

fn line(v: &[One]) -> String {
    let ok: Vec<&One> = v.iter().filter(|o| o.error.is_none()).collect();
    if ok.is_empty() {
        return format!("all {} failed", v.len());
    }
    let n = ok.len() as f64;
    let s = Spread::of(&ok.iter().map(|o| o.took).collect::<Vec<_>>());
    format!(
        "requests {:.1} (max {}), response bytes mean {:.0}, call time median {} p90 {}{}",
        ok.iter().map(|o| o.counted.requests).sum::<u64>() as f64 / n,
        ok.iter().map(|o| o.counted.requests).max().unwrap_or(0),
        ok.iter().map(|o| o.counted.bytes).sum::<u64>() as f64 / n,
        ms(s.median),
        ms(s.p90),
        if ok.len() < v.len() {
            format!(", {} of {} failed", v.len() - ok.len(), v.len())
        } else {
            String::new()
        }
    )
}

/// One whereabouts process for pod `cid` (CNI_ARGS as a runtime passes them).
fn call(
    binary: &std::path::Path,
    conf: &Value,
    command: &str,
    cid: &str,
) -> conformance::plugin::Outcome {
    Call::new(command, cid, "/run/netns/none", "eth0", conf)
        .env("NODENAME", "node-0000.scale.example.com")
        .env(
            "CNI_ARGS",
            &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=scale;K8S_POD_NAME={cid};K8S_POD_INFRA_CONTAINER_ID={cid}"),
        )
        .run(binary)
}

/// Writes the IPPool with `n` reservations (offsets 1..=n, 64-hex-digit container IDs as runtimes
/// make them); the size of its JSON.
fn fill(cp: &ControlPlane, n: usize) -> Result<usize, String> {
    let mut allocations = Map::new();
    for i in 1..=n {
        allocations.insert(
            i.to_string(),
            json!({"id": format!("{:064x}", 0xf111_0000_0000u64 + i as u64),
                   "podref": format!("fill/fill-{i}"), "ifname": "eth0"}),
        );
    }
    let mut pool = json!({"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
        "metadata": {"name": POOL, "namespace": "kube-system"},
        "spec": {"range": RANGE, "allocations": allocations}});
    let size = pool.to_string().len();
    let path = format!("{IPPOOLS}/{POOL}");
    let cur = cp.request("GET", &path, None, Auth::Admin)?;
    let a = if cur.status == 200 {
        pool["metadata"]["resourceVersion"] = cur.body["metadata"]["resourceVersion"].clone();
        cp.request("PUT", &path, Some(&pool), Auth::Admin)?
    } else {
        cp.request("POST", IPPOOLS, Some(&pool), Auth::Admin)?
    };
    match a.status {
        200 | 201 => Ok(size),
        code => Err(format!(
            "{code} {}",
            a.body["message"].as_str().unwrap_or(&a.body.to_string())
        )),
    }
}
