//! The real CNI clients and peers built from their published Go modules by `scripts/peers`: cnitool
//! (containernetworking/cni v1.3.x), the reference plugins (containernetworking/plugins v1.10.x) and the
//! libcni driver, all in one cached directory. Tests find it through [`dir`].

use crate::skip::skip;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// What finding the peers came to, remembered for the whole test process.
enum Found {
    /// The directory holding every peer binary.
    Ready(PathBuf),
    /// No usable Go toolchain: tests skip with this reason.
    Missing(String),
    /// The build failed: tests fail with this message.
    Failed(String),
}

static PEERS: OnceLock<Found> = OnceLock::new();

/// The directory holding the peers (`cnitool`, `bridge`, `host-local`, `static`, `tuning`, `portmap`,
/// `vlan`, `libcni-driver`): `PLUMB_PEERS_DIR` when set (scripts/test sets it), else what
/// `scripts/peers` builds or finds in its cache. Returns `None` after a loud skip naming `test` when no
/// Go >= 1.26 is installed; panics when the build fails.
pub fn dir(test: &str) -> Option<PathBuf> {
    match PEERS.get_or_init(find) {
        Found::Ready(p) => Some(p.clone()),
        Found::Missing(why) => {
            skip(test, why);
            None
        }
        Found::Failed(why) => panic!("{why}"),
    }
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

fn find() -> Found {
    if let Some(d) = std::env::var_os("PLUMB_PEERS_DIR") {
        let d = PathBuf::from(d);
        return if d.join("cnitool").is_file() {
            Found::Ready(d)
        } else {
            Found::Failed(format!(
                "PLUMB_PEERS_DIR={} holds no cnitool: run scripts/peers",
                d.display()
            ))
        };
    }
    let script = crate::workspace_root().join("scripts").join("peers");
    let out = match Command::new(&script).stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) => return Found::Failed(format!("running {}: {e}", script.display())),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            match stdout.lines().last().map(str::trim) {
                Some(l) if Path::new(l).join("cnitool").is_file() => Found::Ready(l.into()),
                _ => Found::Failed(format!(
                    "scripts/peers printed no peers directory: {stdout}{stderr}"
                )),
            }
        }
        Some(2) => Found::Missing(format!(
            "needs Go >= 1.26 to build cnitool and the reference plugins: {}",
            stderr.trim()
        )),
        _ => Found::Failed(format!("scripts/peers failed ({}): {stderr}", out.status)),
    }
}
