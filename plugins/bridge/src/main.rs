//! The `plumb-bridge` executable.

fn main() {
    std::process::exit(plumb_cni::skel::run_process(&plumb_bridge::plugin::Bridge));
}
