//! The test API server exercised with plain HTTP/1.1 requests.

mod common;

use common::*;
use plumb_kubeapi::{Options, Resource, TestApiServer, Verb};
use serde_json::json;
use std::io::Read;

fn start() -> (TestApiServer, Conn) {
    let server = TestApiServer::start(Options::default()).unwrap();
    let conn = Conn::connect(server.addr());
    (server, conn)
}

#[test]
fn ipblock_crud_and_status_objects() {
    let (server, mut c) = start();
    let r = c.post(IPB, &ipblock("b1", "10.0.0.0/24"));
    assert_eq!(r.status, 201, "{}", r.json());
    let created = r.json();
    assert_eq!(created["kind"], "IPBlock");
    assert_eq!(created["apiVersion"], "plumb.dev/v1alpha1");
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["metadata"]["uid"].as_str().unwrap().len(), 36);
    let ts = created["metadata"]["creationTimestamp"].as_str().unwrap();
    assert!(
        ts.len() == 20 && ts.ends_with('Z') && &ts[10..11] == "T",
        "{ts}"
    );
    assert!(created["metadata"].get("namespace").is_none());
    let rv1 = rv(&created);

    let got = c.get(&format!("{IPB}/b1"));
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), created);

    let list = c.get(IPB).json();
    assert_eq!(list["kind"], "IPBlockList");
    assert_eq!(list["apiVersion"], "plumb.dev/v1alpha1");
    assert_eq!(list["metadata"]["resourceVersion"], rv1.to_string());
    assert_eq!(list["items"][0]["kind"], "IPBlock");
    assert_eq!(list["items"][0]["apiVersion"], "plumb.dev/v1alpha1");

    // Replace with the current resourceVersion.
    let mut upd = created.clone();
    upd["spec"]["cidr"] = json!("10.0.1.0/24");
    let r = c.put(&format!("{IPB}/b1"), &upd);
    assert_eq!(r.status, 200, "{}", r.json());
    let updated = r.json();
    assert!(rv(&updated) > rv1);
    assert_eq!(updated["metadata"]["generation"], 2);
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);

    // Stale resourceVersion: 409 Conflict with the real Status shape.
    let r = c.put(&format!("{IPB}/b1"), &upd);
    let st = assert_status(&r, 409, "Conflict");
    assert_eq!(
        st["details"],
        json!({"name": "b1", "group": "plumb.dev", "kind": "ipblocks"})
    );
    assert_eq!(
        st["message"],
        "Operation cannot be fulfilled on ipblocks.plumb.dev \"b1\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(st["metadata"], json!({}));

    // Custom resources need a resourceVersion on PUT.
    let mut no_rv = updated.clone();
    no_rv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let st = assert_status(&c.put(&format!("{IPB}/b1"), &no_rv), 422, "Invalid");
    assert_eq!(
        st["details"]["causes"][0]["field"],
        "metadata.resourceVersion"
    );

    // A PUT that changes nothing keeps the resourceVersion.
    let r = c.put(&format!("{IPB}/b1"), &updated);
    assert_eq!(r.status, 200);
    assert_eq!(rv(&r.json()), rv(&updated));

    // AlreadyExists.
    let st = assert_status(
        &c.post(IPB, &ipblock("b1", "10.9.0.0/24")),
        409,
        "AlreadyExists",
    );
    assert_eq!(st["message"], "ipblocks.plumb.dev \"b1\" already exists");

    // Delete returns the object; afterwards 404 everywhere.
    let r = c.delete(&format!("{IPB}/b1"), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["metadata"]["name"], "b1");
    let st = assert_status(&c.get(&format!("{IPB}/b1")), 404, "NotFound");
    assert_eq!(st["message"], "ipblocks.plumb.dev \"b1\" not found");
    assert_eq!(
        st["details"],
        json!({"name": "b1", "group": "plumb.dev", "kind": "ipblocks"})
    );
    assert_status(&c.delete(&format!("{IPB}/b1"), None), 404, "NotFound");
    assert_status(&c.put(&format!("{IPB}/b1"), &updated), 404, "NotFound");
    assert!(server.objects(Resource::IpBlocks).is_empty());
    // The list resourceVersion moved past the delete.
    assert!(rv(&c.get(IPB).json()) > rv(&updated));
}

