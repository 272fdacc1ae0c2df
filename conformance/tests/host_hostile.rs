//! plumb-bridge, plumb-vxlan and plumb-macspoofchk under hostile input and failure (issue 9, sections
//! 2-4): a pod namespace that is gone (unmounted, missing, a directory), the host's own namespace as
//! CNI_NETNS, DEL after an ADD refused with 105 or with `CNI_IFNAME=lo`, DEL on a config ADD refuses,
//! DEL steps that fail, failed ADDs on a bridge they created, conflicting routes and `isGateway`
//! without a gateway from IPAM.
//!
//! As in bridge_netns, each test makes a private "node" namespace and runs the plugins inside it
//! (`ip netns exec`), so bridges, veths, nftables tables and sysctls live in a namespace the test made;
//! pods are further namespaces of the test. Names, subnets and IPAM data directories are unique per test.

use conformance::iproute::{ifnames, parse_json};
use conformance::netns::{run, Netns};
use conformance::plugin::{Call, Outcome};
use conformance::result::{first_address, host_veth};
use conformance::skip::unavailable;
use conformance::{plumb_bin, unique_name, TempDir};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

const SPOOF_TABLE: &str = "plumb_spoofchk";
const MASQ_TABLE: &str = "plumb_masq";
const IFNAME: &str = "eth0";
const VX_IFNAME: &str = "net1";

// ---------------------------------------------------------------------------------------------------
// Fixtures

/// A private node namespace with a bridge name, a network name, an IPAM data directory and a /24.
struct Node {
    ns: Netns,
    bridge: String,
    net: String,
    data: TempDir,
    /// The first three octets of the /24, e.g. "10.243.7".
    prefix: String,
}

impl Node {
    fn new(octet: u8) -> Node {
        let ns = Netns::new("hhn");
        let bridge = unique_name("hh");
        Node {
            net: format!("hnet-{bridge}"),
            bridge,
            ns,
            data: TempDir::new("hhipam"),
            prefix: format!("10.243.{octet}"),
        }
    }

    fn gw(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// A plumb-bridge config with plumb-ipam on this node's /24; `extra` keys override, `ipam` keys are
    /// merged into the ipam section, a null removes a key.
    fn conf(&self, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": self.net,
            "type": "plumb-bridge",
            "bridge": self.bridge,
            "ipam": {
                "type": "plumb-ipam",
                "range": format!("{}.0/24", self.prefix),
                "gateway": self.gw(),
                "dataDir": self.data.path(),
            },
        });
        merge(&mut c, extra);
        c
    }

    /// Runs a plugin binary inside the node namespace.
    fn run(&self, binary: &str, call: &Call) -> Outcome {
        call.run_in(&plumb_bin(binary), &self.ns.name)
    }

    fn bridge(&self, call: &Call) -> Outcome {
        self.run("plumb-bridge", call)
    }

    fn sh(&self, args: &[&str]) -> String {
        self.ns.exec(args)
    }

    fn links(&self) -> BTreeSet<String> {
        ifnames(&parse_json(&self.sh(&["ip", "-j", "link", "show"])))
    }

    fn has_link(&self, name: &str) -> bool {
        self.links().contains(name)
    }

    /// Every chain of plumb's tables in the node, as "family table name".
    fn chains(&self) -> BTreeSet<String> {
        parse_json(&self.sh(&["nft", "-j", "list", "ruleset"]))["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("chain"))
            .filter(|c| c["table"] == SPOOF_TABLE || c["table"] == MASQ_TABLE)
            .map(|c| format!("{} {} {}", c["family"], c["table"], c["name"]))
            .collect()
    }

    /// IPAM reservations (`ip-*` files).
    fn reservations(&self) -> BTreeSet<String> {
        conformance::ipam_records(self.data.path(), &["ip-"])
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            links: self.links(),
            chains: self.chains(),
            reservations: self.reservations(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    links: BTreeSet<String>,
    chains: BTreeSet<String>,
    reservations: BTreeSet<String>,
}

/// Merges `extra` into `c` (`ipam` keys into the ipam section; a null removes a key).
fn merge(c: &mut Value, extra: Value) {
    for (k, v) in extra.as_object().expect("extra is an object") {
        if k == "ipam" && v.is_object() && c["ipam"].is_object() {
            for (ik, iv) in v.as_object().unwrap() {
                if iv.is_null() {
                    c["ipam"].as_object_mut().unwrap().remove(ik);
                } else {
                    c["ipam"][ik] = iv.clone();
                }
            }
        } else if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
}

/// A pod namespace and its container ID.
struct Pod {
    ns: Netns,
    cid: String,
}

impl Pod {
    fn new() -> Pod {
        let ns = Netns::new("hhp");
        Pod {
            cid: format!("hh-{}", ns.name),
            ns,
        }
    }

    fn links(&self) -> BTreeSet<String> {
        ifnames(&parse_json(&self.ns.exec(&["ip", "-j", "link", "show"])))
    }

    fn link(&self, name: &str) -> Value {
        parse_json(&self.ns.exec(&["ip", "-d", "-j", "link", "show", name]))[0].clone()
    }

    fn call(&self, command: &str, ifname: &str, conf: &Value) -> Call {
        Call::new(command, &self.cid, &self.ns.path(), ifname, conf)
    }
}

/// The pod's namespace bound to a file of the test's own (as runtimes pin a pod's netns), unmounted
/// on demand (leaving the empty file a runtime would still pass) or at drop.
struct BoundNetns {
    dir: TempDir,
    mounted: bool,
}

impl BoundNetns {
    fn new(pod: &Pod) -> BoundNetns {
        let mut b = BoundNetns {
            dir: TempDir::new("hhbind"),
            mounted: false,
        };
        std::fs::write(b.path(), b"").expect("create the mount point");
        run(&["mount", "--bind", &pod.ns.path(), &b.path_str()]);
        b.mounted = true;
        b
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("netns")
    }

    fn path_str(&self) -> String {
        self.path().display().to_string()
    }

    fn umount(&mut self) {
        run(&["umount", &self.path_str()]);
        self.mounted = false;
        let meta = std::fs::metadata(self.path()).expect("the file stays");
        assert_eq!(meta.len(), 0, "an unmounted netns leaves an empty file");
    }
}

impl Drop for BoundNetns {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.path()).output();
        }
    }
}

