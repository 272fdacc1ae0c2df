//! The plugin entry point: read the environment and stdin, check what the spec requires for the
//! command and version, call the plugin, and print its result or its error in the config's version.

use crate::cli::About;
use crate::config::{parse_object, validate_network_name, version_of, NetConf};
use crate::env::{Command, Env};
use crate::error::{code, CniError, CniResult};
use crate::result::AddResult;
use crate::version::{Version, SUPPORTED};
use serde_json::{json, Value};
use std::io::{Read, Write};

/// One invocation, ready for the plugin.
#[derive(Debug, Clone)]
pub struct Request {
    /// The validated environment.
    pub env: Env,
    /// The parsed configuration.
    pub conf: NetConf,
    /// The raw stdin bytes (for delegation).
    pub stdin: Vec<u8>,
}

/// What a plugin implements; the entry point does the protocol around it.
pub trait Plugin {
    /// The plugin's binary name, used in messages.
    fn name(&self) -> &'static str;
    /// ADD: attach and return the result (the entry point converts it to the config's version).
    fn add(&self, req: &Request) -> CniResult<AddResult>;
    /// DEL: detach; must succeed when there is nothing to remove.
    fn del(&self, req: &Request) -> CniResult<()>;
    /// CHECK: verify the attachment matches `prevResult`.
    fn check(&self, req: &Request) -> CniResult<()>;
    /// STATUS: succeed when ADD can be served, else code 50 or 51.
    fn status(&self, req: &Request) -> CniResult<()>;
    /// GC: release what belongs to attachments outside `valid_attachments`.
    fn gc(&self, req: &Request) -> CniResult<()>;
    /// What `--help` says about the binary (see [`crate::cli`]).
    fn about(&self) -> About {
        About::new(self.name(), "a plumb CNI plugin", "docs/ and README.md")
    }
    /// Config objects whose `logLevel`/`logFile` (or `log_level`/`log_file`) also apply, over the
    /// top level's (plumb-ipam: `ipam`). See [`crate::log`].
    fn log_sections(&self) -> &'static [&'static str] {
        &[]
    }
}

/// Runs the plugin against this process's environment, stdin and stdout; returns the exit code. Run
/// by a person (no CNI_COMMAND), it answers `--help`, `--version` or with its about line instead.
pub fn run_process(plugin: &dyn Plugin) -> i32 {
    if let Some(exit) = crate::cli::by_person(&plugin.about()) {
        return exit;
    }
    let mut stdin = Vec::new();
    match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run_with_stdin(plugin, &stdin),
        Err(e) => print_reply(
            1,
            &CniError::io("could not read the network configuration from stdin", &e)
                .to_json("1.1.0"),
        ),
    }
}

/// Like [`run_process`], with stdin already read (by a binary that looked at the config first).
/// The command runs under the process's hard deadline ([`crate::deadline`]) and writes its log line
/// ([`crate::log`]); log settings that are not usable fail every command but DEL with code 7.
pub fn run_with_stdin(plugin: &dyn Plugin, stdin: &[u8]) -> i32 {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    crate::deadline::arm(plugin.name(), &command, reply_version(stdin));
    let log_error = crate::log::start(plugin.name(), plugin.log_sections(), stdin);
    let (exit, out) = match log_error {
        Some(e) if command != Command::Del.as_str() => {
            (1, e.to_json(reply_version(stdin).as_str()))
        }
        _ => dispatch(plugin, Env::from_process(), stdin),
    };
    crate::log::finish(exit, &out);
    print_reply(exit, &out)
}

/// Prints `err` as the reply to the config in `stdin` (in that config's version), logs it, and
/// returns the exit code of a failed call.
pub fn fail(stdin: &[u8], err: &CniError) -> i32 {
    let out = err.to_json(reply_version(stdin).as_str());
    let binary = std::env::args()
        .next()
        .and_then(|a| a.rsplit('/').next().map(str::to_string))
        .unwrap_or_else(|| "plumb".into());
    crate::log::start(Box::leak(binary.into_boxed_str()), &[], stdin);
    crate::log::finish(1, &out);
    print_reply(1, &out)
}

fn print_reply(exit: i32, out: &Value) -> i32 {
    if !crate::deadline::claim_reply() {
        // The deadline watchdog has printed its error and is ending the process.
        crate::deadline::wait_for_the_end();
    }
    let mut stdout = std::io::stdout().lock();
    if !out.is_null() {
        let _ = serde_json::to_writer(&mut stdout, out);
        let _ = stdout.write_all(b"\n");
    }
    let _ = stdout.flush();
    exit
}

