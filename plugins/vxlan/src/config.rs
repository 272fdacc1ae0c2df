//! The plumb-vxlan configuration, read strictly: every field is checked here, before anything on the
//! node is touched, and an error names the field and how to fix it.

use plumb_attach::fields::{ipam_type, lenient_ipam_type, parse_dns, pick_mac, validate_ifname};
use plumb_attach::plan::PortPlan;
use plumb_cni::config::{opt_bool, opt_str, opt_str_list, opt_u64};
use plumb_cni::result::Dns;
use plumb_cni::{CniError, CniResult, NetConf};
use serde_json::Value;
use std::net::IpAddr;

/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u64 = 16_777_215;
/// The IANA VXLAN port.
pub const DEFAULT_PORT: u16 = 4789;
/// Bytes VXLAN adds over an IPv4 underlay: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const OVERHEAD_V4: u32 = 50;
/// Bytes VXLAN adds over an IPv6 underlay: outer IPv6 (40) + UDP + VXLAN + inner Ethernet.
pub const OVERHEAD_V6: u32 = 70;

/// How broadcast, unknown-unicast and multicast frames reach the other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flood {
    /// A multicast group every VTEP joins.
    Group(IpAddr),
    /// Unicast copies to each listed underlay address (all-zero FDB entries).
    Peers(Vec<IpAddr>),
    /// Unicast copies to the addresses of the cluster's Nodes, listed at each ADD.
    FromNodes(FromNodes),
}

/// `peers.fromNodes`: which Node addresses become the flood list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromNodes {
    /// `addressType`: the Node status address type (default `InternalIP`).
    pub address_type: String,
    /// `labelSelector`: only Nodes with these labels (e.g. `plumb.dev/vxlan=true`).
    pub selector: Option<String>,
    /// `family`: `IPv4` (default) or `IPv6`, the underlay family of the VTEP.
    pub v6: bool,
    /// `kubernetes.kubeconfig`: credentials; `None` uses the in-cluster service account.
    pub kubeconfig: Option<String>,
    /// `kubernetes.timeoutSeconds`: deadline for listing the Nodes (default 10).
    pub timeout_secs: u64,
}

impl Flood {
    /// Whether the underlay is IPv6.
    pub fn is_ipv6(&self) -> bool {
        match self {
            Flood::Group(g) => g.is_ipv6(),
            Flood::Peers(p) => p.first().is_some_and(IpAddr::is_ipv6),
            Flood::FromNodes(f) => f.v6,
        }
    }
}

/// The pod's part in the gateway network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// An ordinary pod: addresses and routes from IPAM.
    Client,
    /// The gateway pod: forwarding on, and masquerade out of `outInterface` unless turned off.
    Router {
        /// Interface in the pod that overlay traffic leaves by, masqueraded; `None` turns it off.
        masquerade_out: Option<String>,
    },
}

/// The MTU the config asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mtu {
    /// Derived from the underlay device.
    Auto,
    /// A fixed MTU, which must not exceed the derived one.
    Fixed(u32),
}

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// `bridge`: the per-node bridge the pods and the VTEP join.
    pub bridge: String,
    /// `vtep`: name of the VXLAN device (default `<bridge>-vx`).
    pub vtep: String,
    /// `vni`.
    pub vni: u32,
    /// `group` or `peers`.
    pub flood: Flood,
    /// `port`: UDP port (default 4789).
    pub port: u16,
    /// `underlayDevice`: the device carrying VXLAN; `None` picks the default route's.
    pub underlay: Option<String>,
    /// `local`: source address of the outer packets.
    pub local: Option<IpAddr>,
    /// `learning` (default true).
    pub learning: bool,
    /// `mtu` ("auto" by default).
    pub mtu: Mtu,
    /// `macspoofchk`.
    pub macspoofchk: bool,
    /// `role` and `masquerade`.
    pub role: Role,
    /// `ipam.type`, when an `ipam` section is given.
    pub ipam_type: Option<String>,
    /// `dns`, reported instead of the IPAM plugin's.
    pub dns: Option<Dns>,
    /// MAC for the container interface (runtimeConfig.mac, args.cni.mac, CNI_ARGS MAC).
    pub mac: Option<[u8; 6]>,
}

/// What DEL needs of the configuration, read leniently: DEL must succeed on a config ADD would refuse,
/// so a field that cannot be read means ADD never made anything from it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DelConfig {
    /// `bridge`, when it is a name a bridge can have (for the bridge lock).
    pub bridge: Option<String>,
    /// `role` is `"router"`: the pod holds this attachment's masquerade chain.
    pub router: bool,
    /// `ipam.type`, when it is a non-empty string.
    pub ipam_type: Option<String>,
}

