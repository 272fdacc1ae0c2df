//! Shared pieces of the black-box tests and the bench: where the built binaries are, how to run a
//! plugin the way a runtime does, throw-away network namespaces and data directories, and loud skips.

pub mod control_plane;
pub mod forward;
pub mod go_built;
pub mod host;
pub mod iproute;
pub mod libcni;
pub mod multus;
pub mod netns;
pub mod peers;
pub mod plugin;
pub mod result;
pub mod skip;

use std::path::PathBuf;

/// The workspace root (parent of `conformance/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The directory holding the built plumb binaries: `PLUMB_BIN_DIR`, else `target/debug`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PLUMB_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug")
}

/// Path of one built plumb binary; panics with the build command when it is missing.
pub fn plumb_bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (or set PLUMB_BIN_DIR)",
        p.display()
    );
    p
}

/// Where Debian's reference plugins live.
pub const REFERENCE_CNI_DIR: &str = "/usr/lib/cni";

/// A CNI_PATH that finds plumb binaries first, then the reference plugins.
pub fn cni_path() -> String {
    format!("{}:{}", bin_dir().display(), REFERENCE_CNI_DIR)
}

/// A fresh, unique name with a prefix, short enough for interface and namespace names (≤ 15 chars).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    let mut s = format!("{prefix}{pid:x}{n:x}");
    s.truncate(15);
    s
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a new empty directory under the system temp dir.
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir()
            .join(unique_name(prefix))
            .with_extension(format!("{}", nanos()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// The directory's path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// plumb-ipam's files-store record names under `data_dir` (every space) that start with one of
/// `prefixes`: `ip-` for address claims, `att-` for attachment records.
pub fn ipam_records(
    data_dir: &std::path::Path,
    prefixes: &[&str],
) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(data_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|d| d.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .collect()
}

/// Runs plumb-ipam's admin mode (arguments, no CNI_COMMAND, empty environment); returns its exit code,
/// stdout and stderr.
pub fn ipam_admin(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(plumb_bin("plumb-ipam"))
        .args(args)
        .env_clear()
        .output()
        .expect("run plumb-ipam admin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A small xorshift generator: cheap, deterministic randomness for tests (not quality, not security).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is replaced, as xorshift would stay at 0).
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-enough in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// An index into something of length `len` (> 0).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}
