//! The spoof check on real frames: two namespaces made here, joined by a veth; the check sits on
//! the "host" end and must drop exactly the frames whose source MAC is not the "pod" end's.
//! Root only; skipped loudly otherwise. No traffic leaves the two namespaces.

mod common;

use common::*;
use plumb_nft::Family;

fn pings(from: &Netns, addr: &str) -> bool {
    from.try_exec(&["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", addr])
}

#[test]
fn spoofcheck_drops_frames_from_a_changed_mac_until_the_chain_is_deleted() {
    let test = "spoofcheck_drops_frames_from_a_changed_mac_until_the_chain_is_deleted";
    if !ready(test) {
        return;
    }
    let host = Netns::new("th");
    let pod = Netns::new("tp");
    let (v0, v1) = (unique("v0"), unique("v1"));
    // v0 in `host`, its peer v1 made directly in `pod`.
    host.exec(&[
        "ip", "link", "add", &v0, "type", "veth", "peer", "name", &v1, "netns", &pod.name,
    ]);
    let x = std::process::id() % 250 + 1;
    let (host_ip, pod_ip) = (format!("10.254.{x}.1"), format!("10.254.{x}.2"));
    host.exec(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &v0]);
    pod.exec(&["ip", "addr", "add", &format!("{pod_ip}/30"), "dev", &v1]);
    host.exec(&["ip", "link", "set", &v0, "up"]);
    pod.exec(&["ip", "link", "set", &v1, "up"]);
    assert!(pings(&pod, &host_ip), "baseline ping pod -> host");

    let nft = nft_in(&host.path()).unwrap();
    let table = "plumb";
    let chain = format!("spoof-{v0}");
    let pod_mac = pod.mac(&v1);
    nft.add_spoofcheck_counted(table, &chain, &v0, pod_mac)
        .unwrap();
    assert!(pings(&pod, &host_ip), "allowed MAC still gets through");
    let dropped = |nft_ns: &Netns| -> u64 {
        let listing = nft_ns.nft_json("netdev", table).unwrap();
        let rule = rules(&listing, &chain)[0].clone();
        rule.as_array()
            .unwrap()
            .iter()
            .find_map(|e| e.get("counter"))
            .and_then(|c| c["packets"].as_u64())
            .unwrap()
    };
    assert_eq!(dropped(&host), 0, "nothing dropped while the MAC matches");

    // The pod changes its MAC: every frame it sends now fails the check.
    pod.exec(&["ip", "link", "set", &v1, "address", "02:00:5e:10:20:30"]);
    assert!(!pings(&pod, &host_ip), "spoofed source MAC must be dropped");
    assert!(dropped(&host) > 0, "the drop rule counted the frames");

    nft.delete_chain(Family::Netdev, table, &chain).unwrap();
    assert!(nft.list_chains(Family::Netdev, table).unwrap().is_empty());
    // The host may still map the pod's address to the old MAC: forget it on both sides.
    host.exec(&["ip", "neigh", "flush", "dev", &v0]);
    pod.exec(&["ip", "neigh", "flush", "dev", &v1]);
    assert!(pings(&pod, &host_ip), "traffic flows again once deleted");
    nft.delete_table(Family::Netdev, table).unwrap();
}
