//! The underlay addresses a unicast VTEP floods to, before this node's own are skipped: the `peers`
//! list, or the cluster's Node addresses (`peers.fromNodes`), listed at each ADD by running
//! `plumb-ipam nodes` from CNI_PATH, so this plugin carries no Kubernetes client of its own.

use crate::config::{Flood, FromNodes, VxlanConfig};
use plumb_cni::{code, delegate, CniError, CniResult};
use serde_json::Value;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The configured or listed peers; `None` for a multicast group.
pub fn configured(cfg: &VxlanConfig, cni_path: &[PathBuf]) -> CniResult<Option<Vec<IpAddr>>> {
    match &cfg.flood {
        Flood::Group(_) => Ok(None),
        Flood::Peers(p) => Ok(Some(p.clone())),
        Flood::FromNodes(f) => from_nodes(f, cni_path).map(Some),
    }
}

fn from_nodes(f: &FromNodes, cni_path: &[PathBuf]) -> CniResult<Vec<IpAddr>> {
    let bin = delegate::find_plugin("plumb-ipam", cni_path).map_err(|e| {
        CniError::config(format!(
            "\"peers\": {{\"fromNodes\": ...}} lists the Nodes through plumb-ipam, which is missing: {}",
            e.msg
        ))
    })?;
    let mut cmd = Command::new(&bin);
    // Run and waited for on this thread (`output`), as die_with_parent requires.
    delegate::die_with_parent(&mut cmd)
        .args(["nodes", "--json", "--address-type", &f.address_type])
        .args(["--timeout", &f.timeout_secs.to_string()])
        .env_remove("CNI_COMMAND")
        .stdin(Stdio::null());
    if let Some(s) = &f.selector {
        cmd.args(["--selector", s]);
    }
    if let Some(k) = &f.kubeconfig {
        cmd.args(["--kubeconfig", k]);
    }
    let out = cmd.output().map_err(|e| {
        CniError::new(code::IO_FAILURE, format!("cannot run {}", bin.display())).caused_by(e)
    })?;
    if !out.status.success() {
        return Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "cannot list the Nodes for the VXLAN peers: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            format!("plumb-ipam nodes printed something that is not its JSON: {e}"),
        )
    })?;
    Ok(addresses(&v))
}

/// Every address of every listed Node, in the order listed, without duplicates.
fn addresses(v: &Value) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let nodes = v["nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
    for n in nodes {
        for a in n["addresses"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if let Some(ip) = a.as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listing() {
        let v = serde_json::json!({"nodes": [
            {"name": "a", "addresses": ["10.0.0.1", "fd00::1"]},
            {"name": "b", "addresses": ["10.0.0.2", "10.0.0.1"]},
            {"name": "c", "addresses": []},
        ]});
        let want: Vec<IpAddr> = ["10.0.0.1", "fd00::1", "10.0.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(addresses(&v), want);
        assert!(addresses(&serde_json::json!({})).is_empty());
    }
}
