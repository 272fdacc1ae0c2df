//! One netns session per request: the built plugins enter the pod's network namespace at most once per
//! request, counted with `strace -f -y -e trace=setns` on the real binaries (the delegated plumb-ipam
//! included, which enters none).
//!
//! Each request runs as `ip netns exec <node> strace ... <plugin>`, so strace traces only the plugin
//! and its children, not `ip`'s own switch into the node namespace. `-y` prints the path behind the
//! namespace fd, which is the CNI_NETNS the plugin opened. A request with pod-side work (ADD, CHECK,
//! a router's DEL) must show exactly one setns, into the pod; a request without any (a bridge DEL, whose
//! pod end goes with its host veth; plumb-macspoofchk's CHECK and DEL, which read only the node's
//! nftables) must show none. Any setns into another namespace fails the test.
//!
//! Without `strace` the tests skip loudly (`scripts/install-deps` installs it).

use conformance::netns::Netns;
use conformance::plugin::{Call, Outcome};
use conformance::skip::{have_command, skip, unavailable};
use conformance::{plumb_bin, unique_name, TempDir};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const IFNAME: &str = "eth0";
const OVERLAY_IFNAME: &str = "net1";

/// Skips loudly unless root, `ip`, `nft` and `strace` are there.
fn skipped(test: &str) -> bool {
    if unavailable(test, &["nft"]) {
        return true;
    }
    if !have_command("strace") {
        skip(
            test,
            "needs the `strace` command (apt strace; scripts/install-deps installs it): setns is NOT counted",
        );
        return true;
    }
    false
}

/// What one traced request did: its outcome and every setns line strace saw.
struct Traced {
    out: Outcome,
    setns: Vec<String>,
}

/// The setns counts of a test's requests, checked together at the end so every count is printed.
#[derive(Default)]
struct Tally {
    wrong: Vec<String>,
}

impl Tally {
    /// Records `t`'s setns calls: every one must be a successful entry into `pod`, and there must be
    /// `want` of them.
    fn count(&mut self, what: &str, t: &Traced, pod: &str, want: usize) {
        for line in &t.setns {
            let into_pod = line.contains(&format!("<{pod}>"))
                && line.contains("CLONE_NEWNET")
                && line.trim_end().ends_with("= 0");
            if !into_pod {
                self.wrong.push(format!(
                    "{what}: a setns that is not one successful entry into the pod's namespace {pod}: {line}"
                ));
            }
        }
        println!(
            "{what}: {} setns into the pod namespace (want {want})",
            t.setns.len()
        );
        if t.setns.len() != want {
            self.wrong.push(format!(
                "{what}: {} setns, want {want}: {:#?}",
                t.setns.len(),
                t.setns
            ));
        }
    }

    /// Fails with every wrong count.
    fn finish(self) {
        assert!(self.wrong.is_empty(), "{}", self.wrong.join("\n"));
    }
}

/// Runs `binary` inside node namespace `node` under `strace -f -y -e trace=setns`, with the call's
/// environment and stdin.
fn traced(node: &Netns, binary: &Path, call: &Call) -> Traced {
    let log = TempDir::new("strace");
    let file = log.path().join("setns.txt");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.name, "strace", "-f", "-y", "-qq"])
        .args(["-e", "trace=setns", "-o"])
        .arg(&file)
        .arg(binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(call.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn strace {}: {e}", binary.display()));
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(&call.stdin);
    drop(stdin);
    let o = child.wait_with_output().expect("wait");
    let out = Outcome {
        exit: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "strace wrote no {}: {e}; stderr {}",
            file.display(),
            out.stderr
        )
    });
    let setns = text
        .lines()
        .filter(|l| l.contains("setns("))
        .map(str::to_string)
        .collect();
    Traced { out, setns }
}

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// A node namespace and a pod namespace; the pod's container ID.
struct Lab {
    node: Netns,
    pod: Netns,
    cid: String,
    data: TempDir,
}

