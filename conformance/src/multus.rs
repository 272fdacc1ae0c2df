//! The Multus thin plugin (`multus`, gopkg.in/k8snetworkplumbingwg/multus-cni.v4) that `scripts/multus`
//! builds from its published Go module into a cache. Tests find it through [`dir`].

use crate::skip::skip;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// What finding Multus came to, remembered for the whole test process.
enum Found {
    Ready(PathBuf),
    Missing(String),
    Failed(String),
}

static MULTUS: OnceLock<Found> = OnceLock::new();

/// The directory holding the `multus` binary (and `VERSIONS`): `PLUMB_MULTUS_DIR` when set, else what
/// `scripts/multus` builds or finds in its cache. `None` after a loud skip naming `test` when no Go >= 1.26
/// is installed; panics when the build fails.
pub fn dir(test: &str) -> Option<PathBuf> {
    match MULTUS.get_or_init(find) {
        Found::Ready(p) => Some(p.clone()),
        Found::Missing(why) => {
            skip(test, why);
            None
        }
        Found::Failed(why) => panic!("{why}"),
    }
}

fn find() -> Found {
    if let Some(d) = std::env::var_os("PLUMB_MULTUS_DIR") {
        let d = PathBuf::from(d);
        return if d.join("multus").is_file() {
            Found::Ready(d)
        } else {
            Found::Failed(format!(
                "PLUMB_MULTUS_DIR={} holds no multus: run scripts/multus",
                d.display()
            ))
        };
    }
    let script = crate::workspace_root().join("scripts").join("multus");
    let out = match Command::new(&script).stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) => return Found::Failed(format!("running {}: {e}", script.display())),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            match stdout.lines().last().map(str::trim) {
                Some(l) if Path::new(l).join("multus").is_file() => Found::Ready(l.into()),
                _ => Found::Failed(format!(
                    "scripts/multus printed no directory: {stdout}{stderr}"
                )),
            }
        }
        Some(2) => Found::Missing(format!(
            "needs Go >= 1.26 to build Multus: {}",
            stderr.trim()
        )),
        _ => Found::Failed(format!("scripts/multus failed ({}): {stderr}", out.status)),
    }
}
