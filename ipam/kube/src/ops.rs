//! The CNI commands on the Kubernetes store. ADD holds the node-local lock (under `dataDir`) so the
//! node's own requests never conflict with each other; API conflicts then come only from borrowing.

use crate::blocks::reservations;
use crate::store::{run, Index, Query};
use plumb_cni::{code, CniError, CniResult, NetConf};
use plumb_ipam::alloc::{place_statics, Attachment};
use plumb_ipam::backend::Store;
use plumb_ipam::config::{IpamConfig, KubeSettings, Location};
use plumb_ipam::store::{now_secs, FileStore};
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

fn node_lock(cfg: &IpamConfig) -> CniResult<plumb_cni::lock::LockGuard> {
    lock_in(&cfg.data_dir, &cfg.space, cfg.lock_timeout_secs)
}

/// Name of the marker file, in the space's directory under `dataDir`, saying the blocks this node
/// holds carry the index labels (`plumb.dev/node-…`, `plumb.dev/att-…`).
pub const INDEX_MARKER: &str = ".kube-index-v1";

/// Whether the space's directory under `dataDir` exists yet; asked before the node lock creates it.
fn space_dir_exists(data_dir: Option<&std::path::Path>, space: &str) -> bool {
    data_dir.is_some_and(|d| d.join(space).exists())
}

/// Whether this node may trust the index labels; decided under the node lock (so concurrent calls of
/// the node agree) with `existed`, whether the space's directory existed before this call. A directory
/// that did not exist means no older plumb ever reserved anything for this node in this space (it
/// would have made the directory for its lock), so the marker is written at once; an existing
/// directory without the marker means a first call after an upgrade. Without an absolute `dataDir`
/// there is nowhere to remember it: every call checks.
fn index_state(data_dir: Option<&std::path::Path>, space: &str, existed: bool) -> Index {
    let Some(data_dir) = data_dir else {
        return Index::Check(None);
    };
    let marker = data_dir.join(space).join(INDEX_MARKER);
    if marker.exists() {
        return Index::Trusted;
    }
    if !existed {
        // Best effort: when the marker cannot be written, the next call checks once.
        let _ = std::fs::write(
            &marker,
            b"plumb-ipam: this node's IPBlocks carry index labels\n",
        );
        return Index::Trusted;
    }
    Index::Check(Some(marker))
}

fn lock_in(
    data_dir: &std::path::Path,
    space: &str,
    timeout_secs: u64,
) -> CniResult<plumb_cni::lock::LockGuard> {
    let dir = FileStore::open(data_dir, space)?;
    plumb_cni::lock::lock_exclusive(&dir.dir().join(".lock"), Duration::from_secs(timeout_secs))
}

/// ADD: one address per range; on failure, best-effort removal of what this call reserved.
pub fn add(
    k: &KubeSettings,
    cfg: &IpamConfig,
    who: &Attachment,
    statics: &[IpAddr],
) -> CniResult<Vec<IpAddr>> {
    let wanted = place_statics(cfg, statics)?;
    let existed = space_dir_exists(Some(&cfg.data_dir), &cfg.space);
    let _lock = node_lock(cfg)?;
    let index = index_state(Some(&cfg.data_dir), &cfg.space, existed);
    // What the attachment held before this ADD, from the ADD's own first listing (no extra request).
    let mut before: Option<Vec<IpAddr>> = None;
    let result = run(k, &cfg.space, index, async |s| {
        s.allocate(cfg, who, &wanted, now_secs(), &mut before).await
    });
    // No listing succeeded: nothing was written, so there is nothing to undo.
    if let (Err(_), Some(before)) = (&result, before) {
        // Leave nothing behind: drop what this ADD added (not what the attachment held before it).
        let short = KubeSettings {
            timeout: Duration::from_secs(5).min(k.timeout),
            ..k.clone()
        };
        let (cid, ifname) = (who.container_id.clone(), who.ifname.clone());
        let _ = run(&short, &cfg.space, Index::Trusted, async |s| {
            let now = s.held(&cid, &ifname).await?;
            let extra: Vec<IpAddr> = now.into_iter().filter(|ip| !before.contains(ip)).collect();
            if extra.is_empty() {
                return Ok(Vec::new());
            }
            s.remove_addresses(&cid, &ifname, &extra).await
        });
    }
    result
}

/// DEL: removes every reservation of the attachment; nothing reserved is success.
pub fn del(k: &KubeSettings, cfg: &IpamConfig, container_id: &str, ifname: &str) -> CniResult<()> {
    del_at(k, &cfg.location(), container_id, ifname)
}

/// DEL from the store location alone (the ranges are not needed: every reservation of the attachment
/// in the space goes). Without an absolute `dataDir` there is no node lock to take (it would be a file
/// relative to the current directory); the API's resourceVersion checks still keep the writes safe.
pub fn del_at(k: &KubeSettings, loc: &Location, container_id: &str, ifname: &str) -> CniResult<()> {
    let existed = space_dir_exists(loc.data_dir.as_deref().ok(), &loc.space);
    let _lock = match &loc.data_dir {
        Ok(dir) => Some(lock_in(dir, &loc.space, loc.lock_timeout_secs)?),
        Err(text) => {
            eprintln!("plumb-ipam: DEL: ipam.dataDir {text:?} is not absolute: releasing in the cluster without the node-local lock");
            None
        }
    };
    let index = index_state(loc.data_dir.as_deref().ok(), &loc.space, existed);
    run(k, &loc.space, index, async |s| {
        let q = Query::Attachment(container_id.into(), ifname.into());
        s.remove(q, |_, a| a.is_for(container_id, ifname)).await
    })
    .map(|_| ())
}

