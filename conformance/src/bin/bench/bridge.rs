//! Mode `bridge`: plumb-bridge + plumb-ipam against Debian's bridge + host-local, as whole processes.
//!
//! Every device the bench makes lives in network namespaces it creates itself: one "node" namespace per
//! plugin, holding that plugin's bridge, host veths and nftables rules (the plugin processes are started
//! inside it), and one fresh container namespace per attachment, all created up front by one `ip -batch`.
//! Nothing is added to the namespace the bench runs in.
//!
//! Teardown runs whatever happened before it (an error, Ctrl-C): DEL of every attachment still live, a
//! check that the node namespaces hold nothing but the bridge, removal of what DEL left in their nftables
//! rulesets (the reference's macspoofchk keeps its `bridge nat` table), the bridges, every namespace, the
//! plumb lock files of the bench's bridges and the temp dir, then a comparison of the root namespace's
//! `nft list ruleset` with the one taken before the run.

use super::floor::Floor;
use super::{
    bench_dir, interleave, ms, process_bench, release_bin_dir, release_binary, syncfs,
    warn_if_stale, Options, ProcessPlugin, Spread, Stop, Target, IFNAME, WARMUP_PAIRS,
};
use conformance::plugin::Call;
use conformance::{unique_name, TempDir, REFERENCE_CNI_DIR};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The /16 plumb-ipam allocates from.
const PLUMB_SUBNET: &str = "10.31.0.0/16";
/// Its gateway: `isGateway` needs one named (host-local takes the first address by itself).
const PLUMB_GATEWAY: &str = "10.31.0.1";
/// The /16 host-local allocates from.
const REFERENCE_SUBNET: &str = "10.32.0.0/16";
/// The CNI network name in both configs.
const NETWORK: &str = "bench";
/// A Linux bridge has at most 1023 ports; one stays free for the timed ADD.
pub const MAX_EXISTING: usize = 1022;
/// Each release binary the mode runs, with the source dirs whose change makes it stale.
const BUILT: [(&str, &[&str]); 2] = [
    (
        "plumb-bridge",
        &[
            "plugins/bridge/src",
            "plugins/net/src",
            "plugins/nft/src",
            "plugins/cni/src",
        ],
    ),
    ("plumb-ipam", &["ipam/src", "plugins/cni/src"]),
];
/// Prefix of the node namespace names (container namespaces start with `pbc`).
const NODE_PREFIX: &str = "pbn";
/// Index of plumb in [`Lab::nodes`] (and in every per-plugin vector).
const PLUMB: usize = 0;
/// Index of the reference.
const REFERENCE: usize = 1;

/// Set by SIGINT/SIGTERM: the measurements stop at the next sample and teardown runs.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM stop the measurements instead of the process, so teardown still runs.
pub(super) fn catch_interrupts() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

/// An error once SIGINT or SIGTERM arrived.
pub(super) fn check_interrupt() -> Result<(), String> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        true => Err("interrupted".to_string()),
        false => Ok(()),
    }
}

/// Runs mode `bridge`: all three measurements, then teardown whatever happened, then the run time.
pub fn run_bridge(opts: &Options) -> Result<Vec<Target>, Stop> {
    let started = Instant::now();
    let binaries = preflight(opts)?;
    print_load("start");
    let root_before = nft_ruleset(Command::new("nft"))?;
    catch_interrupts();
    let mut lab = Lab::new(binaries)?;
    let measured = measure(&mut lab, opts);
    if let Err(e) = &measured {
        println!();
        println!("measurement stopped: {e}");
    }
    let cleaned = lab.teardown(&root_before);
    print_load("end");
    println!(
        "bridge mode run time: {:.1} s (setup, measurements and cleanup)",
        started.elapsed().as_secs_f64()
    );
    let targets = measured?;
    cleaned?;
    Ok(targets)
}

/// Prints /proc/loadavg and the CPU count: other work on the machine widens the spreads (interleaving
/// keeps it from favouring either plugin, but the 0 and N existing levels are measured minutes apart).
fn print_load(when: &str) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("load average at {when}: {} ({cpus} CPUs)", load.trim());
}

/// The plugin binaries, once root, `ip`, `nft`, the references and the release plumb binaries are there.
struct Binaries {
    plumb_bridge: PathBuf,
    /// The directory of the reference plugins (`bridge`, `host-local`).
    reference_dir: PathBuf,
}

/// Checks what the mode needs and prints the binaries it uses.
fn preflight(opts: &Options) -> Result<Binaries, Stop> {
    if !conformance::skip::is_root() {
        return Err(Stop::Error(
            "mode bridge needs root (network namespaces, bridges, nftables)".into(),
        ));
    }
    for (cmd, pkg) in [("ip", "iproute2"), ("nft", "nftables")] {
        if !conformance::skip::have_command(cmd) {
            return Err(Stop::Error(format!(
                "mode bridge needs `{cmd}` (apt {pkg})"
            )));
        }
    }
    if opts.existing > MAX_EXISTING {
        return Err(Stop::Usage(
            format!("--existing {} is above {MAX_EXISTING}: a Linux bridge has at most 1023 ports and the timed ADD needs one", opts.existing),
            2,
        ));
    }
    for (name, sources) in BUILT {
        warn_if_stale(&release_binary(name)?, sources);
    }
    let plumb_bridge = release_bin_dir().join("plumb-bridge");
    let reference_dir = reference_dir();
    for name in ["bridge", "host-local"] {
        let p = reference_dir.join(name);
        if !p.is_file() {
            return Err(Stop::Error(format!(
                "{} is missing: run scripts/peers (v1.10) or install Debian's containernetworking-plugins",
                p.display()
            )));
        }
        println!("reference: {}", p.display());
    }
    Ok(Binaries {
        plumb_bridge,
        reference_dir,
    })
}