/// Runs one invocation from a parsed environment and stdin; returns the exit code and what to print
/// (`Value::Null` for nothing).
pub fn dispatch(plugin: &dyn Plugin, env: CniResult<Env>, stdin: &[u8]) -> (i32, Value) {
    let reply_version = reply_version(stdin);
    match handle(plugin, env, stdin) {
        Ok(out) => (0, out),
        Err(e) => (1, e.to_json(reply_version.as_str())),
    }
}

fn handle(plugin: &dyn Plugin, env: CniResult<Env>, stdin: &[u8]) -> CniResult<Value> {
    let env = env?;
    if env.command == Command::Version {
        return Ok(version_info());
    }
    if env.command == Command::Del {
        if let Some(e) = identity_add_refuses(&env, stdin) {
            // ADD refuses this identity before making anything, so no plumb attachment has it: a DEL
            // that errored here would error forever, and one that went on could only touch what is not ours.
            eprintln!(
                "{}: DEL: {}; ADD refuses this, so nothing was made for it: nothing to do",
                plugin.name(),
                e.msg
            );
            return Ok(Value::Null);
        }
    }
    let conf = NetConf::parse(stdin)?;
    let need = |allowed: bool, first: &str| -> CniResult<()> {
        if allowed {
            return Ok(());
        }
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {} does not allow {}; use cniVersion {first} or later",
                conf.version,
                env.command.as_str()
            ),
        ))
    };
    match env.command {
        Command::Check => need(conf.version.allows_check(), "0.4.0")?,
        Command::Status | Command::Gc => need(conf.version.allows_status_and_gc(), "1.1.0")?,
        _ => {}
    }
    let version = conf.version;
    let req = Request {
        env,
        conf,
        stdin: stdin.to_vec(),
    };
    match req.env.command {
        Command::Add => plugin.add(&req)?.to_json(version),
        Command::Del => plugin.del(&req).map(|_| Value::Null),
        Command::Check => plugin.check(&req).map(|_| Value::Null),
        Command::Status => plugin.status(&req).map(|_| Value::Null),
        Command::Gc => plugin.gc(&req).map(|_| Value::Null),
        Command::Version => Ok(version_info()),
    }
}

/// For DEL: the error ADD gives for this container ID, interface name or network name, if any.
fn identity_add_refuses(env: &Env, stdin: &[u8]) -> Option<CniError> {
    env.refused_identity.clone().or_else(|| {
        let raw = parse_object(stdin).ok()?;
        validate_network_name(raw.get("name")?.as_str()?).err()
    })
}

