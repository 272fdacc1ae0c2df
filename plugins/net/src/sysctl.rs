//! Reading and writing `/proc/sys` values. Values under `net/` belong to the network namespace of the
//! calling thread, so inside a container they are read and written on a session's worker
//! ([`crate::session::Session::read_sysctl`], [`crate::session::Session::write_sysctl`]).

use std::io;

/// Writes `value` to `/proc/sys/<key>` (key with `/` separators, e.g. `net/ipv4/ip_forward`).
pub fn write(key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write {path}: {e}")))
}

/// Reads `/proc/sys/<key>`, trimmed.
pub fn read(key: &str) -> io::Result<String> {
    let path = format!("/proc/sys/{key}");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {path}: {e}")))
}
