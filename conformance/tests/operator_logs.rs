//! What an operator sees, black-box: the built binaries' log lines (one JSON line per CNI command, in
//! the file `logFile`/`PLUMB_LOG_FILE` names or on stderr), the failed rollback and DEL steps on an
//! error's line, concurrent appenders, rotation at 10 MiB, the log settings' errors (never failing a
//! DEL), and `--help`/`--version`/the about line of every binary.
//!
//! The plumb-bridge tests run the plugin in a node namespace of their own (as on that node) with a pod
//! namespace beside it; the others use plumb-ipam on the file store in a temp dir.

use conformance::netns::Netns;
use conformance::plugin::{Call, Outcome};
use conformance::skip::skip_unless_netns;
use conformance::{plumb_bin, unique_name, TempDir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The rotation bound (plumb_cni::log::MAX_BYTES).
const MAX_BYTES: usize = 10 * 1024 * 1024;

const BINARIES: [&str; 5] = [
    "plumb-bridge",
    "plumb-macspoofchk",
    "plumb-vxlan",
    "plumb-ipam",
    "plumb-ipam-kube",
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Every line of a log file, parsed; panics on a line that is not one JSON object.
fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    parse_lines(&text)
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l:?}"));
            assert!(v.is_object(), "log line is not an object: {l}");
            v
        })
        .collect()
}

/// The command lines (not debug lines) of `binary`.
fn command_lines<'a>(all: &'a [Value], binary: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|l| l["binary"] == binary && l.get("outcome").is_some())
        .collect()
}

/// Asserts the fields every command line has.
fn assert_command_line(l: &Value, command: &str, cid: &str, netns: &str, network: &str) {
    let time = l["time"].as_str().expect("time");
    // RFC 3339 UTC to the millisecond: 2026-11-30T14:00:05.123Z
    assert!(
        time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T" && &time[19..20] == ".",
        "{l}"
    );
    assert_eq!(l["command"], command, "{l}");
    assert_eq!(l["containerID"], cid, "{l}");
    assert_eq!(l["ifname"], "eth0", "{l}");
    assert_eq!(l["netns"], netns, "{l}");
    assert_eq!(l["network"], network, "{l}");
    assert!(l["durationMs"].as_f64().is_some_and(|d| d >= 0.0), "{l}");
    assert!(l["pid"].as_u64().is_some(), "{l}");
}

/// A plumb-ipam network on the file store under `dir`, with `extra` top-level fields.
fn ipam_conf(dir: &Path, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.1.0",
        "name": "logs-net",
        "type": "plumb-ipam",
        "ipam": {"type": "plumb-ipam", "range": "10.77.0.0/16", "dataDir": dir.join("data")},
    });
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

fn ipam(call: &Call) -> Outcome {
    call.run(&plumb_bin("plumb-ipam"))
}

/// A node namespace with a bridge network and an IPAM store of its own.
struct Node {
    ns: Netns,
    dir: TempDir,
    bridge: String,
    net: String,
}

impl Node {
    fn new() -> Node {
        let ns = Netns::new("lgnode");
        Node {
            ns,
            dir: TempDir::new("lgnode"),
            bridge: unique_name("lgbr"),
            net: unique_name("lgnet"),
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log/plumb.log")
    }

    fn conf(&self, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0",
            "name": self.net,
            "type": "plumb-bridge",
            "bridge": self.bridge,
            "logLevel": "info",
            "logFile": self.log(),
            "ipam": {"type": "plumb-ipam", "range": "10.78.0.0/24", "dataDir": self.dir.path().join("data")},
        });
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    }

    fn bridge(&self, call: &Call) -> Outcome {
        call.run_in(&plumb_bin("plumb-bridge"), &self.ns.name)
    }
}

// ---------------------------------------------------------------------------------------------
// One line per command
// ---------------------------------------------------------------------------------------------

