//! Allocation on the file store: choose one address per range for an attachment (its static request,
//! its existing reservation, or the next free one), commit, and keep the hints in step. Every function
//! here runs with the space lock held.

use crate::config::IpamConfig;
use crate::hint::Hint;
use crate::range::Range;
use crate::store::{attachment_file, now_secs, Entry, Locked, Record, Stored};
use plumb_cni::args::PodRef;
use plumb_cni::{code, CniError, CniResult};
use std::collections::HashMap;
use std::net::IpAddr;

/// Who asks for addresses.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The CNI network name.
    pub network: String,
    /// The Kubernetes pod, when known.
    pub pod: PodRef,
}

/// The chosen address of each range, in range order.
pub type Allocation = Vec<IpAddr>;

/// Open hints by range index, opened on first use.
struct Hints<'a> {
    locked: &'a Locked<'a>,
    cfg: &'a IpamConfig,
    open: HashMap<usize, Hint>,
}

impl<'a> Hints<'a> {
    fn get(&mut self, i: usize) -> CniResult<&mut Hint> {
        if !self.open.contains_key(&i) {
            let range = &self.cfg.ranges[i];
            let h = Hint::open(self.locked.dir(), range, || {
                claimed_offsets(self.locked, range)
            })?;
            self.open.insert(i, h);
        }
        Ok(self.open.get_mut(&i).expect("just inserted"))
    }
}

/// Offsets of `range` that hold an `ip-` file.
pub fn claimed_offsets(locked: &Locked, range: &Range) -> CniResult<Vec<u128>> {
    Ok(locked
        .list()?
        .claims
        .into_iter()
        .filter_map(|ip| range.offset_of(ip))
        .collect())
}

/// ADD: reserves one address per range for `who` (idempotent: the same attachment gets its addresses back).
pub fn allocate(
    locked: &Locked,
    cfg: &IpamConfig,
    who: &Attachment,
    statics: &[IpAddr],
) -> CniResult<Allocation> {
    let wanted = place_statics(cfg, statics)?;
    // An unreadable record of this attachment is replaced by the commit below.
    let existing = match locked.entry(&attachment_file(&who.container_id, &who.ifname))? {
        Entry::Record(s) => Some(s),
        Entry::Missing | Entry::Unreadable => None,
    };
    let valid_old: Vec<IpAddr> = match &existing {
        Some(s) => s
            .record
            .addrs()
            .into_iter()
            .filter(|ip| locked.claim_ino(*ip) == Some(s.ino))
            .collect(),
        None => Vec::new(),
    };
    let mut hints = Hints {
        locked,
        cfg,
        open: HashMap::new(),
    };
    let mut chosen = Vec::with_capacity(cfg.ranges.len());
    let mut reclaim = Vec::new();
    for (i, range) in cfg.ranges.iter().enumerate() {
        let ip = if let Some(ip) = wanted[i] {
            match locked.holder(ip)? {
                Entry::Record(h) if !h.record.is_for(&who.container_id, &who.ifname) => {
                    return Err(taken(ip, &h))
                }
                Entry::Record(_) if !valid_old.contains(&ip) => reclaim.push(ip),
                Entry::Unreadable => return Err(unreadable(ip)),
                _ => {}
            }
            ip
        } else if let Some(ip) = valid_old.iter().copied().find(|ip| range.allows(*ip)) {
            ip
        } else {
            let (ip, orphan_of_ours) = find_free(locked, &mut hints, i, who)?;
            if orphan_of_ours {
                reclaim.push(ip);
            }
            ip
        };
        chosen.push(ip);
    }
    let unchanged = existing.as_ref().is_some_and(|s| {
        let mut a = s.record.addrs();
        let mut b = chosen.clone();
        a.sort();
        b.sort();
        a == b && valid_old.len() == a.len()
    });
    if !unchanged {
        let record = Record {
            container_id: who.container_id.clone(),
            ifname: who.ifname.clone(),
            network: who.network.clone(),
            ips: chosen
                .iter()
                .zip(&cfg.ranges)
                .map(|(ip, r)| format!("{ip}/{}", r.subnet.prefix))
                .collect(),
            pod_namespace: who.pod.namespace.clone(),
            pod_name: who.pod.name.clone(),
            pod_uid: who.pod.uid.clone(),
            created: now_secs(),
        };
        locked.commit(&record, existing.as_ref(), &reclaim)?;
        for (i, ip) in chosen.iter().enumerate() {
            let off = cfg.ranges[i]
                .offset_of(*ip)
                .expect("chosen inside its range");
            let h = hints.get(i)?;
            h.mark(off, true)?;
            if wanted[i].is_none() {
                h.advance(off)?;
            }
        }
        if let Some(old) = &existing {
            for ip in old
                .record
                .addrs()
                .into_iter()
                .filter(|ip| !chosen.contains(ip))
            {
                mark_free(&mut hints, cfg, ip)?;
            }
        }
    }
    Ok(chosen)
}