impl DelConfig {
    /// Reads what DEL needs; never fails.
    pub fn from_conf(conf: &NetConf) -> DelConfig {
        let raw = &conf.raw;
        DelConfig {
            bridge: raw
                .get("bridge")
                .and_then(Value::as_str)
                .filter(|b| validate_ifname("bridge", b).is_ok())
                .map(str::to_string),
            router: raw.get("role").and_then(Value::as_str) == Some("router"),
            ipam_type: lenient_ipam_type(raw),
        }
    }
}

impl VxlanConfig {
    /// The attach engine's plan for the pod's port: the overlay bridge, the clamped `mtu`, no gateway,
    /// no VLANs.
    pub fn port_plan(&self, mtu: u32) -> PortPlan {
        PortPlan {
            bridge: self.bridge.clone(),
            mtu: Some(mtu),
            macspoofchk: self.macspoofchk,
            ipam_type: self.ipam_type.clone(),
            dns: self.dns.clone(),
            mac: self.mac,
            ..PortPlan::default()
        }
    }

    /// Reads and validates the configuration; `cni_args_mac` is CNI_ARGS `MAC=`, if given.
    pub fn from_conf(conf: &NetConf, cni_args_mac: Option<&str>) -> CniResult<VxlanConfig> {
        let raw = &conf.raw;
        let bridge = opt_str(raw, "bridge")?.ok_or_else(|| {
            CniError::config(
                "field \"bridge\" is required: the name of the per-node bridge, e.g. \"gw0\"",
            )
        })?;
        validate_ifname("bridge", &bridge)?;
        let vtep = match opt_str(raw, "vtep")? {
            Some(v) => v,
            None if bridge.len() <= 12 => format!("{bridge}-vx"),
            None => {
                return Err(CniError::config(format!(
                    "field \"vtep\" is needed: the default name {bridge}-vx is longer than 15 bytes; name the VXLAN device, or use a bridge name of at most 12 bytes"
                )))
            }
        };
        validate_ifname("vtep", &vtep)?;
        if vtep == bridge {
            return Err(CniError::config(
                "fields \"vtep\" and \"bridge\" name the same interface; give them different names",
            ));
        }
        let vni = match raw.get("vni") {
            None | Some(Value::Null) => {
                return Err(CniError::config(
                    "field \"vni\" is required: the VXLAN network identifier, 1 to 16777215",
                ))
            }
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_VNI).contains(&n) => n as u32,
                _ => {
                    return Err(CniError::config(format!(
                        "field \"vni\" must be a whole number from 1 to {MAX_VNI}, not {v}"
                    )))
                }
            },
        };
        let flood = parse_flood(raw)?;
        let port = match opt_u64(raw, "port", 65535)? {
            None => DEFAULT_PORT,
            Some(0) => {
                return Err(CniError::config(
                    "field \"port\" must be a UDP port from 1 to 65535 (4789 is the standard)",
                ))
            }
            Some(p) => p as u16,
        };
        let underlay = opt_str(raw, "underlayDevice")?;
        if let Some(u) = &underlay {
            validate_ifname("underlayDevice", u)?;
        }
        let local = match opt_str(raw, "local")? {
            None => None,
            Some(s) => Some(parse_ip("local", &s)?),
        };
        if let Some(l) = local {
            if l.is_ipv6() != flood.is_ipv6() {
                return Err(CniError::config(format!(
                    "field \"local\" {l} is not of the underlay's address family ({}); use an {} address",
                    family_name(flood.is_ipv6()),
                    family_name(flood.is_ipv6())
                )));
            }
        }
        let mtu = match raw.get("mtu") {
            None | Some(Value::Null) => Mtu::Auto,
            Some(Value::String(s)) if s == "auto" => Mtu::Auto,
            Some(v) => match v.as_u64() {
                Some(m) if (68..=65535).contains(&m) => Mtu::Fixed(m as u32),
                _ => {
                    return Err(CniError::config(format!(
                        "field \"mtu\" must be \"auto\" or a number from 68 to 65535, not {v}"
                    )))
                }
            },
        };
        Ok(VxlanConfig {
            bridge,
            vtep,
            vni,
            flood,
            port,
            underlay,
            local,
            learning: opt_bool(raw, "learning")?.unwrap_or(true),
            mtu,
            macspoofchk: opt_bool(raw, "macspoofchk")?.unwrap_or(false),
            role: parse_role(raw)?,
            ipam_type: ipam_type(raw)?,
            dns: parse_dns(raw)?,
            mac: pick_mac(conf, cni_args_mac)?,
        })
    }

    /// VXLAN's overhead on this config's underlay.
    pub fn overhead(&self) -> u32 {
        if self.flood.is_ipv6() {
            OVERHEAD_V6
        } else {
            OVERHEAD_V4
        }
    }
}

