//! Netlink message building and parsing: `nlmsghdr` + `nfgenmsg` + TLV attributes.
//!
//! Everything is little more than byte pushing; the layouts are those of `linux/netlink.h`
//! (host byte order headers, 4-byte aligned attributes) and `linux/netfilter/nfnetlink.h`
//! (`nfgenmsg` with a big-endian `res_id`). nf_tables wants every integer attribute in network
//! byte order, hence [`AttrWriter::be32`].

use crate::sys::*;
use std::io;

/// Rounds `n` up to the netlink alignment (4 bytes).
pub fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The fixed part of an nfnetlink request.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// Full message type: `(subsystem << 8) | operation`, or a control type.
    pub ty: u16,
    /// `NLM_F_*` flags.
    pub flags: u16,
    /// `nfgenmsg.nfgen_family` (an `NFPROTO_*` value).
    pub family: u8,
    /// `nfgenmsg.res_id` in host order (sent big-endian).
    pub res_id: u16,
}

/// A buffer of one or more netlink messages, built one after another.
#[derive(Default)]
pub struct MsgBuf {
    buf: Vec<u8>,
    starts: Vec<usize>,
}

impl MsgBuf {
    /// An empty buffer.
    pub fn new() -> MsgBuf {
        MsgBuf::default()
    }

    /// Appends one message with sequence number 0 (see [`MsgBuf::set_seq`]); `attrs` writes its
    /// attributes after the `nfgenmsg`.
    pub fn push(&mut self, hdr: Header, attrs: impl FnOnce(&mut AttrWriter)) {
        let start = self.buf.len();
        self.starts.push(start);
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched below
        self.buf.extend_from_slice(&hdr.ty.to_ne_bytes());
        self.buf.extend_from_slice(&hdr.flags.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: 0, the kernel fills it
        self.buf.push(hdr.family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&hdr.res_id.to_be_bytes());
        attrs(&mut AttrWriter { buf: &mut self.buf });
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Number of messages in the buffer.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether the buffer holds no message.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Sets the sequence number of message `index`.
    pub fn set_seq(&mut self, index: usize, seq: u32) {
        let at = self.starts[index] + 8;
        self.buf[at..at + 4].copy_from_slice(&seq.to_ne_bytes());
    }

    /// The encoded messages, ready for `send`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Appends attributes to a message or to a nested attribute.
pub struct AttrWriter<'a> {
    buf: &'a mut Vec<u8>,
}

impl AttrWriter<'_> {
    /// An attribute with raw bytes as payload.
    pub fn bytes(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = (NLA_HDRLEN + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// A NUL-terminated string attribute.
    pub fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.bytes(ty, &data)
    }

    /// A 32-bit integer attribute in network byte order, as nf_tables wants them all.
    pub fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    /// A nested attribute (`NLA_F_NESTED` set); `inner` writes its children.
    pub fn nest(&mut self, ty: u16, inner: impl FnOnce(&mut AttrWriter)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]); // nla_len, patched below
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        inner(&mut AttrWriter { buf: self.buf });
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn pad(&mut self) {
        let padded = align(self.buf.len());
        self.buf.resize(padded, 0);
    }
}

/// One received netlink message.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// Everything after the `nlmsghdr`.
    pub payload: &'a [u8],
}

/// Splits a datagram into its netlink messages.
pub fn messages(mut buf: &[u8]) -> io::Result<Vec<Message<'_>>> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(malformed("netlink message length out of bounds"));
        }
        out.push(Message {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes(buf[8..12].try_into().unwrap()),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align(len).min(buf.len())..];
    }
    Ok(out)
}

/// The errno carried by an `NLMSG_ERROR` payload (0 for an ACK) and, with extended ACKs, the
/// kernel's message.
pub fn parse_error(msg: &Message) -> io::Result<(i32, Option<String>)> {
    let p = msg.payload;
    if p.len() < 4 + NLMSG_HDRLEN {
        return Err(malformed("short NLMSG_ERROR"));
    }
    let errno = -i32::from_ne_bytes(p[0..4].try_into().unwrap());
    let mut text = None;
    if msg.flags & NLM_F_ACK_TLVS != 0 {
        // The echoed request is just its header when capped, otherwise the whole message.
        let echoed = if msg.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            u32::from_ne_bytes(p[4..8].try_into().unwrap()) as usize
        };
        let tlvs = p.get(align(4 + echoed)..).unwrap_or(&[]);
        text = attrs(tlvs)
            .find(|&(ty, _)| ty == NLMSGERR_ATTR_MSG)
            .map(|(_, data)| attr_str(data));
    }
    Ok((errno, text))
}

/// Iterates over the attributes in `buf`, yielding `(type without flag bits, payload)`.
/// Stops at the first malformed attribute.
pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

