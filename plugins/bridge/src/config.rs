//! The plumb-bridge configuration: every field of the reference bridge plugin with the same meaning and
//! defaults, read strictly (a boolean given as a string is an error naming the field).

use plumb_cni::config::{opt_bool, opt_str, opt_u64};
use plumb_cni::result::Dns;
use plumb_cni::{CniError, CniResult, NetConf};
use serde_json::{Map, Value};

pub use plumb_attach::fields::{
    ipam_type, lenient_ipam_type, parse_dns, pick_mac, validate_ifname,
};
use plumb_attach::plan::PortPlan;

/// Highest VLAN id a port may carry (4095 is reserved).
pub const MAX_VLAN: u16 = 4094;

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// `bridge`: the bridge name (default `cni0`).
    pub bridge: String,
    /// `isGateway`: give the bridge (or the VLAN gateway interface) the gateway address.
    pub is_gateway: bool,
    /// `isDefaultGateway`: also add a default route via the gateway (implies `isGateway`).
    pub is_default_gateway: bool,
    /// `forceAddress`: replace another address of the same family on the bridge.
    pub force_address: bool,
    /// `ipMasq`: masquerade traffic from the container leaving its subnet.
    pub ip_masq: bool,
    /// `mtu`: MTU of the bridge (when created) and both veth ends.
    pub mtu: Option<u32>,
    /// `hairpinMode`.
    pub hairpin: bool,
    /// `promiscMode`: bridge in promiscuous mode.
    pub promisc: bool,
    /// `vlan`: access VLAN (PVID, untagged) of the port; 0 means none.
    pub vlan: u16,
    /// `vlanTrunk`: tagged VLAN ranges of the port.
    pub trunk: Vec<(u16, u16)>,
    /// `preserveDefaultVlan`: keep VLAN 1 on the port when VLANs are configured (default false).
    pub preserve_default_vlan: bool,
    /// `enabledad`: keep IPv6 duplicate address detection on the container interface.
    pub enable_dad: bool,
    /// `macspoofchk`: drop frames from the container whose source MAC is not its interface's.
    pub macspoofchk: bool,
    /// `disableContainerInterface`: leave the container interface down.
    pub disable_container_interface: bool,
    /// `portIsolation`: isolated ports cannot talk to each other.
    pub port_isolation: bool,
    /// `ipam.type`, when an `ipam` section is given.
    pub ipam_type: Option<String>,
    /// `dns`: reported in the result instead of the IPAM plugin's.
    pub dns: Option<Dns>,
    /// The MAC for the container interface: CNI_ARGS MAC < args.cni.mac < runtimeConfig.mac.
    pub mac: Option<[u8; 6]>,
    /// `uplink`: the node's trunked NIC that plumb connects the bridge to (see [`UplinkLayout`]).
    pub uplink: Option<String>,
    /// The layout of the uplink pieces, when `uplink` is given.
    pub uplink_layout: Option<UplinkLayout>,
    /// `uplinkTrunk`: with the one-bridge layout, the fixed VLAN ranges the uplink carries (instead of
    /// exactly the VLANs of the attachments).
    pub uplink_trunk: Vec<(u16, u16)>,
}

/// How `uplink` connects the bridge to the node's trunked NIC (docs/bridge.md, "Uplinks").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkLayout {
    /// `vlan: N` without `vlanFiltering`: an 802.1Q interface `<uplink>.<N>` is the bridge's port to
    /// the NIC; the bridge carries only VLAN N, untagged, and pods are plain ports.
    PerVlan(u16),
    /// `vlanFiltering: true`: the NIC itself is a tagged trunk port of one VLAN-filtering bridge; pods
    /// are access (`vlan`) or trunk (`vlanTrunk`) ports as without `uplink`.
    Trunk,
}

impl Default for BridgeConfig {
    /// The reference plugin's defaults: bridge `cni0`, every flag off, no VLANs, no IPAM.
    fn default() -> Self {
        BridgeConfig {
            bridge: "cni0".into(),
            is_gateway: false,
            is_default_gateway: false,
            force_address: false,
            ip_masq: false,
            mtu: None,
            hairpin: false,
            promisc: false,
            vlan: 0,
            trunk: Vec::new(),
            preserve_default_vlan: false,
            enable_dad: false,
            macspoofchk: false,
            disable_container_interface: false,
            port_isolation: false,
            ipam_type: None,
            dns: None,
            mac: None,
            uplink: None,
            uplink_layout: None,
            uplink_trunk: Vec::new(),
        }
    }
}

