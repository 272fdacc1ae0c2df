//! The node tenant policy (docs/policy.md), run the way Multus calls the plugins: CNI_ARGS with
//! `IgnoreUnknown=1;K8S_POD_NAMESPACE=...;K8S_POD_NAME=...;K8S_POD_INFRA_CONTAINER_ID=...;K8S_POD_UID=...`
//! and the policy file named by `PLUMB_POLICY_FILE`.
//!
//! Every test builds a private "node" namespace (a carrier veth to a peer namespace, with an address
//! and a default route, as plumb-vxlan's underlay) and a pod namespace, and runs the plugins inside the
//! node (`ip netns exec`). Every denial asserts code 106, the namespace, the field, the value and the
//! rule in the message, and that nothing was left: no bridge, veth or VTEP in the node, no interface
//! in the pod, no IPAM record. Allowed VLAN cases need bridge VLAN filtering and skip loudly without it
//! (the denials happen before anything is made, so they run on any kernel).

use conformance::iproute::{ifnames, parse_json};
use conformance::netns::{vlan_kernel, Netns};
use conformance::plugin::{Call, Outcome};
use conformance::skip::{skip, unavailable};
use conformance::{ipam_records, plumb_bin, unique_name, TempDir};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;

const POLICY_DENIED: u64 = 106;
const IFNAME: &str = "net1";
const CARRIER: &str = "car0";

/// A node namespace with an underlay, a pod namespace, an IPAM data directory and a policy file.
struct Lab {
    node: Netns,
    _peer: Netns,
    pod: Netns,
    data: TempDir,
    policy_dir: TempDir,
    cid: String,
}

impl Lab {
    fn new() -> Lab {
        let node = Netns::new("tpn");
        let peer = Netns::new("tpp");
        conformance::netns::veth_between(&node, &peer, CARRIER, 1500);
        node.exec(&["ip", "addr", "add", "10.98.0.1/24", "dev", CARRIER]);
        node.exec(&["ip", "link", "set", CARRIER, "up"]);
        peer.exec(&["ip", "link", "set", CARRIER, "up"]);
        node.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            "10.98.0.2",
            "dev",
            CARRIER,
        ]);
        Lab {
            node,
            _peer: peer,
            pod: Netns::new("tpd"),
            data: TempDir::new("tpipam"),
            policy_dir: TempDir::new("tppol"),
            cid: unique_name("tpc"),
        }
    }

    fn policy_path(&self) -> PathBuf {
        self.policy_dir.path().join("policy.json")
    }

    /// Writes the policy file (raw text, so a broken one can be written too).
    fn policy(&self, text: &str) {
        std::fs::write(self.policy_path(), text).expect("write policy");
    }

    /// A plumb-bridge config on `bridge` with plumb-ipam on `range`; `extra` keys override.
    fn bridge_conf(&self, bridge: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0",
            "name": format!("tp-{bridge}"),
            "type": "plumb-bridge",
            "bridge": bridge,
            "ipam": {"type": "plumb-ipam", "range": "10.77.1.0/24", "network_name": "tenant-a-pool",
                     "dataDir": self.data.path()},
        });
        merge(&mut c, extra);
        c
    }

    /// A plumb-vxlan config (multicast group 239.1.1.1, VNI 150) on `bridge`; `extra` keys override.
    fn vxlan_conf(&self, bridge: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0",
            "name": format!("tp-{bridge}"),
            "type": "plumb-vxlan",
            "bridge": bridge,
            "vni": 150,
            "group": "239.1.1.1",
            "ipam": {"type": "plumb-ipam", "range": "10.77.2.0/24", "dataDir": self.data.path()},
        });
        merge(&mut c, extra);
        c
    }

    /// A call as Multus makes it for a pod in `namespace` (`None`: CNI_ARGS without K8S_POD_NAMESPACE).
    fn call(&self, command: &str, conf: &Value, namespace: Option<&str>) -> Call {
        let ns = namespace.map_or(String::new(), |n| format!("K8S_POD_NAMESPACE={n};"));
        let args = format!(
            "IgnoreUnknown=1;{ns}K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=0b5e7a3c-1d2f-4e5a-9b8c-7d6e5f4a3b2c",
            self.cid
        );
        Call::new(command, &self.cid, &self.pod.path(), IFNAME, conf)
            .env("CNI_ARGS", &args)
            .env(
                "PLUMB_POLICY_FILE",
                &self.policy_path().display().to_string(),
            )
    }

    fn run(&self, bin: &str, command: &str, conf: &Value, namespace: Option<&str>) -> Outcome {
        self.call(command, conf, namespace)
            .run_in(&plumb_bin(bin), &self.node.name)
    }

    fn node_links(&self) -> BTreeSet<String> {
        ifnames(&parse_json(&self.node.exec(&["ip", "-j", "link", "show"])))
    }

    /// Nothing of a denied ADD is left: the node has only lo and the carrier, the pod only lo, and
    /// the IPAM data directory holds no claim or attachment record.
    fn assert_nothing_left(&self) {
        let want: BTreeSet<String> = ["lo", CARRIER].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            self.node_links(),
            want,
            "a denied ADD left links in the node"
        );
        let pod = ifnames(&parse_json(&self.pod.exec(&["ip", "-j", "link", "show"])));
        assert_eq!(
            pod,
            ["lo".to_string()].into(),
            "a denied ADD left links in the pod"
        );
        let records = ipam_records(self.data.path(), &["ip-", "att-"]);
        assert!(
            records.is_empty(),
            "a denied ADD left IPAM records: {records:?}"
        );
    }

    /// ADD succeeds, then DEL removes the attachment: only the shared devices stay (the bridge and,
    /// for plumb-vxlan, its VTEP, as after any DEL), which the test then removes.
    fn add_then_del(&self, bin: &str, conf: &Value, namespace: Option<&str>) -> Value {
        let r = self.run(bin, "ADD", conf, namespace).ok();
        self.run(bin, "DEL", conf, namespace).ok();
        let shared: Vec<String> = r["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["sandbox"].is_null())
            .filter_map(|i| i["name"].as_str().map(str::to_string))
            .filter(|n| n == conf["bridge"].as_str().unwrap_or_default() || n.ends_with("-vx"))
            .collect();
        for dev in shared.iter().rev() {
            self.node.exec(&["ip", "link", "del", dev]);
        }
        self.assert_nothing_left();
        r
    }
}