/// Iterator returned by [`attrs`].
pub struct Attrs<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([self.buf[0], self.buf[1]]) as usize;
        let ty = u16::from_ne_bytes([self.buf[2], self.buf[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let data = &self.buf[NLA_HDRLEN..len];
        self.buf = &self.buf[align(len).min(self.buf.len())..];
        Some((ty, data))
    }
}

/// A string attribute's value, without its terminating NUL.
pub fn attr_str(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("nftables: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr() -> Header {
        Header {
            ty: 0x0a03,
            flags: NLM_F_REQUEST | NLM_F_ACK,
            family: 5,
            res_id: NFNL_SUBSYS_NFTABLES,
        }
    }

    #[test]
    fn message_layout_is_header_nfgenmsg_then_aligned_attributes() {
        let mut m = MsgBuf::new();
        m.push(hdr(), |a| {
            a.str(1, "abc").be32(2, 0x0102_0304);
        });
        m.set_seq(0, 7);
        let b = m.as_bytes();
        // nlmsghdr(16) + nfgenmsg(4) + "abc\0"(4+4) + be32(4+4)
        assert_eq!(b.len(), 16 + 4 + 8 + 8);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 36);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 0x0a03);
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        assert_eq!(&b[16..20], &[5, 0, 0, 10]); // family, version, res_id big-endian
        assert_eq!(&b[20..28], &[8, 0, 1, 0, b'a', b'b', b'c', 0]);
        assert_eq!(&b[28..36], &[8, 0, 2, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn odd_sized_attributes_are_padded() {
        let mut m = MsgBuf::new();
        m.push(hdr(), |a| {
            a.bytes(1, &[9; 6]).bytes(2, &[1]);
        });
        let b = m.as_bytes();
        assert_eq!(b.len(), 20 + 12 + 8);
        assert_eq!(u16::from_ne_bytes([b[20], b[21]]), 10); // nla_len excludes padding
        let parsed = messages(b).unwrap();
        let got: Vec<_> = attrs(&parsed[0].payload[4..]).collect();
        assert_eq!(got, vec![(1, &[9u8; 6][..]), (2, &[1u8][..])]);
    }

    #[test]
    fn nests_carry_the_nested_flag_and_their_full_length() {
        let mut m = MsgBuf::new();
        m.push(hdr(), |a| {
            a.nest(4, |h| {
                h.be32(1, 0).str(3, "veth0");
            });
        });
        let b = m.as_bytes();
        let nest = &b[20..];
        assert_eq!(u16::from_ne_bytes([nest[0], nest[1]]) as usize, 4 + 8 + 12);
        assert_eq!(u16::from_ne_bytes([nest[2], nest[3]]), 4 | NLA_F_NESTED);
        let (ty, inner) = attrs(nest).next().unwrap();
        assert_eq!(ty, 4);
        let kids: Vec<_> = attrs(inner).map(|(t, d)| (t, d.to_vec())).collect();
        assert_eq!(kids[0], (1, vec![0, 0, 0, 0]));
        assert_eq!(kids[1].0, 3);
        assert_eq!(attr_str(&kids[1].1), "veth0");
    }

    #[test]
    fn several_messages_split_back_apart() {
        let mut m = MsgBuf::new();
        m.push(hdr(), |_| {});
        m.push(hdr(), |a| {
            a.str(1, "x");
        });
        m.set_seq(0, 1);
        m.set_seq(1, 2);
        let msgs = messages(m.as_bytes()).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!((msgs[0].seq, msgs[1].seq), (1, 2));
        assert_eq!(msgs[1].payload.len(), 4 + 8);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut m = MsgBuf::new();
        m.push(hdr(), |a| {
            a.str(1, "abcdef");
        });
        let b = m.as_bytes();
        assert!(messages(&b[..b.len() - 4]).is_err());
        // A lying attribute length ends iteration.
        assert_eq!(attrs(&[200, 0, 1, 0, 1, 2]).count(), 0);
    }

    #[test]
    fn error_messages_yield_errno_and_extended_ack_text() {
        // NLMSG_ERROR, capped, with TLVs: error -2, echoed header, then NLMSGERR_ATTR_MSG.
        let mut p = Vec::new();
        p.extend_from_slice(&(-2i32).to_ne_bytes());
        p.extend_from_slice(&[0u8; 16]);
        p.extend_from_slice(&[8, 0, 1, 0, b'b', b'a', b'd', 0]);
        let msg = Message {
            ty: NLMSG_ERROR,
            flags: NLM_F_CAPPED | NLM_F_ACK_TLVS,
            seq: 1,
            payload: &p,
        };
        let (errno, text) = parse_error(&msg).unwrap();
        assert_eq!(errno, 2);
        assert_eq!(text.as_deref(), Some("bad"));
    }
}
