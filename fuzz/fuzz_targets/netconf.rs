//! The spec layer's reader of stdin: any bytes give a NetConf or a code 1/6/7 error with a message;
//! a NetConf holds exactly what its raw object says (name, type, version, prevResult, attachments),
//! and every field reader answers on every key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumb_cni::{code, AddResult, NetConf, Version};
use plumb_fuzz::{check_error, check_result_round_trips};

fuzz_target!(|data: &[u8]| {
    let conf = match NetConf::parse(data) {
        Ok(c) => c,
        Err(e) => {
            let allowed = [
                code::INCOMPATIBLE_VERSION,
                code::DECODE_FAILURE,
                code::INVALID_CONFIG,
            ];
            return check_error(&e, &allowed, "NetConf::parse");
        }
    };
    assert!(!conf.name.is_empty() && !conf.plugin_type.is_empty());
    assert_eq!(conf.raw["name"], conf.name.as_str());
    assert_eq!(conf.raw["type"], conf.plugin_type.as_str());
    let written = conf.raw.get("cniVersion").and_then(|v| v.as_str());
    assert_eq!(Version::parse(written.unwrap_or("")), Ok(conf.version));
    if let Some(prev) = &conf.prev_result {
        let again = AddResult::parse(&conf.raw["prevResult"], conf.version).unwrap();
        assert_eq!(&again, prev);
        check_result_round_trips(prev, conf.version);
    }
    if let Some(list) = &conf.valid_attachments {
        let key = ["cni.dev/valid-attachments", "cni.dev/attachments"]
            .into_iter()
            .find(|k| conf.raw.contains_key(*k))
            .unwrap();
        assert_eq!(list.len(), conf.raw[key].as_array().unwrap().len());
    }
    for key in conf.raw.keys() {
        if let Err(e) = conf.bool_field(key) {
            check_error(&e, &[code::INVALID_CONFIG], "NetConf::bool_field");
        }
        if let Err(e) = conf.str_field(key) {
            check_error(&e, &[code::INVALID_CONFIG], "NetConf::str_field");
        }
    }
});
