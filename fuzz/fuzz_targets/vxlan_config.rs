//! plumb-vxlan's config reader: the first line is CNI_ARGS (its `MAC=` is passed on), the rest the
//! network configuration. A config reads or is refused with code 7; a read config has distinct valid
//! interface names, a VNI and port in range, one underlay family, and a multicast group or unicast peers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumb_cni::code;
use plumb_fuzz::{args_and_conf, check_error, is_ifname};
use plumb_vxlan::config::{Flood, Mtu, Role, VxlanConfig, MAX_VNI};

fuzz_target!(|data: &[u8]| {
    let Some((args, net)) = args_and_conf(data) else {
        return;
    };
    let cfg = match VxlanConfig::from_conf(&net, args.get("MAC")) {
        Ok(c) => c,
        Err(e) => return check_error(&e, &[code::INVALID_CONFIG], "VxlanConfig::from_conf"),
    };
    assert!(is_ifname(&cfg.bridge) && is_ifname(&cfg.vtep) && cfg.bridge != cfg.vtep);
    assert!(cfg.underlay.as_deref().is_none_or(is_ifname));
    assert!((1..=MAX_VNI).contains(&u64::from(cfg.vni)));
    assert!(cfg.port != 0);
    match &cfg.flood {
        Flood::Group(g) => assert!(g.is_multicast()),
        Flood::Peers(p) => {
            assert!(!p.is_empty());
            for (i, ip) in p.iter().enumerate() {
                assert!(!ip.is_multicast() && !ip.is_unspecified() && !ip.is_loopback());
                assert_eq!(ip.is_ipv6(), p[0].is_ipv6(), "mixed families");
                assert!(!p[..i].contains(ip), "duplicate peer");
            }
        }
        Flood::FromNodes(f) => {
            assert!(!f.address_type.is_empty());
            assert!(f.address_type.chars().all(|c| c.is_ascii_alphanumeric()));
            assert!((1..=300).contains(&f.timeout_secs));
        }
    }
    assert!(cfg.local.is_none_or(|l| l.is_ipv6() == cfg.flood.is_ipv6()));
    if let Mtu::Fixed(m) = cfg.mtu {
        assert!((68..=65535).contains(&m));
    }
    if let Role::Router {
        masquerade_out: Some(out),
    } = &cfg.role
    {
        assert!(is_ifname(out));
    }
    assert!(
        cfg.mac.is_none_or(|m| m[0] & 1 == 0),
        "multicast MAC accepted"
    );
    assert!(cfg.overhead() == 50 || cfg.overhead() == 70);
});
