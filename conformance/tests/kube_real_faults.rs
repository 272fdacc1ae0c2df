//! The Kubernetes store's fault cases against the REAL kube-apiserver (kube-real lane), through a
//! fault-injecting TCP forwarder ([`Forward`]) in front of it: connections refused, responses cut
//! mid-body (in a list, and in a write the server has already committed), connections stalled and
//! delayed. TLS passes through the forwarder, so the faults act on the TCP stream the way a broken
//! network or a dying load balancer would; HTTP-level faults (500, 409, 429, dropped answers by verb)
//! stay with the test API server (`kube_store.rs`), which this lane mirrors.
//!
//! The guarantees asserted are the store's: a transport failure is retried until
//! `kubernetes.timeoutSeconds`, then the call answers code 11 naming that setting; an ADD that fails
//! leaves no reservation; a write whose answer is lost is not made twice (the retry lists, finds the
//! reservation and stops); a DEL after it frees it. What was reserved is read straight from the server
//! as the admin, and what the plugin asked is read from the server's audit log.
//!
//! Where a cut lands is computed from byte counts of the same calls measured through the forwarder
//! just before (TLS handshake + list answer, + write answer), and cut in the middle of the answer
//! wanted, so it does not depend on header or record sizes.

#[allow(dead_code)]
mod kube_real_support;

use conformance::forward::{Fault, Forward};
use conformance::{unique_name, TempDir};
use kube_real_support::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A forwarder in front of the real server, a kubeconfig through it, a space of its own.
struct Lab {
    r: &'static Real,
    fwd: Forward,
    kubeconfig: PathBuf,
    data: TempDir,
    space: String,
}

impl Lab {
    fn new(prefix: &str) -> Lab {
        let r = real();
        let fwd = Forward::start(None, server_addr(r.cp)).expect("start the forwarder");
        let data = TempDir::new("krf-data");
        let kubeconfig = kubeconfig_via(r, &fwd, data.path());
        Lab {
            r,
            fwd,
            kubeconfig,
            data,
            space: unique_name(prefix),
        }
    }

    /// plumb-ipam on `range` in this lab's space, through the forwarder, with this deadline.
    fn conf(&self, range: &str, timeout_seconds: u64) -> Value {
        self.conf_in(&self.space, range, timeout_seconds)
    }

    /// [`Lab::conf`] in another space (through the same forwarder).
    fn conf_in(&self, space: &str, range: &str, timeout_seconds: u64) -> Value {
        let kc = self.kubeconfig.to_str().expect("UTF-8 path");
        net(
            space,
            range,
            self.data.path(),
            &self.kubeconfig,
            json!({"kubernetes": {"kubeconfig": kc, "timeoutSeconds": timeout_seconds}}),
        )
    }

    /// Bytes the server sent to clients during `f`.
    fn bytes_to_client(&self, f: impl FnOnce()) -> u64 {
        let before = self.fwd.counts().to_client;
        f();
        self.fwd.counts().to_client - before
    }

    /// The container IDs holding reservations in this space, read by the admin straight from the server.
    fn holders(&self) -> Vec<String> {
        let mut v: Vec<String> = blocks(self.r.cp, &self.space)
            .iter()
            .flat_map(|b| {
                b["spec"]["allocations"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
                    .into_values()
            })
            .map(|a| a["containerID"].as_str().unwrap_or_default().to_string())
            .collect();
        v.sort();
        v
    }
}

/// The plugin's requests during `f`, as (verb, HTTP code), in order, from the audit log.
fn plugin_requests(r: &Real, f: impl FnOnce()) -> Vec<(String, u64)> {
    let mark = r.cp.audit_mark();
    f();
    requests_of(&r.cp.audit_events(mark), PLUGIN_USER)
        .into_iter()
        .map(|(verb, resource, code)| {
            assert_eq!(resource, "ipblocks", "{verb} {resource} {code}");
            (verb, code)
        })
        .collect()
}

fn reqs(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(v, c)| (v.to_string(), *c)).collect()
}