impl BridgeConfig {
    /// Reads the configuration; `cni_args_mac` is CNI_ARGS `MAC=`, if given.
    pub fn from_conf(conf: &NetConf, cni_args_mac: Option<&str>) -> CniResult<BridgeConfig> {
        let raw = &conf.raw;
        let flag = |f: &str| opt_bool(raw, f).map(|v| v.unwrap_or(false));
        let bridge = opt_str(raw, "bridge")?.unwrap_or_else(|| "cni0".into());
        validate_ifname("bridge", &bridge)?;
        let is_default_gateway = flag("isDefaultGateway")?;
        let vlan = opt_u64(raw, "vlan", MAX_VLAN as u64)?.unwrap_or(0) as u16;
        let mtu = match opt_u64(raw, "mtu", 65535)? {
            None | Some(0) => None,
            Some(m) if m < 68 => {
                return Err(CniError::config(format!(
                    "field \"mtu\" {m} is below the IPv4 minimum of 68"
                )))
            }
            Some(m) => Some(m as u32),
        };
        let mut cfg = BridgeConfig {
            bridge,
            is_gateway: flag("isGateway")? || is_default_gateway,
            is_default_gateway,
            force_address: flag("forceAddress")?,
            ip_masq: flag("ipMasq")?,
            mtu,
            hairpin: flag("hairpinMode")?,
            promisc: flag("promiscMode")?,
            vlan,
            trunk: parse_trunk(raw)?,
            preserve_default_vlan: flag("preserveDefaultVlan")?,
            enable_dad: flag("enabledad")?,
            macspoofchk: flag("macspoofchk")?,
            disable_container_interface: flag("disableContainerInterface")?,
            port_isolation: flag("portIsolation")?,
            ipam_type: ipam_type(raw)?,
            mac: pick_mac(conf, cni_args_mac)?,
            dns: parse_dns(raw)?,
            uplink: opt_str(raw, "uplink")?,
            uplink_layout: None,
            uplink_trunk: parse_ranges(raw, "uplinkTrunk")?,
        };
        settle_uplink(&mut cfg, flag("vlanFiltering")?)?;
        if let Some(backend) = opt_str(raw, "ipMasqBackend")? {
            if backend != "iptables" && backend != "nftables" {
                return Err(CniError::config(format!(
                    "field \"ipMasqBackend\" {backend:?} is unknown; use \"nftables\" or \"iptables\" (plumb always programs nftables over netlink)"
                )));
            }
        }
        if cfg.vlan != 0 && cfg.is_gateway {
            // The VLAN gateway interface is named <bridge>.<vlan>, which must fit in 15 bytes.
            validate_ifname(
                "bridge (with vlan, for the gateway interface)",
                &cfg.vlan_gateway_name(),
            )?;
        }
        Ok(cfg)
    }

    /// The attach engine's plan for the pod's port: everything of this config the engine uses.
    pub fn port_plan(&self) -> PortPlan {
        PortPlan {
            bridge: self.bridge.clone(),
            mtu: self.mtu,
            mac: self.mac,
            vlan: self.vlan,
            trunk: self.trunk.clone(),
            preserve_default_vlan: self.preserve_default_vlan,
            hairpin: self.hairpin,
            port_isolation: self.port_isolation,
            macspoofchk: self.macspoofchk,
            ip_masq: self.ip_masq,
            is_gateway: self.is_gateway,
            is_default_gateway: self.is_default_gateway,
            enable_dad: self.enable_dad,
            disable_container_interface: self.disable_container_interface,
            ipam_type: self.ipam_type.clone(),
            dns: self.dns.clone(),
            // plumb-bridge does nothing in the pod after the attachment.
            pod_work_ends: true,
        }
    }

    /// Whether the port carries any VLAN configuration (which needs a VLAN-filtering bridge).
    pub fn uses_vlans(&self) -> bool {
        self.vlan != 0 || !self.trunk.is_empty()
    }

