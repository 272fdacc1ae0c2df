//! prevResult as a chained plugin gets it: the first byte picks the config's cniVersion, the rest is
//! put in as the value of `prevResult`. The config reads (with the prevResult converted to the current
//! shape, equal to reading it alone) or is refused with a prevResult error of code 6 or 7; a read
//! prevResult survives the round trips of a result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumb_cni::{code, AddResult, NetConf};
use plumb_fuzz::{check_error, check_result_round_trips, version_from};

fuzz_target!(|data: &[u8]| {
    let Some((&first, prev)) = data.split_first() else {
        return;
    };
    let version = version_from(first);
    let mut conf =
        format!(r#"{{"cniVersion":"{version}","name":"n","type":"t","prevResult":"#).into_bytes();
    conf.extend_from_slice(prev);
    conf.push(b'}');
    let conf = match NetConf::parse(&conf) {
        Ok(c) => c,
        Err(e) => {
            let allowed = [
                code::INCOMPATIBLE_VERSION,
                code::DECODE_FAILURE,
                code::INVALID_CONFIG,
            ];
            return check_error(&e, &allowed, "NetConf::parse with prevResult");
        }
    };
    // The bytes may close the object early and add fields (the last of a duplicated key wins).
    let Some(prev) = &conf.prev_result else {
        assert!(conf.raw.get("prevResult").is_none_or(|v| v.is_null()));
        return;
    };
    let alone = AddResult::parse(&conf.raw["prevResult"], conf.version).unwrap();
    assert_eq!(&alone, prev);
    check_result_round_trips(prev, conf.version);
});
