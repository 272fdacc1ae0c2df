//! Seed 004 (VM lane): virtual machines' pods on VLANs 2003-2005 of a trunked uplink, with the MAC
//! spoof check and a MAC requested through the networks annotation, as KubeVirt's bridge binding uses
//! them, from the NADs of `deploy/examples/vlan-trunk/nads.yaml` as written.
//!
//! 802.1Q devices exist only on the VM lane's kernel; there is no control plane in the VM (its root is
//! the host's, read-only, and the lane exists to run kernel features). So the test does what Multus
//! does with a NAD and a network-selection element, and nothing else: the config is the NAD's
//! `spec.config` with `runtimeConfig: {"mac": ...}` added, because the config declares the `mac`
//! capability (libcni injects it then), and CNI_ARGS are the runtime's K8S_POD_* keys plus `MAC=`
//! (Multus's DelegateAdd appends it). That Multus itself renders NAD configs and annotations this way
//! against the real API server is shown in the kube-real lane (`multus_real.rs`, a `mac` request).
//!
//! The node is a namespace with the trunk `enp4s0f0` (a veth to a "switch" namespace), prepared as the
//! NAD file says (an NMState policy would): `enp4s0f0.<V>` in `bridge<V>` for V = 2003, 2004, 2005. On
//! the switch side each VLAN ends in its own upstream namespace (172.16.4.1, .5.1, .6.1), as the
//! firewall's VLAN interfaces. Checked: the requested MAC on the pod interface, each VLAN reaching its
//! own upstream and the VMs on it, a pod on VLAN 2004 with a VLAN 2003 address reaching neither
//! (isolation), a VM that changes its MAC cut off by the spoof check and back once it restores it, and
//! DEL (also with the netns gone) leaving the preconfigured bridges with only their VLAN port.

use conformance::netns::{run, Netns};
use conformance::plugin::{Call, Outcome};
use conformance::skip::{skip, skip_unless_netns, unavailable};
use conformance::{plumb_bin, unique_name, workspace_root};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

const VLANS: [u16; 3] = [2003, 2004, 2005];

/// Whether the kernel has 802.1Q VLAN devices, probed in a throw-away namespace.
fn dot1q() -> bool {
    let ns = Netns::new("svq");
    ns.try_exec(&[
        "ip", "link", "add", "vq0", "type", "veth", "peer", "name", "vq1",
    ]) && ns.try_exec(&[
        "ip", "link", "add", "link", "vq0", "name", "vq0.5", "type", "vlan", "id", "5",
    ])
}

/// The NADs of deploy/examples/vlan-trunk/nads.yaml: name -> parsed `spec.config`.
fn example_nads() -> BTreeMap<String, Value> {
    let path = workspace_root().join("deploy/examples/vlan-trunk/nads.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .map(|doc| {
            assert_eq!(doc["kind"], "NetworkAttachmentDefinition", "{doc}");
            let name = doc["metadata"]["name"]
                .as_str()
                .expect("metadata.name")
                .to_string();
            let conf: Value =
                serde_json::from_str(doc["spec"]["config"].as_str().expect("spec.config"))
                    .unwrap_or_else(|e| panic!("{name}: spec.config is not JSON: {e}"));
            (name, conf)
        })
        .collect()
}

/// The config Multus hands the plugin for a network-selection element with `mac`: the NAD's config,
/// plus `runtimeConfig.mac` when it declares the `mac` capability.
fn rendered(conf: &Value, mac: &str) -> Value {
    let mut c = conf.clone();
    if c["capabilities"]["mac"] == true {
        c["runtimeConfig"] = json!({"mac": mac});
    }
    c
}

/// A VM's pod (virt-launcher) on one VLAN network.
struct VmPod {
    name: String,
    /// The pod's netns; `None` once the sandbox is gone.
    ns: Option<Netns>,
    /// The netns path the runtime passes (also after the netns is gone).
    path: String,
    cid: String,
    nad: String,
    mac: String,
}

impl VmPod {
    fn ns(&self) -> &Netns {
        self.ns.as_ref().expect("the pod's netns")
    }
}

/// The node, its switch and the VLANs' upstream hosts.
struct Site {
    node: Netns,
    _switch: Netns,
    upstream: BTreeMap<u16, Netns>,
    nads: BTreeMap<String, Value>,
}