/// The VERSION reply: the newest version and every supported one.
pub fn version_info() -> Value {
    json!({
        "cniVersion": Version::LATEST.as_str(),
        "supportedVersions": SUPPORTED.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
}

/// The version to write errors in: the config's when it names a supported one, else the newest.
fn reply_version(stdin: &[u8]) -> Version {
    parse_object(stdin)
        .ok()
        .and_then(|o| version_of(&o).ok())
        .unwrap_or(Version::LATEST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Cidr, IpConfig};
    use std::collections::HashMap;

    struct Fake;

    impl Plugin for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn add(&self, _: &Request) -> CniResult<AddResult> {
            let ip = |s: &str| IpConfig {
                address: s.parse::<Cidr>().unwrap(),
                gateway: None,
                interface: None,
            };
            Ok(AddResult {
                ips: vec![ip("10.0.0.2/24"), ip("fd00::2/64")],
                ..Default::default()
            })
        }
        fn del(&self, _: &Request) -> CniResult<()> {
            Ok(())
        }
        fn check(&self, _: &Request) -> CniResult<()> {
            Ok(())
        }
        fn status(&self, _: &Request) -> CniResult<()> {
            Err(CniError::new(code::NOT_AVAILABLE, "down"))
        }
        fn gc(&self, _: &Request) -> CniResult<()> {
            Ok(())
        }
    }

    fn call(command: &str, version: &str) -> (i32, Value) {
        let vars: HashMap<&str, &str> = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
        .into();
        let env = Env::from_lookup(|k| vars.get(k).map(|v| v.to_string()));
        let conf = format!(r#"{{"cniVersion":"{version}","name":"n","type":"fake"}}"#);
        dispatch(&Fake, env, conf.as_bytes())
    }

    #[test]
    fn add_replies_in_the_config_version() {
        let (rc, out) = call("ADD", "0.3.1");
        assert_eq!(rc, 0);
        assert_eq!(out["cniVersion"], "0.3.1");
        assert_eq!(out["ips"][1]["version"], "6");
        let (rc, out) = call("ADD", "0.2.0");
        assert_eq!((rc, out["ip4"]["ip"].as_str()), (0, Some("10.0.0.2/24")));
    }

    #[test]
    fn commands_are_gated_by_version() {
        let (rc, out) = call("CHECK", "0.3.1");
        assert_eq!((rc, out["code"].as_u64()), (1, Some(1)));
        assert!(out["msg"].as_str().unwrap().contains("CHECK"));
        assert_eq!(call("CHECK", "0.4.0"), (0, Value::Null));
        assert_eq!(call("GC", "1.0.0").1["code"], 1);
        assert_eq!(call("GC", "1.1.0"), (0, Value::Null));
        let (rc, out) = call("STATUS", "1.1.0");
        assert_eq!(
            (rc, out["code"].as_u64(), out["cniVersion"].as_str()),
            (1, Some(50), Some("1.1.0"))
        );
    }

    #[test]
    fn version_and_env_errors() {
        let (rc, out) = call("VERSION", "0.1.0");
        assert_eq!(rc, 0);
        assert_eq!(out, version_info());
        assert_eq!(out["supportedVersions"].as_array().unwrap().len(), 7);
        let (rc, out) = dispatch(
            &Fake,
            Env::from_lookup(|_| None),
            br#"{"cniVersion":"0.4.0"}"#,
        );
        assert_eq!(
            (rc, out["code"].as_u64(), out["cniVersion"].as_str()),
            (1, Some(4), Some("0.4.0"))
        );
        let (_, out) = call("ADD", "7.0.0");
        assert_eq!(
            (out["code"].as_u64(), out["cniVersion"].as_str()),
            (Some(1), Some("1.1.0"))
        );
    }

    /// A plugin whose DEL always fails, to show when DEL is not called at all.
    struct DelFails;

    impl Plugin for DelFails {
        fn name(&self) -> &'static str {
            "del-fails"
        }
        fn add(&self, r: &Request) -> CniResult<AddResult> {
            Fake.add(r)
        }
        fn del(&self, _: &Request) -> CniResult<()> {
            Err(CniError::new(code::IO_FAILURE, "del ran"))
        }
        fn check(&self, _: &Request) -> CniResult<()> {
            Ok(())
        }
        fn status(&self, _: &Request) -> CniResult<()> {
            Ok(())
        }
        fn gc(&self, _: &Request) -> CniResult<()> {
            Ok(())
        }
    }

    fn call_named(command: &str, cid: &str, ifname: &str, name: &str) -> (i32, Value) {
        let vars: HashMap<&str, &str> = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
        .into();
        let env = Env::from_lookup(|k| vars.get(k).map(|v| v.to_string()));
        let conf = json!({"cniVersion": "1.1.0", "name": name, "type": "del-fails"});
        dispatch(&DelFails, env, conf.to_string().as_bytes())
    }

    #[test]
    fn names_add_refuses_are_refused_and_their_del_does_nothing() {
        for cmd in ["ADD", "CHECK", "GC", "STATUS"] {
            let (rc, out) = call_named(cmd, "c1", "eth0", "net\nforged 10.0.0.9");
            assert_eq!((rc, out["code"].as_u64()), (1, Some(7)), "{cmd}: {out}");
            assert!(out["msg"].as_str().unwrap().contains("field \"name\""));
        }
        let (rc, out) = call_named("ADD", "c/1", "eth0", "net");
        assert_eq!((rc, out["code"].as_u64()), (1, Some(4)), "{out}");
        assert!(out["msg"].as_str().unwrap().contains("CNI_CONTAINERID"));
        // DEL of what ADD refuses: success without calling the plugin's DEL.
        for (cid, ifname, name) in [
            ("c1", "eth0", "net\nforged"),
            ("c/1", "eth0", "net"),
            ("c1", "a:b", "net"),
            ("c1", "eth0", ""),
        ] {
            assert_eq!(
                call_named("DEL", cid, ifname, name),
                (0, Value::Null),
                "{cid:?} {ifname:?} {name:?}"
            );
        }
        // A DEL with valid names reaches the plugin.
        let (rc, out) = call_named("DEL", "c1", "eth0", "net");
        assert_eq!((rc, out["msg"].as_str()), (1, Some("del ran")));
    }
}