/// DEL: releases the attachment's addresses; nothing reserved is success.
pub fn release(
    locked: &Locked,
    cfg: Option<&IpamConfig>,
    container_id: &str,
    ifname: &str,
) -> CniResult<Vec<IpAddr>> {
    let freed = locked.release(container_id, ifname)?;
    if let Some(cfg) = cfg {
        let mut hints = Hints {
            locked,
            cfg,
            open: HashMap::new(),
        };
        for ip in &freed {
            mark_free(&mut hints, cfg, *ip)?;
        }
    }
    Ok(freed)
}

fn mark_free(hints: &mut Hints, cfg: &IpamConfig, ip: IpAddr) -> CniResult<()> {
    if let Some(i) = cfg.range_for(ip) {
        if let Some(off) = cfg.ranges[i].offset_of(ip) {
            hints.get(i)?.mark(off, false)?;
        }
    }
    Ok(())
}

/// Finds a free address of range `i`; returns it and whether it is an orphan claim of this same attachment.
fn find_free(
    locked: &Locked,
    hints: &mut Hints,
    i: usize,
    who: &Attachment,
) -> CniResult<(IpAddr, bool)> {
    let range = &hints.cfg.ranges[i];
    for attempt in 0..2 {
        let hint = hints.get(i)?;
        let mut stale = Vec::new();
        let mut found = None;
        for off in hint.candidates(range) {
            let ip = range.addr(off);
            if !locked.is_claimed(ip) {
                found = Some((ip, false));
                break;
            }
            match locked.holder(ip)? {
                Entry::Record(h) if h.record.is_for(&who.container_id, &who.ifname) => {
                    found = Some((ip, true));
                    break;
                }
                _ => stale.push(off),
            }
        }
        for off in stale {
            hint.mark(off, true)?;
        }
        if let Some(f) = found {
            return Ok(f);
        }
        if attempt == 0 && hint.has_bitmap() {
            // The hint may hold bits of addresses freed by a crashed DEL: rebuild it from the files once.
            let used = claimed_offsets(locked, range)?;
            hint.rebuild(&used)?;
            continue;
        }
        break;
    }
    let hint = hints.get(i)?;
    Err(CniError::new(
        code::POOL_EXHAUSTED,
        if hint.has_bitmap() || range.usable() <= crate::hint::PROBE_LIMIT as u128 {
            format!("range {} is exhausted: all {} usable addresses are reserved; widen the range or release addresses (plumb-ipam list)", range.describe(), range.usable())
        } else {
            format!("range {} has no free address among {} probed from the cursor; release addresses or use a wider range", range.describe(), crate::hint::PROBE_LIMIT)
        },
    ))
}

/// Maps each static request to its range; errors name the address and what is wrong.
pub fn place_statics(cfg: &IpamConfig, statics: &[IpAddr]) -> CniResult<Vec<Option<IpAddr>>> {
    let mut wanted = vec![None; cfg.ranges.len()];
    for ip in statics {
        let i = cfg.range_for(*ip).ok_or_else(|| {
            let ranges: Vec<String> = cfg.ranges.iter().map(|r| r.describe()).collect();
            CniError::config(format!(
                "requested IP {ip} is outside every range ({}); request an address inside one",
                ranges.join(", ")
            ))
        })?;
        let r = &cfg.ranges[i];
        if !r.allows(*ip) {
            let why = if r.gateway == Some(*ip) {
                "is the gateway"
            } else {
                "is excluded or outside range_start..range_end"
            };
            return Err(CniError::config(format!(
                "requested IP {ip} {why} in range {}",
                r.describe()
            )));
        }
        match wanted[i] {
            Some(prev) if prev != *ip => {
                return Err(CniError::config(format!(
                    "requested IPs {prev} and {ip} both fall in range {}; request at most one address per range",
                    r.describe()
                )))
            }
            _ => wanted[i] = Some(*ip),
        }
    }
    Ok(wanted)
}

fn unreadable(ip: IpAddr) -> CniError {
    CniError::new(
        code::ADDRESS_TAKEN,
        format!("requested IP {ip} is held by an unreadable record (left by a power loss); GC removes it, or run plumb-ipam release --ip {ip}"),
    )
}

fn taken(ip: IpAddr, h: &Stored) -> CniError {
    let r = &h.record;
    let pod = match (&r.pod_namespace, &r.pod_name) {
        (Some(ns), Some(n)) => format!(", pod {ns}/{n}"),
        _ => String::new(),
    };
    CniError::new(
        code::ADDRESS_TAKEN,
        format!(
            "requested IP {ip} is reserved by container {} interface {}{pod}; pick another address or release it (plumb-ipam release --ip {ip})",
            r.container_id, r.ifname
        ),
    )
}
