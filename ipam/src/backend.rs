//! The `Store` trait: what the plugin's ADD, DEL, CHECK, STATUS and GC ask of a store. The file store
//! (`FileOps` in `file_ops.rs`) implements it here; the Kubernetes store implements it in the
//! plumb-ipam-kube crate. The plugin picks one per request from the config's `store` and talks only
//! to it.

use crate::alloc::Attachment;
use crate::config::{IpamConfig, Location};
use plumb_cni::{CniResult, NetConf};
use std::collections::HashSet;
use std::net::IpAddr;

/// One store of reservations, as the CNI commands use it.
pub trait Store {
    /// ADD: one address per range of `cfg` for `who` (idempotent), the static requests where given.
    fn add(&self, cfg: &IpamConfig, who: &Attachment, statics: &[IpAddr])
        -> CniResult<Vec<IpAddr>>;

    /// DEL: every reservation of (`cid`, `ifname`) at `loc`, read from the store location alone (never
    /// the ranges, which ADD may now refuse); `conf` is the whole config, for what a store keeps in step
    /// when it still parses. Nothing reserved is success.
    fn del(&self, loc: &Location, conf: &NetConf, cid: &str, ifname: &str) -> CniResult<()>;

    /// CHECK: the addresses the store reserves for (`cid`, `ifname`); code 102 when it reserves nothing
    /// or a reservation is not intact.
    fn reserved(&self, cfg: &IpamConfig, cid: &str, ifname: &str) -> CniResult<Vec<IpAddr>>;

    /// STATUS: code 50 when the store cannot be reached or a range is full.
    fn status(&self, cfg: &IpamConfig) -> CniResult<()>;

    /// GC: releases the reservations of `network` whose attachment is not in `valid`; how many were
    /// freed.
    fn gc(
        &self,
        cfg: &IpamConfig,
        network: &str,
        valid: &HashSet<(&str, &str)>,
    ) -> CniResult<usize>;
}
