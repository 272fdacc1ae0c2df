//! The Kubernetes store's debug log, black-box: plumb-ipam at `logLevel: debug` against plumb's test API
//! server writes each API request (method and path) and never a credential: not the bearer token, not
//! the client key, not the kubeconfig's contents.

use conformance::plugin::Call;
use conformance::{plumb_bin, TempDir};
use plumb_kubeapi::{Options, TestApiServer};
use serde_json::{json, Value};
use std::process::Command;

const TOKEN: &str = "plumb-log-test-token-7f3a9c1e5b";

/// A client key and certificate made by openssl for this test, base64 as a kubeconfig holds them;
/// `None` without openssl.
fn client_identity(dir: &std::path::Path) -> Option<(String, String)> {
    let (key, cert) = (dir.join("client.key"), dir.join("client.crt"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=plumb-log-test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return None;
    }
    let b64 = |p: &std::path::Path| {
        let out = Command::new("base64").arg("-w0").arg(p).output().ok()?;
        String::from_utf8(out.stdout).ok()
    };
    Some((b64(&key)?, b64(&cert)?))
}

#[test]
fn a_debug_run_of_the_kubernetes_store_logs_requests_but_no_secret() {
    let server = TestApiServer::start(Options {
        token: Some(TOKEN.into()),
        ..Options::default()
    })
    .expect("start the test API server");
    let dir = TempDir::new("kubelogs");
    let mut kc = server.kubeconfig(Some(TOKEN));
    let identity = client_identity(dir.path());
    if let Some((key, cert)) = &identity {
        // Over plain HTTP the identity is loaded but not presented; it must stay out of the log all the same.
        kc["users"][0]["user"]["client-key-data"] = json!(key);
        kc["users"][0]["user"]["client-certificate-data"] = json!(cert);
    } else {
        conformance::skip::skip(
            "a_debug_run_of_the_kubernetes_store_logs_requests_but_no_secret (client key part)",
            "no openssl to make a client key; the token is still checked",
        );
    }
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kc.to_string()).unwrap();
    let log = dir.path().join("plumb.log");
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": "kube-logs",
        "type": "plumb-ipam",
        "ipam": {
            "type": "plumb-ipam",
            "range": "10.88.0.0/16",
            "dataDir": dir.path().join("data"),
            "kubernetes": {"kubeconfig": kubeconfig},
            "log_level": "debug",
            "log_file": log,
        },
    });
    for cmd in ["ADD", "DEL"] {
        Call::new(cmd, "c1", "/run/netns/none", "eth0", &conf)
            .env("PLUMB_NODE_NAME", "node-a")
            .run(&plumb_bin("plumb-ipam"))
            .ok();
    }
    let text = std::fs::read_to_string(&log).expect("the log file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let requests: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["msg"].as_str())
        .filter_map(|m| m.strip_prefix("kubernetes request: "))
        .collect();
    // ADD lists the space's blocks and writes one; DEL lists and writes again.
    let lists = requests
        .iter()
        .filter(|r| r.starts_with("GET /apis/plumb.dev/v1alpha1/ipblocks?"))
        .count();
    assert!(lists >= 2, "{requests:#?}");
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST /apis/plumb.dev/v1alpha1/ipblocks")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("PUT /apis/plumb.dev/v1alpha1/ipblocks/")),
        "{requests:#?}"
    );
    let commands: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("outcome").is_some())
        .collect();
    assert_eq!(commands.len(), 2, "{text}");
    // No credential, in any form.
    assert!(!text.contains(TOKEN), "the bearer token is in the log");
    assert!(!text.to_ascii_lowercase().contains("bearer"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("authorization"),
        "{text}"
    );
    if let Some((key, cert)) = &identity {
        for secret in [key, cert] {
            // Any 16-character piece of the encoded key or certificate.
            for piece in secret.as_bytes().chunks(16).filter(|c| c.len() == 16) {
                let piece = std::str::from_utf8(piece).unwrap();
                assert!(!text.contains(piece), "client identity material in the log");
            }
        }
    }
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}
