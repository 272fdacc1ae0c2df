//! The public API against the running kernel, each test in its own network namespace, checked
//! with `nft -j list table` (root only; skipped loudly otherwise).

mod common;

use common::*;
use plumb_nft::{errno, Family, Nft};
use serde_json::{json, Value};
use std::io;

/// A namespace with a veth pair `dev` <-> `peer` and an `Nft` opened in it.
struct Fixture {
    // Field order = drop order: the socket goes before the namespace.
    nft: Nft,
    ns: Netns,
    dev: String,
    peer: String,
}

fn fixture(tag: &str) -> Fixture {
    let ns = Netns::new(tag);
    let dev = unique("h");
    let peer = unique("c");
    ns.veth(&dev, &peer);
    let nft = nft_in(&ns.path()).expect("open nft socket in the test netns");
    Fixture { nft, ns, dev, peer }
}

fn spoof_rule(mac: [u8; 6]) -> Value {
    json!({"match": {
        "op": "!=",
        "left": {"payload": {"protocol": "ether", "field": "saddr"}},
        "right": fmt_mac(mac),
    }})
}

#[test]
fn spoofcheck_chain_has_the_exact_hook_and_rule_and_deletes_idempotently() {
    if !ready("spoofcheck_chain_has_the_exact_hook_and_rule_and_deletes_idempotently") {
        return;
    }
    let f = fixture("sc");
    let mac = f.ns.mac(&f.peer);
    let (t, c) = ("plumb", "spoof-one");

    f.nft.ensure_table(Family::Netdev, t).unwrap();
    f.nft.ensure_table(Family::Netdev, t).unwrap(); // idempotent
    f.nft.add_spoofcheck(t, c, &f.dev, mac).unwrap();

    let listing = f.ns.nft_json("netdev", t).expect("table exists");
    let ch = chain(&listing, c).expect("chain exists");
    assert_eq!(ch["type"], "filter", "{ch}");
    assert_eq!(ch["hook"], "ingress", "{ch}");
    assert_eq!(ch["prio"], -500, "{ch}");
    assert_eq!(ch["policy"], "accept", "{ch}");
    if let Some(dev) = ch.get("dev") {
        assert_eq!(dev, &json!(f.dev), "{ch}");
    }
    // nft's JSON leaves the device out on some versions; its text output always has it.
    let text = f.ns.nft_text("netdev", t).unwrap();
    let hook_line = format!(
        "type filter hook ingress device \"{}\" priority -500; policy accept;",
        f.dev
    );
    assert!(text.contains(&hook_line), "{text}");
    assert_eq!(
        rules(&listing, c),
        vec![&json!([spoof_rule(mac), {"drop": null}])]
    );

    // Adding again replaces the chain: still exactly one rule.
    f.nft.add_spoofcheck(t, c, &f.dev, mac).unwrap();
    let listing = f.ns.nft_json("netdev", t).unwrap();
    assert_eq!(rules(&listing, c).len(), 1, "{listing}");
    assert!(f.nft.chain_exists(Family::Netdev, t, c).unwrap());
    assert!(!f.nft.chain_exists(Family::Netdev, t, "nope").unwrap());
    assert!(!f.nft.chain_exists(Family::Netdev, "nope", c).unwrap());

    // Adding it for another device moves it there (the kernel alone would hook both).
    let other_mac = [0x02, 0, 0, 0, 0, 0x33];
    f.nft.add_spoofcheck(t, c, &f.peer, other_mac).unwrap();
    let text = f.ns.nft_text("netdev", t).unwrap();
    assert!(
        text.contains(&format!("hook ingress device \"{}\" priority", f.peer)),
        "{text}"
    );
    assert!(!text.contains(&f.dev), "{text}");
    let listing = f.ns.nft_json("netdev", t).unwrap();
    assert_eq!(
        rules(&listing, c),
        vec![&json!([spoof_rule(other_mac), {"drop": null}])]
    );
    f.nft.add_spoofcheck(t, c, &f.dev, mac).unwrap();

    // ensure_table leaves an existing table's contents alone.
    f.nft.ensure_table(Family::Netdev, t).unwrap();
    assert_eq!(f.nft.list_chains(Family::Netdev, t).unwrap(), vec![c]);

    f.nft.delete_chain(Family::Netdev, t, c).unwrap();
    let listing = f.ns.nft_json("netdev", t).expect("table stays");
    assert!(chain(&listing, c).is_none(), "{listing}");
    assert!(f.nft.list_chains(Family::Netdev, t).unwrap().is_empty());
    // Idempotent: missing chain, then missing table.
    f.nft.delete_chain(Family::Netdev, t, c).unwrap();
    f.nft.delete_table(Family::Netdev, t).unwrap();
    assert!(f.ns.nft_json("netdev", t).is_none());
    f.nft.delete_table(Family::Netdev, t).unwrap();
    f.nft.delete_chain(Family::Netdev, t, c).unwrap();
    assert!(f.nft.list_chains(Family::Netdev, t).unwrap().is_empty());
}