#[test]
fn bad_requests() {
    let (_server, mut c) = start();
    let r = c
        .request_with("POST", IPB, &[], Some(b"{not json"))
        .unwrap();
    assert_status(&r, 400, "BadRequest");
    let r = c.request_with("POST", IPB, &[], Some(b"[1]")).unwrap();
    assert_status(&r, 400, "BadRequest");
    let mut b = ipblock("x", "10.0.0.0/24");
    b["apiVersion"] = json!("plumb.dev/v1");
    let st = assert_status(&c.post(IPB, &b), 400, "BadRequest");
    assert!(st["message"].as_str().unwrap().contains("API version"));
    let mut b = ipblock("x", "10.0.0.0/24");
    b["kind"] = json!("Pod");
    assert_status(&c.post(IPB, &b), 400, "BadRequest");
    let mut b = ipblock("x", "10.0.0.0/24");
    b["metadata"]["labels"] = json!({"a": 1});
    assert_status(&c.post(IPB, &b), 400, "BadRequest");
    // Missing kind/apiVersion are defaulted from the URL, as the real server does.
    let r = c.post(IPB, &json!({"metadata": {"name": "defaulted"}, "spec": {}}));
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["kind"], "IPBlock");
    // Invalid names and labels: 422.
    assert_status(
        &c.post(IPB, &ipblock("Upper", "10.0.0.0/24")),
        422,
        "Invalid",
    );
    let mut b = ipblock("ok", "10.0.0.0/24");
    b["metadata"]["labels"] = json!({"a": "has space"});
    assert_status(&c.post(IPB, &b), 422, "Invalid");
    assert_status(&c.post(IPB, &json!({"metadata": {}})), 422, "Invalid");
    // resourceVersion on create: 500 like etcd3 storage.
    let mut b = ipblock("rv", "10.0.0.0/24");
    b["metadata"]["resourceVersion"] = json!("5");
    assert_status(&c.post(IPB, &b), 500, "InternalError");
    // Name in body differs from the URL.
    let st = assert_status(
        &c.put(&format!("{IPB}/other"), &ipblock("defaulted", "1")),
        400,
        "BadRequest",
    );
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("does not match the name on the URL"));
    // Wrong content type: 415.
    let r = c
        .request_with(
            "POST",
            IPB,
            &[("Content-Type", "application/yaml")],
            Some(b"{}"),
        )
        .unwrap();
    assert_status(&r, 415, "UnsupportedMediaType");
    // Unknown paths, wrong scope, wrong method.
    assert_status(
        &c.get("/apis/plumb.dev/v1alpha1/namespaces/x/ipblocks"),
        404,
        "NotFound",
    );
    assert_status(&c.get("/api/v1/services"), 404, "NotFound");
    assert_status(
        &c.post("/api/v1/pods", &pod("a", "p", "n", "Pending")),
        405,
        "MethodNotAllowed",
    );
    // Watch is not implemented.
    let st = assert_status(&c.get(&format!("{IPB}?watch=true")), 501, "NotImplemented");
    assert!(st["message"].as_str().unwrap().contains("watch"));
    // Bad selectors.
    assert_status(
        &c.get(&format!("{IPB}?labelSelector=a%20b")),
        400,
        "BadRequest",
    );
    assert_status(
        &c.get(&format!("{IPB}?fieldSelector=spec.cidr%3Dx")),
        400,
        "BadRequest",
    );
    assert_status(
        &c.get("/api/v1/nodes?fieldSelector=spec.nodeName%3Dx"),
        400,
        "BadRequest",
    );
    // Garbage on the wire: 400 and the connection is closed.
    let mut raw = Conn::connect(_server.addr());
    raw.send_raw(b"NONSENSE\r\n\r\n").unwrap();
    assert_status(&raw.read_response().unwrap(), 400, "BadRequest");
    assert!(raw.read_response().is_err());
}

