//! plumb-bridge `uplink`: seed 004 with no host preconfiguration (docs/bridge.md, "Uplinks").
//!
//! Each test builds a private node namespace whose "NIC" is one end of a veth pair; the other end sits in
//! a "switch" namespace, where an 802.1Q interface per VLAN (2003, 2004, 2005) is moved into a namespace
//! of its own, standing in for a host on that VLAN of the switch's trunk port. Pods are namespaces
//! attached by plumb-bridge run inside the node namespace. Tests that need 802.1Q and bridge VLAN
//! filtering skip loudly on a kernel without them (they run in the VM lane); the refusals, which happen
//! before anything is made, and the cleanup command on hand-marked interfaces run on any kernel.

use conformance::iproute::parse_json;
use conformance::netns::{vlan_kernel, Netns};
use conformance::plugin::{Call, Outcome};
use conformance::result::{first_address, host_veth};
use conformance::skip::{skip, unavailable};
use conformance::{plumb_bin, unique_name, TempDir};
use plumb_attach::naming::uplink_vlan;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

const IFNAME: &str = "eth0";
const VLANS: [u16; 3] = [2003, 2004, 2005];
/// The uplink's MTU, below the default so that "MTU taken from the uplink" shows.
const UPLINK_MTU: u32 = 1400;

// ---------------------------------------------------------------------------------------------------
// Fixtures

/// Skips (loudly) a test that needs 802.1Q and VLAN filtering when this kernel lacks them.
fn vlan_skip(test: &str) -> bool {
    if unavailable(test, &["nft", "ping", "bridge"]) {
        return true;
    }
    let reason = match vlan_kernel() {
        (false, _) => "this kernel has no bridge VLAN filtering; runs in the VM lane",
        (_, false) => "this kernel has no 802.1Q VLAN devices (8021q); runs in the VM lane",
        _ => return false,
    };
    skip(test, reason);
    true
}

/// Which layout a config asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    PerVlan,
    Trunk,
}

/// The node namespace with its NIC (`uplink`), the switch namespace with the NIC's peer `sw`, and
/// the hosts on the switch's VLANs.
struct Node {
    ns: Netns,
    switch: Netns,
    uplink: String,
    /// Per-VLAN bridge names (or the one trunk bridge for every VLAN).
    bridges: BTreeMap<u16, String>,
    net: String,
    data: TempDir,
    /// First three octets of the subnet all VLANs share (so only the VLAN keeps them apart).
    prefix: String,
    hosts: BTreeMap<u16, Netns>,
}

impl Node {
    /// `uplink_prefix` decides the uplink's name length: a long one makes `<uplink>.<vid>` take the
    /// short form.
    fn new(uplink_prefix: &str, octet: u8, layout: Layout) -> Node {
        let ns = Netns::new("pun");
        let switch = Netns::new("pus");
        let uplink = unique_name(uplink_prefix);
        conformance::netns::run(&[
            "ip",
            "link",
            "add",
            &uplink,
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            "sw",
            "netns",
            &switch.name,
        ]);
        let mtu = UPLINK_MTU.to_string();
        ns.exec(&["ip", "link", "set", &uplink, "mtu", &mtu, "up"]);
        switch.exec(&["ip", "link", "set", "sw", "mtu", &mtu, "up"]);
        let base = unique_name("pu");
        let bridges = VLANS
            .iter()
            .map(|&v| {
                let name = match layout {
                    Layout::PerVlan => format!("{}{}", &base[..base.len().min(10)], v),
                    Layout::Trunk => base.clone(),
                };
                (v, name)
            })
            .collect();
        Node {
            ns,
            switch,
            net: format!("unet-{uplink}"),
            uplink,
            bridges,
            data: TempDir::new("puipam"),
            prefix: format!("10.244.{octet}"),
            hosts: BTreeMap::new(),
        }
    }

    /// A host on VLAN `vid` of the switch, at `<prefix>.<200 + vid % 100>`.
    fn add_switch_host(&mut self, vid: u16) -> String {
        let sub = format!("sw.{vid}");
        let v = vid.to_string();
        self.switch.exec(&[
            "ip", "link", "add", "link", "sw", "name", &sub, "type", "vlan", "id", &v,
        ]);
        let host = Netns::new("puh");
        self.switch
            .exec(&["ip", "link", "set", &sub, "netns", &host.name]);
        let addr = format!("{}.{}", self.prefix, 200 + vid % 100);
        host.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", &sub]);
        host.exec(&["ip", "link", "set", &sub, "up"]);
        self.hosts.insert(vid, host);
        addr
    }

