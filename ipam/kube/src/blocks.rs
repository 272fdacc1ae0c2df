//! Planning on a listed snapshot of a space's blocks, without any I/O: where an attachment's address
//! comes from (its existing reservation, its static request, the node's own blocks, a new block the node
//! claims, or a block borrowed from another node) and which single object write makes it so. The store
//! executes the write with the listed resourceVersion; a conflict means re-list and plan again.

use crate::crd::{Allocation, IPBlock, IPBlockSpec};
use plumb_cni::{code, CniError, CniResult};
use plumb_ipam::alloc::Attachment;
use plumb_ipam::range::{to_int, Range, Subnet};
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

/// One object write.
#[derive(Debug, Clone)]
pub enum Write {
    /// Create a block (fails with 409 if another node created it first).
    Create(IPBlock),
    /// Replace a block; carries the listed resourceVersion (409 if it changed).
    Replace(IPBlock),
}

impl Write {
    /// The object written.
    pub fn block(&self) -> &IPBlock {
        match self {
            Write::Create(b) | Write::Replace(b) => b,
        }
    }
}

/// Where ADD's address for one range comes from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The address.
    pub ip: IpAddr,
    /// The write that reserves it; `None` when the attachment already holds it.
    pub write: Option<Write>,
}

pub use crate::geometry::{
    addr_at, block_name, block_of, block_size, space_hash, subnet, V4_BLOCK_PREFIX, V6_BLOCK_PREFIX,
};
pub use crate::labels::{attachment_label, holds, index_labels, node_label, relabel};
pub use crate::positions::{free_in_page, free_positions, pick_for, start_offset};

/// A new block object claimed by `node`.
pub fn new_block(space: &str, block: &Subnet, node: &str) -> IPBlock {
    let mut b = IPBlock::new(
        &block_name(space, block),
        IPBlockSpec {
            space: space.to_string(),
            cidr: block.to_string(),
            node: node.to_string(),
            used: 0,
            free: block_size(block).min(u32::MAX as u128) as u32,
            allocations: BTreeMap::new(),
        },
    );
    relabel(&mut b);
    b
}

/// Every reservation in the blocks, as (address, allocation).
pub fn reservations(blocks: &[IPBlock]) -> Vec<(IpAddr, &Allocation)> {
    let mut out = Vec::new();
    for b in blocks {
        let Some(net) = subnet(b) else { continue };
        for (off, a) in &b.spec.allocations {
            // An offset outside its block is no address of it (only a hand-edited object holds one).
            if let Some(o) = off
                .parse::<u128>()
                .ok()
                .filter(|o| *o <= net.last() - net.first())
            {
                out.push((addr_at(&net, o), a));
            }
        }
    }
    out
}

fn with_allocation(b: &IPBlock, offset: u128, a: Allocation, adopt_for: Option<&str>) -> IPBlock {
    let mut nb = b.clone();
    nb.spec.allocations.insert(offset.to_string(), a);
    if let Some(node) = adopt_for {
        nb.spec.node = node.to_string();
    }
    recount(&mut nb);
    nb
}

/// Sets `used` and `free` from the allocations, and the labels from the spec ([`relabel`]).
pub fn recount(b: &mut IPBlock) {
    relabel(b);
    let size = subnet(b)
        .map(|n| block_size(&n))
        .unwrap_or(0)
        .min(u32::MAX as u128) as u32;
    b.spec.used = b.spec.allocations.len() as u32;
    b.spec.free = size.saturating_sub(b.spec.used);
}

