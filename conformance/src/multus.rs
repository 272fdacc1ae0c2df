//! The Multus thin plugin (`multus`, gopkg.in/k8snetworkplumbingwg/multus-cni.v4) that `scripts/multus`
//! builds from its published Go module into a cache. Tests find it through [`dir`].

use crate::go_built::{find, Found, Script};
use std::path::PathBuf;
use std::sync::OnceLock;

static MULTUS: OnceLock<Found> = OnceLock::new();

const SCRIPT: Script = Script {
    name: "multus",
    var: "PLUMB_MULTUS_DIR",
    probe: "multus",
    what: "Multus",
};

/// The directory holding the `multus` binary (and `VERSIONS`): `PLUMB_MULTUS_DIR` when set, else what
/// `scripts/multus` builds or finds in its cache. `None` after a loud skip naming `test` when no Go >= 1.26
/// is installed; panics when the build fails.
pub fn dir(test: &str) -> Option<PathBuf> {
    MULTUS.get_or_init(|| find(SCRIPT)).dir(test)
}

// ---------------------------------------------------------------------------------------------
// What a cluster needs before Multus can run: the NAD CRD, Multus's service account and RBAC
// ---------------------------------------------------------------------------------------------

use crate::control_plane::{Auth, ControlPlane};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// The NetworkAttachmentDefinition CRD's name.
pub const CRD_NAME: &str = "network-attachment-definitions.k8s.cni.cncf.io";
/// The namespace of Multus's service account.
pub const SA_NAMESPACE: &str = "kube-system";
/// Multus's service account (and its ClusterRole and binding).
pub const SA_NAME: &str = "plumb-test-multus";
/// Multus's service account, as the audit log names it.
pub const MULTUS_USER: &str = "system:serviceaccount:kube-system:plumb-test-multus";

/// The NetworkAttachmentDefinition CRD, written here: namespaced, v1, `spec.config` a string.
pub fn nad_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": "k8s.cni.cncf.io",
            "scope": "Namespaced",
            "names": {
                "kind": "NetworkAttachmentDefinition",
                "listKind": "NetworkAttachmentDefinitionList",
                "plural": "network-attachment-definitions",
                "singular": "network-attachment-definition",
                "shortNames": ["net-attach-def"],
            },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {"config": {"type": "string"}},
                        },
                    },
                }},
            }],
        },
    })
}

/// What the thin plugin does with the API: reads its pod and the NADs, writes the pod's status
/// annotation, records events. (collection path, object) pairs.
fn rbac() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": SA_NAME},
            "rules": [
                {"apiGroups": ["k8s.cni.cncf.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get", "update", "patch"]},
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"],
                 "verbs": ["create", "patch", "update"]},
            ]}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": SA_NAME},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SA_NAME},
                "subjects": [{"kind": "ServiceAccount", "name": SA_NAME, "namespace": SA_NAMESPACE}]}),
        ),
    ]
}

/// Creates (or replaces) the NAD CRD, waits until NADs are served, creates Multus's service account
/// with its ClusterRole and binding, and returns a TokenRequest token of that account (valid 1 h).
pub fn install(cp: &ControlPlane) -> String {
    cp.apply(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        &nad_crd(),
    );
    wait_nads_served(cp);
    cp.apply(
        &format!("/api/v1/namespaces/{SA_NAMESPACE}/serviceaccounts"),
        &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA_NAME}}),
    );
    for (collection, obj) in rbac() {
        cp.apply(collection, &obj);
    }
    cp.token(SA_NAMESPACE, SA_NAME, 3600)
}

/// Writes a kubeconfig at `path` for `server` (the API server's URL as seen from where the reader
/// runs) with `token`, and the control plane's CA beside it (`<path>.ca.crt`).
pub fn write_kubeconfig(cp: &ControlPlane, path: &Path, server: &str, token: &str) {
    let ca = path.with_extension("ca.crt");
    std::fs::write(&ca, cp.ca_pem()).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {server}\n    \
         certificate-authority: {}\nusers:\n- name: user\n  user:\n    token: \"{token}\"\n\
         contexts:\n- name: ctx\n  context:\n    cluster: real\n    user: user\n\
         current-context: ctx\n",
        ca.display()
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Waits until the NAD CRD is Established and NADs can be listed (at most 30 s).
fn wait_nads_served(cp: &ControlPlane) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}");
    loop {
        let crd = cp.admin("GET", &path, None, 200);
        let established = crd["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        if established {
            let a = cp
                .request(
                    "GET",
                    "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions",
                    None,
                    Auth::Admin,
                )
                .expect("list NADs");
            if a.status == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "NAD CRD not served: {crd}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
