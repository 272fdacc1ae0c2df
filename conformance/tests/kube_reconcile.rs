//! `plumb-ipam reconcile` against the strict test API server, black-box: reservations are made by
//! running the built `plumb-ipam` as a runtime would (one process per ADD, the node named by
//! PLUMB_NODE_NAME, the pod by CNI_ARGS), pods and nodes are created and deleted directly in the
//! server, and `plumb-ipam reconcile` runs as the CronJob runs it. Each test has its own server and
//! data dir, so the tests run in parallel.
//!
//! The last test checks deploy/rbac.yaml against what the binaries really asked the server: every
//! (resource, verb) the plugin used is granted to the node ClusterRole, every one reconcile used to the
//! reconcile ClusterRole.

use conformance::plugin::{Call, Outcome};
use conformance::{plumb_bin, workspace_root, TempDir};
use plumb_kubeapi::{FaultKind, FaultRule, Faults, Options, Resource, TestApiServer, Verb};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// IPAM never enters the namespace.
const NETNS: &str = "/run/netns/none";

/// A test cluster: the API server, a kubeconfig for it and the plugin's data dir (node-local lock).
struct Cluster {
    server: TestApiServer,
    dir: TempDir,
    kubeconfig: PathBuf,
}

/// A pod as the plugin is told about it.
#[derive(Clone, Copy)]
struct PodId<'a> {
    ns: &'a str,
    name: &'a str,
    /// `None`: CNI_ARGS carry no K8S_POD_UID (matched by namespace/name).
    uid: Option<&'a str>,
}

fn pod<'a>(ns: &'a str, name: &'a str, uid: &'a str) -> PodId<'a> {
    PodId {
        ns,
        name,
        uid: Some(uid),
    }
}

