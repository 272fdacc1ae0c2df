//! Entering a network namespace without ever leaving a thread in the wrong one: work for another
//! namespace runs on a fresh thread that switches with `setns` and then ends, so no thread that could
//! be reused ever carries the switch, whatever the work does or returns.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// An open handle on a network namespace (a `/run/netns/...` or `/proc/<pid>/ns/net` path).
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: String,
}

impl Netns {
    /// Opens the namespace at `path`; a missing or foreign path is an error naming it.
    pub fn open(path: &str) -> io::Result<Netns> {
        let file = File::open(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open network namespace {path}: {e}"),
            )
        })?;
        Ok(Netns {
            file,
            path: path.to_string(),
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw fd, for `IFLA_NET_NS_FD` (moving a link into this namespace).
    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Runs `work` inside this namespace on a dedicated thread that ends afterwards; returns its result.
    pub fn run<T, F>(&self, work: F) -> io::Result<T>
    where
        T: Send,
        F: FnOnce() -> io::Result<T> + Send,
    {
        let fd = self.file.as_raw_fd();
        let path = &self.path;
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: `fd` is a namespace fd kept open by `self` for the whole scope; setns only
                // changes this thread's namespace, and this thread ends when the closure returns.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    let e = io::Error::last_os_error();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot enter network namespace {path}: {e}"),
                    ));
                }
                work()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(io::Error::other(format!(
                    "work in network namespace {path} panicked"
                )))
            })
        })
    }
}
