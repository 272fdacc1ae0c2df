//! Delegation through the spec layer to real IPAM binaries: plumb-ipam and the reference host-local
//! (containernetworking/plugins v1.10, built by `scripts/peers`) are run the way a main plugin runs its
//! IPAM, and their results and error codes come back intact.

use conformance::{bin_dir, peers, TempDir};
use plumb_cni::delegate;
use plumb_cni::{Command, Version};
use serde_json::json;
use std::path::PathBuf;

/// plumb's binaries only.
fn dirs() -> Vec<PathBuf> {
    vec![bin_dir()]
}

fn vars(cid: &str) -> [(&str, &str); 4] {
    [
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", "/run/netns/none"),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", "/unused"),
    ]
}

fn conf(version: &str, ipam: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"cniVersion": version, "name": "deleg", "type": "bridge", "ipam": ipam}),
    )
    .unwrap()
}

#[test]
fn delegates_to_plumb_ipam_in_each_version() {
    for (i, v) in ["0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .into_iter()
        .enumerate()
    {
        let data = TempDir::new("deleg");
        let stdin = conf(
            v,
            json!({"type": "plumb-ipam", "range": "10.77.0.0/30", "dataDir": data.path(), "gateway": "10.77.0.1"}),
        );
        let version = Version::parse(v).unwrap();
        let cid = format!("deleg{i}");
        let r = delegate::add("plumb-ipam", &dirs(), &stdin, version, &vars(&cid)).unwrap();
        assert_eq!(r.ips.len(), 1);
        assert_eq!(r.ips[0].address.to_string(), "10.77.0.2/30", "version {v}");
        // The /30 has one address left besides the gateway: a second attachment exhausts it, and the
        // delegate's own code (100) comes back unchanged.
        let e = delegate::add("plumb-ipam", &dirs(), &stdin, version, &vars("other")).unwrap_err();
        assert_eq!(e.code, 100, "{e}");
        delegate::run("plumb-ipam", Command::Del, &dirs(), &stdin, &vars(&cid)).unwrap();
        delegate::run("plumb-ipam", Command::Del, &dirs(), &stdin, &vars(&cid)).unwrap();
    }
}

#[test]
fn delegates_to_host_local() {
    // A loud skip without Go >= 1.26 to build the reference plugins.
    let Some(reference) = peers::dir("delegates_to_host_local") else {
        return;
    };
    let dirs = || vec![bin_dir(), reference.clone()];
    for v in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let data = TempDir::new("deleghl");
        let stdin = conf(
            v,
            json!({"type": "host-local", "ranges": [[{"subnet": "10.78.0.0/24"}]], "dataDir": data.path()}),
        );
        let version = Version::parse(v).unwrap();
        let r = delegate::add("host-local", &dirs(), &stdin, version, &vars("hl1")).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.78.0.2/24", "version {v}");
        assert_eq!(
            r.ips[0].gateway.map(|g| g.to_string()).as_deref(),
            Some("10.78.0.1")
        );
        delegate::run("host-local", Command::Del, &dirs(), &stdin, &vars("hl1")).unwrap();
    }
    let data = TempDir::new("deleghl");
    // host-local's own error (a bad subnet) keeps host-local's code.
    let bad = conf(
        "1.0.0",
        json!({"type": "host-local", "ranges": [[{"subnet": "nope"}]], "dataDir": data.path()}),
    );
    let e = delegate::add("host-local", &dirs(), &bad, Version::V1_0_0, &vars("hl2")).unwrap_err();
    assert_ne!(
        e.code,
        plumb_cni::code::DELEGATE_FAILED,
        "host-local printed a CNI error: {e}"
    );
    assert!(!e.msg.is_empty());
}