#[test]
fn every_command_writes_one_line_with_the_attachment_and_outcome() {
    if skip_unless_netns("every_command_writes_one_line_with_the_attachment_and_outcome") {
        return;
    }
    let node = Node::new();
    let pod = Netns::new("lgpod");
    let conf = node.conf(json!({}));
    let cid = unique_name("cid");
    let call = |cmd: &str, conf: &Value| {
        Call::new(cmd, &cid, &pod.path(), "eth0", conf)
            .env("CNI_ARGS", "K8S_POD_NAMESPACE=tenant-a;K8S_POD_NAME=web-0")
    };
    let added = node.bridge(&call("ADD", &conf)).ok();
    // stdout stays the CNI result alone.
    assert!(added["ips"][0]["address"].is_string(), "{added}");
    let mut checked = conf.clone();
    checked["prevResult"] = added;
    node.bridge(&call("CHECK", &checked)).ok();
    node.bridge(&call("STATUS", &conf)).ok();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": cid, "ifname": "eth0"}]);
    node.bridge(&call("GC", &gc)).ok();
    let version = node.bridge(&call("VERSION", &conf)).ok();
    assert_eq!(version["cniVersion"], "1.1.0");
    node.bridge(&call("DEL", &conf)).ok();

    let all = lines(&node.log());
    let mine = command_lines(&all, "plumb-bridge");
    let commands: Vec<&str> = mine
        .iter()
        .map(|l| l["command"].as_str().unwrap())
        .collect();
    assert_eq!(
        commands,
        ["ADD", "CHECK", "STATUS", "GC", "VERSION", "DEL"],
        "{all:#?}"
    );
    for l in &mine {
        assert_command_line(
            l,
            l["command"].as_str().unwrap(),
            &cid,
            &pod.path(),
            &node.net,
        );
        assert_eq!(
            (&l["level"], &l["outcome"]),
            (&json!("info"), &json!("ok")),
            "{l}"
        );
        assert_eq!(
            (&l["podNamespace"], &l["podName"]),
            (&json!("tenant-a"), &json!("web-0"))
        );
        assert!(
            l.get("code").is_none() && l.get("failedSteps").is_none(),
            "{l}"
        );
    }
    // The delegated plumb-ipam reads the same top-level settings: its own lines are there too.
    let ipam_cmds: Vec<&str> = command_lines(&all, "plumb-ipam")
        .iter()
        .map(|l| l["command"].as_str().unwrap())
        .collect();
    for c in ["ADD", "CHECK", "STATUS", "GC", "DEL"] {
        assert!(
            ipam_cmds.contains(&c),
            "no plumb-ipam {c} line: {ipam_cmds:?}"
        );
    }
    // info writes no debug lines.
    assert!(all.iter().all(|l| l["level"] != "debug"), "{all:#?}");
}

#[test]
fn an_error_line_names_the_code_the_message_and_every_failed_step() {
    if skip_unless_netns("an_error_line_names_the_code_the_message_and_every_failed_step") {
        return;
    }
    let node = Node::new();
    let pod = Netns::new("lgpod");
    let conf = node.conf(json!({"logLevel": "error", "macspoofchk": true}));
    let cid = unique_name("cid");
    let call = |cmd: &str| Call::new(cmd, &cid, &pod.path(), "eth0", &conf);

    // ADD fails after the bridge port; undoing the host veth fails too: both are on the line.
    let out = node.bridge(&call("ADD").env("PLUMB_FAILPOINT", "port,rollback-host veth"));
    let e = out.err(199);
    let all = lines(&node.log());
    let mine = command_lines(&all, "plumb-bridge");
    assert_eq!(mine.len(), 1, "{all:#?}");
    let l = mine[0];
    assert_command_line(l, "ADD", &cid, &pod.path(), &node.net);
    assert_eq!(
        (&l["level"], &l["outcome"], &l["code"]),
        (&json!("error"), &json!("error"), &json!(199))
    );
    assert_eq!(l["msg"], e["msg"]);
    assert!(
        l["msg"].as_str().unwrap().contains("after step \"port\""),
        "{l}"
    );
    assert_eq!(
        l["failedSteps"],
        json!(["rollback host veth: injected failure after step \"rollback-host veth\" (PLUMB_FAILPOINT)"]),
        "{l}"
    );
    // The veth was left by the failed rollback; DEL removes it, and at level error a DEL that
    // succeeds writes nothing.
    node.bridge(&call("DEL")).ok();
    assert_eq!(command_lines(&lines(&node.log()), "plumb-bridge").len(), 1);

    // A best-effort DEL step that fails is named the same way.
    node.bridge(&call("ADD")).ok();
    let out = node.bridge(&call("DEL").env("PLUMB_FAILPOINT", "del-spoofcheck"));
    out.err(199);
    let all = lines(&node.log());
    let del = command_lines(&all, "plumb-bridge")
        .pop()
        .expect("DEL line")
        .clone();
    assert_eq!(
        (&del["command"], &del["code"]),
        (&json!("DEL"), &json!(199)),
        "{del}"
    );
    assert!(del["msg"].as_str().unwrap().contains("1 failed"), "{del}");
    assert_eq!(
        del["failedSteps"],
        json!(["DEL spoofcheck: injected failure after step \"del-spoofcheck\" (PLUMB_FAILPOINT)"])
    );
    node.bridge(&call("DEL")).ok();
}

