//! Support of the kube-real tests (`kube_real.rs`): the shared control plane with deploy/ applied,
//! the installer-written kubeconfigs, running plumb-ipam, reading IPBlocks and the audit log, and
//! Pod and Node objects made through the API.

use conformance::control_plane::{self, Auth, ControlPlane};
use conformance::plugin::{Call, Outcome};
use conformance::plumb_bin;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// IPAM never enters the namespace, so any path will do.
pub const NETNS: &str = "/run/netns/none";
/// The audit log's name for the plugin's service account.
pub const PLUGIN_USER: &str = "system:serviceaccount:kube-system:plumb";
/// The audit log's name for reconcile's service account.
pub const RECONCILE_USER: &str = "system:serviceaccount:kube-system:plumb-reconcile";
pub const IPBLOCKS: &str = "/apis/plumb.dev/v1alpha1/ipblocks";

// ---------------------------------------------------------------------------------------------
// Setup: the control plane with deploy/ applied, and the installer-written kubeconfigs
// ---------------------------------------------------------------------------------------------

/// The shared control plane with deploy/crds and deploy/rbac.yaml applied.
pub struct Real {
    pub cp: &'static ControlPlane,
    /// The plugin's kubeconfig, written by the installer from a `plumb` token.
    pub plugin_kubeconfig: PathBuf,
    /// Reconcile's kubeconfig, written by the installer from a `plumb-reconcile` token.
    pub reconcile_kubeconfig: PathBuf,
    /// The `plumb` token in the plugin's kubeconfig.
    pub plugin_token: String,
}

/// Serialises the tests: each reads every request of a service account in its audit-log window.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn real() -> &'static Real {
    static REAL: OnceLock<Real> = OnceLock::new();
    REAL.get_or_init(|| {
        let cp = control_plane::shared();
        apply_yaml(cp, &workspace_file("deploy/crds/ipblocks.plumb.dev.yaml"));
        wait_established(cp, "ipblocks.plumb.dev");
        apply_yaml(cp, &workspace_file("deploy/rbac.yaml"));
        // Under the control plane's directory, which goes with it at exit.
        let dir = cp.scratch("deploy");
        let plugin_token = cp.token("kube-system", "plumb", 3600);
        let plugin_kubeconfig = installer_kubeconfig(cp, &dir, "plugin", &plugin_token);
        let reconcile_token = cp.token("kube-system", "plumb-reconcile", 3600);
        let reconcile_kubeconfig = installer_kubeconfig(cp, &dir, "reconcile", &reconcile_token);
        Real {
            cp,
            plugin_kubeconfig,
            reconcile_kubeconfig,
            plugin_token,
        }
    })
}

