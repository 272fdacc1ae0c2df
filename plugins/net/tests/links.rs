//! plumb-net against the running kernel: namespaces, bridge, veth peer born in the netns, addresses,
//! routes, port options. Needs root; skips loudly otherwise.

use plumb_net::addr::{add_address, add_route, addresses, routes, RouteSpec};
use plumb_net::link::{self, PortOptions, VethSpec};
use plumb_net::netns::Netns;
use plumb_net::nl::Route;
use plumb_net::session::Session;
use std::process::Command;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = unsafe { libc::geteuid() } == 0;
    if !ok {
        eprintln!("SKIPPED plumb-net link tests: need root");
    }
    ok
}

struct Cleanup(Vec<Vec<&'static str>>, String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = Command::new(c[0]).args(&c[1..]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.1]).output();
        let _ = Command::new("ip").args(["link", "del", "plnbr0"]).output();
    }
}

#[test]
fn bridge_veth_address_route_and_port_options() {
    if !root() {
        return;
    }
    let ns_name = format!("plnet{}", std::process::id());
    let _c = Cleanup(vec![], ns_name.clone());
    assert!(Command::new("ip")
        .args(["netns", "add", &ns_name])
        .status()
        .unwrap()
        .success());
    let mut pod = Session::enter(Netns::open(&format!("/run/netns/{ns_name}")).unwrap()).unwrap();
    let mut host = Route::open().unwrap();

    link::create_bridge(&mut host, "plnbr0", Some(1400), false).unwrap();
    let br = link::by_name(&mut host, "plnbr0").unwrap().unwrap();
    assert_eq!((br.kind.as_deref(), br.mtu), (Some("bridge"), 1400));
    let e = link::create_bridge(&mut host, "plnbr0", None, false).unwrap_err();
    assert!(plumb_net::nl::is_exists(&e), "{e}");

    let mac = [0x02, 0, 0, 0, 0, 0x42];
    link::create_veth(
        &mut host,
        &VethSpec {
            host_name: "plnveth0",
            peer_name: "eth7",
            peer_netns_fd: pod.netns().fd(),
            mtu: Some(1400),
            peer_mac: Some(mac),
            host_mac: None,
        },
    )
    .unwrap();
    let hv = link::by_name(&mut host, "plnveth0").unwrap().unwrap();
    assert!(
        link::by_name(&mut host, "eth7").unwrap().is_none(),
        "peer must not appear in the host"
    );
    link::set_controller(&mut host, &hv, &br).unwrap();
    link::set_port_options(
        &mut host,
        &hv,
        PortOptions {
            hairpin: Some(true),
            learning: None,
            isolated: Some(true),
        },
    )
    .unwrap();
    link::set_up(&mut host, &hv, true).unwrap();
    link::set_up(&mut host, &br, true).unwrap();
    let hv = link::by_name(&mut host, "plnveth0").unwrap().unwrap();
    assert_eq!(hv.controller, Some(br.index));
    assert!(hv.up);
    let detail = Command::new("ip")
        .args(["-d", "-j", "link", "show", "plnveth0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&detail.stdout);
    assert!(text.contains("\"hairpin\":true"), "{text}");
    assert!(text.contains("\"isolated\":true"), "{text}");

    // The session's socket acts in the pod's namespace from this thread.
    let c = pod.route();
    let (peer, addrs, rts) = (|| -> std::io::Result<_> {
        let p = link::by_name(c, "eth7")?.expect("peer in netns");
        link::set_up(c, &p, true)?;
        add_address(c, p.index, "10.199.0.2".parse().unwrap(), 24, false)?;
        add_address(c, p.index, "10.199.0.2".parse().unwrap(), 24, false)?; // idempotent
        add_route(
            c,
            &RouteSpec {
                dst: "0.0.0.0".parse().unwrap(),
                prefix: 0,
                gw: Some("10.199.0.1".parse().unwrap()),
                oif: p.index,
                mtu: None,
                priority: None,
            },
        )?;
        let a = addresses(c, p.index)?;
        let r = routes(c, false)?;
        // One link's addresses come from a filtered dump: lo's are not among eth7's, and the
        // whole-namespace listing (index 0) still has both.
        let lo = link::by_name(c, "lo")?.expect("lo");
        link::set_up(c, &lo, true)?;
        let lo_addrs = addresses(c, lo.index)?;
        let all = addresses(c, 0)?;
        let own = addresses(c, p.index)?;
        assert!(
            lo_addrs.contains(&("127.0.0.1".parse().unwrap(), 8)),
            "{lo_addrs:?}"
        );
        assert!(
            !lo_addrs.contains(&("10.199.0.2".parse().unwrap(), 24)),
            "{lo_addrs:?}"
        );
        assert!(!own.iter().any(|x| x.0.is_loopback()), "{own:?}");
        assert!(all.contains(&("127.0.0.1".parse().unwrap(), 8)), "{all:?}");
        assert!(
            all.contains(&("10.199.0.2".parse().unwrap(), 24)),
            "{all:?}"
        );
        Ok((p, a, r))
    })()
    .unwrap();
    assert_eq!(peer.mac, Some(mac));
    assert_eq!(peer.mtu, 1400);
    let v4: Vec<_> = addrs.iter().filter(|a| a.0.is_ipv4()).collect();
    assert_eq!(v4, vec![&("10.199.0.2".parse().unwrap(), 24)]);
    assert!(
        rts.iter()
            .any(|r| r.prefix == 0 && r.gw == Some("10.199.0.1".parse().unwrap())),
        "{rts:?}"
    );
    // Sysctls go through the session's worker, inside the pod: the host's value stays.
    let key = "net/ipv4/ip_forward";
    let host_fwd = plumb_net::sysctl::read(key).unwrap();
    let flip = if host_fwd == "1" { "0" } else { "1" };
    pod.write_sysctl(key, flip).unwrap();
    assert_eq!(pod.read_sysctl(key).unwrap(), flip);
    assert_eq!(
        plumb_net::sysctl::read(key).unwrap(),
        host_fwd,
        "host forwarding changed"
    );
    // This thread never left the host namespace.
    assert!(link::by_name(&mut host, "plnveth0").unwrap().is_some());
    link::delete_by_name(&mut host, "plnveth0").unwrap();
    link::delete_by_name(&mut host, "plnveth0").unwrap();
    assert!(
        link::by_name(pod.route(), "eth7").unwrap().is_none(),
        "deleting one end removes the pair"
    );
    assert!(Netns::open("/run/netns/does-not-exist").is_err());
}