    /// The seed-004 NAD config for VLAN `vid` (spoof check on), in `layout`, plus `extra` keys.
    fn conf(&self, vid: u16, layout: Layout, extra: Value) -> Value {
        let first = 10 + (vid % 100) * 40;
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": format!("{}-{vid}", self.net),
            "type": "plumb-bridge",
            "bridge": self.bridges[&vid],
            "uplink": self.uplink,
            "vlan": vid,
            "macspoofchk": true,
            "ipam": {
                "type": "plumb-ipam",
                "range": format!("{}.0/24", self.prefix),
                "range_start": format!("{}.{first}", self.prefix),
                "range_end": format!("{}.{}", self.prefix, first + 30),
                "dataDir": self.data.path(),
            },
        });
        if layout == Layout::Trunk {
            c["vlanFiltering"] = json!(true);
        }
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    }

    fn run(&self, command: &str, pod: &Pod, conf: &Value) -> Outcome {
        Call::new(command, &pod.cid, &pod.ns.path(), IFNAME, conf)
            .run_in(&plumb_bin("plumb-bridge"), &self.ns.name)
    }

    /// ADD with `PLUMB_FAILPOINT=<step>`: an injected failure after that step.
    fn add_failing_at(&self, pod: &Pod, conf: &Value, step: &str) -> Outcome {
        Call::new("ADD", &pod.cid, &pod.ns.path(), IFNAME, conf)
            .env("PLUMB_FAILPOINT", step)
            .run_in(&plumb_bin("plumb-bridge"), &self.ns.name)
    }

    fn add(&self, pod: &Pod, conf: &Value) -> Value {
        self.run("ADD", pod, conf).ok()
    }

    fn check(&self, pod: &Pod, conf: &Value, result: &Value) -> Outcome {
        let mut c = conf.clone();
        c["prevResult"] = result.clone();
        self.run("CHECK", pod, &c)
    }

    fn del(&self, pod: &Pod, conf: &Value) {
        self.run("DEL", pod, conf).ok();
    }

    /// `plumb-bridge --gc-uplinks [args]` in the node namespace: (exit code, stdout).
    fn gc(&self, args: &[&str]) -> (i32, String) {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .arg(plumb_bin("plumb-bridge"))
            .arg("--gc-uplinks")
            .args(args)
            .env_clear()
            .output()
            .expect("run --gc-uplinks");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn link(&self, name: &str) -> Option<Value> {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns.name,
                "ip",
                "-d",
                "-j",
                "link",
                "show",
                name,
            ])
            .output()
            .expect("ip link show");
        out.status
            .success()
            .then(|| parse_json(&String::from_utf8_lossy(&out.stdout))[0].clone())
    }

    fn names(&self) -> BTreeSet<String> {
        conformance::iproute::ifnames(&parse_json(&self.ns.exec(&["ip", "-j", "link", "show"])))
    }

    /// `bridge -j vlan show dev <dev>`: the VLAN ids and whether each leaves tagged.
    fn vlans(&self, dev: &str) -> BTreeMap<u64, bool> {
        let v = parse_json(&self.ns.exec(&["bridge", "-j", "vlan", "show", "dev", dev]));
        let mut out = BTreeMap::new();
        for entry in v.as_array().into_iter().flatten() {
            for vl in entry["vlans"].as_array().into_iter().flatten() {
                let lo = vl["vlan"].as_u64().expect("vid");
                let hi = vl["vlanEnd"].as_u64().unwrap_or(lo);
                let untagged = vl["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "Egress Untagged"));
                for vid in lo..=hi {
                    out.insert(vid, !untagged);
                }
            }
        }
        out
    }

    fn reservations(&self) -> BTreeSet<String> {
        conformance::ipam_records(self.data.path(), &["ip-"])
    }
}

struct Pod {
    ns: Netns,
    cid: String,
}

impl Pod {
    fn new() -> Pod {
        let ns = Netns::new("pup");
        Pod {
            cid: format!("up-{}", ns.name),
            ns,
        }
    }

    fn ping(&self, ip: &str) -> bool {
        self.ns.try_exec(&["ping", "-c1", "-W2", ip])
    }

    fn ping_fails(&self, ip: &str) -> bool {
        !self.ns.try_exec(&["ping", "-c1", "-W1", ip])
    }
}

fn master(link: &Value) -> Option<&str> {
    link["master"].as_str()
}

