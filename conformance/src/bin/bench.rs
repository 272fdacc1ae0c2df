//! `bench`: plumb's performance targets, measured on this machine against the built release binaries.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run -p conformance --release --bin bench -- ipam [--iterations N] [--block B] [--cycles K]
//! cargo run -p conformance --release --bin bench -- bridge [--iterations N] [--block B] [--existing N] [--extra K]
//! cargo run -p conformance --release --bin bench -- kube
//! cargo run -p conformance --release --bin bench -- kube-real [--nodes N] [--per-node M]
//! cargo run -p conformance --release --bin bench -- kube-scale [--scale-nodes N] [--allocations M] [--samples K]
//! cargo run -p conformance --release --bin bench -- kube-scale-real [--scale-nodes N] [--allocations M] [--samples K] [--no-whereabouts]
//! cargo run -p conformance --release --bin bench -- soak [--ops N] [--workers W] [--kill-rate P] [--bridge-ops M] [--deadline S] [--seed X]
//! ```
//!
//! Mode `ipam` measures, in one run:
//!
//! 1. whole-process ADD+DEL of `plumb-ipam` against Debian's `host-local` on the same /16, interleaved
//!    in blocks so machine noise hits both alike (target: median ratio plumb/host-local ≤ 0.4);
//! 2. in-process alloc+release pairs per second through the plumb-ipam library at 0 %, 50 % and 99 %
//!    occupancy of a /16, one pool per level, measured in rotating blocks too (targets: ≥ 5,000 ops/s
//!    at every level, max/min ≤ 1.5).
//!
//! Mode `bridge` (root; see `bench/bridge.rs`) measures, in one run, with every device in network
//! namespaces the bench creates and removes:
//!
//! 1. ADD and DEL of plumb-bridge + plumb-ipam, of the reference bridge + host-local (the v1.10 build
//!    of `scripts/peers` when there, else Debian's) as whole processes, and of the **kernel floor**
//!    (`bench/floor.rs`: the same veth, port, address and route operations from this process through
//!    plumb-net, no exec, no plugin logic), each on its own bridge, each pair in a fresh container
//!    netns, interleaved in blocks. Targets: plumb ADD median ≤ 1.15 × floor ADD median; plumb DEL
//!    median ≤ floor DEL median + 1 ms;
//! 2. plumb and the reference with `macspoofchk: true` (target: plumb ADD median ≤ 0.25 × the
//!    reference's);
//! 3. ADD latency with 0 and with 1000 (`--existing`) attachments (made without macspoofchk) on each
//!    node, plumb with and without macspoofchk, the reference and the floor; targets: plumb's growth in
//!    ms (median at N − median at 0), with and without macspoofchk, ≤ 1.1 × the floor's;
//! 4. plumb-ipam against the reference's host-local as whole processes, as in mode `ipam` (target ≤ 0.4).
//!
//! The ratios against the reference ADD+DEL are printed as `info` lines without a target.
//!
//! The temp dirs live under `PLUMB_BENCH_TMP` (default /var/tmp) and are removed at the end.
//!
//! Mode `kube` (see `bench/kube.rs`) measures plumb-ipam's Kubernetes store against plumb's test API
//! server in this process: the requests of single uncontended ADDs (target: ≤ 2 each), then 50 nodes ×
//! 20 concurrent ADDs on one /16 with 2 ms latency per request (allocations/s, requests per ADD, 409s;
//! targets: no failed ADD, 0 duplicate addresses, reservations exactly as returned, none left after DEL).
//!
//! Mode `kube-real` (see `bench/kube_real.rs`) runs plumb-ipam and whereabouts side by side as whole
//! processes on a real kube-apiserver (`scripts/control-plane`; whereabouts from `scripts/whereabouts`):
//! uncontended ADDs, then `--nodes` (default 20) × `--per-node` (default 25) concurrent ADDs and DELs,
//! each plugin on its own /16, requests counted per service account in the audit log. Targets (on
//! plumb-ipam): allocations/s ≥ 20× whereabouts', ≤ 2 requests per uncontended ADD, no failed ADD,
//! 0 duplicates, 0 leftovers after DEL; whereabouts' duplicates, leftovers and failures are printed.
//!
//! Mode `kube-scale` (see `bench/kube_scale.rs`) measures what one uncontended ADD and DEL cost on the
//! Kubernetes store (requests, response bytes, call time) with 10 and `--scale-nodes` (default 1000)
//! nodes and a /12 IPv4 pool at 1 %, 50 % and 95 % of its blocks claimed (plus a /64 IPv6 pool), after
//! `--allocations` (default 20,000) reservations made in batches. Targets: bytes per uncontended ADD
//! flat (≤ 1.2× between the stages), ≤ 2 requests per uncontended ADD, no failure, no duplicate.
//! Mode `kube-scale-real` (see `bench/kube_scale_real.rs`) runs the same workload and targets on the
//! real kube-apiserver of the kube-real lane (`scripts/control-plane`): requests from its audit log,
//! response bytes through a counting loopback forwarder, filler blocks created through the API; then
//! whereabouts on a reduced form of the workload, for information (`bench/kube_scale_wb.rs`).
//!
//! Mode `soak` (root; see `bench/soak.rs`) is a correctness run, not a timing: `--ops` ADD/DEL pairs
//! (default 100,000) through the release `plumb-ipam`, one process per call, from `--workers` threads
//! (default 16) on one /22 file store, then `--bridge-ops` pairs (default 2,000) through `plumb-bridge`
//! with `plumb-ipam` and `macspoofchk: true` in namespaces it creates; `--kill-rate` percent of the calls
//! (default 2) are SIGKILLed at a random point and followed by DEL until it succeeds, as a runtime does.
//! It prints the rate, the kills and every error code seen; its targets are 0 duplicate addresses, 0
//! lost reservations, 0 leaked records, links, chains or container interfaces, 0 orphaned plumb-ipam
//! children running on after their plumb-bridge was killed. `--deadline` (seconds, default 3600) bounds
//! the ADD/DEL loops; verification and cleanup always run.
//!
//! The run ends with one `target …: PASS|FAIL (value)` line per
//! target. Exit code: 0 all targets pass, 1 a target failed, 2 the bench could not run.

