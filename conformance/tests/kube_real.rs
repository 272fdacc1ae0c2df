//! plumb-ipam's Kubernetes store against a REAL kube-apiserver (kube-real lane): the etcd and
//! kube-apiserver `scripts/control-plane` builds from the Go module proxy, on loopback, with client
//! certificates, service-account token signing and `--authorization-mode=RBAC` (see
//! `conformance::control_plane`).
//!
//! `deploy/crds` and `deploy/rbac.yaml` are applied as they are; the plugin and `plumb-ipam reconcile`
//! run with tokens of exactly deploy/rbac.yaml's service accounts, from the TokenRequest API, in
//! kubeconfigs written by the installer script of deploy/installer-daemonset.yaml itself. Requests are
//! counted from the server's audit log, per user.
//!
//! One control plane serves every test; IPBlocks are cluster-scoped, so each test works in its own
//! space (`network_name`). The tests count requests per service account in audit-log windows, so each
//! holds [`serial`]: no other test's requests land in its window.

// Shared with kube_real_vxlan.rs and kube_real_faults.rs, which use parts this file does not.
#[allow(dead_code)]
mod kube_real_support;

use conformance::control_plane::Auth;
use conformance::plugin::Call;
use conformance::{plumb_bin, unique_name, TempDir};
use kube_real_support::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The block (as `spec.cidr` shows it) of an address given as CIDR text.
fn block_of_cidr(cidr: &str) -> String {
    let ip = cidr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("an address");
    plumb_ipam_kube::blocks::block_of(ip).to_string()
}

/// The server's schema (deploy/crds as is) accepts the blocks plumb writes (create, update, both
/// families), rejects malformed ones with 422 naming the field, and shows the printer columns.
#[test]
fn crd_schema_accepts_plumbs_blocks_rejects_malformed_ones_and_shows_columns() {
    let r = real();
    let cp = r.cp;
    let _serial = serial();
    let space = unique_name("crd");
    let data = TempDir::new("kreal-data");
    let conf = net(
        &space,
        "10.61.0.0/24",
        data.path(),
        &r.plugin_kubeconfig,
        json!({"ipRanges": [{"range": "fd00:61::/64"}]}),
    );
    // Creates (one block per family), then an update of each.
    let a = add_ok(&conf, "node-a", "c1");
    assert_eq!(address(&a, 0), first_of("10.61.0.0/24", "node-a"));
    assert_eq!(address(&a, 1), first_of("fd00:61::/64", "node-a"));
    let (v4_block, v6_block) = (
        block_of_cidr(&address(&a, 0)),
        block_of_cidr(&address(&a, 1)),
    );
    add_ok(&conf, "node-a", "c2");
    let stored = blocks(cp, &space);
    assert_eq!(stored.len(), 2, "{stored:?}");
    for b in &stored {
        assert_eq!(b["spec"]["node"], "node-a");
        assert_eq!(b["spec"]["used"], 2);
        let allocs = b["spec"]["allocations"].as_object().expect("allocations");
        assert_eq!(allocs.len(), 2);
        for a in allocs.values() {
            assert_eq!(a["ifname"], "eth0");
            assert_eq!(a["network"], space.as_str());
        }
    }

    // Malformed blocks: 422 from the server's own validation, naming the field.
    let good = stored[0].clone();
    let malformed = |edit: &dyn Fn(&mut Value), field: &str, detail: &str| {
        let mut b = json!({"apiVersion": "plumb.dev/v1alpha1", "kind": "IPBlock",
                           "metadata": {"name": unique_name("bad")}, "spec": good["spec"].clone()});
        edit(&mut b);
        let ans = cp
            .request("POST", IPBLOCKS, Some(&b), Auth::Admin)
            .expect("POST");
        assert_eq!(ans.status, 422, "{field}: {}", ans.body);
        assert_eq!(ans.body["reason"], "Invalid", "{}", ans.body);
        let msg = ans.body["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(field) && msg.contains(detail),
            "{field}/{detail}: {msg}"
        );
    };
    malformed(
        &|b| b["spec"]["used"] = json!("two"),
        "spec.used",
        "must be of type integer",
    );
    malformed(
        &|b| b["spec"]["free"] = json!(-1),
        "spec.free",
        "greater than or equal to 0",
    );
    malformed(
        &|b| {
            b["spec"].as_object_mut().unwrap().remove("cidr");
        },
        "spec.cidr",
        "Required value",
    );
    malformed(
        &|b| {
            let allocs = b["spec"]["allocations"].as_object_mut().unwrap();
            let first = allocs.values_mut().next().unwrap();
            first.as_object_mut().unwrap().remove("containerID");
        },
        "containerID",
        "Required value",
    );
    malformed(&|b| b["spec"] = json!(null), "spec", "Required value");

    // Printer columns: a Table from the server carries deploy/crds' columns and plumb's values.
    let table = cp
        .request_accept(
            "GET",
            IPBLOCKS,
            None,
            Auth::Admin,
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        )
        .expect("GET table");
    assert_eq!(table.status, 200, "{}", table.body);
    let columns: Vec<&str> = table.body["columnDefinitions"]
        .as_array()
        .expect("columnDefinitions")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        columns,
        ["Name", "Space", "Range", "Node", "Used", "Free", "Age"]
    );
    let rows: Vec<&Value> = table.body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|row| row["cells"][1] == space.as_str())
        .collect();
    // Name, Space, Range, Node, Used, Free of each row: the stored object's name and spec values.
    let row = |c: &Value| json!([c[0], c[1], c[2], c[3], c[4], c[5]]);
    let mut cells: Vec<Value> = rows.iter().map(|r| row(&r["cells"])).collect();
    let mut want: Vec<Value> = stored
        .iter()
        .map(|b| {
            let s = &b["spec"];
            json!([
                b["metadata"]["name"],
                s["space"],
                s["cidr"],
                s["node"],
                s["used"],
                s["free"]
            ])
        })
        .collect();
    cells.sort_by_key(|v| v.to_string());
    want.sort_by_key(|v| v.to_string());
    assert_eq!(cells, want);
    let ranges: BTreeSet<&str> = cells.iter().filter_map(|c| c[2].as_str()).collect();
    assert_eq!(ranges, [v4_block.as_str(), v6_block.as_str()].into());

    del_ok(&conf, "node-a", "c1");
    del_ok(&conf, "node-a", "c2");
    assert_eq!(
        usage(cp, &space),
        [(v4_block.clone(), 0), (v6_block.clone(), 0)]
    );
}

