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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{locate, Located};
    use serde_json::json;

    fn conf(dir: &std::path::Path) -> NetConf {
        let c = json!({"cniVersion": "1.1.0", "name": "net", "type": "plumb-ipam",
                       "ipam": {"range": "10.9.0.0/30", "dataDir": dir.display().to_string()}});
        NetConf::parse(c.to_string().as_bytes()).unwrap()
    }

    fn who(cid: &str) -> Attachment {
        Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
            network: "net".into(),
            pod: Default::default(),
        }
    }

    /// The file store through the trait the plugin uses: ADD, CHECK, STATUS, GC and DEL.
    #[test]
    fn the_file_store_behind_the_store_trait() {
        let dir = std::env::temp_dir().join(format!("plumb-fileops-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let netconf = conf(&dir);
        let cfg = IpamConfig::from_conf(&netconf).unwrap();
        let store: &dyn Store = &FileOps;
        // A /30 holds two usable addresses.
        let a = store.add(&cfg, &who("a"), &[]).unwrap();
        assert_eq!(
            store.add(&cfg, &who("a"), &[]).unwrap(),
            a,
            "ADD is idempotent"
        );
        assert_eq!(store.reserved(&cfg, "a", "eth0").unwrap(), a);
        store.status(&cfg).unwrap();
        let b = store.add(&cfg, &who("b"), &[]).unwrap();
        assert_ne!(a, b);
        let full = store.status(&cfg).unwrap_err();
        assert_eq!(full.code, code::NOT_AVAILABLE, "{full}");
        assert!(
            full.msg.contains("is full (2 of 2 reserved)"),
            "{}",
            full.msg
        );
        // GC keeps the valid attachment and releases the other.
        let valid: HashSet<(&str, &str)> = [("a", "eth0")].into_iter().collect();
        assert_eq!(store.gc(&cfg, "net", &valid).unwrap(), 1);
        let gone = store.reserved(&cfg, "b", "eth0").unwrap_err();
        assert_eq!(gone.code, code::CHECK_MISMATCH);
        assert!(gone
            .msg
            .contains("no reservation for container b interface eth0"));
        // DEL from the location alone; a second DEL finds nothing and succeeds.
        let Located::At(loc) = locate(&netconf).unwrap() else {
            panic!("the config locates its store")
        };
        store.del(&loc, &netconf, "a", "eth0").unwrap();
        store.del(&loc, &netconf, "a", "eth0").unwrap();
        assert_eq!(
            store.reserved(&cfg, "a", "eth0").unwrap_err().code,
            code::CHECK_MISMATCH
        );
        store.status(&cfg).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
