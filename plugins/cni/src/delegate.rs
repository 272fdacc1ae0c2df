//! Delegation: running another plugin (usually IPAM) found on `CNI_PATH` with this invocation's
//! environment and stdin, and reading back its result or its error with the error's own code.

use crate::env::Command;
use crate::error::{code, CniError, CniResult};
use crate::result::AddResult;
use crate::version::Version;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Makes the process `cmd` starts die with its caller: the child asks the kernel for `SIGKILL` when
/// the thread that forked it exits (`PR_SET_PDEATHSIG`), so a plugin killed by its runtime's timeout
/// (or by its own deadline, see [`crate::skel`]) does not leave a delegated plugin running on, holding
/// a pool lock. The parent's pid is recorded before the fork; if the parent died before the `prctl`
/// took effect, the child sees another parent and exits at once, so the race is closed.
///
/// The signal fires when the *thread* that spawned the child exits, not the process: spawn only on a
/// thread that lives until the child has been waited for (the main thread, or the thread that waits
/// for it, as [`exec`] does). The setting survives `exec` of an ordinary binary (not of a set-user-ID
/// or file-capability one), so it also covers a child that replaces itself with another program.
pub fn die_with_parent(cmd: &mut std::process::Command) -> &mut std::process::Command {
    // The pid namespace of the child is the parent's, so getppid() there compares with this number.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs in the forked child before exec; it calls only async-signal-safe functions
    // (prctl, getppid, _exit) and allocates nothing (`last_os_error` holds a plain errno).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}

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

/// Variables set over the inherited environment of a delegated plugin (the spec passes the same
/// environment on; tests and callers that run outside a CNI invocation set the CNI_* ones here).
pub type EnvOverrides<'a> = &'a [(&'a str, &'a str)];

/// Runs `name` for `command` with this process's environment plus `vars`, and `stdin`; returns its stdout
/// on success, or its CNI error (code kept) on failure. The child dies with this process
/// ([`die_with_parent`]) and, when this process runs under a deadline, gets a shorter one
/// ([`crate::deadline::for_child`]), so a hung delegate answers "try again later" while this plugin
/// still has time to undo its own steps.
pub fn exec(
    name: &str,
    command: Command,
    dirs: &[PathBuf],
    stdin: &[u8],
    vars: EnvOverrides,
) -> CniResult<Vec<u8>> {
    let binary = find_plugin(name, dirs)?;
    let mut cmd = std::process::Command::new(&binary);
    die_with_parent(&mut cmd);
    if let Some(bound) = crate::deadline::for_child() {
        cmd.env(crate::deadline::VAR, format!("{:.3}", bound.as_secs_f64()));
    }
    // Spawned and waited for on this thread, as die_with_parent requires.
    let mut child = cmd
        .envs(vars.iter().copied())
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
        // The delegate's log lines go on to the caller's stderr, as the Go invoke package passes them.
        if !out.stderr.is_empty() {
            let _ = std::io::stderr().write_all(&out.stderr);
        }
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
pub fn add(
    name: &str,
    dirs: &[PathBuf],
    stdin: &[u8],
    version: Version,
    vars: EnvOverrides,
) -> CniResult<AddResult> {
    let out = exec(name, Command::Add, dirs, stdin, vars)?;
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
        CniError::decode(format!(
            "delegated plugin {name} printed a result that is not JSON"
        ))
        .caused_by(e)
    })?;
    AddResult::parse(&v, version).map_err(|e| e.caused_by(format!("in the result of {name}")))
}

/// Delegates DEL, CHECK, STATUS or GC, which print nothing on success.
pub fn run(
    name: &str,
    command: Command,
    dirs: &[PathBuf],
    stdin: &[u8],
    vars: EnvOverrides,
) -> CniResult<()> {
    exec(name, command, dirs, stdin, vars).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_plugin(dir: &Path, name: &str, script: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\ncat >/dev/null\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_child_dies_with_the_thread_that_spawned_it() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::thread::spawn(|| {
            let mut c = std::process::Command::new("sleep");
            c.arg("30");
            die_with_parent(&mut c).spawn().unwrap()
        })
        .join()
        .unwrap();
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > std::time::Duration::from_secs(5) {
                let _ = child.kill();
                panic!("the child outlived the thread that spawned it by 5 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }

    #[test]
    fn keeps_the_delegate_error_code_and_parses_results() {
        let dir = std::env::temp_dir().join(format!("plumb-delegate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dirs = vec![PathBuf::from("/nonexistent"), dir.clone()];
        fake_plugin(
            &dir,
            "busy",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"lock"}'; exit 1"#,
        );
        fake_plugin(&dir, "mute", "echo oops >&2; exit 3");
        fake_plugin(
            &dir,
            "ok",
            r#"[ "$CNI_COMMAND" = ADD ] && [ "$CNI_IFNAME" = net1 ] || exit 9; echo '{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.9/24"}]}'"#,
        );
        let e = run("busy", Command::Del, &dirs, b"{}", &[]).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str(), e.details.clone()),
            (11, "busy", vec!["lock".to_string()])
        );
        let e = run("mute", Command::Del, &dirs, b"{}", &[]).unwrap_err();
        assert_eq!(e.code, code::DELEGATE_FAILED);
        assert!(e.to_string().contains("oops"), "{e}");
        let r = add(
            "ok",
            &dirs,
            b"{}",
            Version::V0_3_1,
            &[("CNI_IFNAME", "net1")],
        )
        .unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.0.0.9/24");
        assert_eq!(find_plugin("absent", &dirs).unwrap_err().code, 7);
        assert_eq!(find_plugin("../busy", &dirs).unwrap_err().code, 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