fn merge(c: &mut Value, extra: Value) {
    for (k, v) in extra.as_object().expect("extra is an object") {
        if k == "ipam" {
            for (ik, iv) in v.as_object().expect("ipam is an object") {
                c["ipam"][ik] = iv.clone();
            }
        } else {
            c[k] = v.clone();
        }
    }
}

/// Asserts a policy denial (code 106) whose message contains every needle; returns the message.
fn denied(out: &Outcome, needles: &[&str]) -> String {
    let e = out.err(POLICY_DENIED);
    let msg = e["msg"].as_str().unwrap_or_default().to_string();
    for n in needles {
        assert!(msg.contains(n), "denial {msg:?} does not name {n:?}: {e}");
    }
    msg
}

const TENANTS: &str = r#"{
    "default": {"bridges": ["br-shared-*"]},
    "namespaces": {
        "tenant-a": {
            "bridges": ["tpa*"],
            "vlans": [1, "2003-2005"],
            "vnis": ["100-199"],
            "groups": ["239.1.0.0/16"],
            "peers": ["10.98.0.0/24"],
            "ipamRanges": ["10.77.0.0/16"],
            "networkNames": ["tenant-a-*"]
        },
        "tenant-b": {"bridges": ["tpb*"], "require": {"macspoofchk": true}}
    }
}"#;

#[test]
fn bridge_outside_the_policy_is_denied_and_a_glob_allows() {
    if unavailable("bridge_outside_the_policy_is_denied_and_a_glob_allows", &[]) {
        return;
    }
    let lab = Lab::new();
    lab.policy(TENANTS);
    let theirs = unique_name("tpb");
    let out = lab.run(
        "plumb-bridge",
        "ADD",
        &lab.bridge_conf(&theirs, json!({})),
        Some("tenant-a"),
    );
    denied(
        &out,
        &[
            "namespace \"tenant-a\"",
            &format!("bridge \"{theirs}\""),
            "policy rule namespaces.\"tenant-a\".bridges",
            "(allowed: tpa*)",
        ],
    );
    lab.assert_nothing_left();
    let mine = unique_name("tpa");
    let r = lab.add_then_del(
        "plumb-bridge",
        &lab.bridge_conf(&mine, json!({"ipam": {"network_name": "tenant-a-pool"}})),
        Some("tenant-a"),
    );
    assert_eq!(r["interfaces"][0]["name"], mine.as_str(), "{r}");
}