#[test]
fn counted_spoofcheck_and_list_chains_per_table() {
    if !ready("counted_spoofcheck_and_list_chains_per_table") {
        return;
    }
    let f = fixture("ls");
    let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x07];
    f.nft
        .add_spoofcheck_counted("plumb", "spoof-a", &f.dev, mac)
        .unwrap();
    f.nft
        .add_spoofcheck("plumb", "spoof-b", &f.peer, mac)
        .unwrap();
    f.nft
        .add_spoofcheck("other", "spoof-c", &f.dev, mac)
        .unwrap();

    let mut names = f.nft.list_chains(Family::Netdev, "plumb").unwrap();
    names.sort();
    assert_eq!(names, vec!["spoof-a", "spoof-b"]);
    assert_eq!(
        f.nft.list_chains(Family::Netdev, "other").unwrap(),
        vec!["spoof-c"]
    );
    // Same table name, other family: nothing.
    assert!(f.nft.list_chains(Family::Ip, "plumb").unwrap().is_empty());
    assert!(f
        .nft
        .list_chains(Family::Netdev, "none")
        .unwrap()
        .is_empty());

    let listing = f.ns.nft_json("netdev", "plumb").unwrap();
    assert_eq!(
        rules(&listing, "spoof-a"),
        vec![&json!([
            spoof_rule(mac),
            {"counter": {"packets": 0, "bytes": 0}},
            {"drop": null}
        ])]
    );
    let text = f.ns.nft_text("netdev", "plumb").unwrap();
    assert!(text.contains(&format!("device \"{}\"", f.peer)), "{text}");

    f.nft.delete_table(Family::Netdev, "plumb").unwrap();
    f.nft.delete_table(Family::Netdev, "other").unwrap();
    assert!(f
        .nft
        .list_chains(Family::Netdev, "plumb")
        .unwrap()
        .is_empty());
}

#[test]
fn missing_device_is_a_clean_error_and_leaves_nothing() {
    if !ready("missing_device_is_a_clean_error_and_leaves_nothing") {
        return;
    }
    let f = fixture("nd");
    let mac = f.ns.mac(&f.peer);

    // With no table beforehand: not even the table appears.
    let e = f
        .nft
        .add_spoofcheck("fresh", "spoof-x", "nosuchdev0", mac)
        .unwrap_err();
    assert_eq!(errno(&e), Some(libc::ENODEV), "{e}");
    assert!(e.to_string().contains("nosuchdev0"), "{e}");
    assert!(f.ns.nft_json("netdev", "fresh").is_none());

    // With an existing table: no chain.
    f.nft.ensure_table(Family::Netdev, "plumb").unwrap();
    assert!(f
        .nft
        .add_spoofcheck("plumb", "spoof-x", "nosuchdev0", mac)
        .is_err());
    assert!(f
        .nft
        .list_chains(Family::Netdev, "plumb")
        .unwrap()
        .is_empty());
    let listing = f.ns.nft_json("netdev", "plumb").unwrap();
    assert!(objects(&listing, "chain").is_empty(), "{listing}");
}

