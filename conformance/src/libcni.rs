//! Running plugins through libcni, the Go library real runtimes embed: builds the small
//! `libcni-driver` program (conformance/libcni-driver) once per test process and runs network
//! lists through it with a private config directory and result cache.

use crate::plugin::Outcome;
use crate::skip::{have_command, skip};
use crate::TempDir;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The GOPATH root holding Debian's Go sources (apt golang-github-appc-cni-dev).
pub const GOPATH: &str = "/usr/share/gocode";

/// Where Debian's libcni source lives under [`GOPATH`].
pub const LIBCNI_SRC: &str = "/usr/share/gocode/src/github.com/containernetworking/cni/libcni";

/// The driver's package directory, relative to the workspace root.
const DRIVER_PKG: &str = "conformance/libcni-driver";

/// What building the driver came to, remembered for the whole test process.
enum Built {
    /// The driver binary is ready at this path.
    Ready(PathBuf),
    /// A prerequisite is missing: tests skip with this reason.
    Missing(String),
    /// The build itself failed: tests fail with this message.
    Failed(String),
}

static DRIVER: OnceLock<Built> = OnceLock::new();

/// The cargo target directory: `CARGO_TARGET_DIR`, else `<workspace>/target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
}

/// Where the driver binary is built: `<target>/libcni-driver/libcni-driver`.
pub fn driver_path() -> PathBuf {
    target_dir().join("libcni-driver").join("libcni-driver")
}

/// Path of the built driver, building it on first use in this process. Returns `None` after a
/// loud skip naming `test` when `go` or the libcni source is missing; panics if the build fails.
pub fn driver_bin(test: &str) -> Option<PathBuf> {
    match DRIVER.get_or_init(build) {
        Built::Ready(p) => Some(p.clone()),
        Built::Missing(why) => {
            skip(test, why);
            None
        }
        Built::Failed(why) => panic!("{why}"),
    }
}

/// Newest modification time among the driver's Go sources.
fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "go"))
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .max()
}

fn build() -> Built {
    if !have_command("go") {
        return Built::Missing(
            "needs the Go toolchain to build the libcni driver (apt golang-go)".into(),
        );
    }
    if !Path::new(LIBCNI_SRC).is_dir() {
        return Built::Missing(format!(
            "needs libcni source at {LIBCNI_SRC} (apt golang-github-appc-cni-dev)"
        ));
    }
    let root = crate::workspace_root();
    let out = driver_path();
    let out_dir = out.parent().expect("driver dir").to_path_buf();

    // Up to date: the binary is newer than every Go source of the driver.
    if let (Some(src), Ok(bin)) = (
        newest_source(&root.join(DRIVER_PKG)),
        out.metadata().and_then(|m| m.modified()),
    ) {
        if bin >= src {
            return Built::Ready(out);
        }
    }

    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        return Built::Failed(format!("create {}: {e}", out_dir.display()));
    }
    // Build to a private name, then rename, so concurrent test processes never see half a file.
    let tmp = out_dir.join(format!(".libcni-driver.{}.tmp", std::process::id()));
    let mut cmd = Command::new("go");
    cmd.current_dir(&root)
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(format!("./{DRIVER_PKG}"))
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("CGO_ENABLED", "0")
        .env_remove("GOFLAGS")
        .stdin(Stdio::null());
    if std::env::var_os("GOCACHE").is_none() && std::env::var_os("HOME").is_none() {
        cmd.env("GOCACHE", out_dir.join("gocache"));
    }
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) => return Built::Failed(format!("running `go build` for the libcni driver: {e}")),
    };
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Built::Failed(format!(
            "building the libcni driver failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if let Err(e) = std::fs::rename(&tmp, &out) {
        let _ = std::fs::remove_file(&tmp);
        return Built::Failed(format!(
            "rename {} -> {}: {e}",
            tmp.display(),
            out.display()
        ));
    }
    Built::Ready(out)
}

/// One network configuration driven through libcni: a private NETCONFPATH holding the config,
/// a private result cache, `CNI_PATH` = [`crate::cni_path`], and optional CNI_ARGS/CAP_ARGS.
pub struct Driver {
    bin: PathBuf,
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
            .env("CNI_PATH", crate::cni_path())
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