use conformance::plugin::Call;
use conformance::{unique_name, workspace_root, TempDir, REFERENCE_CNI_DIR};
use plumb_cni::args::PodRef;
use plumb_cni::{CniResult, NetConf};
use plumb_ipam::alloc::{allocate, release, Attachment};
use plumb_ipam::config::IpamConfig;
use plumb_ipam::store::FileStore;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

#[path = "bench/bridge.rs"]
mod bridge;
#[path = "bench/floor.rs"]
mod floor;
#[path = "bench/kube.rs"]
mod kube;
#[path = "bench/kube_real.rs"]
mod kube_real;
#[path = "bench/kube_scale.rs"]
mod kube_scale;
#[path = "bench/kube_scale_real.rs"]
mod kube_scale_real;
#[path = "bench/kube_scale_wb.rs"]
mod kube_scale_wb;
#[path = "bench/soak.rs"]
mod soak;

/// The /16 both plugins allocate from.
const SUBNET: &str = "10.30.0.0/16";
/// The CNI network name in every config.
const NETWORK: &str = "n";
/// `CNI_NETNS` of every call (IPAM plugins do not enter it).
const NETNS: &str = "/run/netns/none";
/// `CNI_IFNAME` of every call.
const IFNAME: &str = "eth0";
/// Where the temp dirs go unless `PLUMB_BENCH_TMP` says otherwise: /var/tmp is disk-backed where /tmp
/// may be tmpfs, on which fsync is free and plumb-ipam would look better than it is.
const DEFAULT_TMP: &str = "/var/tmp";
/// Un-timed ADD+DEL pairs per plugin before measuring (page cache, dynamic loader).
const WARMUP_PAIRS: usize = 5;
/// Pool occupancy levels of the in-process measurement, in percent.
const LEVELS: [u32; 3] = [0, 50, 99];
/// Consecutive in-process cycles on one level's pool before switching to the next level.
const CYCLE_BLOCK: usize = 100;

/// Command-line options.
#[derive(Debug, Clone)]
struct Options {
    /// What to measure: `ipam`, `bridge`, `kube`, `kube-real` or `soak`.
    mode: String,
    /// Whole-process ADD+DEL pairs per plugin.
    iterations: usize,
    /// Consecutive pairs of one plugin before switching to the other.
    block: usize,
    /// In-process alloc+release cycles per occupancy level.
    cycles: usize,
    /// Mode `bridge`: attachments on each node before the second ADD latency measurement.
    existing: usize,
    /// Mode `bridge`: timed ADDs per plugin at each number of existing attachments.
    extra: usize,
    /// Mode `soak`: ADD/DEL pairs through plumb-ipam.
    ops: usize,
    /// Mode `soak`: concurrent workers.
    workers: usize,
    /// Mode `soak`: percent of plugin calls SIGKILLed (0 to 100).
    kill_rate: f64,
    /// Mode `soak`: ADD/DEL pairs through plumb-bridge + plumb-ipam.
    bridge_ops: usize,
    /// Mode `soak`: seconds after which no new ADD/DEL starts.
    deadline: usize,
    /// Mode `soak`: seed of the kill and delay choices (default: from the clock; printed).
    seed: Option<u64>,
    /// Mode `kube-real`: simulated nodes.
    nodes: usize,
    /// Mode `kube-real`: concurrent ADDs per node.
    per_node: usize,
    /// Mode `kube-scale`: simulated nodes.
    scale_nodes: usize,
    /// Mode `kube-scale`: reservations made by all nodes, half in each pool.
    allocations: usize,
    /// Mode `kube-scale`: uncontended ADD+DEL measured per pool and stage.
    samples: usize,
    /// Mode `kube-scale-real`: leave out the whereabouts part (`--no-whereabouts`).
    no_whereabouts: bool,
}

