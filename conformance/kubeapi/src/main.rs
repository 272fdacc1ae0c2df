//! `plumb-test-apiserver`: run the plumb test Kubernetes API server
//! standalone for manual use (kubectl, curl, a plugin under development).
//!
//! ```text
//! plumb-test-apiserver [--port N] [--kubeconfig PATH] [--token TOKEN]
//!                      [--ipblock-status-subresource] [--log]
//! ```

use plumb_kubeapi::{Options, TestApiServer};
use std::path::PathBuf;
use std::time::Duration;

const USAGE: &str = "usage: plumb-test-apiserver [--port N] [--kubeconfig PATH] [--token TOKEN] [--ipblock-status-subresource] [--log]

Serves IPBlocks (plumb.dev/v1alpha1), Pods and Nodes on http://127.0.0.1:N
(N=0 picks a free port) until killed. --kubeconfig writes a kubeconfig
pointing at it; --token requires 'Authorization: Bearer TOKEN'; --log prints
each request.";

fn main() {
    let mut opts = Options::default();
    let mut kubeconfig: Option<PathBuf> = None;
    let mut log = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("{name} needs a value\n{USAGE}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--port" => {
                let v = value("--port");
                opts.port = v.parse().unwrap_or_else(|_| {
                    eprintln!("bad port {v:?}");
                    std::process::exit(2)
                });
            }
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value("--kubeconfig"))),
            "--token" => opts.token = Some(value("--token")),
            "--ipblock-status-subresource" => opts.ipblock_status_subresource = true,
            "--log" => log = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    let token = opts.token.clone();
    let server = TestApiServer::start(opts).unwrap_or_else(|e| {
        eprintln!("cannot start: {e}");
        std::process::exit(1)
    });
    if let Some(path) = &kubeconfig {
        if let Err(e) = server.write_kubeconfig(path, token.as_deref()) {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(1)
        }
        eprintln!("kubeconfig written to {}", path.display());
    }
    println!("{}", server.url());
    let mut seen = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if log {
            let last = seen;
            for r in server.requests().into_iter().filter(|r| r.seq > last) {
                let q = if r.query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", r.query)
                };
                eprintln!("{} {}{} -> {}", r.method, r.path, q, r.status);
                seen = r.seq;
            }
        }
    }
}