#[test]
fn namespace_missing_from_cni_args_gets_the_default_rule() {
    if unavailable("namespace_missing_from_cni_args_gets_the_default_rule", &[]) {
        return;
    }
    let lab = Lab::new();
    lab.policy(TENANTS);
    // tenant-a's own bridge is not allowed without a namespace: the default rule applies.
    let mine = unique_name("tpa");
    let out = lab.run(
        "plumb-bridge",
        "ADD",
        &lab.bridge_conf(&mine, json!({})),
        None,
    );
    denied(
        &out,
        &[
            "no namespace in CNI_ARGS",
            "the default rule applies",
            &format!("bridge \"{mine}\""),
            "policy rule default.bridges",
            "(allowed: br-shared-*)",
        ],
    );
    lab.assert_nothing_left();
    // A namespace with no rule of its own gets the default too.
    let out = lab.run(
        "plumb-bridge",
        "ADD",
        &lab.bridge_conf(&mine, json!({})),
        Some("other"),
    );
    denied(&out, &["namespace \"other\"", "default.bridges"]);
    lab.assert_nothing_left();
    let shared = format!("br-shared-{}", &unique_name("s")[..4]);
    lab.add_then_del("plumb-bridge", &lab.bridge_conf(&shared, json!({})), None);
}

#[test]
fn vlans_outside_the_policy_are_denied_before_anything_is_made() {
    if unavailable(
        "vlans_outside_the_policy_are_denied_before_anything_is_made",
        &[],
    ) {
        return;
    }
    let lab = Lab::new();
    lab.policy(TENANTS);
    let br = unique_name("tpa");
    let cases = [
        (
            json!({"vlan": 2006}),
            vec!["vlan 2006", "(allowed: 1, 2003-2005)"],
        ),
        (
            json!({"vlan": 2003, "vlanTrunk": [{"id": 2004}, {"minID": 2004, "maxID": 2010}]}),
            vec!["vlanTrunk[1] 2004-2010", "2006 is not"],
        ),
        (
            json!({"vlanTrunk": [{"minID": 1000, "maxID": 2003}]}),
            vec!["vlanTrunk[0] 1000-2003", "1000 is not"],
        ),
        // A per-VLAN uplink bridge joins VLAN `vlan` of the wire even though its pods are untagged.
        (
            json!({"uplink": CARRIER, "vlan": 2006}),
            vec!["vlan 2006", "(allowed: 1, 2003-2005)"],
        ),
        // The uplink trunk of a VLAN-filtering bridge carries its fixed VLANs onto the bridge.
        (
            json!({"uplink": CARRIER, "vlanFiltering": true, "vlan": 2003,
                   "uplinkTrunk": [{"minID": 2003, "maxID": 2010}]}),
            vec!["uplinkTrunk[0] 2003-2010", "2006 is not"],
        ),
    ];
    for (extra, needles) in cases {
        let out = lab.run(
            "plumb-bridge",
            "ADD",
            &lab.bridge_conf(&br, extra.clone()),
            Some("tenant-a"),
        );
        let mut all = vec![
            "namespace \"tenant-a\"",
            "policy rule namespaces.\"tenant-a\".vlans",
        ];
        all.extend(needles);
        denied(&out, &all);
        lab.assert_nothing_left();
    }
    // Untagged (VLAN 1) is listed for tenant-a, so a port without VLANs is allowed on a plain bridge.
    lab.add_then_del(
        "plumb-bridge",
        &lab.bridge_conf(&br, json!({})),
        Some("tenant-a"),
    );
    // Without 1 in the list, an untagged port is denied (it would sit on the default VLAN 1).
    lab.policy(r#"{"default": {"vlans": ["2003-2005"]}}"#);
    let out = lab.run(
        "plumb-bridge",
        "ADD",
        &lab.bridge_conf(&br, json!({})),
        Some("tenant-a"),
    );
    denied(
        &out,
        &[
            "vlan (none: the port is untagged on the bridge's default VLAN 1)",
            "default.vlans",
            "list 1",
        ],
    );
    lab.assert_nothing_left();
    if !vlan_kernel().0 {
        skip(
            "vlans_outside_the_policy_are_denied_before_anything_is_made (allowed access and trunk VLANs)",
            "this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING); runs in the VM lane",
        );
        return;
    }
    let ok = json!({"vlan": 2003, "vlanTrunk": [{"minID": 2004, "maxID": 2005}]});
    lab.add_then_del("plumb-bridge", &lab.bridge_conf(&br, ok), Some("tenant-a"));
}

#[test]
fn ipam_range_and_network_name_outside_the_policy_are_denied() {
    if unavailable(
        "ipam_range_and_network_name_outside_the_policy_are_denied",
        &[],
    ) {
        return;
    }
    let lab = Lab::new();
    lab.policy(TENANTS);
    let br = unique_name("tpa");
    let cases = [
        (
            json!({"ipam": {"range": "10.78.0.0/24", "network_name": "tenant-a-x"}}),
            vec![
                "ipam.range 10.78.0.0/24",
                "namespaces.\"tenant-a\".ipamRanges",
                "(allowed: 10.77.0.0/16; a range must lie inside one of them)",
            ],
        ),
        (
            json!({"ipam": {"range": "10.0.0.0/8", "network_name": "tenant-a-x"}}),
            vec!["ipam.range 10.0.0.0/8"],
        ),
        (
            json!({"ipam": {"range": null, "ipRanges": [{"range": "10.99.0.0/24"}]}}),
            vec!["ipam.ipRanges[0] 10.99.0.0/24"],
        ),
        (
            json!({"ipam": {"network_name": "tenant-b-pool"}}),
            vec![
                "ipam.network_name \"tenant-b-pool\"",
                "namespaces.\"tenant-a\".networkNames",
                "(allowed: tenant-a-*)",
            ],
        ),
        (
            json!({"ipam": {"network_name": null}}),
            vec!["ipam.network_name absent (the shared pool \"_default\")"],
        ),
    ];
    for (extra, needles) in cases {
        let conf = lab.bridge_conf(&br, extra);
        let mut all = vec!["namespace \"tenant-a\""];
        all.extend(needles);
        // plumb-ipam itself, as a runtime would call it with the ipam section...
        denied(&lab.run("plumb-ipam", "ADD", &conf, Some("tenant-a")), &all);
        lab.assert_nothing_left();
        // ...and delegated from plumb-bridge, which takes back its veth and bridge.
        denied(
            &lab.run("plumb-bridge", "ADD", &conf, Some("tenant-a")),
            &all,
        );
        lab.assert_nothing_left();
    }
    let ok = lab.bridge_conf(
        &br,
        json!({"ipam": {"range": "10.77.9.0/24", "network_name": "tenant-a-pool"}}),
    );
    let r = lab.add_then_del("plumb-bridge", &ok, Some("tenant-a"));
    assert!(
        r["ips"][0]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("10.77.9.")),
        "{r}"
    );
}

