//! Address ranges as plain integers: an IPv4 or IPv6 subnet, the allocatable span inside it, and the
//! offsets that are never handed out (exclusions, gateway, IPv4 network/broadcast, IPv6 anycast).
//! All math is on `u128` offsets from the span start, so IPv6 ranges of any size work without wrap.

use plumb_cni::{CniError, CniResult};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Address family of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// An address as an integer.
pub fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// An integer as an address of a family.
pub fn from_int(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// A subnet: network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub network: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `addr/len`; host bits are cleared. `field` names the config field in errors.
    pub fn parse(s: &str, field: &str) -> CniResult<Subnet> {
        let (addr, len) = s.split_once('/').ok_or_else(|| {
            CniError::config(format!(
                "{field} {s:?} is not a CIDR: write it as address/prefix, e.g. 10.1.0.0/24"
            ))
        })?;
        let ip: IpAddr = parse_ip(addr, field)?;
        let fam = Family::of(ip);
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= fam.bits())
            .ok_or_else(|| {
                CniError::config(format!(
                    "{field} {s:?} has an invalid prefix length: use 0 to {}",
                    fam.bits()
                ))
            })?;
        Ok(Subnet {
            network: from_int(fam, to_int(ip) & mask(fam, prefix)),
            prefix,
        })
    }

    /// The subnet's family.
    pub fn family(&self) -> Family {
        Family::of(self.network)
    }

    /// First address as an integer.
    pub fn first(&self) -> u128 {
        to_int(self.network)
    }

    /// Last address as an integer.
    pub fn last(&self) -> u128 {
        self.first() | !mask(self.family(), self.prefix) & full(self.family())
    }

    /// Whether the subnet holds an address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family() && (self.first()..=self.last()).contains(&to_int(ip))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn full(fam: Family) -> u128 {
    match fam {
        Family::V4 => u32::MAX as u128,
        Family::V6 => u128::MAX,
    }
}

fn mask(fam: Family, prefix: u8) -> u128 {
    let host_bits = (fam.bits() - prefix) as u32;
    if host_bits >= 128 {
        0
    } else {
        full(fam) & !((1u128 << host_bits) - 1)
    }
}

/// Parses a bare address; `field` names the config field in errors.
pub fn parse_ip(s: &str, field: &str) -> CniResult<IpAddr> {
    s.trim()
        .parse()
        .map_err(|_| CniError::config(format!("{field} {s:?} is not an IP address")))
}

/// An inclusive span of offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    /// First offset.
    pub lo: u128,
    /// Last offset (inclusive).
    pub hi: u128,
}

/// One allocatable range: a subnet, a span of it, and the offsets never handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet addresses are reported in (their prefix length).
    pub subnet: Subnet,
    /// First allocatable address (integer).
    pub start: u128,
    /// Last allocatable address (integer, inclusive).
    pub end: u128,
    /// Blocked offsets relative to `start`, sorted and merged.
    pub blocked: Vec<Span>,
    /// The gateway, if it lies in this subnet.
    pub gateway: Option<IpAddr>,
}

