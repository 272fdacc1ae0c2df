//! The libcni lane: the reference `bridge` plugin (v1.10) with plumb-ipam as its IPAM, driven
//! through libcni (the library real runtimes embed) for each spec version a runtime still sends.
//! Two throw-away namespaces join one bridge, get distinct addresses, ping each other, pass CHECK
//! (refused by libcni below 0.4.0), and leave again with an idempotent DEL.
//!
//! A control test runs the same lane with the reference `host-local` IPAM, which shows the driver
//! and the lane themselves work independently of plumb-ipam.

use conformance::libcni::Driver;
use conformance::netns::Netns;
use conformance::plugin::Outcome;
use conformance::skip::{have_command, skip, skip_unless_netns};
use conformance::{unique_name, TempDir};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

use conformance::host::{ForwardingRestore, HostLink};

/// Which IPAM plugin the bridge delegates to.
#[derive(Clone, Copy, PartialEq)]
enum Ipam {
    /// plumb-ipam, the plugin under test.
    Plumb,
    /// The reference host-local (v1.10), the control.
    HostLocal,
}

/// The lowest address plumb-ipam may hand out in these tests: below it sit the gateway and spares.
const RANGE_START: u8 = 10;

fn ipam_config(ipam: Ipam, subnet: u8, data_dir: &str) -> Value {
    match ipam {
        Ipam::Plumb => json!({
            "type": "plumb-ipam",
            "range": format!("10.250.{subnet}.0/24"),
            "range_start": format!("10.250.{subnet}.{RANGE_START}"),
            "gateway": format!("10.250.{subnet}.1"),
            "dataDir": data_dir,
        }),
        Ipam::HostLocal => json!({
            "type": "host-local",
            "ranges": [[{ "subnet": format!("10.250.{subnet}.0/24") }]],
            "dataDir": data_dir,
        }),
    }
}

/// The container's IPv4 address from an ADD result (`ips[0].address`), checked to be in the
/// lane's subnet, with the result's gateway checked to be the bridge's `.1`.
fn container_ip(result: &Value, subnet: u8) -> Ipv4Addr {
    let ip0 = &result["ips"][0];
    let addr = ip0["address"]
        .as_str()
        .unwrap_or_else(|| panic!("result without ips[0].address: {result}"));
    let (ip, prefix) = addr
        .split_once('/')
        .unwrap_or_else(|| panic!("address {addr:?} is not CIDR"));
    let ip: Ipv4Addr = ip
        .parse()
        .unwrap_or_else(|e| panic!("address {addr:?}: {e}"));
    assert_eq!(
        prefix, "24",
        "address {addr} should carry the /24 of the range"
    );
    assert_eq!(
        ip.octets()[..3],
        [10, 250, subnet],
        "address {addr} is outside 10.250.{subnet}.0/24"
    );
    assert_eq!(
        ip0["gateway"].as_str(),
        Some(format!("10.250.{subnet}.1").as_str()),
        "gateway in {result}"
    );
    assert_ne!(
        ip.octets()[3],
        1,
        "container got the gateway address: {result}"
    );
    ip
}

/// ADD through libcni; asserts success, the result's version, and that the address is on eth0.
fn add(driver: &Driver, ns: &Netns, version: &str, subnet: u8) -> Ipv4Addr {
    let out = driver.add(&ns.path());
    let result = out.ok();
    assert_eq!(
        result["cniVersion"].as_str(),
        Some(version),
        "result version: {result}"
    );
    let ip = container_ip(&result, subnet);
    let shown = ns.exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        shown.contains(&format!("{ip}/24")),
        "{ip}/24 not on eth0 in {}: {shown}",
        ns.name
    );
    ip
}

/// Pings `ip` once from `ns`, with a couple of retries for a fresh bridge port.
fn ping(ns: &Netns, ip: Ipv4Addr) {
    let target = ip.to_string();
    let ok = (0..3).any(|_| ns.try_exec(&["ping", "-c1", "-W2", &target]));
    assert!(ok, "{} cannot ping {target}", ns.name);
}

fn expect_ok(what: &str, out: &Outcome) {
    assert_eq!(
        out.exit, 0,
        "{what} failed: stdout={} stderr={}",
        out.stdout, out.stderr
    );
}

/// The whole lane for one spec version over `10.250.<subnet>.0/24`.
fn lane(test: &str, version: &str, ipam: Ipam, subnet: u8) {
    if skip_unless_netns(test) {
        return;
    }
    if !have_command("ping") {
        skip(test, "needs `ping` (apt iputils-ping)");
        return;
    }

    let _forwarding = ForwardingRestore::new();
    let bridge = unique_name("plb");
    let _bridge = HostLink(bridge.clone());
    let data = TempDir::new("lldata");
    let conflist = json!({
        "cniVersion": version,
        "name": format!("plumb-lane-{}", version.replace('.', "")),
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": ipam_config(ipam, subnet, &data.path().display().to_string()),
        }],
    });
    let Some(driver) = Driver::new(test, &conflist) else {
        return;
    };
    let a = Netns::new("lla");
    let b = Netns::new("llb");

    let ip_a = add(&driver, &a, version, subnet);
    let ip_b = add(&driver, &b, version, subnet);
    assert_ne!(ip_a, ip_b, "both namespaces got the same address");
    if ipam == Ipam::Plumb {
        for ip in [ip_a, ip_b] {
            assert!(
                ip.octets()[3] >= RANGE_START,
                "{ip} is below range_start 10.250.{subnet}.{RANGE_START}"
            );
        }
        let used = std::fs::read_dir(data.path())
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(
            used > 0,
            "plumb-ipam left its dataDir {} empty after two ADDs",
            data.path().display()
        );
    }

    ping(&a, ip_b);
    ping(&b, ip_a);

    for ns in [&a, &b] {
        let out = driver.check(&ns.path());
        if version == "0.3.1" {
            assert_ne!(out.exit, 0, "libcni must refuse CHECK for 0.3.1: {out:?}");
            assert!(
                out.stderr.contains("does not support the CHECK command"),
                "unexpected CHECK refusal: {out:?}"
            );
        } else {
            expect_ok("CHECK", &out);
            assert!(
                out.stdout.trim().is_empty(),
                "CHECK printed: {}",
                out.stdout
            );
        }
    }

    for ns in [&a, &b] {
        expect_ok("DEL", &driver.del(&ns.path()));
        assert!(
            !ns.try_exec(&["ip", "link", "show", "eth0"]),
            "eth0 still in {} after DEL",
            ns.name
        );
    }
    for ns in [&a, &b] {
        expect_ok("second DEL", &driver.del(&ns.path()));
    }
}

#[test]
fn plumb_ipam_bridge_v0_3_1() {
    lane("plumb_ipam_bridge_v0_3_1", "0.3.1", Ipam::Plumb, 31);
}

#[test]
fn plumb_ipam_bridge_v0_4_0() {
    lane("plumb_ipam_bridge_v0_4_0", "0.4.0", Ipam::Plumb, 40);
}

#[test]
fn plumb_ipam_bridge_v1_0_0() {
    lane("plumb_ipam_bridge_v1_0_0", "1.0.0", Ipam::Plumb, 100);
}

/// Control: the same lane with reference host-local, for every version, so a failure above can
/// be told apart from a broken driver or host.
#[test]
fn control_host_local_bridge() {
    for (version, subnet) in [("0.3.1", 131), ("0.4.0", 140), ("1.0.0", 200)] {
        lane(
            "control_host_local_bridge",
            version,
            Ipam::HostLocal,
            subnet,
        );
    }
}