/// Least privilege both ways with deploy/rbac.yaml as is: every request the plugin (ADD, CHECK, DEL,
/// STATUS, GC, `nodes`) and reconcile make is allowed by the real authorizer, and representative requests
/// outside their roles are denied with 403.
#[test]
fn rbac_allows_every_request_plumb_makes_and_denies_others() {
    let r = real();
    let cp = r.cp;
    let _serial = serial();
    let space = unique_name("rbac");
    let data = TempDir::new("kreal-data");
    let conf = net(
        &space,
        "10.62.0.0/24",
        data.path(),
        &r.plugin_kubeconfig,
        json!({}),
    );

    // The plugin: ADD (create, then update), CHECK, DEL, STATUS, GC and `nodes` (peers.fromNodes).
    let mark = cp.audit_mark();
    let first = add_ok(&conf, "gone-node-1", "c1");
    add_ok(&conf, "gone-node-1", "c2");
    let mut check = conf.clone();
    check["prevResult"] = first.clone();
    assert_eq!(cni("CHECK", &check, "gone-node-1", "c1").ok(), Value::Null);
    del_ok(&conf, "gone-node-1", "c1");
    add_ok(&conf, "gone-node-2", "c3");
    del_ok(&conf, "gone-node-1", "c2");
    // STATUS and GC (CNI 1.1.0): network-wide calls, on the node holding c3, which GC keeps.
    let mut v11 = conf.clone();
    v11["cniVersion"] = json!("1.1.0");
    let mut gc = v11.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c3", "ifname": "eth0"}]);
    for (cmd, c) in [("STATUS", &v11), ("GC", &gc)] {
        let out = Call::new(cmd, "", "", "", c)
            .without("CNI_CONTAINERID")
            .without("CNI_NETNS")
            .without("CNI_IFNAME")
            .env("PLUMB_NODE_NAME", "gone-node-2")
            .run(&plumb_bin("plumb-ipam"));
        assert_eq!(out.ok(), Value::Null, "{cmd}");
    }
    assert_eq!(holders(cp, &space), ["c3".to_string()].into());
    let nodes = Command::new(plumb_bin("plumb-ipam"))
        .args(["nodes", "--json", "--kubeconfig"])
        .arg(&r.plugin_kubeconfig)
        .output()
        .expect("run plumb-ipam nodes");
    assert!(
        nodes.status.success(),
        "plumb-ipam nodes: {}",
        String::from_utf8_lossy(&nodes.stderr)
    );
    let evs = cp.audit_events(mark);
    for e in evs.iter().filter(|e| e["responseStatus"]["code"] == 429) {
        eprintln!("DEBUG429 {e}");
    }
    let plugin = requests_of(&evs, PLUGIN_USER);
    let made: BTreeSet<(String, String)> = plugin
        .iter()
        .map(|(v, res, _)| (v.clone(), res.clone()))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("list", "ipblocks"),
        ("create", "ipblocks"),
        ("update", "ipblocks"),
        ("list", "nodes"),
    ]
    .iter()
    .map(|(v, r)| (v.to_string(), r.to_string()))
    .collect();
    assert_eq!(made, expected, "{plugin:?}");
    assert!(
        plugin.iter().all(|(_, _, code)| *code < 300),
        "a plugin request was refused: {plugin:?}"
    );

    // Reconcile over this space: node gone-node-1's empty block is deleted, gone-node-2's non-empty
    // one orphaned (only a live Node object exists; with no Node at all reconcile judges no node):
    // list, update, delete of IPBlocks; list of Pods and Nodes.
    let live = unique_name("live");
    cp.admin(
        "POST",
        "/api/v1/nodes",
        Some(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": live}})),
        201,
    );
    let mark = cp.audit_mark();
    let out = Command::new(plumb_bin("plumb-ipam"))
        .args([
            "reconcile",
            "--grace",
            "0",
            "--space",
            &space,
            "--kubeconfig",
        ])
        .arg(&r.reconcile_kubeconfig)
        .output()
        .expect("run plumb-ipam reconcile");
    assert!(
        out.status.success(),
        "reconcile: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = requests_of(&cp.audit_events(mark), RECONCILE_USER);
    let made: BTreeSet<(String, String)> = rec
        .iter()
        .map(|(v, res, _)| (v.clone(), res.clone()))
        .collect();
    for want in [
        ("list", "ipblocks"),
        ("update", "ipblocks"),
        ("delete", "ipblocks"),
        ("list", "pods"),
        ("list", "nodes"),
    ] {
        assert!(
            made.contains(&(want.0.to_string(), want.1.to_string())),
            "reconcile made no {want:?}: {rec:?}"
        );
    }
    assert!(
        rec.iter().all(|(_, _, code)| *code < 300),
        "a reconcile request was refused: {rec:?}"
    );
    cp.admin("DELETE", &format!("/api/v1/nodes/{live}"), None, 200);
    let left = blocks(cp, &space);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["spec"]["node"], "", "orphaned: {}", left[0]);
    assert_eq!(holders(cp, &space), ["c3".to_string()].into());

    // Denied by the real authorizer: 403 Forbidden naming the user, verb and resource.
    let reconcile_token = std::fs::read_to_string(&r.reconcile_kubeconfig)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.trim().strip_prefix("token: \"").map(str::to_string))
        })
        .map(|t| t.trim_end_matches('"').to_string())
        .expect("a token in reconcile's kubeconfig");
    let block = format!(
        "{IPBLOCKS}/{}",
        left[0]["metadata"]["name"].as_str().unwrap()
    );
    let new_block = json!({"apiVersion": "plumb.dev/v1alpha1", "kind": "IPBlock",
        "metadata": {"name": unique_name("deny")},
        "spec": {"space": space, "cidr": "10.62.0.128/26", "node": "x", "used": 0, "free": 64}});
    let denied: [(&str, &str, &str, Option<&Value>, &str); 9] = [
        (
            r.plugin_token.as_str(),
            "DELETE",
            &block,
            None,
            "cannot delete resource \"ipblocks\"",
        ),
        (
            r.plugin_token.as_str(),
            "GET",
            &block,
            None,
            "cannot get resource \"ipblocks\"",
        ),
        (
            r.plugin_token.as_str(),
            "GET",
            "/apis/plumb.dev/v1alpha1/ipblocks?watch=true",
            None,
            "cannot watch resource \"ipblocks\"",
        ),
        (
            r.plugin_token.as_str(),
            "GET",
            "/api/v1/pods",
            None,
            "cannot list resource \"pods\"",
        ),
        (
            r.plugin_token.as_str(),
            "GET",
            "/api/v1/namespaces/kube-system/secrets",
            None,
            "cannot list resource \"secrets\"",
        ),
        (
            r.plugin_token.as_str(),
            "DELETE",
            "/api/v1/nodes/node-a",
            None,
            "cannot delete resource \"nodes\"",
        ),
        (
            &reconcile_token,
            "POST",
            IPBLOCKS,
            Some(&new_block),
            "cannot create resource \"ipblocks\"",
        ),
        (
            &reconcile_token,
            "GET",
            "/api/v1/namespaces/kube-system/secrets",
            None,
            "cannot list resource \"secrets\"",
        ),
        (
            &reconcile_token,
            "DELETE",
            "/api/v1/namespaces/default/pods/p",
            None,
            "cannot delete resource \"pods\"",
        ),
    ];
    for (token, method, path, body, needle) in denied {
        let ans = cp
            .request(method, path, body, Auth::Token(token))
            .expect("request");
        assert_eq!(ans.status, 403, "{method} {path}: {}", ans.body);
        assert_eq!(ans.body["reason"], "Forbidden", "{}", ans.body);
        let msg = ans.body["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle) && msg.contains("system:serviceaccount:kube-system:plumb"),
            "{method} {path}: {msg}"
        );
    }
    // And without credentials at all: 401 (anonymous access is off).
    let ans = cp
        .request("GET", IPBLOCKS, None, Auth::Anonymous)
        .expect("request");
    assert_eq!(ans.status, 401, "{}", ans.body);
}

