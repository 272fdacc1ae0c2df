//! plumb-bridge in a chain driven through libcni (the library containerd and CRI-O embed):
//! `plumb-bridge` (isGateway, plumb-ipam) → reference `tuning` (a sysctl and the MTU of the pod
//! interface) → `plumb-macspoofchk`. Two throw-away pods join one bridge, get distinct addresses from
//! plumb-ipam, see tuning's changes, ping each other, pass CHECK (libcni hands every plugin the cached
//! result as `prevResult`), and leave with DEL; a second DEL succeeds; nothing is left behind: no
//! host veth, no plumb-ipam reservation, no spoof-check chain.
//!
//! The same chain runs for spec 1.0.0 and 0.4.0, and with the reference `bridge` in place of
//! plumb-bridge (plumb-ipam and plumb-macspoofchk chained to it).

use conformance::libcni::Driver;
use conformance::netns::Netns;
use conformance::plugin::Outcome;
use conformance::skip::{have_command, skip, skip_unless_netns};
use conformance::{unique_name, TempDir};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

const IFNAME: &str = "eth0";
/// The MTU tuning gives the pod interface.
const TUNED_MTU: u64 = 1300;
/// The rp_filter tuning sets on the pod interface (loose), unlike the kernel default 0.
const TUNED_RP_FILTER: &str = "2";
/// plumb-ipam hands out addresses from `.10` on; `.1` is the gateway on the bridge.
const RANGE_START: u8 = 10;
/// The netdev table holding the spoof-check chains (plumb-bridge's `firewall::SPOOFCHK_TABLE`).
const SPOOFCHK_TABLE: &str = "plumb_spoofchk";

use conformance::host::{ForwardingRestore, HostLink};

/// Which bridge plugin heads the chain.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Head {
    /// plumb-bridge.
    Plumb,
    /// The reference bridge (v1.10, built by scripts/peers).
    Reference,
}

impl Head {
    fn plugin_type(self) -> &'static str {
        match self {
            Head::Plumb => "plumb-bridge",
            Head::Reference => "bridge",
        }
    }
}

fn conflist(version: &str, head: Head, bridge: &str, subnet: u8, data: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": format!("plumb-chain-{}-{subnet}", head.plugin_type()),
        "plugins": [
            {
                "type": head.plugin_type(),
                "bridge": bridge,
                "isGateway": true,
                "ipam": {
                    "type": "plumb-ipam",
                    "range": format!("10.242.{subnet}.0/24"),
                    "range_start": format!("10.242.{subnet}.{RANGE_START}"),
                    "gateway": format!("10.242.{subnet}.1"),
                    "dataDir": data.display().to_string(),
                },
            },
            {
                "type": "tuning",
                "mtu": TUNED_MTU,
                "sysctl": { format!("net.ipv4.conf.{IFNAME}.rp_filter"): TUNED_RP_FILTER },
            },
            { "type": "plumb-macspoofchk" },
        ],
    })
}

fn expect_ok(what: &str, out: &Outcome) {
    assert_eq!(
        out.exit, 0,
        "{what} failed: stdout={} stderr={}",
        out.stdout, out.stderr
    );
}

/// Runs a command and parses its JSON output; panics if it fails.
fn json_of(args: &[&str]) -> Value {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Names of the spoof-check chains bound to `dev`. `nft -j` leaves the device out, so this reads the
/// text listing: `chain <name> {` then `type filter hook ingress device "<dev>" ...`.
fn spoof_chains_on(dev: &str) -> BTreeSet<String> {
    let out = Command::new("nft")
        .args(["list", "table", "netdev", SPOOFCHK_TABLE])
        .output()
        .expect("run nft");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = BTreeSet::new();
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("chain ") {
            current = rest.strip_suffix(" {").map(String::from);
        } else if line.contains(&format!("device \"{dev}\"")) {
            found.extend(current.clone());
        }
    }
    found
}

/// Every chain of the spoof-check table, as `nft -j` shows them (none when there is no table).
fn chains() -> Vec<Value> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "netdev", SPOOFCHK_TABLE])
        .output()
        .expect("run nft");
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("nft -j output");
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("chain").cloned())
        .collect()
}

fn chain_names() -> BTreeSet<String> {
    chains()
        .iter()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect()
}