#[test]
fn a_refused_transaction_changes_nothing() {
    if !ready("a_refused_transaction_changes_nothing") {
        return;
    }
    let f = fixture("ab");
    let mac = f.ns.mac(&f.peer);
    // A regular chain "taken" with one rule, which another chain jumps to. Replacing it is the
    // batch: add table, flush taken (fine), delete taken (refused: in use), add chain, add rule.
    // The kernel goes on through the batch but must undo all of it, the flush included.
    f.ns.exec(&["nft", "add", "table", "netdev", "plumb"]);
    f.ns.exec(&["nft", "add", "chain", "netdev", "plumb", "taken"]);
    f.ns.exec(&["nft", "add", "rule", "netdev", "plumb", "taken", "counter"]);
    f.ns.exec(&["nft", "add", "chain", "netdev", "plumb", "other"]);
    f.ns.exec(&[
        "nft", "add", "rule", "netdev", "plumb", "other", "jump", "taken",
    ]);
    let before = f.ns.nft_json("netdev", "plumb").unwrap();

    let e = f
        .nft
        .add_spoofcheck("plumb", "taken", &f.dev, mac)
        .unwrap_err();
    eprintln!("refused as expected: {e}");
    assert_eq!(errno(&e), Some(libc::EBUSY), "{e}");
    assert!(
        e.to_string().contains("delete chain netdev plumb taken"),
        "the error names the refused step: {e}"
    );
    let after = f.ns.nft_json("netdev", "plumb").unwrap();
    assert_eq!(after, before, "nothing changed");
    assert_eq!(
        rules(&after, "taken"),
        vec![&json!([{"counter": {"packets": 0, "bytes": 0}}])]
    );
    assert!(chain(&after, "taken").unwrap().get("hook").is_none());

    // Same for a plain delete: the flush before the refused delete is rolled back.
    let e = f
        .nft
        .delete_chain(Family::Netdev, "plumb", "taken")
        .unwrap_err();
    assert_eq!(errno(&e), Some(libc::EBUSY), "{e}");
    assert_eq!(f.ns.nft_json("netdev", "plumb").unwrap(), before);

    // Once nothing refers to it, the regular chain is replaced by the base chain.
    f.ns.exec(&["nft", "flush", "chain", "netdev", "plumb", "other"]);
    f.nft.add_spoofcheck("plumb", "taken", &f.dev, mac).unwrap();
    let listing = f.ns.nft_json("netdev", "plumb").unwrap();
    assert_eq!(chain(&listing, "taken").unwrap()["hook"], "ingress");
    assert_eq!(
        rules(&listing, "taken"),
        vec![&json!([spoof_rule(mac), {"drop": null}])]
    );
}

