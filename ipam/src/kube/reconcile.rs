//! `plumb-ipam reconcile`: the cluster-wide clean-up of the Kubernetes store, run by a CronJob (one
//! pass) or a Deployment (`--interval`). One pass lists the IPBlocks, then the Pods (metadata only, all
//! namespaces), then the Nodes, plans without I/O ([`plan`]) and writes each changed block with the
//! listed resourceVersion (replace) or deletes it with uid and resourceVersion preconditions; a
//! conflict (or a block gone meanwhile) means list again and plan again.
//!
//! What a pass frees and what it never touches:
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

use super::blocks::{addr_at, space_hash, subnet};
use super::crd::{Allocation, IPBlock, SPACE_LABEL};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::Client;
use std::collections::HashSet;
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

/// What one pass saw of the cluster.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The blocks (of `--space` only, when given).
    pub blocks: Vec<IPBlock>,
    /// UIDs of every existing pod.
    pub pod_uids: HashSet<String>,
    /// (namespace, name) of every existing pod.
    pub pod_names: HashSet<(String, String)>,
    /// Names of every existing node.
    pub nodes: HashSet<String>,
}

/// One object write.
#[derive(Debug, Clone)]
pub enum Change {
    /// Replace the block (carries the listed resourceVersion).
    Replace(IPBlock),
    /// Delete the block, preconditioned on its listed uid and resourceVersion.
    Delete(IPBlock),
}

impl Change {
    /// The block written.
    pub fn block(&self) -> &IPBlock {
        match self {
            Change::Replace(b) | Change::Delete(b) => b,
        }
    }
}

/// One write and the lines it prints once done.
#[derive(Debug, Clone)]
pub struct Step {
    /// The write.
    pub change: Change,
    /// One line per freed reservation, then one if the block is deleted or orphaned.
    pub lines: Vec<String>,
    /// Reservations freed.
    pub freed: usize,
    /// Whether the write orphans the block (its node is gone).
    pub orphans: bool,
}

/// What a pass will do, and what it keeps.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The writes, one per block.
    pub steps: Vec<Step>,
    /// Reservations kept because their pod exists.
    pub kept_live: usize,
    /// Reservations kept because they are younger than the grace period.
    pub kept_young: usize,
    /// Reservations kept because they name no pod.
    pub kept_unowned: usize,
    /// Things worth telling the operator.
    pub warnings: Vec<String>,
}

/// Why a reservation is kept or freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its pod exists.
    Live,
    /// Younger than the grace period.
    Young,
    /// It names no pod.
    Unowned,
    /// Its pod is gone: free it.
    Gone,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Judges one reservation against the snapshot at time `now` (Unix seconds).
pub fn verdict(a: &Allocation, snap: &Snapshot, now: u64, grace_secs: u64) -> Verdict {
    let exists = match (
        non_empty(&a.pod_uid),
        non_empty(&a.pod_namespace),
        non_empty(&a.pod_name),
    ) {
        (Some(uid), _, _) => snap.pod_uids.contains(uid),
        (None, Some(ns), Some(name)) => {
            snap.pod_names.contains(&(ns.to_string(), name.to_string()))
        }
        _ => return Verdict::Unowned,
    };
    if exists {
        Verdict::Live
    } else if a.created.saturating_add(grace_secs) > now {
        Verdict::Young
    } else {
        Verdict::Gone
    }
}

/// Counts and labels (holders, attachments) from the spec, as the nodes write them.
fn recount(b: &mut IPBlock) {
    super::blocks::recount(b);
}

fn name_of(b: &IPBlock) -> &str {
    b.metadata.name.as_deref().unwrap_or("?")
}

/// The address at a block offset, as text (the offset itself when the block or key is malformed).
fn address(b: &IPBlock, offset: &str) -> String {
    match (subnet(b), offset.parse::<u128>()) {
        (Some(net), Ok(o)) => addr_at(&net, o).to_string(),
        _ => format!("offset {offset} of {}", b.spec.cidr),
    }
}

/// The line printed for a freed reservation.
pub fn freed_line(ip: &str, a: &Allocation, space: &str) -> String {
    use crate::admin::shown;
    let pod = match (non_empty(&a.pod_namespace), non_empty(&a.pod_name)) {
        (Some(ns), Some(n)) => format!("{}/{}", shown(ns), shown(n)),
        _ => "-".to_string(),
    };
    let uid = shown(non_empty(&a.pod_uid).unwrap_or("-"));
    let cid: String = a.container_id.chars().take(12).collect();
    format!(
        "freed {} (pod {pod} uid {uid}, node {}, container {}, interface {}, space {})",
        shown(ip),
        shown(&a.node),
        shown(&cid),
        shown(&a.ifname),
        shown(space)
    )
}

