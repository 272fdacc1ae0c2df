//! plumb-net's VXLAN devices and flood list against the running kernel, inside a throw-away netns:
//! create a VTEP, read its settings back, append flood entries (no duplicates), remove one, and
//! compare with what `bridge fdb` shows. Needs root and the vxlan module; skips loudly otherwise.

use plumb_net::fdb;
use plumb_net::link;
use plumb_net::netns::Netns;
use plumb_net::session::Session;
use plumb_net::vxlan::{self, VxlanSettings};
use std::net::IpAddr;
use std::process::Command;

struct DelNetns(String);
impl Drop for DelNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn vtep_settings_and_flood_list() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED plumb-net vxlan test: needs root");
        return;
    }
    let name = format!("plvx{}", std::process::id());
    let _del = DelNetns(name.clone());
    assert!(Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap()
        .success());
    let ns = Netns::open(&format!("/run/netns/{name}")).unwrap();
    // One session, as a plugin request has: its socket acts in the namespace from this thread.
    let mut pod = Session::enter(ns).unwrap();
    let nl = pod.route();
    (|| -> std::io::Result<()> {
        link::create_bridge(nl, "und0", Some(9000), false)?;
        let und = link::by_name(nl, "und0")?.unwrap();
        let want = VxlanSettings {
            vni: 4242,
            group: None,
            local: Some(ip("10.5.0.1")),
            port: 8472,
            underlay: Some(und.index),
            learning: false,
        };
        vxlan::create(nl, "vt0", &want, Some(8950))?;
        let (l, got) = vxlan::lookup(nl, "vt0")?.unwrap();
        assert_eq!(got, Some(want.clone()));
        assert_eq!((l.kind.as_deref(), l.mtu), (Some("vxlan"), 8950));
        let e = vxlan::create(nl, "vt0", &want, None).unwrap_err();
        assert!(plumb_net::nl::is_exists(&e), "{e}");
        // Not a VXLAN device: found, without settings.
        assert_eq!(vxlan::lookup(nl, "und0")?.map(|(_, s)| s), Some(None));
        assert!(vxlan::lookup(nl, "nope0")?.is_none());

        let g = VxlanSettings {
            vni: 7,
            group: Some(ip("ff05::88")),
            local: None,
            port: 4789,
            underlay: Some(und.index),
            learning: true,
        };
        vxlan::create(nl, "vt6", &g, None)?;
        assert_eq!(vxlan::lookup(nl, "vt6")?.unwrap().1, Some(g));

        for p in ["10.5.0.2", "10.5.0.3", "10.5.0.2"] {
            fdb::append(nl, l.index, ip(p))?;
        }
        let mut list = fdb::flood_list(nl, l.index)?;
        list.sort();
        assert_eq!(
            list,
            vec![ip("10.5.0.2"), ip("10.5.0.3")],
            "appending twice must not duplicate"
        );
        fdb::remove(nl, l.index, ip("10.5.0.2"))?;
        fdb::remove(nl, l.index, ip("10.5.0.9"))?;
        assert_eq!(fdb::flood_list(nl, l.index)?, vec![ip("10.5.0.3")]);
        Ok(())
    })()
    .unwrap();
    let out = Command::new("ip")
        .args([
            "netns", "exec", &name, "bridge", "fdb", "show", "dev", "vt0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let zero: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("00:00:00:00:00:00"))
        .collect();
    assert_eq!(zero.len(), 1, "bridge fdb shows: {text}");
    assert!(
        zero[0].contains("dst 10.5.0.3") && zero[0].contains("permanent"),
        "{text}"
    );
}