#[test]
fn masquerade_chains_ip_and_ip6() {
    if !ready("masquerade_chains_ip_and_ip6") {
        return;
    }
    let f = fixture("mq");
    let nft = &f.nft;
    nft.add_masquerade(
        Family::Ip,
        "plumb-nat",
        "masq-one",
        "10.88.0.5".parse().unwrap(),
        ("10.88.3.4".parse().unwrap(), 16),
    )
    .unwrap();
    nft.add_masquerade_out(
        Family::Ip,
        "plumb-nat",
        "masq-router",
        ("10.89.0.0".parse().unwrap(), 24),
        "eth0",
    )
    .unwrap();
    nft.add_masquerade(
        Family::Ip6,
        "plumb-nat",
        "masq-one",
        "fd00:88::5".parse().unwrap(),
        ("fd00:88::".parse().unwrap(), 64),
    )
    .unwrap();
    nft.add_masquerade_out(
        Family::Ip6,
        "plumb-nat",
        "masq-router",
        ("fd00:89::".parse().unwrap(), 48),
        "vxlan0",
    )
    .unwrap();
    // Repeating an ADD replaces the rule.
    nft.add_masquerade(
        Family::Ip,
        "plumb-nat",
        "masq-one",
        "10.88.0.5".parse().unwrap(),
        ("10.88.0.0".parse().unwrap(), 16),
    )
    .unwrap();

    let v4 = f.ns.nft_json("ip", "plumb-nat").unwrap();
    for name in ["masq-one", "masq-router"] {
        let ch = chain(&v4, name).unwrap();
        assert_eq!(
            (&ch["type"], &ch["hook"], &ch["prio"], &ch["policy"]),
            (
                &json!("nat"),
                &json!("postrouting"),
                &json!(100),
                &json!("accept")
            ),
            "{ch}"
        );
    }
    let saddr = |proto: &str, right: Value| {
        json!({"match": {"op": "==",
            "left": {"payload": {"protocol": proto, "field": "saddr"}}, "right": right}})
    };
    let daddr_not_in = |proto: &str, addr: &str, len: u8| {
        json!({"match": {"op": "!=",
            "left": {"payload": {"protocol": proto, "field": "daddr"}},
            "right": {"prefix": {"addr": addr, "len": len}}}})
    };
    let oifname = |name: &str| json!({"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": name}});
    let masq = json!({"masquerade": null});
    assert_eq!(
        rules(&v4, "masq-one"),
        vec![&json!([
            saddr("ip", json!("10.88.0.5")),
            daddr_not_in("ip", "10.88.0.0", 16),
            masq
        ])]
    );
    assert_eq!(
        rules(&v4, "masq-router"),
        vec![&json!([
            saddr("ip", json!({"prefix": {"addr": "10.89.0.0", "len": 24}})),
            oifname("eth0"),
            masq
        ])]
    );
    let v6 = f.ns.nft_json("ip6", "plumb-nat").unwrap();
    assert_eq!(chain(&v6, "masq-one").unwrap()["hook"], "postrouting");
    assert_eq!(
        rules(&v6, "masq-one"),
        vec![&json!([
            saddr("ip6", json!("fd00:88::5")),
            daddr_not_in("ip6", "fd00:88::", 64),
            masq
        ])]
    );
    assert_eq!(
        rules(&v6, "masq-router"),
        vec![&json!([
            saddr("ip6", json!({"prefix": {"addr": "fd00:89::", "len": 48}})),
            oifname("vxlan0"),
            masq
        ])]
    );

    let mut names = nft.list_chains(Family::Ip, "plumb-nat").unwrap();
    names.sort();
    assert_eq!(names, vec!["masq-one", "masq-router"]);

    // Addresses of the wrong family are refused before anything is sent.
    let e = nft
        .add_masquerade(
            Family::Ip,
            "plumb-nat",
            "bad",
            "fd00::1".parse().unwrap(),
            ("10.0.0.0".parse().unwrap(), 8),
        )
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(!nft
        .list_chains(Family::Ip, "plumb-nat")
        .unwrap()
        .contains(&"bad".to_string()));

    nft.delete_chain(Family::Ip, "plumb-nat", "masq-one")
        .unwrap();
    nft.delete_chain(Family::Ip, "plumb-nat", "masq-one")
        .unwrap();
    assert_eq!(
        nft.list_chains(Family::Ip, "plumb-nat").unwrap(),
        vec!["masq-router"]
    );
    // The ip6 table is separate and untouched.
    assert_eq!(nft.list_chains(Family::Ip6, "plumb-nat").unwrap().len(), 2);
    nft.delete_table(Family::Ip, "plumb-nat").unwrap();
    nft.delete_table(Family::Ip6, "plumb-nat").unwrap();
    assert!(f.ns.nft_json("ip", "plumb-nat").is_none());
    assert!(f.ns.nft_json("ip6", "plumb-nat").is_none());
}

