//! Reading and writing `/proc/sys` values. Values under `net/` belong to the network namespace of the
//! calling thread, so inside a container they are read and written on a session's worker
//! ([`crate::session::Session::read_sysctl`], [`crate::session::Session::write_sysctl`]).
//!
//! Keys under `net/<family>/` (`net/ipv4/...`, `net/ipv6/...`) are opened relative to a directory handle
//! on `/proc/sys/net/<family>` that each thread keeps for its current network namespace. The reason is
//! the dentry cache: every namespace has its own `ipv4` and `ipv6` entries under the one shared
//! `/proc/sys/net` directory, all hashed to the same chain, and the kernel compares each entry of that
//! chain (under the global sysctl lock) until it finds the caller's. Newer namespaces sit at the front,
//! so a node namespace created before a thousand pod namespaces walks all of them on every path lookup
//! of a `net/ipv4` or `net/ipv6` key: about 150 µs on a quiet machine with 1300 such namespaces, and
//! 1 ms under load. Below that level every name is per namespace and the lookup is a few µs, so one
//! walk per family and namespace (the first key) is all a thread pays.

use std::cell::RefCell;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

/// Writes `value` to `/proc/sys/<key>` (key with `/` separators, e.g. `net/ipv4/ip_forward`).
pub fn write(key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{key}");
    open(key, libc::O_WRONLY | libc::O_TRUNC)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write {path}: {e}")))
}

/// Reads `/proc/sys/<key>`, trimmed.
pub fn read(key: &str) -> io::Result<String> {
    let path = format!("/proc/sys/{key}");
    let mut s = String::new();
    open(key, libc::O_RDONLY)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map(|_| s.trim().to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {path}: {e}")))
}

/// The namespace a thread's cached family directories belong to, and those directories.
struct Dirs {
    /// The thread's network namespace when the directories were opened (held open, so its inode
    /// number cannot be reused by a new namespace while the handles are cached).
    _ns: File,
    /// `(dev, ino)` of that namespace.
    id: (u64, u64),
    /// `("ipv4", handle on /proc/sys/net/ipv4)` and the like, opened on first use.
    open: Vec<(String, OwnedFd)>,
}

thread_local! {
    /// Per thread: a thread can be in another namespace than the rest of its process.
    static DIRS: RefCell<Option<Dirs>> = const { RefCell::new(None) };
}

/// The calling thread's network namespace as `(dev, ino)`.
fn current_netns() -> io::Result<(u64, u64)> {
    let m = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((m.dev(), m.ino()))
}

/// Opens `/proc/sys/<key>` with `flags`: relative to the thread's cached family directory for keys
/// under `net/<family>/`, by full path for the rest or when no directory handle can be had.
fn open(key: &str, flags: libc::c_int) -> io::Result<File> {
    let mut parts = key.splitn(3, '/');
    if let (Some("net"), Some(family), Some(rest)) = (parts.next(), parts.next(), parts.next()) {
        if let Some(dir) = family_dir(family) {
            return open_at(Some(dir.as_raw_fd()), rest, flags);
        }
    }
    open_at(None, &format!("/proc/sys/{key}"), flags)
}

/// `openat(dir, path)` (or `open(path)` without `dir`) with close-on-exec.
fn open_at(dir: Option<libc::c_int>, path: &str, flags: libc::c_int) -> io::Result<File> {
    let c = CString::new(std::ffi::OsStr::new(path).as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in sysctl key"))?;
    // SAFETY: `c` is a valid NUL-terminated string; `dir` is an open directory fd (or AT_FDCWD).
    let fd = unsafe {
        libc::openat(
            dir.unwrap_or(libc::AT_FDCWD),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A duplicate of the thread's handle on `/proc/sys/net/<family>` in its current namespace (opened on
/// first use, dropped when the thread is found in another namespace); `None` if it cannot be had.
fn family_dir(family: &str) -> Option<OwnedFd> {
    if family.is_empty() || family.contains('.') {
        return None;
    }
    let id = current_netns().ok()?;
    DIRS.with(|cell| {
        let mut dirs = cell.borrow_mut();
        if dirs.as_ref().is_none_or(|d| d.id != id) {
            let ns = File::open("/proc/thread-self/ns/net").ok()?;
            let m = ns.metadata().ok()?;
            *dirs = Some(Dirs {
                _ns: ns,
                id: (m.dev(), m.ino()),
                open: Vec::new(),
            });
        }
        let d = dirs.as_mut()?;
        if d.id != id {
            // The thread moved between the stat and the open: use full paths this time.
            return None;
        }
        if let Some((_, fd)) = d.open.iter().find(|(f, _)| f == family) {
            return fd.try_clone().ok();
        }
        let dir = open_at(
            None,
            &format!("/proc/sys/net/{family}"),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .ok()?;
        let fd = OwnedFd::from(dir);
        let copy = fd.try_clone().ok();
        d.open.push((family.to_string(), fd));
        copy
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_through_the_family_directory_and_by_full_path_alike() {
        // Readable without root on any Linux with IPv4; the relative and the full-path read agree.
        let relative = read("net/ipv4/ip_forward").unwrap();
        let full = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        assert_eq!(relative, full.trim());
        assert!(relative == "0" || relative == "1", "{relative}");
        // The second read of the family reuses the cached directory.
        assert_eq!(read("net/ipv4/ip_forward").unwrap(), relative);
        DIRS.with(|c| {
            let c = c.borrow();
            let d = c.as_ref().expect("a cached directory");
            assert_eq!(d.open.len(), 1);
            assert_eq!(d.open[0].0, "ipv4");
        });
    }

    #[test]
    fn keys_outside_net_and_missing_keys() {
        let v = read("kernel/ostype").unwrap();
        assert_eq!(v, "Linux");
        let e = read("net/ipv4/conf/no-such-device-x/arp_notify").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string()
                .contains("cannot read /proc/sys/net/ipv4/conf/no-such-device-x/arp_notify"),
            "{e}"
        );
    }
}