/// Deletes the spoof-check chains a failed test left behind (by handle: the names start with
/// digits, which the nft command line does not take).
struct ChainGuard(Mutex<BTreeSet<String>>);

impl ChainGuard {
    fn watch(&self, names: &BTreeSet<String>) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.extend(names.iter().cloned());
    }
}

impl Drop for ChainGuard {
    fn drop(&mut self) {
        let names = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for c in chains() {
            let mine = c["name"].as_str().is_some_and(|n| names.contains(n));
            if let (true, Some(handle)) = (mine, c["handle"].as_u64()) {
                let _ = Command::new("nft")
                    .args(["delete", "chain", "netdev", SPOOFCHK_TABLE, "handle"])
                    .arg(handle.to_string())
                    .output();
            }
        }
    }
}

/// plumb-ipam's files under `dataDir`: reservation records (`att-`) and address claims (`ip-`).
fn reservations(data: &Path) -> BTreeSet<String> {
    conformance::ipam_records(data, &["ip-", "att-"])
}

/// What one pod's ADD produced.
struct Attached {
    ip: String,
    host_veth: String,
    mac: String,
    chains: BTreeSet<String>,
}

/// ADD one pod and check what the chain did to it.
fn add(driver: &Driver, ns: &Netns, version: &str, head: Head, subnet: u8) -> Attached {
    let out = driver.add(&ns.path());
    expect_ok("ADD", &out);
    let r = out.json();
    assert_eq!(r["cniVersion"], version, "{r}");
    let ifs = r["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifs.len(), 3, "{r}");
    assert_eq!(ifs[2]["name"], IFNAME, "{r}");
    assert_eq!(ifs[2]["sandbox"], ns.path().as_str(), "{r}");
    let host_veth = ifs[1]["name"].as_str().expect("host veth").to_string();
    match head {
        Head::Plumb => assert!(host_veth.starts_with("plb"), "{host_veth}"),
        Head::Reference => assert!(host_veth.starts_with("veth"), "{host_veth}"),
    }
    let mac = ifs[2]["mac"].as_str().expect("container mac").to_string();

    let ip0 = &r["ips"][0];
    let addr = ip0["address"].as_str().expect("address");
    let (ip, prefix) = addr.split_once('/').expect("CIDR");
    assert_eq!(prefix, "24", "{r}");
    let prefix3 = format!("10.242.{subnet}.");
    let last: u8 = ip
        .strip_prefix(&prefix3)
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("{ip} is outside {prefix3}0/24"));
    assert!(last >= RANGE_START, "{ip} is below range_start");
    assert_eq!(ip0["gateway"], format!("{prefix3}1").as_str(), "{r}");
    if version == "1.0.0" {
        assert_eq!(ip0["interface"], 2, "{r}");
    }

    // The pod: the address, tuning's MTU and sysctl.
    let l = json_of(&[
        "ip", "netns", "exec", &ns.name, "ip", "-j", "addr", "show", "dev", IFNAME,
    ])[0]
        .clone();
    assert_eq!(l["mtu"], TUNED_MTU, "tuning's mtu not on {IFNAME}: {l}");
    assert_eq!(l["address"], mac.as_str(), "{l}");
    assert!(
        l["addr_info"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["local"] == ip && x["prefixlen"] == 24)),
        "{addr} not on {IFNAME}: {l}"
    );
    let rp = ns.exec(&[
        "cat",
        &format!("/proc/sys/net/ipv4/conf/{IFNAME}/rp_filter"),
    ]);
    assert_eq!(rp.trim(), TUNED_RP_FILTER, "tuning's rp_filter in the pod");

    // The host: the veth is a port of the bridge with one spoof-check chain bound to it.
    let hl = json_of(&["ip", "-j", "link", "show", "dev", &host_veth])[0].clone();
    assert!(hl["master"].is_string(), "{hl}");
    let chains = spoof_chains_on(&host_veth);
    assert_eq!(
        chains.len(),
        1,
        "spoof-check chains on {host_veth}: {chains:?}"
    );
    Attached {
        ip: ip.to_string(),
        host_veth,
        mac,
        chains,
    }
}

fn ping(ns: &Netns, ip: &str) {
    let ok = (0..3).any(|_| ns.try_exec(&["ping", "-c1", "-W2", ip]));
    assert!(ok, "{} cannot ping {ip}", ns.name);
}

