//! The `plumb-bridge` executable; `plumb-bridge --gc-uplinks [--remove]` is the uplink cleanup command.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--gc-uplinks") {
        std::process::exit(plumb_bridge::uplink_gc::main(&args[1..]));
    }
    std::process::exit(plumb_cni::skel::run_process(&plumb_bridge::plugin::Bridge));
}
