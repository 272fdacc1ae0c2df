//! The `plumb-vxlan` executable.

fn main() {
    std::process::exit(plumb_cni::skel::run_process(&plumb_vxlan::plugin::Vxlan));
}