/// Why the bench stopped early.
#[derive(Debug)]
enum Stop {
    /// Bad command line or unknown mode (exit 2), or `--help` (exit 0): print this text.
    Usage(String, u8),
    /// Something needed for the measurement failed.
    Error(String),
}

impl From<String> for Stop {
    fn from(msg: String) -> Stop {
        Stop::Error(msg)
    }
}

/// One performance target and the value measured against it.
#[derive(Debug)]
struct Target {
    /// What is compared with which limit, e.g. `process ADD+DEL median ratio<=0.5`.
    name: String,
    /// Whether the value meets the limit.
    pass: bool,
    /// The measured value, formatted.
    value: String,
}

impl Target {
    /// A target met when `value <= limit`.
    fn at_most(name: &str, limit: f64, value: f64, decimals: usize) -> Target {
        Target {
            name: format!("{name}<={limit}"),
            pass: value <= limit,
            value: format!("{value:.decimals$}"),
        }
    }

    /// A target met when `value >= limit`.
    fn at_least(name: &str, limit: f64, value: f64, decimals: usize) -> Target {
        Target {
            name: format!("{name}>={limit}"),
            pass: value >= limit,
            value: format!("{value:.decimals$}"),
        }
    }

    /// The summary line: `target <name>: PASS (<value>)`.
    fn line(&self) -> String {
        let verdict = if self.pass { "PASS" } else { "FAIL" };
        format!("target {}: {verdict} ({})", self.name, self.value)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse_args(&args).and_then(|opts| run_mode(&opts));
    match result {
        Ok(targets) => summarize(&targets),
        Err(Stop::Usage(text, 0)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(Stop::Usage(text, code)) => {
            eprintln!("{text}");
            ExitCode::from(code)
        }
        Err(Stop::Error(msg)) => {
            eprintln!("bench: {msg}");
            ExitCode::from(2)
        }
    }
}

/// The usage text.
fn usage() -> String {
    format!(
        "usage: bench <mode> [--iterations N] [--block B] [--cycles K] [--existing N] [--extra K]\n\
         \x20      bench kube-real [--nodes N] [--per-node M]\n\
         \x20      bench kube-scale|kube-scale-real [--scale-nodes N] [--allocations M] [--samples K] [--no-whereabouts]\n\
         \x20      bench soak [--ops N] [--workers W] [--kill-rate P] [--bridge-ops M] [--deadline S] [--seed X]\n\
         modes: ipam, bridge, kube, kube-real, kube-scale, kube-scale-real, soak\n\
         \x20 --iterations N  whole-process ADD+DEL pairs per plugin (and per config in mode bridge; default 300)\n\
         \x20 --block B       samples of one plugin before switching to the other (default 20)\n\
         \x20 --cycles K      ipam: in-process alloc+release cycles per occupancy level (default 2000)\n\
         \x20 --existing N    bridge: attachments on the node for the second ADD latency (default 1000, at most {})\n\
         \x20 --extra K       bridge: timed ADDs per plugin at 0 and at N existing (default 50)\n\
         \x20 --ops N         soak: ADD/DEL pairs through plumb-ipam (default 100000)\n\
         \x20 --workers W     soak: concurrent workers (default 16)\n\
         \x20 --kill-rate P   soak: percent of plugin calls SIGKILLed at a random point (default 2, 0 to 100)\n\
         \x20 --bridge-ops M  soak: ADD/DEL pairs through plumb-bridge + plumb-ipam (default 2000)\n\
         \x20 --deadline S    soak: no new ADD/DEL after S seconds (default 3600); checks and cleanup still run\n\
         \x20 --seed X        soak: seed of the random kills (default from the clock)\n\
         \x20 --nodes N       kube-real: simulated nodes (default 20)\n\
         \x20 --per-node M    kube-real: concurrent ADDs per node (default 25)\n\
         \x20 --scale-nodes N kube-scale: simulated nodes (default 1000, at least 10)\n\
         \x20 --allocations M kube-scale: reservations of all nodes, half per pool (default 20000)\n\
         \x20 --samples K     kube-scale: uncontended ADD+DEL measured per pool and stage (default 100)\n\
         \x20 --no-whereabouts kube-scale-real: leave out whereabouts on the reduced workload\n\
         env: PLUMB_BIN_DIR (default <workspace>/target/release), PLUMB_BENCH_TMP (default {DEFAULT_TMP})",
        bridge::MAX_EXISTING
    )
}

/// Reads the mode and the options; every option takes a positive integer.
fn parse_args(args: &[String]) -> Result<Options, Stop> {
    let mut opts = Options {
        mode: String::new(),
        iterations: 300,
        block: 20,
        cycles: 2000,
        existing: 1000,
        extra: 50,
        ops: 100_000,
        workers: 16,
        kill_rate: 2.0,
        bridge_ops: 2000,
        deadline: 3600,
        seed: None,
        nodes: 20,
        per_node: 25,
        scale_nodes: 1000,
        allocations: 20_000,
        samples: 100,
        no_whereabouts: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let slot = match arg.as_str() {
            "-h" | "--help" => return Err(Stop::Usage(usage(), 0)),
            "--iterations" => &mut opts.iterations,
            "--block" => &mut opts.block,
            "--cycles" => &mut opts.cycles,
            "--existing" => &mut opts.existing,
            "--extra" => &mut opts.extra,
            "--ops" => &mut opts.ops,
            "--workers" => &mut opts.workers,
            "--bridge-ops" => &mut opts.bridge_ops,
            "--deadline" => &mut opts.deadline,
            "--nodes" => &mut opts.nodes,
            "--per-node" => &mut opts.per_node,
            "--scale-nodes" => &mut opts.scale_nodes,
            "--allocations" => &mut opts.allocations,
            "--samples" => &mut opts.samples,
            "--no-whereabouts" => {
                opts.no_whereabouts = true;
                continue;
            }
            "--kill-rate" => {
                opts.kill_rate = percent(arg, it.next())?;
                continue;
            }
            "--seed" => {
                opts.seed = Some(positive(arg, it.next())? as u64);
                continue;
            }
            flag if flag.starts_with('-') => {
                return Err(Stop::Usage(
                    format!("unknown option {flag}\n{}", usage()),
                    2,
                ))
            }
            mode if opts.mode.is_empty() => {
                opts.mode = mode.to_string();
                continue;
            }
            extra => {
                return Err(Stop::Usage(
                    format!("unexpected argument {extra}\n{}", usage()),
                    2,
                ))
            }
        };
        *slot = positive(arg, it.next())?;
    }
    if opts.mode.is_empty() {
        return Err(Stop::Usage(format!("no mode given\n{}", usage()), 2));
    }
    Ok(opts)
}

/// The positive integer value of option `flag`.
fn positive(flag: &str, value: Option<&String>) -> Result<usize, Stop> {
    match value.map(|v| v.parse::<usize>()) {
        Some(Ok(n)) if n > 0 => Ok(n),
        _ => Err(Stop::Usage(
            format!("{flag} needs a positive integer\n{}", usage()),
            2,
        )),
    }
}

/// The value of option `flag` as a percentage from 0 to 100.
fn percent(flag: &str, value: Option<&String>) -> Result<f64, Stop> {
    match value.map(|v| v.parse::<f64>()) {
        Some(Ok(p)) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(Stop::Usage(
            format!("{flag} needs a percentage from 0 to 100\n{}", usage()),
            2,
        )),
    }
}

/// Runs the chosen mode and returns its targets.
fn run_mode(opts: &Options) -> Result<Vec<Target>, Stop> {
    match opts.mode.as_str() {
        "ipam" => run_ipam(opts),
        "bridge" => bridge::run_bridge(opts),
        "kube" => kube::run_kube(opts),
        "kube-real" => kube_real::run_kube_real(opts),
        "kube-scale" => kube_scale::run_kube_scale(opts, false),
        "kube-scale-real" => kube_scale::run_kube_scale(opts, true),
        "soak" => soak::run_soak(opts),
        other => Err(Stop::Usage(
            format!(
                "unknown mode {other} (modes: ipam, bridge, kube, kube-real, kube-scale, kube-scale-real, soak)\n{}",
                usage()
            ),
            2,
        )),
    }
}

/// Prints one line per target and turns the verdicts into the exit code.
fn summarize(targets: &[Target]) -> ExitCode {
    println!();
    for t in targets {
        println!("{}", t.line());
    }
    if targets.iter().all(|t| t.pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

// ---------------------------------------------------------------------------------------------------
// Mode `ipam`
// ---------------------------------------------------------------------------------------------------

/// Both ipam measurements in one temp dir, which is removed before returning.
fn run_ipam(opts: &Options) -> Result<Vec<Target>, Stop> {
    if cfg!(debug_assertions) {
        println!("warning: bench built without --release: in-process numbers are for an unoptimized library");
    }
    let plumb_bin = release_binary("plumb-ipam")?;
    let host_local = Path::new(REFERENCE_CNI_DIR).join("host-local");
    if !host_local.is_file() {
        return Err(Stop::Error(format!(
            "{} is missing: install Debian's containernetworking-plugins",
            host_local.display()
        )));
    }
    warn_if_stale(&plumb_bin, &["ipam/src", "plugins/cni/src"]);
    let root = bench_dir()?;
    println!(
        "temp dir {} on {}",
        root.path().display(),
        filesystem_of(root.path())
    );
    let result = ipam_measurements(opts, &plumb_bin, &host_local, root.path());
    let path = root.path().to_path_buf();
    drop(root);
    match path.exists() {
        false => println!("removed {}", path.display()),
        true => println!("warning: could not remove {}", path.display()),
    }
    result
}

/// The two measurements of mode `ipam`, their targets in order.
fn ipam_measurements(
    opts: &Options,
    plumb_bin: &Path,
    host_local: &Path,
    root: &Path,
) -> Result<Vec<Target>, Stop> {
    let plugins = [
        ProcessPlugin::plumb(plumb_bin, &root.join("proc-plumb"), false),
        ProcessPlugin::host_local(host_local, &root.join("proc-host-local")),
        ProcessPlugin::plumb(plumb_bin, &root.join("proc-plumb-fsync"), true),
    ];
    let mut targets = vec![process_bench(&plugins, opts, root)?];
    targets.extend(library_bench(root, opts.cycles)?);
    Ok(targets)
}

/// The directory of the release plumb binaries: `PLUMB_BIN_DIR`, else `<target dir>/release`.
fn release_bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PLUMB_BIN_DIR") {
        return PathBuf::from(d);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("release")
}

/// Path of one release plumb binary, or an error naming the build command.
fn release_binary(name: &str) -> Result<PathBuf, Stop> {
    let p = release_bin_dir().join(name);
    if p.is_file() {
        println!("{name}: {}", p.display());
        return Ok(p);
    }
    Err(Stop::Error(format!(
        "{} is missing: run `cargo build --release --workspace --bins` first (or set PLUMB_BIN_DIR to the directory holding release binaries)",
        p.display()
    )))
}

/// Warns when the binary is older than a source file in one of `dirs` (relative to the workspace root;
/// others edit them).
fn warn_if_stale(binary: &Path, dirs: &[&str]) {
    let Some(built) = modified(binary) else {
        return;
    };
    let root = workspace_root();
    let newer = dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).into_iter().flatten())
        .flatten()
        .map(|e| e.path())
        .find(|p| modified(p).is_some_and(|m| m > built));
    if let Some(src) = newer {
        println!(
            "warning: {} is older than {}: rebuild with `cargo build --release --workspace --bins`",
            binary.display(),
            src.display()
        );
    }
}

/// A file's modification time, if readable.
fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// A fresh directory under `PLUMB_BENCH_TMP` (default /var/tmp), removed when dropped.
fn bench_dir() -> Result<TempDir, String> {
    let base = std::env::var_os("PLUMB_BENCH_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TMP));
    let dir = base.join(unique_name("plumb-bench-"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(TempDir(dir))
}

/// Names the filesystem holding `path`: its type and device from /proc/self/mounts (the longest mount
/// point containing it) and the `statfs` magic number.
fn filesystem_of(path: &Path) -> String {
    let magic = statfs_magic(path);
    let kind = magic.map_or("unknown", magic_name);
    let magic = magic.map_or("?".to_string(), |m| format!("{m:#x}"));
    match mount_of(path) {
        Some((dev, mnt, fstype)) => {
            format!("{fstype} ({dev} mounted on {mnt}; statfs type {magic} = {kind})")
        }
        None => format!("statfs type {magic} = {kind}"),
    }
}

/// The `f_type` of `statfs(path)`.
fn statfs_magic(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is plain data, so all-zero bytes are a valid value.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a writable statfs, both live for the call.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut s) };
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on some targets, u32 or u64 on others
    let magic = s.f_type as u64;
    (r == 0).then_some(magic)
}

/// Common `statfs` magic numbers (linux/magic.h).
fn magic_name(magic: u64) -> &'static str {
    match magic {
        0xEF53 => "ext2/ext3/ext4",
        0x0102_1994 => "tmpfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        _ => "other",
    }
}

/// `(device, mount point, fs type)` of the longest mount point in /proc/self/mounts containing `path`.
fn mount_of(path: &Path) -> Option<(String, String, String)> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?, f.next()?))
        })
        .filter(|(_, mnt, _)| path.starts_with(mnt))
        .max_by_key(|(_, mnt, _)| mnt.len())
        .map(|(d, m, t)| (d.to_string(), m.to_string(), t.to_string()))
}

