//! Where a node looks for a block nobody has claimed: its search order (from a node-derived offset,
//! so nodes claiming at once rarely collide) and what one page of a listing of the space proves free.

use super::crd::IPBlock;
use super::labels::hash64;
use crate::geometry::{block_name, block_of, block_size, subnet};
use plumb_ipam::range::{Range, Subnet};
use std::collections::HashSet;

/// The range offset at which `node` starts looking for a block nobody has claimed: the start of
/// block number hash(node) mod (blocks the range spans), so nodes claiming at once rarely collide.
pub fn start_offset(range: &Range, node: &str) -> u128 {
    let first = block_of(range.addr(0));
    let last = block_of(range.addr(range.last_offset()));
    let size = block_size(&first);
    let count = (last.first() - first.first()) / size + 1;
    let index = hash64(&[node.as_bytes()]) as u128 % count;
    (first.first() + index * size).max(range.start) - range.start
}

/// The blocks of `range` in `node`'s search order (from [`start_offset`] to the range's end, then from
/// its start), skipping those whose first address is in `taken`; at most `limit` of them. Bounded by
/// `taken` and the range's exclusions, never by the number of blocks in the range.
pub fn free_positions(
    range: &Range,
    node: &str,
    taken: &HashSet<u128>,
    limit: usize,
) -> Vec<Subnet> {
    let start = start_offset(range, node);
    let start_block = block_of(range.addr(start)).first();
    let mut out = Vec::new();
    let mut wrapped = false;
    let mut next = range.next_allowed(start);
    loop {
        let Some(off) = next else {
            if wrapped {
                break;
            }
            wrapped = true;
            next = range.next_allowed(0);
            continue;
        };
        let net = block_of(range.addr(off));
        if wrapped && net.first() >= start_block {
            break;
        }
        if !taken.contains(&net.first()) {
            out.push(net);
            if out.len() >= limit {
                break;
            }
        }
        next = net
            .last()
            .checked_sub(range.start)
            .and_then(|o| o.checked_add(1))
            .and_then(|o| range.next_allowed(o));
    }
    out
}

/// Block positions of `range` that one page of a listing of the space proves unclaimed. Listings come
/// in name order (the real API server's and etcd's key order), so every name between the page's first
/// and last (before its last on the first page, after its first on the last one, anything on a single
/// page) that the page does not hold belongs to no object. The candidates are the range's first block
/// (on the first page) and the block after each listed one: bounded by the page, never by the number
/// of blocks in the range. Positions in `avoid` are left out.
pub fn free_in_page(
    page: &[IPBlock],
    first_page: bool,
    last_page: bool,
    space: &str,
    range: &Range,
    avoid: &HashSet<u128>,
) -> Vec<Subnet> {
    let names: HashSet<&str> = page
        .iter()
        .filter_map(|b| b.metadata.name.as_deref())
        .collect();
    let lo = page
        .first()
        .and_then(|b| b.metadata.name.as_deref())
        .filter(|_| !first_page);
    let hi = page
        .last()
        .and_then(|b| b.metadata.name.as_deref())
        .filter(|_| !last_page);
    let mut from: Vec<u128> = page
        .iter()
        .filter_map(subnet)
        .filter(|n| n.family() == range.family())
        .filter_map(|n| n.last().checked_sub(range.start)?.checked_add(1))
        .collect();
    if first_page {
        from.push(0);
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for off in from {
        let Some(o) = range.next_allowed(off) else {
            continue;
        };
        let net = block_of(range.addr(o));
        let name = block_name(space, &net);
        if names.contains(name.as_str())
            || lo.is_some_and(|l| name.as_str() <= l)
            || hi.is_some_and(|h| name.as_str() >= h)
            || avoid.contains(&net.first())
            || !seen.insert(net.first())
        {
            continue;
        }
        out.push(net);
    }
    out
}

/// One of `candidates`, picked by a hash of the node name so nodes claiming from the same page of a
/// listing at once spread over the free positions it shows.
pub fn pick_for(node: &str, candidates: &[Subnet]) -> Option<Subnet> {
    if candidates.is_empty() {
        return None;
    }
    Some(candidates[(hash64(&[node.as_bytes()]) % candidates.len() as u64) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::new_block;

    fn range(text: &str) -> Range {
        Range::build("ipam.range", text, None, None, &[], None).unwrap()
    }

    #[test]
    fn nodes_start_at_spread_positions_and_wrap() {
        // 50 nodes on a /16 (1024 blocks): their first blocks are spread, not all the lowest one.
        let r = range("10.40.0.0/16");
        let starts: HashSet<u128> = (0..50)
            .map(|i| start_offset(&r, &format!("node-{i}")))
            .collect();
        assert!(starts.len() >= 45, "{} distinct of 50", starts.len());
        assert!(starts
            .iter()
            .all(|o| (*o == 0 || (r.start + o).is_multiple_of(64)) && *o < 65535));
        // The order runs to the end, then wraps to the start, each block once, taken ones skipped.
        let r = range("10.5.0.0/24"); // 4 blocks
        let all = free_positions(&r, "a", &HashSet::new(), 10);
        assert_eq!(all.len(), 4);
        let firsts: HashSet<u128> = all.iter().map(|n| n.first()).collect();
        assert_eq!(firsts.len(), 4);
        assert_eq!(all[0], block_of(r.addr(start_offset(&r, "a"))));
        let taken: HashSet<u128> = [all[0].first(), all[2].first()].into();
        assert_eq!(free_positions(&r, "a", &taken, 10), vec![all[1], all[3]]);
        assert_eq!(free_positions(&r, "a", &taken, 1), vec![all[1]]);
    }

    #[test]
    fn a_page_proves_the_positions_between_its_names_free() {
        let r = range("10.12.0.0/16");
        let at = |third: u32, fourth: u32| {
            new_block(
                "s",
                &block_of(format!("10.12.{third}.{fourth}").parse().unwrap()),
                "o",
            )
        };
        // Name order: ...-10-12-1-0-26 < ...-10-12-1-128-26 < ...-10-12-1-64-26 < ...-10-12-2-0-26.
        let mut page = vec![at(1, 0), at(1, 128), at(1, 64), at(2, 0)];
        page.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let none = HashSet::new();
        // A middle page: only candidates named between its first and last name count.
        let free: Vec<String> = free_in_page(&page, false, false, "s", &r, &none)
            .iter()
            .map(|n| n.to_string())
            .collect();
        // After 10.12.1.0: .64 is listed; after .128: .192 (name -1-192- sorts between -1-128- and
        // -1-64-); after .64: .128 listed; after 10.12.2.0: 2.64 sorts after the last name: unknown.
        assert_eq!(free, vec!["10.12.1.192/26"]);
        // The first page also proves everything before its first name and offers the range's start.
        let first = free_in_page(&page, true, false, "s", &r, &none);
        assert!(
            first.contains(&block_of("10.12.0.1".parse().unwrap())),
            "{first:?}"
        );
        // The last page proves everything after its last name.
        let last = free_in_page(&page, false, true, "s", &r, &none);
        assert!(
            last.contains(&block_of("10.12.2.64".parse().unwrap())),
            "{last:?}"
        );
        // Avoided positions are left out.
        let avoid: HashSet<u128> = [block_of("10.12.1.192".parse().unwrap()).first()].into();
        assert!(free_in_page(&page, false, false, "s", &r, &avoid).is_empty());
        // An empty listing: the range's first block.
        assert_eq!(
            free_in_page(&[], true, true, "s", &r, &none),
            vec![block_of("10.12.0.1".parse().unwrap())]
        );
    }
}
