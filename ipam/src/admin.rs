//! Admin mode: `plumb-ipam list|usage|release|reconcile|nodes|crd ...`, run by a person (or a CronJob).
//! Prints readable tables of reservations and usage per range (file store) or per block (Kubernetes
//! store, with `--kubeconfig`), releases reservations by address or attachment, reconciles the
//! Kubernetes store (see [`crate::kube::reconcile`]) and prints the IPBlock CRD.

use crate::config::{validate_space, DEFAULT_DATA_DIR, DEFAULT_SPACE};
use crate::kube::blocks::{addr_at, subnet};
use crate::kube::crd::IPBlock;
use crate::range::{from_int, to_int, Family};
use crate::store::{spaces, Entry, FileStore, Locked};
use plumb_cni::{CniError, CniResult};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

const USAGE: &str = "usage:
  plumb-ipam list    [--data-dir DIR] [--network-name NAME]   reservations, one line per address
  plumb-ipam usage   [--data-dir DIR] [--network-name NAME]   used and free addresses per range
  plumb-ipam release [--data-dir DIR] [--network-name NAME] (--ip IP | --container ID --ifname IF)
  plumb-ipam list    --kubeconfig PATH [--network-name NAME]   Kubernetes store: one line per reservation
  plumb-ipam usage   --kubeconfig PATH [--network-name NAME]   Kubernetes store: used and free per block
  plumb-ipam reconcile [--kubeconfig PATH] [--dry-run] [--grace SECONDS] [--interval SECONDS] [--space NAME]
                     free reservations of deleted pods, retire blocks of deleted nodes (Kubernetes store)
  plumb-ipam nodes   [--kubeconfig PATH] [--address-type TYPE] [--selector LABELS] [--json]
                     the Nodes' addresses (what plumb-vxlan peers.fromNodes floods to)
  plumb-ipam crd     print the IPBlock CustomResourceDefinition (YAML)
Without --network-name, every space (network_name) under the data dir is shown; the default space is _default.
The data dir defaults to /var/lib/cni/plumb-ipam.";

#[derive(Debug, Default)]
struct Opts {
    data_dir: Option<PathBuf>,
    space: Option<String>,
    ip: Option<IpAddr>,
    container: Option<String>,
    ifname: Option<String>,
    kubeconfig: Option<String>,
}

/// Runs an admin command, any of them; returns the process exit code (plumb-ipam-kube).
pub fn run(args: &[String]) -> i32 {
    match args.split_first().map(|(c, r)| (c.as_str(), r)) {
        // Prints as it goes (and may loop forever): not a dispatch returning its output.
        Some(("reconcile", rest)) => crate::kube::reconcile::command(rest),
        Some(("nodes", rest)) => crate::kube::nodes::command(rest),
        _ => print_or_usage(dispatch(args)),
    }
}

/// Runs an admin command of the file store; returns the process exit code (plumb-ipam, which hands
/// the commands [`needs_kube`] names to plumb-ipam-kube).
pub fn run_file(args: &[String]) -> i32 {
    print_or_usage(dispatch_file(args))
}

/// Whether an admin command needs the Kubernetes client: `reconcile`, `nodes`, `crd`, or anything
/// with `--kubeconfig`.
pub fn needs_kube(args: &[String]) -> bool {
    matches!(
        args.first().map(String::as_str),
        Some("reconcile" | "nodes" | "crd")
    ) || args.iter().any(|a| a == "--kubeconfig")
}

fn print_or_usage(out: CniResult<String>) -> i32 {
    match out {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("plumb-ipam: {e}\n{USAGE}");
            2
        }
    }
}

/// Runs an admin command and returns what it prints.
pub fn dispatch(args: &[String]) -> CniResult<String> {
    let (cmd, rest) = args
        .split_first()
        .ok_or_else(|| CniError::config("no command given"))?;
    if cmd == "crd" {
        if !rest.is_empty() {
            return Err(CniError::config("crd takes no options"));
        }
        return Ok(crd_yaml());
    }
    let opts = parse_opts(rest)?;
    if let Some(kc) = &opts.kubeconfig {
        return match cmd.as_str() {
            "list" => kube_list(kc, opts.space.as_deref()),
            "usage" => kube_usage(kc, opts.space.as_deref()),
            other => Err(CniError::config(format!(
                "--kubeconfig is for list and usage (and reconcile), not {other:?}"
            ))),
        };
    }
    dispatch_file(args)
}

