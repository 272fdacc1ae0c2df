//! The CNI environment: each line of the input is one `NAME=value` variable. It reads into an Env or is
//! refused with code 4; an Env has every variable its command needs, a container ID and ifname in the
//! spec's charset, and the CNI_ARGS and CNI_PATH the variables gave.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumb_cni::args::CniArgs;
use plumb_cni::code;
use plumb_cni::env::{Command, Env};
use plumb_fuzz::check_error;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| vars.get(k).map(|v| v.to_string());
    let env = match Env::from_lookup(get) {
        Ok(env) => env,
        Err(e) => return check_error(&e, &[code::INVALID_ENV], "Env::from_lookup"),
    };
    assert_eq!(Command::parse(vars["CNI_COMMAND"]), Ok(env.command));
    assert_eq!(Command::parse(env.command.as_str()), Ok(env.command));
    if matches!(env.command, Command::Add | Command::Del | Command::Check) {
        assert!(!env.container_id.is_empty() && !env.ifname.is_empty());
    }
    // A DEL whose identity ADD would refuse is accepted so that it can succeed doing nothing; the
    // refusal is kept for the skeleton. Every other command refuses such an identity.
    if let Some(e) = &env.refused_identity {
        assert_eq!(
            env.command,
            Command::Del,
            "only DEL carries a refused identity"
        );
        check_error(e, &[code::INVALID_ENV], "Env::refused_identity");
        return;
    }
    if !env.container_id.is_empty() {
        let mut chars = env.container_id.chars();
        assert!(chars.next().unwrap().is_ascii_alphanumeric());
        assert!(chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
    }
    if !env.ifname.is_empty() {
        let n = &env.ifname;
        assert!(n.len() <= 15 && n != "." && n != "..");
        assert!(!n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()));
    }
    if matches!(env.command, Command::Add | Command::Check) {
        assert!(env.netns.is_some());
    }
    assert_eq!(
        env.netns.as_deref(),
        vars.get("CNI_NETNS").copied().filter(|s| !s.is_empty())
    );
    assert_eq!(
        Ok(env.args),
        CniArgs::parse(vars.get("CNI_ARGS").copied().unwrap_or(""))
    );
    assert!(env.path.iter().all(|p| !p.as_os_str().is_empty()));
});