fn assert_err(out: &Outcome, code: u64, needles: &[&str]) -> Value {
    let e = out.err(code);
    let msg = e["msg"].as_str().unwrap_or_default().to_string();
    for n in needles {
        assert!(
            msg.contains(n),
            "error message {msg:?} does not name {n:?}: {e}"
        );
    }
    e
}

fn lo_only() -> BTreeSet<String> {
    BTreeSet::from(["lo".to_string()])
}

// ---------------------------------------------------------------------------------------------------
// plumb-bridge: the namespace is gone

#[test]
fn bridge_del_after_umount_releases_everything() {
    if unavailable(
        "bridge_del_after_umount_releases_everything",
        &["nft", "mount"],
    ) {
        return;
    }
    let node = Node::new(1);
    let conf = node.conf(json!({"macspoofchk": true, "ipMasq": true}));
    let empty = node.snapshot();
    let pod = Pod::new();
    let mut bound = BoundNetns::new(&pod);
    let path = bound.path_str();
    let call = |cmd: &str| pod.call(cmd, IFNAME, &conf).env("CNI_NETNS", &path);
    let r = node.bridge(&call("ADD")).ok();
    let hv = host_veth(&r);
    assert!(node.has_link(&hv));
    assert_eq!(node.chains().len(), 2, "spoof check and masquerade");
    assert_eq!(node.reservations().len(), 1);
    bound.umount();
    // ADD and CHECK on the empty file: code 3 naming CNI_NETNS.
    assert_err(
        &node.bridge(&call("ADD")),
        3,
        &["CNI_NETNS", &path, "empty file"],
    );
    let mut check = conf.clone();
    check["prevResult"] = r.clone();
    let out = node.bridge(&pod.call("CHECK", IFNAME, &check).env("CNI_NETNS", &path));
    assert_err(&out, 3, &["CNI_NETNS", "empty file"]);
    // DEL releases everything host-side and succeeds, twice.
    for round in 0..2 {
        node.bridge(&call("DEL")).ok();
        assert!(!node.has_link(&hv), "DEL {round}: host veth left");
        assert_eq!(node.chains(), BTreeSet::new(), "DEL {round}: chains left");
        assert!(node.reservations().is_empty(), "DEL {round}: IP left");
    }
    // The pod end went with its host veth, though the pod was never entered.
    assert_eq!(pod.links(), lo_only());
    node.sh(&["ip", "link", "del", &node.bridge]);
    assert_eq!(node.snapshot(), empty);
}

#[test]
fn bridge_del_with_a_missing_path_or_a_directory() {
    if unavailable("bridge_del_with_a_missing_path_or_a_directory", &["nft"]) {
        return;
    }
    let node = Node::new(2);
    let conf = node.conf(json!({"macspoofchk": true}));
    let dir = TempDir::new("hhdir");
    let missing = dir.path().join("gone").display().to_string();
    let directory = dir.path().display().to_string();
    for (path, why) in [(&missing, "nothing is there"), (&directory, "directory")] {
        let pod = Pod::new();
        // ADD refuses before anything is made.
        let before = node.snapshot();
        let out = node.bridge(&pod.call("ADD", IFNAME, &conf).env("CNI_NETNS", path));
        assert_err(&out, 3, &["CNI_NETNS", path, why]);
        assert_eq!(
            node.snapshot(),
            before,
            "{why}: the refused ADD left something"
        );
        let r = node.bridge(&pod.call("ADD", IFNAME, &conf)).ok();
        let hv = host_veth(&r);
        node.bridge(&pod.call("DEL", IFNAME, &conf).env("CNI_NETNS", path))
            .ok();
        assert!(!node.has_link(&hv), "{why}: host veth left");
        assert_eq!(node.chains(), BTreeSet::new(), "{why}: chain left");
        assert!(node.reservations().is_empty(), "{why}: IP left");
        assert_eq!(pod.links(), lo_only());
    }
}

// ---------------------------------------------------------------------------------------------------
// plumb-bridge: the host's own namespace

