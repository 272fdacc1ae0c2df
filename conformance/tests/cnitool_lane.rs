//! The cnitool lane: plumb driven by the real `cnitool` (containernetworking/cni v1.3.x, built from its
//! module by `scripts/peers`), as users run it in their CI, with the reference plugins v1.10.x next to it.
//!
//! Every case puts its conflist in a private NETCONFPATH, runs cnitool on a "node" (a namespace the test
//! made) with a private libcni cache (a mount namespace binds a temp dir over `/var/lib/cni`, the only
//! cache cnitool knows), attaches two pods, and checks what each command did:
//! - `add`: the interface and its address in the pod, the IPAM record naming cnitool's container id, the
//!   pods ping each other, and what the chained plugins made (tuning's MTU, the spoof-check chain,
//!   portmap's rules);
//! - `check`: passes;
//! - `status`: at 1.1.0 libcni runs every plugin (a CNI_PATH without them fails), at 0.4.0 it runs none
//!   (the same CNI_PATH succeeds);
//! - `del`: the pod's interface, host veth, chains, IPAM record and cache entry are gone, the other pod
//!   is untouched;
//! - `gc` (cnitool passes no valid attachments): libcni DELs every attachment in its cache, then at 1.1.0
//!   sends GC without `cni.dev/valid-attachments`, which plumb-ipam answers with success and a log line
//!   (at 0.4.0 no GC is sent, so no such line).
//!
//! `cnitool_gc_keeps_attachments_of_other_caches` is the `cnitool gc` case of issue 12: another cache's
//! attachment keeps its reservation through a GC that carries no attachment list.

use conformance::netns::Netns;
use conformance::plugin::Outcome;
use conformance::result::first_address;
use conformance::skip::{have_command, skip, skip_unless_netns};
use conformance::{peers, plumb_bin, unique_name, TempDir};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The pods' interface name.
const IFNAME: &str = "eth0";
/// The MTU tuning gives the pod interface in the tuning chains.
const TUNED_MTU: u64 = 1400;
/// The line plumb-ipam prints when GC comes without the attachment list.
const GC_WITHOUT_LIST: &str = "without \"cni.dev/valid-attachments\": nothing released";
/// The host port portmap maps in the portmap chain.
const HOST_PORT: u16 = 18080;

/// cnitool with a private NETCONFPATH, libcni cache and CNI_PATH, optionally run on a node namespace.
struct Cnitool {
    bin: PathBuf,
    conf_dir: TempDir,
    cache: TempDir,
    cni_path: String,
    node: Option<String>,
    cap_args: Option<String>,
}

impl Cnitool {
    /// A cnitool for `test` with `configs` (conflists) in its NETCONFPATH; `None` after a loud skip when
    /// the peers cannot be built here.
    fn new(test: &str, configs: &[&Value]) -> Option<Cnitool> {
        let bin = peers::bin(test, "cnitool")?;
        let cni_path = peers::cni_path(test)?;
        let conf_dir = TempDir::new("ctcf");
        for c in configs {
            let name = c["name"].as_str().expect("conflist name");
            let file = conf_dir.path().join(format!("{name}.conflist"));
            std::fs::write(&file, serde_json::to_vec_pretty(c).expect("json"))
                .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        }
        // cnitool's cache is always /var/lib/cni: each run binds a private directory over it.
        std::fs::create_dir_all("/var/lib/cni").expect("create /var/lib/cni (mount point)");
        Some(Cnitool {
            bin,
            conf_dir,
            cache: TempDir::new("ctch"),
            cni_path,
            node: None,
            cap_args: None,
        })
    }

    /// Runs cnitool (and so every plugin) inside the node namespace `name`.
    fn on_node(mut self, name: &str) -> Cnitool {
        self.node = Some(name.into());
        self
    }

    /// Sets CAP_ARGS (a JSON object), which libcni filters into `runtimeConfig`.
    fn cap_args(mut self, v: &Value) -> Cnitool {
        self.cap_args = Some(v.to_string());
        self
    }