impl Lab {
    fn new() -> Lab {
        let node = Netns::new("sen");
        let pod = Netns::new("sep");
        Lab {
            cid: format!("se-{}", pod.name),
            node,
            pod,
            data: TempDir::new("seipam"),
        }
    }

    fn call(&self, command: &str, ifname: &str, conf: &Value) -> Call {
        Call::new(command, &self.cid, &self.pod.path(), ifname, conf)
    }
}

#[test]
fn bridge_with_ipam_and_spoof_check_enters_the_pod_once_per_request() {
    let test = "bridge_with_ipam_and_spoof_check_enters_the_pod_once_per_request";
    if skipped(test) {
        return;
    }
    let lab = Lab::new();
    let bridge = unique_name("seb");
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": format!("senet-{bridge}"),
        "type": "plumb-bridge",
        "bridge": bridge,
        "isGateway": true,
        "macspoofchk": true,
        "ipam": {"type": "plumb-ipam", "range": "10.241.3.0/24", "gateway": "10.241.3.1", "dataDir": lab.data.path()},
    });
    // DEL enters nothing: the pod end goes with the host veth.
    requests(&lab, "plumb-bridge", IFNAME, &conf, "plumb-bridge", 0);
}

#[test]
fn chained_macspoofchk_enters_the_pod_only_to_find_the_veth_pair() {
    let test = "chained_macspoofchk_enters_the_pod_only_to_find_the_veth_pair";
    if skipped(test) {
        return;
    }
    let lab = Lab::new();
    let bridge = unique_name("seb");
    let net = format!("senet-{bridge}");
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": net,
        "type": "plumb-bridge",
        "bridge": bridge,
        "ipam": {"type": "plumb-ipam", "range": "10.241.4.0/24", "dataDir": lab.data.path()},
    });
    let bridge_bin = plumb_bin("plumb-bridge");
    let prev = lab
        .call("ADD", IFNAME, &conf)
        .run_in(&bridge_bin, &lab.node.name)
        .ok();
    let chk = plumb_bin("plumb-macspoofchk");
    let chk_conf = json!({"cniVersion": "1.1.0", "name": net, "type": "plumb-macspoofchk", "prevResult": prev});
    let pod = lab.pod.path();
    let mut tally = Tally::default();
    let add = traced(&lab.node, &chk, &lab.call("ADD", IFNAME, &chk_conf));
    add.out.ok();
    tally.count("plumb-macspoofchk ADD", &add, &pod, 1);
    let check = traced(&lab.node, &chk, &lab.call("CHECK", IFNAME, &chk_conf));
    check.out.ok();
    // CHECK and DEL read only the node's nftables; CNI_NETNS is classified, never entered.
    tally.count("plumb-macspoofchk CHECK", &check, &pod, 0);
    let del = traced(&lab.node, &chk, &lab.call("DEL", IFNAME, &chk_conf));
    del.out.ok();
    tally.count("plumb-macspoofchk DEL", &del, &pod, 0);
    tally.finish();
    lab.call("DEL", IFNAME, &conf)
        .run_in(&bridge_bin, &lab.node.name)
        .ok();
}

/// A one-node overlay: the node's underlay is a veth `car0` (its peer `car1` beside it) with 10.98.0.1/24 and a default route,
/// flooding to a unicast peer that never answers (no traffic is needed to count setns).
fn vxlan_lab() -> (Lab, Value) {
    let lab = Lab::new();
    for args in [
        &[
            "ip", "link", "add", "car0", "type", "veth", "peer", "name", "car1",
        ][..],
        &["ip", "link", "set", "car1", "up"],
        &["ip", "addr", "add", "10.98.0.1/24", "dev", "car0"],
        &["ip", "link", "set", "car0", "up"],
        &[
            "ip",
            "route",
            "add",
            "default",
            "via",
            "10.98.0.2",
            "dev",
            "car0",
        ],
    ] {
        lab.node.exec(args);
    }
    let bridge = unique_name("sev");
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": format!("sevnet-{bridge}"),
        "type": "plumb-vxlan",
        "bridge": bridge,
        "vni": 43,
        "peers": ["10.98.0.2"],
        "macspoofchk": true,
        "ipam": {"type": "plumb-ipam", "range": "192.168.51.0/24", "dataDir": lab.data.path()},
    });
    (lab, conf)
}

