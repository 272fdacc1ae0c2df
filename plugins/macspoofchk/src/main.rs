//! `plumb-macspoofchk`: the MAC spoof check of plumb-bridge as a chained plugin, for any plugin that
//! puts a container behind a host veth (the reference bridge, ptp, ...). It reads the container MAC and
//! the host veth from `prevResult`, installs the same nftables chain plumb-bridge would, and passes
//! `prevResult` on unchanged.

use plumb_attach::cleanup::Cleanup;
use plumb_attach::firewall;
use plumb_attach::host::{Host, Real};
use plumb_attach::os::{enter_netns, open_netns, os};
use plumb_cni::{code, AddResult, CniError, CniResult, Plugin, Request};
use plumb_net::link::{format_mac, parse_mac};
use plumb_net::nl::Route;

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
        let mut host = Route::open().map_err(os("cannot open a netlink socket"))?;
        let path = pod.path().to_string();
        add(&mut Real::with_pod(&mut host, &mut pod), req, prev, &path)
    }

    /// Needs nothing of the config but its name, and nothing of the container: the chain is found by
    /// its derived name, so DEL succeeds whatever became of CNI_NETNS.
    fn del(&self, req: &Request) -> CniResult<()> {
        del(&mut Real::without_netlink(), req, self.name())
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        open_netns(req)?;
        check(&mut Real::without_netlink(), req)
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

/// ADD once CNI_NETNS is entered: the pair [`find_pair`] proves, then the chain on its host veth;
/// `prevResult` passed on unchanged.
fn add(h: &mut impl Host, req: &Request, prev: AddResult, pod_path: &str) -> CniResult<AddResult> {
    let (host_veth, mac) = find_pair(h, req, &prev, pod_path)?;
    let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
    h.add_spoofcheck(&req.conf.name, cid, ifname, &host_veth, mac)
        .map_err(os("cannot install the MAC spoof check"))?;
    Ok(prev)
}

/// DEL: the attachment's chain, found by its derived name; none is success.
fn del(h: &mut impl Host, req: &Request, plugin: &'static str) -> CniResult<()> {
    let mut sweep = Cleanup::new(plugin);
    sweep.run("spoofcheck", || {
        h.del_spoofcheck(&req.conf.name, &req.env.container_id, &req.env.ifname)
            .map_err(os("cannot remove the MAC spoof check"))
    });
    sweep.finish()
}

/// CHECK once CNI_NETNS is known to be a container's: the attachment's chain is there.
fn check(h: &mut impl Host, req: &Request) -> CniResult<()> {
    let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
    if h.has_spoofcheck(&req.conf.name, cid, ifname)
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

/// The host veth (an interface of prevResult without a sandbox that is a veth on this host whose
/// peer is `CNI_IFNAME` in CNI_NETNS, at `pod_path`) and the container interface's MAC, which must be
/// the one prevResult gives. prevResult is not trusted to name the right veth or MAC: a wrong or
/// forged one would put the check on another pod's traffic, or let this pod send from a MAC not its own.
fn find_pair(
    h: &mut impl Host,
    req: &Request,
    prev: &AddResult,
    pod_path: &str,
) -> CniResult<(String, [u8; 6])> {
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
    let mut veths = Vec::new();
    for candidate in prev.interfaces.iter().filter(|i| i.sandbox.is_none()) {
        if let Some(peer) = h
            .veth_peer(&candidate.name)
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
    let pod_nsid = h.pod_nsid().map_err(os("cannot identify CNI_NETNS"))?;
    let pod_link = h
        .pod_link(ifname)
        .map_err(os("cannot look into the container netns"))?;
    let pod_index = pod_link.as_ref().map(|l| l.index);
    let is_peer = |&(index, nsid): &(u32, Option<i32>)| {
        pod_nsid.is_some() && nsid == pod_nsid && Some(index) == pod_index
    };
    let Some((host_veth, _)) = veths.iter().find(|(_, peer)| is_peer(peer)) else {
        return Err(CniError::config(format!(
            "prevResult's host veth {first} is not the peer of the container interface {ifname} in CNI_NETNS {pod_path}{}; the check is installed only on the veth of this container: give the prevResult of this attachment",
            if pod_index.is_none() { format!(" (the container has no {ifname})") } else { String::new() }
        )));
    };
    match pod_link.and_then(|l| l.mac) {
        Some(have) if have != mac => Err(CniError::config(format!(
            "prevResult MAC {mac_text} of {ifname} is not the MAC {} the container interface has; the check would let the container send only from a MAC not its own: give the prevResult of this attachment (after any plugin that changed the MAC)",
            format_mac(&have)
        ))),
        _ => Ok((host_veth.clone(), mac)),
    }
}

fn main() {
    std::process::exit(plumb_cni::skel::run_process(&MacSpoofChk));
}

#[cfg(test)]
mod tests;
