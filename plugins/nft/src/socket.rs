//! The `NETLINK_NETFILTER` socket: sends transactions (batches) and dump requests, and collects
//! the kernel's ACKs and errors.
//!
//! A netlink socket belongs to the network namespace it was created in, for its whole life: every
//! request sent on it (and the `SIOCGIFINDEX` lookup in [`Socket::ifindex`]) acts there, whichever
//! thread or namespace later uses the file descriptor.

use crate::msg::{self, AttrWriter, Header, MsgBuf};
use crate::sys::*;
use std::fmt;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long to wait for one reply datagram before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Receive buffer: more than the kernel puts in one dump datagram (it sizes them from this).
const RECV_BUF: usize = 64 * 1024;
/// How often a dump interrupted by a concurrent change is retried.
const DUMP_RETRIES: usize = 8;

/// Opens a `NETLINK_NETFILTER` socket in the calling thread's network namespace.
pub fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments; the result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(os_error("open a NETLINK_NETFILTER socket".into()));
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A failed request: what was being done, and the errno the kernel answered with (plus its
/// extended-ACK message when it gave one). Carried inside the `io::Error`s this crate returns;
/// see [`crate::errno`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftError {
    /// What was being done, e.g. `add chain netdev plumb spoof-1234`.
    pub context: String,
    /// The positive errno the kernel answered with.
    pub errno: i32,
    /// The kernel's extended-ACK text, if any.
    pub detail: Option<String>,
}

impl fmt::Display for NftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = io::Error::from_raw_os_error(self.errno);
        write!(f, "nftables: {}: {os}", self.context)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for NftError {}

impl From<NftError> for io::Error {
    fn from(e: NftError) -> io::Error {
        io::Error::new(io::Error::from_raw_os_error(e.errno).kind(), e)
    }
}

/// Why a transaction was not committed.
#[derive(Debug)]
pub enum CommitError {
    /// The socket itself failed (send, receive, timeout, garbled reply).
    Io(io::Error),
    /// The kernel rejected one or more messages and aborted the whole transaction.
    Rejected(Vec<NftError>),
}

impl From<CommitError> for io::Error {
    fn from(e: CommitError) -> io::Error {
        match e {
            CommitError::Io(e) => e,
            // Never empty; the first error is the cause, later ones usually follow from it.
            CommitError::Rejected(mut errs) => errs.swap_remove(0).into(),
        }
    }
}

/// One transaction: `NFNL_MSG_BATCH_BEGIN`, the requests, `NFNL_MSG_BATCH_END`. The kernel
/// applies all of its requests or none.
pub struct Batch {
    msgs: MsgBuf,
    /// What each message does, for error messages; index-aligned with `msgs`.
    what: Vec<String>,
}

impl Batch {
    /// An empty transaction (just its BEGIN marker).
    pub fn new() -> Batch {
        let mut b = Batch {
            msgs: MsgBuf::new(),
            what: Vec::new(),
        };
        b.control(NFNL_MSG_BATCH_BEGIN, "commit");
        b
    }

    fn control(&mut self, ty: u16, what: &str) {
        let hdr = Header {
            ty,
            flags: NLM_F_REQUEST,
            family: libc::AF_UNSPEC as u8,
            res_id: NFNL_SUBSYS_NFTABLES,
        };
        self.msgs.push(hdr, |_| {});
        self.what.push(what.to_string());
    }