/// Runs an admin command of the file store and returns what it prints.
pub fn dispatch_file(args: &[String]) -> CniResult<String> {
    let (cmd, rest) = args
        .split_first()
        .ok_or_else(|| CniError::config("no command given"))?;
    let opts = parse_opts(rest)?;
    if opts.kubeconfig.is_some() {
        return Err(CniError::config(
            "--kubeconfig needs the Kubernetes client, which is in plumb-ipam-kube",
        ));
    }
    let data_dir = opts
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let spaces = match &opts.space {
        // The default space is named with a leading '_' so no network_name can collide with it.
        Some(s) if s == DEFAULT_SPACE => vec![s.clone()],
        Some(s) => vec![validate_space(s)?],
        None => spaces(&data_dir)?,
    };
    match cmd.as_str() {
        "list" => list(&data_dir, &spaces),
        "usage" => usage(&data_dir, &spaces),
        "release" => release(&data_dir, &spaces, &opts),
        "help" | "--help" | "-h" => Ok(format!("{USAGE}\n")),
        other => Err(CniError::config(format!("unknown command {other:?}"))),
    }
}

fn parse_opts(rest: &[String]) -> CniResult<Opts> {
    let mut o = Opts::default();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| CniError::config(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--data-dir" => o.data_dir = Some(PathBuf::from(value()?)),
            "--network-name" => o.space = Some(value()?),
            "--ip" => o.ip = Some(crate::range::parse_ip(&value()?, "--ip")?),
            "--container" => o.container = Some(value()?),
            "--ifname" => o.ifname = Some(value()?),
            "--kubeconfig" => o.kubeconfig = Some(value()?),
            other => return Err(CniError::config(format!("unknown option {other:?}"))),
        }
    }
    Ok(o)
}

fn with_space<T>(
    data_dir: &std::path::Path,
    space: &str,
    f: impl FnOnce(&Locked) -> CniResult<T>,
) -> CniResult<T> {
    let store = FileStore::open(data_dir, space)?;
    let locked = store.lock(Duration::from_secs(10))?;
    f(&locked)
}

fn list(data_dir: &std::path::Path, spaces: &[String]) -> CniResult<String> {
    let mut rows = vec![[
        "SPACE",
        "ADDRESS",
        "NETWORK",
        "CONTAINER",
        "IFNAME",
        "POD",
        "AGE",
    ]
    .map(String::from)
    .to_vec()];
    let now = crate::store::now_secs();
    for space in spaces {
        with_space(data_dir, space, |l| {
            let mut claims = l.list()?.claims;
            claims.sort_by_key(|ip| (ip.is_ipv6(), to_int(*ip)));
            for ip in claims {
                let r = match l.holder(ip)? {
                    Entry::Record(s) => s.record,
                    Entry::Missing => continue,
                    Entry::Unreadable => {
                        let mut row = vec![
                            space.clone(),
                            ip.to_string(),
                            "(unreadable; GC removes it)".into(),
                        ];
                        row.resize(7, "-".into());
                        rows.push(row);
                        continue;
                    }
                };
                let pod = match (r.pod_namespace, r.pod_name) {
                    (Some(ns), Some(n)) => format!("{ns}/{n}"),
                    _ => "-".into(),
                };
                let cid: String = r.container_id.chars().take(12).collect();
                rows.push(vec![
                    space.clone(),
                    ip.to_string(),
                    r.network,
                    cid,
                    r.ifname,
                    pod,
                    age(now.saturating_sub(r.created)),
                ]);
            }
            Ok(())
        })?;
    }
    Ok(table(&rows))
}

fn usage(data_dir: &std::path::Path, spaces: &[String]) -> CniResult<String> {
    let mut rows = vec![["SPACE", "RANGE", "SIZE", "USED", "FREE"]
        .map(String::from)
        .to_vec()];
    for space in spaces {
        with_space(data_dir, space, |l| {
            let claims: Vec<u128> = l.list()?.claims.iter().map(|ip| to_int(*ip)).collect();
            let mut ranges = Vec::new();
            for entry in std::fs::read_dir(l.dir())
                .map_err(|e| CniError::io("cannot list store", &e))?
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(span) = name
                    .strip_prefix("hint-")
                    .filter(|n| !n.ends_with(".cursor"))
                else {
                    continue;
                };
                let Some((a, b)) = split_span(span) else {
                    continue;
                };
                ranges.push((a, b));
            }
            ranges.sort_by_key(|(a, _)| (a.is_ipv6(), to_int(*a)));
            for (a, b) in ranges {
                let (lo, hi) = (to_int(a), to_int(b));
                let used = claims.iter().filter(|c| (lo..=hi).contains(*c)).count() as u128;
                let size = hi - lo + 1;
                rows.push(vec![
                    space.clone(),
                    format!("{a}-{b}"),
                    size.to_string(),
                    used.to_string(),
                    (size - used).to_string(),
                ]);
            }
            Ok(())
        })?;
    }
    Ok(format!(
        "{}(SIZE counts the whole span; excluded addresses and the gateway are part of it)\n",
        table(&rows)
    ))
}

