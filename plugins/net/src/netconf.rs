//! A namespace's forwarding switch (`net.ipv4.ip_forward`, `net.ipv6.conf.all.forwarding`) read through
//! rtnetlink (`RTM_GETNETCONF` for all interfaces) instead of `/proc/sys`, whose `net/ipv4` and
//! `net/ipv6` lookups walk every namespace's entry (see [`crate::sysctl`]).

use crate::nl::Route;
use std::io;

/// `RTM_GETNETCONF` (linux/rtnetlink.h).
const RTM_GETNETCONF: u16 = 82;
/// `RTM_NEWNETCONF`, the answer.
const RTM_NEWNETCONF: u16 = 80;
/// `NETCONFA_IFINDEX` (linux/netconf.h).
const NETCONFA_IFINDEX: u16 = 1;
/// `NETCONFA_FORWARDING`.
const NETCONFA_FORWARDING: u16 = 2;
/// `NETCONFA_IFINDEX_ALL`: the `all` settings of the namespace.
const NETCONFA_IFINDEX_ALL: i32 = -1;

/// Whether forwarding is on for all interfaces of the socket's namespace, IPv4 or IPv6; `None` when
/// the kernel's answer does not say.
pub fn forwarding(nl: &mut Route, ipv6: bool) -> io::Result<Option<bool>> {
    let family = if ipv6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    // struct netconfmsg (one byte, padded to 4), then NETCONFA_IFINDEX = NETCONFA_IFINDEX_ALL.
    let mut payload = vec![family, 0, 0, 0];
    payload.extend_from_slice(&8u16.to_ne_bytes());
    payload.extend_from_slice(&NETCONFA_IFINDEX.to_ne_bytes());
    payload.extend_from_slice(&NETCONFA_IFINDEX_ALL.to_ne_bytes());
    let what = format!(
        "read the {} forwarding switch",
        if ipv6 { "IPv6" } else { "IPv4" }
    );
    let (ty, body) = nl.raw_get(RTM_GETNETCONF, &payload, &what)?;
    if ty != RTM_NEWNETCONF {
        return Ok(None);
    }
    Ok(attribute(&body, NETCONFA_FORWARDING).map(|v| v != 0))
}

/// The u32 attribute `kind` of a netconf message body (after its 4-byte header), if present.
fn attribute(body: &[u8], kind: u16) -> Option<u32> {
    let mut at = 4;
    while at + 4 <= body.len() {
        let len = u16::from_ne_bytes([body[at], body[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([body[at + 2], body[at + 3]]) & 0x3fff;
        if len < 4 || at + len > body.len() {
            return None;
        }
        if ty == kind && len >= 8 {
            return Some(u32::from_ne_bytes(body[at + 4..at + 8].try_into().ok()?));
        }
        at += (len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, v: u32) -> Vec<u8> {
        let mut b = 8u16.to_ne_bytes().to_vec();
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&v.to_ne_bytes());
        b
    }

    #[test]
    fn finds_the_forwarding_attribute_among_others() {
        let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
        body.extend(nla(NETCONFA_IFINDEX, NETCONFA_IFINDEX_ALL as u32));
        body.extend(nla(NETCONFA_FORWARDING, 1));
        assert_eq!(attribute(&body, NETCONFA_FORWARDING), Some(1));
        assert_eq!(attribute(&body, 7), None);
        // A truncated attribute ends the search instead of reading past the message.
        body.truncate(body.len() - 2);
        assert_eq!(attribute(&body, NETCONFA_FORWARDING), None);
    }

    #[test]
    fn agrees_with_proc_sys_in_this_namespace() {
        // Reading needs no privilege; the kernel's two views of the switch are the same value.
        let mut nl = Route::open().unwrap();
        let via_netlink = forwarding(&mut nl, false).unwrap();
        let via_proc = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        assert_eq!(via_netlink, Some(via_proc.trim() == "1"));
    }
}
