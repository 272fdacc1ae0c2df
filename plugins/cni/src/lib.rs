//! The CNI protocol for plumb plugins: environment, network configuration, typed results with
//! version conversion, errors with spec codes, and delegation to IPAM plugins. No netlink here.

pub mod error;
pub mod result;
pub mod version;

pub use error::{code, CniError, CniResult};
pub use version::Version;