    /// Another cnitool on the same configs and node, with its own (empty) cache.
    fn other_cache(&self) -> Cnitool {
        let conf_dir = TempDir::new("ctcf");
        for e in std::fs::read_dir(self.conf_dir.path())
            .expect("conf dir")
            .flatten()
        {
            std::fs::copy(e.path(), conf_dir.path().join(e.file_name())).expect("copy conflist");
        }
        Cnitool {
            bin: self.bin.clone(),
            conf_dir,
            cache: TempDir::new("ctch"),
            cni_path: self.cni_path.clone(),
            node: self.node.clone(),
            cap_args: self.cap_args.clone(),
        }
    }

    /// `cnitool <cmd> <net> <netns>` with this cnitool's CNI_PATH.
    fn run(&self, cmd: &str, net: &str, netns: &str) -> Outcome {
        self.run_with_path(cmd, net, netns, &self.cni_path)
    }

    /// `cnitool <cmd> <net> <netns>` with CNI_PATH = `cni_path`.
    fn run_with_path(&self, cmd: &str, net: &str, netns: &str, cni_path: &str) -> Outcome {
        let mut c = match &self.node {
            Some(node) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", node, "unshare"]);
                c
            }
            None => Command::new("unshare"),
        };
        c.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind \"$1\" /var/lib/cni && shift && exec \"$@\"",
            "sh",
        ])
        .arg(self.cache.path())
        .arg(&self.bin)
        .args([cmd, net, netns])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(std::env::vars().filter(|(k, _)| k.starts_with("PLUMB_")))
        .env("NETCONFPATH", self.conf_dir.path())
        .env("CNI_PATH", cni_path)
        .env("CNI_IFNAME", IFNAME)
        .stdin(Stdio::null());
        if let Some(a) = &self.cap_args {
            c.env("CAP_ARGS", a);
        }
        let out = c.output().expect("run cnitool");
        Outcome {
            exit: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The attachments in this cnitool's libcni cache: (network, containerId, ifName).
    fn cached(&self) -> BTreeSet<(String, String, String)> {
        let dir = self.cache.path().join("results");
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let v: Value =
                    serde_json::from_slice(&std::fs::read(e.path()).expect("cache file"))
                        .expect("cache file is JSON");
                let s = |k: &str| {
                    v[k].as_str()
                        .unwrap_or_else(|| panic!("{k} in {v}"))
                        .to_string()
                };
                (s("networkName"), s("containerId"), s("ifName"))
            })
            .collect()
    }

    /// cnitool's container id for the pod at `netns`, read from the cache entry `add` wrote.
    fn container_id(&self, net: &str, netns: &str) -> String {
        let dir = self.cache.path().join("results");
        for e in std::fs::read_dir(&dir)
            .expect("cache results dir")
            .flatten()
        {
            let v: Value = serde_json::from_slice(&std::fs::read(e.path()).expect("cache file"))
                .expect("cache file is JSON");
            if v["networkName"] == net && v["netns"] == netns {
                return v["containerId"].as_str().expect("containerId").to_string();
            }
        }
        panic!(
            "no cache entry for {net} in {netns} under {}",
            dir.display()
        )
    }
}

/// Asserts `out` succeeded, naming `what`.
fn expect_ok(what: &str, out: &Outcome) {
    assert_eq!(
        out.exit, 0,
        "cnitool {what} failed: stdout={} stderr={}",
        out.stdout, out.stderr
    );
}

/// plumb-ipam's reservations under `data` as (address, network, container, ifname), from `plumb-ipam list`.
fn records(data: &Path) -> BTreeSet<(String, String, String, String)> {
    let out = Command::new(plumb_bin("plumb-ipam"))
        .args(["list", "--data-dir"])
        .arg(data)
        .env_clear()
        .output()
        .expect("run plumb-ipam list");
    assert!(out.status.success(), "plumb-ipam list: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c[1].into(), c[2].into(), c[3].into(), c[4].into())
        })
        .collect()
}