/// The reference plugins: the v1.10 build of `scripts/peers` when it is there (`PLUMB_PEERS_DIR`, or
/// the script's cache, which a warm run only checks), else Debian's /usr/lib/cni.
fn reference_dir() -> PathBuf {
    let peers = match std::env::var_os("PLUMB_PEERS_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => Command::new(conformance::workspace_root().join("scripts/peers"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                let out = String::from_utf8_lossy(&o.stdout).into_owned();
                out.lines().last().map(|l| PathBuf::from(l.trim()))
            }),
    };
    match peers {
        Some(d) if d.join("bridge").is_file() && d.join("host-local").is_file() => {
            println!("reference plugins: the v1.10 build of scripts/peers");
            d
        }
        _ => {
            println!("reference plugins: Debian's {REFERENCE_CNI_DIR} (scripts/peers gave no v1.10 build)");
            PathBuf::from(REFERENCE_CNI_DIR)
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Node namespaces, attachments and the bookkeeping that makes teardown complete
// ---------------------------------------------------------------------------------------------------

/// One plugin's node: a network namespace the plugin runs in, with its bridge and configs.
struct Node {
    /// `plumb` or `reference`, for the output.
    label: &'static str,
    /// The bridge plugin binary.
    binary: PathBuf,
    /// The node namespace (`ip netns` name).
    netns: String,
    /// The open namespace, which plugin processes enter before exec.
    fd: File,
    /// The bridge name in both configs.
    bridge: String,
    /// The network config as is, with `macspoofchk`, and with `enabledad` (see [`Conf`]).
    configs: [Value; 3],
}

impl Node {
    /// A command started inside the node namespace (`setns` in the child before exec).
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.fd.as_raw_fd();
        // SAFETY: between fork and exec the closure only makes the setns system call and reads errno,
        // both async-signal-safe; `fd` stays open in the parent until the child has been spawned.
        unsafe {
            cmd.pre_exec(move || match libc::setns(fd, libc::CLONE_NEWNET) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        cmd
    }

    /// Runs a tool (`ip`, `nft`) inside the node namespace; its stdout, or an error with its stderr.
    fn tool(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.command(args[0]);
        cmd.args(&args[1..]);
        checked(
            &format!("{} (in {})", args.join(" "), self.netns),
            cmd.output(),
        )
    }

    /// Runs one CNI call of this node's plugin inside the node namespace: the process wall time (spawn,
    /// stdin, wait) and its stdout; a non-zero exit is an error carrying the plugin's output.
    fn invoke(
        &self,
        command: &str,
        att: &Att,
        cni_path: &str,
    ) -> Result<(Duration, String), String> {
        let netns = format!("/run/netns/{}", att.netns);
        let call = Call::new(
            command,
            &att.cid,
            &netns,
            IFNAME,
            &self.configs[att.conf as usize],
        )
        .env("CNI_PATH", cni_path);
        let mut cmd = self.command(&self.binary);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(call.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let out = cmd.spawn().and_then(|mut child| {
            let mut stdin = child.stdin.take().expect("stdin is piped");
            let written = stdin.write_all(&call.stdin);
            drop(stdin);
            let out = child.wait_with_output()?;
            written.map(|_| out)
        });
        let took = start.elapsed();
        let out = out.map_err(|e| {
            format!(
                "{} {command}: cannot run {}: {e}",
                self.label,
                self.binary.display()
            )
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "{} {command} {} ({}) failed ({}): stdout={} stderr={}",
                self.label,
                att.cid,
                att.netns,
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok((took, stdout))
    }
}

/// The stdout of a finished tool, or an error naming it with its stderr.
pub(super) fn checked(what: &str, out: std::io::Result<Output>) -> Result<String, String> {
    let out = out.map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One attachment: container `cid` on [`IFNAME`] in container namespace `netns`, through node `node`.
#[derive(Debug, Clone)]
struct Att {
    node: usize,
    cid: String,
    netns: String,
    /// Which of the node's configs (DEL must get the same one).
    conf: Conf,
}

/// The variants of a node's network config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conf {
    /// As printed.
    Plain = 0,
    /// With `"macspoofchk": true`.
    Spoof = 1,
    /// With `"enabledad": true`: the container interface keeps IPv6 duplicate address detection, so
    /// the kernel's IPv6 start on it (multicast reports and a router solicitation, which the bridge
    /// floods to every port) comes about a second later instead of at once.
    Dad = 2,
}

/// Everything the mode creates, so that teardown can take all of it down.
struct Lab {
    binaries: Binaries,
    /// Data dirs of both IPAM plugins.
    tmp: TempDir,
    /// The nodes created so far: plumb first, then the reference.
    nodes: Vec<Node>,
    /// Every namespace name the bench tried to create (nodes and containers).
    netns: Vec<String>,
    /// Container namespaces created and not used yet.
    pool: Vec<String>,
    /// Attachments with an ADD started and no successful DEL yet, by container ID.
    live: HashMap<String, Att>,
    /// Bridge names of both nodes, kept after the nodes are gone (lock files, root ruleset check).
    bridge_names: Vec<String>,
    /// Host veth names the plugins reported (to spot bench objects in the root ruleset).
    veths: HashSet<String>,
    /// Random per run: starts every container ID and namespace name.
    nonce: u64,
    /// Attachments made so far (the rest of the container ID).
    made: u64,
    /// The plumb release dir, then the reference dir.
    cni_path: String,
    /// The kernel floor's node, once created.
    floor: Option<Floor>,
}

impl Lab {
    /// An empty lab: a temp dir and a nonce, no namespace yet.
    fn new(binaries: Binaries) -> Result<Lab, String> {
        let tmp = bench_dir()?;
        println!("temp dir {}", tmp.path().display());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let cni_path = format!(
            "{}:{}",
            release_bin_dir().display(),
            binaries.reference_dir.display()
        );
        println!("CNI_PATH={cni_path}");
        Ok(Lab {
            binaries,
            tmp,
            nodes: Vec::new(),
            netns: Vec::new(),
            pool: Vec::new(),
            live: HashMap::new(),
            bridge_names: Vec::new(),
            veths: HashSet::new(),
            nonce: nanos ^ ((std::process::id() as u64) << 40),
            made: 0,
            cni_path,
            floor: None,
        })
    }

    /// Creates both node namespaces and prints their configs.
    fn create_nodes(&mut self) -> Result<(), String> {
        let data = |name: &str| self.tmp.path().join(name);
        let plumb_ipam = json!({"type": "plumb-ipam", "range": PLUMB_SUBNET, "gateway": PLUMB_GATEWAY,
                    "dataDir": data("plumb-ipam")});
        let host_local = json!({"type": "host-local", "ranges": [[{"subnet": REFERENCE_SUBNET}]],
                                "dataDir": data("host-local")});
        let plumb = self.binaries.plumb_bridge.clone();
        let reference = self.binaries.reference_dir.join("bridge");
        for (label, binary, ty, ipam) in [
            ("plumb", plumb, "plumb-bridge", plumb_ipam),
            ("reference", reference, "bridge", host_local),
        ] {
            let netns = unique_name(NODE_PREFIX);
            if netns_exists(&netns) {
                return Err(format!("netns {netns} exists already (not the bench's)"));
            }
            self.netns.push(netns.clone());
            checked(
                &format!("ip netns add {netns}"),
                Command::new("ip").args(["netns", "add", &netns]).output(),
            )?;
            let path = format!("/run/netns/{netns}");
            let fd = File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
            let bridge = unique_name(&label[..2]);
            self.bridge_names.push(bridge.clone());
            let base = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": ty, "bridge": bridge,
                              "isGateway": true, "ipam": ipam});
            let mut spoof = base.clone();
            spoof["macspoofchk"] = json!(true);
            let mut dad = base.clone();
            dad["enabledad"] = json!(true);
            println!("{label} node netns {netns}: {base}");
            self.nodes.push(Node {
                label,
                binary,
                netns,
                fd,
                bridge,
                configs: [base, spoof, dad],
            });
        }
        println!("every config is used as is and with \"macspoofchk\": true; plumb's also with \"enabledad\": true (information)");
        let netns = unique_name(NODE_PREFIX);
        if netns_exists(&netns) {
            return Err(format!("netns {netns} exists already (not the bench's)"));
        }
        self.netns.push(netns.clone());
        checked(
            &format!("ip netns add {netns}"),
            Command::new("ip").args(["netns", "add", &netns]).output(),
        )?;
        let bridge = unique_name("fl");
        self.floor = Some(Floor::create(&netns, &bridge)?);
        println!("floor node netns {netns}: bridge {bridge} with 10.33.0.1/16; ADD and DEL from this process through plumb-net (see bench/floor.rs)");
        Ok(())
    }

    /// Creates `count` container namespaces in one `ip -batch` (un-timed, before any measurement).
    fn fill_pool(&mut self, count: usize) -> Result<(), String> {
        let start = Instant::now();
        let prefix = format!("pbc{:06x}-", self.nonce & 0xff_ffff);
        let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
        if let Some(taken) = names.iter().find(|n| netns_exists(n)) {
            return Err(format!("netns {taken} exists already (not the bench's)"));
        }
        self.netns.extend(names.iter().cloned());
        let script: String = names.iter().map(|n| format!("netns add {n}\n")).collect();
        ip_batch(&script, false)?;
        if let Some(missing) = names.iter().find(|n| !netns_exists(n)) {
            return Err(format!("ip -batch did not create netns {missing}"));
        }
        self.pool = names;
        self.pool.reverse();
        println!(
            "created {count} container netns in {:.2} s",
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// A new attachment through node `node` in an unused container namespace.
    fn new_att(&mut self, node: usize, conf: Conf) -> Result<Att, String> {
        let netns = self
            .pool
            .pop()
            .ok_or("the container netns pool is used up (a bench bug)")?;
        self.made += 1;
        Ok(Att {
            node,
            cid: format!("{:016x}{:048x}", self.nonce, self.made),
            netns,
            conf,
        })
    }

    /// ADD of `att`, which counts as live from before the call (a failed ADD may leave parts behind).
    fn add(&mut self, att: &Att) -> Result<Duration, String> {
        self.live.insert(att.cid.clone(), att.clone());
        let (took, stdout) = self.nodes[att.node].invoke("ADD", att, &self.cni_path)?;
        let result: Value = serde_json::from_str(&stdout)
            .map_err(|e| format!("ADD result of {} is not JSON ({e}): {stdout}", att.cid))?;
        if let Some(name) = result["interfaces"][1]["name"].as_str() {
            self.veths.insert(name.to_string());
        }
        Ok(took)
    }

    /// DEL of `att`; it stops being live when DEL succeeds.
    fn del(&mut self, att: &Att) -> Result<Duration, String> {
        let (took, _) = self.nodes[att.node].invoke("DEL", att, &self.cni_path)?;
        self.live.remove(&att.cid);
        Ok(took)
    }

    /// Ports on a node's bridge, counted by `ip link show master`.
    fn ports(&self, node: usize) -> Result<usize, String> {
        let n = &self.nodes[node];
        let out = n.tool(&["ip", "-o", "link", "show", "master", &n.bridge])?;
        Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
    }
}

/// Feeds `script` to `ip -batch -` (with `-force`: go on after a failing line).
pub(super) fn ip_batch(script: &str, force: bool) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    if force {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.spawn().and_then(|mut child| {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let written = stdin.write_all(script.as_bytes());
        drop(stdin);
        let out = child.wait_with_output()?;
        written.map(|_| out)
    });
    checked("ip -batch", out).map(drop)
}

/// Whether namespace `name` exists under /run/netns.
pub(super) fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

// ---------------------------------------------------------------------------------------------------
// The measurements
// ---------------------------------------------------------------------------------------------------

/// What one timed sample runs: a plugin through its node (with or without `macspoofchk`), or the
/// kernel floor in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// Node `node`'s plugin with config `conf`.
    Plugin { node: usize, conf: Conf },
    /// The kernel floor ([`Floor`]).
    Floor,
    /// The kernel floor plus two process starts per ADD, timed with it: plumb-bridge answering VERSION
    /// before the floor's work and plumb-ipam answering VERSION after the veth pair, where a plugin
    /// delegates to IPAM. It shares the floor's bridge, so it holds the same ports. Information only:
    /// it tells whether the growth with many ports comes with process starts as such.
    FloorExec,
    /// The kernel floor plus one rtnetlink request after the pod side is up (the host veth read back,
    /// as a plugin reads links back for its result). Information only: it tells whether a request made
    /// after the pod link got its carrier waits for the kernel's work on that event.
    FloorReread,
}

/// plumb-bridge + plumb-ipam without macspoofchk.
const PLUMB_PLAIN: Subject = Subject::Plugin {
    node: PLUMB,
    conf: Conf::Plain,
};
/// plumb-bridge + plumb-ipam with `enabledad` (information only).
const PLUMB_DAD: Subject = Subject::Plugin {
    node: PLUMB,
    conf: Conf::Dad,
};
/// plumb-bridge + plumb-ipam with macspoofchk.
const PLUMB_SPOOF: Subject = Subject::Plugin {
    node: PLUMB,
    conf: Conf::Spoof,
};
/// The reference without macspoofchk.
const REF_PLAIN: Subject = Subject::Plugin {
    node: REFERENCE,
    conf: Conf::Plain,
};
/// The reference with macspoofchk.
const REF_SPOOF: Subject = Subject::Plugin {
    node: REFERENCE,
    conf: Conf::Spoof,
};

impl Lab {
    /// The subject's name in the output.
    fn label(&self, s: Subject) -> String {
        match s {
            Subject::Plugin { node, conf } => format!(
                "{}{}",
                self.nodes[node].label,
                match conf {
                    Conf::Plain => "",
                    Conf::Spoof => "+spoof",
                    Conf::Dad => "+enabledad",
                }
            ),
            Subject::Floor => "floor".into(),
            Subject::FloorExec => "floor+2 execs".into(),
            Subject::FloorReread => "floor+re-read".into(),
        }
    }

    /// The floor, once created.
    fn floor(&mut self) -> Result<&mut Floor, String> {
        self.floor
            .as_mut()
            .ok_or_else(|| "no floor node (a bench bug)".to_string())
    }

    /// One ADD of `s` in a fresh container namespace, which stays; returns its time and what DEL needs.
    fn add_of(&mut self, s: Subject) -> Result<(Duration, Live), String> {
        check_interrupt()?;
        match s {
            Subject::Plugin { node, conf } => {
                let att = self.new_att(node, conf)?;
                Ok((self.add(&att)?, Live::Plugin(att)))
            }
            Subject::Floor | Subject::FloorExec | Subject::FloorReread => {
                let pod = self
                    .pool
                    .pop()
                    .ok_or("the container netns pool is used up (a bench bug)")?;
                let execs = match s {
                    Subject::FloorExec => Some([
                        self.binaries.plumb_bridge.clone(),
                        self.binaries.plumb_bridge.with_file_name("plumb-ipam"),
                    ]),
                    _ => None,
                };
                let reread = s == Subject::FloorReread;
                let (veth, took) = self.floor()?.add(&pod, execs.as_ref(), reread)?;
                Ok((took, Live::Floor(veth)))
            }
        }
    }

    /// DEL of what [`Lab::add_of`] made; returns its time.
    fn del_of(&mut self, live: &Live) -> Result<Duration, String> {
        match live {
            Live::Plugin(att) => self.del(att),
            Live::Floor(veth) => self.floor()?.del(veth),
        }
    }

    /// One timed pair of `s` in a fresh container namespace: the ADD and the DEL times.
    fn pair_of(&mut self, s: Subject) -> Result<[Duration; 2], String> {
        let (add, live) = self.add_of(s)?;
        Ok([add, self.del_of(&live)?])
    }

    /// Ports on the bridge of a plugin node or of the floor.
    fn ports_of(&mut self, s: Subject) -> Result<usize, String> {
        match s {
            Subject::Plugin { node, .. } => self.ports(node),
            Subject::Floor | Subject::FloorExec | Subject::FloorReread => self.floor()?.ports(),
        }
    }
}

/// What an ADD made, for its DEL.
enum Live {
    /// A plugin attachment.
    Plugin(Att),
    /// A floor attachment: its host veth.
    Floor(String),
}

/// ADD, DEL and ADD+DEL spreads of one subject.
struct PairSpreads {
    add: Spread,
    del: Spread,
    pair: Spread,
}

/// Creates the nodes and the container namespace pool, then runs the measurements and returns the
/// targets (the reference ratios are printed as information lines).
fn measure(lab: &mut Lab, opts: &Options) -> Result<Vec<Target>, String> {
    lab.create_nodes()?;
    let pairs = WARMUP_PAIRS + opts.iterations;
    // Pair benches: plumb, reference and floor plain, plumb and reference with spoof check; the scale
    // bench: three fills and seven subjects (the floor alone, with two process starts, with a read-back;
    // plumb also with enabledad) at two levels.
    let count = 5 * pairs + 3 * opts.existing + 14 * opts.extra;
    lab.fill_pool(count)?;
    let plain = pair_bench(lab, opts, &[PLUMB_PLAIN, REF_PLAIN, Subject::Floor])?;
    let spoof = pair_bench(lab, opts, &[PLUMB_SPOOF, REF_SPOOF])?;
    let (p, r, f) = (&plain[0], &plain[1], &plain[2]);
    let secs = |s: &Spread| s.median.as_secs_f64();
    info_ratio(
        "bridge ADD+DEL median ratio plumb/reference",
        secs(&p.pair) / secs(&r.pair),
    );
    info_ratio(
        "bridge ADD median ratio plumb/reference",
        secs(&p.add) / secs(&r.add),
    );
    info_ratio(
        "bridge DEL median ratio plumb/reference",
        secs(&p.del) / secs(&r.del),
    );
    info_ratio(
        "bridge+macspoofchk ADD+DEL median ratio plumb/reference",
        secs(&spoof[0].pair) / secs(&spoof[1].pair),
    );
    info_ratio(
        "reference ADD median ratio reference/floor",
        secs(&r.add) / secs(&f.add),
    );
    let mut targets = vec![
        Target::at_most(
            "plumb-bridge+plumb-ipam ADD median / floor ADD median (fresh node)",
            1.15,
            secs(&p.add) / secs(&f.add),
            2,
        ),
        Target::at_most(
            "plumb-bridge DEL median - floor DEL median (ms)",
            1.0,
            (secs(&p.del) - secs(&f.del)) * 1e3,
            2,
        ),
        Target::at_most(
            "plumb-bridge+macspoofchk ADD median / reference+macspoofchk ADD median",
            0.25,
            secs(&spoof[0].add) / secs(&spoof[1].add),
            3,
        ),
    ];
    targets.extend(scale_bench(lab, opts)?);
    let ipam = lab.tmp.path().join("ipam");
    std::fs::create_dir(&ipam).map_err(|e| format!("cannot create {}: {e}", ipam.display()))?;
    let (plumb_ipam, host_local) = (
        release_bin_dir().join("plumb-ipam"),
        lab.binaries.reference_dir.join("host-local"),
    );
    let plugins = [
        ProcessPlugin::plumb(&plumb_ipam, &ipam.join("plumb"), false),
        ProcessPlugin::host_local(&host_local, &ipam.join("host-local")),
        ProcessPlugin::plumb(&plumb_ipam, &ipam.join("plumb-fsync"), true),
    ];
    targets.push(process_bench(&plugins, opts, &ipam)?);
    Ok(targets)
}

/// Prints a reference ratio, which has no target.
fn info_ratio(name: &str, value: f64) {
    println!("info {name}: {value:.3} (no target)");
}

/// Whole-process ADD+DEL of each subject, interleaved in blocks, each pair in a fresh container
/// namespace; prints the spreads and returns them per subject.
fn pair_bench(
    lab: &mut Lab,
    opts: &Options,
    subjects: &[Subject],
) -> Result<Vec<PairSpreads>, String> {
    let names: Vec<String> = subjects.iter().map(|&s| lab.label(s)).collect();
    println!();
    println!(
        "== ADD+DEL pairs of {}: {} per subject in fresh container netns, alternating blocks of {}, {WARMUP_PAIRS} un-timed warm-up pairs each",
        names.join(", "),
        opts.iterations,
        opts.block
    );
    for &s in subjects {
        for _ in 0..WARMUP_PAIRS {
            lab.pair_of(s)?;
        }
    }
    let root = lab.tmp.path().to_path_buf();
    let mut parts: Vec<[Vec<Duration>; 2]> = vec![Default::default(); subjects.len()];
    let samples = interleave(
        subjects.len(),
        opts.iterations,
        opts.block,
        |k, _| {
            let [add, del] = lab.pair_of(subjects[k])?;
            parts[k][0].push(add);
            parts[k][1].push(del);
            Ok(add + del)
        },
        || syncfs(&root),
    )?;
    let mut out = Vec::new();
    for ((name, pair), [add, del]) in names.iter().zip(&samples).zip(&parts) {
        let s = PairSpreads {
            add: Spread::of(add),
            del: Spread::of(del),
            pair: Spread::of(pair),
        };
        println!(
            "{name:<15} ADD median {} p90 {} | DEL median {} p90 {} | ADD+DEL median {} p90 {}",
            ms(s.add.median),
            ms(s.add.p90),
            ms(s.del.median),
            ms(s.del.p90),
            ms(s.pair.median),
            ms(s.pair.p90)
        );
        out.push(s);
    }
    Ok(out)
}

/// ADD latency with 0 and with `--existing` attachments on each node, all made without macspoofchk so
/// every node's kernel state matches the floor's (N bridge ports, N veth peers in N pod namespaces);
/// returns the two growth targets against the floor.
fn scale_bench(lab: &mut Lab, opts: &Options) -> Result<Vec<Target>, String> {
    let n = opts.existing;
    let subjects = [
        PLUMB_PLAIN,
        PLUMB_SPOOF,
        REF_PLAIN,
        Subject::Floor,
        Subject::FloorExec,
        Subject::FloorReread,
        PLUMB_DAD,
    ];
    println!();
    println!(
        "== ADD latency with 0 vs {n} existing attachments: {} timed ADDs per subject and level, each in a fresh container netns and DELed un-timed right after, alternating blocks of {}",
        opts.extra, opts.block
    );
    let at0 = add_latency(lab, opts, &subjects, 0)?;
    fill(lab, opts, &[PLUMB_PLAIN, REF_PLAIN, Subject::Floor])?;
    let at_n = add_latency(lab, opts, &subjects, n)?;
    let growth: Vec<f64> = at0
        .iter()
        .zip(&at_n)
        .map(|(a, b)| (b.median.as_secs_f64() - a.median.as_secs_f64()) * 1e3)
        .collect();
    for (k, &s) in subjects.iter().enumerate() {
        println!(
            "{:<15} ADD median {} -> {}: growth {:+.2} ms (x{:.2})",
            lab.label(s),
            ms(at0[k].median),
            ms(at_n[k].median),
            growth[k],
            at_n[k].median.as_secs_f64() / at0[k].median.as_secs_f64()
        );
    }
    let floor = growth[3];
    info_ratio(
        &format!("reference ADD growth 0->{n} / floor growth"),
        growth[2] / floor,
    );
    info_ratio(
        &format!("floor+2 execs ADD growth 0->{n} / floor growth"),
        growth[4] / floor,
    );
    info_ratio(
        &format!("plumb-bridge+plumb-ipam ADD growth 0->{n} / floor+2 execs growth"),
        growth[0] / growth[4],
    );
    info_ratio(
        &format!("floor+re-read ADD growth 0->{n} / floor growth"),
        growth[5] / floor,
    );
    info_ratio(
        &format!("plumb+enabledad ADD growth 0->{n} / floor growth"),
        growth[6] / floor,
    );
    Ok(vec![
        Target::at_most(
            &format!("plumb-bridge+plumb-ipam ADD growth 0->{n} existing / floor growth"),
            1.1,
            growth[0] / floor,
            2,
        ),
        Target::at_most(
            &format!("plumb-bridge+macspoofchk ADD growth 0->{n} existing / floor growth"),
            1.1,
            growth[1] / floor,
            2,
        ),
    ])
}

/// Times `--extra` lone ADDs per subject with `existing` attachments on each bridge (checked first).
fn add_latency(
    lab: &mut Lab,
    opts: &Options,
    subjects: &[Subject],
    existing: usize,
) -> Result<Vec<Spread>, String> {
    for &s in subjects {
        let ports = lab.ports_of(s)?;
        if ports != existing {
            return Err(format!(
                "{} bridge has {ports} ports, expected {existing}",
                lab.label(s)
            ));
        }
    }
    println!("{existing} existing (ports on each bridge, checked):");
    let root = lab.tmp.path().to_path_buf();
    let softirq_before = softirq_ms();
    let samples = interleave(
        subjects.len(),
        opts.extra,
        opts.block,
        |k, _| {
            let (took, live) = lab.add_of(subjects[k])?;
            lab.del_of(&live)?;
            Ok(took)
        },
        || syncfs(&root),
    )?;
    let spreads: Vec<Spread> = samples.iter().map(|s| Spread::of(s)).collect();
    for (&s, sp) in subjects.iter().zip(&spreads) {
        println!(
            "{:<15} ADD median {}  p90 {}",
            lab.label(s),
            ms(sp.median),
            ms(sp.p90)
        );
    }
    if let (Some(a), Some(b)) = (softirq_before, softirq_ms()) {
        let pairs = samples.iter().map(Vec::len).sum::<usize>().max(1);
        println!(
            "softirq CPU, whole machine, during these ADDs and their DELs: {:.1} ms per ADD+DEL (bridge floods to every port; it competes with whichever ADD runs)",
            (b - a) / pairs as f64
        );
    }
    Ok(spreads)
}

/// Softirq time of all CPUs so far (`/proc/stat`), in ms; `None` if it cannot be read.
fn softirq_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    // cpu user nice system idle iowait irq softirq ..., in USER_HZ ticks.
    let ticks: f64 = cpu.split_whitespace().nth(7)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks * 1e3 / hz as f64)
}

/// ADDs `--existing` attachments of each subject (alternating blocks), which stay until teardown;
/// prints the time it took.
fn fill(lab: &mut Lab, opts: &Options, subjects: &[Subject]) -> Result<(), String> {
    let names: Vec<String> = subjects.iter().map(|&s| lab.label(s)).collect();
    println!(
        "filling: {} ADDs each of {}, each in a fresh container netns, alternating blocks of {} ...",
        opts.existing,
        names.join(", "),
        opts.block
    );
    let start = Instant::now();
    let root = lab.tmp.path().to_path_buf();
    let samples = interleave(
        subjects.len(),
        opts.existing,
        opts.block,
        |k, _| lab.add_of(subjects[k]).map(|(took, _)| took),
        || syncfs(&root),
    )?;
    for (name, s) in names.iter().zip(&samples) {
        let total: Duration = s.iter().sum();
        let spread = Spread::of(s);
        println!(
            "{name:<15} fill: {} ADDs took {:.2} s ({:.0} ADD/s), ADD median {} p90 {}",
            s.len(),
            total.as_secs_f64(),
            s.len() as f64 / total.as_secs_f64().max(1e-9),
            ms(spread.median),
            ms(spread.p90)
        );
    }
    println!(
        "fill wall time, all subjects: {:.2} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Teardown
// ---------------------------------------------------------------------------------------------------

impl Lab {
    /// Takes down everything the lab made, whatever state it is in, and checks it is gone; prints one
    /// line per step and an error listing what is not clean.
    fn teardown(mut self, root_before: &str) -> Result<(), String> {
        println!();
        println!("== cleanup");
        let mut problems = Vec::new();
        self.del_live(&mut problems);
        // The floor's attachments go with its namespaces.
        drop(self.floor.take());
        let nodes = std::mem::take(&mut self.nodes);
        for node in &nodes {
            if let Err(e) = clear_node(node) {
                problems.push(e);
            }
        }
        drop(nodes);
        if let Err(e) = self.delete_netns() {
            problems.push(e);
        }
        self.remove_files(&mut problems);
        match self.root_ruleset_check(root_before) {
            Ok(line) => println!("{line}"),
            Err(e) => problems.push(e),
        }
        if problems.is_empty() {
            println!(
                "cleanup: clean (attachments, bridges, netns, nft tables, lock files, temp dir)"
            );
            return Ok(());
        }
        for p in &problems {
            println!("cleanup problem: {p}");
        }
        Err(format!(
            "cleanup left {} problem(s), listed above",
            problems.len()
        ))
    }

    /// DEL of every live attachment, per node, with the time it took.
    fn del_live(&mut self, problems: &mut Vec<String>) {
        for node in 0..self.nodes.len() {
            let mut atts: Vec<Att> = self
                .live
                .values()
                .filter(|a| a.node == node)
                .cloned()
                .collect();
            atts.sort_by(|a, b| a.cid.cmp(&b.cid));
            let start = Instant::now();
            let mut took = Duration::ZERO;
            for att in &atts {
                match self.del(att) {
                    Ok(d) => took += d,
                    Err(e) => problems.push(e),
                }
            }
            println!(
                "{}: DEL of the {} attachments still there: {:.2} s of process time, {:.2} s wall{}",
                self.nodes[node].label,
                atts.len(),
                took.as_secs_f64(),
                start.elapsed().as_secs_f64(),
                match self.live.values().filter(|a| a.node == node).count() {
                    0 => String::new(),
                    k => format!(", {k} DEL(s) FAILED"),
                }
            );
        }
    }

    /// Deletes every namespace the bench created (containers in one `ip -force -batch`, then nodes)
    /// and checks none is left.
    fn delete_netns(&self) -> Result<(), String> {
        let existing: Vec<&String> = self.netns.iter().filter(|n| netns_exists(n)).collect();
        let script: String = existing
            .iter()
            .map(|n| format!("netns del {n}\n"))
            .collect();
        let batch = match script.is_empty() {
            true => Ok(()),
            false => ip_batch(&script, true),
        };
        let left: Vec<&String> = self.netns.iter().filter(|n| netns_exists(n)).collect();
        if !left.is_empty() {
            return Err(format!(
                "{} netns not deleted (e.g. {}): {}",
                left.len(),
                left[0],
                batch.err().unwrap_or_default()
            ));
        }
        let nodes = existing
            .iter()
            .filter(|n| n.starts_with(NODE_PREFIX))
            .count();
        println!(
            "deleted {} netns ({nodes} nodes, {} containers)",
            existing.len(),
            existing.len() - nodes
        );
        Ok(())
    }

    /// Removes plumb's lock files of the bench's bridges and the temp dir.
    fn remove_files(&mut self, problems: &mut Vec<String>) {
        for name in &self.bridge_names {
            let lock = Path::new(plumb_cni::lock::RESOURCE_LOCK_DIR).join(format!("bridge-{name}"));
            if lock.exists() {
                match std::fs::remove_file(&lock) {
                    Ok(()) => println!("removed {}", lock.display()),
                    Err(e) => problems.push(format!("cannot remove {}: {e}", lock.display())),
                }
            }
        }
        let path = self.tmp.path().to_path_buf();
        let _ = std::fs::remove_dir_all(&path);
        match path.exists() {
            false => println!("removed {}", path.display()),
            true => problems.push(format!("could not remove {}", path.display())),
        }
    }

    /// Compares the root namespace's ruleset with the one before the run: unchanged, or changed only in
    /// lines naming nothing of the bench (other processes on this machine); an error otherwise.
    fn root_ruleset_check(&self, before: &str) -> Result<String, String> {
        let after = nft_ruleset(Command::new("nft"))?;
        if after == before {
            return Ok(
                "nft (root netns): clean, `nft list ruleset` identical before and after the run"
                    .into(),
            );
        }
        let old: HashSet<&str> = before.lines().collect();
        let new: HashSet<&str> = after.lines().collect();
        let changed: Vec<&str> = old.symmetric_difference(&new).copied().collect();
        let nonce = format!("{:016x}", self.nonce);
        let mut marks: Vec<&str> = vec![nonce.as_str()];
        marks.extend(self.bridge_names.iter().map(String::as_str));
        marks.extend(self.veths.iter().map(String::as_str));
        let ours: Vec<&&str> = changed
            .iter()
            .filter(|l| marks.iter().any(|m| l.contains(m)))
            .collect();
        match ours.first() {
            None => Ok(format!(
                "nft (root netns): clean of bench objects; {} ruleset lines changed during the run, none naming a bench bridge, veth or container (other processes on this machine)",
                changed.len()
            )),
            Some(l) => Err(format!(
                "nft (root netns): {} changed lines name bench objects, e.g. {}",
                ours.len(),
                l.trim()
            )),
        }
    }
}

/// Checks a node namespace after DEL of everything: only `lo` and the bridge may remain; prints what the
/// plugin left in its nftables ruleset, deletes those tables and the bridge, and checks both are gone.
fn clear_node(node: &Node) -> Result<(), String> {
    let links = node.tool(&["ip", "-o", "link", "show"])?;
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .collect();
    let has_bridge = names.contains(&node.bridge.as_str());
    let stray: Vec<&str> = names
        .into_iter()
        .filter(|n| *n != "lo" && *n != node.bridge)
        .collect();
    let ruleset = nft_ruleset(node.command("nft"))?;
    let tables = tables_of(&ruleset);
    println!(
        "{} node after DEL of every attachment: links lo{}{}; nft: {}",
        node.label,
        match has_bridge {
            true => format!(", {}", node.bridge),
            false => String::new(),
        },
        match stray.len() {
            0 => String::new(),
            k => format!(" and {k} stray"),
        },
        match tables.is_empty() {
            true => "empty".to_string(),
            false => summarize_ruleset(&ruleset),
        }
    );
    for (family, name) in &tables {
        node.tool(&["nft", "delete", "table", family, name])?;
    }
    let left = nft_ruleset(node.command("nft"))?;
    if !left.trim().is_empty() {
        return Err(format!(
            "{} node ruleset not empty after deleting its tables: {left}",
            node.label
        ));
    }
    if !tables.is_empty() {
        println!(
            "{} node: deleted those nft tables; its ruleset is now empty",
            node.label
        );
    }
    if has_bridge {
        node.tool(&["ip", "link", "del", &node.bridge])?;
        println!("{} node: deleted bridge {}", node.label, node.bridge);
    }
    if !stray.is_empty() {
        return Err(format!(
            "{} node held {} links besides lo and the bridge after DEL: {}",
            node.label,
            stray.len(),
            stray.join(" ")
        ));
    }
    Ok(())
}

/// `nft list ruleset` run by `cmd` (an `nft` command, maybe inside a node).
fn nft_ruleset(mut cmd: Command) -> Result<String, String> {
    checked("nft list ruleset", cmd.args(["list", "ruleset"]).output())
}

/// `(family, name)` of every table in an `nft list ruleset` text.
fn tables_of(ruleset: &str) -> Vec<(String, String)> {
    ruleset
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .filter_map(|rest| {
            let mut f = rest.trim_end_matches('{').split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

/// A one-line summary of a ruleset: `table bridge nat { chain PREROUTING (0 rules) }`.
fn summarize_ruleset(ruleset: &str) -> String {
    let mut out = String::new();
    let mut rules: Option<usize> = None;
    let close_chain = |out: &mut String, rules: &mut Option<usize>| {
        if let Some(n) = rules.take() {
            out.push_str(&format!(" ({n} rules)"));
        }
    };
    for line in ruleset.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix("table ") {
            close_chain(&mut out, &mut rules);
            if !out.is_empty() {
                out.push_str(" }; ");
            }
            out.push_str(&format!("table {} {{", t.trim_end_matches('{').trim()));
        } else if let Some(c) = line.strip_prefix("chain ") {
            close_chain(&mut out, &mut rules);
            out.push_str(&format!(" chain {}", c.trim_end_matches('{').trim()));
            rules = Some(0);
        } else if !(line.is_empty() || line == "}" || line.starts_with("type ")) {
            if let Some(n) = rules.as_mut() {
                *n += 1;
            }
        }
    }
    close_chain(&mut out, &mut rules);
    if !out.is_empty() {
        out.push_str(" }");
    }
    out
}
