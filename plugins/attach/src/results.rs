//! Checks on the IPAM result before anything in the container is configured, so the result ADD returns
//! is what the container really gets: one next hop per destination (the kernel keeps only the first
//! of two routes to one prefix), a gateway for `isGateway` to put on the bridge, and no pod address
//! that is also the gateway. Each failure is an invalid-config error (code 7) naming what conflicts.

use plumb_cni::result::{Cidr, Route as ResultRoute};
use plumb_cni::{AddResult, CniError, CniResult};
use std::net::IpAddr;

/// The next hop a route gets in the container: its own `gw`, else the first gateway of its family
/// among the result's addresses (as the container side installs it), else none (on-link).
pub fn next_hop(r: &AddResult, route: &ResultRoute) -> Option<IpAddr> {
    route.gw.or_else(|| {
        r.ips
            .iter()
            .filter(|i| i.address.addr.is_ipv4() == route.dst.addr.is_ipv4())
            .find_map(|i| i.gateway)
    })
}

fn show(r: &AddResult, route: &ResultRoute) -> String {
    match (route.gw, next_hop(r, route)) {
        (Some(gw), _) => format!("{} via {gw}", route.dst),
        (None, Some(gw)) => format!("{} (via the gateway {gw})", route.dst),
        (None, None) => format!("{} (on-link)", route.dst),
    }
}

/// Two routes to one destination with different next hops (or MTUs): only one could be installed.
pub fn check_routes(r: &AddResult) -> CniResult<()> {
    for (i, a) in r.routes.iter().enumerate() {
        for b in &r.routes[i + 1..] {
            if a.dst.network() != b.dst.network() {
                continue;
            }
            if next_hop(r, a) != next_hop(r, b) || a.mtu != b.mtu {
                return Err(CniError::config(format!(
                    "routes {} and {} go to the same destination {} differently; a container gets one route per destination: remove one from the IPAM config's \"routes\"{}",
                    show(r, a),
                    show(r, b),
                    a.dst.network(),
                    if a.dst.prefix == 0 {
                        " (with \"isDefaultGateway\" the default route via the gateway is added for you)"
                    } else {
                        ""
                    }
                )));
            }
        }
    }
    Ok(())
}

/// `isDefaultGateway`: a default route via the gateway of each family that has one, unless the IPAM
/// result already routes the default the same way; a default route of the IPAM result with another
/// next hop is a conflict (code 7) naming both.
pub fn add_default_routes(r: &mut AddResult) -> CniResult<()> {
    for ipc in r.ips.clone() {
        let Some(gw) = ipc.gateway else { continue };
        let dst: Cidr = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" }
            .parse()
            .expect("valid");
        let mine = ResultRoute::new(dst, Some(gw));
        let existing: Vec<&ResultRoute> = r.routes.iter().filter(|rt| rt.dst == dst).collect();
        if let Some(other) = existing.iter().find(|rt| next_hop(r, rt) != Some(gw)) {
            return Err(CniError::config(format!(
                "\"isDefaultGateway\" adds the default route {dst} via {gw}, but the IPAM result already has {}; drop the default route from the IPAM config or \"isDefaultGateway\"",
                show(r, other)
            )));
        }
        if existing.is_empty() {
            r.routes.push(mine);
        }
    }
    Ok(())
}

/// `isGateway`: every address needs the gateway the bridge will take, and the IPAM plugin must give it
/// (plumb does not make one up: a pod could be handed the same address).
pub fn require_gateways(r: &AddResult) -> CniResult<()> {
    match r.ips.iter().find(|i| i.gateway.is_none()) {
        Some(ipc) => Err(CniError::config(format!(
            "isGateway needs a gateway from IPAM: set ipam.gateway (the IPAM result gives {} without one, and the bridge must not take an address the IPAM plugin may hand to a pod)",
            ipc.address
        ))),
        None => Ok(()),
    }
}

/// No pod address may be a gateway of the result: the bridge (or the router) has that address.
pub fn check_addresses(r: &AddResult) -> CniResult<()> {
    for ipc in &r.ips {
        if let Some(gw) = r
            .ips
            .iter()
            .find_map(|i| i.gateway.filter(|g| *g == ipc.address.addr))
        {
            return Err(CniError::config(format!(
                "the IPAM result gives the pod {}, which is also the gateway {gw}; exclude the gateway from the IPAM range (e.g. set ipam.gateway, which plumb-ipam never hands out)",
                ipc.address
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plumb_cni::Version;
    use serde_json::json;

    fn result(v: serde_json::Value) -> AddResult {
        let mut full = json!({"cniVersion": "1.0.0"});
        for (k, x) in v.as_object().unwrap() {
            full[k] = x.clone();
        }
        AddResult::parse(&full, Version::V1_0_0).unwrap()
    }

    #[test]
    fn two_default_routes_conflict() {
        let r = result(
            json!({"ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "0.0.0.0/0", "gw": "10.0.0.254"}]}),
        );
        let e = check_routes(&r).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("0.0.0.0/0 via 10.0.0.1"), "{}", e.msg);
        assert!(e.msg.contains("0.0.0.0/0 via 10.0.0.254"), "{}", e.msg);
        // Same next hop, spelled with and without `gw`: one route, no conflict.
        let r = result(
            json!({"ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}],
            "routes": [{"dst": "10.9.0.0/16", "gw": "10.0.0.1"}, {"dst": "10.9.1.0/16"}]}),
        );
        assert!(check_routes(&r).is_ok());
        let r = result(json!({"ips": [{"address": "10.0.0.5/24"}],
            "routes": [{"dst": "10.9.0.0/16", "gw": "10.0.0.1"}, {"dst": "10.9.0.0/16"}]}));
        assert!(check_routes(&r).unwrap_err().msg.contains("on-link"));
    }

    #[test]
    fn default_gateway_on_top_of_an_ipam_default_route() {
        let mut r = result(
            json!({"ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.254"}]}),
        );
        let e = add_default_routes(&mut r).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.contains("via 10.0.0.1") && e.msg.contains("0.0.0.0/0 via 10.0.0.254"),
            "{}",
            e.msg
        );
        let mut r = result(
            json!({"ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}]}),
        );
        add_default_routes(&mut r).unwrap();
        assert_eq!(
            r.routes.len(),
            1,
            "the IPAM default route already goes via the gateway"
        );
        let mut r = result(json!({"ips": [{"address": "fd00::5/64", "gateway": "fd00::1"}]}));
        add_default_routes(&mut r).unwrap();
        assert_eq!(r.routes[0].dst.to_string(), "::/0");
        assert_eq!(r.routes[0].gw, Some("fd00::1".parse().unwrap()));
    }

    #[test]
    fn gateway_rules() {
        let r = result(json!({"ips": [{"address": "10.0.0.5/24"}]}));
        let e = require_gateways(&r).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e
            .msg
            .contains("isGateway needs a gateway from IPAM: set ipam.gateway"));
        let r = result(json!({"ips": [{"address": "10.0.0.1/24", "gateway": "10.0.0.1"}]}));
        assert!(require_gateways(&r).is_ok());
        let e = check_addresses(&r).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("10.0.0.1/24") && e.msg.contains("gateway 10.0.0.1"));
        let r = result(json!({"ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]}));
        assert!(check_addresses(&r).is_ok());
    }
}
