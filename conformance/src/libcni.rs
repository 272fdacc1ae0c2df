//! Running plugins through libcni, the Go library real runtimes embed: the small `libcni-driver`
//! program (conformance/peers/libcni-driver), built by `scripts/peers` against the same libcni module as
//! cnitool (see [`crate::peers`]), runs network lists with a private config directory and result cache.
//! Kept for what cnitool cannot express: a private result cache (`CNI_CACHE_DIR`), a fixed container id,
//! and the CNI error object on stdout.

use crate::plugin::Outcome;
use crate::TempDir;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Path of the built driver (see [`crate::peers::dir`]). Returns `None` after a loud skip naming `test`
/// when Go >= 1.26 is missing; panics if the build fails.
pub fn driver_bin(test: &str) -> Option<PathBuf> {
    crate::peers::bin(test, "libcni-driver")
}

/// One network configuration driven through libcni: a private NETCONFPATH holding the config,
/// a private result cache, `CNI_PATH` = [`crate::peers::cni_path`] (plumb's binaries, then the reference
/// plugins v1.10 built with the driver), and optional CNI_ARGS/CAP_ARGS.
pub struct Driver {
    bin: PathBuf,
    cni_path: String,
    network: String,
    conf_dir: TempDir,
    cache_dir: TempDir,
    ifname: String,
    cni_args: Option<String>,
    cap_args: Option<String>,
    container_id: Option<String>,
    env: Vec<(String, String)>,
    node: Option<String>,
}

impl Driver {
    /// Writes `config` (a conflist, or a single plugin config when it has no `plugins` key) to a
    /// fresh config directory. Returns `None` after a loud skip naming `test` when the driver
    /// cannot be built on this machine. Panics if `config` has no string `name`.
    pub fn new(test: &str, config: &Value) -> Option<Driver> {
        let bin = driver_bin(test)?;
        let cni_path = crate::peers::cni_path(test)?;
        let network = config["name"]
            .as_str()
            .expect("network config needs a string \"name\"")
            .to_string();
        let conf_dir = TempDir::new("lcnf");
        let ext = if config.get("plugins").is_some() {
            "conflist"
        } else {
            "conf"
        };
        let file = conf_dir.path().join(format!("{network}.{ext}"));
        std::fs::write(
            &file,
            serde_json::to_vec_pretty(config).expect("config JSON"),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        Some(Driver {
            bin,
            cni_path,
            network,
            conf_dir,
            cache_dir: TempDir::new("lcch"),
            ifname: "eth0".into(),
            cni_args: None,
            cap_args: None,
            container_id: None,
            env: Vec::new(),
            node: None,
        })
    }

    /// Sets the container interface name (CNI_IFNAME; default `eth0`).
    pub fn ifname(mut self, name: &str) -> Driver {
        self.ifname = name.into();
        self
    }

    /// Sets CNI_ARGS, `K=V;K=V`, which libcni hands on to every plugin.
    pub fn cni_args(mut self, args: &str) -> Driver {
        self.cni_args = Some(args.into());
        self
    }

    /// Sets the capability arguments (a JSON object) libcni filters into `runtimeConfig`.
    pub fn cap_args(mut self, args: &Value) -> Driver {
        self.cap_args = Some(args.to_string());
        self
    }

    /// Fixes the container id (default: derived by the driver from the netns path).
    pub fn container_id(mut self, id: &str) -> Driver {
        self.container_id = Some(id.into());
        self
    }

    /// Sets one more environment variable for the driver (and so for the plugins it runs).
    pub fn env(mut self, key: &str, value: &str) -> Driver {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the driver (and so every plugin) inside the named network namespace, as on a "node" the
    /// test made, via `ip netns exec`.
    pub fn on_node(mut self, netns_name: &str) -> Driver {
        self.node = Some(netns_name.into());
        self
    }

    /// The network name, as taken from the config.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The NETCONFPATH directory holding the config.
    pub fn conf_dir(&self) -> &Path {
        self.conf_dir.path()
    }

    /// The libcni cache directory (CNI_CACHE_DIR) private to this driver.
    pub fn cache_dir(&self) -> &Path {
        self.cache_dir.path()
    }

    /// ADD the network to the namespace at `netns`; on success stdout is the result JSON.
    pub fn add(&self, netns: &str) -> Outcome {
        self.run("add", netns)
    }

    /// CHECK the network in the namespace at `netns`; prints nothing on success.
    pub fn check(&self, netns: &str) -> Outcome {
        self.run("check", netns)
    }

    /// DEL the network from the namespace at `netns`; prints nothing on success.
    pub fn del(&self, netns: &str) -> Outcome {
        self.run("del", netns)
    }

    /// Runs the driver with `command` (`add`, `check` or `del`) against the namespace at `netns`.
    /// The environment is cleared except PATH, `PLUMB_*` variables and the driver's own settings.
    pub fn run(&self, command: &str, netns: &str) -> Outcome {
        let mut cmd = match &self.node {
            Some(node) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", node]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("PLUMB_")))
            .env("NETCONFPATH", self.conf_dir.path())
            .env("CNI_PATH", &self.cni_path)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_CACHE_DIR", self.cache_dir.path());
        if let Some(a) = &self.cni_args {
            cmd.env("CNI_ARGS", a);
        }
        if let Some(a) = &self.cap_args {
            cmd.env("CAP_ARGS", a);
        }
        if let Some(id) = &self.container_id {
            cmd.env("CNI_CONTAINERID", id);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args([command, self.network.as_str(), netns])
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.bin.display()));
        Outcome {
            exit: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