    /// Name of the VLAN gateway interface (`<bridge>.<vlan>`).
    pub fn vlan_gateway_name(&self) -> String {
        format!("{}.{}", self.bridge, self.vlan)
    }
}

/// Checks the uplink fields together and settles the layout; in the per-VLAN layout `vlan` moves from
/// the pod port to the uplink's VLAN interface (the port itself carries no VLAN configuration).
pub fn settle_uplink(cfg: &mut BridgeConfig, vlan_filtering: bool) -> CniResult<()> {
    let Some(up) = cfg.uplink.clone() else {
        if vlan_filtering {
            return Err(CniError::config("field \"vlanFiltering\" selects the one-bridge layout of \"uplink\"; set \"uplink\" to the node's trunked NIC, or drop it (\"vlan\"/\"vlanTrunk\" turn VLAN filtering on by themselves)"));
        }
        if !cfg.uplink_trunk.is_empty() {
            return Err(CniError::config(
                "field \"uplinkTrunk\" needs \"uplink\" and \"vlanFiltering\": true",
            ));
        }
        return Ok(());
    };
    validate_ifname("field \"uplink\"", &up)?;
    if up == cfg.bridge {
        return Err(CniError::config(format!(
            "field \"uplink\" {up:?} is the bridge itself; name the node's trunked NIC"
        )));
    }
    if vlan_filtering {
        if !cfg.uses_vlans() {
            return Err(CniError::config("with \"uplink\" and \"vlanFiltering\": true the pod port needs \"vlan\" or \"vlanTrunk\": the uplink carries only the VLANs of the attachments"));
        }
        if !cfg.uplink_trunk.is_empty() {
            for (lo, hi) in attachment_ranges(cfg) {
                if let Some(v) = (lo..=hi).find(|v| !in_ranges(&cfg.uplink_trunk, *v)) {
                    return Err(CniError::config(format!("VLAN {v} of this attachment is not in \"uplinkTrunk\", so the uplink would not carry it; add it to \"uplinkTrunk\"")));
                }
            }
        }
        cfg.uplink_layout = Some(UplinkLayout::Trunk);
        return Ok(());
    }
    if !cfg.uplink_trunk.is_empty() {
        return Err(CniError::config("field \"uplinkTrunk\" needs \"vlanFiltering\": true (the one VLAN-filtering bridge layout)"));
    }
    if !cfg.trunk.is_empty() || cfg.preserve_default_vlan {
        return Err(CniError::config("fields \"vlanTrunk\"/\"preserveDefaultVlan\" do not apply to a per-VLAN bridge (\"uplink\" with \"vlan\"), which carries one VLAN untagged; set \"vlanFiltering\": true for trunk ports"));
    }
    if cfg.vlan == 0 {
        return Err(CniError::config("field \"uplink\" needs \"vlan\" (a per-VLAN bridge with <uplink>.<vlan> as its port) or \"vlanFiltering\": true (one VLAN-filtering bridge with the uplink as its trunk port)"));
    }
    cfg.uplink_layout = Some(UplinkLayout::PerVlan(cfg.vlan));
    cfg.vlan = 0;
    Ok(())
}

/// The VLAN ranges of the attachment's port: `vlanTrunk` and the access `vlan`.
pub fn attachment_ranges(cfg: &BridgeConfig) -> Vec<(u16, u16)> {
    let mut r = cfg.trunk.clone();
    if cfg.vlan != 0 {
        r.push((cfg.vlan, cfg.vlan));
    }
    r
}

/// The VLANs the uplink must carry for this attachment: `uplinkTrunk` if given, else its own.
pub fn wanted_ranges(cfg: &BridgeConfig) -> Vec<(u16, u16)> {
    if cfg.uplink_trunk.is_empty() {
        attachment_ranges(cfg)
    } else {
        cfg.uplink_trunk.clone()
    }
}

fn in_ranges(ranges: &[(u16, u16)], vid: u16) -> bool {
    ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&vid))
}

