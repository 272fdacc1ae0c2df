//! plumb-ipam's config reader, ranges, range_start/range_end, excludes and gateway included: a config
//! reads or is refused with code 7; the ranges of a read config hold at least one allocatable address,
//! their blocked spans are sorted, merged and inside the span, the gateway and the IPv4 network and
//! broadcast addresses are never allocatable, and ranges of one family do not overlap. libFuzzer's
//! -timeout catches work that grows with the size of a range or an exclusion.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumb_cni::{code, NetConf};
use plumb_fuzz::check_error;
use plumb_ipam::config::{validate_space, IpamConfig, Store, DEFAULT_SPACE};
use plumb_ipam::range::{from_int, Family};

fuzz_target!(|data: &[u8]| {
    let Ok(net) = NetConf::parse(data) else {
        return;
    };
    let cfg = match IpamConfig::from_conf(&net) {
        Ok(c) => c,
        // Code 5: the Kubernetes store could not read the host name for its node name.
        Err(e) => {
            let allowed = [code::INVALID_CONFIG, code::IO_FAILURE];
            return check_error(&e, &allowed, "IpamConfig::from_conf");
        }
    };
    assert!(!cfg.ranges.is_empty());
    for (i, r) in cfg.ranges.iter().enumerate() {
        assert!(r.start <= r.end, "{}", r.describe());
        assert!(r.usable() >= 1 && r.usable() <= r.last_offset() + 1);
        assert!(r.subnet.contains(r.addr(0)) && r.subnet.contains(r.addr(r.last_offset())));
        for w in r.blocked.windows(2) {
            assert!(
                w[0].hi.saturating_add(1) < w[1].lo,
                "blocked spans not merged"
            );
        }
        for s in &r.blocked {
            assert!(s.lo <= s.hi && s.hi <= r.last_offset());
            assert!(!r.allows(r.addr(s.lo)) && !r.allows(r.addr(s.hi)));
        }
        if let Some(g) = r.gateway {
            assert!(
                r.subnet.contains(g) && !r.allows(g),
                "gateway {g} allocatable"
            );
        }
        let fam = r.family();
        if fam == Family::V4 && r.subnet.prefix <= 30 {
            assert!(
                !r.allows(from_int(fam, r.subnet.first())),
                "network address"
            );
            assert!(
                !r.allows(from_int(fam, r.subnet.last())),
                "broadcast address"
            );
        }
        if fam == Family::V6 && r.subnet.prefix <= 126 {
            assert!(
                !r.allows(from_int(fam, r.subnet.first())),
                "subnet-router anycast"
            );
        }
        assert!(!r.key().is_empty());
        for other in &cfg.ranges[i + 1..] {
            let disjoint = other.family() != fam || r.end < other.start || other.end < r.start;
            assert!(disjoint, "{} overlaps {}", r.describe(), other.describe());
        }
    }
    // The default space starts with '_' so that no network_name can name it.
    if cfg.space != DEFAULT_SPACE {
        assert_eq!(
            validate_space(&cfg.space).as_deref(),
            Ok(cfg.space.as_str())
        );
    }
    assert!(cfg.data_dir.is_absolute());
    assert!(cfg.lock_timeout_secs <= 3600);
    if let Store::Kubernetes(k) = &cfg.store {
        assert!(!k.node.is_empty() && !k.timeout.is_zero());
    }
});