#[test]
fn bridge_refuses_the_host_netns_and_its_del_spares_the_host() {
    if unavailable(
        "bridge_refuses_the_host_netns_and_its_del_spares_the_host",
        &["nft"],
    ) {
        return;
    }
    let node = Node::new(3);
    let conf = node.conf(json!({"macspoofchk": true, "isGateway": true}));
    let pod = Pod::new();
    // The node's own eth0, which a DEL aimed at the host namespace must not touch.
    node.sh(&[
        "ip", "link", "add", IFNAME, "type", "veth", "peer", "name", "eth0peer",
    ]);
    let before = node.snapshot();
    let node_path = node.ns.path();
    for path in ["/proc/self/ns/net", "/proc/thread-self/ns/net", &node_path] {
        let out = node.bridge(&pod.call("ADD", IFNAME, &conf).env("CNI_NETNS", path));
        assert_err(
            &out,
            4,
            &["CNI_NETNS", path, "host's own network namespace"],
        );
        assert_eq!(
            node.snapshot(),
            before,
            "{path}: the refused ADD left something"
        );
        assert!(!node.has_link(&node.bridge));
        let mut check = conf.clone();
        check["prevResult"] = json!({"cniVersion": "1.0.0"});
        let out = node.bridge(&pod.call("CHECK", IFNAME, &check).env("CNI_NETNS", path));
        assert_err(&out, 4, &["CNI_NETNS"]);
        node.bridge(&pod.call("DEL", IFNAME, &conf).env("CNI_NETNS", path))
            .ok();
        assert_eq!(node.snapshot(), before, "{path}: DEL changed the host");
        assert!(node
            .sh(&["ip", "-d", "-j", "link", "show", IFNAME])
            .contains("\"veth\""));
    }
    // PID 1's namespace (the real host's) is refused too, and nothing is made in the node either
    // (where PID 1's namespace can be opened at all: some sandboxes deny it even to root).
    if std::fs::File::open("/proc/1/ns/net").is_err() {
        return;
    }
    let out = node.bridge(
        &pod.call("ADD", IFNAME, &conf)
            .env("CNI_NETNS", "/proc/1/ns/net"),
    );
    assert_err(&out, 4, &["/proc/1/ns/net", "host's own network namespace"]);
    assert_eq!(node.snapshot(), before);
}

// ---------------------------------------------------------------------------------------------------
// plumb-bridge: DEL removes only what its attachment made

#[test]
fn bridge_del_after_105_spares_the_pods_own_interface() {
    if unavailable(
        "bridge_del_after_105_spares_the_pods_own_interface",
        &["nft"],
    ) {
        return;
    }
    let node = Node::new(4);
    let conf = node.conf(json!({"macspoofchk": true, "ipMasq": true}));
    let empty = node.snapshot();
    let pod = Pod::new();
    pod.ns.exec(&[
        "ip", "link", "add", IFNAME, "type", "veth", "peer", "name", "eth0peer",
    ]);
    let out = node.bridge(&pod.call("ADD", IFNAME, &conf));
    assert_err(&out, 105, &["already has an interface named eth0"]);
    // Nothing of the failed ADD is left, not even the bridge it created.
    assert_eq!(node.snapshot(), empty);
    for round in 0..2 {
        node.bridge(&pod.call("DEL", IFNAME, &conf)).ok();
        assert_eq!(
            pod.link(IFNAME)["linkinfo"]["info_kind"],
            "veth",
            "DEL {round} deleted the pod's own eth0"
        );
        assert!(pod.links().contains("eth0peer"));
    }
}

