//! plumb-ipam over the CNI protocol, black-box: the built binary is run the way a runtime runs it
//! (CNI_* environment, configuration on stdin, result or error on stdout) for every command and every
//! spec version, with bad input of each class, and with the allocation semantics a cluster relies on.
//! Each test keeps its reservations in its own `dataDir`, so the tests run in parallel. A last group
//! runs Debian's reference `host-local` with the same network and compares the results' shape.

use conformance::plugin::{Call, Outcome};
use conformance::{ipam_admin as admin, peers, plumb_bin, TempDir};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Every version plumb speaks, oldest first.
const VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// IPAM never enters the namespace, so any path will do.
const NETNS: &str = "/run/netns/none";

/// The header line `plumb-ipam list` prints before any reservation.
const LIST_HEADER: [&str; 7] = [
    "SPACE",
    "ADDRESS",
    "NETWORK",
    "CONTAINER",
    "IFNAME",
    "POD",
    "AGE",
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn ipam_bin() -> PathBuf {
    plumb_bin("plumb-ipam")
}

fn data_dir() -> TempDir {
    TempDir::new("ipamproto")
}

fn dir_str(dir: &Path) -> String {
    dir.to_str().expect("temp dir is UTF-8").to_string()
}

/// An `ipam` section with one range kept in `dir`.
fn ipam(dir: &TempDir, range: &str) -> Value {
    json!({"type": "plumb-ipam", "range": range, "dataDir": dir_str(dir.path())})
}

/// `ipam` plus extra fields.
fn ipam_with(dir: &TempDir, range: &str, extra: Value) -> Value {
    let mut v = ipam(dir, range);
    for (k, x) in extra.as_object().expect("extra is an object") {
        v[k] = x.clone();
    }
    v
}

/// A dual-stack `ipam` section: an IPv4 range with a gateway, an IPv6 range, routes and DNS.
fn dual_stack_ipam(dir: &TempDir) -> Value {
    ipam_with(
        dir,
        "10.1.0.0/24",
        json!({
            "gateway": "10.1.0.1",
            "ipRanges": [{"range": "fd00:1::/64"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "::/0"}],
            "dns": {"nameservers": ["10.1.0.53"], "search": ["svc.local"]},
        }),
    )
}

/// A network configuration with plumb-ipam as its plugin.
fn net(version: &str, name: &str, ipam: Value) -> Value {
    json!({"cniVersion": version, "name": name, "type": "plumb-ipam", "ipam": ipam})
}

/// A copy of `conf` with one more top-level field.
fn with(conf: &Value, key: &str, value: Value) -> Value {
    let mut c = conf.clone();
    c[key] = value;
    c
}

/// An attachment command (ADD, DEL, CHECK) with the full environment.
fn call(cmd: &str, cid: &str, ifname: &str, conf: &Value) -> Call {
    Call::new(cmd, cid, NETNS, ifname, conf)
}

/// A network-wide command (STATUS, GC): no container, namespace or interface.
fn network_call(cmd: &str, conf: &Value) -> Call {
    Call::new(cmd, "", "", "", conf)
        .without("CNI_CONTAINERID")
        .without("CNI_NETNS")
        .without("CNI_IFNAME")
}

fn run(c: &Call) -> Outcome {
    c.run(&ipam_bin())
}

fn add(conf: &Value, cid: &str, ifname: &str) -> Outcome {
    run(&call("ADD", cid, ifname, conf))
}

fn add_ok(conf: &Value, cid: &str, ifname: &str) -> Value {
    add(conf, cid, ifname).ok()
}

fn del_ok(conf: &Value, cid: &str, ifname: &str) {
    assert_eq!(run(&call("DEL", cid, ifname, conf)).ok(), Value::Null);
}

/// `ips[i].address` of a 0.3.0-or-later result.
fn address(result: &Value, i: usize) -> String {
    result["ips"][i]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ips[{i}].address in {result}"))
        .to_string()
}

/// The bare address of `ips[0]`.
fn ip0(result: &Value) -> IpAddr {
    let a = address(result, 0);
    a.split('/').next().unwrap().parse().expect("an address")
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter()
        .map(|s| s.parse().expect("an address"))
        .collect()
}

/// The error's `msg`, asserted to contain every needle.
fn assert_msg(err: &Value, needles: &[&str]) {
    let msg = err["msg"].as_str().expect("msg");
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} does not name {n:?}");
    }
}

/// Every `ip-` claim under `dir`, across spaces.
fn claims(dir: &Path) -> BTreeSet<IpAddr> {
    store_files(dir, "ip-")
        .iter()
        .map(|(_, name)| {
            name["ip-".len()..]
                .parse()
                .expect("ip- file names an address")
        })
        .collect()
}

/// (space, file name) of every file under `dir` whose name starts with `prefix`.
fn store_files(dir: &Path, prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(spaces) = std::fs::read_dir(dir) else {
        return out;
    };
    for space in spaces.flatten() {
        let space_name = space.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(space.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) {
                out.push((space_name.clone(), name));
            }
        }
    }
    out.sort();
    out
}

fn admin_ok(args: &[&str]) -> String {
    let (code, stdout, stderr) = admin(args);
    assert_eq!(code, 0, "plumb-ipam {args:?} failed: {stderr}");
    stdout
}