/// The lowest free address of a block that `range` may hand out. Blocked spans are jumped and each
/// step past a taken offset is one of the block's allocations, so the cost is bounded by the block's
/// allocations, whatever the size of the block (a hand-made object may name a huge one).
fn free_in(b: &IPBlock, net: &Subnet, range: &Range) -> Option<u128> {
    if net.family() != range.family() {
        return None;
    }
    let lo = range.addr(0);
    let (lo, hi) = (
        to_int(lo).max(net.first()),
        to_int(range.addr(range.last_offset())).min(net.last()),
    );
    if lo > hi {
        return None;
    }
    let mut off = range.next_allowed(lo - range.start)?;
    loop {
        let ip = range.start + off;
        if ip > hi {
            return None;
        }
        let in_block = ip - net.first();
        if !b.spec.allocations.contains_key(&in_block.to_string()) {
            return Some(in_block);
        }
        off = range.next_allowed(off.checked_add(1)?)?;
    }
}

fn allocation_for(who: &Attachment, node: &str, now: u64) -> Allocation {
    Allocation {
        container_id: who.container_id.clone(),
        ifname: who.ifname.clone(),
        network: who.network.clone(),
        node: node.to_string(),
        pod_namespace: who.pod.namespace.clone(),
        pod_name: who.pod.name.clone(),
        pod_uid: who.pod.uid.clone(),
        created: now,
    }
}

/// The attachment's address in `range` among `blocks`, if it holds one there (an error when a static
/// request asks for another).
fn held_in(
    blocks: &[IPBlock],
    range: &Range,
    who: &Attachment,
    wanted: Option<IpAddr>,
) -> CniResult<Option<Plan>> {
    let held = reservations(blocks)
        .into_iter()
        .find(|(ip, a)| a.is_for(&who.container_id, &who.ifname) && range.allows(*ip))
        .map(|(ip, _)| ip);
    match (held, wanted) {
        (Some(ip), Some(w)) if w != ip => Err(CniError::config(format!(
            "this attachment already holds {ip} in range {}; DEL it before asking for {w}",
            range.describe()
        ))),
        (Some(ip), _) => Ok(Some(Plan { ip, write: None })),
        (None, _) => Ok(None),
    }
}

/// The first free address of the node's own blocks in `range`, as a reservation.
fn from_own(
    blocks: &[IPBlock],
    node: &str,
    range: &Range,
    allocation: &Allocation,
) -> Option<Plan> {
    for b in blocks.iter().filter(|b| b.spec.node == node) {
        let Some(net) = subnet(b) else { continue };
        if let Some(off) = free_in(b, &net, range) {
            return Some(Plan {
                ip: addr_at(&net, off),
                write: Some(Write::Replace(with_allocation(
                    b,
                    off,
                    allocation.clone(),
                    None,
                ))),
            });
        }
    }
    None
}

/// A new block at the first position of [`free_positions`] not in `taken`, with the reservation.
fn claim(
    space: &str,
    node: &str,
    range: &Range,
    taken: &HashSet<u128>,
    allocation: &Allocation,
) -> Option<Plan> {
    for net in free_positions(range, node, taken, 8) {
        let nb = new_block(space, &net, node);
        if let Some(off) = free_in(&nb, &net, range) {
            return Some(Plan {
                ip: addr_at(&net, off),
                write: Some(Write::Create(with_allocation(
                    &nb,
                    off,
                    allocation.clone(),
                    None,
                ))),
            });
        }
    }
    None
}

/// A new block at `net` claimed by `node`, with `who`'s reservation at its first address `range`
/// allows (`None` if it allows none there).
pub fn claim_at(
    space: &str,
    node: &str,
    range: &Range,
    net: &Subnet,
    who: &Attachment,
    now: u64,
) -> Option<Plan> {
    let nb = new_block(space, net, node);
    let off = free_in(&nb, net, range)?;
    Some(Plan {
        ip: addr_at(net, off),
        write: Some(Write::Create(with_allocation(
            &nb,
            off,
            allocation_for(who, node, now),
            None,
        ))),
    })
}