fn family_name(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn parse_ip(field: &str, s: &str) -> CniResult<IpAddr> {
    s.parse().map_err(|_| {
        CniError::config(format!(
            "field \"{field}\" {s:?} is not an IP address like 10.0.0.1 or fd00::1"
        ))
    })
}

fn parse_flood(raw: &serde_json::Map<String, Value>) -> CniResult<Flood> {
    let has = |f: &str| !matches!(raw.get(f), None | Some(Value::Null));
    match (has("group"), has("peers")) {
        (true, true) => Err(CniError::config(
            "fields \"group\" and \"peers\" are both set; use exactly one: \"group\" (multicast) or \"peers\" (unicast, for networks without multicast)",
        )),
        (false, false) => Err(CniError::config(
            "one of \"group\" (a multicast address such as 224.0.0.88) or \"peers\" (the nodes' underlay addresses) is required",
        )),
        (true, false) => {
            let s = opt_str(raw, "group")?.unwrap_or_default();
            let g = parse_ip("group", &s)?;
            if !g.is_multicast() {
                return Err(CniError::config(format!(
                    "field \"group\" {g} is not a multicast address (224.0.0.0/4 or ff00::/8); for unicast underlay addresses use \"peers\""
                )));
            }
            Ok(Flood::Group(g))
        }
        (false, true) => {
            if let Some(Value::Object(o)) = raw.get("peers") {
                return parse_from_nodes(raw, o);
            }
            let list = opt_str_list(raw, "peers")?;
            if list.is_empty() {
                return Err(CniError::config(
                    "field \"peers\" is empty; list the underlay addresses of the nodes (a node skips its own)",
                ));
            }
            let mut peers = Vec::new();
            for (i, s) in list.iter().enumerate() {
                let ip = parse_ip(&format!("peers[{i}]"), s)?;
                if ip.is_multicast() || ip.is_unspecified() || ip.is_loopback() {
                    return Err(CniError::config(format!(
                        "peers[{i}] {ip} is not a unicast underlay address; use \"group\" for multicast"
                    )));
                }
                if !peers.is_empty() && ip.is_ipv6() != peers.first().is_some_and(IpAddr::is_ipv6) {
                    return Err(CniError::config(format!(
                        "peers[{i}] {ip} mixes address families; one VTEP uses one underlay family, so list only {} addresses",
                        family_name(!ip.is_ipv6())
                    )));
                }
                if !peers.contains(&ip) {
                    peers.push(ip);
                }
            }
            Ok(Flood::Peers(peers))
        }
    }
}

fn parse_from_nodes(
    raw: &serde_json::Map<String, Value>,
    peers: &serde_json::Map<String, Value>,
) -> CniResult<Flood> {
    let usage = "field \"peers\" as an object must be {\"fromNodes\": {\"addressType\": \"InternalIP\", \"labelSelector\": \"...\"}}";
    let Some(Value::Object(f)) = peers.get("fromNodes") else {
        return Err(CniError::config(usage));
    };
    if peers.len() != 1 {
        return Err(CniError::config(usage));
    }
    let named = |e: CniError| CniError::config(format!("peers.fromNodes: {}", e.msg));
    let address_type = opt_str(f, "addressType")
        .map_err(named)?
        .unwrap_or_else(|| "InternalIP".into());
    if address_type.is_empty() || !address_type.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(CniError::config(format!(
            "peers.fromNodes.addressType {address_type:?} is not a Node address type such as InternalIP or ExternalIP"
        )));
    }
    let selector = opt_str(f, "labelSelector")
        .map_err(named)?
        .filter(|s| !s.is_empty());
    let v6 = match opt_str(f, "family").map_err(named)?.as_deref() {
        None | Some("IPv4") | Some("ipv4") => false,
        Some("IPv6") | Some("ipv6") => true,
        Some(other) => {
            return Err(CniError::config(format!(
                "peers.fromNodes.family {other:?} is unknown; use \"IPv4\" (default) or \"IPv6\""
            )))
        }
    };
    let (kubeconfig, timeout_secs) = match raw.get("kubernetes") {
        None | Some(Value::Null) => (None, 10),
        Some(Value::Object(k)) => {
            let named = |e: CniError| CniError::config(format!("kubernetes.{}", e.msg));
            (
                opt_str(k, "kubeconfig").map_err(named)?,
                match opt_u64(k, "timeoutSeconds", 300).map_err(named)? {
                    None => 10,
                    Some(0) => {
                        return Err(CniError::config(
                            "kubernetes.timeoutSeconds must be 1 to 300 seconds",
                        ))
                    }
                    Some(t) => t,
                },
            )
        }
        Some(_) => {
            return Err(CniError::config(
                "field \"kubernetes\" must be an object such as {\"kubeconfig\": \"/etc/cni/net.d/plumb.d/plumb.kubeconfig\"}",
            ))
        }
    };
    Ok(Flood::FromNodes(FromNodes {
        address_type,
        selector,
        v6,
        kubeconfig,
        timeout_secs,
    }))
}

