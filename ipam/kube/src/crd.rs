//! The `IPBlock` custom resource (`plumb.dev/v1alpha1`, cluster-scoped): one aligned block of addresses
//! of a space (a `network_name`), claimed by a node, with the reservations made inside it.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// API group of plumb's resources.
pub const GROUP: &str = "plumb.dev";
/// Label carrying a hash of the block's space, used to list one space's blocks.
pub const SPACE_LABEL: &str = "plumb.dev/space-hash";
/// Label (value `v1`) saying the block carries the holder and attachment labels below, kept by every
/// write of this plumb. Blocks without it were written by an older plumb.
pub const INDEX_LABEL: &str = "plumb.dev/index";
/// Prefix of the holder labels: `plumb.dev/node-<16 hex digits of the node name's hash>` (value `""`)
/// for the owner and for every node holding a reservation in the block. A node lists its own blocks
/// (and those it borrowed from) with this label; `spec.node` and the allocations' `node` stay the
/// truth, so two names with the same hash only list a little more.
pub const NODE_LABEL_PREFIX: &str = "plumb.dev/node-";
/// Prefix of the attachment labels: `plumb.dev/att-<16 hex digits of the hash of containerID and
/// ifname>` (value `""`) for every attachment holding a reservation in the block (DEL and CHECK find
/// an attachment's blocks with it, wherever they are).
pub const ATTACHMENT_LABEL_PREFIX: &str = "plumb.dev/att-";
/// Value of [`INDEX_LABEL`].
pub const INDEX_VERSION: &str = "v1";

/// A block of addresses and its reservations.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "plumb.dev",
    version = "v1alpha1",
    kind = "IPBlock",
    plural = "ipblocks",
    shortname = "ipb",
    printcolumn = r#"{"name":"Space","type":"string","jsonPath":".spec.space"}"#,
    printcolumn = r#"{"name":"Range","type":"string","jsonPath":".spec.cidr"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Used","type":"integer","jsonPath":".spec.used"}"#,
    printcolumn = r#"{"name":"Free","type":"integer","jsonPath":".spec.free"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPBlockSpec {
    /// The space (`network_name`, or `_default`) the block belongs to.
    pub space: String,
    /// The block, e.g. `10.1.0.64/26`.
    pub cidr: String,
    /// The node that claimed the block and allocates from it first; empty once its node is gone.
    pub node: String,
    /// Reservations held in the block.
    pub used: u32,
    /// Addresses of the block not reserved (the block's own count; ranges may allow fewer).
    pub free: u32,
    /// Reservations by offset inside the block (decimal string).
    #[serde(default)]
    pub allocations: BTreeMap<String, Allocation>,
}

/// One reservation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// CNI network name that made it.
    pub network: String,
    /// Node the pod runs on.
    pub node: String,
    /// Pod namespace, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// Pod name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Pod UID, when known (reconcile frees by UID, so a re-created pod with the same name is safe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "podUID")]
    pub pod_uid: Option<String>,
    /// Unix time of the reservation.
    pub created: u64,
}

impl Allocation {
    /// Whether it belongs to an attachment.
    pub fn is_for(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }
}
