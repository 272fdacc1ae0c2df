//! plumb-ipam: whereabouts-compatible IP address management for CNI, with a crash-safe,
//! file-locked store whose per-operation cost does not grow with pool occupancy.

pub mod admin;
pub mod alloc;
pub mod config;
pub mod gc;
pub mod helper;
pub mod hint;
pub mod kube;
pub mod plugin;
pub mod range;
pub mod store;