/// plumb-ipam's record and claim file names under `data` (`att-<containerID>@<ifname>`, `ip-<address>`).
fn record_files(data: &Path) -> BTreeSet<String> {
    conformance::ipam_records(data, &["att-", "ip-"])
}

/// The IPv4 addresses (CIDR) on `dev` in `ns`; empty when the link is absent.
fn addrs(ns: &Netns, dev: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "ip", "-j", "-4", "addr", "show", "dev", dev,
        ])
        .output()
        .expect("ip addr");
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect()
}

/// The link names in `ns`.
fn links(ns: &Netns) -> BTreeSet<String> {
    let v = conformance::iproute::parse_json(&ns.exec(&["ip", "-j", "link", "show"]));
    conformance::iproute::ifnames(&v)
}

/// The MTU of `dev` in `ns`.
fn mtu(ns: &Netns, dev: &str) -> u64 {
    let v = conformance::iproute::parse_json(&ns.exec(&["ip", "-j", "link", "show", dev]));
    v[0]["mtu"].as_u64().expect("mtu")
}

/// Which plugins a case chains, each a conflist builder.
#[derive(Clone, Copy, Debug)]
enum Case {
    /// plumb-bridge with plumb-ipam.
    PlumbBridge,
    /// plumb-bridge, reference tuning, plumb-macspoofchk.
    TuningSpoofchk,
    /// the reference bridge v1.10 with plumb-ipam.
    ReferenceBridge,
    /// plumb-bridge, reference tuning, reference portmap (nftables backend).
    TuningPortmap,
}

fn ipam(subnet: u8, data: &Path) -> Value {
    json!({
        "type": "plumb-ipam",
        "range": format!("10.61.{subnet}.0/24"),
        "range_start": format!("10.61.{subnet}.10"),
        "gateway": format!("10.61.{subnet}.1"),
        "dataDir": data.display().to_string(),
    })
}

fn conflist(case: Case, version: &str, name: &str, bridge: &str, subnet: u8, data: &Path) -> Value {
    let plumb_bridge = json!({
        "type": "plumb-bridge", "bridge": bridge, "isGateway": true, "ipam": ipam(subnet, data),
    });
    let tuning = json!({"type": "tuning", "mtu": TUNED_MTU});
    let plugins = match case {
        Case::PlumbBridge => json!([plumb_bridge]),
        Case::TuningSpoofchk => json!([plumb_bridge, tuning, {"type": "plumb-macspoofchk"}]),
        Case::ReferenceBridge => json!([{
            "type": "bridge", "bridge": bridge, "isGateway": true, "ipam": ipam(subnet, data),
        }]),
        Case::TuningPortmap => json!([plumb_bridge, tuning, {
            "type": "portmap", "backend": "nftables", "capabilities": {"portMappings": true},
        }]),
    };
    json!({"cniVersion": version, "name": name, "plugins": plugins})
}

/// The node's nftables ruleset as text.
fn ruleset(node: &Netns) -> String {
    node.exec(&["nft", "list", "ruleset"])
}

/// Names of the spoof-check chains in the node (table `netdev plumb_spoofchk`).
fn spoof_chains(node: &Netns) -> BTreeSet<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node.name,
            "nft",
            "list",
            "table",
            "netdev",
            "plumb_spoofchk",
        ])
        .output()
        .expect("nft list table");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("chain ")?.strip_suffix(" {"))
        .map(str::to_string)
        .collect()
}

/// What one pod's attachment is, as cnitool made it.
struct Pod {
    ns: Netns,
    ip: String,
    cid: String,
}