fn assert_msg(e: &Value, needles: &[&str]) {
    let msg = e["msg"].as_str().unwrap_or_default();
    for n in needles {
        assert!(msg.contains(n), "the error does not say {n:?}: {e}");
    }
}

/// Asserts `took` is within the deadline of `timeout_seconds`, with room for two process starts.
fn assert_within(took: Duration, timeout_seconds: u64) {
    assert!(
        took >= Duration::from_secs(timeout_seconds) - Duration::from_millis(300)
            && took < Duration::from_secs(timeout_seconds + 3),
        "gave up after {took:?} with timeoutSeconds {timeout_seconds}"
    );
}

/// Refused connections: one is retried (the ADD succeeds on the next connection); when every one is
/// refused, ADD and DEL answer code 11 naming timeoutSeconds at the deadline, and the server holds no
/// reservation and saw no request.
#[test]
fn refused_connections_are_retried_then_code_11_at_the_deadline_with_nothing_reserved() {
    let _serial = serial();
    let lab = Lab::new("krf-ref");
    let conf = lab.conf("10.70.0.0/24", 2);
    lab.fwd.inject(Fault::Refuse, 1);
    let before = lab.fwd.counts().connections;
    assert_eq!(
        address(&add_ok(&conf, "node-a", "c1"), 0),
        first_of("10.70.0.0/24", "node-a")
    );
    let conns = lab.fwd.counts().connections - before;
    eprintln!("one refused connection: ADD succeeded over {conns} connections");
    assert!(conns >= 2, "{conns} connections");
    assert_eq!(lab.holders(), ["c1"]);

    lab.fwd.inject(Fault::Refuse, u32::MAX);
    let before = lab.fwd.counts().connections;
    let start = Instant::now();
    let asked = plugin_requests(lab.r, || {
        let e = cni("ADD", &conf, "node-a", "c2").err(11);
        assert_msg(&e, &["timeoutSeconds", "try again later"]);
        eprintln!("every connection refused: {e}");
    });
    let took = start.elapsed();
    let conns = lab.fwd.counts().connections - before;
    eprintln!("ADD gave up after {took:?}, {conns} connections tried");
    assert_within(took, 2);
    assert!(conns >= 3, "retried: {conns} connections");
    assert_eq!(asked, reqs(&[]), "the server saw nothing");
    assert_eq!(lab.holders(), ["c1"], "nothing reserved for c2");
    let e = cni("DEL", &conf, "node-a", "c1").err(11);
    assert_msg(&e, &["timeoutSeconds"]);
    assert_eq!(lab.holders(), ["c1"]);

    lab.fwd.clear_faults();
    del_ok(&conf, "node-a", "c1");
    assert!(lab.holders().is_empty());
}

