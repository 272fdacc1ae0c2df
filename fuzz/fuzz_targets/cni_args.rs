//! CNI_ARGS (`K=V;K=V`): parses, or is refused with code 4 naming the bad pair; a parsed value is the
//! last one given for its key; IgnoreUnknown and the known-key check agree; the pod identity is what
//! the pairs say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumb_cni::args::{CniArgs, COMMON_KEYS};
use plumb_cni::code;
use plumb_fuzz::check_error;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    // The pairs as the spec describes them, computed independently of the parser.
    let segments: Vec<&str> = raw.split(';').filter(|p| !p.is_empty()).collect();
    let expected: Option<Vec<(&str, &str)>> = segments
        .iter()
        .map(|p| p.split_once('=').filter(|(k, _)| !k.is_empty()))
        .collect();
    let args = match CniArgs::parse(raw) {
        Ok(a) => a,
        Err(e) => {
            check_error(&e, &[code::INVALID_ENV], "CniArgs::parse");
            assert!(expected.is_none(), "{raw:?} refused: {e}");
            return;
        }
    };
    let pairs = expected.unwrap_or_else(|| panic!("{raw:?} read although a pair is malformed"));
    for (k, _) in &pairs {
        let last = pairs.iter().rev().find(|(k2, _)| k2 == k).unwrap().1;
        assert_eq!(args.get(k), Some(last));
    }
    let ignore = args
        .get("IgnoreUnknown")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    assert_eq!(args.ignore_unknown(), ignore);
    let all_known = pairs
        .iter()
        .all(|(k, _)| COMMON_KEYS.contains(k) || *k == "X");
    match args.check_known("plumb-fuzz", &["X"]) {
        Ok(()) => assert!(ignore || all_known),
        Err(e) => {
            check_error(&e, &[code::INVALID_ENV], "CniArgs::check_known");
            assert!(!ignore && !all_known);
        }
    }
    let pod = args.pod();
    let non_empty = |k: &str| args.get(k).filter(|v| !v.is_empty());
    assert_eq!(pod.namespace.as_deref(), non_empty("K8S_POD_NAMESPACE"));
    assert_eq!(pod.name.as_deref(), non_empty("K8S_POD_NAME"));
    assert_eq!(pod.uid.as_deref(), non_empty("K8S_POD_UID"));
});
