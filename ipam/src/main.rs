//! The `plumb-ipam` executable: a CNI IPAM plugin when `CNI_COMMAND` is set, an admin tool otherwise.
//! It carries the file store only; Kubernetes-store configs and the Kubernetes admin commands go to
//! plumb-ipam-kube (see `plumb_ipam::helper`), whose crate this one does not depend on, so this binary
//! neither compiles nor links a Kubernetes client.

use plumb_ipam::{admin, helper, plugin};
use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = if let Some(ask) = plugin::person_asks(&args) {
        plumb_cni::cli::answer(&plugin::ABOUT, &ask)
    } else if std::env::var_os("CNI_COMMAND").is_none() && !args.is_empty() {
        if admin::needs_kube(&args) {
            helper::exec_admin(&args)
        } else {
            admin::run_file(&args)
        }
    } else {
        let mut stdin = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            let e =
                plumb_cni::CniError::io("could not read the network configuration from stdin", &e);
            std::process::exit(plumb_cni::skel::fail(&[], &e));
        }
        let kube = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&stdin)
            .is_ok_and(|raw| plumb_ipam::config::uses_kubernetes(&raw));
        if kube {
            helper::run_plugin(&stdin)
        } else {
            plumb_cni::skel::run_with_stdin(&plugin::Ipam::default(), &stdin)
        }
    };
    std::process::exit(code);
}
