//! plumb-ipam as a CNI plugin: ADD, DEL, CHECK, STATUS and GC on the file store or the Kubernetes store.

use crate::alloc::{allocate, claimed_offsets, release, Attachment};
use crate::config::{locate, IpamConfig, Located, Location, Store};
use crate::hint::Hint;
use crate::kube::store::KubeSettings;
use crate::range::parse_ip;
use crate::store::FileStore;
use plumb_cni::result::{Cidr, IpConfig};
use plumb_cni::{code, AddResult, CniError, CniResult, Plugin, Request};
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

/// The plumb-ipam plugin. `kube` is the Kubernetes store when the binary carries it (plumb-ipam-kube);
/// plumb-ipam itself leaves it out, so the Kubernetes client is not linked into the binary every ADD on
/// the file store starts, and hands Kubernetes-store configs to plumb-ipam-kube (see [`crate::helper`]).
#[derive(Default)]
pub struct Ipam {
    /// The Kubernetes store, if this binary has one.
    pub kube: Option<&'static dyn KubeStore>,
}

impl std::fmt::Debug for Ipam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("kube", &self.kube.is_some())
            .finish()
    }
}

/// What `plumb-ipam --help` says (plumb-ipam-kube says the same under its own name).
pub const ABOUT: plumb_cni::cli::About = plumb_cni::cli::About {
    name: "plumb-ipam",
    summary: "cluster IPAM: ranges, exclusions, dual-stack, on a file-locked node store or the Kubernetes store (IPBlock objects)",
    reference: "docs/ipam.md (and docs/kubernetes.md for the Kubernetes store); README.md section \"plumb-ipam config\"; logLevel/logFile (or log_level/log_file) may also be set inside \"ipam\"",
    more: crate::admin::USAGE,
};

/// What a person's run of plumb-ipam asks for: `--help`, `--version` or (bare) the about line; `None`
/// for a CNI call or an admin command (the other arguments).
pub fn person_asks(args: &[String]) -> Option<plumb_cni::cli::Ask> {
    use plumb_cni::cli::{ask, Ask};
    ask(args, |k| std::env::var(k).ok()).filter(|a| !matches!(a, Ask::Unknown(_)))
}

/// The operations of the Kubernetes store, as the plugin calls them.
pub trait KubeStore: Sync {
    /// ADD: one address per range (the static requests where given).
    fn add(
        &self,
        k: &KubeSettings,
        cfg: &IpamConfig,
        who: &Attachment,
        statics: &[IpAddr],
    ) -> CniResult<Vec<IpAddr>>;
    /// DEL: every reservation of the attachment (from the store location alone, not the ranges).
    fn del(&self, k: &KubeSettings, loc: &Location, cid: &str, ifname: &str) -> CniResult<()>;
    /// The addresses the attachment holds in the configured ranges.
    fn held(
        &self,
        k: &KubeSettings,
        cfg: &IpamConfig,
        cid: &str,
        ifname: &str,
    ) -> CniResult<Vec<IpAddr>>;
    /// STATUS.
    fn status(&self, k: &KubeSettings, cfg: &IpamConfig) -> CniResult<()>;
    /// GC of this node's reservations of `network` not in `valid`; how many were freed.
    fn gc(
        &self,
        k: &KubeSettings,
        cfg: &IpamConfig,
        network: &str,
        valid: &HashSet<(&str, &str)>,
    ) -> CniResult<usize>;
}

impl Ipam {
    fn kube(&self) -> CniResult<&'static dyn KubeStore> {
        self.kube.ok_or_else(|| {
            CniError::new(
                code::IO_FAILURE,
                "this binary has no Kubernetes store; plumb-ipam hands such configs to plumb-ipam-kube",
            )
        })
    }
}

fn open(cfg: &IpamConfig) -> CniResult<FileStore> {
    Ok(FileStore::open(&cfg.data_dir, &cfg.space)?.with_fsync(cfg.fsync))
}

fn timeout(cfg: &IpamConfig) -> Duration {
    Duration::from_secs(cfg.lock_timeout_secs)
}

