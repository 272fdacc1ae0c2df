//! A unicast VTEP's flood list made exactly the wanted peers: the missing appended, the stale
//! removed, the node's own addresses never listed.

use super::*;
use crate::fake::NODE_IP;
use crate::vtep::wanted_peers;

fn flood(f: &Fake) -> Vec<IpAddr> {
    f.model.fdb[&f.host(VTEP).index].clone()
}

fn flood_changes(f: &Fake) -> Vec<String> {
    f.changes()
        .into_iter()
        .filter(|c| c.starts_with("flood_"))
        .collect()
}

#[test]
fn first_add_lists_every_peer_but_the_node_itself() {
    let mut f = Fake::new();
    add(&mut f, &unicast()).unwrap();
    assert_eq!(
        flood_changes(&f),
        [
            "flood_add gw0-vx 192.168.0.2",
            "flood_add gw0-vx 192.168.0.3"
        ]
    );
    assert_eq!(flood(&f), [ip("192.168.0.2"), ip("192.168.0.3")]);
    assert!(!flood(&f).contains(&ip(NODE_IP)));
}

#[test]
fn sync_adds_only_missing_peers_and_removes_only_stale_ones() {
    let mut f = Fake::new();
    node_with_vtep(&mut f, &unicast(), 1450);
    let vt = f.host(VTEP).index;
    // .3 is wanted and there; .9 is a peer dropped from the config; .2 is missing.
    f.model
        .fdb
        .insert(vt, vec![ip("192.168.0.3"), ip("192.168.0.9")]);
    add(&mut f, &unicast()).unwrap();
    assert_eq!(
        flood_changes(&f),
        [
            "flood_add gw0-vx 192.168.0.2",
            "flood_remove gw0-vx 192.168.0.9"
        ]
    );
    assert_eq!(flood(&f), [ip("192.168.0.3"), ip("192.168.0.2")]);
}

#[test]
fn a_list_in_sync_is_not_touched() {
    let mut f = Fake::new();
    add(&mut f, &unicast()).unwrap();
    let first = f.calls.len();
    // A second pod on the node: the flood list is read, nothing is written.
    let mut second = request(&unicast());
    second.env.container_id = "beef".into();
    let cfg = config(&unicast());
    add_with(&mut f, &second, &cfg, listed(&cfg).as_deref()).unwrap();
    let later: Vec<_> = f.calls[first..]
        .iter()
        .map(|c| crate::fake::op_of(c))
        .collect();
    assert!(later.contains(&"get_flood_list"), "{later:?}");
    assert!(!later.iter().any(|o| o.starts_with("flood_")), "{later:?}");
}

#[test]
fn a_multicast_vtep_has_no_flood_list_to_sync() {
    let mut f = Fake::new();
    add(&mut f, &multicast()).unwrap();
    assert!(
        !f.calls.iter().any(|c| c.contains("flood")),
        "{:?}",
        f.calls
    );
}

#[test]
fn wanted_peers_skip_the_nodes_own_addresses_and_the_other_family() {
    let cfg = config(&unicast());
    let peers = [
        ip("192.168.0.1"),
        ip("192.168.0.2"),
        ip("fd00::2"),
        ip("10.9.9.9"),
    ];
    let own = [ip("127.0.0.1"), ip("192.168.0.1"), ip("10.9.9.9")];
    assert_eq!(
        wanted_peers(&cfg, &peers, &own),
        Some(vec![ip("192.168.0.2")])
    );
    assert_eq!(wanted_peers(&config(&multicast()), &peers, &own), None);
}

#[test]
fn a_peer_list_failure_after_creation_takes_the_new_vtep_and_bridge_back() {
    let mut f = Fake::new();
    let before = f.model.clone();
    f.fail_on("flood_add");
    let (c, msg) = refused(add(&mut f, &unicast()));
    assert_eq!(
        (c, msg.as_str()),
        (code::IO_FAILURE, "cannot add a peer to the VTEP flood list")
    );
    let changes = f.changes();
    assert_eq!(
        changes[changes.len() - 3..],
        [
            "flood_add gw0-vx 192.168.0.2",
            "delete_link gw0-vx",
            "delete_link gw0"
        ]
    );
    assert_eq!(f.model, before);
}
