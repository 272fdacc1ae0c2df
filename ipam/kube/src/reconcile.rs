//! `plumb-ipam reconcile`: the cluster-wide clean-up of the Kubernetes store, run by a CronJob (one
//! pass) or a Deployment (`--interval`). This module is the cluster I/O: one pass lists the IPBlocks,
//! then the Pods (metadata only, all namespaces), then the Nodes, has [`crate::plan`] decide without
//! I/O, and writes each changed block with the listed resourceVersion (replace) or deletes it with uid
//! and resourceVersion preconditions; a conflict (or a block gone meanwhile) means list again and plan
//! again.
//!
//! What a pass frees and what it never touches (decided in [`crate::plan`]):
//! * a reservation whose pod no longer exists is freed. Pods are matched by UID when the reservation
//!   has one, so a StatefulSet pod re-created under the same name (with a new UID) does not keep its
//!   predecessor's address; reservations without a UID are matched by namespace/name;
//! * a reservation whose pod exists is kept whatever the pod's phase (Pending included, and pods
//!   being deleted: their CNI DEL is still to come);
//! * a reservation younger than the grace period is kept: its pod may not be visible yet;
//! * a reservation with no pod reference at all (made outside Kubernetes) is kept: the node's CNI GC
//!   owns those;
//! * a block whose node is gone keeps the reservations of existing pods (pods on other nodes may have
//!   borrowed from it): once empty it is deleted, otherwise it is orphaned (`spec.node = ""`) so any
//!   node may adopt it. Empty orphaned blocks are deleted too.
//!
//! Blocks are listed before pods and nodes: a reservation in the listed blocks was made for a pod that
//! already existed in the API, so the later pod list shows it unless it is really gone.

use crate::blocks::space_hash;
use crate::crd::{IPBlock, SPACE_LABEL};
use crate::plan::{name_of, plan, Change, Snapshot, Totals};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::Client;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

/// Default `--grace`: reservations younger than this are never freed.
pub const DEFAULT_GRACE_SECS: u64 = 300;
/// Page size of the lists (a small cluster needs one request per resource).
const PAGE: u32 = 500;
/// How many times one pass lists again after a conflicting or failed write before giving up.
const MAX_REPLANS: u32 = 10;
/// How many times a list is tried when the API is unreachable or overloaded.
const MAX_TRIES: u32 = 4;

/// The usage of `plumb-ipam reconcile`.
pub const USAGE: &str = "usage: plumb-ipam reconcile [--kubeconfig PATH] [--dry-run] [--grace SECONDS] [--interval SECONDS] [--space NAME]
  Frees reservations whose pod is gone (matched by UID, else by namespace/name) and older than
  --grace (default 300), deletes empty blocks of deleted nodes and orphans the others.
  --dry-run prints what it would do and writes nothing; --interval repeats forever (else one pass);
  --space limits the pass to one space (network_name). Without --kubeconfig: $KUBECONFIG,
  ~/.kube/config, then the in-cluster service account.";

/// Command-line options of `plumb-ipam reconcile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--kubeconfig`; `None` infers ($KUBECONFIG, ~/.kube/config, in-cluster).
    pub kubeconfig: Option<String>,
    /// `--dry-run`: print, do not write.
    pub dry_run: bool,
    /// `--grace` in seconds.
    pub grace_secs: u64,
    /// `--interval` in seconds: loop forever; `None`: one pass.
    pub interval_secs: Option<u64>,
    /// `--space`: only this space's blocks.
    pub space: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kubeconfig: None,
            dry_run: false,
            grace_secs: DEFAULT_GRACE_SECS,
            interval_secs: None,
            space: None,
        }
    }
}

impl Options {
    /// Parses the arguments after `reconcile`.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            let seconds = |v: String| {
                v.parse::<u64>()
                    .map_err(|_| format!("{flag} takes a whole number of seconds, not {v:?}"))
            };
            match flag.as_str() {
                "--kubeconfig" => o.kubeconfig = Some(value()?).filter(|p| !p.is_empty()),
                "--dry-run" => o.dry_run = true,
                "--grace" => o.grace_secs = seconds(value()?)?,
                "--interval" => match seconds(value()?)? {
                    0 => return Err("--interval must be at least 1 second".into()),
                    n => o.interval_secs = Some(n),
                },
                "--space" | "--network-name" => o.space = Some(value()?),
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        Ok(o)
    }
}

/// How a failed request is handled.
#[derive(Debug)]
enum Failure {
    /// The listed state is stale (409, 404 on a write) or the outcome of a write is unknown: list again.
    Replan(String),
    /// Worth another try of the same request (unreachable, 429, 5xx).
    Transient(String),
    /// Give up with this message.
    Fatal(String),
}