impl Cluster {
    fn new() -> Cluster {
        let server = TestApiServer::start(Options::default()).expect("start the test API server");
        let dir = TempDir::new("kreconc");
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

    fn node(&self, name: &str) {
        self.server
            .put_object(Resource::Nodes, json!({"metadata": {"name": name}}))
            .expect("put node");
    }

    fn delete_node(&self, name: &str) {
        assert!(self
            .server
            .delete_object(Resource::Nodes, None, name)
            .is_some());
    }

    fn pod(&self, p: PodId, node: &str, phase: &str) {
        let mut meta = json!({"namespace": p.ns, "name": p.name});
        if let Some(uid) = p.uid {
            meta["uid"] = json!(uid);
        }
        self.server
            .put_object(
                Resource::Pods,
                json!({
                    "metadata": meta,
                    "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]},
                    "status": {"phase": phase},
                }),
            )
            .expect("put pod");
    }

    fn delete_pod(&self, p: PodId) {
        assert!(self
            .server
            .delete_object(Resource::Pods, Some(p.ns), p.name)
            .is_some());
    }

    fn conf(&self, space: Option<&str>, range: Value) -> Value {
        let mut ipam = json!({
            "type": "plumb-ipam",
            "dataDir": self.dir.path().join("data").to_str().unwrap(),
            "kubernetes": {"kubeconfig": self.kubeconfig.to_str().unwrap()},
        });
        for (k, v) in range.as_object().expect("range fields") {
            ipam[k] = v.clone();
        }
        if let Some(s) = space {
            ipam["network_name"] = json!(s);
        }
        json!({"cniVersion": "1.0.0", "name": "net", "type": "plumb-ipam", "ipam": ipam})
    }

    fn cni(&self, cmd: &str, conf: &Value, node: &str, cid: &str, p: PodId) -> Outcome {
        let mut args = format!("K8S_POD_NAMESPACE={};K8S_POD_NAME={}", p.ns, p.name);
        if let Some(uid) = p.uid {
            args.push_str(&format!(";K8S_POD_UID={uid}"));
        }
        Call::new(cmd, cid, NETNS, "eth0", conf)
            .env("PLUMB_NODE_NAME", node)
            .env("CNI_ARGS", &args)
            .run(&plumb_bin("plumb-ipam"))
    }

    /// ADD on `node` for pod `p`; returns the address.
    fn add(&self, conf: &Value, node: &str, cid: &str, p: PodId) -> String {
        let r = self.cni("ADD", conf, node, cid, p).ok();
        let cidr = r["ips"][0]["address"].as_str().expect("an address");
        cidr.split('/').next().unwrap().to_string()
    }

    /// `plumb-ipam reconcile --kubeconfig K ARGS`.
    fn reconcile(&self, args: &[&str]) -> Outcome {
        let out = Command::new(plumb_bin("plumb-ipam"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg("reconcile")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run plumb-ipam reconcile");
        Outcome {
            exit: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn reconcile_ok(&self, args: &[&str]) -> String {
        let o = self.reconcile(args);
        assert_eq!(
            o.exit, 0,
            "reconcile failed: stdout={} stderr={}",
            o.stdout, o.stderr
        );
        o.stdout
    }

    fn blocks(&self) -> Vec<Value> {
        self.server.objects(Resource::IpBlocks)
    }

    fn block(&self, cidr: &str) -> Option<Value> {
        self.blocks()
            .into_iter()
            .find(|b| b["spec"]["cidr"] == cidr)
    }

    /// Every reservation: address → (pod namespace/name, pod UID).
    fn reservations(&self) -> BTreeMap<String, (String, String)> {
        let mut out = BTreeMap::new();
        for b in self.blocks() {
            let cidr = b["spec"]["cidr"].as_str().unwrap();
            let base: std::net::Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
            for (off, a) in b["spec"]["allocations"].as_object().unwrap() {
                let ip = std::net::Ipv4Addr::from(u32::from(base) + off.parse::<u32>().unwrap());
                let who = format!(
                    "{}/{}",
                    a["podNamespace"].as_str().unwrap_or("-"),
                    a["podName"].as_str().unwrap_or("-")
                );
                let uid = a["podUID"].as_str().unwrap_or("-").to_string();
                out.insert(ip.to_string(), (who, uid));
            }
        }
        out
    }
}

/// The summary line of a reconcile run.
fn summary(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_else(|| panic!("no summary line in {stdout:?}"))
}

fn freed_lines(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("freed "))
        .map(str::to_string)
        .collect()
}

#[test]
fn frees_deleted_pods_by_uid_and_keeps_live_pending_and_young() {
    let c = Cluster::new();
    c.node("n1");
    let conf = c.conf(None, json!({"range": "10.20.0.0/24"}));

    let live = pod("app", "web-0", "uid-live");
    let pending = pod("app", "starting", "uid-pending");
    let gone = pod("app", "batch-1", "uid-gone");
    let sts_old = pod("db", "db-0", "uid-db-old");
    let sts_new = pod("db", "db-0", "uid-db-new");
    let named_live = PodId {
        ns: "app",
        name: "legacy",
        uid: None,
    };
    let named_gone = PodId {
        ns: "app",
        name: "legacy-gone",
        uid: None,
    };

    c.pod(live, "n1", "Running");
    c.pod(pending, "n1", "Pending");
    c.pod(gone, "n1", "Running");
    c.pod(sts_old, "n1", "Running");
    c.pod(named_live, "n1", "Running");
    c.pod(named_gone, "n1", "Running");
    let ip_live = c.add(&conf, "n1", "c-live", live);
    let ip_pending = c.add(&conf, "n1", "c-pending", pending);
    let ip_gone = c.add(&conf, "n1", "c-gone", gone);
    let ip_old = c.add(&conf, "n1", "c-db-old", sts_old);
    let ip_named_live = c.add(&conf, "n1", "c-legacy", named_live);
    let ip_named_gone = c.add(&conf, "n1", "c-legacy-gone", named_gone);

    // The pods go away without a CNI DEL (node crash, kubelet lost state); the StatefulSet controller
    // re-creates db-0 under the same name with a new UID, and its ADD gets a new address while the old
    // one is still reserved.
    c.delete_pod(gone);
    c.delete_pod(named_gone);
    c.delete_pod(sts_old);
    c.pod(sts_new, "n1", "Pending");
    let ip_new = c.add(&conf, "n1", "c-db-new", sts_new);
    assert_ne!(ip_new, ip_old);
    assert_eq!(c.reservations().len(), 7);

    // Default grace (300 s): every reservation is seconds old, so nothing is freed.
    let before = c.blocks();
    let out = c.reconcile_ok(&[]);
    assert!(freed_lines(&out).is_empty(), "{out}");
    assert!(
        summary(&out).contains("freed 0 reservations")
            && summary(&out).contains("3 younger than the 300s grace period"),
        "{out}"
    );
    assert_eq!(
        c.blocks(),
        before,
        "a pass with nothing to do writes nothing"
    );

    // Dry run: prints what it would free, writes nothing.
    c.server.reset_counts();
    let rv = c.server.resource_version();
    let dry = c.reconcile_ok(&["--grace", "0", "--dry-run"]);
    assert_eq!(c.blocks(), before, "--dry-run changed objects");
    assert_eq!(c.server.resource_version(), rv, "--dry-run wrote");
    let counts = c.server.counts();
    assert_eq!(
        counts.verb(Verb::List),
        3,
        "one list each of ipblocks, pods, nodes"
    );
    assert_eq!(counts.total(), 3, "{counts:?}");
    assert!(
        summary(&dry).ends_with("(dry run: nothing was written)"),
        "{dry}"
    );

    // The real pass frees exactly the dry run's lines.
    c.server.reset_counts();
    let out = c.reconcile_ok(&["--grace", "0"]);
    assert_eq!(freed_lines(&out), freed_lines(&dry));
    let freed = freed_lines(&out);
    assert_eq!(freed.len(), 3, "{out}");
    for ip in [&ip_gone, &ip_old, &ip_named_gone] {
        assert!(
            freed.iter().any(|l| l.starts_with(&format!("freed {ip} "))),
            "{ip} not freed: {out}"
        );
    }
    assert!(
        freed.contains(&format!(
            "freed {ip_old} (pod db/db-0 uid uid-db-old, node n1, container c-db-old, interface eth0, space _default)"
        )),
        "{out}"
    );
    assert!(
        summary(&out).starts_with(
            "summary: freed 3 reservations, deleted 0 blocks, orphaned 0 blocks; kept 4"
        ),
        "{out}"
    );
    let counts = c.server.counts();
    assert_eq!(counts.verb(Verb::List), 3, "{counts:?}");
    assert_eq!(
        counts.get(Resource::IpBlocks, Verb::Update),
        1,
        "one block, one write"
    );

    let left = c.reservations();
    let expect: BTreeMap<String, (String, String)> = [
        (&ip_live, "app/web-0", "uid-live"),
        (&ip_pending, "app/starting", "uid-pending"),
        (&ip_named_live, "app/legacy", "-"),
        (&ip_new, "db/db-0", "uid-db-new"),
    ]
    .into_iter()
    .map(|(ip, who, uid)| (ip.clone(), (who.to_string(), uid.to_string())))
    .collect();
    assert_eq!(left, expect);
    let b = &c.blocks()[0];
    assert_eq!(b["spec"]["used"], 4);
    assert_eq!(b["spec"]["free"], 60);

    // A second pass has nothing left to do.
    let out = c.reconcile_ok(&["--grace", "0"]);
    assert!(
        summary(&out).starts_with("summary: freed 0 reservations"),
        "{out}"
    );

    // The freed addresses are handed out again.
    let again = pod("app", "web-1", "uid-web-1");
    c.pod(again, "n1", "Pending");
    let ip = c.add(&conf, "n1", "c-web-1", again);
    assert!([&ip_gone, &ip_old, &ip_named_gone].contains(&&ip), "{ip}");
}

#[test]
fn young_reservation_of_a_missing_pod_is_kept_until_grace_passes() {
    let c = Cluster::new();
    c.node("n1");
    let conf = c.conf(None, json!({"range": "10.21.0.0/24"}));
    // The ADD ran but the pod is not (yet) visible in the API.
    let p = pod("app", "not-yet-visible", "uid-nyv");
    let ip = c.add(&conf, "n1", "c-nyv", p);
    let out = c.reconcile_ok(&["--grace", "3600"]);
    assert!(freed_lines(&out).is_empty(), "{out}");
    assert!(
        summary(&out).contains("1 younger than the 3600s grace period"),
        "{out}"
    );
    assert!(c.reservations().contains_key(&ip));
    let out = c.reconcile_ok(&["--grace", "0"]);
    assert_eq!(freed_lines(&out).len(), 1, "{out}");
    assert!(c.reservations().is_empty());
}

#[test]
fn deleted_nodes_blocks_are_deleted_when_empty_orphaned_otherwise_then_adopted() {
    let c = Cluster::new();
    for n in ["n1", "n2", "n3"] {
        c.node(n);
    }
    // Five addresses over two /26 blocks: .62 .63 in 10.22.0.0/26, .64 .65 .66 in 10.22.0.64/26.
    let conf = c.conf(
        None,
        json!({"range": "10.22.0.0/24", "range_start": "10.22.0.62", "range_end": "10.22.0.66"}),
    );
    let a1 = pod("app", "a1", "uid-a1");
    let a2 = pod("app", "a2", "uid-a2");
    let b = pod("app", "b", "uid-b");
    for p in [a1, a2] {
        c.pod(p, "n1", "Running");
    }
    c.pod(b, "n2", "Running");
    assert_eq!(c.add(&conf, "n1", "c-a1", a1), "10.22.0.62");
    assert_eq!(c.add(&conf, "n1", "c-a2", a2), "10.22.0.63");
    assert_eq!(c.add(&conf, "n2", "c-b", b), "10.22.0.64");
    assert_eq!(c.block("10.22.0.64/26").unwrap()["spec"]["node"], "n2");

    // Another space: n3 claims a block whose only pod is gone with the node.
    let other = c.conf(Some("other"), json!({"range": "10.23.0.0/24"}));
    let d = pod("app", "d", "uid-d");
    c.pod(d, "n3", "Running");
    // (Nodes start claiming at a block derived from their name.)
    let d_ip = c.add(&other, "n3", "c-d", d);
    let d_block = plumb_ipam_kube::blocks::block_of(d_ip.parse().expect("an address")).to_string();
    // And a block of n3 emptied by a DEL before the node went away.
    let e = pod("app", "e", "uid-e");
    let other2 = c.conf(Some("other2"), json!({"range": "10.24.0.0/24"}));
    c.pod(e, "n3", "Running");
    let e_ip = c.add(&other2, "n3", "c-e", e);
    let e_block = plumb_ipam_kube::blocks::block_of(e_ip.parse().expect("an address")).to_string();
    c.cni("DEL", &other2, "n3", "c-e", e).ok();
    c.delete_pod(e);
    assert_eq!(c.blocks().len(), 4);

    // n2 and n3 are deleted; pod b (say, still terminating) exists, pod d is gone.
    c.delete_node("n2");
    c.delete_node("n3");
    c.delete_pod(d);

    // --space: one space's blocks only.
    let only = c.reconcile_ok(&["--grace", "0", "--dry-run", "--space", "other"]);
    assert_eq!(
        only.lines().count(),
        3,
        "freed d, deleted its block, summary: {only}"
    );
    assert!(only.contains(&format!("freed {d_ip} ")), "{only}");
    assert!(
        only.contains(&format!("({d_block}, space other)")),
        "{only}"
    );
    assert!(summary(&only).contains("listed 1 block,"), "{only}");

    let dry = c.reconcile_ok(&["--grace", "0", "--dry-run"]);
    assert_eq!(c.blocks().len(), 4, "dry run deleted blocks");
    assert_eq!(c.block("10.22.0.64/26").unwrap()["spec"]["node"], "n2");

    let out = c.reconcile_ok(&["--grace", "0"]);
    let actions = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("summary: "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        actions(&out),
        actions(&dry),
        "the dry run prints the same lines"
    );
    assert!(
        out.contains(&format!("freed {d_ip} (pod app/d uid uid-d, node n3, container c-d, interface eth0, space other)")),
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("deleted block "))
            .count(),
        2,
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("orphaned block ")
            && l.contains("10.22.0.64/26")
            && l.contains("node n2 is gone")),
        "{out}"
    );
    assert!(
        summary(&out)
            .starts_with("summary: freed 1 reservation, deleted 2 blocks, orphaned 1 block"),
        "{out}"
    );
    assert!(c.block(&d_block).is_none());
    assert!(c.block(&e_block).is_none());
    let orphan = c.block("10.22.0.64/26").expect("the orphan stays");
    assert_eq!(orphan["spec"]["node"], "");
    assert_eq!(orphan["spec"]["used"], 1);
    assert_eq!(
        c.reservations()["10.22.0.64"].0,
        "app/b",
        "pod b keeps its address"
    );
    assert_eq!(c.block("10.22.0.0/26").unwrap()["spec"]["node"], "n1");

    // n1's own block is full for this range and every block position is claimed: the next ADD on n1
    // borrows from the orphan first and adopts it.
    let f = pod("app", "f", "uid-f");
    c.pod(f, "n1", "Pending");
    assert_eq!(c.add(&conf, "n1", "c-f", f), "10.22.0.65");
    let adopted = c.block("10.22.0.64/26").unwrap();
    assert_eq!(adopted["spec"]["node"], "n1");
    assert_eq!(adopted["spec"]["used"], 2);

    // Nothing left to do.
    let out = c.reconcile_ok(&["--grace", "0"]);
    assert!(
        summary(&out)
            .starts_with("summary: freed 0 reservations, deleted 0 blocks, orphaned 0 blocks"),
        "{out}"
    );
}

#[test]
fn conflicting_writes_are_replanned_after_a_new_listing() {
    let c = Cluster::new();
    c.node("n1");
    let conf = c.conf(None, json!({"range": "10.25.0.0/24"}));
    let p = pod("app", "gone", "uid-gone");
    c.pod(p, "n1", "Running");
    let ip = c.add(&conf, "n1", "c-gone", p);
    c.delete_pod(p);
    let q = pod("app", "gone2", "uid-gone2");
    c.add(&conf, "n1", "c-gone2", q); // never had a pod object at all

    // The first block write answers 409, as if a node had written the block meanwhile.
    c.server.set_faults(Faults {
        seed: 7,
        rules: vec![FaultRule::new(FaultKind::Conflict, 1.0)
            .resources(&[Resource::IpBlocks])
            .verbs(&[Verb::Update])
            .max_hits(1)],
        ..Faults::default()
    });
    c.server.reset_counts();
    let o = c.reconcile(&["--grace", "0"]);
    assert_eq!(o.exit, 0, "{o:?}");
    assert!(o.stderr.contains("listing again"), "{o:?}");
    assert!(freed_lines(&o.stdout)
        .iter()
        .any(|l| l.starts_with(&format!("freed {ip} "))));
    assert!(
        summary(&o.stdout).starts_with("summary: freed 2 reservations"),
        "{o:?}"
    );
    let counts = c.server.counts();
    assert_eq!(
        counts.get(Resource::IpBlocks, Verb::List),
        2,
        "listed again after the 409"
    );
    assert_eq!(counts.get(Resource::IpBlocks, Verb::Update), 2);
    assert!(c.reservations().is_empty());

    // A real concurrent change: the node adds a reservation after reconcile listed. Reconcile's
    // write carries the listed resourceVersion, so it cannot erase the new reservation.
    c.server.clear_faults();
    let r = pod("app", "gone3", "uid-gone3");
    c.add(&conf, "n1", "c-gone3", r);
    c.server.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    let s = pod("app", "new", "uid-new");
    c.pod(s, "n1", "Pending");
    let child = Command::new(plumb_bin("plumb-ipam"))
        .env_clear()
        .arg("reconcile")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["--grace", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Reconcile is between its IPBlock list and its write: the node writes first.
    std::thread::sleep(Duration::from_millis(450));
    let ip_new = c.add(&conf, "n1", "c-new", s);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let left = c.reservations();
    assert!(
        left.contains_key(&ip_new),
        "the concurrent reservation survived: {left:?}"
    );
    assert_eq!(left.len(), 1, "{left:?}");
}

#[test]
fn unreachable_api_exits_non_zero_with_a_message() {
    let c = Cluster::new();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = c.dir.path().join("dead.kubeconfig");
    let mut kc = c.server.kubeconfig(None);
    kc["clusters"][0]["cluster"]["server"] = json!(format!("http://127.0.0.1:{port}"));
    std::fs::write(&dead, kc.to_string()).unwrap();
    let started = Instant::now();
    let o = Command::new(plumb_bin("plumb-ipam"))
        .env_clear()
        .args(["reconcile", "--kubeconfig"])
        .arg(&dead)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the Kubernetes API at http://127.0.0.1:{port}/ is unreachable"
        )),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(o.stdout.is_empty());

    // A kubeconfig that is not there.
    let o = Command::new(plumb_bin("plumb-ipam"))
        .env_clear()
        .args(["reconcile", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/kubeconfig: cannot read it"),
        "{stderr}"
    );

    // Credentials the API refuses: say which role is needed.
    c.server.set_token(Some("secret"));
    let o = c.reconcile(&[]);
    assert_eq!(o.exit, 1, "{o:?}");
    assert!(
        o.stderr.contains("cannot list IPBlocks") && o.stderr.contains("refused these credentials"),
        "{o:?}"
    );
    c.server.set_token(None);

    // A bad option is a usage error.
    let o = c.reconcile(&["--grace", "soon"]);
    assert_eq!(o.exit, 2, "{o:?}");
    assert!(o.stderr.contains("usage: plumb-ipam reconcile"), "{o:?}");

    // `list --kubeconfig` on an unreachable API fails too, with the same message.
    let o = Command::new(plumb_bin("plumb-ipam"))
        .env_clear()
        .args(["list", "--kubeconfig"])
        .arg(&dead)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr.contains("is unreachable"), "{stderr}");
}

#[test]
fn interval_mode_keeps_reconciling() {
    let c = Cluster::new();
    c.node("n1");
    let conf = c.conf(None, json!({"range": "10.26.0.0/24"}));
    /// Kills the looping reconcile when the test ends, passed or failed.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        Command::new(plumb_bin("plumb-ipam"))
            .env_clear()
            .arg("reconcile")
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .args(["--grace", "0", "--interval", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.starts_with(what) => return l,
                Ok(_) => {}
                Err(e) => panic!("no line starting with {what:?}: {e}"),
            }
        }
    };
    next("summary: freed 0");
    // A pod goes away while the loop runs: a later pass frees its address.
    let p = pod("app", "p", "uid-p");
    let ip = c.add(&conf, "n1", "c-p", p);
    let line = next("freed ");
    drop(child);
    assert!(line.starts_with(&format!("freed {ip} ")), "{line}");
    assert!(c.reservations().is_empty());
}