/// The kube lane's exact request counts, measured from the real server's audit log: an uncontended
/// ADD or DEL costs one list and at most one write per range.
#[test]
fn uncontended_add_and_del_cost_at_most_two_requests_on_the_real_server() {
    let r = real();
    let cp = r.cp;
    let _serial = serial();
    let space = unique_name("cost");
    let data = TempDir::new("kreal-data");
    let conf = net(
        &space,
        "10.63.0.0/16",
        data.path(),
        &r.plugin_kubeconfig,
        json!({}),
    );

    let c = plugin_cost(cp, || {
        add_ok(&conf, "node-a", "c1");
    });
    eprintln!("first ADD on a fresh node: {c:?}");
    assert_eq!(c, cost(&[("list", 1), ("create", 1)]));
    let c = plugin_cost(cp, || {
        add_ok(&conf, "node-a", "c2");
    });
    eprintln!("ADD on a node with a block with room: {c:?}");
    assert_eq!(c, cost(&[("list", 1), ("update", 1)]));
    let c = plugin_cost(cp, || {
        add_ok(&conf, "node-a", "c2");
    });
    eprintln!("re-ADD of a held attachment: {c:?}");
    assert_eq!(c, cost(&[("list", 1)]));
    let c = plugin_cost(cp, || del_ok(&conf, "node-a", "c1"));
    eprintln!("DEL: {c:?}");
    assert_eq!(c, cost(&[("list", 1), ("update", 1)]));
    let c = plugin_cost(cp, || del_ok(&conf, "node-a", "c1"));
    eprintln!("DEL of nothing: {c:?}");
    assert_eq!(c, cost(&[("list", 1)]));

    let dspace = unique_name("dual");
    let dual = net(
        &dspace,
        "10.64.0.0/16",
        data.path(),
        &r.plugin_kubeconfig,
        json!({"ipRanges": [{"range": "fd00:64::/64"}]}),
    );
    let c = plugin_cost(cp, || {
        let a = add_ok(&dual, "node-a", "d1");
        assert_eq!(address(&a, 0), first_of("10.64.0.0/16", "node-a"));
        assert_eq!(address(&a, 1), first_of("fd00:64::/64", "node-a"));
    });
    eprintln!("first dual-stack ADD on a fresh node: {c:?}");
    assert_eq!(c, cost(&[("list", 1), ("create", 2)]));
    let c = plugin_cost(cp, || {
        add_ok(&dual, "node-a", "d2");
    });
    eprintln!("dual-stack ADD on a node with blocks with room: {c:?}");
    assert_eq!(c, cost(&[("list", 1), ("update", 2)]));
    del_ok(&conf, "node-a", "c2");
    del_ok(&dual, "node-a", "d1");
    del_ok(&dual, "node-a", "d2");
    assert!(holders(cp, &space).is_empty());
    assert!(holders(cp, &dspace).is_empty());
}

