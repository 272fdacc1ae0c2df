//! `plumb-bridge --gc-uplinks [--remove]`: lists the bridges and uplink VLAN interfaces plumb made (alias
//! [`MARK`]`<uplink>`) that no attachment uses any more, and removes them with `--remove`. Run by a
//! person (or a node job): DEL leaves these pieces, since other pods share them.
//!
//! A piece is unused when its bridge has no port but uplink pieces (marked interfaces, or the uplink the
//! bridge's mark names). Removal re-checks under the bridge lock (or, for a VLAN interface on no bridge,
//! under its port lock), so an ADD running at the same time either finished first (and the piece is in
//! use) or comes after and makes the piece again. Bridges and interfaces plumb did not make are never
//! removed; the NIC of the one-bridge layout is released (by the kernel) when its marked bridge goes.

use crate::host::BridgeHost;
use crate::uplink::{lock_port, MARK};
use plumb_attach::lock::lock_bridge;
use plumb_cni::{CniError, CniResult};
use plumb_net::link::Link;
use plumb_net::nl::Route;

/// One unused piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unused {
    /// A bridge plumb made, with the marked VLAN interfaces that are its ports.
    Bridge {
        /// The bridge.
        name: String,
        /// The uplink its mark names.
        uplink: String,
        /// Its marked VLAN interface ports (removed with it).
        vlan_ifs: Vec<String>,
    },
    /// A VLAN interface plumb made, on no bridge or on an unused bridge plumb did not make.
    VlanIf {
        /// The interface.
        name: String,
        /// Its VLAN id.
        vid: u16,
        /// The uplink its mark names.
        uplink: String,
    },
}

fn mark_of(l: &Link) -> Option<&str> {
    l.alias.as_deref().and_then(|a| a.strip_prefix(MARK))
}

/// Whether every port of `bridge` is an uplink piece (no attachment uses it).
fn bridge_unused(links: &[Link], bridge: &Link) -> bool {
    let uplink = mark_of(bridge);
    links
        .iter()
        .filter(|l| l.controller == Some(bridge.index))
        .all(|p| mark_of(p).is_some() || Some(p.name.as_str()) == uplink)
}

/// The unused pieces among `links` (one namespace's links).
pub fn find_unused(links: &[Link]) -> Vec<Unused> {
    let mut out = Vec::new();
    for b in links.iter().filter(|l| l.kind.as_deref() == Some("bridge")) {
        let marked_ports: Vec<&Link> = links
            .iter()
            .filter(|l| l.controller == Some(b.index) && mark_of(l).is_some())
            .collect();
        if (mark_of(b).is_none() && marked_ports.is_empty()) || !bridge_unused(links, b) {
            continue;
        }
        match mark_of(b) {
            Some(up) => out.push(Unused::Bridge {
                name: b.name.clone(),
                uplink: up.to_string(),
                vlan_ifs: marked_ports.iter().map(|p| p.name.clone()).collect(),
            }),
            None => out.extend(marked_ports.iter().map(|p| vlan_if(p))),
        }
    }
    out.extend(
        links
            .iter()
            .filter(|l| l.controller.is_none() && l.kind.as_deref() == Some("vlan"))
            .filter(|l| mark_of(l).is_some())
            .map(vlan_if),
    );
    out
}

fn vlan_if(l: &Link) -> Unused {
    Unused::VlanIf {
        name: l.name.clone(),
        vid: l.vlan_id.unwrap_or(0),
        uplink: mark_of(l).unwrap_or_default().to_string(),
    }
}

/// One line per piece, as the command prints it.
pub fn describe(u: &Unused) -> String {
    match u {
        Unused::Bridge {
            name,
            uplink,
            vlan_ifs,
        } if vlan_ifs.is_empty() => format!("bridge {name} (uplink {uplink})"),
        Unused::Bridge {
            name,
            uplink,
            vlan_ifs,
        } => format!(
            "bridge {name} (uplink {uplink}) with {}",
            vlan_ifs.join(", ")
        ),
        Unused::VlanIf { name, vid, uplink } => {
            format!("vlan interface {name} (VLAN {vid} on {uplink})")
        }
    }
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> CniError + '_ {
    plumb_attach::os::os(what)
}

