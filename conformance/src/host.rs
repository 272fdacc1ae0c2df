//! Guards for host state that tests running the plugins in the root namespace touch: a link they
//! created, and `net.ipv4.ip_forward`, which gateway bridges turn on.

use std::process::Command;
use std::sync::Mutex;

/// Deletes a host link (a test's bridge or veth) when dropped, whatever happened.
pub struct HostLink(pub String);

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Guards alive in this process, and the host's `ip_forward` from before the first one started.
static FORWARDING: Mutex<(usize, Option<String>)> = Mutex::new((0, None));

/// Puts the host's `ip_forward` back once the last guard in this process is dropped (a bridge with
/// `isGateway` turns it on).
pub struct ForwardingRestore;

impl ForwardingRestore {
    /// Records the current value if no other guard is alive.
    #[allow(clippy::new_without_default)]
    pub fn new() -> ForwardingRestore {
        let mut g = FORWARDING.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 {
            g.1 = std::fs::read_to_string(IP_FORWARD).ok();
        }
        g.0 += 1;
        ForwardingRestore
    }
}

impl Drop for ForwardingRestore {
    fn drop(&mut self) {
        let mut g = FORWARDING.lock().unwrap_or_else(|e| e.into_inner());
        g.0 -= 1;
        if g.0 == 0 {
            if let Some(v) = g.1.take() {
                let _ = std::fs::write(IP_FORWARD, v.trim());
            }
        }
    }
}