/// An exhausted range is code 100 naming it, on the real server, and reserves nothing; a dual-stack
/// ADD whose one range is full keeps no address of the other.
#[test]
fn exhausted_pool_is_code_100_and_reserves_nothing_on_the_real_server() {
    let r = real();
    let cp = r.cp;
    let _serial = serial();
    let space = unique_name("full");
    let data = TempDir::new("kreal-data");
    let conf = net(
        &space,
        "10.65.0.0/30",
        data.path(),
        &r.plugin_kubeconfig,
        json!({}),
    );
    assert_eq!(address(&add_ok(&conf, "node-a", "c1"), 0), "10.65.0.1/30");
    // node-b finds the only block claimed by node-a and borrows from it.
    assert_eq!(address(&add_ok(&conf, "node-b", "c2"), 0), "10.65.0.2/30");
    let e = cni("ADD", &conf, "node-c", "c3").err(100);
    let msg = e["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("10.65.0.0/30") && msg.contains("exhausted"),
        "{e}"
    );
    let dual = net(
        &space,
        "10.65.0.0/30",
        data.path(),
        &r.plugin_kubeconfig,
        json!({"ipRanges": [{"range": "fd00:65::/64"}]}),
    );
    let e = cni("ADD", &dual, "node-a", "c4").err(100);
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("10.65.0.0/30"),
        "{e}"
    );
    assert_eq!(
        holders(cp, &space),
        ["c1".to_string(), "c2".to_string()].into()
    );
    del_ok(&conf, "node-a", "c1");
    del_ok(&conf, "node-b", "c2");
    assert!(holders(cp, &space).is_empty());
}