/// `plumb-ipam list --data-dir D` as rows of columns, header checked and dropped.
fn list_rows(dir: &Path) -> Vec<Vec<String>> {
    let out = admin_ok(&["list", "--data-dir", &dir_str(dir)]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, LIST_HEADER, "list output: {out}");
    lines
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// `list` rows without the AGE column, which depends on the clock.
fn list_rows_no_age(dir: &Path) -> Vec<Vec<String>> {
    list_rows(dir)
        .into_iter()
        .map(|mut r| {
            let age = r.pop().expect("age column");
            assert!(age.ends_with('s'), "age {age:?} of a fresh reservation");
            r
        })
        .collect()
}

/// No reservation anywhere under `dir`: no `ip-`/`att-` files and `list` prints only its header.
fn assert_no_reservation(dir: &Path) {
    assert_eq!(store_files(dir, "ip-"), Vec::new(), "claims left behind");
    assert_eq!(store_files(dir, "att-"), Vec::new(), "records left behind");
    assert_eq!(list_rows(dir), Vec::<Vec<String>>::new());
}

/// Expected dual-stack ADD result (first allocation of [`dual_stack_ipam`]) in `version`'s layout.
fn expected_dual_stack(version: &str) -> Value {
    let dns = json!({"nameservers": ["10.1.0.53"], "search": ["svc.local"]});
    match version {
        "0.1.0" | "0.2.0" => json!({
            "cniVersion": version,
            "ip4": {"ip": "10.1.0.2/24", "gateway": "10.1.0.1",
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]},
            "ip6": {"ip": "fd00:1::1/64", "routes": [{"dst": "::/0"}]},
            "dns": dns,
        }),
        "0.3.0" | "0.3.1" | "0.4.0" => json!({
            "cniVersion": version,
            "ips": [
                {"version": "4", "address": "10.1.0.2/24", "gateway": "10.1.0.1"},
                {"version": "6", "address": "fd00:1::1/64"},
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "::/0"}],
            "dns": dns,
        }),
        _ => json!({
            "cniVersion": version,
            "ips": [
                {"address": "10.1.0.2/24", "gateway": "10.1.0.1"},
                {"address": "fd00:1::1/64"},
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "::/0"}],
            "dns": dns,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Every command at every version
// ---------------------------------------------------------------------------------------------

#[test]
fn add_single_stack_result_shape_per_version() {
    for v in VERSIONS {
        let dir = data_dir();
        let conf = net(v, "net", ipam(&dir, "10.1.0.0/24"));
        let expected = match v {
            "0.1.0" | "0.2.0" => json!({"cniVersion": v, "ip4": {"ip": "10.1.0.1/24"}}),
            "0.3.0" | "0.3.1" | "0.4.0" => {
                json!({"cniVersion": v, "ips": [{"version": "4", "address": "10.1.0.1/24"}]})
            }
            _ => json!({"cniVersion": v, "ips": [{"address": "10.1.0.1/24"}]}),
        };
        assert_eq!(add_ok(&conf, "c1", "eth0"), expected, "version {v}");
        let v6 = net(v, "net6", ipam(&dir, "fd00:6::/64"));
        let expected = match v {
            "0.1.0" | "0.2.0" => json!({"cniVersion": v, "ip6": {"ip": "fd00:6::1/64"}}),
            "0.3.0" | "0.3.1" | "0.4.0" => {
                json!({"cniVersion": v, "ips": [{"version": "6", "address": "fd00:6::1/64"}]})
            }
            _ => json!({"cniVersion": v, "ips": [{"address": "fd00:6::1/64"}]}),
        };
        assert_eq!(add_ok(&v6, "c1", "eth0"), expected, "version {v}");
    }
}

#[test]
fn add_dual_stack_result_shape_per_version() {
    for v in VERSIONS {
        let dir = data_dir();
        let conf = net(v, "net", dual_stack_ipam(&dir));
        assert_eq!(
            add_ok(&conf, "c1", "eth0"),
            expected_dual_stack(v),
            "version {v}"
        );
        assert_eq!(claims(dir.path()), ips(&["10.1.0.2", "fd00:1::1"]));
    }
}

#[test]
fn check_is_refused_before_0_4_0_and_passes_from_0_4_0() {
    for v in VERSIONS {
        let dir = data_dir();
        let conf = net(v, "net", dual_stack_ipam(&dir));
        let result = add_ok(&conf, "c1", "eth0");
        let checked = with(&conf, "prevResult", result);
        let out = run(&call("CHECK", "c1", "eth0", &checked));
        if matches!(v, "0.1.0" | "0.2.0" | "0.3.0" | "0.3.1") {
            let e = out.err(1);
            assert_msg(&e, &["CHECK", v, "0.4.0"]);
            assert_eq!(
                e["cniVersion"], v,
                "errors are written in the config's version"
            );
        } else {
            assert_eq!(out.ok(), Value::Null, "version {v}");
        }
    }
}

#[test]
fn status_and_gc_are_refused_before_1_1_0() {
    for v in VERSIONS {
        let dir = data_dir();
        let conf = net(v, "net", ipam(&dir, "10.1.0.0/24"));
        add_ok(&conf, "c1", "eth0");
        let gc_conf = with(&conf, "cni.dev/valid-attachments", json!([]));
        let status = run(&network_call("STATUS", &conf));
        let gc = run(&network_call("GC", &gc_conf));
        if v == "1.1.0" {
            assert_eq!(status.ok(), Value::Null);
            assert_eq!(gc.ok(), Value::Null);
            assert_eq!(
                claims(dir.path()),
                BTreeSet::new(),
                "GC with no valid attachment"
            );
        } else {
            let e = status.err(1);
            assert_msg(&e, &["STATUS", v, "1.1.0"]);
            assert_eq!(e["cniVersion"], v);
            let e = gc.err(1);
            assert_msg(&e, &["GC", v, "1.1.0"]);
            assert_eq!(e["cniVersion"], v);
            assert_eq!(
                claims(dir.path()),
                ips(&["10.1.0.1"]),
                "a refused GC frees nothing"
            );
        }
    }
}

#[test]
fn del_succeeds_twice_at_every_version() {
    for v in VERSIONS {
        let dir = data_dir();
        let conf = net(v, "net", dual_stack_ipam(&dir));
        add_ok(&conf, "c1", "eth0");
        add_ok(&conf, "c2", "eth0");
        del_ok(&conf, "c1", "eth0");
        assert_eq!(claims(dir.path()), ips(&["10.1.0.3", "fd00:1::2"]), "{v}");
        del_ok(&conf, "c1", "eth0");
        // DEL may come after the namespace is gone, and for something never added.
        let no_netns = call("DEL", "c2", "eth0", &conf).without("CNI_NETNS");
        assert_eq!(run(&no_netns).ok(), Value::Null);
        del_ok(&conf, "never-added", "eth0");
        assert_no_reservation(dir.path());
    }
}

#[test]
fn version_reports_all_seven_versions_exactly() {
    let exact = r#"{"cniVersion":"1.1.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#;
    for stdin in [
        &b""[..],
        br#"{"cniVersion":"0.4.0"}"#,
        br#"{"cniVersion":"1.1.0"}"#,
    ] {
        let c = Call::new("VERSION", "", "", "", &json!({}))
            .without("CNI_CONTAINERID")
            .without("CNI_NETNS")
            .without("CNI_IFNAME")
            .without("CNI_PATH")
            .stdin_raw(stdin);
        let out = run(&c);
        assert_eq!(out.exit, 0, "{out:?}");
        assert_eq!(out.stdout.trim_end(), exact);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Bad input, one class at a time
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_cni_command_is_code_4() {
    let dir = data_dir();
    let conf = net("1.0.0", "net", ipam(&dir, "10.1.0.0/24"));
    let e = run(&call("ADD", "c1", "eth0", &conf).without("CNI_COMMAND")).err(4);
    assert_msg(&e, &["CNI_COMMAND"]);
    let e = run(&call("ATTACH", "c1", "eth0", &conf)).err(4);
    assert_msg(&e, &["CNI_COMMAND", "ATTACH"]);
    assert_no_reservation(dir.path());
}

#[test]
fn missing_required_variables_are_code_4_naming_the_variable() {
    let dir = data_dir();
    let conf = net("1.0.0", "net", ipam(&dir, "10.1.0.0/24"));
    for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
        let e = run(&call("ADD", "c1", "eth0", &conf).without(var)).err(4);
        assert_msg(&e, &[var, "ADD"]);
        let e = run(&call("ADD", "c1", "eth0", &conf).env(var, "")).err(4);
        assert_msg(&e, &[var]);
        assert_no_reservation(dir.path());
    }
    for var in ["CNI_CONTAINERID", "CNI_IFNAME"] {
        let e = run(&call("DEL", "c1", "eth0", &conf).without(var)).err(4);
        assert_msg(&e, &[var, "DEL"]);
    }
}

#[test]
fn hostile_container_id_and_ifname_are_code_4() {
    let base = data_dir();
    let dir = base.path().join("a").join("b");
    let conf = net(
        "1.0.0",
        "net",
        json!({"type": "plumb-ipam", "range": "10.1.0.0/24", "dataDir": dir_str(&dir)}),
    );
    for (cid, ifname, var) in [
        ("../../escape", "eth0", "CNI_CONTAINERID"),
        ("c1/x", "eth0", "CNI_CONTAINERID"),
        ("c1", "../x", "CNI_IFNAME"),
        ("c1", "a234567890123456", "CNI_IFNAME"),
    ] {
        let e = add(&conf, cid, ifname).err(4);
        assert_msg(&e, &[var]);
    }
    assert!(!base.path().join("a").exists(), "nothing may be created");
}

#[test]
fn broken_json_is_code_6() {
    let dir = data_dir();
    let conf = net("1.0.0", "net", ipam(&dir, "10.1.0.0/24"));
    for bad in [&b"{not json"[..], b"", b"[1,2]"] {
        let e = run(&call("ADD", "c1", "eth0", &conf).stdin_raw(bad)).err(6);
        assert_msg(&e, &["JSON"]);
    }
    assert!(!dir.path().join("_default").exists());
}

#[test]
fn unknown_cni_version_is_code_1() {
    let dir = data_dir();
    let conf = net("9.9.9", "net", ipam(&dir, "10.1.0.0/24"));
    for cmd in ["ADD", "DEL", "CHECK"] {
        let e = run(&call(cmd, "c1", "eth0", &conf)).err(1);
        assert_msg(&e, &["cniVersion", "9.9.9", "1.1.0"]);
        assert_eq!(
            e["cniVersion"], "1.1.0",
            "an unknown version is answered in the newest"
        );
    }
    assert_no_reservation(dir.path());
}

#[test]
fn bad_range_cidr_is_code_7() {
    let dir = data_dir();
    for (range, bad_part) in [
        ("10.1.0.0/33", "10.1.0.0/33"),
        ("banana", "banana"),
        ("10.1.0.300/24", "10.1.0.300"),
        ("fd00::/129", "fd00::/129"),
        ("10.1.0.9-10.1.0.3/24", "first address is after the last"),
    ] {
        let e = add(&net("1.0.0", "net", ipam(&dir, range)), "c1", "eth0").err(7);
        assert_msg(&e, &["ipam.range", bad_part]);
    }
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(
            &dir,
            "10.1.0.0/24",
            json!({"ipRanges": [{"range": "fd00::/200"}]}),
        ),
    );
    let e = add(&conf, "c1", "eth0").err(7);
    assert_msg(&e, &["ipam.ipRanges[0].range"]);
    assert_no_reservation(dir.path());
}

#[test]
fn range_start_outside_the_range_is_code_7() {
    let dir = data_dir();
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(&dir, "10.1.0.0/24", json!({"range_start": "10.2.0.5"})),
    );
    let e = add(&conf, "c1", "eth0").err(7);
    assert_msg(&e, &["range_start", "10.2.0.5", "10.1.0.0/24"]);
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(&dir, "10.1.0.0/24", json!({"range_end": "10.1.1.0"})),
    );
    let e = add(&conf, "c1", "eth0").err(7);
    assert_msg(&e, &["range_end", "10.1.1.0"]);
    assert_no_reservation(dir.path());
}