/// What DEL needs of the configuration, read leniently: DEL must succeed on a config ADD would refuse
/// (a multicast `mac`, a bad `vlan`, a bridge name over 15 bytes, missing fields), so a field that
/// cannot be read here means ADD never made anything from it, and DEL skips that step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DelConfig {
    /// `bridge` (default `cni0`), when it is a name a bridge can have.
    pub bridge: Option<String>,
    /// The access VLAN whose gateway interface `<bridge>.<vlan>` ADD may have made (`isGateway` or
    /// `isDefaultGateway` with a valid `vlan` and a gateway interface name that fits).
    pub vlan_gateway: Option<u16>,
    /// `ipam.type`, when it is a non-empty string.
    pub ipam_type: Option<String>,
    /// With the one-bridge uplink layout and no `uplinkTrunk`: the uplink and the VLANs of this
    /// attachment, which DEL takes off the uplink when no other port of the bridge carries them.
    pub uplink_vlans: Option<(String, Vec<(u16, u16)>)>,
    /// `uplink`, when it is a valid interface name (its VLANs do not keep the VLAN gateway).
    pub uplink: Option<String>,
}

impl DelConfig {
    /// Reads what DEL needs; never fails.
    pub fn from_conf(conf: &NetConf) -> DelConfig {
        let raw = &conf.raw;
        let bridge = match raw.get("bridge") {
            None | Some(Value::Null) => Some("cni0".to_string()),
            Some(Value::String(b)) => Some(b.clone()),
            Some(_) => None,
        }
        .filter(|b| validate_ifname("bridge", b).is_ok());
        let flag = |f: &str| raw.get(f).and_then(Value::as_bool).unwrap_or(false);
        let vlan = raw
            .get("vlan")
            .and_then(Value::as_u64)
            .filter(|v| (1..=MAX_VLAN as u64).contains(v))
            .map(|v| v as u16);
        let uplink = raw
            .get("uplink")
            .and_then(Value::as_str)
            .filter(|u| validate_ifname("uplink", u).is_ok());
        let filtering = flag("vlanFiltering");
        // With `uplink` and no `vlanFiltering`, `vlan` names the uplink's VLAN interface, and the
        // gateway address sits on the bridge itself: there is no `<bridge>.<vlan>` of plumb's.
        let per_vlan_uplink = raw.get("uplink").is_some_and(|u| !u.is_null()) && !filtering;
        let uplink_vlans = match uplink {
            Some(u) if filtering && matches!(raw.get("uplinkTrunk"), None | Some(Value::Null)) => {
                let mut vids = parse_trunk(raw).unwrap_or_default();
                vids.extend(vlan.map(|v| (v, v)));
                Some((u.to_string(), vids)).filter(|(_, v)| !v.is_empty())
            }
            _ => None,
        };
        let vlan_gateway = match (&bridge, vlan) {
            _ if per_vlan_uplink => None,
            (Some(b), Some(v)) if flag("isGateway") || flag("isDefaultGateway") => {
                Some(v).filter(|_| validate_ifname("bridge", &format!("{b}.{v}")).is_ok())
            }
            _ => None,
        };
        DelConfig {
            bridge,
            vlan_gateway,
            ipam_type: lenient_ipam_type(raw),
            uplink_vlans,
            uplink: uplink.map(str::to_string),
        }
    }
}

fn parse_trunk(raw: &Map<String, Value>) -> CniResult<Vec<(u16, u16)>> {
    parse_ranges(raw, "vlanTrunk")
}