impl Site {
    fn new() -> Site {
        let (node, switch) = (Netns::new("svn"), Netns::new("svs"));
        run(&[
            "ip",
            "link",
            "add",
            "enp4s0f0",
            "netns",
            &node.name,
            "type",
            "veth",
            "peer",
            "name",
            "e1-3",
            "netns",
            &switch.name,
        ]);
        node.exec(&["ip", "link", "set", "enp4s0f0", "up"]);
        switch.exec(&["ip", "link", "set", "e1-3", "up"]);
        let mut upstream = BTreeMap::new();
        for (i, v) in VLANS.iter().enumerate() {
            // The node side, as the NMState policy makes it.
            let (dev, br) = (format!("enp4s0f0.{v}"), format!("bridge{v}"));
            let id = v.to_string();
            node.exec(&[
                "ip", "link", "add", "link", "enp4s0f0", "name", &dev, "type", "vlan", "id", &id,
            ]);
            node.exec(&["ip", "link", "add", &br, "type", "bridge"]);
            node.exec(&["ip", "link", "set", &dev, "master", &br]);
            node.exec(&["ip", "link", "set", &dev, "up"]);
            node.exec(&["ip", "link", "set", &br, "up"]);
            // The switch side: the trunk's VLAN ends in the upstream (firewall) host of that VLAN.
            let up = Netns::new("svu");
            let sdev = format!("e1-3.{v}");
            switch.exec(&[
                "ip", "link", "add", "link", "e1-3", "name", &sdev, "type", "vlan", "id", &id,
            ]);
            switch.exec(&["ip", "link", "set", &sdev, "netns", &up.name]);
            up.exec(&[
                "ip",
                "addr",
                "add",
                &format!("172.16.{}.1/24", 4 + i),
                "dev",
                &sdev,
            ]);
            up.exec(&["ip", "link", "set", &sdev, "up"]);
            upstream.insert(*v, up);
        }
        Site {
            node,
            _switch: switch,
            upstream,
            nads: example_nads(),
        }
    }

    /// The plugin, run on the node the way Multus runs it for pod `p` (config rendered with the
    /// requested MAC, CNI_ARGS with the K8S_POD_* keys and `MAC=`).
    fn cni(&self, command: &str, p: &VmPod, netns: &str) -> Outcome {
        let conf = rendered(&self.nads[&p.nad], &p.mac);
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=vms;K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={};MAC={}",
            p.name, p.cid, unique_name("uid"), p.mac
        );
        Call::new(command, &p.cid, netns, "net1", &conf)
            .env("CNI_ARGS", &args)
            .run_in(
                &plumb_bin(conf["type"].as_str().expect("type")),
                &self.node.name,
            )
    }

    /// A VM's pod on `nad` with `mac` and the static address `cidr` (as the VM would configure it).
    fn vm(&self, name: &str, nad: &str, mac: &str, cidr: &str) -> VmPod {
        let ns = Netns::new("svp");
        let p = VmPod {
            name: name.to_string(),
            path: ns.path(),
            ns: Some(ns),
            cid: unique_name("vlcid"),
            nad: nad.to_string(),
            mac: mac.to_string(),
        };
        let r = self.cni("ADD", &p, &p.path).ok();
        let iface = r["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["name"] == "net1")
            .unwrap_or_else(|| panic!("no net1 in {r}"));
        assert_eq!(iface["mac"], mac, "{r}");
        p.ns().exec(&["ip", "addr", "add", cidr, "dev", "net1"]);
        p
    }

    /// The ports of a bridge on the node.
    fn ports(&self, bridge: &str) -> BTreeSet<String> {
        let v: Value = serde_json::from_str(
            &self
                .node
                .exec(&["ip", "-j", "link", "show", "master", bridge]),
        )
        .expect("ip -j");
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect()
    }
}

fn mac_of(ns: &Netns) -> String {
    let v: Value = serde_json::from_str(&ns.exec(&["ip", "-j", "link", "show", "dev", "net1"]))
        .expect("ip -j");
    v[0]["address"].as_str().unwrap_or_default().to_string()
}

fn pings(from: &Netns, to: &str) -> bool {
    from.try_exec(&["ping", "-c", "1", "-W", "2", to])
}