/// An answer cut mid-body in the list: retried on a new connection, one reservation in the end and
/// one write; when every list answer is cut, code 11 at the deadline and no write at all.
#[test]
fn a_list_answer_cut_mid_body_is_retried_and_never_reserves_twice() {
    let _serial = serial();
    let lab = Lab::new("krf-lst");
    let conf = lab.conf("10.71.0.0/24", 2);
    // Twenty reservations make the list answer several kilobytes; an empty space's list measures the
    // handshake and an answer of almost nothing.
    for i in 0..20 {
        add_ok(&conf, "node-a", &format!("fill{i}"));
    }
    let empty = lab.conf_in(&unique_name("krf-emp"), "10.71.0.0/24", 2);
    let short = lab.bytes_to_client(|| del_ok(&empty, "node-a", "x"));
    // A STATUS: handshake + the answer to the list of node-a's blocks, the same list its ADD makes
    // (a DEL lists only the blocks holding its attachment).
    let mut status = conf.clone();
    status["cniVersion"] = json!("1.1.0");
    let full = lab.bytes_to_client(|| {
        assert_eq!(cni("STATUS", &status, "node-a", "status").ok(), Value::Null);
    });
    let cut = short + (full - short) / 2;
    eprintln!(
        "handshake + empty list: {short} B; handshake + list of 20: {full} B; cut at {cut} B"
    );
    assert!(
        full > short + 2000,
        "the list answer is small: {full} vs {short}"
    );

    lab.fwd.inject(Fault::CutAfter(cut), 1);
    let asked = plugin_requests(lab.r, || {
        assert_eq!(
            address(&add_ok(&conf, "node-a", "c1"), 0),
            nth_of("10.71.0.0/24", "node-a", 20)
        );
    });
    eprintln!("list answer cut once: requests {asked:?}");
    assert_eq!(
        asked.iter().filter(|(v, _)| v == "update").count(),
        1,
        "{asked:?}"
    );
    assert_eq!(asked.last(), Some(&("update".to_string(), 200)));
    assert_eq!(lab.holders().iter().filter(|h| *h == "c1").count(), 1);

    lab.fwd.inject(Fault::CutAfter(cut), u32::MAX);
    let start = Instant::now();
    let asked = plugin_requests(lab.r, || {
        let e = cni("ADD", &conf, "node-a", "c2").err(11);
        assert_msg(&e, &["timeoutSeconds"]);
        eprintln!("every list answer cut: {e}");
    });
    assert_within(start.elapsed(), 2);
    assert!(
        asked.iter().all(|(v, _)| v == "list"),
        "no write was made: {asked:?}"
    );
    assert!(!lab.holders().contains(&"c2".to_string()));
    lab.fwd.clear_faults();
    del_ok(&conf, "node-a", "c1");
    for i in 0..20 {
        del_ok(&conf, "node-a", &format!("fill{i}"));
    }
    assert!(lab.holders().is_empty());
}

/// A write the server committed whose answer is cut mid-body (a create, an update, and a DEL's
/// update): the retry lists, finds the write made and does not make it again; the runtime's retry of
/// the ADD gets the same address from a list alone, and the DEL frees it.
#[test]
fn a_committed_write_whose_answer_is_cut_is_not_made_twice_and_del_frees_it() {
    let _serial = serial();
    let lab = Lab::new("krf-wr");
    let conf = lab.conf("10.72.0.0/24", 5);

    // The create: measured on another space (handshake + empty list + create answer), then cut in
    // the middle of the create answer of this space's first ADD.
    let pconf = lab.conf_in(&unique_name("krf-prb"), "10.72.0.0/24", 5);
    let short = lab.bytes_to_client(|| del_ok(&pconf, "node-a", "x"));
    let created = lab.bytes_to_client(|| {
        add_ok(&pconf, "node-a", "p1");
    });
    del_ok(&pconf, "node-a", "p1");
    let cut = short + (created - short) / 2;
    eprintln!("handshake + empty list: {short} B; + create answer: {created} B; cut at {cut} B");
    lab.fwd.inject(Fault::CutAfter(cut), 1);
    let asked = plugin_requests(lab.r, || {
        assert_eq!(
            address(&add_ok(&conf, "node-a", "c1"), 0),
            first_of("10.72.0.0/24", "node-a")
        );
    });
    eprintln!("create answer cut: requests {asked:?}");
    assert_eq!(
        asked,
        reqs(&[("list", 200), ("create", 201), ("list", 200)])
    );
    assert_eq!(lab.holders(), ["c1"]);

    // An update: cut in the middle of its answer, after a list answer of the same size.
    for i in 0..10 {
        add_ok(&conf, "node-a", &format!("fill{i}"));
    }
    let listed = lab.bytes_to_client(|| del_ok(&conf, "node-a", "nothing"));
    let updated = lab.bytes_to_client(|| {
        add_ok(&conf, "node-a", "probe");
    });
    del_ok(&conf, "node-a", "probe");
    let cut = listed + (updated - listed) / 2;
    eprintln!("handshake + list: {listed} B; + update answer: {updated} B; cut at {cut} B");
    lab.fwd.inject(Fault::CutAfter(cut), 1);
    let mut got = String::new();
    let asked = plugin_requests(lab.r, || got = address(&add_ok(&conf, "node-a", "c2"), 0));
    eprintln!("update answer cut: requests {asked:?}");
    assert_eq!(
        asked,
        reqs(&[("list", 200), ("update", 200), ("list", 200)])
    );
    let held = lab.holders();
    assert_eq!(held.iter().filter(|h| *h == "c2").count(), 1, "{held:?}");
    // The runtime retries the ADD: same address, a list alone.
    let asked = plugin_requests(lab.r, || {
        assert_eq!(address(&add_ok(&conf, "node-a", "c2"), 0), got);
    });
    assert_eq!(asked, reqs(&[("list", 200)]));

    // A DEL whose update answer is cut: the retry finds nothing left and succeeds.
    lab.fwd.inject(Fault::CutAfter(cut), 1);
    let asked = plugin_requests(lab.r, || del_ok(&conf, "node-a", "c2"));
    eprintln!("DEL's update answer cut: requests {asked:?}");
    assert_eq!(
        asked,
        reqs(&[("list", 200), ("update", 200), ("list", 200)])
    );
    assert!(!lab.holders().contains(&"c2".to_string()));

    lab.fwd.clear_faults();
    del_ok(&conf, "node-a", "c1");
    for i in 0..10 {
        del_ok(&conf, "node-a", &format!("fill{i}"));
    }
    assert!(lab.holders().is_empty());
}

