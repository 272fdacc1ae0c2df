//! The spec layer under hostile input and failure (issue 9), through the built binaries: delegated
//! plugins die with a killed caller, every command has a hard deadline that frees its locks, names
//! outside the spec's charset are refused (and their DEL does nothing), lock files do not pile up, and
//! the `plumb_masq` table goes with its last chain.
//!
//! Tests that only run plugins for STATUS or on the file store need no root; the others build a private
//! "node" namespace (like bridge_netns) and skip loudly without root.

use conformance::netns::Netns;
use conformance::plugin::{Call, Outcome};
use conformance::result::first_address;
use conformance::skip::{skip_unless_netns, unavailable};
use conformance::{bin_dir, plumb_bin, unique_name, TempDir};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOCK_DIR: &str = "/run/plumb/locks";

// ---------------------------------------------------------------------------------------------------
// Fixtures

/// Writes an executable shell script `name` into `dir`.
fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A fake IPAM plugin that records its pid and the deadline it was given, then hangs.
fn hanging_ipam(dir: &Path) -> &'static str {
    let d = dir.display();
    script(
        dir,
        "hang-ipam",
        &format!(
            "cat >/dev/null\necho $$ > {d}/pid\necho \"${{PLUMB_DEADLINE_SECONDS:-unset}}\" > {d}/deadline\nexec sleep 60"
        ),
    );
    "hang-ipam"
}

