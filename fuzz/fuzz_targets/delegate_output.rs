//! What a delegated (IPAM) plugin prints: on failure a CNI error object, on success a result in the
//! config's version (the first byte picks it). An error object reads back from the JSON plumb prints
//! for it; a result reads or is refused with code 6 and survives the round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumb_cni::{code, AddResult, CniError};
use plumb_fuzz::{check_error, check_result_round_trips, version_from};

fuzz_target!(|data: &[u8]| {
    let Some((&first, out)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(out) else {
        return;
    };
    let version = version_from(first);
    if let Some(e) = CniError::from_json(&value) {
        assert!(e.details.len() <= 1 && e.details.iter().all(|d| !d.is_empty()));
        let printed = e.to_json(version.as_str());
        assert_eq!(CniError::from_json(&printed), Some(e.clone()));
        assert!(e.to_string().starts_with(&e.msg));
    }
    match AddResult::parse(&value, version) {
        Ok(r) => check_result_round_trips(&r, version),
        Err(e) => check_error(&e, &[code::DECODE_FAILURE], "delegated result"),
    }
});
