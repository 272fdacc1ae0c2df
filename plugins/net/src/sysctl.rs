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
//!
//! That one walk is avoided too where the process may make a mount: every key is then opened in a
//! private instance of procfs (`fsopen`/`fsmount`, never attached to any mount tree, gone when
//! the process exits), whose dentry cache holds only the namespaces this process visited. Measured with
//! 3000 namespaces: the first `net/ipv6` open in a new pod namespace took 1.7 ms through `/proc/sys` and
//! 0.15-0.22 ms (the new instance included) through a private one. Without the privilege or the system
//! calls (Linux before 5.2, a seccomp or LSM refusal) the shared `/proc/sys` is used as before, through
//! the per-thread family directories. [`release`] unmounts the instance before a step whose kernel work
//! would otherwise delay its teardown at exit.

use std::cell::RefCell;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

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
    if let Some(opened) = in_private_proc(|root| open_at(Some(root), &format!("sys/{key}"), flags))
    {
        return opened;
    }
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

/// `FSCONFIG_CMD_CREATE` (linux/mount.h): make the superblock from the context.
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
/// `FSOPEN_CLOEXEC` and `FSMOUNT_CLOEXEC` (both 1, linux/mount.h).
const FS_CLOEXEC: libc::c_uint = 1;

/// The process's private procfs instance: its root once made, or why it cannot be made (then the
/// shared `/proc/sys` is used for the rest of the process's life).
static PRIVATE: Mutex<Option<Result<OwnedFd, ()>>> = Mutex::new(None);

/// Runs `f` on the root of the process's private procfs instance (made on first use, again after
/// [`release`]); `None` where the process cannot make one. Keys are opened by path from that root:
/// its dentry cache holds only the namespaces this process visited, so no walk is long.
fn in_private_proc<T>(f: impl FnOnce(libc::c_int) -> T) -> Option<T> {
    let mut private = PRIVATE.lock().unwrap_or_else(|e| e.into_inner());
    let root = private.get_or_insert_with(|| {
        new_proc_instance().map_err(|e| {
            log::debug!("no private procfs instance ({e}); sysctls go through /proc/sys");
        })
    });
    root.as_ref().ok().map(|fd| f(fd.as_raw_fd()))
}

/// Unmounts the private procfs instance now, if there is one; a later sysctl makes a new one. Its
/// teardown waits for an RCU grace period: a few µs on a quiet machine, but as long as the kernel's
/// softirq work lasts when it comes at the process's exit right after a link came up (the IPv6 start
/// of a pod interface floods every port of a big bridge). Callers release it before such a step.
pub fn release() {
    let mut private = PRIVATE.lock().unwrap_or_else(|e| e.into_inner());
    if matches!(*private, Some(Ok(_))) {
        *private = None;
    }
}

/// A new, detached procfs mount: `fsopen("proc")`, create, `fsmount`.
fn new_proc_instance() -> io::Result<OwnedFd> {
    let fail = || io::Error::last_os_error();
    // SAFETY: fsopen takes a NUL-terminated file system name and flags; the result is checked.
    let ctx = unsafe { libc::syscall(libc::SYS_fsopen, c"proc".as_ptr(), FS_CLOEXEC) };
    if ctx < 0 {
        return Err(fail());
    }
    // SAFETY: `ctx` is a new fd owned by nobody else.
    let ctx = unsafe { OwnedFd::from_raw_fd(ctx as libc::c_int) };
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value (NULL, NULL, 0) on a valid fs context fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            null,
            null,
            0,
        )
    };
    if r < 0 {
        return Err(fail());
    }
    // SAFETY: fsmount on a created context fd, with CLOEXEC and no mount attributes; result checked.
    let mnt = unsafe { libc::syscall(libc::SYS_fsmount, ctx.as_raw_fd(), FS_CLOEXEC, 0) };
    if mnt < 0 {
        return Err(fail());
    }
    // SAFETY: `mnt` is a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as libc::c_int) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_through_the_family_directory_and_by_full_path_alike() {
        // Readable without root on any Linux with IPv4: the public API, a read relative to the
        // thread's family directory (the path without a private instance) and a full-path read agree.
        let full = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        assert_eq!(read("net/ipv4/ip_forward").unwrap(), full.trim());
        let dir = family_dir("ipv4").expect("a family directory");
        let mut relative = String::new();
        open_at(Some(dir.as_raw_fd()), "ip_forward", libc::O_RDONLY)
            .unwrap()
            .read_to_string(&mut relative)
            .unwrap();
        assert_eq!(relative, full);
        // The second use of the family reuses the cached directory.
        family_dir("ipv4").expect("a family directory");
        DIRS.with(|c| {
            let c = c.borrow();
            let d = c.as_ref().expect("a cached directory");
            assert_eq!(d.open.len(), 1);
            assert_eq!(d.open[0].0, "ipv4");
        });
    }

    #[test]
    fn a_new_namespace_is_read_and_written_through_the_private_instance() {
        // Needs CAP_SYS_ADMIN (a new namespace, a new procfs instance): skipped loudly without it.
        let t = std::thread::spawn(|| -> Result<(String, bool), String> {
            // SAFETY: unshare only changes this (test) thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(format!("unshare: {}", io::Error::last_os_error()));
            }
            let proc_dev = std::fs::metadata("/proc/sys").unwrap().dev();
            let dev_of = |root| {
                // SAFETY: an all-zero stat is valid, fstat fills it for the open `root`.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: `root` is the open root of the instance, `st` a valid out-pointer.
                assert_eq!(unsafe { libc::fstat(root, &mut st) }, 0);
                st.st_dev
            };
            let private = in_private_proc(dev_of);
            write("net/ipv4/ip_forward", "1").map_err(|e| e.to_string())?;
            let seen = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
            if let Some(dev) = private {
                // Another superblock than /proc; after release a new one serves the next key.
                assert_ne!(dev, proc_dev);
                // (Other tests of this process may make a new one at any time: no check of `None`.)
                release();
                assert_eq!(read("net/ipv4/ip_forward").unwrap(), "1");
                assert!(matches!(*PRIVATE.lock().unwrap(), Some(Ok(_))));
            }
            Ok((seen.trim().to_string(), private.is_some()))
        });
        match t.join().unwrap() {
            Ok((seen, private)) => {
                // The write landed in the thread's new namespace, not in the test's.
                assert_eq!(seen, "1");
                eprintln!("private procfs instance used: {private}");
            }
            Err(e) => eprintln!(
                "SKIPPED a_new_namespace_is_read_and_written_through_the_private_instance: {e}"
            ),
        }
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