pub fn workspace_file(rel: &str) -> String {
    let p = conformance::workspace_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The documents of a multi-document YAML file, as JSON.
pub fn yaml_docs(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The collection path of an object of deploy/ (only the kinds deploy/ applies; another kind fails
/// the test, so a new kind in deploy/ gets a path here).
pub fn collection(obj: &Value) -> String {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    match obj["kind"].as_str().unwrap_or_default() {
        "CustomResourceDefinition" => {
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions".into()
        }
        "ServiceAccount" => format!("/api/v1/namespaces/{ns}/serviceaccounts"),
        "ClusterRole" => "/apis/rbac.authorization.k8s.io/v1/clusterroles".into(),
        "ClusterRoleBinding" => "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into(),
        other => panic!("no collection path for kind {other:?}"),
    }
}

/// Applies every document of a deploy/ file, as it is, as the admin.
pub fn apply_yaml(cp: &ControlPlane, text: &str) {
    for doc in yaml_docs(text) {
        cp.apply(&collection(&doc), &doc);
    }
}

/// Waits until a CRD is Established and its objects can be listed (at most 30 s).
pub fn wait_established(cp: &ControlPlane, name: &str) {
    let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let crd = cp.admin("GET", &path, None, 200);
        let established = crd["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        if established {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CRD {name} not established: {crd}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Established is not yet served: the server makes a custom resource's storage on the first
    // request to it, and lists are 429 "storage is (re)initializing" until its watch cache is
    // filled (plumb-ipam retries those, but the tests count requests).
    let plural = name.split('.').next().expect("plural");
    let list = format!("/apis/{}/v1alpha1/{plural}", &name[plural.len() + 1..]);
    loop {
        let a = cp.request("GET", &list, None, Auth::Admin).expect("list");
        if a.status == 200 {
            return;
        }
        assert!(
            a.status == 429 && Instant::now() < deadline,
            "GET {list}: {} {}",
            a.status,
            a.body
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The installer script, exactly as deploy/installer-daemonset.yaml's ConfigMap carries it.
pub fn installer_script() -> String {
    let docs = yaml_docs(&workspace_file("deploy/installer-daemonset.yaml"));
    docs.iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["install.sh"].is_string())
        .and_then(|d| d["data"]["install.sh"].as_str())
        .expect("a ConfigMap with data.install.sh in deploy/installer-daemonset.yaml")
        .to_string()
}

/// The installer running against the real server, from a token directory the test writes the way
/// the kubelet projects the service-account token (`token`, `ca.crt`); killed on drop.
pub struct Installer {
    pub child: Child,
    pub token_dir: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Installer {
    pub fn start(cp: &ControlPlane, dir: &Path, token: &str) -> Installer {
        let token_dir = dir.join("token");
        let conf_dir = dir.join("conf");
        let bin_src = dir.join("bin-src");
        for d in [&token_dir, &bin_src] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(token_dir.join("ca.crt"), cp.ca_pem()).expect("write ca.crt");
        std::fs::write(token_dir.join("token"), token).expect("write token");
        let child = Command::new("sh")
            .arg("-c")
            .arg(installer_script())
            .env("PLUMB_BIN_SRC", &bin_src)
            .env("PLUMB_CNI_BIN_DIR", dir.join("cni-bin"))
            .env("PLUMB_CONF_DIR", &conf_dir)
            .env("PLUMB_TOKEN_DIR", &token_dir)
            .env("PLUMB_DATA_DIR", dir.join("data"))
            .env("PLUMB_API_SERVER", cp.url())
            .env("PLUMB_REFRESH_SECONDS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run the installer script");
        Installer {
            child,
            token_dir,
            kubeconfig: conf_dir.join("plumb.kubeconfig"),
        }
    }

    /// Waits until the kubeconfig carries `token` (at most 20 s).
    pub fn wait_for_token(&self, token: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.kubeconfig).unwrap_or_default();
            if text.contains(&format!("token: \"{token}\"")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the installer did not write the token into {}: {text}",
                self.kubeconfig.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Installer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the installer once for `token` in `dir/<name>` and returns the kubeconfig it wrote.
pub fn installer_kubeconfig(cp: &ControlPlane, dir: &Path, name: &str, token: &str) -> PathBuf {
    let inst = Installer::start(cp, &dir.join(name), token);
    inst.wait_for_token(token);
    inst.kubeconfig.clone()
}

// ---------------------------------------------------------------------------------------------
// Running plumb-ipam
// ---------------------------------------------------------------------------------------------

/// A network configuration with plumb-ipam on `range`, in its own space, with `kubeconfig`.
pub fn net(space: &str, range: &str, data: &Path, kubeconfig: &Path, extra: Value) -> Value {
    let mut ipam = json!({
        "type": "plumb-ipam",
        "range": range,
        "network_name": space,
        "dataDir": data.to_str().expect("UTF-8 temp dir"),
        "kubernetes": {"kubeconfig": kubeconfig.to_str().expect("UTF-8 temp dir")},
    });
    for (k, x) in extra.as_object().expect("extra is an object") {
        ipam[k] = x.clone();
    }
    json!({"cniVersion": "1.0.0", "name": space, "type": "plumb-ipam", "ipam": ipam})
}

pub fn cni(cmd: &str, conf: &Value, node: &str, cid: &str) -> Outcome {
    Call::new(cmd, cid, NETNS, "eth0", conf)
        .env("PLUMB_NODE_NAME", node)
        .run(&plumb_bin("plumb-ipam"))
}

pub fn add_ok(conf: &Value, node: &str, cid: &str) -> Value {
    cni("ADD", conf, node, cid).ok()
}

pub fn del_ok(conf: &Value, node: &str, cid: &str) {
    assert_eq!(cni("DEL", conf, node, cid).ok(), Value::Null);
}

/// `ips[i].address` of a result.
pub fn address(result: &Value, i: usize) -> String {
    result["ips"][i]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ips[{i}].address in {result}"))
        .to_string()
}

/// The IPBlocks of `space`, read by the admin.
pub fn blocks(cp: &ControlPlane, space: &str) -> Vec<Value> {
    let list = cp.admin("GET", IPBLOCKS, None, 200);
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|b| b["spec"]["space"] == space)
        .cloned()
        .collect()
}

/// (cidr, used) of each block of `space`, sorted.
pub fn usage(cp: &ControlPlane, space: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = blocks(cp, space)
        .iter()
        .map(|b| {
            (
                b["spec"]["cidr"].as_str().unwrap_or_default().to_string(),
                b["spec"]["used"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    v.sort();
    v
}

/// The container IDs holding reservations in `space`'s blocks.
pub fn holders(cp: &ControlPlane, space: &str) -> BTreeSet<String> {
    blocks(cp, space)
        .iter()
        .flat_map(|b| {
            b["spec"]["allocations"]
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_values()
        })
        .map(|a| a["containerID"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Requests of `user` in audit events, as (verb, resource, HTTP code), in order.
pub fn requests_of(events: &[Value], user: &str) -> Vec<(String, String, u64)> {
    events
        .iter()
        .filter(|e| e["user"]["username"] == user)
        .map(|e| {
            (
                e["verb"].as_str().unwrap_or_default().to_string(),
                e["objectRef"]["resource"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["responseStatus"]["code"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Runs `f` and returns the plugin's requests it cost, as verb -> count (all asserted to be IPBlock
/// requests that succeeded).
pub fn plugin_cost(cp: &ControlPlane, f: impl FnOnce()) -> BTreeMap<String, u64> {
    let mark = cp.audit_mark();
    f();
    let mut out = BTreeMap::new();
    for (verb, resource, code) in requests_of(&cp.audit_events(mark), PLUGIN_USER) {
        assert_eq!(resource, "ipblocks", "{verb} {resource} {code}");
        assert!(code < 300, "{verb} {resource} answered {code}");
        *out.entry(verb).or_insert(0) += 1;
    }
    out
}

pub fn cost(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(v, n)| (v.to_string(), *n)).collect()
}

/// A Pod created through the API (Pending: no kubelet runs): namespace, name, the UID the server gave.
pub struct Pod {
    pub ns: String,
    pub name: String,
    pub uid: String,
}

/// Creates pod `ns/name` on `node` as the admin; the server assigns its UID.
pub fn create_pod(cp: &ControlPlane, ns: &str, name: &str, node: &str) -> Pod {
    let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]}});
    let p = cp.admin(
        "POST",
        &format!("/api/v1/namespaces/{ns}/pods"),
        Some(&body),
        201,
    );
    Pod {
        ns: ns.to_string(),
        name: name.to_string(),
        uid: p["metadata"]["uid"]
            .as_str()
            .expect("metadata.uid")
            .to_string(),
    }
}

/// Deletes a pod at once (grace period 0: no kubelet would ever confirm a graceful deletion).
pub fn delete_pod(cp: &ControlPlane, p: &Pod) {
    cp.admin(
        "DELETE",
        &format!("/api/v1/namespaces/{}/pods/{}", p.ns, p.name),
        Some(&json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})),
        200,
    );
}

pub fn create_node(cp: &ControlPlane, name: &str, labels: Value, addresses: Value) {
    let body = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels}, "status": {"addresses": addresses}});
    cp.admin("POST", "/api/v1/nodes", Some(&body), 201);
}

pub fn delete_node(cp: &ControlPlane, name: &str) {
    cp.admin("DELETE", &format!("/api/v1/nodes/{name}"), None, 200);
}

/// ADD for pod `p` (its namespace, name and UID in CNI_ARGS, as the kubelet passes them).
pub fn add_for_pod(conf: &Value, node: &str, cid: &str, p: &Pod) -> Value {
    Call::new("ADD", cid, NETNS, "eth0", conf)
        .env("PLUMB_NODE_NAME", node)
        .env(
            "CNI_ARGS",
            &format!(
                "K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_UID={}",
                p.ns, p.name, p.uid
            ),
        )
        .run(&plumb_bin("plumb-ipam"))
        .ok()
}

/// `plumb-ipam reconcile --space SPACE ARGS` with reconcile's installer-written kubeconfig; stdout.
pub fn reconcile(r: &Real, space: &str, args: &[&str]) -> String {
    let out = Command::new(plumb_bin("plumb-ipam"))
        .args(["reconcile", "--space", space, "--kubeconfig"])
        .arg(&r.reconcile_kubeconfig)
        .args(args)
        .output()
        .expect("run plumb-ipam reconcile");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "reconcile: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A copy of the plugin's installer-written kubeconfig (same token, same CA) whose server is the
/// forwarder `via` (`https://127.0.0.1:<port>`, in `via`'s namespace): written to `dir/<name>`.
/// The serving certificate names 127.0.0.1, so TLS verifies through the forwarder as it does direct.
pub fn kubeconfig_via(r: &Real, via: &conformance::forward::Forward, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(&r.plugin_kubeconfig).expect("read the plugin's kubeconfig");
    let server = format!("server: \"{}\"", r.cp.url());
    assert!(
        text.contains(&server),
        "the installer's kubeconfig has no {server}: {text}"
    );
    let path = dir.join(format!("fwd-{}.kubeconfig", via.addr().port()));
    std::fs::write(
        &path,
        text.replace(&server, &format!("server: \"{}\"", via.https_url())),
    )
    .expect("write the forwarded kubeconfig");
    path
}

/// The real server's `127.0.0.1:<port>`, what a [`conformance::forward::Forward`] relays to.
pub fn server_addr(cp: &ControlPlane) -> std::net::SocketAddr {
    cp.url()
        .strip_prefix("https://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not https://<ip>:<port>: {}", cp.url()))
}

/// The `n`th address (0: the first; with the range's prefix) `node` gets in an empty `range`: nodes
/// start claiming at a block derived from their name (`plumb_ipam_kube::blocks::start_offset`) and
/// fill it in order.
pub fn nth_of(range: &str, node: &str, n: usize) -> String {
    use plumb_ipam::range::Range;
    let r = Range::build("ipam.range", range, None, None, &[], None).expect("a range");
    let mut off = plumb_ipam_kube::blocks::start_offset(&r, node);
    off = r
        .next_allowed(off)
        .or_else(|| r.next_allowed(0))
        .expect("room");
    for _ in 0..n {
        off = r.next_allowed(off + 1).expect("room");
    }
    format!(
        "{}/{}",
        r.addr(off),
        range.split('/').nth(1).expect("a prefix")
    )
}

/// The first address `node` gets in an empty `range` ([`nth_of`] 0).
pub fn first_of(range: &str, node: &str) -> String {
    nth_of(range, node, 0)
}
