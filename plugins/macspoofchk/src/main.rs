//! `plumb-macspoofchk`: the MAC spoof check of plumb-bridge as a chained plugin, for any plugin that
//! puts a container behind a host veth (the reference bridge, ptp, ...). It reads the container MAC and
//! the host veth from `prevResult`, installs the same nftables chain plumb-bridge would, and passes
//! `prevResult` on unchanged.

use plumb_attach::cleanup::Cleanup;
use plumb_attach::firewall;
use plumb_attach::os::{enter_netns, open_netns, os};
use plumb_cni::{code, AddResult, CniError, CniResult, Plugin, Request};
use plumb_net::link::{self, parse_mac};
use plumb_net::netns;
use plumb_net::nl::Route;
use plumb_net::session::Session;

struct MacSpoofChk;

impl Plugin for MacSpoofChk {
    fn name(&self) -> &'static str {
        "plumb-macspoofchk"
    }

    fn about(&self) -> plumb_cni::cli::About {
        plumb_cni::cli::About::new(
            self.name(),
            "the MAC spoof check of plumb-bridge as a chained plugin, after any veth-based plugin",
            "docs/bridge.md (macspoofchk); README.md section \"plumb-macspoofchk config\"",
        )
    }

    fn add(&self, req: &Request) -> CniResult<AddResult> {
        let prev = prev_result(req)?;
        // The container must exist and not be the host: the check belongs to a container's veth.
        let mut pod = enter_netns(req)?;
        let (host_veth, mac) = find_pair(req, &prev, &mut pod)?;
        let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
        firewall::add_spoofcheck(&req.conf.name, cid, ifname, &host_veth, mac)
            .map_err(os("cannot install the MAC spoof check"))?;
        Ok(prev)
    }

    /// Needs nothing of the config but its name, and nothing of the container: the chain is found by
    /// its derived name, so DEL succeeds whatever became of CNI_NETNS.
    fn del(&self, req: &Request) -> CniResult<()> {
        let mut sweep = Cleanup::new(self.name());
        sweep.run("spoofcheck", || {
            firewall::del_spoofcheck(&req.conf.name, &req.env.container_id, &req.env.ifname)
                .map_err(os("cannot remove the MAC spoof check"))
        });
        sweep.finish()
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        open_netns(req)?;
        let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
        if firewall::has_spoofcheck(&req.conf.name, cid, ifname)
            .map_err(os("cannot read nftables"))?
        {
            Ok(())
        } else {
            Err(CniError::new(
                code::CHECK_MISMATCH,
                format!("the MAC spoof check of container {cid} interface {ifname} is missing"),
            ))
        }
    }

    fn status(&self, _: &Request) -> CniResult<()> {
        Ok(())
    }

    fn gc(&self, req: &Request) -> CniResult<()> {
        firewall::gc_invalid(&req.conf).map_err(os("cannot collect stale nftables chains"))?;
        Ok(())
    }
}

fn prev_result(req: &Request) -> CniResult<AddResult> {
    req.conf.prev_result.clone().ok_or_else(|| {
        CniError::config("plumb-macspoofchk is a chained plugin: it needs \"prevResult\" from the plugin before it in the list")
    })
}

/// The host veth (an interface of prevResult without a sandbox that is a veth on this host whose
/// peer is `CNI_IFNAME` in CNI_NETNS) and the container interface's MAC. prevResult is not trusted
/// to name the right veth: a wrong or forged one would put the check on another pod's traffic.
fn find_pair(req: &Request, prev: &AddResult, pod: &mut Session) -> CniResult<(String, [u8; 6])> {
    let ifname = &req.env.ifname;
    let container = prev
        .interfaces
        .iter()
        .find(|i| &i.name == ifname && i.sandbox.is_some())
        .ok_or_else(|| {
            CniError::config(format!(
                "prevResult has no interface {ifname} inside a sandbox"
            ))
        })?;
    let mac_text = container
        .mac
        .as_deref()
        .ok_or_else(|| CniError::config(format!("prevResult gives no MAC for {ifname}")))?;
    let mac = parse_mac(mac_text).ok_or_else(|| {
        CniError::config(format!(
            "prevResult MAC {mac_text:?} of {ifname} is not a MAC address"
        ))
    })?;
    let mut host = Route::open().map_err(os("cannot open a netlink socket"))?;
    let mut veths = Vec::new();
    for candidate in prev.interfaces.iter().filter(|i| i.sandbox.is_none()) {
        if let Some(peer) = link::veth_peer(&mut host, &candidate.name)
            .map_err(os("cannot look up a prevResult interface"))?
        {
            veths.push((candidate.name.clone(), peer));
        }
    }
    let Some((first, _)) = veths.first() else {
        return Err(CniError::config("prevResult names no host-side veth (an interface without a sandbox); chain plumb-macspoofchk after a veth-based plugin such as bridge or ptp"));
    };
    // Asked after the veths were read: reading a veth whose peer is in the pod assigns the pod's
    // namespace its ID here, if it had none.
    let pod_nsid = netns::nsid(&mut host, pod.netns()).map_err(os("cannot identify CNI_NETNS"))?;
    let pod_index = link::by_name(pod.route(), ifname)
        .map_err(os("cannot look into the container netns"))?
        .map(|l| l.index);
    let is_peer = |&(index, nsid): &(u32, Option<i32>)| {
        pod_nsid.is_some() && nsid == pod_nsid && Some(index) == pod_index
    };
    match veths.iter().find(|(_, peer)| is_peer(peer)) {
        Some((host_veth, _)) => Ok((host_veth.clone(), mac)),
        None => Err(CniError::config(format!(
            "prevResult's host veth {first} is not the peer of the container interface {ifname} in CNI_NETNS {}{}; the check is installed only on the veth of this container: give the prevResult of this attachment",
            pod.path(),
            if pod_index.is_none() { format!(" (the container has no {ifname})") } else { String::new() }
        ))),
    }
}

fn main() {
    std::process::exit(plumb_cni::skel::run_process(&MacSpoofChk));
}
