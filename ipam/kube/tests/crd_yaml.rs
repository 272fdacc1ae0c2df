//! The files under deploy/: the CRD manifest is exactly what `plumb-ipam crd` prints, every manifest
//! parses as Kubernetes objects, and the installer's shell loop really installs the binaries and keeps
//! the plugin's kubeconfig fresh when the projected token rotates.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Every YAML document of a file, as JSON values (empty documents skipped).
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

#[test]
fn crd_manifest_is_what_plumb_ipam_crd_prints() {
    let path = deploy().join("crds/ipblocks.plumb.dev.yaml");
    let file = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        file == plumb_ipam_kube::admin::crd_yaml(),
        "{} is stale or missing: regenerate it from the Rust type with\n  \
         cargo run -p plumb-ipam-kube -- crd > deploy/crds/ipblocks.plumb.dev.yaml",
        path.display()
    );
    // The command prints the same text.
    let args = vec!["crd".to_string()];
    assert_eq!(plumb_ipam_kube::admin::dispatch(&args).unwrap(), file);
    let docs = documents(&path);
    assert_eq!(docs.len(), 1);
    let crd = &docs[0];
    assert_eq!(crd["kind"], "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], "ipblocks.plumb.dev");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["versions"][0]["name"], "v1alpha1");
    let alloc = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["allocations"]["additionalProperties"]["properties"];
    assert!(
        alloc["podUID"].is_object(),
        "the schema carries podUID: {alloc}"
    );
}

#[test]
fn every_deploy_manifest_parses_as_kubernetes_objects() {
    let mut files = Vec::new();
    yaml_files(&deploy(), &mut files);
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let mut kinds = Vec::new();
    for f in &files {
        let docs = documents(f);
        assert!(!docs.is_empty(), "{} holds no document", f.display());
        for d in docs {
            for field in ["apiVersion", "kind"] {
                assert!(
                    d[field].as_str().is_some_and(|s| !s.is_empty()),
                    "{}: a document without {field}: {d}",
                    f.display()
                );
            }
            assert!(
                d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{}: a document without metadata.name: {d}",
                f.display()
            );
            kinds.push(format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            ));
        }
    }
    for want in [
        "CustomResourceDefinition/ipblocks.plumb.dev",
        "ServiceAccount/plumb",
        "ServiceAccount/plumb-reconcile",
        "ClusterRole/plumb-node",
        "ClusterRole/plumb-reconcile",
        "ClusterRoleBinding/plumb-node",
        "ClusterRoleBinding/plumb-reconcile",
        "CronJob/plumb-reconcile",
        "ConfigMap/plumb-installer",
        "DaemonSet/plumb-installer",
    ] {
        assert!(kinds.iter().any(|k| k == want), "{want} missing: {kinds:?}");
    }
}