/// A list of VLAN ranges in the `vlanTrunk` syntax, read from `field`.
pub fn parse_ranges(raw: &Map<String, Value>, field: &str) -> CniResult<Vec<(u16, u16)>> {
    let items = match raw.get(field) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(CniError::config(format!(
            "field \"{field}\" must be an array of {{\"id\": N}} or {{\"minID\": A, \"maxID\": B}}"
        )))
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let obj = item.as_object().ok_or_else(|| {
            CniError::config(format!(
                "{field}[{i}] must be an object: {{\"id\": N}} or {{\"minID\": A, \"maxID\": B}}"
            ))
        })?;
        let get = |f: &str| -> CniResult<Option<u16>> {
            match obj.get(f) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if (1..=MAX_VLAN as u64).contains(&n) => Ok(Some(n as u16)),
                    _ => Err(CniError::config(format!(
                        "{field}[{i}].{f} must be a VLAN id from 1 to {MAX_VLAN}, not {v}"
                    ))),
                },
            }
        };
        let span = match (get("id")?, get("minID")?, get("maxID")?) {
            (Some(id), None, None) => (id, id),
            (None, Some(lo), Some(hi)) if lo <= hi => (lo, hi),
            (None, Some(lo), Some(hi)) => {
                return Err(CniError::config(format!(
                    "{field}[{i}]: minID {lo} is greater than maxID {hi}"
                )))
            }
            _ => {
                return Err(CniError::config(format!(
                    "{field}[{i}] must have either \"id\" or both \"minID\" and \"maxID\""
                )))
            }
        };
        out.push(span);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(extra: Value) -> CniResult<BridgeConfig> {
        let mut c = json!({"cniVersion": "1.0.0", "name": "n", "type": "plumb-bridge"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        BridgeConfig::from_conf(&NetConf::parse(c.to_string().as_bytes()).unwrap(), None)
    }

    #[test]
    fn port_plan_carries_every_port_field() {
        let c = cfg(json!({
            "bridge": "br7", "isDefaultGateway": true, "ipMasq": true, "mtu": 1400,
            "hairpinMode": true, "portIsolation": true, "vlan": 20,
            "vlanTrunk": [{"minID": 30, "maxID": 32}], "preserveDefaultVlan": true,
            "enabledad": true, "macspoofchk": true, "disableContainerInterface": true,
            "ipam": {"type": "plumb-ipam"}, "dns": {"nameservers": ["10.0.0.53"]},
            "runtimeConfig": {"mac": "02:00:00:00:00:07"}
        }))
        .unwrap();
        let p = c.port_plan();
        assert_eq!(
            (p.bridge.as_str(), p.mtu, p.mac, p.vlan, p.trunk.as_slice()),
            (
                "br7",
                Some(1400),
                Some([2, 0, 0, 0, 0, 7]),
                20,
                &[(30, 32)][..]
            )
        );
        assert!(p.preserve_default_vlan && p.hairpin && p.port_isolation && p.macspoofchk);
        assert!(p.ip_masq && p.is_gateway && p.is_default_gateway && p.enable_dad);
        assert!(p.disable_container_interface && p.uses_vlans());
        assert_eq!(p.ipam_type.as_deref(), Some("plumb-ipam"));
        assert_eq!(p.dns, c.dns);
        assert_eq!(
            cfg(json!({})).unwrap().port_plan(),
            PortPlan {
                bridge: "cni0".into(),
                pod_work_ends: true,
                ..PortPlan::default()
            }
        );
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = cfg(json!({})).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(
            !c.is_gateway && !c.ip_masq && !c.hairpin && !c.preserve_default_vlan && !c.enable_dad
        );
        assert_eq!(
            (c.vlan, c.trunk.len(), c.mtu, c.ipam_type.clone()),
            (0, 0, None, None)
        );
        assert!(cfg(json!({"isDefaultGateway": true})).unwrap().is_gateway);
    }

    #[test]
    fn vlans_and_trunks() {
        let c =
            cfg(json!({"vlan": 2003, "vlanTrunk": [{"id": 2004}, {"minID": 2005, "maxID": 2010}]}))
                .unwrap();
        assert_eq!(c.vlan, 2003);
        assert_eq!(c.trunk, vec![(2004, 2004), (2005, 2010)]);
        let bad = [
            (json!({"vlan": 4095}), "vlan"),
            (json!({"vlan": -1}), "vlan"),
            (
                json!({"vlanTrunk": [{"minID": 10, "maxID": 5}]}),
                "minID 10 is greater than maxID 5",
            ),
            (json!({"vlanTrunk": [{"id": 0}]}), "vlanTrunk[0].id"),
            (json!({"vlanTrunk": [{"minID": 10}]}), "vlanTrunk[0]"),
            (json!({"vlanTrunk": {"id": 1}}), "vlanTrunk"),
        ];
        for (extra, needle) in bad {
            let e = cfg(extra.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{extra}");
            assert!(e.msg.contains(needle), "{extra}: {}", e.msg);
        }
    }

    #[test]
    fn strict_types_and_names() {
        let e = cfg(json!({"isGateway": "true"})).unwrap_err();
        assert!(e.msg.contains("isGateway"), "{}", e.msg);
        let e = cfg(json!({"bridge": "a-very-long-bridge-name"})).unwrap_err();
        assert!(e.msg.contains("bridge"), "{}", e.msg);
        let e = cfg(json!({"bridge": "br-trunk-01", "vlan": 2003, "isGateway": true})).unwrap_err();
        assert!(e.msg.contains("br-trunk-01.2003"), "{}", e.msg);
        assert!(cfg(json!({"ipam": {"range": "x"}}))
            .unwrap_err()
            .msg
            .contains("ipam.type"));
        assert!(cfg(json!({"ipMasqBackend": "ebpf"}))
            .unwrap_err()
            .msg
            .contains("ipMasqBackend"));
    }

    #[test]
    fn del_reads_leniently_what_add_refuses() {
        let del = |extra: Value| {
            let mut c = json!({"cniVersion": "1.0.0", "name": "n", "type": "plumb-bridge"});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            DelConfig::from_conf(&NetConf::parse(c.to_string().as_bytes()).unwrap())
        };
        let d = del(
            json!({"bridge": "a-very-long-bridge-name", "vlan": 5000, "isGateway": "yes",
                           "runtimeConfig": {"mac": "01:00:5e:00:00:01"}, "ipam": {"type": "plumb-ipam", "range": 5}}),
        );
        assert_eq!(d.bridge, None);
        assert_eq!(d.vlan_gateway, None);
        assert_eq!(d.ipam_type.as_deref(), Some("plumb-ipam"));
        let d = del(json!({"bridge": "br0", "vlan": 7, "isDefaultGateway": true, "ipam": {}}));
        assert_eq!(
            (d.bridge.as_deref(), d.vlan_gateway, d.ipam_type),
            (Some("br0"), Some(7), None)
        );
        // <bridge>.<vlan> over 15 bytes: ADD refused, so there is no gateway interface to remove.
        let d = del(json!({"bridge": "br-trunk-01", "vlan": 2003, "isGateway": true}));
        assert_eq!(d.vlan_gateway, None);
        assert_eq!(del(json!({})).bridge.as_deref(), Some("cni0"));
        assert!(BridgeConfig::from_conf(
            &NetConf::parse(
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t",
                       "runtimeConfig": {"mac": "01:00:5e:00:00:01"}})
                .to_string()
                .as_bytes()
            )
            .unwrap(),
            None
        )
        .is_err());
    }

    #[test]
    fn uplink_layouts() {
        let c = cfg(json!({"bridge": "bridge2003", "uplink": "enp4s0f0", "vlan": 2003})).unwrap();
        assert_eq!(c.uplink.as_deref(), Some("enp4s0f0"));
        assert_eq!(c.uplink_layout, Some(UplinkLayout::PerVlan(2003)));
        // The VLAN is the uplink interface's: the pod port is a plain port of a plain bridge.
        assert_eq!(c.vlan, 0);
        assert!(!c.uses_vlans());
        let c = cfg(json!({"uplink": "enp4s0f0", "vlanFiltering": true, "vlan": 2004})).unwrap();
        assert_eq!((c.uplink_layout, c.vlan), (Some(UplinkLayout::Trunk), 2004));
        let c = cfg(
            json!({"uplink": "enp4s0f0", "vlanFiltering": true, "vlan": 2004,
                           "uplinkTrunk": [{"minID": 2003, "maxID": 2005}]}),
        )
        .unwrap();
        assert_eq!(c.uplink_trunk, vec![(2003, 2005)]);
        assert_eq!(cfg(json!({})).unwrap().uplink_layout, None);
        let bad = [
            (json!({"uplink": "enp4s0f0"}), "needs \"vlan\""),
            (
                json!({"uplink": "enp4s0f0", "vlanFiltering": true}),
                "needs \"vlan\" or \"vlanTrunk\"",
            ),
            (
                json!({"uplink": "enp4s0f0", "vlan": 3, "vlanTrunk": [{"id": 4}]}),
                "vlanTrunk",
            ),
            (
                json!({"uplink": "enp4s0f0", "vlan": 3, "uplinkTrunk": [{"id": 3}]}),
                "uplinkTrunk",
            ),
            (json!({"vlanFiltering": true, "vlan": 3}), "vlanFiltering"),
            (json!({"uplinkTrunk": [{"id": 3}]}), "uplinkTrunk"),
            (
                json!({"uplink": "a-very-long-nic-name", "vlan": 3}),
                "uplink",
            ),
            (json!({"uplink": 5, "vlan": 3}), "uplink"),
            (json!({"uplink": "cni0", "vlan": 3}), "the bridge itself"),
            (
                json!({"uplink": "e", "vlanFiltering": true, "vlan": 10, "uplinkTrunk": [{"minID": 2003, "maxID": 2005}]}),
                "VLAN 10",
            ),
            (
                json!({"uplink": "e", "vlanFiltering": "yes", "vlan": 10}),
                "vlanFiltering",
            ),
            (
                json!({"uplink": "e", "vlanFiltering": true, "vlan": 3, "uplinkTrunk": [{"id": 0}]}),
                "uplinkTrunk[0].id",
            ),
        ];
        for (extra, needle) in bad {
            let e = cfg(extra.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{extra}");
            assert!(e.msg.contains(needle), "{extra}: {}", e.msg);
        }
    }

    #[test]
    fn del_reads_the_uplink_vlans_to_release() {
        let del = |extra: Value| {
            let mut c = json!({"cniVersion": "1.0.0", "name": "n", "type": "plumb-bridge", "bridge": "br0"});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            DelConfig::from_conf(&NetConf::parse(c.to_string().as_bytes()).unwrap())
        };
        let d = del(
            json!({"uplink": "up0", "vlanFiltering": true, "vlan": 7, "vlanTrunk": [{"id": 9}]}),
        );
        assert_eq!(
            d.uplink_vlans,
            Some(("up0".to_string(), vec![(9, 9), (7, 7)]))
        );
        // A fixed uplinkTrunk stays; the per-VLAN layout has no trunk on the uplink.
        assert_eq!(del(json!({"uplink": "up0", "vlanFiltering": true, "vlan": 7, "uplinkTrunk": [{"id": 7}]})).uplink_vlans, None);
        let d = del(json!({"uplink": "up0", "vlan": 7, "isGateway": true}));
        assert_eq!((d.uplink_vlans, d.vlan_gateway), (None, None));
    }

    #[test]
    fn empty_dns_keeps_the_ipam_dns() {
        assert_eq!(cfg(json!({"dns": {}})).unwrap().dns, None);
        assert_eq!(cfg(json!({"dns": {"domain": ""}})).unwrap().dns, None);
        let d = cfg(json!({"dns": {"nameservers": ["10.0.0.10"]}}))
            .unwrap()
            .dns
            .unwrap();
        assert_eq!(d.nameservers, vec!["10.0.0.10".to_string()]);
        // An explicitly empty list is set, and so overrides the IPAM plugin's DNS with nothing.
        assert!(cfg(json!({"dns": {"search": []}})).unwrap().dns.is_some());
        assert!(cfg(json!({"dns": {"domain": 5}})).is_err());
    }

    #[test]
    fn mac_precedence() {
        let c = json!({"cniVersion": "1.0.0", "name": "n", "type": "t",
                       "runtimeConfig": {"mac": "02:00:00:00:00:03"}, "args": {"cni": {"mac": "02:00:00:00:00:02"}}});
        let conf = NetConf::parse(c.to_string().as_bytes()).unwrap();
        let b = BridgeConfig::from_conf(&conf, Some("02:00:00:00:00:01")).unwrap();
        assert_eq!(b.mac, Some([2, 0, 0, 0, 0, 3]));
        let c = json!({"cniVersion": "1.0.0", "name": "n", "type": "t"});
        let conf = NetConf::parse(c.to_string().as_bytes()).unwrap();
        assert_eq!(
            BridgeConfig::from_conf(&conf, Some("02:00:00:00:00:01"))
                .unwrap()
                .mac,
            Some([2, 0, 0, 0, 0, 1])
        );
        assert!(BridgeConfig::from_conf(&conf, Some("zz"))
            .unwrap_err()
            .msg
            .contains("CNI_ARGS MAC"));
        assert!(BridgeConfig::from_conf(&conf, Some("01:00:00:00:00:01"))
            .unwrap_err()
            .msg
            .contains("multicast"));
    }
}
