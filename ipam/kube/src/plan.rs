//! The planning half of `plumb-ipam reconcile`, without I/O: given the blocks, pods and nodes one pass
//! listed ([`Snapshot`]), which reservations to free, which blocks to delete and which to orphan (so
//! any node may adopt them), with the lines to print and the counts of what is kept. The cluster I/O
//! (listing, writing, retrying) is the `reconcile` module, which calls [`plan`].

use crate::blocks::{addr_at, subnet};
use crate::crd::{Allocation, IPBlock};
use plumb_ipam::admin::shown;
use std::collections::HashSet;

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

/// A block's name as listed (`?` when it has none).
pub fn name_of(b: &IPBlock) -> &str {
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
            shown(name_of(b)),
            shown(&b.spec.cidr),
            shown(&b.spec.space)
        );
        let owner_shown = shown(owner);
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
    /// Adds one step done (or, in a dry run, printed).
    pub fn count(&mut self, s: &Step) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::{attachment_label, block_of, new_block, node_label};

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

    /// A reservation on `node` for container `cid` (interface eth0), pod ns/`name` with UID `uid`.
    fn on(node: &str, cid: &str, uid: &str, name: &str, created: u64) -> Allocation {
        Allocation {
            container_id: cid.into(),
            node: node.into(),
            ..alloc(Some(uid), Some(("ns", name)), created)
        }
    }

    #[test]
    fn keeps_live_young_and_unowned_and_frees_only_the_gone() {
        let b = block(
            "10.2.0.0",
            "n1",
            vec![
                (1, alloc(Some("u1"), Some(("ns", "a")), 0)),
                // Its pod is not listed, but it is 10 s old: the pod may not be visible yet.
                (2, alloc(Some("u-young"), Some(("ns", "y")), 990)),
                (3, alloc(None, None, 0)),
                (4, alloc(Some("u-gone"), Some(("ns", "g")), 0)),
            ],
        );
        let p = plan(&snap(vec![b], &[("u1", "ns", "a")], &["n1"]), 1_000, 300);
        assert_eq!(
            (p.kept_live, p.kept_young, p.kept_unowned),
            (1, 1, 1),
            "{p:?}"
        );
        assert_eq!(p.steps.len(), 1);
        let Change::Replace(nb) = &p.steps[0].change else {
            panic!("a block that keeps reservations is replaced: {p:?}")
        };
        assert_eq!(
            nb.spec.allocations.keys().collect::<Vec<_>>(),
            ["1", "2", "3"]
        );
        assert_eq!((p.steps[0].freed, p.steps[0].orphans), (1, false));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // Nothing gone: no write at all.
        let b = block(
            "10.2.0.0",
            "n1",
            vec![(1, alloc(Some("u1"), Some(("ns", "a")), 0))],
        );
        let p = plan(&snap(vec![b], &[("u1", "ns", "a")], &["n1"]), 1_000, 300);
        assert!(p.steps.is_empty(), "{p:?}");
    }

    #[test]
    fn orphaned_blocks_are_emptied_then_deleted_or_left_for_adoption() {
        let pods = [("u1", "ns", "a")];
        let blocks = vec![
            // Orphaned, a live borrower and a gone one: the gone one is freed, the block stays orphaned.
            block(
                "10.3.0.0",
                "",
                vec![
                    (1, on("n2", "c1", "u1", "a", 0)),
                    (2, on("n2", "c2", "gone", "b", 0)),
                ],
            ),
            // Orphaned with a live borrower only: untouched, any node may adopt it.
            block("10.3.0.64", "", vec![(3, on("n2", "c3", "u1", "a", 0))]),
            // Orphaned, its last reservation gone: freed and deleted in one step.
            block("10.3.0.128", "", vec![(4, on("n2", "c4", "gone", "d", 0))]),
        ];
        let p = plan(&snap(blocks, &pods, &["n1", "n2"]), 10, 0);
        assert_eq!(p.steps.len(), 2, "{p:?}");
        let Change::Replace(nb) = &p.steps[0].change else {
            panic!("{p:?}")
        };
        assert_eq!(nb.spec.node, "");
        assert_eq!(nb.spec.allocations.keys().collect::<Vec<_>>(), ["1"]);
        assert_eq!((p.steps[0].freed, p.steps[0].orphans), (1, false));
        assert_eq!(p.steps[0].lines.len(), 1, "no orphaning line: {p:?}");
        assert!(matches!(p.steps[1].change, Change::Delete(_)));
        assert_eq!(p.steps[1].freed, 1);
        assert!(p.steps[1].lines[0].starts_with("freed 10.3.0.132 (pod ns/d uid gone"));
        assert!(
            p.steps[1].lines[1].ends_with(": orphaned and empty"),
            "{:?}",
            p.steps[1].lines
        );
        assert_eq!(p.kept_live, 2);
    }

    #[test]
    fn writes_carry_the_listed_version_and_the_labels_of_what_is_left() {
        let mut gone_node = block(
            "10.4.0.0",
            "n3",
            vec![
                (1, on("n2", "c-live", "u1", "a", 0)),
                (2, on("n3", "c-gone", "gone", "b", 0)),
            ],
        );
        gone_node.metadata.resource_version = Some("41".into());
        let mut empty = block("10.4.0.64", "n3", vec![]);
        empty.metadata.resource_version = Some("42".into());
        empty.metadata.uid = Some("uid-42".into());
        let p = plan(
            &snap(vec![gone_node, empty], &[("u1", "ns", "a")], &["n1", "n2"]),
            10,
            0,
        );
        assert_eq!(p.steps.len(), 2, "{p:?}");
        let Change::Replace(nb) = &p.steps[0].change else {
            panic!("{p:?}")
        };
        // Orphaned: no owner, the listed resourceVersion (so a concurrent write conflicts), and
        // labels recomputed from what is left: n3 neither owns nor holds anything any more.
        assert_eq!(nb.spec.node, "");
        assert_eq!(nb.metadata.resource_version.as_deref(), Some("41"));
        let labels = nb.metadata.labels.clone().unwrap_or_default();
        assert!(labels.contains_key(&node_label("n2")), "{labels:?}");
        assert!(!labels.contains_key(&node_label("n3")), "{labels:?}");
        assert!(labels.contains_key(&attachment_label("c-live", "eth0")));
        assert!(!labels.contains_key(&attachment_label("c-gone", "eth0")));
        assert_eq!((nb.spec.used, nb.spec.free), (1, 63));
        assert_eq!((p.steps[0].freed, p.steps[0].orphans), (1, true));
        assert_eq!(p.steps[0].lines.len(), 2);
        assert!(p.steps[0].lines[1].starts_with("orphaned block "));
        assert!(p.steps[0].lines[1].contains(
            "node n3 is gone; 1 reservation of existing pods kept, any node may adopt it"
        ));
        // The empty block of the gone node is deleted under its listed uid and resourceVersion.
        let Change::Delete(db) = &p.steps[1].change else {
            panic!("{p:?}")
        };
        assert_eq!(
            (
                db.metadata.uid.as_deref(),
                db.metadata.resource_version.as_deref()
            ),
            (Some("uid-42"), Some("42"))
        );
        assert!(p.steps[1].lines[0].ends_with("node n3 is gone and the block is empty"));
    }

    #[test]
    fn stored_values_cannot_forge_lines() {
        let mut a = on("n1\nfake", "c\u{202e}1", "gone", "p 1", 0);
        a.pod_namespace = Some("ns\nx".into());
        let line = freed_line("10.1.0.9", &a, "s\t");
        assert_eq!(
            line,
            "freed 10.1.0.9 (pod ns\\u{a}x/p\\u{20}1 uid gone, node n1\\u{a}fake, container c\\u{202e}1, interface eth0, space s\\u{9})"
        );
    }

    #[test]
    fn summary_counts_and_says_when_nothing_was_written() {
        let t = Totals {
            freed: 1,
            deleted: 2,
            orphaned: 0,
            kept_live: 3,
            kept_young: 1,
            kept_unowned: 0,
            blocks: 1,
            pods: 5,
            nodes: 1,
        };
        assert_eq!(
            t.summary(300, false),
            "summary: freed 1 reservation, deleted 2 blocks, orphaned 0 blocks; kept 4 (3 with a live pod, 1 younger than the 300s grace period, 0 without a pod reference); listed 1 block, 5 pods, 1 node"
        );
        assert!(t
            .summary(0, true)
            .ends_with("1 node (dry run: nothing was written)"));
    }
}
