//! The node's tenant policy: an admin-owned JSON file that limits, per Kubernetes namespace
//! (`K8S_POD_NAMESPACE` in CNI_ARGS) and by default, what a network config may ask of a node: bridges,
//! host interfaces, VLANs, VNIs, multicast groups, unicast peers, IPAM ranges and network names, and
//! settings it must keep on (`require.macspoofchk`). Reference: docs/policy.md.
//!
//! The path comes only from the node (never from a network config, which tenants write):
//! `PLUMB_POLICY_FILE`, else [`DEFAULT_PATH`]. No file: nothing is limited. A file that cannot be read
//! or parsed (unknown fields included) denies every ADD and CHECK; DEL and GC never load the policy.
//! A namespace rule overrides the `default` rule field by field; without `K8S_POD_NAMESPACE` the
//! `default` rule applies; without a `default` rule, unlisted namespaces are not limited.
//!
//! Everything here is pure: the plugins call [`Guard::load`] and one check per field, before they make
//! anything.

use crate::args::CniArgs;
use crate::error::{code, CniError, CniResult};
use crate::result::Cidr;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Where the policy file is when `PLUMB_POLICY_FILE` is not set: in a subdirectory of the CNI config
/// directory, because runtimes load every `*.json` directly in `/etc/cni/net.d` as a network config.
pub const DEFAULT_PATH: &str = "/etc/cni/net.d/plumb.d/policy.json";

/// The environment variable that overrides [`DEFAULT_PATH`] (set by the node, e.g. for tests).
pub const ENV_VAR: &str = "PLUMB_POLICY_FILE";

/// Highest VLAN id a policy may name.
const MAX_VLAN: u32 = 4094;
/// Highest VNI a policy may name (24 bits).
const MAX_VNI: u32 = 16_777_215;

/// The file as written: a `default` rule and rules per namespace.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    #[serde(default)]
    default: Option<RuleModel>,
    #[serde(default)]
    namespaces: BTreeMap<String, RuleModel>,
}

/// One rule as written; every field is optional, and an absent field does not limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleModel {
    bridges: Option<Vec<String>>,
    host_interfaces: Option<bool>,
    vlans: Option<Vec<Value>>,
    vnis: Option<Vec<Value>>,
    groups: Option<Vec<String>>,
    peers: Option<Vec<String>>,
    ipam_ranges: Option<Vec<String>>,
    network_names: Option<Vec<String>>,
    require: Option<RequireModel>,
}

/// Settings a rule forces on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequireModel {
    macspoofchk: Option<bool>,
}

/// One limit and the rule it comes from (`default` or `namespaces."x"`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Limit<T> {
    allowed: T,
    rule: String,
}

/// A rule with every field validated; each present field remembers the rule that set it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rule {
    bridges: Option<Limit<Vec<String>>>,
    host_interfaces: Option<Limit<bool>>,
    vlans: Option<Limit<Vec<(u32, u32)>>>,
    vnis: Option<Limit<Vec<(u32, u32)>>>,
    groups: Option<Limit<Vec<Cidr>>>,
    peers: Option<Limit<Vec<Cidr>>>,
    ipam_ranges: Option<Limit<Vec<Cidr>>>,
    network_names: Option<Limit<Vec<String>>>,
    macspoofchk: Option<Limit<bool>>,
}

