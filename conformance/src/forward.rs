//! A loopback TCP forwarder, optionally fault-injecting, for servers that live on the host's loopback
//! (the real kube-apiserver of the kube-real lane) but must be reached from inside a test namespace,
//! or through a proxy that counts bytes and breaks connections on purpose.
//!
//! The listening socket is made by a thread that entered the namespace, so it is `127.0.0.1:<port>`
//! *inside* that namespace; every accepted connection is relayed to `target` from the host's loopback.
//! Traffic therefore only ever crosses loopback. TLS passes through untouched: faults act on the TCP
//! stream (refuse, reset after some bytes, stall, delay), HTTP-level faults stay with the test API
//! server.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the forwarder does to the next accepted connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Accept and close at once, before any byte is relayed.
    Refuse,
    /// Relay until the server has sent this many bytes to the client, then reset both sides.
    CutAfter(u64),
    /// Accept and relay nothing (the client waits for its own timeout); closed when the forwarder stops.
    Stall,
    /// Wait this long before connecting to the target, then relay normally.
    Delay(Duration),
}

/// Byte and connection counts seen by a forwarder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections accepted.
    pub connections: u64,
    /// Bytes relayed from clients to the target.
    pub to_server: u64,
    /// Bytes relayed from the target to clients.
    pub to_client: u64,
}

#[derive(Default)]
struct Shared {
    /// Faults for the next connections, used front first; empty means relay normally.
    faults: Mutex<Vec<(Fault, u32)>>,
    connections: AtomicU64,
    to_server: AtomicU64,
    to_client: AtomicU64,
    stopping: AtomicBool,
    stalled: Mutex<Vec<TcpStream>>,
}

/// A running forwarder; stops (and closes stalled connections) on drop.
pub struct Forward {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Forward {
    /// Listens on `127.0.0.1:0` inside the named namespace (`/run/netns/<netns>`), or in the
    /// caller's namespace when `netns` is `None`, and relays to `target`.
    pub fn start(netns: Option<&str>, target: SocketAddr) -> std::io::Result<Forward> {
        Forward::start_at(netns, 0, target)
    }

    /// As [`Forward::start`], on `127.0.0.1:<port>` (0: any free port). Several namespaces can each
    /// have a forwarder on the same port, so one kubeconfig serves them all, as one node-local path
    /// serves every node of a cluster.
    pub fn start_at(
        netns: Option<&str>,
        port: u16,
        target: SocketAddr,
    ) -> std::io::Result<Forward> {
        let listener = match netns {
            Some(name) => listen_in(name, port)?,
            None => TcpListener::bind(("127.0.0.1", port))?,
        };
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || accept_loop(listener, target, s));
        Ok(Forward { addr, shared })
    }

    /// The listening address (inside the namespace given to `start`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`: the server URL a kubeconfig inside the namespace uses.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Applies `fault` to the next `times` accepted connections (after any faults already queued).
    pub fn inject(&self, fault: Fault, times: u32) {
        self.shared.faults.lock().unwrap().push((fault, times));
    }

    /// Drops queued faults that have not fired yet.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// Connection and byte counts so far.
    pub fn counts(&self) -> Counts {
        Counts {
            connections: self.shared.connections.load(Ordering::SeqCst),
            to_server: self.shared.to_server.load(Ordering::SeqCst),
            to_client: self.shared.to_client.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stopping`; failure means it is already gone.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for c in self.shared.stalled.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Binds the listener from a thread that entered the namespace; the socket stays in that namespace.
fn listen_in(name: &str, port: u16) -> std::io::Result<TcpListener> {
    let ns = std::fs::File::open(format!("/run/netns/{name}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns moves only this scoped thread, which ends right after binding; `ns` stays
            // open for the call.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            TcpListener::bind(("127.0.0.1", port))
        })
        .join()
        .expect("listener thread")
    })
}

fn next_fault(shared: &Shared) -> Option<Fault> {
    let mut faults = shared.faults.lock().unwrap();
    let (fault, times) = faults.first_mut()?;
    let f = *fault;
    *times -= 1;
    if *times == 0 {
        faults.remove(0);
    }
    Some(f)
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let fault = next_fault(&shared);
        let s = shared.clone();
        std::thread::spawn(move || serve(client, target, s, fault));
    }
}

fn serve(client: TcpStream, target: SocketAddr, shared: Arc<Shared>, fault: Option<Fault>) {
    let mut cut = u64::MAX;
    match fault {
        Some(Fault::Refuse) => return,
        Some(Fault::Stall) => {
            shared.stalled.lock().unwrap().push(client);
            return;
        }
        Some(Fault::Delay(d)) => std::thread::sleep(d),
        Some(Fault::CutAfter(n)) => cut = n,
        None => {}
    }
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        return;
    };
    // Relay each read at once: with Nagle's algorithm a small write waits for the peer's delayed ACK
    // (about 40 ms), which the direct connection does not, and every call through the forwarder would
    // look that much slower.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let up = {
        let shared = shared.clone();
        std::thread::spawn(move || pump(c2, s2, &shared.to_server, u64::MAX))
    };
    pump(server, client, &shared.to_client, cut);
    let _ = up.join();
}

/// Copies `from` → `to` until EOF, an error, or `limit` bytes; then shuts both down.
fn pump(mut from: TcpStream, mut to: TcpStream, counter: &AtomicU64, limit: u64) {
    let mut buf = [0u8; 16 * 1024];
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = n.min((limit - sent) as usize);
        // Counted before the write: once written, the reader may act on the bytes (and read the
        // counts) before this thread runs again. Taken back if the write fails.
        counter.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).is_err() {
            counter.fetch_sub(n as u64, Ordering::SeqCst);
            break;
        }
        sent += n as u64;
        if sent >= limit {
            // A reset rather than a clean close: the client sees a broken stream mid-response.
            set_linger_zero(&to);
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket fd this function borrows, with a correctly sized `linger`.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