/// Plans ADD's address in `range` from the node's own listing (the blocks labelled with its holder
/// label): the attachment's existing address, a static address in one of these blocks (or in a new
/// block, created blind: a 409 says it exists), a free address of an own block, or, when `claim_new`,
/// a new block at the first position of the node's search order that is neither one of these blocks
/// nor in `avoid` (positions a create found taken). `None`: the whole space must be read.
#[allow(clippy::too_many_arguments)]
pub fn plan_own(
    own: &[IPBlock],
    space: &str,
    node: &str,
    range: &Range,
    who: &Attachment,
    wanted: Option<IpAddr>,
    now: u64,
    avoid: &HashSet<u128>,
    claim_new: bool,
) -> CniResult<Option<Plan>> {
    if let Some(p) = held_in(own, range, who, wanted)? {
        return Ok(Some(p));
    }
    let allocation = allocation_for(who, node, now);
    if let Some(ip) = wanted {
        return plan_static(own, space, node, ip, allocation).map(Some);
    }
    if let Some(p) = from_own(own, node, range, &allocation) {
        return Ok(Some(p));
    }
    if !claim_new {
        return Ok(None);
    }
    let mut taken = avoid.clone();
    taken.extend(own.iter().filter_map(subnet).map(|n| n.first()));
    Ok(claim(space, node, range, &taken, &allocation))
}

/// Plans ADD's address in `range` for `who` on `node`. `blocks` is the listed snapshot of the space.
pub fn plan_add(
    blocks: &[IPBlock],
    space: &str,
    node: &str,
    range: &Range,
    who: &Attachment,
    wanted: Option<IpAddr>,
    now: u64,
) -> CniResult<Plan> {
    plan_add_avoiding(
        blocks,
        space,
        node,
        range,
        who,
        wanted,
        now,
        &HashSet::new(),
    )
}

/// [`plan_add`] on the whole space, also treating the block positions in `avoid` as taken.
#[allow(clippy::too_many_arguments)]
pub fn plan_add_avoiding(
    blocks: &[IPBlock],
    space: &str,
    node: &str,
    range: &Range,
    who: &Attachment,
    wanted: Option<IpAddr>,
    now: u64,
    avoid: &HashSet<u128>,
) -> CniResult<Plan> {
    if let Some(p) = held_in(blocks, range, who, wanted)? {
        return Ok(p);
    }
    let allocation = allocation_for(who, node, now);
    if let Some(ip) = wanted {
        return plan_static(blocks, space, node, ip, allocation);
    }
    let in_range: Vec<(&IPBlock, Subnet)> = blocks
        .iter()
        .filter_map(|b| subnet(b).map(|n| (b, n)))
        .filter(|(_, n)| n.family() == range.family())
        .collect();
    // 1. The node's own blocks.
    if let Some(p) = from_own(blocks, node, range, &allocation) {
        return Ok(p);
    }
    // 2. A block nobody has claimed yet, in the node's search order (from a node-derived offset):
    // the search jumps every listed block and the exclusions, so it is bounded by them, never by the
    // number of addresses or blocks in the range.
    let mut taken: HashSet<u128> = in_range.iter().map(|(_, n)| n.first()).collect();
    taken.extend(avoid);
    if let Some(p) = claim(space, node, range, &taken, &allocation) {
        return Ok(p);
    }
    // 3. Borrow: unowned blocks first (adopting them), then other nodes' blocks.
    let mut others: Vec<&(&IPBlock, Subnet)> = in_range
        .iter()
        .filter(|(b, _)| b.spec.node != node)
        .collect();
    others.sort_by_key(|(b, _)| !b.spec.node.is_empty());
    for (b, net) in others {
        if let Some(off) = free_in(b, net, range) {
            let adopt = b.spec.node.is_empty().then_some(node);
            return Ok(Plan {
                ip: addr_at(net, off),
                write: Some(Write::Replace(with_allocation(b, off, allocation, adopt))),
            });
        }
    }
    Err(CniError::new(
        code::POOL_EXHAUSTED,
        format!(
            "range {} is exhausted: all {} usable addresses are reserved in the cluster",
            range.describe(),
            range.usable()
        ),
    ))
}

