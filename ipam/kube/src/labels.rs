//! The labels of an IPBlock, computed from its spec on every write: the space hash, the index
//! version, a holder label per node (owner and borrowers) and an attachment label per reservation, so
//! that a node lists only its own blocks and DEL only the attachment's.

use super::crd::{
    IPBlock, ATTACHMENT_LABEL_PREFIX, INDEX_LABEL, INDEX_VERSION, NODE_LABEL_PREFIX, SPACE_LABEL,
};
use crate::geometry::space_hash;
use std::collections::BTreeMap;

/// FNV-1a, 64 bits.
pub(crate) fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff; // a separator: no UTF-8 text holds the byte 0xff
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in *part {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The holder label key of a node: node names may be 253 characters long and hold dots, label
/// values and key names may not, so the key carries 16 hex digits of a hash of the name.
pub fn node_label(node: &str) -> String {
    format!("{NODE_LABEL_PREFIX}{:016x}", hash64(&[node.as_bytes()]))
}

/// The attachment label key of (containerID, ifname).
pub fn attachment_label(container_id: &str, ifname: &str) -> String {
    format!(
        "{ATTACHMENT_LABEL_PREFIX}{:016x}",
        hash64(&[container_id.as_bytes(), ifname.as_bytes()])
    )
}

/// The labels a block must carry, computed from its spec: the space hash, the index version, one
/// holder label per node (owner and every reservation's node) and one per attachment. Labels that are
/// not plumb's are kept.
pub fn index_labels(b: &IPBlock) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = b
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| {
            !k.starts_with(NODE_LABEL_PREFIX) && !k.starts_with(ATTACHMENT_LABEL_PREFIX)
        })
        .collect();
    labels.insert(SPACE_LABEL.into(), space_hash(&b.spec.space));
    labels.insert(INDEX_LABEL.into(), INDEX_VERSION.into());
    if !b.spec.node.is_empty() {
        labels.insert(node_label(&b.spec.node), String::new());
    }
    for a in b.spec.allocations.values() {
        if !a.node.is_empty() {
            labels.insert(node_label(&a.node), String::new());
        }
        labels.insert(attachment_label(&a.container_id, &a.ifname), String::new());
    }
    labels
}

/// Sets the block's labels to [`index_labels`]; true when they changed.
pub fn relabel(b: &mut IPBlock) -> bool {
    let want = index_labels(b);
    let changed = b.metadata.labels.as_ref() != Some(&want);
    b.metadata.labels = Some(want);
    changed
}

/// Whether `node` owns the block or holds a reservation in it (a block the node must relabel before
/// it trusts its label listings).
pub fn holds(b: &IPBlock, node: &str) -> bool {
    b.spec.node == node || b.spec.allocations.values().any(|a| a.node == node)
}
