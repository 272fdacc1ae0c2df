//! The `plumb-ipam` executable: a CNI IPAM plugin when `CNI_COMMAND` is set, an admin tool otherwise.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = if std::env::var_os("CNI_COMMAND").is_none() && !args.is_empty() {
        plumb_ipam::admin::run(&args)
    } else {
        plumb_cni::skel::run_process(&plumb_ipam::plugin::Ipam)
    };
    std::process::exit(code);
}