#[test]
fn macspoofchk_required_by_policy_denies_off_and_turns_absent_on() {
    if unavailable(
        "macspoofchk_required_by_policy_denies_off_and_turns_absent_on",
        &["nft"],
    ) {
        return;
    }
    let lab = Lab::new();
    lab.policy(TENANTS);
    let br = unique_name("tpb");
    let off = lab.bridge_conf(&br, json!({"macspoofchk": false}));
    denied(
        &lab.run("plumb-bridge", "ADD", &off, Some("tenant-b")),
        &[
            "namespace \"tenant-b\"",
            "macspoofchk false",
            "namespaces.\"tenant-b\".require.macspoofchk",
            "policy requires macspoofchk: true",
        ],
    );
    lab.assert_nothing_left();
    // Absent: turned on, so the attachment gets its spoof-check chain in the node.
    let absent = lab.bridge_conf(&br, json!({}));
    let r = lab
        .run("plumb-bridge", "ADD", &absent, Some("tenant-b"))
        .ok();
    let mac = r["interfaces"][2]["mac"]
        .as_str()
        .expect("container mac")
        .to_string();
    let table = lab
        .node
        .exec(&["nft", "list", "table", "netdev", "plumb_spoofchk"]);
    assert!(
        table
            .to_ascii_lowercase()
            .contains(&mac.to_ascii_lowercase()),
        "no spoof check for {mac}: {table}"
    );
    lab.call(
        "CHECK",
        &{
            let mut c = absent.clone();
            c["prevResult"] = r.clone();
            c
        },
        Some("tenant-b"),
    )
    .run_in(&plumb_bin("plumb-bridge"), &lab.node.name)
    .ok();
    lab.run("plumb-bridge", "DEL", &absent, Some("tenant-b"))
        .ok();
    let table = lab
        .node
        .exec(&["nft", "list", "table", "netdev", "plumb_spoofchk"]);
    assert!(
        !table
            .to_ascii_lowercase()
            .contains(&mac.to_ascii_lowercase()),
        "DEL left the spoof check: {table}"
    );
    lab.node.exec(&["ip", "link", "del", &br]);
    lab.assert_nothing_left();
}