#[test]
fn a_socket_opened_after_setns_acts_in_that_namespace_from_any_thread() {
    if !ready("a_socket_opened_after_setns_acts_in_that_namespace_from_any_thread") {
        return;
    }
    let ns = Netns::new("fd");
    let (dev, peer) = (unique("h"), unique("c"));
    ns.veth(&dev, &peer);
    let table = unique("t");

    // A session's worker enters the namespace, opens the socket (both ways), and hands it back;
    // the worker ends with the session, before the sockets are used here.
    let session =
        plumb_net::session::Session::enter(plumb_net::netns::Netns::open(&ns.path()).unwrap())
            .unwrap();
    let (nft, fd) = session
        .run(|| Ok((Nft::new()?, plumb_nft::open_socket()?)))
        .unwrap();
    drop(session);
    let nft2 = Nft::from_fd(fd).unwrap();

    // The device exists only in the test namespace: found there through the socket.
    nft.add_spoofcheck(&table, "spoof", &dev, [2, 0, 0, 0, 0, 1])
        .unwrap();
    assert_eq!(
        nft2.list_chains(Family::Netdev, &table).unwrap(),
        vec!["spoof"]
    );
    assert!(ns.nft_json("netdev", &table).is_some());
    // And nothing appeared in this process's own namespace.
    let here = Nft::new().unwrap();
    assert!(here.list_chains(Family::Netdev, &table).unwrap().is_empty());
    assert!(here
        .add_spoofcheck(&table, "spoof", &dev, [2, 0, 0, 0, 0, 1])
        .is_err());
    assert!(here.list_chains(Family::Netdev, &table).unwrap().is_empty());

    nft2.delete_chain(Family::Netdev, &table, "spoof").unwrap();
    assert!(nft.list_chains(Family::Netdev, &table).unwrap().is_empty());
    nft.delete_table(Family::Netdev, &table).unwrap();
}

#[test]
fn deleting_the_chain_works_after_its_device_is_gone() {
    if !ready("deleting_the_chain_works_after_its_device_is_gone") {
        return;
    }
    let f = fixture("gone");
    f.nft
        .add_spoofcheck("plumb", "spoof-gone", &f.dev, [2, 0, 0, 0, 0, 9])
        .unwrap();
    f.ns.exec(&["ip", "link", "del", &f.dev]);
    // Older kernels drop a single-device netdev chain with its device; newer ones keep it,
    // unhooked. Either way a CNI DEL must succeed and leave no chain.
    f.nft
        .delete_chain(Family::Netdev, "plumb", "spoof-gone")
        .unwrap();
    assert!(f
        .nft
        .list_chains(Family::Netdev, "plumb")
        .unwrap()
        .is_empty());
}

#[test]
fn delete_table_if_empty_keeps_a_table_in_use() {
    if !ready("delete_table_if_empty_keeps_a_table_in_use") {
        return;
    }
    let f = fixture("nte");
    let (nft, t) = (&f.nft, "plumb-masq-test");
    let v4 = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let subnet = (v4("10.9.0.0"), 24);
    nft.add_masquerade(Family::Ip, t, "a", v4("10.9.0.2"), subnet)
        .unwrap();
    nft.add_masquerade(Family::Ip, t, "b", v4("10.9.0.3"), subnet)
        .unwrap();
    // Chains left: the table stays, untouched.
    assert!(!nft.delete_table_if_empty(Family::Ip, t).unwrap());
    nft.delete_chain(Family::Ip, t, "a").unwrap();
    assert!(!nft.delete_table_if_empty(Family::Ip, t).unwrap());
    assert_eq!(nft.list_chains(Family::Ip, t).unwrap(), vec!["b"]);
    nft.delete_chain(Family::Ip, t, "b").unwrap();
    assert!(nft.delete_table_if_empty(Family::Ip, t).unwrap());
    assert!(f.ns.nft_json("ip", t).is_none());
    // Absent is gone too.
    assert!(nft.delete_table_if_empty(Family::Ip, t).unwrap());

    // No chain but a set: the listing says "empty", the kernel refuses the delete (NLM_F_NONREC,
    // EBUSY), which is what makes a chain added between the listing and the delete safe.
    f.ns.exec(&["nft", "add", "table", "ip", t]);
    f.ns.exec(&[
        "nft",
        "add",
        "set",
        "ip",
        t,
        "s",
        "{",
        "type",
        "ipv4_addr",
        ";",
        "}",
    ]);
    assert!(!nft.delete_table_if_empty(Family::Ip, t).unwrap());
    let listing = f.ns.nft_json("ip", t).expect("the table in use stays");
    assert_eq!(objects(&listing, "set").len(), 1, "{listing}");
    nft.delete_table(Family::Ip, t).unwrap();
}
