//! plumb-ipam: whereabouts-compatible IP address management for CNI, with a crash-safe,
//! file-locked store whose per-operation cost does not grow with pool occupancy.

pub mod admin;
pub mod alloc;
pub mod backend;
pub mod config;
pub mod file_ops;
pub mod gc;
pub mod helper;
pub mod hint;
pub mod plugin;
pub mod range;
pub mod store;