fn assert_err(out: &Outcome, code: u64, needles: &[&str]) {
    let e = out.err(code);
    let msg = e["msg"].as_str().unwrap_or_default();
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} does not say {n:?}");
    }
}

// ---------------------------------------------------------------------------------------------------
// Seed 004 in both layouts: traffic, isolation, spoof check, MTU, CHECK, DEL, cleanup

/// Three VLANs, two pods on 2003 and one each on 2004 and 2005; the hosts on the switch's VLANs.
fn seed_004(layout: Layout, uplink_prefix: &str, octet: u8) {
    let mut node = Node::new(uplink_prefix, octet, layout);
    let hosts: BTreeMap<u16, String> = VLANS
        .iter()
        .map(|&v| (v, node.add_switch_host(v)))
        .collect();
    let confs: BTreeMap<u16, Value> = VLANS
        .iter()
        .map(|&v| (v, node.conf(v, layout, json!({}))))
        .collect();
    // In the per-VLAN layout the NIC may carry the node's own untagged traffic: it never becomes a
    // bridge port, so the node keeps its address on it.
    let untagged = format!("10.250.{octet}");
    if layout == Layout::PerVlan {
        node.ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{untagged}.1/24"),
            "dev",
            &node.uplink,
        ]);
        node.switch.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{untagged}.2/24"),
            "dev",
            "sw",
        ]);
    }
    let pods: Vec<(u16, Pod)> = [2003, 2003, 2004, 2005]
        .into_iter()
        .map(|v| (v, Pod::new()))
        .collect();
    let results: Vec<Value> = pods.iter().map(|(v, p)| node.add(p, &confs[v])).collect();

    // The pieces: MTU from the uplink on every end.
    for ((v, p), r) in pods.iter().zip(&results) {
        let pod_if = parse_json(&p.ns.exec(&["ip", "-j", "link", "show", IFNAME]))[0].clone();
        for l in [
            node.link(&node.bridges[v]).expect("bridge"),
            node.link(&host_veth(r)).expect("host veth"),
            pod_if,
        ] {
            assert_eq!(l["mtu"], json!(UPLINK_MTU), "{l}");
        }
    }
    match layout {
        Layout::PerVlan => {
            for v in VLANS {
                let sub = uplink_vlan(&node.uplink, v);
                assert!(sub.len() <= 15, "{sub}");
                let l = node.link(&sub).unwrap_or_else(|| panic!("{sub} missing"));
                assert_eq!(l["linkinfo"]["info_kind"], "vlan", "{l}");
                assert_eq!(l["linkinfo"]["info_data"]["id"], json!(v), "{l}");
                assert_eq!(master(&l), Some(node.bridges[&v].as_str()), "{l}");
                assert_eq!(l["ifalias"], json!(format!("plumb-uplink:{}", node.uplink)));
                let br = node.link(&node.bridges[&v]).expect("bridge");
                assert_eq!(br["mtu"], json!(UPLINK_MTU), "{br}");
            }
            // The NIC itself is no bridge port: its own untagged traffic is untouched.
            assert_eq!(master(&node.link(&node.uplink).unwrap()), None);
            assert!(
                node.ns
                    .try_exec(&["ping", "-c1", "-W2", &format!("{untagged}.2")]),
                "the node lost its untagged address on the NIC"
            );
        }
        Layout::Trunk => {
            let up = node.link(&node.uplink).unwrap();
            assert_eq!(master(&up), Some(node.bridges[&2003].as_str()), "{up}");
            assert_eq!(
                node.vlans(&node.uplink),
                VLANS.iter().map(|&v| (v as u64, true)).collect(),
                "the uplink carries exactly the attachments' VLANs, tagged"
            );
        }
    }

    // Each pod reaches the host on its own VLAN (untagged in the pod, tagged on the wire: the host's
    // interface takes only frames tagged with its VLAN), and its same-VLAN neighbour.
    for ((v, p), r) in pods.iter().zip(&results) {
        assert!(
            p.ping(&hosts[v]),
            "pod on {v} cannot reach the switch's VLAN {v} host"
        );
        assert!(
            !node.hosts[v].ping_fails_from(&first_address(r)),
            "the VLAN {v} host cannot reach its pod"
        );
    }
    assert!(pods[0].1.ping(&first_address(&results[1])), "2003 pods");
    // A pod on 2003 never sees 2004 or 2005 traffic, though all share one subnet.
    for v in [2004, 2005] {
        assert!(
            pods[0].1.ping_fails(&hosts[&v]),
            "2003 pod reached the {v} host"
        );
        assert!(
            node.hosts[&v].ping_fails_from(&first_address(&results[0])),
            "the {v} host reached the 2003 pod"
        );
    }
    assert!(
        pods[2].1.ping_fails(&first_address(&results[0])),
        "2004 pod reached the 2003 pod"
    );

    // Spoofed MACs are dropped at the pod's port.
    let own = results[0]["interfaces"][2]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    let pod = &pods[0].1;
    pod.ns
        .exec(&["ip", "link", "set", IFNAME, "address", "02:00:00:44:00:aa"]);
    pod.ns.exec(&["ip", "neigh", "flush", "all"]);
    node.hosts[&2003].exec(&["ip", "neigh", "flush", "all"]);
    assert!(
        pod.ping_fails(&hosts[&2003]),
        "a spoofed MAC reached the switch"
    );
    pod.ns.exec(&["ip", "link", "set", IFNAME, "address", &own]);
    pod.ns.exec(&["ip", "neigh", "flush", "all"]);
    assert!(pod.ping(&hosts[&2003]), "own MAC again");

    for ((v, p), r) in pods.iter().zip(&results) {
        node.check(p, &confs[v], r).ok();
    }

    // DEL leaves the uplink pieces; in the one-bridge layout each VLAN leaves the uplink with its last
    // attachment.
    node.del(&pods[3].1, &confs[&2005]);
    node.del(&pods[2].1, &confs[&2004]);
    node.del(&pods[1].1, &confs[&2003]);
    if layout == Layout::Trunk {
        assert_eq!(node.vlans(&node.uplink), BTreeMap::from([(2003, true)]));
    }
    node.del(&pods[0].1, &confs[&2003]);
    assert!(node.reservations().is_empty());
    let pieces: Vec<String> = match layout {
        Layout::PerVlan => VLANS
            .iter()
            .flat_map(|&v| [uplink_vlan(&node.uplink, v), node.bridges[&v].clone()])
            .collect(),
        Layout::Trunk => vec![node.bridges[&2003].clone()],
    };
    for p in &pieces {
        assert!(node.link(p).is_some(), "DEL removed the shared {p}");
    }
    if layout == Layout::Trunk {
        assert_eq!(node.vlans(&node.uplink), BTreeMap::new());
        assert!(master(&node.link(&node.uplink).unwrap()).is_some());
    }

    // The cleanup command lists the unused pieces, then removes them; the NIC stays, on no bridge.
    let (code, listed) = node.gc(&[]);
    assert_eq!(code, 0, "{listed}");
    for p in &pieces {
        assert!(listed.contains(p.as_str()), "{p} not listed: {listed}");
    }
    assert!(listed.lines().all(|l| l.starts_with("unused ")), "{listed}");
    let (code, removed) = node.gc(&["--remove"]);
    assert_eq!(code, 0, "{removed}");
    assert_eq!(removed.lines().count(), listed.lines().count(), "{removed}");
    for p in &pieces {
        assert!(node.link(p).is_none(), "{p} not removed: {removed}");
    }
    let up = node.link(&node.uplink).expect("the NIC stays");
    assert_eq!(master(&up), None);
    assert_eq!(node.gc(&[]), (0, String::new()));
}