#[test]
fn debug_shows_the_plan_and_each_netlink_and_nftables_request() {
    if skip_unless_netns("debug_shows_the_plan_and_each_netlink_and_nftables_request") {
        return;
    }
    let node = Node::new();
    let pod = Netns::new("lgpod");
    let conf = node.conf(json!({"logLevel": "debug", "macspoofchk": true}));
    let cid = unique_name("cid");
    let call = |cmd: &str| Call::new(cmd, &cid, &pod.path(), "eth0", &conf);
    node.bridge(&call("ADD")).ok();
    node.bridge(&call("DEL")).ok();
    let all = lines(&node.log());
    let debug: Vec<&str> = all
        .iter()
        .filter(|l| l["level"] == "debug" && l["binary"] == "plumb-bridge")
        .map(|l| l["msg"].as_str().unwrap())
        .collect();
    assert!(
        debug.iter().any(|m| m.starts_with("plan: BridgeConfig")),
        "{debug:#?}"
    );
    assert!(
        debug.iter().any(|m| m.starts_with("netlink request: ")),
        "{debug:#?}"
    );
    assert!(
        debug
            .iter()
            .any(|m| m.starts_with("nftables transaction: ")),
        "{debug:#?}"
    );
    // Debug lines carry the attachment so they can be grepped with their command line.
    for l in all.iter().filter(|l| l["level"] == "debug") {
        assert_eq!(
            (&l["containerID"], &l["ifname"]),
            (&json!(cid), &json!("eth0")),
            "{l}"
        );
    }
    assert!(debug.len() > 10, "{debug:#?}");
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

#[test]
fn the_environment_wins_over_the_config() {
    let dir = TempDir::new("lgenv");
    let (in_conf, in_env) = (dir.path().join("conf.log"), dir.path().join("env.log"));
    let conf = ipam_conf(dir.path(), json!({"logLevel": "error", "logFile": in_conf}));
    let call = Call::new("ADD", "c1", "/run/netns/none", "eth0", &conf)
        .env("PLUMB_LOG_LEVEL", "info")
        .env("PLUMB_LOG_FILE", in_env.to_str().unwrap());
    ipam(&call).ok();
    assert!(!in_conf.exists(), "the config's file was written");
    let got = lines(&in_env);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_command_line(&got[0], "ADD", "c1", "/run/netns/none", "logs-net");
    // Inside "ipam", whereabouts' spellings work, and win over the top level.
    let ipam_file = dir.path().join("ipam.log");
    let mut conf = ipam_conf(dir.path(), json!({"logLevel": "error", "logFile": in_conf}));
    conf["ipam"]["log_level"] = json!("info");
    conf["ipam"]["log_file"] = json!(ipam_file);
    ipam(&Call::new("DEL", "c1", "/run/netns/none", "eth0", &conf)).ok();
    assert!(!in_conf.exists());
    assert_eq!(lines(&ipam_file)[0]["command"], "DEL");
}

#[test]
fn by_default_only_errors_are_logged_and_on_stderr() {
    let dir = TempDir::new("lgdef");
    let conf = ipam_conf(dir.path(), json!({}));
    let out = ipam(&Call::new("ADD", "c1", "/run/netns/none", "eth0", &conf));
    out.ok();
    assert_eq!(out.stderr, "", "a success writes nothing by default");
    let out = ipam(&Call::new("ADD", "c1/x", "/run/netns/none", "eth0", &conf));
    let e = out.err(4);
    let got = parse_lines(&out.stderr);
    assert_eq!(got.len(), 1, "{}", out.stderr);
    assert_eq!(
        (&got[0]["level"], &got[0]["code"], &got[0]["msg"]),
        (&json!("error"), &json!(4), &e["msg"])
    );
    // stdout is the CNI error alone.
    assert_eq!(out.stdout.lines().count(), 1);
}

#[test]
fn a_bad_log_setting_fails_add_with_code_7_but_never_del() {
    let dir = TempDir::new("lgbad");
    let conf = ipam_conf(dir.path(), json!({"logLevel": "loud"}));
    let e = ipam(&Call::new("ADD", "c1", "/run/netns/none", "eth0", &conf)).err(7);
    assert_eq!(
        e["msg"],
        "field \"logLevel\": \"loud\" is not a log level; use \"error\", \"info\" or \"debug\""
    );
    assert!(conformance::ipam_records(&dir.path().join("data"), &["ip-"]).is_empty());
    let mut bad = ipam_conf(dir.path(), json!({}));
    bad["ipam"]["log_file"] = json!("relative.log");
    let e = ipam(&Call::new("ADD", "c1", "/run/netns/none", "eth0", &bad)).err(7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .starts_with("field \"ipam.log_file\": \"relative.log\" is not an absolute file path"),
        "{e}"
    );
    let e = ipam(
        &Call::new(
            "ADD",
            "c1",
            "/run/netns/none",
            "eth0",
            &ipam_conf(dir.path(), json!({})),
        )
        .env("PLUMB_LOG_LEVEL", "chatty"),
    )
    .err(7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .starts_with("environment variable PLUMB_LOG_LEVEL"),
        "{e}"
    );

    // DEL of a real attachment with the bad level: released, and success.
    let good = ipam_conf(dir.path(), json!({}));
    ipam(&Call::new("ADD", "c2", "/run/netns/none", "eth0", &good)).ok();
    assert_eq!(
        conformance::ipam_records(&dir.path().join("data"), &["ip-"]).len(),
        1
    );
    let out = ipam(&Call::new("DEL", "c2", "/run/netns/none", "eth0", &conf));
    assert_eq!(out.ok(), Value::Null);
    assert!(conformance::ipam_records(&dir.path().join("data"), &["ip-"]).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The file: concurrent appenders, rotation
// ---------------------------------------------------------------------------------------------

#[test]
fn concurrent_processes_append_whole_lines() {
    const WORKERS: usize = 16;
    const ROUNDS: usize = 15;
    let dir = TempDir::new("lgconc");
    let log = dir.path().join("shared.log");
    let conf = ipam_conf(dir.path(), json!({"logLevel": "debug", "logFile": log}));
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let conf = &conf;
            s.spawn(move || {
                for r in 0..ROUNDS {
                    let cid = format!("w{w}r{r}");
                    for cmd in ["ADD", "DEL"] {
                        ipam(&Call::new(cmd, &cid, "/run/netns/none", "eth0", conf)).ok();
                    }
                }
            });
        }
    });
    let text = std::fs::read_to_string(&log).expect("log");
    let all = parse_lines(&text); // panics on any torn or interleaved line
    assert!(text.ends_with('\n'));
    let commands = command_lines(&all, "plumb-ipam");
    assert_eq!(commands.len(), WORKERS * ROUNDS * 2);
    // Each ADD and DEL of each attachment is there exactly once.
    let mut seen: Vec<String> = commands
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["containerID"].as_str().unwrap(),
                l["command"].as_str().unwrap()
            )
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), WORKERS * ROUNDS * 2);
    assert!(all.len() > commands.len(), "debug lines are there too");
}

