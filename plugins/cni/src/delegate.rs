//! Delegation: running another plugin (usually IPAM) found on `CNI_PATH` with this invocation's
//! environment and stdin, and reading back its result or its error with the error's own code.

use crate::env::Command;
use crate::error::{code, CniError, CniResult};
use crate::result::AddResult;
use crate::version::Version;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Finds an executable named `name` in the `CNI_PATH` directories (code 7 if absent or not a bare name).
pub fn find_plugin(name: &str, dirs: &[PathBuf]) -> CniResult<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(CniError::config(format!(
            "plugin type {name:?} must be a bare executable name"
        )));
    }
    for dir in dirs {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(CniError::config(format!(
        "plugin {name:?} was not found in CNI_PATH ({}); install it there or fix the \"type\" field",
        searched.join(":")
    )))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `name` for `command` with this process's environment and `stdin`; returns its stdout on success,
/// or its CNI error (code kept) on failure.
pub fn exec(name: &str, command: Command, dirs: &[PathBuf], stdin: &[u8]) -> CniResult<Vec<u8>> {
    let binary = find_plugin(name, dirs)?;
    let mut child = std::process::Command::new(&binary)
        .env("CNI_COMMAND", command.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::io(
                format!("could not start delegated plugin {}", binary.display()),
                &e,
            )
        })?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin may exit before reading all of stdin; its exit status tells what happened.
        let _ = input.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::io(format!("delegated plugin {name} did not finish"), &e))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let parsed = serde_json::from_slice(&out.stdout)
        .ok()
        .and_then(|v| CniError::from_json(&v));
    Err(match parsed {
        Some(e) => e,
        None => CniError::new(
            code::DELEGATE_FAILED,
            format!(
                "delegated plugin {name} failed ({}) without a CNI error",
                out.status
            ),
        )
        .caused_by(String::from_utf8_lossy(&out.stderr).trim()),
    })
}

/// Delegates ADD and parses the result, written in the configuration's `version`.
pub fn add(name: &str, dirs: &[PathBuf], stdin: &[u8], version: Version) -> CniResult<AddResult> {
    let out = exec(name, Command::Add, dirs, stdin)?;
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
        CniError::decode(format!(
            "delegated plugin {name} printed a result that is not JSON"
        ))
        .caused_by(e)
    })?;
    AddResult::parse(&v, version).map_err(|e| e.caused_by(format!("in the result of {name}")))
}

/// Delegates DEL, CHECK, STATUS or GC, which print nothing on success.
pub fn run(name: &str, command: Command, dirs: &[PathBuf], stdin: &[u8]) -> CniResult<()> {
    exec(name, command, dirs, stdin).map(|_| ())
}