#[test]
fn seed_004_vms_on_vlans_2003_to_2005_of_a_trunk_with_spoof_check_and_requested_mac() {
    let test = "seed_004_vms_on_vlans_2003_to_2005_of_a_trunk_with_spoof_check_and_requested_mac";
    if skip_unless_netns(test) || unavailable(test, &["nft", "ping"]) {
        return;
    }
    if !dot1q() {
        skip(
            test,
            "this kernel has no 802.1Q VLAN devices (8021q); runs in the VM lane",
        );
        return;
    }
    let site = Site::new();
    assert_eq!(
        site.nads.keys().collect::<Vec<_>>(),
        ["vlan2003", "vlan2004", "vlan2005"]
    );
    for (name, conf) in &site.nads {
        assert_eq!(conf["macspoofchk"], true, "{name}");
        assert_eq!(conf["bridge"], format!("bridge{}", &name[4..]), "{name}");
    }

    // VM 1 and VM 4 on VLAN 2003, VM 3 on 2004, VM 6 on 2005 (the seed's flows), and an intruder on
    // VLAN 2004 configured with a VLAN 2003 address.
    let vm1 = site.vm(
        "virt-launcher-vm1",
        "vlan2003",
        "02:16:04:00:02:08",
        "172.16.4.208/24",
    );
    let vm4 = site.vm(
        "virt-launcher-vm4",
        "vlan2003",
        "02:16:04:00:02:09",
        "172.16.4.209/24",
    );
    let vm3 = site.vm(
        "virt-launcher-vm3",
        "vlan2004",
        "02:16:05:00:02:08",
        "172.16.5.208/24",
    );
    let vm6 = site.vm(
        "virt-launcher-vm6",
        "vlan2005",
        "02:16:06:00:02:08",
        "172.16.6.208/24",
    );
    let intruder = site.vm(
        "virt-launcher-x",
        "vlan2004",
        "02:16:05:00:00:99",
        "172.16.4.99/24",
    );
    for p in [&vm1, &vm4, &vm3, &vm6, &intruder] {
        assert_eq!(mac_of(p.ns()), p.mac, "{}: the requested MAC", p.name);
        assert_eq!(
            site.node.spoof_rules_naming(&p.mac),
            1,
            "{}: its spoof-check rule",
            p.name
        );
    }
    for (v, n) in [(2003, 3), (2004, 3), (2005, 2)] {
        assert_eq!(site.ports(&format!("bridge{v}")).len(), n, "bridge{v}");
    }

    // Each VLAN reaches its own upstream through the trunk (tagged on the wire, untagged in the VM).
    assert!(pings(vm1.ns(), "172.16.4.1"), "vm1 -> VLAN 2003's firewall");
    assert!(
        pings(vm1.ns(), "172.16.4.209"),
        "vm1 -> vm4 on the same bridge"
    );
    assert!(pings(vm3.ns(), "172.16.5.1"), "vm3 -> VLAN 2004's firewall");
    assert!(pings(vm6.ns(), "172.16.6.1"), "vm6 -> VLAN 2005's firewall");
    // Isolation: a VLAN 2004 pod with a VLAN 2003 address reaches nothing of VLAN 2003.
    assert!(
        !pings(intruder.ns(), "172.16.4.1"),
        "VLAN 2004 reached VLAN 2003's firewall"
    );
    assert!(
        !pings(intruder.ns(), "172.16.4.208"),
        "VLAN 2004 reached vm1 on 2003"
    );
    let seen_by_2003 = site.upstream[&2003].exec(&["ip", "neigh", "show"]);
    assert!(!seen_by_2003.contains(&intruder.mac), "{seen_by_2003}");
    assert!(seen_by_2003.contains(&vm1.mac), "{seen_by_2003}");

    // Spoof check: vm1 takes another MAC; its frames are dropped on the node until it restores its own.
    vm1.ns().exec(&[
        "ip",
        "link",
        "set",
        "dev",
        "net1",
        "address",
        "02:16:04:00:66:66",
    ]);
    site.upstream[&2003].exec(&["ip", "neigh", "flush", "all"]);
    assert!(
        !pings(vm1.ns(), "172.16.4.1"),
        "a spoofed source MAC got through"
    );
    vm1.ns()
        .exec(&["ip", "link", "set", "dev", "net1", "address", &vm1.mac]);
    site.upstream[&2003].exec(&["ip", "neigh", "flush", "all"]);
    assert!(pings(vm1.ns(), "172.16.4.1"), "vm1 with its own MAC again");

    // DEL: vm1 with its netns, then again once it is gone; vm6's netns goes first; the rest.
    let (mut vm1, mut vm6) = (vm1, vm6);
    site.cni("DEL", &vm1, &vm1.path).ok();
    assert_eq!(
        vm1.ns().exec(&["ip", "-o", "link", "show"]).lines().count(),
        1,
        "vm1: only lo"
    );
    vm1.ns = None;
    site.cni("DEL", &vm1, &vm1.path).ok();
    vm6.ns = None;
    site.cni("DEL", &vm6, &vm6.path).ok();
    for p in [&vm4, &vm3, &intruder] {
        site.cni("DEL", p, &p.path).ok();
        assert_eq!(
            p.ns().exec(&["ip", "-o", "link", "show"]).lines().count(),
            1,
            "{}: only lo",
            p.name
        );
    }
    for v in VLANS {
        assert_eq!(
            site.ports(&format!("bridge{v}")),
            [format!("enp4s0f0.{v}")].into(),
            "bridge{v} keeps only its VLAN port"
        );
    }
    for mac in [&vm1.mac, &vm4.mac, &vm3.mac, &vm6.mac, &intruder.mac] {
        assert_eq!(site.node.spoof_rules_naming(mac), 0, "{mac}");
    }
    println!(
        "seed 004: VLANs {VLANS:?} isolated over one trunk, requested MACs set, a spoofed MAC dropped, \
         DEL left the preconfigured bridges as they were"
    );
}