#[test]
fn exclusions_covering_every_address_are_code_7() {
    let dir = data_dir();
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(
            &dir,
            "10.1.0.0/29",
            json!({"exclude": ["10.1.0.0/30", "10.1.0.4/30"]}),
        ),
    );
    let e = add(&conf, "c1", "eth0").err(7);
    assert_msg(&e, &["exclude", "10.1.0.0/29"]);
    // A /30 whose two addresses are the gateway and one exclusion.
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(
            &dir,
            "10.1.0.0/30",
            json!({"gateway": "10.1.0.1", "exclude": ["10.1.0.2"]}),
        ),
    );
    let e = add(&conf, "c1", "eth0").err(7);
    assert_msg(&e, &["exclude"]);
    assert_no_reservation(dir.path());
}

#[test]
fn hostile_network_name_is_code_7_and_creates_nothing() {
    let base = data_dir();
    let data = base.path().join("a").join("b");
    for name in ["../../etc", "..", ".hidden", "a/b", ""] {
        let conf = net(
            "1.0.0",
            "net",
            json!({"type": "plumb-ipam", "range": "10.1.0.0/24", "dataDir": dir_str(&data),
                   "network_name": name}),
        );
        for cmd in ["ADD", "CHECK"] {
            let e = run(&call(cmd, "c1", "eth0", &conf)).err(7);
            assert_msg(&e, &["network_name"]);
        }
        // ADD refuses such a name, so nothing of it can be stored: DEL succeeds and touches nothing.
        assert_eq!(run(&call("DEL", "c1", "eth0", &conf)).ok(), Value::Null);
    }
    let left: Vec<_> = std::fs::read_dir(base.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        Vec::<std::ffi::OsString>::new(),
        "created outside dataDir"
    );
    assert!(!base.path().join("etc").exists());
}

#[test]
fn exhausted_pool_is_code_100_naming_the_range() {
    let dir = data_dir();
    let conf = net("1.0.0", "net", ipam(&dir, "10.1.0.0/30"));
    assert_eq!(address(&add_ok(&conf, "c1", "eth0"), 0), "10.1.0.1/30");
    assert_eq!(address(&add_ok(&conf, "c2", "eth0"), 0), "10.1.0.2/30");
    let e = add(&conf, "c3", "eth0").err(100);
    assert_msg(&e, &["10.1.0.0/30", "exhausted"]);
    assert_eq!(claims(dir.path()), ips(&["10.1.0.1", "10.1.0.2"]));
    assert_eq!(store_files(dir.path(), "att-").len(), 2, "no record for c3");
    // The same attachment still gets its address back on a full pool.
    assert_eq!(address(&add_ok(&conf, "c1", "eth0"), 0), "10.1.0.1/30");
}

#[test]
fn exhausting_one_range_of_a_dual_stack_add_reserves_nothing() {
    let dir = data_dir();
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(
            &dir,
            "10.1.0.0/24",
            json!({"ipRanges": [{"range": "fd00:1::/127"}]}),
        ),
    );
    add_ok(&conf, "c1", "eth0");
    add_ok(&conf, "c2", "eth0");
    let e = add(&conf, "c3", "eth0").err(100);
    assert_msg(&e, &["fd00:1::/127"]);
    assert_eq!(
        claims(dir.path()),
        ips(&["10.1.0.1", "10.1.0.2", "fd00:1::", "fd00:1::1"])
    );
    assert_eq!(store_files(dir.path(), "att-").len(), 2);
}

#[test]
fn static_ip_outside_every_range_or_blocked_is_code_7() {
    let dir = data_dir();
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(
            &dir,
            "10.1.0.0/24",
            json!({"gateway": "10.1.0.1", "exclude": ["10.1.0.128/25"], "range_end": "10.1.0.100"}),
        ),
    );
    for (ip, needle) in [
        ("10.2.0.5", "outside every range"),
        ("10.1.0.1", "gateway"),
        ("10.1.0.200", "excluded"),
        ("10.1.0.101", "range_end"),
        ("10.1.0.0", "range_end"),
    ] {
        let c = call("ADD", "c1", "eth0", &conf).env("CNI_ARGS", &format!("IP={ip}"));
        let e = run(&c).err(7);
        assert_msg(&e, &[ip, needle]);
    }
    let c = with(&conf, "runtimeConfig", json!({"ips": ["not-an-ip"]}));
    let e = add(&c, "c1", "eth0").err(7);
    assert_msg(&e, &["runtimeConfig.ips[0]", "not-an-ip"]);
    let c = with(
        &conf,
        "runtimeConfig",
        json!({"ips": ["10.1.0.5", "10.1.0.6"]}),
    );
    let e = add(&c, "c1", "eth0").err(7);
    assert_msg(&e, &["10.1.0.5", "10.1.0.6", "one address per range"]);
    assert_no_reservation(dir.path());
}

