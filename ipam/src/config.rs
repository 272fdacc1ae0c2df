//! The `ipam` section of a network configuration, read the way whereabouts reads it (range,
//! range_start, range_end, exclude, ipRanges, gateway, routes, dns, network_name,
//! enable_overlapping_ranges, kubernetes) plus plumb's store selector.

use crate::range::{parse_ip, Range};
use plumb_cni::config::{opt_bool, opt_str, opt_str_list, opt_u64};
use plumb_cni::{AddResult, CniError, CniResult, NetConf, Version};
use serde_json::{json, Map, Value};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where and as whom the Kubernetes store talks to the API (`ipam.kubernetes`); the store itself is
/// the plumb-ipam-kube crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// `kubernetes.kubeconfig`; `None` means the in-cluster service account.
    pub kubeconfig: Option<String>,
    /// This node's name: `PLUMB_NODE_NAME`, else `kubernetes.nodeName`, else the host name.
    pub node: String,
    /// Deadline of one CNI call (`kubernetes.timeoutSeconds`).
    pub timeout: Duration,
}

/// Where reservations are kept when `dataDir` is not given.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/plumb-ipam";

/// The store space used when `network_name` is not given.
pub const DEFAULT_SPACE: &str = "_default";

/// The parsed `ipam` section.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    /// Ranges in config order: the top-level `range` first, then `ipRanges`; one address is taken from each.
    pub ranges: Vec<Range>,
    /// `routes` and `dns`, carried into the result unchanged.
    pub routes_and_dns: AddResult,
    /// The store space: `network_name`, or [`DEFAULT_SPACE`]. Addresses are unique inside a space.
    pub space: String,
    /// `dataDir` of the file store.
    pub data_dir: PathBuf,
    /// How long to wait for the store lock before answering "try again later" (code 11).
    pub lock_timeout_secs: u64,
    /// `fsync`: fsync records and the directory on every change (off by default; see docs/design.md).
    pub fsync: bool,
    /// Where reservations live.
    pub store: Store,
}

/// Where an attachment's reservations live, read from only the fields DEL needs (never the ranges,
/// gateway or routes), so DEL works on a config that ADD would refuse.
#[derive(Debug, Clone)]
pub struct Location {
    /// Where reservations live.
    pub store: Store,
    /// The store space (`network_name`).
    pub space: String,
    /// `dataDir`, or the text given when it is not an absolute path (ADD refuses such a config, so
    /// nothing of it is stored, and no command ever creates files relative to the current directory).
    pub data_dir: Result<PathBuf, String>,
    /// `lockTimeoutSeconds` (30 when missing or invalid).
    pub lock_timeout_secs: u64,
    /// `fsync` (off when missing or invalid).
    pub fsync: bool,
}

/// What DEL can learn from a config about where its reservations are.
#[derive(Debug, Clone)]
pub enum Located {
    /// The store of the config.
    At(Location),
    /// No reservation of this config can exist (ADD refuses it for this reason, before storing anything).
    Nowhere(String),
}

/// Reads only what DEL needs. A field that decides where the store is but is invalid means ADD refused
/// the config, so nothing of it is stored: `Nowhere`. The one error is a Kubernetes store whose
/// settings cannot be read: the cluster may hold a reservation this call cannot reach.
pub fn locate(conf: &NetConf) -> CniResult<Located> {
    let Some(Value::Object(ipam)) = conf.raw.get("ipam") else {
        return Ok(Located::Nowhere("the config has no \"ipam\" object".into()));
    };
    let store = match parse_store(ipam) {
        Ok(s) => s,
        Err(e) if uses_kubernetes(&conf.raw) => return Err(e),
        Err(e) => return Ok(Located::Nowhere(e.msg)),
    };
    let space = match opt_str(ipam, "network_name") {
        Ok(None) => DEFAULT_SPACE.to_string(),
        Ok(Some(n)) => match validate_space(&n) {
            Ok(n) => n,
            Err(e) => return Ok(Located::Nowhere(e.msg)),
        },
        Err(e) => return Ok(Located::Nowhere(named(e, "ipam.").msg)),
    };
    let data_dir = match opt_str(ipam, "dataDir") {
        Ok(d) => {
            let d = PathBuf::from(d.unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
            if d.is_absolute() {
                Ok(d)
            } else {
                Err(d.display().to_string())
            }
        }
        Err(e) => return Ok(Located::Nowhere(named(e, "ipam.").msg)),
    };
    Ok(Located::At(Location {
        store,
        space,
        data_dir,
        lock_timeout_secs: opt_u64(ipam, "lockTimeoutSeconds", 3600)
            .ok()
            .flatten()
            .unwrap_or(30),
        fsync: opt_bool(ipam, "fsync").ok().flatten().unwrap_or(false),
    }))
}

/// Whether a raw network config (the plugin's stdin, parsed as a JSON object) asks for the
/// Kubernetes store: `ipam.store` is `"kubernetes"`, or there is no `store` and a `kubernetes` block.
pub fn uses_kubernetes(raw: &Map<String, Value>) -> bool {
    let Some(Value::Object(ipam)) = raw.get("ipam") else {
        return false;
    };
    let store = ipam.get("store").and_then(Value::as_str);
    store == Some("kubernetes")
        || (store.is_none() && ipam.get("kubernetes").is_some_and(|k| !k.is_null()))
}

/// The store selected by `store` (and, as in whereabouts, by the presence of `kubernetes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// Files under `dataDir` (node-local, or cluster-wide on a shared filesystem).
    File,
    /// `IPBlock` objects in the Kubernetes API; `dataDir` then only holds the node-local lock.
    Kubernetes(KubeSettings),
}