fn lane(test: &str, version: &str, head: Head, subnet: u8) {
    if skip_unless_netns(test) {
        return;
    }
    for cmd in ["ping", "nft"] {
        if !have_command(cmd) {
            skip(test, &format!("needs `{cmd}` (apt iputils-ping nftables)"));
            return;
        }
    }
    let _forwarding = ForwardingRestore::new();
    let bridge = unique_name("lbb");
    let _bridge = HostLink(bridge.clone());
    let data = TempDir::new("lbdata");
    let conf = conflist(version, head, &bridge, subnet, data.path());
    let Some(driver) = Driver::new(test, &conf) else {
        return;
    };
    let pods = [Netns::new("lba"), Netns::new("lbb")];
    let chain_guard = ChainGuard(Mutex::new(BTreeSet::new()));

    let att: Vec<Attached> = pods
        .iter()
        .map(|ns| {
            let a = add(&driver, ns, version, head, subnet);
            chain_guard.watch(&a.chains);
            a
        })
        .collect();
    assert_ne!(att[0].ip, att[1].ip, "both pods got the same address");
    assert_ne!(att[0].host_veth, att[1].host_veth);
    assert_ne!(att[0].mac, att[1].mac);
    assert!(att[0].chains.is_disjoint(&att[1].chains));
    let claimed = reservations(data.path());
    for a in &att {
        assert!(
            claimed.contains(&format!("ip-{}", a.ip)),
            "plumb-ipam holds no claim of {}: {claimed:?}",
            a.ip
        );
    }

    ping(&pods[0], &att[1].ip);
    ping(&pods[1], &att[0].ip);

    // CHECK: libcni gives each plugin the cached result as prevResult.
    for ns in &pods {
        let out = driver.check(&ns.path());
        expect_ok("CHECK", &out);
        assert!(
            out.stdout.trim().is_empty(),
            "CHECK printed: {}",
            out.stdout
        );
    }
    // ... and notices drift: tuning's sysctl changed behind its back, then put back.
    let sysctl = format!("net.ipv4.conf.{IFNAME}.rp_filter");
    pods[0].exec(&["sysctl", "-q", "-w", &format!("{sysctl}=0")]);
    let out = driver.check(&pods[0].path());
    assert_ne!(out.exit, 0, "CHECK passed with rp_filter changed: {out:?}");
    pods[0].exec(&["sysctl", "-q", "-w", &format!("{sysctl}={TUNED_RP_FILTER}")]);
    expect_ok("CHECK after repair", &driver.check(&pods[0].path()));

    for (ns, a) in pods.iter().zip(&att) {
        expect_ok("DEL", &driver.del(&ns.path()));
        assert!(
            !ns.try_exec(&["ip", "link", "show", IFNAME]),
            "{IFNAME} still in {} after DEL",
            ns.name
        );
        assert!(
            !link_exists(&a.host_veth),
            "host veth {} left after DEL",
            a.host_veth
        );
        assert!(
            a.chains.is_disjoint(&chain_names()),
            "spoof-check chain {:?} left after DEL",
            a.chains
        );
    }
    for ns in &pods {
        expect_ok("second DEL", &driver.del(&ns.path()));
    }
    let left = reservations(data.path());
    assert!(left.is_empty(), "plumb-ipam still holds {left:?}");
    assert!(link_exists(&bridge), "DEL removed the bridge");
    let ports = json_of(&["ip", "-j", "link", "show", "master", &bridge]);
    assert_eq!(ports, json!([]), "ports left on {bridge}");
}

#[test]
fn plumb_bridge_chain_v1_0_0() {
    lane("plumb_bridge_chain_v1_0_0", "1.0.0", Head::Plumb, 10);
}

#[test]
fn plumb_bridge_chain_v0_4_0() {
    lane("plumb_bridge_chain_v0_4_0", "0.4.0", Head::Plumb, 4);
}

#[test]
fn reference_bridge_chain_v1_0_0() {
    lane(
        "reference_bridge_chain_v1_0_0",
        "1.0.0",
        Head::Reference,
        110,
    );
}

#[test]
fn reference_bridge_chain_v0_4_0() {
    lane(
        "reference_bridge_chain_v0_4_0",
        "0.4.0",
        Head::Reference,
        104,
    );
}
