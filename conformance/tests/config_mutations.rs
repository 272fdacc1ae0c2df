//! Mutation testing of the config readers a runtime feeds with operator-written JSON: thousands of
//! configs derived from valid ones (fields dropped, values of every JSON type put in their place,
//! numbers at and past their limits, odd strings) go through the spec layer and the readers of
//! plumb-vxlan, plumb-bridge and plumb-ipam, and must each give a config or an error with a message,
//! never a panic. A stand-in until a coverage-guided fuzzer (cargo-fuzz, on nightly) is set up.
//! Deterministic (a fixed xorshift seed), so a failure reproduces.

use conformance::XorShift;
use plumb_bridge::config::BridgeConfig;
use plumb_cni::NetConf;
use plumb_ipam::config::IpamConfig;
use plumb_vxlan::config::VxlanConfig;
use serde_json::{json, Value};

/// Values of every JSON type, including the limits the readers check.
fn odd_value(r: &mut XorShift) -> Value {
    let pool = [
        json!(null),
        json!(true),
        json!("true"),
        json!(0),
        json!(-1),
        json!(1),
        json!(65535),
        json!(65536),
        json!(16_777_215),
        json!(16_777_216),
        json!(u64::MAX),
        json!(1.5),
        json!(""),
        json!("auto"),
        json!("224.0.0.88"),
        json!("ff05::88"),
        json!("10.0.0.1"),
        json!("not an address"),
        json!("a-name-far-too-long-for-an-interface"),
        json!("eth0"),
        json!("../../etc"),
        json!([]),
        json!(["10.0.0.1", "fd00::1"]),
        json!([1, 2]),
        json!({}),
        json!({"fromNodes": {}}),
        json!({"fromNodes": {"family": 6}}),
        json!("10.0.0.0/8"),
        json!("10.0.0.0/33"),
        json!("fd00::/0"),
        json!("10.0.0.5-10.0.0.1"),
        json!("10.0.0.10-10.0.0.20/24"),
        json!([{"range": "fd00::/127"}]),
        json!(["10.0.0.0/24"]),
        json!([{"dst": "0.0.0.0/0"}]),
        json!({"outInterface": 7}),
        json!({"type": "plumb-ipam"}),
        json!("\u{0}\u{ffff}"),
    ];
    pool[r.index(pool.len())].clone()
}

fn mutate(base: &Value, r: &mut XorShift) -> Value {
    let mut v = base.clone();
    let obj = v.as_object_mut().unwrap();
    for _ in 0..1 + r.index(3) {
        let keys: Vec<String> = obj.keys().cloned().collect();
        let key = keys[r.index(keys.len())].clone();
        match r.index(4) {
            0 => {
                obj.remove(&key);
            }
            1 => {
                // Nested: mutate inside an object value (ipam, masquerade, peers.fromNodes).
                if let Some(Value::Object(inner)) = obj.get_mut(&key) {
                    let ik: Vec<String> = inner.keys().cloned().collect();
                    if !ik.is_empty() {
                        let k = ik[r.index(ik.len())].clone();
                        inner.insert(k, odd_value(r));
                    }
                }
            }
            _ => {
                obj.insert(key, odd_value(r));
            }
        }
    }
    v
}

#[test]
fn readers_answer_every_mutated_config() {
    let bases = [
        json!({"cniVersion": "1.1.0", "name": "gw", "type": "plumb-vxlan", "bridge": "gw0", "vni": 42,
               "group": "224.0.0.88", "port": 4789, "mtu": "auto", "learning": true,
               "role": "router", "masquerade": {"outInterface": "eth0"},
               "ipam": {"type": "plumb-ipam", "range": "192.168.50.0/24"}}),
        json!({"cniVersion": "1.0.0", "name": "gw", "type": "plumb-vxlan", "bridge": "gw0", "vni": 7,
               "peers": {"fromNodes": {"addressType": "InternalIP", "family": "IPv6"}},
               "kubernetes": {"kubeconfig": "/k", "timeoutSeconds": 5}, "local": "fd00::1"}),
        json!({"cniVersion": "0.4.0", "name": "br", "type": "plumb-bridge", "bridge": "br0",
               "isGateway": true, "vlan": 10, "vlanTrunk": [{"minID": 20, "maxID": 30}],
               "mtu": 1400, "macspoofchk": true, "dns": {"nameservers": ["10.0.0.53"]},
               "runtimeConfig": {"mac": "02:00:00:00:00:01"}, "ipam": {"type": "host-local"}}),
        json!({"cniVersion": "1.0.0", "name": "ip", "type": "plumb-ipam",
               "ipam": {"type": "plumb-ipam", "range": "10.1.0.0/24", "range_start": "10.1.0.10",
                        "range_end": "10.1.0.200", "exclude": ["10.1.0.32/28"], "gateway": "10.1.0.1",
                        "ipRanges": [{"range": "fd00:1::/120"}], "network_name": "n",
                        "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/tmp/x"}}),
    ];
    let mut r = XorShift::new(0x9e37_79b9_7f4a_7c15);
    let (mut parsed, mut refused) = (0, 0);
    for i in 0..30_000 {
        let conf = mutate(&bases[i % bases.len()], &mut r);
        let bytes = serde_json::to_vec(&conf).unwrap();
        let Ok(net) = NetConf::parse(&bytes) else {
            refused += 1;
            continue;
        };
        for outcome in [
            VxlanConfig::from_conf(&net, None).map(|_| ()),
            BridgeConfig::from_conf(&net, Some("02:00:00:00:00:02")).map(|_| ()),
            IpamConfig::from_conf(&net).map(|_| ()),
        ] {
            match outcome {
                Ok(()) => parsed += 1,
                Err(e) => {
                    assert!(!e.msg.is_empty(), "error without a message for {conf}");
                    refused += 1;
                }
            }
        }
    }
    println!("mutated configs: {parsed} read, {refused} refused with a message");
    assert!(
        parsed > 1000 && refused > 1000,
        "the mutations must hit both outcomes"
    );
}

#[test]
fn spec_layer_answers_arbitrary_bytes() {
    let mut r = XorShift::new(0x2545_f491_4f6c_dd1d);
    let seeds: [&[u8]; 3] = [
        br#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"ips":[{"address":"10.0.0.2/24"}]}}"#,
        br#"{"cniVersion":"0.3.1","name":"n","type":"t","cni.dev/valid-attachments":[{"containerID":"c","ifname":"e"}]}"#,
        b"{}",
    ];
    for i in 0..30_000 {
        let mut b = seeds[i % seeds.len()].to_vec();
        for _ in 0..1 + r.index(4) {
            let at = r.index(b.len().max(1));
            match r.index(3) {
                0 if !b.is_empty() => {
                    b.remove(at.min(b.len() - 1));
                }
                1 => b.insert(at.min(b.len()), (r.next_u64() & 0xff) as u8),
                _ if !b.is_empty() => {
                    let n = b.len();
                    b[at.min(n - 1)] = b"{}[]\",:0123456789.-e"[r.index(20)];
                }
                _ => {}
            }
        }
        if let Err(e) = NetConf::parse(&b) {
            assert!(!e.msg.is_empty());
        }
    }
}
