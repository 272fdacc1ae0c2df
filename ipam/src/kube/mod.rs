//! The Kubernetes store: reservations kept in `IPBlock` objects that nodes claim, written with
//! optimistic concurrency, no leader election and no cluster-wide lock.

pub mod blocks;
pub mod crd;
pub mod nodes;
pub mod ops;
pub mod reconcile;
pub mod store;
