//! The engine's plan, rollback order, DEL and CHECK, run against the recording fake: no root, no
//! kernel. Shared fixtures here; the cases by concern in `add`, `rollback`, `del` and `check`.

mod add;
mod check;
mod del;
mod rollback;

use crate::attach::{add_attachment_with, delete_host_veth_with, rollback_with, OwnStep, Undo};
use crate::fake::Fake;
use crate::naming;
use crate::plan::PortPlan;
use plumb_cni::result::{IpConfig, Route as CniRoute};
use plumb_cni::{code, AddResult, Command, Request};
use plumb_net::nl::Route;
use std::collections::BTreeSet;

const CID: &str = "c0ffee";
const IFNAME: &str = "eth0";

fn request() -> Request {
    let stdin = br#"{"cniVersion":"1.0.0","name":"net1","type":"plumb-bridge"}"#.to_vec();
    crate::fake::request(Command::Add, CID, IFNAME, "/var/run/netns/fake", stdin)
}

fn veth() -> String {
    naming::host_veth(CID, IFNAME)
}

fn ip(addr: &str, gw: Option<&str>) -> IpConfig {
    IpConfig {
        address: addr.parse().unwrap(),
        gateway: gw.map(|g| g.parse().unwrap()),
        interface: None,
    }
}

fn ipam_plan() -> PortPlan {
    PortPlan {
        bridge: "br0".into(),
        ipam_type: Some("plumb-ipam".into()),
        ..Default::default()
    }
}

fn dual_stack() -> AddResult {
    AddResult {
        ips: vec![
            ip("10.1.0.5/24", Some("10.1.0.1")),
            ip("fd00:1::5/64", Some("fd00:1::1")),
        ],
        ..Default::default()
    }
}

/// The gateway step the fake stands in for (the fake never calls it).
fn no_gateway(
    _: &mut Route,
    _: &plumb_net::link::Link,
    _: &[IpConfig],
    _: &mut Vec<Undo>,
) -> plumb_cni::CniResult<()> {
    unreachable!("the fake runs its own gateway step")
}

fn add(f: &mut Fake, plan: &PortPlan, undo: &mut Vec<Undo>) -> plumb_cni::CniResult<AddResult> {
    let bridge = f.bridge();
    add_attachment_with(f, &request(), plan, bridge, undo, Some(&no_gateway))
}
