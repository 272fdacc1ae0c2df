//! An exclusive `flock` on a file, waited for with a deadline. The wait runs on a helper thread so the
//! kernel's own queue orders waiters; when the deadline passes, the caller gets "try again later" (code 11)
//! and the helper closes the file as soon as it gets the lock, so nothing stays held. Lock files may be
//! removed by their holder (see [`LockGuard::remove_on_release_unless`]) and, when their resource went
//! outside plumb, by a GC sweep ([`sweep_resources`]), so they do not pile up.

use crate::error::{code, CniError, CniResult};
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A held lock; released when dropped (the file is closed). A guard made with
/// [`LockGuard::remove_on_release_unless`] first removes its lock file, while still holding it.
pub struct LockGuard {
    file: File,
    path: PathBuf,
    keep: Option<Box<dyn FnOnce() -> bool + Send>>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("path", &self.path)
            .field("removable", &self.keep.is_some())
            .finish()
    }
}

impl LockGuard {
    /// On release, removes the lock file unless `keep()` says the locked thing still needs it (e.g. the
    /// bridge still exists). Safe for every other locker: [`lock_exclusive`] re-checks after getting
    /// the lock that the path still names the file it locked, and starts over if not.
    pub fn remove_on_release_unless(
        mut self,
        keep: impl FnOnce() -> bool + Send + 'static,
    ) -> Self {
        self.keep = Some(Box::new(keep));
        self
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(keep) = self.keep.take() {
            // Still locked here (the file closes after this). Only a file that is still ours goes.
            if !keep() && names_file(&self.path, &self.file).unwrap_or(false) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Takes an exclusive lock on `path` (created if missing), waiting at most `timeout`. A lock file may
/// be removed by its holder ([`LockGuard::remove_on_release_unless`]): after getting the lock, this
/// checks that `path` still names the locked file (same device and inode) and otherwise opens the
/// path again, so two processes never both hold "the" lock through different files.
pub fn lock_exclusive(path: &Path, timeout: Duration) -> CniResult<LockGuard> {
    let give_up = Instant::now() + timeout;
    loop {
        let file = lock_file(
            path,
            give_up.saturating_duration_since(Instant::now()),
            timeout,
        )?;
        match names_file(path, &file) {
            Ok(true) => {
                // The file's mtime says when it was last locked, so a GC sweep spares files in use
                // ([`sweep_dir`]); only tidying rests on it, so a failure is ignored.
                let _ = file.set_modified(std::time::SystemTime::now());
                return Ok(LockGuard {
                    file,
                    path: path.to_path_buf(),
                    keep: None,
                });
            }
            // Removed (or replaced) by the previous holder: lock what the path names now.
            Ok(false) => continue,
            Err(e) => return Err(CniError::io(format!("cannot check {}", path.display()), &e)),
        }
    }
}

/// Whether `path` names the open `file` (not removed, not replaced).
fn names_file(path: &Path, file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens `path` and locks it, waiting at most `wait`; `timeout` is the caller's whole wait, for the message.
fn lock_file(path: &Path, wait: Duration, timeout: Duration) -> CniResult<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| CniError::io(format!("cannot open lock file {}", path.display()), &e))?;
    match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => return Ok(file),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
        Err(e) => return Err(CniError::io(format!("cannot lock {}", path.display()), &e)),
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = flock(&file, libc::LOCK_EX);
        // If the caller gave up, the send fails and `file` is dropped here, releasing the lock.
        let _ = tx.send(r.map(|_| file));
    });
    match rx.recv_timeout(wait) {
        Ok(Ok(file)) => Ok(file),
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
/// 1-64 of letters, digits, `.`, `_`, `-`, not starting with `.`, so it can never leave the directory;
/// another name is refused before the directory or any file is made.
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

/// How long a resource lock file must have gone unlocked before a GC sweep may remove it. One lock
/// directory can serve several network namespaces (test nodes on one host share `/run`), and a
/// resource gone from the sweeper's namespace may be in use in another; a file left a while longer
/// costs nothing.
pub const SWEEP_MIN_IDLE: Duration = Duration::from_secs(600);

/// Removes the lock files `<RESOURCE_LOCK_DIR>/<prefix><name>` of resources that are gone, for GC:
/// see [`sweep_dir`], with [`SWEEP_MIN_IDLE`]. A missing directory has nothing to sweep.
pub fn sweep_resources(prefix: &str, keep: impl FnMut(&str) -> bool) -> std::io::Result<usize> {
    sweep_dir(Path::new(RESOURCE_LOCK_DIR), prefix, SWEEP_MIN_IDLE, keep)
}

/// Removes each lock file `<dir>/<prefix><name>` that nobody holds, that was last locked at least
/// `min_idle` ago (its mtime, set by [`lock_exclusive`]), and whose resource `keep(name)` says is gone;
/// returns how many went. Each file is locked without waiting (`LOCK_NB`): a held one is skipped, and
/// one that is ours is removed while still locked, so a waiter's inode re-check in
/// [`lock_exclusive`] sends it to a fresh file. Bounded by the number of files; other entries (other
/// prefixes, directories, symlinks) are left alone. A file that fails is skipped and the first such
/// error is returned after all others were tried.
pub fn sweep_dir(
    dir: &Path,
    prefix: &str,
    min_idle: Duration,
    mut keep: impl FnMut(&str) -> bool,
) -> std::io::Result<usize> {
    use std::io::ErrorKind::NotFound;
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == NotFound => return Ok(0),
        r => r?,
    };
    let (mut removed, mut first_error) = (0, None);
    for entry in entries {
        let outcome = entry.and_then(|entry| {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                return Ok(false);
            };
            if name.is_empty() || !entry.file_type()?.is_file() {
                return Ok(false);
            }
            let path = entry.path();
            let file = match File::open(&path) {
                Err(e) if e.kind() == NotFound => return Ok(false),
                r => r?,
            };
            match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(false),
                r => r?,
            }
            let idle = file.metadata()?.modified()?.elapsed().unwrap_or_default();
            if idle < min_idle || !names_file(&path, &file)? || keep(name) {
                return Ok(false);
            }
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() == NotFound => Ok(false),
                r => r.map(|()| true),
            }
        });
        match outcome {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(removed),
    }
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

    #[test]
    fn removing_the_file_on_release_never_lets_two_holders_in() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("plumb-lock-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("lock");
        let inside = Arc::new(AtomicUsize::new(0));
        let overlaps = Arc::new(AtomicUsize::new(0));
        // Two lockers that keep the file and one that removes it each time it lets go.
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let (p, inside, overlaps) = (p.clone(), inside.clone(), overlaps.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let mut g = lock_exclusive(&p, Duration::from_secs(20)).unwrap();
                        if t == 2 {
                            g = g.remove_on_release_unless(|| false);
                        }
                        if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::sleep(Duration::from_micros(100));
                        inside.fetch_sub(1, Ordering::SeqCst);
                        drop(g);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(overlaps.load(Ordering::SeqCst), 0);
        let g = lock_exclusive(&p, Duration::from_secs(1)).unwrap();
        drop(g.remove_on_release_unless(|| false));
        assert!(!p.exists(), "the removing guard left its file");
        let kept = lock_exclusive(&p, Duration::from_secs(1)).unwrap();
        drop(kept.remove_on_release_unless(|| true));
        assert!(p.exists(), "a guard told to keep its file removed it");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_sweep_removes_only_unheld_files_of_gone_resources() {
        let dir = std::env::temp_dir().join(format!("plumb-lock-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |n: &str| dir.join(n);
        // "gone": unheld, resource gone → removed; "held": resource gone but locked → stays;
        // "alive": unheld, resource there → stays; other prefixes and directories are not looked at.
        for n in ["bridge-gone", "bridge-held", "bridge-alive", "vtep-gone"] {
            std::fs::write(file(n), b"").unwrap();
        }
        std::fs::create_dir(file("bridge-dir")).unwrap();
        let held = lock_exclusive(&file("bridge-held"), Duration::from_secs(1)).unwrap();
        let mut asked = Vec::new();
        // Just used: spared whatever the predicate says.
        assert_eq!(
            sweep_dir(&dir, "bridge-", Duration::from_secs(600), |_| false).unwrap(),
            0
        );
        let removed = sweep_dir(&dir, "bridge-", Duration::ZERO, |n| {
            asked.push(n.to_string());
            n == "alive"
        })
        .unwrap();
        assert_eq!(removed, 1);
        assert!(!file("bridge-gone").exists());
        for n in ["bridge-held", "bridge-alive", "vtep-gone", "bridge-dir"] {
            assert!(file(n).exists(), "{n} was removed");
        }
        asked.sort();
        // The held file is skipped before its resource is even looked up.
        assert_eq!(asked, ["alive", "gone"]);
        // The holder's file is still the one the path names.
        assert!(names_file(&file("bridge-held"), &held.file).unwrap());
        drop(held);
        assert_eq!(
            sweep_dir(&dir, "bridge-", Duration::ZERO, |_| false).unwrap(),
            2
        );
        assert!(!file("bridge-held").exists() && !file("bridge-alive").exists());
        assert_eq!(
            sweep_dir(&dir.join("missing"), "bridge-", Duration::ZERO, |_| false).unwrap(),
            0
        );
        // Locking stamps the file: an old file just locked again is spared.
        let p = file("bridge-old");
        std::fs::write(&p, b"").unwrap();
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        drop(lock_exclusive(&p, Duration::from_secs(1)).unwrap());
        assert_eq!(
            sweep_dir(&dir, "bridge-", Duration::from_secs(600), |_| false).unwrap(),
            0
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resource_names_that_could_leave_the_directory_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden", "a b", "a\nb", &"x".repeat(65)] {
            let e = lock_resource(bad, Duration::from_millis(1)).unwrap_err();
            assert_eq!(e.code, 7, "{bad:?}");
            assert!(e.msg.contains("cannot name a lock file"), "{}", e.msg);
        }
    }
}
