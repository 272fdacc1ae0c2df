//! plumb-ipam's Kubernetes store: reservations kept in `IPBlock` objects that nodes claim, written
//! with optimistic concurrency, no leader election and no cluster-wide lock; its reconcile and admin
//! commands; and the `plumb-ipam-kube` binary, which plumb-ipam runs for Kubernetes-store configs and
//! those commands. plumb-ipam itself does not depend on this crate.

pub mod admin;
pub mod blocks;
pub mod client;
pub mod crd;
pub mod geometry;
pub mod labels;
pub mod nodes;
pub mod ops;
pub mod plan;
pub mod positions;
pub mod reconcile;
pub mod store;