/// An error and its causes, e.g. "client error (Connect): tcp connect error: Connection refused".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text = format!("{text}: {next}");
        }
        cause = c.source();
    }
    text
}

fn classify(e: kube::Error, what: &str, write: bool) -> Failure {
    let text = match &e {
        kube::Error::Api(s) => format!("{what}: {} ({} {})", s.message, s.code, s.reason),
        other => format!("{what}: {}", chain(other)),
    };
    match &e {
        kube::Error::Api(s) if write && matches!(s.code, 404 | 409) => Failure::Replan(text),
        kube::Error::Api(s) if s.code == 404 => Failure::Fatal(format!(
            "{text} (is the IPBlock CRD installed? kubectl apply -f deploy/crds/ipblocks.plumb.dev.yaml)"
        )),
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => Failure::Fatal(format!(
            "{text} (the API refused these credentials: reconcile needs the plumb-reconcile ClusterRole of deploy/rbac.yaml)"
        )),
        kube::Error::Api(s) if s.code == 429 || s.code >= 500 => {
            if write {
                Failure::Replan(text)
            } else {
                Failure::Transient(text)
            }
        }
        kube::Error::Api(_) => Failure::Fatal(text),
        // Transport: refused, reset, timed out. A write may or may not have happened: list again.
        _ if write => Failure::Replan(text),
        _ => Failure::Transient(text),
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.min(5))
}

/// Runs one read request, retrying what is transient.
async fn reading<T, F, Fut>(what: &str, url: &str, mut request: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = kube::Result<T>>,
{
    let mut attempt = 0;
    loop {
        match request().await.map_err(|e| classify(e, what, false)) {
            Ok(v) => return Ok(v),
            Err(Failure::Transient(_)) if attempt + 1 < MAX_TRIES => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(Failure::Transient(e)) => {
                return Err(format!(
                    "the Kubernetes API at {url} is unreachable or failing after {MAX_TRIES} tries: {e}"
                ))
            }
            Err(Failure::Fatal(e) | Failure::Replan(e)) => return Err(e),
        }
    }
}

/// A connection to the cluster.
pub struct Cluster {
    blocks: Api<IPBlock>,
    pods: Api<Pod>,
    nodes: Api<Node>,
    url: String,
    space: Option<String>,
}

impl Cluster {
    /// Connects with a kubeconfig file, or infers ($KUBECONFIG, ~/.kube/config, in-cluster).
    pub async fn connect(kubeconfig: Option<&str>, space: Option<&str>) -> Result<Cluster, String> {
        let mut config = crate::client::cli_config(kubeconfig).await?;
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(60));
        config.write_timeout = Some(Duration::from_secs(60));
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config)
            .map_err(|e| format!("cannot build the Kubernetes client for {url}: {e}"))?;
        Ok(Cluster {
            blocks: Api::all(client.clone()),
            pods: Api::all(client.clone()),
            nodes: Api::all(client),
            url,
            space: space.map(str::to_string),
        })
    }

    /// Lists the blocks (of the space, when one was given), every page.
    pub async fn list_blocks(&self) -> Result<Vec<IPBlock>, String> {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(s) = &self.space {
            lp = lp.labels(&format!("{SPACE_LABEL}={}", space_hash(s)));
        }
        let mut out = Vec::new();
        loop {
            let page = reading("cannot list IPBlocks", &self.url, || self.blocks.list(&lp)).await?;
            out.extend(
                page.items
                    .into_iter()
                    .filter(|b| self.space.as_ref().is_none_or(|s| &b.spec.space == s)),
            );
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => return Ok(out),
            }
        }
    }

    /// Lists blocks, then pods, then nodes.
    pub async fn snapshot(&self) -> Result<Snapshot, String> {
        let blocks = self.list_blocks().await?;
        let mut snap = Snapshot {
            blocks,
            ..Snapshot::default()
        };
        let mut lp = ListParams::default().limit(PAGE);
        loop {
            let page = reading("cannot list Pods", &self.url, || {
                self.pods.list_metadata(&lp)
            })
            .await?;
            for p in page.items {
                let m = p.metadata;
                if let Some(uid) = m.uid.filter(|u| !u.is_empty()) {
                    snap.pod_uids.insert(uid);
                }
                if let (Some(ns), Some(name)) = (m.namespace, m.name) {
                    snap.pod_names.insert((ns, name));
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => break,
            }
        }
        let mut lp = ListParams::default().limit(PAGE);
        loop {
            let page = reading("cannot list Nodes", &self.url, || {
                self.nodes.list_metadata(&lp)
            })
            .await?;
            snap.nodes
                .extend(page.items.into_iter().filter_map(|n| n.metadata.name));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => break,
            }
        }
        Ok(snap)
    }

    async fn apply(&self, change: &Change) -> Result<(), Failure> {
        let b = change.block();
        let name = name_of(b);
        match change {
            Change::Replace(b) => self
                .blocks
                .replace(name, &PostParams::default(), b)
                .await
                .map(|_| ())
                .map_err(|e| classify(e, &format!("cannot update IPBlock {name}"), true)),
            Change::Delete(b) => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: b.metadata.uid.clone(),
                        resource_version: b.metadata.resource_version.clone(),
                    }),
                    ..DeleteParams::default()
                };
                self.blocks
                    .delete(name, &dp)
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(e, &format!("cannot delete IPBlock {name}"), true))
            }
        }
    }

    /// One pass: list, plan, write (or only print with `dry_run`); lines go to `out` as writes
    /// succeed, then the summary line.
    pub async fn pass(
        &self,
        grace_secs: u64,
        dry_run: bool,
        out: &mut dyn Write,
    ) -> Result<Totals, String> {
        let mut totals = Totals::default();
        let mut replans = 0;
        'again: loop {
            let snap = self.snapshot().await?;
            let p = plan(&snap, plumb_ipam::store::now_secs(), grace_secs);
            for w in &p.warnings {
                eprintln!("plumb-ipam reconcile: warning: {w}");
            }
            for step in &p.steps {
                if !dry_run {
                    match self.apply(&step.change).await {
                        Ok(()) => {}
                        Err(Failure::Replan(e) | Failure::Transient(e)) => {
                            replans += 1;
                            if replans > MAX_REPLANS {
                                return Err(format!(
                                    "gave up after {MAX_REPLANS} conflicting or failed writes; last: {e}"
                                ));
                            }
                            eprintln!("plumb-ipam reconcile: {e}; listing again");
                            tokio::time::sleep(backoff(replans.min(4))).await;
                            continue 'again;
                        }
                        Err(Failure::Fatal(e)) => return Err(e),
                    }
                }
                for l in &step.lines {
                    let _ = writeln!(out, "{l}");
                }
                totals.count(step);
            }
            totals.kept_live = p.kept_live;
            totals.kept_young = p.kept_young;
            totals.kept_unowned = p.kept_unowned;
            totals.blocks = snap.blocks.len();
            totals.pods = snap.pod_uids.len().max(snap.pod_names.len());
            totals.nodes = snap.nodes.len();
            let _ = writeln!(out, "{}", totals.summary(grace_secs, dry_run));
            let _ = out.flush();
            return Ok(totals);
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Kubernetes client runtime: {e}"))
}