// ---------------------------------------------------------------------------------------------------
// Whole-process ADD+DEL
// ---------------------------------------------------------------------------------------------------

/// A CNI IPAM plugin binary with the network config it gets on stdin.
#[derive(Debug)]
struct ProcessPlugin {
    /// Name for the output.
    label: &'static str,
    /// The executable.
    binary: PathBuf,
    /// The whole network config, `ipam` section included.
    config: Value,
}

impl ProcessPlugin {
    /// plumb-ipam on [`SUBNET`], storing in `data_dir`, with or without its `fsync` option.
    fn plumb(binary: &Path, data_dir: &Path, fsync: bool) -> ProcessPlugin {
        let ipam =
            json!({"type": "plumb-ipam", "range": SUBNET, "dataDir": data_dir, "fsync": fsync});
        let label = if fsync { "plumb+fsync" } else { "plumb-ipam" };
        ProcessPlugin::new(label, binary, ipam)
    }

    /// Debian's host-local on [`SUBNET`], storing in `data_dir`.
    fn host_local(binary: &Path, data_dir: &Path) -> ProcessPlugin {
        let ipam =
            json!({"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "dataDir": data_dir});
        ProcessPlugin::new("host-local", binary, ipam)
    }

    /// The plugin `binary` with a network config around the `ipam` section.
    fn new(label: &'static str, binary: &Path, ipam: Value) -> ProcessPlugin {
        let config =
            json!({"cniVersion": "1.0.0", "name": NETWORK, "type": ipam["type"], "ipam": ipam});
        ProcessPlugin {
            label,
            binary: binary.to_path_buf(),
            config,
        }
    }

    /// The call of `command` for container `cid`, as a runtime makes it.
    fn call(&self, command: &str, cid: &str) -> Call {
        Call::new(command, cid, NETNS, IFNAME, &self.config).env("CNI_PATH", REFERENCE_CNI_DIR)
    }

    /// Runs one call; a non-zero exit is an error carrying the plugin's output.
    fn run(&self, call: &Call, command: &str, cid: &str) -> Result<(), String> {
        let out = call.run(&self.binary);
        if out.exit == 0 {
            return Ok(());
        }
        Err(format!(
            "{} {command} {cid} exited {}: stdout={} stderr={}",
            self.label,
            out.exit,
            out.stdout.trim(),
            out.stderr.trim()
        ))
    }

    /// Wall time of one ADD process then one DEL process for container `cid`, both checked for exit 0.
    fn time_pair(&self, cid: &str) -> Result<Duration, String> {
        let (add, del) = (self.call("ADD", cid), self.call("DEL", cid));
        let start = Instant::now();
        self.run(&add, "ADD", cid)?;
        self.run(&del, "DEL", cid)?;
        Ok(start.elapsed())
    }
}

/// Median and 90th percentile of a set of samples.
#[derive(Debug, Clone, Copy)]
struct Spread {
    /// 50th percentile.
    median: Duration,
    /// 90th percentile.
    p90: Duration,
}

impl Spread {
    /// Computes the spread (nearest-rank percentiles); `samples` must not be empty.
    fn of(samples: &[Duration]) -> Spread {
        let mut sorted = samples.to_vec();
        sorted.sort();
        Spread {
            median: percentile(&sorted, 50),
            p90: percentile(&sorted, 90),
        }
    }
}

/// Nearest-rank percentile `p` of sorted, non-empty samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Milliseconds with two decimals.
fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Measures both plugins interleaved, prints their spreads and returns the ratio target. `root` holds
/// both data dirs; its filesystem is flushed (un-timed) between blocks.
fn process_bench(
    plugins: &[ProcessPlugin; 3],
    opts: &Options,
    root: &Path,
) -> Result<Target, String> {
    println!();
    println!(
        "== whole-process ADD+DEL on {SUBNET}: {} pairs per plugin, alternating blocks of {}, {WARMUP_PAIRS} un-timed warm-up pairs each",
        opts.iterations, opts.block
    );
    for p in plugins {
        for i in 0..WARMUP_PAIRS {
            p.time_pair(&format!("warm{i}"))?;
        }
    }
    let samples = interleave(
        plugins.len(),
        opts.iterations,
        opts.block,
        |p, i| plugins[p].time_pair(&format!("bench{i}")),
        || syncfs(root),
    )?;
    let spreads: Vec<Spread> = samples.iter().map(|s| Spread::of(s)).collect();
    for (p, s) in plugins.iter().zip(&spreads) {
        println!(
            "{:<11} ADD+DEL median {}  p90 {}",
            p.label,
            ms(s.median),
            ms(s.p90)
        );
    }
    println!("durability: host-local writes its files without fsync (0 fsync per ADD+DEL under strace); plumb-ipam by default too; plumb+fsync (ipam \"fsync\": true) fsyncs the record and the directory on ADD and the directory on DEL (3 fsyncs per pair)");
    println!("between blocks the filesystem is flushed un-timed (syncfs), so neither plugin's fsync pays for the other's pending writeback");
    let ratio = spreads[0].median.as_secs_f64() / spreads[1].median.as_secs_f64();
    println!("ratio of medians plumb-ipam/host-local: {ratio:.2}");
    let fsync_ratio = spreads[2].median.as_secs_f64() / spreads[1].median.as_secs_f64();
    println!(
        "ratio of medians plumb+fsync/host-local: {fsync_ratio:.2} (informational, no target)"
    );
    Ok(Target::at_most(
        "plumb-ipam whole-process ADD+DEL median ratio plumb-ipam/host-local",
        0.4,
        ratio,
        2,
    ))
}

/// Takes `count` timed samples of each of `subjects` in blocks of `block`, so machine noise hits all
/// alike: each round runs one block per subject, and which subject goes first rotates from round to
/// round. `sample(subject, i)` times sample `i` of a subject; `between()` runs un-timed before each block.
/// Returns the samples per subject.
fn interleave(
    subjects: usize,
    count: usize,
    block: usize,
    mut sample: impl FnMut(usize, usize) -> Result<Duration, String>,
    mut between: impl FnMut() -> Result<(), String>,
) -> Result<Vec<Vec<Duration>>, String> {
    let mut samples = vec![Vec::with_capacity(count); subjects];
    for (round, first) in (0..count).step_by(block).enumerate() {
        let last = (first + block).min(count);
        for k in 0..subjects {
            let subject = (round + k) % subjects;
            between()?;
            for i in first..last {
                samples[subject].push(sample(subject, i)?);
            }
        }
    }
    Ok(samples)
}

/// Flushes the filesystem holding `path` (`syncfs`), so earlier writes do not land in a later timing.
fn syncfs(path: &Path) -> Result<(), String> {
    use std::os::unix::io::AsRawFd;
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: the descriptor is owned by `f`, which outlives the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(format!(
            "syncfs {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// In-process alloc+release through the library
// ---------------------------------------------------------------------------------------------------

/// A plumb-ipam pool driven through the library: config and store.
struct Pool {
    cfg: IpamConfig,
    store: FileStore,
}

/// Turns a library error into the bench's error, saying what was being done.
fn lib<T>(what: &str, r: CniResult<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e} (code {})", e.code))
}

impl Pool {
    /// An empty pool on [`SUBNET`] storing in `data_dir`.
    fn open(data_dir: &Path) -> Result<Pool, String> {
        let conf = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "plumb-ipam",
                          "ipam": {"type": "plumb-ipam", "range": SUBNET, "dataDir": data_dir}});
        let conf = lib("parse config", NetConf::parse(conf.to_string().as_bytes()))?;
        let cfg = lib("read ipam config", IpamConfig::from_conf(&conf))?;
        let store = lib("open store", FileStore::open(&cfg.data_dir, &cfg.space))?;
        Ok(Pool { cfg, store })
    }

    /// Usable addresses of the range.
    fn usable(&self) -> usize {
        self.cfg.ranges[0].usable() as usize
    }

    /// The store lock timeout of the config.
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.lock_timeout_secs)
    }