impl IpamConfig {
    /// Reads `conf.raw["ipam"]`; every bad field is code 7 naming it.
    pub fn from_conf(conf: &NetConf) -> CniResult<IpamConfig> {
        let ipam = match conf.raw.get("ipam") {
            Some(Value::Object(m)) => m,
            _ => {
                return Err(CniError::config(
                    "field \"ipam\" is required and must be a JSON object",
                ))
            }
        };
        let store = parse_store(ipam)?;
        let gateway = opt_str(ipam, "gateway")?
            .map(|g| parse_ip(&g, "ipam.gateway"))
            .transpose()?;
        let ranges = parse_ranges(ipam, gateway)?;
        if let Some(g) = gateway {
            check_gateway_in_a_range(g, &ranges)?;
        }
        let space = match opt_str(ipam, "network_name")? {
            Some(n) => validate_space(&n)?,
            None => DEFAULT_SPACE.to_string(),
        };
        // Addresses are always unique inside a space, which is what `true` asks for; `false` is accepted for
        // compatibility and does not allow duplicates (see docs/ipam.md).
        opt_bool(ipam, "enable_overlapping_ranges")?;
        let data_dir =
            PathBuf::from(opt_str(ipam, "dataDir")?.unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
        if !data_dir.is_absolute() {
            return Err(CniError::config(format!(
                "ipam.dataDir {:?} must be an absolute path",
                data_dir.display()
            )));
        }
        let lock_timeout_secs = opt_u64(ipam, "lockTimeoutSeconds", 3600)?.unwrap_or(30);
        Ok(IpamConfig {
            ranges,
            routes_and_dns: parse_routes_and_dns(ipam)?,
            space,
            data_dir,
            lock_timeout_secs,
            fsync: opt_bool(ipam, "fsync")?.unwrap_or(false),
            store,
        })
    }

    /// Where this config's reservations live.
    pub fn location(&self) -> Location {
        Location {
            store: self.store.clone(),
            space: self.space.clone(),
            data_dir: Ok(self.data_dir.clone()),
            lock_timeout_secs: self.lock_timeout_secs,
            fsync: self.fsync,
        }
    }

    /// The range that may hand out `ip`, if any.
    pub fn range_for(&self, ip: IpAddr) -> Option<usize> {
        self.ranges.iter().position(|r| r.subnet.contains(ip))
    }
}

/// Most ranges (`range` plus `ipRanges`) a config may hold: one address is taken from each, so more
/// than this is never a real network, and it bounds the per-ADD work.
pub const MAX_RANGES: usize = 64;

/// Most exclusions that apply to one range (its `ipRanges[i].exclude` plus the top-level `exclude`).
/// Exclusions are merged spans, searched by bisection, so this bounds memory and config size, not time
/// per address; write a CIDR instead of many single addresses.
pub const MAX_EXCLUDES: usize = 16_384;

/// The top-level `gateway` must lie in the subnet of at least one range of its family.
fn check_gateway_in_a_range(g: IpAddr, ranges: &[Range]) -> CniResult<()> {
    if ranges.iter().any(|r| r.subnet.contains(g)) {
        return Ok(());
    }
    let same: Vec<String> = ranges
        .iter()
        .filter(|r| r.family() == crate::range::Family::of(g))
        .map(|r| r.subnet.to_string())
        .collect();
    let family = if g.is_ipv4() { "IPv4" } else { "IPv6" };
    Err(CniError::config(if same.is_empty() {
        format!("ipam.gateway {g} is an {family} address but no range is {family}; remove the gateway or add an {family} range")
    } else {
        format!(
            "ipam.gateway {g} is outside every {family} range ({}); set a gateway inside the range's subnet",
            same.join(", ")
        )
    }))
}

/// Longest deadline `kubernetes.timeoutSeconds` may set (kubelet gives a CNI call a few minutes).
pub const MAX_KUBE_TIMEOUT_SECS: u64 = 300;

fn parse_store(ipam: &Map<String, Value>) -> CniResult<Store> {
    let kube = match ipam.get("kubernetes") {
        None | Some(Value::Null) => None,
        Some(Value::Object(k)) => Some(k),
        Some(_) => return Err(CniError::config("ipam.kubernetes must be an object such as {\"kubeconfig\": \"/etc/cni/net.d/plumb.d/plumb.kubeconfig\"}")),
    };
    match (opt_str(ipam, "store")?.as_deref(), kube) {
        (None | Some("file"), None) | (Some("file"), Some(_)) => Ok(Store::File),
        (None | Some("kubernetes"), k) => {
            let empty = Map::new();
            let k = k.unwrap_or(&empty);
            let named = |e: CniError| CniError {
                msg: format!("ipam.kubernetes.{}", e.msg.trim_start_matches("field ")),
                ..e
            };
            let kubeconfig = opt_str(k, "kubeconfig")
                .map_err(named)?
                .filter(|p| !p.is_empty());
            let timeout = opt_u64(k, "timeoutSeconds", MAX_KUBE_TIMEOUT_SECS)
                .map_err(named)?
                .unwrap_or(20)
                .max(1);
            let node = match std::env::var("PLUMB_NODE_NAME")
                .ok()
                .filter(|n| !n.is_empty())
            {
                Some(n) => n,
                None => match opt_str(k, "nodeName").map_err(named)? {
                    Some(n) if !n.is_empty() => n,
                    _ => match kubeconfig.as_deref().and_then(node_name_beside) {
                        Some(n) => n,
                        None => host_name()?,
                    },
                },
            };
            Ok(Store::Kubernetes(KubeSettings {
                kubeconfig,
                node,
                timeout: Duration::from_secs(timeout),
            }))
        }
        (Some(other), _) => Err(CniError::config(format!(
            "ipam.store {other:?} is unknown; use \"file\" or \"kubernetes\""
        ))),
    }
}

/// The Node name the installer writes to `node-name` beside the kubeconfig, if it did.
fn node_name_beside(kubeconfig: &str) -> Option<String> {
    let file = std::path::Path::new(kubeconfig).parent()?.join("node-name");
    let name = std::fs::read_to_string(file).ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The node name Kubernetes uses by default: the host name, lower-cased.
fn host_name() -> CniResult<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .map_err(|e| CniError::io("cannot read the host name for the node name (set PLUMB_NODE_NAME or ipam.kubernetes.nodeName)", &e))
}

fn parse_ranges(ipam: &Map<String, Value>, gateway: Option<IpAddr>) -> CniResult<Vec<Range>> {
    let top_exclude = opt_str_list(ipam, "exclude").map_err(|e| named(e, "ipam."))?;
    if top_exclude.len() > MAX_EXCLUDES {
        return Err(CniError::config(format!(
            "ipam.exclude has {} entries; at most {MAX_EXCLUDES} are allowed: merge neighbouring addresses into CIDRs",
            top_exclude.len()
        )));
    }
    // The top-level gateway belongs to every range whose subnet holds it (check_gateway_in_a_range
    // refuses one that lies in none).
    let shared_gateway = |text: &str| gateway.filter(|g| range_subnet_holds(text, *g));
    let mut ranges = Vec::new();
    if let Some(text) = opt_str(ipam, "range").map_err(|e| named(e, "ipam."))? {
        let start = opt_str(ipam, "range_start")?;
        let end = opt_str(ipam, "range_end")?;
        ranges.push(Range::build(
            "ipam.range",
            &text,
            start.as_deref(),
            end.as_deref(),
            &top_exclude,
            shared_gateway(&text),
        )?);
    }
    match ipam.get("ipRanges") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.len() > MAX_RANGES => {
            return Err(CniError::config(format!(
                "ipam.ipRanges has {} entries; at most {MAX_RANGES} ranges are allowed",
                items.len()
            )))
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let field = format!("ipam.ipRanges[{i}].range");
                let obj = item.as_object().ok_or_else(|| {
                    CniError::config(format!(
                        "ipam.ipRanges[{i}] must be an object with a \"range\""
                    ))
                })?;
                let text = opt_str(obj, "range")?
                    .ok_or_else(|| CniError::config(format!("{field} is required")))?;
                let mut exclude = opt_str_list(obj, "exclude")
                    .map_err(|e| named(e, &format!("ipam.ipRanges[{i}].")))?;
                if exclude.len() + top_exclude.len() > MAX_EXCLUDES {
                    return Err(CniError::config(format!(
                        "ipam.ipRanges[{i}].exclude ({} entries) with ipam.exclude ({} entries) exceeds {MAX_EXCLUDES} exclusions for one range: merge neighbouring addresses into CIDRs",
                        exclude.len(),
                        top_exclude.len()
                    )));
                }
                exclude.extend(top_exclude.iter().cloned());
                let start = opt_str(obj, "range_start")?;
                let end = opt_str(obj, "range_end")?;
                let own_gateway = opt_str(obj, "gateway")
                    .map_err(|e| named(e, &format!("ipam.ipRanges[{i}].")))?
                    .map(|g| parse_ip(&g, &format!("ipam.ipRanges[{i}].gateway")))
                    .transpose()?;
                if let Some(g) = own_gateway.filter(|g| !range_subnet_holds(&text, *g)) {
                    return Err(CniError::config(format!(
                        "ipam.ipRanges[{i}].gateway {g} is outside its range {text:?}; put the gateway inside the range's subnet"
                    )));
                }
                ranges.push(Range::build(
                    &field,
                    &text,
                    start.as_deref(),
                    end.as_deref(),
                    &exclude,
                    own_gateway.or_else(|| shared_gateway(&text)),
                )?);
            }
        }
        Some(_) => {
            return Err(CniError::config(
                "ipam.ipRanges must be an array of objects",
            ))
        }
    }
    if ranges.is_empty() {
        return Err(CniError::config(
            "ipam has no range: set \"range\" (e.g. \"10.1.0.0/24\" or \"10.1.0.10-10.1.0.50/24\") or \"ipRanges\"",
        ));
    }
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            if a.family() == b.family() && a.start <= b.end && b.start <= a.end {
                return Err(CniError::config(format!(
                    "ipam ranges {} and {} overlap; each range must hold distinct addresses",
                    a.describe(),
                    b.describe()
                )));
            }
        }
    }
    Ok(ranges)
}

