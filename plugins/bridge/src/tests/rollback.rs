//! plumb-bridge's part of a failed ADD (bridge, uplink, gateway) with a failure injected at each call,
//! taken back newest first: the host is left as it was (forwarding, once on, stays on).

use super::*;
use crate::ports::ensure_bridge;
use crate::uplink::{ensure as ensure_uplink, verify};
use fake::link;

/// The plugin's host steps in ADD's order (`plugin::add_steps` without the engine's port).
fn add(f: &mut Fake, cfg: &BridgeConfig, undo: &mut Vec<Undo>) -> plumb_cni::CniResult<()> {
    let uplink = verify(f, cfg)?;
    let (bridge, created) = ensure_bridge(f, cfg)?;
    if created {
        undo.push(Undo::Own(Box::new(CreatedBridge(bridge.clone()))));
    }
    if let Some(up) = uplink {
        ensure_uplink(f, cfg, &up, &bridge, created, undo)?;
    }
    crate::gateway::ensure(
        f,
        cfg,
        &bridge,
        &[ip("10.1.0.5/24", "10.1.0.1")],
        "plb0",
        undo,
    )
}

fn host() -> Fake {
    let mut f = Fake::new();
    let mut up = link(2, "up0", "veth");
    up.up = true;
    f.with(up);
    f
}

fn fail_at_each_call(cfg: &BridgeConfig) -> usize {
    let mut ok = host();
    add(&mut ok, cfg, &mut Vec::new()).unwrap();
    let steps = ok.calls.len();
    let mut failed_adds = 0;
    for n in 0..steps {
        let mut f = host();
        let pristine = f.model.clone();
        f.fail_nth(n);
        let mut undo = Vec::new();
        let Err(e) = add(&mut f, cfg, &mut undo) else {
            // Only the best-effort accept_ra sysctl, and the forwarding read (the sysctl is then
            // written as before), may fail without failing ADD.
            let c = &ok.calls[n];
            assert!(
                c.starts_with("sysctl net/ipv6/conf/br0/accept_ra")
                    || c.starts_with("get_forwarding"),
                "call {n} ({c}) failed but ADD succeeded"
            );
            continue;
        };
        failed_adds += 1;
        assert!(
            e.msg.contains("injected failure")
                || e.details.iter().any(|d| d.contains("injected failure"))
                || e.to_string().contains("injected failure"),
            "call {n} ({}): {e:?}",
            ok.calls[n]
        );
        let made = f.calls.len();
        let failures = rollback(&mut f, undo);
        assert!(failures.is_empty(), "{failures:?}");
        // Everything the rollback did came after the ADD's calls: newest first means the deletes
        // and releases mirror the makes.
        assert!(f.calls.len() >= made);
        f.model.forwarding = pristine.forwarding;
        assert_eq!(
            f.model, pristine,
            "after failing call {n} ({})",
            ok.calls[n]
        );
    }
    failed_adds
}

#[test]
fn per_vlan_uplink_and_gateway_fail_at_each_call_and_leave_the_host_as_it_was() {
    let c = cfg(json!({"uplink": "up0", "vlan": 2003, "isGateway": true}));
    assert!(fail_at_each_call(&c) >= 15);
}

#[test]
fn trunk_uplink_and_vlan_gateway_fail_at_each_call_and_leave_the_host_as_it_was() {
    let c = cfg(json!({"uplink": "up0", "vlanFiltering": true, "vlan": 100, "isGateway": true}));
    assert!(fail_at_each_call(&c) >= 15);
}

#[test]
fn the_undo_order_is_the_reverse_of_the_making() {
    let c = cfg(json!({"uplink": "up0", "vlanFiltering": true, "vlan": 100, "isGateway": true}));
    let mut f = host();
    let mut undo = Vec::new();
    add(&mut f, &c, &mut undo).unwrap();
    let labels: Vec<_> = undo.iter().map(Undo::label).collect();
    assert_eq!(
        labels,
        [
            "bridge",
            "uplink port",
            "uplink vlans",
            "vlan gateway",
            "gateway address"
        ]
    );
    let gw = f.get("br0.100").index;
    f.calls.clear();
    assert!(rollback(&mut f, undo).is_empty());
    let changes = f.changes();
    assert_eq!(
        changes,
        vec![
            format!("del_address {gw} 10.1.0.1/24"),
            // The uplink still carries VLAN 100 (its own undo comes next), but the uplink is not a
            // pod's use of the gateway: it goes first.
            "delete_link br0.100".into(),
            "vlan_remove br0 BridgeSelf 100-100".into(),
            "vlan_remove up0 Port 100-100".into(),
            "set_nomaster up0".into(),
            "delete_link br0".into(),
        ]
    );
}

/// The attach engine's own rollback (as `Bridge::add` runs it) over the shared stack, on the
/// engine's recording fake: plumb-bridge's steps and the engine's gateway address, newest first.
#[test]
fn the_engines_rollback_takes_the_bridges_steps_back_newest_first() {
    let c = cfg(json!({"uplink": "up0", "vlanFiltering": true, "vlan": 100, "isGateway": true}));
    let mut f = host();
    let mut undo = Vec::new();
    add(&mut f, &c, &mut undo).unwrap();
    let gw = f.get("br0.100").index;
    let stdin = br#"{"cniVersion":"1.0.0","name":"net1","type":"plumb-bridge"}"#.to_vec();
    let req = plumb_attach::fake::request(
        plumb_cni::Command::Add,
        "c0ffee",
        "eth0",
        "/var/run/netns/pod1",
        stdin,
    );
    let mut engine = plumb_attach::fake::Fake::new();
    plumb_attach::attach::rollback_with(&mut engine, &req, &c.port_plan(), undo);
    assert_eq!(
        engine.changes(),
        vec![
            format!("del_host_address {gw} 10.1.0.1/24"),
            "undo_own vlan gateway".into(),
            "undo_own uplink vlans".into(),
            "undo_own uplink port".into(),
            "undo_own bridge".into(),
        ]
    );
}
