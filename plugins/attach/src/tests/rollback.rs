//! A failed ADD taken back, newest step first.

use super::*;

/// A plugin's own step (the bridge it created), pushed before the engine runs.
#[derive(Debug)]
struct CreatedBridge;

impl OwnStep for CreatedBridge {
    fn label(&self) -> &'static str {
        "created bridge"
    }
    fn undo(&self, _: &mut Route) -> Result<(), String> {
        unreachable!("the fake takes it back by label")
    }
}

/// Every step the full plan makes, with the undo op that takes it back (masquerade and spoof check
/// are on the stack before their first rule, so their failing call is taken back too).
fn undo_op(op: &str) -> Option<&'static str> {
    Some(match op {
        "create_veth" => "delete_host_link",
        "ipam_add" => "ipam_del",
        "gateway" => "del_host_address",
        "add_masquerade" => "del_masquerade",
        "add_spoofcheck" => "del_spoofcheck",
        _ => return None,
    })
}

fn full_plan() -> PortPlan {
    PortPlan {
        vlan: 100,
        trunk: vec![(200, 201)],
        is_gateway: true,
        is_default_gateway: true,
        ip_masq: true,
        macspoofchk: true,
        ..ipam_plan()
    }
}

#[test]
fn a_failure_at_each_step_is_rolled_back_in_reverse_leaving_the_model_as_it_was() {
    let mut ok = Fake::new();
    ok.ipam.ips = vec![ip("10.1.0.5/24", Some("10.1.0.1"))];
    add(&mut ok, &full_plan(), &mut Vec::new()).unwrap();
    let steps = ok.calls.len();
    assert!(steps >= 20, "{:?}", ok.calls);
    let mut failed_adds = 0;
    for n in 0..steps {
        let mut f = Fake::new();
        f.ipam = ok.ipam.clone();
        let pristine = f.model.clone();
        f.model.own.insert("created bridge");
        let mut undo: Vec<Undo> = vec![Undo::Own(Box::new(CreatedBridge))];
        f.fail_nth(n);
        let failed_op = ok.calls[n].split(' ').next().unwrap();
        let Err(e) = add(&mut f, &full_plan(), &mut undo) else {
            // Only the best-effort sysctl may fail without failing ADD.
            assert_eq!(
                failed_op, "host_sysctl",
                "call {n} failed but ADD succeeded"
            );
            continue;
        };
        failed_adds += 1;
        assert!(
            e.msg.contains("injected failure")
                || e.details.iter().any(|d| d.contains("injected failure")),
            "{e:?}"
        );
        // What was made before the failing call (one gateway address: the result has one IP), and
        // the failing call itself when its undo went on the stack first.
        let op = |c: &String| c.split(' ').next().unwrap().to_string();
        let mut made: Vec<String> = f.calls[..n].iter().map(op).collect();
        if matches!(failed_op, "add_masquerade" | "add_spoofcheck") {
            made.push(failed_op.to_string());
        }
        let mut expected: Vec<&str> = vec!["undo_own"];
        expected.extend(made.iter().filter_map(|o| undo_op(o)));
        expected.reverse();
        let before = f.calls.len();
        rollback_with(&mut f, &request(), &full_plan(), undo);
        let undone: Vec<_> = f.calls[before..]
            .iter()
            .map(|c| c.split(' ').next().unwrap())
            .collect();
        assert_eq!(undone, expected, "failure at call {n} ({failed_op})");
        assert_eq!(f.model, pristine, "failure at call {n} ({failed_op})");
    }
    assert_eq!(failed_adds, steps - 1);
}

#[test]
fn a_failing_undo_step_is_skipped_and_the_others_still_run() {
    let mut f = Fake::new();
    f.ipam.ips = vec![ip("10.1.0.5/24", Some("10.1.0.1"))];
    f.fail_on("add_spoofcheck");
    f.fail_on("ipam_del");
    let mut undo = Vec::new();
    add(&mut f, &full_plan(), &mut undo).unwrap_err();
    let before = f.calls.len();
    rollback_with(&mut f, &request(), &full_plan(), undo);
    let undone: Vec<_> = f.calls[before..].iter().map(|c| c.as_str()).collect();
    assert_eq!(
        undone,
        [
            "del_spoofcheck",
            "del_masquerade",
            "del_host_address 1 10.1.0.1/24",
            "ipam_del plumb-ipam",
            &format!("delete_host_link {}", veth()),
        ]
    );
    // Only the reservation whose release failed is left.
    assert_eq!(
        f.model.reservations,
        BTreeSet::from([format!("{CID}/{IFNAME}")])
    );
    assert!(f.model.chains.is_empty() && f.model.host_addrs.is_empty());
    assert_eq!(f.model.host.len(), 1);
}
