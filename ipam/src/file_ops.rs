//! The CNI commands on the file store: each opens the space under `dataDir`, takes its lock (waiting
//! at most `lockTimeoutSeconds`) and works on the records there.

use crate::alloc::{allocate, claimed_offsets, release, Attachment};
use crate::backend::Store;
use crate::config::{IpamConfig, Location};
use crate::hint::Hint;
use crate::store::FileStore;
use plumb_cni::{code, CniError, CniResult, NetConf};
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

/// The file store as a [`Store`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FileOps;

fn open(cfg: &IpamConfig) -> CniResult<FileStore> {
    Ok(FileStore::open(&cfg.data_dir, &cfg.space)?.with_fsync(cfg.fsync))
}

fn timeout(cfg: &IpamConfig) -> Duration {
    Duration::from_secs(cfg.lock_timeout_secs)
}

impl Store for FileOps {
    fn add(
        &self,
        cfg: &IpamConfig,
        who: &Attachment,
        statics: &[IpAddr],
    ) -> CniResult<Vec<IpAddr>> {
        let store = open(cfg)?;
        let locked = store.lock(timeout(cfg))?;
        allocate(&locked, cfg, who, statics)
    }

    fn del(&self, loc: &Location, conf: &NetConf, cid: &str, ifname: &str) -> CniResult<()> {
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
        let cfg = IpamConfig::from_conf(conf).ok();
        release(&locked, cfg.as_ref(), cid, ifname)?;
        Ok(())
    }

    fn reserved(&self, cfg: &IpamConfig, cid: &str, ifname: &str) -> CniResult<Vec<IpAddr>> {
        let store = open(cfg)?;
        let locked = store.lock(timeout(cfg))?;
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
        Ok(stored.record.addrs())
    }

    fn status(&self, cfg: &IpamConfig) -> CniResult<()> {
        let unavailable = |e: CniError| CniError {
            code: code::NOT_AVAILABLE,
            ..e
        };
        let store = open(cfg).map_err(unavailable)?;
        let locked = store.lock(timeout(cfg)).map_err(unavailable)?;
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

    fn gc(
        &self,
        cfg: &IpamConfig,
        network: &str,
        valid: &HashSet<(&str, &str)>,
    ) -> CniResult<usize> {
        let store = open(cfg)?;
        let locked = store.lock(timeout(cfg))?;
        Ok(crate::gc::collect(&locked, cfg, network, valid)?.released)
    }
}
