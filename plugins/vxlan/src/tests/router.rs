//! The router role in the pod: forwarding turned on only where it was off and put back on undo, the
//! masquerade chains added and removed (their table with the last one), and what CHECK finds missing.

use super::*;
use crate::plugin::require_out_interface;
use crate::router::{chain, install, missing, remove, undo, Changed, TABLE};

const V4_FORWARD: &str = "net/ipv4/ip_forward";
const V6_FORWARD: &str = "net/ipv6/conf/all/forwarding";

fn chain_name() -> String {
    chain("gw", CID, IFNAME)
}

fn router() -> Value {
    conf(json!({"group": "239.1.1.1", "role": "router"}))
}

fn forwarding(f: &Fake, key: &str) -> String {
    f.model.sysctls[&(Ns::Pod, key.to_string())].clone()
}

fn chains(f: &Fake) -> Vec<(&'static str, String, String)> {
    f.model.chains.keys().cloned().collect()
}

#[test]
fn install_masquerades_each_subnet_and_turns_on_only_the_forwarding_that_was_off() {
    let mut f = Fake::new();
    f.model
        .sysctls
        .insert((Ns::Pod, V6_FORWARD.into()), "1".into());
    let ips = dual_stack().ips;
    let mut changed = Changed::default();
    install(&mut f, &chain_name(), &ips, Some("eth0"), &mut changed).unwrap();
    let c = chain_name();
    assert_eq!(
        f.changes(),
        [
            format!("add_masquerade_out ip {TABLE} {c} 10.1.0.0/24 eth0"),
            format!("add_masquerade_out ip6 {TABLE} {c} fd00:1::/64 eth0"),
            format!("write_sysctl pod {V4_FORWARD} 1"),
        ]
    );
    assert_eq!(
        f.model.chains[&("ip", TABLE.to_string(), c.clone())],
        ["10.1.0.0/24 oifname eth0"]
    );
    assert_eq!(
        (forwarding(&f, V4_FORWARD), forwarding(&f, V6_FORWARD)),
        ("1".into(), "1".into())
    );
    // Undo puts back only what install changed.
    undo(&mut f, &c, changed).unwrap();
    assert_eq!(
        (forwarding(&f, V4_FORWARD), forwarding(&f, V6_FORWARD)),
        ("0".into(), "1".into())
    );
    assert!(chains(&f).is_empty() && f.model.tables.is_empty());
}

#[test]
fn forwarding_already_on_is_neither_written_nor_restored() {
    let mut f = Fake::new();
    for key in [V4_FORWARD, V6_FORWARD] {
        f.model.sysctls.insert((Ns::Pod, key.into()), "1".into());
    }
    let mut changed = Changed::default();
    install(
        &mut f,
        &chain_name(),
        &[ipc("10.1.0.5/24")],
        None,
        &mut changed,
    )
    .unwrap();
    assert!(f.changes().is_empty(), "{:?}", f.calls);
    assert_eq!(changed, Changed::default());
    // Only the family the pod has an address of is looked at.
    assert_eq!(
        f.calls,
        [format!("get_sysctl pod {V4_FORWARD}")],
        "no masquerade (masquerade: false), no IPv6"
    );
}

#[test]
fn undo_restores_forwarding_newest_first() {
    let mut f = Fake::new();
    let mut changed = Changed::default();
    install(&mut f, &chain_name(), &dual_stack().ips, None, &mut changed).unwrap();
    let made = f.calls.len();
    undo(&mut f, &chain_name(), changed).unwrap();
    let restores: Vec<_> = f.calls[made..]
        .iter()
        .filter(|c| c.starts_with("write_sysctl"))
        .cloned()
        .collect();
    assert_eq!(
        restores,
        [
            format!("write_sysctl pod {V6_FORWARD} 0"),
            format!("write_sysctl pod {V4_FORWARD} 0"),
        ]
    );
}

#[test]
fn remove_keeps_a_table_another_attachment_still_uses() {
    let mut f = Fake::new();
    let mut changed = Changed::default();
    let other = chain("gw", "other", IFNAME);
    install(
        &mut f,
        &other,
        &[ipc("10.1.0.6/24")],
        Some("eth0"),
        &mut changed,
    )
    .unwrap();
    install(
        &mut f,
        &chain_name(),
        &[ipc("10.1.0.5/24")],
        Some("eth0"),
        &mut changed,
    )
    .unwrap();
    remove(&mut f, &chain_name()).unwrap();
    assert_eq!(chains(&f), [("ip", TABLE.to_string(), other.clone())]);
    assert!(f.model.tables.contains(&("ip", TABLE.to_string())));
    remove(&mut f, &other).unwrap();
    assert!(chains(&f).is_empty() && f.model.tables.is_empty());
    // Removing what is gone succeeds (DEL twice).
    remove(&mut f, &other).unwrap();
}

#[test]
fn missing_names_forwarding_off_and_a_missing_chain() {
    let mut f = Fake::new();
    let ips = [ipc("10.1.0.5/24")];
    let c = chain_name();
    assert_eq!(
        missing(&mut f, &c, &ips, Some("eth0")).unwrap().as_deref(),
        Some("forwarding is off in the router pod (net.ipv4.ip_forward = 0)")
    );
    f.model
        .sysctls
        .insert((Ns::Pod, V4_FORWARD.into()), "1".into());
    assert_eq!(
        missing(&mut f, &c, &ips, Some("eth0")).unwrap(),
        Some(format!(
            "the masquerade chain {c} is missing from table ip {TABLE} in the router pod"
        ))
    );
    // Without masquerade the chain is not looked for.
    assert_eq!(missing(&mut f, &c, &ips, None).unwrap(), None);
    install(&mut f, &c, &ips, Some("eth0"), &mut Changed::default()).unwrap();
    assert_eq!(missing(&mut f, &c, &ips, Some("eth0")).unwrap(), None);
}

#[test]
fn add_as_router_installs_after_the_attachment() {
    let mut f = Fake::new();
    f.attached = dual_stack();
    add(&mut f, &router()).unwrap();
    let ops = f.ops();
    let at = ops.iter().position(|o| o == "attach").unwrap();
    assert_eq!(
        ops[at..],
        [
            "attach",
            "add_masquerade_out",
            "add_masquerade_out",
            "write_sysctl",
            "write_sysctl"
        ]
    );
    assert_eq!(chains(&f).len(), 2);
}

#[test]
fn a_router_needs_its_out_interface_in_the_pod() {
    let mut f = Fake::new();
    let v = conf(
        json!({"group": "239.1.1.1", "role": "router", "masquerade": {"outInterface": "eth5"}}),
    );
    assert_eq!(
        refused(require_out_interface(&mut f, &config(&v))),
        (
            code::INVALID_CONFIG,
            "field \"masquerade.outInterface\": the pod has no interface eth5; name the interface the router pod sends traffic out of, or set \"masquerade\": false"
                .to_string()
        )
    );
    require_out_interface(&mut f, &config(&router())).unwrap();
    // A client, or a router without masquerade, does not look.
    let calls = f.calls.len();
    require_out_interface(&mut f, &config(&multicast())).unwrap();
    let no_masq = conf(json!({"group": "239.1.1.1", "role": "router", "masquerade": false}));
    require_out_interface(&mut f, &config(&no_masq)).unwrap();
    assert_eq!(f.calls.len(), calls);
}