/// ADD, CHECK and DEL of `binary` with `conf` on `ifname`, each traced and counted under `label`; the
/// pod must be entered once by ADD and CHECK and `del_enters` times by DEL, and DEL must leave no
/// reservation.
fn requests(lab: &Lab, binary: &str, ifname: &str, conf: &Value, label: &str, del_enters: usize) {
    let bin = plumb_bin(binary);
    let pod = lab.pod.path();
    let mut tally = Tally::default();
    let add = traced(&lab.node, &bin, &lab.call("ADD", ifname, conf));
    let prev = add.out.ok();
    tally.count(&format!("{label} ADD"), &add, &pod, 1);
    let check = traced(
        &lab.node,
        &bin,
        &lab.call("CHECK", ifname, &with_prev(conf, &prev)),
    );
    check.out.ok();
    tally.count(&format!("{label} CHECK"), &check, &pod, 1);
    let del = traced(&lab.node, &bin, &lab.call("DEL", ifname, conf));
    del.out.ok();
    tally.count(&format!("{label} DEL"), &del, &pod, del_enters);
    tally.finish();
    assert_eq!(
        conformance::ipam_records(lab.data.path(), &["ip-"]),
        Default::default(),
        "DEL left a reservation"
    );
}

#[test]
fn vxlan_client_enters_the_pod_once_per_request() {
    let test = "vxlan_client_enters_the_pod_once_per_request";
    if skipped(test) {
        return;
    }
    let (lab, conf) = vxlan_lab();
    // A primary interface with a default route, whose MTU the overlay veth is clamped to.
    lab.pod.exec(&[
        "ip", "link", "add", IFNAME, "mtu", "1400", "type", "veth", "peer", "name", "eth0p", "mtu",
        "1400",
    ]);
    lab.pod.exec(&["ip", "link", "set", IFNAME, "up"]);
    lab.pod
        .exec(&["ip", "addr", "add", "172.21.0.2/24", "dev", IFNAME]);
    lab.pod
        .exec(&["ip", "route", "add", "default", "via", "172.21.0.1"]);
    // A route on the overlay, so ADD also verifies the pod's routes.
    let mut conf = conf;
    conf["ipam"]["routes"] = json!([{"dst": "172.30.0.0/24"}]);
    requests(
        &lab,
        "plumb-vxlan",
        OVERLAY_IFNAME,
        &conf,
        "plumb-vxlan client",
        0,
    );
    assert_eq!(
        lab.pod.exec(&["cat", "/sys/class/net/eth0/mtu"]).trim(),
        "1400"
    );
}

#[test]
fn vxlan_router_enters_the_pod_once_per_request() {
    let test = "vxlan_router_enters_the_pod_once_per_request";
    if skipped(test) {
        return;
    }
    let (lab, mut conf) = vxlan_lab();
    // The router's way out: eth0, where the masquerade chain sends overlay traffic.
    lab.pod.exec(&[
        "ip", "link", "add", IFNAME, "type", "veth", "peer", "name", "eth0p",
    ]);
    lab.pod.exec(&["ip", "link", "set", IFNAME, "up"]);
    lab.pod.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    conf["role"] = json!("router");
    // The router's DEL removes its masquerade chain inside the pod: one entry there too.
    requests(
        &lab,
        "plumb-vxlan",
        OVERLAY_IFNAME,
        &conf,
        "plumb-vxlan router",
        1,
    );
    let tables = lab.pod.exec(&["nft", "list", "tables"]);
    assert!(
        !tables.contains("plumb_router"),
        "router table left after DEL: {tables}"
    );
}