#[test]
fn list_and_usage_read_the_kubernetes_store() {
    let c = Cluster::new();
    c.node("n1");
    let conf = c.conf(None, json!({"range": "10.27.0.0/24"}));
    let p = pod("app", "web", "uid-web");
    c.pod(p, "n1", "Running");
    let ip = c.add(&conf, "n1", "c-web-0123456789", p);
    let admin = |cmd: &str| {
        let o = Command::new(plumb_bin("plumb-ipam"))
            .env_clear()
            .arg(cmd)
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let list = admin("list");
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "SPACE",
            "ADDRESS",
            "BLOCK",
            "NODE",
            "NETWORK",
            "CONTAINER",
            "IFNAME",
            "POD",
            "AGE"
        ]
    );
    assert_eq!(rows.len(), 2, "{list}");
    assert_eq!(
        rows[1][..8],
        [
            "_default",
            ip.as_str(),
            "10.27.0.0/26",
            "n1",
            "net",
            "c-web-012345",
            "eth0",
            "app/web"
        ]
    );
    let usage = admin("usage");
    let rows: Vec<Vec<&str>> = usage
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["SPACE", "BLOCK", "NODE", "USED", "FREE"]);
    assert_eq!(rows[1], ["_default", "10.27.0.0/26", "n1", "1", "63"]);
}

