//! plumb-ipam hands everything that needs the Kubernetes client to plumb-ipam-kube (the same code with
//! the client linked in): CNI calls whose config selects the Kubernetes store, and the admin commands
//! `reconcile`, `nodes`, `crd` and `--kubeconfig`. plumb-ipam stays small, so the many calls on the file
//! store do not pay for loading the client. The helper is looked for next to plumb-ipam, then on
//! CNI_PATH.

use plumb_cni::{code, CniError};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The helper's executable name.
pub const NAME: &str = "plumb-ipam-kube";

/// Where the helper is: beside the running binary, else in a CNI_PATH directory.
pub fn find() -> Result<PathBuf, CniError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(NAME)));
    let on_path = std::env::var_os("CNI_PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(NAME))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                code::IO_FAILURE,
                format!("the Kubernetes store and its admin commands are in {NAME}, which is neither beside plumb-ipam nor on CNI_PATH; install it with plumb-ipam"),
            )
        })
}

/// A config this size fits in a pipe's buffer (64 KiB on Linux) with room to spare, so it can be
/// written whole before the helper starts reading.
const PIPE_SAFE: usize = 60 * 1024;

/// Runs the helper as a CNI plugin on the same environment with `stdin` as its config; its reply and
/// exit code become this process's. A config that fits in a pipe is written into one that becomes the
/// helper's stdin, and this process is replaced by the helper (no second process to wait for).
pub fn run_plugin(stdin: &[u8]) -> i32 {
    let bin = match find() {
        Ok(b) => b,
        Err(e) => return plumb_cni::skel::fail(stdin, &e),
    };
    if stdin.len() <= PIPE_SAFE {
        if let Ok((reader, mut writer)) = std::io::pipe() {
            if writer.write_all(stdin).is_ok() {
                drop(writer);
                let e = Command::new(&bin).stdin(reader).exec();
                let err = CniError::new(code::IO_FAILURE, format!("cannot run {}", bin.display()))
                    .caused_by(e);
                return plumb_cni::skel::fail(stdin, &err);
            }
        }
    }
    // Spawned and waited for on the main thread, as die_with_parent requires.
    let child = plumb_cni::delegate::die_with_parent(&mut Command::new(&bin))
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let err = CniError::new(code::IO_FAILURE, format!("cannot run {}", bin.display()))
                .caused_by(e);
            return plumb_cni::skel::fail(stdin, &err);
        }
    };
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    match child.wait() {
        Ok(status) => status.code().unwrap_or(1),
        Err(e) => {
            let err =
                CniError::new(code::IO_FAILURE, format!("lost {}", bin.display())).caused_by(e);
            plumb_cni::skel::fail(stdin, &err)
        }
    }
}

/// Replaces this process with the helper running admin command `args`; returns only on failure.
pub fn exec_admin(args: &[String]) -> i32 {
    match find() {
        Ok(bin) => {
            let e = Command::new(&bin).args(args).exec();
            eprintln!("plumb-ipam: cannot run {}: {e}", bin.display());
            1
        }
        Err(e) => {
            eprintln!("plumb-ipam: {}", e.msg);
            1
        }
    }
}