/// Removes one piece after re-checking, under its lock, that it is still unused; `Ok(false)` when it
/// is in use again (or gone).
pub fn remove(nl: &mut dyn BridgeHost, u: &Unused) -> CniResult<bool> {
    let (name, _lock) = match u {
        Unused::Bridge { name, .. } => (name, lock_bridge(name)?),
        Unused::VlanIf { name, .. } => (name, lock_port(name)?),
    };
    let links = nl.links().map_err(io("cannot list links"))?;
    let Some(now) = find_unused(&links).into_iter().find(|n| match n {
        Unused::Bridge { name: n, .. } | Unused::VlanIf { name: n, .. } => n == name,
    }) else {
        return Ok(false);
    };
    let mut names = match &now {
        Unused::Bridge { vlan_ifs, .. } => vlan_ifs.clone(),
        Unused::VlanIf { .. } => Vec::new(),
    };
    names.push(name.clone());
    for n in names {
        nl.delete_link_by_name(&n)
            .map_err(io("cannot delete an unused uplink piece"))?;
    }
    Ok(true)
}

/// The command: prints the unused pieces (`unused ...`), and with `--remove` removes them (`removed
/// ...`). Returns the exit code: 0, 1 when a removal failed, 2 on bad arguments.
pub fn main(args: &[String]) -> i32 {
    let remove_them = match args {
        [] => false,
        [a] if a == "--remove" => true,
        _ => {
            eprintln!("usage: plumb-bridge --gc-uplinks [--remove]");
            return 2;
        }
    };
    let run = || -> CniResult<i32> {
        let mut nl = Route::open().map_err(io("cannot open a netlink socket"))?;
        let unused = find_unused(&nl.links().map_err(io("cannot list links"))?);
        let mut status = 0;
        for u in &unused {
            if !remove_them {
                println!("unused {}", describe(u));
                continue;
            }
            match remove(&mut nl, u) {
                Ok(true) => println!("removed {}", describe(u)),
                Ok(false) => println!("in use again, kept {}", describe(u)),
                Err(e) => {
                    eprintln!("plumb-bridge: cannot remove {}: {}", describe(u), e.msg);
                    status = 1;
                }
            }
        }
        Ok(status)
    };
    match run() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("plumb-bridge: --gc-uplinks: {}", e.msg);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(index: u32, name: &str, kind: &str, controller: Option<u32>, alias: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: Some(kind.into()),
            mtu: 1500,
            mac: None,
            controller,
            up: true,
            lower_up: true,
            promisc: false,
            vlan_filtering: None,
            alias: alias.map(str::to_string),
            parent: None,
            vlan_id: (kind == "vlan").then_some(2003),
        }
    }

    #[test]
    fn only_marked_pieces_without_attachments() {
        let m = "plumb-uplink:up0";
        let links = vec![
            l(1, "up0", "veth", Some(10), None),
            l(10, "brtrunk", "bridge", None, Some(m)),
            l(2, "up0.2003", "vlan", Some(11), Some(m)),
            l(11, "br2003", "bridge", None, Some(m)),
            l(3, "up0.2004", "vlan", Some(12), Some(m)),
            l(12, "br2004", "bridge", None, Some(m)),
            l(4, "plb0123456789ab", "veth", Some(12), None),
            l(5, "up0.2005", "vlan", None, Some(m)),
            l(6, "up0.2006", "vlan", Some(13), Some(m)),
            l(13, "operbr", "bridge", None, None),
            l(7, "up0.7", "vlan", None, None),
            l(14, "emptyop", "bridge", None, None),
        ];
        let got: Vec<String> = find_unused(&links).iter().map(describe).collect();
        assert_eq!(
            got,
            vec![
                "bridge brtrunk (uplink up0)",
                "bridge br2003 (uplink up0) with up0.2003",
                "vlan interface up0.2006 (VLAN 2003 on up0)",
                "vlan interface up0.2005 (VLAN 2003 on up0)",
            ]
        );
    }
}
