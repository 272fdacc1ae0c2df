//! The loopback forwarder the kube-real lane uses to reach the host-loopback API server from a test
//! namespace: bytes relay both ways and are counted, and each fault does what it says.

use conformance::forward::{Fault, Forward};
use conformance::netns::Netns;
use conformance::skip::skip_unless_netns;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// An echo server on the host's loopback that answers each line with the line repeated 4 times.
fn echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let reply = buf[..n].repeat(4);
                    if c.write_all(&reply).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Connects from inside the namespace to its own loopback.
fn connect_in(ns: &Netns, addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let f = std::fs::File::open(ns.path()).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: only this scoped thread changes namespace; it ends after connecting.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        })
        .join()
        .unwrap()
    })
}

fn roundtrip(c: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    c.write_all(msg)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < msg.len() * 4 {
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}

#[test]
fn relays_counts_and_injects_faults_from_inside_a_namespace() {
    if skip_unless_netns("forward_lane") {
        return;
    }
    let target = echo_server();
    let ns = Netns::new("fwd");
    let fwd = Forward::start(Some(&ns.name), target).expect("start forwarder");
    // The host's loopback port is not reachable from the namespace, only the forwarder's is.
    assert!(connect_in(&ns, target).is_err());

    let mut c = connect_in(&ns, fwd.addr()).expect("connect through the forwarder");
    assert_eq!(roundtrip(&mut c, b"ping\n").unwrap(), b"ping\n".repeat(4));
    drop(c);
    let counts = fwd.counts();
    assert_eq!(counts.connections, 1);
    assert_eq!((counts.to_server, counts.to_client), (5, 20));

    fwd.inject(Fault::Refuse, 1);
    let mut c = connect_in(&ns, fwd.addr()).unwrap();
    let r = roundtrip(&mut c, b"x\n");
    assert!(
        r.map(|v| v.is_empty()).unwrap_or(true),
        "a refused connection relays nothing"
    );

    fwd.inject(Fault::CutAfter(6), 1);
    let mut c = connect_in(&ns, fwd.addr()).unwrap();
    let got = roundtrip(&mut c, b"abcd\n").unwrap_or_default();
    assert!(got.len() <= 6, "cut after 6 bytes, got {}", got.len());

    fwd.inject(Fault::Stall, 1);
    let mut c = connect_in(&ns, fwd.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c.write_all(b"y\n").unwrap();
    let mut buf = [0u8; 8];
    let e = c
        .read(&mut buf)
        .expect_err("a stalled connection answers nothing");
    assert!(matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));

    // Faults are used up: the next connection relays again.
    let mut c = connect_in(&ns, fwd.addr()).unwrap();
    assert_eq!(roundtrip(&mut c, b"ok\n").unwrap(), b"ok\n".repeat(4));
}