#[test]
fn static_ip_held_by_another_container_is_code_101() {
    let dir = data_dir();
    let conf = net("1.0.0", "net", ipam(&dir, "10.1.0.0/24"));
    let holder = call("ADD", "owner", "eth0", &conf).env(
        "CNI_ARGS",
        "IP=10.1.0.7;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0",
    );
    assert_eq!(address(&run(&holder).ok(), 0), "10.1.0.7/24");
    let e = run(&call("ADD", "thief", "eth0", &conf).env("CNI_ARGS", "IP=10.1.0.7")).err(101);
    assert_msg(&e, &["10.1.0.7", "owner", "ns1/web-0"]);
    // The same container on another interface is another attachment too.
    let e = run(&call("ADD", "owner", "net1", &conf).env("CNI_ARGS", "IP=10.1.0.7")).err(101);
    assert_msg(&e, &["10.1.0.7"]);
    assert_eq!(claims(dir.path()), ips(&["10.1.0.7"]));
    assert_eq!(
        store_files(dir.path(), "att-"),
        vec![("_default".to_string(), "att-owner@eth0".to_string())]
    );
}

#[test]
fn unknown_cni_args_key_is_code_4_unless_ignore_unknown() {
    let dir = data_dir();
    let conf = net("1.0.0", "net", ipam(&dir, "10.1.0.0/24"));
    let e = run(&call("ADD", "c1", "eth0", &conf).env("CNI_ARGS", "FOO=bar")).err(4);
    assert_msg(&e, &["\"FOO\"", "IgnoreUnknown"]);
    let e = run(&call("ADD", "c1", "eth0", &conf).env("CNI_ARGS", "IP")).err(4);
    assert_msg(&e, &["CNI_ARGS"]);
    assert_no_reservation(dir.path());
    for ignore in [
        "IgnoreUnknown=true",
        "IgnoreUnknown=1",
        "IgnoreUnknown=TRUE",
    ] {
        let c = call("ADD", "c1", "eth0", &conf).env("CNI_ARGS", &format!("{ignore};FOO=bar"));
        assert_eq!(address(&run(&c).ok(), 0), "10.1.0.1/24");
    }
}

#[test]
fn string_boolean_is_code_7() {
    let dir = data_dir();
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(
            &dir,
            "10.1.0.0/24",
            json!({"enable_overlapping_ranges": "true"}),
        ),
    );
    let e = add(&conf, "c1", "eth0").err(7);
    assert_msg(&e, &["enable_overlapping_ranges", "without quotes"]);
    assert_no_reservation(dir.path());
    for ok in [json!(true), json!(false)] {
        let conf = net(
            "1.0.0",
            "net",
            ipam_with(
                &dir,
                "10.1.0.0/24",
                json!({"enable_overlapping_ranges": ok}),
            ),
        );
        add_ok(&conf, "c1", "eth0");
    }
}

#[test]
fn kubernetes_store_without_credentials_is_code_7() {
    let dir = data_dir();
    let cases = [
        (json!({"store": "kubernetes"}), "in-cluster"),
        (
            json!({"kubernetes": {"kubeconfig": "/nonexistent/kubeconfig"}}),
            "/nonexistent/kubeconfig",
        ),
        (
            json!({"store": "kubernetes", "kubernetes": {"kubeconfig": "/k"}}),
            "/k",
        ),
        (
            json!({"kubernetes": {"timeoutSeconds": "5"}}),
            "timeoutSeconds",
        ),
        (json!({"kubernetes": "yes"}), "ipam.kubernetes"),
    ];
    for (extra, needle) in cases {
        let conf = net(
            "1.0.0",
            "net",
            ipam_with(&dir, "10.1.0.0/24", extra.clone()),
        );
        let e = add(&conf, "c1", "eth0").err(7);
        assert_msg(&e, &[needle]);
    }
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(&dir, "10.1.0.0/24", json!({"store": "etcd"})),
    );
    let e = add(&conf, "c1", "eth0").err(7);
    assert_msg(&e, &["ipam.store", "etcd"]);
    assert_no_reservation(dir.path());
}

#[test]
fn result_an_old_version_cannot_hold_is_code_1_and_reserves_nothing() {
    let dir = data_dir();
    // Two IPv4 ranges: a 0.1.0/0.2.0 result has room for one IPv4 address.
    for v in ["0.1.0", "0.2.0"] {
        let conf = net(
            v,
            "net",
            ipam_with(
                &dir,
                "10.1.0.0/24",
                json!({"ipRanges": [{"range": "10.2.0.0/24"}]}),
            ),
        );
        let e = add(&conf, "c1", "eth0").err(1);
        assert_msg(&e, &[v, "one IPv4 address"]);
        assert_no_reservation(dir.path());
    }
    // An IPv6 route with only an IPv4 range: 0.1.0 routes live beside an address of their family.
    let conf = net(
        "0.1.0",
        "net",
        ipam_with(&dir, "10.1.0.0/24", json!({"routes": [{"dst": "::/0"}]})),
    );
    let e = add(&conf, "c1", "eth0").err(1);
    assert_msg(&e, &["::/0", "IPv6"]);
    assert_no_reservation(dir.path());
    // The same network at 0.3.0 is fine.
    let conf = with(&conf, "cniVersion", json!("0.3.0"));
    add_ok(&conf, "c1", "eth0");
}

#[test]
fn missing_or_bad_ipam_section_is_code_7() {
    let dir = data_dir();
    let conf = json!({"cniVersion": "1.0.0", "name": "net", "type": "plumb-ipam"});
    let e = add(&conf, "c1", "eth0").err(7);
    assert_msg(&e, &["\"ipam\""]);
    let conf = net(
        "1.0.0",
        "net",
        json!({"type": "plumb-ipam", "dataDir": dir_str(dir.path())}),
    );
    let e = add(&conf, "c1", "eth0").err(7);
    assert_msg(&e, &["range"]);
    let conf = net(
        "1.0.0",
        "net",
        json!({"type": "plumb-ipam", "range": "10.1.0.0/24",
                                          "dataDir": "relative/dir"}),
    );
    let e = add(&conf, "c1", "eth0").err(7);
    assert_msg(&e, &["dataDir"]);
    let conf =
        json!({"cniVersion": "1.0.0", "type": "plumb-ipam", "ipam": ipam(&dir, "10.1.0.0/24")});
    let e = add(&conf, "c1", "eth0").err(7);
    assert_msg(&e, &["\"name\""]);
    assert_no_reservation(dir.path());
}

// ---------------------------------------------------------------------------------------------
// 3. Allocation semantics
// ---------------------------------------------------------------------------------------------