    /// Allocates for `count` new attachments (`fill0`, `fill1`, …) under one lock.
    fn fill(&self, count: usize) -> Result<(), String> {
        let locked = lib("lock", self.store.lock(self.timeout()))?;
        for i in 0..count {
            let who = attachment(format!("fill{i}"));
            lib("fill allocate", allocate(&locked, &self.cfg, &who, &[]))?;
        }
        Ok(())
    }

    /// Number of `ip-` claim files in the store (what occupancy really is).
    fn claims(&self) -> Result<usize, String> {
        let locked = lib("lock", self.store.lock(self.timeout()))?;
        Ok(lib("list", locked.list())?.claims.len())
    }

    /// One timed cycle: lock, allocate for `cid`, unlock, lock, release it, unlock.
    fn cycle(&self, cid: &str) -> Result<Duration, String> {
        let who = attachment(cid.to_string());
        let start = Instant::now();
        {
            let locked = lib("lock", self.store.lock(self.timeout()))?;
            lib("allocate", allocate(&locked, &self.cfg, &who, &[]))?;
        }
        let locked = lib("lock", self.store.lock(self.timeout()))?;
        let freed = lib("release", release(&locked, Some(&self.cfg), cid, IFNAME))?;
        drop(locked);
        let took = start.elapsed();
        if freed.len() != 1 {
            return Err(format!(
                "release of {cid} freed {freed:?}, expected one address"
            ));
        }
        Ok(took)
    }
}