#[test]
fn reconcile_cronjob_runs_reconcile_every_five_minutes_without_overlap() {
    let docs = documents(&deploy().join("reconcile-cronjob.yaml"));
    let cj = docs.iter().find(|d| d["kind"] == "CronJob").unwrap();
    assert_eq!(cj["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "plumb-reconcile");
    assert_eq!(pod["containers"][0]["args"][0], "reconcile");
}

/// Waits until `f` holds, up to `secs` seconds.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Replaces a file by a rename, as the kubelet swaps projected volume contents.
fn rotate(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn installer_installs_binaries_and_rewrites_the_kubeconfig_when_the_token_rotates() {
    use std::os::unix::fs::PermissionsExt;
    let docs = documents(&deploy().join("installer-daemonset.yaml"));
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let script = cm["data"]["install.sh"].as_str().unwrap();
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "plumb");
    let sources = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "token")
        .unwrap()["projected"]["sources"]
        .clone();
    assert!(
        sources[0]["serviceAccountToken"]["expirationSeconds"].as_u64() > Some(0),
        "the token is projected with an expiry"
    );

    let root = std::env::temp_dir().join(format!("plumb-installer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (src, bin, conf, tok) = (
        root.join("src"),
        root.join("opt/cni/bin"),
        root.join("etc/cni/net.d/plumb.d"),
        root.join("token"),
    );
    for d in [&src, &tok] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(src.join("plumb-ipam"), "binary v1").unwrap();
    std::fs::write(src.join("plumb-bridge"), "bridge v1").unwrap();
    std::fs::write(tok.join("token"), "token-one").unwrap();
    std::fs::write(tok.join("ca.crt"), "-----BEGIN CERTIFICATE-----\nCA\n").unwrap();
    std::fs::write(root.join("install.sh"), script).unwrap();

    /// Kills the installer loop if the test fails before stopping it.
    struct Guard(Option<std::process::Child>);
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut guard = Guard(Some(
        Command::new("/bin/sh")
            .arg(root.join("install.sh"))
            .env("PLUMB_BIN_SRC", &src)
            .env("PLUMB_CNI_BIN_DIR", &bin)
            .env("PLUMB_CONF_DIR", &conf)
            .env("PLUMB_TOKEN_DIR", &tok)
            // The file store's data dir the installer prepares in every mode: the test's, not the host's.
            .env("PLUMB_DATA_DIR", root.join("data"))
            .env("PLUMB_REFRESH_SECONDS", "1")
            .env("KUBERNETES_SERVICE_HOST", "fd00::1")
            .env("KUBERNETES_SERVICE_PORT", "6443")
            .env("PLUMB_NODE_NAME", "node-7.example")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run install.sh with /bin/sh"),
    ));
    let kc_path = conf.join("plumb.kubeconfig");
    // The token as kube-rs's kubeconfig reader gets it (None until the file is complete and valid).
    let token_of = |p: &Path| -> Option<String> {
        kube::config::Kubeconfig::read_from(p).ok()?;
        let v: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
        v["users"][0]["user"]["token"].as_str().map(str::to_string)
    };
    eventually(10, "the first kubeconfig", || token_of(&kc_path).is_some());
    let kc = kube::config::Kubeconfig::read_from(&kc_path).unwrap();
    assert_eq!(kc.current_context.as_deref(), Some("plumb"));
    let cluster = kc.clusters[0].cluster.as_ref().unwrap();
    assert_eq!(cluster.server.as_deref(), Some("https://[fd00::1]:6443"));
    assert_eq!(
        cluster.certificate_authority_data.as_deref(),
        Some("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkNBCg==")
    );
    assert_eq!(token_of(&kc_path).as_deref(), Some("token-one"));
    eventually(10, "the node name", || {
        std::fs::read_to_string(conf.join("node-name"))
            .ok()
            .as_deref()
            == Some("node-7.example\n")
    });
    let env = &pod["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "PLUMB_NODE_NAME"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "the DaemonSet hands the installer its Node name: {env}"
    );
    let mode = std::fs::metadata(&kc_path).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the kubeconfig holds a token: root only"
    );
    assert_eq!(std::fs::read(bin.join("plumb-ipam")).unwrap(), b"binary v1");
    assert_eq!(
        std::fs::read(bin.join("plumb-bridge")).unwrap(),
        b"bridge v1"
    );
    let mode = std::fs::metadata(bin.join("plumb-ipam"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // The kubelet rotates the projected token: the kubeconfig follows within a refresh period.
    rotate(&tok.join("token"), "token-two");
    eventually(10, "the rotated token", || {
        token_of(&kc_path).as_deref() == Some("token-two")
    });
    // Someone deletes the kubeconfig: it comes back.
    std::fs::remove_file(&kc_path).unwrap();
    eventually(10, "the kubeconfig rewritten", || {
        token_of(&kc_path).as_deref() == Some("token-two")
    });
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&conf)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["node-name", "plumb.kubeconfig"]);

    // SIGTERM ends the loop promptly and cleanly, leaving the kubeconfig in place.
    let started = Instant::now();
    let child = guard.0.take().unwrap();
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("installed plumb-ipam"), "{log}");
    assert!(log.contains("stopping"), "{log}");
    assert!(kc_path.exists());
    let _ = std::fs::remove_dir_all(&root);
}