fn release(data_dir: &std::path::Path, spaces: &[String], o: &Opts) -> CniResult<String> {
    let mut out = String::new();
    for space in spaces {
        with_space(data_dir, space, |l| {
            let target = match (&o.ip, &o.container, &o.ifname) {
                (Some(ip), None, None) => match l.holder(*ip)? {
                    Entry::Record(s) => Some((s.record.container_id, s.record.ifname)),
                    Entry::Missing => None,
                    Entry::Unreadable => Some(("(unreadable)".to_string(), "-".to_string())),
                },
                (None, Some(c), Some(i)) => Some((c.clone(), i.clone())),
                _ => {
                    return Err(CniError::config(
                        "give either --ip IP or both --container ID and --ifname IF",
                    ))
                }
            };
            let Some((cid, ifname)) = target else {
                return Ok(());
            };
            let mut freed = l.release(&cid, &ifname)?;
            if let Some(ip) = o.ip.filter(|ip| l.is_claimed(*ip)) {
                // An orphan claim with no record pointing at it.
                l.unlink_claim(ip)?;
                freed.push(ip);
            }
            for ip in freed {
                out.push_str(&format!(
                    "released {ip} (space {space}, container {cid}, interface {ifname})\n"
                ));
            }
            Ok(())
        })?;
    }
    if out.is_empty() {
        out.push_str("nothing matched; nothing released\n");
    }
    Ok(out)
}

/// The IPBlock CustomResourceDefinition as YAML, generated from the Rust type: what `plumb-ipam crd`
/// prints and `deploy/crds/ipblocks.plumb.dev.yaml` holds.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let yaml = serde_yaml_ng::to_string(&IPBlock::crd()).expect("the CRD serializes to YAML");
    format!(
        "# The IPBlock CustomResourceDefinition, generated from ipam/src/kube/crd.rs by `plumb-ipam crd`.\n\
         # Do not edit: regenerate with\n\
         #   cargo run -p plumb-ipam -- crd > deploy/crds/ipblocks.plumb.dev.yaml\n\
         {yaml}"
    )
}

fn kube_blocks(kubeconfig: &str, space: Option<&str>) -> CniResult<Vec<IPBlock>> {
    let mut blocks = crate::kube::reconcile::list_blocks(Some(kubeconfig), space)
        .map_err(|e| CniError::new(plumb_cni::code::TRY_AGAIN_LATER, e))?;
    blocks.sort_by_key(|b| {
        let first = subnet(b).map(|n| (n.network.is_ipv6(), n.first()));
        (b.spec.space.clone(), first, b.spec.cidr.clone())
    });
    Ok(blocks)
}

fn kube_list(kubeconfig: &str, space: Option<&str>) -> CniResult<String> {
    let mut rows = vec![[
        "SPACE",
        "ADDRESS",
        "BLOCK",
        "NODE",
        "NETWORK",
        "CONTAINER",
        "IFNAME",
        "POD",
        "AGE",
    ]
    .map(String::from)
    .to_vec()];
    let now = crate::store::now_secs();
    for b in kube_blocks(kubeconfig, space)? {
        let Some(net) = subnet(&b) else { continue };
        let mut allocs: Vec<(u128, _)> = b
            .spec
            .allocations
            .iter()
            .filter_map(|(k, a)| k.parse::<u128>().ok().map(|o| (o, a)))
            .collect();
        allocs.sort_by_key(|(o, _)| *o);
        for (o, a) in allocs {
            let pod = match (&a.pod_namespace, &a.pod_name) {
                (Some(ns), Some(n)) => format!("{ns}/{n}"),
                _ => "-".into(),
            };
            rows.push(vec![
                b.spec.space.clone(),
                addr_at(&net, o).to_string(),
                b.spec.cidr.clone(),
                a.node.clone(),
                a.network.clone(),
                a.container_id.chars().take(12).collect(),
                a.ifname.clone(),
                pod,
                age(now.saturating_sub(a.created)),
            ]);
        }
    }
    Ok(table(&rows))
}

fn kube_usage(kubeconfig: &str, space: Option<&str>) -> CniResult<String> {
    let mut rows = vec![["SPACE", "BLOCK", "NODE", "USED", "FREE"]
        .map(String::from)
        .to_vec()];
    for b in kube_blocks(kubeconfig, space)? {
        let size = subnet(&b).map_or(0, |n| crate::kube::blocks::block_size(&n));
        let used = b.spec.allocations.len() as u128;
        let node = if b.spec.node.is_empty() {
            "(orphaned)".to_string()
        } else {
            b.spec.node.clone()
        };
        rows.push(vec![
            b.spec.space.clone(),
            b.spec.cidr.clone(),
            node,
            used.to_string(),
            size.saturating_sub(used).to_string(),
        ]);
    }
    Ok(format!(
        "{}(FREE counts the whole block; a range may hand out fewer of its addresses)\n",
        table(&rows)
    ))
}

fn split_span(span: &str) -> Option<(IpAddr, IpAddr)> {
    // IPv6 addresses hold no '-', IPv4 neither: the one '-' splits the span.
    let (a, b) = span.split_once('-')?;
    let (a, b): (IpAddr, IpAddr) = (a.parse().ok()?, b.parse().ok()?);
    let fam = Family::of(a);
    (Family::of(b) == fam).then_some((from_int(fam, to_int(a)), b))
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, |r| r.len());
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