#[test]
fn pods_selectors_and_status() {
    let (server, mut c) = start();
    for (ns, name, node, phase) in [
        ("ns1", "a", "node-a", "Running"),
        ("ns1", "b", "node-b", "Pending"),
        ("ns2", "c", "node-a", "Running"),
        ("ns2", "d", "", "Pending"),
    ] {
        let r = c.post(
            &format!("/api/v1/namespaces/{ns}/pods"),
            &pod(ns, name, node, phase),
        );
        assert_eq!(r.status, 201, "{}", r.json());
        assert_eq!(r.json()["status"]["phase"], phase);
    }
    let all = c.get("/api/v1/pods").json();
    assert_eq!(all["kind"], "PodList");
    assert_eq!(names(&all), ["a", "b", "c", "d"]);
    let on_a = c
        .get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a")
        .json();
    assert_eq!(names(&on_a), ["a", "c"]);
    let unscheduled = c.get("/api/v1/pods?fieldSelector=spec.nodeName%3D").json();
    assert_eq!(names(&unscheduled), ["d"]);
    let q = "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a%2Cmetadata.namespace%21%3Dns1";
    assert_eq!(names(&c.get(q).json()), ["c"]);
    let running = c
        .get("/api/v1/namespaces/ns2/pods?fieldSelector=status.phase%3DRunning")
        .json();
    assert_eq!(names(&running), ["c"]);
    assert_eq!(
        names(&c.get("/api/v1/namespaces/ns1/pods").json()),
        ["a", "b"]
    );
    assert_eq!(
        names(&c.get("/api/v1/pods?labelSelector=app%3Db").json()),
        ["b"]
    );
    assert_eq!(
        names(&c.get("/api/v1/pods?labelSelector=app%20in%20(a,d)").json()),
        ["a", "d"]
    );
    let byname = c.get("/api/v1/pods?fieldSelector=metadata.name%3Dd").json();
    assert_eq!(names(&byname), ["d"]);
    // Namespace mismatch between URL and body.
    assert_status(
        &c.post(
            "/api/v1/namespaces/ns1/pods",
            &pod("ns2", "x", "", "Pending"),
        ),
        400,
        "BadRequest",
    );
    // Namespace filled in from the URL.
    let mut p = pod("", "e", "", "Pending");
    p["metadata"].as_object_mut().unwrap().remove("namespace");
    let r = c.post("/api/v1/namespaces/ns3/pods", &p);
    assert_eq!(r.json()["metadata"]["namespace"], "ns3");

    // Pods allow unconditional PUT; status is ignored on the main resource;
    // spec is mostly immutable.
    let mut cur = c.get("/api/v1/namespaces/ns1/pods/b").json();
    cur["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    cur["metadata"]["labels"]["extra"] = json!("1");
    cur["status"]["phase"] = json!("Succeeded");
    let r = c.put("/api/v1/namespaces/ns1/pods/b", &cur);
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["status"]["phase"], "Pending");
    assert_eq!(r.json()["metadata"]["labels"]["extra"], "1");
    let mut moved = r.json();
    moved["spec"]["nodeName"] = json!("node-z");
    assert_status(
        &c.put("/api/v1/namespaces/ns1/pods/b", &moved),
        422,
        "Invalid",
    );
    // The status subresource changes only status.
    let mut st = r.json();
    st["status"]["phase"] = json!("Running");
    st["metadata"]["labels"]["ignored"] = json!("x");
    let r = c.put("/api/v1/namespaces/ns1/pods/b/status", &st);
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["status"]["phase"], "Running");
    assert!(r.json()["metadata"]["labels"].get("ignored").is_none());
    let obj = server.object(Resource::Pods, Some("ns1"), "b").unwrap();
    assert_eq!(obj["status"]["phase"], "Running");
    // Pod delete.
    assert_eq!(c.delete("/api/v1/namespaces/ns1/pods/b", None).status, 200);
    assert_status(&c.get("/api/v1/namespaces/ns1/pods/b"), 404, "NotFound");
    let st = assert_status(&c.get("/api/v1/namespaces/ns1/pods/zz"), 404, "NotFound");
    assert_eq!(st["message"], "pods \"zz\" not found");
    assert_eq!(st["details"], json!({"name": "zz", "kind": "pods"}));
}