/// Plans a pass on a snapshot, without I/O.
pub fn plan(snap: &Snapshot, now: u64, grace_secs: u64) -> Plan {
    let mut p = Plan::default();
    // An empty node list is not believable while blocks have owners (reconcile itself runs on a
    // node): never orphan on it.
    let judge_nodes = !snap.nodes.is_empty();
    if !judge_nodes && snap.blocks.iter().any(|b| !b.spec.node.is_empty()) {
        p.warnings.push(
            "the API listed no Nodes: no block is treated as belonging to a deleted node".into(),
        );
    }
    for b in &snap.blocks {
        let mut nb = b.clone();
        let mut lines = Vec::new();
        let mut freed = 0;
        for (offset, a) in &b.spec.allocations {
            match verdict(a, snap, now, grace_secs) {
                Verdict::Live => p.kept_live += 1,
                Verdict::Young => p.kept_young += 1,
                Verdict::Unowned => p.kept_unowned += 1,
                Verdict::Gone => {
                    nb.spec.allocations.remove(offset);
                    lines.push(freed_line(&address(b, offset), a, &b.spec.space));
                    freed += 1;
                }
            }
        }
        let owner = b.spec.node.as_str();
        let node_gone = !owner.is_empty() && judge_nodes && !snap.nodes.contains(owner);
        let what = format!(
            "block {} ({}, space {})",
            crate::admin::shown(name_of(b)),
            crate::admin::shown(&b.spec.cidr),
            crate::admin::shown(&b.spec.space)
        );
        let owner_shown = crate::admin::shown(owner);
        let empty = nb.spec.allocations.is_empty();
        let change = if (node_gone || owner.is_empty()) && empty {
            lines.push(if owner.is_empty() {
                format!("deleted {what}: orphaned and empty")
            } else {
                format!("deleted {what}: node {owner_shown} is gone and the block is empty")
            });
            Change::Delete(b.clone())
        } else if node_gone {
            nb.spec.node = String::new();
            recount(&mut nb);
            let kept = nb.spec.allocations.len();
            lines.push(format!(
                "orphaned {what}: node {owner_shown} is gone; {kept} reservation{} of existing pods kept, any node may adopt it",
                if kept == 1 { "" } else { "s" }
            ));
            Change::Replace(nb)
        } else if freed > 0 {
            recount(&mut nb);
            Change::Replace(nb)
        } else {
            continue;
        };
        p.steps.push(Step {
            change,
            lines,
            freed,
            orphans: node_gone && !empty,
        });
    }
    p
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Reservations freed.
    pub freed: usize,
    /// Blocks deleted.
    pub deleted: usize,
    /// Blocks orphaned.
    pub orphaned: usize,
    /// Reservations kept: pod exists.
    pub kept_live: usize,
    /// Reservations kept: within the grace period.
    pub kept_young: usize,
    /// Reservations kept: no pod reference.
    pub kept_unowned: usize,
    /// Objects listed by the last listing.
    pub blocks: usize,
    /// Pods listed.
    pub pods: usize,
    /// Nodes listed.
    pub nodes: usize,
}

impl Totals {
    fn count(&mut self, s: &Step) {
        self.freed += s.freed;
        match &s.change {
            Change::Delete(_) => self.deleted += 1,
            Change::Replace(_) if s.orphans => self.orphaned += 1,
            Change::Replace(_) => {}
        }
    }

    /// The summary line.
    pub fn summary(&self, grace_secs: u64, dry_run: bool) -> String {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "summary: freed {}, deleted {}, orphaned {}; kept {} ({} with a live pod, {} younger than the {grace_secs}s grace period, {} without a pod reference); listed {}, {}, {}{}",
            plural(self.freed, "reservation", "reservations"),
            plural(self.deleted, "block", "blocks"),
            plural(self.orphaned, "block", "blocks"),
            self.kept_live + self.kept_young + self.kept_unowned,
            self.kept_live,
            self.kept_young,
            self.kept_unowned,
            plural(self.blocks, "block", "blocks"),
            plural(self.pods, "pod", "pods"),
            plural(self.nodes, "node", "nodes"),
            if dry_run { " (dry run: nothing was written)" } else { "" },
        )
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
        let mut config = super::cli_config(kubeconfig).await?;
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
            let p = plan(&snap, crate::store::now_secs(), grace_secs);
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
    use crate::kube::blocks::{block_of, new_block};

    fn alloc(uid: Option<&str>, ns_name: Option<(&str, &str)>, created: u64) -> Allocation {
        Allocation {
            container_id: "0123456789abcdef".into(),
            ifname: "eth0".into(),
            network: "net".into(),
            node: "n1".into(),
            pod_namespace: ns_name.map(|(ns, _)| ns.to_string()),
            pod_name: ns_name.map(|(_, n)| n.to_string()),
            pod_uid: uid.map(str::to_string),
            created,
        }
    }

    fn block(ip: &str, node: &str, allocs: Vec<(u32, Allocation)>) -> IPBlock {
        let mut b = new_block("_default", &block_of(ip.parse().unwrap()), node);
        for (o, a) in allocs {
            b.spec.allocations.insert(o.to_string(), a);
        }
        recount(&mut b);
        b
    }

