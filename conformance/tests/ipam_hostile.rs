//! plumb-ipam under hostile and careless input, black-box through the built binary: work bounded by
//! config entries (huge exclusions, huge ranges, thousands of exclusions, exhausted cursor-only ranges),
//! results that tell the truth (gateway and routes checked before anything is reserved), a lenient DEL,
//! and honest admin commands (no freeing of live reservations without `--force`, no empty table for a
//! missing data dir, no forged rows). Each test keeps its store in its own temporary `dataDir`.
//! Wall-clock assertions are hang guards only (2 s for work that takes milliseconds).

use conformance::plugin::{Call, Outcome};
use conformance::{ipam_admin as admin, plumb_bin, TempDir};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// IPAM never enters the namespace, so any path will do.
const NETNS: &str = "/run/netns/none";

/// The hang guard: the same work took hours before (linear in excluded addresses).
const GUARD: Duration = Duration::from_secs(2);

fn bin() -> PathBuf {
    plumb_bin("plumb-ipam")
}

fn dir_str(dir: &Path) -> String {
    dir.to_str().expect("temp dir is UTF-8").to_string()
}

/// A network config with `ipam` fields `extra` and the store in `dir`.
fn conf(dir: &TempDir, extra: Value) -> Value {
    let mut ipam = json!({"type": "plumb-ipam", "dataDir": dir_str(dir.path())});
    for (k, v) in extra.as_object().expect("object") {
        ipam[k] = v.clone();
    }
    json!({"cniVersion": "1.1.0", "name": "net", "type": "plumb-ipam", "ipam": ipam})
}

/// Runs one CNI command; asserts it answered within the hang guard.
fn timed(cmd: &str, cid: &str, conf: &Value) -> Outcome {
    let t = Instant::now();
    let out = Call::new(cmd, cid, NETNS, "eth0", conf).run(&bin());
    assert!(
        t.elapsed() < GUARD,
        "{cmd} {cid} took {:?} (bounded work expected)",
        t.elapsed()
    );
    out
}

fn first_address(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ips[0].address in {result}"))
        .to_string()
}

fn assert_msg(err: &Value, needles: &[&str]) {
    let msg = err["msg"].as_str().expect("msg");
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} does not name {n:?}");
    }
}

/// Every `ip-` file name under `dir`, across spaces.
fn claims(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for space in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(space.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if let Some(ip) = name.strip_prefix("ip-") {
                out.push(ip.to_string());
            }
        }
    }
    out.sort();
    out
}

