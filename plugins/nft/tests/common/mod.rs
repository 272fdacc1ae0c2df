//! Shared helpers for the root-only tests: loud skips, throw-away network namespaces, and the
//! `nft` binary (used here only to check what the library did, never by the library).

#![allow(dead_code)]

use plumb_nft::{Family, Nft};
use serde_json::Value;
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Prints a SKIPPED line that cannot be missed, and records it in `PLUMB_SKIP_LOG` if set.
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

fn have_command(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// Returns false (after a loud skip) unless we are root with `ip` and `nft` and the kernel has
/// nf_tables with netdev chains.
pub fn ready(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        skip(test, "needs root (network namespaces, nf_tables)");
        return false;
    }
    for cmd in ["ip", "nft"] {
        if !have_command(cmd) {
            skip(test, &format!("needs the `{cmd}` command"));
            return false;
        }
    }
    let ns = Netns::new("probe");
    let probe = nft_in(&ns.path()).and_then(|nft| nft.ensure_table(Family::Netdev, "probe"));
    if let Err(e) = probe {
        skip(test, &format!("nf_tables is not usable here: {e}"));
        return false;
    }
    true
}

/// An `Nft` whose socket was opened inside the namespace at `path`, on a plumb-net session's worker
/// (as a plugin opens one); the session, and its thread, end before this returns.
pub fn nft_in(path: &str) -> std::io::Result<Nft> {
    let ns = plumb_net::netns::Netns::open(path)?;
    let session = plumb_net::session::Session::enter(ns)?;
    Nft::from_fd(session.run(plumb_nft::open_socket)?)
}

/// A name unique to this process and call, short enough for an interface name with a suffix.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// A network namespace made with `ip netns add`, deleted (with its devices) on drop.
pub struct Netns {
    /// The `ip netns` name.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with a unique name and brings its loopback up.
    pub fn new(prefix: &str) -> Netns {
        let name = unique(&format!("pnft{prefix}"));
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a command inside the namespace, panicking on failure; returns stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs a command inside the namespace; returns whether it succeeded.
    pub fn try_exec(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Creates a veth pair `a` <-> `b` inside the namespace, both up.
    pub fn veth(&self, a: &str, b: &str) {
        self.exec(&["ip", "link", "add", a, "type", "veth", "peer", "name", b]);
        // No IPv6 on the pair: the router solicitations and MLD reports a link sends as it comes up
        // would otherwise reach the other end's ingress hook and bump counters a test reads as 0.
        for dev in [a, b] {
            self.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
            ]);
        }
        self.exec(&["ip", "link", "set", a, "up"]);
        self.exec(&["ip", "link", "set", b, "up"]);
    }

    /// The MAC address of `dev` in this namespace.
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        let out = self.exec(&["cat", &format!("/sys/class/net/{dev}/address")]);
        parse_mac(out.trim())
    }

    /// `nft -j list table FAMILY TABLE` in this namespace, parsed; `None` if there is no table.
    pub fn nft_json(&self, family: &str, table: &str) -> Option<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-j", "list", "table"])
            .args([family, table])
            .output()
            .expect("run nft");
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("nft -j output is JSON"))
    }

    /// `nft list table FAMILY TABLE` in this namespace (text), or `None` if there is no table.
    pub fn nft_text(&self, family: &str, table: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "list", "table"])
            .args([family, table])
            .output()
            .expect("run nft");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command, panicking with its stderr if it fails; returns stdout.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `aa:bb:cc:dd:ee:ff` to bytes.
pub fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    v.try_into().expect("six bytes")
}

/// Bytes to `aa:bb:cc:dd:ee:ff`, as nft prints it.
pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The objects of kind `kind` ("chain", "rule", ...) in an `nft -j` listing.
pub fn objects<'a>(listing: &'a Value, kind: &str) -> Vec<&'a Value> {
    listing["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|o| o.get(kind))
        .collect()
}

/// The chain named `name` in an `nft -j` listing.
pub fn chain<'a>(listing: &'a Value, name: &str) -> Option<&'a Value> {
    objects(listing, "chain")
        .into_iter()
        .find(|c| c["name"] == name)
}

/// The expression lists of the rules of chain `name` in an `nft -j` listing.
pub fn rules<'a>(listing: &'a Value, name: &str) -> Vec<&'a Value> {
    objects(listing, "rule")
        .into_iter()
        .filter(|r| r["chain"] == name)
        .map(|r| &r["expr"])
        .collect()
}