impl Range {
    /// Builds a range from whereabouts-style fields. `range` is a CIDR or `first-last/len`;
    /// `range_start`/`range_end` narrow it; `exclude` lists CIDRs or bare addresses; `gateway` is never
    /// allocated. `field` names the range in errors (e.g. `ipam.range` or `ipam.ipRanges[1].range`).
    pub fn build(
        field: &str,
        range: &str,
        range_start: Option<&str>,
        range_end: Option<&str>,
        exclude: &[String],
        gateway: Option<IpAddr>,
    ) -> CniResult<Range> {
        let (subnet, mut start, mut end) = parse_range_text(field, range)?;
        let fam = subnet.family();
        // IPv4 network and broadcast, IPv6 subnet-router anycast, are never handed out.
        if fam == Family::V4 && subnet.prefix <= 30 {
            start = start.max(subnet.first() + 1);
            end = end.min(subnet.last() - 1);
        } else if fam == Family::V6 && subnet.prefix <= 126 {
            start = start.max(subnet.first() + 1);
        }
        let inside = |name: &str, v: &str| -> CniResult<u128> {
            let ip = parse_ip(v, name)?;
            if !subnet.contains(ip) {
                return Err(CniError::config(format!(
                    "{name} {ip} is outside range {subnet} ({field})"
                )));
            }
            Ok(to_int(ip))
        };
        if let Some(s) = range_start {
            start = start.max(inside(&format!("{field}_start"), s)?);
        }
        if let Some(e) = range_end {
            end = end.min(inside(&format!("{field}_end"), e)?);
        }
        if start > end {
            return Err(CniError::config(format!(
                "{field} {range:?} holds no allocatable address between its start and end"
            )));
        }
        if let Some(g) = gateway.filter(|g| !subnet.contains(*g)) {
            return Err(CniError::config(format!(
                "gateway {g} is outside range {subnet} ({field}); put the gateway inside the range's subnet"
            )));
        }
        let mut blocked = Vec::new();
        for (i, ex) in exclude.iter().enumerate() {
            let name = format!(
                "{}.exclude[{i}]",
                field.rsplit_once('.').map(|(p, _)| p).unwrap_or(field)
            );
            let (ex_fam, lo, hi) = if ex.contains('/') {
                let s = Subnet::parse(ex, &name)?;
                (s.family(), s.first(), s.last())
            } else {
                let ip = parse_ip(ex, &name)?;
                (Family::of(ip), to_int(ip), to_int(ip))
            };
            if ex_fam != fam {
                continue; // another family's exclusion (dual-stack configs share one exclude list)
            }
            push_clipped(&mut blocked, lo, hi, start, end);
        }
        if let Some(g) = gateway {
            push_clipped(&mut blocked, to_int(g), to_int(g), start, end);
        }
        let r = Range {
            subnet,
            start,
            end,
            blocked: merge(blocked),
            gateway,
        };
        if r.usable() == 0 {
            return Err(CniError::config(format!(
                "{field} {range:?}: exclusions and the gateway cover every address; shrink exclude or widen the range"
            )));
        }
        Ok(r)
    }

    /// The family of the range.
    pub fn family(&self) -> Family {
        self.subnet.family()
    }

    /// Number of offsets minus one (`end - start`), which never overflows.
    pub fn last_offset(&self) -> u128 {
        self.end - self.start
    }

    /// Addresses that can be handed out. The span never covers all 2^128 addresses (offset 0 of an IPv6
    /// subnet is skipped), so `last_offset() + 1` cannot overflow.
    pub fn usable(&self) -> u128 {
        let blocked: u128 = self.blocked.iter().map(|s| s.hi - s.lo + 1).sum();
        (self.last_offset() + 1).saturating_sub(blocked)
    }

    /// The address at an offset.
    pub fn addr(&self, offset: u128) -> IpAddr {
        from_int(self.family(), self.start + offset)
    }

