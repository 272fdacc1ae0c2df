//! Loud skips: a test that needs something this machine lacks says so on stderr and in a
//! `PLUMB_SKIPPED` log, so a lane can count and refuse skips it must not have.

use std::io::Write;

/// Records that `test` was skipped and why; prints a line that cannot be missed.
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(path) = std::env::var_os("PLUMB_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
}

/// Whether we run as root (namespaces, veths and bridges need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a command is on PATH.
pub fn have_command(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// Skips (loudly) and returns true unless running as root with `ip` available.
pub fn skip_unless_netns(test: &str) -> bool {
    if !is_root() {
        skip(test, "needs root to create network namespaces");
        return true;
    }
    if !have_command("ip") {
        skip(test, "needs the `ip` command (apt iproute2)");
        return true;
    }
    false
}

/// Skips (loudly) and returns true unless [`skip_unless_netns`] passes and every command in
/// `commands` is on PATH.
pub fn unavailable(test: &str, commands: &[&str]) -> bool {
    if skip_unless_netns(test) {
        return true;
    }
    for c in commands {
        if !have_command(c) {
            skip(test, &format!("needs the `{c}` command"));
            return true;
        }
    }
    false
}