#[test]
fn nodes_and_label_selectors() {
    let (_server, mut c) = start();
    for (name, labels) in [
        ("n1", json!({"zone": "a", "gpu": "true"})),
        ("n2", json!({"zone": "b"})),
        ("n3", json!({"zone": "a", "tier": "5"})),
    ] {
        assert_eq!(c.post("/api/v1/nodes", &node(name, labels)).status, 201);
    }
    let sel =
        |c: &mut Conn, s: &str| names(&c.get(&format!("/api/v1/nodes?labelSelector={s}")).json());
    assert_eq!(sel(&mut c, "zone%3Da"), ["n1", "n3"]);
    assert_eq!(sel(&mut c, "zone%3D%3Da"), ["n1", "n3"]);
    assert_eq!(sel(&mut c, "zone%21%3Da"), ["n2"]);
    assert_eq!(sel(&mut c, "gpu"), ["n1"]);
    assert_eq!(sel(&mut c, "%21gpu"), ["n2", "n3"]);
    assert_eq!(sel(&mut c, "zone%3Da%2C%21gpu"), ["n3"]);
    assert_eq!(sel(&mut c, "zone%20notin%20(a)"), ["n2"]);
    assert_eq!(sel(&mut c, "tier%3E4"), ["n3"]);
    assert_eq!(sel(&mut c, "zone=a,gpu=true"), ["n1"]);
    let list = c.get("/api/v1/nodes").json();
    assert_eq!(list["kind"], "NodeList");
    assert_eq!(list["apiVersion"], "v1");
    let n1 = c.get("/api/v1/nodes/n1").json();
    assert_eq!(n1["kind"], "Node");
    assert!(n1["metadata"].get("generation").is_none());
    // Namespaces on cluster-scoped objects are cleared.
    let mut n4 = node("n4", json!({}));
    n4["metadata"]["namespace"] = json!("default");
    let r = c.post("/api/v1/nodes", &n4);
    assert!(r.json()["metadata"].get("namespace").is_none());
    // podCIDR may go from empty to set, but not change afterwards.
    let mut cur = r.json();
    cur["spec"]["podCIDR"] = json!("10.244.4.0/24");
    let r = c.put("/api/v1/nodes/n4", &cur);
    assert_eq!(r.status, 200, "{}", r.json());
    let mut cur = r.json();
    cur["spec"]["podCIDR"] = json!("10.244.5.0/24");
    assert_status(&c.put("/api/v1/nodes/n4", &cur), 422, "Invalid");
    assert_eq!(c.delete("/api/v1/nodes/n4", None).status, 200);
    assert_status(&c.get("/api/v1/nodes/n4"), 404, "NotFound");
    assert_status(
        &c.get("/api/v1/namespaces/default/nodes/n1"),
        404,
        "NotFound",
    );
}

#[test]
fn resource_versions_are_one_monotonic_counter() {
    let (server, mut c) = start();
    let mut last = 0;
    for i in 0..20 {
        let r = match i % 3 {
            0 => c.post(IPB, &ipblock(&format!("b{i}"), "10.0.0.0/24")),
            1 => c.post("/api/v1/nodes", &node(&format!("n{i}"), json!({}))),
            _ => c.post(
                "/api/v1/namespaces/x/pods",
                &pod("x", &format!("p{i}"), "", "Pending"),
            ),
        };
        assert_eq!(r.status, 201);
        let v = rv(&r.json());
        assert!(v > last, "{v} after {last}");
        last = v;
    }
    let r = c.patch(
        &format!("{IPB}/b0"),
        "application/merge-patch+json",
        &json!({"spec": {"x": 1}}),
    );
    assert!(rv(&r.json()) > last);
    last = rv(&r.json());
    c.delete("/api/v1/nodes/n1", None);
    let list_rv = rv(&c.get("/api/v1/pods").json());
    assert!(list_rv > last);
    assert_eq!(list_rv, server.resource_version());
    // Every list reports the same global counter.
    assert_eq!(rv(&c.get(IPB).json()), list_rv);
    assert_eq!(rv(&c.get("/api/v1/nodes").json()), list_rv);
}

