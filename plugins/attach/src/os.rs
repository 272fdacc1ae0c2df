//! The helpers every module of every plugin uses: an OS error as a CNI error, and CNI_NETNS opened,
//! classified and entered.

use plumb_cni::{code, CniError, CniResult, Request};
use plumb_net::netns::{Netns, OpenError};
use plumb_net::session::Session;
use std::io;

/// Turns a netlink or OS error into a CNI error (I/O failure, code 5) with what was being done.
pub fn os(what: &str) -> impl FnOnce(io::Error) -> CniError + '_ {
    move |e| CniError::new(code::IO_FAILURE, what.to_string()).caused_by(e)
}

/// Opens CNI_NETNS for ADD and CHECK. A path that is no network namespace (missing, an empty file
/// left by `umount`, a directory, another kind of file) is code 3, the container does not exist; the
/// host's own network namespace is code 4, an invalid CNI_NETNS (see docs/bridge.md).
pub fn open_netns(req: &Request) -> CniResult<Netns> {
    let path = req.env.netns.clone().unwrap_or_default();
    let ns = Netns::open(&path).map_err(|e| match e {
        OpenError::Gone { why, .. } => CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("CNI_NETNS {path:?} is not a network namespace ({why}): the container is gone or the path is wrong"),
        ),
        OpenError::Io(e) => CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("CNI_NETNS {path} cannot be opened"),
        )
        .caused_by(e),
    })?;
    if ns.is_host().map_err(os("cannot examine CNI_NETNS"))? {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_NETNS {path} is the host's own network namespace; give the container's network namespace (plumbing a container interface into the host namespace is never meant)"),
        ));
    }
    Ok(ns)
}

/// Opens CNI_NETNS as [`open_netns`] does and enters it: the request's one session in the pod's
/// namespace (one `setns`, its rtnetlink socket, a worker for sysctls; see `plumb_net::session`).
pub fn enter_netns(req: &Request) -> CniResult<Session> {
    let ns = open_netns(req)?;
    let path = ns.path().to_string();
    Session::enter(ns).map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            format!("cannot enter the network namespace CNI_NETNS {path}"),
        )
        .caused_by(e)
    })
}