#[test]
fn add_is_idempotent_per_container_and_interface() {
    let dir = data_dir();
    let conf = net("1.0.0", "net", dual_stack_ipam(&dir));
    let first = run(&call("ADD", "c1", "eth0", &conf).env(
        "CNI_ARGS",
        "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_UID=u1",
    ))
    .ok();
    assert_eq!(first, expected_dual_stack("1.0.0"));
    let again = run(&call("ADD", "c1", "eth0", &conf).env(
        "CNI_ARGS",
        "K8S_POD_NAMESPACE=other;K8S_POD_NAME=web-1;K8S_POD_UID=u2",
    ))
    .ok();
    assert_eq!(again, first, "same attachment, same addresses");
    assert_eq!(add_ok(&conf, "c1", "eth0"), first);
    let second_if = add_ok(&conf, "c1", "net1");
    assert_eq!(address(&second_if, 0), "10.1.0.3/24");
    assert_eq!(address(&second_if, 1), "fd00:1::2/64");
    assert_eq!(
        claims(dir.path()),
        ips(&["10.1.0.2", "10.1.0.3", "fd00:1::1", "fd00:1::2"])
    );
    assert_eq!(store_files(dir.path(), "att-").len(), 2);
}

#[test]
fn exhausting_a_slash_29_never_hands_out_network_broadcast_or_gateway() {
    // Without a gateway: .1 to .6.
    let dir = data_dir();
    let conf = net("1.0.0", "net", ipam(&dir, "10.1.0.0/29"));
    let got: BTreeSet<IpAddr> = (0..6)
        .map(|i| ip0(&add_ok(&conf, &format!("c{i}"), "eth0")))
        .collect();
    assert_eq!(
        got,
        ips(&["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"])
    );
    add(&conf, "c6", "eth0").err(100);
    // With a gateway in the middle: .1 to .6 minus the gateway.
    let dir = data_dir();
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(&dir, "10.1.0.0/29", json!({"gateway": "10.1.0.3"})),
    );
    let results: Vec<Value> = (0..5)
        .map(|i| add_ok(&conf, &format!("c{i}"), "eth0"))
        .collect();
    let got: BTreeSet<IpAddr> = results.iter().map(ip0).collect();
    assert_eq!(
        got,
        ips(&["10.1.0.1", "10.1.0.2", "10.1.0.4", "10.1.0.5", "10.1.0.6"])
    );
    for r in &results {
        assert_eq!(r["ips"][0]["gateway"], "10.1.0.3");
    }
    let e = add(&conf, "c5", "eth0").err(100);
    assert_msg(&e, &["10.1.0.0/29"]);
    assert_eq!(claims(dir.path()), got);
}

#[test]
fn range_in_first_last_len_form_and_start_end_fields() {
    let dir = data_dir();
    let conf = net("1.0.0", "net", ipam(&dir, "10.1.0.10-10.1.0.12/24"));
    let got: Vec<String> = (0..3)
        .map(|i| address(&add_ok(&conf, &format!("c{i}"), "eth0"), 0))
        .collect();
    assert_eq!(got, ["10.1.0.10/24", "10.1.0.11/24", "10.1.0.12/24"]);
    let e = add(&conf, "c3", "eth0").err(100);
    assert_msg(&e, &["10.1.0.0/24", "10.1.0.10-10.1.0.12"]);

    let dir = data_dir();
    let conf = net(
        "0.4.0",
        "net",
        ipam_with(
            &dir,
            "10.1.0.0/24",
            json!({"range_start": "10.1.0.200", "range_end": "10.1.0.201"}),
        ),
    );
    let got: Vec<String> = (0..2)
        .map(|i| address(&add_ok(&conf, &format!("c{i}"), "eth0"), 0))
        .collect();
    assert_eq!(got, ["10.1.0.200/24", "10.1.0.201/24"]);
    add(&conf, "c2", "eth0").err(100);
}

#[test]
fn excluded_addresses_and_subnets_are_never_handed_out() {
    let dir = data_dir();
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(
            &dir,
            "10.1.0.0/28",
            json!({"exclude": ["10.1.0.1", "10.1.0.4/30", "10.1.0.12/30", "fd00::/64"]}),
        ),
    );
    let got: BTreeSet<IpAddr> = (0..6)
        .map(|i| ip0(&add_ok(&conf, &format!("c{i}"), "eth0")))
        .collect();
    assert_eq!(
        got,
        ips(&[
            "10.1.0.2",
            "10.1.0.3",
            "10.1.0.8",
            "10.1.0.9",
            "10.1.0.10",
            "10.1.0.11"
        ])
    );
    add(&conf, "c6", "eth0").err(100);
    // An exclusion inside one of ipRanges applies to that range only.
    let dir = data_dir();
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(
            &dir,
            "10.1.0.0/30",
            json!({"ipRanges": [{"range": "fd00:1::/126", "exclude": ["fd00:1::1", "fd00:1::2"]}]}),
        ),
    );
    let r = add_ok(&conf, "c1", "eth0");
    assert_eq!(
        (address(&r, 0), address(&r, 1)),
        ("10.1.0.1/30".into(), "fd00:1::3/126".into())
    );
    let e = add(&conf, "c2", "eth0").err(100);
    assert_msg(&e, &["fd00:1::/126"]);
}

#[test]
fn static_requests_from_every_source_are_honored() {
    let dir = data_dir();
    let conf = net("1.0.0", "net", dual_stack_ipam(&dir));
    let rc = with(&conf, "runtimeConfig", json!({"ips": ["10.1.0.50/24"]}));
    let r = add_ok(&rc, "rc", "eth0");
    assert_eq!(address(&r, 0), "10.1.0.50/24");
    assert_eq!(
        address(&r, 1),
        "fd00:1::1/64",
        "the other range allocates dynamically"
    );
    let args = with(&conf, "args", json!({"cni": {"ips": ["10.1.0.51"]}}));
    assert_eq!(address(&add_ok(&args, "args", "eth0"), 0), "10.1.0.51/24");
    let env = call("ADD", "env", "eth0", &conf).env("CNI_ARGS", "IP=10.1.0.52");
    assert_eq!(address(&run(&env).ok(), 0), "10.1.0.52/24");
    let prefixed = call("ADD", "pfx", "eth0", &conf).env("CNI_ARGS", "IP=10.1.0.53/24");
    assert_eq!(address(&run(&prefixed).ok(), 0), "10.1.0.53/24");
    let both = call("ADD", "both", "eth0", &conf).env("CNI_ARGS", "IP=10.1.0.2,fd00:1::5");
    let r = run(&both).ok();
    assert_eq!(
        (address(&r, 0), address(&r, 1)),
        ("10.1.0.2/24".into(), "fd00:1::5/64".into())
    );
    let rc6 = with(
        &conf,
        "runtimeConfig",
        json!({"ips": ["fd00:1::55/64", "10.1.0.55/24"]}),
    );
    let r = add_ok(&rc6, "rc6", "eth0");
    assert_eq!(
        (address(&r, 0), address(&r, 1)),
        ("10.1.0.55/24".into(), "fd00:1::55/64".into())
    );
    // A static request is idempotent too.
    assert_eq!(
        add_ok(&rc, "rc", "eth0")["ips"],
        json!([
            {"address": "10.1.0.50/24", "gateway": "10.1.0.1"}, {"address": "fd00:1::1/64"}
        ])
    );
    // Dynamic allocation steps over statically held addresses (10.1.0.2 and fd00:1::5).
    let r = add_ok(&conf, "dyn", "eth0");
    assert_eq!(
        (address(&r, 0), address(&r, 1)),
        ("10.1.0.3/24".into(), "fd00:1::6/64".into())
    );
    assert_eq!(
        claims(dir.path()),
        ips(&[
            "10.1.0.2",
            "10.1.0.3",
            "10.1.0.50",
            "10.1.0.51",
            "10.1.0.52",
            "10.1.0.53",
            "10.1.0.55",
            "fd00:1::1",
            "fd00:1::2",
            "fd00:1::3",
            "fd00:1::4",
            "fd00:1::5",
            "fd00:1::6",
            "fd00:1::55",
        ])
    );
}