/// Whether the subnet of a range text (`CIDR` or `first-last/len`) holds `ip`; false when it does not
/// parse (building the range then reports why).
fn range_subnet_holds(text: &str, ip: IpAddr) -> bool {
    crate::range::parse_range_text("", text).is_ok_and(|(subnet, _, _)| subnet.contains(ip))
}

fn parse_routes_and_dns(ipam: &Map<String, Value>) -> CniResult<AddResult> {
    let mut v = json!({ "cniVersion": Version::LATEST.as_str() });
    for key in ["routes", "dns"] {
        if let Some(x) = ipam.get(key).filter(|x| !x.is_null()) {
            v[key] = x.clone();
        }
    }
    let parsed = AddResult::parse(&v, Version::LATEST).map_err(|e| {
        let mut e = CniError::config(format!("ipam: {}", e.msg));
        e.details.push(
            "routes are [{\"dst\": \"CIDR\", \"gw\": \"IP\"}]; dns is {\"nameservers\": [...]}"
                .into(),
        );
        e
    })?;
    check_routes(&parsed.routes)?;
    Ok(parsed)
}

/// Each route's `dst` is a network address (no host bits set), and no two routes share a destination:
/// the interface can hold only one route per destination, so a second one would be reported in the
/// result but never installed.
fn check_routes(routes: &[plumb_cni::result::Route]) -> CniResult<()> {
    let describe = |r: &plumb_cni::result::Route| match r.gw {
        Some(gw) => format!("{{dst {}, gw {gw}}}", r.dst),
        None => format!("{{dst {}}}", r.dst),
    };
    let mut seen: std::collections::HashMap<(IpAddr, u8), usize> = Default::default();
    for (i, r) in routes.iter().enumerate() {
        let net = crate::range::Subnet::parse(&r.dst.to_string(), "")?;
        if net.network != r.dst.addr {
            return Err(CniError::config(format!(
                "ipam.routes[{i}].dst {} has host bits set; write its network {net} (or /{} for one host)",
                r.dst,
                net.family().bits()
            )));
        }
        if let Some(j) = seen.insert((net.network, net.prefix), i) {
            return Err(CniError::config(format!(
                "ipam.routes[{j}] {} and ipam.routes[{i}] {} have the same destination {net}; keep one route per destination",
                describe(&routes[j]),
                describe(r)
            )));
        }
    }
    Ok(())
}

