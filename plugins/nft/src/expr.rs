//! The few nf_tables expressions plumb's rules are made of, their netlink encoding, and the
//! matches built from them (`ether saddr != MAC`, `ip saddr ADDR/LEN`, `oifname NAME`).
//!
//! Registers: everything loads into `NFT_REG_1` (16 bytes) and compares from it; verdicts go to
//! the verdict register. Packet bytes are compared as they are on the wire (network order).

use crate::msg::AttrWriter;
use crate::sys::*;
use std::net::IpAddr;

/// One nf_tables expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// `meta load KEY => dreg`.
    Meta { key: u32, dreg: u32 },
    /// `payload load LEN @ BASE + OFFSET => dreg`.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// `cmp OP sreg DATA`: breaks the rule unless the comparison holds.
    Cmp { sreg: u32, op: u32, data: Vec<u8> },
    /// `dreg = (sreg & mask) ^ xor`, over `mask.len()` bytes.
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `immediate` of a verdict (`NF_DROP`, `NF_ACCEPT`) into the verdict register.
    Verdict(u32),
    /// `counter`: packets and bytes that reached this point of the rule.
    Counter,
    /// `masq`: source NAT to the address of the outgoing interface.
    Masq,
}

impl Expr {
    /// The kernel's name of the expression type.
    pub fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Verdict(_) => "immediate",
            Expr::Counter => "counter",
            Expr::Masq => "masq",
        }
    }

    /// Writes the expression as one `NFTA_LIST_ELEM` of a rule's expression list.
    pub fn encode(&self, w: &mut AttrWriter) {
        w.nest(NFTA_LIST_ELEM, |e| {
            e.str(NFTA_EXPR_NAME, self.name());
            match self {
                Expr::Meta { key, dreg } => {
                    e.nest(NFTA_EXPR_DATA, |d| {
                        d.be32(NFTA_META_KEY, *key).be32(NFTA_META_DREG, *dreg);
                    });
                }
                Expr::Payload {
                    base,
                    offset,
                    len,
                    dreg,
                } => {
                    e.nest(NFTA_EXPR_DATA, |d| {
                        d.be32(NFTA_PAYLOAD_DREG, *dreg)
                            .be32(NFTA_PAYLOAD_BASE, *base)
                            .be32(NFTA_PAYLOAD_OFFSET, *offset)
                            .be32(NFTA_PAYLOAD_LEN, *len);
                    });
                }
                Expr::Cmp { sreg, op, data } => {
                    e.nest(NFTA_EXPR_DATA, |d| {
                        d.be32(NFTA_CMP_SREG, *sreg).be32(NFTA_CMP_OP, *op).nest(
                            NFTA_CMP_DATA,
                            |v| {
                                v.bytes(NFTA_DATA_VALUE, data);
                            },
                        );
                    });
                }
                Expr::Bitwise {
                    sreg,
                    dreg,
                    mask,
                    xor,
                } => {
                    e.nest(NFTA_EXPR_DATA, |d| {
                        d.be32(NFTA_BITWISE_SREG, *sreg)
                            .be32(NFTA_BITWISE_DREG, *dreg)
                            .be32(NFTA_BITWISE_LEN, mask.len() as u32)
                            .nest(NFTA_BITWISE_MASK, |v| {
                                v.bytes(NFTA_DATA_VALUE, mask);
                            })
                            .nest(NFTA_BITWISE_XOR, |v| {
                                v.bytes(NFTA_DATA_VALUE, xor);
                            });
                    });
                }
                Expr::Verdict(code) => {
                    e.nest(NFTA_EXPR_DATA, |d| {
                        d.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT).nest(
                            NFTA_IMMEDIATE_DATA,
                            |v| {
                                v.nest(NFTA_DATA_VERDICT, |c| {
                                    c.be32(NFTA_VERDICT_CODE, *code);
                                });
                            },
                        );
                    });
                }
                // No parameters: the kernel starts counters at zero and masq with no flags.
                Expr::Counter | Expr::Masq => {}
            }
        });
    }
}

/// Writes a rule's `NFTA_RULE_EXPRESSIONS` list.
pub fn encode_rule(exprs: &[Expr], w: &mut AttrWriter) {
    w.nest(NFTA_RULE_EXPRESSIONS, |list| {
        for e in exprs {
            e.encode(list);
        }
    });
}

/// `ether saddr != MAC`, with the `meta iiftype ether` guard nft itself adds in the netdev
/// family (so that the link-layer offsets mean Ethernet, and `nft list` shows `ether saddr`).
pub fn ether_saddr_ne(mac: [u8; 6]) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: NFT_META_IIFTYPE,
            dreg: NFT_REG_1,
        },
        Expr::Cmp {
            sreg: NFT_REG_1,
            op: NFT_CMP_EQ,
            // dev->type is compared in host byte order.
            data: ARPHRD_ETHER.to_ne_bytes().to_vec(),
        },
        Expr::Payload {
            base: NFT_PAYLOAD_LL_HEADER,
            offset: 6,
            len: 6,
            dreg: NFT_REG_1,
        },
        Expr::Cmp {
            sreg: NFT_REG_1,
            op: NFT_CMP_NEQ,
            data: mac.to_vec(),
        },
    ]
}

/// Which address of the IP header to match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `ip saddr` / `ip6 saddr`.
    Source,
    /// `ip daddr` / `ip6 daddr`.
    Destination,
}