/// 64 CIDRs that exclude every address of `prefix::/64` except the last.
fn all_but_last_of_a_64(prefix: &str) -> Vec<String> {
    let mut at: u128 = format!("{prefix}::")
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .into();
    (65..=128u32)
        .map(|p| {
            let s = format!("{}/{p}", std::net::Ipv6Addr::from(at));
            at += 1u128 << (128 - p);
            s
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Bounded work
// ---------------------------------------------------------------------------------------------

#[test]
fn huge_exclusions_and_ranges_answer_at_once() {
    let many: Vec<String> = (0..5000u32)
        .map(|i| format!("fd00:2::{:x}", i * 2 + 1))
        .chain((0..5000u32).map(|i| format!("fd00:2:0:1::{:x}:0/120", i * 2)))
        .collect();
    let cases = [
        (
            json!({"range": "fd00:ad0::/64", "exclude": ["fd00:ad0::/65"]}),
            "fd00:ad0:0:0:8000::/64",
        ),
        (
            json!({"range": "fd00::/8", "exclude": ["fd00::/9"]}),
            "fd80::/8",
        ),
        (
            json!({"range": "fd00:1::/64", "exclude": all_but_last_of_a_64("fd00:1")}),
            "fd00:1::ffff:ffff:ffff:ffff/64",
        ),
        (json!({"range": "::/1", "exclude": ["::/2"]}), "4000::/1"),
        (
            json!({"range": "0.0.0.0/1", "range_start": "0.0.0.1", "range_end": "127.255.255.254",
                   "exclude": ["0.0.0.0/2"]}),
            "64.0.0.0/1",
        ),
        (
            json!({"range": "fd00:2::/64", "exclude": many}),
            "fd00:2::2/64",
        ),
    ];
    for (ipam, want) in cases {
        let dir = TempDir::new("ipamhuge");
        let c = conf(&dir, ipam.clone());
        let r = timed("ADD", "c1", &c).ok();
        assert_eq!(first_address(&r), want, "{ipam}");
        // The next ADD steps past it (or finds the range exhausted), and DEL, CHECK and STATUS are as
        // quick.
        let r2 = timed("ADD", "c2", &c);
        if want.starts_with("fd00:1:") {
            r2.err(100);
        } else {
            assert_ne!(first_address(&r2.ok()), want);
        }
        let check = with(&c, "prevResult", r.clone());
        timed("CHECK", "c1", &check).ok();
        let t = Instant::now();
        let status = Call::new("STATUS", "", "", "", &c)
            .without("CNI_CONTAINERID")
            .without("CNI_NETNS")
            .without("CNI_IFNAME")
            .run(&bin());
        if want.starts_with("fd00:1:") {
            status.err(50); // its one address is taken
        } else {
            status.ok();
        }
        assert!(t.elapsed() < GUARD, "STATUS took {:?}", t.elapsed());
        timed("DEL", "c1", &c).ok();
        timed("DEL", "c2", &c).ok();
        assert_eq!(claims(dir.path()), Vec::<String>::new());
    }
}

#[test]
fn a_cursor_only_range_with_one_usable_address_is_exhausted_at_once() {
    let dir = TempDir::new("ipamone");
    let c = conf(
        &dir,
        json!({"range": "fd00:3::/64", "exclude": all_but_last_of_a_64("fd00:3")}),
    );
    let r = timed("ADD", "c1", &c).ok();
    assert_eq!(first_address(&r), "fd00:3::ffff:ffff:ffff:ffff/64");
    let e = timed("ADD", "c2", &c).err(100);
    assert_msg(&e, &["fd00:3::/64", "exhausted", "1 usable"]);
    assert_eq!(claims(dir.path()), vec!["fd00:3::ffff:ffff:ffff:ffff"]);
    // Freed, it is handed out again.
    timed("DEL", "c1", &c).ok();
    assert_eq!(
        first_address(&timed("ADD", "c2", &c).ok()),
        "fd00:3::ffff:ffff:ffff:ffff/64"
    );
}

#[test]
fn too_many_exclusions_or_ranges_are_code_7_naming_the_field() {
    let dir = TempDir::new("ipamlimit");
    let ex: Vec<String> = (0..16_385u32)
        .map(|i| format!("fd00:4::{:x}:{:x}", i >> 16, i & 0xffff))
        .collect();
    let e = timed(
        "ADD",
        "c1",
        &conf(&dir, json!({"range": "fd00:4::/64", "exclude": ex})),
    )
    .err(7);
    assert_msg(&e, &["ipam.exclude", "16385", "16384"]);
    let ranges: Vec<Value> = (0..65u32)
        .map(|i| json!({"range": format!("10.{i}.0.0/24")}))
        .collect();
    let e = timed("ADD", "c1", &conf(&dir, json!({"ipRanges": ranges}))).err(7);
    assert_msg(&e, &["ipam.ipRanges", "65", "64"]);
    assert_eq!(claims(dir.path()), Vec::<String>::new());
}

#[test]
fn thousands_of_static_requests_are_refused_at_once() {
    let dir = TempDir::new("ipamstatic");
    let c = conf(&dir, json!({"range": "10.1.0.0/16"}));
    let list: Vec<String> = (0..8000u32)
        .map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let t = Instant::now();
    let out = Call::new("ADD", "c1", NETNS, "eth0", &c)
        .env("CNI_ARGS", &format!("IP={}", list.join(",")))
        .run(&bin());
    assert!(t.elapsed() < GUARD, "took {:?}", t.elapsed());
    assert_msg(
        &out.err(7),
        &["10.1.0.1 and 10.1.0.2", "at most one address per range"],
    );
    assert_eq!(claims(dir.path()), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// 2. Results tell the truth
// ---------------------------------------------------------------------------------------------

fn with(conf: &Value, key: &str, value: Value) -> Value {
    let mut c = conf.clone();
    c[key] = value;
    c
}

#[test]
fn a_gateway_outside_every_range_of_its_family_is_code_7_naming_both() {
    let dir = TempDir::new("ipamgw");
    let cases = [
        (
            json!({"range": "10.1.0.0/24", "gateway": "10.9.0.1"}),
            vec!["ipam.gateway 10.9.0.1", "10.1.0.0/24"],
        ),
        (
            json!({"range": "10.1.0.0/24", "ipRanges": [{"range": "fd00:5::/64"}], "gateway": "fd00:6::1"}),
            vec!["ipam.gateway fd00:6::1", "IPv6", "fd00:5::/64"],
        ),
        (
            json!({"ipRanges": [{"range": "fd00:5::/64"}], "gateway": "10.1.0.1"}),
            vec!["ipam.gateway 10.1.0.1", "no range is IPv4"],
        ),
        (
            json!({"ipRanges": [{"range": "fd00:5::/64", "gateway": "fd00:7::1"}]}),
            vec!["ipam.ipRanges[0].gateway fd00:7::1", "fd00:5::/64"],
        ),
    ];
    for (ipam, needles) in cases {
        let e = timed("ADD", "c1", &conf(&dir, ipam.clone())).err(7);
        assert_msg(&e, &needles);
    }
    assert_eq!(claims(dir.path()), Vec::<String>::new());
    // Dual-stack: the top-level gateway goes to the range that holds it, a per-range gateway to its own.
    let c = conf(
        &dir,
        json!({"range": "10.1.0.0/24", "gateway": "10.1.0.1",
               "ipRanges": [{"range": "fd00:5::/64", "gateway": "fd00:5::1"}]}),
    );
    let r = timed("ADD", "c1", &c).ok();
    assert_eq!(r["ips"][0]["gateway"], "10.1.0.1");
    assert_eq!(r["ips"][1]["gateway"], "fd00:5::1");
    assert_eq!(r["ips"][0]["address"], "10.1.0.2/24");
    assert_eq!(r["ips"][1]["address"], "fd00:5::2/64");
}

#[test]
fn conflicting_or_host_bit_routes_are_code_7_before_anything_is_reserved() {
    let dir = TempDir::new("ipamroute");
    let cases = [
        (
            json!([{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "0.0.0.0/0", "gw": "10.1.0.254"}]),
            vec![
                "ipam.routes[0] {dst 0.0.0.0/0, gw 10.1.0.1}",
                "ipam.routes[1] {dst 0.0.0.0/0, gw 10.1.0.254}",
                "same destination",
            ],
        ),
        (
            json!([{"dst": "192.168.0.0/16"}, {"dst": "::/0"}, {"dst": "192.168.0.0/16"}]),
            vec!["ipam.routes[0]", "ipam.routes[2]", "192.168.0.0/16"],
        ),
        (
            json!([{"dst": "192.168.7.9/16", "gw": "10.1.0.1"}]),
            vec![
                "ipam.routes[0].dst 192.168.7.9/16",
                "host bits",
                "192.168.0.0/16",
            ],
        ),
    ];
    for (routes, needles) in cases {
        let c = conf(&dir, json!({"range": "10.1.0.0/24", "routes": routes}));
        let e = timed("ADD", "c1", &c).err(7);
        assert_msg(&e, &needles);
        assert_eq!(claims(dir.path()), Vec::<String>::new());
    }
    // Different destinations (and one per family) are fine.
    let c = conf(
        &dir,
        json!({"range": "10.1.0.0/24",
               "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "10.2.0.0/16", "gw": "10.1.0.1"}, {"dst": "::/0"}]}),
    );
    assert_eq!(
        timed("ADD", "c1", &c).ok()["routes"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

// ---------------------------------------------------------------------------------------------
// 3. DEL is lenient
// ---------------------------------------------------------------------------------------------

#[test]
fn del_releases_with_a_config_add_would_refuse() {
    let broken = [
        json!({"range": "10.1.0.0/24", "gateway": "10.9.0.1"}),
        json!({"range": "10.1.0.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "0.0.0.0/0", "gw": "10.1.0.2"}]}),
        json!({"range": "10.1.0.0/24", "exclude": ["10.1.0.0/24"]}),
        json!({"range": "banana"}),
        json!({"range": "10.1.0.0/24", "ipRanges": "not a list"}),
        json!({}),
    ];
    for ipam in broken {
        let dir = TempDir::new("ipamdel");
        let good = conf(&dir, json!({"range": "10.1.0.0/24"}));
        timed("ADD", "c1", &good).ok();
        timed("ADD", "c2", &good).ok();
        let bad = conf(&dir, ipam.clone());
        timed("ADD", "c3", &bad).err(7);
        timed("DEL", "c1", &bad).ok();
        assert_eq!(claims(dir.path()), vec!["10.1.0.2"], "DEL with {ipam}");
        // A second DEL, and a DEL of something never added, succeed too.
        timed("DEL", "c1", &bad).ok();
        timed("DEL", "never", &bad).ok();
    }
}

/// Runs `cmd` with `conf` in the working directory `cwd`; returns exit code, stdout and stderr.
fn run_in_cwd(cwd: &Path, cmd: &str, conf: &Value) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .current_dir(cwd)
        .env_clear()
        .envs([
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", NETNS),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plumb-ipam");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn del_never_creates_files_relative_to_the_cwd_or_a_missing_store() {
    let cwd = TempDir::new("ipamcwd");
    let rel = json!({"cniVersion": "1.1.0", "name": "net", "type": "plumb-ipam",
                     "ipam": {"type": "plumb-ipam", "range": "10.1.0.0/24", "dataDir": "rel/store"}});
    let (code, stdout, stderr) = run_in_cwd(cwd.path(), "DEL", &rel);
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    assert!(
        stderr.contains("rel/store") && stderr.contains("nothing to release"),
        "{stderr}"
    );
    // A hostile network_name likewise: nothing of it can be stored.
    let mut bad_space = rel.clone();
    bad_space["ipam"]["dataDir"] = json!(dir_str(&cwd.path().join("abs")));
    bad_space["ipam"]["network_name"] = json!("../x");
    let (code, _, stderr) = run_in_cwd(cwd.path(), "DEL", &bad_space);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("network_name"), "{stderr}");
    // An absolute dataDir that does not exist is not created by DEL.
    let mut missing = rel.clone();
    missing["ipam"]["dataDir"] = json!(dir_str(&cwd.path().join("absent")));
    let (code, _, stderr) = run_in_cwd(cwd.path(), "DEL", &missing);
    assert_eq!(code, 0, "{stderr}");
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "DEL created {left:?}");
    // ADD, CHECK and STATUS refuse the relative dataDir and create nothing either.
    for cmd in ["ADD", "CHECK", "STATUS"] {
        let (code, stdout, _) = run_in_cwd(cwd.path(), cmd, &rel);
        assert_ne!(code, 0, "{cmd}");
        assert!(
            stdout.contains("dataDir") && stdout.contains("\"code\":7"),
            "{cmd}: {stdout}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "a refused command created {left:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. Admin honesty
// ---------------------------------------------------------------------------------------------

#[test]
fn admin_on_a_missing_data_dir_or_space_is_an_error_naming_it() {
    let base = TempDir::new("ipamadm");
    let missing = base.path().join("nope");
    let m = dir_str(&missing);
    for cmd in ["list", "usage"] {
        let (code, stdout, stderr) = admin(&[cmd, "--data-dir", &m]);
        assert_eq!((code, stdout.as_str()), (1, ""), "{cmd}: {stderr}");
        assert!(stderr.contains(&m), "{cmd}: {stderr}");
    }
    let (code, _, stderr) = admin(&["release", "--data-dir", &m, "--ip", "10.1.0.1"]);
    assert_eq!(code, 1, "{stderr}");
    let (code, _, stderr) = admin(&[
        "list",
        "--data-dir",
        &dir_str(base.path()),
        "--network-name",
        "other",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no space other"), "{stderr}");
    assert!(
        !missing.exists() && !base.path().join("other").exists(),
        "admin created a store"
    );
}

#[test]
fn admin_output_escapes_stored_values_and_release_needs_force_for_live_ones() {
    let dir = TempDir::new("ipamforge");
    let c = conf(&dir, json!({"range": "10.1.0.0/24"}));
    timed("ADD", "c1", &c).ok();
    // A record written by hand (or an older version) with control characters in every text field,
    // and its claim linked to it as plumb-ipam would: a live reservation.
    let space = dir.path().join("_default");
    let forged = json!({"containerID": "x\n_default  10.1.0.99  net  evil", "ifname": "eth0\r",
                        "network": "net\u{1b}[2J", "ips": ["10.1.0.7/24"], "podNamespace": "ns\n",
                        "podName": "p\u{202e}", "created": 1});
    let att = space.join("att-forged@eth0");
    std::fs::write(&att, forged.to_string()).unwrap();
    std::fs::hard_link(&att, space.join("ip-10.1.0.7")).unwrap();
    let (code, out, stderr) = admin(&["list", "--data-dir", &dir_str(dir.path())]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "one header and one row per claim: {out}");
    assert!(
        out.is_ascii() && !out.contains('\r') && !out.contains('\u{1b}'),
        "{out:?}"
    );
    assert!(lines[2].contains("x\\u{a}_default\\u{20}\\u{20} "), "{out}");
    assert!(lines[2].contains("ns\\u{a}/p\\u{202e}"), "{out}");
    // The forged record is not live as plumb-ipam defines it (its record file is not named after its
    // attachment), so freeing its claim needs no --force and frees the claim alone.
    let (code, out, stderr) = admin(&[
        "release",
        "--data-dir",
        &dir_str(dir.path()),
        "--ip",
        "10.1.0.7",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        out.starts_with("released 10.1.0.7 (space _default, orphan claim of container x\\u{a}"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    // c1's address is live: refused without --force, freed with it.
    let (code, _, stderr) = admin(&[
        "release",
        "--data-dir",
        &dir_str(dir.path()),
        "--ip",
        "10.1.0.1",
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("container c1, interface eth0") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(claims(dir.path()), vec!["10.1.0.1"]);
    let (code, out, _) = admin(&[
        "release",
        "--data-dir",
        &dir_str(dir.path()),
        "--ip",
        "10.1.0.1",
        "--force",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "released 10.1.0.1 (space _default, container c1, interface eth0)\n"
        )
    );
    assert_eq!(claims(dir.path()), Vec::<String>::new());
}
