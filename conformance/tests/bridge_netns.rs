//! plumb-bridge and plumb-macspoofchk against real network namespaces.
//!
//! Every test builds a private "node" namespace and runs the plugins inside it (`ip netns exec`), so
//! the bridge, the host veths, the nftables tables and the forwarding sysctl all live in a namespace the
//! test made and deletes; pods are further namespaces the test made. Traffic only flows between them.
//! Bridge names, network names, IPAM data directories and subnets are unique per test, so the tests run
//! in parallel. VLAN tests need 802.1Q and bridge VLAN filtering: on a kernel without them they skip
//! loudly (they run in the VM lane).

use conformance::iproute::{ifnames, parse_json};
use conformance::netns::{vlan_kernel, Netns};
use conformance::plugin::{Call, Outcome};
use conformance::result::{first_address, host_veth};
use conformance::skip::unavailable;
use conformance::skip::{have_command, skip};
use conformance::{peers, plumb_bin, unique_name, TempDir};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const SPOOF_TABLE: &str = "plumb_spoofchk";
const MASQ_TABLE: &str = "plumb_masq";
const IFNAME: &str = "eth0";

// ---------------------------------------------------------------------------------------------------
// Fixtures

/// Why VLAN tests cannot run here (`None` when they can).
fn vlan_unsupported() -> Option<String> {
    if !have_command("bridge") {
        return Some("needs the `bridge` command (apt iproute2)".into());
    }
    match vlan_kernel() {
        (false, _) => Some(
            "this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING); runs in the VM lane"
                .into(),
        ),
        (_, false) => {
            Some("this kernel has no 802.1Q VLAN devices (8021q); runs in the VM lane".into())
        }
        _ => None,
    }
}

/// Skips (loudly) a VLAN test when the kernel cannot run it.
fn vlan_skip(test: &str) -> bool {
    if unavailable(test, &["nft", "ping", "bridge"]) {
        return true;
    }
    match vlan_unsupported() {
        Some(reason) => {
            skip(test, &reason);
            true
        }
        None => false,
    }
}

/// The private node namespace with one bridge, one network name, one IPAM data directory and one subnet.
struct Lab {
    node: Netns,
    bridge: String,
    net: String,
    data: TempDir,
    /// The first three octets of the /24, e.g. "10.240.7".
    prefix: String,
}

impl Lab {
    fn new(octet: u8) -> Lab {
        let node = Netns::new("pbn");
        let bridge = unique_name("pb");
        Lab {
            net: format!("bnet-{bridge}"),
            bridge,
            node,
            data: TempDir::new("pbipam"),
            prefix: format!("10.240.{octet}"),
        }
    }

    fn subnet(&self) -> String {
        format!("{}.0/24", self.prefix)
    }

