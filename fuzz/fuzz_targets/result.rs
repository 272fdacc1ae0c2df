//! The result decoder and version converter: the first byte picks the version the rest (JSON) is read
//! in. A result reads or is refused with code 6; one that reads survives writing in its own version
//! and converting to every other (refused with code 1 only where 0.1.0/0.2.0 cannot hold it), and a
//! converted result re-parses into one that writes the same JSON again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumb_cni::{code, AddResult};
use plumb_fuzz::{check_error, check_result_round_trips, version_from};

fuzz_target!(|data: &[u8]| {
    let Some((&first, json)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let version = version_from(first);
    match AddResult::parse(&value, version) {
        Ok(r) => check_result_round_trips(&r, version),
        Err(e) => check_error(&e, &[code::DECODE_FAILURE], "AddResult::parse"),
    }
    match AddResult::parse_any(&value) {
        Ok(r) => {
            let named = value
                .get("cniVersion")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let v = plumb_cni::Version::parse(named).unwrap();
            check_result_round_trips(&r, v);
        }
        Err(e) => check_error(
            &e,
            &[code::DECODE_FAILURE, code::INCOMPATIBLE_VERSION],
            "AddResult::parse_any",
        ),
    }
});