/// The addresses the attachment holds in the configured ranges (for CHECK).
pub fn held(
    k: &KubeSettings,
    cfg: &IpamConfig,
    container_id: &str,
    ifname: &str,
) -> CniResult<Vec<IpAddr>> {
    // CHECK takes no node lock and creates no directory: without one, nothing was reserved here.
    let existed = space_dir_exists(Some(&cfg.data_dir), &cfg.space);
    let index = match existed {
        true => index_state(Some(&cfg.data_dir), &cfg.space, true),
        false => Index::Trusted,
    };
    let ips = run(k, &cfg.space, index, async |s| {
        s.held(container_id, ifname).await
    })?;
    Ok(ips
        .into_iter()
        .filter(|ip| cfg.range_for(*ip).is_some())
        .collect())
}

/// GC: releases this node's reservations of `network` whose attachment is not valid.
pub fn gc(
    k: &KubeSettings,
    cfg: &IpamConfig,
    network: &str,
    valid: &HashSet<(&str, &str)>,
) -> CniResult<usize> {
    let existed = space_dir_exists(Some(&cfg.data_dir), &cfg.space);
    let _lock = node_lock(cfg)?;
    let index = index_state(Some(&cfg.data_dir), &cfg.space, existed);
    let node = k.node.clone();
    let freed = run(k, &cfg.space, index, async |s| {
        s.remove(Query::Own, |_, a| {
            a.network == network
                && a.node == node
                && !valid.contains(&(a.container_id.as_str(), a.ifname.as_str()))
        })
        .await
    })?;
    Ok(freed.len())
}

/// STATUS: code 50 when the API cannot be listed or a range is full. A range with a free address
/// in one of the node's own blocks is not full (one listing of them); otherwise the space is read, in
/// pages, and counted.
pub fn status(k: &KubeSettings, cfg: &IpamConfig) -> CniResult<()> {
    let node = k.node.clone();
    let blocks = run(k, &cfg.space, Index::Trusted, async |s| {
        let own = s.list_retrying(&Query::Own).await?;
        let has_room = |r: &plumb_ipam::range::Range| {
            own.iter().filter(|b| b.spec.node == node).any(|b| {
                crate::blocks::subnet(b).is_some_and(|net| {
                    (0..crate::blocks::block_size(&net).min(1 << 16)).any(|o| {
                        let ip = crate::blocks::addr_at(&net, o);
                        r.allows(ip) && !b.spec.allocations.contains_key(&o.to_string())
                    })
                })
            })
        };
        if cfg.ranges.iter().all(has_room) {
            return Ok(own);
        }
        s.list_retrying(&Query::Space).await
    })
    .map_err(|e| CniError {
        code: code::NOT_AVAILABLE,
        ..e
    })?;
    let held: Vec<IpAddr> = reservations(&blocks)
        .into_iter()
        .map(|(ip, _)| ip)
        .collect();
    for range in &cfg.ranges {
        let used = held.iter().filter(|ip| range.allows(**ip)).count() as u128;
        if used >= range.usable() {
            return Err(CniError::new(
                code::NOT_AVAILABLE,
                format!(
                    "range {} is full ({used} of {} reserved in the cluster): ADD cannot succeed",
                    range.describe(),
                    range.usable()
                ),
            ));
        }
    }
    Ok(())
}

/// The Kubernetes store as the plugin's [`Store`]: the functions of this module on one set of
/// settings.
#[derive(Debug, Clone)]
pub struct KubeOps {
    /// Where and as whom to reach the API.
    pub settings: KubeSettings,
}

/// Opens the Kubernetes store for `settings` (the plugin's `Ipam { kube: Some(open) }`).
pub fn open(settings: &KubeSettings) -> Box<dyn Store> {
    Box::new(KubeOps {
        settings: settings.clone(),
    })
}

impl Store for KubeOps {
    fn add(
        &self,
        cfg: &IpamConfig,
        who: &Attachment,
        statics: &[IpAddr],
    ) -> CniResult<Vec<IpAddr>> {
        add(&self.settings, cfg, who, statics)
    }

    fn del(&self, loc: &Location, _conf: &NetConf, cid: &str, ifname: &str) -> CniResult<()> {
        del_at(&self.settings, loc, cid, ifname)
    }

    fn reserved(&self, cfg: &IpamConfig, cid: &str, ifname: &str) -> CniResult<Vec<IpAddr>> {
        let held = held(&self.settings, cfg, cid, ifname)?;
        if held.is_empty() {
            return Err(CniError::new(
                code::CHECK_MISMATCH,
                format!("no reservation for container {cid} interface {ifname} in the cluster"),
            ));
        }
        Ok(held)
    }

    fn status(&self, cfg: &IpamConfig) -> CniResult<()> {
        status(&self.settings, cfg)
    }

    fn gc(
        &self,
        cfg: &IpamConfig,
        network: &str,
        valid: &HashSet<(&str, &str)>,
    ) -> CniResult<usize> {
        gc(&self.settings, cfg, network, valid)
    }
}