#[test]
fn bridge_del_with_ifname_lo_succeeds_and_keeps_lo() {
    if unavailable("bridge_del_with_ifname_lo_succeeds_and_keeps_lo", &["nft"]) {
        return;
    }
    let node = Node::new(5);
    let conf = node.conf(json!({"macspoofchk": true}));
    let empty = node.snapshot();
    let pod = Pod::new();
    let out = node.bridge(&pod.call("ADD", "lo", &conf));
    assert_err(&out, 105, &["already has an interface named lo"]);
    assert_eq!(node.snapshot(), empty);
    for _ in 0..2 {
        node.bridge(&pod.call("DEL", "lo", &conf)).ok();
        assert_eq!(pod.links(), lo_only());
        assert!(pod.link("lo")["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("UP"))));
    }
}

#[test]
fn bridge_del_succeeds_on_configs_add_refuses() {
    if unavailable("bridge_del_succeeds_on_configs_add_refuses", &["nft"]) {
        return;
    }
    let node = Node::new(6);
    let conf = node.conf(json!({"macspoofchk": true, "ipMasq": true}));
    let bad = [
        json!({"runtimeConfig": {"mac": "01:00:5e:00:00:01"}}),
        json!({"vlan": 5000, "isGateway": "true", "mtu": 3}),
        json!({"vlanTrunk": {"id": 0}, "dns": 5, "ipMasqBackend": "ebpf"}),
    ];
    for extra in bad {
        let pod = Pod::new();
        let mut del_conf = conf.clone();
        merge(&mut del_conf, extra.clone());
        // ADD refuses it (code 7) ...
        let before = node.snapshot();
        assert_err(&node.bridge(&pod.call("ADD", IFNAME, &del_conf)), 7, &[]);
        assert_eq!(node.snapshot(), before);
        // ... but DEL of an attachment made with the good config succeeds on it and removes all.
        let r = node.bridge(&pod.call("ADD", IFNAME, &conf)).ok();
        node.bridge(&pod.call("DEL", IFNAME, &del_conf)).ok();
        assert!(!node.has_link(&host_veth(&r)), "{extra}: host veth left");
        assert_eq!(node.chains(), BTreeSet::new(), "{extra}: chains left");
        assert!(node.reservations().is_empty(), "{extra}: IP left");
        assert_eq!(pod.links(), lo_only());
    }
    // A bridge name over 15 bytes names no bridge: DEL still removes the attachment's own things.
    let pod = Pod::new();
    let r = node.bridge(&pod.call("ADD", IFNAME, &conf)).ok();
    let mut long = conf.clone();
    long["bridge"] = json!("a-bridge-name-far-too-long");
    node.bridge(&pod.call("DEL", IFNAME, &long)).ok();
    assert!(!node.has_link(&host_veth(&r)));
    assert_eq!(node.chains(), BTreeSet::new());
    assert!(node.reservations().is_empty());
}

// ---------------------------------------------------------------------------------------------------
// plumb-bridge: DEL is best effort

#[test]
fn bridge_del_runs_every_step_when_one_fails() {
    if unavailable("bridge_del_runs_every_step_when_one_fails", &["nft"]) {
        return;
    }
    let node = Node::new(7);
    let conf = node.conf(json!({"macspoofchk": true, "ipMasq": true}));
    let pod = Pod::new();
    let r = node.bridge(&pod.call("ADD", IFNAME, &conf)).ok();
    let hv = host_veth(&r);
    // The nftables step of the spoof check fails: the veth, the masquerade chain and the IP still go.
    let out = node.bridge(
        &pod.call("DEL", IFNAME, &conf)
            .env("PLUMB_FAILPOINT", "del-spoofcheck"),
    );
    assert_err(
        &out,
        199,
        &["spoofcheck", "1 failed", "DEL can be repeated"],
    );
    assert!(
        out.stderr
            .contains("plumb-bridge: DEL step \"spoofcheck\" failed"),
        "{}",
        out.stderr
    );
    assert!(!node.has_link(&hv), "the host veth stayed");
    assert!(node.reservations().is_empty(), "the IP stayed");
    let left = node.chains();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left.iter().all(|c| c.contains(SPOOF_TABLE)), "{left:?}");
    assert_eq!(pod.links(), lo_only());
    node.bridge(&pod.call("DEL", IFNAME, &conf)).ok();
    assert_eq!(node.chains(), BTreeSet::new());

    // An IPAM plugin that cannot run: everything else still goes, and the error names the step.
    let pod = Pod::new();
    let r = node.bridge(&pod.call("ADD", IFNAME, &conf)).ok();
    let mut broken = conf.clone();
    broken["ipam"]["type"] = json!("plumb-no-such-ipam");
    let out = node.bridge(&pod.call("DEL", IFNAME, &broken));
    let e = out.err(out.json()["code"].as_u64().unwrap_or(0));
    assert!(e["msg"].as_str().unwrap().contains("ipam: "), "{e}");
    assert!(out
        .stderr
        .contains("plumb-bridge: DEL step \"ipam\" failed"));
    assert!(!node.has_link(&host_veth(&r)));
    assert_eq!(node.chains(), BTreeSet::new());
    assert_eq!(node.reservations().len(), 1, "the IPAM DEL did not run");
    node.bridge(&pod.call("DEL", IFNAME, &conf)).ok();
    assert!(node.reservations().is_empty());
}

// ---------------------------------------------------------------------------------------------------
// plumb-bridge: a failed ADD leaves nothing, not even the bridge it made

#[test]
fn bridge_failed_add_removes_the_bridge_it_made() {
    if unavailable("bridge_failed_add_removes_the_bridge_it_made", &["nft"]) {
        return;
    }
    let node = Node::new(8);
    let base = json!({"macspoofchk": true, "ipMasq": true, "isGateway": true});
    // A keeper on another bridge holds the only address of a one-address range.
    let other = unique_name("hk");
    let one = json!({"ipam": {"range_start": format!("{}.10", node.prefix),
                              "range_end": format!("{}.10", node.prefix)}});
    let mut keeper_conf = node.conf(base.clone());
    merge(&mut keeper_conf, one.clone());
    keeper_conf["bridge"] = json!(other);
    let keeper = Pod::new();
    node.bridge(&keeper.call("ADD", IFNAME, &keeper_conf)).ok();
    let before = node.snapshot();
    let cases: Vec<(&str, Value, u64, Vec<String>)> = vec![
        (
            "missing IPAM plugin",
            json!({"ipam": {"type": "plumb-no-such-ipam"}}),
            0,
            vec![],
        ),
        ("exhausted range", one, 100, vec!["exhausted".into()]),
        (
            "unreachable route",
            json!({"ipam": {"routes": [{"dst": "198.18.0.0/24", "gw": "192.0.2.1"}]}}),
            5,
            vec!["cannot configure the container interface".into()],
        ),
        (
            "conflicting routes",
            json!({"ipam": {"routes": [{"dst": "198.18.0.0/24", "gw": node.gw()},
                                       {"dst": "198.18.0.0/24", "gw": format!("{}.254", node.prefix)}]}}),
            7,
            vec!["same destination".into()],
        ),
        ("failpoint after the bridge", json!({}), 199, vec![]),
    ];
    for (what, extra, code, needles) in cases {
        let mut conf = node.conf(base.clone());
        merge(&mut conf, extra);
        let pod = Pod::new();
        let mut call = pod.call("ADD", IFNAME, &conf);
        if code == 199 {
            call = call.env("PLUMB_FAILPOINT", "bridge");
        }
        let out = node.bridge(&call);
        if code == 0 {
            assert_ne!(out.exit, 0, "{what}: ADD succeeded");
        } else {
            let n: Vec<&str> = needles.iter().map(String::as_str).collect();
            assert_err(&out, code, &n);
        }
        assert!(
            !node.has_link(&node.bridge),
            "{what}: the bridge this ADD made is left"
        );
        assert_eq!(node.snapshot(), before, "{what}: something is left");
        assert_eq!(pod.links(), lo_only(), "{what}");
        // The runtime's DEL after the failed ADD changes nothing; it succeeds, except that an IPAM
        // plugin that cannot be run is reported (whether it holds an address is unknown).
        let del = node.bridge(&pod.call("DEL", IFNAME, &conf));
        if code == 0 {
            assert_err(&del, 7, &["ipam: ", "plumb-no-such-ipam"]);
        } else {
            del.ok();
        }
        assert_eq!(node.snapshot(), before, "{what}: DEL after the failed ADD");
    }
    node.bridge(&keeper.call("DEL", IFNAME, &keeper_conf)).ok();
    node.sh(&["ip", "link", "del", &other]);
}

#[test]
fn bridge_failed_add_keeps_a_bridge_that_was_there() {
    if unavailable("bridge_failed_add_keeps_a_bridge_that_was_there", &["nft"]) {
        return;
    }
    let node = Node::new(9);
    node.sh(&["ip", "link", "add", &node.bridge, "type", "bridge"]);
    let before = node.snapshot();
    let conf = node.conf(json!({"ipam": {"type": "plumb-no-such-ipam"}}));
    let pod = Pod::new();
    assert_ne!(node.bridge(&pod.call("ADD", IFNAME, &conf)).exit, 0);
    assert_eq!(node.snapshot(), before, "a bridge that existed must stay");
}

/// The bridge's addresses other than link-local ones (the kernel adds an fe80:: address when a port
/// brings the bridge's carrier up), as "ip/len".
fn bridge_addresses(node: &Node) -> BTreeSet<String> {
    parse_json(&node.sh(&["ip", "-j", "addr", "show", "dev", &node.bridge]))[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["scope"] != "link")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

#[test]
fn bridge_failed_add_takes_back_only_the_gateway_address_it_added() {
    if unavailable(
        "bridge_failed_add_takes_back_only_the_gateway_address_it_added",
        &["nft"],
    ) {
        return;
    }
    let node = Node::new(13);
    node.sh(&["ip", "link", "add", &node.bridge, "type", "bridge"]);
    // An address of the operator's own, on another subnet (and IPv6, so not in the gateway's way).
    node.sh(&["ip", "addr", "add", "fd00:4d::1/64", "dev", &node.bridge]);
    let conf = node.conf(json!({"isGateway": true, "ipMasq": true, "macspoofchk": true}));
    let gw = format!("{}/24", node.gw());
    for (pre_existing, step) in [
        (false, "gateway"),
        (false, "spoofcheck"),
        (true, "gateway"),
        (true, "spoofcheck"),
    ] {
        let what = format!("gateway address there before: {pre_existing}, failing after {step}");
        if pre_existing && !bridge_addresses(&node).contains(&gw) {
            node.sh(&["ip", "addr", "add", &gw, "dev", &node.bridge]);
        }
        let before = node.snapshot();
        let addrs = bridge_addresses(&node);
        assert_eq!(addrs.contains(&gw), pre_existing, "{what}");
        let pod = Pod::new();
        let out = node.bridge(&pod.call("ADD", IFNAME, &conf).env("PLUMB_FAILPOINT", step));
        assert_err(&out, 199, &[step]);
        assert!(node.has_link(&node.bridge), "{what}: the bridge went");
        assert_eq!(bridge_addresses(&node), addrs, "{what}");
        assert_eq!(node.snapshot(), before, "{what}: something is left");
        assert_eq!(pod.links(), lo_only(), "{what}");
    }
    // The successful ADD adds it (when missing) and keeps it after DEL, as the reference does.
    node.sh(&["ip", "addr", "del", &gw, "dev", &node.bridge]);
    let pod = Pod::new();
    node.bridge(&pod.call("ADD", IFNAME, &conf)).ok();
    assert!(bridge_addresses(&node).contains(&gw));
    node.bridge(&pod.call("DEL", IFNAME, &conf)).ok();
    assert!(bridge_addresses(&node).contains(&gw));
}

/// The lock file plumb-bridge and plumb-vxlan share for bridge `name`.
fn bridge_lock(name: &str) -> PathBuf {
    std::path::Path::new("/run/plumb/locks").join(format!("bridge-{name}"))
}

/// Makes bridge `name`'s lock file look last used an hour ago: GC spares lock files used in the
/// last ten minutes (another namespace sharing /run may use the bridge).
fn age_lock(name: &str) {
    std::fs::File::options()
        .write(true)
        .open(bridge_lock(name))
        .expect("the lock file exists")
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        .expect("backdate the lock file");
}

/// A GC call (cniVersion 1.1.0) with `valid` as the attachments to keep.
fn gc_call(conf: &Value, valid: Value) -> Call {
    let mut conf = conf.clone();
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = valid;
    Call::new("GC", "", "", "", &conf)
        .without("CNI_CONTAINERID")
        .without("CNI_NETNS")
        .without("CNI_IFNAME")
}

#[test]
fn gc_sweeps_lock_files_of_bridges_deleted_behind_its_back() {
    if unavailable(
        "gc_sweeps_lock_files_of_bridges_deleted_behind_its_back",
        &["nft"],
    ) {
        return;
    }
    let node = Node::new(15);
    let gone = unique_name("hg");
    let (pa, pb) = (Pod::new(), Pod::new());
    let kept_conf = node.conf(json!({}));
    let mut gone_conf = node.conf(json!({"ipam": {"range": format!("{}.0/25", node.prefix),
                                                  "gateway": null}}));
    gone_conf["bridge"] = json!(gone);
    let ra = node.bridge(&pa.call("ADD", IFNAME, &kept_conf)).ok();
    node.bridge(&pb.call("ADD", IFNAME, &gone_conf)).ok();
    assert!(bridge_lock(&node.bridge).exists() && bridge_lock(&gone).exists());
    // The operator deletes a bridge (its pod's veth goes with it); no DEL follows.
    node.sh(&["ip", "link", "del", &gone]);
    let valid = json!([{"containerID": pa.cid, "ifname": IFNAME}]);
    // Just used: GC spares it.
    node.bridge(&gc_call(&kept_conf, valid.clone())).ok();
    assert!(bridge_lock(&gone).exists());
    // Time passes; the bridge that stays is just as old.
    age_lock(&gone);
    age_lock(&node.bridge);
    let out = node.bridge(&gc_call(&kept_conf, valid));
    out.ok();
    assert!(
        !bridge_lock(&gone).exists(),
        "GC left the lock file of a deleted bridge"
    );
    assert!(
        bridge_lock(&node.bridge).exists(),
        "GC removed the lock file of a bridge that exists"
    );
    assert!(
        out.stderr.contains("lock file(s) of bridges that are gone"),
        "{}",
        out.stderr
    );
    // The bridge that stays still works under its (kept) lock.
    let mut check = kept_conf.clone();
    check["prevResult"] = ra;
    node.bridge(&pa.call("CHECK", IFNAME, &check)).ok();
    node.bridge(&pa.call("DEL", IFNAME, &kept_conf)).ok();
    node.sh(&["ip", "link", "del", &node.bridge]);
    let _ = std::fs::remove_file(bridge_lock(&node.bridge));
    vxlan_gc_sweeps_lock_files_of_bridges_that_are_gone();
}

// ---------------------------------------------------------------------------------------------------
// plumb-bridge: results tell the truth

#[test]
fn bridge_conflicting_routes_are_config_errors() {
    if unavailable("bridge_conflicting_routes_are_config_errors", &["nft"]) {
        return;
    }
    let node = Node::new(10);
    let keeper = Pod::new();
    let plain = node.conf(json!({}));
    node.bridge(&keeper.call("ADD", IFNAME, &plain)).ok();
    let before = node.snapshot();
    let alt = format!("{}.254", node.prefix);
    // plumb-ipam refuses two routes to one destination itself (ipam_hostile): the reference `static`
    // IPAM passes them on, so it stands in for any IPAM whose result carries such a pair.
    let statik = |routes: Value| {
        json!({"type": "static", "range": null, "dataDir": null, "gateway": null,
            "addresses": [{"address": format!("{}.77/24", node.prefix), "gateway": node.gw()}],
            "routes": routes})
    };
    let cases = [
        (
            json!({"ipam": statik(json!([{"dst": "0.0.0.0/0", "gw": node.gw()}, {"dst": "0.0.0.0/0", "gw": alt}]))}),
            vec![
                format!("0.0.0.0/0 via {}", node.gw()),
                format!("0.0.0.0/0 via {alt}"),
            ],
        ),
        (
            json!({"isDefaultGateway": true, "ipam": {"routes": [{"dst": "0.0.0.0/0", "gw": alt}]}}),
            vec![
                "\"isDefaultGateway\"".to_string(),
                format!("via {}", node.gw()),
                format!("0.0.0.0/0 via {alt}"),
            ],
        ),
    ];
    for (extra, needles) in cases {
        let conf = node.conf(extra.clone());
        let pod = Pod::new();
        let out = node.bridge(&pod.call("ADD", IFNAME, &conf));
        let n: Vec<&str> = needles.iter().map(String::as_str).collect();
        assert_err(&out, 7, &n);
        assert_eq!(node.snapshot(), before, "{extra}: something is left");
        assert_eq!(pod.links(), lo_only());
    }
    // The same default route twice (with and without `gw`), and isDefaultGateway agreeing with the
    // IPAM's default route, are one route: ADD succeeds, CHECK passes.
    let conf = node.conf(json!({"isDefaultGateway": true,
        "ipam": statik(json!([{"dst": "0.0.0.0/0", "gw": node.gw()}, {"dst": "0.0.0.0/0"}]))}));
    let pod = Pod::new();
    let r = node.bridge(&pod.call("ADD", IFNAME, &conf)).ok();
    let mut check = conf.clone();
    check["prevResult"] = r;
    node.bridge(&pod.call("CHECK", IFNAME, &check)).ok();
    node.bridge(&pod.call("DEL", IFNAME, &conf)).ok();
    node.bridge(&keeper.call("DEL", IFNAME, &plain)).ok();
}

#[test]
fn bridge_is_gateway_needs_a_gateway_from_ipam() {
    if unavailable("bridge_is_gateway_needs_a_gateway_from_ipam", &["nft"]) {
        return;
    }
    let node = Node::new(11);
    let empty = node.snapshot();
    let pod = Pod::new();
    // plumb-ipam without a gateway would hand out the subnet's first address, the bridge's too.
    let conf = node.conf(json!({"isGateway": true, "ipam": {"gateway": null}}));
    let out = node.bridge(&pod.call("ADD", IFNAME, &conf));
    assert_err(
        &out,
        7,
        &["isGateway needs a gateway from IPAM: set ipam.gateway"],
    );
    assert_eq!(node.snapshot(), empty);
    assert_eq!(pod.links(), lo_only());
    // A pod address that is the gateway itself (static IPAM): refused whether or not isGateway.
    let ip = format!("{}.1", node.prefix);
    for gateway in [true, false] {
        let conf = node.conf(
            json!({"isGateway": gateway, "ipam": {"type": "static", "range": null,
            "dataDir": null, "gateway": null,
            "addresses": [{"address": format!("{ip}/24"), "gateway": ip}]}}),
        );
        let out = node.bridge(&pod.call("ADD", IFNAME, &conf));
        assert_err(&out, 7, &[&format!("{ip}/24"), "also the gateway"]);
        assert_eq!(node.snapshot(), empty, "isGateway {gateway}");
        assert_eq!(pod.links(), lo_only());
    }
    // With a gateway, the pod never gets it.
    let conf = node.conf(json!({"isGateway": true}));
    let r = node.bridge(&pod.call("ADD", IFNAME, &conf)).ok();
    assert_ne!(first_address(&r), node.gw());
    node.bridge(&pod.call("DEL", IFNAME, &conf)).ok();
}

// ---------------------------------------------------------------------------------------------------
// plumb-macspoofchk

#[test]
fn macspoofchk_refuses_gone_and_host_netns_and_deletes_after_umount() {
    if unavailable(
        "macspoofchk_refuses_gone_and_host_netns_and_deletes_after_umount",
        &["nft", "mount"],
    ) {
        return;
    }
    let node = Node::new(12);
    let conf = node.conf(json!({}));
    let pod = Pod::new();
    let mut bound = BoundNetns::new(&pod);
    let path = bound.path_str();
    let r = node
        .bridge(&pod.call("ADD", IFNAME, &conf).env("CNI_NETNS", &path))
        .ok();
    let chained = json!({"cniVersion": "1.0.0", "name": node.net, "type": "plumb-macspoofchk",
                         "prevResult": r});
    let spoof = |cmd: &str, netns: &str| {
        node.run(
            "plumb-macspoofchk",
            &pod.call(cmd, IFNAME, &chained).env("CNI_NETNS", netns),
        )
    };
    let before = node.chains();
    for netns in ["/proc/self/ns/net", &node.ns.path()] {
        assert_err(&spoof("ADD", netns), 4, &["CNI_NETNS", "host's own"]);
    }
    assert_eq!(node.chains(), before);
    spoof("ADD", &path).ok();
    assert_eq!(node.chains().len(), before.len() + 1);
    bound.umount();
    assert_err(&spoof("ADD", &path), 3, &["CNI_NETNS", "empty file"]);
    assert_err(&spoof("CHECK", &path), 3, &["CNI_NETNS"]);
    spoof("DEL", &path).ok();
    spoof("DEL", &path).ok();
    assert_eq!(node.chains(), before, "the spoof-check chain stayed");
    node.bridge(&pod.call("DEL", IFNAME, &conf).env("CNI_NETNS", &path))
        .ok();
    assert!(node.reservations().is_empty());
    assert!(!node.has_link(&host_veth(&r)));
}

#[test]
fn macspoofchk_refuses_a_prev_result_naming_another_pods_veth() {
    if unavailable(
        "macspoofchk_refuses_a_prev_result_naming_another_pods_veth",
        &["nft", "ping"],
    ) {
        return;
    }
    let node = Node::new(14);
    let conf = node.conf(json!({}));
    let (a, b) = (Pod::new(), Pod::new());
    let ra = node.bridge(&a.call("ADD", IFNAME, &conf)).ok();
    let rb = node.bridge(&b.call("ADD", IFNAME, &conf)).ok();
    let (ha, hb) = (host_veth(&ra), host_veth(&rb));
    let chained = |prev: &Value| {
        json!({"cniVersion": "1.0.0", "name": node.net, "type": "plumb-macspoofchk",
               "prevResult": prev})
    };
    // Pod A's result with pod B's host veth in place of A's; and B's whole result given for pod A.
    let mut forged = ra.clone();
    for i in forged["interfaces"].as_array_mut().unwrap() {
        if i["name"] == ha.as_str() {
            i["name"] = json!(hb);
        }
    }
    assert!(forged.to_string().contains(&hb));
    for prev in [&forged, &rb] {
        let out = node.run("plumb-macspoofchk", &a.call("ADD", IFNAME, &chained(prev)));
        assert_err(
            &out,
            7,
            &[&format!(
                "host veth {hb} is not the peer of the container interface {IFNAME}"
            )],
        );
        assert_eq!(node.chains(), BTreeSet::new(), "a chain was installed");
    }
    // B's traffic is untouched: A reaches B.
    let ip_b = first_address(&rb);
    assert!(
        a.ns.try_exec(&["ping", "-c", "1", "-W", "2", &ip_b]),
        "pod A cannot reach pod B"
    );
    // The right prevResult still works, and puts the chain on A's veth.
    node.run("plumb-macspoofchk", &a.call("ADD", IFNAME, &chained(&ra)))
        .ok();
    let chains = node.chains();
    assert_eq!(chains.len(), 1);
    let rules = node.sh(&["nft", "list", "table", "netdev", SPOOF_TABLE]);
    assert!(rules.contains(&ha), "{rules}");
    assert!(!rules.contains(&hb), "{rules}");
    node.run("plumb-macspoofchk", &a.call("DEL", IFNAME, &chained(&ra)))
        .ok();
    for p in [&a, &b] {
        node.bridge(&p.call("DEL", IFNAME, &conf)).ok();
    }
}

// ---------------------------------------------------------------------------------------------------
// plumb-vxlan

/// A node with an underlay `und0` (one end of a veth pair, 10.98.0.1/24, default route out of it)
/// for plumb-vxlan.
fn vx_node(octet: u8) -> Node {
    let node = Node::new(octet);
    node.sh(&[
        "ip", "link", "add", "und0", "type", "veth", "peer", "name", "und0p",
    ]);
    node.sh(&["ip", "link", "set", "und0p", "up"]);
    node.sh(&["ip", "addr", "add", "10.98.0.1/24", "dev", "und0"]);
    node.sh(&["ip", "link", "set", "und0", "up"]);
    node.sh(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        "10.98.0.2",
        "dev",
        "und0",
    ]);
    node
}

fn vx_conf(node: &Node, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.1.0",
        "name": node.net,
        "type": "plumb-vxlan",
        "bridge": node.bridge,
        "vni": 42,
        "peers": ["10.98.0.2"],
        "macspoofchk": true,
        "ipam": {
            "type": "plumb-ipam",
            "range": format!("{}.0/24", node.prefix),
            "dataDir": node.data.path(),
        },
    });
    merge(&mut c, extra);
    c
}

