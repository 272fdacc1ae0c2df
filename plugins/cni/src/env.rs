//! The CNI environment: `CNI_COMMAND` and the variables each command requires (spec 1.1.0).

use crate::args::CniArgs;
use crate::error::{CniError, CniResult};
use std::path::PathBuf;

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach a container.
    Del,
    /// Verify an attachment.
    Check,
    /// Report readiness.
    Status,
    /// Remove resources of attachments that no longer exist.
    Gc,
    /// Report supported versions.
    Version,
}

impl Command {
    /// Parses `CNI_COMMAND`; an unknown value is error code 4.
    pub fn parse(s: &str) -> CniResult<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::env(format!(
                    "CNI_COMMAND {other:?} is not a CNI command; use ADD, DEL, CHECK, STATUS, GC or VERSION"
                )))
            }
        })
    }

    /// The command as spelled in `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Whether the command needs CNI_CONTAINERID and CNI_IFNAME.
    fn needs_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    /// Whether the command needs CNI_NETNS (DEL may come after the netns is gone).
    fn needs_netns(self) -> bool {
        matches!(self, Command::Add | Command::Check)
    }

    /// Whether the command needs CNI_PATH.
    fn needs_path(self) -> bool {
        matches!(
            self,
            Command::Add | Command::Del | Command::Check | Command::Gc
        )
    }
}

/// The validated CNI environment of one invocation.
#[derive(Debug, Clone)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for STATUS, GC, VERSION).
    pub container_id: String,
    /// `CNI_NETNS`, if given and non-empty.
    pub netns: Option<String>,
    /// `CNI_IFNAME` (empty for STATUS, GC, VERSION).
    pub ifname: String,
    /// `CNI_ARGS`, parsed.
    pub args: CniArgs,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
    /// DEL only: the error ADD gives for this `CNI_CONTAINERID` or `CNI_IFNAME`. ADD never made an
    /// attachment with such an identity, so its DEL has nothing to release (see [`crate::skel`]).
    pub refused_identity: Option<CniError>,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> CniResult<Env> {
        Env::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `get`, checking each one the command requires (code 4 naming it).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> CniResult<Env> {
        let command = Command::parse(
            &get("CNI_COMMAND").ok_or_else(|| CniError::env("CNI_COMMAND is not set"))?,
        )?;
        let required = |key: &str, needed: bool| -> CniResult<String> {
            match get(key).filter(|v| !v.is_empty()) {
                Some(v) => Ok(v),
                None if needed => Err(CniError::env(format!(
                    "{key} is required for {} but is not set",
                    command.as_str()
                ))),
                None => Ok(String::new()),
            }
        };
        let container_id = required("CNI_CONTAINERID", command.needs_attachment())?;
        let ifname = required("CNI_IFNAME", command.needs_attachment())?;
        let netns = required("CNI_NETNS", command.needs_netns())?;
        let path = required("CNI_PATH", command.needs_path())?;
        let identity = [
            (!container_id.is_empty()).then(|| validate_container_id(&container_id)),
            (!ifname.is_empty()).then(|| validate_ifname(&ifname)),
        ]
        .into_iter()
        .flatten()
        .find_map(Result::err);
        let refused_identity = match identity {
            Some(e) if command != Command::Del => return Err(e),
            other => other,
        };
        Ok(Env {
            command,
            container_id,
            netns: (!netns.is_empty()).then_some(netns),
            ifname,
            args: CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?,
            path: path
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            refused_identity,
        })
    }
}

/// Checks a container ID as the spec defines it: starts alphanumeric, then alphanumerics, `_`, `.`, `-`
/// (ASCII). plumb also caps it at 200 bytes (the spec sets no limit), as it names files in the IPAM store.
pub fn validate_container_id(id: &str) -> CniResult<()> {
    let ok_first = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok_first || !ok_rest || id.len() > 200 {
        return Err(CniError::env(format!(
            "CNI_CONTAINERID {id:?} is invalid: it must start with an ASCII letter or digit, hold only ASCII letters, digits, '_', '.', '-', and be at most 200 characters"
        )));
    }
    Ok(())
}

/// Checks an interface name as the spec and Linux require: 1–15 bytes, not `.`/`..`, no `/`, `:`,
/// whitespace or control characters.
pub fn validate_ifname(name: &str) -> CniResult<()> {
    let bad_char = name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if name.is_empty() || name.len() > 15 || name == "." || name == ".." || bad_char {
        return Err(CniError::env(format!(
            "CNI_IFNAME {name:?} is not a valid interface name: at most 15 bytes, not '.' or '..', no '/', ':' or whitespace"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> CniResult<Env> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn add_requires_each_variable() {
        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        assert!(env(&full).is_ok());
        for missing in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
            let partial: Vec<_> = full
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let e = env(&partial).unwrap_err();
            assert_eq!(e.code, 4);
            assert!(e.msg.contains(missing), "{}", e.msg);
        }
    }

    #[test]
    fn del_allows_missing_netns_and_version_needs_nothing() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
        ])
        .unwrap();
        assert!(e.netns.is_none());
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "STATUS")]).is_ok());
        assert_eq!(env(&[("CNI_COMMAND", "GC")]).unwrap_err().code, 4);
        assert_eq!(env(&[]).unwrap_err().code, 4);
        assert_eq!(env(&[("CNI_COMMAND", "ATTACH")]).unwrap_err().code, 4);
    }

    #[test]
    fn rejects_hostile_ids_and_names() {
        for bad in [
            "../etc", "a/b", "-lead", "_lead", ".lead", "a\nb", "a b", "a;b", "é1", "a\0b", "",
        ] {
            let e = validate_container_id(bad).unwrap_err();
            assert_eq!(e.code, 4, "{bad:?}");
            assert!(e.msg.contains("CNI_CONTAINERID") && e.msg.contains("'_', '.', '-'"));
        }
        assert!(validate_container_id(&"a".repeat(201)).is_err());
        for good in ["abc_1.2-3", "0", "A-.", &"a".repeat(200)] {
            assert!(validate_container_id(good).is_ok(), "{good:?}");
        }
        for bad in [
            "a234567890123456",
            "..",
            ".",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\nb",
            "a\u{85}b",
            "",
        ] {
            let e = validate_ifname(bad).unwrap_err();
            assert_eq!(e.code, 4, "{bad:?}");
            assert!(e.msg.contains("CNI_IFNAME"), "{}", e.msg);
        }
        for good in ["eth0", "a23456789012345", "net@1", "a.b", "..."] {
            assert!(validate_ifname(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn an_invalid_identity_is_refused_except_for_del() {
        let call = |cmd: &str, cid: &str, ifname: &str| {
            env(&[
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", "/run/netns/x"),
                ("CNI_IFNAME", ifname),
                ("CNI_PATH", "/x"),
            ])
        };
        for cmd in ["ADD", "CHECK"] {
            let e = call(cmd, "bad\nid", "eth0").unwrap_err();
            assert!(e.code == 4 && e.msg.contains("CNI_CONTAINERID"), "{e}");
            let e = call(cmd, "c1", "a:b").unwrap_err();
            assert!(e.code == 4 && e.msg.contains("CNI_IFNAME"), "{e}");
        }
        let del = call("DEL", "bad\nid", "eth0").unwrap();
        assert!(del
            .refused_identity
            .unwrap()
            .msg
            .contains("CNI_CONTAINERID"));
        let del = call("DEL", "c1", "a:b").unwrap();
        assert!(del.refused_identity.unwrap().msg.contains("CNI_IFNAME"));
        assert!(call("DEL", "c1", "eth0")
            .unwrap()
            .refused_identity
            .is_none());
    }
}