    /// Adds one nf_tables request (`NFT_MSG_*`); `what` describes it for error messages.
    /// `NLM_F_REQUEST | NLM_F_ACK` are always set, so each request gets its own answer.
    pub fn add(
        &mut self,
        what: String,
        op: u16,
        flags: u16,
        family: u8,
        attrs: impl FnOnce(&mut AttrWriter),
    ) {
        let hdr = Header {
            ty: (NFNL_SUBSYS_NFTABLES << 8) | op,
            flags: NLM_F_REQUEST | NLM_F_ACK | flags,
            family,
            res_id: 0,
        };
        self.msgs.push(hdr, attrs);
        self.what.push(what);
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

/// A `NETLINK_NETFILTER` socket plus its sequence counter and receive buffer.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    /// Wraps a `NETLINK_NETFILTER` socket (from [`open`], possibly in another namespace).
    /// Turns on capped and extended ACKs where the kernel has them and sets a reply timeout.
    pub fn new(fd: OwnedFd) -> io::Result<Socket> {
        let one: libc::c_int = 1;
        for opt in [libc::NETLINK_CAP_ACK, libc::NETLINK_EXT_ACK] {
            // Best effort: old kernels lack these and the replies are still parsed correctly.
            let _ = setsockopt(&fd, libc::SOL_NETLINK, opt, &one);
        }
        let tv = libc::timeval {
            tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("nftables: socket does not look like a netlink socket: {e}"),
            )
        })?;
        // Start from a varying number so that stale replies to an earlier user of the same
        // descriptor cannot be mistaken for ours.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Ok(Socket {
            fd,
            seq: nanos ^ std::process::id().rotate_left(16),
            buf: vec![0; RECV_BUF],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    /// Sends a transaction and waits for the kernel's answer to each request in it. On
    /// `Ok(())` everything was committed; on `Rejected` nothing was.
    pub fn commit(&mut self, mut batch: Batch) -> Result<(), CommitError> {
        log::debug!("nftables transaction: {}", batch.what.join("; "));
        batch.control(NFNL_MSG_BATCH_END, "end of batch");
        let n = batch.msgs.len();
        let mut seqs = Vec::with_capacity(n);
        for i in 0..n {
            let seq = self.next_seq();
            batch.msgs.set_seq(i, seq);
            seqs.push(seq);
        }
        let index_of = |seq: u32| seqs.iter().position(|&s| s == seq);
        self.send(batch.msgs.as_bytes()).map_err(CommitError::Io)?;

        // Every request (not BEGIN/END) carries NLM_F_ACK, so each gets exactly one answer,
        // success or error. A failure of the commit itself, or an early failure of the whole
        // batch, comes as one error against BEGIN; after that nothing more is certain to come.
        let mut answered = vec![false; n];
        answered[0] = true;
        answered[n - 1] = true;
        let mut errors = Vec::new();
        let mut batch_failed = false;
        while !batch_failed && answered.iter().any(|a| !a) {
            let len = self.recv(false).map_err(CommitError::Io)?.unwrap_or(0);
            for m in msg::messages(&self.buf[..len]).map_err(CommitError::Io)? {
                let Some(i) = index_of(m.seq) else { continue };
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let (errno, detail) = msg::parse_error(&m).map_err(CommitError::Io)?;
                answered[i] = true;
                if errno != 0 {
                    errors.push(NftError {
                        context: batch.what[i].clone(),
                        errno,
                        detail,
                    });
                    batch_failed |= i == 0;
                }
            }
        }
        if batch_failed {
            // Whatever else the kernel queued was queued before sendmsg returned: drain it.
            while self.recv(true).map_err(CommitError::Io)?.is_some() {}
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CommitError::Rejected(errors))
        }
    }

    /// Sends a read request (`NFT_MSG_GET*`) outside any transaction and returns the payload
    /// (starting with the `nfgenmsg`) of every reply message. With `dump` it asks for all
    /// objects (`NLM_F_DUMP`) and retries when a concurrent change interrupted the dump; without,
    /// for the one object `attrs` names (an absent one is an `ENOENT` error).
    pub fn get(
        &mut self,
        what: &str,
        op: u16,
        family: u8,
        dump: bool,
        attrs: impl Fn(&mut AttrWriter),
    ) -> io::Result<Vec<Vec<u8>>> {
        log::debug!("nftables request: {what}");
        'retry: for _ in 0..DUMP_RETRIES {
            let mut req = MsgBuf::new();
            let hdr = Header {
                ty: (NFNL_SUBSYS_NFTABLES << 8) | op,
                // A dump ends with NLMSG_DONE, a single get with its ACK.
                flags: NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK },
                family,
                res_id: 0,
            };
            req.push(hdr, &attrs);
            let seq = self.next_seq();
            req.set_seq(0, seq);
            self.send(req.as_bytes())?;

            let mut out = Vec::new();
            let mut interrupted = false;
            loop {
                let len = self.recv(false)?.unwrap_or(0);
                for m in msg::messages(&self.buf[..len])? {
                    if m.seq != seq {
                        continue;
                    }
                    interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                    match m.ty {
                        NLMSG_DONE if interrupted => continue 'retry,
                        NLMSG_DONE => return Ok(out),
                        NLMSG_ERROR => {
                            let (errno, detail) = msg::parse_error(&m)?;
                            if errno == 0 {
                                return Ok(out);
                            }
                            let context = what.to_string();
                            return Err(NftError {
                                context,
                                errno,
                                detail,
                            }
                            .into());
                        }
                        _ => out.push(m.payload.to_vec()),
                    }
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            format!("nftables: {what}: ruleset kept changing during the dump"),
        ))
    }

    /// The index of network device `name` in the socket's network namespace.
    pub fn ifindex(&self, name: &str) -> io::Result<u32> {
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { mem::zeroed() };
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            return Err(invalid(format!("bad interface name {name:?}")));
        }
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // SAFETY: SIOCGIFINDEX reads ifr_name and writes ifr_ifindex of the ifreq we pass, which
        // lives for the whole call. On any socket it looks the name up in the socket's netns.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFINDEX as _, &mut req) };
        if rc < 0 {
            return Err(os_error(format!(
                "look up device {name:?} in the socket's network namespace"
            )));
        }
        // SAFETY: on success the kernel filled the ifindex member of the union.
        Ok(unsafe { req.ifr_ifru.ifru_ifindex } as u32)
    }

    fn send(&self, data: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain old data; all-zero then AF_NETLINK addresses the kernel.
        let mut to: libc::sockaddr_nl = unsafe { mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `data` and `to` are valid for the lengths given for the duration of the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(os_error("send to the kernel".into()));
        }
        if n as usize != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "nftables: short send on netlink socket",
            ));
        }
        Ok(())
    }

    /// Receives one datagram from the kernel into `self.buf`; returns its length, or `None`
    /// when `nonblock` and nothing is queued. Datagrams from other sockets are dropped.
    fn recv(&mut self, nonblock: bool) -> io::Result<Option<usize>> {
        let flags = libc::MSG_TRUNC | if nonblock { libc::MSG_DONTWAIT } else { 0 };
        loop {
            // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
            let mut from: libc::sockaddr_nl = unsafe { mem::zeroed() };
            let mut fromlen = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `self.buf`, `from` and `fromlen` are valid for writes of the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    flags,
                    (&mut from as *mut libc::sockaddr_nl).cast(),
                    &mut fromlen,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) if nonblock => return Ok(None),
                    Some(libc::EAGAIN) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("nftables: no reply from the kernel within {REPLY_TIMEOUT:?}"),
                        ))
                    }
                    errno => {
                        return Err(NftError {
                            context: "receive from the kernel".into(),
                            errno: errno.unwrap_or(libc::EIO),
                            detail: None,
                        }
                        .into())
                    }
                }
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("nftables: reply of {n} bytes truncated"),
                ));
            }
            if from.nl_pid != 0 {
                continue; // not from the kernel
            }
            return Ok(Some(n));
        }
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live T and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (v as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's last OS error, as an [`NftError`] saying what was being done.
pub fn os_error(context: String) -> io::Error {
    let errno = io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    NftError {
        context,
        errno,
        detail: None,
    }
    .into()
}

/// An `InvalidInput` error with this crate's prefix.
pub fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("nftables: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_errors_keep_errno_kind_and_context() {
        let e: io::Error = NftError {
            context: "add chain netdev t c".into(),
            errno: libc::EEXIST,
            detail: None,
        }
        .into();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(crate::errno(&e), Some(libc::EEXIST));
        let text = e.to_string();
        assert!(
            text.starts_with("nftables: add chain netdev t c: "),
            "{text}"
        );
        assert!(text.contains("os error 17"), "{text}");
    }

    #[test]
    fn rejected_batches_report_their_first_error() {
        let errs = vec![
            NftError {
                context: "flush chain".into(),
                errno: libc::ENOENT,
                detail: Some("x".into()),
            },
            NftError {
                context: "delete chain".into(),
                errno: libc::EBUSY,
                detail: None,
            },
        ];
        let e: io::Error = CommitError::Rejected(errs).into();
        assert_eq!(crate::errno(&e), Some(libc::ENOENT));
        assert!(e.to_string().ends_with("(x)"));
    }
}