/// A stalled connection (accepted, never answered): ADD gives up at timeoutSeconds with code 11
/// naming it, not later; nothing reserved, and the server saw nothing.
#[test]
fn a_stalled_connection_gives_up_at_timeout_seconds_with_code_11() {
    let _serial = serial();
    let lab = Lab::new("krf-stl");
    let conf = lab.conf("10.73.0.0/24", 2);
    lab.fwd.inject(Fault::Stall, u32::MAX);
    let start = Instant::now();
    let asked = plugin_requests(lab.r, || {
        let e = cni("ADD", &conf, "node-a", "c1").err(11);
        assert_msg(&e, &["timeoutSeconds", "try again later"]);
        eprintln!("stalled: {e}");
    });
    let took = start.elapsed();
    eprintln!("stalled: gave up after {took:?}");
    assert_within(took, 2);
    assert_eq!(asked, reqs(&[]));
    assert!(lab.holders().is_empty());
    lab.fwd.clear_faults();
    assert_eq!(
        address(&add_ok(&conf, "node-a", "c1"), 0),
        first_of("10.73.0.0/24", "node-a")
    );
    del_ok(&conf, "node-a", "c1");
    assert!(lab.holders().is_empty());
}

/// A connection delayed less than timeoutSeconds succeeds (it takes that much longer, nothing
/// more); delayed beyond it, code 11 at the deadline and nothing reserved.
#[test]
fn a_delay_under_timeout_seconds_succeeds_and_one_beyond_it_is_code_11() {
    let _serial = serial();
    let lab = Lab::new("krf-dly");
    let conf = lab.conf("10.74.0.0/24", 4);
    lab.fwd.inject(Fault::Delay(Duration::from_millis(1500)), 1);
    let start = Instant::now();
    let asked = plugin_requests(lab.r, || {
        assert_eq!(
            address(&add_ok(&conf, "node-a", "c1"), 0),
            first_of("10.74.0.0/24", "node-a")
        );
    });
    let took = start.elapsed();
    eprintln!("delayed 1.5 s: ADD took {took:?}, requests {asked:?}");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert_eq!(asked, reqs(&[("list", 200), ("create", 201)]));

    let quick = lab.conf("10.74.0.0/24", 1);
    lab.fwd
        .inject(Fault::Delay(Duration::from_secs(3)), u32::MAX);
    let start = Instant::now();
    let e = cni("ADD", &quick, "node-a", "c2").err(11);
    assert_msg(&e, &["timeoutSeconds"]);
    let took = start.elapsed();
    eprintln!("delayed 3 s with timeoutSeconds 1: {took:?}: {e}");
    assert_within(took, 1);
    lab.fwd.clear_faults();
    assert_eq!(lab.holders(), ["c1"]);
    del_ok(&conf, "node-a", "c1");
    assert!(lab.holders().is_empty());
}