    fn snap(blocks: Vec<IPBlock>, pods: &[(&str, &str, &str)], nodes: &[&str]) -> Snapshot {
        Snapshot {
            blocks,
            pod_uids: pods.iter().map(|(u, _, _)| u.to_string()).collect(),
            pod_names: pods
                .iter()
                .map(|(_, ns, n)| (ns.to_string(), n.to_string()))
                .collect(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn verdicts_by_uid_name_and_age() {
        let s = snap(vec![], &[("u-new", "ns", "web-0")], &["n1"]);
        let now = 1_000;
        // Same name, old UID: gone (the StatefulSet case); new UID: live.
        assert_eq!(
            verdict(
                &alloc(Some("u-old"), Some(("ns", "web-0")), 0),
                &s,
                now,
                300
            ),
            Verdict::Gone
        );
        assert_eq!(
            verdict(
                &alloc(Some("u-new"), Some(("ns", "web-0")), 0),
                &s,
                now,
                300
            ),
            Verdict::Live
        );
        // No UID: by name.
        assert_eq!(
            verdict(&alloc(None, Some(("ns", "web-0")), 0), &s, now, 300),
            Verdict::Live
        );
        assert_eq!(
            verdict(&alloc(Some(""), Some(("ns", "web-1")), 0), &s, now, 300),
            Verdict::Gone
        );
        // Young, and the grace boundary.
        assert_eq!(
            verdict(&alloc(Some("x"), None, 800), &s, now, 300),
            Verdict::Young
        );
        assert_eq!(
            verdict(&alloc(Some("x"), None, 700), &s, now, 300),
            Verdict::Gone
        );
        assert_eq!(
            verdict(&alloc(Some("x"), None, now), &s, now, 0),
            Verdict::Gone
        );
        // Clock skew: a reservation from the future is young.
        assert_eq!(
            verdict(&alloc(Some("x"), None, now + 50), &s, now, 0),
            Verdict::Young
        );
        assert_eq!(verdict(&alloc(None, None, 0), &s, now, 0), Verdict::Unowned);
    }

    #[test]
    fn plans_frees_deletions_and_orphans() {
        let live = ("u1", "ns", "a");
        let blocks = vec![
            // n1 exists: frees the gone pod only.
            block(
                "10.1.0.0",
                "n1",
                vec![
                    (1, alloc(Some("u1"), Some(("ns", "a")), 0)),
                    (2, alloc(Some("gone"), Some(("ns", "b")), 0)),
                ],
            ),
            // n2 is gone, block empties: deleted.
            block(
                "10.1.0.64",
                "n2",
                vec![(5, alloc(Some("gone2"), Some(("ns", "c")), 0))],
            ),
            // n3 is gone, a live pod borrowed: orphaned.
            block(
                "10.1.0.128",
                "n3",
                vec![(7, alloc(Some("u1"), Some(("ns", "a")), 0))],
            ),
            // Already orphaned and empty: deleted.
            block("10.1.0.192", "", vec![]),
            // n1's empty block: untouched.
            block("10.1.1.0", "n1", vec![]),
        ];
        let p = plan(&snap(blocks, &[live], &["n1"]), 10, 0);
        assert_eq!(p.steps.len(), 4);
        let Change::Replace(b0) = &p.steps[0].change else {
            panic!()
        };
        assert_eq!(b0.spec.allocations.keys().collect::<Vec<_>>(), ["1"]);
        assert_eq!((b0.spec.used, b0.spec.free), (1, 63));
        assert_eq!(p.steps[0].lines, ["freed 10.1.0.2 (pod ns/b uid gone, node n1, container 0123456789ab, interface eth0, space _default)"]);
        assert!(matches!(p.steps[1].change, Change::Delete(_)));
        assert!(
            p.steps[1].lines[1].starts_with("deleted block default-"),
            "{:?}",
            p.steps[1].lines
        );
        let Change::Replace(b2) = &p.steps[2].change else {
            panic!()
        };
        assert_eq!(b2.spec.node, "");
        assert_eq!(b2.spec.allocations.len(), 1);
        assert!(p.steps[2].lines[0].starts_with("orphaned "));
        assert!(matches!(p.steps[3].change, Change::Delete(_)));
        assert_eq!(p.kept_live, 2);
        let mut t = Totals::default();
        for s in &p.steps {
            t.count(s);
        }
        assert_eq!((t.freed, t.deleted, t.orphaned), (2, 2, 1));
    }

    #[test]
    fn no_nodes_listed_orphans_nothing() {
        let b = block("10.1.0.0", "n1", vec![]);
        let p = plan(&snap(vec![b], &[], &[]), 10, 0);
        assert!(p.steps.is_empty());
        assert_eq!(p.warnings.len(), 1);
    }

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