#[test]
fn records_keep_the_pod_identity_from_cni_args() {
    let dir = data_dir();
    let conf = net("1.0.0", "pods", dual_stack_ipam(&dir));
    let c = call("ADD", "c1", "eth0", &conf).env(
        "CNI_ARGS",
        "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_UID=uid-123;K8S_POD_INFRA_CONTAINER_ID=c1",
    );
    run(&c).ok();
    let text = std::fs::read_to_string(dir.path().join("_default").join("att-c1@eth0"))
        .expect("record file");
    let mut record: Value = serde_json::from_str(&text).expect("record is JSON");
    let created = record["created"].as_u64().expect("created");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        created <= now && now - created < 600,
        "created {created}, now {now}"
    );
    record.as_object_mut().unwrap().remove("created");
    assert_eq!(
        record,
        json!({"containerID": "c1", "ifname": "eth0", "network": "pods",
               "ips": ["10.1.0.2/24", "fd00:1::1/64"],
               "podNamespace": "ns1", "podName": "web-0", "podUid": "uid-123"})
    );
    add_ok(&conf, "c2", "eth0");
    assert_eq!(
        list_rows_no_age(dir.path()),
        vec![
            vec!["_default", "10.1.0.2", "pods", "c1", "eth0", "ns1/web-0"],
            vec!["_default", "10.1.0.3", "pods", "c2", "eth0", "-"],
            vec!["_default", "fd00:1::1", "pods", "c1", "eth0", "ns1/web-0"],
            vec!["_default", "fd00:1::2", "pods", "c2", "eth0", "-"],
        ]
    );
}

#[test]
fn network_name_selects_a_separate_space() {
    let dir = data_dir();
    let blue = net(
        "1.0.0",
        "blue",
        ipam_with(&dir, "10.1.0.0/24", json!({"network_name": "blue"})),
    );
    let red = net(
        "1.0.0",
        "red",
        ipam_with(&dir, "10.1.0.0/24", json!({"network_name": "red"})),
    );
    assert_eq!(address(&add_ok(&blue, "c1", "eth0"), 0), "10.1.0.1/24");
    assert_eq!(address(&add_ok(&red, "c1", "eth0"), 0), "10.1.0.1/24");
    assert_eq!(
        store_files(dir.path(), "ip-"),
        vec![
            ("blue".to_string(), "ip-10.1.0.1".to_string()),
            ("red".to_string(), "ip-10.1.0.1".to_string()),
        ]
    );
    let out = admin_ok(&[
        "list",
        "--data-dir",
        &dir_str(dir.path()),
        "--network-name",
        "red",
    ]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().nth(1).unwrap().starts_with("red "), "{out}");
}

#[test]
fn check_matches_prev_result_and_fails_with_code_102_otherwise() {
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let dir = data_dir();
        let conf = net(v, "net", dual_stack_ipam(&dir));
        let result = add_ok(&conf, "c1", "eth0");
        let check = |prev: &Value| {
            run(&call(
                "CHECK",
                "c1",
                "eth0",
                &with(&conf, "prevResult", prev.clone()),
            ))
        };
        assert_eq!(check(&result).ok(), Value::Null, "{v}");
        // Without prevResult CHECK verifies the reservation alone.
        assert_eq!(run(&call("CHECK", "c1", "eth0", &conf)).ok(), Value::Null);
        // Addresses outside every range (another plugin's) are not plumb-ipam's business.
        let mut extra = result.clone();
        let mut foreign = extra["ips"][0].clone();
        foreign["address"] = json!("192.168.9.9/24");
        foreign.as_object_mut().unwrap().remove("gateway");
        extra["ips"].as_array_mut().unwrap().push(foreign);
        assert_eq!(check(&extra).ok(), Value::Null, "{v}");

        let mut wrong = result.clone();
        wrong["ips"][0]["address"] = json!("10.1.0.99/24");
        let e = check(&wrong).err(102);
        assert_msg(&e, &["10.1.0.99", "10.1.0.2", "prevResult"]);
        let mut missing = result.clone();
        missing["ips"].as_array_mut().unwrap().pop();
        let e = check(&missing).err(102);
        assert_msg(&e, &["fd00:1::1"]);
        // Another attachment's CHECK finds no reservation.
        let e = run(&call(
            "CHECK",
            "c1",
            "net1",
            &with(&conf, "prevResult", result.clone()),
        ))
        .err(102);
        assert_msg(&e, &["c1", "net1"]);

        del_ok(&conf, "c1", "eth0");
        let e = check(&result).err(102);
        assert_msg(&e, &["no reservation", "c1", "eth0"]);
    }
}

fn gc_releases_only_unlisted_attachments_of_this_network(key: &str) {
    let dir = data_dir();
    let net_a = net("1.1.0", "net-a", ipam(&dir, "10.1.0.0/24"));
    let net_b = net("1.1.0", "net-b", ipam(&dir, "10.1.0.0/24"));
    assert_eq!(address(&add_ok(&net_a, "a1", "eth0"), 0), "10.1.0.1/24");
    assert_eq!(address(&add_ok(&net_a, "a1", "net1"), 0), "10.1.0.2/24");
    assert_eq!(address(&add_ok(&net_a, "a2", "eth0"), 0), "10.1.0.3/24");
    assert_eq!(address(&add_ok(&net_b, "b1", "eth0"), 0), "10.1.0.4/24");
    assert_eq!(address(&add_ok(&net_b, "b2", "eth0"), 0), "10.1.0.5/24");

    let gc_a = with(
        &net_a,
        key,
        json!([{"containerID": "a1", "ifname": "eth0"},
                                        {"containerID": "b2", "ifname": "eth0"}]),
    );
    assert_eq!(run(&network_call("GC", &gc_a)).ok(), Value::Null);
    assert_eq!(
        list_rows_no_age(dir.path()),
        vec![
            vec!["_default", "10.1.0.1", "net-a", "a1", "eth0", "-"],
            vec!["_default", "10.1.0.4", "net-b", "b1", "eth0", "-"],
            vec!["_default", "10.1.0.5", "net-b", "b2", "eth0", "-"],
        ]
    );
    // GC is idempotent, and kept attachments still pass CHECK.
    assert_eq!(run(&network_call("GC", &gc_a)).ok(), Value::Null);
    assert_eq!(run(&call("CHECK", "a1", "eth0", &net_a)).ok(), Value::Null);
    run(&call("CHECK", "a2", "eth0", &net_a)).err(102);

    // net-b's own GC with only b2 valid releases b1 and leaves net-a alone.
    let gc_b = with(
        &net_b,
        key,
        json!([{"containerID": "b2", "ifname": "eth0"}]),
    );
    assert_eq!(run(&network_call("GC", &gc_b)).ok(), Value::Null);
    assert_eq!(claims(dir.path()), ips(&["10.1.0.1", "10.1.0.5"]));

    // An empty list releases every reservation of the network.
    let gc_all = with(&net_a, key, json!([]));
    assert_eq!(run(&network_call("GC", &gc_all)).ok(), Value::Null);
    assert_eq!(claims(dir.path()), ips(&["10.1.0.5"]));
}