impl Rule {
    /// Validates a written rule; errors name `rule.field[i]`.
    fn compile(m: RuleModel, rule: &str) -> Result<Rule, String> {
        let ids = |list: Option<Vec<Value>>, field: &str, max: u32| -> Result<_, String> {
            list.map(|l| {
                l.iter()
                    .enumerate()
                    .map(|(i, v)| id_span(v, max).map_err(|e| format!("{rule}.{field}[{i}]: {e}")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
        };
        let cidrs = |list: Option<Vec<String>>, field: &str| -> Result<_, String> {
            list.map(|l| {
                l.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        cidr(s)
                            .map(|c| c.network())
                            .map_err(|e| format!("{rule}.{field}[{i}]: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
        };
        Ok(Rule {
            bridges: m.bridges.map(|a| limit(rule, a)),
            host_interfaces: m.host_interfaces.map(|a| limit(rule, a)),
            vlans: ids(m.vlans, "vlans", MAX_VLAN)?.map(|a| limit(rule, a)),
            vnis: ids(m.vnis, "vnis", MAX_VNI)?.map(|a| limit(rule, a)),
            groups: cidrs(m.groups, "groups")?.map(|a| limit(rule, a)),
            peers: cidrs(m.peers, "peers")?.map(|a| limit(rule, a)),
            ipam_ranges: cidrs(m.ipam_ranges, "ipamRanges")?.map(|a| limit(rule, a)),
            network_names: m.network_names.map(|a| limit(rule, a)),
            macspoofchk: (m.require.and_then(|r| r.macspoofchk))
                .map(|a| limit(&format!("{rule}.require"), a)),
        })
    }

    /// `self` (a namespace rule) over `base` (the default rule), field by field.
    fn over(self, base: &Rule) -> Rule {
        Rule {
            bridges: self.bridges.or_else(|| base.bridges.clone()),
            host_interfaces: self
                .host_interfaces
                .or_else(|| base.host_interfaces.clone()),
            vlans: self.vlans.or_else(|| base.vlans.clone()),
            vnis: self.vnis.or_else(|| base.vnis.clone()),
            groups: self.groups.or_else(|| base.groups.clone()),
            peers: self.peers.or_else(|| base.peers.clone()),
            ipam_ranges: self.ipam_ranges.or_else(|| base.ipam_ranges.clone()),
            network_names: self.network_names.or_else(|| base.network_names.clone()),
            macspoofchk: self.macspoofchk.or_else(|| base.macspoofchk.clone()),
        }
    }
}

/// A limit set by `rule`.
fn limit<T>(rule: &str, allowed: T) -> Limit<T> {
    Limit {
        allowed,
        rule: rule.to_string(),
    }
}

/// An id (`2003`) or an inclusive span (`"2004-2010"`), each from 1 to `max`.
fn id_span(v: &Value, max: u32) -> Result<(u32, u32), String> {
    let one = |n: u64| -> Result<u32, String> {
        if (1..=max as u64).contains(&n) {
            Ok(n as u32)
        } else {
            Err(format!("{n} is outside 1-{max}"))
        }
    };
    match v {
        Value::Number(n) => {
            let id = one(n.as_u64().ok_or(format!("{n} is not a whole number"))?)?;
            Ok((id, id))
        }
        Value::String(s) => {
            let parse = |t: &str| {
                t.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{s:?} is not a number or a span like \"100-199\""))
            };
            let (lo, hi) = match s.split_once('-') {
                Some((a, b)) => (one(parse(a)?)?, one(parse(b)?)?),
                None => {
                    let id = one(parse(s)?)?;
                    (id, id)
                }
            };
            if lo > hi {
                return Err(format!("{s:?} starts above its end"));
            }
            Ok((lo, hi))
        }
        other => Err(format!(
            "{other} is not a number or a span like \"100-199\""
        )),
    }
}

/// A CIDR (`10.0.0.0/16`) or a single address (as /32 or /128).
fn cidr(s: &str) -> Result<Cidr, String> {
    if s.contains('/') {
        return s.parse::<Cidr>().map_err(|e| e.to_string());
    }
    let ip: IpAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an address or a CIDR like 10.0.0.0/16"))?;
    Ok(Cidr {
        addr: ip,
        prefix: if ip.is_ipv4() { 32 } else { 128 },
    })
}

/// Whether `name` matches `pattern`: exact, or with `*` standing for any run of characters
/// (`tenant-a-*`, `*-ext`, `br-*-a`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The first id of `lo..=hi` that no span of `allowed` covers; `None` when all are covered. Work is
/// bounded by the number of spans, not the width of the range.
pub fn first_uncovered(allowed: &[(u32, u32)], lo: u32, hi: u32) -> Option<u32> {
    let mut spans = allowed.to_vec();
    spans.sort_unstable();
    let mut cursor = lo;
    for (a, b) in spans {
        if a > cursor {
            break;
        }
        if b >= cursor {
            if b >= hi {
                return None;
            }
            cursor = b + 1;
        }
    }
    Some(cursor)
}

/// Whether the subnet `inner` lies wholly inside `outer` (same family, prefix at least as long).
pub fn cidr_within(inner: Cidr, outer: Cidr) -> bool {
    inner.is_ipv4() == outer.is_ipv4()
        && inner.prefix >= outer.prefix
        && outer.contains(inner.network().addr)
}

/// The policy that applies to one invocation: nothing, or the effective rule of its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// `K8S_POD_NAMESPACE`, when the runtime gave it.
    namespace: Option<String>,
    /// The policy file the rule comes from.
    path: String,
    /// The effective rule; every field `None` when nothing limits this namespace.
    rule: Rule,
}

impl Guard {
    /// Loads the node's policy for the namespace in `args`: `PLUMB_POLICY_FILE`, else [`DEFAULT_PATH`].
    /// A missing file limits nothing; an unreadable or unparsable one is code 106 naming the file.
    pub fn load(args: &CniArgs) -> CniResult<Guard> {
        let path = std::env::var(ENV_VAR)
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_PATH.to_string());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(broken(&path, &format!("cannot be read: {e}"))),
        };
        Guard::from_text(&path, text.as_deref(), args.pod().namespace)
    }

    /// The guard for a policy file's contents (`None`: no file) and a namespace.
    pub fn from_text(
        path: &str,
        text: Option<&str>,
        namespace: Option<String>,
    ) -> CniResult<Guard> {
        let mut guard = Guard {
            namespace,
            path: path.to_string(),
            rule: Rule::default(),
        };
        let Some(text) = text else {
            return Ok(guard);
        };
        let model: FileModel = serde_json::from_str(text)
            .map_err(|e| broken(path, &format!("does not parse: {e}")))?;
        let default = model
            .default
            .map(|r| Rule::compile(r, "default"))
            .transpose()
            .map_err(|e| broken(path, &e))?
            .unwrap_or_default();
        let mine = match &guard.namespace {
            Some(ns) => model.namespaces.get(ns).cloned().map(|r| (ns.clone(), r)),
            None => None,
        };
        // Every namespace rule is validated, not only the one that applies: a typo fails closed everywhere.
        for (ns, r) in &model.namespaces {
            Rule::compile(r.clone(), &ns_rule(ns)).map_err(|e| broken(path, &e))?;
        }
        guard.rule = match mine {
            Some((ns, r)) => Rule::compile(r, &ns_rule(&ns))
                .map_err(|e| broken(path, &e))?
                .over(&default),
            None => default,
        };
        Ok(guard)
    }

    /// Whether this invocation is limited at all.
    pub fn is_unrestricted(&self) -> bool {
        self.rule == Rule::default()
    }

    /// The denial: `namespace "x": <field> <value> is not allowed by policy rule <rule>.<key> (<why>)`.
    fn deny(&self, field: &str, value: &str, rule: &str, key: &str, why: &str) -> CniError {
        let who = match &self.namespace {
            Some(ns) => format!("namespace {ns:?}"),
            None => "no namespace in CNI_ARGS (K8S_POD_NAMESPACE; the default rule applies)".into(),
        };
        CniError::new(
            code::POLICY_DENIED,
            format!("{who}: {field} {value} is not allowed by policy rule {rule}.{key} ({why})"),
        )
        .caused_by(format!("node policy file {}", self.path))
    }

    /// `bridge`: the bridge a plumb-bridge or plumb-vxlan network creates or joins.
    pub fn bridge(&self, name: &str) -> CniResult<()> {
        let Some(l) = &self.rule.bridges else {
            return Ok(());
        };
        if l.allowed.iter().any(|p| glob_match(p, name)) {
            return Ok(());
        }
        Err(self.deny(
            "bridge",
            &format!("{name:?}"),
            &l.rule,
            "bridges",
            &allowed_list(&l.allowed),
        ))
    }

    /// A host interface the config asks to enslave (`field` names the config field, e.g. `uplink`).
    pub fn host_interface(&self, field: &str, name: &str) -> CniResult<()> {
        match &self.rule.host_interfaces {
            Some(l) if !l.allowed => Err(self.deny(
                field,
                &format!("{name:?}"),
                &l.rule,
                "hostInterfaces",
                "this namespace may not enslave host interfaces",
            )),
            _ => Ok(()),
        }
    }

    /// The VLANs of a bridge port: the access `vlan` (0: none), the `vlanTrunk` spans, and whether the
    /// port stays on VLAN 1, the default PVID of a VLAN-filtering bridge (a port with no VLAN, or with
    /// `preserveDefaultVlan`). A trunk span with any id outside the allowed ones is denied.
    pub fn vlans(
        &self,
        access: u16,
        trunk: &[(u16, u16)],
        preserve_default: bool,
    ) -> CniResult<()> {
        let Some(l) = &self.rule.vlans else {
            return Ok(());
        };
        let allowed = spans_list(&l.allowed);
        if access != 0 && first_uncovered(&l.allowed, access.into(), access.into()).is_some() {
            let why = format!("allowed: {allowed}");
            return Err(self.deny("vlan", &access.to_string(), &l.rule, "vlans", &why));
        }
        self.vlan_spans("vlanTrunk", trunk)?;
        let untagged = (access == 0 && trunk.is_empty()) || (preserve_default && access != 1);
        if untagged && first_uncovered(&l.allowed, 1, 1).is_some() {
            let (field, value) = if preserve_default {
                (
                    "preserveDefaultVlan",
                    "true (keeps the port on the default VLAN 1)",
                )
            } else {
                (
                    "vlan",
                    "(none: the port is untagged on the bridge's default VLAN 1)",
                )
            };
            let why = format!("allowed: {allowed}; list 1 to allow untagged ports");
            return Err(self.deny(field, value, &l.rule, "vlans", &why));
        }
        Ok(())
    }

    /// VLAN spans a config field names (`vlanTrunk`, `uplinkTrunk`): a span with any id outside the
    /// allowed ones is denied, naming `field[i]`.
    pub fn vlan_spans(&self, field: &str, spans: &[(u16, u16)]) -> CniResult<()> {
        let Some(l) = &self.rule.vlans else {
            return Ok(());
        };
        for (i, &(lo, hi)) in spans.iter().enumerate() {
            if let Some(bad) = first_uncovered(&l.allowed, lo.into(), hi.into()) {
                let value = if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                };
                let why = format!("allowed: {}; {bad} is not", spans_list(&l.allowed));
                return Err(self.deny(&format!("{field}[{i}]"), &value, &l.rule, "vlans", &why));
            }
        }
        Ok(())
    }

    /// `vni` of a plumb-vxlan network.
    pub fn vni(&self, vni: u32) -> CniResult<()> {
        match &self.rule.vnis {
            Some(l) if first_uncovered(&l.allowed, vni, vni).is_some() => Err(self.deny(
                "vni",
                &vni.to_string(),
                &l.rule,
                "vnis",
                &format!("allowed: {}", spans_list(&l.allowed)),
            )),
            _ => Ok(()),
        }
    }

    /// `group`: the multicast group of a plumb-vxlan network.
    pub fn group(&self, group: IpAddr) -> CniResult<()> {
        self.addresses("group", &[group], &self.rule.groups, "groups")
    }

    /// The unicast peers a plumb-vxlan VTEP floods to (`field`: `peers` or `peers.fromNodes`).
    pub fn peers(&self, field: &str, peers: &[IpAddr]) -> CniResult<()> {
        self.addresses(field, peers, &self.rule.peers, "peers")
    }

    fn addresses(
        &self,
        field: &str,
        ips: &[IpAddr],
        limit: &Option<Limit<Vec<Cidr>>>,
        key: &str,
    ) -> CniResult<()> {
        let Some(l) = limit else {
            return Ok(());
        };
        match ips
            .iter()
            .find(|ip| !l.allowed.iter().any(|c| c.contains(**ip)))
        {
            Some(ip) => {
                Err(self.deny(field, &ip.to_string(), &l.rule, key, &cidr_list(&l.allowed)))
            }
            None => Ok(()),
        }
    }

    /// An IPAM range's subnet (`field` names it, e.g. `ipam.range`): it must lie inside an allowed CIDR.
    pub fn ipam_range(&self, field: &str, subnet: Cidr) -> CniResult<()> {
        let Some(l) = &self.rule.ipam_ranges else {
            return Ok(());
        };
        if l.allowed.iter().any(|c| cidr_within(subnet, *c)) {
            return Ok(());
        }
        Err(self.deny(
            field,
            &subnet.network().to_string(),
            &l.rule,
            "ipamRanges",
            &format!(
                "{}; a range must lie inside one of them",
                cidr_list(&l.allowed)
            ),
        ))
    }

    /// `ipam.network_name` (the pool); `None` is the shared default pool, matched as `_default`.
    pub fn network_name(&self, name: Option<&str>) -> CniResult<()> {
        let Some(l) = &self.rule.network_names else {
            return Ok(());
        };
        let n = name.unwrap_or("_default");
        if l.allowed.iter().any(|p| glob_match(p, n)) {
            return Ok(());
        }
        let value = match name {
            Some(n) => format!("{n:?}"),
            None => "absent (the shared pool \"_default\")".into(),
        };
        Err(self.deny(
            "ipam.network_name",
            &value,
            &l.rule,
            "networkNames",
            &allowed_list(&l.allowed),
        ))
    }

    /// `macspoofchk` as the config gives it (`None`: absent): a config turning it off where the rule
    /// requires it is denied; an absent field is turned on. Returns the value to use.
    pub fn macspoofchk(&self, given: Option<bool>) -> CniResult<bool> {
        match (&self.rule.macspoofchk, given) {
            (Some(l), Some(false)) if l.allowed => Err(self.deny(
                "macspoofchk",
                "false",
                &l.rule,
                "macspoofchk",
                "policy requires macspoofchk: true",
            )),
            (Some(l), None) if l.allowed => Ok(true),
            (_, g) => Ok(g.unwrap_or(false)),
        }
    }
}

fn ns_rule(ns: &str) -> String {
    format!("namespaces.{ns:?}")
}

fn broken(path: &str, what: &str) -> CniError {
    CniError::new(
        code::POLICY_DENIED,
        format!("node policy file {path} {what}; every ADD is denied until it is fixed (DEL and GC still work)"),
    )
}

fn allowed_list(items: &[String]) -> String {
    if items.is_empty() {
        "allowed: none".into()
    } else {
        format!("allowed: {}", items.join(", "))
    }
}

fn spans_list(spans: &[(u32, u32)]) -> String {
    if spans.is_empty() {
        return "none".into();
    }
    spans
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn cidr_list(cidrs: &[Cidr]) -> String {
    allowed_list(&cidrs.iter().map(Cidr::to_string).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/cni/net.d/plumb.d/policy.json";

    fn guard(text: &str, ns: Option<&str>) -> Guard {
        Guard::from_text(PATH, Some(text), ns.map(str::to_string)).unwrap()
    }

    fn denied(r: CniResult<()>, needles: &[&str]) {
        let e = r.unwrap_err();
        assert_eq!(e.code, code::POLICY_DENIED, "{e}");
        for n in needles {
            assert!(e.msg.contains(n), "{:?} lacks {n:?}", e.msg);
        }
        assert_eq!(e.details, vec![format!("node policy file {PATH}")]);
    }

    const TENANTS: &str = r#"{
        "default": {"bridges": ["br-shared"], "vlans": [1, "100-199"], "require": {"macspoofchk": true}},
        "namespaces": {
            "tenant-a": {"bridges": ["br-a", "tenant-a-*"], "vlans": ["2003-2005", 2010],
                         "hostInterfaces": false, "ipamRanges": ["10.10.0.0/16", "fd00:a::/48"],
                         "networkNames": ["tenant-a-*"], "vnis": ["100-200"], "groups": ["239.1.0.0/16"],
                         "peers": ["10.0.0.0/24"]},
            "tenant-b": {"bridges": ["br-b", "tenant-b-*"], "require": {"macspoofchk": false}}
        }
    }"#;

    #[test]
    fn globs() {
        assert!(glob_match("br-a", "br-a"));
        assert!(!glob_match("br-a", "br-ab"));
        assert!(glob_match("tenant-a-*", "tenant-a-x"));
        assert!(glob_match("tenant-a-*", "tenant-a-"));
        assert!(!glob_match("tenant-a-*", "tenant-b-x"));
        assert!(glob_match("*-ext", "br-ext"));
        assert!(glob_match("br-*-a*", "br-x-ab"));
        assert!(!glob_match("br-*-a", "br-a"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*a", "a"));
    }

    #[test]
    fn spans_cover_ranges() {
        let allowed = [(2010, 2010), (2003, 2005), (2006, 2008)];
        assert_eq!(first_uncovered(&allowed, 2003, 2008), None);
        assert_eq!(first_uncovered(&allowed, 2003, 2009), Some(2009));
        assert_eq!(first_uncovered(&allowed, 2000, 2004), Some(2000));
        assert_eq!(first_uncovered(&allowed, 2010, 2010), None);
        assert_eq!(first_uncovered(&[], 1, 1), Some(1));
        assert_eq!(first_uncovered(&[(1, 4094)], 1, 4094), None);
    }

    #[test]
    fn cidr_containment() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert!(cidr_within(c("10.10.3.0/24"), c("10.10.0.0/16")));
        assert!(cidr_within(c("10.10.0.0/16"), c("10.10.0.0/16")));
        assert!(!cidr_within(c("10.0.0.0/8"), c("10.10.0.0/16")));
        assert!(!cidr_within(c("10.11.0.0/24"), c("10.10.0.0/16")));
        assert!(!cidr_within(c("::/0"), c("10.0.0.0/8")));
        assert!(cidr_within(c("fd00:a:0:1::/64"), c("fd00:a::/48")));
    }

    #[test]
    fn namespace_rule_over_default() {
        let a = guard(TENANTS, Some("tenant-a"));
        assert!(a.bridge("tenant-a-x").is_ok());
        denied(
            a.bridge("br-b"),
            &[
                "namespace \"tenant-a\"",
                "bridge \"br-b\"",
                "namespaces.\"tenant-a\".bridges",
                "allowed: br-a, tenant-a-*",
            ],
        );
        // Not set for tenant-a: inherited from default.
        denied(
            a.macspoofchk(Some(false)).map(|_| ()),
            &[
                "macspoofchk false",
                "default.require.macspoofchk",
                "policy requires macspoofchk: true",
            ],
        );
        assert_eq!(a.macspoofchk(None), Ok(true));
        let b = guard(TENANTS, Some("tenant-b"));
        assert_eq!(b.macspoofchk(Some(false)), Ok(false));
        assert_eq!(b.macspoofchk(None), Ok(false));
        let other = guard(TENANTS, Some("other"));
        denied(
            other.bridge("br-a"),
            &[
                "namespace \"other\"",
                "default.bridges",
                "allowed: br-shared",
            ],
        );
        let none = guard(TENANTS, None);
        denied(
            none.bridge("br-a"),
            &["no namespace in CNI_ARGS", "default.bridges"],
        );
        assert!(none.bridge("br-shared").is_ok());
    }

    #[test]
    fn vlans_access_trunk_and_untagged() {
        let a = guard(TENANTS, Some("tenant-a"));
        assert!(a.vlans(2003, &[(2004, 2005)], false).is_ok());
        assert!(a.vlans(0, &[(2010, 2010)], false).is_ok());
        denied(
            a.vlans(2006, &[], false),
            &[
                "vlan 2006",
                "namespaces.\"tenant-a\".vlans",
                "allowed: 2003-2005, 2010",
            ],
        );
        denied(
            a.vlans(2003, &[(2004, 2004), (2004, 2010)], false),
            &["vlanTrunk[1] 2004-2010", "2006 is not"],
        );
        denied(
            a.vlans(0, &[], false),
            &["default VLAN 1", "list 1 to allow untagged ports"],
        );
        denied(a.vlans(2003, &[], true), &["preserveDefaultVlan true"]);
        let other = guard(TENANTS, Some("other"));
        assert!(other.vlans(0, &[], false).is_ok());
        assert!(other.vlans(150, &[(100, 199)], true).is_ok());
    }

    #[test]
    fn vxlan_and_ipam_fields() {
        let a = guard(TENANTS, Some("tenant-a"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert!(a.vni(150).is_ok());
        denied(
            a.vni(42),
            &["vni 42", "namespaces.\"tenant-a\".vnis", "allowed: 100-200"],
        );
        assert!(a.group(ip("239.1.2.3")).is_ok());
        denied(
            a.group(ip("224.0.0.88")),
            &["group 224.0.0.88", ".groups", "allowed: 239.1.0.0/16"],
        );
        assert!(a.peers("peers", &[ip("10.0.0.1"), ip("10.0.0.2")]).is_ok());
        denied(
            a.peers("peers", &[ip("10.0.0.1"), ip("10.0.1.2")]),
            &["peers 10.0.1.2", ".peers"],
        );
        assert!(a.ipam_range("ipam.range", c("10.10.3.0/24")).is_ok());
        assert!(a
            .ipam_range("ipam.ipRanges[0]", c("fd00:a:0:1::/64"))
            .is_ok());
        denied(
            a.ipam_range("ipam.range", c("10.0.0.0/8")),
            &[
                "ipam.range 10.0.0.0/8",
                "namespaces.\"tenant-a\".ipamRanges",
                "inside one of them",
            ],
        );
        assert!(a.network_name(Some("tenant-a-pool")).is_ok());
        denied(
            a.network_name(Some("tenant-b-pool")),
            &["ipam.network_name \"tenant-b-pool\"", ".networkNames"],
        );
        denied(a.network_name(None), &["\"_default\""]);
        denied(
            a.host_interface("uplink", "eth1"),
            &["uplink \"eth1\"", ".hostInterfaces"],
        );
        let other = guard(TENANTS, Some("other"));
        assert!(other.host_interface("uplink", "eth1").is_ok());
        assert!(other.vni(42).is_ok());
    }

    #[test]
    fn absent_file_and_absent_default_limit_nothing() {
        let g = Guard::from_text(PATH, None, Some("x".into())).unwrap();
        assert!(g.is_unrestricted());
        let g = guard(r#"{"namespaces": {"t": {"bridges": []}}}"#, Some("x"));
        assert!(g.is_unrestricted());
        let t = guard(r#"{"namespaces": {"t": {"bridges": []}}}"#, Some("t"));
        denied(t.bridge("br0"), &["allowed: none"]);
        assert!(guard("{}", None).is_unrestricted());
    }

    #[test]
    fn broken_files_fail_closed() {
        let bad = [
            ("{", "does not parse"),
            (
                r#"{"default": {"bridgse": ["a"]}}"#,
                "unknown field `bridgse`",
            ),
            (r#"{"defaults": {}}"#, "unknown field `defaults`"),
            (
                r#"{"namespaces": {"t": {"vlans": [4095]}}}"#,
                "namespaces.\"t\".vlans[0]: 4095 is outside 1-4094",
            ),
            (
                r#"{"namespaces": {"u": {"vlans": ["9-3"]}}}"#,
                "starts above its end",
            ),
            (r#"{"default": {"vnis": [true]}}"#, "default.vnis[0]"),
            (
                r#"{"default": {"ipamRanges": ["10.0.0.0/33"]}}"#,
                "default.ipamRanges[0]",
            ),
            (
                r#"{"default": {"require": {"macspoofchk": "yes"}}}"#,
                "invalid type",
            ),
        ];
        for (text, needle) in bad {
            // A broken rule of another namespace denies this one too.
            let e = Guard::from_text(PATH, Some(text), Some("x".into())).unwrap_err();
            assert_eq!(e.code, code::POLICY_DENIED, "{text}");
            assert!(e.msg.contains(PATH), "{}", e.msg);
            assert!(e.msg.contains(needle), "{text}: {}", e.msg);
            assert!(e.msg.contains("every ADD is denied"), "{}", e.msg);
        }
    }
}
