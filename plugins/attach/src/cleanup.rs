//! DEL as a best-effort sweep shared by plumb-bridge and plumb-vxlan: every step runs even when an
//! earlier one failed (an nftables failure must not keep the address reserved), each failed step is
//! logged on stderr, and one CNI error listing what is left is returned at the end. Each step treats
//! "already gone" as success, so a step that fails means its object really is still there.
//!
//! With `PLUMB_FAILPOINT=del-<step>` a step fails without running (see [`plumb_cni::failpoint`]), so
//! black-box tests can prove the other steps still run.

use crate::attach::delete_host_veth_with;
use crate::host::Host;
use crate::os::os;
use plumb_cni::{failpoint, CniError, CniResult, Request};
use plumb_net::netns::{Netns, OpenError};

/// The steps of one DEL and what failed among them.
#[derive(Debug)]
pub struct Cleanup {
    plugin: &'static str,
    failed: Vec<(String, CniError)>,
}

impl Cleanup {
    /// A sweep for the plugin named `plugin` (the prefix of its log lines).
    pub fn new(plugin: &'static str) -> Cleanup {
        Cleanup {
            plugin,
            failed: Vec::new(),
        }
    }

    /// Runs one step; a failure is logged and remembered, never returned.
    pub fn run(&mut self, step: &str, work: impl FnOnce() -> CniResult<()>) {
        let outcome = failpoint::check(&format!("del-{step}")).and_then(|()| work());
        if let Err(e) = outcome {
            self.fail(step, e);
        }
    }

    /// Records a step that failed outside [`Cleanup::run`].
    pub fn fail(&mut self, step: &str, e: CniError) {
        eprintln!("{}: DEL step {step:?} failed: {e}", self.plugin);
        plumb_cni::log::failed_step(&format!("DEL {step}"), &e.to_string());
        self.failed.push((step.to_string(), e));
    }

    /// Ok when every step succeeded; else one error with the first failure's code that names every
    /// failed step and what it said.
    pub fn finish(self) -> CniResult<()> {
        let Some((_, first)) = self.failed.first() else {
            return Ok(());
        };
        let code = first.code;
        let list = self
            .failed
            .iter()
            .map(|(step, e)| format!("{step}: {}", e.msg))
            .collect::<Vec<_>>()
            .join("; ");
        let mut err = CniError::new(
            code,
            format!(
                "DEL ran every step but {} failed, so something of this attachment is left ({list}); the other steps are done, and DEL can be repeated",
                self.failed.len()
            ),
        );
        for (_, e) in self.failed {
            err.details.extend(e.details);
        }
        Err(err)
    }
}

/// The pod's namespace for DEL, when there is a pod side to clean: `None` when CNI_NETNS is unset,
/// empty, no longer a network namespace (an unmounted or deleted one) or the host's own namespace
/// (DEL then touches nothing inside it). A namespace that cannot be examined is a failed step.
pub fn pod_netns(req: &Request, sweep: &mut Cleanup) -> Option<Netns> {
    let path = req.env.netns.as_deref().filter(|p| !p.is_empty())?;
    match Netns::open(path) {
        Ok(ns) => match ns.is_host() {
            Ok(false) => Some(ns),
            Ok(true) => None,
            Err(e) => {
                sweep.fail(
                    "pod netns",
                    CniError::io(format!("cannot examine CNI_NETNS {path}"), &e),
                );
                None
            }
        },
        Err(OpenError::Gone { .. }) => None,
        Err(OpenError::Io(e)) => {
            sweep.fail(
                "pod netns",
                CniError::io(format!("cannot open CNI_NETNS {path}"), &e),
            );
            None
        }
    }
}

/// The engine's host-side DEL steps, each one step of `sweep`: "host veth" (its peer in the pod goes
/// with it; skipped when `h` has no netlink, which the plugin reported as its own step), "spoofcheck"
/// and, with `masquerade`, "masquerade". Nothing there is success for each.
pub fn del_port(sweep: &mut Cleanup, h: &mut impl Host, req: &Request, masquerade: bool) {
    let (net, cid, ifname) = (&req.conf.name, &req.env.container_id, &req.env.ifname);
    if h.has_netlink() {
        sweep.run("host veth", || delete_host_veth_with(h, cid, ifname));
    }
    sweep.run("spoofcheck", || {
        h.del_spoofcheck(net, cid, ifname)
            .map_err(os("cannot remove the MAC spoof check"))
    });
    if masquerade {
        sweep.run("masquerade", || {
            h.del_masquerade(net, cid, ifname)
                .map_err(os("cannot remove the masquerade rules"))
        });
    }
}

/// The IPAM step of DEL ("ipam"), last, after the plugin's own host steps: the reservation is
/// released even when an earlier step failed.
pub fn del_ipam(sweep: &mut Cleanup, h: &mut impl Host, req: &Request, ipam: Option<&str>) {
    if let Some(ipam) = ipam {
        sweep.run("ipam", || h.ipam_del(ipam, req));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_runs_and_the_error_lists_the_failures() {
        let mut sweep = Cleanup::new("plumb-test");
        let mut ran = Vec::new();
        sweep.run("one", || {
            ran.push(1);
            Err(CniError::new(5, "nft said no").caused_by("EPERM"))
        });
        sweep.run("two", || {
            ran.push(2);
            Ok(())
        });
        sweep.run("three", || {
            ran.push(3);
            Err(CniError::new(11, "locked"))
        });
        assert_eq!(ran, vec![1, 2, 3]);
        let e = sweep.finish().unwrap_err();
        assert_eq!(e.code, 5);
        assert!(e.msg.contains("2 failed"), "{}", e.msg);
        assert!(e.msg.contains("one: nft said no"), "{}", e.msg);
        assert!(e.msg.contains("three: locked"), "{}", e.msg);
        assert!(!e.msg.contains("two"), "{}", e.msg);
        assert_eq!(e.details, vec!["EPERM".to_string()]);
        assert!(Cleanup::new("plumb-test").finish().is_ok());
    }
}