/// Lists the blocks of the store (of one space, when given): for `plumb-ipam list/usage --kubeconfig`.
pub fn list_blocks(kubeconfig: Option<&str>, space: Option<&str>) -> Result<Vec<IPBlock>, String> {
    runtime()?.block_on(async {
        Cluster::connect(kubeconfig, space)
            .await?
            .list_blocks()
            .await
    })
}

/// `plumb-ipam reconcile ARGS`: returns the exit code (0 done, 1 failed, 2 bad usage).
pub fn command(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return 0;
    }
    let opts = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("plumb-ipam reconcile: {e}\n{USAGE}");
            return 2;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plumb-ipam reconcile: {e}");
            return 1;
        }
    };
    rt.block_on(async {
        let cluster =
            match Cluster::connect(opts.kubeconfig.as_deref(), opts.space.as_deref()).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("plumb-ipam reconcile: {e}");
                    return 1;
                }
            };
        loop {
            let mut out = std::io::stdout();
            let result = cluster.pass(opts.grace_secs, opts.dry_run, &mut out).await;
            match (result, opts.interval_secs) {
                (Ok(_), None) => return 0,
                (Err(e), None) => {
                    eprintln!("plumb-ipam reconcile: {e}");
                    return 1;
                }
                // A Deployment keeps going: the next pass may succeed.
                (Err(e), Some(_)) => eprintln!("plumb-ipam reconcile: pass failed: {e}"),
                (Ok(_), Some(_)) => {}
            }
            tokio::time::sleep(Duration::from_secs(opts.interval_secs.unwrap_or(1))).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let a = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let o = Options::parse(&a(
            "--kubeconfig /k --dry-run --grace 0 --interval 60 --space s",
        ))
        .unwrap();
        assert_eq!(
            o,
            Options {
                kubeconfig: Some("/k".into()),
                dry_run: true,
                grace_secs: 0,
                interval_secs: Some(60),
                space: Some("s".into()),
            }
        );
        assert_eq!(Options::parse(&[]).unwrap().grace_secs, 300);
        assert!(Options::parse(&a("--interval 0")).is_err());
        assert!(Options::parse(&a("--grace")).is_err());
        assert!(Options::parse(&a("--grace x")).is_err());
        assert!(Options::parse(&a("--bogus")).is_err());
    }
}
