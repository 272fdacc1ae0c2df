//! Opening a network namespace, to enter it with a [`crate::session::Session`] (one `setns` per
//! request, on a worker thread that ends with the session) or to move a link into it by fd.
//!
//! Opening classifies the path first: a CNI_NETNS that no longer names a network namespace (the empty
//! file an `umount` leaves, a missing path, a directory, any file that is not on nsfs, a namespace of
//! another type) is [`OpenError::Gone`], so DEL can release the host side and succeed; and a handle
//! knows whether it is the host's own namespace ([`Netns::is_host`]), which a plugin must refuse.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

/// Why a path gives no usable network namespace.
#[derive(Debug)]
pub enum OpenError {
    /// Nothing at the path is a network namespace (any more); `why` says what is there instead.
    Gone {
        /// The path given.
        path: String,
        /// What was found instead (missing, empty file, directory, ...).
        why: String,
    },
    /// The path could not be examined (e.g. permission denied): whether a namespace is there is unknown.
    Io(io::Error),
}

impl OpenError {
    /// Whether the namespace is known to be gone (as opposed to unreadable).
    pub fn is_gone(&self) -> bool {
        matches!(self, OpenError::Gone { .. })
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Gone { path, why } => {
                write!(f, "{path} is not a network namespace: {why}")
            }
            OpenError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {}

impl From<OpenError> for io::Error {
    fn from(e: OpenError) -> io::Error {
        match e {
            OpenError::Gone { .. } => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
            OpenError::Io(e) => e,
        }
    }
}

/// An open handle on a network namespace (a `/run/netns/...` or `/proc/<pid>/ns/net` path).
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: String,
}

/// `NS_GET_NSTYPE` is not known to kernels before 4.11, which answer ENOTTY.
fn namespace_type(file: &File) -> io::Result<Option<i32>> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd's namespace type; `file` is open.
    let t = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if t >= 0 {
        return Ok(Some(t));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOTTY) | Some(libc::EINVAL) => Ok(None),
        _ => Err(e),
    }
}

/// The magic of the namespace filesystem (`c_long` or `c_uint` depending on the target).
#[allow(clippy::unnecessary_cast)]
const NSFS_MAGIC: i64 = libc::NSFS_MAGIC as i64;

/// The filesystem magic of an open file (`fstatfs`).
fn fs_magic(file: &File) -> io::Result<i64> {
    // SAFETY: a zeroed statfs is a valid out-parameter; `file` is open for the whole call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable statfs and the fd is open.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64)
}

impl Netns {
    /// Opens the namespace at `path` and makes sure it is one: a path that is missing, an empty
    /// file (an unmounted namespace), a directory or any other file that is not a network namespace
    /// is [`OpenError::Gone`]; other failures to open it are [`OpenError::Io`].
    pub fn open(path: &str) -> Result<Netns, OpenError> {
        let gone = |why: String| OpenError::Gone {
            path: path.to_string(),
            why,
        };
        if path.is_empty() {
            return Err(gone("the path is empty".into()));
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Err(gone("nothing is there".into()))
            }
            Err(e) => {
                return Err(OpenError::Io(io::Error::new(
                    e.kind(),
                    format!("cannot open network namespace {path}: {e}"),
                )))
            }
        };
        let io_err = |what: &str, e: io::Error| {
            OpenError::Io(io::Error::new(
                e.kind(),
                format!("cannot {what} network namespace {path}: {e}"),
            ))
        };
        let meta = file.metadata().map_err(|e| io_err("stat", e))?;
        if fs_magic(&file).map_err(|e| io_err("statfs", e))? != NSFS_MAGIC {
            let what = if meta.is_dir() {
                "it is a directory".to_string()
            } else if meta.is_file() && meta.len() == 0 {
                "it is an empty file (an unmounted namespace)".to_string()
            } else {
                "it is a file that is not a namespace".to_string()
            };
            return Err(gone(what));
        }
        match namespace_type(&file).map_err(|e| io_err("read the type of", e))? {
            Some(t) if t != libc::CLONE_NEWNET => {
                return Err(gone(format!(
                    "it is a namespace of another type ({})",
                    type_name(t)
                )))
            }
            _ => {}
        }
        Ok(Netns {
            file,
            path: path.to_string(),
        })
    }

    /// Whether this is the host's own network namespace: the one this process runs in, or PID 1's.
    /// Plugging a "container" interface into it is never what a runtime means.
    pub fn is_host(&self) -> io::Result<bool> {
        let me = self.file.metadata()?;
        let id = (me.dev(), me.ino());
        for own in ["/proc/self/ns/net", "/proc/1/ns/net"] {
            // PID 1's namespace may be unreadable without privileges; then only our own counts.
            if let Ok(m) = std::fs::metadata(own) {
                if (m.dev(), m.ino()) == id {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The path it was opened from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw fd, for `IFLA_NET_NS_FD` (moving a link into this namespace).
    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// The open namespace file (for the session's worker to enter).
    pub(crate) fn file_fd(&self) -> &File {
        &self.file
    }
}

fn type_name(t: i32) -> String {
    match t {
        libc::CLONE_NEWNS => "mount".into(),
        libc::CLONE_NEWUTS => "uts".into(),
        libc::CLONE_NEWIPC => "ipc".into(),
        libc::CLONE_NEWPID => "pid".into(),
        libc::CLONE_NEWUSER => "user".into(),
        libc::CLONE_NEWCGROUP => "cgroup".into(),
        other => format!("type {other:#x}"),
    }
}

/// The ID the namespace of `nl` gives namespace `ns` (`RTM_GETNSID`), as in a link's
/// `IFLA_LINK_NETNSID`; `None` when it has none.
pub fn nsid(nl: &mut crate::nl::Route, ns: &Netns) -> io::Result<Option<i32>> {
    use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
    use netlink_packet_route::RouteNetlinkMessage;
    let mut m = NsidMessage::default();
    let fd = u32::try_from(ns.fd()).map_err(|_| io::Error::other("negative namespace fd"))?;
    m.attributes.push(NsidAttribute::Fd(fd));
    let reply = nl.get(
        RouteNetlinkMessage::GetNsId(m),
        &format!("get the ID of network namespace {}", ns.path()),
    )?;
    Ok(match reply {
        Some(RouteNetlinkMessage::NewNsId(m)) => m.attributes.iter().find_map(|a| match a {
            NsidAttribute::Id(id) if *id >= 0 => Some(*id),
            _ => None,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(path: &str) -> String {
        match Netns::open(path) {
            Err(OpenError::Gone { why, .. }) => why,
            other => panic!("{path}: expected Gone, got {other:?}"),
        }
    }

    #[test]
    fn what_is_not_a_network_namespace_is_gone() {
        let dir = std::env::temp_dir().join(format!("plumb-netns-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        let text = dir.join("text");
        std::fs::write(&text, b"hello").unwrap();
        assert!(why("").contains("empty"));
        assert!(why(&dir.join("missing").display().to_string()).contains("nothing"));
        assert!(why(&empty.display().to_string()).contains("empty file"));
        assert!(why(&dir.display().to_string()).contains("directory"));
        assert!(why(&text.display().to_string()).contains("not a namespace"));
        assert!(why(&format!("{}/x", text.display())).contains("nothing"));
        assert!(why("/proc/self/ns/uts").contains("uts"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn own_namespace_is_the_host() {
        let ns = Netns::open("/proc/self/ns/net").unwrap();
        assert!(ns.is_host().unwrap());
        let ns = Netns::open("/proc/thread-self/ns/net").unwrap();
        assert!(ns.is_host().unwrap());
    }
}