fn vxlan(node: &Node, call: &Call) -> Outcome {
    node.run("plumb-vxlan", call)
}

#[test]
fn vxlan_del_after_umount_and_on_configs_add_refuses() {
    if unavailable(
        "vxlan_del_after_umount_and_on_configs_add_refuses",
        &["nft", "mount"],
    ) {
        return;
    }
    let node = vx_node(20);
    // A router pod (masquerading out of its eth0) behind a bound netns file.
    let conf = vx_conf(&node, json!({"role": "router"}));
    let pod = Pod::new();
    pod.ns.exec(&[
        "ip", "link", "add", IFNAME, "type", "veth", "peer", "name", "eth0peer",
    ]);
    let mut bound = BoundNetns::new(&pod);
    let path = bound.path_str();
    let call = |cmd: &str, conf: &Value| pod.call(cmd, VX_IFNAME, conf).env("CNI_NETNS", &path);
    let r = vxlan(&node, &call("ADD", &conf)).ok();
    let hv = host_veth(&r);
    assert!(node.has_link(&hv));
    assert_eq!(node.chains().len(), 1);
    bound.umount();
    assert_err(
        &vxlan(&node, &call("ADD", &conf)),
        3,
        &["CNI_NETNS", "empty file"],
    );
    // DEL on the empty file, with a config ADD would refuse: everything host-side goes.
    let mut bad = conf.clone();
    merge(
        &mut bad,
        json!({"vni": 0, "peers": null, "runtimeConfig": {"mac": "01:00:5e:00:00:01"}}),
    );
    assert_err(&vxlan(&node, &pod.call("ADD", VX_IFNAME, &bad)), 7, &[]);
    for _ in 0..2 {
        vxlan(&node, &call("DEL", &bad)).ok();
        assert!(!node.has_link(&hv));
        assert_eq!(node.chains(), BTreeSet::new());
        assert!(node.reservations().is_empty());
    }
    assert_eq!(
        pod.links(),
        BTreeSet::from(["lo".into(), IFNAME.to_string(), "eth0peer".into()])
    );
}