impl Plugin for Ipam {
    fn name(&self) -> &'static str {
        "plumb-ipam"
    }

    fn about(&self) -> plumb_cni::cli::About {
        ABOUT
    }

    fn log_sections(&self) -> &'static [&'static str] {
        &["ipam"]
    }

    fn add(&self, req: &Request) -> CniResult<AddResult> {
        req.env.args.check_known(self.name(), &[])?;
        let cfg = IpamConfig::from_conf(&req.conf)?;
        enforce_policy(req, &cfg)?;
        log::debug!("plan: {cfg:?}");
        let statics = static_requests(req)?;
        // A result the config's version cannot hold (two IPv4 ranges at 0.2.0, an IPv6 route without
        // an IPv6 range at 0.1.0) is refused before anything is reserved: the entry point converts the
        // result only after the reservation is committed. The first address of each range stands in.
        let placeholder: Vec<IpAddr> = cfg.ranges.iter().map(|r| r.addr(0)).collect();
        result_of(&cfg, &placeholder).to_json(req.conf.version)?;
        let who = attachment(req);
        if let Store::Kubernetes(k) = &cfg.store {
            return Ok(result_of(&cfg, &self.kube()?.add(k, &cfg, &who, &statics)?));
        }
        let store = open(&cfg)?;
        let locked = store.lock(timeout(&cfg))?;
        let ips = allocate(&locked, &cfg, &who, &statics)?;
        drop(locked);
        Ok(result_of(&cfg, &ips))
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        // DEL reads only where the store is: it must work on a config whose ranges, gateway or routes ADD
        // would now refuse, and a record names its own addresses.
        let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
        let loc = match locate(&req.conf)? {
            Located::At(loc) => loc,
            Located::Nowhere(why) => {
                eprintln!("plumb-ipam: DEL of container {cid} interface {ifname}: {why}; ADD refuses such a config, so nothing of it is stored: nothing to release");
                return Ok(());
            }
        };
        if let Store::Kubernetes(k) = &loc.store {
            return self.kube()?.del(k, &loc, cid, ifname);
        }
        let data_dir = match &loc.data_dir {
            Ok(d) => d,
            Err(text) => {
                eprintln!("plumb-ipam: DEL of container {cid} interface {ifname}: ipam.dataDir {text:?} is not an absolute path; ADD refuses it, so nothing is stored there: nothing to release (and nothing created relative to the current directory)");
                return Ok(());
            }
        };
        let Some(store) = FileStore::open_existing(data_dir, &loc.space)? else {
            return Ok(()); // no store directory: nothing was ever reserved here
        };
        let store = store.with_fsync(loc.fsync);
        let locked = store.lock(Duration::from_secs(loc.lock_timeout_secs))?;
        // The full config, when it still parses, only keeps the free-address hints in step.
        let cfg = IpamConfig::from_conf(&req.conf).ok();
        release(&locked, cfg.as_ref(), cid, ifname)?;
        Ok(())
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let cfg = IpamConfig::from_conf(&req.conf)?;
        // A reservation made before the policy changed is reported as a violation.
        enforce_policy(req, &cfg)?;
        let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
        if let Store::Kubernetes(k) = &cfg.store {
            let held = self.kube()?.held(k, &cfg, cid, ifname)?;
            if held.is_empty() {
                return Err(CniError::new(
                    code::CHECK_MISMATCH,
                    format!("no reservation for container {cid} interface {ifname} in the cluster"),
                ));
            }
            return compare_with_prev(req, &cfg, held);
        }
        let store = open(&cfg)?;
        let locked = store.lock(timeout(&cfg))?;
        let stored = locked.attachment(cid, ifname)?.ok_or_else(|| {
            CniError::new(
                code::CHECK_MISMATCH,
                format!(
                    "no reservation for container {cid} interface {ifname} in {}",
                    locked.dir().display()
                ),
            )
        })?;
        for ip in stored.record.addrs() {
            if locked.claim_ino(ip) != Some(stored.ino) {
                return Err(CniError::new(code::CHECK_MISMATCH, format!("reservation of {ip} for container {cid} interface {ifname} is missing or held by another attachment")));
            }
        }
        compare_with_prev(req, &cfg, stored.record.addrs())
    }

    fn status(&self, req: &Request) -> CniResult<()> {
        let unavailable = |e: CniError| CniError {
            code: code::NOT_AVAILABLE,
            ..e
        };
        let cfg = IpamConfig::from_conf(&req.conf)?;
        if let Store::Kubernetes(k) = &cfg.store {
            return self.kube()?.status(k, &cfg);
        }
        let store = open(&cfg).map_err(unavailable)?;
        let locked = store.lock(timeout(&cfg)).map_err(unavailable)?;
        for range in &cfg.ranges {
            let hint = Hint::open(locked.dir(), range, || claimed_offsets(&locked, range))
                .map_err(unavailable)?;
            // The bitmap's count is a fast lower bound; a cursor-only range is counted from the claims
            // (bounded by the records) only when exclusions leave it small enough to fill.
            let may_be_full = if hint.has_bitmap() {
                hint.used() as u128 >= range.usable()
            } else {
                range.usable() <= u32::MAX as u128
            };
            if !may_be_full {
                continue;
            }
            let used = claimed_offsets(&locked, range)?
                .into_iter()
                .filter(|o| !range.is_blocked(*o))
                .count() as u128;
            if used >= range.usable() {
                return Err(CniError::new(
                    code::NOT_AVAILABLE,
                    format!(
                        "range {} is full ({used} of {} reserved): ADD cannot succeed",
                        range.describe(),
                        range.usable()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> CniResult<()> {
        let cfg = IpamConfig::from_conf(&req.conf)?;
        if req.conf.bool_field("disableGC")?.unwrap_or(false) {
            return Ok(());
        }
        // libcni sends GC without the list when its caller gave none (cnitool gc does, after DELing the
        // attachments in its own cache). An absent list says nothing about which attachments are still in
        // use, so nothing is released: only an explicit list (even an empty one) releases.
        let Some(valid) = req.conf.valid_attachments.as_ref() else {
            eprintln!(
                "plumb-ipam: GC of network {:?} without \"cni.dev/valid-attachments\": nothing released (only an explicit list, even an empty one, releases reservations)",
                req.conf.name
            );
            return Ok(());
        };
        let valid: HashSet<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        if let Store::Kubernetes(k) = &cfg.store {
            return self.kube()?.gc(k, &cfg, &req.conf.name, &valid).map(|_| ());
        }
        let store = open(&cfg)?;
        let locked = store.lock(timeout(&cfg))?;
        crate::gc::collect(&locked, &cfg, &req.conf.name, &valid)?;
        Ok(())
    }
}

/// The node's tenant policy (docs/policy.md) for ADD and CHECK, before the store is touched: every
/// range's subnet must lie inside an allowed CIDR, and `network_name` (the pool) must be allowed, so a
/// tenant cannot draw from another tenant's pool. DEL and GC never consult the policy.
fn enforce_policy(req: &Request, cfg: &IpamConfig) -> CniResult<()> {
    let guard = plumb_cni::policy::Guard::load(&req.env.args)?;
    if guard.is_unrestricted() {
        return Ok(());
    }
    let ipam = req.conf.raw.get("ipam");
    let top_range = ipam
        .and_then(|i| i.get("range"))
        .is_some_and(|r| !r.is_null());
    for (i, r) in cfg.ranges.iter().enumerate() {
        let field = match (top_range, i) {
            (true, 0) => "ipam.range".to_string(),
            (true, i) => format!("ipam.ipRanges[{}]", i - 1),
            (false, i) => format!("ipam.ipRanges[{i}]"),
        };
        let subnet = Cidr::new(r.subnet.network, r.subnet.prefix)
            .map_err(|e| CniError::config(format!("{field}: {e}")))?;
        guard.ipam_range(&field, subnet)?;
    }
    let named = ipam
        .and_then(|i| i.get("network_name"))
        .is_some_and(|n| !n.is_null());
    guard.network_name(named.then_some(cfg.space.as_str()))
}

/// CHECK: the reserved addresses equal those prevResult reports inside the configured ranges.
fn compare_with_prev(req: &Request, cfg: &IpamConfig, mut reserved: Vec<IpAddr>) -> CniResult<()> {
    let Some(prev) = &req.conf.prev_result else {
        return Ok(());
    };
    let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
    let mut reported: Vec<IpAddr> = prev
        .ips
        .iter()
        .map(|c| c.address.addr)
        .filter(|ip| cfg.range_for(*ip).is_some())
        .collect();
    reserved.sort();
    reported.sort();
    if reserved != reported {
        return Err(CniError::new(
            code::CHECK_MISMATCH,
            format!(
                "prevResult reports {} but the store reserves {} for container {cid} interface {ifname}",
                list(&reported),
                list(&reserved)
            ),
        ));
    }
    Ok(())
}

/// The ADD result for one address per range: the configured routes and DNS plus the addresses.
fn result_of(cfg: &IpamConfig, ips: &[IpAddr]) -> AddResult {
    let mut result = cfg.routes_and_dns.clone();
    result.ips = ips
        .iter()
        .zip(&cfg.ranges)
        .map(|(ip, r)| IpConfig {
            address: Cidr {
                addr: *ip,
                prefix: r.subnet.prefix,
            },
            gateway: r.gateway,
            interface: None,
        })
        .collect();
    result
}

fn list(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "nothing".into();
    }
    ips.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn attachment(req: &Request) -> Attachment {
    Attachment {
        container_id: req.env.container_id.clone(),
        ifname: req.env.ifname.clone(),
        network: req.conf.name.clone(),
        pod: req.env.args.pod(),
    }
}

/// Whether a raw network config (the plugin's stdin, parsed as a JSON object) asks for the
/// Kubernetes store: `ipam.store` is `"kubernetes"`, or there is no `store` and a `kubernetes` block.
pub fn config_uses_kubernetes(raw: &serde_json::Map<String, Value>) -> bool {
    let Some(Value::Object(ipam)) = raw.get("ipam") else {
        return false;
    };
    let store = ipam.get("store").and_then(Value::as_str);
    store == Some("kubernetes")
        || (store.is_none() && ipam.get("kubernetes").is_some_and(|k| !k.is_null()))
}

/// Static requests from runtimeConfig.ips, args.cni.ips and CNI_ARGS IP= (comma-separated), deduplicated.
pub fn static_requests(req: &Request) -> CniResult<Vec<IpAddr>> {
    let mut texts: Vec<(String, String)> = Vec::new();
    for (source, obj) in [
        ("runtimeConfig.ips", &req.conf.runtime_config),
        ("args.cni.ips", &req.conf.args_cni),
    ] {
        match obj.get("ips") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, v) in items.iter().enumerate() {
                    let s = v.as_str().ok_or_else(|| {
                        CniError::config(format!(
                            "{source}[{i}] must be a string such as \"10.1.0.5/24\""
                        ))
                    })?;
                    texts.push((format!("{source}[{i}]"), s.to_string()));
                }
            }
            Some(_) => {
                return Err(CniError::config(format!(
                    "{source} must be an array of strings"
                )))
            }
        }
    }
    if let Some(list) = req.env.args.get("IP") {
        for s in list.split(',').filter(|s| !s.is_empty()) {
            texts.push(("CNI_ARGS IP".into(), s.to_string()));
        }
    }
    // A set, not a scan of `out`: CNI_ARGS may list many addresses (ADD then refuses all but one per range).
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (source, text) in texts {
        let ip = match text.split_once('/') {
            Some((addr, _)) => {
                let c: Cidr = text.trim().parse().map_err(|e| {
                    CniError::config(format!("{source} {text:?} is not an IP or CIDR")).caused_by(e)
                })?;
                let _ = addr;
                c.addr
            }
            None => parse_ip(&text, &source)?,
        };
        if seen.insert(ip) {
            out.push(ip);
        }
    }
    Ok(out)
}
