//! plumb-bridge side by side with the reference `bridge` plugin (containernetworking/plugins v1.10,
//! built from its Go module by `scripts/peers`; see `conformance::peers`): the same configuration, with
//! the same `host-local` (or `static`) IPAM of v1.10, is given to the reference (`"type": "bridge"`) on
//! one bridge and namespace and to plumb-bridge (`"type": "plumb-bridge"`) on another, each with its
//! own subnet of the same shape (`10.241.<2·slot>.0/24` for the reference, `10.241.<2·slot+1>.0/24` for
//! plumb). Everything the two leave behind is read back, mapped onto placeholders (`@V4`, `@BR`,
//! `@VETH`, ...) and compared key by key: the ADD result, the container interface (link, addresses,
//! routes, sysctls), the host veth (link, bridge-port flags, sysctls), the bridge (link, addresses,
//! routes, sysctls, how its MAC was assigned), CHECK, DEL and a second DEL.
//!
//! The differences that are allowed are asserted to be exactly what they are, in
//! [`assert_allowed_differences`] (docs/bridge.md lists them, "Where plumb differs from the reference"):
//!
//! * the host veth's name: the reference picks `veth` + 8 random hex digits, plumb derives
//!   `plb` + 12 hex digits from (containerID, ifname) so DEL finds it without the netns;
//! * every unicast MAC (random on both sides; the bridge's derives from them); the *relation*
//!   "the bridge has its port's MAC" is still compared;
//! * `txqlen` of the host veth: v1.10 creates the pair inside the container and its host end comes up
//!   with `txqueuelen 0`; plumb leaves the kernel default of 1000 there (the container interface has
//!   the kernel default on both sides and is compared).
//!
//! `dns` in the result is compared and asserted on both sides: the config's `dns` when it sets
//! something, else the IPAM plugin's, else no key. Both CHECK every fresh attachment successfully
//! (v1.1.1 failed its own CHECK of layer-2 attachments and of gateway-less result routes);
//! [`check_detects_drift`] shows both notice a missing route or address. Debian's v1.1.1 in
//! /usr/lib/cni is no longer used here.
//!
//! Error behaviour is compared in the tests at the end: the reference answers every refusal with the
//! generic code 999, plumb with code 7 naming the field; where the reference leaves something behind
//! after a failed ADD, plumb must not. One refusal of the reference plumb does not share:
//! `hairpinMode` together with `promiscMode` ([`hairpin_and_promisc_together`]); one refusal plumb
//! has that the reference lacks: `isGateway` without a gateway from IPAM
//! ([`default_gateway_without_ipam_gateway`]).
//!
//! Only namespaces and bridges these tests create carry state; no traffic is sent at all. No test gives
//! a bridge an IPv6 gateway, so the host's IPv6 forwarding is never changed; `ip_forward` is put back.

use conformance::netns::{run, Netns};
use conformance::plugin::{Call, Outcome};
use conformance::skip::skip_unless_netns;
use conformance::{peers, plumb_bin, unique_name, TempDir};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const IFNAME: &str = "eth0";
const NETWORK: &str = "plumbcmp";
const VERSION: &str = "1.0.0";
/// The kernel's default `txqueuelen` of a veth, which plumb leaves alone.
const KERNEL_VETH_TXQLEN: u64 = 1000;

// ---------------------------------------------------------------------------------------------------
// Guards

use conformance::host::{ForwardingRestore, HostLink};

// ---------------------------------------------------------------------------------------------------
// The two sides

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    Reference,
    Plumb,
}

/// One implementation's world: its bridge, subnets, data dir and pod namespaces.
struct Side {
    imp: Impl,
    bridge: String,
    /// First three octets of this side's IPv4 /24, e.g. `10.241.6`.
    v4: String,
    /// First three groups of this side's IPv6 /64, e.g. `fd00:241:6`.
    v6: String,
    /// Another IPv4 /24 of this side, for "the bridge already has an address elsewhere".
    old4: String,
    data: TempDir,
    pods: Vec<Netns>,
    cids: Vec<String>,
    /// Host veth names learned from ADD results, by pod.
    veths: Vec<Option<String>>,
    _bridge: HostLink,
}

impl Side {
    fn new(imp: Impl, slot: u8, pods: usize) -> Side {
        let n = 2 * slot + u8::from(imp == Impl::Plumb);
        let (brp, nsp, cidp) = match imp {
            Impl::Reference => ("rcbr", "rcns", "rcid"),
            Impl::Plumb => ("pcbr", "pcns", "pcid"),
        };
        let bridge = unique_name(brp);
        Side {
            imp,
            _bridge: HostLink(bridge.clone()),
            bridge,
            v4: format!("10.241.{n}"),
            v6: format!("fd00:241:{n:x}"),
            old4: format!("10.244.{n}"),
            data: TempDir::new("rcdata"),
            pods: (0..pods).map(|_| Netns::new(nsp)).collect(),
            cids: (0..pods).map(|_| unique_name(cidp)).collect(),
            veths: vec![None; pods],
        }
    }