/// Checks a `network_name`, which becomes a directory name: 1–63 of letters, digits, `.`, `_`, `-`,
/// starting with a letter or digit (so no `..`, `/` or hidden names).
pub fn validate_space(name: &str) -> CniResult<String> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok || name.len() > 63 {
        return Err(CniError::config(format!(
            "ipam.network_name {name:?} is not allowed: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )));
    }
    Ok(name.to_string())
}

fn named(mut e: CniError, prefix: &str) -> CniError {
    e.msg = e.msg.replacen("field \"", &format!("field \"{prefix}"), 1);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(ipam: Value) -> CniResult<IpamConfig> {
        let c = json!({"cniVersion": "1.0.0", "name": "net", "type": "plumb-ipam", "ipam": ipam});
        IpamConfig::from_conf(&NetConf::parse(c.to_string().as_bytes()).unwrap())
    }

    #[test]
    fn dual_stack_and_defaults() {
        let c = conf(json!({"type": "plumb-ipam", "range": "10.1.0.0/24", "ipRanges": [{"range": "fd00:1::/64"}],
                            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}], "gateway": "10.1.0.1"}))
        .unwrap();
        assert_eq!(c.ranges.len(), 2);
        assert_eq!(c.space, DEFAULT_SPACE);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.ranges[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(c.ranges[1].gateway, None);
        assert_eq!(c.routes_and_dns.routes.len(), 1);
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let cases = [
            (
                json!({"range": "10.1.0.0/24", "network_name": "../../etc"}),
                "network_name",
            ),
            (
                json!({"range": "10.1.0.0/24", "network_name": ".hidden"}),
                "network_name",
            ),
            (json!({}), "no range"),
            (
                json!({"range": "10.1.0.0/24", "ipRanges": [{"range": "10.1.0.128/25"}]}),
                "overlap",
            ),
            (
                json!({"range": "10.1.0.0/24", "dataDir": "rel/dir"}),
                "dataDir",
            ),
            (
                json!({"range": "10.1.0.0/24", "store": "etcd"}),
                "ipam.store",
            ),
            (
                json!({"range": "10.1.0.0/24", "gateway": "x"}),
                "ipam.gateway",
            ),
            (
                json!({"range": "10.1.0.0/24", "enable_overlapping_ranges": "true"}),
                "enable_overlapping_ranges",
            ),
            (
                json!({"range": "10.1.0.0/24", "routes": [{"dst": "nope"}]}),
                "routes",
            ),
        ];
        for (ipam, needle) in cases {
            let e = conf(ipam.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{ipam}: {e}");
            assert!(e.to_string().contains(needle), "{ipam}: {e}");
        }
    }

    #[test]
    fn store_selection_follows_whereabouts() {
        let k = conf(json!({"range": "10.1.0.0/24", "kubernetes": {"kubeconfig": "/k", "nodeName": "n1", "timeoutSeconds": 7}}))
            .unwrap();
        let Store::Kubernetes(s) = k.store else {
            panic!("kubernetes block selects the kubernetes store")
        };
        assert_eq!(s.kubeconfig.as_deref(), Some("/k"));
        assert_eq!(s.timeout, Duration::from_secs(7));
        if std::env::var_os("PLUMB_NODE_NAME").is_none() {
            assert_eq!(s.node, "n1");
            // Without nodeName: the installer's node-name file beside the kubeconfig.
            let dir = std::env::temp_dir().join(format!("plumb-nodename-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("node-name"), "ip-10-0-0-7.internal\n").unwrap();
            let kc = dir.join("plumb.kubeconfig").display().to_string();
            let k =
                conf(json!({"range": "10.1.0.0/24", "kubernetes": {"kubeconfig": kc}})).unwrap();
            let Store::Kubernetes(s) = k.store else {
                panic!("kubernetes store")
            };
            assert_eq!(s.node, "ip-10-0-0-7.internal");
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let f = conf(
            json!({"range": "10.1.0.0/24", "store": "file", "kubernetes": {"kubeconfig": "/k"}}),
        )
        .unwrap();
        assert_eq!(f.store, Store::File);
        assert_eq!(
            conf(json!({"range": "10.1.0.0/24"})).unwrap().store,
            Store::File
        );
        let e = conf(json!({"range": "10.1.0.0/24", "kubernetes": {"timeoutSeconds": 301}}))
            .unwrap_err();
        assert!(e.msg.contains("timeoutSeconds"), "{}", e.msg);
    }

    #[test]
    fn gateway_routes_and_limits() {
        let c = conf(json!({"range": "10.1.0.0/24", "gateway": "10.1.0.1",
                            "ipRanges": [{"range": "fd00:1::/64", "gateway": "fd00:1::1"},
                                         {"range": "10.2.0.0/24"}]}))
        .unwrap();
        let gws: Vec<Option<String>> = c
            .ranges
            .iter()
            .map(|r| r.gateway.map(|g| g.to_string()))
            .collect();
        assert_eq!(
            gws,
            [Some("10.1.0.1".into()), Some("fd00:1::1".into()), None]
        );
        let cases = [
            (
                json!({"range": "10.1.0.0/24", "gateway": "10.3.0.1"}),
                "outside every IPv4 range (10.1.0.0/24)",
            ),
            (
                json!({"range": "fd00::/64", "gateway": "10.3.0.1"}),
                "no range is IPv4",
            ),
            (
                json!({"ipRanges": [{"range": "10.1.0.0/24", "gateway": "10.3.0.1"}]}),
                "ipam.ipRanges[0].gateway 10.3.0.1",
            ),
            (
                json!({"range": "10.1.0.0/24", "routes": [{"dst": "0.0.0.0/0"}, {"dst": "0.0.0.0/0", "gw": "10.1.0.9"}]}),
                "ipam.routes[0] {dst 0.0.0.0/0} and ipam.routes[1] {dst 0.0.0.0/0, gw 10.1.0.9}",
            ),
            (
                json!({"range": "10.1.0.0/24", "routes": [{"dst": "fd00::1/64"}]}),
                "write its network fd00::/64",
            ),
            (
                json!({"range": "10.1.0.0/24", "ipRanges": [{"range": "10.2.0.0/24", "exclude": vec!["10.2.0.9"; MAX_EXCLUDES]}],
                    "exclude": ["10.1.0.5"]}),
                "ipam.ipRanges[0].exclude (16384 entries) with ipam.exclude (1 entries)",
            ),
        ];
        for (ipam, needle) in cases {
            let e = conf(ipam.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{ipam}");
            assert!(e.msg.contains(needle), "{ipam}: {}", e.msg);
        }
    }

    #[test]
    fn del_locates_the_store_without_the_ranges() {
        let locate_of = |ipam: Value| {
            let c =
                json!({"cniVersion": "1.0.0", "name": "net", "type": "plumb-ipam", "ipam": ipam});
            locate(&NetConf::parse(c.to_string().as_bytes()).unwrap())
        };
        let Located::At(l) = locate_of(
            json!({"range": "banana", "gateway": "x", "network_name": "n1",
                                               "dataDir": "/d", "lockTimeoutSeconds": "bad"}),
        )
        .unwrap() else {
            panic!("a broken range does not hide the store")
        };
        assert_eq!(
            (l.space.as_str(), l.data_dir.clone(), l.lock_timeout_secs),
            ("n1", Ok(PathBuf::from("/d")), 30)
        );
        let Located::At(l) = locate_of(json!({"dataDir": "rel"})).unwrap() else {
            panic!("a relative dataDir still locates the space")
        };
        assert_eq!(l.data_dir, Err("rel".to_string()));
        for ipam in [
            json!({"network_name": "../x"}),
            json!({"store": "etcd"}),
            json!("text"),
        ] {
            assert!(
                matches!(locate_of(ipam.clone()).unwrap(), Located::Nowhere(_)),
                "{ipam}"
            );
        }
        // A Kubernetes store whose settings do not read: the cluster may hold a reservation.
        assert_eq!(
            locate_of(json!({"kubernetes": {"timeoutSeconds": 999}}))
                .unwrap_err()
                .code,
            7
        );
    }
}
