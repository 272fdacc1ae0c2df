//! The kernel floor of mode `bridge`: the kernel operations a bridge ADD and DEL must issue, made from
//! the bench process itself through plumb-net, with no plugin logic, no exec, no config parsing, no
//! IPAM and no lock.
//!
//! ADD (timed from opening the pod namespace to the last ACK): open the pod netns, create the veth
//! pair with its peer born in the pod netns (`RTM_NEWLINK`), look the host end up by name, make it a
//! port of the bridge, set it up; then, on a thread that entered the pod netns (one `setns`) with one
//! rtnetlink socket opened there: look `eth0` up, add its address, set it up, add the default route
//! via the gateway. DEL: look the host veth up by name and delete it (the peer goes with it).
//!
//! Left out because a plugin may skip them or they are not kernel work a plugin must do: the sysctls
//! the reference writes (`accept_ra`, `accept_dad`, `arp_notify`), the gateway address check (the
//! floor puts the gateway on the bridge once, at creation), the result's re-reads of the links.
//! The node-side rtnetlink socket is opened once (a plugin opens one per process; that is about 10 µs).

use plumb_net::addr::{add_address, add_route_global, RouteSpec};
use plumb_net::link::{self, Link, VethSpec};
use plumb_net::netns::Netns;
use plumb_net::nl::Route;
use plumb_net::session::Session;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The floor's subnet (plumb-ipam uses 10.31/16, host-local 10.32/16).
const SUBNET: [u8; 2] = [10, 33];
/// Its prefix length.
const PREFIX: u8 = 16;
/// The pod-side interface name.
const IFNAME: &str = "eth0";

/// One floor node: a bridge with the gateway address in a node namespace the bench created.
pub struct Floor {
    /// An rtnetlink socket inside the node namespace.
    nl: Route,
    /// The bridge, up, with the gateway address.
    bridge: Link,
    /// Attachments made so far (names the host veths and picks the pod address).
    made: u32,
}

/// Turns an OS error into the bench's error, saying what was being done.
fn err(what: &'static str) -> impl FnOnce(std::io::Error) -> String {
    move |e| format!("floor: {what}: {e}")
}

/// Runs `binary` with `CNI_COMMAND=VERSION` (a process start and a few µs of work) and checks it answered.
fn version_call(binary: &Path) -> Result<(), String> {
    let out = Command::new(binary)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("floor: cannot run {}: {e}", binary.display()))?;
    if !out.status.success() || !out.stdout.starts_with(b"{") {
        return Err(format!("floor: {} VERSION failed", binary.display()));
    }
    Ok(())
}

/// The gateway address (`10.33.0.1`).
fn gateway() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(SUBNET[0], SUBNET[1], 0, 1))
}

impl Floor {
    /// Opens node namespace `netns` (already created), makes bridge `bridge` there, sets it up and
    /// gives it the gateway address (un-timed setup).
    pub fn create(netns: &str, bridge: &str) -> Result<Floor, String> {
        let node = Netns::open(&format!("/run/netns/{netns}"))
            .map_err(|e| format!("floor: cannot open node netns {netns}: {e}"))?;
        // A netlink socket stays in the namespace it was created in, whichever thread uses it later:
        // the session's socket outlives the session (and its worker thread).
        let mut nl = Session::enter(node)
            .and_then(|s| s.run(|| Route::open().map(Route::into_fd)))
            .map(Route::from_fd)
            .map_err(err("cannot open a netlink socket in the node"))?;
        link::create_bridge(&mut nl, bridge, None, false)
            .map_err(err("cannot create the bridge"))?;
        let br = link::by_name(&mut nl, bridge)
            .map_err(err("cannot look up the bridge"))?
            .ok_or_else(|| format!("floor: bridge {bridge} vanished"))?;
        link::set_up(&mut nl, &br, true).map_err(err("cannot set the bridge up"))?;
        add_address(&mut nl, br.index, gateway(), PREFIX, false)
            .map_err(err("cannot add the gateway address"))?;
        Ok(Floor {
            nl,
            bridge: br,
            made: 0,
        })
    }

    /// One ADD's kernel work into pod namespace `pod`; returns its host veth name and the time taken.
    /// With `execs`, the first binary is run (answering VERSION) before the work and the second after
    /// the veth pair, both timed: the process starts of a plugin and its IPAM, without their work.
    /// With `reread`, the host veth is looked up once more after the pod side is up, timed.
    pub fn add(
        &mut self,
        pod: &str,
        execs: Option<&[PathBuf; 2]>,
        reread: bool,
    ) -> Result<(String, Duration), String> {
        self.made += 1;
        let n = self.made + 1;
        let host_name = format!("pf{:x}", self.made);
        let ip = IpAddr::V4(Ipv4Addr::new(SUBNET[0], SUBNET[1], (n >> 8) as u8, n as u8));
        let start = Instant::now();
        if let Some([plugin, _]) = execs {
            version_call(plugin)?;
        }
        let ns = Netns::open(&format!("/run/netns/{pod}"))
            .map_err(|e| format!("floor: cannot open pod netns {pod}: {e}"))?;
        // One entry into the pod per ADD, as a plugin request makes it.
        let mut pod_ns = Session::enter(ns).map_err(err("cannot enter the pod netns"))?;
        let spec = VethSpec {
            host_name: &host_name,
            peer_name: IFNAME,
            peer_netns_fd: pod_ns.netns().fd(),
            mtu: None,
            peer_mac: None,
            host_mac: None,
        };
        link::create_veth(&mut self.nl, &spec).map_err(err("cannot create the veth pair"))?;
        if let Some([_, ipam]) = execs {
            version_call(ipam)?;
        }
        let host = link::by_name(&mut self.nl, &host_name)
            .map_err(err("cannot look up the host veth"))?
            .ok_or_else(|| format!("floor: host veth {host_name} vanished"))?;
        link::set_controller(&mut self.nl, &host, &self.bridge)
            .map_err(err("cannot attach the host veth"))?;
        link::set_up(&mut self.nl, &host, true).map_err(err("cannot set the host veth up"))?;
        let c = pod_ns.route();
        (|| -> std::io::Result<()> {
            let l = link::by_name(c, IFNAME)?
                .ok_or_else(|| std::io::Error::other("eth0 missing in the pod"))?;
            add_address(c, l.index, ip, PREFIX, false)?;
            link::set_up(c, &l, true)?;
            add_route_global(
                c,
                &RouteSpec {
                    dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    prefix: 0,
                    gw: Some(gateway()),
                    oif: l.index,
                    mtu: None,
                    priority: None,
                },
            )
        })()
        .map_err(err("cannot configure the pod side"))?;
        if reread {
            link::by_name(&mut self.nl, &host_name)
                .map_err(err("cannot read the host veth back"))?;
        }
        Ok((host_name, start.elapsed()))
    }

    /// One DEL's kernel work: the host veth looked up by name and deleted; returns the time taken.
    pub fn del(&mut self, host_name: &str) -> Result<Duration, String> {
        let start = Instant::now();
        link::delete_by_name(&mut self.nl, host_name)
            .map_err(err("cannot delete the host veth"))?;
        Ok(start.elapsed())
    }

    /// Ports on the floor's bridge (one link dump, un-timed).
    pub fn ports(&mut self) -> Result<usize, String> {
        let links = link::list(&mut self.nl).map_err(err("cannot list links"))?;
        Ok(links
            .iter()
            .filter(|l| l.controller == Some(self.bridge.index))
            .count())
    }
}