    /// The offset of an address, if it lies in the span.
    pub fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        if Family::of(ip) != self.family() {
            return None;
        }
        let n = to_int(ip);
        (self.start..=self.end).contains(&n).then(|| n - self.start)
    }

    /// The first offset at or after `from` that is not blocked, if the span has one. One binary search
    /// over the merged blocked spans, whatever their size: searches never walk blocked offsets one by one.
    pub fn next_allowed(&self, from: u128) -> Option<u128> {
        let i = self.blocked.partition_point(|s| s.hi < from);
        let o = match self.blocked.get(i) {
            // Spans are merged, so the offset after a span's end is never blocked.
            Some(s) if s.lo <= from => s.hi.checked_add(1)?,
            _ => from,
        };
        (o <= self.last_offset()).then_some(o)
    }

    /// Every allowed offset once in next-fit order: from `cursor` to the end, then from 0 up to the
    /// cursor. Each step costs one [`Range::next_allowed`], so taking `n` of them is O(n log spans).
    pub fn allowed_from(&self, cursor: u128) -> impl Iterator<Item = u128> + '_ {
        let cursor = cursor.min(self.last_offset());
        let mut next = self.next_allowed(cursor);
        let mut wrapped = false;
        std::iter::from_fn(move || loop {
            match next {
                Some(o) if wrapped && o >= cursor => return None,
                Some(o) => {
                    next = o.checked_add(1).and_then(|n| self.next_allowed(n));
                    return Some(o);
                }
                None if !wrapped && cursor > 0 => {
                    wrapped = true;
                    next = self.next_allowed(0);
                }
                None => return None,
            }
        })
    }

    /// Whether an offset is blocked.
    pub fn is_blocked(&self, offset: u128) -> bool {
        let i = self.blocked.partition_point(|s| s.hi < offset);
        self.blocked.get(i).is_some_and(|s| s.lo <= offset)
    }

    /// Whether an address may be handed out by this range.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some_and(|o| !self.is_blocked(o))
    }

    /// A stable text key for this range's span, used in store file names.
    pub fn key(&self) -> String {
        format!("{}-{}", self.addr(0), self.addr(self.last_offset()))
    }

    /// How the range reads for people: the span and its subnet.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}-{})",
            self.subnet,
            self.addr(0),
            self.addr(self.last_offset())
        )
    }
}

/// Parses `cidr` or `first-last/len` into the subnet and the integer span it allows.
pub fn parse_range_text(field: &str, text: &str) -> CniResult<(Subnet, u128, u128)> {
    let text = text.trim();
    if let Some((span, len)) = text
        .split_once('-')
        .and_then(|(a, rest)| rest.split_once('/').map(|(b, l)| ((a, b), l)))
    {
        let first = parse_ip(span.0, field)?;
        let last = parse_ip(span.1, field)?;
        let subnet = Subnet::parse(&format!("{first}/{len}"), field)?;
        if !subnet.contains(last) {
            return Err(CniError::config(format!(
                "{field} {text:?}: {last} is outside {subnet}"
            )));
        }
        if to_int(first) > to_int(last) {
            return Err(CniError::config(format!(
                "{field} {text:?}: the first address is after the last"
            )));
        }
        return Ok((subnet, to_int(first), to_int(last)));
    }
    let subnet = Subnet::parse(text, field)?;
    Ok((subnet, subnet.first(), subnet.last()))
}

fn push_clipped(out: &mut Vec<Span>, lo: u128, hi: u128, start: u128, end: u128) {
    let (lo, hi) = (lo.max(start), hi.min(end));
    if lo <= hi {
        out.push(Span {
            lo: lo - start,
            hi: hi - start,
        });
    }
}

