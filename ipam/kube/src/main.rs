//! The `plumb-ipam-kube` executable: plumb-ipam with the Kubernetes store and the Kubernetes admin
//! commands (`reconcile`, `nodes`, `crd`, `list`/`usage --kubeconfig`). plumb-ipam runs it for those;
//! it also serves the file store, so it can stand in for plumb-ipam entirely.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = if let Some(ask) = plumb_ipam::plugin::person_asks(&args) {
        let about = plumb_cni::cli::About {
            name: plumb_ipam::helper::NAME,
            ..plumb_ipam::plugin::ABOUT
        };
        plumb_cni::cli::answer(&about, &ask)
    } else if std::env::var_os("CNI_COMMAND").is_none() && !args.is_empty() {
        plumb_ipam_kube::admin::run(&args)
    } else {
        let ipam = plumb_ipam::plugin::Ipam {
            kube: Some(plumb_ipam_kube::ops::open),
        };
        plumb_cni::skel::run_process(&ipam)
    };
    std::process::exit(code);
}