#[test]
fn a_full_file_is_rotated_once_to_dot_1() {
    let dir = TempDir::new("lgrot");
    let log = dir.path().join("rot.log");
    let old = dir.path().join("rot.log.1");
    std::fs::write(&old, "the previous rotation\n").unwrap();
    let filler = "{\"filler\":true}\n".repeat(MAX_BYTES / 16 + 1);
    std::fs::write(&log, &filler).unwrap();
    let conf = ipam_conf(dir.path(), json!({"logLevel": "info", "logFile": log}));
    // Eight processes find the file full at once: one rotates, all write to the new file.
    std::thread::scope(|s| {
        for i in 0..8 {
            let conf = &conf;
            s.spawn(move || {
                ipam(&Call::new(
                    "ADD",
                    &format!("rot{i}"),
                    "/run/netns/none",
                    "eth0",
                    conf,
                ))
                .ok();
            });
        }
    });
    assert_eq!(
        std::fs::read_to_string(&old).unwrap(),
        filler,
        "the full file became .1, replacing the old one"
    );
    let now = lines(&log);
    assert_eq!(now.len(), 8, "{now:#?}");
    assert!(now.iter().all(|l| l["command"] == "ADD"));
    assert!(dir.path().join("rot.log.lock").exists());
}

// ---------------------------------------------------------------------------------------------
// Run by a person
// ---------------------------------------------------------------------------------------------