/// Waits (up to 5 s) for `file` to hold a pid, and returns it.
fn read_pid(file: &Path) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} never got a pid",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `(state, ppid)` of a process, from /proc/<pid>/stat; `None` when it is gone.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether a process is running (a zombie waiting to be reaped is not).
fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// Waits up to `limit` for `pid` to be gone; returns how long it took, or panics.
fn gone_within(pid: i32, limit: Duration, what: &str) -> Duration {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > limit {
            // SAFETY: kill on a pid this test observed; it only sends a signal.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{what} (pid {pid}) still runs {limit:?} after its caller died");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// Pids whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Starts `binary` for `call` with stdin written and closed (the runtime's way).
fn start(binary: &Path, call: &Call, netns: Option<&str>) -> Child {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let mut child = cmd
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(call.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(&call.stdin);
    child
}

fn finish(child: Child) -> Outcome {
    let out = child.wait_with_output().expect("wait");
    Outcome {
        exit: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A STATUS call (no attachment, no netns, no lock) of `conf` with `CNI_PATH`.
fn status_call(conf: &Value, cni_path: &Path) -> Call {
    Call::new("STATUS", "", "", "", conf)
        .without("CNI_CONTAINERID")
        .without("CNI_NETNS")
        .without("CNI_IFNAME")
        .env("CNI_PATH", &cni_path.display().to_string())
}

/// Whether an exclusive lock on `path` can be had at once (released again right away).
fn lock_is_free(path: &Path) -> bool {
    plumb_cni::lock::lock_exclusive(path, Duration::from_millis(1)).is_ok()
}

/// A private node namespace for plumb-bridge, with unique bridges and subnets.
struct Node {
    ns: Netns,
}

impl Node {
    fn new() -> Node {
        Node {
            ns: Netns::new("psn"),
        }
    }

    fn bridge_conf(&self, bridge: &str, ipam: Value, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": format!("hostile-{bridge}"),
            "type": "plumb-bridge",
            "bridge": bridge,
            "ipam": ipam,
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn run(&self, binary: &str, call: &Call) -> Outcome {
        finish(start(&plumb_bin(binary), call, Some(&self.ns.name)))
    }

    fn has_link(&self, name: &str) -> bool {
        self.ns.try_exec(&["ip", "link", "show", name])
    }
}

/// A pod: a namespace and a container ID.
struct Pod {
    ns: Netns,
    cid: String,
}

impl Pod {
    fn new() -> Pod {
        let ns = Netns::new("psp");
        Pod {
            cid: format!("sh-{}", ns.name),
            ns,
        }
    }

    fn call(&self, command: &str, conf: &Value) -> Call {
        Call::new(command, &self.cid, &self.ns.path(), "eth0", conf)
    }
}

fn file_ipam(data: &Path, subnet: &str) -> Value {
    json!({"type": "plumb-ipam", "range": subnet, "dataDir": data})
}

fn bridge_lock(bridge: &str) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("bridge-{bridge}"))
}

// ---------------------------------------------------------------------------------------------------
// 1. Delegated children die with their caller

#[test]
fn a_delegated_plugin_dies_when_its_caller_is_killed() {
    let dir = TempDir::new("shk");
    let ipam = hanging_ipam(dir.path());
    let conf = json!({"cniVersion": "1.1.0", "name": "hostile", "type": "plumb-bridge",
                      "bridge": "shk0", "ipam": {"type": ipam}});
    let mut caller = start(
        &plumb_bin("plumb-bridge"),
        &status_call(&conf, dir.path()),
        None,
    );
    let child = read_pid(&dir.path().join("pid"));
    assert!(alive(child));
    caller.kill().unwrap();
    caller.wait().unwrap();
    let took = gone_within(child, Duration::from_secs(1), "the delegated IPAM plugin");
    eprintln!("delegated plugin gone {took:?} after its caller was killed");
}

#[test]
fn a_plumb_ipam_child_holding_the_pool_lock_dies_with_a_killed_bridge() {
    let test = "a_plumb_ipam_child_holding_the_pool_lock_dies_with_a_killed_bridge";
    if skip_unless_netns(test) {
        return;
    }
    let node = Node::new();
    // An API server that accepts connections and never answers, inside the node namespace: the
    // Kubernetes store's ADD then waits for it while holding the node's pool lock.
    let port = silent_listener_in(&node.ns);
    let data = TempDir::new("shkd");
    let kubeconfig = data.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        json!({"apiVersion": "v1", "kind": "Config",
               "clusters": [{"name": "c", "cluster": {"server": format!("http://127.0.0.1:{port}")}}],
               "users": [{"name": "u", "user": {"token": "t"}}],
               "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
               "current-context": "x"})
        .to_string(),
    )
    .unwrap();
    let bridge = unique_name("shb");
    let kube_ipam = json!({"type": "plumb-ipam", "range": "10.251.7.0/24", "dataDir": data.path(),
        "kubernetes": {"kubeconfig": kubeconfig, "nodeName": "n1", "timeoutSeconds": 300}});
    let conf = node.bridge_conf(&bridge, kube_ipam, json!({}));
    let pod = Pod::new();
    let mut caller = start(
        &plumb_bin("plumb-bridge"),
        &pod.call("ADD", &conf),
        Some(&node.ns.name),
    );
    let caller_pid = caller.id() as i32;
    // Wait until the IPAM child holds the pool lock.
    let start_wait = Instant::now();
    let (lock, ipam_pid) = loop {
        let lock = std::fs::read_dir(data.path())
            .unwrap()
            .flatten()
            .map(|e| e.path().join(".lock"))
            .find(|p| p.exists());
        let kids = children_of(caller_pid);
        if let (Some(lock), [pid]) = (lock, kids.as_slice()) {
            if !lock_is_free(&lock) {
                break (lock, *pid);
            }
        }
        if start_wait.elapsed() > Duration::from_secs(10) {
            let _ = caller.kill();
            panic!("{}", finish(caller).stderr);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    caller.kill().unwrap();
    caller.wait().unwrap();
    gone_within(ipam_pid, Duration::from_secs(1), "plumb-ipam(-kube)");
    // A killed multi-threaded process shows as a zombie while its other threads still exit, and the
    // lock goes with the last of them: allow that moment, but no more than the same second.
    let freed = Instant::now();
    while !lock_is_free(&lock) {
        assert!(
            freed.elapsed() < Duration::from_secs(1),
            "the pool lock is still held 1 s after plumb-ipam(-kube) was gone"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The pool is usable at once: another ADD on it (file store, same data dir and network) succeeds.
    let other = json!({"cniVersion": "1.0.0", "name": conf["name"], "type": "plumb-ipam",
                       "ipam": file_ipam(data.path(), "10.251.7.0/24")});
    let t = Instant::now();
    let r = Call::new("ADD", "other", "/unused", "eth0", &other)
        .run(&plumb_bin("plumb-ipam"))
        .ok();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(first_address(&r), "10.251.7.1", "{r}");
    let _ = std::fs::remove_file(bridge_lock(&bridge));
}

/// Binds 127.0.0.1:0 inside `ns` and accepts connections forever without answering; returns the port.
fn silent_listener_in(ns: &Netns) -> u16 {
    let path = ns.path();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: switches only this helper thread into the test's namespace; `f` is open.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    rx.recv().unwrap()
}

// ---------------------------------------------------------------------------------------------------
// 2. The hard deadline

#[test]
fn past_its_deadline_a_plugin_answers_code_11_and_stops_with_its_children() {
    let dir = TempDir::new("shd");
    let ipam = hanging_ipam(dir.path());
    let conf = json!({"cniVersion": "1.1.0", "name": "hostile", "type": "plumb-bridge",
                      "bridge": "shd0", "ipam": {"type": ipam}});
    let call = status_call(&conf, dir.path()).env("PLUMB_DEADLINE_SECONDS", "1");
    let t = Instant::now();
    let caller = start(&plumb_bin("plumb-bridge"), &call, None);
    let child = read_pid(&dir.path().join("pid"));
    let out = finish(caller);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let e = out.err(11);
    assert_eq!(e["cniVersion"], "1.1.0");
    let msg = e["msg"].as_str().unwrap();
    for part in [
        "plumb-bridge STATUS ran past its bound of 1 s (PLUMB_DEADLINE_SECONDS)",
        "released its locks",
        "retry",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg:?}");
    }
    assert!(out.stderr.contains("bound of 1 s"), "{}", out.stderr);
    gone_within(child, Duration::from_secs(1), "the hanging IPAM plugin");
    // The delegate was given less time than its caller had.
    let given: f64 = std::fs::read_to_string(dir.path().join("deadline"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(given > 0.0 && given < 1.0, "{given}");
}

#[test]
fn a_delegate_past_its_shorter_deadline_lets_the_caller_undo_and_answer() {
    let test = "a_delegate_past_its_shorter_deadline_lets_the_caller_undo_and_answer";
    if skip_unless_netns(test) {
        return;
    }
    let node = Node::new();
    let data = TempDir::new("shdd");
    let bridge = unique_name("shd");
    let conf = node.bridge_conf(&bridge, file_ipam(data.path(), "10.251.8.0/24"), json!({}));
    // The test holds the pool lock, so plumb-ipam waits for it (lockTimeoutSeconds 30) past its bound.
    let space = data.path().join(plumb_ipam::config::DEFAULT_SPACE);
    std::fs::create_dir_all(&space).unwrap();
    let held =
        plumb_cni::lock::lock_exclusive(&space.join(".lock"), Duration::from_secs(1)).unwrap();
    let pod = Pod::new();
    let t = Instant::now();
    let out = node.run(
        "plumb-bridge",
        &pod.call("ADD", &conf).env("PLUMB_DEADLINE_SECONDS", "4"),
    );
    let took = t.elapsed();
    drop(held);
    // plumb-ipam's bound (about 2 s) passed first; plumb-bridge undid its steps and passed the error on.
    assert!(took < Duration::from_millis(3800), "{took:?}");
    let e = out.err(11);
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("plumb-ipam ADD ran past its bound of"),
        "{msg}"
    );
    let veths = node.ns.exec(&["ip", "-o", "link", "show", "type", "veth"]);
    assert_eq!(veths.trim(), "", "the host veth was left behind");
    assert!(!pod.ns.try_exec(&["ip", "link", "show", "eth0"]));
    assert!(
        conformance::ipam_records(data.path(), &["ip-", "att-"]).is_empty(),
        "a reservation was left"
    );
    // Nothing holds the bridge lock any more.
    assert!(!bridge_lock(&bridge).exists() || lock_is_free(&bridge_lock(&bridge)));
    let _ = std::fs::remove_file(bridge_lock(&bridge));
}

// ---------------------------------------------------------------------------------------------------
// 3. Lock files

#[test]
fn an_add_refused_after_taking_the_bridge_lock_leaves_no_lock_file() {
    let test = "an_add_refused_after_taking_the_bridge_lock_leaves_no_lock_file";
    if skip_unless_netns(test) {
        return;
    }
    let node = Node::new();
    let bridge = unique_name("shl");
    // A veth (this kernel may lack the dummy driver): any link of that name that is not a bridge.
    let peer = unique_name("shlp");
    node.ns.exec(&[
        "ip", "link", "add", &bridge, "type", "veth", "peer", "name", &peer,
    ]);
    let data = TempDir::new("shld");
    let conf = node.bridge_conf(&bridge, file_ipam(data.path(), "10.251.9.0/24"), json!({}));
    let pod = Pod::new();
    let e = node.run("plumb-bridge", &pod.call("ADD", &conf)).err(7);
    assert!(e["msg"].as_str().unwrap().contains("not a bridge"), "{e}");
    assert!(
        !bridge_lock(&bridge).exists(),
        "{} was left by a refused ADD",
        bridge_lock(&bridge).display()
    );
    assert!(node.has_link(&bridge), "the foreign dummy link must stay");
}

#[test]
fn the_del_after_the_bridge_went_removes_its_lock_file() {
    let test = "the_del_after_the_bridge_went_removes_its_lock_file";
    if skip_unless_netns(test) {
        return;
    }
    let node = Node::new();
    let bridge = unique_name("shr");
    let data = TempDir::new("shrd");
    let conf = node.bridge_conf(&bridge, file_ipam(data.path(), "10.251.10.0/24"), json!({}));
    let pod = Pod::new();
    node.run("plumb-bridge", &pod.call("ADD", &conf)).ok();
    // The bridge exists: its lock file stays (one per bridge, not per call).
    assert!(bridge_lock(&bridge).exists());
    node.run("plumb-bridge", &pod.call("DEL", &conf)).ok();
    assert!(bridge_lock(&bridge).exists());
    node.run("plumb-bridge", &pod.call("ADD", &conf)).ok();
    node.ns.exec(&["ip", "link", "del", &bridge]);
    node.run("plumb-bridge", &pod.call("DEL", &conf)).ok();
    assert!(
        !bridge_lock(&bridge).exists(),
        "the DEL on a bridge that is gone left its lock file"
    );
    // And the next ADD works as before (the lock file is made again).
    node.run("plumb-bridge", &pod.call("ADD", &conf)).ok();
    node.run("plumb-bridge", &pod.call("DEL", &conf)).ok();
    node.ns.exec(&["ip", "link", "del", &bridge]);
    let _ = std::fs::remove_file(bridge_lock(&bridge));
}

// ---------------------------------------------------------------------------------------------------
// 4. Names as the spec says

#[test]
fn network_names_and_container_ids_outside_the_spec_charset_are_refused_and_del_does_nothing() {
    let data = TempDir::new("shn");
    let ipam = |name: &str| {
        json!({"cniVersion": "1.1.0", "name": name, "type": "plumb-ipam",
               "ipam": file_ipam(data.path(), "10.251.11.0/24")})
    };
    let forged = "net\nnet-x  10.251.11.99  forged";
    for command in ["ADD", "CHECK"] {
        let e = Call::new(command, "c1", "/unused", "eth0", &ipam(forged))
            .run(&plumb_bin("plumb-ipam"))
            .err(7);
        let msg = e["msg"].as_str().unwrap();
        assert!(
            msg.contains("field \"name\"") && msg.contains("'_', '.' and '-'"),
            "{msg}"
        );
    }
    for command in ["GC", "STATUS"] {
        let call = Call::new(command, "", "", "", &ipam("net/../x"))
            .without("CNI_CONTAINERID")
            .without("CNI_NETNS")
            .without("CNI_IFNAME");
        call.run(&plumb_bin("plumb-ipam")).err(7);
    }
    let e = Call::new("ADD", "c\n1", "/unused", "eth0", &ipam("net"))
        .run(&plumb_bin("plumb-ipam"))
        .err(4);
    assert!(
        e["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(data.path()).unwrap().count(),
        0,
        "a refused ADD made something in the data dir"
    );
    // DEL of what ADD refuses: success, nothing done, said on stderr.
    for (cid, name) in [("c1", forged), ("c\n1", "net"), ("-c1", "net")] {
        let out =
            Call::new("DEL", cid, "/unused", "eth0", &ipam(name)).run(&plumb_bin("plumb-ipam"));
        out.ok();
        assert!(out.stderr.contains("nothing to do"), "{}", out.stderr);
    }
    // The same through plumb-bridge (refused before any host change, so no root is needed).
    let conf = json!({"cniVersion": "1.0.0", "name": forged, "type": "plumb-bridge",
                      "bridge": "shn0", "ipam": file_ipam(data.path(), "10.251.11.0/24")});
    let call = |command: &str| {
        Call::new(command, "c1", "/unused", "eth0", &conf)
            .env("CNI_PATH", &bin_dir().display().to_string())
    };
    call("ADD").run(&plumb_bin("plumb-bridge")).err(7);
    let out = call("DEL").run(&plumb_bin("plumb-bridge"));
    out.ok();
    assert!(out.stderr.contains("plumb-bridge: DEL"), "{}", out.stderr);
    assert!(!bridge_lock("shn0").exists());
}

// ---------------------------------------------------------------------------------------------------
// 5. ipMasq: the table goes with its last chain

#[test]
fn the_masquerade_table_goes_with_its_last_chain() {
    let test = "the_masquerade_table_goes_with_its_last_chain";
    if unavailable(test, &["nft"]) {
        return;
    }
    let node = Node::new();
    let data = TempDir::new("shm");
    let bridges = [unique_name("shm"), unique_name("shm")];
    let confs: Vec<Value> = bridges
        .iter()
        .zip(["10.251.12.0/24", "10.251.13.0/24"])
        .map(|(b, subnet)| {
            node.bridge_conf(b, file_ipam(data.path(), subnet), json!({"ipMasq": true}))
        })
        .collect();
    let pods = [Pod::new(), Pod::new()];
    let has_table = || {
        node.ns
            .try_exec(&["nft", "list", "table", "ip", "plumb_masq"])
    };
    for (pod, conf) in pods.iter().zip(&confs) {
        node.run("plumb-bridge", &pod.call("ADD", conf)).ok();
    }
    assert!(has_table());
    node.run("plumb-bridge", &pods[0].call("DEL", &confs[0]))
        .ok();
    assert!(
        has_table(),
        "the table went while another bridge's chain was in it"
    );
    let left = node.ns.exec(&["nft", "list", "table", "ip", "plumb_masq"]);
    assert_eq!(left.matches("masquerade").count(), 1, "{left}");
    node.run("plumb-bridge", &pods[1].call("DEL", &confs[1]))
        .ok();
    assert!(!has_table(), "the empty plumb_masq table stayed");
    assert!(!node
        .ns
        .try_exec(&["nft", "list", "table", "ip6", "plumb_masq"]));
    // DEL again: nothing there is success.
    node.run("plumb-bridge", &pods[1].call("DEL", &confs[1]))
        .ok();
    for b in &bridges {
        node.ns.exec(&["ip", "link", "del", b]);
        let _ = std::fs::remove_file(bridge_lock(b));
    }
}