/// Plans a static address from the blocks that may hold its block (one listed by name, or none: then
/// a create of its block).
pub fn plan_static(
    blocks: &[IPBlock],
    space: &str,
    node: &str,
    ip: IpAddr,
    allocation: Allocation,
) -> CniResult<Plan> {
    let net = block_of(ip);
    let off = to_int(ip) - net.first();
    match blocks.iter().find(|b| subnet(b) == Some(net)) {
        Some(b) => {
            if let Some(a) = b.spec.allocations.get(&off.to_string()) {
                let pod = match (&a.pod_namespace, &a.pod_name) {
                    (Some(ns), Some(n)) => format!(", pod {ns}/{n}"),
                    _ => String::new(),
                };
                return Err(CniError::new(
                    code::ADDRESS_TAKEN,
                    format!("requested IP {ip} is reserved by container {} interface {} on node {}{pod}", a.container_id, a.ifname, a.node),
                ));
            }
            Ok(Plan {
                ip,
                write: Some(Write::Replace(with_allocation(b, off, allocation, None))),
            })
        }
        None => {
            let nb = with_allocation(&new_block(space, &net, node), off, allocation, None);
            Ok(Plan {
                ip,
                write: Some(Write::Create(nb)),
            })
        }
    }
}

/// The writes that remove every reservation for which `drop` is true; returns them and the freed addresses.
pub fn plan_removal(
    blocks: &[IPBlock],
    drop: impl Fn(IpAddr, &Allocation) -> bool,
) -> (Vec<Write>, Vec<IpAddr>) {
    let mut writes = Vec::new();
    let mut freed = Vec::new();
    for b in blocks {
        let Some(net) = subnet(b) else { continue };
        let gone: Vec<String> = b
            .spec
            .allocations
            .iter()
            .filter(|(k, a)| k.parse::<u128>().is_ok_and(|o| drop(addr_at(&net, o), a)))
            .map(|(k, _)| k.clone())
            .collect();
        if gone.is_empty() {
            continue;
        }
        let mut nb = b.clone();
        for k in &gone {
            nb.spec.allocations.remove(k);
            if let Ok(o) = k.parse::<u128>() {
                freed.push(addr_at(&net, o));
            }
        }
        recount(&mut nb);
        writes.push(Write::Replace(nb));
    }
    (writes, freed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{INDEX_LABEL, INDEX_VERSION, SPACE_LABEL};
    use plumb_cni::args::PodRef;

    fn who(c: &str) -> Attachment {
        Attachment {
            container_id: c.into(),
            ifname: "eth0".into(),
            network: "net".into(),
            pod: PodRef::default(),
        }
    }

    fn range(text: &str) -> Range {
        Range::build("ipam.range", text, None, None, &[], None).unwrap()
    }

    fn apply(blocks: &mut Vec<IPBlock>, w: &Write) {
        let b = w.block().clone();
        blocks.retain(|x| x.metadata.name != b.metadata.name);
        blocks.push(b);
    }

    #[test]
    fn claims_then_fills_own_block_then_borrows() {
        let r = range("10.5.0.0/25"); // two /26 blocks: .0/26 and .64/26
        let mut blocks = Vec::new();
        let p = plan_add(&blocks, "_default", "a", &r, &who("c1"), None, 1).unwrap();
        assert_eq!(p.ip.to_string(), "10.5.0.1");
        assert!(matches!(p.write, Some(Write::Create(_))));
        apply(&mut blocks, p.write.as_ref().unwrap());
        let p = plan_add(&blocks, "_default", "a", &r, &who("c2"), None, 1).unwrap();
        assert_eq!(p.ip.to_string(), "10.5.0.2");
        assert!(matches!(p.write, Some(Write::Replace(_))));
        apply(&mut blocks, p.write.as_ref().unwrap());
        // Node b claims the other block.
        let p = plan_add(&blocks, "_default", "b", &r, &who("c3"), None, 1).unwrap();
        assert_eq!(p.ip.to_string(), "10.5.0.64");
        apply(&mut blocks, p.write.as_ref().unwrap());
        // Idempotent.
        let p = plan_add(&blocks, "_default", "a", &r, &who("c1"), None, 1).unwrap();
        assert_eq!(p.ip.to_string(), "10.5.0.1");
        assert!(p.write.is_none());
        // Fill node b's block (.64-.126 usable: 63 addresses, .127 is broadcast) then b borrows from a.
        for i in 0..62 {
            let p = plan_add(
                &blocks,
                "_default",
                "b",
                &r,
                &who(&format!("b{i}")),
                None,
                1,
            )
            .unwrap();
            apply(&mut blocks, p.write.as_ref().unwrap());
        }
        let p = plan_add(&blocks, "_default", "b", &r, &who("borrower"), None, 1).unwrap();
        assert_eq!(p.ip.to_string(), "10.5.0.3");
        assert_eq!(
            p.write.as_ref().unwrap().block().spec.node,
            "a",
            "borrowing keeps the owner"
        );
        apply(&mut blocks, p.write.as_ref().unwrap());
        let total: usize = blocks.iter().map(|b| b.spec.allocations.len()).sum();
        assert_eq!(total, 66);
        assert_eq!(
            blocks.iter().map(|b| b.spec.used as usize).sum::<usize>(),
            total
        );
    }

    #[test]
    fn statics_exhaustion_and_removal() {
        let r = range("10.6.0.0/30");
        let mut blocks = Vec::new();
        let p = plan_add(
            &blocks,
            "s",
            "a",
            &r,
            &who("c1"),
            Some("10.6.0.2".parse().unwrap()),
            1,
        )
        .unwrap();
        apply(&mut blocks, p.write.as_ref().unwrap());
        let e = plan_add(
            &blocks,
            "s",
            "b",
            &r,
            &who("c2"),
            Some("10.6.0.2".parse().unwrap()),
            1,
        )
        .unwrap_err();
        assert_eq!(e.code, 101);
        let p = plan_add(&blocks, "s", "b", &r, &who("c2"), None, 1).unwrap();
        assert_eq!(p.ip.to_string(), "10.6.0.1");
        apply(&mut blocks, p.write.as_ref().unwrap());
        assert_eq!(
            plan_add(&blocks, "s", "b", &r, &who("c3"), None, 1)
                .unwrap_err()
                .code,
            100
        );
        let (writes, freed) = plan_removal(&blocks, |_, a| a.is_for("c1", "eth0"));
        assert_eq!(freed, vec!["10.6.0.2".parse::<IpAddr>().unwrap()]);
        for w in &writes {
            apply(&mut blocks, w);
        }
        assert_eq!(
            plan_add(&blocks, "s", "b", &r, &who("c3"), None, 1)
                .unwrap()
                .ip
                .to_string(),
            "10.6.0.2"
        );
    }

    #[test]
    fn names_and_huge_ipv6() {
        let n = block_name("_default", &block_of("10.1.0.70".parse().unwrap()));
        assert_eq!(
            n,
            format!("default-{}-10-1-0-64-26", space_hash("_default"))
        );
        assert!(
            n.len() < 253
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        let r = range("fd00::/64");
        let p = plan_add(&[], "v6", "a", &r, &who("c"), None, 1).unwrap();
        assert_eq!(p.ip, first_free(&r, "a"));
        assert_eq!(
            p.write.unwrap().block().spec.cidr,
            block_of(first_free(&r, "a")).to_string()
        );
    }

    /// The first address a node with no blocks gets in an empty range.
    fn first_free(r: &Range, node: &str) -> IpAddr {
        let off = r
            .next_allowed(start_offset(r, node))
            .or_else(|| r.next_allowed(0))
            .unwrap();
        r.addr(off)
    }

    #[test]
    fn labels_follow_the_spec() {
        let long = format!("{}.example.com", "n".repeat(240));
        let mut b = new_block("s", &block_of("10.9.0.1".parse().unwrap()), &long);
        b.spec.allocations.insert("3".into(), p_alloc());
        recount(&mut b);
        let l = b.metadata.labels.clone().unwrap();
        let key_ok = |k: &str| {
            let name = k.strip_prefix("plumb.dev/").unwrap();
            name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        assert!(l.keys().all(|k| key_ok(k)), "{l:?}");
        assert_eq!(l[SPACE_LABEL], space_hash("s"));
        assert_eq!(l[INDEX_LABEL], INDEX_VERSION);
        assert!(l.contains_key(&node_label(&long)));
        assert!(
            l.contains_key(&node_label("other")),
            "a borrower holds it too"
        );
        assert!(l.contains_key(&attachment_label("x", "eth0")));
        assert_eq!(l.len(), 5);
        assert_ne!(node_label("a"), node_label("b"));
        assert_ne!(attachment_label("ab", "c"), attachment_label("a", "bc"));
        // Removing the reservation drops the borrower's and the attachment's labels; orphaning
        // drops the owner's; labels not plumb's stay.
        b.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "x".into());
        b.spec.allocations.clear();
        b.spec.node = String::new();
        assert!(relabel(&mut b));
        let l = b.metadata.labels.clone().unwrap();
        assert_eq!(l.len(), 3, "{l:?}");
        assert_eq!(l["team"], "x");
        assert!(!relabel(&mut b), "unchanged");
    }

    #[test]
    fn huge_exclusions_and_many_blocks_are_jumped() {
        let bounded = |what: &str, f: &dyn Fn() -> Plan| {
            let t = std::time::Instant::now();
            let p = f();
            assert!(
                t.elapsed() < std::time::Duration::from_secs(2),
                "{what}: {:?}",
                t.elapsed()
            );
            p
        };
        for (text, ex, allowed_from) in [
            ("fd00:ad0::/64", "fd00:ad0::/65", "fd00:ad0:0:0:8000::"),
            ("fd00::/8", "fd00::/9", "fd80::"),
        ] {
            let r = Range::build("ipam.range", text, None, None, &[ex.into()], None).unwrap();
            let p = bounded(text, &|| {
                plan_add(&[], "s", "a", &r, &who("c"), None, 1).unwrap()
            });
            assert_eq!(p.ip, first_free(&r, "a"), "{text}");
            assert!(p.ip >= allowed_from.parse::<IpAddr>().unwrap(), "{text}");
        }
        // 3,000 blocks claimed by another node ahead of the free space: the search jumps them.
        let r = range("fd00:7::/64");
        let start = start_offset(&r, "a");
        let mut blocks = Vec::new();
        for i in 0..3000u128 {
            let net = block_of(r.addr(start + i * 256));
            let mut b = new_block("s", &net, "other");
            b.spec.allocations.insert("7".into(), p_alloc());
            blocks.push(b);
        }
        let p = bounded("3000 blocks", &|| {
            plan_add(&blocks, "s", "a", &r, &who("c"), None, 1).unwrap()
        });
        assert_eq!(p.ip, r.addr(start + 3000 * 256));
        // A hand-made block covering a whole /64 with one allocation is stepped in one jump.
        let net = Subnet::parse("fd00:8::/64", "t").unwrap();
        let mut b = new_block("s", &net, "a");
        b.spec.allocations.insert("1".into(), p_alloc());
        b.spec
            .allocations
            .insert("99999999999999999999999999999999999".into(), p_alloc());
        let r = range("fd00:8::/64");
        let p = bounded("huge block", &|| {
            plan_add(&[b.clone()], "s", "a", &r, &who("c"), None, 1).unwrap()
        });
        assert_eq!(p.ip.to_string(), "fd00:8::2");
        assert_eq!(
            reservations(&[b]).len(),
            1,
            "an offset outside the block is no reservation"
        );
    }

    fn p_alloc() -> Allocation {
        Allocation {
            container_id: "x".into(),
            ifname: "eth0".into(),
            network: "net".into(),
            node: "other".into(),
            pod_namespace: None,
            pod_name: None,
            pod_uid: None,
            created: 1,
        }
    }
}
