//! kube-rs compatibility: a real `kube::Client` built from the kubeconfig the
//! server writes talks to it over HTTP/1.1 (hyper, plain http://).

mod common;

use common::{ipblock, node};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client, Config};
use plumb_kubeapi::{FaultKind, FaultRule, Faults, Options, Resource, TestApiServer, Verb};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn kubeconfig_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "plumb-kubeapi-{}-{tag}.kubeconfig",
        std::process::id()
    ))
}

async fn client_for(server: &TestApiServer, tag: &str, token: Option<&str>) -> Client {
    let path = kubeconfig_path(tag);
    server.write_kubeconfig(&path, token).unwrap();
    let kc = Kubeconfig::read_from(&path).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    let _ = std::fs::remove_file(&path);
    assert_eq!(config.default_namespace, "default");
    Client::try_from(config).expect("client")
}

fn api_error(err: kube::Error) -> Box<kube::core::Status> {
    match err {
        kube::Error::Api(s) => s,
        other => panic!("expected kube::Error::Api, got {other:?}"),
    }
}

fn ipblock_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("plumb.dev", "v1alpha1", "IPBlock"))
}

#[tokio::test(flavor = "current_thread")]
async fn kube_client_nodes_pods_ipblocks() {
    let server = TestApiServer::start(Options {
        token: Some("t0ken".into()),
        ..Options::default()
    })
    .unwrap();
    server
        .put_object(Resource::Nodes, node("node-a", json!({"zone": "a"})))
        .unwrap();
    server
        .put_object(Resource::Nodes, node("node-b", json!({"zone": "b"})))
        .unwrap();
    let client = client_for(&server, "main", Some("t0ken")).await;

    let info = client.apiserver_version().await.expect("version");
    assert_eq!(info.major, "1");

    // Nodes: list with a label selector.
    let nodes: Api<Node> = Api::all(client.clone());
    let all = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 2);
    assert!(all.metadata.resource_version.is_some());
    let zone_a = nodes
        .list(&ListParams::default().labels("zone=a"))
        .await
        .unwrap();
    let names: Vec<_> = zone_a
        .items
        .iter()
        .map(|n| n.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["node-a"]);

    // Pods: create (status stored as given), get, list by node, delete.
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p1", "labels": {"app": "x"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.5"}
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert!(created.metadata.uid.is_some());
    assert_eq!(
        created.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    let got = pods.get("p1").await.unwrap();
    assert_eq!(
        got.metadata.resource_version,
        created.metadata.resource_version
    );
    let on_a = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .unwrap();
    assert_eq!(on_a.items.len(), 1);
    let none = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields("spec.nodeName=node-b"))
        .await
        .unwrap();
    assert!(none.items.is_empty());
    let e = api_error(pods.create(&PostParams::default(), &pod).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert!(e.is_already_exists());
    let bad = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields("spec.bogus=1"))
        .await
        .unwrap_err();
    assert_eq!(api_error(bad).code, 400);
    let deleted = pods.delete("p1", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_left(), "the deleted object is returned");
    let e = api_error(pods.get("p1").await.unwrap_err());
    assert_eq!(e.code, 404);
    assert!(e.is_not_found());
    assert_eq!(pods.get_opt("p1").await.unwrap(), None);

    // IPBlocks through DynamicObject: create, replace, stale replace → 409.
    let ar = ipblock_resource();
    assert_eq!(ar.plural, "ipblocks");
    let blocks: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let obj = DynamicObject::new("b1", &ar).data(json!({"spec": {"cidr": "10.1.0.0/24"}}));
    let created = blocks.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let mut upd = created.clone();
    upd.data["spec"]["cidr"] = json!("10.2.0.0/24");
    let replaced = blocks
        .replace("b1", &PostParams::default(), &upd)
        .await
        .unwrap();
    let (old_rv, new_rv) = (
        created.metadata.resource_version.clone().unwrap(),
        replaced.metadata.resource_version.clone().unwrap(),
    );
    assert!(new_rv.parse::<u64>().unwrap() > old_rv.parse::<u64>().unwrap());
    assert_eq!(replaced.data["spec"]["cidr"], "10.2.0.0/24");
    let e = api_error(
        blocks
            .replace("b1", &PostParams::default(), &upd)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.is_conflict());
    let details = e.details.as_ref().expect("details");
    assert_eq!(details.name, "b1");
    assert_eq!(details.group, "plumb.dev");
    // Merge patch and a listing by label.
    let patched = blocks
        .patch(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"pool": "p"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["pool"], "p");
    let listed = blocks
        .list(&ListParams::default().labels("pool=p"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].types.as_ref().unwrap().kind, "IPBlock");
    // Delete with a stale precondition, then for real.
    let stale = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some(old_rv),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    let e = api_error(blocks.delete("b1", &stale).await.unwrap_err());
    assert_eq!(e.code, 409);
    blocks.delete("b1", &DeleteParams::default()).await.unwrap();
    assert!(server.objects(Resource::IpBlocks).is_empty());

    // The same objects are visible through the test hooks.
    let counts = server.counts();
    assert_eq!(counts.get(Resource::IpBlocks, Verb::Update), 2);
    assert_eq!(counts.get(Resource::Pods, Verb::Create), 2);
    assert_eq!(counts.unauthorized, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn kube_client_sees_auth_and_faults() {
    let server = TestApiServer::start(Options {
        token: Some("good".into()),
        ..Options::default()
    })
    .unwrap();
    server
        .put_object(Resource::IpBlocks, ipblock("f", "10.0.0.0/24"))
        .unwrap();
    let ar = ipblock_resource();

    // Wrong token → 401 as kube::Error::Api.
    let bad = client_for(&server, "bad", Some("bad")).await;
    let e = api_error(
        Api::<Node>::all(bad)
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));

    let client = client_for(&server, "good", Some("good")).await;
    let blocks: Api<DynamicObject> = Api::all_with(client.clone(), &ar);

    // An injected 409 on a write.
    server.set_faults(Faults {
        seed: 1,
        rules: vec![FaultRule::new(FaultKind::Conflict, 1.0).max_hits(1)],
        ..Faults::default()
    });
    let cur = blocks.get("f").await.unwrap();
    let e = api_error(
        blocks
            .replace("f", &PostParams::default(), &cur)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);

    // A 500 is surfaced, not retried.
    server.set_faults(Faults {
        seed: 1,
        rules: vec![FaultRule::new(FaultKind::InternalError, 1.0).max_hits(1)],
        ..Faults::default()
    });
    let e = api_error(blocks.get("f").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));

    // kube 5's default retry policy retries a 429 after Retry-After (1 s).
    server.reset_counts();
    server.set_faults(Faults {
        seed: 1,
        rules: vec![FaultRule::new(FaultKind::TooManyRequests, 1.0).max_hits(1)],
        ..Faults::default()
    });
    let t = Instant::now();
    blocks.get("f").await.expect("retried after the 429");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(server.counts().get(Resource::IpBlocks, Verb::Get), 2);

    // A dropped connection is a transport error, not an API error.
    server.set_faults(Faults {
        seed: 1,
        rules: vec![FaultRule::new(FaultKind::DropConnection, 1.0).max_hits(1)],
        ..Faults::default()
    });
    match blocks.get("f").await {
        Err(kube::Error::Api(s)) => panic!("unexpected API error {s:?}"),
        Err(_) => {}
        Ok(_) => panic!("a dropped connection must fail the request"),
    }
    // And the client recovers on a new connection.
    blocks.get("f").await.unwrap();

    // Token rotation: the old client is refused after the server's token changes.
    server.set_token(Some("next"));
    let e = api_error(blocks.get("f").await.unwrap_err());
    assert_eq!(e.code, 401);
}
