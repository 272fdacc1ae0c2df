//! plumb-bridge's config reader: the first line is CNI_ARGS (its `MAC=` is passed on, as the plugin
//! does), the rest the network configuration. A config reads or is refused with code 7; a read config
//! holds only values the plugin can apply (interface names, VLAN ids, MTU, a unicast MAC).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumb_bridge::config::{BridgeConfig, MAX_VLAN};
use plumb_cni::code;
use plumb_fuzz::{args_and_conf, check_error, is_ifname};

fuzz_target!(|data: &[u8]| {
    let Some((args, net)) = args_and_conf(data) else {
        return;
    };
    let cfg = match BridgeConfig::from_conf(&net, args.get("MAC")) {
        Ok(c) => c,
        Err(e) => return check_error(&e, &[code::INVALID_CONFIG], "BridgeConfig::from_conf"),
    };
    assert!(is_ifname(&cfg.bridge), "{:?}", cfg.bridge);
    assert!(cfg.vlan <= MAX_VLAN);
    for (lo, hi) in &cfg.trunk {
        assert!(1 <= *lo && lo <= hi && *hi <= MAX_VLAN);
    }
    assert!(cfg.mtu.is_none_or(|m| (68..=65535).contains(&m)));
    assert!(
        cfg.mac.is_none_or(|m| m[0] & 1 == 0),
        "multicast MAC accepted"
    );
    assert!(!cfg.is_default_gateway || cfg.is_gateway);
    if cfg.vlan != 0 && cfg.is_gateway {
        assert!(is_ifname(&cfg.vlan_gateway_name()));
    }
    assert!(cfg.ipam_type.as_deref().is_none_or(|t| !t.is_empty()));
    assert_eq!(cfg.uses_vlans(), cfg.vlan != 0 || !cfg.trunk.is_empty());
});
