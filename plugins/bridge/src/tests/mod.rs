//! plumb-bridge's own host logic (the bridge, its gateway, the VLAN gateway, the uplink) and its undo
//! steps, run against a recording [`fake::Fake`] `BridgeHost`: no root, no kernel. Shared fixtures
//! here; the cases by concern in `bridge`, `gateway`, `uplink` and `rollback`.

mod bridge;
mod fake;
mod gateway;
mod rollback;
mod uplink;

use crate::config::BridgeConfig;
use crate::gateway::VlanGateway;
use crate::host::BridgeHost;
use crate::ports::CreatedBridge;
use crate::uplink::UplinkStep;
use fake::Fake;
use plumb_attach::attach::Undo;
use plumb_cni::result::IpConfig;
use plumb_cni::{CniError, NetConf};
use serde_json::{json, Value};

/// The config of `extra` on top of a plain plumb-bridge config for bridge `br0`.
fn cfg(extra: Value) -> BridgeConfig {
    let mut conf =
        json!({"cniVersion": "1.0.0", "name": "net1", "type": "plumb-bridge", "bridge": "br0"});
    conf.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let conf = NetConf::parse(conf.to_string().as_bytes()).expect("test config parses");
    BridgeConfig::from_conf(&conf, None).expect("test config is valid")
}

fn ip(addr: &str, gw: &str) -> IpConfig {
    IpConfig {
        address: addr.parse().unwrap(),
        gateway: Some(gw.parse().unwrap()),
        interface: None,
    }
}

/// Asserts an error's code and whole message.
fn assert_err(e: &CniError, code: u32, msg: &str) {
    assert_eq!((e.code, e.msg.as_str()), (code, msg), "{e:?}");
}

/// Takes back plumb-bridge's steps on `undo` newest first, as the engine's rollback does, but on the
/// fake (the steps' `OwnStep::undo` needs a real socket). Only what plumb-bridge itself pushes can be
/// on the stack here.
fn rollback(h: &mut dyn BridgeHost, undo: Vec<Undo>) -> Vec<String> {
    let mut failed = Vec::new();
    for step in undo.into_iter().rev() {
        let outcome = match &step {
            Undo::GatewayAddress { index, ip, prefix } => h
                .del_address(*index, *ip, *prefix)
                .map_err(|e| e.to_string()),
            Undo::Own(own) => {
                let any = own.as_any().expect("plumb-bridge's steps offer as_any");
                if let Some(s) = any.downcast_ref::<CreatedBridge>() {
                    s.take_back(h)
                } else if let Some(s) = any.downcast_ref::<VlanGateway>() {
                    s.take_back(h)
                } else if let Some(s) = any.downcast_ref::<UplinkStep>() {
                    s.take_back(h)
                } else {
                    panic!("not a plumb-bridge step: {own:?}")
                }
            }
            other => panic!("not a plumb-bridge step: {other:?}"),
        };
        if let Err(e) = outcome {
            failed.push(format!("{}: {e}", step.label()));
        }
    }
    failed
}
