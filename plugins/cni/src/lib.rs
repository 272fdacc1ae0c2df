//! The CNI protocol for plumb plugins: environment, network configuration, typed results with
//! version conversion, errors with spec codes, delegation to IPAM plugins, and the file lock every plugin shares. No
//! netlink here.

pub mod args;
pub mod cli;
pub mod config;
pub mod deadline;
pub mod delegate;
pub mod env;
pub mod error;
pub mod failpoint;
pub mod lock;
pub mod log;
pub mod policy;
pub mod result;
pub mod skel;
pub mod version;

pub use config::NetConf;
pub use env::{Command, Env};
pub use error::{code, CniError, CniResult};
pub use result::{AddResult, Cidr, CidrError, Dns, Interface, IpConfig, Route};
pub use skel::{Plugin, Request};
pub use version::Version;