/// `ip[6] saddr|daddr ==|!= ADDR/PREFIX`: a network-header load, a mask when the prefix is
/// shorter than the address, and a compare. Host bits of `addr` are ignored.
/// The caller checks `prefix` against the address length.
pub fn ip_match(field: Field, addr: IpAddr, prefix: u8, equal: bool) -> Vec<Expr> {
    let (offset, bytes) = match (addr, field) {
        (IpAddr::V4(a), Field::Source) => (12, a.octets().to_vec()),
        (IpAddr::V4(a), Field::Destination) => (16, a.octets().to_vec()),
        (IpAddr::V6(a), Field::Source) => (8, a.octets().to_vec()),
        (IpAddr::V6(a), Field::Destination) => (24, a.octets().to_vec()),
    };
    let mask = prefix_mask(bytes.len(), prefix);
    let mut out = vec![Expr::Payload {
        base: NFT_PAYLOAD_NETWORK_HEADER,
        offset,
        len: bytes.len() as u32,
        dreg: NFT_REG_1,
    }];
    if mask.iter().any(|&b| b != 0xff) {
        out.push(Expr::Bitwise {
            sreg: NFT_REG_1,
            dreg: NFT_REG_1,
            xor: vec![0; mask.len()],
            mask: mask.clone(),
        });
    }
    out.push(Expr::Cmp {
        sreg: NFT_REG_1,
        op: if equal { NFT_CMP_EQ } else { NFT_CMP_NEQ },
        data: bytes.iter().zip(&mask).map(|(b, m)| b & m).collect(),
    });
    out
}

/// `oifname NAME`: the name is compared NUL-padded to `IFNAMSIZ`, as nft does.
/// The caller checks that `name` is shorter than `IFNAMSIZ`.
pub fn oifname_eq(name: &str) -> Vec<Expr> {
    let mut data = name.as_bytes().to_vec();
    data.resize(IFNAMSIZ, 0);
    vec![
        Expr::Meta {
            key: NFT_META_OIFNAME,
            dreg: NFT_REG_1,
        },
        Expr::Cmp {
            sreg: NFT_REG_1,
            op: NFT_CMP_EQ,
            data,
        },
    ]
}

/// A network mask of `len` bytes with the first `prefix` bits set.
pub fn prefix_mask(len: usize, prefix: u8) -> Vec<u8> {
    let mut left = prefix as usize;
    (0..len)
        .map(|_| {
            let bits = left.min(8);
            left -= bits;
            (0xff00u16 >> bits) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{attr_str, attrs, messages, Header, MsgBuf};

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask(4, 20), vec![0xff, 0xff, 0xf0, 0]);
        assert_eq!(prefix_mask(4, 0), vec![0; 4]);
        assert_eq!(prefix_mask(4, 32), vec![0xff; 4]);
        assert_eq!(prefix_mask(16, 65)[7..9], [0xff, 0x80]);
    }

    #[test]
    fn ip_match_masks_the_subnet_and_skips_the_mask_for_hosts() {
        let m = ip_match(Field::Destination, "10.1.2.3".parse().unwrap(), 20, false);
        assert_eq!(m.len(), 3);
        assert!(matches!(
            m[0],
            Expr::Payload {
                offset: 16,
                len: 4,
                ..
            }
        ));
        assert!(matches!(&m[1], Expr::Bitwise { mask, .. } if mask == &[255, 255, 240, 0]));
        assert_eq!(
            m[2],
            Expr::Cmp {
                sreg: NFT_REG_1,
                op: NFT_CMP_NEQ,
                data: vec![10, 1, 0, 0]
            }
        );
        let h = ip_match(Field::Source, "fd00::5".parse().unwrap(), 128, true);
        assert_eq!(h.len(), 2);
        assert!(matches!(
            h[0],
            Expr::Payload {
                offset: 8,
                len: 16,
                ..
            }
        ));
        let d = ip_match(Field::Destination, "fd00::".parse().unwrap(), 64, true);
        assert!(matches!(
            d[0],
            Expr::Payload {
                offset: 24,
                len: 16,
                ..
            }
        ));
    }

    #[test]
    fn oifname_is_padded_to_ifnamsiz() {
        let m = oifname_eq("eth0");
        assert!(
            matches!(&m[1], Expr::Cmp { data, .. } if data.len() == 16 && &data[..5] == b"eth0\0")
        );
    }

    #[test]
    fn verdict_encoding_nests_data_verdict_code() {
        let mut buf = MsgBuf::new();
        let hdr = Header {
            ty: 0,
            flags: 0,
            family: 0,
            res_id: 0,
        };
        buf.push(hdr, |w| encode_rule(&[Expr::Verdict(NF_DROP)], w));
        let msgs = messages(buf.as_bytes()).unwrap();
        let (ty, list) = attrs(&msgs[0].payload[4..]).next().unwrap();
        assert_eq!(ty, NFTA_RULE_EXPRESSIONS);
        let (ty, elem) = attrs(list).next().unwrap();
        assert_eq!(ty, NFTA_LIST_ELEM);
        let parts: Vec<_> = attrs(elem).collect();
        assert_eq!(parts[0].0, NFTA_EXPR_NAME);
        assert_eq!(attr_str(parts[0].1), "immediate");
        let data: Vec<_> = attrs(parts[1].1).collect();
        assert_eq!(data[0], (NFTA_IMMEDIATE_DREG, &[0u8, 0, 0, 0][..]));
        let (ty, verdict) = attrs(data[1].1).next().unwrap();
        assert_eq!(ty, NFTA_DATA_VERDICT);
        assert_eq!(
            attrs(verdict).next(),
            Some((NFTA_VERDICT_CODE, &[0u8, 0, 0, 0][..]))
        );
    }
}