fn merge(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if s.lo <= last.hi.saturating_add(1) => last.hi = last.hi.max(s.hi),
            _ => out.push(s),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(range: &str) -> Range {
        Range::build("ipam.range", range, None, None, &[], None).unwrap()
    }

    #[test]
    fn ipv4_skips_network_and_broadcast() {
        let x = r("10.0.0.0/24");
        assert_eq!(x.addr(0).to_string(), "10.0.0.1");
        assert_eq!(x.addr(x.last_offset()).to_string(), "10.0.0.254");
        assert_eq!(x.usable(), 254);
        assert_eq!(r("10.0.0.0/31").usable(), 2);
        assert_eq!(r("10.0.0.7/32").usable(), 1);
        assert_eq!(r("10.0.0.9/24").subnet.to_string(), "10.0.0.0/24");
    }

    #[test]
    fn start_end_len_form() {
        let x = r("192.168.2.225-192.168.2.230/28");
        assert_eq!(x.subnet.to_string(), "192.168.2.224/28");
        assert_eq!(
            (x.addr(0).to_string(), x.usable()),
            ("192.168.2.225".to_string(), 6)
        );
        assert!(Range::build("ipam.range", "10.0.0.9-10.0.0.3/24", None, None, &[], None).is_err());
    }

    #[test]
    fn huge_ipv6_ranges_do_not_wrap() {
        let x = r("fd00::/8");
        assert_eq!(x.addr(0).to_string(), "fd00::1");
        assert_eq!(
            x.addr(x.last_offset()).to_string(),
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        let all = r("::/0");
        assert_eq!(all.usable(), u128::MAX);
        let x = r("2001:db8::/64");
        assert_eq!(
            x.offset_of("2001:db8::ffff:0:0:1".parse().unwrap()),
            Some(0xffff_0000_0000_0000)
        );
    }

    #[test]
    fn exclusions_gateway_and_bounds() {
        let ex = vec![
            "10.0.0.0/28".to_string(),
            "10.0.0.20".to_string(),
            "fd00::/64".to_string(),
        ];
        let x = Range::build(
            "ipam.range",
            "10.0.0.0/24",
            Some("10.0.0.5"),
            Some("10.0.0.100"),
            &ex,
            Some("10.0.0.17".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(x.addr(0).to_string(), "10.0.0.5");
        assert!(!x.allows("10.0.0.15".parse().unwrap()));
        assert!(!x.allows("10.0.0.17".parse().unwrap()));
        assert!(!x.allows("10.0.0.20".parse().unwrap()));
        assert!(x.allows("10.0.0.16".parse().unwrap()));
        assert!(!x.allows("10.0.0.101".parse().unwrap()));
        assert_eq!(x.usable(), 96 - 11 - 2);
        let e = Range::build(
            "ipam.range",
            "10.0.0.0/24",
            Some("10.1.0.5"),
            None,
            &[],
            None,
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("outside range 10.0.0.0/24"), "{}", e.msg);
        let e = Range::build(
            "ipam.range",
            "10.0.0.0/30",
            None,
            None,
            &["10.0.0.0/30".into()],
            None,
        )
        .unwrap_err();
        assert!(e.msg.contains("cover every address"), "{}", e.msg);
        assert_eq!(
            Range::build("ipam.range", "10.0.0.0/33", None, None, &[], None)
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            Range::build("ipam.range", "banana", None, None, &[], None)
                .unwrap_err()
                .code,
            7
        );
    }

    #[test]
    fn next_allowed_jumps_spans_and_allowed_from_wraps_once() {
        let x = Range::build(
            "ipam.range",
            "10.0.0.0/24",
            None,
            None,
            &[
                "10.0.0.1/32".into(),
                "10.0.0.10/31".into(),
                "10.0.0.200/29".into(),
            ],
            None,
        )
        .unwrap();
        // Offsets are from 10.0.0.1: 0 blocked, 9..=10 blocked, 199..=206 blocked, 253 is the last.
        assert_eq!(x.next_allowed(0), Some(1));
        assert_eq!(x.next_allowed(9), Some(11));
        assert_eq!(x.next_allowed(200), Some(207));
        assert_eq!(x.next_allowed(253), Some(253));
        assert_eq!(x.next_allowed(254), None);
        let all: Vec<u128> = x.allowed_from(250).collect();
        assert_eq!(all.len() as u128, x.usable());
        assert_eq!(&all[..5], &[250, 251, 252, 253, 1]);
        assert_eq!(*all.last().unwrap(), 249);
        let huge = Range::build("ipam.range", "::/0", None, None, &["::/1".into()], None).unwrap();
        assert_eq!(
            huge.next_allowed(0).map(|o| huge.addr(o).to_string()),
            Some("8000::".into())
        );
        assert_eq!(
            huge.next_allowed(huge.last_offset()),
            Some(huge.last_offset())
        );
    }

    #[test]
    fn gateway_outside_the_subnet_is_refused() {
        let e = Range::build(
            "ipam.range",
            "10.0.0.0/24",
            None,
            None,
            &[],
            Some("10.9.0.1".parse().unwrap()),
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.contains("gateway 10.9.0.1") && e.msg.contains("10.0.0.0/24"),
            "{}",
            e.msg
        );
    }
}