// ---------------------------------------------------------------------------------------------
// deploy/rbac.yaml against the requests the binaries make
// ---------------------------------------------------------------------------------------------

/// (apiGroup, resource) → verbs granted by the ClusterRole `name` of deploy/rbac.yaml.
fn granted(name: &str) -> BTreeMap<(String, String), BTreeSet<String>> {
    let text = std::fs::read_to_string(workspace_root().join("deploy/rbac.yaml")).unwrap();
    let mut out = BTreeMap::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if v["kind"] != "ClusterRole" || v["metadata"]["name"] != name {
            continue;
        }
        for rule in v["rules"].as_array().unwrap() {
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    let verbs: &mut BTreeSet<String> = out
                        .entry((
                            g.as_str().unwrap().to_string(),
                            r.as_str().unwrap().to_string(),
                        ))
                        .or_default();
                    verbs.extend(
                        rule["verbs"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_str().unwrap().to_string()),
                    );
                }
            }
        }
    }
    assert!(!out.is_empty(), "no ClusterRole {name} in deploy/rbac.yaml");
    out
}

fn verb_name(v: Verb) -> &'static str {
    match v {
        Verb::Get => "get",
        Verb::List => "list",
        Verb::Watch => "watch",
        Verb::Create => "create",
        Verb::Update => "update",
        Verb::Patch => "patch",
        Verb::Delete => "delete",
        Verb::DeleteCollection => "deletecollection",
    }
}