/// The attachment of container `cid` on [`IFNAME`] in [`NETWORK`].
fn attachment(cid: String) -> Attachment {
    Attachment {
        container_id: cid,
        ifname: IFNAME.to_string(),
        network: NETWORK.to_string(),
        pod: PodRef::default(),
    }
}

/// Fills one pool per occupancy level, measures `cycles` alloc+release pairs on each (interleaved in
/// blocks of [`CYCLE_BLOCK`]), prints the rates and returns the targets.
fn library_bench(root: &Path, cycles: usize) -> Result<Vec<Target>, String> {
    println!();
    println!(
        "== in-process alloc+release via the plumb-ipam library on {SUBNET}, one pool per level, {cycles} cycles per level in rotating blocks of {CYCLE_BLOCK}"
    );
    println!("one op = lock, allocate, unlock, lock, release, unlock (default store: no fsync); fill = allocate in a loop under one lock; syncfs (un-timed) before every block");
    let mut pools = Vec::new();
    for percent in LEVELS {
        pools.push(filled_pool(&root.join(format!("lib-{percent}")), percent)?);
    }
    let samples = interleave(
        pools.len(),
        cycles,
        CYCLE_BLOCK,
        |level, k| pools[level].cycle(&format!("cyc{k}")),
        || syncfs(root),
    )?;
    let rates: Vec<f64> = samples.iter().map(|s| ops_per_sec(s)).collect();
    for ((percent, s), rate) in LEVELS.iter().zip(&samples).zip(&rates) {
        let spread = Spread::of(s);
        println!(
            "{percent:>3} %: {rate:>6.0} ops/s, cycle median {:.0} µs p90 {:.0} µs",
            spread.median.as_secs_f64() * 1e6,
            spread.p90.as_secs_f64() * 1e6,
        );
    }
    Ok(library_targets(&rates))
}