#[test]
fn vxlan_vni_group_and_peers_outside_the_policy_are_denied() {
    if unavailable(
        "vxlan_vni_group_and_peers_outside_the_policy_are_denied",
        &[],
    ) {
        return;
    }
    let lab = Lab::new();
    lab.policy(TENANTS);
    let br = unique_name("tpa");
    let theirs = unique_name("tpb");
    let net = json!({"ipam": {"network_name": "tenant-a-ovl"}});
    let with = |extra: Value| {
        let mut c = lab.vxlan_conf(&br, net.clone());
        merge(&mut c, extra);
        c
    };
    let cases = [
        (
            lab.vxlan_conf(&theirs, net.clone()),
            vec![format!("bridge \"{theirs}\""), ".bridges".into()],
        ),
        (
            with(json!({"vni": 42})),
            vec![
                "vni 42".into(),
                "namespaces.\"tenant-a\".vnis".into(),
                "(allowed: 100-199)".into(),
            ],
        ),
        (
            with(json!({"group": "224.0.0.88"})),
            vec![
                "group 224.0.0.88".into(),
                "namespaces.\"tenant-a\".groups".into(),
                "(allowed: 239.1.0.0/16)".into(),
            ],
        ),
        (
            with(json!({"group": null, "peers": ["10.98.0.2", "192.0.2.7"]})),
            vec![
                "peers 192.0.2.7".into(),
                "namespaces.\"tenant-a\".peers".into(),
                "(allowed: 10.98.0.0/24)".into(),
            ],
        ),
    ];
    for (conf, needles) in cases {
        let out = lab.run("plumb-vxlan", "ADD", &conf, Some("tenant-a"));
        let mut all: Vec<&str> = vec!["namespace \"tenant-a\""];
        all.extend(needles.iter().map(String::as_str));
        denied(&out, &all);
        lab.assert_nothing_left();
    }
    let r = lab.add_then_del("plumb-vxlan", &with(json!({})), Some("tenant-a"));
    assert_eq!(r["interfaces"][0]["name"], br.as_str(), "{r}");
    lab.add_then_del(
        "plumb-vxlan",
        &with(json!({"group": null, "peers": ["10.98.0.2"]})),
        Some("tenant-a"),
    );
}