fn parse_role(raw: &serde_json::Map<String, Value>) -> CniResult<Role> {
    let role = opt_str(raw, "role")?.unwrap_or_else(|| "client".into());
    let masq = raw.get("masquerade").filter(|v| !v.is_null());
    match role.as_str() {
        "client" => {
            if masq.is_some() {
                return Err(CniError::config(
                    "field \"masquerade\" applies only to \"role\": \"router\"; remove it or make this the router",
                ));
            }
            Ok(Role::Client)
        }
        "router" => {
            let masquerade_out = match masq {
                None | Some(Value::Bool(true)) => Some("eth0".to_string()),
                Some(Value::Bool(false)) => None,
                Some(Value::Object(o)) => {
                    let out = opt_str(o, "outInterface")
                        .map_err(|e| CniError::config(format!("masquerade.{}", e.msg)))?
                        .unwrap_or_else(|| "eth0".into());
                    validate_ifname("masquerade.outInterface", &out)?;
                    Some(out)
                }
                Some(other) => {
                    return Err(CniError::config(format!(
                        "field \"masquerade\" must be {{\"outInterface\": \"eth0\"}} or false, not {other}"
                    )))
                }
            };
            Ok(Role::Router { masquerade_out })
        }
        other => Err(CniError::config(format!(
            "field \"role\" {other:?} is unknown; use \"client\" (default) or \"router\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> CniResult<VxlanConfig> {
        let mut base = json!({"cniVersion": "1.0.0", "name": "gw", "type": "plumb-vxlan"});
        base.as_object_mut()
            .unwrap()
            .extend(v.as_object().unwrap().clone());
        let conf = NetConf::parse(&serde_json::to_vec(&base).unwrap()).unwrap();
        VxlanConfig::from_conf(&conf, None)
    }

    fn msg(v: Value) -> String {
        parse(v).unwrap_err().msg
    }

    #[test]
    fn port_plan_is_the_overlay_bridge_with_the_given_mtu_and_nothing_else() {
        let c = parse(json!({
            "bridge": "gw0", "vni": 42, "group": "239.1.1.1", "macspoofchk": true,
            "ipam": {"type": "plumb-ipam"}, "runtimeConfig": {"mac": "02:00:00:00:00:09"}
        }))
        .unwrap();
        let p = c.port_plan(1450);
        assert_eq!(
            p,
            PortPlan {
                bridge: "gw0".into(),
                mtu: Some(1450),
                mac: Some([2, 0, 0, 0, 0, 9]),
                macspoofchk: true,
                ipam_type: Some("plumb-ipam".into()),
                dns: c.dns.clone(),
                ..PortPlan::default()
            }
        );
        assert!(!p.is_gateway && !p.ip_masq && !p.uses_vlans());
    }

    #[test]
    fn del_reads_leniently_what_add_refuses() {
        let del = |v: Value| {
            let mut base = json!({"cniVersion": "1.0.0", "name": "gw", "type": "plumb-vxlan"});
            base.as_object_mut()
                .unwrap()
                .extend(v.as_object().unwrap().clone());
            DelConfig::from_conf(&NetConf::parse(&serde_json::to_vec(&base).unwrap()).unwrap())
        };
        let refused = json!({"bridge": "gw0", "role": "router", "masquerade": 7,
                             "runtimeConfig": {"mac": "01:00:5e:00:00:01"},
                             "ipam": {"type": "plumb-ipam"}});
        assert!(parse(refused.clone()).is_err());
        let d = del(refused);
        assert_eq!(
            (d.bridge.as_deref(), d.router, d.ipam_type.as_deref()),
            (Some("gw0"), true, Some("plumb-ipam"))
        );
        let d = del(json!({"bridge": "a-bridge-name-too-long", "role": 5}));
        assert_eq!(d, DelConfig::default());
    }

    #[test]
    fn defaults() {
        let c = parse(json!({"bridge": "gw0", "vni": 42, "group": "224.0.0.88"})).unwrap();
        assert_eq!(c.vtep, "gw0-vx");
        assert_eq!(c.port, 4789);
        assert_eq!(c.mtu, Mtu::Auto);
        assert!(c.learning);
        assert_eq!(c.role, Role::Client);
        assert_eq!(c.overhead(), 50);
        let r = parse(json!({"bridge": "gw0", "vni": 1, "peers": ["fd00::1", "fd00::2", "fd00::1"], "role": "router"}))
            .unwrap();
        assert_eq!(
            r.flood,
            Flood::Peers(vec!["fd00::1".parse().unwrap(), "fd00::2".parse().unwrap()])
        );
        assert_eq!(r.overhead(), 70);
        assert_eq!(
            r.role,
            Role::Router {
                masquerade_out: Some("eth0".into())
            }
        );
        let r = parse(json!({"bridge": "gw0", "vni": 1, "group": "ff05::88", "role": "router", "masquerade": {"outInterface": "net9"}, "mtu": 1400}))
            .unwrap();
        assert_eq!(
            r.role,
            Role::Router {
                masquerade_out: Some("net9".into())
            }
        );
        assert_eq!(r.mtu, Mtu::Fixed(1400));
        let n = parse(json!({"bridge": "gw0", "vni": 1, "peers": {"fromNodes": {"labelSelector": "plumb.dev/vxlan=true", "family": "IPv6"}}, "kubernetes": {"kubeconfig": "/k"}}))
            .unwrap();
        assert_eq!(
            n.flood,
            Flood::FromNodes(FromNodes {
                address_type: "InternalIP".into(),
                selector: Some("plumb.dev/vxlan=true".into()),
                v6: true,
                kubeconfig: Some("/k".into()),
                timeout_secs: 10,
            })
        );
        assert_eq!(n.overhead(), 70);
    }

    #[test]
    fn bad_input_names_the_field() {
        let base = |extra: Value| {
            let mut b = json!({"bridge": "gw0", "vni": 42});
            b.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            b
        };
        assert!(msg(base(json!({"group": "224.0.0.88", "peers": ["10.0.0.1"]}))).contains("both"));
        assert!(msg(base(json!({}))).contains("\"group\""));
        assert!(msg(json!({"bridge": "gw0", "vni": 0, "group": "224.0.0.88"})).contains("\"vni\""));
        assert!(
            msg(json!({"bridge": "gw0", "vni": 16_777_216u64, "group": "224.0.0.88"}))
                .contains("16777215")
        );
        assert!(msg(base(json!({"group": "10.1.1.1"}))).contains("not a multicast"));
        assert!(msg(base(json!({"peers": []}))).contains("empty"));
        assert!(msg(base(json!({"peers": ["10.0.0.1", "fd00::1"]}))).contains("mixes"));
        assert!(
            msg(base(json!({"peers": ["10.0.0.1"], "local": "fd00::1"}))).contains("\"local\"")
        );
        assert!(msg(base(json!({"group": "224.0.0.88", "mtu": "big"}))).contains("\"mtu\""));
        assert!(msg(base(json!({"group": "224.0.0.88", "masquerade": false}))).contains("router"));
        assert!(msg(base(json!({"group": "224.0.0.88", "role": "gateway"}))).contains("\"role\""));
        assert!(msg(base(json!({"group": "224.0.0.88", "learning": "true"}))).contains("learning"));
        assert!(msg(json!({"vni": 42, "group": "224.0.0.88"})).contains("\"bridge\""));
        assert!(
            msg(json!({"bridge": "a-very-long-br", "vni": 42, "group": "224.0.0.88"}))
                .contains("\"vtep\"")
        );
        assert!(msg(base(json!({"peers": {"nodes": {}}}))).contains("fromNodes"));
        assert!(msg(base(json!({"peers": {"fromNodes": {"family": "v7"}}}))).contains("family"));
        assert!(msg(base(
            json!({"peers": {"fromNodes": {"addressType": "a b"}}})
        ))
        .contains("addressType"));
        assert!(msg(base(
            json!({"peers": {"fromNodes": {}}, "kubernetes": {"timeoutSeconds": 0}})
        ))
        .contains("timeoutSeconds"));
    }
}
