//! The real CNI clients and peers built from their published Go modules by `scripts/peers`: cnitool
//! (containernetworking/cni v1.3.x), the reference plugins (containernetworking/plugins v1.10.x) and the
//! libcni driver, all in one cached directory. Tests find it through [`dir`].

use crate::go_built::{find, Found, Script};
use std::path::PathBuf;
use std::sync::OnceLock;

static PEERS: OnceLock<Found> = OnceLock::new();

const SCRIPT: Script = Script {
    name: "peers",
    var: "PLUMB_PEERS_DIR",
    probe: "cnitool",
    what: "cnitool and the reference plugins",
};

/// The directory holding the peers (`cnitool`, `bridge`, `host-local`, `static`, `tuning`, `portmap`,
/// `vlan`, `libcni-driver`): `PLUMB_PEERS_DIR` when set (scripts/test sets it), else what
/// `scripts/peers` builds or finds in its cache. Returns `None` after a loud skip naming `test` when no
/// Go >= 1.26 is installed; panics when the build fails.
pub fn dir(test: &str) -> Option<PathBuf> {
    PEERS.get_or_init(|| find(SCRIPT)).dir(test)
}

/// Path of one peer binary (see [`dir`]).
pub fn bin(test: &str, name: &str) -> Option<PathBuf> {
    let p = dir(test)?.join(name);
    assert!(p.is_file(), "{} is missing from the peers", p.display());
    Some(p)
}

/// A CNI_PATH that finds plumb's binaries first, then the peers' reference plugins (v1.10.x).
pub fn cni_path(test: &str) -> Option<String> {
    Some(format!(
        "{}:{}",
        crate::bin_dir().display(),
        dir(test)?.display()
    ))
}