/// Concurrent ADDs from several nodes on one small range: the real server's optimistic concurrency
/// (409 on a stale resourceVersion) is what keeps addresses unique; every address is handed out
/// once, and every block is empty after the DELs.
#[test]
fn concurrent_adds_from_many_nodes_get_distinct_addresses_on_the_real_server() {
    let r = real();
    let cp = r.cp;
    let _serial = serial();
    let space = unique_name("race");
    let data = TempDir::new("kreal-data");
    // 10.66.0.0/26: 62 usable addresses, one /26 block: every node contends for the same block.
    let conf = net(
        &space,
        "10.66.0.0/26",
        data.path(),
        &r.plugin_kubeconfig,
        json!({}),
    );
    let (nodes, per_node) = (6, 8);
    let mark = cp.audit_mark();
    let started = Instant::now();
    let handles: Vec<_> = (0..nodes)
        .map(|n| {
            let conf = conf.clone();
            std::thread::spawn(move || {
                let node = format!("node-{n}");
                let data = format!("{}/{node}", conf["ipam"]["dataDir"].as_str().unwrap());
                let mut conf = conf;
                conf["ipam"]["dataDir"] = json!(data);
                (0..per_node)
                    .map(|i| {
                        let cid = format!("{node}-c{i}");
                        let out = add_ok(&conf, &node, &cid);
                        (node.clone(), cid, address(&out, 0), conf.clone())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let got: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("an ADD thread"))
        .collect();
    let elapsed = started.elapsed();
    let addrs: BTreeSet<&String> = got.iter().map(|g| &g.2).collect();
    assert_eq!(
        addrs.len(),
        nodes * per_node,
        "duplicate addresses: {got:?}"
    );
    let reqs = requests_of(&cp.audit_events(mark), PLUGIN_USER);
    let conflicts = reqs.iter().filter(|(_, _, code)| *code == 409).count();
    eprintln!(
        "{} concurrent ADDs from {nodes} nodes in {:.2}s: {} requests, {conflicts} conflicts (409)",
        nodes * per_node,
        elapsed.as_secs_f64(),
        reqs.len()
    );
    assert!(
        reqs.iter().all(|(_, _, code)| *code < 300 || *code == 409),
        "{reqs:?}"
    );
    for (node, cid, _, conf) in &got {
        del_ok(conf, node, cid);
    }
    assert!(holders(cp, &space).is_empty());
    assert!(usage(cp, &space).iter().all(|(_, used)| *used == 0));
}

/// The installer's kubeconfig rewrite on token rotation, with the real TokenRequest API: the old
/// token is bound to a Secret and dies with it; the installer writes the new token into the
/// kubeconfig, and plumb-ipam works with the rewritten file while the old one is refused (401).
#[test]
fn installer_rewrites_the_kubeconfig_when_the_token_rotates() {
    let r = real();
    let cp = r.cp;
    let _serial = serial();
    let secret = unique_name("tok");
    cp.admin(
        "POST",
        "/api/v1/namespaces/kube-system/secrets",
        Some(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}})),
        201,
    );
    let bound = |seconds: u64| {
        let req = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds,
                     "boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": secret}}});
        let a = cp.admin(
            "POST",
            "/api/v1/namespaces/kube-system/serviceaccounts/plumb/token",
            Some(&req),
            201,
        );
        a["status"]["token"]
            .as_str()
            .expect("status.token")
            .to_string()
    };
    let old = bound(600);
    let dir = TempDir::new("kreal-inst");
    let inst = Installer::start(cp, dir.path(), &old);
    inst.wait_for_token(&old);
    let old_copy = dir.path().join("old.kubeconfig");
    std::fs::copy(&inst.kubeconfig, &old_copy).expect("copy the first kubeconfig");

    let space = unique_name("rot");
    let data = TempDir::new("kreal-data");
    let conf = net(
        &space,
        "10.67.0.0/24",
        data.path(),
        &inst.kubeconfig,
        json!({}),
    );
    add_ok(&conf, "node-a", "c1");

    // The kubelet rotates the projected token: the installer rewrites the kubeconfig.
    let new = cp.token("kube-system", "plumb", 600);
    std::fs::write(inst.token_dir.join("token.tmp"), &new).expect("write token");
    std::fs::rename(
        inst.token_dir.join("token.tmp"),
        inst.token_dir.join("token"),
    )
    .expect("rotate token");
    inst.wait_for_token(&new);
    // The old token dies with the Secret it is bound to.
    cp.admin(
        "DELETE",
        &format!("/api/v1/namespaces/kube-system/secrets/{secret}"),
        None,
        200,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ans = cp
            .request("GET", IPBLOCKS, None, Auth::Token(&old))
            .expect("request");
        if ans.status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old token still works: {}",
            ans.status
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stale = net(&space, "10.67.0.0/24", data.path(), &old_copy, json!({}));
    let e = cni("ADD", &stale, "node-a", "c2").err(5);
    let msg = e["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("the API refused plumb-ipam's credentials (401)"),
        "{e}"
    );
    add_ok(&conf, "node-a", "c2");
    del_ok(&conf, "node-a", "c1");
    del_ok(&conf, "node-a", "c2");
    assert!(holders(cp, &space).is_empty());
}