/// The (apiGroup, resource, verb) triples the server saw since the log was cleared.
fn used(server: &TestApiServer) -> BTreeSet<(String, String, String)> {
    server
        .requests()
        .into_iter()
        .filter_map(|r| r.target)
        .map(|(res, verb)| {
            (
                res.group().to_string(),
                res.plural().to_string(),
                verb_name(verb).to_string(),
            )
        })
        .collect()
}

fn assert_granted(role: &str, used: &BTreeSet<(String, String, String)>) {
    let grants = granted(role);
    for (g, r, v) in used {
        assert!(
            grants
                .get(&(g.clone(), r.clone()))
                .is_some_and(|verbs| verbs.contains(v)),
            "ClusterRole {role} does not grant {v} on {r}.{g}, which was used"
        );
    }
}

#[test]
fn rbac_grants_exactly_what_the_binaries_use() {
    let c = Cluster::new();
    c.node("n1");
    c.node("n2");
    let conf = c.conf(
        None,
        json!({"range": "10.28.0.0/24", "range_start": "10.28.0.62", "range_end": "10.28.0.65"}),
    );
    c.server.clear_requests();
    // The plugin: claim (create), fill (update), borrow (update), CHECK, DEL, STATUS, GC.
    let pods: Vec<PodId> = ["p1", "p2", "p3", "p4"]
        .into_iter()
        .map(|n| pod("app", n, n))
        .collect();
    c.add(&conf, "n1", "c1", pods[0]);
    c.add(&conf, "n1", "c2", pods[1]);
    c.add(&conf, "n2", "c3", pods[2]);
    c.add(&conf, "n1", "c4", pods[3]);
    let mut check = conf.clone();
    check["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.28.0.62/24"}]});
    let _ = c.cni("CHECK", &check, "n1", "c1", pods[0]);
    c.cni("DEL", &conf, "n1", "c2", pods[1]).ok();
    let mut v11 = conf.clone();
    v11["cniVersion"] = json!("1.1.0");
    let _ = Call::new("STATUS", "", NETNS, "", &v11)
        .without("CNI_CONTAINERID")
        .without("CNI_NETNS")
        .without("CNI_IFNAME")
        .env("PLUMB_NODE_NAME", "n1")
        .run(&plumb_bin("plumb-ipam"));
    let mut gc = v11.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    let _ = Call::new("GC", "", NETNS, "", &gc)
        .without("CNI_CONTAINERID")
        .without("CNI_NETNS")
        .without("CNI_IFNAME")
        .env("PLUMB_NODE_NAME", "n1")
        .run(&plumb_bin("plumb-ipam"));
    // plumb-vxlan's `peers.fromNodes` lists the Nodes with the node's credentials, through this command.
    let nodes = std::process::Command::new(plumb_bin("plumb-ipam"))
        .args(["nodes", "--json", "--kubeconfig"])
        .arg(&c.kubeconfig)
        .output()
        .expect("run plumb-ipam nodes");
    assert!(
        nodes.status.success(),
        "plumb-ipam nodes: {}",
        String::from_utf8_lossy(&nodes.stderr)
    );
    let plugin = used(&c.server);
    assert!(plugin.contains(&("".into(), "nodes".into(), "list".into())));
    assert!(plugin.contains(&("plumb.dev".into(), "ipblocks".into(), "create".into())));
    assert!(plugin.contains(&("plumb.dev".into(), "ipblocks".into(), "update".into())));
    assert_granted("plumb-node", &plugin);

    // Reconcile: frees (update), orphans (update), deletes blocks, lists pods and nodes.
    c.delete_node("n2");
    c.server.clear_requests();
    c.reconcile_ok(&["--grace", "0"]);
    let reconcile = used(&c.server);
    for want in [
        ("plumb.dev", "ipblocks", "list"),
        ("plumb.dev", "ipblocks", "update"),
        ("plumb.dev", "ipblocks", "delete"),
        ("", "pods", "list"),
        ("", "nodes", "list"),
    ] {
        assert!(
            reconcile.contains(&(want.0.into(), want.1.into(), want.2.into())),
            "reconcile did not use {want:?}: {reconcile:?}"
        );
    }
    assert_granted("plumb-reconcile", &reconcile);

    // And nothing more is granted than what is used (least privilege).
    let as_grants = |used: &BTreeSet<(String, String, String)>| {
        let mut m: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for (g, r, v) in used {
            m.entry((g.clone(), r.clone()))
                .or_default()
                .insert(v.clone());
        }
        m
    };
    assert_eq!(granted("plumb-reconcile"), as_grants(&reconcile));
    assert_eq!(granted("plumb-node"), as_grants(&plugin));
}
