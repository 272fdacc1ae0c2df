//! Invariants shared by the fuzz targets: what every CNI error must look like, how an input is split
//! into a CNI_ARGS line and a configuration, and the round trips a result must survive in every version.

use plumb_cni::args::CniArgs;
use plumb_cni::result::AddResult;
use plumb_cni::version::SUPPORTED;
use plumb_cni::{code, CniError, NetConf, Version};

/// Every code plumb defines (spec codes and its own 100+); an error with another code is a bug.
pub const KNOWN_CODES: [u32; 16] = [
    code::INCOMPATIBLE_VERSION,
    code::UNSUPPORTED_FIELD,
    code::UNKNOWN_CONTAINER,
    code::INVALID_ENV,
    code::IO_FAILURE,
    code::DECODE_FAILURE,
    code::INVALID_CONFIG,
    code::TRY_AGAIN_LATER,
    code::NOT_AVAILABLE,
    code::LIMITED_CONNECTIVITY,
    code::POOL_EXHAUSTED,
    code::ADDRESS_TAKEN,
    code::CHECK_MISMATCH,
    code::DELEGATE_FAILED,
    code::STORE_CORRUPT,
    code::INTERFACE_EXISTS,
];

/// Asserts what every error a reader returns must be: one of the codes `allowed` for this reader (a
/// subset of [`KNOWN_CODES`]) and a non-empty one-line message: no line break or other C0 control
/// character (values from the input are quoted, so input cannot forge log lines or terminal escapes).
pub fn check_error(e: &CniError, allowed: &[u32], reader: &str) {
    assert!(
        KNOWN_CODES.contains(&e.code) && allowed.contains(&e.code),
        "{reader}: code {} is not one of {allowed:?} (message {:?})",
        e.code,
        e.msg
    );
    assert!(
        !e.msg.trim().is_empty(),
        "{reader}: error without a message"
    );
    assert!(
        !e.msg.chars().any(|c| c < ' '),
        "{reader}: control character in the message {:?}",
        e.msg
    );
    // The JSON a plugin prints must carry the same code and message back.
    let printed = e.to_json("1.1.0");
    let back = CniError::from_json(&printed).expect("a printed error parses as one");
    assert_eq!((back.code, &back.msg), (e.code, &e.msg), "{reader}");
}

/// Splits an input into its first line, read as a `CNI_ARGS` value (empty when it is not UTF-8 or does
/// not parse), and the rest, read as a network configuration; `None` when the configuration does not
/// parse (the spec layer's own target covers that). One corpus file drives both.
pub fn args_and_conf(data: &[u8]) -> Option<(CniArgs, NetConf)> {
    let (args_line, conf) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    let args = args_line
        .and_then(|a| CniArgs::parse(a).ok())
        .unwrap_or_default();
    Some((args, NetConf::parse(conf).ok()?))
}

/// An interface name Linux accepts: 1-15 bytes, not `.`/`..`, no `/`, `:`, whitespace or control
/// characters (written here from the rules, not taken from the readers under test).
pub fn is_ifname(n: &str) -> bool {
    (1..=15).contains(&n.len())
        && n != "."
        && n != ".."
        && !n
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// Picks a CNI version from a byte.
pub fn version_from(b: u8) -> Version {
    SUPPORTED[usize::from(b) % SUPPORTED.len()]
}

/// What a result read in `version`, written in it and read back must equal: for 0.1.0/0.2.0 the
/// addresses and routes come back grouped by family (`ip4`'s then `ip6`'s) without interfaces; every
/// other field and version is unchanged.
pub fn as_written(r: &AddResult, version: Version) -> AddResult {
    let mut r = r.clone();
    if version.is_legacy_result() {
        let (mut v4, v6): (Vec<_>, Vec<_>) = r.routes.into_iter().partition(|x| x.dst.is_ipv4());
        v4.extend(v6);
        r.routes = v4;
        let (mut v4, v6): (Vec<_>, Vec<_>) = r.ips.into_iter().partition(|x| x.address.is_ipv4());
        v4.extend(v6);
        r.ips = v4;
        r.interfaces.clear();
        for ip in &mut r.ips {
            ip.interface = None;
        }
    }
    r
}

/// Asserts the round trips of a result read in `read_in`: written in its own version it reads back
/// equal; written in every version it is either refused with code 1 (only 0.1.0/0.2.0, which hold one
/// address per family and routes beside one) or reads back, in that version and through `parse_any`,
/// into a result that writes the same JSON again.
pub fn check_result_round_trips(r: &AddResult, read_in: Version) {
    match r.to_json(read_in) {
        Ok(w) => {
            let back = AddResult::parse(&w, read_in)
                .unwrap_or_else(|e| panic!("{read_in} result {w} does not re-parse: {e}"));
            assert_eq!(back, as_written(r, read_in), "{read_in} round trip via {w}");
        }
        Err(e) => check_error(&e, &[code::INCOMPATIBLE_VERSION], "AddResult::to_json"),
    }
    for to in SUPPORTED {
        let w = match r.to_json(to) {
            Ok(w) => w,
            Err(e) => {
                check_error(&e, &[code::INCOMPATIBLE_VERSION], "AddResult::to_json");
                assert!(to.is_legacy_result(), "{to} refused a result: {e}");
                continue;
            }
        };
        assert_eq!(w["cniVersion"], to.as_str());
        let back = AddResult::parse(&w, to)
            .unwrap_or_else(|e| panic!("converted {to} result {w} does not re-parse: {e}"));
        let any = AddResult::parse_any(&w).expect("parse_any reads what parse read");
        assert_eq!(any, back, "parse_any and parse({to}) disagree on {w}");
        let again = back.to_json(to).expect("a re-read result writes again");
        assert_eq!(again, w, "{to}: writing is not stable");
        // No address or route is lost or invented by a conversion that was not refused.
        let want = as_written(r, to);
        let key = |x: &AddResult| {
            let ips: Vec<_> = x.ips.iter().map(|i| (i.address, i.gateway)).collect();
            let routes: Vec<_> = x.routes.iter().map(|r| (r.dst, r.gw)).collect();
            (ips, routes, x.dns.clone())
        };
        assert_eq!(
            key(&back),
            key(&want),
            "{read_in} -> {to} changed the result: {w}"
        );
    }
}