/// Reconcile with real Pod and Node objects created and deleted through the API: a reservation is
/// freed by pod UID (a deleted pod, a re-created pod of the same name), a Pending pod's is kept, a
/// young one is kept within the grace period; a deleted node's empty block is deleted and its
/// non-empty one orphaned.
#[test]
fn reconcile_frees_by_pod_uid_and_retires_deleted_nodes_blocks_on_the_real_server() {
    let r = real();
    let cp = r.cp;
    let _serial = serial();
    let space = unique_name("rec");
    let ns = unique_name("ns");
    cp.create_namespace(&ns);
    let (n1, n2, n3) = (unique_name("n1-"), unique_name("n2-"), unique_name("n3-"));
    for n in [&n1, &n2, &n3] {
        create_node(cp, n, json!({}), json!([]));
    }
    let data = TempDir::new("kreal-data");
    let conf = net(
        &space,
        "10.68.0.0/24",
        data.path(),
        &r.plugin_kubeconfig,
        json!({}),
    );
    let p1 = create_pod(cp, &ns, "p1", &n1);
    let p2 = create_pod(cp, &ns, "p2", &n1);
    let p3 = create_pod(cp, &ns, "p3", &n2);
    add_for_pod(&conf, &n1, "c1", &p1);
    add_for_pod(&conf, &n1, "c2", &p2);
    add_for_pod(&conf, &n2, "c3", &p3);
    // n3 claims a block and empties it again.
    let p4 = create_pod(cp, &ns, "p4", &n3);
    add_for_pod(&conf, &n3, "c4", &p4);
    del_ok(&conf, &n3, "c4");
    delete_pod(cp, &p4);
    let all: BTreeSet<String> = ["c1", "c2", "c3"].iter().map(|s| s.to_string()).collect();
    assert_eq!(holders(cp, &space), all);

    // p1 deleted; p2 deleted and re-created under the same name (a new UID).
    delete_pod(cp, &p1);
    delete_pod(cp, &p2);
    let p2b = create_pod(cp, &ns, "p2", &n1);
    assert_ne!(p2b.uid, p2.uid);

    // Within the default grace period nothing is freed: the reservations are young.
    let out = reconcile(r, &space, &[]);
    assert!(out.contains("freed 0"), "{out}");
    assert_eq!(holders(cp, &space), all);

    // Grace 0: c1 (pod gone) and c2 (its pod's UID is gone) are freed; c3's Pending pod keeps it.
    let out = reconcile(r, &space, &["--grace", "0"]);
    assert!(out.contains("freed 2"), "{out}");
    assert_eq!(holders(cp, &space), ["c3".to_string()].into());

    // n2 and n3 deleted: n3's empty block is deleted, n2's (holding c3) orphaned; n1's stays.
    delete_node(cp, &n2);
    delete_node(cp, &n3);
    let out = reconcile(r, &space, &["--grace", "0"]);
    assert!(
        out.contains("deleted 1") && out.contains("orphaned 1"),
        "{out}"
    );
    let mut owners: Vec<(String, u64)> = blocks(cp, &space)
        .iter()
        .map(|b| {
            (
                b["spec"]["node"].as_str().unwrap_or("?").to_string(),
                b["spec"]["used"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    owners.sort();
    assert_eq!(owners, [(String::new(), 1), (n1.clone(), 0)]);
    assert_eq!(holders(cp, &space), ["c3".to_string()].into());

    // Clean up what this test made on the shared server.
    delete_pod(cp, &p3);
    delete_pod(cp, &p2b);
    delete_node(cp, &n1);
    cp.admin("DELETE", &format!("/api/v1/namespaces/{ns}"), None, 200);
}

/// `peers.fromNodes`' source, `plumb-ipam nodes`, with the plugin's token: the Nodes' InternalIP
/// addresses as the real server stores them, following Nodes added and removed.
#[test]
fn nodes_lists_the_real_servers_nodes_as_they_come_and_go() {
    let r = real();
    let cp = r.cp;
    let _serial = serial();
    let run = unique_name("run");
    let selector = format!("plumb.test/run={run}");
    let nodes = || -> Value {
        let out = Command::new(plumb_bin("plumb-ipam"))
            .args(["nodes", "--json", "--selector", &selector, "--kubeconfig"])
            .arg(&r.plugin_kubeconfig)
            .output()
            .expect("run plumb-ipam nodes");
        assert!(
            out.status.success(),
            "plumb-ipam nodes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON from plumb-ipam nodes")
    };
    let labels = json!({"plumb.test/run": run});
    let (a, b, c) = (unique_name("va-"), unique_name("vb-"), unique_name("vc-"));
    // Documentation addresses (RFC 5737/3849): only stored, never contacted.
    create_node(
        cp,
        &a,
        labels.clone(),
        json!([{"type": "InternalIP", "address": "192.0.2.10"},
               {"type": "InternalIP", "address": "2001:db8::10"},
               {"type": "Hostname", "address": a}]),
    );
    create_node(
        cp,
        &b,
        labels.clone(),
        json!([{"type": "InternalIP", "address": "192.0.2.11"}]),
    );
    let mut want = vec![
        json!({"name": a, "addresses": ["192.0.2.10", "2001:db8::10"]}),
        json!({"name": b, "addresses": ["192.0.2.11"]}),
    ];
    want.sort_by_key(|v| v["name"].as_str().unwrap().to_string());
    assert_eq!(nodes(), json!({"nodes": want}));

    delete_node(cp, &a);
    create_node(
        cp,
        &c,
        labels,
        json!([{"type": "InternalIP", "address": "192.0.2.12"}]),
    );
    let mut want = vec![
        json!({"name": b, "addresses": ["192.0.2.11"]}),
        json!({"name": c, "addresses": ["192.0.2.12"]}),
    ];
    want.sort_by_key(|v| v["name"].as_str().unwrap().to_string());
    assert_eq!(nodes(), json!({"nodes": want}));
    delete_node(cp, &b);
    delete_node(cp, &c);
    assert_eq!(nodes(), json!({"nodes": []}));
}

/// The kube lane's scale run on the real server: 50 simulated nodes × 20 concurrent ADDs on one /16
/// through the library path the binary takes (`plumb_ipam_kube::ops`, each call on its own thread
/// with its own client, each node with its own `dataDir` and so its own node lock), with the plugin's
/// token; 0 duplicates, each attachment holding exactly its address, then every block empty after
/// the DELs. Prints allocations/s, requests per ADD and the server's 409s and 429s (audit log).
#[test]
fn fifty_nodes_twenty_concurrent_adds_each_then_dels_on_the_real_server() {
    use plumb_cni::args::PodRef;
    use plumb_cni::NetConf;
    use plumb_ipam::alloc::Attachment;
    use plumb_ipam::config::{IpamConfig, Store};
    use plumb_ipam_kube::ops;
    use std::net::IpAddr;
    use std::sync::Barrier;
    const NODES: usize = 50;
    const PER_NODE: usize = 20;

    let r = real();
    let cp = r.cp;
    let _serial = serial();
    let space = unique_name("scale");
    let data = TempDir::new("kreal-scale");
    let nodes: Vec<_> = (0..NODES)
        .map(|n| {
            let name = format!("node-{n:02}");
            let mut conf = net(
                &space,
                "10.70.0.0/16",
                &data.path().join(&name),
                &r.plugin_kubeconfig,
                // A node's 20 ADDs wait for each other on its lock: on a busy 2-CPU machine the last
                // one may wait longer than the defaults, which would measure the machine.
                json!({"lockTimeoutSeconds": 300}),
            );
            conf["ipam"]["kubernetes"]["timeoutSeconds"] = json!(300);
            let conf = NetConf::parse(conf.to_string().as_bytes()).expect("network config");
            let cfg = IpamConfig::from_conf(&conf).expect("ipam config");
            let Store::Kubernetes(mut k) = cfg.store.clone() else {
                panic!("the kubernetes section selects the kubernetes store")
            };
            k.node = name;
            (k, cfg)
        })
        .collect();
    let attachment = |cid: &str| Attachment {
        container_id: cid.to_string(),
        ifname: "eth0".to_string(),
        network: space.clone(),
        pod: PodRef::default(),
    };
    let cid = |n: usize, i: usize| format!("pod-{n:02}-{i:02}");

    let mark = cp.audit_mark();
    let go = Barrier::new(NODES * PER_NODE);
    let started = Instant::now();
    let added: Vec<(String, Result<Vec<IpAddr>, String>, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..NODES)
            .flat_map(|n| (0..PER_NODE).map(move |i| (n, i)))
            .map(|(n, i)| {
                let (go, nodes, attachment, cid) = (&go, &nodes, &attachment, &cid);
                std::thread::Builder::new()
                    .spawn_scoped(s, move || {
                        let c = cid(n, i);
                        go.wait();
                        let t = Instant::now();
                        let res = ops::add(&nodes[n].0, &nodes[n].1, &attachment(&c), &[])
                            .map_err(|e| format!("{e} (code {})", e.code));
                        (c, res, t.elapsed())
                    })
                    .expect("spawn")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    let took = started.elapsed();
    let reqs = requests_of(&cp.audit_events(mark), PLUGIN_USER);
    let code_count = |c: u64| reqs.iter().filter(|(_, _, code)| *code == c).count();
    let mut times: Vec<Duration> = added.iter().map(|a| a.2).collect();
    times.sort();
    let at = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)].as_secs_f64() * 1e3;
    eprintln!(
        "{NODES}x{PER_NODE} ADD: {} in {:.2} s = {:.0} allocations/s; {} requests = {:.2} per ADD; {} conflicts (409), {} throttled (429); ADD time median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        added.len(),
        took.as_secs_f64(),
        added.len() as f64 / took.as_secs_f64(),
        reqs.len(),
        reqs.len() as f64 / added.len() as f64,
        code_count(409),
        code_count(429),
        at(50),
        at(90),
        at(100)
    );
    let failed: Vec<_> = added.iter().filter(|a| a.1.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} ADDs failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let mut handed: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (c, res, _) in &added {
        let ips = res.as_ref().expect("checked above");
        assert_eq!(ips.len(), 1, "{c}: one range, one address");
        if let Some(other) = handed.insert(ips[0], c.clone()) {
            panic!("{} handed to both {other} and {c}", ips[0]);
        }
    }
    // The blocks hold exactly the handed-out addresses, each for its attachment.
    let mut held: BTreeMap<IpAddr, String> = BTreeMap::new();
    for b in blocks(cp, &space) {
        let cidr = b["spec"]["cidr"].as_str().expect("spec.cidr");
        let base: std::net::Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
        let allocs = b["spec"]["allocations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            b["spec"]["used"].as_u64(),
            Some(allocs.len() as u64),
            "{cidr}"
        );
        for (off, a) in allocs {
            let ip = IpAddr::V4((u32::from(base) + off.parse::<u32>().unwrap()).into());
            let who = a["containerID"].as_str().unwrap().to_string();
            assert!(held.insert(ip, who).is_none(), "{ip} twice in the blocks");
        }
    }
    assert_eq!(held, handed);

    let mark = cp.audit_mark();
    let started = Instant::now();
    let deleted: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..NODES)
            .flat_map(|n| (0..PER_NODE).map(move |i| (n, i)))
            .map(|(n, i)| {
                let (nodes, cid) = (&nodes, &cid);
                std::thread::Builder::new()
                    .spawn_scoped(s, move || {
                        ops::del(&nodes[n].0, &nodes[n].1, &cid(n, i), "eth0")
                            .map_err(|e| format!("{e} (code {})", e.code))
                    })
                    .expect("spawn")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    let took = started.elapsed();
    let reqs = requests_of(&cp.audit_events(mark), PLUGIN_USER);
    eprintln!(
        "{NODES}x{PER_NODE} DEL: {} in {:.2} s; {} requests = {:.2} per DEL; {} conflicts (409)",
        deleted.len(),
        took.as_secs_f64(),
        reqs.len(),
        reqs.len() as f64 / deleted.len() as f64,
        reqs.iter().filter(|(_, _, code)| *code == 409).count()
    );
    let failed: Vec<_> = deleted.iter().filter(|d| d.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} DELs failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let left = usage(cp, &space);
    assert!(
        left.len() >= NODES,
        "every node claimed a block: {}",
        left.len()
    );
    assert!(left.iter().all(|(_, used)| *used == 0), "{left:?}");
    assert!(holders(cp, &space).is_empty());
}
