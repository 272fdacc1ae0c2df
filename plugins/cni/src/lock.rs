//! An exclusive `flock` on a file, waited for with a deadline. The wait runs on a helper thread so the
//! kernel's own queue orders waiters; when the deadline passes, the caller gets "try again later" (code 11)
//! and the helper closes the file as soon as it gets the lock, so nothing stays held.

use crate::error::{code, CniError, CniResult};
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// A held lock; released when dropped (the file is closed).
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

/// Takes an exclusive lock on `path` (created if missing), waiting at most `timeout`.
pub fn lock_exclusive(path: &Path, timeout: Duration) -> CniResult<LockGuard> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| CniError::io(format!("cannot open lock file {}", path.display()), &e))?;
    match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => return Ok(LockGuard { _file: file }),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
        Err(e) => return Err(CniError::io(format!("cannot lock {}", path.display()), &e)),
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = flock(&file, libc::LOCK_EX);
        // If the caller gave up, the send fails and `file` is dropped here, releasing the lock.
        let _ = tx.send(r.map(|_| file));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(file)) => Ok(LockGuard { _file: file }),
        Ok(Err(e)) => Err(CniError::io(format!("cannot lock {}", path.display()), &e)),
        Err(_) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "the lock {} is held by another process for over {} s; try again later",
                path.display(),
                timeout.as_secs()
            ),
        )),
    }
}

/// Where per-resource locks of shared host objects (a bridge, a VTEP) live.
pub const RESOURCE_LOCK_DIR: &str = "/run/plumb/locks";

/// Locks a named shared host object under [`RESOURCE_LOCK_DIR`] (e.g. `bridge-cni0`). The name must be
/// 1-64 of letters, digits, `.`, `_`, `-` so it can never leave the directory.
pub fn lock_resource(name: &str, timeout: Duration) -> CniResult<LockGuard> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(CniError::config(format!(
            "resource name {name:?} cannot name a lock file"
        )));
    }
    std::fs::create_dir_all(RESOURCE_LOCK_DIR)
        .map_err(|e| CniError::io(format!("cannot create {RESOURCE_LOCK_DIR}"), &e))?;
    lock_exclusive(&Path::new(RESOURCE_LOCK_DIR).join(name), timeout)
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: the descriptor is owned by `file`, which outlives this call; flock has no memory effects.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_locker_times_out_with_code_11_then_succeeds() {
        let dir = std::env::temp_dir().join(format!("plumb-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("lock");
        let held = lock_exclusive(&p, Duration::from_secs(1)).unwrap();
        let e = lock_exclusive(&p, Duration::from_millis(100)).unwrap_err();
        assert_eq!(e.code, 11);
        drop(held);
        // The helper thread of the timed-out attempt must not keep the lock.
        assert!(lock_exclusive(&p, Duration::from_secs(2)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
