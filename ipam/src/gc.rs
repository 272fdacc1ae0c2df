//! GC: release every reservation of one network whose attachment is not in the runtime's valid list,
//! remove orphan claims and temporary files left by killed processes, and rebuild the hints from what remains.

use crate::alloc::claimed_offsets;
use crate::config::IpamConfig;
use crate::hint::Hint;
use crate::store::{attachment_file, Entry, Locked};
use plumb_cni::CniResult;
use std::collections::HashSet;

/// What one GC pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Attachments released because they are not valid any more.
    pub released: usize,
    /// `ip-` files removed because no record of their attachment points at them.
    pub orphans: usize,
    /// Unreadable record or claim files removed (only a power loss can leave them: no name points at
    /// content before it is complete, but without fsync the content may not reach the disk).
    pub unreadable: usize,
    /// Temporary files of killed processes removed.
    pub temporaries: usize,
}

/// Runs GC for `network` with the space lock held.
pub fn collect(
    locked: &Locked,
    cfg: &IpamConfig,
    network: &str,
    valid: &HashSet<(&str, &str)>,
) -> CniResult<Collected> {
    let mut out = Collected::default();
    let listing = locked.list()?;
    for name in &listing.attachments {
        let s = match locked.entry(name)? {
            Entry::Record(s) => s,
            Entry::Missing => continue,
            Entry::Unreadable => {
                locked.remove_unreadable(name)?;
                out.unreadable += 1;
                continue;
            }
        };
        let r = &s.record;
        if r.network == network && !valid.contains(&(r.container_id.as_str(), r.ifname.as_str())) {
            locked.release(&r.container_id, &r.ifname)?;
            out.released += 1;
        }
    }
    for ip in listing.claims {
        let claim = match locked.holder(ip)? {
            Entry::Record(c) => c,
            Entry::Missing => continue,
            Entry::Unreadable => {
                locked.unlink_claim(ip)?;
                out.unreadable += 1;
                continue;
            }
        };
        let r = &claim.record;
        if r.network != network {
            continue;
        }
        let owner = match locked.entry(&attachment_file(&r.container_id, &r.ifname))? {
            Entry::Record(o) => Some(o),
            Entry::Missing | Entry::Unreadable => None,
        };
        let referenced =
            owner.is_some_and(|o| o.ino == claim.ino && o.record.addrs().contains(&ip));
        if !referenced {
            locked.unlink_claim(ip)?;
            out.orphans += 1;
        }
    }
    for name in &listing.temporaries {
        locked.remove_temporary(name)?;
        out.temporaries += 1;
    }
    locked.sync_dir()?;
    for range in &cfg.ranges {
        let used = claimed_offsets(locked, range)?;
        let mut hint = Hint::open(locked.dir(), range, || Ok(used.clone()))?;
        hint.rebuild(&used)?;
    }
    Ok(out)
}