    fn name(&self) -> &'static str {
        match self.imp {
            Impl::Reference => "reference bridge",
            Impl::Plumb => "plumb-bridge",
        }
    }

    fn binary(&self) -> PathBuf {
        match self.imp {
            Impl::Reference => reference_dir().join("bridge"),
            Impl::Plumb => plumb_bin("plumb-bridge"),
        }
    }

    fn data_path(&self) -> String {
        self.data.path().display().to_string()
    }

    /// The config for this side: `fields` with its placeholders filled in, plus version, name, type.
    fn conf(&self, fields: &Value) -> Value {
        let text = fields
            .to_string()
            .replace("@BR", &self.bridge)
            .replace("@V4", &self.v4)
            .replace("@V6", &self.v6)
            .replace("@OLD4", &self.old4)
            .replace("@DATA", &self.data_path());
        let mut conf: Map<String, Value> = serde_json::from_str(&text).expect("config template");
        conf.insert("cniVersion".into(), VERSION.into());
        conf.insert("name".into(), NETWORK.into());
        let ty = match self.imp {
            Impl::Reference => "bridge",
            Impl::Plumb => "plumb-bridge",
        };
        conf.insert("type".into(), ty.into());
        Value::Object(conf)
    }

    fn call(&self, command: &str, pod: usize, conf: &Value) -> Outcome {
        Call::new(
            command,
            &self.cids[pod],
            &self.pods[pod].path(),
            IFNAME,
            conf,
        )
        .env("CNI_PATH", &cni_path())
        .run(&self.binary())
    }

    /// ADD; asserts success and remembers the host veth.
    fn add(&mut self, pod: usize, fields: &Value) -> Value {
        let out = self.call("ADD", pod, &self.conf(fields));
        assert_eq!(
            out.exit,
            0,
            "{} ADD failed: stdout={} stderr={}",
            self.name(),
            out.stdout,
            out.stderr
        );
        let result = out.json();
        self.veths[pod] = result["interfaces"][1]["name"].as_str().map(String::from);
        result
    }

    /// The values placeholders stand for, longest first.
    fn tokens(&self, pod: usize) -> Vec<(String, String)> {
        let mut t = vec![
            (self.data_path(), "@DATA".to_string()),
            (self.pods[pod].path(), "@NS".to_string()),
            (format!("{}.", self.v4), "@V4.".to_string()),
            (format!("{}:", self.v6), "@V6:".to_string()),
            (format!("{}.", self.old4), "@OLD4.".to_string()),
            (self.bridge.clone(), "@BR".to_string()),
        ];
        if let Some(v) = &self.veths[pod] {
            t.push((v.clone(), "@VETH".to_string()));
        }
        t.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        t
    }

    /// Reservation files host-local keeps for this side (empty when it keeps none).
    fn reservations(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.data.path().join(NETWORK))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------------
// Reading state

