//! The Multus thin plugin (`multus`, gopkg.in/k8snetworkplumbingwg/multus-cni.v4) that `scripts/multus`
//! builds from its published Go module into a cache. Tests find it through [`dir`].

use crate::go_built::{find, Found, Script};
use std::path::PathBuf;
use std::sync::OnceLock;

static MULTUS: OnceLock<Found> = OnceLock::new();

const SCRIPT: Script = Script {
    name: "multus",
    var: "PLUMB_MULTUS_DIR",
    probe: "multus",
    what: "Multus",
};

/// The directory holding the `multus` binary (and `VERSIONS`): `PLUMB_MULTUS_DIR` when set, else what
/// `scripts/multus` builds or finds in its cache. `None` after a loud skip naming `test` when no Go >= 1.26
/// is installed; panics when the build fails.
pub fn dir(test: &str) -> Option<PathBuf> {
    MULTUS.get_or_init(|| find(SCRIPT)).dir(test)
}