#[test]
fn unparsable_policy_denies_add_and_check_but_del_and_gc_work() {
    if unavailable(
        "unparsable_policy_denies_add_and_check_but_del_and_gc_work",
        &[],
    ) {
        return;
    }
    let lab = Lab::new();
    // An attachment made while no policy file exists (today's behaviour)...
    let br = unique_name("tpa");
    let conf = lab.bridge_conf(&br, json!({}));
    let r = lab.run("plumb-bridge", "ADD", &conf, Some("tenant-a")).ok();
    // ...then the admin writes a policy with a typo: it fails closed.
    lab.policy(r#"{"default": {"bridgse": ["br0"]}}"#);
    let path = lab.policy_path().display().to_string();
    let parse = [
        "node policy file",
        path.as_str(),
        "does not parse",
        "unknown field `bridgse`",
        "every ADD is denied",
    ];
    let other = lab.bridge_conf(
        &unique_name("tpa"),
        json!({"ipam": {"range": "10.77.3.0/24"}}),
    );
    denied(
        &lab.run("plumb-bridge", "ADD", &other, Some("tenant-a")),
        &parse,
    );
    denied(
        &lab.run("plumb-ipam", "ADD", &other, Some("tenant-a")),
        &parse,
    );
    let mut check = conf.clone();
    check["prevResult"] = r.clone();
    denied(
        &lab.call("CHECK", &check, Some("tenant-a"))
            .run_in(&plumb_bin("plumb-bridge"), &lab.node.name),
        &parse,
    );
    // GC (nothing valid listed but this attachment) and DEL still work.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": lab.cid, "ifname": IFNAME}]);
    Call::new("GC", "", "", "", &gc)
        .without("CNI_CONTAINERID")
        .without("CNI_NETNS")
        .without("CNI_IFNAME")
        .env("PLUMB_POLICY_FILE", &path)
        .run_in(&plumb_bin("plumb-bridge"), &lab.node.name)
        .ok();
    assert_eq!(
        ipam_records(lab.data.path(), &["att-"]).len(),
        1,
        "GC released a valid attachment"
    );
    lab.run("plumb-bridge", "DEL", &conf, Some("tenant-a")).ok();
    // The bridge itself stays (as after any DEL); the attachment and its reservation are gone.
    let left: BTreeSet<String> = lab.node_links().into_iter().filter(|l| l != &br).collect();
    assert_eq!(left, ["lo".to_string(), CARRIER.to_string()].into());
    assert!(ipam_records(lab.data.path(), &["ip-", "att-"]).is_empty());
}

#[test]
fn check_reports_an_attachment_the_policy_now_denies() {
    if unavailable("check_reports_an_attachment_the_policy_now_denies", &[]) {
        return;
    }
    let lab = Lab::new();
    let br = unique_name("tpa");
    let conf = lab.bridge_conf(&br, json!({}));
    // No policy file: today's behaviour, nothing limited.
    let r = lab.run("plumb-bridge", "ADD", &conf, Some("tenant-a")).ok();
    let mut check = conf.clone();
    check["prevResult"] = r;
    let run_check = || {
        lab.call("CHECK", &check, Some("tenant-a"))
            .run_in(&plumb_bin("plumb-bridge"), &lab.node.name)
    };
    run_check().ok();
    lab.policy(r#"{"namespaces": {"tenant-a": {"bridges": ["tenant-a-*"]}}}"#);
    denied(
        &run_check(),
        &[
            "namespace \"tenant-a\"",
            &format!("bridge \"{br}\""),
            "namespaces.\"tenant-a\".bridges",
            "(allowed: tenant-a-*)",
        ],
    );
    // plumb-ipam's CHECK reports its own limits.
    lab.policy(r#"{"namespaces": {"tenant-a": {"ipamRanges": ["10.1.0.0/16"]}}}"#);
    denied(
        &lab.call("CHECK", &check, Some("tenant-a"))
            .run_in(&plumb_bin("plumb-ipam"), &lab.node.name),
        &[
            "ipam.range 10.77.1.0/24",
            "namespaces.\"tenant-a\".ipamRanges",
        ],
    );
    lab.run("plumb-bridge", "DEL", &conf, Some("tenant-a")).ok();
    lab.node.exec(&["ip", "link", "del", &br]);
    lab.assert_nothing_left();
}

/// One YAML document of a deploy/ file, by kind and name.
fn deploy_doc(file: &str, kind: &str, name: &str) -> Value {
    let text = std::fs::read_to_string(conformance::workspace_root().join(file)).expect(file);
    let found = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .find(|d: &Value| d["kind"] == kind && d["metadata"]["name"] == name);
    found.unwrap_or_else(|| panic!("no {kind} {name} in {file}"))
}

/// Waits (at most 20 s) until `path` holds exactly `want`.
fn wait_for_file(path: &std::path::Path, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(path).ok().as_deref() != Some(want) {
        assert!(
            std::time::Instant::now() < deadline,
            "the installer did not install {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn installer_installs_the_policy_configmap_and_the_plugins_enforce_it() {
    if unavailable(
        "installer_installs_the_policy_configmap_and_the_plugins_enforce_it",
        &["sh", "cmp"],
    ) {
        return;
    }
    let policy = deploy_doc("deploy/policy-configmap.yaml", "ConfigMap", "plumb-policy")["data"]
        ["policy.json"]
        .as_str()
        .expect("data.policy.json")
        .to_string();
    let script = deploy_doc(
        "deploy/installer-daemonset.yaml",
        "ConfigMap",
        "plumb-installer",
    )["data"]["install.sh"]
        .as_str()
        .expect("data.install.sh")
        .to_string();
    // The ConfigMap mount and the node's directories, as the DaemonSet maps them.
    let dir = TempDir::new("tpinst");
    let (src, conf) = (dir.path().join("policy-cm"), dir.path().join("conf"));
    for d in [&src, &dir.path().join("bin-src")] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(src.join("policy.json"), &policy).expect("write the ConfigMap file");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("PLUMB_BIN_SRC", dir.path().join("bin-src"))
        .env("PLUMB_CNI_BIN_DIR", dir.path().join("cni-bin"))
        .env("PLUMB_CONF_DIR", &conf)
        .env("PLUMB_TOKEN_DIR", dir.path().join("no-token"))
        .env("PLUMB_POLICY_SRC", src.join("policy.json"))
        // The file store's data dir the installer prepares: the test's, never the host's.
        .env("PLUMB_DATA_DIR", dir.path().join("data"))
        .env("PLUMB_API_SERVER", "https://127.0.0.1:1")
        .env("PLUMB_REFRESH_SECONDS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run the installer script");
    let installed = conf.join("policy.json");
    wait_for_file(&installed, &policy);
    // The kubelet updates the mounted ConfigMap: the installer installs the new policy.
    let changed = policy.replace("\"tenant-b-*\"]", "\"tenant-b-*\", \"tpb*\"]");
    assert_ne!(changed, policy, "the example policy changed shape");
    std::fs::write(src.join("policy.json"), &changed).expect("update the ConfigMap file");
    wait_for_file(&installed, &changed);
    let _ = child.kill();
    let _ = child.wait();

    // The plugins read it: tenant-b may not join tenant-a's trunk bridge.
    let lab = Lab::new();
    let call = |bridge: &str| {
        lab.call("ADD", &lab.bridge_conf(bridge, json!({})), Some("tenant-b"))
            .env("PLUMB_POLICY_FILE", &installed.display().to_string())
            .run_in(&plumb_bin("plumb-bridge"), &lab.node.name)
    };
    denied(
        &call("br-trunk"),
        &[
            "namespace \"tenant-b\"",
            "bridge \"br-trunk\"",
            "policy rule namespaces.\"tenant-b\".bridges",
        ],
    );
    lab.assert_nothing_left();
}

#[test]
fn an_uplink_is_denied_where_host_interfaces_are_not_allowed() {
    if unavailable(
        "an_uplink_is_denied_where_host_interfaces_are_not_allowed",
        &[],
    ) {
        return;
    }
    let lab = Lab::new();
    lab.policy(r#"{"default": {"hostInterfaces": false, "vlans": [1, 2003]}}"#);
    let br = unique_name("tpu");
    for extra in [
        json!({"uplink": CARRIER, "vlan": 2003}),
        json!({"uplink": CARRIER, "vlanFiltering": true, "vlan": 2003}),
    ] {
        let out = lab.run(
            "plumb-bridge",
            "ADD",
            &lab.bridge_conf(&br, extra),
            Some("tenant-c"),
        );
        denied(
            &out,
            &[
                "namespace \"tenant-c\"",
                &format!("uplink \"{CARRIER}\""),
                "policy rule default.hostInterfaces",
                "may not enslave host interfaces",
            ],
        );
        lab.assert_nothing_left();
    }
}
