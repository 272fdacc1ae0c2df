//! The admin commands of the Kubernetes store: `reconcile`, `nodes`, `crd` and `list`/`usage
//! --kubeconfig` (one line per reservation, one per block); every other command is the file store's
//! ([`plumb_ipam::admin`]), whose options, tables and escaping these share.

use crate::blocks::{addr_at, subnet};
use crate::crd::IPBlock;
use plumb_cni::{CniError, CniResult};
use plumb_ipam::admin::{age, dispatch_with, print_or_usage, shown, table, Inventory};

/// Runs an admin command, any of them (the file store's too); returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    match args.split_first().map(|(c, r)| (c.as_str(), r)) {
        // Prints as it goes (and may loop forever): not a dispatch returning its output.
        Some(("reconcile", rest)) => crate::reconcile::command(rest),
        Some(("nodes", rest)) => crate::nodes::command(rest),
        _ => print_or_usage(dispatch(args)),
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
    dispatch_with(args, Some(open_inventory))
}

/// The Kubernetes store's blocks, of one space or all, as `list`/`usage --kubeconfig` show them.
#[derive(Debug, Clone)]
pub struct KubeInventory {
    /// `--kubeconfig`.
    pub kubeconfig: String,
    /// `--network-name`: only this space's blocks.
    pub space: Option<String>,
}

/// Opens the [`KubeInventory`] (plumb-ipam's `admin::dispatch_with`).
pub fn open_inventory(kubeconfig: &str, space: Option<&str>) -> Box<dyn Inventory> {
    Box::new(KubeInventory {
        kubeconfig: kubeconfig.to_string(),
        space: space.map(str::to_string),
    })
}

impl Inventory for KubeInventory {
    fn list(&self) -> CniResult<String> {
        kube_list(&self.kubeconfig, self.space.as_deref())
    }

    fn usage(&self) -> CniResult<String> {
        kube_usage(&self.kubeconfig, self.space.as_deref())
    }
}

/// The IPBlock CustomResourceDefinition as YAML, generated from the Rust type: what `plumb-ipam crd`
/// prints and `deploy/crds/ipblocks.plumb.dev.yaml` holds.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let yaml = serde_yaml_ng::to_string(&IPBlock::crd()).expect("the CRD serializes to YAML");
    format!(
        "# The IPBlock CustomResourceDefinition, generated from ipam/kube/src/crd.rs by `plumb-ipam crd`.\n\
         # Do not edit: regenerate with\n\
         #   cargo run -p plumb-ipam-kube -- crd > deploy/crds/ipblocks.plumb.dev.yaml\n\
         {yaml}"
    )
}

fn kube_blocks(kubeconfig: &str, space: Option<&str>) -> CniResult<Vec<IPBlock>> {
    let mut blocks = crate::reconcile::list_blocks(Some(kubeconfig), space)
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
    let now = plumb_ipam::store::now_secs();
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
                (Some(ns), Some(n)) => format!("{}/{}", shown(ns), shown(n)),
                _ => "-".into(),
            };
            rows.push(vec![
                shown(&b.spec.space),
                addr_at(&net, o).to_string(),
                shown(&b.spec.cidr),
                shown(&a.node),
                shown(&a.network),
                shown(&a.container_id.chars().take(12).collect::<String>()),
                shown(&a.ifname),
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
        let size = subnet(&b).map_or(0, |n| crate::blocks::block_size(&n));
        let used = b.spec.allocations.len() as u128;
        let node = if b.spec.node.is_empty() {
            "(orphaned)".to_string()
        } else {
            shown(&b.spec.node)
        };
        rows.push(vec![
            shown(&b.spec.space),
            shown(&b.spec.cidr),
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