/// A new pool in `data_dir` filled to `percent` of its usable addresses; prints the fill time and
/// checks the store really holds that many claims.
fn filled_pool(data_dir: &Path, percent: u32) -> Result<Pool, String> {
    let pool = Pool::open(data_dir)?;
    let target = pool.usable() * percent as usize / 100;
    let start = Instant::now();
    pool.fill(target)?;
    let took = start.elapsed().as_secs_f64();
    let held = pool.claims()?;
    if held != target {
        return Err(format!(
            "after filling to {target} the store holds {held} claims"
        ));
    }
    println!(
        "{percent:>3} % pool: {held} of {} usable held; filled in {took:.2} s ({:.0} allocations/s)",
        pool.usable(),
        held as f64 / took.max(1e-9)
    );
    Ok(pool)
}

/// Operations per second over the summed duration of the samples.
fn ops_per_sec(samples: &[Duration]) -> f64 {
    let total: Duration = samples.iter().sum();
    samples.len() as f64 / total.as_secs_f64().max(1e-9)
}

/// One ops/s target per level and the flatness target (max/min of ops/s across levels).
fn library_targets(rates: &[f64]) -> Vec<Target> {
    let max = rates.iter().copied().fold(f64::MIN, f64::max);
    let min = rates.iter().copied().fold(f64::MAX, f64::min);
    let flatness = max / min;
    println!("flatness max/min ops/s across levels: {flatness:.2} (<= 1.5 counts as flat)");
    let mut targets: Vec<Target> = LEVELS
        .iter()
        .zip(rates)
        .map(|(percent, rate)| {
            let name = format!("alloc+release at {percent}% ops/s");
            Target::at_least(&name, 5000.0, *rate, 0)
        })
        .collect();
    targets.push(Target::at_most(
        "alloc+release flatness max/min",
        1.5,
        flatness,
        2,
    ));
    targets
}