trait PingFrom {
    fn ping_fails_from(&self, ip: &str) -> bool;
}

impl PingFrom for Netns {
    /// A ping from this namespace to `ip` fails (short wait).
    fn ping_fails_from(&self, ip: &str) -> bool {
        !self.try_exec(&["ping", "-c1", "-W2", ip])
    }
}

#[test]
fn uplink_per_vlan_bridges_seed_004() {
    if vlan_skip("uplink_per_vlan_bridges_seed_004") {
        return;
    }
    // A long uplink name: `<uplink>.<vid>` takes the short form.
    seed_004(Layout::PerVlan, "uplinknic", 1);
}

#[test]
fn uplink_one_filtering_bridge_seed_004() {
    if vlan_skip("uplink_one_filtering_bridge_seed_004") {
        return;
    }
    seed_004(Layout::Trunk, "up", 2);
}

// ---------------------------------------------------------------------------------------------------
// Concurrency

/// Runs every (pod, conf) ADD at once; returns the outcomes in order.
fn add_all_at_once(node: &Node, calls: &[(&Pod, &Value)]) -> Vec<Outcome> {
    std::thread::scope(|s| {
        let handles: Vec<_> = calls
            .iter()
            .map(|(p, c)| s.spawn(move || node.run("ADD", p, c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    })
}

#[test]
fn uplink_concurrent_first_adds_make_the_pieces_once() {
    if vlan_skip("uplink_concurrent_first_adds_make_the_pieces_once") {
        return;
    }
    // Per-VLAN: three pods on 2003 and three on 2004, all first at once.
    let node = Node::new("up", 3, Layout::PerVlan);
    let (c3, c4) = (
        node.conf(2003, Layout::PerVlan, json!({})),
        node.conf(2004, Layout::PerVlan, json!({})),
    );
    let pods: Vec<Pod> = (0..6).map(|_| Pod::new()).collect();
    let calls: Vec<(&Pod, &Value)> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| (p, if i % 2 == 0 { &c3 } else { &c4 }))
        .collect();
    for o in add_all_at_once(&node, &calls) {
        o.ok();
    }
    let names = node.names();
    for v in [2003, 2004] {
        let sub = uplink_vlan(&node.uplink, v);
        assert!(names.contains(&sub), "{names:?}");
        let ports =
            parse_json(
                &node
                    .ns
                    .exec(&["ip", "-j", "link", "show", "master", &node.bridges[&v]]),
            );
        let ports = conformance::iproute::ifnames(&ports);
        assert_eq!(
            ports.len(),
            4,
            "one VLAN interface and three pods: {ports:?}"
        );
        assert!(ports.contains(&sub));
    }
    assert_eq!(
        names.iter().filter(|n| n.contains('.')).count(),
        2,
        "{names:?}"
    );

    // Two bridges racing for one VLAN of the uplink: one gets <uplink>.2005, the other is refused.
    let other = format!(
        "{}x",
        &node.bridges[&2005][..node.bridges[&2005].len().min(14)]
    );
    let (a, b) = (
        node.conf(2005, Layout::PerVlan, json!({})),
        node.conf(
            2005,
            Layout::PerVlan,
            json!({"bridge": other, "name": format!("{}-x", node.net)}),
        ),
    );
    let (pa, pb) = (Pod::new(), Pod::new());
    let outs = add_all_at_once(&node, &[(&pa, &a), (&pb, &b)]);
    let ok: Vec<bool> = outs.iter().map(|o| o.exit == 0).collect();
    assert_eq!(ok.iter().filter(|x| **x).count(), 1, "{outs:?}");
    let loser = outs.iter().find(|o| o.exit != 0).unwrap();
    assert_err(loser, 7, &["already a port of", "never moves an interface"]);

    // One bridge: three VLANs at once; the uplink carries exactly those.
    let trunk = Node::new("up", 4, Layout::Trunk);
    let confs: Vec<Value> = VLANS
        .iter()
        .map(|&v| trunk.conf(v, Layout::Trunk, json!({})))
        .collect();
    let tpods: Vec<Pod> = (0..3).map(|_| Pod::new()).collect();
    let calls: Vec<(&Pod, &Value)> = tpods.iter().zip(&confs).collect();
    for o in add_all_at_once(&trunk, &calls) {
        o.ok();
    }
    assert_eq!(
        trunk.vlans(&trunk.uplink),
        VLANS.iter().map(|&v| (v as u64, true)).collect()
    );
}

// ---------------------------------------------------------------------------------------------------
// CHECK reports drift; ADD verifies and repairs what it may, refuses what it must not change

#[test]
fn uplink_check_reports_drift() {
    if vlan_skip("uplink_check_reports_drift") {
        return;
    }
    let node = Node::new("up", 5, Layout::PerVlan);
    let conf = node.conf(2003, Layout::PerVlan, json!({}));
    let (p, q) = (Pod::new(), Pod::new());
    let r = node.add(&p, &conf);
    let sub = uplink_vlan(&node.uplink, 2003);
    let br = node.bridges[&2003].clone();
    node.check(&p, &conf, &r).ok();
    let drift = |args: &[&str], undo: &[&str], needle: &str| {
        node.ns.exec(args);
        assert_err(&node.check(&p, &conf, &r), 102, &[needle]);
        node.ns.exec(undo);
        node.check(&p, &conf, &r).ok();
    };
    drift(
        &["ip", "link", "set", &sub, "down"],
        &["ip", "link", "set", &sub, "up"],
        "is down",
    );
    drift(
        &["ip", "link", "set", &br, "down"],
        &["ip", "link", "set", &br, "up"],
        "is not up",
    );
    drift(
        &["ip", "link", "set", &sub, "nomaster"],
        &["ip", "link", "set", &sub, "master", &br],
        "is not a port of bridge",
    );
    drift(
        &["ip", "link", "set", &node.uplink, "down"],
        &["ip", "link", "set", &node.uplink, "up"],
        "uplink",
    );
    // The VLAN interface gone: CHECK says so, the next ADD makes it again.
    node.ns.exec(&["ip", "link", "del", &sub]);
    assert_err(&node.check(&p, &conf, &r), 102, &[&sub, "is missing"]);
    let rq = node.add(&q, &conf);
    node.check(&p, &conf, &r).ok();
    node.check(&q, &conf, &rq).ok();
    // Replaced by one of the wrong VLAN: CHECK and ADD say so; ADD changes nothing.
    node.ns.exec(&["ip", "link", "del", &sub]);
    node.ns.exec(&[
        "ip",
        "link",
        "add",
        "link",
        &node.uplink,
        "name",
        &sub,
        "type",
        "vlan",
        "id",
        "2099",
    ]);
    assert_err(
        &node.check(&p, &conf, &r),
        102,
        &["carries VLAN 2099", "needs VLAN 2003"],
    );
    let pr = Pod::new();
    assert_err(
        &node.run("ADD", &pr, &conf),
        7,
        &["carries VLAN 2099", "does not change an interface's VLAN"],
    );
    assert_eq!(
        node.link(&sub).unwrap()["linkinfo"]["info_data"]["id"],
        json!(2099)
    );
    assert_eq!(master(&node.link(&sub).unwrap()), None);
    node.ns.exec(&["ip", "link", "del", &sub]);
    node.del(&p, &conf);
    node.del(&q, &conf);

    // One-bridge layout: the uplink leaves the bridge, or loses a VLAN.
    let node = Node::new("up", 6, Layout::Trunk);
    let conf = node.conf(2004, Layout::Trunk, json!({}));
    let p = Pod::new();
    let r = node.add(&p, &conf);
    node.check(&p, &conf, &r).ok();
    node.ns
        .exec(&["bridge", "vlan", "del", "dev", &node.uplink, "vid", "2004"]);
    assert_err(
        &node.check(&p, &conf, &r),
        102,
        &["does not carry VLAN 2004"],
    );
    node.ns
        .exec(&["bridge", "vlan", "add", "dev", &node.uplink, "vid", "2004"]);
    node.check(&p, &conf, &r).ok();
    node.ns
        .exec(&["ip", "link", "set", &node.uplink, "nomaster"]);
    assert_err(
        &node.check(&p, &conf, &r),
        102,
        &["is not a port of bridge"],
    );
    node.del(&p, &conf);
}

// ---------------------------------------------------------------------------------------------------
// A failed first ADD takes back the uplink pieces it made

#[test]
fn uplink_failed_first_add_leaves_nothing() {
    if vlan_skip("uplink_failed_first_add_leaves_nothing") {
        return;
    }
    for (layout, octet) in [(Layout::PerVlan, 9), (Layout::Trunk, 10)] {
        let node = Node::new("up", octet, layout);
        let conf = node.conf(2003, layout, json!({}));
        let before = node.names();
        let p = Pod::new();
        for step in ["uplink", "bridge", "ipam", "spoofcheck"] {
            let out = node.add_failing_at(&p, &conf, step);
            assert_err(&out, 199, &[step]);
            assert_eq!(
                node.names(),
                before,
                "{layout:?}: failure after {step} left links"
            );
            assert_eq!(
                master(&node.link(&node.uplink).unwrap()),
                None,
                "{layout:?} {step}"
            );
            assert!(node.reservations().is_empty(), "{layout:?} {step}");
        }
        // An existing VLAN interface of the right VLAN joins a new bridge; a failed ADD releases it
        // (and removes the bridge it made), leaving the interface as it was.
        if layout == Layout::PerVlan {
            let sub = uplink_vlan(&node.uplink, 2003);
            node.ns.exec(&[
                "ip",
                "link",
                "add",
                "link",
                &node.uplink,
                "name",
                &sub,
                "type",
                "vlan",
                "id",
                "2003",
            ]);
            let before = node.names();
            assert_err(&node.add_failing_at(&p, &conf, "ipam"), 199, &["ipam"]);
            assert_eq!(node.names(), before);
            assert_eq!(master(&node.link(&sub).unwrap()), None);
            assert_eq!(
                node.link(&sub).unwrap()["ifalias"],
                Value::Null,
                "not plumb's: no mark"
            );
        }
    }
}

/// With the one-bridge layout the uplink carries the pods' VLANs; it must not keep their VLAN gateway
/// `<bridge>.<vid>` alive: DEL of the last pod of the VLAN and a failed ADD on an existing bridge take it.
#[test]
fn uplink_vlan_gateway_goes_with_the_last_pod_of_its_vlan() {
    if vlan_skip("uplink_vlan_gateway_goes_with_the_last_pod_of_its_vlan") {
        return;
    }
    let node = Node::new("up", 11, Layout::Trunk);
    let gw_conf = |vid: u16| {
        let mut c = node.conf(vid, Layout::Trunk, json!({"isGateway": true}));
        c["ipam"]["gateway"] = json!(format!("{}.1", node.prefix));
        c
    };
    let (a, b) = (Pod::new(), Pod::new());
    let gw_if = format!("{}.2003", node.bridges[&2003]);
    // A pod of another VLAN first, so the bridge exists before the failed ADD.
    node.add(&a, &node.conf(2004, Layout::Trunk, json!({})));
    let before = node.names();
    let out = node.add_failing_at(&b, &gw_conf(2003), "spoofcheck");
    assert_err(&out, 199, &["spoofcheck"]);
    assert_eq!(node.names(), before, "a failed ADD left {gw_if} or more");
    assert!(!node.vlans(&node.uplink).contains_key(&2003));
    // A pod with its gateway: the VLAN interface while it lives, gone with it.
    node.add(&b, &gw_conf(2003));
    assert!(node.link(&gw_if).is_some(), "no VLAN gateway {gw_if}");
    assert!(node.vlans(&node.uplink).contains_key(&2003));
    node.del(&b, &gw_conf(2003));
    assert!(
        node.link(&gw_if).is_none(),
        "DEL left the VLAN gateway {gw_if}"
    );
    assert!(!node.vlans(&node.uplink).contains_key(&2003));
    // The other VLAN's pod is untouched.
    assert!(node.vlans(&node.uplink).contains_key(&2004));
    node.del(&a, &node.conf(2004, Layout::Trunk, json!({})));
}

// ---------------------------------------------------------------------------------------------------
// Refusals (before anything is made: these run on any kernel)

#[test]
fn uplink_refusals_leave_nothing() {
    if unavailable("uplink_refusals_leave_nothing", &[]) {
        return;
    }
    let node = Node::new("up", 7, Layout::Trunk);
    let before = node.names();
    let p = Pod::new();
    let refuse = |conf: Value, needles: &[&str]| {
        assert_err(&node.run("ADD", &p, &conf), 7, needles);
        assert_eq!(node.names(), before, "a refused ADD left something: {conf}");
        assert!(node.reservations().is_empty());
        node.run("DEL", &p, &conf).ok();
    };
    let trunk = node.conf(2003, Layout::Trunk, json!({}));
    let per_vlan = node.conf(2003, Layout::PerVlan, json!({}));

    refuse(
        node.conf(2003, Layout::Trunk, json!({"uplink": "nosuchnic0"})),
        &["no interface nosuchnic0"],
    );
    refuse(
        node.conf(2003, Layout::Trunk, json!({"mtu": 9000})),
        &["\"mtu\" 9000", "exceeds the MTU 1400"],
    );
    // The NIC holds the node's address: enslaving it would cut the node off.
    node.ns
        .exec(&["ip", "addr", "add", "192.0.2.10/24", "dev", &node.uplink]);
    refuse(
        trunk.clone(),
        &[
            "refusing to make",
            "192.0.2.10/24",
            "cut the node off",
            "Move them",
        ],
    );
    node.ns.exec(&["ip", "addr", "flush", "dev", &node.uplink]);
    // The default route through it, with no address.
    node.ns
        .exec(&["ip", "route", "add", "default", "dev", &node.uplink]);
    refuse(trunk.clone(), &["the default route", "cut the node off"]);
    node.ns.exec(&["ip", "route", "del", "default"]);
    // A port of another bridge is never moved.
    node.ns
        .exec(&["ip", "link", "add", "otherbr", "type", "bridge"]);
    node.ns
        .exec(&["ip", "link", "set", &node.uplink, "master", "otherbr"]);
    let before_with = node.names();
    assert_err(
        &node.run("ADD", &p, &trunk),
        7,
        &["already a port of otherbr", "never moves"],
    );
    assert_eq!(node.names(), before_with);
    node.ns.exec(&["ip", "link", "del", "otherbr"]);
    // `<uplink>.<vlan>` taken by an interface that is no VLAN interface of the uplink.
    let sub = uplink_vlan(&node.uplink, 2003);
    node.ns.exec(&[
        "ip", "link", "add", &sub, "type", "veth", "peer", "name", "subpeer",
    ]);
    let before_with = node.names();
    assert_err(
        &node.run("ADD", &p, &per_vlan),
        7,
        &[&sub, "not an 802.1Q VLAN interface", "remove or rename it"],
    );
    assert_eq!(node.names(), before_with);
    node.ns.exec(&["ip", "link", "del", &sub]);
    assert!(node.reservations().is_empty());
}

// ---------------------------------------------------------------------------------------------------
// The cleanup command on hand-marked interfaces (any kernel)

#[test]
fn gc_uplinks_lists_and_removes_only_unused_marked_pieces() {
    if unavailable(
        "gc_uplinks_lists_and_removes_only_unused_marked_pieces",
        &[],
    ) {
        return;
    }
    let node = Node::new("up", 8, Layout::Trunk);
    let mark = format!("plumb-uplink:{}", node.uplink);
    let sh = |args: &[&str]| node.ns.exec(args);
    // Marked, only the uplink as a port: unused.
    sh(&["ip", "link", "add", "gcunused", "type", "bridge"]);
    sh(&["ip", "link", "set", "gcunused", "alias", &mark]);
    sh(&["ip", "link", "set", &node.uplink, "master", "gcunused"]);
    // Marked, with a pod's port: in use.
    sh(&["ip", "link", "add", "gcinuse", "type", "bridge"]);
    sh(&["ip", "link", "set", "gcinuse", "alias", &mark]);
    sh(&[
        "ip", "link", "add", "plbpod", "type", "veth", "peer", "name", "plbpeer",
    ]);
    sh(&["ip", "link", "set", "plbpod", "master", "gcinuse"]);
    // Not plumb's: never listed.
    sh(&["ip", "link", "add", "gcforeign", "type", "bridge"]);

    assert_eq!(node.gc(&["--bogus"]).0, 2);
    let (code, out) = node.gc(&[]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!("unused bridge gcunused (uplink {})\n", node.uplink)
    );
    let (code, out) = node.gc(&["--remove"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!("removed bridge gcunused (uplink {})\n", node.uplink)
    );
    let names = node.names();
    assert!(!names.contains("gcunused"), "{names:?}");
    for kept in ["gcinuse", "gcforeign", "plbpod", node.uplink.as_str()] {
        assert!(names.contains(kept), "{kept} removed: {names:?}");
    }
    assert_eq!(
        master(&node.link(&node.uplink).unwrap()),
        None,
        "the NIC is released"
    );
    assert_eq!(node.gc(&[]), (0, String::new()));
}

// ---------------------------------------------------------------------------------------------------
// The deploy examples

#[test]
fn vlan_uplink_examples_are_seed_004_in_both_layouts() {
    use plumb_bridge::config::{BridgeConfig, UplinkLayout};
    let dir = conformance::workspace_root().join("deploy/examples/vlan-uplink");
    for (file, trunk) in [("per-vlan-bridges.yaml", false), ("one-bridge.yaml", true)] {
        let text = std::fs::read_to_string(dir.join(file)).expect(file);
        let mut vids = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let nad: Value = serde::Deserialize::deserialize(doc).expect(file);
            assert_eq!(nad["kind"], "NetworkAttachmentDefinition", "{file}");
            let raw = nad["spec"]["config"].as_str().expect("spec.config");
            let conf = plumb_cni::NetConf::parse(raw.as_bytes()).expect(file);
            let cfg =
                BridgeConfig::from_conf(&conf, None).unwrap_or_else(|e| panic!("{file}: {e:?}"));
            assert_eq!(cfg.uplink.as_deref(), Some("enp4s0f0"), "{file}");
            assert!(cfg.macspoofchk, "{file}");
            let vid = match cfg.uplink_layout {
                Some(UplinkLayout::PerVlan(v)) if !trunk => {
                    assert_eq!(
                        cfg.bridge,
                        format!("bridge{v}"),
                        "{file}: the seed's bridge names"
                    );
                    v
                }
                Some(UplinkLayout::Trunk) if trunk => cfg.vlan,
                other => panic!("{file}: layout {other:?}"),
            };
            assert_eq!(nad["metadata"]["name"], format!("vlan{vid}"), "{file}");
            vids.push(vid);
        }
        assert_eq!(vids, VLANS, "{file}");
    }
}