#[test]
fn vxlan_del_spares_foreign_interfaces_and_runs_every_step() {
    if unavailable(
        "vxlan_del_spares_foreign_interfaces_and_runs_every_step",
        &["nft"],
    ) {
        return;
    }
    let node = vx_node(21);
    let conf = vx_conf(&node, json!({}));
    let empty = node.snapshot();
    // 105: the pod already has net1; the failed ADD leaves nothing (not the bridge or VTEP it made),
    // and DEL leaves the pod's net1 alone.
    let pod = Pod::new();
    pod.ns.exec(&[
        "ip", "link", "add", VX_IFNAME, "type", "veth", "peer", "name", "net1peer",
    ]);
    assert_err(
        &vxlan(&node, &pod.call("ADD", VX_IFNAME, &conf)),
        105,
        &["already has an interface named net1"],
    );
    assert_eq!(node.snapshot(), empty);
    vxlan(&node, &pod.call("DEL", VX_IFNAME, &conf)).ok();
    assert_eq!(pod.link(VX_IFNAME)["linkinfo"]["info_kind"], "veth");
    assert!(pod.links().contains("net1peer"));
    // CNI_IFNAME=lo.
    assert_err(&vxlan(&node, &pod.call("ADD", "lo", &conf)), 105, &["lo"]);
    vxlan(&node, &pod.call("DEL", "lo", &conf)).ok();
    assert!(pod.links().contains("lo"));
    // The host's own namespace.
    let out = vxlan(
        &node,
        &pod.call("ADD", VX_IFNAME, &conf)
            .env("CNI_NETNS", "/proc/self/ns/net"),
    );
    assert_err(&out, 4, &["CNI_NETNS", "host's own"]);
    assert_eq!(node.snapshot(), empty);
    // Best effort: the spoof-check step fails, the veth and the IP still go.
    let pod = Pod::new();
    let r = vxlan(&node, &pod.call("ADD", VX_IFNAME, &conf)).ok();
    let out = vxlan(
        &node,
        &pod.call("DEL", VX_IFNAME, &conf)
            .env("PLUMB_FAILPOINT", "del-spoofcheck"),
    );
    assert_err(&out, 199, &["spoofcheck"]);
    assert!(out
        .stderr
        .contains("plumb-vxlan: DEL step \"spoofcheck\" failed"));
    assert!(!node.has_link(&host_veth(&r)));
    assert!(node.reservations().is_empty());
    assert_eq!(node.chains().len(), 1);
    vxlan(&node, &pod.call("DEL", VX_IFNAME, &conf)).ok();
    assert_eq!(node.chains(), BTreeSet::new());
    assert_eq!(pod.links(), lo_only());
}

/// plumb-vxlan's GC sweeps too (part of the plumb-bridge GC test, which it must not run beside: a
/// sweep in one node namespace removes aged lock files of bridges only another one has).
fn vxlan_gc_sweeps_lock_files_of_bridges_that_are_gone() {
    let node = vx_node(22);
    let conf = vx_conf(&node, json!({}));
    let pod = Pod::new();
    node.run("plumb-vxlan", &pod.call("ADD", VX_IFNAME, &conf))
        .ok();
    assert!(bridge_lock(&node.bridge).exists());
    // A lock file of a bridge that was never there any more (its namespace went, say).
    let gone = unique_name("hv");
    std::fs::write(bridge_lock(&gone), b"").unwrap();
    age_lock(&gone);
    let valid = json!([{"containerID": pod.cid, "ifname": VX_IFNAME}]);
    vxlan(&node, &gc_call(&conf, valid)).ok();
    assert!(
        !bridge_lock(&gone).exists(),
        "GC left a gone bridge's lock file"
    );
    assert!(bridge_lock(&node.bridge).exists());
    vxlan(&node, &pod.call("DEL", VX_IFNAME, &conf)).ok();
    let _ = std::fs::remove_file(bridge_lock(&node.bridge));
}