/// Runs a command (in `ns` when given) and returns (success, stdout).
fn output(ns: Option<&Netns>, args: &[&str]) -> (bool, String) {
    let mut cmd = match ns {
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &n.name]).args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let o = cmd.output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// Runs an `ip -j ...` command and parses its output; panics if it fails.
fn ip_json(ns: Option<&Netns>, args: &[&str]) -> Value {
    let (ok, out) = output(ns, args);
    assert!(ok, "{args:?} failed in {:?}", ns.map(|n| &n.name));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn link_exists(ns: Option<&Netns>, name: &str) -> bool {
    output(ns, &["ip", "link", "show", "dev", name]).0
}

/// `ip -d -j link show dev <name>`, the single object.
fn link(ns: Option<&Netns>, name: &str) -> Value {
    ip_json(ns, &["ip", "-d", "-j", "link", "show", "dev", name])[0].clone()
}

/// The addresses of a link (`addr_info`).
fn addrs(ns: Option<&Netns>, name: &str) -> Value {
    ip_json(ns, &["ip", "-j", "addr", "show", "dev", name])[0]["addr_info"].clone()
}

/// Every readable `net.ipv4.conf.<if>.*` and `net.ipv6.conf.<if>.*`, as `ipv4.<key>` → value.
fn sysctls(ns: Option<&Netns>, ifname: &str) -> Value {
    let v4 = format!("/proc/sys/net/ipv4/conf/{ifname}/");
    let v6 = format!("/proc/sys/net/ipv6/conf/{ifname}/");
    // grep exits 2 for the unreadable stable_secret; what it could read is on stdout.
    let (_, out) = output(ns, &["grep", "-s", "-r", ".", &v4, &v6]);
    let mut m = Map::new();
    for line in out.lines() {
        let Some((path, value)) = line.split_once(':') else {
            continue;
        };
        let key = if let Some(k) = path.strip_prefix(&v4) {
            format!("ipv4.{k}")
        } else if let Some(k) = path.strip_prefix(&v6) {
            format!("ipv6.{k}")
        } else {
            continue;
        };
        m.insert(key, Value::String(value.to_string()));
    }
    assert!(
        m.contains_key("ipv4.forwarding"),
        "no sysctls read for {ifname}: {out}"
    );
    Value::Object(m)
}

fn mac_of(l: &Value) -> String {
    l["address"].as_str().unwrap_or_default().to_string()
}

/// Waits (up to 5 s) until no address of these links is still doing duplicate address detection, so
/// both sides are read in the same settled state.
fn settle(links: &[(Option<&Netns>, &str)]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let busy = links
            .iter()
            .any(|(ns, name)| addrs(*ns, name).to_string().contains("\"tentative\""));
        if !busy || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------------
// Normalising and comparing

/// Keys whose values are identities or running timers, not configuration.
const VOLATILE: &[&str] = &[
    "ifindex",
    "link_index",
    "link_netnsid",
    "bridge_id",
    "root_id",
    "gc_timer",
    "hello_timer",
    "tcn_timer",
    "topology_change_timer",
    "hold_timer",
    "message_age_timer",
    "forward_delay_timer",
];

fn is_unicast_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
        && s != "00:00:00:00:00:00"
}

/// Maps one side's names and addresses onto placeholders; masks unicast MACs and link-local
/// addresses (derived from MACs); drops volatile keys; sorts lists of addresses and routes.
fn normalize(v: &Value, tokens: &[(String, String)]) -> Value {
    match v {
        Value::String(s) => {
            if is_unicast_mac(s) {
                return json!("@MAC");
            }
            if s.starts_with("fe80::") && !s.contains('/') {
                return json!("@LL");
            }
            let mut s = s.clone();
            for (from, to) in tokens {
                s = s.replace(from.as_str(), to);
            }
            Value::String(s)
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
                .map(|(k, x)| (k.clone(), normalize(x, tokens)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| normalize(x, tokens)).collect()),
        other => other.clone(),
    }
}

/// A list whose order carries no meaning, sorted by its serialisation.
fn sorted(v: Value) -> Value {
    let mut items = v.as_array().cloned().unwrap_or_default();
    items.sort_by_key(|x| x.to_string());
    Value::Array(items)
}

/// Flattens JSON into `path → leaf`; empty objects and arrays are leaves, so shapes compare too.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                flatten(&format!("{prefix}.{k}"), x, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

/// What one side left behind after ADD of `pod`, before normalisation: raw values by section.
struct Raw {
    result: Value,
    pod_link: Value,
    pod_addrs: Value,
    pod_routes4: Value,
    pod_routes6: Value,
    pod_sysctl: Value,
    veth_link: Value,
    veth_addrs: Value,
    veth_sysctl: Value,
    bridge: BridgeState,
}

/// The bridge as the host sees it.
struct BridgeState {
    link: Value,
    addrs: Value,
    routes4: Value,
    routes6: Value,
    sysctl: Value,
    addr_assign_type: String,
}

fn bridge_state(side: &Side) -> BridgeState {
    let br = side.bridge.as_str();
    BridgeState {
        link: link(None, br),
        addrs: addrs(None, br),
        routes4: ip_json(None, &["ip", "-j", "route", "show", "dev", br]),
        routes6: ip_json(None, &["ip", "-6", "-j", "route", "show", "dev", br]),
        sysctl: sysctls(None, br),
        addr_assign_type: std::fs::read_to_string(format!("/sys/class/net/{br}/addr_assign_type"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

impl BridgeState {
    fn flat(&self, tokens: &[(String, String)], out: &mut BTreeMap<String, Value>) {
        flatten("bridge.link", &normalize(&self.link, tokens), out);
        flatten("bridge.addrs", &sorted(normalize(&self.addrs, tokens)), out);
        flatten(
            "bridge.routes4",
            &sorted(normalize(&self.routes4, tokens)),
            out,
        );
        flatten(
            "bridge.routes6",
            &sorted(normalize(&self.routes6, tokens)),
            out,
        );
        flatten("bridge.sysctl", &self.sysctl, out);
        out.insert(
            "bridge.addr_assign_type".into(),
            json!(self.addr_assign_type),
        );
    }
}

fn read_raw(side: &Side, pod: usize, result: &Value) -> Raw {
    let ns = &side.pods[pod];
    let veth = side.veths[pod].clone().expect("host veth in the result");
    settle(&[
        (Some(ns), IFNAME),
        (None, veth.as_str()),
        (None, side.bridge.as_str()),
    ]);
    Raw {
        result: result.clone(),
        pod_link: link(Some(ns), IFNAME),
        pod_addrs: addrs(Some(ns), IFNAME),
        pod_routes4: ip_json(Some(ns), &["ip", "-j", "route", "show", "table", "main"]),
        pod_routes6: ip_json(
            Some(ns),
            &["ip", "-6", "-j", "route", "show", "table", "main"],
        ),
        pod_sysctl: sysctls(Some(ns), IFNAME),
        veth_link: link(None, &veth),
        veth_addrs: addrs(None, &veth),
        veth_sysctl: sysctls(None, &veth),
        bridge: bridge_state(side),
    }
}

/// Checks each side holds on its own: the result names and MACs are the live ones, the host veth is
/// a port of the bridge, the container interface sits in the pod.
fn assert_self_consistent(side: &Side, pod: usize, raw: &Raw) {
    let who = side.name();
    let r = &raw.result;
    assert_eq!(r["cniVersion"], VERSION, "{who}: {r}");
    let ifs = r["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifs.len(), 3, "{who}: {r}");
    assert_eq!(ifs[0]["name"], side.bridge.as_str(), "{who}: {r}");
    assert_eq!(
        ifs[0]["mac"],
        mac_of(&raw.bridge.link).as_str(),
        "{who}: {r}"
    );
    assert_eq!(ifs[1]["mac"], mac_of(&raw.veth_link).as_str(), "{who}: {r}");
    assert_eq!(ifs[2]["name"], IFNAME, "{who}: {r}");
    assert_eq!(
        ifs[2]["sandbox"],
        side.pods[pod].path().as_str(),
        "{who}: {r}"
    );
    assert_eq!(ifs[2]["mac"], mac_of(&raw.pod_link).as_str(), "{who}: {r}");
    assert_eq!(
        raw.veth_link["master"],
        side.bridge.as_str(),
        "{who}: host veth is not a port of the bridge"
    );
}

/// The allowed differences, each asserted to be exactly what the module documentation says; then
/// removed from both sides so that everything else must be equal.
fn assert_allowed_differences(reference: &mut Raw, plumb: &mut Raw) {
    // Host veth names.
    let rv = reference.veth_link["ifname"].as_str().unwrap_or_default();
    assert!(
        rv.len() == 12 && rv.starts_with("veth") && rv[4..].chars().all(|c| c.is_ascii_hexdigit()),
        "reference host veth name {rv:?} is not veth + 8 hex digits"
    );
    let pv = plumb.veth_link["ifname"].as_str().unwrap_or_default();
    assert!(
        pv.len() == 15 && pv.starts_with("plb") && pv[3..].chars().all(|c| c.is_ascii_hexdigit()),
        "plumb host veth name {pv:?} is not plb + 12 hex digits"
    );

    // txqueuelen of the host veth: v1.10 creates the pair from the container side and leaves its host
    // end at 0 (absent from `ip -j` output); plumb leaves the kernel default on both ends. The container
    // interface's (the kernel default on both sides) is compared like everything else.
    let rq = reference
        .veth_link
        .as_object_mut()
        .expect("link")
        .remove("txqlen");
    assert!(
        rq.is_none() || rq == Some(json!(0)),
        "reference host veth txqlen is {rq:?}, expected 0"
    );
    let pq = plumb
        .veth_link
        .as_object_mut()
        .expect("link")
        .remove("txqlen");
    assert_eq!(
        pq,
        Some(json!(KERNEL_VETH_TXQLEN)),
        "plumb host veth txqlen should be the kernel default"
    );
}

/// Normalised, flattened view of one side; MACs are masked but whether the bridge has its port's MAC
/// is kept.
fn flat(side: &Side, pod: usize, raw: &Raw) -> BTreeMap<String, Value> {
    let t = side.tokens(pod);
    let mut out = BTreeMap::new();
    flatten("result", &normalize(&raw.result, &t), &mut out);
    flatten("pod.link", &normalize(&raw.pod_link, &t), &mut out);
    flatten(
        "pod.addrs",
        &sorted(normalize(&raw.pod_addrs, &t)),
        &mut out,
    );
    flatten(
        "pod.routes4",
        &sorted(normalize(&raw.pod_routes4, &t)),
        &mut out,
    );
    flatten(
        "pod.routes6",
        &sorted(normalize(&raw.pod_routes6, &t)),
        &mut out,
    );
    flatten("pod.sysctl", &raw.pod_sysctl, &mut out);
    flatten("veth.link", &normalize(&raw.veth_link, &t), &mut out);
    flatten(
        "veth.addrs",
        &sorted(normalize(&raw.veth_addrs, &t)),
        &mut out,
    );
    flatten("veth.sysctl", &raw.veth_sysctl, &mut out);
    raw.bridge.flat(&t, &mut out);
    out.insert(
        "bridge.has_port_mac".into(),
        json!(mac_of(&raw.bridge.link) == mac_of(&raw.veth_link)),
    );
    out
}

/// Panics listing every key where the two sides differ.
fn assert_same(what: &str, reference: &BTreeMap<String, Value>, plumb: &BTreeMap<String, Value>) {
    let keys: BTreeSet<&String> = reference.keys().chain(plumb.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| reference.get(*k) != plumb.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("<absent>".to_string(), Value::to_string);
            format!(
                "  {k}: reference={} plumb={}",
                show(reference.get(k)),
                show(plumb.get(k))
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: plumb-bridge differs from the reference bridge:\n{}",
        diffs.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------------
// Cases

/// One side-by-side comparison.
struct Case {
    test: &'static str,
    /// Picks this case's subnets; unique per test.
    slot: u8,
    /// Config fields besides cniVersion, name and type, with placeholders.
    fields: Value,
    /// Pods attached one after the other (each compared).
    pods: usize,
    /// Run on each side before the first ADD.
    prepare: fn(&Side),
    /// What the IPAM plugin reports as DNS (Null: nothing).
    ipam_dns: Value,
}

impl Case {
    fn new(test: &'static str, slot: u8, fields: Value) -> Case {
        Case {
            test,
            slot,
            fields,
            pods: 1,
            prepare: |_| {},
            ipam_dns: Value::Null,
        }
    }
}

fn host_local() -> Value {
    json!({"type": "host-local", "ranges": [[{"subnet": "@V4.0/24"}]], "dataDir": "@DATA"})
}

/// A config's `dns` when it sets something (what both plugins then report), else Null.
fn config_dns(fields: &Value) -> Value {
    match fields.get("dns") {
        Some(Value::Object(m)) if !m.is_empty() => Value::Object(m.clone()),
        _ => Value::Null,
    }
}

/// Whether the test can run: root with `ip`, and the reference plugins v1.10 built by `scripts/peers`
/// (a loud skip when Go >= 1.26 is missing).
fn prerequisites(test: &str) -> bool {
    if skip_unless_netns(test) {
        return false;
    }
    let Some(dir) = peers::dir(test) else {
        return false;
    };
    for p in ["bridge", "host-local", "static"] {
        assert!(
            dir.join(p).is_file(),
            "{} is missing from the peers: run scripts/peers",
            dir.join(p).display()
        );
    }
    true
}

/// The reference plugins v1.10 (`bridge`, `host-local`, `static`, ...), found by [`prerequisites`].
fn reference_dir() -> PathBuf {
    peers::dir("bridge_reference").expect("prerequisites found the peers")
}

/// CNI_PATH of both sides: plumb's binaries, then the reference plugins v1.10, so both delegate to the
/// same `host-local` and `static`.
fn cni_path() -> String {
    peers::cni_path("bridge_reference").expect("prerequisites found the peers")
}

fn compare(case: Case) {
    if !prerequisites(case.test) {
        return;
    }
    let _forwarding = ForwardingRestore::new();
    let mut sides = [
        Side::new(Impl::Reference, case.slot, case.pods),
        Side::new(Impl::Plumb, case.slot, case.pods),
    ];
    for s in &sides {
        (case.prepare)(s);
    }
    // The dns both report: the config's when it sets something, else the IPAM plugin's, else none.
    let want_dns = match config_dns(&case.fields) {
        Value::Null => case.ipam_dns.clone(),
        d => d,
    };
    let mut results = [Vec::new(), Vec::new()];
    for pod in 0..case.pods {
        let mut raws = Vec::new();
        for (i, s) in sides.iter_mut().enumerate() {
            let r = s.add(pod, &case.fields);
            let raw = read_raw(s, pod, &r);
            assert_self_consistent(s, pod, &raw);
            results[i].push(r);
            raws.push(raw);
        }
        let (mut rr, mut pr) = {
            let mut it = raws.into_iter();
            (it.next().expect("reference"), it.next().expect("plumb"))
        };
        for (who, raw) in [("reference", &rr), ("plumb", &pr)] {
            assert_eq!(
                raw.result.get("dns").unwrap_or(&Value::Null),
                &want_dns,
                "{who}: dns of the result"
            );
        }
        assert_allowed_differences(&mut rr, &mut pr);
        assert_same(
            &format!("{} pod {pod} after ADD", case.test),
            &flat(&sides[0], pod, &rr),
            &flat(&sides[1], pod, &pr),
        );
    }

    // CHECK with the ADD result as prevResult: both pass.
    for (i, s) in sides.iter().enumerate() {
        for (pod, result) in results[i].iter().enumerate() {
            let mut conf = s.conf(&case.fields);
            conf["prevResult"] = result.clone();
            let out = s.call("CHECK", pod, &conf);
            assert_eq!(
                out.exit,
                0,
                "{} CHECK failed: stdout={} stderr={}",
                s.name(),
                out.stdout,
                out.stderr
            );
        }
    }

    // DEL, then a second DEL: both succeed and leave the same state.
    for round in ["DEL", "second DEL"] {
        for s in &sides {
            for pod in 0..case.pods {
                let out = s.call("DEL", pod, &s.conf(&case.fields));
                assert_eq!(
                    out.exit,
                    0,
                    "{} {round} failed: stdout={} stderr={}",
                    s.name(),
                    out.stdout,
                    out.stderr
                );
            }
        }
        let mut after = Vec::new();
        for s in &sides {
            for pod in 0..case.pods {
                let veth = s.veths[pod].as_deref().expect("veth");
                assert!(
                    !link_exists(None, veth),
                    "{}: host veth {veth} left after {round}",
                    s.name()
                );
                assert!(
                    !link_exists(Some(&s.pods[pod]), IFNAME),
                    "{}: {IFNAME} left in the pod after {round}",
                    s.name()
                );
            }
            assert!(
                link_exists(None, &s.bridge),
                "{}: {round} removed the bridge",
                s.name()
            );
            assert!(
                s.reservations().is_empty(),
                "{}: host-local still holds {:?} after {round}",
                s.name(),
                s.reservations()
            );
            let mut m = BTreeMap::new();
            bridge_state(s).flat(&s.tokens(0), &mut m);
            after.push(m);
        }
        assert_same(
            &format!("{} after {round}", case.test),
            &after[0],
            &after[1],
        );
    }
}

/// Creates the bridge with `ip` before the plugin runs, with the given addresses (placeholders
/// filled in).
fn precreate_bridge(side: &Side, addresses: &[&str]) {
    run(&["ip", "link", "add", &side.bridge, "type", "bridge"]);
    for a in addresses {
        let a = a.replace("@V4", &side.v4).replace("@OLD4", &side.old4);
        run(&["ip", "addr", "add", &a, "dev", &side.bridge]);
    }
}

fn write_resolv_conf(side: &Side) {
    std::fs::write(
        side.data.path().join("resolv.conf"),
        "nameserver 10.96.0.10\nsearch svc.example example\noptions ndots:5\n",
    )
    .expect("write resolv.conf");
}

fn resolv_conf_dns() -> Value {
    json!({"nameservers": ["10.96.0.10"], "search": ["svc.example", "example"], "options": ["ndots:5"]})
}

#[test]
fn plain() {
    compare(Case::new(
        "plain",
        1,
        json!({"bridge": "@BR", "ipam": host_local()}),
    ));
}

#[test]
fn is_gateway() {
    compare(Case::new(
        "is_gateway",
        2,
        json!({"bridge": "@BR", "isGateway": true, "ipam": host_local()}),
    ));
}

#[test]
fn is_default_gateway() {
    compare(Case::new(
        "is_default_gateway",
        3,
        json!({"bridge": "@BR", "isDefaultGateway": true, "ipam": host_local()}),
    ));
}

#[test]
fn mtu_1400() {
    compare(Case::new(
        "mtu_1400",
        4,
        json!({"bridge": "@BR", "isGateway": true, "mtu": 1400, "ipam": host_local()}),
    ));
}

#[test]
fn hairpin_mode() {
    compare(Case::new(
        "hairpin_mode",
        5,
        json!({"bridge": "@BR", "hairpinMode": true, "ipam": host_local()}),
    ));
}

#[test]
fn promisc_mode() {
    compare(Case::new(
        "promisc_mode",
        6,
        json!({"bridge": "@BR", "promiscMode": true, "ipam": host_local()}),
    ));
}

/// The bridge already holds another address of the subnet: forceAddress replaces it.
#[test]
fn force_address_same_subnet() {
    let mut c = Case::new(
        "force_address_same_subnet",
        7,
        json!({"bridge": "@BR", "isGateway": true, "forceAddress": true, "ipam": host_local()}),
    );
    c.prepare = |s| precreate_bridge(s, &["@V4.99/24"]);
    compare(c);
}

/// The network moved to a new subnet: forceAddress replaces the bridge's old IPv4 address.
#[test]
fn force_address_other_subnet() {
    let mut c = Case::new(
        "force_address_other_subnet",
        8,
        json!({"bridge": "@BR", "isGateway": true, "forceAddress": true, "ipam": host_local()}),
    );
    c.prepare = |s| precreate_bridge(s, &["@OLD4.1/24"]);
    compare(c);
}

/// The bridge already holds exactly the gateway address: nothing to replace, no forceAddress needed.
#[test]
fn gateway_address_already_there() {
    let mut c = Case::new(
        "gateway_address_already_there",
        9,
        json!({"bridge": "@BR", "isGateway": true, "ipam": host_local()}),
    );
    c.prepare = |s| precreate_bridge(s, &["@V4.1/24"]);
    compare(c);
}

/// `dns` in the config wins over the IPAM plugin's.
#[test]
fn dns_given() {
    let mut c = Case::new(
        "dns_given",
        10,
        json!({"bridge": "@BR",
               "dns": {"nameservers": ["10.1.1.1", "fd00::53"], "domain": "pod.example",
                       "search": ["example"], "options": ["ndots:2"]},
               "ipam": {"type": "host-local", "ranges": [[{"subnet": "@V4.0/24"}]],
                        "dataDir": "@DATA", "resolvConf": "@DATA/resolv.conf"}}),
    );
    c.prepare = write_resolv_conf;
    compare(c);
}

/// No `dns` in the config, but the IPAM plugin reports some (an allowed difference, see above).
#[test]
fn dns_from_ipam() {
    let mut c = Case::new(
        "dns_from_ipam",
        11,
        json!({"bridge": "@BR",
               "ipam": {"type": "host-local", "ranges": [[{"subnet": "@V4.0/24"}]],
                        "dataDir": "@DATA", "resolvConf": "@DATA/resolv.conf"}}),
    );
    c.prepare = write_resolv_conf;
    c.ipam_dns = resolv_conf_dns();
    compare(c);
}

/// `"dns": {}` sets nothing: like no `dns` at all.
#[test]
fn empty_dns_object() {
    let mut c = Case::new(
        "empty_dns_object",
        12,
        json!({"bridge": "@BR", "dns": {},
               "ipam": {"type": "host-local", "ranges": [[{"subnet": "@V4.0/24"}]],
                        "dataDir": "@DATA", "resolvConf": "@DATA/resolv.conf"}}),
    );
    c.prepare = write_resolv_conf;
    c.ipam_dns = resolv_conf_dns();
    compare(c);
}

/// No `ipam` at all: layer 2 only. The reference accepts it (its README asks for `"ipam": {}`).
///
///
/// Both CHECK it without an IPAM plugin (v1.1.1 failed its own CHECK here: "no plugin name provided").
#[test]
fn layer2_without_ipam() {
    let c = Case::new("layer2_without_ipam", 13, json!({"bridge": "@BR"}));
    compare(c);
}

#[test]
fn layer2_empty_ipam() {
    let c = Case::new(
        "layer2_empty_ipam",
        14,
        json!({"bridge": "@BR", "ipam": {}}),
    );
    compare(c);
}

fn dual_stack() -> Value {
    json!({"type": "host-local", "dataDir": "@DATA",
           "ranges": [[{"subnet": "@V4.0/24"}], [{"subnet": "@V6::/64"}]],
           "routes": [{"dst": "198.18.0.0/24"}, {"dst": "fd99::/64"}]})
}

/// host-local gives both gateways, so the result's gateway-less routes go via them, and both CHECK
/// them so (v1.1.1 looked for them without the gateway and failed its own CHECK). Both switch on
/// `keep_addr_on_down` on the container interface for its IPv6 address.
#[test]
fn dual_stack_without_dad() {
    let c = Case::new(
        "dual_stack_without_dad",
        15,
        json!({"bridge": "@BR", "ipam": dual_stack()}),
    );
    compare(c);
}

#[test]
fn dual_stack_with_dad() {
    let c = Case::new(
        "dual_stack_with_dad",
        16,
        json!({"bridge": "@BR", "enabledad": true, "ipam": dual_stack()}),
    );
    compare(c);
}

/// A pod namespace whose defaults switch IPv6 off (`default` and `lo` `disable_ipv6=1`, as some
/// runtimes and hardened hosts have it): both switch it on for `lo` and the container interface before
/// adding the IPv6 address, and both attach dual stack.
#[test]
fn dual_stack_with_ipv6_off_in_the_pod() {
    let mut c = Case::new(
        "dual_stack_with_ipv6_off_in_the_pod",
        36,
        json!({"bridge": "@BR", "ipam": dual_stack()}),
    );
    c.prepare = |side| {
        for pod in &side.pods {
            for dev in ["default", "lo"] {
                let key = format!("net.ipv6.conf.{dev}.disable_ipv6");
                pod.exec(&["sysctl", "-q", "-w", &format!("{key}=1")]);
                assert_eq!(pod.exec(&["sysctl", "-n", &key]).trim(), "1", "{key}");
            }
        }
    };
    compare(c);
}

/// An IPAM result without a gateway and `isDefaultGateway`: the reference makes the subnet's first
/// address the gateway and puts it on the bridge, though the IPAM plugin may hand that very address to a
/// pod. plumb refuses (code 7, "set ipam.gateway") before touching the pod and leaves no bridge behind:
/// a deliberate difference (docs/bridge.md, "Where plumb differs from the reference").
#[test]
fn default_gateway_without_ipam_gateway() {
    let test = "default_gateway_without_ipam_gateway";
    if !prerequisites(test) {
        return;
    }
    let _forwarding = ForwardingRestore::new();
    let mut sides = [
        Side::new(Impl::Reference, 17, 1),
        Side::new(Impl::Plumb, 17, 1),
    ];
    let fields = json!({"bridge": "@BR", "isDefaultGateway": true,
           "ipam": {"type": "static", "addresses": [{"address": "@V4.7/24"}],
                    "routes": [{"dst": "198.18.0.0/24"}]}});
    let r = &mut sides[0];
    let result = r.add(0, &fields);
    assert_eq!(result["ips"][0]["gateway"], format!("{}.1", r.v4));
    let del = r.call("DEL", 0, &r.conf(&fields));
    assert_eq!(del.exit, 0, "{del:?}");

    let p = &sides[1];
    let out = p.call("ADD", 0, &p.conf(&fields));
    assert_plumb_refusal(
        &out,
        &[
            "isGateway needs a gateway from IPAM: set ipam.gateway",
            &format!("{}.7/24", p.v4),
        ],
    );
    assert!(
        !link_exists(None, &p.bridge),
        "plumb left the bridge it made"
    );
    assert!(pod_is_empty(&p.pods[0]));
    let del = p.call("DEL", 0, &p.conf(&fields));
    assert_eq!(del.exit, 0, "{del:?}");
}

/// No gateway anywhere: routes without a next hop go straight out of the interface.
#[test]
fn routes_without_any_gateway() {
    compare(Case::new(
        "routes_without_any_gateway",
        18,
        json!({"bridge": "@BR",
               "ipam": {"type": "static", "addresses": [{"address": "@V4.7/24"}],
                        "routes": [{"dst": "198.18.0.0/24"}, {"dst": "198.19.0.0/24", "gw": "@V4.254"}]}}),
    ));
}

/// Two pods on one gateway bridge: the second ADD finds the address there and the bridge MAC
/// pinned by the first.
#[test]
fn two_pods_on_a_gateway_bridge() {
    let mut c = Case::new(
        "two_pods_on_a_gateway_bridge",
        19,
        json!({"bridge": "@BR", "isGateway": true, "ipam": host_local()}),
    );
    c.pods = 2;
    compare(c);
}

// ---------------------------------------------------------------------------------------------------
// Errors

/// Asserts the reference's generic refusal: code 999 with a message containing `needle`.
fn assert_reference_refusal(out: &Outcome, needle: &str) -> String {
    let e = out.err(999);
    let msg = e["msg"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains(needle), "reference: {msg:?} lacks {needle:?}");
    msg
}

/// Asserts plumb's refusal: code 7 (invalid config) with a message containing every needle.
fn assert_plumb_refusal(out: &Outcome, needles: &[&str]) -> String {
    let e = out.err(7);
    let msg = e["msg"].as_str().unwrap_or_default().to_string();
    for n in needles {
        assert!(msg.contains(n), "plumb: {msg:?} lacks {n:?}");
    }
    msg
}

/// The IPv4 addresses of a host link (ADD brings a bridge up, which adds an IPv6 link-local one).
fn ipv4_addrs(name: &str) -> Value {
    ip_json(None, &["ip", "-4", "-j", "addr", "show", "dev", name])[0]["addr_info"].clone()
}

/// Only `lo` in the pod.
fn pod_is_empty(ns: &Netns) -> bool {
    let links = ip_json(Some(ns), &["ip", "-j", "link", "show"]);
    links
        .as_array()
        .is_some_and(|a| a.iter().all(|l| l["ifname"] == "lo"))
}

/// A name taken by a veth (not a bridge): both refuse before touching the pod; the veth is left
/// alone; DEL afterwards succeeds on both.
#[test]
fn bridge_name_taken_by_a_non_bridge() {
    let test = "bridge_name_taken_by_a_non_bridge";
    if !prerequisites(test) {
        return;
    }
    let sides = [
        Side::new(Impl::Reference, 30, 1),
        Side::new(Impl::Plumb, 30, 1),
    ];
    let fields = json!({"bridge": "@BR", "isGateway": true, "ipam": host_local()});
    for s in &sides {
        let peer = unique_name("rcpeer");
        let _peer = HostLink(peer.clone());
        run(&[
            "ip", "link", "add", &s.bridge, "type", "veth", "peer", "name", &peer,
        ]);
        let out = s.call("ADD", 0, &s.conf(&fields));
        match s.imp {
            // "failed to create bridge \"X\": \"X\" already exists but is not a bridge"
            Impl::Reference => {
                assert_reference_refusal(&out, "already exists but is not a bridge");
            }
            Impl::Plumb => {
                assert_plumb_refusal(&out, &["\"bridge\"", &s.bridge, "not a bridge"]);
            }
        }
        let l = link(None, &s.bridge);
        assert_eq!(l["linkinfo"]["info_kind"], "veth", "{}: {l}", s.name());
        assert!(l.get("master").is_none(), "{}: {l}", s.name());
        assert!(
            pod_is_empty(&s.pods[0]),
            "{}: the pod was touched",
            s.name()
        );
        assert!(s.reservations().is_empty(), "{}", s.name());
        let del = s.call("DEL", 0, &s.conf(&fields));
        assert_eq!(del.exit, 0, "{} DEL after the refusal: {del:?}", s.name());
    }
}

/// Booleans (and the MTU) given as strings: the reference refuses them all with Go's JSON error
/// (code 999); plumb with code 7 naming the field. Neither creates anything.
#[test]
fn string_booleans_and_numbers() {
    let test = "string_booleans_and_numbers";
    if !prerequisites(test) {
        return;
    }
    let sides = [
        Side::new(Impl::Reference, 31, 1),
        Side::new(Impl::Plumb, 31, 1),
    ];
    let fields = [
        ("isGateway", json!("true")),
        ("isDefaultGateway", json!("true")),
        ("forceAddress", json!("false")),
        ("ipMasq", json!("true")),
        ("hairpinMode", json!("true")),
        ("promiscMode", json!("true")),
        ("enabledad", json!("true")),
        ("mtu", json!("1400")),
    ];
    for (field, value) in fields {
        for s in &sides {
            let mut f = json!({"bridge": "@BR", "ipam": host_local()});
            f[field] = value.clone();
            let out = s.call("ADD", 0, &s.conf(&f));
            match s.imp {
                Impl::Reference => {
                    let msg = assert_reference_refusal(&out, "cannot unmarshal string");
                    assert!(
                        msg.contains(field),
                        "reference: {msg:?} does not name {field}"
                    );
                }
                Impl::Plumb => {
                    assert_plumb_refusal(&out, &[&format!("\"{field}\"")]);
                }
            }
            assert!(
                !link_exists(None, &s.bridge),
                "{}: bridge created despite {field}: {value}",
                s.name()
            );
            assert!(
                pod_is_empty(&s.pods[0]),
                "{}: the pod was touched",
                s.name()
            );
        }
    }
}

/// hairpinMode together with promiscMode: the reference refuses the combination (frames would be
/// delivered twice); plumb accepts it and sets both. A known, reported difference: every config the
/// reference accepts still behaves the same on plumb.
#[test]
fn hairpin_and_promisc_together() {
    let test = "hairpin_and_promisc_together";
    if !prerequisites(test) {
        return;
    }
    let mut sides = [
        Side::new(Impl::Reference, 32, 1),
        Side::new(Impl::Plumb, 32, 1),
    ];
    let fields =
        json!({"bridge": "@BR", "hairpinMode": true, "promiscMode": true, "ipam": host_local()});
    let r = &sides[0];
    let out = r.call("ADD", 0, &r.conf(&fields));
    assert_reference_refusal(
        &out,
        "cannot set hairpin mode and promiscuous mode at the same time",
    );
    assert!(
        !link_exists(None, &r.bridge),
        "reference created the bridge"
    );
    assert!(pod_is_empty(&r.pods[0]));

    let p = &mut sides[1];
    p.add(0, &fields);
    let veth = p.veths[0].clone().expect("veth");
    assert_eq!(
        link(None, &veth)["linkinfo"]["info_slave_data"]["hairpin"],
        true
    );
    let br = link(None, &p.bridge);
    assert!(
        br["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("PROMISC"))),
        "{br}"
    );
    let del = p.call("DEL", 0, &p.conf(&fields));
    assert_eq!(del.exit, 0, "{del:?}");
}

/// isGateway on a bridge that holds another IPv4 address (in the subnet, or in another one) and no
/// forceAddress: both refuse and leave the bridge's address alone, and both release the IP. The
/// reference v1.10 leaves the container interface behind (it has no rollback; the runtime's DEL
/// removes it); plumb undoes its veth.
#[test]
fn gateway_address_conflict_without_force() {
    let test = "gateway_address_conflict_without_force";
    if !prerequisites(test) {
        return;
    }
    for (slot, existing) in [(33u8, "@V4.99/24"), (34, "@OLD4.1/24")] {
        let _forwarding = ForwardingRestore::new();
        let sides = [
            Side::new(Impl::Reference, slot, 1),
            Side::new(Impl::Plumb, slot, 1),
        ];
        let fields = json!({"bridge": "@BR", "isGateway": true, "ipam": host_local()});
        for s in &sides {
            precreate_bridge(s, &[existing]);
            let before = normalize(&ipv4_addrs(&s.bridge), &s.tokens(0));
            let out = s.call("ADD", 0, &s.conf(&fields));
            match s.imp {
                Impl::Reference => {
                    assert_reference_refusal(&out, "already has an IP address different from");
                }
                Impl::Plumb => {
                    assert_plumb_refusal(&out, &[&s.bridge, "forceAddress"]);
                }
            }
            let after = normalize(&ipv4_addrs(&s.bridge), &s.tokens(0));
            assert_eq!(before, after, "{}: bridge addresses changed", s.name());
            assert!(
                after.to_string().contains(&existing.replace("/24", "\"")),
                "{}: {after}",
                s.name()
            );
            assert!(
                s.reservations().is_empty(),
                "{}: IP not released: {:?}",
                s.name(),
                s.reservations()
            );
            match s.imp {
                Impl::Reference => assert!(
                    link_exists(Some(&s.pods[0]), IFNAME),
                    "reference v1.10 was expected to leave {IFNAME} behind after the failed ADD"
                ),
                Impl::Plumb => assert!(
                    pod_is_empty(&s.pods[0]),
                    "plumb left something in the pod after the failed ADD"
                ),
            }
            let del = s.call("DEL", 0, &s.conf(&fields));
            assert_eq!(del.exit, 0, "{} DEL: {del:?}", s.name());
            assert!(pod_is_empty(&s.pods[0]), "{} after DEL", s.name());
        }
    }
}

/// CHECK notices what went missing since ADD, on both: a route of the result, then the address.
/// (Routes with an explicit `gw` and the default route, which the reference checks correctly.)
#[test]
fn check_detects_drift() {
    let test = "check_detects_drift";
    if !prerequisites(test) {
        return;
    }
    let _forwarding = ForwardingRestore::new();
    let mut sides = [
        Side::new(Impl::Reference, 35, 1),
        Side::new(Impl::Plumb, 35, 1),
    ];
    let fields = json!({"bridge": "@BR", "isDefaultGateway": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "@V4.0/24"}]], "dataDir": "@DATA",
                 "routes": [{"dst": "198.18.0.0/24", "gw": "@V4.254"}]}});
    for s in &mut sides {
        let result = s.add(0, &fields);
        let mut conf = s.conf(&fields);
        conf["prevResult"] = result.clone();
        let check = |s: &Side| s.call("CHECK", 0, &conf);
        assert_eq!(check(s).exit, 0, "{} CHECK: {:?}", s.name(), check(s));
        let ns = &s.pods[0];

        ns.exec(&["ip", "route", "del", "198.18.0.0/24"]);
        let out = check(s);
        match s.imp {
            Impl::Reference => {
                assert_reference_refusal(&out, "not found in routing table");
            }
            Impl::Plumb => {
                let e = out.err(102);
                assert!(
                    e["msg"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("198.18.0.0/24"),
                    "{e}"
                );
            }
        }
        ns.exec(&[
            "ip",
            "route",
            "add",
            "198.18.0.0/24",
            "via",
            &format!("{}.254", s.v4),
        ]);
        assert_eq!(
            check(s).exit,
            0,
            "{} CHECK after repair: {:?}",
            s.name(),
            check(s)
        );

        ns.exec(&["ip", "route", "del", "default"]);
        let out = check(s);
        match s.imp {
            Impl::Reference => {
                assert_reference_refusal(&out, "not found in routing table");
            }
            Impl::Plumb => {
                let e = out.err(102);
                assert!(
                    e["msg"].as_str().unwrap_or_default().contains("0.0.0.0/0"),
                    "{e}"
                );
            }
        }
        ns.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("{}.1", s.v4),
        ]);
        assert_eq!(
            check(s).exit,
            0,
            "{} CHECK after repair: {:?}",
            s.name(),
            check(s)
        );

        let addr = result["ips"][0]["address"]
            .as_str()
            .expect("address")
            .to_string();
        ns.exec(&["ip", "addr", "del", &addr, "dev", IFNAME]);
        let out = check(s);
        assert_ne!(out.exit, 0, "{} CHECK passed without {addr}", s.name());
        let msg = out.json()["msg"].as_str().unwrap_or_default().to_string();
        match s.imp {
            Impl::Reference => assert_eq!(out.json()["code"], 999, "{msg}"),
            Impl::Plumb => {
                assert_eq!(out.json()["code"], 102, "{msg}");
                assert!(msg.contains(&addr), "{msg}");
            }
        }
        let del = s.call("DEL", 0, &s.conf(&fields));
        assert_eq!(del.exit, 0, "{} DEL: {del:?}", s.name());
    }
}
