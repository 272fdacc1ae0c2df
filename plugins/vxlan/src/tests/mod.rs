//! plumb-vxlan's host logic run against the recording fake (`crate::fake`): no root, no kernel.
//! Shared fixtures here; the cases by concern: the VTEP (`vtep`), its flood list (`flood`), the MTUs
//! (`mtu`), the router role (`router`), CHECK (`check`) and ADD's rollback (`rollback`).

mod check;
mod flood;
mod mtu;
mod rollback;
mod router;
mod vtep;

use crate::config::VxlanConfig;
use crate::fake::{Fake, UNDERLAY};
use crate::host::Ns;
use crate::plugin::add_with;
use crate::vtep::wanted;
use plumb_cni::result::{IpConfig, Route as CniRoute};
use plumb_cni::{code, AddResult, CniResult, Command, Request};
use serde_json::{json, Value};
use std::net::IpAddr;

const CID: &str = "c0ffee";
const IFNAME: &str = "net1";
const BRIDGE: &str = "gw0";
const VTEP: &str = "gw0-vx";

/// A plumb-vxlan config: bridge gw0, VNI 42, IPAM, and `extra` (which must say how to flood).
fn conf(extra: Value) -> Value {
    let mut v = json!({
        "cniVersion": "1.0.0", "name": "gw", "type": "plumb-vxlan",
        "bridge": BRIDGE, "vni": 42, "ipam": {"type": "plumb-ipam"}
    });
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

/// A multicast config (no flood list).
fn multicast() -> Value {
    conf(json!({"group": "239.1.1.1"}))
}

/// A unicast config: this node and two others.
fn unicast() -> Value {
    conf(json!({"peers": ["192.168.0.1", "192.168.0.2", "192.168.0.3"]}))
}

fn request(v: &Value) -> Request {
    let stdin = serde_json::to_vec(v).unwrap();
    plumb_attach::fake::request(Command::Add, CID, IFNAME, "/var/run/netns/fake", stdin)
}

fn config(v: &Value) -> VxlanConfig {
    VxlanConfig::from_conf(&request(v).conf, None).expect("test config is valid")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ipc(addr: &str) -> IpConfig {
    IpConfig {
        address: addr.parse().unwrap(),
        gateway: None,
        interface: None,
    }
}

fn route(dst: &str) -> CniRoute {
    CniRoute {
        dst: dst.parse().unwrap(),
        gw: None,
        mtu: None,
        advmss: None,
        priority: None,
        table: None,
        scope: None,
    }
}

/// What the fake attach engine returns: one IPv4 and one IPv6 address and an overlay route.
fn dual_stack() -> AddResult {
    AddResult {
        ips: vec![ipc("10.1.0.5/24"), ipc("fd00:1::5/64")],
        routes: vec![route("172.30.0.0/24")],
        ..Default::default()
    }
}

/// The configured peers (for unicast) as ADD hands them to [`add_with`].
fn listed(cfg: &VxlanConfig) -> Option<Vec<IpAddr>> {
    match &cfg.flood {
        crate::config::Flood::Peers(p) => Some(p.clone()),
        _ => None,
    }
}

/// ADD under the lock, over the fake.
fn add(f: &mut Fake, v: &Value) -> CniResult<AddResult> {
    let cfg = config(v);
    add_with(f, &request(v), &cfg, listed(&cfg).as_deref())
}

/// Puts on the fake node what a first ADD of `v` makes: bridge gw0 and its VTEP, up, at MTU `mtu`,
/// with the VTEP's settings as `v` wants them.
fn node_with_vtep(f: &mut Fake, v: &Value, mtu: u32) {
    let cfg = config(v);
    let underlay = f.host(UNDERLAY).clone();
    let br = f.add_host_link(BRIDGE, "bridge");
    f.add_host_link(VTEP, "vxlan");
    for (name, controller) in [(BRIDGE, None), (VTEP, Some(br.index))] {
        let l = f.host_mut(name);
        (l.up, l.lower_up, l.mtu, l.controller) = (true, true, mtu, controller);
    }
    f.model.vxlan.insert(VTEP.into(), wanted(&cfg, &underlay));
    f.model.sysctls.insert(
        (Ns::Host, format!("net/ipv6/conf/{BRIDGE}/accept_ra")),
        "0".into(),
    );
}

/// The message and code of an error, for exact comparisons.
fn refused<T: std::fmt::Debug>(r: CniResult<T>) -> (u32, String) {
    let e = r.expect_err("refused");
    (e.code, e.msg)
}