#[test]
fn gc_with_valid_attachments_releases_only_this_networks_unlisted_attachments() {
    gc_releases_only_unlisted_attachments_of_this_network("cni.dev/valid-attachments");
}

#[test]
fn gc_with_legacy_attachments_key() {
    gc_releases_only_unlisted_attachments_of_this_network("cni.dev/attachments");
}

#[test]
fn gc_without_the_attachment_list_releases_nothing_and_honours_disable_gc() {
    let dir = data_dir();
    let conf = net("1.1.0", "net", ipam(&dir, "10.1.0.0/24"));
    add_ok(&conf, "c1", "eth0");
    // libcni sends GC without the list when its caller gave none (cnitool gc): success, nothing released,
    // and the missing key is named on stderr.
    let out = run(&network_call("GC", &conf));
    assert_eq!(out.ok(), Value::Null);
    assert!(
        out.stderr
            .contains("without \"cni.dev/valid-attachments\": nothing released"),
        "stderr should say the key was missing: {:?}",
        out.stderr
    );
    assert_eq!(claims(dir.path()), ips(&["10.1.0.1"]));
    let bad = with(
        &conf,
        "cni.dev/valid-attachments",
        json!([{"containerID": "c1"}]),
    );
    let e = run(&network_call("GC", &bad)).err(6);
    assert_msg(&e, &["ifname"]);
    let disabled = with(
        &with(&conf, "cni.dev/valid-attachments", json!([])),
        "disableGC",
        json!(true),
    );
    assert_eq!(run(&network_call("GC", &disabled)).ok(), Value::Null);
    assert_eq!(claims(dir.path()), ips(&["10.1.0.1"]));
    let e = run(
        &network_call("GC", &with(&conf, "cni.dev/valid-attachments", json!([])))
            .without("CNI_PATH"),
    )
    .err(4);
    assert_msg(&e, &["CNI_PATH", "GC"]);
}

#[test]
fn status_is_50_when_a_range_is_full_and_0_otherwise() {
    let dir = data_dir();
    let conf = net(
        "1.1.0",
        "net",
        ipam_with(
            &dir,
            "10.1.0.0/30",
            json!({"ipRanges": [{"range": "fd00:1::/64"}]}),
        ),
    );
    let status = || run(&network_call("STATUS", &conf));
    assert_eq!(status().ok(), Value::Null, "empty store");
    add_ok(&conf, "c1", "eth0");
    assert_eq!(status().ok(), Value::Null, "one of two used");
    add_ok(&conf, "c2", "eth0");
    let e = status().err(50);
    assert_msg(&e, &["10.1.0.0/30", "full"]);
    add(&conf, "c3", "eth0").err(100);
    del_ok(&conf, "c1", "eth0");
    assert_eq!(status().ok(), Value::Null, "one freed");
    assert_eq!(address(&add_ok(&conf, "c3", "eth0"), 0), "10.1.0.1/30");
    status().err(50);
}

#[test]
fn huge_ipv6_ranges_allocate_without_wrapping() {
    let dir = data_dir();
    let conf = net("1.0.0", "net", ipam(&dir, "fd00::/8"));
    assert_eq!(address(&add_ok(&conf, "c1", "eth0"), 0), "fd00::1/8");
    assert_eq!(address(&add_ok(&conf, "c2", "eth0"), 0), "fd00::2/8");
    // The very last address of the /8 is a valid static request (IPv6 has no broadcast).
    let top = with(
        &conf,
        "runtimeConfig",
        json!({"ips": ["fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/8"]}),
    );
    assert_eq!(
        address(&add_ok(&top, "top", "eth0"), 0),
        "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/8"
    );
    assert_eq!(address(&add_ok(&conf, "c3", "eth0"), 0), "fd00::3/8");
    del_ok(&conf, "c1", "eth0");
    assert_eq!(
        address(&add_ok(&conf, "c4", "eth0"), 0),
        "fd00::4/8",
        "next-fit, no reuse yet"
    );

    // A /64 and its last two addresses: the third ADD is exhausted, never fe00:: or ::.
    let dir = data_dir();
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(
            &dir,
            "fd00:64::/64",
            json!({"range_start": "fd00:64::ffff:ffff:ffff:fffe"}),
        ),
    );
    assert_eq!(
        address(&add_ok(&conf, "c1", "eth0"), 0),
        "fd00:64::ffff:ffff:ffff:fffe/64"
    );
    assert_eq!(
        address(&add_ok(&conf, "c2", "eth0"), 0),
        "fd00:64::ffff:ffff:ffff:ffff/64"
    );
    let e = add(&conf, "c3", "eth0").err(100);
    assert_msg(&e, &["fd00:64::/64"]);
    del_ok(&conf, "c1", "eth0");
    assert_eq!(
        address(&add_ok(&conf, "c3", "eth0"), 0),
        "fd00:64::ffff:ffff:ffff:fffe/64"
    );

    // The top of the whole /8 the same way.
    let dir = data_dir();
    let conf = net(
        "1.0.0",
        "net",
        ipam_with(
            &dir,
            "fd00::/8",
            json!({"range_start": "fdff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"}),
        ),
    );
    let got: Vec<String> = (0..2)
        .map(|i| address(&add_ok(&conf, &format!("c{i}"), "eth0"), 0))
        .collect();
    assert_eq!(
        got,
        [
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/8",
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/8"
        ]
    );
    add(&conf, "c2", "eth0").err(100);

    // A /64 with the default span keeps counting up.
    let dir = data_dir();
    let conf = net("0.3.1", "net", ipam(&dir, "fd00:65::/64"));
    let got: Vec<String> = (0..3)
        .map(|i| address(&add_ok(&conf, &format!("c{i}"), "eth0"), 0))
        .collect();
    assert_eq!(got, ["fd00:65::1/64", "fd00:65::2/64", "fd00:65::3/64"]);
}