    fn gw(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// A plumb-bridge config on this lab's bridge with plumb-ipam; `extra` keys override (and `ipam`
    /// keys are merged into the ipam section).
    fn conf(&self, version: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": self.net,
            "type": "plumb-bridge",
            "bridge": self.bridge,
            "ipam": {
                "type": "plumb-ipam",
                "range": self.subnet(),
                "gateway": self.gw(),
                "dataDir": self.data.path(),
            },
        });
        for (k, v) in extra.as_object().expect("extra is an object") {
            if k == "ipam" {
                for (ik, iv) in v.as_object().expect("ipam is an object") {
                    c["ipam"][ik] = iv.clone();
                }
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn call(&self, command: &str, pod: &Pod, conf: &Value) -> Call {
        Call::new(command, &pod.cid, &pod.path(), IFNAME, conf)
    }

    /// Starts a plugin binary inside the node namespace with the call's environment and stdin.
    fn spawn(&self, binary: &Path, call: &Call) -> std::process::Child {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node.name])
            .arg(binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(call.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let mut stdin = child.stdin.take().expect("stdin");
        let _ = stdin.write_all(&call.stdin);
        drop(stdin);
        child
    }

    /// Runs a plugin binary inside the node namespace.
    fn run(&self, binary: &Path, call: &Call) -> Outcome {
        let out = self.spawn(binary, call).wait_with_output().expect("wait");
        Outcome {
            exit: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs plumb-bridge inside the node namespace.
    fn bridge(&self, call: &Call) -> Outcome {
        self.run(&plumb_bin("plumb-bridge"), call)
    }

    fn add(&self, pod: &Pod, conf: &Value) -> Value {
        self.bridge(&self.call("ADD", pod, conf)).ok()
    }

    fn del(&self, pod: &Pod, conf: &Value) {
        self.bridge(&self.call("DEL", pod, conf)).ok();
    }

    fn sh(&self, args: &[&str]) -> String {
        self.node.exec(args)
    }

    fn json(&self, args: &[&str]) -> Value {
        parse_json(&self.sh(args))
    }

    /// `ip -d -j link show <name>`, the one entry.
    fn link(&self, name: &str) -> Value {
        self.json(&["ip", "-d", "-j", "link", "show", name])[0].clone()
    }

    fn links(&self) -> BTreeSet<String> {
        ifnames(&self.json(&["ip", "-j", "link", "show"]))
    }

    fn has_link(&self, name: &str) -> bool {
        self.links().contains(name)
    }

    /// Ports of the bridge.
    fn ports(&self) -> BTreeSet<String> {
        ifnames(&self.json(&["ip", "-j", "link", "show", "master", &self.bridge]))
    }

    /// Every chain of plumb's tables in the node, as "family table name".
    fn chains(&self) -> BTreeSet<String> {
        self.ruleset()
            .iter()
            .filter_map(|o| o.get("chain"))
            .filter(|c| c["table"] == SPOOF_TABLE || c["table"] == MASQ_TABLE)
            .map(|c| {
                format!(
                    "{} {} {}",
                    c["family"].as_str().unwrap_or(""),
                    c["table"].as_str().unwrap_or(""),
                    c["name"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    fn ruleset(&self) -> Vec<Value> {
        self.json(&["nft", "-j", "list", "ruleset"])["nftables"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Chains of `family table` (read with `nft -j list table`) holding a rule that mentions `needle` as a
    /// JSON string (a MAC or an address).
    fn chains_mentioning(&self, family: &str, table: &str, needle: &str) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.node.name])
            .args(["nft", "-j", "list", "table", family, table])
            .output()
            .expect("nft");
        if !out.status.success() {
            return Vec::new(); // no such table: no chain
        }
        let v = parse_json(&String::from_utf8_lossy(&out.stdout));
        let quoted = format!("\"{}\"", needle.to_ascii_lowercase());
        let mut found: Vec<String> = v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("rule"))
            .filter(|r| r["expr"].to_string().to_ascii_lowercase().contains(&quoted))
            .map(|r| r["chain"].as_str().unwrap_or("").to_string())
            .collect();
        found.dedup();
        found
    }

    /// The spoof-check chain holding the container MAC `mac`, if any (at most one).
    fn spoof_chain(&self, mac: &str) -> Option<String> {
        let c = self.chains_mentioning("netdev", SPOOF_TABLE, mac);
        assert!(
            c.len() <= 1,
            "more than one spoof-check chain for {mac}: {c:?}"
        );
        c.into_iter().next()
    }

    /// The masquerade chain holding the source address `ip`, if any (at most one).
    fn masq_chain(&self, ip: &str) -> Option<String> {
        let c = self.chains_mentioning("ip", MASQ_TABLE, ip);
        assert!(
            c.len() <= 1,
            "more than one masquerade chain for {ip}: {c:?}"
        );
        c.into_iter().next()
    }

    /// The IPv4 addresses (address, prefix length) of a node interface.
    fn ipv4(&self, dev: &str) -> Vec<(String, u64)> {
        self.json(&["ip", "-j", "-4", "addr", "show", "dev", dev])
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .map(|a| {
                (
                    a["local"].as_str().expect("local").to_string(),
                    a["prefixlen"].as_u64().expect("prefixlen"),
                )
            })
            .collect()
    }

    /// The text of one spoof-check chain, cut from `nft list table netdev plumb_spoofchk` (nft's command
    /// line does not take chain names that start with a digit, as plumb's may).
    fn spoof_chain_text(&self, chain: &str) -> String {
        let table = self.sh(&["nft", "list", "table", "netdev", SPOOF_TABLE]);
        let start = table
            .find(&format!("chain {chain} {{"))
            .unwrap_or_else(|| panic!("no chain {chain} in {table}"));
        let rest = &table[start..];
        rest[..rest.find("\n\t}").unwrap_or(rest.len())].to_string()
    }

    /// Deletes a chain of plumb's spoof-check table by hand (through nft's JSON input).
    fn delete_spoof_chain(&self, chain: &str) {
        let cmd = json!({"nftables": [{"delete": {"chain":
            {"family": "netdev", "table": SPOOF_TABLE, "name": chain}}}]});
        self.sh(&["nft", "-j", &cmd.to_string()]);
    }

    /// IPAM reservations (`ip-*` files) in the data directory.
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

    /// `bridge -j vlan show dev <dev>`: vid -> (pvid, egress untagged).
    fn vlans(&self, dev: &str) -> BTreeMap<u64, (bool, bool)> {
        let v = self.json(&["bridge", "-j", "vlan", "show", "dev", dev]);
        let mut out = BTreeMap::new();
        for entry in v.as_array().into_iter().flatten() {
            if entry["ifname"] != dev {
                continue;
            }
            for vl in entry["vlans"].as_array().into_iter().flatten() {
                let lo = vl["vlan"].as_u64().expect("vlan id");
                let hi = vl["vlanEnd"].as_u64().unwrap_or(lo);
                let flags: Vec<&str> = vl["flags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                for vid in lo..=hi {
                    out.insert(
                        vid,
                        (flags.contains(&"PVID"), flags.contains(&"Egress Untagged")),
                    );
                }
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The node namespace goes next (taking every veth and bridge in it); delete the bridge first anyway.
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.node.name])
            .args(["ip", "link", "del", &self.bridge])
            .output();
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    links: BTreeSet<String>,
    chains: BTreeSet<String>,
    reservations: BTreeSet<String>,
}

/// A pod: its own network namespace and container ID.
struct Pod {
    ns: Option<Netns>,
    path: String,
    cid: String,
}

impl Pod {
    fn new() -> Pod {
        let ns = Netns::new("pbp");
        Pod {
            path: ns.path(),
            cid: format!("bn-{}", ns.name),
            ns: Some(ns),
        }
    }

    fn path(&self) -> String {
        self.path.clone()
    }

    fn ns(&self) -> &Netns {
        self.ns.as_ref().expect("pod netns already deleted")
    }

    fn exec(&self, args: &[&str]) -> String {
        self.ns().exec(args)
    }

    /// Deletes the namespace now (the pod's path stays, as a runtime would still pass it).
    fn delete_netns(&mut self) {
        self.ns = None;
    }

    fn links(&self) -> BTreeSet<String> {
        ifnames(&parse_json(&self.exec(&["ip", "-j", "link", "show"])))
    }

    fn link(&self, name: &str) -> Value {
        parse_json(&self.exec(&["ip", "-d", "-j", "link", "show", name]))[0].clone()
    }

    fn mac(&self) -> String {
        self.link(IFNAME)["address"]
            .as_str()
            .expect("mac")
            .to_string()
    }

    fn set_mac(&self, mac: &str) {
        self.exec(&["ip", "link", "set", IFNAME, "address", mac]);
    }

    fn ping(&self, ip: &str) -> bool {
        self.ns().try_exec(&["ping", "-c1", "-W2", ip])
    }

    /// A ping that is expected to fail: a short wait is enough.
    fn ping_fails(&self, ip: &str) -> bool {
        !self.ns().try_exec(&["ping", "-c1", "-W1", ip])
    }

    fn flush_neigh(&self) {
        self.exec(&["ip", "neigh", "flush", "all"]);
    }
}

fn pods(n: usize) -> Vec<Pod> {
    (0..n).map(|_| Pod::new()).collect()
}

fn container_mac(result: &Value) -> String {
    result["interfaces"][2]["mac"]
        .as_str()
        .expect("mac")
        .to_string()
}

fn flags(link: &Value) -> Vec<String> {
    link["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
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

// ---------------------------------------------------------------------------------------------------
// 1. Two pods, result shape per version

#[test]
fn two_pods_ping_each_other_and_result_shape_per_version() {
    if unavailable(
        "two_pods_ping_each_other_and_result_shape_per_version",
        &["ping"],
    ) {
        return;
    }
    for (i, version) in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let lab = Lab::new(11 + i as u8);
        let conf = lab.conf(version, json!({}));
        let [a, b]: [Pod; 2] = pods(2).try_into().ok().unwrap();
        assert!(!lab.has_link(&lab.bridge));
        let mut results = Vec::new();
        for pod in [&a, &b] {
            let r = &lab.add(pod, &conf);
            assert_eq!(r["cniVersion"], version, "{r}");
            let ifs = r["interfaces"].as_array().expect("interfaces");
            assert_eq!(ifs.len(), 3, "{r}");
            assert_eq!(ifs[0]["name"], lab.bridge.as_str());
            assert!(ifs[0].get("sandbox").is_none(), "{r}");
            let hv = host_veth(r);
            assert!(
                hv.starts_with("plb") && hv.len() == 15,
                "host veth name {hv}"
            );
            assert!(ifs[1].get("sandbox").is_none(), "{r}");
            assert_eq!(ifs[2]["name"], IFNAME);
            assert_eq!(ifs[2]["sandbox"], pod.path().as_str());
            // MACs in the result are the real ones (the bridge's as of this ADD: a bridge takes the
            // lowest MAC of its ports, so a later port may change it).
            let br = lab.link(&lab.bridge);
            assert_eq!(ifs[0]["mac"], br["address"], "{r}");
            assert_eq!(ifs[1]["mac"], lab.link(&hv)["address"], "{r}");
            assert_eq!(ifs[2]["mac"], pod.mac().as_str(), "{r}");
            for (j, iface) in ifs.iter().enumerate() {
                if version == "1.1.0" {
                    assert_eq!(iface["mtu"], 1500, "interface {j} of {r}");
                } else {
                    assert!(
                        iface.get("mtu").is_none(),
                        "mtu is a 1.1.0 field, not {version}: {r}"
                    );
                }
            }
            let ips = r["ips"].as_array().expect("ips");
            assert_eq!(ips.len(), 1, "{r}");
            assert_eq!(ips[0]["interface"], 2, "{r}");
            assert_eq!(ips[0]["gateway"], lab.gw().as_str(), "{r}");
            if version.starts_with("0.") {
                assert_eq!(ips[0]["version"], "4", "{r}");
            } else {
                assert!(ips[0].get("version").is_none(), "{r}");
            }
            let addr = ips[0]["address"].as_str().unwrap();
            assert!(
                addr.starts_with(&format!("{}.", lab.prefix)) && addr.ends_with("/24"),
                "{addr}"
            );
            // The host veth is a port of the bridge, up; the container interface holds the address.
            let hl = lab.link(&hv);
            assert_eq!(hl["master"], lab.bridge.as_str());
            assert!(flags(&hl).contains(&"UP".to_string()));
            let addrs = pod.exec(&["ip", "-j", "-4", "addr", "show", IFNAME]);
            assert!(
                addrs.contains(&format!("\"local\":\"{}\"", first_address(r))),
                "{addrs}"
            );
            results.push(r.clone());
        }
        let [ra, rb]: [Value; 2] = results.try_into().ok().unwrap();
        assert_ne!(
            first_address(&ra),
            first_address(&rb),
            "two pods got the same address"
        );
        assert_eq!(
            lab.ports(),
            BTreeSet::from([host_veth(&ra), host_veth(&rb)])
        );
        assert!(
            a.ping(&first_address(&rb)),
            "pod a cannot ping pod b ({version})"
        );
        assert!(
            b.ping(&first_address(&ra)),
            "pod b cannot ping pod a ({version})"
        );
        lab.del(&a, &conf);
        lab.del(&b, &conf);
        assert!(lab.ports().is_empty());
        assert!(lab.reservations().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------------
// 2. Gateway, MTU, port options, promiscuous bridge, disabled interface, MAC precedence

#[test]
fn gateway_mtu_port_options_and_promisc() {
    if unavailable("gateway_mtu_port_options_and_promisc", &["ping"]) {
        return;
    }
    let lab = Lab::new(21);
    let conf = lab.conf(
        "1.1.0",
        json!({"isGateway": true, "isDefaultGateway": true, "mtu": 1400, "hairpinMode": true,
               "portIsolation": true, "promiscMode": true}),
    );
    let [a, b]: [Pod; 2] = pods(2).try_into().ok().unwrap();
    let ra = lab.add(&a, &conf);
    let rb = lab.add(&b, &conf);

    // isGateway: the bridge holds the gateway address.
    let on_bridge = lab.ipv4(&lab.bridge);
    assert_eq!(on_bridge, vec![(lab.gw(), 24)]);

    // isDefaultGateway: the default route goes via the gateway, in the result and in the container.
    let routes = ra["routes"].as_array().expect("routes");
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "0.0.0.0/0" && r["gw"] == lab.gw().as_str()),
        "{ra}"
    );
    let def = parse_json(&a.exec(&["ip", "-j", "route", "show", "default"]));
    assert_eq!(def.as_array().map(Vec::len), Some(1), "{def}");
    assert_eq!(def[0]["gateway"], lab.gw().as_str(), "{def}");
    assert_eq!(def[0]["dev"], IFNAME, "{def}");

    // mtu: the bridge (created by this ADD) and both veth ends; the 1.1.0 result reports it.
    let br = lab.link(&lab.bridge);
    assert_eq!(br["mtu"], 1400);
    for r in [&ra, &rb] {
        assert_eq!(lab.link(&host_veth(r))["mtu"], 1400);
        for i in 0..3 {
            assert_eq!(r["interfaces"][i]["mtu"], 1400, "{r}");
        }
    }
    assert_eq!(a.link(IFNAME)["mtu"], 1400);

    // hairpinMode and portIsolation on the port.
    for r in [&ra, &rb] {
        let port = &lab.link(&host_veth(r))["linkinfo"]["info_slave_data"];
        assert_eq!(port["hairpin"], true, "{port}");
        assert_eq!(port["isolated"], true, "{port}");
    }
    // promiscMode on the bridge.
    assert!(flags(&br).contains(&"PROMISC".to_string()), "{br}");

    // Isolated ports cannot reach each other, but both reach the gateway (the bridge itself).
    assert!(a.ping(&lab.gw()), "pod a cannot ping its gateway");
    assert!(b.ping(&lab.gw()), "pod b cannot ping its gateway");
    assert!(
        a.ping_fails(&first_address(&rb)),
        "isolated ports reached each other"
    );
    lab.del(&a, &conf);
    lab.del(&b, &conf);
}

#[test]
fn sysctls_of_the_attachment_and_the_node_forwarding_switch() {
    if unavailable(
        "sysctls_of_the_attachment_and_the_node_forwarding_switch",
        &["sysctl"],
    ) {
        return;
    }
    let lab = Lab::new(25);
    let conf = lab.conf("1.0.0", json!({"isGateway": true}));
    let node = |key: &str| lab.sh(&["sysctl", "-n", key]).trim().to_string();
    // A fresh namespace forwards nothing: the first ADD turns it on (it reads the switch through
    // rtnetlink and writes the sysctl only when it is off).
    assert_eq!(node("net.ipv4.ip_forward"), "0");
    let [a, b]: [Pod; 2] = pods(2).try_into().ok().unwrap();
    let ra = lab.add(&a, &conf);
    assert_eq!(node("net.ipv4.ip_forward"), "1");
    // Host side: neither the bridge nor the host veth takes router advertisements.
    assert_eq!(
        node(&format!("net.ipv6.conf.{}.accept_ra", lab.bridge)),
        "0"
    );
    assert_eq!(
        node(&format!("net.ipv6.conf.{}.accept_ra", host_veth(&ra))),
        "0"
    );
    // Pod side: no DAD (the default `enabledad` false) and gratuitous ARP on link changes, the latter
    // set through rtnetlink.
    let pod = |p: &Pod, key: &str| p.exec(&["sysctl", "-n", key]).trim().to_string();
    assert_eq!(pod(&a, "net.ipv6.conf.eth0.accept_dad"), "0");
    assert_eq!(pod(&a, "net.ipv4.conf.eth0.arp_notify"), "1");
    // Switched off behind plumb's back: the next ADD turns it on again.
    lab.sh(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let rb = lab.add(&b, &conf);
    assert_eq!(node("net.ipv4.ip_forward"), "1");
    assert_eq!(
        node(&format!("net.ipv6.conf.{}.accept_ra", host_veth(&rb))),
        "0"
    );
    assert_eq!(pod(&b, "net.ipv4.conf.eth0.arp_notify"), "1");
    lab.del(&a, &conf);
    lab.del(&b, &conf);
}

#[test]
fn default_port_has_no_hairpin_or_isolation() {
    if unavailable("default_port_has_no_hairpin_or_isolation", &[]) {
        return;
    }
    let lab = Lab::new(22);
    let conf = lab.conf("1.0.0", json!({}));
    let pod = Pod::new();
    let r = lab.add(&pod, &conf);
    let port = &lab.link(&host_veth(&r))["linkinfo"]["info_slave_data"];
    assert_eq!(port["hairpin"], false, "{port}");
    assert_eq!(port["isolated"], false, "{port}");
    assert!(!flags(&lab.link(&lab.bridge)).contains(&"PROMISC".to_string()));
    // No isGateway: the bridge has no IPv4 address, the container no default route.
    assert_eq!(lab.ipv4(&lab.bridge), vec![]);
    let def = parse_json(&pod.exec(&["ip", "-j", "route", "show", "default"]));
    assert_eq!(def, json!([]));
    lab.del(&pod, &conf);
}

#[test]
fn disable_container_interface_leaves_it_down() {
    if unavailable("disable_container_interface_leaves_it_down", &[]) {
        return;
    }
    let lab = Lab::new(23);
    let conf = lab.conf("1.0.0", json!({"disableContainerInterface": true}));
    let pod = Pod::new();
    let r = lab.add(&pod, &conf);
    let l = pod.link(IFNAME);
    assert!(
        !flags(&l).contains(&"UP".to_string()),
        "container interface is up: {l}"
    );
    // The host end is still a port and up.
    assert!(flags(&lab.link(&host_veth(&r))).contains(&"UP".to_string()));
    lab.del(&pod, &conf);
    assert!(!lab.has_link(&host_veth(&r)));
}

#[test]
fn mac_precedence_runtime_config_over_args_over_cni_args() {
    if unavailable("mac_precedence_runtime_config_over_args_over_cni_args", &[]) {
        return;
    }
    let lab = Lab::new(24);
    let (m_env, m_args, m_rc) = (
        "02:00:00:24:00:01",
        "02:00:00:24:00:02",
        "02:00:00:24:00:03",
    );
    let cases = [
        (json!({}), m_env),
        (json!({"args": {"cni": {"mac": m_args}}}), m_args),
        (
            json!({"args": {"cni": {"mac": m_args}}, "runtimeConfig": {"mac": m_rc}}),
            m_rc,
        ),
    ];
    for (extra, want) in cases {
        let conf = lab.conf("1.0.0", extra.clone());
        let pod = Pod::new();
        let out = lab.bridge(
            &lab.call("ADD", &pod, &conf)
                .env("CNI_ARGS", &format!("IgnoreUnknown=1;MAC={m_env}")),
        );
        let r = out.ok();
        assert_eq!(pod.mac(), want, "config {extra}");
        assert_eq!(container_mac(&r), want, "config {extra}: {r}");
        lab.del(&pod, &conf);
    }
    // A bad MAC is a config error naming where it came from, and leaves nothing behind.
    let pod = Pod::new();
    let conf = lab.conf("1.0.0", json!({"runtimeConfig": {"mac": "zz:00"}}));
    let before = lab.snapshot();
    let out = lab.bridge(&lab.call("ADD", &pod, &conf));
    assert_err(&out, 7, &["runtimeConfig.mac", "zz:00"]);
    assert_eq!(lab.snapshot(), before);
}

// ---------------------------------------------------------------------------------------------------
// 3. macspoofchk, GC, ipMasq

#[test]
fn macspoofchk_drops_spoofed_frames() {
    if unavailable("macspoofchk_drops_spoofed_frames", &["nft", "ping"]) {
        return;
    }
    let lab = Lab::new(31);
    let conf = lab.conf("1.0.0", json!({"macspoofchk": true}));
    let [a, b]: [Pod; 2] = pods(2).try_into().ok().unwrap();
    let ra = lab.add(&a, &conf);
    let rb = lab.add(&b, &conf);
    let mac_a = container_mac(&ra);
    assert_eq!(mac_a, a.mac());
    let chain = lab
        .spoof_chain(&mac_a)
        .unwrap_or_else(|| panic!("no spoof-check chain with {mac_a}"));
    // The chain hooks ingress of the pod's host veth.
    let text = lab.spoof_chain_text(&chain);
    assert!(text.contains(&format!("\"{}\"", host_veth(&ra))), "{text}");
    assert!(text.contains("hook ingress"), "{text}");
    assert!(lab.spoof_chain(&container_mac(&rb)).is_some());

    let ip_b = first_address(&rb);
    assert!(a.ping(&ip_b), "pod a cannot ping pod b with its own MAC");
    a.set_mac("02:00:00:31:00:aa");
    a.flush_neigh();
    b.flush_neigh();
    assert!(a.ping_fails(&ip_b), "spoofed MAC still reaches pod b");
    assert!(
        b.ping_fails(&first_address(&ra)),
        "pod b reaches a spoofing pod a"
    );
    a.set_mac(&mac_a);
    a.flush_neigh();
    b.flush_neigh();
    assert!(
        a.ping(&ip_b),
        "pod a cannot ping pod b with its own MAC again"
    );
    lab.del(&a, &conf);
    assert_eq!(lab.spoof_chain(&mac_a), None);
    lab.del(&b, &conf);
    assert_eq!(lab.chains(), BTreeSet::new());
}

#[test]
fn macspoofchk_del_without_netns_removes_chain() {
    if unavailable("macspoofchk_del_without_netns_removes_chain", &["nft"]) {
        return;
    }
    let lab = Lab::new(32);
    let conf = lab.conf("1.0.0", json!({"macspoofchk": true}));
    for empty_netns in [false, true] {
        let mut pod = Pod::new();
        let r = lab.add(&pod, &conf);
        let mac = container_mac(&r);
        assert!(lab.spoof_chain(&mac).is_some());
        pod.delete_netns();
        let mut call = lab.call("DEL", &pod, &conf);
        if empty_netns {
            call = call.env("CNI_NETNS", "");
        }
        lab.bridge(&call).ok();
        assert_eq!(
            lab.spoof_chain(&mac),
            None,
            "chain left (CNI_NETNS empty: {empty_netns})"
        );
        assert!(!lab.has_link(&host_veth(&r)));
        assert!(lab.reservations().is_empty());
    }
    assert_eq!(lab.chains(), BTreeSet::new());
}

#[test]
fn gc_removes_chains_of_attachments_not_listed() {
    if unavailable("gc_removes_chains_of_attachments_not_listed", &["nft"]) {
        return;
    }
    let lab = Lab::new(33);
    let conf = lab.conf("1.1.0", json!({"macspoofchk": true, "ipMasq": true}));
    let ps = pods(3);
    let rs: Vec<Value> = ps.iter().map(|p| lab.add(p, &conf)).collect();
    for r in &rs {
        assert!(lab.spoof_chain(&container_mac(r)).is_some());
        assert!(lab.masq_chain(&first_address(r)).is_some());
    }
    let gc = |conf: &Value| {
        let call = Call::new("GC", "", "", "", conf)
            .without("CNI_CONTAINERID")
            .without("CNI_NETNS")
            .without("CNI_IFNAME");
        lab.bridge(&call).ok();
    };
    // GC of another network (own IPAM data) touches none of this network's chains.
    let other_data = TempDir::new("pbipam");
    let mut other = conf.clone();
    other["name"] = json!(format!("{}-other", lab.net));
    other["ipam"]["dataDir"] = json!(other_data.path());
    other["cni.dev/valid-attachments"] = json!([]);
    let before = lab.chains();
    gc(&other);
    assert_eq!(lab.chains(), before);

    let mut keep = conf.clone();
    keep["cni.dev/valid-attachments"] = json!([{"containerID": ps[0].cid, "ifname": IFNAME}]);
    gc(&keep);
    assert!(lab.spoof_chain(&container_mac(&rs[0])).is_some());
    assert!(lab.masq_chain(&first_address(&rs[0])).is_some());
    for r in &rs[1..] {
        assert_eq!(lab.spoof_chain(&container_mac(r)), None, "{r}");
        assert_eq!(lab.masq_chain(&first_address(r)), None, "{r}");
    }
    assert_eq!(lab.chains().len(), 2, "{:?}", lab.chains());
    assert_eq!(
        lab.reservations(),
        BTreeSet::from([format!("ip-{}", first_address(&rs[0]))])
    );
    for p in &ps {
        lab.del(p, &conf);
    }
    assert_eq!(lab.chains(), BTreeSet::new());
}

#[test]
fn ipmasq_chain_has_pod_ip() {
    if unavailable("ipmasq_chain_has_pod_ip", &["nft"]) {
        return;
    }
    let lab = Lab::new(34);
    let conf = lab.conf("1.0.0", json!({"ipMasq": true, "isGateway": true}));
    let pod = Pod::new();
    let r = lab.add(&pod, &conf);
    let ip = first_address(&r);
    let chain = lab
        .masq_chain(&ip)
        .unwrap_or_else(|| panic!("no masquerade chain with {ip}"));
    let v = lab.json(&["nft", "-j", "list", "table", "ip", MASQ_TABLE]);
    let objs = v["nftables"].as_array().unwrap();
    let c = objs
        .iter()
        .filter_map(|o| o.get("chain"))
        .find(|c| c["name"] == chain.as_str())
        .expect("chain object");
    assert_eq!(
        (&c["type"], &c["hook"]),
        (&json!("nat"), &json!("postrouting")),
        "{c}"
    );
    let rule = objs
        .iter()
        .filter_map(|o| o.get("rule"))
        .find(|r| r["chain"] == chain.as_str())
        .expect("rule");
    let expr = rule["expr"].to_string();
    assert!(expr.contains(&format!("\"right\":\"{ip}\"")), "{expr}");
    assert!(
        expr.contains(&format!("\"addr\":\"{}.0\",\"len\":24", lab.prefix)),
        "{expr}"
    );
    assert!(expr.contains("\"masquerade\""), "{expr}");
    lab.del(&pod, &conf);
    assert_eq!(lab.masq_chain(&ip), None);
    assert_eq!(lab.chains(), BTreeSet::new());
}

// ---------------------------------------------------------------------------------------------------
// 4. plumb-macspoofchk chained after the reference bridge

#[test]
fn macspoofchk_chained_after_reference_bridge() {
    let test = "macspoofchk_chained_after_reference_bridge";
    if unavailable(test, &["nft", "ping"]) {
        return;
    }
    // The reference bridge v1.10 (scripts/peers); a loud skip without Go >= 1.26.
    let Some(reference) = peers::bin(test, "bridge") else {
        return;
    };
    let lab = Lab::new(41);
    let mut ref_conf = lab.conf("1.0.0", json!({}));
    ref_conf["type"] = json!("bridge");
    let [a, b]: [Pod; 2] = pods(2).try_into().ok().unwrap();
    let ra = lab.run(&reference, &lab.call("ADD", &a, &ref_conf)).ok();
    let rb = lab.run(&reference, &lab.call("ADD", &b, &ref_conf)).ok();
    let hv = host_veth(&ra);
    assert_eq!(lab.link(&hv)["master"], lab.bridge.as_str());

    let chk = plumb_bin("plumb-macspoofchk");
    let chk_conf = json!({"cniVersion": "1.0.0", "name": lab.net, "type": "plumb-macspoofchk",
                          "prevResult": ra});
    let out = lab.run(&chk, &lab.call("ADD", &a, &chk_conf)).ok();
    assert_eq!(
        out["interfaces"], ra["interfaces"],
        "prevResult not passed on"
    );
    assert_eq!(out["ips"], ra["ips"], "prevResult not passed on");
    let mac_a = container_mac(&ra);
    let chain = lab
        .spoof_chain(&mac_a)
        .unwrap_or_else(|| panic!("no spoof-check chain with {mac_a}"));
    let text = lab.spoof_chain_text(&chain);
    assert!(text.contains(&format!("\"{hv}\"")), "{text}");
    lab.run(&chk, &lab.call("CHECK", &a, &chk_conf)).ok();

    let ip_b = first_address(&rb);
    assert!(a.ping(&ip_b), "pod a cannot ping pod b");
    a.set_mac("02:00:00:41:00:aa");
    a.flush_neigh();
    b.flush_neigh();
    assert!(a.ping_fails(&ip_b), "spoofed MAC still reaches pod b");
    a.set_mac(&mac_a);
    a.flush_neigh();
    b.flush_neigh();
    assert!(
        a.ping(&ip_b),
        "pod a cannot ping pod b with its own MAC again"
    );

    lab.run(&chk, &lab.call("DEL", &a, &chk_conf)).ok();
    assert_eq!(lab.spoof_chain(&mac_a), None);
    assert_eq!(lab.chains(), BTreeSet::new());
    let out = lab.run(&chk, &lab.call("CHECK", &a, &chk_conf));
    assert_err(&out, 102, &["spoof"]);
    lab.run(&chk, &lab.call("DEL", &a, &chk_conf)).ok();
    lab.run(&reference, &lab.call("DEL", &a, &ref_conf)).ok();
    lab.run(&reference, &lab.call("DEL", &b, &ref_conf)).ok();
    assert!(lab.reservations().is_empty());
}

// ---------------------------------------------------------------------------------------------------
// 5. Bad input: exact code, a message naming the field, nothing left behind

#[test]
fn bad_config_is_rejected_naming_the_field() {
    if unavailable("bad_config_is_rejected_naming_the_field", &["nft"]) {
        return;
    }
    let lab = Lab::new(51);
    let pod = Pod::new();
    let long16 = format!("{:x<16}", unique_name("pbl"));
    let gw11 = format!("{:x<11}", unique_name("pbg"));
    let gw_name = format!("{gw11}.2003");
    assert_eq!((long16.len(), gw_name.len()), (16, 16));
    let cases: Vec<(Value, Vec<String>)> = vec![
        (
            json!({"vlan": 4095}),
            vec!["\"vlan\"".into(), "4095".into()],
        ),
        (json!({"vlan": -1}), vec!["\"vlan\"".into(), "-1".into()]),
        (
            json!({"vlan": "10"}),
            vec!["\"vlan\"".into(), "\"10\"".into()],
        ),
        (
            json!({"vlanTrunk": [{"minID": 10, "maxID": 5}]}),
            vec![
                "vlanTrunk[0]".into(),
                "minID 10 is greater than maxID 5".into(),
            ],
        ),
        (
            json!({"vlanTrunk": [{"id": 0}]}),
            vec!["vlanTrunk[0].id".into()],
        ),
        (
            json!({"isGateway": "true"}),
            vec!["\"isGateway\"".into(), "without quotes".into()],
        ),
        (
            json!({"bridge": long16}),
            vec!["bridge".into(), long16.clone()],
        ),
        (
            json!({"bridge": gw11, "vlan": 2003, "isGateway": true}),
            vec!["bridge".into(), gw_name.clone()],
        ),
    ];
    for (extra, needles) in cases {
        let conf = lab.conf("1.0.0", extra.clone());
        let before = lab.snapshot();
        let out = lab.bridge(&lab.call("ADD", &pod, &conf));
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        assert_err(&out, 7, &needles);
        assert_eq!(lab.snapshot(), before, "config {extra} left something");
        assert_eq!(pod.links(), BTreeSet::from(["lo".to_string()]));
    }
}

#[test]
fn bridge_name_taken_by_a_non_bridge() {
    if unavailable("bridge_name_taken_by_a_non_bridge", &["nft"]) {
        return;
    }
    let lab = Lab::new(52);
    lab.sh(&[
        "ip",
        "link",
        "add",
        &lab.bridge,
        "type",
        "veth",
        "peer",
        "name",
        "pbpeer",
    ]);
    let pod = Pod::new();
    let conf = lab.conf("1.0.0", json!({}));
    let before = lab.snapshot();
    let out = lab.bridge(&lab.call("ADD", &pod, &conf));
    assert_err(&out, 7, &["\"bridge\"", &lab.bridge, "not a bridge"]);
    assert_eq!(lab.snapshot(), before);
    assert_eq!(pod.links(), BTreeSet::from(["lo".to_string()]));
    assert_eq!(
        lab.link(&lab.bridge)["linkinfo"]["info_kind"],
        "veth",
        "the existing interface was changed"
    );
}

#[test]
fn ipam_exhaustion_rolls_back_the_veth() {
    if unavailable("ipam_exhaustion_rolls_back_the_veth", &["nft"]) {
        return;
    }
    let lab = Lab::new(53);
    let conf = lab.conf(
        "1.0.0",
        json!({"macspoofchk": true, "ipMasq": true,
               "ipam": {"range": format!("{}.0/30", lab.prefix), "gateway": null}}),
    );
    let ps = pods(3);
    let r0 = lab.add(&ps[0], &conf);
    let r1 = lab.add(&ps[1], &conf);
    let mut got = BTreeSet::from([first_address(&r0), first_address(&r1)]);
    assert_eq!(
        std::mem::take(&mut got),
        BTreeSet::from([format!("{}.1", lab.prefix), format!("{}.2", lab.prefix)])
    );
    let before = lab.snapshot();
    assert_eq!(before.reservations.len(), 2);
    let out = lab.bridge(&lab.call("ADD", &ps[2], &conf));
    let range = format!("{}.0/30", lab.prefix);
    assert_err(&out, 100, &[&range, "exhausted"]);
    assert_eq!(lab.snapshot(), before, "the failed ADD left something");
    assert_eq!(lab.ports().len(), 2);
    assert_eq!(ps[2].links(), BTreeSet::from(["lo".to_string()]));
    // Releasing one address lets the third pod in.
    lab.del(&ps[0], &conf);
    let r2 = lab.add(&ps[2], &conf);
    assert_eq!(first_address(&r2), first_address(&r0));
    lab.del(&ps[1], &conf);
    lab.del(&ps[2], &conf);
}

#[test]
fn missing_netns_is_code_3() {
    if unavailable("missing_netns_is_code_3", &["nft"]) {
        return;
    }
    let lab = Lab::new(54);
    let conf = lab.conf("1.0.0", json!({"macspoofchk": true}));
    let pod = Pod::new();
    let gone = format!("/run/netns/{}-gone", unique_name("pbx"));
    let before = lab.snapshot();
    let out = lab.bridge(&lab.call("ADD", &pod, &conf).env("CNI_NETNS", &gone));
    assert_err(&out, 3, &["CNI_NETNS", &gone]);
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn existing_container_interface_is_code_105() {
    if unavailable("existing_container_interface_is_code_105", &["nft"]) {
        return;
    }
    let lab = Lab::new(55);
    let conf = lab.conf("1.0.0", json!({"macspoofchk": true, "ipMasq": true}));
    // An attachment that is already there: the bridge exists, as on a working node.
    let keeper = Pod::new();
    lab.add(&keeper, &conf);
    let pod = Pod::new();
    pod.exec(&[
        "ip", "link", "add", IFNAME, "type", "veth", "peer", "name", "eth0peer",
    ]);
    let before = lab.snapshot();
    let out = lab.bridge(&lab.call("ADD", &pod, &conf));
    assert_err(&out, 105, &["already has an interface named eth0"]);
    assert_eq!(lab.snapshot(), before);
    assert_eq!(
        pod.link(IFNAME)["linkinfo"]["info_kind"],
        "veth",
        "the pod's own interface was touched"
    );
    assert!(pod.links().contains("eth0peer"));
    lab.del(&keeper, &conf);
}

// ---------------------------------------------------------------------------------------------------
// 6. A failed ADD at every step rolls back

#[test]
fn failed_add_at_every_step_rolls_back() {
    if unavailable("failed_add_at_every_step_rolls_back", &["nft"]) {
        return;
    }
    let lab = Lab::new(61);
    let conf = lab.conf(
        "1.0.0",
        json!({"isGateway": true, "ipMasq": true, "macspoofchk": true}),
    );
    // A working attachment first, so the bridge and its gateway address exist and must survive.
    let keeper = Pod::new();
    let rk = lab.add(&keeper, &conf);
    for step in [
        "veth",
        "port",
        "ipam",
        "container",
        "gateway",
        "masquerade",
        "spoofcheck",
    ] {
        let pod = Pod::new();
        let before = lab.snapshot();
        let out = lab.bridge(&lab.call("ADD", &pod, &conf).env("PLUMB_FAILPOINT", step));
        assert_err(&out, 199, &[step]);
        let after = lab.snapshot();
        assert_eq!(after, before, "failpoint {step} left something behind");
        assert_eq!(
            pod.links(),
            BTreeSet::from(["lo".to_string()]),
            "failpoint {step} left the container interface"
        );
        // The same attachment then succeeds and is removed normally.
        let r = lab.add(&pod, &conf);
        assert!(lab.spoof_chain(&container_mac(&r)).is_some());
        assert!(lab.masq_chain(&first_address(&r)).is_some());
        lab.del(&pod, &conf);
        assert_eq!(lab.snapshot(), before, "after ADD+DEL following {step}");
    }
    // The keeper is untouched.
    assert!(lab.spoof_chain(&container_mac(&rk)).is_some());
    assert!(lab.masq_chain(&first_address(&rk)).is_some());
    assert_eq!(lab.ports(), BTreeSet::from([host_veth(&rk)]));
    assert_eq!(lab.ipv4(&lab.bridge), vec![(lab.gw(), 24)]);
    lab.del(&keeper, &conf);
}

// ---------------------------------------------------------------------------------------------------
// 7. DEL is idempotent

#[test]
fn del_is_idempotent() {
    if unavailable("del_is_idempotent", &["nft"]) {
        return;
    }
    let lab = Lab::new(71);
    let conf = lab.conf("1.0.0", json!({"macspoofchk": true, "ipMasq": true}));
    for how in ["twice", "netns deleted", "CNI_NETNS empty"] {
        let mut pod = Pod::new();
        let r = lab.add(&pod, &conf);
        let hv = host_veth(&r);
        assert!(lab.has_link(&hv));
        assert_eq!(lab.reservations().len(), 1);
        let mut call = lab.call("DEL", &pod, &conf);
        match how {
            "netns deleted" => pod.delete_netns(),
            "CNI_NETNS empty" => call = call.env("CNI_NETNS", ""),
            _ => {}
        }
        for round in 0..2 {
            lab.bridge(&call).ok();
            assert!(!lab.has_link(&hv), "{how}, DEL {round}: host veth left");
            assert!(
                lab.reservations().is_empty(),
                "{how}, DEL {round}: reservation left"
            );
            assert_eq!(lab.chains(), BTreeSet::new(), "{how}, DEL {round}");
            if pod.ns.is_some() {
                assert_eq!(pod.links(), BTreeSet::from(["lo".to_string()]), "{how}");
            }
        }
    }
    assert!(lab.ports().is_empty());
}

// ---------------------------------------------------------------------------------------------------
// 8. Parallel ADDs onto a bridge that does not exist yet

#[test]
fn parallel_adds_create_one_bridge() {
    if unavailable("parallel_adds_create_one_bridge", &["nft"]) {
        return;
    }
    const N: usize = 32;
    let lab = Lab::new(81);
    let conf = lab.conf("1.0.0", json!({"isGateway": true}));
    let ps = pods(N);
    assert!(!lab.has_link(&lab.bridge));
    let bin = plumb_bin("plumb-bridge");
    let run_all = |cmd: &str| -> Vec<Outcome> {
        let children: Vec<_> = ps
            .iter()
            .map(|p| lab.spawn(&bin, &lab.call(cmd, p, &conf)))
            .collect();
        children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().expect("wait");
                Outcome {
                    exit: out.status.code().unwrap_or(-1),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                }
            })
            .collect()
    };
    let results: Vec<Value> = run_all("ADD").iter().map(Outcome::ok).collect();
    let bridges = ifnames(&lab.json(&["ip", "-j", "link", "show", "type", "bridge"]));
    assert_eq!(bridges, BTreeSet::from([lab.bridge.clone()]));
    let ips: BTreeSet<String> = results.iter().map(first_address).collect();
    assert_eq!(ips.len(), N, "{ips:?}");
    assert!(!ips.contains(&lab.gw()));
    let ports: BTreeSet<String> = results.iter().map(host_veth).collect();
    assert_eq!(ports.len(), N);
    assert_eq!(lab.ports(), ports);
    assert_eq!(lab.reservations().len(), N);
    for out in run_all("DEL") {
        out.ok();
    }
    assert!(lab.ports().is_empty());
    assert!(lab.reservations().is_empty());
}

// ---------------------------------------------------------------------------------------------------
// 9. CHECK

#[test]
fn check_detects_drift() {
    if unavailable("check_detects_drift", &["nft"]) {
        return;
    }
    let lab = Lab::new(91);
    let conf = lab.conf("1.0.0", json!({"macspoofchk": true}));
    let check = |pod: &Pod, r: &Value| {
        let mut c = conf.clone();
        c["prevResult"] = r.clone();
        lab.bridge(&lab.call("CHECK", pod, &c))
    };
    let ps = pods(4);
    let rs: Vec<Value> = ps.iter().map(|p| lab.add(p, &conf)).collect();
    for (p, r) in ps.iter().zip(&rs) {
        assert_eq!(check(p, r).ok(), Value::Null);
    }
    // CHECK without prevResult is a config error.
    let out = lab.bridge(&lab.call("CHECK", &ps[0], &conf));
    assert_err(&out, 7, &["prevResult"]);

    // Host veth deleted by hand (which takes its container peer along).
    lab.sh(&["ip", "link", "del", &host_veth(&rs[0])]);
    assert_err(&check(&ps[0], &rs[0]), 102, &[]);
    // Container MAC changed.
    ps[1].set_mac("02:00:00:91:00:aa");
    assert_err(&check(&ps[1], &rs[1]), 102, &["MAC"]);
    // Spoof-check chain deleted by hand.
    let chain = lab.spoof_chain(&container_mac(&rs[2])).expect("chain");
    lab.delete_spoof_chain(&chain);
    assert_err(&check(&ps[2], &rs[2]), 102, &["spoof"]);
    // Host veth taken off the bridge.
    lab.sh(&["ip", "link", "set", &host_veth(&rs[3]), "nomaster"]);
    assert_err(
        &check(&ps[3], &rs[3]),
        102,
        &[&host_veth(&rs[3]), &lab.bridge],
    );

    for p in &ps {
        lab.del(p, &conf);
    }
    assert!(lab.reservations().is_empty());
    assert_eq!(lab.chains(), BTreeSet::new());
}

// ---------------------------------------------------------------------------------------------------
// VLANs (skipped loudly on a kernel without 802.1Q or bridge VLAN filtering)

const V_ACCESS: u64 = 2003;
const V_OTHER: u64 = 2004;

#[test]
fn vlan_access_and_trunk_ports_carry_traffic() {
    if vlan_skip("vlan_access_and_trunk_ports_carry_traffic") {
        return;
    }
    let lab = Lab::new(101);
    let trunk_net = "10.241.101"; // the subnet on VLAN 2004 between the trunk pod and the uplink host
    let c2003 = lab.conf("1.0.0", json!({"vlan": V_ACCESS}));
    let c2004 = lab.conf("1.0.0", json!({"vlan": V_OTHER}));
    let ctrunk = lab.conf("1.0.0", json!({"vlanTrunk": [{"id": V_OTHER}]}));
    let [a, b, c, t]: [Pod; 4] = pods(4).try_into().ok().unwrap();
    let ra = lab.add(&a, &c2003);
    let br = lab.link(&lab.bridge);
    assert_eq!(br["linkinfo"]["info_data"]["vlan_filtering"], 1, "{br}");

    // The uplink: a veth into the bridge carrying 2003-2005 tagged; its other end `eth` sits in a
    // namespace with VLAN sub-interfaces eth.2003 and eth.2004.
    let up = Netns::new("pbu");
    lab.sh(&[
        "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth", "netns", &up.name,
    ]);
    lab.sh(&["ip", "link", "set", "uplink", "master", &lab.bridge]);
    lab.sh(&["bridge", "vlan", "del", "dev", "uplink", "vid", "1"]);
    for vid in ["2003", "2004", "2005"] {
        lab.sh(&["bridge", "vlan", "add", "dev", "uplink", "vid", vid]);
    }
    lab.sh(&["ip", "link", "set", "uplink", "up"]);
    // Answer ARP only on the interface that holds the address, so VLANs cannot leak through the host.
    up.exec(&[
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore",
    ]);
    up.exec(&["ip", "link", "set", "eth", "up"]);
    let host2003 = format!("{}.200", lab.prefix);
    let host2004 = format!("{trunk_net}.100");
    for (vid, addr) in [("2003", &host2003), ("2004", &host2004)] {
        let sub = format!("eth.{vid}");
        up.exec(&[
            "ip", "link", "add", "link", "eth", "name", &sub, "type", "vlan", "id", vid,
        ]);
        up.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", &sub]);
        up.exec(&["ip", "link", "set", &sub, "up"]);
    }

    let rb = lab.add(&b, &c2003);
    let rc = lab.add(&c, &c2004);
    let rt = lab.add(&t, &ctrunk);
    assert_eq!(
        lab.vlans(&host_veth(&ra)),
        BTreeMap::from([(V_ACCESS, (true, true))])
    );
    assert_eq!(
        lab.vlans(&host_veth(&rc)),
        BTreeMap::from([(V_OTHER, (true, true))])
    );
    assert_eq!(
        lab.vlans(&host_veth(&rt)),
        BTreeMap::from([(V_OTHER, (false, false))])
    );

    // VLAN 2003: pods reach each other and the host on eth.2003.
    assert!(a.ping(&first_address(&rb)), "a -> b on vlan 2003");
    assert!(b.ping(&first_address(&ra)), "b -> a on vlan 2003");
    assert!(a.ping(&host2003), "a -> eth.2003 host");
    // 2003 cannot reach 2004, though the addresses share a subnet.
    assert!(
        a.ping_fails(&first_address(&rc)),
        "vlan 2003 reached vlan 2004"
    );
    assert!(
        c.ping_fails(&first_address(&ra)),
        "vlan 2004 reached vlan 2003"
    );
    assert!(
        c.ping_fails(&host2003),
        "vlan 2004 reached the eth.2003 host"
    );
    // The trunk pod gets tagged 2004 frames on a VLAN sub-interface of its own.
    t.exec(&[
        "ip",
        "link",
        "add",
        "link",
        IFNAME,
        "name",
        "eth0.2004",
        "type",
        "vlan",
        "id",
        "2004",
    ]);
    t.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{trunk_net}.10/24"),
        "dev",
        "eth0.2004",
    ]);
    t.exec(&["ip", "link", "set", "eth0.2004", "up"]);
    assert!(t.ping(&host2004), "trunk pod -> eth.2004 host, tagged 2004");
    // Untagged, the trunk pod is on no VLAN.
    assert!(
        t.ping_fails(&first_address(&ra)),
        "trunk pod reached vlan 2003 untagged"
    );

    for (pod, conf, r) in [
        (&a, &c2003, &ra),
        (&b, &c2003, &rb),
        (&c, &c2004, &rc),
        (&t, &ctrunk, &rt),
    ] {
        let mut chk = conf.clone();
        chk["prevResult"] = r.clone();
        lab.bridge(&lab.call("CHECK", pod, &chk)).ok();
        lab.del(pod, conf);
    }
    assert_eq!(lab.ports(), BTreeSet::from(["uplink".to_string()]));
    assert!(lab.reservations().is_empty());
}

#[test]
fn vlan_preserve_default_vlan_on_and_off() {
    if vlan_skip("vlan_preserve_default_vlan_on_and_off") {
        return;
    }
    let lab = Lab::new(102);
    let off = lab.conf("1.0.0", json!({"vlan": V_ACCESS}));
    let on = lab.conf(
        "1.0.0",
        json!({"vlan": V_ACCESS, "preserveDefaultVlan": true}),
    );
    let trunk = lab.conf(
        "1.0.0",
        json!({"vlanTrunk": [{"minID": 2003, "maxID": 2005}], "preserveDefaultVlan": false}),
    );
    let trunk_on = lab.conf(
        "1.0.0",
        json!({"vlanTrunk": [{"id": 2004}], "preserveDefaultVlan": true}),
    );
    let cases = [
        (&off, BTreeMap::from([(V_ACCESS, (true, true))])),
        (
            &on,
            BTreeMap::from([(1, (false, true)), (V_ACCESS, (true, true))]),
        ),
        (
            &trunk,
            BTreeMap::from([
                (2003, (false, false)),
                (2004, (false, false)),
                (2005, (false, false)),
            ]),
        ),
        (
            &trunk_on,
            BTreeMap::from([(1, (true, true)), (2004, (false, false))]),
        ),
    ];
    for (conf, want) in cases {
        let pod = Pod::new();
        let r = lab.add(&pod, conf);
        assert_eq!(lab.vlans(&host_veth(&r)), want, "config {conf}");
        let mut chk = conf.clone();
        chk["prevResult"] = r.clone();
        lab.bridge(&lab.call("CHECK", &pod, &chk)).ok();
        lab.del(&pod, conf);
    }
}

#[test]
fn vlan_turns_on_filtering_on_an_existing_bridge() {
    if vlan_skip("vlan_turns_on_filtering_on_an_existing_bridge") {
        return;
    }
    let lab = Lab::new(103);
    lab.sh(&[
        "ip",
        "link",
        "add",
        &lab.bridge,
        "type",
        "bridge",
        "vlan_filtering",
        "0",
    ]);
    assert_eq!(
        lab.link(&lab.bridge)["linkinfo"]["info_data"]["vlan_filtering"],
        0
    );
    let conf = lab.conf("1.0.0", json!({"vlan": V_ACCESS}));
    let pod = Pod::new();
    let r = lab.add(&pod, &conf);
    let br = lab.link(&lab.bridge);
    assert_eq!(br["linkinfo"]["info_data"]["vlan_filtering"], 1, "{br}");
    assert!(flags(&br).contains(&"UP".to_string()));
    assert_eq!(
        lab.vlans(&host_veth(&r)),
        BTreeMap::from([(V_ACCESS, (true, true))])
    );
    lab.del(&pod, &conf);
    assert!(
        lab.has_link(&lab.bridge),
        "DEL removed a bridge it did not create"
    );
}

#[test]
fn vlan_gateway_interface_lives_as_long_as_its_ports() {
    if vlan_skip("vlan_gateway_interface_lives_as_long_as_its_ports") {
        return;
    }
    let lab = Lab::new(104);
    let conf = lab.conf("1.0.0", json!({"vlan": V_ACCESS, "isGateway": true}));
    let gw_if = format!("{}.{V_ACCESS}", lab.bridge);
    let [a, b]: [Pod; 2] = pods(2).try_into().ok().unwrap();
    let ra = lab.add(&a, &conf);
    let rb = lab.add(&b, &conf);
    let l = lab.link(&gw_if);
    assert_eq!(l["linkinfo"]["info_kind"], "vlan", "{l}");
    assert_eq!(l["linkinfo"]["info_data"]["id"], V_ACCESS, "{l}");
    assert_eq!(lab.ipv4(&gw_if), vec![(lab.gw(), 24)]);
    // The gateway sits on the bridge's VLAN 2003, not on the bridge itself.
    assert_eq!(lab.ipv4(&lab.bridge), vec![]);
    assert!(lab.vlans(&lab.bridge).contains_key(&V_ACCESS));
    assert!(a.ping(&lab.gw()), "pod cannot reach its VLAN gateway");
    assert!(a.ping(&first_address(&rb)));
    assert!(b.ping(&first_address(&ra)));
    lab.del(&a, &conf);
    assert!(
        lab.has_link(&gw_if),
        "gateway removed while a port still uses VLAN 2003"
    );
    assert!(b.ping(&lab.gw()));
    lab.del(&b, &conf);
    assert!(
        !lab.has_link(&gw_if),
        "gateway left after the last port of VLAN 2003"
    );
    assert!(!lab.vlans(&lab.bridge).contains_key(&V_ACCESS));
}

#[test]
fn vlan_config_on_a_kernel_without_vlan_filtering_fails_cleanly() {
    let test = "vlan_config_on_a_kernel_without_vlan_filtering_fails_cleanly";
    if unavailable(test, &["nft"]) {
        return;
    }
    if vlan_kernel().0 {
        // Not a skip: on a kernel with VLAN filtering this failure cannot happen, and the VLAN tests
        // above cover the success path.
        eprintln!("{test}: this kernel has bridge VLAN filtering; nothing to check");
        return;
    }
    let lab = Lab::new(105);
    let conf = lab.conf(
        "1.0.0",
        json!({"vlan": V_ACCESS, "isGateway": true, "ipMasq": true, "macspoofchk": true}),
    );
    let pod = Pod::new();
    // A new bridge cannot be created with VLAN filtering: nothing is made.
    let before = lab.snapshot();
    let out = lab.bridge(&lab.call("ADD", &pod, &conf));
    assert_err(&out, 5, &["bridge"]);
    assert_eq!(lab.snapshot(), before);
    assert_eq!(pod.links(), BTreeSet::from(["lo".to_string()]));
    // An existing bridge cannot have VLAN filtering turned on: the error says so, nothing is added.
    lab.sh(&["ip", "link", "add", &lab.bridge, "type", "bridge"]);
    let before = lab.snapshot();
    let out = lab.bridge(&lab.call("ADD", &pod, &conf));
    assert_err(&out, 5, &["vlan_filtering", &lab.bridge]);
    assert_eq!(lab.snapshot(), before);
    assert_eq!(pod.links(), BTreeSet::from(["lo".to_string()]));
}