/// Runs `binary` with `args`, an empty environment and stdin closed.
fn by_person(binary: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(plumb_bin(binary))
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_binary_answers_help_version_and_a_bare_run() {
    let versions = "0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0";
    for b in BINARIES {
        let (rc, out, err) = by_person(b, &["--help"]);
        assert_eq!((rc, err.as_str()), (0, ""), "{b} --help");
        for part in [
            b,
            "Config reference: docs/",
            "README.md",
            "logLevel",
            "logFile",
            "PLUMB_LOG_LEVEL",
            "PLUMB_LOG_FILE",
            "--version",
        ] {
            assert!(out.contains(part), "{b} --help lacks {part:?}: {out}");
        }
        let (rc, out, _) = by_person(b, &["--version"]);
        assert_eq!(rc, 0, "{b} --version");
        let mut l = out.lines();
        assert_eq!(l.next(), Some(format!("{b} 0.1.0").as_str()), "{out}");
        let commit = l
            .next()
            .and_then(|c| c.strip_prefix("commit: "))
            .expect("commit line");
        assert!(
            commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{out}"
        );
        assert_eq!(l.next(), Some(format!("CNI versions: {versions}").as_str()));
        let (rc, out, err) = by_person(b, &[]);
        assert_eq!((rc, out.as_str()), (0, ""), "{b} bare");
        assert_eq!(
            err.trim_end(),
            format!("{b} v0.1.0 (commit {commit}) CNI protocol versions supported: {versions}")
        );
    }
    for b in ["plumb-bridge", "plumb-vxlan", "plumb-macspoofchk"] {
        let (rc, out, err) = by_person(b, &["--bogus"]);
        assert_eq!((rc, out.as_str()), (2, ""), "{b}");
        assert!(
            err.contains("unknown argument \"--bogus\"") && err.contains("--help"),
            "{err}"
        );
    }
    // plumb-ipam's help lists its admin commands, which keep working.
    let (_, help, _) = by_person("plumb-ipam", &["--help"]);
    for cmd in ["list", "usage", "release", "reconcile", "nodes", "crd"] {
        assert!(help.contains(&format!("plumb-ipam {cmd}")), "{cmd}: {help}");
    }
    let dir = TempDir::new("lgadm");
    let (rc, out, err) = by_person(
        "plumb-ipam",
        &["usage", "--data-dir", dir.path().to_str().unwrap()],
    );
    assert_eq!(rc, 0, "{err}");
    assert!(out.starts_with("SPACE"), "{out}");
}

#[test]
fn a_runtime_that_forgets_cni_command_still_gets_a_cni_error() {
    let dir = TempDir::new("lgnocmd");
    let conf = ipam_conf(dir.path(), json!({}));
    for b in ["plumb-bridge", "plumb-ipam"] {
        let out = Call::new("ADD", "c1", "/run/netns/none", "eth0", &conf)
            .without("CNI_COMMAND")
            .run(&plumb_bin(b));
        let e = out.err(4);
        assert!(
            e["msg"].as_str().unwrap().contains("CNI_COMMAND"),
            "{b}: {e}"
        );
    }
}
