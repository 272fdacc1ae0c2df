//! A failed ADD taken back newest first, leaving the node and the pod as they were: one run per call
//! of a successful ADD, with that call made to fail.

use super::*;
use crate::fake::{op_of, Model};

/// The router on a unicast overlay, dual-stack, with a route: every step ADD has.
fn everything() -> Value {
    conf(json!({
        "peers": ["192.168.0.1", "192.168.0.2", "192.168.0.3"], "role": "router"
    }))
}

/// What a change takes back later (the label both the step and its undo get), if anything: links
/// made, the attachment, the router's chains, the pod's forwarding.
fn made_label(call: &str) -> Option<String> {
    let args: Vec<&str> = call.split(' ').collect();
    match args[0] {
        "create_bridge" | "create_vxlan" => Some(format!("link {}", args[1])),
        "attach" => Some("attach".into()),
        "add_masquerade_out" => Some("chains".into()),
        "write_sysctl" if args[1] == "pod" => Some(format!("sysctl {}", args[2])),
        _ => None,
    }
}

fn undo_label(call: &str, chains_made: bool) -> Option<String> {
    let args: Vec<&str> = call.split(' ').collect();
    match args[0] {
        "delete_link" | "delete_link_by_name" => Some(format!("link {}", args[1])),
        "detach" => Some("attach".into()),
        "delete_chain" if chains_made => Some("chains".into()),
        "write_sysctl" if args[1] == "pod" => Some(format!("sysctl {}", args[2])),
        _ => None,
    }
}

fn labels(calls: &[String], f: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out: Vec<String> = calls.iter().filter_map(|c| f(c)).collect();
    out.dedup();
    out
}

/// Runs ADD of `v` on `setup()` once per call of a good run, that call failing; checks the error,
/// the undo order and the model.
fn fail_each_step(v: &Value, setup: impl Fn() -> Fake) -> usize {
    let mut ok = setup();
    ok.attached = dual_stack();
    add(&mut ok, v).unwrap();
    let steps = ok.calls.len();
    let mut failed_adds = 0;
    for n in 0..steps {
        let mut f = setup();
        f.attached = dual_stack();
        let pristine: Model = f.model.clone();
        f.fail_nth(n);
        let failed = ok.calls[n].clone();
        let Err(e) = add(&mut f, v) else {
            // Only the best-effort sysctl on the bridge may fail without failing ADD.
            assert!(
                failed.starts_with("write_sysctl host net/ipv6/conf/gw0/accept_ra"),
                "call {n} ({failed}) failed but ADD succeeded"
            );
            continue;
        };
        failed_adds += 1;
        assert_eq!(f.calls[n], failed, "the same plan up to the failing call");
        assert!(
            e.msg.contains("injected failure") || e.details.iter().any(|d| d.contains("injected")),
            "call {n} ({failed}): {e:?}"
        );
        let mut made = labels(&f.calls[..n], made_label);
        // The attach engine takes back its own partial work even when it fails.
        if op_of(&failed) == "attach" {
            made.push("attach".into());
        }
        let chains_made = made.iter().any(|m| m == "chains");
        let undone = labels(&f.calls[n + 1..], |c| undo_label(c, chains_made));
        made.reverse();
        assert_eq!(undone, made, "call {n} ({failed}) taken back newest first");
        assert_eq!(
            f.model, pristine,
            "call {n} ({failed}) left something behind"
        );
    }
    println!("{failed_adds} of {steps} calls, each failing, failed the ADD and were taken back");
    failed_adds
}

#[test]
fn a_failure_at_each_step_of_a_first_add_leaves_the_node_and_pod_as_they_were() {
    let failed = fail_each_step(&everything(), Fake::new);
    // Every lookup and change but the best-effort sysctl fails the ADD.
    assert!(failed >= 30, "only {failed} failing runs");
}

#[test]
fn a_failure_at_each_step_on_an_adopted_vtep_leaves_the_vtep_and_bridge_alone() {
    let setup = || {
        let mut f = Fake::new();
        node_with_vtep(&mut f, &everything(), 1450);
        let vt = f.host(VTEP).index;
        f.model
            .fdb
            .insert(vt, vec![ip("192.168.0.2"), ip("192.168.0.3")]);
        f
    };
    let failed = fail_each_step(&everything(), setup);
    assert!(failed >= 20, "only {failed} failing runs");
}

#[test]
fn a_route_the_pod_already_has_fails_the_add_and_is_taken_back() {
    let mut f = Fake::new();
    let before = f.model.clone();
    f.attached = AddResult {
        ips: vec![ipc("10.1.0.5/24")],
        routes: vec![route("0.0.0.0/0")],
        ..Default::default()
    };
    assert_eq!(
        refused(add(&mut f, &multicast())),
        (
            code::INVALID_CONFIG,
            "route 0.0.0.0/0 from the IPAM config cannot go through net1: the pod already has a route to it via eth0; to send all traffic through the router, use the two halves (0.0.0.0/1 and 128.0.0.0/1, or ::/1 and 8000::/1), which win over the primary default route without replacing it"
                .to_string()
        )
    );
    assert_eq!(
        f.changes()[f.changes().len() - 3..],
        ["detach", "delete_link gw0-vx", "delete_link gw0"]
    );
    assert_eq!(f.model, before);
}
