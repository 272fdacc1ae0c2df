//! One request's work in one network namespace, entered once.
//!
//! [`Session::enter`] starts a worker thread that switches into the namespace with the only `setns`
//! of the request, opens an rtnetlink socket there and hands it back. The socket keeps acting in
//! that namespace from any thread, so rtnetlink work runs on the caller's thread through
//! [`Session::route`]; what must run *inside* the namespace (sysctls under `/proc/sys/net`, which
//! resolve against the opening thread's namespace; opening another socket such as nftables') is
//! sent to the worker as a closure with [`Session::run`].
//!
//! No thread is ever left in the wrong namespace: the calling thread never switches; the worker runs
//! nothing but the session's closures and ends when the session is dropped (its channel closes and
//! drop joins it), on error and panic paths too. A closure that panics ends the worker as well; the
//! session then answers every later request with an error instead of running it elsewhere.

use crate::netns::Netns;
use crate::nl::Route;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// A job for the worker: runs inside the namespace and sends its answer on its own channel.
type Job = Box<dyn FnOnce() + Send>;

/// One request's handle on a network namespace: the namespace, its rtnetlink socket, and a worker
/// thread inside it for what must run there.
#[derive(Debug)]
pub struct Session {
    ns: Netns,
    route: Route,
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl Session {
    /// Enters `ns` (one `setns`, on a new worker thread) and opens the session's rtnetlink socket there.
    pub fn enter(ns: Netns) -> io::Result<Session> {
        let fd = ns.file_fd().try_clone()?;
        let path = ns.path().to_string();
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::channel::<io::Result<OwnedFd>>();
        let worker = std::thread::Builder::new()
            .name("plumb-netns".into())
            .spawn(move || {
                // SAFETY: `fd` is an open namespace fd owned by this closure; setns switches only this
                // thread, which runs nothing but this session's jobs and ends with the session.
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = io::Error::last_os_error();
                    let _ = ready.send(Err(io::Error::new(
                        e.kind(),
                        format!("cannot enter network namespace {path}: {e}"),
                    )));
                    return;
                }
                drop(fd);
                let opened = Route::open().map(Route::into_fd).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot open a netlink socket in network namespace {path}: {e}"),
                    )
                });
                let failed = opened.is_err();
                if ready.send(opened).is_err() || failed {
                    return;
                }
                drop(ready);
                // Ends when the session drops its sender.
                while let Ok(job) = queue.recv() {
                    job();
                }
            })?;
        let route = match started.recv() {
            Ok(Ok(fd)) => Route::from_fd(fd),
            failed => {
                // The worker has returned (or returns now that its queue is closed): join it.
                drop(jobs);
                let _ = worker.join();
                return Err(match failed {
                    Ok(Err(e)) => e,
                    _ => io::Error::other(format!(
                        "the worker for network namespace {} ended before it started",
                        ns.path()
                    )),
                });
            }
        };
        Ok(Session {
            ns,
            route,
            jobs: Some(jobs),
            worker: Some(worker),
        })
    }

    /// The namespace (its path, its fd for `IFLA_NET_NS_FD`).
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// The path the namespace was opened from.
    pub fn path(&self) -> &str {
        self.ns.path()
    }

    /// The session's rtnetlink socket, acting inside the namespace.
    pub fn route(&mut self) -> &mut Route {
        &mut self.route
    }

    /// Runs `work` on the worker thread, inside the namespace, and returns its result: sysctls under
    /// `/proc/sys/net`, or opening a socket that must belong to the namespace (the socket's fd can be
    /// returned and used from any thread).
    pub fn run<T, F>(&self, work: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
    {
        let gone = || {
            io::Error::other(format!(
                "work in network namespace {} failed: its worker ended (a previous job panicked, or the request ended it)",
                self.ns.path()
            ))
        };
        let (answer, result) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(work());
        });
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        result.recv().map_err(|_| gone())?
    }

    /// Ends the worker now (joined before this returns); the rtnetlink socket stays usable, later
    /// [`Session::run`] calls fail. For a request whose work inside the namespace is done before its
    /// last step: a thread left to end at exit competes for a CPU with the kernel's work on that step.
    pub fn end_worker(&mut self) {
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }

    /// Reads `/proc/sys/<key>` inside the namespace (see [`crate::sysctl::read`]).
    pub fn read_sysctl(&self, key: &str) -> io::Result<String> {
        let key = key.to_string();
        self.run(move || crate::sysctl::read(&key))
    }

    /// Writes `/proc/sys/<key>` inside the namespace (see [`crate::sysctl::write`]).
    pub fn write_sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.run(move || crate::sysctl::write(&key, &value))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop; joining makes sure it is gone before we return.
        self.end_worker();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_ns_inode() -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    #[test]
    fn jobs_run_on_one_worker_that_ends_with_the_session() {
        // Our own namespace, so nothing else is needed; setns needs CAP_SYS_ADMIN, so without
        // root the test skips loudly.
        let ns = Netns::open("/proc/self/ns/net").unwrap();
        let session = match Session::enter(ns) {
            Ok(s) => s,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("SKIPPED jobs_run_on_one_worker_that_ends_with_the_session: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let me = std::thread::current().id();
        let a = session.run(|| Ok(std::thread::current().id())).unwrap();
        let b = session.run(|| Ok(std::thread::current().id())).unwrap();
        assert_eq!(a, b, "every job runs on the session's one worker");
        assert_ne!(a, me, "jobs never run on the calling thread");
        assert_eq!(session.run(|| Ok(own_ns_inode())).unwrap(), own_ns_inode());
        let e = session
            .run(|| -> io::Result<()> { Err(io::Error::other("refused")) })
            .unwrap_err();
        assert_eq!(e.to_string(), "refused");
        // SAFETY: gettid has no preconditions and cannot fail.
        let tid = session.run(|| Ok(unsafe { libc::gettid() })).unwrap();
        let task = format!("/proc/self/task/{tid}");
        assert!(std::path::Path::new(&task).exists(), "the worker is alive");
        drop(session);
        // Joined; the kernel reaps the exited thread's task entry a moment after the join returns.
        let gone = (0..100).any(|_| {
            let gone = !std::path::Path::new(&task).exists();
            if !gone {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            gone
        });
        assert!(gone, "the worker outlived its session");
    }

    #[test]
    fn a_panicking_job_ends_the_worker_and_later_jobs_fail() {
        let ns = Netns::open("/proc/self/ns/net").unwrap();
        let Ok(session) = Session::enter(ns) else {
            eprintln!("SKIPPED a_panicking_job_ends_the_worker_and_later_jobs_fail: needs root");
            return;
        };
        let e = session
            .run(|| -> io::Result<()> { panic!("job panics") })
            .unwrap_err();
        assert!(e.to_string().contains("worker ended"), "{e}");
        let e = session.run(|| Ok(1)).unwrap_err();
        assert!(e.to_string().contains("worker ended"), "{e}");
        // Dropping joins the ended worker without hanging.
        drop(session);
    }
}
