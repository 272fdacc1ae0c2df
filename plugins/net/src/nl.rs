//! A synchronous rtnetlink socket: send one request, read its replies (a dump or an ACK), and turn a
//! kernel error into an `io::Error` that names the operation. No async runtime: a plugin makes a handful
//! of requests and exits, and a socket opened inside a network namespace stays bound to it.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

/// An rtnetlink socket in the network namespace where it was opened.
#[derive(Debug)]
pub struct Route {
    socket: Socket,
    seq: u32,
}

impl Route {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Route> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let _ = socket.set_ext_ack(true);
        Ok(Route { socket, seq: 0 })
    }

    /// Wraps a socket fd opened elsewhere (e.g. on a thread inside another netns).
    pub fn from_fd(fd: OwnedFd) -> Route {
        // SAFETY: `fd` is an owned, open netlink route socket handed over with its ownership.
        let socket = unsafe { Socket::from_raw_fd(fd.into_raw_fd()) };
        Route { socket, seq: 0 }
    }

    /// Gives the socket up as an owned fd (to move it out of a netns thread).
    pub fn into_fd(self) -> OwnedFd {
        // SAFETY: the Socket is consumed, so the fd has exactly one owner from here on.
        unsafe { OwnedFd::from_raw_fd(self.socket.into_raw_fd()) }
    }

    /// Sends a request that changes state and waits for its ACK. `flags` adds NLM_F_CREATE etc.
    pub fn change(&mut self, msg: RouteNetlinkMessage, flags: u16, what: &str) -> io::Result<()> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | flags, what)
            .map(|_| ())
    }

    /// Sends a dump request and returns every reply.
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        what: &str,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_DUMP, what)
    }

    /// Sends a dump request with strict checking on (`NETLINK_GET_STRICT_CHK`, Linux 4.20+), so the
    /// kernel honours the filters in the request header (an address dump of one interface index sends
    /// only that interface's addresses instead of every address of the namespace); strict checking is
    /// turned off again afterwards. On a kernel without it the dump is unfiltered, so callers filter the
    /// replies themselves too.
    pub fn dump_filtered(
        &mut self,
        msg: RouteNetlinkMessage,
        what: &str,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let strict = self.socket.set_netlink_get_strict_chk(true).is_ok();
        let out = self.dump(msg, what);
        if strict {
            self.socket
                .set_netlink_get_strict_chk(false)
                .map_err(|e| context(e, "turn strict checking off"))?;
        }
        out
    }

    /// Sends a get request for one object; `Ok(None)` when the kernel says it does not exist.
    pub fn get(
        &mut self,
        msg: RouteNetlinkMessage,
        what: &str,
    ) -> io::Result<Option<RouteNetlinkMessage>> {
        match self.exchange(msg, NLM_F_REQUEST, what) {
            Ok(mut v) => Ok(v.pop()),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends one request of a type `netlink-packet-route` does not model (`msg_type`, `payload` after
    /// the netlink header, flags `NLM_F_REQUEST` only) and returns the first reply with its sequence
    /// number as `(type, payload)`; a kernel error is an `Err` naming `what`.
    pub(crate) fn raw_get(
        &mut self,
        msg_type: u16,
        payload: &[u8],
        what: &str,
    ) -> io::Result<(u16, Vec<u8>)> {
        log::debug!("netlink request: {what}");
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = 16 + payload.len();
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&(len as u32).to_ne_bytes());
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(payload);
        self.socket.send(&buf, 0).map_err(|e| context(e, what))?;
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{what}: bad netlink reply"),
            )
        };
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(|e| context(e, what))?;
            let mut offset = 0;
            while offset + 16 <= data.len() {
                let word = |at: usize| u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
                let n = word(offset) as usize;
                if n < 16 || offset + n > data.len() {
                    return Err(bad());
                }
                let ty = u16::from_ne_bytes([data[offset + 4], data[offset + 5]]);
                if word(offset + 8) == seq {
                    let body = data[offset + 16..offset + n].to_vec();
                    if ty == libc::NLMSG_ERROR as u16 {
                        let code =
                            i32::from_ne_bytes(body.get(..4).ok_or_else(bad)?.try_into().unwrap());
                        if code != 0 {
                            return Err(context(io::Error::from_raw_os_error(-code), what));
                        }
                    }
                    return Ok((ty, body));
                }
                offset += (n + 3) & !3;
            }
        }
    }

    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        log::debug!("netlink request: {what}");
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(|e| context(e, what))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(|e| context(e, what))?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{what}: bad netlink reply: {e}"),
                        )
                    })?;
                let len = reply.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(code) => {
                            return Err(context(io::Error::from_raw_os_error(-code.get()), what))
                        }
                    },
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Whether an error means "no such object" (ENODEV, ENOENT, ESRCH, EADDRNOTAVAIL).
pub fn is_not_found(e: &io::Error) -> bool {
    matches!(
        errno(e),
        Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
    )
}

/// Whether an error means "already exists" (EEXIST).
pub fn is_exists(e: &io::Error) -> bool {
    errno(e) == Some(libc::EEXIST)
}

/// The errno behind an error made by this module.
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|i| i.downcast_ref::<Context>())
            .and_then(|c| c.errno)
    })
}

/// An OS error with the operation that caused it.
#[derive(Debug)]
struct Context {
    what: String,
    errno: Option<i32>,
    source: io::Error,
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for Context {}

/// Wraps an error with the operation's description, keeping the errno findable.
pub fn context(e: io::Error, what: &str) -> io::Error {
    let errno = errno(&e);
    io::Error::new(
        e.kind(),
        Context {
            what: what.to_string(),
            errno,
            source: e,
        },
    )
}