/// `cnitool add` of `net` for a new pod; checks the result, the pod interface and the IPAM record.
fn add_pod(tool: &Cnitool, net: &str, data: &Path) -> Pod {
    let ns = Netns::new("ctp");
    let out = tool.run("add", net, &ns.path());
    expect_ok("add", &out);
    let result = out.json();
    let ip = first_address(&result);
    let cidr = result["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_string();
    assert_eq!(
        addrs(&ns, IFNAME),
        vec![cidr.clone()],
        "{IFNAME} in the pod"
    );
    let cid = tool.container_id(net, &ns.path());
    assert!(cid.starts_with("cnitool-"), "cnitool's container id: {cid}");
    // `list` shortens container ids to 12 characters; the record file carries the whole id.
    let short: String = cid.chars().take(12).collect();
    assert!(
        records(data).contains(&(ip.clone(), net.into(), short, IFNAME.into())),
        "IPAM record of {cid}/{IFNAME} at {ip}: {:?}",
        records(data)
    );
    assert!(
        record_files(data).contains(&format!("att-{cid}@{IFNAME}")),
        "record file of {cid}: {:?}",
        record_files(data)
    );
    Pod { ns, ip, cid }
}

/// Asserts nothing of `pod`'s attachment is left: pod interface, IPAM record, cache entry.
fn assert_gone(tool: &Cnitool, data: &Path, pod: &Pod) {
    assert!(
        addrs(&pod.ns, IFNAME).is_empty() && !links(&pod.ns).contains(IFNAME),
        "{IFNAME} left in the pod"
    );
    assert!(
        !records(data).iter().any(|r| r.0 == pod.ip)
            && !record_files(data).contains(&format!("att-{}@{IFNAME}", pod.cid)),
        "IPAM record of {} left: {:?}",
        pod.cid,
        records(data)
    );
    assert!(
        !tool.cached().iter().any(|c| c.1 == pod.cid),
        "cache entry of {} left",
        pod.cid
    );
}

/// Skips loudly unless this machine can run the lane.
fn unable(test: &str) -> bool {
    if skip_unless_netns(test) {
        return true;
    }
    for cmd in ["ping", "nft", "unshare"] {
        if !have_command(cmd) {
            skip(
                test,
                &format!("needs `{cmd}` (apt iputils-ping nftables util-linux)"),
            );
            return true;
        }
    }
    false
}

/// The status probe: an empty CNI_PATH directory makes STATUS fail only when libcni runs the plugins.
fn assert_status(tool: &Cnitool, version: &str, net: &str, netns: &str) {
    expect_ok("status", &tool.run("status", net, netns));
    let empty = TempDir::new("ctem");
    let out = tool.run_with_path("status", net, netns, &empty.path().display().to_string());
    if version == "1.1.0" {
        assert_ne!(out.exit, 0, "status at 1.1.0 must run the plugins: {out:?}");
        assert!(
            out.stderr.contains("failed to find plugin"),
            "status error: {}",
            out.stderr
        );
    } else {
        expect_ok("status below 1.1.0 (libcni runs no plugin)", &out);
    }
}

/// One case at one version: two pods on one node, add / check / status / del / gc / del.
fn lane(case: Case, version: &str) {
    let test = &format!("cnitool_{case:?}_{version}");
    if unable(test) {
        return;
    }
    let node = Netns::new("ctn");
    let data = TempDir::new("ctd");
    let net = unique_name("ctnet");
    let bridge = unique_name("ctbr");
    let config = conflist(case, version, &net, &bridge, 1, data.path());
    let Some(tool) = Cnitool::new(test, &[&config]) else {
        return;
    };
    let tool = match case {
        Case::TuningPortmap => tool.cap_args(&json!({
            "portMappings": [{"hostPort": HOST_PORT, "containerPort": 80, "protocol": "tcp"}],
        })),
        _ => tool,
    }
    .on_node(&node.name);

    let a = add_pod(&tool, &net, data.path());
    let b = add_pod(&tool, &net, data.path());
    assert_ne!(a.ip, b.ip, "distinct addresses");
    assert!(
        a.ns.try_exec(&["ping", "-c", "2", "-W", "2", &b.ip]),
        "pod A ({}) cannot reach pod B ({})",
        a.ip,
        b.ip
    );
    assert_eq!(
        addrs(&node, &bridge),
        vec!["10.61.1.1/24".to_string()],
        "gateway on the bridge"
    );
    match case {
        Case::TuningSpoofchk => {
            assert_eq!(mtu(&a.ns, IFNAME), TUNED_MTU, "tuning's MTU");
            assert_eq!(
                spoof_chains(&node).len(),
                2,
                "one spoof-check chain per pod: {}",
                ruleset(&node)
            );
        }
        Case::TuningPortmap => {
            assert_eq!(mtu(&a.ns, IFNAME), TUNED_MTU, "tuning's MTU");
            let r = ruleset(&node);
            assert!(
                r.contains(&HOST_PORT.to_string()) && r.contains(&a.ip) && r.contains(&b.ip),
                "portmap's DNAT for both pods: {r}"
            );
        }
        Case::PlumbBridge | Case::ReferenceBridge => {}
    }

    expect_ok("check", &tool.run("check", &net, &a.ns.path()));
    expect_ok("check", &tool.run("check", &net, &b.ns.path()));
    assert_status(&tool, version, &net, &a.ns.path());

    // del A: A is gone, B untouched.
    expect_ok("del", &tool.run("del", &net, &a.ns.path()));
    assert_gone(&tool, data.path(), &a);
    assert_eq!(addrs(&b.ns, IFNAME).len(), 1, "pod B kept its address");
    assert!(
        record_files(data.path()).contains(&format!("att-{}@{IFNAME}", b.cid)),
        "pod B's record kept"
    );
    match case {
        Case::TuningSpoofchk => assert_eq!(spoof_chains(&node).len(), 1, "A's spoof chain removed"),
        Case::TuningPortmap => {
            let r = ruleset(&node);
            assert!(
                !r.contains(&a.ip) && r.contains(&b.ip),
                "A's port mapping removed: {r}"
            );
        }
        _ => {}
    }

    // gc with no valid attachments: libcni DELs B (cached), then GC reaches the plugins at 1.1.0 only.
    let out = tool.run("gc", &net, &b.ns.path());
    expect_ok("gc", &out);
    assert_gone(&tool, data.path(), &b);
    // plumb-bridge passes GC on to its IPAM; the reference bridge v1.10 has no GC and passes none on.
    let reaches_ipam = version == "1.1.0" && !matches!(case, Case::ReferenceBridge);
    assert_eq!(
        out.stderr.contains(GC_WITHOUT_LIST),
        reaches_ipam,
        "GC reaches plumb-ipam (without the list) only at 1.1.0 through plumb-bridge: stderr={}",
        out.stderr
    );

    // A second del of each is a success, and nothing of either pod is left on the node.
    expect_ok("second del", &tool.run("del", &net, &a.ns.path()));
    expect_ok("del after gc", &tool.run("del", &net, &b.ns.path()));
    assert_eq!(records(data.path()), BTreeSet::new(), "IPAM records left");
    assert_eq!(
        record_files(data.path()),
        BTreeSet::new(),
        "IPAM files left"
    );
    assert_eq!(tool.cached(), BTreeSet::new(), "cache entries left");
    let left: Vec<String> = links(&node)
        .into_iter()
        .filter(|l| l.starts_with("plb") || l.starts_with("veth"))
        .collect();
    assert!(left.is_empty(), "host veths left on the node: {left:?}");
    assert!(
        spoof_chains(&node).is_empty(),
        "spoof chains left: {}",
        ruleset(&node)
    );
    let r = ruleset(&node);
    assert!(
        !r.contains(&a.ip) && !r.contains(&b.ip),
        "rules naming the pods left: {r}"
    );
}

#[test]
fn cnitool_plumb_bridge_1_1_0() {
    lane(Case::PlumbBridge, "1.1.0");
}

#[test]
fn cnitool_plumb_bridge_0_4_0() {
    lane(Case::PlumbBridge, "0.4.0");
}

#[test]
fn cnitool_tuning_macspoofchk_1_1_0() {
    lane(Case::TuningSpoofchk, "1.1.0");
}

#[test]
fn cnitool_tuning_macspoofchk_0_4_0() {
    lane(Case::TuningSpoofchk, "0.4.0");
}

#[test]
fn cnitool_reference_bridge_1_1_0() {
    lane(Case::ReferenceBridge, "1.1.0");
}

#[test]
fn cnitool_reference_bridge_0_4_0() {
    lane(Case::ReferenceBridge, "0.4.0");
}

#[test]
fn cnitool_tuning_portmap_1_1_0() {
    lane(Case::TuningPortmap, "1.1.0");
}

#[test]
fn cnitool_tuning_portmap_0_4_0() {
    lane(Case::TuningPortmap, "0.4.0");
}

/// Issue 12's `cnitool gc`: attachments cnitool made with another cache (another runtime on the node) and
/// in another network keep their reservations through a `cnitool gc` that carries no attachment list.
fn gc_keeps_attachments_of_other_caches(version: &str) {
    let test = &format!("cnitool_gc_keeps_attachments_of_other_caches_{version}");
    if unable(test) {
        return;
    }
    let node = Netns::new("ctn");
    let data = TempDir::new("ctd");
    let (net, other_net) = (unique_name("ctnet"), unique_name("ctoth"));
    let bridge = unique_name("ctbr");
    // Two networks on one bridge and one store (one space, so one address pool).
    let mut conf = conflist(Case::PlumbBridge, version, &net, &bridge, 1, data.path());
    let mut other = conflist(
        Case::PlumbBridge,
        version,
        &other_net,
        &bridge,
        1,
        data.path(),
    );
    for c in [&mut conf, &mut other] {
        c["plugins"][0]["ipam"]["network_name"] = json!("shared");
    }
    let Some(runtime_a) = Cnitool::new(test, &[&conf, &other]) else {
        return;
    };
    let runtime_a = runtime_a.on_node(&node.name);
    let runtime_b = runtime_a.other_cache();

    let kept = add_pod(&runtime_a, &net, data.path());
    let kept_other = add_pod(&runtime_a, &other_net, data.path());
    let own = add_pod(&runtime_b, &net, data.path());
    let before = record_files(data.path());

    // B's gc of `net`: libcni DELs B's own attachment, then sends GC without the list at 1.1.0.
    let out = runtime_b.run("gc", &net, &own.ns.path());
    expect_ok("gc", &out);
    assert_eq!(
        out.stderr.contains(GC_WITHOUT_LIST),
        version == "1.1.0",
        "stderr: {}",
        out.stderr
    );
    assert_gone(&runtime_b, data.path(), &own);
    // B's gc of the other network, of which its cache holds nothing.
    expect_ok(
        "gc of the other network",
        &runtime_b.run("gc", &other_net, &own.ns.path()),
    );

    // A's attachments keep their reservations, interfaces and traffic.
    let after = record_files(data.path());
    let expect: BTreeSet<String> = before
        .iter()
        .filter(|f| !f.contains(&own.cid) && !f.ends_with(&own.ip))
        .cloned()
        .collect();
    assert_eq!(after, expect, "only B's own attachment is released");
    for p in [&kept, &kept_other] {
        assert!(
            after.contains(&format!("att-{}@{IFNAME}", p.cid)),
            "{} kept its record",
            p.cid
        );
        assert_eq!(addrs(&p.ns, IFNAME).len(), 1, "{} kept its address", p.cid);
    }
    assert!(
        kept.ns
            .try_exec(&["ping", "-c", "1", "-W", "2", &kept_other.ip]),
        "the kept pods still reach each other"
    );
    expect_ok(
        "check of a kept pod",
        &runtime_a.run("check", &net, &kept.ns.path()),
    );

    // A's own gc then releases A's attachments (libcni DELs them from its cache).
    expect_ok("gc by A", &runtime_a.run("gc", &net, &kept.ns.path()));
    expect_ok(
        "gc by A",
        &runtime_a.run("gc", &other_net, &kept_other.ns.path()),
    );
    assert_gone(&runtime_a, data.path(), &kept);
    assert_gone(&runtime_a, data.path(), &kept_other);
    assert_eq!(
        record_files(data.path()),
        BTreeSet::new(),
        "IPAM files left"
    );
}

#[test]
fn cnitool_gc_keeps_attachments_of_other_caches_1_1_0() {
    gc_keeps_attachments_of_other_caches("1.1.0");
}

#[test]
fn cnitool_gc_keeps_attachments_of_other_caches_0_4_0() {
    gc_keeps_attachments_of_other_caches("0.4.0");
}

/// plumb-vxlan + plumb-ipam: two node namespaces joined by a carrier veth, cnitool on each node with the
/// node's own cache, one pod per node, one shared store.
fn vxlan(version: &str) {
    let test = &format!("cnitool_vxlan_{version}");
    if unable(test) {
        return;
    }
    let (na, nb) = (Netns::new("ctva"), Netns::new("ctvb"));
    conformance::netns::veth_between(&na, &nb, "car0", 1500);
    for (n, ip, gw) in [
        (&na, "10.78.0.1/24", "10.78.0.2"),
        (&nb, "10.78.0.2/24", "10.78.0.1"),
    ] {
        n.exec(&["ip", "addr", "add", ip, "dev", "car0"]);
        n.exec(&["ip", "link", "set", "car0", "up"]);
        n.exec(&["ip", "route", "add", "default", "via", gw]);
    }
    let data = TempDir::new("ctd");
    let net = unique_name("ctvx");
    let config = json!({
        "cniVersion": version,
        "name": net,
        "plugins": [{
            "type": "plumb-vxlan", "bridge": "ctvx0", "vni": 4243, "group": "224.0.0.89",
            "ipam": {"type": "plumb-ipam", "range": "192.168.78.0/24", "dataDir": data.path().display().to_string()},
        }],
    });
    let Some(on_a) = Cnitool::new(test, &[&config]) else {
        return;
    };
    let on_b = on_a.other_cache().on_node(&nb.name);
    let on_a = on_a.on_node(&na.name);
    let a = add_pod(&on_a, &net, data.path());
    let b = add_pod(&on_b, &net, data.path());
    assert_ne!(a.ip, b.ip, "one store: distinct addresses");
    for n in [&na, &nb] {
        let d = n.exec(&["ip", "-d", "link", "show", "ctvx0-vx"]);
        assert!(
            d.contains("vxlan id 4243") && d.contains("mtu 1450"),
            "VTEP on {}: {d}",
            n.name
        );
    }
    assert!(
        a.ns.try_exec(&["ping", "-c", "2", "-W", "2", &b.ip]),
        "pod A ({}) cannot reach pod B ({}) over the VXLAN",
        a.ip,
        b.ip
    );
    expect_ok("check on A", &on_a.run("check", &net, &a.ns.path()));
    expect_ok("check on B", &on_b.run("check", &net, &b.ns.path()));
    assert_status(&on_a, version, &net, &a.ns.path());

    expect_ok("del on A", &on_a.run("del", &net, &a.ns.path()));
    assert_gone(&on_a, data.path(), &a);
    assert!(
        record_files(data.path()).contains(&format!("att-{}@{IFNAME}", b.cid)),
        "B kept"
    );
    let out = on_b.run("gc", &net, &b.ns.path());
    expect_ok("gc on B", &out);
    assert_eq!(
        out.stderr.contains(GC_WITHOUT_LIST),
        version == "1.1.0",
        "stderr: {}",
        out.stderr
    );
    assert_gone(&on_b, data.path(), &b);
    expect_ok("second del on A", &on_a.run("del", &net, &a.ns.path()));
    assert_eq!(
        record_files(data.path()),
        BTreeSet::new(),
        "IPAM files left"
    );
    for n in [&na, &nb] {
        let l = links(n);
        assert!(
            !l.iter().any(|x| x.starts_with("plb")),
            "host veth left on {}: {l:?}",
            n.name
        );
        assert!(
            l.contains("ctvx0") && l.contains("ctvx0-vx"),
            "shared bridge and VTEP stay on {}",
            n.name
        );
    }
}

#[test]
fn cnitool_vxlan_1_1_0() {
    vxlan("1.1.0");
}

#[test]
fn cnitool_vxlan_0_4_0() {
    vxlan("0.4.0");
}
