//! Binaries a project script builds from published Go modules into a cache (`scripts/peers`,
//! `scripts/multus`): found once per test process, through the script's variable when set, else by
//! running the script, which prints the directory on its last line and exits 2 when no Go >= 1.26 exists.

use crate::skip::skip;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One script's contract.
#[derive(Debug, Clone, Copy)]
pub struct Script {
    /// The script under `scripts/`.
    pub name: &'static str,
    /// The variable naming an already-built directory (set by scripts/test).
    pub var: &'static str,
    /// A binary the directory must hold.
    pub probe: &'static str,
    /// What is built, for the skip message.
    pub what: &'static str,
}

/// What finding the directory came to; keep it in a `OnceLock` for the whole test process.
#[derive(Debug)]
pub enum Found {
    /// The directory holding the binaries.
    Ready(PathBuf),
    /// No usable Go toolchain: tests skip with this reason.
    Missing(String),
    /// The build failed: tests fail with this message.
    Failed(String),
}

impl Found {
    /// The directory; `None` after a loud skip naming `test` when Go is missing; panics when the build
    /// failed.
    pub fn dir(&self, test: &str) -> Option<PathBuf> {
        match self {
            Found::Ready(p) => Some(p.clone()),
            Found::Missing(why) => {
                skip(test, why);
                None
            }
            Found::Failed(why) => panic!("{why}"),
        }
    }
}

/// Finds the directory of `s`: its variable when set, else what its script prints.
pub fn find(s: Script) -> Found {
    if let Some(d) = std::env::var_os(s.var) {
        let d = PathBuf::from(d);
        return if d.join(s.probe).is_file() {
            Found::Ready(d)
        } else {
            Found::Failed(format!(
                "{}={} holds no {}: run scripts/{}",
                s.var,
                d.display(),
                s.probe,
                s.name
            ))
        };
    }
    let script = crate::workspace_root().join("scripts").join(s.name);
    let out = match Command::new(&script).stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) => return Found::Failed(format!("running {}: {e}", script.display())),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            match stdout.lines().last().map(str::trim) {
                Some(l) if Path::new(l).join(s.probe).is_file() => Found::Ready(l.into()),
                _ => Found::Failed(format!(
                    "scripts/{} printed no directory holding {}: {stdout}{stderr}",
                    s.name, s.probe
                )),
            }
        }
        Some(2) => Found::Missing(format!(
            "needs Go >= 1.26 to build {}: {}",
            s.what,
            stderr.trim()
        )),
        _ => Found::Failed(format!(
            "scripts/{} failed ({}): {stderr}",
            s.name, out.status
        )),
    }
}
