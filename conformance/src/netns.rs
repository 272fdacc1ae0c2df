//! Throw-away network namespaces, made with `ip netns add` and always deleted on drop.

use std::process::Command;

/// A named network namespace under /run/netns, deleted when dropped.
pub struct Netns {
    /// The namespace name (`ip netns` name).
    pub name: String,
}

impl Netns {
    /// Creates a new namespace with a unique name and brings its loopback up.
    pub fn new(prefix: &str) -> Netns {
        let name = crate::unique_name(prefix);
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's path, as CNI_NETNS takes it.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a command inside the namespace and panics if it fails; returns stdout.
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
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins two namespaces with a veth pair whose ends are both called `name` (each born in its
/// namespace), with `mtu` on both; the ends stay down.
pub fn veth_between(a: &Netns, b: &Netns, name: &str, mtu: u32) {
    let mtu = mtu.to_string();
    run(&[
        "ip", "link", "add", name, "netns", &a.name, "mtu", &mtu, "type", "veth", "peer", "name",
        name, "netns", &b.name, "mtu", &mtu,
    ]);
}

/// Runs a host command, panicking with its stderr if it fails; returns stdout.
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

/// Runs `work` on a thread that entered the namespace `name` (sockets it creates stay in that
/// namespace), and returns what it returns.
pub fn in_netns<T: Send>(name: &str, work: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/run/netns/{name}")).expect("open netns");
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns switches only this scoped thread, which ends when `work` returns; the fd
            // stays open for the whole call.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            work()
        })
        .join()
        .expect("netns thread")
    })
}

/// What this kernel offers for VLANs: (bridge VLAN filtering, 802.1Q devices), probed once per test
/// binary in a throw-away namespace.
pub fn vlan_kernel() -> (bool, bool) {
    static PROBE: std::sync::OnceLock<(bool, bool)> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| {
        let ns = Netns::new("vkq");
        let filtering = ns.try_exec(&[
            "ip",
            "link",
            "add",
            "vq",
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ]);
        ns.try_exec(&[
            "ip", "link", "add", "vq0", "type", "veth", "peer", "name", "vq1",
        ]);
        let dot1q = ns.try_exec(&[
            "ip", "link", "add", "link", "vq0", "name", "vq0.5", "type", "vlan", "id", "5",
        ]);
        (filtering, dot1q)
    })
}

impl Netns {
    /// How many rules of this namespace's `netdev plumb_spoofchk` table name `mac` (compared without
    /// regard to case; 0 when the table does not exist).
    pub fn spoof_rules_naming(&self, mac: &str) -> usize {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-j", "list", "table"])
            .args(["netdev", "plumb_spoofchk"])
            .output()
            .expect("run nft");
        if !out.status.success() {
            return 0;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft -j output");
        let quoted = format!("\"{}\"", mac.to_ascii_lowercase());
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("rule"))
            .filter(|r| r["expr"].to_string().to_ascii_lowercase().contains(&quoted))
            .count()
    }
}