#[test]
fn patches() {
    let (_server, mut c) = start();
    let created = c.post(IPB, &ipblock("p", "10.0.0.0/24")).json();
    let path = format!("{IPB}/p");
    let r = c.patch(
        &path,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"pool": null, "x": "y"}}, "spec": {"cidr": "10.1.0.0/24"}}),
    );
    assert_eq!(r.status, 200, "{}", r.json());
    let v = r.json();
    assert_eq!(v["metadata"]["labels"], json!({"x": "y"}));
    assert_eq!(v["spec"], json!({"cidr": "10.1.0.0/24", "node": "node-a"}));
    // A merge patch naming a stale resourceVersion conflicts.
    let stale = json!({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"cidr": "x"}});
    assert_status(
        &c.patch(&path, "application/merge-patch+json", &stale),
        409,
        "Conflict",
    );
    // ... and one naming the current one succeeds.
    let fresh = json!({"metadata": {"resourceVersion": v["metadata"]["resourceVersion"]}, "spec": {"cidr": "10.2.0.0/24"}});
    let r = c.patch(&path, "application/merge-patch+json", &fresh);
    assert_eq!(r.status, 200);
    let r = c.patch(
        &path,
        "application/json-patch+json",
        &json!([{"op": "test", "path": "/spec/cidr", "value": "10.2.0.0/24"},
                 {"op": "replace", "path": "/spec/cidr", "value": "10.3.0.0/24"},
                 {"op": "add", "path": "/metadata/finalizers", "value": ["plumb.dev/ipam"]}]),
    );
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["spec"]["cidr"], "10.3.0.0/24");
    assert_eq!(r.json()["metadata"]["generation"], 4);
    let r = c.patch(
        &path,
        "application/json-patch+json",
        &json!([{"op": "test", "path": "/spec/cidr", "value": "nope"}]),
    );
    assert_status(&r, 422, "Invalid");
    let r = c.patch(&path, "application/json-patch+json", &json!({"op": "add"}));
    assert_status(&r, 400, "BadRequest");
    let r = c.patch(&path, "application/strategic-merge-patch+json", &json!({}));
    assert_status(&r, 415, "UnsupportedMediaType");
    let r = c.patch(&path, "application/apply-patch+yaml", &json!({}));
    assert_status(&r, 415, "UnsupportedMediaType");
    let r = c.patch(
        &path,
        "application/merge-patch+json",
        &json!({"metadata": {"name": "renamed"}}),
    );
    assert_status(&r, 400, "BadRequest");
    let r = c.patch(
        &format!("{IPB}/missing"),
        "application/merge-patch+json",
        &json!({}),
    );
    assert_status(&r, 404, "NotFound");
    // Finalizer: delete marks, removing the finalizer deletes.
    let r = c.delete(&path, None);
    assert_eq!(r.status, 200);
    assert!(r.json()["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(c.get(&path).status, 200);
    let r = c.patch(
        &path,
        "application/merge-patch+json",
        &json!({"metadata": {"finalizers": ["plumb.dev/ipam", "other.io/x"]}}),
    );
    assert_status(&r, 422, "Invalid");
    let r = c.patch(
        &path,
        "application/merge-patch+json",
        &json!({"metadata": {"finalizers": null}}),
    );
    assert_eq!(r.status, 200);
    assert_status(&c.get(&path), 404, "NotFound");
}

#[test]
fn delete_preconditions_and_dry_run() {
    let (server, mut c) = start();
    let b = c.post(IPB, &ipblock("d", "10.0.0.0/24")).json();
    let path = format!("{IPB}/d");
    let st = assert_status(
        &c.delete(&path, Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": "1234567"}}))),
        409,
        "Conflict",
    );
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("Precondition failed"));
    assert_status(
        &c.delete(&path, Some(&json!({"preconditions": {"uid": "nope"}}))),
        409,
        "Conflict",
    );
    // Dry run deletes nothing, nor does a dry-run create store anything.
    assert_eq!(c.delete(&format!("{path}?dryRun=All"), None).status, 200);
    assert_eq!(
        c.delete(&path, Some(&json!({"dryRun": ["All"]}))).status,
        200
    );
    assert_eq!(
        c.post(&format!("{IPB}?dryRun=All"), &ipblock("dry", "1"))
            .status,
        201
    );
    assert_eq!(server.objects(Resource::IpBlocks).len(), 1);
    let r = c.delete(&path, Some(&json!({"preconditions": {"resourceVersion": b["metadata"]["resourceVersion"], "uid": b["metadata"]["uid"]}})));
    assert_eq!(r.status, 200);
    assert!(server.objects(Resource::IpBlocks).is_empty());
    // generateName.
    let r = c.post(
        IPB,
        &json!({"metadata": {"generateName": "blk-"}, "spec": {}}),
    );
    assert_eq!(r.status, 201);
    let name = r.json()["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("blk-") && name.len() == 9, "{name}");
    // deletecollection with a selector.
    for n in ["x1", "x2", "y1"] {
        let mut b = ipblock(n, "1");
        b["metadata"]["labels"] = json!({"grp": &n[..1]});
        c.post(IPB, &b);
    }
    let r = c.delete(&format!("{IPB}?labelSelector=grp%3Dx"), None);
    assert_eq!(names(&r.json()), ["x1", "x2"]);
    assert_eq!(server.objects(Resource::IpBlocks).len(), 2);
}

#[test]
fn pagination() {
    let (_server, mut c) = start();
    for i in 0..7 {
        c.post("/api/v1/nodes", &node(&format!("n{i}"), json!({})));
    }
    let mut seen = Vec::new();
    let mut cont = String::new();
    let mut pages = 0;
    loop {
        let r = c
            .get(&format!("/api/v1/nodes?limit=3&continue={cont}"))
            .json();
        seen.extend(names(&r));
        pages += 1;
        match r["metadata"]["continue"].as_str() {
            Some(t) => {
                assert!(r["metadata"]["remainingItemCount"].as_u64().unwrap() > 0);
                cont = t.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (0..7).map(|i| format!("n{i}")).collect::<Vec<_>>());
    assert_status(
        &c.get("/api/v1/nodes?limit=3&continue=garbage"),
        400,
        "BadRequest",
    );
    assert_status(&c.get("/api/v1/nodes?limit=x"), 400, "BadRequest");
}

#[test]
fn bearer_token() {
    let server = TestApiServer::start(Options {
        token: Some("s3cret".into()),
        ..Options::default()
    })
    .unwrap();
    let mut c = Conn::connect(server.addr());
    let st = assert_status(&c.get("/api/v1/nodes"), 401, "Unauthorized");
    assert_eq!(st["message"], "Unauthorized");
    c.token = Some("wrong".into());
    assert_status(&c.get("/api/v1/nodes"), 401, "Unauthorized");
    c.token = Some("s3cret".into());
    assert_eq!(c.get("/api/v1/nodes").status, 200);
    server.set_token(Some("rotated"));
    assert_status(&c.get("/api/v1/nodes"), 401, "Unauthorized");
    c.token = Some("rotated".into());
    assert_eq!(c.get("/api/v1/nodes").status, 200);
    assert_eq!(server.counts().unauthorized, 3);
}

#[test]
fn chunked_body_keep_alive_and_close() {
    let (server, mut c) = start();
    // A chunked POST, then more requests on the same connection.
    let body = ipblock("chunky", "10.0.0.0/24").to_string();
    let (a, b) = body.split_at(10);
    let raw = format!(
        "POST {IPB} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    c.send_raw(raw.as_bytes()).unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    for _ in 0..5 {
        assert_eq!(c.get(&format!("{IPB}/chunky")).status, 200);
    }
    // Pipelined requests are answered in order.
    c.send_raw(format!("GET {IPB}/chunky HTTP/1.1\r\nHost: x\r\n\r\nGET {IPB}/none HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(c.read_response().unwrap().status, 200);
    assert_eq!(c.read_response().unwrap().status, 404);
    // Expect: 100-continue is honoured.
    let body = ipblock("cont", "1").to_string();
    let r = c
        .request_with(
            "POST",
            IPB,
            &[("Expect", "100-continue")],
            Some(body.as_bytes()),
        )
        .unwrap();
    assert_eq!(r.status, 201);
    // Connection: close ends the connection after the response.
    let r = c
        .request_with("GET", IPB, &[("Connection", "close")], None)
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.read_response().is_err());
    // All of that was one connection for the counters too.
    assert_eq!(server.counts().get(Resource::IpBlocks, Verb::Get), 7);
    assert_eq!(server.counts().get(Resource::IpBlocks, Verb::Create), 2);
    // HTTP/1.0 without keep-alive closes too.
    let mut c2 = Conn::connect(server.addr());
    c2.send_raw(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let r = c2.read_response().unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));
    assert!(c2.read_response().is_err());
}

#[test]
fn counters_and_request_log() {
    let server = TestApiServer::start(Options {
        log_capacity: 5,
        ..Options::default()
    })
    .unwrap();
    let mut c = Conn::connect(server.addr());
    c.post(IPB, &ipblock("c", "1"));
    c.get(&format!("{IPB}/c"));
    c.get(&format!("{IPB}/c"));
    c.get(IPB);
    c.patch(
        &format!("{IPB}/c"),
        "application/merge-patch+json",
        &json!({}),
    );
    let cur = c.get(&format!("{IPB}/c")).json();
    c.put(&format!("{IPB}/c"), &cur);
    c.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dn");
    c.delete(&format!("{IPB}/c"), None);
    c.get("/apis");
    let n = server.counts();
    assert_eq!(n.get(Resource::IpBlocks, Verb::Create), 1);
    assert_eq!(n.get(Resource::IpBlocks, Verb::Get), 3);
    assert_eq!(n.get(Resource::IpBlocks, Verb::List), 1);
    assert_eq!(n.get(Resource::IpBlocks, Verb::Patch), 1);
    assert_eq!(n.get(Resource::IpBlocks, Verb::Update), 1);
    assert_eq!(n.get(Resource::IpBlocks, Verb::Delete), 1);
    assert_eq!(n.get(Resource::Pods, Verb::List), 1);
    assert_eq!(n.verb(Verb::List), 2);
    assert_eq!(n.resource(Resource::IpBlocks), 8);
    assert_eq!(n.total(), 9);
    assert_eq!(n.other, 1);
    let log = server.requests();
    assert_eq!(log.len(), 5);
    let last = &log[4];
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.status),
        ("GET", "/apis", 200)
    );
    let pods = &log[2];
    assert_eq!(pods.path, "/api/v1/pods");
    assert_eq!(pods.query, "fieldSelector=spec.nodeName%3Dn");
    assert_eq!(pods.target, Some((Resource::Pods, Verb::List)));
    assert_eq!(log[3].status, 200);
    assert!(log.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    server.reset_counts();
    assert_eq!(server.counts().total(), 0);
    server.clear_requests();
    assert!(server.requests().is_empty());
}

#[test]
fn discovery_documents() {
    let (server, mut c) = start();
    let v = c.get("/api").json();
    assert_eq!(v["kind"], "APIVersions");
    assert_eq!(v["versions"], json!(["v1"]));
    let v = c.get("/api/v1").json();
    assert_eq!(v["kind"], "APIResourceList");
    let pods = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .unwrap()
        .clone();
    assert_eq!(pods["namespaced"], true);
    let v = c.get("/apis").json();
    assert_eq!(v["groups"][0]["name"], "plumb.dev");
    assert_eq!(
        v["groups"][0]["preferredVersion"]["groupVersion"],
        "plumb.dev/v1alpha1"
    );
    let v = c.get("/apis/plumb.dev/v1alpha1").json();
    assert_eq!(v["groupVersion"], "plumb.dev/v1alpha1");
    assert_eq!(
        v["resources"][0],
        json!({"name": "ipblocks", "singularName": "ipblock", "namespaced": false, "kind": "IPBlock",
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update"]})
    );
    assert_eq!(c.get("/version").json()["major"], "1");
    assert_eq!(c.get("/healthz").body, b"ok");
    // Status subresource for IPBlocks only when asked for.
    assert_status(&c.get(&format!("{IPB}/x/status")), 404, "NotFound");
    drop(server);
    let server = TestApiServer::start(Options {
        ipblock_status_subresource: true,
        ..Options::default()
    })
    .unwrap();
    let mut c = Conn::connect(server.addr());
    let mut b = ipblock("s", "1");
    b["status"] = json!({"allocated": 3});
    let created = c.post(IPB, &b).json();
    let mut upd = created.clone();
    upd["status"] = json!({"allocated": 9});
    upd["spec"]["cidr"] = json!("2");
    let r = c.put(&format!("{IPB}/s"), &upd).json();
    assert_eq!(r["status"]["allocated"], 3);
    assert_eq!(r["spec"]["cidr"], "2");
    let r = c.patch(
        &format!("{IPB}/s/status"),
        "application/merge-patch+json",
        &json!({"status": {"allocated": 4}, "spec": {"cidr": "ignored"}}),
    );
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["status"]["allocated"], 4);
    assert_eq!(r.json()["spec"]["cidr"], "2");
    assert_eq!(r.json()["metadata"]["generation"], 2);
}

#[test]
fn direct_manipulation() {
    let (server, mut c) = start();
    let n = server
        .put_object(Resource::Nodes, node("direct", json!({"k": "v"})))
        .unwrap();
    assert_eq!(n["kind"], "Node");
    assert!(n["metadata"]["uid"].is_string());
    let p = server
        .put_object(Resource::Pods, pod("ns", "running", "direct", "Running"))
        .unwrap();
    assert_eq!(c.get("/api/v1/namespaces/ns/pods/running").json(), p);
    // Replacing keeps uid/creationTimestamp and bumps resourceVersion.
    let mut p2 = pod("ns", "running", "direct", "Succeeded");
    p2["metadata"]["labels"]["x"] = json!("y");
    let p2 = server.put_object(Resource::Pods, p2).unwrap();
    assert_eq!(p2["metadata"]["uid"], p["metadata"]["uid"]);
    assert!(rv(&p2) > rv(&p));
    assert!(server
        .put_object(Resource::Pods, json!({"metadata": {"name": "x"}}))
        .is_err());
    assert!(server
        .put_object(
            Resource::Nodes,
            json!({"kind": "Pod", "metadata": {"name": "x"}})
        )
        .is_err());
    assert_eq!(server.objects(Resource::Pods).len(), 1);
    assert!(server
        .delete_object(Resource::Pods, Some("ns"), "running")
        .is_some());
    assert!(server
        .delete_object(Resource::Pods, Some("ns"), "running")
        .is_none());
    assert_status(
        &c.get("/api/v1/namespaces/ns/pods/running"),
        404,
        "NotFound",
    );
    // No counters for direct access.
    assert_eq!(server.counts().get(Resource::Pods, Verb::Create), 0);
}

#[test]
fn stop_closes_connections() {
    let (mut server, mut c) = start();
    assert_eq!(c.get("/healthz").status, 200);
    let addr = server.addr();
    server.stop();
    server.stop();
    let mut buf = [0u8; 1];
    let mut raw = std::net::TcpStream::connect(addr);
    if let Ok(s) = raw.as_mut() {
        // Possibly accepted by the OS backlog of a closing socket; nothing answers.
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    }
    assert!(c.request_with("GET", "/healthz", &[], None).is_err());
}
