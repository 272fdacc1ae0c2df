//! client-go compatibility through `kubectl`, when it is on PATH (skipped
//! otherwise). client-go never sends credentials over plain http, so this
//! server runs without a token; kubectl wants OpenAPI for client-side
//! validation, which the server does not serve, hence `--validate=false`.

use plumb_kubeapi::{Options, Resource, TestApiServer};
use std::path::{Path, PathBuf};
use std::process::Command;

fn find_kubectl() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("kubectl"))
            .find(|p| p.is_file())
    })
}

fn kubectl(bin: &Path, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin)
        .env("KUBECONFIG", kubeconfig)
        .arg("--request-timeout=20s")
        .args(args)
        .output()
        .expect("run kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn kubectl_round_trip() {
    let Some(bin) = find_kubectl() else {
        eprintln!("skipping: kubectl is not on PATH");
        return;
    };
    let server = TestApiServer::start(Options::default()).unwrap();
    let dir = std::env::temp_dir();
    let kc = dir.join(format!(
        "plumb-kubeapi-kubectl-{}.kubeconfig",
        std::process::id()
    ));
    server.write_kubeconfig(&kc, None).unwrap();
    let manifest = dir.join(format!("plumb-kubeapi-kubectl-{}.json", std::process::id()));
    std::fs::write(
        &manifest,
        r#"{"apiVersion":"plumb.dev/v1alpha1","kind":"IPBlock","metadata":{"name":"blk1","labels":{"pool":"a"}},"spec":{"cidr":"10.3.0.0/24"}}"#,
    )
    .unwrap();
    let node = dir.join(format!(
        "plumb-kubeapi-kubectl-{}-node.json",
        std::process::id()
    ));
    std::fs::write(
        &node,
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-x","labels":{"zone":"a"}}}"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let (ok, text) = kubectl(&bin, &kc, args);
        assert!(ok, "kubectl {args:?} failed:\n{text}");
        text
    };
    let m = manifest.to_str().unwrap();
    let n = node.to_str().unwrap();
    assert!(run(&["create", "--validate=false", "-f", n]).contains("node/node-x created"));
    assert!(run(&["get", "nodes", "-l", "zone=a", "-o", "name"]).contains("node/node-x"));
    assert!(
        run(&["create", "--validate=false", "-f", m]).contains("ipblock.plumb.dev/blk1 created")
    );
    assert!(
        run(&["get", "ipblocks", "-l", "pool=a", "-o", "name"]).contains("ipblock.plumb.dev/blk1")
    );
    run(&["label", "ipblock", "blk1", "x=y"]);
    run(&[
        "patch",
        "ipblock",
        "blk1",
        "--type=merge",
        "-p",
        r#"{"spec":{"cidr":"10.9.0.0/24"}}"#,
    ]);
    let obj = server.object(Resource::IpBlocks, None, "blk1").unwrap();
    assert_eq!(obj["metadata"]["labels"]["x"], "y");
    assert_eq!(obj["spec"]["cidr"], "10.9.0.0/24");
    let (ok, text) = kubectl(&bin, &kc, &["create", "--validate=false", "-f", m]);
    assert!(!ok && text.contains("AlreadyExists"), "{text}");
    assert!(run(&["api-resources"]).contains("ipblocks"));
    run(&["delete", "ipblock", "blk1"]);
    assert!(server.objects(Resource::IpBlocks).is_empty());
    let (ok, text) = kubectl(&bin, &kc, &["get", "ipblock", "blk1"]);
    assert!(!ok && text.contains("NotFound"), "{text}");
    for f in [&kc, &manifest, &node] {
        let _ = std::fs::remove_file(f);
    }
}
