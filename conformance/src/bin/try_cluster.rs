//! `try_cluster`: the kube-real lane's cluster side for a person, used by `scripts/try-multus`.
//!
//! ```text
//! PLUMB_CONTROL_PLANE_BIN=$(scripts/control-plane) target/debug/try_cluster --netns NODE --out DIR < FIFO
//! ```
//!
//! Starts the real etcd + kube-apiserver that `scripts/control-plane` built (as the lane does), creates
//! the NetworkAttachmentDefinition CRD and Multus's service account with its ClusterRole (as the lane
//! does), writes `DIR/admin.kubeconfig` (the admin's client certificate, for kubectl on the host) and
//! `DIR/ca.crt`, and relays `127.0.0.1:<port>` inside the network namespace `NODE` to the API server,
//! so Multus and plumb run inside that "node" and still reach it. Prints `server https://127.0.0.1:<port>`
//! (the URL for kubeconfigs used inside `NODE`), then `ready`, and runs until its stdin is closed;
//! then it stops the servers and removes their files.

use conformance::control_plane;
use conformance::forward::Forward;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| {
                eprintln!(
                    "usage: try_cluster --netns NODE_NETNS --out DIR  (runs until stdin closes)"
                );
                std::process::exit(2)
            })
    };
    let (netns, out) = (value("--netns"), PathBuf::from(value("--out")));
    let cp = control_plane::shared();
    conformance::multus::install(cp);
    std::fs::create_dir_all(&out).expect("create --out");
    cp.write_admin_kubeconfig(&out.join("admin.kubeconfig"));
    std::fs::write(out.join("ca.crt"), cp.ca_pem()).expect("write ca.crt");
    let target: SocketAddr = cp
        .url()
        .trim_start_matches("https://")
        .parse()
        .expect("the API server's address");
    let fwd = Forward::start(Some(&netns), target).unwrap_or_else(|e| {
        eprintln!("try_cluster: cannot listen inside netns {netns}: {e}");
        std::process::exit(1)
    });
    println!("server {}", fwd.https_url());
    println!("ready");
    // Runs until the caller closes stdin.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(fwd);
}
