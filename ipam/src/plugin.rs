//! plumb-ipam as a CNI plugin: ADD, DEL, CHECK, STATUS and GC on the store the config selects (a
//! [`Store`]: the file store here, the Kubernetes store when the binary carries it).

use crate::alloc::Attachment;
use crate::backend::Store;
use crate::config::{self, locate, IpamConfig, KubeSettings, Located};
use crate::file_ops::FileOps;
use crate::range::parse_ip;
use plumb_cni::result::{Cidr, IpConfig};
use plumb_cni::{code, AddResult, CniError, CniResult, Plugin, Request};
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;

/// Opens the Kubernetes store for its settings (the plumb-ipam-kube crate's `ops::open`).
pub type OpenKube = fn(&KubeSettings) -> Box<dyn Store>;

/// The plumb-ipam plugin. `kube` opens the Kubernetes store when the binary carries it
/// (plumb-ipam-kube); plumb-ipam itself leaves it out, so the Kubernetes client is not linked into
/// the binary every ADD on the file store starts, and hands Kubernetes-store configs to
/// plumb-ipam-kube (see [`crate::helper`]).
#[derive(Default)]
pub struct Ipam {
    /// Opens the Kubernetes store, if this binary has one.
    pub kube: Option<OpenKube>,
}

impl std::fmt::Debug for Ipam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("kube", &self.kube.is_some())
            .finish()
    }
}

impl Ipam {
    /// The store `which` selects, chosen once per request.
    pub fn store(&self, which: &config::Store) -> CniResult<Box<dyn Store>> {
        match which {
            config::Store::File => Ok(Box::new(FileOps)),
            config::Store::Kubernetes(k) => self.kube.map(|open| open(k)).ok_or_else(|| {
                CniError::new(
                    code::IO_FAILURE,
                    "this binary has no Kubernetes store; plumb-ipam hands such configs to plumb-ipam-kube",
                )
            }),
        }
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
        let ips = self.store(&cfg.store)?.add(&cfg, &who, &statics)?;
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
        self.store(&loc.store)?.del(&loc, &req.conf, cid, ifname)
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let cfg = IpamConfig::from_conf(&req.conf)?;
        // A reservation made before the policy changed is reported as a violation.
        enforce_policy(req, &cfg)?;
        let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
        let reserved = self.store(&cfg.store)?.reserved(&cfg, cid, ifname)?;
        compare_with_prev(req, &cfg, reserved)
    }

    fn status(&self, req: &Request) -> CniResult<()> {
        let cfg = IpamConfig::from_conf(&req.conf)?;
        self.store(&cfg.store)?.status(&cfg)
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
        self.store(&cfg.store)?
            .gc(&cfg, &req.conf.name, &valid)
            .map(|_| ())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_store_is_chosen_from_the_config_and_a_missing_one_is_a_clear_error() {
        let kube = config::Store::Kubernetes(KubeSettings {
            kubeconfig: None,
            node: "n1".into(),
            timeout: Duration::from_secs(1),
        });
        let e = Ipam::default()
            .store(&kube)
            .err()
            .expect("no Kubernetes store");
        assert_eq!(e.code, code::IO_FAILURE);
        assert!(
            e.msg.contains("hands such configs to plumb-ipam-kube"),
            "{}",
            e.msg
        );
        assert!(Ipam::default().store(&config::Store::File).is_ok());
        // A binary with the Kubernetes store opens it with the config's settings, and only for a
        // Kubernetes config.
        static OPENED_FOR: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        fn fake(k: &KubeSettings) -> Box<dyn Store> {
            OPENED_FOR.lock().unwrap().push(k.node.clone());
            Box::new(FileOps)
        }
        let ipam = Ipam { kube: Some(fake) };
        assert!(ipam.store(&config::Store::File).is_ok());
        assert!(OPENED_FOR.lock().unwrap().is_empty());
        assert!(ipam.store(&kube).is_ok());
        assert_eq!(*OPENED_FOR.lock().unwrap(), ["n1"]);
    }
}