#[test]
fn admin_list_usage_and_release() {
    let dir = data_dir();
    let d = dir_str(dir.path());
    let conf = net("1.0.0", "net", ipam(&dir, "10.1.0.0/30"));
    assert_eq!(
        list_rows(dir.path()),
        Vec::<Vec<String>>::new(),
        "empty data dir"
    );
    add_ok(&conf, "c1", "eth0");
    run(&call("ADD", "c2", "net1", &conf).env("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"))
        .ok();
    assert_eq!(
        list_rows_no_age(dir.path()),
        vec![
            vec!["_default", "10.1.0.1", "net", "c1", "eth0", "-"],
            vec!["_default", "10.1.0.2", "net", "c2", "net1", "ns/p"],
        ]
    );
    let usage = admin_ok(&["usage", "--data-dir", &d]);
    let rows: Vec<Vec<&str>> = usage
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["SPACE", "RANGE", "SIZE", "USED", "FREE"],
        "{usage}"
    );
    assert_eq!(
        rows[1],
        ["_default", "10.1.0.1-10.1.0.2", "2", "2", "0"],
        "{usage}"
    );
    add(&conf, "c3", "eth0").err(100);

    // A live attachment's address is freed only with --force.
    let (code, stdout, stderr) = admin(&["release", "--data-dir", &d, "--ip", "10.1.0.1"]);
    assert_eq!((code, stdout.as_str()), (1, ""), "{stderr}");
    for needle in ["10.1.0.1", "container c1, interface eth0", "--force"] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    assert_eq!(claims(dir.path()), ips(&["10.1.0.1", "10.1.0.2"]));
    assert_eq!(
        admin_ok(&["release", "--data-dir", &d, "--ip", "10.1.0.1", "--force"]),
        "released 10.1.0.1 (space _default, container c1, interface eth0)\n"
    );
    assert_eq!(
        admin_ok(&["release", "--data-dir", &d, "--ip", "10.1.0.1"]),
        "nothing matched; nothing released\n"
    );
    let usage = admin_ok(&["usage", "--data-dir", &d, "--network-name", "_default"]);
    assert!(
        usage.lines().nth(1).unwrap().split_whitespace().eq([
            "_default",
            "10.1.0.1-10.1.0.2",
            "2",
            "1",
            "1"
        ]),
        "{usage}"
    );
    // The freed address is the only free one, so the next ADD gets it.
    assert_eq!(address(&add_ok(&conf, "c3", "eth0"), 0), "10.1.0.1/30");
    run(&call("CHECK", "c1", "eth0", &conf)).err(102);
    del_ok(&conf, "c1", "eth0");

    let by_attachment = [
        "release",
        "--data-dir",
        &d,
        "--container",
        "c2",
        "--ifname",
        "net1",
    ];
    let (code, _, stderr) = admin(&by_attachment);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("pod ns/p") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        admin_ok(&[&by_attachment[..], &["--force"]].concat()),
        "released 10.1.0.2 (space _default, container c2, interface net1)\n"
    );
    assert_eq!(claims(dir.path()), ips(&["10.1.0.1"]));
    let (code, _, stderr) = admin(&["release", "--data-dir", &d]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--ip"), "{stderr}");
    let (code, _, stderr) = admin(&["frobnicate", "--data-dir", &d]);
    assert_eq!(code, 2);
    assert!(stderr.contains("frobnicate"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// 4. Same network through the reference host-local (v1.10, scripts/peers) and plumb-ipam
// ---------------------------------------------------------------------------------------------

/// Runs the reference host-local (`bin`, v1.10) for one ADD.
fn host_local_add(bin: &Path, conf: &Value, cid: &str) -> Outcome {
    call("ADD", cid, "eth0", conf).run(bin)
}

/// A result without empty objects or arrays (host-local always prints `"dns": {}`).
fn without_empty(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| match x {
                    Value::Object(o) => !o.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    _ => true,
                })
                .map(|(k, x)| (k.clone(), without_empty(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_empty).collect()),
        other => other.clone(),
    }
}

/// The key structure of a result: object keys, recursively, with values replaced by null.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), shape(x))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        _ => Value::Null,
    }
}

#[test]
fn host_local_and_plumb_ipam_give_the_same_results() {
    let test = "host_local_and_plumb_ipam_give_the_same_results";
    // A loud skip without Go >= 1.26 to build the reference plugins.
    let Some(host_local) = peers::bin(test, "host-local") else {
        return;
    };
    for v in ["0.4.0", "1.0.0"] {
        for (subnet, gateway) in [("10.1.0.0/24", "10.1.0.1"), ("fd00:1::/64", "fd00:1::1")] {
            let route = if subnet.contains(':') {
                "::/0"
            } else {
                "0.0.0.0/0"
            };
            let hl_dir = data_dir();
            let hl = json!({"cniVersion": v, "name": "net", "type": "host-local",
                "ipam": {"type": "host-local", "dataDir": dir_str(hl_dir.path()),
                         "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                         "routes": [{"dst": route}]}});
            let pl_dir = data_dir();
            let pl = net(
                v,
                "net",
                ipam_with(
                    &pl_dir,
                    subnet,
                    json!({"gateway": gateway, "routes": [{"dst": route}]}),
                ),
            );
            for cid in ["c1", "c2"] {
                let reference = without_empty(&host_local_add(&host_local, &hl, cid).ok());
                let ours = add_ok(&pl, cid, "eth0");
                assert_eq!(ours, reference, "{v} {subnet} {cid}");
            }
        }
        // Dual-stack: host-local gives every range a gateway, plumb-ipam only the one it is told
        // (ipRanges have none), so compare the key structure without the IPv6 gateway.
        let hl_dir = data_dir();
        let hl = json!({"cniVersion": v, "name": "net", "type": "host-local",
            "ipam": {"type": "host-local", "dataDir": dir_str(hl_dir.path()),
                     "ranges": [[{"subnet": "10.1.0.0/24", "gateway": "10.1.0.1"}],
                                [{"subnet": "fd00:1::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}});
        let pl_dir = data_dir();
        let pl = net(
            v,
            "net",
            ipam_with(
                &pl_dir,
                "10.1.0.0/24",
                json!({"gateway": "10.1.0.1", "ipRanges": [{"range": "fd00:1::/64"}],
                       "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}),
            ),
        );
        let mut reference = without_empty(&host_local_add(&host_local, &hl, "c1").ok());
        reference["ips"][1]
            .as_object_mut()
            .unwrap()
            .remove("gateway");
        let ours = add_ok(&pl, "c1", "eth0");
        assert_eq!(
            shape(&ours),
            shape(&reference),
            "{v}: {ours} vs {reference}"
        );
        assert_eq!(ours["cniVersion"], reference["cniVersion"]);
        assert_eq!(ours["ips"][0], reference["ips"][0], "{v}");
        assert_eq!(ours["routes"], reference["routes"], "{v}");
    }
}

/// plumb-ipam carries only the file store: a Kubernetes-store config goes to plumb-ipam-kube beside it.
/// Without the helper, ADD answers a CNI error naming it (not a crash, not the file store); with it,
/// plumb-ipam-kube answers, which shows as its own error here (the API server does not exist).
#[test]
fn kubernetes_store_configs_go_to_plumb_ipam_kube() {
    let dir = data_dir();
    let lone = TempDir::new("ipamlone");
    let copy = lone.path().join("plumb-ipam");
    std::fs::copy(ipam_bin(), &copy).expect("copy plumb-ipam");
    let kubeconfig = dir.path().join("missing.kubeconfig");
    let conf = net(
        "1.0.0",
        "kube-handoff",
        ipam_with(
            &dir,
            "10.9.0.0/24",
            json!({"kubernetes": {"kubeconfig": dir_str(&kubeconfig)}}),
        ),
    );
    let c = call("ADD", "c1", "eth0", &conf).env("CNI_PATH", &dir_str(lone.path()));
    let alone = c.run(&copy);
    let e = alone.err(5);
    assert!(
        e["msg"].as_str().unwrap().contains("plumb-ipam-kube"),
        "the error names the missing helper: {e}"
    );
    assert_eq!(e["cniVersion"], "1.0.0", "{e}");
    // Beside its helper, the same call reaches the Kubernetes store, which reports the kubeconfig.
    let handed = run(&c);
    let e = handed.json();
    assert!(
        e["msg"].as_str().unwrap_or_default().contains("kubeconfig")
            || e["details"]
                .as_str()
                .unwrap_or_default()
                .contains("kubeconfig"),
        "plumb-ipam-kube's own error: {e}"
    );
    assert_ne!(handed.exit, 0);
    // No file-store reservation was made (the Kubernetes store keeps only its node lock there).
    let records = conformance::ipam_records(dir.path(), &["att-", "ip-"]).len();
    assert_eq!(records, 0);
}
